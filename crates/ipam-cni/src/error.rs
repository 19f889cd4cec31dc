//! CNI errors: a code, a message and details, printed as the spec's error JSON. Every failure
//! of the plugin is mapped to its code here, in one place.

use ipam_core::{AdminError, AffinityError, AssignError, IpamError, ReleaseError, StoreError};
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
    /// STATUS: not available, and existing containers may have limited connectivity (only
    /// ever passed on from another plugin).
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// No address available in the candidate pools.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// A requested specific address cannot be had.
    pub const ADDRESS_UNAVAILABLE: u32 = 101;
    /// The datastore holds a record that does not decode or breaks an invariant.
    pub const STORE_CORRUPT: u32 = 102;
    /// CHECK: the previous result's addresses are not held by this attachment.
    pub const CHECK_MISMATCH: u32 = 103;
}

/// A CNI error: what failed, by kind. The code and the short message come from the kind, in
/// [`CniError::code`] and [`CniError::msg`], the one table of codes; the text is the details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
#[serde(into = "Wire", from = "Wire")]
#[non_exhaustive]
pub enum CniError {
    /// 1: the config's `cniVersion` is not one this plugin speaks.
    #[error("incompatible CNI version: {0}")]
    IncompatibleVersion(String),
    /// 2: a config field names something this build cannot do.
    #[error("unsupported field: {0}")]
    UnsupportedField(String),
    /// 3: CHECK of an attachment that holds nothing.
    #[error("unknown container: {0}")]
    UnknownContainer(String),
    /// 4: a `CNI_*` variable is missing or malformed.
    #[error("invalid environment: {0}")]
    Env(String),
    /// 5: I/O, the store's opening, or another process's failure; `what` is the short message.
    #[error("{what}: {details}")]
    Io {
        /// Short message.
        what: String,
        /// Details.
        details: String,
    },
    /// 6: input that does not decode.
    #[error("failed to decode content: {0}")]
    Decode(String),
    /// 7: the network config is invalid.
    #[error("invalid network config: {0}")]
    Config(String),
    /// 11: a transient failure (busy store, unreachable etcd or service); the runtime retries.
    #[error("try again later: {0}")]
    TryAgain(String),
    /// 50: STATUS: an ADD would fail now; `what` is the short message.
    #[error("{what}: {details}")]
    NotAvailable {
        /// Short message.
        what: String,
        /// Details.
        details: String,
    },
    /// 100: no free address in the candidate pools.
    #[error("no addresses available: {0}")]
    Exhausted(String),
    /// 101: a requested address cannot be had.
    #[error("requested address unavailable: {0}")]
    AddressUnavailable(String),
    /// 102: the store holds a record that does not decode.
    #[error("datastore corrupt: {0}")]
    StoreCorrupt(String),
    /// 103: CHECK: the previous result's addresses are not held by this attachment.
    #[error("addresses not held: {0}")]
    CheckMismatch(String),
    /// Another plugin's error, passed on as it was (code, message, details).
    #[error("{msg}: {details}")]
    Plugin {
        /// Its code.
        code: u32,
        /// Its message.
        msg: String,
        /// Its details.
        details: String,
    },
}

impl CniError {
    /// The spec's code (or 100+ for this plugin's own): the one table.
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion(_) => codes::INCOMPATIBLE_VERSION,
            CniError::UnsupportedField(_) => codes::UNSUPPORTED_FIELD,
            CniError::UnknownContainer(_) => codes::UNKNOWN_CONTAINER,
            CniError::Env(_) => codes::INVALID_ENV,
            CniError::Io { .. } => codes::IO_FAILURE,
            CniError::Decode(_) => codes::DECODE,
            CniError::Config(_) => codes::INVALID_CONFIG,
            CniError::TryAgain(_) => codes::TRY_AGAIN,
            CniError::NotAvailable { .. } => codes::NOT_AVAILABLE,
            CniError::Exhausted(_) => codes::POOL_EXHAUSTED,
            CniError::AddressUnavailable(_) => codes::ADDRESS_UNAVAILABLE,
            CniError::StoreCorrupt(_) => codes::STORE_CORRUPT,
            CniError::CheckMismatch(_) => codes::CHECK_MISMATCH,
            CniError::Plugin { code, .. } => *code,
        }
    }

    /// The short message of the error JSON.
    pub fn msg(&self) -> &str {
        match self {
            CniError::IncompatibleVersion(_) => "incompatible CNI version",
            CniError::UnsupportedField(_) => "unsupported field",
            CniError::UnknownContainer(_) => "unknown container",
            CniError::Env(_) => "invalid environment",
            CniError::Io { what, .. } | CniError::NotAvailable { what, .. } => what,
            CniError::Decode(_) => "failed to decode content",
            CniError::Config(_) => "invalid network config",
            CniError::TryAgain(_) => "try again later",
            CniError::Exhausted(_) => "no addresses available",
            CniError::AddressUnavailable(_) => "requested address unavailable",
            CniError::StoreCorrupt(_) => "datastore corrupt",
            CniError::CheckMismatch(_) => "addresses not held by this attachment",
            CniError::Plugin { msg, .. } => msg,
        }
    }

    /// The details of the error JSON.
    pub fn details(&self) -> &str {
        match self {
            CniError::IncompatibleVersion(d)
            | CniError::UnsupportedField(d)
            | CniError::UnknownContainer(d)
            | CniError::Env(d)
            | CniError::Decode(d)
            | CniError::Config(d)
            | CniError::TryAgain(d)
            | CniError::Exhausted(d)
            | CniError::AddressUnavailable(d)
            | CniError::StoreCorrupt(d)
            | CniError::CheckMismatch(d) => d,
            CniError::Io { details, .. }
            | CniError::NotAvailable { details, .. }
            | CniError::Plugin { details, .. } => details,
        }
    }

    /// The same kind with other details (e.g. the details of a failed undo appended).
    pub fn with_details(self, details: String) -> CniError {
        let code = self.code();
        let msg = self.msg().to_string();
        CniError::from_wire(code, msg, details)
    }

    /// An error read back from its JSON (a service's or another plugin's answer): our own
    /// codes become their kinds, others stay as they came.
    pub fn from_wire(code: u32, msg: String, details: String) -> CniError {
        match code {
            codes::INCOMPATIBLE_VERSION => CniError::IncompatibleVersion(details),
            codes::UNSUPPORTED_FIELD => CniError::UnsupportedField(details),
            codes::UNKNOWN_CONTAINER => CniError::UnknownContainer(details),
            codes::INVALID_ENV => CniError::Env(details),
            codes::IO_FAILURE => CniError::Io { what: msg, details },
            codes::DECODE => CniError::Decode(details),
            codes::INVALID_CONFIG => CniError::Config(details),
            codes::TRY_AGAIN => CniError::TryAgain(details),
            codes::NOT_AVAILABLE => CniError::NotAvailable { what: msg, details },
            codes::POOL_EXHAUSTED => CniError::Exhausted(details),
            codes::ADDRESS_UNAVAILABLE => CniError::AddressUnavailable(details),
            codes::STORE_CORRUPT => CniError::StoreCorrupt(details),
            codes::CHECK_MISMATCH => CniError::CheckMismatch(details),
            code => CniError::Plugin { code, msg, details },
        }
    }

    /// Code 5 with a short message.
    pub fn io(what: &str, details: impl Into<String>) -> Self {
        CniError::Io {
            what: what.to_string(),
            details: details.into(),
        }
    }

    /// Code 7.
    pub fn config(details: impl Into<String>) -> Self {
        CniError::Config(details.into())
    }

    /// Code 4, naming the missing variables.
    pub fn missing_env(vars: &[&str]) -> Self {
        CniError::Env(format!(
            "required environment variables missing: {}",
            vars.join(", ")
        ))
    }

    /// Code 6.
    pub fn decode(details: impl Into<String>) -> Self {
        CniError::Decode(details.into())
    }

    /// Code 11.
    pub fn try_again(details: impl Into<String>) -> Self {
        CniError::TryAgain(details.into())
    }

    /// The error JSON, with the configuration's cniVersion.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.msg(),
            "details": self.details(),
        })
        .to_string()
    }
}

/// The error JSON's fields, as they travel.
#[derive(Clone, Serialize, serde::Deserialize)]
struct Wire {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl From<CniError> for Wire {
    fn from(e: CniError) -> Wire {
        Wire {
            code: e.code(),
            msg: e.msg().to_string(),
            details: e.details().to_string(),
        }
    }
}

impl From<Wire> for CniError {
    fn from(w: Wire) -> CniError {
        CniError::from_wire(w.code, w.msg, w.details)
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> Self {
        match e {
            IpamError::Store(e) => e.into(),
            IpamError::Assign(e) => e.into(),
            IpamError::Release(e) => e.into(),
            IpamError::Affinity(e) => e.into(),
            IpamError::Admin(e) => e.into(),
            other => CniError::io("IPAM failure", other.to_string()),
        }
    }
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        let details = e.to_string();
        match e {
            StoreError::Unavailable { .. } => CniError::try_again(details),
            StoreError::Corrupt { .. } => CniError::StoreCorrupt(details),
            _ => CniError::io("IPAM failure", details),
        }
    }
}

impl From<AssignError> for CniError {
    fn from(e: AssignError) -> Self {
        let details = e.to_string();
        match e {
            AssignError::Store(e) => e.into(),
            AssignError::ExcessiveContention(_) => CniError::try_again(details),
            AssignError::Exhausted { .. } | AssignError::NoPools { .. } => {
                CniError::Exhausted(details)
            }
            AssignError::AlreadyAllocated(_)
            | AssignError::Reserved { .. }
            | AssignError::NotInPool(_)
            | AssignError::AffinityConflict { .. }
            | AssignError::Block(_) => CniError::AddressUnavailable(details),
            AssignError::UnknownPool(_)
            | AssignError::PoolDisabled(_)
            | AssignError::PoolMismatch { .. }
            | AssignError::InvalidArgument(_) => CniError::config(details),
            AssignError::Undo(e) => e.into(),
            _ => CniError::io("IPAM failure", details),
        }
    }
}

impl From<ReleaseError> for CniError {
    fn from(e: ReleaseError) -> Self {
        let details = e.to_string();
        match e {
            ReleaseError::Store(e) => e.into(),
            ReleaseError::ExcessiveContention(_) => CniError::try_again(details),
            ReleaseError::InvalidArgument(_) => CniError::config(details),
            _ => CniError::io("IPAM failure", details),
        }
    }
}

impl From<AffinityError> for CniError {
    fn from(e: AffinityError) -> Self {
        let details = e.to_string();
        match e {
            AffinityError::Store(e) => e.into(),
            AffinityError::Release(e) => e.into(),
            AffinityError::ExcessiveContention(_) => CniError::try_again(details),
            AffinityError::UnknownPool(_) | AffinityError::InvalidArgument(_) => {
                CniError::config(details)
            }
            _ => CniError::io("IPAM failure", details),
        }
    }
}

impl From<AdminError> for CniError {
    fn from(e: AdminError) -> Self {
        let details = e.to_string();
        match e {
            AdminError::Store(e) => e.into(),
            AdminError::Affinity(e) => e.into(),
            AdminError::ExcessiveContention(_) => CniError::try_again(details),
            AdminError::UnknownPool(_)
            | AdminError::Pool(_)
            | AdminError::Config(_)
            | AdminError::Selector(_)
            | AdminError::PoolExists(_)
            | AdminError::InvalidArgument(_) => CniError::config(details),
            _ => CniError::io("IPAM failure", details),
        }
    }
}

impl From<rscni_types::error::Error> for CniError {
    fn from(e: rscni_types::error::Error) -> Self {
        CniError::from_wire(u32::from(&e), e.msg().to_string(), e.details().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code_and_survives_the_wire() {
        let d = || "why".to_string();
        let all = [
            (CniError::IncompatibleVersion(d()), 1),
            (CniError::UnsupportedField(d()), 2),
            (CniError::UnknownContainer(d()), 3),
            (CniError::Env(d()), 4),
            (CniError::io("I/O failure", "why"), 5),
            (CniError::Decode(d()), 6),
            (CniError::Config(d()), 7),
            (CniError::TryAgain(d()), 11),
            (
                CniError::NotAvailable {
                    what: "down".into(),
                    details: d(),
                },
                50,
            ),
            (CniError::Exhausted(d()), 100),
            (CniError::AddressUnavailable(d()), 101),
            (CniError::StoreCorrupt(d()), 102),
            (CniError::CheckMismatch(d()), 103),
            (
                CniError::Plugin {
                    code: 51,
                    msg: "limited".into(),
                    details: d(),
                },
                51,
            ),
        ];
        for (e, code) in all {
            assert_eq!(e.code(), code, "{e:?}");
            let json = e.to_json("1.1.0");
            let v: serde_json::Value = serde_json::from_str(&json).expect("from_str succeeds");
            assert_eq!(v["code"], code);
            assert_eq!(v["details"], "why");
            let back: CniError = serde_json::from_str(&json).expect("from_str succeeds");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn ipam_failures_map_to_their_codes() {
        let e: CniError = IpamError::Store(StoreError::Unavailable {
            reason: "x".into(),
            indeterminate: false,
        })
        .into();
        assert_eq!(e.code(), codes::TRY_AGAIN);
        let e: CniError = IpamError::Store(StoreError::Corrupt {
            key: "k".into(),
            reason: "r".into(),
        })
        .into();
        assert_eq!(e.code(), codes::STORE_CORRUPT);
    }
}
