//! Criterion benchmarks of the durable sled store.
//!
//! Cases:
//! - `sled/insert_flush`: bare sled, one 256-byte insert followed by `flush` (fsync): the floor
//!   any durable write pays.
//! - `sled/insert_flush_same_size`: bare sled, one batch of the two values an assign writes
//!   (the half-full block and the new handle, encoded as the store encodes them) followed by
//!   `flush`: the floor for exactly the bytes `durable_assign` makes durable.
//! - `sled/durable_assign`: `Ipam::auto_assign` of one address from the node's affine block on
//!   a `SledStore` (reads, one transaction, one flush).
//! - `sled/durable_release`: `Ipam::release_by_handle` of that address.
//! - `codec/decode_crowded_block`: decoding one stored block whose 64 addresses each have a
//!   holder with a kubelet's attributes (what every store does for every block it reads).
//!
//! Run: `cargo bench -p ipam-benches --bench sled_store`.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use ipam_core::{AutoAssignArgs, Handle, Ipam, Pool, Record, Revision};
use ipam_store::{SledOptions, SledStore, SystemClock};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sled");
    let dir = tempfile::tempdir().expect("a temporary directory");

    let raw = sled::open(dir.path().join("raw")).expect("the store opens");
    let value = vec![0x5au8; 256];
    let mut i = 0u64;
    g.bench_function("insert_flush", |b| {
        b.iter(|| {
            i += 1;
            raw.insert(i.to_be_bytes(), value.as_slice())
                .expect("insert succeeds");
            raw.flush().expect("flush succeeds");
        })
    });

    let ipam = Ipam::new(
        SledStore::open(dir.path().join("ipam"), &SledOptions::default()).expect("the store opens"),
        Arc::new(SystemClock),
    );
    ipam.create_pool(
        Pool::new("p", "10.244.0.0/16".parse().expect("a valid literal")).expect("a valid fixture"),
    )
    .expect("create_pool succeeds");
    // Half-fill the node's block so the measured block is realistic.
    for i in 0..32 {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("pod{i}"), 1))
            .expect("auto_assign succeeds");
    }
    let args = AutoAssignArgs::v4("n1", "bench", 1);
    // The bytes one assign commits: the block after the assign and the handle it creates.
    let got = ipam
        .auto_assign(&args)
        .expect("auto_assign succeeds")
        .v4
        .ips[0];
    let block = ipam
        .block(got.block)
        .expect("the block reads")
        .expect("the record is there")
        .value;
    let mut handle = Handle::new("bench");
    handle.add(got.block, 1);
    let values = [Record::Block(block), Record::Handle(handle)]
        .map(|r| ipam_store::sled::codec::encode(&r, Revision(1)).expect("encode succeeds"));
    ipam.release_by_handle("bench")
        .expect("release_by_handle succeeds");
    eprintln!(
        "an assign commits {} + {} bytes (block + handle)",
        values[0].len(),
        values[1].len()
    );
    g.bench_function("insert_flush_same_size", |b| {
        b.iter(|| {
            i += 1;
            let mut batch = sled::Batch::default();
            batch.insert(&i.to_be_bytes()[..], values[0].as_slice());
            batch.insert(&(i | 1 << 63).to_be_bytes()[..], values[1].as_slice());
            raw.apply_batch(batch).expect("apply_batch succeeds");
            raw.flush().expect("flush succeeds");
        })
    });
    g.bench_function("durable_assign", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                let s = Instant::now();
                black_box(ipam.auto_assign(&args).expect("auto_assign succeeds"));
                t += s.elapsed();
                ipam.release_by_handle("bench")
                    .expect("release_by_handle succeeds");
            }
            t
        })
    });
    g.bench_function("durable_release", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                ipam.auto_assign(&args).expect("auto_assign succeeds");
                let s = Instant::now();
                black_box(
                    ipam.release_by_handle("bench")
                        .expect("release_by_handle succeeds"),
                );
                t += s.elapsed();
            }
            t
        })
    });
    g.finish();
}

fn bench_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let block = ipam_store::conformance::crowded_block();
    let key = ipam_store::sled::keys::encode(&block.key());
    let bytes =
        ipam_store::sled::codec::encode_plain(&block, Revision(7)).expect("the block encodes");
    g.bench_function("decode_crowded_block", |b| {
        b.iter(|| black_box(ipam_store::sled::codec::decode(&key, black_box(&bytes))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench, bench_codec
}
criterion_main!(benches);
