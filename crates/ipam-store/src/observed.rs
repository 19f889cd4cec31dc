//! An engine together with its store, for tests, benches and simulations that must look at or
//! disturb the store under the engine (inject faults, plant corrupt records, count flushes).
//! The engine itself gives no access to its store: everything else goes through its queries.

use ipam_core::{Clock, Datastore, Ipam, IpamOptions};
use std::ops::Deref;
use std::sync::Arc;

/// An [`Ipam`] over a shared store, keeping a handle on that store. Derefs to the engine.
pub struct Observed<S> {
    ipam: Ipam<Arc<S>>,
    store: Arc<S>,
}

impl<S: Datastore> Observed<S> {
    /// An engine over `store`.
    pub fn new(store: S, clock: Arc<dyn Clock>) -> Self {
        Self::with_options(store, clock, IpamOptions::default())
    }

    /// An engine over `store` with the given options.
    pub fn with_options(store: S, clock: Arc<dyn Clock>, opts: IpamOptions) -> Self {
        let store = Arc::new(store);
        Observed {
            ipam: Ipam::with_options(Arc::clone(&store), clock, opts),
            store,
        }
    }

    /// The store under the engine.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The engine.
    pub fn ipam(&self) -> &Ipam<Arc<S>> {
        &self.ipam
    }
}

impl<S> Deref for Observed<S> {
    type Target = Ipam<Arc<S>>;
    fn deref(&self) -> &Ipam<Arc<S>> {
        &self.ipam
    }
}
