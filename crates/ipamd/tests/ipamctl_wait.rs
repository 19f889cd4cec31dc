//! `ipamctl` and a store another process holds: it says who holds it and what to do, and it
//! answers once the store is free (from the service that took it over, or itself).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(path: &std::path::Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ipamctl_names_the_service_holding_the_store_and_answers_once_it_is_free() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let (a, b) = (d.path().join("a.sock"), d.path().join("b.sock"));
    let service = |sock: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_calico-ipamd"))
            .args(["--sled-path", store.to_str().unwrap()])
            .args(["--socket", sock.to_str().unwrap()])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut on_a = service(&a);
    wait_for(&a);
    let ctl = common::ipamctl();
    let o = Command::new(&ctl)
        .args(["--sled-path", store.to_str().unwrap()])
        .args(["--socket", b.to_str().unwrap()])
        .args(["--lock-timeout-seconds", "1", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "process {} (calico-ipamd, serving {})",
            on_a.id(),
            a.display()
        )),
        "{text}"
    );
    assert!(text.contains("go through it"), "{text}");

    // While ipamctl waits for the store, the holder goes and a service on ipamctl's socket
    // competes for it: ipamctl answers, through that service or by itself.
    let waiting = Command::new(&ctl)
        .args(["--sled-path", store.to_str().unwrap()])
        .args(["--socket", b.to_str().unwrap()])
        .args(["--lock-timeout-seconds", "20", "show"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut on_b = service(&b);
    std::thread::sleep(Duration::from_millis(100));
    let _ = Command::new("kill")
        .args(["-TERM", &on_a.id().to_string()])
        .status();
    let _ = on_a.wait();
    let o = waiting.wait_with_output().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &on_b.id().to_string()])
        .status();
    let _ = on_b.wait();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting up to 20 s for the store"),
        "{stderr}"
    );
}
