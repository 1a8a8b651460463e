//! The WAL catalog of a repository as plain data: everything the retention
//! horizon needs about the repository's `wal_005/` and `basebackups_005/` keys,
//! plus the few small documents whose content matters (stop sentinels,
//! `metadata.json`, timeline history files).
//!
//! This module only classifies and parses; it reads nothing. Whoever owns the
//! objects (the storage crate's index scan, a test) feeds every key of the
//! repository, in key order, to [`RepoSnapshot::add`], handing over a closure
//! that reads a document's bytes only when its content matters.

use std::collections::BTreeMap;

use crate::backup::{MetadataInfo, SentinelInfo};
use crate::history::History;
use crate::names::{classify, split24, BackupName, Codec, TimelineId, WalObject};
use crate::time::Timestamp;

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
    pub bucket: Option<String>,
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
    pub conflicts: Vec<OpenConflict>,
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

impl RepoSnapshot {
    /// Adds one object of the repository: `path` is its key inside the
    /// repository (`wal_005/…`, `basebackups_005/…`), `read` returns its bytes
    /// (called only for sentinels, `metadata.json` and history files; an `Err`
    /// makes the document [`Doc::Invalid`] with that text).
    pub fn add(
        &mut self,
        path: String,
        size: u64,
        received: Timestamp,
        read: impl FnOnce() -> Result<Vec<u8>, String>,
    ) {
        let class = classify(&path);
        let wal = |name: &str, kind, codec| -> Option<WalFile> {
            let (tl, log, seg) = split24(name).ok()?;
            Some(WalFile { tl, log, seg, kind, codec, path: path.clone(), size, received })
        };
        match &class {
            WalObject::Segment { name, codec } => self.wal.extend(wal(name, WalKind::Segment, *codec)),
            WalObject::Partial { name, codec } => self.wal.extend(wal(name, WalKind::Partial, *codec)),
            WalObject::BackupLabel { name, codec } => self.wal.extend(wal(name, WalKind::Label, *codec)),
            WalObject::History { timeline, codec } => {
                let doc = match read() {
                    Ok(bytes) => match crate::codec::decode(*codec, &bytes, MAX_DOC_BYTES) {
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
                self.histories.entry(timeline.get()).or_insert(HistoryFile { path: path.clone(), doc, received });
            }
            WalObject::Sentinel(b) => {
                let doc = match read() {
                    Ok(bytes) => SentinelInfo::parse(&bytes).map_or_else(|err| Doc::Invalid(err.0), Doc::Parsed),
                    Err(err) => Doc::Invalid(err),
                };
                let entry = self.backups.entry(b.clone()).or_default();
                entry.sentinel = Some((doc, received));
                entry.files.push((path.clone(), size, received));
            }
            WalObject::BackupMeta(b) => {
                let doc = match read() {
                    Ok(bytes) => MetadataInfo::parse(&bytes).map_or_else(|err| Doc::Invalid(err.0), Doc::Parsed),
                    Err(err) => Doc::Invalid(err),
                };
                let entry = self.backups.entry(b.clone()).or_default();
                entry.metadata = Some(doc);
                entry.files.push((path.clone(), size, received));
            }
            WalObject::FilesMeta(b) | WalObject::BackupData(b) => {
                self.backups.entry(b.clone()).or_default().files.push((path.clone(), size, received));
            }
            WalObject::WalMeta | WalObject::WalDelta | WalObject::Foreign => {
                self.other.push(OtherFile { class: class.clone(), path, size, received })
            }
        }
    }

    /// Call once every object was added: orders each backup's files sentinel
    /// first (deletion order and unit listings start with it).
    pub fn finish(&mut self) {
        for b in self.backups.values_mut() {
            b.files.sort_by_key(|(p, _, _)| (!p.ends_with("_backup_stop_sentinel.json"), p.clone()));
        }
    }
}

/// An unresolved quarantined conflict of a repository (input of the horizon).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenConflict {
    /// Quarantine record id.
    pub id: String,
    /// Path inside the repository the refused upload was for.
    pub path: String,
    /// A timeline history file (two nodes promoted to the same timeline).
    pub history: bool,
    /// Refused by the identity check (another cluster's upload), not the split-brain guard.
    pub foreign: bool,
    /// When it was refused.
    pub time: Timestamp,
}

/// Timeline of a history-file key, for callers outside the snapshot.
pub fn history_timeline(path: &str) -> Option<TimelineId> {
    match classify(path) {
        WalObject::History { timeline, .. } => Some(timeline),
        _ => None,
    }
}
