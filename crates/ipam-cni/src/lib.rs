//! The `calico-ipam` CNI IPAM plugin, as a library: the CNI protocol (environment, network
//! configuration, results and errors for versions 0.3.0 to 1.1.0) and the verbs ADD, DEL,
//! CHECK, VERSION, GC and STATUS over `ipam-core`.
//!
//! The binary is a page over [`run::run`]. The node service (`ipamd`) links this crate and
//! calls [`run::serve`] with a store it keeps open; [`protocol`] is the socket protocol
//! between the two.
//!
//! Not here: allocation logic (ipam-core), stores (ipam-store).

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod autostart;
pub mod backend;
pub mod config;
pub mod endpoints;
pub mod env;
pub mod error;
pub mod handler;
pub mod logging;
pub mod owner;
pub mod parsed;
pub mod protocol;
pub mod result;
pub mod run;

pub use error::CniError;
pub use run::{run, serve, Output};
