//! One invocation from environment and stdin to stdout and exit code: through the node service
//! when its socket answers, otherwise in this process under the host lock.

use crate::autostart::Started;
use crate::backend;
use crate::config::{self, PluginConfig};
use crate::env::{CniEnv, Command};
use crate::error::{codes, CniError};
use crate::handler::{self, Invocation};
use crate::parsed::Parsed;
use crate::protocol::{self, CallError, Request};
use ipam_core::{Datastore, Ipam};
use ipam_store::SystemClock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The `cniVersion` errors go out under when the input names none (or cannot be read).
const DEFAULT_ERROR_VERSION: &str = "1.1.0";

/// The configurations this process's [`serve`] parsed (see [`crate::parsed`]).
static PARSED: std::sync::OnceLock<Parsed> = std::sync::OnceLock::new();

/// A call's input, its JSON decoded once: the invocation (or why there is none) and the
/// `cniVersion` to report errors under (the config's, when it can be read at all). With
/// `kept`, a configuration parsed before from the same bytes for the same command is taken
/// from there, and one that parses now is kept (VERSION excepted: its fallback to a built-in
/// configuration would report another version than the input's).
fn parse(
    env: &BTreeMap<String, String>,
    stdin: &[u8],
    kept: Option<&Parsed>,
) -> (Result<Invocation, CniError>, String) {
    let cni_env = CniEnv::from_map(env);
    let keeps = |e: &Result<CniEnv, CniError>| {
        kept.zip(e.as_ref().ok().map(|e| e.command))
            .filter(|(_, c)| *c != Command::Version)
    };
    if let Some((kept, command)) = keeps(&cni_env) {
        if let Some(config) = kept.get(command, stdin) {
            let version = Some(config.cni_version.clone()).filter(|v| !v.is_empty());
            return (
                cni_env.map(|env| Invocation { env, config }),
                version.unwrap_or_else(|| DEFAULT_ERROR_VERSION.to_string()),
            );
        }
    }
    let json = config::decode_json(stdin);
    let version_of = |v: &serde_json::Value| {
        v.get("cniVersion")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let version = match &json {
        Ok(v) => version_of(v),
        // Refused for its size, but its error still goes out under its own version.
        Err(_) if stdin.len() > config::MAX_CONFIG => serde_json::from_slice(stdin)
            .ok()
            .as_ref()
            .and_then(version_of),
        Err(_) => None,
    }
    .unwrap_or_else(|| DEFAULT_ERROR_VERSION.to_string());
    let keep = keeps(&cni_env);
    let inv = invocation(cni_env, json);
    if let (Some((kept, command)), Ok(i)) = (keep, &inv) {
        kept.put(command, stdin, &i.config);
    }
    (inv, version)
}

fn invocation(
    env: Result<CniEnv, CniError>,
    json: Result<serde_json::Value, CniError>,
) -> Result<Invocation, CniError> {
    let env = env?;
    if env.command == Command::Version {
        let config = json
            .and_then(|v| PluginConfig::from_json(v, Command::Version))
            .unwrap_or_else(|_| {
                PluginConfig::parse(br#"{"cniVersion":"1.1.0"}"#, Command::Version)
                    .expect("built-in config parses")
            });
        return Ok(Invocation { env, config });
    }
    let config = PluginConfig::from_json(json?, env.command)?;
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
    if matches!(
        e,
        CniError::NotAvailable { .. }
            | CniError::Plugin {
                code: codes::LIMITED_CONNECTIVITY,
                ..
            }
    ) {
        e
    } else {
        CniError::NotAvailable {
            what: String::from("plugin not available"),
            details: format!("{}: {}", e.msg(), e.details()),
        }
    }
}

/// Serves one invocation with an open store (the node service calls this directly).
pub fn serve<S: Datastore>(ipam: &Ipam<S>, env: &BTreeMap<String, String>, stdin: &[u8]) -> Output {
    let (inv, version) = parse(env, stdin, Some(PARSED.get_or_init(Parsed::default)));
    let inv = match inv {
        Ok(i) => i,
        Err(e) => return Output::error(&e, &version),
    };
    match handler::handle(ipam, &inv, now_secs()) {
        Ok(out) => Output::ok(out),
        Err(e) if inv.env.command == Command::Status => Output::error(&status_error(e), &version),
        Err(e) => {
            tracing::warn!(command = ?inv.env.command, container = %inv.env.container_id, code = e.code(), details = %e.details(), "failed");
            Output::error(&e, &version)
        }
    }
}

/// The plugin's entry point: everything the binary does between reading its input and
/// printing its output.
pub fn run(env: &BTreeMap<String, String>, stdin: &[u8]) -> Output {
    let (inv, version) = parse(env, stdin, None);
    let inv = match inv {
        Ok(i) => i,
        Err(e) => return Output::error(&e, &version),
    };
    if inv.env.command == Command::Version {
        return Output::ok(Some(handler::version_json(&inv.config.cni_version)));
    }
    let Ok(text) = std::str::from_utf8(stdin) else {
        return Output::error(&CniError::decode("network config is not UTF-8"), &version);
    };
    let req = Request::cni(
        env.clone(),
        text.to_string(),
        Some(inv.config.datastore.identity()),
    );
    let cfg = &inv.config;
    let timeout = cfg.lock_timeout + Duration::from_secs(5);
    let deadline = Instant::now() + cfg.lock_timeout;
    // While a started service is coming up (its start lock is held), calls wait for it
    // rather than take the store (which would only make it wait for them). One start per
    // call, and one more each time a service dies under it.
    let mut starting = false;
    let mut may_spawn = cfg.ipamd_autostart;
    let mut said_why = false;
    let mut lock_file = None;
    let mut pause = Duration::from_millis(1);
    loop {
        match protocol::call(&cfg.ipamd_socket, &req, timeout) {
            Ok(resp) if resp.error.is_none() => {
                crate::logging::record_served(cfg, &inv.env, resp.exit_code, &resp.stdout);
                return Output {
                    stdout: resp.stdout,
                    exit_code: resp.exit_code,
                };
            }
            Ok(resp) => {
                crate::logging::init(cfg);
                tracing::info!(error = ?resp.error, "node service declined; serving locally");
                return serve_locally(&inv, env, stdin, &version);
            }
            Err(CallError::Untrusted(why)) => {
                crate::logging::init(cfg);
                tracing::warn!(reason = %why, "not using the node service");
                return serve_locally(&inv, env, stdin, &version);
            }
            Err(CallError::NotRunning(_)) => {
                starting = false;
                if cfg.ipamd_autostart {
                    let cni_path = env.get("CNI_PATH").map(String::as_str);
                    match crate::autostart::start(cfg, cni_path, may_spawn) {
                        Started::Spawned(_) => {
                            may_spawn = false;
                            starting = true;
                        }
                        Started::InProgress => starting = true,
                        Started::Unavailable(why) if !said_why => {
                            said_why = true;
                            crate::logging::init(cfg);
                            tracing::debug!(reason = %why, "no node service started");
                        }
                        Started::Unavailable(_) => {}
                    }
                }
            }
            Err(CallError::Failed(e)) if is_timeout(&e) => {
                let err = CniError::try_again(format!("the IPAM node service did not answer: {e}"));
                return Output::error(&status_or(err, inv.env.command), &version);
            }
            // The service went away mid-request (killed or restarting). Every verb is
            // idempotent (an ADD finds what it may have committed), so ask again: the next
            // service, or this process once the lock is free.
            Err(CallError::Failed(_)) => may_spawn = cfg.ipamd_autostart,
        }
        if !starting {
            let file = match lock_file.take() {
                Some(f) => f,
                None => match backend::open_lock_file(&cfg.ipam_lock_file) {
                    Ok(f) => f,
                    Err(e) => return Output::error(&status_or(e, inv.env.command), &version),
                },
            };
            match backend::try_lock(file, "calico-ipam") {
                Ok(lock) => {
                    // A sled store is tried briefly: the service may hold it (starting, or
                    // about to answer), and then this call goes back to asking it.
                    let sled = matches!(cfg.datastore, ipam_store::StoreSpec::Sled { .. });
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let wait = if sled {
                        remaining.min(SLED_TRY)
                    } else {
                        remaining
                    };
                    match backend::open_store(cfg, wait) {
                        Ok(store) => {
                            crate::logging::init(cfg);
                            let _lock = lock;
                            return serve(&Ipam::new(store, Arc::new(SystemClock)), env, stdin);
                        }
                        Err(e)
                            if sled
                                && matches!(e, CniError::TryAgain(_))
                                && Instant::now() < deadline => {}
                        Err(e) => return Output::error(&status_or(e, inv.env.command), &version),
                    }
                }
                Err(f) => lock_file = Some(f),
            }
        }
        if Instant::now() >= deadline {
            let e = backend::lock_timeout_error(&cfg.ipam_lock_file, cfg.lock_timeout);
            return Output::error(&status_or(e, inv.env.command), &version);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn status_or(e: CniError, command: Command) -> CniError {
    if command == Command::Status {
        status_error(e)
    } else {
        e
    }
}

/// How long a call holding the host lock waits for a sled store before it asks the service
/// again.
const SLED_TRY: Duration = Duration::from_millis(50);

/// Serves the call in this process after taking the host lock (bounded by the lock timeout):
/// for a request the service declined or may not be trusted with.
fn serve_locally(
    inv: &Invocation,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
    version: &str,
) -> Output {
    // Logging is set up only here: through the service, the service logs.
    crate::logging::init(&inv.config);
    let start = Instant::now();
    let lock = backend::host_lock(&inv.config);
    let opened = lock.and_then(|lock| {
        let remaining = inv.config.lock_timeout.saturating_sub(start.elapsed());
        backend::open_store(&inv.config, remaining).map(|s| (lock, s))
    });
    match opened {
        Ok((_lock, store)) => {
            let ipam = Ipam::new(store, Arc::new(SystemClock));
            serve(&ipam, env, stdin)
        }
        Err(e) => Output::error(&status_or(e, inv.env.command), version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> BTreeMap<String, String> {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// What a parse gives, comparable: the configuration or the error's JSON, and the
    /// version errors go out under.
    fn shown(p: (Result<Invocation, CniError>, String)) -> (Result<PluginConfig, String>, String) {
        (p.0.map(|i| i.config).map_err(|e| e.to_json(&p.1)), p.1)
    }

    #[test]
    fn a_kept_configuration_is_what_parsing_it_again_gives() {
        let good = br#"{"cniVersion":"1.0.0","name":"kept-net","type":"bridge",
            "ipam":{"type":"calico-ipam","nodename":"n1","ipv4_pools":["10.244.0.0/16"]}}"#;
        let no_version = br#"{"name":"kept-net-2","ipam":{"type":"calico-ipam","nodename":"n1"}}"#;
        let no_name = br#"{"cniVersion":"1.0.0","ipam":{"type":"calico-ipam"}}"#;
        let bad_pool = br#"{"cniVersion":"0.4.0","name":"kept-net-3",
            "ipam":{"type":"calico-ipam","ipv4_pools":["fd00::/64"]}}"#;
        let kept = Parsed::default();
        for stdin in [&good[..], no_version, no_name, bad_pool, b"{not json"] {
            for command in ["ADD", "DEL", "CHECK", "STATUS", "VERSION"] {
                let e = env(command);
                let fresh = shown(parse(&e, stdin, None));
                // The first call parses (and keeps what parsed); the second may take it.
                assert_eq!(shown(parse(&e, stdin, Some(&kept))), fresh, "{command}");
                assert_eq!(
                    shown(parse(&e, stdin, Some(&kept))),
                    fresh,
                    "{command}, again"
                );
            }
        }
        let parsed = &kept;
        assert!(parsed.get(Command::Add, good).is_some());
        assert!(
            parsed.get(Command::Add, no_name).is_none(),
            "a refused one is not kept"
        );
    }
}
