//! A bare loop of in-memory auto-assign and release, for `perf record`: the criterion bench
//! builds every group's fixtures in one process (the claim group's pools dominate a profile
//! of it), this builds only the half-full block of `ipam/auto_assign/half`. Prints the mean
//! time of each operation.
//!
//! Run: `cargo build --release -p ipam-benches --example assign_release_loop`, then
//! `perf record --call-graph dwarf ./target/release/examples/assign_release_loop [N [FILL]]`
//! (N rounds, FILL pods in the block beforehand: 32, half of it, unless given).

use ipam_core::{AutoAssignArgs, Ipam, ManualClock, Pool};
use ipam_store::MemoryStore;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let ipam = Ipam::new(MemoryStore::new(), Arc::new(ManualClock::new(1)));
    let pool = Pool::new("p", "10.244.0.0/16".parse().expect("cidr")).expect("pool");
    ipam.create_pool(pool).expect("create pool");
    let arg = |i: usize, default: u32| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    for i in 0..arg(2, 32) {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("pod{i}"), 1))
            .expect("fill");
    }
    let args = AutoAssignArgs::v4("n1", "bench-pod", 1);
    let n = arg(1, 1_000_000);
    let (mut assign, mut release) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let t = Instant::now();
        black_box(ipam.auto_assign(&args).expect("assign"));
        let m = Instant::now();
        black_box(ipam.release_by_handle("bench-pod").expect("release"));
        release += m.elapsed();
        assign += m - t;
    }
    println!(
        "{n} rounds: auto_assign {:?}/op, release_by_handle {:?}/op",
        assign / n,
        release / n
    );
}
