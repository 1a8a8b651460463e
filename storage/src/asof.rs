//! As-of views: a read-only bucket name under which a bucket (or one prefix of it)
//! shows, for every key, the version that was current at an instant. After an
//! attacker deleted or overwrote objects of a versioned bucket, `wal-g backup-list`,
//! `backup-fetch` and `wal-fetch` pointed at the view restore the database as the
//! repository stood then; nothing is copied and nothing in the source changes.
//!
//! Views live in `meta` under `view/<name>` (no schema change), expire after their
//! time to live, and while one covers a repository the retention worker leaves that
//! repository alone, so the versions a recovery reads are not deleted under it.
//! A view resolves versions that still exist: it cannot bring back a version deleted
//! for good (by its id) — that is what Object Lock is for.

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{bucket_prefix, prefix_end, ObjectEntry, VersionRecord, CF_BUCKETS, CF_META};
use crate::store::{info_of, ListItem, ListPage, ListQuery, ObjectSummary, Store};
use crate::types::{BucketInfo, BucketName, ETag, ObjectInfo, ObjectKey, Timestamp, Versioning};

const VIEW_PREFIX: &[u8] = b"view/";

/// A read-only view of a bucket (or a prefix of it) as it stood at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsofView {
    /// The name clients use as a bucket.
    pub name: String,
    /// The bucket it shows.
    pub source: String,
    /// Only keys under this prefix (empty: the whole bucket).
    pub prefix: String,
    /// The instant shown.
    pub at: Timestamp,
    /// When it was created.
    pub created: Timestamp,
    /// When it stops answering.
    pub expires: Timestamp,
}

fn view_key(name: &str) -> Vec<u8> {
    let mut k = VIEW_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

impl Store {
    /// Creates a view of `source` (keys under `prefix`) as it stood at `at`, answering
    /// until `now + ttl`. `name` defaults to `asof-<time>-<random>`.
    pub fn create_view(
        &self,
        source: &BucketName,
        prefix: &str,
        at: Timestamp,
        ttl: std::time::Duration,
        name: Option<&BucketName>,
    ) -> Result<AsofView> {
        self.ensure_writable()?;
        let _w = self.bucket_lock.write();
        self.bucket(source)?;
        let now = self.now();
        if at > now {
            return Err(Error::InvalidArgument("the instant of an as-of view must not be in the future".into()));
        }
        let name = match name {
            Some(n) => n.clone(),
            None => BucketName::parse(&format!(
                "asof-{}-{}",
                at.as_millis() / 1000,
                hex::encode(rand::random::<[u8; 3]>())
            ))?,
        };
        if self.index.get(CF_BUCKETS, name.as_str().as_bytes())?.is_some() || self.view(&name)?.is_some() {
            return Err(Error::BucketAlreadyExists);
        }
        let view = AsofView {
            name: name.as_str().to_owned(),
            source: source.as_str().to_owned(),
            prefix: prefix.to_owned(),
            at,
            created: now,
            expires: now.plus(ttl),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_META)?, view_key(&view.name), codec::encode(&view)?);
        self.commit(Vec::new(), batch)?;
        Ok(view)
    }

    /// The unexpired view of this name.
    pub fn view(&self, name: &BucketName) -> Result<Option<AsofView>> {
        let v: Option<AsofView> = self.index.get_decoded(CF_META, &view_key(name.as_str()))?;
        Ok(v.filter(|v| v.expires > self.now()))
    }

    /// Every view, expired ones included (`walstore asof list`).
    pub fn views(&self) -> Result<Vec<AsofView>> {
        let mut out = Vec::new();
        for item in self.index.range(CF_META, VIEW_PREFIX, prefix_end(VIEW_PREFIX))? {
            let (_, v) = item?;
            out.push(codec::decode(&v, "as-of view")?);
        }
        Ok(out)
    }

    /// Removes a view; whether it existed.
    pub fn drop_view(&self, name: &str) -> Result<bool> {
        let key = view_key(name);
        if self.index.get(CF_META, &key)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_META)?, key);
        self.commit(Vec::new(), batch)?;
        Ok(true)
    }

    /// Whether an unexpired view shows keys of repository `repo` in `bucket` (then
    /// the retention worker leaves it alone).
    pub fn retention_paused_by_view(&self, bucket: &BucketName, repo: &str) -> Result<bool> {
        let now = self.now();
        Ok(self.views()?.iter().any(|v| {
            v.source == bucket.as_str()
                && v.expires > now
                && (repo.starts_with(&v.prefix) || v.prefix.starts_with(repo))
        }))
    }

    /// What HeadBucket, GetBucketLocation and GetBucketVersioning say about a view: an
    /// unversioned bucket (WAL-G then lists and reads it plainly).
    pub(crate) fn view_info(&self, view: &AsofView) -> Result<BucketInfo> {
        Ok(BucketInfo {
            name: BucketName::parse(&view.name)?,
            created: view.created,
            versioning: Versioning::Unversioned,
            object_lock: None,
        })
    }

    /// The version of `key` current at the view's instant, if it was an object then.
    fn version_at(&self, view: &AsofView, source: &BucketInfo, key: &str) -> Result<Option<ObjectEntry>> {
        if !key.starts_with(&view.prefix) {
            return Ok(None);
        }
        let kv = self.key_versions(source, key)?;
        // Newest first: the first version written at or before the instant decides.
        for rec in kv.newest_first() {
            if rec.last_modified() <= view.at {
                return Ok(match rec {
                    VersionRecord::Object(e) => Some(e),
                    VersionRecord::Marker(_) => None,
                });
            }
        }
        Ok(None)
    }

    /// HeadObject through a view.
    pub(crate) fn view_head(&self, view: &AsofView, key: &ObjectKey) -> Result<ObjectInfo> {
        let source = self.bucket(&BucketName::parse(&view.source)?)?;
        match self.version_at(view, &source, key.as_str())? {
            Some(e) => Ok(info_of(&BucketName::parse(&view.name)?, key, e)),
            None => Err(Error::NoSuchKey),
        }
    }

    /// ListObjects through a view: keys under the view's prefix whose version at the
    /// instant is an object, rolled up at the delimiter.
    pub(crate) fn view_list(&self, view: &AsofView, q: &ListQuery) -> Result<ListPage> {
        let source = self.bucket(&BucketName::parse(&view.source)?)?;
        let bprefix = bucket_prefix(&source.name);
        // Keys must match both the view's prefix and the query's.
        let scope = if q.prefix.starts_with(&view.prefix) {
            q.prefix.clone()
        } else if view.prefix.starts_with(&q.prefix) {
            view.prefix.clone()
        } else {
            return Ok(ListPage::default());
        };
        let mut lower = bprefix.clone();
        lower.extend_from_slice(scope.as_bytes());
        let upper = prefix_end(&lower);
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let common_of = |key: &str| {
            delimiter
                .and_then(|d| key[q.prefix.len()..].find(d).map(|i| key[..q.prefix.len() + i + d.len()].to_owned()))
        };
        if let Some(after) = &q.after {
            if !crate::store::resume_after(&mut lower, &bprefix, after, &q.prefix, delimiter, 1) {
                return Ok(ListPage::default());
            }
        }
        let mut page = ListPage::default();
        while let Some(name) = self.next_key_name(&lower, upper.as_deref(), source.versioning)? {
            let key = std::str::from_utf8(&name[bprefix.len()..])
                .map_err(|_| Error::Decode("object key is not UTF-8".into()))?
                .to_owned();
            let mut next = name.clone();
            next.push(1);
            lower = next;
            let Some(e) = self.version_at(view, &source, &key)? else { continue };
            let item = match common_of(&key) {
                Some(cp) => {
                    // Shown once; the rest of its subtree is skipped.
                    let mut sub = bprefix.clone();
                    sub.extend_from_slice(cp.as_bytes());
                    match prefix_end(&sub) {
                        Some(end) => lower = end,
                        None => lower = upper.clone().unwrap_or_default(),
                    }
                    ListItem::Prefix(cp)
                }
                None => ListItem::Object(ObjectSummary {
                    key,
                    size: e.size,
                    etag: ETag::from_stored(e.etag.as_str()),
                    last_modified: e.last_modified,
                    storage_class: e
                        .meta
                        .headers
                        .iter()
                        .find(|(k, _)| k == "x-amz-storage-class")
                        .map(|(_, v)| v.clone()),
                    checksum_algorithm: e.checksum.as_ref().map(|c| c.algorithm),
                    checksum_type: e.checksum.as_ref().map(|c| c.type_name()),
                }),
            };
            if page.items.len() >= q.max_keys {
                page.truncated = true;
                break;
            }
            page.items.push(item);
        }
        Ok(page)
    }
}
