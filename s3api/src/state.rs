//! Shared state of the S3 service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use storage::Store;

use crate::auth::sigv4::SecretLookup;
use crate::authz::Principal;

/// Protocol settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The region this server answers as. Requests signed for it or for
    /// `us-east-1` are accepted.
    pub region: String,
    /// Largest object a single PutObject may upload (S3: 5 GiB).
    pub max_object_size: u64,
    /// Largest XML request body (DeleteObjects with 1000 long keys is ~1.1 MiB).
    pub max_xml_body: usize,
    /// Allowed clock skew of signed requests (S3: 15 minutes).
    pub max_skew: Duration,
    /// Owner id shown in listings.
    pub owner_id: String,
    /// Bearer token required for `GET /metrics` (`None` = open).
    pub metrics_token: Option<String>,
    /// How long a client may take over a request body, and over taking a response body.
    pub body_limits: crate::body::BodyLimits,
    /// Accept AWS Signature Version 2 (header and presigned query forms).
    pub signature_v2: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            max_object_size: 5 << 30,
            max_xml_body: 4 << 20,
            max_skew: Duration::from_secs(15 * 60),
            owner_id: "walstore".into(),
            metrics_token: None,
            body_limits: crate::body::BodyLimits { timeout: Duration::from_secs(30), min_rate: 1024 },
            signature_v2: true,
        }
    }
}

/// The credentials the server accepts: the root key (admin, from the
/// environment or the data directory) and the keys stored in the index.
pub struct Credentials {
    root_id: String,
    root_secret: String,
    store: Arc<Store>,
}

impl Credentials {
    /// Root key plus the store's keys.
    pub fn new(root_id: String, root_secret: String, store: Arc<Store>) -> Self {
        Self { root_id, root_secret, store }
    }

    /// The role and scope of an access key.
    pub fn principal(&self, access_key_id: &str) -> Option<Principal> {
        if access_key_id == self.root_id {
            return Some(Principal::root(access_key_id));
        }
        let k = self.store.access_key(access_key_id).ok().flatten()?;
        Some(Principal::with_scope(&k.id, k.role, k.scope.as_deref()))
    }
}

impl SecretLookup for Credentials {
    fn secret_key(&self, access_key_id: &str) -> Option<String> {
        if access_key_id == self.root_id {
            return Some(self.root_secret.clone());
        }
        match self.store.access_key(access_key_id) {
            Ok(k) => k.map(|k| k.secret),
            Err(e) => {
                tracing::error!(error = %e, "access key lookup failed");
                None
            }
        }
    }
}

/// Everything the request handlers share.
pub struct AppState {
    /// The storage engine.
    pub store: Arc<Store>,
    /// Protocol settings.
    pub config: ApiConfig,
    /// Credentials.
    pub keys: Arc<Credentials>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Tests only (`serve --test-clock`): the store's clock, set through the admin API.
    pub test_clock: Option<Arc<storage::ManualClock>>,
    /// Replication state (the worker's counters and health, per target).
    pub replicator: Arc<remote::Replicator>,
    /// Tiering counters and the last pass (the `tier` worker and the tier reader write it).
    pub tier: Arc<remote::TierState>,
    /// The import started through the admin API (one at a time).
    pub import: Arc<remote::import::ImportJob>,
    shutting_down: AtomicBool,
}

impl AppState {
    /// New state.
    pub fn new(store: Arc<Store>, config: ApiConfig, keys: Arc<Credentials>) -> Self {
        Self {
            store,
            config,
            keys,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            test_clock: None,
            replicator: remote::Replicator::new(),
            tier: remote::TierState::new(),
            import: Default::default(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Marks the server as draining (readiness turns false).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the server is draining.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
