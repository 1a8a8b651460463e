//! Limits under hostile and slow clients, against the real binary on 127.0.0.1:0: request
//! head size, XML body size, keys per DeleteObjects, part numbers, key length, the header
//! (and keep-alive idle) timeout, stalled and trickling request bodies, clients that stop
//! reading a response, the connection cap, and 1,000 slowloris connections next to a 16 MiB
//! PUT. Every loop is bounded in count and time; figures are printed (`--nocapture`).

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use common::{bytes_of, raise_open_files_limit, rss_kib, signed_head, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on a raw connection.
struct Answer {
    /// None when the server closed without answering.
    status: Option<u16>,
    text: String,
    /// From the end of writing until the server closed the connection.
    took: Duration,
}

impl Answer {
    fn code(&self) -> &str {
        self.text.split("<Code>").nth(1).and_then(|r| r.split("</Code>").next()).unwrap_or("")
    }
}

fn parse(buf: &[u8], took: Duration) -> Answer {
    let text = String::from_utf8_lossy(buf).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok());
    Answer { status, text, took }
}

/// Writes `request` (the server may answer and close before taking all of it), then reads
/// until the server closes, for at most `wait`.
async fn exchange(port: u16, request: &[u8], wait: Duration) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let _ = tokio::time::timeout(wait, s.write_all(request)).await;
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut buf)).await;
    parse(&buf, start.elapsed())
}

fn probe_with_padding(pad: usize) -> Vec<u8> {
    format!("GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n", "a".repeat(pad))
        .into_bytes()
}

fn sdk_code<T, E: ProvideErrorMetadata>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "accepted".into(),
        Err(e) => e.code().unwrap_or("no code").to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_memory_stays_flat() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &[]);
    let wait = Duration::from_secs(10);
    // Under the 64 KiB default: served. Over it: 431, connection closed.
    assert_eq!(exchange(srv.port, &probe_with_padding(60 << 10), wait).await.status, Some(200));
    let a = exchange(srv.port, &probe_with_padding(70 << 10), wait).await;
    assert_eq!(a.status, Some(431), "{}", a.text);

    // 300 requests with 1 MiB of headers each: the server reads at most 64 KiB of each,
    // answers 431 (or has closed before the client finished writing), and does not grow.
    let pid = srv.child.as_ref().expect("running").id();
    let before = rss_kib(pid);
    let started = Instant::now();
    let (mut refused, mut closed) = (0, 0);
    let huge = probe_with_padding(1 << 20);
    for _ in 0..300 {
        assert!(started.elapsed() < Duration::from_secs(120), "bounded in time");
        match exchange(srv.port, &huge, wait).await.status {
            Some(431) => refused += 1,
            None => closed += 1,
            other => panic!("a 1 MiB head was answered {other:?}"),
        }
    }
    let after = rss_kib(pid);
    println!(
        "head limit: 300 heads of 1 MiB: {refused} × 431, {closed} closed early; server RSS {before} KiB -> {after} KiB in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(refused > 0, "at least some 431 answers reach the client");
    assert!(after < before + 16 * 1024, "RSS grew from {before} KiB to {after} KiB");

    // Configurable.
    let dir2 = tempfile::tempdir().expect("tmp");
    let small = Server::start(dir2.path(), &["--max-header-size", "16KiB"]);
    assert_eq!(exchange(small.port, &probe_with_padding(12 << 10), wait).await.status, Some(200));
    assert_eq!(exchange(small.port, &probe_with_padding(20 << 10), wait).await.status, Some(431));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_body_size_keys_per_delete_part_numbers_and_key_length() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let wait = Duration::from_secs(10);
    let over = (4 << 20) + 1;

    // XML bodies announced larger than 4 MiB are refused before a byte of them is read (the
    // bodies are never sent: an answer after the head proves it).
    let upload = c.create_multipart_upload().bucket("bkt").key("mp").send().await.expect("create");
    let upload_id = upload.upload_id().expect("id").to_owned();
    for (what, method, target) in [
        ("DeleteObjects", "POST", "/bkt?delete".to_owned()),
        ("CompleteMultipartUpload", "POST", format!("/bkt/mp?uploadId={upload_id}")),
        ("CreateBucket", "PUT", "/newbucket".to_owned()),
    ] {
        let head = signed_head(
            srv.port,
            method,
            &target,
            &[("Content-Length", &over.to_string()), ("Connection", "close")],
            "UNSIGNED-PAYLOAD",
        );
        let a = exchange(srv.port, head.as_bytes(), wait).await;
        assert_eq!((a.status, a.code()), (Some(400), "MalformedXML"), "{what}: {}", a.text);
        assert!(a.took < Duration::from_secs(5), "{what} was answered without waiting for the body");
    }
    // Without a Content-Length (chunked transfer encoding) the limit holds while reading.
    let mut req = signed_head(
        srv.port,
        "POST",
        "/bkt?delete",
        &[("Transfer-Encoding", "chunked"), ("Connection", "close")],
        "UNSIGNED-PAYLOAD",
    )
    .into_bytes();
    let piece = vec![b' '; 1 << 20];
    for _ in 0..5 {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(&piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let a = exchange(srv.port, &req, wait).await;
    assert_eq!((a.status, a.code()), (Some(400), "MalformedXML"), "{}", a.text);

    // At most 1000 keys per DeleteObjects (S3 answers MalformedXML beyond).
    let ids = |n: usize| -> Delete {
        let objects =
            (0..n).map(|i| ObjectIdentifier::builder().key(format!("k{i}")).build().expect("id")).collect::<Vec<_>>();
        Delete::builder().set_objects(Some(objects)).quiet(true).build().expect("delete")
    };
    assert_eq!(sdk_code(c.delete_objects().bucket("bkt").delete(ids(1001)).send().await), "MalformedXML");
    assert_eq!(sdk_code(c.delete_objects().bucket("bkt").delete(ids(1000)).send().await), "accepted");

    // Part numbers 1..=10000 (S3 answers InvalidArgument outside).
    let part = |n: i32| {
        c.upload_part().bucket("bkt").key("mp").upload_id(&upload_id).part_number(n).body(ByteStream::from_static(b"p"))
    };
    assert_eq!(sdk_code(part(10_001).send().await), "InvalidArgument");
    assert_eq!(sdk_code(part(0).send().await), "InvalidArgument");
    assert_eq!(sdk_code(part(10_000).send().await), "accepted");

    // Keys of at most 1024 bytes (S3 answers KeyTooLongError beyond).
    let put = |key: String| c.put_object().bucket("bkt").key(key).body(ByteStream::from_static(b"x"));
    assert_eq!(sdk_code(put("k".repeat(1025)).send().await), "KeyTooLongError");
    assert_eq!(sdk_code(put("é".repeat(513)).send().await), "KeyTooLongError", "bytes, not characters");
    assert_eq!(sdk_code(put("k".repeat(1024)).send().await), "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_silent_and_slowloris_connections_are_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--header-timeout", "2s"]);
    let limit = Duration::from_secs(2);

    // Idle keep-alive: one request, then nothing.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.expect("connect");
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    let idle = start.elapsed();
    assert!(matches!(rest, Ok(Ok(0)) | Ok(Err(_))), "closed by the server");
    assert!(idle >= limit - Duration::from_millis(200) && idle < limit * 2, "idle connection closed after {idle:?}");

    // Silent: connects, sends nothing.
    let a = exchange(srv.port, b"", Duration::from_secs(10)).await;
    assert!(a.took < limit * 2, "silent connection closed after {:?}", a.took);

    // Slowloris: a header byte every 100 ms, never finishing.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.expect("connect");
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
    let start = Instant::now();
    let mut answer = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        if s.write_all(b"a").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read_to_end(&mut answer)).await {
            Ok(_) => break, // closed (after a 408, or without an answer)
            Err(_) => continue,
        }
    }
    let cut = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    println!(
        "header timeout 2 s: idle keep-alive closed after {idle:.1?}, slowloris cut after {cut:.1?} ({:?})",
        text.lines().next()
    );
    assert!(cut < limit * 2, "slowloris connection lived {cut:?}");
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickling_bodies_are_cut_off_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt", "--body-timeout", "2s"]);
    let c = srv.client();
    let limit = Duration::from_secs(2);
    let wait = Duration::from_secs(15);

    // Stalled: headers, 100 KiB of 1 MiB, then nothing.
    let mut req = signed_head(
        srv.port,
        "PUT",
        "/bkt/stalled",
        &[("Content-Length", "1048576"), ("Connection", "close")],
        "UNSIGNED-PAYLOAD",
    )
    .into_bytes();
    req.extend_from_slice(&bytes_of(1, 100 << 10));
    let stalled = exchange(srv.port, &req, wait).await;
    assert_eq!((stalled.status, stalled.code()), (Some(400), "RequestTimeout"), "{}", stalled.text);
    assert!(stalled.took < limit * 2, "stalled body cut after {:?}", stalled.took);

    // Trickling: a byte every 150 ms never pauses 2 s, but falls far behind 1 KiB/s.
    let head = signed_head(
        srv.port,
        "PUT",
        "/bkt/trickled",
        &[("Content-Length", "1000"), ("Connection", "close")],
        "UNSIGNED-PAYLOAD",
    );
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(20) && sent < 1000 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        sent += 1;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(150), s.read_buf(&mut answer)).await {
            break; // the answer (or the close) has begun
        }
    }
    let trickle = start.elapsed();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut answer)).await;
    let trickled = parse(&answer, trickle);
    assert_eq!((trickled.status, trickled.code()), (Some(400), "RequestTimeout"), "{}", trickled.text);
    assert!(trickle < limit * 2, "trickling body cut after {trickle:?} ({sent} bytes sent)");

    // Slow but steady: 64 KiB a second for 4 s (pauses of 1 s, 64 KiB/s) is not cut off.
    let body = bytes_of(2, 256 << 10);
    let head = signed_head(
        srv.port,
        "PUT",
        "/bkt/steady",
        &[("Content-Length", &body.len().to_string()), ("Connection", "close")],
        "UNSIGNED-PAYLOAD",
    );
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    let start = Instant::now();
    for piece in body.chunks(64 << 10) {
        s.write_all(piece).await.expect("piece");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut answer)).await;
    let steady = parse(&answer, start.elapsed());
    assert_eq!(steady.status, Some(200), "{}", steady.text);

    // Nothing stored from the refused bodies, no staging file left behind.
    for key in ["stalled", "trickled"] {
        let e = c.head_object().bucket("bkt").key(key).send().await.expect_err("not stored");
        assert!(e.into_service_error().is_not_found(), "{key}");
    }
    let got = c.get_object().bucket("bkt").key("steady").send().await.expect("steady");
    assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), &body[..]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.staging_files() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(srv.staging_files(), 0, "staging files left");

    // A client that stops taking a response: the GET is aborted after the body timeout
    // instead of holding a server thread.
    let size = 48 << 20;
    let big = bytes_of(3, size);
    c.put_object().bucket("bkt").key("big").body(ByteStream::from(big.clone())).send().await.expect("put");
    let head = signed_head(srv.port, "GET", "/bkt/big", &[("Connection", "close")], common::EMPTY_SHA256);
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    let mut first = vec![0u8; 4096];
    let n = s.read(&mut first).await.expect("status line");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(limit * 3).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut rest)).await;
    let got = n + rest.len();
    println!(
        "body timeout 2 s: stalled PUT cut after {:.1?}, trickling PUT ({sent} bytes) after {trickle:.1?}, \
         steady 64 KiB/s PUT accepted in {:.1?}; a reader pausing 6 s got {} of {} MiB",
        stalled.took,
        steady.took,
        got >> 20,
        size >> 20
    );
    assert!(got < size, "the stalled reader's response was aborted");
    let whole = c.get_object().bucket("bkt").key("big").send().await.expect("get");
    assert_eq!(whole.body.collect().await.expect("body").into_bytes().len(), size, "others are served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_slowdown_and_are_closed() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt", "--max-connections", "8"]);
    let wait = Duration::from_secs(10);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(("127.0.0.1", srv.port)).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let a = exchange(srv.port, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", wait).await;
    assert_eq!((a.status, a.code()), (Some(503), "SlowDown"), "{}", a.text);
    assert!(a.text.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"), "{}", a.text);
    assert!(start.elapsed() < Duration::from_secs(2), "answered at once and closed");

    // A slot freed is a slot served.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = exchange(srv.port, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait).await;
        if a.status == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came free: {}", a.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The SDK (which retries 503 SlowDown) works again; the metrics tell what happened.
    srv.client().put_object().bucket("bkt").key("k").body(ByteStream::from_static(b"v")).send().await.expect("put");
    let m = exchange(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait).await;
    let value = |name: &str| -> f64 {
        m.text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(value("walstore_connections_refused_total ") >= 1.0);
    assert!(value("walstore_connections_open ") >= 1.0, "the scrape's own connection");
}

/// The soft open-files limit of a process (Linux).
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line");
    line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).expect("soft limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_and_bounds_the_connection_cap() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        println!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    // Started with a soft limit of 256 under a hard one of 4096: raised to 4096.
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start_wrapped(dir.path(), &[], &["prlimit", "--nofile=256:4096"]);
    assert_eq!(soft_nofile(srv.child.as_ref().expect("running").id()), 4096);
    drop(srv);

    // A hard limit of 1024 leaves room for 1024 - 768 = 256 connections, not 4096: the 257th
    // is refused cleanly instead of failing requests for want of descriptors.
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start_wrapped(dir.path(), &[], &["prlimit", "--nofile=1024:1024"]);
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(TcpStream::connect(("127.0.0.1", srv.port)).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = exchange(srv.port, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(10)).await;
    assert_eq!((a.status, a.code()), (Some(503), "SlowDown"), "{}", a.text);
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = exchange(
            srv.port,
            b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        if a.status == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came free: {}", a.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_16mib_put_is_prompt_while_1000_slowloris_connections_trickle_headers() {
    const LORIS: usize = 1000;
    let nofile = raise_open_files_limit();
    assert!(nofile > LORIS as u64 + 200, "the test needs {} open files, the limit is {nofile}", LORIS + 200);
    let dir = tempfile::tempdir().expect("tmp");
    // Default limits, except a header timeout short enough to watch it end the attack.
    let srv = Server::start(dir.path(), &["--bucket", "bkt", "--header-timeout", "6s"]);
    let c = srv.client();
    let body = bytes_of(7, 16 << 20);
    let put = |key: &'static str| c.put_object().bucket("bkt").key(key).body(ByteStream::from(body.clone())).send();
    let t = Instant::now();
    put("baseline").await.expect("baseline put");
    let baseline = t.elapsed();

    // 1,000 connections, each sending its request head one byte every 500 ms; each notes when
    // the server closed it. Bounded: 20 s.
    let started = Instant::now();
    let mut loris = Vec::new();
    for i in 0..LORIS {
        let port = srv.port;
        loris.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            let head = format!("PUT /bkt/loris-{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            let mut tail = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
            let mut sink = [0u8; 1024];
            while started.elapsed() < Duration::from_secs(20) {
                let byte = [tail.next().unwrap_or(b'a')];
                if s.write_all(&byte).await.is_err() {
                    return Some(started.elapsed());
                }
                match tokio::time::timeout(Duration::from_millis(500), s.read(&mut sink)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => {} // a 408 on its way; the close follows
                    Err(_) => {}
                }
            }
            None
        }));
    }
    // Wait (bounded) until the server holds them all.
    let mut open = 0.0;
    while open < LORIS as f64 && started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = exchange(
            srv.port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        open = m
            .text
            .lines()
            .find_map(|l| l.strip_prefix("walstore_connections_open ").and_then(|v| v.trim().parse().ok()))
            .expect("walstore_connections_open");
    }

    let t = Instant::now();
    put("under-attack").await.expect("put under attack");
    let under_attack = t.elapsed();
    let got = c.get_object().bucket("bkt").key("under-attack").send().await.expect("get");
    assert_eq!(got.body.collect().await.expect("body").into_bytes().len(), body.len());

    let mut closed_at = Vec::new();
    for l in loris {
        if let Some(at) = l.await.expect("loris task") {
            closed_at.push(at);
        }
    }
    closed_at.sort();
    let (first, last) = (closed_at.first().copied().unwrap_or_default(), closed_at.last().copied().unwrap_or_default());
    println!(
        "slowloris: {LORIS} connections trickling headers ({open} open at the server); 16 MiB PUT {under_attack:.2?} \
         (without them {baseline:.2?}); the server closed {} of them between {first:.1?} and {last:.1?} after they started \
         (header timeout 6 s)",
        closed_at.len()
    );
    assert!(open >= LORIS as f64, "the slowloris connections were being served ({open} open)");
    assert!(under_attack < Duration::from_secs(5), "16 MiB PUT took {under_attack:?} under slowloris");
    assert_eq!(closed_at.len(), LORIS, "every slowloris connection was closed by the server");
    assert!(last < Duration::from_secs(10), "the header timeout ended them (last at {last:?})");
}
