//! `walstore replication …`, `walstore tier …` and `walstore rebuild`: the off-box copy from the CLI.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use remote::rebuild::{CopyProgress, RebuildSummary};
use remote::{DeletePolicy, TargetSpec};
use s3api::admin::{AdminRequest, ReplicationDoc, TierDoc};
use serde_json::Value;
use storage::{Store, StoreConfig};

use crate::cli::{print, run, s, target_text, Conn, ConnRest};

/// Where a copy is (`replication add`, `rebuild --endpoint`).
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// S3 endpoint of the remote store, http(s)://host:port
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Bucket on the remote store (must exist)
    #[arg(long)]
    pub bucket: Option<String>,
    /// Prefix on the remote store, empty or ending in '/'
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Region to sign requests for
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// CA certificate (PEM) to trust for an https endpoint
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// File with access_key_id = … and secret_access_key = … lines (an AWS credentials file works)
    #[arg(long)]
    pub credentials_file: Option<PathBuf>,
}

impl TargetArgs {
    fn spec(&self, deletes: DeletePolicy, concurrency: usize) -> Result<TargetSpec, String> {
        let spec = TargetSpec {
            endpoint: self.endpoint.clone().ok_or("--endpoint is required")?,
            bucket: self.bucket.clone().ok_or("--bucket is required")?,
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            ca_cert: self.ca_cert.as_ref().map(|p| absolute(p)),
            credentials_file: self.credentials_file.as_ref().map(|p| absolute(p)),
            deletes,
            concurrency,
            part_size: remote::spec::DEFAULT_PART_SIZE,
            secret: None,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// The server reads the files, from its own working directory: hand it absolute paths.
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// How `replication add` reaches the server: [`Conn`] with `--server` and
/// `--server-ca-cert`, since `--endpoint` and `--ca-cert` name the target there.
#[derive(Args, Debug, Clone)]
pub struct ServerConn {
    /// walstore server endpoint [default: http://127.0.0.1:9000]
    #[arg(long, env = "WALSTORE_ENDPOINT")]
    pub server: Option<String>,
    /// CA certificate (PEM) to verify an https walstore server with
    #[arg(long, env = "WALSTORE_CA_CERT")]
    pub server_ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub rest: ConnRest,
}

impl ServerConn {
    fn conn(self) -> Conn {
        Conn { endpoint: self.server, ca_cert: self.server_ca_cert, rest: self.rest }
    }
}

/// `replication` subcommands.
#[derive(Subcommand, Debug)]
pub enum ReplicationCmd {
    /// Copy every change (of all buckets, or of --source) to an S3 bucket, asynchronously.
    ///
    /// Local BUCKET/KEY goes to --prefix + BUCKET/KEY in --bucket. The server reads
    /// --credentials-file; without it, its environment variables
    /// WALSTORE_REPLICATION_<NAME>_ACCESS_KEY_ID and _SECRET_ACCESS_KEY.
    Add {
        /// Target name (lowercase letters, digits, '-')
        name: String,
        #[command(flatten)]
        target: TargetArgs,
        /// What to copy: BUCKET or BUCKET/PREFIX [default: every bucket]
        #[arg(long)]
        source: Option<String>,
        /// How deletes reach the copy: mirror, never, or 'delay DURATION'
        #[arg(long, default_value = "delay 7d")]
        deletes: String,
        /// Objects sent at once
        #[arg(long, default_value_t = remote::spec::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        #[command(flatten)]
        conn: ServerConn,
    },
    /// List targets with their state, lag and backlog.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Everything about one target (or all): lag, backlog, errors, off-box WAL per repository.
    Status {
        /// Target name [default: all]
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop sending to a target (changes stay journaled).
    Pause {
        /// Target name
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send again after a pause.
    Resume {
        /// Target name
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Forget a target and what was not yet sent to it (the copy itself stays).
    Remove {
        /// Target name
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `walstore replication …`.
pub fn replication(cmd: ReplicationCmd) -> Result<(), String> {
    match cmd {
        ReplicationCmd::Add { name, target, source, deletes, concurrency, conn } => {
            let conn = conn.conn();
            let deletes = DeletePolicy::parse(&deletes)?;
            let doc = ReplicationDoc { name, source, spec: target.spec(deletes, concurrency)? };
            let body = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
            let (_, v) = run(
                &conn,
                AdminRequest::ReplicationAdd(Box::new(doc)),
                ("POST", "/_walstore/replication", vec![], body),
            )?;
            print(&conn, &v, |v| {
                let probe = s(&v["probe"]);
                let mut out =
                    format!("added replication target {}: {} objects to copy\n", s(&v["name"]), s(&v["journaled"]));
                if probe != "ok" {
                    out.push_str(&format!(
                        "warning: the target does not answer as it should yet ({probe}); walstore keeps retrying\n"
                    ));
                }
                out
            });
            Ok(())
        }
        ReplicationCmd::List { conn } => status(None, &conn, false),
        ReplicationCmd::Status { name, conn } => status(name, &conn, true),
        ReplicationCmd::Pause { name, conn } => pause(name, true, &conn),
        ReplicationCmd::Resume { name, conn } => pause(name, false, &conn),
        ReplicationCmd::Remove { name, conn } => {
            let q = vec![("name", name.clone())];
            let (_, v) =
                run(&conn, AdminRequest::ReplicationRemove { name }, ("DELETE", "/_walstore/replication", q, vec![]))?;
            print(&conn, &v, |v| format!("removed replication target {}\n", s(&v["removed"])));
            Ok(())
        }
    }
}

fn pause(name: String, paused: bool, conn: &Conn) -> Result<(), String> {
    let path = if paused { "/_walstore/replication/pause" } else { "/_walstore/replication/resume" };
    let q = vec![("name", name.clone())];
    let (_, v) = run(conn, AdminRequest::ReplicationPause { name, paused }, ("POST", path, q, vec![]))?;
    print(conn, &v, |v| format!("{} {}\n", s(&v["name"]), if paused { "paused" } else { "resumed" }));
    Ok(())
}

fn status(name: Option<String>, conn: &Conn, detail: bool) -> Result<(), String> {
    let q = name.iter().map(|n| ("name", n.clone())).collect();
    let (_, v) = run(
        conn,
        AdminRequest::ReplicationStatus { name: name.clone() },
        ("GET", "/_walstore/replication", q, vec![]),
    )?;
    let targets: Vec<Value> = match &name {
        Some(_) => vec![v.clone()],
        None => v["targets"].as_array().cloned().unwrap_or_default(),
    };
    print(conn, &v, |_| {
        if targets.is_empty() {
            return "no replication targets (walstore replication add)\n".into();
        }
        let mut out = String::new();
        for t in &targets {
            out.push_str(&target_text(t, detail));
        }
        out
    });
    Ok(())
}

/// `walstore rebuild` arguments.
#[derive(Args, Debug)]
pub struct RebuildArgs {
    /// Data directory to fill (empty, or left by an interrupted rebuild)
    #[arg(long, env = "WALSTORE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A target of the configuration file (--config) or of the data directory
    #[arg(long, conflicts_with = "endpoint")]
    pub from: Option<String>,
    /// Configuration file holding the --from target
    #[arg(long, env = "WALSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Set by SIGINT/SIGTERM during a rebuild: stop between objects.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM stop a rebuild or import between objects (see [`STOP`]).
fn install_stop_handler() {
    #[allow(unsafe_code)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Marks a data directory a rebuild is filling (removed when it completes).
const MARKER: &str = "rebuild-in-progress";

/// `walstore rebuild`. Returns whether everything was restored and `check` is clean.
pub fn rebuild(mut a: RebuildArgs) -> Result<bool, String> {
    a.data_dir = absolute(&a.data_dir);
    let (name, spec, record) = match &a.from {
        Some(name) => {
            let from_config = match &a.config {
                Some(path) => {
                    crate::config::Settings::from_file(path)?.replication.into_iter().find(|d| d.name == *name)
                }
                None => None,
            };
            match from_config {
                Some(d) => {
                    let rec = d.record(storage::Timestamp::now(), true)?;
                    (name.clone(), d.spec, Some(rec))
                }
                None => {
                    let store = open(&a.data_dir)?;
                    let rec = store.replication_target(name).map_err(|_| {
                        format!("no replication target named {name:?} in the configuration file or the data directory")
                    })?;
                    let spec: TargetSpec = serde_json::from_str(&rec.spec).map_err(|e| e.to_string())?;
                    (name.clone(), spec, None)
                }
            }
        }
        None => ("rebuild".to_owned(), a.target.spec(DeletePolicy::Never, remote::spec::DEFAULT_CONCURRENCY)?, None),
    };
    let store = Arc::new(open(&a.data_dir)?);
    let marker = a.data_dir.join(MARKER);
    if !marker.exists() {
        if !store.list_buckets().map_err(|e| e.to_string())?.is_empty() {
            return Err(format!(
                "{} holds buckets: rebuild fills an empty data directory (or one an interrupted rebuild left)",
                a.data_dir.display()
            ));
        }
        std::fs::write(&marker, format!("{}/{}{}\n", spec.endpoint, spec.bucket, spec.prefix))
            .map_err(|e| format!("{}: {e}", marker.display()))?;
    }
    #[allow(unsafe_code)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    eprintln!(
        "rebuilding {} from {} bucket {} prefix {:?}",
        a.data_dir.display(),
        spec.endpoint,
        spec.bucket,
        spec.prefix
    );
    let mut last = Instant::now() - Duration::from_secs(10);
    let mut show = |p: &CopyProgress| {
        let end = p.done_objects == p.total_objects;
        if end || last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!("{}", progress_line("rebuild", p));
        }
    };
    let sum = remote::rebuild::rebuild(store.clone(), &name, &spec, &STOP, &mut show).map_err(|e| e.message)?;
    print_summary(&sum);
    if sum.interrupted {
        eprintln!("interrupted: run the same command again to resume");
        return Ok(false);
    }
    let report = store.check().map_err(|e| e.to_string())?;
    println!("walstore check: {} objects, {} problems", report.objects, report.problems.len());
    for p in &report.problems {
        println!("  {p}");
    }
    if let Some(mut rec) = record {
        // The copy holds what was just restored: keep replicating to it from here on,
        // without sending everything back.
        rec.created = store.now();
        store.put_replication_target(rec, false).map_err(|e| e.to_string())?;
    }
    store.flush().map_err(|e| e.to_string())?;
    std::fs::remove_file(&marker).map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(sum.refused.is_empty() && report.problems.is_empty())
}

fn open(dir: &std::path::Path) -> Result<Store, String> {
    Store::open(StoreConfig::new(dir)).map_err(|e| {
        let m = e.to_string();
        if m.contains("lock") {
            format!("the data directory {} is in use by a running server; stop it first", dir.display())
        } else {
            format!("cannot open {}: {m}", dir.display())
        }
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn progress_line(what: &str, p: &CopyProgress) -> String {
    format!(
        "{what}: {}/{} objects, {:.1}/{:.1} MiB, {:.1} MiB/s, ETA {}",
        p.done_objects,
        p.total_objects,
        mib(p.done_bytes),
        mib(p.total_bytes),
        mib(p.rate() as u64),
        p.eta().map_or("-".into(), |d| format!("{}s", d.as_secs())),
    )
}

fn print_summary(sum: &RebuildSummary) {
    println!(
        "rebuilt {} objects ({:.1} MiB) in {:.1}s ({:.1} MiB/s, {:.0} objects/s); {} already restored by an earlier run",
        sum.restored,
        mib(sum.restored_bytes),
        sum.elapsed.as_secs_f64(),
        mib(sum.restored_bytes) / sum.elapsed.as_secs_f64().max(0.001),
        sum.restored as f64 / sum.elapsed.as_secs_f64().max(0.001),
        sum.already,
    );
    if !sum.foreign.is_empty() {
        println!("{} objects on the target were not written by walstore replication (left alone):", sum.foreign.len());
        for k in sum.foreign.iter().take(20) {
            println!("  {k}");
        }
    }
    if !sum.refused.is_empty() {
        println!("REFUSED {} objects (not restored):", sum.refused.len());
        for (k, why) in &sum.refused {
            println!("  {k}: {why}");
        }
    }
}

/// `walstore import` arguments.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The source (credentials: --credentials-file, else WALSTORE_IMPORT_ACCESS_KEY_ID /
    /// WALSTORE_IMPORT_SECRET_ACCESS_KEY, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
    #[command(flatten)]
    pub source: TargetArgs,
    /// Where in walstore: BUCKET or BUCKET/PREFIX/ (replaces --prefix) [default: the source bucket's name]
    #[arg(long)]
    pub to: Option<String>,
    /// List what would be copied; copy nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Only what changed since the last complete run of this import (the cut-over tail)
    #[arg(long)]
    pub since_last_run: bool,
    #[command(flatten)]
    pub conn: ServerConn,
}

fn import_secret(a: &TargetArgs) -> Result<(String, String), String> {
    if let Some(f) = &a.credentials_file {
        let s = remote::spec::read_credentials_file(f).map_err(|e| e.message)?;
        return Ok((s.access_key_id, s.secret_access_key));
    }
    for (id, secret) in [
        ("WALSTORE_IMPORT_ACCESS_KEY_ID", "WALSTORE_IMPORT_SECRET_ACCESS_KEY"),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ] {
        if let (Ok(i), Ok(s)) = (std::env::var(id), std::env::var(secret)) {
            if !i.is_empty() && !s.is_empty() {
                return Ok((i, s));
            }
        }
    }
    Err("no source credentials: give --credentials-file, or set WALSTORE_IMPORT_ACCESS_KEY_ID and \
         WALSTORE_IMPORT_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        .into())
}

/// `walstore import`: online through the admin API, or offline with `--data-dir`.
/// Returns whether everything listed is in walstore.
pub fn import(a: ImportArgs) -> Result<bool, String> {
    let (access_key_id, secret_access_key) = import_secret(&a.source)?;
    let bucket = a.source.bucket.clone().ok_or("--bucket is required")?;
    let req = remote::import::ImportRequest {
        endpoint: a.source.endpoint.clone().ok_or("--endpoint is required")?,
        to: a.to.clone().unwrap_or_else(|| bucket.clone()),
        bucket,
        prefix: a.source.prefix.clone(),
        region: a.source.region.clone(),
        ca_cert: a.source.ca_cert.as_ref().map(|p| absolute(p)),
        access_key_id,
        secret_access_key,
        dry_run: a.dry_run,
        since_last_run: a.since_last_run,
    };
    let (spec, opts) = req.resolve()?;
    let json = a.conn.rest.json;
    install_stop_handler();
    let report = match &a.conn.rest.data_dir {
        Some(dir) => {
            let store = Arc::new(open(&absolute(dir))?);
            let mut last = Instant::now() - Duration::from_secs(10);
            let mut show = |p: &CopyProgress| {
                if p.done_objects == p.total_objects || last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    eprintln!("{}", progress_line("import", p));
                }
            };
            let r = remote::import::import(store.clone(), "import", &spec, &opts, &STOP, &mut show)
                .map_err(|e| format!("import failed: {}: {}", e.kind.name(), e.message))?;
            store.flush().map_err(|e| e.to_string())?;
            r
        }
        None => import_online(&a.conn.conn(), &req)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print_import(&report, opts.dry_run);
    }
    Ok(report.complete())
}

/// Starts the import on the server and follows it until it ends (Ctrl-C stops it).
fn import_online(conn: &Conn, req: &remote::import::ImportRequest) -> Result<remote::import::ImportReport, String> {
    let client = crate::cli::client(conn)?;
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let (status, bytes) = client.request("POST", "/_walstore/import", &[], &body)?;
    if status != 200 {
        return Err(crate::cli::server_error(status, &bytes));
    }
    let mut stopping = false;
    let mut last_line = Instant::now();
    // Short polls first: a small or already-complete import ends in milliseconds.
    let mut wait = Duration::from_millis(20);
    loop {
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(500));
        if STOP.load(Ordering::SeqCst) && !stopping {
            stopping = true;
            eprintln!("stopping the import (between objects)…");
            client.request("DELETE", "/_walstore/import", &[], &[])?;
        }
        let (status, bytes) = client.request("GET", "/_walstore/import", &[], &[])?;
        if status != 200 {
            return Err(crate::cli::server_error(status, &bytes));
        }
        let st: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let p = CopyProgress {
            total_objects: st["total_objects"].as_u64().unwrap_or(0),
            total_bytes: st["total_bytes"].as_u64().unwrap_or(0),
            done_objects: st["done_objects"].as_u64().unwrap_or(0),
            done_bytes: st["done_bytes"].as_u64().unwrap_or(0),
            elapsed: Duration::from_secs_f64(st["seconds"].as_f64().unwrap_or(0.0)),
        };
        if st["running"].as_bool() != Some(true) {
            if let Some(e) = st["error"].as_str() {
                return Err(format!("import failed: {e}"));
            }
            eprintln!("{}", progress_line("import", &p));
            return serde_json::from_value(st["report"].clone()).map_err(|e| format!("import report: {e}"));
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            eprintln!("{}", progress_line("import", &p));
        }
    }
}

fn print_import(r: &remote::import::ImportReport, dry_run: bool) {
    if dry_run {
        println!("dry run: {} of {} objects would be copied", r.would_copy.len(), r.listed);
        for k in &r.would_copy {
            println!("  {k}");
        }
        return;
    }
    println!(
        "imported {} objects ({:.1} MiB) in {:.1}s ({:.1} MiB/s, {:.0} objects/s); {} already there{}",
        r.copied,
        mib(r.copied_bytes),
        r.seconds,
        mib(r.copied_bytes) / r.seconds.max(0.001),
        r.copied as f64 / r.seconds.max(0.001),
        r.unchanged,
        if r.skipped_old > 0 { format!("; {} older than the last run skipped", r.skipped_old) } else { String::new() },
    );
    for (prefix, c) in &r.verification {
        let verdict = if c.matching == c.source_objects { "ok" } else { "MISSING" };
        println!(
            "  verify {:<40} {} of {} objects ({:.1} MiB) match size and ETag: {verdict}",
            if prefix.is_empty() { "(top level)" } else { prefix },
            c.matching,
            c.source_objects,
            mib(c.source_bytes)
        );
    }
    for p in &r.kept_newer {
        println!("  kept (newer in walstore): {}", p.key);
    }
    if !r.failed.is_empty() {
        println!("FAILED {} objects (run again to retry):", r.failed.len());
        for p in &r.failed {
            println!("  {}: {}", p.key, p.reason);
        }
    }
    if r.interrupted {
        println!("interrupted: run the same command again to resume");
    }
}

/// `walstore tier …`: keep hot WAL and recent backups local, the rest on a replication target.
#[derive(Subcommand, Debug)]
pub enum TierCmd {
    /// Evict objects of BUCKET[/PREFIX] older than --after to replication target --target.
    ///
    /// The newest restorable backups of each WAL-G repository (--keep-newest-backups,
    /// with their delta chains) and every WAL file after the oldest of them stay local
    /// whatever their age; so do objects of 64 KiB or less and bytes shared by several
    /// objects. Reads of evicted objects stream from the target, verified. Only
    /// unversioned buckets can be tiered.
    Set {
        /// BUCKET or BUCKET/PREFIX
        scope: String,
        /// Replication target holding the copy (walstore replication add)
        #[arg(long)]
        target: String,
        /// Minimum age (since the object was written), e.g. 7d or 0s
        #[arg(long, default_value = "7d")]
        after: String,
        /// Restorable backups kept local per repository, with the WAL after them
        #[arg(long, default_value_t = 1)]
        keep_newest_backups: u32,
        /// A read of an evicted object brings its bytes back to local disk, kept while
        /// the server's --tier-cache budget allows (least recently brought back go first)
        #[arg(long)]
        rehydrate_on_read: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// The policies.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Policies, local and remote bytes per repository, evictions, remote reads, scrub.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop tiering BUCKET[/PREFIX]; the worker brings its evicted bytes back.
    Remove {
        /// BUCKET or BUCKET/PREFIX
        scope: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs a `walstore tier` command.
pub fn tier(cmd: TierCmd) -> Result<(), String> {
    match cmd {
        TierCmd::Set { scope, target, after, keep_newest_backups, rehydrate_on_read, conn } => {
            let (bucket, prefix) = scope.split_once('/').unwrap_or((scope.as_str(), ""));
            let doc = TierDoc {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                target,
                after: Some(after),
                keep_newest_backups: Some(keep_newest_backups),
                rehydrate_on_read,
            };
            // Checked here too, so that a typo never reaches the server.
            doc.policy(storage::Timestamp::from_millis(0))?;
            let body = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
            let (_, v) = run(&conn, AdminRequest::TierSet(Box::new(doc)), ("POST", "/_walstore/tier", vec![], body))?;
            print(&conn, &v, |v| {
                format!(
                    "tiering {}/{} to {}: objects older than {} (keeping the newest {} restorable backup(s) local)\n",
                    s(&v["bucket"]),
                    s(&v["prefix"]),
                    s(&v["target"]),
                    s(&v["after"]),
                    s(&v["keep-newest-backups"])
                )
            });
            Ok(())
        }
        TierCmd::List { conn } => {
            let (_, v) = run(&conn, AdminRequest::TierStatus, ("GET", "/_walstore/tier", vec![], vec![]))?;
            let list = serde_json::json!({ "policies": v["policies"] });
            print(&conn, &list, policies_text);
            Ok(())
        }
        TierCmd::Status { conn } => {
            let (_, v) = run(&conn, AdminRequest::TierStatus, ("GET", "/_walstore/tier", vec![], vec![]))?;
            print(&conn, &v, tier_status_text);
            Ok(())
        }
        TierCmd::Remove { scope, conn } => {
            let (bucket, prefix) = scope.split_once('/').unwrap_or((scope.as_str(), ""));
            let bucket = storage::BucketName::parse(bucket).map_err(|e| e.to_string())?;
            let prefix = if prefix.is_empty() { String::new() } else { s3api::admin::normalize_prefix(prefix) };
            let mut q = vec![("bucket", bucket.as_str().to_owned())];
            if !prefix.is_empty() {
                q.push(("prefix", prefix.clone()));
            }
            let (_, v) =
                run(&conn, AdminRequest::TierRemove { bucket, prefix }, ("DELETE", "/_walstore/tier", q, vec![]))?;
            print(&conn, &v, |v| {
                format!("removed tiering of {}; evicted bytes are being brought back\n", s(&v["removed"]))
            });
            Ok(())
        }
    }
}

fn policies_text(v: &Value) -> String {
    let Some(list) = v["policies"].as_array().filter(|l| !l.is_empty()) else {
        return "no tiering policies (walstore tier set)\n".into();
    };
    let mut out = String::new();
    for p in list {
        out.push_str(&format!(
            "{}/{}  target {}  after {}  keep-newest-backups {}\n",
            s(&p["bucket"]),
            s(&p["prefix"]),
            s(&p["target"]),
            s(&p["after"]),
            s(&p["keep-newest-backups"])
        ));
    }
    out
}

fn tier_status_text(v: &Value) -> String {
    let mut out = policies_text(v);
    let mib = |x: &Value| format!("{:.1} MiB", x.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64);
    if let Some(rows) = v["scopes"].as_array().filter(|r| !r.is_empty()) {
        out.push_str("\nbucket/repository                         local             remote\n");
        for r in rows {
            let name = format!("{}/{}", s(&r["bucket"]), r["repository"].as_str().unwrap_or("(other objects)"));
            out.push_str(&format!(
                "{name:<40}  {:>10} ({:>5})  {:>10} ({:>5})\n",
                mib(&r["local_bytes"]),
                s(&r["local_objects"]),
                mib(&r["remote_bytes"]),
                s(&r["remote_objects"])
            ));
        }
    }
    out.push_str(&format!(
        "\non the targets now: {} in {} blob(s)\nsince start: evicted {} object(s) ({}), {} remote read(s) ({}), {} failed, {} brought back\n",
        mib(&v["remote_bytes"]),
        s(&v["remote_blobs"]),
        s(&v["evicted_objects"]),
        mib(&v["evicted_bytes"]),
        s(&v["remote_reads"]),
        mib(&v["remote_read_bytes"]),
        s(&v["remote_read_failures"]),
        mib(&v["rehydrated_bytes"]),
    ));
    if let Some(e) = v["last_error"].as_str() {
        out.push_str(&format!("last error: {e}\n"));
    }
    let problems = v["scrub"]["problems"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "scrub of the targets' copies: {} checked, {} problem(s)\n",
        s(&v["scrub"]["checked"]),
        problems.len()
    ));
    for p in problems {
        out.push_str(&format!("  {}\n", s(&p)));
    }
    out
}
