//! The WAL catalog's index scan: a repository's `wal_005/` and
//! `basebackups_005/` keys read in one ordered scan of the object index and
//! handed to the pure [`RepoSnapshot`] (which classifies and parses them).
//!
//! The object index is written in the same synced batch as every object, so a
//! snapshot taken from it is always exactly what is stored; there is no second
//! copy that could drift. "Rebuilding the catalog" is taking a new snapshot.

use wal::catalog::{RepoSnapshot, MAX_DOC_BYTES};
use wal::names::{BACKUP_DIR, WAL_DIR};

use crate::error::{Error, Result};
use crate::index::{bucket_prefix, object_key, prefix_end, ObjectEntry, CF_OBJECTS};
use crate::store::Store;
use crate::types::BucketName;

impl Store {
    /// Every repository of every bucket, by bucket and prefix.
    pub fn all_wal_repositories(&self) -> Result<Vec<(BucketName, String)>> {
        let mut out = Vec::new();
        for b in self.list_buckets()? {
            match self.wal_repositories(&b.name) {
                Ok(repos) => out.extend(repos.into_iter().map(|r| (b.name.clone(), r))),
                // Deleted meanwhile.
                Err(crate::Error::NoSuchBucket) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

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
            match wal::split_repo(&key) {
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
            bucket: Some(bucket.as_str().to_owned()),
            prefix: prefix.to_owned(),
            taken_at: Some(self.now()),
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
                let e = ObjectEntry::decode(&v)?;
                snap.add(path, e.size, e.last_modified, || self.read_doc(&e));
            }
        }
        snap.finish();
        Ok(snap)
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
