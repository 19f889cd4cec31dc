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

use ipam_test_support::etcd_endpoint as endpoint;

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
        let attrs =
            Arc::new(AllocAttrs::new(&format!("h-{a}"), [("note", noise(a, 32_000))]).unwrap());
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
            let attrs = Arc::new(
                AllocAttrs::new(&format!("h-{i}-{a}"), [("note", noise(i * 64 + a, 1_500))])
                    .unwrap(),
            );
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

/// A prefix of the test's own, the raw client and a runtime to drive it.
struct Raw {
    prefix: String,
    rt: tokio::runtime::Runtime,
    etcd: etcd_client::Client,
}

impl Raw {
    fn new(ep: &str) -> Raw {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let etcd = rt
            .block_on(etcd_client::Client::connect([ep], None))
            .expect("etcd answers");
        Raw {
            prefix: format!("/ipam-test/{}-{n}/", std::process::id()),
            rt,
            etcd,
        }
    }

    fn store(&self, ep: &str) -> Result<EtcdStore, ipam_store::etcd::EtcdOpenError> {
        EtcdStore::connect(EtcdOptions {
            endpoints: vec![ep.to_string()],
            prefix: self.prefix.clone(),
            ..Default::default()
        })
    }

    fn key(&self, key: &ipam_core::Key) -> Vec<u8> {
        [self.prefix.as_bytes(), &ipam_store::sled::keys::encode(key)].concat()
    }

    fn get(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        let r = self
            .rt
            .block_on(self.etcd.get(key, None))
            .expect("etcd answers");
        r.kvs().first().map(|kv| kv.value().to_vec())
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.rt
            .block_on(self.etcd.put(key, value, None))
            .expect("etcd takes the put");
    }

    fn mark(&mut self) -> Option<String> {
        let k = [self.prefix.as_bytes(), b"\x00layout"].concat();
        self.get(k)
            .map(|v| String::from_utf8(v).expect("a textual mark"))
    }

    /// The mark's revision (0: no mark).
    fn mark_revision(&mut self) -> i64 {
        let k = [self.prefix.as_bytes(), b"\x00layout"].concat();
        let r = self
            .rt
            .block_on(self.etcd.get(k, None))
            .expect("etcd answers");
        r.kvs().first().map_or(0, |kv| kv.mod_revision())
    }

    /// The layout byte of the value stored under `key`.
    fn layout_byte(&mut self, key: &ipam_core::Key) -> u8 {
        let k = self.key(key);
        self.get(k).expect("the record is stored")[0]
    }
}

/// Releases address `ord` of the crowded fixture block, by `s`; the block's free addresses
/// as read before.
fn touch_crowded(s: &EtcdStore, ord: u32) -> u32 {
    use ipam_core::{Record, Write};
    let key = conformance::crowded_block().key();
    let cur = s.get(&key).expect("readable").expect("stored");
    let Record::Block(mut b) = cur.value else {
        panic!("a block")
    };
    let free = b.free_count();
    b.release(ord, 1_700_000_000_000_000_001 + u64::from(ord), 0)
        .expect("the address is held");
    s.commit(vec![Write::Update {
        record: Record::Block(b),
        expected: cur.revision,
    }])
    .expect("the update lands");
    free
}

#[test]
fn a_new_prefix_is_marked_compressed_and_an_old_clusters_stays_plain() {
    use ipam_core::{Record, RecordLayout, Write};
    let Some(ep) = endpoint() else { return };
    let crowded = conformance::crowded_block();
    let key = crowded.key();

    // Nothing stored: the first node marks the prefix compressed, and writes so.
    let mut fresh = Raw::new(&ep);
    let s = fresh.store(&ep).expect("connects");
    assert_eq!(fresh.mark().as_deref(), Some("compressed"));
    s.commit(vec![Write::Create(crowded.clone())])
        .expect("created");
    assert_eq!(fresh.layout_byte(&key), ipam_store::sled::codec::COMPRESSED);
    let st = s.layout().expect("scanned").expect("etcd has layouts");
    assert_eq!(st.layout, Some(RecordLayout::Compressed));
    assert_eq!((st.compressed, st.corrupt), (1, 0));

    // Records written by a build before the mark: the prefix stays plain, which that build
    // reads, however large the records written from now on.
    let mut old = Raw::new(&ep);
    let v =
        ipam_store::sled::codec::encode_plain(&crowded, ipam_core::Revision(0)).expect("encodes");
    old.put(old.key(&key), v);
    let s = old.store(&ep).expect("connects");
    assert_eq!(old.mark().as_deref(), Some("plain"));
    touch_crowded(&s, 7);
    assert_eq!(old.layout_byte(&key), ipam_store::sled::codec::PLAIN);
    let Record::Block(b) = s.get(&key).expect("readable").expect("stored").value else {
        panic!("a block")
    };
    assert_eq!(b.free_count(), 1, "the update was read back");
    // A second node finds the mark and keeps it.
    let again = old.store(&ep).expect("connects");
    assert_eq!(
        again
            .layout()
            .expect("scanned")
            .expect("etcd has layouts")
            .layout,
        Some(RecordLayout::Plain)
    );
}

#[test]
fn switching_the_layout_rewrites_the_records_and_binds_every_writer() {
    use ipam_core::{Record, RecordLayout, Write};
    use ipam_store::sled::codec::{COMPRESSED, PLAIN};
    let Some(ep) = endpoint() else { return };
    let crowded = conformance::crowded_block();
    let key = crowded.key();
    let mut raw = Raw::new(&ep);
    let v =
        ipam_store::sled::codec::encode_plain(&crowded, ipam_core::Revision(0)).expect("encodes");
    raw.put(raw.key(&key), v);
    let operator = raw.store(&ep).expect("connects");
    let node = raw.store(&ep).expect("connects");
    // A small record, plain in either layout.
    let small = Record::Node(ipam_core::Node::new("node-1").expect("a valid name"));
    node.commit(vec![Write::Create(small.clone())])
        .expect("created");

    let st = operator
        .set_layout(RecordLayout::Compressed)
        .expect("switched");
    assert_eq!(st.layout, Some(RecordLayout::Compressed));
    assert_eq!((st.rewritten, st.compressed, st.plain), (1, 1, 1));
    assert_eq!(raw.mark().as_deref(), Some("compressed"));
    assert_eq!(raw.layout_byte(&key), COMPRESSED);
    assert_eq!(raw.layout_byte(&small.key()), PLAIN);

    // The node read the plain mark before the switch: its next write of the block fails the
    // mark's comparison inside the store, is encoded again and lands compressed.
    touch_crowded(&node, 7);
    assert_eq!(raw.layout_byte(&key), COMPRESSED);

    // And back, as before returning to a build that reads only plain records.
    let st = operator.set_layout(RecordLayout::Plain).expect("switched");
    assert_eq!((st.rewritten, st.compressed, st.plain), (1, 0, 2));
    assert_eq!(raw.layout_byte(&key), PLAIN);
    assert_eq!(
        touch_crowded(&node, 8),
        1,
        "the node's write survived both rewrites"
    );
    assert_eq!(raw.layout_byte(&key), PLAIN);
    // A switch to the layout already in force rewrites nothing, and leaves the mark as it
    // is (no writer's next commit fails its comparison for nothing).
    let before = raw.mark_revision();
    let st = operator.set_layout(RecordLayout::Plain).expect("switched");
    assert_eq!(st.rewritten, 0);
    assert_eq!(raw.mark_revision(), before);
}

#[test]
fn a_switch_rewrites_many_records_a_transaction_at_a_time() {
    use ipam_core::RecordLayout;
    use ipam_store::sled::codec::{COMPRESSED, PLAIN};
    let Some(ep) = endpoint() else { return };
    let mut raw = Raw::new(&ep);
    // 150 large blocks written by a build before the mark: the prefix is plain.
    let blocks: Vec<_> = (0..150u32)
        .map(|i| {
            let cidr = format!("10.{}.{}.{}/26", 100 + i / 1024, i / 4 % 256, i % 4 * 64);
            conformance::crowded_block_at(cidr.parse().expect("a /26"))
        })
        .collect();
    for b in &blocks {
        let v = ipam_store::sled::codec::encode_plain(b, ipam_core::Revision(0)).expect("encodes");
        raw.put(raw.key(&b.key()), v);
    }
    let operator = raw.store(&ep).expect("connects");
    assert_eq!(raw.mark().as_deref(), Some("plain"));
    // Records rewritten by one transaction share its revision: 150 records, at most 64 a
    // transaction -> three revisions.
    let revisions = |raw: &mut Raw| {
        let keys: Vec<Vec<u8>> = blocks.iter().map(|b| raw.key(&b.key())).collect();
        let mut revs = std::collections::BTreeSet::new();
        for k in keys {
            let r = raw
                .rt
                .block_on(raw.etcd.get(k, None))
                .expect("etcd answers");
            revs.insert(r.kvs().first().expect("stored").mod_revision());
        }
        revs.len()
    };
    let st = operator
        .set_layout(RecordLayout::Compressed)
        .expect("switched");
    assert_eq!((st.rewritten, st.compressed, st.plain), (150, 150, 0));
    assert_eq!(revisions(&mut raw), 3);
    for b in &blocks {
        assert_eq!(raw.layout_byte(&b.key()), COMPRESSED);
    }
    let st = operator.set_layout(RecordLayout::Plain).expect("switched");
    assert_eq!((st.rewritten, st.compressed, st.plain), (150, 0, 150));
    for b in &blocks {
        assert_eq!(raw.layout_byte(&b.key()), PLAIN);
        assert_eq!(
            operator.get(&b.key()).expect("readable").map(|v| v.value),
            Some(b.clone())
        );
    }
}

#[test]
fn every_record_key_lies_in_the_range_a_layout_scan_reads() {
    for r in conformance::sample_records() {
        let k = ipam_store::sled::keys::encode(&r.key());
        assert!(ipam_store::etcd::RECORD_KEYS.contains(&k[0]), "{}", r.key());
    }
}

#[test]
fn a_nested_prefix_is_another_store() {
    use ipam_core::{RecordLayout, Write};
    let Some(ep) = endpoint() else { return };
    let outer = Raw::new(&ep);
    let inner = Raw {
        prefix: format!("{}inner/", outer.prefix),
        ..Raw::new(&ep)
    };
    let s = inner.store(&ep).expect("connects");
    s.commit(vec![Write::Create(conformance::crowded_block())])
        .expect("created");
    // The outer prefix holds no record of its own: a new store, compressed; its scan and
    // its rewrite see nothing of the inner store's.
    let o = outer.store(&ep).expect("connects");
    let st = o.layout().expect("scanned").expect("etcd has layouts");
    assert_eq!(
        (st.layout, st.plain + st.compressed),
        (Some(RecordLayout::Compressed), 0)
    );
    let st = o.set_layout(RecordLayout::Plain).expect("switched");
    assert_eq!(
        (st.plain, st.compressed, st.corrupt, st.rewritten),
        (0, 0, 0, 0)
    );
    let st = s.layout().expect("scanned").expect("etcd has layouts");
    assert_eq!(
        (st.layout, st.compressed),
        (Some(RecordLayout::Compressed), 1)
    );
}

#[test]
fn a_layout_this_build_does_not_know_is_refused_at_open_and_at_commit() {
    use ipam_core::{Record, Write};
    let Some(ep) = endpoint() else { return };
    let mut raw = Raw::new(&ep);
    let s = raw.store(&ep).expect("connects");
    let mark = [raw.prefix.as_bytes(), b"\x00layout"].concat();
    raw.put(mark, b"zstd-v9".to_vec());
    let e = raw.store(&ep).err().expect("refused");
    assert!(
        matches!(&e, ipam_store::etcd::EtcdOpenError::UnknownLayout { found, .. } if found == "zstd-v9"),
        "{e}"
    );
    // Opened as the plugin and the tools open it: refused at once, not waited on.
    let spec = ipam_store::StoreSpec::Etcd(ipam_store::EtcdSpec {
        endpoints: vec![ep.clone()],
        prefix: Some(raw.prefix.clone()),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let e = spec.open(Duration::from_secs(30)).err().expect("refused");
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("newer release"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let small = Record::Node(ipam_core::Node::new("node-1").expect("a valid name"));
    let e = s
        .commit(vec![Write::Create(small.clone())])
        .expect_err("refused");
    assert!(
        matches!(&e, StoreError::Rejected(why) if why.contains("layout")),
        "{e}"
    );
    assert!(raw.get(raw.key(&small.key())).is_none(), "nothing written");
}

#[test]
fn no_write_lands_in_a_layout_switched_away_from_while_nodes_allocate() {
    use ipam_core::RecordLayout;
    use std::sync::atomic::AtomicBool;
    let Some(ep) = endpoint() else { return };
    let raw = Raw::new(&ep);
    let operator = raw.store(&ep).expect("connects");
    let setup = Ipam::new(raw.store(&ep).expect("connects"), Arc::new(SystemClock));
    setup
        .create_pool(
            Pool::new("p", "10.244.0.0/22".parse().expect("a valid literal"))
                .expect("a valid pool"),
        )
        .expect("created");
    let stop = Arc::new(AtomicBool::new(false));
    // Three nodes, each with its own store (its own reading of the mark), two threads each:
    // pods with a CNI ADD's attributes (so blocks are large enough to compress), every
    // third released again.
    let nodes: Vec<_> = (0..3)
        .map(|_| {
            Arc::new(Ipam::new(
                raw.store(&ep).expect("connects"),
                Arc::new(SystemClock),
            ))
        })
        .collect();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let ipam = Arc::clone(&nodes[t % 3]);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 400 {
                    let handle = format!("k8s-pod-network.{t:04}{i:060}");
                    let mut a = AutoAssignArgs::v4(&format!("node-{}", t % 3), &handle, 1);
                    a.attrs.insert("namespace".into(), "default".into());
                    a.attrs.insert("pod".into(), format!("web-{t}-{i}"));
                    ipam.auto_assign(&a).expect("assigned");
                    held.push(handle);
                    if i % 3 == 2 {
                        let h = held.remove(0);
                        assert_eq!(ipam.release_by_handle(&h).expect("released"), 1);
                    }
                    i += 1;
                }
                held.len()
            })
        })
        .collect();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(40));
        let to = if round % 2 == 0 {
            RecordLayout::Compressed
        } else {
            RecordLayout::Plain
        };
        let st = operator.set_layout(to).expect("switched");
        assert_eq!(st.corrupt, 0);
        // Scanned while the nodes write: after a switch to plain, nothing compressed is
        // left or newly written.
        let now = operator
            .layout()
            .expect("scanned")
            .expect("etcd has layouts");
        assert_eq!((now.layout, now.corrupt), (Some(to), 0));
        if to == RecordLayout::Plain {
            assert_eq!(now.compressed, 0, "round {round}: {now:?}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    let held: usize = threads
        .into_iter()
        .map(|t| t.join().expect("no panic"))
        .sum();
    assert!(audit(&operator).expect("audited").is_empty());
    let in_use: u64 = setup
        .utilisation()
        .expect("read")
        .nodes
        .iter()
        .map(|n| n.in_use)
        .sum();
    assert_eq!(in_use, held as u64, "every held address, and no other");
}

/// Everything `feed` sent, added to `seen` until `done` holds of it (10 s at most).
fn wait_for(
    feed: &ipam_core::Feed,
    seen: &mut Vec<ipam_core::Change>,
    done: &dyn Fn(&[ipam_core::Change]) -> bool,
) {
    let t = std::time::Instant::now();
    while !done(seen) {
        assert!(t.elapsed() < Duration::from_secs(10), "only {seen:?}");
        seen.extend(feed.drain().expect("the watcher runs"));
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_watch_feed_sends_a_snapshot_then_every_change_of_its_ranges_only() {
    use ipam_core::{Affinity, Change, Key, Node, Range, Record, Write};
    let Some(ep) = endpoint() else { return };
    let raw = Raw::new(&ep);
    let s = raw.store(&ep).expect("connects");
    let node = |n: &str| Record::Node(Node::new(n).expect("a valid name"));
    let aff = Record::Affinity(Affinity::confirmed(
        "node-1",
        "10.244.0.0/26".parse().expect("a cidr"),
    ));
    s.commit(vec![
        Write::Create(node("node-1")),
        Write::Create(aff.clone()),
    ])
    .expect("created");
    let feed = s
        .watch(&[Range::Affinities, Range::Nodes])
        .expect("a feed")
        .expect("etcd has one");
    let mut seen: Vec<Change> = Vec::new();
    wait_for(&feed, &mut seen, &|c| !c.is_empty());
    let Change::Snapshot(first) = &seen[0] else {
        panic!("first a snapshot: {seen:?}")
    };
    let mut keys: Vec<Key> = first.iter().map(|v| v.value.key()).collect();
    keys.sort();
    let mut want = vec![node("node-1").key(), aff.key()];
    want.sort();
    assert_eq!(keys, want);

    // A node created, the affinity deleted, a block written (not watched).
    let aff_rev = s
        .get(&aff.key())
        .expect("readable")
        .expect("stored")
        .revision;
    s.commit(vec![
        Write::Create(node("node-2")),
        Write::Delete {
            key: aff.key(),
            expected: aff_rev,
        },
        Write::Create(conformance::crowded_block()),
    ])
    .expect("committed");
    let puts_and_deletes = |c: &[Change]| {
        c.iter()
            .filter(|c| matches!(c, Change::Put(_) | Change::Delete(_)))
            .count()
    };
    wait_for(&feed, &mut seen, &|c| puts_and_deletes(c) >= 2);
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(feed.drain().expect("the watcher runs"));
    let node2 = s
        .get(&node("node-2").key())
        .expect("readable")
        .expect("stored");
    // In order within a range; the two ranges' changes may come in either order.
    let rest = &seen[1..];
    assert_eq!(
        rest.len(),
        2,
        "the changes, and nothing of the block: {rest:?}"
    );
    assert!(rest.contains(&Change::Put(node2)), "{rest:?}");
    assert!(rest.contains(&Change::Delete(aff.key())), "{rest:?}");
}

/// A feed of one node's ranges (what a route agent in bgp mode follows) holds that node's
/// affinities and endpoints and nothing of a node whose name it starts ("node-1" and
/// "node-10"), in its snapshot and in its changes.
#[test]
fn a_watch_feed_of_one_nodes_ranges_leaves_out_a_node_whose_name_extends_it() {
    use ipam_core::{endpoint_id, Affinity, Change, Endpoint, Key, Range, Record, Write};
    let Some(ep) = endpoint() else { return };
    let raw = Raw::new(&ep);
    let s = raw.store(&ep).expect("connects");
    let aff = |node: &str, cidr: &str| {
        Record::Affinity(Affinity::confirmed(node, cidr.parse().expect("a cidr")))
    };
    let ept = |node: &str, handle: &str| {
        Record::Endpoint(Box::new(Endpoint {
            node: node.into(),
            id: endpoint_id(handle, "eth0"),
            ifname: "eth0".into(),
            handle_id: handle.into(),
            addresses: vec!["10.244.0.5/32".parse().expect("an address")],
            ..Endpoint::default()
        }))
    };
    s.commit(vec![
        Write::Create(aff("node-1", "10.244.0.0/26")),
        Write::Create(aff("node-10", "10.244.0.64/26")),
        Write::Create(ept("node-1", "k8s.a")),
        Write::Create(ept("node-10", "k8s.a")),
    ])
    .expect("created");
    let feed = s
        .watch(&[
            Range::AffinitiesOf("node-1".into()),
            Range::EndpointsOf("node-1".into()),
        ])
        .expect("a feed")
        .expect("etcd has one");
    let mut seen: Vec<Change> = Vec::new();
    wait_for(&feed, &mut seen, &|c| !c.is_empty());
    let Change::Snapshot(first) = &seen[0] else {
        panic!("first a snapshot: {seen:?}")
    };
    let mut keys: Vec<Key> = first.iter().map(|v| v.value.key()).collect();
    keys.sort();
    let mut want = vec![
        aff("node-1", "10.244.0.0/26").key(),
        ept("node-1", "k8s.a").key(),
    ];
    want.sort();
    assert_eq!(keys, want, "node-1's records alone");

    // node-10's endpoint and affinity change first, then node-1's endpoint: the feed sends the
    // last alone.
    s.commit(vec![
        Write::Create(ept("node-10", "k8s.b")),
        Write::Create(aff("node-10", "10.244.0.128/26")),
    ])
    .expect("committed");
    s.commit(vec![Write::Create(ept("node-1", "k8s.b"))])
        .expect("committed");
    wait_for(&feed, &mut seen, &|c| c.len() >= 2);
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(feed.drain().expect("the watcher runs"));
    let stored = s
        .get(&ept("node-1", "k8s.b").key())
        .expect("readable")
        .expect("stored");
    assert_eq!(seen[1..], [Change::Put(stored)], "nothing of node-10");
}

/// A TCP relay to etcd whose connections the test can cut, and count.
struct Relay {
    addr: std::net::SocketAddr,
    conns: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    /// Connections whose client has not closed its side.
    open: Arc<std::sync::atomic::AtomicUsize>,
    /// While set, what etcd answers waits in the relay.
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn to(ep: &str) -> Relay {
        use std::net::{TcpListener, TcpStream};
        let target = ep.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = listener.local_addr().expect("bound");
        let conns: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let open: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let held: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (kept, counted, holding) = (Arc::clone(&conns), Arc::clone(&open), Arc::clone(&held));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut list = kept.lock().expect("the list");
                for s in [&client, &server] {
                    list.push(s.try_clone().expect("a clone"));
                }
                drop(list);
                for (upstream, mut from, mut to) in [
                    (
                        true,
                        client.try_clone().expect("a clone"),
                        server.try_clone().expect("a clone"),
                    ),
                    (false, server, client),
                ] {
                    let counted = Arc::clone(&counted);
                    let holding = Arc::clone(&holding);
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            while !upstream && holding.load(std::sync::atomic::Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        if upstream {
                            counted.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    });
                }
            }
        });
        Relay {
            addr,
            conns,
            open,
            held,
        }
    }

    /// Holds (or lets through) what etcd answers.
    fn hold(&self, on: bool) {
        self.held.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Connections open now.
    fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (10 s at most) until `n` connections are open.
    fn wait_open(&self, n: usize, why: &str) {
        let t = std::time::Instant::now();
        while self.open() != n {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{why}: {} connections open, not {n}",
                self.open()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection made so far (new ones still go through).
    fn cut(&self) {
        for s in self.conns.lock().expect("the list").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_watch_feed_whose_connection_is_cut_starts_over_with_a_snapshot() {
    use ipam_core::{Change, Node, Range, Record, Write};
    let Some(ep) = endpoint() else { return };
    let raw = Raw::new(&ep);
    let writer = raw.store(&ep).expect("connects");
    let relay = Relay::to(&ep);
    let watched = raw
        .store(&relay.endpoint())
        .expect("connects through the relay");
    let node = |n: &str| Record::Node(Node::new(n).expect("a valid name"));
    writer
        .commit(vec![Write::Create(node("node-1"))])
        .expect("created");
    let feed = watched
        .watch(&[Range::Nodes])
        .expect("a feed")
        .expect("etcd has one");
    // Takes what the feed sent into the node names a reader's copy holds, until `done` holds
    // of them (at least once; 15 s at most); whether a snapshot came on the way.
    let mut names: std::collections::BTreeSet<String> = Default::default();
    let mut follow = |done: &dyn Fn(&std::collections::BTreeSet<String>) -> bool| {
        let t = std::time::Instant::now();
        let mut snapshot = false;
        loop {
            for c in feed.drain().expect("the watcher runs") {
                let name = |r: &Record| match r {
                    Record::Node(n) => n.name().to_string(),
                    _ => String::new(),
                };
                match c {
                    Change::Snapshot(all) => {
                        snapshot = true;
                        names = all.iter().map(|v| name(&v.value)).collect();
                    }
                    Change::Put(v) => {
                        names.insert(name(&v.value));
                    }
                    Change::Delete(_) => {}
                }
            }
            if done(&names) {
                return snapshot;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "the copy holds {names:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert!(follow(&|n| n.contains("node-1")), "first a snapshot");
    // The watch's connection goes; a node is written meanwhile (directly, not through the
    // relay). The feed starts over with a new snapshot, and misses nothing.
    relay.cut();
    writer
        .commit(vec![Write::Create(node("node-2"))])
        .expect("created");
    let t = std::time::Instant::now();
    let mut restarted = false;
    while !restarted {
        restarted = follow(&|_| true);
        assert!(t.elapsed() < Duration::from_secs(15), "no new snapshot");
        std::thread::sleep(Duration::from_millis(10));
    }
    writer
        .commit(vec![Write::Create(node("node-3"))])
        .expect("created");
    follow(&|n| n.len() == 3);
    assert_eq!(
        names,
        ["node-1", "node-2", "node-3"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[test]
fn a_dropped_watch_feed_lets_go_of_its_connection_with_nothing_written() {
    use ipam_core::{Key, Range};
    let Some(ep) = endpoint() else { return };
    let raw = Raw::new(&ep);
    let relay = Relay::to(&ep);
    let watched = raw
        .store(&relay.endpoint())
        .expect("connects through the relay");
    watched.get(&Key::Config).expect("readable");
    std::thread::sleep(Duration::from_millis(200));
    let before = relay.open();
    let feed = watched
        .watch(&[Range::Nodes])
        .expect("a feed")
        .expect("etcd has one");
    let t = std::time::Instant::now();
    while feed.drain().expect("the watcher runs").is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "no snapshot");
        std::thread::sleep(Duration::from_millis(10));
    }
    relay.wait_open(before + 1, "the feed's own connection");
    // Nothing is written from here on: the watcher has no change to send, and must still go.
    drop(feed);
    relay.wait_open(before, "the dropped feed's connection");
}

#[test]
fn a_watch_feed_whose_start_was_compacted_away_starts_over_with_a_snapshot() {
    use ipam_core::{Change, Node, Range, Record, Write};
    let Some(ep) = endpoint() else { return };
    let raw = Raw::new(&ep);
    let writer = raw.store(&ep).expect("connects");
    let relay = Relay::to(&ep);
    let watched = raw
        .store(&relay.endpoint())
        .expect("connects through the relay");
    let node = |n: &str| Record::Node(Node::new(n).expect("a valid name"));
    let names = |all: &[ipam_core::Versioned<Record>]| -> Vec<String> {
        all.iter()
            .filter_map(|v| match &v.value {
                Record::Node(n) => Some(n.name().to_string()),
                _ => None,
            })
            .collect()
    };
    writer
        .commit(vec![Write::Create(node("node-0"))])
        .expect("created");
    // The feed's listing answered at revision R waits in the relay while nodes are written and
    // etcd's history is compacted past R + 1; then its watches ask to start at R + 1, which
    // etcd refuses (cancelled, compacted). The feed must start over with a listing that holds the
    // new node. Timing decides whether the listing reached etcd before the write (its
    // snapshot then lacks the node): tried until it did.
    for attempt in 1..=5 {
        relay.hold(true);
        let feed = watched
            .watch(&[Range::Nodes])
            .expect("a feed")
            .expect("etcd has one");
        std::thread::sleep(Duration::from_millis(300 * attempt));
        // Two writes: a compaction at revision X keeps X itself, so the first write's
        // revision (R + 1) is history only once the second is compacted to.
        let name = format!("node-{attempt}");
        writer
            .commit(vec![Write::Create(node(&name))])
            .expect("created");
        let rev = writer
            .commit(vec![Write::Create(node(&format!("{name}-b")))])
            .expect("created");
        raw.rt
            .block_on(
                raw.etcd
                    .clone()
                    .compact(i64::try_from(rev.0).expect("a revision"), None),
            )
            .expect("compacted");
        relay.hold(false);
        let mut snapshots: Vec<Vec<String>> = Vec::new();
        let t = std::time::Instant::now();
        while snapshots.is_empty() || !snapshots.last().is_some_and(|s| s.contains(&name)) {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "attempt {attempt}: snapshots {snapshots:?}"
            );
            for c in feed.drain().expect("the watcher runs") {
                match c {
                    Change::Snapshot(all) => snapshots.push(names(&all)),
                    Change::Put(v) => panic!(
                        "attempt {attempt}: a change from a compacted revision: {:?}",
                        v.value.key()
                    ),
                    Change::Delete(k) => panic!("attempt {attempt}: deleted {k:?}"),
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if snapshots.len() >= 2 {
            assert!(
                !snapshots[0].contains(&name) && snapshots[1].contains(&name),
                "{snapshots:?}"
            );
            return;
        }
        // The first listing already held the node: etcd saw it after the write. Again.
    }
    panic!("the listing never reached etcd before the write in 5 attempts");
}
