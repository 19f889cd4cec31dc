//! The error of every IPAM operation.

use crate::cidr::Family;
use crate::datastore::StoreError;
use crate::model::block::BlockError;
use crate::model::{ConfigError, PoolError};
use crate::selector::SelectorError;
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// Why an IPAM operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// The datastore failed (conflicts that outlast the retries become `ExcessiveContention`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every compare-and-swap attempt lost to a concurrent writer.
    #[error("excessive concurrent IPAM requests: {operation} lost {attempts} compare-and-swap attempts in a row")]
    ExcessiveContention {
        /// The operation.
        operation: &'static str,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Fewer addresses than requested could be assigned.
    #[error("Assigned {assigned} out of {requested} requested {family} addresses; No IPs available in pools: [{}]{}",
        pools.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
        if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    Exhausted {
        /// Family.
        family: Family,
        /// Requested count.
        requested: usize,
        /// Assigned before giving up (already released again unless partial results were
        /// allowed).
        assigned: usize,
        /// The pools that were tried.
        pools: Vec<IpNetwork>,
        /// Extra detail (block limit, strict affinity), or empty.
        reason: String,
    },
    /// No enabled pool of the family selects the node.
    #[error("no enabled {family} pool selects node {node} for {use_}")]
    NoPools {
        /// Family.
        family: Family,
        /// Node.
        node: String,
        /// Intended use.
        use_: String,
    },
    /// A requested pool does not exist.
    #[error("pool {0} does not exist")]
    UnknownPool(String),
    /// A requested pool is disabled.
    #[error("pool {0} is disabled")]
    PoolDisabled(String),
    /// A requested pool is of the other family or does not allow the use.
    #[error("pool {pool} cannot serve this request: {why}")]
    PoolMismatch {
        /// Pool.
        pool: String,
        /// Why.
        why: String,
    },
    /// A pool with this name or an overlapping CIDR exists.
    #[error("pool conflict: {0}")]
    PoolExists(String),
    /// The pool still has allocations or blocks.
    #[error("pool {pool} is in use: {blocks} blocks, {addresses} addresses held")]
    PoolInUse {
        /// Pool.
        pool: String,
        /// Blocks in the pool.
        blocks: usize,
        /// Addresses held.
        addresses: u64,
    },
    /// The pool's blocks hold no addresses, but released ones are still cooling down
    /// (`ip_cooldown_seconds`); the pool can be deleted once they have.
    #[error("pool {pool} cannot be deleted yet: {cooling} released addresses are cooling down for {seconds_left} more seconds (ip_cooldown_seconds); try again then")]
    PoolCooling {
        /// Pool.
        pool: String,
        /// Addresses still cooling.
        cooling: u64,
        /// Seconds until the last one is reusable.
        seconds_left: u64,
    },
    /// The address is in no pool.
    #[error("{0} is not in any pool")]
    NotInPool(IpAddr),
    /// The address is inside an IP reservation.
    #[error("{ip} is reserved (reservation {reservation}) and is not handed out")]
    Reserved {
        /// Address.
        ip: IpAddr,
        /// The reservation's name.
        reservation: String,
    },
    /// The address is already held.
    #[error("{0} is already allocated")]
    AlreadyAllocated(IpAddr),
    /// The address is not held.
    #[error("{0} is not allocated")]
    NotAllocated(IpAddr),
    /// A release named a different handle than the holder's.
    #[error("{ip} is held by handle {actual}, not {expected}")]
    WrongHandle {
        /// Address.
        ip: IpAddr,
        /// Handle named by the request.
        expected: String,
        /// Handle holding it.
        actual: String,
    },
    /// A release named a sequence number that is not the allocation's: the address was
    /// released and re-used since.
    #[error(
        "{ip} was re-allocated since (sequence {actual}, request names {expected}); not released"
    )]
    StaleSequence {
        /// Address.
        ip: IpAddr,
        /// Sequence named by the request.
        expected: u64,
        /// Sequence of the current allocation.
        actual: u64,
    },
    /// A block is affine to another node.
    #[error("block {cidr} is affine to node {owner}")]
    AffinityConflict {
        /// Block.
        cidr: IpNetwork,
        /// Its node.
        owner: String,
    },
    /// An affinity release required an empty block.
    #[error("block {0} still holds addresses")]
    BlockNotEmpty(IpNetwork),
    /// The block CIDR does not match any pool's blocks.
    #[error("{0} is not a block of any pool")]
    NotABlock(IpNetwork),
    /// A block-level rule (reserved, cooling, size).
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Invalid cluster configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Invalid pool.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// Invalid selector.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl IpamError {
    /// True for failures a caller may retry later (store unreachable, contention).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            IpamError::Store(StoreError::Unavailable { .. })
                | IpamError::ExcessiveContention { .. }
        )
    }
}
