//! Creates the default pool 192.168.0.0/16 (/26 blocks) on the memory store, starts pods on
//! three nodes and prints which blocks each node holds and which address each pod got.
//!
//! `cargo run -p ipam-store --example three_nodes`

use ipam_core::{AutoAssignArgs, Ipam, Pool};
use ipam_store::{MemoryStore, SystemClock};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ipam = Ipam::new(MemoryStore::new(), Arc::new(SystemClock));
    ipam.create_pool(Pool::new("default-ipv4-ippool", "192.168.0.0/16".parse()?)?)?;
    let nodes = ["control-plane", "worker", "worker2"];
    println!("pod addresses:");
    for (i, node) in nodes.iter().enumerate() {
        // Enough pods on the control plane to spill into a second block.
        let pods = if i == 0 { 70 } else { 3 };
        for p in 0..pods {
            let handle = format!("k8s-pod-network.{node}-pod{p}");
            let mut args = AutoAssignArgs::v4(node, &handle, 1);
            args.attrs.insert("pod".into(), format!("pod{p}"));
            args.attrs.insert("namespace".into(), "default".into());
            let got = ipam.auto_assign(&args)?;
            let a = got.v4.ips[0];
            if p < 3 || p == pods - 1 {
                println!("  {node:<14} pod{p:<3} {:<18} block {}", a.ip, a.block);
            } else if p == 3 {
                println!("  {node:<14} ...");
            }
        }
    }
    println!("\nblocks by node:");
    let u = ipam.utilisation()?;
    for n in &u.nodes {
        let blocks: Vec<String> = n.blocks.iter().map(|b| b.to_string()).collect();
        println!(
            "  {:<14} {:>3} addresses in {}",
            n.node,
            n.in_use,
            blocks.join(", ")
        );
    }
    for p in &u.pools {
        println!(
            "\npool {} ({}): {} blocks claimed, {} of {} addresses in use",
            p.name,
            p.cidr.map(|c| c.to_string()).unwrap_or_default(),
            p.blocks,
            p.in_use,
            p.capacity
        );
    }
    let problems = ipam.audit()?;
    println!("consistency check: {} problems", problems.len());
    Ok(())
}
