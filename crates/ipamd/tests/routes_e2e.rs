//! Pods reach each other across nodes. The test builds the lab's topology in network
//! namespaces of its own: a "fabric" namespace holding a Linux bridge (172.18.0.1/16) and an
//! etcd listening on it, three node namespaces attached to the bridge (control-plane,
//! worker, worker2), one `calico-ipamd` per node with its route agent on, and pods wired by the
//! `calico` main plugin inside their node's namespace. In `direct` and in `bgp` mode (BIRD 2
//! per node):
//! - each node's table has exactly one route per remote block and a blackhole per own block;
//! - pods ping across nodes; an address borrowed from another node's block is reachable from
//!   every node;
//! - a block claimed on one node appears on the others; a released one disappears;
//! - killing and restarting a node's service leaves its routes in place and converges again;
//! - a route the agent did not make is never touched.
//!
//! Needs root, iproute2, etcd (and bird2 for bgp). Without them the test says so and passes,
//! unless `IPAM_E2E_REQUIRED=1`.
#![cfg(feature = "etcd")]

use ipam_test_support::{e2e_or_skip, have, is_root, ok, sh};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn available(bgp: bool) -> bool {
    e2e_or_skip(
        is_root() && have("ip") && have("etcd") && (!bgp || (have("bird") && have("birdc"))),
        "root, iproute2, etcd and (bgp) bird2",
    )
}

/// The binaries of the other crates, built with etcd support when missing.
fn bin_dir() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_BIN_EXE_calico-ipamd"))
        .parent()
        .unwrap()
        .to_path_buf();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "calico-cni",
                "-p",
                "ipam-cni",
                "-p",
                "ipamctl",
            ])
            .args(["--features", "calico-cni/etcd,ipam-cni/etcd,ipamctl/etcd"])
            .status()
            .unwrap();
        assert!(st.success(), "building calico, calico-ipam and ipamctl");
    });
    dir
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct NodeNs {
    name: &'static str,
    ns: String,
    addr: String,
    service: Option<Proc>,
    bird: Option<Proc>,
}

/// The topology; everything it made goes when it drops (processes by PID, namespaces by name).
struct Lab {
    bgp: bool,
    tag: String,
    fabric: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: Vec<NodeNs>,
    pods: Vec<String>,
    _etcd: Option<Proc>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.service.take();
            n.bird.take();
        }
        self._etcd.take();
        for p in &self.pods {
            let _ = sh(&["ip", "netns", "del", p]);
        }
        for n in &self.nodes {
            let _ = sh(&["ip", "netns", "del", &n.ns]);
        }
        let _ = sh(&["ip", "netns", "del", &self.fabric]);
    }
}

const ETCD: &str = "http://172.18.0.1:2379";

impl Lab {
    fn new(bgp: bool) -> Lab {
        let tag = format!(
            "{}{}{}",
            if bgp { "b" } else { "d" },
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let fabric = format!("rt-{tag}-fabric");
        let mut lab = Lab {
            bgp,
            tag: tag.clone(),
            fabric: fabric.clone(),
            dir: tempfile::tempdir().unwrap(),
            bin: bin_dir(),
            nodes: Vec::new(),
            pods: Vec::new(),
            _etcd: None,
        };
        ok(&["ip", "netns", "add", &fabric]);
        ok(&["ip", "-n", &fabric, "link", "set", "lo", "up"]);
        ok(&["ip", "-n", &fabric, "link", "add", "br0", "type", "bridge"]);
        ok(&[
            "ip",
            "-n",
            &fabric,
            "addr",
            "add",
            "172.18.0.1/16",
            "dev",
            "br0",
        ]);
        ok(&["ip", "-n", &fabric, "link", "set", "br0", "up"]);
        let data = lab.dir.path().join("etcd");
        lab._etcd = Some(Proc(
            Command::new("ip")
                .args(["netns", "exec", &fabric, "etcd", "--name", "lab"])
                .arg("--data-dir")
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    ETCD,
                    "--advertise-client-urls",
                    ETCD,
                ])
                .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
                .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
                .args(["--initial-cluster", "lab=http://127.0.0.1:2380"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        for (i, (name, addr)) in [
            ("control-plane", "172.18.0.4"),
            ("worker", "172.18.0.3"),
            ("worker2", "172.18.0.2"),
        ]
        .into_iter()
        .enumerate()
        {
            let ns = format!("rt-{tag}-n{i}");
            ok(&["ip", "netns", "add", &ns]);
            ok(&[
                "ip",
                "-n",
                &fabric,
                "link",
                "add",
                &format!("v{i}"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ]);
            ok(&[
                "ip",
                "-n",
                &fabric,
                "link",
                "set",
                &format!("v{i}"),
                "master",
                "br0",
                "up",
            ]);
            ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            ok(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/16"),
                "dev",
                "eth0",
            ]);
            ok(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            ok(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                "172.18.0.1",
            ]);
            ok(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]);
            lab.nodes.push(NodeNs {
                name,
                ns,
                addr: addr.to_string(),
                service: None,
                bird: None,
            });
        }
        // etcd answers from the nodes before anything uses it.
        let t = Instant::now();
        while !sh(&[
            "ip",
            "netns",
            "exec",
            &lab.nodes[0].ns,
            "etcdctl",
            "--endpoints",
            ETCD,
            "endpoint",
            "health",
        ])
        .0
        {
            assert!(t.elapsed() < Duration::from_secs(30), "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A small pool with small blocks, so nodes claim several and one must borrow.
        lab.ctl(&["pool", "add", "lab", "10.244.0.0/28", "--block-size", "30"]);
        for i in 0..3 {
            lab.start_service(i);
        }
        lab
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.path(&format!("n{i}.sock"))
    }

    fn conf(&self, i: usize) -> Value {
        json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "mtu": 1450,
               "nodename": self.nodes[i].name, "datastore_type": "etcdv3", "etcd_endpoints": ETCD,
               "ipamd_socket": self.socket(i), "ipam_lock_file": self.path(&format!("n{i}.lock")),
               "log_file_path": "none",
               "ipam": {"type": "calico-ipam", "ipv4_pools": ["lab"]}})
    }

    /// ipamctl on the store, from the fabric namespace (where etcd is).
    fn ctl(&self, args: &[&str]) -> String {
        let conf = self.path("ctl.conf");
        std::fs::write(&conf, self.conf(0).to_string()).unwrap();
        let ipamctl = self.bin.join("ipamctl");
        let mut a = vec!["netns", "exec", &self.fabric, ipamctl.to_str().unwrap()];
        a.extend([
            "--cni-config",
            conf.to_str().unwrap(),
            "--socket",
            "/nonexistent.sock",
        ]);
        a.extend(args);
        let o = Command::new("ip").args(&a).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "ipamctl {args:?}: {out}");
        out
    }

    fn start_service(&mut self, i: usize) {
        let n = &self.nodes[i];
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &n.ns, env!("CARGO_BIN_EXE_calico-ipamd")])
            .args(["--etcd-endpoints", ETCD, "--node-name", n.name])
            .args(["--node-address-autodetect", "interface=eth0"])
            .arg("--socket")
            .arg(self.socket(i))
            .args(["--routes", if self.bgp { "bgp" } else { "direct" }])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (cfg, ctl) = (
            self.path(&format!("bird{i}.conf")),
            self.path(&format!("bird{i}.ctl")),
        );
        if self.bgp {
            c.arg("--bird-config")
                .arg(&cfg)
                .arg("--bird-socket")
                .arg(&ctl);
        }
        let child = c.spawn().unwrap();
        self.nodes[i].service = Some(Proc(child));
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket(i)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "service {i} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.bgp && self.nodes[i].bird.is_none() {
            while !cfg.exists() {
                assert!(t.elapsed() < Duration::from_secs(30), "no BIRD config {i}");
                std::thread::sleep(Duration::from_millis(20));
            }
            let ns = self.nodes[i].ns.clone();
            let b = Command::new("ip")
                .args(["netns", "exec", &ns, "bird", "-f", "-c"])
                .arg(&cfg)
                .arg("-s")
                .arg(&ctl)
                .arg("-P")
                .arg(self.path(&format!("bird{i}.pid")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            self.nodes[i].bird = Some(Proc(b));
        }
    }

    /// A pod on node `i`; returns (pod netns, address).
    fn pod(&mut self, i: usize) -> (String, String) {
        let ns = format!("rt-{}-p{}", self.tag, self.pods.len());
        ok(&["ip", "netns", "add", &ns]);
        self.pods.push(ns.clone());
        let calico = self.bin.join("calico");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i].ns, calico.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &ns)
            .env("CNI_NETNS", format!("/var/run/netns/{ns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.conf(i).to_string().as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "ADD on {}: {out}", self.nodes[i].name);
        let v: Value = serde_json::from_str(&out).unwrap();
        let ip = v["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        (ns, ip)
    }

    /// The routes the node's agent (or BIRD) made: `ip route` lines of its protocol.
    fn agent_routes(&self, i: usize) -> BTreeSet<String> {
        let proto = if self.bgp { "bird" } else { "80" };
        ok(&[
            "ip",
            "-n",
            &self.nodes[i].ns,
            "route",
            "show",
            "proto",
            proto,
        ])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
    }

    /// What node `i` should have, by the store: `blackhole <block>` and `<dst> via <addr>`.
    fn wanted(&self, i: usize) -> BTreeSet<String> {
        let v: Value = serde_json::from_str(&self.ctl(&[
            "show",
            "--routes",
            "--node",
            self.nodes[i].name,
            "-o",
            "json",
        ]))
        .unwrap();
        v[0]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = r["route"].as_str().unwrap().to_string();
                // The kernel prints a /32 destination without its length.
                s.replace("/32 ", " ")
            })
            .collect()
    }

    /// Waits until every node's table matches what the store says, normalised to
    /// destination and next hop.
    fn converge(&self, why: &str) {
        let t = Instant::now();
        loop {
            let mut bad = Vec::new();
            for i in 0..3 {
                let want = self.wanted(i);
                let have: BTreeSet<String> = self
                    .agent_routes(i)
                    .iter()
                    .map(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        if w[0] == "blackhole" {
                            format!("blackhole {}", w[1])
                        } else {
                            format!("{} via {}", w[0], w[2])
                        }
                    })
                    .collect();
                if have != want {
                    bad.push(format!(
                        "{}: have {have:?}, want {want:?}",
                        self.nodes[i].name
                    ));
                }
            }
            if bad.is_empty() {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(if self.bgp { 60 } else { 15 }),
                "{why}: {bad:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn ping(ns: &str, to: &str) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..10 {
        last = sh(&["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", to]);
        if last.0 {
            break;
        }
    }
    last
}

fn scenario(bgp: bool) {
    if !available(bgp) {
        return;
    }
    let mut lab = Lab::new(bgp);
    // A route the agent did not make, on every node; it must survive everything below.
    for n in &lab.nodes {
        ok(&[
            "ip",
            "-n",
            &n.ns,
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "172.18.0.1",
        ]);
    }
    // One pod per node: each node claims a block.
    let (cp1, cp1_ip) = lab.pod(0);
    let (w1, _w1_ip) = lab.pod(1);
    let (_w21, w21_ip) = lab.pod(2);
    lab.converge("first blocks");
    for i in 0..3 {
        let routes = lab.agent_routes(i);
        // One route per block, never per pod: 1 blackhole + 2 remote blocks.
        assert_eq!(routes.len(), 3, "{}: {routes:?}", lab.nodes[i].name);
        assert_eq!(
            routes.iter().filter(|r| r.starts_with("blackhole")).count(),
            1
        );
    }
    let (p, out) = ping(&w1, &cp1_ip);
    assert!(p, "worker pod -> control-plane pod: {out}");
    let (p, out) = ping(&w1, &w21_ip);
    assert!(p, "worker pod -> worker2 pod: {out}");

    // control-plane fills its block (4 addresses) and claims the fourth, last block.
    for _ in 0..3 {
        lab.pod(0);
    }
    let (_, claimed_ip) = lab.pod(0);
    lab.converge("a block claimed on control-plane");
    let (p, out) = ping(&w1, &claimed_ip);
    assert!(p, "worker pod -> pod in the new block: {out}");

    // worker2 fills its block; its next pod must borrow (no block left, strict affinity off).
    for _ in 0..3 {
        lab.pod(2);
    }
    let (_, borrowed_ip) = lab.pod(2);
    lab.converge("a borrowed address");
    let shown = lab.ctl(&["node", "show", "worker2"]);
    assert!(shown.contains("worker2"), "{shown}");
    let worker2 = lab.nodes[2].addr.clone();
    for (i, n) in lab.nodes.iter().enumerate() {
        if i == 2 {
            continue;
        }
        let routes = lab.agent_routes(i);
        assert!(
            routes
                .iter()
                .any(|r| r.starts_with(&format!("{borrowed_ip} via {worker2}"))),
            "{}: no /32 for the borrowed {borrowed_ip}: {routes:?}",
            n.name
        );
    }
    let (p, out) = ping(&w1, &borrowed_ip);
    assert!(p, "worker pod -> borrowed address on worker2: {out}");
    let (p, out) = ping(&cp1, &borrowed_ip);
    assert!(p, "control-plane pod -> borrowed address on worker2: {out}");

    // Kill worker's service (SIGKILL): its routes stay; a change made meanwhile converges once
    // it is back.
    let before = lab.agent_routes(1);
    lab.nodes[1].service.take();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.agent_routes(1),
        before,
        "routes changed while the service was down"
    );
    let (p, out) = ping(&w1, &cp1_ip);
    assert!(p, "traffic while the service is down: {out}");
    lab.start_service(1);
    lab.converge("after restarting worker's service");

    // Release an empty block: its routes disappear everywhere. worker's pod is its block's
    // only address; free it through ipamctl, then release the block.
    let v: Value =
        serde_json::from_str(&lab.ctl(&["node", "show", "worker", "-o", "json"])).unwrap();
    let block = v["blocks"][0].as_str().unwrap().to_string();
    let blocks: Value =
        serde_json::from_str(&lab.ctl(&["show", "--blocks", "-o", "json"])).unwrap();
    for b in blocks.as_array().unwrap() {
        if b["cidr"] == block {
            for a in b["addresses"].as_array().unwrap() {
                if a["handle"] != "host-reserved" {
                    lab.ctl(&["release", "--ip", a["ip"].as_str().unwrap()]);
                }
            }
        }
    }
    lab.ctl(&["node", "release-block", "worker", &block]);
    lab.converge("after releasing worker's block");
    for i in 0..3 {
        assert!(
            !lab.agent_routes(i).iter().any(|r| r.contains(&block)),
            "{}: {block} still routed",
            lab.nodes[i].name
        );
    }
    // The route the agent did not make is still there.
    for n in &lab.nodes {
        let r = ok(&["ip", "-n", &n.ns, "route", "show", "203.0.113.0/24"]);
        assert!(r.contains("via 172.18.0.1"), "{}: {r}", n.name);
    }
}

#[test]
fn direct_routes_between_three_nodes() {
    scenario(false);
}

#[test]
fn bgp_routes_between_three_nodes() {
    scenario(true);
}
