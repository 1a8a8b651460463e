//! Off-box copies: walstore stays the fast, WAL-aware front door and copies what it
//! stores into an existing S3-compatible cluster (AWS S3, Ceph RGW, MinIO, Garage),
//! and rebuilds a data directory from that copy.
//!
//! - [`spec`]: a target's settings and credentials;
//! - [`client`]: the one S3 client (`aws-sdk-s3`) every off-box feature uses;
//! - [`replicate`]: the worker that drains the storage crate's replication journal;
//! - [`rebuild`]: a store made again from a copy;
//! - [`import`]: moving in from another S3 store (MinIO), keeping LastModified and ETags;
//! - [`tier`]: tiering: evicting cold bytes to a target and reading them back.
//!
//! What a change must reach and in which order is journaled by the storage crate
//! (`storage::replication`) in the same batch as the change; this crate only sends.

pub mod client;
pub mod error;
pub mod import;
pub mod rebuild;
pub mod replicate;
pub mod spec;
pub mod tier;

pub use error::{Error, ErrorKind, Result};
pub use replicate::{ReplicationJob, Replicator, TargetReport};
pub use spec::{DeletePolicy, TargetSpec};
pub use tier::{TierJob, TierReader, TierState};
