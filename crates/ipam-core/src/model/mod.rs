//! The stored records: pools, blocks, affinities, handles, nodes, workload endpoints, the
//! cluster configuration and the block-claim index. Each type validates itself; stores decode bytes into these types and
//! call `validate` so the algorithms only ever see well-formed records.

pub mod affinity;
pub mod block;
pub mod config;
pub mod endpoint;
pub mod handle;
pub mod index;
pub mod node;
pub mod pool;
pub mod reservation;

pub use affinity::{Affinity, AffinityState};
pub use block::{AllocAttrs, Block, BlockAffinity, BlockParts, BlockPartsRef, HostReserved};
pub use config::{ConfigError, IpamConfig};
pub use endpoint::{endpoint_id, Endpoint};
pub use handle::Handle;
pub use index::{IndexChunk, PoolIndex, CHUNK_SLOTS};
pub use node::Node;
pub use pool::{AllowedUse, AssignmentMode, Pool, PoolError, PoolRef};
pub use reservation::Reservation;
