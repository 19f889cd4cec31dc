//! `ipamctl pool add | list | disable | delete`.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Subcommand;
use ipam_core::{AllowedUse, AssignmentMode, Datastore, Ipam, Pool, Range, ReleaseRequest};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Pool subcommands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
pub enum PoolCmd {
    /// Create a pool.
    Add {
        /// Pool name.
        name: String,
        /// Pool CIDR.
        cidr: IpNetwork,
        /// Block prefix length (default /26 for IPv4, /122 for IPv6).
        #[arg(long)]
        block_size: Option<u8>,
        /// Node selector (Calico syntax), default `all()`.
        #[arg(long)]
        node_selector: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        /// Used only when requested by name.
        #[arg(long)]
        manual: bool,
        /// Allowed uses: workload, tunnel, loadbalancer (comma-separated).
        #[arg(long, value_delimiter = ',')]
        allowed_uses: Vec<String>,
    },
    /// List pools.
    List,
    /// Change a pool's node selector, allowed uses, disabled flag or assignment mode. The CIDR
    /// and block size are immutable: split or recreate the pool instead.
    Update {
        /// Pool name.
        name: String,
        /// Node selector (Calico syntax).
        #[arg(long)]
        node_selector: Option<String>,
        /// Allowed uses: workload, tunnel, loadbalancer (comma-separated).
        #[arg(long, value_delimiter = ',')]
        allowed_uses: Vec<String>,
        /// Disable (`true`) or enable (`false`).
        #[arg(long)]
        disabled: Option<bool>,
        /// Assignment mode: automatic, or manual (used only when requested by name).
        #[arg(long)]
        mode: Option<String>,
        /// Refused: a pool's CIDR cannot change.
        #[arg(long, hide = true)]
        cidr: Option<IpNetwork>,
        /// Refused: a pool's block size cannot change.
        #[arg(long, hide = true)]
        block_size: Option<u8>,
    },
    /// Replace a pool by N equal pools (`<name>-0` ..) with the same settings, keeping every
    /// allocation and affinity.
    Split {
        /// Pool name.
        name: String,
        /// How many pools (a power of two).
        #[arg(long)]
        into: u32,
    },
    /// Disable a pool (no new addresses); `--enable` reverses it.
    Disable {
        /// Pool name.
        name: String,
        /// Enable instead.
        #[arg(long)]
        enable: bool,
    },
    /// Disable, release the pool's affinities, then delete; refuses while addresses are held
    /// unless `--force`, which releases them first.
    Delete {
        /// Pool name.
        name: String,
        /// Release held addresses too.
        #[arg(long)]
        force: bool,
    },
}

fn parse_use(s: &str) -> Result<AllowedUse, CtlError> {
    match s.to_ascii_lowercase().as_str() {
        "workload" => Ok(AllowedUse::Workload),
        "tunnel" => Ok(AllowedUse::Tunnel),
        "loadbalancer" => Ok(AllowedUse::LoadBalancer),
        other => Err(CtlError::Usage(format!(
            "unknown use {other:?}: workload, tunnel or loadbalancer"
        ))),
    }
}

pub(crate) fn pool_json(p: &Pool) -> serde_json::Value {
    json!({
        "name": p.name(), "cidr": p.cidr().to_string(), "block_size": p.block_size(),
        "node_selector": p.node_selector().as_str(), "disabled": p.is_disabled(),
        "assignment_mode": format!("{:?}", p.assignment_mode()),
        "allowed_uses": p.allowed_uses().iter().map(|u| format!("{u:?}")).collect::<Vec<_>>(),
    })
}

/// Runs a pool subcommand.
pub fn run<S: Datastore>(ipam: &Ipam<S>, cmd: &PoolCmd, json: bool) -> Result<Outcome, CtlError> {
    match cmd {
        PoolCmd::Add {
            name,
            cidr,
            block_size,
            node_selector,
            disabled,
            manual,
            allowed_uses,
        } => {
            let mut p = match block_size {
                Some(b) => Pool::with_block_size(name, *cidr, *b),
                None => Pool::new(name, *cidr),
            }
            .map_err(ipam_core::IpamError::from)?
            .to_parts();
            if let Some(s) = node_selector {
                p.node_selector = s.parse().map_err(ipam_core::IpamError::from)?;
            }
            p.disabled = *disabled;
            if *manual {
                p.assignment_mode = AssignmentMode::Manual;
            }
            if !allowed_uses.is_empty() {
                p.allowed_uses = allowed_uses
                    .iter()
                    .map(|u| parse_use(u))
                    .collect::<Result<_, _>>()?;
            }
            let p = Pool::try_from(p).map_err(ipam_core::IpamError::from)?;
            ipam.create_pool(p.clone())?;
            Ok(output(
                json,
                format!("pool {} ({}) created\n", p.name(), p.cidr()),
                pool_json(&p),
            ))
        }
        PoolCmd::List => {
            let pools = ipam.pools()?;
            let rows = pools
                .iter()
                .map(|p| {
                    vec![
                        p.name().to_string(),
                        p.cidr().to_string(),
                        format!("/{}", p.block_size()),
                        p.node_selector().to_string(),
                        if p.is_disabled() {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        format!("{:?}", p.assignment_mode()),
                    ]
                })
                .collect::<Vec<_>>();
            Ok(output(
                json,
                table::render(
                    &["NAME", "CIDR", "BLOCK", "SELECTOR", "DISABLED", "MODE"],
                    &rows,
                ),
                json!(pools.iter().map(pool_json).collect::<Vec<_>>()),
            ))
        }
        PoolCmd::Update {
            name,
            node_selector,
            allowed_uses,
            disabled,
            mode,
            cidr,
            block_size,
        } => {
            if cidr.is_some() || block_size.is_some() {
                return Err(CtlError::Usage(format!(
                    "pool {name}: the CIDR and block size are immutable; create a new pool (or split this one) and delete the old"
                )));
            }
            let selector = node_selector
                .as_deref()
                .map(str::parse::<ipam_core::Selector>)
                .transpose()
                .map_err(ipam_core::IpamError::from)?;
            let uses: Vec<AllowedUse> = allowed_uses
                .iter()
                .map(|u| parse_use(u))
                .collect::<Result<_, _>>()?;
            let mode = match mode.as_deref() {
                None => None,
                Some("automatic") => Some(AssignmentMode::Automatic),
                Some("manual") => Some(AssignmentMode::Manual),
                Some(other) => {
                    return Err(CtlError::Usage(format!(
                        "mode {other:?}: automatic or manual"
                    )))
                }
            };
            let p = ipam.update_pool(name, |p| {
                if let Some(s) = &selector {
                    p.node_selector = s.clone();
                }
                if !uses.is_empty() {
                    p.allowed_uses = uses.clone();
                }
                if let Some(d) = disabled {
                    p.disabled = *d;
                }
                if let Some(m) = mode {
                    p.assignment_mode = m;
                }
            })?;
            Ok(output(
                json,
                format!(
                    "pool {name} updated: selector {}, uses {:?}, disabled {}, mode {:?}\n",
                    p.node_selector().as_str(),
                    p.allowed_uses(),
                    p.is_disabled(),
                    p.assignment_mode()
                ),
                pool_json(&p),
            ))
        }
        PoolCmd::Split { name, into } => {
            let parts = ipam.split_pool(name, *into)?;
            Ok(output(
                json,
                format!(
                    "pool {name} split into {}\n",
                    parts
                        .iter()
                        .map(|p| format!("{} ({})", p.name(), p.cidr()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                json!(parts.iter().map(pool_json).collect::<Vec<_>>()),
            ))
        }
        PoolCmd::Disable { name, enable } => {
            let p = ipam.update_pool(name, |p| p.disabled = !enable)?;
            let what = if *enable { "enabled" } else { "disabled" };
            Ok(output(json, format!("pool {name} {what}\n"), pool_json(&p)))
        }
        PoolCmd::Delete { name, force } => {
            let pool = ipam.update_pool(name, |p| p.disabled = true)?;
            let blocks = ipam.blocks(&Range::BlocksIn(pool.cidr()))?;
            let held: Vec<ReleaseRequest> = blocks
                .iter()
                .flat_map(|b| {
                    b.value
                        .used()
                        .map(|(o, a, seq)| {
                            ReleaseRequest::guarded(b.value.ip(o), a.handle_id(), seq)
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            if !held.is_empty() && !force {
                return Err(CtlError::Usage(format!(
                    "pool {name} still holds {} addresses; release them or use --force (the pool is now disabled)",
                    held.len()
                )));
            }
            let released = ipam.release_ips(&held)?.released.len();
            let aff = ipam.release_pool_affinities(name)?;
            ipam.delete_pool(name)?;
            Ok(output(
                json,
                format!(
                    "pool {name} deleted: {released} addresses and {} affinities released\n",
                    aff.released
                ),
                json!({"deleted": name, "addresses_released": released, "affinities_released": aff.released}),
            ))
        }
    }
}
