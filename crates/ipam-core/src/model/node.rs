//! Nodes: a name and the labels pool selectors are evaluated on.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A node known to IPAM. A node with no record has no labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
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
