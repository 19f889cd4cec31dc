//! `ipam-sim`: runs the cluster simulation and prints its report; exits 1 on any duplicate,
//! leak or broken invariant.

use clap::Parser;
use ipam_sim::{run, SimConfig};
use ipam_store::{MemoryStore, SledOptions, SledStore};

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
    /// Run on a sled store in this directory instead of memory.
    #[arg(long)]
    sled: Option<std::path::PathBuf>,
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
    };
    let report = match &a.sled {
        Some(dir) => run(SledStore::open(dir, &SledOptions::default())?, &cfg)?,
        None => run(MemoryStore::new(), &cfg)?,
    };
    print!("{}", report.table(&cfg));
    if !report.clean() {
        eprintln!("FAILED: duplicates, leaks or broken invariants");
        std::process::exit(1);
    }
    Ok(())
}
