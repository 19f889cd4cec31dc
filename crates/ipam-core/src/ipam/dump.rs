//! The whole IPAM state as one value ([`Dump`]), read from a store and written into another:
//! the basis of `ipamctl export` and `import` (sled to etcd and back).

use super::Ipam;
use crate::datastore::{all, one, Datastore, Key, Range, Read, Record, Versioned, Write};
use crate::error::AdminError;
use crate::model::{
    Affinity, Block, Endpoint, Handle, IndexChunk, IpamConfig, Node, Pool, PoolIndex, Reservation,
};
use serde::{Deserialize, Serialize};

/// Every record of a store, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// The cluster configuration, if one was stored.
    pub config: Option<IpamConfig>,
    /// Pools.
    pub pools: Vec<Pool>,
    /// Node records.
    pub nodes: Vec<Node>,
    /// Blocks, with every allocation.
    pub blocks: Vec<Block>,
    /// Affinities.
    pub affinities: Vec<Affinity>,
    /// Handles.
    pub handles: Vec<Handle>,
    /// Workload endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Block-claim index chunks.
    pub index_chunks: Vec<IndexChunk>,
    /// Block-claim index summaries.
    pub pool_indexes: Vec<PoolIndex>,
    /// IP reservations.
    #[serde(default)]
    pub reservations: Vec<Reservation>,
}

impl Dump {
    /// Every record, in an order that a store can create one by one.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        out.extend(self.config.map(Record::Config));
        out.extend(self.pools.iter().map(|p| Record::Pool(Box::new(p.clone()))));
        out.extend(self.nodes.iter().cloned().map(Record::Node));
        out.extend(self.blocks.iter().cloned().map(Record::Block));
        out.extend(self.affinities.iter().cloned().map(Record::Affinity));
        out.extend(self.handles.iter().cloned().map(Record::Handle));
        out.extend(
            self.endpoints
                .iter()
                .map(|e| Record::Endpoint(Box::new(e.clone()))),
        );
        out.extend(self.index_chunks.iter().cloned().map(Record::IndexChunk));
        out.extend(self.pool_indexes.iter().cloned().map(Record::PoolIndex));
        out.extend(self.reservations.iter().cloned().map(Record::Reservation));
        out
    }

    /// Checks every record with its own rules.
    pub fn validate(&self) -> Result<(), AdminError> {
        let bad = |what: String| AdminError::InvalidArgument(what);
        if let Some(c) = &self.config {
            c.validate()?;
        }
        for p in &self.pools {
            p.validate()?;
        }
        for n in &self.nodes {
            crate::model::node::validate_node_name(&n.name).map_err(bad)?;
        }
        for b in &self.blocks {
            b.validate()?;
        }
        for h in &self.handles {
            h.validate().map_err(bad)?;
        }
        for e in &self.endpoints {
            e.validate().map_err(bad)?;
        }
        for r in &self.reservations {
            r.validate().map_err(bad)?;
        }
        Ok(())
    }
}

/// Writes per commit when loading (etcd allows 128 operations per transaction).
const BATCH: usize = 100;

fn values<T>(x: Vec<Versioned<T>>) -> Vec<T> {
    x.into_iter().map(|v| v.value).collect()
}

impl<S: Datastore> Ipam<S> {
    /// Reads every record, in one batch (one snapshot on etcd).
    pub fn dump(&self) -> Result<Dump, AdminError> {
        Ok(self.dump_versioned()?.0)
    }

    fn dump_versioned(&self) -> Result<(Dump, Vec<Versioned<Record>>), AdminError> {
        let pools = all::<Pool>(self.store.list(&Range::Pools)?)?;
        let mut reads = vec![
            Read::Get(Key::Config),
            Read::List(Range::Pools),
            Read::List(Range::Nodes),
            Read::List(Range::Blocks),
            Read::List(Range::Affinities),
            Read::List(Range::Handles),
            Read::List(Range::Endpoints),
            Read::List(Range::Reservations),
        ];
        for p in &pools {
            reads.push(Read::List(Range::IndexChunksOf(p.value.cidr)));
            reads.push(Read::Get(Key::PoolIndex(p.value.cidr)));
        }
        let answers = self.store.read(&reads)?;
        let mut raw: Vec<Versioned<Record>> = answers.iter().flatten().cloned().collect();
        raw.sort_by_key(|a| a.value.key());
        raw.dedup_by(|a, b| a.value.key() == b.value.key());
        let mut it = answers.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let mut d = Dump {
            config: one::<IpamConfig>(next())?.map(|v| v.value),
            pools: values(all::<Pool>(next())?),
            nodes: values(all::<Node>(next())?),
            blocks: values(all::<Block>(next())?),
            affinities: values(all::<Affinity>(next())?),
            handles: values(all::<Handle>(next())?),
            endpoints: values(all::<Endpoint>(next())?),
            reservations: values(all::<Reservation>(next())?),
            ..Dump::default()
        };
        for _ in &pools {
            d.index_chunks.extend(values(all::<IndexChunk>(next())?));
            d.pool_indexes
                .extend(one::<PoolIndex>(next())?.map(|v| v.value));
        }
        Ok((d, raw))
    }

    /// Writes `d` into this store. A store that holds anything is refused unless `replace`,
    /// which deletes what it holds first. Writes go in commits of at most 100 records, so a
    /// failure part way leaves a partial state: the error says how far it got.
    pub fn load(&self, d: &Dump, replace: bool) -> Result<usize, AdminError> {
        d.validate()?;
        let (_, existing) = self.dump_versioned()?;
        if !existing.is_empty() && !replace {
            return Err(AdminError::InvalidArgument(format!(
                "the target store is not empty ({} records); import over it only when forced",
                existing.len()
            )));
        }
        for chunk in existing.chunks(BATCH) {
            self.commit(
                chunk
                    .iter()
                    .map(|v| Write::Delete {
                        key: v.value.key(),
                        expected: v.revision,
                    })
                    .collect(),
            )?;
        }
        let records = d.records();
        let mut done = 0;
        for chunk in records.chunks(BATCH) {
            self.commit(chunk.iter().cloned().map(Write::Create).collect())
                .map_err(|e| {
                    AdminError::InvalidArgument(format!(
                        "import stopped after {done} of {} records: {e}",
                        records.len()
                    ))
                })?;
            done += chunk.len();
        }
        Ok(done)
    }
}
