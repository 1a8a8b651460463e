//! Import: move in from MinIO (or any S3) without losing a restorable backup.
//!
//! Every object under the source prefix is copied with its key (under `--to`), bytes, user
//! metadata, content type and encoding, **LastModified** (WAL-G picks `LATEST` by the
//! sentinels' LastModified) and ETag (multipart `-N` ETags included). Bytes are staged and
//! hashed like any upload; a single-part source ETag (its MD5) is compared with the bytes
//! received, and every GET carries `If-Match` of the listed ETag, so an object replaced during
//! the copy is refused and counted, never stored half-old.
//!
//! Idempotent and resumable: an object already stored with the source's ETag and size is
//! skipped, so a second run (or a run after a crash or Ctrl-C) copies only what is missing or
//! changed. An object that walstore holds with a *newer* LastModified than the source's is
//! kept (it was written through walstore after the cut-over) and counted. It uses the same
//! client and staging code as [`crate::rebuild`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use storage::{BucketName, ETag, ObjectKey, ObjectMeta, RestoreRequest, Store, Timestamp};

use crate::client::{list_all, Listed, Remote};
use crate::error::{Error, ErrorKind, Result};
use crate::rebuild::{stage, CopyProgress};
use crate::spec::TargetSpec;

/// Objects copied at once.
const CONCURRENCY: usize = 4;
/// Source objects older than the last completed run by more than this are not compared
/// again with `--since-last-run` (listing times are whole seconds; clocks differ).
const SINCE_SLACK: Duration = Duration::from_secs(300);

/// What to import, and where to.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Local bucket (created if missing).
    pub to_bucket: BucketName,
    /// Local prefix replacing the source prefix (empty: keys as in the source).
    pub to_prefix: String,
    /// List what would be copied; copy nothing.
    pub dry_run: bool,
    /// Skip source objects older than the start of the last completed run of this import.
    pub since_last_run: bool,
}

/// One line of the summary's problems.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Problem {
    /// Source key.
    pub key: String,
    /// What happened.
    pub reason: String,
}

/// Per top-level prefix of the source: what the final verification compared.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct PrefixCheck {
    /// Objects in the source listing.
    pub source_objects: u64,
    /// Their bytes.
    pub source_bytes: u64,
    /// Objects walstore holds with the same size and ETag.
    pub matching: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Objects in the source listing (after `--since-last-run`).
    pub listed: u64,
    /// Objects copied by this run.
    pub copied: u64,
    /// Their bytes.
    pub copied_bytes: u64,
    /// Objects already stored identically (a previous run, or resumed).
    pub unchanged: u64,
    /// Skipped by `--since-last-run`.
    pub skipped_old: u64,
    /// With `--dry-run`: the source keys that would be copied.
    pub would_copy: Vec<String>,
    /// Kept because walstore holds a newer write of the key.
    pub kept_newer: Vec<Problem>,
    /// Not copied: changed or deleted during the copy, or a key walstore cannot store.
    pub failed: Vec<Problem>,
    /// Stopped before the end (Ctrl-C): run again to resume.
    pub interrupted: bool,
    /// Verification per top-level prefix (first path component).
    pub verification: BTreeMap<String, PrefixCheck>,
    /// Seconds taken.
    pub seconds: f64,
    /// A dry run (nothing copied).
    #[serde(default)]
    pub dry_run: bool,
}

impl ImportReport {
    /// Whether everything listed is in walstore as in the source (or kept as newer).
    pub fn complete(&self) -> bool {
        !self.interrupted
            && self.failed.is_empty()
            && self.verification.values().all(|c| c.matching == c.source_objects)
    }
}

/// The `meta` key of an import's last completed run, per source.
fn last_run_key(spec: &TargetSpec) -> String {
    format!("{}/{}/{}", spec.endpoint.trim_end_matches('/'), spec.bucket, spec.prefix)
}

/// Imports `spec`'s bucket/prefix into `store` (credentials as for a target named `name`).
pub fn import(
    store: Arc<Store>,
    name: &str,
    spec: &TargetSpec,
    opts: &ImportOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CopyProgress),
) -> Result<ImportReport> {
    let (rt, remote) = crate::client::runtime_for(name, spec)?;
    let started = store.now();
    let report = rt.block_on(run(&store, &remote, spec, opts, stop, progress))?;
    if report.complete() && !opts.dry_run {
        store.set_import_mark(&last_run_key(spec), started)?;
    }
    Ok(report)
}

/// Where source key `key` goes locally.
fn local_key(spec: &TargetSpec, opts: &ImportOptions, key: &str) -> String {
    format!("{}{}", opts.to_prefix, key.strip_prefix(spec.prefix.as_str()).unwrap_or(key))
}

/// The local object if it holds `l` as listed (same ETag and size).
fn same(store: &Store, bucket: &BucketName, key: &str, l: &Listed) -> Result<(bool, Option<Timestamp>)> {
    match store.replication_current(bucket.as_str(), key)? {
        Some(cur) => Ok((Some(cur.etag.as_str()) == l.etag.as_deref() && cur.size == l.size, Some(cur.last_modified))),
        None => Ok((false, None)),
    }
}

async fn run(
    store: &Arc<Store>,
    remote: &Remote,
    spec: &TargetSpec,
    opts: &ImportOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CopyProgress),
) -> Result<ImportReport> {
    let start = Instant::now();
    let mut rep = ImportReport { dry_run: opts.dry_run, ..Default::default() };
    let mut listing = list_all(remote, &spec.prefix).await?;
    if opts.since_last_run {
        if let Some(last) = store.import_mark(&last_run_key(spec))? {
            let floor = last.minus(SINCE_SLACK);
            let before = listing.len();
            listing.retain(|l| l.last_modified.is_none_or(|t| t >= floor));
            rep.skipped_old = (before - listing.len()) as u64;
        }
    }
    rep.listed = listing.len() as u64;
    let mut p = CopyProgress {
        total_objects: rep.listed,
        total_bytes: listing.iter().map(|l| l.size).sum(),
        ..Default::default()
    };
    let mut todo = Vec::new();
    for l in &listing {
        let key = local_key(spec, opts, &l.key);
        if ObjectKey::parse(&key).is_err() {
            rep.failed.push(Problem { key: l.key.clone(), reason: format!("walstore cannot store the key {key:?}") });
            p.done_objects += 1;
            continue;
        }
        let (identical, local_time) = same(store, &opts.to_bucket, &key, l)?;
        if identical {
            rep.unchanged += 1;
            p.done_objects += 1;
            p.done_bytes += l.size;
        } else if local_time.zip(l.last_modified).is_some_and(|(local, src)| local > src) {
            rep.kept_newer
                .push(Problem { key: l.key.clone(), reason: "walstore holds a newer write of this key (kept)".into() });
            p.done_objects += 1;
        } else if opts.dry_run {
            rep.would_copy.push(l.key.clone());
        } else {
            todo.push((l.clone(), key));
        }
    }
    progress(&p);
    if !opts.dry_run && !todo.is_empty() {
        match store.bucket(&opts.to_bucket) {
            Err(storage::Error::NoSuchBucket) => match store.create_bucket(&opts.to_bucket) {
                Ok(_) | Err(storage::Error::BucketAlreadyExists) => {}
                Err(e) => return Err(e.into()),
            },
            r => {
                r?;
            }
        }
    }
    let mut results = stream::iter(todo)
        .map(|(l, key)| async move {
            if stop.load(Ordering::Relaxed) {
                return (l, None);
            }
            let r = copy_one(store, remote, opts, &l, &key).await;
            (l, Some(r))
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((l, r)) = results.next().await {
        match r {
            None => rep.interrupted = true,
            Some(Ok(())) => {
                rep.copied += 1;
                rep.copied_bytes += l.size;
            }
            Some(Err(e)) if matches!(e.kind, ErrorKind::Local | ErrorKind::Config | ErrorKind::Auth) => return Err(e),
            Some(Err(e)) => rep.failed.push(Problem { key: l.key.clone(), reason: e.message }),
        }
        p.done_objects += 1;
        p.done_bytes += l.size;
        p.elapsed = start.elapsed();
        progress(&p);
    }
    // Verification: what walstore holds now against the listing, per top-level prefix.
    for l in &listing {
        let c = rep.verification.entry(top_folder(spec, &l.key)).or_default();
        c.source_objects += 1;
        c.source_bytes += l.size;
        let key = local_key(spec, opts, &l.key);
        if ObjectKey::parse(&key).is_ok() && same(store, &opts.to_bucket, &key, l)?.0 {
            c.matching += 1;
        }
    }
    // Objects kept as newer count as present.
    for k in &rep.kept_newer {
        if let Some(c) = rep.verification.get_mut(&top_folder(spec, &k.key)) {
            c.matching += 1;
        }
    }
    rep.seconds = start.elapsed().as_secs_f64();
    Ok(rep)
}

/// The first folder of a source key below the source prefix (`""` for a key directly in it):
/// what the verification groups by.
fn top_folder(spec: &TargetSpec, key: &str) -> String {
    let rest = key.strip_prefix(spec.prefix.as_str()).unwrap_or(key);
    rest.split_once('/').map_or_else(String::new, |(top, _)| format!("{top}/"))
}

/// Copies one object: GET with `If-Match` of the listed ETag, staged and checked, stored
/// with the source's ETag and LastModified.
async fn copy_one(store: &Arc<Store>, remote: &Remote, opts: &ImportOptions, l: &Listed, key: &str) -> Result<()> {
    let mut f = match remote.get(&l.key, l.etag.as_deref()).await {
        Ok(f) => f,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(Error::new(ErrorKind::NotFound, "deleted from the source during the copy"))
        }
        Err(e) if e.message.starts_with("PreconditionFailed") => {
            return Err(Error::new(ErrorKind::Other, "changed on the source during the copy (run again to copy it)"))
        }
        Err(e) => return Err(e),
    };
    let staged = stage(store, &mut f, &l.key).await?;
    let etag = f.etag.clone().or_else(|| l.etag.clone()).unwrap_or_else(|| hex::encode(staged.md5));
    if !etag.contains('-') && etag.len() == 32 && etag != hex::encode(staged.md5) {
        return Err(Error::new(
            ErrorKind::Checksum,
            format!("the bytes received do not match the source's ETag {etag} (MD5 {})", hex::encode(staged.md5)),
        ));
    }
    // The listing's second-precision time is what WAL-G saw; the GET's is the same.
    let last_modified = l.last_modified.or(f.last_modified).unwrap_or_else(|| store.now());
    let parts_count = etag.rsplit_once('-').and_then(|(_, n)| n.parse().ok());
    let meta =
        ObjectMeta { content_type: f.content_type.clone(), headers: f.headers.clone(), user: f.metadata.clone() };
    let (store, bucket, key) = (store.clone(), opts.to_bucket.clone(), ObjectKey::parse(key)?);
    tokio::task::spawn_blocking(move || {
        store.restore_object(RestoreRequest {
            bucket: &bucket,
            key: &key,
            blob: staged,
            meta,
            checksum: None,
            etag: ETag::from_client(&etag),
            last_modified,
            parts_count,
        })
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Local, format!("store task failed: {e}")))??;
    Ok(())
}

/// An import running inside the server (started through the admin API), one at a time.
#[derive(Default)]
pub struct ImportJob {
    state: parking_lot::Mutex<JobState>,
    stop: Arc<AtomicBool>,
}

/// What `GET /_walstore/import` answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobState {
    /// An import is running.
    pub running: bool,
    /// `endpoint/bucket/prefix` of the source.
    pub source: String,
    /// Objects done and listed, bytes done and listed, seconds so far.
    pub done_objects: u64,
    /// Objects listed.
    pub total_objects: u64,
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes listed.
    pub total_bytes: u64,
    /// Seconds since the start.
    pub seconds: f64,
    /// The report of the last finished run.
    pub report: Option<ImportReport>,
    /// Why the last run failed as a whole.
    pub error: Option<String>,
}

impl ImportJob {
    /// Starts an import on its own thread; refused while one runs.
    pub fn start(
        self: &Arc<Self>,
        store: Arc<Store>,
        spec: TargetSpec,
        opts: ImportOptions,
    ) -> std::result::Result<(), String> {
        {
            let mut st = self.state.lock();
            if st.running {
                return Err(format!("an import from {} is running; wait for it or stop it", st.source));
            }
            *st = JobState { running: true, source: last_run_key(&spec), ..Default::default() };
        }
        self.stop.store(false, Ordering::SeqCst);
        let job = self.clone();
        std::thread::Builder::new()
            .name("walstore-import".into())
            .spawn(move || {
                let mut show = |p: &CopyProgress| {
                    let mut st = job.state.lock();
                    st.done_objects = p.done_objects;
                    st.total_objects = p.total_objects;
                    st.done_bytes = p.done_bytes;
                    st.total_bytes = p.total_bytes;
                    st.seconds = p.elapsed.as_secs_f64();
                };
                let r = import(store, "import", &spec, &opts, &job.stop, &mut show);
                let mut st = job.state.lock();
                st.running = false;
                match r {
                    Ok(rep) => {
                        tracing::info!(source = %st.source, copied = rep.copied, failed = rep.failed.len(), "import finished");
                        st.report = Some(rep);
                    }
                    Err(e) => {
                        tracing::warn!(source = %st.source, "import failed: {}", e.message);
                        st.error = Some(format!("{}: {}", e.kind.name(), e.message));
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| {
                self.state.lock().running = false;
                format!("cannot start the import thread: {e}")
            })
    }

    /// The state of the running (or last) import.
    pub fn status(&self) -> JobState {
        self.state.lock().clone()
    }

    /// Asks a running import to stop between objects.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// An import as the CLI hands it to a running server (`POST /_walstore/import`). Holds
/// the source's key, which the server keeps in memory only, for this run.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImportRequest {
    /// Source endpoint.
    pub endpoint: String,
    /// Source bucket.
    pub bucket: String,
    /// Source prefix (empty or ending in `/`).
    #[serde(default)]
    pub prefix: String,
    /// Source region.
    pub region: String,
    /// CA certificate to trust for an https source.
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Source access key id.
    pub access_key_id: String,
    /// Source secret.
    pub secret_access_key: String,
    /// `BUCKET[/PREFIX]` in walstore.
    pub to: String,
    /// List only.
    #[serde(default)]
    pub dry_run: bool,
    /// Only what changed since the last complete run.
    #[serde(default)]
    pub since_last_run: bool,
}

impl ImportRequest {
    /// The source as a client spec, and the options.
    pub fn resolve(&self) -> std::result::Result<(TargetSpec, ImportOptions), String> {
        let spec = TargetSpec {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            ca_cert: self.ca_cert.clone(),
            credentials_file: None,
            deletes: crate::DeletePolicy::Never,
            concurrency: CONCURRENCY,
            part_size: crate::spec::DEFAULT_PART_SIZE,
            secret: Some(crate::spec::Secret {
                access_key_id: self.access_key_id.clone(),
                secret_access_key: self.secret_access_key.clone(),
            }),
        };
        spec.validate()?;
        let to = self.to.trim_start_matches('/');
        let (b, p) = to.split_once('/').unwrap_or((to, ""));
        let to_bucket = BucketName::parse(b).map_err(|e| format!("--to {to:?}: {e}"))?;
        if !p.is_empty() && !p.ends_with('/') {
            return Err(format!("--to {to:?}: the prefix must end with '/'"));
        }
        Ok((
            spec,
            ImportOptions {
                to_bucket,
                to_prefix: p.to_owned(),
                dry_run: self.dry_run,
                since_last_run: self.since_last_run,
            },
        ))
    }
}
