//! Time, injected: the core never reads the system clock.

use std::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time in nanoseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now, in ns.
    fn now_ns(&self) -> u64;
}

/// A clock that moves only when told to; for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ns`.
    pub fn new(ns: u64) -> ManualClock {
        ManualClock(AtomicU64::new(ns))
    }

    /// Moves the clock forward.
    pub fn advance(&self, ns: u64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, ns: u64) {
        self.0.store(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}
