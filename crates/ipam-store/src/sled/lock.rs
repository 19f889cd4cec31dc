//! One process per store directory: an exclusive `flock` on `<dir>/ipam.lock`, waited for with
//! a bound, holding the owner's PID so a busy error can say who holds it.

use fs2::FileExt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process held it for the whole wait.
    Busy {
        /// PID written by the holder, when readable.
        holder: Option<u32>,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock file could not be opened.
    Io(std::io::Error),
}

/// Takes the lock, polling until `timeout`.
pub fn acquire(dir: &Path, timeout: Duration) -> Result<DirLock, LockError> {
    let path = dir.join("ipam.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(LockError::Io)?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => break,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.raw_os_error() == Some(11) =>
            {
                if start.elapsed() >= timeout {
                    let mut text = String::new();
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Busy {
                        holder: text.trim().parse().ok(),
                        waited: start.elapsed(),
                    });
                }
                std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(LockError::Io(e)),
        }
    }
    file.set_len(0).map_err(LockError::Io)?;
    file.seek(SeekFrom::Start(0)).map_err(LockError::Io)?;
    write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(DirLock { _file: file })
}

/// Who a holder is and what to do about it, from its command line: "process 42
/// (calico-ipamd, serving /run/x.sock): use that socket ..." .
pub fn describe(pid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return format!("process {pid}");
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let name = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    if name == "calico-ipamd" {
        let socket = args
            .iter()
            .position(|a| a == "--socket")
            .and_then(|i| args.get(i + 1))
            .map_or("its default socket", String::as_str);
        format!(
            "process {pid} (calico-ipamd, serving {socket}): go through it (ipamctl --socket, the plugin's ipamd_socket) or stop it"
        )
    } else if name.is_empty() {
        format!("process {pid}")
    } else {
        format!("process {pid} ({name}): wait for it to finish, or stop it")
    }
}
