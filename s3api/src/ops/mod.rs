//! Operation handlers, one module per family. Every handler has the same shape:
//! parse its own parameters from the [`Ctx`], call the store off the async
//! runtime, encode the answer.

pub mod bucket;
pub mod list;
pub mod lock;
pub mod multipart;
pub mod object;

use std::sync::Arc;

use http::{HeaderMap, Method, Response, StatusCode};
use storage::{BucketName, ObjectKey, Store};

use crate::body::{BodySpec, ResponseBody, TimedBody};
use crate::error::{S3Code, S3Error, S3Result};
use crate::router::{Operation, Query};
use crate::state::AppState;

/// Everything a handler may use.
pub struct Ctx {
    /// Shared server state.
    pub state: Arc<AppState>,
    /// HTTP method.
    pub method: Method,
    /// Request headers.
    pub headers: HeaderMap,
    /// Decoded query.
    pub query: Query,
    /// Routed bucket.
    pub bucket: Option<BucketName>,
    /// Routed key.
    pub key: Option<ObjectKey>,
    /// The request body with its deadlines (taken by handlers that read it).
    pub body: Option<TimedBody>,
    /// How the body is framed and signed.
    pub spec: Option<BodySpec>,
    /// The authenticated caller.
    pub principal: crate::authz::Principal,
}

impl Ctx {
    pub(crate) fn bucket(&self) -> S3Result<&BucketName> {
        self.bucket.as_ref().ok_or_else(|| S3Error::new(S3Code::InvalidRequest, "a bucket is required"))
    }

    pub(crate) fn key(&self) -> S3Result<&ObjectKey> {
        self.key.as_ref().ok_or_else(|| S3Error::new(S3Code::InvalidRequest, "a key is required"))
    }

    pub(crate) fn take_body(&mut self) -> S3Result<(TimedBody, BodySpec)> {
        match (self.body.take(), self.spec.take()) {
            (Some(b), Some(s)) => Ok((b, s)),
            _ => Err(S3Error::internal("request body", &"body already taken")),
        }
    }

    /// How deletes of this request are authorised: an admin may override delete
    /// protection with `x-walstore-retention-override: <reason>` (audited).
    pub(crate) fn delete_auth(&self) -> S3Result<storage::wal::DeleteAuth<'_>> {
        match self.headers.get("x-walstore-retention-override").and_then(|v| v.to_str().ok()) {
            None => Ok(storage::wal::DeleteAuth::Client { principal: &self.principal.access_key }),
            Some(reason) if self.principal.is_admin() && !reason.trim().is_empty() => {
                Ok(storage::wal::DeleteAuth::Override { principal: &self.principal.access_key, reason: reason.trim() })
            }
            Some(_) => Err(S3Error::new(
                S3Code::AccessDenied,
                "x-walstore-retention-override needs an unscoped admin key and a non-empty reason",
            )),
        }
    }

    /// Reads a small XML body, bounded by the configured limit. A body announced as larger is
    /// refused before any of it is read.
    pub(crate) async fn small_body(&mut self) -> S3Result<bytes::Bytes> {
        let limit = self.state.config.max_xml_body;
        let declared = self
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(S3Error::new(S3Code::MalformedXML, format!("the request body exceeds {limit} bytes")));
        }
        let (body, spec) = self.take_body()?;
        crate::body::read_small(body, spec, limit).await
    }
}

/// Runs a blocking storage call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> S3Result<T>
where
    F: FnOnce() -> storage::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(S3Error::from),
        Err(e) => Err(S3Error::internal("blocking task", &e)),
    }
}

/// Runs the store reads in `f` right here when all they need is in memory (see
/// [`storage::Store::without_io`]), else on the blocking pool like [`blocking`]. Saves
/// the two thread hand-offs of a pool trip on the common small GET/HEAD, and never
/// blocks this async thread on the disk.
pub(crate) async fn read<T, F>(store: &Arc<Store>, f: F) -> S3Result<T>
where
    F: Fn(&Store) -> storage::Result<T> + Send + 'static,
    T: Send + 'static,
{
    if let Some(r) = store.without_io(&f) {
        return r.map_err(S3Error::from);
    }
    let store = store.clone();
    blocking(move || f(&store)).await
}

/// A response with a status and body.
pub(crate) fn response(status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

/// A 200 with an XML document.
pub(crate) fn xml(body: bytes::Bytes) -> Response<ResponseBody> {
    let mut r = response(StatusCode::OK, ResponseBody::full(body));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    r
}

/// Dispatches a routed request.
pub async fn dispatch(op: Operation, ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    use Operation as O;
    match op {
        O::ListBuckets => bucket::list_buckets(ctx).await,
        O::CreateBucket => bucket::create_bucket(ctx).await,
        O::DeleteBucket => bucket::delete_bucket(ctx).await,
        O::HeadBucket => bucket::head_bucket(ctx).await,
        O::GetBucketLocation => bucket::get_location(ctx).await,
        O::GetBucketVersioning => lock::get_versioning(ctx).await,
        O::PutBucketVersioning => lock::put_versioning(ctx).await,
        O::GetObjectLockConfiguration => lock::get_object_lock(ctx).await,
        O::PutObjectLockConfiguration => lock::put_object_lock(ctx).await,
        O::GetObjectRetention => lock::get_retention(ctx).await,
        O::PutObjectRetention => lock::put_retention(ctx).await,
        O::GetObjectLegalHold => lock::get_legal_hold(ctx).await,
        O::PutObjectLegalHold => lock::put_legal_hold(ctx).await,
        O::ListObjects => list::list_objects_v1(ctx).await,
        O::ListObjectsV2 => list::list_objects_v2(ctx).await,
        O::ListObjectVersions => list::list_object_versions(ctx).await,
        O::ListMultipartUploads => multipart::list_uploads(ctx).await,
        O::DeleteObjects => object::delete_objects(ctx).await,
        O::PutObject => object::put_object(ctx).await,
        O::CopyObject => object::copy_object(ctx).await,
        O::GetObject => object::get_object(ctx, false).await,
        O::HeadObject => object::get_object(ctx, true).await,
        O::DeleteObject => object::delete_object(ctx).await,
        O::CreateMultipartUpload => multipart::create(ctx).await,
        O::UploadPart => multipart::upload_part(ctx).await,
        O::CompleteMultipartUpload => multipart::complete(ctx).await,
        O::AbortMultipartUpload => multipart::abort(ctx).await,
        O::ListParts => multipart::list_parts(ctx).await,
    }
}
