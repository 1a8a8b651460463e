//! Which cluster a repository belongs to, and whether an upload comes from it.
//!
//! Two PostgreSQL clusters archiving into one prefix (a new cluster given a copy-pasted
//! `WALG_S3_PREFIX` or manifest) interleave WAL whose names may collide, and
//! the first restore that crosses the mix fails. What tells them apart is the **system
//! identifier** `initdb` gives a cluster: every WAL segment's first page carries it (see
//! [`crate::page`]), and so do WAL-G's backup documents (`SystemIdentifier` in the stop
//! sentinel, `system_identifier` in `metadata.json`, with the server version).
//!
//! A repository's [`Identity`] is learned from the first upload that carries one, and
//! completed by later ones (a version from a sentinel, a segment size from a segment);
//! then every upload that carries evidence is checked against it ([`check`]). A cluster
//! restored from the repository's own backup keeps its system identifier (a promotion
//! only starts a new timeline), so it passes; `pg_upgrade` or a new `initdb` does not,
//! and reusing a repository for it is an operator's decision, not a silent switch.
//!
//! Pure: the storage crate supplies the bytes, stores the identity, and enforces.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::{decode_prefix, DecodeError};
use crate::names::{Codec, SegmentSize, WalObject};
use crate::page::{mismatches, parse_segment_header, LONG_HEADER_LEN};

/// What a repository's uploads must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster's system identifier (`pg_controldata`: "Database system identifier").
    pub system_identifier: u64,
    /// PostgreSQL major version ([`major_name`] shows it), once known.
    pub pg_major: Option<u32>,
    /// WAL segment size in bytes, once a segment was read.
    pub segment_size: Option<u32>,
}

/// A PostgreSQL major version as walstore keeps it: 10 and later as themselves (15), 9.x
/// as 90x (906 for 9.6).
pub fn major_name(major: u32) -> String {
    if major >= 900 {
        format!("{}.{}", major / 100, major % 100)
    } else {
        major.to_string()
    }
}

/// The major version of a `PG_VERSION_NUM` (`150002` → 15, `90624` → 906), if plausible.
pub fn major_of_version_num(v: u64) -> Option<u32> {
    match v {
        100_000..=9_999_999 => u32::try_from(v / 10_000).ok(),
        90_000..=99_999 => u32::try_from(v / 100).ok(),
        _ => None,
    }
}

/// Which uploads carry evidence of the cluster that wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A WAL segment (or a `.partial` one): its first page header, once decoded.
    Segment {
        /// 24-hex file name.
        name: String,
        /// Codec from the extension.
        codec: Codec,
    },
    /// A stop sentinel.
    Sentinel,
    /// A backup's `metadata.json`.
    Metadata,
}

impl Subject {
    /// The subject an object is, if any.
    pub fn of(class: &WalObject) -> Option<Subject> {
        match class {
            WalObject::Segment { name, codec } | WalObject::Partial { name, codec } => {
                Some(Subject::Segment { name: name.clone(), codec: *codec })
            }
            WalObject::Sentinel(_) => Some(Subject::Sentinel),
            WalObject::BackupMeta(_) => Some(Subject::Metadata),
            _ => None,
        }
    }

    /// Leading bytes of the body [`evidence`] needs: enough for the first compressed
    /// block of every codec to yield a page header (WAL-E's lzop blocks are the largest);
    /// the whole document for backup documents (a few KiB).
    pub fn bytes_needed(&self) -> usize {
        match self {
            Subject::Segment { codec: Codec::Lzo, .. } => (1 << 20) + (64 << 10),
            Subject::Segment { .. } => 256 << 10,
            Subject::Sentinel | Subject::Metadata => MAX_DOCUMENT,
        }
    }

    /// What the upload is, for messages.
    pub fn what(&self) -> &'static str {
        match self {
            Subject::Segment { .. } => "WAL segment",
            Subject::Sentinel => "backup stop sentinel",
            Subject::Metadata => "backup metadata.json",
        }
    }
}

/// Largest backup document read for its identity; WAL-G's are below 10 KiB (a sentinel
/// with user data may be larger, and one larger than this is simply not checked).
pub const MAX_DOCUMENT: usize = 1 << 20;

/// What an upload says about the cluster that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A segment's first page: identity, version (if the page magic is known), segment
    /// size, and whether the header agrees with the object's name.
    Segment {
        /// From the header.
        identity: Identity,
        /// The page magic, when it names no version walstore knows (a note, not a refusal).
        unknown_magic: Option<u16>,
        /// The 24-hex name the object was uploaded under.
        name: String,
        /// The header itself ([`check`] compares it with the name).
        header: crate::page::SegmentHeader,
    },
    /// A backup document's `SystemIdentifier` / `PgVersion`.
    Document {
        /// System identifier and version (no segment size).
        identity: Identity,
    },
    /// Nothing to check: a document without a system identifier (WAL-E, old WAL-G).
    Silent,
    /// The body cannot be read (client-side encryption, a codec walstore does not decode,
    /// not WAL at all): accepted, counted, never refused for that.
    Opaque(String),
}

impl Evidence {
    /// Reads the evidence of an upload from the first [`Subject::bytes_needed`] bytes of
    /// its body (`complete`: those are the whole body).
    pub fn read(subject: &Subject, body: &[u8], complete: bool) -> Evidence {
        match subject {
            Subject::Segment { name, codec } => segment(name, *codec, body),
            Subject::Sentinel | Subject::Metadata if !complete => {
                Evidence::Opaque(format!("document larger than {MAX_DOCUMENT} bytes"))
            }
            Subject::Sentinel => document(body, "SystemIdentifier", "PgVersion"),
            Subject::Metadata => document(body, "system_identifier", "pg_version"),
        }
    }
}

fn segment(name: &str, codec: Codec, body: &[u8]) -> Evidence {
    let page = match decode_prefix(codec, body, LONG_HEADER_LEN) {
        Ok(p) => p,
        Err(DecodeError::Undecodable(_, why)) => return Evidence::Opaque(why),
        Err(e) => return Evidence::Opaque(e.to_string()),
    };
    match parse_segment_header(&page) {
        Ok(h) => Evidence::Segment {
            identity: Identity {
                system_identifier: h.system_identifier,
                pg_major: h.pg_major(),
                segment_size: Some(h.segment_size),
            },
            unknown_magic: h.pg_major().is_none().then_some(h.magic),
            name: name.to_owned(),
            header: h,
        },
        Err(e) => Evidence::Opaque(format!("no WAL page header: {e}")),
    }
}

fn document(body: &[u8], sysid: &str, version: &str) -> Evidence {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        // Not JSON: the backup code of the catalog reports it; nothing to compare here.
        return Evidence::Opaque("not a JSON document".into());
    };
    let Some(system_identifier) = v.get(sysid).and_then(Value::as_u64) else { return Evidence::Silent };
    let pg_major = v.get(version).and_then(Value::as_u64).and_then(major_of_version_num);
    Evidence::Document { identity: Identity { system_identifier, pg_major, segment_size: None } }
}

/// What the identity check concluded about one upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Agrees with the repository's identity.
    Verified,
    /// Agrees, and the repository's identity becomes this one (learned for the first
    /// time, or completed by a field it did not know).
    Learn(Identity),
    /// Disagrees.
    Conflict(Conflict),
    /// Nothing could be compared (see [`Evidence::Opaque`]).
    Opaque(String),
    /// The document carries no identity.
    Silent,
}

/// Kinds of disagreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    /// Another cluster (system identifier).
    SystemIdentifier,
    /// Another PostgreSQL major version.
    PgVersion,
    /// Another WAL segment size.
    SegmentSize,
    /// The segment's header disagrees with its name (timeline or address).
    SegmentName,
}

impl ConflictKind {
    /// Every kind, for metrics.
    pub const ALL: [ConflictKind; 4] =
        [ConflictKind::SystemIdentifier, ConflictKind::PgVersion, ConflictKind::SegmentSize, ConflictKind::SegmentName];

    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            ConflictKind::SystemIdentifier => "system_identifier",
            ConflictKind::PgVersion => "pg_version",
            ConflictKind::SegmentSize => "segment_size",
            ConflictKind::SegmentName => "segment_name",
        }
    }
}

/// A disagreement: what the repository expects and what the upload says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Kind.
    pub kind: ConflictKind,
    /// The repository's value.
    pub expected: String,
    /// The upload's value.
    pub received: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ConflictKind::SystemIdentifier => {
                write!(f, "system identifier {} received, the repository's is {}", self.received, self.expected)
            }
            ConflictKind::PgVersion => {
                write!(f, "PostgreSQL {} received, the repository's is PostgreSQL {}", self.received, self.expected)
            }
            ConflictKind::SegmentSize => {
                write!(f, "{} received, the repository's WAL segment size is {}", self.received, self.expected)
            }
            ConflictKind::SegmentName => write!(f, "{} (expected {})", self.received, self.expected),
        }
    }
}

/// Checks evidence against the repository's identity (`None`: not known yet) and, for
/// segments, against the object's name with the segment size in force: the identity's,
/// else the retention policy's (`policy_size`), else the header's own.
///
/// A segment whose header disagrees with its name is a conflict even before an identity
/// is known (it would break a restore by itself); every other check needs a known value
/// to compare with, and a first upload teaches it.
pub fn check(known: Option<&Identity>, policy_size: Option<SegmentSize>, ev: &Evidence) -> Outcome {
    let (got, header_check) = match ev {
        Evidence::Opaque(why) => return Outcome::Opaque(why.clone()),
        Evidence::Silent => return Outcome::Silent,
        Evidence::Document { identity } => (*identity, None),
        Evidence::Segment { identity, name, header, .. } => (*identity, Some((name, header))),
    };
    let conflict = |kind, expected: String, received: String| Outcome::Conflict(Conflict { kind, expected, received });
    if let Some(k) = known {
        if k.system_identifier != got.system_identifier {
            return conflict(
                ConflictKind::SystemIdentifier,
                k.system_identifier.to_string(),
                got.system_identifier.to_string(),
            );
        }
        if let (Some(a), Some(b)) = (k.pg_major, got.pg_major) {
            if a != b {
                return conflict(ConflictKind::PgVersion, major_name(a), major_name(b));
            }
        }
    }
    if let Some((name, header)) = header_check {
        let size_in_force = known.and_then(|k| k.segment_size).or(policy_size.map(|s| s.bytes() as u32));
        let mib = |b: u32| format!("{} MiB", b >> 20);
        if let Some(want) = size_in_force {
            if want != header.segment_size {
                return conflict(ConflictKind::SegmentSize, mib(want), mib(header.segment_size));
            }
        }
        // The header's size is a power of two in range (checked by the parser).
        let size = SegmentSize::new(u64::from(header.segment_size)).unwrap_or(SegmentSize::DEFAULT);
        let wrong = mismatches(header, name, size);
        if !wrong.is_empty() {
            return conflict(ConflictKind::SegmentName, format!("a header matching the name {name}"), wrong.join("; "));
        }
    }
    let merged = match known {
        None => got,
        Some(k) => Identity {
            system_identifier: k.system_identifier,
            pg_major: k.pg_major.or(got.pg_major),
            segment_size: k.segment_size.or(got.segment_size),
        },
    };
    if known == Some(&merged) {
        Outcome::Verified
    } else {
        Outcome::Learn(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::classify;

    /// `000000010000000000000001` of a PostgreSQL 15 cluster (see `page`'s tests).
    fn page(sysid: u64, tli: u32, addr: u64, seg: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&2u16.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    fn seg_evidence(key: &str, body: &[u8]) -> Evidence {
        let s = Subject::of(&classify(key)).expect("a subject");
        Evidence::read(&s, body, true)
    }

    const A: u64 = 7_716_693_282_224_380_736;
    const B: u64 = 7_716_700_000_000_000_001;

    #[test]
    fn learns_then_verifies_then_refuses_another_cluster() {
        let ev = seg_evidence("wal_005/000000010000000000000001", &page(A, 1, 16 << 20, 16 << 20));
        let learned = match check(None, None, &ev) {
            Outcome::Learn(i) => i,
            o => panic!("{o:?}"),
        };
        assert_eq!(learned, Identity { system_identifier: A, pg_major: Some(15), segment_size: Some(16 << 20) });
        assert_eq!(check(Some(&learned), None, &ev), Outcome::Verified);
        let other = seg_evidence("wal_005/000000010000000000000002", &page(B, 1, 32 << 20, 16 << 20));
        match check(Some(&learned), None, &other) {
            Outcome::Conflict(c) => {
                assert_eq!(c.kind, ConflictKind::SystemIdentifier);
                assert_eq!(
                    (c.expected.as_str(), c.received.as_str()),
                    (A.to_string().as_str(), B.to_string().as_str())
                );
            }
            o => panic!("{o:?}"),
        }
        // A promoted restore: same cluster, new timeline, first page still from timeline 1.
        let promoted = seg_evidence("wal_005/000000020000000000000003", &page(A, 1, 48 << 20, 16 << 20));
        assert_eq!(check(Some(&learned), None, &promoted), Outcome::Verified);
    }

    #[test]
    fn documents_complete_and_check_the_identity() {
        let sentinel =
            br#"{"LSN":33554472,"FinishLSN":33554720,"PgVersion":150002,"SystemIdentifier":7716693282224380736}"#;
        let ev = Evidence::read(&Subject::Sentinel, sentinel, true);
        let partial = Identity { system_identifier: A, pg_major: None, segment_size: Some(16 << 20) };
        assert_eq!(check(Some(&partial), None, &ev), Outcome::Learn(Identity { pg_major: Some(15), ..partial }));
        let pg16 = br#"{"pg_version":160001,"system_identifier":7716693282224380736}"#;
        let known = Identity { pg_major: Some(15), ..partial };
        match check(Some(&known), None, &Evidence::read(&Subject::Metadata, pg16, true)) {
            Outcome::Conflict(c) => {
                assert_eq!((c.kind, c.expected.as_str(), c.received.as_str()), (ConflictKind::PgVersion, "15", "16"))
            }
            o => panic!("{o:?}"),
        }
        let wal_e = br#"{"wal_segment_backup_stop":"000000010000000000000002"}"#;
        assert_eq!(check(Some(&known), None, &Evidence::read(&Subject::Sentinel, wal_e, true)), Outcome::Silent);
        assert!(matches!(Evidence::read(&Subject::Metadata, b"\x00garbage", true), Evidence::Opaque(_)));
        assert!(matches!(Evidence::read(&Subject::Sentinel, sentinel, false), Evidence::Opaque(_)));
    }

    #[test]
    fn header_and_name_must_agree() {
        // Segment 2's page under segment 1's name: refused even in a new repository.
        let ev = seg_evidence("wal_005/000000010000000000000001.partial", &page(A, 1, 32 << 20, 16 << 20));
        assert!(matches!(check(None, None, &ev), Outcome::Conflict(Conflict { kind: ConflictKind::SegmentName, .. })));
        // 64 MiB segments in a repository of 16 MiB ones.
        let big = seg_evidence("wal_005/000000010000000000000001", &page(A, 1, 64 << 20, 64 << 20));
        let known = Identity { system_identifier: A, pg_major: Some(15), segment_size: Some(16 << 20) };
        assert!(matches!(
            check(Some(&known), None, &big),
            Outcome::Conflict(Conflict { kind: ConflictKind::SegmentSize, .. })
        ));
        let policy = SegmentSize::new(16 << 20).ok();
        assert!(matches!(
            check(None, policy, &big),
            Outcome::Conflict(Conflict { kind: ConflictKind::SegmentSize, .. })
        ));
        assert!(matches!(check(None, None, &big), Outcome::Learn(_)));
    }

    #[test]
    fn encrypted_and_compressed_bodies() {
        let plain = page(A, 1, 16 << 20, 16 << 20);
        let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
        assert!(matches!(seg_evidence("wal_005/000000010000000000000001.zst", &zst), Evidence::Segment { .. }));
        // What libsodium's secretstream looks like to us: bytes no codec reads.
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
        for key in [
            "wal_005/000000010000000000000001.lz4",
            "wal_005/000000010000000000000001.br",
            "wal_005/000000010000000000000001",
        ] {
            assert!(matches!(seg_evidence(key, &noise), Evidence::Opaque(_)), "{key}");
        }
        assert_eq!(major_of_version_num(90624), Some(906));
        assert_eq!(major_name(906), "9.6");
        assert_eq!(major_of_version_num(180000), Some(18));
        assert_eq!(major_of_version_num(12), None);
    }
}
