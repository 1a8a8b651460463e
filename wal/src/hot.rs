//! What a tiering policy keeps on local disk whatever its age: the *hot set* of a
//! WAL-G repository.
//!
//! A restore almost always starts from one of the newest backups and replays the
//! WAL after it, so those must be fast: the newest `keep_newest` restorable backups
//! (with the delta ancestors they need), every WAL file from the start of the oldest
//! of them onwards (on every timeline: a later timeline branches after it), and every
//! timeline history file (tiny, and every restore reads them). Backups that are
//! still being written stay local too, and so do every backup's stop sentinel and
//! `metadata.json` (every evaluation of the repository reads them). When the evaluation cannot say what is
//! restorable (no restorable backup, or one without a start LSN), everything in the
//! repository is hot: tiering moves bytes off the box only when it is sure the
//! newest restore does not depend on them.

use std::collections::HashSet;

use crate::horizon::{BackupStatus, Horizon};
use crate::names::{classify, SegmentNo, SegmentSize, WalObject};

/// The objects of one repository that stay local.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotSet {
    /// Keep everything (see the module docs for when).
    everything: bool,
    /// Backups kept local, by name.
    backups: HashSet<String>,
    /// WAL from this segment number on is kept local.
    from: SegmentNo,
    segment_size: SegmentSize,
}

impl HotSet {
    /// The hot set of the repository `h` describes, keeping the newest
    /// `keep_newest` (at least one) restorable backups local.
    pub fn of(h: &Horizon, keep_newest: u32) -> Self {
        let everything = Self {
            everything: true,
            backups: HashSet::new(),
            from: SegmentNo::new(0),
            segment_size: SegmentSize::DEFAULT,
        };
        let Some(s) = h.segment_size.and_then(|b| SegmentSize::new(b).ok()) else {
            return everything;
        };
        let mut restorable: Vec<_> =
            h.backups.iter().filter(|b| b.restorable && b.status == BackupStatus::Complete).collect();
        // On the head's lineage when there are such: a backup of an abandoned branch is
        // not what the next restore starts from.
        if restorable.iter().any(|b| b.main) {
            restorable.retain(|b| b.main);
        }
        restorable.sort_by_key(|b| (b.finished_at, b.start_lsn));
        let newest: Vec<_> = restorable.iter().rev().take(keep_newest.max(1) as usize).collect();
        if newest.is_empty() {
            return everything;
        }
        let mut backups = HashSet::new();
        let mut from: Option<SegmentNo> = None;
        for b in newest {
            let Some((first, _)) = b.own_segments(s) else {
                return everything;
            };
            from = Some(from.map_or(first, |f| f.min(first)));
            // The delta chain down to its full backup: a restore reads all of it.
            let mut cur = Some(b.name.clone());
            while let Some(name) = cur {
                if !backups.insert(name.clone()) {
                    break;
                }
                cur = h.backups.iter().find(|v| v.name == name).and_then(|v| v.delta_parent.clone());
            }
        }
        // Backups still being written (no sentinel yet) belong to the future newest.
        for b in &h.backups {
            if matches!(b.status, BackupStatus::InProgress | BackupStatus::Incomplete) {
                backups.insert(b.name.clone());
            }
        }
        Self { everything: false, backups, from: from.unwrap_or(SegmentNo::new(0)), segment_size: s }
    }

    /// Whether the object at `path` (relative to the repository) stays local.
    /// Objects that are not part of WAL-G's layout are never hot: their age decides.
    pub fn is_hot(&self, path: &str) -> bool {
        if self.everything {
            return true;
        }
        let class = classify(path);
        // Every evaluation reads these: they stay local, so a target that is down never
        // changes what the store believes is restorable.
        if matches!(class, WalObject::Sentinel(_) | WalObject::BackupMeta(_)) {
            return true;
        }
        if let Some(b) = class.backup() {
            return self.backups.contains(b.as_str());
        }
        match class {
            WalObject::History { .. } => true,
            WalObject::Segment { name, .. } | WalObject::Partial { name, .. } | WalObject::BackupLabel { name, .. } => {
                self.segment_is_hot(&name)
            }
            WalObject::WalMeta | WalObject::WalDelta => {
                let file = path.rsplit('/').next().unwrap_or(path);
                file.get(..24).is_none_or(|name| self.segment_is_hot(name))
            }
            _ => false,
        }
    }

    fn segment_is_hot(&self, name: &str) -> bool {
        // A name that does not parse is kept: better local than evicted on a guess.
        self.segment_size.parse_file_name(name).map_or(true, |(_, n)| n >= self.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RetentionPolicy;
    use crate::testkit::{RepoBuilder, DAY};

    fn horizon(r: &RepoBuilder) -> Horizon {
        crate::horizon::compute(&r.snap, &RetentionPolicy::default(), r.now(), None)
    }

    #[test]
    fn newest_backup_and_the_wal_after_it_stay_local() {
        let mut r = RepoBuilder::new(std::time::SystemTime::now());
        r.segments(1, 1, 40, 0, 1000);
        let old = r.backup(1, 2, 1, 3 * DAY, None, false);
        let mid = r.backup(1, 10, 1, 2 * DAY, None, false);
        let new = r.backup(1, 20, 1, DAY, None, false);
        r.history(2, &[(1, 0x1000)], 0);
        let hot = HotSet::of(&horizon(&r), 1);
        let part = |b: &str| format!("basebackups_005/{b}/tar_partitions/part_001.tar.lz4");
        assert!(hot.is_hot(&part(&new)));
        assert!(!hot.is_hot(&part(&mid)) && !hot.is_hot(&part(&old)));
        assert!(hot.is_hot(&format!("basebackups_005/{old}_backup_stop_sentinel.json")), "documents stay");
        assert!(hot.is_hot(&format!("wal_005/{}.lz4", r.name(1, 20))));
        assert!(!hot.is_hot(&format!("wal_005/{}.lz4", r.name(1, 19))));
        assert!(hot.is_hot(&format!("wal_005/{}.lz4", r.name(2, 30))));
        assert!(hot.is_hot("wal_005/00000002.history.lz4"));
        assert!(!hot.is_hot("something/else"));

        let two = HotSet::of(&horizon(&r), 2);
        assert!(two.is_hot(&part(&mid)) && !two.is_hot(&part(&old)));
        assert!(two.is_hot(&format!("wal_005/{}.lz4", r.name(1, 10))));
        assert!(!two.is_hot(&format!("wal_005/{}.lz4", r.name(1, 9))));
    }

    #[test]
    fn a_delta_keeps_its_chain_local() {
        let mut r = RepoBuilder::new(std::time::SystemTime::now());
        r.segments(1, 1, 40, 0, 1000);
        let full = r.backup(1, 2, 1, 3 * DAY, None, false);
        let other = r.backup(1, 10, 1, 2 * DAY, None, false);
        let delta = r.backup(1, 20, 1, DAY, Some(&full), false);
        let hot = HotSet::of(&horizon(&r), 1);
        let part = |b: &str| format!("basebackups_005/{b}/tar_partitions/part_001.tar.lz4");
        assert!(hot.is_hot(&part(&delta)) && hot.is_hot(&part(&full)));
        assert!(!hot.is_hot(&part(&other)));
    }

    #[test]
    fn without_a_restorable_backup_everything_stays() {
        let mut r = RepoBuilder::new(std::time::SystemTime::now());
        r.segments(1, 1, 10, 0, 1000);
        let b = r.unfinished_backup(1, 2, DAY, None);
        let hot = HotSet::of(&horizon(&r), 1);
        assert!(hot.is_hot(&format!("wal_005/{}.lz4", r.name(1, 1))));
        assert!(hot.is_hot(&format!("basebackups_005/{b}/tar_partitions/part_001.tar.lz4")));
    }
}
