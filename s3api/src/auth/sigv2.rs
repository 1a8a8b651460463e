//! AWS Signature Version 2 verification (S3's `HMAC-SHA1` scheme), for the clients that
//! still send it: `boto3`'s `generate_presigned_url` in `us-east-1` without a signature
//! config, s3cmd with `signature_v2 = True`, WAL-E (boto 2 on custom endpoints) and older
//! backup scripts. On by default, as in MinIO and Ceph RGW; `serve --signature-v2 off`
//! refuses it (then [`super::verify`] leaves it to SigV4, which answers as for any unsupported scheme).
//!
//! Two forms, as S3 defines them:
//! - header: `Authorization: AWS <AccessKeyId>:<base64 HMAC-SHA1>`, with `Date` (or
//!   `x-amz-date`) within the allowed skew;
//! - query (presigned URL): `AWSAccessKeyId`, `Expires` (Unix seconds) and `Signature`; a
//!   URL used after `Expires` is refused.
//!
//! The string to sign is S3's: `Verb \n Content-MD5 \n Content-Type \n Date \n
//! CanonicalizedAmzHeaders CanonicalizedResource`, where the amz headers are every
//! `x-amz-*` header lowercased, sorted, values trimmed and joined with `,`, and the
//! resource is the path exactly as received (un-decoded, as AWS specifies) plus the
//! sub-resources of the query (`?acl`, `?uploadId=…`, `response-*` overrides, …) sorted by
//! name, with their values decoded and a `=` only where the request had one (botocore's
//! form). For the `Date` line S3's documentation gives two readings when `x-amz-date` is
//! present — an empty line, or that header's value in it — and clients followed each;
//! both are accepted (each is a canonical form of what the client signed; neither lets a
//! signature verify for another request). The body is not signed in SigV2: the payload is
//! unsigned, and a `Content-MD5` it declares is still checked against the body by the
//! handlers.
//!
//! Signatures are compared in constant time after decoding both to bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::percent_decode;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::sigv4::{AuthError, AuthSettings, PayloadHash, RequestParts, SecretLookup, SignatureVersion, Verified};

type HmacSha1 = Hmac<Sha1>;

/// Query parameters that are part of the canonical resource (S3's sub-resources and
/// response overrides; the list botocore signs with).
const SUB_RESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "legal-hold",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "retention",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// Whether the request carries SigV2 credentials: `Authorization: AWS …`, or the query
/// parameters `AWSAccessKeyId` and `Signature`.
pub fn is_v2(req: &RequestParts<'_>) -> bool {
    let header = req.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        let v = v.trim_start();
        v.starts_with("AWS ") || v.starts_with("AWS\t")
    });
    header
        || (query_param(req.raw_query, "AWSAccessKeyId").is_some() && query_param(req.raw_query, "Signature").is_some())
}

/// Verifies a SigV2 request (the caller checked [`is_v2`]).
pub fn verify(
    req: &RequestParts<'_>,
    settings: &AuthSettings<'_>,
    secrets: &dyn SecretLookup,
) -> Result<Verified, AuthError> {
    let authorization: Vec<&str> = req
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .map(|v| v.to_str().map_err(|_| AuthError::MalformedHeader("Authorization header is not visible ASCII".into())))
        .collect::<Result<_, _>>()?;
    let presigned = query_param(req.raw_query, "AWSAccessKeyId").is_some()
        || query_param(req.raw_query, "Signature").is_some()
        || query_param(req.raw_query, "Expires").is_some();
    let (access_key_id, signature, date_lines) = match (authorization.as_slice(), presigned) {
        ([_, _, ..], _) => return Err(AuthError::MalformedHeader("more than one Authorization header".into())),
        ([_], true) => return Err(AuthError::MultipleAuthMechanisms),
        ([value], false) => header_form(value, req.headers, settings)?,
        ([], _) => query_form(req.raw_query, settings)?,
    };
    let secret = secrets.secret_key(&access_key_id).ok_or(AuthError::UnknownAccessKey)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.as_bytes())
        .ok()
        .filter(|s| s.len() == 20)
        .ok_or(AuthError::SignatureMismatch)?;
    let resources = candidate_resources(req.raw_path, req.raw_query);
    let promoted;
    let headers = if presigned {
        promoted = query_headers(req.headers, req.raw_query);
        &promoted
    } else {
        req.headers
    };
    let mut matched = false;
    for resource in &resources {
        for (date_line, skip_amz_date) in &date_lines {
            let sts = string_to_sign(req.method.as_str(), headers, date_line, *skip_amz_date, resource);
            let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).map_err(|_| AuthError::SignatureMismatch)?;
            mac.update(&sts);
            let expected = mac.finalize().into_bytes();
            // Every candidate is computed, so the time taken does not tell which one matched.
            matched |= bool::from(expected.as_slice().ct_eq(&signature));
        }
    }
    if !matched {
        return Err(AuthError::SignatureMismatch);
    }
    Ok(Verified { access_key_id, payload: PayloadHash::Unsigned, chunk_signer: None, version: SignatureVersion::V2 })
}

/// The candidate `Date` lines of a request: (line, leave `x-amz-date` out of the amz headers).
type DateLines = Vec<(String, bool)>;

/// `Authorization: AWS AKID:signature`: key, signature, and the Date lines to try.
fn header_form(
    value: &str,
    headers: &HeaderMap,
    settings: &AuthSettings<'_>,
) -> Result<(String, String, DateLines), AuthError> {
    let rest = value.trim().strip_prefix("AWS").map(str::trim_start).unwrap_or_default();
    let (akid, signature) = rest.split_once(':').ok_or_else(|| {
        AuthError::MalformedHeader("Signature Version 2 header must be 'AWS AccessKeyId:Signature'".into())
    })?;
    if akid.is_empty() || signature.is_empty() || akid.contains([' ', '\t']) || signature.contains([' ', '\t']) {
        return Err(AuthError::MalformedHeader(
            "Signature Version 2 header must be 'AWS AccessKeyId:Signature'".into(),
        ));
    }
    let single = |name: &str| -> Result<Option<&str>, AuthError> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => v.to_str().map(|s| Some(s.trim())).map_err(|_| AuthError::MissingDate),
            (Some(_), Some(_)) => Err(AuthError::MissingDate),
        }
    };
    let amz_date = single("x-amz-date")?;
    let date = single("date")?;
    let time = match (amz_date, date) {
        (Some(a), _) => parse_date(a).ok_or(AuthError::MissingDate)?,
        (None, Some(d)) => parse_date(d).ok_or(AuthError::MissingDate)?,
        (None, None) => return Err(AuthError::MissingDate),
    };
    if abs_diff(settings.now, time) > settings.max_skew {
        return Err(AuthError::TimeSkewed);
    }
    let lines = match amz_date {
        None => vec![(date.unwrap_or_default().to_owned(), false)],
        Some(a) => vec![
            // AWS: "use the empty string for the Date when you include x-amz-date" (boto 2).
            (String::new(), false),
            // AWS's own DELETE example: x-amz-date's value on the Date line.
            (a.to_owned(), true),
            // Clients that put the Date header's value there regardless (botocore's HmacV1).
            (date.unwrap_or_default().to_owned(), false),
        ],
    };
    Ok((akid.to_owned(), signature.to_owned(), lines))
}

/// `?AWSAccessKeyId=…&Expires=…&Signature=…`: key, signature, and the Date line (the expiry).
fn query_form(raw_query: &str, settings: &AuthSettings<'_>) -> Result<(String, String, DateLines), AuthError> {
    let malformed = AuthError::MalformedQuery;
    let one = |name: &str| -> Result<String, AuthError> {
        let mut values = raw_query
            .split('&')
            .filter_map(|seg| seg.split_once('=').map_or((seg, ""), |kv| kv).into())
            .filter(|(k, _)| percent_decode(k.as_bytes()).decode_utf8().is_ok_and(|k| k == name));
        let (_, v) = values.next().ok_or_else(|| malformed(format!("missing {name}")))?;
        if values.next().is_some() {
            return Err(malformed(format!("{name} appears more than once")));
        }
        percent_decode(v.as_bytes())
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| malformed(format!("{name} is not UTF-8")))
    };
    let akid = one("AWSAccessKeyId")?;
    let signature = one("Signature")?;
    let expires = one("Expires")?;
    let expires_at = (!expires.is_empty() && expires.len() <= 19 && expires.bytes().all(|b| b.is_ascii_digit()))
        .then(|| expires.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| malformed("Expires must be a Unix time in seconds".into()))?;
    if akid.is_empty() || signature.is_empty() {
        return Err(malformed("empty AWSAccessKeyId or Signature".into()));
    }
    let now = settings.now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if now > expires_at {
        return Err(AuthError::Expired);
    }
    Ok((akid, signature, vec![(expires, false)]))
}

/// S3's SigV2 string to sign.
fn string_to_sign(method: &str, headers: &HeaderMap, date_line: &str, skip_amz_date: bool, resource: &str) -> Vec<u8> {
    let standard =
        |name: &str| -> Vec<u8> { headers.get(name).map(|v| trim(v.as_bytes()).to_vec()).unwrap_or_default() };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&standard("content-md5"));
    out.push(b'\n');
    out.extend_from_slice(&standard("content-type"));
    out.push(b'\n');
    out.extend_from_slice(date_line.as_bytes());
    out.push(b'\n');
    let mut names: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|n| n.starts_with("x-amz-") && !(skip_amz_date && *n == "x-amz-date"))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, v) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(trim(v.as_bytes()));
        }
        out.push(b'\n');
    }
    out.extend_from_slice(resource.as_bytes());
    out
}

/// The resources a client may have signed for this request: [`canonical_resource`], and
/// for a bucket-level path (`/bucket`, no key) also `/bucket/`, which botocore and boto 2
/// sign for path-style bucket requests (ListObjects, DeleteObjects, ...) because S3's
/// virtual-hosted form of the same request is `/bucket/`. Both name the same bucket, so
/// accepting either widens nothing the signature protects.
fn candidate_resources(raw_path: &str, raw_query: &str) -> Vec<String> {
    let exact = canonical_resource(raw_path, raw_query);
    let bucket_level = raw_path.len() > 1 && raw_path.starts_with('/') && !raw_path[1..].contains('/');
    if bucket_level {
        let slashed = canonical_resource(&format!("{raw_path}/"), raw_query);
        vec![exact, slashed]
    } else {
        vec![exact]
    }
}

/// The path as received plus the sub-resources of the query, sorted by name (stable),
/// values decoded, `=` kept only where the request had one.
pub fn canonical_resource(raw_path: &str, raw_query: &str) -> String {
    let mut out = if raw_path.is_empty() { "/".to_owned() } else { raw_path.to_owned() };
    let mut subs: Vec<(&str, Option<String>)> = raw_query
        .split('&')
        .filter(|seg| !seg.is_empty())
        .filter_map(|seg| {
            let (name, value) = match seg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (seg, None),
            };
            SUB_RESOURCES.contains(&name).then(|| {
                (
                    name,
                    value.map(|v| {
                        String::from_utf8_lossy(&percent_decode(v.as_bytes()).collect::<Vec<u8>>()).into_owned()
                    }),
                )
            })
        })
        .collect();
    subs.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (name, value)) in subs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// The headers of a presigned request as its signer saw them: clients (botocore) move
/// `x-amz-*`, `Content-MD5` and `Content-Type` into the query of a SigV2 presigned URL, and
/// sign them as headers. Query parameters of those names are added where the request has
/// no such header. [`headers_from_query`] does the same for the request handlers.
fn query_headers(headers: &HeaderMap, raw_query: &str) -> HeaderMap {
    let mut out = headers.clone();
    for (name, value) in headers_from_query(raw_query) {
        if !headers.contains_key(&name) {
            out.append(name, value);
        }
    }
    out
}

/// The `x-amz-*`, `content-md5` and `content-type` parameters of a SigV2 presigned URL's
/// query, as headers (names lowercased, values decoded; unusable ones left out).
pub fn headers_from_query(raw_query: &str) -> Vec<(http::HeaderName, http::HeaderValue)> {
    raw_query
        .split('&')
        .filter_map(|seg| {
            let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
            let name = percent_decode(k.as_bytes()).decode_utf8().ok()?.to_ascii_lowercase();
            if !(name.starts_with("x-amz-") || name == "content-md5" || name == "content-type") {
                return None;
            }
            let value: Vec<u8> = percent_decode(v.as_bytes()).collect();
            Some((http::HeaderName::from_bytes(name.as_bytes()).ok()?, http::HeaderValue::from_bytes(&value).ok()?))
        })
        .collect()
}

/// The raw value of the first query parameter named `name`.
fn query_param<'q>(raw_query: &'q str, name: &str) -> Option<&'q str> {
    raw_query.split('&').find_map(|seg| {
        let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
        (k == name).then_some(v)
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end]
}

/// An RFC 1123 date as SigV2 clients send it: `GMT`, or a numeric zone (`+0000`).
fn parse_date(s: &str) -> Option<SystemTime> {
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    let (head, zone) = s.rsplit_once(' ')?;
    let sign = match zone.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    if zone.len() != 5 || !zone[1..].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let minutes = zone[1..3].parse::<i64>().ok()? * 60 + zone[3..].parse::<i64>().ok()?;
    let utc = httpdate::parse_http_date(&format!("{head} GMT")).ok()?;
    let shift = Duration::from_secs(minutes.unsigned_abs() * 60);
    // 10:00 +0100 is 09:00 UTC.
    if sign > 0 {
        utc.checked_sub(shift)
    } else {
        utc.checked_add(shift)
    }
}

fn abs_diff(a: SystemTime, b: SystemTime) -> Duration {
    match a.duration_since(b) {
        Ok(d) => d,
        Err(e) => e.duration(),
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method};

    use super::*;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    struct Keys;
    impl SecretLookup for Keys {
        fn secret_key(&self, id: &str) -> Option<String> {
            (id == AKID).then(|| SECRET.to_owned())
        }
    }

    fn at(date: &str) -> SystemTime {
        parse_date(date).expect("date")
    }

    fn check(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        now: SystemTime,
    ) -> Result<Verified, AuthError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let req = RequestParts { method: &m, raw_path: path, raw_query: query, headers: &h };
        let settings = AuthSettings { now, region: "us-east-1", max_skew: Duration::from_secs(900), allow_v2: true };
        assert!(is_v2(&req), "{headers:?} {query}");
        verify(&req, &settings, &Keys)
    }

    /// The examples of AWS's "Signing and authenticating REST requests" (Signature Version
    /// 2), with the bucket in the path (path-style), as a server sees them.
    #[test]
    fn aws_documentation_examples_verify() {
        let get = |path: &str, date: &str, sig: &str| {
            check("GET", path, "", &[("date", date), ("authorization", &format!("AWS {AKID}:{sig}"))], at(date))
        };
        get("/johnsmith/photos/puppy.jpg", "Tue, 27 Mar 2007 19:36:42 +0000", "bWq2s1WEIj+Ydj0vQ697zp+IXMU=")
            .expect("object GET");
        get("/johnsmith/", "Tue, 27 Mar 2007 19:42:41 +0000", "htDYFYduRNen8P9ZfE/s9SuKy0U=").expect("list");
        get("/", "Wed, 28 Mar 2007 01:29:59 +0000", "qGdzdERIC03wnaRNKh6OqZehG9s=").expect("list buckets");
        get(
            "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re",
            "Wed, 28 Mar 2007 01:49:49 +0000",
            "DNEZGsoieTZ92F3bUfSPQcbGmlM=",
        )
        .expect("unicode keys: the path exactly as sent, hex case included");
        let date = "Tue, 27 Mar 2007 19:44:46 +0000";
        check(
            "GET",
            "/johnsmith/",
            "acl",
            &[("date", date), ("authorization", &format!("AWS {AKID}:c2WLPFtWHVgbEmeEG93a4cG37dM="))],
            at(date),
        )
        .expect("sub-resource");
        let date = "Tue, 27 Mar 2007 21:15:45 +0000";
        check(
            "PUT",
            "/johnsmith/photos/puppy.jpg",
            "",
            &[
                ("content-type", "image/jpeg"),
                ("date", date),
                ("authorization", &format!("AWS {AKID}:MyyxeRY7whkBe+bq8fHCL/2kKUg=")),
            ],
            at(date),
        )
        .expect("object PUT");
        let date = "Tue, 27 Mar 2007 21:06:08 +0000";
        check(
            "PUT",
            "/static.johnsmith.net/db-backup.dat.gz",
            "",
            &[
                ("content-md5", "4gJE4saaMU4BqNR0kLY+lw=="),
                ("content-type", "application/x-download"),
                ("date", date),
                ("x-amz-acl", "public-read"),
                ("x-amz-meta-reviewedby", "joe@johnsmith.net"),
                ("x-amz-meta-reviewedby", "jane@johnsmith.net"),
                ("x-amz-meta-filechecksum", "0x02661779"),
                ("x-amz-meta-checksumalgorithm", "crc32"),
                ("authorization", &format!("AWS {AKID}:ilyl83RwaSoYIEdixDQcA4OnAnc=")),
            ],
            at(date),
        )
        .expect("upload with amz headers, repeated ones joined");
        let date = "Tue, 27 Mar 2007 21:20:26 +0000";
        check(
            "DELETE",
            "/johnsmith/photos/puppy.jpg",
            "",
            &[("x-amz-date", date), ("authorization", &format!("AWS {AKID}:lx3byBScXR6KzyMaifNkardMwNk="))],
            at(date),
        )
        .expect("x-amz-date instead of Date (its value on the Date line)");
        // Query string authentication.
        let v = check(
            "GET",
            "/johnsmith/photos/puppy.jpg",
            "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620",
            &[],
            UNIX_EPOCH + Duration::from_secs(1_175_139_000),
        )
        .expect("presigned");
        assert_eq!((v.access_key_id.as_str(), v.version), (AKID, SignatureVersion::V2));
        assert_eq!(v.payload, PayloadHash::Unsigned);
    }

    #[test]
    fn refusals() {
        let date = "Tue, 27 Mar 2007 19:36:42 +0000";
        let get = |sig: &str, headers: &[(&str, &str)], now: SystemTime| {
            let mut h = vec![("date", date)];
            h.extend_from_slice(headers);
            let auth = format!("AWS {AKID}:{sig}");
            h.push(("authorization", &auth));
            check("GET", "/johnsmith/photos/puppy.jpg", "", &h, now).map(|v| v.access_key_id)
        };
        let good = "bWq2s1WEIj+Ydj0vQ697zp+IXMU=";
        assert!(get(good, &[], at(date)).is_ok());
        assert_eq!(get("bWq2s1WEIj+Ydj0vQ697zp+IXMV=", &[], at(date)), Err(AuthError::SignatureMismatch));
        assert_eq!(get("!!!!notbase64", &[], at(date)), Err(AuthError::SignatureMismatch));
        assert!(matches!(get("with space", &[], at(date)), Err(AuthError::MalformedHeader(_))));
        assert_eq!(
            get(good, &[("x-amz-meta-a", "b")], at(date)),
            Err(AuthError::SignatureMismatch),
            "an unsigned amz header"
        );
        assert_eq!(get(good, &[], at(date) + Duration::from_secs(901)), Err(AuthError::TimeSkewed));
        let other_key = check("GET", "/", "", &[("date", date), ("authorization", "AWS NOPE:xx")], at(date));
        assert_eq!(other_key.map(|v| v.access_key_id), Err(AuthError::UnknownAccessKey));
        let no_colon =
            check("GET", "/", "", &[("date", date), ("authorization", "AWS AKIAIOSFODNN7EXAMPLE")], at(date));
        assert!(matches!(no_colon, Err(AuthError::MalformedHeader(_))));
        let no_date = check("GET", "/", "", &[("authorization", &format!("AWS {AKID}:{good}"))], at(date));
        assert_eq!(no_date.map(|v| v.access_key_id), Err(AuthError::MissingDate));
        // Presigned: expiry, tampering, both mechanisms.
        let q = "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620";
        let late = check("GET", "/johnsmith/photos/puppy.jpg", q, &[], UNIX_EPOCH + Duration::from_secs(1_175_139_621));
        assert_eq!(late.map(|v| v.access_key_id), Err(AuthError::Expired));
        let other =
            check("GET", "/johnsmith/photos/kitten.jpg", q, &[], UNIX_EPOCH + Duration::from_secs(1_175_139_000));
        assert_eq!(other.map(|v| v.access_key_id), Err(AuthError::SignatureMismatch));
        let sub = format!("{q}&acl");
        let acl =
            check("GET", "/johnsmith/photos/puppy.jpg", &sub, &[], UNIX_EPOCH + Duration::from_secs(1_175_139_000));
        assert_eq!(acl.map(|v| v.access_key_id), Err(AuthError::SignatureMismatch), "a sub-resource is signed");
        let later = q.replace("1175139620", "1175139999");
        let ext =
            check("GET", "/johnsmith/photos/puppy.jpg", &later, &[], UNIX_EPOCH + Duration::from_secs(1_175_139_000));
        assert_eq!(ext.map(|v| v.access_key_id), Err(AuthError::SignatureMismatch), "Expires is signed");
        let both = check(
            "GET",
            "/johnsmith/photos/puppy.jpg",
            q,
            &[("authorization", &format!("AWS {AKID}:{good}"))],
            UNIX_EPOCH + Duration::from_secs(1_175_139_000),
        );
        assert_eq!(both.map(|v| v.access_key_id), Err(AuthError::MultipleAuthMechanisms));
    }

    #[test]
    fn a_bucket_path_may_be_signed_with_or_without_its_slash() {
        assert_eq!(candidate_resources("/b", "list-type=2"), vec!["/b".to_owned(), "/b/".to_owned()]);
        assert_eq!(candidate_resources("/b", "delete"), vec!["/b?delete".to_owned(), "/b/?delete".to_owned()]);
        assert_eq!(candidate_resources("/b/", ""), vec!["/b/".to_owned()]);
        assert_eq!(candidate_resources("/b/k", ""), vec!["/b/k".to_owned()]);
        assert_eq!(candidate_resources("/", ""), vec!["/".to_owned()]);
    }

    #[test]
    fn canonical_resource_keeps_what_the_client_sent() {
        assert_eq!(canonical_resource("/b/k", "uploadId=a%2Bb&partNumber=2&foo=1"), "/b/k?partNumber=2&uploadId=a+b");
        assert_eq!(canonical_resource("/b", "delete="), "/b?delete=");
        assert_eq!(canonical_resource("/b", "delete"), "/b?delete");
        assert_eq!(
            canonical_resource("/b/k", "response-content-type=text%2Fplain&versionId=3"),
            "/b/k?response-content-type=text/plain&versionId=3"
        );
        assert_eq!(canonical_resource("", ""), "/");
        assert_eq!(parse_date("Tue, 27 Mar 2007 20:36:42 +0100"), parse_date("Tue, 27 Mar 2007 19:36:42 GMT"));
        assert_eq!(parse_date("Tue, 27 Mar 2007 18:36:42 -0100"), parse_date("Tue, 27 Mar 2007 19:36:42 GMT"));
        assert_eq!(parse_date("yesterday"), None);
    }
}
