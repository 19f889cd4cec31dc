//! Nobody but the plugin's own user is trusted: a "service" another user bound on the socket
//! path is ignored (its forged answers would hand one address to two containers), a lock file
//! another user owns is refused, a readable one is made private, and a socket directory others
//! can write to is refused by the service. As root, with a second user (uid 65534, "nobody")
//! for the other side; skipped when not root unless `IPAM_E2E_REQUIRED` is set.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn root() -> bool {
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    if me != 0 {
        assert!(
            std::env::var("IPAM_E2E_REQUIRED").is_err(),
            "trust tests need root"
        );
        eprintln!("skipping: needs root");
    }
    me == 0
}

/// A world-writable, sticky directory (like /tmp) of the test's own.
fn open_dir(h: &Harness) -> std::path::PathBuf {
    let d = h.path("shared");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The harness's temp dir is 0700: let the other user reach the shared one.
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    d
}

#[test]
fn a_socket_bound_by_another_user_is_not_trusted() {
    if !root() {
        return;
    }
    let h = Harness::new(Mode::Local);
    let shared = open_dir(&h);
    let sock = shared.join("ipamd.sock");
    // Another user's fake service: answers every request with the same forged address.
    let forged = json!({"version": 1, "exit_code": 0,
        "stdout": json!({"cniVersion": "1.0.0", "ips": [{"address": "10.244.0.1/26"}]}).to_string()});
    let script = format!(
        r#"
import socket, struct, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind({sock:?})
s.listen(16)
body = {body:?}.encode()
while True:
    c, _ = s.accept()
    try:
        n = struct.unpack(">I", c.recv(4))[0]
        while n > 0:
            n -= len(c.recv(min(n, 65536)))
        c.sendall(struct.pack(">I", len(body)) + body)
    except Exception:
        pass
    c.close()
"#,
        sock = sock.display().to_string(),
        body = forged.to_string()
    );
    let mut fake = Command::new("python3")
        .args(["-c", &script])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "fake service did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let conf = h.conf("1.0.0", json!({"ipamd_socket": sock}));
    let a = h.exec("ADD", "c1", "eth0", &conf, "");
    let b = h.exec("ADD", "c2", "eth0", &conf, "");
    let _ = fake.kill();
    let _ = fake.wait();
    let (a, b) = (a.ok().ips(), b.ok().ips());
    assert_ne!(a, b, "two containers got one address");
    assert!(!a.contains(&"10.244.0.1/26".to_string()) || !b.contains(&"10.244.0.1/26".to_string()));
    let mut h = h;
    let held: Vec<String> = h.holdings().into_iter().map(|(_, ip)| ip).collect();
    assert_eq!(held.len(), 2, "both served from the real store: {held:?}");
}

#[test]
fn a_lock_file_of_another_user_is_refused_and_ours_is_made_private() {
    if !root() {
        return;
    }
    let h = Harness::new(Mode::Local);
    let shared = open_dir(&h);
    let lock = shared.join("ipam.lock");
    std::fs::write(&lock, "").unwrap();
    std::os::unix::fs::chown(&lock, Some(NOBODY), Some(NOBODY)).unwrap();
    let conf = h.conf("1.0.0", json!({"ipam_lock_file": lock}));
    let out = h.exec("ADD", "c1", "eth0", &conf, "");
    assert_eq!(out.error_code(), 5);
    assert!(
        out.stdout.contains("belongs to user 65534"),
        "{}",
        out.stdout
    );

    let mine = h.path("ipam.lock");
    std::fs::write(&mine, "").unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o644)).unwrap();
    h.exec("ADD", "c2", "eth0", &h.conf("1.0.0", json!({})), "")
        .ok();
    let mode = std::fs::metadata(&mine).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "lock file mode {mode:o}");
}

#[test]
fn the_service_refuses_a_socket_directory_others_can_write() {
    if !root() {
        return;
    }
    let h = Harness::new(Mode::Local);
    let shared = open_dir(&h);
    let e = ipamd::bind(&shared.join("ipamd.sock")).unwrap_err();
    assert!(e.to_string().contains("writable by no one else"), "{e}");
    let theirs = h.path("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    assert!(ipamd::bind(&theirs.join("ipamd.sock")).is_err());
    // A private directory of our own is fine.
    assert!(ipamd::bind(&h.path("mine/ipamd.sock")).is_ok());
}
