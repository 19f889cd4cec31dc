//! Helpers shared by the service tests and those that drive the real binaries.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A binary of package `package` beside this package's binary, built when missing.
fn sibling(package: &str, bin: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_calico-ipamd"))
        .parent()
        .unwrap();
    let p = dir.join(bin);
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", package, "--bin", bin])
            .status()
            .unwrap();
        assert!(st.success(), "building {bin}");
    }
    p
}

/// `calico-ipam`, built when missing.
pub fn plugin() -> PathBuf {
    sibling("ipam-cni", "calico-ipam")
}

/// `ipamctl`, built when missing.
pub fn ipamctl() -> PathBuf {
    sibling("ipamctl", "ipamctl")
}

/// One plugin call's outcome.
pub struct Call {
    pub ok: bool,
    pub took: Duration,
    pub stdout: String,
}

impl Call {
    /// The CNI error code, when the call failed with error JSON.
    pub fn code(&self) -> Option<u64> {
        serde_json::from_str::<Value>(&self.stdout).ok()?["code"].as_u64()
    }
}

/// Runs `plugin` as a runtime would, with `CNI_PATH` when given.
pub fn exec(
    plugin: &Path,
    cni_path: Option<&Path>,
    command: &str,
    cid: &str,
    conf: &Value,
) -> Call {
    let start = Instant::now();
    let mut c = Command::new(plugin);
    c.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/var/run/netns/test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(p) = cni_path {
        c.env("CNI_PATH", p);
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    Call {
        ok: o.status.success(),
        took: start.elapsed(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
    }
}

/// True when running as root; otherwise says the test is skipped (and fails it when
/// `IPAM_E2E_REQUIRED` is set).
pub fn root_or_skip(what: &str) -> bool {
    ipam_test_support::e2e_or_skip(ipam_test_support::is_root(), &format!("root ({what})"))
}

/// The first address of a CNI ADD result, without its prefix length.
pub fn first_address(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    a.split('/').next().unwrap_or(a).to_string()
}
