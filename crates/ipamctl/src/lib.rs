//! `ipamctl`, the operator's tool: the command line (argument parsing, finding the store or the
//! node service, writing the files a command produced). The commands themselves, their
//! execution and their output live in `ipam-admin`, which the node service runs too; they are
//! re-exported here.
//!
//! Not here: what a command does (ipam-admin), allocation logic (ipam-core).

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;

pub use ipam_admin::{
    commands, execute, table, Command, CtlError, Outcome, EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS,
};
