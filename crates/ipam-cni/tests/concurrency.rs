//! 200 plugin processes at once doing ADD, then 200 doing DEL, on their own (serialised by the
//! host lock) and through the node service: all succeed, no address twice, nothing left.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

fn storm(h: &Harness, command: &str, n: usize) -> Vec<(i32, String)> {
    // Without the service the 200 take the host lock one at a time; the lock wait is raised
    // from its 30 s default so that a loaded test machine does not turn the queue into
    // "try again later" answers (that code path has its own test in plugin.rs).
    let conf = h
        .conf("1.0.0", json!({"ipam_lock_timeout_seconds": 300}))
        .to_string();
    let children: Vec<_> = (0..n)
        .map(|i| {
            let mut c = Command::new(BIN);
            c.env_clear()
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", format!("pod{i}"))
                .env("CNI_NETNS", "/var/run/netns/x")
                .env("CNI_IFNAME", "eth0")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = c.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(conf.as_bytes())
                .unwrap();
            child
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).to_string(),
            )
        })
        .collect()
}

#[test]
fn two_hundred_concurrent_adds_then_dels() {
    both_modes(|mode| {
        let mut h = Harness::new(mode);
        let adds = storm(&h, "ADD", 200);
        let mut ips = BTreeSet::new();
        for (code, out) in &adds {
            assert_eq!(*code, 0, "{mode:?} ADD failed: {out}");
            let j: serde_json::Value = serde_json::from_str(out).unwrap();
            assert!(
                ips.insert(j["ips"][0]["address"].as_str().unwrap().to_string()),
                "duplicate"
            );
        }
        assert_eq!(ips.len(), 200);
        assert_eq!(h.holdings().len(), 200);
        for (code, out) in storm(&h, "DEL", 200) {
            assert_eq!(code, 0, "{mode:?} DEL failed: {out}");
        }
        assert!(
            h.holdings().is_empty(),
            "{mode:?}: addresses left after DEL"
        );
    });
}
