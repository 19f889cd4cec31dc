//! Store calls per operation, pinned: on a networked store each call is a round trip, so a
//! change that adds one shows here, not only as a slower benchmark.

mod common;

use common::*;
use ipam_core::{
    AutoAssignArgs, Datastore, Ipam, Key, ManualClock, Pool, Range, Read, Record, Revision,
    StoreError, Versioned, Write,
};
use ipam_store::MemoryStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts calls: gets and lists one by one, batched reads, commits.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    single: AtomicUsize,
    batched: AtomicUsize,
    commits: AtomicUsize,
}

impl Counting {
    /// (single reads, batched reads, commits) since the last call.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.single.swap(0, Ordering::SeqCst),
            self.batched.swap(0, Ordering::SeqCst),
            self.commits.swap(0, Ordering::SeqCst),
        )
    }
}

impl Datastore for Counting {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        self.single.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        self.single.fetch_add(1, Ordering::SeqCst);
        self.inner.list(range)
    }
    fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        self.batched.fetch_add(1, Ordering::SeqCst);
        self.inner.read(reads)
    }
    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(writes)
    }
}

#[test]
fn assign_from_a_known_block_and_release_by_handle_are_few_round_trips() {
    let store = Arc::new(Counting::default());
    let ipam = Ipam::new(store.clone(), Arc::new(ManualClock::new(T0)));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "first", 1))
        .unwrap();
    store.take();

    ipam.auto_assign(&AutoAssignArgs::v4("n1", "second", 2))
        .unwrap();
    assert_eq!(store.take(), (0, 1, 1), "one batched read, one commit");

    assert_eq!(ipam.release_by_handle("second").unwrap(), 2);
    assert_eq!(
        store.take(),
        (1, 1, 1),
        "pools, config and handle in one read; the block; one commit"
    );

    assert_eq!(ipam.release_by_handle("second").unwrap(), 0);
    assert_eq!(store.take(), (0, 1, 0), "an unknown handle: one read");
}
