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

/// Addresses of pods on `node` taken from blocks not affine to it (the node announces them).
pub fn borrowed_by(node: &str, affinities: &[Affinity], endpoints: &[Endpoint]) -> Vec<IpNetwork> {
    let mine: Vec<IpNetwork> = affinities
        .iter()
        .filter(|a| a.node == node && a.state == AffinityState::Confirmed)
        .map(|a| a.cidr)
        .collect();
    let mut out: Vec<IpNetwork> = endpoints
        .iter()
        .filter(|e| e.node == node)
        .flat_map(|e| e.addresses.iter())
        .map(|a| IpNetwork::from(a.ip()))
        .filter(|a| !mine.iter().any(|b| b.contains(a.ip())))
        .collect();
    out.sort_by(cidr::net_cmp);
    out.dedup();
    out
}

/// The routes `node` should have.
pub fn routes_for(
    node: &str,
    affinities: &[Affinity],
    nodes: &[Node],
    endpoints: &[Endpoint],
) -> Vec<Route> {
    let addr: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let via = |owner: &str, dst: &IpNetwork| {
        addr.get(owner)
            .and_then(|n| n.address(dst.is_ipv6()))
            .map(Target::Via)
    };
    let mut out = Vec::new();
    for a in affinities
        .iter()
        .filter(|a| a.state == AffinityState::Confirmed)
    {
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
    let mut others: Vec<&str> = endpoints
        .iter()
        .map(|e| e.node.as_str())
        .filter(|n| *n != node)
        .collect();
    others.sort_unstable();
    others.dedup();
    for m in others {
        for dst in borrowed_by(m, affinities, endpoints) {
            if let Some(target) = via(m, &dst) {
                out.push(Route {
                    dst,
                    target,
                    owner: m.to_string(),
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
}
