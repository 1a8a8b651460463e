//! The `walstore` binary: parse configuration, open storage, bind, serve.

mod cli;
mod client;
mod config;
mod credentials;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use s3api::{ApiConfig, AppState, Credentials, ServeOptions};
use storage::{BucketName, Store, StoreConfig};

use crate::config::{Config, LogFormat, Settings};

/// walstore: an S3-compatible object store for PostgreSQL backups written by WAL-G.
#[derive(Parser)]
#[command(name = "walstore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the S3 server.
    Serve {
        /// TOML configuration file; flags and WALSTORE_* variables override it.
        #[arg(long, env = "WALSTORE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Restorable windows, backups, gaps and alerts of a bucket's WAL-G repositories.
    Status {
        /// BUCKET or BUCKET/PREFIX
        target: String,
        #[command(flatten)]
        conn: cli::Conn,
    },
    /// Retention: show the plan or run it now.
    Retention {
        #[command(subcommand)]
        cmd: cli::RetentionCmd,
    },
    /// Retention and delete-protection policies.
    Policy {
        #[command(subcommand)]
        cmd: cli::PolicyCmd,
    },
    /// Access keys and their roles.
    Key {
        #[command(subcommand)]
        cmd: cli::KeyCmd,
    },
    /// Buckets.
    Bucket {
        #[command(subcommand)]
        cmd: cli::BucketCmd,
    },
    /// Run garbage collection now (unreferenced blobs past the grace period, orphans, stale uploads).
    Gc {
        /// Grace period for unreferenced blobs with --data-dir, e.g. 1h (0s removes them at once).
        #[arg(long)]
        grace: Option<String>,
        #[command(flatten)]
        conn: cli::Conn,
    },
    /// Re-hash every blob and report corruption by object (exit status 1 if any).
    Scrub {
        #[command(flatten)]
        conn: cli::Conn,
    },
    /// Verify index ↔ blob consistency (exit status 1 on problems).
    Check {
        #[command(flatten)]
        conn: cli::Conn,
    },
    /// Uploads refused by the split-brain guard, and their resolution.
    Quarantine {
        #[command(subcommand)]
        cmd: cli::QuarantineCmd,
    },
    /// Show the audit log (overrides, retention deletions, quarantines, policy and key changes).
    Audit {
        /// Newest records to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: cli::Conn,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, settings } => serve(config, *settings),
        Command::Status { target, conn } => cli::status(&target, &conn),
        Command::Retention { cmd } => cli::retention(cmd),
        Command::Policy { cmd } => cli::policy(cmd),
        Command::Key { cmd } => cli::key(cmd),
        Command::Bucket { cmd } => cli::bucket(cmd),
        Command::Gc { grace, conn } => cli::gc(grace.as_deref(), &conn),
        Command::Check { conn } => cli::check(&conn),
        Command::Scrub { conn } => cli::scrub(&conn),
        Command::Audit { limit, conn } => cli::audit(limit, &conn),
        Command::Quarantine { cmd } => cli::quarantine(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walstore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn open_store(data_dir: PathBuf, cfg: Option<&Config>) -> Result<Store, String> {
    let mut sc = StoreConfig::new(data_dir);
    if let Some(c) = cfg {
        sc.gc_grace = c.gc_grace;
        sc.multipart_expiry = c.multipart_expiry;
        sc.index.block_cache_bytes = c.block_cache as usize;
        sc.space_reserve = c.reserve_space;
    }
    Store::open(sc).map_err(|e| format!("cannot open the data directory: {e}"))
}

fn serve(config_file: Option<PathBuf>, flags: Settings) -> Result<(), String> {
    let file = match &config_file {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    let cfg = flags.or(file).resolve()?;
    init_logging(&cfg.log_level, cfg.log_format);

    let (creds, origin) = credentials::load_or_create(&cfg.data_dir)?;
    let store = Arc::new(open_store(cfg.data_dir.clone(), Some(&cfg))?);
    store.set_default_policy(cfg.default_policy.clone());
    for b in &cfg.buckets {
        let name = BucketName::parse(b).map_err(|e| e.to_string())?;
        match store.create_bucket(&name) {
            Ok(_) => tracing::info!(bucket = %name, "created bucket"),
            Err(storage::Error::BucketAlreadyExists) => {}
            Err(e) => return Err(format!("cannot create bucket {name}: {e}")),
        }
    }
    match origin {
        credentials::Origin::Generated => {
            println!(
                "walstore: generated root credentials (stored in {}/root-credentials, mode 0600):",
                cfg.data_dir.display()
            );
            println!("  AWS_ACCESS_KEY_ID={}", creds.access_key);
            println!("  AWS_SECRET_ACCESS_KEY={}", creds.secret_key);
        }
        credentials::Origin::File => {
            tracing::info!(access_key = %creds.access_key, "root credentials from {}/root-credentials", cfg.data_dir.display())
        }
        credentials::Origin::Environment => {
            tracing::info!(access_key = %creds.access_key, "root credentials from the environment")
        }
    }

    let api = ApiConfig {
        region: cfg.region.clone(),
        max_object_size: cfg.max_object_size,
        metrics_token: cfg.metrics_token.clone(),
        body_limits: s3api::body::BodyLimits { timeout: cfg.body_timeout, min_rate: cfg.body_min_rate },
        ..ApiConfig::default()
    };
    let max_connections = connection_cap(cfg.max_connections);
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(Arc::new(s3api::tls::TlsReloader::new(cert.clone(), key.clone())?)),
        None => None,
    };
    let keys = Arc::new(Credentials::new(creds.access_key.clone(), creds.secret_key.clone(), store.clone()));
    let state = Arc::new(AppState::new(store.clone(), api, keys));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("walstore")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // Handlers are installed before the "listening" line: a supervisor that
        // stops the server right after it started must get a clean shutdown.
        let shutdown = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        // SIGHUP reloads the TLS certificate; without TLS it is logged and ignored
        // (a `kill -HUP` to every process, or a config-reloader sidecar, must not stop the store).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, data_dir = %cfg.data_dir.display(), region = %cfg.region, scheme, "walstore is serving S3");
        // Scripts wait for this line to learn the port when listening on :0.
        println!("walstore: listening on {scheme}://{addr}");
        match &tls {
            Some(t) => t.spawn_watcher(Duration::from_secs(10), Some(hup)),
            None => {
                let mut hup = hup;
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP received; nothing to reload without TLS");
                    }
                });
            }
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let jobs = Jobs {
            gc_interval: cfg.gc_interval,
            retention_every: cfg.retention_interval,
            scrub_every: cfg.scrub_interval,
        };
        let worker = tokio::spawn(maintenance(store.clone(), state.metrics.clone(), jobs, stop_rx));
        let opts = ServeOptions {
            drain_timeout: cfg.drain_timeout,
            header_read_timeout: cfg.header_timeout,
            max_header_bytes: cfg.max_header_size,
            max_connections,
            tls,
        };
        s3api::serve(listener, state, opts, shutdown).await.map_err(|e| e.to_string())?;
        let _ = stop_tx.send(true);
        let _ = worker.await;
        Ok::<(), String>(())
    })?;
    if let Err(e) = store.flush() {
        tracing::warn!(error = %e, "flushing the index on shutdown failed; it will be replayed at start");
    }
    tracing::info!("stopped");
    Ok(())
}

/// File descriptors kept for everything but client connections: RocksDB keeps up to 512
/// files open, plus blob and staging files being written, the listener and the logs.
const RESERVED_FDS: u64 = 768;

/// Raises the soft open-files limit to the hard one (distributions start services with a
/// soft limit of 1024), then lowers the connection cap if even that leaves too few
/// descriptors for `wanted` connections: a refused connection is a clean `503`, running out
/// of descriptors fails requests and index reads at random.
fn connection_cap(wanted: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let mut limit = soft;
    if soft < hard {
        // An unlimited hard limit is not a valid soft value for RLIMIT_NOFILE on Linux.
        let target = hard.min(1 << 20);
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = target, "raised the open-files limit");
                limit = target;
            }
            Err(e) => tracing::warn!(error = %e, soft, hard, "could not raise the open-files limit"),
        }
    }
    let room = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX).max(1);
    if wanted > room {
        tracing::warn!(
            max_connections = wanted,
            serving = room,
            open_files_limit = limit,
            "the open-files limit is too low for max-connections; serving fewer (raise LimitNOFILE / ulimit -n)"
        );
        return room;
    }
    wanted
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    })
}

/// Intervals of the maintenance jobs.
struct Jobs {
    gc_interval: Duration,
    retention_every: Duration,
    scrub_every: Duration,
}

/// The maintenance worker, one small step per tick: GC of unreferenced blobs
/// (bounded per pass), expiry of abandoned uploads, an hourly orphan sweep,
/// usage metrics, the retention pass (every repository is evaluated; those
/// whose policy enforces retention get what the horizon releases deleted,
/// journaled), the periodic scrub and the index verification (also at start). Each job's last success and failures are
/// exported as metrics.
async fn maintenance(
    store: Arc<Store>,
    metrics: Arc<s3api::metrics::Metrics>,
    jobs: Jobs,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last: std::collections::HashMap<&'static str, std::time::Instant> = std::collections::HashMap::new();
    let due = |last: &std::collections::HashMap<&'static str, std::time::Instant>, job: &str, every: Duration| {
        !every.is_zero() && last.get(job).is_none_or(|t| t.elapsed() >= every)
    };
    // The first scrub waits a full interval: a restart must not re-read everything.
    last.insert("scrub", std::time::Instant::now());
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(jobs.gc_interval) => {}
                _ = stop.changed() => return,
            }
        }
        first = false;
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
        let plan: Vec<&'static str> = [
            ("gc", jobs.gc_interval),
            ("orphans", Duration::from_secs(3600)),
            ("usage", Duration::from_secs(60)),
            ("retention", jobs.retention_every),
            ("scrub", jobs.scrub_every),
            ("index-verify", jobs.scrub_every),
        ]
        .into_iter()
        .filter(|(job, every)| due(&last, job, *every))
        .map(|(job, _)| job)
        .collect();
        for job in plan {
            let (s, m) = (store.clone(), metrics.clone());
            let r = tokio::task::spawn_blocking(move || run_job(job, &s, &m)).await;
            match r {
                Ok(Ok(())) => {
                    last.insert(job, std::time::Instant::now());
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    metrics.job_success.with_label_values(&[job]).set(now);
                }
                Ok(Err(e)) => {
                    metrics.job_errors.with_label_values(&[job]).inc();
                    tracing::error!(job, error = %e, "maintenance job failed");
                }
                Err(e) => {
                    metrics.job_errors.with_label_values(&[job]).inc();
                    tracing::error!(job, error = %e, "maintenance job panicked");
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// Gives memory that glibc's allocator holds free back to the kernel.
///
/// Every thread that allocates gets its own arena, and an arena only shrinks
/// from its top: under thousands of small requests a second, freed memory in
/// the middle of the blocking pool's arenas stayed resident, and the 30-minute
/// soak (tests/test_soak.py) saw RSS creep from 132 to 206 MiB while the live
/// data stayed the same. `malloc_trim` releases the free pages of every arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists (under its
    // locks) and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Longest a GC job runs before the other maintenance jobs get their turn.
const GC_JOB_BUDGET: Duration = Duration::from_secs(20);

fn run_job(job: &str, s: &Store, m: &s3api::metrics::Metrics) -> storage::Result<()> {
    let now = SystemTime::now();
    match job {
        "gc" => {
            // Until nothing is due, so GC keeps up with any delete rate the
            // server accepts; the other jobs wait at most the budget.
            let gc = s.gc_until_done(now, Some(GC_JOB_BUDGET))?;
            if gc.reclaimed_blobs > 0 {
                tracing::info!(blobs = gc.reclaimed_blobs, bytes = gc.reclaimed_bytes, "GC reclaimed space");
            }
            let expired = s.expire_uploads(now)?;
            if expired > 0 {
                tracing::info!(uploads = expired, "expired abandoned multipart uploads");
            }
        }
        "orphans" => {
            let orphans = s.sweep_orphans(now)?;
            if orphans > 0 {
                tracing::info!(files = orphans, "removed orphan blob files");
            }
        }
        "usage" => m.refresh_storage(s)?,
        "retention" => {
            let evals = retention_pass(s)?;
            m.refresh_wal(&evals);
        }
        "index-verify" => {
            // A damaged block in the index is otherwise met only by the read that
            // needs it; this pass (at start, then with the scrub) finds it early.
            let entries = s.verify_index()?;
            tracing::info!(entries, "index verified: every block's checksum matches");
        }
        "scrub" => {
            let r = s.scrub(&mut |_, _| {})?;
            if r.corrupt.is_empty() {
                tracing::info!(blobs = r.blobs, bytes = r.bytes, "scrub found no corruption");
            } else {
                for c in &r.corrupt {
                    tracing::error!(blob = %c.hash, problem = %c.problem, objects = ?c.objects, "scrub: corrupt blob");
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Evaluates every repository of every bucket; enforces where the policy says
/// so. Returns the evaluations (for the WAL metrics).
fn retention_pass(s: &Store) -> storage::Result<Vec<Arc<storage::wal::Evaluation>>> {
    let mut out = Vec::new();
    for b in s.list_buckets()? {
        for repo in s.wal_repositories(&b.name)? {
            let policy = s.policy_for(&b.name, &repo)?;
            if policy.policy.enforce {
                let (objects, bytes) = s.retention_run(&b.name, &repo, usize::MAX)?;
                if objects > 0 {
                    tracing::info!(bucket = %b.name, repo, objects, bytes, "retention deleted what the policy releases");
                }
            }
            out.push(s.evaluate(&b.name, &repo)?);
        }
    }
    Ok(out)
}
