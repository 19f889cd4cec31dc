//! Claiming and releasing block affinities; removing a node.

use super::Ipam;
use crate::cidr;
use crate::datastore::{Datastore, Key, Range, Record, StoreExt, Write};
use crate::error::AffinityError;
use crate::model::block::HostReserved;
use crate::model::{Affinity, AffinityState, Block};
use ipnetwork::IpNetwork;

/// What releasing a set of affinities did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AffinityRelease {
    /// Affinities removed.
    pub released: usize,
    /// Of those, blocks deleted because they were empty.
    pub blocks_deleted: usize,
    /// Affinities kept because their block was not empty and emptiness was required.
    pub kept_non_empty: Vec<IpNetwork>,
}

impl<S: Datastore> Ipam<S> {
    /// Claims block `cidr` for `node`: creates the block if it does not exist, or takes an
    /// existing block that has no affinity. Claiming a block the node already has succeeds.
    pub fn claim_affinity(
        &self,
        cidr: IpNetwork,
        node: &str,
        reserved: HostReserved,
    ) -> Result<(), AffinityError> {
        crate::model::node::validate_node_name(node).map_err(AffinityError::InvalidArgument)?;
        let pools = self.pools()?;
        if !pools.iter().any(|p| p.slot_of(&cidr).is_some()) {
            return Err(AffinityError::NotABlock(cidr));
        }
        self.retrying::<_, AffinityError>("claim affinity", || {
            let aff_key = Key::Affinity {
                node: node.to_string(),
                cidr,
            };
            let aff = self.store.get_affinity(&aff_key)?;
            let mut writes = Vec::new();
            match self.store.get_block(&Key::Block(cidr))? {
                Some(vb) => match vb.value.affinity.as_deref() {
                    Some(owner) if owner == node => {
                        if aff
                            .as_ref()
                            .is_some_and(|a| a.value.state == AffinityState::Confirmed)
                        {
                            return Ok(());
                        }
                    }
                    Some(owner) => {
                        return Err(AffinityError::AffinityConflict {
                            cidr,
                            owner: owner.to_string(),
                        })
                    }
                    None => {
                        let mut b = vb.value;
                        b.affinity = Some(node.into());
                        b.touch();
                        writes.push(Write::Update {
                            record: Record::Block(b),
                            expected: vb.revision,
                        });
                    }
                },
                None => {
                    let b = Block::new(cidr, Some(node.into()), reserved, self.now())?;
                    writes.push(Write::Create(Record::Block(b)));
                    writes.extend(self.index_writes(&pools, &cidr, true)?);
                }
            }
            let rec = Record::Affinity(Affinity::confirmed(node, cidr));
            writes.push(match aff {
                Some(a) => Write::Update {
                    record: rec,
                    expected: a.revision,
                },
                None => Write::Create(rec),
            });
            self.commit(writes)?;
            Ok(())
        })
    }

    /// Releases `node`'s affinity for `cidr`. An empty block is deleted with it; a block that
    /// still holds addresses keeps them and loses its affinity, unless `require_empty`, which
    /// refuses. Returns false when there was no such affinity.
    pub fn release_affinity(
        &self,
        cidr: IpNetwork,
        node: &str,
        require_empty: bool,
    ) -> Result<bool, AffinityError> {
        let pools = self.pools()?;
        self.retrying::<_, AffinityError>("release affinity", || {
            let key = Key::Affinity {
                node: node.to_string(),
                cidr,
            };
            let aff = self.store.get_affinity(&key)?;
            let block = self.store.get_block(&Key::Block(cidr))?;
            let block_is_ours = block
                .as_ref()
                .is_some_and(|b| b.value.affinity.as_deref() == Some(node));
            if aff.is_none() && !block_is_ours {
                return Ok(false);
            }
            let mut writes = Vec::new();
            if let Some(vb) = block.filter(|_| block_is_ours) {
                if vb.value.is_unused() {
                    writes.push(Write::Delete {
                        key: Key::Block(cidr),
                        expected: vb.revision,
                    });
                    writes.extend(self.index_writes(&pools, &cidr, false)?);
                } else if require_empty {
                    return Err(AffinityError::BlockNotEmpty(cidr));
                } else {
                    let mut b = vb.value;
                    b.affinity = None;
                    b.touch();
                    writes.push(Write::Update {
                        record: Record::Block(b),
                        expected: vb.revision,
                    });
                }
            }
            if let Some(a) = aff {
                writes.push(Write::Delete {
                    key,
                    expected: a.revision,
                });
            }
            self.commit(writes)?;
            Ok(true)
        })
    }

    fn release_affinities(
        &self,
        affs: Vec<Affinity>,
        require_empty: bool,
    ) -> Result<AffinityRelease, AffinityError> {
        let mut out = AffinityRelease::default();
        for a in affs {
            let had_block = self.store.get(&Key::Block(a.cidr))?.is_some();
            match self.release_affinity(a.cidr, &a.node, require_empty) {
                Ok(true) => {
                    out.released += 1;
                    if had_block && self.store.get(&Key::Block(a.cidr))?.is_none() {
                        out.blocks_deleted += 1;
                    }
                }
                Ok(false) => {}
                Err(AffinityError::BlockNotEmpty(c)) => out.kept_non_empty.push(c),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Releases every affinity of `node`.
    pub fn release_host_affinities(
        &self,
        node: &str,
        require_empty: bool,
    ) -> Result<AffinityRelease, AffinityError> {
        let affs = self
            .store
            .list_affinities(&Range::AffinitiesOf(node.to_string()))?
            .into_iter()
            .map(|v| v.value)
            .collect();
        self.release_affinities(affs, require_empty)
    }

    /// Releases every affinity for blocks of pool `name` (blocks keep their addresses).
    pub fn release_pool_affinities(&self, name: &str) -> Result<AffinityRelease, AffinityError> {
        let pool = self
            .store
            .get_pool(&Key::Pool(name.to_string()))?
            .ok_or_else(|| AffinityError::UnknownPool(name.to_string()))?
            .value;
        let affs = self
            .store
            .list_affinities(&Range::Affinities)?
            .into_iter()
            .map(|v| v.value)
            .filter(|a| cidr::contains_net(&pool.cidr, &a.cidr))
            .collect();
        self.release_affinities(affs, false)
    }

    /// Removes a node from IPAM: releases its affinities (with `release_addresses`, first
    /// releases every address held in its blocks) and deletes its node record.
    pub fn remove_node(
        &self,
        node: &str,
        release_addresses: bool,
    ) -> Result<AffinityRelease, AffinityError> {
        if release_addresses {
            for a in self
                .store
                .list_affinities(&Range::AffinitiesOf(node.to_string()))?
            {
                if let Some(b) = self.store.get_block(&Key::Block(a.value.cidr))? {
                    let mut handles: Vec<String> = b
                        .value
                        .used()
                        .map(|(_, h, _)| h.handle_id().to_string())
                        .collect();
                    handles.dedup();
                    for h in handles {
                        self.release_by_handle(&h)?;
                    }
                }
            }
        }
        let out = self.release_host_affinities(node, false)?;
        self.retrying::<_, AffinityError>("remove node", || {
            if let Some(n) = self.store.get_node(&Key::Node(node.to_string()))? {
                self.commit(vec![Write::Delete {
                    key: Key::Node(node.to_string()),
                    expected: n.revision,
                }])?;
            }
            Ok(())
        })?;
        Ok(out)
    }
}
