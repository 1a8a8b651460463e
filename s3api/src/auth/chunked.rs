//! Incremental decoder for `Content-Encoding: aws-chunked` request bodies.
//!
//! Wire formats (see the AWS "sigv4-streaming" and "sigv4-streaming-trailers" pages):
//! ```text
//! signed:   <hex size>;chunk-signature=<64 hex>\r\n<data>\r\n … 0;chunk-signature=<sig>\r\n
//! unsigned: <hex size>\r\n<data>\r\n … 0\r\n
//! then:     [<name>:<value>\r\n …] [x-amz-trailer-signature:<sig>\r\n] \r\n
//! ```
//!
//! The decoder is a byte-at-a-time-safe state machine: input may be split anywhere, chunk
//! data is streamed to the output and hashed incrementally (a chunk is never buffered), and
//! the only buffers are one header/trailer line (at most [`MAX_LINE`] bytes) and the trailers
//! (at most [`MAX_TRAILER_BYTES`] in total), so memory is bounded whatever the client sends.
//!
//! Invariants and decisions:
//! - **Output is untrusted until [`ChunkedDecoder::finish`] returns `Ok`.** A chunk's bytes
//!   are appended before its signature (which covers the whole chunk) can be checked; the
//!   caller must not commit anything earlier.
//! - After the first error every later call returns that same error.
//! - Lines end in CRLF; a bare LF is malformed (every SDK sends CRLF).
//! - Chunk extensions other than `chunk-signature` are ignored, in both modes. In unsigned
//!   mode a `chunk-signature` is ignored too (there is nothing to check it against). In
//!   signed mode every chunk, including the final one, must carry exactly one.
//! - Trailers are accepted only when the request declared them (`expect_trailer`); names are
//!   lowercased and values trimmed. The signed-trailer string to sign covers the trailers as
//!   `name:value\n` sorted by name, which is what aws-sigv4's `sign_trailer` produces, and
//!   nothing may follow `x-amz-trailer-signature` except the final empty line. In unsigned
//!   mode an `x-amz-trailer-signature` line is dropped.
//! - **Lenient end:** some SDKs omit the final empty line (aws-sdk-js v3 sends just `0\r\n`
//!   without trailers). So `finish` accepts EOF anywhere in the trailer section that falls on
//!   a line boundary, provided a required trailer signature was already verified. The caller
//!   must still check that every trailer named in `x-amz-trailer` arrived, and that the
//!   decoded length equals `x-amz-decoded-content-length`.

use bytes::BytesMut;
use sha2::{Digest, Sha256};

use super::sigv4::ChunkSigner;

/// Longest chunk-header or trailer line, CRLF excluded. A signed header is ~90 bytes.
pub const MAX_LINE: usize = 4096;
/// Largest trailer section, CRLFs included.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

const CHUNK_SIGNATURE: &[u8] = b"chunk-signature";
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";

/// How chunks are authenticated.
#[derive(Debug)]
pub enum ChunkMode {
    /// No chunk signatures (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
    Unsigned,
    /// Every chunk (and the trailer, if any) is signed; the signer comes from
    /// [`super::sigv4::Verified::chunk_signer`].
    Signed(ChunkSigner),
}

/// Why an aws-chunked body was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChunkedError {
    /// Framing error: bad size, missing CRLF, line or trailers too long, bytes after the end,
    /// unexpected or unparsable trailers.
    #[error("malformed aws-chunked body: {0}")]
    Malformed(String),
    /// A chunk or trailer signature does not match.
    #[error("aws-chunked chunk or trailer signature does not match")]
    SignatureMismatch,
    /// Signed mode, but a chunk has no `chunk-signature` or the trailer has no
    /// `x-amz-trailer-signature`.
    #[error("aws-chunked chunk or trailer signature is missing")]
    MissingSignature,
    /// The body ended (see [`ChunkedDecoder::finish`]) before the final chunk was complete.
    #[error("aws-chunked body ended before its final chunk")]
    Incomplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a `<hex size>[;ext…]` line.
    ChunkHeader,
    /// Inside chunk data.
    Data,
    /// Expecting the CR that ends chunk data.
    DataCr,
    /// Expecting the LF that ends chunk data.
    DataLf,
    /// After the final chunk: trailer lines until an empty one.
    Trailers,
    /// Everything consumed; any further byte is an error.
    Done,
}

/// Streaming aws-chunked decoder; see the module docs.
#[derive(Debug)]
pub struct ChunkedDecoder {
    signer: Option<ChunkSigner>,
    expect_trailer: bool,
    state: State,
    /// The line being read (chunk header or trailer), without its LF.
    line: Vec<u8>,
    /// Data bytes left in the current chunk.
    remaining: u64,
    /// Running SHA-256 of the current chunk (signed mode only).
    hasher: Sha256,
    /// `chunk-signature` of the current chunk (signed mode only).
    claimed: String,
    trailers: Vec<(String, String)>,
    trailer_bytes: usize,
    trailer_signature_seen: bool,
    decoded: u64,
    failed: Option<ChunkedError>,
}

impl ChunkedDecoder {
    /// `expect_trailer`: the request declared trailers (x-amz-trailer header / *-TRAILER
    /// modes).
    pub fn new(mode: ChunkMode, expect_trailer: bool) -> Self {
        ChunkedDecoder {
            signer: match mode {
                ChunkMode::Unsigned => None,
                ChunkMode::Signed(signer) => Some(signer),
            },
            expect_trailer,
            state: State::ChunkHeader,
            line: Vec::new(),
            remaining: 0,
            hasher: Sha256::new(),
            claimed: String::new(),
            trailers: Vec::new(),
            trailer_bytes: 0,
            trailer_signature_seen: false,
            decoded: 0,
            failed: None,
        }
    }

    /// Consumes `input` (any split, even one byte at a time), appending decoded payload bytes
    /// to `out`. Computes each chunk's SHA-256 incrementally while streaming (chunks may be
    /// many MiB; never buffers a whole chunk).
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), ChunkedError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.decode_inner(input, out);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Call at end of input. `Ok` once the body is complete (see the module docs for the
    /// lenient end), else [`ChunkedError::Incomplete`] or the error that ended decoding.
    pub fn finish(&mut self) -> Result<(), ChunkedError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = match self.state {
            State::Done => Ok(()),
            State::Trailers if self.line.is_empty() => self.end_of_trailers(),
            _ => Err(ChunkedError::Incomplete),
        };
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// True once the final zero-length chunk, the trailers (if any) and the final CRLF were
    /// consumed (or `finish` accepted a body without the final CRLF). Bytes after that are an
    /// error.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.failed.is_none()
    }

    /// Trailer headers received, names lowercased, e.g. ("x-amz-checksum-crc32",
    /// "sOO8/Q=="). Signature trailer not included.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// Payload bytes decoded so far, to compare with `x-amz-decoded-content-length`.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    fn decode_inner(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), ChunkedError> {
        while !input.is_empty() {
            match self.state {
                State::ChunkHeader => {
                    if self.fill_line(&mut input)? {
                        let line = std::mem::take(&mut self.line);
                        let result = self.on_chunk_header(&line);
                        // Hand the allocation back for the next line.
                        self.line = line;
                        self.line.clear();
                        result?;
                    }
                }
                State::Data => {
                    let n = usize::try_from(self.remaining)
                        .map_or(input.len(), |r| r.min(input.len()));
                    let (piece, rest) = input.split_at(n);
                    out.extend_from_slice(piece);
                    if self.signer.is_some() {
                        self.hasher.update(piece);
                    }
                    self.remaining -= n as u64;
                    self.decoded += n as u64;
                    input = rest;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr | State::DataLf => {
                    let want = if self.state == State::DataCr { b'\r' } else { b'\n' };
                    if input[0] != want {
                        return Err(ChunkedError::Malformed(
                            "chunk data not followed by CRLF".into(),
                        ));
                    }
                    input = &input[1..];
                    if self.state == State::DataCr {
                        self.state = State::DataLf;
                    } else {
                        self.end_of_chunk_data()?;
                    }
                }
                State::Trailers => {
                    let before = input.len();
                    let complete = self.fill_line(&mut input)?;
                    self.trailer_bytes += before - input.len();
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(ChunkedError::Malformed(format!(
                            "trailers longer than {MAX_TRAILER_BYTES} bytes"
                        )));
                    }
                    if complete {
                        let line = std::mem::take(&mut self.line);
                        let result = if line.is_empty() {
                            self.end_of_trailers()
                        } else {
                            self.on_trailer_line(&line)
                        };
                        self.line = line;
                        self.line.clear();
                        result?;
                    }
                }
                State::Done => {
                    return Err(ChunkedError::Malformed(
                        "data after the end of the aws-chunked body".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Moves input up to the next LF into `self.line`. Returns true when `self.line` holds a
    /// whole line, its CRLF removed.
    fn fill_line(&mut self, input: &mut &[u8]) -> Result<bool, ChunkedError> {
        let (taken, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (input.len(), false),
        };
        // +1: the CR of the CRLF is still in the line until it is complete.
        if self.line.len() + taken > MAX_LINE + 1 {
            return Err(ChunkedError::Malformed(format!(
                "line longer than {MAX_LINE} bytes"
            )));
        }
        self.line.extend_from_slice(&input[..taken]);
        *input = &input[taken + usize::from(complete)..];
        if complete && self.line.pop() != Some(b'\r') {
            return Err(ChunkedError::Malformed(
                "line not terminated by CRLF".into(),
            ));
        }
        Ok(complete)
    }

    fn on_chunk_header(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let mut fields = line.split(|&b| b == b';');
        let size_field = trim(fields.next().unwrap_or_default());
        let size = parse_hex(size_field).ok_or_else(|| {
            ChunkedError::Malformed(format!(
                "invalid chunk size {:?}",
                String::from_utf8_lossy(&size_field[..size_field.len().min(32)])
            ))
        })?;
        let mut signature = None;
        for extension in fields {
            let (name, value) = match extension.iter().position(|&b| b == b'=') {
                Some(i) => (trim(&extension[..i]), trim(&extension[i + 1..])),
                None => (trim(extension), &[][..]),
            };
            if name == CHUNK_SIGNATURE && signature.replace(value).is_some() {
                return Err(ChunkedError::Malformed(
                    "chunk-signature appears twice".into(),
                ));
            }
        }
        if self.signer.is_some() {
            let signature = signature.ok_or(ChunkedError::MissingSignature)?;
            // A non-UTF-8 signature cannot match a hex one.
            self.claimed = String::from_utf8(signature.to_vec())
                .map_err(|_| ChunkedError::SignatureMismatch)?;
        }
        if size == 0 {
            self.hasher = Sha256::new();
            self.end_of_chunk_data()?;
            self.state = State::Trailers;
        } else {
            self.remaining = size;
            self.state = State::Data;
        }
        Ok(())
    }

    /// Checks the signature of the chunk whose data (possibly empty) was just hashed.
    fn end_of_chunk_data(&mut self) -> Result<(), ChunkedError> {
        if let Some(signer) = &mut self.signer {
            let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            if !signer.verify_chunk(&digest, &self.claimed) {
                return Err(ChunkedError::SignatureMismatch);
            }
        }
        self.state = State::ChunkHeader;
        Ok(())
    }

    fn on_trailer_line(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        if !self.expect_trailer {
            return Err(ChunkedError::Malformed(
                "trailer received but the request declared none".into(),
            ));
        }
        if self.trailer_signature_seen {
            return Err(ChunkedError::Malformed(
                "trailer after x-amz-trailer-signature".into(),
            ));
        }
        if !line.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(ChunkedError::Malformed(
                "trailer is not printable ASCII".into(),
            ));
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(ChunkedError::Malformed("trailer line without ':'".into()));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ChunkedError::Malformed("invalid trailer name".into()));
        }
        if name != TRAILER_SIGNATURE {
            self.trailers.push((name, value.to_owned()));
            return Ok(());
        }
        if let Some(signer) = &mut self.signer {
            if !signer.verify_trailer(&canonical_trailer(&self.trailers), value) {
                return Err(ChunkedError::SignatureMismatch);
            }
            self.trailer_signature_seen = true;
        }
        Ok(())
    }

    fn end_of_trailers(&mut self) -> Result<(), ChunkedError> {
        if self.signer.is_some() && self.expect_trailer && !self.trailer_signature_seen {
            return Err(ChunkedError::MissingSignature);
        }
        self.state = State::Done;
        Ok(())
    }
}

/// The text a trailer signature covers: `name:value\n` per trailer, sorted by name.
fn canonical_trailer(trailers: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = trailers.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (name, value) in sorted {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses a hex chunk size; `None` if empty, not hex, or beyond `u64`.
fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(digit))
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
