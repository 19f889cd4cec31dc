//! The node service dies and comes back while 16 callers run ADD, CHECK and DEL through the
//! real `calico-ipam`, which starts the service itself (`ipamd_autostart`): at least 30
//! SIGKILLs at random moments, half of them followed by a restart by hand. No caller is
//! killed, so every call must succeed, each within 2 s; afterwards the store holds exactly
//! the addresses of the containers still added, each once.

mod common;

use common::{exec, plugin, Call};
use ipam_core::Record;
use ipam_store::{SledOptions, SledStore};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CALLERS: usize = 16;
const KILLS: usize = 30;
const LIMIT: Duration = Duration::from_secs(2);

/// The pid of the process holding the store, if it is a node service.
fn service_pid(store: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(store.join("ipam.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Not a zombie: a dead service holds nothing.
    let alive = state
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'));
    (comm.trim() == "calico-ipamd" && alive).then_some(pid)
}

/// Every node service this test may have left (started by a plugin or by hand), by the
/// socket path it was given.
fn kill_services(socket: &Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = socket.display().to_string();
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("calico-ipamd") && cmd.contains(&needle) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn sigkill_and_restart_during_add_storms_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(plugin(), bin.join("calico-ipam")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_calico-ipamd"), bin.join("calico-ipamd"))
        .unwrap();
    let store = dir.path().join("store");
    let socket = dir.path().join("run/ipamd.sock");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "storm", "type": "ptp",
        "ipam": {
            "type": "calico-ipam", "nodename": "node-a",
            "sled_path": store, "ipamd_socket": socket,
            "ipam_lock_file": dir.path().join("ipam.lock"),
            "log_file_path": dir.path().join("cni.log"), "log_level": "info",
            "ipv4_pools": ["10.244.0.0/16"],
        }
    });
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            kill_services(&self.0);
        }
    }
    let _cleanup = Cleanup(socket.clone());

    let stop = Arc::new(AtomicBool::new(false));
    // container id -> address, for containers added and not deleted.
    let live = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|w| {
            let (stop, live, failures, slowest, calls, conf, bin) = (
                stop.clone(),
                live.clone(),
                failures.clone(),
                slowest.clone(),
                calls.clone(),
                conf.clone(),
                bin.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let cid = format!("w{w}-{i}");
                    i += 1;
                    let note = |verb: &str, c: &Call| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        let mut s = slowest.lock().unwrap();
                        *s = (*s).max(c.took);
                        if !c.ok
                            || c.took > LIMIT
                            || std::env::var("STORM_DEBUG").is_ok()
                                && c.took > Duration::from_millis(700)
                        {
                            failures.lock().unwrap().push(format!(
                                "{verb} {cid}: ok={} in {:?}: {}",
                                c.ok, c.took, c.stdout
                            ));
                        }
                    };
                    let add = exec(&bin.join("calico-ipam"), Some(&bin), "ADD", &cid, &conf);
                    note("ADD", &add);
                    if !add.ok {
                        continue;
                    }
                    let result: Value = serde_json::from_str(&add.stdout).unwrap();
                    let ip = result["ips"][0]["address"].as_str().unwrap().to_string();
                    live.lock().unwrap().insert(cid.clone(), ip);
                    let mut check = conf.clone();
                    check["prevResult"] = result;
                    note(
                        "CHECK",
                        &exec(&bin.join("calico-ipam"), Some(&bin), "CHECK", &cid, &check),
                    );
                    // Every other container is deleted again, so releases race the kills too.
                    if i % 2 == 0 {
                        let del = exec(&bin.join("calico-ipam"), Some(&bin), "DEL", &cid, &conf);
                        note("DEL", &del);
                        if del.ok {
                            live.lock().unwrap().remove(&cid);
                        }
                    }
                }
            })
        })
        .collect();

    // The killer: SIGKILL whichever service holds the store at a random moment; every other
    // time, start one by hand right away (as systemd would), else leave it to the next call.
    let mut kills = 0;
    let mut seed = std::process::id() as u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let started = Instant::now();
    let mut by_hand = Vec::new();
    while kills < KILLS && started.elapsed() < Duration::from_secs(240) {
        std::thread::sleep(Duration::from_millis(50 + rand(250)));
        let Some(pid) = service_pid(&store) else {
            continue;
        };
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        kills += 1;
        if kills % 2 == 0 {
            by_hand.push(
                Command::new(env!("CARGO_BIN_EXE_calico-ipamd"))
                    .args(["--sled-path", store.to_str().unwrap()])
                    .args(["--socket", socket.to_str().unwrap()])
                    .args(["--log-level", "warn"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.join().unwrap();
    }
    kill_services(&socket);
    for mut c in by_hand {
        let _ = c.kill();
        let _ = c.wait();
    }
    let failures = failures.lock().unwrap();
    let calls = calls.load(Ordering::Relaxed);
    eprintln!(
        "{kills} kills, {calls} calls, slowest {:?}, {} failed or over {LIMIT:?}",
        slowest.lock().unwrap(),
        failures.len()
    );
    if std::env::var("STORM_DEBUG").is_ok() {
        let _ = std::fs::copy(dir.path().join("cni.log"), "/tmp/storm.log");
    }
    assert!(kills >= KILLS, "only {kills} kills happened");
    assert!(
        failures.is_empty(),
        "{:#?}",
        &failures[..failures.len().min(20)]
    );

    // The store: exactly the live containers' addresses, each once, nothing else held.
    let mut s = None;
    for _ in 0..100 {
        match SledStore::open(&store, &SledOptions::default()) {
            Ok(x) => {
                s = Some(x);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let s = s.expect("the store is free once the services are gone");
    let problems = ipam_core::audit(&s).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let mut held = BTreeMap::<String, String>::new();
    for r in ipam_core::Datastore::list(&s, &ipam_core::Range::Blocks).unwrap() {
        if let Record::Block(b) = r.value {
            for (o, a, _) in b.used() {
                let ip = b.ip(o).to_string();
                assert!(
                    held.insert(ip.clone(), a.handle_id().to_string()).is_none(),
                    "{ip} held twice"
                );
            }
        }
    }
    let live = live.lock().unwrap();
    let want: BTreeSet<String> = live
        .values()
        .map(|a| a.split('/').next().unwrap().to_string())
        .collect();
    let have: BTreeSet<String> = held.keys().cloned().collect();
    assert_eq!(
        want.len(),
        live.len(),
        "two live containers got one address"
    );
    let leaked: Vec<_> = have.difference(&want).collect();
    let lost: Vec<_> = want.difference(&have).collect();
    assert!(leaked.is_empty(), "held by no live container: {leaked:?}");
    assert!(
        lost.is_empty(),
        "live containers whose address is free: {lost:?}"
    );
}
