//! The mutation fuzzer shared by the fuzz tests of the crates (`wal/tests/fuzz.rs`,
//! `s3api/tests/fuzz.rs`): an allocation meter, a seeded mutator over a committed corpus,
//! the run loop, shrinking and failure reports. See `s3api/tests/fuzz.rs` for the method
//! and how to run, replay and extend it. A test binary that uses it installs the meter:
//! `#[global_allocator] static A: wal::testkit::fuzz::meter::Counting = wal::testkit::fuzz::meter::Counting;`

// The counting allocator implements `GlobalAlloc`, an unsafe trait; nothing else here is unsafe.
#![allow(unsafe_code)]
// A test harness: its failures are panics with a report.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Inputs per target in CI, unless `FUZZ_ITERATIONS` says otherwise: a few seconds per
/// target in `--release` on the 2-core machine. A debug build is some 20 times slower, so it
/// runs fewer.
pub const CI_ITERATIONS: u64 = if cfg!(debug_assertions) { 10_000 } else { 200_000 };

// ------------------------------------------------------------------------------------------
// Allocation meter

pub mod meter {
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

/// Allocation allowed to a parser for an input of `len` bytes (see the module docs).
pub fn alloc_bound(len: usize) -> usize {
    128 * len + (1 << 20)
}

thread_local! {
    /// Largest allocation peak seen on this thread (bytes, input length), for the summary.
    static WORST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Runs a parser under the allocation meter: `Err` if its peak exceeds [`alloc_bound`].
pub fn bounded<R>(what: &str, input_len: usize, f: impl FnOnce() -> R) -> Result<R, String> {
    bounded_by(what, input_len, alloc_bound(input_len), f)
}

pub fn bounded_by<R>(what: &str, input_len: usize, bound: usize, f: impl FnOnce() -> R) -> Result<R, String> {
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
pub fn install_panic_hook() {
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
pub type Outcome = Result<bool, String>;

pub fn run_one(check: fn(&[u8]) -> Outcome, input: &[u8], seed: u64) -> Outcome {
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
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    // A generator, not an iterator: it never ends, and `next` is what SplitMix64 calls it.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// In `0..n`, small values far more likely: uniform below a random power of two.
    pub fn small(&mut self, n: usize) -> usize {
        let bits = usize::BITS - n.leading_zeros();
        let cap = 1usize << self.below(bits as usize + 1).min(63);
        self.below(cap.min(n))
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ------------------------------------------------------------------------------------------
// Corpus, mutations, the run loop and failure reports

/// One fuzz target: a corpus directory, a dictionary and a check.
pub struct Target {
    /// The target's name; its corpus is the directory of that name under `corpus_root`.
    pub name: &'static str,
    /// Directory of the corpora (a crate's `tests/fuzz_corpus`).
    pub corpus_root: &'static str,
    /// The package whose `fuzz` test runs the target (for the replay line of a report).
    pub package: &'static str,
    /// Tokens the mutator inserts, besides [`GENERIC_TOKENS`].
    pub dict: &'static [&'static [u8]],
    /// Mutated inputs are cut to this length.
    pub max_len: usize,
    /// Parses one input and checks the properties.
    pub check: fn(&[u8]) -> Outcome,
}

/// Tokens every target's mutator uses: separators, encodings and numbers at the edges.
pub const GENERIC_TOKENS: &[&[u8]] = &[
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

pub const INTERESTING_BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\r\n\t \"%&',-./0129:;<=>?AFZ[\\]afz{}~";

pub fn corpus(root: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(root).join(target);
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
pub fn build_input(rng: &mut Rng, corpus: &[&[u8]], t: &Target, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(corpus[rng.below(corpus.len())]);
    for _ in 0..1 << rng.below(4) {
        mutate(rng, corpus, t.dict, out);
    }
    out.truncate(t.max_len);
}

pub fn token<'a>(rng: &mut Rng, dict: &'a [&'a [u8]]) -> &'a [u8] {
    if rng.chance(4) || dict.is_empty() {
        GENERIC_TOKENS[rng.below(GENERIC_TOKENS.len())]
    } else {
        dict[rng.below(dict.len())]
    }
}

pub fn mutate(rng: &mut Rng, corpus: &[&[u8]], dict: &[&[u8]], data: &mut Vec<u8>) {
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

pub struct RunConfig {
    seed: u64,
    iterations: u64,
}

pub fn run_config() -> RunConfig {
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
pub fn fuzz(t: &Target) {
    install_panic_hook();
    let cfg = run_config();
    let entries = corpus(t.corpus_root, t.name);
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
            Err(why) => fail(t, &format!("corpus entry {name}"), None, data, &why),
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
            Err(why) => fail(t, &format!("input {i}"), Some(seed), &buf, &why),
        }
    }
    summary(t.name, cfg.iterations, accepted, start.elapsed());
}

/// Runs a generated target: `case` builds an input from its seed and checks it; the input
/// it returns is what a failure report shows (in the format of a corpus entry).
pub fn fuzz_generated(name: &str, package: &str, case: fn(&mut Rng) -> (Vec<u8>, Outcome)) {
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
            Err(why) => report(name, package, &format!("input {i}"), Some(seed), &input, &why, None),
        }
    }
    summary(name, cfg.iterations, accepted, start.elapsed());
}

pub fn summary(name: &str, iterations: u64, accepted: u64, elapsed: Duration) {
    let (peak, len) = WORST.with(Cell::get);
    eprintln!(
        "fuzz {name}: {iterations} inputs in {:.1} s ({:.0}/s), {accepted} accepted by the parser; \
         largest allocation peak {peak} bytes (for a {len}-byte input)",
        elapsed.as_secs_f64(),
        iterations as f64 / elapsed.as_secs_f64().max(1e-9),
    );
}

/// Shrinks a failing input (drops ranges while it still fails), then reports it.
pub fn fail(t: &Target, what: &str, seed: Option<u64>, input: &[u8], why: &str) -> ! {
    let check = t.check;
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
    report(t.name, t.package, what, seed, input, why, shrunk)
}

pub fn report(
    target: &str,
    package: &str,
    what: &str,
    seed: Option<u64>,
    input: &[u8],
    why: &str,
    shrunk: Option<(&[u8], &str)>,
) -> ! {
    let dir = std::env::temp_dir().join("walstore-fuzz-failures");
    let file = dir.join(format!("{target}-{}", seed.map_or_else(|| "corpus".to_owned(), |s| s.to_string())));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, input))
        .and_then(|()| shrunk.map_or(Ok(()), |(s, _)| std::fs::write(file.with_extension("shrunk"), s)));
    let mut msg = format!("fuzz target {target}, {what}: {why}\n");
    if let Some(seed) = seed {
        msg += &format!(
            "  replay: FUZZ_SEED={seed} FUZZ_ITERATIONS=1 cargo test --release -p {package} --test fuzz -- fuzz_{target} --nocapture\n"
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
