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

/// A well-mixed 64-bit value from `text` and `salt` (FNV-1a, then a finaliser): stable ids
/// for fixtures that must look random.
pub fn mix(text: &str, salt: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}
