//! Crash test: 16 concurrent writers (single PUTs, multipart uploads and
//! deletes), `kill -9` of the server at a random moment, restart, and then
//! every acknowledged object must read back byte for byte, every acknowledged
//! delete must hold, no staging file may remain, and the index must be
//! consistent (`walstore check`). Cycles: `WALSTORE_CRASH_CYCLES` (default 10).
//! The same on a versioned bucket: every acknowledged version reads back by its id,
//! and no acknowledged delete marker is lost.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{bytes_of, Server};
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Acknowledged: must exist with the bytes of this seed and length.
    Present { seed: u64, len: usize },
    /// Acknowledged delete: must not exist.
    Deleted,
    /// In flight when the server died: either outcome is fine.
    Unknown,
}

type Ledger = Arc<Mutex<HashMap<String, State>>>;

async fn put_single(c: &aws_sdk_s3::Client, key: &str, seed: u64, len: usize) -> bool {
    c.put_object().bucket("crash").key(key).body(ByteStream::from(bytes_of(seed, len))).send().await.is_ok()
}

async fn put_multipart(c: &aws_sdk_s3::Client, key: &str, seed: u64, len: usize) -> bool {
    let part = 5 << 20;
    let data = bytes_of(seed, len);
    let Ok(up) = c.create_multipart_upload().bucket("crash").key(key).send().await else { return false };
    let Some(id) = up.upload_id().map(str::to_owned) else { return false };
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(part).enumerate() {
        let n = i as i32 + 1;
        let Ok(r) = c
            .upload_part()
            .bucket("crash")
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
        else {
            return false;
        };
        parts.push(CompletedPart::builder().part_number(n).set_e_tag(r.e_tag().map(str::to_owned)).build());
    }
    c.complete_multipart_upload()
        .bucket("crash")
        .key(key)
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .is_ok()
}

/// One writer: until `stop`, picks an operation; records its outcome only when
/// acknowledged. Returns when the server stops answering.
async fn writer(c: aws_sdk_s3::Client, id: usize, cycle: usize, ledger: Ledger, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id as u64) << 32 ^ cycle as u64);
    for n in 0.. {
        let roll: u32 = rng.gen_range(0..100);
        if roll < 15 {
            // Delete a key this writer acknowledged earlier (keys are never shared between writers).
            let victim = {
                let l = ledger.lock().expect("ledger");
                let prefix = format!("w{id:02}/");
                let mut keys: Vec<String> = l
                    .iter()
                    .filter(|(k, s)| k.starts_with(&prefix) && matches!(s, State::Present { .. }))
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.sort();
                if keys.is_empty() {
                    None
                } else {
                    Some(keys[rng.gen_range(0..keys.len())].clone())
                }
            };
            let Some(key) = victim else { continue };
            let before = ledger.lock().expect("ledger").insert(key.clone(), State::Unknown);
            match c.delete_object().bucket("crash").key(&key).send().await {
                Ok(_) => {
                    ledger.lock().expect("ledger").insert(key, State::Deleted);
                }
                Err(_) => {
                    // The delete may or may not have happened.
                    let _ = before;
                    return;
                }
            }
            continue;
        }
        let key = format!("w{id:02}/c{cycle:03}/o{n:05}");
        let obj_seed: u64 = rng.gen();
        let multipart = roll < 25;
        let len = if multipart {
            rng.gen_range((5 << 20) + 1..(11 << 20))
        } else if roll < 60 {
            rng.gen_range(0..4096)
        } else {
            rng.gen_range(4096..(3 << 20))
        };
        ledger.lock().expect("ledger").insert(key.clone(), State::Unknown);
        let ok = if multipart {
            put_multipart(&c, &key, obj_seed, len).await
        } else {
            put_single(&c, &key, obj_seed, len).await
        };
        if ok {
            ledger.lock().expect("ledger").insert(key, State::Present { seed: obj_seed, len });
        } else {
            return; // the server died mid-request: the key stays Unknown
        }
    }
}

async fn verify(c: &aws_sdk_s3::Client, ledger: &Ledger) -> (usize, usize) {
    let snapshot: Vec<(String, State)> = ledger.lock().expect("ledger").iter().map(|(k, s)| (k.clone(), *s)).collect();
    let (mut present, mut deleted) = (0, 0);
    for (key, state) in snapshot {
        let got = c.get_object().bucket("crash").key(&key).send().await;
        match state {
            State::Present { seed, len } => {
                let o = got.unwrap_or_else(|e| panic!("acknowledged object {key} is missing after a crash: {e:?}"));
                let bytes = o.body.collect().await.expect("body").into_bytes();
                assert!(
                    bytes.as_ref() == bytes_of(seed, len).as_slice(),
                    "acknowledged object {key} has wrong bytes after a crash"
                );
                present += 1;
            }
            State::Deleted => {
                assert!(got.is_err(), "acknowledged delete of {key} was undone by a crash");
                deleted += 1;
            }
            State::Unknown => {
                // Settle it for the next cycle: whatever survived is now the truth.
                let mut l = ledger.lock().expect("ledger");
                match got {
                    Ok(_) => {
                        // Re-reading to learn seed/len is impossible; drop it from the ledger.
                        l.remove(&key);
                    }
                    Err(_) => {
                        l.insert(key, State::Deleted);
                    }
                }
            }
        }
    }
    (present, deleted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_under_load_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("WALSTORE_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let seed: u64 = std::env::var("WALSTORE_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("crash test: {cycles} cycles, seed {seed} (replay with WALSTORE_CRASH_SEED={seed})");
    let dir = tempfile::tempdir().expect("tmp");
    let mut srv = Server::start(dir.path(), &["--bucket", "crash", "--gc-grace", "0s", "--gc-interval", "100ms"]);
    let ledger: Ledger = Arc::new(Mutex::new(HashMap::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for cycle in 0..cycles {
        let c = srv.client();
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..16 {
            tasks.spawn(writer(c.clone(), id, cycle, ledger.clone(), seed));
        }
        let run = Duration::from_millis(rng.gen_range(300..1500));
        tokio::time::sleep(run).await;
        srv.kill();
        // Writers notice the dead server and return; bound the wait.
        let _ =
            tokio::time::timeout(Duration::from_secs(60), async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        srv.spawn();
        assert_eq!(srv.staging_files(), 0, "staging files survived a restart (cycle {cycle})");
        let c = srv.client();
        let (present, deleted) = verify(&c, &ledger).await;
        println!("cycle {cycle}: ran {run:?}, verified {present} objects and {deleted} deletes");
    }
    stop_and_check(&mut srv);
    // After GC with no grace, no orphan blob remains: every blob file is referenced.
    let out = srv.cli(&["gc", "--grace", "0s"]);
    assert!(out.status.success(), "walstore gc: {}", String::from_utf8_lossy(&out.stderr));
    let out = srv.cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("orphan blob files: 0"), "orphans remain after GC: {text}");
}

/// A CompleteMultipartUpload whose answer is lost — the server dies between
/// the commit and the response (failpoint `complete-after-commit`, which
/// raises SIGKILL) — is retried after the restart and gets the answer the
/// first attempt would have given: same ETag and checksum, the object intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_repeated_after_kill_between_commit_and_response_answers_the_same() {
    use std::os::unix::process::ExitStatusExt;

    use aws_sdk_s3::types::ChecksumAlgorithm;
    use md5::{Digest, Md5};

    let dir = tempfile::tempdir().expect("tmp");
    let mut srv =
        Server::start_env(dir.path(), &["--bucket", "crash"], &[("WALSTORE_FAILPOINTS", "complete-after-commit")]);
    let c = srv.client();
    let key = "base_000000010000000000000004/tar_partitions/part_1.tar.br";
    let data = bytes_of(7, (5 << 20) + 12_345);
    let up = c
        .create_multipart_upload()
        .bucket("crash")
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .expect("create");
    let id = up.upload_id().expect("upload id").to_owned();
    let mut parts = Vec::new();
    let mut md5s = Vec::new();
    for (i, chunk) in data.chunks(5 << 20).enumerate() {
        let n = i as i32 + 1;
        let r = c
            .upload_part()
            .bucket("crash")
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .expect("upload part");
        md5s.extend_from_slice(&Md5::digest(chunk));
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(r.e_tag().map(str::to_owned))
                .set_checksum_crc32(r.checksum_crc32().map(str::to_owned))
                .build(),
        );
    }
    let list = CompletedMultipartUpload::builder().set_parts(Some(parts.clone())).build();
    let complete = |c: &aws_sdk_s3::Client| {
        c.complete_multipart_upload().bucket("crash").key(key).upload_id(&id).multipart_upload(list.clone()).send()
    };
    let lost = complete(&c).await;
    assert!(lost.is_err(), "the failpoint did not fire: {lost:?}");
    let status = srv.child.as_mut().expect("child").wait().expect("wait");
    assert_eq!(status.signal(), Some(9), "the server did not die by SIGKILL: {status:?}");
    srv.child = None;

    srv.env.clear();
    srv.spawn();
    let c = srv.client();
    let want_etag = format!("\"{}-2\"", hex::encode(Md5::digest(&md5s)));
    let first = complete(&c).await.expect("repeated Complete after the restart");
    assert_eq!(first.e_tag(), Some(want_etag.as_str()));
    let crc = first.checksum_crc32().expect("composite CRC32 in the answer").to_owned();
    assert!(crc.ends_with("-2"), "composite checksum without -N: {crc}");
    // Again, and again after a clean restart: the same answer.
    let second = complete(&c).await.expect("third Complete");
    assert_eq!((second.e_tag(), second.checksum_crc32()), (first.e_tag(), Some(crc.as_str())));
    assert_eq!(srv.stop(), Some(0));
    srv.spawn();
    let c = srv.client();
    let third = complete(&c).await.expect("Complete after a clean restart");
    assert_eq!((third.e_tag(), third.checksum_crc32()), (first.e_tag(), Some(crc.as_str())));

    // Another part list is not a retry of this Complete.
    let other = CompletedMultipartUpload::builder().set_parts(Some(parts[..1].to_vec())).build();
    let e = c
        .complete_multipart_upload()
        .bucket("crash")
        .key(key)
        .upload_id(&id)
        .multipart_upload(other)
        .send()
        .await
        .expect_err("a different part list");
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchUpload"));
    let got = c.get_object().bucket("crash").key(key).send().await.expect("get");
    assert_eq!(got.e_tag(), Some(want_etag.as_str()));
    assert!(got.body.collect().await.expect("body").into_bytes() == data, "the object reads back other bytes");
    let ups = c.list_multipart_uploads().bucket("crash").send().await.expect("list uploads");
    assert!(ups.uploads().is_empty(), "the completed upload is still listed: {:?}", ups.uploads());
    assert_eq!(srv.stop(), Some(0));
    let out = srv.cli(&["check"]);
    assert!(out.status.success(), "walstore check: {}", String::from_utf8_lossy(&out.stdout));
}

/// What a versioned key must show after a crash: every acknowledged version by its
/// id, and whether the last acknowledged operation left it deleted (a delete marker
/// on top) — unless an operation after it was in flight.
#[derive(Clone, Debug, Default)]
struct VersionedKey {
    versions: Vec<(String, u64, usize)>,
    deleted: bool,
    in_flight: bool,
}

type VersionLedger = Arc<Mutex<HashMap<String, VersionedKey>>>;

/// One writer on a versioned bucket: overwrites (new versions) and deletes without a
/// version id (delete markers) on its own four keys, recording what was acknowledged.
async fn versioned_writer(c: aws_sdk_s3::Client, id: usize, cycle: usize, ledger: VersionLedger, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id as u64) << 40 ^ cycle as u64);
    loop {
        let key = format!("v{id:02}/k{}", rng.gen_range(0..4));
        let delete = rng.gen_range(0..100) < 25;
        ledger.lock().expect("ledger").entry(key.clone()).or_default().in_flight = true;
        if delete {
            if c.delete_object().bucket("vcrash").key(&key).send().await.is_err() {
                return;
            }
            let mut l = ledger.lock().expect("ledger");
            let k = l.entry(key).or_default();
            (k.deleted, k.in_flight) = (true, false);
        } else {
            let (s, len) = (rng.gen::<u64>(), rng.gen_range(0..200_000));
            let Ok(r) = c.put_object().bucket("vcrash").key(&key).body(ByteStream::from(bytes_of(s, len))).send().await
            else {
                return;
            };
            let v = r.version_id().expect("a versioned PUT answers a version id").to_owned();
            let mut l = ledger.lock().expect("ledger");
            let k = l.entry(key).or_default();
            k.versions.push((v, s, len));
            (k.deleted, k.in_flight) = (false, false);
        }
    }
}

/// `kill -9` under versioned writes: no acknowledged version is lost (each reads back by
/// its id), no delete marker is lost or resurrects the object, and the index stays
/// consistent, versions counted (`walstore check`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_under_versioned_writes_loses_no_version() {
    let cycles: usize = std::env::var("WALSTORE_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10) / 2;
    let seed: u64 = std::env::var("WALSTORE_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("versioned crash test: {} cycles, seed {seed}", cycles.max(3));
    let dir = tempfile::tempdir().expect("tmp");
    let mut srv = Server::start(dir.path(), &["--gc-grace", "0s", "--gc-interval", "100ms"]);
    let c = srv.client();
    c.create_bucket().bucket("vcrash").send().await.expect("create");
    c.put_bucket_versioning()
        .bucket("vcrash")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enable versioning");
    let ledger: VersionLedger = Arc::new(Mutex::new(HashMap::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for cycle in 0..cycles.max(3) {
        let c = srv.client();
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..8 {
            tasks.spawn(versioned_writer(c.clone(), id, cycle, ledger.clone(), seed));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        srv.kill();
        let _ =
            tokio::time::timeout(Duration::from_secs(60), async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        srv.spawn();
        let c = srv.client();
        let snapshot: Vec<(String, VersionedKey)> =
            ledger.lock().expect("ledger").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut checked = 0;
        for (key, k) in snapshot {
            for (v, s, len) in &k.versions {
                let o = c.get_object().bucket("vcrash").key(&key).version_id(v).send().await.unwrap_or_else(|e| {
                    panic!("acknowledged version {v} of {key} is missing after a crash (cycle {cycle}): {e:?}")
                });
                let bytes = o.body.collect().await.expect("body").into_bytes();
                assert!(bytes.as_ref() == bytes_of(*s, *len).as_slice(), "version {v} of {key}: wrong bytes");
                checked += 1;
            }
            if !k.in_flight {
                let latest = c.get_object().bucket("vcrash").key(&key).send().await;
                match (k.deleted, latest) {
                    (true, Ok(_)) => panic!("{key}: an acknowledged delete marker was lost (cycle {cycle})"),
                    (false, Ok(o)) => {
                        let want = k.versions.last().expect("a version");
                        assert_eq!(o.version_id(), Some(want.0.as_str()), "{key}: the latest version moved");
                    }
                    (false, Err(e)) => panic!("{key}: the latest acknowledged version is not current: {e:?}"),
                    (true, Err(_)) => {}
                }
            }
            // A key whose last operation was in flight stays unsettled until its next
            // acknowledged operation says what its latest version is.
        }
        println!("cycle {cycle}: {checked} acknowledged versions read back");
    }
    stop_and_check(&mut srv);
}

/// Stops the server cleanly, then `walstore check`: reference counts agree with the
/// index (versions included).
fn stop_and_check(srv: &mut Server) {
    assert_eq!(srv.stop(), Some(0), "clean shutdown");
    let out = srv.cli(&["check"]);
    assert!(
        out.status.success(),
        "walstore check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
