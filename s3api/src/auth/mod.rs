//! Request authentication for the S3 API: AWS Signature Version 4, and Version 2 for the
//! clients that still send it.
//!
//! [`sigv4`] verifies the `Authorization` header and presigned-URL (query) forms and yields
//! the declared payload mode (handing SigV2 requests to [`sigv2`]); [`chunked`] decodes `aws-chunked` bodies and checks their
//! per-chunk and trailer signatures with the [`ChunkSigner`] that verification handed out.
//! Neither module knows S3 error codes: the API layer maps [`AuthError`] and
//! [`ChunkedError`] to codes in one place.

pub mod chunked;
pub mod sigv2;
pub mod sigv4;

pub use chunked::{ChunkMode, ChunkedDecoder, ChunkedError};
pub use sigv4::{
    AuthError, AuthSettings, ChunkSigner, PayloadHash, RequestParts, SecretLookup, SignatureVersion, Verified,
};

/// Verifies whichever AWS signature `req` carries: SigV2 (header or query form) when
/// `settings.allow_v2`, otherwise SigV4 — which also refuses SigV2 as an unsupported scheme.
///
/// Ok(None): the request carries no authentication at all — anonymous; the caller decides.
/// The dispatch lives here, not in either scheme's module, so neither depends on the other.
pub fn verify(
    req: &RequestParts<'_>,
    settings: &AuthSettings<'_>,
    secrets: &dyn SecretLookup,
) -> Result<Option<Verified>, AuthError> {
    if settings.allow_v2 && sigv2::is_v2(req) {
        if req.raw_query.split('&').any(|p| p.split('=').next() == Some("X-Amz-Algorithm")) {
            return Err(AuthError::MultipleAuthMechanisms);
        }
        return sigv2::verify(req, settings, secrets).map(Some);
    }
    sigv4::verify(req, settings, secrets)
}
