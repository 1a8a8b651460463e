//! Phase 4: which backups are kept, in which role, and why; which are
//! protected without being kept (in progress, broken); and the abandoned
//! branches inside their grace period with the backup that can reach each.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::catalog::{RepoSnapshot, WalKind};
use crate::names::{BackupName, Lsn, SegmentNo, SegmentSize, TimelineId};
use crate::policy::RetentionPolicy;
use crate::time::Timestamp;

use super::backups::Views;
use super::sanity::segment_no;
use super::timelines::{Lineage, Timelines};
use super::types::{BackupStatus, BackupView, Role};

/// A rule that keeps a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// Marked permanent (`wal-g backup-mark`).
    Permanent,
    /// The newest restorable backup finished before the recovery window starts.
    WindowAnchor,
    /// Finished inside the recovery window.
    InsideWindow,
    /// One of the N newest full backups (N = the policy's `full_count`).
    NewestFulls(u32),
    /// A delta whose chain reaches a kept full backup.
    DeltaOfKeptFull(String),
    /// Needed to keep the minimum number of backups.
    Minimum(u32),
    /// The newest restorable backup.
    NewestRestorable,
    /// A backup on a side branch, inside the branch grace period.
    SideBranch,
    /// The base of a delta backup still being uploaded.
    BaseOfInProgressDelta(String),
    /// The newest backup that can recover into an abandoned timeline.
    BranchBase(TimelineId),
    /// A delta ancestor of a kept backup.
    DeltaAncestor(String),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Permanent => f.write_str("permanent (backup-mark)"),
            KeepReason::WindowAnchor => {
                f.write_str("recovery window anchor (newest backup finished before the window starts)")
            }
            KeepReason::InsideWindow => f.write_str("inside the recovery window"),
            KeepReason::NewestFulls(n) => write!(f, "one of the {n} newest full backups"),
            KeepReason::DeltaOfKeptFull(full) => write!(f, "delta of kept full backup {full}"),
            KeepReason::Minimum(n) => write!(f, "minimum of {n} backups"),
            KeepReason::NewestRestorable => f.write_str("newest restorable backup"),
            KeepReason::SideBranch => f.write_str("backup on a side branch, inside the branch grace period"),
            KeepReason::BaseOfInProgressDelta(d) => write!(f, "base of the in-progress delta {d}"),
            KeepReason::BranchBase(tl) => write!(f, "base for recovery into abandoned timeline {tl} (branch grace)"),
            KeepReason::DeltaAncestor(child) => write!(f, "delta ancestor of kept backup {child}"),
        }
    }
}

/// A kept backup: its role (the strongest any rule gave it) and every rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeptBackup {
    pub(crate) role: Role,
    pub(crate) reasons: Vec<KeepReason>,
}

/// An abandoned branch inside its grace period: everything on it from its
/// first segment is kept, and, if its lineage is known, the path into it
/// from the newest backup that can reach it.
#[derive(Clone, Debug)]
pub(crate) struct Branch {
    pub(crate) tl: TimelineId,
    pub(crate) first: SegmentNo,
    pub(crate) path: Option<(BackupName, Lsn, Lineage)>,
}

/// What phase 4 decided.
#[derive(Clone, Debug, Default)]
pub(crate) struct Kept {
    pub(crate) backups: BTreeMap<BackupName, KeptBackup>,
    /// Backups protected without being kept, and why.
    pub(crate) protected: HashMap<BackupName, String>,
    pub(crate) branches: Vec<Branch>,
    /// Restorable main-line backups, oldest finish first.
    pub(crate) main_restorable: Vec<BackupName>,
}

impl Kept {
    fn add(&mut self, n: &BackupName, role: Role, why: KeepReason) {
        let e = self.backups.entry(n.clone()).or_insert(KeptBackup { role, reasons: Vec::new() });
        if role < e.role {
            e.role = role;
        }
        e.reasons.push(why);
    }

    /// Whether `n` is kept.
    pub(crate) fn contains(&self, n: &BackupName) -> bool {
        self.backups.contains_key(n)
    }
}

fn name_of(v: &BackupView) -> Option<BackupName> {
    BackupName::parse(&v.name).ok()
}

pub(super) fn choose(
    snap: &RepoSnapshot,
    policy: &RetentionPolicy,
    now: Timestamp,
    s: SegmentSize,
    views: &Views,
    tls: &Timelines,
) -> Kept {
    let mut k = Kept::default();
    let mut main_r: Vec<&BackupView> = views.values().filter(|v| v.restorable && v.main).collect();
    main_r.sort_by_key(|v| (v.finished_at, v.name.clone()));
    k.main_restorable = main_r.iter().filter_map(|v| name_of(v)).collect();

    if policy.keep_permanent {
        for v in views.values().filter(|v| v.permanent && v.status == BackupStatus::Complete) {
            if let Some(n) = name_of(v) {
                k.add(&n, Role::Standalone, KeepReason::Permanent);
            }
        }
    }
    keep_window(&mut k, &main_r, policy, now);
    keep_newest_fulls(&mut k, &main_r, views, policy);
    keep_minimum(&mut k, &main_r, policy);
    if let Some(newest) = main_r.last().and_then(|v| name_of(v)) {
        k.add(&newest, Role::Pitr, KeepReason::NewestRestorable);
    }
    let grace = now.minus(policy.branch_grace);
    for v in views.values().filter(|v| v.restorable && !v.main && v.finished_at.is_some_and(|t| t >= grace)) {
        if let Some(n) = name_of(v) {
            k.add(&n, Role::Standalone, KeepReason::SideBranch);
        }
    }
    protect_unfinished(&mut k, views);
    if !tls.fallback {
        keep_branches(&mut k, snap, s, views, tls, grace);
    }
    keep_delta_ancestors(&mut k, views);
    k
}

/// The anchor (newest restorable main backup finished before the window) and every newer one.
fn keep_window(k: &mut Kept, main_r: &[&BackupView], policy: &RetentionPolicy, now: Timestamp) {
    let w0 = now.minus(policy.recovery_window).minus(policy.clock_skew);
    let anchor = main_r.iter().rposition(|v| v.finished_at.is_some_and(|t| t <= w0));
    for (i, v) in main_r.iter().enumerate().skip(anchor.unwrap_or(0)) {
        if let Some(n) = name_of(v) {
            let why = if Some(i) == anchor { KeepReason::WindowAnchor } else { KeepReason::InsideWindow };
            k.add(&n, Role::Pitr, why);
        }
    }
}

/// The N newest full backups with every delta whose chain reaches them.
fn keep_newest_fulls(k: &mut Kept, main_r: &[&BackupView], views: &Views, policy: &RetentionPolicy) {
    if policy.full_count == 0 {
        return;
    }
    let fulls: Vec<&&BackupView> = main_r.iter().filter(|v| v.full).rev().take(policy.full_count as usize).collect();
    for f in fulls {
        let Some(n) = name_of(f) else { continue };
        k.add(&n, Role::Pitr, KeepReason::NewestFulls(policy.full_count));
        for d in main_r.iter().filter(|d| !d.full) {
            if chain_reaches(views, &d.name, &f.name) {
                if let Some(dn) = name_of(d) {
                    k.add(&dn, Role::Pitr, KeepReason::DeltaOfKeptFull(f.name.clone()));
                }
            }
        }
    }
}

/// At least `min_backups` restorable main backups, newest first.
fn keep_minimum(k: &mut Kept, main_r: &[&BackupView], policy: &RetentionPolicy) {
    let mut kept_main = main_r.iter().filter(|v| name_of(v).is_some_and(|n| k.contains(&n))).count();
    for v in main_r.iter().rev() {
        if kept_main >= policy.min_backups as usize {
            break;
        }
        if let Some(n) = name_of(v) {
            if !k.contains(&n) {
                k.add(&n, Role::Pitr, KeepReason::Minimum(policy.min_backups));
                kept_main += 1;
            }
        }
    }
}

/// In-progress backups are protected (and the base of an in-progress delta
/// kept); broken ones are protected for an operator.
fn protect_unfinished(k: &mut Kept, views: &Views) {
    for (n, v) in views {
        match &v.status {
            BackupStatus::InProgress => {
                k.protected.insert(n.clone(), "in progress (no stop sentinel yet)".into());
                if let Some(parent_wal) = n.delta_parent_wal_name() {
                    let bases: Vec<BackupName> =
                        views.keys().filter(|b| b.start_wal_name() == parent_wal).cloned().collect();
                    for base in bases {
                        k.add(&base, Role::Ancestor, KeepReason::BaseOfInProgressDelta(v.name.clone()));
                    }
                }
            }
            BackupStatus::Broken(why) => {
                k.protected.insert(n.clone(), format!("broken ({why}); kept for an operator to inspect"));
            }
            _ => {}
        }
    }
}

/// Abandoned branches (and `.partial` files) written to inside the branch
/// grace period, and the newest restorable backup that can recover into each.
fn keep_branches(k: &mut Kept, snap: &RepoSnapshot, s: SegmentSize, views: &Views, tls: &Timelines, grace: Timestamp) {
    let mut last: BTreeMap<TimelineId, (Timestamp, SegmentNo)> = BTreeMap::new();
    for w in snap.wal.iter().filter(|w| w.kind != WalKind::Label) {
        let (tl, n) = (TimelineId::new(w.tl), segment_no(s, w.log, w.seg));
        if w.kind == WalKind::Partial || !tls.on_main(tl, n) {
            let e = last.entry(tl).or_insert((w.received, n));
            if w.received > e.0 {
                e.0 = w.received;
            }
            e.1 = e.1.min(n);
        }
    }
    for (tl, (written, first)) in last {
        if written < grace {
            continue;
        }
        let mut branch = Branch { tl, first, path: None };
        if let Some(bl) = Lineage::of(tl, snap) {
            let fork = s.start_of(first);
            let base = views
                .values()
                .filter(|v| v.restorable && v.finish_lsn.is_some_and(|f| f <= fork))
                .filter(|v| bl.has_timeline(v.timeline))
                .max_by_key(|v| (v.finished_at, v.name.clone()));
            if let Some(b) = base {
                if let (Some(bn), Some(start)) = (name_of(b), b.start_lsn) {
                    k.add(&bn, Role::Standalone, KeepReason::BranchBase(tl));
                    branch.path = Some((bn, start, bl));
                }
            }
        }
        k.branches.push(branch);
    }
}

/// Every delta ancestor of a kept backup is kept too (its own WAL only:
/// restoring a kept delta replays WAL from the delta's start, never from its base's).
fn keep_delta_ancestors(k: &mut Kept, views: &Views) {
    loop {
        let mut added = Vec::new();
        for n in k.backups.keys() {
            let parent = views.get(n).and_then(|v| v.delta_parent.as_deref()).and_then(|p| BackupName::parse(p).ok());
            if let Some(p) = parent {
                if !k.contains(&p) {
                    added.push((p, n.to_string()));
                }
            }
        }
        if added.is_empty() {
            return;
        }
        for (p, child) in added {
            k.add(&p, Role::Ancestor, KeepReason::DeltaAncestor(child));
        }
    }
}

/// Whether the delta chain from `from` reaches `target`.
fn chain_reaches(views: &Views, from: &str, target: &str) -> bool {
    let mut cur = from.to_owned();
    for _ in 0..10_000 {
        if cur == target {
            return true;
        }
        match BackupName::parse(&cur).ok().and_then(|n| views.get(&n)).and_then(|v| v.delta_parent.clone()) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::horizon::{backups, sanity, Findings};
    use crate::testkit::{RepoBuilder, DAY, HOUR};

    fn choose_all(r: &RepoBuilder, policy: &RetentionPolicy) -> Kept {
        let s = SegmentSize::DEFAULT;
        let now = Timestamp::from_millis(r.now);
        let mut f = Findings::default();
        let present = sanity::Present::index(&r.snap, s, &mut f);
        let tls = Timelines::resolve(&r.snap, s, now, policy, &mut f);
        let views = backups::classify(&r.snap, s, now, policy, &present, &tls, &mut f);
        choose(&r.snap, policy, now, s, &views, &tls)
    }

    fn reasons(k: &Kept, n: &str) -> Vec<String> {
        k.backups[&BackupName::parse(n).expect("name")].reasons.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn window_anchor_minimum_and_ancestors() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 100, HOUR, HOUR);
        let old = r.backup(1, 2, 1, 90 * HOUR, None, false);
        let anchor = r.backup(1, 20, 1, 8 * DAY, None, false);
        let base = r.backup(1, 40, 1, 5 * DAY, None, false);
        let delta = r.backup(1, 60, 1, 3 * DAY, Some(&base), false);
        let policy = RetentionPolicy { recovery_window: Duration::from_secs(7 * 86_400), ..Default::default() };
        let k = choose_all(&r, &policy);
        let _ = old;
        assert!(reasons(&k, &anchor).iter().any(|x| x.contains("anchor")), "{k:?}");
        assert_eq!(k.backups[&BackupName::parse(&delta).expect("name")].role, Role::Pitr);
        assert!(reasons(&k, &delta).contains(&"newest restorable backup".to_string()));
        assert!(k.contains(&BackupName::parse(&base).expect("name")));
    }

    #[test]
    fn in_progress_delta_keeps_its_base_and_reason_texts_are_stable() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 100, HOUR, HOUR);
        let base = r.backup(1, 20, 1, 30 * DAY, None, false);
        r.backup(1, 60, 1, DAY, None, false);
        let busy = r.unfinished_backup(1, 90, HOUR, Some(&base));
        let k = choose_all(&r, &RetentionPolicy::default());
        assert!(reasons(&k, &base).contains(&format!("base of the in-progress delta {busy}")), "{k:?}");
        assert_eq!(k.backups[&BackupName::parse(&base).expect("name")].role, Role::Pitr, "the strongest role wins");
        assert_eq!(k.protected[&BackupName::parse(&busy).expect("name")], "in progress (no stop sentinel yet)");
        assert_eq!(KeepReason::NewestFulls(3).to_string(), "one of the 3 newest full backups");
        assert_eq!(
            KeepReason::BranchBase(TimelineId::new(4)).to_string(),
            "base for recovery into abandoned timeline 4 (branch grace)"
        );
    }
}
