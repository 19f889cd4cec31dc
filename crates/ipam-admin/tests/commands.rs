//! Every operator command against stores prepared through the library.

use ipam_admin::commands::{check, configure, gc, map, node, pool, release, show, Command};
use ipam_admin::{execute, Outcome, EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS};
use ipam_core::{Affinity, AffinityState, Block, Handle, HostReserved};
use ipam_core::{
    AutoAssignArgs, Datastore, Key, ManualClock, Pool, Record, ReleaseRequest, StoreExt, Write,
};
use ipam_store::{MemoryStore, Observed};
use serde_json::Value;
use std::sync::Arc;

fn net(s: &str) -> ipnetwork::IpNetwork {
    s.parse().unwrap()
}

/// The engine with a handle on its store, to plant inconsistencies behind its back.
type Engine = Observed<MemoryStore>;

fn setup() -> Engine {
    let ipam = Observed::new(
        MemoryStore::new(),
        Arc::new(ManualClock::new(1_700_000_000_000_000_000)),
    );
    ipam.create_pool(Pool::new("p", net("10.244.0.0/22")).unwrap())
        .unwrap();
    for (node, n) in [("n1", 5), ("n2", 70)] {
        for i in 0..n {
            ipam.auto_assign(&AutoAssignArgs::v4(node, &format!("{node}-h{i}"), 1))
                .unwrap();
        }
    }
    ipam
}

fn json(ipam: &Engine, cmd: Command) -> (Value, i32) {
    let o = execute(ipam, &cmd, true);
    (
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout)),
        o.exit_code,
    )
}

fn text(ipam: &Engine, cmd: Command) -> Outcome {
    execute(ipam, &cmd, false)
}

#[test]
fn show_numbers_match_the_store() {
    let ipam = setup();
    let (v, code) = json(&ipam, Command::Show(show::ShowArgs::default()));
    assert_eq!(code, EXIT_OK);
    let p = &v["pools"][0];
    assert_eq!(p["capacity"], "1024");
    assert_eq!(p["in_use"], 75);
    assert_eq!(p["free"], "949");
    assert_eq!(p["blocks"], 3, "n1 one block, n2 two");
    let (b, _) = json(
        &ipam,
        Command::Show(show::ShowArgs {
            blocks: true,
            ..Default::default()
        }),
    );
    let blocks = b.as_array().unwrap();
    assert_eq!(blocks.len(), 3);
    let total: u64 = blocks.iter().map(|b| b["in_use"].as_u64().unwrap()).sum();
    assert_eq!(total, 75);
    for blk in blocks {
        let addrs = blk["addresses"].as_array().unwrap();
        assert_eq!(addrs.len() as u64, blk["in_use"].as_u64().unwrap());
        let node = blk["node"].as_str().unwrap();
        assert!(addrs
            .iter()
            .all(|a| a["handle"].as_str().unwrap().starts_with(node)));
    }
    let (n, _) = json(
        &ipam,
        Command::Show(show::ShowArgs {
            node: Some("n2".into()),
            ..Default::default()
        }),
    );
    assert_eq!(n["in_use"], 70);
    assert_eq!(n["blocks"].as_array().unwrap().len(), 2);
    let held = ipam.addresses_by_handle("n1-h3").unwrap()[0];
    let (i, _) = json(
        &ipam,
        Command::Show(show::ShowArgs {
            ip: Some(held),
            ..Default::default()
        }),
    );
    assert_eq!(i["handle"], "n1-h3");
    assert_eq!(i["block_node"], "n1");
    assert!(i["seq"].as_u64().unwrap() > 0);
    let t = text(
        &ipam,
        Command::Show(show::ShowArgs {
            blocks: true,
            ..Default::default()
        }),
    );
    assert!(t.stdout.starts_with("BLOCK"), "{}", t.stdout);
    assert!(t.stdout.contains("70") || t.stdout.contains("/64"));
    let (c, _) = json(
        &ipam,
        Command::Show(show::ShowArgs {
            config: true,
            ..Default::default()
        }),
    );
    assert_eq!(c["strict_affinity"], false);
}

fn plant(ipam: &Engine, writes: Vec<Write>) {
    ipam.store().commit(writes).unwrap();
}

fn kinds(ipam: &Engine) -> (Vec<String>, i32) {
    let (v, code) = json(ipam, Command::Check(check::CheckArgs::default()));
    let k = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    (k, code)
}

#[test]
fn check_is_clean_on_a_clean_store() {
    let ipam = setup();
    let (k, code) = kinds(&ipam);
    assert!(k.is_empty(), "{k:?}");
    assert_eq!(code, EXIT_OK);
    assert_eq!(
        text(&ipam, Command::Check(check::CheckArgs::default())).stdout,
        "no problems found\n"
    );
}

#[test]
fn check_finds_each_planted_inconsistency() {
    type Planter = fn(&Engine);
    let cases: Vec<(&str, Planter)> = vec![
        ("handle-without-addresses", |ipam| {
            let mut h = Handle::new("ghost");
            h.add(net("10.244.1.0/26"), 2);
            plant(ipam, vec![Write::Create(Record::Handle(h))]);
        }),
        ("address-without-handle", |ipam| {
            let h = ipam
                .store()
                .get_handle(&Key::Handle("n1-h0".into()))
                .unwrap()
                .unwrap();
            plant(
                ipam,
                vec![Write::Delete {
                    key: Key::Handle("n1-h0".into()),
                    expected: h.revision,
                }],
            );
        }),
        ("affinity-without-block", |ipam| {
            plant(
                ipam,
                vec![Write::Create(Record::Affinity(Affinity::confirmed(
                    "n9",
                    net("10.244.3.192/26"),
                )))],
            );
        }),
        ("block-without-affinity", |ipam| {
            let a = ipam
                .store()
                .list_affinities(&ipam_core::Range::AffinitiesOf("n1".into()))
                .unwrap()
                .remove(0);
            plant(
                ipam,
                vec![Write::Delete {
                    key: Record::Affinity(a.value).key(),
                    expected: a.revision,
                }],
            );
        }),
        ("block-outside-pools", |ipam| {
            let b = Block::new(net("10.99.0.0/26"), None, HostReserved::default(), 5).unwrap();
            plant(ipam, vec![Write::Create(Record::Block(b))]);
        }),
        ("stale-pending-affinity", |ipam| {
            let a = Affinity::new("n1", net("10.244.2.0/26"), AffinityState::Pending);
            plant(ipam, vec![Write::Create(Record::Affinity(a))]);
        }),
        ("overlapping-blocks", |ipam| {
            let any = ipam.utilisation().unwrap().blocks[0].cidr;
            let inner = ipnetwork::IpNetwork::new(any.ip(), 27).unwrap();
            let b = Block::new(inner, None, HostReserved::default(), 5).unwrap();
            plant(ipam, vec![Write::Create(Record::Block(b))]);
        }),
    ];
    for (kind, f) in cases {
        let ipam = setup();
        f(&ipam);
        let (k, code) = kinds(&ipam);
        assert!(k.iter().any(|x| x == kind), "{kind} not found in {k:?}");
        assert_eq!(code, EXIT_PROBLEMS, "{kind}");
    }
}

#[test]
fn release_from_a_stale_report_skips_the_reused_address() {
    let ipam = setup();
    // Leak: the handle record of one address disappears.
    let ip = ipam.addresses_by_handle("n1-h1").unwrap()[0];
    let h = ipam
        .store()
        .get_handle(&Key::Handle("n1-h1".into()))
        .unwrap()
        .unwrap();
    plant(
        &ipam,
        vec![Write::Delete {
            key: Key::Handle("n1-h1".into()),
            expected: h.revision,
        }],
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json").display().to_string();
    let o = execute(
        &ipam,
        &Command::Check(check::CheckArgs {
            report: Some(report.clone()),
            grace_seconds: 60,
            older_than: None,
        }),
        false,
    );
    assert_eq!(o.exit_code, EXIT_PROBLEMS);
    let (path, content) = &o.files[0];
    assert_eq!(path, &report);
    let rep: Value = serde_json::from_str(content).unwrap();
    assert_eq!(rep["release"][0]["ip"], ip.to_string());
    // Meanwhile the address is freed and re-used by a new pod.
    ipam.release_ip(&ReleaseRequest::ip(ip)).unwrap();
    ipam.assign_ip(&ipam_core::AssignIpArgs {
        ip,
        handle_id: "new-pod".into(),
        attrs: Default::default(),
        node: "n1".into(),
        host_reserved: HostReserved::default(),
    })
    .unwrap();
    let args = release::ReleaseArgs {
        from_report: Some(report.clone()),
        report_json: Some(content.clone()),
        ..Default::default()
    };
    let (v, code) = json(&ipam, Command::Release(args.clone()));
    assert_eq!(code, EXIT_PROBLEMS);
    assert!(v["released"].as_array().unwrap().is_empty());
    assert!(
        v["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("new-pod"),
        "{v}"
    );
    assert_eq!(ipam.allocation(ip).unwrap().unwrap().handle_id, "new-pod");
    // A fresh report releases what is really leaked.
    let h = ipam
        .store()
        .get_handle(&Key::Handle("n1-h2".into()))
        .unwrap()
        .unwrap();
    let leaked = ipam.addresses_by_handle("n1-h2").unwrap()[0];
    plant(
        &ipam,
        vec![Write::Delete {
            key: Key::Handle("n1-h2".into()),
            expected: h.revision,
        }],
    );
    let o = execute(
        &ipam,
        &Command::Check(check::CheckArgs {
            report: Some(report.clone()),
            grace_seconds: 60,
            older_than: None,
        }),
        true,
    );
    let fresh = o.files[0].1.clone();
    let (v, code) = json(
        &ipam,
        Command::Release(release::ReleaseArgs {
            report_json: Some(fresh),
            ..args
        }),
    );
    assert_eq!(code, EXIT_OK, "{v}");
    assert_eq!(v["released"][0], leaked.to_string());
    assert!(ipam.allocation(leaked).unwrap().is_none());
    assert_eq!(kinds(&ipam).0, Vec::<String>::new());
    // One address, guarded.
    let target = ipam.addresses_by_handle("n2-h5").unwrap()[0];
    let (_, code) = json(
        &ipam,
        Command::Release(release::ReleaseArgs {
            ip: Some(target),
            handle: Some("wrong".into()),
            ..Default::default()
        }),
    );
    assert_eq!(code, EXIT_PROBLEMS);
    let (_, code) = json(
        &ipam,
        Command::Release(release::ReleaseArgs {
            ip: Some(target),
            handle: Some("n2-h5".into()),
            ..Default::default()
        }),
    );
    assert_eq!(code, EXIT_OK);
}

#[test]
fn map_draws_one_cell_per_block_with_its_owner() {
    let ipam = setup();
    let o = execute(
        &ipam,
        &Command::Map(map::MapArgs {
            pool: None,
            svg: Some("map.svg".into()),
        }),
        false,
    );
    assert_eq!(o.exit_code, EXIT_OK);
    let svg = &o.files[0].1;
    let doc = roxmltree::Document::parse(svg).expect("the map is well-formed XML");
    let cells: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("block"))
        .collect();
    assert_eq!(cells.len(), 16, "a /22 of /26 blocks");
    let u = ipam.utilisation().unwrap();
    for b in &u.blocks {
        let cell = cells
            .iter()
            .find(|c| c.attribute("data-block") == Some(&b.cidr.to_string()))
            .unwrap_or_else(|| panic!("no cell for {}", b.cidr));
        assert_eq!(cell.attribute("data-node"), b.affinity.as_deref());
    }
    let unclaimed = cells
        .iter()
        .filter(|c| c.attribute("data-node") == Some(""))
        .count();
    assert_eq!(unclaimed, 16 - u.blocks.len());
    assert_eq!(o.stdout.lines().nth(1).unwrap().chars().count(), 16);
    assert!(o.stdout.contains("a n1") && o.stdout.contains("b n2"));
    // Borrowing shows: n3 on a full pool borrows from n2's block.
    let small = Observed::new(MemoryStore::new(), Arc::new(ManualClock::new(1)));
    small
        .create_pool(Pool::new("s", net("10.9.0.0/26")).unwrap())
        .unwrap();
    small
        .auto_assign(&AutoAssignArgs::v4("n1", "a", 1))
        .unwrap();
    small
        .auto_assign(&AutoAssignArgs::v4("n2", "b", 1))
        .unwrap();
    let t = execute(&small, &Command::Map(map::MapArgs::default()), false);
    assert_eq!(t.stdout.lines().nth(1), Some("!"), "{}", t.stdout);
}

#[test]
fn configure_validates() {
    let ipam = setup();
    let bad = configure::ConfigureArgs {
        max_blocks_per_host: Some(3),
        ..Default::default()
    };
    let o = text(&ipam, Command::Configure(bad));
    assert_eq!(o.exit_code, EXIT_ERROR);
    assert!(o.stdout.contains("strict_affinity"), "{}", o.stdout);
    let good = configure::ConfigureArgs {
        strict_affinity: Some(true),
        max_blocks_per_host: Some(3),
        ip_cooldown_seconds: Some(60),
        ..Default::default()
    };
    let (v, code) = json(&ipam, Command::Configure(good));
    assert_eq!(code, EXIT_OK);
    assert_eq!(v["ip_cooldown_seconds"], 60);
    assert_eq!(ipam.config().unwrap().max_blocks_per_host, 3);
}

#[test]
fn pools_nodes_and_gc() {
    let ipam = setup();
    let add = pool::PoolCmd::Add {
        name: "extra".into(),
        cidr: net("10.250.0.0/24"),
        block_size: Some(28),
        node_selector: Some("has(x)".into()),
        disabled: false,
        manual: true,
        allowed_uses: vec!["workload".into()],
    };
    assert_eq!(json(&ipam, Command::Pool(add)).1, EXIT_OK);
    let (l, _) = json(&ipam, Command::Pool(pool::PoolCmd::List));
    assert_eq!(l.as_array().unwrap().len(), 2);
    assert_eq!(l[0]["name"], "extra");
    assert_eq!(l[0]["block_size"], 28);
    for c in ["c1", "c2", "c3"] {
        let mut a = AutoAssignArgs::v4("n2", &format!("gcnet.{c}"), 1);
        a.attrs.insert("containerid".into(), c.into());
        a.attrs.insert("ifname".into(), "eth0".into());
        ipam.auto_assign(&a).unwrap();
    }
    let o = text(
        &ipam,
        Command::Pool(pool::PoolCmd::Delete {
            name: "p".into(),
            force: false,
        }),
    );
    assert_eq!(o.exit_code, EXIT_ERROR);
    assert!(o.stdout.contains("78 addresses"), "{}", o.stdout);
    assert!(ipam
        .pools()
        .unwrap()
        .iter()
        .find(|p| p.name() == "p")
        .unwrap()
        .is_disabled());
    // gc: keep n1-h0's attachment only among the "n1-h*" network.
    let (v, code) = json(
        &ipam,
        Command::Node(node::NodeCmd::Remove {
            name: "n1".into(),
            release_addresses: true,
        }),
    );
    assert_eq!(code, EXIT_OK);
    assert_eq!(v["affinities_released"], 1);
    assert!(ipam.addresses_by_handle("n1-h0").unwrap().is_empty());
    let valid = r#"[{"containerID": "c2", "ifname": "eth0"}]"#;
    let (v, code) = json(
        &ipam,
        Command::Gc(gc::GcArgs {
            network: "gcnet".into(),
            valid_attachments: "-".into(),
            valid_json: Some(valid.into()),
        }),
    );
    assert_eq!(code, EXIT_OK, "{v}");
    assert_eq!(v["released"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(ipam.addresses_by_handle("gcnet.c2").unwrap().len(), 1);
    assert!(ipam.addresses_by_handle("gcnet.c1").unwrap().is_empty());
    assert_eq!(
        ipam.addresses_by_handle("n2-h7").unwrap().len(),
        1,
        "other networks untouched"
    );
    let (v, _) = json(
        &ipam,
        Command::Pool(pool::PoolCmd::Delete {
            name: "p".into(),
            force: true,
        }),
    );
    assert_eq!(v["deleted"], "p");
    assert!(ipam.pools().unwrap().iter().all(|p| p.name() != "p"));
    assert!(ipam.utilisation().unwrap().blocks.is_empty());
}
