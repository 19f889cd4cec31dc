//! Stored record bytes and raw keys, through the sled store's decoders: never a panic, and
//! whatever decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((kind, value)) = data.split_first() {
        ipam_fuzz::check_record(*kind, value);
    }
});
