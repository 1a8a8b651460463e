//! The admin commands of the `walstore` binary. Each runs against the running
//! server's admin API (signed with an admin key), or — with `--data-dir` —
//! directly on a stopped server's data directory.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use s3api::admin::{execute, normalize_prefix, AdminRequest, PolicyDoc};
use serde_json::{json, Value};
use storage::{BucketName, KeyRole, Store, StoreConfig};

use crate::client::Client;

/// How to reach the store.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Server endpoint [default: http://127.0.0.1:9000]
    #[arg(long, env = "WALSTORE_ENDPOINT")]
    pub endpoint: Option<String>,
    /// CA certificate (PEM) to verify an https endpoint with
    #[arg(long, env = "WALSTORE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub rest: ConnRest,
}

/// The connection flags every admin command shares besides the endpoint and its CA
/// (which `replication add` names `--server`/`--server-ca-cert`).
#[derive(Args, Debug, Clone)]
pub struct ConnRest {
    /// Work directly on this data directory (the server must be stopped)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Admin access key [default: from $WALSTORE_DATA_DIR/root-credentials, else ./walstore-data/root-credentials]
    #[arg(long, env = "WALSTORE_ROOT_ACCESS_KEY", hide_env_values = true)]
    pub access_key: Option<String>,
    /// Admin secret key
    #[arg(long, env = "WALSTORE_ROOT_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Print JSON instead of tables
    #[arg(long)]
    pub json: bool,
}

impl std::ops::Deref for Conn {
    type Target = ConnRest;
    fn deref(&self) -> &ConnRest {
        &self.rest
    }
}

/// `retention` subcommands.
#[derive(Subcommand, Debug)]
pub enum RetentionCmd {
    /// Show what retention would delete now, and why (dry run).
    Plan {
        /// BUCKET or BUCKET/PREFIX
        target: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete now what the retention policy releases (even if the policy does not enforce).
    Run {
        /// BUCKET or BUCKET/PREFIX
        target: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `policy` subcommands.
// Parsed once per process; boxing clap's flattened fields would only obscure them.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Show the stored policies of a bucket and the effective default.
    Show {
        /// BUCKET
        bucket: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set fields of the policy of a bucket or repository prefix (others keep their value).
    Set {
        /// BUCKET or BUCKET/PREFIX
        target: String,
        /// allow | protect-required | deny-all
        #[arg(long)]
        protection: Option<String>,
        /// e.g. 7d
        #[arg(long)]
        recovery_window: Option<String>,
        /// keep the N newest full backups (0 = off)
        #[arg(long)]
        full_count: Option<u32>,
        /// never fewer backups than this
        #[arg(long)]
        min_backups: Option<u32>,
        /// keep backups marked permanent
        #[arg(long)]
        keep_permanent: Option<bool>,
        /// e.g. 7d
        #[arg(long)]
        branch_grace: Option<String>,
        /// e.g. 3d
        #[arg(long)]
        incomplete_grace: Option<String>,
        /// e.g. 1d
        #[arg(long)]
        min_object_age: Option<String>,
        /// e.g. 15m
        #[arg(long)]
        clock_skew: Option<String>,
        /// e.g. 1h
        #[arg(long)]
        archive_lag_grace: Option<String>,
        /// e.g. 16MiB, or auto
        #[arg(long)]
        segment_size: Option<String>,
        /// how long an object stays deletable before the retention worker deletes it, e.g. 1d
        #[arg(long)]
        gc_delay: Option<String>,
        /// let the server delete what the policy releases
        #[arg(long)]
        enforce: Option<bool>,
        /// refuse a different upload for an existing WAL file
        #[arg(long)]
        split_brain_guard: Option<bool>,
        /// uploads from another cluster (system identifier, version, segment size): enforce, warn or off
        #[arg(long)]
        identity_check: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove the stored policy of a bucket or prefix.
    Remove {
        /// BUCKET or BUCKET/PREFIX
        target: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `key` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create an access key; prints its secret once.
    Create {
        /// admin | writer | wal-writer | reader
        #[arg(long)]
        role: String,
        /// Limit to BUCKET or BUCKET/PREFIX
        #[arg(long)]
        scope: Option<String>,
        /// Free text
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List access keys (without secrets).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke an access key.
    Revoke {
        /// Access key id
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `quarantine` subcommands.
#[derive(Subcommand, Debug)]
pub enum QuarantineCmd {
    /// List uploads refused by the split-brain guard.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Resolve a conflict: keep the stored copy (first) or replace it with the quarantined upload (second).
    Resolve {
        /// Record id (from `walstore quarantine list`)
        id: String,
        /// first | second
        #[arg(long)]
        keep: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `repo` subcommands.
#[derive(Subcommand, Debug)]
pub enum RepoCmd {
    /// Forget a repository's identity (system identifier, version, segment size; audited):
    /// the next upload that carries one teaches it. For a repository reused on purpose.
    ResetIdentity {
        /// BUCKET/PREFIX of the repository
        target: String,
        /// Why (kept in the audit log)
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `walstore repo …`.
pub fn repo(cmd: RepoCmd) -> Result<(), String> {
    match cmd {
        RepoCmd::ResetIdentity { target, reason, conn } => {
            let (bucket, prefix) = split_target(&target)?;
            let Some(prefix) = prefix else {
                return Err(format!("{target}: name the repository as BUCKET/PREFIX"));
            };
            if reason.trim().is_empty() {
                return Err("--reason must say why (it is audited)".into());
            }
            let mut q = target_query(&bucket, &Some(prefix.clone()));
            q.push(("reason", reason.clone()));
            let req = AdminRequest::IdentityReset { bucket, prefix, reason };
            let (_, v) = run(&conn, req, ("POST", "/_walstore/identity/reset", q, Vec::new()))?;
            print(&conn, &v, |v| {
                format!(
                    "forgot the identity of {}/{} (system identifier {}, learned from {}); the next upload that carries one teaches it\n",
                    s(&v["bucket"]),
                    s(&v["prefix"]),
                    s(&v["forgot"]["system_identifier"]),
                    s(&v["learned_from"])
                )
            });
            Ok(())
        }
    }
}

/// `bucket` subcommands.
#[derive(Subcommand, Debug)]
pub enum BucketCmd {
    /// Create a bucket.
    Create {
        /// Name
        name: String,
        /// With S3 Object Lock (and versioning, which then cannot be suspended)
        #[arg(long)]
        object_lock: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List buckets.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an empty bucket.
    Delete {
        /// Name
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn split_target(t: &str) -> Result<(BucketName, Option<String>), String> {
    let (b, p) = match t.split_once('/') {
        Some((b, p)) => (b, Some(normalize_prefix(p))),
        None => (t, None),
    };
    Ok((BucketName::parse(b).map_err(|e| e.to_string())?, p))
}

fn credentials(conn: &Conn) -> Result<(String, String), String> {
    if let (Some(a), Some(s)) = (&conn.access_key, &conn.secret_key) {
        return Ok((a.clone(), s.clone()));
    }
    // The server keeps generated root credentials in its data directory.
    let dir = std::env::var_os("WALSTORE_DATA_DIR").map_or_else(|| PathBuf::from("./walstore-data"), PathBuf::from);
    let file = dir.join("root-credentials");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let v: toml::Value = toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        if let (Some(a), Some(s)) =
            (v.get("access_key").and_then(|x| x.as_str()), v.get("secret_key").and_then(|x| x.as_str()))
        {
            return Ok((a.to_owned(), s.to_owned()));
        }
    }
    Err("no admin credentials: pass --access-key/--secret-key or set WALSTORE_ROOT_ACCESS_KEY/WALSTORE_ROOT_SECRET_KEY"
        .into())
}

pub(crate) fn client(conn: &Conn) -> Result<Client, String> {
    let (a, s) = credentials(conn)?;
    Client::new(conn.endpoint.as_deref().unwrap_or("http://127.0.0.1:9000"), &a, &s, conn.ca_cert.as_deref())
}

fn offline(conn: &Conn) -> Result<Option<Store>, String> {
    offline_with(conn, None)
}

fn offline_with(conn: &Conn, grace: Option<std::time::Duration>) -> Result<Option<Store>, String> {
    let Some(dir) = &conn.data_dir else { return Ok(None) };
    if !dir.join("index").is_dir() && !dir.join("blobs").is_dir() {
        return Err(format!("{} is not a walstore data directory", dir.display()));
    }
    let mut cfg = StoreConfig::new(dir);
    if let Some(g) = grace {
        cfg.gc_grace = g;
    }
    Store::open(cfg).map(Some).map_err(|e| {
        let m = e.to_string();
        if m.contains("lock") {
            format!(
                "the data directory {} is in use by a running server; omit --data-dir to use its admin API",
                dir.display()
            )
        } else {
            format!("cannot open {}: {m}", dir.display())
        }
    })
}

/// Runs an admin operation online or offline; returns (ok, json).
pub(crate) fn run(
    conn: &Conn,
    req: AdminRequest,
    http: (&str, &str, Vec<(&str, String)>, Vec<u8>),
) -> Result<(bool, Value), String> {
    if let Some(store) = offline(conn)? {
        return execute(&store, &remote::Replicator::default(), &remote::TierState::default(), "cli", req).map_err(
            |e| match e.cause {
                Some(cause) => cause,
                None => format!("{}: {}", e.code.as_str(), e.message),
            },
        );
    }
    let (method, path, query, body) = http;
    let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, bytes) = client(conn)?.request(method, path, &q, &body)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if status == 200 => Ok((true, v)),
        Ok(v) if status == 409 => Ok((false, v)),
        _ => Err(server_error(status, &bytes)),
    }
}

pub(crate) fn server_error(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let pick = |tag: &str| {
        text.split(&format!("<{tag}>")).nth(1).and_then(|r| r.split(&format!("</{tag}>")).next()).map(str::to_owned)
    };
    // The message is XML text: show it as the server meant it.
    let unescape = |m: String| {
        m.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
    };
    match (pick("Code"), pick("Message").map(unescape)) {
        (Some(c), Some(m)) => format!("server refused ({status} {c}): {m}"),
        _ => format!("server answered {status}"),
    }
}

fn target_query(bucket: &BucketName, prefix: &Option<String>) -> Vec<(&'static str, String)> {
    let mut q = vec![("bucket", bucket.as_str().to_owned())];
    if let Some(p) = prefix {
        q.push(("prefix", p.clone()));
    }
    q
}

pub(crate) fn print(conn: &Conn, v: &Value, text: impl FnOnce(&Value) -> String) {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", text(v));
    }
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn ms_to_text(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) => s3api::xml::iso8601(storage::Timestamp::from_millis(ms)).replace(".000Z", "Z"),
        None => "-".into(),
    }
}

/// The identity lines of a repository's status.
fn identity_text(id: &Value, codecs: &Value) -> String {
    let mut out = String::new();
    let mix: Vec<String> = codecs.as_object().into_iter().flatten().map(|(c, n)| format!("{c} {}", s(n))).collect();
    let mix = if mix.is_empty() { "no segments".to_owned() } else { mix.join(", ") };
    if id["system_identifier"].is_null() {
        out.push_str(&format!("  identity: not known yet (check {}); codecs: {mix}\n", s(&id["check"])));
    } else {
        out.push_str(&format!(
            "  identity: system identifier {}, PostgreSQL {}, segments {} (learned from {}; check {}); codecs: {mix}\n",
            s(&id["system_identifier"]),
            if id["pg_version"].is_null() { "?".into() } else { s(&id["pg_version"]) },
            if id["segment_size"].is_null() { "?".into() } else { s(&id["segment_size"]) },
            s(&id["learned_from"]),
            s(&id["check"]),
        ));
    }
    let st = &id["since_start"];
    if st["opaque"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "  identity: {} upload(s) since start could not be read (client-side encryption?): accepted unchecked\n",
            s(&st["opaque"])
        ));
    }
    if st["conflicts"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "  IDENTITY CONFLICTS since start: {}; last at {}: {}\n",
            s(&st["conflicts"]),
            s(&st["last_conflict"]["time"]),
            s(&st["last_conflict"]["message"])
        ));
    }
    out
}

fn status_text(v: &Value) -> String {
    let mut out = String::new();
    let repos = v["repositories"].as_array().cloned().unwrap_or_default();
    if repos.is_empty() {
        out.push_str(&format!("bucket {}: no WAL-G repositories\n", s(&v["bucket"])));
    }
    for r in repos {
        let rep = &r["report"];
        out.push_str(&format!("repository {}/{}\n", s(&r["bucket"]), s(&r["prefix"])));
        if r["retention_lock_waits"].as_u64().unwrap_or(0) > 0 {
            out.push_str(&format!(
                "  retention waits for Object Lock on {} released unit(s) (walstore retention plan)\n",
                s(&r["retention_lock_waits"])
            ));
        }
        if r["retention_paused_by_view"].as_bool() == Some(true) {
            out.push_str("  retention paused: an as-of view shows this repository\n");
        }
        let p = &r["policy"];
        out.push_str(&format!(
            "  policy: protection {}, window {}, min backups {}, full count {}, enforce {}\n",
            s(&p["protection"]),
            s(&p["recovery_window"]),
            s(&p["min_backups"]),
            s(&p["full_count"]),
            s(&p["enforce"])
        ));
        for f in r["frozen"].as_array().into_iter().flatten() {
            out.push_str(&format!("  FROZEN: {}\n", s(f)));
        }
        for a in r["alerts"].as_array().into_iter().flatten() {
            out.push_str(&format!("  ALERT: {}\n", s(a)));
        }
        out.push_str(&format!(
            "  head timeline {}, segment size {} bytes\n",
            s(&r["head_timeline"]),
            s(&r["segment_size"])
        ));
        out.push_str(&identity_text(&r["identity"], &rep["wal_codecs"]));
        match rep["last_segment"].as_array() {
            Some(ls) if ls.len() == 3 => out.push_str(&format!(
                "  last WAL segment: {} received {} (up to LSN {})\n",
                s(&ls[0]),
                ms_to_text(&ls[1]),
                s(&ls[2])
            )),
            _ => out.push_str("  last WAL segment: none\n"),
        }
        let windows = rep["windows"].as_array().cloned().unwrap_or_default();
        if windows.is_empty() {
            out.push_str("  restorable window: none\n");
        }
        for w in windows {
            out.push_str(&format!(
                "  restorable window: {} .. {} (from backup {}, WAL continuous to {})\n",
                ms_to_text(&w["from"]),
                ms_to_text(&w["to"]),
                s(&w["backup"]),
                s(&w["to_lsn"])
            ));
        }
        for g in rep["gaps"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  gap ({}): timeline {} segments {}..{} ({} missing)\n",
                if g["pending"].as_bool() == Some(true) { "pending" } else { "LOST" },
                s(&g["timeline"]),
                s(&g["first"]),
                s(&g["last"]),
                s(&g["segments"])
            ));
        }
        out.push_str(&format!("  WAL segments stored: {}, bytes {}\n", s(&rep["wal_segments"]), s(&rep["bytes"])));
        out.push_str(&format!("  {:<60} {:<12} {:<11} {:<21} reason\n", "backup", "status", "role", "finished"));
        for b in r["backups"].as_array().into_iter().flatten() {
            let status = match &b["status"] {
                Value::String(st) => st.clone(),
                Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
                other => other.to_string(),
            };
            let reasons: Vec<String> = b["reasons"].as_array().into_iter().flatten().map(s).collect();
            out.push_str(&format!(
                "  {:<60} {:<12} {:<11} {:<21} {}\n",
                s(&b["name"]),
                status,
                s(&b["role"]),
                ms_to_text(&b["finished_at"]),
                reasons.join("; ")
            ));
        }
        out.push_str(&format!("  deletable now: {} units\n", s(&r["deletable"]["units"])));
    }
    let refused = v["refused_deletes"].as_array().map(|a| a.len()).unwrap_or(0);
    out.push_str(&format!(
        "refused client deletes (recent): {refused}; quarantined uploads: {}\n",
        s(&v["quarantined"])
    ));
    let targets = v["replication"].as_array().cloned().unwrap_or_default();
    if targets.is_empty() {
        out.push_str("off-box copy: none (walstore replication add)\n");
    }
    for t in &targets {
        out.push_str("off-box copy: ");
        out.push_str(&target_text(t, true));
    }
    out
}

/// `walstore status BUCKET[/PREFIX]`.
pub fn status(target: &str, conn: &Conn) -> Result<(), String> {
    let (bucket, prefix) = split_target(target)?;
    let q = target_query(&bucket, &prefix);
    let (_, v) = run(conn, AdminRequest::Status { bucket, prefix }, ("GET", "/_walstore/status", q, Vec::new()))?;
    print(conn, &v, status_text);
    Ok(())
}

/// `walstore retention plan|run`.
pub fn retention(cmd: RetentionCmd) -> Result<(), String> {
    match cmd {
        RetentionCmd::Plan { target, conn } => {
            let (bucket, prefix) = split_target(&target)?;
            let q = target_query(&bucket, &prefix);
            let (_, v) =
                run(&conn, AdminRequest::Plan { bucket, prefix }, ("GET", "/_walstore/retention/plan", q, Vec::new()))?;
            print(&conn, &v, |v| {
                let mut out = String::new();
                for p in v["plans"].as_array().into_iter().flatten() {
                    out.push_str(&format!("repository {}: enforce {}\n", s(&p["prefix"]), s(&p["enforce"])));
                    for f in p["frozen"].as_array().into_iter().flatten() {
                        out.push_str(&format!("  FROZEN (nothing would be deleted): {}\n", s(f)));
                    }
                    if p["paused_by_view"].as_bool() == Some(true) {
                        out.push_str("  PAUSED: an as-of view shows this repository (walstore asof list)\n");
                    }
                    for w in p["lock_waits"].as_array().into_iter().flatten() {
                        out.push_str(&format!("  waits for Object Lock: {}: {}\n", s(&w["unit"]), s(&w["waits_for"])));
                    }
                    let units = p["units"].as_array().cloned().unwrap_or_default();
                    if units.is_empty() {
                        out.push_str("  nothing to delete\n");
                    }
                    for u in units {
                        if let Some(b) = u.get("Backup") {
                            out.push_str(&format!(
                                "  delete backup {} ({} objects): {}\n",
                                s(&b["name"]),
                                b["paths"].as_array().map_or(0, |a| a.len()),
                                s(&b["reason"])
                            ));
                        } else if let Some(w) = u.get("Wal") {
                            out.push_str(&format!("  delete {}: {}\n", s(&w["path"]), s(&w["reason"])));
                        }
                    }
                }
                out
            });
            Ok(())
        }
        RetentionCmd::Run { target, conn } => {
            let (bucket, prefix) = split_target(&target)?;
            let q = target_query(&bucket, &prefix);
            let (_, v) =
                run(&conn, AdminRequest::Run { bucket, prefix }, ("POST", "/_walstore/retention/run", q, Vec::new()))?;
            print(&conn, &v, |v| {
                v["runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "repository {}: deleted {} objects ({} bytes)\n",
                            s(&r["prefix"]),
                            s(&r["deleted_objects"]),
                            s(&r["deleted_bytes"])
                        )
                    })
                    .collect()
            });
            Ok(())
        }
    }
}

fn policy_text(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// `walstore policy …`.
pub fn policy(cmd: PolicyCmd) -> Result<(), String> {
    match cmd {
        PolicyCmd::Show { bucket, conn } => {
            let b = BucketName::parse(&bucket).map_err(|e| e.to_string())?;
            let q = vec![("bucket", bucket.clone())];
            let (_, v) =
                run(&conn, AdminRequest::PolicyGet { bucket: b }, ("GET", "/_walstore/policy", q, Vec::new()))?;
            print(&conn, &v, policy_text);
            Ok(())
        }
        PolicyCmd::Set {
            target,
            protection,
            recovery_window,
            full_count,
            min_backups,
            keep_permanent,
            branch_grace,
            incomplete_grace,
            min_object_age,
            clock_skew,
            archive_lag_grace,
            segment_size,
            gc_delay,
            enforce,
            split_brain_guard,
            identity_check,
            conn,
        } => {
            let (bucket, prefix) = split_target(&target)?;
            let doc = PolicyDoc {
                protection,
                recovery_window,
                full_count,
                min_backups,
                keep_permanent,
                branch_grace,
                incomplete_grace,
                min_object_age,
                clock_skew,
                archive_lag_grace,
                segment_size,
                gc_delay,
                enforce,
                split_brain_guard,
                identity_check,
                ..PolicyDoc::default()
            };
            let body = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
            let q = target_query(&bucket, &prefix);
            let req = AdminRequest::PolicySet { bucket, prefix: prefix.unwrap_or_default(), doc: Box::new(doc) };
            let (_, v) = run(&conn, req, ("PUT", "/_walstore/policy", q, body))?;
            print(&conn, &v, policy_text);
            Ok(())
        }
        PolicyCmd::Remove { target, conn } => {
            let (bucket, prefix) = split_target(&target)?;
            let q = target_query(&bucket, &prefix);
            let req = AdminRequest::PolicyRemove { bucket, prefix: prefix.unwrap_or_default() };
            let (_, v) = run(&conn, req, ("DELETE", "/_walstore/policy", q, Vec::new()))?;
            print(&conn, &v, |_| "policy removed\n".into());
            Ok(())
        }
    }
}

/// `walstore key …`.
pub fn key(cmd: KeyCmd) -> Result<(), String> {
    match cmd {
        KeyCmd::Create { role, scope, description, conn } => {
            let r = KeyRole::from_name(&role)
                .ok_or_else(|| format!("role {role:?} is not admin, writer, wal-writer or reader"))?;
            let body =
                serde_json::to_vec(&serde_json::json!({"role": role, "scope": scope, "description": description}))
                    .map_err(|e| e.to_string())?;
            let req = AdminRequest::KeyCreate { role: r, scope, description };
            let (_, v) = run(&conn, req, ("POST", "/_walstore/keys", Vec::new(), body))?;
            print(&conn, &v, |v| {
                format!(
                    "created {} key (scope {}); the secret is shown only now:\n  AWS_ACCESS_KEY_ID={}\n  AWS_SECRET_ACCESS_KEY={}\n",
                    s(&v["role"]), s(&v["scope"]), s(&v["id"]), s(&v["secret"])
                )
            });
            Ok(())
        }
        KeyCmd::List { conn } => {
            let (_, v) = run(&conn, AdminRequest::KeysList, ("GET", "/_walstore/keys", Vec::new(), Vec::new()))?;
            print(&conn, &v, |v| {
                let mut out = format!("{:<22} {:<11} {:<30} {:<22} description\n", "id", "role", "scope", "created");
                for k in v["keys"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<22} {:<11} {:<30} {:<22} {}\n",
                        s(&k["id"]),
                        s(&k["role"]),
                        s(&k["scope"]),
                        s(&k["created"]),
                        s(&k["description"])
                    ));
                }
                out
            });
            Ok(())
        }
        KeyCmd::Revoke { id, conn } => {
            let q = vec![("id", id.clone())];
            let (_, v) = run(&conn, AdminRequest::KeyRevoke { id }, ("DELETE", "/_walstore/keys", q, Vec::new()))?;
            print(&conn, &v, |v| format!("revoked {}\n", s(&v["revoked"])));
            Ok(())
        }
    }
}

/// `walstore gc`. `grace` (offline only) overrides the 1 h default grace period.
pub fn gc(grace: Option<&str>, conn: &Conn) -> Result<(), String> {
    let v = match grace {
        Some(g) => {
            if conn.data_dir.is_none() {
                return Err("--grace applies to --data-dir only; a running server uses its --gc-grace".into());
            }
            let g = storage::units::parse_duration(g).or_else(|e| {
                if g.trim() == "0" {
                    Ok(std::time::Duration::ZERO)
                } else {
                    Err(e)
                }
            })?;
            let store = offline_with(conn, Some(g))?.ok_or("no data dir")?;
            execute(&store, &remote::Replicator::default(), &remote::TierState::default(), "cli", AdminRequest::Gc)
                .map_err(|e| e.message)?
                .1
        }
        None => run(conn, AdminRequest::Gc, ("POST", "/_walstore/gc", Vec::new(), Vec::new()))?.1,
    };
    print(conn, &v, |v| {
        format!(
            "reclaimed {} blobs ({} bytes), {} orphan files, {} expired uploads; {} blobs still in their grace period\n",
            s(&v["reclaimed_blobs"]), s(&v["reclaimed_bytes"]), s(&v["orphan_files"]), s(&v["expired_uploads"]), s(&v["waiting"])
        )
    });
    Ok(())
}

/// `walstore check`: exit status 1 when inconsistencies are found.
pub fn check(conn: &Conn) -> Result<(), String> {
    let (ok, v) = run(conn, AdminRequest::Check, ("GET", "/_walstore/check", Vec::new(), Vec::new()))?;
    print(conn, &v, |v| {
        let mut out = format!(
            "objects: {}  other versions and delete markers: {}  blobs referenced: {}  orphan blob files: {}\n",
            s(&v["objects"]),
            s(&v["versions"]),
            s(&v["blobs"]),
            s(&v["orphan_files"])
        );
        for p in v["problems"].as_array().into_iter().flatten() {
            out.push_str(&format!("problem: {}\n", s(p)));
        }
        if ok {
            out.push_str("consistent\n");
        }
        out
    });
    if ok {
        Ok(())
    } else {
        Err(format!("{} inconsistencies found", v["problems"].as_array().map_or(0, |a| a.len())))
    }
}

fn quarantine_text(v: &Value) -> String {
    let list = v["quarantined"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "quarantine is empty\n".into();
    }
    list.iter()
        .map(|r| {
            format!(
                "{} {} {}/{} by {} ({} bytes){}\n    {}\n",
                s(&r["id"]),
                ms_to_text(&r["time"]),
                s(&r["bucket"]),
                s(&r["key"]),
                s(&r["principal"]),
                r["size"],
                if r["resolved"] == true { " [resolved]" } else { "" },
                s(&r["reason"])
            )
        })
        .collect()
}

/// `walstore quarantine …`.
pub fn quarantine(cmd: QuarantineCmd) -> Result<(), String> {
    match cmd {
        QuarantineCmd::List { conn } => {
            let (_, v) =
                run(&conn, AdminRequest::Quarantine, ("GET", "/_walstore/quarantine", Vec::new(), Vec::new()))?;
            print(&conn, &v, quarantine_text);
        }
        QuarantineCmd::Resolve { id, keep, conn } => {
            let k = s3api::admin::parse_keep(&keep).map_err(|e| e.message)?;
            let q = vec![("id", id.clone()), ("keep", keep)];
            let req = AdminRequest::QuarantineResolve { id, keep: k };
            let (_, v) = run(&conn, req, ("POST", "/_walstore/quarantine/resolve", q, Vec::new()))?;
            print(&conn, &v, |v| format!("resolved {}\n", s(&v["resolved"]["id"])));
        }
    }
    Ok(())
}

/// `walstore audit`.
pub fn audit(limit: usize, conn: &Conn) -> Result<(), String> {
    let q = vec![("limit", limit.to_string())];
    let (_, v) = run(conn, AdminRequest::Audit { limit }, ("GET", "/_walstore/audit", q, Vec::new()))?;
    print(conn, &v, |v| {
        v["records"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} {} {} {}/{} {}\n",
                    ms_to_text(&r["time"]),
                    s(&r["actor"]),
                    s(&r["action"]),
                    s(&r["bucket"]),
                    s(&r["key"]),
                    s(&r["reason"])
                )
            })
            .collect()
    });
    Ok(())
}

/// `lock` subcommands.
#[derive(Subcommand, Debug)]
pub enum LockCmd {
    /// Versioning and Object Lock of a bucket, and how much is locked.
    Show {
        /// Bucket
        bucket: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Enable Object Lock on a bucket whose versioning is enabled, and set its default retention.
    Set {
        /// Bucket
        bucket: String,
        /// Default retention mode: GOVERNANCE or COMPLIANCE
        #[arg(long)]
        mode: Option<String>,
        /// Default retention in days
        #[arg(long, conflicts_with = "years")]
        days: Option<u32>,
        /// Default retention in years
        #[arg(long)]
        years: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `asof` subcommands.
#[derive(Subcommand, Debug)]
pub enum AsofCmd {
    /// Expose BUCKET[/PREFIX] as it stood at --at, read-only, under a new bucket name (printed).
    Create {
        /// BUCKET or BUCKET/PREFIX
        target: String,
        /// The instant, ISO 8601 in UTC (2026-12-07T10:00:00Z)
        #[arg(long)]
        at: String,
        /// How long the view answers
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Bucket name of the view [default: asof-<unix time>-<random>]
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List as-of views.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove an as-of view.
    Drop {
        /// View name
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `walstore lock …`.
pub fn lock(cmd: LockCmd) -> Result<(), String> {
    match cmd {
        LockCmd::Show { bucket, conn } => {
            let b = BucketName::parse(&bucket).map_err(|e| e.to_string())?;
            let q = vec![("bucket", bucket.clone())];
            let (_, v) = run(&conn, AdminRequest::LockShow { bucket: b }, ("GET", "/_walstore/lock", q, Vec::new()))?;
            print(&conn, &v, |v| {
                format!(
                    "bucket {}: versioning {}, Object Lock {}, default retention {}\nlocked versions (all buckets): {} ({} bytes)\n",
                    s(&v["bucket"]),
                    if v["versioning"].is_null() { "never enabled".into() } else { s(&v["versioning"]) },
                    if v["object_lock"].as_bool() == Some(true) { "enabled" } else { "off" },
                    if v["default_retention"].is_null() { "none".into() } else { v["default_retention"].to_string() },
                    s(&v["locked_versions_all_buckets"]),
                    s(&v["locked_bytes_all_buckets"]),
                )
            });
            Ok(())
        }
        LockCmd::Set { bucket, mode, days, years, conn } => {
            let b = BucketName::parse(&bucket).map_err(|e| e.to_string())?;
            let period = match (days, years) {
                (Some(d), _) if d > 0 => Some(storage::LockPeriod::Days(d)),
                (_, Some(y)) if y > 0 => Some(storage::LockPeriod::Years(y)),
                (None, None) => None,
                _ => return Err("--days and --years must be positive".into()),
            };
            let default_retention = match (&mode, period) {
                (Some(m), Some(p)) => Some((
                    storage::LockMode::parse(m)
                        .ok_or_else(|| format!("--mode must be GOVERNANCE or COMPLIANCE, not {m:?}"))?,
                    p,
                )),
                (None, None) => None,
                _ => return Err("a default retention needs --mode and one of --days/--years".into()),
            };
            let mut q = vec![("bucket", bucket.clone())];
            if let Some(m) = mode {
                q.push(("mode", m));
            }
            if let Some(d) = days {
                q.push(("days", d.to_string()));
            }
            if let Some(y) = years {
                q.push(("years", y.to_string()));
            }
            let req = AdminRequest::LockSet { bucket: b, default_retention };
            let (_, v) = run(&conn, req, ("PUT", "/_walstore/lock", q, Vec::new()))?;
            print(&conn, &v, |v| format!("Object Lock enabled on {}\n", s(&v["bucket"])));
            Ok(())
        }
    }
}

/// `walstore versions ls BUCKET[/PREFIX]`.
pub fn versions(target: &str, conn: &Conn) -> Result<(), String> {
    let (bucket, prefix) = match target.split_once('/') {
        Some((b, p)) => (b, p.to_owned()),
        None => (target, String::new()),
    };
    let b = BucketName::parse(bucket).map_err(|e| e.to_string())?;
    let q = vec![("bucket", bucket.to_owned()), ("prefix", prefix.clone())];
    let (_, v) =
        run(conn, AdminRequest::Versions { bucket: b, prefix }, ("GET", "/_walstore/versions", q, Vec::new()))?;
    print(conn, &v, |v| {
        let mut out = format!("{:<18} {:<7} {:>12} {:<25} key\n", "version", "latest", "size", "last modified");
        for r in v["versions"].as_array().into_iter().flatten() {
            let size = if r["delete_marker"].as_bool() == Some(true) { "(marker)".into() } else { s(&r["size"]) };
            out.push_str(&format!(
                "{:<18} {:<7} {:>12} {:<25} {}\n",
                s(&r["version_id"]),
                if r["latest"].as_bool() == Some(true) { "yes" } else { "" },
                size,
                s(&r["last_modified"]),
                s(&r["key"])
            ));
        }
        if v["truncated"].as_bool() == Some(true) {
            out.push_str("(first 1000 shown; narrow the prefix)\n");
        }
        out
    });
    Ok(())
}

/// `walstore asof …`.
pub fn asof(cmd: AsofCmd) -> Result<(), String> {
    match cmd {
        AsofCmd::Create { target, at, ttl, name, conn } => {
            let (bucket, prefix) = match target.split_once('/') {
                Some((b, p)) => (b.to_owned(), p.to_owned()),
                None => (target.clone(), String::new()),
            };
            let b = BucketName::parse(&bucket).map_err(|e| e.to_string())?;
            let when = s3api::xml::parse_time(&at)
                .ok_or_else(|| format!("--at {at:?} is not an ISO 8601 time in UTC (2026-12-07T10:00:00Z)"))?;
            let ttl_d = storage::units::parse_duration(&ttl).map_err(|e| format!("--ttl: {e}"))?;
            let view_name = name.as_deref().map(BucketName::parse).transpose().map_err(|e| e.to_string())?;
            let mut q = vec![("bucket", bucket), ("prefix", prefix.clone()), ("at", at), ("ttl", ttl)];
            if let Some(n) = name {
                q.push(("name", n));
            }
            let req = AdminRequest::AsofCreate { bucket: b, prefix, at: when, ttl: ttl_d, name: view_name };
            let (_, v) = run(&conn, req, ("POST", "/_walstore/asof", q, Vec::new()))?;
            print(&conn, &v, |v| {
                format!(
                    "{}\nread-only view of {}/{} as of {}, until {}; point WAL-G at s3://{}/{}\n",
                    s(&v["name"]),
                    s(&v["source"]),
                    s(&v["prefix"]),
                    s(&v["at"]),
                    s(&v["expires"]),
                    s(&v["name"]),
                    s(&v["prefix"])
                )
            });
            Ok(())
        }
        AsofCmd::List { conn } => {
            let (_, v) = run(&conn, AdminRequest::AsofList, ("GET", "/_walstore/asof", Vec::new(), Vec::new()))?;
            print(&conn, &v, |v| {
                let mut out = String::new();
                for r in v["views"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{}  {}/{} as of {}, expires {}\n",
                        s(&r["name"]),
                        s(&r["source"]),
                        s(&r["prefix"]),
                        s(&r["at"]),
                        s(&r["expires"])
                    ));
                }
                out
            });
            Ok(())
        }
        AsofCmd::Drop { name, conn } => {
            let q = vec![("name", name.clone())];
            let (_, v) = run(&conn, AdminRequest::AsofDrop { name }, ("DELETE", "/_walstore/asof", q, Vec::new()))?;
            print(&conn, &v, |v| format!("dropped {} (existed: {})\n", s(&v["dropped"]), s(&v["existed"])));
            Ok(())
        }
    }
}

/// `walstore bucket …` (through the S3 API, or the data dir).
pub fn bucket(cmd: BucketCmd) -> Result<(), String> {
    let (method, name, conn) = match &cmd {
        BucketCmd::Create { name, object_lock: true, conn } => {
            let b = BucketName::parse(name).map_err(|e| e.to_string())?;
            let q = vec![("bucket", name.clone())];
            let (_, v) = run(
                conn,
                AdminRequest::BucketCreateLocked { bucket: b },
                ("POST", "/_walstore/buckets/locked", q, Vec::new()),
            )?;
            print(conn, &v, |v| format!("created bucket {} with Object Lock (versioning enabled)\n", s(&v["created"])));
            return Ok(());
        }
        BucketCmd::Create { name, conn, .. } => ("PUT", Some(name.clone()), conn),
        BucketCmd::List { conn } => ("GET", None, conn),
        BucketCmd::Delete { name, conn } => ("DELETE", Some(name.clone()), conn),
    };
    if let Some(n) = &name {
        BucketName::parse(n).map_err(|e| e.to_string())?;
    }
    let done = |what: &str, n: &str| {
        if conn.json {
            println!("{}", json!({ what: n }));
        } else {
            println!("{what} bucket {n}");
        }
    };
    let list = |names: Vec<String>| {
        if conn.json {
            let v: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
            println!("{}", json!({ "buckets": v }));
        } else {
            for n in names {
                println!("{n}");
            }
        }
    };
    if let Some(store) = offline(conn)? {
        match (&cmd, name) {
            (BucketCmd::Create { .. }, Some(n)) => {
                store.create_bucket(&BucketName::parse(&n).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                done("created", &n);
            }
            (BucketCmd::Delete { .. }, Some(n)) => {
                store.delete_bucket(&BucketName::parse(&n).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                done("deleted", &n);
            }
            _ => {
                list(store.list_buckets().map_err(|e| e.to_string())?.into_iter().map(|b| b.name.to_string()).collect())
            }
        }
        return Ok(());
    }
    let path = match &name {
        Some(n) => format!("/{n}"),
        None => "/".into(),
    };
    let (status, body) = client(conn)?.request(method, &path, &[], &[])?;
    if !(200..300).contains(&status) {
        return Err(server_error(status, &body));
    }
    match (method, name) {
        ("PUT", Some(n)) => done("created", &n),
        ("DELETE", Some(n)) => done("deleted", &n),
        _ => {
            let text = String::from_utf8_lossy(&body);
            list(text.split("<Name>").skip(1).map(|p| p.split("</Name>").next().unwrap_or("").to_owned()).collect());
        }
    }
    Ok(())
}

fn progress_bar(done: f64) {
    let width = 40;
    let filled = ((done.clamp(0.0, 1.0)) * width as f64) as usize;
    eprint!("\r[{}{}] {:5.1}%", "#".repeat(filled), ".".repeat(width - filled), done * 100.0);
}

/// `walstore scrub`: re-hashes every blob (progress bar on stderr); exit
/// status 1 when corruption is found, listing the affected objects.
pub fn scrub(conn: &Conn) -> Result<(), String> {
    let report: Value = if let Some(store) = offline(conn)? {
        // Unpaced, in steps that save the position: an interrupted scrub (also
        // one the server left) continues where it stopped.
        let r = loop {
            let mut budget =
                storage::Budget::for_step(std::time::Duration::from_millis(500), storage::StopSignal::new());
            if let Some(r) = store.scrub_step(&mut budget).map_err(|e| e.to_string())? {
                break r;
            }
            if !conn.json {
                let st = store.scrub_state().map_err(|e| e.to_string())?;
                progress_bar(st.cursor.map_or(1.0, |c| c.progress()));
            }
        };
        if !conn.json {
            progress_bar(1.0);
        }
        serde_json::to_value(&r).map_err(|e| e.to_string())?
    } else {
        let c = client(conn)?;
        let status = |c: &Client| -> Result<Value, String> {
            let (st, body) = c.request("GET", "/_walstore/scrub", &[], &[])?;
            if st != 200 {
                return Err(server_error(st, &body));
            }
            serde_json::from_slice(&body).map_err(|e| e.to_string())
        };
        let before = status(&c)?["last_completion"].as_u64().unwrap_or(0);
        let (st, body) = c.request("POST", "/_walstore/scrub", &[], &[])?;
        if st != 200 {
            return Err(server_error(st, &body));
        }
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let v = status(&c)?;
            if !conn.json {
                progress_bar(v["progress"].as_f64().unwrap_or(0.0));
            }
            let done = v["running"] == false
                && v["last_completion"].as_u64().unwrap_or(0) >= before
                && v["last_report"].is_object();
            if done && (v["last_completion"].as_u64().unwrap_or(0) > before || v["progress"].as_f64() == Some(1.0)) {
                break v["last_report"].clone();
            }
        }
    };
    if !conn.json {
        eprintln!();
    }
    let corrupt = report["corrupt"].as_array().cloned().unwrap_or_default();
    print(conn, &report, |r| {
        let mut out = format!("checked {} blobs ({} bytes)\n", s(&r["blobs"]), s(&r["bytes"]));
        for c in &corrupt {
            out.push_str(&format!("CORRUPT blob {}: {}\n", s(&c["hash"]), s(&c["problem"])));
            for o in c["objects"].as_array().into_iter().flatten() {
                out.push_str(&format!("  affects object {}\n", s(o)));
            }
        }
        if corrupt.is_empty() {
            out.push_str("no corruption found\n");
        }
        out
    });
    if corrupt.is_empty() {
        Ok(())
    } else {
        Err(format!("{} corrupt blob(s) found", corrupt.len()))
    }
}

/// One target as `replication list|status` and `walstore status` show it.
pub(crate) fn target_text(t: &Value, detail: bool) -> String {
    let mut out = format!(
        "{} [{}] {} → {} bucket {} prefix {:?}: lag {:.0}s, backlog {} objects ({} bytes), held deletes {}\n",
        s(&t["name"]),
        s(&t["state"]),
        s(&t["source"]),
        s(&t["endpoint"]),
        s(&t["bucket"]),
        t["prefix"].as_str().unwrap_or(""),
        t["lag_seconds"].as_f64().unwrap_or(0.0),
        s(&t["backlog_objects"]),
        s(&t["backlog_bytes"]),
        s(&t["held_deletes"]),
    );
    if let Some(e) = t["last_error"].as_object() {
        out.push_str(&format!(
            "  last error ({}): {}\n",
            e.get("kind").map(s).unwrap_or_default(),
            e.get("message").map(s).unwrap_or_default()
        ));
    }
    if detail {
        out.push_str(&format!(
            "  deletes {}, credentials {}, replicated {} objects / {} bytes / {} deletes, last success {}\n",
            s(&t["deletes"]),
            s(&t["credentials"]),
            s(&t["replicated_objects"]),
            s(&t["replicated_bytes"]),
            s(&t["replicated_deletes"]),
            match t["last_success"].as_u64() {
                Some(0) | None => "never".into(),
                Some(secs) => s3api::xml::iso8601(storage::Timestamp::from_millis(secs as i64 * 1000)),
            }
        ));
        for m in t["offbox_wal"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  off-box WAL {}/{}: {} ({:.0}s old)\n",
                s(&m["bucket"]),
                m["repository"].as_str().unwrap_or(""),
                s(&m["segment"]),
                m["age_seconds"].as_f64().unwrap_or(0.0)
            ));
        }
    }
    out
}
