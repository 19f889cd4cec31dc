//! Auto-assignment (affine blocks, then new blocks, then reclaim, then borrowing) and
//! assignment of a specific address.

use super::{fnv1a, pool_chunks, Ipam, ATTR_NODE};
use crate::cidr::{self, Family};
use crate::datastore::{
    all, one, put, Datastore, Key, Range, Read, Record, StoreError, StoreExt, Versioned, Write,
};
use crate::error::{AssignError, Contention, ReleaseError};
use crate::model::block::HostReserved;
use crate::model::handle::validate_handle_id;
use crate::model::index::{join_slot, split_slot};
use crate::model::node::validate_node_name;
use crate::model::{
    Affinity, AffinityState, AllocAttrs, AllowedUse, AssignmentMode, Block, Handle, IpamConfig,
    Pool, PoolRef,
};
use ipnetwork::IpNetwork;
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A request for automatically chosen addresses.
#[derive(Clone, Debug)]
pub struct AutoAssignArgs {
    /// IPv4 addresses wanted.
    pub num_v4: usize,
    /// IPv6 addresses wanted.
    pub num_v6: usize,
    /// The handle the addresses are held under (CNI: `<network>.<container id>`).
    pub handle_id: String,
    /// Owner attributes stored with each address (the node is added as `node`).
    pub attrs: BTreeMap<String, String>,
    /// The requesting node.
    pub node: String,
    /// IPv4 pools to use, by name or CIDR; empty means every pool that selects the node.
    pub v4_pools: Vec<PoolRef>,
    /// IPv6 pools, likewise.
    pub v6_pools: Vec<PoolRef>,
    /// Per-request cap on the node's blocks; 0 uses the cluster configuration.
    pub max_blocks_per_host: u32,
    /// Addresses reserved in each block this request creates.
    pub host_reserved: HostReserved,
    /// What the addresses are for.
    pub intended_use: AllowedUse,
    /// Return what could be assigned instead of failing (dual-stack is still all-or-nothing
    /// across families).
    pub allow_partial: bool,
    /// Assign only if the handle holds no address yet, else fail with
    /// [`AssignError::HandleHolds`] and write nothing. The handle is read with the rest of
    /// the request anyway, so a caller that must not assign twice to one holder (a repeated
    /// CNI ADD) learns it without a read of its own.
    pub only_if_unheld: bool,
}

impl AutoAssignArgs {
    /// A request for `num_v4` IPv4 addresses for a workload on `node`.
    pub fn v4(node: &str, handle_id: &str, num_v4: usize) -> Self {
        AutoAssignArgs {
            num_v4,
            num_v6: 0,
            handle_id: handle_id.to_string(),
            attrs: BTreeMap::new(),
            node: node.to_string(),
            v4_pools: Vec::new(),
            v6_pools: Vec::new(),
            max_blocks_per_host: 0,
            host_reserved: HostReserved::default(),
            intended_use: AllowedUse::Workload,
            allow_partial: false,
            only_if_unheld: false,
        }
    }
}

/// One assigned address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssignedIp {
    /// The address.
    pub ip: IpAddr,
    /// The block it came from.
    pub block: IpNetwork,
    /// The allocation's sequence number (for guarded release).
    pub seq: u64,
}

impl AssignedIp {
    /// The address with its block's prefix length (what Calico returns to CNI).
    pub fn with_block_prefix(&self) -> IpNetwork {
        IpNetwork::new(self.ip, self.block.prefix()).expect("block prefix fits the family")
    }
}

/// What one family of a request got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyAssignment {
    /// Addresses requested.
    pub requested: usize,
    /// Addresses assigned.
    pub ips: Vec<AssignedIp>,
    /// Pools that were candidates.
    pub pools: Vec<IpNetwork>,
}

impl FamilyAssignment {
    /// True when fewer were assigned than requested.
    pub fn is_short(&self) -> bool {
        self.ips.len() < self.requested
    }
}

/// The outcome of an auto-assign.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoAssignResult {
    /// IPv4 part.
    pub v4: FamilyAssignment,
    /// IPv6 part.
    pub v6: FamilyAssignment,
}

/// A request for one specific address.
#[derive(Clone, Debug)]
pub struct AssignIpArgs {
    /// The address.
    pub ip: IpAddr,
    /// Holder handle.
    pub handle_id: String,
    /// Owner attributes (the node is added as `node`).
    pub attrs: BTreeMap<String, String>,
    /// Requesting node; if the address's block does not exist yet it is claimed for it.
    pub node: String,
    /// Reservation for a block this request creates.
    pub host_reserved: HostReserved,
}

/// Everything the per-family search needs, read once per request.
struct Ctx<'a> {
    args: &'a AutoAssignArgs,
    config: IpamConfig,
    attrs: Arc<AllocAttrs>,
    pools: Vec<Pool>,
    labels: BTreeMap<String, String>,
    /// The node's affinities, as read with the rest.
    affinities: Vec<Versioned<Affinity>>,
    /// IP reservations: never handed out.
    reserved: Vec<IpNetwork>,
    /// The handle and the node's last block as read with the rest, each used by the first
    /// write that needs it. A stale copy costs a lost compare-and-swap and a re-read, never a
    /// wrong write.
    handle: RefCell<Option<Option<Versioned<Handle>>>>,
    block: RefCell<Option<Versioned<Block>>>,
    /// The node's other blocks, read together once the walk passes the first (one round trip
    /// instead of one per block); each used once, as `block` is.
    prefetched: RefCell<Vec<Versioned<Block>>>,
}

impl Ctx<'_> {
    fn take_handle(&self) -> Option<Option<Versioned<Handle>>> {
        self.handle.borrow_mut().take()
    }

    fn take_block(&self, cidr: IpNetwork) -> Option<Versioned<Block>> {
        let mut b = self.block.borrow_mut();
        match b.take() {
            Some(v) if v.value.cidr == cidr => return Some(v),
            other => *b = other,
        }
        let mut more = self.prefetched.borrow_mut();
        let i = more.iter().position(|v| v.value.cidr == cidr)?;
        Some(more.swap_remove(i))
    }

    /// Whether the context holds a copy of block `cidr`.
    fn holds_block(&self, cidr: IpNetwork) -> bool {
        self.block
            .borrow()
            .as_ref()
            .is_some_and(|v| v.value.cidr == cidr)
            || self
                .prefetched
                .borrow()
                .iter()
                .any(|v| v.value.cidr == cidr)
    }
}

impl<S: Datastore> Ipam<S> {
    /// Assigns addresses chosen by the block-affinity algorithm. On a shortfall the error names
    /// the pools tried, unless `allow_partial`; when both families are asked for and either
    /// falls short, everything taken is released and the call fails.
    ///
    /// ```
    /// use ipam_core::{AutoAssignArgs, AssignError, Ipam, ManualClock, Pool};
    /// use std::sync::Arc;
    ///
    /// let ipam = Ipam::new(ipam_store::MemoryStore::new(), Arc::new(ManualClock::new(0)));
    /// // A /30 pool of /31 blocks holds four addresses.
    /// ipam.create_pool(Pool::with_block_size("tiny", "10.244.0.0/30".parse()?, 31)?)?;
    /// let got = ipam.auto_assign(&AutoAssignArgs::v4("node-a", "net.pod", 4))?;
    /// assert_eq!(got.v4.ips.len(), 4);
    /// // The fifth fails, naming the pools it tried, and takes nothing.
    /// let more = ipam.auto_assign(&AutoAssignArgs::v4("node-a", "net.late", 1));
    /// assert!(matches!(more, Err(AssignError::Exhausted { assigned: 0, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn auto_assign(&self, args: &AutoAssignArgs) -> Result<AutoAssignResult, AssignError> {
        validate_handle_id(&args.handle_id).map_err(AssignError::InvalidArgument)?;
        validate_node_name(&args.node).map_err(AssignError::InvalidArgument)?;
        self.auto_assign_batched(args)
    }

    /// One request on its own; the caller holds the node's lane (see `batch`).
    pub(super) fn assign_serial(
        &self,
        args: &AutoAssignArgs,
    ) -> Result<AutoAssignResult, AssignError> {
        let ctx = self.context(args)?;
        if args.only_if_unheld {
            if let Some(Some(h)) = &*ctx.handle.borrow() {
                if !h.value.is_empty() {
                    return Err(AssignError::HandleHolds(args.handle_id.clone()));
                }
            }
        }
        let mut result = AutoAssignResult::default();
        let dual = args.num_v4 > 0 && args.num_v6 > 0;
        if args.num_v4 > 0 {
            result.v4 = self.assign_family(&ctx, Family::V4, args.num_v4, &args.v4_pools)?;
            if result.v4.is_short() && (dual || !args.allow_partial) {
                self.undo(&ctx, &result.v4)?;
                return Err(self.exhausted(&ctx, Family::V4, &result.v4));
            }
        }
        if args.num_v6 > 0 {
            let v6 = self.assign_family(&ctx, Family::V6, args.num_v6, &args.v6_pools);
            let v6 = match v6 {
                Ok(v) => v,
                Err(e) => {
                    self.undo(&ctx, &result.v4)?;
                    return Err(e);
                }
            };
            if v6.is_short() && (dual || !args.allow_partial) {
                self.undo(&ctx, &result.v4)?;
                self.undo(&ctx, &v6)?;
                return Err(self.exhausted(&ctx, Family::V6, &v6));
            }
            result.v6 = v6;
        }
        Ok(result)
    }

    /// Everything the decision needs, in one batch: one round trip on a networked store.
    fn context<'a>(&self, args: &'a AutoAssignArgs) -> Result<Ctx<'a>, AssignError> {
        let hint = self.hint(&args.node);
        let mut reads = vec![
            Read::Get(Key::Config),
            Read::Get(Key::Node(args.node.clone())),
            Read::List(Range::Pools),
            Read::List(Range::AffinitiesOf(args.node.clone())),
            Read::Get(Key::Handle(args.handle_id.clone())),
            Read::List(Range::Reservations),
        ];
        if let Some(h) = hint {
            reads.push(Read::Get(Key::Block(h)));
        }
        let answers = self.store.read(&reads)?;
        if answers.len() != reads.len() {
            return Err(StoreError::Rejected(format!(
                "the store answered {} of {} reads",
                answers.len(),
                reads.len()
            ))
            .into());
        }
        let mut answers = answers.into_iter();
        let mut next = || answers.next().unwrap_or_default();
        let config = one::<IpamConfig>(next())?
            .map(|v| v.value)
            .unwrap_or_default();
        let labels = one::<crate::model::Node>(next())?
            .map(|n| n.value.labels)
            .unwrap_or_default();
        let pools = all::<Pool>(next())?.into_iter().map(|v| v.value).collect();
        let affinities = all::<Affinity>(next())?;
        let handle = one::<Handle>(next())?;
        let reserved = all::<crate::model::Reservation>(next())?
            .into_iter()
            .map(|v| v.value.cidr)
            .collect();
        let block = one::<Block>(next())?;
        Ok(Ctx {
            args,
            config,
            attrs: holder(&args.handle_id, &args.attrs, &args.node)?,
            pools,
            labels,
            affinities,
            reserved,
            handle: RefCell::new(Some(handle)),
            block: RefCell::new(block),
            prefetched: RefCell::new(Vec::new()),
        })
    }

    /// Whether [`Ipam::auto_assign`] of `args` could succeed now, without writing anything:
    /// the same candidate pools (node selectors, requested pools, allowed uses), then a free
    /// address in a block affine to the node, an unclaimed block while the node is under its
    /// block cap, or, without strict affinity, a free address anywhere in those pools. The
    /// error is the one the assignment would return. Reads every block of the candidate pools
    /// in the worst case: for readiness checks, not the assignment path.
    pub fn readiness(&self, args: &AutoAssignArgs) -> Result<(), AssignError> {
        validate_node_name(&args.node).map_err(AssignError::InvalidArgument)?;
        let ctx = self.context(args)?;
        for (family, num, requested) in [
            (Family::V4, args.num_v4, &args.v4_pools),
            (Family::V6, args.num_v6, &args.v6_pools),
        ] {
            if num == 0 {
                continue;
            }
            let pools = self.candidate_pools(&ctx, family, requested)?;
            let in_pools = |c: &IpNetwork| pools.iter().any(|p| cidr::contains_net(&p.cidr, c));
            let mut free = 0u128;
            let mut own_blocks = 0u32;
            for a in &ctx.affinities {
                if a.value.state != AffinityState::Confirmed
                    || Family::of_net(&a.value.cidr) != family
                {
                    continue;
                }
                own_blocks += 1;
                if !in_pools(&a.value.cidr) {
                    continue;
                }
                if let Some(b) = self.store.get_block(&Key::Block(a.value.cidr))? {
                    let mut b = b.value;
                    b.expire_cooling(self.now());
                    free += u128::from(b.free_count());
                }
            }
            if free >= num as u128 {
                continue;
            }
            let mut claimable = 0u128;
            let mut elsewhere = 0u128;
            for p in &pools {
                let blocks = self.store.list_blocks(&Range::BlocksIn(p.cidr))?;
                claimable += p.block_count().saturating_sub(blocks.len() as u128);
                for b in blocks {
                    if b.value.affinity.as_deref() == Some(args.node.as_str()) {
                        continue; // counted above
                    }
                    let mut b = b.value;
                    b.expire_cooling(self.now());
                    elsewhere += u128::from(b.free_count());
                }
            }
            let may_claim = ctx.config.auto_allocate_blocks
                && own_blocks < self.block_limit(&ctx)
                && claimable > 0;
            if may_claim {
                continue;
            }
            if !ctx.config.strict_affinity && free + elsewhere >= num as u128 {
                continue;
            }
            let got = FamilyAssignment {
                requested: num,
                ips: Vec::new(),
                pools: pools.iter().map(|p| p.cidr).collect(),
            };
            return Err(self.exhausted(&ctx, family, &got));
        }
        Ok(())
    }

    fn exhausted(&self, ctx: &Ctx<'_>, family: Family, got: &FamilyAssignment) -> AssignError {
        let limit = self.block_limit(ctx);
        let reason = if ctx.config.strict_affinity {
            format!(
                "strict affinity is on: node {} may use only its own blocks, at most {limit}",
                ctx.args.node
            )
        } else {
            String::new()
        };
        AssignError::Exhausted {
            family,
            requested: got.requested,
            assigned: got.ips.len(),
            pools: got.pools.clone(),
            reason,
        }
    }

    /// Gives back what a failed request took, guarded by handle and sequence number (so it can
    /// never free someone else's address) and retried through transient failures, because
    /// "all or nothing" must hold even when the store stumbles. If it still cannot, the store's
    /// error is returned instead of the request's, so the caller knows the outcome is unknown
    /// (a CNI runtime then runs DEL, which releases by handle).
    fn undo(&self, ctx: &Ctx<'_>, got: &FamilyAssignment) -> Result<(), AssignError> {
        let reqs: Vec<_> = got
            .ips
            .iter()
            .map(|a| super::ReleaseRequest {
                block: Some(a.block),
                ..super::ReleaseRequest::guarded(a.ip, &ctx.args.handle_id, a.seq)
            })
            .collect();
        Ok(self.release_retrying(&reqs)?)
    }

    fn block_limit(&self, ctx: &Ctx<'_>) -> u32 {
        if ctx.args.max_blocks_per_host > 0 {
            ctx.args.max_blocks_per_host
        } else {
            ctx.config.block_limit()
        }
    }

    fn candidate_pools<'c>(
        &self,
        ctx: &'c Ctx<'_>,
        family: Family,
        requested: &[PoolRef],
    ) -> Result<SmallVec<[&'c Pool; 4]>, AssignError> {
        candidate_pools(
            &ctx.pools,
            &ctx.labels,
            &ctx.args.node,
            ctx.args.intended_use,
            family,
            requested,
        )
    }

    fn assign_family(
        &self,
        ctx: &Ctx<'_>,
        family: Family,
        num: usize,
        requested: &[PoolRef],
    ) -> Result<FamilyAssignment, AssignError> {
        let pools = self.candidate_pools(ctx, family, requested)?;
        let mut got = FamilyAssignment {
            requested: num,
            ips: Vec::with_capacity(num),
            pools: pools.iter().map(|p| p.cidr).collect(),
        };
        let node = ctx.args.node.as_str();
        let in_pools = |c: &IpNetwork| pools.iter().position(|p| cidr::contains_net(&p.cidr, c));

        // 1. Blocks already affine to the node, in pool order then address order.
        // Read with the request; a family's pass changes only its own family's affinities.
        let affs = &ctx.affinities;
        let mut mine: Vec<(usize, IpNetwork)> = Vec::new();
        let mut family_blocks = 0u32;
        for a in affs {
            if Family::of_net(&a.value.cidr) != family {
                continue;
            }
            if a.value.state == AffinityState::Confirmed {
                family_blocks += 1;
            }
            match in_pools(&a.value.cidr) {
                Some(i) if a.value.state == AffinityState::Confirmed => {
                    mine.push((i, a.value.cidr))
                }
                Some(_) => {}
                None if requested.is_empty() => {
                    // A pool that no longer selects this node: give back the block if empty.
                    let still_selected = ctx.pools.iter().any(|p| {
                        cidr::contains_net(&p.cidr, &a.value.cidr)
                            && !p.disabled
                            && p.node_selector.matches(&ctx.labels)
                    });
                    if !still_selected
                        && self
                            .release_affinity(a.value.cidr, node, true)
                            .unwrap_or(false)
                    {
                        family_blocks -= 1;
                    }
                }
                None => {}
            }
        }
        mine.sort_by(|a, b| a.0.cmp(&b.0).then(cidr::net_cmp(&a.1, &b.1)));
        // The block this node last used usually has room: try it first within its pool.
        if let Some(h) = self.hint(node) {
            if let Some(pos) = mine.iter().position(|(_, c)| *c == h) {
                let first_of_pool = mine
                    .iter()
                    .position(|(p, _)| *p == mine[pos].0)
                    .unwrap_or(pos);
                let item = mine.remove(pos);
                mine.insert(first_of_pool, item);
            }
        }
        for (i, (_, c)) in mine.iter().enumerate() {
            if got.ips.len() >= num {
                break;
            }
            if i == 1 {
                // The first block (usually the node's last) did not do: the rest are often
                // full too, so read them in one batch rather than one round trip each.
                self.prefetch_blocks(ctx, mine[1..].iter().map(|(_, c)| *c))?;
            }
            let more = self.assign_from_block(ctx, *c, num - got.ips.len(), Some(node))?;
            if !more.is_empty() {
                self.set_hint(node, *c);
            }
            got.ips.extend(more);
        }

        // 2. New blocks, while the node is under its limit.
        let limit = self.block_limit(ctx);
        while got.ips.len() < num && ctx.config.auto_allocate_blocks && family_blocks < limit {
            let want = num - got.ips.len();
            let mut claimed = None;
            for p in &pools {
                if let Some(ips) = self.claim_and_assign(ctx, p, want)? {
                    claimed = Some(ips);
                    break;
                }
            }
            if claimed.is_none() {
                if let Some(c) = self.reclaim_empty_block(&pools, node)? {
                    claimed = Some(self.assign_from_block(ctx, c, want, Some(node))?);
                }
            }
            match claimed {
                Some(ips) => {
                    if let Some(a) = ips.first() {
                        self.set_hint(node, a.block);
                    }
                    family_blocks += 1;
                    got.ips.extend(ips);
                }
                None => break,
            }
        }

        // 3. Borrow from any block of the candidate pools.
        if got.ips.len() < num && !ctx.config.strict_affinity {
            'pools: for p in &pools {
                for b in self.store.list_blocks(&Range::BlocksIn(p.cidr))? {
                    if got.ips.len() >= num {
                        break 'pools;
                    }
                    let blk = &b.value;
                    if blk.free_count() == 0 && blk.cooling_count() == 0 {
                        continue;
                    }
                    let more = self.assign_from_block(ctx, blk.cidr, num - got.ips.len(), None)?;
                    got.ips.extend(more);
                }
            }
        }
        Ok(got)
    }

    /// Reads the blocks of `cidrs` that `ctx` does not hold, in one batch, into `ctx`; with
    /// fewer than two to read it reads nothing (a lone block is read where it is used).
    fn prefetch_blocks(
        &self,
        ctx: &Ctx<'_>,
        cidrs: impl Iterator<Item = IpNetwork>,
    ) -> Result<(), StoreError> {
        let reads: Vec<Read> = cidrs
            .filter(|c| !ctx.holds_block(*c))
            .map(|c| Read::Get(Key::Block(c)))
            .collect();
        if reads.len() < 2 {
            return Ok(());
        }
        let answers = self.store.read(&reads)?;
        let mut got = ctx.prefetched.borrow_mut();
        for a in answers {
            got.extend(one::<Block>(a)?);
        }
        Ok(())
    }

    /// Takes up to `n` addresses from an existing block (only if still affine to `affine_to`,
    /// when given), counting them under the handle in the same commit.
    fn assign_from_block(
        &self,
        ctx: &Ctx<'_>,
        cidr: IpNetwork,
        n: usize,
        affine_to: Option<&str>,
    ) -> Result<Vec<AssignedIp>, AssignError> {
        self.retrying::<_, AssignError>("assign", || {
            let known = ctx.take_block(cidr);
            let Some(vb) = (match known {
                Some(v) => Some(v),
                None => self.store.get_block(&Key::Block(cidr))?,
            }) else {
                return Ok(Vec::new());
            };
            let mut block = vb.value;
            if let Some(node) = affine_to {
                if block.affinity.as_deref() != Some(node) {
                    return Ok(Vec::new());
                }
            }
            block.expire_cooling(self.now());
            let seq = block.seq;
            let ords = block.allocate_avoiding(n, &ctx.attrs, &ctx.reserved);
            if ords.is_empty() {
                return Ok(Vec::new());
            }
            let ips: Vec<AssignedIp> = ords
                .iter()
                .map(|&o| AssignedIp {
                    ip: block.ip(o),
                    block: cidr,
                    seq,
                })
                .collect();
            let handle_write =
                self.handle_add(&ctx.args.handle_id, cidr, ords.len(), ctx.take_handle())?;
            self.commit(vec![
                Write::Update {
                    record: Record::Block(block),
                    expected: vb.revision,
                },
                handle_write,
            ])?;
            Ok(ips)
        })
    }

    /// The write that adds `n` addresses in `block` to a handle (creating it if needed), from
    /// the handle as `known` (already read, `Some(None)` when absent) or as read now.
    pub(super) fn handle_add(
        &self,
        id: &str,
        block: IpNetwork,
        n: usize,
        known: Option<Option<Versioned<Handle>>>,
    ) -> Result<Write, AssignError> {
        let current = match known {
            Some(h) => h,
            None => self.store.get_handle(&Key::Handle(id.to_string()))?,
        };
        let (mut h, rev) = match current {
            Some(v) => (v.value, Some(v.revision)),
            None => (Handle::new(id), None),
        };
        h.add(block, u32::try_from(n).unwrap_or(u32::MAX));
        Ok(put(Record::Handle(h), rev))
    }

    /// Finds an unclaimed block slot of `pool` through the claim index, starting at the node's
    /// own point, and claims it for the node with `n` addresses taken, in one commit. `None`
    /// when every slot of the pool is claimed.
    fn claim_and_assign(
        &self,
        ctx: &Ctx<'_>,
        pool: &Pool,
        n: usize,
    ) -> Result<Option<Vec<AssignedIp>>, AssignError> {
        let node = ctx.args.node.as_str();
        let slots = pool.block_count();
        let chunks = pool_chunks(pool);
        let pool_text = pool.cidr.to_string();
        let h1 = fnv1a(self.opts.seed, &[node.as_bytes(), pool_text.as_bytes()]);
        let h2 = fnv1a(!self.opts.seed, &[node.as_bytes(), pool_text.as_bytes()]);
        let start = ((u128::from(h2) << 64) | u128::from(h1)) % slots;
        let (start_chunk, start_offset) = split_slot(start);
        for _ in 0..self.opts.max_retries {
            let full = self
                .store
                .get_pool_index(&Key::PoolIndex(pool.cidr))?
                .map(|v| v.value.full_chunks)
                .unwrap_or_default();
            // The first chunk from the start that is not full; `full` bounds the walk.
            let mut c = start_chunk;
            let mut steps = 0usize;
            while full.contains(&c) {
                c = (c + 1) % chunks;
                steps += 1;
                if steps > full.len() {
                    return Ok(None);
                }
            }
            let (_, mut chunk, chunk_rev) = self.index_chunk(pool, c)?;
            let from = if c == start_chunk { start_offset } else { 0 };
            let Some(i) = chunk.claimed.first_zero_from(from) else {
                // Full but not summarised (a lost race): record it and look again.
                let w = self.pool_index_write(pool.cidr, |f| {
                    f.insert(c);
                })?;
                match self.commit(vec![w]) {
                    Ok(_) | Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            let cidr = pool.block_at(join_slot(c, i));
            let now = self.now();
            let mut block = Block::new(cidr, Some(node.into()), ctx.args.host_reserved, now)?;
            let seq = block.seq;
            let ords = block.allocate_avoiding(n, &ctx.attrs, &ctx.reserved);
            chunk.claimed.set(i);
            let mut writes = vec![
                Write::Create(Record::Block(block.clone())),
                Write::Create(Record::Affinity(Affinity::confirmed(node, cidr))),
                put(Record::IndexChunk(chunk.clone()), chunk_rev),
            ];
            if chunk.claimed.is_full() {
                writes.push(self.pool_index_write(pool.cidr, |f| {
                    f.insert(c);
                })?);
            }
            if !ords.is_empty() {
                writes.push(self.handle_add(
                    &ctx.args.handle_id,
                    cidr,
                    ords.len(),
                    ctx.take_handle(),
                )?);
            }
            match self.commit(writes) {
                Ok(_) => {
                    return Ok(Some(
                        ords.iter()
                            .map(|&o| AssignedIp {
                                ip: block.ip(o),
                                block: cidr,
                                seq,
                            })
                            .collect(),
                    ))
                }
                Err(StoreError::Conflict { key, .. }) => {
                    self.repair_claim_conflict(&key)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Contention {
            operation: "claim block",
            attempts: self.opts.max_retries,
        }
        .into())
    }

    /// After a lost claim: if the block exists but the index did not know (written by an
    /// older writer, or repaired by hand), mark it claimed; if a stale non-confirmed affinity
    /// was in the way, remove it. Other conflicts just mean "re-read".
    fn repair_claim_conflict(&self, key: &Key) -> Result<(), AssignError> {
        let res = match key {
            Key::Block(cidr) => {
                if self.store.get_block(key)?.is_none() {
                    return Ok(());
                }
                let pools = self.pools()?;
                let w = self.index_writes(&pools, cidr, true)?;
                self.commit(w)
            }
            Key::Affinity { cidr, .. } => {
                let block_exists = self.store.get_block(&Key::Block(*cidr))?.is_some();
                match self.store.get_affinity(key)? {
                    Some(a) if !block_exists || a.value.state != AffinityState::Confirmed => self
                        .commit(vec![Write::Delete {
                            key: key.clone(),
                            expected: a.revision,
                        }]),
                    _ => {
                        let pools = self.pools()?;
                        let w = self.index_writes(&pools, cidr, true)?;
                        self.commit(w)
                    }
                }
            }
            _ => Ok(crate::datastore::Revision(0)),
        };
        match res {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// When no slot is free: take over a block affine to another node that has been empty for
    /// longer than the grace period. Lists the pools' blocks, so it runs only once a pool is
    /// fully claimed.
    fn reclaim_empty_block(
        &self,
        pools: &[&Pool],
        node: &str,
    ) -> Result<Option<IpNetwork>, AssignError> {
        let now = self.now();
        for p in pools {
            for vb in self.store.list_blocks(&Range::BlocksIn(p.cidr))? {
                let b = &vb.value;
                let Some(owner) = b.affinity.clone() else {
                    continue;
                };
                let idle = b
                    .empty_since
                    .is_some_and(|t| now.saturating_sub(t) >= self.opts.reclaim_grace_ns);
                if *owner == *node || !b.is_unused() || !idle {
                    continue;
                }
                let mut nb = vb.value.clone();
                nb.affinity = Some(node.into());
                nb.empty_since = Some(now);
                nb.touch();
                let old_key = Key::Affinity {
                    node: owner.to_string(),
                    cidr: b.cidr,
                };
                let mut writes = vec![
                    Write::Update {
                        record: Record::Block(nb),
                        expected: vb.revision,
                    },
                    Write::Create(Record::Affinity(Affinity::confirmed(node, b.cidr))),
                ];
                if let Some(a) = self.store.get_affinity(&old_key)? {
                    writes.push(Write::Delete {
                        key: old_key,
                        expected: a.revision,
                    });
                }
                match self.commit(writes) {
                    Ok(_) => return Ok(Some(b.cidr)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(None)
    }

    /// Assigns several specific addresses to one holder, all or nothing: when one cannot be
    /// had, the ones already taken are released (guarded by handle and sequence number, retried
    /// through transient store failures) and the first failure is returned. If the store keeps
    /// refusing the release, its error is returned instead, so the caller knows the outcome is
    /// unknown and releases by handle (CNI: the runtime's DEL).
    pub fn assign_ips(&self, reqs: &[AssignIpArgs]) -> Result<Vec<AssignedIp>, AssignError> {
        let mut taken: Vec<AssignedIp> = Vec::with_capacity(reqs.len());
        for r in reqs {
            match self.assign_ip(r) {
                Ok(a) => taken.push(a),
                Err(e) => {
                    let undo: Vec<_> = taken
                        .iter()
                        .zip(reqs)
                        .map(|(a, r)| super::ReleaseRequest {
                            block: Some(a.block),
                            ..super::ReleaseRequest::guarded(a.ip, &r.handle_id, a.seq)
                        })
                        .collect();
                    self.release_retrying(&undo)?;
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    /// Releases `reqs` through transient failures (the undo of a failed request, made while
    /// the node's lane is held: so it takes no lane).
    fn release_retrying(&self, reqs: &[super::ReleaseRequest]) -> Result<(), ReleaseError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..self.opts.max_retries {
            match self.release_ips_taking_turns(reqs, false) {
                Ok(_) => return Ok(()),
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(
            Contention {
                operation: "undo",
                attempts: self.opts.max_retries,
            }
            .into(),
        ))
    }

    /// Assigns one specific address. If its block does not exist yet, the block is created
    /// affine to the requesting node (unaffine when `auto_allocate_blocks` is off). With strict
    /// affinity, an address in a block affine to another node is refused.
    pub fn assign_ip(&self, args: &AssignIpArgs) -> Result<AssignedIp, AssignError> {
        validate_handle_id(&args.handle_id).map_err(AssignError::InvalidArgument)?;
        validate_node_name(&args.node).map_err(AssignError::InvalidArgument)?;
        let pools = self.pools()?;
        let pool = pools
            .iter()
            .find(|p| p.cidr.contains(args.ip))
            .ok_or(AssignError::NotInPool(args.ip))?;
        if pool.disabled {
            return Err(AssignError::PoolDisabled(pool.name.clone()));
        }
        let cidr = pool
            .block_for(args.ip)
            .ok_or(AssignError::NotInPool(args.ip))?;
        let config = self.config()?;
        if let Some(r) = self
            .store
            .list_reservations(&Range::Reservations)?
            .into_iter()
            .find(|r| r.value.cidr.contains(args.ip))
        {
            return Err(AssignError::Reserved {
                ip: args.ip,
                reservation: r.value.name,
            });
        }
        let attrs = holder(&args.handle_id, &args.attrs, &args.node)?;
        self.retrying::<_, AssignError>("assign ip", || {
            let mut writes = Vec::with_capacity(5);
            let (mut block, rev) = match self.store.get_block(&Key::Block(cidr))? {
                Some(v) => (v.value, Some(v.revision)),
                None => {
                    let affinity = config.auto_allocate_blocks.then(|| args.node.clone());
                    if let Some(n) = &affinity {
                        writes.push(Write::Create(Record::Affinity(Affinity::confirmed(
                            n, cidr,
                        ))));
                    }
                    writes.extend(self.index_writes(&pools, &cidr, true)?);
                    (
                        Block::new(
                            cidr,
                            affinity.map(Into::into),
                            args.host_reserved,
                            self.now(),
                        )?,
                        None,
                    )
                }
            };
            if let Some(owner) = &block.affinity {
                if config.strict_affinity && **owner != *args.node {
                    return Err(AssignError::AffinityConflict {
                        cidr,
                        owner: owner.to_string(),
                    });
                }
            }
            block.expire_cooling(self.now());
            let seq = block.seq;
            let ord = block.allocate_ip(args.ip, &attrs).map_err(|e| match e {
                crate::model::block::BlockError::InUse(ip) => AssignError::AlreadyAllocated(ip),
                other => AssignError::Block(other),
            })?;
            writes.push(put(Record::Block(block), rev));
            writes.push(self.handle_add(&args.handle_id, cidr, 1, None)?);
            self.commit(writes)?;
            let _ = ord;
            Ok(AssignedIp {
                ip: args.ip,
                block: cidr,
                seq,
            })
        })
    }
}

/// Who an assignment's addresses are stored as held by: the handle and the owner attributes,
/// with the assigning node recorded under [`ATTR_NODE`] unless the caller named one. Refused
/// (nothing written) when larger than [`crate::MAX_HOLDER_BYTES`].
pub(super) fn holder<'a>(
    handle_id: &str,
    attrs: &'a BTreeMap<String, String>,
    node: &'a str,
) -> Result<Arc<AllocAttrs>, AssignError> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    // In key order (a map's), the node's pair in its place unless the map has one.
    let pair = |(k, v): (&'a String, &'a String)| (k.as_str(), v.as_str());
    let before = attrs
        .range::<str, _>((Unbounded, Excluded(ATTR_NODE)))
        .map(pair);
    let rest = attrs
        .range::<str, _>((Included(ATTR_NODE), Unbounded))
        .map(pair);
    let own = (!attrs.contains_key(ATTR_NODE)).then_some((ATTR_NODE, node));
    AllocAttrs::from_ordered(handle_id, before.chain(own).chain(rest))
        .map(Arc::new)
        .map_err(|e| AssignError::InvalidArgument(e.to_string()))
}

/// The pools a request of `family` may take addresses from, in order: the requested ones
/// (each must exist, be enabled, of the family and allow `use_`), else every enabled automatic
/// pool of the family that allows `use_` and selects the node's `labels`.
pub(super) fn candidate_pools<'c>(
    pools: &'c [Pool],
    labels: &BTreeMap<String, String>,
    node: &str,
    use_: AllowedUse,
    family: Family,
    requested: &[PoolRef],
) -> Result<SmallVec<[&'c Pool; 4]>, AssignError> {
    if !requested.is_empty() {
        let mut out = SmallVec::new();
        for r in requested {
            let pool = pools
                .iter()
                .find(|p| r.matches(p))
                .ok_or_else(|| AssignError::UnknownPool(r.to_string()))?;
            if pool.disabled {
                return Err(AssignError::PoolDisabled(pool.name.clone()));
            }
            if pool.family() != family {
                return Err(AssignError::PoolMismatch {
                    pool: pool.name.clone(),
                    why: format!("it is not an {family} pool"),
                });
            }
            if !pool.allows(use_) {
                return Err(AssignError::PoolMismatch {
                    pool: pool.name.clone(),
                    why: format!("it does not allow {use_:?} addresses"),
                });
            }
            if !out.iter().any(|p: &&Pool| p.name == pool.name) {
                out.push(pool);
            }
        }
        return Ok(out);
    }
    let out: SmallVec<[&Pool; 4]> = pools
        .iter()
        .filter(|p| selected(p, labels, use_, family))
        .collect();
    if out.is_empty() {
        return Err(no_pools(node, use_, family));
    }
    Ok(out)
}

/// Whether a request of `family` for `use_` that names no pool may take addresses from
/// `pool`, on a node labelled `labels`.
pub(super) fn selected(
    pool: &Pool,
    labels: &BTreeMap<String, String>,
    use_: AllowedUse,
    family: Family,
) -> bool {
    !pool.disabled
        && pool.family() == family
        && pool.assignment_mode == AssignmentMode::Automatic
        && pool.allows(use_)
        && pool.node_selector.matches(labels)
}

/// The refusal of a request that names no pool when no pool is [`selected`].
pub(super) fn no_pools(node: &str, use_: AllowedUse, family: Family) -> AssignError {
    AssignError::NoPools {
        family,
        node: node.to_string(),
        use_: format!("{use_:?}"),
    }
}
