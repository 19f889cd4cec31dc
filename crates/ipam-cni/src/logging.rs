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

/// Installs the process-wide logger (once; later calls do nothing). A log file that cannot be
/// opened is skipped, never an error: logging must not fail a pod.
pub fn init(cfg: &PluginConfig) {
    let file = cfg.log_file_path.as_ref().and_then(|p| {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        OpenOptions::new().create(true).append(true).open(p).ok()
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
