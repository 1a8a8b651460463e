//! Fuzz targets for every parser that reads what a client, or a WAL-G repository, hands the
//! server: routing and query strings, SigV4 (the `Authorization` header and presigned
//! queries), aws-chunked bodies (signed, unsigned, with trailers), the XML request bodies,
//! Range and conditional headers, and the WAL vocabulary (object names, timeline history
//! files, backup sentinels and `metadata.json`, compressed documents).
//!
//! **Why not `cargo fuzz`.** cargo-fuzz builds for an explicit `--target` with
//! sanitizer-coverage `RUSTFLAGS`. Both change the build of every crate, so the RocksDB C++
//! library that `storage` links (and `s3api` depends on `storage`) would be rebuilt: about 25
//! minutes per cold build on the 2-core CI machine. So these are stable-Rust,
//! dependency-free mutation fuzzers in the style of property tests, in this one integration
//! test binary, which `cargo test --release` (scripts/test.sh) already runs in CI. The price
//! is that there is no coverage feedback: inputs are stacked mutations of a committed corpus
//! of realistic inputs (`tests/fuzz_corpus/<target>/`, see its README), so the corpus decides
//! how deep a target reaches. Every run first checks that each `ok-*` corpus entry is still
//! accepted, so a corpus that stopped reaching the deep paths fails loudly.
//!
//! **Engine.** Byte flips, random and "interesting" bytes, inserts, deletes, truncation,
//! ASCII case flips, duplicated chunks, a short piece repeated up to a thousand times,
//! splices and cross-overs between corpus entries, and tokens from a per-target dictionary;
//! 1, 2, 4 or 8 of them stacked. Input `i` of a run with seed `S` is
//! built by a generator seeded with `S + i` and nothing else, so one number rebuilds it.
//!
//! **Properties, for every input.**
//! 1. No panic: each input runs under `catch_unwind`.
//! 2. Bounded allocation: a counting `#[global_allocator]` (wrapping `System`) tracks the
//!    bytes live on the current thread, and the peak while a parser runs, above the level
//!    before it, must stay under `128 × input length + 1 MiB` ([`alloc_bound`]). Why: every
//!    parser here keeps at most a list or tree proportional to its input, plus small fixed
//!    buffers (the largest, the aws-chunked trailer section, is 16 KiB; the 1 MiB covers
//!    those). The per-byte factor comes from measuring the shapes that allocate most per
//!    input byte ([`repetitive_inputs_stay_within_the_allocation_bound`] pins them at full
//!    size): a SigV4 query of empty parameters (`&a&a…`) takes 85 bytes per byte, because
//!    the query is decoded twice into 48-byte pairs (hyper caps a request target at 64 KiB,
//!    so that is at most 5 MiB); everything else measured at most 45 (`a&a&…` for the
//!    router's query, JSON `0,0,…` and XML `<a/><a/>…` about 32; it varies with where a
//!    `Vec` last doubled). 128 leaves headroom over that, while a parser that allocates what
//!    a length field in its input says, or grows quadratically, exceeds it. The codec
//!    target has its own bound ([`codec_bound`]): decompressors need working memory set by
//!    the format, not by the input. An allocation request of 1 GiB or more, which could
//!    abort the process before any check reports it, writes the seed and the input to
//!    stderr first.
//! 3. Per target, a consistency property that fails when the parser is wrong, not only when
//!    it crashes: see each `check_*` function.
//!
//! **Running.**
//! - CI: part of `cargo test --release`; each target runs [`CI_ITERATIONS`] inputs (all
//!   targets together take well under a minute on the 2-core machine).
//! - Long run, ≥ 10 million inputs per target:
//!   `FUZZ_ITERATIONS=10000000 cargo test --release -p walstore-s3api --test fuzz -- --nocapture --test-threads=1`
//! - One target: add its test name after `--`, e.g. `-- fuzz_sigv4_header`.
//! - Replay: a failure prints `FUZZ_SEED=<n>`; `FUZZ_SEED=<n> FUZZ_ITERATIONS=1` with the
//!   target's name rebuilds exactly the failing input. The failure also prints the input in
//!   hex and writes it, with a shrunk copy, to `$CARGO_TARGET_TMPDIR/fuzz-failures/`. Once
//!   fixed, add it to the corpus as `regress-<what>`.

// The counting allocator implements `GlobalAlloc`, an unsafe trait; nothing else here is unsafe.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use percent_encoding::{percent_decode, utf8_percent_encode, NON_ALPHANUMERIC};
use s3api::auth::chunked::{ChunkMode, ChunkedDecoder, ChunkedError};
use s3api::auth::sigv4::{verify, AuthError, AuthSettings, ChunkSigner, RequestParts, SecretLookup, Verified};
use s3api::headers::{check_read_conditions, meta_from_headers, parse_range, text, write_condition, ChecksumRequest};
use s3api::router::{route, Operation, Query};
use s3api::xml::{escape_into, parse_complete, parse_create_bucket, parse_delete, CompletePart, DeleteRequest};
use s3api::S3Code;
use sha2::{Digest, Sha256};
use storage::wal::codec::{decode as codec_decode, DecodeError};
use storage::wal::names::split24;
use storage::wal::{
    classify, split_repo, BackupName, Codec, History, Lsn, MetadataInfo, SegmentSize, SentinelInfo, TimelineId,
    WalObject,
};
use storage::{BucketName, ETag, ObjectInfo, ObjectKey, ObjectMeta, Timestamp};

/// Inputs per target in CI, unless `FUZZ_ITERATIONS` says otherwise: a few seconds per
/// target in `--release` on the 2-core machine. A debug build is some 20 times slower, so it
/// runs fewer.
const CI_ITERATIONS: u64 = if cfg!(debug_assertions) { 10_000 } else { 200_000 };

// ------------------------------------------------------------------------------------------
// Allocation meter

mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::io::Write;

    /// Requests this large abort the process if they fail, so they are reported first.
    const HUGE: usize = 1 << 30;

    /// `System`, counting the bytes live on each thread.
    pub struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
        /// The input being parsed on this thread, and its seed (for [`report_huge`]).
        static INPUT: Cell<(*const u8, usize, u64)> = const { Cell::new((std::ptr::null(), 0, 0)) };
    }

    fn note(delta: isize) {
        // `try_with`: allocations also happen while thread-locals are torn down.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged and
    // only adds bookkeeping in thread-locals that are const-initialised and never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            report_huge(layout.size());
            // SAFETY: forwarded as received.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                note(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            report_huge(layout.size());
            // SAFETY: forwarded as received.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                note(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as received.
            unsafe { System.dealloc(ptr, layout) };
            note(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            report_huge(new_size);
            // SAFETY: forwarded as received.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                note(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// Runs `f` and returns the peak of bytes live on this thread meanwhile, above the
    /// level before the call.
    pub fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let r = f();
        let peak = PEAK.with(Cell::get) - base;
        (r, usize::try_from(peak).unwrap_or(0))
    }

    /// Names the input parsed on this thread until [`clear_input`]; `input` must outlive that.
    pub fn set_input(input: &[u8], seed: u64) {
        INPUT.with(|i| i.set((input.as_ptr(), input.len(), seed)));
    }

    pub fn clear_input() {
        INPUT.with(|i| i.set((std::ptr::null(), 0, 0)));
    }

    /// Writes the seed and the input to stderr, without allocating (this runs inside the
    /// allocator), before a request that may abort the process.
    fn report_huge(size: usize) {
        if size < HUGE {
            return;
        }
        let Ok((ptr, len, seed)) = INPUT.try_with(Cell::get) else { return };
        if ptr.is_null() {
            return;
        }
        // SAFETY: `set_input` was given a live slice that outlives the parse in progress.
        let input = unsafe { std::slice::from_raw_parts(ptr, len) };
        let mut err = std::io::stderr().lock();
        let mut num = [0u8; 20];
        let _ = err.write_all(b"\nfuzz: a parser asked for ");
        let _ = err.write_all(decimal(size as u64, &mut num));
        let _ = err.write_all(b" bytes at once (the process may abort now); FUZZ_SEED=");
        let _ = err.write_all(decimal(seed, &mut num));
        let _ = err.write_all(b" rebuilds the input, which is (hex):\n");
        let mut line = [0u8; 128];
        for chunk in input.chunks(64) {
            for (i, b) in chunk.iter().enumerate() {
                line[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
                line[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
            }
            let _ = err.write_all(&line[..2 * chunk.len()]);
        }
        let _ = err.write_all(b"\n");
    }

    fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return &buf[i..];
            }
        }
    }
}

#[global_allocator]
static ALLOCATOR: meter::Counting = meter::Counting;

/// Allocation allowed to a parser for an input of `len` bytes (see the module docs).
fn alloc_bound(len: usize) -> usize {
    128 * len + (1 << 20)
}

thread_local! {
    /// Largest allocation peak seen on this thread (bytes, input length), for the summary.
    static WORST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Runs a parser under the allocation meter: `Err` if its peak exceeds [`alloc_bound`].
fn bounded<R>(what: &str, input_len: usize, f: impl FnOnce() -> R) -> Result<R, String> {
    bounded_by(what, input_len, alloc_bound(input_len), f)
}

fn bounded_by<R>(what: &str, input_len: usize, bound: usize, f: impl FnOnce() -> R) -> Result<R, String> {
    let (r, peak) = meter::peak_of(f);
    WORST.with(|w| {
        if peak > w.get().0 {
            w.set((peak, input_len));
        }
    });
    if peak > bound {
        return Err(format!(
            "{what} allocated {peak} bytes at its peak for a {input_len}-byte input; the bound is {bound}"
        ));
    }
    Ok(r)
}

// ------------------------------------------------------------------------------------------
// Panics: recorded per input, not printed

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// While a thread runs an input, its panics are recorded for the failure report instead of
/// printed (shrinking a failure panics hundreds of times). Other threads are unaffected.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                return previous(info);
            }
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("panicked at {at}: {msg}")));
        }));
    });
}

/// Accepted (`Ok(true)`), refused cleanly (`Ok(false)`), or a property violated (`Err`).
type Outcome = Result<bool, String>;

fn run_one(check: fn(&[u8]) -> Outcome, input: &[u8], seed: u64) -> Outcome {
    meter::set_input(input, seed);
    QUIET.with(|q| q.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| check(input)));
    QUIET.with(|q| q.set(false));
    meter::clear_input();
    result.unwrap_or_else(|_| Err(LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panicked".into())))
}

// ------------------------------------------------------------------------------------------
// Random numbers

/// SplitMix64: a few lines, statistically fine for mutation choices, and stable forever, so
/// a printed seed replays on any later version of this file's dependencies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// In `0..n`, small values far more likely: uniform below a random power of two.
    fn small(&mut self, n: usize) -> usize {
        let bits = usize::BITS - n.leading_zeros();
        let cap = 1usize << self.below(bits as usize + 1).min(63);
        self.below(cap.min(n))
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ------------------------------------------------------------------------------------------
// Corpus, mutations, the run loop and failure reports

/// One fuzz target: a corpus directory, a dictionary and a check.
struct Target {
    /// Directory under `tests/fuzz_corpus/`.
    name: &'static str,
    /// Tokens the mutator inserts, besides [`GENERIC_TOKENS`].
    dict: &'static [&'static [u8]],
    /// Mutated inputs are cut to this length.
    max_len: usize,
    /// Parses one input and checks the properties.
    check: fn(&[u8]) -> Outcome,
}

/// Tokens every target's mutator uses: separators, encodings and numbers at the edges.
const GENERIC_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b" ",
    b"\t",
    b"%",
    b"%00",
    b"%2F",
    b"%FF",
    b"%C3%A9",
    "é".as_bytes(),
    "\u{FFFD}".as_bytes(),
    b"\xff",
    b"\x00",
    b"0",
    b"-1",
    b"+1",
    b"4294967295",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"=",
    b"&",
    b";",
    b",",
    b":",
    b"/",
    b"\"",
];

const INTERESTING_BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\r\n\t \"%&',-./0129:;<=>?AFZ[\\]afz{}~";

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus").join(target);
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        })
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "corpus {} is empty", dir.display());
    entries
}

/// Builds input `out` from a random corpus entry and 1, 2, 4 or 8 stacked mutations.
fn build_input(rng: &mut Rng, corpus: &[&[u8]], t: &Target, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(corpus[rng.below(corpus.len())]);
    for _ in 0..1 << rng.below(4) {
        mutate(rng, corpus, t.dict, out);
    }
    out.truncate(t.max_len);
}

fn token<'a>(rng: &mut Rng, dict: &'a [&'a [u8]]) -> &'a [u8] {
    if rng.chance(4) || dict.is_empty() {
        GENERIC_TOKENS[rng.below(GENERIC_TOKENS.len())]
    } else {
        dict[rng.below(dict.len())]
    }
}

fn mutate(rng: &mut Rng, corpus: &[&[u8]], dict: &[&[u8]], data: &mut Vec<u8>) {
    let len = data.len();
    let at = rng.below(len + 1);
    match rng.below(13) {
        0 if len > 0 => data[rng.below(len)] ^= 1 << rng.below(8),
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] =
                if rng.chance(2) { INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())] } else { rng.next() as u8 };
        }
        2 => {
            let n = 1 + rng.small(8);
            let fresh = rng.bytes(n);
            data.splice(at..at, fresh);
        }
        3 if len > 0 => {
            let n = 1 + rng.small(len.min(64));
            let i = rng.below(len - n + 1);
            data.drain(i..i + n);
        }
        4 if len > 0 => {
            // Duplicate a chunk somewhere else (repeated headers, parts, chunks).
            let n = 1 + rng.small(len.min(512));
            let src = rng.below(len - n + 1);
            let chunk = data[src..src + n].to_vec();
            data.splice(at..at, chunk);
        }
        5 => {
            // Splice: this entry's head, another's tail.
            let other = corpus[rng.below(corpus.len())];
            data.truncate(at);
            data.extend_from_slice(&other[rng.below(other.len() + 1)..]);
        }
        6 => {
            // Cross-over: a piece of another entry inserted here.
            let other = corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let n = 1 + rng.small(other.len().min(256));
                let src = rng.below(other.len() - n + 1);
                data.splice(at..at, other[src..src + n].iter().copied());
            }
        }
        7 | 8 => {
            let tok = token(rng, dict);
            data.splice(at..at, tok.iter().copied());
        }
        9 if len > 0 => {
            // Replace a short range by a token.
            let n = rng.small(len.min(32)).min(len - at.min(len));
            let tok = token(rng, dict);
            let start = at.min(len);
            data.splice(start..start + n, tok.iter().copied());
        }
        11 if len > 0 => {
            // Repeat a short piece many times: long lines, names and numbers, deep nesting.
            let n = 1 + rng.small(len.min(8));
            let src = rng.below(len - n + 1);
            let piece = data[src..src + n].to_vec();
            let times = 2 + rng.small(1024);
            data.splice(at..at, piece.iter().copied().cycle().take(n * times));
        }
        10 if len > 0 => {
            // Flip the case of one ASCII letter (header names, hex digits, XML names).
            let i = rng.below(len);
            if data[i].is_ascii_alphabetic() {
                data[i] ^= 0x20;
            }
        }
        _ if len > 0 => data.truncate(rng.below(len)),
        _ => data.extend_from_slice(token(rng, dict)),
    }
}

struct RunConfig {
    seed: u64,
    iterations: u64,
}

fn run_config() -> RunConfig {
    let num = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().replace('_', "").parse::<u64>().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
    };
    let seed = num("FUZZ_SEED").unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Rng::new(t.as_secs() ^ u64::from(t.subsec_nanos()) << 32).next()
    });
    RunConfig { seed, iterations: num("FUZZ_ITERATIONS").unwrap_or(CI_ITERATIONS) }
}

/// Runs a corpus target: every corpus entry as it is, then the mutated inputs.
fn fuzz(t: &Target) {
    install_panic_hook();
    let cfg = run_config();
    let entries = corpus(t.name);
    eprintln!(
        "fuzz {}: FUZZ_SEED={} FUZZ_ITERATIONS={}, {} corpus entries",
        t.name,
        cfg.seed,
        cfg.iterations,
        entries.len()
    );
    for (name, data) in &entries {
        match run_one(t.check, data, 0) {
            Ok(true) => {}
            Ok(false) if !name.starts_with("ok-") => {}
            Ok(false) => panic!(
                "fuzz {}: corpus entry {name} is named ok-* but its parser refuses it; \
                 the corpus no longer reaches the paths it was made for (regenerate it, see its README)",
                t.name
            ),
            Err(why) => fail(t.name, t.check, &format!("corpus entry {name}"), None, data, &why),
        }
    }
    let inputs: Vec<&[u8]> = entries.iter().map(|(_, d)| d.as_slice()).collect();
    let mut buf = Vec::with_capacity(t.max_len);
    let mut accepted = 0u64;
    let start = Instant::now();
    for i in 0..cfg.iterations {
        let seed = cfg.seed.wrapping_add(i);
        build_input(&mut Rng::new(seed), &inputs, t, &mut buf);
        match run_one(t.check, &buf, seed) {
            Ok(a) => accepted += u64::from(a),
            Err(why) => fail(t.name, t.check, &format!("input {i}"), Some(seed), &buf, &why),
        }
    }
    summary(t.name, cfg.iterations, accepted, start.elapsed());
}

/// Runs a generated target: `case` builds an input from its seed and checks it; the input
/// it returns is what a failure report shows (in the format of a corpus entry).
fn fuzz_generated(name: &str, case: fn(&mut Rng) -> (Vec<u8>, Outcome)) {
    install_panic_hook();
    let cfg = run_config();
    eprintln!("fuzz {name}: FUZZ_SEED={} FUZZ_ITERATIONS={}, generated inputs", cfg.seed, cfg.iterations);
    let mut accepted = 0u64;
    let start = Instant::now();
    for i in 0..cfg.iterations {
        let seed = cfg.seed.wrapping_add(i);
        QUIET.with(|q| q.set(true));
        let result = catch_unwind(AssertUnwindSafe(|| case(&mut Rng::new(seed))));
        QUIET.with(|q| q.set(false));
        let (input, outcome) = result.unwrap_or_else(|_| {
            (Vec::new(), Err(LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panicked".into())))
        });
        match outcome {
            Ok(a) => accepted += u64::from(a),
            Err(why) => report(name, &format!("input {i}"), Some(seed), &input, &why, None),
        }
    }
    summary(name, cfg.iterations, accepted, start.elapsed());
}

fn summary(name: &str, iterations: u64, accepted: u64, elapsed: Duration) {
    let (peak, len) = WORST.with(Cell::get);
    eprintln!(
        "fuzz {name}: {iterations} inputs in {:.1} s ({:.0}/s), {accepted} accepted by the parser; \
         largest allocation peak {peak} bytes (for a {len}-byte input)",
        elapsed.as_secs_f64(),
        iterations as f64 / elapsed.as_secs_f64().max(1e-9),
    );
}

/// Shrinks a failing input (drops ranges while it still fails), then reports it.
fn fail(target: &str, check: fn(&[u8]) -> Outcome, what: &str, seed: Option<u64>, input: &[u8], why: &str) -> ! {
    let mut best = input.to_vec();
    let mut best_why = why.to_owned();
    let mut budget = 4000;
    let mut chunk = (best.len() / 2).max(1);
    loop {
        let mut i = 0;
        let mut progressed = false;
        while i < best.len() && budget > 0 {
            budget -= 1;
            let end = (i + chunk).min(best.len());
            let candidate = [&best[..i], &best[end..]].concat();
            match run_one(check, &candidate, seed.unwrap_or(0)) {
                Err(w) => {
                    best = candidate;
                    best_why = w;
                    progressed = true;
                }
                Ok(_) => i += chunk,
            }
        }
        if budget == 0 || (chunk == 1 && !progressed) {
            break;
        }
        if !progressed {
            chunk /= 2;
        }
    }
    let shrunk = (best.len() < input.len()).then_some((best.as_slice(), best_why.as_str()));
    report(target, what, seed, input, why, shrunk)
}

fn report(target: &str, what: &str, seed: Option<u64>, input: &[u8], why: &str, shrunk: Option<(&[u8], &str)>) -> ! {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let file = dir.join(format!("{target}-{}", seed.map_or_else(|| "corpus".to_owned(), |s| s.to_string())));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, input))
        .and_then(|()| shrunk.map_or(Ok(()), |(s, _)| std::fs::write(file.with_extension("shrunk"), s)));
    let mut msg = format!("fuzz target {target}, {what}: {why}\n");
    if let Some(seed) = seed {
        msg += &format!(
            "  replay: FUZZ_SEED={seed} FUZZ_ITERATIONS=1 cargo test --release -p walstore-s3api --test fuzz -- fuzz_{target} --nocapture\n"
        );
    }
    msg += &format!("  input ({} bytes, hex): {}\n", input.len(), hex::encode(input));
    msg += &format!("  as text: {}\n", String::from_utf8_lossy(&input[..input.len().min(4096)]).escape_debug());
    if let Some((s, w)) = shrunk {
        msg += &format!("  shrunk ({} bytes, hex): {}\n  which fails with: {w}\n", s.len(), hex::encode(s));
        msg += &format!("  shrunk as text: {}\n", String::from_utf8_lossy(s).escape_debug());
    }
    match saved {
        Ok(()) => msg += &format!("  saved to {} (and .shrunk)\n", file.display()),
        Err(e) => msg += &format!("  could not save it: {e}\n"),
    }
    panic!("{msg}")
}

// ------------------------------------------------------------------------------------------
// Requests as text: `METHOD target` then `name: value` lines

/// A request as the server sees it after hyper has parsed it.
struct Req {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
}

/// Parses the corpus form of a request. `None` if hyper would have refused the request line
/// (bad method or request target); header lines hyper would refuse are left out.
fn parse_request(input: &[u8]) -> Option<Req> {
    let mut lines = input.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let sp = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..sp]).ok()?;
    let uri: Uri = std::str::from_utf8(&first[sp + 1..]).ok()?.parse().ok()?;
    Some(Req {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: header_lines(lines),
    })
}

fn header_lines<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let value = trim_ows(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

// ------------------------------------------------------------------------------------------
// Target: router

/// The method that reaches each operation. An exhaustive `match`, so a new operation must
/// say how it is reached.
fn method_of(op: Operation) -> Method {
    use Operation::*;
    match op {
        ListBuckets | GetBucketLocation | GetBucketVersioning | ListObjects | ListObjectsV2 | ListObjectVersions
        | ListMultipartUploads | GetObject | ListParts => Method::GET,
        HeadBucket | HeadObject => Method::HEAD,
        CreateBucket | PutObject | CopyObject | UploadPart => Method::PUT,
        DeleteBucket | DeleteObject | AbortMultipartUpload => Method::DELETE,
        DeleteObjects | CreateMultipartUpload | CompleteMultipartUpload => Method::POST,
    }
}

/// Routing: refusals are 4xx or 501; an operation is reached only by its method; the query
/// parameters that select an operation agree with it (so nothing falls through into an
/// operation that changes data); bucket and key are exactly the percent-decoded path
/// segments; a parsed query re-encodes and re-parses to itself.
fn check_router(input: &[u8]) -> Outcome {
    let Some(req) = parse_request(input) else { return Ok(false) };
    let routed = bounded("Query::parse and route", input.len(), || {
        Query::parse(&req.query).and_then(|q| route(&req.method, &req.path, &q, &req.headers).map(|r| (q, r)))
    })?;
    let (query, r) = match routed {
        Ok(v) => v,
        Err(e) if e.status().is_client_error() || e.status() == StatusCode::NOT_IMPLEMENTED => return Ok(false),
        Err(e) => {
            return Err(format!(
                "routing refused with {} {}: a refusal must be 4xx or 501",
                e.status(),
                e.code.as_str()
            ))
        }
    };
    use Operation::*;
    let op = r.op;
    if method_of(op) != req.method {
        return Err(format!("{} was routed to {op:?}, which only {} may reach", req.method, method_of(op)));
    }
    let copy = req.headers.contains_key("x-amz-copy-source");
    let selects = match op {
        DeleteObjects => query.has("delete"),
        CreateMultipartUpload => query.has("uploads"),
        UploadPart => (query.has("partNumber") || query.has("uploadId")) && !copy,
        CompleteMultipartUpload | AbortMultipartUpload | ListParts => query.has("uploadId"),
        CopyObject => copy && !query.has("partNumber") && !query.has("uploadId"),
        PutObject => !copy && !query.has("partNumber") && !query.has("uploadId"),
        DeleteObject | GetObject => !query.has("uploadId"),
        ListObjectsV2 => query.get("list-type") == Some("2"),
        _ => true,
    };
    if !selects {
        return Err(format!("routed to {op:?}, but the query {:?} does not select it", query.pairs()));
    }
    let object_op = matches!(
        op,
        PutObject
            | CopyObject
            | GetObject
            | HeadObject
            | DeleteObject
            | CreateMultipartUpload
            | UploadPart
            | CompleteMultipartUpload
            | AbortMultipartUpload
            | ListParts
    );
    let path = req.path.strip_prefix('/').unwrap_or(&req.path);
    let (bucket_raw, key_raw) = path.split_once('/').map_or((path, ""), |(b, k)| (b, k));
    let decode = |s: &str| percent_decode(s.as_bytes()).decode_utf8().map(|c| c.into_owned()).ok();
    let want_bucket = (!bucket_raw.is_empty()).then(|| decode(bucket_raw)).flatten();
    let want_key = (!key_raw.is_empty()).then(|| decode(key_raw)).flatten();
    let got_bucket = r.bucket.as_ref().map(BucketName::to_string);
    let got_key = r.key.as_ref().map(ObjectKey::to_string);
    if (op == ListBuckets) != got_bucket.is_none() || object_op != got_key.is_some() {
        return Err(format!("{op:?} routed with bucket {got_bucket:?} and key {got_key:?}"));
    }
    if (got_bucket.is_some() && got_bucket != want_bucket) || got_key != want_key {
        return Err(format!(
            "path {:?} routed to bucket {got_bucket:?} key {got_key:?}, not the decoded segments {want_bucket:?} {want_key:?}",
            req.path
        ));
    }
    let reencoded: Vec<String> = query
        .pairs()
        .iter()
        .map(|(k, v)| {
            format!("{}={}", utf8_percent_encode(k, NON_ALPHANUMERIC), utf8_percent_encode(v, NON_ALPHANUMERIC))
        })
        .collect();
    match Query::parse(&reencoded.join("&")) {
        Ok(again) if again == query => {}
        other => return Err(format!("query {:?} re-encoded as {reencoded:?} parses to {other:?}", query.pairs())),
    }
    Ok(true)
}

const ROUTER_TOKENS: &[&[u8]] = &[
    b"?",
    b"&",
    b"=",
    b"uploads",
    b"uploadId=",
    b"partNumber=",
    b"delete",
    b"list-type=2",
    b"versions",
    b"versioning",
    b"location",
    b"acl",
    b"tagging",
    b"select",
    b"GET ",
    b"PUT ",
    b"POST ",
    b"DELETE ",
    b"HEAD ",
    b"x-amz-copy-source: ",
    b"//",
    b"/../",
    b"/./",
    b"/bkt/",
];

#[test]
fn fuzz_router() {
    fuzz(&Target { name: "router", dict: ROUTER_TOKENS, max_len: 4096, check: check_router });
}

// ------------------------------------------------------------------------------------------
// Targets: SigV4 header and presigned forms

/// When the corpus was signed: 2026-11-25T17:12:44Z.
const SIGNED_AT: u64 = 1_795_626_764;
const REGION: &str = "de01";
const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

struct Keys;

impl SecretLookup for Keys {
    fn secret_key(&self, access_key_id: &str) -> Option<String> {
        (access_key_id == AKID).then(|| SECRET.to_owned())
    }
}

fn verify_request(req: &Req) -> Result<Option<Verified>, AuthError> {
    let parts = RequestParts { method: &req.method, raw_path: &req.path, raw_query: &req.query, headers: &req.headers };
    let settings = AuthSettings {
        now: UNIX_EPOCH + Duration::from_secs(SIGNED_AT),
        region: REGION,
        max_skew: Duration::from_secs(15 * 60),
    };
    verify(&parts, &settings, &Keys)
}

/// What a verified request means to the server: who sent it, how its body is framed and
/// checked, which operation on which bucket and key, and the values of each query parameter
/// in order (grouped by name: the canonical query sorts by name, handlers read by name).
fn meaning(req: &Req, v: &Verified) -> Result<String, S3Code> {
    let q = Query::parse(&req.query).map_err(|e| e.code)?;
    let r = route(&req.method, &req.path, &q, &req.headers).map_err(|e| e.code)?;
    let mut params: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, val) in q.pairs().iter().filter(|(k, _)| k != "X-Amz-Signature") {
        params.entry(k).or_default().push(val);
    }
    Ok(format!(
        "{} {:?} {:?} {:?} {:?} {:?} {params:?}",
        v.access_key_id, v.payload, v.chunk_signer, r.op, r.bucket, r.key
    ))
}

/// Signature → meaning, of every `ok-*` request seed.
fn signed_meanings() -> &'static HashMap<String, Result<String, S3Code>> {
    static SEEDS: OnceLock<HashMap<String, Result<String, S3Code>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut map = HashMap::new();
        for target in ["sigv4_header", "sigv4_presigned"] {
            for (name, data) in corpus(target).into_iter().filter(|(n, _)| n.starts_with("ok-")) {
                let req = parse_request(&data).unwrap_or_else(|| panic!("{target}/{name} is not a request"));
                let Ok(Some(v)) = verify_request(&req) else { continue }; // the run reports it
                let text = String::from_utf8_lossy(&data);
                let sig = text
                    .split(['=', ' ', '&', '\n', ','])
                    .skip_while(|w| !w.ends_with("Signature"))
                    .nth(1)
                    .unwrap_or_else(|| panic!("{target}/{name}: no signature"));
                map.insert(sig.to_owned(), meaning(&req, &v));
            }
        }
        map
    })
}

/// SigV4: error messages stay short whatever the input (they quote client input clipped);
/// and a mutated request that still verifies carries the signature of a corpus request and
/// means exactly what that request meant (same key, payload mode, operation, bucket, key
/// and query values), unless it is now refused. Anything else is a request the signature
/// does not cover.
fn check_sigv4(input: &[u8]) -> Outcome {
    let Some(req) = parse_request(input) else { return Ok(false) };
    let verified = bounded("sigv4::verify", input.len(), || verify_request(&req))?;
    let v = match verified {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(false),
        Err(e) => {
            let msg = e.to_string();
            if msg.chars().count() > 256 {
                return Err(format!("a {}-character error message: client input must be clipped: {msg}", msg.len()));
            }
            return Ok(false);
        }
    };
    let decoded: Vec<u8> = percent_decode(input).collect();
    let haystacks = [String::from_utf8_lossy(input), String::from_utf8_lossy(&decoded)];
    let seeds: Vec<&Result<String, S3Code>> = signed_meanings()
        .iter()
        .filter(|(sig, _)| haystacks.iter().any(|h| h.contains(sig.as_str())))
        .map(|(_, m)| m)
        .collect();
    if seeds.is_empty() {
        return Err(format!("verified as {:?}, but carries no corpus signature", v.access_key_id));
    }
    match meaning(&req, &v) {
        Err(_) => Ok(true),
        Ok(m) if seeds.iter().any(|s| s.as_ref() == Ok(&m)) => Ok(true),
        Ok(m) => Err(format!("a mutated request still verifies but now means {m}; its corpus request meant {seeds:?}")),
    }
}

const SIGV4_TOKENS: &[&[u8]] = &[
    b"AWS4-HMAC-SHA256",
    b"AWS4-HMAC-SHA256 ",
    b"AWS4-ECDSA-P256-SHA256",
    b"AWS ",
    b"Bearer ",
    b"Credential=",
    b"SignedHeaders=",
    b"Signature=",
    b", ",
    b"/aws4_request",
    b"/s3/",
    b"us-east-1",
    b"de01",
    b"20261125",
    b"20261125T171244Z",
    b"20261125T172744Z",
    b"20261125T165744Z",
    b"authorization: ",
    b"x-amz-date: ",
    b"date: Wed, 25 Nov 2026 17:12:44 GMT",
    b"x-amz-content-sha256: ",
    b"UNSIGNED-PAYLOAD",
    b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    b"STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    b"host;",
    b";x-amz-date",
    b"x-amz-meta-a: b",
    b"X-Amz-Algorithm=",
    b"X-Amz-Credential=",
    b"X-Amz-Date=",
    b"X-Amz-Expires=",
    b"X-Amz-SignedHeaders=",
    b"X-Amz-Signature=",
    b"604800",
    b"604801",
    b"AWSAccessKeyId=",
    b"AKIDEXAMPLE",
    b"%2F",
];

#[test]
fn fuzz_sigv4_header() {
    fuzz(&Target { name: "sigv4_header", dict: SIGV4_TOKENS, max_len: 8192, check: check_sigv4 });
}

#[test]
fn fuzz_sigv4_presigned() {
    fuzz(&Target { name: "sigv4_presigned", dict: SIGV4_TOKENS, max_len: 8192, check: check_sigv4 });
}

// ------------------------------------------------------------------------------------------
// Targets: aws-chunked bodies

/// Chunk signatures use the key, date and scope of the AWS documentation examples.
const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DOC_DATE: &str = "20130524T000000Z";
const DOC_SCOPE: &str = "20130524/us-east-1/s3/aws4_request";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The SigV4 signing key of the documentation examples, derived here independently.
fn doc_key() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut k = hmac(format!("AWS4{DOC_SECRET}").as_bytes(), &DOC_DATE.as_bytes()[..8]);
        for part in ["us-east-1", "s3", "aws4_request"] {
            k = hmac(&k, part.as_bytes());
        }
        k
    })
}

/// The mode line that starts a chunked input: `signed <seed>`, `signed-trailer <seed>`,
/// `unsigned-trailer` or anything else (unsigned, no trailer).
struct Mode {
    seed: Option<String>,
    trailer: bool,
}

fn parse_mode(line: &[u8]) -> Mode {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ');
    let kind = words.next().unwrap_or("");
    let seed = words.next().unwrap_or("").to_owned();
    match kind {
        "signed" => Mode { seed: Some(seed), trailer: false },
        "signed-trailer" => Mode { seed: Some(seed), trailer: true },
        "unsigned-trailer" => Mode { seed: None, trailer: true },
        _ => Mode { seed: None, trailer: false },
    }
}

fn decoder(mode: &Mode) -> ChunkedDecoder {
    let chunk_mode = match &mode.seed {
        Some(seed) => ChunkMode::Signed(ChunkSigner::new(doc_key(), DOC_DATE.into(), DOC_SCOPE.into(), seed.clone())),
        None => ChunkMode::Unsigned,
    };
    ChunkedDecoder::new(chunk_mode, mode.trailer)
}

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    payload: Vec<u8>,
    trailers: Vec<(String, String)>,
}

/// Decodes `body` fed in pieces cut at `cuts` (ascending), then `finish`.
fn decode_body(mode: &Mode, body: &[u8], cuts: &[usize]) -> Result<Decoded, ChunkedError> {
    let mut dec = decoder(mode);
    let mut out = BytesMut::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        dec.decode(&body[start..cut], &mut out)?;
        start = cut;
    }
    dec.finish()?;
    assert_eq!(dec.decoded_len(), out.len() as u64, "decoded_len counts the payload bytes");
    assert!(dec.is_done(), "finish returned Ok, so the body is done");
    Ok(Decoded { payload: out.to_vec(), trailers: dec.trailers().to_vec() })
}

fn split_mode(input: &[u8]) -> (Mode, &[u8]) {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) => (parse_mode(&input[..i]), &input[i + 1..]),
        None => (parse_mode(input), &[]),
    }
}

/// Random ascending cut points in `0..=len`, derived from the input so a replay cuts alike.
fn cuts_for(input: &[u8], len: usize) -> Vec<usize> {
    let mut rng = Rng::new(u64::from_le_bytes(Sha256::digest(input)[..8].try_into().expect("8 bytes")));
    let mut cuts: Vec<usize> = (0..rng.small(16)).map(|_| rng.below(len + 1)).collect();
    if rng.chance(8) {
        cuts = (1..len.min(4096)).collect(); // one byte at a time
    }
    cuts.sort_unstable();
    cuts
}

/// Decoded form of each signed corpus body, by seed signature.
fn signed_bodies() -> &'static HashMap<String, Decoded> {
    static BODIES: OnceLock<HashMap<String, Decoded>> = OnceLock::new();
    BODIES.get_or_init(|| {
        let mut map = HashMap::new();
        for (_, data) in corpus("chunked") {
            let (mode, body) = split_mode(&data);
            if let (Some(seed), Ok(d)) = (mode.seed.clone(), decode_body(&mode, body, &[])) {
                let previous = map.insert(seed, d);
                assert!(previous.is_none(), "two signed chunked seeds share a seed signature");
            }
        }
        map
    })
}

/// aws-chunked: the result does not depend on how the body is split into reads (the
/// decoder is documented byte-at-a-time safe); a signed body that still decodes after
/// mutation decodes to exactly its corpus body's payload and trailers (a seed signature
/// from no corpus body must not decode at all).
fn check_chunked(input: &[u8]) -> Outcome {
    let (mode, body) = split_mode(input);
    let whole = bounded("aws-chunked decode", input.len(), || decode_body(&mode, body, &[]))?;
    let cuts = cuts_for(input, body.len());
    let pieces = bounded("aws-chunked decode in pieces", input.len(), || decode_body(&mode, body, &cuts))?;
    if whole != pieces {
        return Err(format!("decoding depends on the split: whole {whole:?}, cut at {cuts:?} {pieces:?}"));
    }
    let Ok(decoded) = whole else { return Ok(false) };
    if let Some(seed) = &mode.seed {
        match signed_bodies().get(seed) {
            Some(d) if *d == decoded => {}
            Some(d) => return Err(format!("a mutated signed body decodes to {decoded:?}, its corpus body to {d:?}")),
            None => return Err(format!("a signed body with unknown seed signature {seed:?} decoded: {decoded:?}")),
        }
    }
    Ok(true)
}

const CHUNKED_TOKENS: &[&[u8]] = &[
    b";chunk-signature=",
    b"chunk-signature",
    b"\r\n",
    b"\r\n\r\n",
    b"0\r\n",
    b"0;chunk-signature=",
    b"x-amz-trailer-signature:",
    b"x-amz-checksum-crc32:",
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n",
    b"X-Amz-Checksum-Crc32",
    b":",
    b"ffffffffffffffff",
    b"10000000000000000",
    b"FFFFFFFF",
    b"10000",
    b"a",
    b"signed ",
    b"signed-trailer ",
    b"unsigned\n",
    b"unsigned-trailer\n",
];

#[test]
fn fuzz_chunked() {
    fuzz(&Target { name: "chunked", dict: CHUNKED_TOKENS, max_len: 80 * 1024, check: check_chunked });
}

/// Which part of an encoded body a byte belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Sizes, extensions, CRLFs, the final empty line.
    Framing,
    /// Chunk payload bytes.
    Data,
    /// Hex of a chunk or trailer signature.
    Signature,
    /// A trailer line other than the signature.
    Trailer,
}

struct Encoded {
    body: Vec<u8>,
    parts: Vec<(Range<usize>, Part)>,
}

impl Encoded {
    fn push(&mut self, bytes: &[u8], part: Part) {
        let start = self.body.len();
        self.body.extend_from_slice(bytes);
        if part != Part::Framing {
            self.parts.push((start..self.body.len(), part));
        }
    }

    fn part_at(&self, i: usize) -> Part {
        self.parts.iter().find(|(r, _)| r.contains(&i)).map_or(Part::Framing, |(_, p)| *p)
    }
}

/// Reference aws-chunked encoder, independent of the decoder: chunk and trailer signatures
/// computed here with `hmac`/`sha2` from the AWS "sigv4-streaming" definitions.
fn encode_chunked(
    seed: Option<&str>,
    payload: &[u8],
    sizes: &mut dyn FnMut() -> usize,
    trailer_mode: bool,
    trailers: &[(String, String)],
    upper_hex: bool,
    final_crlf: bool,
) -> Encoded {
    let key = doc_key();
    let mut e = Encoded { body: Vec::new(), parts: Vec::new() };
    let mut previous = seed.map(str::to_owned);
    let mut rest = payload;
    loop {
        let n = if rest.is_empty() { 0 } else { sizes().clamp(1, rest.len()) };
        let (chunk, tail) = rest.split_at(n);
        e.push((if upper_hex { format!("{n:X}") } else { format!("{n:x}") }).as_bytes(), Part::Framing);
        if let Some(prev) = &mut previous {
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{DOC_DATE}\n{DOC_SCOPE}\n{prev}\n{EMPTY_SHA256}\n{}",
                hex::encode(Sha256::digest(chunk))
            );
            *prev = hex::encode(hmac(&key, sts.as_bytes()));
            e.push(b";chunk-signature=", Part::Framing);
            e.push(prev.as_bytes(), Part::Signature);
        }
        e.push(b"\r\n", Part::Framing);
        if n == 0 {
            break;
        }
        e.push(chunk, Part::Data);
        e.push(b"\r\n", Part::Framing);
        rest = tail;
    }
    for (name, value) in trailers {
        e.push(format!("{name}:{value}").as_bytes(), Part::Trailer);
        e.push(b"\r\n", Part::Framing);
    }
    if let Some(prev) = &previous {
        // The signed-trailer mode signs the trailer section even when it is empty.
        if trailer_mode {
            let mut sorted: Vec<&(String, String)> = trailers.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let canonical: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
            let sts = format!(
                "AWS4-HMAC-SHA256-TRAILER\n{DOC_DATE}\n{DOC_SCOPE}\n{prev}\n{}",
                hex::encode(Sha256::digest(canonical.as_bytes()))
            );
            e.push(b"x-amz-trailer-signature:", Part::Framing);
            e.push(hex::encode(hmac(&key, sts.as_bytes())).as_bytes(), Part::Signature);
            e.push(b"\r\n", Part::Framing);
        }
    }
    if final_crlf {
        e.push(b"\r\n", Part::Framing);
    }
    e
}

/// Round trip: a body made by the reference encoder (random payload, chunk sizes, hex case,
/// mode, trailers, final CRLF or not) decodes, split at random points, to exactly the
/// payload and trailers. Then single-byte changes: in a signed body, any change to payload
/// or signature bytes is rejected, and any other change is rejected or decodes to the same
/// payload and trailers (e.g. the case of a hex size); in an unsigned body a payload byte
/// change comes out verbatim (unsigned framing is not authenticated, so a changed size may
/// frame another valid body: nothing to check there beyond no panic and bounded memory).
fn chunked_roundtrip_case(rng: &mut Rng) -> (Vec<u8>, Outcome) {
    let signed = rng.chance(2);
    let trailer = rng.chance(2);
    let seed = hex::encode(rng.bytes(32));
    let len = rng.small(8 * 1024);
    let payload = if rng.chance(2) { rng.bytes(len) } else { vec![b'a' + rng.below(26) as u8; len] };
    let names = ["x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme", "x-amz-meta-a"];
    let trailers: Vec<(String, String)> = if trailer {
        let start = rng.below(names.len());
        (0..rng.below(3))
            .map(|i| {
                let value: String = (0..1 + rng.below(12)).map(|_| char::from(b'A' + rng.below(26) as u8)).collect();
                (names[(start + i) % names.len()].to_owned(), value + "==")
            })
            .collect()
    } else {
        Vec::new()
    };
    // About `chunks` chunks of random sizes around `len / chunks` (every chunk costs two
    // HMACs per decode, so the count, not the length, sets the price of a case).
    let chunks = 1 + rng.small(16);
    let typical = (len / chunks).max(1);
    let upper_hex = rng.chance(2);
    let final_crlf = !rng.chance(4);
    let mut size_rng = Rng::new(rng.next());
    let mut sizes = || typical / 2 + 1 + size_rng.below(typical);
    let seed_opt = signed.then_some(seed.as_str());
    let enc = encode_chunked(seed_opt, &payload, &mut sizes, trailer, &trailers, upper_hex, final_crlf);
    let mode_line = match (signed, trailer) {
        (true, false) => format!("signed {seed}\n"),
        (true, true) => format!("signed-trailer {seed}\n"),
        (false, true) => "unsigned-trailer\n".to_owned(),
        (false, false) => "unsigned\n".to_owned(),
    };
    let as_input = |body: &[u8]| [mode_line.as_bytes(), body].concat();
    let mode = Mode { seed: signed.then(|| seed.clone()), trailer };
    let expected = Decoded { payload: payload.clone(), trailers: trailers.clone() };

    let cuts = {
        let mut c: Vec<usize> = (0..rng.small(8)).map(|_| rng.below(enc.body.len() + 1)).collect();
        c.sort_unstable();
        c
    };
    match bounded("aws-chunked decode", enc.body.len(), || decode_body(&mode, &enc.body, &cuts)) {
        Err(e) => return (as_input(&enc.body), Err(e)),
        Ok(Ok(d)) if d == expected => {}
        Ok(got) => {
            return (
                as_input(&enc.body),
                Err(format!("the encoder's body decoded (cut at {cuts:?}) to {got:?}, not {expected:?}")),
            )
        }
    }

    for _ in 0..3 {
        let i = rng.below(enc.body.len());
        let mut body = enc.body.clone();
        body[i] ^= 1 + rng.below(255) as u8;
        let part = enc.part_at(i);
        let got = match bounded("aws-chunked decode", body.len(), || decode_body(&mode, &body, &[])) {
            Ok(got) => got,
            Err(e) => return (as_input(&body), Err(e)),
        };
        let ok = match (&got, signed, part) {
            (Err(_), _, _) => true,
            (Ok(_), true, Part::Data | Part::Signature) => false,
            (Ok(d), true, Part::Framing | Part::Trailer) => *d == expected,
            (Ok(d), false, Part::Data) => d.payload == body_payload(&enc, &body) && d.trailers == expected.trailers,
            // Unsigned framing is not authenticated: a changed size can frame another
            // valid body (e.g. with 1-byte chunks, `1` → `D` takes in the next framing).
            (Ok(_), false, Part::Framing | Part::Trailer | Part::Signature) => true,
        };
        if !ok {
            return (
                as_input(&body),
                Err(format!(
                    "byte {i} ({part:?}) changed from {:#04x} to {:#04x}: decoded to {got:?}",
                    enc.body[i], body[i]
                )),
            );
        }
    }
    (as_input(&enc.body), Ok(true))
}

/// The payload a body carries: its `Data` bytes in order.
fn body_payload(enc: &Encoded, body: &[u8]) -> Vec<u8> {
    enc.parts.iter().filter(|(_, p)| *p == Part::Data).flat_map(|(r, _)| body[r.clone()].iter().copied()).collect()
}

#[test]
fn fuzz_chunked_roundtrip() {
    fuzz_generated("chunked_roundtrip", chunked_roundtrip_case);
}

// ------------------------------------------------------------------------------------------
// Target: XML request bodies

fn escaped(text: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, text);
    out
}

fn render_complete(parts: &[CompletePart]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for p in parts {
        s +=
            &format!("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>", p.number, escaped(&format!("\"{}\"", p.etag)));
        for (alg, value) in &p.checksums {
            s += &format!("<Checksum{alg}>{}</Checksum{alg}>", escaped(value));
        }
        s += "</Part>";
    }
    s + "</CompleteMultipartUpload>"
}

fn render_delete(d: &DeleteRequest) -> String {
    let mut s = format!("<Delete><Quiet>{}</Quiet>", d.quiet);
    for o in &d.objects {
        s += &format!("<Object><Key>{}</Key>", escaped(&o.key));
        if let Some(v) = &o.version_id {
            s += &format!("<VersionId>{}</VersionId>", escaped(v));
        }
        s += "</Object>";
    }
    s + "</Delete>"
}

/// XML bodies: refusals are MalformedXML; what a parser accepts, written back with the
/// crate's own escaping, parses to the same parts, objects (as many, in order) and
/// location. That also checks that escaping and unescaping agree on every text the parser
/// can produce, with one exception: NUL. XML has no form for it; the parser takes a raw
/// one (clients that build XML with ElementTree, like boto3, write control characters
/// raw) while `&#x0;`, what the writer makes of it, is refused by quick-xml. So documents
/// whose parsed text holds a NUL are not written back.
fn check_xml(input: &[u8]) -> Outcome {
    let (complete, delete, create) = bounded("XML body parsers", input.len(), || {
        (parse_complete(input), parse_delete(input), parse_create_bucket(input))
    })?;
    for code in [complete.as_ref().err(), delete.as_ref().err(), create.as_ref().err()].into_iter().flatten() {
        if code.code != S3Code::MalformedXML {
            return Err(format!("refused with {} ({}), not MalformedXML", code.code.as_str(), code.message));
        }
    }
    if input.contains(&0) {
        return Ok(complete.is_ok() || delete.is_ok() || create.is_ok());
    }
    if let Ok(parts) = &complete {
        let doc = render_complete(parts);
        match parse_complete(doc.as_bytes()) {
            Ok(again) if again == *parts => {}
            other => {
                return Err(format!("{} parts {parts:?}, written back as {doc:?}, parse to {other:?}", parts.len()))
            }
        }
    }
    if let Ok(d) = &delete {
        let doc = render_delete(d);
        match parse_delete(doc.as_bytes()) {
            Ok(again) if again == *d => {}
            other => {
                return Err(format!(
                    "{d:?} with {} objects, written back as {doc:?}, parses to {other:?}",
                    d.objects.len()
                ))
            }
        }
    }
    if let Ok(Some(location)) = &create {
        let doc = format!(
            "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            escaped(location)
        );
        match parse_create_bucket(doc.as_bytes()) {
            Ok(Some(again)) if again == *location => {}
            other => return Err(format!("location {location:?}, written back as {doc:?}, parses to {other:?}")),
        }
    }
    Ok(complete.is_ok() || delete.is_ok() || create.is_ok())
}

const XML_TOKENS: &[&[u8]] = &[
    b"<Part>",
    b"</Part>",
    b"<PartNumber>",
    b"</PartNumber>",
    b"<ETag>",
    b"</ETag>",
    b"<Object>",
    b"</Object>",
    b"<Key>",
    b"</Key>",
    b"<VersionId>",
    b"</VersionId>",
    b"<Quiet>true</Quiet>",
    b"<ChecksumCRC32>",
    b"</ChecksumCRC32>",
    b"<LocationConstraint>",
    b"<![CDATA[",
    b"]]>",
    b"&amp;",
    b"&#34;",
    b"&#x1;",
    b"&#xD;",
    b"&#xFFFE;",
    b"&#0;",
    b"&#1114112;",
    b"&unknown;",
    b"<!--",
    b"-->",
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<!DOCTYPE a [<!ENTITY e \"x\">]>",
    b" xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"",
    b"s3:",
    b"<a>",
    b"</a>",
    b"/>",
    b"<",
    b">",
    b"'",
    b"10000",
];

#[test]
fn fuzz_xml() {
    fuzz(&Target { name: "xml", dict: XML_TOKENS, max_len: 16 * 1024, check: check_xml });
}

// ------------------------------------------------------------------------------------------
// Target: Range and conditional headers

/// The object the conditional headers are evaluated against.
fn sample_object() -> ObjectInfo {
    ObjectInfo {
        bucket: BucketName::parse("bkt").expect("bucket"),
        key: ObjectKey::parse("k").expect("key"),
        size: 1024,
        etag: ETag::from_client("9b2cf535f27731c974343645a3985328"),
        last_modified: Timestamp::from_millis(1_795_626_764_123),
        meta: ObjectMeta::default(),
        checksum: None,
        parts_count: None,
        blobs: vec![],
    }
}

/// Object sizes a Range is checked against.
const RANGE_SIZES: [u64; 9] = [0, 1, 2, 99, 100, 1024, 1025, 16 << 20, u64::MAX];

/// Headers: a Range that parses is a non-empty range inside the object; refusals carry the
/// codes S3 uses (InvalidRange, PreconditionFailed, NotModified only without the
/// copy-source prefix, InvalidArgument for non-text values, ...); the checksum request
/// lists each algorithm once, including the announced trailer.
fn check_headers(input: &[u8]) -> Outcome {
    let headers = header_lines(input.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)));
    let info = sample_object();
    let results = bounded("header parsers", input.len(), || {
        let ranges: Vec<_> = RANGE_SIZES
            .iter()
            .map(|&size| (size, text(&headers, "range").and_then(|v| parse_range(v, size))))
            .collect();
        let read = check_read_conditions(&headers, &info, "");
        let copy = check_read_conditions(&headers, &info, "x-amz-copy-source-");
        let write = write_condition(&headers);
        let checksums = ChecksumRequest::from_headers(&headers);
        let meta = meta_from_headers(&headers);
        (ranges, read, copy, write, checksums, meta)
    })?;
    let (ranges, read, copy, write, checksums, meta) = results;
    let mut accepted = false;
    for (size, r) in ranges {
        match r {
            Ok(Some(r)) if r.start < r.end && r.end <= size => accepted = true,
            Ok(Some(r)) => {
                return Err(format!("Range {:?} gave {r:?} for an object of {size} bytes", headers.get("range")))
            }
            Ok(None) => {}
            Err(e) if matches!(e.code, S3Code::InvalidRange | S3Code::InvalidArgument) => {}
            Err(e) => return Err(format!("Range refused with {}", e.code.as_str())),
        }
    }
    use S3Code::*;
    for (prefix, r, allowed) in [
        ("", &read, &[PreconditionFailed, NotModified, InvalidArgument][..]),
        ("x-amz-copy-source-", &copy, &[PreconditionFailed, InvalidArgument][..]),
    ] {
        if let Err(e) = r {
            if !allowed.contains(&e.code) {
                return Err(format!("read conditions with prefix {prefix:?} refused with {}", e.code.as_str()));
            }
        }
    }
    if let Err(e) = &write {
        if !matches!(e.code, NotImplemented | InvalidArgument) {
            return Err(format!("write condition refused with {}", e.code.as_str()));
        }
    }
    match &checksums {
        Ok(c) => {
            let algs = c.algorithms();
            if (1..algs.len()).any(|i| algs[..i].contains(&algs[i])) || c.trailer.is_some_and(|t| !algs.contains(&t)) {
                return Err(format!("checksum request {c:?} computes {algs:?}"));
            }
        }
        Err(e) if matches!(e.code, InvalidRequest | InvalidDigest | InvalidArgument) => {}
        Err(e) => return Err(format!("checksum headers refused with {}", e.code.as_str())),
    }
    match &meta {
        Ok(m) => {
            let user: usize = m.user.iter().map(|(k, v)| k.len() + v.len()).sum();
            let chunked = m.headers.iter().any(|(k, v)| {
                k == "content-encoding" && v.split(',').any(|c| c.trim().eq_ignore_ascii_case("aws-chunked"))
            });
            if user > 2048 || chunked {
                return Err(format!(
                    "metadata accepted with {user} bytes of user metadata, or aws-chunked stored: {m:?}"
                ));
            }
        }
        Err(e) if e.code == InvalidArgument => {}
        Err(e) => return Err(format!("metadata refused with {}", e.code.as_str())),
    }
    Ok(accepted || read.is_ok() || checksums.is_ok())
}

const HEADER_TOKENS: &[&[u8]] = &[
    b"range: bytes=",
    b"bytes=",
    b"-",
    b",",
    b"if-match: ",
    b"if-none-match: ",
    b"if-modified-since: ",
    b"if-unmodified-since: ",
    b"x-amz-copy-source-if-match: ",
    b"x-amz-copy-source-if-none-match: ",
    b"*",
    b"W/",
    b"\"9b2cf535f27731c974343645a3985328\"",
    b"Wed, 25 Nov 2026 17:12:44 GMT",
    b"Sun Nov  6 08:49:37 1994",
    b"x-amz-checksum-crc32: ",
    b"x-amz-checksum-crc64nvme: ",
    b"x-amz-sdk-checksum-algorithm: ",
    b"CRC32C",
    b"x-amz-trailer: ",
    b"x-amz-checksum-sha1",
    b"content-md5: ",
    b"x-amz-meta-",
    b"content-encoding: ",
    b"aws-chunked",
    b"x-amz-storage-class: ",
    b"18446744073709551614",
];

#[test]
fn fuzz_headers() {
    fuzz(&Target { name: "headers", dict: HEADER_TOKENS, max_len: 8192, check: check_headers });
}

// ------------------------------------------------------------------------------------------
// Targets: WAL names, history files, backup documents, codecs

/// Every WAL segment size PostgreSQL allows.
fn segment_sizes() -> impl Iterator<Item = SegmentSize> {
    (20..=30).map(|shift| SegmentSize::new(1 << shift).expect("a power of two from 1 MiB to 1 GiB"))
}

/// WAL names: `split_repo` splits a key into a repository prefix and a path that rebuild
/// the key; what `classify` finds is really in the path (24-hex names, timelines, backup
/// names); a backup name that parses is the input, and its parts are 24-hex names; a
/// segment name that parses formats back to the same string for its segment size; an LSN
/// that parses prints in a form that parses to the same LSN.
fn check_wal_names(input: &[u8]) -> Outcome {
    // Lossy: each invalid byte becomes U+FFFD, three bytes, which is good at finding
    // slicing that is not on a character boundary.
    let s = String::from_utf8_lossy(input);
    let s = s.as_ref();
    bounded("WAL name parsers", input.len(), || wal_names(s))?
}

fn wal_names(s: &str) -> Outcome {
    let mut accepted = false;
    let mut paths = vec![s];
    if let Some((repo, path)) = split_repo(s) {
        if format!("{repo}{path}") != s
            || !(path.starts_with("wal_005/") || path.starts_with("basebackups_005/"))
            || !(repo.is_empty() || repo.ends_with('/'))
        {
            return Err(format!("split_repo({s:?}) = ({repo:?}, {path:?})"));
        }
        paths.push(path);
    }
    for path in paths {
        let class = classify(path);
        let fine = match &class {
            WalObject::Segment { name, .. } | WalObject::Partial { name, .. } | WalObject::BackupLabel { name, .. } => {
                split24(name).is_ok() && path.starts_with(&format!("wal_005/{name}"))
            }
            WalObject::History { timeline, .. } => path.starts_with(&format!("wal_005/{}.history", timeline.hex())),
            WalObject::Sentinel(b) => path == format!("basebackups_005/{b}_backup_stop_sentinel.json"),
            WalObject::BackupMeta(b) => path == format!("basebackups_005/{b}/metadata.json"),
            WalObject::FilesMeta(b) => path == format!("basebackups_005/{b}/files_metadata.json"),
            WalObject::BackupData(b) => path.starts_with(&format!("basebackups_005/{b}/")),
            WalObject::WalMeta | WalObject::WalDelta => path.starts_with("wal_005/"),
            WalObject::Foreign => true,
        };
        if !fine || class.backup().is_some_and(|b| BackupName::parse(b.as_str()).as_ref() != Ok(b)) {
            return Err(format!("classify({path:?}) = {class:?}"));
        }
        accepted |= class != WalObject::Foreign;
    }
    let mut names = vec![s];
    names.extend(s.split('/'));
    names.extend(s.split('/').filter_map(|p| p.strip_suffix("_backup_stop_sentinel.json")));
    for name in names {
        if let Ok(b) = BackupName::parse(name) {
            let start = split24(b.start_wal_name());
            let parent_ok = b.delta_parent_wal_name().is_none_or(|p| split24(p).is_ok());
            if b.as_str() != name
                || b.to_string() != name
                || !parent_ok
                || start.map(|(t, _, _)| t) != Ok(b.timeline().get())
            {
                return Err(format!("backup name {name:?} parsed to {b:?}"));
            }
            accepted = true;
        }
        if let Ok((t, h, l)) = split24(name) {
            if format!("{t:08X}{h:08X}{l:08X}") != name {
                return Err(format!("split24({name:?}) = ({t:X}, {h:X}, {l:X})"));
            }
            for size in segment_sizes() {
                if let Ok((tl, seg)) = size.parse_file_name(name) {
                    let back = size.file_name(tl, seg);
                    if back != name || size.segment_of(size.start_of(seg)) != seg {
                        return Err(format!("{name:?} with {size:?} is {tl:?} {seg:?}, which formats as {back:?}"));
                    }
                    accepted = true;
                }
            }
        }
    }
    for token in std::iter::once(s).chain(s.split_whitespace()) {
        if let Ok(lsn) = token.parse::<Lsn>() {
            let text = lsn.to_string();
            if text.parse::<Lsn>() != Ok(lsn) {
                return Err(format!("LSN {token:?} = {lsn:?} prints as {text:?}, which does not parse back"));
            }
            accepted = true;
        }
    }
    Ok(accepted)
}

const WAL_NAME_TOKENS: &[&[u8]] = &[
    b"000000010000000000000001",
    b"FFFFFFFFFFFFFFFFFFFFFFFF",
    b"0000000100000001000000FF",
    b"00000002.history",
    b".history",
    b".partial",
    b".backup",
    b".00000028.backup",
    b".lz4",
    b".zst",
    b".br",
    b".lzma",
    b".lzo",
    b".gz",
    b".json",
    b".",
    b"_delta",
    b"wal_005/",
    b"basebackups_005/",
    b"base_",
    b"_D_",
    b"_backup_stop_sentinel.json",
    b"/metadata.json",
    b"/files_metadata.json",
    b"/tar_partitions/part_001.tar.lz4",
    b"_00000028",
    b"FFFFFFFF",
    b"0/",
    b"/0",
    b"FFFFFFFF/FFFFFFFF",
];

#[test]
fn fuzz_wal_names() {
    fuzz(&Target { name: "wal_names", dict: WAL_NAME_TOKENS, max_len: 1024, check: check_wal_names });
}

/// History files, parsed as the history of several timelines: what parses satisfies what
/// PostgreSQL guarantees (parents increase and are below the timeline, switch points do not
/// decrease), prints back as a history file that parses to the same history, and extends
/// the history of its parent timeline (itself minus the last line).
fn check_wal_history(input: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(input);
    let mut accepted = false;
    for tl in [1, 2, 3, 5, 16, u32::MAX] {
        let timeline = TimelineId::new(tl);
        let Ok(h) = bounded("History::parse", input.len(), || History::parse(timeline, &text))? else { continue };
        accepted = true;
        let e = &h.entries;
        let ordered = e.windows(2).all(|w| w[0].parent < w[1].parent && w[0].switch <= w[1].switch);
        if !ordered || e.iter().any(|x| x.parent >= timeline) || h.parent() != e.last().copied() {
            return Err(format!("timeline {tl}: parsed to {e:?}"));
        }
        let printed: String = e.iter().map(|x| format!("{}\t{}\treason\n", x.parent.get(), x.switch)).collect();
        if History::parse(timeline, &printed).as_ref() != Ok(&h) {
            return Err(format!("timeline {tl}: {e:?} printed as {printed:?} does not parse back"));
        }
        if let Some(last) = h.parent() {
            let parent = History { timeline: last.parent, entries: e[..e.len() - 1].to_vec() };
            if !h.extends(&parent) || parent.extends(&h) || h.extends(&h) {
                return Err(format!(
                    "timeline {tl}: {e:?} and its parent's history {parent:?} do not extend correctly"
                ));
            }
        }
    }
    Ok(accepted)
}

const HISTORY_TOKENS: &[&[u8]] = &[
    b"\t",
    b"\n",
    b"#",
    b"0/3000000",
    b"FFFFFFFF/FFFFFFFF",
    b"16/B374D848",
    b"1\t0/3000000\tno recovery target specified\n",
    b"\r\n",
    b"4294967295",
];

#[test]
fn fuzz_wal_history() {
    fuzz(&Target { name: "wal_history", dict: HISTORY_TOKENS, max_len: 4096, check: check_wal_history });
}

/// Backup sentinels and `metadata.json`: a sentinel has an LSN unless it is WAL-E's, its
/// FinishLSN is not before its LSN; what parses survives a JSON round trip of the parsed
/// form (which the catalog snapshot stores).
fn check_wal_sentinel(input: &[u8]) -> Outcome {
    let (sentinel, metadata) =
        bounded("sentinel parsers", input.len(), || (SentinelInfo::parse(input), MetadataInfo::parse(input)))?;
    if let Ok(s) = &sentinel {
        let lsns_ok = s.finish_lsn.is_none_or(|f| s.start_lsn.is_some_and(|st| st <= f));
        if s.wal_e != s.start_lsn.is_none() || !lsns_ok {
            return Err(format!("sentinel parsed to {s:?}"));
        }
        let json = serde_json::to_vec(s).map_err(|e| e.to_string())?;
        if serde_json::from_slice::<SentinelInfo>(&json).ok().as_ref() != Some(s) {
            return Err(format!("sentinel {s:?} does not survive a JSON round trip"));
        }
    }
    if let Ok(m) = &metadata {
        let json = serde_json::to_vec(m).map_err(|e| e.to_string())?;
        if serde_json::from_slice::<MetadataInfo>(&json).ok().as_ref() != Some(m) {
            return Err(format!("metadata {m:?} does not survive a JSON round trip"));
        }
    }
    Ok(sentinel.is_ok() || metadata.is_ok())
}

const SENTINEL_TOKENS: &[&[u8]] = &[
    b"\"LSN\":",
    b"\"FinishLSN\":",
    b"\"DeltaFrom\":",
    b"\"IsPermanent\":true",
    b"\"SystemIdentifier\":",
    b"\"wal_segment_backup_stop\":",
    b"\"start_lsn\":",
    b"\"finish_lsn\":",
    b"\"is_permanent\":",
    b"null",
    b"true",
    b"false",
    b"1e3",
    b"1.5",
    b"-0",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

#[test]
fn fuzz_wal_sentinel() {
    fuzz(&Target { name: "wal_sentinel", dict: SENTINEL_TOKENS, max_len: 8192, check: check_wal_sentinel });
}

/// Output limit of the codec target: what the catalog allows a history file or document.
const CODEC_LIMIT: usize = storage::wal::catalog::MAX_DOC_BYTES;

/// Allocation allowed to a decompressor: the input bound, twice the output limit (a `Vec`
/// doubling up to it), and the working memory the formats define (an LZ4 frame may ask for
/// 4 MiB blocks, brotli for a 16 MiB window, lzma for a dictionary up to the memory limit
/// the decoder is given, `max(limit, 1 MiB)`).
fn codec_bound(len: usize) -> usize {
    alloc_bound(len) + 2 * CODEC_LIMIT + 24 * (1 << 20)
}

/// Codecs: every decoder, on every input, stays within its output limit and its memory
/// bound; `None` returns the input itself.
fn check_wal_codec(input: &[u8]) -> Outcome {
    let mut accepted = false;
    for codec in [Codec::None, Codec::Lz4, Codec::Zstd, Codec::Brotli, Codec::Lzma, Codec::Lzo, Codec::Gzip] {
        let r = bounded_by("codec::decode", input.len(), codec_bound(input.len()), || {
            codec_decode(codec, input, CODEC_LIMIT)
        })?;
        match r {
            Ok(out) if out.len() > CODEC_LIMIT || (codec == Codec::None && out != input) => {
                return Err(format!("{codec:?} decoded {} bytes past the limit, or changed plain data", out.len()))
            }
            Ok(_) => accepted |= codec != Codec::None,
            Err(DecodeError::TooLarge(n)) if n != CODEC_LIMIT => return Err(format!("{codec:?}: TooLarge({n})")),
            Err(_) => {}
        }
    }
    Ok(accepted)
}

const CODEC_TOKENS: &[&[u8]] = &[
    b"\x04\x22\x4d\x18",
    b"\x28\xb5\x2f\xfd",
    b"\x5d\x00\x00\x80\x00",
    b"\x5d\x00\x00\x00\x40",
    b"\x89LZO\x00\r\n\x1a\n",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x7f\xff\xff\xff",
    b"\x00\x10\x00\x00",
    b"\x00\x00\x10\x00",
];

#[test]
fn fuzz_wal_codec() {
    fuzz(&Target { name: "wal_codec", dict: CODEC_TOKENS, max_len: 4096, check: check_wal_codec });
}

// ------------------------------------------------------------------------------------------
// The allocation bound at full size

/// Mutated inputs stay small (`max_len`), where the bound's 1 MiB dominates. This pins the
/// per-byte factor on large inputs of the shapes that allocate the most per input byte,
/// found by measuring: many tiny items, each becoming a struct, a node or a `Vec` slot.
#[test]
fn repetitive_inputs_stay_within_the_allocation_bound() {
    let presigned = &corpus("sigv4_presigned").into_iter().find(|(n, _)| n == "ok-boto3-get-object").expect("seed").1;
    let (line, rest) = presigned.split_at(presigned.iter().position(|&b| b == b'\n').expect("request line"));
    // hyper refuses a request target over 64 KiB, so that is the largest query there is.
    let query_bomb = [line, "&a".repeat(30_000).as_bytes(), rest].concat();
    let n = 64 * 1024;
    /// What it is, the input, and the parser to run on it.
    type Shape = (&'static str, Vec<u8>, fn(&[u8]));
    let cases: Vec<Shape> = vec![
        ("SigV4 query of empty parameters", query_bomb, |b| {
            let _ = verify_request(&parse_request(b).expect("request"));
        }),
        ("query of empty parameters", "a&".repeat(n).into_bytes(), |b| {
            let _ = Query::parse(std::str::from_utf8(b).expect("text"));
        }),
        ("XML of empty elements", format!("<Delete>{}</Delete>", "<a/>".repeat(n)).into_bytes(), |b| {
            let _ = parse_delete(b);
        }),
        (
            "XML of objects",
            format!("<Delete>{}</Delete>", "<Object><Key>k</Key></Object>".repeat(n)).into_bytes(),
            |b| {
                let _ = parse_delete(b);
            },
        ),
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
        (
            "aws-chunked of 1-byte chunks and full trailers",
            ["1\r\na\r\n".repeat(n), "0\r\n".into(), "a:b\r\n".repeat(3000), "\r\n".into()].concat().into_bytes(),
            |b| {
                let _ = decode_body(&Mode { seed: None, trailer: true }, b, &[]);
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
