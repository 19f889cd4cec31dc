//! The in-memory store: one `BTreeMap` in key order behind a read-write lock. A read hands out
//! a copy of the record (the engine changes its copy and commits it by compare-and-swap); a
//! batch of reads is answered under one lock, so it sees one snapshot. Records are boxed: a
//! map node moves pointers, not records, when a key is added or removed beside them.

use ipam_core::ConflictKind;
use ipam_core::{Datastore, Key, Range, Read, Record, Revision, StoreError, Versioned, Write};
use parking_lot::RwLock;
use smallvec::SmallVec;
use std::collections::BTreeMap;

#[derive(Default)]
struct Inner {
    map: BTreeMap<Key, Box<(Record, Revision)>>,
    rev: u64,
}

/// An in-memory [`Datastore`] with the contract's exact semantics.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest revision handed out.
    pub fn revision(&self) -> Revision {
        Revision(self.inner.read().rev)
    }
}

impl Inner {
    fn get(&self, key: &Key) -> Option<Versioned<Record>> {
        self.map.get(key).map(|e| Versioned {
            value: e.0.clone(),
            revision: e.1,
        })
    }
    fn list(&self, range: &Range) -> Vec<Versioned<Record>> {
        self.map
            .range(range.start()..)
            .take_while(|(k, _)| !range.past_end(k))
            .filter(|(k, _)| range.contains(k))
            .map(|(_, e)| Versioned {
                value: e.0.clone(),
                revision: e.1,
            })
            .collect()
    }
}

/// Commits up to this size look for a key written twice by comparing pairs; larger ones hash.
const PAIRWISE_LIMIT: usize = 16;

impl Datastore for MemoryStore {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        Ok(self.inner.read().get(key))
    }

    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        Ok(self.inner.read().list(range))
    }

    /// The whole batch under one read lock: one snapshot, as a networked store gives.
    fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        let g = self.inner.read();
        Ok(reads
            .iter()
            .map(|r| match r {
                Read::Get(key) => g.get(key).into_iter().collect(),
                Read::List(range) => g.list(range),
            })
            .collect())
    }

    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        let mut g = self.inner.write();
        if writes.is_empty() {
            return Ok(Revision(g.rev));
        }
        // Built once each (a handle's key owns its name); most commits write two or three.
        let keys: SmallVec<[Key; 4]> = writes.iter().map(Write::key).collect();
        if let Some(key) = written_twice(&keys) {
            return Err(StoreError::Rejected(format!(
                "{key} written twice in one commit"
            )));
        }
        for (w, key) in writes.iter().zip(&keys) {
            let cur = g.map.get(key).map(|e| e.1);
            let kind = match (w, cur) {
                (Write::Create(_), Some(_)) => Some(ConflictKind::Exists),
                (Write::Update { .. } | Write::Delete { .. }, None) => Some(ConflictKind::Missing),
                (Write::Update { expected, .. } | Write::Delete { expected, .. }, Some(c))
                    if *expected != c =>
                {
                    Some(ConflictKind::Changed)
                }
                _ => None,
            };
            if let Some(kind) = kind {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    kind,
                });
            }
        }
        g.rev += 1;
        let rev = Revision(g.rev);
        for (w, key) in writes.into_iter().zip(keys) {
            match w {
                Write::Create(r) => {
                    g.map.insert(key, Box::new((r, rev)));
                }
                Write::Update { record: r, .. } => {
                    // Checked above: the record is there. Replaced in place, its box reused.
                    if let Some(e) = g.map.get_mut(&key) {
                        **e = (r, rev);
                    }
                }
                Write::Delete { .. } => {
                    g.map.remove(&key);
                }
            }
        }
        Ok(rev)
    }
}

/// A key written twice: compared pairwise in small commits, hashed in larger ones.
fn written_twice(keys: &[Key]) -> Option<&Key> {
    if keys.len() <= PAIRWISE_LIMIT {
        keys.iter()
            .enumerate()
            .find(|(i, k)| keys[..*i].contains(k))
            .map(|(_, k)| k)
    } else {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.iter().find(|k| !seen.insert(*k))
    }
}
