//! The etcd v3 store: the cluster-wide datastore, for every node's plugin and service.
//!
//! - Keys: a prefix (default `/calico-ipam/v1/`) followed by the same byte layout as the sled
//!   store (docs/sled-format.md), so ranges are etcd range reads in the core's key order.
//! - Values: the sled value layout with its revision field unused; a record's revision is
//!   etcd's `mod_revision` of its key.
//! - Commits: one etcd transaction. `Create` compares `create_revision == 0`, `Update` and
//!   `Delete` compare `mod_revision == expected`; all puts and deletes run only if every
//!   comparison holds. When one fails, the transaction's else-branch reads the keys, and the
//!   conflict names the first key whose condition failed.
//! - Layout: the prefix's mark (`<prefix>\x00layout`, `plain` or `compressed`) names the
//!   value layout every writer uses, so nodes on builds that read only plain values keep
//!   working until the operator switches (`Datastore::set_layout`, `ipamctl layout`). A new
//!   prefix is marked compressed, one that already holds records plain. Every commit also
//!   compares the mark's revision: a writer that read the mark before a switch fails that
//!   comparison and encodes its writes again, so none lands in a layout switched away from.
//!   A mark this build does not know is refused at connect and at commit.
//! - Reads are serializable (served by the member asked, without a consensus round): a stale
//!   read can only make the following compare-and-swap fail and be retried, never let a write
//!   through, because every write compares revisions.
//! - Failures: unreachable etcd, timeouts and leader changes are retried with back-off within
//!   `retry_budget`, then reported as `StoreError::Unavailable` (CNI code 11). A commit whose
//!   answer was lost reports `indeterminate: true`; retrying it is safe because its
//!   comparisons fail if it did apply.
//! - The client is async; this store owns a current-thread tokio runtime and blocks on each
//!   call, so the core stays synchronous (docs/ARCHITECTURE.md). The waiting caller drives the
//!   connection (no hop to a runtime thread and back); nothing runs between calls, so the
//!   client must keep no watch or lease of its own. [`Datastore::watch`] runs its watches on
//!   a connection, runtime and thread of their own (`etcd_watch`).

use crate::sled::{codec, keys};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, TxnOpResponse,
};
use ipam_core::{ConflictKind, LayoutStatus, Lenient, RecordLayout};
use ipam_core::{Datastore, Key, Range, Read, Record, Revision, StoreError, Versioned, Write};
use std::time::{Duration, Instant};

/// Reads per read-only transaction; etcd refuses transactions of more than 128 operations by
/// default (`--max-txn-ops`).
const READS_PER_TXN: usize = 64;

/// Keys per page of a range read.
const RANGE_PAGE: i64 = 128;

/// The largest answer a page may be: etcd keeps values under 1.5 MiB by default
/// (`--max-request-bytes`), so a page of [`RANGE_PAGE`] values fits, with room for keys.
const MAX_PAGE_BYTES: usize = 128 * (3 << 19) + (4 << 20);

/// The largest answer of a batched read, which lists whole ranges in one snapshot: protobuf's
/// own limit (2 GiB; at a few KiB per block, hundreds of thousands of blocks).
pub(crate) const MAX_SNAPSHOT_BYTES: usize = 0x7fff_ffff;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: String,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Total time a call may spend retrying transient failures.
    pub retry_budget: Duration,
    /// CA certificate file (Calico's `etcd_ca_cert_file`).
    pub ca_cert_file: Option<String>,
    /// Client certificate file (`etcd_cert_file`).
    pub cert_file: Option<String>,
    /// Client key file (`etcd_key_file`).
    pub key_file: Option<String>,
    /// Keys per page of a listing (at most 128, whose values fit one answer; fewer only
    /// to test paging).
    pub range_page: i64,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/calico-ipam/v1/".into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            retry_budget: Duration::from_secs(20),
            ca_cert_file: None,
            cert_file: None,
            key_file: None,
            range_page: RANGE_PAGE,
        }
    }
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdOpenError {
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    Tls {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("cannot start the etcd client runtime: {0}")]
    Runtime(std::io::Error),
    /// etcd could not be reached within the budget.
    #[error("cannot reach etcd at {endpoints:?}: {reason}")]
    Unreachable {
        /// Endpoints tried.
        endpoints: Vec<String>,
        /// Last error.
        reason: String,
    },
    /// The records are written in a layout this build cannot read.
    #[error("the records under {prefix} are written in the layout {found:?}, which this build cannot read; use a newer release")]
    UnknownLayout {
        /// Key prefix.
        prefix: String,
        /// The layout's name as stored.
        found: String,
    },
    /// The layout could not be settled (etcd failed while the first node marked it).
    #[error("cannot settle the record layout under {prefix}: {source}")]
    Layout {
        /// Key prefix.
        prefix: String,
        /// Cause.
        source: StoreError,
    },
}

/// A [`Datastore`] on etcd v3.
pub struct EtcdStore {
    rt: tokio::runtime::Runtime,
    client: Client,
    opts: EtcdOptions,
    /// Listings started again because etcd compacted their revision under them.
    restarts: std::sync::atomic::AtomicU64,
    /// The layout mark's full key.
    mark: Vec<u8>,
    /// The layout mark as this store last read it.
    seen: parking_lot::Mutex<Seen>,
}

/// Under the prefix, the key naming the layout every writer uses (outside the records' keys,
/// which start at 0x01, as the sled store's metadata).
const LAYOUT_KEY: &[u8] = b"\x00layout";

/// A record's key starts with its kind, a control byte (metadata 0x00, records from 0x01), so
/// a store's records lie from `prefix 0x01` up to `prefix 0x20`; a longer prefix nested in
/// this one goes on with text and is another store's.
pub const RECORD_KEYS: std::ops::Range<u8> = 0x01..0x20;

/// How many times a commit is encoded again because the layout changed under it.
const LAYOUT_RETRIES: usize = 3;

/// The layout mark: its layout (`None`: a name this build does not know) and its
/// `mod_revision` (0: no mark; etcd compares a missing key's revisions as 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    layout: Option<RecordLayout>,
    revision: i64,
}

impl Seen {
    /// The mark as a read found it; no mark reads as plain, which every build reads.
    fn from_kv(kv: Option<&etcd_client::KeyValue>) -> Seen {
        match kv {
            Some(kv) => Seen {
                layout: std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(RecordLayout::from_name),
                revision: kv.mod_revision(),
            },
            None => Seen {
                layout: Some(RecordLayout::Plain),
                revision: 0,
            },
        }
    }

    fn from_get(r: Option<&TxnOpResponse>) -> Seen {
        match r {
            Some(TxnOpResponse::Get(g)) => Seen::from_kv(g.kvs().first()),
            _ => Seen::from_kv(None),
        }
    }
}

/// The refusal to write in a layout this build does not know.
fn unknown_layout() -> StoreError {
    StoreError::Rejected(
        "the etcd store's records are now written in a layout this build does not know; upgrade this node".into(),
    )
}

fn read(path: &str) -> Result<Vec<u8>, EtcdOpenError> {
    std::fs::read(path).map_err(|source| EtcdOpenError::Tls {
        path: path.to_string(),
        source,
    })
}

/// The record stored under `key` (the prefix stripped) as `value`, at etcd's `mod_revision`.
pub(crate) fn decode_at(
    key: &[u8],
    value: &[u8],
    mod_revision: i64,
) -> Result<Versioned<Record>, StoreError> {
    let mut v = codec::decode(key, value)?;
    v.revision = Revision(u64::try_from(mod_revision).unwrap_or(0));
    Ok(v)
}

/// How to connect (TLS included), without a per-request timeout: a watch's stream lasts.
pub(crate) fn connect_options(opts: &EtcdOptions) -> Result<ConnectOptions, EtcdOpenError> {
    let mut co = ConnectOptions::new().with_connect_timeout(opts.connect_timeout);
    if opts.ca_cert_file.is_some() || opts.cert_file.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &opts.ca_cert_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(c), Some(k)) = (&opts.cert_file, &opts.key_file) {
            tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        co = co.with_tls(tls);
    }
    Ok(co)
}

impl EtcdStore {
    /// Listings this store started again because etcd compacted the revision they read at
    /// (between two of their pages), since it was made.
    pub fn listing_restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connects (retrying within the budget).
    pub fn connect(opts: EtcdOptions) -> Result<EtcdStore, EtcdOpenError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(EtcdOpenError::Runtime)?;
        let co = connect_options(&opts)?.with_timeout(opts.request_timeout);
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        let mark = [opts.prefix.as_bytes(), LAYOUT_KEY].concat();
        // The first read, which proves etcd answers, is the layout mark's.
        let (client, found) = loop {
            let attempt = rt.block_on(async {
                let mut c = Client::connect(opts.endpoints.clone(), Some(co.clone())).await?;
                let r = c.get(mark.clone(), None).await?;
                Ok::<_, etcd_client::Error>((c, r.kvs().first().cloned()))
            });
            match attempt {
                Ok(c) => break c,
                Err(_) if start.elapsed() + pause < opts.retry_budget => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(EtcdOpenError::Unreachable {
                        endpoints: opts.endpoints.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        };
        let store = EtcdStore {
            rt,
            client,
            opts,
            restarts: Default::default(),
            mark,
            seen: parking_lot::Mutex::new(Seen::from_kv(found.as_ref())),
        };
        let seen = match found {
            Some(_) => store.seen(),
            None => match store.first_mark() {
                Ok(seen) => seen,
                // Credentials that may read but not write (a monitoring user's `ipamctl
                // show`): no mark reads as plain, and any commit of theirs compares the
                // mark's absence, so nothing is written in a layout not agreed on.
                Err(StoreError::Rejected(why)) => {
                    tracing::debug!(%why, "the layout mark could not be written; reading as plain");
                    store.seen()
                }
                Err(source) => {
                    return Err(EtcdOpenError::Layout {
                        prefix: store.opts.prefix.clone(),
                        source,
                    })
                }
            },
        };
        if seen.layout.is_none() {
            let found = found.map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            return Err(EtcdOpenError::UnknownLayout {
                prefix: store.opts.prefix.clone(),
                found: found.unwrap_or_default(),
            });
        }
        Ok(store)
    }

    fn seen(&self) -> Seen {
        *self.seen.lock()
    }

    /// Marks the layout of a prefix that has no mark: compressed when nothing is stored
    /// under it (a new cluster), plain when records are (written by builds that may not read
    /// compressed ones; `ipamctl layout --set compressed` switches once every node is
    /// upgraded). The first node to mark wins; the others read its mark.
    fn first_mark(&self) -> Result<Seen, StoreError> {
        let (start, end) = self.record_keys();
        let any = self.retry(false, |mut c| {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_keys_only()
                .with_limit(1);
            let s = start.clone();
            async move { c.get(s, Some(opts)).await }
        })?;
        let layout = if any.kvs().is_empty() {
            RecordLayout::Compressed
        } else {
            RecordLayout::Plain
        };
        let mark = &self.mark;
        let resp = self.retry(true, |mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(mark.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(mark.clone(), layout.as_str(), None)])
                .or_else([TxnOp::get(mark.clone(), None)]);
            async move { c.txn(txn).await }
        })?;
        let seen = if resp.succeeded() {
            match layout {
                RecordLayout::Compressed => tracing::info!(
                    prefix = %self.opts.prefix,
                    "a new IPAM store on etcd: large records are written compressed"
                ),
                RecordLayout::Plain => tracing::warn!(
                    prefix = %self.opts.prefix,
                    "records written by an earlier build are stored here: they stay plain, which every build reads; once every node runs this build or a later one, `ipamctl layout --set compressed` writes a third of the bytes per pod"
                ),
            }
            Seen {
                layout: Some(layout),
                revision: resp.header().map_or(0, |h| h.revision()),
            }
        } else {
            Seen::from_get(resp.op_responses().first())
        };
        *self.seen.lock() = seen;
        Ok(seen)
    }

    /// Calls `f` with each stored record's full key, value and revision, in pages of
    /// [`RANGE_PAGE`] keys (not one snapshot: for scans whose every write is guarded).
    fn each_record(
        &self,
        mut f: impl FnMut(&[u8], &[u8], i64) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (mut from, end) = self.record_keys();
        loop {
            let page = self.retry(false, |c| {
                let (s, e) = (from.clone(), end.clone());
                let opts = GetOptions::new()
                    .with_range(e)
                    .with_limit(self.opts.range_page.clamp(1, RANGE_PAGE));
                let mut kv = c.kv_client().max_decoding_message_size(MAX_PAGE_BYTES);
                async move { kv.get(s, Some(opts)).await }
            })?;
            for kv in page.kvs() {
                f(kv.key(), kv.value(), kv.mod_revision())?;
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// The range of this store's record keys ([`RECORD_KEYS`]).
    fn record_keys(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.full_key(&[RECORD_KEYS.start]),
            self.full_key(&[RECORD_KEYS.end]),
        )
    }

    /// Reads the layout mark afresh.
    fn read_mark(&self) -> Result<Seen, StoreError> {
        let mark = &self.mark;
        let resp = self.retry(false, |mut c| {
            let k = mark.clone();
            async move { c.get(k, None).await }
        })?;
        let seen = Seen::from_kv(resp.kvs().first());
        *self.seen.lock() = seen;
        Ok(seen)
    }

    fn full_key(&self, k: &[u8]) -> Vec<u8> {
        let mut v = self.opts.prefix.as_bytes().to_vec();
        v.extend_from_slice(k);
        v
    }

    fn strip<'a>(&self, k: &'a [u8]) -> &'a [u8] {
        k.strip_prefix(self.opts.prefix.as_bytes()).unwrap_or(k)
    }

    fn decode(
        &self,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
    ) -> Result<Versioned<Record>, StoreError> {
        decode_at(self.strip(key), value, mod_revision)
    }

    /// Runs `f` until it succeeds or the retry budget is spent.
    fn retry<T, F, Fut>(&self, indeterminate: bool, f: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.rt.block_on(f(self.client.clone())) {
                Ok(v) => return Ok(v),
                Err(e) if is_permanent(&e) => {
                    return Err(StoreError::Rejected(format!("etcd: {e}")))
                }
                Err(_) if start.elapsed() + pause < self.opts.retry_budget => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(StoreError::Unavailable {
                        reason: format!("etcd: {e}"),
                        indeterminate,
                    })
                }
            }
        }
    }

    /// The records in `range`, read in pages of [`RANGE_PAGE`] keys at the revision of the
    /// first page (one snapshot): a whole range in one answer can exceed any answer limit (a
    /// thousand nodes' blocks pass the client's default 4 MiB), and a page of at most
    /// [`RANGE_PAGE`] values is bounded by etcd's own value limit.
    fn range(&self, range: &Range) -> Result<Vec<etcd_client::KeyValue>, StoreError> {
        let (start, end) = keys::bounds(range);
        let end = self.full_key(&end);
        let mut restarts = 0;
        let mut from = self.full_key(&start);
        let mut revision = 0; // the first page reads the latest; the rest read the same
        let mut out = Vec::new();
        loop {
            let page = self.retry(false, |c| {
                let (s, e) = (from.clone(), end.clone());
                let opts = GetOptions::new()
                    .with_range(e)
                    .with_limit(self.opts.range_page.clamp(1, RANGE_PAGE))
                    .with_revision(revision)
                    .with_serializable();
                let mut kv = c.kv_client().max_decoding_message_size(MAX_PAGE_BYTES);
                async move { kv.get(s, Some(opts)).await }
            });
            let resp = match page {
                // The pinned revision was compacted away under a long listing: start again
                // at the latest (a page read at a compacted revision fails however often
                // it is asked).
                Err(StoreError::Rejected(why))
                    if revision != 0 && restarts < 2 && why.contains("compacted") =>
                {
                    restarts += 1;
                    self.restarts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (from, revision) = (self.full_key(&start), 0);
                    out.clear();
                    continue;
                }
                other => other?,
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let kvs = resp.kvs();
            out.extend_from_slice(kvs);
            match kvs.last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0); // the next key after `last`
                }
                _ => return Ok(out),
            }
        }
    }
}

impl Datastore for EtcdStore {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Record>>, StoreError> {
        let k = self.full_key(&keys::encode(key));
        let resp = self.retry(false, |mut c| {
            let k = k.clone();
            async move { c.get(k, Some(GetOptions::new().with_serializable())).await }
        })?;
        match resp.kvs().first() {
            Some(kv) => self
                .decode(kv.key(), kv.value(), kv.mod_revision())
                .map(Some),
            None => Ok(None),
        }
    }

    fn list(&self, range: &Range) -> Result<Vec<Versioned<Record>>, StoreError> {
        let kvs = self.range(range)?;
        let items = kvs
            .iter()
            .map(|kv| self.decode(kv.key(), kv.value(), kv.mod_revision()));
        Ok(crate::collect_range(range, items, false)?.records)
    }

    fn list_lenient(&self, range: &Range) -> Result<Lenient, StoreError> {
        let kvs = self.range(range)?;
        let items = kvs
            .iter()
            .map(|kv| self.decode(kv.key(), kv.value(), kv.mod_revision()));
        crate::collect_range(range, items, true)
    }

    /// One read-only transaction per batch (etcd caps a transaction's operations, so very
    /// long batches take several): one round trip, one snapshot.
    fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Record>>>, StoreError> {
        let mut out = Vec::with_capacity(reads.len());
        for batch in reads.chunks(READS_PER_TXN) {
            let ops: Vec<TxnOp> = batch
                .iter()
                .map(|r| match r {
                    Read::Get(key) => TxnOp::get(
                        self.full_key(&keys::encode(key)),
                        Some(GetOptions::new().with_serializable()),
                    ),
                    Read::List(range) => {
                        let (start, end) = keys::bounds(range);
                        TxnOp::get(
                            self.full_key(&start),
                            Some(
                                GetOptions::new()
                                    .with_range(self.full_key(&end))
                                    .with_serializable(),
                            ),
                        )
                    }
                })
                .collect();
            let resp = self.retry(false, |c| {
                let txn = Txn::new().and_then(ops.clone());
                // One snapshot of whole ranges (an export lists every block): no page limit.
                let mut kv = c.kv_client().max_decoding_message_size(MAX_SNAPSHOT_BYTES);
                async move { kv.txn(txn).await }
            })?;
            let answers = resp.op_responses();
            if answers.len() != batch.len() {
                return Err(StoreError::Unavailable {
                    reason: format!("etcd answered {} of {} reads", answers.len(), batch.len()),
                    indeterminate: false,
                });
            }
            for (r, answer) in batch.iter().zip(answers) {
                let TxnOpResponse::Get(g) = answer else {
                    return Err(StoreError::Unavailable {
                        reason: "etcd answered a read with a write".into(),
                        indeterminate: false,
                    });
                };
                let items = g
                    .kvs()
                    .iter()
                    .map(|kv| self.decode(kv.key(), kv.value(), kv.mod_revision()));
                out.push(match r {
                    Read::Get(_) => items.take(1).collect::<Result<Vec<_>, _>>()?,
                    Read::List(range) => crate::collect_range(range, items, false)?.records,
                });
            }
        }
        Ok(out)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<Revision, StoreError> {
        if writes.is_empty() {
            return Ok(Revision(0));
        }
        ipam_core::check_writes(&writes)?;
        let keys: Vec<Vec<u8>> = writes
            .iter()
            .map(|w| self.full_key(&keys::encode(&w.key())))
            .collect();
        let mut distinct = std::collections::HashSet::with_capacity(keys.len());
        if let Some(i) = keys.iter().position(|k| !distinct.insert(k.as_slice())) {
            return Err(StoreError::Rejected(format!(
                "{} written twice in one commit",
                writes[i].key()
            )));
        }
        let mark = &self.mark;
        let mut attempt = 0;
        loop {
            // Written in the layout of the mark as last read, and only while the mark is
            // still that one: a commit never lands in a layout an operator has switched away
            // from (some node may not read it).
            let seen = self.seen();
            let layout = seen.layout.ok_or_else(unknown_layout)?;
            let mut compares = Vec::with_capacity(writes.len() + 1);
            let mut ops = Vec::with_capacity(writes.len());
            let mut reads = Vec::with_capacity(writes.len() + 1);
            for (w, k) in writes.iter().zip(&keys) {
                match w {
                    Write::Create(r) => {
                        compares.push(Compare::create_revision(k.clone(), CompareOp::Equal, 0));
                        ops.push(TxnOp::put(
                            k.clone(),
                            codec::encode_in(r, Revision(0), layout)?,
                            None,
                        ));
                    }
                    Write::Update { record, expected } => {
                        let rev = i64::try_from(expected.0).unwrap_or(i64::MAX);
                        compares.push(Compare::mod_revision(k.clone(), CompareOp::Equal, rev));
                        ops.push(TxnOp::put(
                            k.clone(),
                            codec::encode_in(record, Revision(0), layout)?,
                            None,
                        ));
                    }
                    Write::Delete { expected, .. } => {
                        let rev = i64::try_from(expected.0).unwrap_or(i64::MAX);
                        compares.push(Compare::mod_revision(k.clone(), CompareOp::Equal, rev));
                        ops.push(TxnOp::delete(k.clone(), None));
                    }
                }
                reads.push(TxnOp::get(k.clone(), None));
            }
            compares.push(Compare::mod_revision(
                mark.clone(),
                CompareOp::Equal,
                seen.revision,
            ));
            reads.push(TxnOp::get(mark.clone(), None));
            let resp = self.retry(true, |mut c| {
                let txn = Txn::new()
                    .when(compares.clone())
                    .and_then(ops.clone())
                    .or_else(reads.clone());
                async move { c.txn(txn).await }
            })?;
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                return Ok(Revision(u64::try_from(rev).unwrap_or(0)));
            }
            let answers = resp.op_responses();
            let now = Seen::from_get(answers.get(writes.len()));
            *self.seen.lock() = now;
            // Which condition failed: compare each write with what the else-branch read.
            for (w, r) in writes.iter().zip(&answers) {
                let cur = match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
                    _ => None,
                };
                let kind = match (w, cur) {
                    (Write::Create(_), Some(_)) => Some(ConflictKind::Exists),
                    (Write::Update { .. } | Write::Delete { .. }, None) => {
                        Some(ConflictKind::Missing)
                    }
                    (Write::Update { expected, .. } | Write::Delete { expected, .. }, Some(m))
                        if u64::try_from(m).ok() != Some(expected.0) =>
                    {
                        Some(ConflictKind::Changed)
                    }
                    _ => None,
                };
                if let Some(kind) = kind {
                    return Err(StoreError::Conflict { key: w.key(), kind });
                }
            }
            // Only the mark moved: the same writes again, in its layout.
            if now.revision != seen.revision && attempt < LAYOUT_RETRIES {
                attempt += 1;
                continue;
            }
            // Every condition holds now: another writer changed and restored a key in between.
            return Err(StoreError::Conflict {
                key: writes[0].key(),
                kind: ConflictKind::Changed,
            });
        }
    }

    fn watch(&self, ranges: &[Range]) -> Result<Option<ipam_core::Feed>, StoreError> {
        crate::etcd_watch::start(self.opts.clone(), ranges.to_vec()).map(Some)
    }

    fn layout(&self) -> Result<Option<LayoutStatus>, StoreError> {
        let seen = self.read_mark()?;
        let mut status = LayoutStatus {
            layout: seen.layout,
            ..Default::default()
        };
        self.each_record(|key, value, _| {
            tally(&mut status, self.strip(key), value);
            Ok(())
        })?;
        Ok(Some(status))
    }

    fn set_layout(&self, layout: RecordLayout) -> Result<LayoutStatus, StoreError> {
        let mark = &self.mark;
        // The mark first, by compare-and-swap on the mark as read: from its revision on, a
        // commit in another layout fails its comparison and is encoded again.
        let seen = loop {
            let before = self.read_mark()?;
            if before.layout == Some(layout) && before.revision != 0 {
                // In force already (a switch run again to finish): the writers' marks stay
                // valid, none pays a failed comparison for nothing.
                break before;
            }
            let resp = self.retry(true, |mut c| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        mark.clone(),
                        CompareOp::Equal,
                        before.revision,
                    )])
                    .and_then([TxnOp::put(mark.clone(), layout.as_str(), None)]);
                async move { c.txn(txn).await }
            })?;
            if resp.succeeded() {
                let seen = Seen {
                    layout: Some(layout),
                    revision: resp.header().map_or(0, |h| h.revision()),
                };
                *self.seen.lock() = seen;
                break seen;
            }
        };
        // Then every record in another layout, each guarded by its own revision and the
        // mark's: one written meanwhile was written in `layout` already. Up to
        // REWRITES_PER_TXN records a transaction; a batch that loses to a writer is done
        // again one record at a time, so only the records written meanwhile are left out.
        let mut status = LayoutStatus {
            layout: Some(layout),
            ..Default::default()
        };
        let mut batch: Vec<Rewrite> = Vec::new();
        let mut bytes = 0;
        self.each_record(|key, value, revision| {
            let new = match codec::transcode(self.strip(key), value, layout) {
                Ok(Some(new)) => new,
                Ok(None) | Err(StoreError::Corrupt { .. }) => {
                    tally(&mut status, self.strip(key), value);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            bytes += key.len() + new.len();
            batch.push(Rewrite {
                key: key.to_vec(),
                new,
                revision,
            });
            if batch.len() >= REWRITES_PER_TXN || bytes >= REWRITE_BYTES_PER_TXN {
                self.rewrite(&mut batch, seen, &mut status)?;
                bytes = 0;
            }
            Ok(())
        })?;
        self.rewrite(&mut batch, seen, &mut status)?;
        Ok(status)
    }
}

/// Records rewritten in one transaction by a layout switch: with the mark's comparison, 65
/// comparisons and 64 puts, under etcd's default limit of 128 operations a transaction.
const REWRITES_PER_TXN: usize = 64;

/// Bytes (keys and values) of one such transaction, at most about this many: well under
/// etcd's default request limit of 1.5 MiB.
const REWRITE_BYTES_PER_TXN: usize = 512 << 10;

/// A record a layout switch rewrites: its key, its value in the new layout, and the revision
/// it was read at.
struct Rewrite {
    key: Vec<u8>,
    new: Vec<u8>,
    revision: i64,
}

impl EtcdStore {
    /// Writes `batch` (emptied) in one transaction guarded by each record's revision and the
    /// mark's; after a lost comparison, one record a transaction.
    fn rewrite(
        &self,
        batch: &mut Vec<Rewrite>,
        seen: Seen,
        status: &mut LayoutStatus,
    ) -> Result<(), StoreError> {
        let mark = &self.mark;
        let mut put = |records: &[Rewrite]| -> Result<bool, StoreError> {
            let mut when: Vec<Compare> = records
                .iter()
                .map(|r| Compare::mod_revision(r.key.clone(), CompareOp::Equal, r.revision))
                .collect();
            when.push(Compare::mod_revision(
                mark.clone(),
                CompareOp::Equal,
                seen.revision,
            ));
            let puts: Vec<TxnOp> = records
                .iter()
                .map(|r| TxnOp::put(r.key.clone(), r.new.clone(), None))
                .collect();
            let resp = self.retry(true, |mut c| {
                let txn = Txn::new()
                    .when(when.clone())
                    .and_then(puts.clone())
                    .or_else([TxnOp::get(mark.clone(), None)]);
                async move { c.txn(txn).await }
            })?;
            if resp.succeeded() {
                for r in records {
                    status.rewritten += 1;
                    tally(status, self.strip(&r.key), &r.new);
                }
                return Ok(true);
            }
            if Seen::from_get(resp.op_responses().first()) != seen {
                return Err(StoreError::Rejected(
                    "the record layout was changed again while records were being rewritten".into(),
                ));
            }
            Ok(false)
        };
        if !batch.is_empty() && !put(batch)? && batch.len() > 1 {
            for r in batch.iter() {
                // Written or deleted meanwhile, in the new layout, when this one fails too.
                put(std::slice::from_ref(r))?;
            }
        }
        batch.clear();
        Ok(())
    }
}

/// Counts a stored value by its layout; one that does not decode counts as corrupt.
fn tally(status: &mut LayoutStatus, key: &[u8], value: &[u8]) {
    match (codec::decode(key, value), codec::layout_of(value)) {
        (Ok(_), Some(RecordLayout::Plain)) => status.plain += 1,
        (Ok(_), Some(RecordLayout::Compressed)) => status.compressed += 1,
        _ => status.corrupt += 1,
    }
}

/// A failure that the same call cannot escape by being retried: a request or answer over a
/// size limit (etcd's request limit, the client's answer limit), a refused credential, an
/// unknown method. Reported at once rather than after the whole retry budget. Leader changes,
/// timeouts and lost connections stay transient.
fn is_permanent(e: &etcd_client::Error) -> bool {
    // gRPC codes: 3 invalid argument (etcd's "request is too large"), 7 permission denied,
    // 11 out of range (an answer over the client's limit, a compacted revision), 12
    // unimplemented, 16 unauthenticated. Not 8, resource exhausted: etcd's "too many
    // requests" passes, and a full database may be compacted while we wait.
    matches!(e, etcd_client::Error::GRpcStatus(s) if matches!(i32::from(s.code()), 3 | 7 | 11 | 12 | 16))
}
