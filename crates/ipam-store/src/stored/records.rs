//! The plain records' stored forms. Field order is the encoding (postcard writes fields in
//! declaration order, enums as their variant index): never reorder, only add a new version.

use super::network;
use ipam_core::cidr::Cidr;
use ipam_core::{
    Affinity, AffinityState, AllowedUse, AssignmentMode, Bitmap, Endpoint, Handle, IndexChunk,
    IpamConfig, Node, Pool, PoolIndex, PoolParts, Reservation, Selector,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A network written as its text.
struct NetText(ipnetwork::IpNetwork);

impl Serialize for NetText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Networks written as their texts, in order.
struct NetTexts<'a>(&'a [ipnetwork::IpNetwork]);

impl Serialize for NetTexts<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().copied().map(NetText))
    }
}

fn networks(texts: Vec<String>, what: &str) -> Result<Vec<ipnetwork::IpNetwork>, String> {
    texts.iter().map(|t| network(t, what)).collect()
}

/// The cluster configuration. Small and copied: one type encodes and decodes.
#[derive(Serialize, Deserialize)]
pub struct ConfigV1 {
    strict_affinity: bool,
    auto_allocate_blocks: bool,
    max_blocks_per_host: u32,
    ip_cooldown_seconds: u32,
}

impl TryFrom<ConfigV1> for IpamConfig {
    type Error = String;
    fn try_from(c: ConfigV1) -> Result<IpamConfig, String> {
        let config = IpamConfig {
            strict_affinity: c.strict_affinity,
            auto_allocate_blocks: c.auto_allocate_blocks,
            max_blocks_per_host: c.max_blocks_per_host,
            ip_cooldown_seconds: c.ip_cooldown_seconds,
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

impl From<&IpamConfig> for ConfigV1 {
    fn from(c: &IpamConfig) -> ConfigV1 {
        ConfigV1 {
            strict_affinity: c.strict_affinity,
            auto_allocate_blocks: c.auto_allocate_blocks,
            max_blocks_per_host: c.max_blocks_per_host,
            ip_cooldown_seconds: c.ip_cooldown_seconds,
        }
    }
}

/// What a pool's addresses may be used for; variant order is the encoding.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum AllowedUseV1 {
    Workload,
    Tunnel,
    LoadBalancer,
}

impl From<AllowedUseV1> for AllowedUse {
    fn from(u: AllowedUseV1) -> AllowedUse {
        match u {
            AllowedUseV1::Workload => AllowedUse::Workload,
            AllowedUseV1::Tunnel => AllowedUse::Tunnel,
            AllowedUseV1::LoadBalancer => AllowedUse::LoadBalancer,
        }
    }
}

impl From<AllowedUse> for AllowedUseV1 {
    fn from(u: AllowedUse) -> AllowedUseV1 {
        match u {
            AllowedUse::Workload => AllowedUseV1::Workload,
            AllowedUse::Tunnel => AllowedUseV1::Tunnel,
            AllowedUse::LoadBalancer => AllowedUseV1::LoadBalancer,
        }
    }
}

/// Whether a pool is used unasked; variant order is the encoding.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum AssignmentModeV1 {
    Automatic,
    Manual,
}

/// A pool, decoded.
#[derive(Deserialize)]
pub struct PoolV1 {
    name: String,
    cidr: String,
    block_size: u8,
    node_selector: String,
    disabled: bool,
    allowed_uses: Vec<AllowedUseV1>,
    assignment_mode: AssignmentModeV1,
}

/// A pool, borrowed for encoding.
#[derive(Serialize)]
pub struct PoolV1Ref<'a> {
    name: &'a str,
    cidr: NetText,
    block_size: u8,
    node_selector: &'a str,
    disabled: bool,
    allowed_uses: Vec<AllowedUseV1>,
    assignment_mode: AssignmentModeV1,
}

impl TryFrom<PoolV1> for Pool {
    type Error = String;
    fn try_from(p: PoolV1) -> Result<Pool, String> {
        let pool = PoolParts {
            cidr: network(&p.cidr, "pool")?,
            name: p.name,
            block_size: p.block_size,
            node_selector: Selector::parse(&p.node_selector).map_err(|e| e.to_string())?,
            disabled: p.disabled,
            allowed_uses: p.allowed_uses.into_iter().map(AllowedUse::from).collect(),
            assignment_mode: match p.assignment_mode {
                AssignmentModeV1::Automatic => AssignmentMode::Automatic,
                AssignmentModeV1::Manual => AssignmentMode::Manual,
            },
        };
        Pool::try_from(pool).map_err(|e| e.to_string())
    }
}

impl<'a> From<&'a Pool> for PoolV1Ref<'a> {
    fn from(p: &'a Pool) -> PoolV1Ref<'a> {
        PoolV1Ref {
            name: p.name(),
            cidr: NetText(p.cidr()),
            block_size: p.block_size(),
            node_selector: p.node_selector().as_str(),
            disabled: p.is_disabled(),
            allowed_uses: p.allowed_uses().iter().map(|&u| u.into()).collect(),
            assignment_mode: match p.assignment_mode() {
                AssignmentMode::Automatic => AssignmentModeV1::Automatic,
                AssignmentMode::Manual => AssignmentModeV1::Manual,
            },
        }
    }
}

/// A node, decoded.
#[derive(Deserialize)]
pub struct NodeV1 {
    name: String,
    labels: BTreeMap<String, String>,
    addresses: Vec<IpAddr>,
}

/// A node as format 1 first stored it (before nodes had addresses); still read.
#[derive(Deserialize)]
pub struct NodeV0 {
    name: String,
    labels: BTreeMap<String, String>,
}

/// A node, borrowed for encoding.
#[derive(Serialize)]
pub struct NodeV1Ref<'a> {
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
    addresses: &'a [IpAddr],
}

fn node(
    name: String,
    labels: BTreeMap<String, String>,
    addresses: Vec<IpAddr>,
) -> Result<Node, String> {
    Node::from_parts(name, labels, addresses)
}

impl TryFrom<NodeV1> for Node {
    type Error = String;
    fn try_from(n: NodeV1) -> Result<Node, String> {
        node(n.name, n.labels, n.addresses)
    }
}

impl TryFrom<NodeV0> for Node {
    type Error = String;
    fn try_from(n: NodeV0) -> Result<Node, String> {
        node(n.name, n.labels, Vec::new())
    }
}

impl<'a> From<&'a Node> for NodeV1Ref<'a> {
    fn from(n: &'a Node) -> NodeV1Ref<'a> {
        NodeV1Ref {
            name: n.name(),
            labels: n.labels(),
            addresses: n.addresses(),
        }
    }
}

/// An affinity's state; variant order is the encoding.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum AffinityStateV1 {
    Pending,
    Confirmed,
    PendingDeletion,
}

/// An affinity, decoded.
#[derive(Deserialize)]
pub struct AffinityV1 {
    node: String,
    cidr: String,
    state: AffinityStateV1,
}

/// An affinity, borrowed for encoding.
#[derive(Serialize)]
pub struct AffinityV1Ref<'a> {
    node: &'a str,
    cidr: NetText,
    state: AffinityStateV1,
}

impl TryFrom<AffinityV1> for Affinity {
    type Error = String;
    fn try_from(a: AffinityV1) -> Result<Affinity, String> {
        let state = match a.state {
            AffinityStateV1::Pending => AffinityState::Pending,
            AffinityStateV1::Confirmed => AffinityState::Confirmed,
            AffinityStateV1::PendingDeletion => AffinityState::PendingDeletion,
        };
        Ok(Affinity::new(&a.node, network(&a.cidr, "affinity")?, state))
    }
}

impl<'a> From<&'a Affinity> for AffinityV1Ref<'a> {
    fn from(a: &'a Affinity) -> AffinityV1Ref<'a> {
        AffinityV1Ref {
            node: a.node(),
            cidr: NetText(a.cidr()),
            state: match a.state() {
                AffinityState::Pending => AffinityStateV1::Pending,
                AffinityState::Confirmed => AffinityStateV1::Confirmed,
                AffinityState::PendingDeletion => AffinityStateV1::PendingDeletion,
            },
        }
    }
}

/// A handle, decoded: its blocks as (network, count) pairs in address order (the bytes of a
/// map and of a list of pairs are the same).
#[derive(Deserialize)]
pub struct HandleV1 {
    id: String,
    blocks: Vec<(String, u32)>,
}

/// A handle, borrowed for encoding.
#[derive(Serialize)]
pub struct HandleV1Ref<'a> {
    id: &'a str,
    blocks: HandleBlocks<'a>,
}

struct HandleBlocks<'a>(&'a ipam_core::HandleBlocks);

impl Serialize for HandleBlocks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(c, n)| (NetText(c.0), n)))
    }
}

impl TryFrom<HandleV1> for Handle {
    type Error = String;
    fn try_from(h: HandleV1) -> Result<Handle, String> {
        let mut blocks = BTreeMap::new();
        for (text, n) in h.blocks {
            let c = network(&text, "handle block")?;
            if blocks.insert(Cidr(c), n).is_some() {
                return Err(format!("block {c} listed twice"));
            }
        }
        Handle::from_parts(h.id, blocks)
    }
}

impl<'a> From<&'a Handle> for HandleV1Ref<'a> {
    fn from(h: &'a Handle) -> HandleV1Ref<'a> {
        HandleV1Ref {
            id: h.id(),
            blocks: HandleBlocks(h.blocks()),
        }
    }
}

/// A chunk of a pool's claim index, decoded. The bitmap's length and words are written in
/// line (a nested struct's bytes are its fields' bytes).
#[derive(Deserialize)]
pub struct IndexChunkV1 {
    pool: String,
    chunk: u64,
    claimed_len: u32,
    claimed_words: Vec<u64>,
}

/// A chunk of a pool's claim index, borrowed for encoding.
#[derive(Serialize)]
pub struct IndexChunkV1Ref<'a> {
    pool: NetText,
    chunk: u64,
    claimed_len: u32,
    claimed_words: &'a [u64],
}

impl TryFrom<IndexChunkV1> for IndexChunk {
    type Error = String;
    fn try_from(c: IndexChunkV1) -> Result<IndexChunk, String> {
        let len = c.claimed_len;
        let claimed = Bitmap::from_words(len, c.claimed_words).ok_or_else(|| {
            format!("bitmap of {len} bits has the wrong word count or set padding")
        })?;
        Ok(IndexChunk::from_parts(
            network(&c.pool, "index chunk")?,
            c.chunk,
            claimed,
        ))
    }
}

impl<'a> From<&'a IndexChunk> for IndexChunkV1Ref<'a> {
    fn from(c: &'a IndexChunk) -> IndexChunkV1Ref<'a> {
        IndexChunkV1Ref {
            pool: NetText(c.pool()),
            chunk: c.chunk(),
            claimed_len: c.claimed().len(),
            claimed_words: c.claimed().words(),
        }
    }
}

/// The full-chunk summary of a pool's claim index, decoded.
#[derive(Deserialize)]
pub struct PoolIndexV1 {
    pool: String,
    full_chunks: BTreeSet<u64>,
}

/// The summary, borrowed for encoding.
#[derive(Serialize)]
pub struct PoolIndexV1Ref<'a> {
    pool: NetText,
    full_chunks: &'a BTreeSet<u64>,
}

impl TryFrom<PoolIndexV1> for PoolIndex {
    type Error = String;
    fn try_from(p: PoolIndexV1) -> Result<PoolIndex, String> {
        Ok(PoolIndex::new(
            network(&p.pool, "pool index")?,
            p.full_chunks,
        ))
    }
}

impl<'a> From<&'a PoolIndex> for PoolIndexV1Ref<'a> {
    fn from(p: &'a PoolIndex) -> PoolIndexV1Ref<'a> {
        PoolIndexV1Ref {
            pool: NetText(p.pool()),
            full_chunks: p.full_chunks(),
        }
    }
}

/// A workload endpoint, decoded.
#[derive(Deserialize)]
pub struct EndpointV1 {
    node: String,
    id: String,
    network: String,
    container_id: String,
    ifname: String,
    handle_id: String,
    namespace: Option<String>,
    pod: Option<String>,
    host_ifname: String,
    mac: String,
    addresses: Vec<String>,
}

/// A workload endpoint, borrowed for encoding.
#[derive(Serialize)]
pub struct EndpointV1Ref<'a> {
    node: &'a str,
    id: &'a str,
    network: &'a str,
    container_id: &'a str,
    ifname: &'a str,
    handle_id: &'a str,
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    host_ifname: &'a str,
    mac: &'a str,
    addresses: NetTexts<'a>,
}

impl TryFrom<EndpointV1> for Endpoint {
    type Error = String;
    fn try_from(e: EndpointV1) -> Result<Endpoint, String> {
        let endpoint = Endpoint {
            addresses: networks(e.addresses, "endpoint address")?,
            node: e.node,
            id: e.id,
            network: e.network,
            container_id: e.container_id,
            ifname: e.ifname,
            handle_id: e.handle_id,
            namespace: e.namespace,
            pod: e.pod,
            host_ifname: e.host_ifname,
            mac: e.mac,
        };
        endpoint.validate()?;
        Ok(endpoint)
    }
}

impl<'a> From<&'a Endpoint> for EndpointV1Ref<'a> {
    fn from(e: &'a Endpoint) -> EndpointV1Ref<'a> {
        EndpointV1Ref {
            node: &e.node,
            id: &e.id,
            network: &e.network,
            container_id: &e.container_id,
            ifname: &e.ifname,
            handle_id: &e.handle_id,
            namespace: e.namespace.as_deref(),
            pod: e.pod.as_deref(),
            host_ifname: &e.host_ifname,
            mac: &e.mac,
            addresses: NetTexts(&e.addresses),
        }
    }
}

/// An IP reservation, decoded.
#[derive(Deserialize)]
pub struct ReservationV1 {
    name: String,
    cidr: String,
}

/// An IP reservation, borrowed for encoding.
#[derive(Serialize)]
pub struct ReservationV1Ref<'a> {
    name: &'a str,
    cidr: NetText,
}

impl TryFrom<ReservationV1> for Reservation {
    type Error = String;
    fn try_from(r: ReservationV1) -> Result<Reservation, String> {
        Reservation::new(r.name, network(&r.cidr, "reservation")?)
    }
}

impl<'a> From<&'a Reservation> for ReservationV1Ref<'a> {
    fn from(r: &'a Reservation) -> ReservationV1Ref<'a> {
        ReservationV1Ref {
            name: r.name(),
            cidr: NetText(r.cidr()),
        }
    }
}
