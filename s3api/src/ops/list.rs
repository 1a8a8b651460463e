//! ListObjects (v1), ListObjectsV2 and ListObjectVersions.

use base64::Engine;
use http::Response;
use storage::{ListItem, ListPage, ListQuery, ObjectSummary};

use super::{blocking, xml, Ctx};
use crate::body::ResponseBody;
use crate::error::{S3Code, S3Error, S3Result};
use crate::xml::XmlWriter;

/// Default and maximum page size.
pub const MAX_KEYS: usize = 1000;

/// Common listing parameters.
struct Params {
    prefix: String,
    delimiter: Option<String>,
    max_keys: usize,
    url_encode: bool,
}

fn params(ctx: &Ctx) -> S3Result<Params> {
    let max_keys = match ctx.query.get("max-keys") {
        None | Some("") => MAX_KEYS,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(MAX_KEYS))
            .ok_or_else(|| S3Error::new(S3Code::InvalidArgument, "max-keys must be a non-negative integer"))?,
    };
    let url_encode = match ctx.query.get("encoding-type") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("url") => true,
        Some(v) => return Err(S3Error::new(S3Code::InvalidArgument, format!("Invalid Encoding Method {v:?}"))),
    };
    Ok(Params {
        prefix: ctx.query.get("prefix").unwrap_or("").to_owned(),
        delimiter: ctx.query.get("delimiter").filter(|d| !d.is_empty()).map(str::to_owned),
        max_keys,
        url_encode,
    })
}

async fn page(ctx: &Ctx, p: &Params, after: Option<String>) -> S3Result<ListPage> {
    let bucket = ctx.bucket()?.clone();
    if p.max_keys == 0 {
        // S3: an empty page that is not truncated (there is no next page to ask for),
        // after checking that the bucket exists.
        let store = ctx.state.store.clone();
        blocking(move || store.bucket_or_view(&bucket)).await?;
        return Ok(ListPage { items: Vec::new(), truncated: false });
    }
    let store = ctx.state.store.clone();
    let q = ListQuery { prefix: p.prefix.clone(), delimiter: p.delimiter.clone(), after, max_keys: p.max_keys };
    blocking(move || store.list_objects(&bucket, &q)).await
}

/// Characters kept as-is by `encoding-type=url` (besides alphanumerics).
const URL_SET: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

fn enc<'a>(p: &Params, s: &'a str) -> std::borrow::Cow<'a, str> {
    if p.url_encode {
        percent_encoding::utf8_percent_encode(s, URL_SET).into()
    } else {
        s.into()
    }
}

/// `Owner` of every object: walstore has one owner (the instance).
fn owner(w: &mut XmlWriter, ctx: &Ctx) {
    w.open("Owner").elem("ID", &ctx.state.config.owner_id).elem("DisplayName", "walstore").close("Owner");
}

fn contents(w: &mut XmlWriter, ctx: &Ctx, p: &Params, o: &ObjectSummary, tag: &str, with_owner: bool, version: bool) {
    w.open(tag).elem("Key", &enc(p, &o.key));
    if version {
        w.elem("VersionId", "null").boolean("IsLatest", true);
    }
    w.time("LastModified", o.last_modified).etag("ETag", &o.etag);
    if let Some(a) = o.checksum_algorithm {
        w.elem("ChecksumAlgorithm", a.name());
    }
    if let Some(t) = o.checksum_type {
        w.elem("ChecksumType", t);
    }
    w.num("Size", o.size).elem("StorageClass", o.storage_class.as_deref().unwrap_or("STANDARD"));
    if with_owner {
        owner(w, ctx);
    }
    w.close(tag);
}

/// About how many bytes a page's document takes (names may grow when escaped; the
/// buffer then grows once more).
fn document_size(page: &ListPage) -> usize {
    512 + page.items.iter().map(|i| 256 + 2 * i.name().len()).sum::<usize>()
}

fn items(w: &mut XmlWriter, ctx: &Ctx, p: &Params, page: &ListPage, tag: &str, with_owner: bool, version: bool) {
    for item in &page.items {
        if let ListItem::Object(o) = item {
            contents(w, ctx, p, o, tag, with_owner, version);
        }
    }
    for item in &page.items {
        if let ListItem::Prefix(cp) = item {
            w.open("CommonPrefixes").elem("Prefix", &enc(p, cp)).close("CommonPrefixes");
        }
    }
}

/// The elements before the items. `encode_prefix`: ListObjects (v1) sends the top-level
/// `Prefix` plain even with `encoding-type=url` (S3 does; botocore decodes it only in v2
/// and ListObjectVersions, so encoding it would hand v1 clients `%2F`s).
fn head(w: &mut XmlWriter, ctx: &Ctx, p: &Params, encode_prefix: bool) -> S3Result<()> {
    let prefix = if encode_prefix { enc(p, &p.prefix) } else { p.prefix.as_str().into() };
    w.elem("Name", ctx.bucket()?.as_str()).elem("Prefix", &prefix);
    if let Some(d) = &p.delimiter {
        w.elem("Delimiter", &enc(p, d));
    }
    w.count("MaxKeys", p.max_keys);
    if p.url_encode {
        w.elem("EncodingType", "url");
    }
    Ok(())
}

fn token_of(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name.as_bytes())
}

fn token_value(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| S3Error::new(S3Code::InvalidArgument, "The continuation token provided is incorrect"))
}

/// ListObjectsV2. `NextContinuationToken` is present iff the page is truncated.
pub async fn list_objects_v2(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let p = params(&ctx)?;
    let token = ctx.query.get("continuation-token").filter(|t| !t.is_empty()).map(str::to_owned);
    let start_after = ctx.query.get("start-after").filter(|t| !t.is_empty()).map(str::to_owned);
    let after = match &token {
        Some(t) => Some(token_value(t)?),
        None => start_after.clone(),
    };
    let page = page(&ctx, &p, after).await?;
    let fetch_owner = ctx.query.get("fetch-owner").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut w = XmlWriter::with_capacity("ListBucketResult", document_size(&page));
    head(&mut w, &ctx, &p, true)?;
    w.count("KeyCount", page.items.len()).boolean("IsTruncated", page.truncated);
    if let Some(t) = &token {
        w.elem("ContinuationToken", t);
    }
    if let Some(s) = &start_after {
        w.elem("StartAfter", &enc(&p, s));
    }
    if page.truncated {
        if let Some(last) = page.items.last() {
            w.elem("NextContinuationToken", &token_of(last.name()));
        }
    }
    items(&mut w, &ctx, &p, &page, "Contents", fetch_owner, false);
    Ok(xml(w.finish("ListBucketResult")))
}

/// ListObjects (v1). `NextMarker` is sent whenever the page is truncated.
pub async fn list_objects_v1(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let p = params(&ctx)?;
    let marker = ctx.query.get("marker").filter(|m| !m.is_empty()).map(str::to_owned);
    let page = page(&ctx, &p, marker.clone()).await?;
    let mut w = XmlWriter::with_capacity("ListBucketResult", document_size(&page));
    head(&mut w, &ctx, &p, false)?;
    w.elem("Marker", &enc(&p, marker.as_deref().unwrap_or("")));
    w.boolean("IsTruncated", page.truncated);
    if page.truncated {
        if let Some(last) = page.items.last() {
            w.elem("NextMarker", &enc(&p, last.name()));
        }
    }
    // v1 always lists owners (S3 does; it has no fetch-owner).
    items(&mut w, &ctx, &p, &page, "Contents", true, false);
    Ok(xml(w.finish("ListBucketResult")))
}

/// ListObjectVersions: every version and delete marker, by key, newest first per key.
/// A never-versioned bucket lists each object as its latest version `null`.
pub async fn list_object_versions(ctx: Ctx) -> S3Result<Response<ResponseBody>> {
    let p = params(&ctx)?;
    let key_marker = ctx.query.get("key-marker").filter(|m| !m.is_empty()).map(str::to_owned);
    let version_marker = match ctx.query.get("version-id-marker").filter(|m| !m.is_empty()) {
        None => None,
        Some(_) if key_marker.is_none() => {
            return Err(S3Error::new(
                S3Code::InvalidArgument,
                "A version-id marker cannot be specified without a key marker.",
            ))
        }
        Some(v) => Some(storage::VersionId::parse(v)?),
    };
    let bucket = ctx.bucket()?.clone();
    let store = ctx.state.store.clone();
    let q = storage::VersionQuery {
        prefix: p.prefix.clone(),
        delimiter: p.delimiter.clone(),
        key_marker: key_marker.clone(),
        version_marker,
        max_keys: p.max_keys,
    };
    let page = blocking(move || store.list_versions(&bucket, &q)).await?;
    let mut w = XmlWriter::with_capacity(
        "ListVersionsResult",
        512 + page.versions.iter().map(|v| 320 + 2 * v.key.len()).sum::<usize>(),
    );
    head(&mut w, &ctx, &p, true)?;
    w.elem("KeyMarker", &enc(&p, key_marker.as_deref().unwrap_or("")));
    w.elem("VersionIdMarker", ctx.query.get("version-id-marker").unwrap_or(""));
    w.boolean("IsTruncated", page.truncated);
    if page.truncated {
        if let Some((k, v)) = &page.next {
            w.elem("NextKeyMarker", &enc(&p, k)).elem("NextVersionIdMarker", &v.to_string());
        } else if let Some(cp) = &page.next_prefix {
            w.elem("NextKeyMarker", &enc(&p, cp));
        }
    }
    for v in &page.versions {
        let tag = if v.object.is_some() { "Version" } else { "DeleteMarker" };
        w.open(tag).elem("Key", &enc(&p, &v.key)).elem("VersionId", &v.version_id.to_string());
        w.boolean("IsLatest", v.is_latest).time("LastModified", v.last_modified);
        if let Some((size, etag, class)) = &v.object {
            w.etag("ETag", etag).num("Size", *size).elem("StorageClass", class.as_deref().unwrap_or("STANDARD"));
        }
        owner(&mut w, &ctx);
        w.close(tag);
    }
    for cp in &page.prefixes {
        w.open("CommonPrefixes").elem("Prefix", &enc(&p, cp)).close("CommonPrefixes");
    }
    Ok(xml(w.finish("ListVersionsResult")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for s in ["", "wal_005/000000010000000000000001.lz4", "a b+c/ü"] {
            assert_eq!(token_value(&token_of(s)).ok().as_deref(), Some(s));
            assert!(token_of(s).bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        assert!(token_value("!!!").is_err());
    }
}
