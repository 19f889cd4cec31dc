//! IP reservations: CIDRs (or single addresses) that auto-assign never hands out and that a
//! request for a specific address may not take. Addresses already held inside a reservation
//! keep their holder; the reservation only stops new assignments there.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// One reservation, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub(crate) name: String,
    pub(crate) cidr: IpNetwork,
}

impl Reservation {
    /// A reservation, validated.
    pub fn new(name: String, cidr: IpNetwork) -> Result<Reservation, String> {
        let r = Reservation { name, cidr };
        r.validate()?;
        Ok(r)
    }

    /// Name (1-253 characters of `[A-Za-z0-9._-]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reserved addresses (masked).
    pub fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    /// Checks the name and that the CIDR is masked.
    pub fn validate(&self) -> Result<(), String> {
        super::node::validate_node_name(&self.name)
            .map_err(|_| format!("invalid reservation name {:?}", self.name))?;
        if !crate::cidr::is_masked(&self.cidr) {
            return Err(format!(
                "reservation {}: {} has host bits set",
                self.name, self.cidr
            ));
        }
        Ok(())
    }
}
