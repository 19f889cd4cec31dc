//! Helpers shared by the benchmarks in `benches/` and the bench binaries in `src/bin/`.

use std::collections::BTreeMap;
use std::time::Duration;

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

/// CPU time (user + system, all threads) of process `pid`, from `/proc/PID/stat` in clock ticks
/// of 10 ms (the fixed user-space tick on Linux).
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The etcd servers on this machine (processes named `etcd`), whose CPU a phase is charged.
pub fn etcd_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "etcd")
        })
        .collect()
}
