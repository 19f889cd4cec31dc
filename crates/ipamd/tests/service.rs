//! The `calico-ipamd` binary: serves requests over its socket with root-only permissions,
//! declines unknown protocol versions, and on SIGTERM finishes in-flight requests, flushes
//! and exits 0, with every answered allocation on disk.

mod common;

use ipam_cni::protocol::{self, CallError, Request};
use ipam_core::{Ipam, Range};
use ipam_store::{SledOptions, SledStore, SystemClock};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn start(dir: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_calico-ipamd"))
        .arg("--sled-path")
        .arg(dir.join("store"))
        .arg("--socket")
        .arg(dir.join("run/ipamd.sock"))
        .arg("--log-level")
        .arg("warn")
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(dir.join("run/ipamd.sock")).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "service did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn add(dir: &Path, cid: &str) -> Request {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "svc", "type": "ptp",
        "ipam": {"type": "calico-ipam", "nodename": "node-a", "ipv4_pools": ["10.244.0.0/16"],
                 "log_file_path": dir.join("cni.log")}
    });
    Request::cni(
        BTreeMap::from([
            ("CNI_COMMAND".into(), "ADD".into()),
            ("CNI_CONTAINERID".into(), cid.into()),
            ("CNI_NETNS".into(), "/var/run/netns/x".into()),
            ("CNI_IFNAME".into(), "eth0".into()),
        ]),
        conf.to_string(),
        None,
    )
}

/// An ADD of container `cid` through the service at `sock`, which must succeed.
fn add_ok(sock: &Path, dir: &Path, cid: &str) {
    let r = protocol::call(sock, &add(dir, cid), Duration::from_secs(30)).unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stdout);
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn serves_pings_and_cni_and_declines_unknown_versions() {
    let d = tempfile::tempdir().unwrap();
    let mut child = start(d.path());
    let sock = d.path().join("run/ipamd.sock");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(&d.path().join("run")), 0o700);
    let ping = Request::ping(None);
    let r = protocol::call(&sock, &ping, Duration::from_secs(5)).unwrap();
    assert_eq!(r.stdout, "pong");
    let r = protocol::call(&sock, &add(d.path(), "c1"), Duration::from_secs(5)).unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stdout);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(j["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.244."));
    let mut future = add(d.path(), "c2");
    future.version = 99;
    let r = protocol::call(&sock, &future, Duration::from_secs(5)).unwrap();
    assert!(r.error.unwrap().contains("99"));
    // A request of this version that is not one the service knows (a kind from a newer
    // client, or a kind without its fields) is declined, not dropped.
    for frame in [
        serde_json::json!({"version": protocol::VERSION, "kind": "teleport"}),
        serde_json::json!({"version": protocol::VERSION, "kind": "cni"}),
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        protocol::write_frame(&mut s, &frame).unwrap();
        let r: protocol::Response = protocol::read_frame(&mut s).unwrap();
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("not a request")),
            "{frame}: {r:?}"
        );
    }
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    assert!(!sock.exists(), "socket removed on exit");
}

#[test]
fn sigterm_finishes_in_flight_requests_and_flushes() {
    let d = tempfile::tempdir().unwrap();
    let mut child = start(d.path());
    let sock = d.path().join("run/ipamd.sock");
    let dir = d.path().to_path_buf();
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let sock = sock.clone();
            let req = add(&dir, &format!("c{i}"));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 2));
                protocol::call(&sock, &req, Duration::from_secs(30))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(40));
    sigterm(&child);
    let mut answered = Vec::new();
    let mut refused = 0;
    for c in clients {
        match c.join().unwrap() {
            Ok(r) => {
                assert_eq!(r.exit_code, 0, "{}", r.stdout);
                let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                answered.push(common::first_address(&j));
            }
            Err(CallError::NotRunning(_)) => refused += 1,
            Err(CallError::Failed(e)) => panic!("an accepted request was cut off: {e}"),
            Err(CallError::Untrusted(why)) => panic!("the service was not trusted: {why}"),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !answered.is_empty(),
        "some requests were served before the signal"
    );
    eprintln!(
        "{} answered, {refused} refused after shutdown",
        answered.len()
    );
    let ipam = Ipam::new(
        SledStore::open(d.path().join("store"), &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    );
    let held: std::collections::BTreeSet<String> = ipam
        .blocks(&Range::Blocks)
        .unwrap()
        .into_iter()
        .flat_map(|b| {
            b.value
                .used()
                .map(|(o, _, _)| b.value.ip(o).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for ip in &answered {
        assert!(held.contains(ip), "answered allocation {ip} is not on disk");
    }
    assert!(ipam.audit().unwrap().is_empty());
}

/// Open descriptors this process may have.
fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| x.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1024)
}

#[test]
fn idle_and_slow_clients_do_not_hold_the_service() {
    let d = tempfile::tempdir().unwrap();
    let mut child = start(d.path());
    let sock = d.path().join("run/ipamd.sock");
    // A normal ADD: the pool and the node's block exist already.
    add_ok(&sock, d.path(), "warm-up");
    let t = Instant::now();
    protocol::call(&sock, &add(d.path(), "quiet-day"), Duration::from_secs(30)).unwrap();
    let quiet = t.elapsed();
    // 2,000 idle connections (fewer when descriptors are scarce) and 50 that send half a
    // frame and stop: before, 16 of them occupied every worker for 30 s.
    let idle_n = 2000.min(fd_limit().saturating_sub(300) / 2);
    let mut held = Vec::new();
    for _ in 0..idle_n {
        held.push(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    }
    for _ in 0..50 {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(&[0, 0]).unwrap();
        held.push(s);
    }
    let timed_add = |cid: &str| {
        let t = Instant::now();
        add_ok(&sock, d.path(), cid);
        t.elapsed()
    };
    // Right away, the service is still accepting the burst (a reader thread each).
    let burst = timed_add("burst-day");
    assert!(
        burst < Duration::from_secs(1),
        "an ADD right after {idle_n} idle and 50 slow clients connected took {burst:?}"
    );
    // Then with all of them open.
    std::thread::sleep(Duration::from_millis(300));
    let took = timed_add("busy-day");
    assert!(
        took < Duration::from_millis(100),
        "an ADD with {idle_n} idle and 50 slow clients open took {took:?}"
    );
    eprintln!(
        "ADD with {idle_n} idle and 50 slow connections open: {took:?}; right after they connected: {burst:?}; without them: {quiet:?}"
    );
    // SIGTERM with all of them still open: the service exits within the read deadline.
    let t = Instant::now();
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM with stuck clients took {:?}",
        t.elapsed()
    );
    eprintln!("SIGTERM with stuck clients: exited in {:?}", t.elapsed());
    drop(held);
}

#[test]
fn a_service_whose_socket_is_taken_away_stops_and_frees_the_store() {
    let d = tempfile::tempdir().unwrap();
    let mut child = start(d.path());
    let sock = d.path().join("run/ipamd.sock");
    add_ok(&sock, d.path(), "before");
    // Nobody can reach it any more: it stops (within its watch interval) and exits cleanly.
    std::fs::remove_file(&sock).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the service still runs {:?} after its socket was removed",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // The store is free for the next one, with the first one's address in it.
    let mut next = start(d.path());
    add_ok(&sock, d.path(), "after");
    sigterm(&next);
    assert!(next.wait().unwrap().success());
    let ipam = Ipam::new(
        SledStore::open(d.path().join("store"), &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    );
    let held: usize = ipam
        .blocks(&Range::Blocks)
        .unwrap()
        .iter()
        .map(|b| b.value.used_count() as usize)
        .sum();
    assert_eq!(held, 2);
}
