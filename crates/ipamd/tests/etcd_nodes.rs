//! Three nodes sharing one etcd: each runs its own `calico-ipamd` process (its own etcd
//! connection, socket and node name) and takes 200 concurrent ADDs. No address twice; each node's addresses come
//! from blocks affine to it; on a pool too small for all, nodes borrow when strict affinity is
//! off and get the exhaustion error when it is on; afterwards handles, blocks and affinities
//! agree. Needs `IPAM_TEST_ETCD` (set by .ci/run).
#![cfg(feature = "etcd")]

mod common;

use ipam_cni::protocol::{self, Request};
use ipam_core::{audit, Ipam, IpamConfig};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::SystemClock;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node service process, stopped with SIGTERM when dropped.
struct Node {
    socket: PathBuf,
    child: Child,
}

fn store(ep: &str, prefix: &str) -> EtcdStore {
    EtcdStore::connect(EtcdOptions {
        endpoints: vec![ep.into()],
        prefix: prefix.into(),
        ..Default::default()
    })
    .unwrap()
}

fn start_node(ep: &str, prefix: &str, dir: &std::path::Path, i: usize) -> Node {
    let socket = dir.join(format!("node{i}/ipamd.sock"));
    let child = Command::new(env!("CARGO_BIN_EXE_calico-ipamd"))
        .arg("--socket")
        .arg(&socket)
        .args(["--etcd-endpoints", ep, "--etcd-prefix", prefix])
        .args(["--log-level", "warn"])
        .spawn()
        .unwrap();
    let node = Node { socket, child };
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&node.socket).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "node service {i} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn call(node: &Node, cmd: &str, nodename: &str, cid: &str, pool: &str) -> (i32, Value) {
    let conf = json!({"cniVersion": "1.0.0", "name": "lab", "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": nodename, "ipv4_pools": [pool],
                 "datastore_type": "etcdv3", "etcd_endpoints": "unused-through-the-service"}});
    let req = Request::cni(
        BTreeMap::from([
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_CONTAINERID".into(), cid.into()),
            ("CNI_NETNS".into(), "/var/run/netns/x".into()),
            ("CNI_IFNAME".into(), "eth0".into()),
        ]),
        conf.to_string(),
        None,
    );
    let r = protocol::call(&node.socket, &req, Duration::from_secs(60)).unwrap();
    let v = if r.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&r.stdout).unwrap()
    };
    (r.exit_code, v)
}

/// 200 concurrent ADDs on each of three nodes; returns (node, container, address) per success
/// and the error codes.
fn storm(
    nodes: &Arc<Vec<Node>>,
    pool: &str,
    per_node: usize,
) -> (Vec<(usize, String, String)>, Vec<u64>) {
    let threads: Vec<_> = (0..3 * per_node)
        .map(|k| {
            let nodes = nodes.clone();
            let pool = pool.to_string();
            std::thread::spawn(move || {
                let i = k % 3;
                let cid = format!("n{i}-pod{k}");
                let (code, v) = call(&nodes[i], "ADD", &format!("node{i}"), &cid, &pool);
                (i, cid, code, v)
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for t in threads {
        let (i, cid, code, v) = t.join().unwrap();
        if code == 0 {
            ok.push((i, cid, common::first_address(&v)));
        } else {
            errs.push(v["code"].as_u64().unwrap());
        }
    }
    (ok, errs)
}

#[test]
fn three_nodes_share_one_etcd() {
    let Some(ep) = ipam_test_support::etcd_endpoint() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("/ipam-lab/{}/", std::process::id());
    let nodes = Arc::new(
        (0..3)
            .map(|i| start_node(&ep, &prefix, dir.path(), i))
            .collect::<Vec<_>>(),
    );
    let check = store(&ep, &prefix);
    let checker = Ipam::new(&check, Arc::new(SystemClock));

    // A roomy pool: every node uses its own blocks.
    let (ok, errs) = storm(&nodes, "10.244.0.0/16", 200);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(ok.len(), 600);
    let ips: BTreeSet<&String> = ok.iter().map(|o| &o.2).collect();
    assert_eq!(ips.len(), 600, "an address was handed out twice");
    for (i, _, ip) in &ok {
        let a = checker.allocation(ip.parse().unwrap()).unwrap().unwrap();
        assert_eq!(
            a.block_affinity.as_deref(),
            Some(format!("node{i}").as_str()),
            "{ip}"
        );
    }
    assert!(audit(&check).unwrap().is_empty());
    // Every pod deleted at once: a node's concurrent DELs queue and are served together.
    let dels: Vec<_> = ok
        .into_iter()
        .map(|(i, cid, _)| {
            let nodes = nodes.clone();
            std::thread::spawn(move || {
                call(&nodes[i], "DEL", &format!("node{i}"), &cid, "10.244.0.0/16").0
            })
        })
        .collect();
    for d in dels {
        assert_eq!(d.join().unwrap(), 0);
    }
    assert_eq!(checker.utilisation().unwrap().pools[0].in_use, 0);
    assert!(audit(&check).unwrap().is_empty());

    // A pool of two /26 blocks for three nodes: borrowing, then strict affinity.
    checker
        .create_pool(ipam_core::Pool::new("tiny", "10.99.0.0/25".parse().unwrap()).unwrap())
        .unwrap();
    let (ok, errs) = storm(&nodes, "tiny", 30);
    assert!(errs.is_empty(), "{errs:?}");
    let ips: BTreeSet<&String> = ok.iter().map(|o| &o.2).collect();
    assert_eq!(ips.len(), 90);
    let borrowed: u32 = checker
        .utilisation()
        .unwrap()
        .blocks
        .iter()
        .map(|b| b.borrowed)
        .sum();
    assert!(borrowed > 0, "a node without a block borrows");
    assert!(audit(&check).unwrap().is_empty());
    checker
        .set_config(IpamConfig {
            strict_affinity: true,
            ..Default::default()
        })
        .unwrap();
    let tiny: ipnetwork::IpNetwork = "10.99.0.0/25".parse().unwrap();
    let owners: BTreeSet<String> = checker
        .utilisation()
        .unwrap()
        .blocks
        .iter()
        .filter(|b| tiny.contains(b.cidr.ip()))
        .filter_map(|b| b.affinity.clone())
        .collect();
    let blockless = (0..3)
        .find(|i| !owners.contains(&format!("node{i}")))
        .expect("two blocks, three nodes");
    let (code, v) = call(
        &nodes[blockless],
        "ADD",
        &format!("node{blockless}"),
        "strict-pod",
        "tiny",
    );
    assert_eq!(code, 1);
    assert_eq!(v["code"], 100, "{v}");
    assert!(v["details"].as_str().unwrap().contains("10.99.0.0/25"));
    assert!(audit(&check).unwrap().is_empty());
}
