//! `ipamctl configure`: the cluster configuration, with the core's validation.

use super::output;
use crate::{CtlError, Outcome};
use clap::Args;
use ipam_core::{Datastore, Ipam, IpamConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Arguments of `configure`; unset flags keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct ConfigureArgs {
    /// Never borrow from other nodes' blocks.
    #[arg(long)]
    pub strict_affinity: Option<bool>,
    /// Claim blocks automatically.
    #[arg(long)]
    pub auto_allocate_blocks: Option<bool>,
    /// Blocks per node (0: the built-in 20); needs strict affinity.
    #[arg(long)]
    pub max_blocks_per_host: Option<u32>,
    /// Seconds a released address stays unusable (0-1200).
    #[arg(long)]
    pub ip_cooldown_seconds: Option<u32>,
}

/// Runs `configure`.
pub fn run<S: Datastore>(
    ipam: &Ipam<S>,
    a: &ConfigureArgs,
    json: bool,
) -> Result<Outcome, CtlError> {
    let c = ipam.config()?;
    let n = IpamConfig {
        strict_affinity: a.strict_affinity.unwrap_or(c.strict_affinity),
        auto_allocate_blocks: a.auto_allocate_blocks.unwrap_or(c.auto_allocate_blocks),
        max_blocks_per_host: a.max_blocks_per_host.unwrap_or(c.max_blocks_per_host),
        ip_cooldown_seconds: a.ip_cooldown_seconds.unwrap_or(c.ip_cooldown_seconds),
    };
    ipam.set_config(n)?;
    Ok(output(
        json,
        format!(
            "configured: strict_affinity={} auto_allocate_blocks={} max_blocks_per_host={} ip_cooldown_seconds={}\n",
            n.strict_affinity, n.auto_allocate_blocks, n.max_blocks_per_host, n.ip_cooldown_seconds
        ),
        json!({"strict_affinity": n.strict_affinity, "auto_allocate_blocks": n.auto_allocate_blocks,
               "max_blocks_per_host": n.max_blocks_per_host, "ip_cooldown_seconds": n.ip_cooldown_seconds}),
    ))
}
