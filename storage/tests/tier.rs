//! Tiering invariants of the storage engine: what is evicted and what stays, the
//! index and the blob files after eviction, crash leftovers, the ways an evicted
//! blob comes back (same bytes uploaded again, CopyObject, rehydration), GC, and
//! the rules around versioning and replication targets.
//!
//! The target is a stand-in here (the copies it holds are the bytes the test
//! recorded before eviction); the real client against MinIO is exercised by
//! `tests/test_tiering.py`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use storage::wal::DeleteAuth;
use storage::*;

const ME: DeleteAuth<'static> = DeleteAuth::Client { principal: "test" };

/// Copies "on the target", by (bucket, key).
#[derive(Default)]
struct FakeTarget {
    copies: Mutex<HashMap<(String, String), Vec<u8>>>,
    down: AtomicBool,
}

struct Slice(Vec<u8>);

impl BlobFile for Slice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let at = offset as usize;
        let src = self.0.get(at..at + buf.len()).ok_or_else(|| std::io::Error::other("short"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

impl RemoteBlobs for FakeTarget {
    fn open(&self, _: &BlobHash, loc: &RemoteLoc, _: std::ops::Range<u64>) -> Result<Box<dyn BlobFile>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::RemoteUnavailable("connection refused".into()));
        }
        let copies = self.copies.lock().expect("lock");
        let obj = copies
            .get(&(loc.bucket.clone(), loc.key.clone()))
            .ok_or_else(|| Error::Corrupt(format!("no copy of {}", loc.key)))?;
        let bytes = obj[loc.offset as usize..(loc.offset + loc.size) as usize].to_vec();
        Ok(Box::new(Slice(bytes)))
    }
}

fn open(dir: &std::path::Path, target: &Arc<FakeTarget>) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.gc_grace = Duration::from_secs(60);
    let s = Store::open(cfg).expect("open store");
    s.set_remote_blobs(target.clone());
    s
}

fn bucket(s: &Store, name: &str) -> BucketName {
    let b = BucketName::parse(name).expect("bucket name");
    s.create_bucket(&b).expect("create bucket");
    b
}

fn put(s: &Store, b: &BucketName, key: &str, data: &[u8]) -> ObjectInfo {
    let mut w = s.blob_writer(&[]).expect("writer");
    w.write(data).expect("write");
    let key = ObjectKey::parse(key).expect("key");
    s.put_object(PutRequest {
        bucket: b,
        key: &key,
        blob: w.finish().expect("finish"),
        meta: ObjectMeta::default(),
        checksum: None,
        condition: WriteCondition::None,
        actor: "test",
        lock: Default::default(),
    })
    .expect("put")
}

fn read(s: &Store, info: &ObjectInfo, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
    let mut r = s.read_object(info, range)?;
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk()? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

fn head(s: &Store, b: &BucketName, key: &str) -> ObjectInfo {
    s.head_object(b, &ObjectKey::parse(key).expect("key")).expect("head")
}

fn blob_path(dir: &std::path::Path, hash: &BlobHash) -> std::path::PathBuf {
    let hex = hash.to_hex();
    dir.join("blobs").join(&hex[0..2]).join(&hex[2..4]).join(&hex)
}

fn data(label: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(label)).collect()
}

fn target_rec(name: &str) -> TargetRecord {
    TargetRecord {
        name: name.into(),
        source_bucket: None,
        source_prefix: String::new(),
        paused: false,
        created: Timestamp::from_millis(0),
        spec: "{}".into(),
        from_config: false,
    }
}

fn policy(bucket: &str, target: &str) -> TierPolicy {
    TierPolicy {
        bucket: bucket.into(),
        prefix: String::new(),
        target: target.into(),
        after_ms: 0,
        keep_newest_backups: 1,
        rehydrate_on_read: false,
        created: Timestamp::from_millis(0),
    }
}

/// Records the copy "the target" holds of `info`, then evicts it.
fn copy_and_evict(s: &Store, t: &FakeTarget, info: &ObjectInfo) -> u64 {
    let bytes = read(s, info, 0..info.size).expect("read before eviction");
    t.copies.lock().expect("lock").insert((info.bucket.as_str().into(), info.key.as_str().into()), bytes);
    s.evict(info, "dr").expect("evict")
}

#[test]
fn eviction_removes_the_file_and_reads_come_from_the_target() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    let body = data(1, 3 * BLOCK_SIZE as usize + 77);
    let info = put(&s, &b, "wal_005/000000010000000000000001.lz4", &body);
    let path = blob_path(dir.path(), &info.blobs[0].hash);
    assert!(path.exists());
    assert_eq!(copy_and_evict(&s, &t, &info), body.len() as u64);
    assert!(!path.exists(), "the blob file is gone");
    // Evicting again changes nothing.
    assert_eq!(s.evict(&info, "dr").expect("again"), 0);
    assert_eq!(read(&s, &info, 0..info.size).expect("whole"), body);
    let r = BLOCK_SIZE as u64 - 3..2 * BLOCK_SIZE as u64 + 9;
    assert_eq!(read(&s, &info, r.clone()).expect("range"), body[r.start as usize..r.end as usize]);
    assert_eq!(head(&s, &b, "wal_005/000000010000000000000001.lz4").etag, info.etag);
    let report = s.check().expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let scrub = s.scrub().expect("scrub");
    assert!(scrub.corrupt.is_empty(), "the local scrub skips evicted blobs: {:?}", scrub.corrupt);
    let totals = s.tier_totals().expect("totals");
    assert_eq!(totals.get("bkt"), Some(&(1, body.len() as u64)));

    // Target down: a clear, retryable error; nothing is served.
    t.down.store(true, Ordering::SeqCst);
    assert!(matches!(read(&s, &info, 0..info.size), Err(Error::RemoteUnavailable(_))));
    t.down.store(false, Ordering::SeqCst);

    // Wrong bytes from the target fail their block CRC and are never served.
    t.copies.lock().expect("lock").values_mut().for_each(|v| v[BLOCK_SIZE as usize + 1] ^= 1);
    let mut rd = s.read_object(&info, 0..info.size).expect("reader");
    assert!(rd.next_chunk().expect("first block is intact").is_some());
    assert!(matches!(rd.next_chunk(), Err(Error::Corrupt(_))));
}

#[test]
fn small_shared_and_changed_objects_stay_local() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    let small = put(&s, &b, "small", &data(2, 1000));
    assert_eq!(copy_and_evict(&s, &t, &small), 0, "inline blobs have no file to evict");
    let shared = data(3, 200_000);
    let one = put(&s, &b, "one", &shared);
    put(&s, &b, "two", &shared);
    assert_eq!(copy_and_evict(&s, &t, &one), 0, "a blob two objects use stays local");
    let old = put(&s, &b, "changes", &data(4, 200_000));
    put(&s, &b, "changes", &data(5, 200_000));
    assert_eq!(s.evict(&old, "dr").expect("evict"), 0, "the version read is not current any more");
}

#[test]
fn an_interrupted_eviction_leaves_a_file_the_sweep_removes() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    let body = data(6, 300_000);
    let info = put(&s, &b, "k", &body);
    let path = blob_path(dir.path(), &info.blobs[0].hash);
    let saved = std::fs::read(&path).expect("blob");
    copy_and_evict(&s, &t, &info);
    // A crash after the tier record and before the unlink leaves the file.
    std::fs::write(&path, &saved).expect("leftover");
    assert_eq!(s.tier_leftovers().expect("sweep"), 1);
    assert!(!path.exists());
    std::fs::write(&path, &saved).expect("leftover");
    let old = SystemTime::now() + Duration::from_secs(3600);
    s.sweep_orphans(old).expect("orphan sweep");
    assert!(!path.exists(), "the orphan sweep removes it too");
    assert_eq!(read(&s, &info, 0..info.size).expect("read"), body);
}

#[test]
fn evicted_bytes_come_back_by_upload_copy_and_rehydration() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");

    // The same bytes uploaded again (another key): local again, no tier record.
    let body = data(7, 300_000);
    let info = put(&s, &b, "a", &body);
    copy_and_evict(&s, &t, &info);
    put(&s, &b, "a-again", &body);
    assert!(blob_path(dir.path(), &info.blobs[0].hash).exists());
    assert!(s.tier_totals().expect("totals").is_empty());

    // CopyObject of an evicted object reads its bytes back: the copy survives the
    // source's delete and the loss of the target's copy.
    let body = data(8, 300_000);
    let src = put(&s, &b, "src", &body);
    copy_and_evict(&s, &t, &src);
    let dst = ObjectKey::parse("dst").expect("key");
    let copied = s
        .copy_object(
            (&b, &ObjectKey::parse("src").expect("key"), None),
            &b,
            &dst,
            None,
            WriteCondition::None,
            Default::default(),
        )
        .expect("copy");
    s.delete_object(&b, &ObjectKey::parse("src").expect("key"), ME).expect("delete");
    t.copies.lock().expect("lock").clear();
    assert_eq!(read(&s, &copied, 0..copied.size).expect("copy reads locally"), body);

    // Rehydration of one evicted blob.
    let body = data(9, 300_000);
    let info = put(&s, &b, "c", &body);
    copy_and_evict(&s, &t, &info);
    assert_eq!(s.rehydrate_blob(&info.blobs[0].hash, false).expect("rehydrate"), 300_000);
    assert_eq!(s.rehydrate_blob(&info.blobs[0].hash, false).expect("again"), 0, "not evicted any more");
    assert!(blob_path(dir.path(), &info.blobs[0].hash).exists());
    t.down.store(true, Ordering::SeqCst);
    assert_eq!(read(&s, &info, 0..info.size).expect("local read"), body);
    let report = s.check().expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn deleting_an_evicted_object_lets_gc_drop_its_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    let info = put(&s, &b, "k", &data(10, 300_000));
    copy_and_evict(&s, &t, &info);
    s.delete_object(&b, &ObjectKey::parse("k").expect("key"), ME).expect("delete");
    s.gc_until_done(SystemTime::now() + Duration::from_secs(3600), &Budget::unlimited()).expect("gc");
    assert!(s.tier_totals().expect("totals").is_empty());
    let report = s.check().expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn policies_need_an_unversioned_bucket_and_a_covering_target() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    let v = bucket(&s, "versioned");
    bucket(&s, "other");
    s.set_versioning(&v, Versioning::Enabled).expect("versioning");
    assert!(matches!(s.put_tier_policy(&policy("bkt", "dr"), "t"), Err(Error::InvalidArgument(_))), "no target yet");
    s.put_replication_target(target_rec("dr"), false).expect("target");
    let mut narrow = target_rec("narrow");
    narrow.source_bucket = Some("other".into());
    s.put_replication_target(narrow, false).expect("target");
    assert!(matches!(s.put_tier_policy(&policy("bkt", "narrow"), "t"), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.put_tier_policy(&policy("versioned", "dr"), "t"), Err(Error::InvalidBucketState(_))));
    s.put_tier_policy(&policy("bkt", "dr"), "t").expect("policy");
    assert_eq!(s.tier_policies().expect("list").len(), 1);
    assert!(matches!(s.set_versioning(&b, Versioning::Enabled), Err(Error::InvalidBucketState(_))));
    assert!(matches!(s.remove_replication_target("dr"), Err(Error::InvalidArgument(_))), "a policy uses it");
    s.remove_tier_policy("bkt", "", "t").expect("remove");
    s.remove_replication_target("dr").expect("nothing uses it any more");
}

#[test]
fn a_page_offers_old_cold_objects_and_counts_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    bucket(&s, "bkt");
    s.put_replication_target(target_rec("dr"), false).expect("target");
    let p = policy("bkt", "dr");
    s.put_tier_policy(&p, "t").expect("policy");
    let b = BucketName::parse("bkt").expect("name");
    let big = put(&s, &b, "big", &data(11, 200_000));
    put(&s, &b, "tiny", &data(12, 10));
    let all = [p.clone()];
    let page = s.tier_page(&p, &all, None, 100).expect("page");
    assert_eq!(page.candidates.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["big"]);
    assert_eq!(page.rows[""].local_bytes, 200_010);
    assert!(page.next.is_none());
    copy_and_evict(&s, &t, &big);
    let page = s.tier_page(&p, &all, None, 1).expect("page of one");
    assert_eq!(page.next.as_deref(), Some("big"));
    assert!(page.candidates.is_empty());
    assert_eq!((page.rows[""].remote_bytes, page.rows[""].remote_objects), (200_000, 1));
    // Brought back by a read: cached, not offered again until taken out of the cache.
    assert_eq!(s.rehydrate_blob(&big.blobs[0].hash, true).expect("rehydrate"), 200_000);
    let cached = s.tier_cache().expect("cache");
    assert_eq!(cached.len(), 1);
    assert!(s.tier_page(&p, &all, None, 100).expect("page").candidates.is_empty(), "cached");
    s.tier_uncache(&cached[0].0).expect("uncache");
    assert_eq!(s.tier_page(&p, &all, None, 100).expect("page").candidates.len(), 1);
    let young = TierPolicy { after_ms: 3_600_000, ..p.clone() };
    assert!(
        s.tier_page(&young, std::slice::from_ref(&young), None, 100).expect("page").candidates.is_empty(),
        "too young"
    );
}

#[test]
fn a_leftover_file_does_not_let_a_second_reference_share_a_remote_location() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    let body = data(13, 300_000);
    let info = put(&s, &b, "first", &body);
    let path = blob_path(dir.path(), &info.blobs[0].hash);
    let saved = std::fs::read(&path).expect("blob");
    copy_and_evict(&s, &t, &info);
    // An interrupted eviction's leftover, then the same bytes under another key.
    std::fs::write(&path, &saved).expect("leftover");
    put(&s, &b, "second", &body);
    assert!(s.tier_totals().expect("totals").is_empty(), "the blob is local again");
    assert_eq!(s.tier_leftovers().expect("sweep"), 0, "and its file is not a leftover");
    s.sweep_orphans(SystemTime::now() + Duration::from_secs(3600)).expect("orphan sweep");
    t.copies.lock().expect("lock").clear();
    s.delete_object(&b, &ObjectKey::parse("first").expect("key"), ME).expect("delete");
    assert_eq!(read(&s, &head(&s, &b, "second"), 0..body.len() as u64).expect("read"), body);
}

#[test]
fn versioning_waits_for_evicted_bytes_and_deleted_buckets_drop_their_policies() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    s.put_replication_target(target_rec("dr"), false).expect("target");
    s.put_tier_policy(&policy("bkt", "dr"), "t").expect("policy");
    let info = put(&s, &b, "k", &data(14, 300_000));
    copy_and_evict(&s, &t, &info);
    s.remove_tier_policy("bkt", "", "t").expect("remove");
    assert!(
        matches!(s.set_versioning(&b, Versioning::Enabled), Err(Error::InvalidBucketState(_))),
        "bytes of the bucket are still on the target"
    );
    assert_eq!(s.rehydrate_blob(&info.blobs[0].hash, false).expect("back"), 300_000);
    s.set_versioning(&b, Versioning::Enabled).expect("nothing remote any more");

    let other = bucket(&s, "other");
    s.put_tier_policy(&policy("other", "dr"), "t").expect("policy");
    s.delete_bucket(&other).expect("delete bucket");
    assert!(s.tier_policies().expect("list").is_empty(), "the deleted bucket's policy went with it");
}

#[test]
fn objects_wanted_local_again_are_offered_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Arc::new(FakeTarget::default());
    let s = open(dir.path(), &t);
    let b = bucket(&s, "bkt");
    s.put_replication_target(target_rec("dr"), false).expect("target");
    let info = put(&s, &b, "k", &data(15, 300_000));
    copy_and_evict(&s, &t, &info);
    // `--after` grew past the object's age: it should be local.
    let p = TierPolicy { after_ms: 3_600_000, ..policy("bkt", "dr") };
    s.put_tier_policy(&p, "t").expect("policy");
    let page = s.tier_page(&p, std::slice::from_ref(&p), None, 100).expect("page");
    assert_eq!(page.rewarm, vec![info.blobs[0].hash]);
    assert!(page.candidates.is_empty());
}
