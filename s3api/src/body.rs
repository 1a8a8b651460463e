//! Request and response bodies.
//!
//! Incoming object bodies are streamed, never buffered whole: frames from hyper
//! are (optionally) aws-chunked-decoded, gathered into buffers of up to
//! [`WRITE_BUFFER`] bytes and handed over a bounded channel to a blocking task
//! that hashes and writes them ([`storage::BlobWriter`]). Memory per upload is
//! bounded by `WRITE_BUFFER × (CHANNEL_DEPTH + 2)` plus at most 512 KiB of buffers
//! waiting for the shared MD5 service (storage's `md5lanes`). A body announced small
//! enough to be stored inline is hashed on the receiving task instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use storage::{BlobWriter, ChecksumAlgorithm, StagedBlob, Store};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::auth::chunked::{ChunkMode, ChunkedDecoder};
use crate::auth::sigv4::{ChunkSigner, PayloadHash};
use crate::error::{S3Code, S3Error, S3Result};

/// Size of the buffers handed to the writer task. 256 KiB, not 1 MiB: the
/// writer runs MD5, SHA-256, CRCs and the write over each buffer in turn, and
/// a buffer that stays in the core's L2 cache between those passes made warp
/// `put` of 16 MiB × 8 go from 311 to 410 MiB/s and peak RSS from 90 to 51 MiB
/// (benches/README.md, P2 and P5; 512 KiB: 377 MiB/s, 128 KiB: 397 MiB/s).
pub const WRITE_BUFFER: usize = 256 << 10;
const CHANNEL_DEPTH: usize = 2;

/// Error type of response bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body.
pub enum ResponseBody {
    /// No body.
    Empty,
    /// A body in memory.
    Full(Option<Bytes>),
    /// A streamed body; an `Err` item aborts the connection so the client sees
    /// a failure instead of a short or wrong body.
    Stream {
        /// Chunks.
        rx: mpsc::Receiver<Result<Bytes, BodyError>>,
        /// Bytes still to come (exact).
        remaining: u64,
    },
}

impl ResponseBody {
    /// A body from bytes.
    pub fn full(b: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(b.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Empty => Poll::Ready(None),
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream { rx, remaining } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    *remaining = remaining.saturating_sub(b.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if *remaining > 0 => Poll::Ready(Some(Err("object stream ended early".into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Empty => SizeHint::with_exact(0),
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// How long a client may take over a request body (see [`TimedBody`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Longest wait for the next bytes, and the grace before `min_rate` applies.
    pub timeout: Duration,
    /// Average bytes per second the body must keep up after `timeout` (0: no rate rule).
    pub min_rate: u64,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client stalled or trickled (see [`TimedBody`]); S3 answers `RequestTimeout`.
    #[error("the client sent the request body too slowly")]
    TimedOut,
    /// The connection failed or the framing was wrong.
    #[error("{0}")]
    Read(#[from] hyper::Error),
}

impl From<RequestBodyError> for S3Error {
    fn from(e: RequestBodyError) -> Self {
        match e {
            RequestBodyError::TimedOut => S3Error::new(
                S3Code::RequestTimeout,
                "Your socket connection to the server was not read from or written to within the timeout period. \
                 Idle connections will be closed.",
            ),
            RequestBodyError::Read(e) => {
                S3Error::new(S3Code::IncompleteBody, format!("the request body could not be read: {e}"))
            }
        }
    }
}

/// A request body with deadlines. It fails with [`RequestBodyError::TimedOut`] when no bytes
/// arrive for `timeout`, or when the body falls behind `min_rate`: the deadline starts at
/// `timeout` after the headers and moves one second later for every `min_rate` bytes received
/// (the rule of Apache's mod_reqtimeout `MinRate`). Without it a client that sends headers and
/// then stops or trickles its body would hold a connection, a task and a staging file for as
/// long as it likes. Bytes already waiting in the socket are taken before the clock is
/// looked at, so a server that was busy with the previous buffer is not mistaken for a slow
/// client.
pub struct TimedBody {
    inner: Incoming,
    limits: BodyLimits,
    start: Instant,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    /// Wraps `inner`; the clock starts now (the headers have arrived).
    pub fn new(inner: Incoming, limits: BodyLimits) -> Self {
        let start = Instant::now();
        TimedBody { inner, limits, start, received: 0, deadline: Box::pin(tokio::time::sleep(limits.timeout)) }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        self.start + body_deadline(self.limits, self.received, now - self.start)
    }
}

/// When a body that started `elapsed` ago and has delivered `received` bytes times out,
/// counted from its start: `timeout` after the last bytes, and no later than `timeout` plus
/// one second per `min_rate` bytes.
fn body_deadline(limits: BodyLimits, received: u64, elapsed: Duration) -> Duration {
    let idle = elapsed + limits.timeout;
    if limits.min_rate == 0 {
        return idle;
    }
    let credit = Duration::from_secs_f64(received as f64 / limits.min_rate as f64);
    idle.min(limits.timeout + credit)
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received += d.len() as u64;
                }
                let next = this.next_deadline(Instant::now());
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(RequestBodyError::TimedOut))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How the request body is framed and authenticated.
pub struct BodySpec {
    /// Declared payload mode.
    pub payload: PayloadHash,
    /// Chunk signature verifier for signed streaming modes.
    pub chunk_signer: Option<ChunkSigner>,
    /// The request announced trailers (`x-amz-trailer`).
    pub expect_trailer: bool,
    /// `Content-Encoding` includes `aws-chunked` (streaming without a STREAMING-* hash).
    pub aws_chunked: bool,
    /// Decoded length the client announced, if any.
    pub decoded_length: Option<u64>,
}

impl BodySpec {
    fn is_chunked(&self) -> bool {
        self.aws_chunked
            || matches!(
                self.payload,
                PayloadHash::StreamingSigned
                    | PayloadHash::StreamingSignedTrailer
                    | PayloadHash::StreamingUnsignedTrailer
            )
    }
}

/// A received body: the staged blob plus any trailers.
pub struct Received {
    /// The body, hashed and staged.
    pub blob: StagedBlob,
    /// Trailer headers of an aws-chunked body, names lowercase.
    pub trailers: Vec<(String, String)>,
}

enum Msg {
    Data(Bytes),
    Done,
}

/// Small frames are gathered into one buffer before crossing to the writer.
struct Gather {
    buf: BytesMut,
    /// Capacity of each buffer: [`WRITE_BUFFER`], or the whole body when it is
    /// announced smaller. A 4 KiB PUT must not allocate (and free) 1 MiB: at
    /// thousands of requests a second that churn is what fragments the
    /// allocator's per-thread arenas and makes RSS creep (found by the soak).
    cap: usize,
}

impl Gather {
    fn new(expected: Option<u64>) -> Self {
        let cap = expected.map_or(WRITE_BUFFER, |n| usize::try_from(n).unwrap_or(WRITE_BUFFER).min(WRITE_BUFFER));
        Self { buf: BytesMut::new(), cap }
    }

    fn push(&mut self, b: &[u8]) -> Option<Bytes> {
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.cap.max(b.len()));
        }
        self.buf.extend_from_slice(b);
        (self.buf.len() >= WRITE_BUFFER).then(|| self.buf.split().freeze())
    }
}

/// Streams `body` into a staged blob, enforcing `limit` bytes and the payload
/// signature mode. A `Sha256` payload is compared with the computed content hash.
pub async fn receive<B>(
    store: &Arc<Store>,
    mut body: B,
    mut spec: BodySpec,
    checksums: Vec<ChecksumAlgorithm>,
    limit: u64,
) -> S3Result<Received>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<S3Error>,
{
    // Known up front, the length lets a write that would eat into the disk
    // reserve be refused before any byte is stored.
    let expected = if spec.is_chunked() { spec.decoded_length } else { body.size_hint().exact() };
    let mut writer = Writer::start(store, checksums, expected)?;

    let mut decoder = spec.is_chunked().then(|| {
        let mode = match spec.chunk_signer.take() {
            Some(s) => ChunkMode::Signed(s),
            None => ChunkMode::Unsigned,
        };
        let trailer = spec.expect_trailer || spec.payload.has_trailer();
        ChunkedDecoder::new(mode, trailer)
    });
    let mut gather = Gather::new(expected);
    let mut decoded = BytesMut::new();
    let mut total: u64 = 0;

    let outcome: S3Result<()> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(Into::into)?;
            let Ok(data) = frame.into_data() else { continue };
            let piece: &[u8] = match decoder.as_mut() {
                Some(d) => {
                    decoded.clear();
                    d.decode(&data, &mut decoded)?;
                    &decoded
                }
                None => &data,
            };
            total += piece.len() as u64;
            if let Some(n) = spec.decoded_length.filter(|n| total > *n) {
                // Early, so a body announced small (hashed on the async task) cannot run long.
                return Err(S3Error::new(
                    S3Code::IncompleteBody,
                    format!("x-amz-decoded-content-length is {n} but more bytes were received"),
                ));
            }
            if total > limit {
                return Err(S3Error::new(
                    S3Code::EntityTooLarge,
                    format!("Your proposed upload exceeds the maximum allowed size of {limit} bytes"),
                ));
            }
            if let Some(full) = gather.push(piece) {
                writer.write(full).await?;
            }
        }
        // End of input: `finish` (not `is_done`) also accepts the lenient end the
        // decoder documents (EOF on a line boundary of the trailer section, as
        // aws-sdk-js v3 sends `0\r\n` without the final empty line) and checks a
        // pending trailer signature there. Which trailers must have arrived is
        // checked by the caller (`ChecksumRequest::verify`).
        if let Some(d) = decoder.as_mut() {
            d.finish()?;
        }
        if let Some(n) = spec.decoded_length {
            if n != total {
                return Err(S3Error::new(
                    S3Code::IncompleteBody,
                    format!("x-amz-decoded-content-length is {n} but {total} bytes were received"),
                ));
            }
        }
        if !gather.buf.is_empty() {
            writer.write(gather.buf.split().freeze()).await?;
        }
        Ok(())
    }
    .await;
    let staged = match outcome {
        Ok(()) => writer.finish().await?,
        Err(e) => return Err(writer.abort(e).await),
    };
    if let PayloadHash::Sha256(expected) = spec.payload {
        if staged.hash.as_bytes() != &expected {
            return Err(S3Error::code(S3Code::XAmzContentSHA256Mismatch));
        }
    }
    let trailers = decoder.map(|d| d.trailers().to_vec()).unwrap_or_default();
    Ok(Received { blob: staged, trailers })
}

/// A request without a body must declare the SHA-256 of nothing. Handlers that never read
/// a body (GET, HEAD, DELETE, listings) would otherwise accept any signed digest; S3 compares
/// it for every request (Ceph fixed the same gap, ceph/ceph#55250).
pub fn check_empty_payload(payload: &PayloadHash, body_is_empty: bool) -> S3Result<()> {
    use sha2::{Digest, Sha256};
    match payload {
        PayloadHash::Sha256(d) if body_is_empty && <[u8; 32]>::from(Sha256::digest(b"")) != *d => {
            Err(S3Error::code(S3Code::XAmzContentSHA256Mismatch))
        }
        _ => Ok(()),
    }
}

/// The writer task is gone; `receive` reports its error instead when it has one
/// (so this is not logged here).
/// Where received bytes are hashed and stored.
enum Writer {
    /// A body announced at most [`storage::INLINE_MAX`] bytes long: hashed on
    /// this task (microseconds; it stays in memory until the store commits it),
    /// which spares a hop to the blocking pool on every small PUT.
    Here(Box<BlobWriter>),
    /// Anything else: a blocking task fed over a bounded channel.
    Pool { tx: mpsc::Sender<Msg>, task: tokio::task::JoinHandle<storage::Result<Option<StagedBlob>>> },
}

impl Writer {
    fn start(store: &Arc<Store>, checksums: Vec<ChecksumAlgorithm>, expected: Option<u64>) -> S3Result<Self> {
        if expected.is_some_and(|n| n <= storage::INLINE_MAX) {
            return Ok(Writer::Here(Box::new(store.blob_writer_for(&checksums, expected)?)));
        }
        let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
        let store = store.clone();
        let task = tokio::task::spawn_blocking(move || -> storage::Result<Option<StagedBlob>> {
            let mut w = store.blob_writer_for(&checksums, expected)?;
            loop {
                match rx.blocking_recv() {
                    Some(Msg::Data(b)) => w.write_bytes(b)?,
                    Some(Msg::Done) => return w.finish().map(Some),
                    None => return Ok(None), // sender gone: aborted; staging removed on drop
                }
            }
        });
        Ok(Writer::Pool { tx, task })
    }

    async fn write(&mut self, data: Bytes) -> S3Result<()> {
        match self {
            Writer::Here(w) => Ok(w.write(&data)?),
            Writer::Pool { tx, .. } => tx.send(Msg::Data(data)).await.map_err(|_| writer_gone()),
        }
    }

    async fn finish(self) -> S3Result<StagedBlob> {
        match self {
            Writer::Here(w) => Ok((*w).finish()?),
            Writer::Pool { tx, task } => {
                // A failed send means the task already stopped on an error of its own
                // (disk full on the last buffer, say): that error is the answer.
                let _ = tx.send(Msg::Done).await;
                drop(tx);
                task.await
                    .map_err(|e| S3Error::internal("body writer task", &e))?
                    .map_err(S3Error::from)?
                    .ok_or_else(|| S3Error::internal("body writer", &"the writer task stopped early"))
            }
        }
    }

    /// Stops after a failed receive; returns the error to answer with.
    async fn abort(self, e: S3Error) -> S3Error {
        match self {
            Writer::Here(_) => e,
            Writer::Pool { tx, task } => {
                drop(tx);
                // Its staging file is removed when it drops the writer. When the
                // writer stopped first (disk full, I/O error), its error is the real cause.
                match task.await {
                    Ok(Err(cause)) => S3Error::from(cause),
                    _ if e.code == S3Code::InternalError => {
                        S3Error::internal("body writer", &"the writer task stopped early")
                    }
                    _ => e,
                }
            }
        }
    }
}

fn writer_gone() -> S3Error {
    S3Error::code(S3Code::InternalError)
}

/// Reads a small body (XML documents) into memory, at most `limit` bytes, and
/// verifies a declared SHA-256.
pub async fn read_small<B>(mut body: B, mut spec: BodySpec, limit: usize) -> S3Result<Bytes>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<S3Error>,
{
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Ok(d) = frame.into_data() {
            if buf.len() + d.len() > limit {
                return Err(S3Error::new(S3Code::MalformedXML, format!("the request body exceeds {limit} bytes")));
            }
            buf.extend_from_slice(&d);
        }
    }
    let mut body = buf.freeze();
    if spec.is_chunked() {
        let mut dec = ChunkedDecoder::new(
            match spec.chunk_signer.take() {
                Some(s) => ChunkMode::Signed(s),
                None => ChunkMode::Unsigned,
            },
            spec.expect_trailer || spec.payload.has_trailer(),
        );
        let mut out = BytesMut::new();
        dec.decode(&body, &mut out)?;
        dec.finish()?; // see `receive` for why not `is_done`
        body = out.freeze();
    }
    if let PayloadHash::Sha256(expected) = spec.payload {
        use sha2::{Digest, Sha256};
        if <[u8; 32]>::from(Sha256::digest(&body)) != expected {
            return Err(S3Error::code(S3Code::XAmzContentSHA256Mismatch));
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_deadlines() {
        let s = Duration::from_secs;
        let limits = BodyLimits { timeout: s(30), min_rate: 1024 };
        // Nothing yet: 30 s after the headers.
        assert_eq!(body_deadline(limits, 0, s(0)), s(30));
        // A stall: 30 s after the last bytes, within the rate credit.
        assert_eq!(body_deadline(limits, 1 << 20, s(10)), s(40));
        // A trickle (a byte every 10 s) runs out of rate credit at about 30 s.
        assert_eq!(body_deadline(limits, 2, s(20)), s(30) + Duration::from_secs_f64(2.0 / 1024.0));
        // Fast bodies earn credit far beyond any pause.
        assert_eq!(body_deadline(limits, 16 << 20, s(1)), s(31));
        // Rate rule off: only pauses count.
        let idle_only = BodyLimits { timeout: s(30), min_rate: 0 };
        assert_eq!(body_deadline(idle_only, 2, s(1000)), s(1030));
    }

    #[test]
    fn an_empty_body_must_declare_the_empty_digest() {
        use sha2::{Digest, Sha256};
        let empty: [u8; 32] = Sha256::digest(b"").into();
        let other: [u8; 32] = Sha256::digest(b"x").into();
        assert!(check_empty_payload(&PayloadHash::Sha256(empty), true).is_ok());
        let e = check_empty_payload(&PayloadHash::Sha256(other), true).expect_err("wrong digest of nothing");
        assert_eq!(e.code, S3Code::XAmzContentSHA256Mismatch);
        // A body is checked while it is read, not here; other modes declare no digest.
        assert!(check_empty_payload(&PayloadHash::Sha256(other), false).is_ok());
        assert!(check_empty_payload(&PayloadHash::Unsigned, true).is_ok());
        assert!(check_empty_payload(&PayloadHash::StreamingSigned, true).is_ok());
    }
}
