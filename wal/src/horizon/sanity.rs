//! Phase 1: what can be trusted at all. Clock anomalies, unresolved
//! split-brain conflicts and unreadable documents freeze retention; the
//! segment size is configured or inferred (ambiguity freezes); and the full
//! segments present are indexed by timeline and number.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::catalog::{Doc, RepoSnapshot, WalKind};
use crate::names::{split24, Lsn, SegmentNo, SegmentSize, TimelineId};
use crate::policy::RetentionPolicy;
use crate::time::Timestamp;

use super::types::Findings;

/// Objects received this far after "now" mean the clock went backwards.
const FUTURE_TOLERANCE_MS: i64 = 5 * 60_000;
/// A previous evaluation this far after "now" means the clock went backwards.
const BACKWARDS_TOLERANCE_MS: i64 = 60_000;
/// A gap this long since the previous evaluation is treated as a clock jump.
const JUMP_MS: i64 = 30 * 86_400_000;

/// Freezes on a clock that went backwards or jumped far forward.
pub(super) fn clock(snap: &RepoSnapshot, now: Timestamp, last_pass: Option<Timestamp>, f: &mut Findings) {
    if let Some(newest) = snap.newest_receipt() {
        if newest.as_millis() > now.as_millis() + FUTURE_TOLERANCE_MS {
            f.freeze(format!(
                "clock anomaly: objects were received up to {} ms after the current time",
                newest.as_millis() - now.as_millis()
            ));
        }
    }
    if let Some(prev) = last_pass {
        if prev.as_millis() > now.as_millis() + BACKWARDS_TOLERANCE_MS {
            f.freeze("clock anomaly: the clock went backwards since the last evaluation".into());
        } else if now.as_millis() - prev.as_millis() > JUMP_MS {
            f.freeze(
                "clock anomaly: more than 30 days since the last evaluation (clock jump?); evaluating again next pass"
                    .into(),
            );
        }
    }
}

/// A history collision an operator has not resolved freezes; a WAL conflict alerts.
pub(super) fn conflicts(snap: &RepoSnapshot, f: &mut Findings) {
    for c in &snap.conflicts {
        if c.history {
            f.freeze(format!(
                "history-timeline-collision: a different {} was refused and quarantined (two nodes promoted to \
                 the same timeline?); resolve with `walstore quarantine resolve {}`",
                c.path, c.id
            ));
        } else if c.foreign {
            f.alert(format!(
                "another cluster: {} from a cluster other than this repository's was refused and quarantined \
                 (`walstore quarantine resolve {}`)",
                c.path, c.id
            ));
        } else {
            f.alert(format!(
                "split brain suspected: a different {} was refused and quarantined (`walstore quarantine resolve {}`)",
                c.path, c.id
            ));
        }
    }
}

/// An unparseable sentinel or `metadata.json` freezes: what it says decides what is kept.
pub(super) fn documents(snap: &RepoSnapshot, f: &mut Findings) {
    for (name, b) in &snap.backups {
        if let Some((Doc::Invalid(e), _)) = &b.sentinel {
            f.freeze(format!("sentinel of {name} cannot be parsed: {e}"));
        }
        if let Some(Doc::Invalid(e)) = &b.metadata {
            f.freeze(format!("metadata.json of {name} cannot be parsed: {e}"));
        }
    }
}

/// The sizes for which every complete backup's name encodes the segment of its
/// start LSN (or of start - 1). Empty if no backup says anything.
pub(super) fn inferred_segment_sizes(snap: &RepoSnapshot) -> BTreeSet<u64> {
    let mut candidates: BTreeSet<u64> = (20..=30).map(|p| 1u64 << p).collect();
    let mut any = false;
    for (name, b) in &snap.backups {
        let Some((Doc::Parsed(s), _)) = &b.sentinel else { continue };
        let Some(start) = s.start_lsn else { continue };
        let Ok((_, log, seg)) = split24(name.start_wal_name()) else { continue };
        any = true;
        candidates.retain(|&size| {
            let Ok(ss) = SegmentSize::new(size) else { return false };
            let k = ss.per_xlogid();
            let names = |l: Lsn| {
                let n = ss.segment_of(l).get();
                n / k == log as u64 && n % k == seg as u64
            };
            names(start) || names(start.prev())
        });
    }
    if any {
        candidates
    } else {
        BTreeSet::new()
    }
}

/// The segment size in use: the configured one (checked against the backups'
/// names), else the one size the backups' names allow, else 16 MiB when no
/// backup says anything. Anything else freezes.
pub(super) fn segment_size(snap: &RepoSnapshot, policy: &RetentionPolicy, f: &mut Findings) -> SegmentSize {
    let inferred = inferred_segment_sizes(snap);
    match policy.segment_size {
        Some(cfg) => {
            if !inferred.is_empty() && !inferred.contains(&cfg.bytes()) {
                f.freeze(format!("configured segment size {} does not match the backups' names", cfg.bytes()));
            }
            cfg
        }
        None => match inferred.len() {
            1 => inferred.iter().next().and_then(|b| SegmentSize::new(*b).ok()).unwrap_or(SegmentSize::DEFAULT),
            0 if snap.backups.values().all(|b| b.sentinel.is_none()) => SegmentSize::DEFAULT,
            0 => {
                f.freeze("no WAL segment size is consistent with all backups".into());
                SegmentSize::DEFAULT
            }
            _ => {
                f.freeze(format!("WAL segment size is ambiguous ({} candidates); configure it", inferred.len()));
                SegmentSize::DEFAULT
            }
        },
    }
}

/// The full segments present, by timeline and number, with receipt times.
#[derive(Debug, Default)]
pub(crate) struct Present {
    by_tl: HashMap<TimelineId, BTreeMap<SegmentNo, Timestamp>>,
}

impl Present {
    /// Indexes the snapshot's segments; a name out of range for the segment
    /// size freezes (the size is wrong, or the object is not what it claims).
    pub(super) fn index(snap: &RepoSnapshot, s: SegmentSize, f: &mut Findings) -> Self {
        let mut p = Present::default();
        let k = s.per_xlogid();
        for w in &snap.wal {
            if w.seg as u64 >= k {
                f.freeze(format!("{}: name out of range for {} MiB segments", w.path, s.bytes() >> 20));
                continue;
            }
            if w.kind == WalKind::Segment {
                p.by_tl.entry(TimelineId::new(w.tl)).or_default().insert(segment_no(s, w.log, w.seg), w.received);
            }
        }
        p
    }

    /// Whether segment `n` of timeline `tl` is present.
    pub(crate) fn has(&self, tl: TimelineId, n: SegmentNo) -> bool {
        self.by_tl.get(&tl).is_some_and(|m| m.contains_key(&n))
    }

    /// The present segments of a timeline.
    pub(crate) fn on(&self, tl: TimelineId) -> Option<&BTreeMap<SegmentNo, Timestamp>> {
        self.by_tl.get(&tl)
    }
}

/// The segment number of a name's (middle, low) parts for a segment size.
pub(crate) fn segment_no(s: SegmentSize, log: u32, seg: u32) -> SegmentNo {
    SegmentNo::new(log as u64 * s.per_xlogid() + seg as u64)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::testkit::{RepoBuilder, DAY, HOUR};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn clock_anomalies_freeze() {
        let r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let now = at(r.now);
        let mut f = Findings::default();
        clock(&r.snap, now, Some(at(r.now - HOUR)), &mut f);
        assert!(f.frozen.is_empty(), "{f:?}");
        clock(&r.snap, now, Some(at(r.now + 2 * 60_000)), &mut f);
        assert!(f.frozen[0].contains("went backwards"), "{f:?}");
        let mut f = Findings::default();
        clock(&r.snap, now, Some(at(r.now - 31 * DAY)), &mut f);
        assert!(f.frozen[0].contains("more than 30 days"), "{f:?}");
        let mut r2 = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r2.segment(1, 3, -10 * 60_000);
        let mut f = Findings::default();
        clock(&r2.snap, now, None, &mut f);
        assert!(f.frozen[0].contains("received up to"), "{f:?}");
    }

    #[test]
    fn segment_size_is_inferred_from_backup_names_or_frozen() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let mut f = Findings::default();
        assert_eq!(segment_size(&r.snap, &RetentionPolicy::default(), &mut f), SegmentSize::DEFAULT);
        r.backup(1, 0x123, 2, DAY, None, false);
        assert_eq!(inferred_segment_sizes(&r.snap).len(), 1, "one size fits a backup in segment 0x123");
        assert_eq!(segment_size(&r.snap, &RetentionPolicy::default(), &mut f), SegmentSize::DEFAULT);
        assert!(f.frozen.is_empty());
        let wrong = RetentionPolicy { segment_size: SegmentSize::new(64 << 20).ok(), ..RetentionPolicy::default() };
        segment_size(&r.snap, &wrong, &mut f);
        assert!(f.frozen[0].contains("does not match"), "{f:?}");
    }

    #[test]
    fn present_segments_are_indexed_by_number() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segment(1, 0x100, HOUR).segment(2, 0x101, HOUR).partial(1, 0x101, HOUR);
        let mut f = Findings::default();
        let p = Present::index(&r.snap, SegmentSize::DEFAULT, &mut f);
        assert!(p.has(TimelineId::new(1), SegmentNo::new(0x100)));
        assert!(p.has(TimelineId::new(2), SegmentNo::new(0x101)));
        assert!(!p.has(TimelineId::new(1), SegmentNo::new(0x101)), "a .partial is not a segment");
        assert!(f.frozen.is_empty());
    }
}
