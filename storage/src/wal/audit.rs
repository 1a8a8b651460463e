//! The audit log: admin overrides, retention deletions, quarantines, policy
//! and key changes. A record is written in the same batch as the change it
//! describes. On disk: column family `audit`, `<time ms BE> <seq>` → record.

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;
use crate::index::CF_AUDIT;
use crate::store::Store;
use crate::types::Timestamp;

/// An audit record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    pub time: Timestamp,
    /// Who (access key or `retention-worker`).
    pub actor: String,
    /// What (`override-delete`, `retention-delete`, `quarantine`, `policy-set`).
    pub action: String,
    /// Bucket.
    pub bucket: String,
    /// Key or prefix.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl Store {
    pub(crate) fn audit_into(
        &self,
        batch: &mut WriteBatch,
        actor: &str,
        action: &str,
        bucket: &str,
        key: &str,
        reason: &str,
    ) -> Result<()> {
        let now = self.now();
        let mut k = (now.as_millis() as u64).to_be_bytes().to_vec();
        k.extend_from_slice(&self.guard.audit_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let rec = AuditRecord {
            time: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        tracing::info!(actor, action, bucket, key, reason, "audit");
        batch.put_cf(self.index.cf(CF_AUDIT)?, k, codec::encode(&rec)?);
        Ok(())
    }

    /// Records an administrator's action that has its own commit (Object Lock
    /// configuration, as-of views).
    pub fn audit_admin(&self, actor: &str, action: &str, bucket: &str, detail: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.audit_into(&mut batch, actor, action, bucket, "", detail)?;
        self.index.write(batch)
    }

    /// The audit log, oldest first (at most `limit` newest records).
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut all: Vec<AuditRecord> = Vec::new();
        for item in self.index.range(CF_AUDIT, b"", None)? {
            let (_, v) = item?;
            all.push(codec::decode(&v, CF_AUDIT)?);
        }
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }
}
