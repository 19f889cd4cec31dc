//! `calico-ipamd`: the node-local IPAM service.

use anyhow::Context;
use clap::Parser;
use ipam_core::{Datastore, Ipam};
use ipam_store::{SledOptions, SledStore, SystemClock};
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
    #[arg(long, default_value = "/calico-ipam/v1/")]
    etcd_prefix: String,
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
    let store: Box<dyn Datastore> = if args.etcd_endpoints.is_empty() {
        Box::new(
            SledStore::open(
                &args.sled_path,
                &SledOptions {
                    lock_timeout: Duration::from_secs(args.lock_timeout_seconds),
                    ..Default::default()
                },
            )
            .with_context(|| format!("opening {}", args.sled_path.display()))?,
        )
    } else {
        open_etcd(&args)?
    };
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
    tracing::info!(socket = %args.socket.display(), store = %args.sled_path.display(), "serving");
    let stats = Arc::new(ipamd::Stats::default());
    ipamd::serve(listener, ipam.clone(), shutdown, stats.clone())?;
    // Every answered commit is durable already; dropping the store flushes the rest.
    drop(ipam);
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!(served = stats.served.load(Ordering::Relaxed), "stopped");
    Ok(())
}

#[cfg(feature = "etcd")]
fn open_etcd(args: &Args) -> anyhow::Result<Box<dyn Datastore>> {
    use ipam_store::etcd::{EtcdOptions, EtcdStore};
    let s = EtcdStore::connect(EtcdOptions {
        endpoints: args.etcd_endpoints.clone(),
        prefix: args.etcd_prefix.clone(),
        retry_budget: Duration::from_secs(args.lock_timeout_seconds),
        ..Default::default()
    })?;
    Ok(Box::new(s))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(_: &Args) -> anyhow::Result<Box<dyn Datastore>> {
    anyhow::bail!("this calico-ipamd was built without the etcd feature")
}
