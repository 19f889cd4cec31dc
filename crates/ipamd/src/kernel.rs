//! The kernel routes the route agent owns: read and changed over netlink, recognised by their
//! protocol number ([`PROTO`]), so routes the agent did not make are never touched.

use ipam_core::{Route, Target};
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Protocol number of the agent's routes (`ip route` shows `proto 80`).
pub const PROTO: u8 = 80;

/// A route as the kernel has it, reduced to what the agent decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    /// Destination.
    pub dst: IpNetwork,
    /// Blackhole or next hop.
    pub target: Target,
}

impl From<&Route> for KernelRoute {
    fn from(r: &Route) -> Self {
        KernelRoute {
            dst: r.dst,
            target: r.target,
        }
    }
}

/// What a reconcile did: routes added, routes removed, failures (one line each).
pub type Reconciled = (Vec<KernelRoute>, Vec<KernelRoute>, Vec<String>);

/// Talks to the kernel of the namespace the service runs in.
pub struct Kernel {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

fn message(r: &KernelRoute) -> RouteMessage {
    let proto = RouteProtocol::Other(PROTO);
    let mut m = match (r.dst.ip(), r.target) {
        (IpAddr::V4(d), t) => {
            let b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d, r.dst.prefix())
                .protocol(proto);
            match t {
                Target::Blackhole => b.kind(RouteType::BlackHole).build(),
                Target::Via(IpAddr::V4(g)) => b.gateway(g).build(),
                Target::Via(IpAddr::V6(g)) => b.via(g).build(),
            }
        }
        (IpAddr::V6(d), t) => {
            let b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d, r.dst.prefix())
                .protocol(proto);
            match t {
                Target::Via(IpAddr::V6(g)) => b.gateway(g).build(),
                _ => b.kind(RouteType::BlackHole).build(),
            }
        }
    };
    m.header.protocol = proto;
    m
}

fn parse(m: &RouteMessage) -> Option<KernelRoute> {
    let mut dst = None;
    let mut gw = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(x)) => dst = Some(IpAddr::V4(*x)),
            RouteAttribute::Destination(RouteAddress::Inet6(x)) => dst = Some(IpAddr::V6(*x)),
            RouteAttribute::Gateway(RouteAddress::Inet(x)) => gw = Some(IpAddr::V4(*x)),
            RouteAttribute::Gateway(RouteAddress::Inet6(x)) => gw = Some(IpAddr::V6(*x)),
            _ => {}
        }
    }
    let dst = IpNetwork::new(dst?, m.header.destination_prefix_length).ok()?;
    let target = if m.header.kind == RouteType::BlackHole {
        Target::Blackhole
    } else {
        Target::Via(gw?)
    };
    Some(KernelRoute { dst, target })
}

impl Kernel {
    /// Opens a netlink socket in the current namespace.
    pub fn open() -> std::io::Result<Kernel> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(handle)
        })?;
        Ok(Kernel { rt, handle })
    }

    /// The routes of the agent's protocol in the main table, both families.
    pub fn owned(&self) -> Result<BTreeSet<KernelRoute>, rtnetlink::Error> {
        use futures::TryStreamExt;
        self.rt.block_on(async {
            let mut out = BTreeSet::new();
            for q in [
                RouteMessageBuilder::<Ipv4Addr>::new().build(),
                RouteMessageBuilder::<Ipv6Addr>::new().build(),
            ] {
                let all: Vec<RouteMessage> =
                    self.handle.route().get(q).execute().try_collect().await?;
                out.extend(
                    all.iter()
                        .filter(|m| m.header.protocol == RouteProtocol::Other(PROTO))
                        .filter_map(parse),
                );
            }
            Ok(out)
        })
    }

    /// Makes the agent's routes exactly `want`: deletes the others of its protocol, adds the
    /// missing. Returns (added, removed, failures); a failure does not stop the others.
    pub fn reconcile(&self, want: &BTreeSet<KernelRoute>) -> Result<Reconciled, rtnetlink::Error> {
        let have = self.owned()?;
        let (mut added, mut removed, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        self.rt.block_on(async {
            for r in have.difference(want) {
                match self.handle.route().del(message(r)).execute().await {
                    Ok(()) => removed.push(*r),
                    Err(e) => failed.push(format!("delete {:?}: {e}", r)),
                }
            }
            for r in want.difference(&have) {
                match self.handle.route().add(message(r)).execute().await {
                    Ok(()) => added.push(*r),
                    Err(e) => failed.push(format!("add {:?}: {e}", r)),
                }
            }
        });
        Ok((added, removed, failed))
    }
}
