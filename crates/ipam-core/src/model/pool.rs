//! IP pools: a CIDR cut into equal blocks, with the rules deciding which nodes and uses may
//! draw from it.

use crate::cidr::{self, Family};
use crate::selector::Selector;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// What addresses from a pool may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllowedUse {
    /// Pod (workload) addresses.
    Workload,
    /// Tunnel endpoint addresses of nodes.
    Tunnel,
    /// Load-balancer service addresses; cannot be combined with other uses.
    LoadBalancer,
}

/// Whether a pool is used without being asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentMode {
    /// Used for auto-assignment when its selector matches.
    #[default]
    Automatic,
    /// Used only when a request names it.
    Manual,
}

/// A request's reference to a pool, as configurations write it: a pool name or a CIDR.
/// Parsed once, where the text enters (a CNI config's `ipv4_pools`), so the search compares
/// values. A reference matches a pool whose name is the text or whose CIDR it parses to
/// (Calico accepts either in the same list).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolRef {
    text: String,
    cidr: Option<IpNetwork>,
}

impl PoolRef {
    /// A reference from its text.
    pub fn new(text: &str) -> Self {
        PoolRef {
            text: text.to_string(),
            cidr: text.parse().ok(),
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The CIDR, when the text is one.
    pub fn cidr(&self) -> Option<IpNetwork> {
        self.cidr
    }

    /// Whether `pool` is the pool referred to.
    pub fn matches(&self, pool: &Pool) -> bool {
        pool.name == self.text || self.cidr == Some(pool.cidr)
    }
}

impl From<&str> for PoolRef {
    fn from(text: &str) -> Self {
        PoolRef::new(text)
    }
}

impl From<String> for PoolRef {
    fn from(text: String) -> Self {
        let cidr = text.parse().ok();
        PoolRef { text, cidr }
    }
}

impl std::fmt::Display for PoolRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A pool that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The CIDR has host bits set.
    #[error("pool CIDR {0} has host bits set; use {1}")]
    NotMasked(IpNetwork, IpNetwork),
    /// The block size is outside the family's range.
    #[error("block size /{size} is invalid for an {family} pool: allowed /{min}../{max}")]
    BlockSize {
        /// Requested prefix.
        size: u8,
        /// Family.
        family: Family,
        /// Smallest allowed prefix length.
        min: u8,
        /// Largest allowed prefix length.
        max: u8,
    },
    /// The pool is smaller than one block.
    #[error("pool {cidr} is smaller than one /{block_size} block")]
    SmallerThanBlock {
        /// Pool CIDR.
        cidr: IpNetwork,
        /// Block prefix.
        block_size: u8,
    },
    /// The pool has more blocks than the claim index can address.
    #[error("pool {cidr} has more than 2^75 /{block_size} blocks; use a longer pool prefix")]
    TooManyBlocks {
        /// Pool CIDR.
        cidr: IpNetwork,
        /// Block prefix.
        block_size: u8,
    },
    /// The name is empty or has characters that cannot appear in keys.
    #[error("invalid pool name {0:?}: use 1-253 characters of [a-z0-9.-]")]
    Name(String),
    /// LoadBalancer combined with another use, or no use at all.
    #[error("allowed uses {0:?} are invalid: LoadBalancer cannot be combined, and at least one use is needed")]
    Uses(Vec<AllowedUse>),
}

/// A pool's settings as written, not yet validated: what `ipamctl export` prints and what
/// [`Ipam::update_pool`](crate::Ipam::update_pool) lets a caller edit. [`Pool::try_from`] checks
/// every rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolParts {
    /// Unique name; pools are considered in name order.
    pub name: String,
    /// The pool's network (masked).
    pub cidr: IpNetwork,
    /// Prefix length of each block.
    pub block_size: u8,
    /// Which nodes may auto-assign from the pool.
    pub node_selector: Selector,
    /// A disabled pool hands out nothing new.
    pub disabled: bool,
    /// Uses addresses may be assigned for.
    pub allowed_uses: Vec<AllowedUse>,
    /// Automatic or manual assignment.
    pub assignment_mode: AssignmentMode,
}

/// An IP pool, validated: the name is usable in keys, the CIDR is masked, the block size suits
/// the family and the pool, the uses are a valid set. The fields are private so that a `Pool`
/// always holds these (the block arithmetic relies on them); change one through
/// [`PoolParts`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PoolParts", into = "PoolParts")]
pub struct Pool {
    pub(crate) name: String,
    pub(crate) cidr: IpNetwork,
    pub(crate) block_size: u8,
    pub(crate) node_selector: Selector,
    pub(crate) disabled: bool,
    pub(crate) allowed_uses: Vec<AllowedUse>,
    pub(crate) assignment_mode: AssignmentMode,
}

impl TryFrom<PoolParts> for Pool {
    type Error = PoolError;
    fn try_from(p: PoolParts) -> Result<Pool, PoolError> {
        let pool = Pool {
            name: p.name,
            cidr: p.cidr,
            block_size: p.block_size,
            node_selector: p.node_selector,
            disabled: p.disabled,
            allowed_uses: p.allowed_uses,
            assignment_mode: p.assignment_mode,
        };
        pool.validate()?;
        Ok(pool)
    }
}

impl From<Pool> for PoolParts {
    fn from(p: Pool) -> PoolParts {
        PoolParts {
            name: p.name,
            cidr: p.cidr,
            block_size: p.block_size,
            node_selector: p.node_selector,
            disabled: p.disabled,
            allowed_uses: p.allowed_uses,
            assignment_mode: p.assignment_mode,
        }
    }
}

/// At most 2^75 blocks per pool, so chunk numbers of the claim index fit a `u64` (an IPv6 /48
/// with /122 blocks has 2^74).
pub const MAX_SLOT_BITS: u8 = 75;

/// Default IPv4 block prefix.
pub const DEFAULT_V4_BLOCK: u8 = 26;
/// Default IPv6 block prefix.
pub const DEFAULT_V6_BLOCK: u8 = 122;

impl Pool {
    /// A pool with the family's default block size and Calico's defaults, validated.
    pub fn new(name: &str, cidr: IpNetwork) -> Result<Pool, PoolError> {
        let block_size = match Family::of_net(&cidr) {
            Family::V4 => DEFAULT_V4_BLOCK,
            Family::V6 => DEFAULT_V6_BLOCK,
        };
        Pool::with_block_size(name, cidr, block_size)
    }

    /// A pool with an explicit block size, validated.
    pub fn with_block_size(name: &str, cidr: IpNetwork, block_size: u8) -> Result<Pool, PoolError> {
        let p = Pool {
            name: name.to_string(),
            cidr,
            block_size,
            node_selector: Selector::all(),
            disabled: false,
            allowed_uses: vec![AllowedUse::Workload, AllowedUse::Tunnel],
            assignment_mode: AssignmentMode::Automatic,
        };
        p.validate()?;
        Ok(p)
    }

    /// A name derived from the CIDR, as used for pools created from CNI config.
    pub fn name_for(cidr: &IpNetwork) -> String {
        format!("pool-{}", cidr.to_string().replace([':', '/'], "-"))
    }

    /// The pool's settings, to edit and validate again with [`Pool::try_from`].
    pub fn to_parts(&self) -> PoolParts {
        self.clone().into()
    }

    /// Unique name; pools are considered in name order.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's network (masked, immutable).
    pub fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    /// Prefix length of each block.
    pub fn block_size(&self) -> u8 {
        self.block_size
    }

    /// Which nodes may auto-assign from the pool.
    pub fn node_selector(&self) -> &Selector {
        &self.node_selector
    }

    /// A disabled pool hands out nothing new.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Uses addresses may be assigned for (never empty).
    pub fn allowed_uses(&self) -> &[AllowedUse] {
        &self.allowed_uses
    }

    /// Automatic or manual assignment.
    pub fn assignment_mode(&self) -> AssignmentMode {
        self.assignment_mode
    }

    /// Checks every rule (a `Pool` made by this crate already holds them).
    pub(crate) fn validate(&self) -> Result<(), PoolError> {
        if self.name.is_empty()
            || self.name.len() > 253
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(PoolError::Name(self.name.clone()));
        }
        if !cidr::is_masked(&self.cidr) {
            return Err(PoolError::NotMasked(self.cidr, cidr::masked(self.cidr)));
        }
        let family = self.family();
        let (min, max) = match family {
            Family::V4 => (20, 32),
            Family::V6 => (116, 128),
        };
        if !(min..=max).contains(&self.block_size) {
            return Err(PoolError::BlockSize {
                size: self.block_size,
                family,
                min,
                max,
            });
        }
        if self.block_size < self.cidr.prefix() {
            return Err(PoolError::SmallerThanBlock {
                cidr: self.cidr,
                block_size: self.block_size,
            });
        }
        if self.block_size - self.cidr.prefix() > MAX_SLOT_BITS {
            return Err(PoolError::TooManyBlocks {
                cidr: self.cidr,
                block_size: self.block_size,
            });
        }
        let lb = self.allowed_uses.contains(&AllowedUse::LoadBalancer);
        if self.allowed_uses.is_empty() || (lb && self.allowed_uses.len() > 1) {
            return Err(PoolError::Uses(self.allowed_uses.clone()));
        }
        Ok(())
    }

    /// The pool's family.
    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Number of block slots in the pool.
    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_size - self.cidr.prefix())
    }

    /// Addresses per block.
    pub fn block_len(&self) -> u32 {
        1u32 << (self.family().bits() - self.block_size)
    }

    /// The block CIDR at slot `slot` (0-based, address order).
    pub fn block_at(&self, slot: u128) -> IpNetwork {
        let hb = u32::from(self.family().bits() - self.block_size);
        let addr = cidr::base(&self.cidr) + (slot << hb);
        cidr::network(self.family(), addr, self.block_size).expect("block size validated")
    }

    /// The slot of a block CIDR inside this pool, if it is one of its blocks.
    pub fn slot_of(&self, block: &IpNetwork) -> Option<u128> {
        if block.prefix() != self.block_size || !cidr::contains_net(&self.cidr, block) {
            return None;
        }
        let hb = u32::from(self.family().bits() - self.block_size);
        Some((cidr::base(block) - cidr::base(&self.cidr)) >> hb)
    }

    /// The block of this pool that holds `ip`.
    pub fn block_for(&self, ip: std::net::IpAddr) -> Option<IpNetwork> {
        if !self.cidr.contains(ip) {
            return None;
        }
        cidr::block_containing(ip, self.block_size)
    }

    /// True when the pool may serve `use_`.
    pub fn allows(&self, use_: AllowedUse) -> bool {
        self.allowed_uses.contains(&use_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_ref_matches_by_name_or_by_cidr() {
        let pool = Pool::new("blue", "10.244.0.0/16".parse().expect("a valid literal"))
            .expect("a valid fixture");
        assert!(PoolRef::new("blue").matches(&pool));
        assert!(PoolRef::new("10.244.0.0/16").matches(&pool));
        assert!(!PoolRef::new("10.245.0.0/16").matches(&pool));
        assert!(!PoolRef::new("green").matches(&pool));
        assert_eq!(PoolRef::from("blue".to_string()), PoolRef::new("blue"));
        assert_eq!(PoolRef::new("10.244.0.0/16").to_string(), "10.244.0.0/16");
    }

    #[test]
    fn validation_rules() {
        let n = |s: &str| s.parse::<IpNetwork>().expect("a valid literal");
        assert!(Pool::new("default", n("192.168.0.0/16")).is_ok());
        assert!(matches!(
            Pool::new("p", n("192.168.0.1/16")),
            Err(PoolError::NotMasked(..))
        ));
        assert!(matches!(
            Pool::with_block_size("p", n("10.0.0.0/8"), 19),
            Err(PoolError::BlockSize { min: 20, .. })
        ));
        assert!(matches!(
            Pool::with_block_size("p", n("fd00::/64"), 115),
            Err(PoolError::BlockSize { .. })
        ));
        assert!(matches!(
            Pool::with_block_size("p", n("10.0.0.0/28"), 26),
            Err(PoolError::SmallerThanBlock { .. })
        ));
        assert!(matches!(
            Pool::new("p", n("fd00::/40")),
            Err(PoolError::TooManyBlocks { .. })
        ));
        assert!(Pool::new("p", n("fd00::/48")).is_ok());
        assert!(matches!(
            Pool::new("Bad Name", n("10.0.0.0/24")),
            Err(PoolError::Name(_))
        ));
        let mut p = Pool::new("p", n("10.0.0.0/24"))
            .expect("a valid fixture")
            .to_parts();
        p.allowed_uses = vec![AllowedUse::LoadBalancer, AllowedUse::Workload];
        assert!(matches!(Pool::try_from(p.clone()), Err(PoolError::Uses(_))));
        p.allowed_uses = vec![AllowedUse::LoadBalancer];
        assert!(Pool::try_from(p).is_ok());
    }

    #[test]
    fn slots_map_to_blocks() {
        let p = Pool::new("p", "10.244.0.0/16".parse().expect("a valid literal"))
            .expect("a valid fixture");
        assert_eq!(p.block_count(), 1024);
        assert_eq!(p.block_at(0).to_string(), "10.244.0.0/26");
        assert_eq!(p.block_at(5).to_string(), "10.244.1.64/26");
        assert_eq!(p.slot_of(&p.block_at(1023)), Some(1023));
        assert_eq!(
            p.slot_of(&"10.245.0.0/26".parse().expect("a valid literal")),
            None
        );
        assert_eq!(
            p.slot_of(&"10.244.0.0/27".parse().expect("a valid literal")),
            None
        );
        assert_eq!(
            Pool::name_for(&"10.244.0.0/16".parse().expect("a valid literal")),
            "pool-10.244.0.0-16"
        );
        let v6 = "fd00:1::/112".parse().expect("a valid literal");
        let name = Pool::name_for(&v6);
        assert!(Pool::new(&name, v6).is_ok(), "{name}");
    }
}
