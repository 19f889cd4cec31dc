//! Writes the seed corpora: real CNI invocations and every stored record kind, encoded.
//! Run from fuzz/: `cargo run --bin gen-seeds` (writes fuzz/seeds/<target>/).

use ipam_store::sled::codec;
use std::path::Path;

fn write(dir: &str, name: &str, bytes: &[u8]) {
    let d = Path::new("seeds").join(dir);
    std::fs::create_dir_all(&d).expect("corpus dir");
    std::fs::write(d.join(name), bytes).expect("write seed");
}

fn main() {
    let conf = |v: &str, extra: &str| {
        format!(
            r#"{{"cniVersion":"{v}","name":"k8s-pod-network","type":"calico","nodename":"n1"{extra},"ipam":{{"type":"calico-ipam","assign_ipv4":"true","ipv4_pools":["10.244.0.0/16"]}}}}"#
        )
    };
    let seeds: Vec<(&str, u8, &str, String)> = vec![
        (
            "add",
            0,
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
            conf("1.0.0", ""),
        ),
        ("add-legacy", 0, "", conf("0.3.1", "")),
        ("add-ip", 0, "IP=10.244.3.3", conf("1.1.0", "")),
        (
            "add-runtime",
            0,
            "",
            conf("1.1.0", r#","runtimeConfig":{"ips":["10.244.9.9/24"]}"#),
        ),
        ("del", 1, "", conf("1.0.0", "")),
        (
            "check",
            2,
            "",
            conf(
                "1.0.0",
                r#","prevResult":{"ips":[{"address":"10.244.0.1/26"}]}"#,
            ),
        ),
        ("version", 3, "", r#"{"cniVersion":"0.4.0"}"#.to_string()),
        (
            "gc",
            4,
            "",
            conf(
                "1.1.0",
                r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]"#,
            ),
        ),
        ("status", 5, "", conf("1.1.0", "")),
    ];
    for (name, cmd, args, stdin) in seeds {
        let mut b = vec![cmd];
        b.extend_from_slice(args.as_bytes());
        b.push(0);
        b.extend_from_slice(b"c1");
        b.push(0);
        b.extend_from_slice(b"eth0");
        b.push(0);
        b.extend_from_slice(stdin.as_bytes());
        write("cni_input", name, &b);
    }
    for (i, r) in ipam_store::conformance::sample_records().iter().enumerate() {
        let mut b = vec![u8::try_from(i).expect("few samples")];
        b.extend(codec::encode(r, ipam_core::Revision(7)).expect("encode"));
        write("record_decode", &format!("record-{i}"), &b);
        write("record_decode", &format!("key-{i}"), &{
            let mut k = vec![0u8];
            k.extend(ipam_store::sled::keys::encode(&r.key()));
            k
        });
    }
    // Differential: a few byte strings; libFuzzer's arbitrary input grows from them.
    for (i, s) in [
        &b"\x01\x02\x03\x04\x05\x06\x07\x08\x00\x10\x20\x30"[..],
        &[0x55; 64],
        &[0xa3; 200],
    ]
    .iter()
    .enumerate()
    {
        write("differential", &format!("seed-{i}"), s);
    }
}
