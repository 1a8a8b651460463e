//! The WAL catalog of a repository: everything the retention horizon needs,
//! read from the object index in one ordered scan of the repository's
//! `wal_005/` and `basebackups_005/` keys, plus the few small documents whose
//! content matters (stop sentinels, `metadata.json`, timeline history files).
//!
//! The object index is written in the same synced batch as every object, so a
//! snapshot taken from it is always exactly what is stored; there is no second
//! copy that could drift. "Rebuilding the catalog" is taking a new snapshot.

use std::collections::BTreeMap;

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{bucket_prefix, object_key, prefix_end, ObjectEntry, CF_OBJECTS};
use crate::store::Store;
use crate::types::{BucketName, Timestamp};

use super::backup::{MetadataInfo, SentinelInfo};
use super::history::History;
use super::names::{classify, split24, BackupName, Codec, TimelineId, WalObject, BACKUP_DIR, WAL_DIR};

/// Largest document the catalog reads (sentinels, metadata.json, history files).
pub const MAX_DOC_BYTES: usize = 1 << 20;

/// Kinds of per-segment WAL files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalKind {
    /// A full segment.
    Segment,
    /// `.partial`: the last segment of a timeline at promotion.
    Partial,
    /// `.backup`: a backup history file (companion of its segment).
    Label,
}

/// One WAL file, by its name's three 32-bit parts (resolved to a segment number
/// once the segment size is known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFile {
    /// Timeline (first 8 hex digits).
    pub tl: u32,
    /// Middle 8 hex digits.
    pub log: u32,
    /// Last 8 hex digits.
    pub seg: u32,
    /// Segment, partial or label.
    pub kind: WalKind,
    /// Compression.
    pub codec: Codec,
    /// The key inside the repository (`wal_005/…`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When the store received it.
    pub received: Timestamp,
}

/// Any other object of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherFile {
    /// The key inside the repository.
    pub path: String,
    /// What it is.
    pub class: WalObject,
    /// Size in bytes.
    pub size: u64,
    /// When the store received it.
    pub received: Timestamp,
}

/// A parsed document, or why it could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Doc<T> {
    /// Parsed.
    Parsed(T),
    /// Present but unusable (bad JSON, undecodable history, too large).
    Invalid(String),
}

/// All objects of one backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupObjects {
    /// Sentinel content and when it was received.
    pub sentinel: Option<(Doc<SentinelInfo>, Timestamp)>,
    /// `metadata.json` content.
    pub metadata: Option<Doc<MetadataInfo>>,
    /// Every key of the backup inside the repository (sentinel first if present),
    /// with size and receipt time.
    pub files: Vec<(String, u64, Timestamp)>,
}

impl BackupObjects {
    /// Latest receipt time of any of its objects.
    pub fn last_write(&self) -> Timestamp {
        self.files.iter().map(|f| f.2).max().unwrap_or(Timestamp::from_millis(0))
    }
}

/// A timeline history file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryFile {
    /// Key inside the repository.
    pub path: String,
    /// Parsed content.
    pub doc: Doc<History>,
    /// Receipt time.
    pub received: Timestamp,
}

/// Everything in one repository at one moment.
#[derive(Clone, Debug, Default)]
pub struct RepoSnapshot {
    /// Bucket.
    pub bucket: Option<BucketName>,
    /// Repository prefix inside the bucket (empty or ending with `/`).
    pub prefix: String,
    /// When the snapshot was taken.
    pub taken_at: Option<Timestamp>,
    /// WAL segments, partials and labels, in key order.
    pub wal: Vec<WalFile>,
    /// History files by timeline.
    pub histories: BTreeMap<u32, HistoryFile>,
    /// Backups by name.
    pub backups: BTreeMap<BackupName, BackupObjects>,
    /// WAL metadata, delta files and foreign keys.
    pub other: Vec<OtherFile>,
    /// Unresolved split-brain conflicts (from the quarantine).
    pub conflicts: Vec<super::guard::OpenConflict>,
}

impl RepoSnapshot {
    /// Latest receipt time of anything in the repository.
    pub fn newest_receipt(&self) -> Option<Timestamp> {
        let w = self.wal.iter().map(|f| f.received);
        let h = self.histories.values().map(|h| h.received);
        let b = self.backups.values().map(|b| b.last_write());
        w.chain(h).chain(b).max()
    }
}

impl Store {
    /// Lists the repositories (prefixes holding `wal_005/` or `basebackups_005/`)
    /// of a bucket, by scanning its keys and skipping over each found repository.
    pub fn wal_repositories(&self, bucket: &BucketName) -> Result<Vec<String>> {
        self.bucket(bucket)?;
        let bprefix = bucket_prefix(bucket);
        let mut out: Vec<String> = Vec::new();
        let mut it = self.index.raw_iter(CF_OBJECTS, prefix_end(&bprefix))?;
        it.seek(&bprefix);
        while it.valid() {
            let Some(k) = it.key() else { break };
            let key = String::from_utf8_lossy(&k[bprefix.len()..]).into_owned();
            match super::names::split_repo(&key) {
                Some((repo, _)) => {
                    if out.last().map(String::as_str) != Some(repo) {
                        out.push(repo.to_owned());
                    }
                    // Skip the rest of this folder: seek past `<repo><dir>`.
                    let dir = if key[repo.len()..].starts_with(WAL_DIR) { WAL_DIR } else { BACKUP_DIR };
                    let mut next = object_key(bucket, &format!("{repo}{dir}"));
                    match prefix_end(&next) {
                        Some(n) => next = n,
                        None => break,
                    }
                    it.seek(&next);
                }
                None => it.next(),
            }
        }
        it.status()?;
        out.dedup();
        Ok(out)
    }

    /// Takes a snapshot of one repository.
    pub fn wal_snapshot(&self, bucket: &BucketName, prefix: &str) -> Result<RepoSnapshot> {
        self.bucket(bucket)?;
        let mut snap = RepoSnapshot {
            bucket: Some(bucket.clone()),
            prefix: prefix.to_owned(),
            taken_at: Some(Timestamp::now()),
            ..RepoSnapshot::default()
        };
        for dir in [WAL_DIR, BACKUP_DIR] {
            let start = object_key(bucket, &format!("{prefix}{dir}"));
            let skip = bucket_prefix(bucket).len() + prefix.len();
            for item in self.index.range(CF_OBJECTS, &start, prefix_end(&start))? {
                let (k, v) = item?;
                let path = std::str::from_utf8(&k[skip..])
                    .map_err(|_| Error::Decode("object key is not UTF-8".into()))?
                    .to_owned();
                let e: ObjectEntry = codec::decode(&v, CF_OBJECTS)?;
                self.add_to_snapshot(&mut snap, path, &e)?;
            }
        }
        for b in snap.backups.values_mut() {
            // Sentinel first: deletion order and unit listings start with it.
            b.files.sort_by_key(|(p, _, _)| (!p.ends_with("_backup_stop_sentinel.json"), p.clone()));
        }
        Ok(snap)
    }

    fn add_to_snapshot(&self, snap: &mut RepoSnapshot, path: String, e: &ObjectEntry) -> Result<()> {
        let received = e.last_modified;
        let class = classify(&path);
        let wal = |name: &str, kind, codec| -> Option<WalFile> {
            let (tl, log, seg) = split24(name).ok()?;
            Some(WalFile { tl, log, seg, kind, codec, path: path.clone(), size: e.size, received })
        };
        match &class {
            WalObject::Segment { name, codec } => snap.wal.extend(wal(name, WalKind::Segment, *codec)),
            WalObject::Partial { name, codec } => snap.wal.extend(wal(name, WalKind::Partial, *codec)),
            WalObject::BackupLabel { name, codec } => snap.wal.extend(wal(name, WalKind::Label, *codec)),
            WalObject::History { timeline, codec } => {
                let doc = match self.read_doc(e) {
                    Ok(bytes) => match super::codec::decode(*codec, &bytes, MAX_DOC_BYTES) {
                        Ok(plain) => match std::str::from_utf8(&plain) {
                            Ok(text) => match History::parse(*timeline, text) {
                                Ok(h) => Doc::Parsed(h),
                                Err(err) => Doc::Invalid(err.0),
                            },
                            Err(_) => Doc::Invalid("history file is not text".into()),
                        },
                        Err(err) => Doc::Invalid(err.to_string()),
                    },
                    Err(err) => Doc::Invalid(err),
                };
                // With several codecs for one timeline, keep the first seen; the
                // split-brain guard refuses a second, different history anyway.
                snap.histories.entry(timeline.get()).or_insert(HistoryFile { path: path.clone(), doc, received });
            }
            WalObject::Sentinel(b) => {
                let doc = match self.read_doc(e) {
                    Ok(bytes) => SentinelInfo::parse(&bytes).map_or_else(|err| Doc::Invalid(err.0), Doc::Parsed),
                    Err(err) => Doc::Invalid(err),
                };
                let entry = snap.backups.entry(b.clone()).or_default();
                entry.sentinel = Some((doc, received));
                entry.files.push((path.clone(), e.size, received));
            }
            WalObject::BackupMeta(b) => {
                let doc = match self.read_doc(e) {
                    Ok(bytes) => MetadataInfo::parse(&bytes).map_or_else(|err| Doc::Invalid(err.0), Doc::Parsed),
                    Err(err) => Doc::Invalid(err),
                };
                let entry = snap.backups.entry(b.clone()).or_default();
                entry.metadata = Some(doc);
                entry.files.push((path.clone(), e.size, received));
            }
            WalObject::FilesMeta(b) | WalObject::BackupData(b) => {
                snap.backups.entry(b.clone()).or_default().files.push((path.clone(), e.size, received));
            }
            WalObject::WalMeta | WalObject::WalDelta | WalObject::Foreign => {
                snap.other.push(OtherFile { path: path.clone(), class: class.clone(), size: e.size, received })
            }
        }
        Ok(())
    }

    /// Reads a small object's bytes (verified block by block).
    fn read_doc(&self, e: &ObjectEntry) -> std::result::Result<Vec<u8>, String> {
        if e.size as usize > MAX_DOC_BYTES {
            return Err(format!("document of {} bytes is larger than {MAX_DOC_BYTES}", e.size));
        }
        let mut out = Vec::with_capacity(e.size as usize);
        for b in &e.blobs {
            let mut r = self.read_blob(b, 0..b.size).map_err(|err| err.to_string())?;
            while let Some(chunk) = r.next_chunk().map_err(|err| err.to_string())? {
                out.extend_from_slice(&chunk);
            }
        }
        Ok(out)
    }
}

/// Timeline of a history-file key, for callers outside the snapshot.
pub fn history_timeline(path: &str) -> Option<TimelineId> {
    match classify(path) {
        WalObject::History { timeline, .. } => Some(timeline),
        _ => None,
    }
}
