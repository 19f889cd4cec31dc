//! The conformance suite and the core's operations on etcd v3. Needs an etcd endpoint in
//! `IPAM_TEST_ETCD` (.ci/run starts one); without it the tests say so and pass, unless
//! `IPAM_ETCD_REQUIRED=1`.
#![cfg(feature = "etcd")]

use ipam_core::{audit, AutoAssignArgs, Datastore, Ipam, Pool, StoreError};
use ipam_store::conformance;
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::SystemClock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

static N: AtomicU64 = AtomicU64::new(0);

fn endpoint() -> Option<String> {
    match std::env::var("IPAM_TEST_ETCD") {
        Ok(e) => Some(e),
        Err(_) => {
            assert!(
                std::env::var("IPAM_ETCD_REQUIRED").is_err(),
                "etcd tests required but IPAM_TEST_ETCD is not set"
            );
            eprintln!("skipping: set IPAM_TEST_ETCD to an etcd endpoint");
            None
        }
    }
}

/// A store under a prefix of its own, so tests never see each other's keys.
fn store(ep: &str) -> EtcdStore {
    let n = N.fetch_add(1, Ordering::SeqCst);
    EtcdStore::connect(EtcdOptions {
        endpoints: vec![ep.to_string()],
        prefix: format!("/ipam-test/{}-{n}/", std::process::id()),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn etcd_store_conforms() {
    let Some(ep) = endpoint() else { return };
    conformance::run_all(|| store(&ep));
}

#[test]
fn etcd_store_with_combined_reads_conforms() {
    let Some(ep) = endpoint() else { return };
    conformance::run_all(|| ipam_store::Combining::new(store(&ep)));
}

#[test]
fn allocation_on_etcd_keeps_every_invariant() {
    let Some(ep) = endpoint() else { return };
    let s = Arc::new(store(&ep));
    let ipam = Arc::new(Ipam::new(s.clone(), Arc::new(SystemClock)));
    ipam.create_pool(Pool::new("p", "10.244.0.0/22".parse().unwrap()).unwrap())
        .unwrap();
    // Three nodes racing, two threads each.
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        ipam.auto_assign(&AutoAssignArgs::v4(
                            &format!("node{}", t % 3),
                            &format!("t{t}-{i}"),
                            1,
                        ))
                        .unwrap()
                        .v4
                        .ips[0]
                            .ip
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = std::collections::BTreeSet::new();
    for t in threads {
        for ip in t.join().unwrap() {
            assert!(all.insert(ip), "{ip} twice");
        }
    }
    assert_eq!(all.len(), 240);
    assert!(audit(s.as_ref()).unwrap().is_empty());
    for n in 0..3 {
        let u = ipam.utilisation().unwrap();
        let node = u
            .nodes
            .iter()
            .find(|x| x.node == format!("node{n}"))
            .unwrap();
        assert_eq!(node.in_use, 80, "each node's pods sit in its own blocks");
    }
}

#[test]
fn unreachable_etcd_fails_within_the_budget() {
    let t = std::time::Instant::now();
    let r = EtcdStore::connect(EtcdOptions {
        endpoints: vec!["http://127.0.0.1:1".into()],
        retry_budget: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    assert!(r.is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let _ = StoreError::Rejected(String::new());
    let _: Option<&dyn Datastore> = None;
}

/// `len` hex digits that do not compress (the stores compress large records).
fn noise(seed: u32, len: usize) -> String {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x >> 60) as u32, 16).unwrap()
        })
        .collect()
}

#[test]
fn a_request_over_etcds_size_limit_is_refused_at_once() {
    use ipam_core::{AllocAttrs, Block, HostReserved, Record, Write};
    use std::collections::BTreeMap;
    let Some(ep) = endpoint() else { return };
    let n = N.fetch_add(1, Ordering::SeqCst);
    let s = EtcdStore::connect(EtcdOptions {
        endpoints: vec![ep],
        prefix: format!("/ipam-test/{}-{n}/", std::process::id()),
        retry_budget: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    // One block whose 64 addresses carry 32 KB of attributes each: a 2 MB request, over
    // etcd's default 1.5 MiB limit. Asking again cannot help, so no retrying for a minute.
    let mut b = Block::new(
        "10.252.0.0/26".parse().unwrap(),
        None,
        HostReserved::default(),
        1,
    )
    .unwrap();
    for a in 0..64 {
        let attrs = Arc::new(AllocAttrs {
            handle_id: format!("h-{a}"),
            attrs: BTreeMap::from([("note".to_string(), noise(a, 32_000))]),
        });
        assert_eq!(b.allocate(1, &attrs).len(), 1);
    }
    let t = std::time::Instant::now();
    let e = s.commit(vec![Write::Create(Record::Block(b))]).unwrap_err();
    assert!(matches!(e, StoreError::Rejected(_)), "{e}");
    assert!(e.to_string().contains("too large"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(s.list(&ipam_core::Range::Blocks).unwrap().is_empty());
}

#[test]
fn a_range_larger_than_one_grpc_answer_is_listed_whole() {
    use ipam_core::{AllocAttrs, Block, HostReserved, Range, Record, Write};
    use std::collections::BTreeMap;
    let Some(ep) = endpoint() else { return };
    let s = store(&ep);
    // 48 blocks of 64 addresses, each address with 1.5 KB of its own attributes: about 4.7 MB
    // in one range, over the client's 4 MiB answer limit.
    let blocks = 48u32;
    for i in 0..blocks {
        let cidr = format!("10.250.{}.{}/26", i / 4, (i % 4) * 64)
            .parse()
            .unwrap();
        let mut b = Block::new(cidr, Some("n1".into()), HostReserved::default(), 1).unwrap();
        for a in 0..64 {
            let attrs = Arc::new(AllocAttrs {
                handle_id: format!("h-{i}-{a}"),
                attrs: BTreeMap::from([("note".to_string(), noise(i * 64 + a, 1_500))]),
            });
            assert_eq!(b.allocate(1, &attrs).len(), 1);
        }
        s.commit(vec![Write::Create(Record::Block(b))]).unwrap();
    }
    // And 300 small empty blocks after them, so the range takes several pages.
    for chunk in 0..3u32 {
        let writes = (0..100u32)
            .map(|j| {
                let n = chunk * 100 + j;
                let cidr = format!("10.251.{}.{}/26", n / 4, (n % 4) * 64)
                    .parse()
                    .unwrap();
                let b = Block::new(cidr, None, HostReserved::default(), 1).unwrap();
                Write::Create(Record::Block(b))
            })
            .collect();
        s.commit(writes).unwrap();
    }
    let listed = s.list(&Range::Blocks).unwrap();
    assert_eq!(listed.len(), blocks as usize + 300);
    let mut cidrs: Vec<_> = listed.iter().map(|v| v.value.key().to_string()).collect();
    cidrs.dedup();
    assert_eq!(cidrs.len(), blocks as usize + 300, "no block twice");
    let held: u32 = listed
        .iter()
        .map(|v| match &v.value {
            Record::Block(b) => b.used_count(),
            other => panic!("not a block: {other:?}"),
        })
        .sum();
    assert_eq!(held, 64 * blocks);
    // An export reads every range in one snapshot: the same 4.7 MB in one answer.
    let dump = Ipam::new(s, Arc::new(SystemClock)).dump().unwrap();
    assert_eq!(dump.blocks.len(), blocks as usize + 300);
}

#[test]
fn a_listing_whose_revision_is_compacted_under_it_starts_again_and_is_whole() {
    use ipam_core::{Block, HostReserved, Range, Record, Write};
    let Some(ep) = endpoint() else { return };
    let n = N.fetch_add(1, Ordering::SeqCst);
    // A page of one key: a listing of 60 blocks is 60 requests at the first one's revision.
    let s = Arc::new(
        EtcdStore::connect(EtcdOptions {
            endpoints: vec![ep.clone()],
            prefix: format!("/ipam-test/{}-{n}/", std::process::id()),
            range_page: 1,
            ..Default::default()
        })
        .unwrap(),
    );
    let writes = (0..60u32)
        .map(|i| {
            let cidr = format!("10.252.{}.{}/26", i / 4, (i % 4) * 64)
                .parse()
                .unwrap();
            Write::Create(Record::Block(
                Block::new(cidr, None, HostReserved::default(), 1).unwrap(),
            ))
        })
        .collect();
    s.commit(writes).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut etcd = rt
        .block_on(etcd_client::Client::connect([ep.as_str()], None))
        .unwrap();
    // Compact etcd's history up to now while a listing reads its pages (a write first, so
    // the listing's revision is history). Timing decides whether a compaction falls between
    // two pages: tried until one did, each listing checked whole.
    let mut tries = 0;
    while s.listing_restarts() == 0 {
        tries += 1;
        assert!(
            tries <= 20,
            "no compaction fell inside a listing in 20 tries"
        );
        let lister = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.list(&Range::Blocks))
        };
        std::thread::sleep(Duration::from_millis(3 * tries));
        let put = rt
            .block_on(etcd.put(format!("/ipam-test/compact-{n}"), "x", None))
            .unwrap();
        let rev = put.header().unwrap().revision();
        rt.block_on(etcd.compact(rev, None)).unwrap();
        let listed = lister.join().unwrap().unwrap();
        assert_eq!(listed.len(), 60, "try {tries}: the whole range");
        let mut keys: Vec<_> = listed.iter().map(|v| v.value.key().to_string()).collect();
        keys.dedup();
        assert_eq!(keys.len(), 60, "try {tries}: no block twice");
    }
}
