//! PostgreSQL WAL vocabulary: LSNs, timelines, segment numbers and the names
//! WAL-G (and WAL-E) give to the objects of a repository.
//!
//! The LSN → segment conversion lives here and only here ([`SegmentSize::segment_of`]);
//! every other module asks it. An off-by-one there is where data gets lost.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position (log sequence number), shown as PostgreSQL does: `X/X`
/// (high and low 32 bits, uppercase hex, no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Lsn(u64);

impl Lsn {
    /// The LSN at byte `n`.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// Raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self - 1`, saturating at 0 (WAL-G converts backup LSNs with `segment(LSN-1)`).
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Error of parsing one of the WAL names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

impl FromStr for Lsn {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (hi, lo) = s.split_once('/').ok_or_else(|| NameError(format!("LSN {s:?} is not X/X")))?;
        let parse = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(NameError(format!("LSN {s:?}: bad half {p:?}")));
            }
            u32::from_str_radix(p, 16).map_err(|_| NameError(format!("LSN {s:?}: {p:?} is not hex")))
        };
        Ok(Lsn(((parse(hi)? as u64) << 32) | parse(lo)? as u64))
    }
}

/// A timeline id (`TimeLineID`, 32 bits; 8 hex digits in file names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimelineId(u32);

impl TimelineId {
    /// Wraps a timeline number.
    pub const fn new(n: u32) -> Self {
        Self(n)
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// 8 uppercase hex digits, as in file names.
    pub fn hex(self) -> String {
        format!("{:08X}", self.0)
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A WAL segment number (LSN / segment size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentNo(u64);

impl SegmentNo {
    /// Wraps a raw segment number.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next segment.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// The WAL segment size of a cluster: a power of two from 1 MiB to 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentSize(u64);

impl SegmentSize {
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 << 20);

    /// Validates a size in bytes.
    pub fn new(bytes: u64) -> Result<Self, NameError> {
        if bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(NameError(format!("WAL segment size {bytes} is not a power of two between 1 MiB and 1 GiB")))
        }
    }

    /// Bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per "xlogid" (the middle 8 hex digits of a name): 2^32 / size.
    pub const fn per_xlogid(self) -> u64 {
        0x1_0000_0000 / self.0
    }

    /// The segment containing the byte at `lsn`. The one LSN → segment conversion.
    pub const fn segment_of(self, lsn: Lsn) -> SegmentNo {
        SegmentNo(lsn.0 / self.0)
    }

    /// The first LSN of a segment.
    pub const fn start_of(self, seg: SegmentNo) -> Lsn {
        Lsn(seg.0 * self.0)
    }

    /// The 24-hex file name of a segment on a timeline.
    pub fn file_name(self, tl: TimelineId, seg: SegmentNo) -> String {
        let k = self.per_xlogid();
        format!("{:08X}{:08X}{:08X}", tl.0, seg.0 / k, seg.0 % k)
    }

    /// Parses the 24-hex name of a segment into (timeline, segment number).
    /// Fails if the low part is out of range for this segment size.
    pub fn parse_file_name(self, name: &str) -> Result<(TimelineId, SegmentNo), NameError> {
        let (tl, hi, lo) = split24(name)?;
        let k = self.per_xlogid();
        if lo as u64 >= k {
            return Err(NameError(format!(
                "{name}: low part {lo:08X} is out of range for {} MiB segments",
                self.0 >> 20
            )));
        }
        Ok((TimelineId(tl), SegmentNo(hi as u64 * k + lo as u64)))
    }
}

/// Splits a 24-hex-digit name into its three 32-bit parts.
pub fn split24(name: &str) -> Result<(u32, u32, u32), NameError> {
    if name.len() != 24 || !name.bytes().all(is_upper_hex) {
        return Err(NameError(format!("{name:?} is not a 24-hex-digit WAL file name")));
    }
    let p = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).map_err(|e| NameError(e.to_string()));
    Ok((p(0..8)?, p(8..16)?, p(16..24)?))
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

/// Compression codecs WAL-G (and WAL-E) name objects with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codec {
    /// No compression (no extension, or a bare trailing `.`).
    None,
    /// `.lz4` (LZ4 frame; WAL-G's default).
    Lz4,
    /// `.lzma` (xz/lzma stream).
    Lzma,
    /// `.zst` (zstd frame).
    Zstd,
    /// `.br` (brotli).
    Brotli,
    /// `.lzo` (lzop, WAL-E).
    Lzo,
    /// `.gz` (gzip; read-only in WAL-G).
    Gzip,
}

impl Codec {
    /// Recognises an extension (without the dot). `""` is `None`.
    pub fn from_ext(ext: &str) -> Option<Codec> {
        Some(match ext {
            "" => Codec::None,
            "lz4" => Codec::Lz4,
            "lzma" => Codec::Lzma,
            "zst" => Codec::Zstd,
            "br" => Codec::Brotli,
            "lzo" => Codec::Lzo,
            "gz" => Codec::Gzip,
            _ => return None,
        })
    }

    /// The extension (without the dot).
    pub fn ext(self) -> &'static str {
        match self {
            Codec::None => "",
            Codec::Lz4 => "lz4",
            Codec::Lzma => "lzma",
            Codec::Zstd => "zst",
            Codec::Brotli => "br",
            Codec::Lzo => "lzo",
            Codec::Gzip => "gz",
        }
    }
}

/// A backup name: `base_<24hex>[_D_<24hex>][_<8hex>]` (the last part is WAL-E's offset).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackupName {
    name: String,
}

impl BackupName {
    /// Parses a backup name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = || NameError(format!("{s:?} is not a WAL-G backup name"));
        // Every valid name is ASCII; checking it first also makes the byte-offset slicing
        // below safe (a multi-byte character across offset 24 would panic).
        if !s.is_ascii() {
            return Err(bad());
        }
        let rest = s.strip_prefix("base_").ok_or_else(bad)?;
        if rest.len() < 24 {
            return Err(bad());
        }
        split24(&rest[..24]).map_err(|_| bad())?;
        let mut tail = &rest[24..];
        if let Some(t) = tail.strip_prefix("_D_") {
            if t.len() < 24 {
                return Err(bad());
            }
            split24(&t[..24]).map_err(|_| bad())?;
            tail = &t[24..];
        }
        if let Some(t) = tail.strip_prefix('_') {
            if t.len() != 8 || !t.bytes().all(is_upper_hex) {
                return Err(bad());
            }
            tail = "";
        }
        if !tail.is_empty() {
            return Err(bad());
        }
        Ok(Self { name: s.to_owned() })
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The 24-hex WAL file name of the segment the backup started in.
    pub fn start_wal_name(&self) -> &str {
        &self.name[5..29]
    }

    /// The timeline the backup was taken on.
    pub fn timeline(&self) -> TimelineId {
        TimelineId(split24(self.start_wal_name()).map(|(t, _, _)| t).unwrap_or(0))
    }

    /// For a delta backup, the 24-hex start name of its parent.
    pub fn delta_parent_wal_name(&self) -> Option<&str> {
        self.name[29..].strip_prefix("_D_").map(|t| &t[..24])
    }
}

impl fmt::Display for BackupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What an object inside a repository is (see the specification's key grammar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalObject {
    /// `wal_005/<24hex>[.ext]`: a WAL segment (name not yet resolved to a number,
    /// since that needs the segment size).
    Segment {
        /// 24-hex name.
        name: String,
        /// Compression.
        codec: Codec,
    },
    /// `wal_005/<24hex>.partial[.ext]`: the last, incomplete segment of a timeline at promotion.
    Partial {
        /// 24-hex name.
        name: String,
        /// Compression.
        codec: Codec,
    },
    /// `wal_005/<24hex>.<8hex>.backup[.ext]`: a backup history (label) file.
    BackupLabel {
        /// 24-hex name.
        name: String,
        /// Compression.
        codec: Codec,
    },
    /// `wal_005/<8hex>.history[.ext]`: a timeline history file.
    History {
        /// The timeline it describes.
        timeline: TimelineId,
        /// Compression.
        codec: Codec,
    },
    /// `wal_005/<23 or 24 hex>.json`: WAL-G per-segment or bulk metadata.
    WalMeta,
    /// `wal_005/<24hex>_delta…`: WAL-G delta maps (derived data).
    WalDelta,
    /// `basebackups_005/<backup>_backup_stop_sentinel.json`.
    Sentinel(BackupName),
    /// `basebackups_005/<backup>/metadata.json`.
    BackupMeta(BackupName),
    /// `basebackups_005/<backup>/files_metadata.json`.
    FilesMeta(BackupName),
    /// Any other object under `basebackups_005/<backup>/` (tar partitions, pg_control).
    BackupData(BackupName),
    /// Anything else under the repository.
    Foreign,
}

impl WalObject {
    /// The backup this object belongs to, if any.
    pub fn backup(&self) -> Option<&BackupName> {
        match self {
            WalObject::Sentinel(b) | WalObject::BackupMeta(b) | WalObject::FilesMeta(b) | WalObject::BackupData(b) => {
                Some(b)
            }
            _ => None,
        }
    }
}

/// `wal_005/` folder name.
pub const WAL_DIR: &str = "wal_005/";
/// `basebackups_005/` folder name.
pub const BACKUP_DIR: &str = "basebackups_005/";
const SENTINEL_SUFFIX: &str = "_backup_stop_sentinel.json";

/// Splits an object key into (repository prefix, path inside the repository)
/// when it lies in a WAL-G repository: the prefix is everything before the first
/// `wal_005/` or `basebackups_005/` path component (it is empty or ends with `/`).
pub fn split_repo(key: &str) -> Option<(&str, &str)> {
    let mut start = 0;
    loop {
        let rest = &key[start..];
        if rest.starts_with(WAL_DIR) || rest.starts_with(BACKUP_DIR) {
            return Some((&key[..start], rest));
        }
        let slash = rest.find('/')?;
        start += slash + 1;
    }
}

/// Classifies a path inside a repository (as returned by [`split_repo`]).
pub fn classify(path: &str) -> WalObject {
    if let Some(name) = path.strip_prefix(WAL_DIR) {
        return classify_wal(name);
    }
    if let Some(rest) = path.strip_prefix(BACKUP_DIR) {
        if let Some(b) = rest.strip_suffix(SENTINEL_SUFFIX) {
            if let Ok(bn) = BackupName::parse(b) {
                return WalObject::Sentinel(bn);
            }
        }
        if let Some((b, inner)) = rest.split_once('/') {
            if let Ok(bn) = BackupName::parse(b) {
                return match inner {
                    "metadata.json" => WalObject::BackupMeta(bn),
                    "files_metadata.json" => WalObject::FilesMeta(bn),
                    _ => WalObject::BackupData(bn),
                };
            }
        }
    }
    WalObject::Foreign
}

fn classify_wal(name: &str) -> WalObject {
    if name.contains('/') {
        return WalObject::Foreign;
    }
    if name.len() >= 24 && name.is_char_boundary(24) && split24(&name[..24]).is_ok() {
        let rest = &name[24..];
        if rest.starts_with("_delta") {
            return WalObject::WalDelta;
        }
        if rest == ".json" {
            return WalObject::WalMeta;
        }
        // `<24hex>`, `<24hex>.` (WAL-G's "none" probe), `<24hex>.<ext>`.
        if rest.is_empty() || rest == "." {
            return WalObject::Segment { name: name[..24].to_owned(), codec: Codec::None };
        }
        if let Some(after) = rest.strip_prefix('.') {
            if let Some(codec) = Codec::from_ext(after) {
                return WalObject::Segment { name: name[..24].to_owned(), codec };
            }
            if let Some(c) = after.strip_prefix("partial") {
                if let Some(codec) = codec_suffix(c) {
                    return WalObject::Partial { name: name[..24].to_owned(), codec };
                }
            }
            // `<24hex>.<8hex>.backup[.ext]`
            if after.len() >= 15 && after.as_bytes()[8] == b'.' && after[..8].bytes().all(is_upper_hex) {
                if let Some(c) = after[9..].strip_prefix("backup") {
                    if let Some(codec) = codec_suffix(c) {
                        return WalObject::BackupLabel { name: name[..24].to_owned(), codec };
                    }
                }
            }
        }
        return WalObject::Foreign;
    }
    if name.len() >= 16 && name.as_bytes()[..8].iter().all(|b| is_upper_hex(*b)) && name[8..].starts_with(".history") {
        if let Some(codec) = codec_suffix(&name[16..]) {
            if let Ok(tl) = u32::from_str_radix(&name[..8], 16) {
                return WalObject::History { timeline: TimelineId(tl), codec };
            }
        }
    }
    if name.len() == 28 && name.ends_with(".json") && name[..23].bytes().all(is_upper_hex) {
        return WalObject::WalMeta;
    }
    WalObject::Foreign
}

/// `""` → None codec, `".ext"` → that codec.
fn codec_suffix(s: &str) -> Option<Codec> {
    if s.is_empty() || s == "." {
        return Some(Codec::None);
    }
    s.strip_prefix('.').and_then(Codec::from_ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_form() {
        assert_eq!(Lsn::new(0x2000028).to_string(), "0/2000028");
        assert_eq!(Lsn::new(0x1_0000_0000).to_string(), "1/0");
        assert_eq!("16/B374D848".parse::<Lsn>(), Ok(Lsn::new(0x16_B374_D848)));
        assert_eq!("0/0".parse::<Lsn>(), Ok(Lsn::new(0)));
        for bad in ["", "0", "x/1", "1/", "/1", "123456789/0", "0/1/2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
        let l: Lsn = "AB/CDEF0123".parse().expect("lsn");
        assert_eq!(l.to_string().parse::<Lsn>(), Ok(l));
    }

    #[test]
    fn segments_of_every_size() {
        for mib in [1u64, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] {
            let s = SegmentSize::new(mib << 20).expect("size");
            assert_eq!(s.per_xlogid(), 4096 / mib);
            for seg in [0u64, 1, s.per_xlogid() - 1, s.per_xlogid(), 12345] {
                let name = s.file_name(TimelineId::new(3), SegmentNo::new(seg));
                assert_eq!(s.parse_file_name(&name), Ok((TimelineId::new(3), SegmentNo::new(seg))));
            }
        }
        assert!(SegmentSize::new(3 << 20).is_err());
        assert!(SegmentSize::new(512 << 10).is_err());
        assert!(SegmentSize::new(2 << 30).is_err());
        let s = SegmentSize::DEFAULT;
        // Example from WAL-G's docs: timeline 1, LSN 0/2000028 → 000000010000000000000002.
        let seg = s.segment_of(Lsn::new(0x2000028));
        assert_eq!(s.file_name(TimelineId::new(1), seg), "000000010000000000000002");
        // A backup starting exactly on a boundary: segment(LSN-1) is the previous one.
        assert_eq!(s.segment_of(Lsn::new(0x3000000).prev()), SegmentNo::new(2));
        assert_eq!(s.segment_of(Lsn::new(0x3000000)), SegmentNo::new(3));
        assert_eq!(s.start_of(SegmentNo::new(3)), Lsn::new(0x3000000));
        // 16 MiB names use only 00..FF in the low part.
        assert!(s.parse_file_name("000000010000000000000100").is_err());
        assert_eq!(s.parse_file_name("0000000100000001000000FF"), Ok((TimelineId::new(1), SegmentNo::new(511))));
        assert!(s.parse_file_name("00000001000000000000000g").is_err());
    }

    #[test]
    fn backup_names() {
        let b = BackupName::parse("base_000000010000000000000002").expect("full");
        assert_eq!(b.timeline(), TimelineId::new(1));
        assert_eq!(b.delta_parent_wal_name(), None);
        let d = BackupName::parse("base_000000020000000400000010_D_000000010000000000000002").expect("delta");
        assert_eq!(d.timeline(), TimelineId::new(2));
        assert_eq!(d.start_wal_name(), "000000020000000400000010");
        assert_eq!(d.delta_parent_wal_name(), Some("000000010000000000000002"));
        BackupName::parse("base_000000010000000000000002_00000028").expect("WAL-E offset");
        for bad in [
            "base_",
            "base_0000000100000000000000",
            "base_000000010000000000000002_D_",
            "basex",
            "base_000000010000000000000002_xyz",
            // 23 hex digits, then a character whose bytes straddle offset 24 (found by s3api's
            // fuzz_wal_names: these panicked slicing inside a character, and the name comes
            // from a client's object key).
            "base_00000001000000040000001\u{FFFD}",
            "base_00000001000000000000000\u{e9}",
            "base_000000010000000000000002_D_00000001000000000000000\u{e9}",
        ] {
            assert!(BackupName::parse(bad).is_err(), "{bad}");
            assert_eq!(classify(&format!("basebackups_005/{bad}_backup_stop_sentinel.json")), WalObject::Foreign);
        }
    }

    #[test]
    fn repository_split() {
        assert_eq!(
            split_repo("spilo/c1/wal/15/wal_005/000000010000000000000001.lz4"),
            Some(("spilo/c1/wal/15/", "wal_005/000000010000000000000001.lz4"))
        );
        assert_eq!(split_repo("wal_005/x"), Some(("", "wal_005/x")));
        assert_eq!(split_repo("a/basebackups_005/b"), Some(("a/", "basebackups_005/b")));
        assert_eq!(split_repo("a/xwal_005/b"), None);
        assert_eq!(split_repo("plain/key"), None);
    }

    #[test]
    fn classification() {
        use WalObject as W;
        let seg = |n: &str, c| W::Segment { name: n.into(), codec: c };
        let n = "000000010000000A00000010";
        let cases: Vec<(String, WalObject)> = vec![
            (format!("wal_005/{n}.lz4"), seg(n, Codec::Lz4)),
            (format!("wal_005/{n}.zst"), seg(n, Codec::Zstd)),
            (format!("wal_005/{n}.br"), seg(n, Codec::Brotli)),
            (format!("wal_005/{n}.lzma"), seg(n, Codec::Lzma)),
            (format!("wal_005/{n}.lzo"), seg(n, Codec::Lzo)),
            (format!("wal_005/{n}"), seg(n, Codec::None)),
            (format!("wal_005/{n}."), seg(n, Codec::None)),
            (format!("wal_005/{n}.partial.lz4"), W::Partial { name: n.into(), codec: Codec::Lz4 }),
            (format!("wal_005/{n}.partial"), W::Partial { name: n.into(), codec: Codec::None }),
            (format!("wal_005/{n}.00000028.backup.lz4"), W::BackupLabel { name: n.into(), codec: Codec::Lz4 }),
            ("wal_005/00000002.history.lz4".into(), W::History { timeline: TimelineId::new(2), codec: Codec::Lz4 }),
            ("wal_005/0000000A.history".into(), W::History { timeline: TimelineId::new(10), codec: Codec::None }),
            (format!("wal_005/{n}.json"), W::WalMeta),
            ("wal_005/000000010000000A0000001.json".into(), W::WalMeta),
            (format!("wal_005/{n}_delta.lz4"), W::WalDelta),
            (format!("wal_005/{n}.unknown"), W::Foreign),
            ("wal_005/sub/dir".into(), W::Foreign),
            ("wal_005/README".into(), W::Foreign),
        ];
        for (path, want) in cases {
            assert_eq!(classify(&path), want, "{path}");
        }
        let b = BackupName::parse("base_000000010000000000000002").expect("b");
        assert_eq!(
            classify("basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json"),
            W::Sentinel(b.clone())
        );
        assert_eq!(classify("basebackups_005/base_000000010000000000000002/metadata.json"), W::BackupMeta(b.clone()));
        assert_eq!(
            classify("basebackups_005/base_000000010000000000000002/files_metadata.json"),
            W::FilesMeta(b.clone())
        );
        assert_eq!(
            classify("basebackups_005/base_000000010000000000000002/tar_partitions/part_001.tar.lz4"),
            W::BackupData(b)
        );
        assert_eq!(classify("basebackups_005/journal_x"), W::Foreign);
        assert_eq!(classify("basebackups_005/garbage/x"), W::Foreign);
    }
}
