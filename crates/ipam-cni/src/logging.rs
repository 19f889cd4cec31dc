//! Logs go to the configured file and to stderr, never to stdout (stdout is the result).

use crate::config::PluginConfig;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone)]
struct Tee {
    file: Option<Arc<Mutex<std::fs::File>>>,
}

struct TeeWriter(Option<Arc<Mutex<std::fs::File>>>);

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.0 {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(buf);
            }
        }
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter;
    fn make_writer(&'a self) -> TeeWriter {
        TeeWriter(self.file.clone())
    }
}

fn open_log(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(p)
}

/// Records a call the node service answered in the plugin's own log file, one line, without
/// setting up the logger (the service logs the details in its own log). Errors are always
/// written; successes at level `info` and below.
pub fn record_served(cfg: &PluginConfig, env: &crate::env::CniEnv, exit_code: i32, stdout: &str) {
    let Some(path) = &cfg.log_file_path else {
        return;
    };
    let failed = exit_code != 0;
    if !failed && matches!(cfg.log_level.as_str(), "error" | "warn" | "warning") {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let detail = if failed {
        let cut: String = stdout.chars().take(300).collect();
        format!(" error={cut}")
    } else {
        String::new()
    };
    let line = format!(
        "{} {} served by the node service: command={:?} container={} ifname={} exit={exit_code}{detail}\n",
        crate::handler::rfc3339(now),
        if failed { "WARN" } else { "INFO" },
        env.command,
        env.container_id,
        env.ifname,
    );
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Ok(mut f) = open_log(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Installs the process-wide logger (once; later calls do nothing). A log file that cannot be
/// opened is skipped, never an error: logging must not fail a pod.
pub fn init(cfg: &PluginConfig) {
    let file = cfg.log_file_path.as_ref().and_then(|p| {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        open_log(p).ok()
    });
    let level = match cfg.log_level.as_str() {
        "error" => tracing::Level::ERROR,
        "warn" | "warning" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(Tee {
            file: file.map(|f| Arc::new(Mutex::new(f))),
        })
        .try_init();
}
