//! The etcd store's feed ([`Datastore::watch`](ipam_core::Datastore::watch)).
//!
//! A thread of its own, with its own connection and runtime (the store's runtime runs only
//! inside calls, so it can hold no stream), lists the watched ranges in one transaction (one
//! revision), sends that as a snapshot, then watches each range from the next revision and
//! sends every change etcd reports. When a watch is cancelled (its revision was compacted
//! away) or the connection fails, it starts over with a new snapshot, so a reader's copy never
//! misses a change. Each range is watched on its own (its changes in order; two ranges'
//! changes may interleave in another order than etcd made them): a node's agent must not be
//! sent every block and handle write of the cluster. The thread ends as soon as the feed is
//! dropped: the feed holds the sending end of a stop signal, whose end the thread waits on
//! beside its watches (so an idle watch does not keep a thread and a connection alive).

use crate::etcd::{connect_options, decode_at, EtcdOptions, MAX_SNAPSHOT_BYTES};
use crate::sled::keys;
use etcd_client::{
    Client, EventType, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use ipam_core::{Change, Feed, Range, StoreError, Versioned};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Pause before starting over after a failure.
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// Starts the watching thread; its feed.
pub(crate) fn start(opts: EtcdOptions, ranges: Vec<Range>) -> Result<Feed, StoreError> {
    let unavailable = |reason: String| StoreError::Unavailable {
        reason,
        indeterminate: false,
    };
    let co = connect_options(&opts)
        .map_err(|e| unavailable(e.to_string()))?
        // A connection that stops answering is noticed, and the watch starts over.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unavailable(format!("cannot start the watch runtime: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Never sent on: its end (the feed dropped) is the signal.
    let (stop, stopped) = tokio::sync::watch::channel(());
    let watcher = Watcher { opts, ranges };
    std::thread::Builder::new()
        .name("etcd-watch".into())
        .spawn(move || loop {
            let mut stopped = stopped.clone();
            let run = async {
                tokio::select! {
                    r = watcher.follow(co.clone(), &tx) => r,
                    _ = stopped.changed() => Ok(()),
                }
            };
            match rt.block_on(run) {
                Ok(()) => return,
                Err(why) => {
                    tracing::warn!(%why, "etcd watch: starting over from a new listing");
                    std::thread::sleep(RESTART_PAUSE);
                    if stopped.has_changed().is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| unavailable(format!("cannot start the watch thread: {e}")))?;
    Ok(Feed::with_guard(rx, Box::new(stop)))
}

struct Watcher {
    opts: EtcdOptions,
    ranges: Vec<Range>,
}

/// The record a key-value pair under `prefix` holds, at its revision; `None` (logged) for one
/// that does not decode, which a listing leaves out too.
fn decode(prefix: &str, kv: &KeyValue) -> Option<Versioned<ipam_core::Record>> {
    let key = kv.key().strip_prefix(prefix.as_bytes())?;
    match decode_at(key, kv.value(), kv.mod_revision()) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "etcd watch: a record does not decode");
            None
        }
    }
}

impl Watcher {
    fn full_key(&self, k: &[u8]) -> Vec<u8> {
        [self.opts.prefix.as_bytes(), k].concat()
    }

    /// One snapshot, then the changes, until a watch fails (`Err`: start over) or the feed
    /// is dropped (`Ok`).
    async fn follow(
        &self,
        co: etcd_client::ConnectOptions,
        tx: &Sender<Change>,
    ) -> Result<(), String> {
        let client = Client::connect(self.opts.endpoints.clone(), Some(co))
            .await
            .map_err(|e| e.to_string())?;
        let ops: Vec<TxnOp> = self
            .ranges
            .iter()
            .map(|r| {
                let (start, end) = keys::bounds(r);
                TxnOp::get(
                    self.full_key(&start),
                    Some(GetOptions::new().with_range(self.full_key(&end))),
                )
            })
            .collect();
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        let resp = kv
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| e.to_string())?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut records = Vec::new();
        for answer in resp.op_responses() {
            if let TxnOpResponse::Get(g) = answer {
                let prefix = &self.opts.prefix;
                records.extend(g.kvs().iter().filter_map(|kv| decode(prefix, kv)));
            }
        }
        if tx.send(Change::Snapshot(records)).is_err() {
            return Ok(());
        }
        let mut watches = tokio::task::JoinSet::new();
        for range in &self.ranges {
            let (start, end) = keys::bounds(range);
            let opts = WatchOptions::new()
                .with_range(self.full_key(&end))
                .with_start_revision(revision + 1);
            let mut c = client.clone();
            let start = self.full_key(&start);
            let tx = tx.clone();
            let prefix = self.opts.prefix.clone();
            let range = range.clone();
            watches.spawn(async move {
                let mut stream = c
                    .watch(start, Some(opts))
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(resp) = stream.message().await.map_err(|e| e.to_string())? {
                    if resp.canceled() || resp.compact_revision() > 0 {
                        return Err(format!(
                            "watch cancelled (compacted to {}): {}",
                            resp.compact_revision(),
                            resp.cancel_reason()
                        ));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(key) = kv
                            .key()
                            .strip_prefix(prefix.as_bytes())
                            .and_then(keys::decode)
                        else {
                            continue;
                        };
                        if !range.contains(&key) {
                            continue; // a nested prefix's key, within the byte range
                        }
                        let change = match ev.event_type() {
                            EventType::Put => match decode(&prefix, kv) {
                                Some(v) => Change::Put(v),
                                None => Change::Delete(key),
                            },
                            EventType::Delete => Change::Delete(key),
                        };
                        if tx.send(change).is_err() {
                            return Ok(());
                        }
                    }
                }
                Err("the watch stream ended".to_string())
            });
        }
        // The first watch to end decides: the feed was dropped, or start over (the others
        // are cancelled when the set is dropped).
        match watches.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(()),
        }
    }
}
