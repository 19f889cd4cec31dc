//! Whole-store consistency checks: the invariants of docs/ARCHITECTURE.md, stated as code.
//! Used by the property tests after every step and by the operator's `check`.

use crate::cidr::{self, Cidr};
use crate::datastore::{Datastore, Range, Record, StoreError};
use crate::model::AffinityState;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Two blocks share addresses.
    OverlappingBlocks(IpNetwork, IpNetwork),
    /// A block lies in no pool.
    BlockOutsidePools(IpNetwork),
    /// A block's prefix differs from its pool's block size.
    BlockMisaligned(IpNetwork),
    /// A stored block fails its structural check.
    BlockInvalid(IpNetwork, String),
    /// An address is held under a handle with no record.
    AddressWithoutHandle(IpAddr, String),
    /// A handle's count for a block differs from the addresses it holds there.
    HandleCountMismatch {
        /// Handle.
        handle: String,
        /// Block.
        block: IpNetwork,
        /// Count in the handle record.
        recorded: u32,
        /// Addresses held.
        actual: u32,
    },
    /// A handle with no addresses.
    EmptyHandle(String),
    /// A confirmed affinity whose block does not exist or is affine elsewhere.
    AffinityWithoutBlock(String, IpNetwork),
    /// A block affine to a node that has no confirmed affinity record for it.
    BlockWithoutAffinity(IpNetwork, String),
    /// An affinity left pending or pending deletion.
    UnconfirmedAffinity(String, IpNetwork, AffinityState),
    /// The claim index disagrees with the blocks that exist.
    IndexMismatch {
        /// Pool.
        pool: IpNetwork,
        /// Block CIDR of the slot.
        block: IpNetwork,
        /// Whether the index says claimed.
        indexed: bool,
    },
    /// A chunk is marked full in the pool index but is not (or the reverse).
    FullChunkMismatch(IpNetwork, u64),
    /// A stored record does not decode.
    Corrupt {
        /// The record, as the store names it.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Lists every broken invariant (empty when the store is consistent).
pub fn audit<S: Datastore + ?Sized>(store: &S) -> Result<Vec<Problem>, StoreError> {
    let mut out = Vec::new();
    // Corrupt records are problems to report, not reasons to stop: a configuration or pool
    // index that does not decode fails every request that reads it.
    let corrupt = std::cell::RefCell::new(Vec::new());
    let records = |range: Range| -> Result<Vec<Record>, StoreError> {
        let l = store.list_lenient(&range)?;
        for e in l.corrupt {
            if let StoreError::Corrupt { key, reason } = e {
                corrupt.borrow_mut().push(Problem::Corrupt { key, reason });
            }
        }
        Ok(l.records.into_iter().map(|v| v.value).collect())
    };
    let single = |key: crate::datastore::Key| -> Result<Option<Record>, StoreError> {
        match store.get(&key) {
            Ok(v) => Ok(v.map(|v| v.value)),
            Err(StoreError::Corrupt { key, reason }) => {
                corrupt.borrow_mut().push(Problem::Corrupt { key, reason });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    };
    single(crate::datastore::Key::Config)?;
    let pools: Vec<_> = records(Range::Pools)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Pool(p) => Some(p),
            _ => None,
        })
        .collect();
    let blocks: Vec<_> = records(Range::Blocks)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Block(b) => Some(b),
            _ => None,
        })
        .collect();
    let handles: BTreeMap<String, _> = records(Range::Handles)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Handle(h) => Some((h.id.clone(), h)),
            _ => None,
        })
        .collect();
    let affs: Vec<crate::model::Affinity> = records(Range::Affinities)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Affinity(a) => Some(a),
            _ => None,
        })
        .collect();

    let mut counted: BTreeMap<(String, Cidr), u32> = BTreeMap::new();
    for w in blocks.windows(2) {
        if cidr::overlaps(&w[0].cidr, &w[1].cidr) {
            out.push(Problem::OverlappingBlocks(w[0].cidr, w[1].cidr));
        }
    }
    let mut claimed: BTreeSet<Cidr> = BTreeSet::new();
    for b in &blocks {
        if let Err(e) = b.validate() {
            out.push(Problem::BlockInvalid(b.cidr, e.to_string()));
        }
        match pools.iter().find(|p| cidr::contains_net(&p.cidr, &b.cidr)) {
            None => out.push(Problem::BlockOutsidePools(b.cidr)),
            Some(p) if p.block_size != b.cidr.prefix() => {
                out.push(Problem::BlockMisaligned(b.cidr))
            }
            Some(_) => {
                claimed.insert(Cidr(b.cidr));
            }
        }
        for (o, a, _) in b.used() {
            if !handles.contains_key(a.handle_id()) {
                out.push(Problem::AddressWithoutHandle(
                    b.ip(o),
                    a.handle_id().to_string(),
                ));
            }
            *counted
                .entry((a.handle_id().to_string(), Cidr(b.cidr)))
                .or_insert(0) += 1;
        }
        if let Some(n) = &b.affinity {
            let ok = affs
                .iter()
                .any(|a| *a.node == **n && a.cidr == b.cidr && a.state == AffinityState::Confirmed);
            if !ok {
                out.push(Problem::BlockWithoutAffinity(b.cidr, n.to_string()));
            }
        }
    }
    for (id, h) in &handles {
        if h.is_empty() {
            out.push(Problem::EmptyHandle(id.clone()));
        }
        for (c, &n) in &h.blocks {
            let actual = counted.get(&(id.clone(), *c)).copied().unwrap_or(0);
            if actual != n {
                out.push(Problem::HandleCountMismatch {
                    handle: id.clone(),
                    block: c.0,
                    recorded: n,
                    actual,
                });
            }
        }
    }
    for ((id, c), &n) in &counted {
        if handles.get(id).is_some_and(|h| !h.blocks.contains_key(c)) {
            out.push(Problem::HandleCountMismatch {
                handle: id.clone(),
                block: c.0,
                recorded: 0,
                actual: n,
            });
        }
    }
    for a in &affs {
        if a.state != AffinityState::Confirmed {
            out.push(Problem::UnconfirmedAffinity(
                a.node.clone(),
                a.cidr,
                a.state,
            ));
            continue;
        }
        let ok = blocks
            .iter()
            .any(|b| b.cidr == a.cidr && b.affinity.as_deref() == Some(a.node.as_str()));
        if !ok {
            out.push(Problem::AffinityWithoutBlock(a.node.clone(), a.cidr));
        }
    }
    records(Range::Nodes)?;
    for p in &pools {
        let full = match single(crate::datastore::Key::PoolIndex(p.cidr))? {
            Some(Record::PoolIndex(i)) => i.full_chunks,
            _ => Default::default(),
        };
        let mut indexed: BTreeSet<Cidr> = BTreeSet::new();
        for rec in records(Range::IndexChunksOf(p.cidr))? {
            let Record::IndexChunk(ch) = rec else {
                continue;
            };
            for i in ch.claimed.ones() {
                indexed.insert(Cidr(
                    p.block_at(crate::model::index::join_slot(ch.chunk, i)),
                ));
            }
            if ch.claimed.is_full() != full.contains(&ch.chunk) {
                out.push(Problem::FullChunkMismatch(p.cidr, ch.chunk));
            }
        }
        let in_pool: BTreeSet<Cidr> = claimed
            .iter()
            .filter(|c| cidr::contains_net(&p.cidr, &c.0))
            .copied()
            .collect();
        for c in in_pool.symmetric_difference(&indexed) {
            out.push(Problem::IndexMismatch {
                pool: p.cidr,
                block: c.0,
                indexed: indexed.contains(c),
            });
        }
    }
    out.extend(corrupt.into_inner());
    Ok(out)
}
