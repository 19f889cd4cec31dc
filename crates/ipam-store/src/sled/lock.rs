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
