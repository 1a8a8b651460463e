//! `cargo fuzz run wal_page`: the check of `wal::testkit::fuzz_wal::check_wal_page`, which the
//! mutation fuzzer in `wal/tests/fuzz.rs` runs in CI, under libFuzzer's coverage feedback.
//! A broken property panics with what broke.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wal::testkit::fuzz::meter::Counting;

// The allocation bounds of the check need the counting allocator.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = wal::testkit::fuzz_wal::check_wal_page(data) {
        panic!("{why}");
    }
});
