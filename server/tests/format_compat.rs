//! Format compatibility of the data directory, tested the way redb tests its old
//! file formats: against data directories the old code wrote.
//!
//! `tests/fixtures/schema-N/` holds a data directory written through S3 by the last
//! commit whose index had schema version N (`data.tar.gz`), and what that server
//! answered about it (`manifest.json`); `tests/fixtures/README.md` says how they
//! are made. For each, today's binary must, on a copy:
//! - start (migrating an older index) and answer every object with the old bytes
//!   (SHA-256 of the body), size, ETag, content type, user metadata, cache-control,
//!   content-disposition, Last-Modified and stored checksums; keep deleted keys
//!   deleted; list the bucket (flat and with a delimiter) exactly as before;
//! - list the pending multipart upload with its old parts, complete it from
//!   exactly those parts and read the result back;
//! - stop cleanly; offline GC then reclaims exactly the blobs the old server left
//!   unreferenced, `walstore check` finds nothing wrong, and after a restart
//!   every object still reads back.
//!
//! A data directory from a newer schema is refused in one line and left untouched.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::{ChecksumMode, CompletedMultipartUpload, CompletedPart};
use common::Server;
use md5::Md5;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The newest index schema. Raise it with `SCHEMA_VERSION` in storage/src/index.rs,
/// and add `fixtures/schema-N` (see fixtures/generate.sh): the refusal test below
/// names this number, and every schema up to it must have a fixture.
const NEWEST_SCHEMA: u32 = 6;

/// The fixtures were written long before the test runs: a server with the default
/// grace periods would reclaim their unreferenced blobs and expire the pending upload
/// on its first maintenance pass. GC runs offline, when the test asks for it.
const SERVE_FLAGS: [&str; 4] = ["--gc-grace", "5200w", "--multipart-expiry", "5200w"];

fn fixture_dir(schema: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("schema-{schema}"))
}

/// Unpacks fixture `schema` into `dir/data` (where [`Server::start`] looks) and
/// returns its manifest.
fn unpack(schema: u32, dir: &Path) -> Value {
    let fixture = fixture_dir(schema);
    let tarball = fixture.join("data.tar.gz");
    assert!(tarball.is_file(), "no fixture for schema {schema}: run tests/fixtures/generate.sh {schema}");
    let st = Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(dir).status().expect("run tar");
    assert!(st.success(), "unpacking {}", tarball.display());
    let text = std::fs::read_to_string(fixture.join("manifest.json")).expect("read manifest.json");
    let m: Value = serde_json::from_str(&text).expect("manifest.json is JSON");
    assert_eq!(m["schema"], schema, "manifest of {}", fixture.display());
    m
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("manifest: {field} is not a string in {v}"))
}

/// The stored checksums a HEAD reports, named as in the manifest.
fn checksums(head: &HeadObjectOutput) -> Value {
    let all = [
        ("crc32", head.checksum_crc32()),
        ("crc32c", head.checksum_crc32_c()),
        ("crc64nvme", head.checksum_crc64_nvme()),
        ("sha1", head.checksum_sha1()),
        ("sha256", head.checksum_sha256()),
    ];
    json!(all.into_iter().filter_map(|(name, v)| Some((name, v?))).collect::<BTreeMap<_, _>>())
}

/// What the server answers now about `key`, next to what it answered then (`want`,
/// a manifest object); one line per difference.
async fn object_differences(c: &aws_sdk_s3::Client, bucket: &str, key: &str, want: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let head = match c.head_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await {
        Ok(h) => h,
        Err(e) => return vec![format!("HEAD failed: {}", DisplayErrorContext(e))],
    };
    let now = [
        ("size", json!(head.content_length())),
        ("etag", json!(head.e_tag())),
        ("content_type", json!(head.content_type())),
        ("metadata", json!(head.metadata().cloned().unwrap_or_default())),
        ("cache_control", json!(head.cache_control())),
        ("content_disposition", json!(head.content_disposition())),
        ("last_modified", json!(head.last_modified().map(|t| t.secs()))),
        ("checksums", checksums(&head)),
    ];
    for (field, have) in now {
        if have != want[field] {
            diffs.push(format!("{field} is {have}, was {}", want[field]));
        }
    }
    let get = match c.get_object().bucket(bucket).key(key).send().await {
        Ok(g) => g,
        Err(e) => return [diffs, vec![format!("GET failed: {}", DisplayErrorContext(e))]].concat(),
    };
    if json!(get.e_tag()) != want["etag"] {
        diffs.push(format!("GET answers ETag {:?}, was {}", get.e_tag(), want["etag"]));
    }
    match get.body.collect().await {
        Ok(body) => {
            let body = body.into_bytes();
            if json!(body.len()) != want["size"] {
                diffs.push(format!("GET returned {} bytes, was {}", body.len(), want["size"]));
            }
            if sha256_hex(&body) != str_of(want, "sha256") {
                diffs.push(format!("GET returned other bytes (SHA-256 {})", sha256_hex(&body)));
            }
        }
        Err(e) => diffs.push(format!("reading the body failed: {e}")),
    }
    diffs
}

/// Everything the server answers differently from the manifest `m`: objects
/// (prefixed with their key), deleted keys, listings, the pending upload.
async fn differences(c: &aws_sdk_s3::Client, m: &Value) -> Vec<String> {
    let bucket = str_of(m, "bucket");
    let mut diffs = Vec::new();
    for o in m["objects"].as_array().expect("objects") {
        let key = str_of(o, "key");
        diffs.extend(object_differences(c, bucket, key, o).await.into_iter().map(|d| format!("{key}: {d}")));
    }
    for key in m["deleted"].as_array().expect("deleted") {
        let key = key.as_str().expect("deleted key");
        if c.head_object().bucket(bucket).key(key).send().await.is_ok() {
            diffs.push(format!("{key}: deleted, but it is there"));
        }
    }
    let mut listing = Vec::new();
    let mut pages = c.list_objects_v2().bucket(bucket).max_keys(5).into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => listing.extend(p.contents().iter().map(|o| {
                json!({
                    "key": o.key(),
                    "size": o.size(),
                    "etag": o.e_tag(),
                    "last_modified_ms": o.last_modified().and_then(|t| t.to_millis().ok()),
                })
            })),
            Err(e) => {
                diffs.push(format!("listing failed: {}", DisplayErrorContext(e)));
                break;
            }
        }
    }
    let before = m["listing"].as_array().expect("listing");
    for i in 0..listing.len().max(before.len()) {
        let (have, was) = (listing.get(i), before.get(i));
        if have != was {
            diffs.push(format!("listing entry {i} is {}, was {}", json!(have), json!(was)));
        }
    }
    match c.list_objects_v2().bucket(bucket).delimiter("/").send().await {
        Ok(top) => {
            let have = json!({
                "prefixes": top.common_prefixes().iter().map(|p| p.prefix()).collect::<Vec<_>>(),
                "keys": top.contents().iter().map(|o| o.key()).collect::<Vec<_>>(),
            });
            if have != m["listing_delimited"] {
                diffs.push(format!("the listing by '/' is {have}, was {}", m["listing_delimited"]));
            }
        }
        Err(e) => diffs.push(format!("listing by '/' failed: {}", DisplayErrorContext(e))),
    }
    let pending = &m["pending_upload"];
    let want_uploads =
        if pending.is_null() { json!([]) } else { json!([[str_of(pending, "key"), str_of(pending, "upload_id")]]) };
    match c.list_multipart_uploads().bucket(bucket).send().await {
        Ok(l) => {
            let have = json!(l.uploads().iter().map(|u| [u.key(), u.upload_id()]).collect::<Vec<_>>());
            if have != want_uploads {
                diffs.push(format!("pending uploads are {have}, were {want_uploads}"));
            }
        }
        Err(e) => diffs.push(format!("listing uploads failed: {}", DisplayErrorContext(e))),
    }
    if !pending.is_null() {
        let (key, id) = (str_of(pending, "key"), str_of(pending, "upload_id"));
        match c.list_parts().bucket(bucket).key(key).upload_id(id).send().await {
            Ok(l) => {
                let have: Vec<Value> = l
                    .parts()
                    .iter()
                    .map(|p| json!({"number": p.part_number(), "etag": p.e_tag(), "size": p.size()}))
                    .collect();
                let want: Vec<Value> = pending["parts"]
                    .as_array()
                    .expect("parts")
                    .iter()
                    .map(|p| json!({"number": p["number"], "etag": p["etag"], "size": p["size"]}))
                    .collect();
                if have != want {
                    diffs.push(format!("{key}: the upload's parts are {have:?}, were {want:?}"));
                }
            }
            Err(e) => diffs.push(format!("{key}: ListParts failed: {}", DisplayErrorContext(e))),
        }
    }
    diffs
}

/// Completes the fixture's pending upload from exactly the parts the old server
/// received, checks the answer, and returns `m` as it must read from now on: with
/// the new object (its Last-Modified and checksums as the server reports them) and
/// no pending upload.
async fn complete_pending(c: &aws_sdk_s3::Client, m: &Value) -> Value {
    let bucket = str_of(m, "bucket");
    let pending = &m["pending_upload"];
    let (key, id) = (str_of(pending, "key"), str_of(pending, "upload_id"));
    let parts = pending["parts"].as_array().expect("parts");
    let completed: Vec<CompletedPart> = parts
        .iter()
        .map(|p| {
            let number = i32::try_from(p["number"].as_i64().expect("part number")).expect("part number");
            CompletedPart::builder().part_number(number).e_tag(str_of(p, "etag")).build()
        })
        .collect();
    let done = c
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await
        .unwrap_or_else(|e| panic!("completing {key} (upload {id}) failed: {}", DisplayErrorContext(e)));
    // S3's multipart ETag: MD5 of the parts' binary MD5s, and the part count.
    let mut md5s = Md5::new();
    for p in parts {
        md5s.update(hex::decode(str_of(p, "etag").trim_matches('"')).expect("part ETag is hex"));
    }
    let etag = format!("\"{}-{}\"", hex::encode(md5s.finalize()), parts.len());
    assert_eq!(done.e_tag(), Some(etag.as_str()), "{key}: ETag of the completed upload");

    let head = c.head_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await;
    let head = head.unwrap_or_else(|e| panic!("HEAD {key}: {}", DisplayErrorContext(e)));
    let listed = c.list_objects_v2().bucket(bucket).prefix(key).send().await.expect("list the completed key");
    let [entry] = listed.contents() else { panic!("{key} is listed {} times", listed.contents().len()) };
    let object = json!({
        "key": key,
        "size": pending["completed_size"],
        "sha256": pending["completed_sha256"],
        "etag": etag,
        "content_type": pending["content_type"],
        "metadata": pending["metadata"],
        "cache_control": null,
        "content_disposition": null,
        "last_modified": head.last_modified().map(|t| t.secs()),
        "checksums": checksums(&head),
    });
    let mut next = m.clone();
    next["objects"].as_array_mut().expect("objects").push(object);
    let listing = next["listing"].as_array_mut().expect("listing");
    listing.push(json!({
        "key": key,
        "size": pending["completed_size"],
        "etag": etag,
        "last_modified_ms": entry.last_modified().and_then(|t| t.to_millis().ok()),
    }));
    listing.sort_by(|a, b| str_of(a, "key").cmp(str_of(b, "key")));
    next["pending_upload"] = Value::Null;
    next
}

/// `walstore <args> --data-dir <data> --json`, which must succeed; its JSON answer.
fn offline_json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = server.cli(&all);
    assert!(
        out.status.success(),
        "walstore {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("walstore {args:?}: not JSON ({e})"))
}

/// The whole round for one fixture (see the module comment).
async fn old_data_directory_reads_back(schema: u32) {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = unpack(schema, tmp.path());
    let mut server = Server::start(tmp.path(), &SERVE_FLAGS);
    let c = server.client();
    let diffs = differences(&c, &m).await;
    assert!(diffs.is_empty(), "schema {schema}: today's server answers differently:\n{}", diffs.join("\n"));
    let m = complete_pending(&c, &m).await;
    let diffs = differences(&c, &m).await;
    assert!(diffs.is_empty(), "schema {schema}: after completing the upload:\n{}", diffs.join("\n"));
    assert_eq!(server.stop(), Some(0), "schema {schema}: exit status on SIGTERM");

    let gc = offline_json(&server, &["gc", "--grace", "0s"]);
    let unreferenced = m["unreferenced_blobs"].as_array().expect("unreferenced_blobs").len();
    assert_eq!(gc["reclaimed_blobs"], unreferenced, "schema {schema}: GC of {}: {gc}", m["unreferenced_blobs"]);
    assert_eq!((&gc["waiting"], &gc["orphan_files"], &gc["expired_uploads"]), (&json!(0), &json!(0), &json!(0)));
    let check = offline_json(&server, &["check"]);
    assert_eq!(check["problems"], json!([]), "schema {schema}: walstore check: {check}");
    assert_eq!(check["objects"], m["objects"].as_array().expect("objects").len(), "schema {schema}: {check}");
    assert_eq!(check["orphan_files"], 0, "schema {schema}: {check}");

    // What the first start migrated and GC left must read the same after a restart.
    server.spawn();
    let diffs = differences(&server.client(), &m).await;
    assert!(diffs.is_empty(), "schema {schema}: after GC and a restart:\n{}", diffs.join("\n"));
    assert_eq!(server.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_1_data_directory_reads_back() {
    old_data_directory_reads_back(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_2_data_directory_reads_back() {
    old_data_directory_reads_back(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_3_data_directory_reads_back() {
    old_data_directory_reads_back(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_4_data_directory_reads_back() {
    old_data_directory_reads_back(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_5_data_directory_reads_back() {
    old_data_directory_reads_back(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_6_data_directory_reads_back() {
    old_data_directory_reads_back(6).await;
}

#[test]
fn every_schema_has_a_fixture() {
    for schema in 1..=NEWEST_SCHEMA {
        for file in ["data.tar.gz", "manifest.json"] {
            let p = fixture_dir(schema).join(file);
            assert!(p.is_file(), "{} is missing: run tests/fixtures/generate.sh {schema}", p.display());
        }
    }
}

/// The comparison can fail: a flipped byte in a blob file (the server's block
/// CRC refuses it) and a manifest that remembers other bytes than the server
/// returns are both reported, for those objects only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_byte_is_noticed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = unpack(1, tmp.path());
    let objects = m["objects"].as_array_mut().expect("objects");
    let find = |key: &str| objects.iter().position(|o| o["key"] == key).expect("object in manifest");
    let (big, small) = (find("big/3mib.bin"), find("small/10k.bin"));
    // A blob file is named by the SHA-256 of its bytes (blobs/ab/cd/<hex>).
    let hash = str_of(&objects[big], "sha256").to_owned();
    let blob = tmp.path().join("data/blobs").join(&hash[..2]).join(&hash[2..4]).join(&hash);
    let mut bytes = std::fs::read(&blob).expect("read the blob file");
    bytes[3 << 19] ^= 0x01;
    std::fs::write(&blob, bytes).expect("write the blob file");
    let other = sha256_hex(b"not what small/10k.bin holds");
    objects[small]["sha256"] = json!(other);

    let mut server = Server::start(tmp.path(), &SERVE_FLAGS);
    let diffs = differences(&server.client(), &m).await;
    server.stop();
    let named: BTreeSet<&str> = diffs.iter().filter_map(|d| d.split(':').next()).collect();
    assert_eq!(
        named,
        BTreeSet::from(["big/3mib.bin", "copy/3mib-copy.bin", "small/10k.bin"]),
        "differences found:\n{}",
        diffs.join("\n")
    );
}

/// Every file and directory under `dir`, with the bytes of the files.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                todo.push(p.clone());
                out.insert(p, None);
            } else {
                out.insert(p.clone(), Some(std::fs::read(&p).expect("read")));
            }
        }
    }
    out
}

/// Makes the index in `index` look written by a future walstore: schema 99 and a
/// column family this build does not know. (RocksDB itself, as only a test may use
/// it outside the storage crate.)
fn make_newer(index: &Path) {
    storage::testkit::forge_future_index(index, 99, Some("future_family")).expect("forge a newer index");
}

/// Runs `walstore <args>` to its end (at most 60 s).
fn run_to_end(args: &[&str], data: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walstore"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("WALSTORE_ROOT_ACCESS_KEY", common::ACCESS_KEY)
        .env("WALSTORE_ROOT_SECRET_KEY", common::SECRET_KEY)
        .env("WALSTORE_LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn walstore");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("walstore {args:?} is still running: it did not refuse the directory\n{out:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_data_directory_from_a_newer_schema_is_refused_in_one_line_untouched() {
    let tmp = tempfile::tempdir().expect("tmp");
    unpack(NEWEST_SCHEMA, tmp.path());
    let data = tmp.path().join("data");
    make_newer(&data.join("index"));
    let before = snapshot(&data);

    let out = run_to_end(&["serve", "--listen", "127.0.0.1:0"], &data);
    let expected = format!(
        "walstore: cannot open the data directory: index error: the index at {} has schema version 99, written by \
         a newer walstore; this build reads schema versions up to {NEWEST_SCHEMA} (upgrade walstore, or restore a \
         copy made before the upgrade)\n",
        data.join("index").display()
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    // Offline commands open the index the same way.
    let out = run_to_end(&["check"], &data);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has schema version 99, written by a newer walstore"), "{stderr}");
    assert!(snapshot(&data) == before, "refusing the directory changed files in it");
}
