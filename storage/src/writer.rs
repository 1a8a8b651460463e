//! One pass over an incoming body: every byte is hashed for its content address
//! (SHA-256, which is also what a signed `x-amz-content-sha256` must equal), its
//! ETag (MD5), its per-block CRC32s (verified on every read) and any checksums
//! the client asked for, and written to a staging file.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::blob::{BlobStore, Staging};
use crate::error::Result;
use crate::space::SpaceTicket;
use crate::types::{BlobHash, Checksum, ChecksumAlgorithm, ChecksumType};

/// Size of the blocks each blob's CRC32s cover. Reads verify whole blocks, so
/// this bounds how much is read beyond a requested range.
pub const BLOCK_SIZE: u32 = 1 << 20;

/// Above this size a buffer's MD5 runs on a second thread while this one does
/// SHA-256, CRC and the write: the two digests are the CPU cost of a PUT.
const PARALLEL_MD5_MIN: usize = 256 * 1024;

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

/// Streams a body into a staging file while hashing it.
pub struct BlobWriter {
    staging: Staging,
    sha256: Sha256,
    md5: Md5,
    block_crc: crc32fast::Hasher,
    block_fill: u32,
    crcs: Vec<u32>,
    size: u64,
    extra: Vec<ExtraHasher>,
    /// Admission against the disk-space reserve (none for writers made outside a [`crate::Store`]).
    space: Option<SpaceTicket>,
}

/// A fully received blob, hashed but not yet durable. Dropping it deletes the
/// staging file; [`crate::Store`] consumes it in its durable-write routine.
pub struct StagedBlob {
    pub(crate) staging: Staging,
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
}

impl BlobWriter {
    /// Starts a blob in `store`, computing the listed extra checksums too.
    pub fn new(store: &dyn BlobStore, extra: &[ChecksumAlgorithm]) -> Result<Self> {
        let mut algos: Vec<ChecksumAlgorithm> = extra.to_vec();
        algos.dedup();
        Ok(Self {
            staging: store.create_staging()?,
            sha256: Sha256::new(),
            md5: Md5::new(),
            block_crc: crc32fast::Hasher::new(),
            block_fill: 0,
            crcs: Vec::new(),
            size: 0,
            extra: algos.into_iter().map(ExtraHasher::new).collect(),
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
        if data.is_empty() {
            return Ok(());
        }
        if let Some(t) = self.space.as_mut() {
            t.wrote(data.len() as u64)?;
        }
        if data.len() >= PARALLEL_MD5_MIN {
            let md5 = &mut self.md5;
            let (sha, crc, extra, staging) =
                (&mut self.sha256, &mut self.block_crc, &mut self.extra, &mut self.staging);
            let (fill, crcs) = (&mut self.block_fill, &mut self.crcs);
            std::thread::scope(|s| {
                s.spawn(|| md5.update(data));
                sha.update(data);
                update_blocks(crc, fill, crcs, data);
                for h in extra.iter_mut() {
                    h.update(data);
                }
                staging.write_all(data)
            })?;
        } else {
            self.md5.update(data);
            self.sha256.update(data);
            update_blocks(&mut self.block_crc, &mut self.block_fill, &mut self.crcs, data);
            for h in self.extra.iter_mut() {
                h.update(data);
            }
            self.staging.write_all(data)?;
        }
        self.size += data.len() as u64;
        Ok(())
    }

    /// Finishes hashing. The bytes are not yet durable: [`crate::Store`] fsyncs and
    /// renames them when it commits the write.
    pub fn finish(mut self) -> Result<StagedBlob> {
        if self.block_fill > 0 {
            self.crcs.push(self.block_crc.finalize());
        }
        let hash: [u8; 32] = self.sha256.finalize().into();
        let md5: [u8; 16] = self.md5.finalize().into();
        let checksums = self
            .extra
            .into_iter()
            .map(|h| {
                let (algorithm, value) = h.finish(&hash);
                Checksum { algorithm, value, kind: ChecksumType::FullObject }
            })
            .collect();
        Ok(StagedBlob {
            staging: self.staging,
            hash: BlobHash::from_bytes(hash),
            md5,
            size: self.size,
            crcs: self.crcs,
            checksums,
        })
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
        let store = FsBlobStore::open(dir.path().join("blobs")).expect("open");
        let data: Vec<u8> = (0..(3 * BLOCK_SIZE as usize + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        for split in [1usize << 10, 300_000, 1 << 20, 5 << 20] {
            let mut w = BlobWriter::new(&store, &ChecksumAlgorithm::ALL).expect("writer");
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
        let store = FsBlobStore::open(dir.path().join("blobs")).expect("open");
        let mut w = BlobWriter::new(&store, &ChecksumAlgorithm::ALL).expect("writer");
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
        let store = FsBlobStore::open(dir.path().join("blobs")).expect("open");
        let s = BlobWriter::new(&store, &[]).expect("w").finish().expect("finish");
        assert_eq!(s.size, 0);
        assert!(s.crcs.is_empty());
        assert_eq!(s.hash.to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
