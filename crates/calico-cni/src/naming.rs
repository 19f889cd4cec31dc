//! Names and addresses of the host end of a pod's veth pair.

use sha1::{Digest, Sha1};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Prefix of every host-end interface this plugin creates.
pub const HOST_PREFIX: &str = "cali";
/// MAC of every host end: pods always see the same next-hop MAC.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The pod's IPv4 next hop; nothing owns it, the host end answers ARP for it by proxy.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's IPv6 next hop: the host end's link-local address, derived from [`HOST_MAC`].
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// The host end's name: `cali` and the first 11 hex digits of sha1 of `<namespace>.<pod>`
/// when the runtime names the pod, else of `<container id>.<ifname>`, so each attachment has
/// a stable name of 15 characters.
pub fn host_ifname(pod: Option<(&str, &str)>, container_id: &str, ifname: &str) -> String {
    let seed = match pod {
        Some((ns, name)) => format!("{ns}.{name}"),
        None => format!("{container_id}.{ifname}"),
    };
    let digest = Sha1::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_PREFIX}{}", &hex[..11])
}

/// A MAC as `aa:bb:...`.
pub fn mac_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_calicos() {
        // The seed lab's pod "multitool" in namespace "default" has host end cali6d09fa47963.
        let n = host_ifname(Some(("default", "multitool")), "x", "eth0");
        assert_eq!(n, "cali6d09fa47963");
        // Without pod names: sha1("c1.eth0") = 046ed43e92e...
        assert_eq!(host_ifname(None, "c1", "eth0"), "cali046ed43e92e");
        assert_ne!(
            host_ifname(None, "c1", "eth0"),
            host_ifname(None, "c1", "net1")
        );
        assert_eq!(mac_string(&HOST_MAC), "ee:ee:ee:ee:ee:ee");
        assert_eq!(GATEWAY_V6.to_string(), "fe80::ecee:eeff:feee:eeee");
    }
}
