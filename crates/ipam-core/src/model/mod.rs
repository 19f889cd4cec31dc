//! The stored records: pools, blocks, affinities, handles, nodes, workload endpoints, the
//! cluster configuration and the block-claim index. Each type validates itself; stores decode bytes into these types and
//! call `validate` so the algorithms only ever see well-formed records.

pub(crate) mod affinity;
pub(crate) mod block;
pub(crate) mod config;
pub(crate) mod endpoint;
pub(crate) mod handle;
pub(crate) mod index;
pub(crate) mod node;
pub(crate) mod pool;
pub(crate) mod reservation;

pub use affinity::{Affinity, AffinityState};
pub use block::{
    AllocAttrs, Block, BlockAffinity, BlockError, BlockParts, BlockPartsRef, HostReserved,
};
pub use config::{ConfigError, IpamConfig, DEFAULT_MAX_BLOCKS_PER_HOST, MAX_COOLDOWN_SECONDS};
pub use endpoint::{endpoint_id, Endpoint};
pub use handle::{validate_handle_id, Handle, RESERVED_HANDLE};
pub use index::{IndexChunk, PoolIndex, CHUNK_SLOTS};
pub use node::{validate_node_name, Node};
pub use pool::{AllowedUse, AssignmentMode, Pool, PoolError, PoolRef};
pub use reservation::Reservation;
