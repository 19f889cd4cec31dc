//! `ipamctl node list|show|set|release-block|remove`.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Subcommand;
use ipam_core::{Datastore, Ipam, Node};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Node subcommands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
pub enum NodeCmd {
    /// Every node record: name, addresses, labels, blocks.
    List,
    /// One node: its record, blocks and the routes it should have.
    Show {
        /// Node name.
        name: String,
    },
    /// Create or change a node record: labels (KEY=VALUE, KEY- to remove) and addresses.
    Set {
        /// Node name.
        name: String,
        /// Labels to set (`zone=east`) or remove (`zone-`).
        #[arg(long = "label", value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
        /// The node's address for its family (replaces the one it had).
        #[arg(long)]
        address: Option<IpAddr>,
    },
    /// Release a node's affinity for one empty block (its routes disappear everywhere).
    ReleaseBlock {
        /// Node name.
        name: String,
        /// The block.
        cidr: IpNetwork,
    },
    /// Release a node's affinities (its blocks keep their addresses unless
    /// `--release-addresses`) and forget the node.
    Remove {
        /// Node name.
        name: String,
        /// Release every address in the node's blocks too.
        #[arg(long)]
        release_addresses: bool,
    },
}

fn node_json(n: &Node, blocks: &[IpNetwork]) -> serde_json::Value {
    json!({"name": n.name(), "addresses": n.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
           "labels": n.labels(), "blocks": blocks.iter().map(ToString::to_string).collect::<Vec<_>>()})
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a node subcommand.
pub fn run<S: Datastore>(ipam: &Ipam<S>, cmd: &NodeCmd, json: bool) -> Result<Outcome, CtlError> {
    match cmd {
        NodeCmd::List => {
            let u = ipam.utilisation()?;
            let blocks = |n: &str| {
                u.nodes
                    .iter()
                    .find(|x| x.node == n)
                    .map(|x| x.blocks.clone())
                    .unwrap_or_default()
            };
            let nodes = ipam.nodes()?;
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.name().to_string(),
                        n.addresses()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        labels_text(n.labels()),
                        blocks(n.name()).len().to_string(),
                    ]
                })
                .collect();
            Ok(output(
                json,
                table::render(&["NODE", "ADDRESSES", "LABELS", "BLOCKS"], &rows),
                json!(nodes
                    .iter()
                    .map(|n| node_json(n, &blocks(n.name())))
                    .collect::<Vec<_>>()),
            ))
        }
        NodeCmd::Show { name } => {
            let n = ipam
                .node(name)?
                .ok_or_else(|| CtlError::Usage(format!("no node record {name}")))?;
            let (routes, borrowed) = ipam.routes_for(name)?;
            let blocks: Vec<IpNetwork> = routes
                .iter()
                .filter(|r| r.target == ipam_core::Target::Blackhole)
                .map(|r| r.dst)
                .collect();
            let mut text = format!(
                "node {name}\n  addresses {}\n  labels    {}\n  blocks    {}\nroutes it should have:\n",
                n.addresses().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                labels_text(n.labels()),
                blocks.len()
            );
            for r in &routes {
                text.push_str(&format!("  {r}\n"));
            }
            let mut v = node_json(&n, &blocks);
            v["routes"] = json!(routes.iter().map(ToString::to_string).collect::<Vec<_>>());
            v["announces_borrowed"] =
                json!(borrowed.iter().map(ToString::to_string).collect::<Vec<_>>());
            Ok(output(json, text, v))
        }
        NodeCmd::Set {
            name,
            labels,
            address,
        } => {
            let mut set = BTreeMap::new();
            let mut unset = Vec::new();
            for l in labels {
                if let Some((k, v)) = l.split_once('=') {
                    set.insert(k.to_string(), v.to_string());
                } else if let Some(k) = l.strip_suffix('-') {
                    unset.push(k.to_string());
                } else {
                    return Err(CtlError::Usage(format!(
                        "label {l:?}: use KEY=VALUE to set or KEY- to remove"
                    )));
                }
            }
            let n = ipam.update_node(name, |n| {
                n.labels_mut().extend(set.clone());
                for k in &unset {
                    n.labels_mut().remove(k);
                }
                if let Some(a) = address {
                    n.set_address(*a);
                }
            })?;
            Ok(output(
                json,
                format!(
                    "node {name}: labels {}, addresses {}\n",
                    labels_text(n.labels()),
                    n.addresses()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                node_json(&n, &[]),
            ))
        }
        NodeCmd::ReleaseBlock { name, cidr } => {
            let released = ipam.release_affinity(*cidr, name, true)?;
            if !released {
                return Err(CtlError::Usage(format!(
                    "node {name} has no affinity for {cidr}"
                )));
            }
            Ok(output(
                json,
                format!("node {name} released block {cidr}\n"),
                json!({"node": name, "released": cidr.to_string()}),
            ))
        }
        NodeCmd::Remove {
            name,
            release_addresses,
        } => {
            let r = ipam.remove_node(name, *release_addresses)?;
            Ok(output(
                json,
                format!(
                    "node {name} removed: {} affinities released, {} empty blocks deleted, {} blocks kept with their addresses\n",
                    r.released,
                    r.blocks_deleted,
                    r.released - r.blocks_deleted
                ),
                json!({"node": name, "affinities_released": r.released, "blocks_deleted": r.blocks_deleted}),
            ))
        }
    }
}
