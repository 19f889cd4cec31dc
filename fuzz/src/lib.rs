//! Shared pieces of the fuzz targets: the input layouts and the checks, so a crash found by a
//! target can be replayed as a regression test (`tests/regressions.rs` in the crates that own
//! the code).

use ipam_core::{Ipam, ManualClock};
use ipam_store::MemoryStore;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Verbs the CNI input target feeds (the last is "missing").
pub const COMMANDS: [&str; 7] = ["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", ""];

/// Splits fuzz bytes into a CNI environment and stdin:
/// `[command byte] CNI_ARGS \0 CNI_CONTAINERID \0 CNI_IFNAME \0 stdin...`.
pub fn cni_input(data: &[u8]) -> (BTreeMap<String, String>, Vec<u8>) {
    let (cmd, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut parts = rest.splitn(4, |b| *b == 0);
    let mut field = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let args = field();
    let cid = field();
    let ifname = field();
    let stdin = parts.next().unwrap_or_default().to_vec();
    let mut env = BTreeMap::new();
    let c = COMMANDS[usize::from(*cmd) % COMMANDS.len()];
    for (k, v) in [
        ("CNI_COMMAND", c.to_string()),
        ("CNI_ARGS", args),
        ("CNI_CONTAINERID", cid),
        ("CNI_IFNAME", ifname),
        ("CNI_NETNS", "/var/run/netns/fuzz".to_string()),
    ] {
        if !v.is_empty() {
            env.insert(k.to_string(), v);
        }
    }
    (env, stdin)
}

/// Runs one CNI invocation on a memory store and checks what must always hold: the output is a
/// result or the spec's error JSON, and the store stays consistent.
pub fn check_cni(ipam: &Ipam<MemoryStore>, env: &BTreeMap<String, String>, stdin: &[u8]) {
    let out = ipam_cni::serve(ipam, env, stdin);
    if out.exit_code != 0 {
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).expect("errors are JSON on stdout");
        assert!(v["code"].is_u64(), "error without a code: {}", out.stdout);
        assert!(v["msg"].is_string());
    } else if !out.stdout.is_empty() {
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("results are JSON");
    }
    let problems = ipam.audit().expect("memory store lists");
    assert!(problems.is_empty(), "{problems:?}");
}

/// A fresh engine for the CNI target.
pub fn engine() -> Ipam<MemoryStore> {
    Ipam::new(
        MemoryStore::new(),
        Arc::new(ManualClock::new(1_700_000_000_000_000_000)),
    )
}

/// Decodes stored bytes under a key chosen by `kind`; a record that decodes must re-encode to
/// something that decodes to the same record.
pub fn check_record(kind: u8, value: &[u8]) {
    use ipam_core::RecordLayout;
    use ipam_store::sled::{codec, keys};
    static KEYS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let all = KEYS.get_or_init(|| {
        ipam_store::conformance::sample_records()
            .iter()
            .map(|r| keys::encode(&r.key()))
            .collect()
    });
    let k = &all[usize::from(kind) % all.len()];
    if let Ok(v) = codec::decode(k, value) {
        let again = codec::encode(&v.value, v.revision).expect("decoded records encode");
        let back = codec::decode(k, &again).expect("re-encoded records decode");
        assert_eq!(back.value, v.value);
        // Rewritten into either layout (what a layout switch on etcd does), the record and
        // its revision are the same, and the value is in that layout or plain.
        for layout in [RecordLayout::Plain, RecordLayout::Compressed] {
            let new = codec::transcode(k, value, layout).expect("a value that decodes transcodes");
            let new = new.unwrap_or_else(|| value.to_vec());
            let back = codec::decode(k, &new).expect("a transcoded value decodes");
            assert_eq!((&back.value, back.revision), (&v.value, v.revision));
            let to = codec::layout_of(&new);
            assert!(to == Some(layout) || to == Some(RecordLayout::Plain), "{to:?}");
        }
    } else {
        assert!(codec::transcode(k, value, RecordLayout::Plain).is_err());
    }
    // Raw keys: anything that decodes encodes back to the same bytes.
    if let Some(key) = keys::decode(value) {
        assert_eq!(keys::encode(&key), value);
    }
}
