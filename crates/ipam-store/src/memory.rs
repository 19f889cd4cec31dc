//! The in-memory store: one `BTreeMap` in key order behind a read-write lock. Records are
//! kept behind `Arc` so a read costs a clone of the record, not of the map.

use ipam_core::datastore::ConflictKind;
use ipam_core::{Datastore, Key, Range, Record, Revision, StoreError, Versioned, Write};
use parking_lot::RwLock;
use std::collections::BTreeMap;

#[derive(Default)]
struct Inner {
    map: BTreeMap<Key, (Record, Revision)>,
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

impl Datastore for MemoryStore {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        Ok(self.inner.read().map.get(key).map(|(r, rev)| Versioned {
            value: r.clone(),
            revision: *rev,
        }))
    }

    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        let g = self.inner.read();
        Ok(g.map
            .range(range.start()..)
            .take_while(|(k, _)| !range.past_end(k))
            .filter(|(k, _)| range.contains(k))
            .map(|(_, (r, rev))| Versioned {
                value: r.clone(),
                revision: *rev,
            })
            .collect())
    }

    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        let mut g = self.inner.write();
        if writes.is_empty() {
            return Ok(Revision(g.rev));
        }
        let mut seen = std::collections::HashSet::new();
        for w in &writes {
            let key = w.key();
            if !seen.insert(key.clone()) {
                return Err(StoreError::Rejected(format!(
                    "{key} written twice in one commit"
                )));
            }
            let cur = g.map.get(&key).map(|(_, r)| *r);
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
                return Err(StoreError::Conflict { key, kind });
            }
        }
        g.rev += 1;
        let rev = Revision(g.rev);
        for w in writes {
            match w {
                Write::Create(r) | Write::Update { record: r, .. } => {
                    g.map.insert(r.key(), (r, rev));
                }
                Write::Delete { key, .. } => {
                    g.map.remove(&key);
                }
            }
        }
        Ok(rev)
    }
}
