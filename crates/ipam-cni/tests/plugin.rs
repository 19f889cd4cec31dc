//! The real `calico-ipam` binary driven through environment and stdin, on its own and through
//! the node service: every verb, every CNI version, and the bad-input table.

mod common;

use common::*;
use ipam_core::{Ipam, IpamConfig};
use ipam_store::{SledOptions, SledStore, SystemClock};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

#[test]
fn add_check_del_in_every_version() {
    both_modes(|mode| {
        let h = Harness::new(mode);
        for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            .iter()
            .enumerate()
        {
            let cid = format!("c{i}");
            let conf = h.conf(v, json!({}));
            let out = h.exec("ADD", &cid, "eth0", &conf, "");
            let j = out.ok().json();
            assert_eq!(j["cniVersion"], *v, "{mode:?}");
            let addr = j["ips"][0]["address"].as_str().unwrap();
            assert!(
                addr.starts_with("10.244.") && addr.ends_with("/26"),
                "{addr}"
            );
            assert_eq!(j["ips"][0]["version"].is_string(), v.starts_with("0."));
            if *v >= "0.4.0" {
                let mut c = conf.clone();
                c["prevResult"] = j.clone();
                h.exec("CHECK", &cid, "eth0", &c, "").ok();
                // CHECK with an address this attachment does not hold fails.
                c["prevResult"]["ips"][0]["address"] = json!("10.244.250.1/26");
                assert_eq!(h.exec("CHECK", &cid, "eth0", &c, "").error_code(), 103);
            } else {
                assert_eq!(h.exec("CHECK", &cid, "eth0", &conf, "").error_code(), 1);
            }
            h.exec("DEL", &cid, "eth0", &conf, "").ok();
            h.exec("DEL", &cid, "eth0", &conf, "").ok();
            if *v >= "0.4.0" {
                let mut c = conf.clone();
                c["prevResult"] = j.clone();
                assert_eq!(h.exec("CHECK", &cid, "eth0", &c, "").error_code(), 3);
            }
        }
        // DEL of a container never seen succeeds.
        h.exec("DEL", "never", "eth0", &h.conf("1.1.0", json!({})), "")
            .ok();
    });
}

#[test]
fn repeated_add_returns_the_same_address_and_pods_get_distinct_ones() {
    both_modes(|mode| {
        let h = Harness::new(mode);
        let a = h.add("c1").ok().ips();
        assert_eq!(h.add("c1").ok().ips(), a, "{mode:?}");
        let b = h.add("c2").ok().ips();
        assert_ne!(a, b);
        // A second interface of the same container gets its own address.
        let e1 = h.exec("ADD", "c1", "eth1", &h.conf("1.0.0", json!({})), "");
        assert_ne!(e1.ok().ips(), a);
        h.exec("DEL", "c1", "eth1", &h.conf("1.0.0", json!({})), "")
            .ok();
        assert_eq!(h.add("c1").ok().ips(), a, "eth0 kept its address");
    });
}

#[test]
fn attributes_are_stored_with_each_address() {
    let mut h = Harness::new(Mode::Local);
    let out = h.exec(
        "ADD",
        "abc123",
        "eth0",
        &h.conf("1.1.0", json!({})),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0;K8S_POD_INFRA_CONTAINER_ID=abc123;OTHER=x",
    );
    let ip: std::net::IpAddr = out.ok().ips()[0]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _ = h.snapshot();
    let ipam = Ipam::new(
        SledStore::open(h.path("store"), &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    );
    let a = ipam.allocation(ip).unwrap().unwrap();
    assert_eq!(a.handle_id, "testnet.abc123");
    for (k, v) in [
        ("node", "node-a"),
        ("containerid", "abc123"),
        ("ifname", "eth0"),
        ("namespace", "shop"),
        ("pod", "cart-0"),
    ] {
        assert_eq!(a.attrs.get(k), Some(v), "{k}");
    }
    assert!(a
        .attrs
        .get("timestamp")
        .expect("the attribute is recorded")
        .ends_with('Z'));
    assert_eq!(a.block_affinity.as_deref(), Some("node-a"));
}

/// A bad-input case: what it is, how to run it, the expected code, a word the details name.
type Case = (
    &'static str,
    Box<dyn Fn(&Harness) -> Out>,
    u64,
    &'static str,
);

#[test]
fn bad_input_gets_the_right_code_and_changes_nothing() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        // A small pool, so exhaustion is cheap: one /26 block.
        let small = json!({"ipv4_pools": ["10.99.0.0/26"]});
        h.exec("ADD", "seed", "eth0", &h.conf("1.0.0", small.clone()), "")
            .ok();
        let good = h.conf("1.0.0", json!({}));
        let before = h.snapshot();
        let table: Vec<Case> = vec![
            (
                "malformed JSON",
                Box::new(|h: &Harness| h.exec_raw("ADD", "c1", "eth0", b"{\"cniVersion\":", "")),
                6,
                "",
            ),
            (
                "missing CNI_CONTAINERID",
                Box::new(|h: &Harness| h.exec("ADD", "", "eth0", &h.conf("1.0.0", json!({})), "")),
                4,
                "CNI_CONTAINERID",
            ),
            (
                "missing CNI_IFNAME",
                Box::new(|h: &Harness| h.exec("DEL", "c1", "", &h.conf("1.0.0", json!({})), "")),
                4,
                "CNI_IFNAME",
            ),
            (
                "unknown command",
                Box::new(|h: &Harness| {
                    h.exec("FLY", "c1", "eth0", &h.conf("1.0.0", json!({})), "")
                }),
                4,
                "FLY",
            ),
            (
                "unsupported cniVersion",
                Box::new(|h: &Harness| {
                    h.exec("ADD", "c1", "eth0", &h.conf("0.2.0", json!({})), "")
                }),
                1,
                "0.2.0",
            ),
            (
                "unknown pool",
                Box::new(|h: &Harness| {
                    h.exec(
                        "ADD",
                        "c1",
                        "eth0",
                        &h.conf("1.0.0", json!({"ipv4_pools": ["no-such-pool"]})),
                        "",
                    )
                }),
                7,
                "no-such-pool",
            ),
            (
                "unknown CNI_ARGS key",
                Box::new(|h: &Harness| {
                    h.exec("ADD", "c1", "eth0", &h.conf("1.0.0", json!({})), "FOO=bar")
                }),
                4,
                "FOO",
            ),
            (
                "bad assign_ipv4",
                Box::new(|h: &Harness| {
                    h.exec(
                        "ADD",
                        "c1",
                        "eth0",
                        &h.conf("1.0.0", json!({"assign_ipv4": "yes"})),
                        "",
                    )
                }),
                7,
                "assign_ipv4",
            ),
            (
                "address outside every pool",
                Box::new(|h: &Harness| {
                    h.exec(
                        "ADD",
                        "c1",
                        "eth0",
                        &h.conf("1.0.0", json!({})),
                        "IP=172.31.0.5",
                    )
                }),
                101,
                "172.31.0.5",
            ),
        ];
        for (what, f, code, needle) in &table {
            let out = f(&h);
            assert_eq!(out.error_code(), *code, "{mode:?} {what}: {}", out.stdout);
            let j = out.json();
            assert!(
                j["msg"].is_string() && j["details"].is_string(),
                "{what}: {j}"
            );
            assert!(
                j["details"].as_str().unwrap().contains(needle),
                "{what}: {j}"
            );
        }
        assert!(
            h.snapshot() == before,
            "{mode:?}: bad input changed the store"
        );
        // Exhaustion: fill the block, then one more.
        for i in 0..63 {
            h.exec(
                "ADD",
                &format!("f{i}"),
                "eth0",
                &h.conf("1.0.0", small.clone()),
                "",
            )
            .ok();
        }
        let full = h.snapshot();
        let out = h.exec(
            "ADD",
            "one-more",
            "eth0",
            &h.conf("1.0.0", small.clone()),
            "",
        );
        assert!(out.error_code() >= 100);
        assert!(
            out.json()["details"]
                .as_str()
                .unwrap()
                .contains("10.99.0.0/26"),
            "{}",
            out.stdout
        );
        assert!(
            h.snapshot() == full,
            "{mode:?}: exhaustion changed the store"
        );
        let _ = good;
    });
}

#[test]
fn busy_store_is_try_again_later() {
    let mut h = Harness::new(Mode::Local);
    h.add("c0").ok();
    let before = h.snapshot();
    let lock = h.hold_host_lock();
    let conf = h.conf("1.0.0", json!({"ipam_lock_timeout_seconds": 0.3}));
    let t = std::time::Instant::now();
    let out = h.exec("ADD", "c1", "eth0", &conf, "");
    assert_eq!(out.error_code(), 11, "{}", out.stdout);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    // STATUS reports the same as "not available".
    let mut sc = h.conf("1.1.0", json!({"ipam_lock_timeout_seconds": 0.2}));
    sc.as_object_mut().unwrap().remove("name");
    assert_eq!(h.exec("STATUS", "", "", &sc, "").error_code(), 50);
    drop(lock);
    // The store itself held by another process is the same error.
    let held = SledStore::open(h.path("store"), &SledOptions::default()).unwrap();
    assert_eq!(h.exec("ADD", "c1", "eth0", &conf, "").error_code(), 11);
    drop(held);
    assert!(h.snapshot() == before, "a busy store changed");
    h.exec("ADD", "c1", "eth0", &conf, "").ok();
}

#[test]
fn version_reports_what_is_supported() {
    let h = Harness::new(Mode::Local);
    let out = h.exec_raw("VERSION", "", "", br#"{"cniVersion":"0.4.0"}"#, "");
    let j = out.ok().json();
    assert_eq!(j["cniVersion"], "0.4.0");
    assert_eq!(
        j["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn specific_addresses_from_every_source() {
    both_modes(|mode| {
        let h = Harness::new(mode);
        h.add("seed").ok(); // creates the pool
        let mut c = h.conf("1.1.0", json!({}));
        c["runtimeConfig"] = json!({"ips": ["10.244.200.7/24"]});
        assert_eq!(
            h.exec("ADD", "r1", "eth0", &c, "").ok().ips(),
            ["10.244.200.7/26"]
        );
        let mut c = h.conf("1.1.0", json!({}));
        c["args"] = json!({"cni": {"ips": ["10.244.200.8"]}});
        assert_eq!(
            h.exec("ADD", "r2", "eth0", &c, "").ok().ips(),
            ["10.244.200.8/26"]
        );
        let c = h.conf("1.1.0", json!({}));
        assert_eq!(
            h.exec("ADD", "r3", "eth0", &c, "IP=10.244.200.9")
                .ok()
                .ips(),
            ["10.244.200.9/26"]
        );
        // Taken already: the plugin-specific code, and nothing held by the new container.
        let out = h.exec("ADD", "r4", "eth0", &c, "IP=10.244.200.9");
        assert_eq!(out.error_code(), 101, "{mode:?}");
        let mut chk = c.clone();
        chk["prevResult"] = json!({"ips": [{"address": "10.244.200.9/26"}]});
        assert_eq!(h.exec("CHECK", "r4", "eth0", &chk, "").error_code(), 3);
    });
}

#[test]
fn dual_stack_is_all_or_nothing() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        let ds = json!({"assign_ipv6": "true", "ipv6_pools": ["fd00:10:244::/122"]});
        let out = h.exec("ADD", "d0", "eth0", &h.conf("1.0.0", ds.clone()), "");
        let ips = out.ok().ips();
        assert_eq!(ips.len(), 2);
        assert!(ips[1].starts_with("fd00:10:244::") && ips[1].ends_with("/122"));
        for i in 1..64 {
            h.exec(
                "ADD",
                &format!("d{i}"),
                "eth0",
                &h.conf("1.0.0", ds.clone()),
                "",
            )
            .ok();
        }
        let before = h.holdings();
        let out = h.exec("ADD", "d64", "eth0", &h.conf("1.0.0", ds.clone()), "");
        assert!(out.error_code() >= 100, "{mode:?}: {}", out.stdout);
        let after = h.holdings();
        assert!(
            after == before,
            "{mode:?}: the IPv4 half was not given back ({} vs {} held)",
            after.len(),
            before.len()
        );
    });
}

#[test]
fn gc_releases_what_no_valid_attachment_owns() {
    both_modes(|mode| {
        let h = Harness::new(mode);
        let keep = h.add("keep").ok().ips();
        h.add("stale1").ok();
        h.add("stale2").ok();
        // Another network's allocation is not this GC's business.
        let mut other = h.conf("1.0.0", json!({}));
        other["name"] = json!("othernet");
        let other_ip = h.exec("ADD", "stale1", "eth0", &other, "").ok().ips();
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let mut g = h.conf("1.1.0", json!({}));
            g[key] = json!([{"containerID": "keep", "ifname": "eth0"}]);
            let out = h.exec("GC", "", "", &g, "");
            out.ok();
            assert!(out.stdout.is_empty(), "GC prints nothing: {}", out.stdout);
        }
        assert_eq!(h.add("keep").ok().ips(), keep, "{mode:?}: kept");
        let mut chk = h.conf("1.0.0", json!({}));
        chk["prevResult"] = json!({"ips": []});
        assert_eq!(h.exec("CHECK", "stale1", "eth0", &chk, "").error_code(), 3);
        assert_eq!(
            h.exec("ADD", "stale1", "eth0", &other, "").ok().ips(),
            other_ip
        );
        // GC without the list is refused, not taken as "nothing is valid".
        assert_eq!(
            h.exec("GC", "", "", &h.conf("1.1.0", json!({})), "")
                .error_code(),
            7
        );
    });
}

#[test]
fn status_reports_readiness() {
    let mut h = Harness::new(Mode::Local);
    let small = json!({"ipv4_pools": ["10.99.0.0/26"]});
    let st = h.conf("1.1.0", small.clone());
    h.exec("STATUS", "", "", &st, "").ok();
    for i in 0..64 {
        h.exec(
            "ADD",
            &format!("f{i}"),
            "eth0",
            &h.conf("1.1.0", small.clone()),
            "",
        )
        .ok();
    }
    let out = h.exec("STATUS", "", "", &st, "");
    assert_eq!(out.error_code(), 50, "{}", out.stdout);
    assert!(out.json()["details"]
        .as_str()
        .unwrap()
        .contains("10.99.0.0/26"));
    assert_eq!(
        h.exec("STATUS", "", "", &h.conf("1.0.0", small), "")
            .error_code(),
        1
    );
    let _ = h.snapshot();
}

#[test]
fn strict_affinity_from_the_cluster_config_applies() {
    let mut h = Harness::new(Mode::Local);
    h.add("c0").ok();
    let _ = h.snapshot();
    {
        let ipam = Ipam::new(
            SledStore::open(h.path("store"), &SledOptions::default()).unwrap(),
            Arc::new(SystemClock),
        );
        ipam.set_config(IpamConfig {
            strict_affinity: true,
            max_blocks_per_host: 1,
            ..Default::default()
        })
        .unwrap();
    }
    let mut seen = BTreeSet::new();
    for i in 1..64 {
        seen.insert(h.add(&format!("c{i}")).ok().ips()[0].clone());
    }
    assert_eq!(seen.len(), 63);
    let out = h.add("c64");
    assert!(out.error_code() >= 100);
    assert!(out.json()["details"]
        .as_str()
        .unwrap()
        .contains("strict affinity"));
}

#[test]
fn logs_go_to_the_log_file_not_stdout() {
    let h = Harness::new(Mode::Local);
    let out = h.add("c1");
    let j: Value = out.ok().json();
    assert!(j.is_object());
    let log = std::fs::read_to_string(h.path("cni.log")).unwrap();
    assert!(log.contains("testnet.c1"), "{log}");
}

#[test]
fn under_the_service_the_plugin_still_writes_its_log_file() {
    let h = Harness::new(Mode::Service);
    let conf = h.conf("1.0.0", json!({}));
    h.exec("ADD", "logged-pod", "eth0", &conf, "").ok();
    let bad = h.exec("ADD", "other-pod", "eth0", &conf, "IP=10.99.0.1");
    assert_ne!(bad.code, 0);
    let log = std::fs::read_to_string(h.path("cni.log")).unwrap();
    assert!(
        log.contains("container=logged-pod") && log.contains("exit=0"),
        "{log}"
    );
    assert!(
        log.contains("container=other-pod") && log.contains("WARN"),
        "{log}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.path("cni.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "log file mode {mode:o}");
}

#[test]
fn reservations_are_never_handed_out() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        h.stop_service();
        let ctl = |h: &Harness, rest: &[&str]| {
            let mut a = vec![
                "ipamctl".to_string(),
                "--sled-path".into(),
                h.path("store").display().to_string(),
                "--socket".into(),
                "/nonexistent.sock".into(),
            ];
            a.extend(rest.iter().map(|s| s.to_string()));
            ipamctl::cli::run_args(a)
        };
        let o = ctl(
            &h,
            &[
                "pool",
                "add",
                "small",
                "10.244.0.0/28",
                "--block-size",
                "28",
            ],
        );
        assert_eq!(o.exit_code, 0, "{}", o.stdout);
        // A holder before the reservation keeps its address.
        let conf = h.conf("1.0.0", json!({"ipv4_pools": ["small"]}));
        let early = h.exec("ADD", "early", "eth0", &conf, "IP=10.244.0.2");
        early.ok();
        let o = ctl(&h, &["reservation", "add", "low-half", "10.244.0.0/29"]);
        assert_eq!(o.exit_code, 0, "{}", o.stdout);
        assert!(o.stdout.contains("1 addresses inside it"), "{}", o.stdout);
        if mode == Mode::Service {
            h.start_service();
        }
        // Eight addresses remain outside the reservation: exactly those are handed out.
        let mut got = Vec::new();
        for i in 0..8 {
            let o = h.exec("ADD", &format!("c{i}"), "eth0", &conf, "");
            got.extend(o.ok().ips());
        }
        got.sort();
        let want: Vec<String> = (8..16).map(|o| format!("10.244.0.{o}/28")).collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{mode:?}");
        let full = h.exec("ADD", "c8", "eth0", &conf, "");
        assert_eq!(full.error_code(), 100);
        // A request for a reserved address is refused, naming the reservation.
        let o = h.exec("ADD", "wants-3", "eth0", &conf, "IP=10.244.0.3");
        assert_eq!(o.error_code(), 101);
        assert!(o.stdout.contains("low-half"), "{}", o.stdout);
        // The early holder is still there, and check reports it.
        assert!(h.holdings().iter().any(|(_, ip)| ip == "10.244.0.2"));
        h.stop_service();
        let o = ctl(&h, &["check"]);
        assert!(o.stdout.contains("held-inside-reservation"), "{}", o.stdout);
        let o = ctl(&h, &["reservation", "delete", "low-half"]);
        assert_eq!(o.exit_code, 0, "{}", o.stdout);
        h.exec("ADD", "wants-3", "eth0", &conf, "IP=10.244.0.3")
            .ok();
    });
}
