//! The `calico` main plugin end to end, as root, in network namespaces the test makes: a
//! "host" namespace of its own (so the runner's namespace is untouched) holding the `cali`
//! ends, and one namespace per pod. The plugin runs inside the host namespace with
//! `calico-ipam` (or host-local) as its IPAM plugin, on sled (locally and through the node
//! service) and on etcd.
//!
//! Checked: the pod's `ip addr` (a /32 on eth0, the configured MTU) and `ip route` (exactly the
//! two lines of Calico's pods), the host route `dev cali...`, the host end's MAC and proxy_arp,
//! a ping between two pods through the host, the endpoint record, CHECK failing after a route
//! is deleted, DEL twice, DEL with the netns gone, 20 concurrent ADDs and DELs, dual stack, and
//! every failure path leaving no link, route, address or endpoint behind.
//!
//! Needs root and `ip`; without them the tests say so and pass, unless `IPAM_E2E_REQUIRED=1`.
//! The etcd runs need `IPAM_TEST_ETCD` (set by scripts/test.sh).

use ipam_core::{Endpoint, Ipam, Range, StoreExt};
use ipam_store::{StoreSpec, SystemClock};
use ipam_test_support::{e2e_or_skip, have, is_root, ok, sh};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CNI_DIR: &str = "/usr/lib/cni";

fn available() -> bool {
    e2e_or_skip(is_root() && have("ip"), "root and iproute2")
}

/// The directory CNI_PATH points to: `calico` and `calico-ipam` (built here when missing, and
/// always with the etcd feature when this test has it, so the etcd runs have it too), and
/// Debian's plugins after it.
fn cni_path() -> String {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let calico = PathBuf::from(env!("CARGO_BIN_EXE_calico"));
    let dir = calico.parent().unwrap().to_path_buf();
    BUILT.call_once(|| {
        if dir.join("calico-ipam").exists() && !cfg!(feature = "etcd") {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-q", "-p", "ipam-cni", "--bin", "calico-ipam"]);
        if cfg!(feature = "etcd") {
            c.args(["--features", "etcd"]);
        }
        assert!(c.status().unwrap().success(), "building calico-ipam");
    });
    format!("{}:{CNI_DIR}", dir.display())
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Sled,
    SledService,
    Etcd,
}

/// One test's host namespace, pods, store and node service; removes them all when dropped.
struct Lab {
    tag: String,
    host: String,
    pods: Vec<String>,
    dir: tempfile::TempDir,
    etcd: Option<(String, String)>,
    service: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    cni_path: String,
}

impl Lab {
    fn new(store: Store) -> Option<Lab> {
        let etcd = match store {
            Store::Etcd => match std::env::var("IPAM_TEST_ETCD") {
                Ok(ep) => Some((
                    ep,
                    format!(
                        "/calico-e2e/{}-{}/",
                        std::process::id(),
                        SEQ.load(Ordering::SeqCst)
                    ),
                )),
                Err(_) => {
                    assert!(
                        std::env::var("IPAM_ETCD_REQUIRED").is_err(),
                        "IPAM_TEST_ETCD not set"
                    );
                    eprintln!("skipping the etcd run: set IPAM_TEST_ETCD");
                    return None;
                }
            },
            _ => None,
        };
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let host = format!("calh-{tag}");
        ok(&["ip", "netns", "add", &host]);
        let mut lab = Lab {
            tag,
            host: host.clone(),
            pods: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            etcd,
            service: None,
            cni_path: cni_path(),
        };
        // A node has a default route (proxy ARP answers for 169.254.1.1 only when the host
        // can route it) and forwards; this one's uplink leads nowhere.
        ok(&["ip", "-n", &host, "link", "set", "lo", "up"]);
        ok(&[
            "ip", "-n", &host, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
        ]);
        ok(&[
            "ip",
            "-n",
            &host,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "up0",
        ]);
        ok(&["ip", "-n", &host, "link", "set", "up0", "up"]);
        ok(&["ip", "-n", &host, "link", "set", "up1", "up"]);
        ok(&[
            "ip",
            "-n",
            &host,
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
        ]);
        ok(&[
            "ip",
            "netns",
            "exec",
            &host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        ok(&[
            "ip",
            "netns",
            "exec",
            &host,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        // The plugin runs in the host namespace, where the runner's loopback etcd is out of
        // reach: on etcd it goes through a node service that runs here, as on a real node.
        if store != Store::Sled {
            lab.start_service();
        }
        Some(lab)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn spec(&self) -> StoreSpec {
        match &self.etcd {
            Some((ep, prefix)) => StoreSpec::Etcd(ipam_store::EtcdSpec {
                endpoints: vec![ep.clone()],
                prefix: Some(prefix.clone()),
                ..Default::default()
            }),
            None => StoreSpec::sled(self.path("store")),
        }
    }

    fn start_service(&mut self) {
        let spec = self.spec();
        let store = spec.open(Duration::from_secs(5)).unwrap();
        let ipam = Arc::new(Ipam::new(store, Arc::new(SystemClock)));
        let listener = ipamd::bind(&self.path("ipamd.sock")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let id = spec.identity();
        let t = std::thread::spawn(move || {
            ipamd::serve_store(
                listener,
                ipam,
                s,
                Arc::new(ipamd::Stats::default()),
                Some(id),
            )
            .unwrap();
        });
        self.service = Some((stop, t));
    }

    fn stop_service(&mut self) {
        if let Some((stop, t)) = self.service.take() {
            stop.store(true, Ordering::SeqCst);
            ipamd::wake(&self.path("ipamd.sock"));
            t.join().unwrap();
        }
    }

    /// The network config: `calico` with `calico-ipam` on this lab's store.
    fn conf(&self, ipam_extra: Value) -> Value {
        // The lab decides whether a service runs (Store); the plugin does not start one.
        let mut ipam = json!({
            "type": "calico-ipam",
            "ipv4_pools": ["10.244.0.0/16"],
            "ipamd_autostart": false,
        });
        for (k, v) in ipam_extra.as_object().unwrap() {
            ipam[k] = v.clone();
        }
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "mtu": 1450,
            "nodename": "worker",
            "ipam_lock_file": self.path("ipam.lock"),
            "log_file_path": self.path("cni.log"),
            "ipamd_socket": self.path("ipamd.sock"),
            "ipam": ipam,
        });
        match &self.etcd {
            Some((ep, prefix)) => {
                c["datastore_type"] = json!("etcdv3");
                c["etcd_endpoints"] = json!(ep);
                c["etcd_prefix"] = json!(prefix);
            }
            None => c["sled_path"] = json!(self.path("store")),
        }
        c
    }

    fn new_pod(&mut self) -> String {
        let ns = format!("calp-{}-{}", self.tag, self.pods.len());
        ok(&["ip", "netns", "add", &ns]);
        self.pods.push(ns.clone());
        ns
    }

    /// Runs `calico` inside the host namespace.
    fn exec(&self, verb: &str, cid: &str, netns: &str, args: &str, conf: &Value) -> (i32, String) {
        calico(&self.host, &self.cni_path, verb, cid, netns, args, conf)
    }

    fn netns_path(ns: &str) -> String {
        format!("/var/run/netns/{ns}")
    }

    /// Addresses held and endpoints recorded in the store.
    fn stored(&mut self) -> (usize, Vec<Endpoint>) {
        let restart = self.service.is_some();
        self.stop_service();
        let s = self.spec().open(Duration::from_secs(10)).unwrap();
        let held: usize = s
            .list_blocks(&Range::Blocks)
            .unwrap()
            .iter()
            .map(|b| b.value.used().count())
            .sum();
        let eps = s
            .list_endpoints(&Range::Endpoints)
            .unwrap()
            .into_iter()
            .map(|v| v.value)
            .collect();
        let problems = ipam_core::audit(&s).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        drop(s);
        if restart {
            self.start_service();
        }
        (held, eps)
    }

    fn cali_links(&self) -> Vec<String> {
        ok(&["ip", "-n", &self.host, "-o", "link"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("cali"))
            .collect()
    }

    fn host_routes(&self) -> String {
        ok(&["ip", "-n", &self.host, "route"]) + &ok(&["ip", "-n", &self.host, "-6", "route"])
    }

    /// Nothing of any attachment is left: no cali link, no route through one, no address, no
    /// endpoint record.
    fn assert_empty(&mut self, why: &str) {
        assert!(
            self.cali_links().is_empty(),
            "{why}: {:?}",
            self.cali_links()
        );
        let routes = self.host_routes();
        assert!(!routes.contains("cali"), "{why}: {routes}");
        let (held, eps) = self.stored();
        assert_eq!(held, 0, "{why}: addresses left");
        assert!(eps.is_empty(), "{why}: endpoints left: {eps:?}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_service();
        for p in &self.pods {
            let _ = sh(&["ip", "netns", "del", p]);
        }
        let _ = sh(&["ip", "netns", "del", &self.host]);
    }
}

/// Runs `calico` inside `host` (the node's namespace).
fn calico(
    host: &str,
    cni_path: &str,
    verb: &str,
    cid: &str,
    netns: &str,
    args: &str,
    conf: &Value,
) -> (i32, String) {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", host, env!("CARGO_BIN_EXE_calico")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if !netns.is_empty() {
        c.env("CNI_NETNS", netns);
    }
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

fn first_ip(res: &Value, v6: bool) -> String {
    res["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["address"].as_str())
        .find(|a| a.contains(':') == v6)
        .unwrap_or_else(|| panic!("no address in {res}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

fn ping(ns: &str, to: &str) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..5 {
        last = sh(&["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", to]);
        if last.0 {
            break;
        }
    }
    last
}

const SEED_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=multitool";

/// The seed's pod, on one store: everything the lab shows, then CHECK, DEL, cleanup.
fn seed_pod(store: Store) {
    if !available() {
        return;
    }
    let Some(mut lab) = Lab::new(store) else {
        return;
    };
    let conf = lab.conf(json!({}));
    let p1 = lab.new_pod();
    let (code, out) = lab.exec(
        "ADD",
        "c-multitool",
        &Lab::netns_path(&p1),
        SEED_ARGS,
        &conf,
    );
    assert_eq!(code, 0, "{store:?} ADD: {out}");
    let res: Value = serde_json::from_str(&out).unwrap();
    let ip = first_ip(&res, false);
    assert_eq!(res["interfaces"][0]["name"], "cali6d09fa47963");
    assert_eq!(res["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(res["interfaces"][1]["sandbox"], Lab::netns_path(&p1));
    assert_eq!(res["ips"][0]["address"], format!("{ip}/32"));
    assert_eq!(res["ips"][0]["interface"], 1);

    // Inside the pod: a /32 on eth0 with the configured MTU, and exactly Calico's two routes.
    let addr = ok(&["ip", "-n", &p1, "addr", "show", "eth0"]);
    assert!(addr.contains("mtu 1450"), "{addr}");
    assert!(
        addr.contains(&format!("inet {ip}/32 scope global eth0")),
        "{addr}"
    );
    let route = ok(&["ip", "-n", &p1, "route"]);
    assert_eq!(
        route.lines().map(str::trim_end).collect::<Vec<_>>(),
        vec![
            "default via 169.254.1.1 dev eth0",
            "169.254.1.1 dev eth0 scope link"
        ],
        "{route}"
    );
    // On the host: the /32 via the cali end, whose MAC is ee:ee:... and which proxies ARP.
    let routes = lab.host_routes();
    assert!(
        routes.contains(&format!("{ip} dev cali6d09fa47963 scope link")),
        "{routes}"
    );
    let link = ok(&["ip", "-n", &lab.host, "link", "show", "cali6d09fa47963"]);
    assert!(link.contains("link/ether ee:ee:ee:ee:ee:ee"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    let proxy = ok(&[
        "ip",
        "netns",
        "exec",
        &lab.host,
        "cat",
        "/proc/sys/net/ipv4/conf/cali6d09fa47963/proxy_arp",
    ]);
    assert_eq!(proxy.trim(), "1");

    // The endpoint record.
    let (held, eps) = lab.stored();
    assert_eq!(held, 1);
    assert_eq!(eps.len(), 1, "{eps:?}");
    let e = &eps[0];
    assert_eq!(
        (
            e.node.as_str(),
            e.network.as_str(),
            e.container_id.as_str(),
            e.ifname.as_str()
        ),
        ("worker", "k8s-pod-network", "c-multitool", "eth0")
    );
    assert_eq!(
        (
            e.namespace.as_deref(),
            e.pod.as_deref(),
            e.host_ifname.as_str()
        ),
        (Some("default"), Some("multitool"), "cali6d09fa47963")
    );
    assert_eq!(e.addresses[0].to_string(), format!("{ip}/32"));
    assert_eq!(e.mac, res["interfaces"][1]["mac"]);

    // A second pod answers a ping from the first, through the host.
    let p2 = lab.new_pod();
    let args2 = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";
    let (code, out) = lab.exec("ADD", "c-web", &Lab::netns_path(&p2), args2, &conf);
    assert_eq!(code, 0, "{out}");
    let ip2 = first_ip(&serde_json::from_str(&out).unwrap(), false);
    let (pinged, out) = ping(&p1, &ip2);
    assert!(pinged, "{store:?}: ping {ip} -> {ip2}: {out}");

    // CHECK passes, then fails by name once the test deletes the pod's default route.
    let mut check = conf.clone();
    check["prevResult"] = res.clone();
    let (code, out) = lab.exec(
        "CHECK",
        "c-multitool",
        &Lab::netns_path(&p1),
        SEED_ARGS,
        &check,
    );
    assert_eq!(code, 0, "CHECK: {out}");
    ok(&["ip", "-n", &p1, "route", "del", "default"]);
    let (code, out) = lab.exec(
        "CHECK",
        "c-multitool",
        &Lab::netns_path(&p1),
        SEED_ARGS,
        &check,
    );
    assert_ne!(code, 0);
    assert!(out.contains("default via 169.254.1.1"), "{out}");

    // DEL twice; DEL of the second pod after its namespace is gone.
    for _ in 0..2 {
        let (code, out) = lab.exec(
            "DEL",
            "c-multitool",
            &Lab::netns_path(&p1),
            SEED_ARGS,
            &conf,
        );
        assert_eq!(code, 0, "DEL: {out}");
    }
    ok(&["ip", "netns", "del", &p2]);
    let (code, out) = lab.exec("DEL", "c-web", &Lab::netns_path(&p2), args2, &conf);
    assert_eq!(code, 0, "DEL without netns: {out}");
    lab.assert_empty("after DEL");
}

#[test]
fn seed_pod_on_sled() {
    seed_pod(Store::Sled);
}

#[test]
fn seed_pod_through_the_node_service() {
    seed_pod(Store::SledService);
}

#[test]
fn seed_pod_on_etcd() {
    seed_pod(Store::Etcd);
}

#[test]
fn twenty_concurrent_adds_then_dels_leave_nothing() {
    if !available() {
        return;
    }
    let Some(mut lab) = Lab::new(Store::SledService) else {
        return;
    };
    let conf = lab.conf(json!({}));
    let pods: Vec<String> = (0..20).map(|_| lab.new_pod()).collect();
    let lab = Arc::new(parking_lot::Mutex::new(lab));
    let run = |verb: &'static str| {
        let threads: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (lab, conf, ns) = (lab.clone(), conf.clone(), ns.clone());
                std::thread::spawn(move || {
                    let l = lab.lock();
                    let (host, cni_path) = (l.host.clone(), l.cni_path.clone());
                    drop(l);
                    let args = format!("K8S_POD_NAMESPACE=load;K8S_POD_NAME=pod-{i}");
                    let (code, out) = calico(
                        &host,
                        &cni_path,
                        verb,
                        &format!("load-{i}"),
                        &Lab::netns_path(&ns),
                        &args,
                        &conf,
                    );
                    (Some(code), out)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    };
    let added = run("ADD");
    let mut ips = std::collections::BTreeSet::new();
    for (code, out) in &added {
        assert_eq!(*code, Some(0), "{out}");
        assert!(ips.insert(first_ip(&serde_json::from_str(out).unwrap(), false)));
    }
    {
        let mut l = lab.lock();
        assert_eq!(l.cali_links().len(), 20);
        let (held, eps) = l.stored();
        assert_eq!((held, eps.len()), (20, 20));
    }
    for (code, out) in run("DEL") {
        assert_eq!(code, Some(0), "{out}");
    }
    lab.lock().assert_empty("after 20 DELs");
}

#[test]
fn dual_stack_pods_reach_each_other_over_both_families() {
    if !available() {
        return;
    }
    let Some(mut lab) = Lab::new(Store::Sled) else {
        return;
    };
    let conf = lab.conf(json!({"assign_ipv6": "true", "ipv6_pools": ["fd00:10:244::/48"]}));
    let mut got = Vec::new();
    for i in 0..2 {
        let ns = lab.new_pod();
        let (code, out) = lab.exec("ADD", &format!("ds{i}"), &Lab::netns_path(&ns), "", &conf);
        assert_eq!(code, 0, "{out}");
        let res: Value = serde_json::from_str(&out).unwrap();
        got.push((ns, first_ip(&res, false), first_ip(&res, true)));
    }
    let (ns0, _, v6_0) = &got[0];
    let addr = ok(&["ip", "-n", ns0, "-6", "addr", "show", "eth0"]);
    assert!(
        addr.contains(&format!("inet6 {v6_0}/128 scope global")),
        "{addr}"
    );
    let route = ok(&["ip", "-n", ns0, "-6", "route"]);
    assert!(
        route.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{route}"
    );
    let routes = lab.host_routes();
    assert!(routes.contains(&format!("{v6_0} dev cali")), "{routes}");
    let (_, v4_1, v6_1) = &got[1];
    let (pinged, out) = ping(ns0, v4_1);
    assert!(pinged, "{out}");
    let (pinged, out) = ping(ns0, v6_1);
    assert!(pinged, "ping6: {out}");
    for (i, (ns, _, _)) in got.iter().enumerate() {
        let (code, out) = lab.exec("DEL", &format!("ds{i}"), &Lab::netns_path(ns), "", &conf);
        assert_eq!(code, 0, "{out}");
    }
    lab.assert_empty("after dual-stack DEL");
}

#[test]
fn every_failure_leaves_nothing_behind() {
    if !available() {
        return;
    }
    let Some(mut lab) = Lab::new(Store::Sled) else {
        return;
    };
    let conf = lab.conf(json!({}));
    let ns = lab.new_pod();
    // A first good pod creates the store, so "nothing behind" is read from a real one.
    let good = lab.new_pod();
    let (code, out) = lab.exec("ADD", "good", &Lab::netns_path(&good), "", &conf);
    assert_eq!(code, 0, "{out}");
    let (code, out) = lab.exec("DEL", "good", &Lab::netns_path(&good), "", &conf);
    assert_eq!(code, 0, "{out}");

    let expect = |lab: &mut Lab, what: &str, (code, out): (i32, String), want: u64| {
        assert_ne!(code, 0, "{what} succeeded: {out}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"));
        assert_eq!(v["code"], want, "{what}: {out}");
        lab.assert_empty(what);
    };
    let r = lab.exec("ADD", "f1", "", "", &conf);
    expect(&mut lab, "missing CNI_NETNS", r, 4);

    let file = lab.path("not-a-netns");
    std::fs::write(&file, "x").unwrap();
    let r = lab.exec("ADD", "f2", file.to_str().unwrap(), "", &conf);
    expect(&mut lab, "a netns path that is not a netns", r, 4);

    ok(&[
        "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let r = lab.exec("ADD", "f3", &Lab::netns_path(&ns), "", &conf);
    expect(&mut lab, "an ifname that already exists", r, 4);
    ok(&["ip", "-n", &ns, "link", "del", "eth0"]);

    let mut missing = conf.clone();
    missing["ipam"]["type"] = json!("no-such-ipam");
    let r = lab.exec("ADD", "f4", &Lab::netns_path(&ns), "", &missing);
    expect(&mut lab, "a missing IPAM plugin", r, 7);

    // The IPAM plugin fails: a requested address outside every pool.
    let r = lab.exec("ADD", "f5", &Lab::netns_path(&ns), "IP=10.99.0.1", &conf);
    expect(&mut lab, "an IPAM plugin that fails", r, 101);

    // A failure after IPAM succeeded: the MTU is too large for a veth, so the pair cannot be
    // made; the address must be given back.
    let mut big = conf.clone();
    big["mtu"] = json!(65_535);
    big["ipam"]["ipv4_pools"] = json!(["10.244.0.0/16"]);
    let (code, out) = lab.exec("ADD", "f6", &Lab::netns_path(&ns), "", &big);
    if code != 0 {
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(v["code"].as_u64().is_some(), "{out}");
        lab.assert_empty("a failure after IPAM");
    } else {
        // The kernel took the MTU: then DEL must clean it.
        let (code, out) = lab.exec("DEL", "f6", &Lab::netns_path(&ns), "", &big);
        assert_eq!(code, 0, "{out}");
        lab.assert_empty("DEL after a large MTU");
    }
    assert!(!Path::new("/sys/class/net/other0").exists());
}

#[test]
fn host_local_can_be_the_ipam_plugin() {
    if !available() || !Path::new(CNI_DIR).join("host-local").exists() {
        assert!(
            std::env::var("IPAM_E2E_REQUIRED").is_err()
                || Path::new(CNI_DIR).join("host-local").exists(),
            "host-local is missing"
        );
        return;
    }
    let Some(mut lab) = Lab::new(Store::Sled) else {
        return;
    };
    let mut conf = lab.conf(json!({}));
    conf["ipam"] = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.250.0.0/24"}]],
        "dataDir": lab.path("host-local"),
    });
    let ns = lab.new_pod();
    let (code, out) = lab.exec("ADD", "hl", &Lab::netns_path(&ns), "", &conf);
    assert_eq!(code, 0, "{out}");
    let ip = first_ip(&serde_json::from_str(&out).unwrap(), false);
    assert!(ip.starts_with("10.250.0."), "{ip}");
    let addr = ok(&["ip", "-n", &ns, "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {ip}/32")), "{addr}");
    let (_, eps) = lab.stored();
    assert_eq!(eps.len(), 1);
    let (code, out) = lab.exec("DEL", "hl", &Lab::netns_path(&ns), "", &conf);
    assert_eq!(code, 0, "{out}");
    assert!(lab.cali_links().is_empty());
    assert!(lab.stored().1.is_empty());
}
