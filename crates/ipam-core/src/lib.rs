//! Block-affinity IP address management: the model and the algorithms.
//!
//! A *pool* (say 192.168.0.0/16) is cut into *blocks* (/26 by default). A node claims blocks
//! by *affinity* and hands out addresses from them, so routes aggregate per block and nodes
//! rarely write the same record. Each address is held under a *handle* (for CNI,
//! `<network>.<container id>`), which makes release by owner one lookup.
//!
//! What this crate is:
//! - the records ([`model`]) with their validation, and the bitmap allocator inside a block;
//! - the datastore contract ([`datastore`]): versioned records, atomic compare-and-swap
//!   commits, a distinct conflict error;
//! - the operations ([`Ipam`]): auto-assign, assign a specific address, release (guarded by
//!   handle and sequence number), release by handle, affinities, nodes, pools, configuration,
//!   utilisation; and [`audit`], the invariants as a checker.
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

pub mod audit;
pub mod bitmap;
pub mod cidr;
pub mod clock;
pub mod datastore;
pub mod error;
pub mod ipam;
pub mod model;
pub mod routing;
pub mod selector;

pub use cidr::Family;
pub use clock::{Clock, ManualClock};
pub use datastore::{
    ConflictKind, Datastore, Key, Range, Read, Record, Revision, StoreError, StoreExt, Versioned,
    Write,
};
pub use error::IpamError;
pub use ipam::{
    Allocation, AssignIpArgs, AssignedIp, AutoAssignArgs, AutoAssignResult, Dump, FamilyAssignment,
    Ipam, IpamOptions, ReleaseOutcome, ReleaseRequest, Utilisation, ATTR_NODE,
};
pub use model::{
    Affinity, AffinityState, AllowedUse, AssignmentMode, Block, Endpoint, Handle, HostReserved,
    IpamConfig, Node, Pool, PoolRef, Reservation,
};
pub use selector::Selector;
