//! Prometheus metrics (`GET /metrics`). Names are prefixed `walstore_`, carry
//! their unit, and labels are bounded: S3 operation, status code, bucket,
//! repository prefix, fixed reason sets — never an object key.
//!
//! Request metrics are recorded by the service; storage and WAL gauges are
//! refreshed by the maintenance worker ([`Metrics::refresh_storage`],
//! [`Metrics::refresh_wal`]) so a scrape never scans the index.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use storage::wal::Evaluation;
use storage::Store;

use crate::router::Operation;

/// Every metric walstore exports.
pub struct Metrics {
    registry: Registry,
    /// Off-box replication (per target).
    replication: ReplicationMetrics,
    /// Tiering.
    tier: TierMetrics,
    /// Requests by operation and status.
    pub requests: IntCounterVec,
    /// Request latency by operation.
    pub duration: HistogramVec,
    /// Request body bytes received.
    pub received: IntCounter,
    /// Response body bytes sent.
    pub sent: IntCounter,
    /// Requests being handled.
    pub in_flight: IntGauge,
    /// Authentication failures by reason.
    pub auth_failures: IntCounterVec,
    /// Authenticated requests by signature version (`v2`, `v4`).
    pub authenticated: IntCounterVec,
    /// Client connections being served.
    pub connections_open: IntGauge,
    /// Connections turned away at the `--max-connections` cap.
    pub connections_refused: IntCounter,
    bucket_objects: IntGaugeVec,
    bucket_bytes: IntGaugeVec,
    physical: IntGauge,
    noncurrent_versions: IntGauge,
    noncurrent_bytes: IntGauge,
    delete_markers: IntGauge,
    locked_versions: IntGauge,
    locked_bytes: IntGauge,
    blobs: IntGauge,
    dedup: Gauge,
    gc_queue: IntGauge,
    gc_backlog: Gauge,
    gc_bytes: IntCounter,
    gc_blobs: IntCounter,
    disk_free: IntGauge,
    disk_total: IntGauge,
    disk_reserve: IntGauge,
    index_bytes: IntGauge,
    blocks_verified: IntCounter,
    checksum_failures: IntCounter,
    scrub_checked: IntCounter,
    scrub_corrupt: IntCounter,
    scrub_progress: Gauge,
    scrub_last: IntGauge,
    wal_last_received: GaugeVec,
    wal_last_lsn: GaugeVec,
    wal_lag: GaugeVec,
    wal_gaps: IntGaugeVec,
    window_start: GaugeVec,
    window_end: GaugeVec,
    newest_age: GaugeVec,
    oldest_age: GaugeVec,
    backups: IntGaugeVec,
    frozen: IntGaugeVec,
    alerts: IntGaugeVec,
    retention_deletions: IntCounter,
    refused: IntCounter,
    conflicts: IntCounter,
    identity_conflicts: IntCounterVec,
    identity_checks: IntCounterVec,
    /// Last successful run of a maintenance job (unix seconds).
    pub job_success: GaugeVec,
    /// Maintenance job failures.
    pub job_errors: IntCounterVec,
    worker_steps: IntCounterVec,
    worker_busy: GaugeVec,
}

// Metric names and labels are literals covered by the tests below, so
// construction cannot fail; it runs once at start-up, never on a request.
fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(r, IntGauge::new(name, help).expect("valid metric"))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(r, IntCounter::new(name, help).expect("valid metric"))
}

/// Advances a counter to a monotonic total kept elsewhere (an atomic of the store).
fn follow(c: &IntCounter, total: u64) {
    let seen = c.get();
    if total > seen {
        c.inc_by(total - seen);
    }
}

fn fgauge(r: &Registry, name: &str, help: &str) -> Gauge {
    reg(r, Gauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn fgauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    reg(r, GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// Results of `walstore_identity_checks_total`.
const IDENTITY_RESULTS: [&str; 4] = ["verified", "learned", "opaque", "unknown_version"];

fn now_secs() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Maps a freeze reason to a bounded label value.
fn freeze_category(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("history-timeline-collision") {
        "history_collision"
    } else if r.contains("clock") {
        "clock"
    } else if r.contains("split brain") {
        "split_brain"
    } else if r.contains("stray timeline") {
        "stray_timeline"
    } else if r.contains("timeline conflict") {
        "timeline_conflict"
    } else if r.contains("segment size") || r.contains("out of range") {
        "segment_size"
    } else if r.contains("cannot be parsed") {
        "unparseable_document"
    } else if r.contains("invariant") {
        "invariant"
    } else {
        "other"
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "walstore_s3_requests_total",
            "S3 requests by operation and HTTP status.",
            &["operation", "status"],
        );
        let duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new("walstore_s3_request_duration_seconds", "S3 request latency by operation.").buckets(
                    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                ),
                &["operation"],
            )
            .expect("valid metric"),
        );
        let received = reg(
            &r,
            IntCounter::new("walstore_s3_received_bytes_total", "Request body bytes received.").expect("valid metric"),
        );
        let sent = reg(
            &r,
            IntCounter::new("walstore_s3_sent_bytes_total", "Response body bytes sent (object data and documents).")
                .expect("valid metric"),
        );
        let in_flight = gauge(&r, "walstore_s3_requests_in_flight", "Requests being handled.");
        let auth_failures = counter_vec(
            &r,
            "walstore_auth_failures_total",
            "Requests refused by authentication, by reason.",
            &["reason"],
        );
        let authenticated = counter_vec(
            &r,
            "walstore_auth_requests_total",
            "Requests that passed authentication, by signature version (v2 or v4).",
            &["signature"],
        );
        for v in ["v2", "v4"] {
            authenticated.with_label_values(&[v]);
        }
        let m = Metrics {
            requests,
            duration,
            received,
            sent,
            in_flight,
            auth_failures,
            authenticated,
            connections_open: gauge(&r, "walstore_connections_open", "Client connections being served."),
            connections_refused: counter(
                &r,
                "walstore_connections_refused_total",
                "Connections refused (503 SlowDown, or closed) because --max-connections were open.",
            ),
            bucket_objects: gauge_vec(&r, "walstore_bucket_objects", "Objects per bucket.", &["bucket"]),
            bucket_bytes: gauge_vec(
                &r,
                "walstore_bucket_logical_bytes",
                "Logical bytes (sum of object sizes) per bucket.",
                &["bucket"],
            ),
            physical: gauge(&r, "walstore_physical_bytes", "Bytes of distinct blobs on disk."),
            noncurrent_versions: gauge(
                &r,
                "walstore_noncurrent_versions",
                "Object versions that are not the current one (versioned buckets).",
            ),
            noncurrent_bytes: gauge(&r, "walstore_noncurrent_version_bytes", "Logical bytes of non-current versions."),
            delete_markers: gauge(&r, "walstore_delete_markers", "Delete markers (versioned buckets)."),
            locked_versions: gauge(
                &r,
                "walstore_locked_versions",
                "Object versions that cannot be deleted now: Object Lock retention not expired, or a legal hold.",
            ),
            locked_bytes: gauge(&r, "walstore_locked_bytes", "Logical bytes of locked object versions."),
            blobs: gauge(&r, "walstore_blobs", "Distinct blobs stored."),
            dedup: fgauge(&r, "walstore_dedup_ratio", "Logical bytes over physical bytes."),
            gc_queue: gauge(&r, "walstore_gc_queue_blobs", "Blobs waiting for garbage collection."),
            gc_backlog: fgauge(
                &r,
                "walstore_gc_backlog_seconds",
                "How long the oldest blob due for garbage collection has been due (0 when GC keeps up).",
            ),
            gc_bytes: counter(&r, "walstore_gc_reclaimed_bytes_total", "Bytes reclaimed by GC since start."),
            gc_blobs: counter(&r, "walstore_gc_reclaimed_blobs_total", "Blobs reclaimed by GC since start."),
            disk_free: gauge(&r, "walstore_data_dir_free_bytes", "Free bytes on the data directory's filesystem."),
            disk_total: gauge(&r, "walstore_data_dir_total_bytes", "Size of the data directory's filesystem."),
            disk_reserve: gauge(
                &r,
                "walstore_data_dir_reserve_bytes",
                "Free space uploads must leave (--reserve-space); below it PUTs get 503 SlowDown.",
            ),
            index_bytes: gauge(&r, "walstore_index_bytes", "Size of the RocksDB index."),
            blocks_verified: counter(
                &r,
                "walstore_blocks_verified_total",
                "Blocks whose CRC was verified on read since start.",
            ),
            checksum_failures: counter(
                &r,
                "walstore_checksum_failures_total",
                "Blocks that failed verification on read since start (never served).",
            ),
            scrub_checked: counter(&r, "walstore_scrub_blobs_checked_total", "Blobs re-hashed by scrubs since start."),
            scrub_corrupt: counter(
                &r,
                "walstore_scrub_corrupt_blobs_total",
                "Corrupt blobs found by scrubs since start.",
            ),
            scrub_progress: fgauge(
                &r,
                "walstore_scrub_progress_ratio",
                "Progress of the running (or last) scrub, 0 to 1.",
            ),
            scrub_last: gauge(
                &r,
                "walstore_scrub_last_completion_timestamp_seconds",
                "Unix time of the last completed scrub (0 = never).",
            ),
            wal_last_received: fgauge_vec(
                &r,
                "walstore_wal_last_segment_received_timestamp_seconds",
                "Unix time the newest WAL segment was received.",
                &["bucket", "repo"],
            ),
            wal_last_lsn: fgauge_vec(
                &r,
                "walstore_wal_last_segment_lsn_bytes",
                "End LSN of the newest WAL segment, in bytes.",
                &["bucket", "repo"],
            ),
            wal_lag: fgauge_vec(
                &r,
                "walstore_wal_archive_lag_seconds",
                "Seconds since the newest WAL segment was received.",
                &["bucket", "repo"],
            ),
            wal_gaps: gauge_vec(
                &r,
                "walstore_wal_gap_segments",
                "Missing WAL segments on the main lineage (pending: still uploading; lost).",
                &["bucket", "repo", "state"],
            ),
            window_start: fgauge_vec(
                &r,
                "walstore_wal_restorable_window_start_timestamp_seconds",
                "Earliest recoverable instant (unix time).",
                &["bucket", "repo"],
            ),
            window_end: fgauge_vec(
                &r,
                "walstore_wal_restorable_window_end_timestamp_seconds",
                "Latest recoverable instant (unix time).",
                &["bucket", "repo"],
            ),
            newest_age: fgauge_vec(
                &r,
                "walstore_backup_newest_age_seconds",
                "Age of the newest complete backup.",
                &["bucket", "repo"],
            ),
            oldest_age: fgauge_vec(
                &r,
                "walstore_backup_oldest_age_seconds",
                "Age of the oldest kept backup.",
                &["bucket", "repo"],
            ),
            backups: gauge_vec(&r, "walstore_backups", "Backups by kind.", &["bucket", "repo", "kind"]),
            frozen: gauge_vec(
                &r,
                "walstore_retention_frozen",
                "1 while retention of a repository is frozen, by reason.",
                &["bucket", "repo", "reason"],
            ),
            alerts: gauge_vec(
                &r,
                "walstore_alerts",
                "Open alerts of a repository (lost WAL, broken backups, split brain suspected, ...).",
                &["bucket", "repo"],
            ),
            retention_deletions: counter(
                &r,
                "walstore_retention_deletions_total",
                "Objects deleted by the retention worker since start.",
            ),
            refused: counter(
                &r,
                "walstore_refused_deletes_total",
                "Client deletes refused by delete protection since start.",
            ),
            conflicts: counter(
                &r,
                "walstore_split_brain_conflicts_total",
                "Uploads refused by the split-brain guard since start.",
            ),
            identity_conflicts: {
                let c = counter_vec(
                    &r,
                    "walstore_identity_conflicts_total",
                    "Uploads from another cluster than their repository's (by kind), refused (identity check enforce) or reported (warn), since start.",
                    &["kind"],
                );
                for k in storage::wal::CONFLICT_KINDS {
                    c.with_label_values(&[k]);
                }
                c
            },
            identity_checks: {
                let c = counter_vec(
                    &r,
                    "walstore_identity_checks_total",
                    "Uploads the identity check looked into since start, by result: verified, learned, opaque (encrypted or undecodable: accepted), unknown_version (page magic of no known PostgreSQL version).",
                    &["result"],
                );
                for k in IDENTITY_RESULTS {
                    c.with_label_values(&[k]);
                }
                c
            },
            job_success: fgauge_vec(
                &r,
                "walstore_maintenance_last_success_timestamp_seconds",
                "Unix time of the last successful run of a maintenance task.",
                &["task"],
            ),
            job_errors: counter_vec(
                &r,
                "walstore_maintenance_errors_total",
                "Failed runs of maintenance tasks.",
                &["task"],
            ),
            worker_steps: counter_vec(
                &r,
                "walstore_worker_steps_total",
                "Steps taken by a background worker (each at most one budget long).",
                &["worker"],
            ),
            worker_busy: fgauge_vec(
                &r,
                "walstore_worker_busy_seconds",
                "Time a background worker has spent working since start.",
                &["worker"],
            ),
            replication: ReplicationMetrics::new(&r),
            tier: TierMetrics::new(&r),
            registry: r,
        };
        let info = gauge_vec(&m.registry, "walstore_build_info", "Build information.", &["version"]);
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for op in Operation::ALL {
            m.duration.with_label_values(&[op.name()]);
        }
        for job in ["gc", "evaluate", "retention", "usage", "scrub", "index-verify", "replication", "tier"] {
            m.job_errors.with_label_values(&[job]);
        }
        m
    }

    /// Records one finished request.
    pub fn observe(&self, op: &str, status: u16, seconds: f64) {
        self.requests.with_label_values(&[op, &status.to_string()]).inc();
        self.duration.with_label_values(&[op]).observe(seconds);
    }

    /// Refreshes storage gauges (a scan of the index; call from the worker).
    pub fn refresh_storage(&self, store: &Store) -> storage::Result<()> {
        let u = store.usage()?;
        self.bucket_objects.reset();
        self.bucket_bytes.reset();
        for (b, (objects, bytes)) in &u.buckets {
            self.bucket_objects.with_label_values(&[b]).set(*objects as i64);
            self.bucket_bytes.with_label_values(&[b]).set(*bytes as i64);
        }
        self.physical.set(u.physical_bytes as i64);
        self.noncurrent_versions.set(u.noncurrent.0 as i64);
        self.noncurrent_bytes.set(u.noncurrent.1 as i64);
        self.delete_markers.set(u.delete_markers as i64);
        self.locked_versions.set(u.locked.0 as i64);
        self.locked_bytes.set(u.locked.1 as i64);
        self.blobs.set(u.blobs as i64);
        self.dedup.set(u.dedup_ratio());
        let q = store.gc_queue_stats(std::time::SystemTime::now())?;
        self.gc_queue.set(q.pending as i64);
        self.gc_backlog.set(q.backlog.as_secs_f64());
        if let Ok((free, total)) = store.disk_space() {
            self.disk_free.set(free as i64);
            self.disk_total.set(total as i64);
        }
        if let Ok(reserve) = store.space_reserve_bytes() {
            self.disk_reserve.set(reserve as i64);
        }
        self.index_bytes.set(store.index_size_bytes() as i64);
        self.refresh_counters(store);
        Ok(())
    }

    /// Copies the store's monotonic counters (cheap; also called at scrape time).
    pub fn refresh_counters(&self, store: &Store) {
        let st = store.stats();
        follow(&self.gc_bytes, st.gc_reclaimed_bytes.load(Ordering::Relaxed));
        follow(&self.gc_blobs, st.gc_reclaimed_blobs.load(Ordering::Relaxed));
        follow(&self.blocks_verified, st.blocks_verified.load(Ordering::Relaxed));
        follow(&self.checksum_failures, st.checksum_failures.load(Ordering::Relaxed));
        follow(&self.scrub_checked, st.scrub_blobs_checked.load(Ordering::Relaxed));
        follow(&self.scrub_corrupt, st.scrub_corrupt_blobs.load(Ordering::Relaxed));
        let g = &store.wal_guard().stats;
        follow(&self.retention_deletions, g.retention_deletions.load(Ordering::Relaxed));
        follow(&self.refused, g.refused_deletes.load(Ordering::Relaxed));
        follow(&self.conflicts, g.conflicts.load(Ordering::Relaxed));
        let ic = store.identity_counters();
        for (kind, n) in storage::wal::CONFLICT_KINDS.iter().zip(&ic.conflicts) {
            follow(&self.identity_conflicts.with_label_values(&[kind]), n.load(Ordering::Relaxed));
        }
        for (result, n) in IDENTITY_RESULTS.iter().zip([&ic.verified, &ic.learned, &ic.opaque, &ic.unknown_version]) {
            follow(&self.identity_checks.with_label_values(&[result]), n.load(Ordering::Relaxed));
        }
    }

    /// Refreshes the gauges that are cheap to read at scrape time: the WAL
    /// gauges from the last evaluation of each repository (kept current by the
    /// `evaluate` worker; a scrape never evaluates, however often it comes) and
    /// the scrub's progress (persisted in the index).
    pub fn refresh_at_scrape(&self, store: &Store) {
        self.refresh_counters(store);
        self.refresh_wal(&store.last_evaluations());
        match store.scrub_state() {
            Ok(sc) => {
                self.scrub_progress.set(sc.cursor.as_ref().map_or(1.0, |c| c.progress()));
                self.scrub_last.set(sc.last.as_ref().map_or(0, |l| l.completed.as_millis().max(0) / 1000));
            }
            Err(e) => tracing::warn!(error = %e, "reading the scrub state for a scrape failed"),
        }
    }

    /// Records a finished run of a background worker.
    pub fn observe_worker(&self, w: &storage::worker::WorkerStatus, failed: bool) {
        if failed {
            self.job_errors.with_label_values(&[w.name]).inc();
        } else {
            let t = w.last_success.load(Ordering::Relaxed) as f64;
            self.job_success.with_label_values(&[w.name]).set(t);
        }
        follow(&self.worker_steps.with_label_values(&[w.name]), w.steps.load(Ordering::Relaxed));
        self.worker_busy.with_label_values(&[w.name]).set(w.busy_ms.load(Ordering::Relaxed) as f64 / 1000.0);
    }

    /// Refreshes the WAL gauges of the given evaluations (all repositories).
    pub fn refresh_wal(&self, evals: &[std::sync::Arc<Evaluation>]) {
        for v in [
            &self.wal_last_received,
            &self.wal_last_lsn,
            &self.wal_lag,
            &self.window_start,
            &self.window_end,
            &self.newest_age,
            &self.oldest_age,
        ] {
            v.reset();
        }
        self.wal_gaps.reset();
        self.backups.reset();
        self.frozen.reset();
        self.alerts.reset();
        let now = now_secs();
        for ev in evals {
            let (b, r) = (ev.bucket.as_str(), ev.prefix.as_str());
            let rep = &ev.horizon.report;
            if let Some((_, t, lsn)) = &rep.last_segment {
                let secs = t.as_millis() as f64 / 1000.0;
                self.wal_last_received.with_label_values(&[b, r]).set(secs);
                self.wal_last_lsn.with_label_values(&[b, r]).set(lsn.as_u64() as f64);
                self.wal_lag.with_label_values(&[b, r]).set((now - secs).max(0.0));
            }
            for state in ["pending", "lost"] {
                let n: u64 = rep.gaps.iter().filter(|g| g.pending == (state == "pending")).map(|g| g.segments).sum();
                self.wal_gaps.with_label_values(&[b, r, state]).set(n as i64);
            }
            if let (Some(first), Some(last)) = (rep.windows.first(), rep.windows.last()) {
                self.window_start.with_label_values(&[b, r]).set(first.from.as_millis() as f64 / 1000.0);
                self.window_end.with_label_values(&[b, r]).set(last.to.as_millis() as f64 / 1000.0);
            }
            if let Some((_, t)) = &rep.newest_backup {
                self.newest_age.with_label_values(&[b, r]).set((now - t.as_millis() as f64 / 1000.0).max(0.0));
            }
            if let Some((_, t)) = &rep.oldest_backup {
                self.oldest_age.with_label_values(&[b, r]).set((now - t.as_millis() as f64 / 1000.0).max(0.0));
            }
            for kind in ["full", "delta", "permanent", "in_progress", "incomplete", "broken"] {
                self.backups.with_label_values(&[b, r, kind]).set(*rep.counts.get(kind).unwrap_or(&0) as i64);
            }
            self.alerts.with_label_values(&[b, r]).set(ev.horizon.alerts.len() as i64);
            for f in &ev.horizon.frozen {
                self.frozen.with_label_values(&[b, r, freeze_category(f)]).set(1);
            }
        }
    }

    /// Refreshes the replication gauges from a report of every target, with the
    /// newest local WAL segment of each repository (for the off-box WAL lag).
    pub fn refresh_replication(&self, reports: &[remote::TargetReport], evals: &[std::sync::Arc<Evaluation>]) {
        let r = &self.replication;
        for g in [&r.lag, &r.backlog_objects, &r.backlog_bytes, &r.held_deletes, &r.last_success, &r.failing, &r.paused]
        {
            g.reset();
        }
        r.offbox_time.reset();
        r.offbox_lag.reset();
        for t in reports {
            let n = t.rec.name.as_str();
            r.lag.with_label_values(&[n]).set(t.lag_seconds());
            if let Ok(b) = &t.backlog {
                r.backlog_objects.with_label_values(&[n]).set(b.objects as f64);
                r.backlog_bytes.with_label_values(&[n]).set(b.bytes as f64);
                r.held_deletes.with_label_values(&[n]).set(b.held_deletes as f64);
            }
            let st = &t.state;
            r.last_success.with_label_values(&[n]).set(st.last_success.load(Ordering::Relaxed) as f64);
            r.failing.with_label_values(&[n]).set(if st.failures() > 0 { 1.0 } else { 0.0 });
            r.paused.with_label_values(&[n]).set(if t.rec.paused { 1.0 } else { 0.0 });
            follow(&r.objects.with_label_values(&[n]), st.objects.load(Ordering::Relaxed));
            follow(&r.bytes.with_label_values(&[n]), st.bytes.load(Ordering::Relaxed));
            follow(&r.deletes.with_label_values(&[n]), st.deletes.load(Ordering::Relaxed));
            for (kind, count) in st.errors_by_kind() {
                follow(&r.errors.with_label_values(&[n, kind]), count);
            }
            for m in &t.offbox {
                let secs = m.last_modified.as_millis() as f64 / 1000.0;
                let labels = [n, m.bucket.as_str(), m.repository.as_str()];
                r.offbox_time.with_label_values(&labels).set(secs);
                let local = evals.iter().find(|e| e.bucket.as_str() == m.bucket && e.prefix == m.repository);
                if let Some((_, t, _)) = local.and_then(|e| e.horizon.report.last_segment.as_ref()) {
                    let newest = t.as_millis() as f64 / 1000.0;
                    r.offbox_lag.with_label_values(&labels).set((newest - secs).max(0.0));
                }
            }
        }
    }

    /// Refreshes the tiering gauges and counters from the worker's state.
    pub fn refresh_tier(&self, st: &remote::TierState) {
        let t = &self.tier;
        t.local_bytes.reset();
        t.remote_bytes.reset();
        for (bucket, repo, row) in st.rows() {
            let labels = [bucket.as_str(), repo.as_str()];
            t.local_bytes.with_label_values(&labels).set(row.local_bytes as f64);
            t.remote_bytes.with_label_values(&labels).set(row.remote_bytes as f64);
        }
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        follow(&t.evicted_objects, n(&st.evicted_objects));
        follow(&t.evicted_bytes, n(&st.evicted_bytes));
        follow(&t.remote_reads, n(&st.remote_reads));
        follow(&t.remote_read_bytes, n(&st.remote_read_bytes));
        follow(&t.rehydrated_bytes, n(&st.rehydrated_bytes));
        for (kind, count) in st.read_failures_by_kind() {
            follow(&t.read_failures.with_label_values(&[kind]), count);
        }
        for secs in st.take_latencies() {
            t.read_seconds.observe(secs);
        }
        t.scrub_problems.set(st.scrub_problems() as f64);
        t.last_pass.set(st.last_pass_secs());
    }

    /// The text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The replication gauges and counters (see the README's metrics table).
struct ReplicationMetrics {
    lag: GaugeVec,
    backlog_objects: GaugeVec,
    backlog_bytes: GaugeVec,
    held_deletes: GaugeVec,
    last_success: GaugeVec,
    failing: GaugeVec,
    paused: GaugeVec,
    objects: IntCounterVec,
    bytes: IntCounterVec,
    deletes: IntCounterVec,
    errors: IntCounterVec,
    offbox_time: GaugeVec,
    offbox_lag: GaugeVec,
}

impl ReplicationMetrics {
    fn new(r: &Registry) -> Self {
        let t = &["target"];
        Self {
            lag: fgauge_vec(
                r,
                "walstore_replication_lag_seconds",
                "Age of the oldest change not yet on the target.",
                t,
            ),
            backlog_objects: fgauge_vec(
                r,
                "walstore_replication_backlog_objects",
                "Changes journaled for the target and not yet confirmed by it.",
                t,
            ),
            backlog_bytes: fgauge_vec(r, "walstore_replication_backlog_bytes", "Bytes the pending changes send.", t),
            held_deletes: fgauge_vec(
                r,
                "walstore_replication_held_deletes",
                "Deletes held back by the target's delete policy (delay).",
                t,
            ),
            last_success: fgauge_vec(
                r,
                "walstore_replication_last_success_timestamp_seconds",
                "Unix time the target last confirmed a change or was found up to date.",
                t,
            ),
            failing: fgauge_vec(r, "walstore_replication_failing", "1 while the last attempt to the target failed.", t),
            paused: fgauge_vec(r, "walstore_replication_paused", "1 while the target is paused.", t),
            objects: counter_vec(r, "walstore_replication_objects_total", "Objects the target confirmed.", t),
            bytes: counter_vec(r, "walstore_replication_bytes_total", "Bytes the target confirmed.", t),
            deletes: counter_vec(r, "walstore_replication_deletes_total", "Deletes the target confirmed.", t),
            errors: counter_vec(
                r,
                "walstore_replication_errors_total",
                "Failed attempts by kind (auth, network, throttled, server, checksum, config, not_found, local, other).",
                &["target", "kind"],
            ),
            offbox_time: fgauge_vec(
                r,
                "walstore_replication_wal_offbox_timestamp_seconds",
                "Write time of the newest WAL segment of the repository the target holds.",
                &["target", "bucket", "repo"],
            ),
            offbox_lag: fgauge_vec(
                r,
                "walstore_replication_wal_offbox_lag_seconds",
                "Newest local WAL segment minus newest off-box one: the WAL a lost appliance would lose (off-box RPO).",
                &["target", "bucket", "repo"],
            ),
        }
    }
}

/// The tiering gauges and counters (see the README's metrics table).
struct TierMetrics {
    local_bytes: GaugeVec,
    remote_bytes: GaugeVec,
    evicted_objects: IntCounter,
    evicted_bytes: IntCounter,
    remote_reads: IntCounter,
    remote_read_bytes: IntCounter,
    read_failures: IntCounterVec,
    read_seconds: prometheus::Histogram,
    rehydrated_bytes: IntCounter,
    scrub_problems: Gauge,
    last_pass: Gauge,
}

impl TierMetrics {
    fn new(r: &Registry) -> Self {
        let l = &["bucket", "repository"];
        let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let read_failures = counter_vec(
            r,
            "walstore_tier_remote_read_failures_total",
            "Failed reads of tiered objects by kind (network, auth, throttled, server, checksum, not_found, …).",
            &["kind"],
        );
        // Every kind from the start: a rate() needs the zero before the first failure.
        for kind in remote::ErrorKind::ALL {
            read_failures.with_label_values(&[kind.name()]);
        }
        Self {
            local_bytes: fgauge_vec(
                r,
                "walstore_tier_local_bytes",
                "Bytes on local disk under tiering policies (last pass).",
                l,
            ),
            remote_bytes: fgauge_vec(
                r,
                "walstore_tier_remote_bytes",
                "Bytes evicted to the target only (last pass).",
                l,
            ),
            evicted_objects: counter(r, "walstore_tier_evicted_objects_total", "Objects whose bytes were evicted."),
            evicted_bytes: counter(
                r,
                "walstore_tier_evicted_bytes_total",
                "Bytes removed from local disk by eviction.",
            ),
            remote_reads: counter(r, "walstore_tier_remote_reads_total", "Tiered blobs read from a target."),
            remote_read_bytes: counter(r, "walstore_tier_remote_read_bytes_total", "Bytes read from targets."),
            read_failures,
            read_seconds: reg(
                r,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "walstore_tier_remote_read_seconds",
                        "Time to the target's answer when opening a tiered blob.",
                    )
                    .buckets(buckets),
                )
                .expect("valid metric"),
            ),
            rehydrated_bytes: counter(r, "walstore_tier_rehydrated_bytes_total", "Bytes brought back to local disk."),
            scrub_problems: fgauge(
                r,
                "walstore_tier_scrub_problems",
                "Problems the last scrub of the targets' copies found.",
            ),
            last_pass: fgauge(
                r,
                "walstore_tier_last_pass_timestamp_seconds",
                "Unix time the tier worker last finished a pass over every policy.",
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_documented_name() {
        let m = Metrics::new();
        m.observe("PutObject", 200, 0.01);
        let text = String::from_utf8(m.render()).expect("utf8");
        for name in [
            "walstore_s3_requests_total",
            "walstore_s3_request_duration_seconds_bucket",
            "walstore_build_info",
            "walstore_physical_bytes",
            "walstore_retention_deletions_total",
            "walstore_maintenance_errors_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert_eq!(freeze_category("split brain suspected: two"), "split_brain");
        assert_eq!(freeze_category("sentinel of x cannot be parsed"), "unparseable_document");
    }
}
