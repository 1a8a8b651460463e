//! Power cuts and failing fsyncs at the blob store's durability seam, in the
//! style of redb's crash tests: a [`Durability`] double records which file
//! bytes and which directory entries were made durable; at a random call the
//! "power" goes (that call and every later one fails), and the test rebuilds
//! what a real power cut would leave — every name whose directory was not
//! fsynced after it appeared is gone, every file whose bytes were never fsynced
//! is torn — then reopens the store on the real filesystem and checks that
//! every acknowledged write reads back byte for byte and the index is
//! consistent.
//!
//! Model assumptions (written down because the test is only as good as them):
//! the index (RocksDB, every batch written with a synced WAL) is durable once a
//! write returns, as RocksDB's own crash tests establish; unlinks are durable at
//! once (a resurrected unreferenced blob would be an orphan, which GC removes).
//!
//! `POWERCUT_CYCLES` (default 25) sets the number of cuts; `POWERCUT_SEED`
//! replays one run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use storage::wal::DeleteAuth;
use storage::*;

const ME: DeleteAuth<'static> = DeleteAuth::Client { principal: "test" };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    SyncData,
    SyncDir,
}

/// What the filesystem would keep if the power went now.
#[derive(Default)]
struct SimState {
    /// Staging files whose bytes were fsynced.
    synced: HashSet<PathBuf>,
    /// Names created or renamed into a directory not fsynced since.
    volatile: HashSet<PathBuf>,
    /// Final names whose bytes were never fsynced.
    torn: HashSet<PathBuf>,
    /// Fail the next call of this kind (on this path, if given): fsyncgate injection.
    fail_next: Option<(Op, Option<PathBuf>)>,
    injected: u64,
}

struct SimFs {
    state: Mutex<SimState>,
    calls: AtomicU64,
    /// The call number at which the power goes (u64::MAX: never).
    cut_at: AtomicU64,
    down: AtomicBool,
    /// Probability (per mille) that an fsync fails before the cut.
    fault_permille: AtomicU32,
    rng: Mutex<StdRng>,
}

impl SimFs {
    fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SimState::default()),
            calls: AtomicU64::new(0),
            cut_at: AtomicU64::new(u64::MAX),
            down: AtomicBool::new(false),
            fault_permille: AtomicU32::new(0),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call; errors once the power is gone or a fault is injected.
    fn enter(&self, op: Option<(Op, &Path)>) -> io::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n >= self.cut_at.load(Ordering::SeqCst) {
            self.down.store(true, Ordering::SeqCst);
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(io::Error::other("power cut (simulated)"));
        }
        if let Some((op, path)) = op {
            let mut st = self.state();
            let permille = self.fault_permille.load(Ordering::SeqCst);
            let random_fault =
                permille > 0 && self.rng.lock().unwrap_or_else(|e| e.into_inner()).gen_range(0..1000) < permille;
            let chosen = matches!(&st.fail_next, Some((o, p)) if *o == op && p.as_deref().is_none_or(|p| p == path));
            if chosen || random_fault {
                st.fail_next = None;
                st.injected += 1;
                return Err(io::Error::from_raw_os_error(5)); // EIO, as a failed writeback reports it
            }
        }
        Ok(())
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Rebuilds what the disk holds after the cut: drops volatile names
    /// (shallowest first; a lost directory takes its contents) and tears files
    /// whose bytes were never synced. Returns (names dropped, files torn).
    fn apply_power_loss(&self) -> (usize, usize) {
        let st = self.state();
        let mut lost: Vec<&PathBuf> = st.volatile.iter().collect();
        lost.sort_by_key(|p| p.components().count());
        let mut dropped = 0;
        for p in lost {
            let r = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
            if r.is_ok() {
                dropped += 1;
            }
        }
        let mut torn = 0;
        for p in &st.torn {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(p) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = f.set_len(len / 2);
                torn += 1;
            }
        }
        (dropped, torn)
    }
}

impl Durability for SimFs {
    fn sync_data(&self, _file: &File, path: &Path) -> io::Result<()> {
        // The simulation decides what is durable; the real fsync is skipped
        // to keep hundreds of cycles fast.
        self.enter(Some((Op::SyncData, path)))?;
        self.state().synced.insert(path.to_owned());
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.enter(None)?;
        std::fs::rename(from, to)?;
        let mut st = self.state();
        st.volatile.insert(to.to_owned());
        if !st.synced.remove(from) {
            st.torn.insert(to.to_owned());
        } else {
            st.torn.remove(to);
        }
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.enter(None)?;
        std::fs::create_dir(dir)?;
        self.state().volatile.insert(dir.to_owned());
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.enter(Some((Op::SyncDir, dir)))?;
        self.state().volatile.retain(|p| p.parent() != Some(dir));
        Ok(())
    }
}

fn config(dir: &Path) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir);
    cfg.gc_grace = Duration::ZERO;
    cfg.space_reserve = SpaceReserve::Bytes(0);
    cfg
}

fn open_sim(dir: &Path, fs: Arc<SimFs>) -> Store {
    let blobs = FsBlobStore::open_with(dir.join("blobs"), fs).expect("blob store");
    Store::open_with_blob_store(config(dir), Arc::new(blobs)).expect("open store")
}

fn put(s: &Store, b: &BucketName, key: &str, data: &[u8]) -> Result<ObjectInfo> {
    let key = ObjectKey::parse(key).expect("key");
    let mut w = s.blob_writer(&[])?;
    w.write(data)?;
    let blob = w.finish()?;
    s.put_object(PutRequest {
        bucket: b,
        key: &key,
        blob,
        meta: ObjectMeta::default(),
        checksum: None,
        condition: WriteCondition::None,
        actor: "test",
        lock: Default::default(),
    })
}

fn read(s: &Store, b: &BucketName, key: &str) -> Result<Vec<u8>> {
    let info = s.head_object(b, &ObjectKey::parse(key).expect("key"))?;
    let mut r = s.read_object(&info, 0..info.size)?;
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk()? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// `blobs/ab/cd/` of the blob holding `body`.
fn blob_dir(dir: &Path, body: &[u8]) -> PathBuf {
    use sha2::{Digest, Sha256};
    let hex = hex::encode(Sha256::digest(body));
    dir.join("blobs").join(&hex[0..2]).join(&hex[2..4])
}

fn staging_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs/tmp")).map(|d| d.count()).unwrap_or(0)
}

/// Reopens on the real filesystem and checks the model: every key holds
/// exactly its last acknowledged bytes (or is absent after an acknowledged
/// delete), `check` finds no problem, no staging file is left.
fn verify(dir: &Path, bucket: &BucketName, model: &BTreeMap<String, Option<Vec<u8>>>, ctx: &str) {
    let s = Store::open(config(dir)).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    for (key, want) in model {
        match (want, read(&s, bucket, key)) {
            (Some(w), Ok(got)) => assert!(
                got == *w,
                "{ctx}: {key} reads back {} bytes, not its {} acknowledged bytes",
                got.len(),
                w.len()
            ),
            (Some(w), Err(e)) => panic!("{ctx}: acknowledged {key} ({} bytes) is lost: {e}", w.len()),
            (None, Err(Error::NoSuchKey)) => {}
            (None, r) => panic!("{ctx}: acknowledged delete of {key} undone: {:?}", r.map(|v| v.len())),
        }
    }
    let report = s.check().expect("check");
    assert!(report.problems.is_empty(), "{ctx}: index inconsistent after the cut: {:?}", report.problems);
    assert_eq!(staging_files(dir), 0, "{ctx}: staging files survived the reopen");
    // GC of the orphans a cut leaves (renamed but never committed) must not
    // touch anything referenced.
    s.gc_pass(SystemTime::now() + Duration::from_secs(1), usize::MAX).expect("gc");
    s.sweep_orphans(SystemTime::now() + Duration::from_secs(3600)).expect("orphan sweep");
    for (key, want) in model {
        if let Some(w) = want {
            assert!(read(&s, bucket, key).ok().as_ref() == Some(w), "{ctx}: {key} lost to the orphan sweep");
        }
    }
}

fn seed() -> u64 {
    std::env::var("POWERCUT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random)
}

#[test]
fn power_cut_under_concurrent_writes_loses_nothing_acknowledged() {
    let cycles: u64 = std::env::var("POWERCUT_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(25);
    let seed = seed();
    println!("power-cut test: {cycles} cycles, seed {seed} (replay with POWERCUT_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut acked_total, mut dropped_total, mut torn_total, mut injected_total) = (0usize, 0usize, 0usize, 0u64);
    for cycle in 0..cycles {
        let cycle_seed: u64 = rng.gen();
        let ctx = format!("seed {seed} cycle {cycle}");
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        // A bucket made durable before the simulation starts.
        let bucket = BucketName::parse("backups").expect("bucket");
        Store::open(config(dir)).expect("open").create_bucket(&bucket).expect("bucket");

        // Faults before the cut in half of the cycles: some writes fail on
        // fsync and are retried with the same bytes by a later write.
        let fs = SimFs::new(cycle_seed);
        let store = Arc::new(open_sim(dir, fs.clone()));
        fs.fault_permille.store(if cycle % 2 == 0 { 40 } else { 0 }, Ordering::SeqCst);
        let mut crng = StdRng::seed_from_u64(cycle_seed);
        fs.cut_at.store(crng.gen_range(5..400), Ordering::SeqCst);
        // A small pool of bodies shared by all writers: deduplication paths.
        let pool: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..6).map(|i| (0..crng.gen_range(1..300_000)).map(|j| (i * 7 + j * 13) as u8).collect()).collect(),
        );

        let models: Vec<BTreeMap<String, Option<Vec<u8>>>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let (store, fs, pool, bucket) = (store.clone(), fs.clone(), pool.clone(), bucket.clone());
                    let tseed = cycle_seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    sc.spawn(move || {
                        let mut r = StdRng::seed_from_u64(tseed);
                        let mut model: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
                        for n in 0..200 {
                            if fs.is_down() {
                                break;
                            }
                            let key = format!("t{t}/k{}", r.gen_range(0..12));
                            match r.gen_range(0..10) {
                                0 | 1 => {
                                    if store.delete_object(&bucket, &ObjectKey::parse(&key).expect("key"), ME).is_ok() {
                                        model.insert(key, None);
                                    }
                                }
                                2 if n % 7 == 0 => {
                                    let _ = store.gc_pass(SystemTime::now() + Duration::from_secs(1), 64);
                                }
                                2..=5 => {
                                    let body = pool[r.gen_range(0..pool.len())].clone();
                                    if put(&store, &bucket, &key, &body).is_ok() {
                                        model.insert(key, Some(body));
                                    }
                                }
                                _ => {
                                    let len = r.gen_range(0..1_500_000);
                                    let body: Vec<u8> = (0..len).map(|_| r.gen()).collect();
                                    if put(&store, &bucket, &key, &body).is_ok() {
                                        model.insert(key, Some(body));
                                    }
                                }
                            }
                        }
                        model
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
        });
        fs.down.store(true, Ordering::SeqCst);
        drop(store);
        let (dropped, torn) = fs.apply_power_loss();
        let model: BTreeMap<String, Option<Vec<u8>>> = models.into_iter().flatten().collect();
        acked_total += model.values().filter(|v| v.is_some()).count();
        dropped_total += dropped;
        torn_total += torn;
        injected_total += fs.state().injected;
        verify(dir, &bucket, &model, &ctx);
    }
    println!(
        "power-cut test: {cycles} cycles passed; {acked_total} acknowledged objects checked, {dropped_total} \
         un-synced names dropped, {torn_total} un-synced files torn, {injected_total} fsync failures injected"
    );
    assert!(dropped_total > 0, "no cut ever caught an un-synced name: the test does not exercise the seam");
}

/// fsyncgate: a failed fsync fails the write, and nothing the failed attempt
/// left behind is later trusted as durable.
#[test]
fn failed_fsync_fails_the_write_and_a_retry_is_durable() {
    for op in [Op::SyncData, Op::SyncDir] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let bucket = BucketName::parse("backups").expect("bucket");
        Store::open(config(dir)).expect("open").create_bucket(&bucket).expect("bucket");
        let fs = SimFs::new(1);
        let store = open_sim(dir, fs.clone());
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        put(&store, &bucket, "warm-up", b"x").expect("put");

        // The failure hits the fsync that makes this blob durable: its bytes,
        // or its name in `ab/cd/` after the rename.
        let target = match op {
            Op::SyncData => None,
            Op::SyncDir => Some(blob_dir(dir, &body)),
        };
        fs.state().fail_next = Some((op, target));
        let e = put(&store, &bucket, "seg", &body).expect_err("the write must fail with its fsync");
        assert!(matches!(e, Error::Io { .. }), "{op:?}: {e}");
        assert!(matches!(read(&store, &bucket, "seg"), Err(Error::NoSuchKey)), "{op:?}: a failed write is visible");
        assert_eq!(staging_files(dir), 0, "{op:?}: staging file left");
        assert_eq!(fs.state().injected, 1);

        // The client retries the same bytes: success, and durable.
        put(&store, &bucket, "seg", &body).expect("retry");
        fs.down.store(true, Ordering::SeqCst);
        drop(store);
        let (dropped, _) = fs.apply_power_loss();
        let model = BTreeMap::from([("warm-up".to_owned(), Some(b"x".to_vec())), ("seg".to_owned(), Some(body))]);
        verify(dir, &bucket, &model, &format!("{op:?} failure then retry ({dropped} names dropped)"));
    }
}

/// A write whose blob is a duplicate of one already stored must not be
/// acknowledged on the strength of a name nobody made durable.
#[test]
fn dedup_onto_an_unsynced_name_is_made_durable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let bucket = BucketName::parse("backups").expect("bucket");
    Store::open(config(dir)).expect("open").create_bucket(&bucket).expect("bucket");
    let fs = SimFs::new(2);
    let store = open_sim(dir, fs.clone());
    let body = vec![7u8; 100_000];
    fs.state().fail_next = Some((Op::SyncDir, Some(blob_dir(dir, &body))));
    put(&store, &bucket, "a", &body).expect_err("dir fsync fails");
    // Same bytes under another key: the blob file exists under its final name.
    put(&store, &bucket, "b", &body).expect("dedup write");
    let mut names: HashMap<&str, usize> = HashMap::new();
    names.insert("volatile", fs.state().volatile.len());
    fs.down.store(true, Ordering::SeqCst);
    drop(store);
    fs.apply_power_loss();
    verify(dir, &bucket, &BTreeMap::from([("b".to_owned(), Some(body))]), "dedup after a failed dir fsync");
    assert_eq!(names["volatile"], 0, "the deduplicated write left its blob's name un-synced");
}

/// A blob store whose reads of one blob fail with EIO (a bad sector).
struct BadSector {
    inner: FsBlobStore,
    bad: Mutex<Option<BlobHash>>,
}

struct FailingFile;

impl BlobFile for FailingFile {
    fn read_exact_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(5))
    }
    fn size(&self) -> io::Result<u64> {
        Ok(1 << 20)
    }
}

impl BlobStore for BadSector {
    fn create_staging(&self) -> Result<Staging> {
        self.inner.create_staging()
    }
    fn place(&self, staging: Staging, hash: &BlobHash, size: u64) -> Result<bool> {
        self.inner.place(staging, hash, size)
    }
    fn open(&self, hash: &BlobHash) -> Result<Box<dyn BlobFile>> {
        if self.bad.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(hash) {
            return Ok(Box::new(FailingFile));
        }
        self.inner.open(hash)
    }
    fn size_of(&self, hash: &BlobHash) -> Result<Option<u64>> {
        self.inner.size_of(hash)
    }
    fn remove(&self, hash: &BlobHash) -> Result<()> {
        self.inner.remove(hash)
    }
    fn sweep_staging(&self) -> Result<u64> {
        self.inner.sweep_staging()
    }
    fn for_each(&self, visit: &mut dyn FnMut(BlobListing) -> Result<()>) -> Result<()> {
        self.inner.for_each(visit)
    }
    fn root(&self) -> &Path {
        self.inner.root()
    }
}

#[test]
fn read_error_on_one_blob_affects_only_that_object() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let blobs =
        Arc::new(BadSector { inner: FsBlobStore::open(dir.join("blobs")).expect("blobs"), bad: Mutex::new(None) });
    let store = Store::open_with_blob_store(config(dir), blobs.clone()).expect("open");
    let bucket = BucketName::parse("backups").expect("bucket");
    store.create_bucket(&bucket).expect("bucket");
    let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300_000 + usize::from(i)]).collect();
    let infos: Vec<ObjectInfo> =
        bodies.iter().enumerate().map(|(i, b)| put(&store, &bucket, &format!("k{i}"), b).expect("put")).collect();
    *blobs.bad.lock().unwrap_or_else(|e| e.into_inner()) = Some(infos[2].blobs[0].hash);
    for (i, body) in bodies.iter().enumerate() {
        let r = read(&store, &bucket, &format!("k{i}"));
        if i == 2 {
            assert!(
                matches!(r, Err(Error::Io { .. } | Error::Corrupt(_))),
                "the bad blob's read must fail: {:?}",
                r.map(|v| v.len())
            );
        } else {
            assert_eq!(r.expect("other objects read fine"), *body, "k{i}");
        }
    }
    // Writes, listings and the other objects' metadata are unaffected.
    put(&store, &bucket, "after", b"still writable").expect("put after a read error");
    let page = store.list_objects(&bucket, &ListQuery { max_keys: 100, ..Default::default() }).expect("list");
    assert_eq!(page.items.len(), 6);
    assert_eq!(store.head_object(&bucket, &ObjectKey::parse("k2").expect("key")).expect("head").size, 300_002);
}
