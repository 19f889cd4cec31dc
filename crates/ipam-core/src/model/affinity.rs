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
    pub(crate) node: String,
    pub(crate) cidr: IpNetwork,
    pub(crate) state: AffinityState,
}

impl Affinity {
    /// An affinity in `state`.
    pub fn new(node: &str, cidr: IpNetwork, state: AffinityState) -> Affinity {
        Affinity {
            node: node.to_string(),
            cidr,
            state,
        }
    }

    /// Node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Block CIDR.
    pub fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    /// State.
    pub fn state(&self) -> AffinityState {
        self.state
    }

    /// A confirmed affinity.
    pub fn confirmed(node: &str, cidr: IpNetwork) -> Affinity {
        Affinity::new(node, cidr, AffinityState::Confirmed)
    }
}
