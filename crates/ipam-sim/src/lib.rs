//! A deterministic cluster simulation: `nodes` nodes each start `pods_per_node` pods, then
//! rounds of churn delete and create pods and replace nodes. Everything random comes from one
//! seed and time from a manual clock, so a run is repeatable.
//!
//! The simulation keeps its own record of which pod holds which address and checks the store
//! against it: an address handed out twice is a duplicate, an address the store holds that no
//! live pod owns is a leak, and the store's invariants are audited at the end.
//!
//! With `workers > 1` the nodes are shared out among that many threads, each with its own
//! engine on the one store, as node services are: requests of different nodes race in the
//! store (compare-and-swap conflicts, retries) instead of taking turns. Each worker has its own
//! seed and clock, so such a run is not repeatable in its details; duplicates are counted
//! across all workers' pods.

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use ipam_core::{AssignError, AutoAssignArgs, Datastore, Ipam, IpamError, ManualClock, Pool};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The simulated clock's start (ns since the epoch).
const START_NS: u64 = 1_700_000_000_000_000_000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes in the cluster at any time.
    pub nodes: usize,
    /// Pods each node starts with.
    pub pods_per_node: usize,
    /// Rounds of churn after the initial start.
    pub rounds: usize,
    /// Percentage of pods deleted and re-created (on a random node) per round.
    pub churn_pct: usize,
    /// Nodes removed (with their pods) and replaced by new nodes per round.
    pub node_churn: usize,
    /// The pool.
    pub pool: ipnetwork::IpNetwork,
    /// Seed of every random choice.
    pub seed: u64,
    /// Threads driving the nodes, each with its own engine (1: one engine, repeatable).
    pub workers: usize,
    /// Pod starts a worker issues at once, each from its own thread, as a node service
    /// receives a burst of ADDs (1: one after another, repeatable). Starts for one node made
    /// together are served by the engine's group commit.
    pub burst: usize,
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Pods live at the end.
    pub pods: usize,
    /// Nodes live at the end.
    pub nodes: usize,
    /// IPAM operations performed.
    pub operations: u64,
    /// Assignments refused for lack of addresses.
    pub exhausted: u64,
    /// Addresses handed to two live pods (must be 0).
    pub duplicates: u64,
    /// Addresses the store holds that no live pod owns, or live pods' addresses the store lost
    /// (must be 0).
    pub leaked: u64,
    /// Broken store invariants (must be 0).
    pub problems: usize,
    /// Blocks claimed.
    pub blocks: usize,
    /// Blocks per node: min, mean, max.
    pub blocks_per_node: (usize, f64, usize),
    /// Mean fill of claimed blocks (used / size).
    pub block_fill: f64,
    /// Share of claimed addresses not in use: 1 - used / (blocks x size).
    pub fragmentation: f64,
    /// Addresses held in a block affine to another node.
    pub borrowed: u64,
    /// Assignments served together with others in one commit (the engines' group commit).
    pub batched: u64,
    /// Assignments served from a batch's kept context, with no read of their own.
    pub unread: u64,
    /// Wall time.
    pub wall: Duration,
}

impl Report {
    /// True when nothing was duplicated, leaked or broken.
    pub fn clean(&self) -> bool {
        self.duplicates == 0 && self.leaked == 0 && self.problems == 0
    }

    /// The report as a markdown table.
    pub fn table(&self, cfg: &SimConfig) -> String {
        let (mn, mean, mx) = self.blocks_per_node;
        format!(
            "| metric | value |\n|---|---|\n\
             | configuration | {} nodes x {} pods, {} rounds, {}% pod churn, {} nodes replaced per round, pool {}, seed {}, {} worker(s), bursts of {} |\n\
             | pods live at the end | {} on {} nodes |\n\
             | IPAM operations | {} ({} assignments served in a group commit, {} without a read) |\n\
             | operations per second | {:.0} |\n\
             | wall time | {:.1} s |\n\
             | duplicates | {} |\n\
             | leaked addresses | {} |\n\
             | store invariant problems | {} |\n\
             | assignments refused (pool exhausted) | {} |\n\
             | blocks claimed | {} |\n\
             | blocks per node (min / mean / max) | {} / {:.2} / {} |\n\
             | mean block fill | {:.1}% |\n\
             | fragmentation (claimed but unused) | {:.1}% |\n\
             | borrowed addresses | {} |\n",
            cfg.nodes, cfg.pods_per_node, cfg.rounds, cfg.churn_pct, cfg.node_churn, cfg.pool, cfg.seed, cfg.workers.max(1), cfg.burst.max(1),
            self.pods, self.nodes, self.operations, self.batched, self.unread,
            self.operations as f64 / self.wall.as_secs_f64().max(1e-9),
            self.wall.as_secs_f64(), self.duplicates, self.leaked, self.problems, self.exhausted,
            self.blocks, mn, mean, mx, self.block_fill * 100.0, self.fragmentation * 100.0, self.borrowed
        )
    }
}

/// xorshift64*: small, seeded, good enough to choose pods and nodes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

struct Sim<S: Datastore> {
    ipam: Ipam<S>,
    clock: Arc<ManualClock>,
    rng: Rng,
    /// pod -> (node, address)
    pods: BTreeMap<String, (String, IpAddr)>,
    /// address -> pod
    owners: HashMap<IpAddr, String>,
    nodes: Vec<String>,
    next_pod: u64,
    next_node: u64,
    /// Prefix of this driver's node and pod names (unique among workers).
    prefix: String,
    report: Report,
}

impl<S: Datastore> Sim<S> {
    /// Starts one pod on each of `nodes`, `burst` at a time, each of a burst from its own
    /// thread (so a burst for one node meets the engine's group commit).
    fn start_pods(&mut self, nodes: &[String], burst: usize) -> Result<(), IpamError> {
        for chunk in nodes.chunks(burst.max(1)) {
            let pods: Vec<String> = chunk
                .iter()
                .map(|_| {
                    self.next_pod += 1;
                    format!("{}pod-{}", self.prefix, self.next_pod - 1)
                })
                .collect();
            self.report.operations += chunk.len() as u64;
            self.clock.advance(1_000_000 * chunk.len() as u64);
            let ipam = &self.ipam;
            let assign = |node: &String, pod: &String| {
                ipam.auto_assign(&AutoAssignArgs::v4(node, &format!("sim.{pod}"), 1))
            };
            let outcomes: Vec<_> = if chunk.len() == 1 {
                vec![assign(&chunk[0], &pods[0])]
            } else {
                std::thread::scope(|s| {
                    let running: Vec<_> = chunk
                        .iter()
                        .zip(&pods)
                        .map(|(n, p)| s.spawn(move || assign(n, p)))
                        .collect();
                    running
                        .into_iter()
                        .map(|t| t.join().expect("a request thread panicked"))
                        .collect()
                })
            };
            for ((node, pod), outcome) in chunk.iter().zip(pods).zip(outcomes) {
                match outcome {
                    Ok(r) => {
                        let ip = r.v4.ips[0].ip;
                        if let Some(other) = self.owners.insert(ip, pod.clone()) {
                            if self.pods.contains_key(&other) {
                                self.report.duplicates += 1;
                            }
                        }
                        self.pods.insert(pod, (node.clone(), ip));
                    }
                    Err(AssignError::Exhausted { .. }) => self.report.exhausted += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    fn stop_pod(&mut self, pod: &str) -> Result<(), IpamError> {
        let Some((_, ip)) = self.pods.remove(pod) else {
            return Ok(());
        };
        self.owners.remove(&ip);
        self.report.operations += 1;
        self.clock.advance(1_000_000);
        self.ipam.release_by_handle(&format!("sim.{pod}"))?;
        Ok(())
    }

    fn new(ipam: Ipam<S>, clock: Arc<ManualClock>, seed: u64, prefix: String) -> Self {
        Sim {
            ipam,
            clock,
            rng: Rng(seed | 1),
            pods: BTreeMap::new(),
            owners: HashMap::new(),
            nodes: Vec::new(),
            next_pod: 0,
            next_node: 0,
            prefix,
            report: Report::default(),
        }
    }

    /// Starts `nodes` nodes with their pods, then the rounds of churn, replacing `node_churn`
    /// of this driver's nodes per round.
    fn drive(&mut self, nodes: usize, node_churn: usize, cfg: &SimConfig) -> Result<(), IpamError> {
        for _ in 0..nodes {
            let n = self.add_node();
            self.start_pods(&vec![n; cfg.pods_per_node], cfg.burst)?;
        }
        for _ in 0..cfg.rounds {
            // Replace nodes: their pods go, the node is removed, a new node starts as many pods.
            for _ in 0..node_churn.min(self.nodes.len()) {
                let i = self.rng.below(self.nodes.len());
                let gone = self.nodes.swap_remove(i);
                let pods: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|(_, (n, _))| *n == gone)
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in &pods {
                    self.stop_pod(p)?;
                }
                self.report.operations += 1;
                self.ipam.remove_node(&gone, false)?;
                let n = self.add_node();
                self.start_pods(&vec![n; pods.len()], cfg.burst)?;
            }
            if self.nodes.is_empty() {
                continue;
            }
            // Pod churn: some pods stop, as many start on random nodes.
            let k = self.pods.len() * cfg.churn_pct / 100;
            let mut all: Vec<String> = self.pods.keys().cloned().collect();
            for _ in 0..k {
                let i = self.rng.below(all.len());
                let p = all.swap_remove(i);
                self.stop_pod(&p)?;
            }
            let on: Vec<String> = (0..k)
                .map(|_| self.nodes[self.rng.below(self.nodes.len())].clone())
                .collect();
            self.start_pods(&on, cfg.burst)?;
            // Let emptied blocks age past the reclaim grace period.
            self.clock.advance(120_000_000_000);
        }
        Ok(())
    }

    fn add_node(&mut self) -> String {
        let n = format!("{}node-{}", self.prefix, self.next_node);
        self.next_node += 1;
        self.nodes.push(n.clone());
        n
    }
}

/// Runs a simulation on `store` (its `workers` threads share it).
pub fn run<S: Datastore>(store: S, cfg: &SimConfig) -> Result<Report, IpamError> {
    let started = Instant::now();
    let store = Arc::new(store);
    let engine = |clock: Arc<ManualClock>, seed: u64| {
        Ipam::with_options(
            store.clone(),
            clock,
            ipam_core::IpamOptions {
                seed,
                ..Default::default()
            },
        )
    };
    let clock = Arc::new(ManualClock::new(START_NS));
    let checker = engine(clock.clone(), cfg.seed);
    checker.create_pool(Pool::new("sim", cfg.pool)?)?;
    let workers = cfg.workers.max(1);
    let sims: Vec<Sim<Arc<S>>> = if workers == 1 {
        let mut sim = Sim::new(checker, clock, cfg.seed, String::new());
        sim.drive(cfg.nodes, cfg.node_churn, cfg)?;
        vec![sim]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    // Worker w drives every workers-th node and its share of the node churn.
                    let nodes = cfg.nodes / workers + usize::from(w < cfg.nodes % workers);
                    let churn =
                        cfg.node_churn / workers + usize::from(w < cfg.node_churn % workers);
                    let seed = cfg.seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let clock = Arc::new(ManualClock::new(START_NS));
                    let ipam = engine(clock.clone(), seed);
                    scope.spawn(move || {
                        let mut sim = Sim::new(ipam, clock, seed, format!("w{w}-"));
                        sim.drive(nodes, churn, cfg).map(|()| sim)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a simulation worker panicked"))
                .collect::<Result<Vec<_>, IpamError>>()
        })?
    };
    let mut r = Report::default();
    let mut owners: HashMap<IpAddr, &str> = HashMap::new();
    for sim in &sims {
        r.operations += sim.report.operations;
        r.exhausted += sim.report.exhausted;
        r.duplicates += sim.report.duplicates;
        r.batched += sim.ipam.batched_assignments();
        r.unread += sim.ipam.assignments_without_read();
        for (pod, (_, ip)) in &sim.pods {
            if owners.insert(*ip, pod).is_some() && sims.len() > 1 {
                // Within one driver a duplicate was counted when it was handed out.
                r.duplicates += 1;
            }
        }
    }
    let pods: BTreeMap<&String, IpAddr> = sims
        .iter()
        .flat_map(|s| s.pods.iter().map(|(p, (_, ip))| (p, *ip)))
        .collect();
    let nodes: Vec<&String> = sims.iter().flat_map(|s| &s.nodes).collect();
    r.wall = started.elapsed();
    r.pods = pods.len();
    r.nodes = nodes.len();
    // A fresh engine reads what the drivers left.
    let ipam = engine(Arc::new(ManualClock::new(START_NS)), cfg.seed);
    let u = ipam.utilisation()?;
    let held: u64 = u.blocks.iter().map(|b| u64::from(b.in_use)).sum();
    let mut lost = 0u64;
    for (pod, ip) in &pods {
        match ipam.allocation(*ip)? {
            Some(a) if a.handle_id == format!("sim.{pod}") => {}
            _ => lost += 1,
        }
    }
    r.leaked = held.saturating_sub(pods.len() as u64) + lost;
    r.problems = ipam.audit()?.len();
    r.blocks = u.blocks.len();
    let per_node: Vec<usize> = nodes
        .iter()
        .map(|n| {
            u.nodes
                .iter()
                .find(|x| &x.node == *n)
                .map_or(0, |x| x.blocks.len())
        })
        .collect();
    r.blocks_per_node = (
        per_node.iter().copied().min().unwrap_or(0),
        per_node.iter().sum::<usize>() as f64 / per_node.len().max(1) as f64,
        per_node.iter().copied().max().unwrap_or(0),
    );
    let size: u64 = u.blocks.iter().map(|b| u64::from(b.size)).sum();
    r.block_fill = if u.blocks.is_empty() {
        0.0
    } else {
        u.blocks
            .iter()
            .map(|b| f64::from(b.in_use) / f64::from(b.size))
            .sum::<f64>()
            / u.blocks.len() as f64
    };
    r.fragmentation = if size == 0 {
        0.0
    } else {
        1.0 - held as f64 / size as f64
    };
    r.borrowed = u.blocks.iter().map(|b| u64::from(b.borrowed)).sum();
    Ok(r)
}
