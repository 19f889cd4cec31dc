//! The network configuration as written: serde types that say which keys exist and what JSON
//! type each has, nothing more. [`super::PluginConfig::try_from`] turns them into the
//! validated config (defaults, rules between keys, CIDRs and addresses parsed).
//!
//! Unknown keys are ignored: a network config carries the main plugin's keys too. Every
//! optional key accepts `null` as absent. A type error names the key's path.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The keys read at the top level of the network config and inside `ipam` (which wins).
#[derive(Debug, Default, Deserialize)]
pub struct Shared {
    pub nodename: Option<String>,
    pub nodename_file: Option<String>,
    pub ipam_lock_file: Option<String>,
    pub ipam_lock_timeout_seconds: Option<f64>,
    pub datastore_type: Option<String>,
    pub sled_path: Option<String>,
    pub etcd_endpoints: Option<String>,
    pub etcd_key_file: Option<String>,
    pub etcd_cert_file: Option<String>,
    pub etcd_ca_cert_file: Option<String>,
    pub etcd_prefix: Option<String>,
    pub log_file_path: Option<String>,
    pub log_level: Option<String>,
    pub ipamd_socket: Option<String>,
    pub ipamd_binary: Option<String>,
    pub gateway: Option<String>,
    pub result_prefix: Option<String>,
    pub reserve_first: Option<u32>,
    pub reserve_last: Option<u32>,
}

impl Shared {
    /// `ipam`'s value of each key where it has one, else the top level's. An empty string is
    /// no value (Calico's templates leave keys empty).
    pub fn merge(ipam: Shared, top: Shared) -> Shared {
        fn text(a: Option<String>, b: Option<String>) -> Option<String> {
            a.or(b).filter(|s| !s.is_empty())
        }
        Shared {
            nodename: text(ipam.nodename, top.nodename),
            nodename_file: text(ipam.nodename_file, top.nodename_file),
            ipam_lock_file: text(ipam.ipam_lock_file, top.ipam_lock_file),
            ipam_lock_timeout_seconds: ipam
                .ipam_lock_timeout_seconds
                .or(top.ipam_lock_timeout_seconds),
            datastore_type: text(ipam.datastore_type, top.datastore_type),
            sled_path: text(ipam.sled_path, top.sled_path),
            etcd_endpoints: text(ipam.etcd_endpoints, top.etcd_endpoints),
            etcd_key_file: text(ipam.etcd_key_file, top.etcd_key_file),
            etcd_cert_file: text(ipam.etcd_cert_file, top.etcd_cert_file),
            etcd_ca_cert_file: text(ipam.etcd_ca_cert_file, top.etcd_ca_cert_file),
            etcd_prefix: text(ipam.etcd_prefix, top.etcd_prefix),
            log_file_path: text(ipam.log_file_path, top.log_file_path),
            log_level: text(ipam.log_level, top.log_level),
            ipamd_socket: text(ipam.ipamd_socket, top.ipamd_socket),
            ipamd_binary: text(ipam.ipamd_binary, top.ipamd_binary),
            gateway: text(ipam.gateway, top.gateway),
            result_prefix: text(ipam.result_prefix, top.result_prefix),
            reserve_first: ipam.reserve_first.or(top.reserve_first),
            reserve_last: ipam.reserve_last.or(top.reserve_last),
        }
    }
}

/// The top level's own keys (`cniVersion` is read before, to know how to answer).
#[derive(Debug, Default, Deserialize)]
pub struct Top {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub main_type: Option<String>,
    #[serde(rename = "runtimeConfig")]
    pub runtime_config: Option<RuntimeConfig>,
    pub args: Option<Args>,
    #[serde(rename = "prevResult")]
    pub prev_result: Option<PrevResult>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The name the GC verb had before the spec settled on `cni.dev/valid-attachments`.
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<Attachment>>,
}

/// The `ipam` section's own keys.
#[derive(Debug, Default, Deserialize)]
pub struct Ipam {
    pub assign_ipv4: Option<CalicoBool>,
    pub assign_ipv6: Option<CalicoBool>,
    pub ipamd_autostart: Option<CalicoBool>,
    pub ipv4_pools: Option<Vec<String>>,
    pub ipv6_pools: Option<Vec<String>>,
    pub routes: Option<Vec<Route>>,
}

/// A route of `ipam.routes`.
#[derive(Debug, Deserialize)]
pub struct Route {
    pub dst: String,
    pub gw: Option<String>,
}

/// `runtimeConfig`: the runtime's per-attachment settings (only `ips` is ours).
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    pub ips: Option<Vec<String>>,
}

/// `args`: conventions passed in the config.
#[derive(Debug, Default, Deserialize)]
pub struct Args {
    pub cni: Option<RuntimeConfig>,
}

/// The previous plugin's result, of which CHECK compares the addresses.
#[derive(Debug, Default, Deserialize)]
pub struct PrevResult {
    pub ips: Option<Vec<PrevIp>>,
}

/// One address of `prevResult`.
#[derive(Debug, Deserialize)]
pub struct PrevIp {
    pub address: String,
}

/// One attachment GC must keep.
#[derive(Debug, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A boolean as Calico's configs write it: `true` or `"true"` (any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalicoBool(pub bool);

impl<'de> Deserialize<'de> for CalicoBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CalicoBool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true or false, as a boolean or a string")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<CalicoBool, E> {
                Ok(CalicoBool(b))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CalicoBool, E> {
                match s.to_ascii_lowercase().as_str() {
                    "true" => Ok(CalicoBool(true)),
                    "false" => Ok(CalicoBool(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads `T` from `v`, naming the failing key's path (under `at`) in the error.
pub fn read<'a, T: Deserialize<'a>>(v: &'a Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = match (at, path.as_str()) {
            ("", p) => p.to_string(),
            (a, ".") => a.to_string(),
            (a, p) => format!("{a}.{p}"),
        };
        format!("{path}: {}", e.into_inner())
    })
}
