//! CNI errors: a code, a message and details, printed as the spec's error JSON. Every failure
//! of the plugin is mapped to its code here, in one place.

use ipam_core::{IpamError, StoreError};
use serde::Serialize;

/// Codes the plugin uses beyond the spec's (which reserves 0-99).
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Unknown container.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// No address available in the candidate pools.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// A requested specific address cannot be had.
    pub const ADDRESS_UNAVAILABLE: u32 = 101;
    /// The datastore holds a record that does not decode or breaks an invariant.
    pub const STORE_CORRUPT: u32 = 102;
    /// CHECK: the previous result's addresses are not held by this attachment.
    pub const CHECK_MISMATCH: u32 = 103;
}

/// A CNI error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
#[error("CNI error {code}: {msg}: {details}")]
pub struct CniError {
    /// The spec's code (or 100+ for plugin-specific ones).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Details.
    pub details: String,
}

impl CniError {
    /// An error with a code, message and details.
    pub fn new(code: u32, msg: &str, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.to_string(),
            details: details.into(),
        }
    }

    /// Code 7.
    pub fn config(details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_CONFIG, "invalid network config", details)
    }

    /// Code 4, naming the missing variables.
    pub fn missing_env(vars: &[&str]) -> Self {
        Self::new(
            codes::INVALID_ENV,
            "invalid environment",
            format!(
                "required environment variables missing: {}",
                vars.join(", ")
            ),
        )
    }

    /// Code 6.
    pub fn decode(details: impl Into<String>) -> Self {
        Self::new(codes::DECODE, "failed to decode content", details)
    }

    /// Code 11.
    pub fn try_again(details: impl Into<String>) -> Self {
        Self::new(codes::TRY_AGAIN, "try again later", details)
    }

    /// The error JSON, with the configuration's cniVersion.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> Self {
        let details = e.to_string();
        match e {
            IpamError::Exhausted { .. } | IpamError::NoPools { .. } => {
                CniError::new(codes::POOL_EXHAUSTED, "no addresses available", details)
            }
            IpamError::AlreadyAllocated(_)
            | IpamError::Reserved { .. }
            | IpamError::NotInPool(_)
            | IpamError::AffinityConflict { .. }
            | IpamError::Block(_) => CniError::new(
                codes::ADDRESS_UNAVAILABLE,
                "requested address unavailable",
                details,
            ),
            IpamError::UnknownPool(_)
            | IpamError::PoolDisabled(_)
            | IpamError::PoolMismatch { .. }
            | IpamError::Pool(_)
            | IpamError::Config(_)
            | IpamError::Selector(_)
            | IpamError::PoolExists(_)
            | IpamError::InvalidArgument(_) => CniError::config(details),
            IpamError::ExcessiveContention { .. } => CniError::try_again(details),
            IpamError::Store(StoreError::Unavailable { .. }) => CniError::try_again(details),
            IpamError::Store(StoreError::Corrupt { .. }) => {
                CniError::new(codes::STORE_CORRUPT, "datastore corrupt", details)
            }
            _ => CniError::new(codes::IO_FAILURE, "IPAM failure", details),
        }
    }
}

impl From<rscni_types::error::Error> for CniError {
    fn from(e: rscni_types::error::Error) -> Self {
        CniError::new(u32::from(&e), e.msg(), e.details().to_string())
    }
}
