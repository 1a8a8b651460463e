//! Domain types shared by the storage engine and its callers.
//!
//! Every name that crosses the crate boundary is a validated newtype, so a bucket
//! name can never be confused with a key, and a content hash never with an ETag.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Maximum length of an object key in bytes (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// A validated bucket name (S3 naming rules: 3–63 chars of `a-z0-9.-`, starts and
/// ends with a letter or digit, no `..`, not an IPv4 address).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    /// Validates `name` against S3's bucket naming rules.
    pub fn parse(name: &str) -> Result<Self> {
        let invalid = |why: &str| Err(Error::InvalidBucketName(format!("{name:?}: {why}")));
        if name.len() < 3 || name.len() > 63 {
            return invalid("must be 3 to 63 characters long");
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
            return invalid("only lowercase letters, digits, '.' and '-' are allowed");
        }
        let first = name.as_bytes()[0];
        let last = name.as_bytes()[name.len() - 1];
        if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
            return invalid("must begin and end with a letter or digit");
        }
        if name.contains("..") || name.contains(".-") || name.contains("-.") {
            return invalid("adjacent periods or period-dash are not allowed");
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return invalid("must not be formatted as an IP address");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated object key: non-empty UTF-8, at most [`MAX_KEY_LEN`] bytes.
///
/// Keys are opaque: they are never used to build a filesystem path (blobs are
/// named by content hash), so `../` or NUL in a key is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates a key.
    pub fn parse(key: &str) -> Result<Self> {
        if key.is_empty() {
            return Err(Error::InvalidKey("the key is empty".into()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLong);
        }
        Ok(Self(key.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a blob's bytes: its content address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobHash([u8; 32]);

impl BlobHash {
    /// Wraps a raw digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as used in blob file names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An S3 entity tag, stored without quotes: 32 hex digits for a single PUT,
/// `<hex>-<parts>` for a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ETag(String);

impl ETag {
    /// ETag of a single-part object: the hex MD5 of its bytes.
    pub fn from_md5(md5: &[u8; 16]) -> Self {
        Self(hex::encode(md5))
    }

    /// ETag of a multipart object: MD5 of the concatenated binary part MD5s, then `-N`.
    pub fn multipart(part_md5s: &[[u8; 16]]) -> Self {
        use md5::{Digest, Md5};
        let mut h = Md5::new();
        for m in part_md5s {
            h.update(m);
        }
        let d: [u8; 16] = h.finalize().into();
        Self(format!("{}-{}", hex::encode(d), part_md5s.len()))
    }

    /// An ETag as the index stores it (unquoted).
    pub(crate) fn from_stored(s: &str) -> Self {
        Self(s.to_owned())
    }

    /// Accepts a client-supplied ETag with or without surrounding quotes.
    pub fn from_client(s: &str) -> Self {
        Self(s.trim().trim_matches('"').to_owned())
    }

    /// Unquoted form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The quoted form used on the wire (`"…"`).
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// Identifier of a multipart upload: 32 lowercase hex digits (128 random bits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    pub(crate) fn random() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(hex::encode(bytes))
    }

    /// Parses a client-supplied upload id; anything that is not one of ours is
    /// reported as `NoSuchUpload`, never as a parse error.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::NoSuchUpload)
        }
    }

    /// Text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use wal::Timestamp;

/// Additional integrity checksum algorithms S3 clients may ask for
/// (`x-amz-checksum-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    /// CRC-32 (IEEE), 4 bytes.
    Crc32,
    /// CRC-32C (Castagnoli), 4 bytes.
    Crc32c,
    /// CRC-64/NVME, 8 bytes.
    Crc64Nvme,
    /// SHA-1, 20 bytes.
    Sha1,
    /// SHA-256, 32 bytes.
    Sha256,
}

impl ChecksumAlgorithm {
    /// All algorithms, in a fixed order.
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// The S3 name (`CRC32`, `CRC64NVME`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// The header carrying this checksum (`x-amz-checksum-crc32`, …).
    pub fn header_name(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// Parses an S3 algorithm name, case-insensitively.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(s))
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }
}

/// How a stored checksum covers the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumType {
    /// The checksum of the whole object's bytes.
    FullObject,
    /// Checksum of the concatenated part checksums (multipart), shown with `-N`.
    Composite {
        /// Number of parts.
        parts: u32,
    },
}

/// A stored checksum value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// Raw digest bytes.
    pub value: Vec<u8>,
    /// Full-object or composite.
    pub kind: ChecksumType,
}

impl Checksum {
    /// The value as S3 sends it: base64, with `-N` for composite checksums.
    pub fn to_wire(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.value);
        match self.kind {
            ChecksumType::FullObject => b64,
            ChecksumType::Composite { parts } => format!("{b64}-{parts}"),
        }
    }

    /// `FULL_OBJECT` or `COMPOSITE`, for `x-amz-checksum-type`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ChecksumType::FullObject => "FULL_OBJECT",
            ChecksumType::Composite { .. } => "COMPOSITE",
        }
    }
}

/// Client-controlled metadata stored with an object and returned on GET/HEAD.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// Other standard headers stored verbatim (`cache-control`, `content-disposition`,
    /// `content-encoding`, `content-language`, `expires`, `x-amz-storage-class`,
    /// `x-amz-object-lock-*`, …), names lowercase.
    pub headers: Vec<(String, String)>,
    /// `x-amz-meta-*` user metadata, names lowercase without the prefix.
    pub user: Vec<(String, String)>,
}

/// A reference from an object (or part) to the blob holding its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Content address.
    pub hash: BlobHash,
    /// Length in bytes.
    pub size: u64,
}

/// Everything known about a stored object version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Entity tag.
    pub etag: ETag,
    /// Time of the write that created this version.
    pub last_modified: Timestamp,
    /// Client metadata.
    pub meta: ObjectMeta,
    /// Stored integrity checksum, if the client sent one (or one was computed).
    pub checksum: Option<Checksum>,
    /// Number of parts for multipart objects, `None` for single PUTs.
    pub parts_count: Option<u32>,
    /// The blobs, in order; their sizes add up to `size`.
    pub blobs: Vec<BlobRef>,
    /// The version's id; `None` on a bucket that was never versioned.
    pub version_id: Option<VersionId>,
    /// Whether this is the current version of its key.
    pub is_latest: bool,
    /// Object Lock retention (may have expired: compare with the clock).
    pub retention: Option<Retention>,
    /// Object Lock legal hold.
    pub legal_hold: bool,
}

/// Summary of a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketInfo {
    /// Name.
    pub name: BucketName,
    /// Creation time.
    pub created: Timestamp,
    /// Versioning state (S3's `GetBucketVersioning`).
    pub versioning: Versioning,
    /// Object Lock, when enabled on the bucket (it then stays enabled, and versioning
    /// cannot be suspended).
    pub object_lock: Option<ObjectLockConfig>,
}

/// A bucket's versioning state. A bucket starts [`Versioning::Unversioned`] and never
/// returns there once enabled (S3's rule): it can only be suspended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    /// Never enabled: a write replaces the object, a delete removes it.
    #[default]
    Unversioned,
    /// Every write adds a version; a delete without a version id adds a delete marker.
    Enabled,
    /// Writes and deletes replace the `null` version; older versions stay.
    Suspended,
}

impl Versioning {
    /// S3's `<Status>` value (`None` for a bucket never versioned).
    pub fn status(self) -> Option<&'static str> {
        match self {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some("Enabled"),
            Versioning::Suspended => Some("Suspended"),
        }
    }
}

/// Retention mode of a locked version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Deletable before expiry only by a caller allowed to bypass governance (an
    /// administrator sending `x-amz-bypass-governance-retention: true`).
    Governance,
    /// Deletable by nobody, administrators included, until it expires; its date can
    /// only be moved later.
    Compliance,
}

impl LockMode {
    /// S3's name.
    pub fn name(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// Parses S3's name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// The retention of one object version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Mode.
    pub mode: LockMode,
    /// The version may not be deleted before this instant (server clock).
    pub until: Timestamp,
}

/// The period of a bucket's default retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockPeriod {
    /// Days (S3 counts 24 h days).
    Days(u32),
    /// Years (365 days each, as S3 counts them).
    Years(u32),
}

impl LockPeriod {
    /// Length in milliseconds.
    pub fn millis(self) -> i64 {
        const DAY: i64 = 86_400_000;
        match self {
            LockPeriod::Days(d) => i64::from(d) * DAY,
            LockPeriod::Years(y) => i64::from(y) * 365 * DAY,
        }
    }
}

/// A bucket's Object Lock configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockConfig {
    /// Retention applied to a new version that names none.
    pub default_retention: Option<(LockMode, LockPeriod)>,
}

/// An S3 version id: `null` for the version written while versioning was off or
/// suspended, else 16 hex digits of the version's sequence number (microseconds
/// since the epoch at the write, strictly increasing per key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VersionId {
    /// The `null` version.
    Null,
    /// A version written while versioning was enabled.
    Seq(u64),
}

impl VersionId {
    /// Parses a client's version id; anything but `null` or one of ours is
    /// [`Error::InvalidArgument`] (S3 answers 400 "Invalid version id specified").
    pub fn parse(s: &str) -> Result<Self> {
        if s == "null" {
            return Ok(VersionId::Null);
        }
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            if let Ok(n) = u64::from_str_radix(s, 16) {
                return Ok(VersionId::Seq(n));
            }
        }
        Err(Error::InvalidArgument("Invalid version id specified".into()))
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionId::Null => f.write_str("null"),
            VersionId::Seq(n) => write!(f, "{n:016x}"),
        }
    }
}

/// What a client asked to lock a new version with (PutObject, CreateMultipartUpload,
/// CopyObject headers). Asking for anything on a bucket without Object Lock is an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// `x-amz-object-lock-mode` + `x-amz-object-lock-retain-until-date`.
    pub retention: Option<Retention>,
    /// `x-amz-object-lock-legal-hold: ON`.
    pub legal_hold: bool,
}

impl LockRequest {
    /// Whether the request asks for any protection.
    pub fn is_empty(&self) -> bool {
        self.retention.is_none() && !self.legal_hold
    }
}

/// Where the bytes of an evicted (tiered) blob live: inside the copy of the one
/// object that references it, on a replication target (see `storage::tier`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLoc {
    /// The replication target holding the copy.
    pub target: String,
    /// Bucket of the object (on this store).
    pub bucket: String,
    /// Key of the object (on this store; the target's key adds its prefix).
    pub key: String,
    /// Where the blob starts inside the object.
    pub offset: u64,
    /// The blob's length.
    pub size: u64,
    /// The object's ETag when it was evicted (the copy carries it as `walstore-etag`).
    pub etag: String,
    /// The object's LastModified when it was evicted (`walstore-mtime` on the copy).
    pub last_modified: Timestamp,
    /// When the local file was removed.
    pub evicted: Timestamp,
}

/// A tiering policy: objects of `bucket` under `prefix` older than `after_ms` are
/// evicted to replication target `target`, except the hot set of each WAL-G
/// repository (see `wal::HotSet`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierPolicy {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (empty: the whole bucket).
    pub prefix: String,
    /// The replication target holding the bytes.
    pub target: String,
    /// Minimum age (since LastModified) before an object is evicted, in ms.
    pub after_ms: u64,
    /// Restorable backups (with their delta chains and the WAL after them) kept local.
    pub keep_newest_backups: u32,
    /// A read of an evicted object brings its bytes back to local disk, where they stay
    /// while the server's tier cache budget allows (least recently brought back go first).
    pub rehydrate_on_read: bool,
    /// When it was set.
    pub created: Timestamp,
}

impl TierPolicy {
    /// Whether the policy names `key` of `bucket`.
    pub fn covers(&self, bucket: &str, key: &str) -> bool {
        self.bucket == bucket && key.starts_with(&self.prefix)
    }
}

/// A replication target as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// Name (`[a-z0-9-]`, 1 to 63 characters).
    pub name: String,
    /// The bucket copied; `None` copies every bucket.
    pub source_bucket: Option<String>,
    /// Key prefix copied within `source_bucket` (empty: all keys).
    pub source_prefix: String,
    /// Changes are journaled but not sent.
    pub paused: bool,
    /// When the target was added.
    pub created: Timestamp,
    /// The worker's client settings (JSON; opaque to storage).
    pub spec: String,
    /// Defined in the server's configuration file (not changed through the CLI).
    pub from_config: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket", "a.b.c", "0123456789", &"a".repeat(63)] {
            assert!(BucketName::parse(ok).is_ok(), "{ok}");
        }
        for bad in
            ["ab", &"a".repeat(64), "Upper", "-abc", "abc-", "a..b", "a.-b", "192.168.1.1", "under_score", "sp ace"]
        {
            assert!(matches!(BucketName::parse(bad), Err(Error::InvalidBucketName(_))), "{bad}");
        }
    }

    #[test]
    fn keys() {
        assert!(ObjectKey::parse("a/../b\0c").is_ok());
        assert!(matches!(ObjectKey::parse(""), Err(Error::InvalidKey(_))));
        assert!(ObjectKey::parse(&"k".repeat(1024)).is_ok());
        assert!(matches!(ObjectKey::parse(&"k".repeat(1025)), Err(Error::KeyTooLong)));
    }

    #[test]
    fn etag_rules() {
        use md5::{Digest, Md5};
        let single: [u8; 16] = Md5::digest(b"hello").into();
        assert_eq!(ETag::from_md5(&single).as_str(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(ETag::from_md5(&single).quoted(), "\"5d41402abc4b2a76b9719d911017c592\"");
        let a: [u8; 16] = Md5::digest(b"a").into();
        let b: [u8; 16] = Md5::digest(b"b").into();
        let mut cat = Vec::new();
        cat.extend_from_slice(&a);
        cat.extend_from_slice(&b);
        let expect = format!("{}-2", hex::encode(Md5::digest(&cat)));
        assert_eq!(ETag::multipart(&[a, b]).as_str(), expect);
        assert_eq!(ETag::from_client("\"abc\"").as_str(), "abc");
    }

    #[test]
    fn upload_ids() {
        let id = UploadId::random();
        assert_eq!(UploadId::parse(id.as_str()).ok(), Some(id));
        assert!(matches!(UploadId::parse("../../etc"), Err(Error::NoSuchUpload)));
        assert!(matches!(UploadId::parse("ABCDEF0123456789ABCDEF0123456789"), Err(Error::NoSuchUpload)));
    }

    #[test]
    fn checksum_wire_form() {
        let c =
            Checksum { algorithm: ChecksumAlgorithm::Crc32, value: vec![0, 0, 0, 1], kind: ChecksumType::FullObject };
        assert_eq!(c.to_wire(), "AAAAAQ==");
        let c = Checksum { kind: ChecksumType::Composite { parts: 3 }, ..c };
        assert_eq!(c.to_wire(), "AAAAAQ==-3");
        assert_eq!(ChecksumAlgorithm::from_name("crc64nvme"), Some(ChecksumAlgorithm::Crc64Nvme));
    }
}
