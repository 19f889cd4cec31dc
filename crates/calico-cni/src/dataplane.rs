//! The kernel side of a pod, over netlink (`rtnetlink`): the veth pair, the pod's addresses and
//! routes, the host end's settings and host routes; their removal and their check.
//!
//! Everything runs on the calling thread: one current-thread runtime, one netlink socket opened
//! in the host's namespace (the one the plugin runs in) and one opened inside the pod's (the
//! thread enters it with `setns` just long enough to open the socket, and to write the pod's
//! sysctls). Routes are installed with protocol `boot`, as `ip route add` does, so the pod's
//! table reads exactly `default via 169.254.1.1 dev eth0` and `169.254.1.1 dev eth0 scope link`.

use crate::naming::{mac_string, GATEWAY_V4, GATEWAY_V6, HOST_MAC};
use futures::stream::TryStreamExt;
use ipam_cni::error::CniError;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// What ADD wired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wired {
    /// Host end's name.
    pub host_ifname: String,
    /// Pod end's MAC.
    pub pod_mac: String,
    /// Host end's MAC.
    pub host_mac: String,
}

fn io(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::io("cannot configure the network", format!("{what}: {e}"))
}

/// The pod's network namespace, opened and checked to be one.
pub struct Netns {
    file: File,
    path: String,
}

impl Netns {
    /// Opens `path`; code 4 when it is missing or not a network namespace.
    pub fn open(path: &str) -> Result<Netns, CniError> {
        let bad = |why: String| CniError::Env(format!("CNI_NETNS {path:?} {why}"));
        let file = File::open(path).map_err(|e| bad(format!("cannot be opened: {e}")))?;
        let ns = Netns {
            file,
            path: path.to_string(),
        };
        // Entering it is the check: setns refuses anything that is not a network namespace.
        ns.enter(|| ())
            .map_err(|e| bad(format!("is not a network namespace: {}", e.details())))?;
        Ok(ns)
    }

    /// Runs `f` inside the namespace, then returns to the thread's own.
    fn enter<T>(&self, f: impl FnOnce() -> T) -> Result<T, CniError> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| io("own netns", e))?;
        nix::sched::setns(&self.file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| io(&format!("entering {}", self.path), e))?;
        let out = f();
        nix::sched::setns(&home, CloneFlags::CLONE_NEWNET)
            .map_err(|e| io("returning to the host netns", e))?;
        Ok(out)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| io("netlink runtime", e))
}

fn connect() -> Result<Handle, CniError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| io("netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(io(&format!("looking up {name}"), e)),
    }
}

fn mac_of(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(mac_string(m)),
            _ => None,
        })
        .unwrap_or_default()
}

fn sysctl(path: &str, value: &str) -> Result<(), CniError> {
    std::fs::write(format!("/proc/sys/{path}"), value).map_err(|e| io(&format!("sysctl {path}"), e))
}

fn pod_routes(index: u32, v4: bool, v6: bool) -> Vec<RouteMessage> {
    let mut out = Vec::new();
    if v4 {
        out.push(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(GATEWAY_V4, 32)
                .output_interface(index)
                .scope(RouteScope::Link)
                .protocol(RouteProtocol::Boot)
                .build(),
        );
        out.push(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(GATEWAY_V4)
                .output_interface(index)
                .protocol(RouteProtocol::Boot)
                .build(),
        );
    }
    if v6 {
        out.push(
            RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(GATEWAY_V6)
                .output_interface(index)
                .protocol(RouteProtocol::Boot)
                .build(),
        );
    }
    out
}

fn host_route(ip: IpAddr, index: u32) -> RouteMessage {
    match ip {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build(),
    }
}

/// Fails with code 4 when `ifname` already exists in the pod's namespace.
pub fn ensure_free(ns: &Netns, ifname: &str) -> Result<(), CniError> {
    let rt = runtime()?;
    rt.block_on(async {
        let pod = ns.enter(connect)??;
        if link_by_name(&pod, ifname).await?.is_some() {
            return Err(CniError::Env(format!(
                "interface {ifname} already exists in {}",
                ns.path
            )));
        }
        Ok(())
    })
}

/// Creates the pair and configures both ends and the routes. On failure nothing it made is
/// left: the host end is deleted, which takes the pod end and every route with it.
pub fn add(
    ns: &Netns,
    host_ifname: &str,
    ifname: &str,
    mtu: u32,
    ips: &[IpAddr],
) -> Result<Wired, CniError> {
    let rt = runtime()?;
    rt.block_on(async {
        let host = connect()?;
        let pod = ns.enter(connect)??;
        // A host end of this name is a leftover of an attachment whose DEL never came.
        if let Some(old) = link_by_name(&host, host_ifname).await? {
            let _ = host.link().del(old.header.index).execute().await;
        }
        // The pod end is created in the pod's namespace under its final name: moving a link
        // between namespaces afterwards costs tens of milliseconds of kernel synchronisation.
        let peer = LinkUnspec::new_with_name(ifname)
            .mtu(mtu)
            .setns_by_fd(ns.file.as_raw_fd())
            .build();
        host.link()
            .add(
                LinkVeth::new(host_ifname, ifname)
                    .mtu(mtu)
                    .address(HOST_MAC.to_vec())
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| io(&format!("creating veth {host_ifname}"), e))?;
        let r = configure(ns, &host, &pod, host_ifname, ifname, ips).await;
        if r.is_err() {
            if let Ok(Some(l)) = link_by_name(&host, host_ifname).await {
                let _ = host.link().del(l.header.index).execute().await;
            }
        }
        r
    })
}

async fn configure(
    ns: &Netns,
    host: &Handle,
    pod: &Handle,
    host_ifname: &str,
    ifname: &str,
    ips: &[IpAddr],
) -> Result<Wired, CniError> {
    let v4 = ips.iter().any(IpAddr::is_ipv4);
    let v6 = ips.iter().any(IpAddr::is_ipv6);
    let moved = link_by_name(pod, ifname)
        .await?
        .ok_or_else(|| io("veth peer", "not in the pod's namespace"))?;
    let pi = moved.header.index;

    // Host end: answer ARP/NDP for the gateway, forward, no router advertisements; then up.
    let conf = |fam: &str, key: &str| format!("net/{fam}/conf/{host_ifname}/{key}");
    if v4 {
        sysctl(&conf("ipv4", "proxy_arp"), "1")?;
        sysctl(&format!("net/ipv4/neigh/{host_ifname}/proxy_delay"), "0")?;
        sysctl(&conf("ipv4", "forwarding"), "1")?;
    }
    if v6 {
        sysctl(&conf("ipv6", "accept_ra"), "0")?;
        sysctl(&conf("ipv6", "proxy_ndp"), "1")?;
        sysctl(&conf("ipv6", "forwarding"), "1")?;
    }
    let hl = link_by_name(host, host_ifname)
        .await?
        .ok_or_else(|| io("host end", "vanished"))?;
    let hi = hl.header.index;
    host.link()
        .set(LinkUnspec::new_with_index(hi).up().build())
        .execute()
        .await
        .map_err(|e| io(&format!("bringing {host_ifname} up"), e))?;

    // Pod end: addresses as /32 and /128 (no duplicate detection: nothing else is on the
    // link), up, then the two routes via the link-local next hop.
    if v6 {
        let path = format!("net/ipv6/conf/{ifname}/accept_dad");
        ns.enter(|| sysctl(&path, "0"))??;
    }
    pod.link()
        .set(LinkUnspec::new_with_index(pi).up().build())
        .execute()
        .await
        .map_err(|e| io(&format!("bringing {ifname} up"), e))?;
    for ip in ips {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = pod.address().add(pi, *ip, len);
        // A /32 has no broadcast address; without this the kernel shows "brd <the address>".
        req.message_mut()
            .attributes
            .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
        req.execute()
            .await
            .map_err(|e| io(&format!("adding {ip}/{len} to {ifname}"), e))?;
    }
    for r in pod_routes(pi, v4, v6) {
        pod.route()
            .add(r)
            .execute()
            .await
            .map_err(|e| io(&format!("adding the pod's routes on {ifname}"), e))?;
    }
    for ip in ips {
        host.route()
            .add(host_route(*ip, hi))
            .execute()
            .await
            .map_err(|e| io(&format!("adding the host route to {ip}"), e))?;
    }
    Ok(Wired {
        host_ifname: host_ifname.to_string(),
        pod_mac: mac_of(&moved),
        host_mac: mac_of(&hl),
    })
}

/// Deletes the host end (the pod end and every route through either go with it). Nothing to
/// delete is success.
pub fn del(host_ifname: &str) -> Result<(), CniError> {
    let rt = runtime()?;
    rt.block_on(async {
        let host = connect()?;
        if let Some(l) = link_by_name(&host, host_ifname).await? {
            match host.link().del(l.header.index).execute().await {
                Ok(()) => {}
                // Gone meanwhile (the pod's namespace was deleted): the goal is met.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => {}
                Err(e) => return Err(io(&format!("deleting {host_ifname}"), e)),
            }
        }
        Ok(())
    })
}

async fn routes(h: &Handle, v6: bool) -> Result<Vec<RouteMessage>, CniError> {
    let q = if v6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    h.route()
        .get(q)
        .execute()
        .try_collect()
        .await
        .map_err(|e| io("listing routes", e))
}

fn route_parts(r: &RouteMessage) -> (Option<IpAddr>, u8, Option<IpAddr>, Option<u32>) {
    let addr = |a: &RouteAddress| match a {
        RouteAddress::Inet(x) => Some(IpAddr::V4(*x)),
        RouteAddress::Inet6(x) => Some(IpAddr::V6(*x)),
        _ => None,
    };
    let mut dst = None;
    let mut gw = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = addr(d),
            RouteAttribute::Gateway(g) => gw = addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    (dst, r.header.destination_prefix_length, gw, oif)
}

/// Verifies what ADD made; the error names the first thing missing.
pub fn check(ns: &Netns, host_ifname: &str, ifname: &str, ips: &[IpAddr]) -> Result<(), CniError> {
    let missing = |what: String| CniError::io("the pod's network is not as ADD left it", what);
    let rt = runtime()?;
    rt.block_on(async {
        let host = connect()?;
        let pod = ns.enter(connect)??;
        let hl = link_by_name(&host, host_ifname)
            .await?
            .ok_or_else(|| missing(format!("host interface {host_ifname} is missing")))?;
        let pl = link_by_name(&pod, ifname)
            .await?
            .ok_or_else(|| missing(format!("interface {ifname} is missing in {}", ns.path)))?;
        let (hi, pi) = (hl.header.index, pl.header.index);
        let addrs: Vec<(IpAddr, u8)> = pod
            .address()
            .get()
            .set_link_index_filter(pi)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| io("listing addresses", e))?
            .into_iter()
            .flat_map(|m| {
                let len = m.header.prefix_len;
                m.attributes.into_iter().filter_map(move |a| match a {
                    AddressAttribute::Address(ip) => Some((ip, len)),
                    _ => None,
                })
            })
            .collect();
        for ip in ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            if !addrs.contains(&(*ip, len)) {
                return Err(missing(format!("{ip}/{len} is not on {ifname}")));
            }
        }
        let v4 = ips.iter().any(IpAddr::is_ipv4);
        let v6 = ips.iter().any(IpAddr::is_ipv6);
        let g4 = Some(IpAddr::V4(GATEWAY_V4));
        if v4 {
            let rs: Vec<_> = routes(&pod, false).await?.iter().map(route_parts).collect();
            if !rs.contains(&(g4, 32, None, Some(pi))) {
                return Err(missing(format!(
                    "route {GATEWAY_V4} dev {ifname} scope link is missing"
                )));
            }
            if !rs.contains(&(None, 0, g4, Some(pi))) {
                return Err(missing(format!(
                    "route default via {GATEWAY_V4} dev {ifname} is missing"
                )));
            }
        }
        if v6 {
            let g6 = Some(IpAddr::V6(GATEWAY_V6));
            let rs: Vec<_> = routes(&pod, true).await?.iter().map(route_parts).collect();
            if !rs.iter().any(|r| r.1 == 0 && r.2 == g6 && r.3 == Some(pi)) {
                return Err(missing(format!(
                    "route default via {GATEWAY_V6} dev {ifname} is missing"
                )));
            }
        }
        for ip in ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            let rs: Vec<_> = routes(&host, ip.is_ipv6())
                .await?
                .iter()
                .map(route_parts)
                .collect();
            if !rs
                .iter()
                .any(|r| r.0 == Some(*ip) && r.1 == len && r.3 == Some(hi))
            {
                return Err(missing(format!(
                    "host route {ip} dev {host_ifname} is missing"
                )));
            }
        }
        Ok(())
    })
}
