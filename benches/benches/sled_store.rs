//! Criterion benchmarks of the durable sled store.
//!
//! Cases:
//! - `sled/insert_flush`: bare sled, one 256-byte insert followed by `flush` (fsync): the floor
//!   any durable write pays.
//! - `sled/durable_assign`: `Ipam::auto_assign` of one address from the node's affine block on
//!   a `SledStore` (reads, one transaction, one flush).
//! - `sled/durable_release`: `Ipam::release_by_handle` of that address.
//!
//! Run: `cargo bench -p ipam-benches --bench sled_store`.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use ipam_core::{AutoAssignArgs, Ipam, Pool};
use ipam_store::{SledOptions, SledStore, SystemClock};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sled");
    let dir = tempfile::tempdir().unwrap();

    let raw = sled::open(dir.path().join("raw")).unwrap();
    let value = vec![0x5au8; 256];
    let mut i = 0u64;
    g.bench_function("insert_flush", |b| {
        b.iter(|| {
            i += 1;
            raw.insert(i.to_be_bytes(), value.as_slice()).unwrap();
            raw.flush().unwrap();
        })
    });

    let ipam = Ipam::new(
        SledStore::open(dir.path().join("ipam"), &SledOptions::default()).unwrap(),
        Arc::new(SystemClock),
    );
    ipam.create_pool(Pool::new("p", "10.244.0.0/16".parse().unwrap()).unwrap())
        .unwrap();
    // Half-fill the node's block so the measured block is realistic.
    for i in 0..32 {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("pod{i}"), 1))
            .unwrap();
    }
    let args = AutoAssignArgs::v4("n1", "bench", 1);
    g.bench_function("durable_assign", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                let s = Instant::now();
                black_box(ipam.auto_assign(&args).unwrap());
                t += s.elapsed();
                ipam.release_by_handle("bench").unwrap();
            }
            t
        })
    });
    g.bench_function("durable_release", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                ipam.auto_assign(&args).unwrap();
                let s = Instant::now();
                black_box(ipam.release_by_handle("bench").unwrap());
                t += s.elapsed();
            }
            t
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
