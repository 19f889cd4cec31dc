//! One way to name and open a store: [`StoreSpec`], used by the plugin, the node service,
//! `ipamctl` and the simulator alike, so they cannot disagree about TLS settings, prefixes or
//! whether a missing store is created.

use crate::{MemoryStore, OpenError, SledOptions, SledStore};
use ipam_core::Datastore;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default etcd key prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/calico-ipam/v1/";

/// An etcd v3 store: endpoints, key prefix and Calico's TLS keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdSpec {
    /// Endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix; `None` is [`DEFAULT_ETCD_PREFIX`].
    pub prefix: Option<String>,
    /// CA certificate file (`etcd_ca_cert_file`).
    pub ca_cert_file: Option<String>,
    /// Client certificate file (`etcd_cert_file`).
    pub cert_file: Option<String>,
    /// Client key file (`etcd_key_file`).
    pub key_file: Option<String>,
}

impl EtcdSpec {
    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(DEFAULT_ETCD_PREFIX)
    }
}

/// Which store, and how to open it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded sled store in this directory.
    Sled {
        /// Directory.
        path: PathBuf,
        /// Create the store when the directory holds none. Read-only tools say `false`, so a
        /// mistyped path is an error instead of a new empty store.
        create: bool,
    },
    /// etcd v3 (built with the `etcd` feature).
    Etcd(EtcdSpec),
    /// A fresh in-memory store (tests, simulations).
    Memory,
}

/// Opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SpecOpenError {
    /// The sled store could not be opened (busy, too new, not ours, I/O).
    #[error(transparent)]
    Sled(#[from] OpenError),
    /// No store at the path and the caller asked not to create one.
    #[error("there is no IPAM store at {0} (check --sled-path or the network config's sled_path)")]
    Missing(PathBuf),
    /// etcd could not be reached or its TLS files read.
    #[error("{0}")]
    Etcd(String),
    /// The store answered but refuses this build (its records are in a layout this build
    /// cannot read): waiting does not help.
    #[error("{0}")]
    Refused(String),
    /// This build has no etcd support.
    #[error("this build has no etcd support (built without the etcd feature); use the sled store")]
    NoEtcd,
}

impl SpecOpenError {
    /// True when waiting may help (the store is busy or etcd unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SpecOpenError::Sled(OpenError::Busy { .. }) | SpecOpenError::Etcd(_)
        )
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Sled { path, .. } => write!(f, "sled:{}", path.display()),
            StoreSpec::Etcd(e) => write!(f, "etcd:{}{}", e.endpoints.join(","), e.prefix()),
            StoreSpec::Memory => f.write_str("memory"),
        }
    }
}

impl StoreSpec {
    /// A sled store that is created when missing.
    pub fn sled(path: impl Into<PathBuf>) -> StoreSpec {
        StoreSpec::Sled {
            path: path.into(),
            create: true,
        }
    }

    /// What identifies the store across processes: the canonical directory for sled, the
    /// sorted endpoints and prefix for etcd. Two specs with the same identity name one store.
    pub fn identity(&self) -> String {
        match self {
            StoreSpec::Sled { path, .. } => {
                let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                format!("sled:{}", p.display())
            }
            StoreSpec::Etcd(e) => {
                let mut eps: Vec<&str> = e
                    .endpoints
                    .iter()
                    .map(|s| s.trim_end_matches('/'))
                    .collect();
                eps.sort_unstable();
                format!("etcd:{}{}", eps.join(","), e.prefix())
            }
            StoreSpec::Memory => "memory".into(),
        }
    }

    /// Opens the store. `wait` bounds the wait for a sled store another process holds and
    /// the time spent reaching etcd.
    pub fn open(&self, wait: Duration) -> Result<Box<dyn Datastore>, SpecOpenError> {
        match self {
            StoreSpec::Sled { path, create } => {
                if !create && !path.join("db").exists() {
                    return Err(SpecOpenError::Missing(path.clone()));
                }
                let s = SledStore::open(
                    path,
                    &SledOptions {
                        lock_timeout: wait,
                        ..Default::default()
                    },
                )?;
                Ok(Box::new(s))
            }
            StoreSpec::Etcd(e) => open_etcd(e, wait),
            StoreSpec::Memory => Ok(Box::new(MemoryStore::new())),
        }
    }
}

#[cfg(feature = "etcd")]
fn open_etcd(e: &EtcdSpec, wait: Duration) -> Result<Box<dyn Datastore>, SpecOpenError> {
    use crate::etcd::{EtcdOptions, EtcdStore};
    let o = EtcdOptions {
        endpoints: e.endpoints.clone(),
        prefix: e.prefix().to_string(),
        retry_budget: wait,
        ca_cert_file: e.ca_cert_file.clone(),
        cert_file: e.cert_file.clone(),
        key_file: e.key_file.clone(),
        ..Default::default()
    };
    // Concurrent reads share one request (a node's burst of DELs reads its handles at once).
    EtcdStore::connect(o)
        .map(|s| Box::new(crate::Combining::new(s)) as Box<dyn Datastore>)
        .map_err(|e| match e {
            crate::etcd::EtcdOpenError::UnknownLayout { .. } => {
                SpecOpenError::Refused(e.to_string())
            }
            e => SpecOpenError::Etcd(e.to_string()),
        })
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(_: &EtcdSpec, _: Duration) -> Result<Box<dyn Datastore>, SpecOpenError> {
    Err(SpecOpenError::NoEtcd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_spec_never_creates_a_store() {
        let d = tempfile::tempdir().expect("a temporary directory");
        let p = d.path().join("nothing-here");
        let spec = StoreSpec::Sled {
            path: p.clone(),
            create: false,
        };
        assert!(matches!(
            spec.open(Duration::from_secs(1)),
            Err(SpecOpenError::Missing(_))
        ));
        assert!(!p.exists());
        drop(
            StoreSpec::sled(&p)
                .open(Duration::from_secs(1))
                .expect("the store opens"),
        );
        assert!(spec.open(Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn identities_name_one_store() {
        let d = tempfile::tempdir().expect("a temporary directory");
        let a = StoreSpec::sled(d.path());
        let b = StoreSpec::sled(d.path().join("."));
        assert_eq!(a.identity(), b.identity());
        let e1 = StoreSpec::Etcd(EtcdSpec {
            endpoints: vec!["http://b:2379".into(), "http://a:2379/".into()],
            ..Default::default()
        });
        let e2 = StoreSpec::Etcd(EtcdSpec {
            endpoints: vec!["http://a:2379".into(), "http://b:2379".into()],
            prefix: Some(DEFAULT_ETCD_PREFIX.into()),
            ..Default::default()
        });
        assert_eq!(e1.identity(), e2.identity());
        assert_ne!(a.identity(), e1.identity());
    }
}
