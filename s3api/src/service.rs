//! The request pipeline: request id → health endpoints → SigV4 → routing →
//! handler → error encoding. One log line per request at debug level.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::sigv4::{AuthSettings, PayloadHash, RequestParts, SignatureVersion};
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
    state.metrics.in_flight.inc();
    let (op, result) = process(&state, req).await;
    state.metrics.in_flight.dec();
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => error_response(&e, &path, &id, method == Method::HEAD),
    };
    if method != Method::HEAD {
        use http_body::Body;
        state.metrics.sent.inc_by(resp.body().size_hint().exact().unwrap_or(0));
    }
    if op != "Health" && op != "Metrics" {
        state.metrics.observe(op, resp.status().as_u16(), start.elapsed().as_secs_f64());
    }
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

/// Health and metrics endpoints: requests without SigV4 authentication.
fn is_probe(req: &Request<Incoming>) -> bool {
    let sigv4 = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.starts_with("Bearer "));
    !sigv4
        && !req.uri().query().unwrap_or("").contains("X-Amz-Algorithm")
        && req.method() == Method::GET
        && matches!(req.uri().path(), "/health/live" | "/health/ready" | "/metrics")
}

async fn probe(state: &AppState, req: &Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    if path == "/metrics" {
        if let Some(token) = &state.config.metrics_token {
            let given = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            let ok = given.strip_prefix("Bearer ").is_some_and(|t| {
                use subtle::ConstantTimeEq;
                t.as_bytes().ct_eq(token.as_bytes()).into()
            });
            if !ok {
                let mut r = Response::new(ResponseBody::full("metrics need the bearer token\n"));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
        }
        let (store, metrics, rep) = (state.store.clone(), state.metrics.clone(), state.replicator.clone());
        let tier = state.tier.clone();
        let body = tokio::task::spawn_blocking(move || {
            metrics.refresh_at_scrape(&store);
            metrics.refresh_replication(&rep.report(&store), &store.last_evaluations());
            metrics.refresh_tier(&tier);
            metrics.render()
        })
        .await
        .unwrap_or_default();
        let mut r = Response::new(ResponseBody::full(body));
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        return r;
    }
    let ok = match path {
        "/health/live" => true,
        _ => {
            let store = state.store.clone();
            !state.is_shutting_down()
                && tokio::task::spawn_blocking(move || store.probe_writable().is_ok()).await.unwrap_or(false)
        }
    };
    let mut r = Response::new(ResponseBody::full(if ok { "ok\n" } else { "not ready\n" }));
    *r.status_mut() = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    r
}

fn auth_reason(e: &crate::auth::AuthError) -> &'static str {
    use crate::auth::AuthError as A;
    match e {
        A::SignatureMismatch => "signature_mismatch",
        A::UnknownAccessKey => "unknown_access_key",
        A::TimeSkewed => "time_skewed",
        A::Expired | A::NotYetValid => "expired",
        A::WrongRegion { .. } => "wrong_region",
        A::UnsupportedAlgorithm(_) | A::UnsupportedAuthorizationType(_) => "unsupported_algorithm",
        _ => "malformed",
    }
}

async fn process(
    state: &Arc<AppState>,
    mut req: Request<Incoming>,
) -> (&'static str, Result<Response<ResponseBody>, S3Error>) {
    if is_probe(&req) {
        let op = if req.uri().path() == "/metrics" { "Metrics" } else { "Health" };
        return (op, Ok(probe(state, &req).await));
    }
    // HTTP/2 carries the host in the URI authority; SigV4 signs it as `host`.
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(v) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let (mut parts, body) = req.into_parts();
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    let settings = AuthSettings {
        now: SystemTime::now(),
        region: &state.config.region,
        max_skew: state.config.max_skew,
        allow_v2: state.config.signature_v2,
    };
    let rp = RequestParts { method: &parts.method, raw_path, raw_query, headers: &parts.headers };
    let verified = match crate::auth::verify(&rp, &settings, state.keys.as_ref()) {
        Ok(Some(v)) => v,
        Ok(None) => {
            state.metrics.auth_failures.with_label_values(&["anonymous"]).inc();
            return (
                "Anonymous",
                Err(S3Error::new(
                    S3Code::AccessDenied,
                    "Anonymous access is not allowed; sign requests (SigV4 or SigV2)",
                )),
            );
        }
        Err(e) => {
            tracing::debug!(error = %e, "authentication failed");
            state.metrics.auth_failures.with_label_values(&[auth_reason(&e)]).inc();
            return ("Unauthenticated", Err(S3Error::from(e)));
        }
    };
    if verified.version == SignatureVersion::V2 && raw_query.contains("AWSAccessKeyId=") {
        // A SigV2 presigned URL carries its x-amz-*, Content-Type and Content-MD5 headers
        // in the query (signed as headers): they apply as headers, as in S3.
        for (name, value) in crate::auth::sigv2::headers_from_query(raw_query) {
            if !parts.headers.contains_key(&name) {
                parts.headers.append(name, value);
            }
        }
    }
    {
        use http_body::Body;
        if let Err(e) = crate::body::check_empty_payload(&verified.payload, body.is_end_stream()) {
            return ("Invalid", Err(e));
        }
    }
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
    let body = crate::body::TimedBody::new(body, state.config.body_limits);
    state.metrics.authenticated.with_label_values(&[verified.version.label()]).inc();
    let Some(principal) = state.keys.principal(&verified.access_key_id) else {
        state.metrics.auth_failures.with_label_values(&["unknown_access_key"]).inc();
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
