//! Injected datastore faults: lost races are retried, persistent contention gives a clear
//! error, an unreachable store changes nothing, and threads racing on one store never hand out
//! an address twice.

mod common;

use common::*;
use ipam_core::{
    audit, AdminError, AffinityError, AssignError, AutoAssignArgs, Ipam, IpamError, ManualClock,
    Pool, StoreError,
};
use ipam_store::{Fault, FaultyStore, MemoryStore, Observed};
use std::sync::Arc;

fn faulty() -> Observed<FaultyStore<MemoryStore>> {
    let store = FaultyStore::new(MemoryStore::new(), 7);
    let ipam = Observed::new(store, Arc::new(ManualClock::new(T0)));
    ipam.create_pool(Pool::new("p", net("10.244.0.0/16")).unwrap())
        .unwrap();
    ipam
}

#[test]
fn lost_races_are_retried() {
    let ipam = faulty();
    ipam.store().schedule([Fault::Conflict; 5]);
    let a = ipam.auto_assign(&AutoAssignArgs::v4("n1", "h", 2)).unwrap();
    assert_eq!(a.v4.ips.len(), 2);
    assert_eq!(ipam.store().injected(), 5);
    ipam.store().schedule([Fault::Conflict; 3]);
    assert_eq!(ipam.release_by_handle("h").unwrap(), 2);
    assert!(audit(ipam.store().inner()).unwrap().is_empty());
}

#[test]
fn endless_contention_is_a_clear_error_and_writes_nothing() {
    let ipam = faulty();
    let before = ipam.store().inner().len();
    ipam.store().set_rates(1000, 0);
    let e = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "h", 1))
        .unwrap_err();
    assert!(
        matches!(&e, AssignError::ExcessiveContention(c) if c.attempts == 100),
        "{e}"
    );
    assert!(e.to_string().contains("excessive concurrent IPAM requests"));
    assert!(e.is_transient());
    assert_eq!(ipam.store().inner().len(), before);
}

#[test]
fn unreachable_store_changes_nothing() {
    let ipam = faulty();
    one(&ipam, "n1", "first");
    let before = ipam.store().inner().revision();
    ipam.store().schedule([Fault::Unavailable]);
    let e = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "h", 1))
        .unwrap_err();
    assert!(
        matches!(e, AssignError::Store(StoreError::Unavailable { .. })),
        "{e}"
    );
    assert_eq!(ipam.store().inner().revision(), before);
    assert!(ipam.addresses_by_handle("h").unwrap().is_empty());
    one(&ipam, "n1", "h");
    assert!(audit(ipam.store().inner()).unwrap().is_empty());
}

#[test]
fn applied_but_unacknowledged_commit_is_cleaned_by_release() {
    // The answer is lost after the store applied the commit: the caller sees an error, the
    // address is held; a release by handle (what CNI DEL does after a failed ADD) frees it.
    let ipam = faulty();
    ipam.store().schedule([Fault::AppliedButLost]);
    assert!(ipam.auto_assign(&AutoAssignArgs::v4("n1", "h", 1)).is_err());
    assert_eq!(ipam.addresses_by_handle("h").unwrap().len(), 1);
    assert!(audit(ipam.store().inner()).unwrap().is_empty());
    assert_eq!(ipam.release_by_handle("h").unwrap(), 1);
    assert!(audit(ipam.store().inner()).unwrap().is_empty());
}

#[test]
fn threads_racing_on_one_store_never_duplicate() {
    // Eight threads on four nodes (two per node) over a pool too small to avoid borrowing.
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(T0));
    let ipam = Arc::new(Ipam::new(store.clone(), clock));
    ipam.create_pool(Pool::with_block_size("p", net("10.244.0.0/23"), 27).unwrap())
        .unwrap();
    let held = racing_churn(&ipam, 8, 80, |t| format!("n{}", t % 4), |_| 1);
    assert!(held.iter().all(|(_, ips)| ips.len() == 1));
    let total = assert_distinct_and_held(&ipam, held);
    assert!(total > 300, "most requests succeed ({total})");
    assert!(audit(store.as_ref()).unwrap().is_empty());
    let u = ipam.utilisation().unwrap();
    assert_eq!(u.pools[0].in_use, total as u64);
}

/// Regression (found by the differential fuzzer): a dual-stack request whose IPv6 half fails
/// must give back its IPv4 half even when the store fails the first attempt to do so.
#[test]
fn dual_stack_undo_survives_an_outage() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new(), 3));
    let ipam = Ipam::new(store.clone(), Arc::new(ManualClock::new(T0)));
    ipam.create_pool(Pool::new("v4", net("10.244.0.0/16")).unwrap())
        .unwrap();
    ipam.create_pool(Pool::with_block_size("v6", net("fd00::/126"), 126).unwrap())
        .unwrap();
    let mut fill = AutoAssignArgs::v4("n1", "fill", 0);
    fill.num_v6 = 4;
    ipam.auto_assign(&fill).unwrap();
    // Commit 1 (the IPv4 claim) passes; commit 2 (giving it back) meets an outage.
    store.schedule([Fault::None, Fault::Unavailable]);
    let mut args = AutoAssignArgs::v4("n1", "h", 1);
    args.num_v6 = 1;
    let e = ipam.auto_assign(&args).unwrap_err();
    assert!(matches!(e, AssignError::Exhausted { .. }), "{e}");
    assert_eq!(store.injected(), 1);
    assert!(
        ipam.addresses_by_handle("h").unwrap().is_empty(),
        "IPv4 half given back"
    );
    assert!(audit(store.inner()).unwrap().is_empty());
}

/// A store whose pool listing is answered, and then, before the caller commits, another
/// creator stores an overlapping pool: the interleaving of two `create_pool` calls racing.
struct RacingPoolCreator {
    inner: Arc<MemoryStore>,
    rival: std::sync::Mutex<Option<Pool>>,
}

impl ipam_core::Datastore for RacingPoolCreator {
    fn get(
        &self,
        key: &ipam_core::Key,
    ) -> Result<Option<ipam_core::Versioned<ipam_core::Record>>, StoreError> {
        self.inner.get(key)
    }
    fn list(
        &self,
        range: &ipam_core::Range,
    ) -> Result<Vec<ipam_core::Versioned<ipam_core::Record>>, StoreError> {
        let listed = self.inner.list(range)?;
        if matches!(range, ipam_core::Range::Pools) {
            if let Some(rival) = self.rival.lock().unwrap().take() {
                let other = Ipam::new(self.inner.clone(), Arc::new(ManualClock::new(T0)));
                other.create_pool(rival).unwrap();
            }
        }
        Ok(listed)
    }
    fn commit(&self, writes: Vec<ipam_core::Write>) -> Result<ipam_core::Revision, StoreError> {
        self.inner.commit(writes)
    }
}

#[test]
fn racing_pool_creations_never_overlap() {
    let inner = Arc::new(MemoryStore::new());
    let store = RacingPoolCreator {
        inner: inner.clone(),
        rival: std::sync::Mutex::new(Some(
            Pool::with_block_size("rival", net("10.244.0.0/16"), 28).unwrap(),
        )),
    };
    let ipam = Ipam::new(store, Arc::new(ManualClock::new(T0)));
    let e = ipam
        .create_pool(Pool::new("mine", net("10.244.0.0/20")).unwrap())
        .unwrap_err();
    assert!(
        matches!(&e, AdminError::PoolExists(m) if m.contains("overlaps pool rival")),
        "{e}"
    );
    let names: Vec<String> = ipam
        .pools()
        .unwrap()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert_eq!(names, ["rival"]);
    // Creation still works when nobody races, and the config survives untouched.
    ipam.set_config(ipam_core::IpamConfig {
        strict_affinity: true,
        ..Default::default()
    })
    .unwrap();
    ipam.create_pool(Pool::new("next", net("10.245.0.0/16")).unwrap())
        .unwrap();
    assert!(ipam.config().unwrap().strict_affinity);
    assert_eq!(ipam.pools().unwrap().len(), 2);
}

#[test]
fn a_claim_bitmap_of_the_wrong_length_is_refused_not_a_panic() {
    use ipam_core::{Bitmap, Datastore, IndexChunk, Key, Record, Write};
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let a = one(&ipam, "n1", "h");
    ipam.release_by_handle("h").unwrap();
    // The pool's one chunk covers its 1,024 slots; replace it with an 8-slot bitmap.
    let key = Key::IndexChunk {
        pool: net("10.244.0.0/16"),
        chunk: 0,
    };
    let rev = ipam.store().get(&key).unwrap().unwrap().revision;
    let short = IndexChunk::from_parts(net("10.244.0.0/16"), 0, Bitmap::new(8));
    ipam.store()
        .commit(vec![Write::Update {
            record: Record::IndexChunk(short),
            expected: rev,
        }])
        .unwrap();
    // Freeing the block's slot (its index is past the bitmap's end unless the block is one of
    // the first eight) and claiming a new block both read the chunk: both refuse it.
    let freed = ipam.release_affinity(a.block, "n1", true);
    let claimed = ipam.auto_assign(&AutoAssignArgs::v4("n2", "h2", 1));
    let freed = freed.map(|_| ()).map_err(IpamError::from);
    let claimed = claimed.map(|_| ()).map_err(IpamError::from);
    for r in [freed, claimed] {
        match r {
            Err(
                IpamError::Affinity(AffinityError::Store(StoreError::Corrupt { key, reason }))
                | IpamError::Assign(AssignError::Store(StoreError::Corrupt { key, reason })),
            ) => {
                assert!(key.contains("10.244.0.0/16"), "{key}");
                assert!(
                    reason.contains("8 slots") && reason.contains("1024"),
                    "{reason}"
                );
            }
            other => panic!("expected a corrupt-record error, got {other:?}"),
        }
    }
}
