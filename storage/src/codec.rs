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

/// Encodes a value with the current version byte. postcard fails only on a
/// type it cannot represent (a bug) or on allocation failure; either way
/// nothing must be written, so the error reaches the caller, whose write then
/// fails as a whole.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_extend(value, vec![VALUE_V1]).map_err(|e| Error::Decode(format!("encoding an index value: {e}")))
}

/// Format version of a value followed by a trailer: `[2][postcard body][postcard
/// trailer]`. Object and bucket entries carry versioning and Object Lock data this way,
/// so entries that need none (every entry of a never-versioned bucket) keep the V1 form
/// byte for byte. Only [`decode_with_trailer`] and [`decode_leading`] accept it; [`decode`] refuses it, so a caller that would drop
/// the trailer fails loudly instead.
pub(crate) const VALUE_V2_TRAILER: u8 = 2;

/// Encodes `value`, with `trailer` after it unless the trailer is the default.
pub(crate) fn encode_with_trailer<T: Serialize, U: Serialize + Default + PartialEq>(
    value: &T,
    trailer: &U,
) -> Result<Vec<u8>> {
    if *trailer == U::default() {
        return encode(value);
    }
    let err = |e: postcard::Error| Error::Decode(format!("encoding an index value: {e}"));
    let out = postcard::to_extend(value, vec![VALUE_V2_TRAILER]).map_err(err)?;
    postcard::to_extend(trailer, out).map_err(err)
}

/// Decodes a value written by [`encode_with_trailer`] (or [`encode`]: default trailer).
pub(crate) fn decode_with_trailer<T: DeserializeOwned, U: DeserializeOwned + Default>(
    bytes: &[u8],
    what: &str,
) -> Result<(T, U)> {
    let err = |e: postcard::Error| Error::Decode(format!("{what}: {e}"));
    match bytes.split_first() {
        Some((&VALUE_V1, body)) => Ok((postcard::from_bytes(body).map_err(err)?, U::default())),
        Some((&VALUE_V2_TRAILER, body)) => {
            let (value, rest) = postcard::take_from_bytes(body).map_err(err)?;
            let (trailer, rest) = postcard::take_from_bytes(rest).map_err(err)?;
            if !rest.is_empty() {
                return Err(Error::Decode(format!("{what}: {} bytes after the trailer", rest.len())));
            }
            Ok((value, trailer))
        }
        Some((v, _)) => Err(Error::Decode(format!("{what}: unknown format version {v}"))),
        None => Err(Error::Decode(format!("{what}: empty value"))),
    }
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    decode_borrowed(bytes, what)
}

/// Decodes a value written by [`encode`] into a type that borrows from `bytes` (and
/// may read only a leading part of the value).
pub(crate) fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    match bytes.split_first() {
        Some((&VALUE_V1, body)) => postcard::from_bytes(body).map_err(|e| Error::Decode(format!("{what}: {e}"))),
        Some((v, _)) => Err(Error::Decode(format!("{what}: unknown format version {v}"))),
        None => Err(Error::Decode(format!("{what}: empty value"))),
    }
}

/// Decodes the leading part of a value written by [`encode`] or
/// [`encode_with_trailer`] (a listing reads the first fields of an entry only).
pub(crate) fn decode_leading<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    match bytes.split_first() {
        Some((&VALUE_V2_TRAILER, body)) => {
            postcard::from_bytes(body).map_err(|e| Error::Decode(format!("{what}: {e}")))
        }
        _ => decode_borrowed(bytes, what),
    }
}

/// Version byte of a reference count that also carries the time of its last
/// decrement (schema 2).
pub(crate) const COUNT_V2: u8 = 2;

/// A reference count as stored in `refs`: the count, and the latest time (ms
/// since the epoch) a reference was dropped. GC needs the second: a blob that
/// lost its references at t1, was deduplicated into a new object and lost that
/// one at t2 must wait for t2's grace, not t1's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RefCount {
    pub count: i64,
    pub last_unref_ms: i64,
}

impl RefCount {
    /// Combines two deltas (or a total and a delta): counts add, times take the
    /// later one. Associative and commutative, as RocksDB's merge needs.
    pub fn merge(self, other: RefCount) -> RefCount {
        RefCount {
            count: self.count.saturating_add(other.count),
            last_unref_ms: self.last_unref_ms.max(other.last_unref_ms),
        }
    }
}

/// Encodes a reference-count delta or total:
/// `[2][count i64 LE][last decrement ms i64 LE]`.
pub(crate) fn encode_count(c: RefCount) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[0] = COUNT_V2;
    out[1..9].copy_from_slice(&c.count.to_le_bytes());
    out[9..].copy_from_slice(&c.last_unref_ms.to_le_bytes());
    out
}

/// Decodes a count written by [`encode_count`], or by schema 1 (`[1][i64 LE]`,
/// no time: read as "never decremented").
pub(crate) fn decode_count(bytes: &[u8]) -> Result<RefCount> {
    let i64_at = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        i64::from_le_bytes(a)
    };
    match bytes {
        [VALUE_V1, rest @ ..] if rest.len() == 8 => Ok(RefCount { count: i64_at(rest), last_unref_ms: 0 }),
        [COUNT_V2, rest @ ..] if rest.len() == 16 => {
            Ok(RefCount { count: i64_at(&rest[..8]), last_unref_ms: i64_at(&rest[8..]) })
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
        let enc = encode(&s).expect("encode");
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
        let c = RefCount { count: -3, last_unref_ms: 17 };
        assert_eq!(decode_count(&encode_count(c)).ok(), Some(c));
        // Schema 1 counts (no time) are still read.
        assert_eq!(decode_count(&[1, 5, 0, 0, 0, 0, 0, 0, 0]).ok(), Some(RefCount { count: 5, last_unref_ms: 0 }));
        assert!(decode_count(&[1, 2, 3]).is_err());
        assert!(decode_count(&[2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_count(&[3; 17]).is_err());
        // Merge: counts add, the later decrement wins, in any order.
        let (a, b) = (RefCount { count: 1, last_unref_ms: 0 }, RefCount { count: -1, last_unref_ms: 9 });
        assert_eq!(a.merge(b), b.merge(a));
        assert_eq!(a.merge(b), RefCount { count: 0, last_unref_ms: 9 });
    }
}
