//! Seeds a stopped walstore data directory with empty objects under one flat prefix,
//! through `storage::Store::put_object` (the call the server's PutObject handler makes),
//! from several threads. It is the fast path the comparison uses to bring walstore's
//! listing workload to 1,000,000 keys: the HTTP loader manages about 3,500 PUT/s on two
//! cores, this several times that. Every write is still a synced RocksDB batch; the entry
//! is what an HTTP PutObject of an empty body without checksum headers stores (default
//! metadata, the CRC64NVME S3 stores when the client sends no checksum).
//!
//! Usage: walstore-bench-seed DATA_DIR BUCKET PREFIX START COUNT THREADS
//! Keys: `<PREFIX>00000001<log:08X><seg:08X>.lz4` for segment numbers START..START+COUNT,
//! 256 segments per log id (the shape of WAL-G's `wal_005/`). Prints one JSON line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use storage::{
    BucketName, ChecksumAlgorithm, Error, ObjectKey, ObjectMeta, PutRequest, Store, StoreConfig, WriteCondition,
};

fn wal_key(prefix: &str, n: usize) -> String {
    format!("{prefix}00000001{:08X}{:08X}.lz4", n / 256, n % 256)
}

fn put_empty(store: &Store, bucket: &BucketName, key: &str) -> Result<(), String> {
    let key = ObjectKey::parse(key).map_err(|e| e.to_string())?;
    let writer = store.blob_writer(&[]).map_err(|e| e.to_string())?;
    let blob = writer.finish().map_err(|e| e.to_string())?;
    let checksum = blob.checksum(ChecksumAlgorithm::Crc64Nvme).cloned();
    let req = PutRequest {
        bucket,
        key: &key,
        blob,
        meta: ObjectMeta::default(),
        checksum,
        condition: WriteCondition::None,
        actor: "bench-seed",
        lock: Default::default(),
    };
    store.put_object(req).map(|_| ()).map_err(|e| e.to_string())
}

fn run(args: &[String]) -> Result<String, String> {
    let [dir, bucket, prefix, start, count, threads] = args else {
        return Err("usage: walstore-bench-seed DATA_DIR BUCKET PREFIX START COUNT THREADS".into());
    };
    let num = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    let (start, count, threads) = (num(start)?, num(count)?, num(threads)?.clamp(1, 256));
    let store = Store::open(StoreConfig::new(dir)).map_err(|e| format!("open {dir}: {e}"))?;
    let bucket = BucketName::parse(bucket).map_err(|e| e.to_string())?;
    match store.create_bucket(&bucket) {
        Ok(_) | Err(Error::BucketAlreadyExists) => {}
        Err(e) => return Err(format!("create bucket: {e}")),
    }
    let next = AtomicUsize::new(start);
    let t0 = Instant::now();
    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = 0usize;
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= start + count {
                            return Ok(done);
                        }
                        put_empty(&store, &bucket, &wal_key(prefix, n))?;
                        done += 1;
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("seeding thread panicked".into()))).collect()
    });
    let mut stored = 0;
    for r in results {
        stored += r?;
    }
    store.flush().map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(format!(
        "{{\"stored\":{stored},\"seconds\":{secs:.3},\"per_sec\":{:.1},\"threads\":{threads}}}",
        stored as f64 / secs
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("walstore-bench-seed: {e}");
            ExitCode::FAILURE
        }
    }
}
