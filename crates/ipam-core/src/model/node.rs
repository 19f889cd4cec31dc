//! Nodes: a name, the labels pool selectors are evaluated on, and the addresses other nodes
//! route the node's blocks to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A node known to IPAM. A node with no record has no labels and no address.
///
/// The fields are private: the name is valid and there is at most one address per family
/// (the route agents pick "the" address of a family), which the setters keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) addresses: Vec<IpAddr>,
}

impl Node {
    /// A node with no labels and no address.
    pub fn new(name: &str) -> Result<Node, String> {
        validate_node_name(name)?;
        Ok(Node {
            name: name.to_string(),
            labels: BTreeMap::new(),
            addresses: Vec::new(),
        })
    }

    /// A node from its parts, validated (how stores rebuild one).
    pub fn from_parts(
        name: String,
        labels: BTreeMap<String, String>,
        addresses: Vec<IpAddr>,
    ) -> Result<Node, String> {
        let n = Node {
            name,
            labels,
            addresses,
        };
        n.validate()?;
        Ok(n)
    }

    /// Checks the name and that no family has two addresses.
    pub fn validate(&self) -> Result<(), String> {
        validate_node_name(&self.name)?;
        let v6 = self.addresses.iter().filter(|a| a.is_ipv6()).count();
        if v6 > 1 || self.addresses.len() - v6 > 1 {
            return Err(format!(
                "node {}: at most one address per family",
                self.name
            ));
        }
        Ok(())
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Labels, which pool selectors are evaluated on.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Labels, to change.
    pub fn labels_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.labels
    }

    /// The addresses other nodes send this node's pod traffic to (at most one per family).
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    /// Sets the node's address of `address`'s family, replacing the one it had.
    pub fn set_address(&mut self, address: IpAddr) {
        self.addresses.retain(|a| a.is_ipv6() != address.is_ipv6());
        self.addresses.push(address);
    }

    /// The node's address of `v6`'s family, if it has one.
    pub fn address(&self, v6: bool) -> Option<IpAddr> {
        self.addresses.iter().copied().find(|a| a.is_ipv6() == v6)
    }
}

/// Node names: 1-253 characters of `[A-Za-z0-9._-]`.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    // Without a branch per byte, as a handle id is checked.
    let allowed = name.bytes().fold(true, |ok, b| {
        ok & (b.is_ascii_alphanumeric() | (b == b'.') | (b == b'-') | (b == b'_'))
    });
    if name.is_empty() || name.len() > 253 || !allowed {
        return Err(format!(
            "invalid node name {name:?}: use 1-253 characters of [A-Za-z0-9._-]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_node_name;
    use proptest::prelude::*;

    proptest! {
        /// The branch-free check accepts exactly 1-253 characters of [A-Za-z0-9._-].
        #[test]
        fn node_names_are_checked_byte_by_byte(
            name in prop_oneof![
                "[\\x00-\\x{ff}]{0,20}",
                "[a-z0-9._/:-]{0,260}",
            ]
        ) {
            let plain = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            prop_assert_eq!(validate_node_name(&name).is_ok(), plain);
        }
    }
}
