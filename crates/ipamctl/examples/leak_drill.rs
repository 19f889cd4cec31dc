//! A drill for operators: deletes one handle record from a sled store, the way a crashed
//! writer of an older IPAM could leave it, so `ipamctl check` and `release --from-report` can
//! be tried on a store you can throw away.
//!
//! `cargo run -p ipamctl --example leak_drill -- SLED_PATH HANDLE`

use ipam_core::{Datastore, Key, Write};
use ipam_store::{SledOptions, SledStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut a = std::env::args().skip(1);
    let (Some(path), Some(handle)) = (a.next(), a.next()) else {
        return Err("usage: leak_drill SLED_PATH HANDLE".into());
    };
    let s = SledStore::open(&path, &SledOptions::default())?;
    let key = Key::Handle(handle.clone());
    let v = s.get(&key)?.ok_or(format!("no handle {handle}"))?;
    s.commit(vec![Write::Delete {
        key,
        expected: v.revision,
    }])?;
    println!("deleted the record of handle {handle}; its addresses are now leaked");
    Ok(())
}
