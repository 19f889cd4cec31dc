//! The operator's view agrees with the plugin: pods started through the real `calico-ipam`
//! binary, then `ipamctl show -o json` (same code as the ipamctl binary) lists exactly the
//! addresses the plugin returned, under the right handles.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;

#[test]
fn ipamctl_show_lists_what_the_plugin_assigned() {
    both_modes(|mode| {
        let h = Harness::new(mode);
        let mut from_plugin = BTreeSet::new();
        for i in 0..5 {
            let ip = h.add(&format!("pod{i}")).ok().ips()[0]
                .split('/')
                .next()
                .unwrap()
                .to_string();
            from_plugin.insert((format!("testnet.pod{i}"), ip));
        }
        let conf = h.path("net.conf");
        std::fs::write(&conf, h.conf("1.0.0", json!({})).to_string()).unwrap();
        let o = ipamctl::cli::run_args([
            "ipamctl",
            "--cni-config",
            conf.to_str().unwrap(),
            "show",
            "--blocks",
            "-o",
            "json",
        ]);
        assert_eq!(o.exit_code, 0, "{mode:?}: {}", o.stdout);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        let mut from_ctl = BTreeSet::new();
        for b in v.as_array().unwrap() {
            assert_eq!(b["node"], "node-a");
            for a in b["addresses"].as_array().unwrap() {
                from_ctl.insert((
                    a["handle"].as_str().unwrap().to_string(),
                    a["ip"].as_str().unwrap().to_string(),
                ));
            }
        }
        assert_eq!(from_ctl, from_plugin, "{mode:?}");
        let o =
            ipamctl::cli::run_args(["ipamctl", "--cni-config", conf.to_str().unwrap(), "check"]);
        assert_eq!(o.exit_code, 0, "{}", o.stdout);
    });
}
