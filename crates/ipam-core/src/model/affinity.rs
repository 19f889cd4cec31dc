//! Affinities: the claim of one node on one block.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// Lifecycle of an affinity.
///
/// This crate's claims are single atomic commits (affinity + block + index together), so it
/// writes `Confirmed` directly; `Pending` is what a two-phase writer leaves when it crashes
/// between phases, and `PendingDeletion` marks an affinity being released. Both are treated as
/// absent when choosing blocks to assign from, and stale ones are cleaned up on the next claim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AffinityState {
    /// Claimed but not yet confirmed.
    Pending,
    /// The node owns the block.
    #[default]
    Confirmed,
    /// Being released.
    PendingDeletion,
}

/// Node `node` is affine to block `cidr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    /// Node name.
    pub node: String,
    /// Block CIDR.
    pub cidr: IpNetwork,
    /// State.
    pub state: AffinityState,
}

impl Affinity {
    /// A confirmed affinity.
    pub fn confirmed(node: &str, cidr: IpNetwork) -> Affinity {
        Affinity {
            node: node.to_string(),
            cidr,
            state: AffinityState::Confirmed,
        }
    }
}
