//! Releasing addresses: by address (guarded by handle and sequence number) and by handle.

use super::held::{HeldRelease, Select};
use super::{Allocation, Ipam};
use crate::cidr::{self, Family};
use crate::datastore::{
    all, one, Datastore, Key, Range, Read, Record, Revision, StoreError, StoreExt, Versioned, Write,
};
use crate::error::{Contention, ReleaseError};
use crate::model::{Block, Handle, IpamConfig, Pool};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The reads a release by address starts with, unless every request names its block: pools
/// (to find an address's block) and the configuration (the cooldown).
const POOLS_AND_CONFIG: [Read; 2] = [Read::List(Range::Pools), Read::Get(Key::Config)];

/// One address to release, optionally guarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// The address.
    pub ip: IpAddr,
    /// If set, release only when held by this handle.
    pub handle_id: Option<String>,
    /// If set, release only when allocated at this sequence number.
    pub seq: Option<u64>,
    /// The block the address was read in, when known (an [`Allocation`]'s): the release then
    /// need not read the pools to find it. Not a guard: a block that does not hold the
    /// address is ignored and the address's block found as without it.
    pub block: Option<IpNetwork>,
}

impl ReleaseRequest {
    /// A release guarded by handle and sequence number: it frees the address only if it is
    /// still the allocation that was read.
    pub fn guarded(ip: IpAddr, handle_id: &str, seq: u64) -> Self {
        ReleaseRequest {
            ip,
            handle_id: Some(handle_id.to_string()),
            seq: Some(seq),
            block: None,
        }
    }

    /// The release of `a` as it was read: guarded by its handle and sequence number, in its
    /// block.
    pub fn of(a: &Allocation) -> Self {
        ReleaseRequest {
            block: Some(a.block),
            ..ReleaseRequest::guarded(a.ip, &a.handle_id, a.seq)
        }
    }

    /// An unguarded release.
    pub fn ip(ip: IpAddr) -> Self {
        ReleaseRequest {
            ip,
            handle_id: None,
            seq: None,
            block: None,
        }
    }
}

/// What a release did, address by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// Released.
    pub released: Vec<IpAddr>,
    /// Not held by anyone (nothing to do).
    pub not_allocated: Vec<IpAddr>,
    /// Held, but the guard did not match: left alone.
    pub refused: Vec<(IpAddr, ReleaseError)>,
}

impl<S: Datastore> Ipam<S> {
    /// Releases addresses. Each is checked against its guard; one commit per block updates the
    /// block and the handles together. Empty blocks with no affinity are deleted. Each block's
    /// release takes turns with its node's assignments through this engine (it holds the
    /// node's lane, as [`Ipam::release_by_handle`] does).
    pub fn release_ips(&self, reqs: &[ReleaseRequest]) -> Result<ReleaseOutcome, ReleaseError> {
        self.release_ips_taking_turns(reqs, true)
    }

    /// [`Ipam::release_ips`]; without `take_turns` no lane is held, for callers that hold their
    /// node's lane already (an assignment's undo: a lane is not re-entrant).
    pub(super) fn release_ips_taking_turns(
        &self,
        reqs: &[ReleaseRequest],
        take_turns: bool,
    ) -> Result<ReleaseOutcome, ReleaseError> {
        // Requests that name their blocks (a DEL's, from what it read) skip the pools: the
        // configuration is read with each block instead, and the pools only if an emptied
        // block is to be deleted. One round trip fewer on etcd.
        let block_of = |r: &ReleaseRequest| r.block.filter(|b| b.contains(r.ip));
        let (pools, cooldown) = if reqs.iter().all(|r| block_of(r).is_some()) {
            (None, None)
        } else {
            let (p, c) =
                Self::pools_and_cooldown(&mut self.store.read(&POOLS_AND_CONFIG)?.into_iter())?;
            (Some(p), Some(c))
        };
        let mut out = ReleaseOutcome::default();
        let mut by_block: BTreeMap<crate::cidr::Cidr, Vec<&ReleaseRequest>> = BTreeMap::new();
        for r in reqs {
            let found = match block_of(r) {
                Some(b) => Some(b),
                None => self.find_block_of(pools.as_deref().unwrap_or_default(), r.ip)?,
            };
            match found {
                Some(c) => by_block.entry(crate::cidr::Cidr(c)).or_default().push(r),
                None => out.not_allocated.push(r.ip),
            }
        }
        for (c, reqs) in by_block {
            // The block and the handles the guards name, in one read: usually every handle
            // the commit will change.
            let mut named: Vec<&str> = reqs.iter().filter_map(|r| r.handle_id.as_deref()).collect();
            named.sort_unstable();
            named.dedup();
            let mut reads = Vec::with_capacity(1 + named.len());
            reads.push(Read::Get(Key::Block(c.0)));
            reads.extend(
                named
                    .iter()
                    .map(|h| Read::Get(Key::Handle((*h).to_string()))),
            );
            if cooldown.is_none() {
                reads.push(Read::Get(Key::Config));
            }
            let mut hold = if take_turns {
                self.hold_block_lane(c.0)
            } else {
                None
            };
            let part = self.retrying::<_, ReleaseError>("release", || {
                let mut part = ReleaseOutcome::default();
                let mut answers = self.store.read(&reads)?.into_iter();
                let vb = one::<Block>(answers.next().unwrap_or_default())?;
                let mut known: BTreeMap<&str, Option<Versioned<Handle>>> = BTreeMap::new();
                for h in &named {
                    known.insert(h, one::<Handle>(answers.next().unwrap_or_default())?);
                }
                let cooldown = match cooldown {
                    Some(c) => c,
                    None => one::<IpamConfig>(answers.next().unwrap_or_default())?
                        .map(|v| v.value)
                        .unwrap_or_default()
                        .cooldown_ns(),
                };
                let Some(Versioned {
                    value: mut block,
                    revision: read,
                }) = vb
                else {
                    part.not_allocated = reqs.iter().map(|r| r.ip).collect();
                    return Ok(part);
                };
                let now = self.now();
                block.expire_cooling(now);
                let mut per_handle: BTreeMap<String, u32> = BTreeMap::new();
                for r in &reqs {
                    let Some(ord) = block.ordinal(r.ip) else {
                        part.not_allocated.push(r.ip);
                        continue;
                    };
                    let Some((holder, seq)) = block.holder(ord) else {
                        part.not_allocated.push(r.ip);
                        continue;
                    };
                    if let Some(h) = &r.handle_id {
                        if *h != holder.handle_id() {
                            part.refused.push((
                                r.ip,
                                ReleaseError::WrongHandle {
                                    ip: r.ip,
                                    expected: h.clone(),
                                    actual: holder.handle_id().to_string(),
                                },
                            ));
                            continue;
                        }
                    }
                    if let Some(s) = r.seq {
                        if s != seq {
                            part.refused.push((
                                r.ip,
                                ReleaseError::StaleSequence {
                                    ip: r.ip,
                                    expected: s,
                                    actual: seq,
                                },
                            ));
                            continue;
                        }
                    }
                    if let Some(h) = block.release(ord, now, cooldown) {
                        *per_handle.entry(h.handle_id().to_string()).or_insert(0) += 1;
                        part.released.push(r.ip);
                    }
                }
                if part.released.is_empty() {
                    return Ok(part);
                }
                // The lane's kept copy of the block, if it is the one read, is kept as this
                // commit leaves it; otherwise it is stale and dropped.
                let kept = hold.as_mut().and_then(|h| h.take_carry_of(c.0));
                let mut writes = self.block_write_after_release(pools.as_deref(), read, block)?;
                let keep = kept
                    .filter(|k| k.block.revision == read)
                    .and_then(|mut k| match writes.first() {
                        Some(Write::Update {
                            record: Record::Block(b),
                            ..
                        }) => {
                            // Written over the kept copy (its allocations, its shared chunks).
                            k.block.value.clone_from(b);
                            Some(k)
                        }
                        _ => None,
                    });
                for (h, n) in per_handle {
                    let read = known.remove(h.as_str());
                    writes.extend(self.handle_remove(&h, c.0, n, read)?);
                }
                let revision = if hold.is_some() {
                    self.commit_in_lane(writes)?
                } else {
                    self.commit(writes)?
                };
                if let (Some(mut k), Some(h)) = (keep, hold.as_mut()) {
                    k.block.revision = revision;
                    h.put_back(k);
                }
                Ok(part)
            })?;
            drop(hold);
            out.released.extend(part.released);
            out.not_allocated.extend(part.not_allocated);
            out.refused.extend(part.refused);
        }
        // A named block that is not there (the name was not the address's block): those
        // addresses are looked for again the usual way, so a name never makes an address
        // look free.
        let unfound: Vec<ReleaseRequest> = reqs
            .iter()
            .filter(|r| block_of(r).is_some() && out.not_allocated.contains(&r.ip))
            .map(|r| ReleaseRequest {
                block: None,
                ..r.clone()
            })
            .collect();
        if !unfound.is_empty() {
            out.not_allocated
                .retain(|ip| !unfound.iter().any(|r| r.ip == *ip));
            let again = self.release_ips_taking_turns(&unfound, take_turns)?;
            out.released.extend(again.released);
            out.not_allocated.extend(again.not_allocated);
            out.refused.extend(again.refused);
        }
        Ok(out)
    }

    /// Releases the addresses that the handles `ids` hold and `select` picks (a CNI DEL's:
    /// its attachment's, under the attachment's handles and its pod's); returns them.
    ///
    /// One read of the handles (with the configuration, unless this engine read it less than
    /// [`crate::CARRY_AGE_NS`] ago), one of their block unless the node's lane keeps it, one
    /// commit: two or three round trips on etcd, where reading the
    /// allocations and then releasing them guarded takes four. Concurrent releases in one
    /// block share the block's read and commit (group commit, see `held.rs`). The commit is
    /// made under the revisions read, so it is exactly as safe as the guarded release; a lost
    /// race, or addresses in more than one block, fall back to that (read again, release
    /// guarded).
    pub fn release_held(
        &self,
        ids: &[&str],
        select: impl Fn(&Allocation) -> bool + Send + Sync + 'static,
    ) -> Result<Vec<IpAddr>, ReleaseError> {
        let select: Select = Arc::new(select);
        // The configuration only when the cooldown this engine kept is too old (see
        // `cooldown` in mod.rs): then with the handles, in one read.
        let read_at = self.now();
        let writes_seen = self.writes_seen.load(std::sync::atomic::Ordering::SeqCst);
        let kept = self.kept_cooldown(read_at);
        let mut reads = Vec::with_capacity(1 + ids.len());
        if kept.is_none() {
            reads.push(Read::Get(Key::Config));
        }
        reads.extend(
            ids.iter()
                .map(|id| Read::Get(Key::Handle((*id).to_string()))),
        );
        let mut answers = self.store.read(&reads)?.into_iter();
        let cooldown = match kept {
            Some(ns) => ns,
            None => {
                let ns = one::<IpamConfig>(answers.next().unwrap_or_default())?
                    .map(|v| v.value)
                    .unwrap_or_default()
                    .cooldown_ns();
                self.keep_cooldown(ns, read_at, writes_seen);
                ns
            }
        };
        let mut handles: Vec<(String, Versioned<Handle>)> = Vec::with_capacity(ids.len());
        let mut cidrs: Vec<IpNetwork> = Vec::new();
        for id in ids {
            if let Some(h) = one::<Handle>(answers.next().unwrap_or_default())? {
                for c in h.value.blocks.keys() {
                    if !cidrs.contains(&c.0) {
                        cidrs.push(c.0);
                    }
                }
                handles.push(((*id).to_string(), h));
            }
        }
        let [c] = cidrs[..] else {
            return if cidrs.is_empty() {
                Ok(Vec::new())
            } else {
                self.release_held_guarded(ids, &*select)
            };
        };
        let req = HeldRelease {
            ids: ids.iter().map(|id| (*id).to_string()).collect(),
            handles,
            select: Arc::clone(&select),
            cooldown,
        };
        match self.release_in_lane(c, req)? {
            Some(released) => Ok(released),
            None => self.release_held_guarded(ids, &*select),
        }
    }

    /// [`Ipam::release_held`] the long way: the allocations read, then released guarded by
    /// handle and sequence number (retried on lost races).
    fn release_held_guarded(
        &self,
        ids: &[&str],
        select: &dyn Fn(&Allocation) -> bool,
    ) -> Result<Vec<IpAddr>, ReleaseError> {
        let reqs: Vec<ReleaseRequest> = self
            .allocations_of_handles(ids)?
            .iter()
            .filter(|a| select(a))
            .map(ReleaseRequest::of)
            .collect();
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.release_ips(&reqs)?.released)
    }

    /// Releases one address; errors when it is not held or the guard does not match.
    pub fn release_ip(&self, req: &ReleaseRequest) -> Result<(), ReleaseError> {
        let mut o = self.release_ips(std::slice::from_ref(req))?;
        if let Some((_, e)) = o.refused.pop() {
            return Err(e);
        }
        if !o.not_allocated.is_empty() {
            return Err(ReleaseError::NotAllocated(req.ip));
        }
        Ok(())
    }

    /// Releases every address held by `handle_id`; returns how many. Releasing an unknown
    /// handle releases nothing and succeeds (idempotent, as CNI DEL needs). The release
    /// cooldown is the configuration's as read at most [`crate::CARRY_AGE_NS`] before (a
    /// change made through this engine is seen at once), as an assignment's pools are.
    ///
    /// ```
    /// use ipam_core::{AutoAssignArgs, Ipam, ManualClock, Pool};
    /// use std::sync::Arc;
    ///
    /// let ipam = Ipam::new(ipam_store::MemoryStore::new(), Arc::new(ManualClock::new(0)));
    /// ipam.create_pool(Pool::new("default", "10.244.0.0/16".parse()?)?)?;
    /// let args = AutoAssignArgs::v4("node-a", "net.pod", 2);
    /// ipam.auto_assign(&args)?;
    /// assert_eq!(ipam.release_by_handle("net.pod")?, 2);
    /// // Again: nothing left, and still a success.
    /// assert_eq!(ipam.release_by_handle("net.pod")?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_by_handle(&self, handle_id: &str) -> Result<usize, ReleaseError> {
        // The handle alone when this engine read the configuration (the cooldown) less than
        // 100 ms ago and wrote nothing since (see `cooldown` in mod.rs); else both in one
        // read (one round trip on etcd). Pools only if a block must be deleted. The handle's
        // key is built once: it goes into the deleting write, and is built again only for a
        // retry after that.
        let fresh_key = || Key::Handle(handle_id.to_string());
        let mut key = Some(fresh_key());
        let read_at = self.now();
        let (cooldown, mut known) = match self.kept_cooldown(read_at) {
            Some(ns) => (ns, None),
            None => {
                let writes_seen = self.writes_seen.load(std::sync::atomic::Ordering::SeqCst);
                let reads = [Read::Get(Key::Config), Read::Get(fresh_key())];
                let mut answers = self.store.read(&reads)?.into_iter();
                let ns = one::<IpamConfig>(answers.next().unwrap_or_default())?
                    .map(|v| v.value)
                    .unwrap_or_default()
                    .cooldown_ns();
                self.keep_cooldown(ns, read_at, writes_seen);
                (ns, Some(one::<Handle>(answers.next().unwrap_or_default())?))
            }
        };
        let handle_key = |key: &mut Option<Key>| key.take().unwrap_or_else(fresh_key);
        let mut released = 0usize;
        let mut attempts = 0u32;
        // Set once a queued release left something for this caller to do on its own.
        let mut alone = false;
        loop {
            let current = match known.take() {
                Some(h) => h,
                None => self.store.get_handle(key.get_or_insert_with(fresh_key))?,
            };
            let Some(vh) = current else {
                return Ok(released);
            };
            let Some((&c, _)) = vh.value.blocks.iter().next() else {
                // An empty handle should not exist; remove it.
                let r = self.commit(vec![Write::Delete {
                    key: handle_key(&mut key),
                    expected: vh.revision,
                }]);
                match r {
                    Ok(_) => return Ok(released),
                    Err(crate::datastore::StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                attempts += 1;
                self.lost_race(attempts)?;
                continue;
            };
            // Held, the node's lane keeps this release from racing the node's assignments,
            // and its kept block saves a read (a round trip on etcd): the block is written
            // under the kept revision, so a stale copy is a lost race, never a wrong write. A
            // copy that shows none of the handle's addresses is stale (the handle says it
            // holds some here): dropped, and the store read rather than a race lost. A lane
            // another caller holds: the release queues there and is served with the others
            // (see `held.rs`); what that does not settle is done here, alone, after a read.
            let mut hold = if alone {
                self.hold_block_lane(c.0)
            } else {
                match self.hold_or_queue(c.0, &vh, cooldown) {
                    Ok(held) => Some(held),
                    Err(answer) => {
                        match answer? {
                            Some(ips) if !ips.is_empty() => {
                                released += ips.len();
                                if vh.value.blocks.len() == 1 {
                                    return Ok(released); // the handle went with that commit
                                }
                            }
                            _ => alone = true,
                        }
                        continue;
                    }
                }
            };
            let Versioned {
                value: mut handle,
                revision: handle_read,
            } = vh;
            handle.blocks.remove(&c);
            let mut writes = Vec::new();
            let mut n = 0;
            // Read again once the lane is held: a release's cooldown starts when it is made.
            let now = self.now();
            // A kept block that shows the handle's addresses is released from the lane's copy,
            // taken out of the hold while it changes and given back only as committed (a kept
            // block is the node's: never deleted here). One that shows none is stale: dropped,
            // and the store read.
            let mut from_kept = None;
            if let Some(mut kc) = hold.as_mut().and_then(|h| h.take_carry_of(c.0)) {
                let ords = kc.block.value.ordinals_of(handle_id);
                if !ords.is_empty() {
                    let b = &mut kc.block.value;
                    b.expire_cooling(now);
                    for o in ords {
                        b.release(o, now, cooldown);
                        n += 1;
                    }
                    b.touch();
                    writes = kc.spare.writes();
                    writes.push(Write::Update {
                        record: Record::Block(kc.copy_block()),
                        expected: kc.block.revision,
                    });
                    from_kept = Some(kc);
                }
            }
            if from_kept.is_none() {
                writes.reserve(4);
                if let Some(vb) = self.store.get_block(&Key::Block(c.0))? {
                    let mut block = vb.value;
                    block.expire_cooling(now);
                    for o in block.ordinals_of(handle_id) {
                        block.release(o, now, cooldown);
                        n += 1;
                    }
                    if n > 0 {
                        writes.extend(self.block_write_after_release(None, vb.revision, block)?);
                    }
                }
            }
            let deleted = handle.is_empty();
            writes.push(if deleted {
                Write::Delete {
                    key: handle_key(&mut key),
                    expected: handle_read,
                }
            } else {
                Write::Update {
                    record: Record::Handle(handle),
                    expected: handle_read,
                }
            });
            let committed = match (&hold, &mut from_kept) {
                (Some(_), Some(kc)) => self.commit_in_lane_reusing(writes, &mut kc.spare),
                (Some(_), None) => self.commit_in_lane(writes),
                (None, _) => self.commit(writes),
            };
            if let (Some(mut kc), Some(h), Ok(revision)) = (from_kept, &mut hold, &committed) {
                kc.block.revision = *revision;
                h.put_back(kc);
            }
            drop(hold);
            match committed {
                // The handle's last block: the commit deleted it, so nothing is left to read.
                Ok(_) if deleted => return Ok(released + n),
                Ok(_) => released += n,
                Err(crate::datastore::StoreError::Conflict { .. }) => {
                    attempts += 1;
                    self.lost_race(attempts)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Counts a lost compare-and-swap of a release by handle (as every retried commit is
    /// counted); fails once the attempts are spent.
    fn lost_race(&self, attempts: u32) -> Result<(), ReleaseError> {
        self.conflicts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if attempts >= self.opts.max_retries {
            Err(Contention {
                operation: "release by handle",
                attempts,
            }
            .into())
        } else {
            Ok(())
        }
    }

    /// The block write after addresses left it: delete it (and free its index slot) when it
    /// is unused and affine to no one, update it otherwise.
    /// `pools` are read here when not given (only a deletion needs them).
    pub(super) fn block_write_after_release(
        &self,
        pools: Option<&[Pool]>,
        read: Revision,
        mut block: Block,
    ) -> Result<Vec<Write>, StoreError> {
        if block.is_unused() && block.affinity.is_none() {
            let mut w = vec![Write::Delete {
                key: Key::Block(block.cidr),
                expected: read,
            }];
            let index = match pools {
                Some(p) => self.index_writes(p, &block.cidr, false)?,
                None => self.index_writes(&self.pools()?, &block.cidr, false)?,
            };
            w.extend(index);
            return Ok(w);
        }
        block.touch();
        Ok(vec![Write::Update {
            record: Record::Block(block),
            expected: read,
        }])
    }

    /// Writes that take `n` addresses in `block` off a handle (deleting it at zero). Nothing
    /// if the handle is missing (an inconsistency `audit` reports).
    pub(super) fn handle_remove(
        &self,
        id: &str,
        block: IpNetwork,
        n: u32,
        known: Option<Option<Versioned<Handle>>>,
    ) -> Result<Vec<Write>, ReleaseError> {
        let current = match known {
            Some(h) => h,
            None => self.store.get_handle(&Key::Handle(id.to_string()))?,
        };
        let Some(vh) = current else {
            return Ok(Vec::new());
        };
        let mut h = vh.value;
        h.remove(block, n);
        Ok(vec![if h.is_empty() {
            Write::Delete {
                key: Key::Handle(id.to_string()),
                expected: vh.revision,
            }
        } else {
            Write::Update {
                record: Record::Handle(h),
                expected: vh.revision,
            }
        }])
    }

    /// Pools and the release cooldown, from the first two answers of a batched read that began
    /// with [`POOLS_AND_CONFIG`].
    fn pools_and_cooldown(
        answers: &mut impl Iterator<Item = Vec<Versioned<Record>>>,
    ) -> Result<(Vec<Pool>, u64), StoreError> {
        let pools = all::<Pool>(answers.next().unwrap_or_default())?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let cooldown = one::<IpamConfig>(answers.next().unwrap_or_default())?
            .map(|v| v.value)
            .unwrap_or_default()
            .cooldown_ns();
        Ok((pools, cooldown))
    }

    /// The block that holds `ip`: from its pool's block size, or, for an address outside every
    /// pool (its pool was deleted), by trying each valid block size.
    pub(super) fn find_block_of(
        &self,
        pools: &[Pool],
        ip: IpAddr,
    ) -> Result<Option<IpNetwork>, StoreError> {
        if let Some(c) = pools.iter().find_map(|p| p.block_for(ip)) {
            return Ok(Some(c));
        }
        let sizes = match Family::of(ip) {
            Family::V4 => 20..=32,
            Family::V6 => 116..=128,
        };
        for prefix in sizes {
            if let Some(c) = cidr::block_containing(ip, prefix) {
                if self.store.get(&Key::Block(c))?.is_some() {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }
}
