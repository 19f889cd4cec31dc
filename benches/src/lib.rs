//! Helpers shared by the benchmarks in `benches/` and the bench binaries in `src/bin/`.

use std::collections::BTreeMap;

/// The CNI environment of a call for container `cid` (interface eth0, a bench namespace).
pub fn cni_env(command: &str, cid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("CNI_COMMAND".to_string(), command.to_string()),
        ("CNI_CONTAINERID".to_string(), cid.to_string()),
        ("CNI_NETNS".to_string(), "/var/run/netns/bench".to_string()),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
    ])
}
