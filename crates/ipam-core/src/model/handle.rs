//! Handles: one per allocation owner (for CNI, `<network>.<container id>`), counting how many
//! addresses it holds in each block so release-by-handle visits only those blocks.

use crate::cidr::Cidr;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Handle id used for host-reserved addresses; never stored as a handle record.
pub const RESERVED_HANDLE: &str = "host-reserved";

/// Addresses held under one id, counted per block. A handle with no addresses is deleted.
/// The fields are private: the id is valid and no count is 0 (so a handle's blocks are the
/// blocks to visit on release), which [`Handle::add`] and [`Handle::remove`] keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub(crate) id: String,
    pub(crate) blocks: BTreeMap<Cidr, u32>,
}

impl Handle {
    /// An empty handle.
    pub fn new(id: &str) -> Handle {
        Handle {
            id: id.to_string(),
            blocks: BTreeMap::new(),
        }
    }

    /// A handle from its id and counts, validated (how stores rebuild one).
    pub fn from_parts(id: String, blocks: BTreeMap<Cidr, u32>) -> Result<Handle, String> {
        let h = Handle { id, blocks };
        h.validate()?;
        Ok(h)
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Block -> number of addresses held there (never 0).
    pub fn blocks(&self) -> &BTreeMap<Cidr, u32> {
        &self.blocks
    }

    /// Adds `n` addresses in `block`.
    pub fn add(&mut self, block: IpNetwork, n: u32) {
        if n > 0 {
            *self.blocks.entry(Cidr(block)).or_insert(0) += n;
        }
    }

    /// Removes `n` addresses in `block` (saturating); drops the entry at zero.
    pub fn remove(&mut self, block: IpNetwork, n: u32) {
        if let Some(c) = self.blocks.get_mut(&Cidr(block)) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.blocks.remove(&Cidr(block));
            }
        }
    }

    /// Total addresses held.
    pub fn total(&self) -> u64 {
        self.blocks.values().map(|&c| u64::from(c)).sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Checks the handle id is usable and counts are positive.
    pub fn validate(&self) -> Result<(), String> {
        validate_handle_id(&self.id)?;
        if self.blocks.values().any(|&c| c == 0) {
            return Err(format!("handle {} has a zero count", self.id));
        }
        Ok(())
    }
}

/// Handle ids: 1-512 printable ASCII characters, no whitespace.
pub fn validate_handle_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 512 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid handle id {id:?}: use 1-512 printable ASCII characters without spaces"
        ));
    }
    Ok(())
}
