//! Pools, nodes and the cluster configuration.

use super::Ipam;
use crate::cidr;
use crate::datastore::{put, Datastore, Key, Range, Record, StoreExt, Write};
use crate::error::AdminError;
use crate::model::PoolParts;
use crate::model::{IpamConfig, Node, Pool};
use std::collections::BTreeMap;

impl<S: Datastore> Ipam<S> {
    /// Validates and stores the cluster configuration.
    pub fn set_config(&self, config: IpamConfig) -> Result<(), AdminError> {
        config.validate()?;
        self.retrying::<_, AdminError>("set config", || {
            let rev = self.store.get_config_rec(&Key::Config)?.map(|v| v.revision);
            self.commit(vec![put(Record::Config(config), rev)])?;
            Ok(())
        })
    }

    /// Creates a pool; refuses a duplicate name or a CIDR overlapping another pool.
    ///
    /// The overlap check reads every pool, and the store has no condition on "this range did
    /// not change". So every creation also rewrites the config record at the revision read
    /// before the listing: of two creations racing, one commits and the other conflicts,
    /// lists again and sees the first. Overlapping pools would give overlapping blocks, and two
    /// blocks holding one address would hand it out twice.
    pub fn create_pool(&self, pool: Pool) -> Result<(), AdminError> {
        pool.validate()?;
        self.retrying::<_, AdminError>("create pool", || {
            let config = self.store.get_config_rec(&Key::Config)?;
            for p in self.pools()? {
                if p.name == pool.name {
                    return Err(AdminError::PoolExists(format!(
                        "a pool named {} exists",
                        p.name
                    )));
                }
                if cidr::overlaps(&p.cidr, &pool.cidr) {
                    return Err(AdminError::PoolExists(format!(
                        "{} overlaps pool {} ({})",
                        pool.cidr, p.name, p.cidr
                    )));
                }
            }
            let (value, rev) = match config {
                Some(v) => (v.value, Some(v.revision)),
                None => (IpamConfig::default(), None),
            };
            self.commit(vec![
                Write::Create(Record::Pool(Box::new(pool.clone()))),
                put(Record::Config(value), rev),
            ])?;
            Ok(())
        })
    }

    /// Replaces pool `name` by `n` equal pools (`n` a power of two) named `<name>-0` ..
    /// `<name>-<n-1>`, with its settings, in one commit: every block, allocation and affinity
    /// stays (they are keyed by address, not by pool), and each new pool's claim index is built
    /// from the blocks inside it. Each new pool must still hold at least one block, so no block
    /// can straddle two of them. Racing claims are safe: a claim rewrites the old index it
    /// read, so one of the two commits conflicts and retries.
    pub fn split_pool(&self, name: &str, n: u32) -> Result<Vec<Pool>, AdminError> {
        if n < 2 || !n.is_power_of_two() {
            return Err(AdminError::InvalidArgument(format!(
                "split {name} into {n}: the count must be a power of two, at least 2"
            )));
        }
        let bits = u8::try_from(n.trailing_zeros()).unwrap_or(u8::MAX);
        self.retrying::<_, AdminError>("split pool", || {
            let v = self
                .store
                .get_pool(&Key::Pool(name.to_string()))?
                .ok_or_else(|| AdminError::UnknownPool(name.to_string()))?;
            let old = v.value;
            let prefix = old.cidr.prefix().saturating_add(bits);
            if prefix > old.block_size {
                return Err(AdminError::InvalidArgument(format!(
                    "pool {name} ({}) cannot be split into {n}: each part would be /{prefix}, smaller than its /{} blocks",
                    old.cidr, old.block_size
                )));
            }
            let family = crate::cidr::Family::of_net(&old.cidr);
            let step = 1u128 << (u32::from(family.bits()) - u32::from(prefix));
            let mut parts = Vec::with_capacity(n as usize);
            for i in 0..u128::from(n) {
                let net = crate::cidr::network(family, crate::cidr::base(&old.cidr) + i * step, prefix)
                    .ok_or_else(|| AdminError::InvalidArgument("split arithmetic".into()))?;
                let mut p = old.clone();
                p.name = format!("{name}-{i}");
                p.cidr = net;
                p.validate()?;
                if self.store.get_pool(&Key::Pool(p.name.clone()))?.is_some() {
                    return Err(AdminError::PoolExists(format!("a pool named {} exists", p.name)));
                }
                parts.push(p);
            }
            let mut writes = vec![Write::Delete {
                key: Key::Pool(name.to_string()),
                expected: v.revision,
            }];
            for c in self.store.list(&Range::IndexChunksOf(old.cidr))? {
                writes.push(Write::Delete {
                    key: c.value.key(),
                    expected: c.revision,
                });
            }
            if let Some(ix) = self.store.get(&Key::PoolIndex(old.cidr))? {
                writes.push(Write::Delete {
                    key: Key::PoolIndex(old.cidr),
                    expected: ix.revision,
                });
            }
            let blocks = self.store.list_blocks(&Range::BlocksIn(old.cidr))?;
            for p in &parts {
                let mut chunks: BTreeMap<u64, crate::model::IndexChunk> = BTreeMap::new();
                for b in &blocks {
                    if let Some(slot) = p.slot_of(&b.value.cidr) {
                        let (c, i) = crate::model::index::split_slot(slot);
                        chunks
                            .entry(c)
                            .or_insert_with(|| {
                                crate::model::IndexChunk::new(
                                    p.cidr,
                                    c,
                                    crate::model::index::chunk_len(p.block_count(), c),
                                )
                            })
                            .claimed
                            .set(i);
                    }
                }
                let full: std::collections::BTreeSet<u64> = chunks
                    .iter()
                    .filter(|(_, ch)| ch.claimed.is_full())
                    .map(|(c, _)| *c)
                    .collect();
                writes.push(Write::Create(Record::Pool(Box::new(p.clone()))));
                for ch in chunks.into_values() {
                    writes.push(Write::Create(Record::IndexChunk(ch)));
                }
                if !full.is_empty() {
                    writes.push(Write::Create(Record::PoolIndex(crate::model::PoolIndex {
                        pool: p.cidr,
                        full_chunks: full,
                    })));
                }
            }
            // Serialise with pool creations, as create_pool does.
            let config = self.store.get_config_rec(&Key::Config)?;
            let (value, rev) = match config {
                Some(v) => (v.value, Some(v.revision)),
                None => (IpamConfig::default(), None),
            };
            writes.push(put(Record::Config(value), rev));
            self.commit(writes)?;
            Ok(parts.clone())
        })
    }

    /// Changes a pool's mutable settings (disabled, selector, uses, mode); the CIDR and block
    /// size cannot change.
    pub fn update_pool(&self, name: &str, f: impl Fn(&mut PoolParts)) -> Result<Pool, AdminError> {
        self.retrying::<_, AdminError>("update pool", || {
            let v = self
                .store
                .get_pool(&Key::Pool(name.to_string()))?
                .ok_or_else(|| AdminError::UnknownPool(name.to_string()))?;
            let mut parts = v.value.to_parts();
            f(&mut parts);
            if parts.cidr != v.value.cidr
                || parts.block_size != v.value.block_size
                || parts.name != name
            {
                return Err(AdminError::InvalidArgument(
                    "a pool's name, CIDR and block size cannot change".into(),
                ));
            }
            let p = Pool::try_from(parts)?;
            self.commit(vec![Write::Update {
                record: Record::Pool(Box::new(p.clone())),
                expected: v.revision,
            }])?;
            Ok(p)
        })
    }

    /// Deletes a pool that has no blocks left (release its affinities first), with its claim
    /// index.
    pub fn delete_pool(&self, name: &str) -> Result<(), AdminError> {
        let cidr = self
            .store
            .get_pool(&Key::Pool(name.to_string()))?
            .ok_or_else(|| AdminError::UnknownPool(name.to_string()))?
            .value
            .cidr;
        let (cooling, until) = self.sweep_blocks(cidr)?;
        if cooling > 0 {
            let left_ns = until.saturating_sub(self.now());
            return Err(AdminError::PoolCooling {
                pool: name.to_string(),
                cooling,
                seconds_left: left_ns.div_ceil(1_000_000_000),
            });
        }
        self.retrying::<_, AdminError>("delete pool", || {
            let v = self
                .store
                .get_pool(&Key::Pool(name.to_string()))?
                .ok_or_else(|| AdminError::UnknownPool(name.to_string()))?;
            let blocks = self.store.list_blocks(&Range::BlocksIn(v.value.cidr))?;
            if !blocks.is_empty() {
                return Err(AdminError::PoolInUse {
                    pool: name.to_string(),
                    blocks: blocks.len(),
                    addresses: blocks.iter().map(|b| u64::from(b.value.used_count())).sum(),
                });
            }
            let mut writes = vec![Write::Delete {
                key: Key::Pool(name.to_string()),
                expected: v.revision,
            }];
            for c in self.store.list(&Range::IndexChunksOf(v.value.cidr))? {
                writes.push(Write::Delete {
                    key: c.value.key(),
                    expected: c.revision,
                });
            }
            if let Some(ix) = self.store.get(&Key::PoolIndex(v.value.cidr))? {
                writes.push(Write::Delete {
                    key: Key::PoolIndex(v.value.cidr),
                    expected: ix.revision,
                });
            }
            self.commit(writes)?;
            Ok(())
        })
    }

    /// Frees the cooling addresses whose time has come in every block inside `cidr`, and
    /// deletes the blocks that are then unused and affine to no node (nothing else writes to a
    /// block of a disabled pool, so without this they would stay forever). Returns how many
    /// addresses still cool there and when the last becomes reusable (ns).
    pub fn sweep_blocks(&self, cidr: ipnetwork::IpNetwork) -> Result<(u64, u64), AdminError> {
        let pools = self.pools()?;
        let (mut cooling, mut until) = (0u64, 0u64);
        for vb in self.store.list_blocks(&Range::BlocksIn(cidr))? {
            let c = vb.value.cidr;
            let left = self.retrying::<_, AdminError>("sweep block", || {
                let Some(vb) = self.store.get_block(&Key::Block(c))? else {
                    return Ok(None);
                };
                let mut b = vb.value;
                let changed = b.expire_cooling(self.now());
                let left = (u64::from(b.cooling_count()), b.cooling_until().unwrap_or(0));
                if changed || (b.is_unused() && b.affinity.is_none()) {
                    let writes = self.block_write_after_release(Some(&pools), vb.revision, b)?;
                    self.commit(writes)?;
                }
                Ok(Some(left))
            })?;
            if let Some((n, t)) = left {
                cooling += n;
                until = until.max(t);
            }
        }
        Ok((cooling, until))
    }

    /// The node record, if any.
    pub fn node(&self, name: &str) -> Result<Option<Node>, AdminError> {
        Ok(self
            .store
            .get_node(&Key::Node(name.to_string()))?
            .map(|v| v.value))
    }

    /// Every node record, in name order.
    pub fn nodes(&self) -> Result<Vec<Node>, AdminError> {
        Ok(self
            .store
            .list_nodes(&Range::Nodes)?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// Creates a node record or changes it with `f` (labels, addresses), in one
    /// compare-and-swap. Returns the record as stored.
    pub fn update_node(&self, name: &str, f: impl Fn(&mut Node)) -> Result<Node, AdminError> {
        let empty = Node::new(name).map_err(AdminError::InvalidArgument)?;
        self.retrying::<_, AdminError>("update node", || {
            let cur = self.store.get_node(&Key::Node(name.to_string()))?;
            let rev = cur.as_ref().map(|v| v.revision);
            let mut n = cur.map_or_else(|| empty.clone(), |v| v.value);
            // The setters keep a node valid; the name is not the closure's to change.
            f(&mut n);
            self.commit(vec![put(Record::Node(n.clone()), rev)])?;
            Ok(n)
        })
    }

    /// Adds an IP reservation: from now on nothing in `cidr` is handed out (holders of
    /// addresses already there keep them).
    pub fn add_reservation(
        &self,
        name: &str,
        cidr: ipnetwork::IpNetwork,
    ) -> Result<(), AdminError> {
        let r = crate::model::Reservation {
            name: name.to_string(),
            cidr: crate::cidr::masked(cidr),
        };
        r.validate().map_err(AdminError::InvalidArgument)?;
        match self.commit(vec![Write::Create(Record::Reservation(r))]) {
            Ok(_) => Ok(()),
            Err(crate::datastore::StoreError::Conflict { .. }) => Err(AdminError::InvalidArgument(
                format!("reservation {name} exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a reservation; true when there was one.
    pub fn delete_reservation(&self, name: &str) -> Result<bool, AdminError> {
        self.delete_if_present("delete reservation", Key::Reservation(name.to_string()))
    }

    /// Every reservation, by name.
    pub fn reservations(&self) -> Result<Vec<crate::model::Reservation>, AdminError> {
        Ok(self
            .store
            .list_reservations(&Range::Reservations)?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// Creates or replaces a node's labels (its addresses are kept).
    pub fn set_node(&self, name: &str, labels: BTreeMap<String, String>) -> Result<(), AdminError> {
        self.update_node(name, |n| n.labels = labels.clone())
            .map(|_| ())
    }
}
