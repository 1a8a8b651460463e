//! Versioning and Object Lock configuration: PutBucketVersioning / GetBucketVersioning,
//! Put/GetObjectLockConfiguration, Put/GetObjectRetention, Put/GetObjectLegalHold.
//! The rules (who may weaken what) are the store's; this is the protocol.

use http::{Response, StatusCode};

use super::object::{bypass_allowed, set_version_id};
use super::{blocking, response, xml, Ctx};
use crate::body::ResponseBody;
use crate::error::{S3Code, S3Error, S3Result};
use crate::xml::{parse_legal_hold, parse_object_lock, parse_retention, parse_versioning, XmlWriter};

/// GetBucketVersioning: no `Status` for a bucket never versioned (WAL-G then uses
/// plain listings and deletes), else `Enabled` or `Suspended`.
pub async fn get_versioning(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let store = ctx.state.store.clone();
    let info = blocking(move || store.bucket_or_view(&bucket)).await?;
    let mut w = XmlWriter::new("VersioningConfiguration");
    if let Some(s) = info.versioning.status() {
        w.elem("Status", s);
    }
    Ok(xml(w.finish("VersioningConfiguration")))
}

/// PutBucketVersioning (administrators only).
pub async fn put_versioning(mut ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let body = ctx.small_body().await?;
    let state = parse_versioning(&body)?;
    let store = ctx.state.store.clone();
    blocking(move || store.set_versioning(&bucket, state)).await?;
    Ok(response(StatusCode::OK, ResponseBody::Empty))
}

/// GetObjectLockConfiguration.
pub async fn get_object_lock(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let store = ctx.state.store.clone();
    let info = blocking(move || store.bucket(&bucket)).await?;
    let cfg = info.object_lock.ok_or_else(|| S3Error::code(S3Code::ObjectLockConfigurationNotFoundError))?;
    let mut w = XmlWriter::new("ObjectLockConfiguration");
    w.elem("ObjectLockEnabled", "Enabled");
    if let Some((mode, period)) = cfg.default_retention {
        w.open("Rule").open("DefaultRetention").elem("Mode", mode.name());
        match period {
            storage::LockPeriod::Days(d) => w.num("Days", d),
            storage::LockPeriod::Years(y) => w.num("Years", y),
        };
        w.close("DefaultRetention").close("Rule");
    }
    Ok(xml(w.finish("ObjectLockConfiguration")))
}

/// PutObjectLockConfiguration (administrators only): enables Object Lock on a bucket
/// with versioning enabled, and sets its default retention.
pub async fn put_object_lock(mut ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let body = ctx.small_body().await?;
    let cfg = parse_object_lock(&body)?;
    let store = ctx.state.store.clone();
    blocking(move || store.set_object_lock(&bucket, cfg)).await?;
    Ok(response(StatusCode::OK, ResponseBody::Empty))
}

fn version(ctx: &Ctx) -> S3Result<Option<storage::VersionId>> {
    match ctx.query.get("versionId") {
        None | Some("") => Ok(None),
        Some(v) => Ok(Some(storage::VersionId::parse(v)?)),
    }
}

async fn lock_state(ctx: &Ctx) -> S3Result<storage::ObjectInfo> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let v = version(ctx)?;
    let store = ctx.state.store.clone();
    blocking(move || {
        let info = store.bucket(&bucket)?;
        if info.object_lock.is_none() {
            return Err(storage::Error::InvalidRequest("Bucket is missing Object Lock Configuration".into()));
        }
        match v {
            None => store.head_object(&bucket, &key),
            Some(v) => store.head_version(&bucket, &key, v),
        }
    })
    .await
}

/// GetObjectRetention.
pub async fn get_retention(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let info = lock_state(&ctx).await?;
    let r = info.retention.ok_or_else(|| S3Error::code(S3Code::NoSuchObjectLockConfiguration))?;
    let mut w = XmlWriter::new("Retention");
    w.elem("Mode", r.mode.name()).time("RetainUntilDate", r.until);
    Ok(xml(w.finish("Retention")))
}

/// PutObjectRetention. Extending is open to writers; shortening or removing GOVERNANCE
/// retention needs `x-amz-bypass-governance-retention` from an administrator;
/// COMPLIANCE cannot be weakened by anyone.
pub async fn put_retention(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    put_version_lock(
        ctx,
        |ctx, body| Ok((parse_retention(body)?, bypass_allowed(ctx)?)),
        |store, bucket, key, v, (retention, bypass)| store.set_retention(bucket, key, v, retention, bypass),
    )
    .await
}

/// GetObjectLegalHold.
pub async fn get_legal_hold(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let info = lock_state(&ctx).await?;
    let mut w = XmlWriter::new("LegalHold");
    w.elem("Status", if info.legal_hold { "ON" } else { "OFF" });
    Ok(xml(w.finish("LegalHold")))
}

/// PutObjectLegalHold. Placing a hold is open to writers; lifting one needs an
/// administrator key (a stolen writer key must not be able to unlock a version).
pub async fn put_legal_hold(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    put_version_lock(
        ctx,
        |ctx, body| {
            let on = parse_legal_hold(body)?;
            if !on && !ctx.principal.is_admin() {
                return Err(S3Error::new(
                    S3Code::AccessDenied,
                    "Access Denied: only an administrator key may lift a legal hold",
                ));
            }
            Ok(on)
        },
        |store, bucket, key, v, on| store.set_legal_hold(bucket, key, v, on),
    )
    .await
}

/// The shape PutObjectRetention and PutObjectLegalHold share: read the body, let `parse`
/// check it (and the caller's right to ask for it), apply `set` to the version named by
/// `versionId` (the current one without), answer with the version id.
async fn put_version_lock<T: Send + 'static>(
    mut ctx: Ctx,
    parse: impl FnOnce(&Ctx, &[u8]) -> S3Result<T>,
    set: impl FnOnce(
            &storage::Store,
            &storage::BucketName,
            &storage::ObjectKey,
            Option<storage::VersionId>,
            T,
        ) -> storage::Result<()>
        + Send
        + 'static,
) -> S3Result<Response<ResponseBody>> {
    let bucket = ctx.bucket()?.clone();
    let key = ctx.key()?.clone();
    let v = version(&ctx)?;
    let body = ctx.small_body().await?;
    let arg = parse(&ctx, &body)?;
    let store = ctx.state.store.clone();
    blocking(move || set(&store, &bucket, &key, v, arg)).await?;
    let mut r = response(StatusCode::OK, ResponseBody::Empty);
    set_version_id(&mut r, v);
    Ok(r)
}
