//! A wrapper that makes a store misbehave on purpose: lost compare-and-swaps, unreachable
//! store, commits that apply but report failure (an answer lost on the way back), and reads
//! that fail.

use ipam_core::ConflictKind;
use ipam_core::{Datastore, Key, Range, Record, Revision, Spare, StoreError, Versioned, Write};
use parking_lot::Mutex;
use std::collections::VecDeque;

/// What happens to one commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passed through.
    None,
    /// Refused with a conflict on its first key, as if another writer won; nothing applied.
    Conflict,
    /// Refused as unreachable; nothing applied.
    Unavailable,
    /// Applied, then reported as unreachable (indeterminate).
    AppliedButLost,
}

/// A store that injects [`Fault`]s into commits, from a queue of scheduled faults and then
/// from a deterministic pseudo-random stream, and fails reads at a configured rate.
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<Fault>,
    rng: u64,
    conflict_per_mille: u32,
    unavailable_per_mille: u32,
    lost_per_mille: u32,
    read_failure_per_mille: u32,
    injected: u64,
}

impl<S: Datastore> FaultyStore<S> {
    /// Wraps `inner` with no faults.
    pub fn new(inner: S, seed: u64) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                rng: seed | 1,
                conflict_per_mille: 0,
                unavailable_per_mille: 0,
                lost_per_mille: 0,
                read_failure_per_mille: 0,
                injected: 0,
            }),
        }
    }

    /// Faults for the next commits, in order.
    pub fn schedule(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().queue.extend(faults);
    }

    /// Random conflicts and unavailability, per thousand commits, after the queue is empty.
    pub fn set_rates(&self, conflict_per_mille: u32, unavailable_per_mille: u32) {
        let mut s = self.state.lock();
        s.conflict_per_mille = conflict_per_mille;
        s.unavailable_per_mille = unavailable_per_mille;
    }

    /// Random commits that apply but report an indeterminate failure, and random reads that
    /// fail, per thousand, after the queue is empty.
    pub fn set_lost_and_read_rates(&self, lost_per_mille: u32, read_failure_per_mille: u32) {
        let mut s = self.state.lock();
        s.lost_per_mille = lost_per_mille;
        s.read_failure_per_mille = read_failure_per_mille;
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn next_fault(&self) -> Fault {
        let mut s = self.state.lock();
        let f = if let Some(f) = s.queue.pop_front() {
            f
        } else {
            let r = s.draw();
            if r < s.conflict_per_mille {
                Fault::Conflict
            } else if r < s.conflict_per_mille + s.unavailable_per_mille {
                Fault::Unavailable
            } else if r < s.conflict_per_mille + s.unavailable_per_mille + s.lost_per_mille {
                Fault::AppliedButLost
            } else {
                Fault::None
            }
        };
        if f != Fault::None {
            s.injected += 1;
        }
        f
    }

    /// Fails a read at the configured rate (scheduled faults are for commits only).
    fn read_fault(&self) -> Result<(), StoreError> {
        let mut s = self.state.lock();
        if s.read_failure_per_mille == 0 || s.draw() >= s.read_failure_per_mille {
            return Ok(());
        }
        s.injected += 1;
        Err(StoreError::Unavailable {
            reason: "injected read fault".into(),
            indeterminate: false,
        })
    }
}

impl State {
    /// The next pseudo-random number in 0..1000 (xorshift64*).
    fn draw(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        u32::try_from(self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32).unwrap_or(0) % 1000
    }
}

impl<S: Datastore> Datastore for FaultyStore<S> {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        self.read_fault()?;
        self.inner.get(key)
    }

    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        self.read_fault()?;
        self.inner.list(range)
    }

    fn list_lenient(&self, range: &Range) -> Result<ipam_core::Lenient, StoreError> {
        self.inner.list_lenient(range)
    }

    pass_to_inner!();

    fn read(&self, reads: &[ipam_core::Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        self.read_fault()?;
        self.inner.read(reads)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        self.commit_reusing(writes, &mut Spare::default())
    }

    /// The inner store's, faults included: what a commit that failed after applying handed
    /// back is in `spare` too, as it would be from a store that lost the answer.
    fn commit_reusing(
        &self,
        writes: Vec<Write>,
        spare: &mut Spare,
    ) -> Result<Revision, StoreError> {
        if writes.is_empty() {
            return self.inner.commit_reusing(writes, spare);
        }
        match self.next_fault() {
            Fault::None => self.inner.commit_reusing(writes, spare),
            Fault::Conflict => Err(StoreError::Conflict {
                key: writes[0].key(),
                kind: ConflictKind::Changed,
            }),
            Fault::Unavailable => Err(StoreError::Unavailable {
                reason: "injected fault".into(),
                indeterminate: false,
            }),
            Fault::AppliedButLost => {
                self.inner.commit_reusing(writes, spare)?;
                Err(StoreError::Unavailable {
                    reason: "injected fault after apply".into(),
                    indeterminate: true,
                })
            }
        }
    }
}
