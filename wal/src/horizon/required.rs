//! Phase 5: the WAL the kept backups need, as segment ranges per timeline,
//! each with the rule that requires it.

use crate::names::{split24, Lsn, SegmentNo, SegmentSize, TimelineId};

use super::backups::Views;
use super::keep::Kept;
use super::sanity::segment_no;
use super::timelines::Timelines;
use super::types::{BackupStatus, Role, SegRange, WalReason};

/// What phase 5 found.
#[derive(Debug, Default)]
pub(crate) struct Required {
    pub(crate) ranges: Vec<SegRange>,
    /// Start of the oldest kept PITR backup on the main line.
    pub(crate) oldest_pitr: Option<Lsn>,
}

impl Required {
    fn push(&mut self, timeline: TimelineId, from: SegmentNo, to: Option<SegmentNo>, reason: WalReason) {
        self.ranges.push(SegRange { timeline, from, to, reason });
    }

    /// The first range that holds segment `n` of `tl`.
    pub(crate) fn find(&self, tl: TimelineId, n: SegmentNo) -> Option<&SegRange> {
        self.ranges.iter().find(|r| r.contains(tl, n))
    }
}

pub(super) fn collect(kept: &Kept, views: &Views, tls: &Timelines, s: SegmentSize) -> Required {
    let mut req = Required::default();
    for n in kept.backups.keys() {
        let Some(v) = views.get(n) else { continue };
        if let Some((first, last)) = v.own_segments(s) {
            req.push(v.timeline, first, Some(last), WalReason::KeptBackup(n.to_string()));
        }
    }
    let oldest = kept
        .backups
        .iter()
        .filter(|(_, k)| k.role == Role::Pitr)
        .filter_map(|(n, _)| views.get(n))
        .filter(|v| v.main)
        .filter_map(|v| v.start_lsn.map(|l| (l, v.name.clone())))
        .min();
    req.oldest_pitr = oldest.as_ref().map(|(l, _)| *l);
    let all_tls: Vec<TimelineId> = tls.activity.keys().copied().collect();
    match (oldest, tls.fallback) {
        (Some((start, name)), false) => {
            for (tl, from, to) in tls.lineage.path_ranges(start, s) {
                req.push(tl, from, to, WalReason::PitrPath(name.clone()));
            }
        }
        (Some((start, name)), true) => {
            for tl in &all_tls {
                req.push(*tl, s.segment_of(start), None, WalReason::LineageUnknown(name.clone()));
            }
        }
        (None, _) => {
            for tl in &all_tls {
                req.push(*tl, SegmentNo::new(0), None, WalReason::NoBackupYet);
            }
        }
    }
    for (n, v) in views.iter().filter(|(_, v)| v.status == BackupStatus::InProgress) {
        if let Ok((_, log, seg)) = split24(n.start_wal_name()) {
            for tl in &all_tls {
                req.push(*tl, segment_no(s, log, seg), None, WalReason::InProgress(v.name.clone()));
            }
        }
    }
    for b in &kept.branches {
        req.push(b.tl, b.first, None, WalReason::Branch(b.tl));
    }
    for b in &kept.branches {
        if let Some((bn, start, lineage)) = &b.path {
            for (t2, from, to) in lineage.path_ranges(*start, s) {
                req.push(t2, from, to, WalReason::BranchPath { timeline: b.tl, from: bn.to_string() });
            }
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_texts_are_stable() {
        assert_eq!(WalReason::NoBackupYet.to_string(), "no restorable backup yet: all WAL is kept");
        assert_eq!(
            WalReason::BranchPath { timeline: TimelineId::new(3), from: "base_X".into() }.to_string(),
            "path into abandoned timeline 3 from base_X"
        );
        let r = SegRange {
            timeline: TimelineId::new(2),
            from: SegmentNo::new(5),
            to: None,
            reason: WalReason::Branch(TimelineId::new(2)),
        };
        assert!(r.contains(TimelineId::new(2), SegmentNo::new(500)));
        assert!(
            !r.contains(TimelineId::new(2), SegmentNo::new(4)) && !r.contains(TimelineId::new(1), SegmentNo::new(5))
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["reason"], "abandoned branch of timeline 2, inside the branch grace period");
        assert_eq!(json["timeline"], 2);
        assert_eq!(json["from"], 5);
    }
}
