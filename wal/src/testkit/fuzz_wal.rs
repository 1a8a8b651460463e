//! The WAL fuzz targets' checks, shared by the mutation fuzzer that runs in CI
//! (`wal/tests/fuzz.rs`) and the coverage-guided `cargo fuzz` targets (`wal/fuzz/`):
//! object names, timeline history files, backup sentinels and `metadata.json`, and
//! WAL-G's codecs. Each returns whether the parser accepted the input, or which property
//! it broke; parsers run under the allocation meter of [`super::fuzz`].

use crate::backup::{MetadataInfo, SentinelInfo};
use crate::codec::{decode as codec_decode, decode_prefix, DecodeError};
use crate::history::History;
use crate::names::{classify, split24, split_repo, BackupName, Codec, Lsn, SegmentSize, TimelineId, WalObject};

use super::fuzz::{alloc_bound, bounded, bounded_by, Outcome};

/// Every WAL segment size PostgreSQL allows.
pub fn segment_sizes() -> impl Iterator<Item = SegmentSize> {
    (20..=30).map(|shift| SegmentSize::new(1 << shift).expect("a power of two from 1 MiB to 1 GiB"))
}

/// WAL names: `split_repo` splits a key into a repository prefix and a path that rebuild
/// the key; what `classify` finds is really in the path (24-hex names, timelines, backup
/// names); a backup name that parses is the input, and its parts are 24-hex names; a
/// segment name that parses formats back to the same string for its segment size; an LSN
/// that parses prints in a form that parses to the same LSN.
pub fn check_wal_names(input: &[u8]) -> Outcome {
    // Lossy: each invalid byte becomes U+FFFD, three bytes, which is good at finding
    // slicing that is not on a character boundary.
    let s = String::from_utf8_lossy(input);
    let s = s.as_ref();
    bounded("WAL name parsers", input.len(), || wal_names(s))?
}

pub fn wal_names(s: &str) -> Outcome {
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

pub const WAL_NAME_TOKENS: &[&[u8]] = &[
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

/// History files, parsed as the history of several timelines: what parses satisfies what
/// PostgreSQL guarantees (parents increase and are below the timeline, switch points do not
/// decrease), prints back as a history file that parses to the same history, and extends
/// the history of its parent timeline (itself minus the last line).
pub fn check_wal_history(input: &[u8]) -> Outcome {
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

/// WAL segment headers: `parse_segment_header` reads at most the long header and never
/// panics; what it accepts has a plausible segment and block size, and its fields are the
/// header's bytes (written back, they parse to the same header); a segment named after
/// its own header is consistent with it.
pub fn check_wal_page(input: &[u8]) -> Outcome {
    use crate::page::{mismatches, parse_segment_header, LONG_HEADER_LEN};
    let Ok(h) = bounded("parse_segment_header", input.len(), || parse_segment_header(input))? else {
        return Ok(false);
    };
    let mut back = input[..LONG_HEADER_LEN].to_vec();
    back[0..2].copy_from_slice(&h.magic.to_le_bytes());
    back[4..8].copy_from_slice(&h.timeline.get().to_le_bytes());
    back[8..16].copy_from_slice(&h.page_addr.as_u64().to_le_bytes());
    back[24..32].copy_from_slice(&h.system_identifier.to_le_bytes());
    back[32..36].copy_from_slice(&h.segment_size.to_le_bytes());
    back[36..40].copy_from_slice(&h.block_size.to_le_bytes());
    if back != input[..LONG_HEADER_LEN] || parse_segment_header(&back) != Ok(h) {
        return Err(format!("{h:?} does not round-trip"));
    }
    let size = SegmentSize::new(u64::from(h.segment_size)).map_err(|e| format!("{h:?}: accepted size refused: {e}"))?;
    let name = size.file_name(h.timeline, size.segment_of(h.page_addr));
    let wrong = mismatches(&h, &name, size);
    if h.timeline.get() > 0 && !wrong.is_empty() {
        return Err(format!("{h:?} named {name}: {wrong:?}"));
    }
    Ok(true)
}

/// Tokens of WAL page headers: the magics, the long-header flag, common sizes.
pub const PAGE_TOKENS: &[&[u8]] = &[
    b"\x10\xd1",
    b"\x16\xd1",
    b"\x02\x00",
    b"\x00\x00\x00\x01",
    b"\x00\x20\x00\x00",
    b"\x00\x00\x00\x40",
    b"\xff\xff\xff\xff",
];

pub const HISTORY_TOKENS: &[&[u8]] = &[
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

/// Backup sentinels and `metadata.json`: a sentinel has an LSN unless it is WAL-E's, its
/// FinishLSN is not before its LSN; what parses survives a JSON round trip of the parsed
/// form (which the catalog snapshot stores).
pub fn check_wal_sentinel(input: &[u8]) -> Outcome {
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

pub const SENTINEL_TOKENS: &[&[u8]] = &[
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

/// Output limit of the codec target: what the catalog allows a history file or document.
pub const CODEC_LIMIT: usize = crate::catalog::MAX_DOC_BYTES;

/// Allocation allowed to a decompressor: the input bound, twice the output limit (a `Vec`
/// doubling up to it), and the working memory the formats define (an LZ4 frame may ask for
/// 4 MiB blocks, brotli for a 16 MiB window, lzma for a dictionary up to the memory limit
/// the decoder is given, `max(limit, 1 MiB)`).
pub fn codec_bound(len: usize) -> usize {
    alloc_bound(len) + 2 * CODEC_LIMIT + 24 * (1 << 20)
}

/// Codecs: every decoder, on every input, stays within its output limit and its memory
/// bound; `None` returns the input itself.
pub fn check_wal_codec(input: &[u8]) -> Outcome {
    let mut accepted = false;
    for codec in [Codec::None, Codec::Lz4, Codec::Zstd, Codec::Brotli, Codec::Lzma, Codec::Lzo, Codec::Gzip] {
        let r = bounded_by("codec::decode", input.len(), codec_bound(input.len()), || {
            codec_decode(codec, input, CODEC_LIMIT)
        })?;
        // The first page of a segment: bounded the same way, and the start of what the
        // whole decode gives whenever that succeeds.
        let prefix = bounded_by("codec::decode_prefix", input.len(), codec_bound(input.len()), || {
            decode_prefix(codec, input, PREFIX)
        })?;
        if let (Ok(whole), Ok(p)) = (&r, &prefix) {
            if p.as_slice() != &whole[..whole.len().min(PREFIX)] {
                return Err(format!("{codec:?}: the {PREFIX}-byte prefix differs from the whole decode's start"));
            }
        }
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

/// Bytes of plaintext the prefix decode is asked for (a WAL page).
const PREFIX: usize = 8192;

pub const CODEC_TOKENS: &[&[u8]] = &[
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
