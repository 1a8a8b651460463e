//! The WAL-aware store through the S3 API and the CLI: delete protection,
//! the split-brain guard, roles, the admin API, retention plan/run, status.

mod common;

use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use common::{bytes_of, lz4, seg_name, Server};
use serde_json::Value;

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_owned()
}

/// `walstore <args>` against the running server with the root key; JSON output.
fn cli(srv: &Server, args: &[&str]) -> (bool, Value, String) {
    common::cli_json(srv, args)
}

async fn put(c: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) -> Result<(), String> {
    common::put(c, "pgb", key, body).await
}

/// A backup laid out as WAL-G writes it: tar, metadata.json, sentinel last.
async fn backup(c: &aws_sdk_s3::Client, repo: &str, start_seg: u64, finish_seg: u64, permanent: bool) -> String {
    common::walg_backup(c, "pgb", repo, start_seg, finish_seg, permanent).await
}

async fn segments(c: &aws_sdk_s3::Client, repo: &str, from: u64, to: u64) {
    for n in from..=to {
        put(c, &format!("{repo}wal_005/{}.lz4", seg_name(1, n)), lz4(&bytes_of(n, 8192))).await.expect("segment");
    }
}

async fn delete_many(c: &aws_sdk_s3::Client, keys: &[String]) -> Vec<(String, String)> {
    let ids: Vec<ObjectIdentifier> =
        keys.iter().map(|k| ObjectIdentifier::builder().key(k).build().expect("id")).collect();
    let r = c
        .delete_objects()
        .bucket("pgb")
        .delete(Delete::builder().set_objects(Some(ids)).build().expect("delete"))
        .send()
        .await
        .expect("DeleteObjects answers 200 even when keys are refused");
    r.errors().iter().map(|e| (e.key().unwrap_or("").to_owned(), e.code().unwrap_or("").to_owned())).collect()
}

async fn exists(c: &aws_sdk_s3::Client, key: &str) -> bool {
    c.head_object().bucket("pgb").key(key).send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_guard_refuses_different_bytes_and_quarantines_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "pgb"]);
    let c = srv.client();
    let repo = "spilo/c1/wal/15/";
    let key = format!("{repo}wal_005/{}.lz4", seg_name(1, 5));
    let a = bytes_of(1, 1 << 20);
    put(&c, &key, lz4(&a)).await.expect("first upload");
    // Archive retry with identical bytes: 200, nothing changes.
    put(&c, &key, lz4(&a)).await.expect("identical retry");
    // The same content with another codec: accepted, but no second visible object.
    let zst_key = format!("{repo}wal_005/{}.zst", seg_name(1, 5));
    put(&c, &zst_key, zstd::encode_all(&a[..], 3).expect("zstd")).await.expect("same content, other codec");
    assert!(!exists(&c, &zst_key).await, "only the first encoding stays visible");
    // Different content: a second primary (split brain).
    let b = bytes_of(2, 1 << 20);
    let e = put(&c, &key, lz4(&b)).await.expect_err("different bytes");
    assert!(e.starts_with("PreconditionFailed"), "{e}");
    assert!(e.contains("split brain"), "{e}");
    let e = put(&c, &zst_key, zstd::encode_all(&b[..], 3).expect("zstd"))
        .await
        .expect_err("different content, other codec");
    assert!(e.starts_with("PreconditionFailed"), "{e}");
    let got = c
        .get_object()
        .bucket("pgb")
        .key(&key)
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(got.as_ref(), lz4(&a).as_slice(), "GET keeps returning the first upload");
    // History files: any different bytes are refused.
    let h = format!("{repo}wal_005/00000002.history.lz4");
    put(&c, &h, lz4(b"1\t0/5000000\tno recovery target specified\n")).await.expect("history");
    let e = put(&c, &h, lz4(b"1\t0/6000000\tno recovery target specified\n")).await.expect_err("history collision");
    assert!(e.starts_with("PreconditionFailed"), "{e}");
    let (ok, v, out) = cli(&srv, &["status", "pgb"]);
    assert!(ok, "{out}");
    assert_eq!(v["quarantined"], 3, "{out}");
    // A bucket can switch the guard off.
    let (ok, _, out) = cli(&srv, &["policy", "set", "pgb", "--split-brain-guard", "false"]);
    assert!(ok, "{out}");
    put(&c, &key, lz4(&b)).await.expect("guard off: plain S3 overwrite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_protection_roles_override_and_retention() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "pgb"]);
    let c = srv.client();
    let repo = "spilo/c1/wal/15/";
    segments(&c, repo, 1, 6).await;
    let f1 = backup(&c, repo, 2, 3, false).await;
    segments(&c, repo, 7, 12).await;
    let f2 = backup(&c, repo, 8, 9, false).await;
    put(&c, "unrelated/file", b"x".to_vec()).await.expect("foreign");

    // Default policy (protect-required, objects younger than 24 h kept): every
    // repository delete is refused; a key outside any repository is plain S3.
    let seg1 = format!("{repo}wal_005/{}.lz4", seg_name(1, 1));
    let e = c.delete_object().bucket("pgb").key(&seg1).send().await.expect_err("refused");
    assert_eq!(code(&e.into_service_error()), "AccessDenied");
    let sentinel1 = format!("{repo}basebackups_005/{f1}_backup_stop_sentinel.json");
    let errors = delete_many(&c, &[seg1.clone(), sentinel1.clone(), "unrelated/file".into()]).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|(_, code)| code == "AccessDenied"));
    assert!(exists(&c, &seg1).await && exists(&c, &sentinel1).await);
    assert!(!exists(&c, "unrelated/file").await);
    let (ok, v, out) = cli(&srv, &["status", "pgb/spilo/c1/wal/15"]);
    assert!(ok, "{out}");
    assert!(v["refused_deletes"].as_array().map_or(0, |a| a.len()) >= 3, "{out}");
    let repo_v = &v["repositories"][0];
    assert_eq!(repo_v["prefix"], repo);
    assert_eq!(repo_v["backups"].as_array().map(|a| a.len()), Some(2), "{out}");
    assert!(repo_v["report"]["last_segment"][0].as_str().is_some_and(|s| s == seg_name(1, 12)), "{out}");

    // Roles: a wal-writer key scoped to the repository writes and reads, never deletes.
    let (ok, k, out) = cli(&srv, &["key", "create", "--role", "wal-writer", "--scope", "pgb/spilo/c1/"]);
    assert!(ok, "{out}");
    let writer =
        common::client_for(&srv.endpoint(), k["id"].as_str().expect("id"), k["secret"].as_str().expect("secret"));
    writer
        .put_object()
        .bucket("pgb")
        .key(format!("{repo}wal_005/{}.lz4", seg_name(1, 13)))
        .body(ByteStream::from(lz4(b"w")))
        .send()
        .await
        .expect("writer puts");
    writer.get_object().bucket("pgb").key(&seg1).send().await.expect("writer reads");
    let e = writer.delete_object().bucket("pgb").key(&seg1).send().await.expect_err("writer cannot delete");
    assert_eq!(code(&e.into_service_error()), "AccessDenied");
    let e = writer
        .put_object()
        .bucket("pgb")
        .key("spilo/c2/x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("scope");
    assert_eq!(code(&e.into_service_error()), "AccessDenied");
    let e = writer.list_objects_v2().bucket("pgb").send().await.expect_err("listing outside the scope");
    assert_eq!(code(&e.into_service_error()), "AccessDenied");
    // The admin API is for admin keys only.
    let wid = k["id"].as_str().expect("id").to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_walstore"))
        .args([
            "status",
            "pgb",
            "--endpoint",
            &srv.endpoint(),
            "--access-key",
            &wid,
            "--secret-key",
            k["secret"].as_str().expect("s"),
        ])
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AccessDenied"), "{}", String::from_utf8_lossy(&out.stderr));
    let (ok, _, out) = cli(&srv, &["key", "revoke", &wid]);
    assert!(ok, "{out}");
    let e = writer.get_object().bucket("pgb").key(&seg1).send().await.expect_err("revoked");
    assert_eq!(code(&e.into_service_error()), "InvalidAccessKeyId");

    // An admin override deletes a protected object and is audited.
    let seg13 = format!("{repo}wal_005/{}.lz4", seg_name(1, 13));
    c.delete_object()
        .bucket("pgb")
        .key(&seg13)
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-walstore-retention-override", "test cleanup");
        })
        .send()
        .await
        .expect("override");
    assert!(!exists(&c, &seg13).await);
    let (ok, v, out) = cli(&srv, &["audit"]);
    assert!(ok, "{out}");
    assert!(v["records"].as_array().is_some_and(|r| r.iter().any(|x| x["action"] == "override-delete")), "{out}");

    // A short policy makes F1 and the WAL before F2 releasable.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, _, out) = cli(
        &srv,
        &[
            "policy",
            "set",
            "pgb/spilo/c1/wal/15",
            "--recovery-window",
            "1s",
            "--min-backups",
            "1",
            "--min-object-age",
            "0s",
            "--clock-skew",
            "0s",
            "--gc-delay",
            "0s",
        ],
    );
    assert!(ok, "{out}");
    let (ok, plan, out) = cli(&srv, &["retention", "plan", "pgb/spilo/c1/wal/15"]);
    assert!(ok, "{out}");
    let units = plan["plans"][0]["units"].as_array().cloned().unwrap_or_default();
    assert!(units.iter().any(|u| u["Backup"]["name"] == f1.as_str()), "{out}");
    assert!(!units.iter().any(|u| u["Backup"]["name"] == f2.as_str()), "{out}");
    // The client may now delete F1 (whole unit), not F2.
    let f1_keys = vec![
        sentinel1.clone(),
        format!("{repo}basebackups_005/{f1}/metadata.json"),
        format!("{repo}basebackups_005/{f1}/tar_partitions/part_001.tar.lz4"),
    ];
    assert!(delete_many(&c, &f1_keys).await.is_empty());
    let sentinel2 = format!("{repo}basebackups_005/{f2}_backup_stop_sentinel.json");
    assert_eq!(delete_many(&c, std::slice::from_ref(&sentinel2)).await.len(), 1);
    // The server runs the rest of the plan: WAL before F2's start goes, F2's stays.
    let (ok, run, out) = cli(&srv, &["retention", "run", "pgb/spilo/c1/wal/15"]);
    assert!(ok, "{out}");
    assert!(run["runs"][0]["deleted_objects"].as_u64().unwrap_or(0) >= 6, "{out}");
    assert!(!exists(&c, &seg1).await);
    assert!(exists(&c, &format!("{repo}wal_005/{}.lz4", seg_name(1, 8))).await);
    assert!(exists(&c, &sentinel2).await);

    // deny-all refuses everything in the repository.
    let (ok, _, out) = cli(&srv, &["policy", "set", "pgb", "--protection", "deny-all"]);
    assert!(ok, "{out}");
    let (ok, _, out) = cli(&srv, &["policy", "remove", "pgb/spilo/c1/wal/15"]);
    assert!(ok, "{out}");
    let e = c
        .delete_object()
        .bucket("pgb")
        .key(format!("{repo}wal_005/{}.lz4", seg_name(1, 12)))
        .send()
        .await
        .expect_err("deny-all");
    assert_eq!(code(&e.into_service_error()), "AccessDenied");
}

#[test]
fn cli_works_on_a_stopped_server_data_dir() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut srv = Server::start(dir.path(), &["--bucket", "pgb"]);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let c = srv.client();
        segments(&c, "r/", 1, 3).await;
        backup(&c, "r/", 2, 2, false).await;
    });
    // While the server runs, --data-dir is refused with a clear message.
    let out = srv.cli(&["status", "pgb"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by a running server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(srv.stop(), Some(0));
    let out = srv.cli(&["status", "pgb", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["repositories"][0]["prefix"], "r/");
    let out = srv.cli(&["status", "pgb"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("restorable window"), "{text}");
    let out = srv.cli(&["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = srv.cli(&["bucket", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pgb");
    let out = srv.cli(&["key", "create", "--role", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("role"), "one-line error");
}
