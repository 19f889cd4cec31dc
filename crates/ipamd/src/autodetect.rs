//! The node's own address, as Calico's IP autodetection finds it: `first-found` (the first
//! global IPv4 address on an interface that is not a container, tunnel or loopback link),
//! `interface=REGEX` (the first on an interface whose name matches), `can-reach=IP` (the source
//! address the kernel would use towards IP; no packet is sent).

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use std::net::{IpAddr, UdpSocket};

/// Interface name prefixes `first-found` skips, as Calico's does.
const SKIPPED: &[&str] = &[
    "lo",
    "cali",
    "docker",
    "cbr",
    "dummy",
    "virbr",
    "lxcbr",
    "veth",
    "tunl",
    "flannel",
    "kube-ipvs",
    "cni",
    "vxlan",
    "wireguard",
    "tmp",
];

/// How to find the address.
#[derive(Clone, Debug)]
pub enum Method {
    /// First global IPv4 address on a non-skipped interface, in interface order.
    FirstFound,
    /// First global IPv4 address on an interface whose name matches.
    Interface(regex::Regex),
    /// The source address towards this destination.
    CanReach(IpAddr),
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        if s == "first-found" {
            return Ok(Method::FirstFound);
        }
        if let Some(r) = s.strip_prefix("interface=") {
            return regex::Regex::new(&format!("^(?:{r})$"))
                .map(Method::Interface)
                .map_err(|e| format!("interface={r}: {e}"));
        }
        if let Some(ip) = s.strip_prefix("can-reach=") {
            return ip
                .parse()
                .map(Method::CanReach)
                .map_err(|_| format!("can-reach={ip}: not an address"));
        }
        Err(format!(
            "{s:?}: use first-found, interface=REGEX or can-reach=IP"
        ))
    }
}

/// The global addresses of the current namespace: (interface name, address), in interface
/// then address order.
fn addresses() -> std::io::Result<Vec<(String, IpAddr)>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        let msgs: Vec<_> = handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(std::io::Error::other)?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.scope != AddressScope::Universe {
                continue;
            }
            let label = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Label(l) => Some(l.clone()),
                _ => None,
            });
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let (Some(l), Some(ip)) = (label, ip) {
                out.push((m.header.index, l, ip));
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        Ok(out.into_iter().map(|(_, l, ip)| (l, ip)).collect())
    })
}

/// Finds the node's IPv4 address.
pub fn detect(method: &Method) -> Result<IpAddr, String> {
    match method {
        Method::CanReach(dst) => {
            let bind = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
            s.connect((*dst, 9))
                .map_err(|e| format!("no route to {dst}: {e}"))?;
            Ok(s.local_addr().map_err(|e| e.to_string())?.ip())
        }
        Method::FirstFound | Method::Interface(_) => {
            let all = addresses().map_err(|e| format!("listing addresses: {e}"))?;
            all.into_iter()
                .filter(|(_, ip)| ip.is_ipv4())
                .find(|(name, _)| match method {
                    Method::Interface(re) => re.is_match(name),
                    _ => !SKIPPED.iter().any(|p| name.starts_with(p)),
                })
                .map(|(_, ip)| ip)
                .ok_or_else(|| format!("no IPv4 address found by {method:?}"))
        }
    }
}
