//! Nodes: a name, the labels pool selectors are evaluated on, and the addresses other nodes
//! route the node's blocks to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A node known to IPAM. A node with no record has no labels and no address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The addresses other nodes send this node's pod traffic to (at most one per family).
    pub addresses: Vec<IpAddr>,
}

impl Node {
    /// The node's address of `v6`'s family, if it has one.
    pub fn address(&self, v6: bool) -> Option<IpAddr> {
        self.addresses.iter().copied().find(|a| a.is_ipv6() == v6)
    }
}

/// Node names: 1-253 characters of `[A-Za-z0-9._-]`.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 253
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "invalid node name {name:?}: use 1-253 characters of [A-Za-z0-9._-]"
        ));
    }
    Ok(())
}
