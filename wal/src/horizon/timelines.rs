//! Phase 2: timelines. The head is the timeline written to last; its lineage
//! (from its history file) says which timeline holds which LSNs on the main
//! line. Inconsistent histories, a stray higher timeline and two branches
//! written to at once (split brain) freeze retention; an unreadable head
//! history makes the lineage unknown (fallback: keep WAL on every timeline).

use std::collections::BTreeMap;

use crate::catalog::{Doc, RepoSnapshot, WalKind};
use crate::names::{Lsn, SegmentNo, SegmentSize, TimelineId};
use crate::policy::RetentionPolicy;
use crate::time::Timestamp;

use super::sanity::segment_no;
use super::types::Findings;

/// A lineage entry: timeline `tl` holds the main line's LSNs in `[begin, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LineageEntry {
    pub(crate) tl: TimelineId,
    pub(crate) begin: Lsn,
    pub(crate) end: Option<Lsn>,
}

/// The timelines a timeline descends from, oldest first, ending with itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lineage(Vec<LineageEntry>);

/// A run of segments on one timeline: `(timeline, first, last or open)`.
pub(crate) type PathRange = (TimelineId, SegmentNo, Option<SegmentNo>);

impl Lineage {
    /// The lineage of `tl` from its history file; `None` if the file is
    /// missing or unreadable (timeline 1 needs none).
    pub(crate) fn of(tl: TimelineId, snap: &RepoSnapshot) -> Option<Self> {
        if tl.get() == 1 {
            return Some(Lineage(vec![LineageEntry { tl, begin: Lsn::new(0), end: None }]));
        }
        let h = match &snap.histories.get(&tl.get())?.doc {
            Doc::Parsed(h) => h,
            Doc::Invalid(_) => return None,
        };
        let mut out = Vec::new();
        let mut begin = Lsn::new(0);
        for e in &h.entries {
            out.push(LineageEntry { tl: e.parent, begin, end: Some(e.switch) });
            begin = e.switch;
        }
        out.push(LineageEntry { tl, begin, end: None });
        Some(Lineage(out))
    }

    #[cfg(test)]
    pub(crate) fn new(entries: Vec<LineageEntry>) -> Self {
        Lineage(entries)
    }

    pub(crate) fn entries(&self) -> &[LineageEntry] {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the lineage holds timeline `tl`.
    pub(crate) fn has_timeline(&self, tl: TimelineId) -> bool {
        self.0.iter().any(|e| e.tl == tl)
    }

    /// Whether segment `n` of `tl` is on this lineage (the switch segment
    /// belongs to the child timeline).
    pub(crate) fn holds(&self, tl: TimelineId, n: SegmentNo, s: SegmentSize) -> bool {
        self.0.iter().any(|e| e.tl == tl && n >= s.segment_of(e.begin) && e.end.is_none_or(|end| n < s.segment_of(end)))
    }

    /// The segments of the path from `from` to the end of the lineage: on each
    /// entry, from `max(seg(from), seg(begin))` to `seg(end) - 1` (the switch
    /// segment is the child's).
    pub(crate) fn path_ranges(&self, from: Lsn, s: SegmentSize) -> Vec<PathRange> {
        let mut out = Vec::new();
        for e in &self.0 {
            if e.end.is_some_and(|end| end <= from) {
                continue;
            }
            let lo = s.segment_of(from).max(s.segment_of(e.begin));
            let hi = match e.end {
                Some(end) => match s.segment_of(end).get().checked_sub(1) {
                    Some(h) if h >= lo.get() => Some(SegmentNo::new(h)),
                    _ => continue,
                },
                None => None,
            };
            out.push((e.tl, lo, hi));
        }
        out
    }
}

/// What phase 2 found.
#[derive(Debug)]
pub(crate) struct Timelines {
    /// The timeline written to last.
    pub(crate) head: Option<TimelineId>,
    /// The head's lineage (empty when unknown).
    pub(crate) lineage: Lineage,
    /// The head's history is missing or unreadable.
    pub(crate) fallback: bool,
    /// Last write per timeline (segments, histories, backups).
    pub(crate) activity: BTreeMap<TimelineId, Timestamp>,
    s: SegmentSize,
}

impl Timelines {
    pub(super) fn resolve(
        snap: &RepoSnapshot,
        s: SegmentSize,
        now: Timestamp,
        policy: &RetentionPolicy,
        f: &mut Findings,
    ) -> Self {
        let activity = activity(snap);
        let head = activity.iter().max_by_key(|(tl, t)| (**t, **tl)).map(|(tl, _)| *tl);
        let lineage = head.and_then(|t| Lineage::of(t, snap));
        let fallback = head.is_some() && lineage.is_none();
        if fallback {
            f.alert(format!(
                "history of the head timeline {} is missing or unreadable: lineage unknown, keeping all WAL on every timeline after the oldest backup",
                head.map_or(0, TimelineId::get)
            ));
        }
        let t = Timelines { head, lineage: lineage.unwrap_or_default(), fallback, activity, s };
        check_histories(snap, f);
        if !t.fallback {
            t.check_stray(f);
            t.check_split_brain(snap, now, policy, f);
        }
        t
    }

    /// Whether segment `n` of `tl` is on the main line (always, when the lineage is unknown).
    pub(crate) fn on_main(&self, tl: TimelineId, n: SegmentNo) -> bool {
        self.lineage.is_empty() || self.lineage.holds(tl, n, self.s)
    }

    /// A timeline higher than the head that is not its ancestor.
    fn check_stray(&self, f: &mut Findings) {
        if let (Some(hd), Some(max_tl)) = (self.head, self.activity.keys().max().copied()) {
            if max_tl > hd && !self.lineage.has_timeline(max_tl) {
                f.freeze(format!(
                    "stray timeline: timeline {max_tl} is higher than the active timeline {hd} but not its ancestor"
                ));
            }
        }
    }

    /// Two branches received WAL within the quiet period: split brain.
    fn check_split_brain(&self, snap: &RepoSnapshot, now: Timestamp, policy: &RetentionPolicy, f: &mut Findings) {
        let quiet = now.minus(policy.branch_quiet_period);
        let recent = snap.wal.iter().filter(|w| w.kind == WalKind::Segment && w.received > quiet);
        let (mut main, mut other) = (false, false);
        for w in recent {
            if self.on_main(TimelineId::new(w.tl), segment_no(self.s, w.log, w.seg)) {
                main = true;
            } else {
                other = true;
            }
        }
        if main && other {
            f.freeze("split brain suspected: two timeline branches received WAL within the quiet period".into());
        }
    }
}

/// The last write per timeline: segments, history files, backups.
fn activity(snap: &RepoSnapshot) -> BTreeMap<TimelineId, Timestamp> {
    let mut activity: BTreeMap<TimelineId, Timestamp> = BTreeMap::new();
    let mut bump = |tl: TimelineId, t: Timestamp| {
        let e = activity.entry(tl).or_insert(t);
        if t > *e {
            *e = t;
        }
    };
    for w in snap.wal.iter().filter(|w| w.kind == WalKind::Segment) {
        bump(TimelineId::new(w.tl), w.received);
    }
    for (tl, hf) in &snap.histories {
        bump(TimelineId::new(*tl), hf.received);
    }
    for (name, b) in &snap.backups {
        bump(name.timeline(), b.last_write());
    }
    activity
}

/// Each history extends its parent's; an unreadable one is kept and alerted.
fn check_histories(snap: &RepoSnapshot, f: &mut Findings) {
    for (tl, hf) in &snap.histories {
        match &hf.doc {
            Doc::Parsed(child) => {
                let Some(parent) = child.parent() else { continue };
                if parent.parent.get() <= 1 {
                    continue;
                }
                if let Some(Doc::Parsed(p)) = snap.histories.get(&parent.parent.get()).map(|f| &f.doc) {
                    if !child.extends(p) {
                        f.freeze(format!(
                            "timeline conflict: history of timeline {tl} does not extend that of timeline {}",
                            parent.parent
                        ));
                    }
                }
            }
            Doc::Invalid(e) => f.alert(format!("history file of timeline {tl} is not readable ({e}); it is kept")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::testkit::{RepoBuilder, DAY, HOUR};

    fn tl(n: u32) -> TimelineId {
        TimelineId::new(n)
    }

    fn seg(n: u64) -> SegmentNo {
        SegmentNo::new(n)
    }

    #[test]
    fn path_switch_segment_belongs_to_the_child() {
        let s = SegmentSize::DEFAULT;
        let at = |n: u64| s.start_of(seg(n));
        // TL1 until 0/5000028 (mid segment 5), TL2 after.
        let lin = Lineage::new(vec![
            LineageEntry { tl: tl(1), begin: Lsn::new(0), end: Some(Lsn::new(0x5000028)) },
            LineageEntry { tl: tl(2), begin: Lsn::new(0x5000028), end: None },
        ]);
        assert_eq!(lin.path_ranges(at(2), s), vec![(tl(1), seg(2), Some(seg(4))), (tl(2), seg(5), None)]);
        assert!(lin.holds(tl(2), seg(5), s) && !lin.holds(tl(1), seg(5), s));
        // Switch exactly on a boundary: TL1 up to 4, TL2 from 5.
        let lin2 = Lineage::new(vec![
            LineageEntry { tl: tl(1), begin: Lsn::new(0), end: Some(at(5)) },
            LineageEntry { tl: tl(2), begin: at(5), end: None },
        ]);
        assert_eq!(lin2.path_ranges(at(2), s), vec![(tl(1), seg(2), Some(seg(4))), (tl(2), seg(5), None)]);
        // Starting after the switch: TL1 is not needed.
        assert_eq!(lin.path_ranges(at(7), s), vec![(tl(2), seg(7), None)]);
    }

    fn resolve(r: &RepoBuilder) -> (Timelines, Findings) {
        let mut f = Findings::default();
        let t = Timelines::resolve(
            &r.snap,
            SegmentSize::DEFAULT,
            Timestamp::from_millis(r.now),
            &RetentionPolicy::default(),
            &mut f,
        );
        (t, f)
    }

    #[test]
    fn head_and_lineage_follow_the_newest_write() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 9, 2 * DAY, HOUR);
        let sw = r.s.start_of(seg(10)).as_u64();
        r.history(2, &[(1, sw)], 2 * DAY);
        r.segments(2, 10, 12, HOUR, HOUR);
        let (t, f) = resolve(&r);
        assert_eq!(t.head, Some(tl(2)));
        assert_eq!(t.lineage.entries().len(), 2);
        assert!(t.on_main(tl(1), seg(9)) && !t.on_main(tl(1), seg(10)) && t.on_main(tl(2), seg(10)));
        assert!(f.frozen.is_empty(), "{f:?}");
    }

    #[test]
    fn missing_head_history_is_a_fallback_and_two_active_branches_freeze() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 5, HOUR, HOUR);
        r.segments(3, 6, 7, 0, HOUR);
        let (t, f) = resolve(&r);
        assert!(t.fallback && t.on_main(tl(1), seg(1)) && t.on_main(tl(3), seg(6)));
        assert!(f.alerts[0].contains("missing or unreadable"), "{f:?}");

        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 9, 0, 60_000);
        let sw = r.s.start_of(seg(5)).as_u64();
        r.history(2, &[(1, sw)], HOUR);
        r.segments(2, 5, 6, 0, 60_000);
        let (_, f) = resolve(&r);
        assert!(f.frozen.iter().any(|x| x.contains("split brain")), "{f:?}");
    }
}
