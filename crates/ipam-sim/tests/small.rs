//! The CI configuration: a small cluster with pod and node churn, on memory, on sled and (with
//! the `etcd` feature and `IPAM_TEST_ETCD`) on etcd; no duplicate, no leak, no broken
//! invariant; a seed repeats its run exactly, whatever the store.

use ipam_sim::{run, SimConfig};
use ipam_store::{MemoryStore, SledOptions, SledStore};

fn cfg() -> SimConfig {
    SimConfig {
        nodes: 40,
        pods_per_node: 70,
        rounds: 6,
        churn_pct: 20,
        node_churn: 3,
        pool: "10.0.0.0/18".parse().unwrap(),
        seed: 7,
        workers: 1,
        burst: 1,
    }
}

/// Runs `c` on a sled store in `dir`.
fn on_sled(dir: &std::path::Path, c: &SimConfig) -> ipam_sim::Report {
    run(SledStore::open(dir, &SledOptions::default()).unwrap(), c).unwrap()
}

#[test]
fn small_cluster_on_memory_has_no_duplicate_or_leak() {
    let r = run(MemoryStore::new(), &cfg()).unwrap();
    assert!(r.clean(), "{r:?}");
    assert_eq!(r.pods, 40 * 70);
    assert!(r.operations > 2800 * 2);
    assert!(r.blocks_per_node.2 >= 2, "70 pods need two /26 blocks");
    let again = run(MemoryStore::new(), &cfg()).unwrap();
    assert_eq!(
        (again.blocks, again.borrowed, again.operations),
        (r.blocks, r.borrowed, r.operations)
    );
}

#[test]
fn small_cluster_on_sled_has_no_duplicate_or_leak() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.nodes = 10;
    c.rounds = 3;
    let r = on_sled(d.path(), &c);
    assert!(r.clean(), "{r:?}");
}

#[test]
fn racing_workers_on_one_store_have_no_duplicate_or_leak() {
    let mut c = cfg();
    c.workers = 4;
    // A pool of 64 blocks for 2,800 pods: the workers' nodes claim, borrow and reclaim blocks
    // against each other.
    c.pool = "10.0.0.0/20".parse().unwrap();
    let r = run(MemoryStore::new(), &c).unwrap();
    assert!(r.clean(), "{r:?}");
    assert_eq!(r.pods, 40 * 70);
    assert_eq!(r.nodes, 40);
    assert!(r.borrowed > 0, "{r:?}");
}

#[test]
fn bursts_of_starts_meet_the_group_commit_without_duplicates() {
    // A durable store, so a burst's requests queue behind the first one's flush.
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.nodes = 6;
    c.rounds = 2;
    c.workers = 2;
    c.burst = 8;
    c.pool = "10.0.0.0/21".parse().unwrap();
    let r = on_sled(d.path(), &c);
    assert!(r.clean(), "{r:?}");
    assert_eq!(r.pods, 6 * 70);
    assert!(
        r.batched > 0,
        "no assignment was served in a group commit: {r:?}"
    );
}

#[test]
fn a_tight_pool_borrows_and_refuses_without_duplicates() {
    let mut c = cfg();
    // 64 blocks of 64 for 40 nodes x 70 pods = 2800 addresses of 4096: nodes must borrow.
    c.pool = "10.0.0.0/20".parse().unwrap();
    let r = run(MemoryStore::new(), &c).unwrap();
    assert!(r.clean(), "{r:?}");
    assert!(r.borrowed > 0, "{r:?}");
}

#[cfg(feature = "etcd")]
#[test]
fn small_cluster_on_etcd_matches_the_memory_run() {
    let Some(ep) = ipam_test_support::etcd_endpoint() else {
        return;
    };
    let mut c = cfg();
    c.nodes = 8;
    c.pods_per_node = 40;
    c.rounds = 3;
    c.node_churn = 2;
    // 16 blocks for 8 nodes that each want one, plus replacements: some borrow.
    c.pool = "10.0.0.0/22".parse().unwrap();
    let store = ipam_store::etcd::EtcdStore::connect(ipam_store::etcd::EtcdOptions {
        endpoints: vec![ep],
        prefix: format!("/ipam-test/sim-{}/", std::process::id()),
        ..Default::default()
    })
    .unwrap();
    let on_etcd = run(store, &c).unwrap();
    assert!(on_etcd.clean(), "{on_etcd:?}");
    assert_eq!(on_etcd.pods, 8 * 40);
    // The engine's choices depend only on what the store holds, not on which store holds it.
    let in_memory = run(MemoryStore::new(), &c).unwrap();
    assert_eq!(
        (
            on_etcd.blocks,
            on_etcd.borrowed,
            on_etcd.operations,
            on_etcd.exhausted
        ),
        (
            in_memory.blocks,
            in_memory.borrowed,
            in_memory.operations,
            in_memory.exhausted
        )
    );
}
