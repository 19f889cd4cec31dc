//! `calico-ipam`: reads the CNI environment and the network config, prints the result or the
//! error JSON, exits non-zero on error.

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::collections::BTreeMap;
use std::io::{Read, Write};

fn main() {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_"))
        .collect();
    // A network config is a few hundred bytes to a few KiB: read it in one or two calls.
    let mut stdin = Vec::with_capacity(16 << 10);
    let interactive = env.get("CNI_COMMAND").map(String::as_str) == Some("VERSION");
    if !interactive || !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let out = ipam_cni::run(&env, &stdin);
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    std::process::exit(out.exit_code);
}
