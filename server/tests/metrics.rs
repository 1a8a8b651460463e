//! `GET /metrics` of a live server: exactly the families `deploy/metrics.txt`
//! documents (the dashboard and alert rules are checked against that list by
//! `tests/test_deploy.py`), counters typed as counters, the bearer token, and
//! values that follow what happens to a WAL-G repository.

mod common;

use std::collections::BTreeSet;

use aws_sdk_s3::primitives::ByteStream;
use common::{raw_http, Server};

const SEG: u64 = 16 << 20;
const TOKEN: &str = "scrape-token-0123";
const REPO: &str = "spilo/c1/";

/// Segment `n` of timeline 1.
fn seg_key1(repo: &str, n: u64) -> String {
    common::seg_key(repo, 1, n)
}

async fn put(c: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) {
    c.put_object().bucket("pgb").key(key).body(ByteStream::from(body)).send().await.expect(key);
}

/// A backup as WAL-G lays it out: data first, the stop sentinel last.
async fn backup(c: &aws_sdk_s3::Client, repo: &str, start_seg: u64, sentinel: Option<String>) {
    let name = format!("base_00000001{:08X}{:08X}", start_seg / 256, start_seg % 256);
    put(c, &format!("{repo}basebackups_005/{name}/tar_partitions/part_1.tar.lz4"), b"tar".to_vec()).await;
    let (start, finish) = (start_seg * SEG + 0x28, (start_seg + 1) * SEG + 0x100);
    let body = sentinel.unwrap_or_else(|| {
        format!(r#"{{"LSN":{start},"FinishLSN":{finish},"SystemIdentifier":7,"PgVersion":150000,"Version":2}}"#)
    });
    put(c, &format!("{repo}basebackups_005/{name}_backup_stop_sentinel.json"), body.into_bytes()).await;
}

fn scrape(port: u16, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n");
    let (status, _, body) = raw_http(port, req.as_bytes());
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Families and their types, from the `# TYPE` lines.
/// Scrapes until `ok` holds (the `evaluate` worker runs every 10 s); the last text.
fn scrape_until(port: u16, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    loop {
        let (status, text) = scrape(port, Some(TOKEN));
        assert_eq!(status, 200, "{text}");
        if ok(&text) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "the scrape never showed what was expected:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(n, t)| (n.to_owned(), t.to_owned())))
        .collect()
}

/// The value of the one sample of `name` whose labels include every `labels` pair.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn documented() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/metrics.txt");
    std::fs::read_to_string(path)
        .expect("deploy/metrics.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_documented_list_and_follow_the_repository() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "pgb", "--metrics-token", TOKEN, "--tier-interval", "1s"]);
    let c = srv.client();

    // An off-box copy (a second walstore), so the replication families have series.
    let target_dir = tempfile::tempdir().expect("tmp");
    let target = Server::start(target_dir.path(), &["--bucket", "copy"]);
    let creds = dir.path().join("copy.creds");
    std::fs::write(
        &creds,
        format!("access_key_id = {}\nsecret_access_key = {}\n", common::ACCESS_KEY, common::SECRET_KEY),
    )
    .expect("creds");
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_walstore"))
        .args(["replication", "add", "copy", "--endpoint", &target.endpoint(), "--bucket", "copy", "--region"])
        .args([common::REGION, "--deletes", "mirror", "--credentials-file"])
        .arg(&creds)
        .args(["--server", &srv.endpoint()])
        .env("WALSTORE_ROOT_ACCESS_KEY", common::ACCESS_KEY)
        .env("WALSTORE_ROOT_SECRET_KEY", common::SECRET_KEY)
        .output()
        .expect("replication add");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    // Tiering to it, so the tier families have series: a cold object outside the
    // repository is evicted at once and read back from the copy.
    let tiered = std::process::Command::new(env!("CARGO_BIN_EXE_walstore"))
        .args(["tier", "set", "pgb", "--target", "copy", "--after", "0s", "--endpoint", &srv.endpoint()])
        .env("WALSTORE_ROOT_ACCESS_KEY", common::ACCESS_KEY)
        .env("WALSTORE_ROOT_SECRET_KEY", common::SECRET_KEY)
        .output()
        .expect("tier set");
    assert!(tiered.status.success(), "{}", String::from_utf8_lossy(&tiered.stderr));
    let cold: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    put(&c, "archive/cold.bin", cold.clone()).await;

    let (status, _) = scrape(srv.port, None);
    assert_eq!(status, 401, "the token is required");
    let (status, _) = scrape(srv.port, Some("wrong"));
    assert_eq!(status, 401);

    for n in 1..=6 {
        put(&c, &seg_key1(REPO, n), vec![n as u8; 64]).await;
    }
    backup(&c, REPO, 2, None).await;
    for n in 7..=8 {
        put(&c, &seg_key1(REPO, n), vec![n as u8; 64]).await;
    }
    // A second repository whose sentinel cannot be parsed: retention freezes.
    backup(&c, "spilo/broken/", 1, Some("{not json".into())).await;
    // A request with a wrong secret.
    let bad = common::client_for(&srv.endpoint(), common::ACCESS_KEY, "not-the-secret");
    bad.list_buckets().send().await.expect_err("bad signature");
    // A refused delete (protect-required keeps everything younger than a day).
    c.delete_object().bucket("pgb").key(seg_key1(REPO, 1)).send().await.expect_err("protected");
    let repo = [("bucket", "pgb"), ("repo", REPO)];
    // WAL gauges show the last evaluation, which the `evaluate` worker keeps current.
    let copied = [("target", "copy"), ("bucket", "pgb"), ("repo", REPO)];
    scrape_until(srv.port, |t| {
        value(t, "walstore_wal_last_segment_lsn_bytes", &repo) == Some((9 * SEG) as f64)
            && value(t, "walstore_retention_frozen", &[("repo", "spilo/broken/")]).is_some()
            && value(t, "walstore_replication_wal_offbox_lag_seconds", &copied) == Some(0.0)
            && value(t, "walstore_replication_backlog_objects", &[("target", "copy")]) == Some(0.0)
    });
    scrape_until(srv.port, |t| {
        value(t, "walstore_tier_evicted_bytes_total", &[]) == Some(300_000.0)
            && value(t, "walstore_tier_local_bytes", &[("bucket", "pgb"), ("repository", REPO)]).is_some()
    });
    let got = c.get_object().bucket("pgb").key("archive/cold.bin").send().await.expect("tiered GET");
    assert_eq!(got.body.collect().await.expect("body").into_bytes().to_vec(), cold, "read back from the copy");
    let text = scrape_until(srv.port, |t| value(t, "walstore_tier_remote_reads_total", &[]) == Some(1.0));
    let newest_local = value(&text, "walstore_wal_last_segment_received_timestamp_seconds", &repo);
    assert_eq!(value(&text, "walstore_replication_wal_offbox_timestamp_seconds", &copied), newest_local);
    assert!(value(&text, "walstore_replication_objects_total", &[("target", "copy")]) >= Some(12.0), "{text}");
    assert_eq!(value(&text, "walstore_replication_failing", &[("target", "copy")]), Some(0.0));

    // Exactly the documented families.
    let fams = families(&text);
    let exported: BTreeSet<String> = fams.iter().map(|(n, _)| n.clone()).collect();
    let doc = documented();
    let missing: Vec<_> = doc.difference(&exported).collect();
    let undocumented: Vec<_> = exported.difference(&doc).collect();
    assert!(missing.is_empty(), "documented but not exported: {missing:?}");
    assert!(undocumented.is_empty(), "exported but not in deploy/metrics.txt: {undocumented:?}");
    for (name, ty) in &fams {
        assert_eq!(name.ends_with("_total"), ty == "counter", "{name} is a {ty}");
    }

    let lsn = value(&text, "walstore_wal_last_segment_lsn_bytes", &repo);
    assert_eq!(lsn, Some((9 * SEG) as f64), "end of segment 8");
    assert_eq!(value(&text, "walstore_backups", &[("repo", REPO), ("kind", "full")]), Some(1.0));
    let frozen = value(&text, "walstore_retention_frozen", &[("repo", "spilo/broken/")]);
    assert_eq!(frozen, Some(1.0), "{text}");
    assert_eq!(value(&text, "walstore_retention_frozen", &repo), None, "the healthy repository is not frozen");
    assert!(value(&text, "walstore_auth_failures_total", &[("reason", "signature_mismatch")]) >= Some(1.0));
    assert_eq!(value(&text, "walstore_refused_deletes_total", &[]), Some(1.0));
    let gaps = |t: &str| {
        value(t, "walstore_wal_gap_segments", &[("repo", REPO), ("state", "pending")]).unwrap_or(0.0)
            + value(t, "walstore_wal_gap_segments", &[("repo", REPO), ("state", "lost")]).unwrap_or(0.0)
    };
    assert_eq!(gaps(&text), 0.0);
    assert!(value(&text, "walstore_s3_requests_total", &[("operation", "PutObject"), ("status", "200")]) >= Some(12.0));
    assert!(value(&text, "walstore_maintenance_last_success_timestamp_seconds", &[("task", "gc")]) > Some(0.0));

    // The next segment arrives: the next evaluation reports it.
    put(&c, &seg_key1(REPO, 9), vec![9; 64]).await;
    scrape_until(srv.port, |t| value(t, "walstore_wal_last_segment_lsn_bytes", &repo) == Some((10 * SEG) as f64));

    // A segment in the middle disappears (the operator allowed deletes): a gap.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_walstore"))
        .args(["policy", "set", "pgb/spilo/c1", "--protection", "allow", "--endpoint", &srv.endpoint()])
        .env("WALSTORE_ROOT_ACCESS_KEY", common::ACCESS_KEY)
        .env("WALSTORE_ROOT_SECRET_KEY", common::SECRET_KEY)
        .output()
        .expect("cli");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.delete_object().bucket("pgb").key(seg_key1(REPO, 5)).send().await.expect("allowed");
    let text = scrape_until(srv.port, |t| gaps(t) == 1.0);
    assert_eq!(value(&text, "walstore_refused_deletes_total", &[]), Some(1.0), "a counter does not move by itself");
}
