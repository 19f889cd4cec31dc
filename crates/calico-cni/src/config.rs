//! The main plugin's network configuration: the keys it reads itself (`mtu`, `ipam.type`,
//! `dns`), and, through `ipam-cni`'s parser, where the datastore and the node service are, so
//! endpoint records land in the same store as the addresses.

use ipam_cni::config::PluginConfig;
use ipam_cni::env::Command;
use ipam_cni::error::CniError;
use serde_json::Value;

/// Default MTU of the pod's interface and the host end.
pub const DEFAULT_MTU: u32 = 1500;

/// The validated configuration of one invocation.
#[derive(Clone, Debug)]
pub struct MainConfig {
    /// `cniVersion` as written.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// MTU of both veth ends (68..=65535).
    pub mtu: u32,
    /// The IPAM plugin to delegate to (`ipam.type`).
    pub ipam_type: String,
    /// `dns`, returned as given.
    pub dns: Option<Value>,
    /// Store, node and service settings (read as `calico-ipam` reads them).
    pub store: PluginConfig,
}

impl MainConfig {
    /// Parses stdin for `command`: the IPAM plugin's parser first (versions, name, datastore),
    /// then the main plugin's own keys; errors are code 7 (or the parser's own codes).
    pub fn parse(stdin: &[u8], command: Command) -> Result<MainConfig, CniError> {
        let store = PluginConfig::parse(stdin, command)?;
        let v: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::decode(format!("network config is not valid JSON: {e}")))?;
        let mtu = match v.get("mtu") {
            None | Some(Value::Null) => DEFAULT_MTU,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (68..=65_535).contains(m))
                .ok_or_else(|| CniError::config(format!("mtu {n} is not 68..65535")))?,
            Some(other) => {
                return Err(CniError::config(format!(
                    "mtu must be a number, not {other}"
                )))
            }
        };
        let ipam_type = match v.get("ipam").and_then(|i| i.get("type")) {
            Some(Value::String(t)) if valid_plugin_name(t) => t.clone(),
            Some(Value::String(t)) => {
                return Err(CniError::config(format!(
                    "ipam.type {t:?} is not a plugin name"
                )))
            }
            _ if matches!(command, Command::Version) => String::new(),
            _ => return Err(CniError::config("the network config has no ipam.type")),
        };
        Ok(MainConfig {
            cni_version: store.cni_version.clone(),
            name: store.name.clone(),
            mtu,
            ipam_type,
            dns: v.get("dns").filter(|d| d.is_object()).cloned(),
            store,
        })
    }
}

/// A plugin name may not reach outside the CNI_PATH directories.
fn valid_plugin_name(t: &str) -> bool {
    !t.is_empty()
        && t != "."
        && t != ".."
        && t.len() <= 255
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_errors() {
        let c = MainConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico","mtu":1450,
                "ipam":{"type":"calico-ipam"}}"#,
            Command::Add,
        )
        .expect("a valid literal");
        assert_eq!((c.mtu, c.ipam_type.as_str()), (1450, "calico-ipam"));
        let c = MainConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"type":"host-local"}}"#,
            Command::Add,
        )
        .expect("a valid literal");
        assert_eq!(c.mtu, DEFAULT_MTU);
        for bad in [
            r#"{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"type":"../x"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"calico","mtu":9,"ipam":{"type":"x"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"calico","mtu":"big","ipam":{"type":"x"}}"#,
        ] {
            let e = MainConfig::parse(bad.as_bytes(), Command::Add).unwrap_err();
            assert_eq!(e.code(), 7, "{bad}: {e}");
        }
    }
}
