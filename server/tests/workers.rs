//! The background workers, end to end against the real binary: a scrub of more than
//! 2 GiB is stopped by SIGTERM within the shutdown bound and continues from its saved
//! position at the next start; while it runs, GC and retention go on.

mod common;

use std::time::{Duration, Instant};

use common::{cli_json, raw_http, seg_key, signed_request, Server};
use serde_json::Value;

const BUCKET: &str = "pgb";
const MIB: usize = 1 << 20;

fn scrub_status(srv: &Server) -> Value {
    let (status, _, body) = raw_http(srv.port, &signed_request(srv.port, "GET", "/_walstore/scrub", &[], b"", &[]));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("scrub status JSON")
}

fn start_scrub(srv: &Server) {
    let (status, _, body) = raw_http(srv.port, &signed_request(srv.port, "POST", "/_walstore/scrub", &[], b"", &[]));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Polls `f` every 100 ms until it holds or `limit` passes.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 16 MiB of bytes distinct per `i` (cheap to make: a counter pattern, not compressed anywhere).
fn chunk(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; 16 * MIB];
    for (j, w) in v.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(i << 40 | j as u64).to_le_bytes());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_big_scrub_at_once_and_it_resumes_while_gc_and_retention_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut srv = Server::start(
        dir.path(),
        &[
            "--bucket",
            BUCKET,
            // A scrub only when asked, paced so it runs long enough to be stopped.
            "--scrub-interval",
            "1h",
            "--scrub-rate",
            "96MiB",
            "--gc-interval",
            "1s",
            "--gc-grace",
            "0s",
            "--retention-interval",
            "1s",
        ],
    );
    let c = srv.client();
    // 2 GiB + 16 MiB of distinct blobs.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..129u64 {
        let c = c.clone();
        tasks.spawn(async move { common::put(&c, BUCKET, &format!("big/{i:03}"), chunk(i)).await });
        if tasks.len() >= 4 {
            tasks.join_next().await.expect("task").expect("join").expect("put");
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("join").expect("put");
    }
    // A WAL-G repository whose oldest backup a retention policy will release.
    let repo = "spilo/c1/wal/15/";
    for n in 1..=12 {
        common::put(&c, BUCKET, &seg_key(repo, 1, n), common::lz4(&common::bytes_of(n, 4096))).await.expect("seg");
    }
    let oldest = common::walg_backup(&c, BUCKET, repo, 2, 3, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    common::walg_backup(&c, BUCKET, repo, 6, 7, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    common::walg_backup(&c, BUCKET, repo, 10, 11, false).await;
    let oldest_sentinel = format!("{repo}basebackups_005/{oldest}_backup_stop_sentinel.json");

    start_scrub(&srv);
    wait_for("the scrub to be under way", Duration::from_secs(60), || {
        let st = scrub_status(&srv);
        st["running"] == true && st["progress"].as_f64().unwrap_or(0.0) > 0.02
    });

    // GC goes on during the scrub: deleted objects' blob files go (grace 0s, every 1 s).
    let before = srv.blob_files();
    for i in 0..8 {
        c.delete_object().bucket(BUCKET).key(format!("big/{i:03}")).send().await.expect("delete");
    }
    wait_for("GC to remove 8 blob files during the scrub", Duration::from_secs(30), || srv.blob_files() <= before - 8);
    // Retention goes on too: enforce a policy that releases the oldest backup.
    let target = format!("{BUCKET}/{repo}");
    let (ok, _, out) = cli_json(
        &srv,
        &[
            "policy",
            "set",
            &target,
            "--recovery-window",
            "1s",
            "--min-backups",
            "1",
            "--min-object-age",
            "0s",
            "--clock-skew",
            "0s",
            "--archive-lag-grace",
            "0s",
            "--gc-delay",
            "0s",
            "--enforce",
            "true",
        ],
    );
    assert!(ok, "policy set: {out}");
    wait_for("retention to delete the oldest backup during the scrub", Duration::from_secs(30), || {
        let head = signed_request(srv.port, "HEAD", &format!("/{BUCKET}/{oldest_sentinel}"), &[], b"", &[]);
        raw_http(srv.port, &head).0 == 404
    });
    let during = scrub_status(&srv);
    assert_eq!(during["running"], true, "the scrub should still be running: {during}");
    let progress = during["progress"].as_f64().expect("progress");
    assert!(progress < 0.95, "the scrub went too fast to be stopped mid-way: {during}");

    // SIGTERM mid-scrub: exit 0 within the bound.
    let t = Instant::now();
    let code = srv.stop();
    let took = t.elapsed();
    assert_eq!(code, Some(0), "exit status after SIGTERM during a scrub");
    assert!(took <= Duration::from_secs(2), "SIGTERM during a scrub took {took:?} to exit (bound: 2 s)");

    // The next start continues the scrub from its saved position, at once.
    srv.spawn();
    let resumed = scrub_status(&srv);
    assert_eq!(resumed["running"], true, "the scrub resumes after a restart: {resumed}");
    let at_restart = resumed["progress"].as_f64().expect("progress");
    assert!(at_restart >= progress - 0.01, "resumed at {at_restart}, had reached {progress}");
    assert!(at_restart > 0.0, "the saved position was lost");
    wait_for("the resumed scrub to finish", Duration::from_secs(120), || scrub_status(&srv)["running"] == false);
    let done = scrub_status(&srv);
    let report = &done["last_report"];
    assert_eq!(report["corrupt"].as_array().map(Vec::len), Some(0), "{done}");
    let blobs = report["blobs"].as_u64().expect("blobs");
    assert!(blobs >= 121, "the resumed scrub covered every blob, not only those after the restart: {done}");
    assert_eq!(srv.stop(), Some(0));
}
