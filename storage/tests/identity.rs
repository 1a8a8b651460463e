//! The identity check of the storage engine: a repository learns its cluster from the
//! first upload that names one, refuses (and quarantines) uploads from another cluster,
//! accepts what it cannot read, keeps completed backups closed, and forgets an identity
//! only when told to. Real PostgreSQL and WAL-G: `tests/test_identity.py`.

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use storage::wal::{DeleteAuth, IdentityCheck, StoredPolicy};
use storage::*;

fn open(dir: &std::path::Path) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.gc_grace = Duration::from_secs(60);
    Store::open(cfg).expect("open store")
}

fn bucket(s: &Store, name: &str) -> BucketName {
    let b = BucketName::parse(name).expect("bucket name");
    s.create_bucket(&b).expect("create bucket");
    b
}

fn stage(s: &Store, data: &[u8]) -> StagedBlob {
    let mut w = s.blob_writer(&[]).expect("writer");
    w.write(data).expect("write");
    w.finish().expect("finish")
}

fn put(s: &Store, b: &BucketName, key: &str, data: &[u8]) -> Result<ObjectInfo> {
    let key = ObjectKey::parse(key).expect("key");
    s.put_object(PutRequest {
        bucket: b,
        key: &key,
        blob: stage(s, data),
        meta: ObjectMeta::default(),
        checksum: None,
        condition: WriteCondition::None,
        actor: "test",
        lock: Default::default(),
    })
}

const A: u64 = 7_316_693_282_224_380_736;
const B: u64 = 7_316_700_000_000_000_001;
const SEG: u64 = 16 << 20;

/// A whole 16 MiB segment `n` on timeline `tli` of cluster `sysid` (PostgreSQL 15 magic),
/// with 4 MiB of incompressible filler after the header: the first compressed block is
/// larger than what the identity check reads of a body.
fn segment(sysid: u64, tli: u32, n: u64) -> Vec<u8> {
    let mut b = vec![0u8; SEG as usize];
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&2u16.to_le_bytes());
    b[4..8].copy_from_slice(&tli.to_le_bytes());
    b[8..16].copy_from_slice(&(n * SEG).to_le_bytes());
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    b[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ sysid ^ n;
    for v in b[8192..].iter_mut().take(4 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = x as u8;
    }
    b
}

fn lz4(data: &[u8]) -> Vec<u8> {
    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
    e.write_all(data).expect("lz4");
    e.finish().expect("lz4")
}

fn name(tli: u32, n: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", n / 256, n % 256)
}

fn refused(r: Result<ObjectInfo>) -> String {
    match r {
        Err(Error::PreconditionFailed(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn learns_the_cluster_and_refuses_another_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "pgb");
    // lz4, as WAL-G writes by default, staged as a file (not inline).
    put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 1)), &lz4(&segment(A, 1, 1))).expect("first segment");
    let id = s.repo_identity(&b, "db/").expect("identity").expect("learned");
    assert_eq!(id.identity.system_identifier, A);
    assert_eq!(id.identity.pg_major, Some(15));
    assert_eq!(id.identity.segment_size, Some(SEG as u32));
    assert_eq!(id.learned_from, format!("db/wal_005/{}.lz4", name(1, 1)));
    put(&s, &b, &format!("db/wal_005/{}.zst", name(1, 2)), &zstd::encode_all(&segment(A, 1, 2)[..], 1).expect("zstd"))
        .expect("same cluster, other codec");
    put(&s, &b, &format!("db/wal_005/{}", name(1, 3)), &segment(A, 1, 3)).expect("same cluster, uncompressed");

    // Another cluster: a new segment, and one whose name collides with a stored one.
    for n in [4, 1] {
        let key = format!("db/wal_005/{}.lz4", name(1, n));
        let msg = refused(put(&s, &b, &key, &lz4(&segment(B, 1, n))));
        assert!(msg.contains(&A.to_string()) && msg.contains(&B.to_string()), "{msg}");
        assert!(msg.contains("system identifier") && msg.contains("reset-identity"), "{msg}");
    }
    assert!(s.head_object(&b, &ObjectKey::parse(&format!("db/wal_005/{}.lz4", name(1, 4))).expect("k")).is_err());
    // PostgreSQL retries a failed archive_command forever: refused again, kept once.
    for _ in 0..3 {
        refused(put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 4)), &lz4(&segment(B, 1, 4))));
    }
    let q = s.quarantine().expect("quarantine");
    assert_eq!(q.len(), 2, "both refused uploads kept, each once");
    assert!(q.iter().all(|e| e.record.reason.starts_with("identity-conflict")));
    // The first cluster goes on archiving; a promoted restore of it (new timeline) too.
    put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 4)), &lz4(&segment(A, 1, 4))).expect("first cluster");
    put(&s, &b, &format!("db/wal_005/{}.lz4", name(2, 5)), &lz4(&segment(A, 1, 5))).expect("promoted restore");
    let c = s.identity_counters();
    assert_eq!(c.conflicts[0].load(std::sync::atomic::Ordering::Relaxed), 5);
    let st = s.repo_identity_stats(&b, "db/");
    assert_eq!((st.conflicts, st.verified), (5, 4));
    // Another repository of the bucket has an identity of its own.
    put(&s, &b, &format!("other/wal_005/{}.lz4", name(1, 1)), &lz4(&segment(B, 1, 1))).expect("other repository");
    // Remembered across a restart.
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.repo_identity(&b, "db/").expect("identity").expect("kept").identity.system_identifier, A);
    refused(put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 9)), &lz4(&segment(B, 1, 9))));
    assert!(s.check().expect("check").problems.is_empty());
}

fn sentinel(sysid: u64, version: u64) -> Vec<u8> {
    format!(r#"{{"LSN":33554472,"FinishLSN":33554720,"PgVersion":{version},"SystemIdentifier":{sysid},"IsPermanent":false}}"#)
        .into_bytes()
}

fn metadata(sysid: u64, version: u64, permanent: bool) -> Vec<u8> {
    format!(r#"{{"start_lsn":33554472,"finish_lsn":33554720,"pg_version":{version},"system_identifier":{sysid},"is_permanent":{permanent}}}"#)
        .into_bytes()
}

#[test]
fn backups_are_checked_and_completed_backups_stay_closed() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::starting_now());
    let mut cfg = StoreConfig::new(dir.path());
    cfg.clock = clock.clone();
    let s = Store::open(cfg).expect("open store");
    let b = bucket(&s, "pgb");
    let base = "db/basebackups_005/base_000000010000000000000002";
    put(&s, &b, &format!("{base}/tar_partitions/part_1.tar.lz4"), b"tar bytes").expect("part");
    put(&s, &b, &format!("{base}/metadata.json"), &metadata(A, 150_004, false)).expect("metadata teaches");
    let id = s.repo_identity(&b, "db/").expect("identity").expect("learned");
    assert_eq!((id.identity.system_identifier, id.identity.pg_major, id.identity.segment_size), (A, Some(15), None));
    put(&s, &b, &format!("{base}_backup_stop_sentinel.json"), &sentinel(A, 150_004)).expect("sentinel");
    // A segment completes the identity (segment size) and keeps where it was learned.
    put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 2)), &lz4(&segment(A, 1, 2))).expect("segment");
    let id = s.repo_identity(&b, "db/").expect("identity").expect("learned");
    assert_eq!(id.identity.segment_size, Some(SEG as u32));
    assert_eq!(id.learned_from, format!("{base}/metadata.json"));

    // backup-mark rewrites metadata.json: fine from this cluster, refused from another.
    put(&s, &b, &format!("{base}/metadata.json"), &metadata(A, 150_004, true)).expect("backup-mark");
    let msg = refused(put(&s, &b, &format!("{base}/metadata.json"), &metadata(B, 150_004, true)));
    assert!(msg.contains(&B.to_string()), "{msg}");
    // Another major version of the same cluster is refused too.
    let other = "db/basebackups_005/base_000000010000000000000009";
    put(&s, &b, &format!("{other}/tar_partitions/part_1.tar.lz4"), b"x").expect("part");
    let msg = refused(put(&s, &b, &format!("{other}/metadata.json"), &metadata(A, 160_001, false)));
    assert!(msg.contains("PostgreSQL 16") && msg.contains("PostgreSQL 15"), "{msg}");
    let msg = refused(put(&s, &b, &format!("{other}_backup_stop_sentinel.json"), &sentinel(B, 150_004)));
    assert!(msg.contains("stop sentinel"), "{msg}");

    // Another cluster's backup of the same name cannot replace the completed one's parts.
    let part = format!("{base}/tar_partitions/part_1.tar.lz4");
    let msg = refused(put(&s, &b, &part, b"another cluster's tar"));
    assert!(msg.contains("is complete"), "{msg}");
    put(&s, &b, &part, b"tar bytes").expect("the same bytes again (a retry) are fine");
    // A copy tool that sent the sentinel first fills the backup in (for an hour).
    put(&s, &b, &format!("{base}/tar_partitions/part_2.tar.lz4"), b"part 2").expect("within the grace");
    clock.advance(Duration::from_secs(3601));
    let msg = refused(put(&s, &b, &format!("{base}/tar_partitions/part_3.tar.lz4"), b"an extra part"));
    assert!(msg.contains("is complete"), "{msg}");
    // After a reset (pg_upgrade), backup-mark of the old cluster's backup still works: its
    // metadata.json is checked against its own sentinel.
    s.reset_identity(&b, "db/", "admin", "pg_upgrade").expect("reset");
    put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 40)), &lz4(&segment(B, 1, 40))).expect("the new cluster");
    put(&s, &b, &format!("{base}/metadata.json"), &metadata(A, 150_004, false)).expect("backup-mark of the old");
    let msg = refused(put(&s, &b, &format!("{base}/metadata.json"), &metadata(B, 150_004, false)));
    assert!(msg.contains("stop sentinel says"), "{msg}");
    let info = s.head_object(&b, &ObjectKey::parse(&part).expect("k")).expect("head");
    let mut r = s.read_object(&info, 0..info.size).expect("read");
    assert_eq!(&*r.next_chunk().expect("chunk").expect("bytes"), b"tar bytes");
    // Delete protection still decides deletes; the closed backup is about writes only.
    let _ = s.delete_object(&b, &ObjectKey::parse(&part).expect("k"), DeleteAuth::Client { principal: "t" });
}

#[test]
fn warn_off_and_opaque() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "pgb");
    put(&s, &b, &format!("w/wal_005/{}.lz4", name(1, 1)), &lz4(&segment(A, 1, 1))).expect("learn");
    put(&s, &b, &format!("o/wal_005/{}.lz4", name(1, 1)), &lz4(&segment(A, 1, 1))).expect("learn");
    let warn = StoredPolicy { identity_check: Some(IdentityCheck::Warn), ..StoredPolicy::default() };
    s.set_policy(&b, "w/", &warn, "test").expect("policy");
    s.set_policy(
        &b,
        "o/",
        &StoredPolicy { identity_check: Some(IdentityCheck::Off), ..StoredPolicy::default() },
        "test",
    )
    .expect("policy");
    put(&s, &b, &format!("w/wal_005/{}.lz4", name(1, 2)), &lz4(&segment(B, 1, 2))).expect("warn accepts");
    assert_eq!(s.repo_identity_stats(&b, "w/").conflicts, 1);
    put(&s, &b, &format!("o/wal_005/{}.lz4", name(1, 2)), &lz4(&segment(B, 1, 2))).expect("off accepts");
    assert_eq!(s.repo_identity_stats(&b, "o/").conflicts, 0);
    assert!(s.quarantine().expect("q").is_empty());
    // The mode survives a restart (stored as the policy's trailer), and the default
    // policy's bytes are those of earlier releases.
    drop(s);
    let s = open(dir.path());
    let policies = s.policies(&b).expect("policies");
    assert_eq!(policies.iter().find(|(p, _)| p == "w/").expect("w").1, warn);
    s.set_policy(&b, "d/", &StoredPolicy::default(), "test").expect("policy");
    assert_eq!(s.policy_for(&b, "d/").expect("policy"), StoredPolicy::default());

    // Client-side encryption (libsodium, openpgp) hides the page: accepted, counted.
    let noise: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    for key in [format!("e/wal_005/{}.lz4", name(1, 1)), format!("e/wal_005/{}", name(1, 2))] {
        put(&s, &b, &key, &noise).expect("opaque accepted");
    }
    assert_eq!(s.repo_identity_stats(&b, "e/").opaque, 2);
    assert!(s.repo_identity(&b, "e/").expect("identity").is_none(), "nothing learned from what cannot be read");
}

#[test]
fn a_segment_under_the_wrong_name_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "pgb");
    let msg = refused(put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 7)), &lz4(&segment(A, 1, 6))));
    assert!(msg.contains("page address"), "{msg}");
    let msg = refused(put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 7)), &lz4(&segment(A, 3, 7))));
    assert!(msg.contains("timeline 3"), "{msg}");
    assert!(s.repo_identity(&b, "db/").expect("identity").is_none());
}

#[test]
fn reset_identity_lets_a_new_cluster_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "pgb");
    put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 1)), &lz4(&segment(A, 1, 1))).expect("learn");
    refused(put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 2)), &lz4(&segment(B, 1, 2))));
    assert!(matches!(s.reset_identity(&b, "nothing/", "admin", "why"), Err(Error::InvalidArgument(_))));
    let old = s.reset_identity(&b, "db/", "admin", "pg_upgrade to 16").expect("reset");
    assert_eq!(old.identity.system_identifier, A);
    put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, 2)), &lz4(&segment(B, 1, 2))).expect("new cluster");
    assert_eq!(s.repo_identity(&b, "db/").expect("id").expect("learned").identity.system_identifier, B);
    let audit = s.audit_log(20).expect("audit");
    assert!(audit.iter().any(|r| r.action == "identity-reset" && r.reason.contains("pg_upgrade to 16")), "{audit:?}");
    assert!(audit.iter().filter(|r| r.action == "identity-learned").count() >= 2);
}

#[test]
fn multipart_segments_are_checked() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "pgb");
    put(&s, &b, &format!("db/wal_005/{}", name(1, 1)), &segment(A, 1, 1)).expect("learn");
    for (sysid, ok) in [(A, true), (B, false)] {
        let k = ObjectKey::parse(&format!("db/wal_005/{}", name(1, if ok { 2 } else { 3 }))).expect("key");
        let id = s.create_multipart(&b, &k, ObjectMeta::default(), None, false, Default::default()).expect("create");
        let etag = s
            .upload_part(&b, &k, &id, 1, stage(&s, &segment(sysid, 1, if ok { 2 } else { 3 })), None)
            .expect("part")
            .etag;
        let parts = [CompletedPart { number: 1, etag, checksum: None }];
        let r = s.complete_multipart(&CompleteRequest {
            bucket: &b,
            key: &k,
            upload_id: &id,
            parts: &parts,
            condition: WriteCondition::None,
            expected: ExpectedObject::default(),
            actor: "test",
        });
        assert_eq!(r.is_ok(), ok, "{r:?}");
    }
    // The archiver's retry of the refused segment: refused again, kept once, parts released.
    let k = ObjectKey::parse(&format!("db/wal_005/{}", name(1, 3))).expect("key");
    let id = s.create_multipart(&b, &k, ObjectMeta::default(), None, false, Default::default()).expect("create");
    let etag = s.upload_part(&b, &k, &id, 1, stage(&s, &segment(B, 1, 3)), None).expect("part").etag;
    let parts = [CompletedPart { number: 1, etag, checksum: None }];
    let req = CompleteRequest {
        bucket: &b,
        key: &k,
        upload_id: &id,
        parts: &parts,
        condition: WriteCondition::None,
        expected: ExpectedObject::default(),
        actor: "test",
    };
    assert!(matches!(s.complete_multipart(&req), Err(Error::PreconditionFailed(_))));
    assert_eq!(s.quarantine().expect("q").len(), 1);
    assert!(s.check().expect("check").problems.is_empty());
}

#[test]
fn two_first_uploads_from_different_clusters_cannot_both_teach() {
    for round in 0..5 {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Arc::new(open(dir.path()));
        let b = bucket(&s, "pgb");
        let go = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [(A, 1u64), (B, 2u64)]
            .into_iter()
            .map(|(sysid, n)| {
                let (s, b, go) = (s.clone(), b.clone(), go.clone());
                let body = lz4(&segment(sysid, 1, n));
                std::thread::spawn(move || {
                    go.wait();
                    put(&s, &b, &format!("db/wal_005/{}.lz4", name(1, n)), &body).is_ok()
                })
            })
            .collect();
        let ok: Vec<bool> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        assert_eq!(ok.iter().filter(|x| **x).count(), 1, "round {round}: {ok:?}");
        let winner = if ok[0] { A } else { B };
        assert_eq!(s.repo_identity(&b, "db/").expect("id").expect("learned").identity.system_identifier, winner);
    }
}
