//! CNI environment + CNI_ARGS + network config, through the plugin's handler on a memory
//! store: never a panic, always a result or the spec's error JSON, the store stays consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = ipam_fuzz::cni_input(data);
    let ipam = ipam_fuzz::engine();
    ipam_fuzz::check_cni(&ipam, &env, &stdin);
    // The same input twice (a retried ADD, a repeated DEL) must stay consistent too.
    ipam_fuzz::check_cni(&ipam, &env, &stdin);
});
