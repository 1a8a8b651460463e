//! Tiering, the half that talks to the target: reading evicted bytes back
//! ([`TierReader`], plugged into the store as its `RemoteBlobs`), and the `tier`
//! worker ([`TierJob`]) that evicts, brings bytes back when a policy goes, and
//! checks the target's copies on a slower schedule.
//!
//! What may be evicted and how an eviction stays crash-safe is the storage crate's
//! business (`storage::tier`); this side confirms, before every eviction, that the
//! target holds the very version being evicted: a HEAD of its copy must show the same
//! size, `walstore-etag` and `walstore-mtime` (the replication worker writes them).
//!
//! Reads: one ranged GET per blob from the first block asked for, streamed through a
//! bounded channel (read-ahead of a few MiB) by a task on this crate's runtime. Every
//! wait is bounded by the body timeout, so a target that stops answering fails the
//! read instead of hanging it. A read from the start of a blob hashes it and refuses
//! to hand out its last block if the SHA-256 differs from the blob's name; the store
//! checks each 1 MiB block's CRC as for a local file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use storage::tier::TierRow;
use storage::worker::{Progress, Worker};
use storage::{BlobFile, BlobHash, Budget, ObjectInfo, RemoteBlobs, RemoteLoc, Store, TierPolicy};
use tokio::sync::mpsc;

use crate::client::{Clients, Remote, META_ETAG, META_MTIME, META_SHA256};
use crate::error::{Error, ErrorKind, Result};
use crate::spec::TargetSpec;

/// Objects examined per page of a policy.
const PAGE: usize = 512;
/// HEADs (confirmations) in flight per page.
const CONFIRM_AT_ONCE: usize = 8;
/// Body chunks buffered ahead of the reader (the SDK hands out up to 64 KiB each).
const READ_AHEAD: usize = 64;
/// Latency observations kept between two scrapes (and blobs reads may ask back).
const MAX_OBSERVATIONS: usize = 10_000;
/// Blobs brought back for reads per run (the rest wait for the next run).
const WANTED_PER_RUN: usize = 64;
/// Blobs brought back per page because their object is wanted local again.
const REWARM_PER_PAGE: usize = 64;

/// What tiering did and sees; the worker and the reader write it, status and metrics read it.
#[derive(Debug, Default)]
pub struct TierState {
    /// Objects whose bytes were evicted (by this process).
    pub evicted_objects: AtomicU64,
    /// Bytes evicted.
    pub evicted_bytes: AtomicU64,
    /// Blobs opened on a target for a read.
    pub remote_reads: AtomicU64,
    /// Bytes read from targets.
    pub remote_read_bytes: AtomicU64,
    /// Failed remote reads by kind (index: position in [`ErrorKind::ALL`]).
    pub remote_read_failures: [AtomicU64; 9],
    /// Bytes brought back to local disk.
    pub rehydrated_bytes: AtomicU64,
    /// Copies the remote scrub checked.
    pub scrub_checked: AtomicU64,
    /// Completed passes over every policy.
    pub passes: AtomicU64,
    inner: Mutex<TierInner>,
    /// Blobs reads asked to bring back (policies with `rehydrate_on_read`).
    wanted: Mutex<std::collections::BTreeSet<BlobHash>>,
}

#[derive(Debug, Default)]
struct TierInner {
    /// Rows of the last complete pass, by (bucket, policy prefix, repository).
    rows: HashMap<(String, String, String), TierRow>,
    last_pass: Option<SystemTime>,
    last_error: Option<String>,
    scrub_problems: Vec<String>,
    scrub_completed: Option<SystemTime>,
    /// Seconds to the first byte of remote reads, since the last scrape.
    latencies: Vec<f64>,
}

impl TierState {
    /// A new, empty state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Asks the worker to bring `hash` back (bounded: a flood of reads of cold data
    /// cannot grow this without limit; a read that finds it full is simply not cached).
    fn want(&self, hash: BlobHash) {
        let mut w = self.wanted.lock();
        if w.len() < MAX_OBSERVATIONS {
            w.insert(hash);
        }
    }

    fn failed_read(&self, e: &Error) {
        let i = ErrorKind::ALL.iter().position(|k| *k == e.kind).unwrap_or(ErrorKind::ALL.len() - 1);
        self.remote_read_failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed remote reads by kind name.
    pub fn read_failures_by_kind(&self) -> Vec<(&'static str, u64)> {
        ErrorKind::ALL
            .iter()
            .zip(&self.remote_read_failures)
            .map(|(k, n)| (k.name(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Remote read latencies (seconds to the first byte) since the last call.
    pub fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut self.inner.lock().latencies)
    }

    /// Local and remote bytes of the last complete pass: (bucket, repository, row).
    pub fn rows(&self) -> Vec<(String, String, TierRow)> {
        let mut by: HashMap<(String, String), TierRow> = HashMap::new();
        for ((b, _, r), row) in &self.inner.lock().rows {
            by.entry((b.clone(), r.clone())).or_default().add(row);
        }
        let mut out: Vec<_> = by.into_iter().map(|((b, r), row)| (b, r, row)).collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Problems the last remote scrub found.
    pub fn scrub_problems(&self) -> usize {
        self.inner.lock().scrub_problems.len()
    }

    /// Unix time of the last complete pass (0: none yet).
    pub fn last_pass_secs(&self) -> f64 {
        self.inner.lock().last_pass.map_or(0.0, secs)
    }

    /// The `walstore tier status` document.
    pub fn to_json(&self, store: &Store) -> storage::Result<Value> {
        let policies: Vec<Value> = store.tier_policies()?.iter().map(policy_json).collect();
        let totals = store.tier_totals()?;
        let inner = self.inner.lock();
        let mut scopes: Vec<Value> = inner
            .rows
            .iter()
            .map(|((b, p, r), row)| {
                json!({
                    "bucket": b, "prefix": p, "repository": if r.is_empty() { Value::Null } else { json!(r) },
                    "local_objects": row.local_objects, "local_bytes": row.local_bytes,
                    "remote_objects": row.remote_objects, "remote_bytes": row.remote_bytes,
                })
            })
            .collect();
        scopes.sort_by_key(|v| (v["bucket"].to_string(), v["repository"].to_string()));
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(json!({
            "policies": policies,
            "scopes": scopes,
            "remote_blobs": totals.values().map(|t| t.0).sum::<u64>(),
            "remote_bytes": totals.values().map(|t| t.1).sum::<u64>(),
            "remote_by_bucket": totals.iter().map(|(b, (n, bytes))| json!({"bucket": b, "blobs": n, "bytes": bytes})).collect::<Vec<_>>(),
            "evicted_objects": n(&self.evicted_objects),
            "evicted_bytes": n(&self.evicted_bytes),
            "remote_reads": n(&self.remote_reads),
            "remote_read_bytes": n(&self.remote_read_bytes),
            "remote_read_failures": self.remote_read_failures.iter().map(n).sum::<u64>(),
            "rehydrated_bytes": n(&self.rehydrated_bytes),
            "passes": n(&self.passes),
            "last_pass": inner.last_pass.map(unix),
            "last_error": inner.last_error,
            "scrub": {
                "checked": n(&self.scrub_checked),
                "problems": inner.scrub_problems,
                "last_completed": inner.scrub_completed.map(unix),
            },
        }))
    }
}

/// A policy as `walstore tier list` shows it.
pub fn policy_json(p: &TierPolicy) -> Value {
    json!({
        "bucket": p.bucket,
        "prefix": p.prefix,
        "target": p.target,
        "after": storage::units::format_duration(Duration::from_millis(p.after_ms)),
        "keep-newest-backups": p.keep_newest_backups,
        "rehydrate-on-read": p.rehydrate_on_read,
        "created": unix(p.created.to_system()),
    })
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Unix seconds (as the replication status gives times).
fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads evicted blobs from their targets (the store's `RemoteBlobs`).
pub struct TierReader {
    store: Weak<Store>,
    clients: Clients,
    state: Arc<TierState>,
    /// Longest wait for the target's answer or the next piece of a body.
    patience: Duration,
}

impl TierReader {
    /// A reader for `store`'s tiered blobs; `patience` bounds every wait (use the
    /// server's body timeout).
    pub fn new(store: &Arc<Store>, state: Arc<TierState>, patience: Duration) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            store: Arc::downgrade(store),
            clients: Clients::new("walstore-tier-read")?,
            state,
            patience,
        }))
    }

    fn open_remote(&self, hash: &BlobHash, loc: &RemoteLoc, want: std::ops::Range<u64>) -> Result<RemoteBlob> {
        let store = self.store.upgrade().ok_or_else(|| Error::new(ErrorKind::Local, "the store is closing"))?;
        let rec = store
            .replication_target(&loc.target)
            .map_err(|_| Error::new(ErrorKind::Config, format!("replication target {:?} is gone", loc.target)))?;
        let (spec, remote) = self.clients.get(&rec)?;
        let key = spec.target_key(&loc.bucket, &loc.key);
        let began = Instant::now();
        let range = loc.offset + want.start..loc.offset + want.end.min(loc.size);
        let fetched = self.clients.rt.block_on(async {
            match tokio::time::timeout(self.patience, remote.get_range(&key, None, Some(range.clone()))).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(ErrorKind::Network, "the remote S3 store did not answer in time")),
            }
        });
        let fetched = match fetched {
            Err(e) if matches!(e.kind, ErrorKind::Auth | ErrorKind::Config) => {
                self.clients.forget(&rec.name);
                return Err(e);
            }
            other => other?,
        };
        if fetched.metadata.iter().find(|(k, _)| k == META_ETAG).map(|(_, v)| v.as_str()) != Some(loc.etag.as_str()) {
            return Err(Error::new(
                ErrorKind::Checksum,
                format!("the target's copy of {key} is not the version evicted (ETag {})", loc.etag),
            ));
        }
        if fetched.size != range.end - range.start {
            return Err(Error::new(
                ErrorKind::Other,
                format!("the target answered {} bytes of {key}, not {}", fetched.size, range.end - range.start),
            ));
        }
        {
            let mut inner = self.state.inner.lock();
            inner.latencies.truncate(MAX_OBSERVATIONS - 1);
            inner.latencies.push(began.elapsed().as_secs_f64());
        }
        self.state.remote_reads.fetch_add(1, Ordering::Relaxed);
        let policies = store.tier_policies().unwrap_or_default();
        if Store::tier_policy_for(&policies, &loc.bucket, &loc.key).is_some_and(|p| p.rehydrate_on_read) {
            self.state.want(*hash);
        }
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let patience = self.patience;
        let what = key.clone();
        // The whole blob: hashed here, on the runtime's threads, while the serving
        // thread checks CRCs and sends; the verdict follows the last piece.
        let verify = want.start == 0 && range.end - range.start == loc.size;
        let hash = *hash;
        self.clients.rt.spawn(async move {
            let mut body = fetched.body;
            let mut sha = verify.then(Sha256::new);
            loop {
                let next = match tokio::time::timeout(patience, body.next()).await {
                    Ok(Some(Ok(b))) => {
                        if let Some(s) = sha.as_mut() {
                            s.update(&b);
                        }
                        Ok(Piece::Data(b))
                    }
                    Ok(Some(Err(e))) => Err(format!("reading {what} from the target failed: {e}")),
                    Ok(None) => match sha.take().map(|s| <[u8; 32]>::from(s.finalize())) {
                        Some(got) if got != *hash.as_bytes() => Err(format!(
                            "the target's bytes of {what} hash to {}, not {hash}: refusing them",
                            hex::encode(got)
                        )),
                        _ => Ok(Piece::End),
                    },
                    Err(_) => Err(format!("the target sent nothing of {what} for {} s", patience.as_secs())),
                };
                let last = !matches!(next, Ok(Piece::Data(_)));
                if tx.send(next).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(RemoteBlob {
            rt: self.clients.rt.handle().clone(),
            end: want.end.min(loc.size),
            verify,
            patience,
            state: self.state.clone(),
            cursor: Mutex::new(Cursor { pos: want.start, rx, pending: Bytes::new() }),
        })
    }
}

impl RemoteBlobs for TierReader {
    fn open(
        &self,
        hash: &BlobHash,
        loc: &RemoteLoc,
        range: std::ops::Range<u64>,
    ) -> storage::Result<Box<dyn BlobFile>> {
        match self.open_remote(hash, loc, range) {
            Ok(b) => Ok(Box::new(b)),
            Err(e) => {
                self.state.failed_read(&e);
                tracing::warn!(
                    target_name = %loc.target, bucket = %loc.bucket, key = %loc.key, kind = e.kind.name(),
                    "reading a tiered object failed: {}", e.message
                );
                Err(match e.kind {
                    ErrorKind::Checksum | ErrorKind::NotFound => storage::Error::Corrupt(format!(
                        "tiered blob {hash} of {}/{} on target {:?}: {}",
                        loc.bucket, loc.key, loc.target, e.message
                    )),
                    _ => storage::Error::RemoteUnavailable(format!("target {:?}: {}", loc.target, e.message)),
                })
            }
        }
    }
}

/// What the task streaming a target's answer hands the reader.
enum Piece {
    Data(Bytes),
    /// The answer ended (and, for a whole blob, matched its SHA-256).
    End,
}

type PieceResult = std::result::Result<Piece, String>;

struct Cursor {
    /// Offset in the blob of the next byte the stream gives.
    pos: u64,
    rx: mpsc::Receiver<PieceResult>,
    pending: Bytes,
}

/// One evicted blob (or a range of it) being read in order from its target.
struct RemoteBlob {
    rt: tokio::runtime::Handle,
    /// Where the range read ends (in the blob).
    end: u64,
    /// The whole blob is read: its SHA-256 verdict comes before the last bytes go out.
    verify: bool,
    patience: Duration,
    state: Arc<TierState>,
    cursor: Mutex<Cursor>,
}

impl BlobFile for RemoteBlob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut c = self.cursor.lock();
        if offset != c.pos {
            // The store reads blocks in order from where it opened the blob.
            return Err(std::io::Error::other(format!(
                "tiered blob read out of order (at {offset}, stream at {})",
                c.pos
            )));
        }
        if offset + buf.len() as u64 > self.end {
            return Err(std::io::Error::other(format!(
                "tiered blob read past the range opened (ends at {})",
                self.end
            )));
        }
        let deadline = self.patience + Duration::from_secs(1);
        let mut filled = 0;
        while filled < buf.len() {
            if c.pending.is_empty() {
                match recv_timeout(&self.rt, &mut c.rx, deadline)? {
                    Ok(Piece::Data(b)) => c.pending = b,
                    Ok(Piece::End) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the target's answer ended early",
                        ))
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
                continue;
            }
            let n = c.pending.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&c.pending[..n]);
            c.pending = c.pending.slice(n..);
            filled += n;
        }
        c.pos += buf.len() as u64;
        self.state.remote_read_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if self.verify && c.pos == self.end {
            // The last bytes of the blob go out only with the SHA-256 verdict.
            let verdict = match recv_timeout(&self.rt, &mut c.rx, deadline)? {
                Ok(Piece::End) if c.pending.is_empty() => Ok(()),
                Ok(_) => Err("the target sent more bytes than the blob has".to_owned()),
                Err(e) => Err(e),
            };
            if let Err(e) = verdict {
                self.state.failed_read(&Error::new(ErrorKind::Checksum, ""));
                return Err(std::io::Error::other(e));
            }
        }
        Ok(())
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.end)
    }
}

/// Waits for the next body piece from a blocking thread, at most `limit`.
fn recv_timeout(
    rt: &tokio::runtime::Handle,
    rx: &mut mpsc::Receiver<PieceResult>,
    limit: Duration,
) -> std::io::Result<PieceResult> {
    // The timer is made inside the runtime: this runs on threads that are not its own.
    match rt.block_on(async { tokio::time::timeout(limit, rx.recv()).await }) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the target's answer ended early")),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the target stopped sending")),
    }
}

/// The `tier` worker: evicts what policies release, brings back what no policy
/// covers any more, and checks the target's copies of evicted blobs.
pub struct TierJob {
    store: Arc<Store>,
    state: Arc<TierState>,
    clients: Clients,
    interval: Duration,
    scrub_every: Option<Duration>,
    scrub_full: bool,
    /// Bytes reads may keep local (policies with `rehydrate_on_read`).
    cache_budget: u64,
    /// Per policy (bucket, prefix): where the current pass is, and its rows so far.
    passes: HashMap<(String, String), PolicyPass>,
    /// Leftovers of interrupted evictions removed (once per start).
    swept: bool,
    rehydrate_after: Option<BlobHash>,
    scrub_after: Option<BlobHash>,
    scrub_due: Option<Instant>,
    scrub_found: Vec<String>,
}

#[derive(Default)]
struct PolicyPass {
    after: Option<String>,
    rows: std::collections::BTreeMap<String, TierRow>,
}

impl TierJob {
    /// A worker for `store`, due every `interval`; the remote scrub runs every
    /// `scrub_every` (`None`: never), reading every byte with `scrub_full`; reads keep
    /// at most `cache_budget` bytes local.
    pub fn new(
        store: Arc<Store>,
        state: Arc<TierState>,
        interval: Duration,
        scrub_every: Option<Duration>,
        scrub_full: bool,
        cache_budget: u64,
    ) -> std::io::Result<Self> {
        Ok(Self {
            store,
            state,
            clients: Clients::new("walstore-tier")?,
            interval,
            scrub_every,
            scrub_full,
            cache_budget,
            passes: HashMap::new(),
            swept: false,
            rehydrate_after: None,
            scrub_after: None,
            scrub_due: scrub_every.map(|e| Instant::now() + e),
            scrub_found: Vec::new(),
        })
    }

    /// One page of `p`: confirm and evict its candidates. `Ok(true)` when its pass ended.
    fn page(&mut self, p: &TierPolicy, all: &[TierPolicy]) -> Result<bool> {
        let id = (p.bucket.clone(), p.prefix.clone());
        let after = self.passes.get(&id).and_then(|s| s.after.clone());
        let page = self.store.tier_page(p, all, after.as_deref(), PAGE).map_err(local)?;
        let done = page.next.is_none();
        let mut rows = page.rows;
        self.rewarm(&page.rewarm)?;
        if !page.candidates.is_empty() {
            let rec = self.store.replication_target(&p.target).map_err(local)?;
            if rec.paused {
                // A paused target is not kept current: nothing is evicted to it until it resumes.
                tracing::debug!(target_name = %p.target, "tiering waits: the target is paused");
            } else {
                let (spec, remote) = self.clients.get(&rec)?;
                for (key, bytes) in self.evict_all(&p.target, &spec, &remote, page.candidates)? {
                    // The page counted these bytes as local.
                    let repo = wal::split_repo(&key).map_or("", |(r, _)| r);
                    let row = rows.entry(repo.to_owned()).or_default();
                    row.local_bytes = row.local_bytes.saturating_sub(bytes);
                    row.remote_bytes += bytes;
                    row.local_objects = row.local_objects.saturating_sub(1);
                    row.remote_objects += 1;
                }
            }
        }
        let pass = self.passes.entry(id.clone()).or_default();
        for (repo, row) in rows {
            pass.rows.entry(repo).or_default().add(&row);
        }
        pass.after = page.next;
        if done {
            let pass = self.passes.remove(&id).unwrap_or_default();
            let mut inner = self.state.inner.lock();
            inner.rows.retain(|(b, pre, _), _| !(b == &id.0 && pre == &id.1));
            for (repo, row) in pass.rows {
                inner.rows.insert((id.0.clone(), id.1.clone(), repo), row);
            }
        }
        Ok(done)
    }

    /// Confirms and evicts `candidates`; returns the keys evicted with their bytes.
    fn evict_all(
        &self,
        target: &str,
        spec: &TargetSpec,
        remote: &Remote,
        candidates: Vec<ObjectInfo>,
    ) -> Result<Vec<(String, u64)>> {
        let confirmed: Vec<(ObjectInfo, Result<bool>)> = self.clients.rt.block_on(
            stream::iter(candidates)
                .map(|info| async move {
                    let r = confirm(remote, spec, &info).await;
                    (info, r)
                })
                .buffer_unordered(CONFIRM_AT_ONCE)
                .collect(),
        );
        let mut sure = Vec::new();
        for (info, ok) in confirmed {
            match ok {
                Ok(true) => sure.push(info),
                // Not on the target yet (or an older version): the next pass looks again.
                Ok(false) => {}
                Err(e) => return Err(e),
            }
        }
        let freed = self.store.evict_many(&sure, target).map_err(local)?;
        let mut evicted = Vec::new();
        for (info, bytes) in sure.iter().zip(freed) {
            if bytes > 0 {
                evicted.push((info.key.as_str().to_owned(), bytes));
                self.state.evicted_objects.fetch_add(1, Ordering::Relaxed);
                self.state.evicted_bytes.fetch_add(bytes, Ordering::Relaxed);
                tracing::debug!(bucket = %info.bucket, key = %info.key, bytes, "evicted to {target}");
            }
        }
        Ok(evicted)
    }

    /// Brings back blobs no policy sends to their target any more, a page at a time.
    fn rehydrate_page(&mut self, all: &[TierPolicy], budget: &Budget) -> Result<bool> {
        let page = self.store.tiered_blobs(self.rehydrate_after.as_ref(), 256).map_err(local)?;
        let done = page.len() < 256;
        for (hash, loc) in page {
            if budget.stopped() {
                return Ok(false);
            }
            self.rehydrate_after = Some(hash);
            if Store::tier_policy_for(all, &loc.bucket, &loc.key).is_some_and(|p| p.target == loc.target) {
                continue;
            }
            self.bring_back(&hash, false, "no policy sends it to its target any more")?;
        }
        if done {
            self.rehydrate_after = None;
        }
        Ok(done)
    }

    /// Brings evicted blob `hash` back to local disk (into the tier cache with `cache`).
    fn bring_back(&self, hash: &BlobHash, cache: bool, why: &str) -> Result<()> {
        match self.store.rehydrate_blob(hash, cache) {
            Ok(0) => Ok(()),
            Ok(bytes) => {
                self.state.rehydrated_bytes.fetch_add(bytes, Ordering::Relaxed);
                tracing::debug!(blob = %hash, bytes, "brought back: {why}");
                Ok(())
            }
            Err(storage::Error::RemoteUnavailable(m)) => Err(Error::new(ErrorKind::Network, m)),
            Err(e) => Err(local(e)),
        }
    }

    /// Brings back what reads asked for, then trims the cache to its budget (least
    /// recently brought back first: the next pass evicts those again if they are cold).
    fn rehydrate_wanted(&mut self, budget: &Budget) -> Result<()> {
        // The budget first, whatever happens next (a failed read must not leave the
        // cache over it).
        self.trim_cache(0)?;
        for _ in 0..WANTED_PER_RUN {
            let next = self.state.wanted.lock().pop_first();
            let Some(hash) = next else { break };
            if budget.stopped() {
                return Ok(());
            }
            let Some(loc) = self.store.tier_location(&hash).map_err(local)? else { continue };
            if loc.size > self.cache_budget {
                continue;
            }
            // Room for it before it comes: the cache never holds more than its budget.
            self.trim_cache(loc.size)?;
            self.bring_back(&hash, true, "for reads")?;
        }
        Ok(())
    }

    /// Takes the least recently brought back blobs out of the cache until `room` more
    /// bytes fit in its budget (the next pass evicts them again if they are cold).
    fn trim_cache(&self, room: u64) -> Result<()> {
        let cached = self.store.tier_cache().map_err(local)?;
        let mut total: u64 = cached.iter().map(|(_, c)| c.size).sum();
        for (hash, c) in cached {
            if total.saturating_add(room) <= self.cache_budget {
                break;
            }
            self.store.tier_uncache(&hash).map_err(local)?;
            total -= c.size;
        }
        Ok(())
    }

    /// Brings back evicted blobs of objects their policy wants local now.
    fn rewarm(&self, hashes: &[BlobHash]) -> Result<()> {
        for hash in hashes.iter().take(REWARM_PER_PAGE) {
            self.bring_back(hash, false, "its object is hot (or young) again")?;
        }
        Ok(())
    }

    /// Checks a page of evicted blobs' copies; `Ok(true)` when the scrub finished.
    fn scrub_page(&mut self) -> Result<bool> {
        let page = self.store.tiered_blobs(self.scrub_after.as_ref(), 64).map_err(local)?;
        let done = page.len() < 64;
        for (hash, loc) in page {
            self.scrub_after = Some(hash);
            let problem = match self.store.replication_target(&loc.target) {
                Err(_) => Some(format!("target {:?} is gone", loc.target)),
                Ok(rec) => {
                    let (spec, remote) = self.clients.get(&rec)?;
                    let key = spec.target_key(&loc.bucket, &loc.key);
                    match self.clients.rt.block_on(remote.head(&key)) {
                        Err(e) if e.kind == ErrorKind::NotFound => Some(format!("{key}: missing on {:?}", loc.target)),
                        Err(e) => return Err(e),
                        Ok(h) if h.size < loc.offset + loc.size => Some(format!(
                            "{key}: {} bytes on {:?}, the blob ends at {}",
                            h.size,
                            loc.target,
                            loc.offset + loc.size
                        )),
                        Ok(h) if h.meta(META_ETAG) != Some(loc.etag.as_str()) => {
                            Some(format!("{key}: another version on {:?} (ETag {:?})", loc.target, h.meta(META_ETAG)))
                        }
                        // An object of one blob: the checksum its copy carries is the blob's name.
                        Ok(h)
                            if loc.offset == 0
                                && h.size == loc.size
                                && h.meta(META_SHA256).is_some_and(|s| s != hash.to_hex()) =>
                        {
                            Some(format!("{key}: its SHA-256 on {:?} is not the evicted blob's", loc.target))
                        }
                        Ok(_) if self.scrub_full => self.read_through(&hash, &loc).err(),
                        Ok(_) => None,
                    }
                }
            };
            self.state.scrub_checked.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = problem {
                tracing::error!(blob = %hash, bucket = %loc.bucket, key = %loc.key, "tier scrub: {p}");
                self.scrub_found.push(format!("{}/{}: {p}", loc.bucket, loc.key));
            }
        }
        if done {
            self.scrub_after = None;
            let mut inner = self.state.inner.lock();
            inner.scrub_problems = std::mem::take(&mut self.scrub_found);
            inner.scrub_completed = Some(SystemTime::now());
        }
        Ok(done)
    }

    /// Reads a whole evicted blob through the store (CRCs and SHA-256 verified).
    fn read_through(&self, hash: &BlobHash, loc: &RemoteLoc) -> std::result::Result<(), String> {
        let mut r = self.store.read_tiered(hash, loc).map_err(|e| e.to_string())?;
        while r.next_chunk().map_err(|e| e.to_string())?.is_some() {}
        Ok(())
    }

    /// One run: every policy (a failing one does not hold up the others), then what
    /// reads asked for, what no policy covers any more, and the scrub when it is due.
    /// The first error is returned after everything else had its turn.
    fn run(&mut self, budget: &Budget) -> Result<bool> {
        if !self.swept {
            let n = self.store.tier_leftovers().map_err(local)?;
            if n > 0 {
                tracing::info!(files = n, "removed blob files of interrupted evictions");
            }
            self.swept = true;
        }
        let all = self.store.tier_policies().map_err(local)?;
        self.passes.retain(|(b, p), _| all.iter().any(|q| &q.bucket == b && &q.prefix == p));
        self.state.inner.lock().rows.retain(|(b, p, _), _| all.iter().any(|q| &q.bucket == b && &q.prefix == p));
        let mut more = false;
        let mut failed: Option<Error> = None;
        for p in &all {
            loop {
                if budget.stopped() {
                    return Ok(true);
                }
                match self.page(p, &all) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        let e = Error::new(e.kind, format!("{}/{}: {}", p.bucket, p.prefix, e.message));
                        failed.get_or_insert(e);
                        break;
                    }
                }
                if budget.spent() {
                    more = true;
                    break;
                }
            }
        }
        if let Err(e) = self.rehydrate_wanted(budget) {
            failed.get_or_insert(e);
        }
        loop {
            match self.rehydrate_page(&all, budget) {
                Ok(true) => break,
                Ok(false) if budget.spent() => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                    break;
                }
            }
        }
        if self.scrub_due.is_some_and(|d| d <= Instant::now()) {
            loop {
                match self.scrub_page() {
                    Ok(true) => {
                        self.scrub_due = self.scrub_every.map(|e| Instant::now() + e);
                        break;
                    }
                    Ok(false) if budget.spent() => return Ok(true),
                    Ok(false) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if !more {
            self.state.passes.fetch_add(1, Ordering::Relaxed);
            let mut inner = self.state.inner.lock();
            inner.last_pass = Some(SystemTime::now());
            inner.last_error = None;
        }
        Ok(more)
    }
}

/// Whether the target holds exactly `info`'s version (HEAD: size, ETag and write time).
async fn confirm(remote: &Remote, spec: &TargetSpec, info: &ObjectInfo) -> Result<bool> {
    let key = spec.target_key(info.bucket.as_str(), info.key.as_str());
    match remote.head(&key).await {
        Ok(h) => Ok(h.size == info.size
            && h.meta(META_ETAG) == Some(info.etag.as_str())
            && h.meta(META_MTIME) == Some(info.last_modified.as_millis().to_string().as_str())),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn local(e: storage::Error) -> Error {
    Error::new(ErrorKind::Local, e.to_string())
}

impl Worker for TierJob {
    fn name(&self) -> &'static str {
        "tier"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn step(&mut self, _: &Store, budget: &mut Budget) -> storage::Result<Progress> {
        match self.run(budget) {
            Ok(true) => Ok(Progress::More),
            Ok(false) => Ok(Progress::Done),
            Err(e) => {
                let changed = {
                    let mut inner = self.state.inner.lock();
                    let changed = inner.last_error.as_deref() != Some(e.message.as_str());
                    inner.last_error = Some(e.message.clone());
                    changed
                };
                if changed {
                    tracing::warn!(kind = e.kind.name(), "tiering: {} (retried at the next run)", e.message);
                }
                if matches!(e.kind, ErrorKind::Auth | ErrorKind::Config) {
                    self.clients.forget_all();
                }
                Ok(Progress::Done)
            }
        }
    }
}
