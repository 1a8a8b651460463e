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

/// Dictionary size (bytes) [`decode_prefix`] decodes an lzma stream with, at least.
const PREFIX_LZMA_DICT: usize = 64 << 10;

/// Largest lzop block [`decode_prefix`] decodes whole (WAL-E writes 256 KiB blocks).
const PREFIX_LZOP_BLOCK: usize = 1 << 20;

/// The first `n` bytes of the plaintext of `data` (fewer when the plaintext is shorter),
/// without decoding the rest: enough to read a WAL segment's first page header. Work and
/// memory stay bounded by `n` (an lzop block by 1 MiB), whatever the body.
pub fn decode_prefix(codec: Codec, data: &[u8], n: usize) -> Result<Vec<u8>, DecodeError> {
    let bad = |e: &dyn std::fmt::Display| DecodeError::Undecodable(codec, e.to_string());
    match codec {
        Codec::None => Ok(data[..data.len().min(n)].to_vec()),
        Codec::Lz4 => lz4_prefix(data, n),
        Codec::Zstd => read_prefix(zstd::stream::read::Decoder::new(data).map_err(|e| bad(&e))?, n, codec),
        Codec::Brotli => read_prefix(brotli_decompressor::Decompressor::new(data, 64 * 1024), n, codec),
        Codec::Lzma => {
            // lzma-rs hands output on only when its dictionary buffer is full (or at the end),
            // and WAL-G's dictionary is 8 MiB: the prefix would cost decoding 8 MiB. A smaller
            // dictionary size in (a copy of) the header makes it hand on the first
            // `PREFIX_LZMA_DICT` bytes; those are the same whatever the dictionary, since no
            // match can reach further back than the bytes decoded so far.
            let dict = n.max(PREFIX_LZMA_DICT);
            let mut header = [0u8; 5];
            let body = match data {
                // lc + lp > 4 (WAL-G writes 3 + 0) would make lzma-rs allocate up to 6 MiB of
                // probabilities for a 40-byte answer.
                [props, ..] if *props < 225 && (props % 9) + (props / 9) % 5 > 4 => {
                    return Err(bad(&"lzma literal parameters lc + lp above 4"))
                }
                [props, d0, d1, d2, d3, rest @ ..] => {
                    let declared = u32::from_le_bytes([*d0, *d1, *d2, *d3]) as usize;
                    header[0] = *props;
                    header[1..].copy_from_slice(&(declared.min(dict) as u32).to_le_bytes());
                    rest
                }
                _ => return Err(bad(&"truncated lzma header")),
            };
            let mut out = PrefixWriter { buf: Vec::with_capacity(n), n };
            let opts = lzma_rs::decompress::Options {
                unpacked_size: lzma_rs::decompress::UnpackedSize::ReadFromHeader,
                memlimit: Some(dict),
                allow_incomplete: true,
            };
            let mut input = std::io::BufReader::new(std::io::Read::chain(&header[..], body));
            match lzma_rs::lzma_decompress_with_options(&mut input, &mut out, &opts) {
                Ok(()) => Ok(out.buf),
                Err(_) if out.buf.len() == n => Ok(out.buf),
                Err(e) => Err(bad(&e)),
            }
        }
        Codec::Gzip => Err(bad(&"gzip is read-only in WAL-G and not decoded by walstore")),
        Codec::Lzo => lzop_blocks(data, n, true),
    }
}

/// The first `n` bytes of an lz4 frame's plaintext, decoding sequence by sequence and
/// stopping there. WAL-G writes 4 MiB blocks, so a block-wise decoder (lz4_flex's frame
/// reader) would decompress a whole block (milliseconds, on every `wal-push`) to read a
/// 40-byte page header; this reads only the sequences that produce the prefix. Every read
/// is bounds-checked and the output never exceeds `n`. Checksums are not verified (the
/// caller only looks at the prefix; a corrupt body is caught by the store's own checks).
fn lz4_prefix(data: &[u8], n: usize) -> Result<Vec<u8>, DecodeError> {
    const MAGIC: u32 = 0x184D_2204;
    let bad = |m: &str| DecodeError::Undecodable(Codec::Lz4, m.to_owned());
    let mut p = Parser { data, pos: 0 };
    let mut out = Vec::with_capacity(n.min(1 << 20));
    // One frame, as lz4_flex's reader (the whole decode) reads: WAL-G writes one.
    loop {
        let magic = p.u32_le().ok_or_else(|| bad("truncated frame"))?;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // A skippable frame: length, then that many bytes.
            let len = p.u32_le().ok_or_else(|| bad("truncated skippable frame"))? as usize;
            p.take(len).ok_or_else(|| bad("truncated skippable frame"))?;
            continue;
        }
        if magic != MAGIC {
            return Err(bad("not an lz4 frame"));
        }
        let flg = p.u8().ok_or_else(|| bad("short frame header"))?;
        p.u8().ok_or_else(|| bad("short frame header"))?; // BD: block maximum size
        if flg >> 6 != 1 {
            return Err(bad("unsupported lz4 frame version"));
        }
        if flg & 0x01 != 0 {
            return Err(bad("lz4 frame needs a dictionary"));
        }
        let block_checksum = flg & 0x10 != 0;
        let independent = flg & 0x20 != 0;
        let content_checksum = flg & 0x04 != 0;
        if flg & 0x08 != 0 {
            p.take(8).ok_or_else(|| bad("short frame header"))?; // content size
        }
        p.u8().ok_or_else(|| bad("short frame header"))?; // header checksum
        loop {
            let word = p.u32_le().ok_or_else(|| bad("truncated block"))?;
            if word == 0 {
                if content_checksum {
                    p.take(4).ok_or_else(|| bad("truncated content checksum"))?;
                }
                return Ok(out);
            }
            let len = (word & 0x7FFF_FFFF) as usize;
            // The caller may hand over only the start of the body (WAL-G's blocks are 4 MiB):
            // a cut block is fine as long as the prefix is in what is there.
            let cut = data.len() - p.pos < len;
            let block = p.take(len.min(data.len() - p.pos)).ok_or_else(|| bad("truncated block"))?;
            let decoded = if word & 0x8000_0000 != 0 {
                let k = block.len().min(n - out.len());
                out.extend_from_slice(&block[..k]);
                Ok(())
            } else {
                let reach = if independent { out.len() } else { 0 };
                lz4_block_prefix(block, &mut out, reach, n)
            };
            if out.len() >= n {
                return Ok(out);
            }
            if cut {
                return Err(bad("truncated block"));
            }
            decoded.map_err(bad)?;
            if block_checksum {
                p.take(4).ok_or_else(|| bad("truncated block checksum"))?;
            }
        }
    }
}

/// Decodes one lz4 block onto `out` (which holds the frame's output so far: linked blocks
/// refer back into it; matches may reach back to `out[start..]` only, `start` being the
/// block's first byte in a frame of independent blocks) until `out` holds `n` bytes or the
/// block ends.
fn lz4_block_prefix(block: &[u8], out: &mut Vec<u8>, start: usize, n: usize) -> Result<(), &'static str> {
    let mut p = Parser { data: block, pos: 0 };
    let length = |p: &mut Parser<'_>, mut len: usize| -> Result<usize, &'static str> {
        if len == 15 {
            loop {
                let b = p.u8().ok_or("truncated length")?;
                len = len.checked_add(usize::from(b)).ok_or("length overflow")?;
                if b != 255 {
                    break;
                }
            }
        }
        Ok(len)
    };
    while out.len() < n {
        let token = p.u8().ok_or("truncated sequence")?;
        let lits = length(&mut p, usize::from(token >> 4))?;
        let l = p.take(lits).ok_or("literals past the block")?;
        out.extend_from_slice(&l[..lits.min(n - out.len())]);
        if p.pos == block.len() || out.len() >= n {
            break;
        }
        let offset = usize::from(p.u16_le().ok_or("truncated offset")?);
        if offset == 0 || offset > out.len() - start {
            return Err("match before the start of the output");
        }
        let len = length(&mut p, usize::from(token & 15))?.checked_add(4).ok_or("length overflow")?;
        // Byte by byte: a match may overlap the bytes it produces.
        for _ in 0..len.min(n - out.len()) {
            out.push(out[out.len() - offset]);
        }
    }
    Ok(())
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
    fn u16_le(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32_le(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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
        // lzma with matches reaching far back (a block repeated 300 KB later): any prefix,
        // decoded with a dictionary smaller than the stream's, is the same.
        let mut far: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        far.extend_from_within(..);
        let mut lzma = Vec::new();
        lzma_rs::lzma_compress(&mut &far[..], &mut lzma).expect("lzma");
        for n in [40, 65_535, 65_536, 100_000, 299_999, 300_001, 400_000, 600_000] {
            assert_eq!(decode_prefix(Codec::Lzma, &lzma, n).as_deref(), Ok(&far[..n]), "lzma {n}");
        }
        // brotli: no encoder among the dependencies; the `brotli` tool's output from the corpus.
        let br = include_bytes!("../tests/fuzz_corpus/wal_codec/ok-br-history");
        let plain = decode(Codec::Brotli, br, 1 << 20).expect("brotli");
        for n in [0, 10, plain.len() - 1, plain.len(), plain.len() + 1] {
            assert_eq!(decode_prefix(Codec::Brotli, br, n).as_deref(), Ok(&plain[..n.min(plain.len())]), "brotli {n}");
        }
    }

    #[test]
    fn lz4_prefix_agrees_with_lz4_flex_in_every_frame_layout() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        let mut data = sample();
        data.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)); // incompressible tail
        for (size, mode, block_sum, content_sum) in [
            (BlockSize::Max64KB, BlockMode::Linked, false, false),
            (BlockSize::Max64KB, BlockMode::Independent, true, true),
            (BlockSize::Max256KB, BlockMode::Linked, true, false),
            (BlockSize::Max4MB, BlockMode::Independent, false, true),
        ] {
            let mut info = FrameInfo::new().block_size(size).block_mode(mode);
            info = info.block_checksums(block_sum).content_checksum(content_sum);
            let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(&data).expect("lz4");
            let body = enc.finish().expect("lz4");
            let mut twice = body.clone();
            twice.extend_from_slice(&body);
            for n in [0, 1, 40, 65_535, 65_536, 65_537, 200_000, 400_000, data.len(), data.len() + 7] {
                let want = &data[..n.min(data.len())];
                assert_eq!(lz4_prefix(&body, n).as_deref(), Ok(want), "{size:?} {mode:?}, {n} bytes");
            }
            // Concatenated frames: the first only, like the whole decode.
            let whole = decode(Codec::Lz4, &twice, 2 << 20).expect("two frames");
            assert_eq!(lz4_prefix(&twice, 2 << 20), Ok(whole));
            // Cut anywhere inside the frame: an error or a true prefix, never other bytes.
            for cut in [5, 11, 100, body.len() / 2, body.len() - 1] {
                if let Ok(p) = lz4_prefix(&body[..cut], 1 << 20) {
                    assert_eq!(p.as_slice(), &data[..p.len()], "cut at {cut}");
                }
            }
            // The start of a body (what the identity check reads) yields the start of the data.
            assert_eq!(lz4_prefix(&body[..4096], 40).as_deref(), Ok(&data[..40]), "{size:?} {mode:?}");
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
