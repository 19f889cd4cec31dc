//! ADD and DEL latency of IPAM plugins exec'd the way a main plugin execs them (environment +
//! config on stdin), in one run: calico-ipam through a node service started by hand,
//! calico-ipam as installed (the service started by its first call, `ipamd_autostart`),
//! calico-ipam on its own (autostart off), and Debian's host-local. Then 200 concurrent ADDs
//! for each.
//!
//! Run: `bash benches/cni-latency.sh` (builds release binaries first, and the statically linked
//! plugin of `packaging/build-release.sh`).
//! Usage: `cni-bench [N] [HOST_LOCAL] [LABEL=STATIC_PLUGIN ...]`; binaries are looked up next to
//! this one. Each `STATIC_PLUGIN` (e.g. `musl=target/plugins/calico-ipam`) is also measured
//! through the same service in the same run, so the builds are compared on equal terms.

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Target {
    name: String,
    bin: PathBuf,
    conf: Value,
    cni_path: String,
}

fn spawn(t: &Target, command: &str, cid: &str) -> Child {
    let mut c = Command::new(&t.bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", "/var/run/netns/bench")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &t.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plugin");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(t.conf.to_string().as_bytes())
        // A process that does not read its stdin (the floor's /bin/true) closes it.
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Ok(()),
            _ => Err(e),
        })
        .expect("write config");
    c
}

fn finish(c: Child, what: &str) {
    let o = c.wait_with_output().expect("wait");
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

fn call(t: &Target, command: &str, cid: &str) -> Duration {
    let s = Instant::now();
    finish(spawn(t, command, cid), command);
    s.elapsed()
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = ((v.len() * 99).div_ceil(100)).saturating_sub(1);
    (ms(v[v.len() / 2]), ms(v[p99]))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let host_local = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/usr/lib/cni/host-local".into()),
    );
    let static_plugins: Vec<(String, PathBuf)> = args
        .map(|a| match a.split_once('=') {
            Some((label, path)) => (label.to_string(), PathBuf::from(path)),
            None => ("static".to_string(), PathBuf::from(a)),
        })
        .collect();
    let here = std::env::current_exe().expect("exe");
    let dir = here.parent().expect("dir");
    let calico = dir.join("calico-ipam");
    let ipamd = dir.join("calico-ipamd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = |s: &str| tmp.path().join(s);

    let calico_conf = |store: &Path, sock: &Path, autostart: bool| {
        json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
               "ipam": {"type": "calico-ipam", "nodename": "bench-node",
                        "ipv4_pools": ["10.244.0.0/16"], "sled_path": store,
                        "ipam_lock_file": tmp.path().join("ipam.lock"),
                        "log_file_path": "none", "log_level": "warn", "ipamd_socket": sock,
                        "ipamd_autostart": autostart}})
    };
    let plain = "/usr/lib/cni".to_string();
    let mut daemon = Command::new(&ipamd)
        .arg("--sled-path")
        .arg(p("svc-store"))
        .arg("--socket")
        .arg(p("ipamd.sock"))
        .arg("--log-level")
        .arg("error")
        .spawn()
        .expect("start calico-ipamd");
    while std::os::unix::net::UnixStream::connect(p("ipamd.sock")).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut targets = vec![
        Target {
            name: "calico-ipam + calico-ipamd started by hand".into(),
            bin: calico.clone(),
            conf: calico_conf(&p("svc-store"), &p("ipamd.sock"), false),
            cni_path: plain.clone(),
        },
        Target {
            name: "calico-ipam as installed (first call starts calico-ipamd)".into(),
            bin: calico.clone(),
            conf: calico_conf(&p("auto-store"), &p("auto/ipamd.sock"), true),
            cni_path: format!("{}:/usr/lib/cni", dir.display()),
        },
        Target {
            name: "calico-ipam, no service (autostart off)".into(),
            bin: calico.clone(),
            conf: calico_conf(&p("own-store"), &p("no-such.sock"), false),
            cni_path: plain.clone(),
        },
        Target {
            name: "host-local".into(),
            bin: host_local,
            conf: json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/16"}]],
                                  "dataDir": p("host-local")}}),
            cni_path: plain.clone(),
        },
    ];
    for (i, (label, bin)) in static_plugins.iter().enumerate() {
        targets.insert(
            1 + i,
            Target {
                name: format!("calico-ipam statically linked ({label}) + the same service"),
                bin: bin.clone(),
                conf: calico_conf(&p("svc-store"), &p("ipamd.sock"), false),
                cni_path: plain.clone(),
            },
        );
    }
    // The floor under every plugin call, same run: a process that does nothing, and the
    // plugin answering VERSION (exec, dynamic loading, reading its config; no store, no socket).
    let floor = |bin: &Path, command: &str| -> Vec<Duration> {
        let t = Target {
            name: String::new(),
            bin: bin.to_path_buf(),
            conf: targets[0].conf.clone(),
            cni_path: plain.clone(),
        };
        (0..n)
            .map(|i| call(&t, command, &format!("v{i}")))
            .collect()
    };
    let (true_med, _) = stats(floor(Path::new("/bin/true"), "VERSION"));
    let (version_med, _) = stats(floor(&calico, "VERSION"));
    println!("| floor | median |");
    println!("|---|---|");
    println!("| exec /bin/true | {true_med:.2} ms |");
    println!("| calico-ipam VERSION (exec, load, parse; no store) | {version_med:.2} ms |");
    for (label, bin) in &static_plugins {
        let (static_med, _) = stats(floor(bin, "VERSION"));
        println!("| calico-ipam VERSION, statically linked ({label}) | {static_med:.2} ms |");
    }
    println!();
    println!(
        "| plugin | first ADD | ADD median | ADD p99 | DEL median | DEL p99 | 200 concurrent ADDs | rate |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for t in &targets {
        // The first ADD creates the pool / data dir (and, as installed, starts the service).
        let first = call(t, "ADD", "warm");
        let adds: Vec<Duration> = (0..n).map(|i| call(t, "ADD", &format!("s{i}"))).collect();
        let dels: Vec<Duration> = (0..n).map(|i| call(t, "DEL", &format!("s{i}"))).collect();
        let s = Instant::now();
        let children: Vec<Child> = (0..200)
            .map(|i| spawn(t, "ADD", &format!("c{i}")))
            .collect();
        for c in children {
            finish(c, "concurrent ADD");
        }
        let conc = s.elapsed();
        for i in 0..200 {
            call(t, "DEL", &format!("c{i}"));
        }
        let (am, ap) = stats(adds);
        let (dm, dp) = stats(dels);
        println!(
            "| {} | {:.1} ms | {am:.2} ms | {ap:.2} ms | {dm:.2} ms | {dp:.2} ms | {:.0} ms | {:.0}/s |",
            t.name,
            first.as_secs_f64() * 1e3,
            conc.as_secs_f64() * 1e3,
            200.0 / conc.as_secs_f64()
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
}
