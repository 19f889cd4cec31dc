//! `ipamctl node remove`.

use super::output;
use crate::{CtlError, Outcome};
use clap::Subcommand;
use ipam_core::{Datastore, Ipam};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Node subcommands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
pub enum NodeCmd {
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

/// Runs a node subcommand.
pub fn run<S: Datastore>(ipam: &Ipam<S>, cmd: &NodeCmd, json: bool) -> Result<Outcome, CtlError> {
    let NodeCmd::Remove {
        name,
        release_addresses,
    } = cmd;
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
