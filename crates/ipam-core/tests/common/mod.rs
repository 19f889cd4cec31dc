//! Helpers shared by the scenario and property tests.
#![allow(dead_code)]

use ipam_core::{AutoAssignArgs, Datastore, Ipam, ManualClock, Pool};
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
