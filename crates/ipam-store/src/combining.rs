//! [`Combining`]: a store whose concurrent batched reads of single records share one read of
//! the store under it.
//!
//! A networked store pays a round trip and a request's overhead per read, whatever it holds: a
//! burst of CNI DELs on a node read their handles one request each. Here, while one batched
//! read ([`Datastore::read`]) is in flight, other callers' reads queue; when it returns, the
//! next caller to go takes the whole queue and reads it all in one request, and each caller
//! gets back exactly the answers to its own reads, in order. One request of the store under it
//! answers from one snapshot, so each caller's reads still come from one snapshot (and the
//! callers of one combined read from the same one): what [`Datastore::read`] promises.
//!
//! Only reads of single records (`Read::Get`) are combined, and at most [`COMBINED_READS`] of
//! them at once (an etcd transaction answers them from one snapshot); a read that lists a
//! range, or a longer one, goes straight to the store, as do `get`, `list` and every commit.
//! A read that finds none in flight goes at once: combining only ever makes a caller wait for
//! a read already on its way. Not for a local store, where a read costs less than the wake-up.

use ipam_core::{
    Datastore, Key, Lenient, Range, Read, Record, Revision, StoreError, Versioned, Write,
};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Reads of single records one combined read holds at most.
pub const COMBINED_READS: usize = 64;

type Answers = Result<Vec<Vec<Versioned<Record>>>, StoreError>;

/// A read waiting for the one in flight, and where its answers are left.
struct Pending {
    reads: Vec<Read>,
    answer: Arc<Mutex<Option<Answers>>>,
}

#[derive(Default)]
struct State {
    /// A read is in flight.
    busy: bool,
    queue: Vec<Pending>,
    /// Callers asleep on `done` (signalled only when someone listens).
    sleepers: usize,
}

/// A store whose concurrent reads of single records are combined (see the module docs).
pub struct Combining<S> {
    inner: S,
    state: Mutex<State>,
    done: Condvar,
}

impl<S> Combining<S> {
    /// `inner`, its concurrent reads combined.
    pub fn new(inner: S) -> Self {
        Combining {
            inner,
            state: Mutex::new(State::default()),
            done: Condvar::new(),
        }
    }

    /// The store under it.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A queue and two counters, consistent at every unlock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The read in flight, finished when dropped (even by a panic): the next may go.
struct InFlight<'a, S>(&'a Combining<S>);

impl<S> Drop for InFlight<'_, S> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.busy = false;
        let wake = st.sleepers > 0;
        drop(st);
        if wake {
            self.0.done.notify_all();
        }
    }
}

fn taken(slot: &Mutex<Option<Answers>>) -> Option<Answers> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

impl<S: Datastore> Combining<S> {
    /// Reads every queued read in one request of the store under it and leaves each its own
    /// answers.
    fn read_for(&self, batch: Vec<Pending>) {
        let all: Vec<Read> = batch.iter().flat_map(|p| p.reads.iter().cloned()).collect();
        match self.inner.read(&all) {
            Ok(answers) if answers.len() == all.len() => {
                let mut answers = answers.into_iter();
                for p in batch {
                    let own = answers.by_ref().take(p.reads.len()).collect();
                    *p.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Ok(own));
                }
            }
            Ok(answers) => {
                let e = StoreError::Unavailable {
                    reason: format!(
                        "the store answered {} of {} reads",
                        answers.len(),
                        all.len()
                    ),
                    indeterminate: false,
                };
                for p in batch {
                    *p.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Err(e.clone()));
                }
            }
            Err(e) => {
                for p in batch {
                    *p.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Err(e.clone()));
                }
            }
        }
    }
}

impl<S: Datastore> Datastore for Combining<S> {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        self.inner.get(key)
    }

    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        self.inner.list(range)
    }

    fn list_lenient(&self, range: &Range) -> Result<Lenient, StoreError> {
        self.inner.list_lenient(range)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        self.inner.commit(writes)
    }

    pass_to_inner!();

    fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        let combinable =
            reads.len() <= COMBINED_READS && reads.iter().all(|r| matches!(r, Read::Get(_)));
        if !combinable {
            return self.inner.read(reads);
        }
        let mut st = self.lock();
        if !st.busy && st.queue.is_empty() {
            st.busy = true;
            drop(st);
            let _in_flight = InFlight(self);
            return self.inner.read(reads);
        }
        let slot = Arc::new(Mutex::new(None));
        st.queue.push(Pending {
            reads: reads.to_vec(),
            answer: Arc::clone(&slot),
        });
        loop {
            if let Some(answers) = taken(&slot) {
                return answers; // read by the caller that went
            }
            if !st.busy {
                // Ours, and others in queue order up to a combined read's worth.
                let mut n = reads.len();
                let (batch, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.queue).into_iter().partition(|p| {
                        if Arc::ptr_eq(&p.answer, &slot) {
                            return true;
                        }
                        let fits = n + p.reads.len() <= COMBINED_READS;
                        n += if fits { p.reads.len() } else { 0 };
                        fits
                    });
                st.queue = rest;
                st.busy = true;
                drop(st);
                let in_flight = InFlight(self);
                self.read_for(batch);
                // Answers are in place before the next may go and the waiters are woken.
                drop(in_flight);
                return taken(&slot).unwrap_or_else(|| self.inner.read(reads));
            }
            st.sleepers += 1;
            st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.sleepers -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use ipam_core::{Handle, IpamConfig};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// A memory store whose reads wait while the gate is closed, counting them and the reads
    /// each carried.
    #[derive(Default)]
    struct Gated {
        inner: MemoryStore,
        closed: AtomicBool,
        waiting: AtomicUsize,
        calls: AtomicUsize,
        largest: AtomicUsize,
        fail: AtomicBool,
    }

    impl Datastore for Gated {
        fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
            self.inner.get(key)
        }
        fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
            self.inner.list(range)
        }
        fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
            self.inner.commit(writes)
        }
        fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while self.closed.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.largest.fetch_max(reads.len(), Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable {
                    reason: "down".into(),
                    indeterminate: false,
                });
            }
            self.inner.read(reads)
        }
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn handle(i: u64) -> Key {
        Key::Handle(format!("h{i}"))
    }

    /// A store holding the configuration and handles h0..h9 (hN holds N + 1 addresses of one
    /// block), so each read's answer tells whose it is.
    fn store() -> Arc<Combining<Gated>> {
        let s = Arc::new(Combining::new(Gated::default()));
        let mut writes = vec![Write::Create(Record::Config(IpamConfig::default()))];
        for i in 0..10u32 {
            let mut h = Handle::new(&format!("h{i}"));
            h.add("10.244.0.0/26".parse().expect("a valid literal"), i + 1);
            writes.push(Write::Create(Record::Handle(h)));
        }
        s.commit(writes)
            .expect("the store takes a write the contract allows");
        s
    }

    fn count_of(answer: &[Versioned<Record>]) -> Option<u64> {
        match &answer.first()?.value {
            Record::Handle(h) => Some(h.total()),
            _ => None,
        }
    }

    type Answered = Result<Vec<Vec<Versioned<Record>>>, StoreError>;

    /// With the store's reads held: a lead reading h0, in flight, and `n` callers queued
    /// behind it, caller i reading `reads(i)`. The gate is left closed.
    fn queued_behind_a_lead(
        s: &Arc<Combining<Gated>>,
        n: u64,
        reads: fn(u64) -> Vec<Read>,
    ) -> (JoinHandle<Answered>, Vec<JoinHandle<(u64, Answered)>>) {
        s.inner().closed.store(true, Ordering::SeqCst);
        let lead = {
            let s = Arc::clone(s);
            std::thread::spawn(move || s.read(&[Read::Get(handle(0))]))
        };
        wait_for("the lead's read", || {
            s.inner().waiting.load(Ordering::SeqCst) == 1
        });
        let callers = (0..n)
            .map(|i| {
                let s = Arc::clone(s);
                std::thread::spawn(move || (i, s.read(&reads(i))))
            })
            .collect();
        wait_for("the callers to queue", || s.lock().queue.len() as u64 == n);
        (lead, callers)
    }

    #[test]
    fn reads_queued_behind_one_in_flight_are_one_read_and_each_gets_its_own() {
        let s = store();
        // Eight callers, caller i asking for the configuration, h(i+1), and an absent handle.
        let (lead, callers) = queued_behind_a_lead(&s, 8, |i| {
            vec![
                Read::Get(Key::Config),
                Read::Get(handle(i + 1)),
                Read::Get(Key::Handle("absent".into())),
            ]
        });
        s.inner().closed.store(false, Ordering::SeqCst);
        let lead = lead
            .join()
            .expect("the thread ends")
            .expect("the record is there");
        assert_eq!(count_of(&lead[0]), Some(1));
        for c in callers {
            let (i, answers) = c.join().expect("the thread ends");
            let answers = answers.expect("answers succeeds");
            assert_eq!(answers.len(), 3);
            assert!(matches!(answers[0][0].value, Record::Config(_)));
            assert_eq!(
                count_of(&answers[1]),
                Some(i + 2),
                "caller {i}'s own handle"
            );
            assert!(answers[2].is_empty(), "the absent handle");
        }
        assert_eq!(
            s.inner().calls.load(Ordering::SeqCst),
            2,
            "the lead's, then one for all"
        );
        assert_eq!(s.inner().largest.load(Ordering::SeqCst), 24);
    }

    #[test]
    fn a_combined_read_holds_at_most_its_worth_and_the_rest_goes_next() {
        let s = store();
        // Three callers of 30 reads each: two fit in one combined read, the third goes next.
        let (lead, callers) =
            queued_behind_a_lead(&s, 3, |i| (0..30).map(|_| Read::Get(handle(i))).collect());
        s.inner().closed.store(false, Ordering::SeqCst);
        lead.join()
            .expect("the thread ends")
            .expect("the record is there");
        for c in callers {
            let (i, answers) = c.join().expect("the thread ends");
            let answers = answers.expect("answers succeeds");
            assert_eq!(answers.len(), 30);
            assert!(answers.iter().all(|a| count_of(a) == Some(i + 1)));
        }
        assert_eq!(s.inner().calls.load(Ordering::SeqCst), 3);
        assert!(s.inner().largest.load(Ordering::SeqCst) <= COMBINED_READS);
    }

    #[test]
    fn a_failed_combined_read_fails_each_caller_and_the_next_goes() {
        let s = store();
        let (lead, callers) = queued_behind_a_lead(&s, 4, |i| vec![Read::Get(handle(i))]);
        s.inner().fail.store(true, Ordering::SeqCst);
        s.inner().closed.store(false, Ordering::SeqCst);
        assert!(lead.join().expect("the thread ends").is_err());
        for c in callers {
            assert!(
                matches!(
                    c.join().expect("the thread ends").1,
                    Err(StoreError::Unavailable { .. })
                ),
                "each caller of the combined read gets its failure"
            );
        }
        assert_eq!(s.inner().calls.load(Ordering::SeqCst), 2);
        s.inner().fail.store(false, Ordering::SeqCst);
        let again = s
            .read(&[Read::Get(handle(3))])
            .expect("the store answers a batch of reads");
        assert_eq!(
            count_of(&again[0]),
            Some(4),
            "the next read goes and is answered"
        );
        assert!(!s.lock().busy && s.lock().queue.is_empty());
    }
}
