//! Header handling shared by the object operations: stored metadata, conditional
//! requests, ranges, checksums and the response headers of an object.

use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use storage::{
    Checksum, ChecksumAlgorithm, DeleteCondition, ETag, ExpectedObject, LockMode, LockRequest, ObjectInfo, ObjectMeta,
    Retention, StagedBlob, Timestamp, WriteCondition,
};

use crate::error::{S3Code, S3Error, S3Result};

/// Standard headers stored verbatim with an object and returned on GET/HEAD.
const STORED_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
    "x-amz-storage-class",
    "x-amz-website-redirect-location",
    "x-amz-server-side-encryption",
    "x-amz-tagging",
];

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// S3's limit on user metadata (keys + values).
const MAX_USER_META: usize = 2048;

/// A header as UTF-8 text; a non-UTF-8 value is an `InvalidArgument`.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> S3Result<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| S3Error::new(S3Code::InvalidArgument, format!("header {name} is not valid text"))),
    }
}

/// Metadata to store, from PutObject / CreateMultipartUpload / CopyObject(REPLACE) headers.
pub fn meta_from_headers(headers: &HeaderMap) -> S3Result<ObjectMeta> {
    let mut meta = ObjectMeta { content_type: text(headers, "content-type")?.map(str::to_owned), ..Default::default() };
    for name in STORED_HEADERS {
        if let Some(v) = text(headers, name)? {
            let v = if *name == "content-encoding" {
                // `aws-chunked` describes the transfer, not the object: drop it and keep
                // the client's own formatting of the rest (`deflate, gzip` stays so).
                let rest: Vec<&str> = v
                    .split(',')
                    .filter(|e| !e.trim().eq_ignore_ascii_case("aws-chunked") && !e.trim().is_empty())
                    .collect();
                if rest.is_empty() {
                    continue;
                }
                rest.join(",").trim().to_owned()
            } else {
                v.to_owned()
            };
            if *name == "x-amz-storage-class" && !STORAGE_CLASSES.contains(&v.as_str()) {
                return Err(S3Error::new(S3Code::InvalidArgument, format!("InvalidStorageClass: {v}")));
            }
            meta.headers.push(((*name).to_owned(), v));
        }
    }
    let mut user_size = 0;
    for (name, value) in headers {
        if let Some(k) = name.as_str().strip_prefix("x-amz-meta-") {
            let v = value.to_str().map_err(|_| {
                S3Error::new(S3Code::InvalidArgument, format!("metadata {name} is not ASCII; use RFC 2047 encoding"))
            })?;
            user_size += k.len() + v.len();
            meta.user.push((k.to_owned(), v.to_owned()));
        }
    }
    if user_size > MAX_USER_META {
        return Err(S3Error::new(
            S3Code::InvalidArgument,
            format!("MetadataTooLarge: user metadata is {user_size} bytes, the limit is {MAX_USER_META}"),
        ));
    }
    Ok(meta)
}

/// `If-None-Match: *` / `If-Match` on writes.
pub fn write_condition(headers: &HeaderMap) -> S3Result<WriteCondition> {
    if let Some(v) = text(headers, "if-none-match")? {
        if v.trim() == "*" {
            return Ok(WriteCondition::IfAbsent);
        }
        return Err(S3Error::new(S3Code::NotImplemented, "If-None-Match on writes supports only '*'"));
    }
    if let Some(v) = text(headers, "if-match")? {
        return Ok(WriteCondition::IfMatch(ETag::from_client(v)));
    }
    Ok(WriteCondition::None)
}

/// DeleteObject's preconditions: `If-Match`, `x-amz-if-match-last-modified-time` (an HTTP
/// date, as botocore sends it, or ISO 8601) and `x-amz-if-match-size`.
pub fn delete_condition(headers: &HeaderMap) -> S3Result<DeleteCondition> {
    let last_modified = match text(headers, "x-amz-if-match-last-modified-time")? {
        None => None,
        Some(v) => Some(crate::xml::parse_time(v).ok_or_else(|| {
            S3Error::new(
                S3Code::InvalidArgument,
                format!("x-amz-if-match-last-modified-time must be an HTTP date or an ISO 8601 time, got {v:?}"),
            )
        })?),
    };
    let size = match text(headers, "x-amz-if-match-size")? {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            S3Error::new(
                S3Code::InvalidArgument,
                format!("x-amz-if-match-size must be a non-negative integer, got {v:?}"),
            )
        })?),
    };
    Ok(DeleteCondition { etag: text(headers, "if-match")?.map(|v| ETag::from_client(v.trim())), last_modified, size })
}

/// What a CompleteMultipartUpload states about the whole object:
/// `x-amz-checksum-<algorithm>` (at most one), `x-amz-checksum-type` and
/// `x-amz-mp-object-size`; the store verifies them.
pub fn expected_object(headers: &HeaderMap) -> S3Result<ExpectedObject> {
    refuse_unknown_checksums(headers)?;
    let mut expected = ExpectedObject::default();
    for a in ChecksumAlgorithm::ALL {
        if let Some(v) = text(headers, a.header_name())? {
            if let Some((other, _)) = &expected.checksum {
                return Err(S3Error::new(
                    S3Code::InvalidRequest,
                    format!(
                        "Expecting a single x-amz-checksum- header, got {} and {}",
                        other.header_name(),
                        a.header_name()
                    ),
                ));
            }
            expected.checksum = Some((a, v.trim().to_owned()));
        }
    }
    expected.full_object = match text(headers, "x-amz-checksum-type")? {
        None => None,
        Some(v) if v.trim().eq_ignore_ascii_case("FULL_OBJECT") => Some(true),
        Some(v) if v.trim().eq_ignore_ascii_case("COMPOSITE") => Some(false),
        Some(v) => {
            return Err(S3Error::new(
                S3Code::InvalidRequest,
                format!("Value for x-amz-checksum-type header is invalid: {v:?} (FULL_OBJECT or COMPOSITE)"),
            ))
        }
    };
    expected.size = match text(headers, "x-amz-mp-object-size")? {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            S3Error::new(
                S3Code::InvalidArgument,
                format!("x-amz-mp-object-size must be a non-negative integer, got {v:?}"),
            )
        })?),
    };
    Ok(expected)
}

/// A checksum header of an algorithm walstore does not compute (newer SDKs know SHA-512,
/// MD5 and XXHASH variants) is refused, not ignored: the client asked for a check that
/// would otherwise silently not happen.
fn refuse_unknown_checksums(headers: &HeaderMap) -> S3Result<()> {
    for name in headers.keys() {
        let Some(algorithm) = name.as_str().strip_prefix("x-amz-checksum-") else { continue };
        if matches!(algorithm, "type" | "mode" | "algorithm") || ChecksumAlgorithm::from_name(algorithm).is_some() {
            continue;
        }
        return Err(S3Error::new(
            S3Code::InvalidRequest,
            format!(
                "{name}: checksum algorithm not supported (use one of CRC32, CRC32C, CRC64NVME, SHA1, SHA256)",
                name = name.as_str()
            ),
        ));
    }
    Ok(())
}

fn etag_list_matches(list: &str, etag: &ETag) -> bool {
    list.split(',').map(str::trim).any(|t| t == "*" || ETag::from_client(t.trim_start_matches("W/")) == *etag)
}

fn http_date(headers: &HeaderMap, name: &str) -> S3Result<Option<Timestamp>> {
    Ok(text(headers, name)?.and_then(|v| httpdate::parse_http_date(v).ok()).map(Timestamp::from_system))
}

/// Evaluates GET/HEAD preconditions (RFC 7232 order). `Err(PreconditionFailed)`
/// → 412; `Err(NotModified)` → 304.
pub fn check_read_conditions(headers: &HeaderMap, info: &ObjectInfo, prefix: &str) -> S3Result<()> {
    let h = |n: &str| format!("{prefix}{n}");
    // Dates compare at second precision, as HTTP dates carry seconds.
    let modified_s = info.last_modified.as_millis() / 1000;
    let if_match = text(headers, &h("if-match"))?;
    if let Some(list) = if_match {
        if !etag_list_matches(list, &info.etag) {
            return Err(S3Error::code(S3Code::PreconditionFailed));
        }
    } else if let Some(t) = http_date(headers, &h("if-unmodified-since"))? {
        if modified_s > t.as_millis() / 1000 {
            return Err(S3Error::code(S3Code::PreconditionFailed));
        }
    }
    let if_none = text(headers, &h("if-none-match"))?;
    if let Some(list) = if_none {
        if etag_list_matches(list, &info.etag) {
            return Err(not_modified(prefix));
        }
    } else if let Some(t) = http_date(headers, &h("if-modified-since"))? {
        if modified_s <= t.as_millis() / 1000 {
            return Err(not_modified(prefix));
        }
    }
    Ok(())
}

fn not_modified(prefix: &str) -> S3Error {
    if prefix.is_empty() {
        S3Error::new(S3Code::NotModified, "Not Modified")
    } else {
        // CopyObject answers a failed copy-source-if-none-match with 412.
        S3Error::code(S3Code::PreconditionFailed)
    }
}

/// Parses a `Range` header against an object of `size` bytes. `Ok(None)`: serve
/// everything (no header, or a form S3 ignores such as multiple ranges).
pub fn parse_range(value: Option<&str>, size: u64) -> S3Result<Option<std::ops::Range<u64>>> {
    let Some(v) = value else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = || {
        S3Error::new(
            S3Code::InvalidRange,
            format!("The requested range {v:?} is not satisfiable for an object of {size} bytes"),
        )
    };
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else { return Ok(None) };
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = a.parse::<u64>() else { return Ok(None) };
        let end = if b.is_empty() {
            size
        } else {
            let Ok(last) = b.parse::<u64>() else { return Ok(None) };
            if last < start {
                return Ok(None);
            }
            last.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(unsatisfiable());
        }
        start..end
    };
    Ok(Some(range))
}

/// What the client said about checksums of a body.
#[derive(Debug, Default)]
pub struct ChecksumRequest {
    /// Algorithm the client uses (header value, `x-amz-sdk-checksum-algorithm`,
    /// or announced trailer).
    pub algorithm: Option<ChecksumAlgorithm>,
    /// Value given in a header (base64), if any.
    pub header_value: Option<String>,
    /// The checksum announced in `x-amz-trailer`: the aws-chunked body must end
    /// with exactly this trailer (see [`ChecksumRequest::verify`]).
    pub trailer: Option<ChecksumAlgorithm>,
    /// `Content-MD5`, decoded.
    pub content_md5: Option<[u8; 16]>,
}

impl ChecksumRequest {
    /// Reads `x-amz-checksum-*`, `x-amz-sdk-checksum-algorithm`, `x-amz-trailer`
    /// and `Content-MD5`.
    pub fn from_headers(headers: &HeaderMap) -> S3Result<Self> {
        refuse_unknown_checksums(headers)?;
        let mut req = ChecksumRequest::default();
        for a in ChecksumAlgorithm::ALL {
            if let Some(v) = text(headers, a.header_name())? {
                if req.algorithm.is_some() {
                    return Err(S3Error::new(S3Code::InvalidRequest, "Expecting a single x-amz-checksum- header"));
                }
                req.algorithm = Some(a);
                req.header_value = Some(v.trim().to_owned());
            }
        }
        if let Some(t) = text(headers, "x-amz-trailer")? {
            let a = t
                .trim()
                .strip_prefix("x-amz-checksum-")
                .and_then(ChecksumAlgorithm::from_name)
                .ok_or_else(|| S3Error::new(S3Code::InvalidRequest, format!("unsupported x-amz-trailer {t:?}")))?;
            req.algorithm.get_or_insert(a);
            req.trailer = Some(a);
        }
        if let Some(v) = text(headers, "x-amz-sdk-checksum-algorithm")? {
            let a = ChecksumAlgorithm::from_name(v.trim())
                .ok_or_else(|| S3Error::new(S3Code::InvalidRequest, format!("unsupported checksum algorithm {v:?}")))?;
            req.algorithm.get_or_insert(a);
        }
        if let Some(v) = text(headers, "content-md5")? {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| S3Error::new(S3Code::InvalidDigest, "The Content-MD5 you specified is not valid."))?;
            req.content_md5 = Some(raw);
        }
        Ok(req)
    }

    /// Algorithms the writer must compute.
    pub fn algorithms(&self) -> Vec<ChecksumAlgorithm> {
        let mut v: Vec<ChecksumAlgorithm> = self.algorithm.into_iter().collect();
        // A header checksum and a trailer of another algorithm: compute both, so
        // each claim is checked against its own algorithm.
        if let Some(t) = self.trailer.filter(|t| !v.contains(t)) {
            v.push(t);
        }
        v
    }

    /// Verifies what was received against every value the client gave (header
    /// or trailer) and returns the checksum to store: the client's algorithm,
    /// else CRC64NVME.
    ///
    /// A checksum announced in `x-amz-trailer` must arrive as that trailer and no
    /// other checksum trailer may come instead (S3: `MalformedTrailerError`).
    /// Without this, a body whose trailer section is empty would be stored with
    /// a checksum nobody verified: the aws-chunked decoder accepts an empty
    /// trailer section and leaves this check to its caller.
    pub fn verify(&self, blob: &StagedBlob, trailers: &[(String, String)]) -> S3Result<Option<Checksum>> {
        check_trailers(self.trailer, trailers)?;
        if let Some(md5) = self.content_md5 {
            if md5 != blob.md5 {
                return Err(S3Error::code(S3Code::BadDigest));
            }
        }
        let algorithm = self.algorithm.unwrap_or(ChecksumAlgorithm::Crc64Nvme);
        let computed = blob.checksum(algorithm).cloned();
        let mut claims: Vec<(ChecksumAlgorithm, &str)> = Vec::new();
        if let (Some(a), Some(v)) = (self.algorithm, self.header_value.as_deref()) {
            claims.push((a, v));
        }
        for (name, value) in trailers {
            if let Some(a) = name.strip_prefix("x-amz-checksum-").and_then(ChecksumAlgorithm::from_name) {
                claims.push((a, value.as_str()));
            }
        }
        for (a, claimed) in claims {
            let ok = blob.checksum(a).is_some_and(|c| c.to_wire() == claimed.trim());
            if !ok {
                return Err(S3Error::new(
                    S3Code::BadDigest,
                    format!("The {} you specified did not match the calculated checksum.", a.name()),
                ));
            }
        }
        Ok(computed)
    }
}

/// The checksum trailers received must be exactly the one announced in
/// `x-amz-trailer` (or none, if none was announced).
fn check_trailers(declared: Option<ChecksumAlgorithm>, trailers: &[(String, String)]) -> S3Result<()> {
    let malformed = || {
        S3Error::new(
            S3Code::MalformedTrailerError,
            "The request contained trailing data that was not well-formed or did not conform to our published schema.",
        )
    };
    let mut sent = Vec::new();
    for (name, _) in trailers {
        if let Some(a) = name.strip_prefix("x-amz-checksum-") {
            sent.push(ChecksumAlgorithm::from_name(a).ok_or_else(malformed)?);
        }
    }
    match declared {
        Some(want) if sent != [want] => Err(malformed()),
        None if !sent.is_empty() => Err(malformed()),
        _ => Ok(()),
    }
}

fn put(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        headers.insert(n, v);
    }
}

/// RFC 1123 date for `Last-Modified`.
pub fn http_date_of(t: Timestamp) -> String {
    httpdate::fmt_http_date(t.to_system())
}

/// Headers describing an object on GET/HEAD (without Content-Length/Range).
pub fn object_headers(info: &ObjectInfo, checksum_mode: bool, whole: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    put(&mut h, "etag", &info.etag.quoted());
    put(&mut h, "last-modified", &http_date_of(info.last_modified));
    put(&mut h, "accept-ranges", "bytes");
    put(&mut h, "content-type", info.meta.content_type.as_deref().unwrap_or("binary/octet-stream"));
    for (k, v) in &info.meta.headers {
        if k == "x-amz-storage-class" && v == "STANDARD" {
            continue; // S3 omits the default class
        }
        // Lock headers an older walstore stored as plain metadata are not a lock:
        // only the version's real lock state is answered (below).
        if k == "x-amz-tagging" || k.starts_with("x-amz-object-lock-") {
            continue;
        }
        put(&mut h, k, v);
    }
    version_headers(&mut h, info);
    for (k, v) in &info.meta.user {
        put(&mut h, &format!("x-amz-meta-{k}"), v);
    }
    if checksum_mode && whole {
        if let Some(c) = &info.checksum {
            put(&mut h, c.algorithm.header_name(), &c.to_wire());
            put(&mut h, "x-amz-checksum-type", c.type_name());
        }
    }
    h
}

/// `x-amz-version-id` (on a bucket that is or was versioned) and the version's Object
/// Lock state.
pub fn version_headers(h: &mut HeaderMap, info: &ObjectInfo) {
    if let Some(v) = info.version_id {
        put(h, "x-amz-version-id", &v.to_string());
    }
    if let Some(r) = info.retention {
        put(h, "x-amz-object-lock-mode", r.mode.name());
        put(h, "x-amz-object-lock-retain-until-date", &crate::xml::iso8601(r.until));
    }
    if info.legal_hold {
        put(h, "x-amz-object-lock-legal-hold", "ON");
    }
}

/// The Object Lock a write asks for: `x-amz-object-lock-mode` with
/// `x-amz-object-lock-retain-until-date` (both or neither, as S3 requires), and
/// `x-amz-object-lock-legal-hold: ON|OFF`. Whether the bucket allows it is the store's
/// decision (a bucket without Object Lock refuses any of them).
pub fn lock_request(headers: &HeaderMap) -> S3Result<LockRequest> {
    let mode = text(headers, "x-amz-object-lock-mode")?;
    let until = text(headers, "x-amz-object-lock-retain-until-date")?;
    let retention = match (mode, until) {
        (None, None) => None,
        (Some(m), Some(u)) => {
            let mode = LockMode::parse(m.trim())
                .ok_or_else(|| S3Error::new(S3Code::InvalidArgument, "Unknown wormMode directive."))?;
            let until = crate::xml::parse_time(u).ok_or_else(|| {
                S3Error::new(S3Code::InvalidArgument, "The retain until date must be provided in ISO 8601 format")
            })?;
            Some(Retention { mode, until })
        }
        _ => {
            return Err(S3Error::new(
                S3Code::InvalidArgument,
                "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
            ))
        }
    };
    let legal_hold = match text(headers, "x-amz-object-lock-legal-hold")?.map(str::trim) {
        None | Some("OFF") => false,
        Some("ON") => true,
        Some(_) => return Err(S3Error::new(S3Code::InvalidArgument, "Legal Hold must be either of 'ON' or 'OFF'")),
    };
    Ok(LockRequest { retention, legal_hold })
}

/// Whether `x-amz-bypass-governance-retention: true` was sent.
pub fn bypass_governance(headers: &HeaderMap) -> S3Result<bool> {
    Ok(text(headers, "x-amz-bypass-governance-retention")?.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")))
}

/// Applies `response-*` query overrides of GetObject.
pub fn apply_response_overrides(h: &mut HeaderMap, query: &crate::router::Query) {
    for (param, header) in [
        ("response-content-type", "content-type"),
        ("response-content-language", "content-language"),
        ("response-expires", "expires"),
        ("response-cache-control", "cache-control"),
        ("response-content-disposition", "content-disposition"),
        ("response-content-encoding", "content-encoding"),
    ] {
        if let Some(v) = query.get(param) {
            put(h, header, v);
        }
    }
}

/// Adds the checksum a write stored to its response.
pub fn checksum_response(h: &mut HeaderMap, c: Option<&Checksum>) {
    if let Some(c) = c {
        put(h, c.algorithm.header_name(), &c.to_wire());
        put(h, "x-amz-checksum-type", c.type_name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |v: &str, size| parse_range(Some(v), size).map_err(|e| e.code);
        assert_eq!(r("bytes=0-9", 100), Ok(Some(0..10)));
        assert_eq!(r("bytes=90-200", 100), Ok(Some(90..100)));
        assert_eq!(r("bytes=10-", 100), Ok(Some(10..100)));
        assert_eq!(r("bytes=-10", 100), Ok(Some(90..100)));
        assert_eq!(r("bytes=-200", 100), Ok(Some(0..100)));
        assert_eq!(r("bytes=100-", 100), Err(S3Code::InvalidRange));
        assert_eq!(r("bytes=100-200", 100), Err(S3Code::InvalidRange));
        assert_eq!(r("bytes=-0", 100), Err(S3Code::InvalidRange));
        assert_eq!(r("bytes=0-", 0), Err(S3Code::InvalidRange));
        assert_eq!(r("bytes=5-3", 100), Ok(None));
        assert_eq!(r("bytes=0-1,3-4", 100), Ok(None));
        assert_eq!(r("items=0-1", 100), Ok(None));
        assert_eq!(r("bytes=x-1", 100), Ok(None));
        assert_eq!(parse_range(None, 100).map_err(|e| e.code), Ok(None));
    }

    fn info(etag: &str, ms: i64) -> ObjectInfo {
        ObjectInfo {
            bucket: storage::BucketName::parse("bkt").expect("b"),
            key: storage::ObjectKey::parse("k").expect("k"),
            size: 1,
            etag: ETag::from_client(etag),
            last_modified: Timestamp::from_millis(ms),
            meta: ObjectMeta::default(),
            checksum: None,
            parts_count: None,
            blobs: vec![],
            version_id: None,
            is_latest: true,
            retention: None,
            legal_hold: false,
        }
    }

    #[test]
    fn read_conditions() {
        let i = info("abc", 1_700_000_000_500);
        let t = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(HeaderName::from_bytes(k.as_bytes()).expect("n"), HeaderValue::from_str(v).expect("v"));
            }
            check_read_conditions(&h, &i, "").err().map(|e| e.code)
        };
        let before = httpdate::fmt_http_date(Timestamp::from_millis(1_699_999_999_000).to_system());
        let same = httpdate::fmt_http_date(Timestamp::from_millis(1_700_000_000_000).to_system());
        assert_eq!(t(&[]), None);
        assert_eq!(t(&[("if-match", "\"abc\"")]), None);
        assert_eq!(t(&[("if-match", "\"x\", \"abc\"")]), None);
        assert_eq!(t(&[("if-match", "\"zzz\"")]), Some(S3Code::PreconditionFailed));
        assert_eq!(t(&[("if-none-match", "\"abc\"")]), Some(S3Code::NotModified));
        assert_eq!(t(&[("if-none-match", "*")]), Some(S3Code::NotModified));
        assert_eq!(t(&[("if-none-match", "\"zzz\"")]), None);
        assert_eq!(t(&[("if-modified-since", &same)]), Some(S3Code::NotModified));
        assert_eq!(t(&[("if-modified-since", &before)]), None);
        assert_eq!(t(&[("if-unmodified-since", &before)]), Some(S3Code::PreconditionFailed));
        assert_eq!(t(&[("if-unmodified-since", &same)]), None);
        // If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
        assert_eq!(t(&[("if-match", "\"abc\""), ("if-unmodified-since", &before)]), None);
        assert_eq!(t(&[("if-none-match", "\"zzz\""), ("if-modified-since", &same)]), None);
    }

    #[test]
    fn trailers_must_match_the_announcement() {
        let t = |declared, names: &[&str]| {
            let trailers: Vec<(String, String)> =
                names.iter().map(|n| (n.to_string(), "AAAAAA==".to_string())).collect();
            check_trailers(declared, &trailers).err().map(|e| e.code)
        };
        let crc32 = Some(ChecksumAlgorithm::Crc32);
        let bad = Some(S3Code::MalformedTrailerError);
        assert_eq!(t(crc32, &["x-amz-checksum-crc32"]), None);
        assert_eq!(t(None, &[]), None);
        assert_eq!(t(crc32, &[]), bad, "announced but missing");
        assert_eq!(t(crc32, &["x-amz-checksum-sha256"]), bad, "another algorithm");
        assert_eq!(t(crc32, &["x-amz-checksum-crc32", "x-amz-checksum-crc32"]), bad, "twice");
        assert_eq!(t(crc32, &["x-amz-checksum-crc32", "x-amz-checksum-md5"]), bad, "unknown algorithm");
        assert_eq!(t(None, &["x-amz-checksum-crc32"]), bad, "not announced");
        assert_eq!(t(crc32, &["x-amz-checksum-crc32", "x-amz-meta-a"]), None, "other trailers are not checksums");
    }

    #[test]
    fn metadata_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("content-encoding", HeaderValue::from_static("aws-chunked"));
        h.insert("x-amz-meta-owner", HeaderValue::from_static("db1"));
        h.insert("x-amz-storage-class", HeaderValue::from_static("STANDARD"));
        let m = meta_from_headers(&h).expect("meta");
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.user, vec![("owner".to_string(), "db1".to_string())]);
        assert!(!m.headers.iter().any(|(k, _)| k == "content-encoding"), "aws-chunked is a transfer coding");
        for (sent, stored) in [
            ("deflate, gzip, aws-chunked", "deflate, gzip"),
            ("aws-chunked, gzip", "gzip"),
            ("gzip,aws-chunked,br", "gzip,br"),
            ("gzip ,  br", "gzip ,  br"),
        ] {
            h.insert("content-encoding", HeaderValue::from_static(sent));
            let m = meta_from_headers(&h).expect("meta");
            let got = m.headers.iter().find(|(k, _)| k == "content-encoding").map(|(_, v)| v.as_str());
            assert_eq!(got, Some(stored), "{sent}");
        }
        h.remove("content-encoding");
        h.insert("x-amz-storage-class", HeaderValue::from_static("FROZEN"));
        assert!(meta_from_headers(&h).is_err());
    }
}
