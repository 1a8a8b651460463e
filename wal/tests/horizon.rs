//! The retention horizon against scenarios laid out as WAL-G writes them
//! (numbers refer to Part C of the retention reference), and a seeded property
//! test of its invariants.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use wal::testkit::{RepoBuilder, DAY, HOUR};
use wal::{compute, Decision, Horizon, RetentionPolicy, Role};

fn policy() -> RetentionPolicy {
    RetentionPolicy { min_object_age: Duration::ZERO, ..RetentionPolicy::default() }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn kept(h: &Horizon) -> Vec<(String, Role)> {
    h.backups.iter().filter_map(|b| b.role.map(|r| (b.name.clone(), r))).collect()
}

fn deletable(h: &Horizon) -> HashSet<String> {
    h.deletable.iter().flat_map(|u| u.paths()).map(str::to_owned).collect()
}

fn seg_path(r: &RepoBuilder, tl: u32, n: u64) -> String {
    format!("wal_005/{}.lz4", r.name(tl, n))
}

/// Daily fulls over 11 days, 10 segments a day; backup of day k starts at segment 10*(10-k)+2.
fn daily(r: &mut RepoBuilder, days: u64) -> Vec<String> {
    let last = 10 * days + 9;
    r.segments(1, 0, last, HOUR / 2, DAY / 10);
    (0..=days)
        .rev()
        .map(|k| r.backup(1, 10 * (days - k) + 2, 1, (k as i64 * DAY - HOUR).max(HOUR / 4), None, false))
        .collect()
}

#[test]
fn c1_daily_fulls_window_anchor() {
    let mut r = RepoBuilder::new(now());
    let names = daily(&mut r, 10); // names[0] = F(-10) … names[10] = F(0)
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(h.frozen.is_empty(), "{:?}", h.frozen);
    let k: Vec<String> = kept(&h).into_iter().map(|(n, _)| n).collect();
    // Anchor F(-8) (finished 7d23h ago, before now-7d-15m) and everything newer.
    assert_eq!(k, names[2..].to_vec());
    let d = deletable(&h);
    for old in &names[..2] {
        assert!(d.contains(&format!("basebackups_005/{old}_backup_stop_sentinel.json")), "{old}");
    }
    // WAL before F(-8)'s start (segment 22) goes; from seg(start-1) = 22 on stays.
    assert!(d.contains(&seg_path(&r, 1, 21)));
    assert!(!d.contains(&seg_path(&r, 1, 22)));
    assert!(!d.contains(&seg_path(&r, 1, 109)));
    assert_eq!(h.decide(&seg_path(&r, 1, 22)), h.decide(&seg_path(&r, 1, 22)));
    assert!(matches!(h.decide(&seg_path(&r, 1, 22)), Decision::Deny(_)));
    assert_eq!(h.decide(&seg_path(&r, 1, 3)), Decision::Allow);
    // Deletion order: sentinel first inside each backup unit.
    for u in &h.deletable {
        if let wal::Unit::Backup { paths, .. } = u {
            assert!(paths[0].ends_with("_backup_stop_sentinel.json"));
        }
    }
    assert!(h.report.gaps.is_empty());
    assert_eq!(h.report.windows.len(), 1);
}

#[test]
fn c2_c3_failover_mid_segment_and_on_boundary() {
    for boundary in [false, true] {
        let mut r = RepoBuilder::new(now());
        // TL1 segments 0..=49 (S = 50 is the switch segment), written until 5 days ago.
        r.segments(1, 0, 49, 5 * DAY, HOUR);
        let switch = r.s.start_of(wal::SegmentNo::new(50)).as_u64() + if boundary { 0 } else { 0x4000 };
        r.partial(1, 50, 5 * DAY);
        r.history(2, &[(1, switch)], 5 * DAY);
        r.segments(2, 50, 120, HOUR, HOUR);
        let f1 = r.backup(1, 5, 1, 9 * DAY, None, false);
        let f2 = r.backup(2, 100, 1, 2 * DAY, None, false);
        let p = RetentionPolicy { full_count: 2, recovery_window: Duration::from_secs(86_400), ..policy() };
        let h = compute(&r.snap, &p, r.now(), None);
        assert!(h.frozen.is_empty(), "{:?}", h.frozen);
        assert_eq!(h.head, Some(wal::TimelineId::new(2)));
        let k: Vec<String> = kept(&h).into_iter().map(|(n, _)| n).collect();
        assert_eq!(k, vec![f1.clone(), f2.clone()]);
        let d = deletable(&h);
        // TL1 required up to S-1 from F1's start; TL2 from S.
        for n in 5..=49 {
            assert!(!d.contains(&seg_path(&r, 1, n)), "TL1 seg {n} (boundary={boundary})");
        }
        assert!(d.contains(&seg_path(&r, 1, 3)));
        for n in 50..=120 {
            assert!(!d.contains(&seg_path(&r, 2, n)), "TL2 seg {n}");
        }
        // The .partial is inside the branch grace (5 days < 7).
        assert!(!d.contains(&format!("wal_005/{}.partial.lz4", r.name(1, 50))));
        assert!(matches!(h.decide("wal_005/00000002.history.lz4"), Decision::Deny(_)));
        // After the branch grace the partial may go; the history file never.
        let later = r.now() + Duration::from_secs(3 * 86_400);
        let h = compute(&r.snap, &p, later, None);
        assert!(deletable(&h).contains(&format!("wal_005/{}.partial.lz4", r.name(1, 50))), "{:?}", h.frozen);
        assert!(!deletable(&h).iter().any(|p| p.contains("history")));
    }
}

#[test]
fn c4_chain_of_three_timelines() {
    let mut r = RepoBuilder::new(now());
    let s1 = r.s.start_of(wal::SegmentNo::new(30)).as_u64() + 0x100;
    let s2 = r.s.start_of(wal::SegmentNo::new(60)).as_u64() + 0x200;
    r.segments(1, 0, 35, 8 * DAY, HOUR); // TL1 continues to 35 (zombie tail past S1 = 30)
    r.history(2, &[(1, s1)], 8 * DAY);
    r.segments(2, 30, 65, 4 * DAY, HOUR); // TL2 past S2 = 60 (abandoned tail)
    r.history(3, &[(1, s1), (2, s2)], 4 * DAY);
    r.segments(3, 60, 90, HOUR, HOUR);
    let b = r.backup(1, 10, 1, 20 * DAY, None, false);
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(h.frozen.is_empty(), "{:?}", h.frozen);
    assert_eq!(h.head, Some(wal::TimelineId::new(3)));
    assert_eq!(kept(&h), vec![(b, Role::Pitr)]);
    let req = |tl: u32, n: u64| h.required.iter().any(|x| x.contains(wal::TimelineId::new(tl), wal::SegmentNo::new(n)));
    for n in 10..=29 {
        assert!(req(1, n), "TL1 {n}");
    }
    for n in 30..=59 {
        assert!(req(2, n), "TL2 {n}");
    }
    for n in 60..=90 {
        assert!(req(3, n), "TL3 {n}");
    }
    // Abandoned tails are kept during the branch grace (TL2's tail is 4 days old,
    // TL1's 8 days: TL1's tail may go).
    let d = deletable(&h);
    assert!(!d.contains(&seg_path(&r, 2, 62)));
    assert!(d.contains(&seg_path(&r, 1, 33)), "TL1 tail past its switch, beyond grace");
    assert!(!d.iter().any(|p| p.contains("history")));
}

#[test]
fn c7_delta_chain_keeps_its_full_as_ancestor() {
    let mut r = RepoBuilder::new(now());
    r.segments(1, 0, 210, HOUR, DAY / 10);
    let f = r.backup(1, 2, 1, 20 * DAY, None, false);
    let d1 = r.backup(1, 72, 1, 13 * DAY, Some(&f), false);
    let d2 = r.backup(1, 142, 1, 6 * DAY, Some(&d1), false);
    let d3 = r.backup(1, 192, 1, DAY, Some(&d2), false);
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(h.frozen.is_empty(), "{:?}", h.frozen);
    assert_eq!(
        kept(&h),
        vec![(f.clone(), Role::Ancestor), (d1.clone(), Role::Pitr), (d2, Role::Pitr), (d3, Role::Pitr)]
    );
    let d = deletable(&h);
    // F's own WAL (2..=3) stays, WAL between F and D1 (4..71) goes, D1 onwards stays.
    assert!(!d.contains(&seg_path(&r, 1, 2)) && !d.contains(&seg_path(&r, 1, 3)));
    assert!(d.contains(&seg_path(&r, 1, 40)));
    assert!(!d.contains(&seg_path(&r, 1, 72)));
    // A client deleting the whole chain (`wal-g delete target`) is refused.
    assert!(matches!(h.decide(&format!("basebackups_005/{d1}_backup_stop_sentinel.json")), Decision::Deny(_)));
    assert!(matches!(h.decide(&format!("basebackups_005/{f}/tar_partitions/part_001.tar.lz4")), Decision::Deny(_)));
}

#[test]
fn c9_permanent_backup_keeps_only_its_wal() {
    let mut r = RepoBuilder::new(now());
    r.segments(1, 0, 500, HOUR, HOUR);
    let p = r.backup(1, 10, 2, 400 * DAY, None, true);
    let a = r.backup(1, 300, 1, 9 * DAY, None, false);
    let b = r.backup(1, 450, 1, DAY, None, false);
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert_eq!(kept(&h), vec![(p, Role::Standalone), (a, Role::Pitr), (b, Role::Pitr)]);
    let d = deletable(&h);
    for n in 10..=12 {
        assert!(!d.contains(&seg_path(&r, 1, n)), "permanent backup's WAL {n}");
    }
    assert!(d.contains(&seg_path(&r, 1, 13)) && d.contains(&seg_path(&r, 1, 299)));
    assert!(!d.contains(&seg_path(&r, 1, 300)));
}

#[test]
fn c13_c14_gaps_lost_and_pending() {
    let mut r = RepoBuilder::new(now());
    let names = daily(&mut r, 10);
    r.remove_segment(1, 60); // between F(-6) (starts 42) and F(-3) (starts 72), long ago
    r.remove_segment(1, 108); // near the head, the next one arrived minutes ago
    let h = compute(&r.snap, &policy(), r.now(), None);
    let lost: Vec<_> = h.report.gaps.iter().filter(|g| !g.pending).collect();
    let pending: Vec<_> = h.report.gaps.iter().filter(|g| g.pending).collect();
    assert_eq!(lost.len(), 1, "{:?}", h.report.gaps);
    assert_eq!(lost[0].first, r.name(1, 60));
    assert_eq!(pending.len(), 1);
    assert!(h.alerts.iter().any(|a| a.contains("lost WAL")));
    // Kept set unchanged; nothing after the gap is deletable.
    let k: Vec<String> = kept(&h).into_iter().map(|(n, _)| n).collect();
    assert_eq!(k, names[2..].to_vec());
    let d = deletable(&h);
    assert!(!(61..=109).any(|n| d.contains(&seg_path(&r, 1, n))));
    // The recoverable window is split by the lost gap.
    assert!(h.report.windows.len() >= 2, "{:?}", h.report.windows);
}

#[test]
fn c15_c16_unfinished_backups() {
    let mut r = RepoBuilder::new(now());
    r.segments(1, 0, 300, HOUR, HOUR);
    let base_old = r.backup(1, 10, 1, 60 * DAY, None, false);
    let _anchor = r.backup(1, 50, 1, 30 * DAY, None, false);
    let _recent = r.backup(1, 250, 1, 2 * DAY, None, false);
    let _newest = r.backup(1, 280, 1, DAY, None, false);
    // An in-progress delta on top of the old full, and an in-progress full at 100.
    let running = r.unfinished_backup(1, 290, 2 * HOUR, Some(&base_old));
    let running_full = r.unfinished_backup(1, 100, 2 * HOUR, None);
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(h.frozen.is_empty(), "{:?}", h.frozen);
    let d = deletable(&h);
    assert!(!d.iter().any(|p| p.contains(&running) || p.contains(&running_full)));
    // WAL from the in-progress full's start is protected, and the delta's base too.
    assert!(!d.contains(&seg_path(&r, 1, 100)));
    assert!(kept(&h).iter().any(|(n, role)| n == &base_old && *role == Role::Ancestor), "{:?}", kept(&h));
    assert!(d.contains(&seg_path(&r, 1, 30)));
    assert!(!d.contains(&seg_path(&r, 1, 10)), "the base's own WAL");
    // Four days later the unfinished ones are incomplete and go as units.
    let later = r.now() + Duration::from_secs(4 * 86_400);
    let h = compute(&r.snap, &policy(), later, None);
    let d = deletable(&h);
    assert!(d.contains(&format!("basebackups_005/{running_full}/tar_partitions/part_001.tar.lz4")), "{:?}", h.frozen);
}

#[test]
fn c39_c40_no_backups_or_stale_backups() {
    let mut r = RepoBuilder::new(now());
    r.segments(1, 0, 50, 40 * DAY, HOUR);
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(deletable(&h).is_empty(), "WAL without any backup is all kept");
    let a = r.backup(1, 5, 1, 35 * DAY, None, false);
    let b = r.backup(1, 40, 1, 30 * DAY, None, false);
    let h = compute(&r.snap, &policy(), r.now(), None);
    // Backups stopped 30 days ago: both kept (minimum 2, newest always), WAL from the older.
    assert_eq!(kept(&h).len(), 2, "{:?}", kept(&h));
    assert!(kept(&h).iter().any(|(n, _)| *n == a) && kept(&h).iter().any(|(n, _)| *n == b));
    let d = deletable(&h);
    assert!(d.contains(&seg_path(&r, 1, 3)));
    assert!(!d.contains(&seg_path(&r, 1, 5)));
}

#[test]
fn fails_closed() {
    // Unparseable sentinel.
    let mut r = RepoBuilder::new(now());
    daily(&mut r, 10);
    let name = r.snap.backups.keys().next().cloned().expect("a backup");
    let when = r.at(20 * DAY);
    if let Some(b) = r.snap.backups.get_mut(&name) {
        b.sentinel = Some((wal::Doc::Invalid("bad".into()), when));
    }
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(!h.frozen.is_empty() && h.deletable.is_empty());
    assert!(matches!(h.decide("wal_005/000000010000000000000001.lz4"), Decision::Deny(_)));

    // Split brain: TL1 keeps receiving past the fork while TL2 is active.
    let mut r = RepoBuilder::new(now());
    r.segments(1, 0, 60, 10 * 60_000, 60_000);
    let sw = r.s.start_of(wal::SegmentNo::new(50)).as_u64();
    r.history(2, &[(1, sw)], HOUR);
    r.segments(2, 50, 55, 60_000, 60_000);
    r.backup(1, 5, 1, 20 * DAY, None, false);
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(h.frozen.iter().any(|f| f.contains("split brain")), "{:?}", h.frozen);

    // Stray timeline: TL5 (child of 3) higher than the active TL4.
    let mut r = RepoBuilder::new(now());
    r.segments(1, 0, 40, 20 * DAY, HOUR);
    r.history(2, &[(1, r.s.start_of(wal::SegmentNo::new(41)).as_u64())], 20 * DAY);
    r.history(5, &[(1, r.s.start_of(wal::SegmentNo::new(20)).as_u64())], 10 * DAY);
    r.segments(2, 41, 80, 60_000, 60_000);
    r.backup(1, 5, 1, 20 * DAY, None, false);
    let h = compute(&r.snap, &policy(), r.now(), None);
    assert!(h.frozen.iter().any(|f| f.contains("stray timeline")), "{:?}", h.frozen);

    // Clock went backwards since the last pass.
    let mut r = RepoBuilder::new(now());
    daily(&mut r, 10);
    let h =
        compute(&r.snap, &policy(), r.now(), Some(wal::Timestamp::from_system(r.now() + Duration::from_secs(3600))));
    assert!(h.frozen.iter().any(|f| f.contains("clock")), "{:?}", h.frozen);
}

#[test]
fn young_objects_are_kept() {
    let mut r = RepoBuilder::new(now());
    daily(&mut r, 10);
    let h = compute(&r.snap, &RetentionPolicy::default(), r.now(), None);
    // min_object_age 24h: F(0) and the last day's WAL are never deletable, and
    // paths unknown to the snapshot (written after it) are refused.
    assert!(!deletable(&h).iter().any(|p| p.contains(&r.name(1, 109))));
    assert!(matches!(h.decide("wal_005/00000001000000FF000000FF.lz4"), Decision::Deny(_)));
    assert_eq!(h.decide("wal_005/README.txt"), Decision::Allow, "foreign keys are plain S3");
}

// ------------------------------------------------------------ property test

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the generator made: the property test's model knows the repository
/// from how it was built, not from anything `compute` says.
struct Made {
    /// Timeline 2 takes over from this segment on (the switch segment is the child's).
    fork: Option<u64>,
    backups: Vec<MadeBackup>,
}

struct MadeBackup {
    name: String,
    tl: u32,
    /// Segment of the start LSN; the backup's own WAL is `start..=start + 1`.
    start: u64,
    finished_ms: i64,
    parent: Option<String>,
}

impl Made {
    fn timeline_of(&self, n: u64) -> u32 {
        match self.fork {
            Some(f) if n >= f => 2,
            _ => 1,
        }
    }

    /// A backup can be restored if its sentinel and every file are still
    /// there, and so is every backup of its delta chain.
    fn usable(&self, r: &RepoBuilder, name: &str) -> bool {
        let Some(b) = self.backups.iter().find(|b| b.name == name) else { return false };
        let Some(objs) = wal::BackupName::parse(name).ok().and_then(|n| r.snap.backups.get(&n)) else { return false };
        objs.sentinel.is_some() && objs.files.len() == 3 && b.parent.as_deref().is_none_or(|p| self.usable(r, p))
    }

    fn segment(r: &RepoBuilder, tl: u32, n: u64) -> Option<i64> {
        r.snap
            .wal
            .iter()
            .find(|f| {
                f.kind == wal::WalKind::Segment && f.tl == tl && (f.log as u64) * r.s.per_xlogid() + f.seg as u64 == n
            })
            .map(|f| f.received.as_millis())
    }

    /// Whether the instant `ago` ms before now can be restored to: some usable
    /// backup finished before it, and WAL is continuous on the main line from
    /// that backup's start up to a segment received after it.
    fn recoverable(&self, r: &RepoBuilder, ago: i64) -> bool {
        let t = r.now - ago;
        self.backups.iter().filter(|b| b.finished_ms <= t && self.usable(r, &b.name)).any(|b| {
            let mut n = b.start;
            // A backup is on the main line by construction (none crosses the fork).
            debug_assert_eq!(self.timeline_of(b.start), b.tl);
            while let Some(received) = Self::segment(r, self.timeline_of(n), n) {
                if received >= t {
                    return true;
                }
                n += 1;
            }
            false
        })
    }
}

#[test]
fn property_horizon_invariants_hold_on_random_repositories() {
    let seed: u64 = std::env::var("WALSTORE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    println!("property test seed {seed} (replay with WALSTORE_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    for case in 0..150 {
        let mut r = RepoBuilder::new(now());
        let days = 5 + rng.below(25);
        let per_day = 4 + rng.below(8);
        let total = days * per_day;
        // Optional failover at a random point.
        let fork = if rng.below(3) == 0 { Some(per_day * (1 + rng.below(days - 1))) } else { None };
        let seg_ago = |n: u64| ((total - n) as i64) * DAY / per_day as i64 + 60_000;
        for n in 0..total {
            let tl = match fork {
                Some(f) if n >= f => 2,
                _ => 1,
            };
            if rng.below(60) == 0 {
                continue; // a gap
            }
            r.segment(tl, n, seg_ago(n));
        }
        if let Some(f) = fork {
            let sw = r.s.start_of(wal::SegmentNo::new(f)).as_u64() + rng.below(2) * 0x800;
            r.history(2, &[(1, sw)], seg_ago(f));
            r.partial(1, f, seg_ago(f));
        }
        let mut made = Made { fork, backups: Vec::new() };
        let mut last_full: Option<String> = None;
        let mut prev: Option<String> = None;
        for d in 0..days {
            if rng.below(4) == 0 {
                continue;
            }
            let start = d * per_day + 1;
            if start + 1 >= total {
                break;
            }
            let tl = match fork {
                Some(f) if start >= f => 2,
                _ => 1,
            };
            if fork.is_some_and(|f| start < f && start + 1 >= f) {
                continue;
            }
            let delta = prev.clone().filter(|_| rng.below(3) == 0 && last_full.is_some());
            let perm = rng.below(15) == 0;
            let ago = seg_ago(start + 1) - 1000;
            let name = r.backup(tl, start, 1, ago, delta.as_deref(), perm);
            made.backups.push(MadeBackup {
                name: name.clone(),
                tl: tl as u32,
                start,
                finished_ms: r.now - ago,
                parent: delta.clone(),
            });
            if delta.is_none() {
                last_full = Some(name.clone());
            }
            prev = Some(name);
        }
        let mut p = policy();
        p.recovery_window = Duration::from_secs(86_400 * (1 + rng.below(6)));
        p.min_backups = 1 + rng.below(3) as u32;
        p.full_count = rng.below(3) as u32;
        let h = compute(&r.snap, &p, r.now(), None);
        if h.is_frozen() {
            assert!(h.deletable.is_empty());
            continue;
        }
        let samples: Vec<i64> = (0..20).map(|i| (p.recovery_window.as_millis() as i64) * i / 20 + 2 * HOUR).collect();
        let before: Vec<bool> = samples.iter().map(|&ago| made.recoverable(&r, ago)).collect();
        let histories_before = r.snap.histories.len();
        let kept_before: Vec<String> = h.backups.iter().filter(|b| b.role.is_some()).map(|b| b.name.clone()).collect();
        let restorable_main_before = h.backups.iter().filter(|b| b.restorable && b.main).count();
        let paths: Vec<String> = deletable(&h).into_iter().collect();
        r.apply_deletions(paths.iter().map(String::as_str));
        let h2 = compute(&r.snap, &p, r.now(), None);
        assert!(!h2.is_frozen(), "seed {seed} case {case}: {:?}", h2.frozen);
        // I1: every kept backup is still there and restorable.
        for n in &kept_before {
            let b = h2
                .backups
                .iter()
                .find(|b| &b.name == n)
                .unwrap_or_else(|| panic!("seed {seed} case {case}: kept backup {n} vanished"));
            let was = h.backups.iter().find(|b| &b.name == n).map(|b| b.restorable).unwrap_or(false);
            assert!(!was || b.restorable, "seed {seed} case {case}: kept backup {n} is no longer restorable");
        }
        // I2: every sampled instant in the window that was recoverable still is.
        let after: Vec<bool> = samples.iter().map(|&ago| made.recoverable(&r, ago)).collect();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert!(!b || *a, "seed {seed} case {case}: instant {} ago lost recoverability", samples[i]);
        }
        // I3: history files never shrink.
        assert_eq!(r.snap.histories.len(), histories_before, "seed {seed} case {case}");
        // I4: at least min_backups restorable main backups remain (or all there were).
        let remaining = h2.backups.iter().filter(|b| b.restorable && b.main).count();
        assert!(remaining >= (p.min_backups as usize).min(restorable_main_before), "seed {seed} case {case}");
        // Idempotent: a second pass deletes nothing more that the first kept.
        for u in &h2.deletable {
            for path in u.paths() {
                if let Some(b) = kept_before.iter().find(|n| path.contains(n.as_str())) {
                    panic!("seed {seed} case {case}: second pass would delete {path} of kept backup {b}");
                }
            }
        }
    }
}
