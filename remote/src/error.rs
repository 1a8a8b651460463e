//! The crate's error: a kind (for metrics, status and retry decisions) and a
//! one-line message (for logs and the CLI).

/// What went wrong, coarsely: the label of `walstore_replication_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The target's settings or credentials cannot be used (fix the configuration).
    Config,
    /// The target refused our credentials or permissions.
    Auth,
    /// No answer: connection refused, reset, timed out, DNS, TLS.
    Network,
    /// The target asked us to slow down (503 SlowDown, 429).
    Throttled,
    /// The target failed (5xx).
    Server,
    /// Bytes did not match their checksum (on the way up, or read back).
    Checksum,
    /// The object is not on the target.
    NotFound,
    /// The local store failed.
    Local,
    /// Anything else the target answered.
    Other,
}

impl ErrorKind {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Auth => "auth",
            ErrorKind::Network => "network",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Server => "server",
            ErrorKind::Checksum => "checksum",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Local => "local",
            ErrorKind::Other => "other",
        }
    }

    /// Every kind (metrics start each at zero).
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Config,
        ErrorKind::Auth,
        ErrorKind::Network,
        ErrorKind::Throttled,
        ErrorKind::Server,
        ErrorKind::Checksum,
        ErrorKind::NotFound,
        ErrorKind::Local,
        ErrorKind::Other,
    ];
}

/// An error of an off-box operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// Kind.
    pub kind: ErrorKind,
    /// One line for people.
    pub message: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl From<storage::Error> for Error {
    fn from(e: storage::Error) -> Self {
        Error::new(ErrorKind::Local, format!("local store: {e}"))
    }
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
