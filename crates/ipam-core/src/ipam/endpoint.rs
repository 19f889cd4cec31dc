//! Workload endpoint records: written by the main plugin when it wires an attachment, removed
//! when it unwires it, read by checks and by the route agent (from the store each pass, or
//! from a [`RouteSource`] that a store's feed keeps current).

use super::Ipam;
use crate::datastore::{put, Change, Datastore, Feed, Key, Range, Record, StoreExt};
use crate::error::AdminError;
use crate::model::{Affinity, AffinityState, Endpoint, Node};
use ipnetwork::IpNetwork;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A node's routes, and the addresses its pods borrowed (which it announces).
type NodeRoutes = (Vec<crate::routing::Route>, Vec<IpNetwork>);

/// [`NodeRoutes`] of `node` from the three kinds of record.
fn node_routes<A: Borrow<Affinity>, N: Borrow<Node>, E: Borrow<Endpoint>>(
    node: &str,
    affs: &[A],
    nodes: &[N],
    eps: &[E],
) -> NodeRoutes {
    (
        crate::routing::routes_for(node, affs, nodes, eps),
        crate::routing::borrowed_by(node, affs, eps),
    )
}

/// Which records a node's routes are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteView {
    /// Every affinity, node and workload endpoint: what a node needs that programs a route to
    /// every other node's blocks and borrowed addresses itself (direct mode, `ipamctl show
    /// --routes`).
    Cluster,
    /// The node's own affinities and endpoints, and every node: what a node needs whose BGP
    /// peers announce their own blocks and borrowed addresses. Its routes are its own blocks
    /// (no route via another node); its borrowed addresses are those of [`RouteView::Cluster`].
    Own,
}

impl RouteView {
    /// The ranges of the view for `node`.
    fn ranges(self, node: &str) -> [Range; 3] {
        match self {
            RouteView::Cluster => [Range::Affinities, Range::Nodes, Range::Endpoints],
            RouteView::Own => [
                Range::AffinitiesOf(node.to_string()),
                Range::Nodes,
                Range::EndpointsOf(node.to_string()),
            ],
        }
    }
}

/// A copy of the records routes are computed from (affinities, nodes, workload endpoints),
/// kept current by a store's feed ([`Datastore::watch`]): a route pass on it reads nothing
/// from the store, where [`Ipam::routes_for`] reads every such record of the cluster.
///
/// Kept incrementally, so a pass costs what the blocks and nodes cost, not what the pods do:
/// an endpoint makes a route only when one of its addresses lies outside its node's confirmed
/// blocks (it *borrowed*), so the copy keeps each endpoint's addresses alone and the set of
/// those that borrowed, decided when the endpoint is put and again for a node's endpoints when
/// the node's confirmed blocks change. Invariant: `borrowed` holds exactly the endpoints with
/// an address outside `blocks_of` of their node, and `blocks_of` exactly the confirmed
/// affinities; a pass then gives what [`crate::routing::routes_for`] gives over every record.
pub struct RouteSource {
    feed: Feed,
    affinities: BTreeMap<Key, Affinity>,
    nodes: BTreeMap<Key, Node>,
    /// Each endpoint's addresses, by key (node, then id): all a route needs of it.
    endpoints: BTreeMap<Key, Vec<IpNetwork>>,
    /// Each node's confirmed blocks.
    blocks_of: HashMap<String, Vec<IpNetwork>>,
    /// Keys of the endpoints that borrowed.
    borrowed: BTreeSet<Key>,
    synced: bool,
    changed: bool,
}

/// Whether an endpoint with `addresses` borrowed from outside `blocks`.
fn borrows(blocks: Option<&Vec<IpNetwork>>, addresses: &[IpNetwork]) -> bool {
    let blocks = blocks.map_or(&[][..], Vec::as_slice);
    addresses
        .iter()
        .any(|a| !blocks.iter().any(|b| b.contains(a.ip())))
}

/// Puts the endpoint `key` in `borrowed` or takes it out, as its `addresses` and its node's
/// `blocks` decide.
fn decide(
    borrowed: &mut BTreeSet<Key>,
    key: &Key,
    blocks: Option<&Vec<IpNetwork>>,
    addresses: &[IpNetwork],
) {
    if !borrows(blocks, addresses) {
        borrowed.remove(key);
    } else if !borrowed.contains(key) {
        borrowed.insert(key.clone());
    }
}

impl RouteSource {
    /// A copy, empty until `feed` sends its snapshot.
    pub fn new(feed: Feed) -> RouteSource {
        RouteSource {
            feed,
            affinities: BTreeMap::new(),
            nodes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            blocks_of: HashMap::new(),
            borrowed: BTreeSet::new(),
            synced: false,
            changed: false,
        }
    }

    /// Stores `r`; with `index`, keeps the confirmed blocks and the borrowed set current (a
    /// snapshot builds them once, after all its records).
    fn put(&mut self, r: Record, index: bool) {
        let key = r.key();
        match r {
            Record::Affinity(a) => {
                let (node, cidr, now) =
                    (a.node.clone(), a.cidr, a.state == AffinityState::Confirmed);
                let before = self
                    .affinities
                    .insert(key, a)
                    .is_some_and(|o| o.state == AffinityState::Confirmed);
                if index && before != now {
                    self.confirmed(&node, cidr, now);
                }
            }
            Record::Node(n) => {
                self.nodes.insert(key, n);
            }
            Record::Endpoint(e) => {
                if index {
                    let blocks = self.blocks_of.get(&e.node);
                    decide(&mut self.borrowed, &key, blocks, &e.addresses);
                }
                self.endpoints.insert(key, e.addresses);
            }
            _ => {}
        }
    }

    fn delete(&mut self, key: &Key) {
        match key {
            Key::Affinity { node, cidr } => {
                let was = self.affinities.remove(key);
                if was.is_some_and(|a| a.state == AffinityState::Confirmed) {
                    self.confirmed(node, *cidr, false);
                }
            }
            Key::Node(_) => {
                self.nodes.remove(key);
            }
            Key::Endpoint { .. } => {
                self.endpoints.remove(key);
                self.borrowed.remove(key);
            }
            _ => {}
        }
    }

    /// `cidr` became (or stopped being) a confirmed block of `node`: the node's endpoints are
    /// decided again (a node's few hundred, not the cluster's).
    fn confirmed(&mut self, node: &str, cidr: IpNetwork, now: bool) {
        let blocks = self.blocks_of.entry(node.to_string()).or_default();
        blocks.retain(|b| *b != cidr);
        if now {
            blocks.push(cidr);
        }
        let range = Range::EndpointsOf(node.to_string());
        let blocks = self.blocks_of.get(node);
        for (k, addresses) in self
            .endpoints
            .range(range.start()..)
            .take_while(|(k, _)| !range.past_end(k))
        {
            decide(&mut self.borrowed, k, blocks, addresses);
        }
    }

    /// Builds the confirmed blocks and the borrowed set from the copy (after a snapshot).
    fn reindex(&mut self) {
        self.blocks_of.clear();
        for a in self
            .affinities
            .values()
            .filter(|a| a.state == AffinityState::Confirmed)
        {
            self.blocks_of
                .entry(a.node.clone())
                .or_default()
                .push(a.cidr);
        }
        self.borrowed = self
            .endpoints
            .iter()
            .filter(|(k, addresses)| match k {
                Key::Endpoint { node, .. } => borrows(self.blocks_of.get(node), addresses),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
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
                        self.put(v.value, false);
                    }
                    self.reindex();
                    self.synced = true;
                }
                Change::Put(v) => self.put(v.value, true),
                Change::Delete(k) => self.delete(&k),
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

    /// [`Ipam::routes_for`], from the copy: over its blocks, nodes and the endpoints that
    /// borrowed (the others make no route).
    pub fn routes_for(&self, node: &str) -> NodeRoutes {
        let affs: Vec<&Affinity> = self.affinities.values().collect();
        let nodes: Vec<&Node> = self.nodes.values().collect();
        let eps: Vec<Endpoint> = self
            .borrowed
            .iter()
            .filter_map(|k| match k {
                Key::Endpoint { node, id } => Some(Endpoint {
                    node: node.clone(),
                    id: id.clone(),
                    addresses: self.endpoints.get(k)?.clone(),
                    ..Endpoint::default()
                }),
                _ => None,
            })
            .collect();
        node_routes(node, &affs, &nodes, &eps)
    }

    /// The node records in the copy, in name order.
    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }
}

impl<S: Datastore> Ipam<S> {
    /// A [`RouteSource`] of `view` for `node`, fed by the store's watch; `None` when the
    /// store has no feed (the route agent then reads the store each pass).
    pub fn watch_routes(
        &self,
        node: &str,
        view: RouteView,
    ) -> Result<Option<RouteSource>, AdminError> {
        Ok(self.store.watch(&view.ranges(node))?.map(RouteSource::new))
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
        self.routes_in(node, RouteView::Cluster)
    }

    /// [`Ipam::routes_for`] from the records of `view` alone.
    pub fn routes_in(&self, node: &str, view: RouteView) -> Result<NodeRoutes, AdminError> {
        use crate::datastore::{all, Read};
        let answers = self.store.read(&view.ranges(node).map(Read::List))?;
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

    /// The copy's routes, kept incrementally, against the routes computed from every record,
    /// after each of a long random run of puts, deletes and snapshots: blocks confirmed,
    /// pending and given back under endpoints that then borrow or stop borrowing.
    #[test]
    fn a_route_source_kept_incrementally_routes_as_every_record_does() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from((x >> 33) % n).unwrap_or(0)
        };
        let names = ["a", "b", "c", "d", "e"];
        let (tx, rx) = std::sync::mpsc::channel();
        let mut s = RouteSource::new(Feed::new(rx));
        let mut truth: BTreeMap<Key, Record> = BTreeMap::new();
        let (mut borrowed_seen, mut checks) = (0, 0);
        for step in 0..3_000 {
            let node_name = names[next(5)];
            let block = next(8);
            let change = match next(10) {
                0 | 1 => {
                    let state = if next(4) == 0 {
                        AffinityState::Pending
                    } else {
                        AffinityState::Confirmed
                    };
                    let cidr = format!("10.244.{}.{}/26", block / 4, (block % 4) * 64);
                    let r = Record::Affinity(Affinity::new(
                        node_name,
                        cidr.parse().expect("a valid literal"),
                        state,
                    ));
                    Change::Put(v(r))
                }
                2 => match truth
                    .keys()
                    .filter(|k| matches!(k, Key::Affinity { .. }))
                    .nth(next(8))
                {
                    Some(k) => Change::Delete(k.clone()),
                    None => continue,
                },
                3 => Change::Put(v(node(node_name, &format!("172.18.0.{}", block + 2)))),
                4..=7 => {
                    let ip = format!("10.244.{}.{}", block / 4, next(256));
                    Change::Put(v(ep(node_name, &format!("p{}/eth0", next(40)), &ip)))
                }
                8 => match truth
                    .keys()
                    .filter(|k| matches!(k, Key::Endpoint { .. }))
                    .nth(next(40))
                {
                    Some(k) => Change::Delete(k.clone()),
                    None => continue,
                },
                _ if step % 50 == 0 => Change::Snapshot(truth.values().cloned().map(v).collect()),
                _ => continue,
            };
            match &change {
                Change::Put(r) => {
                    truth.insert(r.value.key(), r.value.clone());
                }
                Change::Delete(k) => {
                    truth.remove(k);
                }
                Change::Snapshot(_) => {}
            }
            tx.send(change).expect("sent");
            if step % 3 != 0 {
                continue; // several changes in one update, too
            }
            assert!(s.update());
            let affs: Vec<Affinity> = truth
                .values()
                .filter_map(|r| match r {
                    Record::Affinity(a) => Some(a.clone()),
                    _ => None,
                })
                .collect();
            let nodes: Vec<Node> = truth
                .values()
                .filter_map(|r| match r {
                    Record::Node(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            let eps: Vec<Endpoint> = truth
                .values()
                .filter_map(|r| match r {
                    Record::Endpoint(e) => Some((**e).clone()),
                    _ => None,
                })
                .collect();
            for n in names {
                let (routes, borrowed) = s.routes_for(n);
                assert_eq!(
                    (&routes, &borrowed),
                    (
                        &crate::routing::routes_for(n, &affs, &nodes, &eps),
                        &crate::routing::borrowed_by(n, &affs, &eps)
                    ),
                    "on {n} after step {step}"
                );
                borrowed_seen += borrowed.len();
                checks += 1;
            }
        }
        assert!(
            checks > 4_000 && borrowed_seen > 1_000,
            "{checks} checks, {borrowed_seen} borrowed"
        );
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
