//! The ADD result, in the shape of the configuration's `cniVersion`.
//!
//! What each main plugin gets by default (docs/cni-config.md has the reasoning):
//! - `calico`: the block's prefix (/26), gateway 169.254.1.1, a default route (Calico's own
//!   main plugin narrows to /32 and installs the link-local next hop itself);
//! - `ptp`: the pool's prefix and gateway 169.254.1.1, no routes: ptp puts the gateway on the
//!   host end of the veth and routes the whole pool through it;
//! - `bridge` and others: the block's prefix, no gateway, no routes: pods of a block are
//!   on-link on the bridge.
//!
//! The `gateway`, `result_prefix` and `routes` keys override each choice.

use crate::config::{Gateway, PluginConfig, ResultPrefix};
use ipam_core::{AssignedIp, Family};
use ipnetwork::IpNetwork;
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

/// Builds the result for the assigned addresses; `pools` are the pool CIDRs (for the pool
/// prefix).
pub fn build(cfg: &PluginConfig, ips: &[AssignedIp], pools: &[IpNetwork]) -> CNIResult {
    let ips: Vec<IpConfig> = ips
        .iter()
        .map(|a| {
            let prefix = match cfg.result_prefix {
                ResultPrefix::Pool => pools
                    .iter()
                    .find(|p| p.contains(a.ip))
                    .map_or(a.block.prefix(), |p| p.prefix()),
                ResultPrefix::Block => a.block.prefix(),
            };
            IpConfig {
                interface: None,
                address: IpNet::new(a.ip, prefix).expect("prefix fits the family"),
                gateway: gateway_for(cfg, Family::of(a.ip)),
            }
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
        .expect("a valid literal")
    }

    fn ips() -> Vec<AssignedIp> {
        vec![
            AssignedIp {
                ip: "10.244.3.7".parse().expect("a valid literal"),
                block: "10.244.3.0/26".parse().expect("a valid literal"),
                seq: 1,
            },
            AssignedIp {
                ip: "fd00::47".parse().expect("a valid literal"),
                block: "fd00::40/122".parse().expect("a valid literal"),
                seq: 1,
            },
        ]
    }

    #[test]
    fn every_version_has_its_shape() {
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let c = cfg(v, "calico");
            let j: Value = serde_json::from_str(&to_json(&c, build(&c, &ips(), &[])))
                .expect("from_str succeeds");
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
        let j: Value =
            serde_json::from_str(&to_json(&c, build(&c, &ips(), &[]))).expect("from_str succeeds");
        assert!(j["ips"][0].get("gateway").is_none());
        assert!(j.get("routes").is_none());
        assert_eq!(j["ips"][0]["address"], "10.244.3.7/26");
    }

    #[test]
    fn ptp_gets_the_pool_prefix_and_the_link_local_gateway() {
        let c = cfg("1.0.0", "ptp");
        let pools = [
            "10.244.0.0/16".parse().expect("a valid literal"),
            "fd00::/64".parse().expect("a valid literal"),
        ];
        let j: Value = serde_json::from_str(&to_json(&c, build(&c, &ips(), &pools)))
            .expect("from_str succeeds");
        assert_eq!(j["ips"][0]["address"], "10.244.3.7/16");
        assert_eq!(j["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(j["ips"][1]["address"], "fd00::47/64");
        assert!(j.get("routes").is_none());
    }
}
