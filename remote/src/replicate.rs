//! The replication worker: drains each target's journal into its bucket.
//!
//! Order (what keeps the copy restorable at every moment): entries go oldest
//! first, up to the target's concurrency at once, except *barriers* — a backup's
//! stop sentinel, its `metadata.json`, a timeline's `.history` — which start only
//! after every earlier entry is confirmed, and before any later one starts. So the
//! copy never lists a backup whose files it lacks, nor a segment of a timeline
//! whose history it lacks; WAL-G picks LATEST by the sentinels' LastModified, and
//! sentinels go up one at a time in their original order. Deletes of a backup go
//! sentinel first because the retention worker deletes (and so journals) them in
//! that order.
//!
//! An entry is removed only after the target confirmed it: the SHA-256 sent with
//! the bytes was verified by the target (and its echo, or the ETag, compared).
//! Failures back off exponentially with jitter (1 s doubling to 30 s); a target
//! that is down costs one log line when it starts failing and one when it recovers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use storage::worker::{Progress, Worker};
use storage::{Budget, JournalEntry, JournalId, JournalOp, ObjectInfo, OffboxMark, Store, TargetRecord, Timestamp};

use crate::client::{
    Clients, Remote, Upload, META_CHECKSUM, META_CONTENT_TYPE, META_ETAG, META_HEADERS, META_MTIME, META_PARTS,
    META_SHA256,
};
use crate::error::{Error, ErrorKind, Result};
use crate::spec::{DeletePolicy, TargetSpec};

/// Entries read from the journal per round.
const ROUND: usize = 256;
/// First retry delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the worker knows about one target (metrics and status read it).
#[derive(Debug, Default)]
pub struct TargetState {
    /// Objects confirmed by the target.
    pub objects: AtomicU64,
    /// Bytes confirmed by the target.
    pub bytes: AtomicU64,
    /// Deletes confirmed by the target.
    pub deletes: AtomicU64,
    /// Failed attempts by kind (index: position in [`ErrorKind::ALL`]).
    pub errors: [AtomicU64; 9],
    /// Unix time (s) of the last confirmed change or empty-journal check (0: never).
    pub last_success: AtomicU64,
    inner: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    failures: u32,
    last_error: Option<(ErrorKind, String, SystemTime)>,
    retry_at: Option<Instant>,
}

impl TargetState {
    fn succeed(&self, name: &str) {
        self.last_success.store(unix_now(), Ordering::Relaxed);
        let mut h = self.inner.lock();
        if h.failures > 0 {
            tracing::info!(target_name = name, failed_attempts = h.failures, "replication recovered");
        }
        h.failures = 0;
        h.retry_at = None;
        h.last_error = None;
    }

    fn fail(&self, name: &str, e: &Error) {
        let i = ErrorKind::ALL.iter().position(|k| *k == e.kind).unwrap_or(ErrorKind::ALL.len() - 1);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
        let mut h = self.inner.lock();
        let changed = h.last_error.as_ref().is_none_or(|(k, m, _)| *k != e.kind || *m != e.message);
        h.failures = h.failures.saturating_add(1);
        let exp = BACKOFF_MIN.saturating_mul(1u32 << h.failures.saturating_sub(1).min(10)).min(BACKOFF_MAX);
        let jittered = exp.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        h.retry_at = Some(Instant::now() + jittered);
        if changed {
            tracing::warn!(
                target_name = name,
                kind = e.kind.name(),
                retry_in_ms = jittered.as_millis() as u64,
                "replication failing: {}",
                e.message
            );
        }
        h.last_error = Some((e.kind, e.message.clone(), SystemTime::now()));
    }

    fn waiting(&self) -> bool {
        self.inner.lock().retry_at.is_some_and(|t| t > Instant::now())
    }

    /// Consecutive failed attempts.
    pub fn failures(&self) -> u32 {
        self.inner.lock().failures
    }

    /// Errors by kind name.
    pub fn errors_by_kind(&self) -> Vec<(&'static str, u64)> {
        ErrorKind::ALL.iter().zip(&self.errors).map(|(k, n)| (k.name(), n.load(Ordering::Relaxed))).collect()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The replication state of every target, shared by the worker, metrics and the admin API.
#[derive(Default)]
pub struct Replicator {
    states: Mutex<HashMap<String, Arc<TargetState>>>,
}

impl Replicator {
    /// A new, empty state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The state of target `name`.
    pub fn state(&self, name: &str) -> Arc<TargetState> {
        self.states.lock().entry(name.to_owned()).or_default().clone()
    }

    /// A report of every target (reads each journal: cost grows with the backlog).
    pub fn report(&self, store: &Store) -> Vec<TargetReport> {
        let names: Vec<String> = store.replication_targets().into_iter().map(|t| t.name).collect();
        self.states.lock().retain(|n, _| names.contains(n));
        store.replication_targets().into_iter().map(|rec| self.report_one(store, rec)).collect()
    }

    /// A report of one target.
    pub fn report_one(&self, store: &Store, rec: TargetRecord) -> TargetReport {
        let state = self.state(&rec.name);
        let backlog = store.replication_backlog(&rec.name);
        let offbox = store.offbox_marks(&rec.name).unwrap_or_default();
        let spec: std::result::Result<TargetSpec, _> = serde_json::from_str(&rec.spec);
        TargetReport { rec, spec: spec.ok(), backlog, offbox, state }
    }
}

/// Everything known about one target at one moment.
pub struct TargetReport {
    /// The stored record.
    pub rec: TargetRecord,
    /// Its settings (`None`: unreadable).
    pub spec: Option<TargetSpec>,
    /// Its journal.
    pub backlog: storage::Result<storage::Backlog>,
    /// Newest off-box WAL segment per repository.
    pub offbox: Vec<OffboxMark>,
    /// Counters and health.
    pub state: Arc<TargetState>,
}

fn secs(t: Timestamp) -> f64 {
    t.as_millis() as f64 / 1000.0
}

impl TargetReport {
    /// Seconds since the oldest change not yet on the target (0: none pending).
    pub fn lag_seconds(&self) -> f64 {
        match &self.backlog {
            Ok(b) => b.oldest.map_or(0.0, |o| (unix_now() as f64 - secs(o)).max(0.0)),
            Err(_) => 0.0,
        }
    }

    /// One-word state: `ok`, `paused`, `failing`, `catching-up`.
    pub fn health(&self) -> &'static str {
        if self.rec.paused {
            "paused"
        } else if self.state.failures() > 0 {
            "failing"
        } else if self.backlog.as_ref().is_ok_and(|b| b.objects > 0) {
            "catching-up"
        } else {
            "ok"
        }
    }

    /// The report as the admin API returns it.
    pub fn to_json(&self) -> Value {
        let b = self.backlog.as_ref().ok();
        let health = self.health();
        let h = self.state.inner.lock();
        let spec = self.spec.as_ref();
        let source = match &self.rec.source_bucket {
            Some(bk) => format!("{bk}/{}", self.rec.source_prefix),
            None => "*".into(),
        };
        let now = unix_now() as f64;
        json!({
            "name": self.rec.name,
            "state": health,
            "source": source,
            "endpoint": spec.map(|s| s.endpoint.clone()),
            "bucket": spec.map(|s| s.bucket.clone()),
            "prefix": spec.map(|s| s.prefix.clone()),
            "region": spec.map(|s| s.region.clone()),
            "deletes": spec.map(|s| s.deletes.name()),
            "credentials": spec.map(|s| match &s.credentials_file {
                Some(p) => format!("file {}", p.display()),
                None => format!("env {}", crate::spec::env_var(&self.rec.name, "ACCESS_KEY_ID")),
            }),
            "from_config": self.rec.from_config,
            "paused": self.rec.paused,
            "lag_seconds": self.lag_seconds(),
            "backlog_objects": b.map(|b| b.objects),
            "backlog_bytes": b.map(|b| b.bytes),
            "held_deletes": b.map(|b| b.held_deletes),
            "next_held_delete_due": b.and_then(|b| b.next_due).map(secs),
            "journal_error": self.backlog.as_ref().err().map(ToString::to_string),
            "replicated_objects": self.state.objects.load(Ordering::Relaxed),
            "replicated_bytes": self.state.bytes.load(Ordering::Relaxed),
            "replicated_deletes": self.state.deletes.load(Ordering::Relaxed),
            "last_success": self.state.last_success.load(Ordering::Relaxed),
            "consecutive_failures": h.failures,
            "last_error": h.last_error.as_ref().map(|(k, m, t)| json!({
                "kind": k.name(),
                "message": m,
                "at": t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            })),
            "errors": self.state.errors_by_kind().into_iter().filter(|(_, n)| *n > 0).collect::<HashMap<_, _>>(),
            "offbox_wal": self.offbox.iter().map(|m| json!({
                "bucket": m.bucket,
                "repository": m.repository,
                "segment": m.segment,
                "last_modified": secs(m.last_modified),
                "age_seconds": (now - secs(m.last_modified)).max(0.0),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Whether an entry must wait for every earlier one, and hold back every later one.
pub fn is_barrier(key: &str) -> bool {
    use wal::names::{classify, split_repo, WalObject};
    split_repo(key).is_some_and(|(_, path)| {
        matches!(classify(path), WalObject::Sentinel(_) | WalObject::BackupMeta(_) | WalObject::History { .. })
    })
}

/// The replication worker (one for every target; see the module documentation).
pub struct ReplicationJob {
    store: Arc<Store>,
    rep: Arc<Replicator>,
    clients: Clients,
    interval: Duration,
}

impl ReplicationJob {
    /// A worker for `store`, due every `interval` (changes wait at most that long).
    pub fn new(store: Arc<Store>, rep: Arc<Replicator>, interval: Duration) -> std::io::Result<Self> {
        Ok(Self { store, rep, clients: Clients::new("walstore-replication")?, interval })
    }

    /// Drains `rec`'s journal while the budget lasts; `Ok(true)` if entries remain.
    fn drain(&mut self, rec: &TargetRecord, state: &TargetState, budget: &Budget) -> Result<bool> {
        let (spec, remote) = self.clients.get(rec)?;
        let store = self.store.clone();
        let name = rec.name.clone();
        loop {
            if budget.stopped() {
                return Ok(true);
            }
            let now = store.now();
            let due = store.replication_due(&name, now, ROUND)?;
            let pending = store.replication_pending(&name, None, ROUND)?;
            if due.is_empty() && pending.is_empty() {
                state.succeed(&name);
                return Ok(false);
            }
            self.clients.rt.block_on(send_held(&store, &remote, &spec, &name, state, due))?;
            let full = pending.len() == ROUND;
            self.clients.rt.block_on(send_round(&store, &remote, &spec, &name, state, pending))?;
            state.succeed(&name);
            if !full {
                return Ok(false);
            }
            if budget.spent() {
                return Ok(true);
            }
        }
    }
}

impl Worker for ReplicationJob {
    fn name(&self) -> &'static str {
        "replication"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn step(&mut self, _: &Store, budget: &mut Budget) -> storage::Result<Progress> {
        let mut more = false;
        for rec in self.store.replication_targets() {
            let state = self.rep.state(&rec.name);
            if rec.paused || state.waiting() {
                continue;
            }
            match self.drain(&rec, &state, budget) {
                Ok(m) => more |= m,
                Err(e) => {
                    if matches!(e.kind, ErrorKind::Auth | ErrorKind::Config) {
                        // Read the credentials and settings again on the next attempt.
                        self.clients.forget(&rec.name);
                    }
                    state.fail(&rec.name, &e);
                }
            }
        }
        Ok(if more { Progress::More } else { Progress::Done })
    }
}

/// Held-back deletes that came due: deleted on the target unless the key exists again.
async fn send_held(
    store: &Arc<Store>,
    remote: &Remote,
    spec: &TargetSpec,
    name: &str,
    state: &TargetState,
    due: Vec<(JournalId, JournalEntry)>,
) -> Result<()> {
    let mut done = Vec::new();
    let mut result = Ok(());
    for (id, e) in due {
        if store.replication_current(&e.bucket, &e.key)?.is_none() {
            if let Err(err) = remote.delete(&spec.target_key(&e.bucket, &e.key)).await {
                result = Err(err);
                break;
            }
            state.deletes.fetch_add(1, Ordering::Relaxed);
        }
        done.push(id);
    }
    store.replication_done(name, &done)?;
    result
}

/// What one pending entry needs.
enum Action {
    /// Nothing (superseded by a later entry, or held back): remove the entry.
    Drop,
    Put(Box<ObjectInfo>),
    Delete,
}

/// One round of pending entries, in order, barriers alone (see the module documentation).
async fn send_round(
    store: &Arc<Store>,
    remote: &Remote,
    spec: &TargetSpec,
    name: &str,
    state: &TargetState,
    pending: Vec<(JournalId, JournalEntry)>,
) -> Result<()> {
    let mut group: Vec<(JournalId, JournalEntry, Action)> = Vec::new();
    for (id, e) in pending {
        let action = match &e.op {
            JournalOp::Put { etag, last_modified, .. } => match store.replication_current(&e.bucket, &e.key)? {
                Some(cur) if cur.etag.as_str() == etag && cur.last_modified == *last_modified => {
                    Action::Put(Box::new(cur))
                }
                _ => Action::Drop,
            },
            JournalOp::Delete => {
                if store.replication_current(&e.bucket, &e.key)?.is_some() {
                    Action::Drop
                } else {
                    match spec.deletes {
                        DeletePolicy::Mirror => Action::Delete,
                        DeletePolicy::Never => Action::Drop,
                        DeletePolicy::Delay(d) => {
                            store.replication_hold(name, id, &e, e.at.plus(d))?;
                            continue;
                        }
                    }
                }
            }
        };
        // Deletes too: a sentinel's delete must be confirmed before its files go.
        let barrier = !matches!(action, Action::Drop) && is_barrier(&e.key);
        if barrier {
            run_group(store, remote, spec, name, state, std::mem::take(&mut group)).await?;
            run_group(store, remote, spec, name, state, vec![(id, e, action)]).await?;
        } else {
            group.push((id, e, action));
        }
    }
    run_group(store, remote, spec, name, state, group).await
}

/// Sends a group of entries at once (up to the concurrency); removes the confirmed
/// ones; fails if any failed (the failed ones stay, and so does every later barrier).
async fn run_group(
    store: &Arc<Store>,
    remote: &Remote,
    spec: &TargetSpec,
    name: &str,
    state: &TargetState,
    group: Vec<(JournalId, JournalEntry, Action)>,
) -> Result<()> {
    if group.is_empty() {
        return Ok(());
    }
    let results: Vec<(JournalId, Result<()>)> = stream::iter(group)
        .map(|(id, e, action)| async move {
            let r = match action {
                Action::Drop => Ok(()),
                Action::Delete => remote.delete(&spec.target_key(&e.bucket, &e.key)).await.map(|()| {
                    state.deletes.fetch_add(1, Ordering::Relaxed);
                }),
                Action::Put(info) => send_object(store, remote, spec, &info).await.map(|()| {
                    state.objects.fetch_add(1, Ordering::Relaxed);
                    state.bytes.fetch_add(info.size, Ordering::Relaxed);
                    note_offbox(store, name, &info);
                }),
            };
            (id, r)
        })
        .buffer_unordered(spec.concurrency.max(1))
        .collect()
        .await;
    let mut done = Vec::new();
    let mut first_err = None;
    for (id, r) in results {
        match r {
            Ok(()) => done.push(id),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    store.replication_done(name, &done)?;
    first_err.map_or(Ok(()), Err)
}

/// Raises the off-box mark of the repository of a WAL segment the target confirmed.
fn note_offbox(store: &Store, name: &str, info: &ObjectInfo) {
    use wal::names::{classify, split_repo, WalObject};
    let key = info.key.as_str();
    let Some((repo, path)) = split_repo(key) else { return };
    if let WalObject::Segment { name: segment, .. } = classify(path) {
        let mark = OffboxMark {
            bucket: info.bucket.as_str().to_owned(),
            repository: repo.to_owned(),
            segment,
            last_modified: info.last_modified,
        };
        if let Err(e) = store.set_offbox_mark(name, &mark) {
            tracing::warn!(target_name = name, "recording the off-box WAL position failed: {e}");
        }
    }
}

/// What a rebuild needs to store the object again as it was (see [`crate::client`]).
fn upload_meta(info: &ObjectInfo, sha256: &[u8; 32]) -> Upload {
    let mut metadata: Vec<(String, String)> =
        info.meta.user.iter().filter(|(k, _)| !k.starts_with("walstore-")).cloned().collect();
    metadata.push((META_MTIME.into(), info.last_modified.as_millis().to_string()));
    metadata.push((META_ETAG.into(), info.etag.as_str().to_owned()));
    metadata.push((META_SHA256.into(), hex::encode(sha256)));
    let headers: Vec<&(String, String)> =
        info.meta.headers.iter().filter(|(k, _)| !k.starts_with("x-amz-object-lock")).collect();
    if !headers.is_empty() {
        metadata.push((META_HEADERS.into(), serde_json::to_string(&headers).unwrap_or_default()));
    }
    if let Some(c) = &info.checksum {
        metadata.push((META_CHECKSUM.into(), serde_json::to_string(c).unwrap_or_default()));
    }
    metadata.push((META_CONTENT_TYPE.into(), info.meta.content_type.clone().unwrap_or_default()));
    if let Some(n) = info.parts_count {
        metadata.push((META_PARTS.into(), n.to_string()));
    }
    Upload { content_type: info.meta.content_type.clone(), metadata }
}

/// Reads `range` of an object (verified against its block CRCs as any read is).
async fn read_range(store: &Arc<Store>, info: &ObjectInfo, range: std::ops::Range<u64>) -> Result<Bytes> {
    let (store, info) = (store.clone(), info.clone());
    tokio::task::spawn_blocking(move || -> Result<Bytes> {
        let mut r = store.read_object(&info, range.clone())?;
        let mut buf = BytesMut::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
        while let Some(chunk) = r.next_chunk()? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Local, format!("reading task failed: {e}")))?
}

/// The SHA-256 of an object's bytes: its content address when it is one blob, else
/// read and hashed (an object assembled from a multipart upload).
async fn object_sha256(store: &Arc<Store>, info: &ObjectInfo) -> Result<[u8; 32]> {
    match info.blobs.as_slice() {
        [] => Ok(Sha256::digest(b"").into()),
        [one] => Ok(*one.hash.as_bytes()),
        _ => {
            let (store, info) = (store.clone(), info.clone());
            tokio::task::spawn_blocking(move || -> Result<[u8; 32]> {
                let mut r = store.read_object(&info, 0..info.size)?;
                let mut h = Sha256::new();
                while let Some(chunk) = r.next_chunk()? {
                    h.update(&chunk);
                }
                Ok(h.finalize().into())
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Local, format!("hashing task failed: {e}")))?
        }
    }
}

/// Sends one object: one PUT up to the part size, else a multipart upload.
async fn send_object(store: &Arc<Store>, remote: &Remote, spec: &TargetSpec, info: &ObjectInfo) -> Result<()> {
    let key = spec.target_key(info.bucket.as_str(), info.key.as_str());
    let sha = object_sha256(store, info).await?;
    let up = upload_meta(info, &sha);
    if info.size <= spec.part_size {
        let body = read_range(store, info, 0..info.size).await?;
        return remote.put(&key, body, &sha, &up).await;
    }
    let id = remote.start_multipart(&key, &up).await?;
    let mut parts = Vec::new();
    let mut at = 0u64;
    let mut number = 1i32;
    while at < info.size {
        let end = (at + spec.part_size).min(info.size);
        let r = async { remote.put_part(&key, &id, number, read_range(store, info, at..end).await?).await }.await;
        match r {
            Ok(p) => parts.push(p),
            Err(e) => {
                remote.abort_multipart(&key, &id).await;
                return Err(e);
            }
        }
        at = end;
        number += 1;
    }
    if let Err(e) = remote.complete_multipart(&key, &id, parts).await {
        remote.abort_multipart(&key, &id).await;
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barriers() {
        assert!(is_barrier("spilo/db/wal/16/basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json"));
        assert!(is_barrier("spilo/db/wal/16/basebackups_005/base_000000010000000000000002/metadata.json"));
        assert!(is_barrier("db/wal_005/00000002.history.br"));
        assert!(!is_barrier("db/wal_005/000000010000000000000002.br"));
        assert!(!is_barrier(
            "spilo/db/wal/16/basebackups_005/base_000000010000000000000002/tar_partitions/part_1.tar.br"
        ));
        assert!(!is_barrier("not/a/repository.txt"));
    }

    #[test]
    fn backoff_grows_and_resets() {
        let s = TargetState::default();
        let e = Error::new(ErrorKind::Network, "refused");
        s.fail("t", &e);
        s.fail("t", &e);
        assert_eq!(s.failures(), 2);
        assert!(s.waiting());
        assert_eq!(s.errors_by_kind().iter().find(|(k, _)| *k == "network").map(|(_, n)| *n), Some(2));
        s.succeed("t");
        assert_eq!(s.failures(), 0);
        assert!(!s.waiting());
    }
}
