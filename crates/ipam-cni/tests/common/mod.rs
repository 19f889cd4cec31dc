//! A harness that runs the real `calico-ipam` binary with an environment and stdin, against a
//! store in a temporary directory, either on its own or through a node service started in
//! this process.
#![allow(dead_code)]

use fs2::FileExt;
use ipam_core::{Datastore, Ipam, Range, Record};
use ipam_store::{SledOptions, SledStore, SystemClock};
use serde_json::{json, Value};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const BIN: &str = env!("CARGO_BIN_EXE_calico-ipam");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The plugin opens the store itself.
    Local,
    /// A node service holds the store.
    Service,
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub mode: Mode,
    service: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

pub struct Out {
    pub stdout: String,
    pub code: i32,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }

    /// The CNI error code (panics unless the call failed with error JSON).
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected failure, got {}", self.stdout);
        self.json()["code"].as_u64().expect("error JSON has a code")
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "plugin failed: {}", self.stdout);
        self
    }

    pub fn ips(&self) -> Vec<String> {
        self.json()["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["address"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Harness {
    pub fn new(mode: Mode) -> Harness {
        let mut h = Harness {
            dir: tempfile::tempdir().unwrap(),
            mode,
            service: None,
        };
        if mode == Mode::Service {
            h.start_service();
        }
        h
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("ipamd.sock")
    }

    pub fn start_service(&mut self) {
        let store = SledStore::open(self.path("store"), &SledOptions::default()).unwrap();
        let ipam = Arc::new(Ipam::new(store, Arc::new(SystemClock)));
        let listener: UnixListener = ipamd::bind(&self.socket()).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let s = shutdown.clone();
        let t = std::thread::spawn(move || {
            ipamd::serve(listener, ipam, s, Arc::new(ipamd::Stats::default())).unwrap();
        });
        self.service = Some((shutdown, t));
    }

    pub fn stop_service(&mut self) {
        if let Some((flag, t)) = self.service.take() {
            flag.store(true, Ordering::SeqCst);
            ipamd::wake(&self.socket());
            t.join().unwrap();
        }
    }

    /// A network config for `version` whose ipam section points every path into the temp dir.
    pub fn conf(&self, version: &str, ipam_extra: Value) -> Value {
        let mut ipam = json!({
            "type": "calico-ipam",
            "nodename": "node-a",
            "sled_path": self.path("store"),
            "ipam_lock_file": self.path("ipam.lock"),
            "log_file_path": self.path("cni.log"),
            "ipamd_socket": self.socket(),
            // The harness decides whether a service runs (Mode); tests of the plugin starting
            // one set this themselves.
            "ipamd_autostart": false,
            "ipv4_pools": ["10.244.0.0/16"],
        });
        for (k, v) in ipam_extra.as_object().unwrap() {
            ipam[k] = v.clone();
        }
        json!({"cniVersion": version, "name": "testnet", "type": "calico", "ipam": ipam})
    }

    pub fn exec(&self, command: &str, cid: &str, ifname: &str, conf: &Value, args: &str) -> Out {
        self.exec_raw(command, cid, ifname, conf.to_string().as_bytes(), args)
    }

    pub fn exec_raw(
        &self,
        command: &str,
        cid: &str,
        ifname: &str,
        stdin: &[u8],
        args: &str,
    ) -> Out {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", args),
        ] {
            if !v.is_empty() {
                c.env(k, v);
            }
        }
        if command == "ADD" || command == "CHECK" {
            c.env("CNI_NETNS", "/var/run/netns/test");
        }
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let o = child.wait_with_output().unwrap();
        Out {
            stdout: String::from_utf8(o.stdout).unwrap(),
            code: o.status.code().unwrap_or(-1),
        }
    }

    pub fn add(&self, cid: &str) -> Out {
        self.exec("ADD", cid, "eth0", &self.conf("1.0.0", json!({})), "")
    }

    /// Every record in the store (pools, blocks, affinities, handles), for before/after
    /// comparisons. Stops the service while reading, then restarts it.
    pub fn snapshot(&mut self) -> Vec<Record> {
        let restart = self.service.is_some();
        self.stop_service();
        let s = SledStore::open(self.path("store"), &SledOptions::default()).unwrap();
        let mut out = Vec::new();
        for r in [
            Range::Pools,
            Range::Blocks,
            Range::Affinities,
            Range::Handles,
        ] {
            out.extend(s.list(&r).unwrap().into_iter().map(|v| v.value));
        }
        let problems = ipam_core::audit(&s).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        drop(s);
        if restart {
            self.start_service();
        }
        out
    }

    /// Who holds which addresses: (handle, address) pairs.
    pub fn holdings(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for r in self.snapshot() {
            if let Record::Block(b) = r {
                for (o, a, _) in b.used() {
                    out.push((a.handle_id().to_string(), b.ip(o).to_string()));
                }
            }
        }
        out.sort();
        out
    }

    /// Holds the host lock file (as another plugin would) until the guard drops.
    pub fn hold_host_lock(&self) -> std::fs::File {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path("ipam.lock"))
            .unwrap();
        f.lock_exclusive().unwrap();
        f
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop_service();
    }
}

pub fn both_modes(f: impl Fn(Mode)) {
    f(Mode::Local);
    f(Mode::Service);
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
