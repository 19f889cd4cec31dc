//! Group commit of one node's concurrent auto-assignments.
//!
//! An engine serialises a node's assignments (they would all write the node's current block,
//! so racing them only loses compare-and-swaps). While one runs, the others queue in the
//! node's [`Lane`]; the next to get the lane takes the whole queue and serves as many of it as
//! the node's last block holds with **one** batched read and **one** commit: the block and
//! every request's handle, under the same revision conditions a single request would write.
//! What the block cannot serve (a full block, a dual-stack request, a request for other pools,
//! a handle named twice), and everything after a lost compare-and-swap or a commit the store
//! refused as too large, goes through the ordinary one-request path in queue order, so
//! batching changes how many round trips a burst costs, never which checks guard a write.
//! Nothing is answered before its commit returned.
//!
//! An uncontended request never queues: it takes the lane and is served alone the same way (a
//! batch of one, without a copy of its arguments), or, for a node with no last block yet, by
//! the one-by-one path. A lone request the lane's kept context (below) can serve skips even
//! the batch's bookkeeping ([`Ipam::assign_alone`]): the same decision for the one request,
//! and the same commit.
//!
//! **A batch's context is kept for the next one.** After a batch (of one or more) commits, the
//! lane keeps what it decided on (the node's labels, the pools) with the block as just
//! committed and the revision the commit gave it ([`Carry`]). The next request or batch for
//! the node, alone or queued, is served from it with **no read**: its block is written under
//! that revision and each handle is created (so it must be absent, which is what an ADD of a
//! new pod expects). Any other writer of the block, or of a handle, makes that commit fail its
//! condition, and the requests are served again after a fresh read, exactly as after any lost
//! race. A commit through this engine that rewrites the kept block on top of the kept revision
//! (a release, mostly) leaves its result kept in its place, so a pod's DEL does not cost the
//! next ADD a read. A release (by handle, by address, or of what an attachment holds) holds the
//! lane of the block's node while it runs, or the block's own release lane when the block is no
//! node's last ([`Ipam::hold_block_lane`]), so a node's releases and assignments through one
//! engine take turns instead of racing; a release starts from the block the lane keeps. The kept
//! context is dropped when the node's requests take the one-by-one path, after [`CARRY_USES`]
//! batches or [`CARRY_AGE_NS`], and whenever a commit through this engine wrote a record that
//! no condition of the batch's commit guards (a pool, a node, the configuration, an affinity,
//! a reservation, the claim index): so pools and configuration written elsewhere are seen at
//! most that late, as if the read had been made that much earlier, and no write is ever made
//! without its compare-and-swap.

use super::assign::{candidate_pools, holder, no_pools, selected};
use super::held::QueuedRelease;
use super::{AssignedIp, AutoAssignArgs, AutoAssignResult, FamilyAssignment, Ipam};
use crate::cidr::{self, Family};
use crate::datastore::{
    one, Datastore, Key, Range, Read, Record, Revision, Spare, StoreError, Versioned, Write,
};
use crate::error::AssignError;
use crate::model::{Affinity, AffinityState, AllowedUse, Block, Handle, Node, Pool};
use ipnetwork::IpNetwork;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
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
pub(super) struct LaneState {
    pub(super) busy: bool,
    queue: Vec<Waiting<'static>>,
    /// Releases waiting to be served together (see `held.rs`), of this lane's blocks.
    pub(super) releases: Vec<QueuedRelease>,
    /// Callers asleep on `changed`, waiting for the lane itself (queued callers sleep on
    /// their own [`Slot`]): the lane is signalled only when someone listens (a signal is a
    /// system call, and most lanes never have a waiter).
    sleepers: usize,
    /// What the last batch decided on, for the next (held by the lane's holder meanwhile).
    carry: Kept,
}

/// What a lane keeps between batches: boxed, so handing it between the lane and its holder
/// moves a pointer.
pub(super) type Kept = Option<Box<Carry>>;

/// A batch's context kept for the next batch of the same node (see the module docs).
pub(super) struct Carry {
    /// The block as committed, at the revision the commit gave it.
    pub(super) block: Versioned<Block>,
    decided: Decided,
    /// What the store handed back from the last commit, for the next one to be built in
    /// (see [`Datastore::commit_reusing`]).
    pub(super) spare: Spare,
}

impl Carry {
    /// The kept block copied for a commit: into the spare's allocation when there is one.
    pub(super) fn copy_block(&mut self) -> Block {
        self.spare.copy_of(&self.block.value)
    }
}

/// The rest of a kept context: what the block's batch decided on, and how old that is.
struct Decided {
    labels: BTreeMap<String, String>,
    pools: Vec<Pool>,
    /// When the context was read, and the engine's count of foreign writes then.
    read_at_ns: u64,
    writes_seen: u64,
    /// Batches served from it since it was read.
    uses: u32,
    /// Per family (v4, v6): the candidate pools of the last request that named none, as
    /// indices into `pools`, with the use it asked for. They depend only on what is decided
    /// here (pools, labels), so they are worked out once per context, not per request.
    defaults: [Option<(AllowedUse, SmallVec<[u32; 4]>)>; 2],
}

impl Decided {
    /// What [`candidate_pools`] gives a request of `family` for `use_` that names no pool.
    fn default_candidates(
        &mut self,
        node: &str,
        use_: AllowedUse,
        family: Family,
    ) -> Result<SmallVec<[&Pool; 4]>, AssignError> {
        let slot = match family {
            Family::V4 => 0,
            Family::V6 => 1,
        };
        if !matches!(&self.defaults[slot], Some((u, _)) if *u == use_) {
            let ix = (0u32..)
                .zip(&self.pools)
                .filter(|(_, p)| selected(p, &self.labels, use_, family))
                .map(|(i, _)| i)
                .collect();
            self.defaults[slot] = Some((use_, ix));
        }
        let ix = self.defaults[slot].as_ref().map_or(&[][..], |(_, ix)| ix);
        let out: SmallVec<[&Pool; 4]> = ix
            .iter()
            .filter_map(|&i| self.pools.get(i as usize))
            .collect();
        if out.is_empty() {
            return Err(no_pools(node, use_, family));
        }
        Ok(out)
    }
}

/// What a batch decides on: read now, or kept from the last batch (then no handle was read).
struct Basis {
    context: Carry,
    /// Each fitting request's handle as read, in order; `None` when nothing was read.
    handles: Option<Vec<Option<Versioned<Handle>>>>,
}

/// Batches served from one read of the context, at most: a backstop for a clock that does
/// not move. The bound on staleness is [`CARRY_AGE_NS`]; a count of 16 made a busy node read
/// again every 16 requests (one read costs about as much as three assignments in memory).
pub const CARRY_USES: u32 = 256;

/// How old a kept context may be, at most (100 ms).
pub const CARRY_AGE_NS: u64 = 100_000_000;

/// Per request of a batch, its outcome when served from the block (`None`: left for the
/// one-by-one path).
type Served = SmallVec<[Option<Outcome>; 2]>;

/// A queued request and the place its outcome is left for it. A request served by its own
/// caller borrows its arguments and its outcome's place; a queued one owns a copy of the
/// arguments and shares the place with its sleeping caller.
struct Waiting<'a> {
    args: Cow<'a, AutoAssignArgs>,
    outcome: Place<'a>,
}

enum Place<'a> {
    Own(&'a Mutex<Option<Outcome>>),
    Shared(Ticket<Outcome>),
}

impl Waiting<'_> {
    /// The queued caller's place (none for a request served by its own caller).
    fn slot(&self) -> Option<&Arc<Slot<Outcome>>> {
        match &self.outcome {
            Place::Shared(t) => Some(t.slot()),
            Place::Own(_) => None,
        }
    }

    fn answer(&self, outcome: Outcome) {
        match &self.outcome {
            Place::Own(p) => *p.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome),
            Place::Shared(t) => t.answer(outcome),
        }
    }
}

/// The answer left in `o`, if any (taken out).
pub(super) fn taken<T>(o: &Mutex<Option<T>>) -> Option<T> {
    o.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A queued caller's place: where its answer is left, and its own wake-up. The caller sleeps
/// on it; it is woken when the request it queued is done with (its [`Ticket`] dropped,
/// answered or not), or when the lane is given back while its request is first in the queue
/// (so it leads the next batch). Only those callers wake: a lane given back does not wake the
/// others queued behind, nor callers already answered.
pub(super) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    woken: Condvar,
}

struct SlotState<T> {
    answer: Option<T>,
    /// A wake-up not yet slept through.
    nudged: bool,
}

impl<T> Slot<T> {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                answer: None,
                nudged: false,
            }),
            woken: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer left here, if any (taken out).
    pub(super) fn take(&self) -> Option<T> {
        self.lock().answer.take()
    }

    /// Sleeps until woken (at once if a wake-up came since the last sleep).
    pub(super) fn sleep(&self) {
        let mut st = self.lock();
        while !st.nudged {
            st = self.woken.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.nudged = false;
    }

    /// Wakes the caller sleeping here.
    pub(super) fn nudge(&self) {
        self.lock().nudged = true;
        self.woken.notify_one();
    }
}

/// Sleeps a queued caller, whose answer is not there and whose lane is held, until something
/// changed for it. While its request is still queued (`queued`), on its own slot; once taken
/// but not answered (the caller that took it failed before answering), on the lane, which
/// is signalled when given back: the caller then leads and serves itself.
pub(super) fn sleep_queued<'a, T>(
    lane: &'a Lane,
    st: MutexGuard<'a, LaneState>,
    slot: &Slot<T>,
    queued: impl Fn(&LaneState) -> bool,
) -> MutexGuard<'a, LaneState> {
    if !queued(&st) {
        return lane.sleep(st);
    }
    drop(st);
    slot.sleep();
    lane.lock()
}

/// The end of a [`Slot`] that travels with a queued request: whoever takes the request from
/// the queue answers through it, and its drop wakes the caller, also when the taker panics
/// before answering (the caller then serves its request itself).
pub(super) struct Ticket<T>(Arc<Slot<T>>);

impl<T> Ticket<T> {
    pub(super) fn new(slot: &Arc<Slot<T>>) -> Self {
        Ticket(Arc::clone(slot))
    }

    pub(super) fn answer(&self, answer: T) {
        self.0.lock().answer = Some(answer);
    }

    pub(super) fn slot(&self) -> &Arc<Slot<T>> {
        &self.0
    }
}

impl<T> Drop for Ticket<T> {
    fn drop(&mut self) {
        self.0.nudge();
    }
}

impl Lane {
    pub(super) fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until the lane signals a change, counted as a sleeper (the signal is sent only
    /// when someone listens).
    pub(super) fn sleep<'a>(
        &'a self,
        mut st: MutexGuard<'a, LaneState>,
    ) -> MutexGuard<'a, LaneState> {
        st.sleepers += 1;
        let mut st = self
            .changed
            .wait(st)
            .unwrap_or_else(PoisonError::into_inner);
        st.sleepers -= 1;
        st
    }

    /// Takes the lane, free under `st`, with what it keeps.
    pub(super) fn take(self: &Arc<Self>, st: MutexGuard<'_, LaneState>) -> Held {
        let carry = Lane::mark_taken(st);
        Held {
            lane: Arc::clone(self),
            carry,
        }
    }

    /// Marks the lane, free under `st`, taken, and hands out what it keeps: for a caller
    /// that then gives its own reference to the lane to [`Held::new`].
    pub(super) fn mark_taken(mut st: MutexGuard<'_, LaneState>) -> Kept {
        st.busy = true;
        st.carry.take()
    }

    /// Keeps `block`, committed at `revision` by a write that read it at `read`, in place of
    /// the kept copy read at `read`; nothing if the lane meanwhile kept something else.
    pub(super) fn rewritten(&self, block: Block, read: Revision, revision: Revision) {
        let mut st = self.lock();
        if let Some(c) = st.carry.as_mut() {
            if c.block.value.cidr == block.cidr && c.block.revision == read {
                c.block = Versioned {
                    value: block,
                    revision,
                };
            }
        }
    }
}

/// The lane held by one caller, with the kept context while it serves; freed (the context
/// put back, the waiters woken) when dropped, even by a panic.
pub(super) struct Held {
    lane: Arc<Lane>,
    carry: Kept,
}

impl Held {
    /// The hold of `lane`, which its caller marked taken ([`Lane::mark_taken`]).
    pub(super) fn new(lane: Arc<Lane>, carry: Kept) -> Held {
        Held { lane, carry }
    }

    /// What the lane keeps, taken out of the hold if it is block `cidr`: changed out of the
    /// hold and given back with [`Held::put_back`] once committed, so a panic or a failure
    /// meanwhile leaves nothing half-changed kept.
    pub(super) fn take_carry_of(&mut self, cidr: IpNetwork) -> Option<Box<Carry>> {
        if self.carry.as_ref()?.block.value.cidr != cidr {
            return None;
        }
        self.carry.take()
    }

    /// Gives back what [`Held::take_carry_of`] took, as committed.
    pub(super) fn put_back(&mut self, carry: Box<Carry>) {
        self.carry = Some(carry);
    }

    /// Keeps `block`, as a release committed it after reading it, if the lane keeps nothing
    /// else and the block is a node's (a release from a kept block never deletes it, and only
    /// a block without affinity is deleted when emptied): the engine's next release in the
    /// block starts from it. Kept with nothing decided for assignments (they read their own
    /// context before using it).
    pub(super) fn keep_released(&mut self, block: Versioned<Block>) {
        if self.carry.is_none() && block.value.affinity.is_some() {
            self.carry = Some(Box::new(Carry {
                block,
                decided: Decided {
                    labels: BTreeMap::new(),
                    pools: Vec::new(),
                    read_at_ns: 0,
                    writes_seen: 0,
                    uses: CARRY_USES,
                    defaults: [None, None],
                },
                spare: Spare::default(),
            }));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut st = self.lane.lock();
        st.busy = false;
        st.carry = self.carry.take();
        // The first queued caller of each kind, to lead; callers waiting for the lane itself.
        let first_assign = st.queue.first().and_then(Waiting::slot).cloned();
        let first_release = st.releases.first().map(QueuedRelease::slot);
        let wake = st.sleepers > 0;
        drop(st);
        if let Some(s) = first_assign {
            s.nudge();
        }
        if let Some(s) = first_release {
            s.nudge();
        }
        if wake {
            self.lane.changed.notify_all();
        }
    }
}

impl<S: Datastore> Ipam<S> {
    /// Auto-assignments for `node` waiting behind the one this engine is running for it (the
    /// depth of the node's queue; they will be served together).
    pub fn queued_assignments(&self, node: &str) -> usize {
        self.existing_lane(node).map_or(0, |l| l.lock().queue.len())
    }

    /// `node`'s lane, if this engine has one (none is made).
    pub(super) fn existing_lane(&self, node: &str) -> Option<Arc<Lane>> {
        self.node_lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned()
    }

    /// Runs `args` in its node's lane: alone when the lane is free and nobody waits, else
    /// queued and served with whatever else queued meanwhile, by whichever caller leads next.
    /// Waiters sleep on their own [`Slot`]: an answered request's caller is woken as its
    /// answer is left, and a lane given back wakes only the caller first in the queue.
    pub(super) fn auto_assign_batched(&self, args: &AutoAssignArgs) -> Outcome {
        let lane = self.node_lane(&args.node);
        let mut st = lane.lock();
        if !st.busy && st.queue.is_empty() {
            let carry = Lane::mark_taken(st);
            let mut held = Held::new(lane, carry);
            if let Some(outcome) = self.assign_alone(args, &mut held.carry) {
                return outcome;
            }
            if held.carry.is_none() && self.hint(&args.node).is_none() {
                return self.assign_serial(args); // the node's first: no block to serve from
            }
            // Served from the node's last block: from the kept context without a read, or
            // read now and kept for the next.
            let outcome = Mutex::new(None);
            let one = vec![Waiting {
                args: Cow::Borrowed(args),
                outcome: Place::Own(&outcome),
            }];
            self.serve(one, &mut held.carry);
            return taken(&outcome).unwrap_or_else(|| self.assign_serial(args));
        }
        let slot = Slot::new();
        st.queue.push(Waiting {
            args: Cow::Owned(args.clone()),
            outcome: Place::Shared(Ticket::new(&slot)),
        });
        loop {
            if let Some(done) = slot.take() {
                return done; // served by the caller that led
            }
            if !st.busy {
                let queued = std::mem::take(&mut st.queue);
                let mut held = lane.take(st);
                self.serve(queued, &mut held.carry);
                // Ours was in the queue unless a leader took it and panicked before answering.
                return slot.take().unwrap_or_else(|| self.assign_serial(args));
            }
            st = sleep_queued(&lane, st, &slot, |st| {
                st.queue
                    .iter()
                    .any(|w| w.slot().is_some_and(|s| Arc::ptr_eq(s, &slot)))
            });
        }
    }

    /// The lane of `block`'s node if it keeps the block as read at `read` (so a write made
    /// from that read may leave its result there).
    pub(super) fn lane_keeping(&self, block: &Block, read: Revision) -> Option<Arc<Lane>> {
        let lane = self.existing_lane(block.affinity.as_deref()?)?;
        let keeps = lane
            .lock()
            .carry
            .as_ref()
            .is_some_and(|c| c.block.value.cidr == block.cidr && c.block.revision == read);
        keeps.then_some(lane)
    }

    /// Waits for, then holds, the lane of the node whose last block is `cidr`, if this engine
    /// has one, else the block's own release lane, with whatever it keeps: a release made
    /// meanwhile never races the node's assignments or the engine's other releases in the
    /// block, and may start from the kept block. A lane is not re-entrant: never called by a
    /// caller that holds one (an assignment's undo releases without it).
    pub(super) fn hold_block_lane(&self, cidr: IpNetwork) -> Option<Held> {
        let lane = self.release_lane(cidr);
        let mut st = lane.lock();
        while st.busy {
            st = lane.sleep(st);
        }
        Some(lane.take(st))
    }

    /// The lane a release in `cidr` takes turns in: that of the node whose last block it is,
    /// if this engine has one, else the block's own.
    pub(super) fn release_lane(&self, cidr: IpNetwork) -> Arc<Lane> {
        let node_lane = {
            let hints = self.hints();
            hints
                .by_block
                .get(&cidr)
                .and_then(|(node, lane)| lane.upgrade().or_else(|| self.existing_lane(node)))
        };
        node_lane.unwrap_or_else(|| self.block_lane(cidr))
    }

    /// Whether `carry` may serve the node's next batch from `hint`.
    fn usable(&self, carry: &Kept, hint: Option<IpNetwork>) -> bool {
        carry
            .as_ref()
            .is_some_and(|c| Some(c.block.value.cidr) == hint && self.fresh(&c.decided, self.now()))
    }

    /// Whether a kept context may still be decided on at `now`: used fewer than
    /// [`CARRY_USES`] times, younger than [`CARRY_AGE_NS`], and no write it does not see made
    /// through this engine.
    fn fresh(&self, d: &Decided, now: u64) -> bool {
        d.uses < CARRY_USES
            && now.saturating_sub(d.read_at_ns) <= CARRY_AGE_NS
            && d.writes_seen == self.writes_seen.load(Ordering::SeqCst)
    }

    /// Serves queued requests, in queue order: together from the node's last block as far as
    /// it goes, then the first of the rest alone (it may claim a new block, or meet an error
    /// only it can explain), then together again when that changed the node's block or the
    /// last try lost a race.
    fn serve(&self, mut queued: Vec<Waiting<'_>>, carry: &mut Kept) {
        let mut tried = None;
        while !queued.is_empty() {
            let hint = self.hint(&queued[0].args.node);
            if let Some(h) = hint.filter(|_| hint != tried) {
                let (rest, lost_race) = self.assign_together(queued, h, carry);
                queued = rest;
                tried = if lost_race { None } else { hint };
                if queued.is_empty() {
                    break;
                }
            }
            let first = queued.remove(0);
            // The one-by-one path may write the block: what was kept no longer describes it.
            *carry = None;
            first.answer(self.assign_serial(&first.args));
        }
    }

    /// Serves from the node's last block every request it can, in one read (none, from a kept
    /// context) and one commit. Returns the requests left for the one-by-one path, in queue
    /// order, and whether the commit lost a race (so a new try may serve them all).
    fn assign_together<'a>(
        &self,
        queued: Vec<Waiting<'a>>,
        hint: IpNetwork,
        carry: &mut Kept,
    ) -> (Vec<Waiting<'a>>, bool) {
        let family = Family::of_net(&hint);
        // A request that fits the shape: one family, the hint's, and a handle no earlier
        // request in the batch names (two writes of one handle would need merging).
        let mut fits: SmallVec<[bool; 8]> = SmallVec::with_capacity(queued.len());
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
        if !fits.contains(&true) {
            return (queued, false);
        }
        let kept = self.usable(carry, Some(hint));
        let basis = match carry.take() {
            Some(mut c) if kept => {
                c.decided.uses += 1;
                Basis {
                    context: *c,
                    handles: None,
                }
            }
            _ => match self.read_basis(&queued[0].args.node, hint, &queued, &fits) {
                Ok(Some(b)) => b,
                // The block cannot serve a batch, or a record does not decode: each request
                // meets that on its own path.
                Ok(None) | Err(_) => return (queued, false),
            },
        };
        let node = &queued[0].args.node;
        match self.serve_from_block(node, hint, &queued, &fits, basis, carry) {
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

    /// Reads what a batch decides on, in one round trip: `None` when the node's last block
    /// cannot serve a batch (gone, not confirmed as the node's, or holding reservations).
    fn read_basis(
        &self,
        node: &str,
        hint: IpNetwork,
        queued: &[Waiting<'_>],
        fits: &[bool],
    ) -> Result<Option<Basis>, AssignError> {
        // Taken before the read: a write counted after it makes the kept context unusable.
        let writes_seen = self.writes_seen.load(Ordering::SeqCst);
        let read_at_ns = self.now();
        let mut reads = Vec::with_capacity(5 + fits.len());
        reads.extend([
            Read::Get(Key::Node(node.to_string())),
            Read::List(Range::Pools),
            Read::List(Range::Reservations),
            Read::Get(Key::Affinity {
                node: node.to_string(),
                cidr: hint,
            }),
            Read::Get(Key::Block(hint)),
        ]);
        for (w, _) in queued.iter().zip(fits).filter(|(_, f)| **f) {
            reads.push(Read::Get(Key::Handle(w.args.handle_id.clone())));
        }
        let answers = self.store.read(&reads)?;
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
        let Some(block) = one::<Block>(next())? else {
            return Ok(None);
        };
        let confirmed = affinity.is_some_and(|a| a.value.state == AffinityState::Confirmed);
        // Reservations inside the block would make a request's count of free addresses
        // uncertain: that rare block is served one by one, which avoids them.
        if !confirmed
            || block.value.affinity.as_deref() != Some(node)
            || reservations
                .iter()
                .any(|r| cidr::overlaps(&r.value.cidr, &hint))
        {
            return Ok(None);
        }
        let mut handles = Vec::new();
        for _ in fits.iter().filter(|f| **f) {
            handles.push(one::<Handle>(next())?);
        }
        Ok(Some(Basis {
            context: Carry {
                block,
                decided: Decided {
                    labels,
                    pools,
                    read_at_ns,
                    writes_seen,
                    uses: 0,
                    defaults: [None, None],
                },
                spare: Spare::default(),
            },
            handles: Some(handles),
        }))
    }

    /// The decision and the commit of [`Ipam::assign_together`]: per request, its outcome
    /// when served here (`None`: left for the one-by-one path). An `Err` leaves every request
    /// to that path (a lost compare-and-swap). A commit that succeeded leaves its context in
    /// `carry`.
    fn serve_from_block(
        &self,
        node: &str,
        hint: IpNetwork,
        queued: &[Waiting<'_>],
        fits: &[bool],
        basis: Basis,
        carry: &mut Kept,
    ) -> Result<Served, AssignError> {
        let mut served: Served = queued.iter().map(|_| None).collect();
        let Basis {
            context,
            handles: read_handles,
        } = basis;
        let Carry {
            block: vb,
            mut decided,
            mut spare,
        } = context;
        let from_kept = read_handles.is_none();
        let mut read_handles = read_handles.map(Vec::into_iter);
        let mut block = vb.value;
        block.expire_cooling(self.now());
        let mut handles: SmallVec<[Write; 4]> = SmallVec::with_capacity(queued.len());
        for (i, w) in queued.iter().enumerate() {
            if !fits[i] {
                continue;
            }
            // Not read (a kept context): created, so the commit fails if it exists.
            let handle = read_handles.as_mut().and_then(Iterator::next).flatten();
            let take =
                self.take_from_block(&mut block, &mut decided, node, hint, &w.args, handle)?;
            match take {
                Take::Served(result, handle) => {
                    handles.push(handle);
                    served[i] = Some(Ok(result));
                }
                Take::Left => {}
                Take::Full => break, // the rest queue behind a block claim, in order
            }
        }
        if handles.is_empty() {
            return Ok(served);
        }
        let n = served.iter().flatten().count();
        // The block is kept as committed; the store gets a copy.
        let copy = spare.copy_of(&block);
        let mut writes = spare.writes();
        writes.reserve(1 + handles.len());
        writes.push(Write::Update {
            record: Record::Block(copy),
            expected: vb.revision,
        });
        writes.extend(handles);
        match self.store.commit_reusing(writes, &mut spare) {
            Ok(revision) => {
                let n = n as u64;
                if n > 1 {
                    self.batched.fetch_add(n, Ordering::Relaxed);
                }
                if from_kept {
                    self.unread.fetch_add(n, Ordering::Relaxed);
                }
                *carry = Some(Box::new(Carry {
                    block: Versioned {
                        value: block,
                        revision,
                    },
                    decided,
                    spare,
                }));
                Ok(served)
            }
            // Every request leaves for the one-by-one path.
            Err(e) if !settles(&e, n) => {
                if matches!(e, StoreError::Conflict { .. }) {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
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

    /// Serves request `a` from `block` (changing it), as a batch decides on `decided`:
    /// `handle` is the request's handle as read (`None`: absent, or not read from a kept
    /// context; it is then created, so the commit fails if it exists).
    fn take_from_block(
        &self,
        block: &mut Block,
        decided: &mut Decided,
        node: &str,
        hint: IpNetwork,
        a: &AutoAssignArgs,
        handle: Option<Versioned<Handle>>,
    ) -> Result<Take, AssignError> {
        let family = Family::of_net(&hint);
        if a.only_if_unheld && handle.as_ref().is_some_and(|h| !h.value.is_empty()) {
            return Ok(Take::Left); // its refusal comes from the one-by-one path
        }
        let (requested, n) = match family {
            Family::V4 => (&a.v4_pools, a.num_v4),
            Family::V6 => (&a.v6_pools, a.num_v6),
        };
        let cands = if requested.is_empty() {
            decided.default_candidates(node, a.intended_use, family)
        } else {
            candidate_pools(
                &decided.pools,
                &decided.labels,
                node,
                a.intended_use,
                family,
                requested,
            )
        };
        let Ok(cands) = cands else {
            return Ok(Take::Left); // its error comes from the one-by-one path
        };
        // The one-by-one path tries the last block first only within the first pool.
        if !cands
            .first()
            .is_some_and(|p| cidr::contains_net(&p.cidr, &hint))
        {
            return Ok(Take::Left);
        }
        if (block.free_count() as usize) < n {
            return Ok(Take::Full);
        }
        let Ok(attrs) = holder(&a.handle_id, &a.attrs, node) else {
            return Ok(Take::Left); // its error comes from the one-by-one path
        };
        let seq = block.seq;
        let ords = block.allocate(n, &attrs);
        let mut ips = Vec::with_capacity(ords.len());
        ips.extend(ords.iter().map(|&o| AssignedIp {
            ip: block.ip(o),
            block: hint,
            seq,
        }));
        let handle = self.handle_add(&a.handle_id, hint, n, Some(handle))?;
        let got = FamilyAssignment {
            requested: n,
            ips,
            pools: cands.iter().map(|p| p.cidr).collect(),
        };
        let result = match family {
            Family::V4 => AutoAssignResult {
                v4: got,
                ..Default::default()
            },
            Family::V6 => AutoAssignResult {
                v6: got,
                ..Default::default()
            },
        };
        Ok(Take::Served(result, handle))
    }

    /// A lone request served from the lane's kept context with no read (see the module
    /// docs), without the queue's bookkeeping: `None` when there is no usable kept context
    /// (none, too old, or a request of two families), for the ordinary path to serve. The
    /// same decision and commit as a batch of one, and where that leaves the request (a full
    /// block, another pool, a lost race) the same next step: the one-by-one path.
    fn assign_alone(&self, args: &AutoAssignArgs, carry: &mut Kept) -> Option<Outcome> {
        let c = carry.as_mut()?;
        let hint = c.block.value.cidr;
        let n = match Family::of_net(&hint) {
            Family::V4 if args.num_v6 == 0 => args.num_v4,
            Family::V6 if args.num_v4 == 0 => args.num_v6,
            _ => 0,
        };
        // A lane keeps only its node's last block: no hint is looked up. The clock read once
        // (a system clock read is a good part of a lone request's own time).
        let now = self.now();
        if n == 0 || !self.fresh(&c.decided, now) {
            return None;
        }
        // Taken out of the hold while it changes (a pointer: the context is boxed), and put
        // back only as committed: a failure, or a panic, drops it.
        let mut c = carry.take()?;
        c.decided.uses += 1;
        c.block.value.expire_cooling(now);
        let taken = self.take_from_block(
            &mut c.block.value,
            &mut c.decided,
            &args.node,
            hint,
            args,
            None,
        );
        let (result, handle) = match taken {
            Ok(Take::Served(result, handle)) => (result, handle),
            // Served one by one, as a batch leaves it (the kept context goes with it): it may
            // claim a block, or meet an error only that path explains.
            Ok(Take::Left | Take::Full) => return Some(self.assign_serial(args)),
            Err(e) => return Some(Err(e)),
        };
        let mut writes = c.spare.writes();
        writes.push(Write::Update {
            record: Record::Block(c.copy_block()),
            expected: c.block.revision,
        });
        writes.push(handle);
        match self.store.commit_reusing(writes, &mut c.spare) {
            Ok(revision) => {
                c.block.revision = revision;
                *carry = Some(c);
                self.unread.fetch_add(1, Ordering::Relaxed);
                Some(Ok(result))
            }
            Err(e) => {
                if matches!(e, StoreError::Conflict { .. }) {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                if settles(&e, 1) {
                    Some(Err(AssignError::Store(e)))
                } else {
                    // A lost race: served one by one, as a batch's first request is after one.
                    Some(self.assign_serial(args))
                }
            }
        }
    }
}

/// What serving one request from a batch's block came to.
enum Take {
    /// Served: the request's result, and its handle's write.
    Served(AutoAssignResult, Write),
    /// Left for the one-by-one path (which explains its refusal, or serves it elsewhere).
    Left,
    /// The block has too few free addresses for it.
    Full,
}

/// Whether a batch commit of `n` requests that failed with `e` settles them (each gets `e`,
/// the failure it would have met committing alone) rather than leaving them to the
/// one-by-one path: not a lost compare-and-swap (a new read may serve them), nor a refusal
/// of a commit of several (too much for one commit: etcd bounds a transaction's operations;
/// each request's own commit may pass).
fn settles(e: &StoreError, n: usize) -> bool {
    match e {
        StoreError::Conflict { .. } => false,
        StoreError::Rejected(_) => n <= 1,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::{Decided, Slot, Ticket};
    use crate::cidr::Family;
    use crate::ipam::assign::candidate_pools;
    use crate::model::{AllowedUse, AssignmentMode, Pool};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A thread that sleeps on `slot`, then takes its answer.
    fn sleeper(slot: &std::sync::Arc<Slot<u32>>) -> std::thread::JoinHandle<Option<u32>> {
        let slot = slot.clone();
        std::thread::spawn(move || {
            slot.sleep();
            slot.take()
        })
    }

    #[test]
    fn a_ticket_wakes_its_caller_with_the_answer_when_dropped() {
        let slot = Slot::new();
        let t = Ticket::new(&slot);
        let woke = sleeper(&slot);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !woke.is_finished(),
            "an answer alone does not wake before the ticket goes"
        );
        t.answer(7);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!woke.is_finished());
        drop(t);
        assert_eq!(woke.join().expect("the thread ends"), Some(7));
    }

    #[test]
    fn a_ticket_dropped_unanswered_still_wakes_its_caller() {
        // As when the caller that took the request panicked: the caller serves itself.
        let slot = Slot::<u32>::new();
        let t = Ticket::new(&slot);
        let woke = sleeper(&slot);
        drop(t);
        assert_eq!(woke.join().expect("the thread ends"), None);
    }

    #[test]
    fn a_nudge_before_the_sleep_is_not_lost() {
        let slot = Slot::<u32>::new();
        slot.nudge();
        // Returns at once: the wake-up came between the caller's check and its sleep.
        sleeper(&slot).join().expect("the thread ends");
        // Slept through: the next sleep waits for the next wake-up.
        let woke = sleeper(&slot);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!woke.is_finished());
        slot.nudge();
        woke.join().expect("the thread ends");
    }

    /// Pools of every kind a candidate list tells apart: family, disabled, manual, uses,
    /// selectors that match the labels or not.
    fn pools() -> Vec<Pool> {
        let pool = |name: &str, cidr: &str, f: &dyn Fn(&mut crate::model::PoolParts)| {
            let mut parts = Pool::new(name, cidr.parse().expect("a valid literal"))
                .expect("a valid fixture")
                .to_parts();
            f(&mut parts);
            Pool::try_from(parts).expect("a valid fixture")
        };
        vec![
            pool("a", "10.1.0.0/16", &|_| {}),
            pool("off", "10.2.0.0/16", &|p| p.disabled = true),
            pool("manual", "10.3.0.0/16", &|p| {
                p.assignment_mode = AssignmentMode::Manual
            }),
            pool("tunnel", "10.4.0.0/16", &|p| {
                p.allowed_uses = vec![AllowedUse::Tunnel]
            }),
            pool("zone-b", "10.5.0.0/16", &|p| {
                p.node_selector = "zone == 'b'".parse().expect("a valid selector")
            }),
            pool("zone-a", "10.6.0.0/16", &|p| {
                p.node_selector = "zone == 'a'".parse().expect("a valid selector")
            }),
            pool("six", "fd00::/48", &|_| {}),
        ]
    }

    #[test]
    fn kept_default_candidates_are_the_ones_worked_out_each_time() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        let mut sets = vec![
            pools(),
            pools().into_iter().filter(|p| p.name != "six").collect(),
        ];
        sets.push(Vec::new());
        for pools in sets {
            let mut d = Decided {
                labels: labels.clone(),
                pools: pools.clone(),
                read_at_ns: 0,
                writes_seen: 0,
                uses: 0,
                defaults: [None, None],
            };
            // Each asked twice, in an order that switches use and family between askings.
            let asks = [
                (AllowedUse::Workload, Family::V4),
                (AllowedUse::Tunnel, Family::V4),
                (AllowedUse::Workload, Family::V6),
                (AllowedUse::Workload, Family::V4),
                (AllowedUse::LoadBalancer, Family::V6),
                (AllowedUse::Tunnel, Family::V4),
                (AllowedUse::Workload, Family::V6),
            ];
            for (use_, family) in asks {
                let names = |r: Result<smallvec::SmallVec<[&Pool; 4]>, _>| {
                    r.map(|ps| ps.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
                };
                let fresh = names(candidate_pools(&pools, &labels, "n1", use_, family, &[]));
                let kept = names(d.default_candidates("n1", use_, family));
                assert_eq!(kept, fresh, "{use_:?} {family:?}");
            }
        }
    }
}
