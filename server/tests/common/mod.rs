//! Spawns the real `walstore` binary on 127.0.0.1:0 with a temporary data
//! directory, and builds clients for it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub const ACCESS_KEY: &str = "AKIATESTWALSTORE0001";
pub const SECRET_KEY: &str = "test-secret-key-0123456789abcdefghijklmnop";
pub const REGION: &str = "de01";
/// Hex SHA-256 of the empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A running server process.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    /// A command the server is started through (e.g. `prlimit --nofile=…`), which must exec it.
    pub wrapper: Vec<String>,
    /// Extra environment of the process (e.g. `WALSTORE_FAILPOINTS`), applied at every spawn.
    pub env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server on a fresh temp dir (kept alive by the returned guard).
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::start_wrapped(dir, extra, &[])
    }

    /// Starts a server through `wrapper` (a command that execs the server with its arguments).
    pub fn start_wrapped(dir: &Path, extra: &[&str], wrapper: &[&str]) -> Server {
        let mut s = Server::unstarted(dir, extra);
        s.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        s.spawn();
        s
    }

    /// Starts a server with extra environment variables (kept for restarts).
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut s = Server::unstarted(dir, extra);
        s.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s.spawn();
        s
    }

    fn unstarted(dir: &Path, extra: &[&str]) -> Server {
        Server {
            child: None,
            port: 0,
            data_dir: dir.join("data"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            wrapper: Vec::new(),
            env: Vec::new(),
        }
    }

    /// (Re)starts the process on the same data dir.
    pub fn spawn(&mut self) {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_walstore"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_walstore")),
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", "127.0.0.1:0", "--region", REGION])
            .args(&self.extra)
            .env("WALSTORE_ROOT_ACCESS_KEY", ACCESS_KEY)
            .env("WALSTORE_ROOT_SECRET_KEY", SECRET_KEY)
            .env("WALSTORE_LOG_LEVEL", std::env::var("WALSTORE_TEST_LOG_LEVEL").unwrap_or_else(|_| "warn".into()))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn walstore");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(30)).ok().flatten().expect("walstore did not report its port");
        self.port = port;
        self.child = Some(child);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        client_for(&self.endpoint(), ACCESS_KEY, SECRET_KEY)
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        for _ in 0..400 {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok().and_then(|s| s.code())
    }

    /// Runs `walstore <args>` against this data dir (server must be stopped).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_walstore"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("run walstore cli")
    }

    /// Number of finished blob files.
    pub fn blob_files(&self) -> usize {
        let mut n = 0;
        let root = self.data_dir.join("blobs");
        let Ok(l1) = std::fs::read_dir(&root) else { return 0 };
        for a in l1.flatten() {
            if a.file_name() == "tmp" {
                continue;
            }
            for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
                n += std::fs::read_dir(b.path()).map(|d| d.count()).unwrap_or(0);
            }
        }
        n
    }

    /// Files left in the staging directory.
    pub fn staging_files(&self) -> usize {
        std::fs::read_dir(self.data_dir.join("blobs/tmp")).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An SDK client with path-style addressing and the SDK's default settings
/// otherwise (checksums, retries).
pub fn client_for(endpoint: &str, key: &str, secret: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Deterministic pseudo-random bytes.
pub fn bytes_of(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A raw HTTP/1.1 exchange on loopback (for presigned URLs and malformed requests).
pub fn raw_http(port: u16, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    (status, headers, body)
}

/// `YYYYMMDDTHHMMSSZ` (SigV4's x-amz-date) of `t`, UTC, without a date crate.
#[allow(dead_code)] // not every test binary signs requests by hand
pub fn amz_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs.rem_euclid(86_400);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The head of a request signed with the root key (header auth; `host`,
/// `x-amz-content-sha256` and `x-amz-date` signed) for a raw exchange: request line and
/// headers, ending with the empty line. `payload` is the x-amz-content-sha256 value
/// (`UNSIGNED-PAYLOAD` or a hex digest); `headers` are sent unsigned (no `x-amz-*` ones).
pub fn signed_head(port: u16, method: &str, path_and_query: &str, headers: &[(&str, &str)], payload: &str) -> String {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let hmac = |key: &[u8], data: &[u8]| -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let amz = amz_date(std::time::SystemTime::now());
    let date = &amz[..8];
    let host = format!("127.0.0.1:{port}");
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| if p.contains('=') { p.to_owned() } else { format!("{p}=") })
        .collect();
    pairs.sort();
    let canonical = format!(
        "{method}\n{path}\n{}\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}",
        pairs.join("&")
    );
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let sts = format!("AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
    let mut key = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), date.as_bytes());
    for part in [REGION.as_bytes(), b"s3", b"aws4_request"] {
        key = hmac(&key, part);
    }
    let sig = hex::encode(hmac(&key, sts.as_bytes()));
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nX-Amz-Date: {amz}\r\nX-Amz-Content-Sha256: {payload}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}\r\n"
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Resident memory of a process in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Raises this process's soft open-files limit to the hard limit (tests that hold many
/// sockets), returning the new soft limit.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let target = hard.min(1 << 20);
    if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        return target;
    }
    soft
}

/// A raw HTTP/1.1 request signed with the root key by the `aws-sigv4` crate as aws-sdk-go
/// v1 (WAL-G) signs: header auth, the body's SHA-256 as `x-amz-content-sha256`,
/// `content-length` signed. For a raw exchange with [`raw_http`]: `query` pairs are
/// URI-encoded here, `extra` headers are sent and signed.
pub fn signed_request(
    port: u16,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: &[u8],
    extra: &[(&str, String)],
) -> Vec<u8> {
    use aws_credential_types::Credentials as Creds;
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    let enc = |s: &str, slash: bool| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b'/' if slash => "/".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let host = format!("127.0.0.1:{port}");
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", enc(k, false), enc(v, false))).collect();
    let target = if q.is_empty() { enc(path, true) } else { format!("{}?{}", enc(path, true), q.join("&")) };
    let uri = format!("http://{host}{target}");
    let mut headers: Vec<(String, String)> =
        vec![("host".into(), host.clone()), ("content-length".into(), body.len().to_string())];
    headers.extend(extra.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())));
    let identity: Identity = Creds::new(ACCESS_KEY, SECRET_KEY, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        method,
        &uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(instructions.headers()) {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

// ------------------------------------------------------------------------------------------
// WAL-G's object layout

/// An lz4 frame, as WAL-G compresses WAL and backups by default.
pub fn lz4(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
    e.write_all(data).expect("lz4");
    e.finish().expect("lz4")
}

/// PostgreSQL's WAL file name of segment `n` of timeline `tl` (16 MiB segments).
pub fn seg_name(tl: u32, n: u64) -> String {
    format!("{tl:08X}{:08X}{:08X}", n / 256, n % 256)
}

/// The key of a segment as WAL-G uploads it (lz4) in repository `repo` (`""` or ending in `/`).
pub fn seg_key(repo: &str, tl: u32, n: u64) -> String {
    format!("{repo}wal_005/{}.lz4", seg_name(tl, n))
}

/// PUT `body` to `bucket/key`; the S3 error code and message on failure.
pub async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let se = e.into_service_error();
            format!("{}: {}", se.code().unwrap_or(""), se.message().unwrap_or(""))
        })
}

/// A complete full backup laid out as WAL-G writes it (tar part, `metadata.json`, stop
/// sentinel last) on timeline 1, starting in segment `start_seg` and finishing in
/// `finish_seg` (16 MiB segments). Returns its name.
pub async fn walg_backup(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    repo: &str,
    start_seg: u64,
    finish_seg: u64,
    permanent: bool,
) -> String {
    const SEG: u64 = 16 << 20;
    let name = format!("base_{}", seg_name(1, start_seg));
    let (start, finish) = (start_seg * SEG + 0x28, finish_seg * SEG + 0x100);
    let dir = format!("{repo}basebackups_005/{name}");
    put(c, bucket, &format!("{dir}/tar_partitions/part_001.tar.lz4"), lz4(&bytes_of(start_seg, 4096)))
        .await
        .expect("tar");
    let meta =
        format!(r#"{{"start_lsn":{start},"finish_lsn":{finish},"is_permanent":{permanent},"system_identifier":7}}"#);
    put(c, bucket, &format!("{dir}/metadata.json"), meta.into_bytes()).await.expect("metadata");
    let sentinel = format!(
        r#"{{"LSN":{start},"FinishLSN":{finish},"SystemIdentifier":7,"PgVersion":150000,"IsPermanent":{permanent},"Version":2}}"#
    );
    put(c, bucket, &format!("{repo}basebackups_005/{name}_backup_stop_sentinel.json"), sentinel.into_bytes())
        .await
        .expect("sentinel");
    name
}

/// `walstore <args>` against the running server `srv` with the root key, `--json`:
/// (success, JSON output, everything printed).
pub fn cli_json(srv: &Server, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_walstore"))
        .args(args)
        .args(["--endpoint", &srv.endpoint(), "--json"])
        .env("WALSTORE_ROOT_ACCESS_KEY", ACCESS_KEY)
        .env("WALSTORE_ROOT_SECRET_KEY", SECRET_KEY)
        .output()
        .expect("run walstore cli");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), v, format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}
