//! Assigns per second from three nodes against one etcd, beside raw etcd puts per second from
//! three clients, in the same run. Each node has its own etcd connection (its own
//! `EtcdStore`) and `THREADS` concurrent requests, as a node service would.
//!
//! Run: `cargo run --release -p ipam-benches --features etcd --bin etcd-bench -- ENDPOINT [PER_NODE]`
//! (an etcd on loopback: see .ci/run for how to start one).

use ipam_core::{AutoAssignArgs, Ipam, Pool};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::SystemClock;
use std::sync::Arc;
use std::time::Instant;

const THREADS: usize = 8;

fn main() {
    let mut args = std::env::args().skip(1);
    let ep = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let per_node: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let prefix = format!("/ipam-bench/{}/", std::process::id());

    // Raw puts: three clients, THREADS concurrent puts each.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for node in 0..3 {
            let client = etcd_client::Client::connect([ep.clone()], None)
                .await
                .expect("connect");
            for th in 0..THREADS {
                let mut c = client.clone();
                let prefix = prefix.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..per_node / THREADS {
                        c.put(format!("{prefix}raw/{node}/{th}/{i}"), vec![0u8; 600], None)
                            .await
                            .expect("put");
                    }
                }));
            }
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    let puts = (per_node / THREADS) * THREADS * 3;
    let put_rate = puts as f64 / t.elapsed().as_secs_f64();

    // Assigns: three nodes, THREADS concurrent requests each.
    let node_ipams: Vec<Arc<Ipam<EtcdStore>>> = (0..3)
        .map(|_| {
            Arc::new(Ipam::new(
                EtcdStore::connect(EtcdOptions {
                    endpoints: vec![ep.clone()],
                    prefix: format!("{prefix}ipam/"),
                    ..Default::default()
                })
                .expect("connect"),
                Arc::new(SystemClock),
            ))
        })
        .collect();
    node_ipams[0]
        .create_pool(Pool::new("p", "10.0.0.0/12".parse().expect("cidr")).expect("pool"))
        .expect("create pool");
    let t = Instant::now();
    let threads: Vec<_> = (0..3 * THREADS)
        .map(|k| {
            let ipam = node_ipams[k % 3].clone();
            std::thread::spawn(move || {
                for i in 0..per_node / THREADS {
                    ipam.auto_assign(&AutoAssignArgs::v4(
                        &format!("node{}", k % 3),
                        &format!("t{k}-{i}"),
                        1,
                    ))
                    .expect("assign");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let assigns = (per_node / THREADS) * THREADS * 3;
    let assign_rate = assigns as f64 / t.elapsed().as_secs_f64();
    let problems = node_ipams[0].audit().expect("audit");
    println!("| measure | count | rate |");
    println!("|---|---|---|");
    println!("| raw etcd puts (3 clients x {THREADS} concurrent) | {puts} | {put_rate:.0}/s |");
    println!("| assigns (3 nodes x {THREADS} concurrent) | {assigns} | {assign_rate:.0}/s |");
    println!(
        "| assign rate / put rate | | {:.2} |",
        assign_rate / put_rate
    );
    let batched: u64 = node_ipams.iter().map(|i| i.batched_assignments()).sum();
    let unread: u64 = node_ipams
        .iter()
        .map(|i| i.assignments_without_read())
        .sum();
    let retries: u64 = node_ipams.iter().map(|i| i.commit_retries()).sum();
    println!(
        "assignments served in a group commit: {batched}; without a read of their own: {unread}; commits lost and retried: {retries}"
    );
    println!(
        "store consistency after the run: {} problems",
        problems.len()
    );
}
