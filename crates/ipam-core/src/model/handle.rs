//! Handles: one per allocation owner (for CNI, `<network>.<container id>`), counting how many
//! addresses it holds in each block so release-by-handle visits only those blocks.

use crate::cidr::Cidr;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// Handle id used for host-reserved addresses; never stored as a handle record.
pub const RESERVED_HANDLE: &str = "host-reserved";

/// Addresses held under one id, counted per block. A handle with no addresses is deleted.
/// The fields are private: the id is valid and no count is 0 (so a handle's blocks are the
/// blocks to visit on release), which [`Handle::add`] and [`Handle::remove`] keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub(crate) id: String,
    pub(crate) blocks: HandleBlocks,
}

/// A handle's counts by block, in block order: a pod's addresses are in one block (or one per
/// family), so the counts sit inline in the handle, with no allocation of their own.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HandleBlocks(SmallVec<[(Cidr, u32); 1]>);

impl Clone for HandleBlocks {
    /// Copied as one slice (a derived clone goes pair by pair): every read of a handle from
    /// the memory store clones it.
    fn clone(&self) -> Self {
        HandleBlocks(SmallVec::from_slice(&self.0))
    }
}

impl HandleBlocks {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no block is counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (block, count) pairs in block order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Cidr, &u32)> + '_ {
        self.into_iter()
    }

    /// The blocks, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Cidr> + '_ {
        self.0.iter().map(|(c, _)| c)
    }

    /// The counts, in block order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &u32> + '_ {
        self.0.iter().map(|(_, n)| n)
    }

    /// Whether `block` is counted.
    pub fn contains_key(&self, block: &Cidr) -> bool {
        self.find(block).is_ok()
    }

    /// The count of `block`.
    pub fn get(&self, block: &Cidr) -> Option<&u32> {
        self.find(block).ok().map(|i| &self.0[i].1)
    }

    /// Removes `block`'s count, returning it.
    pub fn remove(&mut self, block: &Cidr) -> Option<u32> {
        let i = self.find(block).ok()?;
        Some(self.0.remove(i).1)
    }

    /// Adds `n` to `block`'s count (saturating), inserting it in order when absent.
    fn add(&mut self, block: Cidr, n: u32) {
        match self.find(&block) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(n),
            Err(i) => self.0.insert(i, (block, n)),
        }
    }

    /// Takes `n` from `block`'s count, dropping the entry at zero.
    fn subtract(&mut self, block: &Cidr, n: u32) {
        if let Ok(i) = self.find(block) {
            if self.0[i].1 <= n {
                self.0.remove(i);
            } else {
                self.0[i].1 -= n;
            }
        }
    }

    fn find(&self, block: &Cidr) -> Result<usize, usize> {
        // A pod's handle counts one block (or one per family): found by equality first.
        if let Some(i) = self.0.iter().position(|(c, _)| c == block) {
            return Ok(i);
        }
        self.0.binary_search_by(|(c, _)| c.cmp(block))
    }
}

impl<'a> IntoIterator for &'a HandleBlocks {
    type Item = (&'a Cidr, &'a u32);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Cidr, u32)>,
        fn(&'a (Cidr, u32)) -> (&'a Cidr, &'a u32),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(c, n)| (c, n))
    }
}

impl From<BTreeMap<Cidr, u32>> for HandleBlocks {
    /// Already in order and without repeats.
    fn from(m: BTreeMap<Cidr, u32>) -> Self {
        HandleBlocks(m.into_iter().collect())
    }
}

impl Serialize for HandleBlocks {
    /// A map from block to count, as the handle's counts always were.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for HandleBlocks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<Cidr, u32>::deserialize(d).map(HandleBlocks::from)
    }
}

impl Handle {
    /// An empty handle.
    pub fn new(id: &str) -> Handle {
        Handle {
            id: id.to_string(),
            blocks: HandleBlocks::default(),
        }
    }

    /// A handle from its id and counts, validated (how stores rebuild one).
    pub fn from_parts(id: String, blocks: BTreeMap<Cidr, u32>) -> Result<Handle, String> {
        let h = Handle {
            id,
            blocks: blocks.into(),
        };
        h.validate()?;
        Ok(h)
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Block -> number of addresses held there (never 0).
    pub fn blocks(&self) -> &HandleBlocks {
        &self.blocks
    }

    /// Adds `n` addresses in `block`.
    pub fn add(&mut self, block: IpNetwork, n: u32) {
        if n > 0 {
            self.blocks.add(Cidr(block), n);
        }
    }

    /// Removes `n` addresses in `block` (saturating); drops the entry at zero.
    pub fn remove(&mut self, block: IpNetwork, n: u32) {
        self.blocks.subtract(&Cidr(block), n);
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
    // Every byte checked, without a branch per byte (a fold the compiler turns into vector
    // compares): a kubelet's handle ids run to about 80 bytes, checked on every request.
    let graphic = id
        .bytes()
        .fold(true, |ok, b| ok & (b.wrapping_sub(b'!') <= b'~' - b'!'));
    if id.is_empty() || id.len() > 512 || !graphic {
        return Err(format!(
            "invalid handle id {id:?}: use 1-512 printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize)]
    struct Wrap<'a, T: Serialize> {
        blocks: &'a T,
    }

    #[derive(Deserialize)]
    struct Read {
        blocks: HandleBlocks,
    }

    fn net(i: u8) -> IpNetwork {
        format!("10.0.{i}.0/26").parse().expect("a valid literal")
    }

    proptest! {
        /// The branch-free check accepts exactly 1-512 printable ASCII characters without
        /// spaces, whatever the bytes (every byte value near the range's ends included).
        #[test]
        fn handle_ids_are_checked_byte_by_byte(
            id in prop_oneof![
                "[\\x00-\\x{ff}]{0,20}",
                "[ -~]{0,600}",
                prop::collection::vec(prop::sample::select(vec![0x00u8, 0x1f, b' ', b'!', b'~', 0x7f, 0x80, b'a']), 0..40)
                    .prop_map(|b| b.into_iter().map(char::from).collect::<String>()),
            ]
        ) {
            let plain = !id.is_empty()
                && id.len() <= 512
                && id.bytes().all(|b| b.is_ascii_graphic());
            prop_assert_eq!(validate_handle_id(&id).is_ok(), plain);
        }

        /// The inline counts agree with an ordered map under any adds and removes, and
        /// serialise as that map does (the stored and dumped shapes are unchanged).
        #[test]
        fn counts_agree_with_an_ordered_map(
            ops in proptest::collection::vec((any::<bool>(), 0u8..6, 1u32..4), 0..60)
        ) {
            let mut h = Handle::new("h");
            let mut m: BTreeMap<Cidr, u32> = BTreeMap::new();
            for (add, b, n) in ops {
                if add {
                    h.add(net(b), n);
                    *m.entry(Cidr(net(b))).or_insert(0) += n;
                } else {
                    h.remove(net(b), n);
                    if let Some(c) = m.get_mut(&Cidr(net(b))) {
                        *c = c.saturating_sub(n);
                        if *c == 0 {
                            m.remove(&Cidr(net(b)));
                        }
                    }
                }
                let mine: Vec<(Cidr, u32)> = h.blocks().iter().map(|(c, n)| (*c, *n)).collect();
                let want: Vec<(Cidr, u32)> = m.iter().map(|(c, n)| (*c, *n)).collect();
                prop_assert_eq!(mine, want);
                prop_assert!(h.validate().is_ok());
            }
            let back = Handle::from_parts("h".into(), m.clone()).expect("a valid fixture");
            prop_assert_eq!(&back, &h);
            let text = toml::to_string(&Wrap { blocks: &m }).expect("to_string succeeds");
            prop_assert_eq!(&toml::to_string(&Wrap { blocks: h.blocks() }).expect("to_string succeeds"), &text);
            let read: Read = toml::from_str(&text).expect("from_str succeeds");
            prop_assert_eq!(&read.blocks, h.blocks());
        }
    }
}
