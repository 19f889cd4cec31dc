//! Prometheus metrics of the node service (`--metrics-listen ADDR`, text format on
//! `/metrics`): requests by verb and CNI code, latency histograms by verb, commits retried
//! after a lost compare-and-swap, assignments served in a group commit, and per node (with
//! [`Scope::Cluster`] also per pool) utilisation.
//!
//! Utilisation is a snapshot taken at most once per [`UTILISATION_TTL`]. Its [`Scope`] says
//! what it reads: by default the nodes this service serves, from their affinities and blocks
//! (a few records per node); with [`Scope::Cluster`] every pool and node, from every block of
//! the store, which is meant for one service of a cluster (on etcd, a thousand nodes each
//! scanning every block on every scrape would be the heaviest read etcd serves).

use ipam_core::{Datastore, Ipam};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a utilisation snapshot is served before the blocks are read again.
pub const UTILISATION_TTL: Duration = Duration::from_secs(10);

/// A count as a gauge's value (saturating: a /64 pool's size does not fit).
fn gauge(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Which utilisation a service's metrics report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Per node (`calico_ipam_node`), for the nodes this service has assigned addresses for
    /// and the node named here: their affinities and blocks are read, nothing else.
    Node(Option<String>),
    /// Every pool (`calico_ipam_pool_addresses`) and every node, from every block.
    Cluster,
}

/// The service's metrics.
pub struct Metrics {
    scope: Scope,
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounter,
    retries_seen: AtomicU64,
    batched: IntCounter,
    batched_seen: AtomicU64,
    unread: IntCounter,
    unread_seen: AtomicU64,
    released_together: IntCounter,
    released_together_seen: AtomicU64,
    pool: IntGaugeVec,
    node: IntGaugeVec,
    refreshed: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The metric families, registered; utilisation as `scope` says.
    pub fn new(scope: Scope) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "calico_ipam_requests_total",
                "CNI requests served, by verb and CNI result code (0: success).",
            ),
            &["verb", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "calico_ipam_request_duration_seconds",
                "Time to serve a CNI request inside the service, by verb.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["verb"],
        )?;
        let retries = IntCounter::new(
            "calico_ipam_store_commit_retries_total",
            "Commits lost to a concurrent writer and retried.",
        )?;
        let batched = IntCounter::new(
            "calico_ipam_assignments_batched_total",
            "Auto-assignments served together with others queued for the node, in one commit.",
        )?;
        let unread = IntCounter::new(
            "calico_ipam_assignments_without_read_total",
            "Auto-assignments served from the context the node's last batch kept, with no read of the store.",
        )?;
        let released_together = IntCounter::new(
            "calico_ipam_releases_batched_total",
            "Releases of what a handle holds (CNI DELs) served together with others queued for the block, in one commit.",
        )?;
        let pool = IntGaugeVec::new(
            Opts::new(
                "calico_ipam_pool_addresses",
                "Addresses of a pool by state: size, in_use, reserved, cooling, borrowed; and blocks claimed (state=blocks).",
            ),
            &["pool", "cidr", "state"],
        )?;
        let node = IntGaugeVec::new(
            Opts::new(
                "calico_ipam_node",
                "Per node: blocks affine to it (what=blocks) and addresses held in them (what=addresses).",
            ),
            &["node", "what"],
        )?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(retries.clone()),
            Box::new(batched.clone()),
            Box::new(unread.clone()),
            Box::new(released_together.clone()),
            Box::new(pool.clone()),
            Box::new(node.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Metrics {
            scope,
            registry,
            requests,
            duration,
            retries,
            retries_seen: AtomicU64::new(0),
            batched,
            batched_seen: AtomicU64::new(0),
            unread,
            unread_seen: AtomicU64::new(0),
            released_together,
            released_together_seen: AtomicU64::new(0),
            pool,
            node,
            refreshed: Mutex::new(None),
        })
    }

    /// Records one served CNI request.
    pub fn observe(&self, verb: &str, code: u32, seconds: f64) {
        let verb = match verb {
            "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION" => verb,
            _ => "other",
        };
        self.requests
            .with_label_values(&[verb, &code.to_string()])
            .inc();
        self.duration.with_label_values(&[verb]).observe(seconds);
    }

    fn refresh<S: Datastore>(&self, ipam: &Ipam<S>) {
        // The engine counts since it was made; each counter takes what it has not seen yet.
        for (counter, seen, now) in [
            (&self.retries, &self.retries_seen, ipam.commit_retries()),
            (
                &self.batched,
                &self.batched_seen,
                ipam.batched_assignments(),
            ),
            (
                &self.unread,
                &self.unread_seen,
                ipam.assignments_without_read(),
            ),
            (
                &self.released_together,
                &self.released_together_seen,
                ipam.batched_releases(),
            ),
        ] {
            counter.inc_by(now.saturating_sub(seen.swap(now, Ordering::Relaxed)));
        }
        let mut last = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < UTILISATION_TTL) {
            return;
        }
        let nodes = match &self.scope {
            Scope::Cluster => {
                let Ok(u) = ipam.utilisation() else {
                    return;
                };
                self.pool.reset();
                self.set_pools(&u);
                u.nodes
            }
            Scope::Node(named) => {
                let mut names = ipam.served_nodes();
                if let Some(n) = named.as_ref().filter(|n| !names.contains(n)) {
                    names.push(n.clone());
                }
                let read: Result<Vec<_>, _> =
                    names.iter().map(|n| ipam.node_utilisation(n)).collect();
                let Ok(nodes) = read else {
                    return;
                };
                nodes
            }
        };
        self.node.reset();
        for n in &nodes {
            self.node
                .with_label_values(&[n.node.as_str(), "blocks"])
                .set(gauge(n.blocks.len() as u128));
            self.node
                .with_label_values(&[n.node.as_str(), "addresses"])
                .set(gauge(u128::from(n.in_use)));
        }
        *last = Some(Instant::now());
    }

    fn set_pools(&self, u: &ipam_core::Utilisation) {
        for p in &u.pools {
            let cidr = p.cidr.map(|c| c.to_string()).unwrap_or_default();
            let borrowed: u64 = u
                .blocks
                .iter()
                .filter(|b| b.pool.as_deref() == Some(p.name.as_str()))
                .map(|b| u64::from(b.borrowed))
                .sum();
            for (state, v) in [
                ("size", p.capacity),
                ("in_use", u128::from(p.in_use)),
                ("reserved", u128::from(p.reserved)),
                ("cooling", u128::from(p.cooling)),
                ("borrowed", u128::from(borrowed)),
                ("blocks", u128::from(p.blocks)),
            ] {
                self.pool
                    .with_label_values(&[p.name.as_str(), cidr.as_str(), state])
                    .set(gauge(v));
            }
        }
    }

    /// The exposition text.
    pub fn render<S: Datastore>(&self, ipam: &Ipam<S>) -> String {
        self.refresh(ipam);
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Serves `/metrics` on `addr` until `shutdown` is set.
pub fn serve_http<S: Datastore>(
    server: tiny_http::Server,
    ipam: Arc<Ipam<S>>,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
) {
    while !shutdown.load(Ordering::SeqCst) {
        let req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let resp = if req.url() == "/metrics" {
            let header = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"text/plain; version=0.0.4; charset=utf-8"[..],
            )
            .ok();
            let mut r = tiny_http::Response::from_string(metrics.render(&ipam));
            if let Some(h) = header {
                r = r.with_header(h);
            }
            r
        } else {
            tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
        };
        let _ = req.respond(resp);
    }
}
