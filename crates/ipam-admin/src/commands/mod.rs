//! One file per command; each has its arguments (part of [`Command`]) and a `run` that applies
//! it to an `Ipam`.

pub mod check;
pub mod configure;
pub mod gc;
pub mod layout;
pub mod map;
pub mod node;
pub mod pool;
pub mod release;
pub mod reservation;
pub mod show;
pub mod transfer;

use crate::{CtlError, Outcome};
use clap::Subcommand;
use ipam_core::{Datastore, Ipam};
use serde::{Deserialize, Serialize};

/// An operator command.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
pub enum Command {
    /// Add, list, disable or delete pools.
    #[command(subcommand)]
    Pool(pool::PoolCmd),
    /// Utilisation per pool; `--blocks`, `--node`, `--ip`, `--config` for detail.
    Show(show::ShowArgs),
    /// Find leaks and inconsistencies; `--report FILE` writes them as JSON for `release`.
    Check(check::CheckArgs),
    /// Release one address, or everything a check report found (guarded by sequence numbers).
    Release(release::ReleaseArgs),
    /// Change the cluster configuration.
    Configure(configure::ConfigureArgs),
    /// Node operations.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Release every address of a network whose attachment is not in a list (CNI GC).
    Gc(gc::GcArgs),
    /// A picture of a pool: one cell per block, coloured by node, shaded by fill.
    Map(map::MapArgs),
    /// IP reservations: addresses never handed out.
    #[command(subcommand)]
    Reservation(reservation::ReservationCmd),
    /// The whole IPAM state as one versioned JSON document.
    Export(transfer::ExportArgs),
    /// Write an exported document into this store (refused over a non-empty one unless --force).
    Import(transfer::ImportArgs),
    /// How the store lays out records for nodes of different builds; `--set` switches it.
    Layout(layout::LayoutArgs),
}

impl Command {
    /// True when the command may change a sled store; the others never create one.
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Command::Show(_)
                | Command::Check(_)
                | Command::Map(_)
                | Command::Export(_)
                // Switches only stores with a choice of layouts: never a sled store.
                | Command::Layout(_)
                | Command::Reservation(reservation::ReservationCmd::List)
                | Command::Pool(pool::PoolCmd::List)
        )
    }
}

/// Runs a command.
pub fn run<S: Datastore>(ipam: &Ipam<S>, cmd: &Command, json: bool) -> Result<Outcome, CtlError> {
    match cmd {
        Command::Pool(c) => pool::run(ipam, c, json),
        Command::Show(a) => show::run(ipam, a, json),
        Command::Check(a) => check::run(ipam, a, json),
        Command::Release(a) => release::run(ipam, a, json),
        Command::Configure(a) => configure::run(ipam, a, json),
        Command::Node(c) => node::run(ipam, c, json),
        Command::Gc(a) => gc::run(ipam, a, json),
        Command::Map(a) => map::run(ipam, a, json),
        Command::Export(a) => transfer::export(ipam, a),
        Command::Reservation(c) => reservation::run(ipam, c, json),
        Command::Import(a) => transfer::import(ipam, a, json),
        Command::Layout(a) => layout::run(ipam, a, json),
    }
}

/// An outcome printing `text` or `value` as JSON.
pub(crate) fn output(json: bool, text: String, value: serde_json::Value) -> Outcome {
    Outcome {
        stdout: if json {
            serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
        } else {
            text
        },
        exit_code: crate::EXIT_OK,
        files: Vec::new(),
    }
}
