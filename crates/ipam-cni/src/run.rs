//! One invocation from environment and stdin to stdout and exit code: through the node service
//! when its socket answers, otherwise in this process under the host lock.

use crate::backend;
use crate::config::PluginConfig;
use crate::env::{CniEnv, Command};
use crate::error::{codes, CniError};
use crate::handler::{self, Invocation};
use crate::protocol::{self, CallError, Kind, Request};
use ipam_core::{Datastore, Ipam};
use ipam_store::SystemClock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What the plugin prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Printed on stdout.
    pub stdout: String,
    /// Process exit code (0 on success).
    pub exit_code: i32,
}

impl Output {
    fn ok(stdout: Option<String>) -> Output {
        Output {
            stdout: stdout.unwrap_or_default(),
            exit_code: 0,
        }
    }

    fn error(e: &CniError, cni_version: &str) -> Output {
        Output {
            stdout: e.to_json(cni_version),
            exit_code: 1,
        }
    }
}

/// The `cniVersion` to report errors under: the config's, when it can be read at all.
fn reported_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(String::from)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "1.1.0".to_string())
}

fn parse(env: &BTreeMap<String, String>, stdin: &[u8]) -> Result<Invocation, CniError> {
    let env = CniEnv::from_map(env)?;
    if env.command == Command::Version {
        let config = PluginConfig::parse(stdin, Command::Version).unwrap_or_else(|_| {
            PluginConfig::parse(br#"{"cniVersion":"1.1.0"}"#, Command::Version)
                .expect("built-in config parses")
        });
        return Ok(Invocation { env, config });
    }
    let config = PluginConfig::parse(stdin, env.command)?;
    Ok(Invocation { env, config })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// STATUS may only fail with 50 or 51.
fn status_error(e: CniError) -> CniError {
    if e.code == codes::NOT_AVAILABLE || e.code == 51 {
        e
    } else {
        CniError::new(
            codes::NOT_AVAILABLE,
            "plugin not available",
            format!("{}: {}", e.msg, e.details),
        )
    }
}

/// Serves one invocation with an open store (the node service calls this directly).
pub fn serve<S: Datastore>(ipam: &Ipam<S>, env: &BTreeMap<String, String>, stdin: &[u8]) -> Output {
    let version = reported_version(stdin);
    let inv = match parse(env, stdin) {
        Ok(i) => i,
        Err(e) => return Output::error(&e, &version),
    };
    match handler::handle(ipam, &inv, now_secs()) {
        Ok(out) => Output::ok(out),
        Err(e) if inv.env.command == Command::Status => Output::error(&status_error(e), &version),
        Err(e) => {
            tracing::warn!(command = ?inv.env.command, container = %inv.env.container_id, code = e.code, details = %e.details, "failed");
            Output::error(&e, &version)
        }
    }
}

/// The plugin's entry point: everything the binary does between reading its input and
/// printing its output.
pub fn run(env: &BTreeMap<String, String>, stdin: &[u8]) -> Output {
    let version = reported_version(stdin);
    let inv = match parse(env, stdin) {
        Ok(i) => i,
        Err(e) => return Output::error(&e, &version),
    };
    if inv.env.command == Command::Version {
        return Output::ok(Some(handler::version_json(&inv.config.cni_version)));
    }
    let Ok(text) = std::str::from_utf8(stdin) else {
        return Output::error(&CniError::decode("network config is not UTF-8"), &version);
    };
    let req = Request {
        version: protocol::VERSION,
        kind: Kind::Cni,
        env: env.clone(),
        stdin: text.to_string(),
        admin: None,
        store: Some(inv.config.datastore.identity()),
        endpoint: None,
    };
    let timeout = inv.config.lock_timeout + std::time::Duration::from_secs(5);
    match protocol::call(&inv.config.ipamd_socket, &req, timeout) {
        Ok(resp) if resp.error.is_none() => {
            crate::logging::record_served(&inv.config, &inv.env, resp.exit_code, &resp.stdout);
            return Output {
                stdout: resp.stdout,
                exit_code: resp.exit_code,
            };
        }
        Ok(resp) => {
            tracing::info!(error = ?resp.error, "node service declined; serving locally");
        }
        Err(CallError::NotRunning(_)) => {}
        Err(CallError::Untrusted(why)) => {
            crate::logging::init(&inv.config);
            tracing::warn!(reason = %why, "not using the node service");
        }
        Err(CallError::Failed(e)) => {
            let err = CniError::try_again(format!("the IPAM node service failed mid-request: {e}"));
            let err = if inv.env.command == Command::Status {
                status_error(err)
            } else {
                err
            };
            return Output::error(&err, &version);
        }
    }
    // Logging is set up only here: through the service, the service logs.
    crate::logging::init(&inv.config);
    let start = Instant::now();
    let opened = backend::host_lock(&inv.config).and_then(|lock| {
        let remaining = inv.config.lock_timeout.saturating_sub(start.elapsed());
        backend::open_store(&inv.config, remaining).map(|s| (lock, s))
    });
    match opened {
        Ok((_lock, store)) => {
            let ipam = Ipam::new(store, Arc::new(SystemClock));
            serve(&ipam, env, stdin)
        }
        Err(e) if inv.env.command == Command::Status => Output::error(&status_error(e), &version),
        Err(e) => Output::error(&e, &version),
    }
}
