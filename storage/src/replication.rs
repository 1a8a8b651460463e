//! The replication journal: what must reach each off-box copy.
//!
//! A replication target is registered here with the part of the store it copies
//! (every bucket, one bucket, or a prefix of one). From then on every change of a
//! key's current state in that part (a PUT, a completed multipart upload, a copy, a
//! DELETE, a retention deletion, a quarantine resolution) adds a journal entry **in
//! the same index batch as the change itself**: an acknowledged change is never
//! missed, whatever crashes when. The worker that drains the journal (crate
//! `walstore-remote`) reads entries oldest first, makes the target match the key's
//! *current* state, and removes the entry only after the target confirmed it; a
//! crash in between sends the change again, which is idempotent.
//!
//! Entries live in the `replq` column family:
//! - `<target> 0x00 'Q' <seq u64 BE>`: pending, oldest first;
//! - `<target> 0x00 'D' <due ms u64 BE> <seq u64 BE>`: deletes the target's delete
//!   policy holds back until `due` (so a local delete cannot delete the copy at once),
//!   ordered by due time, so a backup's sentinel still goes first.
//!
//! Sequence numbers grow with the clock (microseconds) and never repeat, across
//! restarts too: a change made after another one commits gets a larger number.
//! Storage knows nothing of endpoints or credentials: a target's client settings
//! are an opaque document ([`TargetRecord::spec`]) the worker owns.

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{bucket_prefix, prefix_end, ObjectEntry, CF_META, CF_OBJECTS, CF_REPLQ};
use crate::store::Store;
use crate::types::{BucketName, RemoteLoc, TargetRecord, TierPolicy, Timestamp};

impl TargetRecord {
    fn covers(&self, bucket: &str, key: &str) -> bool {
        self.source_bucket.as_deref().is_none_or(|b| b == bucket) && key.starts_with(&self.source_prefix)
    }
}

/// What a journal entry asks of the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalOp {
    /// The key now holds this object (identified by ETag and write time).
    Put {
        /// ETag of the version written.
        etag: String,
        /// Its write time.
        last_modified: Timestamp,
        /// Its size.
        size: u64,
    },
    /// The key no longer has a current version.
    Delete,
}

/// One change to send to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// What changed.
    pub op: JournalOp,
    /// When the change was made (the age of the oldest pending entry is the lag).
    pub at: Timestamp,
}

impl JournalEntry {
    /// Bytes the change sends (0 for a delete).
    pub fn size(&self) -> u64 {
        match self.op {
            JournalOp::Put { size, .. } => size,
            JournalOp::Delete => 0,
        }
    }
}

/// Position of an entry in its target's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JournalId {
    /// Sequence number (order of the changes).
    pub seq: u64,
    /// When a held-back delete is due; `None` for a pending entry.
    pub due: Option<Timestamp>,
}

/// The state of one target's journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Pending changes.
    pub objects: u64,
    /// Bytes the pending changes send.
    pub bytes: u64,
    /// When the oldest pending change was made.
    pub oldest: Option<Timestamp>,
    /// Deletes held back by the delete policy.
    pub held_deletes: u64,
    /// When the next held-back delete is due.
    pub next_due: Option<Timestamp>,
}

const META_PREFIX: &[u8] = b"repl/";
const QUEUE: u8 = b'Q';
const HELD: u8 = b'D';
/// Entries written per batch when a new target is filled with what is already stored.
const BACKFILL_BATCH: usize = 4096;

fn meta_key(name: &str) -> Vec<u8> {
    [META_PREFIX, name.as_bytes()].concat()
}

fn target_prefix(name: &str, kind: u8) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k.push(kind);
    k
}

fn queue_key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = target_prefix(name, QUEUE);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn held_key(name: &str, due: Timestamp, seq: u64) -> Vec<u8> {
    let mut k = target_prefix(name, HELD);
    k.extend_from_slice(&u64::try_from(due.as_millis()).unwrap_or(0).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn id_of(name: &str, key: &[u8]) -> Option<JournalId> {
    let rest = key.get(name.len() + 1..)?;
    let be = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
    match rest.split_first()? {
        (&QUEUE, s) if s.len() == 8 => Some(JournalId { seq: be(s)?, due: None }),
        (&HELD, s) if s.len() == 16 => Some(JournalId {
            seq: be(&s[8..])?,
            due: Some(Timestamp::from_millis(i64::try_from(be(&s[..8])?).unwrap_or(i64::MAX))),
        }),
        _ => None,
    }
}

fn entry_key(name: &str, id: JournalId) -> Vec<u8> {
    match id.due {
        None => queue_key(name, id.seq),
        Some(due) => held_key(name, due, id.seq),
    }
}

/// Checks a target name: what the CLI, metrics labels and index keys can carry.
pub fn check_target_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "replication target name {name:?}: use 1 to 63 lowercase letters, digits and '-'"
        )))
    }
}

impl Store {
    /// Loads the targets into memory and the sequence past every journaled entry
    /// (at open).
    pub(crate) fn load_replication(&self) -> Result<()> {
        let mut targets = Vec::new();
        for item in self.index.range(CF_META, META_PREFIX, prefix_end(META_PREFIX))? {
            let (_, v) = item?;
            targets.push(codec::decode::<TargetRecord>(&v, "replication target")?);
        }
        let mut last = 0u64;
        for t in &targets {
            let prefix = target_prefix(&t.name, QUEUE);
            let mut it = self.index.raw_iter(CF_REPLQ, prefix_end(&prefix))?;
            it.seek_to_last();
            if let Some(id) = it.key().filter(|k| k.starts_with(&prefix)).and_then(|k| id_of(&t.name, k)) {
                last = last.max(id.seq);
            }
        }
        self.repl_seq.fetch_max(last, Ordering::SeqCst);
        *self.repl_targets.write() = targets;
        Ok(())
    }

    fn next_repl_seq(&self) -> u64 {
        let now = self.clock().now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let now = u64::try_from(now).unwrap_or(u64::MAX - 1);
        let next = |p: u64| p.max(now.saturating_sub(1)) + 1;
        let prev = self.repl_seq.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| Some(next(p)));
        next(prev.unwrap_or_else(|p| p))
    }

    /// Journals the new current state of `bucket/key` for every target that copies
    /// it, into the batch that makes the change (see the module documentation).
    pub(crate) fn journal_change(
        &self,
        batch: &mut WriteBatch,
        bucket: &BucketName,
        key: &str,
        current: Option<&ObjectEntry>,
        now: Timestamp,
    ) -> Result<()> {
        let targets = self.repl_targets.read();
        if targets.is_empty() {
            return Ok(());
        }
        let entry = JournalEntry {
            bucket: bucket.as_str().to_owned(),
            key: key.to_owned(),
            op: match current {
                Some(e) => {
                    JournalOp::Put { etag: e.etag.as_str().to_owned(), last_modified: e.last_modified, size: e.size }
                }
                None => JournalOp::Delete,
            },
            at: now,
        };
        let mut value = None;
        for t in targets.iter().filter(|t| t.covers(bucket.as_str(), key)) {
            let v = match &value {
                Some(v) => v,
                None => value.insert(codec::encode(&entry)?),
            };
            batch.put_cf(self.index.cf(CF_REPLQ)?, queue_key(&t.name, self.next_repl_seq()), v);
        }
        Ok(())
    }

    /// The replication targets, by name.
    pub fn replication_targets(&self) -> Vec<TargetRecord> {
        let mut t = self.repl_targets.read().clone();
        t.sort_by(|a, b| a.name.cmp(&b.name));
        t
    }

    /// One target by name.
    pub fn replication_target(&self, name: &str) -> Result<TargetRecord> {
        self.repl_targets
            .read()
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no replication target named {name:?}")))
    }

    /// Adds a target, or replaces the settings of one with the same name.
    ///
    /// A new target (or one whose source changed) gets every object it covers
    /// journaled, oldest first (by write time), so the first copy reaches it in
    /// the order the objects were written: a backup's sentinel after its files.
    /// Returns the number of objects journaled. `backfill: false` records the target
    /// as already holding everything (a store just rebuilt from it).
    ///
    /// Writes wait while this runs (it holds the bucket lock exclusively): a write
    /// journaled before the backfill's entries could otherwise overtake them, and a
    /// backup finishing meanwhile would have its sentinel sent before its files. The
    /// pause is one scan of the `objects` family plus one synced batch per 4096
    /// objects — about a second per million objects.
    pub fn put_replication_target(&self, rec: TargetRecord, backfill: bool) -> Result<u64> {
        check_target_name(&rec.name)?;
        if let Some(b) = &rec.source_bucket {
            self.bucket(&BucketName::parse(b)?)?;
        }
        let _w = self.bucket_lock.write();
        let old = self.repl_targets.read().iter().find(|t| t.name == rec.name).cloned();
        let refill =
            old.as_ref().is_none_or(|o| o.source_bucket != rec.source_bucket || o.source_prefix != rec.source_prefix);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_META)?, meta_key(&rec.name), codec::encode(&rec)?);
        if refill {
            // What a previous target of this name was owed or held is not this one's.
            self.clear_journal(&mut batch, &rec.name)?;
            self.clear_offbox_marks(&mut batch, &rec.name)?;
        }
        // Registered before the scan: a write during the scan is journaled by
        // itself (and maybe by the scan too; a second entry is harmless).
        {
            let mut targets = self.repl_targets.write();
            targets.retain(|t| t.name != rec.name);
            targets.push(rec.clone());
        }
        self.index.write(batch)?;
        if refill && backfill {
            self.backfill(&rec)
        } else {
            Ok(0)
        }
    }

    fn backfill(&self, rec: &TargetRecord) -> Result<u64> {
        let start = match &rec.source_bucket {
            Some(b) => bucket_prefix(&BucketName::parse(b)?),
            None => Vec::new(),
        };
        let end = if start.is_empty() { None } else { prefix_end(&start) };
        let mut found = Vec::new();
        for item in self.index.range(CF_OBJECTS, &start, end)? {
            let (k, v) = item?;
            let Some(split) = k.iter().position(|b| *b == 0) else { continue };
            let (bucket, key) = (&k[..split], &k[split + 1..]);
            let (Ok(bucket), Ok(key)) = (std::str::from_utf8(bucket), std::str::from_utf8(key)) else { continue };
            if !rec.covers(bucket, key) {
                continue;
            }
            let e = ObjectEntry::decode(&v)?;
            found.push(JournalEntry {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                op: JournalOp::Put { etag: e.etag.as_str().to_owned(), last_modified: e.last_modified, size: e.size },
                at: e.last_modified,
            });
        }
        found.sort_by_key(|e| match e.op {
            JournalOp::Put { last_modified, .. } => last_modified,
            JournalOp::Delete => e.at,
        });
        let total = found.len() as u64;
        for chunk in found.chunks(BACKFILL_BATCH) {
            let mut batch = WriteBatch::default();
            for e in chunk {
                batch.put_cf(self.index.cf(CF_REPLQ)?, queue_key(&rec.name, self.next_repl_seq()), codec::encode(e)?);
            }
            self.index.write(batch)?;
        }
        Ok(total)
    }

    fn clear_journal(&self, batch: &mut WriteBatch, name: &str) -> Result<()> {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let cf = self.index.cf(CF_REPLQ)?;
        for item in self.index.range(CF_REPLQ, &prefix, prefix_end(&prefix))? {
            batch.delete_cf(cf, item?.0);
        }
        Ok(())
    }

    /// Pauses or resumes a target (changes stay journaled while paused).
    pub fn set_replication_paused(&self, name: &str, paused: bool) -> Result<TargetRecord> {
        let _w = self.bucket_lock.write();
        let mut rec = self.replication_target(name)?;
        rec.paused = paused;
        self.index.write({
            let mut b = WriteBatch::default();
            b.put_cf(self.index.cf(CF_META)?, meta_key(name), codec::encode(&rec)?);
            b
        })?;
        let mut targets = self.repl_targets.write();
        targets.retain(|t| t.name != name);
        targets.push(rec.clone());
        Ok(rec)
    }

    /// Removes a target and its journal (what was not sent is no longer owed).
    pub fn remove_replication_target(&self, name: &str) -> Result<TargetRecord> {
        let _w = self.bucket_lock.write();
        let rec = self.replication_target(name)?;
        if let Some(what) = self.tier_uses_target(name)? {
            return Err(Error::InvalidArgument(format!(
                "replication target {name:?} holds {what}; remove the tiering policy (walstore tier remove) and \
                 wait until `walstore tier status` shows no remote bytes on it"
            )));
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_META)?, meta_key(name));
        self.clear_journal(&mut batch, name)?;
        self.clear_offbox_marks(&mut batch, name)?;
        self.index.write(batch)?;
        self.repl_targets.write().retain(|t| t.name != name);
        Ok(rec)
    }

    /// Whether tiering depends on target `name`: a policy names it, or it holds the
    /// only copy of an evicted blob (see [`crate::tier`]).
    fn tier_uses_target(&self, name: &str) -> Result<Option<String>> {
        use crate::index::{TIER_BLOB_PREFIX, TIER_POLICY_PREFIX};
        for item in self.index.range(CF_META, TIER_POLICY_PREFIX, prefix_end(TIER_POLICY_PREFIX))? {
            let (_, v) = item?;
            let p: TierPolicy = codec::decode(&v, "tier policy")?;
            if p.target == name {
                return Ok(Some(format!("the tiering policy of {}/{}", p.bucket, p.prefix)));
            }
        }
        for item in self.index.range(CF_META, TIER_BLOB_PREFIX, prefix_end(TIER_BLOB_PREFIX))? {
            let (_, v) = item?;
            let loc: RemoteLoc = codec::decode(&v, "tier record")?;
            if loc.target == name {
                return Ok(Some(format!("the only copy of evicted bytes (e.g. of {}/{})", loc.bucket, loc.key)));
            }
        }
        Ok(None)
    }

    /// Up to `limit` pending entries of `target`, oldest first, after `after`.
    pub fn replication_pending(
        &self,
        target: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(JournalId, JournalEntry)>> {
        let prefix = target_prefix(target, QUEUE);
        let start = match after {
            Some(seq) => queue_key(target, seq.saturating_add(1)),
            None => prefix.clone(),
        };
        self.journal_read(target, &start, &prefix, limit, |_| true)
    }

    /// Up to `limit` held-back deletes of `target` that are due at `now`.
    pub fn replication_due(
        &self,
        target: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(JournalId, JournalEntry)>> {
        let prefix = target_prefix(target, HELD);
        self.journal_read(target, &prefix.clone(), &prefix, limit, |id| id.due.is_some_and(|d| d <= now))
    }

    fn journal_read(
        &self,
        target: &str,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
        keep: impl Fn(&JournalId) -> bool,
    ) -> Result<Vec<(JournalId, JournalEntry)>> {
        let mut out = Vec::new();
        for item in self.index.range(CF_REPLQ, start, prefix_end(prefix))? {
            let (k, v) = item?;
            let Some(id) = id_of(target, &k) else { continue };
            if !keep(&id) || out.len() >= limit {
                break;
            }
            out.push((id, codec::decode(&v, "replication journal entry")?));
        }
        Ok(out)
    }

    /// Removes entries the target confirmed. Not synced: after a crash an entry
    /// may be sent once more, which is harmless, and syncing every confirmation
    /// would cost a disk flush per replicated object.
    pub fn replication_done(&self, target: &str, ids: &[JournalId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let cf = self.index.cf(CF_REPLQ)?;
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.delete_cf(cf, entry_key(target, *id));
        }
        self.index.write_relaxed(batch)
    }

    /// Holds a pending delete back until `due` (the target's delete policy). Synced:
    /// the entry moves, and a lost move must not lose the delete.
    pub fn replication_hold(&self, target: &str, id: JournalId, entry: &JournalEntry, due: Timestamp) -> Result<()> {
        let cf = self.index.cf(CF_REPLQ)?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf, entry_key(target, id));
        batch.put_cf(cf, held_key(target, due, id.seq), codec::encode(entry)?);
        self.index.write(batch)
    }

    /// The state of `target`'s journal (reads every entry: cost grows with the backlog).
    pub fn replication_backlog(&self, target: &str) -> Result<Backlog> {
        let mut b = Backlog::default();
        let mut prefix = target.as_bytes().to_vec();
        prefix.push(0);
        for item in self.index.range(CF_REPLQ, &prefix, prefix_end(&prefix))? {
            let (k, v) = item?;
            let Some(id) = id_of(target, &k) else { continue };
            match id.due {
                None => {
                    let e: JournalEntry = codec::decode(&v, "replication journal entry")?;
                    b.objects += 1;
                    b.bytes += e.size();
                    b.oldest = Some(b.oldest.map_or(e.at, |o| o.min(e.at)));
                }
                Some(due) => {
                    b.held_deletes += 1;
                    b.next_due = Some(b.next_due.map_or(due, |d| d.min(due)));
                }
            }
        }
        Ok(b)
    }

    /// The current version of `bucket/key` (`None`: the key, or its bucket, is gone),
    /// for the worker to compare with what an entry journaled.
    pub fn replication_current(&self, bucket: &str, key: &str) -> Result<Option<crate::types::ObjectInfo>> {
        let bucket = BucketName::parse(bucket)?;
        let key = crate::types::ObjectKey::parse(key)?;
        match self.head_object(&bucket, &key) {
            Ok(info) => Ok(Some(info)),
            Err(Error::NoSuchKey | Error::NoSuchBucket | Error::DeleteMarker) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An object as an off-box copy holds it, to store again as it was (`walstore rebuild`).
pub struct RestoreRequest<'a> {
    /// Bucket (created if missing).
    pub bucket: &'a BucketName,
    /// Key.
    pub key: &'a crate::types::ObjectKey,
    /// The bytes, already verified against the SHA-256 the copy recorded.
    pub blob: crate::writer::StagedBlob,
    /// Metadata.
    pub meta: crate::types::ObjectMeta,
    /// Checksum the client stored, if any.
    pub checksum: Option<crate::types::Checksum>,
    /// The original ETag (a multipart ETag stays one).
    pub etag: crate::types::ETag,
    /// The original write time (WAL-G orders backups by it).
    pub last_modified: Timestamp,
    /// Number of parts of a multipart original.
    pub parts_count: Option<u32>,
}

impl Store {
    /// Stores an object rebuilt from an off-box copy with its original ETag and write
    /// time. The WAL guards do not apply: the copy is the authority being restored.
    pub fn restore_object(&self, req: RestoreRequest<'_>) -> Result<crate::types::ObjectInfo> {
        self.ensure_writable()?;
        match self.bucket(req.bucket) {
            Ok(_) => {}
            Err(Error::NoSuchBucket) => match self.create_bucket(req.bucket) {
                Ok(_) | Err(Error::BucketAlreadyExists) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
        let _b = self.bucket_lock.read();
        let binfo = self.bucket(req.bucket)?;
        let now = self.now();
        let _k = self.key_locks.lock_all(&[crate::store::object_lock(req.bucket, req.key)]);
        let mut kv = self.key_versions(&binfo, req.key.as_str())?;
        let blobs = if req.blob.size > 0 {
            vec![crate::types::BlobRef { hash: req.blob.hash, size: req.blob.size }]
        } else {
            Vec::new()
        };
        let entry = ObjectEntry {
            size: req.blob.size,
            etag: req.etag,
            last_modified: req.last_modified,
            meta: req.meta,
            checksum: req.checksum,
            parts_count: req.parts_count,
            blobs,
            version: Default::default(),
        };
        kv.place(entry, Default::default(), now)?;
        let entry = kv.current.clone().ok_or(Error::NoSuchKey)?;
        let mut batch = WriteBatch::default();
        kv.flush(self, &mut batch, now)?;
        self.repo_write(req.bucket, req.key.as_str(), || self.commit(vec![req.blob], batch))?;
        Ok(crate::store::info_of(req.bucket, req.key, entry))
    }
}

/// The newest WAL segment of one repository a target confirmed (the off-box RPO).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffboxMark {
    /// Bucket.
    pub bucket: String,
    /// Repository prefix (empty or ending in `/`).
    pub repository: String,
    /// File name of the segment (24 hex digits).
    pub segment: String,
    /// Its write time.
    pub last_modified: Timestamp,
}

const OFFBOX_PREFIX: &[u8] = b"replrpo/";

fn offbox_key(target: &str, bucket: &str, repository: &str) -> Vec<u8> {
    [OFFBOX_PREFIX, target.as_bytes(), b"\0", bucket.as_bytes(), b"\0", repository.as_bytes()].concat()
}

impl Store {
    /// Records that `target` holds `mark.segment` (kept if newer than the stored mark).
    /// Not synced: a lost mark is raised again by the next segment.
    pub fn set_offbox_mark(&self, target: &str, mark: &OffboxMark) -> Result<()> {
        let key = offbox_key(target, &mark.bucket, &mark.repository);
        if let Some(old) = self.index.get_decoded::<OffboxMark>(CF_META, &key)? {
            if old.segment >= mark.segment {
                return Ok(());
            }
        }
        let mut b = WriteBatch::default();
        b.put_cf(self.index.cf(CF_META)?, key, codec::encode(mark)?);
        self.index.write_relaxed(b)
    }

    /// Every off-box mark of `target`.
    pub fn offbox_marks(&self, target: &str) -> Result<Vec<OffboxMark>> {
        let prefix = [OFFBOX_PREFIX, target.as_bytes(), b"\0"].concat();
        let mut out = Vec::new();
        for item in self.index.range(CF_META, &prefix, prefix_end(&prefix))? {
            out.push(codec::decode(&item?.1, "off-box mark")?);
        }
        Ok(out)
    }

    fn clear_offbox_marks(&self, batch: &mut WriteBatch, target: &str) -> Result<()> {
        let prefix = [OFFBOX_PREFIX, target.as_bytes(), b"\0"].concat();
        let cf = self.index.cf(CF_META)?;
        for item in self.index.range(CF_META, &prefix, prefix_end(&prefix))? {
            batch.delete_cf(cf, item?.0);
        }
        Ok(())
    }
}

const IMPORT_PREFIX: &[u8] = b"import/";

impl Store {
    /// Records when the last complete import of `source` started (`import --since-last-run`).
    pub fn set_import_mark(&self, source: &str, started: Timestamp) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.index.cf(CF_META)?, [IMPORT_PREFIX, source.as_bytes()].concat(), codec::encode(&started)?);
        self.index.write(b)
    }

    /// When the last complete import of `source` started.
    pub fn import_mark(&self, source: &str) -> Result<Option<Timestamp>> {
        self.index.get_decoded(CF_META, &[IMPORT_PREFIX, source.as_bytes()].concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort() {
        let q1 = queue_key("dr", 5);
        let q2 = queue_key("dr", 256);
        assert!(q1 < q2);
        assert_eq!(id_of("dr", &q2), Some(JournalId { seq: 256, due: None }));
        let h = held_key("dr", Timestamp::from_millis(1000), 7);
        assert_eq!(id_of("dr", &h), Some(JournalId { seq: 7, due: Some(Timestamp::from_millis(1000)) }));
        // Another target's keys never parse as this one's.
        assert!(!queue_key("dr-2", 1).starts_with(&target_prefix("dr", QUEUE)));
    }

    #[test]
    fn names() {
        assert!(check_target_name("offsite-1").is_ok());
        for bad in ["", "Off", "a/b", "-x", &"a".repeat(64)] {
            assert!(check_target_name(bad).is_err(), "{bad}");
        }
    }
}
