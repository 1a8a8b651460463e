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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::types::Timestamp;

use super::backup::SentinelInfo;
use super::catalog::{Doc, RepoSnapshot, WalKind};
use super::names::{classify, split24, BackupName, Lsn, SegmentNo, SegmentSize, TimelineId, WalObject};
use super::policy::RetentionPolicy;

/// Why a backup is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Role {
    /// A point-in-time-recovery base: WAL from it onwards is kept.
    Pitr,
    /// Kept with only the WAL that makes it consistent.
    Standalone,
    /// Needed as the base of a kept delta backup.
    Ancestor,
}

/// Lifecycle state of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum BackupStatus {
    /// No sentinel yet, written to recently.
    InProgress,
    /// No sentinel and abandoned.
    Incomplete,
    /// Stop sentinel present and consistent.
    Complete,
    /// Sentinel present but unusable (reason).
    Broken(String),
}

/// A backup as the horizon sees it.
#[derive(Clone, Debug, Serialize)]
pub struct BackupView {
    /// Name.
    pub name: String,
    /// Status.
    pub status: BackupStatus,
    /// Timeline.
    pub timeline: u32,
    /// Start LSN (from the sentinel).
    pub start_lsn: Option<Lsn>,
    /// Finish LSN.
    pub finish_lsn: Option<Lsn>,
    /// When it finished: the later of the sentinel's receipt and the client's FinishTime.
    pub finished_at: Option<Timestamp>,
    /// Permanent (`metadata.json` `is_permanent`).
    pub permanent: bool,
    /// Full (not a delta).
    pub full: bool,
    /// Immediate delta parent.
    pub delta_parent: Option<String>,
    /// Complete, chain complete, and its own WAL present.
    pub restorable: bool,
    /// Compatible with the head timeline's lineage.
    pub main: bool,
    /// Kept role, if kept.
    pub role: Option<Role>,
    /// Why it is kept (rules), or why it is protected.
    pub reasons: Vec<String>,
    /// Bytes stored.
    pub bytes: u64,
}

/// A range of required segment numbers on one timeline (inclusive; `to: None` = open).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegRange {
    /// Timeline.
    pub timeline: u32,
    /// First segment number.
    pub from: u64,
    /// Last segment number (inclusive), or open-ended.
    pub to: Option<u64>,
    /// The rule.
    pub reason: String,
}

impl SegRange {
    fn contains(&self, tl: u32, n: u64) -> bool {
        self.timeline == tl && n >= self.from && self.to.is_none_or(|t| n <= t)
    }
}

/// A run of missing segments on the main lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Timeline.
    pub timeline: u32,
    /// First missing segment (file name).
    pub first: String,
    /// Last missing segment (file name).
    pub last: String,
    /// Number of missing segments.
    pub segments: u64,
    /// Still uploading (younger than `archive_lag_grace`) rather than lost.
    pub pending: bool,
}

/// An interval of recoverable time on the main lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Earliest recoverable instant (a backup's finish).
    pub from: Timestamp,
    /// Latest recoverable instant (receipt of the last continuous segment).
    pub to: Timestamp,
    /// LSN up to which WAL is continuous.
    pub to_lsn: Lsn,
    /// The backup the interval starts from.
    pub backup: String,
}

/// The restorable-window report of a repository.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Newest full WAL segment received: (file name, receipt time, end LSN).
    pub last_segment: Option<(String, Timestamp, Lsn)>,
    /// Gaps on the main lineage after the oldest kept PITR backup.
    pub gaps: Vec<Gap>,
    /// Recoverable intervals on the main lineage.
    pub windows: Vec<Window>,
    /// Newest complete backup and when it finished.
    pub newest_backup: Option<(String, Timestamp)>,
    /// Oldest kept backup and when it finished.
    pub oldest_backup: Option<(String, Timestamp)>,
    /// Backups by kind: full, delta, permanent, in progress, incomplete, broken.
    pub counts: BTreeMap<String, u64>,
    /// WAL segments stored (full segments only).
    pub wal_segments: u64,
    /// Bytes of the repository.
    pub bytes: u64,
}

/// A set of objects to delete together, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// A whole backup, sentinel first.
    Backup {
        /// Name.
        name: String,
        /// Paths inside the repository, sentinel first.
        paths: Vec<String>,
        /// Why it may go.
        reason: String,
    },
    /// One WAL file (segment, partial, label, WAL metadata).
    Wal {
        /// Path inside the repository.
        path: String,
        /// Why it may go.
        reason: String,
    },
}

impl Unit {
    /// Paths of the unit, in deletion order.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Unit::Backup { paths, .. } => paths.iter().map(String::as_str).collect(),
            Unit::Wal { path, .. } => vec![path.as_str()],
        }
    }
}

/// The decision for one client delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// May be deleted.
    Allow,
    /// Must be kept, with the rule.
    Deny(String),
}

/// The result of one evaluation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Horizon {
    /// When it was computed.
    pub now: Option<Timestamp>,
    /// Segment size in use (inferred or configured).
    pub segment_size: Option<u64>,
    /// The active timeline.
    pub head: Option<u32>,
    /// Lineage of the head: (timeline, begin LSN, end LSN or open).
    pub lineage: Vec<(u32, Lsn, Option<Lsn>)>,
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
    #[serde(skip)]
    young_cutoff: Option<Timestamp>,
}

fn ts_minus(now: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_millis(now.as_millis().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// Parses WAL-G's `%Y-%m-%dT%H:%M:%S.%fZ` times (client clock).
fn parse_client_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ms = 0i64;
    let rest = &s[19..];
    let rest = if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        let mut padded = digits.clone();
        padded.push_str("000");
        ms = padded[..3].parse().ok()?;
        &frac[digits.len()..]
    } else {
        rest
    };
    if rest != "Z" || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(Timestamp::from_millis(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms))
}

/// Infers the WAL segment size from complete backups: the sizes for which every
/// backup's name encodes the segment of its start LSN (or of start - 1).
fn infer_segment_size(snap: &RepoSnapshot) -> BTreeSet<u64> {
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
            let ok = |l: Lsn| {
                let n = ss.segment_of(l).get();
                n / k == log as u64 && n % k == seg as u64
            };
            ok(start) || ok(start.prev())
        });
    }
    if any {
        candidates
    } else {
        BTreeSet::new()
    }
}

/// A lineage entry: timeline `tl` covers `[begin, end)`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    tl: u32,
    begin: Lsn,
    end: Option<Lsn>,
}

fn lineage_of(tl: u32, snap: &RepoSnapshot) -> Option<Vec<Entry>> {
    if tl == 1 {
        return Some(vec![Entry { tl, begin: Lsn::new(0), end: None }]);
    }
    let h = match &snap.histories.get(&tl)?.doc {
        Doc::Parsed(h) => h,
        Doc::Invalid(_) => return None,
    };
    let mut out = Vec::new();
    let mut begin = Lsn::new(0);
    for e in &h.entries {
        out.push(Entry { tl: e.parent.get(), begin, end: Some(e.switch) });
        begin = e.switch;
    }
    out.push(Entry { tl, begin, end: None });
    Some(out)
}

/// Segment ranges of `path(lineage, from, ∞)`: on each entry, from
/// `max(seg(from), seg(begin))` to `seg(end) - 1` (the switch segment is the child's).
fn path_ranges(lineage: &[Entry], from: Lsn, s: SegmentSize) -> Vec<(u32, u64, Option<u64>)> {
    let mut out = Vec::new();
    for e in lineage {
        if e.end.is_some_and(|end| end <= from) {
            continue;
        }
        let lo = s.segment_of(from).get().max(s.segment_of(e.begin).get());
        let hi = match e.end {
            Some(end) => match s.segment_of(end).get().checked_sub(1) {
                Some(h) if h >= lo => Some(h),
                _ => continue,
            },
            None => None,
        };
        out.push((e.tl, lo, hi));
    }
    out
}

struct Ctx<'a> {
    snap: &'a RepoSnapshot,
    policy: &'a RetentionPolicy,
    now: Timestamp,
    s: SegmentSize,
    /// Present full segments per timeline, with receipt times.
    present: HashMap<u32, BTreeMap<u64, Timestamp>>,
}

impl Ctx<'_> {
    fn has(&self, tl: u32, n: u64) -> bool {
        self.present.get(&tl).is_some_and(|m| m.contains_key(&n))
    }
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
    let mut h = Horizon { now: Some(now), ..Horizon::default() };
    h.young_cutoff = Some(ts_minus(now, policy.min_object_age));

    // --- clock sanity -------------------------------------------------------
    if let Some(newest) = snap.newest_receipt() {
        if newest.as_millis() > now.as_millis() + 5 * 60_000 {
            h.frozen.push(format!(
                "clock anomaly: objects were received up to {} ms after the current time",
                newest.as_millis() - now.as_millis()
            ));
        }
    }
    if let Some(prev) = last_pass {
        if prev.as_millis() > now.as_millis() + 60_000 {
            h.frozen.push("clock anomaly: the clock went backwards since the last evaluation".into());
        } else if now.as_millis() - prev.as_millis() > 30 * 86_400_000 {
            h.frozen.push(
                "clock anomaly: more than 30 days since the last evaluation (clock jump?); evaluating again next pass"
                    .into(),
            );
        }
    }

    // --- split-brain conflicts an operator has not resolved -------------------
    for c in &snap.conflicts {
        if c.history {
            h.frozen.push(format!(
                "history-timeline-collision: a different {} was refused and quarantined (two nodes promoted to \
                 the same timeline?); resolve with `walstore quarantine resolve {}`",
                c.path, c.id
            ));
        } else {
            h.alerts.push(format!(
                "split brain suspected: a different {} was refused and quarantined (`walstore quarantine resolve {}`)",
                c.path, c.id
            ));
        }
    }

    // --- documents ------------------------------------------------------------
    for (name, b) in &snap.backups {
        if let Some((Doc::Invalid(e), _)) = &b.sentinel {
            h.frozen.push(format!("sentinel of {name} cannot be parsed: {e}"));
        }
        if let Some(Doc::Invalid(e)) = &b.metadata {
            h.frozen.push(format!("metadata.json of {name} cannot be parsed: {e}"));
        }
    }

    // --- segment size ---------------------------------------------------------
    let inferred = infer_segment_size(snap);
    let s = match policy.segment_size {
        Some(cfg) => {
            if !inferred.is_empty() && !inferred.contains(&cfg.bytes()) {
                h.frozen.push(format!("configured segment size {} does not match the backups' names", cfg.bytes()));
            }
            cfg
        }
        None => match inferred.len() {
            1 => SegmentSize::new(*inferred.iter().next().unwrap_or(&(16 << 20))).unwrap_or(SegmentSize::DEFAULT),
            0 if snap.backups.values().all(|b| b.sentinel.is_none()) => SegmentSize::DEFAULT,
            0 => {
                h.frozen.push("no WAL segment size is consistent with all backups".into());
                SegmentSize::DEFAULT
            }
            _ => {
                h.frozen.push(format!("WAL segment size is ambiguous ({} candidates); configure it", inferred.len()));
                SegmentSize::DEFAULT
            }
        },
    };
    h.segment_size = Some(s.bytes());

    let mut present: HashMap<u32, BTreeMap<u64, Timestamp>> = HashMap::new();
    let k = s.per_xlogid();
    for f in &snap.wal {
        if f.seg as u64 >= k {
            h.frozen.push(format!("{}: name out of range for {} MiB segments", f.path, s.bytes() >> 20));
            continue;
        }
        if f.kind == WalKind::Segment {
            present.entry(f.tl).or_default().insert(f.log as u64 * k + f.seg as u64, f.received);
        }
    }
    let cx = Ctx { snap, policy, now, s, present };
    let segno = |log: u32, seg: u32| log as u64 * k + seg as u64;

    // --- timelines --------------------------------------------------------------
    let mut activity: BTreeMap<u32, Timestamp> = BTreeMap::new();
    let mut bump = |tl: u32, t: Timestamp| {
        let e = activity.entry(tl).or_insert(t);
        if t > *e {
            *e = t;
        }
    };
    for f in &snap.wal {
        if f.kind == WalKind::Segment {
            bump(f.tl, f.received);
        }
    }
    for (tl, hf) in &snap.histories {
        bump(*tl, hf.received);
    }
    for (name, b) in &snap.backups {
        bump(name.timeline().get(), b.last_write());
    }
    let head = activity.iter().max_by_key(|(tl, t)| (**t, **tl)).map(|(tl, _)| *tl);
    h.head = head;
    let lineage = head.and_then(|t| lineage_of(t, snap));
    if head.is_some() && lineage.is_none() {
        h.fallback = true;
        h.alerts.push(format!(
            "history of the head timeline {} is missing or unreadable: lineage unknown, keeping all WAL on every timeline after the oldest backup",
            head.unwrap_or(0)
        ));
    }
    let lineage = lineage.unwrap_or_default();
    h.lineage = lineage.iter().map(|e| (e.tl, e.begin, e.end)).collect();
    // History consistency: each history extends its parent's.
    for (tl, hf) in &snap.histories {
        if let Doc::Parsed(child) = &hf.doc {
            if let Some(parent) = child.parent() {
                if parent.parent.get() > 1 {
                    if let Some(HistoryFileRef::Parsed(p)) =
                        snap.histories.get(&parent.parent.get()).map(|f| HistoryFileRef::of(&f.doc))
                    {
                        if !child.extends(p) {
                            h.frozen.push(format!(
                                "timeline conflict: history of timeline {tl} does not extend that of timeline {}",
                                parent.parent
                            ));
                        }
                    }
                }
            }
        } else if let Doc::Invalid(e) = &hf.doc {
            h.alerts.push(format!("history file of timeline {tl} is not readable ({e}); it is kept"));
        }
    }
    let on_main = |tl: u32, n: u64| -> bool {
        if h_fallback(&lineage) {
            return true;
        }
        lineage.iter().any(|e| {
            e.tl == tl && n >= s.segment_of(e.begin).get() && e.end.is_none_or(|end| n < s.segment_of(end).get())
        })
    };
    if !h.fallback {
        if let (Some(hd), Some(max_tl)) = (head, activity.keys().max().copied()) {
            if max_tl > hd && !lineage.iter().any(|e| e.tl == max_tl) {
                h.frozen.push(format!(
                    "stray timeline: timeline {max_tl} is higher than the active timeline {hd} but not its ancestor"
                ));
            }
        }
        // Two branches written to recently: split brain.
        let quiet = ts_minus(now, policy.branch_quiet_period);
        let abandoned_active = snap
            .wal
            .iter()
            .any(|f| f.kind == WalKind::Segment && f.received > quiet && !on_main(f.tl, segno(f.log, f.seg)));
        let main_active = snap
            .wal
            .iter()
            .any(|f| f.kind == WalKind::Segment && f.received > quiet && on_main(f.tl, segno(f.log, f.seg)));
        if abandoned_active && main_active {
            h.frozen.push("split brain suspected: two timeline branches received WAL within the quiet period".into());
        }
    }

    // --- backups -----------------------------------------------------------------
    let mut views: BTreeMap<BackupName, BackupView> = BTreeMap::new();
    for (name, b) in &snap.backups {
        let perm_meta = match &b.metadata {
            Some(Doc::Parsed(m)) => Some(m.is_permanent),
            _ => None,
        };
        let mut v = BackupView {
            name: name.to_string(),
            status: BackupStatus::Incomplete,
            timeline: name.timeline().get(),
            start_lsn: None,
            finish_lsn: None,
            finished_at: None,
            permanent: false,
            full: name.delta_parent_wal_name().is_none(),
            delta_parent: None,
            restorable: false,
            main: false,
            role: None,
            reasons: Vec::new(),
            bytes: b.files.iter().map(|f| f.1).sum(),
        };
        match &b.sentinel {
            None => {
                v.status = if b.last_write() > ts_minus(now, policy.incomplete_grace) {
                    BackupStatus::InProgress
                } else {
                    BackupStatus::Incomplete
                };
            }
            Some((Doc::Invalid(e), _)) => v.status = BackupStatus::Broken(format!("sentinel unreadable: {e}")),
            Some((Doc::Parsed(si), received)) => {
                fill_from_sentinel(&mut v, si, *received, perm_meta, name, s);
            }
        }
        views.insert(name.clone(), v);
    }
    // Delta parents must exist and be complete (iterate to a fixpoint along chains).
    loop {
        let mut changed = false;
        let names: Vec<BackupName> = views.keys().cloned().collect();
        for n in names {
            let Some(parent) = views.get(&n).and_then(|v| v.delta_parent.clone()) else { continue };
            if views.get(&n).map(|v| v.status != BackupStatus::Complete).unwrap_or(true) {
                continue;
            }
            let parent_ok = BackupName::parse(&parent)
                .ok()
                .and_then(|p| views.get(&p))
                .is_some_and(|p| p.status == BackupStatus::Complete);
            if !parent_ok {
                if let Some(v) = views.get_mut(&n) {
                    v.status = BackupStatus::Broken(format!("delta parent {parent} is missing or not complete"));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for v in views.values_mut() {
        if let BackupStatus::Broken(why) = &v.status {
            h.alerts.push(format!("backup {} is broken: {why}", v.name));
        }
        if v.status != BackupStatus::Complete {
            continue;
        }
        let (Some(start), Some(finish)) = (v.start_lsn, v.finish_lsn) else { continue };
        let own = (s.segment_of(start.prev()).get(), s.segment_of(finish.prev()).get());
        let all_present = (own.0..=own.1).all(|n| cx.has(v.timeline, n));
        let pending = v.finished_at.is_some_and(|t| t > ts_minus(now, policy.archive_lag_grace));
        v.restorable = all_present || pending;
        if !all_present && !pending {
            h.alerts.push(format!("backup {} is not restorable: WAL of its own range is missing", v.name));
        }
        v.main = h.fallback || lineage.iter().any(|e| e.tl == v.timeline && e.end.is_none_or(|end| finish <= end));
    }

    // --- kept set -------------------------------------------------------------------
    let mut kept: BTreeMap<BackupName, (Role, Vec<String>)> = BTreeMap::new();
    let add = |kept: &mut BTreeMap<BackupName, (Role, Vec<String>)>, n: &BackupName, role: Role, why: String| {
        let e = kept.entry(n.clone()).or_insert((role, Vec::new()));
        if role < e.0 {
            e.0 = role;
        }
        e.1.push(why);
    };
    let mut main_r: Vec<&BackupView> = views.values().filter(|v| v.restorable && v.main).collect();
    main_r.sort_by_key(|v| (v.finished_at, v.name.clone()));
    let name_of = |v: &BackupView| BackupName::parse(&v.name).ok();
    if policy.keep_permanent {
        for v in views.values().filter(|v| v.permanent && v.status == BackupStatus::Complete) {
            if let Some(n) = name_of(v) {
                add(&mut kept, &n, Role::Standalone, "permanent (backup-mark)".into());
            }
        }
    }
    let w0 = ts_minus(ts_minus(now, policy.recovery_window), policy.clock_skew);
    let anchor_idx = main_r.iter().rposition(|v| v.finished_at.is_some_and(|t| t <= w0));
    let start_idx = anchor_idx.unwrap_or(0);
    for (i, v) in main_r.iter().enumerate().skip(start_idx) {
        if let Some(n) = name_of(v) {
            let why = if Some(i) == anchor_idx {
                "recovery window anchor (newest backup finished before the window starts)".to_string()
            } else {
                "inside the recovery window".to_string()
            };
            add(&mut kept, &n, Role::Pitr, why);
        }
    }
    if policy.full_count > 0 {
        let fulls: Vec<&&BackupView> =
            main_r.iter().filter(|v| v.full).rev().take(policy.full_count as usize).collect();
        for f in fulls {
            if let Some(n) = name_of(f) {
                add(&mut kept, &n, Role::Pitr, format!("one of the {} newest full backups", policy.full_count));
                // Its deltas (any backup whose chain reaches it).
                for d in main_r.iter().filter(|d| !d.full) {
                    if chain_reaches(&views, &d.name, &f.name) {
                        if let Some(dn) = name_of(d) {
                            add(&mut kept, &dn, Role::Pitr, format!("delta of kept full backup {}", f.name));
                        }
                    }
                }
            }
        }
    }
    let mut kept_main = main_r.iter().filter(|v| name_of(v).is_some_and(|n| kept.contains_key(&n))).count();
    for v in main_r.iter().rev() {
        if kept_main >= policy.min_backups as usize {
            break;
        }
        if let Some(n) = name_of(v) {
            if !kept.contains_key(&n) {
                add(&mut kept, &n, Role::Pitr, format!("minimum of {} backups", policy.min_backups));
                kept_main += 1;
            }
        }
    }
    if let Some(newest) = main_r.last().and_then(|v| name_of(v)) {
        add(&mut kept, &newest, Role::Pitr, "newest restorable backup".into());
    }
    let grace = ts_minus(now, policy.branch_grace);
    for v in views.values().filter(|v| v.restorable && !v.main) {
        if v.finished_at.is_some_and(|t| t >= grace) {
            if let Some(n) = name_of(v) {
                add(&mut kept, &n, Role::Standalone, "backup on a side branch, inside the branch grace period".into());
            }
        }
    }
    // In-progress deltas protect their base's chain.
    let mut protected: HashMap<String, String> = HashMap::new();
    for v in views.values() {
        match &v.status {
            BackupStatus::InProgress => {
                protected.insert(v.name.clone(), "in progress (no stop sentinel yet)".into());
                if let Some(pw) =
                    BackupName::parse(&v.name).ok().and_then(|n| n.delta_parent_wal_name().map(str::to_owned))
                {
                    for base in views.keys().filter(|b| b.start_wal_name() == pw) {
                        add(&mut kept, base, Role::Ancestor, format!("base of the in-progress delta {}", v.name));
                    }
                }
            }
            BackupStatus::Broken(why) => {
                protected.insert(v.name.clone(), format!("broken ({why}); kept for an operator to inspect"));
            }
            _ => {}
        }
    }
    // Abandoned branches inside their grace period, and the newest backup that
    // can recover into each (kept before the closure so its chain is kept too).
    let mut branch_paths: Vec<(u32, u64, BackupName, Lsn, Vec<Entry>)> = Vec::new();
    let mut branch_required: Vec<(u32, u64)> = Vec::new();
    if !h.fallback {
        let mut branch_last: BTreeMap<u32, (Timestamp, u64)> = BTreeMap::new();
        for f in &snap.wal {
            if f.kind == WalKind::Label {
                continue;
            }
            let n = segno(f.log, f.seg);
            if f.kind == WalKind::Partial || !on_main(f.tl, n) {
                let e = branch_last.entry(f.tl).or_insert((f.received, n));
                if f.received > e.0 {
                    e.0 = f.received;
                }
                e.1 = e.1.min(n);
            }
        }
        for (tl, (last, first_n)) in branch_last {
            if last < grace {
                continue;
            }
            branch_required.push((tl, first_n));
            if let Some(bl) = lineage_of(tl, snap) {
                let fork = s.start_of(SegmentNo::new(first_n));
                let base = views
                    .values()
                    .filter(|v| v.restorable && v.finish_lsn.is_some_and(|f| f <= fork))
                    .filter(|v| bl.iter().any(|e| e.tl == v.timeline))
                    .max_by_key(|v| (v.finished_at, v.name.clone()));
                if let Some(b) = base {
                    if let (Ok(bn), Some(start)) = (BackupName::parse(&b.name), b.start_lsn) {
                        add(
                            &mut kept,
                            &bn,
                            Role::Standalone,
                            format!("base for recovery into abandoned timeline {tl} (branch grace)"),
                        );
                        branch_paths.push((tl, first_n, bn, start, bl));
                    }
                }
            }
        }
    }
    // Closure over delta ancestors.
    loop {
        let mut added = Vec::new();
        for n in kept.keys() {
            if let Some(p) = views.get(n).and_then(|v| v.delta_parent.clone()).and_then(|p| BackupName::parse(&p).ok())
            {
                if !kept.contains_key(&p) {
                    added.push((p, n.clone()));
                }
            }
        }
        if added.is_empty() {
            break;
        }
        for (p, child) in added {
            add(&mut kept, &p, Role::Ancestor, format!("delta ancestor of kept backup {child}"));
        }
    }
    // Delta ancestors keep the role `Ancestor` (their own WAL only): restoring a
    // kept delta replays WAL from the delta's start, never from its base's.

    // --- required WAL -------------------------------------------------------------
    let mut required: Vec<SegRange> = Vec::new();
    let mut push = |tl: u32, from: u64, to: Option<u64>, reason: String| {
        required.push(SegRange { timeline: tl, from, to, reason });
    };
    for n in kept.keys() {
        let Some(v) = views.get(n) else { continue };
        if let (Some(a), Some(b)) = (v.start_lsn, v.finish_lsn) {
            push(
                v.timeline,
                s.segment_of(a.prev()).get(),
                Some(s.segment_of(b.prev()).get()),
                format!("WAL of kept backup {n}"),
            );
        }
    }
    let oldest_pitr = kept
        .iter()
        .filter(|(_, (r, _))| *r == Role::Pitr)
        .filter_map(|(n, _)| views.get(n))
        .filter(|v| v.main)
        .filter_map(|v| v.start_lsn.map(|l| (l, v.name.clone())))
        .min();
    let all_tls: BTreeSet<u32> = activity.keys().copied().collect();
    match (&oldest_pitr, h.fallback) {
        (Some((start, name)), false) => {
            for (tl, from, to) in path_ranges(&lineage, *start, s) {
                push(tl, from, to, format!("continuous WAL from the oldest PITR backup {name} to the head"));
            }
        }
        (Some((start, name)), true) => {
            for tl in &all_tls {
                push(
                    *tl,
                    s.segment_of(*start).get(),
                    None,
                    format!("lineage unknown: all WAL after the oldest PITR backup {name}"),
                );
            }
        }
        (None, _) => {
            for tl in &all_tls {
                push(*tl, 0, None, "no restorable backup yet: all WAL is kept".into());
            }
        }
    }
    for v in views.values().filter(|v| v.status == BackupStatus::InProgress) {
        if let Ok(n) = BackupName::parse(&v.name) {
            if let Ok((_, log, seg)) = split24(n.start_wal_name()) {
                for tl in &all_tls {
                    push(*tl, segno(log, seg), None, format!("WAL after the start of in-progress backup {}", v.name));
                }
            }
        }
    }
    for (tl, first_n) in &branch_required {
        push(*tl, *first_n, None, format!("abandoned branch of timeline {tl}, inside the branch grace period"));
    }
    for (tl, _, bn, start, bl) in &branch_paths {
        for (t2, from, to) in path_ranges(bl, *start, s) {
            push(t2, from, to, format!("path into abandoned timeline {tl} from {bn}"));
        }
    }
    let is_required = |tl: u32, n: u64| required.iter().find(|r| r.contains(tl, n));

    // --- deletable units ------------------------------------------------------------
    let young = ts_minus(now, policy.min_object_age);
    let mut units: Vec<Unit> = Vec::new();
    let frozen = !h.frozen.is_empty();
    // Backups: dependents (newer, deltas) first.
    let mut order: Vec<&BackupView> = views.values().collect();
    order.sort_by_key(|v| std::cmp::Reverse((v.start_lsn, v.name.clone())));
    for v in order {
        let Ok(n) = BackupName::parse(&v.name) else { continue };
        let files = match snap.backups.get(&n) {
            Some(b) => b,
            None => continue,
        };
        if kept.contains_key(&n) || protected.contains_key(&v.name) {
            continue;
        }
        if files.files.iter().any(|f| f.2 > young) {
            protected.insert(v.name.clone(), "has objects younger than the minimum object age".into());
            continue;
        }
        let reason = match v.status {
            BackupStatus::Incomplete => {
                "incomplete backup (no stop sentinel) past the incomplete grace period".to_string()
            }
            _ => "not needed by the retention policy".to_string(),
        };
        units.push(Unit::Backup {
            name: v.name.clone(),
            paths: files.files.iter().map(|f| f.0.clone()).collect(),
            reason,
        });
    }
    // WAL, oldest first.
    let mut wal: Vec<&super::catalog::WalFile> = snap.wal.iter().collect();
    wal.sort_by_key(|f| (segno(f.log, f.seg), f.tl, f.kind));
    for f in wal {
        if f.received > young {
            continue;
        }
        let n = segno(f.log, f.seg);
        if is_required(f.tl, n).is_some() {
            continue;
        }
        let reason = match f.kind {
            WalKind::Partial => "partial segment of an abandoned timeline past the branch grace period",
            WalKind::Label => "backup label of an unneeded segment",
            WalKind::Segment if on_main(f.tl, n) => "before the oldest backup kept for point-in-time recovery",
            WalKind::Segment => "abandoned branch past the branch grace period",
        };
        units.push(Unit::Wal { path: f.path.clone(), reason: reason.into() });
    }
    for o in &snap.other {
        if o.received > young {
            continue;
        }
        let name = o.path.trim_start_matches(super::names::WAL_DIR);
        let group: Option<(u32, u64, u64)> = match o.class {
            WalObject::WalMeta if name.len() == 29 => {
                split24(&name[..24]).ok().map(|(t, l, sg)| (t, segno(l, sg), segno(l, sg)))
            }
            WalObject::WalMeta => name.get(..23).and_then(|p| bulk_group(p, k)),
            WalObject::WalDelta => split24(&name[..24]).ok().map(|(t, l, sg)| (t, segno(l, sg), segno(l, sg) + 15)),
            _ => None,
        };
        let Some((tl, a, b)) = group else { continue };
        if (a..=b).any(|n| is_required(tl, n).is_some()) {
            continue;
        }
        units.push(Unit::Wal { path: o.path.clone(), reason: "WAL metadata of unneeded segments".into() });
    }

    // --- invariants before anything may be deleted ------------------------------------
    let gone: HashSet<&str> = units.iter().flat_map(|u| u.paths()).collect();
    for n in kept.keys() {
        let Some(v) = views.get(n) else { continue };
        if !v.restorable {
            continue;
        }
        if let (Some(a), Some(b)) = (v.start_lsn, v.finish_lsn) {
            for seg in s.segment_of(a.prev()).get()..=s.segment_of(b.prev()).get() {
                let name = s.file_name(TimelineId::new(v.timeline), SegmentNo::new(seg));
                if snap
                    .wal
                    .iter()
                    .any(|f| f.kind == WalKind::Segment && f.path.contains(&name) && gone.contains(f.path.as_str()))
                {
                    h.frozen.push(format!("invariant violated: kept backup {n} would lose segment {name}"));
                }
            }
        }
        if snap.backups.get(n).is_some_and(|b| b.files.iter().any(|f| gone.contains(f.0.as_str()))) {
            h.frozen.push(format!("invariant violated: kept backup {n} would lose objects"));
        }
    }
    let kept_main_after = main_r.iter().filter(|v| name_of(v).is_some_and(|n| kept.contains_key(&n))).count();
    if kept_main_after < (policy.min_backups as usize).min(main_r.len()) {
        h.frozen.push("invariant violated: fewer than the minimum number of backups would remain".into());
    }
    if units.iter().flat_map(|u| u.paths()).any(|p| matches!(classify(p), WalObject::History { .. })) {
        h.frozen.push("invariant violated: a history file would be deleted".into());
    }

    // --- report ---------------------------------------------------------------------
    h.report = build_report(&cx, &views, &kept, &lineage, oldest_pitr.as_ref().map(|(l, _)| *l), h.fallback);
    for g in h.report.gaps.iter().filter(|g| !g.pending) {
        h.alerts.push(format!(
            "lost WAL: {} segment(s) {}..{} are missing on timeline {}",
            g.segments, g.first, g.last, g.timeline
        ));
    }

    // --- finish -------------------------------------------------------------------------
    for v in views.values_mut() {
        if let Ok(n) = BackupName::parse(&v.name) {
            if let Some((role, why)) = kept.get(&n) {
                v.role = Some(*role);
                v.reasons = why.clone();
            } else if let Some(p) = protected.get(&v.name) {
                v.reasons = vec![p.clone()];
            }
        }
    }
    h.backups = views.into_values().collect();
    h.backups.sort_by_key(|v| (v.start_lsn, v.name.clone()));
    h.required = required;
    if frozen || !h.frozen.is_empty() {
        units.clear();
    }
    h.deletable_paths = units.iter().flat_map(|u| u.paths()).map(str::to_owned).collect();
    h.protected_backups = protected;
    for (n, (r, why)) in &kept {
        h.protected_backups.entry(n.to_string()).or_insert_with(|| format!("kept ({r:?}): {}", why.join("; ")));
    }
    h.deletable = units;
    h
}

/// Helper to look into a history doc without cloning.
enum HistoryFileRef<'a> {
    Parsed(&'a super::history::History),
    Invalid,
}

impl<'a> HistoryFileRef<'a> {
    fn of(d: &'a Doc<super::history::History>) -> Self {
        match d {
            Doc::Parsed(h) => HistoryFileRef::Parsed(h),
            Doc::Invalid(_) => HistoryFileRef::Invalid,
        }
    }
}

fn h_fallback(lineage: &[Entry]) -> bool {
    lineage.is_empty()
}

/// A bulk WAL metadata name (the first 23 hex digits of 16 segments) as
/// (timeline, first segment, last segment) for a segment size.
fn bulk_group(prefix23: &str, k: u64) -> Option<(u32, u64, u64)> {
    let (tl, log, first) = split24(&format!("{prefix23}0")).ok()?;
    let (_, _, last) = split24(&format!("{prefix23}F")).ok()?;
    Some((tl, log as u64 * k + first as u64, log as u64 * k + last as u64))
}

fn chain_reaches(views: &BTreeMap<BackupName, BackupView>, from: &str, target: &str) -> bool {
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

fn fill_from_sentinel(
    v: &mut BackupView,
    si: &SentinelInfo,
    received: Timestamp,
    perm_meta: Option<bool>,
    name: &BackupName,
    s: SegmentSize,
) {
    let client = si.finish_time.as_deref().and_then(parse_client_time);
    v.finished_at = Some(client.map_or(received, |c| c.max(received)));
    v.permanent = perm_meta.unwrap_or(si.is_permanent);
    if si.wal_e {
        // WAL-E sentinels carry no LSNs: start from the name, finish unknown.
        if let Ok((_, log, seg)) = split24(name.start_wal_name()) {
            let n = log as u64 * s.per_xlogid() + seg as u64;
            v.start_lsn = Some(s.start_of(SegmentNo::new(n)));
            v.finish_lsn = Some(s.start_of(SegmentNo::new(n + 1)));
        }
        v.status = BackupStatus::Complete;
        v.reasons.push("WAL-E backup: stop LSN unknown, its start segment is used".into());
        return;
    }
    v.start_lsn = si.start_lsn;
    v.finish_lsn = si.finish_lsn;
    v.delta_parent = si.delta_from.clone();
    if v.delta_parent.is_none() && name.delta_parent_wal_name().is_some() {
        v.status = BackupStatus::Broken("delta backup name but no DeltaFrom in its sentinel".into());
        return;
    }
    if si.finish_lsn.is_none() {
        v.status = BackupStatus::Broken("sentinel has no FinishLSN".into());
        return;
    }
    v.full = v.delta_parent.is_none();
    v.status = BackupStatus::Complete;
}

fn build_report(
    cx: &Ctx<'_>,
    views: &BTreeMap<BackupName, BackupView>,
    kept: &BTreeMap<BackupName, (Role, Vec<String>)>,
    lineage: &[Entry],
    oldest_pitr: Option<Lsn>,
    fallback: bool,
) -> Report {
    let s = cx.s;
    let mut r = Report::default();
    // Last segment received.
    let last =
        cx.snap.wal.iter().filter(|f| f.kind == WalKind::Segment).max_by_key(|f| (f.received, f.tl, f.log, f.seg));
    if let Some(f) = last {
        let n = f.log as u64 * s.per_xlogid() + f.seg as u64;
        r.last_segment =
            Some((format!("{:08X}{:08X}{:08X}", f.tl, f.log, f.seg), f.received, s.start_of(SegmentNo::new(n + 1))));
    }
    r.wal_segments = cx.snap.wal.iter().filter(|f| f.kind == WalKind::Segment).count() as u64;
    r.bytes = cx.snap.wal.iter().map(|f| f.size).sum::<u64>()
        + cx.snap.backups.values().flat_map(|b| b.files.iter().map(|f| f.1)).sum::<u64>()
        + cx.snap.other.iter().map(|o| o.size).sum::<u64>()
        + cx.snap.histories.values().map(|_| 0).sum::<u64>();
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
    let complete = views.values().filter(|v| v.status == BackupStatus::Complete);
    r.newest_backup =
        complete.clone().filter_map(|v| v.finished_at.map(|t| (v.name.clone(), t))).max_by_key(|(_, t)| *t);
    r.oldest_backup = views
        .iter()
        .filter(|(n, _)| kept.contains_key(*n))
        .filter_map(|(_, v)| v.finished_at.map(|t| (v.name.clone(), t)))
        .min_by_key(|(_, t)| *t);
    if fallback || lineage.is_empty() {
        return r;
    }
    // Gaps on the main path after the oldest PITR start (or the first segment).
    let lag = ts_minus(cx.now, cx.policy.archive_lag_grace);
    let from = oldest_pitr.unwrap_or(Lsn::new(0));
    for (tl, lo, hi) in path_ranges(lineage, from, s) {
        let Some(segs) = cx.present.get(&tl) else { continue };
        let first_present = segs.range(lo..).next().map(|(n, _)| *n);
        let Some(start) = (if oldest_pitr.is_some() { Some(lo) } else { first_present }) else { continue };
        let end = match hi {
            Some(h) => h,
            None => match segs.keys().next_back() {
                Some(m) => *m,
                None => continue,
            },
        };
        let mut n = start;
        while n <= end {
            if segs.contains_key(&n) {
                n += 1;
                continue;
            }
            let gap_start = n;
            while n <= end && !segs.contains_key(&n) {
                n += 1;
            }
            let after = segs.range(n..).next().map(|(_, t)| *t);
            let pending = after.is_none_or(|t| t > lag);
            r.gaps.push(Gap {
                timeline: tl,
                first: s.file_name(TimelineId::new(tl), SegmentNo::new(gap_start)),
                last: s.file_name(TimelineId::new(tl), SegmentNo::new(n - 1)),
                segments: n - gap_start,
                pending,
            });
        }
    }
    // Recoverable windows from each kept PITR backup.
    let mut windows: Vec<Window> = Vec::new();
    let mut pitr: Vec<&BackupView> = views
        .iter()
        .filter(|(n, v)| kept.get(*n).is_some_and(|(role, _)| *role == Role::Pitr) && v.main && v.restorable)
        .map(|(_, v)| v)
        .collect();
    pitr.sort_by_key(|v| v.start_lsn);
    for v in pitr {
        let (Some(start), Some(fin)) = (v.start_lsn, v.finished_at) else { continue };
        let mut reach: Option<(Lsn, Timestamp)> = None;
        'walk: for (tl, lo, hi) in path_ranges(lineage, start, s) {
            let Some(segs) = cx.present.get(&tl) else { break };
            let mut n = lo;
            loop {
                if hi.is_some_and(|h| n > h) {
                    break;
                }
                match segs.get(&n) {
                    Some(t) => {
                        reach = Some((s.start_of(SegmentNo::new(n + 1)), *t));
                        n += 1;
                    }
                    None => break 'walk,
                }
            }
        }
        if let Some((lsn, t)) = reach {
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
    r.windows = merged;
    r
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
        if let (Some(size), Ok((tl, log, seg))) = (self.segment_size, split24(name)) {
            let k = 0x1_0000_0000u64 / size;
            let n = log as u64 * k + seg as u64;
            if let Some(r) = self.required.iter().find(|r| r.contains(tl, n)) {
                return format!("{path}: {}", r.reason);
            }
        }
        format!("{path}: written after the last retention evaluation or younger than the minimum object age")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_times() {
        assert_eq!(parse_client_time("1970-01-01T00:00:01.5Z"), Some(Timestamp::from_millis(1500)));
        assert_eq!(parse_client_time("2025-01-02T03:04:05.123456Z"), Some(Timestamp::from_millis(1_735_787_045_123)));
        assert_eq!(parse_client_time("2025-01-02T03:04:05Z"), Some(Timestamp::from_millis(1_735_787_045_000)));
        assert_eq!(parse_client_time("2025-01-02 03:04:05Z"), None);
        assert_eq!(parse_client_time("garbage"), None);
    }

    #[test]
    fn path_switch_segment_belongs_to_the_child() {
        let s = SegmentSize::DEFAULT;
        let seg = |n: u64| s.start_of(SegmentNo::new(n));
        // TL1 until 0/5000028 (mid segment 5), TL2 after.
        let lin = vec![
            Entry { tl: 1, begin: Lsn::new(0), end: Some(Lsn::new(0x5000028)) },
            Entry { tl: 2, begin: Lsn::new(0x5000028), end: None },
        ];
        assert_eq!(path_ranges(&lin, seg(2), s), vec![(1, 2, Some(4)), (2, 5, None)]);
        // Switch exactly on a boundary: TL1 up to 4, TL2 from 5.
        let lin2 =
            vec![Entry { tl: 1, begin: Lsn::new(0), end: Some(seg(5)) }, Entry { tl: 2, begin: seg(5), end: None }];
        assert_eq!(path_ranges(&lin2, seg(2), s), vec![(1, 2, Some(4)), (2, 5, None)]);
        // Starting after the switch: TL1 is not needed.
        assert_eq!(path_ranges(&lin, seg(7), s), vec![(2, 7, None)]);
    }
}
