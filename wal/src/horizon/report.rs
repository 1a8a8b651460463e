//! Phase 7: the restorable-window report: the newest segment, counts and
//! sizes, the gaps on the main line after the oldest kept PITR backup (lost,
//! or pending while younger than `archive_lag_grace`), and the recoverable
//! windows from each kept PITR backup.

use crate::catalog::{RepoSnapshot, WalKind};
use crate::names::{Lsn, SegmentNo, SegmentSize};
use crate::policy::RetentionPolicy;
use crate::time::Timestamp;

use super::backups::Views;
use super::keep::Kept;
use super::sanity::{segment_no, Present};
use super::timelines::Timelines;
use super::types::{BackupStatus, BackupView, Gap, Report, Role, Window};

#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    snap: &RepoSnapshot,
    policy: &RetentionPolicy,
    now: Timestamp,
    s: SegmentSize,
    present: &Present,
    views: &Views,
    kept: &Kept,
    tls: &Timelines,
    oldest_pitr: Option<Lsn>,
) -> Report {
    let mut r = Report::default();
    let segments = || snap.wal.iter().filter(|w| w.kind == WalKind::Segment);
    if let Some(w) = segments().max_by_key(|w| (w.received, w.tl, w.log, w.seg)) {
        let n = segment_no(s, w.log, w.seg);
        r.last_segment = Some((format!("{:08X}{:08X}{:08X}", w.tl, w.log, w.seg), w.received, s.start_of(n.next())));
    }
    r.wal_segments = segments().count() as u64;
    for w in segments() {
        let name = if w.codec == crate::names::Codec::None { "none" } else { w.codec.ext() };
        *r.wal_codecs.entry(name.into()).or_default() += 1;
    }
    r.bytes = snap.wal.iter().map(|w| w.size).sum::<u64>()
        + snap.backups.values().flat_map(|b| b.files.iter().map(|f| f.1)).sum::<u64>()
        + snap.other.iter().map(|o| o.size).sum::<u64>();
    for v in views.values() {
        let kind = match &v.status {
            BackupStatus::InProgress => "in_progress",
            BackupStatus::Incomplete => "incomplete",
            BackupStatus::Broken(_) => "broken",
            BackupStatus::Complete if v.full => "full",
            BackupStatus::Complete => "delta",
        };
        *r.counts.entry(kind.into()).or_default() += 1;
        if v.permanent {
            *r.counts.entry("permanent".into()).or_default() += 1;
        }
    }
    r.newest_backup = views
        .values()
        .filter(|v| v.status == BackupStatus::Complete)
        .filter_map(|v| v.finished_at.map(|t| (v.name.clone(), t)))
        .max_by_key(|(_, t)| *t);
    r.oldest_backup = views
        .iter()
        .filter(|(n, _)| kept.contains(n))
        .filter_map(|(_, v)| v.finished_at.map(|t| (v.name.clone(), t)))
        .min_by_key(|(_, t)| *t);
    if tls.fallback || tls.lineage.is_empty() {
        return r;
    }
    r.gaps = gaps(policy, now, s, present, tls, oldest_pitr);
    r.windows = windows(s, present, views, kept, tls);
    r
}

/// Runs of missing segments on the main path from the oldest PITR start (or
/// from the first segment present).
fn gaps(
    policy: &RetentionPolicy,
    now: Timestamp,
    s: SegmentSize,
    present: &Present,
    tls: &Timelines,
    oldest_pitr: Option<Lsn>,
) -> Vec<Gap> {
    let lag = now.minus(policy.archive_lag_grace);
    let mut out = Vec::new();
    for (tl, lo, hi) in tls.lineage.path_ranges(oldest_pitr.unwrap_or(Lsn::new(0)), s) {
        let Some(segs) = present.on(tl) else { continue };
        let first_present = segs.range(lo..).next().map(|(n, _)| *n);
        let Some(start) = (if oldest_pitr.is_some() { Some(lo) } else { first_present }) else { continue };
        let end = match hi.or_else(|| segs.keys().next_back().copied()) {
            Some(e) => e,
            None => continue,
        };
        let mut n = start.get();
        while n <= end.get() {
            if segs.contains_key(&SegmentNo::new(n)) {
                n += 1;
                continue;
            }
            let gap_start = n;
            while n <= end.get() && !segs.contains_key(&SegmentNo::new(n)) {
                n += 1;
            }
            let after = segs.range(SegmentNo::new(n)..).next().map(|(_, t)| *t);
            out.push(Gap {
                timeline: tl,
                first: s.file_name(tl, SegmentNo::new(gap_start)),
                last: s.file_name(tl, SegmentNo::new(n - 1)),
                segments: n - gap_start,
                pending: after.is_none_or(|t| t > lag),
            });
        }
    }
    out
}

/// From each kept PITR backup on the main line: from its finish to the
/// receipt of the last segment of the continuous WAL after its start. Merged
/// where they overlap.
fn windows(s: SegmentSize, present: &Present, views: &Views, kept: &Kept, tls: &Timelines) -> Vec<Window> {
    let mut pitr: Vec<&BackupView> = views
        .iter()
        .filter(|(n, v)| kept.backups.get(*n).is_some_and(|k| k.role == Role::Pitr) && v.main && v.restorable)
        .map(|(_, v)| v)
        .collect();
    pitr.sort_by_key(|v| v.start_lsn);
    let mut windows: Vec<Window> = Vec::new();
    for v in pitr {
        let (Some(start), Some(fin)) = (v.start_lsn, v.finished_at) else { continue };
        if let Some((lsn, t)) = reach(s, present, tls, start) {
            if t >= fin {
                windows.push(Window { from: fin, to: t, to_lsn: lsn, backup: v.name.clone() });
            }
        }
    }
    windows.sort_by_key(|w| w.from);
    let mut merged: Vec<Window> = Vec::new();
    for w in windows {
        match merged.last_mut() {
            Some(m) if w.from <= m.to => {
                if w.to > m.to {
                    m.to = w.to;
                    m.to_lsn = w.to_lsn;
                }
            }
            _ => merged.push(w),
        }
    }
    merged
}

/// How far WAL is continuous on the main path from `start`: the end LSN of
/// the last continuous segment and when it was received.
fn reach(s: SegmentSize, present: &Present, tls: &Timelines, start: Lsn) -> Option<(Lsn, Timestamp)> {
    let mut reach = None;
    for (tl, lo, hi) in tls.lineage.path_ranges(start, s) {
        let Some(segs) = present.on(tl) else { return reach };
        let mut n = lo;
        loop {
            if hi.is_some_and(|h| n > h) {
                break;
            }
            match segs.get(&n) {
                Some(t) => {
                    reach = Some((s.start_of(n.next()), *t));
                    n = n.next();
                }
                None => return reach,
            }
        }
    }
    reach
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::horizon::compute;
    use crate::names::TimelineId;
    use crate::testkit::{RepoBuilder, DAY, HOUR};

    #[test]
    fn a_gap_splits_the_window_and_is_lost_once_later_wal_is_old() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 60, HOUR, HOUR);
        r.backup(1, 2, 1, 59 * HOUR, None, false);
        r.remove_segment(1, 30);
        let policy = RetentionPolicy { min_object_age: Duration::ZERO, ..RetentionPolicy::default() };
        let h = compute(&r.snap, &policy, r.now(), None);
        assert_eq!(h.report.gaps.len(), 1, "{:?}", h.report.gaps);
        let g = &h.report.gaps[0];
        assert_eq!((g.timeline, g.segments, g.pending), (TimelineId::new(1), 1, false));
        assert_eq!(g.first, r.name(1, 30));
        // The window from the only backup ends before the gap.
        let w = &h.report.windows[0];
        assert_eq!(w.to_lsn, r.s.start_of(SegmentNo::new(30)));
        assert!(w.to.as_millis() < r.now - 29 * HOUR);
        let _ = DAY;
    }
}
