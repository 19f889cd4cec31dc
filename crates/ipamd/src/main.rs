//! `calico-ipamd`: the node-local IPAM service.

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
    /// Seconds to wait for the store when another process holds it.
    #[arg(long, default_value_t = 30)]
    lock_timeout_seconds: u64,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
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
    let store = spec
        .open(Duration::from_secs(args.lock_timeout_seconds))
        .with_context(|| format!("opening {spec}"))?;
    let ipam = Arc::new(Ipam::new(store, Arc::new(SystemClock)));
    let listener =
        ipamd::bind(&args.socket).with_context(|| format!("binding {}", args.socket.display()))?;
    let shutdown = Arc::new(AtomicBool::new(false));
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
    tracing::info!(socket = %args.socket.display(), store = %spec, "serving");
    let stats = Arc::new(ipamd::Stats::default());
    ipamd::serve_store(
        listener,
        ipam.clone(),
        shutdown,
        stats.clone(),
        Some(spec.identity()),
    )?;
    // Every answered commit is durable already; dropping the store flushes the rest.
    drop(ipam);
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!(served = stats.served.load(Ordering::Relaxed), "stopped");
    Ok(())
}
