//! The block-claim index: which block slots of a pool are claimed, so that finding an
//! unclaimed block never lists the pool's blocks.
//!
//! A pool's slots are cut into chunks of [`CHUNK_SLOTS`]. An [`IndexChunk`] holds a bitmap of
//! claimed slots (an absent chunk means none claimed); a [`PoolIndex`] lists the chunks that are
//! full. Finding a free block reads the pool index, then one chunk: two reads whatever the
//! pool's size. Both are written in the same atomic commit as the block they describe, and the
//! pool index only changes when a chunk turns full or stops being full, so it is rarely
//! contended.

use crate::bitmap::Bitmap;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Block slots per chunk.
pub const CHUNK_SLOTS: u32 = 4096;

/// Claimed slots of one chunk of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexChunk {
    pub(crate) pool: IpNetwork,
    pub(crate) chunk: u64,
    pub(crate) claimed: Bitmap,
}

impl IndexChunk {
    /// An empty chunk of `len` slots.
    pub fn new(pool: IpNetwork, chunk: u64, len: u32) -> IndexChunk {
        IndexChunk {
            pool,
            chunk,
            claimed: Bitmap::new(len),
        }
    }

    /// A chunk from its parts (how stores rebuild one). A chunk does not know its pool's block
    /// size, so the engine checks the bitmap's length when it reads the chunk.
    pub fn from_parts(pool: IpNetwork, chunk: u64, claimed: Bitmap) -> IndexChunk {
        IndexChunk {
            pool,
            chunk,
            claimed,
        }
    }

    /// The pool's CIDR.
    pub fn pool(&self) -> IpNetwork {
        self.pool
    }

    /// Chunk number (slot / CHUNK_SLOTS).
    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    /// Bit `i` set: slot `chunk * CHUNK_SLOTS + i` has a block.
    pub fn claimed(&self) -> &Bitmap {
        &self.claimed
    }
}

/// Which chunks of a pool are full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolIndex {
    pub(crate) pool: IpNetwork,
    pub(crate) full_chunks: BTreeSet<u64>,
}

impl PoolIndex {
    /// A pool index from its parts.
    pub fn new(pool: IpNetwork, full_chunks: BTreeSet<u64>) -> PoolIndex {
        PoolIndex { pool, full_chunks }
    }

    /// The pool's CIDR.
    pub fn pool(&self) -> IpNetwork {
        self.pool
    }

    /// Chunks with every slot claimed.
    pub fn full_chunks(&self) -> &BTreeSet<u64> {
        &self.full_chunks
    }
}

/// The length of chunk `c` for a pool of `slots` block slots.
pub fn chunk_len(slots: u128, c: u64) -> u32 {
    let start = u128::from(c) * u128::from(CHUNK_SLOTS);
    u32::try_from(slots.saturating_sub(start).min(u128::from(CHUNK_SLOTS))).unwrap_or(CHUNK_SLOTS)
}

/// Number of chunks for `slots` block slots (fits a `u64` for valid pools).
pub fn chunk_count(slots: u128) -> u64 {
    u64::try_from(slots.div_ceil(u128::from(CHUNK_SLOTS))).unwrap_or(u64::MAX)
}

/// Chunk number and offset inside the chunk of a slot.
pub fn split_slot(slot: u128) -> (u64, u32) {
    let c = u64::try_from(slot / u128::from(CHUNK_SLOTS)).unwrap_or(u64::MAX);
    let i = u32::try_from(slot % u128::from(CHUNK_SLOTS)).unwrap_or(0);
    (c, i)
}

/// The slot at offset `i` of chunk `c`.
pub fn join_slot(c: u64, i: u32) -> u128 {
    u128::from(c) * u128::from(CHUNK_SLOTS) + u128::from(i)
}
