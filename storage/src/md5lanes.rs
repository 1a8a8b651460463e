//! MD5 of many concurrent uploads at once ("multi-buffer" hashing).
//!
//! MD5 (the ETag every S3 client checks) is the most expensive digest of a large PUT:
//! each 64-byte block is a strictly serial chain of 64 steps, about 600 MiB/s on one
//! core of the benchmark machine, against 1.4 GiB/s for SHA-256 with SHA-NI. One
//! stream cannot go faster, but independent streams can share the vector unit: with
//! AVX-512 one instruction advances sixteen streams by one step (AVX2: eight). So the
//! MD5 of every body that goes to a blob file is computed on one service thread that
//! hashes whichever streams have bytes waiting side by side, block by block. (MinIO's
//! `md5-simd` does the same; under `warp put` with eight uploads MD5 was a third of
//! walstore's CPU.)
//!
//! Writers hand their buffers over without waiting (up to [`MAX_QUEUED`] bytes per
//! stream, then they wait) and wait only for the final digest. A lone stream is hashed
//! with the scalar code on the service thread, which still overlaps with the writer's
//! SHA-256, CRCs and file write.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes a stream may have waiting for the service before its writer blocks. Two
/// upload buffers: enough for the service to gather lanes, small enough that eight
/// uploads hold 4 MiB at most here (peak RSS under `warp put` is a benchmark row).
pub(crate) const MAX_QUEUED: usize = 512 << 10;

/// Streams advanced by one pass of the service thread (the widest kernel's lanes).
const PASS_STREAMS: usize = 16;

/// With fewer streams than this ready (and more registered), the service thread waits
/// up to [`GATHER_MAX`] for others before a pass.
const GATHER_LANES: usize = 8;
const GATHER_MAX: Duration = Duration::from_millis(2);

const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// `K[i] = floor(|sin(i + 1)| * 2^32)` (RFC 1321, checked by a test).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

// ------------------------------------------------------------------------------ kernel

/// One MD5 step for every lane: `a = b + rotl(a + f(b, c, d) + m + k, s)`.
#[inline(always)]
fn step<const N: usize>(
    a: &mut [u32; N],
    b: &[u32; N],
    c: &[u32; N],
    d: &[u32; N],
    m: &[u32; N],
    (k, s): (u32, u32),
    f: impl Fn(u32, u32, u32) -> u32,
) {
    for l in 0..N {
        a[l] =
            b[l].wrapping_add(a[l].wrapping_add(f(b[l], c[l], d[l])).wrapping_add(m[l]).wrapping_add(k).rotate_left(s));
    }
}

/// The 64 steps over one block per lane; `w[i][l]` is message word `i` of lane `l`.
/// Written per lane so that the compiler turns each step into a few vector
/// instructions when `N` lanes fit one register (and into plain scalar code for N = 1).
#[inline(always)]
fn compress<const N: usize>(state: &mut [[u32; N]; 4], w: &[[u32; N]; 16]) {
    let [mut a, mut b, mut c, mut d] = *state;
    let f = |b: u32, c: u32, d: u32| d ^ (b & (c ^ d));
    let g = |b: u32, c: u32, d: u32| c ^ (d & (b ^ c));
    let h = |b: u32, c: u32, d: u32| b ^ c ^ d;
    let i = |b: u32, c: u32, d: u32| c ^ (b | !d);
    macro_rules! quad {
        ($f:expr, $r:expr, $q:expr, [$w0:expr, $w1:expr, $w2:expr, $w3:expr], [$s0:expr, $s1:expr, $s2:expr, $s3:expr]) => {
            step(&mut a, &b, &c, &d, &w[$w0], (K[$r * 16 + $q * 4], $s0), $f);
            step(&mut d, &a, &b, &c, &w[$w1], (K[$r * 16 + $q * 4 + 1], $s1), $f);
            step(&mut c, &d, &a, &b, &w[$w2], (K[$r * 16 + $q * 4 + 2], $s2), $f);
            step(&mut b, &c, &d, &a, &w[$w3], (K[$r * 16 + $q * 4 + 3], $s3), $f);
        };
    }
    quad!(f, 0, 0, [0, 1, 2, 3], [7, 12, 17, 22]);
    quad!(f, 0, 1, [4, 5, 6, 7], [7, 12, 17, 22]);
    quad!(f, 0, 2, [8, 9, 10, 11], [7, 12, 17, 22]);
    quad!(f, 0, 3, [12, 13, 14, 15], [7, 12, 17, 22]);
    quad!(g, 1, 0, [1, 6, 11, 0], [5, 9, 14, 20]);
    quad!(g, 1, 1, [5, 10, 15, 4], [5, 9, 14, 20]);
    quad!(g, 1, 2, [9, 14, 3, 8], [5, 9, 14, 20]);
    quad!(g, 1, 3, [13, 2, 7, 12], [5, 9, 14, 20]);
    quad!(h, 2, 0, [5, 8, 11, 14], [4, 11, 16, 23]);
    quad!(h, 2, 1, [1, 4, 7, 10], [4, 11, 16, 23]);
    quad!(h, 2, 2, [13, 0, 3, 6], [4, 11, 16, 23]);
    quad!(h, 2, 3, [9, 12, 15, 2], [4, 11, 16, 23]);
    quad!(i, 3, 0, [0, 7, 14, 5], [6, 10, 15, 21]);
    quad!(i, 3, 1, [12, 3, 10, 1], [6, 10, 15, 21]);
    quad!(i, 3, 2, [8, 15, 6, 13], [6, 10, 15, 21]);
    quad!(i, 3, 3, [4, 11, 2, 9], [6, 10, 15, 21]);
    for l in 0..N {
        state[0][l] = state[0][l].wrapping_add(a[l]);
        state[1][l] = state[1][l].wrapping_add(b[l]);
        state[2][l] = state[2][l].wrapping_add(c[l]);
        state[3][l] = state[3][l].wrapping_add(d[l]);
    }
}

/// Plain MD5 of whole blocks into one state.
fn compress_scalar(state: &mut [u32; 4], blocks: &[u8]) {
    let mut st = state.map(|v| [v]);
    for block in blocks.chunks_exact(64) {
        let mut w = [[0u32; 1]; 16];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = [u32::from_le_bytes([word[0], word[1], word[2], word[3]])];
        }
        compress(&mut st, &w);
    }
    *state = st.map(|v| v[0]);
}

/// `blocks` whole blocks of each lane's `data` (which holds at least that many), side
/// by side in lanes of `N`. Lanes beyond `data.len()` compute garbage that is dropped.
#[inline(always)]
fn compress_wide<const N: usize>(states: &mut [[u32; 4]], data: &[&[u8]], blocks: usize) {
    let mut st = [[0u32; N]; 4];
    for (l, s) in states.iter().enumerate() {
        for (j, v) in s.iter().enumerate() {
            st[j][l] = *v;
        }
    }
    let mut w = [[0u32; N]; 16];
    for b in 0..blocks {
        for (l, d) in data.iter().enumerate() {
            let block = &d[b * 64..b * 64 + 64];
            for (i, word) in block.chunks_exact(4).enumerate() {
                w[i][l] = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            }
        }
        compress(&mut st, &w);
    }
    for (l, s) in states.iter_mut().enumerate() {
        for (j, v) in s.iter_mut().enumerate() {
            *v = st[j][l];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn compress16_avx512(states: &mut [[u32; 4]], data: &[&[u8]], blocks: usize) {
    compress_wide::<16>(states, data, blocks)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn compress8_avx2(states: &mut [[u32; 4]], data: &[&[u8]], blocks: usize) {
    compress_wide::<8>(states, data, blocks)
}

/// Which vector unit the lanes run on; detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// How many streams one pass advances.
    pub(crate) fn width(self) -> usize {
        match self {
            Self::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => 8,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => 16,
        }
    }

    /// Advances each `states[l]` over the first `blocks` whole blocks of `data[l]`.
    /// At most [`Kernel::width`] lanes.
    #[allow(unsafe_code)]
    fn run(self, states: &mut [[u32; 4]], data: &[&[u8]], blocks: usize) {
        debug_assert!(states.len() == data.len() && data.len() <= self.width());
        debug_assert!(data.iter().all(|d| d.len() >= blocks * 64));
        match self {
            Self::Scalar => {
                for (s, d) in states.iter_mut().zip(data) {
                    compress_scalar(s, &d[..blocks * 64]);
                }
            }
            // SAFETY: `detect` returned this kernel only after the CPU reported the feature.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { compress8_avx2(states, data, blocks) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => unsafe { compress16_avx512(states, data, blocks) },
        }
    }
}

/// Hashes every lane's whole blocks (`data[l]`, a multiple of 64 bytes), widest first:
/// lanes are advanced together as far as the shortest one goes, the finished ones drop
/// out, and a lone remaining lane runs the scalar code (no transposition to pay for).
pub(crate) fn hash_lanes(kernel: Kernel, states: &mut [[u32; 4]], data: &[&[u8]]) {
    debug_assert!(data.iter().all(|d| d.len() % 64 == 0));
    let mut pos = vec![0usize; data.len()];
    loop {
        let live: Vec<usize> = (0..data.len()).filter(|&l| pos[l] < data[l].len()).collect();
        match live.len() {
            0 => return,
            1 => {
                let l = live[0];
                compress_scalar(&mut states[l], &data[l][pos[l]..]);
                return;
            }
            _ => {
                for group in live.chunks(kernel.width()) {
                    let blocks = group.iter().map(|&l| (data[l].len() - pos[l]) / 64).min().unwrap_or(0);
                    let mut st: Vec<[u32; 4]> = group.iter().map(|&l| states[l]).collect();
                    let d: Vec<&[u8]> = group.iter().map(|&l| &data[l][pos[l]..]).collect();
                    kernel.run(&mut st, &d, blocks);
                    for (&l, s) in group.iter().zip(st) {
                        states[l] = s;
                        pos[l] += blocks * 64;
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------ state

/// An MD5 computation in progress: the chaining state, the bytes of an unfinished
/// block, and the total length.
#[derive(Clone)]
struct Md5State {
    state: [u32; 4],
    tail: [u8; 64],
    tail_len: usize,
    len: u64,
}

impl Md5State {
    fn new() -> Self {
        Self { state: IV, tail: [0; 64], tail_len: 0, len: 0 }
    }

    /// Completes the unfinished block from the front of `data` (scalar) and returns
    /// where the whole blocks start in `data`.
    fn fill_tail(&mut self, data: &[u8]) -> usize {
        if self.tail_len == 0 {
            return 0;
        }
        let n = (64 - self.tail_len).min(data.len());
        self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
        self.tail_len += n;
        if self.tail_len == 64 {
            let block = self.tail;
            compress_scalar(&mut self.state, &block);
            self.tail_len = 0;
        }
        n
    }

    /// Keeps the bytes after the last whole block for the next update.
    fn keep_rest(&mut self, rest: &[u8]) {
        self.tail[self.tail_len..self.tail_len + rest.len()].copy_from_slice(rest);
        self.tail_len += rest.len();
    }

    fn finish(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 128];
        pad[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        pad[self.tail_len] = 0x80;
        let total = if self.tail_len < 56 { 64 } else { 128 };
        pad[total - 8..total].copy_from_slice(&bits.to_le_bytes());
        compress_scalar(&mut self.state, &pad[..total]);
        let mut out = [0u8; 16];
        for (o, v) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

// ------------------------------------------------------------------------------ service

struct StreamState {
    md5: Md5State,
    queue: VecDeque<Bytes>,
    queued: usize,
}

#[derive(Default)]
struct Streams {
    map: HashMap<u64, StreamState>,
    next_id: u64,
    /// Where the next pass starts looking, so that more streams than lanes take turns.
    turn: u64,
    /// Writers blocked on the service (queue full, or waiting for their digest): a
    /// pass runs at once for them instead of gathering more lanes.
    waiting: usize,
}

struct Service {
    kernel: Kernel,
    streams: Mutex<Streams>,
    /// Signalled when a stream has bytes for the service thread.
    work: Condvar,
    /// Signalled when the service thread finished a pass.
    done: Condvar,
}

static SERVICE: OnceLock<Option<&'static Service>> = OnceLock::new();

impl Service {
    /// The process's MD5 service, started on first use; `None` if its thread could not
    /// be started (then writers hash on their own threads).
    fn get() -> Option<&'static Service> {
        *SERVICE.get_or_init(|| {
            let svc: &'static Service = Box::leak(Box::new(Service {
                kernel: Kernel::detect(),
                streams: Mutex::new(Streams::default()),
                work: Condvar::new(),
                done: Condvar::new(),
            }));
            std::thread::Builder::new().name("walstore-md5".into()).spawn(move || svc.serve()).ok().map(|_| svc)
        })
    }

    fn lock(&self) -> MutexGuard<'_, Streams> {
        // The guarded data stays consistent even if a holder panicked (every update is
        // a plain field write), so poisoning is not a reason to stop hashing.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks a writer until the next pass ends, telling the service thread not to
    /// keep gathering lanes meanwhile.
    fn wait_done<'a>(&'a self, mut g: MutexGuard<'a, Streams>) -> MutexGuard<'a, Streams> {
        g.waiting += 1;
        self.work.notify_one();
        let mut g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
        g.waiting -= 1;
        g
    }

    fn serve(&self) {
        let mut g = self.lock();
        let mut gathering: Option<Instant> = None;
        loop {
            let mut ready: Vec<u64> = g.map.iter().filter(|(_, s)| !s.queue.is_empty()).map(|(&id, _)| id).collect();
            if ready.is_empty() {
                g = self.work.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // A pass costs the same for one lane as for all of them, and writers do not
            // wait for it (their buffers queue), so wait briefly for more streams to have
            // bytes, unless a writer is blocked on us.
            let wanted = g.map.len().min(self.kernel.width()).min(GATHER_LANES);
            if ready.len() < wanted && g.waiting == 0 {
                let since = *gathering.get_or_insert_with(Instant::now);
                let left = GATHER_MAX.saturating_sub(since.elapsed());
                if !left.is_zero() {
                    g = self.work.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0;
                    continue;
                }
            }
            gathering = None;
            let turn = g.turn;
            ready.sort_by_key(|id| id.wrapping_sub(turn));
            ready.truncate(PASS_STREAMS);
            g.turn = ready.iter().max().map_or(turn, |m| m + 1);
            let mut jobs: Vec<(u64, Md5State, Bytes)> = Vec::with_capacity(ready.len());
            for id in ready {
                if let Some(s) = g.map.get(&id) {
                    if let Some(front) = s.queue.front() {
                        jobs.push((id, s.md5.clone(), front.clone()));
                    }
                }
            }
            drop(g);
            self.hash(&mut jobs);
            g = self.lock();
            for (id, md5, data) in jobs {
                // A stream dropped meanwhile (its upload failed) is simply gone.
                if let Some(s) = g.map.get_mut(&id) {
                    s.md5 = md5;
                    s.queue.pop_front();
                    s.queued -= data.len();
                }
            }
            self.done.notify_all();
        }
    }

    /// Advances each job's state over its buffer.
    fn hash(&self, jobs: &mut [(u64, Md5State, Bytes)]) {
        let mut whole: Vec<(usize, usize)> = Vec::with_capacity(jobs.len());
        for (_, md5, data) in jobs.iter_mut() {
            let start = md5.fill_tail(data);
            let end = start + (data.len() - start) / 64 * 64;
            whole.push((start, end));
        }
        let mut states: Vec<[u32; 4]> = jobs.iter().map(|(_, m, _)| m.state).collect();
        let slices: Vec<&[u8]> = jobs.iter().zip(&whole).map(|((_, _, d), &(s, e))| &d[s..e]).collect();
        hash_lanes(self.kernel, &mut states, &slices);
        for ((_, md5, data), (st, &(_, end))) in jobs.iter_mut().zip(states.into_iter().zip(&whole)) {
            md5.state = st;
            md5.keep_rest(&data[end..]);
            md5.len += data.len() as u64;
        }
    }
}

/// The MD5 of one body, computed by the service thread. Dropping it without
/// [`Md5Stream::finish`] discards whatever is still queued.
pub(crate) struct Md5Stream {
    svc: &'static Service,
    id: u64,
}

impl Md5Stream {
    /// A new stream, or `None` if the service is not running.
    pub(crate) fn new() -> Option<Self> {
        let svc = Service::get()?;
        let mut g = svc.lock();
        let id = g.next_id;
        g.next_id += 1;
        g.map.insert(id, StreamState { md5: Md5State::new(), queue: VecDeque::new(), queued: 0 });
        Some(Self { svc, id })
    }

    /// Queues `data`; waits only while more than [`MAX_QUEUED`] bytes of this stream
    /// are still unhashed.
    pub(crate) fn update(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let mut g = self.svc.lock();
        while g.map.get(&self.id).is_some_and(|s| s.queued > 0 && s.queued + data.len() > MAX_QUEUED) {
            g = self.svc.wait_done(g);
        }
        if let Some(s) = g.map.get_mut(&self.id) {
            s.queued += data.len();
            s.queue.push_back(data);
        }
        drop(g);
        self.svc.work.notify_one();
    }

    /// Waits for everything queued and returns the digest.
    pub(crate) fn finish(self) -> [u8; 16] {
        let mut g = self.svc.lock();
        while g.map.get(&self.id).is_some_and(|s| !s.queue.is_empty()) {
            g = self.svc.wait_done(g);
        }
        let md5 = g.map.get(&self.id).map_or_else(Md5State::new, |s| s.md5.clone());
        drop(g);
        md5.finish()
    }
}

impl Drop for Md5Stream {
    fn drop(&mut self) {
        self.svc.lock().map.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    fn reference(data: &[u8]) -> [u8; 16] {
        Md5::digest(data).into()
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn constants_are_the_sines() {
        for (i, k) in K.iter().enumerate() {
            let v = (((i + 1) as f64).sin().abs() * 4_294_967_296.0).floor() as u32;
            assert_eq!(*k, v, "K[{i}]");
        }
    }

    #[test]
    fn padding_at_every_tail_length() {
        for len in 0..200 {
            let data = pseudo_random(len, len as u64);
            let mut m = Md5State::new();
            let start = m.fill_tail(&data);
            let end = start + (data.len() - start) / 64 * 64;
            compress_scalar(&mut m.state, &data[start..end]);
            m.keep_rest(&data[end..]);
            m.len = len as u64;
            assert_eq!(m.finish(), reference(&data), "length {len}");
        }
    }

    #[test]
    fn every_kernel_matches_scalar_md5_with_uneven_lanes() {
        let mut kernels = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                kernels.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
        }
        for kernel in kernels {
            for lanes in [1, 2, 3, 8, 9, 16, 17, 40] {
                let bufs: Vec<Vec<u8>> = (0..lanes).map(|l| pseudo_random(64 * ((l * 7) % 23 + 1), l as u64)).collect();
                let mut states = vec![IV; lanes];
                let slices: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
                hash_lanes(kernel, &mut states, &slices);
                for (l, b) in bufs.iter().enumerate() {
                    let mut expect = IV;
                    compress_scalar(&mut expect, b);
                    assert_eq!(states[l], expect, "{kernel:?}, {lanes} lanes, lane {l}");
                }
            }
        }
    }

    #[test]
    fn concurrent_streams_with_odd_buffers_get_their_own_digest() {
        let threads: Vec<_> = (0..12u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let data = pseudo_random(300_000 + t as usize * 4_099, t);
                    let mut s = Md5Stream::new().expect("service");
                    let mut at = 0;
                    let mut n = 1 + t as usize * 13;
                    while at < data.len() {
                        let end = (at + n).min(data.len());
                        s.update(Bytes::copy_from_slice(&data[at..end]));
                        at = end;
                        n = (n * 7 + 61) % 200_000 + 1;
                    }
                    assert_eq!(s.finish(), reference(&data), "stream {t}");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("stream thread");
        }
    }

    #[test]
    fn empty_and_dropped_streams() {
        let s = Md5Stream::new().expect("service");
        assert_eq!(s.finish(), reference(b""));
        let mut dropped = Md5Stream::new().expect("service");
        dropped.update(Bytes::from(vec![1u8; 3 << 20]));
        drop(dropped);
        let mut s = Md5Stream::new().expect("service");
        s.update(Bytes::from_static(b"abc"));
        assert_eq!(s.finish(), reference(b"abc"));
    }
}
