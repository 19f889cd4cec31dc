//! The ADD result, in the shape of the configuration's `cniVersion`.
//!
//! Each address is returned with its block's prefix length (/26 by default), as Calico does:
//! pods of one block are on-link to each other, and a main plugin gets a prefix shorter than
//! /32 that it can configure. The gateway and routes depend on the main plugin (see
//! [`crate::config::Gateway`] and docs/cni-config.md): `ptp` and `calico` get the link-local
//! next hop 169.254.1.1 with a default route, `bridge` gets neither, unless the config says
//! otherwise.

use crate::config::{Gateway, PluginConfig};
use ipam_core::{AssignedIp, Family};
use rscni_types::ipnet::IpNet;
use rscni_types::types::{CNIResult, CNIResultWithVersion, IpConfig, Route};
use std::net::IpAddr;

/// The IPv4 link-local next hop.
pub const LINK_LOCAL_V4: &str = "169.254.1.1";
/// The IPv6 link-local next hop.
pub const LINK_LOCAL_V6: &str = "fe80::1";

fn gateway_for(cfg: &PluginConfig, family: Family) -> Option<IpAddr> {
    match (&cfg.gateway, family) {
        (Gateway::None, _) => None,
        (Gateway::LinkLocal, Family::V4) => LINK_LOCAL_V4.parse().ok(),
        (Gateway::LinkLocal, Family::V6) => LINK_LOCAL_V6.parse().ok(),
        (Gateway::Fixed(ip), f) => (Family::of(*ip) == f).then_some(*ip),
    }
}

/// Builds the result for the assigned addresses.
pub fn build(cfg: &PluginConfig, ips: &[AssignedIp]) -> CNIResult {
    let ips: Vec<IpConfig> = ips
        .iter()
        .map(|a| IpConfig {
            interface: None,
            address: IpNet::new(a.ip, a.block.prefix()).expect("block prefix fits the family"),
            gateway: gateway_for(cfg, Family::of(a.ip)),
        })
        .collect();
    let routes = cfg
        .routes
        .iter()
        .map(|r| Route {
            dst: IpNet::new(r.dst.network(), r.dst.prefix()).expect("valid prefix"),
            gw: r.gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        })
        .collect();
    CNIResult {
        interfaces: Vec::new(),
        ips,
        routes,
        dns: None,
    }
}

/// The result as JSON in the shape of `cfg`'s version (0.3.x/0.4.0 add `"version"` to each
/// address).
pub fn to_json(cfg: &PluginConfig, result: CNIResult) -> String {
    let out = if cfg.version.is_legacy() {
        serde_json::to_string(&rscni_types::legacy::CNIResult::new(cfg.version, result))
    } else {
        serde_json::to_string(&CNIResultWithVersion::new(cfg.version, result))
    };
    out.expect("results always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Command;
    use serde_json::Value;

    fn cfg(version: &str, main: &str) -> PluginConfig {
        PluginConfig::parse(
            format!(r#"{{"cniVersion":"{version}","name":"n","type":"{main}","ipam":{{"assign_ipv6":"true"}}}}"#)
                .as_bytes(),
            Command::Add,
        )
        .unwrap()
    }

    fn ips() -> Vec<AssignedIp> {
        vec![
            AssignedIp {
                ip: "10.244.3.7".parse().unwrap(),
                block: "10.244.3.0/26".parse().unwrap(),
                seq: 1,
            },
            AssignedIp {
                ip: "fd00::47".parse().unwrap(),
                block: "fd00::40/122".parse().unwrap(),
                seq: 1,
            },
        ]
    }

    #[test]
    fn every_version_has_its_shape() {
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let c = cfg(v, "ptp");
            let j: Value = serde_json::from_str(&to_json(&c, build(&c, &ips()))).unwrap();
            assert_eq!(j["cniVersion"], v);
            assert_eq!(j["ips"][0]["address"], "10.244.3.7/26");
            assert_eq!(j["ips"][0]["gateway"], "169.254.1.1");
            assert_eq!(j["ips"][1]["address"], "fd00::47/122");
            assert_eq!(j["ips"][1]["gateway"], "fe80::1");
            assert!(j.get("interfaces").is_none());
            assert!(j["ips"][0].get("interface").is_none());
            let legacy = v.starts_with("0.");
            assert_eq!(j["ips"][0].get("version").is_some(), legacy, "{v}: {j}");
            if legacy {
                assert_eq!(j["ips"][0]["version"], "4");
                assert_eq!(j["ips"][1]["version"], "6");
            }
            assert_eq!(j["routes"][0]["dst"], "0.0.0.0/0");
            assert_eq!(j["routes"][1]["dst"], "::/0");
        }
    }

    #[test]
    fn bridge_gets_no_gateway_or_routes() {
        let c = cfg("1.0.0", "bridge");
        let j: Value = serde_json::from_str(&to_json(&c, build(&c, &ips()))).unwrap();
        assert!(j["ips"][0].get("gateway").is_none());
        assert!(j.get("routes").is_none());
    }
}
