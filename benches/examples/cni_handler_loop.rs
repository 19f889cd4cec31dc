//! A bare loop of CNI ADD and DEL through the plugin's handler (`ipam_cni::serve`) on the
//! memory store, for `valgrind --tool=callgrind` or `perf record`: what the CNI layer (the
//! request's parse, the result's JSON) costs above the engine's assign and release, with no
//! socket, no store I/O and no fsync. Prints the mean time of each.
//!
//! Run: `cargo build --release -p ipam-benches --example cni_handler_loop`, then
//! `./target/release/examples/cni_handler_loop [N]` (N rounds; 32 pods in the block
//! beforehand, as `assign_release_loop`).

use ipam_benches::cni_env;
use ipam_core::{Ipam, ManualClock, Pool};
use ipam_store::MemoryStore;
use std::time::{Duration, Instant};

fn main() {
    let ipam = Ipam::new(MemoryStore::new(), std::sync::Arc::new(ManualClock::new(1)));
    let pool = Pool::new("p", "10.244.0.0/16".parse().expect("cidr")).expect("pool");
    ipam.create_pool(pool).expect("create pool");
    let conf = r#"{"cniVersion": "1.0.0", "name": "bench", "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": "n1", "ipv4_pools": ["10.244.0.0/16"],
        "log_file_path": "none"}}"#;
    for i in 0..32 {
        let out = ipam_cni::serve(&ipam, &cni_env("ADD", &format!("fill{i}")), conf.as_bytes());
        assert_eq!(out.exit_code, 0, "{}", out.stdout);
    }
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let (add, del) = (cni_env("ADD", "bench-pod"), cni_env("DEL", "bench-pod"));
    let (mut t_add, mut t_del) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let t = Instant::now();
        let out = ipam_cni::serve(&ipam, &add, conf.as_bytes());
        let m = Instant::now();
        assert_eq!(out.exit_code, 0, "{}", out.stdout);
        let out = ipam_cni::serve(&ipam, &del, conf.as_bytes());
        t_del += m.elapsed();
        t_add += m - t;
        assert_eq!(out.exit_code, 0, "{}", out.stdout);
    }
    println!(
        "{n} rounds: CNI ADD {:?}/op, CNI DEL {:?}/op",
        t_add / n,
        t_del / n
    );
}
