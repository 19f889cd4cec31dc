//! What the workspace's integration tests share: whether they can run on this machine (the
//! run's etcd endpoint, root, tools on `PATH`), the switches that turn a skip into a failure
//! (`IPAM_ETCD_REQUIRED`, `IPAM_E2E_REQUIRED`, both set by `.ci/run`), and running a command
//! for its output.
//!
//! For tests only: a dev-dependency, never a dependency of a crate that ships. A test that
//! cannot run here says so on stderr and passes, unless its switch is set: then it fails, so
//! CI never passes by skipping.

use std::process::{Command, Stdio};

/// Fails the test when `ok` is false and the environment variable `required` is set; else
/// says it is skipped for want of `needs`. Returns `ok`.
pub fn or_skip(ok: bool, required: &str, needs: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os(required).is_none(),
            "{required} is set, but this test needs {needs}"
        );
        eprintln!("skipping: needs {needs}");
    }
    ok
}

/// [`or_skip`] for end-to-end tests (`IPAM_E2E_REQUIRED`).
pub fn e2e_or_skip(ok: bool, needs: &str) -> bool {
    or_skip(ok, "IPAM_E2E_REQUIRED", needs)
}

/// [`or_skip`] for tests of etcd (`IPAM_ETCD_REQUIRED`).
pub fn etcd_or_skip(ok: bool, needs: &str) -> bool {
    or_skip(ok, "IPAM_ETCD_REQUIRED", needs)
}

/// The etcd endpoint of the run (`IPAM_TEST_ETCD`); `None` skips the test, or fails it when
/// etcd is required.
pub fn etcd_endpoint() -> Option<String> {
    let ep = std::env::var("IPAM_TEST_ETCD").ok();
    etcd_or_skip(ep.is_some(), "an etcd endpoint in IPAM_TEST_ETCD");
    ep
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether `tool` is on `PATH`.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `args` (program first); whether it succeeded, and its stdout then stderr.
pub fn sh(args: &[&str]) -> (bool, String) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    let mut text = String::from_utf8_lossy(&o.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

/// Runs `args` and fails the test unless it succeeds; its output.
pub fn ok(args: &[&str]) -> String {
    let (good, out) = sh(args);
    assert!(good, "{args:?}: {out}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_report_their_outcome_and_output() {
        assert_eq!(
            sh(&["sh", "-c", "echo out; echo err >&2"]),
            (true, "out\nerr\n".into())
        );
        assert!(!sh(&["sh", "-c", "exit 3"]).0);
        assert!(have("sh") && !have("no-such-tool-here"));
    }

    #[test]
    fn a_skip_passes_unless_required() {
        assert!(!or_skip(false, "IPAM_TEST_SUPPORT_NEVER_SET", "nothing"));
        assert!(or_skip(true, "PATH", "nothing"));
        let required = std::panic::catch_unwind(|| or_skip(false, "PATH", "nothing"));
        assert!(
            required.is_err(),
            "a set switch turns the skip into a failure"
        );
    }
}
