//! The request pipeline: request id → health endpoints → SigV4 → routing →
//! handler → error encoding. One log line per request at debug level.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::sigv4::{self, AuthSettings, PayloadHash, RequestParts};
use crate::authz::authorize;
use crate::body::{BodySpec, ResponseBody};
use crate::error::{S3Code, S3Error};
use crate::ops::{self, Ctx};
use crate::router::{route, Query};
use crate::state::AppState;
use crate::xml::error_body;

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

fn request_id() -> String {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u32> = OnceLock::new();
    let p = PREFIX.get_or_init(rand::random);
    format!("{:08X}{:08X}", p, REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed) as u32)
}

/// Handles one HTTP request. Never fails: every error becomes an S3 error answer.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    let id = request_id();
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (op, result) = process(&state, req).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => error_response(&e, &path, &id, method == Method::HEAD),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-amz-request-id", v.clone());
        h.insert("x-amz-id-2", v);
    }
    h.insert(http::header::SERVER, HeaderValue::from_static("walstore"));
    tracing::debug!(
        request_id = %id,
        op,
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(resp)
}

fn error_response(e: &S3Error, resource: &str, id: &str, head: bool) -> Response<ResponseBody> {
    let status = e.status();
    let no_body = head || status == StatusCode::NOT_MODIFIED;
    let mut r = if no_body {
        Response::new(ResponseBody::Empty)
    } else {
        let mut r = Response::new(ResponseBody::full(error_body(e.code.as_str(), &e.message, resource, id)));
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        r
    };
    *r.status_mut() = status;
    if let Some(s) = e.retry_after {
        r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    if status.is_server_error() || status == StatusCode::BAD_REQUEST {
        tracing::info!(request_id = %id, code = e.code.as_str(), message = %e.message, "request failed");
    }
    r
}

fn is_probe(req: &Request<Incoming>) -> bool {
    req.headers().get(http::header::AUTHORIZATION).is_none()
        && !req.uri().query().unwrap_or("").contains("X-Amz-Algorithm")
        && matches!(req.uri().path(), "/health/live" | "/health/ready")
}

async fn probe(state: &AppState, path: &str) -> Response<ResponseBody> {
    let ok = match path {
        "/health/live" => true,
        _ => !state.is_shutting_down() && state.store.probe_writable().is_ok(),
    };
    let mut r = Response::new(ResponseBody::full(if ok { "ok\n" } else { "not ready\n" }));
    *r.status_mut() = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    r
}

async fn process(
    state: &Arc<AppState>,
    mut req: Request<Incoming>,
) -> (&'static str, Result<Response<ResponseBody>, S3Error>) {
    if is_probe(&req) {
        let path = req.uri().path().to_owned();
        return ("Health", Ok(probe(state, &path).await));
    }
    // HTTP/2 carries the host in the URI authority; SigV4 signs it as `host`.
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(v) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    let settings =
        AuthSettings { now: SystemTime::now(), region: &state.config.region, max_skew: state.config.max_skew };
    let rp = RequestParts { method: &parts.method, raw_path, raw_query, headers: &parts.headers };
    let verified = match sigv4::verify(&rp, &settings, state.keys.as_ref()) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return (
                "Anonymous",
                Err(S3Error::new(S3Code::AccessDenied, "Anonymous access is not allowed; sign requests with SigV4")),
            )
        }
        Err(e) => {
            tracing::debug!(error = %e, "authentication failed");
            return ("Unauthenticated", Err(S3Error::from(e)));
        }
    };
    let query = match Query::parse(raw_query) {
        Ok(q) => q,
        Err(e) => return ("Invalid", Err(e)),
    };
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let spec = BodySpec {
        expect_trailer: header("x-amz-trailer").is_some(),
        aws_chunked: header("content-encoding")
            .is_some_and(|v| v.split(',').any(|c| c.trim().eq_ignore_ascii_case("aws-chunked")))
            && !matches!(verified.payload, PayloadHash::Sha256(_)),
        decoded_length: header("x-amz-decoded-content-length").and_then(|v| v.trim().parse().ok()),
        payload: verified.payload,
        chunk_signer: verified.chunk_signer,
    };
    let Some(principal) = state.keys.principal(&verified.access_key_id) else {
        return ("Unauthenticated", Err(S3Error::code(S3Code::InvalidAccessKeyId)));
    };
    if raw_path.starts_with(crate::admin::PREFIX) {
        return ("Admin", crate::admin::handle(state, &principal, &parts.method, raw_path, &query, body, spec).await);
    }
    let r = match route(&parts.method, raw_path, &query, &parts.headers) {
        Ok(r) => r,
        Err(e) => return ("Invalid", Err(e)),
    };
    let op = r.op;
    if let Err(e) = authorize(&principal, op, r.bucket.as_ref(), r.key.as_ref(), &query, &parts.headers) {
        return (op.name(), Err(e));
    }
    let ctx = Ctx {
        state: state.clone(),
        method: parts.method,
        headers: parts.headers,
        query,
        bucket: r.bucket,
        key: r.key,
        body: Some(body),
        spec: Some(spec),
        principal,
    };
    (op.name(), ops::dispatch(op, ctx).await)
}
