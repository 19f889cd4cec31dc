//! `calico`: the main CNI plugin. Reads the environment and stdin, prints the result.

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::io::{Read, Write};

fn main() {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().take(4 << 20).read_to_end(&mut stdin);
    let out = calico_cni::run(&env, &stdin);
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    std::process::exit(out.exit_code);
}
