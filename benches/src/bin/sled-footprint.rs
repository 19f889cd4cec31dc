//! Size on disk of the sled store per 10,000 allocations, and its open time at 100,000.
//!
//! Allocates 100,000 addresses (100 nodes, 8 threads, one address per handle, as CNI does),
//! printing the store's size every 10,000; then reopens it several times and prints the
//! median open time, next to the open time of an empty store.
//!
//! Run: `cargo run --release -p ipam-benches --bin sled-footprint`.

use ipam_core::{AutoAssignArgs, Pool};
use ipam_store::{Observed, SledOptions, SledStore, SystemClock};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn median_open(dir: &Path) -> Duration {
    let mut t: Vec<Duration> = (0..7)
        .map(|_| {
            let s = Instant::now();
            let store = SledStore::open(dir, &SledOptions::default()).expect("open");
            let e = s.elapsed();
            drop(store);
            e
        })
        .collect();
    t.sort();
    t[3]
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty");
    drop(SledStore::open(&empty, &SledOptions::default()).expect("open"));
    let empty_open = median_open(&empty);

    let dir = tmp.path().join("store");
    let ipam = Arc::new(Observed::new(
        SledStore::open(&dir, &SledOptions::default()).expect("open"),
        Arc::new(SystemClock),
    ));
    ipam.create_pool(Pool::new("p", "10.0.0.0/8".parse().expect("cidr")).expect("pool"))
        .expect("create pool");
    println!("| allocations | sled size_on_disk | files on disk | bytes per allocation |");
    println!("|---|---|---|---|");
    let started = Instant::now();
    for step in 1..=10u64 {
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let ipam = ipam.clone();
                std::thread::spawn(move || {
                    for i in (t..10_000).step_by(8) {
                        let n = (step - 1) * 10_000 + i;
                        let node = format!("node-{}", n % 100);
                        ipam.auto_assign(&AutoAssignArgs::v4(&node, &format!("pod-{n}"), 1))
                            .expect("assign");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let n = step * 10_000;
        let files = dir_bytes(&dir);
        println!(
            "| {n} | {:.1} MiB | {:.1} MiB | {} |",
            ipam.store().size_on_disk() as f64 / 1048576.0,
            files as f64 / 1048576.0,
            files / n
        );
    }
    let elapsed = started.elapsed();
    let (commits, flushes) = ipam.store().commit_stats();
    drop(ipam);
    println!();
    println!(
        "100,000 durable assigns from 8 threads: {:.1} s ({:.0}/s); {commits} commits, {flushes} flushes",
        elapsed.as_secs_f64(),
        100_000.0 / elapsed.as_secs_f64()
    );
    println!(
        "open time (median of 7): empty store {:.1} ms, 100,000 allocations {:.1} ms",
        empty_open.as_secs_f64() * 1e3,
        median_open(&dir).as_secs_f64() * 1e3
    );
}
