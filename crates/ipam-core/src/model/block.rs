//! Blocks: one block-sized CIDR of a pool, its bitmap allocator, and who holds each address.
//!
//! Ordinal `i` is the block's `i`-th address. Every ordinal is in exactly one state:
//! *free*, *used* (held by a handle, with attributes and the sequence number it was allocated
//! at), *reserved* (host-reserved at creation, never handed out) or *cooling* (released, not yet
//! reusable). `taken` marks every non-free ordinal, so allocation is a search for a zero bit.
//!
//! Reuse policy: allocation searches from a cursor just past the last ordinal handed out and
//! wraps. An address that is freed sits behind the cursor, so it is handed out again only after
//! every other free address of the block has been (FIFO-like, without a queue). When the
//! cluster's `ip_cooldown_seconds` is set, a freed address also stays cooling for that long.
//!
//! Sequence numbers: `seq` starts at the creation time in nanoseconds (a re-created block never
//! repeats numbers) and grows by one on every write; a used ordinal remembers the value at its
//! allocation, so a release that names an older value cannot free a re-used address.

use super::attr_table::{fingerprint, id_fingerprint, AttrEntry, AttrTable};
use crate::bitmap::Bitmap;
use crate::cidr;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::net::IpAddr;
use std::sync::Arc;

/// Who a block is affine to. Shared, not owned: every copy of a block (one per assignment
/// and release) takes it along.
pub type BlockAffinity = Option<Arc<str>>;

pub use super::holder::AllocAttrs;

/// Addresses reserved at the start and end of every new block (Windows nodes use 3 and 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostReserved {
    /// Reserved at the start.
    pub first: u32,
    /// Reserved at the end.
    pub last: u32,
}

/// A block failed a structural check (after decoding, or on a bad request).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The stored block is internally inconsistent.
    #[error("block {cidr} is inconsistent: {why}")]
    Inconsistent {
        /// Block.
        cidr: IpNetwork,
        /// What is wrong.
        why: String,
    },
    /// The address is not in the block.
    #[error("{0} is not in block {1}")]
    OutOfBlock(IpAddr, IpNetwork),
    /// The address is already in use.
    #[error("{0} is already allocated")]
    InUse(IpAddr),
    /// The address is host-reserved.
    #[error("{0} is host-reserved")]
    Reserved(IpAddr),
    /// The address was released recently and is cooling down.
    #[error("{0} was released recently and is in its cooldown")]
    Cooling(IpAddr),
    /// The reservation leaves no usable address.
    #[error("reserving {first}+{last} addresses leaves nothing usable in {cidr}")]
    ReserveTooLarge {
        /// Block.
        cidr: IpNetwork,
        /// First N.
        first: u32,
        /// Last M.
        last: u32,
    },
}

/// A per-address table: a block of up to 64 addresses (the default /26) keeps it inline, in
/// the block's one allocation, so copying a block allocates once.
type Slots<T> = SmallVec<[T; 64]>;

/// An owner slot's value: 0 when the address is unused, else 1 + its holder's index in the
/// attribute table. Two bytes, so the body of a /26 block stays small enough for the
/// allocator's per-thread cache (about 1 KiB), which a copy and a drop per operation use.
type OwnerIx = u16;

/// The most addresses a block may have: every holder index fits an [`OwnerIx`]. Pools allow
/// blocks of up to 4,096 addresses.
pub const MAX_BLOCK_ADDRESSES: u32 = 1 << 15;

/// Ordinals of a block, as allocation and lookups by handle return them (a pod's one or two
/// without a heap allocation).
pub type Ordinals = SmallVec<[u32; 4]>;

/// A block of addresses: one pointer to its fields ([`BlockBody`], read and written through
/// it), so moving a block through records, commits and a kept context copies no field.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Block(Box<BlockBody>);

impl std::ops::Deref for Block {
    type Target = BlockBody;
    fn deref(&self) -> &BlockBody {
        &self.0
    }
}

impl std::ops::DerefMut for Block {
    fn deref_mut(&mut self) -> &mut BlockBody {
        &mut self.0
    }
}

/// The fields of a [`Block`]: the public ones are read and written through the block; the
/// rest only through its methods, which keep them consistent.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBody {
    /// The block's network.
    pub cidr: IpNetwork,
    /// The node the block is affine to, if any.
    pub affinity: BlockAffinity,
    /// Bumped on every write.
    pub seq: u64,
    /// When the block last became (or was created) empty, in ns; `None` while in use.
    pub empty_since: Option<u64>,
    taken: Bitmap,
    reserved: Bitmap,
    /// (ordinal, reusable-at ns) for cooling ordinals, in release order.
    cooling: Vec<(u32, u64)>,
    /// Per ordinal: 1 + index into `attrs`, or 0 when not used. Kept apart from `seqs` so
    /// the scans over it touch 2 bytes an address.
    owner: Slots<OwnerIx>,
    /// Per ordinal: block sequence number at allocation; 0 when not used.
    #[serde(with = "delta_seqs")]
    seqs: Slots<u64>,
    attrs: AttrTable,
    cursor: u32,
}

impl Clone for Block {
    /// The attribute table's chunks are shared, not copied (see `attr_table`).
    fn clone(&self) -> Self {
        // Written into the new allocation in place (a `Box::new` of the clone builds the
        // 928 bytes of a /26 block on the stack first and copies them over).
        Block(Box::write(Box::new_uninit(), self.0.as_ref().clone()))
    }

    /// In `self`'s allocations (see [`BlockBody::clone_from`]).
    fn clone_from(&mut self, source: &Self) {
        self.0.as_mut().clone_from(source.0.as_ref());
    }
}

impl Clone for BlockBody {
    #[inline(always)]
    fn clone(&self) -> Self {
        BlockBody {
            cidr: self.cidr,
            affinity: self.affinity.clone(),
            seq: self.seq,
            empty_since: self.empty_since,
            taken: self.taken.clone(),
            reserved: self.reserved.clone(),
            cooling: self.cooling.clone(),
            owner: Slots::from_slice(&self.owner),
            seqs: Slots::from_slice(&self.seqs),
            attrs: self.attrs.clone(),
            cursor: self.cursor,
        }
    }

    /// A copy written over `self`: no allocation where `self` has room for `source`'s
    /// tables, and no reference counted for what both already share (the node name, the
    /// attribute table's chunks), so a copy a store handed back costs about a plain copy.
    fn clone_from(&mut self, source: &Self) {
        self.cidr = source.cidr;
        match (&self.affinity, &source.affinity) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            _ => self.affinity.clone_from(&source.affinity),
        }
        self.seq = source.seq;
        self.empty_since = source.empty_since;
        self.taken.clone_from(&source.taken);
        self.reserved.clone_from(&source.reserved);
        self.cooling.clone_from(&source.cooling);
        copy_slots(&mut self.owner, &source.owner);
        copy_slots(&mut self.seqs, &source.seqs);
        self.attrs.clone_from(&source.attrs);
        self.cursor = source.cursor;
    }
}

/// `source` copied into `to`, as one slice where the lengths match (a block copied over
/// another of its size).
fn copy_slots<T: Copy>(to: &mut Slots<T>, source: &Slots<T>) {
    if to.len() == source.len() {
        to.copy_from_slice(source);
    } else {
        *to = Slots::from_slice(source);
    }
}

/// A block's fields as a store holds them, not yet checked: what a store decodes into, and
/// what [`Block::from_parts`] validates into a [`Block`]. Stores own their encoding of it
/// (ipam-store's `stored` module), so the core can change its in-memory layout freely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockParts {
    /// The block's network.
    pub cidr: IpNetwork,
    /// The node the block is affine to.
    pub affinity: BlockAffinity,
    /// Sequence number.
    pub seq: u64,
    /// When the block became empty, in ns.
    pub empty_since: Option<u64>,
    /// Ordinals in use (allocated or host-reserved).
    pub taken: Bitmap,
    /// Host-reserved ordinals.
    pub reserved: Bitmap,
    /// (ordinal, reusable-at ns) of cooling ordinals, in release order.
    pub cooling: Vec<(u32, u64)>,
    /// Per ordinal: 1 + index into `attrs`, or 0.
    pub owner: Vec<u32>,
    /// Per ordinal: block sequence number at allocation, or 0.
    pub seqs: Vec<u64>,
    /// The distinct owners.
    pub attrs: Vec<Arc<AllocAttrs>>,
    /// Where the next search starts.
    pub cursor: u32,
}

/// A borrowed view of a block's fields, for encoding without copying (the owner table is
/// [`Block::owners`]).
#[derive(Debug)]
pub struct BlockPartsRef<'a> {
    /// The block's network.
    pub cidr: IpNetwork,
    /// The node the block is affine to.
    pub affinity: Option<&'a str>,
    /// Sequence number.
    pub seq: u64,
    /// When the block became empty, in ns.
    pub empty_since: Option<u64>,
    /// Ordinals in use.
    pub taken: &'a Bitmap,
    /// Host-reserved ordinals.
    pub reserved: &'a Bitmap,
    /// Cooling ordinals.
    pub cooling: &'a [(u32, u64)],
    /// Per ordinal owner index.
    pub owner: &'a [u16],
    /// Per ordinal sequence numbers.
    pub seqs: &'a [u64],
    /// Where the next search starts.
    pub cursor: u32,
}

impl Block {
    /// Builds a block from stored fields, checking every structural rule ([`Block::validate`]).
    pub fn from_parts(p: BlockParts) -> Result<Block, BlockError> {
        let b = Block(Box::new(BlockBody {
            cidr: p.cidr,
            affinity: p.affinity,
            seq: p.seq,
            empty_since: p.empty_since,
            taken: p.taken,
            reserved: p.reserved,
            cooling: p.cooling,
            owner: p
                .owner
                .iter()
                .map(|&a| OwnerIx::try_from(a))
                .collect::<Result<_, _>>()
                .map_err(|_| BlockError::Inconsistent {
                    cidr: p.cidr,
                    why: "slot refers to a missing attribute entry".into(),
                })?,
            seqs: Slots::from_vec(p.seqs),
            attrs: p.attrs.into_iter().map(AttrEntry::new).collect(),
            cursor: p.cursor,
        }));
        b.validate()?;
        Ok(b)
    }

    /// The block's fields, borrowed, for a store to encode.
    pub fn parts(&self) -> BlockPartsRef<'_> {
        BlockPartsRef {
            cidr: self.cidr,
            affinity: self.affinity.as_deref(),
            seq: self.seq,
            empty_since: self.empty_since,
            taken: &self.taken,
            reserved: &self.reserved,
            cooling: &self.cooling,
            owner: &self.owner,
            seqs: &self.seqs,
            cursor: self.cursor,
        }
    }

    /// The distinct owners, in table order (what `owner` indexes, from 1).
    pub fn owners(&self) -> impl ExactSizeIterator<Item = &AllocAttrs> {
        self.attrs.iter().map(|e| e.attrs.as_ref())
    }
}

impl Block {
    /// A new empty block; `now` seeds the sequence number.
    pub fn new(
        cidr: IpNetwork,
        affinity: BlockAffinity,
        reserved: HostReserved,
        now: u64,
    ) -> Result<Block, BlockError> {
        let len = cidr::size_u32(&cidr)
            .filter(|&n| n <= MAX_BLOCK_ADDRESSES)
            .ok_or_else(|| BlockError::Inconsistent {
                cidr,
                why: "too large for a block".into(),
            })?;
        if u64::from(reserved.first) + u64::from(reserved.last) >= u64::from(len) {
            return Err(BlockError::ReserveTooLarge {
                cidr,
                first: reserved.first,
                last: reserved.last,
            });
        }
        let mut b = Block(Box::new(BlockBody {
            cidr,
            affinity,
            seq: now.max(1),
            empty_since: Some(now),
            taken: Bitmap::new(len),
            reserved: Bitmap::new(len),
            cooling: Vec::new(),
            owner: Slots::from_elem(0, len as usize),
            seqs: Slots::from_elem(0, len as usize),
            attrs: AttrTable::default(),
            cursor: 0,
        }));
        for o in (0..reserved.first).chain(len - reserved.last..len) {
            b.taken.set(o);
            b.reserved.set(o);
        }
        b.cursor = reserved.first;
        Ok(b)
    }

    /// Number of addresses.
    pub fn size(&self) -> u32 {
        self.taken.len()
    }

    /// Addresses held by handles.
    pub fn used_count(&self) -> u32 {
        self.taken.count_ones() - self.reserved.count_ones() - self.cooling_count()
    }

    /// Host-reserved addresses.
    pub fn reserved_count(&self) -> u32 {
        self.reserved.count_ones()
    }

    /// Released addresses still cooling down.
    pub fn cooling_count(&self) -> u32 {
        u32::try_from(self.cooling.len()).unwrap_or(u32::MAX)
    }

    /// When the last cooling address becomes reusable (ns), if any is cooling.
    pub fn cooling_until(&self) -> Option<u64> {
        self.cooling.iter().map(|&(_, until)| until).max()
    }

    /// Free addresses (ready to hand out, ignoring cooling that may have expired).
    pub fn free_count(&self) -> u32 {
        self.size() - self.taken.count_ones()
    }

    /// True when nothing is used or cooling (reserved addresses do not count).
    pub fn is_unused(&self) -> bool {
        self.used_count() == 0 && self.cooling.is_empty()
    }

    /// The host reservation this block was created with.
    pub fn host_reserved(&self) -> HostReserved {
        let first = (0..self.size())
            .take_while(|&o| self.reserved.get(o))
            .count();
        let last = (0..self.size())
            .rev()
            .take_while(|&o| self.reserved.get(o))
            .count();
        HostReserved {
            first: u32::try_from(first).unwrap_or(0),
            last: u32::try_from(last).unwrap_or(0),
        }
    }

    /// The address of ordinal `ord`.
    pub fn ip(&self, ord: u32) -> IpAddr {
        cidr::nth(&self.cidr, ord)
    }

    /// The ordinal of `ip`, if it is in the block.
    pub fn ordinal(&self, ip: IpAddr) -> Option<u32> {
        cidr::ordinal(&self.cidr, ip).filter(|&o| o < self.size())
    }

    /// Who holds `ord` and at which sequence number; `None` unless used.
    pub fn holder(&self, ord: u32) -> Option<(&Arc<AllocAttrs>, u64)> {
        let a = *self.owner.get(ord as usize)?;
        (a != 0).then(|| (&self.attrs[(a - 1) as usize].attrs, self.seqs[ord as usize]))
    }

    /// Used ordinals with their holders, in address order.
    pub fn used(&self) -> impl Iterator<Item = (u32, &Arc<AllocAttrs>, u64)> + '_ {
        self.owner
            .iter()
            .zip(&self.seqs)
            .zip(0u32..)
            .filter(|((&a, _), _)| a != 0)
            .map(|((&a, &seq), o)| (o, &self.attrs[(a - 1) as usize].attrs, seq))
    }

    /// Ordinals held by `handle_id`, in address order.
    pub fn ordinals_of(&self, handle_id: &str) -> Ordinals {
        // The handle's entries first (one, unless its requests differed in attributes),
        // then one pass over the owner slots.
        let entries = self.entries_of(handle_id);
        let mut out = SmallVec::new();
        match entries[..] {
            [] => {}
            [one] => slots_equal(&self.owner, one, &mut out),
            _ => {
                for (o, a) in (0u32..).zip(self.owner.iter()) {
                    if entries.contains(a) {
                        out.push(o);
                    }
                }
            }
        }
        out
    }
}

/// Pushes the ordinals whose owner slot is `one`, 16 slots at a time: each chunk's matches
/// as a bit mask (the compiler makes the compares one vector compare), then its set bits, so
/// a pass over a /26 block is four compares instead of 64 branches.
fn slots_equal(owner: &[OwnerIx], one: OwnerIx, out: &mut Ordinals) {
    let mut chunks = owner.chunks_exact(16);
    let mut base = 0u32;
    for c in &mut chunks {
        let mut mask = 0u32;
        for (i, &a) in c.iter().enumerate() {
            mask |= u32::from(a == one) << i;
        }
        while mask != 0 {
            out.push(base + mask.trailing_zeros());
            mask &= mask - 1;
        }
        base += 16;
    }
    for (o, &a) in (base..).zip(chunks.remainder()) {
        if a == one {
            out.push(o);
        }
    }
}

impl Block {
    /// The owner values (1 + table index) of `handle_id`'s entries.
    fn entries_of(&self, handle_id: &str) -> SmallVec<[OwnerIx; 2]> {
        let fp = id_fingerprint(handle_id);
        let mut out = SmallVec::new();
        self.attrs.for_each_fp(fp, |i, e| {
            if e.attrs.handle_id() == handle_id {
                out.push(OwnerIx::try_from(i + 1).unwrap_or(0));
            }
        });
        out
    }

    /// Frees cooling ordinals whose time has come; true if anything changed.
    pub fn expire_cooling(&mut self, now: u64) -> bool {
        let before = self.cooling.len();
        let b = &mut *self.0;
        let taken = &mut b.taken;
        b.cooling.retain(|&(o, until)| {
            if until <= now {
                taken.clear(o);
                false
            } else {
                true
            }
        });
        before != self.cooling.len()
    }

    fn attr_index(&mut self, attrs: &Arc<AllocAttrs>) -> OwnerIx {
        let fp = fingerprint(attrs);
        // Most requests re-use the entry they just added, so look from the back.
        let found = self
            .attrs
            .rposition_fp(fp, |e| Arc::ptr_eq(&e.attrs, attrs) || *e.attrs == **attrs);
        if let Some(i) = found {
            return OwnerIx::try_from(i + 1).unwrap_or(0);
        }
        self.attrs.push(AttrEntry {
            fp,
            attrs: attrs.clone(),
        });
        OwnerIx::try_from(self.attrs.len()).unwrap_or(0)
    }

    /// Hands out up to `n` free ordinals to `attrs`, from the cursor on. Returns the ordinals
    /// (fewer than `n` when the block fills). Bumps `seq` once when anything is allocated.
    pub fn allocate(&mut self, n: usize, attrs: &Arc<AllocAttrs>) -> Ordinals {
        let mut out = Ordinals::with_capacity(n.min(self.size() as usize));
        if n == 0 {
            return out;
        }
        let mut idx = 0;
        while out.len() < n {
            let Some(o) = self.taken.first_zero_from(self.cursor) else {
                break;
            };
            if idx == 0 {
                idx = self.attr_index(attrs);
            }
            self.taken.set(o);
            self.owner[o as usize] = idx;
            self.seqs[o as usize] = self.seq;
            self.cursor = if o + 1 >= self.size() { 0 } else { o + 1 };
            out.push(o);
        }
        if !out.is_empty() {
            self.seq += 1;
            self.empty_since = None;
        }
        out
    }

    /// [`Block::allocate`], never choosing an address inside `avoid` (reservations): their
    /// free ordinals are marked taken for the search and cleared again, so nothing about them
    /// is stored in the block.
    pub fn allocate_avoiding(
        &mut self,
        n: usize,
        attrs: &Arc<AllocAttrs>,
        avoid: &[IpNetwork],
    ) -> Ordinals {
        let mut masked = Vec::new();
        for net in avoid {
            if !cidr::overlaps(net, &self.cidr) {
                continue;
            }
            let lo = cidr::base(net).max(cidr::base(&self.cidr)) - cidr::base(&self.cidr);
            let span = |n: &IpNetwork| {
                let hb = cidr::host_bits(n);
                if hb >= 128 {
                    u128::MAX
                } else {
                    (1u128 << hb) - 1
                }
            };
            let hi = (cidr::base(net).saturating_add(span(net)))
                .min(cidr::base(&self.cidr) + span(&self.cidr))
                - cidr::base(&self.cidr);
            for o in lo..=hi {
                let Ok(o) = u32::try_from(o) else { break };
                if o < self.size() && !self.taken.get(o) {
                    self.taken.set(o);
                    masked.push(o);
                }
            }
        }
        let out = self.allocate(n, attrs);
        for o in masked {
            self.taken.clear(o);
        }
        out
    }

    /// Allocates the specific address `ip` to `attrs`, returning its ordinal.
    pub fn allocate_ip(&mut self, ip: IpAddr, attrs: &Arc<AllocAttrs>) -> Result<u32, BlockError> {
        let o = self
            .ordinal(ip)
            .ok_or(BlockError::OutOfBlock(ip, self.cidr))?;
        if self.reserved.get(o) {
            return Err(BlockError::Reserved(ip));
        }
        if self.cooling.iter().any(|&(c, _)| c == o) {
            return Err(BlockError::Cooling(ip));
        }
        if self.taken.get(o) {
            return Err(BlockError::InUse(ip));
        }
        let idx = self.attr_index(attrs);
        self.taken.set(o);
        self.owner[o as usize] = idx;
        self.seqs[o as usize] = self.seq;
        self.seq += 1;
        self.empty_since = None;
        Ok(o)
    }

    /// Releases a used ordinal. With `cooldown_ns > 0` it stays taken until `now +
    /// cooldown_ns`. Returns who held it; `None` (and no change) if not used.
    /// The caller bumps `seq` once per write with [`Block::touch`].
    pub fn release(&mut self, ord: u32, now: u64, cooldown_ns: u64) -> Option<Arc<AllocAttrs>> {
        let attr = *self.owner.get(ord as usize)?;
        if attr == 0 {
            return None;
        }
        let holder = self.attrs[(attr - 1) as usize].attrs.clone();
        self.owner[ord as usize] = 0;
        self.seqs[ord as usize] = 0;
        if cooldown_ns > 0 {
            self.cooling.push((ord, now.saturating_add(cooldown_ns)));
        } else {
            self.taken.clear(ord);
        }
        // Drop the attribute entry when nothing refers to it any more.
        if !self.owner.contains(&attr) {
            let removed = (attr - 1) as usize;
            let last = OwnerIx::try_from(self.attrs.len()).unwrap_or(0);
            self.attrs.swap_remove(removed);
            if attr != last {
                for a in self.owner.iter_mut().filter(|a| **a == last) {
                    *a = attr;
                }
            }
        }
        if self.is_unused() {
            self.empty_since = Some(now);
        }
        Some(holder)
    }

    /// Marks a write: bumps the sequence number.
    pub fn touch(&mut self) {
        self.seq += 1;
    }

    /// Structural check, run by stores after decoding.
    pub fn validate(&self) -> Result<(), BlockError> {
        let bad = |why: &str| {
            Err(BlockError::Inconsistent {
                cidr: self.cidr,
                why: why.to_string(),
            })
        };
        if !cidr::is_masked(&self.cidr) {
            return bad("CIDR has host bits set");
        }
        let Some(len) = cidr::size_u32(&self.cidr).filter(|&n| n <= MAX_BLOCK_ADDRESSES) else {
            return bad("too large for a block");
        };
        if self.taken.len() != len
            || self.reserved.len() != len
            || self.owner.len() != len as usize
            || self.seqs.len() != len as usize
        {
            return bad("bitmap or slot count does not match the block size");
        }
        if self.cursor >= len {
            return bad("cursor out of range");
        }
        let mut refs = vec![0u32; self.attrs.len()];
        for ((&a, &seq), o) in self.owner.iter().zip(&self.seqs).zip(0u32..) {
            if (a == 0) != (seq == 0) {
                return bad("sequence number set on a free ordinal, or missing on a used one");
            }
            if a != 0 {
                let Some(r) = refs.get_mut((a - 1) as usize) else {
                    return bad("slot refers to a missing attribute entry");
                };
                *r += 1;
                if !self.taken.get(o) || self.reserved.get(o) {
                    return bad("used ordinal not marked taken, or marked reserved");
                }
            }
        }
        if refs.contains(&0) {
            return bad("attribute entry used by no address");
        }
        for r in self.reserved.ones() {
            if !self.taken.get(r) {
                return bad("reserved ordinal not marked taken");
            }
        }
        let mut seen = Bitmap::new(len);
        for &(o, _) in &self.cooling {
            if o >= len
                || seen.get(o)
                || !self.taken.get(o)
                || self.reserved.get(o)
                || self.owner[o as usize] != 0
            {
                return bad("cooling entry is out of range, duplicated, or also used/reserved");
            }
            seen.set(o);
        }
        let used = self.owner.iter().filter(|&&a| a != 0).count();
        if self.taken.count_ones() as usize
            != used + self.reserved.count_ones() as usize + self.cooling.len()
        {
            return bad("taken ordinals are not exactly used + reserved + cooling");
        }
        Ok(())
    }
}

/// Sequence numbers are large (they start at a time in ns) but close to each other, so they
/// are stored as differences from the previous used ordinal's, which encoders that use
/// variable-length integers store in a byte or two instead of nine. The casts reinterpret bits
/// on purpose (zigzag coding of wrapping differences).
#[allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod delta_seqs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    fn zigzag(d: i64) -> u64 {
        ((d << 1) ^ (d >> 63)) as u64
    }

    fn unzigzag(z: u64) -> i64 {
        ((z >> 1) as i64) ^ -((z & 1) as i64)
    }

    pub(super) fn serialize<S: Serializer>(seqs: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut prev = 0u64;
        let out: Vec<u64> = seqs
            .iter()
            .map(|&v| {
                if v == 0 {
                    0
                } else {
                    let d = v.wrapping_sub(prev) as i64;
                    prev = v;
                    zigzag(d).wrapping_add(1)
                }
            })
            .collect();
        out.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<super::Slots<u64>, D::Error> {
        let raw = Vec::<u64>::deserialize(d)?;
        let mut prev = 0u64;
        Ok(raw
            .into_iter()
            .map(|z| {
                if z == 0 {
                    0
                } else {
                    prev = prev.wrapping_add(unzigzag(z - 1) as u64);
                    prev
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(h: &str) -> Arc<AllocAttrs> {
        Arc::new(AllocAttrs::new(h, [("", ""); 0]).expect("a valid holder"))
    }

    fn block() -> Block {
        Block::new(
            "10.244.0.0/26".parse().expect("a valid literal"),
            Some("n1".into()),
            HostReserved::default(),
            1_000,
        )
        .expect("a valid fixture")
    }

    #[test]
    fn allocates_in_order_and_rotates_past_freed() {
        let mut b = block();
        let a = attrs("h1");
        assert_eq!(b.allocate(3, &a)[..], [0, 1, 2]);
        assert_eq!(
            b.release(1, 5, 0)
                .expect("release succeeds")
                .handle_id()
                .to_string(),
            "h1"
        );
        // The freed ordinal 1 is behind the cursor: next come 3, 4, ...
        assert_eq!(b.allocate(2, &a)[..], [3, 4]);
        let rest = b.allocate(100, &a);
        assert_eq!(rest.len(), 64 - 4);
        assert_eq!(
            *rest.last().expect("last succeeds"),
            1,
            "freed ordinal comes last"
        );
        assert_eq!(b.free_count(), 0);
        assert!(b.allocate(1, &a).is_empty());
        b.validate().expect("validate succeeds");
    }

    #[test]
    fn sequence_numbers_guard_reuse() {
        let mut b = block();
        let s0 = b.seq;
        let o = b.allocate(1, &attrs("h1"))[0];
        assert_eq!(b.holder(o).expect("holder succeeds").1, s0);
        assert!(b.seq > s0);
        b.release(o, 10, 0);
        b.touch();
        b.cursor = o; // force immediate reuse to prove the number differs
        let o2 = b.allocate(1, &attrs("h2"))[0];
        assert_eq!(o2, o);
        assert_ne!(b.holder(o2).expect("holder succeeds").1, s0);
    }

    /// The ordinals found by handle equal those a plain pass over every address finds, in
    /// blocks whose sizes are and are not whole chunks of the 16-slot scan.
    #[test]
    fn ordinals_by_handle_equal_a_plain_pass() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n
        };
        for cidr in [
            "10.244.0.0/30",
            "10.244.0.0/29",
            "10.244.0.0/28",
            "10.244.0.0/26",
            "10.244.0.0/23",
        ] {
            let mut b = Block::new(
                cidr.parse().expect("a valid literal"),
                None,
                HostReserved::default(),
                1,
            )
            .expect("a valid fixture");
            let handles: Vec<Arc<AllocAttrs>> = (0..5).map(|i| attrs(&format!("h{i}"))).collect();
            for round in 0..200 {
                let h = &handles[usize::try_from(next(5)).unwrap_or(0)];
                if next(3) == 0 {
                    if let Some(&o) = b.ordinals_of(h.handle_id()).first() {
                        b.release(o, 1, 0);
                    }
                } else if b.free_count() > 0 {
                    b.allocate(1, h);
                }
                for h in &handles {
                    let plain: Vec<u32> = (0..b.size())
                        .filter(|&o| {
                            b.holder(o)
                                .is_some_and(|(a, _)| a.handle_id() == h.handle_id())
                        })
                        .collect();
                    assert_eq!(
                        b.ordinals_of(h.handle_id()).to_vec(),
                        plain,
                        "{cidr}, round {round}"
                    );
                }
            }
        }
    }

    #[test]
    fn attributes_are_shared_and_compacted() {
        let mut b = block();
        let (a1, a2) = (attrs("h1"), attrs("h2"));
        let x = b.allocate(2, &a1);
        let y = b.allocate(1, &a2);
        assert_eq!(b.attrs.len(), 2);
        b.allocate(1, &attrs("h1")); // equal value, different Arc: shared
        assert_eq!(b.attrs.len(), 2);
        assert_eq!(b.ordinals_of("h1").len(), 3);
        for o in x {
            b.release(o, 1, 0);
        }
        assert_eq!(b.attrs.len(), 2, "h1 still holds one address");
        b.release(b.ordinals_of("h1")[0], 1, 0);
        assert_eq!(b.attrs.len(), 1);
        assert_eq!(b.holder(y[0]).expect("holder succeeds").0.handle_id(), "h2");
        b.validate().expect("validate succeeds");
    }

    #[test]
    fn host_reserved_and_cooldown() {
        let mut b = Block::new(
            "10.0.0.0/29".parse().expect("a valid literal"),
            None,
            HostReserved { first: 3, last: 1 },
            0,
        )
        .expect("a valid fixture");
        assert_eq!(b.reserved_count(), 4);
        assert_eq!(b.host_reserved(), HostReserved { first: 3, last: 1 });
        let a = attrs("h");
        assert_eq!(b.allocate(10, &a)[..], [3, 4, 5, 6]);
        assert_eq!(
            b.allocate_ip("10.0.0.0".parse().expect("a valid literal"), &a),
            Err(BlockError::Reserved(
                "10.0.0.0".parse().expect("a valid literal")
            ))
        );
        b.release(4, 100, 50);
        assert_eq!(b.cooling_count(), 1);
        assert!(b.allocate(1, &a).is_empty(), "cooling address not reusable");
        assert!(matches!(
            b.allocate_ip("10.0.0.4".parse().expect("a valid literal"), &a),
            Err(BlockError::Cooling(_))
        ));
        b.validate().expect("validate succeeds");
        assert!(!b.expire_cooling(149));
        assert!(b.expire_cooling(150));
        assert_eq!(b.allocate(1, &a)[..], [4]);
        assert!(Block::new(
            "10.0.0.0/30".parse().expect("a valid literal"),
            None,
            HostReserved { first: 3, last: 1 },
            0
        )
        .is_err());
    }

    #[test]
    fn validate_catches_inconsistency() {
        let mut b = block();
        b.allocate(2, &attrs("h"));
        b.validate().expect("validate succeeds");
        let mut broken = b.clone();
        broken.taken.clear(0);
        assert!(broken.validate().is_err());
        let mut broken = b.clone();
        broken.owner[5] = 9;
        assert!(broken.validate().is_err());
        let mut broken = b.clone();
        broken.cursor = 64;
        assert!(broken.validate().is_err());
    }

    #[test]
    fn blocks_past_the_holder_index_are_refused() {
        // The largest block every holder index fits, and one twice as large.
        let ok: IpNetwork = "10.0.0.0/17".parse().expect("a valid literal");
        assert!(Block::new(ok, None, HostReserved::default(), 1).is_ok());
        let big: IpNetwork = "10.0.0.0/16".parse().expect("a valid literal");
        assert!(matches!(
            Block::new(big, None, HostReserved::default(), 1),
            Err(BlockError::Inconsistent { .. })
        ));
        // A stored owner value past the holder index range is refused, not truncated.
        // (Cut to two bytes, it would name the block's one holder and pass every check.)
        let mut b = block();
        let o = b.allocate(1, &attrs("h"))[0] as usize;
        let p = b.parts();
        let mut owner: Vec<u32> = p.owner.iter().map(|&a| u32::from(a)).collect();
        owner[o] = 1 << 16 | 1;
        let parts = BlockParts {
            cidr: p.cidr,
            affinity: p.affinity.map(Into::into),
            seq: p.seq,
            empty_since: p.empty_since,
            taken: p.taken.clone(),
            reserved: p.reserved.clone(),
            cooling: p.cooling.to_vec(),
            owner,
            seqs: p.seqs.to_vec(),
            attrs: vec![attrs("h")],
            cursor: p.cursor,
        };
        assert!(matches!(
            Block::from_parts(parts),
            Err(BlockError::Inconsistent { .. })
        ));
    }

    #[test]
    fn empty_since_tracks_use() {
        let mut b = block();
        assert_eq!(b.empty_since, Some(1_000));
        let o = b.allocate(1, &attrs("h"))[0];
        assert_eq!(b.empty_since, None);
        b.release(o, 2_000, 0);
        assert_eq!(b.empty_since, Some(2_000));
        assert!(b.is_unused());
    }

    proptest::proptest! {
        /// A copy written over any other block (of any size, any history, sharing chunks
        /// with it or not) equals the source, encodes as it does, and goes its own way after:
        /// changing one leaves the other as it was.
        #[test]
        fn a_copy_over_another_block_is_the_source(
            ops in proptest::collection::vec((0u8..4, 0u32..300), 1..80),
            pick in proptest::collection::vec((0usize..100, 0usize..100), 1..12),
        ) {
            let nets = ["10.244.0.0/26", "10.244.1.0/28", "10.244.2.0/24", "fd00::/122"];
            let mut blocks: Vec<Block> = nets
                .iter()
                .map(|n| {
                    Block::new(n.parse().expect("a valid literal"), Some("n1".into()),
                        HostReserved::default(), 1)
                        .expect("a valid fixture")
                })
                .collect();
            let mut history: Vec<Block> = blocks.clone();
            for (step, (op, x)) in ops.into_iter().enumerate() {
                let b = &mut blocks[step % nets.len()];
                let now = 1_000 + step as u64;
                match op {
                    0 | 1 => {
                        b.allocate(1 + (x % 3) as usize, &attrs(&format!("h{}", x % 40)));
                    }
                    2 => {
                        let ord = x % b.size();
                        b.release(ord, now, u64::from(x % 2) * 10);
                        b.touch();
                    }
                    _ => {
                        b.expire_cooling(now + u64::from(x));
                    }
                }
                history.push(b.clone());
            }
            let json = |b: &Block| serde_json::to_string(b).expect("a block encodes");
            for (i, j) in pick {
                let source = &history[i % history.len()];
                let mut copy = history[j % history.len()].clone();
                copy.clone_from(source);
                proptest::prop_assert_eq!(&copy, source);
                proptest::prop_assert_eq!(json(&copy), json(source));
                let before = json(source);
                let last = copy.size() - 1;
                copy.allocate(2, &attrs("after"));
                copy.release(last, 5_000, 0);
                copy.touch();
                proptest::prop_assert_eq!(json(source), before, "the source never sees the copy's changes");
            }
        }
    }
}
