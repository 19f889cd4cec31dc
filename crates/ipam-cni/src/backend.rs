//! Opening the datastore when the plugin serves a request itself: the host-wide lock file
//! first (bounded wait), then the store. A store that stays busy past the timeout is CNI code
//! 11, "try again later".

use crate::config::PluginConfig;
use crate::error::{codes, CniError};
use fs2::FileExt;
use ipam_store::SpecOpenError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// The host lock, held while the plugin uses the store.
pub struct HostLock {
    _file: File,
}

/// Takes `cfg.ipam_lock_file`, waiting up to `cfg.lock_timeout`.
pub fn host_lock(cfg: &PluginConfig) -> Result<HostLock, CniError> {
    let path = &cfg.ipam_lock_file;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            CniError::new(
                codes::IO_FAILURE,
                "I/O failure",
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            CniError::new(
                codes::IO_FAILURE,
                "I/O failure",
                format!("cannot open lock file {}: {e}", path.display()),
            )
        })?;
    trust_lock_file(&file, path)?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => return Ok(HostLock { _file: file }),
            Err(_) if start.elapsed() < cfg.lock_timeout => {
                std::thread::sleep(pause.min(cfg.lock_timeout.saturating_sub(start.elapsed())));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(_) => {
                return Err(CniError::try_again(format!(
                    "the IPAM lock {} is still held after {:?}",
                    path.display(),
                    cfg.lock_timeout
                )))
            }
        }
    }
}

/// `flock` needs only read access, so a lock file another user owns or can read lets that user
/// block every local call: refuse the first, and take read access away in the second.
fn trust_lock_file(file: &File, path: &std::path::Path) -> Result<(), CniError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = file.metadata().map_err(|e| {
        CniError::new(
            codes::IO_FAILURE,
            "I/O failure",
            format!("{}: {e}", path.display()),
        )
    })?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(CniError::new(
            codes::IO_FAILURE,
            "untrusted lock file",
            format!(
                "the IPAM lock file {} belongs to user {}, not {me}; remove it or set ipam_lock_file to a path only root can create",
                path.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| {
                CniError::new(
                    codes::IO_FAILURE,
                    "I/O failure",
                    format!("{}: {e}", path.display()),
                )
            })?;
    }
    Ok(())
}

/// Opens the configured store, waiting up to `remaining` for it.
pub fn open_store(
    cfg: &PluginConfig,
    remaining: Duration,
) -> Result<Box<dyn ipam_core::Datastore>, CniError> {
    cfg.datastore.open(remaining).map_err(|e| match e {
        SpecOpenError::NoEtcd => CniError::new(
            codes::UNSUPPORTED_FIELD,
            "unsupported field",
            "datastore_type \"etcdv3\" is not available in this build (built without the etcd feature); use \"sled\"",
        ),
        e if e.is_transient() => CniError::try_again(e.to_string()),
        other => CniError::new(
            codes::IO_FAILURE,
            "cannot open the datastore",
            other.to_string(),
        ),
    })
}
