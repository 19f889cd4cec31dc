//! Which routes a node should have, from the store's affinities, nodes and workload endpoints:
//! one route per block (never per pod), so the blocks that IPAM hands out are what the network
//! routes. Pure: the node service's route agent programs the result, `ipamctl show --routes`
//! prints it.
//!
//! For node N:
//! - each block confirmed affine to N: a blackhole, so traffic to an unassigned address of a
//!   local block is dropped on N instead of leaving it;
//! - each block confirmed affine to another node M: via M's address of the block's family;
//! - each address that a pod on M borrowed from a block not affine to M: a /32 (/128) via M,
//!   which wins over the block's route by prefix length;
//! - nothing for N's own pods (the main plugin's host routes reach them) and nothing for a node
//!   without an address of the family.

use crate::cidr;
use crate::model::{Affinity, AffinityState, Endpoint, Node};
use ipnetwork::IpNetwork;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Where a route sends its traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Dropped (the node's own block).
    Blackhole,
    /// To this node address.
    Via(IpAddr),
}

/// One route a node should have.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// Destination: a block, or one borrowed address.
    pub dst: IpNetwork,
    /// Where to.
    pub target: Target,
    /// The node the destination belongs to.
    pub owner: String,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            Target::Blackhole => write!(f, "blackhole {}", self.dst),
            Target::Via(a) => write!(f, "{} via {a}", self.dst),
        }
    }
}

/// Whether `ip` lies in none of `blocks`.
fn outside(blocks: &[IpNetwork], ip: IpAddr) -> bool {
    !blocks.iter().any(|b| b.contains(ip))
}

/// Addresses of pods on `node` taken from blocks not affine to it (the node announces them).
/// Records may be owned or borrowed (a caller's copy need not be cloned).
pub fn borrowed_by<A: Borrow<Affinity>, E: Borrow<Endpoint>>(
    node: &str,
    affinities: &[A],
    endpoints: &[E],
) -> Vec<IpNetwork> {
    let mine: Vec<IpNetwork> = affinities
        .iter()
        .map(Borrow::borrow)
        .filter(|a| a.node == node && a.state == AffinityState::Confirmed)
        .map(|a| a.cidr)
        .collect();
    let mut out: Vec<IpNetwork> = endpoints
        .iter()
        .map(Borrow::borrow)
        .filter(|e| e.node == node)
        .flat_map(|e| e.addresses.iter())
        .filter(|a| outside(&mine, a.ip()))
        .map(|a| IpNetwork::from(a.ip()))
        .collect();
    out.sort_by(cidr::net_cmp);
    out.dedup();
    out
}

/// The routes `node` should have. One pass over each input (the blocks of every node grouped
/// first), so a cluster of a thousand nodes and 110,000 endpoints costs one sort, not a pass
/// over every endpoint per node.
pub fn routes_for<A: Borrow<Affinity>, N: Borrow<Node>, E: Borrow<Endpoint>>(
    node: &str,
    affinities: &[A],
    nodes: &[N],
    endpoints: &[E],
) -> Vec<Route> {
    let addr: BTreeMap<&str, &Node> = nodes
        .iter()
        .map(Borrow::borrow)
        .map(|n| (n.name.as_str(), n))
        .collect();
    let via = |owner: &str, dst: &IpNetwork| {
        addr.get(owner)
            .and_then(|n| n.address(dst.is_ipv6()))
            .map(Target::Via)
    };
    let mut out = Vec::new();
    // Looked up once per endpoint: hashed, not ordered.
    let mut blocks_of: std::collections::HashMap<&str, Vec<IpNetwork>> =
        std::collections::HashMap::new();
    for a in affinities
        .iter()
        .map(Borrow::borrow)
        .filter(|a| a.state == AffinityState::Confirmed)
    {
        blocks_of.entry(a.node.as_str()).or_default().push(a.cidr);
        let target = if a.node == node {
            Some(Target::Blackhole)
        } else {
            via(&a.node, &a.cidr)
        };
        if let Some(target) = target {
            out.push(Route {
                dst: a.cidr,
                target,
                owner: a.node.clone(),
            });
        }
    }
    for e in endpoints.iter().map(Borrow::borrow) {
        if e.node == node {
            continue;
        }
        let theirs = blocks_of
            .get(e.node.as_str())
            .map_or(&[][..], Vec::as_slice);
        for a in e.addresses.iter().filter(|a| outside(theirs, a.ip())) {
            let dst = IpNetwork::from(a.ip());
            if let Some(target) = via(&e.node, &dst) {
                out.push(Route {
                    dst,
                    target,
                    owner: e.node.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| cidr::net_cmp(&a.dst, &b.dst).then(a.target.cmp(&b.target)));
    out.dedup_by(|a, b| a.dst == b.dst);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aff(node: &str, cidr: &str, state: AffinityState) -> Affinity {
        Affinity {
            node: node.into(),
            cidr: cidr.parse().expect("a valid literal"),
            state,
        }
    }

    fn node(name: &str, addr: &str) -> Node {
        let mut n = Node::new(name).expect("a valid fixture");
        n.set_address(addr.parse().expect("a valid literal"));
        n
    }

    fn ep(node: &str, ip: &str) -> Endpoint {
        Endpoint {
            node: node.into(),
            addresses: vec![format!("{ip}/32").parse().expect("a valid literal")],
            ..Endpoint::default()
        }
    }

    #[test]
    fn one_route_per_block_blackholes_for_own_and_a_host_route_per_borrowed_address() {
        use AffinityState::*;
        let affs = [
            aff("a", "10.244.0.0/26", Confirmed),
            aff("a", "10.244.0.64/26", Confirmed),
            aff("b", "10.244.1.0/26", Confirmed),
            aff("c", "10.244.2.0/26", Pending),
            aff("nobody-knows", "10.244.3.0/26", Confirmed),
        ];
        let nodes = [node("a", "172.18.0.4"), node("b", "172.18.0.3")];
        // Pods of b: one in b's block, one borrowed from a's block; pods of a in a's blocks.
        let eps = [
            ep("b", "10.244.1.5"),
            ep("b", "10.244.0.70"),
            ep("a", "10.244.0.1"),
            ep("a", "10.244.0.2"),
        ];
        let on_a: Vec<String> = routes_for("a", &affs, &nodes, &eps)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            on_a,
            vec![
                "blackhole 10.244.0.0/26",
                "blackhole 10.244.0.64/26",
                "10.244.0.70/32 via 172.18.0.3",
                "10.244.1.0/26 via 172.18.0.3",
            ]
        );
        let on_b: Vec<String> = routes_for("b", &affs, &nodes, &eps)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            on_b,
            vec![
                "10.244.0.0/26 via 172.18.0.4",
                "10.244.0.64/26 via 172.18.0.4",
                "blackhole 10.244.1.0/26",
            ]
        );
        assert_eq!(
            borrowed_by("b", &affs, &eps),
            vec!["10.244.0.70/32"
                .parse::<IpNetwork>()
                .expect("a valid literal")]
        );
        assert!(borrowed_by("a", &affs, &eps).is_empty());
    }

    /// The definition, spelled out: each other node's borrowed addresses found by
    /// [`borrowed_by`] on its own, one pass over the endpoints per node.
    fn routes_by_definition(
        node: &str,
        affs: &[Affinity],
        nodes: &[Node],
        eps: &[Endpoint],
    ) -> Vec<Route> {
        let mut out: Vec<Route> = routes_for::<_, _, Endpoint>(node, affs, nodes, &[]);
        let mut others: Vec<&str> = eps.iter().map(|e| e.node.as_str()).collect();
        others.sort_unstable();
        others.dedup();
        for m in others.into_iter().filter(|m| *m != node) {
            let Some(n) = nodes.iter().find(|n| n.name == m) else {
                continue;
            };
            for dst in borrowed_by(m, affs, eps) {
                if let Some(a) = n.address(dst.is_ipv6()) {
                    out.push(Route {
                        dst,
                        target: Target::Via(a),
                        owner: m.to_string(),
                    });
                }
            }
        }
        out.sort_by(|a, b| cidr::net_cmp(&a.dst, &b.dst).then(a.target.cmp(&b.target)));
        out.dedup_by(|a, b| a.dst == b.dst);
        out
    }

    #[test]
    fn routes_grouped_once_equal_the_definition() {
        // A small linear congruential generator: a fixed, varied cluster.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from((x >> 33) % n).unwrap_or(0)
        };
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let mut affs = Vec::new();
        for b in 0..30u64 {
            let state = if next(5) == 0 {
                AffinityState::Pending
            } else {
                AffinityState::Confirmed
            };
            let owner = &names[next(12)];
            affs.push(aff(
                owner,
                &format!("10.244.{}.{}/26", b / 4, (b % 4) * 64),
                state,
            ));
        }
        // Two nodes without an address: their routes are left out.
        let nodes: Vec<Node> = (0..10)
            .map(|i| node(&names[i], &format!("172.18.0.{}", i + 2)))
            .collect();
        let eps: Vec<Endpoint> = (0..400)
            .map(|_| {
                let ip = format!("10.244.{}.{}", next(9), next(256));
                ep(&names[next(12)], &ip)
            })
            .collect();
        let mut borrowed = 0;
        for n in &names {
            let fast = routes_for(n, &affs, &nodes, &eps);
            assert_eq!(fast, routes_by_definition(n, &affs, &nodes, &eps), "on {n}");
            borrowed += fast.iter().filter(|r| r.dst.prefix() == 32).count();
        }
        assert!(borrowed > 50, "the cluster borrows: {borrowed} host routes");
    }
}
