//! A block's attribute table: the distinct holders of its addresses, each once, indexed from 0
//! in table order (a block's per-address owner slot holds 1 + that index).
//!
//! Copy-on-write in chunks: the table is a short list of shared chunks of up to
//! [`CHUNK`] entries. Copying a block (as every compare-and-swap write does: the store keeps
//! the old version until the new one is committed) shares every chunk, one reference count
//! per chunk instead of one per holder; a change copies only the chunk it touches. An
//! assignment or release thus counts references for about a chunk and a half of entries
//! instead of the whole table. A copy written over an older copy of the same table
//! ([`Clone::clone_from`], as commits reuse the block a store hands back) counts none for the
//! chunks both share, so what is left is the copy of the touched chunk: chunks are small
//! (four entries) for that reason.
//!
//! Guarantee: the table is dense (entries 0..len, no holes); [`AttrTable::swap_remove`] keeps
//! it so by moving the last entry into the hole, as `Vec::swap_remove` does.
//!
//! Searches by handle (the de-duplicating search of every assignment, a release's search for
//! its handle's entries) skip whole chunks: each chunk keeps a 64-bit signature, one bit per
//! entry chosen by its fingerprint, so a chunk without the bit holds no entry of the handle.
//! Invariant: a chunk's signature is exactly the union of its entries' bits.

use super::block::AllocAttrs;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

/// Entries per chunk: a change copies (and counts a reference for) each entry of the chunk
/// it touches; with copies written over older ones, more chunks cost only pointer compares.
pub(crate) const CHUNK: usize = 4;

/// Up to [`CHUNK`] entries and their signature (see the module docs).
#[derive(Clone, Default)]
struct Chunk {
    sig: u64,
    entries: SmallVec<[AttrEntry; CHUNK]>,
}

/// A fingerprint's bit in a chunk's signature.
fn sig_bit(fp: u64) -> u64 {
    1 << (fp >> 58)
}

impl Chunk {
    fn push(&mut self, e: AttrEntry) {
        self.sig |= sig_bit(e.fp);
        self.entries.push(e);
    }

    /// The signature computed again, after an entry left or was replaced.
    fn resign(&mut self) {
        self.sig = self.entries.iter().fold(0, |s, e| s | sig_bit(e.fp));
    }

    fn may_hold(&self, fp: u64) -> bool {
        self.sig & sig_bit(fp) != 0
    }
}

/// An entry with the fingerprint of its handle id, so the de-duplicating search scans flat
/// chunks instead of following a pointer per entry. Serialised as the attributes alone; the
/// fingerprint is derived again on decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AttrEntry {
    pub(crate) fp: u64,
    pub(crate) attrs: Arc<AllocAttrs>,
}

impl AttrEntry {
    pub(crate) fn new(attrs: Arc<AllocAttrs>) -> Self {
        AttrEntry {
            fp: fingerprint(&attrs),
            attrs,
        }
    }
}

/// A hash of the handle id: entries of different handles almost never compare further.
pub(crate) fn fingerprint(a: &AllocAttrs) -> u64 {
    id_fingerprint(a.handle_id())
}

/// [`fingerprint`] of a handle id: FNV's step over eight bytes at a time (a kubelet's handle
/// ids run to about 80 bytes), then a final mix so the top bits, which pick a chunk's
/// signature bit, depend on every byte. Never stored, so free to change.
pub(crate) fn id_fingerprint(handle_id: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = handle_id.as_bytes();
    let mut h = 0xcbf2_9ce4_8422_2325 ^ u64::try_from(bytes.len()).unwrap_or(0);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(<[u8; 8]>::try_from(w).unwrap_or([0; 8]))).wrapping_mul(PRIME);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The table (see the module docs).
#[derive(Default)]
pub(crate) struct AttrTable {
    /// Every chunk but the last is full. Inline for a /26 block's 64 holders.
    chunks: SmallVec<[Arc<Chunk>; 16]>,
    len: usize,
}

impl Clone for AttrTable {
    fn clone(&self) -> Self {
        AttrTable {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }

    /// Chunks both tables already share are left as they are: only the chunks that differ
    /// count references.
    fn clone_from(&mut self, source: &Self) {
        self.len = source.len;
        self.chunks.truncate(source.chunks.len());
        for (mine, theirs) in self.chunks.iter_mut().zip(&source.chunks) {
            if !Arc::ptr_eq(mine, theirs) {
                *mine = theirs.clone();
            }
        }
        let have = self.chunks.len();
        self.chunks.extend(source.chunks.iter().skip(have).cloned());
    }
}

impl AttrTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> Iter<'_> {
        Iter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            left: self.len,
        }
    }

    /// The index of the last entry of fingerprint `fp` that `f` accepts.
    pub(crate) fn rposition_fp(
        &self,
        fp: u64,
        mut f: impl FnMut(&AttrEntry) -> bool,
    ) -> Option<usize> {
        self.chunks
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, chunk)| chunk.may_hold(fp))
            .find_map(|(c, chunk)| {
                chunk
                    .entries
                    .iter()
                    .rposition(|e| e.fp == fp && f(e))
                    .map(|p| c * CHUNK + p)
            })
    }

    /// Calls `f` with each entry of fingerprint `fp` and its index, in table order.
    pub(crate) fn for_each_fp(&self, fp: u64, mut f: impl FnMut(usize, &AttrEntry)) {
        for (c, chunk) in self.chunks.iter().enumerate() {
            if !chunk.may_hold(fp) {
                continue;
            }
            for (p, e) in chunk.entries.iter().enumerate() {
                if e.fp == fp {
                    f(c * CHUNK + p, e);
                }
            }
        }
    }

    pub(crate) fn push(&mut self, e: AttrEntry) {
        match self.chunks.last_mut() {
            Some(last) if last.entries.len() < CHUNK => Arc::make_mut(last).push(e),
            _ => {
                let mut chunk = Chunk::default();
                chunk.push(e);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Removes entry `i`, moving the last entry into its place (nothing if `i` is out of
    /// range).
    pub(crate) fn swap_remove(&mut self, i: usize) {
        if i >= self.len {
            return;
        }
        let Some(last_chunk) = self.chunks.last_mut() else {
            return;
        };
        let last = if last_chunk.entries.len() == 1 {
            // The chunk goes: its entry is shared, not the chunk copied to be emptied.
            let e = last_chunk.entries[0].clone();
            self.chunks.pop();
            e
        } else {
            let chunk = Arc::make_mut(last_chunk);
            let Some(e) = chunk.entries.pop() else {
                return;
            };
            chunk.resign();
            e
        };
        self.len -= 1;
        if i < self.len {
            if let Some(chunk) = self.chunks.get_mut(i / CHUNK) {
                let chunk = Arc::make_mut(chunk);
                if let Some(slot) = chunk.entries.get_mut(i % CHUNK) {
                    *slot = last;
                    chunk.resign();
                }
            }
        }
    }
}

impl std::ops::Index<usize> for AttrTable {
    type Output = AttrEntry;
    fn index(&self, i: usize) -> &AttrEntry {
        &self.chunks[i / CHUNK].entries[i % CHUNK]
    }
}

impl FromIterator<AttrEntry> for AttrTable {
    fn from_iter<I: IntoIterator<Item = AttrEntry>>(it: I) -> Self {
        let mut t = AttrTable::default();
        for e in it {
            t.push(e);
        }
        t
    }
}

impl PartialEq for AttrTable {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for AttrTable {}

impl fmt::Debug for AttrTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Serialised as the sequence of holders' attributes.
impl Serialize for AttrTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|e| &e.attrs))
    }
}

impl<'de> Deserialize<'de> for AttrTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Arc<AllocAttrs>>::deserialize(d)?
            .into_iter()
            .map(AttrEntry::new)
            .collect())
    }
}

/// The entries in table order.
pub(crate) struct Iter<'a> {
    chunks: std::slice::Iter<'a, Arc<Chunk>>,
    current: std::slice::Iter<'a, AttrEntry>,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a AttrEntry;
    fn next(&mut self) -> Option<&'a AttrEntry> {
        loop {
            if let Some(e) = self.current.next() {
                self.left -= 1;
                return Some(e);
            }
            self.current = self.chunks.next()?.entries.iter();
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(h: &str) -> AttrEntry {
        AttrEntry::new(Arc::new(
            AllocAttrs::new(h, [("", ""); 0]).expect("a valid holder"),
        ))
    }

    fn ids(t: &AttrTable) -> Vec<String> {
        t.iter().map(|e| e.attrs.handle_id().to_string()).collect()
    }

    /// The signature invariant: each chunk's is exactly the union of its entries' bits.
    fn signed(t: &AttrTable) -> bool {
        t.chunks
            .iter()
            .all(|c| c.sig == c.entries.iter().fold(0, |s, e| s | sig_bit(e.fp)))
    }

    /// Every entry of `h`, by the signed search, as a plain scan finds them.
    fn found_as_a_scan(t: &AttrTable, h: &str) -> bool {
        let fp = id_fingerprint(h);
        let mut by_sig = Vec::new();
        t.for_each_fp(fp, |i, e| {
            if e.attrs.handle_id() == h {
                by_sig.push(i);
            }
        });
        let plain: Vec<usize> = (0..t.len())
            .filter(|&i| t[i].attrs.handle_id() == h)
            .collect();
        by_sig == plain && t.rposition_fp(fp, |e| e.attrs.handle_id() == h) == plain.last().copied()
    }

    /// Every operation agrees with a `Vec` doing the same, across chunk boundaries, and a
    /// copy taken before changes is not changed by them.
    #[test]
    fn behaves_as_a_vec_and_copies_on_write() {
        let mut t = AttrTable::default();
        let mut v: Vec<String> = Vec::new();
        for i in 0..(3 * CHUNK + 3) {
            t.push(entry(&format!("h{i}")));
            v.push(format!("h{i}"));
        }
        let before = t.clone();
        let frozen = v.clone();
        for i in [0, CHUNK, 5, 2 * CHUNK + 1, 0, 3] {
            t.swap_remove(i);
            v.swap_remove(i);
            assert_eq!(ids(&t), v);
            assert_eq!(t.len(), v.len());
            assert_eq!(t.iter().len(), v.len());
        }
        t.push(entry("new"));
        v.push("new".into());
        assert_eq!(ids(&t), v);
        assert_eq!(
            ids(&before),
            frozen,
            "the copy shares chunks but never sees changes"
        );
        assert_eq!(
            t.rposition_fp(id_fingerprint("h1"), |e| e.attrs.handle_id() == "h1"),
            v.iter().rposition(|h| h == "h1")
        );
        assert!(signed(&t) && signed(&before));
        for h in ["h1", "h2", "new", "absent"] {
            assert!(found_as_a_scan(&t, h), "{h}");
        }
        assert_eq!(t[2].attrs.handle_id(), v[2]);
        while t.len() > 0 {
            t.swap_remove(t.len() - 1);
        }
        assert_eq!(t.iter().count(), 0);
        assert_eq!(t, AttrTable::default());
    }

    proptest::proptest! {
        /// Any sequence of pushes and swap-removes, with copies taken along the way, agrees
        /// with a `Vec` doing the same; every copy still reads as it did when taken.
        #[test]
        fn any_sequence_agrees_with_a_vec(ops in proptest::collection::vec((0u8..3, 0usize..40), 0..120)) {
            let mut t = AttrTable::default();
            let mut v: Vec<String> = Vec::new();
            let mut copies: Vec<(AttrTable, Vec<String>)> = Vec::new();
            for (n, (op, i)) in ops.into_iter().enumerate() {
                match op {
                    0 => {
                        t.push(entry(&format!("h{n}")));
                        v.push(format!("h{n}"));
                    }
                    1 if !v.is_empty() => {
                        let i = i % v.len();
                        t.swap_remove(i);
                        v.swap_remove(i);
                    }
                    _ => copies.push((t.clone(), v.clone())),
                }
                proptest::prop_assert_eq!(ids(&t), v.clone());
                proptest::prop_assert_eq!(t.len(), v.len());
                proptest::prop_assert_eq!(t.iter().len(), v.len());
                proptest::prop_assert!(signed(&t));
                for probe in [0, n / 2, n] {
                    let h = format!("h{probe}");
                    proptest::prop_assert!(found_as_a_scan(&t, &h), "{}", h);
                }
            }
            for (c, want) in &copies {
                proptest::prop_assert_eq!(&ids(c), want);
            }
        }
    }
}
