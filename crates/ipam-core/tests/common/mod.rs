//! Helpers shared by the scenario and property tests.
#![allow(dead_code)]

use ipam_core::{AssignError, AutoAssignArgs, Datastore, Ipam, ManualClock, Pool};
use ipam_store::{MemoryStore, Observed};
use std::net::IpAddr;
use std::sync::Arc;

pub const T0: u64 = 1_700_000_000_000_000_000;

pub fn net(s: &str) -> ipnetwork::IpNetwork {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn setup(pools: &[(&str, &str, u8)]) -> (Observed<MemoryStore>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let ipam = Observed::new(MemoryStore::new(), clock.clone());
    for (name, cidr, bs) in pools {
        ipam.create_pool(Pool::with_block_size(name, net(cidr), *bs).unwrap())
            .unwrap();
    }
    (ipam, clock)
}

pub fn one(ipam: &Ipam<impl Datastore>, node: &str, handle: &str) -> ipam_core::AssignedIp {
    ipam.auto_assign(&AutoAssignArgs::v4(node, handle, 1))
        .unwrap()
        .v4
        .ips[0]
}

pub fn assert_consistent<S: Datastore>(ipam: &Ipam<S>) {
    let problems = ipam.audit().unwrap();
    assert!(problems.is_empty(), "inconsistent store: {problems:#?}");
}

/// `threads` threads each make `rounds` auto-assignments on the node `node_of(thread)` for
/// `count_of(round)` addresses (handle `t<thread>-<round>`), releasing the last one they still
/// hold every third round; exhausted pools are skipped. Returns what each thread still holds.
pub fn racing_churn<S: Datastore + 'static>(
    ipam: &Arc<Ipam<S>>,
    threads: usize,
    rounds: usize,
    node_of: fn(usize) -> String,
    count_of: fn(usize) -> usize,
) -> Vec<(String, Vec<IpAddr>)> {
    let running: Vec<_> = (0..threads)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                let node = node_of(t);
                let mut mine = Vec::new();
                for i in 0..rounds {
                    let h = format!("t{t}-{i}");
                    match ipam.auto_assign(&AutoAssignArgs::v4(&node, &h, count_of(i))) {
                        Ok(r) => mine.push((h, r.v4.ips.iter().map(|a| a.ip).collect())),
                        Err(AssignError::Exhausted { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if i % 3 == 0 {
                        if let Some((h, _)) = mine.pop() {
                            ipam.release_by_handle(&h).unwrap();
                        }
                    }
                }
                mine
            })
        })
        .collect();
    running
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Asserts that no address of `held` was handed out twice and that each handle holds exactly
/// its addresses; returns how many addresses are held.
pub fn assert_distinct_and_held<S: Datastore>(
    ipam: &Ipam<S>,
    held: Vec<(String, Vec<IpAddr>)>,
) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for (h, mut got) in held {
        for ip in &got {
            assert!(seen.insert(*ip), "{ip} handed out twice");
        }
        let mut stored = ipam.addresses_by_handle(&h).unwrap();
        stored.sort();
        got.sort();
        assert_eq!(stored, got, "handle {h}");
        total += got.len();
    }
    total
}
