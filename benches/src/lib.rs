//! walstore's benchmarks.
//!
//! - `benches/hot_paths.rs`: Criterion micro-benchmarks of the request hot paths through the
//!   crates' public APIs (the PUT hashing pipeline, index put/list, SigV4 verification,
//!   aws-chunked decoding). Run with `cargo bench -p walstore-benches` (`-- --quick` for a
//!   short run).
//! - `run.sh` (driving `compare.py` and the Go load tool in `s3load/`): walstore against
//!   MinIO and against the machine's own limits, on loopback. See `README.md` beside this
//!   crate for what each workload does and the latest results.
