//! Storage invariants: durability bookkeeping, dedup, refcounts, GC, listing,
//! multipart, integrity.

use std::time::{Duration, SystemTime};

use storage::wal::DeleteAuth;
use storage::*;

const ME: DeleteAuth<'static> = DeleteAuth::Client { principal: "test" };

fn open(dir: &std::path::Path) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.gc_grace = Duration::from_secs(60);
    cfg.min_part_size = 5;
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

fn put(s: &Store, b: &BucketName, key: &str, data: &[u8]) -> ObjectInfo {
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
    .expect("put")
}

fn read_all(s: &Store, info: &ObjectInfo) -> Vec<u8> {
    let mut r = s.read_object(info, 0..info.size).expect("reader");
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk().expect("chunk") {
        out.extend_from_slice(&c);
    }
    out
}

fn blob_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for l1 in std::fs::read_dir(dir.join("blobs")).expect("ls") {
        let l1 = l1.expect("entry");
        if l1.file_name() == "tmp" {
            continue;
        }
        for l2 in std::fs::read_dir(l1.path()).expect("ls") {
            n += std::fs::read_dir(l2.expect("entry").path()).expect("ls").count();
        }
    }
    n
}

/// `label` repeated past [`INLINE_MAX`]: a body stored as a blob file.
fn big(label: &[u8]) -> Vec<u8> {
    label.iter().copied().cycle().take(INLINE_MAX as usize + 1000).collect()
}

/// The two ways a blob is stored: inline in the index (small) and as a file.
fn both_forms(label: &[u8]) -> [(Vec<u8>, usize); 2] {
    [(label.to_vec(), 0), (big(label), 1)]
}

/// Blobs the index knows.
fn indexed_blobs(s: &Store) -> u64 {
    s.usage().expect("usage").blobs
}

fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

#[test]
fn put_get_overwrite_delete() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let data: Vec<u8> = (0..(2 * BLOCK_SIZE as usize + 7)).map(|i| (i % 253) as u8).collect();
    let info = put(&s, &b, "a/b", &data);
    assert_eq!(info.size, data.len() as u64);
    let k = ObjectKey::parse("a/b").expect("key");
    let head = s.head_object(&b, &k).expect("head");
    assert_eq!(head.etag, info.etag);
    assert_eq!(read_all(&s, &head), data);
    // Ranges across block boundaries.
    for (a, z) in [(0u64, 1u64), (BLOCK_SIZE as u64 - 3, BLOCK_SIZE as u64 + 5), (10, data.len() as u64)] {
        let mut r = s.read_object(&head, a..z).expect("reader");
        let mut got = Vec::new();
        while let Some(c) = r.next_chunk().expect("chunk") {
            got.extend_from_slice(&c);
        }
        assert_eq!(got, &data[a as usize..z as usize]);
    }
    put(&s, &b, "a/b", b"v2");
    let head = s.head_object(&b, &k).expect("head");
    assert_eq!(read_all(&s, &head), b"v2");
    assert!(s.delete_object(&b, &k, ME).expect("delete"));
    assert!(!s.delete_object(&b, &k, ME).expect("delete again"));
    assert!(matches!(s.head_object(&b, &k), Err(Error::NoSuchKey)));
    assert!(s.check().expect("check").problems.is_empty());
}

#[test]
fn empty_object() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let info = put(&s, &b, "empty", b"");
    assert_eq!(info.size, 0);
    assert_eq!(info.etag.as_str(), "d41d8cd98f00b204e9800998ecf8427e");
    assert!(info.blobs.is_empty());
    assert_eq!(read_all(&s, &info), b"");
    assert_eq!(blob_files(dir.path()), 0);
}

#[test]
fn dedup_and_gc_after_grace() {
    for (body, files) in both_forms(b"same bytes") {
        let dir = tempfile::tempdir().expect("tmp");
        let s = open(dir.path());
        let b1 = bucket(&s, "one");
        let b2 = bucket(&s, "two");
        put(&s, &b1, "x", &body);
        put(&s, &b2, "y", &body);
        assert_eq!((indexed_blobs(&s), blob_files(dir.path())), (1, files), "identical bytes are stored once");
        assert_eq!(s.stats().dedup_hits.load(std::sync::atomic::Ordering::Relaxed), 1);
        s.delete_object(&b1, &ObjectKey::parse("x").expect("k"), ME).expect("del");
        // Still referenced by two/y.
        assert_eq!(s.gc_pass(later(), 100).expect("gc").reclaimed_blobs, 0);
        assert_eq!((indexed_blobs(&s), blob_files(dir.path())), (1, files));
        s.delete_object(&b2, &ObjectKey::parse("y").expect("k"), ME).expect("del");
        // Inside the grace period nothing is removed.
        let r = s.gc_pass(SystemTime::now(), 100).expect("gc");
        assert_eq!((r.reclaimed_blobs, r.examined), (0, 0));
        let q = s.gc_queue_stats(SystemTime::now()).expect("stats");
        assert_eq!((q.pending, q.due), (1, 0));
        assert_eq!((indexed_blobs(&s), blob_files(dir.path())), (1, files));
        let r = s.gc_pass(later(), 100).expect("gc");
        assert_eq!((r.reclaimed_blobs, r.reclaimed_bytes), (1, body.len() as u64));
        assert_eq!((indexed_blobs(&s), blob_files(dir.path())), (0, 0));
        // `check` also reports inline bytes left without their metadata.
        assert!(s.check().expect("check").problems.is_empty());
    }
}

/// Small bodies live in the index: no blob file and no staging file is ever
/// made for them, they read back verified, survive a reopen, and a body one
/// byte over the limit is a file.
#[test]
fn small_bodies_are_inline_and_larger_ones_are_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let at_limit: Vec<u8> = (0..INLINE_MAX as usize).map(|i| (i % 251) as u8).collect();
    let over: Vec<u8> = (0..INLINE_MAX as usize + 1).map(|i| (i % 241) as u8).collect();
    {
        let s = open(dir.path());
        let b = bucket(&s, "bkt");
        let mut w = s.blob_writer(&[]).expect("writer");
        w.write(&at_limit[..10]).expect("write");
        assert_eq!(std::fs::read_dir(dir.path().join("blobs/tmp")).expect("ls").count(), 0);
        w.write(&at_limit[10..]).expect("write");
        let staged = w.finish().expect("finish");
        assert!(staged.is_inline());
        drop(staged);
        let small = put(&s, &b, "small", &at_limit);
        assert_eq!(blob_files(dir.path()), 0);
        let large = put(&s, &b, "large", &over);
        assert_eq!((indexed_blobs(&s), blob_files(dir.path())), (2, 1));
        assert_eq!(read_all(&s, &small), at_limit);
        assert_eq!(read_all(&s, &large), over);
        let mut r = s.read_object(&small, 100..200).expect("range");
        assert_eq!(&r.next_chunk().expect("chunk").expect("some")[..], &at_limit[100..200]);
        assert!(s.scrub().expect("scrub").corrupt.is_empty());
    }
    let s = open(dir.path());
    let b = BucketName::parse("bkt").expect("b");
    let head = s.head_object(&b, &ObjectKey::parse("small").expect("k")).expect("head");
    assert_eq!(read_all(&s, &head), at_limit);
    let report = s.check().expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.orphan_files, 0);
}

fn read_in(s: &Store, info: &ObjectInfo) -> storage::Result<Vec<u8>> {
    let mut r = s.read_object(info, 0..info.size)?;
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk()? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// `without_io` answers from memory or not at all: never a wrong answer, never an
/// error of its own. Blob files and scans always need the disk; an entry only on disk
/// after a reopen may too, and once read it is in the block cache.
#[test]
fn reads_without_io_answer_from_memory_or_not_at_all() {
    let dir = tempfile::tempdir().expect("tmp");
    let small = b"inline bytes".to_vec();
    let large = big(b"file");
    let b = BucketName::parse("bkt").expect("b");
    let (k_small, k_large) = (ObjectKey::parse("small").expect("k"), ObjectKey::parse("large").expect("k"));
    let q = ListQuery { prefix: String::new(), delimiter: None, after: None, max_keys: 10 };
    {
        let s = open(dir.path());
        bucket(&s, "bkt");
        put(&s, &b, "small", &small);
        let large_info = put(&s, &b, "large", &large);
        // Just written: in the memtable.
        let got = s.without_io(|s| read_in(s, &s.head_object(&b, &k_small)?));
        assert_eq!(got.expect("in memory").expect("read"), small);
        let missing = s.without_io(|s| s.head_object(&b, &ObjectKey::parse("nope").expect("k")));
        assert!(matches!(missing, Some(Err(Error::NoSuchKey))), "{missing:?}");
        let head = s.without_io(|s| s.head_object(&b, &k_large)).expect("entry in memory").expect("head");
        assert_eq!(head.etag, large_info.etag);
        assert!(s.without_io(|s| read_in(s, &large_info)).is_none(), "a blob file is disk");
        assert!(s.without_io(|s| s.list_objects(&b, &q)).is_none(), "a scan may read the disk");
        // The thread is back to normal reads afterwards.
        assert_eq!(s.list_objects(&b, &q).expect("list").items.len(), 2);
        assert_eq!(read_all(&s, &large_info), large);
    }
    let s = open(dir.path());
    match s.without_io(|s| read_in(s, &s.head_object(&b, &k_small)?)) {
        None => {}
        Some(r) => assert_eq!(r.expect("read"), small),
    }
    assert_eq!(read_all(&s, &s.head_object(&b, &k_small).expect("head")), small);
    let got = s.without_io(|s| read_in(s, &s.head_object(&b, &k_small)?));
    assert_eq!(got.expect("cached by the read before").expect("read"), small);
}

#[test]
fn put_of_same_bytes_during_grace_keeps_blob() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    put(&s, &b, "k", b"payload");
    s.delete_object(&b, &ObjectKey::parse("k").expect("k"), ME).expect("del");
    // Same bytes arrive again before GC runs.
    let info = put(&s, &b, "k2", b"payload");
    assert_eq!(s.gc_pass(later(), 100).expect("gc").reclaimed_blobs, 0);
    assert_eq!(read_all(&s, &info), b"payload");
    assert!(s.check().expect("check").problems.is_empty());
}

#[test]
fn reused_blob_waits_for_the_grace_of_its_last_drop() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = StoreConfig::new(dir.path());
    cfg.gc_grace = Duration::from_secs(1);
    let s = Store::open(cfg).expect("open store");
    let b = bucket(&s, "bkt");
    put(&s, &b, "first", b"shared payload");
    s.delete_object(&b, &ObjectKey::parse("first").expect("k"), ME).expect("del");
    std::thread::sleep(Duration::from_millis(1200));
    // The first drop is past its grace now; the same bytes are stored again
    // and dropped again: the blob must wait for the second drop's grace.
    let info = put(&s, &b, "second", b"shared payload");
    s.delete_object(&b, &ObjectKey::parse("second").expect("k"), ME).expect("del");
    let r = s.gc_pass(SystemTime::now() + Duration::from_millis(300), 100).expect("gc");
    assert_eq!((r.examined, r.reclaimed_blobs), (1, 0), "the first drop's entry is spent, nothing removed");
    assert_eq!(indexed_blobs(&s), 1);
    let r = s.gc_pass(SystemTime::now() + Duration::from_secs(5), 100).expect("gc");
    assert_eq!((r.examined, r.reclaimed_blobs, r.reclaimed_bytes), (1, 1, info.size));
    assert_eq!(indexed_blobs(&s), 0);
    assert!(s.check().expect("check").problems.is_empty());
}

#[test]
fn gc_reads_only_due_entries_in_bounded_passes() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    for i in 0..50 {
        put(&s, &b, &format!("k{i}"), format!("body {i}").as_bytes());
    }
    for i in 0..50 {
        s.delete_object(&b, &ObjectKey::parse(&format!("k{i}")).expect("k"), ME).expect("del");
    }
    let q = s.gc_queue_stats(SystemTime::now()).expect("stats");
    assert_eq!((q.pending, q.due, q.backlog), (50, 0, Duration::ZERO));
    let q = s.gc_queue_stats(later()).expect("stats");
    assert_eq!((q.pending, q.due), (50, 50));
    assert!(q.backlog > Duration::from_secs(3000), "{q:?}");
    let mut passes = Vec::new();
    loop {
        let r = s.gc_pass(later(), 20).expect("gc");
        passes.push((r.examined, r.reclaimed_blobs));
        if r.examined < 20 {
            break;
        }
    }
    assert_eq!(passes, vec![(20, 20), (20, 20), (10, 10)]);
    assert_eq!(s.gc_queue_stats(later()).expect("stats"), GcQueueStats::default());
    assert_eq!(indexed_blobs(&s), 0);
    assert!(s.check().expect("check").problems.is_empty());
    // Reopened, the queue is read from its start: nothing is left to find.
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.gc_pass(later(), 100).expect("gc").examined, 0);
}

#[test]
fn copy_shares_blobs() {
    for (body, files) in both_forms(b"copy me") {
        let dir = tempfile::tempdir().expect("tmp");
        let s = open(dir.path());
        let b = bucket(&s, "bkt");
        put(&s, &b, "src", &body);
        let (src, dst) = (ObjectKey::parse("src").expect("k"), ObjectKey::parse("dst").expect("k"));
        let info =
            s.copy_object((&b, &src, None), &b, &dst, None, WriteCondition::None, Default::default()).expect("copy");
        assert_eq!((indexed_blobs(&s), blob_files(dir.path())), (1, files));
        s.delete_object(&b, &src, ME).expect("del");
        s.gc_pass(later(), 100).expect("gc");
        assert_eq!(read_all(&s, &info), body);
        assert!(s.check().expect("check").problems.is_empty());
    }
}

#[test]
fn conditional_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let k = ObjectKey::parse("k").expect("k");
    let req = |s: &Store, data: &[u8], condition| {
        s.put_object(PutRequest {
            bucket: &b,
            key: &k,
            blob: stage(s, data),
            meta: ObjectMeta::default(),
            checksum: None,
            condition,
            actor: "test",
            lock: Default::default(),
        })
    };
    let first = req(&s, b"1", WriteCondition::IfAbsent).expect("first");
    assert!(matches!(req(&s, b"2", WriteCondition::IfAbsent), Err(Error::PreconditionFailed(_))));
    assert!(matches!(
        req(&s, b"2", WriteCondition::IfMatch(ETag::from_client("nope"))),
        Err(Error::PreconditionFailed(_))
    ));
    req(&s, b"2", WriteCondition::IfMatch(first.etag)).expect("if-match");
    let head = s.head_object(&b, &k).expect("head");
    assert_eq!(read_all(&s, &head), b"2");
    // Failed conditional writes leave no staging files and no extra refs.
    assert!(s.check().expect("check").problems.is_empty());
    assert_eq!(std::fs::read_dir(dir.path().join("blobs/tmp")).expect("ls").count(), 0);
}

#[test]
fn listing_with_delimiter_and_paging() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let other = bucket(&s, "bkt-other");
    put(&s, &other, "a/zzz", b"x");
    let mut keys = vec!["a/1", "a/2", "a/b/1", "a/b/2", "a/c/1", "b", "c/", "c/x", "d"];
    for k in &keys {
        put(&s, &b, k, k.as_bytes());
    }
    keys.sort();
    // Flat listing in pages of 2 gives every key once, in order.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_objects(&b, &ListQuery { prefix: String::new(), delimiter: None, after: after.clone(), max_keys: 2 })
            .expect("list");
        all.extend(page.items.iter().map(|i| i.name().to_owned()));
        if !page.truncated {
            break;
        }
        after = page.items.last().map(|i| i.name().to_owned());
    }
    assert_eq!(all, keys);
    // Delimited listing under a/.
    let page = s
        .list_objects(&b, &ListQuery { prefix: "a/".into(), delimiter: Some("/".into()), after: None, max_keys: 1000 })
        .expect("list");
    let names: Vec<_> = page.items.iter().map(|i| i.name().to_owned()).collect();
    assert_eq!(names, vec!["a/1", "a/2", "a/b/", "a/c/"]);
    assert!(!page.truncated);
    // Paging by one through common prefixes skips each subtree once.
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_objects(
                &b,
                &ListQuery { prefix: String::new(), delimiter: Some("/".into()), after: after.clone(), max_keys: 1 },
            )
            .expect("list");
        got.extend(page.items.iter().map(|i| i.name().to_owned()));
        if !page.truncated {
            break;
        }
        after = page.items.last().map(|i| i.name().to_owned());
    }
    assert_eq!(got, vec!["a/", "b", "c/", "d"]);
    // A key equal to the prefix with a trailing delimiter is an object.
    let page = s
        .list_objects(&b, &ListQuery { prefix: "c/".into(), delimiter: Some("/".into()), after: None, max_keys: 1 })
        .expect("list");
    assert_eq!(page.items.iter().map(|i| i.name()).collect::<Vec<_>>(), vec!["c/"]);
    assert!(page.truncated);
    let page = s
        .list_objects(
            &b,
            &ListQuery { prefix: "c/".into(), delimiter: Some("/".into()), after: Some("c/".into()), max_keys: 1 },
        )
        .expect("list");
    assert_eq!(page.items.iter().map(|i| i.name()).collect::<Vec<_>>(), vec!["c/x"]);
    assert!(!page.truncated, "NextContinuationToken must not appear on the last page");
}

#[test]
fn multipart_complete_and_abort() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let k = ObjectKey::parse("big").expect("k");
    let id = s.create_multipart(&b, &k, ObjectMeta::default(), None, false, Default::default()).expect("create");
    let parts: Vec<Vec<u8>> = vec![vec![1u8; 10], vec![2u8; 10], vec![3u8; 3]];
    let mut etags = Vec::new();
    // Out of order, and part 2 uploaded twice.
    for n in [3u32, 1, 2, 2] {
        let blob = stage(&s, &parts[(n - 1) as usize]);
        let p = s.upload_part(&b, &k, &id, n, blob, None).expect("part");
        etags.push((n, p.etag));
    }
    let extra = s.upload_part(&b, &k, &id, 4, stage(&s, b"unused"), None).expect("part 4");
    let listed = s.list_parts(&b, &k, &id, 0, 1000).expect("list parts");
    assert_eq!(listed.parts.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let et = |n: u32| etags.iter().rev().find(|(m, _)| *m == n).map(|(_, e)| e.clone()).expect("etag");
    let complete = |list: Vec<(u32, ETag)>| {
        let list: Vec<CompletedPart> =
            list.into_iter().map(|(number, etag)| CompletedPart { number, etag, checksum: None }).collect();
        s.complete_multipart(&CompleteRequest {
            bucket: &b,
            key: &k,
            upload_id: &id,
            parts: &list,
            condition: WriteCondition::None,
            expected: ExpectedObject::default(),
            actor: "test",
        })
    };
    assert!(matches!(complete(vec![(2, et(2)), (1, et(1))]), Err(Error::InvalidPartOrder)));
    assert!(matches!(complete(vec![(1, et(2))]), Err(Error::InvalidPart(_))));
    assert!(matches!(complete(vec![(1, et(1)), (9, et(1))]), Err(Error::InvalidPart(_))));
    assert!(matches!(complete(vec![(3, et(3)), (4, extra.etag.clone())]), Err(Error::EntityTooSmall { part: 3, .. })));
    let info = complete(vec![(1, et(1)), (2, et(2)), (3, et(3))]).expect("complete");
    assert_eq!(info.size, 23);
    assert!(info.etag.as_str().ends_with("-3"));
    assert_eq!(info.parts_count, Some(3));
    let want = parts.concat();
    assert_eq!(read_all(&s, &info), want);
    // A retry with the same list gets the same answer; another list, NoSuchUpload.
    let again = complete(vec![(1, et(1)), (2, et(2)), (3, et(3))]).expect("repeated complete");
    assert_eq!((again.etag, again.size, again.last_modified), (info.etag.clone(), info.size, info.last_modified));
    assert_eq!(again.checksum, info.checksum);
    assert!(matches!(complete(vec![(1, et(1))]), Err(Error::NoSuchUpload)));
    assert!(matches!(complete(vec![(1, et(1)), (2, et(2)), (3, et(1))]), Err(Error::NoSuchUpload)));
    assert!(matches!(s.list_parts(&b, &k, &id, 0, 10), Err(Error::NoSuchUpload)));
    // Default checksum: full-object CRC64NVME combined from the parts.
    let c = info.checksum.expect("checksum");
    assert_eq!(c.algorithm, ChecksumAlgorithm::Crc64Nvme);
    assert_eq!(c.kind, ChecksumType::FullObject);
    assert_eq!(c.value, crc64fast_nvme_check(&want).to_be_bytes());
    // Unused part 4 and the replaced part 2 are released.
    let r = s.gc_pass(later(), 100).expect("gc");
    assert_eq!(r.reclaimed_blobs, 1, "only the 'unused' part; the first part-2 upload had the same bytes");
    assert!(s.check().expect("check").problems.is_empty());

    // Abort releases everything.
    let id2 = s.create_multipart(&b, &k, ObjectMeta::default(), None, false, Default::default()).expect("create");
    s.upload_part(&b, &k, &id2, 1, stage(&s, b"abandoned part"), None).expect("part");
    let ups = s.list_uploads(&b, "", None, None, None, 1000).expect("uploads");
    assert_eq!(ups.uploads.len(), 1);
    s.abort_multipart(&b, &k, &id2).expect("abort");
    assert!(matches!(s.abort_multipart(&b, &k, &id2), Err(Error::NoSuchUpload)));
    assert_eq!(s.gc_pass(later(), 100).expect("gc").reclaimed_blobs, 1);
    assert!(s.check().expect("check").problems.is_empty());
}

fn crc64fast_nvme_check(data: &[u8]) -> u64 {
    // Bitwise reference implementation of CRC-64/NVME (reflected, poly 0xAD93D23594C93659).
    let poly: u64 = 0x9A6C_9329_AC4B_C9B5;
    let mut crc = u64::MAX;
    for &b in data {
        crc ^= b as u64;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ poly } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn expired_uploads_are_aborted() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let k = ObjectKey::parse("k").expect("k");
    let id = s.create_multipart(&b, &k, ObjectMeta::default(), None, false, Default::default()).expect("create");
    s.upload_part(&b, &k, &id, 1, stage(&s, b"p"), None).expect("part");
    assert_eq!(s.expire_uploads(SystemTime::now()).expect("expire"), 0);
    let far = SystemTime::now() + Duration::from_secs(8 * 86_400);
    assert_eq!(s.expire_uploads(far).expect("expire"), 1);
    assert!(matches!(s.upload(&b, &k, &id), Err(Error::NoSuchUpload)));
}

#[test]
fn conditional_deletes() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let k = ObjectKey::parse("k").expect("k");
    let info = put(&s, &b, "k", b"12345");
    let ms = info.last_modified.as_millis();
    let cond = |etag: Option<&str>, t: Option<i64>, size: Option<u64>| DeleteCondition {
        etag: etag.map(ETag::from_client),
        last_modified: t.map(Timestamp::from_millis),
        size,
    };
    let fails = [
        cond(Some("\"0123\""), None, None),
        cond(None, None, Some(4)),
        cond(None, Some(ms + 1000), None),
        cond(Some(info.etag.as_str()), Some(ms), Some(6)), // all must hold
    ];
    for c in &fails {
        assert!(matches!(s.delete_object_if(&b, &k, c, ME), Err(Error::PreconditionFailed(_))), "{c:?}");
    }
    // Whole seconds (an HTTP date) match the stored millisecond time to the second.
    let seconds = ms - ms.rem_euclid(1000);
    let ok = cond(Some(info.etag.as_str()), Some(seconds), Some(5));
    assert!(s.delete_object_if(&b, &k, &ok, ME).expect("delete"));
    // Gone: an ETag condition is NoSuchKey, a size or time condition alone is not an error.
    assert!(matches!(s.delete_object_if(&b, &k, &cond(Some("*"), None, None), ME), Err(Error::NoSuchKey)));
    assert!(!s.delete_object_if(&b, &k, &cond(None, Some(ms), Some(5)), ME).expect("absent"));

    // DeleteObjects: per key, the first occurrence of a repeated key decides.
    let a = put(&s, &b, "a", b"a");
    put(&s, &b, "z", b"z");
    let keys: Vec<ObjectKey> = ["a", "z", "a", "missing"].iter().map(|k| ObjectKey::parse(k).expect("k")).collect();
    let conditions = [
        cond(Some(a.etag.as_str()), None, None),
        cond(None, None, Some(9)),
        cond(None, None, None),
        cond(Some("*"), None, None),
    ];
    let r = s.delete_objects(&b, &keys, &conditions, ME).expect("delete objects");
    assert!(matches!(r[0], Ok(true)), "{r:?}");
    assert!(matches!(r[1], Err(Error::PreconditionFailed(_))), "{r:?}");
    assert!(matches!(r[2], Ok(false)), "{r:?}");
    assert!(matches!(r[3], Err(Error::NoSuchKey)), "{r:?}");
    assert!(s.head_object(&b, &ObjectKey::parse("z").expect("k")).is_ok());
    assert!(matches!(s.delete_objects(&b, &keys, &conditions[..1], ME), Err(Error::InvalidRequest(_))));
    assert!(s.check().expect("check").problems.is_empty());
}

#[test]
fn completed_answers_are_kept_until_the_multipart_expiry() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let k = ObjectKey::parse("k").expect("k");
    let id = s.create_multipart(&b, &k, ObjectMeta::default(), None, false, Default::default()).expect("create");
    let etag = s.upload_part(&b, &k, &id, 1, stage(&s, b"only part"), None).expect("part").etag;
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
    let first = s.complete_multipart(&req).expect("complete");
    // Maintenance within the expiry keeps the answer (and aborts nothing).
    assert_eq!(s.expire_uploads(SystemTime::now() + Duration::from_secs(86_400)).expect("expire"), 0);
    assert_eq!(s.complete_multipart(&req).expect("retry").etag, first.etag);
    // After it, the answer is forgotten: a retry that late is NoSuchUpload, as in S3.
    s.expire_uploads(SystemTime::now() + Duration::from_secs(8 * 86_400)).expect("expire");
    assert!(matches!(s.complete_multipart(&req), Err(Error::NoSuchUpload)));
    assert_eq!(read_all(&s, &s.head_object(&b, &k).expect("head")), b"only part");
}

#[test]
fn buckets() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    assert!(matches!(s.create_bucket(&b), Err(Error::BucketAlreadyExists)));
    put(&s, &b, "k", b"v");
    assert!(matches!(s.delete_bucket(&b), Err(Error::BucketNotEmpty)));
    s.delete_object(&b, &ObjectKey::parse("k").expect("k"), ME).expect("del");
    let k = ObjectKey::parse("u").expect("k");
    let id = s.create_multipart(&b, &k, ObjectMeta::default(), None, false, Default::default()).expect("mpu");
    assert!(matches!(s.delete_bucket(&b), Err(Error::BucketNotEmpty)), "open uploads keep a bucket");
    s.abort_multipart(&b, &k, &id).expect("abort");
    s.delete_bucket(&b).expect("delete bucket");
    assert!(matches!(s.bucket(&b), Err(Error::NoSuchBucket)));
    assert!(s.list_buckets().expect("list").is_empty());
}

#[test]
fn corrupt_blob_is_never_served() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let data = vec![7u8; 3 * BLOCK_SIZE as usize];
    let info = put(&s, &b, "k", &data);
    let hex = info.blobs[0].hash.to_hex();
    let path = dir.path().join("blobs").join(&hex[0..2]).join(&hex[2..4]).join(&hex);
    let mut bytes = std::fs::read(&path).expect("read blob");
    bytes[BLOCK_SIZE as usize + 5] ^= 0x40; // flip one bit in the second block
    std::fs::write(&path, &bytes).expect("write blob");
    let mut r = s.read_object(&info, 0..info.size).expect("reader");
    assert!(r.next_chunk().expect("first block is fine").is_some());
    assert!(matches!(r.next_chunk(), Err(Error::Corrupt(_))));
    assert_eq!(s.stats().checksum_failures.load(std::sync::atomic::Ordering::Relaxed), 1);
    // A range that only touches the first block still works.
    let mut r = s.read_object(&info, 0..10).expect("reader");
    assert_eq!(r.next_chunk().expect("chunk").expect("some").len(), 10);
}

#[test]
fn reopen_keeps_everything_and_sweeps_staging() {
    let dir = tempfile::tempdir().expect("tmp");
    let info;
    {
        let s = open(dir.path());
        let b = bucket(&s, "bkt");
        info = put(&s, &b, "k", b"durable");
        let mut w = s.blob_writer(&[]).expect("writer");
        w.write(&big(b"half-written")).expect("write");
        std::mem::forget(w); // a crash mid-upload leaves a staging file
    }
    assert_eq!(std::fs::read_dir(dir.path().join("blobs/tmp")).expect("ls").count(), 1);
    let s = open(dir.path());
    assert_eq!(std::fs::read_dir(dir.path().join("blobs/tmp")).expect("ls").count(), 0);
    let b = BucketName::parse("bkt").expect("b");
    let head = s.head_object(&b, &ObjectKey::parse("k").expect("k")).expect("head");
    assert_eq!(head.etag, info.etag);
    assert_eq!(read_all(&s, &head), b"durable");
}

#[test]
fn orphan_blob_files_are_swept_after_grace() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    put(&s, &b, "k", &big(b"kept"));
    // A blob renamed into place whose index commit never happened.
    let orphan = b"orphan";
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(orphan))
    };
    let p = dir.path().join("blobs").join(&hash[0..2]).join(&hash[2..4]);
    std::fs::create_dir_all(&p).expect("mkdir");
    std::fs::write(p.join(&hash), orphan).expect("write");
    assert_eq!(s.sweep_orphans(SystemTime::now()).expect("sweep"), 0, "young orphans may be in flight");
    assert_eq!(s.sweep_orphans(later()).expect("sweep"), 1);
    assert_eq!(blob_files(dir.path()), 1);
    assert!(s.check().expect("check").problems.is_empty());
}

/// A crash leaves a few orphan blob files; thousands mean the index lost
/// entries, and the sweep must not turn that into lost backups.
#[test]
fn orphan_sweep_refuses_mass_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let b = bucket(&s, "backups");
    let kept = put(&s, &b, "kept", &big(b"kept bytes"));
    let fake = |i: u32| {
        let hex = format!("{:0>64x}", u128::from(i) * 0x9E37_79B9_7F4A_7C15 + 1);
        let d = dir.path().join("blobs").join(&hex[0..2]).join(&hex[2..4]);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(&hex), b"orphan").expect("write");
    };
    let later = SystemTime::now() + Duration::from_secs(7200);
    for i in 0..10 {
        fake(i);
    }
    assert_eq!(s.sweep_orphans(later).expect("a few orphans are swept"), 10);
    for i in 0..(ORPHAN_SWEEP_LIMIT as u32 + 1) {
        fake(i);
    }
    let e = s.sweep_orphans(later).expect_err("mass orphans must not be swept");
    assert!(matches!(e, Error::Corrupt(ref m) if m.contains("not in the index")), "{e}");
    assert_eq!(blob_files(dir.path()), ORPHAN_SWEEP_LIMIT as usize + 2, "nothing deleted");
    assert_eq!(read_all(&s, &kept), big(b"kept bytes"));
}

/// An index lost next to a store that holds only small (inline) objects has no
/// blob files to betray it; the in-use marker does. A store whose buckets were
/// all deleted on purpose starts as empty.
#[test]
fn lost_index_of_inline_only_store_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let s = open(dir.path());
        let b = bucket(&s, "bkt");
        put(&s, &b, "small", b"only inline bytes here");
    }
    assert_eq!(blob_files(dir.path()), 0);
    let index = dir.path().join("index");
    let saved = dir.path().join("index.saved");
    std::fs::rename(&index, &saved).expect("move index away");
    let e = Store::open(StoreConfig::new(dir.path())).err().expect("a missing index is refused");
    assert!(matches!(&e, Error::Corrupt(m) if m.contains("no index") && m.contains("index-in-use")), "{e}");
    assert!(!index.exists(), "the refused start created an empty index");
    // An index reset to empty (what a MANIFEST cut at a record boundary reads as).
    Store::open(StoreConfig::new(dir.path().join("scratch"))).expect("scratch store");
    std::fs::rename(dir.path().join("scratch/index"), &index).expect("empty index");
    let e = Store::open(StoreConfig::new(dir.path())).err().expect("an empty index is refused");
    assert!(matches!(&e, Error::Corrupt(m) if m.contains("is empty")), "{e}");
    std::fs::remove_dir_all(&index).expect("rm");
    std::fs::rename(&saved, &index).expect("restore index");

    // Every bucket deleted on purpose: an empty index is fine again.
    let s = open(dir.path());
    let b = BucketName::parse("bkt").expect("b");
    s.delete_object(&b, &ObjectKey::parse("small").expect("k"), ME).expect("del");
    s.gc_pass(later(), 100).expect("gc");
    s.delete_bucket(&b).expect("delete bucket");
    drop(s);
    let s = open(dir.path());
    assert!(s.list_buckets().expect("list").is_empty());
}

fn target(name: &str, source: Option<&str>) -> TargetRecord {
    TargetRecord {
        name: name.into(),
        source_bucket: source.map(str::to_owned),
        source_prefix: String::new(),
        paused: false,
        created: Timestamp::from_millis(0),
        spec: "{}".into(),
        from_config: false,
    }
}

#[test]
fn replication_journal_follows_every_change_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = bucket(&s, "bkt");
    let other = bucket(&s, "other");
    // Objects stored before the target exists are journaled oldest first when it is added.
    put(&s, &b, "old-1", b"one");
    std::thread::sleep(Duration::from_millis(2));
    put(&s, &b, "old-2", b"two");
    put(&s, &other, "elsewhere", b"x");
    assert_eq!(s.put_replication_target(target("dr", Some("bkt")), true).expect("add"), 2);
    assert_eq!(s.put_replication_target(target("all", None), false).expect("add in sync"), 0);
    put(&s, &b, "new", b"three");
    s.delete_object(&b, &ObjectKey::parse("old-1").expect("k"), ME).expect("delete");
    put(&s, &other, "elsewhere-2", b"y");
    let keys = |t: &str| -> Vec<(String, bool)> {
        s.replication_pending(t, None, 100)
            .expect("pending")
            .into_iter()
            .map(|(_, e)| (e.key, matches!(e.op, JournalOp::Put { .. })))
            .collect()
    };
    let want = vec![
        ("old-1".to_owned(), true),
        ("old-2".to_owned(), true),
        ("new".to_owned(), true),
        ("old-1".to_owned(), false),
    ];
    assert_eq!(keys("dr"), want);
    // The other target copies every bucket, but only what changed after it was added.
    assert_eq!(
        keys("all"),
        vec![("new".to_owned(), true), ("old-1".to_owned(), false), ("elsewhere-2".to_owned(), true)]
    );
    let backlog = s.replication_backlog("dr").expect("backlog");
    assert_eq!((backlog.objects, backlog.bytes), (4, 3 + 3 + 5));
    // Done entries go; a held delete leaves the queue and comes back when due.
    let pending = s.replication_pending("dr", None, 100).expect("pending");
    s.replication_done("dr", &[pending[0].0, pending[1].0]).expect("done");
    let (id, e) = pending[3].clone();
    let due = e.at.plus(Duration::from_secs(3600));
    s.replication_hold("dr", id, &e, due).expect("hold");
    assert!(s.replication_due("dr", e.at, 10).expect("due").is_empty());
    assert_eq!(s.replication_due("dr", due, 10).expect("due").len(), 1);
    drop(s);
    // Reopened: the journal, the targets and the order are what they were, and new
    // entries sort after the old ones.
    let s = open(dir.path());
    assert_eq!(s.replication_targets().len(), 2);
    put(&s, &b, "after-restart", b"4");
    let keys: Vec<String> =
        s.replication_pending("dr", None, 100).expect("pending").into_iter().map(|(_, e)| e.key).collect();
    assert_eq!(keys, vec!["new", "after-restart"]);
    let backlog = s.replication_backlog("dr").expect("backlog");
    assert_eq!((backlog.objects, backlog.held_deletes), (2, 1));
    s.remove_replication_target("dr").expect("remove");
    assert_eq!(s.replication_backlog("dr").expect("backlog"), Backlog::default());
    assert_eq!(s.replication_targets().len(), 1);
}

#[test]
fn restore_object_keeps_etag_and_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = open(dir.path());
    let b = BucketName::parse("restored").expect("name");
    let k = ObjectKey::parse("db/wal_005/000000010000000000000001.br").expect("key");
    let info = s
        .restore_object(RestoreRequest {
            bucket: &b,
            key: &k,
            blob: stage(&s, b"segment"),
            meta: ObjectMeta::default(),
            checksum: None,
            etag: ETag::from_client("\"0123456789abcdef0123456789abcdef-3\""),
            last_modified: Timestamp::from_millis(1_700_000_000_123),
            parts_count: Some(3),
        })
        .expect("restore creates the bucket and the object");
    let head = s.head_object(&b, &k).expect("head");
    assert_eq!(head.etag.as_str(), "0123456789abcdef0123456789abcdef-3");
    assert_eq!(head.last_modified, Timestamp::from_millis(1_700_000_000_123));
    assert_eq!((head.parts_count, info.size), (Some(3), 7));
    assert_eq!(read_all(&s, &head), b"segment");
}
