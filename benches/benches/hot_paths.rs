//! Criterion micro-benchmarks of walstore's request hot paths, through the crates' public
//! APIs only (what a PUT, a listing and an authenticated request cost inside the server,
//! without HTTP):
//!
//! - `put_pipeline`: [`storage::BlobWriter`] receiving a 16 MiB body in 1 MiB buffers into a
//!   staging file of a temp-dir store: SHA-256 (content address), MD5 (ETag), CRC32 per
//!   block, CRC64NVME (stored when the client sends no checksum) and the `write(2)`s; no
//!   fsync (that is the durable-write routine, measured by `index/put_object_*`). Next to it,
//!   the bare digests over the same bytes, to show what the pipeline adds to them.
//! - `index`: [`storage::Store::put_object`] of tiny objects (each one a durable write: a
//!   synced RocksDB batch, plus for non-empty bodies fsync + rename + directory fsync of the
//!   blob) and [`storage::Store::list_objects`] of 1000-key pages of a flat `wal_005/`
//!   prefix.
//! - `sigv4`: [`s3api::auth::verify`] of a header-signed PutObject as WAL-G sends it, signed
//!   with the AWS SDK's own signer (`aws-sigv4`), as the s3api tests do.
//! - `chunked`: [`s3api::auth::ChunkedDecoder`] decoding a 1 MiB aws-chunked body in 64 KiB
//!   chunks, signed (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, the chunk signatures computed by
//!   `aws-sigv4`) and unsigned (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
//!
//! `cargo bench -p walstore-benches` runs them; add `-- --quick` for a short run.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use md5::Md5;
use s3api::auth::{verify, AuthSettings, ChunkMode, ChunkedDecoder, RequestParts, SecretLookup};
use sha2::{Digest, Sha256};
use storage::{
    BlobWriter, BucketName, ChecksumAlgorithm, FsBlobStore, ListQuery, ObjectKey, ObjectMeta, PutRequest, Store,
    StoreConfig, WriteCondition,
};

const MIB: usize = 1 << 20;
const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const HOST: &str = "127.0.0.1:9000";
const REGION: &str = "us-east-1";
/// Keys seeded for the listing benchmark (10 pages of 1000).
const LIST_KEYS: usize = 10_000;

/// Deterministic, incompressible test bytes (xorshift64*), so no run depends on a clock.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A WAL-G style key: `wal_005/<24 hex segment name>.lz4`, timeline 1, 256 segments per log.
fn wal_key(n: usize) -> String {
    format!("wal_005/00000001{:08X}{:08X}.lz4", n / 256, n % 256)
}

// ------------------------------------------------------------------------------ put pipeline

fn put_pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let blobs: std::sync::Arc<dyn storage::BlobStore> =
        std::sync::Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("blob store"));
    let body = pseudo_random(16 * MIB, 16);
    let mut g = c.benchmark_group("put_pipeline");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(10);
    // What Store::blob_writer asks for when the client sends no checksum: CRC64NVME on top
    // of SHA-256, MD5 and the block CRC32s.
    g.bench_function("blob_writer_16MiB_in_1MiB_writes", |b| {
        b.iter(|| {
            let mut w = BlobWriter::new(blobs.clone(), &[ChecksumAlgorithm::Crc64Nvme], Some(body.len() as u64))
                .expect("writer");
            for buf in body.chunks(MIB) {
                w.write(buf).expect("write");
            }
            // Dropping the staged blob deletes its staging file.
            black_box(w.finish().expect("finish").hash)
        })
    });
    // Eight uploads at once, as under `warp put --concurrent 8`: their MD5s share the
    // MD5 service's vector lanes (storage/src/md5lanes.rs). Throughput is per body.
    let shared = bytes::Bytes::from(body.clone());
    g.bench_function("blob_writer_8_concurrent_16MiB_in_256KiB_writes", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        let mut w =
                            BlobWriter::new(blobs.clone(), &[ChecksumAlgorithm::Crc64Nvme], Some(shared.len() as u64))
                                .expect("writer");
                        for at in (0..shared.len()).step_by(256 << 10) {
                            w.write_bytes(shared.slice(at..(at + (256 << 10)).min(shared.len()))).expect("write");
                        }
                        black_box(w.finish().expect("finish").md5)
                    });
                }
            })
        })
    });
    g.bench_function("sha256_only_16MiB", |b| b.iter(|| black_box(Sha256::digest(&body))));
    g.bench_function("md5_only_16MiB", |b| b.iter(|| black_box(Md5::digest(&body))));
    g.finish();
}

// ------------------------------------------------------------------------------ index

fn put_tiny(store: &Store, bucket: &BucketName, key: &str, body: &[u8]) {
    let mut w = store.blob_writer(&[]).expect("writer");
    w.write(body).expect("write");
    let req = PutRequest {
        bucket,
        key: &ObjectKey::parse(key).expect("key"),
        blob: w.finish().expect("finish"),
        meta: ObjectMeta::default(),
        checksum: None,
        condition: WriteCondition::None,
        actor: "bench",
        lock: Default::default(),
    };
    store.put_object(req).expect("put");
}

fn index(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("store");
    let bucket = BucketName::parse("bench").expect("bucket");
    store.create_bucket(&bucket).expect("create bucket");
    let mut g = c.benchmark_group("index");
    g.sample_size(20);
    let mut n = 0usize;
    // An empty object: one synced RocksDB batch, no blob file (the seeding path of the
    // comparison's listing workload).
    g.bench_function("put_object_empty", |b| {
        b.iter(|| {
            n += 1;
            put_tiny(&store, &bucket, &format!("empty/{n:09}"), b"");
        })
    });
    // A 100-byte object with distinct bytes: a new blob (fsync, rename, directory fsync)
    // plus the synced batch; what a WAL-G sentinel or .history file costs.
    g.bench_function("put_object_100B", |b| {
        b.iter(|| {
            n += 1;
            let body = format!("{n:0100}");
            put_tiny(&store, &bucket, &format!("tiny/{n:09}"), body.as_bytes());
        })
    });

    for i in 0..LIST_KEYS {
        put_tiny(&store, &bucket, &wal_key(i), b"");
    }
    g.throughput(Throughput::Elements(1000));
    let mut page = 0usize;
    g.bench_function("list_objects_1000_key_page", |b| {
        b.iter(|| {
            // Rotate through the 10 pages: each starts after the last key of the previous.
            let after = (page > 0).then(|| wal_key(page * 1000 - 1));
            page = (page + 1) % (LIST_KEYS / 1000);
            let q = ListQuery { prefix: "wal_005/".into(), delimiter: Some("/".into()), after, max_keys: 1000 };
            let listed = store.list_objects(&bucket, &q).expect("list");
            assert_eq!(listed.items.len(), 1000);
            black_box(listed)
        })
    });
    g.finish();
}

// ------------------------------------------------------------------------------ SigV4

struct Keys;

impl SecretLookup for Keys {
    fn secret_key(&self, access_key_id: &str) -> Option<String> {
        (access_key_id == ACCESS_KEY).then(|| SECRET_KEY.to_owned())
    }
}

/// Signing time of every request; verification runs with the clock set to it.
fn sign_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

fn identity() -> Identity {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "bench").into()
}

/// A request as the server receives it, signed by aws-sigv4 configured as S3 clients
/// configure it. Returns it with the request signature (the seed of a chunk chain).
struct Signed {
    method: Method,
    path: String,
    headers: HeaderMap,
    signature: String,
}

fn sign_put(path: &str, headers: &[(&str, &str)], body: SignableBody<'_>) -> Signed {
    let identity = identity();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(sign_time())
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let uri = format!("http://{HOST}{path}");
    let mut all = vec![("host", HOST)];
    all.extend_from_slice(headers);
    let signable = SignableRequest::new("PUT", uri.as_str(), all.iter().copied(), body).expect("signable");
    let (instructions, signature) = sign(signable, &params).expect("sign").into_parts();
    let mut map = HeaderMap::new();
    for (name, value) in all.iter().copied().chain(instructions.headers()) {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    Signed { method: Method::PUT, path: path.to_owned(), headers: map, signature }
}

fn verify_signed(req: &Signed) -> s3api::auth::Verified {
    let parts = RequestParts { method: &req.method, raw_path: &req.path, raw_query: "", headers: &req.headers };
    let settings =
        AuthSettings { now: sign_time(), region: REGION, max_skew: Duration::from_secs(900), allow_v2: true };
    verify(&parts, &settings, &Keys).expect("verifies").expect("authenticated")
}

fn sigv4(c: &mut Criterion) {
    // WAL-G's wal-push: a single PUT with a hex payload hash (aws-sdk-go v1).
    let body = pseudo_random(1024, 7);
    let sha = hex::encode(Sha256::digest(&body));
    let req = sign_put(
        "/walg/spilo/demo/wal/15/wal_005/000000010000000000000001.lz4",
        &[
            ("content-length", "1024"),
            ("content-type", "application/octet-stream"),
            ("user-agent", "aws-sdk-go/1.55.8"),
        ],
        SignableBody::Precomputed(sha),
    );
    let mut g = c.benchmark_group("sigv4");
    g.bench_function("verify_header_signed_put", |b| b.iter(|| black_box(verify_signed(&req))));
    g.finish();
}

// ------------------------------------------------------------------------------ aws-chunked

/// `payload` framed as aws-chunked in `chunk`-byte chunks; with `seed`, every chunk signed
/// by aws-sigv4's `sign_chunk`, chained from the request signature `seed`.
fn aws_chunked(payload: &[u8], chunk: usize, seed: Option<&str>) -> Vec<u8> {
    let identity = identity();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(sign_time())
        .settings(SigningSettings::default())
        .build()
        .expect("signing params");
    let mut running = seed.map(str::to_owned);
    let mut out = Vec::with_capacity(payload.len() + payload.len() / chunk * 100 + 200);
    for piece in payload.chunks(chunk).chain(std::iter::once(&[][..])) {
        out.extend_from_slice(format!("{:x}", piece.len()).as_bytes());
        if let Some(prev) = &running {
            let sig = v4::sign_chunk(&Bytes::copy_from_slice(piece), prev, &params).expect("sign chunk").into_parts().1;
            out.extend_from_slice(format!(";chunk-signature={sig}").as_bytes());
            running = Some(sig);
        }
        out.extend_from_slice(b"\r\n");
        if !piece.is_empty() {
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn chunked(c: &mut Criterion) {
    let payload = pseudo_random(MIB, 64);
    let req = sign_put(
        "/bucket/object",
        &[("content-encoding", "aws-chunked"), ("x-amz-decoded-content-length", "1048576")],
        SignableBody::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into()),
    );
    let signed_body = aws_chunked(&payload, 64 * 1024, Some(&req.signature));
    let unsigned_body = aws_chunked(&payload, 64 * 1024, None);
    let decode = |mode: ChunkMode, body: &[u8]| {
        let mut dec = ChunkedDecoder::new(mode, false);
        let mut out = BytesMut::with_capacity(MIB);
        // 64 KiB reads, as hyper hands a body over.
        for piece in body.chunks(64 * 1024) {
            dec.decode(piece, &mut out).expect("decode");
        }
        dec.finish().expect("complete");
        assert_eq!(out.len(), MIB);
        out
    };
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("decode_1MiB_64KiB_chunks_signed", |b| {
        b.iter_batched(
            // A fresh chunk signer per body (it advances along the chain).
            || verify_signed(&req).chunk_signer.expect("streaming request yields a chunk signer"),
            |signer| black_box(decode(ChunkMode::Signed(signer), &signed_body)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode_1MiB_64KiB_chunks_unsigned", |b| {
        b.iter(|| black_box(decode(ChunkMode::Unsigned, &unsigned_body)))
    });
    g.finish();
}

criterion_group!(benches, put_pipeline, index, sigv4, chunked);
criterion_main!(benches);
