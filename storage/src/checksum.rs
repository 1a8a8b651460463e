//! Checksum arithmetic for multipart objects: composite checksums (a checksum of
//! the part checksums) and full-object CRCs combined from part CRCs without
//! re-reading any bytes.

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::types::{Checksum, ChecksumAlgorithm, ChecksumType};

/// Checksum over the concatenated raw part checksums, shown as `…-N`.
pub(crate) fn composite(algorithm: ChecksumAlgorithm, parts: &[&[u8]]) -> Checksum {
    let mut cat = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        cat.extend_from_slice(p);
    }
    let value = match algorithm {
        ChecksumAlgorithm::Crc32 => crc32fast::hash(&cat).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Crc32c => crc32c::crc32c(&cat).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Crc64Nvme => {
            let mut d = crc64fast_nvme::Digest::new();
            d.write(&cat);
            d.sum64().to_be_bytes().to_vec()
        }
        ChecksumAlgorithm::Sha1 => Sha1::digest(&cat).to_vec(),
        ChecksumAlgorithm::Sha256 => Sha256::digest(&cat).to_vec(),
    };
    Checksum { algorithm, value, kind: ChecksumType::Composite { parts: parts.len() as u32 } }
}

/// Reflected polynomial and width of the CRCs that can be combined.
fn crc_params(algorithm: ChecksumAlgorithm) -> Option<(u64, u32)> {
    match algorithm {
        ChecksumAlgorithm::Crc32 => Some((0xEDB8_8320, 32)),
        ChecksumAlgorithm::Crc32c => Some((0x82F6_3B78, 32)),
        ChecksumAlgorithm::Crc64Nvme => Some((0x9A6C_9329_AC4B_C9B5, 64)),
        _ => None,
    }
}

/// Full-object CRC of the concatenation of parts, from `(crc, len)` of each part.
/// `None` for algorithms that are not CRCs.
pub(crate) fn combine_full(algorithm: ChecksumAlgorithm, parts: &[(u64, u64)]) -> Option<Checksum> {
    let (poly, width) = crc_params(algorithm)?;
    let mut acc: Option<u64> = None;
    for &(crc, len) in parts {
        acc = Some(match acc {
            None => crc,
            Some(a) => crc_combine(poly, width, a, crc, len),
        });
    }
    let v = acc.unwrap_or(0);
    let value = if width == 32 { (v as u32).to_be_bytes().to_vec() } else { v.to_be_bytes().to_vec() };
    Some(Checksum { algorithm, value, kind: ChecksumType::FullObject })
}

/// Reads a big-endian CRC value of 4 or 8 bytes.
pub(crate) fn crc_value(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            Some(u64::from_be_bytes(b))
        }
        _ => None,
    }
}

fn gf2_times(mat: &[u64], mut vec: u64) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn gf2_square(square: &mut [u64], mat: &[u64]) {
    for n in 0..mat.len() {
        square[n] = gf2_times(mat, mat[n]);
    }
}

/// zlib's `crc32_combine`, generalised to any reflected CRC with all-ones init
/// and xor-out: the CRC of `A‖B` from `crc(A)`, `crc(B)` and `len(B)`.
fn crc_combine(poly: u64, width: u32, crc1: u64, crc2: u64, mut len2: u64) -> u64 {
    if len2 == 0 {
        return crc1;
    }
    let w = width as usize;
    let mut even = vec![0u64; w];
    let mut odd = vec![0u64; w];
    // Operator for one zero bit.
    odd[0] = poly;
    let mut row = 1u64;
    for item in odd.iter_mut().skip(1) {
        *item = row;
        row <<= 1;
    }
    gf2_square(&mut even, &odd); // two zero bits
    gf2_square(&mut odd, &even); // four zero bits
    let mut crc1 = crc1;
    loop {
        gf2_square(&mut even, &odd);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        gf2_square(&mut odd, &even);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc64(data: &[u8]) -> u64 {
        let mut d = crc64fast_nvme::Digest::new();
        d.write(data);
        d.sum64()
    }

    #[test]
    fn combine_matches_whole_crc() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for cut in [0usize, 1, 7, 4096, 50_000, 100_002, 100_003] {
            let (a, b) = data.split_at(cut);
            let c32 = combine_full(
                ChecksumAlgorithm::Crc32,
                &[(crc32fast::hash(a) as u64, a.len() as u64), (crc32fast::hash(b) as u64, b.len() as u64)],
            )
            .expect("crc32");
            assert_eq!(c32.value, crc32fast::hash(&data).to_be_bytes(), "cut {cut}");
            let c32c = combine_full(
                ChecksumAlgorithm::Crc32c,
                &[(crc32c::crc32c(a) as u64, a.len() as u64), (crc32c::crc32c(b) as u64, b.len() as u64)],
            )
            .expect("crc32c");
            assert_eq!(c32c.value, crc32c::crc32c(&data).to_be_bytes(), "cut {cut}");
            let c64 =
                combine_full(ChecksumAlgorithm::Crc64Nvme, &[(crc64(a), a.len() as u64), (crc64(b), b.len() as u64)])
                    .expect("crc64");
            assert_eq!(c64.value, crc64(&data).to_be_bytes(), "cut {cut}");
        }
        let three =
            combine_full(ChecksumAlgorithm::Crc64Nvme, &[(crc64(b"ab"), 2), (crc64(b"cde"), 3), (crc64(b"f"), 1)])
                .expect("crc64");
        assert_eq!(three.value, crc64(b"abcdef").to_be_bytes());
        assert!(combine_full(ChecksumAlgorithm::Sha256, &[]).is_none());
    }

    #[test]
    fn composite_is_checksum_of_checksums() {
        let p1 = crc32fast::hash(b"part1").to_be_bytes();
        let p2 = crc32fast::hash(b"part2").to_be_bytes();
        let c = composite(ChecksumAlgorithm::Crc32, &[&p1, &p2]);
        let mut cat = p1.to_vec();
        cat.extend_from_slice(&p2);
        assert_eq!(c.value, crc32fast::hash(&cat).to_be_bytes());
        assert!(c.to_wire().ends_with("-2"));
    }
}
