//! Part C of the retention reference (`wal-retention.md`) against a running
//! server: every scenario lays out synthetic objects exactly as WAL-G writes
//! them (lz4 segments `wal_005/<24hex>.lz4`, PostgreSQL-format history files,
//! `.partial` files, backups as tar parts + `metadata.json` +
//! `files_metadata.json` + stop sentinel LAST with integer LSNs, delta names
//! `base_<own>_D_<parent>`; 16 MiB segments) and checks the outcome only
//! through the public surface: `walstore retention plan|run --json`,
//! `walstore status --json`, `walstore audit --json`, and S3 answers (HEAD,
//! GET, list, DeleteObject(s), PUT).
//!
//! Time is the server's: each server runs with `serve --test-clock`, whose store
//! clock stands still until the test sets it through the admin API, so no
//! scenario waits for, or depends on, the wall clock. A Part C "day" is `u`
//! milliseconds of that clock (`Repo::new(name, u)`; policies are set with
//! `Repo::ms(days)`, literal durations like `1s` are in the same time), and
//! `Repo::at(days)` moves it to `t0 + days·u`; every upload moves it one
//! millisecond on, so receipt times keep the order of the uploads. Where a
//! window edge must fall between two backups, the recovery window is set just
//! before each evaluation to `now − finish(anchor) − 1 ms`. Only the order of
//! receipt times matters to the rules, so scenarios whose Part C days are far
//! apart (−400 d, −20 d) use consecutive steps. Signatures and the workers'
//! schedules run on real time.
//!
//! Each scenario is its own `#[tokio::test]` with its own server, so they run
//! in parallel (`--test-threads 4`).

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::RangeInclusive;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use common::{bytes_of, lz4, raw_http, seg_name, signed_request, Server};
use serde_json::{json, Value};
use tokio::time::Instant;

const SEG: u64 = 16 << 20;
const BUCKET: &str = "pgbkt";
/// Data tar parts per backup (`part_001.tar.lz4` …), besides `pg_control.tar.lz4`.
const TAR_PARTS: usize = 2;
const SYSID: u64 = 7_312_345_678_901_234_567;

// ------------------------------------------------------------------------------------------------
// WAL-G object layout

/// PostgreSQL's `%X/%X` LSN text.
fn lsn_text(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)
}

fn wal_path(tl: u32, n: u64) -> String {
    format!("wal_005/{}.lz4", seg_name(tl, n))
}

fn wal_paths(tl: u32, ns: impl IntoIterator<Item = u64>) -> BTreeSet<String> {
    ns.into_iter().map(|n| wal_path(tl, n)).collect()
}

fn partial_path(tl: u32, n: u64) -> String {
    format!("wal_005/{}.partial.lz4", seg_name(tl, n))
}

fn history_path(tl: u32) -> String {
    format!("wal_005/{tl:08X}.history.lz4")
}

/// Deterministic plaintext of a segment (small: only names and bytes matter).
fn seg_content(tl: u32, n: u64) -> Vec<u8> {
    bytes_of(u64::from(tl) * 1_000_003 + n + 1, 2048)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// WAL-G's `%Y-%m-%dT%H:%M:%S.%fZ` (client clock = this machine's clock).
fn walg_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}000Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

/// First run of 24 upper-case hex digits in a key, as (timeline, segment
/// number) — WAL-G's `timelineAndSegmentNoLess` ordering for `delete`.
fn first24(key: &str) -> Option<(u32, u64)> {
    let b = key.as_bytes();
    let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
    let mut i = 0;
    while i + 24 <= b.len() {
        if b[i..i + 24].iter().all(|c| hex(*c)) {
            let s = &key[i..i + 24];
            let tl = u32::from_str_radix(&s[..8], 16).ok()?;
            let log = u64::from_str_radix(&s[8..16], 16).ok()?;
            let seg = u64::from_str_radix(&s[16..], 16).ok()?;
            return Some((tl, log * 256 + seg));
        }
        i += 1;
    }
    None
}

/// A backup as uploaded (all keys are full bucket keys, sentinel first).
#[derive(Clone, Debug)]
struct Backup {
    name: String,
    start_lsn: u64,
    count: u32,
    root: String,
    keys: Vec<String>,
}

impl Backup {
    fn sentinel(&self) -> &str {
        &self.keys[0]
    }

    fn key_set(&self) -> BTreeSet<String> {
        self.keys.iter().cloned().collect()
    }
}

// ------------------------------------------------------------------------------------------------
// A repository on its own server

struct Repo {
    srv: Server,
    c: aws_sdk_s3::Client,
    /// `spilo/<name>/wal/15/`
    prefix: String,
    /// `pgbkt/spilo/<name>/wal/15`
    target: String,
    /// The test clock at the start (ms since the epoch).
    t0: i64,
    /// One Part C "day", in milliseconds of the test clock.
    u: i64,
    /// The test clock now.
    clock: std::sync::atomic::AtomicI64,
    /// Data tar parts of each backup.
    tar_parts: usize,
    _dir: tempfile::TempDir,
}

struct Plan {
    frozen: Vec<Value>,
    /// Backup name → unit.
    backups: BTreeMap<String, Value>,
    /// WAL path (inside the repository) → reason.
    wal: BTreeMap<String, String>,
}

struct DeleteAnswer {
    status: u16,
    deleted: Vec<String>,
    errors: Vec<(String, String)>,
}

impl Repo {
    fn new(name: &str, u_ms: u64) -> Repo {
        Repo::with_args(name, u_ms, &[])
    }

    /// A repository on a server started with `extra` arguments.
    fn with_args(name: &str, u_ms: u64, extra: &[&str]) -> Repo {
        let dir = tempfile::tempdir().expect("tmp");
        let mut args = vec!["--bucket", BUCKET, "--test-clock"];
        args.extend_from_slice(extra);
        let srv = Server::start(dir.path(), &args);
        let c = srv.client();
        Repo {
            srv,
            c,
            prefix: format!("spilo/{name}/wal/15/"),
            target: format!("{BUCKET}/spilo/{name}/wal/15"),
            t0: now_ms(),
            u: u_ms as i64,
            clock: std::sync::atomic::AtomicI64::new(now_ms()),
            tar_parts: TAR_PARTS,
            _dir: dir,
        }
        .with_clock_set()
    }

    fn with_clock_set(self) -> Self {
        self.set_clock(self.t0);
        self
    }

    /// The test clock now (ms since the epoch).
    fn now_ms(&self) -> i64 {
        self.clock.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets the server's clock.
    fn set_clock(&self, ms: i64) {
        self.clock.store(ms, std::sync::atomic::Ordering::SeqCst);
        let t = ms.to_string();
        let req = signed_request(self.srv.port, "POST", "/_walstore/test-clock", &[("ms", &t)], b"", &[]);
        let (status, _, body) = raw_http(self.srv.port, &req);
        assert_eq!(status, 200, "setting the test clock: {}", String::from_utf8_lossy(&body));
    }

    /// Moves the clock on by `ms`.
    fn advance_ms(&self, ms: i64) {
        self.set_clock(self.now_ms() + ms);
    }

    /// `kill -9` of the server, restart on the same data directory.
    fn kill_and_restart(&mut self) {
        self.srv.kill();
        self.srv.spawn();
        self.c = self.srv.client();
        // A new process starts its test clock at the real time: put it back.
        self.set_clock(self.now_ms());
    }

    fn ms(&self, days: f64) -> String {
        format!("{}ms", (self.u as f64 * days).round() as u64)
    }

    /// Moves the clock to `t0 + days·u` (never backwards: uploads moved it on).
    async fn at(&self, days: f64) {
        let t = self.t0 + (self.u as f64 * days).round() as i64;
        if t > self.now_ms() {
            self.set_clock(t);
        }
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    fn keys(&self, paths: &BTreeSet<String>) -> BTreeSet<String> {
        paths.iter().map(|p| self.key(p)).collect()
    }

    fn wal(&self, tl: u32, n: u64) -> String {
        self.key(&wal_path(tl, n))
    }

    /// A PUT one millisecond after the previous one (see the module docs).
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), String> {
        self.advance_ms(1);
        put_object(&self.c, key, body).await
    }

    async fn must_put(&self, key: &str, body: Vec<u8>) {
        if let Err(e) = self.put(key, body).await {
            panic!("PUT {key}: {e}");
        }
    }

    /// `wal-push` of segments, in order.
    async fn segs(&self, tl: u32, r: RangeInclusive<u64>) {
        for n in r {
            self.must_put(&self.wal(tl, n), lz4(&seg_content(tl, n))).await;
        }
    }

    /// Many segments, 16 uploads at a time (WAL-G's upload concurrency).
    async fn segs_bulk(&self, tl: u32, r: RangeInclusive<u64>) {
        let all: Vec<u64> = r.collect();
        for chunk in all.chunks(16) {
            self.advance_ms(1);
            let mut set = tokio::task::JoinSet::new();
            for &n in chunk {
                let (c, k) = (self.c.clone(), self.wal(tl, n));
                set.spawn(async move { put_object(&c, &k, lz4(&seg_content(tl, n))).await });
            }
            while let Some(r) = set.join_next().await {
                r.expect("join").expect("segment upload");
            }
        }
    }

    async fn partial(&self, tl: u32, n: u64) {
        let mut body = seg_content(tl, n);
        body.truncate(1024);
        self.must_put(&self.key(&partial_path(tl, n)), lz4(&body)).await;
    }

    /// `<tl>.history` in PostgreSQL's text format: `parent<TAB>switch<TAB>reason`.
    fn history_text(entries: &[(u32, u64)]) -> String {
        entries.iter().map(|(p, l)| format!("{p}\t{}\tno recovery target specified\n", lsn_text(*l))).collect()
    }

    async fn history(&self, tl: u32, entries: &[(u32, u64)]) {
        self.must_put(&self.key(&history_path(tl)), lz4(Self::history_text(entries).as_bytes())).await;
    }

    fn backup_name(tl: u32, start_seg: u64, parent: Option<&Backup>) -> String {
        match parent {
            Some(p) => format!("base_{}_D_{}", seg_name(tl, start_seg), &p.name[5..29]),
            None => format!("base_{}", seg_name(tl, start_seg)),
        }
    }

    fn tar_keys(&self, name: &str) -> Vec<String> {
        (1..=self.tar_parts)
            .map(|i| format!("part_{i:03}.tar.lz4"))
            .chain(["pg_control.tar.lz4".to_owned()])
            .map(|t| self.key(&format!("basebackups_005/{name}/tar_partitions/{t}")))
            .collect()
    }

    fn metadata(start: u64, finish: u64, permanent: bool, t_start: i64, t_finish: i64) -> String {
        json!({
            "start_time": walg_time(t_start), "finish_time": walg_time(t_finish),
            "date_fmt": "%Y-%m-%dT%H:%M:%S.%fZ", "hostname": "db1", "data_dir": "/var/lib/postgresql/data",
            "pg_version": 150_002, "start_lsn": start, "finish_lsn": finish, "is_permanent": permanent,
            "system_identifier": SYSID, "uncompressed_size": 31_981_712, "compressed_size": 4_262_375,
            "user_data": null
        })
        .to_string()
    }

    /// `backup-push`: tar parts, metadata.json, files_metadata.json, then the
    /// stop sentinel. Starts in `start_seg`, finishes in `finish_seg` (whose
    /// WAL the caller has archived: `pg_backup_stop` waits for it).
    async fn backup(
        &self,
        tl: u32,
        start_seg: u64,
        finish_seg: u64,
        parent: Option<&Backup>,
        permanent: bool,
    ) -> Backup {
        let name = Self::backup_name(tl, start_seg, parent);
        let (start, finish) = (start_seg * SEG + 0x28, finish_seg * SEG + 0x100);
        let t_start = self.now_ms();
        let mut keys = vec![self.key(&format!("basebackups_005/{name}_backup_stop_sentinel.json"))];
        for (i, k) in self.tar_keys(&name).into_iter().enumerate() {
            self.must_put(&k, lz4(&bytes_of(start_seg * 31 + i as u64 + u64::from(tl) * 7919, 4096))).await;
            keys.push(k);
        }
        let t_finish = self.now_ms();
        let meta = self.key(&format!("basebackups_005/{name}/metadata.json"));
        self.must_put(&meta, Self::metadata(start, finish, permanent, t_start, t_finish).into_bytes()).await;
        keys.push(meta);
        let files = self.key(&format!("basebackups_005/{name}/files_metadata.json"));
        let fm = json!({"Files": {"/base/1/1259": {"IsIncremented": parent.is_some(), "IsSkipped": false,
            "MTime": walg_time(t_start), "UpdatesCount": 0}},
            "TarFileSets": {"part_001.tar.lz4": ["/base/1/1259"]}, "DatabasesByNames": {}});
        self.must_put(&files, fm.to_string().into_bytes()).await;
        keys.push(files);
        let mut s = json!({
            "LSN": start, "FinishLSN": finish, "PgVersion": 150_002, "SystemIdentifier": SYSID,
            "UncompressedSize": 31_981_712, "CompressedSize": 4_262_375, "DataCatalogSize": 31_981_712,
            "Spec": null, "UserData": null, "FilesMetadataDisabled": false, "ChkpNum": null,
            "Version": 2, "StartTime": walg_time(t_start), "FinishTime": walg_time(t_finish),
            "DateFmt": "%Y-%m-%dT%H:%M:%S.%fZ", "Hostname": "db1", "DataDir": "/var/lib/postgresql/data",
            "IsPermanent": permanent
        });
        let (count, root) = match parent {
            Some(p) => {
                s["DeltaFrom"] = json!(p.name);
                s["DeltaFullName"] = json!(p.root);
                s["DeltaLSN"] = json!(p.start_lsn);
                s["DeltaCount"] = json!(p.count + 1);
                (p.count + 1, p.root.clone())
            }
            None => (0, name.clone()),
        };
        self.must_put(&keys[0], s.to_string().into_bytes()).await;
        Backup { name, start_lsn: start, count, root, keys }
    }

    /// A backup still being uploaded (or aborted): tar parts only, no sentinel.
    async fn unfinished(&self, tl: u32, start_seg: u64, parent: Option<&Backup>) -> Backup {
        let name = Self::backup_name(tl, start_seg, parent);
        let mut keys = Vec::new();
        for (i, k) in self.tar_keys(&name).into_iter().take(2).enumerate() {
            self.must_put(&k, lz4(&bytes_of(start_seg * 37 + i as u64 + 99, 4096))).await;
            keys.push(k);
        }
        Backup {
            name: name.clone(),
            start_lsn: start_seg * SEG + 0x28,
            count: parent.map_or(0, |p| p.count + 1),
            root: parent.map_or(name, |p| p.root.clone()),
            keys,
        }
    }

    /// `wal-g backup-mark <name>`: rewrites metadata.json only.
    async fn mark_permanent(&self, b: &Backup, start_seg: u64, finish_seg: u64) {
        let meta = self.key(&format!("basebackups_005/{}/metadata.json", b.name));
        let body = Self::metadata(start_seg * SEG + 0x28, finish_seg * SEG + 0x100, true, self.now_ms(), self.now_ms());
        self.must_put(&meta, body.into_bytes()).await;
    }

    async fn exists(&self, key: &str) -> bool {
        self.c.head_object().bucket(BUCKET).key(key).send().await.is_ok()
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        let o = self.c.get_object().bucket(BUCKET).key(key).send().await.unwrap_or_else(|e| panic!("GET {key}: {e}"));
        o.body.collect().await.expect("body").into_bytes().to_vec()
    }

    /// Every key of the repository (full listing).
    async fn all_keys(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let r = self
                .c
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(&self.prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .expect("list");
            out.extend(r.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match r.next_continuation_token() {
                Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return out,
            }
        }
    }

    /// The keys `wal-g delete` selects, in its order: a breadth-first walk of
    /// delimiter listings from the repository root (sentinels, then WAL, then
    /// each backup folder's files, then the tar_partitions folders).
    async fn walg_walk(&self) -> Vec<String> {
        let mut queue = VecDeque::from([self.prefix.clone()]);
        let mut out = Vec::new();
        while let Some(p) = queue.pop_front() {
            let mut token: Option<String> = None;
            loop {
                let r = self
                    .c
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix(&p)
                    .delimiter("/")
                    .set_continuation_token(token.clone())
                    .send()
                    .await
                    .expect("list");
                out.extend(r.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
                queue.extend(r.common_prefixes().iter().filter_map(|c| c.prefix().map(str::to_owned)));
                match r.next_continuation_token() {
                    Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => break,
                }
            }
        }
        out
    }

    /// DeleteObjects exactly as WAL-G ≤ 3.0.9 sends it: `Content-MD5`, no
    /// `<Quiet>`, an empty `<VersionId></VersionId>` with every key (element
    /// order varies), batches of at most 1000 keys, sent one after another.
    fn walg_delete(&self, keys: &[String]) -> Vec<DeleteAnswer> {
        keys.chunks(1000)
            .map(|batch| {
                let mut body = String::from(r#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#);
                for (i, k) in batch.iter().enumerate() {
                    if i % 2 == 0 {
                        body.push_str(&format!("<Object><VersionId></VersionId><Key>{k}</Key></Object>"));
                    } else {
                        body.push_str(&format!("<Object><Key>{k}</Key><VersionId></VersionId></Object>"));
                    }
                }
                body.push_str("</Delete>");
                let md5 = {
                    use md5::{Digest, Md5};
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, Md5::digest(body.as_bytes()))
                };
                let req = signed_request(
                    self.srv.port,
                    "POST",
                    &format!("/{BUCKET}"),
                    &[("delete", "")],
                    body.as_bytes(),
                    &[("content-md5", md5)],
                );
                let (status, _, resp) = raw_http(self.srv.port, &req);
                let text = String::from_utf8_lossy(&resp).into_owned();
                let mut a = DeleteAnswer { status, deleted: Vec::new(), errors: Vec::new() };
                for part in text.split("<Deleted>").skip(1) {
                    a.deleted.push(tag(part, "Key"));
                }
                for part in text.split("<Error>").skip(1) {
                    a.errors.push((tag(part, "Key"), tag(part, "Code")));
                }
                a
            })
            .collect()
    }

    /// Single DeleteObject without a version id: HTTP status.
    fn raw_delete(&self, key: &str) -> u16 {
        let req = signed_request(self.srv.port, "DELETE", &format!("/{BUCKET}/{key}"), &[], b"", &[]);
        raw_http(self.srv.port, &req).0
    }

    // ---------------------------------------------------------------- CLI / admin API

    /// `walstore <args> --endpoint … --json` with the root key.
    fn cli(&self, args: &[&str]) -> (bool, Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_walstore"))
            .args(args)
            .args(["--endpoint", &self.srv.endpoint(), "--json"])
            .env("WALSTORE_ROOT_ACCESS_KEY", common::ACCESS_KEY)
            .env("WALSTORE_ROOT_SECRET_KEY", common::SECRET_KEY)
            .output()
            .expect("run cli");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (out.status.success(), v, format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }

    /// `walstore policy set BUCKET/PREFIX <flags>`.
    fn policy(&self, flags: &[&str]) {
        let mut args = vec!["policy", "set", self.target.as_str()];
        args.extend_from_slice(flags);
        let (ok, _, out) = self.cli(&args);
        assert!(ok, "policy set {flags:?}: {out}");
    }

    /// The scaled base policy of Part C: min_object_age 0, clock skew 0, and
    /// gc.delay 0 unless the scenario sets it.
    fn base_policy(&self, flags: &[&str]) {
        let mut all = vec!["--min-object-age", "0s", "--clock-skew", "0s"];
        if !flags.contains(&"--gc-delay") {
            all.extend(["--gc-delay", "0s"]);
        }
        all.extend_from_slice(flags);
        self.policy(&all);
    }

    /// `branch_quiet_period` has no `policy set` flag: PUT the policy document
    /// to the admin API (as the CLI does) with just that field.
    fn quiet_period(&self, days: f64) {
        let doc = json!({ "branch_quiet_period": self.ms(days) }).to_string();
        let req = signed_request(
            self.srv.port,
            "PUT",
            "/_walstore/policy",
            &[("bucket", BUCKET), ("prefix", &self.prefix)],
            doc.as_bytes(),
            &[],
        );
        let (status, _, body) = raw_http(self.srv.port, &req);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Recovery window such that `now − window` lies just after `finished`
    /// (ms): the backup that finished then is the window anchor, and the next
    /// one stays inside the window for almost a whole step.
    fn window_edge_after(&self, finished: i64) {
        let d = (self.now_ms() - finished - 1).max(1);
        self.policy(&["--recovery-window", &format!("{d}ms")]);
    }

    /// `walstore status BUCKET/PREFIX --json` → the repository.
    fn status(&self) -> Value {
        let (ok, v, out) = self.cli(&["status", &self.target]);
        assert!(ok, "{out}");
        let r = v["repositories"][0].clone();
        assert_eq!(r["prefix"], self.prefix.as_str(), "{out}");
        r
    }

    fn status_full(&self) -> Value {
        let (ok, v, out) = self.cli(&["status", &self.target]);
        assert!(ok, "{out}");
        v
    }

    fn plan(&self) -> Plan {
        let (ok, v, out) = self.cli(&["retention", "plan", &self.target]);
        assert!(ok, "{out}");
        let p = &v["plans"][0];
        assert_eq!(p["prefix"], self.prefix.as_str(), "{out}");
        let mut plan = Plan {
            frozen: p["frozen"].as_array().cloned().unwrap_or_default(),
            backups: BTreeMap::new(),
            wal: BTreeMap::new(),
        };
        for u in p["units"].as_array().into_iter().flatten() {
            if let Some(b) = u.get("Backup") {
                plan.backups.insert(b["name"].as_str().expect("name").to_owned(), b.clone());
            } else if let Some(w) = u.get("Wal") {
                plan.wal
                    .insert(w["path"].as_str().expect("path").to_owned(), w["reason"].as_str().unwrap_or("").into());
            } else {
                panic!("unknown unit {u}");
            }
        }
        plan
    }

    /// `walstore retention run` → objects deleted.
    fn run(&self) -> u64 {
        let (ok, v, out) = self.cli(&["retention", "run", &self.target]);
        assert!(ok, "{out}");
        v["runs"][0]["deleted_objects"].as_u64().expect("deleted_objects")
    }
}

impl Plan {
    fn wal_set(&self) -> BTreeSet<String> {
        self.wal.keys().cloned().collect()
    }

    fn backup_set(&self) -> BTreeSet<String> {
        self.backups.keys().cloned().collect()
    }

    /// Every path the plan would delete (inside the repository).
    fn paths(&self) -> BTreeSet<String> {
        let mut out = self.wal_set();
        for b in self.backups.values() {
            out.extend(b["paths"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)));
        }
        out
    }

    fn assert_not_frozen(&self) {
        assert!(self.frozen.is_empty(), "frozen: {:?}", self.frozen);
    }
}

async fn put_object(c: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) -> Result<(), String> {
    match c.put_object().bucket(BUCKET).key(key).body(ByteStream::from(body)).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            let se = e.into_service_error();
            Err(format!("{status} {}: {}", se.code().unwrap_or(""), se.message().unwrap_or("")))
        }
    }
}

fn tag(s: &str, name: &str) -> String {
    s.split(&format!("<{name}>")).nth(1).and_then(|r| r.split(&format!("</{name}>")).next()).unwrap_or("").to_owned()
}

// ------------------------------------------------------------------------------------------------
// status JSON

fn view<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["backups"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("backup {name} not in status: {st}"))
}

fn role(st: &Value, name: &str) -> Option<String> {
    view(st, name)["role"].as_str().map(str::to_owned)
}

fn reasons(st: &Value, name: &str) -> String {
    view(st, name)["reasons"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect::<Vec<_>>().join("; ")
}

fn status_of(st: &Value, name: &str) -> String {
    match &view(st, name)["status"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        other => other.to_string(),
    }
}

fn finished(st: &Value, name: &str) -> i64 {
    view(st, name)["finished_at"].as_i64().unwrap_or_else(|| panic!("{name} has no finish time"))
}

fn kept(st: &Value) -> BTreeMap<String, String> {
    st["backups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| Some((b["name"].as_str()?.to_owned(), b["role"].as_str()?.to_owned())))
        .collect()
}

/// A required WAL range `timeline [from, to]` whose rule mentions `why`.
fn has_range(st: &Value, tl: u32, from: u64, to: Option<u64>, why: &str) -> bool {
    st["required_wal"].as_array().into_iter().flatten().any(|r| {
        r["timeline"] == tl
            && r["from"] == from
            && r["to"].as_u64() == to
            && r["reason"].as_str().is_some_and(|s| s.contains(why))
    })
}

fn frozen(st: &Value) -> Vec<Value> {
    st["frozen"].as_array().cloned().unwrap_or_default()
}

// ================================================================================================
// Scenarios

/// #1 — TL1 only, daily fulls F(−10)…F(0), continuous WAL, D = 7d, M = 2:
/// anchor F(−8), F(−9)/F(−10) and the WAL before F(−8)'s start collected; the
/// coverage report reaches back past now − D (stands in for ★ PITR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c01_daily_fulls_anchor_is_newest_before_the_window() {
    let r = Repo::new("c01", 500);
    r.base_policy(&["--min-backups", "2", "--archive-lag-grace", "1s"]);
    let mut f = Vec::new(); // f[0] = F(−10) … f[10] = F(0)
    for day in 0..=10u64 {
        r.at(day as f64).await;
        r.segs(1, 3 * day..=3 * day + 2).await;
        f.push(r.backup(1, 3 * day + 1, 3 * day + 2, None, false).await);
    }
    r.segs(1, 33..=34).await;
    let st = r.status();
    let anchor = &f[2];
    let edge = finished(&st, &anchor.name);
    assert!(edge < finished(&st, &f[3].name));

    r.window_edge_after(edge);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert_eq!(plan.backup_set(), [f[0].name.clone(), f[1].name.clone()].into(), "F(−10), F(−9) go");
    for old in &f[..2] {
        let u = &plan.backups[&old.name];
        let paths: Vec<String> =
            u["paths"].as_array().into_iter().flatten().map(|p| r.key(p.as_str().unwrap_or(""))).collect();
        assert_eq!(paths[0], old.sentinel(), "a unit is deleted sentinel first");
        assert_eq!(paths.iter().cloned().collect::<BTreeSet<_>>(), old.key_set());
    }
    // WAL < start_seg(F(−8)) = 7 goes; F(−8)'s own segment and everything after stays.
    assert_eq!(plan.wal_set(), wal_paths(1, 0..=6));

    r.window_edge_after(edge);
    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    for b in &f[2..] {
        assert_eq!(role(&st, &b.name).as_deref(), Some("Pitr"), "{} kept", b.name);
    }
    assert!(reasons(&st, &anchor.name).contains("anchor"), "{}", reasons(&st, &anchor.name));
    assert_eq!(role(&st, &f[0].name), None);
    assert_eq!(role(&st, &f[1].name), None);
    assert!(has_range(&st, 1, 7, None, "continuous WAL from the oldest PITR backup"), "{}", st["required_wal"]);
    let rep = &st["report"];
    assert_eq!(rep["gaps"].as_array().map(Vec::len), Some(0), "{rep}");
    assert_eq!(rep["last_segment"][0], seg_name(1, 34).as_str());
    let w = rep["windows"].as_array().cloned().unwrap_or_default();
    assert_eq!(w.len(), 1, "{rep}");
    assert_eq!(w[0]["backup"], anchor.name.as_str());
    // The recoverable interval starts at the anchor's finish (before now − D)
    // and reaches the last archived segment: PITR to now − D is possible.
    assert_eq!(w[0]["from"].as_i64(), Some(edge));
    assert_eq!(w[0]["to"], rep["last_segment"][1]);
    assert_eq!(w[0]["to_lsn"].as_u64(), Some(35 * SEG));

    r.window_edge_after(edge);
    assert_eq!(r.run(), 2 * 6 + 7);
    for old in &f[..2] {
        for k in &old.keys {
            assert!(!r.exists(k).await, "{k} collected");
        }
    }
    assert!(!r.exists(&r.wal(1, 6)).await);
    assert!(r.exists(&r.wal(1, 7)).await);
    for b in &f[2..] {
        for k in &b.keys {
            assert!(r.exists(k).await, "{k} kept");
        }
    }
}

/// #2 / #3 — failover TL1 → TL2 at S = 10, mid-segment (with TL1 `S.partial`)
/// or exactly on the segment boundary. F1(−9) on TL1, F2(−2) on TL2, N = 2,
/// D = 1d. The old primary also archived a full TL1 segment S (a "TL1 ≥ S"
/// tail). branch_grace is 4 steps so its expiry can be observed.
async fn failover(boundary: bool) {
    let r = Repo::new(if boundary { "c03" } else { "c02" }, 400);
    let day = r.ms(1.0);
    let grace = r.ms(4.0);
    r.base_policy(&[
        "--full-count",
        "2",
        "--min-backups",
        "2",
        "--recovery-window",
        &day,
        "--branch-grace",
        &grace,
        "--archive-lag-grace",
        "1s",
    ]);
    r.quiet_period(0.5);
    const S: u64 = 10;
    let switch = if boundary { S * SEG } else { S * SEG + 0x4000 };
    r.at(0.0).await;
    r.segs(1, 0..=3).await;
    let f1 = r.backup(1, 1, 2, None, false).await;
    r.at(1.0).await;
    r.segs(1, 4..=S - 1).await;
    r.at(2.0).await;
    r.segs(1, S..=S).await; // old primary's divergent tail past the switch
    if !boundary {
        r.partial(1, S).await; // archived by the promoted standby
    }
    r.history(2, &[(1, switch)]).await;
    r.segs(2, S..=S + 4).await;
    r.at(3.0).await;
    r.segs(2, S + 5..=S + 7).await;
    let f2 = r.backup(2, S + 6, S + 7, None, false).await;
    r.at(4.0).await;
    r.segs(2, S + 8..=S + 9).await;

    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    assert_eq!(st["head_timeline"], 2);
    assert_eq!(role(&st, &f1.name).as_deref(), Some("Pitr"));
    assert!(reasons(&st, &f1.name).contains("newest full"), "{}", reasons(&st, &f1.name));
    assert_eq!(role(&st, &f2.name).as_deref(), Some("Pitr"));
    assert_eq!(view(&st, &f1.name)["main"], true);
    // TL1 up to S−1 from F1's start, TL2 from S (the switch segment is the child's).
    assert!(has_range(&st, 1, 1, Some(S - 1), "continuous WAL"), "{}", st["required_wal"]);
    assert!(has_range(&st, 2, S, None, "continuous WAL"), "{}", st["required_wal"]);
    assert!(has_range(&st, 1, S, None, "abandoned branch"), "{}", st["required_wal"]);
    // ★ restore F1 with target `latest` reaches the TL2 head.
    let w = st["report"]["windows"].as_array().cloned().unwrap_or_default();
    assert_eq!(w.len(), 1, "{}", st["report"]);
    assert_eq!(w[0]["backup"], f1.name.as_str());
    assert_eq!(w[0]["to_lsn"].as_u64(), Some((S + 10) * SEG));

    let plan = r.plan();
    plan.assert_not_frozen();
    assert!(plan.backups.is_empty(), "{:?}", plan.backups);
    assert_eq!(plan.wal_set(), wal_paths(1, [0]), "only WAL before F1 goes");
    // No off-by-one: a client may delete none of S−1 (TL1), S (TL2), the
    // abandoned tail inside the grace, or the history file.
    let mut protected = vec![r.wal(1, S - 1), r.wal(2, S), r.wal(1, S), r.key(&history_path(2))];
    if !boundary {
        protected.push(r.key(&partial_path(1, S)));
    }
    for k in &protected {
        assert_eq!(r.raw_delete(k), 403, "{k}");
        assert!(r.exists(k).await, "{k}");
    }

    // After branch_grace the tail and the partial go; the history file never.
    r.at(6.6).await;
    let plan = r.plan();
    plan.assert_not_frozen();
    let mut expect = wal_paths(1, [0, S]);
    if !boundary {
        expect.insert(partial_path(1, S));
    }
    assert_eq!(plan.wal_set(), expect);
    assert_eq!(r.run(), expect.len() as u64);
    for k in [r.wal(1, S), r.key(&partial_path(1, S)), r.wal(1, 0)] {
        assert!(!r.exists(&k).await, "{k}");
    }
    for k in
        [r.wal(1, 1), r.wal(1, S - 1), r.wal(2, S), r.key(&history_path(2)), f1.keys[0].clone(), f2.keys[0].clone()]
    {
        assert!(r.exists(&k).await, "{k}");
    }
    let st = r.status();
    assert_eq!(st["report"]["windows"][0]["to_lsn"].as_u64(), Some((S + 10) * SEG), "{}", st["report"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c02_failover_mid_segment() {
    failover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c03_failover_on_segment_boundary() {
    failover(true).await;
}

/// #4 — history chain 1 → 2 → 3 (S1 = 10, S2 = 20), anchor B on TL1: the
/// required path switches timeline at each switch segment; both abandoned
/// tails (TL1 ≥ S1, TL2 ≥ S2, with their `.partial`) are kept for the grace
/// and then collected; the history files stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c04_three_timelines() {
    let r = Repo::new("c04", 400);
    let (day, grace) = (r.ms(1.0), r.ms(3.0));
    r.base_policy(&["--recovery-window", &day, "--branch-grace", &grace, "--archive-lag-grace", "1s"]);
    r.quiet_period(0.5);
    let (sw1, sw2) = (10 * SEG + 0x100, 20 * SEG + 0x200);
    r.at(0.0).await;
    r.segs(1, 0..=5).await;
    let b = r.backup(1, 2, 3, None, false).await;
    r.at(1.0).await;
    r.segs(1, 6..=11).await; // 10, 11: TL1 tail past S1
    r.partial(1, 10).await;
    r.at(2.0).await;
    r.history(2, &[(1, sw1)]).await;
    r.segs(2, 10..=21).await; // 20, 21: TL2 tail past S2
    r.partial(2, 20).await;
    r.at(3.0).await;
    r.history(3, &[(1, sw1), (2, sw2)]).await;
    r.segs(3, 20..=25).await;

    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    assert_eq!(st["head_timeline"], 3);
    assert_eq!(role(&st, &b.name).as_deref(), Some("Pitr"));
    assert!(reasons(&st, &b.name).contains("anchor"), "{}", reasons(&st, &b.name));
    let req = &st["required_wal"];
    assert!(has_range(&st, 1, 2, Some(9), "continuous WAL"), "{req}");
    assert!(has_range(&st, 2, 10, Some(19), "continuous WAL"), "{req}");
    assert!(has_range(&st, 3, 20, None, "continuous WAL"), "{req}");
    assert!(has_range(&st, 1, 10, None, "abandoned branch"), "{req}");
    assert!(has_range(&st, 2, 20, None, "abandoned branch"), "{req}");
    assert_eq!(st["report"]["windows"][0]["to_lsn"].as_u64(), Some(26 * SEG), "{}", st["report"]);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert_eq!(plan.wal_set(), wal_paths(1, [0, 1]));
    for k in [r.wal(1, 10), r.wal(2, 20), r.key(&partial_path(2, 20)), r.key(&history_path(3))] {
        assert_eq!(r.raw_delete(&k), 403, "{k}");
    }

    r.at(5.7).await;
    let plan = r.plan();
    plan.assert_not_frozen();
    let mut expect = wal_paths(1, [0, 1, 10, 11]);
    expect.extend(wal_paths(2, [20, 21]));
    expect.insert(partial_path(1, 10));
    expect.insert(partial_path(2, 20));
    assert_eq!(plan.wal_set(), expect);
    assert_eq!(r.run(), expect.len() as u64);
    for k in [r.key(&history_path(2)), r.key(&history_path(3)), r.wal(1, 9), r.wal(2, 19), r.wal(3, 20)] {
        assert!(r.exists(&k).await, "{k}");
    }
    for k in [r.wal(1, 10), r.wal(2, 21), r.key(&partial_path(2, 20))] {
        assert!(!r.exists(&k).await, "{k}");
    }
}

/// F(−20), D1(−13), D2(−6), D3(−1) (each delta of the previous), D = 7d: the
/// edge falls between D1 and D2.
async fn delta_chain(name: &str) -> (Repo, [Backup; 4], i64) {
    let r = Repo::new(name, 400);
    r.base_policy(&["--min-backups", "2", "--archive-lag-grace", "1s"]);
    r.at(0.0).await;
    r.segs(1, 0..=3).await;
    let f = r.backup(1, 1, 2, None, false).await;
    r.at(1.0).await;
    r.segs(1, 4..=9).await;
    let d1 = r.backup(1, 8, 9, Some(&f), false).await;
    r.at(2.0).await;
    r.segs(1, 10..=15).await;
    let d2 = r.backup(1, 14, 15, Some(&d1), false).await;
    r.at(3.0).await;
    r.segs(1, 16..=19).await;
    let d3 = r.backup(1, 18, 19, Some(&d2), false).await;
    r.segs(1, 20..=21).await;
    let edge = finished(&r.status(), &d1.name);
    (r, [f, d1, d2, d3], edge)
}

/// #7 — delta chain: anchor D1; F kept as `ancestor` with its own WAL only;
/// WAL between F's finish and D1's start collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c07_delta_chain_anchor_and_ancestor() {
    let (r, [f, d1, d2, d3], edge) = delta_chain("c07").await;
    assert!(d1.name.ends_with(&f.name[5..29]) && d2.name.contains("_D_"), "{} {}", d1.name, d2.name);
    r.window_edge_after(edge);
    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    assert_eq!(role(&st, &f.name).as_deref(), Some("Ancestor"));
    assert!(reasons(&st, &f.name).contains("delta ancestor of kept backup"), "{}", reasons(&st, &f.name));
    for b in [&d1, &d2, &d3] {
        assert_eq!(role(&st, &b.name).as_deref(), Some("Pitr"), "{}", b.name);
        assert_eq!(view(&st, &b.name)["full"], false);
    }
    assert!(reasons(&st, &d1.name).contains("anchor"), "{}", reasons(&st, &d1.name));
    assert!(has_range(&st, 1, 1, Some(2), &format!("WAL of kept backup {}", f.name)), "{}", st["required_wal"]);
    assert!(has_range(&st, 1, 8, None, "continuous WAL"), "{}", st["required_wal"]);
    // ★ restore D2 / PITR to now − 7d: recoverable from D1's finish to the head.
    let w = &st["report"]["windows"][0];
    assert_eq!(w["backup"], d1.name.as_str());
    assert_eq!(w["from"].as_i64(), Some(edge));
    assert_eq!(w["to_lsn"].as_u64(), Some(22 * SEG));

    r.window_edge_after(edge);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert!(plan.backups.is_empty(), "{:?}", plan.backups);
    assert_eq!(plan.wal_set(), wal_paths(1, [0, 3, 4, 5, 6, 7]));
    r.window_edge_after(edge);
    assert_eq!(r.run(), 6);
    for n in [0, 3, 7] {
        assert!(!r.exists(&r.wal(1, n)).await, "segment {n}");
    }
    for n in [1, 2, 8, 21] {
        assert!(r.exists(&r.wal(1, n)).await, "segment {n}");
    }
    for b in [&f, &d1, &d2, &d3] {
        for k in &b.keys {
            assert!(r.exists(k).await, "{k}");
        }
    }
}

/// #8 — `wal-g delete target <D1>` on the kept chain: DeleteObjects for every
/// object of D1, D2, D3 (sentinels first), each key AccessDenied inside a 200,
/// nothing removed, refusals visible in the status API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c08_delete_target_of_kept_delta_chain_is_refused() {
    let (r, [f, d1, d2, d3], edge) = delta_chain("c08").await;
    r.window_edge_after(edge);
    let plan = r.plan(); // a fresh evaluation for the delete guard
    plan.assert_not_frozen();
    let chain = [&d1, &d2, &d3];
    let keys: Vec<String> =
        r.walg_walk().await.into_iter().filter(|k| chain.iter().any(|b| k.contains(&b.name))).collect();
    assert_eq!(keys.len(), 18, "{keys:?}");
    assert!(keys[..3].iter().all(|k| k.ends_with("_backup_stop_sentinel.json")), "sentinels first: {keys:?}");
    let answers = r.walg_delete(&keys);
    assert_eq!(answers.len(), 1);
    let a = &answers[0];
    assert_eq!(a.status, 200);
    assert!(a.deleted.is_empty(), "{:?}", a.deleted);
    assert_eq!(a.errors.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), keys);
    assert!(a.errors.iter().all(|e| e.1 == "AccessDenied"), "{:?}", a.errors);
    for b in [&f, &d1, &d2, &d3] {
        for k in &b.keys {
            assert!(r.exists(k).await, "{k}");
        }
    }
    let v = r.status_full();
    let refused: BTreeSet<String> = v["refused_deletes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["key"].as_str().map(str::to_owned))
        .collect();
    assert!(keys.iter().all(|k| refused.contains(k)), "{}", v["refused_deletes"]);
}

/// #9 — permanent P (oldest; `IsPermanent=false` in the sentinel, true in
/// metadata.json after `backup-mark`): kept as standalone with
/// `[seg(start−1), seg(finish−1)]` only; WAL between P and the anchor
/// collected; P is no PITR start in the coverage report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c09_permanent_backup_is_standalone() {
    let r = Repo::new("c09", 400);
    r.base_policy(&["--min-backups", "2", "--archive-lag-grace", "1s"]);
    r.at(0.0).await;
    r.segs(1, 0..=5).await;
    let p = r.backup(1, 1, 3, None, false).await;
    r.mark_permanent(&p, 1, 3).await;
    r.at(1.0).await;
    r.segs(1, 6..=15).await;
    let a = r.backup(1, 12, 13, None, false).await;
    r.at(2.0).await;
    r.segs(1, 16..=21).await;
    let b = r.backup(1, 18, 19, None, false).await;
    r.segs(1, 22..=23).await;
    let edge = finished(&r.status(), &a.name);

    r.window_edge_after(edge);
    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    assert_eq!(view(&st, &p.name)["permanent"], true);
    assert_eq!(role(&st, &p.name).as_deref(), Some("Standalone"));
    assert!(reasons(&st, &p.name).contains("permanent"), "{}", reasons(&st, &p.name));
    assert_eq!(role(&st, &a.name).as_deref(), Some("Pitr"));
    assert!(reasons(&st, &a.name).contains("anchor"));
    assert_eq!(role(&st, &b.name).as_deref(), Some("Pitr"));
    assert!(has_range(&st, 1, 1, Some(3), &format!("WAL of kept backup {}", p.name)), "{}", st["required_wal"]);
    assert!(has_range(&st, 1, 12, None, "continuous WAL"), "{}", st["required_wal"]);
    let w = st["report"]["windows"].as_array().cloned().unwrap_or_default();
    assert!(!w.is_empty() && w.iter().all(|w| w["backup"] != p.name.as_str()), "{w:?}");
    assert_eq!(w[0]["backup"], a.name.as_str());

    r.window_edge_after(edge);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert!(plan.backups.is_empty());
    let mut expect = wal_paths(1, [0]);
    expect.extend(wal_paths(1, 4..=11));
    assert_eq!(plan.wal_set(), expect);
    r.window_edge_after(edge);
    assert_eq!(r.run(), 9);
    for k in &p.keys {
        assert!(r.exists(k).await, "{k}");
    }
    for n in 1..=3 {
        assert!(r.exists(&r.wal(1, n)).await, "P's segment {n}");
    }
    for n in [0, 4, 11] {
        assert!(!r.exists(&r.wal(1, n)).await, "segment {n}");
    }
}

/// #9 via `backup-mark` shortly before a client delete: B8.5 says a
/// false → true flip of `is_permanent` takes effect immediately, and B9
/// protects objects written since the last evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c09_backup_mark_protects_at_once() {
    let r = Repo::new("c09b", 300);
    r.base_policy(&["--min-backups", "1", "--recovery-window", "1ms", "--archive-lag-grace", "1s"]);
    r.segs(1, 0..=3).await;
    let old = r.backup(1, 1, 2, None, false).await;
    r.segs(1, 4..=7).await;
    let _newest = r.backup(1, 5, 6, None, false).await;
    r.advance_ms(2); // the 1 ms window moves past the newest backup's finish
    let plan = r.plan();
    assert!(plan.backups.contains_key(&old.name), "not needed before the mark");
    r.mark_permanent(&old, 1, 2).await; // wal-g backup-mark
    let answers = r.walg_delete(&old.keys); // wal-g delete target <old>
    assert_eq!(answers[0].errors.len(), old.keys.len(), "every key refused: {:?}", answers[0].deleted);
    for k in &old.keys {
        assert!(r.exists(k).await, "{k}");
    }
}

/// #13 — lost segment X = 10 between F(−6) and F(−3) (later segments arrived
/// long ago, so it is not pending): alert, gap reported as lost, the
/// recoverable interval split at X, all four backups kept, nothing after the
/// gap collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_lost_segment() {
    let r = Repo::new("c13", 400);
    let lag = r.ms(0.5);
    r.base_policy(&["--min-backups", "2", "--archive-lag-grace", &lag]);
    r.at(0.0).await;
    r.segs(1, 0..=3).await;
    let f8 = r.backup(1, 1, 2, None, false).await;
    r.at(1.0).await;
    r.segs(1, 4..=7).await;
    let f6 = r.backup(1, 5, 6, None, false).await;
    r.at(2.0).await;
    r.segs(1, 8..=9).await;
    r.segs(1, 11..=13).await; // X = 10 never arrives
    let f3 = r.backup(1, 12, 13, None, false).await;
    r.at(3.0).await;
    r.segs(1, 14..=17).await;
    let f0 = r.backup(1, 15, 16, None, false).await;
    let st = r.status();
    let edge = finished(&st, &f8.name);
    let f3_finish = finished(&st, &f3.name);

    r.window_edge_after(edge);
    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    for b in [&f8, &f6, &f3, &f0] {
        assert_eq!(role(&st, &b.name).as_deref(), Some("Pitr"), "{}", b.name);
    }
    assert!(reasons(&st, &f8.name).contains("anchor"));
    let gaps = st["report"]["gaps"].as_array().cloned().unwrap_or_default();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["first"], seg_name(1, 10).as_str());
    assert_eq!(gaps[0]["last"], seg_name(1, 10).as_str());
    assert_eq!(gaps[0]["segments"], 1);
    assert_eq!(gaps[0]["pending"], false);
    let alerts = st["alerts"].to_string();
    assert!(alerts.contains("lost WAL") && alerts.contains(&seg_name(1, 10)), "{alerts}");
    // Instants between X and F(−3)'s finish are not recoverable.
    let w = st["report"]["windows"].as_array().cloned().unwrap_or_default();
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0]["backup"], f8.name.as_str());
    assert_eq!(w[0]["to_lsn"].as_u64(), Some(10 * SEG));
    assert_eq!(w[1]["backup"], f3.name.as_str());
    assert_eq!(w[1]["from"].as_i64(), Some(f3_finish));
    assert!(w[0]["to"].as_i64() < w[1]["from"].as_i64());

    r.window_edge_after(edge);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert!(plan.backups.is_empty());
    assert_eq!(plan.wal_set(), wal_paths(1, [0]));
    r.window_edge_after(edge);
    assert_eq!(r.run(), 1);
    for n in [1, 9, 11, 17] {
        assert!(r.exists(&r.wal(1, n)).await, "segment {n}");
    }
}

/// #15 — a full R without sentinel (start Z = 11, written to recently) and an
/// unfinished delta Q on an old full F_old that no policy keeps: R and Q are
/// IN_PROGRESS (objects protected, not counted toward M), WAL ≥ Z protected,
/// F_old kept as `ancestor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c15_in_progress_backups_protect() {
    let r = Repo::new("c15", 400);
    r.base_policy(&["--min-backups", "2", "--incomplete-grace", "1h", "--archive-lag-grace", "1s"]);
    r.at(0.0).await;
    r.segs(1, 0..=3).await;
    let f_old = r.backup(1, 1, 2, None, false).await;
    r.at(1.0).await;
    r.segs(1, 4..=9).await;
    let a = r.backup(1, 7, 8, None, false).await;
    r.at(2.0).await;
    r.segs(1, 10..=13).await;
    let running = r.unfinished(1, 11, None).await;
    r.segs(1, 14..=17).await;
    let b = r.backup(1, 15, 16, None, false).await;
    let delta = r.unfinished(1, 17, Some(&f_old)).await;
    assert!(delta.name.ends_with(&f_old.name[5..29]), "{}", delta.name);
    r.segs(1, 18..=19).await;
    let edge = finished(&r.status(), &b.name);

    // Window anchor = B (newest); M = 2 must add A: the in-progress ones do not count.
    r.window_edge_after(edge);
    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    for u in [&running, &delta] {
        assert_eq!(status_of(&st, &u.name), "InProgress", "{}", u.name);
        assert_eq!(role(&st, &u.name), None);
        assert!(reasons(&st, &u.name).contains("in progress"), "{}", reasons(&st, &u.name));
    }
    assert_eq!(role(&st, &b.name).as_deref(), Some("Pitr"));
    assert_eq!(role(&st, &a.name).as_deref(), Some("Pitr"));
    assert!(reasons(&st, &a.name).contains("minimum of 2 backups"), "{}", reasons(&st, &a.name));
    assert_eq!(role(&st, &f_old.name).as_deref(), Some("Ancestor"));
    assert!(reasons(&st, &f_old.name).contains("base of the in-progress delta"), "{}", reasons(&st, &f_old.name));
    assert!(has_range(&st, 1, 11, None, &format!("in-progress backup {}", running.name)), "{}", st["required_wal"]);
    r.window_edge_after(edge);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert!(plan.backups.is_empty(), "{:?}", plan.backups);
    assert_eq!(plan.wal_set(), wal_paths(1, [0, 3, 4, 5, 6]));
    let mut keys = running.keys.clone();
    keys.extend(delta.keys.iter().cloned());
    keys.push(f_old.sentinel().to_owned());
    let a_ = &r.walg_delete(&keys)[0];
    assert_eq!(a_.errors.len(), keys.len(), "deleted: {:?}", a_.deleted);
    assert!(a_.errors.iter().all(|e| e.1 == "AccessDenied"));

    // With M = 1 only B is a PITR base: A goes, and WAL ≥ Z is held only by R.
    r.policy(&["--min-backups", "1"]);
    r.window_edge_after(edge);
    let st = r.status();
    assert_eq!(role(&st, &a.name), None);
    assert_eq!(role(&st, &f_old.name).as_deref(), Some("Ancestor"));
    r.window_edge_after(edge);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert_eq!(plan.backup_set(), [a.name.clone()].into());
    let mut expect = wal_paths(1, [0]);
    expect.extend(wal_paths(1, 3..=10));
    assert_eq!(plan.wal_set(), expect, "WAL 11.. held by the in-progress backup");
    assert!(plan.paths().iter().all(|p| !p.contains(&running.name) && !p.contains(&delta.name)));
}

/// #16 — the unfinished backups of #15 past `incomplete_grace` (4 "days" vs 3):
/// INCOMPLETE, collected as whole units; the delta no longer holds its base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c16_incomplete_backups_collected_as_units() {
    let r = Repo::new("c16", 400);
    let grace = r.ms(2.0);
    r.base_policy(&["--min-backups", "2", "--incomplete-grace", &grace, "--archive-lag-grace", "1s"]);
    r.at(0.0).await;
    r.segs(1, 0..=3).await;
    let f_old = r.backup(1, 1, 2, None, false).await;
    r.at(1.0).await;
    r.segs(1, 4..=9).await;
    let a = r.backup(1, 7, 8, None, false).await;
    let running = r.unfinished(1, 9, None).await;
    r.segs(1, 10..=11).await;
    let delta = r.unfinished(1, 10, Some(&f_old)).await;
    r.at(2.0).await;
    r.segs(1, 12..=14).await;
    let b = r.backup(1, 12, 13, None, false).await;
    let edge = finished(&r.status(), &a.name);

    r.window_edge_after(edge);
    let st = r.status();
    assert_eq!(status_of(&st, &running.name), "InProgress");
    assert_eq!(status_of(&st, &delta.name), "InProgress");
    assert_eq!(role(&st, &f_old.name).as_deref(), Some("Ancestor"));

    r.at(3.6).await;
    r.window_edge_after(edge);
    let st = r.status();
    assert!(frozen(&st).is_empty(), "{st}");
    assert_eq!(status_of(&st, &running.name), "Incomplete");
    assert_eq!(status_of(&st, &delta.name), "Incomplete");
    assert_eq!(role(&st, &f_old.name), None, "an incomplete delta holds nothing");
    r.window_edge_after(edge);
    let plan = r.plan();
    plan.assert_not_frozen();
    assert_eq!(plan.backup_set(), [f_old.name.clone(), running.name.clone(), delta.name.clone()].into());
    for u in [&running, &delta] {
        let unit = &plan.backups[&u.name];
        assert!(unit["reason"].as_str().is_some_and(|s| s.contains("incomplete")), "{unit}");
        let paths: BTreeSet<String> =
            unit["paths"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(|p| r.key(p))).collect();
        assert_eq!(paths, u.key_set());
    }
    assert_eq!(plan.wal_set(), wal_paths(1, 0..=6));
    r.window_edge_after(edge);
    assert_eq!(r.run(), 6 + 2 + 2 + 7);
    for u in [&running, &delta, &f_old] {
        for k in &u.keys {
            assert!(!r.exists(k).await, "{k}");
        }
    }
    for u in [&a, &b] {
        for k in &u.keys {
            assert!(r.exists(k).await, "{k}");
        }
    }
}

/// #16, second half — after an INCOMPLETE backup was collected, its late
/// stop sentinel must be refused (`412 backup-incomplete`, B8.4) so that
/// `backup-list` never shows a backup whose tar parts are gone (I6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c16_late_sentinel_after_collection_is_refused() {
    let r = Repo::new("c16b", 300);
    let grace = r.ms(1.0);
    r.base_policy(&["--min-backups", "1", "--incomplete-grace", &grace, "--archive-lag-grace", "1s"]);
    r.at(0.0).await;
    r.segs(1, 0..=5).await;
    let running = r.unfinished(1, 2, None).await;
    let a = r.backup(1, 4, 5, None, false).await;
    r.segs(1, 6..=7).await;
    r.at(2.0).await;
    let plan = r.plan();
    assert!(plan.backups.contains_key(&running.name), "{:?}", plan.backups.keys());
    r.run();
    assert!(!r.exists(&running.keys[0]).await);
    let sentinel = r.key(&format!("basebackups_005/{}_backup_stop_sentinel.json", running.name));
    let body = json!({"LSN": 2 * SEG + 0x28, "FinishLSN": 3 * SEG, "PgVersion": 150_002, "SystemIdentifier": SYSID,
        "Version": 2, "FinishTime": walg_time(r.now_ms()), "IsPermanent": false});
    let e = r.put(&sentinel, body.to_string().into_bytes()).await.expect_err("late sentinel refused");
    assert!(e.starts_with("412 PreconditionFailed"), "{e}");
    let l =
        r.c.list_objects_v2()
            .bucket(BUCKET)
            .prefix(r.key("basebackups_005/"))
            .delimiter("/")
            .send()
            .await
            .expect("backup-list");
    let listed: Vec<&str> = l.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(listed, vec![a.sentinel()], "backup-list never shows the collected backup");
}

/// #20 — split brain on one timeline: a second, different decodable upload of
/// `000000010000000A00000010.lz4` gets 412, GET keeps returning the first
/// bytes, the second bytes are quarantined and audited. (Part B also asks for
/// a status alert; the implementation signals through the 412 message, the
/// quarantine count and the audit log instead — nothing is kept less.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c20_split_brain_same_timeline() {
    let r = Repo::new("c20", 100);
    let key = r.key("wal_005/000000010000000A00000010.lz4");
    let a = lz4(&bytes_of(20, 8192));
    r.must_put(&key, a.clone()).await;
    let e = r.put(&key, lz4(&bytes_of(21, 8192))).await.expect_err("node B refused");
    assert!(e.starts_with("412 PreconditionFailed"), "{e}");
    assert!(e.contains("split brain") && e.contains("content differs"), "{e}");
    assert_eq!(r.get(&key).await, a, "GET returns node A's bytes");
    let v = r.status_full();
    assert_eq!(v["quarantined"], 1, "{v}");
    let (ok, audit, out) = r.cli(&["audit"]);
    assert!(ok, "{out}");
    assert!(
        audit["records"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["action"] == "quarantine" && x["key"] == key.as_str()),
        "{out}"
    );
    let st = r.status();
    assert!(st["alerts"].to_string().contains("split brain suspected"), "{st}");
    assert!(frozen(&st).is_empty(), "a WAL conflict alerts, it does not freeze: {st}");

    // The operator decides node B was right: B's bytes become the segment and
    // A's move into the quarantine (resolved), never destroyed.
    let b = lz4(&bytes_of(21, 8192));
    let (ok, v, out) = r.cli(&["quarantine", "list"]);
    assert!(ok, "{out}");
    let id = v["quarantined"][0]["id"].as_str().expect("id").to_owned();
    let (ok, _, out) = r.cli(&["quarantine", "resolve", &id, "--keep", "second"]);
    assert!(ok, "{out}");
    assert_eq!(r.get(&key).await, b, "GET returns node B's bytes after the resolution");
    let (_, v, _) = r.cli(&["quarantine", "list"]);
    let l = v["quarantined"].as_array().cloned().unwrap_or_default();
    assert_eq!(l.len(), 1, "{v}");
    assert_eq!(l[0]["resolved"], true);
    assert_eq!(l[0]["size"].as_u64(), Some(a.len() as u64), "node A's copy is kept");
    let st = r.status();
    assert!(!st["alerts"].to_string().contains("split brain suspected"), "{st}");
    let (ok, _, out) = r.cli(&["quarantine", "resolve", &id, "--keep", "first"]);
    assert!(!ok && out.contains("no quarantine record"), "the record is gone: {out}");
    let id2 = l[0]["id"].as_str().expect("id").to_owned();
    let (ok, _, out) = r.cli(&["quarantine", "resolve", &id2, "--keep", "second"]);
    assert!(!ok && out.contains("already resolved"), "{out}");
    let (ok, _, out) = r.cli(&["quarantine", "resolve", &id2, "--keep", "first"]);
    assert!(ok, "releasing the resolved copy: {out}");
    let (_, v, _) = r.cli(&["quarantine", "list"]);
    assert_eq!(v["quarantined"].as_array().map(Vec::len), Some(0), "{v}");
}

/// #21 — archive retry with identical bytes: 200, same ETag, no new version,
/// receipt time unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c21_identical_retry_is_idempotent() {
    let r = Repo::new("c21", 100);
    let key = r.wal(1, 5);
    let body = lz4(&seg_content(1, 5));
    r.must_put(&key, body.clone()).await;
    let h1 = r.c.head_object().bucket(BUCKET).key(&key).send().await.expect("head");
    let received = r.status()["report"]["last_segment"][1].as_i64().expect("receipt");
    r.advance_ms(1100); // LastModified has 1 s resolution
    r.must_put(&key, body.clone()).await;
    let h2 = r.c.head_object().bucket(BUCKET).key(&key).send().await.expect("head");
    assert_eq!(h1.e_tag(), h2.e_tag());
    assert_eq!(h1.last_modified(), h2.last_modified());
    assert_eq!(r.status()["report"]["last_segment"][1].as_i64(), Some(received), "receipt time unchanged");
    let v = r.c.list_object_versions().bucket(BUCKET).prefix(&key).send().await.expect("versions");
    assert_eq!(v.versions().len(), 1);
    assert_eq!(r.status_full()["quarantined"], 0);
    assert_eq!(r.get(&key).await, body);
}

/// #23 — the same segment as `.lz4`, then as `.zst` with equal plaintext: 200
/// and only the first object visible; different plaintext: 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c23_other_codec_same_plaintext() {
    let r = Repo::new("c23", 100);
    let plain = seg_content(1, 7);
    let lz = r.wal(1, 7);
    let zst = r.key(&format!("wal_005/{}.zst", seg_name(1, 7)));
    r.must_put(&lz, lz4(&plain)).await;
    r.must_put(&zst, zstd::encode_all(&plain[..], 3).expect("zstd")).await;
    assert!(!r.exists(&zst).await, "only the first encoding is visible");
    assert_eq!(r.all_keys().await, [lz.clone()].into());
    assert_eq!(r.get(&lz).await, lz4(&plain));
    let e = r.put(&zst, zstd::encode_all(&seg_content(1, 8)[..], 3).expect("zstd")).await.expect_err("differs");
    assert!(e.starts_with("412 PreconditionFailed"), "{e}");
    assert_eq!(r.all_keys().await, [lz].into());
}

/// #24 — two nodes promote to TL2: the second, different `00000002.history`
/// gets 412, GET returns the first, the second is quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c24_history_collision_refused() {
    let r = Repo::new("c24", 100);
    let key = r.key(&history_path(2));
    let first = lz4(Repo::history_text(&[(1, 5 * SEG)]).as_bytes());
    r.must_put(&key, first.clone()).await;
    let e = r.put(&key, lz4(Repo::history_text(&[(1, 6 * SEG)]).as_bytes())).await.expect_err("collision");
    assert!(e.starts_with("412 PreconditionFailed"), "{e}");
    assert!(e.contains("timeline history file"), "{e}");
    // Re-archiving the same history (PostgreSQL after a crash) is fine.
    r.must_put(&key, first.clone()).await;
    assert_eq!(r.get(&key).await, first);
    assert_eq!(r.status_full()["quarantined"], 1);
}

/// #24, second half — Part B: the collision raises an alert and freezes GC
/// until an operator resolves it (the second node's lineage may need WAL that
/// the first history calls abandoned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c24_history_collision_freezes_retention() {
    let r = Repo::new("c24b", 300);
    let quiet = r.ms(0.5);
    r.base_policy(&["--min-backups", "1", "--recovery-window", "1ms", "--branch-grace", &quiet]);
    r.quiet_period(0.5);
    r.segs(1, 0..=5).await;
    let _f = r.backup(1, 1, 2, None, false).await;
    r.history(2, &[(1, 5 * SEG)]).await;
    r.segs(2, 5..=7).await;
    let _f2 = r.backup(2, 6, 7, None, false).await;
    r.at(1.5).await;
    assert!(!r.plan().wal.is_empty(), "something is collectable before the collision");
    let e = r.put(&r.key(&history_path(2)), lz4(Repo::history_text(&[(1, 6 * SEG)]).as_bytes())).await;
    assert!(e.is_err_and(|e| e.starts_with("412")));
    let st = r.status();
    assert!(st["alerts"].to_string().contains("collision") || !frozen(&st).is_empty(), "{st}");
    let plan = r.plan();
    assert!(!plan.frozen.is_empty(), "GC frozen until resolved");
    assert!(plan.wal.is_empty() && plan.backups.is_empty());
    assert_eq!(r.run(), 0, "a frozen repository loses nothing");

    // The operator keeps the first history (the collision was a stray node):
    // retention resumes; the refused copy stays listed as resolved.
    let (ok, v, out) = r.cli(&["quarantine", "list"]);
    assert!(ok, "{out}");
    let rec = v["quarantined"]
        .as_array()
        .and_then(|l| l.iter().find(|q| q["key"] == r.key(&history_path(2)).as_str()))
        .cloned()
        .expect("the refused history is quarantined");
    assert_eq!(rec["resolved"], false);
    let id = rec["id"].as_str().expect("id");
    let (ok, _, out) = r.cli(&["quarantine", "resolve", id, "--keep", "third"]);
    assert!(!ok && out.contains("keep must be first"), "{out}");
    let (ok, _, out) = r.cli(&["quarantine", "resolve", id, "--keep", "first"]);
    assert!(ok, "{out}");
    assert!(r.plan().frozen.is_empty(), "unfrozen once resolved");
    assert!(!r.plan().wal.is_empty());
}

/// #26 — `wal-g delete everything FORCE --confirm`: DeleteObjects batches of
/// 1000 keys in WAL-G's order with empty VersionIds over a repository with a
/// permanent backup, a failover (history + partial), an old full and an
/// aborted backup: exactly the plan's garbage and non-required WAL go, every
/// required key is AccessDenied, history files and kept backups stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c26_delete_everything_force() {
    let r = Repo::new("c26", 400);
    let grace = r.ms(0.5);
    r.base_policy(&["--min-backups", "2", "--incomplete-grace", &grace, "--branch-grace", "1h"]);
    r.policy(&["--archive-lag-grace", "1s"]);
    r.at(0.0).await;
    r.segs(1, 0..=7).await;
    let old = r.backup(1, 1, 2, None, false).await;
    let perm = r.backup(1, 5, 6, None, true).await; // backup-push --permanent
    let aborted = r.unfinished(1, 7, None).await;
    r.segs_bulk(1, 8..=1039).await;
    r.at(1.0).await;
    r.segs(1, 1040..=1059).await;
    let a = r.backup(1, 1040, 1041, None, false).await;
    r.partial(1, 1060).await;
    r.history(2, &[(1, 1060 * SEG + 0x3000)]).await;
    r.segs(2, 1060..=1064).await;
    r.at(2.0).await;
    let b = r.backup(2, 1063, 1064, None, false).await;
    r.segs(2, 1065..=1066).await;
    let edge = finished(&r.status(), &a.name);

    r.window_edge_after(edge);
    let plan = r.plan(); // also the evaluation the delete guard uses
    plan.assert_not_frozen();
    assert_eq!(plan.backup_set(), [old.name.clone(), aborted.name.clone()].into());
    let mut expect = wal_paths(1, 0..=4);
    expect.extend(wal_paths(1, 7..=1039));
    assert_eq!(plan.wal_set(), expect);
    let releasable = r.keys(&plan.paths());

    let before = r.all_keys().await;
    let keys = r.walg_walk().await;
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), before);
    assert!(keys.len() > 1000, "{}", keys.len());
    assert!(keys[..4].iter().all(|k| k.ends_with("_backup_stop_sentinel.json")), "sentinels first");
    let answers = r.walg_delete(&keys);
    assert_eq!(answers.len(), keys.len().div_ceil(1000));
    let mut deleted = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for a in &answers {
        assert_eq!(a.status, 200);
        deleted.extend(a.deleted.iter().cloned());
        for (k, code) in &a.errors {
            assert_eq!(code, "AccessDenied", "{k}");
            refused.insert(k.clone());
        }
    }
    assert_eq!(deleted, releasable, "only garbage and non-required WAL go");
    assert_eq!(refused, before.difference(&releasable).cloned().collect(), "every required key is refused");
    let after = r.all_keys().await;
    assert_eq!(after, refused);
    for k in [r.key(&history_path(2)), r.key(&partial_path(1, 1060)), r.wal(1, 5), r.wal(1, 1040), r.wal(2, 1066)] {
        assert!(after.contains(&k), "{k}");
    }
    for bk in [&perm, &a, &b] {
        assert!(bk.keys.iter().all(|k| after.contains(k)), "{} intact", bk.name);
    }
}

/// #27 — client `wal-g delete retain FULL 1 --confirm` while the store keeps
/// N = 3 fulls: the client's selection (everything sorting before the newest
/// full) is refused for fulls 2–3, their deltas and their WAL; only what the
/// store releases itself (the 4th full, its delta, older WAL) goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c27_client_retain_full_1_vs_store_full_count_3() {
    let r = Repo::new("c27", 100);
    r.base_policy(&["--full-count", "3", "--min-backups", "1", "--recovery-window", "1ms"]);
    r.policy(&["--archive-lag-grace", "1s"]);
    let mut fulls = Vec::new();
    let mut deltas = Vec::new();
    for w in 0..4u64 {
        r.segs(1, 10 * w..=10 * w + 6).await;
        let f = r.backup(1, 10 * w + 1, 10 * w + 2, None, false).await;
        let d = r.backup(1, 10 * w + 5, 10 * w + 6, Some(&f), false).await;
        r.segs(1, 10 * w + 7..=10 * w + 9).await;
        fulls.push(f);
        deltas.push(d);
    }
    r.segs(1, 40..=41).await;
    let plan = r.plan();
    plan.assert_not_frozen();
    assert_eq!(plan.backup_set(), [fulls[0].name.clone(), deltas[0].name.clone()].into());
    assert_eq!(plan.wal_set(), wal_paths(1, 0..=10));
    let st = r.status();
    for b in fulls[1..].iter().chain(&deltas[1..]) {
        assert_eq!(role(&st, &b.name).as_deref(), Some("Pitr"), "{}", b.name);
    }

    // WAL-G: target = newest full; delete every key whose (timeline, segment)
    // from its first 24-hex run sorts before the target's.
    let target = first24(&fulls[3].name).expect("target");
    let keys: Vec<String> =
        r.walg_walk().await.into_iter().filter(|k| first24(&k[r.prefix.len()..]).is_some_and(|x| x < target)).collect();
    let answers = r.walg_delete(&keys);
    let deleted: BTreeSet<String> = answers.iter().flat_map(|a| a.deleted.iter().cloned()).collect();
    let refused: BTreeSet<String> = answers.iter().flat_map(|a| a.errors.iter().map(|e| e.0.clone())).collect();
    let mut expect_deleted = fulls[0].key_set();
    expect_deleted.extend(deltas[0].key_set());
    expect_deleted.extend(r.keys(&wal_paths(1, 0..=10)));
    assert_eq!(deleted, expect_deleted);
    let mut expect_refused: BTreeSet<String> = r.keys(&wal_paths(1, 11..=30));
    for b in fulls[1..3].iter().chain(&deltas[1..3]) {
        expect_refused.extend(b.key_set());
    }
    assert_eq!(refused, expect_refused);
    // Union retention holds.
    let after = r.all_keys().await;
    for b in fulls[1..].iter().chain(&deltas[1..]) {
        assert!(b.keys.iter().all(|k| after.contains(k)), "{}", b.name);
    }
    assert!((11..=41).all(|n| after.contains(&r.wal(1, n))));
}

/// #28 — single DeleteObject (no version id) of a required WAL key: 403
/// AccessDenied, no delete marker, GET still 200 with the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c28_single_delete_of_required_wal() {
    let r = Repo::new("c28", 100);
    r.base_policy(&["--min-backups", "1", "--recovery-window", "1ms", "--archive-lag-grace", "1s"]);
    r.segs(1, 0..=5).await;
    let _f = r.backup(1, 2, 3, None, false).await;
    r.segs(1, 6..=7).await;
    let plan = r.plan();
    assert_eq!(plan.wal_set(), wal_paths(1, 0..=1));
    let key = r.wal(1, 4);
    assert_eq!(r.raw_delete(&key), 403);
    let e = r.c.delete_object().bucket(BUCKET).key(&key).send().await.expect_err("refused");
    assert_eq!(e.into_service_error().code(), Some("AccessDenied"));
    assert_eq!(r.get(&key).await, lz4(&seg_content(1, 4)));
    let v = r.c.list_object_versions().bucket(BUCKET).prefix(&key).send().await.expect("versions");
    assert_eq!(v.versions().len(), 1);
    assert!(v.delete_markers().is_empty());
    // A key the store does not need is deleted normally (204).
    assert_eq!(r.raw_delete(&r.wal(1, 0)), 204);
    assert!(!r.exists(&r.wal(1, 0)).await);
}

/// #39 — only WAL (new repository), then the first backup running: nothing is
/// collectable and client deletes of WAL are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c39_only_wal_nothing_collected() {
    let r = Repo::new("c39", 100);
    r.base_policy(&["--recovery-window", "1ms", "--min-backups", "1", "--archive-lag-grace", "1s"]);
    r.segs(1, 0..=9).await;
    let st = r.status();
    assert!(st["backups"].as_array().is_some_and(Vec::is_empty));
    assert!(has_range(&st, 1, 0, None, "no restorable backup yet"), "{}", st["required_wal"]);
    let plan = r.plan();
    assert!(plan.wal.is_empty() && plan.backups.is_empty());
    assert_eq!(r.raw_delete(&r.wal(1, 0)), 403);
    let running = r.unfinished(1, 5, None).await;
    let st = r.status();
    assert_eq!(status_of(&st, &running.name), "InProgress");
    let plan = r.plan();
    assert!(plan.wal.is_empty() && plan.backups.is_empty());
    assert_eq!(r.raw_delete(&r.wal(1, 0)), 403);
    assert_eq!(r.raw_delete(&running.keys[0]), 403);
    assert_eq!(r.run(), 0);
    assert_eq!(r.all_keys().await.len(), 12);
}

/// #39, second half — after the first sentinel, WAL before its start becomes
/// collectable only after `gc.delay` (B5 default 24 h, B7.1 dwell time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c39_first_sentinel_releases_wal_only_after_gc_delay() {
    let r = Repo::new("c39b", 100);
    let delay = r.ms(3.0);
    let flags = ["--recovery-window", "1ms", "--min-backups", "1", "--archive-lag-grace", "1s", "--gc-delay", &delay];
    r.base_policy(&flags);
    r.segs(1, 0..=9).await;
    let _first = r.backup(1, 5, 6, None, false).await;
    let plan = r.plan();
    assert_eq!(plan.wal_set(), wal_paths(1, 0..=4), "candidates right after the first sentinel");
    assert_eq!(r.run(), 0, "nothing is deleted before gc.delay has passed");
    for n in 0..=4 {
        assert!(r.exists(&r.wal(1, n)).await, "segment {n}");
    }
    r.at(3.5).await;
    assert_eq!(r.run(), 5, "after gc.delay, re-evaluated, the candidates go");
    for n in 0..=4 {
        assert!(!r.exists(&r.wal(1, n)).await, "segment {n}");
    }
    assert!(r.exists(&r.wal(1, 5)).await);
}

/// #40 — backups stop (the window slides past all of them) while WAL keeps
/// coming; GC runs every "day": the newest backup and M = 2 keep the previous
/// one too, all WAL from it to the head stays, the coverage report always
/// reaches the head; no "everything expired" state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c40_backups_stop_window_slides() {
    let r = Repo::new("c40", 300);
    let window = r.ms(2.0);
    r.base_policy(&["--recovery-window", &window, "--min-backups", "2", "--archive-lag-grace", "1s"]);
    r.at(0.0).await;
    r.segs(1, 0..=2).await;
    let z = r.backup(1, 1, 2, None, false).await;
    r.at(1.0).await;
    r.segs(1, 3..=5).await;
    let a = r.backup(1, 4, 5, None, false).await;
    r.at(2.0).await;
    r.segs(1, 6..=8).await;
    let b = r.backup(1, 7, 8, None, false).await;
    for day in 3..=10u64 {
        r.at(day as f64 + 0.5).await;
        r.segs(1, 3 * day..=3 * day + 2).await;
        let deleted = r.run();
        assert_eq!(deleted, if day == 3 { 6 + 4 } else { 0 }, "day {day}");
        let st = r.status();
        assert!(frozen(&st).is_empty(), "{st}");
        let k = kept(&st);
        assert_eq!(k, [(a.name.clone(), "Pitr".to_owned()), (b.name.clone(), "Pitr".to_owned())].into(), "day {day}");
        assert!(st["backups"].as_array().is_some_and(|v| v.iter().all(|x| x["name"] != z.name.as_str())));
        assert!(has_range(&st, 1, 4, None, "continuous WAL"), "{}", st["required_wal"]);
        let rep = &st["report"];
        let w = rep["windows"].as_array().cloned().unwrap_or_default();
        assert_eq!(w.len(), 1, "day {day}: {rep}");
        assert_eq!(w[0]["backup"], a.name.as_str());
        assert_eq!(w[0]["to"], rep["last_segment"][1]);
        assert_eq!(w[0]["to_lsn"].as_u64(), Some((3 * day + 3) * SEG));
        let expect: BTreeSet<String> = r.keys(&wal_paths(1, 4..=3 * day + 2));
        let wal: BTreeSet<String> = r.all_keys().await.into_iter().filter(|k| k.contains("/wal_005/")).collect();
        assert_eq!(wal, expect, "day {day}");
    }
}

/// Retention under `kill -9`. The server enforces the policy itself (worker
/// every 50 ms, keep the 2 newest backups); each cycle archives 60 segments
/// and a backup of 40 tar parts, whose sentinel releases the backup two
/// before it and the WAL up to the new second-newest backup's start (about
/// 100 deletions), and the server is killed at a random moment in the first
/// 120 ms after that (the worker starts within 50 ms and needs tens of ms)
/// while 16 uploads push the next segments, as archiving goes on meanwhile;
/// every acknowledged one must be there after the restart. After
/// every restart: a backup whose sentinel is listed is complete (units go
/// sentinel first), the two newest backups and every segment from the older
/// one's start are there, and the WAL left has no hole (oldest first). At the
/// end everything released is gone (interrupted units resumed from the
/// journal) and `walstore check` is clean. Cycles: `WALSTORE_CRASH_CYCLES`
/// (default 8); replay: `WALSTORE_CRASH_SEED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletions_survive_kill_dash_nine() {
    use rand::{Rng, SeedableRng};
    let cycles: u64 = std::env::var("WALSTORE_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let seed: u64 = std::env::var("WALSTORE_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("retention crash test: {cycles} cycles, seed {seed} (replay with WALSTORE_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut r = Repo::with_args("crash", 100, &["--gc-interval", "50ms", "--retention-interval", "50ms"]);
    r.tar_parts = 40;
    r.base_policy(&[
        "--min-backups",
        "2",
        "--recovery-window",
        "1ms",
        "--archive-lag-grace",
        "1s",
        "--enforce",
        "true",
    ]);
    const PER: u64 = 60;
    let mut backups: Vec<Backup> = Vec::new();
    let (mut cut_backups, mut cut_wal, mut prev_lo, mut extra_acked) = (0, 0, 0, 0);
    for cycle in 0..cycles {
        let base = cycle * PER;
        r.segs_bulk(1, base..=base + PER - 1).await;
        backups.push(r.backup(1, base + PER - 2, base + PER - 1, None, false).await);
        let pushed = base + PER - 1;
        // Archiving goes on while retention deletes: the next cycle's segments,
        // 16 uploads at a time, until the kill. Acknowledged ones must survive.
        let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(pushed + 1));
        let mut pushers = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (c, acked, next, prefix) = (r.c.clone(), acked.clone(), next.clone(), r.prefix.clone());
            pushers.spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n > pushed + PER {
                        return;
                    }
                    let key = format!("{prefix}{}", wal_path(1, n));
                    if put_object(&c, &key, lz4(&seg_content(1, n))).await.is_err() {
                        return; // the server is gone
                    }
                    acked.lock().expect("acked").insert(n);
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..120))).await;
        r.kill_and_restart();
        let _ =
            tokio::time::timeout(Duration::from_secs(60), async { while pushers.join_next().await.is_some() {} }).await;
        pushers.abort_all();
        let acked: BTreeSet<u64> = acked.lock().expect("acked").clone();
        extra_acked += acked.len();

        let keys = r.all_keys().await;
        // Listed backups are whole.
        for b in &backups {
            if keys.contains(b.sentinel()) {
                for k in &b.keys {
                    assert!(keys.contains(k), "cycle {cycle}: {} is listed but {k} is gone", b.name);
                }
            } else if b.keys.iter().any(|k| keys.contains(k)) {
                cut_backups += 1; // cut after its sentinel: the journal finishes the unit
            }
        }
        // The kept backups and their WAL.
        let keep_from = backups.len().saturating_sub(2);
        for b in &backups[keep_from..] {
            for k in &b.keys {
                assert!(keys.contains(k), "cycle {cycle}: kept backup {} lost {k}", b.name);
            }
        }
        let need_from = (keep_from as u64) * PER + PER - 2;
        let all_wal: Vec<u64> =
            keys.iter().filter_map(|k| k.contains("/wal_005/").then(|| first24(k)).flatten()).map(|(_, n)| n).collect();
        for n in &acked {
            assert!(all_wal.contains(n), "cycle {cycle}: acknowledged segment {n} is missing after the restart");
        }
        let wal: Vec<u64> = all_wal.into_iter().filter(|n| *n <= pushed).collect();
        let lo = *wal.first().expect("some WAL");
        assert!(lo <= need_from, "cycle {cycle}: WAL from {need_from} is needed, oldest left is {lo}");
        assert_eq!(wal, (lo..=pushed).collect::<Vec<_>>(), "cycle {cycle}: WAL left must be one run with no hole");
        if lo > prev_lo && lo < need_from {
            cut_wal += 1;
        }
        prev_lo = lo;
        println!("cycle {cycle}: {} keys after the restart, oldest segment {lo}", keys.len());
    }
    // The worker finishes what the kills interrupted.
    let keep_from = backups.len().saturating_sub(2);
    let mut expect: BTreeSet<String> = backups[keep_from..].iter().flat_map(|b| b.keys.iter().cloned()).collect();
    expect.extend(r.keys(&wal_paths(1, (keep_from as u64) * PER + PER - 2..=cycles * PER - 1)));
    // Segments after the last backup (pushed during the last kill) are not retention's business.
    let last = cycles * PER - 1;
    let settled = || async {
        let keys: BTreeSet<String> = r.all_keys().await;
        keys.into_iter()
            .filter(|k| !k.contains("/wal_005/") || first24(k).is_some_and(|(_, n)| n <= last))
            .collect::<BTreeSet<String>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut keys = settled().await;
    while keys != expect && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        keys = settled().await;
    }
    assert_eq!(keys, expect, "after the last restart retention converges to the two newest backups and their WAL");
    let (ok, v, out) = r.cli(&["audit", "--limit", "100000"]);
    assert!(ok, "{out}");
    let resumed = v["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x.to_string().contains("resumed after a restart"))
        .count();
    println!(
        "{cycles} kills: {cut_backups} cut a backup's deletion after its sentinel, {cut_wal} cut the WAL deletion; \
         {resumed} objects deleted by a resumed unit; {extra_acked} segments acknowledged during the kill windows"
    );
    assert_eq!(r.srv.stop(), Some(0), "clean shutdown");
    let out = r.srv.cli(&["check"]);
    assert!(
        out.status.success(),
        "walstore check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Object Lock and retention compose: on a bucket with a default COMPLIANCE retention of
/// one day, the backups the policy releases are not deleted while locked — `retention
/// plan` lists them as waiting for the lock, `status` counts the waits, a run deletes
/// nothing — and once the locks expired the same run deletes every version of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c41_retention_waits_for_object_lock() {
    use aws_sdk_s3::types::{
        BucketVersioningStatus, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule, VersioningConfiguration,
    };
    let r = Repo::new("c41", 500);
    r.base_policy(&["--min-backups", "2", "--archive-lag-grace", "1s"]);
    r.c.put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .expect("versioning");
    let rule = ObjectLockRule::builder()
        .default_retention(DefaultRetention::builder().mode(ObjectLockRetentionMode::Compliance).days(1).build())
        .build();
    r.c.put_object_lock_configuration()
        .bucket(BUCKET)
        .object_lock_configuration(
            ObjectLockConfiguration::builder().object_lock_enabled(ObjectLockEnabled::Enabled).rule(rule).build(),
        )
        .send()
        .await
        .expect("object lock");
    let mut f = Vec::new();
    for day in 0..=4u64 {
        r.at(day as f64).await;
        r.segs(1, 3 * day..=3 * day + 2).await;
        f.push(r.backup(1, 3 * day + 1, 3 * day + 2, None, false).await);
    }
    r.segs(1, 15..=16).await;
    let edge = finished(&r.status(), &f[2].name);

    r.window_edge_after(edge);
    let plan = r.plan();
    assert_eq!(plan.backup_set(), [f[0].name.clone(), f[1].name.clone()].into());
    let (ok, v, out) = r.cli(&["retention", "plan", &r.target]);
    assert!(ok, "{out}");
    let waits = v["plans"][0]["lock_waits"].as_array().cloned().unwrap_or_default();
    assert_eq!(waits.len(), plan.backups.len() + plan.wal.len(), "every released unit waits: {v}");
    assert!(waits.iter().all(|w| w["waits_for"].as_str().is_some_and(|t| t.contains("COMPLIANCE"))), "{v}");
    r.window_edge_after(edge);
    assert!(r.status()["retention_lock_waits"].as_u64().unwrap_or(0) > 0);
    r.window_edge_after(edge);
    assert_eq!(r.run(), 0, "nothing locked is deleted");
    for k in f[0].keys.iter().chain(&f[1].keys) {
        assert!(r.exists(k).await, "{k} is locked and must stay");
    }

    // A day later (the server's clock) the locks have expired.
    r.advance_ms(86_400_000 + 1000);
    r.window_edge_after(edge);
    assert!(r.run() >= (f[0].keys.len() + f[1].keys.len()) as u64);
    for k in f[0].keys.iter().chain(&f[1].keys) {
        let listed = r.c.list_object_versions().bucket(BUCKET).prefix(k).send().await.expect("versions");
        assert!(listed.versions().is_empty() && listed.delete_markers().is_empty(), "{k}: every version goes");
    }
    for b in &f[2..] {
        for k in &b.keys {
            assert!(r.exists(k).await, "{k} kept");
        }
    }
}
