//! Phase 6: what may be deleted, as units in deletion order (whole backups,
//! newest and deltas first; then WAL files, oldest first), and the invariants
//! checked on those units before anything may be deleted.

use std::collections::HashSet;

use crate::catalog::{RepoSnapshot, WalFile, WalKind};
use crate::names::{classify, split24, BackupName, SegmentNo, SegmentSize, TimelineId, WalObject, WAL_DIR};
use crate::policy::RetentionPolicy;
use crate::time::Timestamp;

use super::backups::Views;
use super::keep::Kept;
use super::required::Required;
use super::sanity::segment_no;
use super::timelines::Timelines;
use super::types::{BackupStatus, Findings, Unit};

/// What phase 6 found.
#[derive(Debug, Default)]
pub(crate) struct Deletable {
    pub(crate) units: Vec<Unit>,
    /// Backups not kept but protected because some of their objects are young.
    pub(crate) young_backups: Vec<(BackupName, String)>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn deletable(
    snap: &RepoSnapshot,
    policy: &RetentionPolicy,
    now: Timestamp,
    s: SegmentSize,
    views: &Views,
    kept: &Kept,
    required: &Required,
    tls: &Timelines,
) -> Deletable {
    let young = now.minus(policy.min_object_age);
    let mut out = Deletable::default();
    // Backups: dependents (newer, deltas) first.
    let mut order: Vec<(&BackupName, &super::BackupView)> = views.iter().collect();
    order.sort_by_key(|(_, v)| std::cmp::Reverse((v.start_lsn, v.name.clone())));
    for (n, v) in order {
        let Some(files) = snap.backups.get(n) else { continue };
        if kept.contains(n) || kept.protected.contains_key(n) {
            continue;
        }
        if files.files.iter().any(|f| f.2 > young) {
            out.young_backups.push((n.clone(), "has objects younger than the minimum object age".into()));
            continue;
        }
        let reason = match v.status {
            BackupStatus::Incomplete => "incomplete backup (no stop sentinel) past the incomplete grace period",
            _ => "not needed by the retention policy",
        };
        out.units.push(Unit::Backup {
            name: v.name.clone(),
            paths: files.files.iter().map(|f| f.0.clone()).collect(),
            reason: reason.into(),
        });
    }
    // WAL, oldest first.
    let mut wal: Vec<&WalFile> = snap.wal.iter().collect();
    wal.sort_by_key(|w| (segment_no(s, w.log, w.seg), w.tl, w.kind));
    for w in wal {
        if w.received > young {
            continue;
        }
        let (tl, n) = (TimelineId::new(w.tl), segment_no(s, w.log, w.seg));
        if required.find(tl, n).is_some() {
            continue;
        }
        let reason = match w.kind {
            WalKind::Partial => "partial segment of an abandoned timeline past the branch grace period",
            WalKind::Label => "backup label of an unneeded segment",
            WalKind::Segment if tls.on_main(tl, n) => "before the oldest backup kept for point-in-time recovery",
            WalKind::Segment => "abandoned branch past the branch grace period",
        };
        out.units.push(Unit::Wal { path: w.path.clone(), reason: reason.into() });
    }
    // WAL metadata whose segments all went.
    for o in &snap.other {
        if o.received > young {
            continue;
        }
        let Some((tl, a, b)) = metadata_segments(&o.class, o.path.trim_start_matches(WAL_DIR), s) else { continue };
        if (a.get()..=b.get()).any(|n| required.find(tl, SegmentNo::new(n)).is_some()) {
            continue;
        }
        out.units.push(Unit::Wal { path: o.path.clone(), reason: "WAL metadata of unneeded segments".into() });
    }
    out
}

/// The segments a WAL metadata or delta file describes: `(timeline, first, last)`.
fn metadata_segments(class: &WalObject, name: &str, s: SegmentSize) -> Option<(TimelineId, SegmentNo, SegmentNo)> {
    let one = |n: &str| split24(n).ok().map(|(t, l, g)| (TimelineId::new(t), segment_no(s, l, g)));
    match class {
        WalObject::WalMeta if name.len() == 29 => one(name.get(..24)?).map(|(t, n)| (t, n, n)),
        // A bulk metadata name: the first 23 hex digits of 16 segments.
        WalObject::WalMeta => {
            let prefix = name.get(..23)?;
            let (t, first) = one(&format!("{prefix}0"))?;
            let (_, last) = one(&format!("{prefix}F"))?;
            Some((t, first, last))
        }
        WalObject::WalDelta => one(name.get(..24)?).map(|(t, n)| (t, n, SegmentNo::new(n.get() + 15))),
        _ => None,
    }
}

/// Freezes if the units would take anything a kept backup needs, leave fewer
/// than the minimum of backups, or take a history file.
pub(super) fn check_invariants(
    snap: &RepoSnapshot,
    policy: &RetentionPolicy,
    s: SegmentSize,
    views: &Views,
    kept: &Kept,
    units: &[Unit],
    f: &mut Findings,
) {
    let gone: HashSet<&str> = units.iter().flat_map(|u| u.paths()).collect();
    for n in kept.backups.keys() {
        let Some(v) = views.get(n) else { continue };
        if !v.restorable {
            continue;
        }
        if let Some((first, last)) = v.own_segments(s) {
            for seg in first.get()..=last.get() {
                let name = s.file_name(v.timeline, SegmentNo::new(seg));
                let lost = snap
                    .wal
                    .iter()
                    .any(|w| w.kind == WalKind::Segment && w.path.contains(&name) && gone.contains(w.path.as_str()));
                if lost {
                    f.freeze(format!("invariant violated: kept backup {n} would lose segment {name}"));
                }
            }
        }
        if snap.backups.get(n).is_some_and(|b| b.files.iter().any(|x| gone.contains(x.0.as_str()))) {
            f.freeze(format!("invariant violated: kept backup {n} would lose objects"));
        }
    }
    let kept_main = kept.main_restorable.iter().filter(|n| kept.contains(n)).count();
    if kept_main < (policy.min_backups as usize).min(kept.main_restorable.len()) {
        f.freeze("invariant violated: fewer than the minimum number of backups would remain".into());
    }
    if gone.iter().any(|p| matches!(classify(p), WalObject::History { .. })) {
        f.freeze("invariant violated: a history file would be deleted".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::horizon::keep::KeptBackup;
    use crate::horizon::Role;

    #[test]
    fn metadata_names_cover_their_segments() {
        let s = SegmentSize::DEFAULT;
        let tl = TimelineId::new(1);
        assert_eq!(
            metadata_segments(&WalObject::WalMeta, "000000010000000200000003.json", s),
            Some((tl, SegmentNo::new(0x203), SegmentNo::new(0x203)))
        );
        assert_eq!(
            metadata_segments(&WalObject::WalMeta, "00000001000000020000001.json", s),
            Some((tl, SegmentNo::new(0x210), SegmentNo::new(0x21F)))
        );
        assert_eq!(
            metadata_segments(&WalObject::WalDelta, "000000010000000200000010_delta", s),
            Some((tl, SegmentNo::new(0x210), SegmentNo::new(0x21F)))
        );
        assert_eq!(metadata_segments(&WalObject::WalDelta, "short", s), None);
    }

    #[test]
    fn invariants_catch_a_unit_that_takes_what_is_kept() {
        let mut r = crate::testkit::RepoBuilder::new(std::time::SystemTime::UNIX_EPOCH);
        r.now = 1_800_000_000_000;
        let b = r.backup(1, 2, 1, 1000, None, false);
        let n = BackupName::parse(&b).expect("name");
        let mut views = Views::new();
        let mut v = super::super::BackupView {
            name: b.clone(),
            status: BackupStatus::Complete,
            timeline: TimelineId::new(1),
            start_lsn: None,
            finish_lsn: None,
            finished_at: None,
            permanent: false,
            full: true,
            delta_parent: None,
            restorable: true,
            main: true,
            role: None,
            reasons: Vec::new(),
            bytes: 0,
        };
        v.start_lsn = Some(r.s.start_of(SegmentNo::new(2)));
        v.finish_lsn = Some(r.s.start_of(SegmentNo::new(3)));
        views.insert(n.clone(), v);
        let mut kept = Kept::default();
        kept.backups.insert(n.clone(), KeptBackup { role: Role::Pitr, reasons: Vec::new() });
        kept.main_restorable = vec![n.clone()];
        let paths: Vec<String> = r.snap.backups[&n].files.iter().map(|f| f.0.clone()).collect();
        let units = vec![Unit::Backup { name: b.clone(), paths, reason: "test".into() }];
        let mut f = Findings::default();
        check_invariants(&r.snap, &RetentionPolicy::default(), r.s, &views, &kept, &units, &mut f);
        assert!(f.frozen.iter().any(|x| x.contains("would lose objects")), "{f:?}");
        let mut f = Findings::default();
        let history = vec![Unit::Wal { path: "wal_005/00000002.history".into(), reason: "test".into() }];
        check_invariants(&r.snap, &RetentionPolicy::default(), r.s, &views, &kept, &history, &mut f);
        assert!(f.frozen.iter().any(|x| x.contains("history file")), "{f:?}");
    }
}
