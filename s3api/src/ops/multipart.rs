//! Multipart uploads.

use http::{HeaderValue, Response, StatusCode};
use storage::{ChecksumAlgorithm, CompleteRequest, CompletedPart, ETag, UploadId, MAX_PART_NUMBER};

use super::{blocking, response, xml, Ctx};
use crate::body::{self, ResponseBody};
use crate::error::{S3Code, S3Error, S3Result};
use crate::headers::{checksum_response, expected_object, meta_from_headers, text, write_condition, ChecksumRequest};
use crate::ops::object::check_declared_length;
use crate::xml::{parse_complete, XmlWriter};

/// S3's maximum part size.
pub const MAX_PART_SIZE: u64 = 5 << 30;

fn upload_id(ctx: &Ctx) -> S3Result<UploadId> {
    UploadId::parse(ctx.query.get("uploadId").unwrap_or("")).map_err(S3Error::from)
}

/// CreateMultipartUpload.
pub async fn create(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let meta = meta_from_headers(&ctx.headers)?;
    let algorithm = match text(&ctx.headers, "x-amz-checksum-algorithm")? {
        None => None,
        Some(v) => Some(ChecksumAlgorithm::from_name(v.trim()).ok_or_else(|| {
            S3Error::new(S3Code::InvalidRequest, format!("Checksum algorithm {v:?} is not supported"))
        })?),
    };
    let full_object = match text(&ctx.headers, "x-amz-checksum-type")? {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("FULL_OBJECT") => true,
        Some(v) if v.eq_ignore_ascii_case("COMPOSITE") => false,
        Some(v) => return Err(S3Error::new(S3Code::InvalidRequest, format!("Unknown checksum type {v:?}"))),
    };
    let lock = crate::headers::lock_request(&ctx.headers)?;
    let store = ctx.state.store.clone();
    let (b, k) = (bucket.clone(), key.clone());
    let id = blocking(move || store.create_multipart(&b, &k, meta, algorithm, full_object, lock)).await?;
    let mut w = XmlWriter::new("InitiateMultipartUploadResult");
    w.elem("Bucket", bucket.as_str()).elem("Key", key.as_str()).elem("UploadId", id.as_str());
    let mut r = xml(w.finish("InitiateMultipartUploadResult"));
    if let Some(a) = algorithm {
        r.headers_mut().insert("x-amz-checksum-algorithm", HeaderValue::from_static(a.name()));
        let t = if full_object || a == ChecksumAlgorithm::Crc64Nvme { "FULL_OBJECT" } else { "COMPOSITE" };
        r.headers_mut().insert("x-amz-checksum-type", HeaderValue::from_static(t));
    }
    Ok(r)
}

/// UploadPart.
pub async fn upload_part(mut ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let id = upload_id(&ctx)?;
    let number: u32 = ctx
        .query
        .get("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::new(S3Code::InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive")
        })?;
    check_declared_length(&ctx, MAX_PART_SIZE)?;
    let store = ctx.state.store.clone();
    let (b, k, i) = (bucket.clone(), key.clone(), id.clone());
    let upload = blocking(move || store.upload(&b, &k, &i)).await?;
    let mut checks = ChecksumRequest::from_headers(&ctx.headers)?;
    if let (Some(want), Some(got)) = (upload.checksum_algorithm, checks.algorithm) {
        if want != got {
            return Err(S3Error::new(
                S3Code::InvalidRequest,
                format!(
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    want.name(),
                    got.name()
                ),
            ));
        }
    }
    if checks.algorithm.is_none() {
        checks.algorithm = upload.checksum_algorithm;
    }
    let (incoming, spec) = ctx.take_body()?;
    let received = body::receive(&ctx.state.store, incoming, spec, checks.algorithms(), MAX_PART_SIZE).await?;
    ctx.state.metrics.received.inc_by(received.blob.size);
    let checksum = checks.verify(&received.blob, &received.trailers)?;
    let store = ctx.state.store.clone();
    let part = blocking(move || store.upload_part(&bucket, &key, &id, number, received.blob, checksum)).await?;
    let mut r = response(StatusCode::OK, ResponseBody::Empty);
    if let Ok(v) = HeaderValue::from_str(&part.etag.quoted()) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    if upload.checksum_algorithm.is_some() {
        checksum_response(r.headers_mut(), part.checksum.as_ref());
    }
    Ok(r)
}

/// CompleteMultipartUpload: always a non-empty XML body on success.
pub async fn complete(mut ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let id = upload_id(&ctx)?;
    let condition = write_condition(&ctx.headers)?;
    let body = ctx.small_body().await?;
    let parsed = parse_complete(&body)?;
    let mut parts = Vec::with_capacity(parsed.len());
    for p in parsed {
        let mut checksum = None;
        for (name, value) in p.checksums {
            let a = ChecksumAlgorithm::from_name(&name)
                .ok_or_else(|| S3Error::new(S3Code::InvalidRequest, format!("unknown checksum Checksum{name}")))?;
            checksum = Some((a, value));
        }
        parts.push(CompletedPart { number: p.number, etag: ETag::from_client(&p.etag), checksum });
    }
    let expected = expected_object(&ctx.headers)?;
    let store = ctx.state.store.clone();
    let (b, k) = (bucket.clone(), key.clone());
    let actor = ctx.principal.access_key.clone();
    let info = blocking(move || {
        store.complete_multipart(&CompleteRequest {
            bucket: &b,
            key: &k,
            upload_id: &id,
            parts: &parts,
            condition,
            expected,
            actor: &actor,
        })
    })
    .await?;
    let mut w = XmlWriter::new("CompleteMultipartUploadResult");
    w.elem("Location", &format!("/{}/{}", bucket, key))
        .elem("Bucket", bucket.as_str())
        .elem("Key", key.as_str())
        .etag("ETag", &info.etag);
    if let Some(c) = &info.checksum {
        w.elem(&format!("Checksum{}", c.algorithm.name()), &c.to_wire()).elem("ChecksumType", c.type_name());
    }
    let mut r = xml(w.finish("CompleteMultipartUploadResult"));
    super::object::set_version_id(&mut r, info.version_id);
    Ok(r)
}

/// AbortMultipartUpload.
pub async fn abort(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let id = upload_id(&ctx)?;
    let store = ctx.state.store.clone();
    blocking(move || store.abort_multipart(&bucket, &key, &id)).await?;
    Ok(response(StatusCode::NO_CONTENT, ResponseBody::Empty))
}

/// ListParts.
pub async fn list_parts(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let id = upload_id(&ctx)?;
    let max: usize = match ctx.query.get("max-parts") {
        None => 1000,
        Some(v) => v
            .parse()
            .ok()
            .map(|n: usize| n.min(1000))
            .ok_or_else(|| S3Error::new(S3Code::InvalidArgument, "max-parts must be a non-negative integer"))?,
    };
    let marker: u32 = match ctx.query.get("part-number-marker") {
        None | Some("") => 0,
        Some(v) => v.parse().map_err(|_| S3Error::new(S3Code::InvalidArgument, "invalid part-number-marker"))?,
    };
    let store = ctx.state.store.clone();
    let (b, k, i) = (bucket.clone(), key.clone(), id.clone());
    let (upload, page) = blocking(move || {
        let u = store.upload(&b, &k, &i)?;
        let p = store.list_parts(&b, &k, &i, marker, max)?;
        Ok((u, p))
    })
    .await?;
    let mut w = XmlWriter::new("ListPartsResult");
    w.elem("Bucket", bucket.as_str()).elem("Key", key.as_str()).elem("UploadId", id.as_str());
    w.num("PartNumberMarker", marker);
    if let Some(last) = page.parts.last() {
        w.num("NextPartNumberMarker", last.number);
    }
    w.count("MaxParts", max).boolean("IsTruncated", page.truncated);
    w.elem("StorageClass", "STANDARD");
    if let Some(a) = upload.checksum_algorithm {
        w.elem("ChecksumAlgorithm", a.name());
    }
    for p in &page.parts {
        w.open("Part").num("PartNumber", p.number).time("LastModified", p.last_modified).etag("ETag", &p.etag);
        if let Some(c) = &p.checksum {
            w.elem(&format!("Checksum{}", c.algorithm.name()), &c.to_wire());
        }
        w.num("Size", p.size).close("Part");
    }
    Ok(xml(w.finish("ListPartsResult")))
}

/// ListMultipartUploads.
pub async fn list_uploads(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let prefix = ctx.query.get("prefix").unwrap_or("").to_owned();
    let delimiter = ctx.query.get("delimiter").filter(|d| !d.is_empty()).map(str::to_owned);
    let key_marker = ctx.query.get("key-marker").filter(|d| !d.is_empty()).map(str::to_owned);
    let id_marker = ctx.query.get("upload-id-marker").filter(|d| !d.is_empty()).map(str::to_owned);
    let max: usize = match ctx.query.get("max-uploads") {
        None => 1000,
        Some(v) => v
            .parse()
            .ok()
            .map(|n: usize| n.min(1000))
            .ok_or_else(|| S3Error::new(S3Code::InvalidArgument, "max-uploads must be a non-negative integer"))?,
    };
    let store = ctx.state.store.clone();
    let (b, p, d, km, im) = (bucket.clone(), prefix.clone(), delimiter.clone(), key_marker.clone(), id_marker.clone());
    let page = blocking(move || store.list_uploads(&b, &p, d.as_deref(), km.as_deref(), im.as_deref(), max)).await?;
    let mut w = XmlWriter::new("ListMultipartUploadsResult");
    w.elem("Bucket", bucket.as_str())
        .elem("KeyMarker", key_marker.as_deref().unwrap_or(""))
        .elem("UploadIdMarker", id_marker.as_deref().unwrap_or(""));
    if page.truncated {
        if let Some(last) = page.uploads.last() {
            w.elem("NextKeyMarker", last.key.as_str()).elem("NextUploadIdMarker", last.upload_id.as_str());
        }
    }
    w.elem("Prefix", &prefix);
    if let Some(d) = &delimiter {
        w.elem("Delimiter", d);
    }
    w.count("MaxUploads", max).boolean("IsTruncated", page.truncated);
    for u in &page.uploads {
        w.open("Upload")
            .elem("Key", u.key.as_str())
            .elem("UploadId", u.upload_id.as_str())
            .open("Initiator")
            .elem("ID", "walstore")
            .elem("DisplayName", "walstore")
            .close("Initiator")
            .open("Owner")
            .elem("ID", "walstore")
            .elem("DisplayName", "walstore")
            .close("Owner")
            .elem("StorageClass", "STANDARD")
            .time("Initiated", u.initiated);
        if let Some(a) = u.checksum_algorithm {
            w.elem("ChecksumAlgorithm", a.name());
        }
        w.close("Upload");
    }
    for p in &page.prefixes {
        w.open("CommonPrefixes").elem("Prefix", p).close("CommonPrefixes");
    }
    Ok(xml(w.finish("ListMultipartUploadsResult")))
}
