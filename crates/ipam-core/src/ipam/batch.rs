//! Group commit of one node's concurrent auto-assignments.
//!
//! An engine serialises a node's assignments (they would all write the node's current block,
//! so racing them only loses compare-and-swaps). While one runs, the others queue in the
//! node's [`Lane`]; the next to get the lane takes the whole queue and serves as many of it as
//! the node's last block holds with **one** batched read and **one** commit: the block and
//! every request's handle, under the same revision conditions a single request would write.
//! What the block cannot serve (a full block, a dual-stack request, a request for other pools,
//! a handle named twice), and everything after a lost compare-and-swap, goes through the
//! ordinary one-request path in queue order, so batching changes how many round trips a burst
//! costs, never which checks guard a write. Nothing is answered before its commit returned.
//!
//! An uncontended request never queues: it takes the lane and runs alone, without a copy of
//! its arguments.

use super::assign::{candidate_pools, holder};
use super::{AssignedIp, AutoAssignArgs, AutoAssignResult, FamilyAssignment, Ipam};
use crate::cidr::{self, Family};
use crate::datastore::{one, Datastore, Key, Range, Read, Record, StoreError, Write};
use crate::error::AssignError;
use crate::model::{Affinity, AffinityState, Block, Handle, Node, Pool};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

type Outcome = Result<AutoAssignResult, AssignError>;

/// One node's assignment lane: whether an assignment for the node is running, the requests
/// waiting for it, and the signal that either changed.
#[derive(Default)]
pub(super) struct Lane {
    state: Mutex<LaneState>,
    changed: Condvar,
}

#[derive(Default)]
struct LaneState {
    busy: bool,
    queue: Vec<Waiting>,
    /// Callers asleep on `changed`: the lane is signalled only when someone listens (a
    /// signal is a system call, and most lanes never have a waiter).
    sleepers: usize,
}

/// A queued request and the place its outcome is left for it.
struct Waiting {
    args: AutoAssignArgs,
    outcome: Arc<Mutex<Option<Outcome>>>,
}

impl Waiting {
    fn answer(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

fn taken(o: &Mutex<Option<Outcome>>) -> Option<Outcome> {
    o.lock().unwrap_or_else(PoisonError::into_inner).take()
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The lane held by one caller; freed (and the waiters woken) when dropped, even by a panic.
struct Held<'a>(&'a Lane);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.busy = false;
        let wake = st.sleepers > 0;
        drop(st);
        if wake {
            self.0.changed.notify_all();
        }
    }
}

impl<S: Datastore> Ipam<S> {
    /// Auto-assignments for `node` waiting behind the one this engine is running for it (the
    /// depth of the node's queue; they will be served together).
    pub fn queued_assignments(&self, node: &str) -> usize {
        let lanes = self
            .node_lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        lanes.get(node).map_or(0, |l| l.lock().queue.len())
    }

    /// Runs `args` in its node's lane: alone when the lane is free and nobody waits, else
    /// queued and served with whatever else queued meanwhile, by whichever caller leads next.
    /// Waiters sleep on the lane's signal, so an answered request returns at once instead of
    /// waiting its turn for the lane.
    pub(super) fn auto_assign_batched(&self, args: &AutoAssignArgs) -> Outcome {
        let lane = self.node_lane(&args.node);
        let mut st = lane.lock();
        if !st.busy && st.queue.is_empty() {
            st.busy = true;
            drop(st);
            let _held = Held(&lane);
            return self.assign_serial(args);
        }
        let outcome = Arc::new(Mutex::new(None));
        st.queue.push(Waiting {
            args: args.clone(),
            outcome: outcome.clone(),
        });
        loop {
            if let Some(done) = taken(&outcome) {
                return done; // served by the caller that led
            }
            if !st.busy {
                st.busy = true;
                let queued = std::mem::take(&mut st.queue);
                drop(st);
                let _held = Held(&lane);
                self.serve(queued);
                // Ours was in the queue unless a leader took it and panicked before answering.
                return taken(&outcome).unwrap_or_else(|| self.assign_serial(args));
            }
            st.sleepers += 1;
            st = lane
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
            st.sleepers -= 1;
        }
    }

    /// Serves queued requests, in queue order: together from the node's last block as far as
    /// it goes, then the first of the rest alone (it may claim a new block, or meet an error
    /// only it can explain), then together again when that changed the node's block or the
    /// last try lost a race.
    fn serve(&self, mut queued: Vec<Waiting>) {
        let mut tried = None;
        while !queued.is_empty() {
            let hint = self.hint(&queued[0].args.node);
            if queued.len() > 1 && (hint != tried || hint.is_none()) {
                let (rest, lost_race) = self.assign_together(queued);
                queued = rest;
                tried = if lost_race { None } else { hint };
                if queued.is_empty() {
                    break;
                }
            }
            let first = queued.remove(0);
            first.answer(self.assign_serial(&first.args));
        }
    }

    /// Serves from the node's last block every request it can, in one read and one commit.
    /// Returns the requests left for the one-by-one path, in queue order, and whether the
    /// commit lost a race (so a new try may serve them all).
    fn assign_together(&self, queued: Vec<Waiting>) -> (Vec<Waiting>, bool) {
        let node = queued[0].args.node.clone();
        let Some(hint) = self.hint(&node) else {
            return (queued, false);
        };
        let family = Family::of_net(&hint);
        // A request that fits the shape: one family, the hint's, and a handle no earlier
        // request in the batch names (two writes of one handle would need merging).
        let mut fits = Vec::with_capacity(queued.len());
        for (i, w) in queued.iter().enumerate() {
            let a = &w.args;
            let n = match family {
                Family::V4 if a.num_v6 == 0 => a.num_v4,
                Family::V6 if a.num_v4 == 0 => a.num_v6,
                _ => 0,
            };
            let repeated = queued[..i].iter().any(|p| p.args.handle_id == a.handle_id);
            fits.push(n > 0 && !repeated);
        }
        if fits.iter().filter(|f| **f).count() < 2 {
            return (queued, false);
        }
        let mut reads = vec![
            Read::Get(Key::Node(node.clone())),
            Read::List(Range::Pools),
            Read::List(Range::Reservations),
            Read::Get(Key::Affinity {
                node: node.clone(),
                cidr: hint,
            }),
            Read::Get(Key::Block(hint)),
        ];
        for (w, _) in queued.iter().zip(&fits).filter(|(_, f)| **f) {
            reads.push(Read::Get(Key::Handle(w.args.handle_id.clone())));
        }
        let Ok(answers) = self.store.read(&reads) else {
            return (queued, false); // each request meets the failure on its own path
        };
        match self.serve_from_block(&node, hint, family, &queued, &fits, answers) {
            Ok(served) => {
                let mut rest = Vec::new();
                for (w, got) in queued.into_iter().zip(served) {
                    match got {
                        Some(outcome) => w.answer(outcome),
                        None => rest.push(w),
                    }
                }
                (rest, false)
            }
            Err(e) => {
                let lost_race = matches!(e, AssignError::Store(StoreError::Conflict { .. }));
                (queued, lost_race)
            }
        }
    }

    /// The decision and the commit of [`Ipam::assign_together`]: per request, its outcome
    /// when served here (`None`: left for the one-by-one path). An `Err` leaves every request
    /// to that path (a record that does not decode, a lost compare-and-swap).
    fn serve_from_block(
        &self,
        node: &str,
        hint: ipnetwork::IpNetwork,
        family: Family,
        queued: &[Waiting],
        fits: &[bool],
        answers: Vec<Vec<crate::Versioned<Record>>>,
    ) -> Result<Vec<Option<Outcome>>, AssignError> {
        let mut served: Vec<Option<Outcome>> = queued.iter().map(|_| None).collect();
        let mut answers = answers.into_iter();
        let mut next = || answers.next().unwrap_or_default();
        let labels = one::<Node>(next())?
            .map(|n| n.value.labels)
            .unwrap_or_default();
        let pools: Vec<Pool> = crate::datastore::all::<Pool>(next())?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let reservations = crate::datastore::all::<crate::model::Reservation>(next())?;
        let affinity = one::<Affinity>(next())?;
        let Some(vb) = one::<Block>(next())? else {
            return Ok(served);
        };
        let mut block = vb.value;
        let confirmed = affinity.is_some_and(|a| a.value.state == AffinityState::Confirmed);
        // Reservations inside the block would make a request's count of free addresses
        // uncertain: that rare block is served one by one, which avoids them.
        if !confirmed
            || block.affinity.as_deref() != Some(node)
            || reservations
                .iter()
                .any(|r| cidr::overlaps(&r.value.cidr, &hint))
        {
            return Ok(served);
        }
        block.expire_cooling(self.now());
        let mut handles = Vec::with_capacity(queued.len());
        for (i, w) in queued.iter().enumerate() {
            if !fits[i] {
                continue;
            }
            let handle = one::<Handle>(next())?;
            let a = &w.args;
            if a.only_if_unheld && handle.as_ref().is_some_and(|h| !h.value.is_empty()) {
                continue; // its refusal comes from the one-by-one path
            }
            let requested = if family == Family::V4 {
                &a.v4_pools
            } else {
                &a.v6_pools
            };
            let Ok(cands) =
                candidate_pools(&pools, &labels, node, a.intended_use, family, requested)
            else {
                continue; // its error comes from the one-by-one path
            };
            // The one-by-one path tries the last block first only within the first pool.
            if !cands
                .first()
                .is_some_and(|p| cidr::contains_net(&p.cidr, &hint))
            {
                continue;
            }
            let n = if family == Family::V4 {
                a.num_v4
            } else {
                a.num_v6
            };
            if (block.free_count() as usize) < n {
                break; // the rest queue behind a block claim, in order
            }
            let attrs = holder(&a.handle_id, &a.attrs, node);
            let seq = block.seq;
            let ips: Vec<AssignedIp> = block
                .allocate(n, &attrs)
                .into_iter()
                .map(|o| AssignedIp {
                    ip: block.ip(o),
                    block: hint,
                    seq,
                })
                .collect();
            handles.push(self.handle_add(&a.handle_id, hint, n, Some(handle))?);
            let got = FamilyAssignment {
                requested: n,
                ips,
                pools: cands.iter().map(|p| p.cidr).collect(),
            };
            served[i] = Some(Ok(if family == Family::V4 {
                AutoAssignResult {
                    v4: got,
                    ..Default::default()
                }
            } else {
                AutoAssignResult {
                    v6: got,
                    ..Default::default()
                }
            }));
        }
        if handles.is_empty() {
            return Ok(served);
        }
        let mut writes = Vec::with_capacity(1 + handles.len());
        writes.push(Write::Update {
            record: Record::Block(block),
            expected: vb.revision,
        });
        writes.extend(handles);
        match self.store.commit(writes) {
            Ok(_) => {
                let n = served.iter().flatten().count() as u64;
                self.batched
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                Ok(served)
            }
            Err(e @ StoreError::Conflict { .. }) => {
                self.conflicts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e.into())
            }
            Err(e) => {
                // The same failure each request would have met committing on its own.
                for s in served.iter_mut().flatten() {
                    *s = Err(AssignError::Store(e.clone()));
                }
                Ok(served)
            }
        }
    }
}
