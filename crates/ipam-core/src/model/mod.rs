//! The stored records: pools, blocks, affinities, handles, nodes, workload endpoints, the
//! cluster configuration and the block-claim index.
//!
//! Types whose fields must agree with each other keep them private (readable by accessors,
//! changed only by methods that keep the rule, built by validating constructors): [`Pool`]
//! (its arithmetic relies on a masked CIDR and a fitting block size; edited as [`PoolParts`]),
//! [`Block`] (its bitmap, attributes and counts), [`Handle`] (no zero counts), [`Node`] (one
//! address per family), [`Reservation`], [`Affinity`], [`IndexChunk`] and [`PoolIndex`]. A
//! value of these types from this crate or a store is valid, so the algorithms need not check.
//! [`IpamConfig`] and [`Endpoint`] are plain settings and descriptions with public fields;
//! they are validated where they are written ([`crate::Ipam::set_config`],
//! [`crate::Ipam::put_endpoint`]).

pub(crate) mod affinity;
pub(crate) mod attr_table;
pub(crate) mod block;
pub(crate) mod config;
pub(crate) mod endpoint;
pub(crate) mod handle;
pub(crate) mod holder;
pub(crate) mod index;
pub(crate) mod node;
pub(crate) mod pool;
pub(crate) mod reservation;

pub use affinity::{Affinity, AffinityState};
pub use block::{
    AllocAttrs, Block, BlockAffinity, BlockBody, BlockError, BlockParts, BlockPartsRef,
    HostReserved, Ordinals,
};
pub use config::{ConfigError, IpamConfig, DEFAULT_MAX_BLOCKS_PER_HOST, MAX_COOLDOWN_SECONDS};
pub use endpoint::{endpoint_id, Endpoint};
pub use handle::{validate_handle_id, Handle, HandleBlocks, RESERVED_HANDLE};
pub use holder::{HolderTooLarge, MAX_HOLDER_BYTES};
pub use index::{IndexChunk, PoolIndex, CHUNK_SLOTS};
pub use node::{validate_node_name, Node};
pub use pool::{AllowedUse, AssignmentMode, Pool, PoolError, PoolParts, PoolRef};
pub use reservation::Reservation;
