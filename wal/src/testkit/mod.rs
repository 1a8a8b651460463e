//! Builds repository snapshots laid out exactly as WAL-G writes them, for the
//! horizon's unit and property tests (and for scenario tests through the S3 API).

pub mod fuzz;
pub mod fuzz_wal;

use std::time::{Duration, SystemTime};

use crate::time::Timestamp;

use crate::backup::{MetadataInfo, SentinelInfo};
use crate::catalog::{BackupObjects, Doc, HistoryFile, RepoSnapshot, WalFile, WalKind};
use crate::history::{History, HistoryEntry};
use crate::names::{BackupName, Codec, Lsn, SegmentNo, SegmentSize, TimelineId};

/// Day in milliseconds.
pub const DAY: i64 = 86_400_000;
/// Hour in milliseconds.
pub const HOUR: i64 = 3_600_000;

/// A snapshot under construction; times are relative to `now`.
pub struct RepoBuilder {
    /// The snapshot.
    pub snap: RepoSnapshot,
    /// Segment size used for names.
    pub s: SegmentSize,
    /// "Now" (ms since epoch).
    pub now: i64,
}

impl RepoBuilder {
    /// An empty repository at `now`.
    pub fn new(now: SystemTime) -> Self {
        Self { snap: RepoSnapshot::default(), s: SegmentSize::DEFAULT, now: Timestamp::from_system(now).as_millis() }
    }

    /// `now - ago` as a timestamp.
    pub fn at(&self, ago_ms: i64) -> Timestamp {
        Timestamp::from_millis(self.now - ago_ms)
    }

    /// The 24-hex name of a segment.
    pub fn name(&self, tl: u32, n: u64) -> String {
        self.s.file_name(TimelineId::new(tl), SegmentNo::new(n))
    }

    /// Adds a full segment received `ago` ms ago.
    pub fn segment(&mut self, tl: u32, n: u64, ago: i64) -> &mut Self {
        self.wal(tl, n, WalKind::Segment, ago)
    }

    /// Adds segments `from..=to`, the last received `ago_last` ago, one every `every` ms before it.
    pub fn segments(&mut self, tl: u32, from: u64, to: u64, ago_last: i64, every: i64) -> &mut Self {
        for n in from..=to {
            let ago = ago_last + (to - n) as i64 * every;
            self.segment(tl, n, ago);
        }
        self
    }

    /// Adds a `.partial`.
    pub fn partial(&mut self, tl: u32, n: u64, ago: i64) -> &mut Self {
        self.wal(tl, n, WalKind::Partial, ago)
    }

    fn wal(&mut self, tl: u32, n: u64, kind: WalKind, ago: i64) -> &mut Self {
        let name = self.name(tl, n);
        let k = self.s.per_xlogid();
        let path = match kind {
            WalKind::Segment => format!("wal_005/{name}.lz4"),
            WalKind::Partial => format!("wal_005/{name}.partial.lz4"),
            WalKind::Label => format!("wal_005/{name}.00000028.backup.lz4"),
        };
        let received = self.at(ago);
        self.snap.wal.push(WalFile {
            tl,
            log: (n / k) as u32,
            seg: (n % k) as u32,
            kind,
            codec: Codec::Lz4,
            path,
            size: 1000,
            received,
        });
        self
    }

    /// Removes a segment (a gap or a client delete).
    pub fn remove_segment(&mut self, tl: u32, n: u64) -> &mut Self {
        let name = self.name(tl, n);
        self.snap.wal.retain(|f| !(f.kind == WalKind::Segment && f.path.contains(&name)));
        self
    }

    /// Adds `<tl>.history` with the given (parent, switch LSN) lines.
    pub fn history(&mut self, tl: u32, entries: &[(u32, u64)], ago: i64) -> &mut Self {
        let h = History {
            timeline: TimelineId::new(tl),
            entries: entries
                .iter()
                .map(|(p, l)| HistoryEntry { parent: TimelineId::new(*p), switch: Lsn::new(*l) })
                .collect(),
        };
        let received = self.at(ago);
        self.snap
            .histories
            .insert(tl, HistoryFile { path: format!("wal_005/{tl:08X}.history.lz4"), doc: Doc::Parsed(h), received });
        self
    }

    /// Adds a complete backup starting at segment `start_seg` (LSN 0x28 into it)
    /// and finishing `len_segs` later, its sentinel received `ago` ms ago.
    /// Returns the backup name.
    pub fn backup(
        &mut self,
        tl: u32,
        start_seg: u64,
        len_segs: u64,
        ago: i64,
        delta_from: Option<&str>,
        permanent: bool,
    ) -> String {
        let start = self.s.start_of(SegmentNo::new(start_seg)).as_u64() + 0x28;
        let finish = self.s.start_of(SegmentNo::new(start_seg + len_segs)).as_u64() + 0x100;
        let own = self.name(tl, start_seg);
        let name = match delta_from {
            Some(p) => format!("base_{own}_D_{}", &p[5..29]),
            None => format!("base_{own}"),
        };
        let received = self.at(ago);
        let si = SentinelInfo {
            start_lsn: Some(Lsn::new(start)),
            finish_lsn: Some(Lsn::new(finish)),
            delta_from: delta_from.map(str::to_owned),
            delta_full: None,
            system_identifier: Some(7),
            pg_version: Some(150000),
            is_permanent: false,
            finish_time: None,
            wal_e: false,
        };
        let md = MetadataInfo {
            start_lsn: Some(Lsn::new(start)),
            finish_lsn: Some(Lsn::new(finish)),
            is_permanent: permanent,
            ..MetadataInfo::default()
        };
        let b = BackupObjects {
            sentinel: Some((Doc::Parsed(si), received)),
            metadata: Some(Doc::Parsed(md)),
            files: vec![
                (format!("basebackups_005/{name}_backup_stop_sentinel.json"), 500, received),
                (format!("basebackups_005/{name}/metadata.json"), 300, received),
                (
                    format!("basebackups_005/{name}/tar_partitions/part_001.tar.lz4"),
                    1 << 20,
                    Timestamp::from_millis(received.as_millis() - 60_000),
                ),
            ],
        };
        self.snap.backups.insert(BackupName::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}")), b);
        name
    }

    /// Adds a backup without sentinel (tar parts only), last written `ago` ms ago.
    pub fn unfinished_backup(&mut self, tl: u32, start_seg: u64, ago: i64, delta_from: Option<&str>) -> String {
        let own = self.name(tl, start_seg);
        let name = match delta_from {
            Some(p) => format!("base_{own}_D_{}", &p[5..29]),
            None => format!("base_{own}"),
        };
        let t = self.at(ago);
        let b = BackupObjects {
            sentinel: None,
            metadata: None,
            files: vec![(format!("basebackups_005/{name}/tar_partitions/part_001.tar.lz4"), 1 << 20, t)],
        };
        self.snap.backups.insert(BackupName::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}")), b);
        name
    }

    /// Removes every object named in `paths` (applies deletions).
    pub fn apply_deletions<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) {
        let gone: std::collections::HashSet<&str> = paths.into_iter().collect();
        self.snap.wal.retain(|f| !gone.contains(f.path.as_str()));
        self.snap.other.retain(|o| !gone.contains(o.path.as_str()));
        self.snap.histories.retain(|_, h| !gone.contains(h.path.as_str()));
        for b in self.snap.backups.values_mut() {
            b.files.retain(|f| !gone.contains(f.0.as_str()));
            if b.files.iter().all(|f| !f.0.ends_with("_backup_stop_sentinel.json")) {
                b.sentinel = None;
            }
            if b.files.iter().all(|f| !f.0.ends_with("/metadata.json")) {
                b.metadata = None;
            }
        }
        self.snap.backups.retain(|_, b| !b.files.is_empty());
    }

    /// "Now" as a `SystemTime`.
    pub fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.now as u64)
    }
}
