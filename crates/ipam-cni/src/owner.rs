//! Who holds an address: an attachment is (network, container id, ifname), and its addresses are
//! held under a handle id derived from the first two.
//!
//! The handle id is `<network>.<container id>`, Calico's form, with one change that makes it
//! unambiguous: in the network part, `%` is written `%25` and `.` is written `%2E`. Both names may
//! contain dots, so without the escape network `a` + container `b.c` and network `a.b` +
//! container `c` would share `a.b.c`. With it the first `.` of a handle always ends the network.
//! Network names without `.` or `%` (such as `k8s-pod-network`) give exactly Calico's handle.
//!
//! Each allocation also carries its network, container id and ifname as attributes, and an
//! allocation belongs to an attachment only when those agree ([`belongs`]). That is the
//! migration for stores written before the escape: their handles are the unescaped
//! `<network>.<container id>` ([`legacy_handle_id`]), which the verbs still read, and the
//! container id attribute tells apart the attachments that shared one.

use ipam_core::Allocation;

/// Attribute keys stored with each address.
pub mod attrs {
    /// Network name.
    pub const NETWORK: &str = "network";
    /// Container id.
    pub const CONTAINER_ID: &str = "containerid";
    /// Interface name inside the container.
    pub const IFNAME: &str = "ifname";
    /// Allocation time (RFC 3339, UTC).
    pub const TIMESTAMP: &str = "timestamp";
    /// Kubernetes namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Kubernetes pod.
    pub const POD: &str = "pod";
}

/// The network part of a handle id: `%` and `.` escaped, so it never contains a dot.
pub fn escape_network(network: &str) -> String {
    let mut out = String::with_capacity(network.len());
    for c in network.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out
}

/// The handle id of an attachment of `network` in container `container_id`.
pub fn handle_id(network: &str, container_id: &str) -> String {
    format!("{}.{container_id}", escape_network(network))
}

/// The prefix every handle id of `network` starts with.
pub fn handle_prefix(network: &str) -> String {
    format!("{}.", escape_network(network))
}

/// The handle id stores written before the escape used, when it differs from [`handle_id`].
pub fn legacy_handle_id(network: &str, container_id: &str) -> Option<String> {
    let legacy = format!("{network}.{container_id}");
    (legacy != handle_id(network, container_id)).then_some(legacy)
}

/// The network an allocation under `handle` belongs to: its `network` attribute; for an
/// allocation written before that attribute, the handle less `.<containerid attribute>`.
/// `None` when neither tells.
pub fn network_of(a: &Allocation) -> Option<String> {
    if let Some(n) = a.attrs.get(attrs::NETWORK) {
        return Some(n.to_string());
    }
    let cid = a.attrs.get(attrs::CONTAINER_ID)?;
    a.handle_id
        .strip_suffix(cid)
        .and_then(|h| h.strip_suffix('.'))
        .filter(|n| !n.is_empty())
        .map(String::from)
}

/// The (container id, ifname) that allocation `a`'s attributes record; empty where one is not
/// recorded (allocations written before those attributes).
pub fn attachment_of(a: &Allocation) -> (&str, &str) {
    (
        a.attrs.get(attrs::CONTAINER_ID).unwrap_or_default(),
        a.attrs.get(attrs::IFNAME).unwrap_or_default(),
    )
}

/// True when allocation `a` is held by the attachment (network, container id, ifname). An
/// allocation whose attributes do not name its container is accepted only under the
/// attachment's own (escaped) handle, where nothing else can be.
pub fn belongs(a: &Allocation, network: &str, container_id: &str, ifname: &str) -> bool {
    if a.attrs.get(attrs::IFNAME).is_some_and(|i| i != ifname) {
        return false;
    }
    match a.attrs.get(attrs::CONTAINER_ID) {
        Some(cid) if cid != container_id => return false,
        Some(_) => {}
        None => return a.handle_id == handle_id(network, container_id),
    }
    network_of(a).is_some_and(|n| n == network)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(handle: &str, attrs: &[(&str, &str)]) -> Allocation {
        Allocation {
            ip: "10.0.0.1".parse().expect("a valid literal"),
            block: "10.0.0.0/26".parse().expect("a valid literal"),
            block_affinity: None,
            handle_id: handle.into(),
            attrs: std::sync::Arc::new(
                ipam_core::AllocAttrs::new(handle, attrs.iter().copied()).expect("a valid fixture"),
            ),
            seq: 0,
        }
    }

    #[test]
    fn handles_of_dotted_names_differ() {
        assert_eq!(handle_id("a", "b.c"), "a.b.c");
        assert_eq!(handle_id("a.b", "c"), "a%2Eb.c");
        assert_eq!(handle_id("k8s-pod-network", "abc"), "k8s-pod-network.abc");
        assert_eq!(handle_id("a%2Eb", "c"), "a%252Eb.c");
        assert_ne!(handle_id("a%2Eb", "c"), handle_id("a.b", "c"));
        assert_eq!(legacy_handle_id("k8s-pod-network", "abc"), None);
        assert_eq!(legacy_handle_id("a.b", "c").as_deref(), Some("a.b.c"));
    }

    #[test]
    fn legacy_allocations_are_told_apart_by_container() {
        // Written before the escape: both attachments under "a.b.c".
        let of_a = alloc("a.b.c", &[("containerid", "b.c"), ("ifname", "eth0")]);
        let of_ab = alloc("a.b.c", &[("containerid", "c"), ("ifname", "eth0")]);
        assert!(belongs(&of_a, "a", "b.c", "eth0"));
        assert!(!belongs(&of_a, "a.b", "c", "eth0"));
        assert!(belongs(&of_ab, "a.b", "c", "eth0"));
        assert!(!belongs(&of_ab, "a", "b.c", "eth0"));
        assert_eq!(network_of(&of_a).as_deref(), Some("a"));
        assert_eq!(network_of(&of_ab).as_deref(), Some("a.b"));
        assert!(!belongs(&of_a, "a", "b.c", "net1"));
    }

    #[test]
    fn the_network_attribute_decides() {
        let a = alloc(
            "a%2Eb.c",
            &[("network", "a.b"), ("containerid", "c"), ("ifname", "eth0")],
        );
        assert!(belongs(&a, "a.b", "c", "eth0"));
        assert!(!belongs(&a, "a", "c", "eth0"));
        let bare = alloc("a.c", &[]);
        assert!(belongs(&bare, "a", "c", "eth0"));
        assert!(!belongs(&bare, "a.x", "c", "eth0"));
    }
}
