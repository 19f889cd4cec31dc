//! The IPAM operations over a [`Datastore`].
//!
//! Every operation is a loop of read, modify in memory, and one atomic [`Datastore::commit`]
//! whose conditions are the revisions read. A conflict means another writer got there first:
//! the loop re-reads and tries again, at most `max_retries` times, then fails with
//! [`Contention`](crate::Contention) (in the operation's error). Records that must change together (a block and the
//! handles counting its addresses; a new block, its affinity and the claim index) are written
//! in the same commit, so the invariants in docs/ARCHITECTURE.md hold after every commit, not
//! just eventually.

mod admin;
mod affinity;
mod assign;
mod batch;
mod dump;
mod endpoint;
pub use endpoint::{RouteSource, RouteView};
mod held;
mod query;
mod release;

pub use affinity::AffinityRelease;
pub use assign::{AssignIpArgs, AssignedIp, AutoAssignArgs, AutoAssignResult, FamilyAssignment};
pub use batch::{CARRY_AGE_NS, CARRY_USES};
pub use dump::Dump;
pub use held::RELEASES_PER_COMMIT;
pub use query::{Allocation, BlockUsage, NodeUsage, PoolUsage, Utilisation};
pub use release::{ReleaseOutcome, ReleaseRequest};

use crate::clock::Clock;
use crate::datastore::{put, Datastore, Key, Record, StoreError, StoreExt, Write};
use crate::error::{AdminError, Contention, Retryable};
use crate::model::index::{chunk_count, chunk_len};
use crate::model::{IndexChunk, IpamConfig, Pool, PoolIndex};
use ipnetwork::IpNetwork;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The attribute key under which the assigning node is recorded with every address.
pub const ATTR_NODE: &str = "node";

/// Tuning knobs of [`Ipam`].
#[derive(Clone, Debug)]
pub struct IpamOptions {
    /// Compare-and-swap attempts per operation before `ExcessiveContention` (default 100).
    pub max_retries: u32,
    /// Mixed into the per-node starting point of the block search (default 0).
    pub seed: u64,
    /// How long a block must have been empty before another node may reclaim it (default
    /// 60 s).
    pub reclaim_grace_ns: u64,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            max_retries: 100,
            seed: 0,
            reclaim_grace_ns: 60_000_000_000,
        }
    }
}

/// The IPAM engine: the algorithms, bound to a store and a clock.
///
/// Assignments for one node made through one engine are serialised: they would all write the
/// same block, so letting them race only turns into lost compare-and-swaps and retries (a node
/// service runs one engine for its node). Requests that arrive while one runs are served
/// together, with one read and one commit where the node's block holds them all (group commit,
/// see `batch.rs`). Different nodes, and other processes, still proceed in parallel and are
/// kept apart by the compare-and-swap commits.
pub struct Ipam<S> {
    store: S,
    clock: Arc<dyn Clock>,
    opts: IpamOptions,
    node_lanes: std::sync::Mutex<FastMap<String, Arc<batch::Lane>>>,
    /// Release lanes of blocks that are no node's last block (see `Ipam::hold_block_lane`):
    /// a node's DELs in one of its older blocks take turns instead of racing.
    block_lanes: std::sync::Mutex<FastMap<IpNetwork, Arc<batch::Lane>>>,
    /// The block each node last assigned from: tried first, so a node with many full blocks
    /// does not read them all on every request. Only a hint; the store decides.
    last_block: std::sync::Mutex<Hints>,
    /// Compare-and-swap commits lost to a concurrent writer (and retried), since start.
    conflicts: std::sync::atomic::AtomicU64,
    /// Auto-assignments served in a group commit with others, since start.
    batched: std::sync::atomic::AtomicU64,
    /// Auto-assignments served from a batch's kept context, without a read, since start.
    unread: std::sync::atomic::AtomicU64,
    /// Releases of what handles hold served in a group commit with others, since start.
    batched_releases: std::sync::atomic::AtomicU64,
    /// Commits through this engine that wrote anything a batch's decision reads and no
    /// compare-and-swap of the batch's commit guards (pools, nodes, configuration, affinities,
    /// reservations, the claim index): a context a lane kept is used only while this has not
    /// moved (see `batch.rs`).
    writes_seen: std::sync::atomic::AtomicU64,
    /// The release cooldown as last read, kept as a lane keeps pools (see `batch.rs`): used
    /// while younger than [`CARRY_AGE_NS`] and no write through this engine could have
    /// changed it, so a release by handle reads only its handle.
    cooldown: KeptCooldown,
}

/// A release cooldown as read, when, and the engine's count of foreign writes then: three
/// words read without a lock (every release reads them; a lock would make them one point all
/// releases contend on), guarded by a sequence count that is odd while a refresh writes them.
/// A reader that sees the count odd, or changed across its reads, reads the store instead.
/// Refreshes take `refresh`, so one writes at a time. Count 0: nothing kept yet.
#[derive(Default)]
struct KeptCooldown {
    seq: AtomicU64,
    ns: AtomicU64,
    read_at_ns: AtomicU64,
    writes_seen: AtomicU64,
    refresh: std::sync::Mutex<()>,
}

impl KeptCooldown {
    /// (cooldown, read at, foreign writes counted then), as one refresh wrote them.
    fn get(&self) -> Option<(u64, u64, u64)> {
        let before = self.seq.load(Ordering::Acquire);
        if before == 0 || before % 2 == 1 {
            return None;
        }
        let kept = (
            self.ns.load(Ordering::Relaxed),
            self.read_at_ns.load(Ordering::Relaxed),
            self.writes_seen.load(Ordering::Relaxed),
        );
        std::sync::atomic::fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == before).then_some(kept)
    }

    fn set(&self, ns: u64, read_at_ns: u64, writes_seen: u64) {
        let _one = self
            .refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.ns.store(ns, Ordering::Relaxed);
        self.read_at_ns.store(read_at_ns, Ordering::Relaxed);
        self.writes_seen.store(writes_seen, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }
}

/// Each node's last block, both ways: by node for the next assignment, by block for a release
/// (whose handle names only the block) to find the lane that may keep it: the node, and its
/// lane as it was when the hint was set (followed without a second lookup while the lane
/// lives; a lane forgotten since is looked up again by the node's name).
#[derive(Default)]
struct Hints {
    by_node: FastMap<String, IpNetwork>,
    by_block: FastMap<IpNetwork, (String, std::sync::Weak<batch::Lane>)>,
}

/// A lane map, locked, with its idle lanes forgotten once it holds more than 4,096 (a cluster
/// simulation drives thousands of nodes through one engine; the map must not grow without
/// bound).
fn lanes<K: std::hash::Hash + Eq>(
    map: &std::sync::Mutex<FastMap<K, Arc<batch::Lane>>>,
) -> std::sync::MutexGuard<'_, FastMap<K, Arc<batch::Lane>>> {
    let mut m = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if m.len() > 4096 {
        m.retain(|_, l| Arc::strong_count(l) > 1);
    }
    m
}

/// The engine's own maps, looked up on every request: keyed by names and networks the cluster
/// chose, so a fast seeded hash rather than the default's slower flood-resistant one.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

impl<S: Datastore> Ipam<S> {
    /// An engine with default options.
    pub fn new(store: S, clock: Arc<dyn Clock>) -> Self {
        Self::with_options(store, clock, IpamOptions::default())
    }

    /// An engine with explicit options.
    pub fn with_options(store: S, clock: Arc<dyn Clock>, opts: IpamOptions) -> Self {
        Ipam {
            store,
            clock,
            opts,
            node_lanes: Default::default(),
            block_lanes: Default::default(),
            last_block: Default::default(),
            conflicts: Default::default(),
            batched: Default::default(),
            writes_seen: Default::default(),
            unread: Default::default(),
            batched_releases: Default::default(),
            cooldown: Default::default(),
        }
    }

    /// The release cooldown this engine read last, if it may still be used at `now` (see
    /// `cooldown`).
    fn kept_cooldown(&self, now: u64) -> Option<u64> {
        let (ns, read_at_ns, writes_seen) = self.cooldown.get()?;
        let fresh = now.saturating_sub(read_at_ns) <= CARRY_AGE_NS
            && writes_seen == self.writes_seen.load(Ordering::SeqCst);
        fresh.then_some(ns)
    }

    /// Keeps `ns`, the cooldown of a configuration read at `read_at_ns` when the engine had
    /// counted `writes_seen` foreign writes.
    fn keep_cooldown(&self, ns: u64, read_at_ns: u64, writes_seen: u64) {
        self.cooldown.set(ns, read_at_ns, writes_seen);
    }

    /// Commits `writes` (every write but a batch's goes through here), counting those that
    /// may change what a batch decides on without a compare-and-swap of its own guarding it
    /// (see `writes_seen`): blocks, handles and endpoints do not count (a kept block is written
    /// under its revision, handles are created), everything else does. A block that a lane
    /// keeps and that this commit rewrites is kept as written, so a release does not cost the
    /// node's next assignment a read.
    fn commit(&self, writes: Vec<Write>) -> Result<crate::datastore::Revision, StoreError> {
        self.commit_as(writes, false, &mut Default::default())
    }

    /// [`Ipam::commit`] by a caller that holds the lane of the block it writes (and keeps
    /// what it commits there itself): a held lane's context is with its holder, so no lane
    /// is looked up for it.
    fn commit_in_lane(&self, writes: Vec<Write>) -> Result<crate::datastore::Revision, StoreError> {
        self.commit_as(writes, true, &mut Default::default())
    }

    /// [`Ipam::commit_in_lane`] of a kept block's copy, the store's block left in `spare`
    /// ([`Datastore::commit_reusing`]).
    fn commit_in_lane_reusing(
        &self,
        writes: Vec<Write>,
        spare: &mut crate::datastore::Spare,
    ) -> Result<crate::datastore::Revision, StoreError> {
        self.commit_as(writes, true, spare)
    }

    fn commit_as(
        &self,
        writes: Vec<Write>,
        in_lane: bool,
        spare: &mut crate::datastore::Spare,
    ) -> Result<crate::datastore::Revision, StoreError> {
        let guarded = |w: &Write| match w {
            Write::Create(r) | Write::Update { record: r, .. } => matches!(
                r,
                Record::Block(_) | Record::Handle(_) | Record::Endpoint(_)
            ),
            Write::Delete { key, .. } => {
                matches!(key, Key::Block(_) | Key::Handle(_) | Key::Endpoint { .. })
            }
        };
        let counts = !writes.iter().all(guarded);
        // A block a lane keeps, rewritten here (a release, mostly): the lane keeps the result.
        let kept = writes.iter().filter(|_| !in_lane).find_map(|w| match w {
            Write::Update {
                record: Record::Block(b),
                expected,
            } => self
                .lane_keeping(b, *expected)
                .map(|lane| (lane, b.clone(), *expected)),
            _ => None,
        });
        let r = self.store.commit_reusing(writes, spare);
        // Counted whatever the outcome: a commit that timed out may have been applied.
        if counts {
            self.writes_seen
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let (Ok(revision), Some((lane, block, read))) = (&r, kept) {
            lane.rewritten(block, read, *revision);
        }
        r
    }

    fn hint(&self, node: &str) -> Option<IpNetwork> {
        self.hints().by_node.get(node).copied()
    }

    fn hints(&self) -> std::sync::MutexGuard<'_, Hints> {
        self.last_block
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_hint(&self, node: &str, block: IpNetwork) {
        if self.hint(node) == Some(block) {
            return; // the usual case: nothing to allocate
        }
        // Looked up before the hints are locked (a release holds them while it looks up).
        let lane = self
            .existing_lane(node)
            .map(|l| Arc::downgrade(&l))
            .unwrap_or_default();
        let mut m = self.hints();
        let m = &mut *m;
        match m.by_node.get_mut(node) {
            Some(h) if *h == block => return,
            Some(h) => {
                let old = std::mem::replace(h, block);
                if m.by_block.get(&old).is_some_and(|(n, _)| n == node) {
                    m.by_block.remove(&old);
                }
            }
            None => {
                if m.by_node.len() > 65_536 {
                    m.by_node.clear();
                    m.by_block.clear();
                }
                m.by_node.insert(node.to_string(), block);
            }
        }
        m.by_block.insert(block, (node.to_string(), lane));
    }

    /// The release lane of `block` (made if need be).
    fn block_lane(&self, block: IpNetwork) -> Arc<batch::Lane> {
        lanes(&self.block_lanes).entry(block).or_default().clone()
    }

    /// The lane serialising (and batching) this engine's assignments for `node`.
    fn node_lane(&self, node: &str) -> Arc<batch::Lane> {
        let mut m = lanes(&self.node_lanes);
        if let Some(l) = m.get(node) {
            return l.clone(); // the usual case: no key to allocate
        }
        m.entry(node.to_string()).or_default().clone()
    }

    /// The nodes this engine has assigned addresses for (those it still keeps a lane for:
    /// all of them, unless more than 4,096 were served), in name order.
    pub fn served_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = lanes(&self.node_lanes).keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// Auto-assignments this engine served together with others in one commit, since it was
    /// made (see [`Ipam::queued_assignments`]).
    pub fn batched_assignments(&self) -> u64 {
        self.batched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Auto-assignments this engine served from the context its last batch for the node kept,
    /// with no read of their own (see `batch.rs`), since it was made.
    pub fn assignments_without_read(&self) -> u64 {
        self.unread.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits this engine lost to a concurrent writer and retried, since it was made.
    pub fn commit_retries(&self) -> u64 {
        self.conflicts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The block records in `range` ([`crate::Range::Blocks`], or the blocks of one pool:
    /// [`crate::Range::BlocksIn`]), in key order.
    pub fn blocks(
        &self,
        range: &crate::Range,
    ) -> Result<Vec<crate::Versioned<crate::Block>>, StoreError> {
        self.store.list_blocks(range)
    }

    /// The block record of `cidr`, if the block exists.
    pub fn block(
        &self,
        cidr: IpNetwork,
    ) -> Result<Option<crate::Versioned<crate::Block>>, StoreError> {
        self.store.get_block(&Key::Block(cidr))
    }

    /// Checks every invariant over the whole store ([`crate::audit`]).
    pub fn audit(&self) -> Result<Vec<crate::audit::Problem>, StoreError> {
        crate::audit::audit(&self.store)
    }

    /// Whether a commit could be made durable now ([`Datastore::writable`]): readiness checks.
    pub fn writable(&self) -> Result<(), StoreError> {
        self.store.writable()
    }

    /// The store's record layout, where its writers must agree on one
    /// ([`Datastore::layout`]).
    pub fn layout(&self) -> Result<Option<crate::LayoutStatus>, StoreError> {
        self.store.layout()
    }

    /// Switches the store's record layout and rewrites its records into it
    /// ([`Datastore::set_layout`]).
    pub fn set_layout(
        &self,
        layout: crate::RecordLayout,
    ) -> Result<crate::LayoutStatus, StoreError> {
        self.store.set_layout(layout)
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Runs `f` until it returns something other than a store conflict.
    fn retrying<T, E: Retryable>(
        &self,
        operation: &'static str,
        mut f: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        for _ in 0..self.opts.max_retries {
            match f() {
                Err(e) if e.is_conflict() => {
                    self.conflicts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                other => return other,
            }
        }
        Err(Contention {
            operation,
            attempts: self.opts.max_retries,
        }
        .into())
    }

    /// Deletes the record under `key` at the revision read; false when there is none.
    fn delete_if_present(&self, operation: &'static str, key: Key) -> Result<bool, AdminError> {
        self.retrying(operation, || {
            let Some(v) = self.store.get(&key)? else {
                return Ok(false);
            };
            self.commit(vec![Write::Delete {
                key: key.clone(),
                expected: v.revision,
            }])?;
            Ok(true)
        })
    }

    /// The cluster configuration (defaults when never set).
    pub fn config(&self) -> Result<IpamConfig, StoreError> {
        Ok(self
            .store
            .get_config_rec(&Key::Config)?
            .map(|v| v.value)
            .unwrap_or_default())
    }

    /// Every pool, in name order.
    pub fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        Ok(self
            .store
            .list_pools(&crate::datastore::Range::Pools)?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// Chunk `c` of `pool`'s claim index with its key and revision (a new empty chunk when none
    /// is stored). A stored chunk whose bitmap is not the chunk's length is corrupt: refused
    /// here, so slot arithmetic never indexes past it.
    fn index_chunk(
        &self,
        pool: &Pool,
        c: u64,
    ) -> Result<(Key, IndexChunk, Option<crate::datastore::Revision>), StoreError> {
        let key = Key::IndexChunk {
            pool: pool.cidr,
            chunk: c,
        };
        let len = chunk_len(pool.block_count(), c);
        match self.store.get_chunk(&key)? {
            Some(v) if v.value.claimed.len() != len => Err(StoreError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "claim bitmap of {} slots where the pool's chunk has {len}",
                    v.value.claimed.len()
                ),
            }),
            Some(v) => Ok((key, v.value, Some(v.revision))),
            None => Ok((key, IndexChunk::new(pool.cidr, c, len), None)),
        }
    }

    /// Index writes that mark `block`'s slot claimed (`claimed = true`) or free, for the pool
    /// that owns it. Nothing when no pool owns the block.
    fn index_writes(
        &self,
        pools: &[Pool],
        block: &IpNetwork,
        claimed: bool,
    ) -> Result<Vec<Write>, StoreError> {
        let Some((pool, slot)) = pools.iter().find_map(|p| p.slot_of(block).map(|s| (p, s))) else {
            return Ok(Vec::new());
        };
        let (c, i) = crate::model::index::split_slot(slot);
        let (key, mut chunk, rev) = self.index_chunk(pool, c)?;
        if chunk.claimed.get(i) == claimed {
            return Ok(Vec::new());
        }
        let was_full = chunk.claimed.is_full();
        if claimed {
            chunk.claimed.set(i);
        } else {
            chunk.claimed.clear(i);
        }
        let is_full = chunk.claimed.is_full();
        let mut writes = Vec::with_capacity(2);
        if chunk.claimed.count_ones() == 0 {
            if let Some(expected) = rev {
                writes.push(Write::Delete { key, expected });
            }
        } else {
            writes.push(put(Record::IndexChunk(chunk), rev));
        }
        if was_full != is_full {
            writes.push(self.pool_index_write(pool.cidr, |full| {
                if is_full {
                    full.insert(c);
                } else {
                    full.remove(&c);
                }
            })?);
        }
        Ok(writes)
    }

    fn pool_index_write(
        &self,
        pool: IpNetwork,
        change: impl FnOnce(&mut std::collections::BTreeSet<u64>),
    ) -> Result<Write, StoreError> {
        let key = Key::PoolIndex(pool);
        let (mut idx, rev) = match self.store.get_pool_index(&key)? {
            Some(v) => (v.value, Some(v.revision)),
            None => (
                PoolIndex {
                    pool,
                    full_chunks: Default::default(),
                },
                None,
            ),
        };
        change(&mut idx.full_chunks);
        Ok(put(Record::PoolIndex(idx), rev))
    }
}

/// FNV-1a, for a stable per-node starting point that does not depend on the std hasher.
fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Number of chunks of a pool (re-exported for the claim search).
fn pool_chunks(pool: &Pool) -> u64 {
    chunk_count(pool.block_count())
}

#[cfg(test)]
mod tests {
    use super::KeptCooldown;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    #[test]
    fn a_kept_cooldown_is_never_read_torn() {
        // Every refresh writes three equal words: a reader must see three equal words or none.
        let kept = KeptCooldown::default();
        assert_eq!(kept.get(), None, "nothing kept yet");
        kept.set(0, 0, 0);
        let done = AtomicBool::new(false);
        let refreshes = AtomicU64::new(0);
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let (kept, done, refreshes) = (&kept, &done, &refreshes);
                s.spawn(move || {
                    let mut i = w;
                    while !done.load(Ordering::Relaxed) {
                        i += 2;
                        kept.set(i, i, i);
                        refreshes.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            let (mut reads, mut seen, mut torn) = (0u64, 0u64, None);
            // Reads overlap refreshes for a while, however the threads are scheduled.
            while reads < 1_000_000 || refreshes.load(Ordering::Relaxed) < 200_000 {
                reads += 1;
                match kept.get() {
                    Some((a, b, c)) if a == b && b == c => seen += 1,
                    Some(t) => torn = Some(t),
                    None => {}
                }
            }
            // The writers stop before anything is asserted (a failed assertion in the scope
            // would wait for them forever).
            done.store(true, Ordering::Relaxed);
            assert_eq!(torn, None, "a torn read");
            assert!(seen > 0, "some reads found a whole refresh");
        });
    }
}
