//! The first page of a WAL segment, and what it says about the cluster that wrote it.
//!
//! Every segment begins with a *long* page header (`XLogLongPageHeaderData`): the page
//! magic (which changes with every PostgreSQL major version's WAL format), the
//! timeline and address of the page, and three cross-checks PostgreSQL itself uses
//! when it reads a segment — the cluster's **system identifier** (from `initdb`), the
//! segment size and the WAL block size. Two clusters archiving into one prefix differ
//! in the system identifier even when their segment names collide, so this is what a
//! store needs to tell them apart (see [`crate::identity`]).
//!
//! Layout, little-endian (PostgreSQL writes the host's byte order; every platform it
//! builds packages for today is little-endian, and a big-endian header reads as a
//! magic no version has, which callers treat as "unknown", never as a mismatch):
//!
//! | offset | field |
//! |---|---|
//! | 0 | `xlp_magic` u16 |
//! | 2 | `xlp_info` u16 (`XLP_LONG_HEADER` = 0x0002) |
//! | 4 | `xlp_tli` u32 |
//! | 8 | `xlp_pageaddr` u64 |
//! | 16 | `xlp_rem_len` u32, then 4 bytes of alignment |
//! | 24 | `xlp_sysid` u64 |
//! | 32 | `xlp_seg_size` u32 |
//! | 36 | `xlp_xlog_blcksz` u32 |

use std::fmt;

use crate::names::{Lsn, SegmentSize, TimelineId};

/// Bytes of the long page header.
pub const LONG_HEADER_LEN: usize = 40;

/// `xlp_info` flag: this page has the long header.
const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` of each PostgreSQL major version walstore knows (10 to 18).
const MAGICS: &[(u16, u32)] = &[
    (0xD097, 10),
    (0xD098, 11),
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The PostgreSQL major version whose WAL pages carry `magic`, if known.
pub fn major_of_magic(magic: u16) -> Option<u32> {
    MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, v)| *v)
}

/// The first page header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `xlp_magic`.
    pub magic: u16,
    /// Timeline of the first record on the page.
    pub timeline: TimelineId,
    /// Address of the page (the segment's first byte).
    pub page_addr: Lsn,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// Segment size the cluster was initialised with.
    pub segment_size: u32,
    /// WAL block size.
    pub block_size: u32,
}

impl SegmentHeader {
    /// The PostgreSQL major version of the WAL format, if the magic is known.
    pub fn pg_major(&self) -> Option<u32> {
        major_of_magic(self.magic)
    }
}

/// Why bytes are not the start of a WAL segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageError {
    /// Fewer bytes than the long header.
    Short(usize),
    /// The page does not say it has the long header.
    NoLongHeader,
    /// A field no PostgreSQL writes (segment size not a power of two from 1 MiB to
    /// 1 GiB, block size not a power of two from 1 KiB to 64 KiB, address not the
    /// start of a segment).
    Implausible(String),
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageError::Short(n) => write!(f, "{n} bytes, a WAL segment header has {LONG_HEADER_LEN}"),
            PageError::NoLongHeader => f.write_str("the first page has no long header"),
            PageError::Implausible(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for PageError {}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads the long page header at the start of a segment's (decompressed) bytes.
/// Never reads past [`LONG_HEADER_LEN`]; any input gives a result, never a panic.
pub fn parse_segment_header(bytes: &[u8]) -> Result<SegmentHeader, PageError> {
    if bytes.len() < LONG_HEADER_LEN {
        return Err(PageError::Short(bytes.len()));
    }
    let b = &bytes[..LONG_HEADER_LEN];
    if u16_at(b, 2) & XLP_LONG_HEADER == 0 {
        return Err(PageError::NoLongHeader);
    }
    let h = SegmentHeader {
        magic: u16_at(b, 0),
        timeline: TimelineId::new(u32_at(b, 4)),
        page_addr: Lsn::new(u64_at(b, 8)),
        system_identifier: u64_at(b, 24),
        segment_size: u32_at(b, 32),
        block_size: u32_at(b, 36),
    };
    let seg = u64::from(h.segment_size);
    if !(seg.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&seg)) {
        return Err(PageError::Implausible(format!("segment size {seg} in the header")));
    }
    if !(h.block_size.is_power_of_two() && (1024..=65536).contains(&h.block_size)) {
        return Err(PageError::Implausible(format!("WAL block size {} in the header", h.block_size)));
    }
    if !h.page_addr.as_u64().is_multiple_of(seg) {
        return Err(PageError::Implausible(format!(
            "page address {:X} is not a segment's start",
            h.page_addr.as_u64()
        )));
    }
    Ok(h)
}

/// What a segment's header says that its object name does not (empty: consistent).
/// `name` is the 24-hex file name; `expected_size` the repository's segment size.
pub fn mismatches(h: &SegmentHeader, name: &str, expected_size: SegmentSize) -> Vec<String> {
    let mut out = Vec::new();
    if u64::from(h.segment_size) != expected_size.bytes() {
        out.push(format!(
            "segment size {} MiB in the header, the repository's is {} MiB",
            h.segment_size >> 20,
            expected_size.bytes() >> 20
        ));
        return out;
    }
    match expected_size.parse_file_name(name) {
        Err(e) => out.push(format!("{name}: {e}")),
        Ok((tl, n)) => {
            if h.timeline.get() > tl.get() {
                // The first record's timeline may be older than the file's (a switch inside
                // the segment), never newer.
                out.push(format!("timeline {} in the header, {} in the name", h.timeline.get(), tl.get()));
            }
            let want = expected_size.start_of(n);
            if h.page_addr != want {
                out.push(format!(
                    "page address {:X} in the header, the name says {:X}",
                    h.page_addr.as_u64(),
                    want.as_u64()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 40 bytes of `000000010000000000000001` written by PostgreSQL 15.
    const PG15: [u8; 40] = [
        0x10, 0xd1, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x9b, 0xa0, 0xc7, 0xa7, 0x33, 0x17, 0x6b, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x20, 0x00, 0x00,
    ];

    #[test]
    fn reads_a_real_postgresql_15_header() {
        let h = parse_segment_header(&PG15).expect("header");
        assert_eq!(h.pg_major(), Some(15));
        assert_eq!(h.timeline, TimelineId::new(1));
        assert_eq!(h.page_addr, Lsn::new(16 << 20));
        // `pg_controldata`: "Database system identifier: 7716693282224380736".
        assert_eq!(h.system_identifier, 7_716_693_282_224_380_736);
        assert_eq!((h.segment_size, h.block_size), (16 << 20, 8192));
        assert!(mismatches(&h, "000000010000000000000001", SegmentSize::DEFAULT).is_empty());
        let wrong = mismatches(&h, "000000010000000000000002", SegmentSize::DEFAULT);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(!mismatches(&h, "000000010000000000000001", SegmentSize::new(64 << 20).expect("size")).is_empty());
        // A first record from timeline 1 in a timeline-2 file is how a switch looks.
        assert!(mismatches(&h, "000000020000000000000001", SegmentSize::DEFAULT).is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_segment_start() {
        assert_eq!(parse_segment_header(&PG15[..39]), Err(PageError::Short(39)));
        let mut short = PG15;
        short[2] = 0;
        assert_eq!(parse_segment_header(&short), Err(PageError::NoLongHeader));
        let mut odd = PG15;
        odd[33] = 0x03; // segment size 0x0103_0000
        assert!(matches!(parse_segment_header(&odd), Err(PageError::Implausible(_))));
        let mut unknown = PG15;
        unknown[1] = 0xAA;
        assert_eq!(parse_segment_header(&unknown).expect("parses").pg_major(), None);
        assert_eq!(major_of_magic(0xD116), Some(17));
    }

    #[test]
    fn any_input_gives_an_answer() {
        // Cheap exhaustive-ish sweep: every single-byte change of the header.
        for i in 0..LONG_HEADER_LEN {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = PG15;
                b[i] = v;
                let _ = parse_segment_header(&b);
            }
        }
    }
}
