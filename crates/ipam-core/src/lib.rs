//! Block-affinity IP address management: the model and the algorithms.
//!
//! A *pool* (say 192.168.0.0/16) is cut into *blocks* (/26 by default). A node claims blocks
//! by *affinity* and hands out addresses from them, so routes aggregate per block and nodes
//! rarely write the same record. Each address is held under a *handle* (for CNI,
//! `<network>.<container id>`), which makes release by owner one lookup.
//!
//! What this crate is:
//! - the records ([`Pool`], [`Block`], [`Affinity`], [`Handle`], [`Node`], ...) with their
//!   validation, and the bitmap allocator inside a block;
//! - the datastore contract ([`Datastore`]): versioned records, atomic compare-and-swap
//!   commits, a distinct conflict error ([`StoreError::Conflict`]);
//! - the operations ([`Ipam`]): auto-assign, assign a specific address, release (guarded by
//!   handle and sequence number), release by handle, affinities, nodes, pools, configuration,
//!   utilisation; and [`audit()`], the invariants as a checker.
//!
//! What it is not: it does no I/O, reads no clock and draws no hidden randomness (time comes
//! from a [`Clock`], the block search's spread from a seed). Stores and their encodings live in
//! `ipam-store`; CNI JSON lives in the plugin crate.
//!
//! ```
//! use ipam_core::{AutoAssignArgs, Ipam, ManualClock, Pool};
//! use ipam_store::MemoryStore;
//! use std::sync::Arc;
//!
//! let ipam = Ipam::new(MemoryStore::new(), Arc::new(ManualClock::new(0)));
//! ipam.create_pool(Pool::new("default", "10.244.0.0/16".parse()?)?)?;
//! // Two pods on node-a: one /26 block claimed by affinity, both addresses from it.
//! let a = ipam.auto_assign(&AutoAssignArgs::v4("node-a", "net.pod-a", 1))?;
//! let b = ipam.auto_assign(&AutoAssignArgs::v4("node-a", "net.pod-b", 1))?;
//! assert_eq!(a.v4.ips[0].block, b.v4.ips[0].block);
//! assert_ne!(a.v4.ips[0].ip, b.v4.ips[0].ip);
//! // A pod on another node gets a block of its own.
//! let c = ipam.auto_assign(&AutoAssignArgs::v4("node-b", "net.pod-c", 1))?;
//! assert_ne!(c.v4.ips[0].block, a.v4.ips[0].block);
//! // Release by owner: what CNI DEL does.
//! assert_eq!(ipam.release_by_handle("net.pod-a")?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

// Modules are private: the crate's surface is the flat list below, so files can move and
// split without breaking callers. `cidr` stays a public namespace of address arithmetic.
mod audit;
mod bitmap;
pub mod cidr;
mod clock;
mod datastore;
mod error;
mod ipam;
mod model;
mod routing;
mod selector;

pub use audit::{audit, Problem};
pub use bitmap::Bitmap;
pub use cidr::Family;
pub use clock::{Clock, ManualClock};
pub use datastore::{
    all, check_writes, one, put, Change, ConflictKind, Datastore, Feed, Key, LayoutStatus, Lenient,
    Range, Read, Record, RecordKind, RecordLayout, Revision, Spare, StoreError, StoreExt,
    Versioned, Write,
};
pub use error::{AdminError, AffinityError, AssignError, Contention, IpamError, ReleaseError};
pub use ipam::{
    AffinityRelease, Allocation, AssignIpArgs, AssignedIp, AutoAssignArgs, AutoAssignResult,
    BlockUsage, Dump, FamilyAssignment, Ipam, IpamOptions, NodeUsage, PoolUsage, ReleaseOutcome,
    ReleaseRequest, RouteSource, RouteView, Utilisation, ATTR_NODE, CARRY_AGE_NS, CARRY_USES,
    RELEASES_PER_COMMIT,
};
pub use model::{
    endpoint_id, validate_handle_id, validate_node_name, Affinity, AffinityState, AllocAttrs,
    AllowedUse, AssignmentMode, Block, BlockAffinity, BlockBody, BlockError, BlockParts,
    BlockPartsRef, ConfigError, Endpoint, Handle, HandleBlocks, HolderTooLarge, HostReserved,
    IndexChunk, IpamConfig, Node, Ordinals, Pool, PoolError, PoolIndex, PoolParts, PoolRef,
    Reservation, CHUNK_SLOTS, DEFAULT_MAX_BLOCKS_PER_HOST, MAX_COOLDOWN_SECONDS, MAX_HOLDER_BYTES,
    RESERVED_HANDLE,
};
pub use routing::{borrowed_by, routes_for, Route, Target};
pub use selector::{Selector, SelectorError};
