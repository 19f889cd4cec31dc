//! Read-only views: who holds an address, a handle's addresses, and utilisation.

use super::Ipam;
use crate::cidr;
use crate::datastore::{all, one, Datastore, Key, Range, Read, StoreError, StoreExt};
use crate::model::{Affinity, AllocAttrs, Block, Handle};

use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Who holds an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: IpAddr,
    /// Its block.
    pub block: IpNetwork,
    /// The block's node.
    pub block_affinity: Option<String>,
    /// Holder handle.
    pub handle_id: String,
    /// The holder: its handle id (as `handle_id`) and owner attributes, shared with the
    /// block it was read from.
    pub attrs: Arc<AllocAttrs>,
    /// Allocation sequence number.
    pub seq: u64,
}

/// One pool's numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Name.
    pub name: String,
    /// CIDR.
    pub cidr: Option<IpNetwork>,
    /// Addresses in the pool.
    pub capacity: u128,
    /// Blocks that exist.
    pub blocks: u64,
    /// Addresses held.
    pub in_use: u64,
    /// Host-reserved addresses.
    pub reserved: u64,
    /// Released addresses still cooling down.
    pub cooling: u64,
}

impl PoolUsage {
    /// Addresses neither held, reserved nor cooling.
    pub fn free(&self) -> u128 {
        self.capacity - u128::from(self.in_use + self.reserved + self.cooling)
    }
}

/// One block's numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockUsage {
    /// CIDR.
    pub cidr: IpNetwork,
    /// Pool name, if any pool holds it.
    pub pool: Option<String>,
    /// Node.
    pub affinity: Option<String>,
    /// Addresses.
    pub size: u32,
    /// Held.
    pub in_use: u32,
    /// Host-reserved.
    pub reserved: u32,
    /// Cooling.
    pub cooling: u32,
    /// Held by a node other than the block's (the `node` attribute differs).
    pub borrowed: u32,
}

/// One node's numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// Node.
    pub node: String,
    /// Blocks affine to it.
    pub blocks: Vec<IpNetwork>,
    /// Addresses held in its blocks.
    pub in_use: u64,
}

/// Utilisation of the whole store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Utilisation {
    /// Per pool, in name order.
    pub pools: Vec<PoolUsage>,
    /// Per block, in address order.
    pub blocks: Vec<BlockUsage>,
    /// Per node, in name order.
    pub nodes: Vec<NodeUsage>,
}

impl<S: Datastore> Ipam<S> {
    /// Who holds `ip`, if anyone.
    pub fn allocation(&self, ip: IpAddr) -> Result<Option<Allocation>, StoreError> {
        let pools = self.pools()?;
        let Some(c) = self.find_block_of(&pools, ip)? else {
            return Ok(None);
        };
        let Some(b) = self.store.get_block(&Key::Block(c))? else {
            return Ok(None);
        };
        let b = b.value;
        Ok(b.ordinal(ip).and_then(|o| {
            b.holder(o).map(|(a, seq)| Allocation {
                ip,
                block: c,
                block_affinity: b.affinity.as_deref().map(str::to_string),
                handle_id: a.handle_id().to_string(),
                attrs: a.clone(),
                seq,
            })
        }))
    }

    /// Every address held by `handle_id`, in block then address order.
    pub fn addresses_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, StoreError> {
        let Some(h) = self.store.get_handle(&Key::Handle(handle_id.to_string()))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for c in h.value.blocks.keys() {
            if let Some(b) = self.store.get_block(&Key::Block(c.0))? {
                out.extend(
                    b.value
                        .ordinals_of(handle_id)
                        .into_iter()
                        .map(|o| b.value.ip(o)),
                );
            }
        }
        Ok(out)
    }

    /// Every address held by `handle_id`, with its holder's attributes and sequence number.
    pub fn allocations_of_handle(&self, handle_id: &str) -> Result<Vec<Allocation>, StoreError> {
        self.allocations_of_handles(&[handle_id])
    }

    /// [`Ipam::allocations_of_handle`] for several handles, handle by handle: the handles in
    /// one read, then every block they name in one more (two round trips on etcd, however
    /// many handles and blocks).
    pub fn allocations_of_handles(&self, ids: &[&str]) -> Result<Vec<Allocation>, StoreError> {
        let reads: Vec<Read> = ids
            .iter()
            .map(|id| Read::Get(Key::Handle((*id).to_string())))
            .collect();
        let mut handles = Vec::with_capacity(ids.len());
        let mut cidrs: Vec<IpNetwork> = Vec::new();
        for answer in self.store.read(&reads)? {
            let h = one::<Handle>(answer)?.map(|v| v.value);
            for c in h.iter().flat_map(|h| h.blocks.keys()) {
                if !cidrs.contains(&c.0) {
                    cidrs.push(c.0);
                }
            }
            handles.push(h);
        }
        if cidrs.is_empty() {
            return Ok(Vec::new());
        }
        let reads: Vec<Read> = cidrs.iter().map(|c| Read::Get(Key::Block(*c))).collect();
        let mut blocks: BTreeMap<cidr::Cidr, Block> = BTreeMap::new();
        for answer in self.store.read(&reads)? {
            if let Some(b) = one::<Block>(answer)? {
                blocks.insert(cidr::Cidr(b.value.cidr), b.value);
            }
        }
        let mut out = Vec::new();
        for (id, h) in ids.iter().zip(&handles) {
            for c in h.iter().flat_map(|h| h.blocks.keys()) {
                let Some(b) = blocks.get(c) else { continue };
                for (o, a, seq) in b.used().filter(|(_, a, _)| a.handle_id() == *id) {
                    out.push(Allocation {
                        ip: b.ip(o),
                        block: b.cidr,
                        block_affinity: b.affinity.as_deref().map(str::to_string),
                        handle_id: (*id).to_string(),
                        attrs: a.clone(),
                        seq,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Ids of every handle whose id starts with `prefix`.
    pub fn handle_ids(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .list_handles(&Range::Handles)?
            .into_iter()
            .map(|h| h.value.id)
            .filter(|id| id.starts_with(prefix))
            .collect())
    }

    /// One node's figures from its own affinities and their blocks (two reads), where
    /// [`Ipam::utilisation`] reads every block of the store: what a node's service can report
    /// on every scrape of a large cluster. A block counts when its record still names the node
    /// (an affinity being released may outlive it).
    pub fn node_utilisation(&self, node: &str) -> Result<NodeUsage, StoreError> {
        let mut u = NodeUsage {
            node: node.to_string(),
            ..Default::default()
        };
        let listed = self
            .store
            .read(&[Read::List(Range::AffinitiesOf(node.to_string()))])?;
        let affinities = all::<Affinity>(listed.into_iter().next().unwrap_or_default())?;
        let reads: Vec<Read> = affinities
            .iter()
            .map(|a| Read::Get(Key::Block(a.value.cidr)))
            .collect();
        if reads.is_empty() {
            return Ok(u);
        }
        for answer in self.store.read(&reads)? {
            let Some(vb) = one::<Block>(answer)? else {
                continue;
            };
            if vb.value.affinity.as_deref() == Some(node) {
                u.blocks.push(vb.value.cidr);
                u.in_use += u64::from(vb.value.used_count());
            }
        }
        u.blocks.sort();
        Ok(u)
    }

    /// Utilisation per pool, block and node.
    pub fn utilisation(&self) -> Result<Utilisation, StoreError> {
        let pools = self.pools()?;
        let mut u = Utilisation {
            pools: pools
                .iter()
                .map(|p| PoolUsage {
                    name: p.name.clone(),
                    cidr: Some(p.cidr),
                    capacity: 1u128 << cidr::host_bits(&p.cidr),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut nodes: BTreeMap<String, NodeUsage> = BTreeMap::new();
        for vb in self.store.list_blocks(&Range::Blocks)? {
            let b = vb.value;
            let pi = pools
                .iter()
                .position(|p| cidr::contains_net(&p.cidr, &b.cidr));
            let borrowed = b
                .used()
                .filter(|(_, a, _)| a.get(super::ATTR_NODE) != b.affinity.as_deref())
                .count();
            let bu = BlockUsage {
                cidr: b.cidr,
                pool: pi.map(|i| pools[i].name.clone()),
                affinity: b.affinity.as_deref().map(str::to_string),
                size: b.size(),
                in_use: b.used_count(),
                reserved: b.reserved_count(),
                cooling: b.cooling_count(),
                borrowed: u32::try_from(borrowed).unwrap_or(u32::MAX),
            };
            if let Some(i) = pi {
                let pu = &mut u.pools[i];
                pu.blocks += 1;
                pu.in_use += u64::from(bu.in_use);
                pu.reserved += u64::from(bu.reserved);
                pu.cooling += u64::from(bu.cooling);
            }
            if let Some(n) = &b.affinity {
                let nu = nodes.entry(n.to_string()).or_insert_with(|| NodeUsage {
                    node: n.to_string(),
                    ..Default::default()
                });
                nu.blocks.push(b.cidr);
                nu.in_use += u64::from(bu.in_use);
            }
            u.blocks.push(bu);
        }
        u.nodes = nodes.into_values().collect();
        Ok(u)
    }
}
