//! Signature campaign: at least 10,000 requests with mutated SigV4 authentication against a
//! live server. Every one must be refused with the code and status S3 answers for that case;
//! none may be accepted, and no refused PUT may leave anything stored.
//!
//! Each case starts from a request built by the signer below (checked first against the
//! aws-sigv4 crate) and sent unmutated: it must be accepted, so the campaign can fail. Then one
//! mutation is applied (re-signing where the mutation is a valid signature over bad values, or
//! editing the wire where it is tampering) and the request is sent again. Mutation classes cover
//! the signature, the credential scope (date, region, service, terminator, shape), access keys,
//! the request date (malformed, missing, skewed past and future), the signed-header list (no
//! host, unsorted canonical order, duplicates, uppercase, an absent header), the payload hash
//! (digest of other bytes, edited body, malformed, missing), aws-chunked chunk signatures
//! (flipped, wrong previous signature, truncated, final chunk missing, reordered, edited data)
//! and presigned URLs (expired, X-Amz-Expires over 7 days, far-future date, mutated Signature,
//! Credential, SignedHeaders, missing parameters). A few workers share the cases over
//! keep-alive connections.
//!
//! Seeded: `SIG_CAMPAIGN_SEED=<n>` replays a run, `SIG_CAMPAIGN_CASES=<n>` changes its size
//! (default 10,000 mutated requests, plus as many unmutated ones).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use common::{amz_date, bytes_of, Server, ACCESS_KEY, REGION, SECRET_KEY};
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BUCKET: &str = "camp";
const FIXTURE: &str = "fixture";
const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const CHUNK: usize = 8192;
const WORKERS: u64 = 4;
/// Every request must be answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole campaign must finish within this.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(600);
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

// ------------------------------------------------------------------------------------ signer

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn signing_key(k: &Knobs) -> [u8; 32] {
    let key = hmac(format!("AWS4{}", k.secret).as_bytes(), k.scope_date.as_bytes());
    let key = hmac(&key, k.region.as_bytes());
    let key = hmac(&key, k.service.as_bytes());
    hmac(&key, k.terminator.as_bytes())
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// What a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// GetObject of the fixture, header auth.
    Get,
    /// ListObjectsV2, header auth.
    List,
    /// PutObject with the hex SHA-256 of the body.
    PutSha,
    /// PutObject with UNSIGNED-PAYLOAD.
    PutUnsigned,
    /// PutObject with STREAMING-AWS4-HMAC-SHA256-PAYLOAD (aws-chunked, signed chunks).
    PutChunked,
    /// Presigned GetObject of the fixture.
    PresignGet,
    /// Presigned PutObject.
    PresignPut,
}

impl Kind {
    fn presigned(self) -> bool {
        matches!(self, Kind::PresignGet | Kind::PresignPut)
    }

    fn put(self) -> bool {
        matches!(self, Kind::PutSha | Kind::PutUnsigned | Kind::PutChunked | Kind::PresignPut)
    }
}

/// Everything the signature is computed from; mutations change these and re-sign.
#[derive(Clone, Debug)]
struct Knobs {
    akid: String,
    secret: String,
    /// `x-amz-date` / `X-Amz-Date`.
    amz_date: String,
    scope_date: String,
    region: String,
    service: String,
    terminator: String,
    /// `SignedHeaders` as written.
    signed: Vec<String>,
    /// Canonicalise in the written order instead of sorted (what a buggy client does).
    canonical_as_written: bool,
    /// `x-amz-content-sha256` (header auth).
    payload: String,
    /// `X-Amz-Expires` (presigned).
    expires: String,
    /// Added to the true `x-amz-decoded-content-length` (aws-chunked).
    decoded_delta: i64,
}

/// Changes to an aws-chunked body after its chunks were signed.
#[derive(Clone, Debug, Default)]
struct ChunkEdits {
    flip_signature: Option<usize>,
    wrong_seed: bool,
    /// Cut the body this many bytes into the first chunk's data.
    cut_into_first: Option<usize>,
    omit_final: bool,
    flip_data: Option<usize>,
    swap_first_two: bool,
    drop_signature: Option<usize>,
}

#[derive(Clone, Debug)]
struct Req {
    kind: Kind,
    method: &'static str,
    path: String,
    /// Query parameters before authentication, unencoded.
    base_query: Vec<(String, String)>,
    /// Query parameters on the wire, unencoded (set by `sign`).
    query: Vec<(String, String)>,
    /// Header names lowercase, in wire order.
    headers: Vec<(String, String)>,
    /// The payload (decoded, for aws-chunked).
    body: Vec<u8>,
    /// What goes on the wire after the headers.
    wire_body: Vec<u8>,
    edits: ChunkEdits,
    k: Knobs,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &str, value: &str) {
        match self.headers.iter_mut().find(|(n, _)| n == name) {
            Some(h) => h.1 = value.to_owned(),
            None => self.headers.push((name.to_owned(), value.to_owned())),
        }
    }

    fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| n != name);
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn set_param(&mut self, name: &str, value: &str) {
        match self.query.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = value.to_owned(),
            None => self.query.push((name.to_owned(), value.to_owned())),
        }
    }

    fn remove_param(&mut self, name: &str) {
        self.query.retain(|(n, _)| n != name);
    }

    /// Replaces the first `old` in the Authorization header.
    fn edit_auth(&mut self, old: &str, new: &str) {
        let value = self.header("authorization").expect("header-signed").to_owned();
        assert!(value.contains(old), "{value} lacks {old}");
        self.set_header("authorization", &value.replacen(old, new, 1));
    }

    fn signature(&self) -> String {
        match self.kind.presigned() {
            true => self.param("X-Amz-Signature").expect("presigned").to_owned(),
            false => {
                let auth = self.header("authorization").expect("signed");
                auth.rsplit("Signature=").next().expect("signature").to_owned()
            }
        }
    }

    fn set_signature(&mut self, sig: &str) {
        if self.kind.presigned() {
            self.set_param("X-Amz-Signature", sig);
        } else {
            let old = format!("Signature={}", self.signature());
            self.edit_auth(&old, &format!("Signature={sig}"));
        }
    }

    fn credential(&self) -> String {
        match self.kind.presigned() {
            true => self.param("X-Amz-Credential").expect("presigned").to_owned(),
            false => {
                let auth = self.header("authorization").expect("signed");
                let rest = auth.split("Credential=").nth(1).expect("credential");
                rest.split(',').next().expect("credential").to_owned()
            }
        }
    }

    /// Replaces the credential as written (no re-signing).
    fn set_credential(&mut self, cred: &str) {
        if self.kind.presigned() {
            self.set_param("X-Amz-Credential", cred);
        } else {
            let old = format!("Credential={}", self.credential());
            self.edit_auth(&old, &format!("Credential={cred}"));
        }
    }

    fn signed_headers_text(&self) -> String {
        match self.kind.presigned() {
            true => self.param("X-Amz-SignedHeaders").expect("presigned").to_owned(),
            false => {
                let auth = self.header("authorization").expect("signed");
                let rest = auth.split("SignedHeaders=").nth(1).expect("signed headers");
                rest.split(',').next().expect("signed headers").to_owned()
            }
        }
    }

    fn set_signed_headers_text(&mut self, list: &str) {
        if self.kind.presigned() {
            self.set_param("X-Amz-SignedHeaders", list);
        } else {
            let old = format!("SignedHeaders={}", self.signed_headers_text());
            self.edit_auth(&old, &format!("SignedHeaders={list}"));
        }
    }

    fn canonical_request(&self, order: &[String], query: &[(String, String)], payload: &str) -> Vec<u8> {
        let mut pairs: Vec<String> = query.iter().map(|(n, v)| format!("{}={}", enc(n), enc(v))).collect();
        pairs.sort();
        let mut out = format!("{}\n{}\n{}\n", self.method, self.path, pairs.join("&"));
        for name in order {
            let values: Vec<String> = self
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            out.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        out.push_str(&format!("\n{}\n{payload}", order.join(";")));
        out.into_bytes()
    }

    fn scope(&self) -> String {
        let k = &self.k;
        format!("{}/{}/{}/{}", k.scope_date, k.region, k.service, k.terminator)
    }

    /// Signs (or re-signs) the request from its knobs.
    fn sign(&mut self) {
        self.remove_header("authorization");
        let mut order = self.k.signed.clone();
        if !self.k.canonical_as_written {
            order.sort();
        }
        let key = signing_key(&self.k);
        let scope = self.scope();
        if self.kind.presigned() {
            let mut q = self.base_query.clone();
            q.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
            q.push(("X-Amz-Credential".into(), format!("{}/{scope}", self.k.akid)));
            q.push(("X-Amz-Date".into(), self.k.amz_date.clone()));
            q.push(("X-Amz-Expires".into(), self.k.expires.clone()));
            q.push(("X-Amz-SignedHeaders".into(), self.k.signed.join(";")));
            if self.kind.put() {
                self.set_header("content-length", &self.body.len().to_string());
            }
            let creq = self.canonical_request(&order, &q, "UNSIGNED-PAYLOAD");
            let sts = format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", self.k.amz_date, sha_hex(&creq));
            q.push(("X-Amz-Signature".into(), hex::encode(hmac(&key, sts.as_bytes()))));
            self.query = q;
            self.wire_body = self.body.clone();
            return;
        }
        self.query = self.base_query.clone();
        self.set_header("x-amz-date", &self.k.amz_date.clone());
        self.set_header("x-amz-content-sha256", &self.k.payload.clone());
        if self.kind == Kind::PutChunked {
            let decoded = self.body.len() as i64 + self.k.decoded_delta;
            self.set_header("x-amz-decoded-content-length", &decoded.to_string());
            // Signatures all have 64 hex digits, so a dummy seed gives the final length.
            let len = self.encode_chunked(&key, &"0".repeat(64)).len();
            self.set_header("content-length", &len.to_string());
        } else if self.kind.put() {
            self.set_header("content-length", &self.body.len().to_string());
        }
        let creq = self.canonical_request(&order, &self.query, &self.k.payload);
        let sts = format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", self.k.amz_date, sha_hex(&creq));
        let sig = hex::encode(hmac(&key, sts.as_bytes()));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
            self.k.akid,
            self.k.signed.join(";")
        );
        self.set_header("authorization", &auth);
        self.wire_body = match self.kind {
            Kind::PutChunked => self.encode_chunked(&key, &sig),
            _ => self.body.clone(),
        };
    }

    /// The aws-chunked body: each chunk signed over the previous signature, starting from
    /// `seed` (the request signature), then the edits applied.
    fn encode_chunked(&self, key: &[u8; 32], seed: &str) -> Vec<u8> {
        let e = &self.edits;
        let scope = self.scope();
        let mut previous = if e.wrong_seed { sha_hex(seed.as_bytes()) } else { seed.to_owned() };
        let mut pieces: Vec<(Vec<u8>, Option<String>)> = Vec::new();
        for data in self.body.chunks(CHUNK).map(<[u8]>::to_vec).chain(std::iter::once(Vec::new())) {
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{scope}\n{previous}\n{EMPTY_SHA}\n{}",
                self.k.amz_date,
                sha_hex(&data)
            );
            previous = hex::encode(hmac(key, sts.as_bytes()));
            pieces.push((data, Some(previous.clone())));
        }
        if let Some(i) = e.flip_signature {
            if let Some(sig) = pieces[i].1.as_mut() {
                *sig = flip_hex(sig, 7);
            }
        }
        if let Some(i) = e.flip_data {
            pieces[i].0[0] ^= 0x01;
        }
        if e.swap_first_two {
            pieces.swap(0, 1);
        }
        if let Some(i) = e.drop_signature {
            pieces[i].1 = None;
        }
        if e.omit_final {
            pieces.pop();
        }
        let mut out = Vec::new();
        let mut cut = None;
        for (i, (data, sig)) in pieces.iter().enumerate() {
            match sig {
                Some(s) => out.extend_from_slice(format!("{:x};chunk-signature={s}\r\n", data.len()).as_bytes()),
                None => out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes()),
            }
            if i == 0 {
                cut = e.cut_into_first.map(|n| out.len() + n.min(data.len().saturating_sub(1)).max(1));
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(c) = cut {
            out.truncate(c);
        }
        out
    }

    fn to_bytes(&self) -> Vec<u8> {
        let query: Vec<String> = self.query.iter().map(|(n, v)| format!("{}={}", enc(n), enc(v))).collect();
        let target = match query.is_empty() {
            true => self.path.clone(),
            false => format!("{}?{}", self.path, query.join("&")),
        };
        let mut out = format!("{} {target} HTTP/1.1\r\n", self.method).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.wire_body);
        out
    }
}

/// Changes the hex digit at `at % len` to another one.
fn flip_hex(s: &str, at: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    if b.is_empty() {
        return "0".into();
    }
    let i = at % b.len();
    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).expect("ascii")
}

/// A valid request of `kind` for `key` at time `t`.
fn base(kind: Kind, key: &str, port: u16, t: SystemTime, region: &str, body: &[u8]) -> Req {
    let amz = amz_date(t);
    let (method, path, base_query) = match kind {
        Kind::Get | Kind::PresignGet => ("GET", format!("/{BUCKET}/{FIXTURE}"), vec![]),
        Kind::List => (
            "GET",
            format!("/{BUCKET}"),
            vec![("list-type".to_owned(), "2".to_owned()), ("prefix".to_owned(), FIXTURE.to_owned())],
        ),
        _ => ("PUT", format!("/{BUCKET}/{key}"), vec![]),
    };
    let mut headers = vec![("host".to_owned(), format!("127.0.0.1:{port}"))];
    let signed: Vec<&str> = match kind {
        Kind::Get | Kind::List => {
            headers.push(("accept".into(), "*/*".into()));
            vec!["accept", "host", "x-amz-content-sha256", "x-amz-date"]
        }
        Kind::PutSha | Kind::PutUnsigned => {
            headers.push(("content-type".into(), "application/octet-stream".into()));
            headers.push(("x-amz-meta-campaign".into(), "1".into()));
            vec!["content-type", "host", "x-amz-content-sha256", "x-amz-date", "x-amz-meta-campaign"]
        }
        Kind::PutChunked => {
            headers.push(("content-type".into(), "application/octet-stream".into()));
            headers.push(("content-encoding".into(), "aws-chunked".into()));
            vec![
                "content-encoding",
                "content-length",
                "content-type",
                "host",
                "x-amz-content-sha256",
                "x-amz-date",
                "x-amz-decoded-content-length",
            ]
        }
        Kind::PresignGet | Kind::PresignPut => vec!["host"],
    };
    let payload = match kind {
        Kind::Get | Kind::List => EMPTY_SHA.to_owned(),
        Kind::PutSha => sha_hex(body),
        Kind::PutUnsigned => "UNSIGNED-PAYLOAD".to_owned(),
        Kind::PutChunked => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_owned(),
        Kind::PresignGet | Kind::PresignPut => String::new(),
    };
    let mut req = Req {
        kind,
        method,
        path,
        base_query,
        query: Vec::new(),
        headers,
        body: if kind.put() { body.to_vec() } else { Vec::new() },
        wire_body: Vec::new(),
        edits: ChunkEdits::default(),
        k: Knobs {
            akid: ACCESS_KEY.to_owned(),
            secret: SECRET_KEY.to_owned(),
            scope_date: amz[..8].to_owned(),
            amz_date: amz,
            region: region.to_owned(),
            service: "s3".into(),
            terminator: "aws4_request".into(),
            signed: signed.into_iter().map(str::to_owned).collect(),
            canonical_as_written: false,
            payload,
            expires: "900".into(),
            decoded_delta: 0,
        },
    };
    req.sign();
    req
}

// --------------------------------------------------------------------------------- mutations

type Apply = fn(&mut Req, &mut StdRng);

/// One class of mutation: the kinds of request it applies to and what S3 answers.
struct Mutation {
    class: &'static str,
    kinds: &'static [Kind],
    status: u16,
    code: &'static str,
    apply: Apply,
}

const HDR: &[Kind] = &[Kind::Get, Kind::List, Kind::PutSha, Kind::PutUnsigned, Kind::PutChunked];
const PRE: &[Kind] = &[Kind::PresignGet, Kind::PresignPut];
const ALL: &[Kind] =
    &[Kind::Get, Kind::List, Kind::PutSha, Kind::PutUnsigned, Kind::PutChunked, Kind::PresignGet, Kind::PresignPut];

const SDM: (u16, &str) = (403, "SignatureDoesNotMatch");

fn random_time_far(rng: &mut StdRng, future: bool) -> SystemTime {
    // More than the 15-minute skew, up to 30 days.
    let off = Duration::from_secs(rng.gen_range(16 * 60..30 * 86_400));
    if future {
        SystemTime::now() + off
    } else {
        SystemTime::now() - off
    }
}

fn retime(r: &mut Req, t: SystemTime) {
    r.k.amz_date = amz_date(t);
    r.k.scope_date = r.k.amz_date[..8].to_owned();
}

fn other_region(r: &Req) -> &'static str {
    if r.k.region == REGION {
        "us-east-1"
    } else {
        REGION
    }
}

fn random_akid(rng: &mut StdRng) -> String {
    let chars: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".chars().collect();
    format!("AKIA{}", (0..16).map(|_| chars[rng.gen_range(0..chars.len())]).collect::<String>())
}

/// Adds a second signed header so an order exists to get wrong.
fn ensure_two_signed(r: &mut Req) {
    if r.k.signed.len() < 2 {
        r.add_header("accept", "*/*");
        r.k.signed.push("accept".into());
        r.k.signed.sort();
    }
}

fn m(class: &'static str, kinds: &'static [Kind], expect: (u16, &'static str), apply: Apply) -> Mutation {
    Mutation { class, kinds, status: expect.0, code: expect.1, apply }
}

fn mutations() -> Vec<Mutation> {
    let ahm = (400, "AuthorizationHeaderMalformed");
    let aqpe = (400, "AuthorizationQueryParametersError");
    let denied = (403, "AccessDenied");
    vec![
        // --- the signature itself
        m("signature: one hex digit changed", ALL, SDM, |r, g| {
            let s = r.signature();
            let at = g.gen_range(0..s.len());
            r.set_signature(&flip_hex(&s, at));
        }),
        m("signature: truncated", ALL, SDM, |r, g| {
            let s = r.signature();
            let keep = g.gen_range(1..s.len());
            r.set_signature(&s[..keep]);
        }),
        m("signature: extended", ALL, SDM, |r, g| {
            let s = r.signature();
            r.set_signature(&format!("{s}{:x}", g.gen_range(0..16)));
        }),
        m("signature: uppercase hex", ALL, SDM, |r, _| {
            let s = r.signature();
            let up = if s.bytes().any(|b| b.is_ascii_lowercase()) { s.to_uppercase() } else { flip_hex(&s, 0) };
            r.set_signature(&up);
        }),
        m("signature: signed with another secret", ALL, SDM, |r, g| {
            r.k.secret = format!("wrong-secret-{}", g.gen::<u64>());
            r.sign();
        }),
        m("signature: empty (header)", HDR, ahm, |r, _| r.set_signature("")),
        m("signature: empty (presigned)", PRE, aqpe, |r, _| r.set_signature("")),
        // --- what the signature covers
        m("request: path edited", ALL, SDM, |r, _| r.path.push('x')),
        m("request: query parameter added", ALL, SDM, |r, g| {
            r.query.push(("campaign".into(), g.gen::<u32>().to_string()));
        }),
        m("request: method changed", ALL, SDM, |r, _| r.method = "POST"),
        m("request: host edited", ALL, SDM, |r, _| {
            let host = r.header("host").expect("host").replace("127.0.0.1", "localhost");
            r.set_header("host", &host);
        }),
        m("request: signed header removed", HDR, SDM, |r, _| {
            let victim = if r.header("accept").is_some() { "accept" } else { "content-type" };
            r.remove_header(victim);
        }),
        m("request: signed header value edited", HDR, SDM, |r, _| {
            let victim = if r.header("accept").is_some() { "accept" } else { "content-type" };
            r.set_header(victim, "text/plain");
        }),
        m("request: unsigned x-amz-* header added", ALL, denied, |r, _| r.add_header("x-amz-meta-intruder", "1")),
        // --- credential scope
        m("scope: date is not the request date (header)", HDR, ahm, |r, _| {
            let t = SystemTime::now() - Duration::from_secs(86_400);
            r.k.scope_date = amz_date(t)[..8].to_owned();
            r.sign();
        }),
        m("scope: date is not the request date (presigned)", PRE, aqpe, |r, _| {
            let t = SystemTime::now() - Duration::from_secs(86_400);
            r.k.scope_date = amz_date(t)[..8].to_owned();
            r.sign();
        }),
        m("scope: malformed date (header)", HDR, ahm, |r, g| {
            let d = r.k.scope_date.clone();
            r.k.scope_date =
                ["", "abcdefgh", &d[..7], &format!("{d}1"), &d.replace('2', "x")][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: malformed date (presigned)", PRE, aqpe, |r, g| {
            let d = r.k.scope_date.clone();
            r.k.scope_date =
                ["", "abcdefgh", &d[..7], &format!("{d}1"), &d.replace('2', "x")][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: region not served (header)", HDR, ahm, |r, g| {
            r.k.region = ["eu-west-9", "us-west-2", "DE01", "de02", "x"][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: region not served (presigned)", PRE, aqpe, |r, g| {
            r.k.region = ["eu-west-9", "us-west-2", "DE01", "de02", "x"][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: region edited to the other accepted one", ALL, SDM, |r, _| {
            let cred = r.credential();
            let other = other_region(r);
            r.set_credential(&cred.replace(&format!("/{}/", r.k.region), &format!("/{other}/")));
        }),
        m("scope: service not s3 (header)", HDR, ahm, |r, g| {
            r.k.service = ["sts", "S3", "ec2", "s4", "iam"][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: service not s3 (presigned)", PRE, aqpe, |r, g| {
            r.k.service = ["sts", "S3", "ec2", "s4", "iam"][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: terminator not aws4_request (header)", HDR, ahm, |r, g| {
            r.k.terminator =
                ["aws4_reques", "AWS4_REQUEST", "aws5_request", "aws4_request2", ""][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: terminator not aws4_request (presigned)", PRE, aqpe, |r, g| {
            r.k.terminator =
                ["aws4_reques", "AWS4_REQUEST", "aws5_request", "aws4_request2", ""][g.gen_range(0..5)].to_owned();
            r.sign();
        }),
        m("scope: wrong number of parts (header)", HDR, ahm, |r, g| {
            let cred = r.credential();
            let new = if g.gen() { format!("{cred}/extra") } else { cred.replacen("/s3/", "/", 1) };
            r.set_credential(&new);
        }),
        m("scope: wrong number of parts (presigned)", PRE, aqpe, |r, g| {
            let cred = r.credential();
            let new = if g.gen() { format!("{cred}/extra") } else { cred.replacen("/s3/", "/", 1) };
            r.set_credential(&new);
        }),
        // --- access keys
        m("key: unknown, validly signed", ALL, (403, "InvalidAccessKeyId"), |r, g| {
            r.k.akid = random_akid(g);
            r.k.secret = format!("secret-{}", g.gen::<u64>());
            r.sign();
        }),
        m("key: one character changed", ALL, (403, "InvalidAccessKeyId"), |r, g| {
            let cred = r.credential();
            let mut akid: Vec<u8> = r.k.akid.clone().into_bytes();
            let i = g.gen_range(0..akid.len());
            akid[i] = if akid[i] == b'Z' { b'Y' } else { b'Z' };
            r.set_credential(&cred.replacen(&r.k.akid, &String::from_utf8(akid).expect("ascii"), 1));
        }),
        m("key: empty (header)", HDR, ahm, |r, _| {
            let cred = r.credential();
            r.set_credential(&cred.replacen(&r.k.akid, "", 1));
        }),
        m("key: empty (presigned)", PRE, aqpe, |r, _| {
            let cred = r.credential();
            r.set_credential(&cred.replacen(&r.k.akid, "", 1));
        }),
        // --- request date (header auth)
        m("date: malformed x-amz-date", HDR, denied, |r, g| {
            let d = r.k.amz_date.clone();
            r.k.amz_date = [
                d[..15].to_owned(),
                d.replace('T', " "),
                format!("{}-{}-{}T{}:{}:{}Z", &d[..4], &d[4..6], &d[6..8], &d[9..11], &d[11..13], &d[13..15]),
                format!("{}T250000Z", &d[..8]),
                format!("{}1332T000000Z", &d[..4]),
                "yesterday".to_owned(),
            ][g.gen_range(0..6)]
            .clone();
            r.sign();
        }),
        m("date: x-amz-date missing", HDR, denied, |r, _| r.remove_header("x-amz-date")),
        m("date: more than 15 min in the past", HDR, (403, "RequestTimeTooSkewed"), |r, g| {
            let t = random_time_far(g, false);
            retime(r, t);
            r.sign();
        }),
        m("date: more than 15 min in the future", HDR, (403, "RequestTimeTooSkewed"), |r, g| {
            let t = random_time_far(g, true);
            retime(r, t);
            r.sign();
        }),
        m("date: x-amz-date edited by seconds", HDR, SDM, |r, g| {
            let d = r.k.amz_date.clone();
            let secs: u32 = d[13..15].parse().expect("seconds");
            let new = (secs + g.gen_range(1..59)) % 60;
            r.set_header("x-amz-date", &format!("{}{new:02}Z", &d[..13]));
        }),
        // --- presigned validity
        m("presigned: expired", PRE, denied, |r, g| {
            let expires = g.gen_range(1..3600u64);
            let t = SystemTime::now() - Duration::from_secs(expires + g.gen_range(2..86_400));
            r.k.expires = expires.to_string();
            retime(r, t);
            r.sign();
        }),
        m("presigned: X-Amz-Expires over 7 days", PRE, aqpe, |r, g| {
            r.k.expires = g.gen_range(604_801..100_000_000u64).to_string();
            r.sign();
        }),
        m("presigned: X-Amz-Expires malformed", PRE, aqpe, |r, g| {
            r.k.expires = ["0", "-1", "abc", "", "1.5", "99999999999999999999"][g.gen_range(0..6)].to_owned();
            r.sign();
        }),
        m("presigned: X-Amz-Date far in the future", PRE, denied, |r, g| {
            let t = random_time_far(g, true);
            retime(r, t);
            r.sign();
        }),
        m("presigned: X-Amz-Date malformed", PRE, aqpe, |r, g| {
            let d = r.k.amz_date.clone();
            r.k.amz_date = [d[..15].to_owned(), d.replace('T', "t"), format!("{}T240000Z", &d[..8]), "now".into()]
                [g.gen_range(0..4)]
            .clone();
            r.sign();
        }),
        m("presigned: X-Amz-Date edited", PRE, SDM, |r, _| {
            let d = r.k.amz_date.clone();
            let secs: u32 = d[13..15].parse().expect("seconds");
            r.set_param("X-Amz-Date", &format!("{}{:02}Z", &d[..13], (secs + 1) % 60));
        }),
        m("presigned: X-Amz-Expires edited", PRE, SDM, |r, g| {
            r.set_param("X-Amz-Expires", &g.gen_range(901..604_800u32).to_string());
        }),
        m("presigned: parameter missing", PRE, aqpe, |r, g| {
            let p = ["X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"];
            r.remove_param(p[g.gen_range(0..p.len())]);
        }),
        m("presigned: parameter twice", PRE, aqpe, |r, g| {
            let p = ["X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"];
            let name = p[g.gen_range(0..p.len())];
            let v = r.param(name).expect("present").to_owned();
            r.query.push((name.to_owned(), v));
        }),
        m("presigned: X-Amz-Algorithm missing", PRE, aqpe, |r, _| r.remove_param("X-Amz-Algorithm")),
        m("presigned: X-Amz-Algorithm unknown", PRE, aqpe, |r, _| r.set_param("X-Amz-Algorithm", "AWS4-HMAC-SHA512")),
        m("presigned: Authorization header too", PRE, (400, "InvalidArgument"), |r, _| {
            let sig = r.signature();
            r.add_header(
                "authorization",
                &format!("AWS4-HMAC-SHA256 Credential={}, SignedHeaders=host, Signature={sig}", r.credential()),
            );
        }),
        // --- signed-header list
        m("signed headers: host not signed", ALL, denied, |r, _| {
            ensure_two_signed(r);
            r.k.signed.retain(|h| h != "host");
            r.sign();
        }),
        m("signed headers: x-amz-date not signed", HDR, denied, |r, _| {
            r.k.signed.retain(|h| h != "x-amz-date");
            r.sign();
        }),
        m("signed headers: unsorted, canonicalised as written", ALL, SDM, |r, g| {
            ensure_two_signed(r);
            let sorted = {
                let mut s = r.k.signed.clone();
                s.sort();
                s
            };
            while r.k.signed == sorted {
                r.k.signed.shuffle(g);
            }
            r.k.canonical_as_written = true;
            r.sign();
        }),
        m("signed headers: a name twice (header)", HDR, ahm, |r, g| {
            let dup = r.k.signed[g.gen_range(0..r.k.signed.len())].clone();
            r.k.signed.push(dup);
            r.k.signed.sort();
            r.sign();
        }),
        m("signed headers: a name twice (presigned)", PRE, aqpe, |r, g| {
            let dup = r.k.signed[g.gen_range(0..r.k.signed.len())].clone();
            r.k.signed.push(dup);
            r.k.signed.sort();
            r.sign();
        }),
        m("signed headers: uppercase name (header)", HDR, ahm, |r, _| {
            let list = r.signed_headers_text().replacen("host", "Host", 1);
            r.set_signed_headers_text(&list);
        }),
        m("signed headers: uppercase name (presigned)", PRE, aqpe, |r, _| {
            let list = r.signed_headers_text().replacen("host", "Host", 1);
            r.set_signed_headers_text(&list);
        }),
        m("signed headers: lists a header the request lacks", ALL, SDM, |r, _| {
            r.k.signed.push("x-amz-meta-absent".into());
            r.k.signed.sort();
            r.sign();
        }),
        m("signed headers: x-amz-content-sha256 dropped after signing", HDR, SDM, |r, _| {
            let list = r.signed_headers_text().replacen("x-amz-content-sha256;", "", 1);
            r.set_signed_headers_text(&list);
        }),
        m("signed headers: host dropped after signing", ALL, denied, |r, _| {
            ensure_two_signed(r);
            r.sign();
            let list: Vec<String> =
                r.signed_headers_text().split(';').filter(|h| *h != "host").map(str::to_owned).collect();
            r.set_signed_headers_text(&list.join(";"));
        }),
        // --- payload hash
        m(
            "payload: digest of other bytes",
            &[Kind::Get, Kind::List, Kind::PutSha],
            (400, "XAmzContentSHA256Mismatch"),
            |r, g| {
                r.k.payload = sha_hex(&g.gen::<[u8; 16]>());
                r.sign();
            },
        ),
        m("payload: body edited after signing", &[Kind::PutSha], (400, "XAmzContentSHA256Mismatch"), |r, g| {
            let i = g.gen_range(0..r.body.len());
            r.wire_body[i] ^= 1 << g.gen_range(0..8);
        }),
        m("payload: body longer than signed", &[Kind::PutSha], (400, "XAmzContentSHA256Mismatch"), |r, g| {
            r.wire_body.push(g.gen());
            let n = r.wire_body.len().to_string();
            r.set_header("content-length", &n);
        }),
        m("payload: malformed x-amz-content-sha256", HDR, (400, "InvalidArgument"), |r, g| {
            let d = sha_hex(b"x");
            r.k.payload = [
                d[..63].to_owned(),
                format!("{d}0"),
                "g".repeat(64),
                "UNSIGNED_PAYLOAD".into(),
                "unsigned-payload".into(),
                "STREAMING-AWS4-HMAC-SHA512-PAYLOAD".into(),
            ][g.gen_range(0..6)]
            .clone();
            r.sign();
        }),
        m("payload: x-amz-content-sha256 missing", HDR, (400, "InvalidRequest"), |r, _| {
            r.remove_header("x-amz-content-sha256");
        }),
        m("payload: x-amz-content-sha256 edited", HDR, SDM, |r, g| {
            r.set_header("x-amz-content-sha256", &sha_hex(&g.gen::<[u8; 8]>()));
        }),
        // --- aws-chunked
        m("chunk: a chunk signature changed", &[Kind::PutChunked], SDM, |r, g| {
            r.edits.flip_signature = Some(g.gen_range(0..r.body.len().div_ceil(CHUNK) + 1));
            r.sign();
        }),
        m("chunk: chain seeded with a wrong previous signature", &[Kind::PutChunked], SDM, |r, _| {
            r.edits.wrong_seed = true;
            r.sign();
        }),
        m("chunk: data edited", &[Kind::PutChunked], SDM, |r, g| {
            r.edits.flip_data = Some(g.gen_range(0..r.body.len().div_ceil(CHUNK)));
            r.sign();
        }),
        m("chunk: first two chunks swapped", &[Kind::PutChunked], SDM, |r, _| {
            r.edits.swap_first_two = true;
            r.sign();
        }),
        m("chunk: body truncated inside a chunk", &[Kind::PutChunked], (400, "IncompleteBody"), |r, g| {
            r.edits.cut_into_first = Some(g.gen_range(1..CHUNK));
            r.sign();
        }),
        m("chunk: final chunk missing", &[Kind::PutChunked], (400, "IncompleteBody"), |r, _| {
            r.edits.omit_final = true;
            r.sign();
        }),
        m("chunk: chunk-signature missing", &[Kind::PutChunked], (400, "IncompleteBody"), |r, g| {
            r.edits.drop_signature = Some(g.gen_range(0..r.body.len().div_ceil(CHUNK) + 1));
            r.sign();
        }),
        m("chunk: x-amz-decoded-content-length wrong", &[Kind::PutChunked], (400, "IncompleteBody"), |r, g| {
            r.k.decoded_delta = if g.gen() { 1 } else { -1 };
            r.sign();
        }),
        // --- the Authorization header's shape and scheme
        m("authorization: malformed", HDR, ahm, |r, g| {
            let auth = r.header("authorization").expect("signed").to_owned();
            let parts: Vec<&str> = auth["AWS4-HMAC-SHA256 ".len()..].split(", ").collect();
            let new = match g.gen_range(0..6) {
                0 => format!("AWS4-HMAC-SHA256 {}, {}", parts[1], parts[2]),
                1 => format!("AWS4-HMAC-SHA256 {}, {}", parts[0], parts[2]),
                2 => format!("AWS4-HMAC-SHA256 {}, {}", parts[0], parts[1]),
                3 => format!("{auth}, Foo=bar"),
                4 => format!("{auth}, {}", parts[0]),
                _ => auth.replacen("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256", 1),
            };
            r.set_header("authorization", &new);
        }),
        // Signature Version 2 is on (the default), so this is verified as V2: its date is
        // SigV4's basic-format x-amz-date, which V2 (HTTP dates) cannot read, and S3 answers
        // 403 AccessDenied for a V2 request without a valid date. (With `--signature-v2 off`
        // it is 400 InvalidRequest: tests/test_s3_semantics.py.)
        m("authorization: Signature Version 2 header on a SigV4 request", HDR, (403, "AccessDenied"), |r, _| {
            let akid = r.k.akid.clone();
            r.set_header("authorization", &format!("AWS {akid}:frJIUN8DYpKDtOLCwo//yllqDzg="));
        }),
        m("authorization: not an AWS scheme", HDR, (400, "InvalidArgument"), |r, g| {
            let auth = r.header("authorization").expect("signed").to_owned();
            let new = [
                "Basic d2Fsc3RvcmU6c2VjcmV0".to_owned(),
                "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x".to_owned(),
                auth.replacen("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1),
                auth.replacen("AWS4-HMAC-SHA256", "AWS-HMAC-SHA256", 1),
            ][g.gen_range(0..4)]
            .clone();
            r.set_header("authorization", &new);
        }),
        m("authorization: removed (anonymous)", HDR, denied, |r, _| r.remove_header("authorization")),
    ]
}

// ------------------------------------------------------------------------------------ client

struct Resp {
    status: u16,
    body: Vec<u8>,
}

impl Resp {
    fn code(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.split("<Code>").nth(1).and_then(|r| r.split("</Code>").next()).unwrap_or("").to_owned()
    }
}

/// One keep-alive HTTP/1.1 connection, reopened when the server closes it.
struct Conn {
    port: u16,
    stream: Option<BufReader<TcpStream>>,
    connects: u64,
}

impl Conn {
    fn new(port: u16) -> Conn {
        Conn { port, stream: None, connects: 0 }
    }

    async fn send(&mut self, request: &[u8], head: bool) -> std::io::Result<Resp> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request, head)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))
            }
        }
    }

    async fn exchange(&mut self, request: &[u8], head: bool) -> std::io::Result<Resp> {
        if self.stream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
            self.connects += 1;
        }
        let s = self.stream.as_mut().expect("connected");
        s.get_mut().write_all(request).await?;
        let mut line = String::new();
        s.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value == "close",
                _ => {}
            }
        }
        let mut body = Vec::new();
        if head || status == 204 || status == 304 {
        } else if chunked {
            loop {
                line.clear();
                s.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk size"))?;
                let mut chunk = vec![0; n + 2];
                s.read_exact(&mut chunk).await?;
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            s.read_exact(&mut body).await?;
        }
        if close {
            self.stream = None;
        }
        Ok(Resp { status, body })
    }
}

// ---------------------------------------------------------------------------------- campaign

#[derive(Default)]
struct Tally {
    sent: u64,
    refused_as_s3: u64,
    /// (status, code) answers that were not the expected one.
    wrong: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Report {
    /// Per (class, expected answer).
    classes: BTreeMap<(&'static str, String), Tally>,
    controls: u64,
    control_puts: u64,
    /// Controls sent in a rewritten form S3 accepts too, by rewrite.
    variants: BTreeMap<&'static str, u64>,
    retries: u64,
    connects: u64,
    failures: Vec<String>,
    requests: u64,
}

/// Rewrites a valid request into another form S3 accepts: SignedHeaders listed unsorted
/// (signed over the sorted canonical request, as aws-sdk-php presigned URLs were), or
/// `x-amz-content-sha256` left out of SignedHeaders (S3 does not require it signed).
fn equivalent_rewrite(r: &mut Req, rng: &mut StdRng) -> &'static str {
    if r.kind.presigned() || rng.gen() {
        ensure_two_signed(r);
        let sorted = r.k.signed.clone();
        while r.k.signed == sorted {
            r.k.signed.shuffle(rng);
        }
        r.sign();
        "SignedHeaders listed unsorted"
    } else {
        r.k.signed.retain(|h| h != "x-amz-content-sha256");
        r.sign();
        "x-amz-content-sha256 not signed"
    }
}

async fn send_retrying(conn: &mut Conn, req: &Req, report: &mut Report) -> Result<Resp, String> {
    let bytes = req.to_bytes();
    report.requests += 1;
    match conn.send(&bytes, req.method == "HEAD").await {
        Ok(r) => Ok(r),
        Err(first) => {
            // A refused request may be answered and the connection closed before the client
            // finished writing; judge it on a fresh connection.
            report.retries += 1;
            report.requests += 1;
            conn.send(&bytes, req.method == "HEAD").await.map_err(|e| format!("{first}; then {e}"))
        }
    }
}

async fn worker(id: u64, port: u16, cases: u64, seed: u64, fixture: Arc<Vec<u8>>, deadline: Instant) -> Report {
    let table = mutations();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut conn = Conn::new(port);
    let mut report = Report::default();
    for i in 0..cases {
        if Instant::now() > deadline {
            report.failures.push(format!("worker {id}: campaign deadline reached after {i} cases"));
            break;
        }
        let mutation = &table[rng.gen_range(0..table.len())];
        let kind = mutation.kinds[rng.gen_range(0..mutation.kinds.len())];
        let region = if rng.gen_bool(0.8) { REGION } else { "us-east-1" };
        let size = if kind == Kind::PutChunked { rng.gen_range(CHUNK + 1..5 * CHUNK) } else { rng.gen_range(1..4096) };
        let body = bytes_of(rng.gen(), size);
        let now = SystemTime::now();

        // The unmutated request must be accepted; now and then in a form S3 also accepts.
        let mut control = base(kind, &format!("ok/w{id}-{i}"), port, now, region, &body);
        if rng.gen_bool(0.2) {
            let variant = equivalent_rewrite(&mut control, &mut rng);
            *report.variants.entry(variant).or_default() += 1;
        }
        match send_retrying(&mut conn, &control, &mut report).await {
            Ok(r) if r.status == 200 => {
                report.controls += 1;
                if kind.put() {
                    report.control_puts += 1;
                }
                let good = match kind {
                    Kind::Get | Kind::PresignGet => r.body == *fixture,
                    Kind::List => String::from_utf8_lossy(&r.body).contains(&format!("<Key>{FIXTURE}</Key>")),
                    _ => true,
                };
                if !good {
                    report.failures.push(format!("{kind:?} control answered 200 with the wrong body"));
                }
            }
            Ok(r) => report.failures.push(format!(
                "{kind:?} control refused: {} {} ({})",
                r.status,
                r.code(),
                String::from_utf8_lossy(&r.body)
            )),
            Err(e) => report.failures.push(format!("{kind:?} control: {e}")),
        }

        // The same request for a key under bad/, mutated once.
        let mut bad = base(kind, &format!("bad/w{id}-{i}"), port, now, region, &body);
        (mutation.apply)(&mut bad, &mut rng);
        let expect = format!("{} {}", mutation.status, mutation.code);
        let tally = report.classes.entry((mutation.class, expect.clone())).or_default();
        tally.sent += 1;
        let got = match send_retrying(&mut conn, &bad, &mut report).await {
            Ok(r) => format!("{} {}", r.status, r.code()),
            Err(e) => format!("no answer: {e}"),
        };
        let tally = report.classes.get_mut(&(mutation.class, expect.clone())).expect("entry");
        if got == expect {
            tally.refused_as_s3 += 1;
        } else {
            *tally.wrong.entry(got.clone()).or_default() += 1;
            if report.failures.len() < 40 {
                report.failures.push(format!(
                    "{} on {kind:?}: expected {expect}, got {got}\n  request: {}",
                    mutation.class,
                    String::from_utf8_lossy(&bad.to_bytes()[..bad.to_bytes().len() - bad.wire_body.len()])
                        .replace("\r\n", "\n    ")
                ));
            }
        }
    }
    report.connects = conn.connects;
    report
}

/// Our signer and aws-sigv4 produce the same signatures (header and presigned), so "valid"
/// below means valid to an independent implementation, not just to ourselves.
fn signer_agrees_with_aws_sigv4() {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
        SigningSettings, UriPathNormalizationMode,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let body = b"walstore signature campaign";
    for presign in [false, true] {
        let kind = if presign { Kind::PresignPut } else { Kind::PutSha };
        let ours = base(kind, "dir/key-1", 9000, t, REGION, body);
        let identity: Identity = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test").into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        if presign {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(900));
        } else {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(t)
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let mut headers: Vec<(&str, &str)> = vec![("host", "127.0.0.1:9000")];
        if !presign {
            headers.push(("content-type", "application/octet-stream"));
            headers.push(("x-amz-meta-campaign", "1"));
        }
        let payload = if presign { SignableBody::UnsignedPayload } else { SignableBody::Bytes(body) };
        let uri = format!("http://127.0.0.1:9000/{BUCKET}/dir/key-1");
        let signable = SignableRequest::new("PUT", &uri, headers.into_iter(), payload).expect("signable");
        let (instructions, signature) = sign(signable, &params).expect("sign").into_parts();
        assert_eq!(ours.signature(), signature, "presigned={presign}: our signer disagrees with aws-sigv4");
        if !presign {
            let theirs = instructions.headers().find(|(n, _)| n.eq_ignore_ascii_case("authorization")).map(|(_, v)| v);
            assert_eq!(ours.header("authorization"), theirs, "Authorization header");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_mutated_signatures_are_all_refused_as_s3_refuses_them() {
    signer_agrees_with_aws_sigv4();
    let seed: u64 = std::env::var("SIG_CAMPAIGN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let cases: u64 = std::env::var("SIG_CAMPAIGN_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    println!("signature campaign: seed {seed} (replay with SIG_CAMPAIGN_SEED={seed}), {cases} mutated requests");

    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", BUCKET]);
    let client = srv.client();
    let fixture = Arc::new(bytes_of(seed, 1000 + (seed % 1000) as usize));
    client
        .put_object()
        .bucket(BUCKET)
        .key(FIXTURE)
        .body(ByteStream::from(fixture.to_vec()))
        .send()
        .await
        .expect("fixture");

    let started = Instant::now();
    let deadline = started + CAMPAIGN_DEADLINE;
    let mut tasks = Vec::new();
    for id in 0..WORKERS {
        let n = cases / WORKERS + u64::from(id < cases % WORKERS);
        tasks.push(tokio::spawn(worker(id, srv.port, n, seed, fixture.clone(), deadline)));
    }
    let mut total = Report::default();
    for t in tasks {
        let r = t.await.expect("worker");
        for (k, v) in r.classes {
            let e = total.classes.entry(k).or_default();
            e.sent += v.sent;
            e.refused_as_s3 += v.refused_as_s3;
            for (got, n) in v.wrong {
                *e.wrong.entry(got).or_default() += n;
            }
        }
        total.controls += r.controls;
        for (v, n) in r.variants {
            *total.variants.entry(v).or_default() += n;
        }
        total.control_puts += r.control_puts;
        total.retries += r.retries;
        total.connects += r.connects;
        total.requests += r.requests;
        total.failures.extend(r.failures);
    }
    let wall = started.elapsed();

    println!("\n| class | S3 answer | sent | refused with that answer | other answers |");
    println!("|---|---|---|---|---|");
    let mut mutated = 0;
    for ((class, expect), t) in &total.classes {
        mutated += t.sent;
        let other: Vec<String> = t.wrong.iter().map(|(g, n)| format!("{n}× {g}")).collect();
        println!("| {class} | {expect} | {} | {} | {} |", t.sent, t.refused_as_s3, other.join(", "));
    }
    println!(
        "\n{mutated} mutated requests in {} classes, {} unmutated controls accepted ({} PUTs), {} requests on the wire \
         over {} connections ({} retried on a fresh connection), {:.1} s",
        total.classes.len(),
        total.controls,
        total.control_puts,
        total.requests,
        total.connects,
        total.retries,
        wall.as_secs_f64()
    );

    let variants: Vec<String> = total.variants.iter().map(|(v, n)| format!("{n} with {v}")).collect();
    println!("controls in a form S3 also accepts: {}", variants.join(", "));

    // Nothing a refused PUT sent may be stored; every accepted control PUT is.
    let mut bad_keys = Vec::new();
    let mut ok_keys = 0u64;
    for prefix in ["bad/", "ok/"] {
        let mut pages = client.list_objects_v2().bucket(BUCKET).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.expect("list");
            for o in page.contents() {
                match prefix {
                    "bad/" => bad_keys.push(o.key().unwrap_or("").to_owned()),
                    _ => ok_keys += 1,
                }
            }
        }
    }
    println!(
        "stored afterwards: {} keys under bad/, {ok_keys} under ok/; staging files: {}",
        bad_keys.len(),
        srv.staging_files()
    );
    for f in total.failures.iter().take(40) {
        println!("FAILURE: {f}");
    }
    assert!(total.failures.is_empty(), "{} failures (first ones printed above); seed {seed}", total.failures.len());
    assert_eq!(mutated, cases, "every mutated request was sent");
    assert!(bad_keys.is_empty(), "refused PUTs stored objects: {bad_keys:?}");
    assert_eq!(ok_keys, total.control_puts, "every accepted control PUT is stored");
    assert_eq!(srv.staging_files(), 0, "no staging file left behind");
    let (status, _, _) =
        common::raw_http(srv.port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "the server is still up");
}

// ------------------------------------------------------------------- Signature Version 2

/// A Signature Version 2 request (header or presigned form), signed by the test's own
/// SigV2 implementation (checked against AWS's documented examples first).
#[derive(Clone, Debug)]
struct V2 {
    presigned: bool,
    put: bool,
    method: &'static str,
    path: String,
    /// Query on the wire, unencoded (authentication parameters added by `sign`).
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    akid: String,
    secret: String,
    /// `Date` header (header form).
    date: String,
    /// `Expires` (presigned form), Unix seconds.
    expires: u64,
}

fn v2_string_to_sign(method: &str, headers: &[(String, String)], date_line: &str, resource: &str) -> String {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    let mut amz: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers.iter().filter(|(k, _)| k.starts_with("x-amz-")) {
        amz.entry(k.clone()).or_default().push(v.trim().to_owned());
    }
    let mut s = format!("{method}\n{}\n{}\n{date_line}\n", get("content-md5"), get("content-type"));
    for (k, vs) in amz {
        s.push_str(&format!("{k}:{}\n", vs.join(",")));
    }
    s.push_str(resource);
    s
}

fn v2_sign_string(secret: &str, sts: &str) -> String {
    use base64::Engine;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl V2 {
    fn base(presigned: bool, put: bool, key: &str, port: u16, body: &[u8]) -> V2 {
        let now = SystemTime::now();
        let mut headers = vec![("host".to_owned(), format!("127.0.0.1:{port}"))];
        if put {
            headers.push(("content-type".into(), "application/octet-stream".into()));
            headers.push(("x-amz-meta-campaign".into(), "2".into()));
        }
        let mut r = V2 {
            presigned,
            put,
            method: if put { "PUT" } else { "GET" },
            path: if put { format!("/{BUCKET}/{key}") } else { format!("/{BUCKET}/{FIXTURE}") },
            query: Vec::new(),
            headers,
            body: if put { body.to_vec() } else { Vec::new() },
            akid: ACCESS_KEY.to_owned(),
            secret: SECRET_KEY.to_owned(),
            date: httpdate::fmt_http_date(now),
            expires: now.duration_since(UNIX_EPOCH).expect("after 1970").as_secs() + 600,
        };
        r.sign();
        r
    }

    fn resource(&self) -> String {
        let mut subs: Vec<String> = self
            .query
            .iter()
            .filter(|(k, _)| ["acl", "tagging", "uploads", "versionId"].contains(&k.as_str()))
            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
            .collect();
        subs.sort();
        if subs.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, subs.join("&"))
        }
    }

    fn sign(&mut self) {
        self.query.retain(|(k, _)| !["AWSAccessKeyId", "Signature", "Expires"].contains(&k.as_str()));
        self.headers.retain(|(k, _)| k != "authorization" && k != "date");
        if self.put {
            self.set_header("content-length", &self.body.len().to_string());
        }
        if self.presigned {
            let sts = v2_string_to_sign(self.method, &self.headers, &self.expires.to_string(), &self.resource());
            let sig = v2_sign_string(&self.secret, &sts);
            self.query.push(("AWSAccessKeyId".into(), self.akid.clone()));
            self.query.push(("Expires".into(), self.expires.to_string()));
            self.query.push(("Signature".into(), sig));
        } else {
            self.headers.push(("date".into(), self.date.clone()));
            let sts = v2_string_to_sign(self.method, &self.headers, &self.date, &self.resource());
            let sig = v2_sign_string(&self.secret, &sts);
            self.headers.push(("authorization".into(), format!("AWS {}:{sig}", self.akid)));
        }
    }

    fn set_header(&mut self, name: &str, value: &str) {
        match self.headers.iter_mut().find(|(n, _)| n == name) {
            Some(h) => h.1 = value.to_owned(),
            None => self.headers.push((name.to_owned(), value.to_owned())),
        }
    }

    fn signature(&self) -> String {
        match self.presigned {
            true => self.query.iter().find(|(k, _)| k == "Signature").map(|(_, v)| v.clone()).expect("signed"),
            false => {
                let auth = &self.headers.iter().find(|(k, _)| k == "authorization").expect("signed").1;
                auth.rsplit(':').next().expect("signature").to_owned()
            }
        }
    }

    fn set_signature(&mut self, sig: &str) {
        if self.presigned {
            self.query.iter_mut().find(|(k, _)| k == "Signature").expect("signed").1 = sig.to_owned();
        } else {
            let akid = self.akid.clone();
            self.set_header("authorization", &format!("AWS {akid}:{sig}"));
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let query: Vec<String> = self.query.iter().map(|(n, v)| format!("{}={}", enc(n), enc(v))).collect();
        let target = if query.is_empty() { self.path.clone() } else { format!("{}?{}", self.path, query.join("&")) };
        let mut out = format!("{} {target} HTTP/1.1\r\n", self.method).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Our SigV2 signer gives the signatures of AWS's documented examples.
fn v2_signer_agrees_with_aws_examples() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let h = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
    let cases = [
        (
            "GET",
            h(&[]),
            "Tue, 27 Mar 2007 19:36:42 +0000",
            "/johnsmith/photos/puppy.jpg",
            "bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
        ),
        (
            "PUT",
            h(&[("content-type", "image/jpeg")]),
            "Tue, 27 Mar 2007 21:15:45 +0000",
            "/johnsmith/photos/puppy.jpg",
            "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
        ),
        ("GET", h(&[]), "Tue, 27 Mar 2007 19:44:46 +0000", "/johnsmith/?acl", "c2WLPFtWHVgbEmeEG93a4cG37dM="),
        (
            "PUT",
            h(&[
                ("content-md5", "4gJE4saaMU4BqNR0kLY+lw=="),
                ("content-type", "application/x-download"),
                ("x-amz-acl", "public-read"),
                ("x-amz-meta-reviewedby", "joe@johnsmith.net"),
                ("x-amz-meta-reviewedby", "jane@johnsmith.net"),
                ("x-amz-meta-filechecksum", "0x02661779"),
                ("x-amz-meta-checksumalgorithm", "crc32"),
            ]),
            "Tue, 27 Mar 2007 21:06:08 +0000",
            "/static.johnsmith.net/db-backup.dat.gz",
            "ilyl83RwaSoYIEdixDQcA4OnAnc=",
        ),
        ("GET", h(&[]), "1175139620", "/johnsmith/photos/puppy.jpg", "NpgCjnDzrM+WFzoENXmpNDUsSn8="),
    ];
    for (method, headers, date, resource, want) in cases {
        assert_eq!(v2_sign_string(secret, &v2_string_to_sign(method, &headers, date, resource)), want, "{resource}");
    }
}

type ApplyV2 = fn(&mut V2, &mut StdRng);

/// One SigV2 mutation class: which forms it applies to, and what S3 answers.
struct MutationV2 {
    class: &'static str,
    header_form: bool,
    presigned_form: bool,
    status: u16,
    code: &'static str,
    apply: ApplyV2,
}

fn mutations_v2() -> Vec<MutationV2> {
    const SDM: (u16, &str) = (403, "SignatureDoesNotMatch");
    let m = |class, forms: (bool, bool), (status, code): (u16, &'static str), apply: ApplyV2| MutationV2 {
        class,
        header_form: forms.0,
        presigned_form: forms.1,
        status,
        code,
        apply,
    };
    let both = (true, true);
    let hdr = (true, false);
    let pre = (false, true);
    vec![
        m("v2 signature: one character changed", both, SDM, |r, g| {
            let sig = r.signature();
            let i = g.gen_range(0..sig.len() - 1);
            let mut b = sig.into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            r.set_signature(&String::from_utf8(b).expect("ascii"));
        }),
        m("v2 signature: signed with another secret", both, SDM, |r, _| {
            r.secret.push('x');
            r.sign();
        }),
        m("v2 access key: unknown, re-signed", both, (403, "InvalidAccessKeyId"), |r, _| {
            r.akid = "AKIAUNKNOWNKEY000000".into();
            r.sign();
        }),
        m("v2 path: another key after signing", both, SDM, |r, _| r.path.push_str("-other")),
        m("v2 method: DELETE after signing", both, SDM, |r, _| {
            r.method = "DELETE";
            r.body.clear();
            r.headers.retain(|(k, _)| k != "content-length");
        }),
        m("v2 sub-resource added after signing", both, SDM, |r, _| r.query.push(("tagging".into(), String::new()))),
        m("v2 x-amz-meta header added after signing", both, SDM, |r, _| {
            r.headers.push(("x-amz-meta-added".into(), "1".into()))
        }),
        m("v2 content-type changed after signing", both, SDM, |r, _| r.set_header("content-type", "text/evil")),
        m("v2 content-md5 added after signing", both, SDM, |r, _| {
            use base64::Engine;
            let md5 = md5::Md5::digest(&r.body);
            r.set_header("content-md5", &base64::engine::general_purpose::STANDARD.encode(md5))
        }),
        m("v2 date: 20 minutes in the past, re-signed", hdr, (403, "RequestTimeTooSkewed"), |r, _| {
            r.date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(1200));
            r.sign();
        }),
        m("v2 date: 20 minutes in the future, re-signed", hdr, (403, "RequestTimeTooSkewed"), |r, _| {
            r.date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(1200));
            r.sign();
        }),
        m("v2 date: missing", hdr, (403, "AccessDenied"), |r, _| r.headers.retain(|(k, _)| k != "date")),
        m("v2 date: not a date", hdr, (403, "AccessDenied"), |r, _| r.set_header("date", "yesterday")),
        m("v2 date: x-amz-date added after signing", hdr, SDM, |r, _| {
            r.headers.push(("x-amz-date".into(), httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5))))
        }),
        m("v2 header: no colon", hdr, (400, "AuthorizationHeaderMalformed"), |r, _| {
            let akid = r.akid.clone();
            r.set_header("authorization", &format!("AWS {akid}"));
        }),
        m("v2 presigned: expired, re-signed", pre, (403, "AccessDenied"), |r, _| {
            r.expires = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() - 10;
            r.sign();
        }),
        m("v2 presigned: Expires extended after signing", pre, SDM, |r, _| {
            let e = r.query.iter_mut().find(|(k, _)| k == "Expires").expect("expires");
            e.1 = (e.1.parse::<u64>().expect("number") + 3600).to_string();
        }),
        m("v2 presigned: Signature removed", pre, (403, "AccessDenied"), |r, _| {
            r.query.retain(|(k, _)| k != "Signature")
        }),
        m("v2 presigned: AWSAccessKeyId removed", pre, (403, "AccessDenied"), |r, _| {
            r.query.retain(|(k, _)| k != "AWSAccessKeyId")
        }),
        m("v2 presigned: Expires not a number", pre, (400, "AuthorizationQueryParametersError"), |r, _| {
            r.query.iter_mut().find(|(k, _)| k == "Expires").expect("expires").1 = "soon".into();
        }),
        m("v2 presigned: an Authorization header too", pre, (400, "InvalidArgument"), |r, _| {
            let sig = r.signature();
            let akid = r.akid.clone();
            r.headers.push(("authorization".into(), format!("AWS {akid}:{sig}")));
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_signature_v2_requests_are_all_refused_as_s3_refuses_them() {
    v2_signer_agrees_with_aws_examples();
    let seed: u64 = std::env::var("SIG_CAMPAIGN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let cases: u64 = std::env::var("SIG_CAMPAIGN_V2_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    println!("SigV2 campaign: seed {seed} (replay with SIG_CAMPAIGN_SEED={seed}), {cases} mutated requests");
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", BUCKET]);
    let client = srv.client();
    let fixture = bytes_of(seed, 777);
    client
        .put_object()
        .bucket(BUCKET)
        .key(FIXTURE)
        .body(ByteStream::from(fixture.clone()))
        .send()
        .await
        .expect("fixture");
    let table = mutations_v2();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn = Conn::new(srv.port);
    let mut report = Report::default();
    let mut failures = Vec::new();
    let deadline = Instant::now() + CAMPAIGN_DEADLINE;
    let mut tallies: BTreeMap<(&'static str, String), (u64, u64)> = BTreeMap::new();
    for i in 0..cases {
        assert!(Instant::now() < deadline, "the SigV2 campaign ran out of time after {i} cases");
        let mutation = &table[rng.gen_range(0..table.len())];
        let presigned = match (mutation.header_form, mutation.presigned_form) {
            (true, true) => rng.gen(),
            (h, _) => !h,
        };
        let put = rng.gen();
        let body = bytes_of(rng.gen(), rng.gen_range(1..2048));
        let control = V2::base(presigned, put, &format!("ok2/{i}"), srv.port, &body);
        let bytes = control.to_bytes();
        report.requests += 1;
        match conn.send(&bytes, false).await {
            Ok(r) if r.status == 200 && (put || r.body == fixture) => report.controls += 1,
            Ok(r) => failures.push(format!(
                "SigV2 control (presigned {presigned}, put {put}) refused: {} {} {}",
                r.status,
                r.code(),
                String::from_utf8_lossy(&r.body)
            )),
            Err(e) => failures.push(format!("SigV2 control: {e}")),
        }
        let mut bad = V2::base(presigned, put, &format!("bad2/{i}"), srv.port, &body);
        (mutation.apply)(&mut bad, &mut rng);
        let expect = format!("{} {}", mutation.status, mutation.code);
        let bytes = bad.to_bytes();
        report.requests += 1;
        let got = match conn.send(&bytes, false).await {
            Ok(r) => format!("{} {}", r.status, r.code()),
            Err(first) => match conn.send(&bytes, false).await {
                Ok(r) => format!("{} {}", r.status, r.code()),
                Err(e) => format!("no answer: {first}; then {e}"),
            },
        };
        let t = tallies.entry((mutation.class, expect.clone())).or_default();
        t.0 += 1;
        if got == expect {
            t.1 += 1;
        } else if failures.len() < 40 {
            failures.push(format!(
                "{} (presigned {presigned}, put {put}): expected {expect}, got {got}\n  {}",
                mutation.class,
                String::from_utf8_lossy(&bytes[..bytes.len() - bad.body.len()]).replace("\r\n", "\n  ")
            ));
        }
    }
    println!("\n| class | S3 answer | sent | refused with that answer |\n|---|---|---|---|");
    for ((class, expect), (sent, ok)) in &tallies {
        println!("| {class} | {expect} | {sent} | {ok} |");
    }
    println!("{} unmutated SigV2 controls accepted of {cases}", report.controls);
    let mut stored_bad = 0;
    let mut pages = client.list_objects_v2().bucket(BUCKET).prefix("bad2/").into_paginator().send();
    while let Some(page) = pages.next().await {
        stored_bad += page.expect("list").contents().len();
    }
    for f in &failures {
        println!("FAILURE: {f}");
    }
    assert!(failures.is_empty(), "{} failures; seed {seed}", failures.len());
    assert_eq!(report.controls, cases, "every unmutated SigV2 request was accepted");
    assert_eq!(stored_bad, 0, "refused SigV2 PUTs stored objects");
    assert!(tallies.len() >= table.len() * 3 / 4, "most classes were exercised: {}", tallies.len());
}
