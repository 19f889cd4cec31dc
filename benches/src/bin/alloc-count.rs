//! Heap allocations per operation of the in-memory hot path: a count, so unlike a time it does
//! not move with the machine's noise. Counts every allocation the global allocator serves while
//! one operation runs (the same fills as the `ipam/auto_assign` criterion bench), and the bytes
//! asked for, through dhat's counting allocator.
//!
//! Then the same count for decoding one stored block whose 64 addresses each have a holder
//! with a kubelet's attributes (`ipam_store::conformance::crowded_block`), as the stores do
//! for every block they read.
//!
//! Run: `cargo run --release -p ipam-benches --bin alloc-count`

use ipam_core::{AutoAssignArgs, Ipam, ManualClock, Pool};
use ipam_store::MemoryStore;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

/// Runs `f`, returning its result with the heap blocks and bytes allocated meanwhile.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let before = dhat::HeapStats::get();
    let out = f();
    let after = dhat::HeapStats::get();
    (
        out,
        after.total_blocks - before.total_blocks,
        after.total_bytes - before.total_bytes,
    )
}

fn ipam_with_fill(n: usize) -> Ipam<MemoryStore> {
    let ipam = Ipam::new(MemoryStore::new(), Arc::new(ManualClock::new(1)));
    let pool = Pool::new("p", "10.244.0.0/16".parse().expect("cidr")).expect("pool");
    ipam.create_pool(pool).expect("create pool");
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "anchor", 1))
        .expect("anchor");
    for i in 1..n.max(1) {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("pod{i}"), 1))
            .expect("fill");
    }
    ipam
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    println!("| fill | auto_assign allocations | bytes | release_by_handle allocations | bytes |");
    println!("|---|---|---|---|---|");
    for (name, n) in [("empty", 1), ("half", 32), ("nearly_full", 62)] {
        let ipam = ipam_with_fill(n);
        let args = AutoAssignArgs::v4("n1", "bench-pod", 1);
        // One round untimed: the node's lock and hint entries exist from then on, as in service.
        ipam.auto_assign(&args).expect("warm assign");
        ipam.release_by_handle("bench-pod").expect("warm release");
        let (got, aa, ab) = counted(|| ipam.auto_assign(&args));
        assert_eq!(got.expect("assign").v4.ips.len(), 1);
        let (rel, ra, rb) = counted(|| ipam.release_by_handle("bench-pod"));
        assert_eq!(rel.expect("release"), 1);
        println!("| {name} | {aa} | {ab} | {ra} | {rb} |");
    }
    let block = ipam_store::conformance::crowded_block();
    let key = ipam_store::sled::keys::encode(&block.key());
    let bytes = ipam_store::sled::codec::encode_plain(&block, ipam_core::Revision(7))
        .expect("the block encodes");
    let (got, n, b) = counted(|| ipam_store::sled::codec::decode(&key, &bytes));
    assert_eq!(got.expect("the block decodes").value, block);
    println!();
    println!("| decode of a block of 64 kubelet-attributed holders | allocations | bytes |");
    println!("|---|---|---|");
    println!("| {} bytes stored | {n} | {b} |", bytes.len());
}
