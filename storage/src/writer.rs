//! One pass over an incoming body: every byte is hashed for its content address
//! (SHA-256, which is also what a signed `x-amz-content-sha256` must equal), its
//! ETag (MD5), its per-block CRC32s (verified on every read) and any checksums
//! the client asked for, and written to a staging file, or kept in memory when
//! it is small enough to be stored inline in the index (see [`INLINE_MAX`]).

use std::sync::Arc;

use bytes::Bytes;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::blob::{BlobStore, Staging};
use crate::error::Result;
use crate::md5lanes::Md5Stream;
use crate::space::SpaceTicket;
use crate::types::{BlobHash, Checksum, ChecksumAlgorithm, ChecksumType};

/// Size of the blocks each blob's CRC32s cover. Reads verify whole blocks, so
/// this bounds how much is read beyond a requested range.
pub const BLOCK_SIZE: u32 = 1 << 20;

/// Bodies of at most this many bytes are stored in the index (RocksDB) next to
/// their metadata instead of in a blob file of their own.
///
/// Why: a blob file costs two syncs of its own (the file's data, then its
/// directory after the rename) on top of the index's synced batch, and those
/// syncs dominate the latency of a small PUT. Inline, a small PUT is one synced
/// batch, and concurrent batches share one WAL sync (RocksDB's group commit).
/// WAL-G's small files (sentinels, `.history` files, metadata, the WAL of an
/// idle cluster after compression) all fit. Larger bodies stay files, so the
/// index stays small enough to compact cheaply. Inline blobs are content-
/// addressed, deduplicated, reference-counted and collected like blob files.
pub const INLINE_MAX: u64 = 64 * 1024;

enum ExtraHasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64(crc64fast_nvme::Digest),
    Sha1(Sha1),
    /// SHA-256 is already computed for the content address.
    Sha256,
}

impl ExtraHasher {
    fn new(a: ChecksumAlgorithm) -> Self {
        match a {
            ChecksumAlgorithm::Crc32 => Self::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => Self::Crc32c(0),
            ChecksumAlgorithm::Crc64Nvme => Self::Crc64(crc64fast_nvme::Digest::new()),
            ChecksumAlgorithm::Sha1 => Self::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Self::Crc64(h) => h.write(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256 => {}
        }
    }

    fn finish(self, sha256: &[u8; 32]) -> (ChecksumAlgorithm, Vec<u8>) {
        match self {
            Self::Crc32(h) => (ChecksumAlgorithm::Crc32, h.finalize().to_be_bytes().to_vec()),
            Self::Crc32c(c) => (ChecksumAlgorithm::Crc32c, c.to_be_bytes().to_vec()),
            Self::Crc64(h) => (ChecksumAlgorithm::Crc64Nvme, h.sum64().to_be_bytes().to_vec()),
            Self::Sha1(h) => (ChecksumAlgorithm::Sha1, h.finalize().to_vec()),
            Self::Sha256 => (ChecksumAlgorithm::Sha256, sha256.to_vec()),
        }
    }
}

/// Where a body's bytes go while it is received.
enum Sink {
    /// Still at most [`INLINE_MAX`] bytes.
    Memory(Vec<u8>),
    /// Too large to be inline: a staging file.
    File(Staging),
}

/// Where a received body's bytes are until the store commits them.
pub(crate) enum StagedBody {
    /// At most [`INLINE_MAX`] bytes, stored in the index on commit.
    Inline(Bytes),
    /// A staging file, renamed into place on commit.
    File(Staging),
}

/// The ETag digest. Bodies bound for a blob file are hashed by the shared MD5 service
/// (see [`crate::md5lanes`]), side by side with other uploads and in parallel with
/// this writer's other digests; small ones, here.
enum Md5Sink {
    Here(Md5),
    Service(Md5Stream),
}

impl Md5Sink {
    fn update(&mut self, data: &[u8], shared: Option<&Bytes>) {
        match self {
            Self::Here(h) => h.update(data),
            Self::Service(s) => s.update(shared.cloned().unwrap_or_else(|| Bytes::copy_from_slice(data))),
        }
    }

    /// Moves a body that outgrew memory to the service; `so_far` is every byte hashed
    /// until now (the in-memory body), re-hashed there because the local state cannot
    /// be handed over.
    fn move_to_service(&mut self, so_far: &[u8]) {
        if let Self::Here(_) = self {
            if let Some(mut s) = Md5Stream::new() {
                s.update(Bytes::copy_from_slice(so_far));
                *self = Self::Service(s);
            }
        }
    }

    fn finish(self) -> [u8; 16] {
        match self {
            Self::Here(h) => h.finalize().into(),
            Self::Service(s) => s.finish(),
        }
    }
}

/// Every digest but MD5.
struct Digests {
    sha256: Sha256,
    block_crc: crc32fast::Hasher,
    block_fill: u32,
    crcs: Vec<u32>,
    extra: Vec<ExtraHasher>,
}

impl Digests {
    fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        update_blocks(&mut self.block_crc, &mut self.block_fill, &mut self.crcs, data);
        for h in self.extra.iter_mut() {
            h.update(data);
        }
    }
}

/// Streams a body into a staging file (or memory, if small) while hashing it.
pub struct BlobWriter {
    store: Arc<dyn BlobStore>,
    sink: Sink,
    md5: Md5Sink,
    digests: Digests,
    size: u64,
    /// Admission against the disk-space reserve (none for writers made outside a [`crate::Store`]).
    space: Option<SpaceTicket>,
}

/// A fully received blob, hashed but not yet durable. Dropping it deletes the
/// staging file; [`crate::Store`] consumes it in its durable-write routine.
pub struct StagedBlob {
    pub(crate) body: StagedBody,
    /// Content address (SHA-256 of the bytes).
    pub hash: BlobHash,
    /// MD5 of the bytes (the single-PUT ETag).
    pub md5: [u8; 16],
    /// Length in bytes.
    pub size: u64,
    pub(crate) crcs: Vec<u32>,
    /// The checksums requested when the writer was created, full-object.
    pub checksums: Vec<Checksum>,
}

impl StagedBlob {
    /// The computed checksum for `algorithm`, if it was requested.
    pub fn checksum(&self, algorithm: ChecksumAlgorithm) -> Option<&Checksum> {
        self.checksums.iter().find(|c| c.algorithm == algorithm)
    }

    /// True if the bytes will be stored inline in the index (see [`INLINE_MAX`]).
    pub fn is_inline(&self) -> bool {
        matches!(self.body, StagedBody::Inline(_))
    }
}

impl BlobWriter {
    /// Starts a blob in `store`, computing the listed extra checksums too.
    /// `expected_len`, if known, lets a body too large to be inline go straight
    /// to a staging file.
    pub fn new(store: Arc<dyn BlobStore>, extra: &[ChecksumAlgorithm], expected_len: Option<u64>) -> Result<Self> {
        let mut algos: Vec<ChecksumAlgorithm> = extra.to_vec();
        algos.dedup();
        let sink = match expected_len {
            Some(n) if n > INLINE_MAX => Sink::File(store.create_staging()?),
            _ => Sink::Memory(Vec::with_capacity(expected_len.unwrap_or(0) as usize)),
        };
        let mut md5 = Md5Sink::Here(Md5::new());
        if let Sink::File(_) = sink {
            md5.move_to_service(&[]);
        }
        Ok(Self {
            store,
            sink,
            md5,
            digests: Digests {
                sha256: Sha256::new(),
                block_crc: crc32fast::Hasher::new(),
                block_fill: 0,
                crcs: Vec::new(),
                extra: algos.into_iter().map(ExtraHasher::new).collect(),
            },
            size: 0,
            space: None,
        })
    }

    pub(crate) fn with_space(mut self, ticket: SpaceTicket) -> Self {
        self.space = Some(ticket);
        self
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Hashes and writes `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.write_inner(data, None)
    }

    /// Hashes and writes `data`; the same as [`BlobWriter::write`], but a large body's
    /// MD5 is computed from `data` itself instead of a copy.
    pub fn write_bytes(&mut self, data: Bytes) -> Result<()> {
        self.write_inner(&data, Some(&data))
    }

    fn write_inner(&mut self, data: &[u8], shared: Option<&Bytes>) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if let Some(t) = self.space.as_mut() {
            t.wrote(data.len() as u64)?;
        }
        if let Sink::Memory(buf) = &self.sink {
            if (buf.len() + data.len()) as u64 > INLINE_MAX {
                let mut staging = self.store.create_staging()?;
                staging.write_all(buf)?;
                self.md5.move_to_service(buf);
                self.sink = Sink::File(staging);
            }
        }
        self.md5.update(data, shared);
        self.digests.update(data);
        match &mut self.sink {
            Sink::Memory(buf) => buf.extend_from_slice(data),
            Sink::File(staging) => staging.write_all(data)?,
        }
        self.size += data.len() as u64;
        Ok(())
    }

    /// Finishes hashing. The bytes are not yet durable: [`crate::Store`] fsyncs and
    /// renames them (or stores them inline) when it commits the write.
    pub fn finish(self) -> Result<StagedBlob> {
        let Digests { sha256, block_crc, block_fill, mut crcs, extra } = self.digests;
        if block_fill > 0 {
            crcs.push(block_crc.finalize());
        }
        let hash: [u8; 32] = sha256.finalize().into();
        let md5 = self.md5.finish();
        let checksums = extra
            .into_iter()
            .map(|h| {
                let (algorithm, value) = h.finish(&hash);
                Checksum { algorithm, value, kind: ChecksumType::FullObject }
            })
            .collect();
        let body = match self.sink {
            Sink::Memory(buf) => StagedBody::Inline(Bytes::from(buf)),
            Sink::File(mut staging) => {
                staging.finish_writes()?;
                StagedBody::File(staging)
            }
        };
        Ok(StagedBlob { body, hash: BlobHash::from_bytes(hash), md5, size: self.size, crcs, checksums })
    }
}

fn update_blocks(crc: &mut crc32fast::Hasher, fill: &mut u32, crcs: &mut Vec<u32>, mut data: &[u8]) {
    while !data.is_empty() {
        let room = (BLOCK_SIZE - *fill) as usize;
        let n = room.min(data.len());
        crc.update(&data[..n]);
        *fill += n as u32;
        data = &data[n..];
        if *fill == BLOCK_SIZE {
            let done = std::mem::replace(crc, crc32fast::Hasher::new());
            crcs.push(done.finalize());
            *fill = 0;
        }
    }
}

/// CRC32s of `data` cut into [`BLOCK_SIZE`] blocks (used by tests and scrub).
pub fn block_crcs(data: &[u8]) -> Vec<u32> {
    data.chunks(BLOCK_SIZE as usize).map(crc32fast::hash).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::FsBlobStore;

    #[test]
    fn hashes_match_one_shot_digests_for_any_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("open"));
        let data: Vec<u8> = (0..(3 * BLOCK_SIZE as usize + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        for split in [1usize << 10, 300_000, 1 << 20, 5 << 20] {
            let mut w = BlobWriter::new(store.clone(), &ChecksumAlgorithm::ALL, None).expect("writer");
            for c in data.chunks(split) {
                w.write(c).expect("write");
            }
            let s = w.finish().expect("finish");
            assert_eq!(s.size, data.len() as u64);
            assert_eq!(s.hash.as_bytes(), &<[u8; 32]>::from(Sha256::digest(&data)));
            assert_eq!(s.md5, <[u8; 16]>::from(Md5::digest(&data)));
            assert_eq!(s.crcs, block_crcs(&data));
            assert_eq!(s.crcs.len(), 4);
            let crc32 = s.checksum(ChecksumAlgorithm::Crc32).expect("crc32");
            assert_eq!(crc32.value, crc32fast::hash(&data).to_be_bytes());
            let crc32c = s.checksum(ChecksumAlgorithm::Crc32c).expect("crc32c");
            assert_eq!(crc32c.value, crc32c::crc32c(&data).to_be_bytes());
            let sha1 = s.checksum(ChecksumAlgorithm::Sha1).expect("sha1");
            assert_eq!(sha1.value, Sha1::digest(&data).to_vec());
            let sha = s.checksum(ChecksumAlgorithm::Sha256).expect("sha256");
            assert_eq!(&sha.value[..], s.hash.as_bytes());
        }
    }

    #[test]
    fn known_checksum_values() {
        // "123456789" check values of each CRC (from the CRC catalogue).
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("open"));
        let mut w = BlobWriter::new(store.clone(), &ChecksumAlgorithm::ALL, None).expect("writer");
        w.write(b"123456789").expect("write");
        let s = w.finish().expect("finish");
        let v = |a| s.checksum(a).expect("present").value.clone();
        assert_eq!(v(ChecksumAlgorithm::Crc32), 0xCBF4_3926u32.to_be_bytes());
        assert_eq!(v(ChecksumAlgorithm::Crc32c), 0xE306_9283u32.to_be_bytes());
        assert_eq!(v(ChecksumAlgorithm::Crc64Nvme), 0xAE8B_1486_0A79_9888u64.to_be_bytes());
    }

    #[test]
    fn empty_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("open"));
        let s = BlobWriter::new(store.clone(), &[], None).expect("w").finish().expect("finish");
        assert_eq!(s.size, 0);
        assert!(s.crcs.is_empty());
        assert_eq!(s.hash.to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
