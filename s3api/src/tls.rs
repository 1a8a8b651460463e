//! Native TLS (rustls) with certificate reload: the certificate and key files
//! are re-read on SIGHUP and when their modification time changes, so a
//! renewed certificate (cert-manager, certbot) is picked up without a restart.
//! A reload that fails keeps the previous certificate and logs the error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The current TLS configuration and where it comes from.
pub struct TlsReloader {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<ServerConfig>, Option<SystemTime>)>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl TlsReloader {
    /// Loads the certificate chain and key (PEM). Fails with a one-line message.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let cfg = load(&cert, &key)?;
        let stamp = mtime(&cert).max(mtime(&key));
        Ok(Self { cert, key, current: RwLock::new((cfg, stamp)) })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().0.clone()
    }

    /// Re-reads the files; returns whether the configuration changed.
    pub fn reload(&self) -> bool {
        match load(&self.cert, &self.key) {
            Ok(cfg) => {
                let stamp = mtime(&self.cert).max(mtime(&self.key));
                *self.current.write() = (cfg, stamp);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate");
                false
            }
        }
    }

    /// Reloads when a file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = mtime(&self.cert).max(mtime(&self.key));
        if stamp != self.current.read().1 {
            self.reload()
        } else {
            false
        }
    }

    /// Watches for SIGHUP and file changes until the process ends.
    /// `hup` is the SIGHUP stream, created by the caller before it announces
    /// that it listens (SIGHUP's default action would end the process).
    pub fn spawn_watcher(self: &Arc<Self>, poll: Duration, mut hup: Option<tokio::signal::unix::Signal>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => { me.reload_if_changed(); }
                    Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => { me.reload(); }
                }
            }
        });
    }
}
