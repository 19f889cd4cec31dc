//! The block's stored form: its bitmaps, the delta-coded sequence numbers, the owner table.

use ipam_core::{AllocAttrs, BlockParts};
use ipam_core::{Bitmap, Block};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

/// A bitmap: its length in bits and its words.
#[derive(Serialize, Deserialize)]
struct BitmapV1<W> {
    len: u32,
    words: W,
}

/// An owner: its handle id and attributes, borrowed from the stored bytes, so decoding a
/// block allocates once per owner (its `AllocAttrs`) rather than once per string.
#[derive(Deserialize)]
struct HolderV1<'a> {
    handle_id: &'a str,
    #[serde(borrow)]
    attrs: PairsV1<'a>,
}

/// An owner's attributes: a map of strings, in stored order (ascending keys when this crate
/// wrote them; `AllocAttrs::new` orders any other).
struct PairsV1<'a>(SmallVec<[(&'a str, &'a str); 8]>);

impl<'de: 'a, 'a> Deserialize<'de> for PairsV1<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = PairsV1<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<PairsV1<'a>, M::Error> {
                let mut pairs = SmallVec::new();
                while let Some(pair) = m.next_entry::<&'de str, &'de str>()? {
                    pairs.push(pair);
                }
                Ok(PairsV1(pairs))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An owner as format 1 stores it, borrowed from the core's holder for encoding.
#[derive(Serialize)]
struct HolderV1Ref<'a> {
    handle_id: &'a str,
    attrs: PairsV1Ref<'a>,
}

/// An owner's attributes for encoding: a map, in the holder's (ascending) key order.
struct PairsV1Ref<'a>(&'a AllocAttrs);

impl Serialize for PairsV1Ref<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

/// A block as format 1 stores it, decoded (not yet validated); its owners' strings borrow
/// from the stored bytes.
#[derive(Deserialize)]
pub struct BlockV1<'a> {
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
    #[serde(borrow)]
    attrs: Vec<HolderV1<'a>>,
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
        s.collect_seq(self.0.owners().map(|a| HolderV1Ref {
            handle_id: a.handle_id(),
            attrs: PairsV1Ref(a),
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

impl TryFrom<BlockV1<'_>> for Block {
    type Error = String;
    fn try_from(b: BlockV1<'_>) -> Result<Block, String> {
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
                .map(|h| AllocAttrs::new(h.handle_id, h.attrs.0).map(Arc::new))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?,
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
