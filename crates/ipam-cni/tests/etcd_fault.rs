//! etcd killed in the middle of an allocation storm: calls fail within their budget with CNI
//! code 11; etcd restarts on the same data; the storm completes; no address is held twice and,
//! once the failed attachments are deleted (as a runtime does after a failed ADD), none leaks.
//! Starts its own etcd (needs the `etcd` binary; required in CI).
#![cfg(feature = "etcd")]

use ipam_core::Ipam;
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::SystemClock;
use ipam_test_support::{etcd_or_skip, have};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Etcd {
    dir: std::path::PathBuf,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    fn start(&mut self) {
        let c = Command::new("etcd")
            .args(["--name", "fault", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", self.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", self.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer),
                "--initial-cluster",
                &format!("fault=http://127.0.0.1:{}", self.peer),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(c);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn etcd_killed_during_a_storm() {
    if !etcd_or_skip(have("etcd"), "an etcd binary") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut etcd = Etcd {
        dir: tmp.path().join("data"),
        client: free_port(),
        peer: free_port(),
        child: None,
    };
    etcd.start();
    let ep = format!("http://127.0.0.1:{}", etcd.client);
    let store = EtcdStore::connect(EtcdOptions {
        endpoints: vec![ep.clone()],
        retry_budget: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    let ipam = Arc::new(Ipam::new(store, Arc::new(SystemClock)));
    let conf = json!({"cniVersion": "1.0.0", "name": "fault", "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": "node-a", "ipv4_pools": ["10.244.0.0/16"]}})
    .to_string();
    let add = |cid: &str| {
        let env = BTreeMap::from([
            ("CNI_COMMAND".to_string(), "ADD".to_string()),
            ("CNI_CONTAINERID".to_string(), cid.to_string()),
            ("CNI_NETNS".to_string(), "/var/run/netns/x".to_string()),
            ("CNI_IFNAME".to_string(), "eth0".to_string()),
        ]);
        let t = Instant::now();
        let out = ipam_cni::serve(ipam.as_ref(), &env, conf.as_bytes());
        (out, t.elapsed())
    };
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut n = 0;
    let run = |count: usize, n: &mut usize| {
        for _ in 0..count {
            *n += 1;
            let cid = format!("pod{n}");
            let (out, took) = add(&cid);
            if out.exit_code == 0 {
                let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((cid, v["ips"][0]["address"].as_str().unwrap().to_string()));
            } else {
                let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                assert_eq!(v["code"], 11, "an outage is 'try again later': {v}");
                assert!(
                    took < Duration::from_secs(6),
                    "failed within its budget: {took:?}"
                );
                failed.lock().unwrap().push(cid);
            }
        }
    };
    run(40, &mut n);
    etcd.kill();
    run(5, &mut n);
    assert_eq!(
        failed.lock().unwrap().len(),
        5,
        "every call during the outage failed"
    );
    etcd.start();
    std::thread::sleep(Duration::from_millis(500));
    run(40, &mut n);
    // The runtime deletes the failed attachments.
    for cid in failed.lock().unwrap().iter() {
        ipam.release_by_handle(&format!("fault.{cid}")).unwrap();
    }
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() >= 80,
        "the storm completed after the restart: {}",
        acked.len()
    );
    let ips: BTreeSet<&String> = acked.iter().map(|a| &a.1).collect();
    assert_eq!(ips.len(), acked.len(), "duplicate address");
    for (cid, addr) in acked.iter() {
        let ip = addr.split('/').next().unwrap().parse().unwrap();
        assert_eq!(
            ipam.allocation(ip).unwrap().unwrap().handle_id,
            format!("fault.{cid}")
        );
    }
    let u = ipam.utilisation().unwrap();
    assert_eq!(u.pools[0].in_use, acked.len() as u64, "leaked addresses");
    assert!(ipam.audit().unwrap().is_empty());
}
