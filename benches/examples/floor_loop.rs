//! The contract's floor of `assign_release_loop` as a bare loop: per round, what
//! `floor/{assign,release}` in the criterion suite time (a holder built, the block copied and
//! changed, a handle record, one commit each way), with no engine. Run both under callgrind
//! and the difference of their instructions per round is what the engine adds.
//!
//! Run: `cargo build --release -p ipam-benches --example floor_loop`, then
//! `valgrind --tool=callgrind ./target/release/examples/floor_loop [N [FILL]]` (N rounds,
//! FILL pods in the block beforehand: 32 unless given).

use ipam_core::{AllocAttrs, Block, Datastore, Handle, HostReserved, Key, Record};
use ipam_core::{Revision, Versioned, Write};
use ipam_store::MemoryStore;
use std::hint::black_box;
use std::sync::Arc;

fn holder(h: &str) -> Arc<AllocAttrs> {
    Arc::new(AllocAttrs::new(h, [("node", "n1")]).expect("a valid holder"))
}

/// The kept block changed by `change`, copied for the store, committed with `handle` under
/// the kept revision, and kept as committed; the commit's revision.
fn step(
    store: &MemoryStore,
    kept: &mut Option<Versioned<Block>>,
    change: impl FnOnce(&mut Block),
    handle: Write,
) -> Revision {
    let Some(Versioned {
        value: mut b,
        revision: read,
    }) = kept.take()
    else {
        unreachable!("kept between operations")
    };
    change(&mut b);
    let committed = b.clone();
    let revision = store
        .commit(vec![
            Write::Update {
                record: Record::Block(b),
                expected: read,
            },
            handle,
        ])
        .expect("the store takes a write the contract allows");
    *kept = Some(Versioned {
        value: committed,
        revision,
    });
    revision
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let store = MemoryStore::new();
    let mut b = Block::new(
        "10.244.0.0/26".parse().expect("a valid literal"),
        Some("n1".into()),
        HostReserved::default(),
        1,
    )
    .expect("a valid block");
    for i in 0..arg(2, 32) {
        b.allocate(1, &holder(&format!("pod{i}")));
    }
    let cidr = b.cidr;
    let revision = store
        .commit(vec![Write::Create(Record::Block(b.clone()))])
        .expect("the first write");
    let mut kept = Some(Versioned { value: b, revision });
    for _ in 0..arg(1, 1_000_000) {
        let attrs = holder("bench-pod");
        let mut h = Handle::new("bench-pod");
        h.add(cidr, 1);
        let handle_rev = step(
            &store,
            &mut kept,
            |b| {
                black_box(b.allocate(1, &attrs));
            },
            Write::Create(Record::Handle(h)),
        );
        let delete = Write::Delete {
            key: Key::Handle("bench-pod".into()),
            expected: handle_rev,
        };
        step(
            &store,
            &mut kept,
            |b| {
                for o in b.ordinals_of("bench-pod") {
                    b.release(o, 2, 0);
                }
                b.touch();
            },
            delete,
        );
    }
}
