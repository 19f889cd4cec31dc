//! Workload endpoint records: written by the main plugin when it wires an attachment, removed
//! when it unwires it, read by checks.

use super::Ipam;
use crate::datastore::{put, Datastore, Key, Range, Record, StoreExt};
use crate::error::AdminError;
use crate::model::Endpoint;

impl<S: Datastore> Ipam<S> {
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
    pub fn routes_for(
        &self,
        node: &str,
    ) -> Result<(Vec<crate::routing::Route>, Vec<ipnetwork::IpNetwork>), AdminError> {
        use crate::datastore::{all, Read};
        let answers = self.store.read(&[
            Read::List(Range::Affinities),
            Read::List(Range::Nodes),
            Read::List(Range::Endpoints),
        ])?;
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
        Ok((
            crate::routing::routes_for(node, &affs, &nodes, &eps),
            crate::routing::borrowed_by(node, &affs, &eps),
        ))
    }
}
