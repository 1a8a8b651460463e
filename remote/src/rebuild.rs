//! Rebuild: a data directory made again from an off-box copy.
//!
//! Every object under the target's prefix that replication wrote (it carries
//! [`META_SHA256`] and friends) is read, its bytes hashed as they are staged, and
//! committed only if the SHA-256 equals the one recorded when it was sent: an object
//! changed on the target behind walstore's back is refused and named, never stored.
//! Objects are stored with their original ETag, LastModified, metadata and content
//! type. A rebuild is resumable: an object already in the store was committed by an
//! earlier run (nothing else writes during a rebuild) and is skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use storage::{BucketName, Checksum, ETag, ObjectKey, ObjectMeta, RestoreRequest, Store, Timestamp};

use crate::client::{
    Fetched, Remote, META_CHECKSUM, META_CONTENT_TYPE, META_ETAG, META_HEADERS, META_MTIME, META_PARTS, META_SHA256,
};
use crate::error::{Error, ErrorKind, Result};
use crate::spec::TargetSpec;

/// Objects fetched at once.
const CONCURRENCY: usize = 4;

/// How far a copy from a remote bucket (rebuild, import) got.
#[derive(Debug, Clone, Default)]
pub struct CopyProgress {
    /// Objects on the target (known after the listing).
    pub total_objects: u64,
    /// Their bytes.
    pub total_bytes: u64,
    /// Objects stored (or found stored by an earlier run).
    pub done_objects: u64,
    /// Their bytes.
    pub done_bytes: u64,
    /// Time since the start.
    pub elapsed: Duration,
}

impl CopyProgress {
    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        self.done_bytes as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// Estimated time left.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0).then(|| Duration::from_secs_f64(self.total_bytes.saturating_sub(self.done_bytes) as f64 / rate))
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildSummary {
    /// Objects stored by this run.
    pub restored: u64,
    /// Their bytes.
    pub restored_bytes: u64,
    /// Objects an earlier run had stored.
    pub already: u64,
    /// Keys on the target that replication did not write (no walstore metadata, or
    /// outside `<prefix><bucket>/`): left alone.
    pub foreign: Vec<String>,
    /// Objects refused, with the reason (changed on the target, unreadable).
    pub refused: Vec<(String, String)>,
    /// Stopped before the end (Ctrl-C); run again to resume.
    pub interrupted: bool,
    /// Time taken.
    pub elapsed: Duration,
}

/// Rebuilds `store` from target `spec` (credentials as for target `name`).
/// `progress` is called after every object; `stop` ends the run between objects.
pub fn rebuild(
    store: Arc<Store>,
    name: &str,
    spec: &TargetSpec,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CopyProgress),
) -> Result<RebuildSummary> {
    let (rt, remote) = crate::client::runtime_for(name, spec)?;
    rt.block_on(run(store, &remote, spec, stop, progress))
}

async fn run(
    store: Arc<Store>,
    remote: &Remote,
    spec: &TargetSpec,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CopyProgress),
) -> Result<RebuildSummary> {
    let start = Instant::now();
    let mut sum = RebuildSummary::default();
    let keys = crate::client::list_all(remote, &spec.prefix).await?;
    let mut p = CopyProgress {
        total_objects: keys.len() as u64,
        total_bytes: keys.iter().map(|k| k.size).sum(),
        ..Default::default()
    };
    let mut todo = Vec::new();
    for k in keys {
        let Some((bucket, key)) = spec.source_of(&k.key) else {
            sum.foreign.push(k.key);
            continue;
        };
        let (Ok(b), Ok(o)) = (BucketName::parse(bucket), ObjectKey::parse(key)) else {
            sum.foreign.push(k.key);
            continue;
        };
        if store.replication_current(b.as_str(), o.as_str())?.is_some() {
            sum.already += 1;
            p.done_objects += 1;
            p.done_bytes += k.size;
            continue;
        }
        todo.push((k, b, o));
    }
    progress(&p);
    let mut results = stream::iter(todo)
        .map(|(k, b, o)| {
            let store = store.clone();
            async move {
                if stop.load(Ordering::Relaxed) {
                    return (k, None);
                }
                let r = restore_one(&store, remote, &k.key, &b, &o).await;
                (k, Some(r))
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((k, r)) = results.next().await {
        match r {
            None => sum.interrupted = true,
            Some(Ok(Some(size))) => {
                sum.restored += 1;
                sum.restored_bytes += size;
            }
            Some(Ok(None)) => sum.foreign.push(k.key.clone()),
            Some(Err(e)) if matches!(e.kind, ErrorKind::Checksum | ErrorKind::NotFound | ErrorKind::Other) => {
                sum.refused.push((k.key.clone(), e.message))
            }
            Some(Err(e)) => return Err(e),
        }
        p.done_objects += 1;
        p.done_bytes += k.size;
        p.elapsed = start.elapsed();
        progress(&p);
    }
    sum.elapsed = start.elapsed();
    Ok(sum)
}

/// Streams a fetched body into a staged blob (hashed as it is written); refuses a body
/// shorter or longer than announced.
pub(crate) async fn stage(store: &Store, f: &mut Fetched, key: &str) -> Result<storage::StagedBlob> {
    let mut w = store.blob_writer_for(&[], Some(f.size))?;
    while let Some(chunk) = f
        .body
        .try_next()
        .await
        .map_err(|e| Error::new(ErrorKind::Network, format!("reading {key} from the remote store: {e}")))?
    {
        w.write_bytes(chunk)?;
    }
    let staged = w.finish()?;
    if staged.size != f.size {
        return Err(Error::new(ErrorKind::Network, format!("{key}: {} bytes read, {} announced", staged.size, f.size)));
    }
    Ok(staged)
}

fn meta<'a>(f: &'a Fetched, name: &str) -> Option<&'a str> {
    f.metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Fetches, verifies and stores one object; returns its size (`None`: the object
/// has no walstore metadata, so replication did not write it).
async fn restore_one(
    store: &Arc<Store>,
    remote: &Remote,
    key: &str,
    b: &BucketName,
    o: &ObjectKey,
) -> Result<Option<u64>> {
    let mut f = remote.get(key, None).await?;
    let (Some(sha), Some(etag), Some(mtime)) = (meta(&f, META_SHA256), meta(&f, META_ETAG), meta(&f, META_MTIME))
    else {
        return Ok(None);
    };
    let (sha, etag, mtime) = (sha.to_owned(), etag.to_owned(), mtime.to_owned());
    let bad = |what: &str| Error::new(ErrorKind::Other, format!("{key}: unreadable {what} metadata"));
    let want_sha = hex::decode(&sha).map_err(|_| bad(META_SHA256))?;
    let etag = ETag::from_client(&etag);
    let mtime = Timestamp::from_millis(mtime.parse().map_err(|_| bad(META_MTIME))?);
    let mut user = Vec::new();
    for (k, v) in &f.metadata {
        if !k.starts_with("walstore-") {
            user.push((k.clone(), v.clone()));
        }
    }
    let headers: Vec<(String, String)> = match meta(&f, META_HEADERS) {
        Some(h) => serde_json::from_str(h).map_err(|_| bad(META_HEADERS))?,
        None => Vec::new(),
    };
    let checksum: Option<Checksum> = match meta(&f, META_CHECKSUM) {
        Some(c) => Some(serde_json::from_str(c).map_err(|_| bad(META_CHECKSUM))?),
        None => None,
    };
    let parts_count = match meta(&f, META_PARTS) {
        Some(n) => Some(n.parse().map_err(|_| bad(META_PARTS))?),
        None => None,
    };
    let staged = stage(store, &mut f, key).await?;
    if staged.hash.as_bytes().as_slice() != want_sha.as_slice() {
        return Err(Error::new(
            ErrorKind::Checksum,
            format!(
                "changed on the target: its bytes hash to {} but replication sent {sha} (refused; the object was \
                 modified or replaced behind walstore's back)",
                staged.hash.to_hex()
            ),
        ));
    }
    let size = staged.size;
    // The content type as the client sent it (none is recorded as empty: the target
    // answers a default type of its own for an object stored without one).
    let content_type = match meta(&f, META_CONTENT_TYPE) {
        Some("") => None,
        Some(t) => Some(t.to_owned()),
        None => f.content_type.clone(),
    };
    let meta = ObjectMeta { content_type, headers, user };
    let store = store.clone();
    let (b, o) = (b.clone(), o.clone());
    tokio::task::spawn_blocking(move || {
        store.restore_object(RestoreRequest {
            bucket: &b,
            key: &o,
            blob: staged,
            meta,
            checksum,
            etag,
            last_modified: mtime,
            parts_count,
        })
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Local, format!("store task failed: {e}")))??;
    Ok(Some(size))
}
