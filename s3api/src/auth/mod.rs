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
    verify, AuthError, AuthSettings, ChunkSigner, PayloadHash, RequestParts, SecretLookup, SignatureVersion, Verified,
};
