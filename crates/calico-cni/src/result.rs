//! The main plugin's CNI result, shaped for the configured version: both interfaces (the host
//! end, and the pod end with its sandbox), each address with the index of the pod's interface,
//! the default routes via the link-local next hop, and `dns` as configured.

use crate::naming::{GATEWAY_V4, GATEWAY_V6};
use serde_json::{json, Value};
use std::net::IpAddr;

/// What the result describes.
pub struct Attachment<'a> {
    /// `cniVersion` of the config.
    pub cni_version: &'a str,
    /// Host end name and MAC.
    pub host: (&'a str, &'a str),
    /// Pod end name and MAC.
    pub pod: (&'a str, &'a str),
    /// `CNI_NETNS`.
    pub sandbox: &'a str,
    /// Addresses on the pod end.
    pub ips: &'a [IpAddr],
    /// `dns` of the config.
    pub dns: Option<&'a Value>,
}

/// The result JSON.
pub fn build(a: &Attachment<'_>) -> Value {
    let legacy = a.cni_version.starts_with("0.");
    let ips: Vec<Value> = a
        .ips
        .iter()
        .map(|ip| {
            let (len, ver) = if ip.is_ipv4() { (32, "4") } else { (128, "6") };
            let mut e = json!({"address": format!("{ip}/{len}"), "interface": 1});
            if legacy {
                e["version"] = json!(ver);
            }
            e
        })
        .collect();
    let mut routes = Vec::new();
    if a.ips.iter().any(IpAddr::is_ipv4) {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": GATEWAY_V4.to_string()}));
    }
    if a.ips.iter().any(IpAddr::is_ipv6) {
        routes.push(json!({"dst": "::/0", "gw": GATEWAY_V6.to_string()}));
    }
    let mut r = json!({
        "cniVersion": a.cni_version,
        "interfaces": [
            {"name": a.host.0, "mac": a.host.1},
            {"name": a.pod.0, "mac": a.pod.1, "sandbox": a.sandbox},
        ],
        "ips": ips,
        "routes": routes,
    });
    if let Some(d) = a.dns {
        r["dns"] = d.clone();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_per_version() {
        let ips: Vec<IpAddr> = vec![
            "10.244.0.5".parse().expect("a valid literal"),
            "fd00::5".parse().expect("a valid literal"),
        ];
        let a = |v| Attachment {
            cni_version: v,
            host: ("cali0123456789a", "ee:ee:ee:ee:ee:ee"),
            pod: ("eth0", "7e:08:91:93:9c:3b"),
            sandbox: "/var/run/netns/p",
            ips: &ips,
            dns: None,
        };
        let r = build(&a("1.0.0"));
        assert_eq!(r["ips"][0]["address"], "10.244.0.5/32");
        assert_eq!(r["ips"][1]["address"], "fd00::5/128");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["interfaces"][1]["sandbox"], "/var/run/netns/p");
        assert_eq!(r["routes"][0]["gw"], "169.254.1.1");
        assert_eq!(r["routes"][1]["gw"], "fe80::ecee:eeff:feee:eeee");
        let r = build(&a("0.3.1"));
        assert_eq!(r["ips"][1]["version"], "6");
        assert_eq!(r["cniVersion"], "0.3.1");
    }
}
