//! Regression tests for who owns an address, through the real binary: attachments of networks
//! whose names contain dots, repeated ADDs with specific addresses, Calico's legacy handle
//! form, readiness per node, and input limits.

mod common;

use common::*;
use ipam_core::{AssignIpArgs, HostReserved, Ipam, IpamConfig, Pool, Selector};
use ipam_store::{SledOptions, SledStore, SystemClock};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn named(h: &Harness, network: &str) -> Value {
    let mut c = h.conf("1.1.0", json!({}));
    c["name"] = json!(network);
    c
}

/// Opens the harness's store directly (no call may be running).
fn with_store<T>(h: &Harness, f: impl FnOnce(&Ipam<SledStore>) -> T) -> T {
    let s = SledStore::open(h.path("store"), &SledOptions::default()).unwrap();
    let ipam = Ipam::new(s, Arc::new(SystemClock));
    f(&ipam)
}

#[test]
fn dotted_network_and_container_names_never_share_an_address() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        // Network "a" + container "b.c" and network "a.b" + container "c" were one handle.
        let first = h.exec("ADD", "b.c", "eth0", &named(&h, "a"), "");
        let second = h.exec("ADD", "c", "eth0", &named(&h, "a.b"), "");
        let (ip1, ip2) = (first.ok().ips(), second.ok().ips());
        assert_eq!(ip1.len(), 1);
        assert_ne!(ip1, ip2, "{mode:?}: one address handed to two attachments");
        let holdings = h.holdings();
        assert_eq!(holdings.len(), 2, "{holdings:?}");
        assert_ne!(holdings[0].0, holdings[1].0, "{holdings:?}");

        // GC of network "a" with its attachment valid leaves network "a.b" alone.
        let mut gc = named(&h, "a");
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "b.c", "ifname": "eth0"}]);
        h.exec("GC", "", "", &gc, "").ok();
        assert_eq!(h.holdings().len(), 2);

        // DEL of one frees its own address only.
        h.exec("DEL", "c", "eth0", &named(&h, "a.b"), "").ok();
        let left = h.holdings();
        assert_eq!(left.len(), 1);
        assert_eq!(format!("{}/26", left[0].1), ip1[0]);
        h.exec("DEL", "b.c", "eth0", &named(&h, "a"), "").ok();
        assert!(h.holdings().is_empty());
    });
}

#[test]
fn stores_written_with_unescaped_handles_are_read_per_container() {
    let mut h = Harness::new(Mode::Local);
    // Create the pool through the plugin, then plant what an older build wrote: both
    // attachments under handle "a.b.c", told apart only by their containerid attribute.
    h.exec("ADD", "seed", "eth0", &named(&h, "seed"), "").ok();
    let planted: Vec<String> = with_store(&h, |ipam| {
        [("10.244.7.10", "b.c"), ("10.244.7.11", "c")]
            .iter()
            .map(|(ip, cid)| {
                let attrs = BTreeMap::from([
                    ("containerid".to_string(), cid.to_string()),
                    ("ifname".to_string(), "eth0".to_string()),
                ]);
                ipam.assign_ip(&AssignIpArgs {
                    ip: ip.parse().unwrap(),
                    handle_id: "a.b.c".into(),
                    attrs,
                    node: "node-a".into(),
                    host_reserved: HostReserved::default(),
                })
                .unwrap();
                ip.to_string()
            })
            .collect()
    });
    // A repeated ADD finds each attachment's own legacy address.
    let a = h.exec("ADD", "b.c", "eth0", &named(&h, "a"), "");
    assert_eq!(a.ok().ips(), vec![format!("{}/26", planted[0])]);
    let ab = h.exec("ADD", "c", "eth0", &named(&h, "a.b"), "");
    assert_eq!(ab.ok().ips(), vec![format!("{}/26", planted[1])]);
    // GC of "a" with nothing valid frees network a's address, not a.b's.
    let mut gc = named(&h, "a");
    gc["cni.dev/valid-attachments"] = json!([]);
    h.exec("GC", "", "", &gc, "").ok();
    let left: Vec<String> = h.holdings().into_iter().map(|(_, ip)| ip).collect();
    assert!(!left.contains(&planted[0]), "{left:?}");
    assert!(left.contains(&planted[1]), "{left:?}");
    // DEL of a.b's attachment frees the legacy address.
    h.exec("DEL", "c", "eth0", &named(&h, "a.b"), "").ok();
    let left: Vec<String> = h.holdings().into_iter().map(|(_, ip)| ip).collect();
    assert!(!left.contains(&planted[1]), "{left:?}");
}

#[test]
fn a_second_add_with_another_requested_address_assigns_it() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        let conf = h.conf("1.0.0", json!({}));
        let one = h.exec("ADD", "multi", "eth0", &conf, "IP=10.244.3.5");
        assert_eq!(one.ok().ips(), vec!["10.244.3.5/26"]);
        let two = h.exec("ADD", "multi", "eth0", &conf, "IP=10.244.3.6");
        assert_eq!(two.ok().ips(), vec!["10.244.3.6/26"], "{mode:?}");
        let held: Vec<String> = h.holdings().into_iter().map(|(_, ip)| ip).collect();
        assert_eq!(held, vec!["10.244.3.5", "10.244.3.6"]);
        // Asking again for one already held returns it and takes nothing more.
        let again = h.exec("ADD", "multi", "eth0", &conf, "IP=10.244.3.5");
        assert_eq!(again.ok().ips(), vec!["10.244.3.5/26"]);
        assert_eq!(h.holdings().len(), 2);
        // Another attachment asking for a held address is refused clearly.
        let other = h.exec("ADD", "other", "eth0", &conf, "IP=10.244.3.6");
        assert_eq!(other.error_code(), 101);
        assert!(other.json()["details"]
            .as_str()
            .unwrap()
            .contains("10.244.3.6"));
        // One DEL frees both.
        h.exec("DEL", "multi", "eth0", &conf, "").ok();
        assert!(h.holdings().is_empty());
    });
}

#[test]
fn specific_addresses_are_all_or_nothing() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        let conf = h.conf("1.0.0", json!({}));
        h.exec("ADD", "holder", "eth0", &conf, "IP=10.244.9.9").ok();
        // The first address is free, the second held: neither is taken.
        let out = h.exec("ADD", "both", "eth0", &conf, "IP=10.244.9.8,10.244.9.9");
        assert_eq!(out.error_code(), 101, "{mode:?}");
        let held: Vec<String> = h.holdings().into_iter().map(|(_, ip)| ip).collect();
        assert_eq!(held, vec!["10.244.9.9"]);
    });
}

#[test]
fn del_releases_calicos_namespace_pod_handle() {
    let mut h = Harness::new(Mode::Local);
    let conf = h.conf("1.0.0", json!({}));
    h.exec("ADD", "seed", "eth0", &conf, "").ok();
    h.exec("DEL", "seed", "eth0", &conf, "").ok();
    with_store(&h, |ipam| {
        let attrs = BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("pod".to_string(), "web".to_string()),
        ]);
        ipam.assign_ip(&AssignIpArgs {
            ip: "10.244.0.20".parse().unwrap(),
            handle_id: "default.web".into(),
            attrs,
            node: "node-a".into(),
            host_reserved: HostReserved::default(),
        })
        .unwrap();
    });
    assert_eq!(h.holdings().len(), 1);
    // Another pod's DEL leaves it.
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=api";
    h.exec("DEL", "sandbox1", "eth0", &conf, args).ok();
    assert_eq!(h.holdings().len(), 1);
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";
    h.exec("DEL", "sandbox1", "eth0", &conf, args).ok();
    assert!(h.holdings().is_empty());
}

#[test]
fn status_answers_for_this_node() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        h.stop_service();
        with_store(&h, |ipam| {
            // Two blocks of four; strict affinity, one block per node.
            let pool = Pool::with_block_size("tiny", "10.244.0.0/29".parse().unwrap(), 30).unwrap();
            ipam.create_pool(pool).unwrap();
            ipam.set_config(IpamConfig {
                strict_affinity: true,
                max_blocks_per_host: 1,
                ..IpamConfig::default()
            })
            .unwrap();
        });
        if mode == Mode::Service {
            h = restart(h);
        }
        let conf = |h: &Harness, node: &str| {
            h.conf(
                "1.1.0",
                json!({"nodename": node, "ipv4_pools": ["10.244.0.0/29"]}),
            )
        };
        let a = conf(&h, "node-a");
        for i in 0..4 {
            h.exec("ADD", &format!("a{i}"), "eth0", &a, "").ok();
        }
        h.exec("ADD", "b0", "eth0", &conf(&h, "node-b"), "").ok();
        // node-b's block still has room, but node-a may use only its own, which is full.
        assert_eq!(h.exec("ADD", "a4", "eth0", &a, "").error_code(), 100);
        let st = h.exec("STATUS", "", "", &a, "");
        assert_eq!(st.error_code(), 50, "{mode:?}: {}", st.stdout);
        h.exec("STATUS", "", "", &conf(&h, "node-b"), "").ok();
        h.exec("DEL", "a0", "eth0", &a, "").ok();
        h.exec("STATUS", "", "", &a, "").ok();

        // A node no pool selects is not ready either.
        h.stop_service();
        with_store(&h, |ipam| {
            ipam.update_pool("tiny", |p| {
                p.node_selector = Selector::parse("zone == 'east'").unwrap()
            })
            .unwrap();
        });
        if mode == Mode::Service {
            h = restart(h);
        }
        let c = conf(&h, "node-c");
        let mut c = c.clone();
        c["ipam"]["ipv4_pools"] = json!([]);
        assert_eq!(h.exec("STATUS", "", "", &c, "").error_code(), 50);
    });
}

fn restart(h: Harness) -> Harness {
    // The harness restarts its service on the same directory after a snapshot.
    let mut h = h;
    let _ = h.snapshot();
    h
}

#[test]
fn input_limits_are_clear_errors() {
    let mut h = Harness::new(Mode::Local);
    let conf = h.conf("1.0.0", json!({}));
    let long_if = "e".repeat(100_000);
    let out = h.exec("ADD", "c1", &long_if, &conf, "");
    assert_eq!(out.error_code(), 4);
    assert!(
        out.stdout.len() < 1_000,
        "{} bytes echoed",
        out.stdout.len()
    );
    for bad in ["a/b", "..", "eth 0", "sixteen-chars-xx"] {
        assert_eq!(h.exec("ADD", "c1", bad, &conf, "").error_code(), 4, "{bad}");
    }
    let long_cid = "a".repeat(123_000);
    let out = h.exec("ADD", &long_cid, "eth0", &conf, "");
    assert_eq!(out.error_code(), 4);
    assert!(
        out.stdout.len() < 1_000,
        "{} bytes echoed",
        out.stdout.len()
    );

    let mut big = conf.clone();
    big["padding"] = json!("x".repeat(5 << 20));
    let out = h.exec("ADD", "c1", "eth0", &big, "");
    assert_eq!(out.error_code(), 7);
    assert!(out.json()["details"].as_str().unwrap().contains("bytes"));

    let overlap = h.conf(
        "1.0.0",
        json!({"ipv4_pools": ["10.244.0.0/16", "10.244.1.0/24"]}),
    );
    let out = h.exec("ADD", "c1", "eth0", &overlap, "");
    assert_eq!(out.error_code(), 7);
    let d = out.json()["details"].as_str().unwrap().to_string();
    assert!(d.contains("10.244.1.0/24") && d.contains("overlap"), "{d}");
    assert!(h.holdings().is_empty());
}

#[test]
fn oversized_config_through_the_service_is_refused_not_retried() {
    let h = Harness::new(Mode::Service);
    let mut big = h.conf("0.4.0", json!({}));
    big["padding"] = json!("x".repeat(5 << 20));
    let out = h.exec("ADD", "c1", "eth0", &big, "");
    assert_eq!(
        out.error_code(),
        7,
        "{}",
        &out.stdout[..out.stdout.len().min(300)]
    );
    // Refused for its size, the error still speaks the config's version.
    assert_eq!(out.json()["cniVersion"], "0.4.0", "{}", out.stdout);
}
