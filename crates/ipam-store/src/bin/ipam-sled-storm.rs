//! Test helper for the crash test: runs an allocation storm on a sled store and prints each
//! operation the moment its call has returned (so it is durable), until killed.
//!
//! Usage: `ipam-sled-storm DIR SEED`. Output lines: `A <handle> <ip>` (assigned), `R <handle>`
//! (released), `E <message>` (an operation failed; the storm goes on).

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use ipam_core::{AutoAssignArgs, Ipam, Pool};
use ipam_store::{SledOptions, SledStore, SystemClock};
use std::io::Write;
use std::sync::Arc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(seed)) = (args.next(), args.next()) else {
        eprintln!("usage: ipam-sled-storm DIR SEED");
        std::process::exit(2);
    };
    let store = match SledStore::open(&dir, &SledOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let ipam = Ipam::new(store, Arc::new(SystemClock));
    if ipam.pools().map(|p| p.is_empty()).unwrap_or(false) {
        let pool = Pool::new("storm", "10.244.0.0/16".parse().expect("valid")).expect("valid");
        if let Err(e) = ipam.create_pool(pool) {
            eprintln!("{e}");
        }
    }
    let out = std::io::stdout();
    let mut i: u64 = 0;
    loop {
        let handle = format!("s{seed}-{i}");
        let node = format!("node-{}", i % 5);
        let line = match ipam.auto_assign(&AutoAssignArgs::v4(&node, &handle, 1)) {
            Ok(r) => format!("A {handle} {}", r.v4.ips[0].ip),
            Err(e) => format!("E {e}"),
        };
        let _ = writeln!(out.lock(), "{line}");
        if i >= 8 {
            let old = format!("s{seed}-{}", i - 8);
            let line = match ipam.release_by_handle(&old) {
                Ok(_) => format!("R {old}"),
                Err(e) => format!("E {e}"),
            };
            let _ = writeln!(out.lock(), "{line}");
        }
        i += 1;
    }
}
