//! Bitrot: bytes flipped in stored blob files on disk, behind the server's
//! back. A GET of a damaged object never returns wrong bytes (an error before
//! the body, or a body that fails); undamaged objects read back exactly;
//! `walstore scrub` finds every flipped blob and names the objects using it;
//! the metrics count them.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Command;

use aws_sdk_s3::primitives::ByteStream;
use common::{bytes_of, raw_http, Server};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const OBJECTS: u64 = 24;
const DAMAGED: usize = 9;

fn blob_path(data_dir: &std::path::Path, body: &[u8]) -> PathBuf {
    let hex = hex::encode(Sha256::digest(body));
    data_dir.join("blobs").join(&hex[0..2]).join(&hex[2..4]).join(hex)
}

fn metric(port: u16, name: &str) -> f64 {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let (_, _, body) = raw_http(port, req.as_bytes());
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_are_never_served_and_scrub_finds_every_one() {
    let seed: u64 = std::env::var("BITROT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("BITROT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "rot"]);
    let c = srv.client();

    // Sizes from just above the inline limit (smaller bodies live in the index,
    // whose damage tests/test_index_damage.py covers) to several 1 MiB CRC blocks.
    let small = storage::INLINE_MAX as usize + 1;
    let mut objects = Vec::new();
    for i in 0..OBJECTS {
        let len = match i % 4 {
            0 => rng.gen_range(small..small + 4096),
            1 => rng.gen_range(small + 4096..(1 << 20)),
            2 => (1 << 20) + rng.gen_range(0..(1 << 20)),
            _ => rng.gen_range((2 << 20)..(5 << 20)),
        };
        let body = bytes_of(seed ^ i, len);
        let key = format!("spilo/obj-{i:02}");
        c.put_object().bucket("rot").key(&key).body(ByteStream::from(body.clone())).send().await.expect("put");
        objects.push((key, body));
    }

    // Flip one byte at a random offset in DAMAGED distinct blobs.
    let mut order: Vec<usize> = (0..objects.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let damaged: Vec<usize> = order[..DAMAGED].to_vec();
    for &i in &damaged {
        let body = &objects[i].1;
        let path = blob_path(&srv.data_dir, body);
        let off = rng.gen_range(0..body.len() as u64);
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("blob file");
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(off)).and_then(|_| f.read_exact(&mut b)).expect("read byte");
        b[0] ^= 1 << rng.gen_range(0..8);
        f.seek(SeekFrom::Start(off)).and_then(|_| f.write_all(&b)).expect("flip byte");
        f.sync_all().expect("sync");
    }

    // Reads: damaged objects fail one way or another, never with wrong bytes.
    let mut failed_reads = 0;
    for (i, (key, body)) in objects.iter().enumerate() {
        let got = match c.get_object().bucket("rot").key(key).send().await {
            Ok(o) => o.body.collect().await.map(|b| b.into_bytes().to_vec()).ok(),
            Err(_) => None,
        };
        if damaged.contains(&i) {
            assert!(got.is_none(), "{key}: corrupt bytes served (seed {seed})");
            failed_reads += 1;
        } else {
            assert_eq!(got.as_deref(), Some(body.as_slice()), "{key} (seed {seed})");
        }
    }
    assert!(metric(srv.port, "walstore_checksum_failures_total") >= failed_reads as f64);

    // Scrub finds exactly the damaged blobs and names their objects.
    let out = Command::new(env!("CARGO_BIN_EXE_walstore"))
        .args(["scrub", "--json", "--endpoint", &srv.endpoint()])
        .env("WALSTORE_ROOT_ACCESS_KEY", common::ACCESS_KEY)
        .env("WALSTORE_ROOT_SECRET_KEY", common::SECRET_KEY)
        .output()
        .expect("scrub");
    assert_eq!(out.status.code(), Some(1), "scrub exits 1 on corruption: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut found: Vec<String> = report["corrupt"]
        .as_array()
        .expect("corrupt")
        .iter()
        .flat_map(|c| c["objects"].as_array().cloned().unwrap_or_default())
        .filter_map(|o| o.as_str().map(str::to_owned))
        .collect();
    found.sort();
    let mut expect: Vec<String> = damaged.iter().map(|&i| format!("rot/{}", objects[i].0)).collect();
    expect.sort();
    assert_eq!(found, expect, "seed {seed}");
    assert_eq!(report["blobs"].as_u64(), Some(OBJECTS));
    assert_eq!(metric(srv.port, "walstore_scrub_corrupt_blobs_total"), DAMAGED as f64);
}
