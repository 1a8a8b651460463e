//! Encoding of every value stored in the index.
//!
//! Each value is `[format version: u8][postcard body]`. A reader that meets a
//! version it does not know refuses the value with [`Error::Decode`] instead of
//! guessing, so a downgrade never misreads newer data. RocksDB's own block
//! checksums cover the bytes on disk.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// Current format version of postcard-encoded index values.
pub(crate) const VALUE_V1: u8 = 1;

/// Encodes a value with the current version byte.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let out = vec![VALUE_V1];
    // postcard cannot fail on our plain data types except on allocation failure.
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(e) => {
            // Unreachable for our types; keep the process alive and make the bug visible.
            tracing::error!(error = %e, "postcard encoding failed");
            vec![VALUE_V1]
        }
    }
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    match bytes.split_first() {
        Some((&VALUE_V1, body)) => postcard::from_bytes(body).map_err(|e| Error::Decode(format!("{what}: {e}"))),
        Some((v, _)) => Err(Error::Decode(format!("{what}: unknown format version {v}"))),
        None => Err(Error::Decode(format!("{what}: empty value"))),
    }
}

/// Encodes a reference-count delta or total: `[version][i64 little endian]`.
pub(crate) fn encode_count(n: i64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = VALUE_V1;
    out[1..].copy_from_slice(&n.to_le_bytes());
    out
}

/// Decodes a count written by [`encode_count`].
pub(crate) fn decode_count(bytes: &[u8]) -> Result<i64> {
    match bytes {
        [VALUE_V1, rest @ ..] if rest.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(rest);
            Ok(i64::from_le_bytes(b))
        }
        _ => Err(Error::Decode(format!("refcount: bad value of {} bytes", bytes.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Sample {
        a: u64,
        b: String,
    }

    #[test]
    fn round_trip_and_version_check() {
        let s = Sample { a: 7, b: "x".into() };
        let enc = encode(&s);
        assert_eq!(enc[0], VALUE_V1);
        assert_eq!(decode::<Sample>(&enc, "t").ok(), Some(s));
        let mut future = enc.clone();
        future[0] = 9;
        assert!(matches!(decode::<Sample>(&future, "t"), Err(Error::Decode(m)) if m.contains("version 9")));
        assert!(decode::<Sample>(&[], "t").is_err());
        // A truncated body is an error, not a default value.
        assert!(decode::<Sample>(&enc[..enc.len() - 1], "t").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(decode_count(&encode_count(-3)).ok(), Some(-3));
        assert!(decode_count(&[1, 2, 3]).is_err());
        assert!(decode_count(&[2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
