//! Assigns per second from three nodes against one etcd, beside raw etcd puts per second from
//! three clients, in the same run. Each node has its own etcd connection (its own
//! `EtcdStore`) and CONCURRENCY (8 unless given) concurrent requests, as a node service would. Then the same
//! through three real node services: `calico-ipamd` processes (found next to this binary,
//! built with the `etcd` feature), each sent CONCURRENCY (8 unless given) concurrent CNI ADDs over its socket,
//! then the DELs of those pods.
//!
//! Run: `cargo build --release -p ipamd --features etcd --bin calico-ipamd`, then
//! `cargo run --release -p ipam-benches --features etcd --bin etcd-bench -- ENDPOINT [PER_NODE
//! [CONCURRENCY]]`
//! (an etcd on loopback: see .ci/run for how to start one; PER_NODE at most 1,280, a node's
//! 20 blocks of 64). With `ETCD_BENCH_KUBELET=1` the CNI calls carry what kubelet's do (64-hex
//! container ids, the pod's namespace, name and uid), so blocks hold real-sized owner records;
//! with `ETCD_BENCH_ATTRS=1` the engines' assigns carry the owner attributes a CNI ADD records
//! (network, container id, interface, timestamp) instead of the node's name alone.
//! The bench compacts etcd's history when it starts and removes its keys when it ends: point
//! it at a dedicated etcd.

use ipam_benches::{cpu_of, etcd_pids};
use ipam_cni::protocol::{self, Request};
use ipam_core::{AutoAssignArgs, Ipam, Pool};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::SystemClock;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node service started for the run; stopped (SIGTERM, then waited for) when dropped.
struct Service {
    child: Child,
    socket: PathBuf,
    /// Where it serves its metrics.
    metrics: std::net::SocketAddr,
}

impl Service {
    /// The service's counter `name` from its metrics page, if it answers.
    fn counter(&self, name: &str) -> Option<u64> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(self.metrics).ok()?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .ok()?;
        let mut page = String::new();
        c.read_to_string(&mut page).ok()?;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }
}

/// A free loopback port for a service's metrics (released here, taken by the service).
fn free_addr() -> Option<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
}

impl Drop for Service {
    fn drop(&mut self) {
        // One that already exited (it failed to start) is only reaped.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
    }
}

/// etcd's counters at `ep` (`http://host:port`): requests answered by method (Txn, Range,
/// Put), WAL fsyncs, bytes written to the WAL and bytes received from clients; zeros when the
/// metrics page does not answer.
fn etcd_counters(ep: &str) -> [f64; 6] {
    use std::io::{Read, Write};
    let mut out = [0.0; 6];
    let Some(addr) = ep.strip_prefix("http://") else {
        return out;
    };
    let mut page = String::new();
    let fetched = std::net::TcpStream::connect(addr).and_then(|mut c| {
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        c.read_to_string(&mut page)
    });
    if fetched.is_err() {
        return out;
    }
    for line in page.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let slot = if name == "etcd_disk_wal_fsync_duration_seconds_count" {
            3
        } else if name == "etcd_disk_wal_write_bytes_total" {
            4
        } else if name == "etcd_network_client_grpc_received_bytes_total" {
            5
        } else if !name.starts_with("grpc_server_handled_total{") {
            continue;
        } else if name.contains("grpc_method=\"Txn\"") {
            0
        } else if name.contains("grpc_method=\"Range\"") {
            1
        } else if name.contains("grpc_method=\"Put\"") {
            2
        } else {
            continue;
        };
        out[slot] += v;
    }
    out
}

/// Context switches (voluntary and not) of every thread of process `pid`, from
/// `/proc/PID/task/*/status`: each is a thread put to sleep or preempted. Threads that have
/// ended are not counted.
fn switches_of(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// CPU used so far by etcd, by the node services and by this process, and etcd's counters.
#[derive(Clone, Copy, Default)]
struct Cpu {
    etcd: Duration,
    services: Duration,
    bench: Duration,
    /// Txn, Range and Put requests answered, WAL fsyncs, WAL bytes, bytes from clients.
    counters: [f64; 6],
    /// Context switches of the services' threads.
    service_switches: u64,
}

impl Cpu {
    fn now(ep: &str, services: &[u32]) -> Cpu {
        let sum = |pids: &[u32]| pids.iter().filter_map(|p| cpu_of(*p)).sum();
        Cpu {
            etcd: sum(&etcd_pids()),
            services: sum(services),
            bench: sum(&[std::process::id()]),
            counters: etcd_counters(ep),
            service_switches: services.iter().map(|p| switches_of(*p)).sum(),
        }
    }

    /// A table row: CPU per operation of each party between `self` and `later`, and the rate
    /// two cores could sustain at that cost, beside the rate measured.
    fn row(&self, later: &Cpu, what: &str, ops: usize, rate: f64) -> String {
        let per = |a: Duration, b: Duration| (b.saturating_sub(a)).as_secs_f64() * 1e6 / ops as f64;
        let (e, s, b) = (
            per(self.etcd, later.etcd),
            per(self.services, later.services),
            per(self.bench, later.bench),
        );
        let total = e + s + b;
        let n = |i: usize| (later.counters[i] - self.counters[i]) / ops as f64;
        let switches =
            later.service_switches.saturating_sub(self.service_switches) as f64 / ops as f64;
        format!(
            "| {what} | {e:.0} | {s:.0} | {b:.0} | {total:.0} | {:.0}/s | {rate:.0}/s | {:.2} / {:.2} / {:.2} | {:.2} | {:.0} / {:.0} | {switches:.1} |",
            2e6 / total,
            n(0),
            n(1),
            n(2),
            n(3),
            n(4),
            n(5)
        )
    }
}

/// How [`raw_writes`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Raw {
    /// Plain puts.
    Put,
    /// Transactions that create the key only if it is absent.
    Guarded,
    /// The same, also comparing one shared key's revision (as every commit of the etcd store
    /// compares its layout mark's).
    GuardedAndMark,
}

/// PER_NODE writes of 600 bytes from each of three clients, CONCURRENCY at a time, under
/// `prefix`, as `how` says. The wall time.
fn raw_writes(
    rt: &tokio::runtime::Runtime,
    ep: &str,
    prefix: &str,
    per_node: usize,
    how: Raw,
) -> Duration {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let mark = format!("{prefix}mark");
    let mark_rev = rt.block_on(async {
        let mut c = etcd_client::Client::connect([ep.to_string()], None)
            .await
            .expect("connect");
        let r = c.put(mark.clone(), "compressed", None).await.expect("put");
        r.header().map_or(0, |h| h.revision())
    });
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for node in 0..3 {
            let client = etcd_client::Client::connect([ep.to_string()], None)
                .await
                .expect("connect");
            for th in 0..concurrency() {
                let mut c = client.clone();
                let prefix = prefix.to_string();
                let mark = mark.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..per_node / concurrency() {
                        let key = format!("{prefix}{node}/{th}/{i}");
                        if how != Raw::Put {
                            let mut when =
                                vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
                            if how == Raw::GuardedAndMark {
                                when.push(Compare::mod_revision(
                                    mark.clone(),
                                    CompareOp::Equal,
                                    mark_rev,
                                ));
                            }
                            let txn = Txn::new().when(when).and_then([TxnOp::put(
                                key,
                                vec![0u8; 600],
                                None,
                            )]);
                            let r = c.txn(txn).await.expect("txn");
                            assert!(r.succeeded(), "a fresh key exists already");
                        } else {
                            c.put(key, vec![0u8; 600], None).await.expect("put");
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    t.elapsed()
}

/// Starts three `calico-ipamd` on `prefix`; `None` (and why, on stderr) if one does not come up.
fn services(ep: &str, prefix: &str, dir: &Path) -> Option<Vec<Service>> {
    let bin = std::env::current_exe().ok()?.parent()?.join("calico-ipamd");
    let mut out = Vec::new();
    for i in 0..3 {
        let socket = dir.join(format!("node{i}.sock"));
        let metrics = free_addr()?;
        let child = Command::new(&bin)
            .arg("--socket")
            .arg(&socket)
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(["--etcd-endpoints", ep, "--etcd-prefix", prefix])
            .args(["--node-name", &format!("node{i}"), "--log-level", "error"])
            .spawn()
            .map_err(|e| eprintln!("cannot start {}: {e}", bin.display()))
            .ok()?;
        out.push(Service {
            child,
            socket,
            metrics,
        });
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&out[i].socket).is_err() {
            if t.elapsed() > Duration::from_secs(20)
                || matches!(out[i].child.try_wait(), Ok(Some(_)))
            {
                eprintln!(
                    "node service {i} did not start (is {} built with etcd? \
                     cargo build --release --workspace --all-features --bins)",
                    bin.display()
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Some(out)
}

/// Whether CNI calls look as kubelet's do (`ETCD_BENCH_KUBELET=1`): 64-hex container ids, the
/// network `k8s-pod-network`, and the pod named in `CNI_ARGS`, so each address carries the
/// owner attributes a real pod's does (its block record grows to what a real node's holds).
fn kubelet() -> bool {
    static K: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *K.get_or_init(|| std::env::var("ETCD_BENCH_KUBELET").is_ok_and(|v| v == "1"))
}

/// One CNI `verb` through a node service; its exit code.
fn cni(svc: &Service, verb: &str, node: &str, cid: &str) -> i32 {
    let network = if kubelet() {
        "k8s-pod-network"
    } else {
        "bench"
    };
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": network, "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": node, "ipv4_pools": ["10.0.0.0/12"],
                 "datastore_type": "etcdv3", "etcd_endpoints": "unused-through-the-service",
                 "log_file_path": "none"}});
    let mut env = ipam_benches::cni_env(verb, cid);
    if kubelet() {
        // A sandbox id as runtimes make them, and the pod kubelet names.
        let hex: String = (0..4)
            .map(|i| format!("{:016x}", ipam_benches::mix(cid, i)))
            .collect();
        let pod = format!("web-frontend-7d4b9c6f5-{cid}");
        env.insert("CNI_CONTAINERID".into(), hex.clone());
        env.insert(
            "CNI_ARGS".into(),
            format!(
                "K8S_POD_NAMESPACE=production-web;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={hex};K8S_POD_UID={:08x}-0000-4000-8000-{:012x}",
                ipam_benches::mix(cid, 9) >> 32,
                ipam_benches::mix(cid, 10) >> 16
            ),
        );
    }
    let req = Request::cni(env, conf.to_string(), None);
    match protocol::call(&svc.socket, &req, Duration::from_secs(60)) {
        Ok(r) => r.exit_code,
        Err(e) => {
            eprintln!("{verb} {cid}: {e:?}");
            -1
        }
    }
}

/// CNI `verb` for pod `c{k}-{i}` through service k % 3, PER_NODE per node from 3 x CONCURRENCY
/// threads; the failed calls and the wall time.
fn through_services(
    svcs: &Arc<Vec<Service>>,
    verb: &'static str,
    per_node: usize,
) -> (usize, Duration) {
    let t = Instant::now();
    let threads: Vec<_> = (0..3 * concurrency())
        .map(|k| {
            let svcs = svcs.clone();
            std::thread::spawn(move || {
                let mut failed = 0;
                for i in 0..per_node / concurrency() {
                    let (node, cid) = (format!("node{}", k % 3), format!("c{k}-{i}"));
                    if cni(&svcs[k % 3], verb, &node, &cid) != 0 {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let failed = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    (failed, t.elapsed())
}

/// Addresses held in the store.
fn held(ipam: &Ipam<EtcdStore>) -> u64 {
    ipam.blocks(&ipam_core::Range::Blocks)
        .expect("blocks")
        .iter()
        .map(|b| u64::from(b.value.used_count()))
        .sum()
}

/// Concurrent requests per node (and puts per client): the third argument, 8 by default.
static CONCURRENCY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn concurrency() -> usize {
    *CONCURRENCY.get().unwrap_or(&8)
}

/// Runs `step(engine, k, i)` for i in 0..PER_NODE/CONCURRENCY on 3 x CONCURRENCY threads, thread k
/// on node engine k % 3; returns the wall time.
fn drive(
    engines: &[Arc<Ipam<EtcdStore>>],
    per_node: usize,
    step: fn(&Ipam<EtcdStore>, usize, usize),
) -> Duration {
    let t = Instant::now();
    let threads: Vec<_> = (0..3 * concurrency())
        .map(|k| {
            let ipam = engines[k % 3].clone();
            std::thread::spawn(move || {
                for i in 0..per_node / concurrency() {
                    step(&ipam, k, i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    t.elapsed()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ep = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let per_node: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    if let Some(c) = args.next().and_then(|a| a.parse().ok()).filter(|c| *c > 0) {
        let _ = CONCURRENCY.set(c);
    }
    let c = concurrency();
    let mut cpu_rows = Vec::new();
    let prefix = format!("/ipam-bench/{}/", std::process::id());

    // Raw writes: three clients, CONCURRENCY concurrent writes each; plain puts (the goal's
    // yardstick), then each key created by a transaction guarded as an assignment's handle
    // record is (absent before), the least a compare-and-swap write costs etcd.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // etcd's history up to now compacted away, as a cluster's etcd is every few minutes: runs
    // on one etcd then start alike instead of each slower than the last (for a dedicated etcd).
    let compacted = rt.block_on(async {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await?;
        let rev = c.get("/", None).await?.header().map_or(0, |h| h.revision());
        c.compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .map(|_| rev)
    });
    match compacted {
        Ok(rev) => println!("etcd history compacted up to revision {rev}"),
        Err(e) => println!("etcd history not compacted: {e}"),
    }
    let puts = (per_node / concurrency()) * concurrency() * 3;
    let cpu = Cpu::now(&ep, &[]);
    let put_rate = puts as f64
        / raw_writes(&rt, &ep, &format!("{prefix}raw/"), per_node, Raw::Put).as_secs_f64();
    let after_puts = Cpu::now(&ep, &[]);
    cpu_rows.push(cpu.row(&after_puts, "raw puts", puts, put_rate));
    let guarded_rate = puts as f64
        / raw_writes(
            &rt,
            &ep,
            &format!("{prefix}guarded/"),
            per_node,
            Raw::Guarded,
        )
        .as_secs_f64();
    let after_guarded = Cpu::now(&ep, &[]);
    cpu_rows.push(after_puts.row(
        &after_guarded,
        "raw guarded creates (one key per transaction)",
        puts,
        guarded_rate,
    ));
    let marked_rate = puts as f64
        / raw_writes(
            &rt,
            &ep,
            &format!("{prefix}marked/"),
            per_node,
            Raw::GuardedAndMark,
        )
        .as_secs_f64();
    cpu_rows.push(after_guarded.row(
        &Cpu::now(&ep, &[]),
        "raw guarded creates also comparing a shared mark",
        puts,
        marked_rate,
    ));

    // Assigns: three nodes, CONCURRENCY concurrent requests each.
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
    let cpu = Cpu::now(&ep, &[]);
    let took = drive(&node_ipams, per_node, |ipam, k, i| {
        let mut a = AutoAssignArgs::v4(&format!("node{}", k % 3), &format!("t{k}-{i}"), 1);
        if std::env::var("ETCD_BENCH_ATTRS").is_ok() {
            a.attrs = [
                ("network", "bench".to_string()),
                ("containerID", format!("c{k}-{i}")),
                ("ifname", "eth0".to_string()),
                ("timestamp", "2026-12-01T23:59:59Z".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        }
        ipam.auto_assign(&a).expect("assign");
    });
    let assigns = (per_node / concurrency()) * concurrency() * 3;
    let assign_rate = assigns as f64 / took.as_secs_f64();
    cpu_rows.push(cpu.row(
        &Cpu::now(&ep, &[]),
        "assigns, engines in this process",
        assigns,
        assign_rate,
    ));
    let problems = node_ipams[0].audit().expect("audit");
    println!("| measure | count | rate |");
    println!("|---|---|---|");
    println!("| raw etcd puts (3 clients x {c} concurrent) | {puts} | {put_rate:.0}/s |");
    println!("| raw guarded creates, a transaction each (3 clients x {c} concurrent) | {puts} | {guarded_rate:.0}/s |");
    println!("| the same, also comparing a shared mark's revision (3 clients x {c} concurrent) | {puts} | {marked_rate:.0}/s |");
    println!("| assigns (3 nodes x {c} concurrent) | {assigns} | {assign_rate:.0}/s |");
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

    // Churn: each thread releases every other pod it started, between its assigns, as a
    // node's DELs come between its ADDs.
    let before: u64 = node_ipams
        .iter()
        .map(|i| i.assignments_without_read())
        .sum();
    let took = drive(&node_ipams, per_node, |ipam, k, i| {
        let h = format!("churn{k}-{i}");
        ipam.auto_assign(&AutoAssignArgs::v4(&format!("churn-node{}", k % 3), &h, 1))
            .expect("assign");
        if i % 2 == 1 {
            ipam.release_by_handle(&h).expect("release");
        }
    });
    let ops = assigns + assigns / 2;
    let churn_rate = ops as f64 / took.as_secs_f64();
    let unread = node_ipams
        .iter()
        .map(|i| i.assignments_without_read())
        .sum::<u64>()
        - before;
    let problems = node_ipams[0].audit().expect("audit");
    println!();
    println!(
        "| assigns with every other released between them (3 nodes x {c} concurrent) | {ops} operations | {churn_rate:.0}/s |"
    );
    println!(
        "churn: {unread} of {assigns} assignments without a read of their own; store consistency: {} problems",
        problems.len()
    );

    // The same through three node services, over their sockets.
    let svc_prefix = format!("{prefix}svc/");
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Ipam::new(
        EtcdStore::connect(EtcdOptions {
            endpoints: vec![ep.clone()],
            prefix: svc_prefix.clone(),
            ..Default::default()
        })
        .expect("connect"),
        Arc::new(SystemClock),
    );
    setup
        .create_pool(Pool::new("p", "10.0.0.0/12".parse().expect("cidr")).expect("pool"))
        .expect("create pool");
    let Some(svcs) = services(&ep, &svc_prefix, dir.path()) else {
        return;
    };
    let svcs = Arc::new(svcs);
    let pids: Vec<u32> = svcs.iter().map(|s| s.child.id()).collect();
    let cpu = Cpu::now(&ep, &pids);
    let (failed, add_time) = through_services(&svcs, "ADD", per_node);
    let adds = (per_node / concurrency()) * concurrency() * 3;
    let add_rate = adds as f64 / add_time.as_secs_f64();
    let after_adds = Cpu::now(&ep, &pids);
    cpu_rows.push(cpu.row(&after_adds, "CNI ADDs through the services", adds, add_rate));
    let sum = |name: &str| -> u64 { svcs.iter().filter_map(|s| s.counter(name)).sum() };
    let (batched, unread, retries) = (
        sum("calico_ipam_assignments_batched_total"),
        sum("calico_ipam_assignments_without_read_total"),
        sum("calico_ipam_store_commit_retries_total"),
    );
    let held_after_adds = held(&setup);
    // Then every pod deleted the same way: CNI DELs, as concurrent.
    let (del_failed, del_time) = through_services(&svcs, "DEL", per_node);
    let del_rate = adds as f64 / del_time.as_secs_f64();
    cpu_rows.push(after_adds.row(
        &Cpu::now(&ep, &pids),
        "CNI DELs through the services",
        adds,
        del_rate,
    ));
    let del_retries = sum("calico_ipam_store_commit_retries_total").saturating_sub(retries);
    let dels_batched = sum("calico_ipam_releases_batched_total");
    drop(svcs);
    let problems = setup.audit().expect("audit");
    let held_after_dels = held(&setup);
    println!();
    println!("| measure | count | rate |");
    println!("|---|---|---|");
    println!(
        "| CNI ADDs through three calico-ipamd (3 x {c} concurrent, over the socket) | {adds} | {add_rate:.0}/s |"
    );
    println!("| ADD rate / put rate | | {:.2} |", add_rate / put_rate);
    println!(
        "| CNI DELs of those pods through the same services (3 x {c} concurrent) | {adds} | {del_rate:.0}/s |"
    );
    println!(
        "failed ADDs: {failed}; addresses held after them: {held_after_adds}; failed DELs: {del_failed}; held after the DELs: {held_after_dels}; store consistency: {} problems",
        problems.len()
    );
    println!(
        "services' metrics: ADDs served in a group commit: {batched}; without a read of their own: {unread}; DELs served in a group commit: {dels_batched}; commits lost and retried: {retries} (ADDs), {del_retries} (DELs)"
    );
    println!();
    println!("CPU per operation (µs; user + system, all threads, from /proc), and the rate two cores sustain at that cost:");
    println!("| phase | etcd | services | bench | total | 2 cores / total | measured | etcd Txn / Range / Put per op | WAL fsyncs per op | bytes per op: WAL / from clients | services' context switches per op |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in cpu_rows {
        println!("{r}");
    }
    // The run's keys go (its prefix is its own), so the next run starts from the same store.
    let removed = rt.block_on(async {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await?;
        c.delete(
            prefix.as_str(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
    });
    if let Err(e) = removed {
        eprintln!("the run's keys under {prefix} were not removed: {e}");
    }
}
