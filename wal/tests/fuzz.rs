//! Fuzz targets of the WAL vocabulary: object names, timeline history files, backup
//! sentinels and `metadata.json`, and WAL-G's codecs — everything a WAL-G repository hands
//! the server to parse. The engine (a seeded mutator over the committed corpus in
//! `tests/fuzz_corpus/`, an allocation meter, shrinking and replayable reports) is
//! `wal::testkit::fuzz`, described in `s3api/tests/fuzz.rs`; the checks are
//! `wal::testkit::fuzz_wal`, which the coverage-guided `cargo fuzz` targets in `wal/fuzz/`
//! run too.
//!
//! - CI: part of `cargo test --release`, [`wal::testkit::fuzz::CI_ITERATIONS`] inputs per target.
//! - Long run: `FUZZ_ITERATIONS=10000000 cargo test --release -p walstore-wal --test fuzz -- --nocapture`
//! - Replay: `FUZZ_SEED=<n> FUZZ_ITERATIONS=1 cargo test --release -p walstore-wal --test fuzz -- fuzz_wal_names`

use wal::backup::{MetadataInfo, SentinelInfo};
use wal::history::History;
use wal::names::TimelineId;
use wal::testkit::fuzz::{alloc_bound, fuzz, meter, Target};
use wal::testkit::fuzz_wal::{
    check_wal_codec, check_wal_history, check_wal_names, check_wal_page, check_wal_sentinel, CODEC_TOKENS,
    HISTORY_TOKENS, PAGE_TOKENS, SENTINEL_TOKENS, WAL_NAME_TOKENS,
};

#[global_allocator]
static ALLOCATOR: meter::Counting = meter::Counting;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_corpus");
const PACKAGE: &str = "walstore-wal";

#[test]
fn fuzz_wal_names() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "wal_names",
        dict: WAL_NAME_TOKENS,
        max_len: 1024,
        check: check_wal_names,
    });
}

#[test]
fn fuzz_wal_history() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "wal_history",
        dict: HISTORY_TOKENS,
        max_len: 4096,
        check: check_wal_history,
    });
}

#[test]
fn fuzz_wal_sentinel() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "wal_sentinel",
        dict: SENTINEL_TOKENS,
        max_len: 8192,
        check: check_wal_sentinel,
    });
}

#[test]
fn fuzz_wal_page() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "wal_page",
        dict: PAGE_TOKENS,
        max_len: 256,
        check: check_wal_page,
    });
}

#[test]
fn fuzz_wal_codec() {
    fuzz(&Target {
        corpus_root: CORPUS,
        package: PACKAGE,
        name: "wal_codec",
        dict: CODEC_TOKENS,
        max_len: 4096,
        check: check_wal_codec,
    });
}

/// The allocation bound at full size, for the WAL parsers' most allocating shapes (see
/// `repetitive_inputs_stay_within_the_allocation_bound` in `s3api/tests/fuzz.rs`).
#[test]
fn repetitive_wal_documents_stay_within_the_allocation_bound() {
    let n = 64 * 1024;
    type Shape = (&'static str, Vec<u8>, fn(&[u8]));
    let cases: Vec<Shape> = vec![
        ("JSON array of zeros", format!("{{\"LSN\":1,\"x\":[{}0]}}", "0,".repeat(n)).into_bytes(), |b| {
            let _ = SentinelInfo::parse(b);
        }),
        (
            "JSON object of keys",
            format!("{{{}\"LSN\":1}}", (0..n).map(|i| format!("\"{i:x}\":0,")).collect::<String>()).into_bytes(),
            |b| {
                let _ = MetadataInfo::parse(b);
            },
        ),
        (
            "history of many lines",
            (1..n as u32).map(|i| format!("{i}\t0/{i:X}\n")).collect::<String>().into_bytes(),
            |b| {
                let _ = History::parse(TimelineId::new(u32::MAX), std::str::from_utf8(b).expect("text"));
            },
        ),
    ];
    for (what, input, parse) in cases {
        let (_, peak) = meter::peak_of(|| parse(&input));
        let ratio = peak as f64 / input.len() as f64;
        eprintln!("{what}: {} bytes in, {peak} bytes at the peak ({ratio:.1} per input byte)", input.len());
        assert!(peak <= alloc_bound(input.len()), "{what}: {peak} bytes for {} input bytes", input.len());
    }
}
