//! Routing: one pass from (method, path, query, headers) to a typed [`Route`].
//!
//! Path-style addressing only: `/<bucket>` and `/<bucket>/<key>`. The operation
//! is decided by the method and the *names* of query parameters (S3
//! subresources, which clients send with or without `=`); their values are parsed
//! by the handlers. Anything we do not implement becomes `NotImplemented` naming
//! the AWS operation, never a fallthrough into an operation that changes data.

use http::{HeaderMap, Method};
use storage::{BucketName, ObjectKey};

use crate::error::{S3Code, S3Error, S3Result};

/// The S3 operations walstore serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Operation {
    ListBuckets,
    CreateBucket,
    DeleteBucket,
    HeadBucket,
    GetBucketLocation,
    GetBucketVersioning,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    DeleteObjects,
    PutObject,
    CopyObject,
    GetObject,
    HeadObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    PutBucketVersioning,
    GetObjectLockConfiguration,
    PutObjectLockConfiguration,
    GetObjectRetention,
    PutObjectRetention,
    GetObjectLegalHold,
    PutObjectLegalHold,
}

impl Operation {
    /// The AWS name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::ListBuckets => "ListBuckets",
            Operation::CreateBucket => "CreateBucket",
            Operation::DeleteBucket => "DeleteBucket",
            Operation::HeadBucket => "HeadBucket",
            Operation::GetBucketLocation => "GetBucketLocation",
            Operation::GetBucketVersioning => "GetBucketVersioning",
            Operation::PutBucketVersioning => "PutBucketVersioning",
            Operation::GetObjectLockConfiguration => "GetObjectLockConfiguration",
            Operation::PutObjectLockConfiguration => "PutObjectLockConfiguration",
            Operation::GetObjectRetention => "GetObjectRetention",
            Operation::PutObjectRetention => "PutObjectRetention",
            Operation::GetObjectLegalHold => "GetObjectLegalHold",
            Operation::PutObjectLegalHold => "PutObjectLegalHold",
            Operation::ListObjects => "ListObjects",
            Operation::ListObjectsV2 => "ListObjectsV2",
            Operation::ListObjectVersions => "ListObjectVersions",
            Operation::ListMultipartUploads => "ListMultipartUploads",
            Operation::DeleteObjects => "DeleteObjects",
            Operation::PutObject => "PutObject",
            Operation::CopyObject => "CopyObject",
            Operation::GetObject => "GetObject",
            Operation::HeadObject => "HeadObject",
            Operation::DeleteObject => "DeleteObject",
            Operation::CreateMultipartUpload => "CreateMultipartUpload",
            Operation::UploadPart => "UploadPart",
            Operation::CompleteMultipartUpload => "CompleteMultipartUpload",
            Operation::AbortMultipartUpload => "AbortMultipartUpload",
            Operation::ListParts => "ListParts",
        }
    }

    /// Every operation (for metrics pre-registration and tests).
    pub const ALL: [Operation; 21] = [
        Operation::ListBuckets,
        Operation::CreateBucket,
        Operation::DeleteBucket,
        Operation::HeadBucket,
        Operation::GetBucketLocation,
        Operation::GetBucketVersioning,
        Operation::ListObjects,
        Operation::ListObjectsV2,
        Operation::ListObjectVersions,
        Operation::ListMultipartUploads,
        Operation::DeleteObjects,
        Operation::PutObject,
        Operation::CopyObject,
        Operation::GetObject,
        Operation::HeadObject,
        Operation::DeleteObject,
        Operation::CreateMultipartUpload,
        Operation::UploadPart,
        Operation::CompleteMultipartUpload,
        Operation::AbortMultipartUpload,
        Operation::ListParts,
    ];
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What to do.
    pub op: Operation,
    /// The bucket, for every operation but ListBuckets.
    pub bucket: Option<BucketName>,
    /// The key, for object operations.
    pub key: Option<ObjectKey>,
}

/// Decoded query parameters, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string: `+` is kept literally, `%XX` decoded, a name
    /// without `=` has an empty value.
    pub fn parse(raw: &str) -> S3Result<Self> {
        let mut out = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((decode_component(k)?, decode_component(v)?));
        }
        Ok(Self(out))
    }

    /// First value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether `name` is present (with any value).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// All pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Percent-decodes one URL component into UTF-8.
pub fn decode_component(s: &str) -> S3Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| S3Error::new(S3Code::InvalidArgument, "URL component is not valid UTF-8 after decoding"))
}

/// Subresources that name S3 features walstore does not implement, with the
/// bucket-level and object-level operation stems they map to.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("acl", "Acl"),
    ("policy", "Policy"),
    ("policyStatus", "PolicyStatus"),
    ("lifecycle", "Lifecycle"),
    ("cors", "Cors"),
    ("tagging", "Tagging"),
    ("website", "Website"),
    ("encryption", "Encryption"),
    ("replication", "Replication"),
    ("logging", "Logging"),
    ("notification", "NotificationConfiguration"),
    ("torrent", "Torrent"),
    ("restore", "Restore"),
    ("select", "SelectObjectContent"),
    ("accelerate", "Accelerate"),
    ("requestPayment", "RequestPayment"),
    ("ownershipControls", "OwnershipControls"),
    ("publicAccessBlock", "PublicAccessBlock"),
    ("intelligent-tiering", "IntelligentTieringConfiguration"),
    ("inventory", "InventoryConfiguration"),
    ("metrics", "MetricsConfiguration"),
    ("analytics", "AnalyticsConfiguration"),
    ("attributes", "Attributes"),
    ("session", "CreateSession"),
];

fn not_implemented(method: &Method, stem: &str, object: bool) -> S3Error {
    let verb = match *method {
        Method::GET | Method::HEAD => "Get",
        Method::PUT => "Put",
        Method::DELETE => "Delete",
        Method::POST => "Post",
        _ => "",
    };
    let target = if object { "Object" } else { "Bucket" };
    let name = if stem.starts_with("Select") || stem.starts_with("Create") || stem == "Restore" {
        format!("{stem}{}", if stem == "Restore" { "Object" } else { "" })
    } else {
        format!("{verb}{target}{stem}")
    };
    S3Error::new(S3Code::NotImplemented, format!("{name} is not implemented by walstore"))
}

/// Routes a request. `raw_path` is the percent-encoded path as received.
pub fn route(method: &Method, raw_path: &str, query: &Query, headers: &HeaderMap) -> S3Result<Route> {
    let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let (bucket_raw, key_raw) = match path.split_once('/') {
        Some((b, k)) => (b, Some(k)),
        None => (path, None),
    };
    let bucket = if bucket_raw.is_empty() { None } else { Some(BucketName::parse(&decode_component(bucket_raw)?)?) };
    // "/bucket/" addresses the bucket, like "/bucket".
    let key = match key_raw.filter(|k| !k.is_empty()) {
        Some(k) => Some(ObjectKey::parse(&decode_component(k)?)?),
        None => None,
    };

    let Some(bucket) = bucket else {
        // `//key` names a key in no bucket: refuse it rather than list the buckets.
        if key.is_some() {
            return Err(S3Error::new(S3Code::InvalidBucketName, "the bucket name is empty"));
        }
        return match *method {
            Method::GET => Ok(Route { op: Operation::ListBuckets, bucket: None, key: None }),
            _ => Err(S3Error::code(S3Code::MethodNotAllowed)),
        };
    };

    for (sub, stem) in UNSUPPORTED {
        if query.has(sub) {
            return Err(not_implemented(method, stem, key.is_some()));
        }
    }

    let op = match &key {
        None => bucket_op(method, query)?,
        Some(_) => object_op(method, query, headers)?,
    };
    Ok(Route { op, bucket: Some(bucket), key })
}

fn bucket_op(method: &Method, q: &Query) -> S3Result<Operation> {
    Ok(match *method {
        Method::GET => {
            if q.has("location") {
                Operation::GetBucketLocation
            } else if q.has("versioning") {
                Operation::GetBucketVersioning
            } else if q.has("object-lock") {
                Operation::GetObjectLockConfiguration
            } else if q.has("versions") {
                Operation::ListObjectVersions
            } else if q.has("uploads") {
                Operation::ListMultipartUploads
            } else if q.get("list-type") == Some("2") {
                Operation::ListObjectsV2
            } else if let Some(v) = q.get("list-type") {
                return Err(S3Error::new(S3Code::InvalidArgument, format!("unknown list-type {v:?}")));
            } else {
                Operation::ListObjects
            }
        }
        Method::HEAD => Operation::HeadBucket,
        Method::PUT => {
            if q.has("versioning") {
                Operation::PutBucketVersioning
            } else if q.has("object-lock") {
                Operation::PutObjectLockConfiguration
            } else {
                Operation::CreateBucket
            }
        }
        Method::DELETE => Operation::DeleteBucket,
        Method::POST => {
            if q.has("delete") {
                Operation::DeleteObjects
            } else {
                return Err(S3Error::new(
                    S3Code::NotImplemented,
                    "this POST on a bucket is not implemented by walstore",
                ));
            }
        }
        _ => return Err(S3Error::code(S3Code::MethodNotAllowed)),
    })
}

fn object_op(method: &Method, q: &Query, headers: &HeaderMap) -> S3Result<Operation> {
    Ok(match *method {
        Method::GET => {
            if q.has("uploadId") {
                Operation::ListParts
            } else if q.has("retention") {
                Operation::GetObjectRetention
            } else if q.has("legal-hold") {
                Operation::GetObjectLegalHold
            } else {
                Operation::GetObject
            }
        }
        Method::HEAD => Operation::HeadObject,
        Method::PUT if q.has("retention") => Operation::PutObjectRetention,
        Method::PUT if q.has("legal-hold") => Operation::PutObjectLegalHold,
        Method::PUT => {
            let copy = headers.contains_key("x-amz-copy-source");
            match (q.has("partNumber") || q.has("uploadId"), copy) {
                (true, true) => {
                    return Err(S3Error::new(S3Code::NotImplemented, "UploadPartCopy is not implemented by walstore"))
                }
                (true, false) => Operation::UploadPart,
                (false, true) => Operation::CopyObject,
                (false, false) => Operation::PutObject,
            }
        }
        Method::POST => {
            if q.has("uploads") {
                Operation::CreateMultipartUpload
            } else if q.has("uploadId") {
                Operation::CompleteMultipartUpload
            } else {
                return Err(S3Error::new(
                    S3Code::NotImplemented,
                    "this POST on an object (e.g. browser-form upload) is not implemented by walstore",
                ));
            }
        }
        Method::DELETE => {
            if q.has("uploadId") {
                Operation::AbortMultipartUpload
            } else {
                Operation::DeleteObject
            }
        }
        _ => return Err(S3Error::code(S3Code::MethodNotAllowed)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, target: &str, copy: bool) -> Result<(Operation, Option<String>, Option<String>), String> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut h = HeaderMap::new();
        if copy {
            h.insert("x-amz-copy-source", http::HeaderValue::from_static("b/k"));
        }
        let m = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let q = Query::parse(query).map_err(|e| e.message)?;
        route(&m, path, &q, &h)
            .map(|r| (r.op, r.bucket.map(|b| b.to_string()), r.key.map(|k| k.to_string())))
            .map_err(|e| format!("{}: {}", e.code.as_str(), e.message))
    }

    #[test]
    fn routing_table() {
        use Operation::*;
        let table: &[(&str, &str, bool, Operation, Option<&str>)] = &[
            ("GET", "/", false, ListBuckets, None),
            ("PUT", "/bkt", false, CreateBucket, None),
            ("PUT", "/bkt/", false, CreateBucket, None),
            ("HEAD", "/bkt", false, HeadBucket, None),
            ("DELETE", "/bkt", false, DeleteBucket, None),
            ("GET", "/bkt?location=", false, GetBucketLocation, None),
            ("GET", "/bkt?versioning", false, GetBucketVersioning, None),
            ("GET", "/bkt?delimiter=%2F&list-type=2&prefix=", false, ListObjectsV2, None),
            ("GET", "/bkt?delimiter=%2F&max-keys=1&prefix=pfx%2F", false, ListObjects, None),
            ("GET", "/bkt", false, ListObjects, None),
            ("GET", "/bkt?versions=&prefix=a", false, ListObjectVersions, None),
            ("GET", "/bkt?uploads", false, ListMultipartUploads, None),
            ("POST", "/bkt?delete=", false, DeleteObjects, None),
            ("POST", "/bkt?delete", false, DeleteObjects, None),
            ("PUT", "/bkt/a/b.lz4", false, PutObject, Some("a/b.lz4")),
            ("PUT", "/bkt/dst", true, CopyObject, Some("dst")),
            ("GET", "/bkt/k", false, GetObject, Some("k")),
            ("HEAD", "/bkt/k", false, HeadObject, Some("k")),
            ("DELETE", "/bkt/k", false, DeleteObject, Some("k")),
            ("POST", "/bkt/k?uploads=", false, CreateMultipartUpload, Some("k")),
            ("PUT", "/bkt/k?partNumber=3&uploadId=U", false, UploadPart, Some("k")),
            ("POST", "/bkt/k?uploadId=U", false, CompleteMultipartUpload, Some("k")),
            ("DELETE", "/bkt/k?uploadId=U", false, AbortMultipartUpload, Some("k")),
            ("GET", "/bkt/k?uploadId=U", false, ListParts, Some("k")),
            // Keys keep every byte: trailing dot, dot segments, encoded slashes and spaces.
            (
                "GET",
                "/bkt/wal_005/000000010000000000000001.",
                false,
                GetObject,
                Some("wal_005/000000010000000000000001."),
            ),
            ("GET", "/bkt/a/../b", false, GetObject, Some("a/../b")),
            ("GET", "/bkt/a%2Fb%20c", false, GetObject, Some("a/b c")),
            ("GET", "/bkt//double", false, GetObject, Some("/double")),
        ];
        for (m, t, copy, op, key) in table {
            let got = r(m, t, *copy).unwrap_or_else(|e| panic!("{m} {t}: {e}"));
            assert_eq!(got.0, *op, "{m} {t}");
            assert_eq!(got.2.as_deref(), *key, "{m} {t}");
            if *op != ListBuckets {
                assert_eq!(got.1.as_deref(), Some("bkt"), "{m} {t}");
            }
        }
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, &str, bool, &str)] = &[
            ("GET", "/bkt?acl", false, "NotImplemented: GetBucketAcl"),
            ("PUT", "/bkt/k?tagging", false, "NotImplemented: PutObjectTagging"),
            ("PUT", "/bkt/k?partNumber=1&uploadId=U", true, "NotImplemented: UploadPartCopy"),
            ("POST", "/bkt", false, "NotImplemented"),
            ("POST", "/bkt/k", false, "NotImplemented"),
            ("PATCH", "/bkt/k", false, "MethodNotAllowed"),
            ("PUT", "/", false, "MethodNotAllowed"),
            ("GET", "/Bad_Bucket/k", false, "InvalidBucketName"),
            ("GET", "/ab", false, "InvalidBucketName"),
            ("GET", "/bkt?list-type=3", false, "InvalidArgument"),
            ("GET", "/bkt/%FF", false, "InvalidArgument"),
            // A key without a bucket was answered as ListBuckets (found by fuzz_router).
            ("GET", "//k", false, "InvalidBucketName"),
            ("DELETE", "//bkt/k", false, "InvalidBucketName"),
        ];
        for (m, t, copy, want) in cases {
            let err = r(m, t, *copy).expect_err(t);
            assert!(err.starts_with(want), "{m} {t}: got {err}");
        }
        let long = format!("/bkt/{}", "k".repeat(1025));
        assert!(r("GET", &long, false).expect_err("long").starts_with("KeyTooLongError"));
    }

    #[test]
    fn query_parsing() {
        let q = Query::parse("a=1&b&c=x%2Fy&d=a+b&e=").expect("parse");
        assert_eq!(q.get("a"), Some("1"));
        assert!(q.has("b") && q.get("b") == Some(""));
        assert_eq!(q.get("c"), Some("x/y"));
        assert_eq!(q.get("d"), Some("a+b"), "plus is not a space in S3 query strings");
        assert!(q.has("e"));
        assert!(!q.has("f"));
    }
}
