//! Retention and protection settings of a repository (or of a whole bucket).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::SegmentSize;

/// How client deletes in a bucket are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeleteProtection {
    /// Plain S3 semantics: any delete is carried out.
    Allow,
    /// Deletes of anything the retention horizon requires (backups it keeps,
    /// the WAL they need, history files, objects younger than `min_object_age`)
    /// are refused with `AccessDenied`; everything else is deleted. Default.
    ProtectRequired,
    /// Every delete inside a WAL-G repository is refused.
    DenyAll,
}

impl DeleteProtection {
    /// The configuration name (`allow`, `protect-required`, `deny-all`).
    pub fn name(self) -> &'static str {
        match self {
            DeleteProtection::Allow => "allow",
            DeleteProtection::ProtectRequired => "protect-required",
            DeleteProtection::DenyAll => "deny-all",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(DeleteProtection::Allow),
            "protect-required" => Some(DeleteProtection::ProtectRequired),
            "deny-all" => Some(DeleteProtection::DenyAll),
            _ => None,
        }
    }
}

/// The retention policy of a repository. Defaults are WAL-G/Barman-like and
/// conservative (see the README's retention section).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Every instant in `[now - window, now]` stays recoverable. Default 7 days.
    pub recovery_window: Duration,
    /// Keep the N newest full backups and their deltas (0 = off). Default 0.
    pub full_count: u32,
    /// Never fewer than this many restorable backups; the newest is always kept. Default 2.
    pub min_backups: u32,
    /// Backups marked permanent (`wal-g backup-mark`) are kept with their WAL. Default true.
    pub keep_permanent: bool,
    /// Abandoned timeline branches and `.partial` files stay this long after the
    /// branch's last write. Default 7 days.
    pub branch_grace: Duration,
    /// A backup without a stop sentinel is "in progress" (protecting its objects
    /// and all WAL after its start) this long after its last write. Default 72 hours.
    pub incomplete_grace: Duration,
    /// Nothing younger than this is ever deleted by retention or by a protected
    /// client delete. Default 24 hours.
    pub min_object_age: Duration,
    /// The newest missing segments count as "pending" (still uploading), not
    /// "lost", this long. Default 1 hour.
    pub archive_lag_grace: Duration,
    /// A branch still written to within this is active; two active branches are
    /// a split brain and freeze retention. Default 1 hour.
    pub branch_quiet_period: Duration,
    /// Slack for client clocks, added to the window. Default 15 minutes.
    pub clock_skew: Duration,
    /// WAL segment size, if it cannot be inferred (`None` = infer from backups).
    pub segment_size: Option<SegmentSize>,
    /// Dwell time between an object becoming deletable and the retention worker
    /// deleting it; the horizon is recomputed at execution and only objects that
    /// stayed deletable the whole time go. Default 24 hours.
    pub gc_delay: Duration,
    /// Whether the retention worker deletes what the horizon releases. Off by
    /// default: the horizon then only protects (client deletes of required
    /// objects are refused) and reports.
    pub enforce: bool,
    /// Client delete handling.
    pub protection: DeleteProtection,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            recovery_window: Duration::from_secs(7 * DAY),
            full_count: 0,
            min_backups: 2,
            keep_permanent: true,
            branch_grace: Duration::from_secs(7 * DAY),
            incomplete_grace: Duration::from_secs(3 * DAY),
            min_object_age: Duration::from_secs(DAY),
            archive_lag_grace: Duration::from_secs(3600),
            branch_quiet_period: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(900),
            segment_size: None,
            gc_delay: Duration::from_secs(DAY),
            enforce: false,
            protection: DeleteProtection::ProtectRequired,
        }
    }
}
