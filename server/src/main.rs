//! The `walstore` binary: parse configuration, open storage, bind, serve.

mod config;
mod credentials;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use s3api::{ApiConfig, AppState, ServeOptions, StaticKeys};
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
    /// Verify index ↔ blob consistency of a stopped server's data directory.
    Check {
        /// Data directory.
        #[arg(long, env = "WALSTORE_DATA_DIR", default_value = "./walstore-data")]
        data_dir: PathBuf,
    },
    /// Run garbage collection on a stopped server's data directory.
    Gc {
        /// Data directory.
        #[arg(long, env = "WALSTORE_DATA_DIR", default_value = "./walstore-data")]
        data_dir: PathBuf,
        /// Grace period for unreferenced blobs, e.g. 1h (0s removes them at once).
        #[arg(long, default_value = "1h")]
        grace: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, settings } => serve(config, *settings),
        Command::Check { data_dir } => offline_check(data_dir),
        Command::Gc { data_dir, grace } => offline_gc(data_dir, &grace),
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

    let api = ApiConfig { region: cfg.region.clone(), max_object_size: cfg.max_object_size, ..ApiConfig::default() };
    let keys = Arc::new(StaticKeys::new(vec![(creds.access_key.clone(), creds.secret_key.clone())]));
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
        tracing::info!(%addr, data_dir = %cfg.data_dir.display(), region = %cfg.region, "walstore is serving S3");
        // Scripts wait for this line to learn the port when listening on :0.
        println!("walstore: listening on http://{addr}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(maintenance(store.clone(), cfg.gc_interval, stop_rx));
        let opts = ServeOptions { drain_timeout: cfg.drain_timeout, ..ServeOptions::default() };
        s3api::serve(listener, state, opts, shutdown_signal()).await.map_err(|e| e.to_string())?;
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install a SIGTERM handler");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
    }
}

/// The maintenance worker: GC of unreferenced blobs (bounded per pass),
/// expiry of abandoned uploads, and an hourly orphan sweep.
async fn maintenance(store: Arc<Store>, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let s = store.clone();
        let sweep = last_sweep.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
        let r = tokio::task::spawn_blocking(move || -> storage::Result<()> {
            let now = SystemTime::now();
            let gc = s.gc_pass(now, 10_000)?;
            if gc.reclaimed_blobs > 0 {
                tracing::info!(blobs = gc.reclaimed_blobs, bytes = gc.reclaimed_bytes, "GC reclaimed space");
            }
            let expired = s.expire_uploads(now)?;
            if expired > 0 {
                tracing::info!(uploads = expired, "expired abandoned multipart uploads");
            }
            if sweep {
                let orphans = s.sweep_orphans(now)?;
                if orphans > 0 {
                    tracing::info!(files = orphans, "removed orphan blob files");
                }
            }
            Ok(())
        })
        .await;
        match r {
            Ok(Ok(())) => {
                if sweep {
                    last_sweep = Some(std::time::Instant::now());
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "maintenance pass failed"),
            Err(e) => tracing::error!(error = %e, "maintenance task panicked"),
        }
    }
}

fn offline_check(data_dir: PathBuf) -> Result<(), String> {
    let store = open_store(data_dir, None)?;
    let r = store.check().map_err(|e| format!("check failed: {e}"))?;
    println!("objects: {}  blobs referenced: {}  orphan blob files: {}", r.objects, r.blobs, r.orphan_files);
    if r.problems.is_empty() {
        println!("consistent");
        Ok(())
    } else {
        for p in &r.problems {
            println!("problem: {p}");
        }
        Err(format!("{} inconsistencies found", r.problems.len()))
    }
}

fn offline_gc(data_dir: PathBuf, grace: &str) -> Result<(), String> {
    let grace =
        units::parse_duration(grace).or_else(|e| if grace.trim() == "0" { Ok(Duration::ZERO) } else { Err(e) })?;
    let mut sc = StoreConfig::new(data_dir);
    sc.gc_grace = grace;
    let store = Store::open(sc).map_err(|e| format!("cannot open the data directory: {e}"))?;
    let now = SystemTime::now();
    let mut total = storage::GcReport::default();
    loop {
        let r = store.gc_pass(now, 10_000).map_err(|e| format!("gc failed: {e}"))?;
        total.reclaimed_blobs += r.reclaimed_blobs;
        total.reclaimed_bytes += r.reclaimed_bytes;
        total.waiting = r.waiting;
        if r.reclaimed_blobs == 0 {
            break;
        }
    }
    let orphans = store.sweep_orphans(now).map_err(|e| format!("orphan sweep failed: {e}"))?;
    println!(
        "reclaimed {} blobs ({} bytes), {} orphan files; {} blobs still in their grace period",
        total.reclaimed_blobs, total.reclaimed_bytes, orphans, total.waiting
    );
    Ok(())
}
