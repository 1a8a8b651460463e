//! The S3 client of off-box copies: `aws-sdk-s3`, the AWS SDK for Rust.
//!
//! Why this library: it is AWS's own, maintained with the service (every checksum
//! algorithm, multipart, SigV4 and its edge cases, virtual/path addressing), and it
//! is the client our compatibility suite already runs against walstore, so its
//! behaviour against S3-compatible stores (MinIO, Ceph RGW, Garage) is known. The
//! SDK's own retries are off: the replication worker retries with its own back-off,
//! so a target that is down never holds a request open for minutes.
//!
//! Every object on the target carries what a rebuild needs to store it again as it
//! was, as user metadata: [`META_MTIME`] (original LastModified, ms), [`META_ETAG`]
//! (original ETag), [`META_SHA256`] (SHA-256 of the bytes), [`META_HEADERS`] and
//! [`META_CHECKSUM`] (other stored headers and the client's checksum, JSON). User
//! metadata of the original is copied as it is; names starting with `walstore-`
//! are reserved for these.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::spec::{load_secret, TargetSpec};
use parking_lot::Mutex;
use std::collections::HashMap;
use storage::TargetRecord;

/// Original LastModified (milliseconds since the epoch).
pub const META_MTIME: &str = "walstore-mtime";
/// Original ETag (unquoted).
pub const META_ETAG: &str = "walstore-etag";
/// SHA-256 of the object's bytes (hex): the content address a rebuild verifies.
pub const META_SHA256: &str = "walstore-sha256";
/// Other stored headers (`cache-control`, `content-encoding`, …), JSON pairs.
pub const META_HEADERS: &str = "walstore-headers";
/// The checksum the client stored (JSON).
pub const META_CHECKSUM: &str = "walstore-checksum";
/// The original content type (empty: none).
pub const META_CONTENT_TYPE: &str = "walstore-content-type";
/// Parts count of a multipart original.
pub const META_PARTS: &str = "walstore-parts";

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence while reading an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What goes with an object's bytes.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// Content type.
    pub content_type: Option<String>,
    /// User metadata (names without `x-amz-meta-`), ours included.
    pub metadata: Vec<(String, String)>,
}

/// One object of a listing of the target.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Key on the target.
    pub key: String,
    /// Size.
    pub size: u64,
    /// ETag (unquoted), if the listing gave one.
    pub etag: Option<String>,
    /// LastModified (whole seconds: what a listing carries).
    pub last_modified: Option<storage::Timestamp>,
}

/// A fetched object: metadata and a body stream.
pub struct Fetched {
    /// Content type.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: Vec<(String, String)>,
    /// Other stored headers (`content-encoding`, `cache-control`, `content-disposition`,
    /// `content-language`, `expires`), names lowercase.
    pub headers: Vec<(String, String)>,
    /// ETag (unquoted).
    pub etag: Option<String>,
    /// LastModified (whole seconds, as HTTP dates carry it).
    pub last_modified: Option<storage::Timestamp>,
    /// Size.
    pub size: u64,
    /// The bytes.
    pub body: ByteStream,
}

/// A client of one target bucket.
#[derive(Clone, Debug)]
pub struct Remote {
    client: aws_sdk_s3::Client,
    /// The target's bucket.
    pub bucket: String,
}

impl Remote {
    /// A client for target `name` (reads its credentials now).
    pub fn connect(name: &str, spec: &TargetSpec) -> Result<Self> {
        spec.validate().map_err(|e| Error::new(ErrorKind::Config, e))?;
        let secret = load_secret(name, spec)?;
        let timeouts = TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).read_timeout(READ_TIMEOUT).build();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(spec.endpoint.trim_end_matches('/'))
            .region(Region::new(spec.region.clone()))
            .credentials_provider(Credentials::new(
                secret.access_key_id,
                secret.secret_access_key,
                None,
                None,
                "walstore-replication",
            ))
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            // We send SHA-256 ourselves (the content address we already know).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ca) = &spec.ca_cert {
            use aws_smithy_http_client::tls;
            let pem = std::fs::read(ca)
                .map_err(|e| Error::new(ErrorKind::Config, format!("CA certificate {}: {e}", ca.display())))?;
            let ctx = tls::TlsContext::builder()
                .with_trust_store(tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(pem))
                .build()
                .map_err(|e| Error::new(ErrorKind::Config, format!("CA certificate {}: {e}", ca.display())))?;
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(ctx)
                .build_https();
            b = b.http_client(http);
        }
        Ok(Self { client: aws_sdk_s3::Client::from_conf(b.build()), bucket: spec.bucket.clone() })
    }

    /// Checks that the bucket exists and the credentials may list it.
    pub async fn probe(&self) -> Result<()> {
        self.client.list_objects_v2().bucket(&self.bucket).max_keys(1).send().await.map_err(classify)?;
        Ok(())
    }

    /// Stores `body` under `key` in one request; the target verifies `sha256`, and
    /// what it echoes (or its ETag) is compared with what was sent.
    pub async fn put(&self, key: &str, body: Bytes, sha256: &[u8; 32], up: &Upload) -> Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha256);
        let md5 = md5::Md5::digest(&body);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .checksum_sha256(&b64)
            .set_content_type(up.content_type.clone())
            .body(ByteStream::from(body));
        for (k, v) in &up.metadata {
            req = req.metadata(k, v);
        }
        let out = req.send().await.map_err(classify)?;
        match (out.checksum_sha256(), out.e_tag()) {
            (Some(echo), _) if echo != b64 => Err(mismatch(key, "SHA-256", &b64, echo)),
            (Some(_), _) => Ok(()),
            (None, Some(etag)) if !etag.contains('-') && etag.trim_matches('"') != hex::encode(md5) => {
                Err(mismatch(key, "ETag", &hex::encode(md5), etag))
            }
            (None, _) => Ok(()),
        }
    }

    /// Starts a multipart upload; the target verifies each part's SHA-256.
    pub async fn start_multipart(&self, key: &str, up: &Upload) -> Result<String> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_content_type(up.content_type.clone());
        for (k, v) in &up.metadata {
            req = req.metadata(k, v);
        }
        let out = req.send().await.map_err(classify)?;
        out.upload_id().map(str::to_owned).ok_or_else(|| Error::new(ErrorKind::Other, "no upload id in the answer"))
    }

    /// Uploads part `number`; returns what Complete needs.
    pub async fn put_part(&self, key: &str, upload_id: &str, number: i32, body: Bytes) -> Result<CompletedPart> {
        let sha: [u8; 32] = Sha256::digest(&body).into();
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .checksum_sha256(&b64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(classify)?;
        if let Some(echo) = out.checksum_sha256().filter(|e| *e != b64) {
            return Err(mismatch(key, &format!("part {number} SHA-256"), &b64, echo));
        }
        let etag = out.e_tag().ok_or_else(|| Error::new(ErrorKind::Other, "no ETag for an uploaded part"))?;
        Ok(CompletedPart::builder().part_number(number).e_tag(etag).checksum_sha256(b64).build())
    }

    /// Completes a multipart upload.
    pub async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<CompletedPart>) -> Result<()> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Abandons a multipart upload (best effort: the target's lifecycle rules or
    /// its own expiry clean up what this cannot).
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) {
        let r = self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await;
        if let Err(e) = r {
            tracing::debug!(key, "aborting a multipart upload on the target failed: {}", classify(e));
        }
    }

    /// Deletes `key` (deleting a missing key succeeds, as in S3).
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(classify)?;
        Ok(())
    }

    /// One page of the keys under `prefix`, after `token`.
    pub async fn list(&self, prefix: &str, token: Option<String>) -> Result<(Vec<Listed>, Option<String>)> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(classify)?;
        let items = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(Listed {
                    key: o.key()?.to_owned(),
                    size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    etag: o.e_tag().map(|e| e.trim_matches('"').to_owned()),
                    last_modified: o.last_modified().map(timestamp),
                })
            })
            .collect();
        let next = out.next_continuation_token().map(str::to_owned).filter(|_| out.is_truncated() == Some(true));
        Ok((items, next))
    }

    /// Reads an object; with `if_match`, only while its ETag is still that one
    /// (otherwise an error of kind [`ErrorKind::Other`] with `PreconditionFailed`).
    pub async fn get(&self, key: &str, if_match: Option<&str>) -> Result<Fetched> {
        self.get_range(key, if_match, None).await
    }

    /// Reads bytes `range` (end exclusive, not empty) of an object, or all of it.
    pub async fn get_range(
        &self,
        key: &str,
        if_match: Option<&str>,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Fetched> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(if_match.map(|e| format!("\"{e}\"")))
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end.saturating_sub(1))))
            .send()
            .await
            .map_err(classify)?;
        let mut headers = Vec::new();
        for (name, v) in [
            ("content-encoding", out.content_encoding()),
            ("cache-control", out.cache_control()),
            ("content-disposition", out.content_disposition()),
            ("content-language", out.content_language()),
            ("expires", out.expires_string()),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                headers.push((name.to_owned(), v.to_owned()));
            }
        }
        let mut metadata: Vec<(String, String)> = out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())
            .unwrap_or_default();
        metadata.sort();
        Ok(Fetched {
            content_type: out.content_type().map(str::to_owned),
            size: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
            etag: out.e_tag().map(|e| e.trim_matches('"').to_owned()),
            last_modified: out.last_modified().map(timestamp),
            metadata,
            headers,
            body: out.body,
        })
    }
}

/// What a HEAD of an object on the target says.
#[derive(Debug, Clone)]
pub struct Headed {
    /// Size.
    pub size: u64,
    /// User metadata (names lowercase), ours included.
    pub metadata: Vec<(String, String)>,
}

impl Headed {
    /// A user metadata value.
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Remote {
    /// Size and metadata of an object.
    pub async fn head(&self, key: &str) -> Result<Headed> {
        let out = self.client.head_object().bucket(&self.bucket).key(key).send().await.map_err(classify)?;
        Ok(Headed {
            size: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
            metadata: out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }
}

fn timestamp(t: &aws_smithy_types::DateTime) -> storage::Timestamp {
    storage::Timestamp::from_millis(t.to_millis().unwrap_or(0))
}

/// Reads a whole listing of `prefix`.
pub async fn list_all(remote: &Remote, prefix: &str) -> Result<Vec<Listed>> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = remote.list(prefix, token).await?;
        all.extend(page);
        match next {
            Some(t) => token = Some(t),
            None => return Ok(all),
        }
    }
}

fn mismatch(key: &str, what: &str, sent: &str, got: &str) -> Error {
    Error::new(ErrorKind::Checksum, format!("the target stored {key} with {what} {got}, not {sent}"))
}

/// Sorts an SDK error into a kind, with a one-line message (the SDK's `Display`
/// says only "service error").
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(e: SdkError<E, HttpResponse>) -> Error {
    match &e {
        SdkError::TimeoutError(_) => Error::new(ErrorKind::Network, "the remote S3 store did not answer in time"),
        SdkError::DispatchFailure(d) => {
            let detail = std::error::Error::source(&e).map(source_chain).unwrap_or_default();
            let kind = if d.is_timeout() { "timed out" } else { "failed" };
            Error::new(ErrorKind::Network, format!("connection to the remote S3 store {kind}: {detail}"))
        }
        SdkError::ResponseError(_) => Error::new(ErrorKind::Other, format!("unreadable answer: {}", source_chain(&e))),
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or("").to_owned();
            let msg = s.err().message().unwrap_or("").to_owned();
            let kind = match (code.as_str(), status) {
                (
                    "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken" | "ExpiredToken",
                    _,
                )
                | (_, 401 | 403) => ErrorKind::Auth,
                ("SlowDown" | "Throttling" | "RequestLimitExceeded", _) | (_, 429 | 503) => ErrorKind::Throttled,
                ("BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch" | "XAmzContentSHA256Mismatch", _) => {
                    ErrorKind::Checksum
                }
                ("NoSuchKey" | "NotFound", _) | (_, 404) if code != "NoSuchBucket" => ErrorKind::NotFound,
                (_, 500..=599) => ErrorKind::Server,
                _ => ErrorKind::Other,
            };
            let code = if code.is_empty() { format!("HTTP {status}") } else { code };
            Error::new(kind, if msg.is_empty() { code } else { format!("{code}: {msg}") })
        }
        _ => Error::new(ErrorKind::Other, source_chain(&e)),
    }
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Clients of targets by name, rebuilt when a target's settings change.
pub(crate) struct Clients {
    /// The runtime the clients' requests run on.
    pub(crate) rt: tokio::runtime::Runtime,
    by_name: Mutex<HashMap<String, (String, Remote)>>,
}

impl Clients {
    pub(crate) fn new(thread_name: &str) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread_name)
            .enable_all()
            .build()?;
        Ok(Self { rt, by_name: Mutex::new(HashMap::new()) })
    }

    /// The client of `rec` (and its settings), made again when the settings changed.
    pub(crate) fn get(&self, rec: &TargetRecord) -> Result<(TargetSpec, Remote)> {
        let spec: TargetSpec = serde_json::from_str(&rec.spec)
            .map_err(|e| Error::new(ErrorKind::Config, format!("stored settings unreadable: {e}")))?;
        let mut map = self.by_name.lock();
        if let Some((s, r)) = map.get(&rec.name) {
            if *s == rec.spec {
                return Ok((spec, r.clone()));
            }
        }
        let _guard = self.rt.enter();
        let remote = Remote::connect(&rec.name, &spec)?;
        map.insert(rec.name.clone(), (rec.spec.clone(), remote.clone()));
        Ok((spec, remote))
    }

    /// Drops `name`'s client: the next use reads its credentials and settings again.
    pub(crate) fn forget(&self, name: &str) {
        self.by_name.lock().remove(name);
    }

    /// Drops every client.
    pub(crate) fn forget_all(&self) {
        self.by_name.lock().clear();
    }
}

/// A runtime of its own (two threads) and a client of `spec`, for the synchronous callers
/// that run one copy from start to end (rebuild, import).
pub fn runtime_for(name: &str, spec: &TargetSpec) -> Result<(tokio::runtime::Runtime, Remote)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Local, format!("runtime: {e}")))?;
    let remote = {
        let _g = rt.enter();
        Remote::connect(name, spec)?
    };
    Ok((rt, remote))
}

/// Checks from synchronous code that target `name` answers and accepts its
/// credentials (a listing of one key), within 10 seconds.
pub fn probe_blocking(name: &str, spec: &TargetSpec) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Local, format!("runtime: {e}")))?;
    rt.block_on(async {
        let remote = Remote::connect(name, spec)?;
        match tokio::time::timeout(Duration::from_secs(10), remote.probe()).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(ErrorKind::Network, "the remote S3 store did not answer within 10 s")),
        }
    })
}
