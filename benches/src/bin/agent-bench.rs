//! What a route agent's pass costs etcd: read every affinity, node and workload endpoint
//! (`Ipam::routes_for`, the agent on a store without a feed) against a copy kept by the
//! store's watch (`Ipam::watch_routes`).
//!
//! `agent-bench ETCD_URL [NODES] [PODS_PER_NODE]` (defaults 200 and 110) writes that many
//! node records, two confirmed affinities per node and one endpoint per pod under a fresh
//! prefix, then measures: a polling pass's time and etcd's CPU per pass; the time to the
//! watch's first snapshot; etcd's CPU over ten idle 100 ms passes on the copy; how long a new
//! endpoint takes to reach the copy; and what computing the routes from the copy costs (a
//! pass after a change); then the same first snapshot for the view a node in bgp mode follows
//! (its own affinities and endpoints and the node list, `RouteView::Own`). Build with
//! `--features etcd`.

use ipam_benches::{cpu_of, etcd_pids};
use ipam_core::{
    endpoint_id, Affinity, AffinityState, Datastore, Endpoint, Ipam, Node, Record, RouteSource,
    RouteView, Write,
};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::SystemClock;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn etcd_cpu() -> Duration {
    etcd_pids().iter().filter_map(|p| cpu_of(*p)).sum()
}

fn endpoint(node: u32, pod: u32) -> Record {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 + node * 128 + pod);
    let cid = format!(
        "{:016x}",
        ipam_benches::mix("cid", u64::from(node) * 1000 + u64::from(pod))
    );
    let handle_id = format!("k8s-pod-network.{cid}");
    Record::Endpoint(Box::new(Endpoint {
        node: format!("node-{node}"),
        id: endpoint_id(&handle_id, "eth0"),
        network: "k8s-pod-network".into(),
        container_id: cid,
        ifname: "eth0".into(),
        handle_id,
        namespace: Some("production-web".into()),
        pod: Some(format!("web-frontend-{node}-{pod}")),
        addresses: vec![format!("{ip}/32").parse().expect("an address")],
        ..Endpoint::default()
    }))
}

/// A route copy of `view` for `node`, once its snapshot arrived; prints (as row `what`) how
/// long that took and what it cost etcd.
fn synced(ipam: &Ipam<Arc<EtcdStore>>, node: &str, view: RouteView, what: &str) -> RouteSource {
    let (cpu, t) = (etcd_cpu(), Instant::now());
    let mut source = ipam
        .watch_routes(node, view)
        .expect("a feed")
        .expect("etcd has one");
    while !(source.update() && source.synced()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "| {what} | {:.1} ms | etcd CPU {:.1} ms |",
        t.elapsed().as_secs_f64() * 1e3,
        (etcd_cpu() - cpu).as_secs_f64() * 1e3
    );
    source
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ep = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let nodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let pods: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(110)
        .min(128);
    let store = Arc::new(
        EtcdStore::connect(EtcdOptions {
            endpoints: vec![ep.clone()],
            prefix: format!("/agent-bench/{}/", std::process::id()),
            ..Default::default()
        })
        .expect("etcd answers"),
    );
    let ipam = Ipam::new(Arc::clone(&store), Arc::new(SystemClock));

    // The cluster's records, 64 writes a commit.
    let mut writes = Vec::new();
    for n in 0..nodes {
        let mut node = Node::new(&format!("node-{n}")).expect("a valid name");
        node.set_address(std::net::IpAddr::from(std::net::Ipv4Addr::from(
            0xac12_0002 + n,
        )));
        writes.push(Write::Create(Record::Node(node)));
        for half in 0..2u32 {
            let cidr = std::net::Ipv4Addr::from(0x0a00_0000 + n * 128 + half * 64);
            writes.push(Write::Create(Record::Affinity(Affinity::new(
                &format!("node-{n}"),
                format!("{cidr}/26").parse().expect("a /26"),
                AffinityState::Confirmed,
            ))));
        }
        for p in 0..pods {
            writes.push(Write::Create(endpoint(n, p)));
        }
    }
    let records = writes.len();
    let t = Instant::now();
    let mut rest = writes;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(64));
        let batch = std::mem::replace(&mut rest, tail);
        store.commit(batch).expect("written");
    }
    println!(
        "{nodes} nodes, {} affinities, {} endpoints: {records} records written in {:.1} s",
        nodes * 2,
        nodes * pods,
        t.elapsed().as_secs_f64()
    );

    // Polling: every record of the three ranges each pass.
    let passes = 10;
    let (cpu, t) = (etcd_cpu(), Instant::now());
    for _ in 0..passes {
        let (routes, _) = ipam.routes_for("node-0").expect("routes");
        assert_eq!(routes.len() as u64, u64::from(nodes) * 2);
    }
    let poll = t.elapsed() / passes;
    let poll_cpu = (etcd_cpu() - cpu) / passes;
    println!(
        "| polling pass (reads every record) | {:.1} ms | etcd CPU {:.1} ms |",
        poll.as_secs_f64() * 1e3,
        poll_cpu.as_secs_f64() * 1e3
    );

    // The watch: one listing, then nothing while nothing changes.
    let mut source = synced(
        &ipam,
        "node-0",
        RouteView::Cluster,
        "first snapshot of the watch",
    );
    assert_eq!(
        source.routes_for("node-0").0.len() as u64,
        u64::from(nodes) * 2
    );
    source.take_changed();
    let (cpu, t) = (etcd_cpu(), Instant::now());
    for _ in 0..passes {
        std::thread::sleep(Duration::from_millis(100));
        assert!(source.update());
        assert!(!source.take_changed(), "nothing was written");
    }
    println!(
        "| {passes} idle passes on the copy ({:.1} s) | - | etcd CPU {:.1} ms in all |",
        t.elapsed().as_secs_f64(),
        (etcd_cpu() - cpu).as_secs_f64() * 1e3
    );
    // New endpoints, one at a time: how long each takes to reach the copy.
    let mut lag = Vec::new();
    for i in 0..20 {
        let Record::Endpoint(mut e) = endpoint(1, 0) else {
            unreachable!()
        };
        e.handle_id = format!("late-{i}");
        e.id = endpoint_id(&e.handle_id, "eth0");
        e.addresses = vec![format!("10.0.0.{}/32", 100 + i)
            .parse()
            .expect("an address")];
        let t = Instant::now();
        ipam.put_endpoint(&e).expect("written");
        while !(source.update() && source.take_changed()) {
            std::thread::sleep(Duration::from_micros(200));
        }
        lag.push(t.elapsed());
    }
    lag.sort();
    // What a pass after a change costs this node: the routes computed from the copy.
    let t = Instant::now();
    for _ in 0..passes {
        let (routes, _) = source.routes_for("node-0");
        assert!(
            routes.len() as u64 > u64::from(nodes) * 2,
            "the late endpoints borrowed"
        );
    }
    println!(
        "| routes computed from the copy (a pass after a change) | {:.1} ms | no etcd |",
        (t.elapsed() / passes).as_secs_f64() * 1e3
    );
    println!(
        "| a new endpoint reaches the copy (20 writes: median / max) | {:.2} / {:.2} ms | |",
        lag[10].as_secs_f64() * 1e3,
        lag[19].as_secs_f64() * 1e3
    );
    drop(source);

    // A node in bgp mode: its own records and the node list.
    let own = synced(
        &ipam,
        "node-1",
        RouteView::Own,
        "bgp mode's view (own records, every node): first snapshot",
    );
    let (routes, borrowed) = own.routes_for("node-1");
    assert_eq!(routes.len(), 2, "its two blocks, no route via another node");
    assert_eq!(borrowed.len(), 20, "the late endpoints borrowed");
    assert_eq!(own.nodes().len() as u64, u64::from(nodes));
}
