//! Nobody but the plugin's own user is trusted: a "service" another user bound on the socket
//! path is ignored (its forged answers would hand one address to two containers), a lock file
//! another user owns is refused, a readable one is made private, and a socket directory others
//! can write to is refused by the service. As root, with a second, unprivileged user that each
//! test creates (`useradd`) and removes; skipped when not root unless `IPAM_E2E_REQUIRED` is
//! set.

mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An unprivileged user made for one test, removed when dropped.
struct OtherUser {
    name: String,
    uid: u32,
}

impl OtherUser {
    fn create() -> OtherUser {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "ipamt{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let st = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        let out = Command::new("id").args(["-u", &name]).output().unwrap();
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_ne!(uid, 0);
        OtherUser { name, uid }
    }
}

impl Drop for OtherUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn root() -> bool {
    ipam_test_support::e2e_or_skip(ipam_test_support::is_root(), "root")
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
    let other = OtherUser::create();
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
        .uid(other.uid)
        .gid(other.uid)
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
    let other = OtherUser::create();
    let h = Harness::new(Mode::Local);
    let shared = open_dir(&h);
    let lock = shared.join("ipam.lock");
    std::fs::write(&lock, "").unwrap();
    std::os::unix::fs::chown(&lock, Some(other.uid), None).unwrap();
    let conf = h.conf("1.0.0", json!({"ipam_lock_file": lock}));
    let out = h.exec("ADD", "c1", "eth0", &conf, "");
    assert_eq!(out.error_code(), 5);
    assert!(
        out.stdout
            .contains(&format!("belongs to user {}", other.uid)),
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
    // So the other user cannot even open it to `flock` it (which would block every call),
    // nor read the plugin's log.
    let log = h.path("cni.log");
    let log_mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(log_mode & 0o777, 0o600, "log file mode {log_mode:o}");
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    for path in [&mine, &log] {
        let opened = Command::new("python3")
            .args([
                "-c",
                "import sys; open(sys.argv[1])",
                path.to_str().unwrap(),
            ])
            .uid(other.uid)
            .gid(other.uid)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            !opened.success(),
            "user {} opened {}",
            other.name,
            path.display()
        );
    }
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
    let other = OtherUser::create();
    let theirs = h.path("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(other.uid), Some(other.uid)).unwrap();
    assert!(ipamd::bind(&theirs.join("ipamd.sock")).is_err());
    // A private directory of our own is fine.
    assert!(ipamd::bind(&h.path("mine/ipamd.sock")).is_ok());
}
