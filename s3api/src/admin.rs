//! The admin API (`/_walstore/…`, JSON, SigV4 with an unscoped admin key):
//! repository status and restorable windows, retention plans and runs,
//! policies, access keys, GC, consistency check, audit log and quarantine.
//! `_walstore` can never be a bucket name, so these paths never shadow S3.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use storage::units::{format_duration, parse_duration, parse_size};
use storage::wal::{DeleteProtection, Keep, SegmentSize, StoredPolicy};
use storage::{BucketName, KeyRole, Store};

pub use crate::authz::normalize_prefix;
use crate::authz::Principal;
use crate::body::{read_small, BodySpec, ResponseBody, TimedBody};
use crate::error::{S3Code, S3Error, S3Result};
use crate::router::Query;
use crate::state::AppState;

/// Path prefix of the admin API.
pub const PREFIX: &str = "/_walstore/";

/// A policy as the admin API and CLI read and write it (durations as `7d`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// `allow`, `protect-required` or `deny-all`.
    pub protection: Option<String>,
    /// Recovery window.
    pub recovery_window: Option<String>,
    /// Number of full backups to keep (0 = off).
    pub full_count: Option<u32>,
    /// Minimum backups.
    pub min_backups: Option<u32>,
    /// Keep permanent backups.
    pub keep_permanent: Option<bool>,
    /// Branch grace.
    pub branch_grace: Option<String>,
    /// Incomplete-backup grace.
    pub incomplete_grace: Option<String>,
    /// Minimum object age.
    pub min_object_age: Option<String>,
    /// Archive lag grace.
    pub archive_lag_grace: Option<String>,
    /// Branch quiet period.
    pub branch_quiet_period: Option<String>,
    /// Clock skew allowance.
    pub clock_skew: Option<String>,
    /// Dwell time before the retention worker deletes what became deletable.
    pub gc_delay: Option<String>,
    /// WAL segment size (`16MiB`), or `auto`.
    pub segment_size: Option<String>,
    /// Whether the retention worker deletes what the horizon releases.
    pub enforce: Option<bool>,
    /// Split-brain guard on WAL uploads.
    pub split_brain_guard: Option<bool>,
    /// Identity check: `enforce`, `warn` or `off`.
    pub identity_check: Option<String>,
}

impl PolicyDoc {
    /// The full document of a policy.
    pub fn of(p: &StoredPolicy) -> Self {
        let d = |v: Duration| Some(format_duration(v));
        let r = &p.policy;
        PolicyDoc {
            protection: Some(r.protection.name().into()),
            recovery_window: d(r.recovery_window),
            full_count: Some(r.full_count),
            min_backups: Some(r.min_backups),
            keep_permanent: Some(r.keep_permanent),
            branch_grace: d(r.branch_grace),
            incomplete_grace: d(r.incomplete_grace),
            min_object_age: d(r.min_object_age),
            archive_lag_grace: d(r.archive_lag_grace),
            branch_quiet_period: d(r.branch_quiet_period),
            clock_skew: d(r.clock_skew),
            gc_delay: d(r.gc_delay),
            segment_size: Some(r.segment_size.map_or("auto".into(), |s| format!("{}MiB", s.bytes() >> 20))),
            enforce: Some(r.enforce),
            split_brain_guard: Some(p.split_brain_guard),
            identity_check: Some(p.identity_check.unwrap_or_default().name().into()),
        }
    }

    /// Applies the fields that are set onto `base`.
    pub fn apply(&self, mut base: StoredPolicy) -> Result<StoredPolicy, String> {
        let r = &mut base.policy;
        let dur = |name: &str, v: &Option<String>, into: &mut Duration| -> Result<(), String> {
            if let Some(v) = v {
                *into = parse_duration(v).map_err(|e| format!("{name}: {e}"))?;
            }
            Ok(())
        };
        if let Some(p) = &self.protection {
            r.protection = DeleteProtection::from_name(p)
                .ok_or_else(|| format!("protection: {p:?} is not allow, protect-required or deny-all"))?;
        }
        dur("recovery_window", &self.recovery_window, &mut r.recovery_window)?;
        dur("branch_grace", &self.branch_grace, &mut r.branch_grace)?;
        dur("incomplete_grace", &self.incomplete_grace, &mut r.incomplete_grace)?;
        dur("min_object_age", &self.min_object_age, &mut r.min_object_age)?;
        dur("archive_lag_grace", &self.archive_lag_grace, &mut r.archive_lag_grace)?;
        dur("branch_quiet_period", &self.branch_quiet_period, &mut r.branch_quiet_period)?;
        dur("clock_skew", &self.clock_skew, &mut r.clock_skew)?;
        dur("gc_delay", &self.gc_delay, &mut r.gc_delay)?;
        if let Some(n) = self.full_count {
            r.full_count = n;
        }
        if let Some(n) = self.min_backups {
            if n == 0 {
                return Err("min_backups: must be at least 1 (the newest backup is always kept)".into());
            }
            r.min_backups = n;
        }
        if let Some(b) = self.keep_permanent {
            r.keep_permanent = b;
        }
        if let Some(s) = &self.segment_size {
            r.segment_size = if s == "auto" {
                None
            } else {
                let bytes = parse_size(s).map_err(|e| format!("segment_size: {e}"))?;
                Some(SegmentSize::new(bytes).map_err(|e| format!("segment_size: {e}"))?)
            };
        }
        if let Some(b) = self.enforce {
            r.enforce = b;
        }
        if let Some(b) = self.split_brain_guard {
            base.split_brain_guard = b;
        }
        if let Some(m) = &self.identity_check {
            base.identity_check = Some(
                storage::wal::IdentityCheck::from_name(m)
                    .ok_or_else(|| format!("identity_check: {m:?} is not enforce, warn or off"))?,
            );
        }
        Ok(base)
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(serde_json::to_vec_pretty(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn bad(msg: impl Into<String>) -> S3Error {
    S3Error::new(S3Code::InvalidArgument, msg)
}

fn bucket_arg(q: &Query) -> S3Result<BucketName> {
    let b = q.get("bucket").ok_or_else(|| bad("the bucket parameter is required"))?;
    Ok(BucketName::parse(b)?)
}

/// Status of one repository as JSON.
pub fn repo_status(ev: &storage::wal::Evaluation) -> Value {
    let h = &ev.horizon;
    json!({
        "bucket": ev.bucket.as_str(),
        "prefix": ev.prefix,
        "policy": PolicyDoc::of(&ev.policy),
        "frozen": h.frozen,
        "alerts": h.alerts,
        "segment_size": h.segment_size,
        "head_timeline": h.head,
        "lineage": h.lineage.iter().map(|(tl, b, e)| json!({"timeline": tl, "begin": b.to_string(), "end": e.map(|e| e.to_string())})).collect::<Vec<_>>(),
        "fallback": h.fallback,
        "backups": h.backups,
        "required_wal": h.required,
        "deletable": { "units": h.deletable.len(), "objects": h.deletable.iter().map(|u| u.paths().len()).sum::<usize>() },
        "report": h.report,
    })
}

/// An identity as JSON. The system identifier is a string: it does not fit the 53 bits
/// of a JSON number that most tools (jq, JavaScript) keep exactly.
pub fn identity_json(i: &storage::wal::Identity) -> Value {
    json!({
        "system_identifier": i.system_identifier.to_string(),
        "pg_version": i.pg_major.map(storage::wal::major_name),
        "segment_size": i.segment_size.map(|b| format!("{}MiB", b >> 20)),
    })
}

/// What the identity check knows and saw of one repository (for `walstore status`).
pub fn repo_identity_json(
    store: &Store,
    bucket: &BucketName,
    prefix: &str,
    policy: &StoredPolicy,
) -> storage::Result<Value> {
    let rec = store.repo_identity(bucket, prefix)?;
    let stats = store.repo_identity_stats(bucket, prefix);
    let mut v = match &rec {
        Some(r) => identity_json(&r.identity),
        None => json!({ "system_identifier": null, "pg_version": null, "segment_size": null }),
    };
    v["check"] = json!(policy.identity_check.unwrap_or_default().name());
    v["learned_from"] = json!(rec.as_ref().map(|r| r.learned_from.clone()));
    v["learned_at"] = json!(rec.as_ref().map(|r| storage_time(r.learned_at)));
    v["since_start"] = json!({
        "verified": stats.verified,
        "opaque": stats.opaque,
        "conflicts": stats.conflicts,
        "last_conflict": stats.last_conflict.map(|(t, m)| json!({ "time": storage_time(t), "message": m })),
        "last_opaque": stats.last_opaque,
    });
    Ok(v)
}

/// One admin operation, independent of transport: the HTTP API parses requests
/// into this, and the CLI executes it directly on a stopped server's data dir.
#[derive(Debug, Clone)]
pub enum AdminRequest {
    /// Status of a bucket's repositories (or of one).
    Status {
        /// Bucket.
        bucket: BucketName,
        /// Repository prefix (`None` = all of the bucket).
        prefix: Option<String>,
    },
    /// What retention would delete now, and why.
    Plan {
        /// Bucket.
        bucket: BucketName,
        /// Repository prefix.
        prefix: Option<String>,
    },
    /// Delete what retention releases now.
    Run {
        /// Bucket.
        bucket: BucketName,
        /// Repository prefix.
        prefix: Option<String>,
    },
    /// Stored and effective policies of a bucket.
    PolicyGet {
        /// Bucket.
        bucket: BucketName,
    },
    /// Set (merge) a policy.
    PolicySet {
        /// Bucket.
        bucket: BucketName,
        /// Prefix (empty = the bucket).
        prefix: String,
        /// Fields to change.
        doc: Box<PolicyDoc>,
    },
    /// Remove a stored policy.
    PolicyRemove {
        /// Bucket.
        bucket: BucketName,
        /// Prefix.
        prefix: String,
    },
    /// List access keys (no secrets).
    KeysList,
    /// Create an access key.
    KeyCreate {
        /// Role.
        role: KeyRole,
        /// Scope `bucket[/prefix]`.
        scope: Option<String>,
        /// Free text.
        description: String,
    },
    /// Revoke an access key.
    KeyRevoke {
        /// Key id.
        id: String,
    },
    /// Run GC now.
    Gc,
    /// Consistency check.
    Check,
    /// Audit log.
    Audit {
        /// Newest records to return.
        limit: usize,
    },
    /// Forget a repository's identity (the next upload that carries one teaches it).
    IdentityReset {
        /// Bucket.
        bucket: BucketName,
        /// Repository prefix.
        prefix: String,
        /// Why (audited).
        reason: String,
    },
    /// Quarantined uploads.
    Quarantine,
    /// Resolve a quarantined conflict.
    QuarantineResolve {
        /// Record id.
        id: String,
        /// Which copy stays visible.
        keep: Keep,
    },
    /// Start a scrub in the background (if none runs).
    ScrubStart,
    /// Create a bucket with Object Lock (and so versioning) enabled.
    BucketCreateLocked {
        /// Name.
        bucket: BucketName,
    },
    /// Versioning and Object Lock configuration of a bucket, and its locked versions.
    LockShow {
        /// Bucket.
        bucket: BucketName,
    },
    /// Enable Object Lock on a versioned bucket and set its default retention.
    LockSet {
        /// Bucket.
        bucket: BucketName,
        /// Default retention (none: versions are locked only when they ask).
        default_retention: Option<(storage::LockMode, storage::LockPeriod)>,
    },
    /// The versions and delete markers under a prefix (at most 1000).
    Versions {
        /// Bucket.
        bucket: BucketName,
        /// Key prefix.
        prefix: String,
    },
    /// Create a read-only view of a bucket (or prefix) as it stood at an instant.
    AsofCreate {
        /// Bucket shown.
        bucket: BucketName,
        /// Key prefix shown (empty: all).
        prefix: String,
        /// The instant.
        at: storage::Timestamp,
        /// How long the view answers.
        ttl: std::time::Duration,
        /// Its name (default: generated).
        name: Option<BucketName>,
    },
    /// Every as-of view.
    AsofList,
    /// Remove an as-of view.
    AsofDrop {
        /// Its name.
        name: String,
    },
    /// Replication targets and their state (`name`: only that one).
    ReplicationStatus {
        /// One target.
        name: Option<String>,
    },
    /// Adds a replication target.
    ReplicationAdd(Box<ReplicationDoc>),
    /// Pauses (`true`) or resumes a target.
    ReplicationPause {
        /// Target.
        name: String,
        /// Pause or resume.
        paused: bool,
    },
    /// Removes a target and its journal.
    ReplicationRemove {
        /// Target.
        name: String,
    },
    /// Progress and last report of scrubs.
    ScrubStatus,
    /// Sets a tiering policy.
    TierSet(Box<TierDoc>),
    /// Tiering policies, local and remote bytes, counters.
    TierStatus,
    /// Removes a tiering policy (its evicted bytes are brought back).
    TierRemove {
        /// Bucket.
        bucket: BucketName,
        /// Prefix (empty: the whole bucket).
        prefix: String,
    },
}

/// A tiering policy as the admin API and the CLI give it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TierDoc {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (a repository's, or any); empty: the whole bucket.
    #[serde(default)]
    pub prefix: String,
    /// The replication target that holds the evicted bytes.
    pub target: String,
    /// Minimum age before eviction (`7d`, `0s`) [default: 7d].
    #[serde(default)]
    pub after: Option<String>,
    /// Restorable backups kept local per repository, with the WAL after them [default: 1].
    #[serde(default)]
    pub keep_newest_backups: Option<u32>,
    /// Reads bring evicted bytes back to local disk (within the server's `--tier-cache`).
    #[serde(default)]
    pub rehydrate_on_read: bool,
}

impl TierDoc {
    /// The policy the store keeps.
    pub fn policy(&self, now: storage::Timestamp) -> Result<storage::TierPolicy, String> {
        BucketName::parse(&self.bucket).map_err(|e| format!("bucket {:?}: {e}", self.bucket))?;
        let after = parse_duration(self.after.as_deref().unwrap_or("7d")).map_err(|e| format!("after: {e}"))?;
        let keep = self.keep_newest_backups.unwrap_or(1);
        if keep == 0 {
            return Err("keep-newest-backups: must be at least 1 (the newest restorable backup stays local)".into());
        }
        let prefix = if self.prefix.is_empty() { String::new() } else { normalize_prefix(&self.prefix) };
        Ok(storage::TierPolicy {
            bucket: self.bucket.clone(),
            prefix,
            target: self.target.clone(),
            after_ms: storage::tier::after_ms(after),
            keep_newest_backups: keep,
            rehydrate_on_read: self.rehydrate_on_read,
            created: now,
        })
    }
}

/// The repositories a target names: all of the bucket's, those under a prefix
/// (`spilo/c1/` holds `spilo/c1/wal/15/`), or the prefix itself when nothing
/// is stored under it yet.
fn repos_of(store: &Store, bucket: &BucketName, prefix: &Option<String>) -> storage::Result<Vec<String>> {
    let all = store.wal_repositories(bucket)?;
    match prefix {
        Some(p) => {
            let under: Vec<String> = all.into_iter().filter(|r| r.starts_with(p.as_str())).collect();
            Ok(if under.is_empty() { vec![p.clone()] } else { under })
        }
        None => Ok(all),
    }
}

/// Executes an admin operation (blocking). Returns whether it "succeeded"
/// (a failed check is reported with `false`) and the JSON answer.
pub fn execute(
    store: &Store,
    rep: &remote::Replicator,
    tier: &remote::TierState,
    actor: &str,
    req: AdminRequest,
) -> S3Result<(bool, Value)> {
    Ok(match req {
        AdminRequest::TierSet(doc) => {
            let p = doc.policy(store.now()).map_err(bad)?;
            store.put_tier_policy(&p, actor)?;
            tracing::info!(bucket = %p.bucket, prefix = %p.prefix, target_name = %p.target, actor, "tiering policy set");
            (true, remote::tier::policy_json(&p))
        }
        AdminRequest::TierStatus => (true, tier.to_json(store)?),
        AdminRequest::TierRemove { bucket, prefix } => {
            let p = store.remove_tier_policy(bucket.as_str(), &prefix, actor)?;
            tracing::info!(bucket = %p.bucket, prefix = %p.prefix, actor, "tiering policy removed; evicted bytes come back");
            (true, json!({ "removed": format!("{}/{}", p.bucket, p.prefix), "rehydrating": true }))
        }
        AdminRequest::ReplicationStatus { name: None } => {
            (true, json!({ "targets": rep.report(store).iter().map(|r| r.to_json()).collect::<Vec<_>>() }))
        }
        AdminRequest::ReplicationStatus { name: Some(name) } => {
            (true, rep.report_one(store, store.replication_target(&name)?).to_json())
        }
        AdminRequest::ReplicationAdd(doc) => {
            if store.replication_targets().iter().any(|t| t.name == doc.name) {
                return Err(bad(format!(
                    "a replication target named {:?} exists; remove it first (walstore replication remove {})",
                    doc.name, doc.name
                )));
            }
            let rec = doc.record(store.now(), false).map_err(bad)?;
            let spec = doc.spec.clone();
            // Checked now so that a typo shows at once; the target is added either way
            // (it may come up later), and the worker retries.
            let probe = remote::client::probe_blocking(&doc.name, &spec);
            let journaled = store.put_replication_target(rec, true)?;
            tracing::info!(target_name = %doc.name, actor, journaled, "replication target added");
            (
                true,
                json!({
                    "name": doc.name,
                    "journaled": journaled,
                    "probe": match probe { Ok(()) => "ok".to_owned(), Err(e) => format!("{}: {}", e.kind.name(), e.message) },
                }),
            )
        }
        AdminRequest::ReplicationPause { name, paused } => {
            let rec = store.set_replication_paused(&name, paused)?;
            tracing::info!(target_name = %name, actor, paused, "replication target {}", if paused { "paused" } else { "resumed" });
            (true, json!({ "name": rec.name, "paused": rec.paused }))
        }
        AdminRequest::ReplicationRemove { name } => {
            if store.replication_target(&name)?.from_config {
                return Err(bad(format!(
                    "replication target {name:?} is defined in the server's configuration file; remove it there"
                )));
            }
            store.remove_replication_target(&name)?;
            tracing::info!(target_name = %name, actor, "replication target removed");
            (true, json!({ "removed": name }))
        }
        AdminRequest::Status { bucket, prefix } => {
            let evs: Vec<_> = repos_of(store, &bucket, &prefix)?
                .iter()
                .map(|r| store.evaluation(&bucket, r))
                .collect::<Result<_, _>>()?;
            let quarantined = store.quarantine()?;
            let mut repos = Vec::with_capacity(evs.len());
            for e in &evs {
                let mut st = repo_status(e);
                // What the retention worker waits for: units a lock keeps, and views.
                let mut waits = 0;
                for u in &e.horizon.deletable {
                    let keys: Vec<String> = u.paths().iter().map(|p| format!("{}{p}", e.prefix)).collect();
                    waits += usize::from(store.lock_wait(&bucket, &keys)?.is_some());
                }
                st["retention_lock_waits"] = json!(waits);
                st["retention_paused_by_view"] = json!(store.retention_paused_by_view(&bucket, &e.prefix)?);
                st["identity"] = repo_identity_json(store, &bucket, &e.prefix, &e.policy)?;
                repos.push(st);
            }
            // The off-box copies of this bucket: where its backups survive this machine.
            let replication: Vec<Value> = rep
                .report(store)
                .iter()
                .filter(|r| r.rec.source_bucket.as_deref().is_none_or(|b| b == bucket.as_str()))
                .map(|r| r.to_json())
                .collect();
            (
                true,
                json!({
                    "bucket": bucket.as_str(),
                    "repositories": repos,
                    "refused_deletes": store.refused_deletes(),
                    "quarantined": quarantined.len(),
                    "replication": replication,
                }),
            )
        }
        AdminRequest::Plan { bucket, prefix } => {
            let mut plans = Vec::new();
            for r in repos_of(store, &bucket, &prefix)? {
                let e = store.evaluate(&bucket, &r)?;
                // Units a lock keeps for now: the worker waits for them (Object Lock).
                let mut waits = Vec::new();
                for u in &e.horizon.deletable {
                    let keys: Vec<String> = u.paths().iter().map(|p| format!("{r}{p}")).collect();
                    if let Some(why) = store.lock_wait(&bucket, &keys)? {
                        waits.push(json!({"unit": u.paths().first(), "waits_for": why}));
                    }
                }
                let paused = store.retention_paused_by_view(&bucket, &r)?;
                plans.push(json!({"prefix": e.prefix, "frozen": e.horizon.frozen, "enforce": e.policy.policy.enforce, "units": e.horizon.deletable, "lock_waits": waits, "paused_by_view": paused}));
            }
            (true, json!({ "bucket": bucket.as_str(), "plans": plans }))
        }
        AdminRequest::Run { bucket, prefix } => {
            let mut runs = Vec::new();
            for r in repos_of(store, &bucket, &prefix)? {
                let out = store.retention_run(&bucket, &r, &storage::Budget::unlimited())?;
                runs.push(json!({"prefix": r, "deleted_objects": out.objects, "deleted_bytes": out.bytes}));
            }
            (true, json!({ "bucket": bucket.as_str(), "runs": runs }))
        }
        AdminRequest::PolicyGet { bucket } => {
            let stored = store.policies(&bucket)?;
            let eff = store.policy_for(&bucket, "")?;
            let list: Vec<Value> =
                stored.iter().map(|(p, pol)| json!({"prefix": p, "policy": PolicyDoc::of(pol)})).collect();
            (true, json!({"bucket": bucket.as_str(), "policies": list, "bucket_effective": PolicyDoc::of(&eff)}))
        }
        AdminRequest::PolicySet { bucket, prefix, doc } => {
            let current = store.policy_for(&bucket, &prefix)?;
            let new = doc.apply(current).map_err(bad)?;
            store.set_policy(&bucket, &prefix, &new, actor)?;
            (true, json!({"bucket": bucket.as_str(), "prefix": prefix, "policy": PolicyDoc::of(&new)}))
        }
        AdminRequest::PolicyRemove { bucket, prefix } => {
            store.remove_policy(&bucket, &prefix, actor)?;
            (true, json!({"removed": true}))
        }
        AdminRequest::KeysList => {
            let keys = store.access_keys()?;
            let list: Vec<Value> = keys
                .iter()
                .map(|k| json!({"id": k.id, "role": k.role.name(), "scope": k.scope, "description": k.description, "created": storage_time(k.created)}))
                .collect();
            (true, json!({ "keys": list }))
        }
        AdminRequest::KeyCreate { role, scope, description } => {
            let k = store.create_key(role, scope, &description)?;
            (true, json!({"id": k.id, "secret": k.secret, "role": k.role.name(), "scope": k.scope}))
        }
        AdminRequest::KeyRevoke { id } => {
            store.revoke_key(&id)?;
            (true, json!({"revoked": id}))
        }
        AdminRequest::Gc => {
            let now = SystemTime::now();
            let total = store.gc_until_done(now, &storage::Budget::unlimited())?;
            let waiting = store.gc_queue_stats(now)?.pending;
            let orphans = store.sweep_orphans(now)?;
            let expired = store.expire_uploads(now)?;
            (
                true,
                json!({"reclaimed_blobs": total.reclaimed_blobs, "reclaimed_bytes": total.reclaimed_bytes, "waiting": waiting, "orphan_files": orphans, "expired_uploads": expired}),
            )
        }
        AdminRequest::Check => {
            let r = store.check()?;
            (
                r.problems.is_empty(),
                json!({"objects": r.objects, "versions": r.versions, "blobs": r.blobs, "orphan_files": r.orphan_files, "problems": r.problems}),
            )
        }
        AdminRequest::Audit { limit } => (true, json!({ "records": store.audit_log(limit)? })),
        AdminRequest::IdentityReset { bucket, prefix, reason } => {
            let old = store.reset_identity(&bucket, &prefix, actor, &reason)?;
            (
                true,
                json!({ "bucket": bucket.as_str(), "prefix": prefix, "forgot": identity_json(&old.identity), "learned_from": old.learned_from }),
            )
        }
        AdminRequest::Quarantine => (true, json!({ "quarantined": store.quarantine()? })),
        AdminRequest::QuarantineResolve { id, keep } => {
            (true, json!({ "resolved": store.resolve_quarantine(&id, keep, actor)? }))
        }
        AdminRequest::ScrubStart => {
            // A scrub in progress just continues; a request would start another after it.
            let running = store.scrub_state()?.cursor.is_some();
            let started = running || store.request_job("scrub");
            if !started {
                return Err(S3Error::new(
                    S3Code::ServiceUnavailable,
                    "no background scheduler runs in this process; run `walstore scrub --data-dir` on a stopped server",
                ));
            }
            (true, json!({"started": true, "already_running": running}))
        }
        AdminRequest::ScrubStatus => (true, scrub_status(store)?),
        AdminRequest::BucketCreateLocked { bucket } => {
            store.create_locked_bucket(&bucket)?;
            (true, json!({ "created": bucket.as_str(), "versioning": "Enabled", "object_lock": true }))
        }
        AdminRequest::LockShow { bucket } => {
            let b = store.bucket(&bucket)?;
            let u = store.usage()?;
            (
                true,
                json!({
                    "bucket": bucket.as_str(),
                    "versioning": b.versioning.status(),
                    "object_lock": b.object_lock.is_some(),
                    "default_retention": b.object_lock.and_then(|c| c.default_retention).map(|(m, p)| match p {
                        storage::LockPeriod::Days(d) => json!({"mode": m.name(), "days": d}),
                        storage::LockPeriod::Years(y) => json!({"mode": m.name(), "years": y}),
                    }),
                    "locked_versions_all_buckets": u.locked.0,
                    "locked_bytes_all_buckets": u.locked.1,
                }),
            )
        }
        AdminRequest::LockSet { bucket, default_retention } => {
            store.set_object_lock(&bucket, storage::ObjectLockConfig { default_retention })?;
            store.audit_admin(actor, "object-lock-set", bucket.as_str(), &format!("{default_retention:?}"))?;
            (true, json!({ "bucket": bucket.as_str(), "object_lock": true }))
        }
        AdminRequest::Versions { bucket, prefix } => {
            let q = storage::VersionQuery { prefix, max_keys: 1000, ..Default::default() };
            let page = store.list_versions(&bucket, &q)?;
            let rows: Vec<Value> = page
                .versions
                .iter()
                .map(|v| {
                    json!({
                        "key": v.key,
                        "version_id": v.version_id.to_string(),
                        "latest": v.is_latest,
                        "delete_marker": v.object.is_none(),
                        "size": v.object.as_ref().map(|o| o.0),
                        "last_modified": storage_time(v.last_modified),
                    })
                })
                .collect();
            (true, json!({ "bucket": bucket.as_str(), "versions": rows, "truncated": page.truncated }))
        }
        AdminRequest::AsofCreate { bucket, prefix, at, ttl, name } => {
            let v = store.create_view(&bucket, &prefix, at, ttl, name.as_ref())?;
            store.audit_admin(
                actor,
                "asof-create",
                bucket.as_str(),
                &format!("view {} at {}", v.name, storage_time(at)),
            )?;
            (true, view_json(&v))
        }
        AdminRequest::AsofList => (true, json!({ "views": store.views()?.iter().map(view_json).collect::<Vec<_>>() })),
        AdminRequest::AsofDrop { name } => {
            let dropped = store.drop_view(&name)?;
            (true, json!({ "dropped": name, "existed": dropped }))
        }
    })
}

/// Handles an admin request over HTTP.
pub async fn handle(
    state: &Arc<AppState>,
    who: &Principal,
    method: &Method,
    path: &str,
    q: &Query,
    body: TimedBody,
    spec: BodySpec,
) -> S3Result<Response<ResponseBody>> {
    if !who.is_admin() {
        return Err(S3Error::new(S3Code::AccessDenied, "the admin API needs an unscoped admin key"));
    }
    let route = path.trim_start_matches(PREFIX).trim_end_matches('/');
    let req = match (method.clone(), route) {
        (Method::GET, "status") => AdminRequest::Status { bucket: bucket_arg(q)?, prefix: prefix_arg(q) },
        (Method::GET, "retention/plan") => AdminRequest::Plan { bucket: bucket_arg(q)?, prefix: prefix_arg(q) },
        (Method::POST, "retention/run") => AdminRequest::Run { bucket: bucket_arg(q)?, prefix: prefix_arg(q) },
        (Method::GET, "policy") => AdminRequest::PolicyGet { bucket: bucket_arg(q)? },
        (Method::PUT, "policy") => {
            let bucket = bucket_arg(q)?;
            let raw = read_small(body, spec, 64 << 10).await?;
            let doc: PolicyDoc = serde_json::from_slice(&raw).map_err(|e| bad(format!("policy document: {e}")))?;
            AdminRequest::PolicySet { bucket, prefix: prefix_arg(q).unwrap_or_default(), doc: Box::new(doc) }
        }
        (Method::DELETE, "policy") => {
            AdminRequest::PolicyRemove { bucket: bucket_arg(q)?, prefix: prefix_arg(q).unwrap_or_default() }
        }
        (Method::GET, "keys") => AdminRequest::KeysList,
        (Method::POST, "keys") => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct NewKey {
                role: String,
                scope: Option<String>,
                #[serde(default)]
                description: String,
            }
            let raw = read_small(body, spec, 64 << 10).await?;
            let k: NewKey = serde_json::from_slice(&raw).map_err(|e| bad(format!("key request: {e}")))?;
            let role = KeyRole::from_name(&k.role)
                .ok_or_else(|| bad(format!("role {:?} is not admin, writer, wal-writer or reader", k.role)))?;
            AdminRequest::KeyCreate { role, scope: k.scope, description: k.description }
        }
        (Method::DELETE, "keys") => {
            AdminRequest::KeyRevoke { id: q.get("id").ok_or_else(|| bad("the id parameter is required"))?.to_owned() }
        }
        (Method::POST, "gc") => AdminRequest::Gc,
        (Method::GET, "check") => AdminRequest::Check,
        (Method::GET, "audit") => {
            AdminRequest::Audit { limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100) }
        }
        (Method::POST, "identity/reset") => AdminRequest::IdentityReset {
            bucket: bucket_arg(q)?,
            prefix: prefix_arg(q).ok_or_else(|| bad("the prefix parameter (the repository) is required"))?,
            reason: q
                .get("reason")
                .filter(|r| !r.trim().is_empty())
                .ok_or_else(|| bad("the reason parameter is required (it is audited)"))?
                .to_owned(),
        },
        (Method::GET, "quarantine") => AdminRequest::Quarantine,
        (Method::POST, "quarantine/resolve") => AdminRequest::QuarantineResolve {
            id: q.get("id").ok_or_else(|| bad("the id parameter is required"))?.to_owned(),
            keep: parse_keep(q.get("keep").unwrap_or(""))?,
        },
        (Method::GET, "scrub") => AdminRequest::ScrubStatus,
        (Method::POST, "buckets/locked") => AdminRequest::BucketCreateLocked { bucket: bucket_arg(q)? },
        (Method::GET, "lock") => AdminRequest::LockShow { bucket: bucket_arg(q)? },
        (Method::PUT, "lock") => {
            let mode = q.get("mode");
            let period = match (q.get("days"), q.get("years")) {
                (Some(d), None) => Some(storage::LockPeriod::Days(positive(d)?)),
                (None, Some(y)) => Some(storage::LockPeriod::Years(positive(y)?)),
                (None, None) => None,
                _ => return Err(bad("give days or years, not both")),
            };
            let default_retention = match (mode, period) {
                (Some(m), Some(p)) => {
                    Some((storage::LockMode::parse(m).ok_or_else(|| bad("mode must be GOVERNANCE or COMPLIANCE"))?, p))
                }
                (None, None) => None,
                _ => return Err(bad("a default retention needs both a mode and days or years")),
            };
            AdminRequest::LockSet { bucket: bucket_arg(q)?, default_retention }
        }
        (Method::GET, "versions") => {
            AdminRequest::Versions { bucket: bucket_arg(q)?, prefix: q.get("prefix").unwrap_or("").to_owned() }
        }
        (Method::POST, "asof") => AdminRequest::AsofCreate {
            bucket: bucket_arg(q)?,
            prefix: q.get("prefix").unwrap_or("").to_owned(),
            at: crate::xml::parse_time(q.get("at").ok_or_else(|| bad("the at parameter is required"))?)
                .ok_or_else(|| bad("at must be an ISO 8601 time in UTC, e.g. 2026-12-07T10:00:00Z"))?,
            ttl: storage::units::parse_duration(q.get("ttl").unwrap_or("24h")).map_err(bad)?,
            name: q.get("name").map(BucketName::parse).transpose()?,
        },
        (Method::GET, "asof") => AdminRequest::AsofList,
        (Method::DELETE, "asof") => AdminRequest::AsofDrop {
            name: q.get("name").ok_or_else(|| bad("the name parameter is required"))?.to_owned(),
        },
        (Method::POST, "scrub") => AdminRequest::ScrubStart,
        (Method::GET, "tier") => AdminRequest::TierStatus,
        (Method::POST, "tier") => {
            let raw = read_small(body, spec, 64 << 10).await?;
            let doc: TierDoc = serde_json::from_slice(&raw).map_err(|e| bad(format!("tiering policy: {e}")))?;
            AdminRequest::TierSet(Box::new(doc))
        }
        (Method::DELETE, "tier") => {
            AdminRequest::TierRemove { bucket: bucket_arg(q)?, prefix: prefix_arg(q).unwrap_or_default() }
        }
        (Method::GET, "replication") => AdminRequest::ReplicationStatus { name: q.get("name").map(str::to_owned) },
        (Method::POST, "replication") => {
            let raw = read_small(body, spec, 64 << 10).await?;
            let doc: ReplicationDoc =
                serde_json::from_slice(&raw).map_err(|e| bad(format!("replication target: {e}")))?;
            AdminRequest::ReplicationAdd(Box::new(doc))
        }
        (Method::POST, "replication/pause") => AdminRequest::ReplicationPause { name: name_arg(q)?, paused: true },
        (Method::POST, "replication/resume") => AdminRequest::ReplicationPause { name: name_arg(q)?, paused: false },
        (Method::DELETE, "replication") => AdminRequest::ReplicationRemove { name: name_arg(q)? },
        (Method::POST, "import") => {
            let raw = read_small(body, spec, 64 << 10).await?;
            let doc: remote::import::ImportRequest =
                serde_json::from_slice(&raw).map_err(|e| bad(format!("import request: {e}")))?;
            let (src, opts) = doc.resolve().map_err(bad)?;
            state
                .import
                .start(state.store.clone(), src, opts)
                .map_err(|e| S3Error::new(S3Code::OperationAborted, e))?;
            tracing::info!(actor = %who.access_key, source = %format!("{}/{}/{}", doc.endpoint, doc.bucket, doc.prefix), to = %doc.to, "import started");
            return Ok(json_response(StatusCode::OK, &json!({ "started": true })));
        }
        (Method::GET, "import") => {
            return Ok(json_response(StatusCode::OK, &serde_json::to_value(state.import.status()).unwrap_or_default()));
        }
        (Method::DELETE, "import") => {
            state.import.stop();
            return Ok(json_response(StatusCode::OK, &json!({ "stopping": true })));
        }
        (Method::POST, "test-clock") if state.test_clock.is_some() => {
            let ms: i64 =
                q.get("ms").and_then(|v| v.parse().ok()).ok_or_else(|| bad("ms=<unix milliseconds> is required"))?;
            if let Some(c) = &state.test_clock {
                c.set(storage::Timestamp::from_millis(ms).to_system());
            }
            return Ok(json_response(StatusCode::OK, &json!({ "now_ms": ms })));
        }
        _ => return Err(S3Error::new(S3Code::NotImplemented, format!("unknown admin endpoint {method} {path}"))),
    };
    let (store, rep, tier) = (state.store.clone(), state.replicator.clone(), state.tier.clone());
    let actor = who.access_key.clone();
    let (ok, v) = match tokio::task::spawn_blocking(move || execute(&store, &rep, &tier, &actor, req)).await {
        Ok(r) => r?,
        Err(e) => return Err(S3Error::internal("admin task", &e)),
    };
    Ok(json_response(if ok { StatusCode::OK } else { StatusCode::CONFLICT }, &v))
}

fn name_arg(q: &Query) -> S3Result<String> {
    q.get("name").map(str::to_owned).ok_or_else(|| bad("the name parameter is required"))
}

/// A replication target as the admin API, the CLI and the configuration file give it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReplicationDoc {
    /// Target name.
    pub name: String,
    /// What is copied: `BUCKET`, `BUCKET/PREFIX`, or absent for every bucket.
    #[serde(default)]
    pub source: Option<String>,
    /// Where it goes.
    #[serde(flatten)]
    pub spec: remote::TargetSpec,
}

impl ReplicationDoc {
    /// The record the store keeps.
    pub fn record(&self, now: storage::Timestamp, from_config: bool) -> Result<storage::TargetRecord, String> {
        storage::replication::check_target_name(&self.name).map_err(|e| e.to_string())?;
        self.spec.validate()?;
        let (source_bucket, source_prefix) = match self.source.as_deref().map(|s| s.trim_start_matches('/')) {
            None | Some("") | Some("*") => (None, String::new()),
            Some(s) => {
                let (b, p) = s.split_once('/').unwrap_or((s, ""));
                BucketName::parse(b).map_err(|e| format!("source {s:?}: {e}"))?;
                (Some(b.to_owned()), p.to_owned())
            }
        };
        Ok(storage::TargetRecord {
            name: self.name.clone(),
            source_bucket,
            source_prefix,
            paused: false,
            created: now,
            spec: serde_json::to_string(&self.spec).map_err(|e| e.to_string())?,
            from_config,
        })
    }
}

/// Parses `first` / `second` (which copy a quarantine resolution keeps).
pub fn parse_keep(s: &str) -> S3Result<Keep> {
    match s {
        "first" => Ok(Keep::First),
        "second" => Ok(Keep::Second),
        _ => Err(bad(format!("keep must be first (the stored copy) or second (the quarantined upload), not {s:?}"))),
    }
}

/// Normalises a repository prefix argument (`spilo/c1` → `spilo/c1/`).
pub fn prefix_arg(q: &Query) -> Option<String> {
    q.get("prefix").map(normalize_prefix)
}

/// Progress and last report of scrubs (persisted: the same after a restart).
pub fn scrub_status(store: &Store) -> S3Result<Value> {
    let st = store.scrub_state()?;
    Ok(json!({
        "running": st.cursor.is_some(),
        "progress": st.cursor.as_ref().map_or(1.0, |c| c.progress()),
        "last_completion": st.last.as_ref().map_or(0, |l| l.completed.as_millis().max(0) / 1000),
        "last_report": st.last.as_ref().map(|l| &l.report),
    }))
}

fn positive(s: &str) -> S3Result<u32> {
    s.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| bad(format!("{s:?} is not a positive whole number")))
}

fn view_json(v: &storage::AsofView) -> Value {
    json!({
        "name": v.name,
        "source": v.source,
        "prefix": v.prefix,
        "at": storage_time(v.at),
        "created": storage_time(v.created),
        "expires": storage_time(v.expires),
    })
}

fn storage_time(t: storage::Timestamp) -> String {
    crate::xml::iso8601(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_documents_parse_and_refuse_unknown_fields() {
        let ok = r#"{"name":"dr","source":"pgb/spilo/","endpoint":"http://127.0.0.1:9000","bucket":"copy","region":"us-east-1","deletes":"delay 1d","credentials-file":"/x"}"#;
        let d: ReplicationDoc = serde_json::from_str(ok).expect("parse");
        let rec = d.record(storage::Timestamp::from_millis(0), false).expect("record");
        assert_eq!((rec.source_bucket.as_deref(), rec.source_prefix.as_str()), (Some("pgb"), "spilo/"));
        assert_eq!(d.spec.deletes, remote::DeletePolicy::Delay(Duration::from_secs(86400)));
        let typo =
            r#"{"name":"dr","endpoint":"http://127.0.0.1:9000","bucket":"copy","region":"us-east-1","regoin":"x"}"#;
        assert!(serde_json::from_str::<ReplicationDoc>(typo).is_err());
        let bad_name = r#"{"name":"DR","endpoint":"http://127.0.0.1:9000","bucket":"copy","region":"us-east-1"}"#;
        let d: ReplicationDoc = serde_json::from_str(bad_name).expect("parse");
        assert!(d.record(storage::Timestamp::from_millis(0), false).is_err());
    }
}
