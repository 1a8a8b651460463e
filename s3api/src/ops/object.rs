//! Object operations: PutObject, GetObject/HeadObject, DeleteObject,
//! DeleteObjects, CopyObject.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use storage::{ObjectKey, PutRequest, VersionId};
use tokio::sync::mpsc;

use super::{blocking, read, response, xml, Ctx};
use crate::body::{self, ResponseBody};
use crate::error::{S3Code, S3Error, S3Result};
use crate::headers::{
    apply_response_overrides, check_read_conditions, checksum_response, lock_request, meta_from_headers,
    object_headers, parse_range, text, write_condition, ChecksumRequest,
};
use crate::router::decode_component;
use crate::xml::{parse_delete, XmlWriter};

/// Maximum keys in one DeleteObjects request (S3's limit).
pub const MAX_DELETE_KEYS: usize = 1000;

/// Rejects a body announced as larger than the limit before reading it (so a
/// client waiting for `100 Continue` gets the answer at once).
pub(crate) fn check_declared_length(ctx: &Ctx, limit: u64) -> S3Result<()> {
    let declared = text(&ctx.headers, "x-amz-decoded-content-length")?
        .or(text(&ctx.headers, "content-length")?)
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(S3Error::new(
            S3Code::EntityTooLarge,
            format!("Your proposed upload exceeds the maximum allowed size of {limit} bytes"),
        ));
    }
    Ok(())
}

/// PutObject.
pub async fn put_object(mut ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let meta = meta_from_headers(&ctx.headers)?;
    let condition = write_condition(&ctx.headers)?;
    let checks = ChecksumRequest::from_headers(&ctx.headers)?;
    let lock = lock_request(&ctx.headers)?;
    if !lock.is_empty() && checks.content_md5.is_none() && checks.algorithm.is_none() {
        return Err(S3Error::new(
            S3Code::InvalidRequest,
            "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters",
        ));
    }
    let limit = ctx.state.config.max_object_size;
    check_declared_length(&ctx, limit)?;
    {
        let b = bucket.clone();
        read(&ctx.state.store, move |store| store.bucket(&b)).await?;
    }
    let (incoming, spec) = ctx.take_body()?;
    let received = body::receive(&ctx.state.store, incoming, spec, checks.algorithms(), limit).await?;
    ctx.state.metrics.received.inc_by(received.blob.size);
    let checksum = checks.verify(&received.blob, &received.trailers)?;
    let store = ctx.state.store.clone();
    let actor = ctx.principal.access_key.clone();
    let info = blocking(move || {
        store.put_object(PutRequest {
            bucket: &bucket,
            key: &key,
            blob: received.blob,
            meta,
            checksum,
            condition,
            actor: &actor,
            lock,
        })
    })
    .await?;
    let mut r = response(StatusCode::OK, ResponseBody::Empty);
    if let Ok(v) = HeaderValue::from_str(&info.etag.quoted()) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    set_version_id(&mut r, info.version_id);
    if checks.algorithm.is_some() {
        checksum_response(r.headers_mut(), info.checksum.as_ref());
    }
    Ok(r)
}

/// 304: no body, but the validators and caching headers a 200 would carry (RFC 9110
/// §15.4.5), so a client can refresh what it cached.
fn not_modified(info: &storage::ObjectInfo) -> Response<ResponseBody> {
    let mut r = response(StatusCode::NOT_MODIFIED, ResponseBody::Empty);
    let all = object_headers(info, false, true);
    for name in [http::header::ETAG, http::header::LAST_MODIFIED, http::header::CACHE_CONTROL, http::header::EXPIRES] {
        if let Some(v) = all.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// GetObject and HeadObject. Small answers are read whole; larger ones stream
/// from a blocking reader that verifies each block's CRC before sending it. The
/// first block is verified before the status line goes out, so a corrupt object
/// usually fails with a clean 500; corruption found later aborts the connection.
pub async fn get_object(ctx: Ctx, head: bool) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    // A version id the store does not know is an error: never the current object
    // instead of the version that was asked for.
    let version = version_param(&ctx)?;
    // A small object is read whole together with its metadata: in memory on this
    // thread when it can be (see `read`), else in one trip to the blocking pool.
    let (info, small) = read(&ctx.state.store, move |store| {
        let info = match version {
            None => store.head_object(&bucket, &key)?,
            Some(v) => store.head_version(&bucket, &key, v)?,
        };
        let small = if !head && info.size > 0 && info.size <= storage::INLINE_MAX {
            let mut r = store.read_object(&info, 0..info.size)?;
            let mut all = bytes::BytesMut::with_capacity(info.size as usize);
            while let Some(c) = r.next_chunk()? {
                all.extend_from_slice(&c);
            }
            Some(all.freeze())
        } else {
            None
        };
        Ok((info, small))
    })
    .await?;
    match check_read_conditions(&ctx.headers, &info, "") {
        Ok(()) => {}
        Err(e) if e.code == S3Code::NotModified => return Ok(not_modified(&info)),
        Err(e) => return Err(e),
    }

    let mut range = parse_range(text(&ctx.headers, "range")?, info.size)?;
    let mut parts_count = None;
    if let Some(n) = ctx.query.get("partNumber") {
        let n: usize = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            S3Error::new(S3Code::InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive")
        })?;
        let sizes: Vec<u64> = match info.parts_count {
            Some(c) if c as usize == info.blobs.len() => info.blobs.iter().map(|b| b.size).collect(),
            Some(_) => return Err(S3Error::new(S3Code::NotImplemented, "partNumber on an object with empty parts")),
            None => vec![info.size],
        };
        if n > sizes.len() {
            return Err(S3Error::new(S3Code::InvalidRange, "The requested partnumber is not satisfiable"));
        }
        let start: u64 = sizes[..n - 1].iter().sum();
        range = Some(start..start + sizes[n - 1]);
        parts_count = Some(sizes.len());
    }
    let checksum_mode = text(&ctx.headers, "x-amz-checksum-mode")?.is_some_and(|v| v.eq_ignore_ascii_case("ENABLED"));
    let whole = range.is_none() || range.as_ref().is_some_and(|r| r.start == 0 && r.end == info.size);
    let mut headers = object_headers(&info, checksum_mode, whole);
    apply_response_overrides(&mut headers, &ctx.query);
    if let Some(n) = parts_count {
        headers.insert("x-amz-mp-parts-count", HeaderValue::from(n));
    }
    let (status, span) = match &range {
        Some(r) if !(parts_count.is_some() && whole) => {
            let cr = format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), info.size);
            if let Ok(v) = HeaderValue::from_str(&cr) {
                headers.insert(http::header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r.clone())
        }
        _ => (StatusCode::OK, 0..info.size),
    };
    let len = span.end - span.start;
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));

    let body = if head || len == 0 {
        ResponseBody::Empty
    } else if let Some(all) = small.filter(|a| a.len() as u64 == info.size) {
        ResponseBody::full(all.slice(span.start as usize..span.end as usize))
    } else {
        let store = ctx.state.store.clone();
        let info2 = info.clone();
        let (reader, first) = blocking(move || {
            let mut r = store.read_object(&info2, span)?;
            let first = r.next_chunk()?;
            Ok((r, first))
        })
        .await?;
        let first = first.unwrap_or_default();
        if reader.remaining() == 0 {
            ResponseBody::full(first)
        } else {
            let (tx, rx) = mpsc::channel::<Result<Bytes, body::BodyError>>(SEND_DEPTH);
            let remaining = len;
            let patience = ctx.state.config.body_limits.timeout;
            tokio::task::spawn_blocking(move || stream_rest(reader, first, tx, patience));
            ResponseBody::Stream { rx, remaining }
        }
    };
    let mut r = response(status, body);
    *r.headers_mut() = headers;
    Ok(r)
}

/// Pieces a response body is handed to hyper in: the unit of progress the send timeout sees.
const SEND_PIECE: usize = 64 << 10;
/// Pieces in flight between the reader and hyper (2 MiB, as two 1 MiB blocks were before).
const SEND_DEPTH: usize = 32;

/// Feeds the rest of a GET to hyper from a blocking thread. A client that stops taking data
/// for `patience` (no 64 KiB piece accepted) gets its response aborted: otherwise a client
/// that opens many GETs and never reads would hold this thread each, until the blocking pool
/// is exhausted and every storage call waits.
fn stream_rest(
    mut reader: storage::ObjectReader,
    first: Bytes,
    tx: mpsc::Sender<Result<Bytes, body::BodyError>>,
    patience: std::time::Duration,
) {
    let rt = tokio::runtime::Handle::current();
    // False when the client went away or stopped reading; dropping `tx` then aborts the body.
    let send_block = |block: Bytes| -> bool {
        let mut at = 0;
        while at < block.len() {
            let piece = block.slice(at..block.len().min(at + SEND_PIECE));
            at += piece.len();
            match rt.block_on(tokio::time::timeout(patience, tx.send(Ok(piece)))) {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return false,
                Err(_) => {
                    tracing::info!(
                        seconds = patience.as_secs_f64(),
                        "aborting a GET: the client took no data for the body timeout"
                    );
                    return false;
                }
            }
        }
        true
    };
    if !send_block(first) {
        return;
    }
    loop {
        match reader.next_chunk() {
            Ok(Some(chunk)) => {
                if !send_block(chunk) {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "aborting a GET: stored data failed verification or could not be read");
                let _ = rt.block_on(tokio::time::timeout(patience, tx.send(Err(Box::new(e)))));
                return;
            }
        }
    }
}

/// DeleteObject: 204 whether or not the key existed, unless a precondition
/// (`If-Match`, `x-amz-if-match-last-modified-time`, `x-amz-if-match-size`) fails.
pub async fn delete_object(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let version = version_param(&ctx)?;
    let condition = crate::headers::delete_condition(&ctx.headers)?;
    let bypass = bypass_allowed(&ctx)?;
    let store = ctx.state.store.clone();
    let (who, reason) = match ctx.delete_auth()? {
        storage::wal::DeleteAuth::Client { .. } => (ctx.principal.access_key.clone(), None),
        storage::wal::DeleteAuth::Override { reason, .. } => {
            (ctx.principal.access_key.clone(), Some(reason.to_owned()))
        }
    };
    let deleted = blocking(move || {
        let auth = match &reason {
            None => storage::wal::DeleteAuth::Client { principal: &who },
            Some(r) => storage::wal::DeleteAuth::Override { principal: &who, reason: r },
        };
        let target = storage::DeleteTarget { key, version, condition };
        store
            .delete_versions(&bucket, std::slice::from_ref(&target), auth, bypass)?
            .pop()
            .unwrap_or(Ok(storage::Deleted { existed: false, version_id: None, delete_marker: false }))
    })
    .await?;
    let mut r = response(StatusCode::NO_CONTENT, ResponseBody::Empty);
    set_version_id(&mut r, deleted.version_id);
    if deleted.delete_marker {
        r.headers_mut().insert("x-amz-delete-marker", HeaderValue::from_static("true"));
    }
    Ok(r)
}

/// `?versionId=`: `None` when absent or empty (the current object).
fn version_param(ctx: &Ctx) -> S3Result<Option<VersionId>> {
    parse_version_id(ctx.query.get("versionId"))
}

fn parse_version_id(v: Option<&str>) -> S3Result<Option<VersionId>> {
    match v {
        None | Some("") => Ok(None),
        Some(v) => Ok(Some(VersionId::parse(v)?)),
    }
}

/// `x-amz-bypass-governance-retention: true`, honoured only for an administrator key:
/// a stolen writer key must not be able to lift a lock. Anyone else sending it is refused
/// (never silently ignored).
pub(crate) fn bypass_allowed(ctx: &Ctx) -> S3Result<bool> {
    let asked = crate::headers::bypass_governance(&ctx.headers)?;
    if asked && !ctx.principal.is_admin() {
        return Err(S3Error::new(
            S3Code::AccessDenied,
            "Access Denied: only an administrator key may bypass governance retention",
        ));
    }
    Ok(asked)
}

/// `x-amz-version-id` on an answer about a versioned bucket's object.
pub(crate) fn set_version_id(r: &mut Response<ResponseBody>, v: Option<VersionId>) {
    if let Some(v) = v {
        if let Ok(h) = HeaderValue::from_str(&v.to_string()) {
            r.headers_mut().insert("x-amz-version-id", h);
        }
    }
}

/// DeleteObjects. An empty `<VersionId>` means the current object and deletes
/// it (WAL-G sends one with every key). Per-key failures are reported in the
/// result document.
pub async fn delete_objects(mut ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let checks = ChecksumRequest::from_headers(&ctx.headers)?;
    let body = ctx.small_body().await?;
    if let Some(md5) = checks.content_md5 {
        use md5::{Digest, Md5};
        if <[u8; 16]>::from(Md5::digest(&body)) != md5 {
            return Err(S3Error::code(S3Code::BadDigest));
        }
    }
    let req = parse_delete(&body)?;
    if req.objects.len() > MAX_DELETE_KEYS {
        return Err(S3Error::new(
            S3Code::MalformedXML,
            format!("a Delete request may name at most {MAX_DELETE_KEYS} objects"),
        ));
    }
    let store = ctx.state.store.clone();
    let b = bucket.clone();
    blocking(move || store.bucket(&b)).await?;
    // Keys that fail validation are reported per key; the rest go in one batch.
    let bypass = bypass_allowed(&ctx)?;
    let mut results: Vec<(String, Option<String>, Result<storage::Deleted, S3Error>)> =
        Vec::with_capacity(req.objects.len());
    let mut valid = Vec::new();
    let nothing = storage::Deleted { existed: false, version_id: None, delete_marker: false };
    for (i, o) in req.objects.into_iter().enumerate() {
        let r = match (parse_version_id(o.version_id.as_deref()), ObjectKey::parse(&o.key)) {
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(S3Error::from(e)),
            (Ok(version), Ok(key)) => {
                valid.push((i, storage::DeleteTarget { key, version, condition: o.condition }));
                Ok(nothing)
            }
        };
        results.push((o.key, o.version_id, r));
    }
    // Keys outside a scoped key's prefix are refused per key.
    valid.retain(|(i, t)| {
        let ok = crate::authz::key_in_scope(&ctx.principal, &bucket, t.key.as_str());
        if !ok {
            results[*i].2 = Err(S3Error::new(S3Code::AccessDenied, "Access Denied: outside the key's scope"));
        }
        ok
    });
    let store = ctx.state.store.clone();
    let targets: Vec<storage::DeleteTarget> = valid.iter().map(|(_, t)| t.clone()).collect();
    let (who, reason) = match ctx.delete_auth()? {
        storage::wal::DeleteAuth::Client { .. } => (ctx.principal.access_key.clone(), None),
        storage::wal::DeleteAuth::Override { reason, .. } => {
            (ctx.principal.access_key.clone(), Some(reason.to_owned()))
        }
    };
    let outcome = blocking(move || {
        let auth = match &reason {
            None => storage::wal::DeleteAuth::Client { principal: &who },
            Some(r) => storage::wal::DeleteAuth::Override { principal: &who, reason: r },
        };
        store.delete_versions(&bucket, &targets, auth, bypass)
    })
    .await;
    match outcome {
        Ok(per_key) => {
            for ((i, _), r) in valid.iter().zip(per_key) {
                results[*i].2 = r.map_err(S3Error::from);
            }
        }
        Err(e) => {
            for (i, _) in &valid {
                results[*i].2 = Err(e.clone());
            }
        }
    }
    let quiet = req.quiet;
    let mut w = XmlWriter::new("DeleteResult");
    for (key, version, r) in results {
        match r {
            Ok(_) if quiet => {}
            Ok(d) => {
                w.open("Deleted").elem("Key", &key).opt("VersionId", version.as_deref());
                if d.delete_marker {
                    w.boolean("DeleteMarker", true);
                    if version.is_none() {
                        if let Some(m) = d.version_id {
                            w.elem("DeleteMarkerVersionId", &m.to_string());
                        }
                    }
                }
                w.close("Deleted");
            }
            Err(e) => {
                w.open("Error")
                    .elem("Key", &key)
                    .opt("VersionId", version.as_deref())
                    .elem("Code", e.code.as_str())
                    .elem("Message", &e.message)
                    .close("Error");
            }
        }
    }
    Ok(xml(w.finish("DeleteResult")))
}

/// Parses `x-amz-copy-source`: `bucket/key` or `/bucket/key`, URL-encoded or
/// not, optionally with `?versionId=`.
fn copy_source(v: &str) -> S3Result<(storage::BucketName, ObjectKey, Option<VersionId>)> {
    let v = v.trim();
    let (path, query) = v.split_once('?').unwrap_or((v, ""));
    let mut version = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "versionId" {
            version = parse_version_id(Some(val))?;
        }
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let decoded = decode_component(path)?;
    let (b, k) = decoded.split_once('/').ok_or_else(|| {
        S3Error::new(
            S3Code::InvalidArgument,
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    })?;
    Ok((storage::BucketName::parse(b)?, ObjectKey::parse(k)?, version))
}

/// CopyObject: a new index entry referencing the same blobs; no bytes move.
pub async fn copy_object(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let src = text(&ctx.headers, "x-amz-copy-source")?.unwrap_or("");
    let (src_bucket, src_key, src_version) = copy_source(src)?;
    let lock = lock_request(&ctx.headers)?;
    let replace = match text(&ctx.headers, "x-amz-metadata-directive")? {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("COPY") => false,
        Some(v) if v.eq_ignore_ascii_case("REPLACE") => true,
        Some(v) => return Err(S3Error::new(S3Code::InvalidArgument, format!("Unknown metadata directive {v:?}"))),
    };
    if !replace && src_bucket == bucket && src_key == key && src_version.is_none() {
        return Err(S3Error::new(
            S3Code::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let meta = if replace { Some(meta_from_headers(&ctx.headers)?) } else { None };
    let condition = write_condition(&ctx.headers)?;
    let store = ctx.state.store.clone();
    let (sb, sk) = (src_bucket.clone(), src_key.clone());
    let src_info = blocking(move || match src_version {
        None => store.head_object(&sb, &sk),
        Some(v) => store.head_version(&sb, &sk, v),
    })
    .await?;
    check_read_conditions(&ctx.headers, &src_info, "x-amz-copy-source-")?;
    let store = ctx.state.store.clone();
    let info =
        blocking(move || store.copy_object((&src_bucket, &src_key, src_version), &bucket, &key, meta, condition, lock))
            .await?;
    let mut w = XmlWriter::new("CopyObjectResult");
    w.time("LastModified", info.last_modified).etag("ETag", &info.etag);
    if let Some(c) = &info.checksum {
        w.elem(&format!("Checksum{}", c.algorithm.name()), &c.to_wire());
    }
    let mut r = xml(w.finish("CopyObjectResult"));
    set_version_id(&mut r, info.version_id);
    if let Some(v) = src_info.version_id {
        if let Ok(h) = HeaderValue::from_str(&v.to_string()) {
            r.headers_mut().insert("x-amz-copy-source-version-id", h);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_forms() {
        for v in ["bkt/a/b.lz4", "/bkt/a/b.lz4", "bkt/a%2Fb.lz4", "bkt/a/b.lz4?versionId=null"] {
            let (b, k, _) = copy_source(v).unwrap_or_else(|e| panic!("{v}: {}", e.message));
            assert_eq!(b.as_str(), "bkt");
            assert_eq!(k.as_str(), "a/b.lz4");
        }
        assert!(copy_source("bkt").is_err());
        assert!(copy_source("bkt/k?versionId=abc").is_err());
        assert!(copy_source("BAD_bucket/k").is_err());
    }
}
