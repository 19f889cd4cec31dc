//! Starting the node service when a call finds none, so a plugin copied into the CNI bin
//! directory gets the service's speed without anyone starting it by hand.
//!
//! Guarantees:
//! - At most one start at a time per socket: the starter takes `<ipamd_socket>.start` and
//!   hands it to the new process (as its stdin: a `flock` belongs to the open file, which the
//!   child shares), which holds it until it exits. A call that finds it taken waits for the
//!   service instead of starting another.
//! - At most one service per store: a sled store is held by one process at a time (its
//!   directory lock), and a service started here exits when it finds another answering on its
//!   socket for its store.
//! - The service outlives the call: its own process group, stdio on /dev/null (a runtime reading
//!   the plugin's stdout must see EOF when the plugin exits), logs to the configured file.

use crate::config::PluginConfig;
use fs2::FileExt;
use ipam_store::StoreSpec;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The service's binary name, looked up in `CNI_PATH`.
pub const BINARY: &str = "calico-ipamd";

/// What [`start`] did.
#[derive(Debug)]
pub enum Started {
    /// A service process was started (pid).
    Spawned(u32),
    /// A started service is alive (coming up, or serving and about to answer).
    InProgress,
    /// None can be started here (why).
    Unavailable(String),
}

/// Where the service's binary is: `ipamd_binary`, else `calico-ipamd` in a `CNI_PATH`
/// directory.
pub fn binary(cfg: &PluginConfig, cni_path: Option<&str>) -> Option<PathBuf> {
    if let Some(b) = &cfg.ipamd_binary {
        return b.is_file().then(|| b.clone());
    }
    cni_path?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(BINARY))
        .find(|p| p.is_file())
}

/// The service's arguments for this config: same store, socket, lock and log file.
pub fn arguments(cfg: &PluginConfig) -> Result<Vec<String>, String> {
    let mut a: Vec<String> = vec![
        "--socket".into(),
        cfg.ipamd_socket.display().to_string(),
        "--log-level".into(),
        match cfg.log_level.as_str() {
            "warning" => "warn".into(),
            l => l.to_string(),
        },
        "--exit-if-served".into(),
    ];
    if let Some(f) = &cfg.log_file_path {
        a.extend(["--log-file".into(), f.display().to_string()]);
    }
    match &cfg.datastore {
        StoreSpec::Sled { path, .. } => {
            a.extend(["--sled-path".into(), path.display().to_string()]);
        }
        StoreSpec::Etcd(e) => {
            a.extend(["--etcd-endpoints".into(), e.endpoints.join(",")]);
            a.extend(["--etcd-prefix".into(), e.prefix().to_string()]);
            for (flag, v) in [
                ("--etcd-ca-cert-file", &e.ca_cert_file),
                ("--etcd-cert-file", &e.cert_file),
                ("--etcd-key-file", &e.key_file),
            ] {
                if let Some(v) = v {
                    a.extend([flag.to_string(), v.clone()]);
                }
            }
        }
        StoreSpec::Memory => return Err("an in-memory store cannot be shared".into()),
    }
    Ok(a)
}

/// The start lock beside the socket.
fn start_lock_path(cfg: &PluginConfig) -> PathBuf {
    let mut p = cfg.ipamd_socket.clone().into_os_string();
    p.push(".start");
    PathBuf::from(p)
}

/// Starts the service for `cfg` unless one is being started (or is running: a started
/// service holds the start lock for life). With `spawn` false, only says whether one is.
pub fn start(cfg: &PluginConfig, cni_path: Option<&str>, spawn: bool) -> Started {
    let Some(bin) = binary(cfg, cni_path) else {
        return Started::Unavailable(format!("no {BINARY} in CNI_PATH or ipamd_binary"));
    };
    let args = match arguments(cfg) {
        Ok(a) => a,
        Err(e) => return Started::Unavailable(e),
    };
    let path = start_lock_path(cfg);
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            return Started::Unavailable(format!("{}: {e}", dir.display()));
        }
    }
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return Started::Unavailable(format!("{}: {e}", path.display())),
    };
    if lock.try_lock_exclusive().is_err() {
        return Started::InProgress;
    }
    if !spawn {
        return Started::Unavailable("the service started for this call is gone".into());
    }
    let mut cmd = Command::new(&bin);
    cmd.args(&args)
        // The start lock travels into the service as its stdin, so it stays held after this
        // call exits, for as long as the service lives.
        .stdin(Stdio::from(lock))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // Its own process group: a runtime that kills the plugin's group on a timeout must
        // not take the service with it.
        .process_group(0);
    match cmd.spawn() {
        Ok(child) => {
            // Not waited for: it outlives this process and is then reaped by init.
            Started::Spawned(child.id())
        }
        Err(e) => Started::Unavailable(format!("starting {}: {e}", bin.display())),
    }
}
