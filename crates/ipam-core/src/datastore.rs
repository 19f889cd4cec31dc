//! The datastore contract: versioned records with compare-and-swap commits.
//!
//! Every record has a [`Key`] and, once stored, a [`Revision`] that changes on every write.
//! Reads return the record with its revision; writes are [`Write`]s grouped into one
//! [`Datastore::commit`], which applies all of them or none: each `Create` requires the key to
//! be absent, each `Update`/`Delete` requires the key's current revision to equal the one
//! given. Any failed condition is a [`StoreError::Conflict`] naming the key, and nothing is
//! written. A commit returns only once it is durable (for stores that persist).
//!
//! The trait is synchronous: the algorithms are a read-modify-commit loop that gains nothing
//! from `async`, the embedded store (sled) is synchronous, and a networked store (etcd) keeps
//! its own runtime and blocks on each call. See docs/ARCHITECTURE.md.

use crate::cidr::{self, net_cmp, Family};
use crate::model::{
    Affinity, Block, Endpoint, Handle, IndexChunk, IpamConfig, Node, Pool, PoolIndex, Reservation,
};
use ipnetwork::IpNetwork;
use std::cmp::Ordering;
use std::fmt;

/// A record's version. Opaque: only equality matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(pub u64);

/// A record with the revision it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its revision.
    pub revision: Revision,
}

/// The address of a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// The cluster configuration (one record).
    Config,
    /// A pool, by name.
    Pool(String),
    /// A node, by name.
    Node(String),
    /// A block, by CIDR.
    Block(IpNetwork),
    /// An affinity of a node for a block.
    Affinity {
        /// Node name.
        node: String,
        /// Block CIDR.
        cidr: IpNetwork,
    },
    /// A handle, by id.
    Handle(String),
    /// A chunk of a pool's claim index.
    IndexChunk {
        /// Pool CIDR.
        pool: IpNetwork,
        /// Chunk number.
        chunk: u64,
    },
    /// The full-chunk summary of a pool's claim index.
    PoolIndex(IpNetwork),
    /// A workload endpoint.
    Endpoint {
        /// Node name.
        node: String,
        /// `<handle id>/<ifname>`.
        id: String,
    },
    /// An IP reservation, by name.
    Reservation(String),
}

impl Key {
    fn rank(&self) -> u8 {
        match self {
            Key::Config => 0,
            Key::Pool(_) => 1,
            Key::Node(_) => 2,
            Key::Block(_) => 3,
            Key::Affinity { .. } => 4,
            Key::Handle(_) => 5,
            Key::IndexChunk { .. } => 6,
            Key::PoolIndex(_) => 7,
            Key::Endpoint { .. } => 8,
            Key::Reservation(_) => 9,
        }
    }
}

impl Ord for Key {
    /// Kind first; then names lexically, networks by family and address, so blocks of one pool
    /// are contiguous and in address order.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank()
            .cmp(&other.rank())
            .then_with(|| match (self, other) {
                (Key::Pool(a), Key::Pool(b))
                | (Key::Node(a), Key::Node(b))
                | (Key::Handle(a), Key::Handle(b))
                | (Key::Reservation(a), Key::Reservation(b)) => a.cmp(b),
                (Key::Block(a), Key::Block(b)) | (Key::PoolIndex(a), Key::PoolIndex(b)) => {
                    net_cmp(a, b)
                }
                (Key::Affinity { node: n1, cidr: c1 }, Key::Affinity { node: n2, cidr: c2 }) => {
                    n1.cmp(n2).then_with(|| net_cmp(c1, c2))
                }
                (Key::Endpoint { node: n1, id: i1 }, Key::Endpoint { node: n2, id: i2 }) => {
                    n1.cmp(n2).then_with(|| i1.cmp(i2))
                }
                (
                    Key::IndexChunk {
                        pool: p1,
                        chunk: k1,
                    },
                    Key::IndexChunk {
                        pool: p2,
                        chunk: k2,
                    },
                ) => net_cmp(p1, p2).then(k1.cmp(k2)),
                _ => Ordering::Equal,
            })
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Config => write!(f, "config"),
            Key::Pool(n) => write!(f, "pool {n}"),
            Key::Node(n) => write!(f, "node {n}"),
            Key::Block(c) => write!(f, "block {c}"),
            Key::Affinity { node, cidr } => write!(f, "affinity {node} -> {cidr}"),
            Key::Handle(h) => write!(f, "handle {h}"),
            Key::IndexChunk { pool, chunk } => write!(f, "index chunk {chunk} of {pool}"),
            Key::PoolIndex(p) => write!(f, "pool index of {p}"),
            Key::Endpoint { node, id } => write!(f, "endpoint {id} on {node}"),
            Key::Reservation(n) => write!(f, "reservation {n}"),
        }
    }
}

/// A set of keys that a store lists in [`Key`] order. Each is one contiguous key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Range {
    /// Every pool.
    Pools,
    /// Every node.
    Nodes,
    /// Every block.
    Blocks,
    /// Blocks whose CIDR lies within the network (same family).
    BlocksIn(IpNetwork),
    /// Every affinity.
    Affinities,
    /// Affinities of one node.
    AffinitiesOf(String),
    /// Every handle.
    Handles,
    /// Index chunks of one pool.
    IndexChunksOf(IpNetwork),
    /// Every workload endpoint.
    Endpoints,
    /// Workload endpoints of one node.
    EndpointsOf(String),
    /// Every reservation.
    Reservations,
}

impl Range {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &Key) -> bool {
        match (self, key) {
            (Range::Pools, Key::Pool(_))
            | (Range::Nodes, Key::Node(_))
            | (Range::Blocks, Key::Block(_))
            | (Range::Affinities, Key::Affinity { .. })
            | (Range::Handles, Key::Handle(_))
            | (Range::Endpoints, Key::Endpoint { .. })
            | (Range::Reservations, Key::Reservation(_)) => true,
            (Range::EndpointsOf(n), Key::Endpoint { node, .. }) => n == node,
            (Range::BlocksIn(net), Key::Block(b)) => cidr::contains_net(net, b),
            (Range::AffinitiesOf(n), Key::Affinity { node, .. }) => n == node,
            (Range::IndexChunksOf(p), Key::IndexChunk { pool, .. }) => pool == p,
            _ => false,
        }
    }

    /// True when `key` and every key after it (in [`Key`] order) are outside the range, so a
    /// scan from [`Range::start`] may stop.
    pub fn past_end(&self, key: &Key) -> bool {
        // Called for every key a scan visits: no allocation here (not `self.start()`).
        if key.rank() != self.rank() {
            return key.rank() > self.rank();
        }
        match (self, key) {
            (Range::BlocksIn(net), Key::Block(b)) => {
                let hb = cidr::host_bits(net);
                let span = if hb >= 128 {
                    u128::MAX
                } else {
                    (1u128 << hb) - 1
                };
                let last = cidr::base(net).saturating_add(span);
                Family::of_net(b) != Family::of_net(net) || cidr::base(b) > last
            }
            (Range::AffinitiesOf(n), Key::Affinity { node, .. }) => node > n,
            (Range::IndexChunksOf(p), Key::IndexChunk { pool, .. }) => pool != p,
            (Range::EndpointsOf(n), Key::Endpoint { node, .. }) => node > n,
            _ => false,
        }
    }

    /// The rank of the kind of key the range holds (see [`Key::rank`]).
    fn rank(&self) -> u8 {
        match self {
            Range::Pools => 1,
            Range::Nodes => 2,
            Range::Blocks | Range::BlocksIn(_) => 3,
            Range::Affinities | Range::AffinitiesOf(_) => 4,
            Range::Handles => 5,
            Range::IndexChunksOf(_) => 6,
            Range::Endpoints | Range::EndpointsOf(_) => 8,
            Range::Reservations => 9,
        }
    }

    /// The smallest key that can be in the range (a store scans from here while `contains`).
    pub fn start(&self) -> Key {
        let zero_net = |f: Family| cidr::network(f, 0, 0).expect("prefix 0 is valid");
        match self {
            Range::Pools => Key::Pool(String::new()),
            Range::Nodes => Key::Node(String::new()),
            Range::Blocks => Key::Block(zero_net(Family::V4)),
            Range::BlocksIn(net) => Key::Block(cidr::masked(*net)),
            Range::Affinities => Key::Affinity {
                node: String::new(),
                cidr: zero_net(Family::V4),
            },
            Range::AffinitiesOf(n) => Key::Affinity {
                node: n.clone(),
                cidr: zero_net(Family::V4),
            },
            Range::Handles => Key::Handle(String::new()),
            Range::IndexChunksOf(p) => Key::IndexChunk { pool: *p, chunk: 0 },
            Range::Endpoints => Key::Endpoint {
                node: String::new(),
                id: String::new(),
            },
            Range::EndpointsOf(n) => Key::Endpoint {
                node: n.clone(),
                id: String::new(),
            },
            Range::Reservations => Key::Reservation(String::new()),
        }
    }
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// See [`IpamConfig`].
    Config(IpamConfig),
    /// See [`Pool`] (boxed, as the endpoint is: a record is moved through every read and
    /// commit, and is as large as its largest kind).
    Pool(Box<Pool>),
    /// See [`Node`].
    Node(Node),
    /// See [`Block`].
    Block(Block),
    /// See [`Affinity`].
    Affinity(Affinity),
    /// See [`Handle`].
    Handle(Handle),
    /// See [`IndexChunk`].
    IndexChunk(IndexChunk),
    /// See [`PoolIndex`].
    PoolIndex(PoolIndex),
    /// See [`Endpoint`].
    Endpoint(Box<Endpoint>),
    /// See [`Reservation`].
    Reservation(Reservation),
}

impl Record {
    /// The key this record is stored under.
    pub fn key(&self) -> Key {
        match self {
            Record::Config(_) => Key::Config,
            Record::Pool(p) => Key::Pool(p.name.clone()),
            Record::Node(n) => Key::Node(n.name.clone()),
            Record::Block(b) => Key::Block(b.cidr),
            Record::Affinity(a) => Key::Affinity {
                node: a.node.clone(),
                cidr: a.cidr,
            },
            Record::Handle(h) => Key::Handle(h.id.clone()),
            Record::IndexChunk(c) => Key::IndexChunk {
                pool: c.pool,
                chunk: c.chunk,
            },
            Record::PoolIndex(p) => Key::PoolIndex(p.pool),
            Record::Endpoint(e) => Key::Endpoint {
                node: e.node.clone(),
                id: e.id.clone(),
            },
            Record::Reservation(r) => Key::Reservation(r.name.clone()),
        }
    }
}

/// One conditional write of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store a record whose key must be absent.
    Create(Record),
    /// Replace a record whose current revision must be `expected`.
    Update {
        /// The new value (its key names the record).
        record: Record,
        /// The revision it was read at.
        expected: Revision,
    },
    /// Delete a record whose current revision must be `expected`.
    Delete {
        /// The record.
        key: Key,
        /// The revision it was read at.
        expected: Revision,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> Key {
        match self {
            Write::Create(r) | Write::Update { record: r, .. } => r.key(),
            Write::Delete { key, .. } => key.clone(),
        }
    }

    /// Refuses a write whose record breaks the rules readers rely on: the kinds with public
    /// fields ([`Endpoint`], [`IpamConfig`]) are checked here; every other kind is valid by
    /// construction. Every write through `Ipam` is checked before it gets here; this keeps a
    /// store's direct user from storing what later reads would drop or fail to decode.
    pub fn check(&self) -> Result<(), StoreError> {
        let invalid = match self {
            Write::Create(r) | Write::Update { record: r, .. } => match r {
                Record::Endpoint(e) => e.validate().err(),
                Record::Config(c) => c.validate().err().map(|e| e.to_string()),
                _ => None,
            },
            Write::Delete { .. } => None,
        };
        match invalid {
            Some(why) => Err(StoreError::Rejected(format!(
                "invalid record {}: {why}",
                self.key()
            ))),
            None => Ok(()),
        }
    }
}

/// [`Write::check`] of every write of a commit: stores call it before applying anything, so
/// a commit holding one invalid record writes nothing.
pub fn check_writes(writes: &[Write]) -> Result<(), StoreError> {
    writes.iter().try_for_each(Write::check)
}

/// Why a condition failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// `Create` of a key that exists.
    Exists,
    /// `Update`/`Delete` of a key that does not exist.
    Missing,
    /// `Update`/`Delete` at a revision that is no longer current.
    Changed,
}

/// Datastore failures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A commit's condition failed; nothing was written. Re-read and retry.
    #[error("conflict on {key}: {kind:?}")]
    Conflict {
        /// The key whose condition failed.
        key: Key,
        /// How it failed.
        kind: ConflictKind,
    },
    /// The store could not be reached or timed out; the commit may or may not have applied
    /// only if `indeterminate`.
    #[error("datastore unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// True when a commit may have been applied although no answer came back.
        indeterminate: bool,
    },
    /// A stored record could not be decoded or failed validation.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The record (as text: a corrupt key may not parse).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A request the store cannot serve (e.g. a commit larger than the store allows).
    #[error("datastore rejected the request: {0}")]
    Rejected(String),
}

/// A store of versioned records. Implementations must be safe to share between threads.
pub trait Datastore: Send + Sync {
    /// Reads one record.
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError>;

    /// Lists the records in `range`, in key order.
    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError>;

    /// Applies every write or none (see the module docs). Returns the new revision shared by
    /// the written records. An empty commit is a no-op. A commit holding a record that fails
    /// [`check_writes`] is refused ([`StoreError::Rejected`]) and writes nothing.
    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError>;

    /// [`Datastore::commit`], leaving in `spare` what the store is done with (see [`Spare`])
    /// where `spare` has room for it, so the caller builds its next commit in those
    /// allocations instead of new ones. The default commits and leaves `spare` as it is.
    fn commit_reusing(
        &self,
        writes: Vec<Write>,
        spare: &mut Spare,
    ) -> Result<Revision, StoreError> {
        let _ = spare;
        self.commit(writes)
    }

    /// Like [`Datastore::list`], but a record that fails to decode is reported beside the
    /// others instead of failing the whole listing (for checks and repairs). Stores that
    /// cannot hold undecodable records keep the default.
    fn list_lenient(&self, range: &Range) -> Result<Lenient, StoreError> {
        Ok(Lenient {
            records: self.list(range)?,
            corrupt: Vec::new(),
        })
    }

    /// Answers several reads: one answer per read, in order (a `Get` gives zero or one
    /// record). A store that pays a round trip per call answers the batch in one, from one
    /// snapshot; the default asks one by one, which is as good for a local store.
    fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        reads
            .iter()
            .map(|r| match r {
                Read::Get(key) => Ok(self.get(key)?.into_iter().collect()),
                Read::List(range) => self.list(range),
            })
            .collect()
    }
    /// Whether a commit could be made durable now (for readiness checks). Stores that can
    /// lose the ability to write (a full disk) probe it; the default says yes.
    fn writable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// For a store whose writers agree on a [`RecordLayout`] (the etcd store, shared by nodes
    /// that may run different builds): the layout records are written in now, and how many
    /// stored records are in each (a scan of every record). `None` for stores with no choice.
    fn layout(&self) -> Result<Option<LayoutStatus>, StoreError> {
        Ok(None)
    }

    /// Makes `layout` the one every writer of the store uses from now on, then rewrites each
    /// stored record that is in another layout, by compare-and-swap (a record written in the
    /// meantime is already in `layout`). Refused by stores with no choice.
    fn set_layout(&self, layout: RecordLayout) -> Result<LayoutStatus, StoreError> {
        let _ = layout;
        Err(StoreError::Rejected(
            "this store has a single record layout".into(),
        ))
    }

    /// A feed of the records in `ranges` and their changes from now on, for a reader that
    /// keeps a copy (the route agent): what it then reads costs the store nothing. `None` for
    /// stores without one; their readers read the ranges again instead.
    fn watch(&self, ranges: &[Range]) -> Result<Option<Feed>, StoreError> {
        let _ = ranges;
        Ok(None)
    }
}

/// What a [`Feed`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Every record in the watched ranges at one revision: the first message, and again
    /// whenever the feed had to start over (a reader replaces its copy).
    Snapshot(Vec<Versioned<Record>>),
    /// A record written after the last snapshot.
    Put(Versioned<Record>),
    /// A record deleted after the last snapshot.
    Delete(Key),
}

/// Changes to watched ranges ([`Datastore::watch`]): in the order the store made them within
/// each range (so for each key); changes of different ranges may interleave otherwise.
pub struct Feed {
    rx: std::sync::mpsc::Receiver<Change>,
    /// Dropped with the feed: tells the watcher to stop (see [`Feed::with_guard`]).
    _guard: Option<Box<dyn Send>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed reading what a store's watcher sends on the other end of `rx`.
    pub fn new(rx: std::sync::mpsc::Receiver<Change>) -> Feed {
        Feed { rx, _guard: None }
    }

    /// Like [`Feed::new`], holding `guard` until the feed is dropped: a watcher that waits on
    /// its store, not on the channel, learns from the guard's end that nobody reads any more
    /// (and stops at once, not at the next change it would send).
    pub fn with_guard(rx: std::sync::mpsc::Receiver<Change>, guard: Box<dyn Send>) -> Feed {
        Feed {
            rx,
            _guard: Some(guard),
        }
    }

    /// The changes that arrived since the last call, without waiting; `None` once the
    /// watcher has stopped (its reader goes back to reading the store).
    pub fn drain(&self) -> Option<Vec<Change>> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(c) => out.push(c),
                Err(std::sync::mpsc::TryRecvError::Empty) => return Some(out),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return if out.is_empty() { None } else { Some(out) };
                }
            }
        }
    }
}

/// How a store lays out the bytes of a record, where its writers must agree on it: a build
/// that does not know a layout cannot read the records written in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordLayout {
    /// Every record as it is: readable by every build.
    Plain,
    /// Large records compressed (smaller writes; readable by builds that know the layout).
    Compressed,
}

impl RecordLayout {
    /// The layout's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordLayout::Plain => "plain",
            RecordLayout::Compressed => "compressed",
        }
    }

    /// The layout named `s`, if this build knows it.
    pub fn from_name(s: &str) -> Option<RecordLayout> {
        match s {
            "plain" => Some(RecordLayout::Plain),
            "compressed" => Some(RecordLayout::Compressed),
            _ => None,
        }
    }
}

impl fmt::Display for RecordLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Datastore::layout`] and [`Datastore::set_layout`] report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayoutStatus {
    /// The layout records are written in (`None`: one this build does not know).
    pub layout: Option<RecordLayout>,
    /// Stored records in the plain layout (small records stay plain in every layout).
    pub plain: u64,
    /// Stored records compressed.
    pub compressed: u64,
    /// Records that did not decode (left as they are).
    pub corrupt: u64,
    /// Records [`Datastore::set_layout`] rewrote.
    pub rewritten: u64,
}

/// One read of a [`Datastore::read`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The record under a key.
    Get(Key),
    /// The records in a range, in key order.
    List(Range),
}

/// Allocations a store hands back from a commit for the caller's next one
/// ([`Datastore::commit_reusing`]). Only their room matters: what they hold means nothing to
/// the caller, which writes a block over whole ([`Clone::clone_from`]) and clears the vector.
#[derive(Debug, Default)]
pub struct Spare {
    /// A block record the store no longer holds.
    pub block: Option<Block>,
    /// A vector with room for a commit's writes.
    pub writes: Vec<Write>,
}

impl Spare {
    /// `block` copied into the spare block's allocation, or cloned when there is none.
    pub fn copy_of(&mut self, block: &Block) -> Block {
        match self.block.take() {
            Some(mut b) => {
                b.clone_from(block);
                b
            }
            None => block.clone(),
        }
    }

    /// The spare vector, emptied, for a commit's writes.
    pub fn writes(&mut self) -> Vec<Write> {
        let mut w = std::mem::take(&mut self.writes);
        w.clear();
        w
    }
}

/// The result of [`Datastore::list_lenient`].
#[derive(Clone, Debug, Default)]
pub struct Lenient {
    /// Records that decoded.
    pub records: Vec<Versioned<Record>>,
    /// One `StoreError::Corrupt` per record that did not.
    pub corrupt: Vec<StoreError>,
}

/// A store behind a reference or a pointer is that store: every method passes through.
macro_rules! forward_datastore {
    ($($ptr:ty),*) => {$(
        impl<T: Datastore + ?Sized> Datastore for $ptr {
            fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
                (**self).get(key)
            }
            fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
                (**self).list(range)
            }
            fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
                (**self).commit(writes)
            }
            fn commit_reusing(
                &self,
                writes: Vec<Write>,
                spare: &mut Spare,
            ) -> Result<Revision, StoreError> {
                (**self).commit_reusing(writes, spare)
            }
            fn list_lenient(&self, range: &Range) -> Result<Lenient, StoreError> {
                (**self).list_lenient(range)
            }
            fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
                (**self).read(reads)
            }
            fn writable(&self) -> Result<(), StoreError> {
                (**self).writable()
            }
            fn layout(&self) -> Result<Option<LayoutStatus>, StoreError> {
                (**self).layout()
            }
            fn set_layout(&self, layout: RecordLayout) -> Result<LayoutStatus, StoreError> {
                (**self).set_layout(layout)
            }
            fn watch(&self, ranges: &[Range]) -> Result<Option<Feed>, StoreError> {
                (**self).watch(ranges)
            }
        }
    )*};
}

forward_datastore!(&T, std::sync::Arc<T>, Box<T>);

/// A record type that can be taken out of a [`Record`].
pub trait RecordKind: Sized {
    /// The value, if `record` is of this kind; else the record back.
    fn from_record(record: Record) -> Result<Self, Box<Record>>;

    /// The versioned value, or a corruption error naming the record's key.
    fn from_versioned(v: Versioned<Record>) -> Result<Versioned<Self>, StoreError> {
        match Self::from_record(v.value) {
            Ok(value) => Ok(Versioned {
                value,
                revision: v.revision,
            }),
            Err(other) => Err(wrong_kind(&other.key())),
        }
    }
}

/// Takes the one record of a `Get` answer of a [`Datastore::read`] batch.
pub fn one<T: RecordKind>(
    answer: Vec<Versioned<Record>>,
) -> Result<Option<Versioned<T>>, StoreError> {
    answer.into_iter().next().map(T::from_versioned).transpose()
}

/// Takes the records of a `List` answer of a [`Datastore::read`] batch.
pub fn all<T: RecordKind>(answer: Vec<Versioned<Record>>) -> Result<Vec<Versioned<T>>, StoreError> {
    answer.into_iter().map(T::from_versioned).collect()
}

macro_rules! typed {
    ($get:ident, $list:ident, $variant:ident, $ty:ty) => {
        #[doc = concat!("Reads a [`", stringify!($ty), "`] record.")]
        fn $get(&self, key: &Key) -> Result<Option<Versioned<$ty>>, StoreError> {
            self.get(key)?
                .map(<$ty as RecordKind>::from_versioned)
                .transpose()
        }

        #[doc = concat!("Lists [`", stringify!($ty), "`] records in a range.")]
        fn $list(&self, range: &Range) -> Result<Vec<Versioned<$ty>>, StoreError> {
            all(self.list(range)?)
        }
    };
}

macro_rules! record_kind {
    ($($variant:ident: $ty:ty),*) => {
        $(impl RecordKind for $ty {
            fn from_record(record: Record) -> Result<Self, Box<Record>> {
                match record {
                    Record::$variant(v) => Ok(v),
                    other => Err(Box::new(other)),
                }
            }
        })*
    };
}

macro_rules! boxed_record_kind {
    ($($variant:ident: $ty:ty),*) => {
        $(impl RecordKind for $ty {
            fn from_record(record: Record) -> Result<Self, Box<Record>> {
                match record {
                    Record::$variant(v) => Ok(*v),
                    other => Err(Box::new(other)),
                }
            }
        })*
    };
}

record_kind!(Node: Node, Block: Block, Affinity: Affinity, Handle: Handle,
    IndexChunk: IndexChunk, PoolIndex: PoolIndex, Config: IpamConfig, Reservation: Reservation);
boxed_record_kind!(Pool: Pool, Endpoint: Endpoint);

fn wrong_kind(key: &Key) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: "record of the wrong kind under this key".into(),
    }
}

/// Typed reads over any [`Datastore`].
pub trait StoreExt: Datastore {
    typed!(get_pool, list_pools, Pool, Pool);
    typed!(get_node, list_nodes, Node, Node);
    typed!(get_block, list_blocks, Block, Block);
    typed!(get_affinity, list_affinities, Affinity, Affinity);
    typed!(get_handle, list_handles, Handle, Handle);
    typed!(get_chunk, list_chunks, IndexChunk, IndexChunk);
    typed!(get_pool_index, list_pool_indexes, PoolIndex, PoolIndex);
    typed!(get_config_rec, list_config_recs, Config, IpamConfig);
    typed!(get_endpoint, list_endpoints, Endpoint, Endpoint);
    typed!(get_reservation, list_reservations, Reservation, Reservation);
}

impl<T: Datastore + ?Sized> StoreExt for T {}

/// Builds the write that stores `record` whether or not it existed: `Update` at `rev` when
/// read at a revision, `Create` otherwise.
pub fn put(record: Record, rev: Option<Revision>) -> Write {
    match rev {
        Some(expected) => Write::Update { record, expected },
        None => Write::Create(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_ranks_as_its_first_key() {
        let net: IpNetwork = "10.244.0.0/16".parse().expect("net");
        for r in [
            Range::Pools,
            Range::Nodes,
            Range::Blocks,
            Range::BlocksIn(net),
            Range::Affinities,
            Range::AffinitiesOf("n".into()),
            Range::Handles,
            Range::IndexChunksOf(net),
            Range::Endpoints,
            Range::EndpointsOf("n".into()),
            Range::Reservations,
        ] {
            assert_eq!(r.rank(), r.start().rank(), "{r:?}");
            assert!(!r.past_end(&r.start()), "{r:?}");
            assert!(r.past_end(&Key::Reservation("\u{10FFFF}".into())) || r == Range::Reservations);
        }
    }
}
