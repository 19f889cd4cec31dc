//! The network configuration on stdin, parsed into a validated [`PluginConfig`].
//!
//! The `ipam` section holds Calico's keys (`assign_ipv4`, `assign_ipv6`, `ipv4_pools`,
//! `ipv6_pools`). The node and datastore keys (`nodename`, `nodename_file`, `ipam_lock_file`,
//! `datastore_type`, `sled_path`, `etcd_endpoints`, logging, the service socket) are read at the
//! top level of the network config and inside the `ipam` section, which wins. Every key is
//! documented in docs/cni-config.md.
//!
//! Two steps: serde reads the keys into the types of [`raw`] (which keys exist, of what JSON
//! type, with the failing key's path in the error), then `PluginConfig::try_from` applies defaults and the
//! rules between keys and parses addresses and CIDRs. The JSON is decoded once per call.

use crate::env::Command;
use crate::error::CniError;
use ipam_core::{Family, PoolRef};
use ipam_store::{EtcdSpec, StoreSpec};
use ipnetwork::IpNetwork;
use rscni_types::version::SpecVersion;
use serde_json::Value;

mod raw;

/// The keys as written, read from the JSON by serde (see [`raw`]), with the version the call
/// speaks; `PluginConfig::try_from` validates it.
pub struct RawConfig {
    cni_version: String,
    version: SpecVersion,
    command: Command,
    top: raw::Top,
    shared_top: raw::Shared,
    ipam: raw::Ipam,
    shared_ipam: raw::Shared,
}
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

fn ip_of(entry: &str, what: &str) -> Result<IpAddr, CniError> {
    let s = entry.split('/').next().unwrap_or(entry);
    s.parse()
        .map_err(|_| CniError::config(format!("{what}: {entry:?} is not an IP address")))
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
        let Value::Object(top) = &v else {
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
        let ipam_value = match top.get("ipam") {
            Some(v @ Value::Object(_)) => Some(v),
            None | Some(Value::Null) => None,
            Some(other) => {
                return Err(CniError::config(format!(
                    "ipam must be an object, not {other}"
                )))
            }
        };
        let whole = &v;
        let raw = RawConfig {
            cni_version,
            version,
            command,
            top: raw::read(whole, "").map_err(CniError::config)?,
            shared_top: raw::read(whole, "").map_err(CniError::config)?,
            ipam: ipam_value
                .map(|v| raw::read(v, "ipam"))
                .transpose()
                .map_err(CniError::config)?
                .unwrap_or_default(),
            shared_ipam: ipam_value
                .map(|v| raw::read(v, "ipam"))
                .transpose()
                .map_err(CniError::config)?
                .unwrap_or_default(),
        };
        PluginConfig::try_from(raw)
    }
}

impl TryFrom<RawConfig> for PluginConfig {
    type Error = CniError;

    /// Defaults, the rules between keys, addresses and CIDRs parsed.
    fn try_from(raw: RawConfig) -> Result<PluginConfig, CniError> {
        let RawConfig {
            cni_version,
            version,
            command,
            top,
            shared_top,
            ipam,
            shared_ipam,
        } = raw;
        let keys = raw::Shared::merge(shared_ipam, shared_top);
        let name = match top.name {
            Some(s) if !s.is_empty() => s,
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
        let main_type = top.main_type.unwrap_or_default();
        let flag = |b: Option<raw::CalicoBool>, default: bool| b.map_or(default, |b| b.0);
        let assign_ipv4 = flag(ipam.assign_ipv4, true);
        let assign_ipv6 = flag(ipam.assign_ipv6, false);
        let ipamd_autostart = flag(ipam.ipamd_autostart, true);
        let pool_refs = |list: Option<Vec<String>>, key: &str| -> Result<Vec<PoolRef>, CniError> {
            list.unwrap_or_default()
                .into_iter()
                .map(|s| {
                    if s.is_empty() {
                        Err(CniError::config(format!(
                            "ipam.{key} entries must be non-empty strings"
                        )))
                    } else {
                        Ok(PoolRef::from(s))
                    }
                })
                .collect()
        };
        let ipv4_pools = pool_refs(ipam.ipv4_pools, "ipv4_pools")?;
        let ipv6_pools = pool_refs(ipam.ipv6_pools, "ipv6_pools")?;
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
        let datastore = match keys.datastore_type.as_deref() {
            None | Some("sled") => StoreSpec::sled(PathBuf::from(
                keys.sled_path.unwrap_or_else(|| defaults::SLED_PATH.into()),
            )),
            Some("etcdv3") => {
                let eps = keys.etcd_endpoints.ok_or_else(|| {
                    CniError::config("datastore_type etcdv3 needs etcd_endpoints")
                })?;
                StoreSpec::Etcd(EtcdSpec {
                    endpoints: eps.split(',').map(|s| s.trim().to_string()).collect(),
                    key_file: keys.etcd_key_file,
                    cert_file: keys.etcd_cert_file,
                    ca_cert_file: keys.etcd_ca_cert_file,
                    prefix: keys.etcd_prefix,
                })
            }
            Some(other) => {
                return Err(CniError::config(format!(
                    "datastore_type {other:?} is unknown: use \"sled\" or \"etcdv3\""
                )))
            }
        };
        let lock_timeout = match keys.ipam_lock_timeout_seconds {
            None => Duration::from_secs(30),
            Some(f) if (0.0..=3600.0).contains(&f) => Duration::from_secs_f64(f),
            Some(_) => {
                return Err(CniError::config(
                    "ipam_lock_timeout_seconds must be 0..3600",
                ))
            }
        };
        let log_file_path = match keys.log_file_path.as_deref() {
            None => Some(PathBuf::from(defaults::LOG_FILE)),
            Some("none") => None,
            Some(p) => Some(PathBuf::from(p)),
        };
        let log_level = keys
            .log_level
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase();
        if !["error", "warn", "warning", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(CniError::config(format!(
                "log_level {log_level:?} is not error, warn, info or debug"
            )));
        }
        let gateway = match keys.gateway.as_deref() {
            None if matches!(main_type.as_str(), "ptp" | "calico") => Gateway::LinkLocal,
            None | Some("none") => Gateway::None,
            Some("link-local") => Gateway::LinkLocal,
            Some(s) => Gateway::Fixed(ip_of(s, "gateway")?),
        };
        let result_prefix = match keys.result_prefix.as_deref() {
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
        let count = |v: Option<u32>, k: &str, d: u32| match v {
            None => Ok(d),
            Some(n) if n <= 1024 => Ok(n),
            Some(_) => Err(CniError::config(format!("{k} must be 0..1024"))),
        };
        let reserve = (
            count(keys.reserve_first, "reserve_first", def_first)?,
            count(keys.reserve_last, "reserve_last", def_last)?,
        );
        let routes = match ipam.routes {
            // Only the calico main plugin installs the link-local next hop before the routes;
            // ptp and bridge add result routes while the gateway is not yet on-link.
            None if main_type == "calico" && gateway != Gateway::None => {
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
            None => Vec::new(),
            Some(list) => list
                .into_iter()
                .map(|r| {
                    let dst = r.dst.parse::<IpNetwork>().map_err(|_| {
                        CniError::config(format!("ipam.routes dst {:?} is not a CIDR", r.dst))
                    })?;
                    let gw = r.gw.map(|g| ip_of(&g, "ipam.routes gw")).transpose()?;
                    Ok(RouteSpec { dst, gw })
                })
                .collect::<Result<_, CniError>>()?,
        };
        let ips = |list: Option<Vec<String>>, what: &str| -> Result<Vec<IpAddr>, CniError> {
            list.unwrap_or_default()
                .iter()
                .map(|s| ip_of(s, what))
                .collect()
        };
        let mut requested_ips = ips(top.runtime_config.and_then(|r| r.ips), "runtimeConfig.ips")?;
        if requested_ips.is_empty() {
            requested_ips = ips(
                top.args.and_then(|a| a.cni).and_then(|c| c.ips),
                "args.cni.ips",
            )?;
        }
        let prev_result_ips = top
            .prev_result
            .and_then(|p| p.ips)
            .unwrap_or_default()
            .iter()
            .map(|e| ip_of(&e.address, "prevResult address"))
            .collect::<Result<_, _>>()?;
        let valid_attachments = top.valid_attachments.or(top.attachments).map(|list| {
            list.into_iter()
                .map(|a| (a.container_id, a.ifname))
                .collect()
        });
        Ok(PluginConfig {
            cni_version,
            version,
            name,
            main_type,
            assign_ipv4,
            assign_ipv6,
            ipv4_pools,
            ipv6_pools,
            nodename: keys.nodename,
            nodename_file: PathBuf::from(
                keys.nodename_file
                    .unwrap_or_else(|| defaults::NODENAME_FILE.into()),
            ),
            ipam_lock_file: PathBuf::from(
                keys.ipam_lock_file
                    .unwrap_or_else(|| defaults::LOCK_FILE.into()),
            ),
            lock_timeout,
            datastore,
            log_file_path,
            log_level,
            ipamd_socket: PathBuf::from(
                keys.ipamd_socket.unwrap_or_else(|| defaults::SOCKET.into()),
            ),
            ipamd_autostart,
            ipamd_binary: keys.ipamd_binary.map(PathBuf::from),
            gateway,
            result_prefix,
            reserve,
            routes,
            requested_ips,
            prev_result_ips,
            valid_attachments,
        })
    }
}

impl PluginConfig {
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
        .expect("a valid literal");
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
        .expect("a valid literal");
        assert!(c.assign_ipv6);
        assert_eq!(c.gateway, Gateway::None);
        assert!(c.routes.is_empty());
        assert_eq!(c.result_prefix, ResultPrefix::Block);
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"ptp"}"#,
            Command::Add,
        )
        .expect("a valid literal");
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
    fn type_errors_name_the_key_and_keys_at_either_level() {
        let details = |json: &str| {
            let e = parse(json, Command::Add).unwrap_err();
            assert_eq!(e.code(), 7, "{json}: {}", e.details());
            e.details().to_string()
        };
        let d =
            details(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"routes":[{"gw":"1.2.3.4"}]}}"#);
        assert!(d.starts_with("ipam.routes[0]") && d.contains("dst"), "{d}");
        let d = details(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"reserve_first":"2"}}"#);
        assert!(d.starts_with("ipam.reserve_first:"), "{d}");
        let d = details(r#"{"cniVersion":"1.0.0","name":"n","sled_path":7}"#);
        assert!(d.starts_with("sled_path:"), "{d}");
        let d = details(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"assign_ipv6":"yes"}}"#);
        assert!(
            d.starts_with("ipam.assign_ipv6:") && d.contains("yes"),
            "{d}"
        );
        let d = details(r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":[1]}}"#);
        assert!(d.starts_with("runtimeConfig.ips[0]:"), "{d}");
        let d = details(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"reserve_last":2000}}"#);
        assert!(d.contains("reserve_last must be 0..1024"), "{d}");
        // The ipam section wins, an empty string is no value, Calico's string booleans count.
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","sled_path":"/top","log_level":"debug",
                "reserve_first":3,
                "ipam":{"sled_path":"/inner","log_level":"","assign_ipv4":"FALSE",
                        "assign_ipv6":true,"ipamd_autostart":null}}"#,
            Command::Add,
        )
        .expect("a valid literal");
        assert_eq!(c.datastore, StoreSpec::sled("/inner"));
        assert_eq!(c.log_level, "info", "an empty inner value is no value");
        assert_eq!(c.reserve, (3, 0));
        assert!(!c.assign_ipv4 && c.assign_ipv6 && c.ipamd_autostart);
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
        .expect("a valid literal");
        assert_eq!(
            c.requested_ips,
            ["10.244.1.7".parse::<IpAddr>().expect("a valid literal")]
        );
        assert_eq!(
            c.prev_result_ips,
            ["10.244.1.7".parse::<IpAddr>().expect("a valid literal")]
        );
        assert_eq!(
            c.valid_attachments,
            Some(vec![("c1".into(), "eth0".into())])
        );
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["10.244.9.9"]}},
                "cni.dev/valid-attachments":[]}"#,
            Command::Gc,
        )
        .expect("a valid literal");
        assert_eq!(
            c.requested_ips,
            ["10.244.9.9".parse::<IpAddr>().expect("a valid literal")]
        );
        assert_eq!(c.valid_attachments, Some(vec![]));
    }
}
