//! BGP through BIRD 2: the route agent renders BIRD's configuration from the store and asks
//! the running BIRD to reload it (`birdc configure`) when it changes. BIRD is its own process,
//! started with the same config and control socket paths.
//!
//! What the configuration says, as Calico's does: a full iBGP mesh (one AS) to every other
//! node's address; a `static` protocol with a blackhole per block of this node, exported to the
//! kernel and to the peers; a second `static` protocol with the /32s this node's pods borrowed,
//! exported to the peers only (the main plugin's host route already reaches them here); a
//! `kernel` protocol that installs what the peers announce (`proto bird` in `ip route`), and
//! every route announced with this node as next hop.

use ipam_core::{Route, Target};
use ipnetwork::IpNetwork;
use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

/// Default AS of the mesh, as Calico's.
pub const DEFAULT_AS: u32 = 64512;

/// The peers' names and addresses for the mesh: every node with a route here (IPv4 only).
fn peers(routes: &[Route]) -> Vec<(String, IpAddr)> {
    let mut out: Vec<(String, IpAddr)> = routes
        .iter()
        .filter_map(|r| match r.target {
            Target::Via(a @ IpAddr::V4(_)) => Some((r.owner.clone(), a)),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// BIRD's configuration for `node` at `address`, given the routes the node should have (its
/// own blocks as blackholes, the others' blocks by owner) and the addresses its pods borrowed.
/// `peers` are the other nodes with an address: (name, address).
pub fn render(
    node: &str,
    address: IpAddr,
    asn: u32,
    routes: &[Route],
    borrowed: &[IpNetwork],
    all_peers: &[(String, IpAddr)],
) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by calico-ipamd for node {node}; replaced on every change."
    );
    let _ = writeln!(c, "router id {address};");
    c.push_str("protocol device { scan time 10; }\n");
    c.push_str(
        "protocol kernel {\n  ipv4 {\n    import none;\n    export filter {\n      if proto = \"own_blocks\" then accept;\n      if source = RTS_BGP then accept;\n      reject;\n    };\n  };\n}\n",
    );
    c.push_str("protocol static own_blocks {\n  ipv4;\n");
    for r in routes
        .iter()
        .filter(|r| r.target == Target::Blackhole && r.dst.is_ipv4())
    {
        let _ = writeln!(c, "  route {} blackhole;", r.dst);
    }
    c.push_str("}\nprotocol static borrowed {\n  ipv4;\n");
    for b in borrowed.iter().filter(|b| b.is_ipv4()) {
        let _ = writeln!(c, "  route {b} blackhole;");
    }
    c.push_str("}\nfilter pod_routes {\n  if proto = \"own_blocks\" || proto = \"borrowed\" then accept;\n  reject;\n}\n");
    let mut mesh: Vec<(String, IpAddr)> = all_peers
        .iter()
        .filter(|(n, a)| n != node && a.is_ipv4() && *a != address)
        .cloned()
        .collect();
    mesh.extend(peers(routes));
    mesh.sort();
    mesh.dedup();
    for (name, a) in mesh {
        let id: String = name
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .collect();
        let _ = writeln!(
            c,
            "protocol bgp mesh_{id} {{\n  local {address} as {asn};\n  neighbor {a} as {asn};\n  direct;\n  connect retry time 1;\n  ipv4 {{\n    import all;\n    export filter pod_routes;\n    next hop self;\n  }};\n}}"
        );
    }
    c
}

/// Writes `config` to `path` (via a temporary file and a rename, so BIRD never reads half a
/// file) and asks the BIRD on `socket` to reload it.
pub fn apply(path: &Path, socket: &Path, config: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, config).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(socket)
        .arg("configure")
        .output()
        .map_err(|e| format!("running birdc: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success()
        && (text.contains("Reconfigured") || text.contains("Reconfiguration in progress"))
    {
        Ok(())
    } else {
        Err(format!(
            "birdc configure: {} {}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BIRD's configuration from a node's own records and the node list (`RouteView::Own`,
    /// what the agent follows in bgp mode) equals the one from every record of the cluster,
    /// on a cluster whose late nodes borrow from the others' blocks.
    #[test]
    fn a_node_renders_the_same_from_its_own_records_as_from_the_cluster() {
        use ipam_core::{AutoAssignArgs, Endpoint, Ipam, ManualClock, Pool, RouteView};
        let ipam = Ipam::new(
            ipam_store::MemoryStore::new(),
            std::sync::Arc::new(ManualClock::new(1)),
        );
        // Four blocks of 64 for six nodes: the last two borrow.
        ipam.create_pool(Pool::new("p", "10.244.0.0/24".parse().expect("a cidr")).expect("a pool"))
            .expect("created");
        let names: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            let a: IpAddr = format!("172.18.0.{}", i + 2).parse().expect("an address");
            ipam.update_node(n, |node| node.set_address(a))
                .expect("registered");
        }
        for round in 0..30 {
            for n in &names {
                let handle = format!("k8s.{n}-{round}");
                let got = ipam
                    .auto_assign(&AutoAssignArgs::v4(n, &handle, 1))
                    .expect("assigned");
                ipam.put_endpoint(&Endpoint {
                    node: n.clone(),
                    id: format!("{handle}/eth0"),
                    ifname: "eth0".into(),
                    handle_id: handle,
                    addresses: vec![IpNetwork::from(got.v4.ips[0].ip)],
                    ..Endpoint::default()
                })
                .expect("stored");
            }
        }
        let peers: Vec<(String, IpAddr)> = ipam
            .nodes()
            .expect("listed")
            .iter()
            .filter_map(|n| n.address(false).map(|a| (n.name().to_string(), a)))
            .collect();
        let mut borrowed = 0;
        for (n, a) in &peers {
            let own = ipam.routes_in(n, RouteView::Own).expect("read");
            let all = ipam.routes_in(n, RouteView::Cluster).expect("read");
            assert!(
                own.0.iter().all(|r| r.target == Target::Blackhole),
                "{n}: {:?}",
                own.0
            );
            assert!(
                all.0.len() > own.0.len(),
                "{n}: the cluster view routes to the others"
            );
            assert_eq!(
                render(n, *a, DEFAULT_AS, &own.0, &own.1, &peers),
                render(n, *a, DEFAULT_AS, &all.0, &all.1, &peers),
                "{n}"
            );
            borrowed += all.1.len();
        }
        assert!(borrowed >= 30, "late nodes borrowed: {borrowed}");
    }

    #[test]
    fn renders_the_mesh_the_blocks_and_the_borrowed_addresses() {
        let r = |dst: &str, target: Target, owner: &str| Route {
            dst: dst.parse().expect("a valid literal"),
            target,
            owner: owner.into(),
        };
        let routes = [
            r("10.244.0.0/26", Target::Blackhole, "a"),
            r(
                "10.244.1.0/26",
                Target::Via("172.18.0.3".parse().expect("a valid literal")),
                "b",
            ),
        ];
        let peers = [
            (
                "a".to_string(),
                "172.18.0.4".parse().expect("a valid literal"),
            ),
            (
                "b".to_string(),
                "172.18.0.3".parse().expect("a valid literal"),
            ),
            (
                "c".to_string(),
                "172.18.0.2".parse().expect("a valid literal"),
            ),
        ];
        let c = render(
            "a",
            "172.18.0.4".parse().expect("a valid literal"),
            DEFAULT_AS,
            &routes,
            &["10.244.5.7/32".parse().expect("a valid literal")],
            &peers,
        );
        assert!(c.contains("router id 172.18.0.4;"), "{c}");
        assert!(c.contains("route 10.244.0.0/26 blackhole;"), "{c}");
        assert!(!c.contains("route 10.244.1.0/26"), "{c}");
        assert!(c.contains("route 10.244.5.7/32 blackhole;"), "{c}");
        assert!(c.contains("neighbor 172.18.0.3 as 64512;"), "{c}");
        assert!(c.contains("neighbor 172.18.0.2 as 64512;"), "{c}");
        assert!(!c.contains("neighbor 172.18.0.4"), "{c}");
        // BIRD itself accepts it, when installed.
        if std::process::Command::new("bird")
            .arg("--version")
            .output()
            .is_ok()
        {
            let d = tempfile::tempdir().expect("a temporary directory");
            let f = d.path().join("bird.conf");
            std::fs::write(&f, &c).expect("write succeeds");
            let o = std::process::Command::new("bird")
                .arg("-p")
                .arg("-c")
                .arg(&f)
                .output()
                .expect("output succeeds");
            assert!(
                o.status.success(),
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                c
            );
        }
    }
}
