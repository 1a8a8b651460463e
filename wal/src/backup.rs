//! The JSON documents of a WAL-G backup: the stop sentinel (written last; its
//! presence marks the backup complete) and `metadata.json` (rewritten by
//! `backup-mark`; the only source of `is_permanent` that WAL-G's delete reads).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::{Lsn, NameError};

/// What the store needs from a stop sentinel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelInfo {
    /// Backup start LSN (`LSN`); `None` for WAL-E sentinels.
    pub start_lsn: Option<Lsn>,
    /// Backup finish LSN (`FinishLSN`).
    pub finish_lsn: Option<Lsn>,
    /// Immediate delta parent (`DeltaFrom`).
    pub delta_from: Option<String>,
    /// Root full backup of a delta chain (`DeltaFullName`).
    pub delta_full: Option<String>,
    /// `SystemIdentifier`.
    pub system_identifier: Option<u64>,
    /// `PgVersion`.
    pub pg_version: Option<u64>,
    /// `IsPermanent` at push time (informational; `metadata.json` decides).
    pub is_permanent: bool,
    /// `FinishTime` as written by the client (its clock).
    pub finish_time: Option<String>,
    /// A WAL-E sentinel (no LSNs; lowercase keys).
    pub wal_e: bool,
}

/// What the store needs from `metadata.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataInfo {
    /// `start_lsn`.
    pub start_lsn: Option<Lsn>,
    /// `finish_lsn`.
    pub finish_lsn: Option<Lsn>,
    /// `is_permanent`.
    pub is_permanent: bool,
    /// `system_identifier`.
    pub system_identifier: Option<u64>,
    /// `start_time` / `finish_time` (client clock).
    pub start_time: Option<String>,
    /// `finish_time`.
    pub finish_time: Option<String>,
}

fn u64_field(v: &Value, name: &str) -> Result<Option<u64>, NameError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| NameError(format!("{name} is not an unsigned integer")))
        }
        Some(_) => Err(NameError(format!("{name} is not a number"))),
    }
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn bool_field(v: &Value, name: &str) -> Result<bool, NameError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(NameError(format!("{name} is not a boolean"))),
    }
}

impl SentinelInfo {
    /// Parses a sentinel (WAL-G v1/v2 encodings, or WAL-E's).
    pub fn parse(bytes: &[u8]) -> Result<Self, NameError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| NameError(format!("sentinel is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(NameError("sentinel is not a JSON object".into()));
        }
        if v.get("wal_segment_backup_stop").is_some() && v.get("LSN").is_none() {
            return Ok(Self { wal_e: true, ..Self::default() });
        }
        let start = u64_field(&v, "LSN")?.map(Lsn::new);
        let finish = u64_field(&v, "FinishLSN")?.map(Lsn::new);
        if start.is_none() {
            return Err(NameError("sentinel has no LSN".into()));
        }
        if let (Some(s), Some(f)) = (start, finish) {
            if f < s {
                return Err(NameError(format!("sentinel FinishLSN {f} is before LSN {s}")));
            }
        }
        Ok(Self {
            start_lsn: start,
            finish_lsn: finish,
            delta_from: str_field(&v, "DeltaFrom"),
            delta_full: str_field(&v, "DeltaFullName"),
            system_identifier: u64_field(&v, "SystemIdentifier")?,
            pg_version: u64_field(&v, "PgVersion")?,
            is_permanent: bool_field(&v, "IsPermanent")?,
            finish_time: str_field(&v, "FinishTime"),
            wal_e: false,
        })
    }
}

impl MetadataInfo {
    /// Parses `metadata.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, NameError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| NameError(format!("metadata.json is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(NameError("metadata.json is not a JSON object".into()));
        }
        Ok(Self {
            start_lsn: u64_field(&v, "start_lsn")?.map(Lsn::new),
            finish_lsn: u64_field(&v, "finish_lsn")?.map(Lsn::new),
            is_permanent: bool_field(&v, "is_permanent")?,
            system_identifier: u64_field(&v, "system_identifier")?,
            start_time: str_field(&v, "start_time"),
            finish_time: str_field(&v, "finish_time"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walg_sentinel() {
        let s = br#"{"LSN":33554472,"DeltaLSN":16777256,"DeltaFrom":"base_000000010000000000000001","DeltaFullName":"base_000000010000000000000001","DeltaCount":1,"PgVersion":150002,"FinishLSN":33554720,"SystemIdentifier":7312345678901234567,"UncompressedSize":31981712,"CompressedSize":4262375,"Spec":null,"UserData":null,"FilesMetadataDisabled":true,"ChkpNum":null,"Version":2,"StartTime":"2025-01-02T03:04:05.123456Z","FinishTime":"2025-01-02T03:05:06.654321Z","DateFmt":"%Y-%m-%dT%H:%M:%S.%fZ","Hostname":"db1","DataDir":"/pg","IsPermanent":false}"#;
        let i = SentinelInfo::parse(s).expect("parse");
        assert_eq!(i.start_lsn, Some(Lsn::new(33554472)));
        assert_eq!(i.finish_lsn, Some(Lsn::new(33554720)));
        assert_eq!(i.delta_from.as_deref(), Some("base_000000010000000000000001"));
        assert_eq!(i.system_identifier, Some(7312345678901234567));
        assert!(!i.is_permanent && !i.wal_e);
        let full = SentinelInfo::parse(br#"{"LSN":1,"FinishLSN":2,"IsPermanent":true}"#).expect("full");
        assert!(full.delta_from.is_none() && full.is_permanent);
    }

    #[test]
    fn wal_e_sentinel() {
        let i = SentinelInfo::parse(br#"{"wal_segment_backup_stop":"000000010000000000000003","wal_segment_offset_backup_stop":"00000028","expanded_size_bytes":1,"spec":{}}"#).expect("parse");
        assert!(i.wal_e);
    }

    #[test]
    fn bad_sentinels() {
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"FinishLSN":5}"#,
            br#"{"LSN":"0/5"}"#,
            br#"{"LSN":10,"FinishLSN":5}"#,
            br#"{"LSN":1,"IsPermanent":"yes"}"#,
        ] {
            assert!(SentinelInfo::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn metadata() {
        let m = MetadataInfo::parse(br#"{"start_time":"2025-01-02T03:04:05.123456Z","finish_time":"2025-01-02T03:05:06.654321Z","date_fmt":"%Y","hostname":"db1","data_dir":"/d","pg_version":150002,"start_lsn":33554472,"finish_lsn":33554720,"is_permanent":true,"system_identifier":7312345678901234567,"uncompressed_size":1,"compressed_size":1,"user_data":null}"#).expect("parse");
        assert!(m.is_permanent);
        assert_eq!(m.start_lsn, Some(Lsn::new(33554472)));
        assert!(MetadataInfo::parse(b"{").is_err());
        assert!(MetadataInfo::parse(br#"{"is_permanent":1}"#).is_err());
    }
}
