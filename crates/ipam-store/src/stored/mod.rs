//! The stored forms of records: versioned types owned by this crate, so the core can change its
//! in-memory types without changing a byte on disk. Each is decoded (`Deserialize`), then turned
//! into the core's validated type with `TryFrom` (which applies the core's rules); encoding
//! serializes a borrowed `...Ref` view of the core's value. Format 1's bytes, for every kind,
//! are pinned by `tests/format_fixtures.rs`.
//!
//! - `block`: the block (bitmaps, delta-coded sequence numbers, owner table);
//! - `records`: the plain records (configuration, pool, node, affinity, handle, claim-index
//!   chunk and summary, workload endpoint, reservation).
//!
//! Networks are stored as their text (`10.244.0.0/26`), addresses as serde's compact form of
//! `std::net::IpAddr` (a variant tag and the octets).

mod block;
mod records;

pub use block::{BlockV1, BlockV1Ref};
pub use records::{
    AffinityV1, AffinityV1Ref, ConfigV1, EndpointV1, EndpointV1Ref, HandleV1, HandleV1Ref,
    IndexChunkV1, IndexChunkV1Ref, NodeV0, NodeV1, NodeV1Ref, PoolIndexV1, PoolIndexV1Ref, PoolV1,
    PoolV1Ref, ReservationV1, ReservationV1Ref,
};

/// A network from its stored text.
fn network(text: &str, what: &str) -> Result<ipnetwork::IpNetwork, String> {
    text.parse()
        .map_err(|e| format!("{what} network {text:?}: {e}"))
}
