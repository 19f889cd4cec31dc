//! The operator's commands as data, with their execution: every command runs against an `Ipam`
//! over any store, so the same code serves `ipamctl` on a local store, the node service (which
//! runs a command it is sent on the store it holds) and the tests.
//!
//! A [`Command`] is both the command line's grammar (clap derives) and the wire form the
//! service receives (serde); [`execute`] turns one into an [`Outcome`]: what to print, the exit
//! code, files to write. Commands print a readable table, or JSON when asked. Exit codes:
//! [`EXIT_OK`] (0), [`EXIT_ERROR`] (1), [`EXIT_PROBLEMS`] (3) when `check` found problems or a
//! release skipped something (2, usage errors, comes from the command line).
//!
//! Not here: the command line itself, finding the store or the service (ipamctl), allocation
//! logic (ipam-core), CNI (ipam-cni; `gc` reuses its logic).

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod commands;
pub mod table;

use ipam_core::{Datastore, Ipam, IpamError};
use serde::{Deserialize, Serialize};

/// Success.
pub const EXIT_OK: i32 = 0;
/// The command failed.
pub const EXIT_ERROR: i32 = 1;
/// `check` found problems, or `release` skipped addresses.
pub const EXIT_PROBLEMS: i32 = 3;

/// What a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Printed on stdout.
    pub stdout: String,
    /// Process exit code.
    pub exit_code: i32,
    /// Files to write (path, content): reports, maps.
    pub files: Vec<(String, String)>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The IPAM operation failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A bad argument or input file.
    #[error("{0}")]
    Usage(String),
}

/// Every operation's own error reaches a command's as the IPAM failure it is.
macro_rules! ipam_failure {
    ($($t:ty),*) => {$(
        impl From<$t> for CtlError {
            fn from(e: $t) -> CtlError {
                CtlError::Ipam(e.into())
            }
        }
    )*};
}
ipam_failure!(
    ipam_core::StoreError,
    ipam_core::AssignError,
    ipam_core::ReleaseError,
    ipam_core::AffinityError,
    ipam_core::AdminError,
    ipam_core::PoolError,
    ipam_core::SelectorError
);

pub use commands::Command;

/// Runs one command; errors become an outcome with [`EXIT_ERROR`].
pub fn execute<S: Datastore>(ipam: &Ipam<S>, cmd: &Command, json: bool) -> Outcome {
    match commands::run(ipam, cmd, json) {
        Ok(o) => o,
        Err(e) => Outcome {
            stdout: if json {
                serde_json::json!({"error": e.to_string()}).to_string() + "\n"
            } else {
                format!("error: {e}\n")
            },
            exit_code: EXIT_ERROR,
            files: Vec::new(),
        },
    }
}
