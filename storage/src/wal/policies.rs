//! Stored retention and delete-protection policies, per bucket or repository
//! prefix, and the server default. On disk: column family `policies`,
//! `<bucket> 0x00 <prefix>` → [`StoredPolicy`].

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use crate::codec;
use crate::error::Result;
use crate::index::{object_key, prefix_end, CF_POLICIES};
use crate::store::Store;
use crate::types::BucketName;

use super::state::{IdentityCheck, StoredPolicy};

/// The form of a stored policy since the first release (kept byte for byte).
#[derive(serde::Serialize, serde::Deserialize)]
struct PolicyV1 {
    policy: wal::RetentionPolicy,
    split_brain_guard: bool,
}

/// What later releases added, written as a trailer only when set (a policy without it
/// takes the server default's identity check).
#[derive(serde::Serialize, serde::Deserialize, Default, PartialEq)]
struct PolicyTrailer {
    identity_check: Option<IdentityCheck>,
}

fn encode_policy(p: &StoredPolicy) -> Result<Vec<u8>> {
    let v1 = PolicyV1 { policy: p.policy.clone(), split_brain_guard: p.split_brain_guard };
    codec::encode_with_trailer(&v1, &PolicyTrailer { identity_check: p.identity_check })
}

fn decode_policy(bytes: &[u8]) -> Result<StoredPolicy> {
    let (v1, t): (PolicyV1, PolicyTrailer) = codec::decode_with_trailer(bytes, CF_POLICIES)?;
    Ok(StoredPolicy { policy: v1.policy, split_brain_guard: v1.split_brain_guard, identity_check: t.identity_check })
}

pub(crate) fn policy_key(bucket: &BucketName, prefix: &str) -> Vec<u8> {
    object_key(bucket, prefix)
}

impl Store {
    /// Sets the policy used where no bucket or repository policy is stored.
    pub fn set_default_policy(&self, p: StoredPolicy) {
        *self.guard.default.lock() = p;
        self.guard.policy_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Stores a policy for a bucket (`prefix` empty) or a repository prefix.
    pub fn set_policy(&self, bucket: &BucketName, prefix: &str, p: &StoredPolicy, actor: &str) -> Result<()> {
        self.bucket(bucket)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_POLICIES)?, policy_key(bucket, prefix), encode_policy(p)?);
        self.audit_into(&mut batch, actor, "policy-set", bucket.as_str(), prefix, &format!("{p:?}"))?;
        self.index.write(batch)?;
        // After the write: an evaluation that read the old epoch may have read
        // either policy, and is stale either way.
        self.guard.policy_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Removes a stored policy.
    pub fn remove_policy(&self, bucket: &BucketName, prefix: &str, actor: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_POLICIES)?, policy_key(bucket, prefix));
        self.audit_into(&mut batch, actor, "policy-remove", bucket.as_str(), prefix, "")?;
        self.index.write(batch)?;
        // After the write: an evaluation that read the old epoch may have read
        // either policy, and is stale either way.
        self.guard.policy_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Stored policies of a bucket: (prefix, policy).
    pub fn policies(&self, bucket: &BucketName) -> Result<Vec<(String, StoredPolicy)>> {
        let start = crate::index::bucket_prefix(bucket);
        let mut out = Vec::new();
        for item in self.index.range(CF_POLICIES, &start, prefix_end(&start))? {
            let (k, v) = item?;
            let prefix = String::from_utf8_lossy(&k[start.len()..]).into_owned();
            out.push((prefix, decode_policy(&v)?));
        }
        Ok(out)
    }

    /// The policy in force for a repository: the longest stored prefix that
    /// contains it, else the bucket's, else the server default.
    pub fn policy_for(&self, bucket: &BucketName, repo: &str) -> Result<StoredPolicy> {
        let best = self
            .policies(bucket)?
            .into_iter()
            .filter(|(p, _)| repo.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, p)| p);
        let default = self.guard.default.lock().clone();
        Ok(match best {
            Some(mut p) => {
                p.identity_check = p.identity_check.or(default.identity_check);
                p
            }
            None => default,
        })
    }
}
