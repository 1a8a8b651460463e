//! Fuzz targets for every parser that reads what a client hands the server: routing and
//! query strings, SigV4 (the `Authorization` header and presigned queries), aws-chunked
//! bodies (signed, unsigned, with trailers), the XML request bodies, Range and conditional
//! headers. The WAL vocabulary (object names, timeline history files, backup sentinels and
//! `metadata.json`, compressed documents) has its targets in the pure `wal` crate
//! (`wal/tests/fuzz.rs`, and coverage-guided `cargo fuzz` targets in `wal/fuzz/`); both use
//! the engine described here, which lives in `wal::testkit::fuzz`.
//!
//! **Why not `cargo fuzz`.** cargo-fuzz builds for an explicit `--target` with
//! sanitizer-coverage `RUSTFLAGS`. Both change the build of every crate, so the RocksDB C++
//! library that `storage` links (and `s3api` depends on `storage`) would be rebuilt: about 25
//! minutes per cold build on the 2-core CI machine. So these are stable-Rust,
//! dependency-free mutation fuzzers in the style of property tests, in this one integration
//! test binary, which `cargo test --release` (scripts/test.sh) already runs in CI. The price
//! is that there is no coverage feedback: inputs are stacked mutations of a committed corpus
//! of realistic inputs (`tests/fuzz_corpus/<target>/`, see its README), so the corpus decides
//! how deep a target reaches. Every run first checks that each `ok-*` corpus entry is still
//! accepted, so a corpus that stopped reaching the deep paths fails loudly.
//!
//! **Engine.** Byte flips, random and "interesting" bytes, inserts, deletes, truncation,
//! ASCII case flips, duplicated chunks, a short piece repeated up to a thousand times,
//! splices and cross-overs between corpus entries, and tokens from a per-target dictionary;
//! 1, 2, 4 or 8 of them stacked. Input `i` of a run with seed `S` is
//! built by a generator seeded with `S + i` and nothing else, so one number rebuilds it.
//!
//! **Properties, for every input.**
//! 1. No panic: each input runs under `catch_unwind`.
//! 2. Bounded allocation: a counting `#[global_allocator]` (wrapping `System`) tracks the
//!    bytes live on the current thread, and the peak while a parser runs, above the level
//!    before it, must stay under `128 × input length + 1 MiB` ([`alloc_bound`]). Why: every
//!    parser here keeps at most a list or tree proportional to its input, plus small fixed
//!    buffers (the largest, the aws-chunked trailer section, is 16 KiB; the 1 MiB covers
//!    those). The per-byte factor comes from measuring the shapes that allocate most per
//!    input byte ([`repetitive_inputs_stay_within_the_allocation_bound`] pins them at full
//!    size): a SigV4 query of empty parameters (`&a&a…`) takes 85 bytes per byte, because
//!    the query is decoded twice into 48-byte pairs (hyper caps a request target at 64 KiB,
//!    so that is at most 5 MiB); everything else measured at most 45 (`a&a&…` for the
//!    router's query, JSON `0,0,…` and XML `<a/><a/>…` about 32; it varies with where a
//!    `Vec` last doubled). 128 leaves headroom over that, while a parser that allocates what
//!    a length field in its input says, or grows quadratically, exceeds it. The codec
//!    target has its own bound ([`codec_bound`]): decompressors need working memory set by
//!    the format, not by the input. An allocation request of 1 GiB or more, which could
//!    abort the process before any check reports it, writes the seed and the input to
//!    stderr first.
//! 3. Per target, a consistency property that fails when the parser is wrong, not only when
//!    it crashes: see each `check_*` function.
//!
//! **Running.**
//! - CI: part of `cargo test --release`; each target runs [`CI_ITERATIONS`] inputs (all
//!   targets together take well under a minute on the 2-core machine).
//! - Long run, ≥ 10 million inputs per target:
//!   `FUZZ_ITERATIONS=10000000 cargo test --release -p walstore-s3api --test fuzz -- --nocapture --test-threads=1`
//! - One target: add its test name after `--`, e.g. `-- fuzz_sigv4_header`.
//! - Replay: a failure prints `FUZZ_SEED=<n>`; `FUZZ_SEED=<n> FUZZ_ITERATIONS=1` with the
//!   target's name rebuilds exactly the failing input. The failure also prints the input in
//!   hex and writes it, with a shrunk copy, to `$CARGO_TARGET_TMPDIR/fuzz-failures/`. Once
//!   fixed, add it to the corpus as `regress-<what>`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use percent_encoding::{percent_decode, utf8_percent_encode, NON_ALPHANUMERIC};
use s3api::auth::chunked::{ChunkMode, ChunkedDecoder, ChunkedError};
use s3api::auth::sigv4::{AuthError, AuthSettings, ChunkSigner, RequestParts, SecretLookup, Verified};
use s3api::auth::verify;
use s3api::headers::{check_read_conditions, meta_from_headers, parse_range, text, write_condition, ChecksumRequest};
use s3api::router::{route, Operation, Query};
use s3api::xml::{escape_into, parse_complete, parse_create_bucket, parse_delete, CompletePart, DeleteRequest};
use s3api::S3Code;
use sha2::{Digest, Sha256};
use storage::{BucketName, ETag, ObjectInfo, ObjectKey, ObjectMeta, Timestamp};
use wal::testkit::fuzz::{alloc_bound, bounded, corpus, fuzz, fuzz_generated, meter, Outcome, Rng, Target};

#[global_allocator]
static ALLOCATOR: meter::Counting = meter::Counting;

/// Where this crate's corpora are.
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_corpus");
/// This crate, for replay lines.
const PACKAGE: &str = "walstore-s3api";
// ------------------------------------------------------------------------------------------
// Requests as text: `METHOD target` then `name: value` lines

/// A request as the server sees it after hyper has parsed it.
struct Req {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
}

/// Parses the corpus form of a request. `None` if hyper would have refused the request line
/// (bad method or request target); header lines hyper would refuse are left out.
fn parse_request(input: &[u8]) -> Option<Req> {
    let mut lines = input.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let sp = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..sp]).ok()?;
    let uri: Uri = std::str::from_utf8(&first[sp + 1..]).ok()?.parse().ok()?;
    Some(Req {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: header_lines(lines),
    })
}

fn header_lines<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let value = trim_ows(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

// ------------------------------------------------------------------------------------------
// Target: router

/// The method that reaches each operation. An exhaustive `match`, so a new operation must
/// say how it is reached.
fn method_of(op: Operation) -> Method {
    use Operation::*;
    match op {
        ListBuckets
        | GetBucketLocation
        | GetBucketVersioning
        | ListObjects
        | ListObjectsV2
        | ListObjectVersions
        | ListMultipartUploads
        | GetObject
        | ListParts
        | GetObjectLockConfiguration
        | GetObjectRetention
        | GetObjectLegalHold => Method::GET,
        HeadBucket | HeadObject => Method::HEAD,
        CreateBucket
        | PutObject
        | CopyObject
        | UploadPart
        | PutBucketVersioning
        | PutObjectLockConfiguration
        | PutObjectRetention
        | PutObjectLegalHold => Method::PUT,
        DeleteBucket | DeleteObject | AbortMultipartUpload => Method::DELETE,
        DeleteObjects | CreateMultipartUpload | CompleteMultipartUpload => Method::POST,
    }
}

/// Routing: refusals are 4xx or 501; an operation is reached only by its method; the query
/// parameters that select an operation agree with it (so nothing falls through into an
/// operation that changes data); bucket and key are exactly the percent-decoded path
/// segments; a parsed query re-encodes and re-parses to itself.
fn check_router(input: &[u8]) -> Outcome {
    let Some(req) = parse_request(input) else { return Ok(false) };
    let routed = bounded("Query::parse and route", input.len(), || {
        Query::parse(&req.query).and_then(|q| route(&req.method, &req.path, &q, &req.headers).map(|r| (q, r)))
    })?;
    let (query, r) = match routed {
        Ok(v) => v,
        Err(e) if e.status().is_client_error() || e.status() == StatusCode::NOT_IMPLEMENTED => return Ok(false),
        Err(e) => {
            return Err(format!(
                "routing refused with {} {}: a refusal must be 4xx or 501",
                e.status(),
                e.code.as_str()
            ))
        }
    };
    use Operation::*;
    let op = r.op;
    if method_of(op) != req.method {
        return Err(format!("{} was routed to {op:?}, which only {} may reach", req.method, method_of(op)));
    }
    let copy = req.headers.contains_key("x-amz-copy-source");
    let selects = match op {
        DeleteObjects => query.has("delete"),
        CreateMultipartUpload => query.has("uploads"),
        UploadPart => (query.has("partNumber") || query.has("uploadId")) && !copy,
        CompleteMultipartUpload | AbortMultipartUpload | ListParts => query.has("uploadId"),
        CopyObject => copy && !query.has("partNumber") && !query.has("uploadId"),
        PutObject => {
            !copy
                && !query.has("partNumber")
                && !query.has("uploadId")
                && !query.has("retention")
                && !query.has("legal-hold")
        }
        DeleteObject => !query.has("uploadId"),
        GetObject => !query.has("uploadId") && !query.has("retention") && !query.has("legal-hold"),
        PutBucketVersioning => query.has("versioning"),
        GetObjectLockConfiguration | PutObjectLockConfiguration => query.has("object-lock"),
        GetObjectRetention | PutObjectRetention => query.has("retention"),
        GetObjectLegalHold | PutObjectLegalHold => query.has("legal-hold"),
        ListObjectsV2 => query.get("list-type") == Some("2"),
        _ => true,
    };
    if !selects {
        return Err(format!("routed to {op:?}, but the query {:?} does not select it", query.pairs()));
    }
    let object_op = matches!(
        op,
        PutObject
            | CopyObject
            | GetObject
            | HeadObject
            | DeleteObject
            | CreateMultipartUpload
            | UploadPart
            | CompleteMultipartUpload
            | AbortMultipartUpload
            | ListParts
            | GetObjectRetention
            | PutObjectRetention
            | GetObjectLegalHold
            | PutObjectLegalHold
    );
    let path = req.path.strip_prefix('/').unwrap_or(&req.path);
    let (bucket_raw, key_raw) = path.split_once('/').map_or((path, ""), |(b, k)| (b, k));
    let decode = |s: &str| percent_decode(s.as_bytes()).decode_utf8().map(|c| c.into_owned()).ok();
    let want_bucket = (!bucket_raw.is_empty()).then(|| decode(bucket_raw)).flatten();
    let want_key = (!key_raw.is_empty()).then(|| decode(key_raw)).flatten();
    let got_bucket = r.bucket.as_ref().map(BucketName::to_string);
    let got_key = r.key.as_ref().map(ObjectKey::to_string);
    if (op == ListBuckets) != got_bucket.is_none() || object_op != got_key.is_some() {
        return Err(format!("{op:?} routed with bucket {got_bucket:?} and key {got_key:?}"));
    }
    if (got_bucket.is_some() && got_bucket != want_bucket) || got_key != want_key {
        return Err(format!(
            "path {:?} routed to bucket {got_bucket:?} key {got_key:?}, not the decoded segments {want_bucket:?} {want_key:?}",
            req.path
        ));
    }
    let reencoded: Vec<String> = query
        .pairs()
        .iter()
        .map(|(k, v)| {
            format!("{}={}", utf8_percent_encode(k, NON_ALPHANUMERIC), utf8_percent_encode(v, NON_ALPHANUMERIC))
        })
        .collect();
    match Query::parse(&reencoded.join("&")) {
        Ok(again) if again == query => {}
        other => return Err(format!("query {:?} re-encoded as {reencoded:?} parses to {other:?}", query.pairs())),
    }
    Ok(true)
}

const ROUTER_TOKENS: &[&[u8]] = &[
    b"?",
    b"&",
    b"=",
    b"uploads",
    b"uploadId=",
    b"partNumber=",
    b"delete",
    b"list-type=2",
    b"versions",
    b"versioning",
    b"location",
    b"acl",
    b"tagging",
    b"select",
    b"GET ",
    b"PUT ",
    b"POST ",
    b"DELETE ",
    b"HEAD ",
    b"x-amz-copy-source: ",
    b"//",
    b"/../",
    b"/./",
    b"/bkt/",
];

#[test]
fn fuzz_router() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "router",
        dict: ROUTER_TOKENS,
        max_len: 4096,
        check: check_router,
    });
}

// ------------------------------------------------------------------------------------------
// Targets: SigV4 header and presigned forms

/// When the corpus was signed: 2026-11-25T17:12:44Z.
const SIGNED_AT: u64 = 1_795_626_764;
const REGION: &str = "de01";
const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

struct Keys;

impl SecretLookup for Keys {
    fn secret_key(&self, access_key_id: &str) -> Option<String> {
        (access_key_id == AKID).then(|| SECRET.to_owned())
    }
}

/// [`verify_request`] within the allocation bound: the verified request, or `None` when
/// it carries no signature or is refused with a short message (client input clipped).
fn verify_clipped(what: &str, input: &[u8], req: &Req) -> Result<Option<Verified>, String> {
    match bounded(what, input.len(), || verify_request(req))? {
        Ok(v) => Ok(v),
        Err(e) => {
            let msg = e.to_string();
            if msg.chars().count() > 256 {
                return Err(format!("a {}-character error message: client input must be clipped: {msg}", msg.len()));
            }
            Ok(None)
        }
    }
}

fn verify_request(req: &Req) -> Result<Option<Verified>, AuthError> {
    let parts = RequestParts { method: &req.method, raw_path: &req.path, raw_query: &req.query, headers: &req.headers };
    let settings = AuthSettings {
        now: UNIX_EPOCH + Duration::from_secs(SIGNED_AT),
        region: REGION,
        max_skew: Duration::from_secs(15 * 60),
        allow_v2: true,
    };
    verify(&parts, &settings, &Keys)
}

/// What a verified request means to the server: who sent it, how its body is framed and
/// checked, which operation on which bucket and key, and the values of each query parameter
/// in order (grouped by name: the canonical query sorts by name, handlers read by name).
fn meaning(req: &Req, v: &Verified) -> Result<String, S3Code> {
    let q = Query::parse(&req.query).map_err(|e| e.code)?;
    let r = route(&req.method, &req.path, &q, &req.headers).map_err(|e| e.code)?;
    let mut params: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, val) in q.pairs().iter().filter(|(k, _)| k != "X-Amz-Signature") {
        params.entry(k).or_default().push(val);
    }
    Ok(format!(
        "{} {:?} {:?} {:?} {:?} {:?} {params:?}",
        v.access_key_id, v.payload, v.chunk_signer, r.op, r.bucket, r.key
    ))
}

/// Signature → meaning, of every `ok-*` request seed.
fn signed_meanings() -> &'static HashMap<String, Result<String, S3Code>> {
    static SEEDS: OnceLock<HashMap<String, Result<String, S3Code>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut map = HashMap::new();
        for target in ["sigv4_header", "sigv4_presigned"] {
            for (name, data) in corpus(CORPUS, target).into_iter().filter(|(n, _)| n.starts_with("ok-")) {
                let req = parse_request(&data).unwrap_or_else(|| panic!("{target}/{name} is not a request"));
                let Ok(Some(v)) = verify_request(&req) else { continue }; // the run reports it
                let text = String::from_utf8_lossy(&data);
                let sig = text
                    .split(['=', ' ', '&', '\n', ','])
                    .skip_while(|w| !w.ends_with("Signature"))
                    .nth(1)
                    .unwrap_or_else(|| panic!("{target}/{name}: no signature"));
                map.insert(sig.to_owned(), meaning(&req, &v));
            }
        }
        map
    })
}

/// SigV4: error messages stay short whatever the input (they quote client input clipped);
/// and a mutated request that still verifies carries the signature of a corpus request and
/// means exactly what that request meant (same key, payload mode, operation, bucket, key
/// and query values), unless it is now refused. Anything else is a request the signature
/// does not cover.
fn check_sigv4(input: &[u8]) -> Outcome {
    let Some(req) = parse_request(input) else { return Ok(false) };
    let Some(v) = verify_clipped("sigv4::verify", input, &req)? else { return Ok(false) };
    let decoded: Vec<u8> = percent_decode(input).collect();
    let haystacks = [String::from_utf8_lossy(input), String::from_utf8_lossy(&decoded)];
    let seeds: Vec<&Result<String, S3Code>> = signed_meanings()
        .iter()
        .filter(|(sig, _)| haystacks.iter().any(|h| h.contains(sig.as_str())))
        .map(|(_, m)| m)
        .collect();
    if seeds.is_empty() {
        return Err(format!("verified as {:?}, but carries no corpus signature", v.access_key_id));
    }
    match meaning(&req, &v) {
        Err(_) => Ok(true),
        Ok(m) if seeds.iter().any(|s| s.as_ref() == Ok(&m)) => Ok(true),
        Ok(m) => Err(format!("a mutated request still verifies but now means {m}; its corpus request meant {seeds:?}")),
    }
}

const SIGV4_TOKENS: &[&[u8]] = &[
    b"AWS4-HMAC-SHA256",
    b"AWS4-HMAC-SHA256 ",
    b"AWS4-ECDSA-P256-SHA256",
    b"AWS ",
    b"Bearer ",
    b"Credential=",
    b"SignedHeaders=",
    b"Signature=",
    b", ",
    b"/aws4_request",
    b"/s3/",
    b"us-east-1",
    b"de01",
    b"20261125",
    b"20261125T171244Z",
    b"20261125T172744Z",
    b"20261125T165744Z",
    b"authorization: ",
    b"x-amz-date: ",
    b"date: Wed, 25 Nov 2026 17:12:44 GMT",
    b"x-amz-content-sha256: ",
    b"UNSIGNED-PAYLOAD",
    b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    b"STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    b"host;",
    b";x-amz-date",
    b"x-amz-meta-a: b",
    b"X-Amz-Algorithm=",
    b"X-Amz-Credential=",
    b"X-Amz-Date=",
    b"X-Amz-Expires=",
    b"X-Amz-SignedHeaders=",
    b"X-Amz-Signature=",
    b"604800",
    b"604801",
    b"AWSAccessKeyId=",
    b"Expires=",
    b"Expires=1795630364",
    b"Signature=",
    b"AWS AKIDEXAMPLE:",
    b"?acl",
    b"&uploadId=",
    b"x-amz-date: Wed, 25 Nov 2026 17:12:44 GMT",
    b"date: Wed, 25 Nov 2026 17:12:44 +0000",
    b"content-md5: ",
    b"content-type: ",
    b"AKIDEXAMPLE",
    b"%2F",
];

#[test]
fn fuzz_sigv4_header() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "sigv4_header",
        dict: SIGV4_TOKENS,
        max_len: 8192,
        check: check_sigv4,
    });
}

/// Signature → (access key, method, canonical resource) of every `ok-*` SigV2 seed: what a
/// SigV2 signature covers of a request's meaning. (SigV2 does not sign the body, nor query
/// parameters other than S3's sub-resources: a changed `prefix` or `max-keys` still
/// verifies, in S3 as here. That is the scheme's weakness, not a finding.)
fn v2_meanings() -> &'static HashMap<String, String> {
    static SEEDS: OnceLock<HashMap<String, String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut map = HashMap::new();
        for (name, data) in corpus(CORPUS, "sigv2").into_iter().filter(|(n, _)| n.starts_with("ok-")) {
            let req = parse_request(&data).unwrap_or_else(|| panic!("sigv2/{name} is not a request"));
            let Ok(Some(v)) = verify_request(&req) else { continue }; // the run reports it
            let text = String::from_utf8_lossy(&data);
            let sig = match text.split_once(&format!("AWS {AKID}:")) {
                Some((_, rest)) => rest.split('\n').next().unwrap_or(""),
                None => text.split("Signature=").nth(1).and_then(|r| r.split(['&', '\n', ' ']).next()).unwrap_or(""),
            };
            assert!(!sig.is_empty(), "sigv2/{name}: no signature");
            // Decoded: `%3D` and `%3d` are the same signature.
            let sig = String::from_utf8_lossy(&percent_decode(sig.as_bytes()).collect::<Vec<u8>>()).into_owned();
            map.insert(sig, meaning_v2(&req, &v));
        }
        map
    })
}

fn meaning_v2(req: &Req, v: &Verified) -> String {
    format!("{} {} {}", v.access_key_id, req.method, s3api::auth::sigv2::canonical_resource(&req.path, &req.query))
}

/// SigV2, header and presigned forms: error messages stay short, and a mutated request that
/// still verifies carries the signature of a corpus request and has that request's key,
/// method, path and sub-resources (all that SigV2 signs of its meaning).
fn check_sigv2(input: &[u8]) -> Outcome {
    let Some(req) = parse_request(input) else { return Ok(false) };
    let Some(v) = verify_clipped("sigv2 verify", input, &req)? else { return Ok(false) };
    if v.version != s3api::auth::SignatureVersion::V2 {
        return Ok(false); // mutated into a SigV4 request: the SigV4 targets cover those
    }
    let decoded: Vec<u8> = percent_decode(input).collect();
    let haystacks = [String::from_utf8_lossy(input), String::from_utf8_lossy(&decoded)];
    let seeds: Vec<&String> = v2_meanings()
        .iter()
        .filter(|(sig, _)| haystacks.iter().any(|h| h.contains(sig.as_str())))
        .map(|(_, m)| m)
        .collect();
    if seeds.is_empty() {
        return Err(format!("verified as {:?} with SigV2, but carries no corpus signature", v.access_key_id));
    }
    let m = meaning_v2(&req, &v);
    if seeds.iter().any(|s| **s == m) {
        Ok(true)
    } else {
        Err(format!("a mutated SigV2 request still verifies but now means {m}; its corpus request meant {seeds:?}"))
    }
}

#[test]
fn fuzz_sigv2() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "sigv2",
        dict: SIGV4_TOKENS,
        max_len: 8192,
        check: check_sigv2,
    });
}

#[test]
fn fuzz_sigv4_presigned() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "sigv4_presigned",
        dict: SIGV4_TOKENS,
        max_len: 8192,
        check: check_sigv4,
    });
}

// ------------------------------------------------------------------------------------------
// Targets: aws-chunked bodies

/// Chunk signatures use the key, date and scope of the AWS documentation examples.
const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DOC_DATE: &str = "20130524T000000Z";
const DOC_SCOPE: &str = "20130524/us-east-1/s3/aws4_request";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The SigV4 signing key of the documentation examples, derived here independently.
fn doc_key() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut k = hmac(format!("AWS4{DOC_SECRET}").as_bytes(), &DOC_DATE.as_bytes()[..8]);
        for part in ["us-east-1", "s3", "aws4_request"] {
            k = hmac(&k, part.as_bytes());
        }
        k
    })
}

/// The mode line that starts a chunked input: `signed <seed>`, `signed-trailer <seed>`,
/// `unsigned-trailer` or anything else (unsigned, no trailer).
struct Mode {
    seed: Option<String>,
    trailer: bool,
}

fn parse_mode(line: &[u8]) -> Mode {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ');
    let kind = words.next().unwrap_or("");
    let seed = words.next().unwrap_or("").to_owned();
    match kind {
        "signed" => Mode { seed: Some(seed), trailer: false },
        "signed-trailer" => Mode { seed: Some(seed), trailer: true },
        "unsigned-trailer" => Mode { seed: None, trailer: true },
        _ => Mode { seed: None, trailer: false },
    }
}

fn decoder(mode: &Mode) -> ChunkedDecoder {
    let chunk_mode = match &mode.seed {
        Some(seed) => ChunkMode::Signed(ChunkSigner::new(doc_key(), DOC_DATE.into(), DOC_SCOPE.into(), seed.clone())),
        None => ChunkMode::Unsigned,
    };
    ChunkedDecoder::new(chunk_mode, mode.trailer)
}

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    payload: Vec<u8>,
    trailers: Vec<(String, String)>,
}

/// Decodes `body` fed in pieces cut at `cuts` (ascending), then `finish`.
fn decode_body(mode: &Mode, body: &[u8], cuts: &[usize]) -> Result<Decoded, ChunkedError> {
    let mut dec = decoder(mode);
    let mut out = BytesMut::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        dec.decode(&body[start..cut], &mut out)?;
        start = cut;
    }
    dec.finish()?;
    assert_eq!(dec.decoded_len(), out.len() as u64, "decoded_len counts the payload bytes");
    assert!(dec.is_done(), "finish returned Ok, so the body is done");
    Ok(Decoded { payload: out.to_vec(), trailers: dec.trailers().to_vec() })
}

fn split_mode(input: &[u8]) -> (Mode, &[u8]) {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) => (parse_mode(&input[..i]), &input[i + 1..]),
        None => (parse_mode(input), &[]),
    }
}

/// Random ascending cut points in `0..=len`, derived from the input so a replay cuts alike.
fn cuts_for(input: &[u8], len: usize) -> Vec<usize> {
    let mut rng = Rng::new(u64::from_le_bytes(Sha256::digest(input)[..8].try_into().expect("8 bytes")));
    let mut cuts: Vec<usize> = (0..rng.small(16)).map(|_| rng.below(len + 1)).collect();
    if rng.chance(8) {
        cuts = (1..len.min(4096)).collect(); // one byte at a time
    }
    cuts.sort_unstable();
    cuts
}

/// Decoded form of each signed corpus body, by seed signature.
fn signed_bodies() -> &'static HashMap<String, Decoded> {
    static BODIES: OnceLock<HashMap<String, Decoded>> = OnceLock::new();
    BODIES.get_or_init(|| {
        let mut map = HashMap::new();
        for (_, data) in corpus(CORPUS, "chunked") {
            let (mode, body) = split_mode(&data);
            if let (Some(seed), Ok(d)) = (mode.seed.clone(), decode_body(&mode, body, &[])) {
                let previous = map.insert(seed, d);
                assert!(previous.is_none(), "two signed chunked seeds share a seed signature");
            }
        }
        map
    })
}

/// aws-chunked: the result does not depend on how the body is split into reads (the
/// decoder is documented byte-at-a-time safe); a signed body that still decodes after
/// mutation decodes to exactly its corpus body's payload and trailers (a seed signature
/// from no corpus body must not decode at all).
fn check_chunked(input: &[u8]) -> Outcome {
    let (mode, body) = split_mode(input);
    let whole = bounded("aws-chunked decode", input.len(), || decode_body(&mode, body, &[]))?;
    let cuts = cuts_for(input, body.len());
    let pieces = bounded("aws-chunked decode in pieces", input.len(), || decode_body(&mode, body, &cuts))?;
    if whole != pieces {
        return Err(format!("decoding depends on the split: whole {whole:?}, cut at {cuts:?} {pieces:?}"));
    }
    let Ok(decoded) = whole else { return Ok(false) };
    if let Some(seed) = &mode.seed {
        match signed_bodies().get(seed) {
            Some(d) if *d == decoded => {}
            Some(d) => return Err(format!("a mutated signed body decodes to {decoded:?}, its corpus body to {d:?}")),
            None => return Err(format!("a signed body with unknown seed signature {seed:?} decoded: {decoded:?}")),
        }
    }
    Ok(true)
}

const CHUNKED_TOKENS: &[&[u8]] = &[
    b";chunk-signature=",
    b"chunk-signature",
    b"\r\n",
    b"\r\n\r\n",
    b"0\r\n",
    b"0;chunk-signature=",
    b"x-amz-trailer-signature:",
    b"x-amz-checksum-crc32:",
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n",
    b"X-Amz-Checksum-Crc32",
    b":",
    b"ffffffffffffffff",
    b"10000000000000000",
    b"FFFFFFFF",
    b"10000",
    b"a",
    b"signed ",
    b"signed-trailer ",
    b"unsigned\n",
    b"unsigned-trailer\n",
];

#[test]
fn fuzz_chunked() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "chunked",
        dict: CHUNKED_TOKENS,
        max_len: 80 * 1024,
        check: check_chunked,
    });
}

/// Which part of an encoded body a byte belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Sizes, extensions, CRLFs, the final empty line.
    Framing,
    /// Chunk payload bytes.
    Data,
    /// Hex of a chunk or trailer signature.
    Signature,
    /// A trailer line other than the signature.
    Trailer,
}

struct Encoded {
    body: Vec<u8>,
    parts: Vec<(Range<usize>, Part)>,
}

impl Encoded {
    fn push(&mut self, bytes: &[u8], part: Part) {
        let start = self.body.len();
        self.body.extend_from_slice(bytes);
        if part != Part::Framing {
            self.parts.push((start..self.body.len(), part));
        }
    }

    fn part_at(&self, i: usize) -> Part {
        self.parts.iter().find(|(r, _)| r.contains(&i)).map_or(Part::Framing, |(_, p)| *p)
    }
}

/// Reference aws-chunked encoder, independent of the decoder: chunk and trailer signatures
/// computed here with `hmac`/`sha2` from the AWS "sigv4-streaming" definitions.
fn encode_chunked(
    seed: Option<&str>,
    payload: &[u8],
    sizes: &mut dyn FnMut() -> usize,
    trailer_mode: bool,
    trailers: &[(String, String)],
    upper_hex: bool,
    final_crlf: bool,
) -> Encoded {
    let key = doc_key();
    let mut e = Encoded { body: Vec::new(), parts: Vec::new() };
    let mut previous = seed.map(str::to_owned);
    let mut rest = payload;
    loop {
        let n = if rest.is_empty() { 0 } else { sizes().clamp(1, rest.len()) };
        let (chunk, tail) = rest.split_at(n);
        e.push((if upper_hex { format!("{n:X}") } else { format!("{n:x}") }).as_bytes(), Part::Framing);
        if let Some(prev) = &mut previous {
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{DOC_DATE}\n{DOC_SCOPE}\n{prev}\n{EMPTY_SHA256}\n{}",
                hex::encode(Sha256::digest(chunk))
            );
            *prev = hex::encode(hmac(&key, sts.as_bytes()));
            e.push(b";chunk-signature=", Part::Framing);
            e.push(prev.as_bytes(), Part::Signature);
        }
        e.push(b"\r\n", Part::Framing);
        if n == 0 {
            break;
        }
        e.push(chunk, Part::Data);
        e.push(b"\r\n", Part::Framing);
        rest = tail;
    }
    for (name, value) in trailers {
        e.push(format!("{name}:{value}").as_bytes(), Part::Trailer);
        e.push(b"\r\n", Part::Framing);
    }
    if let Some(prev) = &previous {
        // The signed-trailer mode signs the trailer section even when it is empty.
        if trailer_mode {
            let mut sorted: Vec<&(String, String)> = trailers.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let canonical: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
            let sts = format!(
                "AWS4-HMAC-SHA256-TRAILER\n{DOC_DATE}\n{DOC_SCOPE}\n{prev}\n{}",
                hex::encode(Sha256::digest(canonical.as_bytes()))
            );
            e.push(b"x-amz-trailer-signature:", Part::Framing);
            e.push(hex::encode(hmac(&key, sts.as_bytes())).as_bytes(), Part::Signature);
            e.push(b"\r\n", Part::Framing);
        }
    }
    if final_crlf {
        e.push(b"\r\n", Part::Framing);
    }
    e
}

/// Round trip: a body made by the reference encoder (random payload, chunk sizes, hex case,
/// mode, trailers, final CRLF or not) decodes, split at random points, to exactly the
/// payload and trailers. Then single-byte changes: in a signed body, any change to payload
/// or signature bytes is rejected, and any other change is rejected or decodes to the same
/// payload and trailers (e.g. the case of a hex size); in an unsigned body a payload byte
/// change comes out verbatim (unsigned framing is not authenticated, so a changed size may
/// frame another valid body: nothing to check there beyond no panic and bounded memory).
fn chunked_roundtrip_case(rng: &mut Rng) -> (Vec<u8>, Outcome) {
    let signed = rng.chance(2);
    let trailer = rng.chance(2);
    let seed = hex::encode(rng.bytes(32));
    let len = rng.small(8 * 1024);
    let payload = if rng.chance(2) { rng.bytes(len) } else { vec![b'a' + rng.below(26) as u8; len] };
    let names = ["x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme", "x-amz-meta-a"];
    let trailers: Vec<(String, String)> = if trailer {
        let start = rng.below(names.len());
        (0..rng.below(3))
            .map(|i| {
                let value: String = (0..1 + rng.below(12)).map(|_| char::from(b'A' + rng.below(26) as u8)).collect();
                (names[(start + i) % names.len()].to_owned(), value + "==")
            })
            .collect()
    } else {
        Vec::new()
    };
    // About `chunks` chunks of random sizes around `len / chunks` (every chunk costs two
    // HMACs per decode, so the count, not the length, sets the price of a case).
    let chunks = 1 + rng.small(16);
    let typical = (len / chunks).max(1);
    let upper_hex = rng.chance(2);
    let final_crlf = !rng.chance(4);
    let mut size_rng = Rng::new(rng.next());
    let mut sizes = || typical / 2 + 1 + size_rng.below(typical);
    let seed_opt = signed.then_some(seed.as_str());
    let enc = encode_chunked(seed_opt, &payload, &mut sizes, trailer, &trailers, upper_hex, final_crlf);
    let mode_line = match (signed, trailer) {
        (true, false) => format!("signed {seed}\n"),
        (true, true) => format!("signed-trailer {seed}\n"),
        (false, true) => "unsigned-trailer\n".to_owned(),
        (false, false) => "unsigned\n".to_owned(),
    };
    let as_input = |body: &[u8]| [mode_line.as_bytes(), body].concat();
    let mode = Mode { seed: signed.then(|| seed.clone()), trailer };
    let expected = Decoded { payload: payload.clone(), trailers: trailers.clone() };

    let cuts = {
        let mut c: Vec<usize> = (0..rng.small(8)).map(|_| rng.below(enc.body.len() + 1)).collect();
        c.sort_unstable();
        c
    };
    match bounded("aws-chunked decode", enc.body.len(), || decode_body(&mode, &enc.body, &cuts)) {
        Err(e) => return (as_input(&enc.body), Err(e)),
        Ok(Ok(d)) if d == expected => {}
        Ok(got) => {
            return (
                as_input(&enc.body),
                Err(format!("the encoder's body decoded (cut at {cuts:?}) to {got:?}, not {expected:?}")),
            )
        }
    }

    for _ in 0..3 {
        let i = rng.below(enc.body.len());
        let mut body = enc.body.clone();
        body[i] ^= 1 + rng.below(255) as u8;
        let part = enc.part_at(i);
        let got = match bounded("aws-chunked decode", body.len(), || decode_body(&mode, &body, &[])) {
            Ok(got) => got,
            Err(e) => return (as_input(&body), Err(e)),
        };
        let ok = match (&got, signed, part) {
            (Err(_), _, _) => true,
            (Ok(_), true, Part::Data | Part::Signature) => false,
            (Ok(d), true, Part::Framing | Part::Trailer) => *d == expected,
            (Ok(d), false, Part::Data) => d.payload == body_payload(&enc, &body) && d.trailers == expected.trailers,
            // Unsigned framing is not authenticated: a changed size can frame another
            // valid body (e.g. with 1-byte chunks, `1` → `D` takes in the next framing).
            (Ok(_), false, Part::Framing | Part::Trailer | Part::Signature) => true,
        };
        if !ok {
            return (
                as_input(&body),
                Err(format!(
                    "byte {i} ({part:?}) changed from {:#04x} to {:#04x}: decoded to {got:?}",
                    enc.body[i], body[i]
                )),
            );
        }
    }
    (as_input(&enc.body), Ok(true))
}

/// The payload a body carries: its `Data` bytes in order.
fn body_payload(enc: &Encoded, body: &[u8]) -> Vec<u8> {
    enc.parts.iter().filter(|(_, p)| *p == Part::Data).flat_map(|(r, _)| body[r.clone()].iter().copied()).collect()
}

#[test]
fn fuzz_chunked_roundtrip() {
    fuzz_generated("chunked_roundtrip", PACKAGE, chunked_roundtrip_case);
}

// ------------------------------------------------------------------------------------------
// Target: XML request bodies

fn escaped(text: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, text);
    out
}

fn render_complete(parts: &[CompletePart]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for p in parts {
        s +=
            &format!("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>", p.number, escaped(&format!("\"{}\"", p.etag)));
        for (alg, value) in &p.checksums {
            s += &format!("<Checksum{alg}>{}</Checksum{alg}>", escaped(value));
        }
        s += "</Part>";
    }
    s + "</CompleteMultipartUpload>"
}

fn render_delete(d: &DeleteRequest) -> String {
    let mut s = format!("<Delete><Quiet>{}</Quiet>", d.quiet);
    for o in &d.objects {
        s += &format!("<Object><Key>{}</Key>", escaped(&o.key));
        if let Some(v) = &o.version_id {
            s += &format!("<VersionId>{}</VersionId>", escaped(v));
        }
        s += "</Object>";
    }
    s + "</Delete>"
}

/// XML bodies: refusals are MalformedXML; what a parser accepts, written back with the
/// crate's own escaping, parses to the same parts, objects (as many, in order) and
/// location. That also checks that escaping and unescaping agree on every text the parser
/// can produce, with one exception: NUL. XML has no form for it; the parser takes a raw
/// one (clients that build XML with ElementTree, like boto3, write control characters
/// raw) while `&#x0;`, what the writer makes of it, is refused by quick-xml. So documents
/// whose parsed text holds a NUL are not written back.
fn check_xml(input: &[u8]) -> Outcome {
    let (complete, delete, create) = bounded("XML body parsers", input.len(), || {
        (parse_complete(input), parse_delete(input), parse_create_bucket(input))
    })?;
    for code in [complete.as_ref().err(), delete.as_ref().err(), create.as_ref().err()].into_iter().flatten() {
        if code.code != S3Code::MalformedXML {
            return Err(format!("refused with {} ({}), not MalformedXML", code.code.as_str(), code.message));
        }
    }
    if input.contains(&0) {
        return Ok(complete.is_ok() || delete.is_ok() || create.is_ok());
    }
    if let Ok(parts) = &complete {
        let doc = render_complete(parts);
        match parse_complete(doc.as_bytes()) {
            Ok(again) if again == *parts => {}
            other => {
                return Err(format!("{} parts {parts:?}, written back as {doc:?}, parse to {other:?}", parts.len()))
            }
        }
    }
    if let Ok(d) = &delete {
        let doc = render_delete(d);
        match parse_delete(doc.as_bytes()) {
            Ok(again) if again == *d => {}
            other => {
                return Err(format!(
                    "{d:?} with {} objects, written back as {doc:?}, parses to {other:?}",
                    d.objects.len()
                ))
            }
        }
    }
    if let Ok(Some(location)) = &create {
        let doc = format!(
            "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            escaped(location)
        );
        match parse_create_bucket(doc.as_bytes()) {
            Ok(Some(again)) if again == *location => {}
            other => return Err(format!("location {location:?}, written back as {doc:?}, parses to {other:?}")),
        }
    }
    Ok(complete.is_ok() || delete.is_ok() || create.is_ok())
}

const XML_TOKENS: &[&[u8]] = &[
    b"<Part>",
    b"</Part>",
    b"<PartNumber>",
    b"</PartNumber>",
    b"<ETag>",
    b"</ETag>",
    b"<Object>",
    b"</Object>",
    b"<Key>",
    b"</Key>",
    b"<VersionId>",
    b"</VersionId>",
    b"<Quiet>true</Quiet>",
    b"<ChecksumCRC32>",
    b"</ChecksumCRC32>",
    b"<LocationConstraint>",
    b"<![CDATA[",
    b"]]>",
    b"&amp;",
    b"&#34;",
    b"&#x1;",
    b"&#xD;",
    b"&#xFFFE;",
    b"&#0;",
    b"&#1114112;",
    b"&unknown;",
    b"<!--",
    b"-->",
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<!DOCTYPE a [<!ENTITY e \"x\">]>",
    b" xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"",
    b"s3:",
    b"<a>",
    b"</a>",
    b"/>",
    b"<",
    b">",
    b"'",
    b"10000",
];

#[test]
fn fuzz_xml() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "xml",
        dict: XML_TOKENS,
        max_len: 16 * 1024,
        check: check_xml,
    });
}

// ------------------------------------------------------------------------------------------
// Target: Range and conditional headers

/// The object the conditional headers are evaluated against.
fn sample_object() -> ObjectInfo {
    ObjectInfo {
        bucket: BucketName::parse("bkt").expect("bucket"),
        key: ObjectKey::parse("k").expect("key"),
        size: 1024,
        etag: ETag::from_client("9b2cf535f27731c974343645a3985328"),
        last_modified: Timestamp::from_millis(1_795_626_764_123),
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

/// Object sizes a Range is checked against.
const RANGE_SIZES: [u64; 9] = [0, 1, 2, 99, 100, 1024, 1025, 16 << 20, u64::MAX];

/// Headers: a Range that parses is a non-empty range inside the object; refusals carry the
/// codes S3 uses (InvalidRange, PreconditionFailed, NotModified only without the
/// copy-source prefix, InvalidArgument for non-text values, ...); the checksum request
/// lists each algorithm once, including the announced trailer.
fn check_headers(input: &[u8]) -> Outcome {
    let headers = header_lines(input.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)));
    let info = sample_object();
    let results = bounded("header parsers", input.len(), || {
        let ranges: Vec<_> = RANGE_SIZES
            .iter()
            .map(|&size| (size, text(&headers, "range").and_then(|v| parse_range(v, size))))
            .collect();
        let read = check_read_conditions(&headers, &info, "");
        let copy = check_read_conditions(&headers, &info, "x-amz-copy-source-");
        let write = write_condition(&headers);
        let checksums = ChecksumRequest::from_headers(&headers);
        let meta = meta_from_headers(&headers);
        (ranges, read, copy, write, checksums, meta)
    })?;
    let (ranges, read, copy, write, checksums, meta) = results;
    let mut accepted = false;
    for (size, r) in ranges {
        match r {
            Ok(Some(r)) if r.start < r.end && r.end <= size => accepted = true,
            Ok(Some(r)) => {
                return Err(format!("Range {:?} gave {r:?} for an object of {size} bytes", headers.get("range")))
            }
            Ok(None) => {}
            Err(e) if matches!(e.code, S3Code::InvalidRange | S3Code::InvalidArgument) => {}
            Err(e) => return Err(format!("Range refused with {}", e.code.as_str())),
        }
    }
    use S3Code::*;
    for (prefix, r, allowed) in [
        ("", &read, &[PreconditionFailed, NotModified, InvalidArgument][..]),
        ("x-amz-copy-source-", &copy, &[PreconditionFailed, InvalidArgument][..]),
    ] {
        if let Err(e) = r {
            if !allowed.contains(&e.code) {
                return Err(format!("read conditions with prefix {prefix:?} refused with {}", e.code.as_str()));
            }
        }
    }
    if let Err(e) = &write {
        if !matches!(e.code, NotImplemented | InvalidArgument) {
            return Err(format!("write condition refused with {}", e.code.as_str()));
        }
    }
    match &checksums {
        Ok(c) => {
            let algs = c.algorithms();
            if (1..algs.len()).any(|i| algs[..i].contains(&algs[i])) || c.trailer.is_some_and(|t| !algs.contains(&t)) {
                return Err(format!("checksum request {c:?} computes {algs:?}"));
            }
        }
        Err(e) if matches!(e.code, InvalidRequest | InvalidDigest | InvalidArgument) => {}
        Err(e) => return Err(format!("checksum headers refused with {}", e.code.as_str())),
    }
    match &meta {
        Ok(m) => {
            let user: usize = m.user.iter().map(|(k, v)| k.len() + v.len()).sum();
            let chunked = m.headers.iter().any(|(k, v)| {
                k == "content-encoding" && v.split(',').any(|c| c.trim().eq_ignore_ascii_case("aws-chunked"))
            });
            if user > 2048 || chunked {
                return Err(format!(
                    "metadata accepted with {user} bytes of user metadata, or aws-chunked stored: {m:?}"
                ));
            }
        }
        Err(e) if e.code == InvalidArgument => {}
        Err(e) => return Err(format!("metadata refused with {}", e.code.as_str())),
    }
    Ok(accepted || read.is_ok() || checksums.is_ok())
}

const HEADER_TOKENS: &[&[u8]] = &[
    b"range: bytes=",
    b"bytes=",
    b"-",
    b",",
    b"if-match: ",
    b"if-none-match: ",
    b"if-modified-since: ",
    b"if-unmodified-since: ",
    b"x-amz-copy-source-if-match: ",
    b"x-amz-copy-source-if-none-match: ",
    b"*",
    b"W/",
    b"\"9b2cf535f27731c974343645a3985328\"",
    b"Wed, 25 Nov 2026 17:12:44 GMT",
    b"Sun Nov  6 08:49:37 1994",
    b"x-amz-checksum-crc32: ",
    b"x-amz-checksum-crc64nvme: ",
    b"x-amz-sdk-checksum-algorithm: ",
    b"CRC32C",
    b"x-amz-trailer: ",
    b"x-amz-checksum-sha1",
    b"content-md5: ",
    b"x-amz-meta-",
    b"content-encoding: ",
    b"aws-chunked",
    b"x-amz-storage-class: ",
    b"18446744073709551614",
];

#[test]
fn fuzz_headers() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "headers",
        dict: HEADER_TOKENS,
        max_len: 8192,
        check: check_headers,
    });
}

// ------------------------------------------------------------------------------------------
// The allocation bound at full size

/// Mutated inputs stay small (`max_len`), where the bound's 1 MiB dominates. This pins the
/// per-byte factor on large inputs of the shapes that allocate the most per input byte,
/// found by measuring: many tiny items, each becoming a struct, a node or a `Vec` slot.
#[test]
fn repetitive_inputs_stay_within_the_allocation_bound() {
    let presigned =
        &corpus(CORPUS, "sigv4_presigned").into_iter().find(|(n, _)| n == "ok-boto3-get-object").expect("seed").1;
    let (line, rest) = presigned.split_at(presigned.iter().position(|&b| b == b'\n').expect("request line"));
    // hyper refuses a request target over 64 KiB, so that is the largest query there is.
    let query_bomb = [line, "&a".repeat(30_000).as_bytes(), rest].concat();
    let n = 64 * 1024;
    /// What it is, the input, and the parser to run on it.
    type Shape = (&'static str, Vec<u8>, fn(&[u8]));
    let cases: Vec<Shape> = vec![
        ("SigV4 query of empty parameters", query_bomb, |b| {
            let _ = verify_request(&parse_request(b).expect("request"));
        }),
        ("query of empty parameters", "a&".repeat(n).into_bytes(), |b| {
            let _ = Query::parse(std::str::from_utf8(b).expect("text"));
        }),
        ("XML of empty elements", format!("<Delete>{}</Delete>", "<a/>".repeat(n)).into_bytes(), |b| {
            let _ = parse_delete(b);
        }),
        (
            "XML of objects",
            format!("<Delete>{}</Delete>", "<Object><Key>k</Key></Object>".repeat(n)).into_bytes(),
            |b| {
                let _ = parse_delete(b);
            },
        ),
        (
            "aws-chunked of 1-byte chunks and full trailers",
            ["1\r\na\r\n".repeat(n), "0\r\n".into(), "a:b\r\n".repeat(3000), "\r\n".into()].concat().into_bytes(),
            |b| {
                let _ = decode_body(&Mode { seed: None, trailer: true }, b, &[]);
            },
        ),
    ];
    for (what, input, parse) in cases {
        let (_, peak) = meter::peak_of(|| parse(&input));
        let ratio = peak as f64 / input.len() as f64;
        eprintln!("{what}: {} bytes in, {peak} bytes at the peak ({ratio:.1} per input byte)", input.len());
        assert!(peak <= alloc_bound(input.len()), "{what}: {peak} bytes for {} input bytes", input.len());
    }
}
