//! The errors of the IPAM operations, one type per family of operations: assigning
//! ([`AssignError`]), releasing ([`ReleaseError`]), block affinities ([`AffinityError`]) and
//! administration ([`AdminError`]: configuration, pools, nodes, reservations, endpoints,
//! import). Each names only what its operations can fail with; reads fail with the store's
//! [`StoreError`]. [`IpamError`] is any of them, for callers that handle every operation the
//! same way (a CLI, a protocol's error mapping).

use crate::cidr::Family;
use crate::datastore::StoreError;
use crate::model::block::BlockError;
use crate::model::{ConfigError, PoolError};
use crate::selector::SelectorError;
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// Every compare-and-swap attempt of an operation lost to a concurrent writer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("excessive concurrent IPAM requests: {operation} lost {attempts} compare-and-swap attempts in a row")]
pub struct Contention {
    /// The operation.
    pub operation: &'static str,
    /// How many attempts were made.
    pub attempts: u32,
}

/// Errors of operations that run compare-and-swap loops: a lost race is retried.
pub(crate) trait Retryable: From<StoreError> + From<Contention> {
    /// True when the failure is a lost compare-and-swap.
    fn is_conflict(&self) -> bool;
}

/// Why an assignment (auto-assign, specific addresses, a readiness check) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssignError {
    /// The datastore failed (conflicts that outlast the retries become `ExcessiveContention`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every compare-and-swap attempt lost to a concurrent writer.
    #[error(transparent)]
    ExcessiveContention(#[from] Contention),
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
    /// A block is affine to another node.
    #[error("block {cidr} is affine to node {owner}")]
    AffinityConflict {
        /// Block.
        cidr: IpNetwork,
        /// Its node.
        owner: String,
    },
    /// A block-level rule (reserved, cooling, size).
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The handle already holds addresses and the request asked to assign only to a handle
    /// that holds none ([`crate::AutoAssignArgs::only_if_unheld`]); nothing was written.
    #[error("handle {0} already holds addresses")]
    HandleHolds(String),
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Releasing what a failed request had taken failed too (the request's own error is
    /// then secondary: the addresses may still be held).
    #[error("undoing a partly done assignment failed: {0}")]
    Undo(#[from] ReleaseError),
}

/// Why a release (by address or by handle) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The datastore failed (conflicts that outlast the retries become `ExcessiveContention`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every compare-and-swap attempt lost to a concurrent writer.
    #[error(transparent)]
    ExcessiveContention(#[from] Contention),
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
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Why claiming or releasing block affinities (or removing a node) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AffinityError {
    /// The datastore failed (conflicts that outlast the retries become `ExcessiveContention`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every compare-and-swap attempt lost to a concurrent writer.
    #[error(transparent)]
    ExcessiveContention(#[from] Contention),
    /// A requested pool does not exist.
    #[error("pool {0} does not exist")]
    UnknownPool(String),
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
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Releasing the addresses of a removed node failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

/// Why an administrative operation (configuration, pools, nodes, reservations, endpoints,
/// import) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The datastore failed (conflicts that outlast the retries become `ExcessiveContention`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every compare-and-swap attempt lost to a concurrent writer.
    #[error(transparent)]
    ExcessiveContention(#[from] Contention),
    /// A requested pool does not exist.
    #[error("pool {0} does not exist")]
    UnknownPool(String),
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
    /// Releasing a pool's block affinities failed.
    #[error(transparent)]
    Affinity(#[from] AffinityError),
}

/// `is_transient` and the retry loop's conflict test of a family: a store that could not be
/// reached or a lost race is transient, and so is a wrapped family's transient failure.
macro_rules! cas_family {
    ($name:ident $(, $wrapped:ident)?) => {
        impl $name {
            /// True for failures a caller may retry later (store unreachable, contention).
            pub fn is_transient(&self) -> bool {
                match self {
                    $name::Store(StoreError::Unavailable { .. }) | $name::ExcessiveContention(_) => {
                        true
                    }
                    $($name::$wrapped(e) => e.is_transient(),)?
                    _ => false,
                }
            }
        }

        impl Retryable for $name {
            fn is_conflict(&self) -> bool {
                matches!(self, $name::Store(StoreError::Conflict { .. }))
            }
        }
    };
}
cas_family!(AssignError, Undo);
cas_family!(ReleaseError);
cas_family!(AffinityError, Release);
cas_family!(AdminError, Affinity);

/// Any IPAM failure: the error of whichever operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// A read failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An assignment failed.
    #[error(transparent)]
    Assign(#[from] AssignError),
    /// A release failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// An affinity operation failed.
    #[error(transparent)]
    Affinity(#[from] AffinityError),
    /// An administrative operation failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

impl IpamError {
    /// True for failures a caller may retry later (store unreachable, contention).
    pub fn is_transient(&self) -> bool {
        match self {
            IpamError::Store(e) => matches!(e, StoreError::Unavailable { .. }),
            IpamError::Assign(e) => e.is_transient(),
            IpamError::Release(e) => e.is_transient(),
            IpamError::Affinity(e) => e.is_transient(),
            IpamError::Admin(e) => e.is_transient(),
        }
    }
}

/// Invalid input to an administrative operation, as any IPAM failure (so `?` reaches an
/// `IpamError` from a pool, selector or configuration that did not validate).
macro_rules! admin_input {
    ($($t:ty),*) => {$(
        impl From<$t> for IpamError {
            fn from(e: $t) -> IpamError {
                IpamError::Admin(e.into())
            }
        }
    )*};
}
admin_input!(PoolError, SelectorError, ConfigError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_union_keeps_each_family_message_and_transience() {
        let contention = Contention {
            operation: "assign",
            attempts: 3,
        };
        let cases: [(IpamError, bool); 5] = [
            (AssignError::from(contention.clone()).into(), true),
            (
                ReleaseError::NotAllocated("10.0.0.1".parse().expect("a valid literal")).into(),
                false,
            ),
            (
                AffinityError::from(StoreError::Unavailable {
                    reason: "down".into(),
                    indeterminate: false,
                })
                .into(),
                true,
            ),
            (AdminError::PoolExists("p".into()).into(), false),
            (
                AdminError::from(AffinityError::from(ReleaseError::from(contention.clone())))
                    .into(),
                true,
            ),
        ];
        for (e, transient) in cases {
            assert_eq!(e.is_transient(), transient, "{e:?}");
        }
        let e: IpamError = AssignError::from(contention.clone()).into();
        assert_eq!(e.to_string(), contention.to_string());
        let undo = AssignError::from(ReleaseError::NotAllocated(
            "10.0.0.1".parse().expect("a valid literal"),
        ));
        assert_eq!(
            undo.to_string(),
            "undoing a partly done assignment failed: 10.0.0.1 is not allocated"
        );
    }
}
