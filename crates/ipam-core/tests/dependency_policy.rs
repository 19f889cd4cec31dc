//! The core stays free of I/O: no store, runtime or JSON crate among its (transitive) normal
//! dependencies, and no file, socket, process, clock or entropy access in its source.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const FORBIDDEN_CRATES: &[&str] = &[
    "sled",
    "serde_json",
    "tokio",
    "mio",
    "etcd-client",
    "tonic",
    "hyper",
    "reqwest",
    "rand",
    "getrandom",
    "libc",
    "rustix",
    "nix",
    "fs2",
    "socket2",
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_io_crate_among_normal_dependencies() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap())
            .unwrap();
    let direct: Vec<String> = manifest["dependencies"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let lock: toml::Value =
        toml::from_str(&std::fs::read_to_string(manifest_dir().join("../../Cargo.lock")).unwrap())
            .unwrap();
    // name -> dependency names, from the lock file (registry crates list only normal and
    // build dependencies there).
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in lock["package"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let deps: Vec<String> = p
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .map(|d| d.as_str().unwrap().split(' ').next().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        graph.entry(name).or_default().extend(deps);
    }
    let mut seen = BTreeSet::new();
    let mut todo = direct.clone();
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            todo.extend(graph.get(&n).cloned().unwrap_or_default());
        }
    }
    assert!(
        seen.contains("ipnetwork"),
        "walk found the real graph: {seen:?}"
    );
    let bad: Vec<_> = FORBIDDEN_CRATES
        .iter()
        .filter(|c| seen.contains(**c))
        .collect();
    assert!(bad.is_empty(), "ipam-core depends on I/O crates: {bad:?}");
}

#[test]
fn no_io_in_core_source() {
    let forbidden = [
        "std::fs",
        "std::net::Tcp",
        "std::net::Udp",
        "std::os::unix::net",
        "std::process",
        "std::io::",
        "SystemTime::now",
        "Instant::now",
        "std::env",
        "thread_rng",
    ];
    let mut stack = vec![manifest_dir().join("src")];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                for f in forbidden {
                    assert!(!text.contains(f), "{} uses {f}", p.display());
                }
            }
        }
    }
    assert!(files > 10);
}

/// The normal (not dev) dependencies of a workspace crate, by its directory under `crates/`.
fn normal_deps(krate: &str) -> Vec<String> {
    let path = manifest_dir().join("..").join(krate).join("Cargo.toml");
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_node_service_does_not_link_the_command_line_tool() {
    // Walk workspace crates through their normal dependencies (the lock file cannot tell a
    // workspace crate's dev-dependencies from its normal ones).
    let mut seen = BTreeSet::new();
    let mut todo = vec!["ipamd".to_string()];
    while let Some(k) = todo.pop() {
        if manifest_dir().join("..").join(&k).is_dir() && seen.insert(k.clone()) {
            todo.extend(normal_deps(&k));
        }
    }
    assert!(
        seen.contains("ipam-admin") && seen.contains("ipam-core"),
        "walk found the real graph: {seen:?}"
    );
    assert!(
        !seen.contains("ipamctl"),
        "calico-ipamd links ipamctl: {seen:?}"
    );
}
