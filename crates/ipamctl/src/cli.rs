//! Command-line handling: global flags, choosing between the node service and the store,
//! reading input files and writing output files on the operator's side.

use crate::commands::Command;
use crate::{execute, Outcome, EXIT_ERROR};
use clap::{Parser, ValueEnum};
use ipam_cni::config::{defaults, PluginConfig};
use ipam_cni::protocol::{self, Body, CallError, Request};
use ipam_core::Ipam;
use ipam_store::{StoreSpec, SystemClock};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable tables.
    Table,
    /// JSON.
    Json,
}

/// The operator's view and repair tool for calico-ipam.
#[derive(Debug, Parser)]
#[command(name = "ipamctl", version, about)]
pub struct Cli {
    /// The sled store (the plugin's `sled_path`).
    #[arg(long, global = true)]
    pub sled_path: Option<PathBuf>,
    /// The node service's socket (the plugin's `ipamd_socket`); used when it answers.
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Read the store (`datastore_type`, `sled_path`, etcd keys) and `ipamd_socket` from this
    /// network config: a single config, or a conflist (its plugin with an `ipam` section).
    #[arg(long, global = true, value_name = "FILE")]
    pub cni_config: Option<PathBuf>,
    /// Seconds to wait for the store when another process holds it.
    #[arg(long, global = true, default_value_t = 10)]
    pub lock_timeout_seconds: u64,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

fn fail(msg: String) -> Outcome {
    Outcome {
        stdout: format!("error: {msg}\n"),
        exit_code: EXIT_ERROR,
        files: Vec::new(),
    }
}

/// Reads input files the command names, so the command can run where the file is not (in
/// the node service).
fn attach_inputs(cmd: &mut Command) -> Result<(), String> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
    match cmd {
        Command::Release(a) => {
            if let Some(p) = &a.from_report {
                a.report_json = Some(read(p)?);
            }
        }
        Command::Gc(a) => a.valid_json = Some(read(&a.valid_attachments)?),
        Command::Import(a) => a.document = Some(read(&a.file)?),
        _ => {}
    }
    Ok(())
}

/// Which store the command line names: `--sled-path`, else the network config's (a single
/// config or a conflist), else the default sled path. The flag `named` is true when the
/// operator chose it (then a node service serving another store is not used).
fn chosen_store(
    sled_path: Option<PathBuf>,
    cni_config: Option<&PathBuf>,
) -> Result<(StoreSpec, Option<PathBuf>, bool), String> {
    let mut socket = None;
    let mut spec = sled_path.map(StoreSpec::sled);
    let named = spec.is_some() || cni_config.is_some();
    if let Some(path) = cni_config {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let c = PluginConfig::parse_file(&bytes)
            .map_err(|e| format!("{}: {}", path.display(), e.details()))?;
        socket = Some(c.ipamd_socket.clone());
        spec.get_or_insert(c.datastore);
    }
    let spec = spec.unwrap_or_else(|| StoreSpec::sled(defaults::SLED_PATH));
    Ok((spec, socket, named))
}

/// Runs a parsed command line and returns what to print; writes the files it produced.
pub fn run(cli: Cli) -> Outcome {
    let Cli {
        sled_path,
        socket,
        cni_config,
        lock_timeout_seconds,
        output,
        mut command,
    } = cli;
    let json = output == Format::Json;
    let (mut spec, conf_socket, named) = match chosen_store(sled_path, cni_config.as_ref()) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if let StoreSpec::Sled { create, .. } = &mut spec {
        *create = command.writes();
    }
    let sock = socket
        .or(conf_socket)
        .unwrap_or_else(|| defaults::SOCKET.into());
    if let Err(e) = attach_inputs(&mut command) {
        return fail(e);
    }
    let req = Request::new(
        named.then(|| spec.identity()),
        Body::Admin {
            admin: serde_json::json!({"command": command, "json": json}),
        },
    );
    let timeout = Duration::from_secs(lock_timeout_seconds + 30);
    let outcome = match protocol::call(&sock, &req, timeout) {
        Ok(r) if r.error.is_none() => Outcome {
            stdout: r.stdout,
            exit_code: r.exit_code,
            files: r.files,
        },
        Ok(_) | Err(CallError::Untrusted(_)) => {
            match spec.open(Duration::from_secs(lock_timeout_seconds)) {
                Ok(store) => execute(&Ipam::new(store, Arc::new(SystemClock)), &command, json),
                Err(e) => return fail(e.to_string()),
            }
        }
        Err(CallError::NotRunning(_)) => {
            match open_or_reach(&spec, &sock, &req, lock_timeout_seconds) {
                Ok(Reached::Store(store)) => {
                    execute(&Ipam::new(store, Arc::new(SystemClock)), &command, json)
                }
                Ok(Reached::Service(r)) => Outcome {
                    stdout: r.stdout,
                    exit_code: r.exit_code,
                    files: r.files,
                },
                Err(e) => return fail(e),
            }
        }
        Err(CallError::Failed(e)) => return fail(format!("the node service failed: {e}")),
    };
    // Only files this command line asked for are written, whoever answered.
    let asked: Vec<&str> = match &command {
        Command::Check(a) => a.report.iter().map(String::as_str).collect(),
        Command::Map(a) => a.svg.iter().map(String::as_str).collect(),
        Command::Export(a) => a.file.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    for (path, content) in &outcome.files {
        if !asked.contains(&path.as_str()) {
            return fail(format!(
                "the answer names a file this command did not ask for ({path}); nothing written"
            ));
        }
        if let Err(e) = std::fs::write(path, content) {
            return fail(format!("cannot write {path}: {e}"));
        }
    }
    outcome
}

enum Reached {
    Store(Box<dyn ipam_core::Datastore>),
    Service(protocol::Response),
}

/// Opens the store, or, while another process holds it, asks the socket again (a service
/// that was starting answers there), as the plugin does; says once on stderr who holds it.
fn open_or_reach(
    spec: &StoreSpec,
    sock: &std::path::Path,
    req: &Request,
    lock_timeout_seconds: u64,
) -> Result<Reached, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(lock_timeout_seconds);
    let mut said = false;
    loop {
        let slice = match spec {
            StoreSpec::Sled { .. } => Duration::from_millis(200),
            _ => Duration::from_secs(lock_timeout_seconds),
        };
        match spec.open(slice) {
            Ok(store) => return Ok(Reached::Store(store)),
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                if !said {
                    eprintln!("waiting up to {lock_timeout_seconds} s for the store: {e}");
                    said = true;
                }
            }
            Err(e) => return Err(e.to_string()),
        }
        if let Ok(r) = protocol::call(sock, req, Duration::from_secs(lock_timeout_seconds + 30)) {
            if r.error.is_none() {
                return Ok(Reached::Service(r));
            }
        }
    }
}

/// Parses `args` (with the program name first) and runs them; usage errors are exit code 2.
pub fn run_args<I, T>(args: I) -> Outcome
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli),
        Err(e) => Outcome {
            stdout: e.to_string(),
            exit_code: if e.use_stderr() { 2 } else { 0 },
            files: Vec::new(),
        },
    }
}
