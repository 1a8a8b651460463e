//! Bucket operations.

use http::{HeaderValue, Response, StatusCode};

use super::{blocking, response, xml, Ctx};
use crate::body::ResponseBody;
use crate::error::{S3Code, S3Error, S3Result};
use crate::headers::text;
use crate::xml::{parse_create_bucket, XmlWriter};

/// ListBuckets.
pub async fn list_buckets(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let store = ctx.state.store.clone();
    let mut buckets = blocking(move || store.list_buckets()).await?;
    if let Some((scope, _)) = &ctx.principal.scope {
        buckets.retain(|b| b.name.as_str() == scope);
    }
    let mut w = XmlWriter::new("ListAllMyBucketsResult");
    w.open("Owner").elem("ID", &ctx.state.config.owner_id).elem("DisplayName", "walstore").close("Owner");
    w.open("Buckets");
    for b in buckets {
        w.open("Bucket").elem("Name", b.name.as_str()).time("CreationDate", b.created).close("Bucket");
    }
    w.close("Buckets");
    Ok(xml(w.finish("ListAllMyBucketsResult")))
}

/// CreateBucket. A `LocationConstraint` is accepted and ignored: one server is
/// one region.
pub async fn create_bucket(mut ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let body = ctx.small_body().await?;
    parse_create_bucket(&body)?;
    let locked = match text(&ctx.headers, "x-amz-bucket-object-lock-enabled")?.map(str::trim) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(S3Error::new(
                S3Code::InvalidArgument,
                format!("x-amz-bucket-object-lock-enabled must be true or false, not {v:?}"),
            ))
        }
    };
    let store = ctx.state.store.clone();
    let b = bucket.clone();
    match blocking(move || if locked { store.create_locked_bucket(&b) } else { store.create_bucket(&b) }).await {
        Ok(_) => {}
        // As S3: its owner re-creating a bucket gets 200 in us-east-1 (the legacy
        // behaviour clients there rely on) and 409 BucketAlreadyOwnedByYou elsewhere.
        Err(e) if e.code == S3Code::BucketAlreadyOwnedByYou && ctx.state.config.region == "us-east-1" => {}
        Err(e) => return Err(e),
    }
    let mut r = response(StatusCode::OK, ResponseBody::Empty);
    if let Ok(v) = HeaderValue::from_str(&format!("/{bucket}")) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(r)
}

/// DeleteBucket (`BucketNotEmpty` if anything is left).
pub async fn delete_bucket(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let store = ctx.state.store.clone();
    blocking(move || store.delete_bucket(&bucket)).await?;
    Ok(response(StatusCode::NO_CONTENT, ResponseBody::Empty))
}

/// HeadBucket.
pub async fn head_bucket(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let store = ctx.state.store.clone();
    blocking(move || store.bucket_or_view(&bucket)).await?;
    let mut r = response(StatusCode::OK, ResponseBody::Empty);
    if let Ok(v) = HeaderValue::from_str(&ctx.state.config.region) {
        r.headers_mut().insert("x-amz-bucket-region", v);
    }
    Ok(r)
}

/// GetBucketLocation: empty for us-east-1, as S3 answers.
pub async fn get_location(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let store = ctx.state.store.clone();
    blocking(move || store.bucket_or_view(&bucket)).await?;
    let region = &ctx.state.config.region;
    let mut w = XmlWriter::new("LocationConstraint");
    if region != "us-east-1" {
        w.text(region);
    }
    Ok(xml(w.finish("LocationConstraint")))
}
