//! The command line end to end: flags, `--cni-config`, files written, exit codes, a corrupt
//! record on a real sled store, and the same commands through the node service.

use ipam_core::{AutoAssignArgs, Ipam, Key, Pool};
use ipam_store::{SledOptions, SledStore, SystemClock};
use ipamctl::cli::run_args;
use ipamctl::{Outcome, EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// How long a test waits for sled to let go of a store it just closed.
const RAW_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn prepare(store: &Path) {
    let ipam = Ipam::new(
        SledStore::open(store, &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    );
    ipam.create_pool(Pool::new("p", "10.244.0.0/24".parse().unwrap()).unwrap())
        .unwrap();
    for i in 0..3 {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("h{i}"), 1))
            .unwrap();
    }
}

fn args(store: &Path, rest: &[&str]) -> Vec<String> {
    let mut v = vec![
        "ipamctl".to_string(),
        "--sled-path".into(),
        store.display().to_string(),
    ];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

#[cfg(feature = "etcd")]
use ipam_test_support::etcd_endpoint;

/// `ipamctl` with a CNI config, written in `dir`, that names etcd at `ep` under a prefix of
/// the test's own (`name`).
#[cfg(feature = "etcd")]
fn etcd_ctl(dir: &Path, ep: &str, name: &str) -> impl Fn(&[&str]) -> Outcome {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        serde_json::json!({"cniVersion": "1.0.0", "name": "k", "type": "calico",
            "datastore_type": "etcdv3", "etcd_endpoints": ep,
            "etcd_prefix": format!("/ipamctl-{name}-{}/", std::process::id()),
            "ipamd_socket": dir.join("none.sock"), "ipam": {"type": "calico-ipam"}})
        .to_string(),
    )
    .expect("the config is written");
    move |rest: &[&str]| {
        let mut v = vec![
            "ipamctl",
            "--cni-config",
            conf.to_str().expect("a UTF-8 path"),
        ];
        v.extend(rest);
        run_args(v)
    }
}

#[test]
fn commands_on_a_sled_store_and_through_a_cni_config() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    let o = run_args(args(&store, &["show", "-o", "json"]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["pools"][0]["in_use"], 3);
    let conf = d.path().join("net.conf");
    std::fs::write(
        &conf,
        format!(r#"{{"cniVersion":"0.3.1","name":"k8s","type":"calico","ipam":{{"type":"calico-ipam","sled_path":"{}","ipamd_socket":"{}"}}}}"#,
            store.display(), d.path().join("none.sock").display()),
    )
    .unwrap();
    let o = run_args([
        "ipamctl",
        "--cni-config",
        conf.to_str().unwrap(),
        "show",
        "--blocks",
    ]);
    assert_eq!(o.exit_code, EXIT_OK);
    assert!(o.stdout.contains("3/64"), "{}", o.stdout);
    let svg = d.path().join("map.svg");
    let o = run_args(args(&store, &["map", "--svg", svg.to_str().unwrap()]));
    assert_eq!(o.exit_code, EXIT_OK);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    assert_eq!(
        run_args(args(&store, &["release"])).exit_code,
        2,
        "usage error"
    );
    assert_eq!(run_args(args(&store, &["frobnicate"])).exit_code, 2);
}

#[test]
fn check_reports_a_record_that_does_not_decode() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    {
        let raw = ipam_store::sled::open_raw(&store, RAW_WAIT).unwrap();
        raw.insert(
            ipam_store::sled::keys::encode(&Key::Handle("h1".into())),
            &b"\x01garbage"[..],
        )
        .unwrap();
        raw.flush().unwrap();
    }
    let o = run_args(args(&store, &["check", "-o", "json"]));
    assert_eq!(o.exit_code, EXIT_PROBLEMS, "{}", o.stdout);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"record-does-not-decode"), "{kinds:?}");
    assert!(o.stdout.contains("handle h1"), "{}", o.stdout);
}

#[test]
fn through_the_node_service() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    let sock = d.path().join("ipamd.sock");
    let ipam = Arc::new(Ipam::new(
        SledStore::open(&store, &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    ));
    let listener = ipamd::bind(&sock).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        ipamd::serve(listener, ipam, s, Arc::new(ipamd::Stats::default())).unwrap()
    });
    // The service holds the store: ipamctl must go through it.
    let report = d.path().join("report.json");
    let o = run_args(args(
        &store,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--lock-timeout-seconds",
            "1",
            "check",
            "--report",
            report.to_str().unwrap(),
        ],
    ));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(report.exists(), "the client wrote the report");
    let o = run_args(args(
        &store,
        &["--socket", sock.to_str().unwrap(), "show", "-o", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["pools"][0]["in_use"], 3);
    let o = run_args(args(
        &store,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "configure",
            "--ip-cooldown-seconds",
            "5000",
        ],
    ));
    assert_eq!(o.exit_code, 1, "validation error comes back: {}", o.stdout);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    ipamd::wake(&sock);
    t.join().unwrap();
}

fn corrupt(store: &Path, key: &Key) {
    let raw = ipam_store::sled::open_raw(store, RAW_WAIT).unwrap();
    raw.insert(ipam_store::sled::keys::encode(key), &b"\x01garbage"[..])
        .unwrap();
    raw.flush().unwrap();
}

fn problem_kinds(stdout: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["kind"], p["description"]))
        .collect()
}

#[test]
fn check_reports_a_configuration_that_does_not_decode() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    corrupt(&store, &Key::Config);
    let o = run_args(args(&store, &["check", "-o", "json"]));
    assert_eq!(o.exit_code, EXIT_PROBLEMS, "{}", o.stdout);
    let kinds = problem_kinds(&o.stdout);
    assert!(
        kinds.iter().any(|k| k.contains("record-does-not-decode")),
        "{kinds:?}"
    );
}

#[test]
fn check_reports_a_claim_index_chunk_that_does_not_decode() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    corrupt(
        &store,
        &Key::IndexChunk {
            pool: "10.244.0.0/24".parse().unwrap(),
            chunk: 0,
        },
    );
    let o = run_args(args(&store, &["check", "-o", "json"]));
    assert_eq!(o.exit_code, EXIT_PROBLEMS, "{}", o.stdout);
    let kinds = problem_kinds(&o.stdout);
    assert!(
        kinds.iter().any(|k| k.contains("record-does-not-decode")),
        "{kinds:?}"
    );
}

#[test]
fn a_conflist_names_the_store_and_read_only_commands_create_none() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    let list = d.path().join("87-podman.conflist");
    std::fs::write(
        &list,
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "podman",
            "plugins": [
                {"type": "bridge", "bridge": "cni-podman0",
                 "ipam": {"type": "calico-ipam", "sled_path": store,
                          "ipamd_socket": d.path().join("none.sock")}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let o = run_args([
        "ipamctl",
        "--cni-config",
        list.to_str().unwrap(),
        "show",
        "-o",
        "json",
    ]);
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["pools"][0]["in_use"], 3);

    // A store that is not there is an error for show, check and map, and is not created.
    let missing = d.path().join("typo");
    for cmd in [&["show"][..], &["check"], &["pool", "list"]] {
        let o = run_args(args(&missing, cmd));
        assert_eq!(o.exit_code, 1, "{cmd:?}: {}", o.stdout);
        assert!(o.stdout.contains("no IPAM store"), "{}", o.stdout);
        assert!(!missing.exists(), "{cmd:?} created a store");
    }
}

#[test]
fn a_named_store_is_not_answered_by_a_service_serving_another() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    prepare(&a);
    {
        let ipam = Ipam::new(
            SledStore::open(&b, &SledOptions::default()).unwrap(),
            Arc::new(SystemClock),
        );
        ipam.create_pool(Pool::new("other", "10.99.0.0/24".parse().unwrap()).unwrap())
            .unwrap();
    }
    let sock = d.path().join("ipamd.sock");
    let ipam = Arc::new(Ipam::new(
        SledStore::open(&a, &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    ));
    let listener = ipamd::bind(&sock).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let id = ipam_store::StoreSpec::sled(&a).identity();
    let t = std::thread::spawn(move || {
        ipamd::serve_store(
            listener,
            ipam,
            s,
            Arc::new(ipamd::Stats::default()),
            Some(id),
        )
        .unwrap()
    });
    let show = |store: &Path| {
        let o = run_args(args(
            store,
            &["--socket", sock.to_str().unwrap(), "show", "-o", "json"],
        ));
        assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["pools"][0]["name"].as_str().unwrap().to_string()
    };
    assert_eq!(show(&b), "other", "store b, not the service's a");
    assert_eq!(show(&a), "p");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    ipamd::wake(&sock);
    t.join().unwrap();
}

#[test]
fn check_compares_allocations_with_workload_endpoints() {
    use ipam_core::{AssignIpArgs, Endpoint, HostReserved};
    use std::collections::BTreeMap;
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    {
        let ipam = Ipam::new(
            SledStore::open(&store, &SledOptions::default()).unwrap(),
            Arc::new(SystemClock),
        );
        ipam.create_pool(Pool::new("p", "10.244.0.0/24".parse().unwrap()).unwrap())
            .unwrap();
        // Two pods of network "k8s" as calico-ipam records them; only the first is wired.
        for (ip, cid) in [("10.244.0.10", "wired"), ("10.244.0.11", "gone")] {
            let attrs = BTreeMap::from([
                ("network".to_string(), "k8s".to_string()),
                ("containerid".to_string(), cid.to_string()),
                ("ifname".to_string(), "eth0".to_string()),
                ("timestamp".to_string(), "2026-01-01T00:00:00Z".to_string()),
            ]);
            ipam.assign_ip(&AssignIpArgs {
                ip: ip.parse().unwrap(),
                handle_id: format!("k8s.{cid}"),
                attrs,
                node: "n1".into(),
                host_reserved: HostReserved::default(),
            })
            .unwrap();
        }
        let ep = |cid: &str, ip: &str| Endpoint {
            node: "n1".into(),
            id: format!("k8s.{cid}/eth0"),
            network: "k8s".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            handle_id: format!("k8s.{cid}"),
            namespace: Some("default".into()),
            pod: Some(cid.into()),
            host_ifname: "cali0123456789a".into(),
            mac: "02:00:00:00:00:01".into(),
            addresses: vec![ip.parse().unwrap()],
        };
        ipam.put_endpoint(&ep("wired", "10.244.0.10/32")).unwrap();
        // An endpoint whose address nobody holds.
        ipam.put_endpoint(&ep("stale", "10.244.0.12/32")).unwrap();
    }
    let o = run_args(args(&store, &["show", "--endpoints", "--node", "n1"]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(
        o.stdout.contains("default/wired") && o.stdout.contains("10.244.0.10/32"),
        "{}",
        o.stdout
    );

    let report = d.path().join("report.json");
    let o = run_args(args(
        &store,
        &["check", "--report", report.to_str().unwrap()],
    ));
    assert_eq!(o.exit_code, EXIT_PROBLEMS, "{}", o.stdout);
    assert!(
        o.stdout.contains("address-without-endpoint"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("10.244.0.11"), "{}", o.stdout);
    assert!(
        o.stdout.contains("endpoint-without-address"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("10.244.0.10 is held"), "{}", o.stdout);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["release"].as_array().unwrap().len(), 1, "{r}");
    let o = run_args(args(
        &store,
        &["release", "--from-report", report.to_str().unwrap()],
    ));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let o = run_args(args(&store, &["show", "--ip", "10.244.0.11"]));
    assert!(o.stdout.contains("not allocated"), "{}", o.stdout);
    let o = run_args(args(&store, &["show", "--ip", "10.244.0.10"]));
    assert!(
        o.stdout.contains("held by handle k8s.wired"),
        "{}",
        o.stdout
    );
    // A young allocation is not a leak candidate yet.
    let o = run_args(args(&store, &["check", "--grace-seconds", "100000000000"]));
    assert!(
        !o.stdout.contains("address-without-endpoint"),
        "{}",
        o.stdout
    );
}

#[test]
fn a_service_cannot_make_ipamctl_write_files_it_did_not_ask_for() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("svc.sock");
    let evil = d.path().join("evil");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let evil_path = evil.display().to_string();
    let t = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let _: ipam_cni::protocol::Request = ipam_cni::protocol::read_frame(&mut c).unwrap();
        let resp = ipam_cni::protocol::Response {
            version: ipam_cni::protocol::VERSION,
            stdout: "ok\n".into(),
            files: vec![(evil_path, "written by the service".into())],
            ..Default::default()
        };
        ipam_cni::protocol::write_frame(&mut c, &resp).unwrap();
    });
    let o = run_args(["ipamctl", "--socket", sock.to_str().unwrap(), "show"]);
    t.join().unwrap();
    assert_eq!(o.exit_code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("did not ask for"), "{}", o.stdout);
    assert!(!evil.exists());
}

#[test]
fn pool_update_changes_what_may_change_and_node_labels_select_pools() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    let o = run_args(args(
        &store,
        &[
            "pool",
            "update",
            "p",
            "--node-selector",
            "zone == 'east'",
            "--mode",
            "automatic",
            "-o",
            "json",
        ],
    ));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["node_selector"], "zone == 'east'");
    // The CIDR and block size are immutable, with a clear error.
    let o = run_args(args(&store, &["pool", "update", "p", "--block-size", "28"]));
    assert_eq!(o.exit_code, 1);
    assert!(o.stdout.contains("immutable"), "{}", o.stdout);
    let o = run_args(args(&store, &["pool", "update", "p", "--mode", "sideways"]));
    assert_eq!(o.exit_code, 1, "{}", o.stdout);
    // A node without the label gets nothing from the pool; labelled, it does.
    let assign = |node: &str| {
        let ipam = Ipam::new(
            SledStore::open(&store, &SledOptions::default()).unwrap(),
            Arc::new(SystemClock),
        );
        ipam.auto_assign(&AutoAssignArgs::v4(node, &format!("h-{node}"), 1))
    };
    assert!(
        assign("n9").is_err(),
        "a node no pool selects got an address"
    );
    let o = run_args(args(&store, &["node", "set", "n9", "--label", "zone=east"]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(assign("n9").is_ok());
    let o = run_args(args(&store, &["pool", "update", "p", "--disabled", "true"]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(
        assign("n9").is_err(),
        "a disabled pool handed out an address"
    );
}

/// Runs the real `ipamctl` binary.
fn bin(argv: &[String]) -> ipamctl::Outcome {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ipamctl"))
        .args(&argv[1..])
        .output()
        .unwrap();
    ipamctl::Outcome {
        stdout: String::from_utf8_lossy(&o.stdout).to_string(),
        exit_code: o.status.code().unwrap_or(-1),
        files: Vec::new(),
    }
}

fn state_of(doc: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    assert_eq!(v["format"], "calico-ipam-export");
    assert_eq!(v["version"], 1);
    v["state"].clone()
}

#[test]
fn export_and_import_round_trip_between_stores() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    prepare(&a);
    let o = bin(&args(
        &a,
        &[
            "node",
            "set",
            "n1",
            "--address",
            "172.18.0.3",
            "--label",
            "zone=a",
        ],
    ));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let f = d.path().join("state.json");
    let f = f.to_str().unwrap();
    let o = bin(&args(&a, &["export", "-f", f]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let doc = std::fs::read_to_string(f).unwrap();
    let original = state_of(&doc);
    assert_eq!(original["blocks"].as_array().unwrap().len(), 1);
    assert_eq!(original["handles"].as_array().unwrap().len(), 3);

    // Into a new sled store, and back out: the same state.
    let o = bin(&args(&b, &["import", f]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let o = bin(&args(&b, &["export"]));
    assert_eq!(state_of(&o.stdout), original);
    let o = bin(&args(&b, &["check"]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);

    // Over a non-empty store: refused, said so by a dry run, done with --force.
    let o = bin(&args(&a, &["import", "--dry-run", f]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(o.stdout.contains("would be refused"), "{}", o.stdout);
    let o = bin(&args(&a, &["import", f]));
    assert_eq!(o.exit_code, 1);
    assert!(o.stdout.contains("not empty"), "{}", o.stdout);
    let o = bin(&args(&a, &["import", "--force", f]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert_eq!(state_of(&bin(&args(&a, &["export"])).stdout), original);

    // A document whose state breaks an invariant is refused before anything is written.
    let mut bad: serde_json::Value = serde_json::from_str(&doc).unwrap();
    bad["state"]["handles"].as_array_mut().unwrap().pop();
    let badf = d.path().join("bad.json");
    std::fs::write(&badf, bad.to_string()).unwrap();
    let c = d.path().join("c");
    let o = bin(&args(&c, &["import", badf.to_str().unwrap()]));
    assert_eq!(o.exit_code, 1);
    assert!(o.stdout.contains("inconsistent"), "{}", o.stdout);
}

#[cfg(feature = "etcd")]
#[test]
fn export_and_import_through_etcd() {
    let Some(ep) = etcd_endpoint() else { return };
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    prepare(&a);
    let f = d.path().join("state.json");
    let f = f.to_str().unwrap();
    assert_eq!(run_args(args(&a, &["export", "-f", f])).exit_code, EXIT_OK);
    let original = state_of(&std::fs::read_to_string(f).unwrap());
    let etcd = etcd_ctl(d.path(), &ep, "export");
    let o = etcd(&["import", f]);
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    let o = etcd(&["export"]);
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert_eq!(state_of(&o.stdout), original, "sled -> etcd");
    let back = d.path().join("back.json");
    std::fs::write(&back, &o.stdout).unwrap();
    let c = d.path().join("c");
    assert_eq!(
        run_args(args(&c, &["import", back.to_str().unwrap()])).exit_code,
        EXIT_OK
    );
    assert_eq!(
        state_of(&run_args(args(&c, &["export"])).stdout),
        original,
        "etcd -> sled"
    );
}

/// Splits pool `p` of a store reached with `ctl`, and checks that nothing moved.
fn split_and_check(ctl: &dyn Fn(&[&str]) -> ipamctl::Outcome) {
    let before: serde_json::Value =
        serde_json::from_str(&ctl(&["show", "--blocks", "-o", "json"]).stdout).unwrap();
    let o = ctl(&["pool", "split", "p", "--into", "2"]);
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(
        o.stdout
            .contains("p-0 (10.244.0.0/25), p-1 (10.244.0.128/25)"),
        "{}",
        o.stdout
    );
    let after: serde_json::Value =
        serde_json::from_str(&ctl(&["show", "--blocks", "-o", "json"]).stdout).unwrap();
    let strip = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| (b["cidr"].clone(), b["node"].clone(), b["addresses"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&before),
        strip(&after),
        "allocations or affinities moved"
    );
    let o = ctl(&["check"]);
    assert_eq!(o.exit_code, EXIT_OK, "claim indexes rebuilt: {}", o.stdout);
    let o = ctl(&["pool", "split", "p-0", "--into", "4"]);
    assert_eq!(
        o.exit_code, 1,
        "a /25 of /26 blocks cannot become four /27s"
    );
    assert!(
        o.stdout.contains("smaller than its /26 blocks"),
        "{}",
        o.stdout
    );
}

#[test]
fn pool_split_keeps_every_allocation_on_sled() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    prepare(&store);
    {
        let ipam = Ipam::new(
            SledStore::open(&store, &SledOptions::default()).unwrap(),
            Arc::new(SystemClock),
        );
        for (i, n) in ["n2", "n3"].iter().enumerate() {
            ipam.auto_assign(&AutoAssignArgs::v4(n, &format!("x{i}"), 2))
                .unwrap();
        }
    }
    split_and_check(&|rest: &[&str]| bin(&args(&store, rest)));
    // New claims go through the new pools' indexes.
    let ipam = Ipam::new(
        SledStore::open(&store, &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    );
    let got = ipam.auto_assign(&AutoAssignArgs::v4("n4", "y", 1)).unwrap();
    assert!(ipam.audit().unwrap().is_empty());
    assert!(got.v4.ips[0].ip.to_string().starts_with("10.244.0."));
}

#[cfg(feature = "etcd")]
#[test]
fn pool_split_keeps_every_allocation_on_etcd() {
    let Some(ep) = etcd_endpoint() else { return };
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    prepare(&a);
    let f = d.path().join("state.json");
    assert_eq!(
        run_args(args(&a, &["export", "-f", f.to_str().unwrap()])).exit_code,
        EXIT_OK
    );
    let etcd = etcd_ctl(d.path(), &ep, "split");
    assert_eq!(etcd(&["import", f.to_str().unwrap()]).exit_code, EXIT_OK);
    split_and_check(&etcd);
}

#[test]
fn check_flags_allocations_older_than_a_limit() {
    use ipam_core::{AssignIpArgs, HostReserved};
    use std::collections::BTreeMap;
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    {
        let ipam = Ipam::new(
            SledStore::open(&store, &SledOptions::default()).unwrap(),
            Arc::new(SystemClock),
        );
        ipam.create_pool(Pool::new("p", "10.244.0.0/24".parse().unwrap()).unwrap())
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let stamp = |secs: u64| {
            // RFC 3339 of a recent moment, as the plugin writes it, built with the shell's date.
            let o = std::process::Command::new("date")
                .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
                .output()
                .unwrap();
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        };
        for (ip, t) in [
            ("10.244.0.5", stamp(now - 7200)),
            ("10.244.0.6", stamp(now - 60)),
        ] {
            ipam.assign_ip(&AssignIpArgs {
                ip: ip.parse().unwrap(),
                handle_id: format!("podman.{ip}"),
                attrs: BTreeMap::from([("timestamp".to_string(), t)]),
                node: "n1".into(),
                host_reserved: HostReserved::default(),
            })
            .unwrap();
        }
    }
    let o = run_args(args(
        &store,
        &["check", "--older-than", "3600", "-o", "json"],
    ));
    assert_eq!(o.exit_code, EXIT_PROBLEMS, "{}", o.stdout);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let release: Vec<&str> = v["release"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ip"].as_str().unwrap())
        .collect();
    assert_eq!(release, vec!["10.244.0.5"], "{}", o.stdout);
    let o = run_args(args(&store, &["check"]));
    assert_eq!(
        o.exit_code, EXIT_OK,
        "without the flag nothing is reported: {}",
        o.stdout
    );
}

#[test]
fn a_sled_store_has_one_layout_to_show_and_none_to_switch_to() {
    let d = tempfile::tempdir().expect("a temporary directory");
    let a = d.path().join("a");
    prepare(&a);
    let o = run_args(args(&a, &["layout"]));
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(o.stdout.contains("single record layout"), "{}", o.stdout);
    let o = run_args(args(&a, &["layout", "--set", "plain"]));
    assert_eq!(o.exit_code, EXIT_ERROR, "{}", o.stdout);
    assert!(o.stdout.contains("single record layout"), "{}", o.stdout);
    // Nor is a sled store created to be told so.
    let none = d.path().join("none");
    let o = run_args(args(&none, &["layout", "--set", "compressed"]));
    assert_eq!(o.exit_code, EXIT_ERROR, "{}", o.stdout);
    assert!(!none.exists(), "no store made at {}", none.display());
    let o = run_args(args(&a, &["layout", "--set", "zstd"]));
    assert_eq!(
        o.exit_code, 2,
        "a layout the command line does not know: {}",
        o.stdout
    );
}

#[cfg(feature = "etcd")]
#[test]
fn layout_switches_on_etcd_keep_the_state_whole() {
    let Some(ep) = etcd_endpoint() else { return };
    let d = tempfile::tempdir().expect("a temporary directory");
    let a = d.path().join("a");
    prepare(&a);
    {
        // A fuller block, large enough to be stored compressed.
        let ipam = Ipam::new(
            SledStore::open(&a, &SledOptions::default()).expect("opens"),
            Arc::new(SystemClock),
        );
        for i in 3..50 {
            ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("pod-handle-{i}"), 1))
                .expect("assigned");
        }
    }
    let f = d.path().join("state.json");
    let f = f.to_str().expect("a UTF-8 path");
    assert_eq!(run_args(args(&a, &["export", "-f", f])).exit_code, EXIT_OK);
    let original = state_of(&std::fs::read_to_string(f).expect("exported"));
    let etcd = etcd_ctl(d.path(), &ep, "layout");
    let o = etcd(&["layout"]);
    assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
    assert!(
        o.stdout.starts_with("layout: compressed\n"),
        "a new prefix: {}",
        o.stdout
    );
    assert_eq!(etcd(&["import", f]).exit_code, EXIT_OK);
    let status = |o: Outcome| -> serde_json::Value {
        assert_eq!(o.exit_code, EXIT_OK, "{}", o.stdout);
        serde_json::from_str(&o.stdout).expect("JSON")
    };
    let s = status(etcd(&["-o", "json", "layout", "--set", "plain"]));
    assert_eq!(s["layout"], "plain");
    assert_eq!(
        (s["compressed"].as_u64(), s["corrupt"].as_u64()),
        (Some(0), Some(0))
    );
    let records = s["plain"].as_u64().expect("a count");
    assert!(records > 0);
    let s = status(etcd(&["-o", "json", "layout", "--set", "compressed"]));
    assert_eq!(s["layout"], "compressed");
    assert_eq!(
        s["plain"].as_u64().expect("a count") + s["compressed"].as_u64().expect("a count"),
        records
    );
    assert!(s["compressed"].as_u64() > Some(0), "{s}");
    assert_eq!(s["rewritten"], s["compressed"]);
    assert_eq!(
        state_of(&etcd(&["export"]).stdout),
        original,
        "both rewrites kept every record"
    );
}
