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
    let clock = Arc::new(ManualClock::new(T0));
    let ipam = Ipam::new(store.clone(), clock.clone());
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
        Calls::new(1, 0, 0),
        "an unknown handle: one read of it, the cooldown read by the first release kept"
    );

    // Past the kept cooldown's age, the configuration is read again, with the handle.
    clock.advance(ipam_core::CARRY_AGE_NS + 1);
    assert_eq!(ipam.release_by_handle("second").unwrap(), 0);
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 0),
        "config and handle in one read"
    );
}

/// The store calls of one assignment on node `n1` once it has `full` full blocks of 64, which
/// must claim a new block.
fn calls_past_full_blocks(full: usize) -> Calls {
    let store = Arc::new(Counting::new(MemoryStore::new()));
    let ipam = Ipam::new(store.clone(), Arc::new(ManualClock::new(T0)));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    for i in 0..full {
        let got = ipam
            .auto_assign(&AutoAssignArgs::v4("n1", &format!("fill{i}"), 64))
            .unwrap();
        assert_eq!(got.v4.ips.len(), 64);
    }
    store.take();
    let got = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "next", 1))
        .unwrap();
    let blocks = ipam.blocks(&ipam_core::Range::Blocks).unwrap();
    assert_eq!(blocks.len(), full + 1, "a new block claimed");
    assert!(blocks
        .iter()
        .any(|b| b.value.used_count() == 1 && b.value.cidr.contains(got.v4.ips[0].ip)));
    store.take()
}

#[test]
fn a_node_with_many_full_blocks_reads_them_in_one_batch() {
    // Walking the node's full blocks reads them together, not one round trip each: the calls
    // of the assignment that claims the next block do not grow with the blocks already full.
    let few = calls_past_full_blocks(3);
    let many = calls_past_full_blocks(8);
    assert_eq!(few, many, "3 full blocks: {few:?}; 8: {many:?}");
    assert_eq!(
        few,
        Calls::new(3, 3, 1),
        "the context, the other blocks, the claim's reads, one commit"
    );
}

#[test]
fn a_full_kept_block_sends_the_next_request_one_by_one_without_another_read() {
    // /30 blocks of four addresses: the second request is served from the kept block and
    // fills it; the next goes the one-by-one way (its one read, then the claim) with no read
    // of a batch's context first.
    let store = Arc::new(Counting::new(MemoryStore::new()));
    let ipam = Ipam::new(store.clone(), Arc::new(ManualClock::new(T0)));
    ipam.create_pool(Pool::with_block_size("p", net("10.244.0.0/16"), 30).unwrap())
        .unwrap();
    let first = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "first", 1))
        .unwrap()
        .v4
        .ips[0]
        .block;
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "second", 1))
        .unwrap();
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "third", 2))
        .unwrap();
    store.take();
    let got = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "fourth", 1))
        .unwrap();
    assert_eq!(
        store.take(),
        Calls::new(2, 1, 1),
        "the one-by-one path's read; the pool's claim index and its chunk; one commit"
    );
    assert_ne!(got.v4.ips[0].block, first, "a new block claimed");
}
