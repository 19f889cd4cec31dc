//! Group commit of one node's concurrent auto-assignments: requests that queue while one runs
//! are served with one read and one commit when the node's block holds them, the rest one by
//! one; a lost race or an outage on the shared commit never hands out an address twice, loses
//! one, or answers a request whose write did not happen.

mod common;

use common::*;
use ipam_core::{
    audit, AssignError, AutoAssignArgs, AutoAssignResult, Datastore, Ipam, Key, ManualClock, Pool,
    PoolRef, Range, Read, Record, ReleaseError, Revision, StoreError, Versioned, Write,
};
use ipam_store::{Fault, FaultyStore, MemoryStore};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A store whose commits wait while the gate is closed, counting reads (calls), commits and
/// waiters.
struct Gated<S> {
    inner: S,
    closed: AtomicBool,
    waiting: AtomicUsize,
    commits: AtomicUsize,
    reads: AtomicUsize,
    /// Commits of more writes than this are refused (as etcd bounds a transaction); 0: none.
    max_writes: AtomicUsize,
    /// The next commit of more than two writes (a batch) panics, as a bug in a store would.
    panic_batch: AtomicBool,
    /// The next commit panics, whatever it writes.
    panic_next: AtomicBool,
}

impl<S: Datastore> Datastore for Gated<S> {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list(range)
    }
    fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(reads)
    }
    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while self.closed.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.commits.fetch_add(1, Ordering::SeqCst);
        if writes.len() > 2 && self.panic_batch.swap(false, Ordering::SeqCst) {
            panic!("the store fails a batch's commit");
        }
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("the store fails a commit");
        }
        let max = self.max_writes.load(Ordering::SeqCst);
        if max > 0 && writes.len() > max {
            return Err(StoreError::Rejected(format!(
                "{} writes in one commit, at most {max}",
                writes.len()
            )));
        }
        self.inner.commit(writes)
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

type Store = Arc<Gated<FaultyStore<MemoryStore>>>;

/// An engine on a gated, fault-injecting store with `pools` (name, cidr, block size), and one
/// address already taken for node `n1` (so the engine knows n1's block).
fn engine(pools: &[(&str, &str, u8)]) -> (Arc<Ipam<Store>>, Store) {
    let (ipam, store, _) = engine_and_clock(pools);
    (ipam, store)
}

/// [`engine`], with the clock the engine reads.
fn engine_and_clock(pools: &[(&str, &str, u8)]) -> (Arc<Ipam<Store>>, Store, Arc<ManualClock>) {
    let store = Arc::new(Gated {
        inner: FaultyStore::new(MemoryStore::new(), 11),
        closed: AtomicBool::new(false),
        waiting: AtomicUsize::new(0),
        commits: AtomicUsize::new(0),
        reads: AtomicUsize::new(0),
        max_writes: AtomicUsize::new(0),
        panic_batch: AtomicBool::new(false),
        panic_next: AtomicBool::new(false),
    });
    let clock = Arc::new(ManualClock::new(T0));
    let ipam = Arc::new(Ipam::new(store.clone(), clock.clone()));
    for (name, cidr, bs) in pools {
        ipam.create_pool(Pool::with_block_size(name, net(cidr), *bs).unwrap())
            .unwrap();
    }
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "first", 1))
        .unwrap();
    (ipam, store, clock)
}

/// Holds the store's commits, runs `lead` until its commit waits, then queues `burst` behind
/// it and opens the gate. Returns the lead's outcome, then the burst's, in order, and the
/// number of commits made from the gate's closing on.
fn burst(
    ipam: &Arc<Ipam<Store>>,
    store: &Store,
    lead: AutoAssignArgs,
    burst: Vec<AutoAssignArgs>,
) -> (Vec<Result<AutoAssignResult, AssignError>>, usize) {
    store.closed.store(true, Ordering::SeqCst);
    let before = store.commits.load(Ordering::SeqCst);
    let n = burst.len();
    let mut threads = Vec::new();
    let i = ipam.clone();
    threads.push(std::thread::spawn(move || i.auto_assign(&lead)));
    wait_for("the lead's commit", || {
        store.waiting.load(Ordering::SeqCst) == 1
    });
    for args in burst {
        let i = ipam.clone();
        threads.push(std::thread::spawn(move || i.auto_assign(&args)));
    }
    wait_for("the burst to queue", || ipam.queued_assignments("n1") == n);
    store.closed.store(false, Ordering::SeqCst);
    let out = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (out, store.commits.load(Ordering::SeqCst) - before)
}

fn ips(r: &AutoAssignResult) -> Vec<std::net::IpAddr> {
    r.v4.ips.iter().chain(&r.v6.ips).map(|a| a.ip).collect()
}

/// Every outcome's addresses are distinct, held by its handle and by nothing else, and the
/// store is consistent.
fn check(
    ipam: &Ipam<Store>,
    store: &Store,
    handles: &[String],
    outs: &[Result<AutoAssignResult, AssignError>],
) {
    let mut seen = BTreeSet::new();
    for (h, o) in handles.iter().zip(outs) {
        let mut got = match o {
            Ok(r) => ips(r),
            Err(_) => Vec::new(),
        };
        for ip in &got {
            assert!(seen.insert(*ip), "{ip} handed out twice");
        }
        let mut held = ipam.addresses_by_handle(h).unwrap();
        got.sort();
        held.sort();
        assert_eq!(got, held, "handle {h} holds what it was given");
    }
    consistent(store);
}

/// The store passes every invariant check.
fn consistent(store: &Store) {
    let problems = audit(store.inner.inner()).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A second engine on the same store: another process writing the same records.
fn another_engine(store: &Store) -> Ipam<Store> {
    Ipam::new(store.clone(), Arc::new(ManualClock::new(T0)))
}

/// One address on n1 for `handle`, assigned by another engine on `store`: whatever this
/// engine keeps of n1's block is stale afterwards.
fn assigned_elsewhere(store: &Store, handle: &str) -> Vec<std::net::IpAddr> {
    ips(&another_engine(store)
        .auto_assign(&AutoAssignArgs::v4("n1", handle, 1))
        .unwrap())
}

/// Requests for `n` pods `pod0`, `pod1`, ... on n1, pod i asking for `count(i)` addresses.
fn pods(n: usize, count: fn(usize) -> usize) -> Vec<AutoAssignArgs> {
    (0..n)
        .map(|i| AutoAssignArgs::v4("n1", &format!("pod{i}"), count(i)))
        .collect()
}

fn handles_of(lead: &AutoAssignArgs, burst: &[AutoAssignArgs]) -> Vec<String> {
    std::iter::once(lead)
        .chain(burst)
        .map(|a| a.handle_id.clone())
        .collect()
}

#[test]
fn a_burst_for_one_node_is_one_commit() {
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    let lead = AutoAssignArgs::v4("n1", "lead", 1);
    let queued = pods(7, |i| 1 + i % 2);
    let handles = handles_of(&lead, &queued);
    let (outs, commits) = burst(&ipam, &store, lead, queued);
    assert_eq!(
        commits, 2,
        "the lead's commit, then one for the seven queued"
    );
    let blocks: BTreeSet<_> = outs
        .iter()
        .flat_map(|o| o.as_ref().unwrap().v4.ips.iter().map(|a| a.block))
        .collect();
    assert_eq!(blocks.len(), 1, "all from n1's block");
    let total: usize = outs.iter().map(|o| ips(o.as_ref().unwrap()).len()).sum();
    assert_eq!(
        total,
        1 + 4 + 3 * 2,
        "the lead one, four pods one, three pods two"
    );
    check(&ipam, &store, &handles, &outs);
    // Each request can be released on its own, guarded by its own sequence number.
    let a = outs[3].as_ref().unwrap().v4.ips[0];
    let out = ipam
        .release_ips(&[ipam_core::ReleaseRequest::guarded(a.ip, "pod2", a.seq)])
        .unwrap();
    assert_eq!(out.released.len(), 1, "{out:?}");
}

#[test]
fn callers_whose_leader_panicked_serve_themselves() {
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    store.closed.store(true, Ordering::SeqCst);
    let i = ipam.clone();
    let lead = std::thread::spawn(move || i.auto_assign(&AutoAssignArgs::v4("n1", "lead", 1)));
    wait_for("the lead's commit", || {
        store.waiting.load(Ordering::SeqCst) == 1
    });
    // Three queue behind it; the first of them to lead panics in the batch's commit.
    let (tx, rx) = std::sync::mpsc::channel();
    for k in 0..3 {
        let (i, tx) = (ipam.clone(), tx.clone());
        std::thread::spawn(move || {
            let h = format!("q{k}");
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                i.auto_assign(&AutoAssignArgs::v4("n1", &h, 1))
            }));
            let _ = tx.send((h, out.map_err(|_| ())));
        });
    }
    wait_for("three to queue", || ipam.queued_assignments("n1") == 3);
    store.panic_batch.store(true, Ordering::SeqCst);
    store.closed.store(false, Ordering::SeqCst);
    assert!(lead.join().unwrap().is_ok());
    let mut served = 0;
    for _ in 0..3 {
        let (h, out) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every queued caller returns (none sleeps on forever)");
        // The leader's own call fails with the panic, and its commit wrote nothing.
        let got = out.map_or_else(|()| Vec::new(), |r| ips(&r.expect("served alone")));
        served += usize::from(!got.is_empty());
        assert_eq!(ipam.addresses_by_handle(&h).unwrap(), got, "{h}");
    }
    assert_eq!(served, 2, "the two the panicked leader had taken");
    consistent(&store);
}

#[test]
fn a_commit_that_panics_leaves_nothing_half_changed_kept() {
    // An assignment and a release from the lane's kept block, each failing in the store's
    // commit: neither the address taken nor the one freed may stay in what the lane keeps,
    // where the next commit under the kept revision would write it.
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    let assign = |h: &str| ipam.auto_assign(&AutoAssignArgs::v4("n1", h, 1));
    let kept = ipam.assignments_without_read();
    let a = ips(&assign("a").unwrap());
    assign("b").unwrap();
    assert!(
        ipam.assignments_without_read() > kept,
        "served from the kept block"
    );
    let panicked = |f: &dyn Fn()| {
        store.panic_next.store(true, Ordering::SeqCst);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        assert!(out.is_err(), "the commit panicked");
    };
    panicked(&|| {
        let _ = assign("lost");
    });
    panicked(&|| {
        let _ = ipam.release_by_handle("a");
    });
    let c = ips(&assign("c").unwrap());
    assert!(ipam.addresses_by_handle("lost").unwrap().is_empty());
    assert_eq!(
        ipam.addresses_by_handle("a").unwrap(),
        a,
        "a still holds its address"
    );
    assert_ne!(c, a, "c got an address of its own");
    consistent(&store);
    assert_eq!(ipam.release_by_handle("a").unwrap(), 1);
    consistent(&store);
}

#[test]
fn what_the_block_cannot_hold_goes_one_by_one() {
    // /29 blocks: n1's block has 8 addresses, 1 taken by `first`, 1 by the lead: 6 left.
    let (ipam, store) = engine(&[("p", "10.244.0.0/24", 29)]);
    let lead = AutoAssignArgs::v4("n1", "lead", 1);
    let queued = pods(5, |_| 2);
    let handles = handles_of(&lead, &queued);
    let (outs, commits) = burst(&ipam, &store, lead, queued);
    let blocks: BTreeSet<_> = outs
        .iter()
        .flat_map(|o| o.as_ref().unwrap().v4.ips.iter().map(|a| a.block))
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "the rest claimed a second block: {blocks:?}"
    );
    // lead; one batch of three (6 addresses); then one claim and one assign for the last two.
    assert_eq!(commits, 4);
    check(&ipam, &store, &handles, &outs);
}

#[test]
fn requests_of_other_shapes_get_what_they_would_alone() {
    let (ipam, store) = engine(&[
        ("p", "10.244.0.0/16", 26),
        ("q", "10.245.0.0/16", 26),
        ("v6", "fd00::/120", 122),
    ]);
    let lead = AutoAssignArgs::v4("n1", "lead", 1);
    let mut dual = AutoAssignArgs::v4("n1", "dual", 1);
    dual.num_v6 = 1;
    let mut other_pool = AutoAssignArgs::v4("n1", "other", 1);
    other_pool.v4_pools = vec![PoolRef::from("q")];
    let mut unknown = AutoAssignArgs::v4("n1", "unknown", 1);
    unknown.v4_pools = vec![PoolRef::from("nope")];
    let queued = vec![
        AutoAssignArgs::v4("n1", "a", 1),
        dual,
        other_pool,
        unknown,
        AutoAssignArgs::v4("n1", "a", 1), // the same handle again
        AutoAssignArgs::v4("n1", "b", 1),
    ];
    let handles = handles_of(&lead, &queued);
    let (outs, _) = burst(&ipam, &store, lead, queued);
    let dual = outs[2].as_ref().unwrap();
    assert_eq!((dual.v4.ips.len(), dual.v6.ips.len()), (1, 1));
    let other = outs[3].as_ref().unwrap();
    assert!(net("10.245.0.0/16").contains(other.v4.ips[0].ip));
    assert!(
        matches!(outs[4], Err(AssignError::UnknownPool(_))),
        "{:?}",
        outs[4]
    );
    assert_eq!(ipam.addresses_by_handle("a").unwrap().len(), 2);
    let mut handles = handles;
    handles.remove(5); // "a" twice: checked above
    let mut outs = outs;
    let second_a = outs.remove(5);
    assert!(second_a.is_ok());
    let a = ips(outs[1].as_ref().unwrap())
        .into_iter()
        .chain(ips(second_a.as_ref().unwrap()))
        .collect::<BTreeSet<_>>();
    assert_eq!(a.len(), 2);
    outs[1] = Ok(AutoAssignResult::default());
    handles[1] = "none".into();
    check(&ipam, &store, &handles, &outs);
}

#[test]
fn a_lost_race_on_the_batch_commit_is_served_again() {
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    // The lead commits; the batch's commit loses to "another writer".
    store.inner.schedule([Fault::None, Fault::Conflict]);
    let lead = AutoAssignArgs::v4("n1", "lead", 1);
    let queued = pods(4, |_| 1);
    let handles = handles_of(&lead, &queued);
    let (outs, commits) = burst(&ipam, &store, lead, queued);
    assert!(outs.iter().all(Result::is_ok), "{outs:?}");
    assert_eq!(
        commits, 4,
        "lead, the lost batch, the first alone, then the other three together"
    );
    assert_eq!(store.inner.injected(), 1);
    check(&ipam, &store, &handles, &outs);
}

#[test]
fn an_outage_on_the_batch_commit_fails_each_and_writes_nothing() {
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    store.inner.schedule([Fault::None, Fault::Unavailable]);
    let lead = AutoAssignArgs::v4("n1", "lead", 1);
    let queued = pods(4, |_| 1);
    let handles = handles_of(&lead, &queued);
    let (outs, _) = burst(&ipam, &store, lead, queued);
    assert!(outs[0].is_ok());
    for o in &outs[1..] {
        assert!(
            matches!(o, Err(AssignError::Store(StoreError::Unavailable { .. }))),
            "{o:?}"
        );
    }
    check(&ipam, &store, &handles, &outs);
    assert_eq!(ipam.utilisation().unwrap().pools[0].in_use, 2);
}

#[test]
fn many_threads_on_one_node_with_faults_never_duplicate() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new(), 5));
    let ipam = Arc::new(Ipam::new(store.clone(), Arc::new(ManualClock::new(T0))));
    ipam.create_pool(Pool::with_block_size("p", net("10.244.0.0/24"), 28).unwrap())
        .unwrap();
    store.set_rates(100, 0);
    let held = racing_churn(&ipam, 8, 60, |_| "n1".to_string(), |i| 1 + i % 2);
    let total = assert_distinct_and_held(&ipam, held);
    assert!(total > 100, "most requests succeed ({total})");
    store.set_rates(0, 0);
    assert!(audit(store.inner()).unwrap().is_empty());
    assert_eq!(ipam.utilisation().unwrap().pools[0].in_use, total as u64);
}

#[test]
fn a_queued_request_for_a_handle_that_holds_is_refused_as_alone() {
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    let mut repeat = AutoAssignArgs::v4("n1", "first", 1);
    repeat.only_if_unheld = true;
    let queued = vec![
        AutoAssignArgs::v4("n1", "pod0", 1),
        repeat,
        AutoAssignArgs::v4("n1", "pod1", 1),
    ];
    let (outs, _) = burst(&ipam, &store, AutoAssignArgs::v4("n1", "lead", 1), queued);
    assert!(
        matches!(&outs[2], Err(AssignError::HandleHolds(h)) if h == "first"),
        "{:?}",
        outs[2]
    );
    assert_eq!(ipam.addresses_by_handle("first").unwrap().len(), 1);
    let handles: Vec<String> = ["lead", "pod0", "pod1"].map(String::from).to_vec();
    let served = vec![outs[0].clone(), outs[1].clone(), outs[3].clone()];
    check(&ipam, &store, &handles, &served);
}

/// An engine whose last batch for n1 (a lead and three queued) committed, so it keeps that
/// batch's context; with the handles given out so far.
fn after_a_batch() -> (Arc<Ipam<Store>>, Store, Arc<ManualClock>, Vec<String>) {
    let (ipam, store, clock) = engine_and_clock(&[("p", "10.244.0.0/16", 26)]);
    let lead = AutoAssignArgs::v4("n1", "lead", 1);
    let queued = pods(3, |_| 1);
    let handles = handles_of(&lead, &queued);
    let (outs, _) = burst(&ipam, &store, lead, queued);
    check(&ipam, &store, &handles, &outs);
    (ipam, store, clock, handles)
}

/// Runs one request alone; its outcome, and the reads and commits it made.
fn alone(
    ipam: &Ipam<Store>,
    store: &Store,
    args: &AutoAssignArgs,
) -> (Result<AutoAssignResult, AssignError>, usize, usize) {
    let (out, (reads, commits)) = reads_and_commits(store, || ipam.auto_assign(args));
    (out, reads, commits)
}

/// What `f` returns, and the reads and commits it made.
fn reads_and_commits<T>(store: &Store, f: impl FnOnce() -> T) -> (T, (usize, usize)) {
    let (r0, c0) = (
        store.reads.load(Ordering::SeqCst),
        store.commits.load(Ordering::SeqCst),
    );
    let out = f();
    (
        out,
        (
            store.reads.load(Ordering::SeqCst) - r0,
            store.commits.load(Ordering::SeqCst) - c0,
        ),
    )
}

#[test]
fn after_a_batch_the_next_request_is_served_without_a_read() {
    let (ipam, store, _, mut handles) = after_a_batch();
    let before = ipam.assignments_without_read();
    let mut outs = Vec::new();
    for i in 0..3 {
        let args = AutoAssignArgs::v4("n1", &format!("next{i}"), 1 + i % 2);
        let (out, reads, commits) = alone(&ipam, &store, &args);
        assert_eq!((reads, commits), (0, 1), "request {i}: no read, one commit");
        handles.push(args.handle_id);
        outs.push(out);
    }
    assert_eq!(ipam.assignments_without_read() - before, 3);
    let given: Vec<_> = handles[4..]
        .iter()
        .map(|h| ipam.addresses_by_handle(h).unwrap().len())
        .collect();
    assert_eq!(given, vec![1, 2, 1]);
    check(&ipam, &store, &handles[4..], &outs);
}

#[test]
fn a_kept_context_serves_a_bounded_number_of_batches() {
    let (ipam, store, _, _) = after_a_batch();
    let before = ipam.assignments_without_read();
    let mut read_at = Vec::new();
    let bound = ipam_core::CARRY_USES as usize;
    // Each released again (it keeps the context as committed), so the block never fills.
    let rounds = 2 * bound + 8;
    for i in 0..rounds {
        let handle = format!("m{i}");
        let (out, reads, _) = alone(&ipam, &store, &AutoAssignArgs::v4("n1", &handle, 1));
        assert!(out.is_ok(), "{out:?}");
        if reads > 0 {
            read_at.push(i);
        }
        assert_eq!(ipam.release_by_handle(&handle).unwrap(), 1);
    }
    assert!(read_at.len() >= 2 && read_at[0] < bound, "{read_at:?}");
    for pair in read_at.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            bound + 1,
            "a read, then {bound} served from it: {read_at:?}"
        );
    }
    assert_eq!(
        ipam.assignments_without_read() - before,
        (rounds - read_at.len()) as u64
    );
}

#[test]
fn an_old_kept_context_is_read_again() {
    let (ipam, store, clock, _) = after_a_batch();
    let before = ipam.assignments_without_read();
    clock.advance(ipam_core::CARRY_AGE_NS + 1);
    let (out, reads, _) = alone(&ipam, &store, &AutoAssignArgs::v4("n1", "late", 1));
    assert!(out.is_ok(), "{out:?}");
    assert!(reads > 0, "a context older than the bound is not used");
    assert_eq!(ipam.assignments_without_read(), before);
}

#[test]
fn a_lone_request_leaves_its_context_for_the_next() {
    // No batch: the node's second request reads and keeps what it read, the third reads nothing.
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    let (second, reads, commits) = alone(&ipam, &store, &AutoAssignArgs::v4("n1", "second", 1));
    assert!(second.is_ok(), "{second:?}");
    assert_eq!((reads, commits), (1, 1), "one read, one commit");
    let (third, reads, commits) = alone(&ipam, &store, &AutoAssignArgs::v4("n1", "third", 1));
    assert!(third.is_ok(), "{third:?}");
    assert_eq!((reads, commits), (0, 1), "no read, one commit");
    assert_eq!(ipam.assignments_without_read(), 1);
    check(
        &ipam,
        &store,
        &["second".to_string(), "third".to_string()],
        &[second, third],
    );
}

#[test]
fn a_release_through_the_engine_keeps_the_context_current() {
    let (ipam, store, _, handles) = after_a_batch();
    let before = ipam.assignments_without_read();
    let retries = ipam.commit_retries();
    // A release of a batch's address (a CNI DEL through the same service) rewrites the kept
    // block: the lane keeps what the release committed.
    let freed = ipam.addresses_by_handle(&handles[2]).unwrap();
    assert_eq!(ipam.release_by_handle(&handles[2]).unwrap(), 1);
    let (out, reads, commits) = alone(&ipam, &store, &AutoAssignArgs::v4("n1", "after", 1));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(
        (reads, commits),
        (0, 1),
        "no read, no commit lost on a stale block"
    );
    assert_eq!(ipam.commit_retries(), retries);
    assert_eq!(ipam.assignments_without_read() - before, 1);
    // The release stands: its address is free in the store, and the new one is held once.
    assert!(ipam.addresses_by_handle(&handles[2]).unwrap().is_empty());
    let got = ipam.addresses_by_handle("after").unwrap();
    assert_eq!(got.len(), 1);
    for ip in freed.iter().filter(|ip| !got.contains(ip)) {
        assert!(ipam.allocation(*ip).unwrap().is_none(), "{ip} still held");
    }
    consistent(&store);
}

#[test]
fn a_pool_written_through_the_engine_makes_the_next_request_read() {
    let (ipam, store, _, _) = after_a_batch();
    let before = ipam.assignments_without_read();
    ipam.create_pool(Pool::with_block_size("q", net("10.245.0.0/16"), 26).unwrap())
        .unwrap();
    let (out, reads, commits) = alone(&ipam, &store, &AutoAssignArgs::v4("n1", "after", 1));
    assert!(out.is_ok(), "{out:?}");
    assert!(reads > 0, "pools changed: the kept context is not used");
    assert_eq!(commits, 1);
    assert_eq!(ipam.assignments_without_read(), before);
}

#[test]
fn releases_racing_kept_requests_never_duplicate() {
    // Requests served from the kept context and releases of the same block, from several
    // threads at once: every commit is guarded, whichever way the races go.
    let (ipam, store, _, _) = after_a_batch();
    let mut threads = Vec::new();
    for t in 0..4 {
        let ipam = ipam.clone();
        threads.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            for i in 0..40 {
                let h = format!("r{t}-{i}");
                if ipam.auto_assign(&AutoAssignArgs::v4("n1", &h, 1)).is_ok() {
                    held.push(h);
                }
                if i % 3 == 0 {
                    if let Some(h) = held.pop() {
                        ipam.release_by_handle(&h).unwrap();
                    }
                }
            }
            held
        }));
    }
    let held: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let mut all: Vec<_> = held
        .iter()
        .flat_map(|h| ipam.addresses_by_handle(h).unwrap())
        .collect();
    let n = all.len();
    assert_eq!(n, held.len(), "each live handle holds its one address");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no address held twice");
    consistent(&store);
}

#[test]
fn a_write_by_another_engine_fails_the_kept_commit_and_is_served_after_a_read() {
    let (ipam, store, _, _) = after_a_batch();
    // Another process writes n1's block: it releases "pod0"'s address.
    let other = another_engine(&store);
    assert_eq!(other.release_by_handle("pod0").unwrap(), 1);
    let retries = ipam.commit_retries();
    let args = AutoAssignArgs::v4("n1", "after", 1);
    let (out, reads, commits) = alone(&ipam, &store, &args);
    let got = ips(out.as_ref().unwrap());
    assert_eq!(
        commits, 2,
        "the kept context's commit lost, then one after a read"
    );
    assert!(reads > 0);
    assert_eq!(ipam.commit_retries(), retries + 1);
    // The other engine's release stands: nothing was written over it from the stale copy.
    assert!(ipam.addresses_by_handle("pod0").unwrap().is_empty());
    assert_eq!(ipam.addresses_by_handle("after").unwrap(), got);
    consistent(&store);
}

#[test]
fn a_kept_context_still_refuses_a_handle_that_holds() {
    let (ipam, store, _, _) = after_a_batch();
    let mut repeat = AutoAssignArgs::v4("n1", "lead", 1);
    repeat.only_if_unheld = true;
    let (out, _, _) = alone(&ipam, &store, &repeat);
    assert!(
        matches!(&out, Err(AssignError::HandleHolds(h)) if h == "lead"),
        "{out:?}"
    );
    assert_eq!(ipam.addresses_by_handle("lead").unwrap().len(), 1);
    // A second address for a handle that holds (a pod's second interface) is still given.
    let (out, _, _) = alone(&ipam, &store, &AutoAssignArgs::v4("n1", "lead", 1));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(ipam.addresses_by_handle("lead").unwrap().len(), 2);
    consistent(&store);
}

#[test]
fn a_release_from_a_stale_kept_block_loses_its_race_and_reads() {
    let (ipam, store, _, handles) = after_a_batch();
    // Another process assigns in n1's block: the block this engine keeps is now stale.
    let theirs = assigned_elsewhere(&store, "theirs");
    assert_eq!(ipam.addresses_by_handle("theirs").unwrap(), theirs);
    // Released from the kept copy, the commit's condition fails; after a read it succeeds,
    // and nothing of the other engine's write is lost.
    let commits = store.commits.load(Ordering::SeqCst);
    let retries = ipam.commit_retries();
    assert_eq!(ipam.release_by_handle(&handles[1]).unwrap(), 1);
    assert_eq!(
        store.commits.load(Ordering::SeqCst) - commits,
        2,
        "one lost on the stale copy, one after a read"
    );
    assert_eq!(
        ipam.commit_retries(),
        retries + 1,
        "the lost race is counted"
    );
    assert!(ipam.addresses_by_handle(&handles[1]).unwrap().is_empty());
    assert_eq!(ipam.addresses_by_handle("theirs").unwrap(), theirs);
    consistent(&store);
}

#[test]
fn a_kept_block_that_does_not_show_the_handle_is_not_trusted() {
    let (ipam, store, _, _) = after_a_batch();
    // Another process gives "late" an address in n1's block; this engine's kept copy does not
    // show it, so releasing "late" from that copy would free nothing and drop the handle.
    let late = assigned_elsewhere(&store, "late");
    let commits = store.commits.load(Ordering::SeqCst);
    assert_eq!(ipam.release_by_handle("late").unwrap(), 1);
    assert_eq!(
        store.commits.load(Ordering::SeqCst) - commits,
        1,
        "the store read at once, no race lost"
    );
    assert!(ipam.addresses_by_handle("late").unwrap().is_empty());
    assert!(
        ipam.allocation(late[0]).unwrap().is_none(),
        "the address is free"
    );
    consistent(&store);
}

/// Four threads start and stop pods on one node through one engine, each stop made by
/// `release`: it holds the node's lane like an assignment does, so none of their commits loses
/// a race to another.
fn releases_and_assignments_take_turns(release: fn(&Ipam<Arc<MemoryStore>>, &str)) {
    let store = Arc::new(MemoryStore::new());
    let ipam = Arc::new(Ipam::new(store.clone(), Arc::new(ManualClock::new(T0))));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "first", 1))
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                let mut last: Option<String> = None;
                for i in 0..100 {
                    let h = format!("t{t}-{i}");
                    ipam.auto_assign(&AutoAssignArgs::v4("n1", &h, 1)).unwrap();
                    if let Some(prev) = last.replace(h) {
                        release(&ipam, &prev);
                    }
                }
                last
            })
        })
        .collect();
    let held: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ipam.commit_retries(), 0, "no commit lost a race");
    let mut all: Vec<_> = held
        .iter()
        .chain(std::iter::once(&"first".to_string()))
        .flat_map(|h| ipam.addresses_by_handle(h).unwrap())
        .collect();
    assert_eq!(all.len(), 5, "each live handle holds its one address");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "no address held twice");
    let problems = audit(&*store).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_nodes_releases_by_handle_and_assignments_take_turns() {
    releases_and_assignments_take_turns(|ipam, h| {
        assert_eq!(ipam.release_by_handle(h).unwrap(), 1);
    });
}

#[test]
fn a_nodes_guarded_releases_and_assignments_take_turns() {
    // As a CNI DEL releases: each address guarded by its handle and sequence number.
    releases_and_assignments_take_turns(|ipam, h| {
        let reqs: Vec<_> = ipam
            .allocations_of_handle(h)
            .unwrap()
            .iter()
            .map(|a| ipam_core::ReleaseRequest::guarded(a.ip, h, a.seq))
            .collect();
        assert_eq!(reqs.len(), 1);
        let out = ipam.release_ips(&reqs).unwrap();
        assert_eq!(out.released.len(), 1, "{out:?}");
    });
}

#[test]
fn a_nodes_held_releases_and_assignments_take_turns() {
    // As a CNI DEL now releases: what the handle holds, from one read of it.
    releases_and_assignments_take_turns(|ipam, h| {
        assert_eq!(ipam.release_held(&[h], move |_| true).unwrap().len(), 1);
    });
}

/// Two interfaces of one container under one handle, told apart by an attribute.
fn two_interfaces(ipam: &Ipam<Store>, handle: &str) -> (std::net::IpAddr, std::net::IpAddr) {
    let mut out = Vec::new();
    for ifname in ["eth0", "eth1"] {
        let mut args = AutoAssignArgs::v4("n1", handle, 1);
        args.attrs.insert("ifname".into(), ifname.into());
        out.push(ips(&ipam.auto_assign(&args).unwrap())[0]);
    }
    (out[0], out[1])
}

#[test]
fn a_held_release_frees_what_it_selects_from_the_kept_block() {
    let (ipam, store, _, _) = after_a_batch();
    let (eth0, eth1) = two_interfaces(&ipam, "c1");
    // The second interface's handle existed: served one by one, which drops the kept
    // context; the next request keeps it again.
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "next", 1))
        .unwrap();
    let (released, calls) = reads_and_commits(&store, || {
        ipam.release_held(&["c1", "absent"], move |a| {
            a.attrs.get("ifname") == Some("eth0")
        })
        .unwrap()
    });
    assert_eq!(released, vec![eth0]);
    assert_eq!(
        calls,
        (1, 1),
        "the handles read, the kept block used, one commit"
    );
    assert_eq!(ipam.addresses_by_handle("c1").unwrap(), vec![eth1]);
    assert!(
        ipam.allocation(eth0).unwrap().is_none(),
        "eth0's address is free"
    );
    // The handle still counts eth1's address: releasing it empties and deletes the handle.
    assert_eq!(
        ipam.release_held(&["c1"], move |_| true).unwrap(),
        vec![eth1]
    );
    assert!(ipam.addresses_by_handle("c1").unwrap().is_empty());
    assert!(ipam
        .release_held(&["c1"], move |_| true)
        .unwrap()
        .is_empty());
    consistent(&store);
}

#[test]
fn a_held_release_from_a_stale_kept_block_falls_back_and_loses_nothing() {
    let (ipam, store, _, handles) = after_a_batch();
    let theirs = assigned_elsewhere(&store, "theirs");
    let retries = ipam.commit_retries();
    let mine = ipam.addresses_by_handle(&handles[1]).unwrap();
    assert_eq!(
        ipam.release_held(&[&handles[1]], move |_| true).unwrap(),
        mine
    );
    assert_eq!(
        ipam.commit_retries(),
        retries + 1,
        "the lost race is counted"
    );
    assert!(ipam.addresses_by_handle(&handles[1]).unwrap().is_empty());
    assert_eq!(ipam.addresses_by_handle("theirs").unwrap(), theirs);
    // A handle only the other engine wrote: this engine's kept copy does not show it.
    assert_eq!(
        ipam.release_held(&["theirs"], move |_| true).unwrap(),
        theirs
    );
    assert!(ipam.allocation(theirs[0]).unwrap().is_none());
    consistent(&store);
}

#[test]
fn a_held_release_across_blocks_releases_everything_selected() {
    // Blocks of 4 addresses: a handle of 6 holds addresses in more than one block.
    let (ipam, store) = engine(&[("p", "10.244.0.0/24", 30)]);
    let got = ips(&ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "wide", 6))
        .unwrap());
    assert_eq!(got.len(), 6);
    let mut released = ipam.release_held(&["wide"], move |_| true).unwrap();
    released.sort();
    let mut want = got.clone();
    want.sort();
    assert_eq!(released, want);
    assert!(ipam.addresses_by_handle("wide").unwrap().is_empty());
    consistent(&store);
}

#[test]
fn a_held_release_does_not_trust_a_kept_block_that_does_not_show_the_handle() {
    let (ipam, store, _, _) = after_a_batch();
    // "late" is given an address by another process; the kept copy does not show it, and
    // releasing from that copy would free nothing.
    let late = assigned_elsewhere(&store, "late");
    let (released, calls) = reads_and_commits(&store, || {
        ipam.release_held(&["late"], move |_| true).unwrap()
    });
    assert_eq!(released, late);
    assert_eq!(
        calls,
        (2, 1),
        "the handle, then the block from the store; one commit, no race lost"
    );
    assert!(
        ipam.allocation(late[0]).unwrap().is_none(),
        "the address is free"
    );
    consistent(&store);
}

/// A node with a full older block (pods `old0`..`old63`) and a newer one in use.
fn node_with_an_older_block() -> (Arc<Ipam<Arc<MemoryStore>>>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let ipam = Arc::new(Ipam::new(store.clone(), Arc::new(ManualClock::new(T0))));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    for i in 0..64 {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("old{i}"), 1))
            .unwrap();
    }
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "new", 1))
        .unwrap();
    let old = ipam.allocations_of_handle("old0").unwrap()[0].block;
    let new = ipam.allocations_of_handle("new").unwrap()[0].block;
    assert_ne!(old, new, "the first block filled; the node moved on");
    (ipam, store)
}

#[test]
fn releases_in_an_older_block_take_turns_and_start_from_the_last() {
    let (ipam, store) = node_with_an_older_block();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                for i in (t..64).step_by(4) {
                    let h = format!("old{i}");
                    assert_eq!(ipam.release_held(&[&h], move |_| true).unwrap().len(), 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        ipam.commit_retries(),
        0,
        "releases in one block through one engine take turns"
    );
    for i in 0..64 {
        assert!(ipam
            .addresses_by_handle(&format!("old{i}"))
            .unwrap()
            .is_empty());
    }
    assert_eq!(ipam.addresses_by_handle("new").unwrap().len(), 1);
    let problems = audit(&*store).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_release_in_an_older_block_leaves_it_for_the_next() {
    let store = Arc::new(ipam_store::Counting::new(MemoryStore::new()));
    let ipam = Ipam::new(store.clone(), Arc::new(ManualClock::new(T0)));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    for i in 0..65 {
        ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("old{i}"), 1))
            .unwrap();
    }
    store.take();
    ipam.release_held(&["old1"], move |_| true).unwrap();
    assert_eq!(
        store.take(),
        ipam_store::Calls::new(1, 1, 1),
        "the first release in the older block: the handle, the block, one commit"
    );
    ipam.release_held(&["old2"], move |_| true).unwrap();
    assert_eq!(
        store.take(),
        ipam_store::Calls::new(0, 1, 1),
        "the next starts from the block the first committed: the handle, one commit"
    );
    assert!(ipam.addresses_by_handle("old1").unwrap().is_empty());
    assert!(ipam.addresses_by_handle("old2").unwrap().is_empty());
    assert_eq!(ipam.commit_retries(), 0);
    let problems = audit(&*store).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A release of what handles hold, as `release_held` takes it: the handles, and which of
/// their allocations to take.
type HeldReq = (
    Vec<String>,
    Arc<dyn Fn(&ipam_core::Allocation) -> bool + Send + Sync>,
);

/// Everything `handle` holds.
fn all_of(handle: &str) -> HeldReq {
    (vec![handle.to_string()], Arc::new(|_| true))
}

fn release_held<S: Datastore>(
    ipam: &Ipam<S>,
    (ids, select): HeldReq,
) -> Result<Vec<IpAddr>, ReleaseError> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ipam.release_held(&ids, move |a| select(a))
}

/// A release run on its own thread.
type Job<T> = Box<dyn FnOnce(&Ipam<Store>) -> T + Send>;

/// [`burst`] for releases: `lead` waits in its commit while `burst` queues behind it in n1's
/// lane. The outcomes in order, and the commits made from the gate's closing on.
fn releases_queued<T: Send + 'static>(
    ipam: &Arc<Ipam<Store>>,
    store: &Store,
    lead: Job<T>,
    burst: Vec<Job<T>>,
) -> (Vec<T>, usize) {
    store.closed.store(true, Ordering::SeqCst);
    let before = store.commits.load(Ordering::SeqCst);
    let n = burst.len();
    let mut threads = Vec::new();
    let i = ipam.clone();
    threads.push(std::thread::spawn(move || lead(&i)));
    wait_for("the lead's commit", || {
        store.waiting.load(Ordering::SeqCst) == 1
    });
    for job in burst {
        let i = ipam.clone();
        threads.push(std::thread::spawn(move || job(&i)));
    }
    wait_for("the burst to queue", || ipam.queued_releases() == n);
    store.closed.store(false, Ordering::SeqCst);
    let out = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (out, store.commits.load(Ordering::SeqCst) - before)
}

/// [`releases_queued`] of releases of what handles hold (a CNI DEL's).
fn release_burst(
    ipam: &Arc<Ipam<Store>>,
    store: &Store,
    lead: HeldReq,
    burst: Vec<HeldReq>,
) -> (Vec<Result<Vec<IpAddr>, ReleaseError>>, usize) {
    let job = |req: HeldReq| -> Job<_> { Box::new(move |ipam| release_held(ipam, req)) };
    releases_queued(ipam, store, job(lead), burst.into_iter().map(job).collect())
}

/// An engine with n1 holding `first` and pods `pod0`..: one address each, by pod.
fn pods_held(n: usize) -> (Arc<Ipam<Store>>, Store, Vec<IpAddr>) {
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    let given = pods(n, |_| 1)
        .iter()
        .map(|a| ips(&ipam.auto_assign(a).unwrap())[0])
        .collect();
    (ipam, store, given)
}

/// Pods `pod0`.. of [`pods_held`] hold nothing, their addresses `given` are free, `first`
/// alone is left, and the store is consistent.
fn all_pods_released(ipam: &Ipam<Store>, store: &Store, given: &[IpAddr]) {
    for (i, ip) in given.iter().enumerate() {
        assert!(ipam
            .addresses_by_handle(&format!("pod{i}"))
            .unwrap()
            .is_empty());
        assert!(ipam.allocation(*ip).unwrap().is_none(), "{ip} is free");
    }
    assert_eq!(
        ipam.utilisation().unwrap().pools[0].in_use,
        1,
        "first is left"
    );
    consistent(store);
}

#[test]
fn a_burst_of_releases_for_one_node_is_one_commit() {
    let (ipam, store, given) = pods_held(8);
    let batched = ipam.batched_releases();
    let queued = (1..8).map(|i| all_of(&format!("pod{i}"))).collect();
    let (outs, commits) = release_burst(&ipam, &store, all_of("pod0"), queued);
    assert_eq!(
        commits, 2,
        "the lead's commit, then one for the seven queued"
    );
    assert_eq!(ipam.batched_releases() - batched, 7);
    for (i, (out, ip)) in outs.iter().zip(&given).enumerate() {
        assert_eq!(
            out.as_ref().unwrap(),
            &vec![*ip],
            "pod{i} gets its own address back"
        );
    }
    all_pods_released(&ipam, &store, &given);
}

#[test]
fn releases_of_one_handle_in_a_burst_each_take_their_own() {
    let (ipam, store, _) = pods_held(1);
    let (eth0, eth1) = two_interfaces(&ipam, "c1");
    let interface = |name: &'static str| -> HeldReq {
        (
            vec!["c1".to_string()],
            Arc::new(move |a| a.attrs.get("ifname") == Some(name)),
        )
    };
    let queued = vec![interface("eth0"), interface("eth1")];
    let (outs, _) = release_burst(&ipam, &store, all_of("pod0"), queued);
    // The second names the first's handle: it takes the long way after the batch.
    assert_eq!(outs[1].as_ref().unwrap(), &vec![eth0]);
    assert_eq!(outs[2].as_ref().unwrap(), &vec![eth1]);
    assert!(ipam.addresses_by_handle("c1").unwrap().is_empty());
    consistent(&store);
}

#[test]
fn a_lost_race_on_a_batch_of_releases_takes_the_long_way() {
    let (ipam, store, given) = pods_held(5);
    // The lead commits; the batch's commit loses to "another writer".
    store.inner.schedule([Fault::None, Fault::Conflict]);
    let retries = ipam.commit_retries();
    let queued = (1..5).map(|i| all_of(&format!("pod{i}"))).collect();
    let (outs, _) = release_burst(&ipam, &store, all_of("pod0"), queued);
    assert_eq!(store.inner.injected(), 1);
    assert!(ipam.commit_retries() > retries, "the lost race is counted");
    for (out, ip) in outs.iter().zip(&given) {
        assert_eq!(out.as_ref().unwrap(), &vec![*ip]);
        assert!(ipam.allocation(*ip).unwrap().is_none(), "{ip} is free");
    }
    consistent(&store);
}

#[test]
fn an_outage_on_a_batch_of_releases_fails_each_and_frees_nothing() {
    let (ipam, store, given) = pods_held(4);
    store.inner.schedule([Fault::None, Fault::Unavailable]);
    let queued = (1..4).map(|i| all_of(&format!("pod{i}"))).collect();
    let (outs, _) = release_burst(&ipam, &store, all_of("pod0"), queued);
    assert_eq!(outs[0].as_ref().unwrap(), &vec![given[0]]);
    for (i, out) in outs.iter().enumerate().skip(1) {
        assert!(
            matches!(
                out,
                Err(ReleaseError::Store(StoreError::Unavailable { .. }))
            ),
            "{out:?}"
        );
        let h = format!("pod{i}");
        assert_eq!(
            ipam.addresses_by_handle(&h).unwrap(),
            vec![given[i]],
            "still held"
        );
    }
    consistent(&store);
    // Asked again (as a runtime retries DEL), each is released.
    for (i, ip) in given.iter().enumerate().skip(1) {
        assert_eq!(
            release_held(&ipam, all_of(&format!("pod{i}"))).unwrap(),
            vec![*ip]
        );
    }
    consistent(&store);
}

#[test]
fn releases_and_assignments_racing_in_batches_never_lose_or_duplicate() {
    // Several threads on one node assign and release what they hold (by the CNI DEL's path),
    // so releases queue behind assignments and each other: every address is held by its
    // handle once, and nothing a release reported stays held.
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut freed = Vec::new();
                for i in 0..60 {
                    let h = format!("r{t}-{i}");
                    ipam.auto_assign(&AutoAssignArgs::v4("n1", &h, 1)).unwrap();
                    held.push(h);
                    if i % 2 == 1 {
                        let h = held.remove(0);
                        freed.extend(release_held(&ipam, all_of(&h)).unwrap());
                        assert!(ipam.addresses_by_handle(&h).unwrap().is_empty());
                    }
                }
                (held, freed.len())
            })
        })
        .collect();
    let mut live = Vec::new();
    let mut freed = 0;
    for t in threads {
        let (held, n) = t.join().unwrap();
        live.extend(held);
        freed += n;
    }
    assert_eq!(freed, 6 * 30, "each release freed its one address");
    let mut all: Vec<_> = live
        .iter()
        .flat_map(|h| ipam.addresses_by_handle(h).unwrap())
        .collect();
    assert_eq!(
        all.len(),
        live.len(),
        "each live handle holds its one address"
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), live.len(), "no address held twice");
    assert_eq!(
        ipam.utilisation().unwrap().pools[0].in_use,
        1 + live.len() as u64
    );
    consistent(&store);
}

#[test]
fn releases_by_handle_queued_behind_a_release_are_one_commit() {
    let (ipam, store, given) = pods_held(6);
    let by_handle = |i: usize| -> Job<Result<usize, ReleaseError>> {
        Box::new(move |ipam| ipam.release_by_handle(&format!("pod{i}")))
    };
    let (outs, commits) =
        releases_queued(&ipam, &store, by_handle(0), (1..6).map(by_handle).collect());
    assert_eq!(
        commits, 2,
        "the lead's commit, then one for the five queued"
    );
    assert!(outs.iter().all(|o| *o == Ok(1)), "{outs:?}");
    all_pods_released(&ipam, &store, &given);
}

#[test]
fn a_queued_release_by_handle_of_two_blocks_releases_both() {
    // Blocks of 4 addresses: "wide" holds addresses in two blocks; its release queues for
    // the first, then releases the other alone.
    let (ipam, store) = engine(&[("p", "10.244.0.0/24", 30)]);
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "lead", 1))
        .unwrap();
    let wide = ips(&ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "wide", 5))
        .unwrap());
    assert_eq!(wide.len(), 5);
    let job = |h: &'static str| -> Job<Result<usize, ReleaseError>> {
        Box::new(move |ipam| ipam.release_by_handle(h))
    };
    let (outs, _) = releases_queued(&ipam, &store, job("lead"), vec![job("wide")]);
    assert_eq!(outs, vec![Ok(1), Ok(5)]);
    for ip in wide {
        assert!(ipam.allocation(ip).unwrap().is_none(), "{ip} is free");
    }
    assert!(ipam.addresses_by_handle("wide").unwrap().is_empty());
    consistent(&store);
}

#[test]
fn batched_releases_under_lost_races_outages_and_lost_answers_never_lose_or_duplicate() {
    // As above, on a store that refuses 10% of commits as lost races, 5% as outages, and
    // applies 5% but loses the answer, and fails 5% of reads. Whatever each call answered,
    // the store ends consistent: no address held twice, each handle holds at most its one,
    // a release that succeeded left its handle holding nothing.
    let store = Arc::new(FaultyStore::new(MemoryStore::new(), 17));
    let ipam = Arc::new(Ipam::new(store.clone(), Arc::new(ManualClock::new(T0))));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    store.set_rates(100, 50);
    store.set_lost_and_read_rates(50, 50);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let ipam = ipam.clone();
            std::thread::spawn(move || {
                let (mut held, mut freed) = (Vec::new(), Vec::new());
                for i in 0..80 {
                    let h = format!("r{t}-{i}");
                    // Failed or not, the handle may hold an address (a lost answer).
                    let _ = ipam.auto_assign(&AutoAssignArgs::v4("n1", &h, 1));
                    held.push(h);
                    if i % 2 == 1 {
                        let h = held.remove(0);
                        let out = if i % 4 == 1 {
                            release_held(&ipam, all_of(&h)).map(|ips| ips.len())
                        } else {
                            ipam.release_by_handle(&h)
                        };
                        match out {
                            Ok(_) => freed.push(h),
                            Err(_) => held.push(h),
                        }
                    }
                }
                (held, freed)
            })
        })
        .collect();
    let (mut maybe, mut freed) = (Vec::new(), Vec::new());
    for t in threads {
        let (h, f) = t.join().unwrap();
        maybe.extend(h);
        freed.extend(f);
    }
    store.set_rates(0, 0);
    store.set_lost_and_read_rates(0, 0);
    assert!(freed.len() > 100, "most releases succeed ({})", freed.len());
    for h in &freed {
        assert!(
            ipam.addresses_by_handle(h).unwrap().is_empty(),
            "{h} was released"
        );
    }
    let mut all = Vec::new();
    for h in &maybe {
        let got = ipam.addresses_by_handle(h).unwrap();
        assert!(got.len() <= 1, "{h} holds {got:?}");
        all.extend(got);
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no address held twice");
    assert_eq!(
        ipam.utilisation().unwrap().pools[0].in_use,
        n as u64,
        "nothing else is held"
    );
    assert!(audit(store.inner()).unwrap().is_empty());
}

#[test]
fn a_batch_of_releases_too_large_for_one_commit_is_released_one_by_one() {
    let (ipam, store, given) = pods_held(6);
    // The batch's commit (the block and five handles) is refused; each release's own (the
    // block and its handle) is not.
    store.max_writes.store(3, Ordering::SeqCst);
    let queued = (1..6).map(|i| all_of(&format!("pod{i}"))).collect();
    let (outs, commits) = release_burst(&ipam, &store, all_of("pod0"), queued);
    assert!(
        commits > 2,
        "the refused batch, then one by one ({commits})"
    );
    for (i, (out, ip)) in outs.iter().zip(&given).enumerate() {
        assert_eq!(out.as_ref().unwrap(), &vec![*ip], "pod{i}");
        assert!(ipam.allocation(*ip).unwrap().is_none(), "{ip} is free");
    }
    consistent(&store);
}

#[test]
fn a_burst_of_assignments_too_large_for_one_commit_is_served_one_by_one() {
    let (ipam, store) = engine(&[("p", "10.244.0.0/16", 26)]);
    store.max_writes.store(3, Ordering::SeqCst);
    let lead = AutoAssignArgs::v4("n1", "lead", 1);
    let queued = pods(5, |_| 1);
    let handles = handles_of(&lead, &queued);
    let (outs, _) = burst(&ipam, &store, lead, queued);
    assert!(outs.iter().all(Result::is_ok), "{outs:?}");
    check(&ipam, &store, &handles, &outs);
}
