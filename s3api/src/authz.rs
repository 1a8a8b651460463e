//! Who may do what: roles and scopes of access keys, checked once per request
//! after SigV4 verification and before the handler runs.

use http::HeaderMap;
use storage::{BucketName, KeyRole, ObjectKey};

use crate::error::{S3Code, S3Error, S3Result};
use crate::router::{Operation, Query};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// Access key id.
    pub access_key: String,
    /// Role.
    pub role: KeyRole,
    /// Limited to this bucket and key prefix (`None` = everything).
    pub scope: Option<(String, String)>,
}

impl Principal {
    /// The root key: admin, unscoped.
    pub fn root(access_key: &str) -> Self {
        Self { access_key: access_key.to_owned(), role: KeyRole::Admin, scope: None }
    }

    /// Parses a stored scope `bucket[/prefix]`. The prefix is a folder, as for
    /// policies: `bkt/spilo/c1` covers `spilo/c1/…`, never the sibling `spilo/c10/…`.
    pub fn with_scope(access_key: &str, role: KeyRole, scope: Option<&str>) -> Self {
        let scope = scope.map(|s| match s.split_once('/') {
            Some((b, p)) => (b.to_owned(), normalize_prefix(p)),
            None => (s.to_owned(), String::new()),
        });
        Self { access_key: access_key.to_owned(), role, scope }
    }

    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == KeyRole::Admin && self.scope.is_none()
    }
}

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read or list.
    Read,
    /// Create or overwrite objects (and abort own multipart uploads).
    Write,
    /// Delete objects.
    Delete,
    /// Manage buckets.
    Admin,
}

/// The permission an operation needs.
pub fn permission(op: Operation) -> Permission {
    use Operation as O;
    match op {
        O::ListBuckets
        | O::HeadBucket
        | O::GetBucketLocation
        | O::GetBucketVersioning
        | O::GetObjectLockConfiguration
        | O::GetObjectRetention
        | O::GetObjectLegalHold
        | O::ListObjects
        | O::ListObjectsV2
        | O::ListObjectVersions
        | O::ListMultipartUploads
        | O::GetObject
        | O::HeadObject
        | O::ListParts => Permission::Read,
        O::PutObject
        | O::CopyObject
        | O::CreateMultipartUpload
        | O::UploadPart
        | O::CompleteMultipartUpload
        | O::AbortMultipartUpload
        // Setting or extending a lock only protects; weakening one needs an
        // administrator (checked by the handler: bypass-governance).
        | O::PutObjectRetention
        | O::PutObjectLegalHold => Permission::Write,
        O::DeleteObject | O::DeleteObjects => Permission::Delete,
        O::CreateBucket | O::DeleteBucket | O::PutBucketVersioning | O::PutObjectLockConfiguration => {
            Permission::Admin
        }
    }
}

fn allows(role: KeyRole, p: Permission) -> bool {
    match role {
        KeyRole::Admin => true,
        KeyRole::Writer => p != Permission::Admin,
        KeyRole::WalWriter => matches!(p, Permission::Read | Permission::Write),
        KeyRole::Reader => p == Permission::Read,
    }
}

fn denied(who: &Principal, what: &str) -> S3Error {
    S3Error::new(
        S3Code::AccessDenied,
        format!("Access Denied: key {} ({}) may not {what}", who.access_key, who.role.name()),
    )
}

/// Checks a routed request against the caller's role and scope.
pub fn authorize(
    who: &Principal,
    op: Operation,
    bucket: Option<&BucketName>,
    key: Option<&ObjectKey>,
    query: &Query,
    headers: &HeaderMap,
) -> S3Result<()> {
    let need = permission(op);
    if !allows(who.role, need) {
        return Err(denied(who, &format!("{} ({need:?})", op.name())));
    }
    let Some((sb, sp)) = &who.scope else { return Ok(()) };
    let in_scope = |b: &str, k: &str| b == sb && k.starts_with(sp.as_str());
    match (bucket, key) {
        (None, _) => Ok(()), // ListBuckets: the handler shows the scoped bucket only
        (Some(b), Some(k)) => {
            if !in_scope(b.as_str(), k.as_str()) {
                return Err(denied(who, &format!("access {b}/{k} outside its scope {sb}/{sp}")));
            }
            if op == Operation::CopyObject {
                let src = headers.get("x-amz-copy-source").and_then(|v| v.to_str().ok()).unwrap_or("");
                let src = crate::router::decode_component(src.trim().trim_start_matches('/'))?;
                let src = src.split('?').next().unwrap_or("");
                let (b2, k2) = src.split_once('/').unwrap_or((src, ""));
                if !in_scope(b2, k2) {
                    return Err(denied(who, "copy from outside its scope"));
                }
            }
            Ok(())
        }
        (Some(b), None) => {
            if b.as_str() != sb {
                return Err(denied(who, &format!("access bucket {b} outside its scope {sb}")));
            }
            // Listings must stay inside the prefix; DeleteObjects keys are
            // checked per key by the handler.
            let listing = matches!(
                op,
                Operation::ListObjects
                    | Operation::ListObjectsV2
                    | Operation::ListObjectVersions
                    | Operation::ListMultipartUploads
            );
            if listing && !query.get("prefix").unwrap_or("").starts_with(sp.as_str()) {
                return Err(denied(who, &format!("list outside its prefix {sp}")));
            }
            Ok(())
        }
    }
}

/// Whether a key of a DeleteObjects request is inside the caller's scope.
pub fn key_in_scope(who: &Principal, bucket: &BucketName, key: &str) -> bool {
    match &who.scope {
        None => true,
        Some((b, p)) => b == bucket.as_str() && key.starts_with(p.as_str()),
    }
}

/// A repository prefix as stored and compared: `spilo/c1` → `spilo/c1/`, `` → ``.
pub fn normalize_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(who: &Principal, op: Operation, bucket: &str, key: Option<&str>, query: &str) -> bool {
        let b = BucketName::parse(bucket).expect("bucket");
        let k = key.map(|k| ObjectKey::parse(k).expect("key"));
        let q = Query::parse(query).expect("query");
        authorize(who, op, Some(&b), k.as_ref(), &q, &HeaderMap::new()).is_ok()
    }

    #[test]
    fn roles() {
        let w = Principal::with_scope("W", KeyRole::WalWriter, None);
        assert!(check(&w, Operation::PutObject, "bkt", Some("k"), ""));
        assert!(check(&w, Operation::GetObject, "bkt", Some("k"), ""));
        assert!(check(&w, Operation::AbortMultipartUpload, "bkt", Some("k"), "uploadId=x"));
        assert!(!check(&w, Operation::DeleteObject, "bkt", Some("k"), ""));
        assert!(!check(&w, Operation::DeleteObjects, "bkt", None, "delete"));
        assert!(!check(&w, Operation::CreateBucket, "bkt", None, ""));
        let r = Principal::with_scope("R", KeyRole::Reader, None);
        assert!(check(&r, Operation::ListObjectsV2, "bkt", None, "list-type=2"));
        assert!(!check(&r, Operation::PutObject, "bkt", Some("k"), ""));
        let wr = Principal::with_scope("X", KeyRole::Writer, None);
        assert!(check(&wr, Operation::DeleteObject, "bkt", Some("k"), ""));
        assert!(!check(&wr, Operation::DeleteBucket, "bkt", None, ""));
        assert!(check(&Principal::root("A"), Operation::DeleteBucket, "bkt", None, ""));
    }

    #[test]
    fn scopes() {
        let w = Principal::with_scope("W", KeyRole::WalWriter, Some("bkt/spilo/c1/"));
        assert!(check(&w, Operation::PutObject, "bkt", Some("spilo/c1/wal_005/x"), ""));
        assert!(!check(&w, Operation::PutObject, "bkt", Some("spilo/c2/wal_005/x"), ""));
        assert!(!check(&w, Operation::GetObject, "other", Some("spilo/c1/x"), ""));
        assert!(check(&w, Operation::ListObjectsV2, "bkt", None, "list-type=2&prefix=spilo%2Fc1%2Fwal_005%2F"));
        assert!(!check(&w, Operation::ListObjectsV2, "bkt", None, "list-type=2&prefix="));
        assert!(check(&w, Operation::GetBucketVersioning, "bkt", None, "versioning"));
        let b = Principal::with_scope("B", KeyRole::Reader, Some("bkt"));
        assert!(check(&b, Operation::ListObjectsV2, "bkt", None, "list-type=2"));
        // Without the trailing slash the prefix is still a folder: siblings are outside.
        let c = Principal::with_scope("C", KeyRole::WalWriter, Some("bkt/spilo/c1"));
        assert!(check(&c, Operation::PutObject, "bkt", Some("spilo/c1/wal_005/x"), ""));
        assert!(!check(&c, Operation::PutObject, "bkt", Some("spilo/c10/wal_005/x"), ""));
        assert!(!check(&c, Operation::ListObjectsV2, "bkt", None, "list-type=2&prefix=spilo%2Fc1"));
        assert!(!key_in_scope(&c, &BucketName::parse("bkt").expect("bucket"), "spilo/c10/x"));
        let d = Principal::with_scope("D", KeyRole::Reader, Some("bkt/"));
        assert!(check(&d, Operation::ListObjectsV2, "bkt", None, "list-type=2"));
    }
}
