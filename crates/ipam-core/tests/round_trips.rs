//! Store calls per operation, pinned: on a networked store each call is a round trip, so a
//! change that adds one shows here, not only as a slower benchmark.

mod common;

use common::*;
use ipam_core::{AutoAssignArgs, Ipam, ManualClock, Pool};
use ipam_store::{Calls, Counting, MemoryStore};
use std::sync::Arc;

#[test]
fn assign_from_a_known_block_and_release_by_handle_are_few_round_trips() {
    let store = Arc::new(Counting::new(MemoryStore::new()));
    let ipam = Ipam::new(store.clone(), Arc::new(ManualClock::new(T0)));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "first", 1))
        .unwrap();
    store.take();

    ipam.auto_assign(&AutoAssignArgs::v4("n1", "second", 2))
        .unwrap();
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 1),
        "one batched read, one commit"
    );

    assert_eq!(ipam.release_by_handle("second").unwrap(), 2);
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 1),
        "config and handle in one read; the block as the node's lane keeps it; one commit"
    );

    // The release left what it committed as the node's kept block: no read for the next.
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "third", 1))
        .unwrap();
    assert_eq!(store.take(), Calls::new(0, 0, 1), "one commit, no read");
    assert_eq!(ipam.release_by_handle("third").unwrap(), 1);
    store.take();

    assert_eq!(ipam.release_by_handle("second").unwrap(), 0);
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 0),
        "an unknown handle: one read"
    );
}
