//! The retention horizon: one pure function from (repository snapshot, policy,
//! now) to what must be kept and why, what may go, what is broken, and the
//! restorable-window report. The delete guard, the retention worker, the status
//! report and the CLI all use this result; nobody re-derives it.
//!
//! Rules (a simplification of the reference specification that never keeps
//! less than it would; see the README's retention section):
//! - Backups: COMPLETE (stop sentinel parses, delta parent COMPLETE), BROKEN
//!   (sentinel present but the chain or its LSNs are unusable: protected, never
//!   deleted automatically), IN PROGRESS (no sentinel, written to within
//!   `incomplete_grace`: all its objects and all WAL after its start are kept),
//!   INCOMPLETE (no sentinel, older: deletable as one unit).
//! - Kept: permanent backups; the newest restorable backup finished at or
//!   before `now - window - skew` (the anchor) and every newer one; the N newest
//!   fulls with their deltas; at least `min_backups`, always the newest; side
//!   branches' backups inside `branch_grace`; every delta ancestor of a kept
//!   backup. All kept main-line backups are PITR points (continuous WAL from the
//!   oldest of them), as WAL-G and Barman do.
//! - Required WAL: each kept backup's own segments `[seg(start-1), seg(finish-1)]`
//!   on its timeline; the main lineage path from the oldest PITR backup's start
//!   to the head (the switch segment comes from the child timeline); everything
//!   after an in-progress backup's start; abandoned branches and `.partial`
//!   files inside `branch_grace`, with the newest backup that can reach them;
//!   every history file; every object younger than `min_object_age`. A gap never
//!   makes later WAL deletable.
//! - Fail closed: an unparseable sentinel or metadata.json, an ambiguous segment
//!   size, a timeline history that does not extend its parent's, a stray
//!   timeline, two active branches (split brain) or a clock anomaly freeze the
//!   repository: nothing is deletable and an alert names the reason.
//!
//! [`compute`] runs named phases, each a function of the earlier phases'
//! typed results (each with tests of its own):
//! 1. [`sanity`]: clock, unresolved conflicts, unreadable documents, the
//!    segment size, and the index of present segments;
//! 2. [`timelines`]: the head timeline, its lineage, history consistency,
//!    stray timelines and split brain;
//! 3. [`backups`]: each backup's status, LSNs, chain and restorability;
//! 4. [`keep`]: which backups are kept, in which role and why;
//! 5. [`required`]: the WAL ranges those backups need;
//! 6. [`units`]: what may be deleted, in order, and the invariants checked
//!    before anything may be;
//! 7. [`report`]: gaps and recoverable windows.

mod backups;
mod keep;
mod report;
mod required;
mod sanity;
mod timelines;
mod types;
mod units;

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use serde::Serialize;

use crate::catalog::RepoSnapshot;
use crate::names::{classify, BackupName, Lsn, SegmentSize, TimelineId, WalObject};
use crate::policy::RetentionPolicy;
use crate::time::Timestamp;

pub use keep::KeepReason;
use types::Findings;
pub use types::{BackupStatus, BackupView, Decision, Gap, Report, Role, SegRange, Unit, WalReason, Window};

/// The result of one evaluation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Horizon {
    /// When it was computed.
    pub now: Option<Timestamp>,
    /// Segment size in use (inferred or configured).
    pub segment_size: Option<u64>,
    /// The active timeline.
    pub head: Option<TimelineId>,
    /// Lineage of the head: (timeline, begin LSN, end LSN or open).
    pub lineage: Vec<(TimelineId, Lsn, Option<Lsn>)>,
    /// History of the head could not be read: lineage unknown, everything after
    /// the oldest PITR start is kept on every timeline.
    pub fallback: bool,
    /// Reasons retention is frozen (non-empty: nothing is deletable).
    pub frozen: Vec<String>,
    /// Alerts for the operator (lost WAL, broken backups, …).
    pub alerts: Vec<String>,
    /// Every backup with its status and role.
    pub backups: Vec<BackupView>,
    /// Required WAL ranges with their rules.
    pub required: Vec<SegRange>,
    /// What may be deleted, in deletion order.
    pub deletable: Vec<Unit>,
    /// The report.
    pub report: Report,
    #[serde(skip)]
    deletable_paths: HashSet<String>,
    #[serde(skip)]
    protected_backups: HashMap<String, String>,
}

/// Computes the horizon of one repository. Pure: the same inputs give the same
/// result. `last_pass` is the time of the previous evaluation (clock checks).
pub fn compute(
    snap: &RepoSnapshot,
    policy: &RetentionPolicy,
    now: SystemTime,
    last_pass: Option<Timestamp>,
) -> Horizon {
    let now = Timestamp::from_system(now);
    let mut f = Findings::default();

    // 1. What can be trusted at all.
    sanity::clock(snap, now, last_pass, &mut f);
    sanity::conflicts(snap, &mut f);
    sanity::documents(snap, &mut f);
    let s = sanity::segment_size(snap, policy, &mut f);
    let present = sanity::Present::index(snap, s, &mut f);

    // 2. Timelines.
    let tls = timelines::Timelines::resolve(snap, s, now, policy, &mut f);

    // 3. Backups.
    let views = backups::classify(snap, s, now, policy, &present, &tls, &mut f);

    // 4. What is kept.
    let kept = keep::choose(snap, policy, now, s, &views, &tls);

    // 5. The WAL it needs.
    let required = required::collect(&kept, &views, &tls, s);

    // 6. What may go, and the invariants before anything may.
    let frozen_before = !f.frozen.is_empty();
    let mut deletable = units::deletable(snap, policy, now, s, &views, &kept, &required, &tls);
    let mut protected = kept.protected.clone();
    for (name, why) in deletable.young_backups.drain(..) {
        protected.insert(name, why);
    }
    units::check_invariants(snap, policy, s, &views, &kept, &deletable.units, &mut f);

    // 7. Gaps and windows.
    let report = report::build(snap, policy, now, s, &present, &views, &kept, &tls, required.oldest_pitr);
    for g in report.gaps.iter().filter(|g| !g.pending) {
        f.alert(format!(
            "lost WAL: {} segment(s) {}..{} are missing on timeline {}",
            g.segments, g.first, g.last, g.timeline
        ));
    }

    // Finish: roles and reasons on the views, nothing deletable when frozen.
    let mut views = views;
    for v in views.values_mut() {
        if let Ok(n) = BackupName::parse(&v.name) {
            if let Some(k) = kept.backups.get(&n) {
                v.role = Some(k.role);
                v.reasons = k.reasons.iter().map(ToString::to_string).collect();
            } else if let Some(p) = protected.get(&n) {
                v.reasons = vec![p.clone()];
            }
        }
    }
    let mut backups: Vec<BackupView> = views.into_values().collect();
    backups.sort_by_key(|v| (v.start_lsn, v.name.clone()));
    if frozen_before || !f.frozen.is_empty() {
        deletable.units.clear();
    }
    let deletable_paths = deletable.units.iter().flat_map(|u| u.paths()).map(str::to_owned).collect();
    let mut protected_backups: HashMap<String, String> =
        protected.into_iter().map(|(n, why)| (n.to_string(), why)).collect();
    for (n, k) in &kept.backups {
        let why = k.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        protected_backups.entry(n.to_string()).or_insert_with(|| format!("kept ({:?}): {why}", k.role));
    }
    Horizon {
        now: Some(now),
        segment_size: Some(s.bytes()),
        head: tls.head,
        lineage: tls.lineage.entries().iter().map(|e| (e.tl, e.begin, e.end)).collect(),
        fallback: tls.fallback,
        frozen: f.frozen,
        alerts: f.alerts,
        backups,
        required: required.ranges,
        deletable: deletable.units,
        report,
        deletable_paths,
        protected_backups,
    }
}

impl Horizon {
    /// Whether retention is frozen.
    pub fn is_frozen(&self) -> bool {
        !self.frozen.is_empty()
    }

    /// Decides a client delete of `path` (inside the repository). Objects the
    /// snapshot did not contain (written after it) are young and kept.
    pub fn decide(&self, path: &str) -> Decision {
        if !self.frozen.is_empty() {
            return Decision::Deny(format!("retention is frozen ({})", self.frozen.join("; ")));
        }
        match classify(path) {
            WalObject::Foreign => Decision::Allow,
            WalObject::History { .. } => Decision::Deny("timeline history files are always kept".into()),
            class => {
                if self.deletable_paths.contains(path) {
                    return Decision::Allow;
                }
                if let Some(b) = class.backup() {
                    if let Some(why) = self.protected_backups.get(b.as_str()) {
                        return Decision::Deny(format!("backup {b} is {why}"));
                    }
                }
                Decision::Deny(self.why_kept(path, &class))
            }
        }
    }

    fn why_kept(&self, path: &str, class: &WalObject) -> String {
        let name = match class {
            WalObject::Segment { name, .. } | WalObject::Partial { name, .. } | WalObject::BackupLabel { name, .. } => {
                name
            }
            _ => return "required by the retention policy, or younger than the minimum object age".into(),
        };
        let s = self.segment_size.and_then(|b| SegmentSize::new(b).ok());
        if let Some((tl, n)) = s.and_then(|s| s.parse_file_name(name).ok()) {
            if let Some(r) = self.required.iter().find(|r| r.contains(tl, n)) {
                return format!("{path}: {}", r.reason);
            }
        }
        format!("{path}: written after the last retention evaluation or younger than the minimum object age")
    }
}
