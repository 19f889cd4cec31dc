//! `calico-ipamd`: the node-local IPAM service.

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use anyhow::Context;
use clap::Parser;
use ipam_core::Ipam;
use ipam_store::{EtcdSpec, StoreSpec, SystemClock};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Keeps the IPAM store open and serves calico-ipam over a unix socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Directory of the sled store (the plugin's `sled_path`).
    #[arg(long, default_value = ipam_cni::config::defaults::SLED_PATH)]
    sled_path: PathBuf,
    /// Socket to listen on (the plugin's `ipamd_socket`).
    #[arg(long, default_value = ipam_cni::config::defaults::SOCKET)]
    socket: PathBuf,
    /// Use etcd v3 at these endpoints (comma-separated) instead of the sled store
    /// (builds with the `etcd` feature).
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = ipam_store::DEFAULT_ETCD_PREFIX)]
    etcd_prefix: String,
    /// CA certificate for etcd (the plugin's `etcd_ca_cert_file`).
    #[arg(long)]
    etcd_ca_cert_file: Option<String>,
    /// Client certificate for etcd (`etcd_cert_file`).
    #[arg(long)]
    etcd_cert_file: Option<String>,
    /// Client key for etcd (`etcd_key_file`).
    #[arg(long)]
    etcd_key_file: Option<String>,
    /// Seconds to wait for the store when another process holds it; 0 waits as long as it
    /// takes (saying every 10 s who holds it).
    #[arg(long, default_value_t = 0)]
    lock_timeout_seconds: u64,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
    /// Append logs to this file (created 0600) instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// While waiting for the store, exit (status 0) as soon as another service answers on the
    /// socket for the same store: how the plugin starts one (`ipamd_autostart`).
    #[arg(long)]
    exit_if_served: bool,
    /// This node's name (registered in the store with its address). Default: the host name.
    #[arg(long)]
    node_name: Option<String>,
    /// The address other nodes route this node's blocks to.
    #[arg(long, conflicts_with = "node_address_autodetect")]
    node_address: Option<std::net::IpAddr>,
    /// How to find that address: first-found, interface=REGEX, can-reach=IP.
    #[arg(long)]
    node_address_autodetect: Option<String>,
    /// Turn block affinities into routes: none, direct (programmed here) or bgp (through BIRD).
    #[arg(long, value_enum, default_value = "none")]
    routes: RoutesMode,
    /// Seconds between route passes (fractions allowed).
    #[arg(long, default_value_t = 0.1)]
    route_interval_seconds: f64,
    /// BIRD's configuration file (bgp mode).
    #[arg(long, default_value = "/etc/bird/bird.conf")]
    bird_config: PathBuf,
    /// BIRD's control socket (bgp mode).
    #[arg(long, default_value = "/run/bird/bird.ctl")]
    bird_socket: PathBuf,
    /// Serve Prometheus metrics on this address (`/metrics`), e.g. 127.0.0.1:9091.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// What the metrics' utilisation covers: node (the nodes this service serves and
    /// --node-name, from their own blocks) or cluster (every pool and node, reading every
    /// block: for one service of a cluster, not every node's).
    #[arg(long, value_enum, default_value = "node")]
    metrics_scope: MetricsScope,
    /// AS number of the iBGP mesh (bgp mode).
    #[arg(long, default_value_t = ipamd::bird::DEFAULT_AS)]
    bgp_as: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MetricsScope {
    Node,
    Cluster,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RoutesMode {
    None,
    Direct,
    Bgp,
}

/// Registers this node (name and address) when asked to, and returns the route agent's
/// configuration when the agent is on.
fn register(
    args: &Args,
    ipam: &Ipam<Box<dyn ipam_core::Datastore>>,
) -> anyhow::Result<Option<ipamd::agent::AgentConfig>> {
    let wants_node = args.routes != RoutesMode::None
        || args.node_name.is_some()
        || args.node_address.is_some()
        || args.node_address_autodetect.is_some();
    if !wants_node {
        return Ok(None);
    }
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (or pass --node-name)")?
            .trim()
            .to_string(),
    };
    let address = match (args.node_address, &args.node_address_autodetect) {
        (Some(a), _) => a,
        (None, m) => {
            let method: ipamd::autodetect::Method = m
                .as_deref()
                .unwrap_or("first-found")
                .parse()
                .map_err(anyhow::Error::msg)?;
            ipamd::autodetect::detect(&method).map_err(anyhow::Error::msg)?
        }
    };
    ipam.update_node(&name, |n| n.set_address(address))
        .with_context(|| format!("registering node {name}"))?;
    tracing::info!(node = %name, address = %address, "node registered");
    let mode = match args.routes {
        RoutesMode::None => return Ok(None),
        RoutesMode::Direct => ipamd::agent::Mode::Direct,
        RoutesMode::Bgp => ipamd::agent::Mode::Bgp {
            config: args.bird_config.clone(),
            socket: args.bird_socket.clone(),
            asn: args.bgp_as,
        },
    };
    Ok(Some(ipamd::agent::AgentConfig {
        node: name,
        address,
        mode,
        interval: Duration::from_secs_f64(args.route_interval_seconds.clamp(0.01, 60.0)),
    }))
}

fn main() -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let args = Args::parse();
    let log = tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_ansi(false);
    match &args.log_file {
        Some(path) => log
            .with_writer(std::sync::Mutex::new(
                ipamd::open_log_file(path)
                    .with_context(|| format!("opening the log file {}", path.display()))?,
            ))
            .init(),
        None => log.with_writer(std::io::stderr).init(),
    }
    let spec = if args.etcd_endpoints.is_empty() {
        StoreSpec::sled(&args.sled_path)
    } else {
        StoreSpec::Etcd(EtcdSpec {
            endpoints: args.etcd_endpoints.clone(),
            prefix: Some(args.etcd_prefix.clone()),
            ca_cert_file: args.etcd_ca_cert_file.clone(),
            cert_file: args.etcd_cert_file.clone(),
            key_file: args.etcd_key_file.clone(),
        })
    };
    let identity = spec.identity();
    let opening = std::time::Instant::now();
    let wait =
        (args.lock_timeout_seconds > 0).then(|| Duration::from_secs(args.lock_timeout_seconds));
    let Some(store) = ipamd::open_store(
        &spec,
        wait,
        args.exit_if_served.then_some(args.socket.as_path()),
    )
    .with_context(|| format!("opening {spec}"))?
    else {
        tracing::info!(socket = %args.socket.display(), store = %identity, "another service serves this store; exiting");
        return Ok(());
    };
    let opened_ms = opening.elapsed().as_millis();
    // sled fails every operation after one failed write (a full disk) until reopened.
    let store: Box<dyn ipam_core::Datastore> = match spec {
        StoreSpec::Sled { .. } => Box::new(ipam_store::Reopening::new(spec.clone(), store)),
        _ => store,
    };
    let ipam = Arc::new(Ipam::new(store, Arc::new(SystemClock)));
    let agent = register(&args, &ipam)?;
    let listener =
        ipamd::bind(&args.socket).with_context(|| format!("binding {}", args.socket.display()))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    // A service whose socket was removed or replaced can no longer be reached: it stops
    // (and releases the store) instead of living on unseen.
    ipamd::watch_socket(&listener, &args.socket, shutdown.clone())
        .context("watching the socket")?;
    {
        let shutdown = shutdown.clone();
        let socket = args.socket.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "shutting down: finishing in-flight requests");
                shutdown.store(true, Ordering::SeqCst);
                ipamd::wake(&socket);
            }
        });
    }
    tracing::info!(socket = %args.socket.display(), store = %spec, opened_ms, started_ms = began.elapsed().as_millis(), "serving");
    let stats = Arc::new(ipamd::Stats::default());
    let metrics_thread = match args.metrics_listen {
        None => None,
        Some(addr) => {
            let server = tiny_http::Server::http(addr)
                .map_err(|e| anyhow::anyhow!("metrics listener on {addr}: {e}"))?;
            let scope = match args.metrics_scope {
                MetricsScope::Node => ipamd::metrics::Scope::Node(args.node_name.clone()),
                MetricsScope::Cluster => ipamd::metrics::Scope::Cluster,
            };
            let m = Arc::new(ipamd::metrics::Metrics::new(scope).context("defining the metrics")?);
            let _ = stats.metrics.set(m.clone());
            tracing::info!(listen = %addr, "metrics on /metrics");
            let (ipam, shutdown) = (ipam.clone(), shutdown.clone());
            Some(std::thread::spawn(move || {
                ipamd::metrics::serve_http(server, ipam, m, shutdown)
            }))
        }
    };
    let agent_thread = agent.map(|cfg| {
        tracing::info!(mode = ?cfg.mode, node = %cfg.node, "route agent on");
        let (ipam, shutdown) = (ipam.clone(), shutdown.clone());
        std::thread::spawn(move || ipamd::agent::run(ipam, cfg, shutdown))
    });
    ipamd::serve_store(
        listener,
        ipam.clone(),
        shutdown,
        stats.clone(),
        Some(identity),
    )?;
    if let Some(t) = agent_thread {
        let _ = t.join();
    }
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    // Every answered commit is durable already; dropping the store flushes the rest.
    drop(ipam);
    tracing::info!(served = stats.served.load(Ordering::Relaxed), "stopped");
    Ok(())
}
