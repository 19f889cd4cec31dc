//! Workload endpoints: what the main plugin wired for one attachment (node, network,
//! container, interfaces, addresses), kept beside the allocations so that a check can tell an
//! address whose container is gone from one in use.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// One wired attachment. Keyed by node and id (`<handle id>/<ifname>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Node the workload runs on.
    pub node: String,
    /// `<handle id>/<ifname>`: unique per attachment ([`endpoint_id`]).
    pub id: String,
    /// Network name.
    pub network: String,
    /// Container id.
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// The handle its addresses are held under.
    pub handle_id: String,
    /// Kubernetes namespace, when the runtime said.
    pub namespace: Option<String>,
    /// Kubernetes pod, when the runtime said.
    pub pod: Option<String>,
    /// The host end of the veth pair.
    pub host_ifname: String,
    /// MAC address of the container's interface.
    pub mac: String,
    /// Addresses on the container's interface (/32, /128).
    pub addresses: Vec<IpNetwork>,
}

/// The id of the endpoint of an attachment.
pub fn endpoint_id(handle_id: &str, ifname: &str) -> String {
    format!("{handle_id}/{ifname}")
}

impl Endpoint {
    /// Checks the fields a store relies on.
    pub fn validate(&self) -> Result<(), String> {
        super::node::validate_node_name(&self.node)?;
        super::handle::validate_handle_id(&self.handle_id)?;
        if self.id != endpoint_id(&self.handle_id, &self.ifname) {
            return Err(format!(
                "endpoint id {:?} is not <handle id>/<ifname>",
                self.id
            ));
        }
        if self.ifname.is_empty() || self.ifname.len() > 15 || self.ifname.contains('/') {
            return Err(format!("invalid interface name {:?}", self.ifname));
        }
        Ok(())
    }
}
