//! Access keys with roles, stored in the index (`keys` column family).
//! Secrets are stored so SigV4 can be verified (the protocol needs the secret
//! itself) and are never logged or listed.

use rand::Rng;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::index::CF_KEYS;
use crate::store::Store;
use crate::types::Timestamp;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRole {
    /// Everything, including bucket management, policies, overrides and the admin API.
    Admin,
    /// Read, write and delete objects (deletes subject to delete protection).
    Writer,
    /// Read and write objects, never delete: what a database host needs
    /// (`wal-push`, `backup-push`, fetches, listings).
    WalWriter,
    /// Read and list only.
    Reader,
}

impl KeyRole {
    /// Configuration name.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Admin => "admin",
            KeyRole::Writer => "writer",
            KeyRole::WalWriter => "wal-writer",
            KeyRole::Reader => "reader",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Option<Self> {
        [KeyRole::Admin, KeyRole::Writer, KeyRole::WalWriter, KeyRole::Reader].into_iter().find(|r| r.name() == s)
    }
}

/// A stored access key.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessKey {
    /// Access key id.
    pub id: String,
    /// Secret (never printed except once at creation).
    pub secret: String,
    /// Role.
    pub role: KeyRole,
    /// Bucket, or `bucket/prefix`, the key is limited to (`None` = all buckets).
    pub scope: Option<String>,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub created: Timestamp,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("scope", &self.scope)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

fn random(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

impl Store {
    /// Creates a key; returns it (with its secret, shown once).
    pub fn create_key(&self, role: KeyRole, scope: Option<String>, description: &str) -> Result<AccessKey> {
        if let Some(s) = &scope {
            let bucket = s.split('/').next().unwrap_or("");
            crate::types::BucketName::parse(bucket)?;
        }
        let key = AccessKey {
            id: format!("WS{}", random(18, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
            secret: random(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
            role,
            scope,
            description: description.to_owned(),
            created: self.now(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_KEYS)?, key.id.as_bytes(), codec::encode(&key)?);
        self.audit_into(&mut batch, "admin", "key-create", "", &key.id, role.name())?;
        self.index.write(batch)?;
        Ok(key)
    }

    /// Looks a key up.
    pub fn access_key(&self, id: &str) -> Result<Option<AccessKey>> {
        self.index.get_decoded(CF_KEYS, id.as_bytes())
    }

    /// All keys (secrets included; callers must not display them).
    pub fn access_keys(&self) -> Result<Vec<AccessKey>> {
        let mut out = Vec::new();
        for item in self.index.range(CF_KEYS, b"", None)? {
            let (_, v) = item?;
            out.push(codec::decode(&v, CF_KEYS)?);
        }
        Ok(out)
    }

    /// Revokes a key.
    pub fn revoke_key(&self, id: &str) -> Result<()> {
        if self.access_key(id)?.is_none() {
            return Err(Error::InvalidArgument(format!("no access key {id}")));
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_KEYS)?, id.as_bytes());
        self.audit_into(&mut batch, "admin", "key-revoke", "", id, "")?;
        self.index.write(batch)
    }
}
