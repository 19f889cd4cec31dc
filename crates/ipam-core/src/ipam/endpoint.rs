//! Workload endpoint records: written by the main plugin when it wires an attachment, removed
//! when it unwires it, read by checks and by the route agent (from the store each pass, or
//! from a [`RouteSource`] that a store's feed keeps current).

use super::Ipam;
use crate::datastore::{put, Change, Datastore, Feed, Key, Range, Record, StoreExt};
use crate::error::AdminError;
use crate::model::{Affinity, Endpoint, Node};
use std::collections::BTreeMap;

/// A node's routes, and the addresses its pods borrowed (which it announces).
type NodeRoutes = (Vec<crate::routing::Route>, Vec<ipnetwork::IpNetwork>);

/// [`NodeRoutes`] of `node` from the three kinds of record.
fn node_routes<E: std::borrow::Borrow<Endpoint>>(
    node: &str,
    affs: &[Affinity],
    nodes: &[Node],
    eps: &[E],
) -> NodeRoutes {
    (
        crate::routing::routes_for(node, affs, nodes, eps),
        crate::routing::borrowed_by(node, affs, eps),
    )
}

/// The ranges routes are computed from.
const ROUTE_RANGES: [Range; 3] = [Range::Affinities, Range::Nodes, Range::Endpoints];

/// A copy of the records routes are computed from (affinities, nodes, workload endpoints),
/// kept current by a store's feed ([`Datastore::watch`]): a route pass on it reads nothing
/// from the store, where [`Ipam::routes_for`] reads every such record of the cluster.
pub struct RouteSource {
    feed: Feed,
    affinities: BTreeMap<Key, Affinity>,
    nodes: BTreeMap<Key, Node>,
    endpoints: BTreeMap<Key, Endpoint>,
    synced: bool,
    changed: bool,
}

impl RouteSource {
    /// A copy, empty until `feed` sends its snapshot.
    pub fn new(feed: Feed) -> RouteSource {
        RouteSource {
            feed,
            affinities: BTreeMap::new(),
            nodes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            synced: false,
            changed: false,
        }
    }

    fn put(&mut self, r: Record) {
        let key = r.key();
        match r {
            Record::Affinity(a) => {
                self.affinities.insert(key, a);
            }
            Record::Node(n) => {
                self.nodes.insert(key, n);
            }
            Record::Endpoint(e) => {
                self.endpoints.insert(key, *e);
            }
            _ => {}
        }
    }

    /// Applies what the feed sent since the last call. False once the feed has stopped: the
    /// caller reads the store instead.
    pub fn update(&mut self) -> bool {
        let Some(changes) = self.feed.drain() else {
            return false;
        };
        for c in changes {
            self.changed = true;
            match c {
                Change::Snapshot(all) => {
                    self.affinities.clear();
                    self.nodes.clear();
                    self.endpoints.clear();
                    for v in all {
                        self.put(v.value);
                    }
                    self.synced = true;
                }
                Change::Put(v) => self.put(v.value),
                Change::Delete(k) => {
                    self.affinities.remove(&k);
                    self.nodes.remove(&k);
                    self.endpoints.remove(&k);
                }
            }
        }
        true
    }

    /// Whether the copy holds a snapshot (before that it holds nothing to route by).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// [`Ipam::routes_for`], from the copy (the endpoints are not copied again).
    pub fn routes_for(&self, node: &str) -> NodeRoutes {
        let affs: Vec<Affinity> = self.affinities.values().cloned().collect();
        let nodes = self.nodes();
        let eps: Vec<&Endpoint> = self.endpoints.values().collect();
        node_routes(node, &affs, &nodes, &eps)
    }

    /// The node records in the copy, in name order.
    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }
}

impl<S: Datastore> Ipam<S> {
    /// A [`RouteSource`] fed by the store's watch; `None` when the store has no feed (the
    /// route agent then reads the store each pass).
    pub fn watch_routes(&self) -> Result<Option<RouteSource>, AdminError> {
        Ok(self.store.watch(&ROUTE_RANGES)?.map(RouteSource::new))
    }

    /// Stores `e`, replacing the record of the same attachment.
    pub fn put_endpoint(&self, e: &Endpoint) -> Result<(), AdminError> {
        e.validate().map_err(AdminError::InvalidArgument)?;
        let key = Record::Endpoint(Box::new(e.clone())).key();
        self.retrying::<_, AdminError>("put endpoint", || {
            let rev = self.store.get_endpoint(&key)?.map(|v| v.revision);
            self.commit(vec![put(Record::Endpoint(Box::new(e.clone())), rev)])?;
            Ok(())
        })
    }

    /// Deletes the endpoint `id` of `node`; true when there was one.
    pub fn delete_endpoint(&self, node: &str, id: &str) -> Result<bool, AdminError> {
        let key = Key::Endpoint {
            node: node.to_string(),
            id: id.to_string(),
        };
        self.delete_if_present("delete endpoint", key)
    }

    /// The endpoint `id` of `node`.
    pub fn endpoint(&self, node: &str, id: &str) -> Result<Option<Endpoint>, AdminError> {
        let key = Key::Endpoint {
            node: node.to_string(),
            id: id.to_string(),
        };
        Ok(self.store.get_endpoint(&key)?.map(|v| v.value))
    }

    /// Every endpoint, or those of one node, in node then id order.
    pub fn endpoints(&self, node: Option<&str>) -> Result<Vec<Endpoint>, AdminError> {
        let range = match node {
            Some(n) => Range::EndpointsOf(n.to_string()),
            None => Range::Endpoints,
        };
        Ok(self
            .store
            .list_endpoints(&range)?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }
}

impl<S: Datastore> Ipam<S> {
    /// The routes `node` should have now ([`crate::routing::routes_for`]), and the addresses
    /// its pods borrowed (which it announces), from one consistent read.
    pub fn routes_for(&self, node: &str) -> Result<NodeRoutes, AdminError> {
        use crate::datastore::{all, Read};
        let answers = self.store.read(&ROUTE_RANGES.map(Read::List))?;
        let mut it = answers.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let affs: Vec<_> = all::<crate::model::Affinity>(next())?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let nodes: Vec<_> = all::<crate::model::Node>(next())?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let eps: Vec<_> = all::<Endpoint>(next())?
            .into_iter()
            .map(|v| v.value)
            .collect();
        Ok(node_routes(node, &affs, &nodes, &eps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::Versioned;
    use crate::model::AffinityState;
    use crate::Revision;

    fn v(r: Record) -> Versioned<Record> {
        Versioned {
            value: r,
            revision: Revision(1),
        }
    }

    fn aff(node: &str, cidr: &str) -> Record {
        Record::Affinity(Affinity::new(
            node,
            cidr.parse().expect("a valid literal"),
            AffinityState::Confirmed,
        ))
    }

    fn node(name: &str, addr: &str) -> Record {
        let mut n = Node::new(name).expect("a valid fixture");
        n.set_address(addr.parse().expect("a valid literal"));
        Record::Node(n)
    }

    fn ep(node: &str, id: &str, ip: &str) -> Record {
        Record::Endpoint(Box::new(Endpoint {
            node: node.into(),
            id: id.into(),
            addresses: vec![format!("{ip}/32").parse().expect("a valid literal")],
            ..Endpoint::default()
        }))
    }

    fn routes(s: &RouteSource, node: &str) -> Vec<String> {
        s.routes_for(node)
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_route_source_follows_its_feed_and_says_when_it_stops() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut s = RouteSource::new(Feed::new(rx));
        assert!(
            s.update() && !s.synced(),
            "nothing to route by before the snapshot"
        );
        tx.send(Change::Snapshot(vec![
            v(aff("a", "10.244.0.0/26")),
            v(aff("b", "10.244.1.0/26")),
            v(node("a", "172.18.0.4")),
            v(node("b", "172.18.0.3")),
        ]))
        .expect("sent");
        assert!(s.update() && s.synced() && s.take_changed());
        assert!(!s.take_changed(), "a change is reported once");
        assert_eq!(
            routes(&s, "a"),
            vec!["blackhole 10.244.0.0/26", "10.244.1.0/26 via 172.18.0.3"]
        );
        // b's pod borrows from a's block; b gives its block back.
        tx.send(Change::Put(v(ep("b", "p1/eth0", "10.244.0.9"))))
            .expect("sent");
        tx.send(Change::Delete(aff("b", "10.244.1.0/26").key()))
            .expect("sent");
        assert!(s.update() && s.take_changed());
        assert_eq!(
            routes(&s, "a"),
            vec!["blackhole 10.244.0.0/26", "10.244.0.9/32 via 172.18.0.3"]
        );
        assert_eq!(s.nodes().len(), 2);
        // A new snapshot replaces the copy whole.
        tx.send(Change::Snapshot(vec![v(aff("a", "10.244.0.0/26"))]))
            .expect("sent");
        assert!(s.update());
        assert_eq!(routes(&s, "a"), vec!["blackhole 10.244.0.0/26"]);
        drop(tx);
        assert!(!s.update(), "the feed stopped");
    }
}
