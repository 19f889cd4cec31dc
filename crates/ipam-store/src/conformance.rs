//! The datastore conformance suite: every store must pass it (memory, sled, etcd).
//!
//! Call [`run_all`] from a test with a function that makes a fresh, empty store. Each check
//! panics with a message naming the broken rule.

// A test harness (built only under the `conformance` feature): a panic is its report.
#![allow(clippy::unwrap_used)]

use ipam_core::ConflictKind;
use ipam_core::{
    Affinity, AffinityState, AllowedUse, Block, Datastore, Handle, IpamConfig, Key, Node, Pool,
    Range, Read, Record, Spare, StoreError, Write,
};
use ipam_core::{AllocAttrs, HostReserved};
use ipam_core::{Bitmap, IndexChunk, PoolIndex};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::sync::Arc;

fn net(s: &str) -> IpNetwork {
    s.parse().expect("test network")
}

fn handle(id: &str, n: u32) -> Record {
    let mut h = Handle::new(id);
    h.add(net("10.0.0.0/26"), n);
    Record::Handle(h)
}

fn block(cidr: &str) -> Record {
    Record::Block(
        Block::new(net(cidr), Some("n1".into()), HostReserved::default(), 7)
            .expect("a valid fixture"),
    )
}

fn affinity(node: &str, cidr: &str) -> Record {
    Record::Affinity(Affinity::confirmed(node, net(cidr)))
}

/// One record of every kind, with non-trivial content, and a block crowded enough to be
/// stored compressed.
pub fn sample_records() -> Vec<Record> {
    let mut pool = Pool::with_block_size("pool-a", net("10.244.0.0/16"), 28)
        .expect("a valid fixture")
        .to_parts();
    pool.node_selector = "zone in {'a','b'} && !has(gpu)"
        .parse()
        .expect("a valid literal");
    pool.allowed_uses = vec![AllowedUse::Workload];
    pool.disabled = true;
    let pool = Pool::try_from(pool).expect("a valid fixture");
    let mut b = Block::new(
        net("fd00::40/122"),
        Some("node-1".into()),
        HostReserved { first: 3, last: 1 },
        1_700_000_000_000_000_000,
    )
    .expect("a valid fixture");
    let a1 = Arc::new(
        AllocAttrs::new(
            "k8s-pod-network.abc",
            [("namespace", "default"), ("pod", "web-0")],
        )
        .expect("a valid fixture"),
    );
    let a2 = Arc::new(AllocAttrs::new("other", [("", ""); 0]).expect("a valid fixture"));
    b.allocate(5, &a1);
    let o = b.allocate(2, &a2);
    b.release(o[0], 9, 1_000);
    let mut h = Handle::new("k8s-pod-network.abc");
    h.add(net("fd00::40/122"), 5);
    h.add(net("10.244.0.0/28"), 1);
    let mut claimed = Bitmap::new(4096);
    claimed.set(0);
    claimed.set(4095);
    let chunk = IndexChunk::from_parts(net("10.244.0.0/16"), 0, claimed);
    vec![
        Record::Config(IpamConfig {
            strict_affinity: true,
            auto_allocate_blocks: false,
            max_blocks_per_host: 7,
            ip_cooldown_seconds: 60,
        }),
        Record::Pool(Box::new(pool)),
        Record::Node(
            Node::from_parts(
                "node-1".into(),
                BTreeMap::from([("zone".into(), "a".into())]),
                vec!["172.18.0.3".parse().expect("a valid literal")],
            )
            .expect("a valid fixture"),
        ),
        Record::Block(b),
        Record::Affinity(Affinity::new(
            "node-1",
            net("fd00::40/122"),
            AffinityState::PendingDeletion,
        )),
        Record::Handle(h),
        Record::IndexChunk(chunk),
        Record::PoolIndex(PoolIndex::new(net("10.244.0.0/16"), [0, 5].into())),
        crowded_block(),
    ]
}

/// A full /26 block of pods with the owner attributes a CNI ADD records: large enough that
/// the sled and etcd stores keep it compressed.
pub fn crowded_block() -> Record {
    crowded_block_at(net("10.244.7.0/26"))
}

/// [`crowded_block`] at `cidr` (a /26).
pub fn crowded_block_at(cidr: IpNetwork) -> Record {
    let mut b = Block::new(
        cidr,
        Some("node-1".into()),
        HostReserved::default(),
        1_700_000_000_000_000_000,
    )
    .expect("a valid fixture");
    for i in 0..64u64 {
        let cid = format!("{:016x}{:016x}", i * 7919 + 1, i * 104_729 + 3);
        let attrs = [
            ("containerid", cid.clone()),
            ("ifname", "eth0".into()),
            ("namespace", "default".into()),
            ("network", "k8s-pod-network".into()),
            ("node", "node-1".into()),
            ("pod", format!("web-{i}")),
            (
                "timestamp",
                format!("2026-12-01T10:{:02}:{:02}Z", i / 60, i % 60),
            ),
        ];
        b.allocate(
            1,
            &Arc::new(
                AllocAttrs::new(&format!("k8s-pod-network.{cid}"), attrs).expect("a valid fixture"),
            ),
        );
        b.seq += 1;
    }
    Record::Block(b)
}

fn expect_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, key: &Key, kind: ConflictKind) {
    match r {
        Err(StoreError::Conflict { key: k, kind: kd }) => {
            assert_eq!(
                (&k, kd),
                (key, kind),
                "conflict names the key and the reason"
            );
        }
        other => panic!("expected {kind:?} conflict on {key}, got {other:?}"),
    }
}

/// Every record kind survives a round trip unchanged.
pub fn round_trip<S: Datastore>(s: &S) {
    for r in sample_records() {
        let rev = s
            .commit(vec![Write::Create(r.clone())])
            .expect("the store takes a write the contract allows");
        let got = s
            .get(&r.key())
            .expect("the store answers a read")
            .expect("stored record is found");
        assert_eq!(got.value, r, "round trip of {}", r.key());
        assert_eq!(got.revision, rev, "get returns the commit's revision");
    }
    assert!(s
        .get(&Key::Pool("missing".into()))
        .expect("the store answers a read")
        .is_none());
}

/// A commit holding a record that breaks the core's rules (an endpoint whose id is not
/// `<handle>/<ifname>`, a configuration the core refuses) is refused whole: the valid write
/// beside it is not stored either, and a valid version of the same record is taken.
pub fn invalid_records_refused<S: Datastore>(s: &S) {
    let endpoint = |id: &str| ipam_core::Endpoint {
        node: "node-1".into(),
        id: id.into(),
        ifname: "eth0".into(),
        handle_id: "k8s-pod-network.abc".into(),
        ..Default::default()
    };
    let config = IpamConfig {
        strict_affinity: false,
        auto_allocate_blocks: false,
        ..IpamConfig::default()
    };
    for bad in [
        Record::Endpoint(Box::new(endpoint("k8s-pod-network.abc"))),
        Record::Config(config),
    ] {
        let key = bad.key();
        let e = s
            .commit(vec![Write::Create(handle("beside", 1)), Write::Create(bad)])
            .expect_err("an invalid record is refused");
        assert!(
            matches!(&e, StoreError::Rejected(m) if m.contains("invalid record")),
            "{e}"
        );
        for k in [Key::Handle("beside".into()), key] {
            assert!(
                s.get(&k).expect("the store answers a read").is_none(),
                "{k} was written"
            );
        }
    }
    let good = endpoint("k8s-pod-network.abc/eth0");
    s.commit(vec![Write::Create(Record::Endpoint(Box::new(
        good.clone(),
    )))])
    .expect("a valid endpoint is taken");
    let got = s
        .get(&Record::Endpoint(Box::new(good.clone())).key())
        .expect("the store answers a read")
        .expect("the endpoint is stored");
    assert_eq!(got.value, Record::Endpoint(Box::new(good)));
}

/// Create-if-absent, update-if-revision, delete-if-revision, and their conflicts.
pub fn compare_and_swap<S: Datastore>(s: &S) {
    let k = Key::Handle("h".into());
    let r1 = s
        .commit(vec![Write::Create(handle("h", 1))])
        .expect("the store takes a write the contract allows");
    expect_conflict(
        s.commit(vec![Write::Create(handle("h", 2))]),
        &k,
        ConflictKind::Exists,
    );
    let r2 = s
        .commit(vec![Write::Update {
            record: handle("h", 2),
            expected: r1,
        }])
        .expect("the store takes a write the contract allows");
    assert_ne!(r1, r2, "every write changes the revision");
    expect_conflict(
        s.commit(vec![Write::Update {
            record: handle("h", 3),
            expected: r1,
        }]),
        &k,
        ConflictKind::Changed,
    );
    // Rewriting identical content still changes the revision.
    let r3 = s
        .commit(vec![Write::Update {
            record: handle("h", 2),
            expected: r2,
        }])
        .expect("the store takes a write the contract allows");
    assert_ne!(r2, r3);
    expect_conflict(
        s.commit(vec![Write::Delete {
            key: k.clone(),
            expected: r2,
        }]),
        &k,
        ConflictKind::Changed,
    );
    assert_eq!(
        s.get(&k)
            .expect("the store answers a read")
            .expect("the record is there")
            .value,
        handle("h", 2)
    );
    s.commit(vec![Write::Delete {
        key: k.clone(),
        expected: r3,
    }])
    .expect("the store takes a write the contract allows");
    assert!(s.get(&k).expect("the store answers a read").is_none());
    expect_conflict(
        s.commit(vec![Write::Delete {
            key: k.clone(),
            expected: r3,
        }]),
        &k,
        ConflictKind::Missing,
    );
    expect_conflict(
        s.commit(vec![Write::Update {
            record: handle("h", 1),
            expected: r3,
        }]),
        &k,
        ConflictKind::Missing,
    );
    // A deleted key can be created again.
    s.commit(vec![Write::Create(handle("h", 9))])
        .expect("the store takes a write the contract allows");
}

/// [`Datastore::commit_reusing`] is a commit like any other (same conditions, same result)
/// whatever the spare holds, and what it hands back can carry the next commit.
pub fn reusing_commits<S: Datastore>(s: &S) {
    let Record::Block(mut b) = block("10.0.0.0/26") else {
        unreachable!("a block fixture")
    };
    let k = Key::Block(b.cidr);
    let stored = |s: &S| match s.get(&k).expect("the store answers a read") {
        Some(v) => (v.value, v.revision),
        None => panic!("the block is there"),
    };
    let mut spare = Spare::default();
    let mut read = s
        .commit_reusing(vec![Write::Create(Record::Block(b.clone()))], &mut spare)
        .expect("the store takes a write the contract allows");
    let holder = Arc::new(AllocAttrs::new("h", [("k", "v")]).expect("a valid holder"));
    for round in 0..4u64 {
        b.allocate(1, &holder);
        b.touch();
        // Built in what the store handed back, as the engine does; a write left in the
        // vector is never committed.
        spare.writes.push(Write::Create(handle("left-over", 1)));
        let copy = spare.copy_of(&b);
        let mut stale = spare.writes();
        stale.push(Write::Update {
            record: Record::Block(copy.clone()),
            expected: ipam_core::Revision(read.0.wrapping_add(1_000)),
        });
        expect_conflict(
            s.commit_reusing(stale, &mut spare),
            &k,
            ConflictKind::Changed,
        );
        assert_eq!(stored(s).1, read, "a refused commit writes nothing");
        let mut writes = spare.writes();
        writes.push(Write::Update {
            record: Record::Block(copy),
            expected: read,
        });
        read = s
            .commit_reusing(writes, &mut spare)
            .expect("the store takes a write the contract allows");
        assert_eq!(
            stored(s),
            (Record::Block(b.clone()), read),
            "round {round}: the block as written"
        );
        assert!(s
            .get(&Key::Handle("left-over".into()))
            .expect("the store answers a read")
            .is_none());
    }
    // A spare block the caller still holds is left as it is.
    let Record::Block(other) = block("10.9.0.0/28") else {
        unreachable!("a block fixture")
    };
    let mut held = Spare {
        block: Some(other.clone()),
        writes: Vec::new(),
    };
    read = s
        .commit_reusing(
            vec![Write::Update {
                record: Record::Block(b.clone()),
                expected: read,
            }],
            &mut held,
        )
        .expect("the store takes a write the contract allows");
    assert_eq!(held.block, Some(other), "a spare block is not replaced");
    assert_eq!(stored(s), (Record::Block(b), read));
}

/// A commit applies every write or none.
pub fn atomic_commits<S: Datastore>(s: &S) {
    let rb = s
        .commit(vec![Write::Create(block("10.0.0.0/26"))])
        .expect("the store takes a write the contract allows");
    let stale = ipam_core::Revision(rb.0.wrapping_add(1_000_000));
    let r = s.commit(vec![
        Write::Create(handle("a", 1)),
        Write::Create(affinity("n1", "10.0.0.0/26")),
        Write::Update {
            record: block("10.0.0.0/26"),
            expected: stale,
        },
    ]);
    expect_conflict(r, &Key::Block(net("10.0.0.0/26")), ConflictKind::Changed);
    assert!(
        s.get(&Key::Handle("a".into()))
            .expect("the store answers a read")
            .is_none(),
        "nothing applied"
    );
    assert_eq!(
        s.get(&Key::Block(net("10.0.0.0/26")))
            .expect("the store answers a read")
            .expect("the record is there")
            .revision,
        rb
    );
    let rev = s
        .commit(vec![
            Write::Create(handle("a", 1)),
            Write::Create(affinity("n1", "10.0.0.0/26")),
            Write::Update {
                record: block("10.0.0.0/26"),
                expected: rb,
            },
        ])
        .expect("the store takes a write the contract allows");
    for k in [
        Key::Handle("a".into()),
        Key::Block(net("10.0.0.0/26")),
        Key::Affinity {
            node: "n1".into(),
            cidr: net("10.0.0.0/26"),
        },
    ] {
        assert_eq!(
            s.get(&k)
                .expect("the store answers a read")
                .expect("the record is there")
                .revision,
            rev,
            "{k} carries the commit revision"
        );
    }
    // Writing one key twice in a commit is refused and applies nothing.
    let r = s.commit(vec![
        Write::Create(handle("b", 1)),
        Write::Create(handle("b", 2)),
    ]);
    assert!(r.is_err(), "duplicate key in one commit");
    assert!(s
        .get(&Key::Handle("b".into()))
        .expect("the store answers a read")
        .is_none());
    // Likewise in a large commit, the repeat last.
    let mut many: Vec<Write> = (0..40)
        .map(|i| Write::Create(handle(&format!("many{i}"), 1)))
        .collect();
    many.push(Write::Create(handle("many7", 2)));
    assert!(s.commit(many).is_err(), "duplicate key in a large commit");
    assert!(s
        .get(&Key::Handle("many0".into()))
        .expect("the store answers a read")
        .is_none());
    // Likewise a block, and a record of the other kinds, written twice in a small commit.
    let net7 = "10.7.0.0/26";
    for twice in [
        [Write::Create(block(net7)), Write::Create(block(net7))],
        [
            Write::Create(affinity("n1", net7)),
            Write::Create(affinity("n1", net7)),
        ],
    ] {
        let what = twice[0].key();
        assert!(
            s.commit(twice.into()).is_err(),
            "{what} twice in one commit"
        );
        assert!(s.get(&what).expect("the store answers a read").is_none());
    }
    // Records of different kinds over one network, or of one kind over different ones, are
    // different records.
    s.commit(vec![
        Write::Create(block(net7)),
        Write::Create(affinity("n1", net7)),
        Write::Create(affinity("n2", net7)),
        Write::Create(block("10.7.0.64/26")),
        Write::Create(handle(net7, 1)),
    ])
    .expect("the store takes a write the contract allows");
    // An empty commit is a no-op.
    s.commit(Vec::new())
        .expect("the store takes a write the contract allows");
}

/// Listing returns exactly the range, in key order (blocks by address).
pub fn listing<S: Datastore>(s: &S) {
    let blocks = [
        "10.0.1.0/26",
        "10.0.0.64/26",
        "fd00::/122",
        "10.0.0.0/26",
        "10.1.0.0/26",
        "9.255.255.192/26",
    ];
    for b in blocks {
        s.commit(vec![Write::Create(block(b))])
            .expect("the store takes a write the contract allows");
    }
    for (n, c) in [
        ("a-b", "10.0.0.0/26"),
        ("a", "10.0.1.0/26"),
        ("a", "10.0.0.64/26"),
        ("b", "10.0.0.0/26"),
    ] {
        s.commit(vec![Write::Create(affinity(n, c))])
            .expect("the store takes a write the contract allows");
    }
    for h in ["z", "a", "m"] {
        s.commit(vec![Write::Create(handle(h, 1))])
            .expect("the store takes a write the contract allows");
    }
    for name in ["pool-b", "pool-a"] {
        let p = Pool::new(
            name,
            net(if name == "pool-a" {
                "10.0.0.0/16"
            } else {
                "10.1.0.0/16"
            }),
        )
        .expect("a valid fixture");
        s.commit(vec![Write::Create(Record::Pool(Box::new(p)))])
            .expect("the store takes a write the contract allows");
    }
    for c in [3u64, 0, 300] {
        let ch = IndexChunk::new(net("10.0.0.0/16"), c, 4096);
        s.commit(vec![Write::Create(Record::IndexChunk(ch))])
            .expect("the store takes a write the contract allows");
    }
    let ch = IndexChunk::new(net("10.1.0.0/16"), 0, 4096);
    s.commit(vec![Write::Create(Record::IndexChunk(ch))])
        .expect("the store takes a write the contract allows");

    let keys = |r: Range| -> Vec<String> {
        s.list(&r)
            .expect("the store answers a listing")
            .into_iter()
            .map(|v| v.value.key().to_string())
            .collect()
    };
    assert_eq!(
        keys(Range::Blocks),
        [
            "block 9.255.255.192/26",
            "block 10.0.0.0/26",
            "block 10.0.0.64/26",
            "block 10.0.1.0/26",
            "block 10.1.0.0/26",
            "block fd00::/122"
        ]
    );
    assert_eq!(
        keys(Range::BlocksIn(net("10.0.0.0/16"))),
        [
            "block 10.0.0.0/26",
            "block 10.0.0.64/26",
            "block 10.0.1.0/26"
        ]
    );
    assert_eq!(
        keys(Range::BlocksIn(net("10.0.0.64/26"))),
        ["block 10.0.0.64/26"]
    );
    assert!(keys(Range::BlocksIn(net("172.16.0.0/12"))).is_empty());
    assert_eq!(
        keys(Range::BlocksIn(net("fd00::/64"))),
        ["block fd00::/122"]
    );
    assert_eq!(
        keys(Range::AffinitiesOf("a".into())),
        ["affinity a -> 10.0.0.64/26", "affinity a -> 10.0.1.0/26"]
    );
    assert_eq!(keys(Range::Affinities).len(), 4);
    assert_eq!(keys(Range::Handles), ["handle a", "handle m", "handle z"]);
    assert_eq!(keys(Range::Pools), ["pool pool-a", "pool pool-b"]);
    assert_eq!(
        keys(Range::IndexChunksOf(net("10.0.0.0/16"))),
        [
            "index chunk 0 of 10.0.0.0/16",
            "index chunk 3 of 10.0.0.0/16",
            "index chunk 300 of 10.0.0.0/16"
        ]
    );
    assert!(keys(Range::Nodes).is_empty());
    // Listed revisions are the stored ones.
    for v in s
        .list(&Range::Handles)
        .expect("the store answers a listing")
    {
        assert_eq!(
            s.get(&v.value.key())
                .expect("the store answers a read")
                .expect("the record is there")
                .revision,
            v.revision
        );
    }
}

/// A batch of reads answers each read as `get` and `list` do, in order.
pub fn batched_reads<S: Datastore>(s: &S) {
    for r in sample_records() {
        s.commit(vec![Write::Create(r)])
            .expect("the store takes a write the contract allows");
    }
    s.commit(vec![Write::Create(block("10.0.1.0/26"))])
        .expect("the store takes a write the contract allows");
    let mut reads = vec![
        Read::List(Range::Blocks),
        Read::Get(Key::Handle("absent".into())),
        Read::List(Range::Nodes),
        Read::List(Range::AffinitiesOf("nobody".into())),
    ];
    for r in sample_records() {
        reads.push(Read::Get(r.key()));
    }
    let answers = s.read(&reads).expect("the store answers a batch of reads");
    assert_eq!(answers.len(), reads.len(), "one answer per read");
    for (read, answer) in reads.iter().zip(&answers) {
        let want = match read {
            Read::Get(k) => s
                .get(k)
                .expect("the store answers a read")
                .into_iter()
                .collect(),
            Read::List(r) => s.list(r).expect("the store answers a listing"),
        };
        assert_eq!(answer, &want, "{read:?}");
    }
    assert!(answers[1].is_empty(), "an absent key reads as nothing");
    assert_eq!(answers[0].len(), 3, "the samples' two blocks and one more");
    assert!(s
        .read(&[])
        .expect("the store answers a batch of reads")
        .is_empty());
}

/// Threads racing read-modify-commit on one record lose no update.
pub fn concurrent_increments<S: Datastore + 'static>(s: Arc<S>) {
    s.commit(vec![Write::Create(handle("ctr", 1))])
        .expect("the store takes a write the contract allows");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut conflicts = 0u32;
                for _ in 0..25 {
                    loop {
                        let v = s
                            .get(&Key::Handle("ctr".into()))
                            .expect("the store answers a read")
                            .expect("the record is there");
                        let Record::Handle(mut h) = v.value else {
                            panic!("wrong kind")
                        };
                        h.add(net("10.0.0.0/26"), 1);
                        match s.commit(vec![Write::Update {
                            record: Record::Handle(h),
                            expected: v.revision,
                        }]) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in threads {
        t.join().expect("the thread ends");
    }
    let Record::Handle(h) = s
        .get(&Key::Handle("ctr".into()))
        .expect("the store answers a read")
        .expect("the record is there")
        .value
    else {
        panic!("wrong kind")
    };
    assert_eq!(h.total(), 101, "no lost update");
}

/// Runs every check, each on a fresh store from `make`.
pub fn run_all<S: Datastore + 'static>(mut make: impl FnMut() -> S) {
    round_trip(&make());
    invalid_records_refused(&make());
    compare_and_swap(&make());
    reusing_commits(&make());
    atomic_commits(&make());
    listing(&make());
    batched_reads(&make());
    concurrent_increments(Arc::new(make()));
}
