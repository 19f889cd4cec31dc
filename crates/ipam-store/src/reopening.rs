//! A store that reopens itself after it failed: for a long-running process (the node service)
//! on the sled store, which stops working for good after one failed write (a full disk) until
//! it is reopened.
//!
//! Guarantees: a failed operation leaves the store marked broken; the next operation (at most
//! one attempt per [`RETRY_EVERY`]) drops the broken store, which releases its directory
//! lock, and opens it again from disk, so only what was durable survives, and nothing that
//! failed was acknowledged. While it cannot be reopened every operation fails with
//! `Unavailable` naming why, and [`Datastore::writable`] says so.

use crate::spec::StoreSpec;
use ipam_core::{Datastore, Key, Range, Record, Revision, StoreError, Versioned, Write};
use ipam_core::{Lenient, Read};
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The least time between two reopen attempts.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// See the module docs.
pub struct Reopening {
    spec: StoreSpec,
    inner: RwLock<Option<Box<dyn Datastore>>>,
    broken: AtomicBool,
    /// When the last reopen was tried, and why the store is broken.
    state: Mutex<(Option<Instant>, String)>,
}

impl Reopening {
    /// Wraps `store`, opened from `spec`.
    pub fn new(spec: StoreSpec, store: Box<dyn Datastore>) -> Reopening {
        Reopening {
            spec,
            inner: RwLock::new(Some(store)),
            broken: AtomicBool::new(false),
            state: Mutex::new((None, String::new())),
        }
    }

    /// Whether the store is marked broken (a failed operation, not yet reopened).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    fn failed(&self, why: String) -> StoreError {
        StoreError::Unavailable {
            reason: format!("the store failed and cannot be reopened yet: {why}"),
            indeterminate: false,
        }
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if !self.is_broken() {
            return Ok(());
        }
        if state.0.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return Err(self.failed(state.1.clone()));
        }
        state.0 = Some(Instant::now());
        let mut inner = self.inner.write();
        // The broken store holds the directory lock: it goes first.
        *inner = None;
        match self.spec.open(Duration::from_secs(2)) {
            Ok(s) => {
                *inner = Some(s);
                self.broken.store(false, Ordering::SeqCst);
                tracing::info!(store = %self.spec, "store reopened after a failure");
                Ok(())
            }
            Err(e) => {
                state.1 = e.to_string();
                Err(self.failed(state.1.clone()))
            }
        }
    }

    fn with<T>(
        &self,
        op: impl FnOnce(&dyn Datastore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.is_broken() {
            self.reopen()?;
        }
        let inner = self.inner.read();
        let Some(store) = inner.as_deref() else {
            return Err(self.failed(self.state.lock().1.clone()));
        };
        let r = op(store);
        if let Err(StoreError::Unavailable { reason, .. }) = &r {
            let mut state = self.state.lock();
            if !self.broken.swap(true, Ordering::SeqCst) {
                tracing::warn!(store = %self.spec, error = %reason, "store operation failed; it will be reopened");
                state.1 = reason.clone();
            }
        }
        r
    }
}

impl Datastore for Reopening {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        self.with(|s| s.get(key))
    }
    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        self.with(|s| s.list(range))
    }
    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        self.with(|s| s.commit(writes))
    }
    fn list_lenient(&self, range: &Range) -> Result<Lenient, StoreError> {
        self.with(|s| s.list_lenient(range))
    }
    fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        self.with(|s| s.read(reads))
    }
    fn writable(&self) -> Result<(), StoreError> {
        self.with(|s| s.writable())
    }
    fn layout(&self) -> Result<Option<ipam_core::LayoutStatus>, StoreError> {
        self.with(|s| s.layout())
    }
    fn set_layout(
        &self,
        layout: ipam_core::RecordLayout,
    ) -> Result<ipam_core::LayoutStatus, StoreError> {
        self.with(|s| s.set_layout(layout))
    }
    fn watch(&self, ranges: &[Range]) -> Result<Option<ipam_core::Feed>, StoreError> {
        self.with(|s| s.watch(ranges))
    }
}
