//! `calico-ipamd --metrics-listen`: a live scrape of /metrics after real requests carries the
//! request counts by verb and CNI code, the latency histograms, the commit retries and the
//! node utilisation (pool utilisation with `--metrics-scope cluster`), and passes `promtool
//! check metrics` (Debian's prometheus package; required when `IPAM_E2E_REQUIRED` is set).

use ipam_cni::protocol::{self, Request};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cni(sock: &Path, verb: &str, cid: &str, args: &str) -> i32 {
    cni_on(sock, "node-m", verb, cid, args)
}

fn cni_on(sock: &Path, node: &str, verb: &str, cid: &str, args: &str) -> i32 {
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "m", "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": node, "ipv4_pools": ["10.244.0.0/16"]}});
    let mut env = BTreeMap::from([
        ("CNI_COMMAND".to_string(), verb.to_string()),
        ("CNI_CONTAINERID".into(), cid.into()),
        ("CNI_NETNS".into(), "/var/run/netns/x".into()),
        ("CNI_IFNAME".into(), "eth0".into()),
    ]);
    if !args.is_empty() {
        env.insert("CNI_ARGS".into(), args.into());
    }
    let req = Request::cni(env, conf.to_string(), None);
    protocol::call(sock, &req, Duration::from_secs(30))
        .unwrap()
        .exit_code
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200"),
        "{head}"
    );
    body.to_string()
}

/// A service on the sled store in `dir` with metrics on a free port, `extra` arguments added;
/// its socket and port once it answers.
fn service(dir: &Path, extra: &[&str]) -> (Killed, std::path::PathBuf, u16) {
    let sock = dir.join("run/ipamd.sock");
    let port = free_port();
    let svc = Killed(
        Command::new(env!("CARGO_BIN_EXE_calico-ipamd"))
            .arg("--sled-path")
            .arg(dir.join("store"))
            .arg("--socket")
            .arg(&sock)
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "no service");
        std::thread::sleep(Duration::from_millis(20));
    }
    (svc, sock, port)
}

#[test]
fn a_node_scrape_reads_its_own_nodes_and_a_cluster_scrape_every_pool() {
    let d = tempfile::tempdir().unwrap();
    // Another node's pods, placed by an earlier service on the same store.
    {
        let (_svc, sock, _) = service(d.path(), &[]);
        for i in 0..3 {
            assert_eq!(cni_on(&sock, "node-o", "ADD", &format!("o{i}"), ""), 0);
        }
    }
    let (svc, sock, port) = service(d.path(), &[]);
    for i in 0..2 {
        assert_eq!(cni(&sock, "ADD", &format!("m{i}"), ""), 0);
    }
    let body = scrape(port);
    assert!(
        body.contains(r#"calico_ipam_node{node="node-m",what="addresses"} 2"#)
            && body.contains(r#"calico_ipam_node{node="node-m",what="blocks"} 1"#),
        "{body}"
    );
    assert!(
        !body.contains("node-o") && !body.contains("calico_ipam_pool_addresses{"),
        "a node's scrape reads only the nodes it serves:\n{body}"
    );
    drop(svc);
    let (_svc, _sock, port) = service(d.path(), &["--metrics-scope", "cluster"]);
    let body = scrape(port);
    for want in [
        r#"calico_ipam_node{node="node-m",what="addresses"} 2"#,
        r#"calico_ipam_node{node="node-o",what="addresses"} 3"#,
        r#"state="in_use"} 5"#,
        r#"state="blocks"} 2"#,
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
}

#[test]
fn a_live_scrape_counts_requests_and_utilisation() {
    let d = tempfile::tempdir().unwrap();
    let (_svc, sock, port) = service(d.path(), &["--metrics-scope", "cluster"]);
    for i in 0..5 {
        assert_eq!(cni(&sock, "ADD", &format!("c{i}"), ""), 0);
    }
    assert_eq!(cni(&sock, "DEL", "c0", ""), 0);
    assert_ne!(cni(&sock, "ADD", "bad", "IP=10.99.0.1"), 0);
    let body = scrape(port);
    for want in [
        r#"calico_ipam_requests_total{code="0",verb="ADD"} 5"#,
        r#"calico_ipam_requests_total{code="0",verb="DEL"} 1"#,
        r#"calico_ipam_requests_total{code="101",verb="ADD"} 1"#,
        r#"calico_ipam_request_duration_seconds_count{verb="ADD"} 6"#,
        "calico_ipam_store_commit_retries_total 0",
        // One request at a time: nothing queued, nothing batched together. The first ADD
        // claims the block, the second reads and keeps its context, the last three are
        // served from that without a read.
        "calico_ipam_assignments_batched_total 0",
        "calico_ipam_assignments_without_read_total 3",
        "calico_ipam_releases_batched_total 0",
        r#"state="in_use"} 4"#,
        r#"state="size"} 65536"#,
        r#"state="blocks"} 1"#,
        r#"calico_ipam_node{node="node-m",what="addresses"} 4"#,
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    let promtool = ipam_test_support::have("promtool");
    if !ipam_test_support::e2e_or_skip(promtool, "promtool (Debian's prometheus package)") {
        return;
    }
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
