//! The sled store: the embedded, durable default.
//!
//! - Layout: one sled tree; keys per [`keys`], values per [`codec`] (docs/sled-format.md).
//! - Atomicity: under a commit lock (this process is the only writer, by the directory lock),
//!   every condition is checked (absence, or the stored revision) and the writes are applied as
//!   one sled batch, which sled applies all-or-nothing, also across a crash.
//! - Durability: a commit returns only after `flush` (fsync) covers it. Concurrent commits
//!   share a flush: whoever flushes records how far the flush reached, and the others find
//!   their commit already covered (group commit).
//! - Exclusivity: one process per directory, by a lock file waited for with a bound.
//! - Format: the store records its format version; a newer one is refused, an older one is
//!   upgraded at open, an unversioned non-empty one is refused with instructions.

pub mod codec;
pub mod keys;
mod lock;

use ipam_core::ConflictKind;
use ipam_core::{Datastore, Key, Range, Record, Revision, StoreError, Versioned, Write};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Format version of the whole store (key layout + value layout). Format 2 values may be
/// compressed ([`codec::COMPRESSED`]); format 1 values are all plain, and every one of them is
/// a format 2 value as it stands, so a format 1 store is upgraded at open by its mark alone.
pub const STORE_FORMAT: u32 = 2;

/// Opening a sled store failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the store.
    #[error("the IPAM store {path} is busy: held by {} (waited {waited:?})",
        holder.map(lock::describe).unwrap_or_else(|| "another process".into()))]
    Busy {
        /// Directory.
        path: PathBuf,
        /// PID of the holder, if known.
        holder: Option<u32>,
        /// How long we waited.
        waited: Duration,
    },
    /// The store was written by a newer release.
    #[error("the IPAM store {path} has format {found}, newer than this build's {supported}; use a newer release")]
    TooNew {
        /// Directory.
        path: PathBuf,
        /// Stored format.
        found: u32,
        /// Format this build writes.
        supported: u32,
    },
    /// The directory holds data without a format mark.
    #[error("the directory {path} holds a sled database that is not an IPAM store of a known format; move it away or point sled_path elsewhere")]
    Unknown {
        /// Directory.
        path: PathBuf,
    },
    /// Files could not be created or opened.
    #[error("cannot open the IPAM store {path}: {source}")]
    Io {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// sled refused to open the database.
    #[error("cannot open the IPAM store {path}: {reason}")]
    Sled {
        /// Directory.
        path: PathBuf,
        /// sled's message.
        reason: String,
    },
}

/// How to open a [`SledStore`].
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// How long to wait for another process to release the store.
    pub lock_timeout: Duration,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            lock_timeout: Duration::from_secs(10),
            cache_bytes: 64 << 20,
        }
    }
}

/// A durable [`Datastore`] in one sled database.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
    /// Serialises condition checks and batch application.
    commit_lock: Mutex<()>,
    /// Commits applied so far (in memory, this process).
    applied: AtomicU64,
    /// Highest `applied` value known to be on disk; the lock serialises flushes.
    flushed: Mutex<u64>,
    /// Flushes performed (to observe group commit).
    flushes: AtomicU64,
    /// Decoded records by key, each valid only while the stored value's revision matches.
    decoded: DecodeCache,
    _lock: lock::DirLock,
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: &SledOptions) -> Result<SledStore, OpenError> {
        let path = dir.as_ref().to_path_buf();
        let io = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        create_private_dir(&path).map_err(io)?;
        let lock = lock::acquire(&path, opts.lock_timeout).map_err(|e| match e {
            lock::LockError::Busy { holder, waited } => OpenError::Busy {
                path: path.clone(),
                holder,
                waited,
            },
            lock::LockError::Io(source) => OpenError::Io {
                path: path.clone(),
                source,
            },
        })?;
        // sled's own file lock can outlive our directory lock by a moment: a process that
        // has just closed the store still holds it until its background threads exit. Wait for
        // it within the same bound.
        let start = std::time::Instant::now();
        let config = sled::Config::new()
            .path(path.join("db"))
            .cache_capacity(opts.cache_bytes);
        let db = match open_waiting(&config, opts.lock_timeout) {
            Ok(db) => db,
            Err(e) if is_lock_error(&e) => {
                return Err(OpenError::Busy {
                    path,
                    holder: None,
                    waited: start.elapsed(),
                })
            }
            Err(e) => {
                return Err(OpenError::Sled {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            }
        };
        restrict_files(&path).map_err(io)?;
        let tree: sled::Tree = (*db).clone();
        let sled_err = |e: sled::Error| OpenError::Sled {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mark = || -> Result<(), OpenError> {
            tree.insert(keys::FORMAT_KEY, &STORE_FORMAT.to_be_bytes())
                .map_err(sled_err)?;
            db.flush().map_err(sled_err)?;
            Ok(())
        };
        match tree.get(keys::FORMAT_KEY).map_err(sled_err)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| OpenError::Unknown { path: path.clone() })?;
                if found > STORE_FORMAT {
                    return Err(OpenError::TooNew {
                        path,
                        found,
                        supported: STORE_FORMAT,
                    });
                }
                // An older store is upgraded by its mark alone, written before anything else,
                // so a build that reads only plain values refuses the store instead of
                // finding compressed records in it.
                if found < STORE_FORMAT {
                    mark()?;
                }
            }
            None => {
                if !tree.is_empty() {
                    return Err(OpenError::Unknown { path });
                }
                mark()?;
            }
        }
        Ok(SledStore {
            db,
            tree,
            path,
            commit_lock: Mutex::new(()),
            applied: AtomicU64::new(0),
            flushed: Mutex::new(0),
            flushes: AtomicU64::new(0),
            decoded: DecodeCache::default(),
            _lock: lock,
        })
    }

    /// Flushes everything written so far (commits are durable already; this is for shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(unavailable)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database occupies on disk, as sled reports it.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Commits applied and flushes performed since open; fewer flushes than commits means
    /// concurrent commits shared flushes.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.applied.load(Ordering::SeqCst),
            self.flushes.load(Ordering::Relaxed),
        )
    }

    /// Every record that fails to decode, with the reason (for the operator's check).
    pub fn corrupt_records(&self) -> Result<Vec<StoreError>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.range(&[0x01u8][..]..) {
            let (k, v) = kv.map_err(unavailable)?;
            if let Err(e) = codec::decode(&k, &v) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Waits until commit number `n` is on disk, sharing flushes between threads.
    fn make_durable(&self, n: u64) -> Result<(), StoreError> {
        let mut flushed = self.flushed.lock();
        if *flushed >= n {
            return Ok(());
        }
        let target = self.applied.load(Ordering::SeqCst);
        self.db.flush().map_err(|e| StoreError::Unavailable {
            reason: format!("flush failed: {e}"),
            indeterminate: true,
        })?;
        *flushed = target;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Decoding a block with many holders costs tens of microseconds (one allocation per
/// attribute string), so decoded records are kept by key and re-used while the stored value
/// carries the same revision. sled stays the source of truth: every read still fetches the
/// value and checks its revision, so the cache can never serve a stale record.
#[derive(Default)]
struct DecodeCache {
    map: parking_lot::RwLock<std::collections::HashMap<Vec<u8>, Versioned<Record>>>,
}

/// Entries kept before the cache starts over (a node's store holds far fewer blocks).
const DECODE_CACHE_ENTRIES: usize = 65_536;

impl DecodeCache {
    fn decode(&self, key: &[u8], value: &[u8]) -> Result<Versioned<Record>, StoreError> {
        let rev = codec::revision(value);
        if let Some(hit) = self.map.read().get(key) {
            if Some(hit.revision) == rev {
                return Ok(hit.clone());
            }
        }
        let rec = codec::decode(key, value)?;
        let mut map = self.map.write();
        if map.len() >= DECODE_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key.to_vec(), rec.clone());
        Ok(rec)
    }
}

impl SledStore {
    /// The decoded records of `range`'s byte bounds (a superset of the range).
    fn scan<'a>(
        &'a self,
        range: &Range,
    ) -> impl Iterator<Item = Result<Versioned<Record>, StoreError>> + 'a {
        let (start, end) = keys::bounds(range);
        self.tree.range(start..end).map(move |kv| {
            let (k, v) = kv.map_err(unavailable)?;
            self.decoded.decode(&k, &v)
        })
    }
}

/// The raw sled database of the store in `dir`, not through the store (for repair tools and
/// tests that write bytes the store would refuse). Waits up to `wait` for sled's own file
/// lock, which a store just closed in this process still holds until its background thread
/// exits.
pub fn open_raw(dir: &Path, wait: Duration) -> Result<sled::Db, sled::Error> {
    open_waiting(&sled::Config::new().path(dir.join("db")), wait)
}

/// Opens `config`'s database, retrying for up to `wait` while sled's file lock is held.
fn open_waiting(config: &sled::Config, wait: Duration) -> Result<sled::Db, sled::Error> {
    let start = std::time::Instant::now();
    loop {
        match config.open() {
            Err(e) if is_lock_error(&e) && start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(2));
            }
            r => return r,
        }
    }
}

/// sled reports its file lock being held as an I/O error of kind `Other` with this text.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

fn unavailable(e: sled::Error) -> StoreError {
    StoreError::Unavailable {
        reason: e.to_string(),
        indeterminate: false,
    }
}

impl Datastore for SledStore {
    /// Writes and flushes a small metadata record: fails while the disk is full (or sled has
    /// failed an earlier write, which it does not recover from until reopened).
    fn writable(&self) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.tree
            .insert(keys::PROBE_KEY, &now.to_be_bytes())
            .map_err(unavailable)?;
        self.db.flush().map(|_| ()).map_err(unavailable)
    }

    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        let k = keys::encode(key);
        match self.tree.get(&k).map_err(unavailable)? {
            Some(v) => self.decoded.decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        Ok(crate::collect_range(range, self.scan(range), false)?.records)
    }

    fn list_lenient(&self, range: &Range) -> Result<ipam_core::Lenient, StoreError> {
        crate::collect_range(range, self.scan(range), true)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        if writes.is_empty() {
            return Ok(Revision(0));
        }
        ipam_core::check_writes(&writes)?;
        let rev = Revision(self.db.generate_id().map_err(unavailable)? + 1);
        let mut encoded = Vec::with_capacity(writes.len());
        for w in &writes {
            let key = w.key();
            let k = keys::encode(&key);
            if encoded.iter().any(|(ek, _, _, _)| *ek == k) {
                return Err(StoreError::Rejected(format!(
                    "{key} written twice in one commit"
                )));
            }
            let (value, expected, must_exist) = match w {
                Write::Create(r) => (Some(codec::encode(r, rev)?), None, false),
                Write::Update { record, expected } => {
                    (Some(codec::encode(record, rev)?), Some(*expected), true)
                }
                Write::Delete { expected, .. } => (None, Some(*expected), true),
            };
            encoded.push((k, value, expected, (key, must_exist)));
        }
        // Conditions are checked and the batch applied under the commit lock: this process is
        // the only writer (the directory lock), so check-then-apply is atomic, and a sled batch
        // is applied all-or-nothing, also across a crash. (sled transactions give the same with
        // several times the cost.)
        let n = {
            let _guard = self.commit_lock.lock();
            let mut batch = sled::Batch::default();
            for (k, v, expected, (key, must_exist)) in &encoded {
                let cur = self.tree.get(k).map_err(unavailable)?;
                let kind = match (cur, must_exist) {
                    (Some(_), false) => Some(ConflictKind::Exists),
                    (None, true) => Some(ConflictKind::Missing),
                    (Some(v), true) if codec::revision(&v) != *expected => {
                        Some(ConflictKind::Changed)
                    }
                    _ => None,
                };
                if let Some(kind) = kind {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        kind,
                    });
                }
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                    None => batch.remove(k.as_slice()),
                }
            }
            self.tree.apply_batch(batch).map_err(unavailable)?;
            self.applied.fetch_add(1, Ordering::SeqCst) + 1
        };
        // What we just wrote is what the next read will want, decoded.
        {
            let mut map = self.decoded.map.write();
            if map.len() + writes.len() > DECODE_CACHE_ENTRIES {
                map.clear();
            }
            for (w, (k, ..)) in writes.into_iter().zip(encoded) {
                match w {
                    Write::Create(value) | Write::Update { record: value, .. } => {
                        map.insert(
                            k,
                            Versioned {
                                value,
                                revision: rev,
                            },
                        );
                    }
                    Write::Delete { .. } => {
                        map.remove(&k);
                    }
                }
            }
        }
        self.make_durable(n)?;
        Ok(rev)
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// sled creates its files with the process umask; the directory is 0700 already, and files are
/// narrowed to 0600 (sub-directories 0700) at every open.
fn restrict_files(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
            restrict_files(&p)?;
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
