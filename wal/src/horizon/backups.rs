//! Phase 3: every backup's status (in progress, incomplete, complete,
//! broken), its LSNs and finish time from the stop sentinel, its delta
//! chain, whether its own WAL is present (restorable) and whether it lies on
//! the main line.

use std::collections::BTreeMap;

use crate::backup::SentinelInfo;
use crate::catalog::{Doc, RepoSnapshot};
use crate::names::{split24, BackupName, SegmentNo, SegmentSize};
use crate::policy::RetentionPolicy;
use crate::time::Timestamp;

use super::sanity::{segment_no, Present};
use super::timelines::Timelines;
use super::types::{BackupStatus, BackupView, Findings};

/// The backups by name, as phase 3 sees them.
pub(crate) type Views = BTreeMap<BackupName, BackupView>;

pub(super) fn classify(
    snap: &RepoSnapshot,
    s: SegmentSize,
    now: Timestamp,
    policy: &RetentionPolicy,
    present: &Present,
    tls: &Timelines,
    f: &mut Findings,
) -> Views {
    let mut views: Views =
        snap.backups.iter().map(|(name, b)| (name.clone(), view_of(name, b, s, now, policy))).collect();
    break_incomplete_chains(&mut views);
    for v in views.values_mut() {
        if let BackupStatus::Broken(why) = &v.status {
            f.alert(format!("backup {} is broken: {why}", v.name));
        }
        if v.status != BackupStatus::Complete {
            continue;
        }
        let (Some((first, last)), Some(finish)) = (v.own_segments(s), v.finish_lsn) else { continue };
        let all_present = (first.get()..=last.get()).all(|n| present.has(v.timeline, SegmentNo::new(n)));
        let pending = v.finished_at.is_some_and(|t| t > now.minus(policy.archive_lag_grace));
        v.restorable = all_present || pending;
        if !all_present && !pending {
            f.alert(format!("backup {} is not restorable: WAL of its own range is missing", v.name));
        }
        v.main = tls.fallback
            || tls.lineage.entries().iter().any(|e| e.tl == v.timeline && e.end.is_none_or(|end| finish <= end));
    }
    views
}

/// One backup from its objects and documents.
fn view_of(
    name: &BackupName,
    b: &crate::catalog::BackupObjects,
    s: SegmentSize,
    now: Timestamp,
    policy: &RetentionPolicy,
) -> BackupView {
    let mut v = BackupView {
        name: name.to_string(),
        status: BackupStatus::Incomplete,
        timeline: name.timeline(),
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
    let permanent_by_metadata = match &b.metadata {
        Some(Doc::Parsed(m)) => Some(m.is_permanent),
        _ => None,
    };
    match &b.sentinel {
        None => {
            v.status = if b.last_write() > now.minus(policy.incomplete_grace) {
                BackupStatus::InProgress
            } else {
                BackupStatus::Incomplete
            };
        }
        Some((Doc::Invalid(e), _)) => v.status = BackupStatus::Broken(format!("sentinel unreadable: {e}")),
        Some((Doc::Parsed(si), received)) => fill_from_sentinel(&mut v, si, *received, permanent_by_metadata, name, s),
    }
    v
}

/// A complete delta whose parent is missing or not complete is broken; along
/// a chain, until nothing changes.
fn break_incomplete_chains(views: &mut Views) {
    loop {
        let mut broken = Vec::new();
        for (n, v) in views.iter() {
            let Some(parent) = &v.delta_parent else { continue };
            if v.status != BackupStatus::Complete {
                continue;
            }
            let parent_ok = BackupName::parse(parent)
                .ok()
                .and_then(|p| views.get(&p))
                .is_some_and(|p| p.status == BackupStatus::Complete);
            if !parent_ok {
                broken.push((n.clone(), format!("delta parent {parent} is missing or not complete")));
            }
        }
        if broken.is_empty() {
            return;
        }
        for (n, why) in broken {
            if let Some(v) = views.get_mut(&n) {
                v.status = BackupStatus::Broken(why);
            }
        }
    }
}

fn fill_from_sentinel(
    v: &mut BackupView,
    si: &SentinelInfo,
    received: Timestamp,
    permanent_by_metadata: Option<bool>,
    name: &BackupName,
    s: SegmentSize,
) {
    let client = si.finish_time.as_deref().and_then(parse_client_time);
    v.finished_at = Some(client.map_or(received, |c| c.max(received)));
    v.permanent = permanent_by_metadata.unwrap_or(si.is_permanent);
    if si.wal_e {
        // WAL-E sentinels carry no LSNs: start from the name, finish unknown.
        if let Ok((_, log, seg)) = split24(name.start_wal_name()) {
            let n = segment_no(s, log, seg);
            v.start_lsn = Some(s.start_of(n));
            v.finish_lsn = Some(s.start_of(n.next()));
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

/// Parses WAL-G's `%Y-%m-%dT%H:%M:%S.%fZ` times (client clock).
pub(crate) fn parse_client_time(s: &str) -> Option<Timestamp> {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::testkit::{RepoBuilder, DAY, HOUR};

    #[test]
    fn client_times() {
        assert_eq!(parse_client_time("1970-01-01T00:00:01.5Z"), Some(Timestamp::from_millis(1500)));
        assert_eq!(parse_client_time("2025-01-02T03:04:05.123456Z"), Some(Timestamp::from_millis(1_735_787_045_123)));
        assert_eq!(parse_client_time("2025-01-02T03:04:05Z"), Some(Timestamp::from_millis(1_735_787_045_000)));
        assert_eq!(parse_client_time("2025-01-02 03:04:05Z"), None);
        assert_eq!(parse_client_time("garbage"), None);
    }

    fn classify_all(r: &RepoBuilder) -> (Views, Findings) {
        let s = SegmentSize::DEFAULT;
        let now = Timestamp::from_millis(r.now);
        let policy = RetentionPolicy::default();
        let mut f = Findings::default();
        let present = Present::index(&r.snap, s, &mut f);
        let tls = Timelines::resolve(&r.snap, s, now, &policy, &mut f);
        (classify(&r.snap, s, now, &policy, &present, &tls, &mut f), f)
    }

    #[test]
    fn statuses_and_restorability() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 30, DAY, HOUR);
        let full = r.backup(1, 2, 2, 3 * DAY, None, false);
        let delta = r.backup(1, 10, 2, 2 * DAY, Some(&full), false);
        let lost = r.backup(1, 40, 2, 2 * DAY, None, false); // no WAL for it
        let busy = r.unfinished_backup(1, 28, HOUR, None);
        let (views, f) = classify_all(&r);
        let get = |n: &str| &views[&BackupName::parse(n).expect("name")];
        assert_eq!(get(&full).status, BackupStatus::Complete);
        assert!(get(&full).restorable && get(&full).main && get(&full).full);
        assert!(get(&delta).restorable && !get(&delta).full);
        assert_eq!(get(&delta).delta_parent.as_deref(), Some(full.as_str()));
        assert!(!get(&lost).restorable);
        assert!(f.alerts.iter().any(|a| a.contains(&lost) && a.contains("not restorable")), "{f:?}");
        assert_eq!(get(&busy).status, BackupStatus::InProgress);
    }

    #[test]
    fn a_delta_without_its_parent_is_broken() {
        let mut r = RepoBuilder::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        r.segments(1, 1, 30, DAY, HOUR);
        let full = r.backup(1, 2, 2, 3 * DAY, None, false);
        let d1 = r.backup(1, 10, 2, 2 * DAY, Some(&full), false);
        let d2 = r.backup(1, 20, 2, DAY + HOUR, Some(&d1), false);
        r.snap.backups.remove(&BackupName::parse(&full).expect("name"));
        let (views, f) = classify_all(&r);
        for n in [&d1, &d2] {
            let v = &views[&BackupName::parse(n).expect("name")];
            assert!(matches!(&v.status, BackupStatus::Broken(why) if why.contains("missing or not complete")), "{v:?}");
        }
        assert_eq!(f.alerts.iter().filter(|a| a.contains("is broken")).count(), 2, "{f:?}");
    }
}
