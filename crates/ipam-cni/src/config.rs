//! The network configuration on stdin, parsed into a validated [`PluginConfig`].
//!
//! The `ipam` section holds Calico's keys (`assign_ipv4`, `assign_ipv6`, `ipv4_pools`,
//! `ipv6_pools`). The node and datastore keys (`nodename`, `nodename_file`, `ipam_lock_file`,
//! `datastore_type`, `sled_path`, `etcd_endpoints`, logging, the service socket) are read at the
//! top level of the network config and inside the `ipam` section, which wins. Every key is
//! documented in docs/cni-config.md.

use crate::env::Command;
use crate::error::CniError;
use ipam_core::{Family, PoolRef};
use ipam_store::{EtcdSpec, StoreSpec};
use ipnetwork::IpNetwork;
use rscni_types::version::SpecVersion;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Largest network config accepted on stdin (the node service's frame holds it with room).
pub const MAX_CONFIG: usize = 1 << 20;
/// Longest network name, as escaped in handle ids (see [`crate::owner`]).
pub const MAX_NETWORK_NAME: usize = 255;

/// Gateway handed back with each address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gateway {
    /// 169.254.1.1 for IPv4 and fe80::1 for IPv6, the link-local next hop Calico's pods use.
    LinkLocal,
    /// No gateway.
    None,
    /// This address, for every IPv4 (or IPv6) result.
    Fixed(IpAddr),
}

/// The prefix length returned with each address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultPrefix {
    /// The block's (/26 by default): pods of one block are on-link, as Calico returns it.
    Block,
    /// The pool's: the main plugin routes the whole pool (ptp: via the gateway on the host).
    Pool,
}

/// A route to return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop, if any.
    pub gw: Option<IpAddr>,
}

/// The validated configuration of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfig {
    /// `cniVersion` as written.
    pub cni_version: String,
    /// `cniVersion`, parsed.
    pub version: SpecVersion,
    /// Network name (part of every handle id).
    pub name: String,
    /// The main plugin's type (`bridge`, `ptp`, `calico`, ...).
    pub main_type: String,
    /// Assign an IPv4 address.
    pub assign_ipv4: bool,
    /// Assign an IPv6 address.
    pub assign_ipv6: bool,
    /// IPv4 pools (names or CIDRs); empty: every pool that selects the node.
    pub ipv4_pools: Vec<PoolRef>,
    /// IPv6 pools.
    pub ipv6_pools: Vec<PoolRef>,
    /// Explicit node name.
    pub nodename: Option<String>,
    /// File holding the node name.
    pub nodename_file: PathBuf,
    /// Host-wide lock taken when the plugin opens the store itself.
    pub ipam_lock_file: PathBuf,
    /// How long to wait for that lock (and for the store).
    pub lock_timeout: Duration,
    /// The datastore.
    pub datastore: StoreSpec,
    /// Log file; `None` logs to stderr only.
    pub log_file_path: Option<PathBuf>,
    /// Log level (`error`, `warn`, `info`, `debug`).
    pub log_level: String,
    /// The node service's socket.
    pub ipamd_socket: PathBuf,
    /// Start the node service when none answers (`ipamd_autostart`, default true).
    pub ipamd_autostart: bool,
    /// The service's binary (`ipamd_binary`); `None`: `calico-ipamd` in `CNI_PATH`.
    pub ipamd_binary: Option<PathBuf>,
    /// Gateway policy.
    pub gateway: Gateway,
    /// Prefix length policy.
    pub result_prefix: ResultPrefix,
    /// Addresses kept out of every block this node creates (first, last).
    pub reserve: (u32, u32),
    /// Routes to return.
    pub routes: Vec<RouteSpec>,
    /// Specific addresses from `runtimeConfig.ips` or `args.cni.ips`.
    pub requested_ips: Vec<IpAddr>,
    /// Addresses of `prevResult` (CHECK).
    pub prev_result_ips: Vec<IpAddr>,
    /// `cni.dev/valid-attachments` (or `cni.dev/attachments`): (container id, ifname).
    pub valid_attachments: Option<Vec<(String, String)>>,
}

/// Default paths, as Calico uses them.
pub mod defaults {
    /// Node name file.
    pub const NODENAME_FILE: &str = "/var/lib/calico/nodename";
    /// Host lock.
    pub const LOCK_FILE: &str = "/var/run/calico/ipam.lock";
    /// sled store.
    pub const SLED_PATH: &str = "/var/lib/calico-ipam/store";
    /// Log file.
    pub const LOG_FILE: &str = "/var/log/calico-ipam/cni.log";
    /// Node service socket.
    pub const SOCKET: &str = "/var/run/calico-ipam/ipamd.sock";
}

struct Keys<'a> {
    top: &'a Map<String, Value>,
    ipam: Option<&'a Map<String, Value>>,
}

impl<'a> Keys<'a> {
    /// The value of `k`: the ipam section wins over the top level.
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.ipam
            .and_then(|m| m.get(k))
            .or_else(|| self.top.get(k))
            .filter(|v| !v.is_null())
    }

    fn string(&self, k: &str) -> Result<Option<String>, CniError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(CniError::config(format!(
                "{k} must be a string, not {other}"
            ))),
        }
    }

    fn ipam_bool(&self, k: &str, default: bool) -> Result<bool, CniError> {
        match self.ipam.and_then(|m| m.get(k)) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(CniError::config(format!(
                    "ipam.{k} must be \"true\" or \"false\", not {s:?}"
                ))),
            },
            Some(other) => Err(CniError::config(format!(
                "ipam.{k} must be a boolean, not {other}"
            ))),
        }
    }

    fn ipam_strings(&self, k: &str) -> Result<Vec<String>, CniError> {
        match self.ipam.and_then(|m| m.get(k)) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    other => Err(CniError::config(format!(
                        "ipam.{k} entries must be non-empty strings, not {other}"
                    ))),
                })
                .collect(),
            Some(other) => Err(CniError::config(format!(
                "ipam.{k} must be a list, not {other}"
            ))),
        }
    }
}

fn ip_of(entry: &str, what: &str) -> Result<IpAddr, CniError> {
    let s = entry.split('/').next().unwrap_or(entry);
    s.parse()
        .map_err(|_| CniError::config(format!("{what}: {entry:?} is not an IP address")))
}

fn ips_of(v: Option<&Value>, what: &str) -> Result<Vec<IpAddr>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => ip_of(s, what),
                other => Err(CniError::config(format!("{what}: {other} is not a string"))),
            })
            .collect(),
        Some(other) => Err(CniError::config(format!(
            "{what} must be a list, not {other}"
        ))),
    }
}

/// Decodes the network configuration's JSON, refusing more than [`MAX_CONFIG`] bytes (code 7)
/// and what is not JSON (code 6).
pub fn decode_json(stdin: &[u8]) -> Result<Value, CniError> {
    if stdin.len() > MAX_CONFIG {
        return Err(CniError::config(format!(
            "the network config is {} bytes; at most {MAX_CONFIG} are accepted",
            stdin.len()
        )));
    }
    serde_json::from_slice(stdin)
        .map_err(|e| CniError::decode(format!("network config is not valid JSON: {e}")))
}

impl PluginConfig {
    /// Parses the network configuration for `command`. Errors: 6 when the bytes are not a JSON
    /// object or `cniVersion` is malformed, 1 for a version this plugin does not speak or that
    /// lacks the verb, 7 for any invalid key.
    pub fn parse(stdin: &[u8], command: Command) -> Result<PluginConfig, CniError> {
        PluginConfig::from_json(decode_json(stdin)?, command)
    }

    /// Like [`PluginConfig::parse`], from JSON already decoded by [`decode_json`] (so a call
    /// decodes its input once).
    pub fn from_json(v: Value, command: Command) -> Result<PluginConfig, CniError> {
        let Value::Object(top) = v else {
            return Err(CniError::decode("network config is not a JSON object"));
        };
        let cni_version = match top.get("cniVersion") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(other) => {
                return Err(CniError::decode(format!(
                    "cniVersion must be a string, not {other}"
                )))
            }
        };
        let version: SpecVersion = if cni_version.is_empty() {
            SpecVersion::new(0, 1, 0)
        } else {
            cni_version.parse().map_err(CniError::from)?
        };
        if !SUPPORTED_VERSIONS
            .iter()
            .any(|s| s.parse::<SpecVersion>().ok() == Some(version))
        {
            return Err(CniError::IncompatibleVersion(format!(
                "cniVersion {cni_version:?} is not supported; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        version.allows(command.as_rscni()).map_err(|_| {
            CniError::IncompatibleVersion(format!(
                "cniVersion {cni_version} does not have the {command:?} command"
            ))
        })?;
        let ipam = match top.get("ipam") {
            Some(Value::Object(m)) => Some(m),
            None | Some(Value::Null) => None,
            Some(other) => {
                return Err(CniError::config(format!(
                    "ipam must be an object, not {other}"
                )))
            }
        };
        let keys = Keys { top: &top, ipam };
        let name = match top.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ if matches!(command, Command::Version | Command::Status) => String::new(),
            _ => return Err(CniError::config("the network config has no \"name\"")),
        };
        if name.contains(char::is_whitespace) {
            return Err(CniError::config(format!(
                "network name {} must not contain whitespace",
                crate::env::shown(&name)
            )));
        }
        if crate::owner::escape_network(&name).len() > MAX_NETWORK_NAME {
            return Err(CniError::config(format!(
                "network name {} is too long: at most {MAX_NETWORK_NAME} bytes (a '.' or '%' counts 3)",
                crate::env::shown(&name)
            )));
        }
        let main_type = match top.get("type") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let assign_ipv4 = keys.ipam_bool("assign_ipv4", true)?;
        let ipamd_autostart = keys.ipam_bool("ipamd_autostart", true)?;
        let assign_ipv6 = keys.ipam_bool("assign_ipv6", false)?;
        let pool_refs = |key: &str| -> Result<Vec<PoolRef>, CniError> {
            Ok(keys
                .ipam_strings(key)?
                .into_iter()
                .map(PoolRef::from)
                .collect())
        };
        let ipv4_pools = pool_refs("ipv4_pools")?;
        let ipv6_pools = pool_refs("ipv6_pools")?;
        for (list, family, key) in [
            (&ipv4_pools, Family::V4, "ipv4_pools"),
            (&ipv6_pools, Family::V6, "ipv6_pools"),
        ] {
            for p in list {
                if let Some(net) = p.cidr() {
                    if Family::of_net(&net) != family {
                        return Err(CniError::config(format!(
                            "{key} holds {p}, which is not {family}"
                        )));
                    }
                }
            }
        }
        for (list, key) in [(&ipv4_pools, "ipv4_pools"), (&ipv6_pools, "ipv6_pools")] {
            let nets: Vec<IpNetwork> = list.iter().filter_map(PoolRef::cidr).collect();
            for (i, a) in nets.iter().enumerate() {
                for b in &nets[i + 1..] {
                    if ipam_core::cidr::overlaps(a, b) {
                        return Err(CniError::config(format!(
                            "{key} entries {a} and {b} overlap: a pool may not overlap another"
                        )));
                    }
                }
            }
        }
        let datastore = match keys.string("datastore_type")?.as_deref() {
            None | Some("sled") => StoreSpec::sled(PathBuf::from(
                keys.string("sled_path")?
                    .unwrap_or_else(|| defaults::SLED_PATH.into()),
            )),
            Some("etcdv3") => {
                let eps = keys.string("etcd_endpoints")?.ok_or_else(|| {
                    CniError::config("datastore_type etcdv3 needs etcd_endpoints")
                })?;
                StoreSpec::Etcd(EtcdSpec {
                    endpoints: eps.split(',').map(|s| s.trim().to_string()).collect(),
                    key_file: keys.string("etcd_key_file")?,
                    cert_file: keys.string("etcd_cert_file")?,
                    ca_cert_file: keys.string("etcd_ca_cert_file")?,
                    prefix: keys.string("etcd_prefix")?,
                })
            }
            Some(other) => {
                return Err(CniError::config(format!(
                    "datastore_type {other:?} is unknown: use \"sled\" or \"etcdv3\""
                )))
            }
        };
        let lock_timeout = match keys.get("ipam_lock_timeout_seconds") {
            None => Duration::from_secs(30),
            Some(Value::Number(n)) => Duration::from_secs_f64(
                n.as_f64()
                    .filter(|f| *f >= 0.0 && *f <= 3600.0)
                    .ok_or_else(|| CniError::config("ipam_lock_timeout_seconds must be 0..3600"))?,
            ),
            Some(other) => {
                return Err(CniError::config(format!(
                    "ipam_lock_timeout_seconds must be a number, not {other}"
                )))
            }
        };
        let log_file_path = match keys.string("log_file_path")?.as_deref() {
            None => Some(PathBuf::from(defaults::LOG_FILE)),
            Some("none") => None,
            Some(p) => Some(PathBuf::from(p)),
        };
        let log_level = keys
            .string("log_level")?
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase();
        if !["error", "warn", "warning", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(CniError::config(format!(
                "log_level {log_level:?} is not error, warn, info or debug"
            )));
        }
        let gateway = match keys.string("gateway")?.as_deref() {
            None if matches!(main_type.as_str(), "ptp" | "calico") => Gateway::LinkLocal,
            None | Some("none") => Gateway::None,
            Some("link-local") => Gateway::LinkLocal,
            Some(s) => Gateway::Fixed(ip_of(s, "gateway")?),
        };
        let result_prefix = match keys.string("result_prefix")?.as_deref() {
            None if main_type == "ptp" => ResultPrefix::Pool,
            None | Some("block") => ResultPrefix::Block,
            Some("pool") => ResultPrefix::Pool,
            Some(other) => {
                return Err(CniError::config(format!(
                    "result_prefix {other:?} must be \"block\" or \"pool\""
                )))
            }
        };
        // On a bridge, a block's prefix is on-link: its network and broadcast addresses must not
        // be pods, and the bridge takes the block's first host address when it is the gateway.
        let (def_first, def_last) = if main_type == "bridge" && result_prefix == ResultPrefix::Block
        {
            (2, 1)
        } else {
            (0, 0)
        };
        let count = |k: &str, d: u32| -> Result<u32, CniError> {
            match keys.get(k) {
                None => Ok(d),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .filter(|v| *v <= 1024)
                    .ok_or_else(|| CniError::config(format!("{k} must be 0..1024"))),
                Some(other) => Err(CniError::config(format!(
                    "{k} must be a number, not {other}"
                ))),
            }
        };
        let reserve = (
            count("reserve_first", def_first)?,
            count("reserve_last", def_last)?,
        );
        let routes = match ipam.and_then(|m| m.get("routes")) {
            // Only the calico main plugin installs the link-local next hop before the routes;
            // ptp and bridge add result routes while the gateway is not yet on-link.
            None | Some(Value::Null) if main_type == "calico" && gateway != Gateway::None => {
                let mut r = Vec::new();
                if assign_ipv4 {
                    r.push(RouteSpec {
                        dst: "0.0.0.0/0".parse().expect("valid"),
                        gw: None,
                    });
                }
                if assign_ipv6 {
                    r.push(RouteSpec {
                        dst: "::/0".parse().expect("valid"),
                        gw: None,
                    });
                }
                r
            }
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|r| {
                    let dst = r
                        .get("dst")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<IpNetwork>().ok())
                        .ok_or_else(|| {
                            CniError::config(format!("ipam.routes entry {r} needs a CIDR \"dst\""))
                        })?;
                    let gw = match r.get("gw") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) => Some(ip_of(s, "ipam.routes gw")?),
                        Some(other) => {
                            return Err(CniError::config(format!(
                                "route gw {other} is not a string"
                            )))
                        }
                    };
                    Ok(RouteSpec { dst, gw })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(CniError::config(format!(
                    "ipam.routes must be a list, not {other}"
                )))
            }
        };
        let mut requested_ips = ips_of(
            top.get("runtimeConfig").and_then(|r| r.get("ips")),
            "runtimeConfig.ips",
        )?;
        if requested_ips.is_empty() {
            requested_ips = ips_of(
                top.get("args")
                    .and_then(|a| a.get("cni"))
                    .and_then(|c| c.get("ips")),
                "args.cni.ips",
            )?;
        }
        let prev_result_ips = match top.get("prevResult").and_then(|p| p.get("ips")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|e| {
                    e.get("address")
                        .and_then(Value::as_str)
                        .ok_or_else(|| CniError::config("prevResult.ips entry without an address"))
                        .and_then(|s| ip_of(s, "prevResult address"))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(CniError::config(format!(
                    "prevResult.ips must be a list, not {other}"
                )))
            }
        };
        let attachments = top
            .get("cni.dev/valid-attachments")
            .or_else(|| top.get("cni.dev/attachments"));
        let valid_attachments = match attachments {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|e| {
                        let cid = e.get("containerID").and_then(Value::as_str);
                        let ifn = e.get("ifname").and_then(Value::as_str);
                        match (cid, ifn) {
                            (Some(c), Some(i)) => Ok((c.to_string(), i.to_string())),
                            _ => Err(CniError::config(format!(
                                "valid attachment {e} needs \"containerID\" and \"ifname\""
                            ))),
                        }
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(CniError::config(format!(
                    "cni.dev/valid-attachments must be a list, not {other}"
                )))
            }
        };
        Ok(PluginConfig {
            cni_version,
            version,
            name,
            main_type,
            assign_ipv4,
            assign_ipv6,
            ipv4_pools,
            ipv6_pools,
            nodename: keys.string("nodename")?,
            nodename_file: PathBuf::from(
                keys.string("nodename_file")?
                    .unwrap_or_else(|| defaults::NODENAME_FILE.into()),
            ),
            ipam_lock_file: PathBuf::from(
                keys.string("ipam_lock_file")?
                    .unwrap_or_else(|| defaults::LOCK_FILE.into()),
            ),
            lock_timeout,
            datastore,
            log_file_path,
            log_level,
            ipamd_socket: PathBuf::from(
                keys.string("ipamd_socket")?
                    .unwrap_or_else(|| defaults::SOCKET.into()),
            ),
            ipamd_autostart,
            ipamd_binary: keys.string("ipamd_binary")?.map(PathBuf::from),
            gateway,
            result_prefix,
            reserve,
            routes,
            requested_ips,
            prev_result_ips,
            valid_attachments,
        })
    }

    /// Parses a network config file as an operator has it: a single network config, or a
    /// conflist (`plugins: [...]`), whose plugin with an `ipam` section of type
    /// `calico-ipam` (else the first with any `ipam` section) is read with the list's `name`
    /// and `cniVersion`.
    pub fn parse_file(bytes: &[u8]) -> Result<PluginConfig, CniError> {
        let v = decode_json(bytes)?;
        let Some(plugins) = v.get("plugins") else {
            return PluginConfig::from_json(v, Command::Version);
        };
        let plugins = plugins
            .as_array()
            .ok_or_else(|| CniError::config("the conflist's \"plugins\" is not a list"))?;
        let with_ipam = |calico: bool| {
            plugins.iter().find(|p| {
                p.get("ipam").is_some_and(|i| {
                    i.is_object() && (!calico || i.get("type") == Some(&Value::from("calico-ipam")))
                })
            })
        };
        let plugin = with_ipam(true)
            .or_else(|| with_ipam(false))
            .and_then(Value::as_object)
            .ok_or_else(|| CniError::config("no plugin of the conflist has an \"ipam\" section"))?;
        let mut one = plugin.clone();
        for k in ["name", "cniVersion"] {
            if let Some(x) = v.get(k) {
                one.insert(k.to_string(), x.clone());
            }
        }
        PluginConfig::from_json(Value::Object(one), Command::Version)
    }

    /// The handle id of an attachment: `<network name>.<container id>`, the network name
    /// escaped as [`crate::owner`] says.
    pub fn handle_id(&self, container_id: &str) -> String {
        crate::owner::handle_id(&self.name, container_id)
    }

    /// The node name: explicit, else the node name file, else the host name.
    pub fn node_name(&self) -> Result<String, CniError> {
        if let Some(n) = &self.nodename {
            return Ok(n.clone());
        }
        if let Ok(s) = std::fs::read_to_string(&self.nodename_file) {
            let s = s.trim();
            if !s.is_empty() {
                return Ok(s.to_string());
            }
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CniError::config("no node name: set nodename or nodename_file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, cmd: Command) -> Result<PluginConfig, CniError> {
        PluginConfig::parse(json.as_bytes(), cmd)
    }

    #[test]
    fn calico_style_ipam_section() {
        let c = parse(
            r#"{"cniVersion":"0.3.1","name":"k8s-pod-network","type":"calico",
                "nodename":"top","datastore_type":"sled",
                "ipam":{"type":"calico-ipam","assign_ipv4":"true","assign_ipv6":"false",
                        "ipv4_pools":["10.244.0.0/16","default-pool"],"nodename":"inner"}}"#,
            Command::Add,
        )
        .unwrap();
        assert!(c.assign_ipv4 && !c.assign_ipv6);
        let pools: Vec<&str> = c.ipv4_pools.iter().map(PoolRef::as_str).collect();
        assert_eq!(pools, ["10.244.0.0/16", "default-pool"]);
        assert_eq!(c.ipv4_pools[0].cidr(), "10.244.0.0/16".parse().ok());
        assert_eq!(c.ipv4_pools[1].cidr(), None);
        assert_eq!(c.nodename.as_deref(), Some("inner"), "ipam section wins");
        assert_eq!(c.gateway, Gateway::LinkLocal);
        assert_eq!(c.routes.len(), 1, "calico gets a default route");
        assert_eq!(c.result_prefix, ResultPrefix::Block);
        assert_eq!(c.handle_id("abc"), "k8s-pod-network.abc");
        assert_eq!(c.datastore, StoreSpec::sled(defaults::SLED_PATH));
    }

    #[test]
    fn booleans_and_bridge_defaults() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"bridge",
                "ipam":{"type":"calico-ipam","assign_ipv4":true,"assign_ipv6":true}}"#,
            Command::Add,
        )
        .unwrap();
        assert!(c.assign_ipv6);
        assert_eq!(c.gateway, Gateway::None);
        assert!(c.routes.is_empty());
        assert_eq!(c.result_prefix, ResultPrefix::Block);
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"ptp"}"#,
            Command::Add,
        )
        .unwrap();
        assert_eq!(
            (c.gateway.clone(), c.result_prefix),
            (Gateway::LinkLocal, ResultPrefix::Pool)
        );
        assert!(c.routes.is_empty(), "ptp routes the pool itself");
    }

    #[test]
    fn errors_have_the_right_codes() {
        assert_eq!(parse("{", Command::Add).unwrap_err().code(), 6);
        assert_eq!(parse("[]", Command::Add).unwrap_err().code(), 6);
        assert_eq!(
            parse(r#"{"cniVersion":"x.y","name":"n"}"#, Command::Add)
                .unwrap_err()
                .code(),
            6
        );
        assert_eq!(
            parse(r#"{"cniVersion":"0.2.0","name":"n"}"#, Command::Add)
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(
            parse(r#"{"cniVersion":"9.9.9","name":"n"}"#, Command::Add)
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(
            parse(r#"{"cniVersion":"0.3.1","name":"n"}"#, Command::Check)
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","name":"n"}"#, Command::Gc)
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.1.0"}"#, Command::Add)
                .unwrap_err()
                .code(),
            7
        );
        let e = parse(
            r#"{"cniVersion":"1.1.0","name":"n","ipam":{"assign_ipv4":"maybe"}}"#,
            Command::Add,
        )
        .unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.details().contains("assign_ipv4"));
        let e = parse(
            r#"{"cniVersion":"1.1.0","name":"n","ipam":{"ipv4_pools":["fd00::/64"]}}"#,
            Command::Add,
        )
        .unwrap_err();
        assert_eq!(e.code(), 7);
        let e = parse(
            r#"{"cniVersion":"1.1.0","name":"n","datastore_type":"zk"}"#,
            Command::Add,
        )
        .unwrap_err();
        assert!(e.details().contains("zk"));
    }

    #[test]
    fn specific_addresses_prev_result_and_attachments() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n",
                "runtimeConfig":{"ips":["10.244.1.7/24"]},
                "args":{"cni":{"ips":["10.244.9.9"]}},
                "prevResult":{"ips":[{"address":"10.244.1.7/26"}]},
                "cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
            Command::Add,
        )
        .unwrap();
        assert_eq!(c.requested_ips, ["10.244.1.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.prev_result_ips, ["10.244.1.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.valid_attachments,
            Some(vec![("c1".into(), "eth0".into())])
        );
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["10.244.9.9"]}},
                "cni.dev/valid-attachments":[]}"#,
            Command::Gc,
        )
        .unwrap();
        assert_eq!(c.requested_ips, ["10.244.9.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.valid_attachments, Some(vec![]));
    }
}
