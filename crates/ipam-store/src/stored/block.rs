//! The block's stored form: its bitmaps, the delta-coded sequence numbers, the owner table.

use ipam_core::{AllocAttrs, BlockParts};
use ipam_core::{Bitmap, Block};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A bitmap: its length in bits and its words.
#[derive(Serialize, Deserialize)]
struct BitmapV1<W> {
    len: u32,
    words: W,
}

/// An owner: handle and attributes.
#[derive(Deserialize)]
struct AllocAttrsV1 {
    handle_id: String,
    attrs: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct AllocAttrsV1Ref<'a> {
    handle_id: &'a str,
    attrs: &'a BTreeMap<String, String>,
}

/// A block as format 1 stores it, decoded (not yet validated).
#[derive(Deserialize)]
pub struct BlockV1 {
    cidr: String,
    affinity: Option<String>,
    seq: u64,
    empty_since: Option<u64>,
    taken: BitmapV1<Vec<u64>>,
    reserved: BitmapV1<Vec<u64>>,
    cooling: Vec<(u32, u64)>,
    owner: Vec<u32>,
    /// Per ordinal: 0 when unused, else 1 + zigzag(seq - previous used seq).
    seqs: Vec<u64>,
    attrs: Vec<AllocAttrsV1>,
    cursor: u32,
}

/// A block as format 1 stores it, borrowed from a [`Block`] for encoding.
#[derive(Serialize)]
pub struct BlockV1Ref<'a> {
    cidr: String,
    affinity: Option<&'a str>,
    seq: u64,
    empty_since: Option<u64>,
    taken: BitmapV1<&'a [u64]>,
    reserved: BitmapV1<&'a [u64]>,
    cooling: &'a [(u32, u64)],
    owner: &'a [u16],
    seqs: Vec<u64>,
    attrs: OwnersV1<'a>,
    cursor: u32,
}

/// The owner table, encoded straight from the block (no intermediate vector).
struct OwnersV1<'a>(&'a Block);

impl Serialize for OwnersV1<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.owners().map(|a| AllocAttrsV1Ref {
            handle_id: &a.handle_id,
            attrs: &a.attrs,
        }))
    }
}

// The casts below reinterpret bits (two's complement), which is the encoding.
#[allow(clippy::cast_sign_loss)]
fn zigzag(d: i64) -> u64 {
    d.wrapping_shl(1) as u64 ^ (d >> 63) as u64
}

#[allow(clippy::cast_possible_wrap)]
fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Sequence numbers as deltas from the previous used ordinal's, so a block allocated in order
/// stores one or two bytes an address instead of eight.
#[allow(clippy::cast_possible_wrap)]
fn delta_encode(seqs: &[u64]) -> Vec<u64> {
    let mut prev = 0u64;
    seqs.iter()
        .map(|&v| {
            if v == 0 {
                0
            } else {
                let d = v.wrapping_sub(prev) as i64;
                prev = v;
                zigzag(d).wrapping_add(1)
            }
        })
        .collect()
}

#[allow(clippy::cast_sign_loss)]
fn delta_decode(raw: Vec<u64>) -> Vec<u64> {
    let mut prev = 0u64;
    raw.into_iter()
        .map(|z| {
            if z == 0 {
                0
            } else {
                prev = prev.wrapping_add(unzigzag(z - 1) as u64);
                prev
            }
        })
        .collect()
}

fn bitmap(b: BitmapV1<Vec<u64>>, what: &str) -> Result<Bitmap, String> {
    let len = b.len;
    Bitmap::from_words(len, b.words).ok_or_else(|| {
        format!("{what}: bitmap of {len} bits has the wrong word count or set padding")
    })
}

impl TryFrom<BlockV1> for Block {
    type Error = String;
    fn try_from(b: BlockV1) -> Result<Block, String> {
        Block::from_parts(BlockParts {
            cidr: b
                .cidr
                .parse()
                .map_err(|e| format!("block network {:?}: {e}", b.cidr))?,
            affinity: b.affinity.map(Into::into),
            seq: b.seq,
            empty_since: b.empty_since,
            taken: bitmap(b.taken, "taken")?,
            reserved: bitmap(b.reserved, "reserved")?,
            cooling: b.cooling,
            owner: b.owner,
            seqs: delta_decode(b.seqs),
            attrs: b
                .attrs
                .into_iter()
                .map(|a| {
                    Arc::new(AllocAttrs {
                        handle_id: a.handle_id,
                        attrs: a.attrs,
                    })
                })
                .collect(),
            cursor: b.cursor,
        })
        .map_err(|e| e.to_string())
    }
}

impl<'a> From<&'a Block> for BlockV1Ref<'a> {
    fn from(b: &'a Block) -> BlockV1Ref<'a> {
        let p = b.parts();
        BlockV1Ref {
            cidr: p.cidr.to_string(),
            affinity: p.affinity,
            seq: p.seq,
            empty_since: p.empty_since,
            taken: BitmapV1 {
                len: p.taken.len(),
                words: p.taken.words(),
            },
            reserved: BitmapV1 {
                len: p.reserved.len(),
                words: p.reserved.words(),
            },
            cooling: p.cooling,
            owner: p.owner,
            seqs: delta_encode(p.seqs),
            attrs: OwnersV1(b),
            cursor: p.cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_deltas_round_trip_any_values() {
        let seqs = vec![0, 5, 7, 0, 3, u64::MAX, 1, 0, 0, 1 << 63];
        assert_eq!(delta_decode(delta_encode(&seqs)), seqs);
        // In-order allocation costs one small varint each.
        assert_eq!(delta_encode(&[10, 11, 12]), vec![21, 3, 3]);
    }
}
