//! Group commit of concurrent releases of what handles hold (a CNI DEL's release).
//!
//! [`Ipam::release_held`] reads its handles, and when they name one block, releases there
//! under the block's lane (the lane of the node whose last block it is, else the block's own;
//! see [`Ipam::hold_block_lane`]). A release that finds the lane held by another caller does not
//! wait for its turn: it queues there, and the next caller to get the lane takes every release
//! queued for the block and serves them together: **one** read of the block (none when the lane
//! keeps it) and **one** commit of the block and of each request's handles, each handle under
//! the revision its own caller read. A burst of DELs on a node so costs one block write instead
//! of one each, and one round trip to the store for the whole burst once the first is in flight.
//! A release by handle ([`Ipam::release_by_handle`]) that finds the lane held joins the queue
//! the same way, as a release of everything its handle holds in the block.
//!
//! Batching changes how many writes a burst costs, never which conditions guard them: a
//! request naming a handle that an earlier request of the batch names, and every request of a
//! batch whose commit lost a race, is answered "the long way", which its own caller then takes
//! (allocations read again, released guarded by handle and sequence number), as does every
//! request of a batch the store refused whole (too many writes for one commit). A kept block is
//! used only when it shows an address of every request's handles (a stale copy could otherwise
//! make a release free nothing without a commit to catch it). Nothing is answered before its
//! commit returned; answers are left before the lane is given back, so a woken waiter finds its
//! own first.

use super::batch::{sleep_queued, Held, Lane, Slot, Ticket};
use super::{Allocation, Ipam};
use crate::datastore::{Datastore, Key, Record, StoreError, StoreExt, Versioned, Write};
use crate::error::ReleaseError;
use crate::model::{Block, Handle};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

/// Which of a handle's allocations a release takes (a CNI DEL's: its attachment's).
pub(super) type Select = Arc<dyn Fn(&Allocation) -> bool + Send + Sync>;

/// Releases queued for one block that one caller serves together, at most (a block of 64
/// addresses holds at most 64 handles; a store's transaction is bounded too).
pub const RELEASES_PER_COMMIT: usize = 64;

/// One caller's release from one block, with what it read.
pub(super) struct HeldRelease {
    /// The handles asked for.
    pub ids: Vec<String>,
    /// Those of them that exist, as read; they name this block and no other.
    pub handles: Vec<(String, Versioned<Handle>)>,
    pub select: Select,
    /// The release cooldown, from the configuration read with the handles.
    pub cooldown: u64,
}

/// The addresses released, or `None`: take the long way.
pub(super) type Answer = Result<Option<Vec<IpAddr>>, ReleaseError>;

/// A release waiting in a lane, and the place its answer is left for it.
pub(super) struct QueuedRelease {
    block: IpNetwork,
    req: HeldRelease,
    answer: Ticket<Answer>,
}

impl QueuedRelease {
    /// Its caller's place.
    pub(super) fn slot(&self) -> Arc<Slot<Answer>> {
        Arc::clone(self.answer.slot())
    }
}

impl<S: Datastore> Ipam<S> {
    /// Releases what `req` asks in `block`: alone when its lane is free and no other release
    /// for the block waits, else queued and served with the others by whichever caller leads.
    pub(super) fn release_in_lane(&self, block: IpNetwork, req: HeldRelease) -> Answer {
        let lane = self.release_lane(block);
        let mut st = lane.lock();
        if !st.busy && !st.releases.iter().any(|q| q.block == block) {
            let mut held = lane.take(st);
            let mut answers = self.release_together(block, vec![req], &mut held);
            return answers.pop().unwrap_or(Ok(None));
        }
        let place = Slot::new();
        st.releases.push(QueuedRelease {
            block,
            req,
            answer: Ticket::new(&place),
        });
        loop {
            if let Some(done) = place.take() {
                return done; // served by the caller that led
            }
            if !st.busy {
                // Ours, and others for the block up to a commit's worth.
                let mut others = 0;
                let (mine, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.releases).into_iter().partition(|q| {
                        if Arc::ptr_eq(q.answer.slot(), &place) {
                            return true;
                        }
                        let take = q.block == block && others + 1 < RELEASES_PER_COMMIT;
                        others += usize::from(take);
                        take
                    });
                st.releases = rest;
                let mut held = lane.take(st);
                let (reqs, places): (Vec<_>, Vec<_>) =
                    mine.into_iter().map(|q| (q.req, q.answer)).unzip();
                let answers = self.release_together(block, reqs, &mut held);
                for (ticket, answer) in places.iter().zip(answers) {
                    ticket.answer(answer);
                }
                // Each caller is woken as its ticket goes; the lane is given back after.
                drop(places);
                drop(held);
                // Ours was in the batch, so answered; the long way is only a safe default.
                return place.take().unwrap_or(Ok(None));
            }
            st = sleep_queued(&lane, st, &place, |st| {
                st.releases
                    .iter()
                    .any(|q| Arc::ptr_eq(q.answer.slot(), &place))
            });
        }
    }

    /// `block`'s lane, held, when no other caller holds it or waits to; else the release of
    /// everything `handle` holds in the block, queued there and served with the others: its
    /// answer (a release by handle so joins a burst of DELs instead of waiting behind it).
    pub(super) fn hold_or_queue(
        &self,
        block: IpNetwork,
        handle: &Versioned<Handle>,
        cooldown: u64,
    ) -> Result<Held, Answer> {
        let lane = self.release_lane(block);
        let st = lane.lock();
        if !st.busy && !st.releases.iter().any(|q| q.block == block) {
            let carry = Lane::mark_taken(st);
            return Ok(Held::new(lane, carry));
        }
        drop(st);
        let id = handle.value.id().to_string();
        let req = HeldRelease {
            ids: vec![id.clone()],
            handles: vec![(id, handle.clone())],
            select: everything(),
            cooldown,
        };
        Err(self.release_in_lane(block, req))
    }

    /// Releases waiting in this engine's lanes (of nodes and of blocks) behind the callers
    /// that hold them.
    pub fn queued_releases(&self) -> usize {
        let lanes: Vec<Arc<Lane>> = {
            let nodes = self
                .node_lanes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let blocks = self
                .block_lanes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            nodes.values().chain(blocks.values()).cloned().collect()
        };
        lanes.iter().map(|l| l.lock().releases.len()).sum()
    }

    /// Releases this engine served together with others in one commit, since it was made.
    pub fn batched_releases(&self) -> u64 {
        self.batched_releases.load(Ordering::Relaxed)
    }

    /// Serves `reqs`, all in `block`, with one read of the block (none from the lane's kept
    /// copy) and one commit; one answer per request, in order.
    fn release_together(
        &self,
        block: IpNetwork,
        reqs: Vec<HeldRelease>,
        held: &mut Held,
    ) -> Vec<Answer> {
        let everyone = |a: &dyn Fn() -> Answer| reqs.iter().map(|_| a()).collect::<Vec<_>>();
        // A handle named by an earlier request: two writes of one handle would need merging.
        let mut named: Vec<&str> = Vec::new();
        let fits: Vec<bool> = reqs
            .iter()
            .map(|r| {
                let repeated = r.ids.iter().any(|id| named.contains(&id.as_str()));
                named.extend(r.ids.iter().map(String::as_str));
                !repeated
            })
            .collect();
        let shows_all = |b: &Block| {
            reqs.iter()
                .zip(&fits)
                .filter(|(_, fit)| **fit)
                .all(|(r, _)| r.ids.iter().any(|id| !b.ordinals_of(id).is_empty()))
        };
        // The lane's kept context, out of the hold while its block changes and given back
        // only as committed; else the block as read.
        let mut kept = held
            .take_carry_of(block)
            .filter(|kc| shows_all(&kc.block.value));
        let mut read_copy = None;
        if kept.is_none() {
            match self.store.get_block(&Key::Block(block)) {
                Ok(Some(vb)) => read_copy = Some(vb),
                Ok(None) => return everyone(&|| Ok(None)),
                Err(e) => return everyone(&|| Err(e.clone().into())),
            }
        }
        let Some(vb) = kept.as_mut().map(|kc| &mut kc.block).or(read_copy.as_mut()) else {
            return everyone(&|| Ok(None));
        };
        let read = vb.revision;
        let b = &mut vb.value;
        let now = self.now();
        b.expire_cooling(now);
        // Per request: the (ordinal, address, index of its handle in the request's ids) it
        // takes, or `None` when it does not fit.
        let chosen: Vec<Option<Vec<(u32, IpAddr, usize)>>> = reqs
            .iter()
            .zip(&fits)
            .map(|(r, fit)| fit.then(|| choose(b, r)))
            .collect();
        let answers = |chosen: Vec<Option<Vec<(u32, IpAddr, usize)>>>| -> Vec<Answer> {
            chosen
                .into_iter()
                .map(|c| Ok(c.map(|c| c.into_iter().map(|(_, ip, _)| ip).collect())))
                .collect()
        };
        if chosen.iter().flatten().all(Vec::is_empty) {
            if let Some(kc) = kept {
                held.put_back(kc);
            }
            return answers(chosen);
        }
        for (r, c) in reqs.iter().zip(&chosen) {
            for (o, _, _) in c.iter().flatten() {
                b.release(*o, now, r.cooldown);
            }
        }
        let mut keep_read = None;
        let mut writes = if let Some(kc) = kept.as_mut() {
            // A kept block is the node's: never deleted here, and kept as committed.
            kc.block.value.touch();
            let mut w = kc.spare.writes();
            w.push(Write::Update {
                record: Record::Block(kc.copy_block()),
                expected: read,
            });
            w
        } else {
            let Some(vb) = read_copy.take() else {
                return everyone(&|| Ok(None));
            };
            match self.block_write_after_release(None, read, vb.value) {
                Ok(w) => {
                    // Read, changed and still there: the lane keeps it for the next release.
                    if let Some(Write::Update {
                        record: Record::Block(b),
                        ..
                    }) = w.first()
                    {
                        keep_read = Some(b.clone());
                    }
                    w
                }
                Err(e) => return everyone(&|| Err(e.clone().into())),
            }
        };
        for (r, c) in reqs.iter().zip(&chosen) {
            let mut per_handle: BTreeMap<&str, u32> = BTreeMap::new();
            for &(_, _, h) in c.iter().flatten() {
                *per_handle.entry(r.ids[h].as_str()).or_insert(0) += 1;
            }
            for (id, vh) in &r.handles {
                if let Some(&n) = per_handle.get(id.as_str()) {
                    match self.handle_remove(id, block, n, Some(Some(vh.clone()))) {
                        Ok(w) => writes.extend(w),
                        Err(e) => return everyone(&|| Err(e.clone())),
                    }
                }
            }
        }
        let committed = match kept.as_mut() {
            Some(kc) => self.commit_in_lane_reusing(writes, &mut kc.spare),
            None => self.commit_in_lane(writes),
        };
        match committed {
            Ok(revision) => {
                if let Some(mut kc) = kept {
                    kc.block.revision = revision;
                    held.put_back(kc);
                } else if let Some(b) = keep_read {
                    held.keep_released(Versioned { value: b, revision });
                }
                let together = chosen.iter().flatten().filter(|c| !c.is_empty()).count();
                if together > 1 {
                    self.batched_releases
                        .fetch_add(together as u64, Ordering::Relaxed);
                }
                answers(chosen)
            }
            Err(StoreError::Conflict { .. }) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                everyone(&|| Ok(None))
            }
            // A store that cannot take the whole batch in one commit (etcd bounds a
            // transaction's operations) may take each request's own: nothing was written.
            Err(StoreError::Rejected(_)) if reqs.len() > 1 => everyone(&|| Ok(None)),
            Err(e) => everyone(&|| Err(e.clone().into())),
        }
    }
}

/// The choice of every allocation (a release by handle's), shared.
fn everything() -> Select {
    static ALL: std::sync::OnceLock<Select> = std::sync::OnceLock::new();
    Arc::clone(ALL.get_or_init(|| Arc::new(|_| true)))
}

/// What `r` takes in `b`: its handles' allocations that its selection picks, each with the
/// index of its handle in `r.ids`.
fn choose(b: &Block, r: &HeldRelease) -> Vec<(u32, IpAddr, usize)> {
    b.used()
        .filter_map(|(o, a, seq)| {
            let h = r.ids.iter().position(|id| *id == a.handle_id())?;
            Some((o, a, seq, h))
        })
        .filter(|&(o, a, seq, _)| {
            (r.select)(&Allocation {
                ip: b.ip(o),
                block: b.cidr,
                block_affinity: b.affinity.as_deref().map(str::to_string),
                handle_id: a.handle_id().to_string(),
                attrs: a.clone(),
                seq,
            })
        })
        .map(|(o, _, _, h)| (o, b.ip(o), h))
        .collect()
}
