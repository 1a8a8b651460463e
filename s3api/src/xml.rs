//! XML: a small writer for S3 response documents and parsers for the request
//! bodies we accept (CompleteMultipartUpload, Delete, CreateBucketConfiguration).
//!
//! Output rules the SDKs depend on: UTF-8 declaration, the S3 namespace, no empty
//! numeric or boolean elements (they fail to parse), timestamps as ISO-8601 UTC
//! with milliseconds and `Z`.

use bytes::Bytes;
use quick_xml::events::Event;
use quick_xml::Reader;
use storage::{DeleteCondition, ETag, Timestamp};

use crate::civil::civil_from_days;
use crate::error::{S3Code, S3Error, S3Result};

/// The S3 XML namespace.
pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Builds an XML document.
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    /// Starts a document with root element `root` in the S3 namespace.
    pub fn new(root: &str) -> Self {
        let mut buf = String::with_capacity(256);
        buf.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        buf.push_str(root);
        buf.push_str(" xmlns=\"");
        buf.push_str(S3_NS);
        buf.push_str("\">");
        Self { buf }
    }

    /// Starts a document whose root has no namespace (the `Error` document).
    pub fn new_plain(root: &str) -> Self {
        let mut buf = String::with_capacity(256);
        buf.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        buf.push_str(root);
        buf.push('>');
        Self { buf }
    }

    /// `<name>text</name>`, escaped.
    pub fn elem(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        escape_into(&mut self.buf, text);
        self.close(name)
    }

    /// Starts a document like [`XmlWriter::new`] with room for `capacity` bytes, so a
    /// large listing is not copied again each time it outgrows its buffer.
    pub fn with_capacity(root: &str, capacity: usize) -> Self {
        let mut w = Self::new(root);
        w.buf.reserve(capacity);
        w
    }

    /// `<name>` with a number.
    pub fn num(&mut self, name: &str, n: impl Into<u64>) -> &mut Self {
        self.open(name);
        push_u64(&mut self.buf, n.into());
        self.close(name)
    }

    /// `<name>` with a count (a `usize`).
    pub fn count(&mut self, name: &str, n: usize) -> &mut Self {
        self.num(name, n as u64)
    }

    /// `<name>&quot;etag&quot;</name>`: an ETag with its quotes escaped, as S3 writes
    /// it, without building the quoted string first.
    pub fn etag(&mut self, name: &str, etag: &storage::ETag) -> &mut Self {
        self.open(name);
        self.buf.push_str("&quot;");
        escape_into(&mut self.buf, etag.as_str());
        self.buf.push_str("&quot;");
        self.close(name)
    }

    /// `<name>true|false</name>`.
    pub fn boolean(&mut self, name: &str, b: bool) -> &mut Self {
        self.elem(name, if b { "true" } else { "false" })
    }

    /// `<name>` with an ISO-8601 timestamp.
    pub fn time(&mut self, name: &str, t: Timestamp) -> &mut Self {
        self.open(name);
        iso8601_into(&mut self.buf, t);
        self.close(name)
    }

    /// `<name>` only if `text` is `Some`.
    pub fn opt(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.elem(name, t);
        }
        self
    }

    /// Opens an element.
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// Closes an element.
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// Appends escaped text at the current position.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.buf, text);
        self
    }

    /// Closes the root and returns the document.
    pub fn finish(mut self, root: &str) -> Bytes {
        self.close(root);
        Bytes::from(self.buf)
    }
}

/// Bytes that element text can carry as they are.
static PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = false;
        b += 1;
    }
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'&' as usize] = false;
    t[b'<' as usize] = false;
    t[b'>' as usize] = false;
    t[b'"' as usize] = false;
    t[b'\'' as usize] = false;
    t
};

/// Escapes text for element content and attribute values.
pub fn escape_into(out: &mut String, text: &str) {
    // Listings escape every key; almost none needs it.
    if text.bytes().all(|b| PLAIN[b as usize]) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters even escaped as text;
            // S3 sends them as numeric references, which the SDKs accept.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {
                out.push_str(&format!("&#x{:X};", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// `2025-01-02T03:04:05.678Z`.
pub fn iso8601(t: Timestamp) -> String {
    let mut s = String::with_capacity(24);
    iso8601_into(&mut s, t);
    s
}

/// A time as S3 clients send it: ISO 8601 in UTC (`2025-01-02T03:04:05Z`, fractions of a
/// second to the millisecond kept) or an HTTP date (`Thu, 02 Jan 2025 03:04:05 GMT`, what
/// botocore sends for `x-amz-if-match-last-modified-time` and DeleteObjects'
/// `<LastModifiedTime>`). `None` for anything else.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    crate::civil::parse_iso8601(s)
        .map(Timestamp::from_millis)
        .or_else(|| httpdate::parse_http_date(s).ok().map(Timestamp::from_system))
}

/// [`iso8601`], appended to `out`.
pub fn iso8601_into(out: &mut String, t: Timestamp) {
    let ms = t.as_millis();
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        // Outside what four digits hold; S3 never stores such a time, but be exact.
        use std::fmt::Write;
        let _ =
            write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, (sod % 3600) / 60, sod % 60);
        return;
    }
    // Listings write one per key: digits by hand, not through `fmt`.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u32);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, sod / 3600);
    put(14, 2, (sod % 3600) / 60);
    put(17, 2, sod % 60);
    put(20, 3, millis);
    out.push_str(std::str::from_utf8(&b).expect("ASCII digits"));
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&b[i..]).expect("ASCII digits"));
}

/// The error document.
pub fn error_body(code: &str, message: &str, resource: &str, request_id: &str) -> Bytes {
    let mut w = XmlWriter::new_plain("Error");
    w.elem("Code", code).elem("Message", message);
    if !resource.is_empty() {
        w.elem("Resource", resource);
    }
    w.elem("RequestId", request_id);
    w.finish("Error")
}

// ------------------------------------------------------------------ parsing

/// A tiny DOM: enough for the three request bodies we accept.
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn malformed(why: impl std::fmt::Display) -> S3Error {
    S3Error::new(S3Code::MalformedXML, format!("The XML you provided was not well-formed: {why}"))
}

/// Parses a document into nodes by local name, with entities decoded. Depth
/// and size are bounded by the caller's body limit and `MAX_DEPTH`.
fn parse_dom(body: &[u8]) -> S3Result<Node> {
    const MAX_DEPTH: usize = 16;
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Node> = vec![Node::default()];
    loop {
        match reader.read_event().map_err(malformed)? {
            Event::Start(e) => {
                if stack.len() > MAX_DEPTH {
                    return Err(malformed("nesting too deep"));
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                stack.push(Node { name, ..Node::default() });
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let node = Node { name, ..Node::default() };
                stack.last_mut().ok_or_else(|| malformed("unbalanced"))?.children.push(node);
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| malformed("unbalanced"))?;
                stack.last_mut().ok_or_else(|| malformed("unbalanced end tag"))?.children.push(node);
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(malformed)?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(malformed("unclosed element"));
    }
    let mut doc = stack.pop().unwrap_or_default();
    if doc.children.len() != 1 {
        return Err(malformed("expected exactly one root element"));
    }
    Ok(doc.children.remove(0))
}

/// One `<Part>` of a CompleteMultipartUpload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletePart {
    /// `PartNumber`.
    pub number: u32,
    /// `ETag`, quotes removed.
    pub etag: String,
    /// `Checksum*` elements: (algorithm name upper-case, value).
    pub checksums: Vec<(String, String)>,
}

/// Parses `<CompleteMultipartUpload>`; children may come in any order.
pub fn parse_complete(body: &[u8]) -> S3Result<Vec<CompletePart>> {
    let root = parse_dom(body)?;
    if root.name != "CompleteMultipartUpload" {
        return Err(malformed(format!("unexpected root element {}", root.name)));
    }
    let mut parts = Vec::new();
    for p in root.children.iter().filter(|c| c.name == "Part") {
        let number = p
            .child("PartNumber")
            .and_then(|n| n.text.trim().parse::<u32>().ok())
            .ok_or_else(|| malformed("a Part lacks a valid PartNumber"))?;
        let etag = p
            .child("ETag")
            .map(|n| n.text.trim().trim_matches('"').to_owned())
            .ok_or_else(|| malformed("a Part lacks an ETag"))?;
        let checksums = p
            .children
            .iter()
            .filter_map(|c| c.name.strip_prefix("Checksum").map(|a| (a.to_ascii_uppercase(), c.text.trim().to_owned())))
            .filter(|(a, _)| !a.is_empty() && a != "TYPE")
            .collect();
        parts.push(CompletePart { number, etag, checksums });
    }
    if parts.is_empty() {
        return Err(malformed("no Part elements"));
    }
    Ok(parts)
}

/// One `<Object>` of a Delete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTarget {
    /// `Key`.
    pub key: String,
    /// `VersionId`; an empty element is `None` ("the current object").
    pub version_id: Option<String>,
    /// `ETag`, `LastModifiedTime` and `Size`: the object is deleted only if they match.
    pub condition: DeleteCondition,
}

/// Parsed `<Delete>` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// `Quiet`: only errors are reported.
    pub quiet: bool,
    /// Objects to delete.
    pub objects: Vec<DeleteTarget>,
}

/// Parses `<Delete>`.
pub fn parse_delete(body: &[u8]) -> S3Result<DeleteRequest> {
    let root = parse_dom(body)?;
    if root.name != "Delete" {
        return Err(malformed(format!("unexpected root element {}", root.name)));
    }
    let quiet = match root.child("Quiet").map(|q| q.text.trim()) {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(malformed(format!("Quiet must be true or false, not {other:?}"))),
    };
    let mut objects = Vec::new();
    for o in root.children.iter().filter(|c| c.name == "Object") {
        let key = o.child("Key").map(|k| k.text.clone()).ok_or_else(|| malformed("an Object lacks a Key"))?;
        let version_id = o.child("VersionId").map(|v| v.text.trim().to_owned()).filter(|v| !v.is_empty());
        let condition = DeleteCondition {
            etag: o.child("ETag").map(|e| ETag::from_client(e.text.trim())),
            last_modified: match o.child("LastModifiedTime") {
                None => None,
                Some(t) => Some(parse_time(&t.text).ok_or_else(|| {
                    malformed(format!("LastModifiedTime of {key:?} is not a time: {:?}", t.text.trim()))
                })?),
            },
            size: match o.child("Size") {
                None => None,
                Some(n) => Some(n.text.trim().parse::<u64>().map_err(|_| {
                    malformed(format!("Size of {key:?} is not a non-negative integer: {:?}", n.text.trim()))
                })?),
            },
        };
        objects.push(DeleteTarget { key, version_id, condition });
    }
    Ok(DeleteRequest { quiet, objects })
}

/// Parses an optional `<CreateBucketConfiguration>` and returns its
/// `LocationConstraint` (empty body → `None`).
pub fn parse_create_bucket(body: &[u8]) -> S3Result<Option<String>> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let root = parse_dom(body)?;
    if root.name != "CreateBucketConfiguration" {
        return Err(malformed(format!("unexpected root element {}", root.name)));
    }
    Ok(root.child("LocationConstraint").map(|l| l.text.trim().to_owned()).filter(|l| !l.is_empty()))
}

fn root_named(body: &[u8], name: &str) -> S3Result<Node> {
    let root = parse_dom(body)?;
    if root.name != name {
        return Err(malformed(format!("unexpected root element {} (expected {name})", root.name)));
    }
    Ok(root)
}

/// `<VersioningConfiguration><Status>Enabled|Suspended</Status>`. `MfaDelete` is
/// refused: walstore has no MFA, and ignoring it would be a silent downgrade.
pub fn parse_versioning(body: &[u8]) -> S3Result<storage::Versioning> {
    let root = root_named(body, "VersioningConfiguration")?;
    if root.child("MfaDelete").is_some_and(|m| m.text.trim() == "Enabled") {
        return Err(S3Error::new(S3Code::NotImplemented, "MFA Delete is not supported by walstore"));
    }
    match root.child("Status").map(|s| s.text.trim()) {
        Some("Enabled") => Ok(storage::Versioning::Enabled),
        Some("Suspended") => Ok(storage::Versioning::Suspended),
        other => Err(malformed(format!("Status must be Enabled or Suspended, not {other:?}"))),
    }
}

/// `<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>
/// [<Rule><DefaultRetention><Mode/>(<Days/>|<Years/>)</DefaultRetention></Rule>]`.
pub fn parse_object_lock(body: &[u8]) -> S3Result<storage::ObjectLockConfig> {
    let root = root_named(body, "ObjectLockConfiguration")?;
    match root.child("ObjectLockEnabled").map(|s| s.text.trim()) {
        Some("Enabled") => {}
        other => return Err(malformed(format!("ObjectLockEnabled must be Enabled, not {other:?}"))),
    }
    let Some(rule) = root.child("Rule") else { return Ok(storage::ObjectLockConfig::default()) };
    let d = rule.child("DefaultRetention").ok_or_else(|| malformed("a Rule lacks DefaultRetention"))?;
    let mode = d
        .child("Mode")
        .and_then(|m| storage::LockMode::parse(m.text.trim()))
        .ok_or_else(|| malformed("DefaultRetention needs Mode GOVERNANCE or COMPLIANCE"))?;
    let num = |n: &Node| -> S3Result<u32> {
        n.text.trim().parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
            S3Error::new(S3Code::InvalidArgument, "Default retention period must be a positive integer value")
        })
    };
    let period = match (d.child("Days"), d.child("Years")) {
        (Some(n), None) => storage::LockPeriod::Days(num(n)?),
        (None, Some(n)) => storage::LockPeriod::Years(num(n)?),
        _ => return Err(malformed("DefaultRetention needs exactly one of Days and Years")),
    };
    Ok(storage::ObjectLockConfig { default_retention: Some((mode, period)) })
}

/// `<Retention><Mode/><RetainUntilDate/></Retention>`; both absent removes it.
pub fn parse_retention(body: &[u8]) -> S3Result<Option<storage::Retention>> {
    let root = root_named(body, "Retention")?;
    match (root.child("Mode"), root.child("RetainUntilDate")) {
        (None, None) => Ok(None),
        (Some(m), Some(u)) => {
            let mode = storage::LockMode::parse(m.text.trim())
                .ok_or_else(|| malformed(format!("unknown retention mode {:?}", m.text.trim())))?;
            let until = parse_time(&u.text).ok_or_else(|| {
                S3Error::new(S3Code::InvalidArgument, "The retain until date must be provided in ISO 8601 format")
            })?;
            Ok(Some(storage::Retention { mode, until }))
        }
        _ => Err(malformed("Retention needs both Mode and RetainUntilDate")),
    }
}

/// `<LegalHold><Status>ON|OFF</Status></LegalHold>`.
pub fn parse_legal_hold(body: &[u8]) -> S3Result<bool> {
    let root = root_named(body, "LegalHold")?;
    match root.child("Status").map(|s| s.text.trim()) {
        Some("ON") => Ok(true),
        Some("OFF") => Ok(false),
        other => Err(malformed(format!("Status must be ON or OFF, not {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_golden() {
        let b = error_body("NoSuchKey", "The specified key does not exist.", "/bkt/a&b", "REQ1");
        assert_eq!(
            std::str::from_utf8(&b).expect("utf8"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Resource>/bkt/a&amp;b</Resource><RequestId>REQ1</RequestId></Error>"
        );
    }

    #[test]
    fn writer_golden() {
        let mut w = XmlWriter::new("ListBucketResult");
        w.elem("Name", "bkt")
            .num("KeyCount", 2u64)
            .boolean("IsTruncated", false)
            .time("LastModified", Timestamp::from_millis(1_735_787_045_678));
        let s = String::from_utf8(w.finish("ListBucketResult").to_vec()).expect("utf8");
        assert_eq!(
            s,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bkt</Name><KeyCount>2</KeyCount><IsTruncated>false</IsTruncated><LastModified>2025-01-02T03:04:05.678Z</LastModified></ListBucketResult>"
        );
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(Timestamp::from_millis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(Timestamp::from_millis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(Timestamp::from_millis(4_102_444_799_999)), "2099-12-31T23:59:59.999Z");
        // The hand-written digits agree with `fmt` everywhere, including before 1970
        // and past year 9999 (where `fmt` takes over).
        let reference = |ms: i64| {
            let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
            let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let span = if i % 2 == 0 { 253_402_300_800_000 } else { 400_000_000_000_000 };
            let ms = (x >> 11) as i64 % span - if i % 5 == 0 { span / 2 } else { 0 };
            assert_eq!(iso8601(Timestamp::from_millis(ms)), reference(ms), "{ms}");
        }
    }

    #[test]
    fn numbers_and_etags() {
        for n in [0u64, 7, 10, 99, 1000, 4_294_967_296, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        let mut w = XmlWriter::with_capacity("R", 10);
        w.etag("ETag", &storage::ETag::from_md5(&[0xab; 16])).count("MaxKeys", 1000).num("Size", u64::MAX);
        let s = String::from_utf8(w.finish("R").to_vec()).expect("utf8");
        assert!(
            s.ends_with("<ETag>&quot;abababababababababababababababab&quot;</ETag><MaxKeys>1000</MaxKeys><Size>18446744073709551615</Size></R>"),
            "{s}"
        );
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        escape_into(&mut s, "a<b>&\"'\u{1}é");
        assert_eq!(s, "a&lt;b&gt;&amp;&quot;&apos;&#x1;é");
        // Text with nothing to escape is copied as it is (the fast path), tabs and
        // line breaks included; one special byte anywhere takes the slow path.
        for (text, want) in [("wal_005/0001.lz4\t\r\né", "wal_005/0001.lz4\t\r\né"), ("x\u{7f}>", "x\u{7f}&gt;")] {
            let mut s = String::from("<");
            escape_into(&mut s, text);
            assert_eq!(s, format!("<{want}"));
        }
    }

    #[test]
    fn complete_body_as_walg_sends_it() {
        let body = br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber><ETag>&#34;etag-part-1&#34;</ETag></Part><Part><ETag>&#34;etag-part-2&#34;</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>"#;
        let parts = parse_complete(body).expect("parse");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], CompletePart { number: 1, etag: "etag-part-1".into(), checksums: vec![] });
        assert_eq!(parts[1].number, 2);
        assert_eq!(parts[1].etag, "etag-part-2");
    }

    #[test]
    fn complete_body_with_checksums() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUpload><Part><ETag>"a"</ETag><ChecksumCRC32>AAAAAQ==</ChecksumCRC32><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>"#;
        let parts = parse_complete(body).expect("parse");
        assert_eq!(parts[0].checksums, vec![("CRC32".to_string(), "AAAAAQ==".to_string())]);
    }

    #[test]
    fn delete_body_with_empty_version_ids() {
        let body = br#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><VersionId></VersionId><Key>pfx/wal_005/000000010000000000000001.lz4</Key></Object><Object><Key>a&amp;b</Key><VersionId/></Object></Delete>"#;
        let d = parse_delete(body).expect("parse");
        assert!(!d.quiet);
        assert_eq!(
            d.objects,
            vec![
                DeleteTarget {
                    key: "pfx/wal_005/000000010000000000000001.lz4".into(),
                    version_id: None,
                    condition: DeleteCondition::default()
                },
                DeleteTarget { key: "a&b".into(), version_id: None, condition: DeleteCondition::default() },
            ]
        );
        let q =
            parse_delete(b"<Delete><Quiet>true</Quiet><Object><Key>k</Key><VersionId>v1</VersionId></Object></Delete>")
                .expect("parse");
        assert!(q.quiet);
        assert_eq!(q.objects[0].version_id.as_deref(), Some("v1"));
    }

    #[test]
    fn delete_body_with_conditions() {
        // As botocore writes them: LastModifiedTime is an HTTP date (rfc822) in this shape.
        let body = br#"<Delete><Object><Key>a</Key><ETag>"abc"</ETag><LastModifiedTime>Thu, 02 Jan 2025 03:04:05 GMT</LastModifiedTime><Size>12</Size></Object><Object><Key>b</Key><LastModifiedTime>2025-01-02T03:04:05.678Z</LastModifiedTime></Object></Delete>"#;
        let d = parse_delete(body).expect("parse");
        assert_eq!(
            d.objects[0].condition,
            DeleteCondition {
                etag: Some(ETag::from_client("\"abc\"")),
                last_modified: Some(Timestamp::from_millis(1_735_787_045_000)),
                size: Some(12),
            }
        );
        assert_eq!(d.objects[1].condition.last_modified, Some(Timestamp::from_millis(1_735_787_045_678)));
        for bad in [
            "<Delete><Object><Key>a</Key><Size>-1</Size></Object></Delete>",
            "<Delete><Object><Key>a</Key><LastModifiedTime>yesterday</LastModifiedTime></Object></Delete>",
        ] {
            assert_eq!(parse_delete(bad.as_bytes()).expect_err(bad).code, S3Code::MalformedXML, "{bad}");
        }
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            &b"<Delete><Object><Key>k</Key></Delete>"[..],
            b"not xml",
            b"<Other/>",
            b"<CompleteMultipartUpload></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><PartNumber>-1</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>",
            b"",
        ] {
            let a = parse_delete(bad).err().map(|e| e.code);
            let b = parse_complete(bad).err().map(|e| e.code);
            assert_eq!(a, Some(S3Code::MalformedXML), "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(b, Some(S3Code::MalformedXML), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse_delete(deep.as_bytes()).err().map(|e| e.code), Some(S3Code::MalformedXML));
    }

    #[test]
    fn create_bucket_config() {
        assert_eq!(parse_create_bucket(b"").expect("empty"), None);
        assert_eq!(
            parse_create_bucket(b"<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>de01</LocationConstraint></CreateBucketConfiguration>").expect("parse"),
            Some("de01".into())
        );
        assert!(parse_create_bucket(b"<Nope/>").is_err());
    }
}
