//! Store calls per CNI verb, pinned: on etcd each call is a round trip, so a change that adds
//! one to a pod's start or teardown shows here, not only as a slower cluster.

use ipam_core::{Ipam, ManualClock, Pool};
use ipam_store::{Calls, Counting, MemoryStore};
use std::collections::BTreeMap;
use std::sync::Arc;

fn call(ipam: &Ipam<Arc<Counting<MemoryStore>>>, verb: &str, cid: &str) -> i32 {
    let conf = r#"{"cniVersion": "1.0.0", "name": "net", "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": "node-a"}}"#;
    let env = BTreeMap::from([
        ("CNI_COMMAND".to_string(), verb.to_string()),
        ("CNI_CONTAINERID".to_string(), cid.to_string()),
        ("CNI_NETNS".to_string(), "/var/run/netns/x".to_string()),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
        (
            "CNI_ARGS".to_string(),
            "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod".to_string(),
        ),
    ]);
    ipam_cni::serve(ipam, &env, conf.as_bytes()).exit_code
}

#[test]
fn add_and_del_are_few_round_trips() {
    let store = Arc::new(Counting::new(MemoryStore::new()));
    let ipam = Ipam::new(
        store.clone(),
        Arc::new(ManualClock::new(1_700_000_000_000_000_000)),
    );
    ipam.create_pool(Pool::new("p", "10.244.0.0/16".parse().unwrap()).unwrap())
        .unwrap();
    assert_eq!(call(&ipam, "ADD", "first"), 0);
    store.take();
    assert_eq!(call(&ipam, "ADD", "c1"), 0);
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 1),
        "ADD of a new attachment: the engine's one read (the handle with it), one commit"
    );
    // A repeated ADD: the node's kept context creates the handle without a read, which the
    // store refuses (it exists); after a read the engine learns the handle holds addresses,
    // and the attachment is read.
    assert_eq!(call(&ipam, "ADD", "c1"), 0);
    assert_eq!(
        store.take(),
        Calls::new(1, 3, 1),
        "repeated ADD: a refused commit, the engine read, the handles, their blocks, the pools"
    );
    assert_eq!(call(&ipam, "DEL", "c1"), 0);
    assert_eq!(
        store.take(),
        Calls::new(1, 1, 1),
        "DEL: the handles (own and the pod's) with the configuration; their block; one commit \
         made under the revisions read"
    );
    // An attachment whose block the node's lane keeps (the ADD before left it): the DEL reads
    // only the handles.
    assert_eq!(call(&ipam, "ADD", "c2"), 0);
    assert_eq!(call(&ipam, "ADD", "c3"), 0);
    store.take();
    assert_eq!(call(&ipam, "DEL", "c2"), 0);
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 1),
        "DEL from the kept block: the handles with the configuration; one commit"
    );
    assert_eq!(call(&ipam, "DEL", "c3"), 0);
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 1),
        "the DEL before kept the block current"
    );
    assert_eq!(call(&ipam, "DEL", "c1"), 0);
    assert_eq!(
        store.take(),
        Calls::new(0, 1, 0),
        "DEL of nothing: one read"
    );
}
