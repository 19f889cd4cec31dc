//! Helpers shared by the service tests.

use serde_json::Value;

/// The first address of a CNI ADD result, without its prefix length.
pub fn first_address(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    a.split('/').next().unwrap_or(a).to_string()
}
