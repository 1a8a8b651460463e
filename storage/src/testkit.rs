//! Helpers for tests outside this crate that need to shape a data directory
//! the way another walstore would have left it (the `testkit` feature; never
//! in the binary). They keep RocksDB a name only this crate uses.

use std::path::Path;

/// Makes the index in `index_dir` (a stopped server's `index/`) look written by
/// a newer walstore: schema `version` in `meta`, and, if given, a column family
/// `extra` holding one entry.
pub fn forge_future_index(index_dir: &Path, version: u32, extra: Option<&str>) -> Result<(), String> {
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, index_dir).map_err(|e| e.to_string())?;
    let mut db = rocksdb::DB::open_cf(&opts, index_dir, &names).map_err(|e| e.to_string())?;
    if let Some(name) = extra {
        db.create_cf(name, &opts).map_err(|e| e.to_string())?;
        let cf = db.cf_handle(name).ok_or("the new column family is missing")?;
        db.put_cf(cf, b"key", b"value").map_err(|e| e.to_string())?;
    }
    let meta = db.cf_handle("meta").ok_or("no meta column family")?;
    db.put_cf(meta, b"schema", crate::codec::encode(&version).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    db.flush_cf(meta).map_err(|e| e.to_string())
}
