//! `ipam-sim`: runs the cluster simulation and prints its report; exits 1 on any duplicate,
//! leak or broken invariant.

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use clap::Parser;
use ipam_sim::{run, SimConfig};
use ipam_store::StoreSpec;

/// Simulates a cluster allocating pod addresses with churn.
#[derive(Parser, Debug)]
struct Args {
    /// Nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 110)]
    pods_per_node: usize,
    /// Churn rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Percentage of pods replaced per round.
    #[arg(long, default_value_t = 10)]
    churn_pct: usize,
    /// Nodes replaced per round.
    #[arg(long, default_value_t = 2)]
    node_churn: usize,
    /// Pool CIDR.
    #[arg(long, default_value = "10.0.0.0/12")]
    pool: ipnetwork::IpNetwork,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Threads driving the nodes, each with its own engine on the one store, as node services
    /// are (1: one engine, a repeatable run).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Pod starts issued at once per worker, each from its own thread, as a node service
    /// receives a burst of ADDs (1: one after another).
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// Run on a sled store in this directory instead of memory.
    #[cfg_attr(feature = "etcd", arg(long, conflicts_with = "etcd_endpoints"))]
    #[cfg_attr(not(feature = "etcd"), arg(long))]
    sled: Option<std::path::PathBuf>,
    /// Run on etcd v3 at these endpoints (comma-separated) instead of memory.
    #[cfg(feature = "etcd")]
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix on etcd; it must hold nothing. Default: a fresh `/ipam-sim/<pid>-<time>/`.
    #[cfg(feature = "etcd")]
    #[arg(long)]
    etcd_prefix: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = SimConfig {
        nodes: a.nodes,
        pods_per_node: a.pods_per_node,
        rounds: a.rounds,
        churn_pct: a.churn_pct,
        node_churn: a.node_churn,
        pool: a.pool,
        seed: a.seed,
        workers: a.workers,
        burst: a.burst,
    };
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    let mut spec = match &a.sled {
        Some(dir) => StoreSpec::sled(dir),
        None => StoreSpec::Memory,
    };
    #[cfg(feature = "etcd")]
    if !a.etcd_endpoints.is_empty() {
        let prefix = a.etcd_prefix.clone().unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("/ipam-sim/{}-{secs}/", std::process::id())
        });
        eprintln!("etcd prefix {prefix}");
        spec = StoreSpec::Etcd(ipam_store::EtcdSpec {
            endpoints: a.etcd_endpoints.clone(),
            prefix: Some(prefix),
            ..Default::default()
        });
    }
    let store = spec.open(std::time::Duration::from_secs(20))?;
    finish(run(store, &cfg)?, &cfg)
}

fn finish(report: ipam_sim::Report, cfg: &SimConfig) -> anyhow::Result<()> {
    print!("{}", report.table(cfg));
    if !report.clean() {
        eprintln!("FAILED: duplicates, leaks or broken invariants");
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Args::command().debug_assert();
    }
}
