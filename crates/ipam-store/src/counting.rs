//! A wrapper that counts the calls made to a store, by kind: on a networked store each call is
//! a round trip, so tests pin the calls an operation makes and a change that adds one shows
//! there, not only as a slower cluster.

use ipam_core::{
    Datastore, Key, Range, Read, Record, Revision, Spare, StoreError, Versioned, Write,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Calls made to a store since the last [`Counting::take`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// `get` and `list`, one record or range each.
    pub single: usize,
    /// Batched `read`s, however many gets and lists each holds.
    pub batched: usize,
    /// Commits.
    pub commits: usize,
}

impl Calls {
    /// The counts, in field order (what a test expects, written on one line).
    pub fn new(single: usize, batched: usize, commits: usize) -> Self {
        Calls {
            single,
            batched,
            commits,
        }
    }
}

/// A store that passes every call to `inner` and counts it.
#[derive(Default)]
pub struct Counting<S> {
    inner: S,
    single: AtomicUsize,
    batched: AtomicUsize,
    commits: AtomicUsize,
}

impl<S> Counting<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Counting {
            inner,
            single: AtomicUsize::new(0),
            batched: AtomicUsize::new(0),
            commits: AtomicUsize::new(0),
        }
    }

    /// The calls since the last take, and zero again.
    pub fn take(&self) -> Calls {
        Calls {
            single: self.single.swap(0, Ordering::SeqCst),
            batched: self.batched.swap(0, Ordering::SeqCst),
            commits: self.commits.swap(0, Ordering::SeqCst),
        }
    }
}

impl<S: Datastore> Datastore for Counting<S> {
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
    fn commit_reusing(
        &self,
        writes: Vec<Write>,
        spare: &mut Spare,
    ) -> Result<Revision, StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit_reusing(writes, spare)
    }
    pass_to_inner!();
}
