//! `ipamctl`: parses the command line, runs it, prints, exits with the command's code.

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::io::Write;

fn main() {
    let out = ipamctl::cli::run_args(std::env::args_os());
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    std::process::exit(out.exit_code);
}
