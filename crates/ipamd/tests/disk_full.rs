//! A full disk under the node service: ADD fails with code 11 and STATUS with 50 while the
//! store cannot be written; once space is freed the same service serves again (it reopens
//! the store), and every address it acknowledged is still held. Needs root (a small tmpfs
//! made by the test); skipped otherwise unless `IPAM_E2E_REQUIRED=1`.

mod common;

use common::{exec, plugin, root_or_skip};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_clearly_and_the_service_recovers_when_space_returns() {
    if !root_or_skip("the disk-full test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs");
    let _mount = Mount(disk.clone());
    let store = disk.join("store");
    let socket = dir.path().join("run/ipamd.sock");
    let mut service = Command::new(env!("CARGO_BIN_EXE_calico-ipamd"))
        .args(["--sled-path", store.to_str().unwrap()])
        .args(["--socket", socket.to_str().unwrap()])
        .args(["--log-file", dir.path().join("ipamd.log").to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let plugin = plugin();
    let conf = json!({
        "cniVersion": "1.1.0", "name": "full", "type": "ptp",
        "ipam": {"type": "calico-ipam", "nodename": "node-a", "sled_path": store,
                 "ipamd_socket": socket, "ipamd_autostart": false,
                 "ipam_lock_file": dir.path().join("ipam.lock"),
                 "ipv4_pools": ["10.244.0.0/16"]}
    });
    let call = |verb: &str, cid: &str| exec(&plugin, None, verb, cid, &conf);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut held = Vec::new();
    let first = call("ADD", "before");
    assert!(first.ok, "{}", first.stdout);
    held.push(("before".to_string(), first.stdout));
    assert!(call("STATUS", "").ok);

    // Fill the disk; ADDs go on until the store cannot grow (sled may have room left in
    // space it already holds), then fail with 11, and STATUS with 50.
    let fill = disk.join("fill");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", fill.display()))
        .stderr(Stdio::null())
        .status();
    let mut failed = None;
    for i in 0..500 {
        let cid = format!("full{i}");
        let c = call("ADD", &cid);
        if c.ok {
            held.push((cid, c.stdout));
        } else {
            failed = Some(c);
            break;
        }
    }
    let failed = failed.expect("an ADD fails on a full disk");
    assert_eq!(failed.code(), Some(11), "{}", failed.stdout);
    let status = call("STATUS", "");
    assert!(!status.ok);
    assert_eq!(status.code(), Some(50), "{}", status.stdout);

    // Space returns: the same service serves again, STATUS is ready, nothing acknowledged
    // was lost (an ADD of a held container answers its address).
    std::fs::remove_file(&fill).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let c = call("ADD", "after");
        if c.ok || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        after.ok,
        "no recovery after space returned: {}",
        after.stdout
    );
    assert!(call("STATUS", "").ok);
    for (cid, result) in &held {
        let again = call("ADD", cid);
        assert!(again.ok, "{}", again.stdout);
        let want: serde_json::Value = serde_json::from_str(result).unwrap();
        let got: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(got["ips"], want["ips"], "{cid}");
    }
    assert_eq!(
        service.try_wait().unwrap(),
        None,
        "the service kept running throughout"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    assert!(service.wait().unwrap().success());
}
