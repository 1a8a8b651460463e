//! A small admin client: signs requests with SigV4 (`aws-sigv4`, the AWS SDK's
//! signer) and speaks HTTP/1.1 (or HTTPS with rustls) to a running server on
//! the given endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sha2::{Digest, Sha256};

/// Where and as whom to connect.
pub struct Client {
    host: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    access_key: String,
    secret_key: String,
}

/// A TLS configuration trusting exactly the CA certificates in `ca` (PEM).
fn tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read CA certificate {}: {e}", ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad CA certificate {}: {e}", ca.display()))?;
    for c in certs {
        roots.add(c).map_err(|e| format!("bad CA certificate {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Characters left unencoded in query values.
const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl Client {
    /// A client for `http://host:port`, or `https://host:port` verified
    /// against the CA certificate file `ca`.
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str, ca: Option<&Path>) -> Result<Self, String> {
        let (host, tls) = if let Some(h) = endpoint.strip_prefix("http://") {
            (h, None)
        } else if let Some(h) = endpoint.strip_prefix("https://") {
            let ca = ca.ok_or_else(|| {
                format!("endpoint {endpoint:?} is https: pass --ca-cert FILE (or WALSTORE_CA_CERT), the CA that signed the server's certificate")
            })?;
            let name = h.trim_end_matches('/');
            let name = match name.rsplit_once(':') {
                Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
                _ => name,
            };
            let name = name.trim_start_matches('[').trim_end_matches(']');
            let sn = ServerName::try_from(name.to_owned()).map_err(|e| format!("endpoint host {name:?}: {e}"))?;
            (h, Some((tls_config(ca)?, sn)))
        } else {
            return Err(format!("endpoint {endpoint:?} must start with http:// or https://"));
        };
        let mut host = host.trim_end_matches('/').to_owned();
        if !host.contains(':') || host.ends_with(']') {
            host.push_str(if tls.is_some() { ":443" } else { ":80" });
        }
        Ok(Self { host, tls, access_key: access_key.to_owned(), secret_key: secret_key.to_owned() })
    }

    /// Sends a signed request; returns (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| {
                (
                    percent_encoding::utf8_percent_encode(k, QUERY).to_string(),
                    percent_encoding::utf8_percent_encode(v, QUERY).to_string(),
                )
            })
            .collect();
        q.sort();
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path_and_query = if qs.is_empty() { path.to_owned() } else { format!("{path}?{}", qs.join("&")) };
        let payload = hex::encode(Sha256::digest(body));
        let identity: Identity =
            Credentials::new(&self.access_key, &self.secret_key, None, None, "walstore-cli").into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{}{path_and_query}", self.host);
        let len = body.len().to_string();
        let headers = [("host", self.host.as_str()), ("content-length", len.as_str())];
        let signable = SignableRequest::new(method, uri.as_str(), headers.iter().copied(), SignableBody::Bytes(body))
            .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| format!("signing: {e}"))?.into_parts();
        let mut req = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\nConnection: close\r\n",
            self.host
        );
        for (name, value) in instructions.headers() {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if !instructions.headers().any(|(n, _)| n.eq_ignore_ascii_case("x-amz-content-sha256")) {
            req.push_str(&format!("x-amz-content-sha256: {payload}\r\n"));
        }
        req.push_str("\r\n");
        let tcp = TcpStream::connect(&self.host).map_err(|e| format!("cannot connect to {}: {e}", self.host))?;
        tcp.set_read_timeout(Some(Duration::from_secs(600))).map_err(|e| e.to_string())?;
        let raw = match &self.tls {
            None => exchange(tcp, req.as_bytes(), body)?,
            Some((cfg, name)) => {
                let conn = rustls::ClientConnection::new(cfg.clone(), name.clone())
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                exchange(rustls::StreamOwned::new(conn, tcp), req.as_bytes(), body)?
            }
        };
        parse_response(&raw)
    }
}

/// Writes the request and reads the whole answer (the server closes the
/// connection after it: `Connection: close`).
fn exchange<S: Read + Write>(mut s: S, head: &[u8], body: &[u8]) -> Result<Vec<u8>, String> {
    s.write_all(head).and_then(|_| s.write_all(body)).and_then(|_| s.flush()).map_err(|e| format!("sending: {e}"))?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        // A peer that closes without a TLS close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(format!("reading the answer: {e}")),
    }
}

fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("malformed HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("malformed status line")?;
    let chunked =
        head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).map_err(|e| e.to_string())?;
            if size == 0 {
                break;
            }
            let start = nl + 2;
            out.extend_from_slice(rest.get(start..start + size).ok_or("truncated chunk")?);
            rest = rest.get(start + size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").expect("parse");
        assert_eq!((s, b.as_slice()), (200, &b"ok"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("parse");
        assert_eq!((s, b.as_slice()), (409, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
        assert!(Client::new("https://x", "a", "b", None).is_err(), "https needs a CA");
        assert!(Client::new("ftp://x", "a", "b", None).is_err());
        assert_eq!(Client::new("http://h", "a", "b", None).expect("client").host, "h:80");
        assert_eq!(Client::new("http://h:9000/", "a", "b", None).expect("client").host, "h:9000");
    }
}
