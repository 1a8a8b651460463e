//! S3 errors: the one place that decides the code, the HTTP status and the XML
//! body a client sees. Internal causes are logged with the request id and never
//! sent as text.

use http::StatusCode;

use crate::auth::chunked::ChunkedError;
use crate::auth::sigv4::AuthError;

/// S3 error codes walstore can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum S3Code {
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooLarge,
    EntityTooSmall,
    IncompleteBody,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidBucketName,
    InvalidBucketState,
    /// 409: a conflicting operation is in progress (an admin import already running).
    OperationAborted,
    InvalidDigest,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    KeyTooLongError,
    MalformedTrailerError,
    MalformedXML,
    MethodNotAllowed,
    MissingContentLength,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NoSuchObjectLockConfiguration,
    ObjectLockConfigurationNotFoundError,
    NotImplemented,
    NotModified,
    PreconditionFailed,
    RequestTimeTooSkewed,
    RequestTimeout,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    SlowDown,
    XAmzContentSHA256Mismatch,
}

impl S3Code {
    /// The code as sent in `<Code>`.
    pub fn as_str(self) -> &'static str {
        match self {
            S3Code::AccessDenied => "AccessDenied",
            S3Code::AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            S3Code::AuthorizationQueryParametersError => "AuthorizationQueryParametersError",
            S3Code::BadDigest => "BadDigest",
            S3Code::BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            S3Code::BucketNotEmpty => "BucketNotEmpty",
            S3Code::EntityTooLarge => "EntityTooLarge",
            S3Code::EntityTooSmall => "EntityTooSmall",
            S3Code::IncompleteBody => "IncompleteBody",
            S3Code::InternalError => "InternalError",
            S3Code::InvalidAccessKeyId => "InvalidAccessKeyId",
            S3Code::InvalidArgument => "InvalidArgument",
            S3Code::InvalidBucketName => "InvalidBucketName",
            S3Code::InvalidDigest => "InvalidDigest",
            S3Code::InvalidPart => "InvalidPart",
            S3Code::InvalidPartOrder => "InvalidPartOrder",
            S3Code::InvalidRange => "InvalidRange",
            S3Code::InvalidRequest => "InvalidRequest",
            S3Code::KeyTooLongError => "KeyTooLongError",
            S3Code::MalformedTrailerError => "MalformedTrailerError",
            S3Code::MalformedXML => "MalformedXML",
            S3Code::MethodNotAllowed => "MethodNotAllowed",
            S3Code::MissingContentLength => "MissingContentLength",
            S3Code::NoSuchBucket => "NoSuchBucket",
            S3Code::NoSuchKey => "NoSuchKey",
            S3Code::NoSuchUpload => "NoSuchUpload",
            S3Code::NoSuchVersion => "NoSuchVersion",
            S3Code::NoSuchObjectLockConfiguration => "NoSuchObjectLockConfiguration",
            S3Code::ObjectLockConfigurationNotFoundError => "ObjectLockConfigurationNotFoundError",
            S3Code::InvalidBucketState => "InvalidBucketState",
            S3Code::OperationAborted => "OperationAborted",
            S3Code::NotImplemented => "NotImplemented",
            S3Code::NotModified => "NotModified",
            S3Code::PreconditionFailed => "PreconditionFailed",
            S3Code::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            S3Code::RequestTimeout => "RequestTimeout",
            S3Code::ServiceUnavailable => "ServiceUnavailable",
            S3Code::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            S3Code::SlowDown => "SlowDown",
            S3Code::XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status S3 uses for the code.
    pub fn status(self) -> StatusCode {
        match self {
            S3Code::AccessDenied
            | S3Code::InvalidAccessKeyId
            | S3Code::RequestTimeTooSkewed
            | S3Code::SignatureDoesNotMatch => StatusCode::FORBIDDEN,
            S3Code::BucketAlreadyOwnedByYou
            | S3Code::BucketNotEmpty
            | S3Code::InvalidBucketState
            | S3Code::OperationAborted => StatusCode::CONFLICT,
            S3Code::NoSuchBucket
            | S3Code::NoSuchKey
            | S3Code::NoSuchUpload
            | S3Code::NoSuchVersion
            | S3Code::NoSuchObjectLockConfiguration
            | S3Code::ObjectLockConfigurationNotFoundError => StatusCode::NOT_FOUND,
            S3Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            S3Code::MissingContentLength => StatusCode::LENGTH_REQUIRED,
            S3Code::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            S3Code::InvalidRange => StatusCode::RANGE_NOT_SATISFIABLE,
            S3Code::NotModified => StatusCode::NOT_MODIFIED,
            S3Code::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            S3Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            S3Code::ServiceUnavailable | S3Code::SlowDown => StatusCode::SERVICE_UNAVAILABLE,
            S3Code::EntityTooLarge => StatusCode::BAD_REQUEST,
            S3Code::AuthorizationHeaderMalformed
            | S3Code::AuthorizationQueryParametersError
            | S3Code::BadDigest
            | S3Code::EntityTooSmall
            | S3Code::IncompleteBody
            | S3Code::InvalidArgument
            | S3Code::InvalidBucketName
            | S3Code::InvalidDigest
            | S3Code::InvalidPart
            | S3Code::InvalidPartOrder
            | S3Code::InvalidRequest
            | S3Code::KeyTooLongError
            | S3Code::MalformedTrailerError
            | S3Code::MalformedXML
            | S3Code::RequestTimeout
            | S3Code::XAmzContentSHA256Mismatch => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct S3Error {
    /// The S3 code.
    pub code: S3Code,
    /// Message for the client (never an internal cause).
    pub message: String,
    /// Seconds for `Retry-After` (503 answers).
    pub retry_after: Option<u32>,
    /// The internal cause of an `InternalError`: logged, shown by the offline
    /// CLI, never sent to a client.
    pub cause: Option<String>,
}

/// Result alias for handlers.
pub type S3Result<T> = Result<T, S3Error>;

impl S3Error {
    /// An error with a message.
    pub fn new(code: S3Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None, cause: None }
    }

    /// The standard message for a code.
    pub fn code(code: S3Code) -> Self {
        let message = match code {
            S3Code::NoSuchKey => "The specified key does not exist.",
            S3Code::NoSuchBucket => "The specified bucket does not exist.",
            S3Code::NoSuchUpload => {
                "The specified multipart upload does not exist. The upload ID might be invalid, or the upload might have been aborted or completed."
            }
            S3Code::AccessDenied => "Access Denied",
            S3Code::SignatureDoesNotMatch => {
                "The request signature we calculated does not match the signature you provided. Check your key and signing method."
            }
            S3Code::InvalidAccessKeyId => "The AWS Access Key Id you provided does not exist in our records.",
            S3Code::BucketNotEmpty => "The bucket you tried to delete is not empty.",
            S3Code::BucketAlreadyOwnedByYou => "Your previous request to create the named bucket succeeded and you already own it.",
            S3Code::MalformedXML => "The XML you provided was not well-formed or did not validate against our published schema.",
            S3Code::InvalidRange => "The requested range is not satisfiable",
            S3Code::PreconditionFailed => "At least one of the pre-conditions you specified did not hold",
            S3Code::KeyTooLongError => "Your key is too long",
            S3Code::InternalError => "We encountered an internal error. Please try again.",
            S3Code::BadDigest => "The Content-MD5 or checksum you specified did not match what we received.",
            S3Code::XAmzContentSHA256Mismatch => {
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            }
            S3Code::InvalidPartOrder => "The list of parts was not in ascending order. Parts must be ordered by part number.",
            S3Code::MethodNotAllowed => "The specified method is not allowed against this resource.",
            S3Code::NoSuchVersion => "The specified version does not exist.",
            S3Code::NoSuchObjectLockConfiguration => "The specified object does not have a ObjectLock configuration",
            S3Code::ObjectLockConfigurationNotFoundError => "Object Lock configuration does not exist for this bucket",
            _ => code.as_str(),
        };
        Self::new(code, message)
    }

    /// An internal failure: logged in full, answered as a generic `InternalError`.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(context, error = %cause, "internal error");
        Self { cause: Some(format!("{context}: {cause}")), ..Self::code(S3Code::InternalError) }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl From<storage::Error> for S3Error {
    fn from(e: storage::Error) -> Self {
        use storage::Error as E;
        match e {
            E::NoSuchBucket => S3Error::code(S3Code::NoSuchBucket),
            E::BucketAlreadyExists => S3Error::code(S3Code::BucketAlreadyOwnedByYou),
            E::BucketNotEmpty => S3Error::code(S3Code::BucketNotEmpty),
            E::InvalidBucketName(m) => S3Error::new(S3Code::InvalidBucketName, format!("The specified bucket is not valid: {m}")),
            E::NoSuchKey => S3Error::code(S3Code::NoSuchKey),
            E::KeyTooLong => S3Error::code(S3Code::KeyTooLongError),
            E::InvalidKey(m) => S3Error::new(S3Code::InvalidArgument, m),
            E::NoSuchUpload => S3Error::code(S3Code::NoSuchUpload),
            E::NoSuchVersion => S3Error::code(S3Code::NoSuchVersion),
            E::DeleteMarker => {
                S3Error::new(S3Code::MethodNotAllowed, "The specified method is not allowed against this resource.")
            }
            E::InvalidBucketState(m) => S3Error::new(S3Code::InvalidBucketState, m),
            E::ReadOnlyView(name) => S3Error::new(
                S3Code::AccessDenied,
                format!("Access Denied: {name} is a read-only as-of view (walstore asof); only reads are allowed"),
            ),
            E::InvalidPart(m) => S3Error::new(
                S3Code::InvalidPart,
                format!("One or more of the specified parts could not be found or did not match: {m}"),
            ),
            E::InvalidPartOrder => S3Error::code(S3Code::InvalidPartOrder),
            E::EntityTooSmall { part, size, min } => S3Error::new(
                S3Code::EntityTooSmall,
                format!("Your proposed upload is smaller than the minimum allowed object size: part {part} has {size} bytes, the minimum is {min}."),
            ),
            E::PreconditionFailed(m) => S3Error::new(S3Code::PreconditionFailed, m),
            E::InvalidArgument(m) => S3Error::new(S3Code::InvalidArgument, m),
            E::BadDigest(m) => S3Error::new(S3Code::BadDigest, m),
            E::InvalidRequest(m) => S3Error::new(S3Code::InvalidRequest, m),
            E::AccessDenied(m) => S3Error::new(S3Code::AccessDenied, m),
            E::RemoteUnavailable(m) => {
                tracing::warn!(cause = %m, "read refused: a tiered object's target cannot be read");
                S3Error {
                    code: S3Code::SlowDown,
                    message: "The object's bytes are on a remote tier that cannot be reached now; retry later.".into(),
                    retry_after: Some(5),
                    cause: None,
                }
            }
            E::InsufficientStorage(m) => {
                tracing::warn!(cause = %m, "write refused: insufficient storage");
                S3Error {
                    code: S3Code::SlowDown,
                    message: "Insufficient storage: the server is out of disk space; retry later.".into(),
                    retry_after: Some(10),
                    cause: None,
                }
            }
            e @ (E::Corrupt(_) | E::Io { .. } | E::Index(_) | E::Decode(_) | E::NotCached) => {
                S3Error::internal("storage", &e)
            }
        }
    }
}

impl From<AuthError> for S3Error {
    fn from(e: AuthError) -> Self {
        use AuthError as A;
        let code = match &e {
            A::UnknownAccessKey => return S3Error::code(S3Code::InvalidAccessKeyId),
            A::SignatureMismatch => return S3Error::code(S3Code::SignatureDoesNotMatch),
            A::TimeSkewed => S3Code::RequestTimeTooSkewed,
            A::Expired | A::NotYetValid => S3Code::AccessDenied,
            A::MalformedQuery(_) => S3Code::AuthorizationQueryParametersError,
            // S3: 403 "AWS authentication requires a valid Date or x-amz-date header".
            A::MissingDate => S3Code::AccessDenied,
            A::MissingContentSha256 => S3Code::InvalidRequest,
            A::WrongRegion { presigned: true, .. } => S3Code::AuthorizationQueryParametersError,
            A::InvalidContentSha256(_) => S3Code::InvalidArgument,
            A::UnsupportedAlgorithm(_) => S3Code::InvalidRequest,
            A::UnsupportedAuthorizationType(_) => S3Code::InvalidArgument,
            A::HeaderNotSigned(_) => S3Code::AccessDenied,
            A::MultipleAuthMechanisms => S3Code::InvalidArgument,
            _ => S3Code::AuthorizationHeaderMalformed,
        };
        S3Error::new(code, e.to_string())
    }
}

impl From<ChunkedError> for S3Error {
    fn from(e: ChunkedError) -> Self {
        match e {
            ChunkedError::SignatureMismatch => S3Error::code(S3Code::SignatureDoesNotMatch),
            other => S3Error::new(S3Code::IncompleteBody, format!("invalid aws-chunked body: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(S3Code::NoSuchKey.status(), 404);
        assert_eq!(S3Code::SignatureDoesNotMatch.status(), 403);
        assert_eq!(S3Code::InvalidRange.status(), 416);
        assert_eq!(S3Code::PreconditionFailed.status(), 412);
        assert_eq!(S3Code::BucketNotEmpty.status(), 409);
        assert_eq!(S3Code::SlowDown.status(), 503);
        assert_eq!(S3Code::NotImplemented.status(), 501);
    }

    #[test]
    fn auth_errors_get_the_codes_s3_answers() {
        let e = S3Error::from(AuthError::MissingDate);
        assert_eq!((e.code, e.status().as_u16()), (S3Code::AccessDenied, 403));
        assert_eq!(e.message, "AWS authentication requires a valid Date or x-amz-date header");
        let region = |presigned| AuthError::WrongRegion { got: "eu-west-1".into(), expected: "de01".into(), presigned };
        let e = S3Error::from(region(false));
        assert_eq!((e.code, e.status().as_u16()), (S3Code::AuthorizationHeaderMalformed, 400));
        assert_eq!(
            e.message,
            "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting 'de01'"
        );
        let e = S3Error::from(region(true));
        assert_eq!((e.code, e.status().as_u16()), (S3Code::AuthorizationQueryParametersError, 400));
        assert_eq!(
            e.message,
            "Error parsing the X-Amz-Credential parameter; the region 'eu-west-1' is wrong; expecting 'de01'"
        );
        let e = S3Error::from(AuthError::MissingContentSha256);
        assert_eq!((e.code, e.status().as_u16()), (S3Code::InvalidRequest, 400));
        let e = S3Error::from(AuthError::TimeSkewed);
        assert_eq!((e.code, e.status().as_u16()), (S3Code::RequestTimeTooSkewed, 403));
        let e = S3Error::from(AuthError::UnsupportedAuthorizationType("Basic".into()));
        assert_eq!((e.code, e.status().as_u16()), (S3Code::InvalidArgument, 400));
        let e = S3Error::from(AuthError::UnsupportedAlgorithm("AWS (Signature Version 2)".into()));
        assert_eq!((e.code, e.status().as_u16()), (S3Code::InvalidRequest, 400));
        let e = S3Error::from(AuthError::Expired);
        assert_eq!((e.code, e.status().as_u16()), (S3Code::AccessDenied, 403));
    }

    #[test]
    fn storage_errors_never_leak_internals() {
        let e: S3Error = storage::Error::Index("secret path /var/x".into()).into();
        assert_eq!(e.code, S3Code::InternalError);
        assert!(!e.message.contains("secret"));
        let e: S3Error = storage::Error::InsufficientStorage("ENOSPC".into()).into();
        assert_eq!(e.status(), 503);
        assert_eq!(e.retry_after, Some(10));
    }
}
