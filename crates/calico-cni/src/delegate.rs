//! Delegation to the IPAM plugin, the CNI way: find `ipam.type` in the `CNI_PATH`
//! directories, exec it with this invocation's environment (with `CNI_COMMAND` set to the verb)
//! and the same network config on stdin, and read its result or error.

use ipam_cni::error::CniError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One address the IPAM plugin assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamAddress {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length the IPAM plugin returned (kept in the result; the pod gets /32, /128).
    pub prefix: u8,
}

/// Finds `plugin` in the colon-separated `cni_path`.
pub fn find(plugin: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    if cni_path.is_empty() {
        return Err(CniError::missing_env(&["CNI_PATH"]));
    }
    cni_path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::Config(format!(
                "no IPAM plugin {plugin:?} in CNI_PATH {cni_path:?}"
            ))
        })
}

/// Runs `plugin` for `verb` with `env` and `stdin`. Success: its stdout. Failure: its error,
/// with the code it gave.
pub fn exec(
    plugin: &str,
    verb: &str,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
) -> Result<String, CniError> {
    let path = find(plugin, env.get("CNI_PATH").map_or("", String::as_str))?;
    let mut child = Command::new(&path)
        .env_clear()
        .envs(env.iter().filter(|(k, _)| *k != "CNI_COMMAND"))
        .env("CNI_COMMAND", verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::io(
                "cannot run the IPAM plugin",
                format!("{}: {e}", path.display()),
            )
        })?;
    if let Some(mut i) = child.stdin.take() {
        // A plugin that exits without reading its input is judged by its exit status.
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::io(
            "cannot run the IPAM plugin",
            format!("{}: {e}", path.display()),
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    // The plugin's own error JSON, passed on with its code; anything else is an I/O failure.
    Err(serde_json::from_str::<Value>(&stdout)
        .ok()
        .and_then(|v| {
            Some(CniError::from_wire(
                u32::try_from(v.get("code")?.as_u64()?).ok()?,
                v.get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("IPAM plugin failed")
                    .to_string(),
                v.get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .unwrap_or_else(|| {
            CniError::io(
                "IPAM plugin failed",
                format!(
                    "{} {verb} exited with {}: {}",
                    path.display(),
                    out.status,
                    stdout.chars().take(300).collect::<String>()
                ),
            )
        }))
}

/// The addresses of an IPAM ADD result (any version from 0.3.0 on).
pub fn addresses(result: &str) -> Result<Vec<IpamAddress>, CniError> {
    let v: Value = serde_json::from_str(result)
        .map_err(|e| CniError::decode(format!("IPAM result is not JSON: {e}")))?;
    let ips = v
        .get("ips")
        .and_then(Value::as_array)
        .ok_or_else(|| CniError::decode("IPAM result has no \"ips\""))?;
    let out: Vec<IpamAddress> = ips
        .iter()
        .map(|i| {
            let a = i
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| CniError::decode("IPAM result entry without an address"))?;
            let net: ipnetwork::IpNetwork = a
                .parse()
                .map_err(|_| CniError::decode(format!("IPAM address {a:?} is not a CIDR")))?;
            Ok(IpamAddress {
                ip: net.ip(),
                prefix: net.prefix(),
            })
        })
        .collect::<Result<_, CniError>>()?;
    if out.is_empty() {
        return Err(CniError::Exhausted(String::from(
            "the IPAM plugin returned no address",
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_every_version_give_their_addresses() {
        let v1 =
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/26"},{"address":"fd00::5/122"}]}"#;
        let a = addresses(v1).expect("addresses succeeds");
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].ip.to_string(), "10.0.0.5");
        assert_eq!(a[1].prefix, 122);
        let v03 = r#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.6/16","gateway":"10.0.0.1"}]}"#;
        assert_eq!(addresses(v03).expect("addresses succeeds")[0].prefix, 16);
        assert_eq!(addresses(r#"{"ips":[]}"#).unwrap_err().code(), 100);
        assert_eq!(addresses("nope").unwrap_err().code(), 6);
    }

    #[test]
    fn a_missing_plugin_is_named() {
        let e = find("no-such-ipam", "/nonexistent:/also-not").unwrap_err();
        assert!(e.details().contains("no-such-ipam"), "{e}");
        assert_eq!(find("x", "").unwrap_err().code(), 4);
    }
}
