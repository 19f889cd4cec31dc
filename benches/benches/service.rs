//! Criterion benchmark of a CNI ADD and DEL through the node service, in process: the service
//! runs on a thread with a sled store, the client sends protocol requests over its unix socket
//! (what `calico-ipam` does, without the cost of exec'ing the plugin).
//!
//! Cases:
//! - `service/add`: one CNI ADD request answered (durable).
//! - `service/del`: one CNI DEL request answered (durable).
//! - `service/ping`: a protocol round trip that touches no store (the floor).
//! - `service/handler_add`: the same ADD handed to the plugin's handler in this thread (parse,
//!   assign, durable commit, result JSON), no socket: `add` minus this is the socket's share.
//! - `service/socket_floor`: the ping's exchange (connect, one frame each way) with a bare
//!   loop that accepts and answers on one thread: what any unix-socket service pays here.
//!
//! Run: `cargo bench -p ipam-benches --bench service`.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use ipam_benches::cni_env;
use ipam_cni::protocol::{self, Request};
use ipam_core::Ipam;
use ipam_store::{SledOptions, SledStore, SystemClock};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn req(cmd: &str, cid: &str, conf: &str) -> Request {
    Request::cni(cni_env(cmd, cid), conf.to_string(), None)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sock = dir.path().join("ipamd.sock");
    let ipam = Arc::new(Ipam::new(
        SledStore::open(dir.path().join("store"), &SledOptions::default())
            .expect("the store opens"),
        Arc::new(SystemClock),
    ));
    let direct = Arc::clone(&ipam);
    let listener = ipamd::bind(&sock).expect("bind succeeds");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let server = std::thread::spawn(move || {
        ipamd::serve(listener, ipam, s, Arc::new(ipamd::Stats::default())).expect("serve succeeds")
    });
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "bench", "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": "n1", "ipv4_pools": ["10.244.0.0/16"], "log_file_path": "none"}})
    .to_string();
    let t = Duration::from_secs(10);
    for i in 0..32 {
        let r = protocol::call(&sock, &req("ADD", &format!("warm{i}"), &conf), t)
            .expect("the service answers");
        assert_eq!(r.exit_code, 0, "{}", r.stdout);
    }
    let mut g = c.benchmark_group("service");
    let mut n = 0u64;
    g.bench_function("add", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let cid = format!("c{n}");
                let s = Instant::now();
                let r = protocol::call(&sock, &req("ADD", &cid, &conf), t)
                    .expect("the service answers");
                total += s.elapsed();
                assert_eq!(r.exit_code, 0);
                protocol::call(&sock, &req("DEL", &cid, &conf), t).expect("the service answers");
            }
            total
        })
    });
    g.bench_function("del", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let cid = format!("c{n}");
                protocol::call(&sock, &req("ADD", &cid, &conf), t).expect("the service answers");
                let s = Instant::now();
                let r = protocol::call(&sock, &req("DEL", &cid, &conf), t)
                    .expect("the service answers");
                total += s.elapsed();
                assert_eq!(r.exit_code, 0);
            }
            total
        })
    });
    g.bench_function("handler_add", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let cid = format!("c{n}");
                let add = cni_env("ADD", &cid);
                let s = Instant::now();
                let out = ipam_cni::serve(&direct, &add, conf.as_bytes());
                total += s.elapsed();
                assert_eq!(out.exit_code, 0, "{}", out.stdout);
                ipam_cni::serve(&direct, &cni_env("DEL", &cid), conf.as_bytes());
            }
            total
        })
    });
    let ping = Request::ping(None);
    g.bench_function("ping", |b| {
        b.iter(|| protocol::call(&sock, &ping, t).expect("the service answers"))
    });
    let floor_sock = dir.path().join("floor.sock");
    let floor = std::os::unix::net::UnixListener::bind(&floor_sock).expect("bind succeeds");
    std::thread::spawn(move || {
        for c in floor.incoming() {
            let Ok(mut c) = c else { return };
            if protocol::read_frame::<serde_json::Value>(&mut c).is_err() {
                return; // the bench is over
            }
            let pong = protocol::Response {
                version: protocol::VERSION,
                stdout: "pong".into(),
                ..Default::default()
            };
            protocol::write_frame(&mut c, &pong).expect("write_frame succeeds");
        }
    });
    g.bench_function("socket_floor", |b| {
        b.iter(|| protocol::call(&floor_sock, &ping, t).expect("the service answers"))
    });
    g.finish();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    ipamd::wake(&sock);
    server.join().expect("the thread ends");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
