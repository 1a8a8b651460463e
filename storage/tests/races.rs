//! The delete guard decides on a snapshot of a repository; a write that lands
//! between that snapshot and the delete must not be lost to it. Here a
//! `backup-mark` (WAL-G rewriting `metadata.json` with `is_permanent: true`)
//! races a client's deletion of that very backup, thousands of times, each
//! in a fresh repository so evaluations stay small.
//!
//! The oracle needs no timing: the mark rewrites `metadata.json`, one of the
//! deleted keys. If the delete came first, the mark's PUT recreates that key;
//! if the mark came first, the backup is permanent and the delete must be
//! refused, leaving every object. A backup with no object left means the
//! delete went through on a decision the mark had already made stale.

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use storage::wal::{DeleteAuth, DeleteProtection, RetentionPolicy, StoredPolicy};
use storage::*;

const SEG: u64 = 16 << 20;

fn stage(s: &Store, data: &[u8]) -> StagedBlob {
    let mut w = s.blob_writer(&[]).expect("writer");
    w.write(data).expect("write");
    w.finish().expect("finish")
}

fn put(s: &Store, b: &BucketName, key: &str, data: &[u8]) -> storage::Result<ObjectInfo> {
    let key = ObjectKey::parse(key).expect("key");
    s.put_object(PutRequest {
        bucket: b,
        key: &key,
        blob: stage(s, data),
        meta: ObjectMeta::default(),
        checksum: None,
        condition: WriteCondition::None,
        actor: "race",
        lock: Default::default(),
    })
}

fn seg_name(n: u64) -> String {
    format!("00000001{:08X}{:08X}", n / 256, n % 256)
}

/// A complete full backup starting in segment `start`, its own WAL `start..=start+1`.
fn backup(s: &Store, b: &BucketName, repo: &str, start: u64) -> (String, Vec<String>) {
    let name = format!("base_{}", seg_name(start));
    for n in start..=start + 1 {
        put(s, b, &format!("{repo}wal_005/{}.lz4", seg_name(n)), format!("seg {repo} {n}").as_bytes()).expect("seg");
    }
    let (lsn, finish) = (start * SEG + 0x28, (start + 1) * SEG + 0x100);
    let part = format!("{repo}basebackups_005/{name}/tar_partitions/part_1.tar.lz4");
    let meta = format!("{repo}basebackups_005/{name}/metadata.json");
    let sentinel = format!("{repo}basebackups_005/{name}_backup_stop_sentinel.json");
    put(s, b, &part, format!("tar {repo} {name}").as_bytes()).expect("part");
    put(s, b, &meta, metadata(lsn, finish, false).as_bytes()).expect("meta");
    put(s, b, &sentinel, format!(r#"{{"LSN":{lsn},"FinishLSN":{finish},"IsPermanent":false}}"#).as_bytes())
        .expect("sentinel");
    (name, vec![sentinel, meta, part])
}

fn metadata(lsn: u64, finish: u64, permanent: bool) -> String {
    format!(r#"{{"start_lsn":{lsn},"finish_lsn":{finish},"is_permanent":{permanent}}}"#)
}

#[test]
fn backup_mark_never_loses_to_a_concurrent_delete() {
    let iterations: usize = std::env::var("RACE_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
    let mut cfg = StoreConfig::new(dir.path());
    cfg.clock = clock.clone();
    let store = Arc::new(Store::open(cfg).expect("open"));
    let bucket = BucketName::parse("race").expect("bucket");
    store.create_bucket(&bucket).expect("create");
    // B1 is released (older than the anchor B2, one backup is enough), unless permanent.
    store.set_default_policy(StoredPolicy {
        policy: RetentionPolicy {
            recovery_window: Duration::from_secs(3600),
            min_backups: 1,
            clock_skew: Duration::ZERO,
            min_object_age: Duration::ZERO,
            archive_lag_grace: Duration::ZERO,
            protection: DeleteProtection::ProtectRequired,
            ..RetentionPolicy::default()
        },
        split_brain_guard: true,
        ..StoredPolicy::default()
    });
    let (mut deleted_first, mut refused) = (0, 0);
    for i in 0..iterations {
        let repo = format!("r{i}/");
        let (_b1, b1_keys) = backup(&store, &bucket, &repo, 2);
        clock.advance(Duration::from_secs(3600));
        backup(&store, &bucket, &repo, 10);
        clock.advance(Duration::from_secs(86_400));
        // The guard's evaluation before the race releases B1.
        let ev = store.evaluation(&bucket, &repo).expect("evaluate");
        assert!(
            ev.horizon.deletable.iter().any(|u| u.paths().iter().any(|p| b1_keys[0].ends_with(p))),
            "iteration {i}: B1 should be released before the race: {:?}",
            ev.horizon.backups
        );
        let keys: Vec<ObjectKey> = b1_keys.iter().map(|k| ObjectKey::parse(k).expect("key")).collect();
        let barrier = Arc::new(Barrier::new(2));
        let (s, b, k, gate) = (store.clone(), bucket.clone(), keys.clone(), barrier.clone());
        let deleter = std::thread::spawn(move || {
            gate.wait();
            s.delete_objects(&b, &k, &[], DeleteAuth::Client { principal: "race" }).expect("delete")
        });
        barrier.wait();
        let marked = put(&store, &bucket, &b1_keys[1], metadata(2 * SEG + 0x28, 3 * SEG + 0x100, true).as_bytes());
        let outcome = deleter.join().expect("deleter");
        marked.expect("backup-mark's PUT");
        let left: Vec<&String> =
            b1_keys.iter().filter(|k| store.head_object(&bucket, &ObjectKey::parse(k).expect("key")).is_ok()).collect();
        match left.len() {
            // Every object: the mark came first and the delete was refused as a whole.
            3 => {
                assert!(
                    outcome.iter().all(|r| matches!(r, Err(storage::Error::AccessDenied(_)))),
                    "iteration {i}: {outcome:?}"
                );
                refused += 1;
            }
            // Only metadata.json: the delete came first, the mark wrote it again after.
            1 if left[0] == &b1_keys[1] => {
                assert!(outcome.iter().all(|r| matches!(r, Ok(true))), "iteration {i}: {outcome:?}");
                deleted_first += 1;
            }
            _ => panic!(
                "iteration {i}: the permanent backup lost objects to a delete decided before the mark \
                 (left: {left:?}, delete answered {outcome:?})"
            ),
        }
    }
    eprintln!("{iterations} races: {refused} deletes refused after the mark, {deleted_first} deletes before it");
    // Both orders happened, so the race was real.
    assert!(refused > 0 && deleted_first > 0, "refused {refused}, deleted first {deleted_first}");
    let check = store.check().expect("check");
    assert!(check.problems.is_empty(), "{:?}", check.problems);
}
