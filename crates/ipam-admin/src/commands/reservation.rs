//! `ipamctl reservation add|list|delete`: addresses that are never handed out.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Subcommand;
use ipam_core::{Datastore, Ipam};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Reservation subcommands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
pub enum ReservationCmd {
    /// Reserve a CIDR or one address: auto-assign skips it, requests for it are refused;
    /// current holders keep their addresses.
    Add {
        /// Name.
        name: String,
        /// CIDR (or an address, as /32 or /128).
        cidr: IpNetwork,
    },
    /// Every reservation, with how many of its addresses are held.
    List,
    /// Remove a reservation.
    Delete {
        /// Name.
        name: String,
    },
}

/// Runs a reservation subcommand.
pub fn run<S: Datastore>(
    ipam: &Ipam<S>,
    cmd: &ReservationCmd,
    json: bool,
) -> Result<Outcome, CtlError> {
    match cmd {
        ReservationCmd::Add { name, cidr } => {
            ipam.add_reservation(name, *cidr)?;
            let held = held_inside(ipam, cidr)?;
            Ok(output(
                json,
                format!(
                    "reservation {name} ({cidr}) added; {} addresses inside it stay with their holders\n",
                    held.len()
                ),
                json!({"name": name, "cidr": cidr.to_string(), "held": held}),
            ))
        }
        ReservationCmd::List => {
            let rs = ipam.reservations()?;
            let mut rows = Vec::new();
            let mut all = Vec::new();
            for r in &rs {
                let held = held_inside(ipam, &r.cidr())?;
                rows.push(vec![
                    r.name().to_string(),
                    r.cidr().to_string(),
                    held.len().to_string(),
                ]);
                all.push(json!({"name": r.name(), "cidr": r.cidr().to_string(), "held": held}));
            }
            Ok(output(
                json,
                table::render(&["NAME", "CIDR", "HELD"], &rows),
                json!(all),
            ))
        }
        ReservationCmd::Delete { name } => {
            if !ipam.delete_reservation(name)? {
                return Err(CtlError::Usage(format!("no reservation {name}")));
            }
            Ok(output(
                json,
                format!("reservation {name} deleted\n"),
                json!({"deleted": name}),
            ))
        }
    }
}

/// Addresses held inside `cidr` (for `list` and for `check`).
pub fn held_inside<S: Datastore>(
    ipam: &Ipam<S>,
    cidr: &IpNetwork,
) -> Result<Vec<String>, CtlError> {
    use ipam_core::Range;
    let mut out = Vec::new();
    for b in ipam.blocks(&Range::Blocks)? {
        if !ipam_core::cidr::overlaps(&b.value.cidr, cidr) {
            continue;
        }
        for (o, a, _) in b.value.used() {
            let ip = b.value.ip(o);
            if cidr.contains(ip) {
                out.push(format!("{ip} ({})", a.handle_id()));
            }
        }
    }
    Ok(out)
}
