//! Criterion benchmarks of the allocation hot path, in memory.
//!
//! Cases:
//! - `block/assign/{empty,half,nearly_full}`: the bitmap allocator alone, one address from a
//!   /26 block in that state.
//! - `block/release/{empty,half,nearly_full}`: releasing one address of such a block.
//! - `ipam/auto_assign/{empty,half,nearly_full}`: a full auto-assign of one address from the
//!   node's affine block on the memory store (config, node, pools, affinities, block and
//!   handle reads; one commit).
//! - `ipam/release_by_handle/{...}`: releasing that address by handle (one commit).
//! - `floor/{assign,release}/{...}`: the store work alone that an auto-assign and a release
//!   cannot do without under the datastore contract, on the memory store, with no engine
//!   logic (no lane, read, check or result): the pod's holder attributes built, the block
//!   changed and copied (the store keeps the old version until the commit; the copy written
//!   over the block the last commit handed back, as the engine does), its handle record
//!   built, and one commit of both (block update and handle create; block update and handle
//!   delete). What the engine adds is the whole figure less this.
//! - `floor/timer`: a timed half that does nothing: the clock reads every figure of `ipam` and
//!   `floor` includes.
//! - `ipam/claim/{1024,16384,262144}/{50,99}`: a new node's first assign, which claims a new
//!   block, in a pool of that many /26 blocks with that percentage already claimed.
//!
//! Run: `cargo bench -p ipam-benches --bench core`.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ipam_benches::{block_with, holder, Floor};
use ipam_core::HostReserved;
use ipam_core::{AutoAssignArgs, Ipam, ManualClock, Pool};
use ipam_store::MemoryStore;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILLS: [(&str, usize); 3] = [("empty", 0), ("half", 32), ("nearly_full", 62)];

fn bench_block(c: &mut Criterion) {
    let mut g = c.benchmark_group("block");
    let a = holder("new-pod");
    for (name, n) in FILLS {
        let b = block_with(n);
        g.bench_function(BenchmarkId::new("assign", name), |bench| {
            bench.iter_batched_ref(
                || b.clone(),
                |b| black_box(b.allocate(1, &a)),
                // Batches small enough to stay in cache, as a block just read from the store is.
                BatchSize::NumIterations(64),
            )
        });
        let mut with_one = b.clone();
        let o = with_one.allocate(1, &a)[0];
        g.bench_function(BenchmarkId::new("release", name), |bench| {
            bench.iter_batched_ref(
                || with_one.clone(),
                |b| black_box(b.release(o, 2, 0)),
                // Batches small enough to stay in cache, as a block just read from the store is.
                BatchSize::NumIterations(64),
            )
        });
    }
    g.finish();
}

fn ipam_with_fill(n: usize) -> Ipam<MemoryStore> {
    let ipam = Ipam::new(MemoryStore::new(), Arc::new(ManualClock::new(1)));
    ipam.create_pool(
        Pool::new("p", "10.244.0.0/16".parse().expect("a valid literal")).expect("a valid fixture"),
    )
    .expect("create_pool succeeds");
    // The first assign claims the block; keep it (its handle "anchor") so the block stays.
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "anchor", 1))
        .expect("auto_assign succeeds");
    for i in 1..n.max(1) {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("pod{i}"), 1))
            .expect("auto_assign succeeds");
    }
    ipam
}

/// One half of an assign-then-release round.
#[derive(Clone, Copy, PartialEq)]
enum Half {
    First,
    Second,
}

/// Runs `iters` rounds of `op(First)` then `op(Second)`, timing only the `timed` half.
fn time_half(iters: u64, timed: Half, mut op: impl FnMut(Half)) -> Duration {
    let mut t = Duration::ZERO;
    for _ in 0..iters {
        for h in [Half::First, Half::Second] {
            if h == timed {
                let s = Instant::now();
                op(h);
                t += s.elapsed();
            } else {
                op(h);
            }
        }
    }
    t
}

/// The engine's round: an auto-assign for `args`, then its release by handle.
fn round(ipam: &Ipam<MemoryStore>, args: &AutoAssignArgs, h: Half) {
    match h {
        Half::First => {
            black_box(ipam.auto_assign(args).expect("auto_assign succeeds"));
        }
        Half::Second => {
            black_box(
                ipam.release_by_handle(&args.handle_id)
                    .expect("release_by_handle succeeds"),
            );
        }
    }
}

fn bench_ipam(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipam");
    for (name, n) in FILLS {
        let ipam = ipam_with_fill(n);
        let args = AutoAssignArgs::v4("n1", "bench-pod", 1);
        g.bench_function(BenchmarkId::new("auto_assign", name), |bench| {
            bench.iter_custom(|iters| time_half(iters, Half::First, |h| round(&ipam, &args, h)))
        });
        g.bench_function(BenchmarkId::new("release_by_handle", name), |bench| {
            bench.iter_custom(|iters| time_half(iters, Half::Second, |h| round(&ipam, &args, h)))
        });
    }
    g.finish();
}

/// The contract's floor (see the crate docs and [`Floor`]): one assign and one release per
/// iteration pair, timed apart, on a store that holds the block (and the handle between them).
fn bench_floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    for (name, n) in FILLS {
        let mut floor = Floor::new(n);
        let mut pair = |h: Half| match h {
            Half::First => floor.assign(),
            Half::Second => floor.release(),
        };
        g.bench_function(BenchmarkId::new("assign", name), |bench| {
            bench.iter_custom(|iters| time_half(iters, Half::First, &mut pair))
        });
        g.bench_function(BenchmarkId::new("release", name), |bench| {
            bench.iter_custom(|iters| time_half(iters, Half::Second, &mut pair))
        });
    }
    // The harness's own share of every figure of this group and of `ipam`: a timed half that
    // does nothing (the two clock reads around it).
    g.bench_function("timer", |bench| {
        bench.iter_custom(|iters| {
            time_half(iters, Half::First, |h| {
                black_box(h);
            })
        })
    });
    g.finish();
}

/// A pool of `blocks` /26 blocks with `pct`% claimed, spread evenly, by 1,000 nodes.
fn claimed_pool(blocks: u32, pct: u32) -> Ipam<MemoryStore> {
    let prefix = 26 - blocks.trailing_zeros();
    let ipam = Ipam::new(MemoryStore::new(), Arc::new(ManualClock::new(1)));
    let pool = Pool::new(
        "p",
        format!("10.0.0.0/{prefix}")
            .parse()
            .expect("a valid literal"),
    )
    .expect("a valid fixture");
    ipam.create_pool(pool.clone())
        .expect("create_pool succeeds");
    for slot in 0..blocks {
        // Leave every k-th slot free so the free ones are spread over the pool.
        let free = match pct {
            99 => slot % 100 == 0,
            _ => slot % 2 == 0,
        };
        if !free {
            let node = format!("pre-{}", slot % 1000);
            ipam.claim_affinity(
                pool.block_at(u128::from(slot)),
                &node,
                HostReserved::default(),
            )
            .expect("claim_affinity succeeds");
        }
    }
    ipam
}

fn bench_claim(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipam/claim");
    g.sample_size(30);
    for blocks in [1024u32, 16_384, 262_144] {
        for pct in [50u32, 99] {
            let ipam = claimed_pool(blocks, pct);
            let mut i = 0u64;
            g.bench_function(BenchmarkId::new(blocks.to_string(), pct), |bench| {
                bench.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        i += 1;
                        let node = format!("new-node-{i}");
                        let args = AutoAssignArgs::v4(&node, "h", 1);
                        let s = Instant::now();
                        let got = black_box(ipam.auto_assign(&args).expect("auto_assign succeeds"));
                        t += s.elapsed();
                        ipam.release_by_handle("h")
                            .expect("release_by_handle succeeds");
                        ipam.release_affinity(got.v4.ips[0].block, &node, true)
                            .expect("release_affinity succeeds");
                    }
                    t
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_block, bench_ipam, bench_floor, bench_claim
}
criterion_main!(benches);
