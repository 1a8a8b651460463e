//! The storage crate's single error type.
//!
//! Variants name *what went wrong for the caller* (no such key, precondition
//! failed, corrupt data). Internal causes (I/O, RocksDB) carry their text for the
//! log; the S3 layer decides what a client may see.

use std::io;

/// Result alias for the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a storage operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Answering needs the disk, and the caller asked for memory only
    /// ([`crate::Store::without_io`], which turns it into `None`; never seen outside).
    #[error("the answer is not in memory")]
    NotCached,
    /// The bucket does not exist.
    #[error("no such bucket")]
    NoSuchBucket,
    /// The bucket already exists (there is a single owner, so this is "owned by you").
    #[error("bucket already exists")]
    BucketAlreadyExists,
    /// Deleting a bucket that still holds objects or uploads.
    #[error("bucket is not empty")]
    BucketNotEmpty,
    /// The bucket name breaks S3's naming rules.
    #[error("invalid bucket name {0}")]
    InvalidBucketName(String),
    /// The object does not exist.
    #[error("no such key")]
    NoSuchKey,
    /// No version of the key has this version id.
    #[error("no such version")]
    NoSuchVersion,
    /// The version named by its id is a delete marker (S3: 405 MethodNotAllowed; a GET
    /// without a version id whose latest version is a marker is [`Error::NoSuchKey`]).
    #[error("the version is a delete marker")]
    DeleteMarker,
    /// The bucket's state forbids the request (S3 `InvalidBucketState`), e.g. suspending
    /// versioning on a bucket with Object Lock.
    #[error("invalid bucket state: {0}")]
    InvalidBucketState(String),
    /// A write (or a request other than a read) to an as-of view, which is read-only.
    #[error("{0} is a read-only as-of view")]
    ReadOnlyView(String),
    /// The key is longer than 1024 bytes.
    #[error("key too long")]
    KeyTooLong,
    /// The key is unusable (e.g. empty).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The multipart upload does not exist (never did, completed or aborted).
    #[error("no such upload")]
    NoSuchUpload,
    /// A part named in CompleteMultipartUpload is missing or its ETag differs.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// Parts in CompleteMultipartUpload are not in ascending order.
    #[error("parts are not in ascending order")]
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum part size.
    #[error("part {part} is {size} bytes, below the minimum of {min}")]
    EntityTooSmall {
        /// Offending part number.
        part: u32,
        /// Its size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// A conditional write's condition does not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// A checksum the client sent does not match the data (S3 `BadDigest`).
    #[error("bad digest: {0}")]
    BadDigest(String),
    /// The request contradicts itself or what it refers to (S3
    /// `InvalidRequest`), e.g. a checksum algorithm other than the upload's.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request is refused by policy (delete protection, role). The text
    /// names the rule and is safe to show to the client.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Invalid argument (e.g. part number out of range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Stored bytes fail their checksum; never served.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The bytes of a tiered object live on a replication target that cannot be
    /// read now (down, refusing, too slow); local objects are unaffected.
    #[error("tiered object unavailable: {0}")]
    RemoteUnavailable(String),
    /// The data disk has no room for the write (or only the reserve is left).
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The index (RocksDB) failed.
    #[error("index error: {0}")]
    Index(String),
    /// A stored value could not be decoded (unknown version or damaged).
    #[error("undecodable index value: {0}")]
    Decode(String),
}

impl Error {
    /// Wraps an I/O error with context; `ENOSPC`/`EDQUOT` become [`Error::InsufficientStorage`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if is_out_of_space(&source) {
            return Error::InsufficientStorage(format!("{context}: {source}"));
        }
        Error::Io { context, source }
    }
}

/// True for "disk full" style errors.
pub(crate) fn is_out_of_space(e: &io::Error) -> bool {
    // ENOSPC = 28, EDQUOT = 122 on Linux.
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == io::ErrorKind::StorageFull
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        let text = e.into_string();
        if text.contains("No space left") {
            Error::InsufficientStorage(text)
        } else {
            Error::Index(text)
        }
    }
}
