//! Implementations of `ipam_core::Datastore`.
//!
//! - [`SledStore`]: the embedded default: one sled database per node, atomic multi-record
//!   commits, durable (fsync, shared between concurrent commits) before a commit returns.
//! - `EtcdStore` (feature `etcd`): the cluster-wide store on etcd v3, one transaction per
//!   commit comparing `mod_revision`.
//! - [`MemoryStore`]: every record in one ordered map behind a lock; the reference semantics
//!   for tests, benchmarks and simulations. Not durable.
//! - [`Combining`]: wraps a networked store so that concurrent batched reads share one
//!   request (the etcd store as [`StoreSpec`] opens it).
//! - [`FaultyStore`]: wraps any store and injects conflicts and failures on a schedule, so
//!   tests can prove the algorithms retry and never corrupt state.
//! - [`StoreSpec`]: names a store (sled, etcd with TLS, memory) and opens it; every binary
//!   opens its store through it.
//! - [`Observed`]: an engine with a handle on its store, for tests and benches that inspect or
//!   disturb the store under it (the engine gives no access to it).
//! - [`SystemClock`]: the wall clock, for binaries (the core never reads time itself).
//!
//! Not here: CNI parsing, the allocation algorithms (ipam-core).

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

/// Inside a wrapper's `impl Datastore`: the provided methods that concern the wrapped store
/// itself (whether it can write, its record layout), passed to `self.inner` as they are.
macro_rules! pass_to_inner {
    () => {
        fn writable(&self) -> Result<(), ipam_core::StoreError> {
            self.inner.writable()
        }
        fn layout(&self) -> Result<Option<ipam_core::LayoutStatus>, ipam_core::StoreError> {
            self.inner.layout()
        }
        fn set_layout(
            &self,
            layout: ipam_core::RecordLayout,
        ) -> Result<ipam_core::LayoutStatus, ipam_core::StoreError> {
            self.inner.set_layout(layout)
        }
        fn watch(
            &self,
            ranges: &[ipam_core::Range],
        ) -> Result<Option<ipam_core::Feed>, ipam_core::StoreError> {
            self.inner.watch(ranges)
        }
    };
}

mod combining;
#[cfg(feature = "conformance")]
pub mod conformance;
mod counting;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
mod etcd_watch;
mod faulty;
mod memory;
mod observed;
mod reopening;
pub mod sled;
mod spec;
pub mod stored;

pub use combining::{Combining, COMBINED_READS};
pub use counting::{Calls, Counting};
pub use faulty::{Fault, FaultyStore};
pub use memory::MemoryStore;
pub use observed::Observed;
pub use reopening::{Reopening, RETRY_EVERY};
pub use sled::{OpenError, SledOptions, SledStore};
pub use spec::{EtcdSpec, SpecOpenError, StoreSpec, DEFAULT_ETCD_PREFIX};

use ipam_core::Lenient;
use ipam_core::{Clock, Range, Record, StoreError, Versioned};

/// Keeps the decoded records that fall in `range`, in order. A record that does not decode
/// fails the listing, or, when `lenient`, is set aside in `Lenient::corrupt`; any other error
/// fails it. Shared by the stores whose scans may hold undecodable bytes.
pub(crate) fn collect_range(
    range: &Range,
    items: impl Iterator<Item = Result<Versioned<Record>, StoreError>>,
    lenient: bool,
) -> Result<Lenient, StoreError> {
    let mut out = Lenient::default();
    for item in items {
        match item {
            Ok(rec) if range.contains(&rec.value.key()) => out.records.push(rec),
            Ok(_) => {}
            Err(e @ StoreError::Corrupt { .. }) if lenient => out.corrupt.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The system clock (ns since the Unix epoch).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}
