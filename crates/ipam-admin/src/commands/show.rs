//! `ipamctl show`: utilisation per pool; per block, per node, per address; the configuration.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Args;
use ipam_core::{Datastore, Ipam};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::IpAddr;

/// Arguments of `show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct ShowArgs {
    /// Every block: CIDR, node, in use / size, reserved, borrowed.
    #[arg(long)]
    pub blocks: bool,
    /// One node's blocks and addresses.
    #[arg(long)]
    pub node: Option<String>,
    /// Who holds this address.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// The cluster configuration.
    #[arg(long)]
    pub config: bool,
    /// Workload endpoints the main plugin recorded (with `--node`, that node's).
    #[arg(long)]
    pub endpoints: bool,
    /// The routes each node (with `--node`, that node) should have, from the store.
    #[arg(long)]
    pub routes: bool,
}

/// Runs `show`.
pub fn run<S: Datastore>(ipam: &Ipam<S>, a: &ShowArgs, json: bool) -> Result<Outcome, CtlError> {
    if let Some(ip) = a.ip {
        return Ok(match ipam.allocation(ip)? {
            Some(al) => {
                let attrs: Vec<String> = al.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                output(
                    json,
                    format!(
                        "{ip} is held by handle {}\n  block     {} (node {})\n  sequence  {}\n  attributes {}\n",
                        al.handle_id,
                        al.block,
                        al.block_affinity.as_deref().unwrap_or("none"),
                        al.seq,
                        attrs.join(" ")
                    ),
                    json!({"ip": ip.to_string(), "held": true, "handle": al.handle_id,
                           "block": al.block.to_string(), "block_node": al.block_affinity,
                           "seq": al.seq, "attributes": al.attrs}),
                )
            }
            None => output(
                json,
                format!("{ip} is not allocated\n"),
                json!({"ip": ip.to_string(), "held": false}),
            ),
        });
    }
    if a.config {
        let c = ipam.config()?;
        return Ok(output(
            json,
            format!(
                "strict_affinity       {}\nauto_allocate_blocks  {}\nmax_blocks_per_host   {} (effective {})\nip_cooldown_seconds   {}\n",
                c.strict_affinity, c.auto_allocate_blocks, c.max_blocks_per_host, c.block_limit(), c.ip_cooldown_seconds
            ),
            json!({"strict_affinity": c.strict_affinity, "auto_allocate_blocks": c.auto_allocate_blocks,
                   "max_blocks_per_host": c.max_blocks_per_host, "ip_cooldown_seconds": c.ip_cooldown_seconds}),
        ));
    }
    if a.routes {
        let names: Vec<String> = match &a.node {
            Some(n) => vec![n.clone()],
            None => ipam.nodes()?.iter().map(|n| n.name().to_string()).collect(),
        };
        let mut rows = Vec::new();
        let mut all = Vec::new();
        for n in &names {
            let (routes, borrowed) = ipam.routes_for(n)?;
            for r in &routes {
                rows.push(vec![n.clone(), r.to_string(), r.owner.clone()]);
            }
            all.push(json!({"node": n,
                "routes": routes.iter().map(|r| json!({"dst": r.dst.to_string(), "route": r.to_string(), "owner": r.owner})).collect::<Vec<_>>(),
                "announces_borrowed": borrowed.iter().map(ToString::to_string).collect::<Vec<_>>()}));
        }
        return Ok(output(
            json,
            table::render(&["NODE", "ROUTE", "BLOCK OF"], &rows),
            json!(all),
        ));
    }
    if a.endpoints {
        let eps = ipam.endpoints(a.node.as_deref())?;
        let rows: Vec<Vec<String>> = eps
            .iter()
            .map(|e| {
                vec![
                    e.node.clone(),
                    match (&e.namespace, &e.pod) {
                        (Some(ns), Some(p)) => format!("{ns}/{p}"),
                        _ => "-".into(),
                    },
                    e.container_id.chars().take(12).collect(),
                    e.ifname.clone(),
                    e.host_ifname.clone(),
                    e.addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    e.network.clone(),
                ]
            })
            .collect();
        return Ok(output(
            json,
            table::render(
                &[
                    "NODE",
                    "POD",
                    "CONTAINER",
                    "IFNAME",
                    "HOST IF",
                    "ADDRESSES",
                    "NETWORK",
                ],
                &rows,
            ),
            json!(eps),
        ));
    }
    let u = ipam.utilisation()?;
    if let Some(node) = &a.node {
        let n = u.nodes.iter().find(|n| &n.node == node);
        let blocks: Vec<_> = u
            .blocks
            .iter()
            .filter(|b| b.affinity.as_deref() == Some(node))
            .collect();
        let rows: Vec<Vec<String>> = blocks
            .iter()
            .map(|b| {
                vec![
                    b.cidr.to_string(),
                    format!("{}/{}", b.in_use, b.size),
                    b.borrowed.to_string(),
                ]
            })
            .collect();
        let mut text = format!(
            "node {node}: {} blocks, {} addresses in use\n",
            blocks.len(),
            n.map(|n| n.in_use).unwrap_or(0)
        );
        text.push_str(&table::render(&["BLOCK", "IN USE", "BORROWED"], &rows));
        return Ok(output(
            json,
            text,
            json!({"node": node, "in_use": n.map(|n| n.in_use).unwrap_or(0),
                   "blocks": blocks.iter().map(|b| json!({"cidr": b.cidr.to_string(), "in_use": b.in_use, "size": b.size, "borrowed": b.borrowed})).collect::<Vec<_>>()}),
        ));
    }
    if a.blocks {
        let rows: Vec<Vec<String>> = u
            .blocks
            .iter()
            .map(|b| {
                vec![
                    b.cidr.to_string(),
                    b.pool.clone().unwrap_or_else(|| "-".into()),
                    b.affinity.clone().unwrap_or_else(|| "-".into()),
                    format!("{}/{}", b.in_use, b.size),
                    b.reserved.to_string(),
                    b.cooling.to_string(),
                    b.borrowed.to_string(),
                ]
            })
            .collect();
        return Ok(output(
            json,
            table::render(&["BLOCK", "POOL", "NODE", "IN USE", "RESERVED", "COOLING", "BORROWED"], &rows),
            json!(u.blocks.iter().map(|b| json!({
                "cidr": b.cidr.to_string(), "pool": b.pool, "node": b.affinity, "size": b.size,
                "in_use": b.in_use, "reserved": b.reserved, "cooling": b.cooling, "borrowed": b.borrowed,
                "addresses": addresses(ipam, b.cidr),
            })).collect::<Vec<_>>()),
        ));
    }
    let rows: Vec<Vec<String>> = u
        .pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.cidr.map(|c| c.to_string()).unwrap_or_default(),
                p.capacity.to_string(),
                p.in_use.to_string(),
                p.free().to_string(),
                p.blocks.to_string(),
                format!("{:.1}%", 100.0 * p.in_use as f64 / p.capacity as f64),
            ]
        })
        .collect();
    Ok(output(
        json,
        table::render(
            &[
                "POOL", "CIDR", "CAPACITY", "IN USE", "FREE", "BLOCKS", "USED",
            ],
            &rows,
        ),
        json!({"pools": u.pools.iter().map(|p| json!({
            "name": p.name, "cidr": p.cidr.map(|c| c.to_string()), "capacity": p.capacity.to_string(),
            "in_use": p.in_use, "reserved": p.reserved, "cooling": p.cooling,
            "free": p.free().to_string(), "blocks": p.blocks})).collect::<Vec<_>>(),
               "nodes": u.nodes.iter().map(|n| json!({"node": n.node, "in_use": n.in_use,
                   "blocks": n.blocks.iter().map(|b| b.to_string()).collect::<Vec<_>>()})).collect::<Vec<_>>()}),
    ))
}

/// The held addresses of a block with their handles (for JSON output).
fn addresses<S: Datastore>(ipam: &Ipam<S>, cidr: ipnetwork::IpNetwork) -> serde_json::Value {
    match ipam.block(cidr) {
        Ok(Some(b)) => json!(b
            .value
            .used()
            .map(|(o, a, seq)| json!({"ip": b.value.ip(o).to_string(), "handle": a.handle_id(), "seq": seq, "attributes": a.to_map()}))
            .collect::<Vec<_>>()),
        _ => json!([]),
    }
}
