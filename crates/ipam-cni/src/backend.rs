//! Opening the datastore when the plugin serves a request itself: the host-wide lock file
//! first (bounded wait), then the store. A store that stays busy past the timeout is CNI code
//! 11, "try again later".

use crate::config::PluginConfig;
use crate::error::CniError;
use fs2::FileExt;
use ipam_store::SpecOpenError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The host lock, held while the plugin uses the store.
pub struct HostLock {
    _file: File,
}

/// Opens (creating it 0600, and its directory) the host lock file at `path`, refusing one
/// another user owns. The node service holds the same lock for as long as it serves a sled
/// store, so the service and a plugin serving itself never both have it open.
pub fn open_lock_file(path: &Path) -> Result<File, CniError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            CniError::io(
                "I/O failure",
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            CniError::io(
                "I/O failure",
                format!("cannot open lock file {}: {e}", path.display()),
            )
        })?;
    trust_lock_file(&file, path)?;
    Ok(file)
}

/// Writes who holds the lock into it ("<pid> <role>"), so whoever waits can say.
pub fn note_holder(file: &File, role: &str) {
    use std::io::{Seek, Write};
    let mut f = file;
    let _ = f.set_len(0);
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = writeln!(f, "{} {role}", std::process::id());
}

/// Who holds the lock at `path`, as the holder wrote it ("pid 123 (calico-ipamd)"), if known.
pub fn holder(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let (pid, role) = text.trim().split_once(' ')?;
    let pid: u32 = pid.parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then(|| format!("pid {pid} ({role})"))
}

/// Takes the lock if it is free right now.
pub fn try_lock(file: File, role: &str) -> Result<HostLock, File> {
    match file.try_lock_exclusive() {
        Ok(()) => {
            note_holder(&file, role);
            Ok(HostLock { _file: file })
        }
        Err(_) => Err(file),
    }
}

/// The error for a lock still held at the deadline, naming the holder when it is known.
pub fn lock_timeout_error(path: &Path, waited: Duration) -> CniError {
    let who = holder(path).map_or_else(String::new, |h| format!(" by {h}"));
    CniError::try_again(format!(
        "the IPAM lock {} is still held{who} after {waited:?}",
        path.display()
    ))
}

/// Takes `cfg.ipam_lock_file`, waiting up to `cfg.lock_timeout`.
pub fn host_lock(cfg: &PluginConfig) -> Result<HostLock, CniError> {
    let path = &cfg.ipam_lock_file;
    let mut file = open_lock_file(path)?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match try_lock(file, "calico-ipam") {
            Ok(lock) => return Ok(lock),
            Err(f) if start.elapsed() < cfg.lock_timeout => {
                file = f;
                std::thread::sleep(pause.min(cfg.lock_timeout.saturating_sub(start.elapsed())));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(_) => return Err(lock_timeout_error(path, cfg.lock_timeout)),
        }
    }
}

/// `flock` needs only read access, so a lock file another user owns or can read lets that user
/// block every local call: refuse the first, and take read access away in the second.
fn trust_lock_file(file: &File, path: &Path) -> Result<(), CniError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = file
        .metadata()
        .map_err(|e| CniError::io("I/O failure", format!("{}: {e}", path.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(CniError::io("untrusted lock file", format!(
                "the IPAM lock file {} belongs to user {}, not {me}; remove it or set ipam_lock_file to a path only root can create",
                path.display(),
                meta.uid()
            )));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| CniError::io("I/O failure", format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Opens the configured store, waiting up to `remaining` for it.
pub fn open_store(
    cfg: &PluginConfig,
    remaining: Duration,
) -> Result<Box<dyn ipam_core::Datastore>, CniError> {
    cfg.datastore.open(remaining).map_err(|e| match e {
        SpecOpenError::NoEtcd => CniError::UnsupportedField(String::from("datastore_type \"etcdv3\" is not available in this build (built without the etcd feature); use \"sled\"")),
        e if e.is_transient() => CniError::try_again(e.to_string()),
        other => CniError::io("cannot open the datastore", other.to_string()),
    })
}
