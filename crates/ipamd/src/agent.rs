//! The route agent: turns the store's block affinities into this node's routes, continuously.
//!
//! Every interval it takes affinities, nodes and endpoints from its copy that the store's
//! feed keeps current (`Ipam::watch_routes`, etcd), or, for a store without a feed, reads them
//! in one batch (`Ipam::routes_in`, each pass), and, when the wanted set changed (and every
//! few seconds regardless, so a route deleted by hand comes back), makes the kernel agree:
//! `direct` mode programs the routes itself under its own protocol number; `bgp` mode renders
//! BIRD's configuration and reloads BIRD, which installs what the peers announce. Direct mode
//! routes every node's blocks and borrowed addresses, so it takes every such record
//! (`RouteView::Cluster`); bgp mode needs only the node's own affinities and endpoints and the
//! node list (`RouteView::Own`), since the peers announce the rest. On start the first pass
//! removes whatever the agent's protocol holds that is no longer wanted, so a restart
//! converges from any state; routes of other protocols are never touched.

use crate::bird;
use crate::kernel::{Kernel, KernelRoute};
use ipam_core::{Datastore, Ipam, RouteView};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How routes reach the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The agent programs them (nodes on one L2 segment).
    Direct,
    /// BIRD does, from a configuration the agent renders.
    Bgp {
        /// BIRD's configuration file.
        config: PathBuf,
        /// BIRD's control socket.
        socket: PathBuf,
        /// The mesh's AS number.
        asn: u32,
    },
}

/// What the agent needs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node.
    pub node: String,
    /// This node's address (BGP router id and local address).
    pub address: std::net::IpAddr,
    /// Direct or BGP.
    pub mode: Mode,
    /// Pause between passes.
    pub interval: Duration,
}

/// Runs passes until `shutdown` is set.
pub fn run<S: Datastore>(ipam: Arc<Ipam<S>>, cfg: AgentConfig, shutdown: Arc<AtomicBool>) {
    let kernel = match Kernel::open() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "route agent: no netlink socket; not running");
            return;
        }
    };
    let resync = Duration::from_secs(5);
    let mut last_direct: Option<BTreeSet<KernelRoute>> = None;
    let mut last_bird: Option<String> = None;
    let mut last_full = Instant::now();
    let mut first = true;
    let bgp = matches!(cfg.mode, Mode::Bgp { .. });
    // BGP peers announce their own blocks and borrowed addresses: a node in bgp mode needs
    // only its own records and the node list, not every pod of the cluster.
    let view = if bgp {
        RouteView::Own
    } else {
        RouteView::Cluster
    };
    let mut source = match ipam.watch_routes(&cfg.node, view) {
        Ok(Some(s)) => {
            tracing::info!("route agent: following the store's feed");
            Some(s)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "route agent: no feed from the store; reading it each pass");
            None
        }
    };
    while !shutdown.load(Ordering::SeqCst) {
        if source.as_mut().is_some_and(|s| !s.update()) {
            tracing::warn!("route agent: the store's feed stopped; reading the store each pass");
            source = None;
        }
        let full = first || last_full.elapsed() >= resync;
        // What the last pass could not apply is tried again every pass, as on a change.
        let unapplied = if bgp {
            last_bird.is_none()
        } else {
            last_direct.is_none()
        };
        let read = match &mut source {
            Some(s) => {
                // Nothing to route by before the first snapshot; nothing new without a change.
                let changed = s.take_changed();
                (s.synced() && (changed || full || unapplied)).then(|| {
                    // The peers are copied only where BGP needs them.
                    let nodes = if bgp { s.nodes() } else { Vec::new() };
                    Ok((s.routes_for(&cfg.node), nodes))
                })
            }
            // The peers are read only where BGP needs them.
            None => Some(ipam.routes_in(&cfg.node, view).map(|r| {
                let nodes = if bgp {
                    ipam.nodes().unwrap_or_default()
                } else {
                    Vec::new()
                };
                (r, nodes)
            })),
        };
        match read {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "route agent: cannot read the store"),
            Some(Ok(((routes, borrowed), nodes))) => {
                match &cfg.mode {
                    Mode::Direct => {
                        let want: BTreeSet<KernelRoute> =
                            routes.iter().map(KernelRoute::from).collect();
                        if full || last_direct.as_ref() != Some(&want) {
                            match kernel.reconcile(&want) {
                                Ok((added, removed, failed)) => {
                                    for r in &added {
                                        tracing::info!(route = ?r, "route added");
                                    }
                                    for r in &removed {
                                        tracing::info!(route = ?r, "route removed");
                                    }
                                    for f in &failed {
                                        tracing::warn!(error = %f, "route not programmed");
                                    }
                                    last_direct = failed.is_empty().then_some(want);
                                }
                                Err(e) => tracing::warn!(error = %e, "route agent: netlink"),
                            }
                        }
                    }
                    Mode::Bgp {
                        config,
                        socket,
                        asn,
                    } => {
                        if first {
                            // Routes a direct-mode run left behind are no longer wanted.
                            let _ = kernel.reconcile(&BTreeSet::new());
                        }
                        let peers: Vec<(String, std::net::IpAddr)> = nodes
                            .iter()
                            .filter_map(|n| n.address(false).map(|a| (n.name().to_string(), a)))
                            .collect();
                        let text =
                            bird::render(&cfg.node, cfg.address, *asn, &routes, &borrowed, &peers);
                        if full && last_bird.is_none()
                            || last_bird.as_deref() != Some(text.as_str())
                        {
                            match bird::apply(config, socket, &text) {
                                Ok(()) => {
                                    tracing::info!(
                                        routes = routes.len(),
                                        borrowed = borrowed.len(),
                                        "BIRD reconfigured"
                                    );
                                    last_bird = Some(text);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "BIRD not reconfigured; retrying");
                                    last_bird = None;
                                }
                            }
                        }
                    }
                }
                if full {
                    last_full = Instant::now();
                }
                first = false;
            }
        }
        let until = Instant::now() + cfg.interval;
        while Instant::now() < until && !shutdown.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10).min(cfg.interval));
        }
    }
}
