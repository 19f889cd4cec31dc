//! Address arithmetic on `ipnetwork` types: families, ordinals inside a block, block slots
//! inside a pool, and a total order on networks that sorts by address.

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNetwork) -> Family {
        Family::of(net.ip())
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The address as an unsigned integer.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` with integer value `v` (truncated to the family's width).
pub fn u128_to_ip(family: Family, v: u128) -> IpAddr {
    match family {
        #[allow(clippy::cast_possible_truncation)]
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// Builds a network, masking host bits; `None` if the prefix is too long for the family.
pub fn network(family: Family, addr: u128, prefix: u8) -> Option<IpNetwork> {
    if prefix > family.bits() {
        return None;
    }
    let host = u32::from(family.bits() - prefix);
    let masked = if host >= 128 { 0 } else { addr >> host << host };
    match u128_to_ip(family, masked) {
        IpAddr::V4(a) => Ipv4Network::new(a, prefix).ok().map(IpNetwork::V4),
        IpAddr::V6(a) => Ipv6Network::new(a, prefix).ok().map(IpNetwork::V6),
    }
}

/// The network with its host bits cleared (`10.0.0.5/24` becomes `10.0.0.0/24`).
pub fn masked(net: IpNetwork) -> IpNetwork {
    network(Family::of_net(&net), ip_to_u128(net.ip()), net.prefix()).unwrap_or(net)
}

/// True when `net` has no host bits set.
pub fn is_masked(net: &IpNetwork) -> bool {
    masked(*net).ip() == net.ip()
}

/// First address of a network as an integer.
pub fn base(net: &IpNetwork) -> u128 {
    ip_to_u128(net.network())
}

/// Number of host bits of a network.
pub fn host_bits(net: &IpNetwork) -> u32 {
    u32::from(Family::of_net(net).bits() - net.prefix())
}

/// Number of addresses in a block-sized network. Blocks are at most 2^12 addresses, so this fits.
pub fn size_u32(net: &IpNetwork) -> Option<u32> {
    let hb = host_bits(net);
    (hb < 32).then(|| 1u32 << hb)
}

/// Ordinal of `ip` inside `net`, or `None` if outside or too far for a `u32`.
pub fn ordinal(net: &IpNetwork, ip: IpAddr) -> Option<u32> {
    if !net.contains(ip) {
        return None;
    }
    u32::try_from(ip_to_u128(ip) - base(net)).ok()
}

/// The `ord`-th address of `net` (no range check beyond the family width).
pub fn nth(net: &IpNetwork, ord: u32) -> IpAddr {
    u128_to_ip(Family::of_net(net), base(net) + u128::from(ord))
}

/// The block of length `block_prefix` that contains `ip`.
pub fn block_containing(ip: IpAddr, block_prefix: u8) -> Option<IpNetwork> {
    network(Family::of(ip), ip_to_u128(ip), block_prefix)
}

/// True when `inner` lies entirely within `outer`.
pub fn contains_net(outer: &IpNetwork, inner: &IpNetwork) -> bool {
    Family::of_net(outer) == Family::of_net(inner)
        && inner.prefix() >= outer.prefix()
        && outer.contains(inner.network())
}

/// True when two networks share any address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    contains_net(a, b) || contains_net(b, a)
}

/// Total order: family, then address, then prefix length. Used to order keys so that blocks
/// list in address order.
pub fn net_cmp(a: &IpNetwork, b: &IpNetwork) -> Ordering {
    (Family::of_net(a), ip_to_u128(a.ip()), a.prefix()).cmp(&(
        Family::of_net(b),
        ip_to_u128(b.ip()),
        b.prefix(),
    ))
}

/// Wraps an `IpNetwork` with [`net_cmp`] as its order, for ordered maps keyed by network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cidr(pub IpNetwork);

impl Ord for Cidr {
    fn cmp(&self, other: &Self) -> Ordering {
        net_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for Cidr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().expect("a valid literal")
    }

    #[test]
    fn ordinals_and_blocks() {
        let b = n("10.244.1.64/26");
        let ip: IpAddr = "10.244.1.70".parse().expect("a valid literal");
        assert_eq!(ordinal(&b, ip), Some(6));
        assert_eq!(nth(&b, 6), ip);
        assert_eq!(
            ordinal(&b, "10.244.1.128".parse().expect("a valid literal")),
            None
        );
        assert_eq!(block_containing(ip, 26), Some(b));
        assert_eq!(size_u32(&b), Some(64));
        let v6 = n("fd00::40/122");
        assert_eq!(
            nth(&v6, 1),
            "fd00::41".parse::<IpAddr>().expect("a valid literal")
        );
        assert_eq!(masked(n("10.0.0.5/24")), n("10.0.0.0/24"));
        assert!(!is_masked(&n("10.0.0.5/24")));
    }

    #[test]
    fn containment_and_order() {
        assert!(contains_net(&n("10.0.0.0/8"), &n("10.1.0.0/26")));
        assert!(!contains_net(&n("10.1.0.0/26"), &n("10.0.0.0/8")));
        assert!(!contains_net(&n("10.0.0.0/8"), &n("fd00::/122")));
        assert!(overlaps(&n("10.1.0.0/26"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.1.0.0/26"), &n("10.1.0.64/26")));
        assert_eq!(
            net_cmp(&n("10.0.0.64/26"), &n("10.0.1.0/26")),
            Ordering::Less
        );
        assert_eq!(
            net_cmp(&n("10.255.0.0/26"), &n("fd00::/122")),
            Ordering::Less
        );
    }
}
