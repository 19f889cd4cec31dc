//! Prints which blocks each node holds in a sled store, and each pod's address.
//!
//! `cargo run -p ipam-store --example show_store -- /path/to/sled_path`

use ipam_core::Ipam;
use ipam_store::{SledOptions, SledStore, SystemClock};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: show_store SLED_PATH")?;
    let ipam = Ipam::new(
        SledStore::open(&path, &SledOptions::default())?,
        Arc::new(SystemClock),
    );
    let u = ipam.utilisation()?;
    for n in &u.nodes {
        let blocks: Vec<String> = n.blocks.iter().map(|b| b.to_string()).collect();
        println!(
            "node {:<14} {:>3} addresses in {}",
            n.node,
            n.in_use,
            blocks.join(", ")
        );
    }
    for b in &u.blocks {
        let blk = ipam.block(b.cidr)?;
        if let Some(ipam_core::Versioned { value: blk, .. }) = blk {
            for (o, a, _) in blk.used() {
                println!(
                    "  {:<16} {:<28} pod {}",
                    blk.ip(o),
                    a.handle_id(),
                    a.get("pod").unwrap_or("-")
                );
            }
        }
    }
    for p in &u.pools {
        println!(
            "pool {} {}: {} blocks, {} of {} in use",
            p.name,
            p.cidr.map(|c| c.to_string()).unwrap_or_default(),
            p.blocks,
            p.in_use,
            p.capacity
        );
    }
    println!("consistency check: {} problems", ipam.audit()?.len());
    Ok(())
}
