//! The in-memory store. A read hands out a copy of the record (the engine changes its copy
//! and commits it by compare-and-swap); a batch of reads is answered under one lock, so it
//! sees one snapshot. Records are boxed: a table moves pointers, not records.
//!
//! Three tables behind one read-write lock: handles, the one kind every assignment creates and
//! every release deletes, in a hash table found by the id the record itself holds (no key is
//! built, compared or stored for them); blocks, the kind every assignment and release
//! rewrites, in a `BTreeMap` by their network as integers (family, address, prefix: the order
//! [`Key`] gives blocks, compared without matching on key kinds); every other kind in one
//! `BTreeMap` in key order. Listings come out in key order: handles are sorted for it, which
//! only audits and garbage collection ask for.

use ipam_core::cidr::{self, Family};
use ipam_core::ConflictKind;
use ipam_core::{
    Datastore, Key, Range, Read, Record, Revision, Spare, StoreError, Versioned, Write,
};
use ipnetwork::IpNetwork;
use parking_lot::RwLock;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::hash::BuildHasher;

/// A stored record and the revision it was written at.
type Entry = Box<(Record, Revision)>;

/// A block's place in its table (see the module docs).
type BlockKey = (Family, u128, u8);

fn block_key(net: &IpNetwork) -> BlockKey {
    (
        Family::of_net(net),
        cidr::ip_to_u128(net.ip()),
        net.prefix(),
    )
}

#[derive(Default)]
struct Inner {
    /// Every record but handles and blocks, in key order.
    map: BTreeMap<Key, Entry>,
    /// Blocks, in key order.
    blocks: BTreeMap<BlockKey, Entry>,
    /// Handles, by their id.
    handles: hashbrown::HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
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
        let g = self.inner.read();
        g.map.len() + g.blocks.len() + g.handles.len()
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

/// The id of a handle record (a stored entry holds only handles in the handle table).
fn entry_id(e: &Entry) -> &str {
    match &e.0 {
        Record::Handle(h) => h.id(),
        _ => "",
    }
}

fn versioned(e: &Entry) -> Versioned<Record> {
    Versioned {
        value: e.0.clone(),
        revision: e.1,
    }
}

/// What a commit replaced or removed.
#[derive(Default)]
struct Gone {
    records: SmallVec<[Record; 2]>,
    boxes: SmallVec<[Entry; 2]>,
}

/// Where a write lands: a handle (by its id's hash; the id is the write's own), a block, or a
/// key of the ordered map.
enum Slot {
    Handle(u64),
    Block(BlockKey),
    Ordered(Key),
}

/// The network of the block a write writes, if it writes one.
fn block_of(w: &Write) -> Option<&IpNetwork> {
    match w {
        Write::Create(Record::Block(b))
        | Write::Update {
            record: Record::Block(b),
            ..
        } => Some(&b.cidr),
        Write::Delete {
            key: Key::Block(net),
            ..
        } => Some(net),
        _ => None,
    }
}

/// The handle id a write names, if it writes a handle.
fn handle_of(w: &Write) -> Option<&str> {
    match w {
        Write::Create(Record::Handle(h))
        | Write::Update {
            record: Record::Handle(h),
            ..
        } => Some(h.id()),
        Write::Delete {
            key: Key::Handle(id),
            ..
        } => Some(id),
        _ => None,
    }
}

impl Inner {
    fn handle_hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn find_handle(&self, hash: u64, id: &str) -> Option<&Entry> {
        self.handles.find(hash, |e| entry_id(e) == id)
    }

    fn get(&self, key: &Key) -> Option<Versioned<Record>> {
        match key {
            Key::Handle(id) => self.find_handle(self.handle_hash(id), id).map(versioned),
            Key::Block(net) => self.blocks.get(&block_key(net)).map(versioned),
            _ => self.map.get(key).map(versioned),
        }
    }

    fn list(&self, range: &Range) -> Vec<Versioned<Record>> {
        if let Range::Handles = range {
            let mut all: Vec<&Entry> = self.handles.iter().collect();
            all.sort_unstable_by(|a, b| entry_id(a).cmp(entry_id(b)));
            return all.into_iter().map(versioned).collect();
        }
        if let Range::Blocks | Range::BlocksIn(_) = range {
            let Key::Block(start) = range.start() else {
                return Vec::new();
            };
            let block = |e: &Entry| match &e.0 {
                Record::Block(b) => Key::Block(b.cidr),
                _ => Key::Config,
            };
            return self
                .blocks
                .range(block_key(&start)..)
                .map(|(_, e)| (block(e), e))
                .take_while(|(k, _)| !range.past_end(k))
                .filter(|(k, _)| range.contains(k))
                .map(|(_, e)| versioned(e))
                .collect();
        }
        self.map
            .range(range.start()..)
            .take_while(|(k, _)| !range.past_end(k))
            .filter(|(k, _)| range.contains(k))
            .map(|(_, e)| versioned(e))
            .collect()
    }

    fn slot(&self, w: &Write) -> Slot {
        if let Some(id) = handle_of(w) {
            Slot::Handle(self.handle_hash(id))
        } else if let Some(net) = block_of(w) {
            Slot::Block(block_key(net))
        } else {
            Slot::Ordered(w.key())
        }
    }

    /// The current revision of what `w` writes, if it exists.
    fn current(&self, w: &Write, slot: &Slot) -> Option<Revision> {
        match (slot, handle_of(w)) {
            (Slot::Handle(hash), Some(id)) => self.find_handle(*hash, id).map(|e| e.1),
            (Slot::Block(key), _) => self.blocks.get(key).map(|e| e.1),
            (Slot::Ordered(key), _) => self.map.get(key).map(|e| e.1),
            (Slot::Handle(_), None) => None,
        }
    }

    /// Applies a checked write; what it replaced or removed goes to `gone`, to be freed after
    /// the lock is let go.
    fn apply(&mut self, w: Write, slot: Slot, rev: Revision, gone: &mut Gone) {
        match slot {
            Slot::Handle(hash) => {
                let hasher = &self.hasher;
                match w {
                    Write::Create(r) => {
                        self.handles.insert_unique(hash, Box::new((r, rev)), |e| {
                            hasher.hash_one(entry_id(e))
                        });
                    }
                    Write::Update { record: r, .. } => {
                        let id = match &r {
                            Record::Handle(h) => h.id(),
                            _ => "",
                        };
                        if let Some(e) = self.handles.find_mut(hash, |e| entry_id(e) == id) {
                            gone.records.push(std::mem::replace(&mut e.0, r));
                            e.1 = rev;
                        }
                    }
                    Write::Delete { key, .. } => {
                        let Key::Handle(id) = &key else { return };
                        if let Ok(o) = self.handles.find_entry(hash, |e| entry_id(e) == id) {
                            gone.boxes.push(o.remove().0);
                        }
                    }
                }
            }
            Slot::Block(key) => ordered_apply(&mut self.blocks, key, w, rev, gone),
            Slot::Ordered(key) => ordered_apply(&mut self.map, key, w, rev, gone),
        }
    }
}

/// Applies a checked write to an ordered table.
fn ordered_apply<K: Ord>(
    table: &mut BTreeMap<K, Entry>,
    key: K,
    w: Write,
    rev: Revision,
    gone: &mut Gone,
) {
    match w {
        Write::Create(r) => gone.boxes.extend(table.insert(key, Box::new((r, rev)))),
        Write::Update { record: r, .. } => {
            // Checked: the record is there. Replaced in place, its box reused.
            if let Some(e) = table.get_mut(&key) {
                gone.records.push(std::mem::replace(&mut e.0, r));
                e.1 = rev;
            }
        }
        Write::Delete { .. } => gone.boxes.extend(table.remove(&key)),
    }
}

/// Commits up to this size look for a target written twice by comparing pairs; larger ones
/// hash.
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
        self.commit_reusing(writes, &mut Spare::default())
    }

    /// Hands back the block a commit replaced, and the emptied vector of writes.
    fn commit_reusing(
        &self,
        mut writes: Vec<Write>,
        spare: &mut Spare,
    ) -> Result<Revision, StoreError> {
        ipam_core::check_writes(&writes)?;
        let mut g = self.inner.write();
        if writes.is_empty() {
            return Ok(Revision(g.rev));
        }
        if let Some(i) = written_twice(&writes, |w| g.slot(w)) {
            return Err(StoreError::Rejected(format!(
                "{} written twice in one commit",
                writes[i].key()
            )));
        }
        // A write's place is found where it is used, once to check and once to apply: most
        // commits write two or three records, for which that costs less than keeping the
        // places in a vector.
        for w in &writes {
            let kind = match (w, g.current(w, &g.slot(w))) {
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
                return Err(StoreError::Conflict { key: w.key(), kind });
            }
        }
        g.rev += 1;
        let rev = Revision(g.rev);
        let mut gone = Gone::default();
        for w in writes.drain(..) {
            let slot = g.slot(&w);
            g.apply(w, slot, rev, &mut gone);
        }
        // What the commit replaced or removed is freed after the lock is let go.
        drop(g);
        if spare.block.is_none() {
            spare.block = gone.records.into_iter().find_map(|r| match r {
                Record::Block(b) => Some(b),
                _ => None,
            });
        }
        if spare.writes.capacity() == 0 {
            spare.writes = writes;
        }
        Ok(rev)
    }
}

/// Whether two writes name the same record, compared without building keys for handles and
/// blocks.
fn same_target(a: &Write, b: &Write) -> bool {
    match (handle_of(a), handle_of(b)) {
        (Some(x), Some(y)) => return x == y,
        (None, None) => {}
        _ => return false,
    }
    match (block_of(a), block_of(b)) {
        (Some(x), Some(y)) => return block_key(x) == block_key(y),
        (None, None) => {}
        _ => return false,
    }
    a.key() == b.key()
}

/// The index of a write whose target an earlier write of the commit also names: compared
/// pairwise in small commits, by their places (`slot`) hashed in larger ones.
fn written_twice(writes: &[Write], slot: impl Fn(&Write) -> Slot) -> Option<usize> {
    if writes.len() <= PAIRWISE_LIMIT {
        (1..writes.len()).find(|&j| (0..j).any(|i| same_target(&writes[i], &writes[j])))
    } else {
        let mut handles = std::collections::HashSet::with_capacity(writes.len());
        let mut blocks = std::collections::HashSet::with_capacity(writes.len());
        let mut keys = std::collections::HashSet::with_capacity(writes.len());
        (0..writes.len()).find(|&i| match slot(&writes[i]) {
            Slot::Handle(_) => !handles.insert(handle_of(&writes[i])),
            Slot::Block(k) => !blocks.insert(k),
            Slot::Ordered(k) => !keys.insert(k),
        })
    }
}
