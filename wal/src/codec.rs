//! Decompression of WAL-G objects whose codec is known from their extension:
//! lz4 (frame), zstd, brotli, lzma (the classic ".lzma" stream WAL-G writes),
//! lzop (WAL-E) and none. Used to read history files and to compare two
//! uploads of the same WAL segment by content rather than by encoding.
//!
//! Output is capped (`limit`), so a hostile upload cannot make the server
//! allocate without bound. A body that does not decode (client-side encryption,
//! a codec we do not know) is reported as [`DecodeError::Undecodable`] — callers
//! then fall back to conservative behaviour.

use std::io::{Read, Write};

use crate::names::Codec;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a valid stream of the named codec (or encrypted).
    #[error("not decodable as {0:?}: {1}")]
    Undecodable(Codec, String),
    /// The plaintext would exceed the limit.
    #[error("decoded size exceeds {0} bytes")]
    TooLarge(usize),
}

/// Decodes `data` encoded with `codec`, producing at most `limit` bytes.
pub fn decode(codec: Codec, data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let bad = |e: &dyn std::fmt::Display| DecodeError::Undecodable(codec, e.to_string());
    match codec {
        Codec::None => {
            if data.len() > limit {
                return Err(DecodeError::TooLarge(limit));
            }
            Ok(data.to_vec())
        }
        Codec::Lz4 => read_limited(lz4_flex::frame::FrameDecoder::new(data), limit, codec),
        Codec::Zstd => {
            let d = zstd::stream::read::Decoder::new(data).map_err(|e| bad(&e))?;
            read_limited(d, limit, codec)
        }
        Codec::Brotli => read_limited(brotli_decompressor::Decompressor::new(data, 64 * 1024), limit, codec),
        Codec::Lzma => {
            let mut out = LimitedWriter { buf: Vec::new(), limit };
            let opts = lzma_rs::decompress::Options {
                unpacked_size: lzma_rs::decompress::UnpackedSize::ReadFromHeader,
                memlimit: Some(limit.max(1 << 20)),
                allow_incomplete: false,
            };
            match lzma_rs::lzma_decompress_with_options(&mut std::io::BufReader::new(data), &mut out, &opts) {
                Ok(()) => Ok(out.buf),
                Err(_) if out.buf.len() >= limit => Err(DecodeError::TooLarge(limit)),
                Err(e) => Err(bad(&e)),
            }
        }
        Codec::Gzip => Err(bad(&"gzip is read-only in WAL-G and not decoded by walstore")),
        Codec::Lzo => lzop_decode(data, limit),
    }
}

/// Largest lzop block [`decode_prefix`] decodes whole (WAL-E writes 256 KiB blocks).
const PREFIX_LZOP_BLOCK: usize = 1 << 20;

/// The first `n` bytes of the plaintext of `data` (fewer when the plaintext is shorter),
/// without decoding the rest: enough to read a WAL segment's first page header. Work and
/// memory stay bounded by `n` (an lzop block by 1 MiB), whatever the body.
pub fn decode_prefix(codec: Codec, data: &[u8], n: usize) -> Result<Vec<u8>, DecodeError> {
    let bad = |e: &dyn std::fmt::Display| DecodeError::Undecodable(codec, e.to_string());
    match codec {
        Codec::None => Ok(data[..data.len().min(n)].to_vec()),
        Codec::Lz4 => read_prefix(lz4_flex::frame::FrameDecoder::new(data), n, codec),
        Codec::Zstd => read_prefix(zstd::stream::read::Decoder::new(data).map_err(|e| bad(&e))?, n, codec),
        Codec::Brotli => read_prefix(brotli_decompressor::Decompressor::new(data, 64 * 1024), n, codec),
        Codec::Lzma => {
            let mut out = PrefixWriter { buf: Vec::with_capacity(n), n };
            let opts = lzma_rs::decompress::Options {
                unpacked_size: lzma_rs::decompress::UnpackedSize::ReadFromHeader,
                memlimit: Some(n.max(1 << 20)),
                allow_incomplete: true,
            };
            match lzma_rs::lzma_decompress_with_options(&mut std::io::BufReader::new(data), &mut out, &opts) {
                Ok(()) => Ok(out.buf),
                Err(_) if out.buf.len() == n => Ok(out.buf),
                Err(e) => Err(bad(&e)),
            }
        }
        Codec::Gzip => Err(bad(&"gzip is read-only in WAL-G and not decoded by walstore")),
        Codec::Lzo => lzop_blocks(data, n, true),
    }
}

/// Reads until `n` bytes or the end.
fn read_prefix(mut r: impl Read, n: usize, codec: Codec) -> Result<Vec<u8>, DecodeError> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(DecodeError::Undecodable(codec, e.to_string())),
        }
    }
    out.truncate(got);
    Ok(out)
}

/// Keeps the first `n` bytes written, then refuses more (which ends the decoder).
struct PrefixWriter {
    buf: Vec<u8>,
    n: usize,
}

impl Write for PrefixWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = self.n - self.buf.len();
        if room == 0 {
            return Err(std::io::Error::other("prefix complete"));
        }
        let k = room.min(b.len());
        self.buf.extend_from_slice(&b[..k]);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_limited(mut r: impl Read, limit: usize, codec: Codec) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = r.read(&mut chunk).map_err(|e| DecodeError::Undecodable(codec, e.to_string()))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(DecodeError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
}

impl Write for LimitedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.limit {
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// lzop container (WAL-E's `.lzo`): magic, header, then blocks of LZO1X data.
fn lzop_decode(data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    lzop_blocks(data, limit, false)
}

/// [`lzop_decode`], or with `prefix` the first `limit` bytes only (blocks of at most
/// [`PREFIX_LZOP_BLOCK`] are decoded whole, then cut).
fn lzop_blocks(data: &[u8], limit: usize, prefix: bool) -> Result<Vec<u8>, DecodeError> {
    const MAGIC: [u8; 9] = [0x89, 0x4C, 0x5A, 0x4F, 0x00, 0x0D, 0x0A, 0x1A, 0x0A];
    const F_ADLER32_D: u32 = 0x01;
    const F_ADLER32_C: u32 = 0x02;
    const F_H_EXTRA_FIELD: u32 = 0x40;
    const F_CRC32_D: u32 = 0x100;
    const F_CRC32_C: u32 = 0x200;
    const F_H_FILTER: u32 = 0x800;
    let bad = |m: &str| DecodeError::Undecodable(Codec::Lzo, m.to_owned());
    let mut p = Parser { data, pos: 0 };
    if p.take(9).ok_or_else(|| bad("short"))? != MAGIC {
        return Err(bad("not an lzop stream"));
    }
    let version = p.u16().ok_or_else(|| bad("short header"))?;
    p.u16().ok_or_else(|| bad("short header"))?; // library version
    if version >= 0x0940 {
        p.u16().ok_or_else(|| bad("short header"))?; // version needed
    }
    let method = p.u8().ok_or_else(|| bad("short header"))?;
    if !(1..=3).contains(&method) {
        return Err(bad("unsupported lzop method"));
    }
    if version >= 0x0940 {
        p.u8().ok_or_else(|| bad("short header"))?; // level
    }
    let flags = p.u32().ok_or_else(|| bad("short header"))?;
    if flags & F_H_FILTER != 0 {
        p.u32().ok_or_else(|| bad("short header"))?;
    }
    p.u32().ok_or_else(|| bad("short header"))?; // mode
    p.u32().ok_or_else(|| bad("short header"))?; // mtime low
    if version >= 0x0940 {
        p.u32().ok_or_else(|| bad("short header"))?; // mtime high
    }
    let name_len = p.u8().ok_or_else(|| bad("short header"))? as usize;
    p.take(name_len).ok_or_else(|| bad("short header"))?;
    p.u32().ok_or_else(|| bad("short header"))?; // header checksum
    if flags & F_H_EXTRA_FIELD != 0 {
        let n = p.u32().ok_or_else(|| bad("short header"))? as usize;
        p.take(n + 4).ok_or_else(|| bad("short header"))?;
    }
    let mut out = Vec::new();
    loop {
        let ulen = p.u32().ok_or_else(|| bad("truncated block"))? as usize;
        if ulen == 0 {
            return Ok(out);
        }
        let cap = if prefix { limit.max(PREFIX_LZOP_BLOCK) } else { limit };
        if out.len() + ulen > cap {
            return Err(DecodeError::TooLarge(cap));
        }
        let clen = p.u32().ok_or_else(|| bad("truncated block"))? as usize;
        let mut skip = 0;
        if flags & F_ADLER32_D != 0 {
            skip += 4;
        }
        if flags & F_CRC32_D != 0 {
            skip += 4;
        }
        if clen < ulen {
            if flags & F_ADLER32_C != 0 {
                skip += 4;
            }
            if flags & F_CRC32_C != 0 {
                skip += 4;
            }
        }
        p.take(skip).ok_or_else(|| bad("truncated block"))?;
        let block = p.take(clen).ok_or_else(|| bad("truncated block"))?;
        if clen == ulen {
            out.extend_from_slice(block);
        } else {
            let d = lzo1x_decompress(block, ulen).map_err(bad)?;
            if d.len() != ulen {
                return Err(bad("block length mismatch"));
            }
            out.extend_from_slice(&d);
        }
        if prefix && out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
    }
}

/// Decodes one LZO1X block (what lzop compresses each block with) of at most `out_len`
/// bytes.
///
/// Written here instead of calling lzokay-native 0.1, whose decoder trusts the stream:
/// a match reaching before the start of the output panics (an index computed with
/// wrapping arithmetic), and run lengths are copied out whatever the block header says,
/// so a crafted `.lzo` history file could panic the catalog snapshot or make it allocate
/// about 255 bytes per input byte. Here every read is bounds-checked, a match must lie
/// inside what was already decoded, and the output never grows past `out_len`.
///
/// The format: an instruction byte either copies literals or copies a match (length and
/// distance) from the output so far, followed by 0–3 literals named in its low two bits
/// (the "state"); what a byte below 16 means depends on that state. Long lengths continue
/// in zero bytes (255 each) and a final non-zero byte. A far match (16..31) with distance
/// exactly 16384 ends the stream.
fn lzo1x_decompress(src: &[u8], out_len: usize) -> Result<Vec<u8>, &'static str> {
    let mut d = Lzo { src, pos: 0, out: Vec::with_capacity(out_len), out_len };
    // Literals copied by the last instruction: 0–3, or 4 after a run of 4 or more.
    let mut state = 0;
    if let Some(&first) = src.first() {
        if first >= 18 {
            // The stream starts with 1–238 literals.
            d.pos = 1;
            let n = usize::from(first - 17);
            d.literals(n)?;
            state = n.min(4);
        }
    }
    loop {
        let inst = d.byte()?;
        let (len, dist, next) = if inst >= 64 {
            // 3–8 bytes from up to 2 KiB back.
            let h = usize::from(d.byte()?);
            (usize::from(inst >> 5) + 1, (h << 3) + usize::from((inst >> 2) & 7) + 1, inst & 3)
        } else if inst >= 32 {
            // Up to 16 KiB back.
            let len = d.length(usize::from(inst & 31), 31)? + 2;
            let v = d.le16()?;
            (len, usize::from(v >> 2) + 1, (v & 3) as u8)
        } else if inst >= 16 {
            // 16–48 KiB back; distance 16384 is the end of the stream.
            let len = d.length(usize::from(inst & 7), 7)? + 2;
            let v = d.le16()?;
            let far = (usize::from(inst & 8) << 11) + usize::from(v >> 2);
            if far == 0 {
                return Ok(d.out);
            }
            (len, 16384 + far, (v & 3) as u8)
        } else if state == 0 {
            // A run of 4 or more literals.
            let n = d.length(usize::from(inst), 15)? + 3;
            d.literals(n)?;
            state = 4;
            continue;
        } else {
            // Short match: 2 bytes within 1 KiB after 1–3 literals, 3 bytes 2–3 KiB back
            // after a longer run.
            let h = usize::from(d.byte()?);
            let near = (h << 2) + usize::from(inst >> 2);
            if state < 4 {
                (2, near + 1, inst & 3)
            } else {
                (3, near + 2049, inst & 3)
            }
        };
        d.copy_match(dist, len)?;
        state = usize::from(next);
        d.literals(state)?;
    }
}

/// Input and output of [`lzo1x_decompress`], every access checked.
struct Lzo<'a> {
    src: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    out_len: usize,
}

impl Lzo<'_> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let b = *self.src.get(self.pos).ok_or("LZO block ends early")?;
        self.pos += 1;
        Ok(b)
    }

    fn le16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from(self.byte()?) | u16::from(self.byte()?) << 8)
    }

    /// `short` if non-zero, else `base` + 255 per zero byte + the closing non-zero byte.
    fn length(&mut self, short: usize, base: usize) -> Result<usize, &'static str> {
        if short != 0 {
            return Ok(short);
        }
        let mut n = base;
        loop {
            match self.byte()? {
                0 => n += 255,
                b => return Ok(n + usize::from(b)),
            }
            if n > self.out_len {
                return Err("LZO length longer than the block");
            }
        }
    }

    fn room(&self, n: usize) -> Result<(), &'static str> {
        if n > self.out_len - self.out.len() {
            return Err("LZO data longer than its block header says");
        }
        Ok(())
    }

    fn literals(&mut self, n: usize) -> Result<(), &'static str> {
        self.room(n)?;
        let end = self.pos.checked_add(n).ok_or("LZO block ends early")?;
        let bytes = self.src.get(self.pos..end).ok_or("LZO block ends early")?;
        self.out.extend_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Copies `len` bytes from `dist` back; the source may overlap what is being written.
    fn copy_match(&mut self, dist: usize, len: usize) -> Result<(), &'static str> {
        if dist > self.out.len() {
            return Err("LZO match before the start of the data");
        }
        self.room(len)?;
        for _ in 0..len {
            let b = self.out[self.out.len() - dist];
            self.out.push(b);
        }
        Ok(())
    }
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32).map(|i| (i % 97) as u8 ^ (i >> 11) as u8).collect()
    }

    #[test]
    fn round_trips() {
        let data = sample();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&data).expect("lz4");
        let lz4 = lz4.finish().expect("lz4");
        assert_eq!(decode(Codec::Lz4, &lz4, 1 << 20), Ok(data.clone()));
        let zst = zstd::encode_all(&data[..], 3).expect("zstd");
        assert_eq!(decode(Codec::Zstd, &zst, 1 << 20), Ok(data.clone()));
        let mut lzma = Vec::new();
        lzma_rs::lzma_compress(&mut &data[..], &mut lzma).expect("lzma");
        assert_eq!(decode(Codec::Lzma, &lzma, 1 << 20), Ok(data.clone()));
        assert_eq!(decode(Codec::None, &data, 1 << 20), Ok(data.clone()));
    }

    #[test]
    fn prefixes_of_every_codec() {
        let data = sample();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&data).expect("lz4");
        let lz4 = lz4.finish().expect("lz4");
        let zst = zstd::encode_all(&data[..], 3).expect("zstd");
        let mut lzma = Vec::new();
        lzma_rs::lzma_compress(&mut &data[..], &mut lzma).expect("lzma");
        let lzo = lzop(&data, 256 * 1024);
        for (codec, body) in [(Codec::Lz4, &lz4), (Codec::Zstd, &zst), (Codec::Lzma, &lzma), (Codec::Lzo, &lzo)] {
            for n in [0, 40, 8192, 199_999, 200_000, 300_000] {
                let want = &data[..n.min(data.len())];
                assert_eq!(decode_prefix(codec, body, n).as_deref(), Ok(want), "{codec:?}, {n} bytes");
            }
            assert!(decode_prefix(codec, b"not compressed at all, or encrypted", 8192).is_err(), "{codec:?}");
        }
        assert_eq!(decode_prefix(Codec::None, &data, 40).as_deref(), Ok(&data[..40]));
        // brotli: no encoder among the dependencies; the `brotli` tool's output from the corpus.
        let br = include_bytes!("../tests/fuzz_corpus/wal_codec/ok-br-history");
        let plain = decode(Codec::Brotli, br, 1 << 20).expect("brotli");
        for n in [0, 10, plain.len() - 1, plain.len(), plain.len() + 1] {
            assert_eq!(decode_prefix(Codec::Brotli, br, n).as_deref(), Ok(&plain[..n.min(plain.len())]), "brotli {n}");
        }
    }

    /// An lzop container (as WAL-E writes it) of blocks compressed by lzokay-native.
    fn lzop(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = vec![0x89, 0x4C, 0x5A, 0x4F, 0x00, 0x0D, 0x0A, 0x1A, 0x0A];
        out.extend_from_slice(&[0x10, 0x30, 0x20, 0x80, 0x09, 0x40, 1, 5]); // versions, method, level
        out.extend_from_slice(&[0; 4]); // flags: no checksums
        out.extend_from_slice(&[0; 13]); // mode, mtime, empty name
        out.extend_from_slice(&[0; 4]); // header checksum (not verified)
        for chunk in data.chunks(block) {
            let c = lzokay_native::compress(chunk).expect("compress");
            out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            let stored = c.len() >= chunk.len();
            out.extend_from_slice(&(if stored { chunk.len() } else { c.len() } as u32).to_be_bytes());
            out.extend_from_slice(if stored { chunk } else { &c });
        }
        out.extend_from_slice(&[0; 4]);
        out
    }

    #[test]
    fn lzo_decodes_what_lzokay_compresses() {
        let text = b"1\t0/3000000\tno recovery target specified\n\n2\t0/50000A8\tat restore point \"x\"\n".repeat(50);
        let mut noise = Vec::new();
        let mut x = 0x9E37_79B9u32;
        for _ in 0..70_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push((x % 7) as u8 + b'a'); // compressible, but not trivially
        }
        for data in [sample(), text, noise, vec![0; 100_000], b"abcabcabcabcabcabcabc".to_vec(), b"x".to_vec()] {
            for block in [256, 65536] {
                assert_eq!(decode(Codec::Lzo, &lzop(&data, block), 1 << 20), Ok(data.clone()), "block {block}");
            }
            let c = lzokay_native::compress(&data).expect("compress");
            assert_eq!(lzo1x_decompress(&c, data.len()), Ok(data.clone()));
            assert_eq!(lzokay_native::decompress_all(&c, None).expect("lzokay"), data, "same format as lzokay's");
        }
    }

    #[test]
    fn hostile_lzo_blocks_are_errors() {
        let c = lzokay_native::compress(&sample()[..5000]).expect("compress");
        // Declared shorter than it decodes, truncated, or cut before the end marker.
        assert!(lzo1x_decompress(&c, 4999).is_err());
        assert!(lzo1x_decompress(&c[..c.len() / 2], 5000).is_err());
        assert!(lzo1x_decompress(&c[..c.len() - 3], 5000).is_err());
        // 4 literals, then a 3-byte match 2049+ bytes back: before the start of the data.
        assert_eq!(
            lzo1x_decompress(&[21, b'a', b'b', b'c', b'd', 0x00, 0x00, 0x11, 0, 0], 100),
            Err("LZO match before the start of the data")
        );
        // A 2-byte match 1 byte back after 1 literal is fine; 2 back is not.
        assert_eq!(lzo1x_decompress(&[18, b'a', 0x00, 0x00, 0x11, 0, 0], 100), Ok(b"aaa".to_vec()));
        assert!(lzo1x_decompress(&[18, b'a', 0x04, 0x00, 0x11, 0, 0], 100).is_err());
        // A long run of zero bytes makes a huge length; it is refused, not copied out.
        let mut bomb = vec![18, b'a', 0x20];
        bomb.extend(std::iter::repeat_n(0u8, 10_000));
        bomb.extend_from_slice(&[1, 0x04, 0x00, 0x11, 0, 0]);
        assert_eq!(lzo1x_decompress(&bomb, 1 << 20), Err("LZO length longer than the block"));
        // Found by s3api's fuzz_wal_codec: lzokay-native 0.1 panicked on this container
        // (a match before the start of the output).
        let found = hex::decode(
            "894c5a4f000d0a1a0a103020800940010500000001000081a4000000000000000000263402560000006b00000033233109\
             302f74207370656369666965640a0a3209302f3530303030413809617420726573746f726520706f696e74202278220a00000000",
        )
        .expect("hex");
        assert!(matches!(decode(Codec::Lzo, &found, 1 << 20), Err(DecodeError::Undecodable(Codec::Lzo, _))));
    }

    #[test]
    fn limits_and_garbage() {
        let data = vec![0u8; 1 << 20];
        let zst = zstd::encode_all(&data[..], 3).expect("zstd");
        assert_eq!(decode(Codec::Zstd, &zst, 1000), Err(DecodeError::TooLarge(1000)));
        for c in [Codec::Lz4, Codec::Zstd, Codec::Brotli, Codec::Lzma, Codec::Lzo, Codec::Gzip] {
            assert!(decode(c, b"\x01\x02definitely not compressed", 1 << 20).is_err(), "{c:?}");
        }
    }
}
