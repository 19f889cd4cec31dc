//! Store format 1, pinned: `tests/fixtures/format1.txt` holds the keys and values (hex) a store
//! of this format wrote for one record of every kind (and a released address, a cooling
//! one, dual-stack, attributes, labels). This build must decode each, find the same meaning in
//! it, and encode the decoded record to the very same bytes. A change to the core's model
//! that would silently change what is stored (a field moved, renamed in place, retyped) fails
//! here; a deliberate change comes with a new format and a reader for this one.
//!
//! The fixture was written by this test with `IPAM_WRITE_FIXTURES=1`; it is not regenerated
//! otherwise.

use ipam_core::{AutoAssignArgs, Endpoint, Ipam, IpamConfig, ManualClock, Pool, Record, Revision};
use ipam_store::sled::{codec, keys};
use ipam_store::MemoryStore;
use std::sync::Arc;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format1.txt");

/// A store with one record of every kind.
fn scenario() -> Vec<(Vec<u8>, Vec<u8>)> {
    let clock = Arc::new(ManualClock::new(1_795_700_000_000_000_000));
    let ipam = Ipam::new(MemoryStore::new(), clock.clone());
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 7,
        ip_cooldown_seconds: 30,
        ..IpamConfig::default()
    })
    .unwrap();
    ipam.create_pool(Pool::new("v4", "10.244.0.0/16".parse().unwrap()).unwrap())
        .unwrap();
    ipam.create_pool(Pool::new("v6", "fd00:10:244::/48".parse().unwrap()).unwrap())
        .unwrap();
    ipam.update_node("node-a", |n| {
        n.labels_mut().insert("zone".into(), "a".into());
        n.set_address("172.18.0.3".parse().unwrap());
    })
    .unwrap();
    let mut args = AutoAssignArgs::v4("node-a", "k8s.pod-1", 2);
    args.num_v6 = 1;
    args.attrs.insert("pod".into(), "pod-1".into());
    args.attrs.insert("namespace".into(), "default".into());
    let held = ipam.auto_assign(&args).unwrap();
    ipam.auto_assign(&AutoAssignArgs::v4("node-a", "k8s.pod-2", 1))
        .unwrap();
    // A released address cools down (ip_cooldown_seconds) in its block.
    ipam.release_by_handle("k8s.pod-2").unwrap();
    // A pool whose claim index fills: its summary record (PoolIndex) is written.
    ipam.create_pool(Pool::with_block_size("tiny", "10.245.0.0/31".parse().unwrap(), 32).unwrap())
        .unwrap();
    let mut tiny = AutoAssignArgs::v4("node-b", "k8s.pod-3", 2);
    tiny.v4_pools = vec!["tiny".into()];
    ipam.auto_assign(&tiny).unwrap();
    ipam.add_reservation("gateway", "10.244.255.254/32".parse().unwrap())
        .unwrap();
    ipam.put_endpoint(&Endpoint {
        node: "node-a".into(),
        id: "k8s.pod-1/eth0".into(),
        network: "k8s".into(),
        container_id: "pod-1".into(),
        ifname: "eth0".into(),
        handle_id: "k8s.pod-1".into(),
        namespace: Some("default".into()),
        pod: Some("pod-1".into()),
        host_ifname: "cali6d09fa47963".into(),
        mac: "ee:ee:ee:ee:ee:ee".into(),
        addresses: vec![ipnetwork::IpNetwork::new(held.v4.ips[0].ip, 32).unwrap()],
    })
    .unwrap();
    let mut out = Vec::new();
    for (i, r) in ipam.dump().unwrap().records().into_iter().enumerate() {
        let key = keys::encode(&r.key());
        let value = codec::encode(&r, Revision(i as u64 + 1)).unwrap();
        out.push((key, value));
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn read_fixture() -> Vec<(Vec<u8>, Vec<u8>)> {
    if std::env::var("IPAM_WRITE_FIXTURES").is_ok() {
        let text: String = scenario()
            .iter()
            .map(|(k, v)| format!("{} {}\n", hex(k), hex(v)))
            .collect();
        std::fs::write(FIXTURE, text).unwrap();
    }
    std::fs::read_to_string(FIXTURE)
        .expect("the format 1 fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("key value");
            (unhex(k), unhex(v))
        })
        .collect()
}

#[test]
fn format_1_records_decode_to_the_same_meaning_and_bytes() {
    let fixture = read_fixture();
    let mut kinds = std::collections::HashSet::new();
    let mut records = Vec::new();
    for (key, value) in &fixture {
        let v = codec::decode(key, value).unwrap_or_else(|e| panic!("{}: {e}", hex(key)));
        let k = keys::decode(key).expect("key layout");
        assert_eq!(keys::encode(&k), *key, "key {k} re-encodes differently");
        assert_eq!(v.value.key(), k);
        assert_eq!(
            codec::encode(&v.value, v.revision).unwrap(),
            *value,
            "{k}: the decoded record encodes to other bytes"
        );
        kinds.insert(std::mem::discriminant(&v.value));
        records.push(v.value);
    }
    assert_eq!(kinds.len(), 10, "one record of every kind");
    // The meaning, field by field where two fields share a type.
    for r in &records {
        match r {
            Record::Config(c) => {
                assert!(c.strict_affinity);
                assert_eq!((c.max_blocks_per_host, c.ip_cooldown_seconds), (7, 30));
            }
            Record::Pool(p) if p.name() == "v4" => {
                assert_eq!(p.cidr().to_string(), "10.244.0.0/16");
                assert_eq!(p.block_size(), 26);
            }
            Record::Node(n) => {
                assert_eq!(n.labels()["zone"], "a");
                assert_eq!(
                    n.addresses(),
                    vec!["172.18.0.3".parse::<std::net::IpAddr>().unwrap()]
                );
            }
            Record::Block(b) if b.cidr.to_string().starts_with("10.244.") => {
                let used: Vec<_> = b.used().collect();
                assert_eq!(used.len(), 2, "{used:?}");
                assert!(used.iter().all(|(_, a, _)| a.handle_id() == "k8s.pod-1"));
                assert_eq!(used[0].1.get("pod"), Some("pod-1"));
            }
            Record::Handle(h) => {
                assert!(["k8s.pod-1", "k8s.pod-3"].contains(&h.id()), "{h:?}")
            }
            Record::Endpoint(e) => {
                assert_eq!(
                    (e.host_ifname.as_str(), e.ifname.as_str()),
                    ("cali6d09fa47963", "eth0")
                );
                assert_eq!(e.namespace.as_deref(), Some("default"));
            }
            Record::Reservation(r) => assert_eq!(r.cidr().to_string(), "10.244.255.254/32"),
            _ => {}
        }
    }
}
