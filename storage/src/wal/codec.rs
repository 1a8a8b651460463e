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

use super::names::Codec;

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
        if out.len() + ulen > limit {
            return Err(DecodeError::TooLarge(limit));
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
            let d = lzokay_native::decompress_all(block, Some(ulen)).map_err(|e| bad(&format!("{e:?}")))?;
            if d.len() != ulen {
                return Err(bad("block length mismatch"));
            }
            out.extend_from_slice(&d);
        }
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
    fn limits_and_garbage() {
        let data = vec![0u8; 1 << 20];
        let zst = zstd::encode_all(&data[..], 3).expect("zstd");
        assert_eq!(decode(Codec::Zstd, &zst, 1000), Err(DecodeError::TooLarge(1000)));
        for c in [Codec::Lz4, Codec::Zstd, Codec::Brotli, Codec::Lzma, Codec::Lzo, Codec::Gzip] {
            assert!(decode(c, b"\x01\x02definitely not compressed", 1 << 20).is_err(), "{c:?}");
        }
    }
}
