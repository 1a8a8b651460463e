//! The `walstore` binary: parse configuration, open storage, bind, serve.

mod cli;
mod client;
mod config;
mod credentials;
mod offbox;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
        /// Tests only: the store's clock stands still and is set through the admin API
        /// (`POST /_walstore/test-clock?ms=…`), so tests let days pass in a moment.
        #[arg(long, hide = true)]
        test_clock: bool,
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
    /// S3 Object Lock of a bucket: show it, enable it with a default retention.
    Lock {
        #[command(subcommand)]
        cmd: cli::LockCmd,
    },
    /// Versions and delete markers of a versioned bucket.
    Versions {
        #[command(subcommand)]
        cmd: VersionsCmd,
    },
    /// Read-only views of a bucket as it stood at a past instant (ransomware recovery).
    Asof {
        #[command(subcommand)]
        cmd: cli::AsofCmd,
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
    /// WAL-G repositories: forget a repository's identity (reset-identity).
    Repo {
        #[command(subcommand)]
        cmd: cli::RepoCmd,
    },
    /// Uploads refused by the split-brain guard or the identity check, and their resolution.
    Quarantine {
        #[command(subcommand)]
        cmd: cli::QuarantineCmd,
    },
    /// Off-box copies: replicate into an existing S3 bucket (add, list, status, pause, resume, remove).
    Replication {
        #[command(subcommand)]
        cmd: offbox::ReplicationCmd,
    },
    /// Tiering: keep hot WAL and recent backups local, serve the rest from a replication target (set, list, status, remove).
    Tier {
        #[command(subcommand)]
        cmd: offbox::TierCmd,
    },
    /// Fill an empty data directory from an off-box copy (resumable; verifies every object).
    Rebuild(offbox::RebuildArgs),
    /// Move in from MinIO or any S3: copy a bucket/prefix with its LastModified and ETags (resumable, idempotent).
    Import(offbox::ImportArgs),
    /// Show the audit log (overrides, retention deletions, quarantines, policy and key changes).
    Audit {
        /// Newest records to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: cli::Conn,
    },
}

/// `versions` subcommands.
#[derive(clap::Subcommand, Debug)]
enum VersionsCmd {
    /// List versions and delete markers under BUCKET[/PREFIX] (first 1000).
    Ls {
        /// BUCKET or BUCKET/PREFIX
        target: String,
        #[command(flatten)]
        conn: cli::Conn,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, settings, test_clock } => serve(config, *settings, test_clock),
        Command::Status { target, conn } => cli::status(&target, &conn),
        Command::Retention { cmd } => cli::retention(cmd),
        Command::Policy { cmd } => cli::policy(cmd),
        Command::Key { cmd } => cli::key(cmd),
        Command::Bucket { cmd } => cli::bucket(cmd),
        Command::Lock { cmd } => cli::lock(cmd),
        Command::Versions { cmd: VersionsCmd::Ls { target, conn } } => cli::versions(&target, &conn),
        Command::Asof { cmd } => cli::asof(cmd),
        Command::Gc { grace, conn } => cli::gc(grace.as_deref(), &conn),
        Command::Check { conn } => cli::check(&conn),
        Command::Scrub { conn } => cli::scrub(&conn),
        Command::Audit { limit, conn } => cli::audit(limit, &conn),
        Command::Repo { cmd } => cli::repo(cmd),
        Command::Quarantine { cmd } => cli::quarantine(cmd),
        Command::Replication { cmd } => offbox::replication(cmd),
        Command::Tier { cmd } => offbox::tier(cmd),
        Command::Import(args) => match offbox::import(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Rebuild(args) => match offbox::rebuild(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
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

fn open_store(
    data_dir: PathBuf,
    cfg: Option<&Config>,
    clock: Option<Arc<storage::ManualClock>>,
) -> Result<Store, String> {
    let mut sc = StoreConfig::new(data_dir);
    if let Some(c) = clock {
        sc.clock = c;
    }
    if let Some(c) = cfg {
        sc.gc_grace = c.gc_grace;
        sc.multipart_expiry = c.multipart_expiry;
        sc.index.block_cache_bytes = c.block_cache as usize;
        sc.space_reserve = c.reserve_space;
    }
    Store::open(sc).map_err(|e| format!("cannot open the data directory: {e}"))
}

fn serve(config_file: Option<PathBuf>, flags: Settings, test_clock: bool) -> Result<(), String> {
    let file = match &config_file {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    let cfg = flags.or(file).resolve()?;
    init_logging(&cfg.log_level, cfg.log_format);
    storage::failpoint::validate_env()?;

    let (creds, origin) = credentials::load_or_create(&cfg.data_dir)?;
    let clock = test_clock.then(|| {
        tracing::warn!("--test-clock: the store's clock stands still and is set through the admin API; for tests only");
        Arc::new(storage::ManualClock::starting_now())
    });
    let store = Arc::new(open_store(cfg.data_dir.clone(), Some(&cfg), clock.clone())?);
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
        signature_v2: cfg.signature_v2,
        body_limits: s3api::body::BodyLimits { timeout: cfg.body_timeout, min_rate: cfg.body_min_rate },
        ..ApiConfig::default()
    };
    let max_connections = connection_cap(cfg.max_connections);
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(Arc::new(s3api::tls::TlsReloader::new(cert.clone(), key.clone())?)),
        None => None,
    };
    let keys = Arc::new(Credentials::new(creds.access_key.clone(), creds.secret_key.clone(), store.clone()));
    let mut state = AppState::new(store.clone(), api, keys);
    state.test_clock = clock;
    apply_config_targets(&store, &cfg.replication)?;
    let state = Arc::new(state);

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
        let reader = remote::TierReader::new(&store, state.tier.clone(), cfg.body_timeout)
            .map_err(|e| format!("cannot start the tier reader: {e}"))?;
        store.set_remote_blobs(reader);
        let scheduler = start_workers(&store, &state.metrics, &state.replicator, &state.tier, &cfg)
            .map_err(|e| format!("cannot start the background workers: {e}"))?;
        let opts = ServeOptions {
            drain_timeout: cfg.drain_timeout,
            header_read_timeout: cfg.header_timeout,
            max_header_bytes: cfg.max_header_size,
            max_connections,
            tls,
        };
        // Background work stops as soon as shutdown begins, in parallel with
        // draining the requests in flight (whatever it was doing resumes at
        // the next start).
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            shutdown.await;
            let _ = stopped_tx.send(tokio::task::spawn_blocking(move || scheduler.stop(WORKER_STOP_WITHIN)));
        };
        s3api::serve(listener, state, opts, shutdown).await.map_err(|e| e.to_string())?;
        if let Ok(stopping) = stopped_rx.await {
            let _ = stopping.await;
        }
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

/// How long shutdown waits for the background workers (each checks its stop
/// signal between steps of at most [`WORKER_STEP`]).
const WORKER_STOP_WITHIN: Duration = Duration::from_secs(2);
/// Longest step of a background worker before it saves its progress and looks
/// at the stop signal.
const WORKER_STEP: Duration = Duration::from_millis(500);
/// How often changed repositories are evaluated again (what metrics and
/// status show).
const EVALUATE_EVERY: Duration = Duration::from_secs(10);

/// How often the replication worker looks at the journals: the longest a change
/// waits before it is sent to a target that is up.
const REPLICATION_EVERY: Duration = Duration::from_secs(1);

/// Makes the store's configuration-file targets what the file says: adds new ones,
/// updates changed ones (a pause set through the CLI stays), removes the ones no
/// longer in the file. A target of the same name added through the CLI is refused.
fn apply_config_targets(store: &Store, docs: &[s3api::admin::ReplicationDoc]) -> Result<(), String> {
    let existing = store.replication_targets();
    for doc in docs {
        let mut rec = doc.record(store.now(), true)?;
        match existing.iter().find(|t| t.name == rec.name) {
            Some(old) if !old.from_config => {
                return Err(format!(
                    "replication target {:?} is in the configuration file and was also added with `walstore \
                     replication add`; remove one of them",
                    rec.name
                ))
            }
            Some(old)
                if old.spec == rec.spec
                    && old.source_bucket == rec.source_bucket
                    && old.source_prefix == rec.source_prefix => {}
            Some(old) => {
                rec.paused = old.paused;
                rec.created = old.created;
                let moved = serde_json::from_str::<remote::TargetSpec>(&old.spec).is_ok_and(|o| {
                    (o.endpoint, o.bucket, o.prefix)
                        != (doc.spec.endpoint.clone(), doc.spec.bucket.clone(), doc.spec.prefix.clone())
                });
                if moved {
                    // Another place: it holds none of it yet, so everything is sent there.
                    store.remove_replication_target(&old.name).map_err(|e| e.to_string())?;
                }
                store.put_replication_target(rec, true).map_err(|e| format!("replication target {}: {e}", doc.name))?;
                tracing::info!(target_name = %doc.name, "replication target updated from the configuration file");
            }
            None => {
                let n = store
                    .put_replication_target(rec, true)
                    .map_err(|e| format!("replication target {}: {e}", doc.name))?;
                tracing::info!(target_name = %doc.name, journaled = n, "replication target added from the configuration file");
            }
        }
    }
    for old in existing.iter().filter(|t| t.from_config && !docs.iter().any(|d| d.name == t.name)) {
        store.remove_replication_target(&old.name).map_err(|e| e.to_string())?;
        tracing::info!(target_name = %old.name, "replication target removed (no longer in the configuration file)");
    }
    Ok(())
}

/// Starts the background workers, each on its own thread: GC, evaluation of
/// every repository, retention, usage metrics, scrub, index verification.
fn start_workers(
    store: &Arc<Store>,
    metrics: &Arc<s3api::metrics::Metrics>,
    replicator: &Arc<remote::Replicator>,
    tier: &Arc<remote::TierState>,
    cfg: &Config,
) -> std::io::Result<storage::worker::Scheduler> {
    use storage::jobs::{EvaluateJob, GcJob, IndexVerifyJob, RetentionJob, ScrubJob};
    use storage::worker::{FnWorker, Progress, Scheduler, SchedulerOptions, Worker};
    let m = metrics.clone();
    let usage = FnWorker::new("usage", Some(Duration::from_secs(60)), move |s: &Store, _: &mut storage::Budget| {
        release_free_memory();
        m.refresh_storage(s)?;
        Ok(Progress::Done)
    });
    let scrub_every = Some(cfg.scrub_interval).filter(|d| !d.is_zero());
    let workers: Vec<Box<dyn Worker>> = vec![
        Box::new(GcJob::new(cfg.gc_interval)),
        Box::new(EvaluateJob::new(EVALUATE_EVERY)),
        Box::new(RetentionJob::new(cfg.retention_interval)),
        Box::new(usage),
        Box::new(ScrubJob::new(scrub_every, cfg.scrub_rate)),
        Box::new(IndexVerifyJob::new(scrub_every)),
        Box::new(remote::ReplicationJob::new(store.clone(), replicator.clone(), REPLICATION_EVERY)?),
        Box::new(remote::TierJob::new(
            store.clone(),
            tier.clone(),
            cfg.tier_interval,
            Some(cfg.tier_scrub_interval).filter(|d| !d.is_zero()),
            cfg.tier_scrub_full,
            cfg.tier_cache,
        )?),
    ];
    let m = metrics.clone();
    let opts = SchedulerOptions {
        step: WORKER_STEP,
        on_run: Some(Arc::new(move |w, err| m.observe_worker(w, err.is_some()))),
    };
    Scheduler::start(store.clone(), workers, opts)
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
