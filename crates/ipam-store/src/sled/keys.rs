//! Key layout of the sled store: every key is a kind byte followed by fields that sort, byte by
//! byte, in the same order as `ipam_core::Key`, so each `Range` is one sled range scan.
//!
//! ```text
//! 0x00 "format"                                    store metadata (format version)
//! 0x00 "probe"                                     write probe (readiness), a timestamp
//! 0x01                                             config
//! 0x02 name                                        pool
//! 0x03 name                                        node
//! 0x04 net                                         block
//! 0x05 node 0x00 net                               affinity
//! 0x06 id                                          handle
//! 0x07 net chunk:u64be                             index chunk (net = the pool)
//! 0x08 net                                         pool index
//! 0x09 node 0x00 id                                workload endpoint (id = handle "/" ifname)
//! 0x0a name                                        reservation
//! net = family (0x04 | 0x06), address (4 | 16 bytes, big-endian), prefix length (1 byte)
//! ```
//!
//! Names never contain 0x00 (node names are `[A-Za-z0-9._-]`), so the 0x00 after the node keeps
//! "a" before "a-b", as `String` order does.

use ipam_core::cidr::{self, Family};
use ipam_core::{Key, Range};
use ipnetwork::IpNetwork;

/// Metadata key holding the store format version.
pub const FORMAT_KEY: &[u8] = b"\x00format";

/// Metadata key rewritten by [`crate::SledStore`]'s write probe (readiness checks).
pub const PROBE_KEY: &[u8] = b"\x00probe";

const CONFIG: u8 = 0x01;
const POOL: u8 = 0x02;
const NODE: u8 = 0x03;
const BLOCK: u8 = 0x04;
const AFFINITY: u8 = 0x05;
const HANDLE: u8 = 0x06;
const CHUNK: u8 = 0x07;
const POOL_INDEX: u8 = 0x08;
const ENDPOINT: u8 = 0x09;
const RESERVATION: u8 = 0x0a;

fn put_net(out: &mut Vec<u8>, net: &IpNetwork) {
    match net {
        IpNetwork::V4(n) => {
            out.push(4);
            out.extend_from_slice(&n.network().octets());
        }
        IpNetwork::V6(n) => {
            out.push(6);
            out.extend_from_slice(&n.network().octets());
        }
    }
    out.push(net.prefix());
}

fn take_net(b: &[u8]) -> Option<(IpNetwork, &[u8])> {
    let (fam, rest) = b.split_first()?;
    let (family, n) = match fam {
        4 => (Family::V4, 4),
        6 => (Family::V6, 16),
        _ => return None,
    };
    if rest.len() < n + 1 {
        return None;
    }
    let addr = rest[..n]
        .iter()
        .fold(0u128, |acc, &x| (acc << 8) | u128::from(x));
    let net = cidr::network(family, addr, rest[n])?;
    // Host bits set would mean a key this layout never writes.
    (cidr::base(&net) == addr).then_some((net, &rest[n + 1..]))
}

/// The bytes of a key.
pub fn encode(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    match key {
        Key::Config => out.push(CONFIG),
        Key::Pool(n) => {
            out.push(POOL);
            out.extend_from_slice(n.as_bytes());
        }
        Key::Node(n) => {
            out.push(NODE);
            out.extend_from_slice(n.as_bytes());
        }
        Key::Block(c) => {
            out.push(BLOCK);
            put_net(&mut out, c);
        }
        Key::Affinity { node, cidr } => {
            out.push(AFFINITY);
            out.extend_from_slice(node.as_bytes());
            out.push(0);
            put_net(&mut out, cidr);
        }
        Key::Handle(h) => {
            out.push(HANDLE);
            out.extend_from_slice(h.as_bytes());
        }
        Key::IndexChunk { pool, chunk } => {
            out.push(CHUNK);
            put_net(&mut out, pool);
            out.extend_from_slice(&chunk.to_be_bytes());
        }
        Key::PoolIndex(p) => {
            out.push(POOL_INDEX);
            put_net(&mut out, p);
        }
        Key::Reservation(n) => {
            out.push(RESERVATION);
            out.extend_from_slice(n.as_bytes());
        }
        Key::Endpoint { node, id } => {
            out.push(ENDPOINT);
            out.extend_from_slice(node.as_bytes());
            out.push(0);
            out.extend_from_slice(id.as_bytes());
        }
    }
    out
}

/// The key of some bytes, if they are a key this layout writes.
pub fn decode(b: &[u8]) -> Option<Key> {
    let (kind, rest) = b.split_first()?;
    let text = |r: &[u8]| String::from_utf8(r.to_vec()).ok();
    match *kind {
        CONFIG if rest.is_empty() => Some(Key::Config),
        POOL => text(rest).map(Key::Pool),
        NODE => text(rest).map(Key::Node),
        HANDLE => text(rest).map(Key::Handle),
        RESERVATION => text(rest).map(Key::Reservation),
        BLOCK => match take_net(rest)? {
            (net, []) => Some(Key::Block(net)),
            _ => None,
        },
        POOL_INDEX => match take_net(rest)? {
            (net, []) => Some(Key::PoolIndex(net)),
            _ => None,
        },
        AFFINITY => {
            let z = rest.iter().position(|&x| x == 0)?;
            let node = text(&rest[..z])?;
            match take_net(&rest[z + 1..])? {
                (cidr, []) => Some(Key::Affinity { node, cidr }),
                _ => None,
            }
        }
        ENDPOINT => {
            let z = rest.iter().position(|&x| x == 0)?;
            Some(Key::Endpoint {
                node: text(&rest[..z])?,
                id: text(&rest[z + 1..])?,
            })
        }
        CHUNK => {
            let (pool, tail) = take_net(rest)?;
            let chunk = u64::from_be_bytes(tail.try_into().ok()?);
            Some(Key::IndexChunk { pool, chunk })
        }
        _ => None,
    }
}

/// A readable name for bytes under which a record failed to decode.
pub fn describe(b: &[u8]) -> String {
    match decode(b) {
        Some(k) => k.to_string(),
        None => format!("raw key {}", escape(b)),
    }
}

fn escape(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() {
                (c as char).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect()
}

/// The byte range (inclusive start, exclusive end) that holds every key of `range`. Some
/// ranges hold extra keys (a pool's range may hold blocks of another prefix length), so callers
/// still filter with `Range::contains`.
pub fn bounds(range: &Range) -> (Vec<u8>, Vec<u8>) {
    let prefix_of = |kind: u8, tail: &[u8]| {
        let mut start = vec![kind];
        start.extend_from_slice(tail);
        let end = successor(&start);
        (start, end)
    };
    match range {
        Range::Pools => prefix_of(POOL, &[]),
        Range::Nodes => prefix_of(NODE, &[]),
        Range::Blocks => prefix_of(BLOCK, &[]),
        Range::Affinities => prefix_of(AFFINITY, &[]),
        Range::Handles => prefix_of(HANDLE, &[]),
        Range::Endpoints => prefix_of(ENDPOINT, &[]),
        Range::Reservations => prefix_of(RESERVATION, &[]),
        Range::EndpointsOf(n) => {
            let mut t = n.as_bytes().to_vec();
            t.push(0);
            prefix_of(ENDPOINT, &t)
        }
        Range::AffinitiesOf(n) => {
            let mut t = n.as_bytes().to_vec();
            t.push(0);
            prefix_of(AFFINITY, &t)
        }
        Range::IndexChunksOf(p) => {
            let mut t = Vec::new();
            put_net(&mut t, p);
            prefix_of(CHUNK, &t)
        }
        Range::BlocksIn(net) => {
            let net = cidr::masked(*net);
            let fam = match net {
                IpNetwork::V4(_) => 4u8,
                IpNetwork::V6(_) => 6u8,
            };
            let width = usize::from(Family::of_net(&net).bits() / 8);
            let base = cidr::base(&net);
            let hb = cidr::host_bits(&net);
            let last = if hb >= 128 {
                u128::MAX
            } else {
                base | ((1u128 << hb) - 1)
            };
            let bytes = |v: u128| v.to_be_bytes()[16 - width..].to_vec();
            let mut start = vec![BLOCK, fam];
            start.extend(bytes(base));
            let mut end = vec![BLOCK, fam];
            end.extend(bytes(last));
            end.push(0xff);
            (start, successor(&end))
        }
    }
}

/// The smallest byte string greater than every string that starts with `p`.
fn successor(p: &[u8]) -> Vec<u8> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return s;
        }
    }
    vec![0xff; p.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().expect("a valid literal")
    }

    fn keys() -> Vec<Key> {
        vec![
            Key::Config,
            Key::Pool("a".into()),
            Key::Pool("a-b".into()),
            Key::Node("n1".into()),
            Key::Block(n("10.0.0.0/26")),
            Key::Block(n("10.0.0.64/26")),
            Key::Block(n("10.0.1.0/26")),
            Key::Block(n("fd00::/122")),
            Key::Affinity {
                node: "a".into(),
                cidr: n("10.0.0.0/26"),
            },
            Key::Affinity {
                node: "a-b".into(),
                cidr: n("10.0.0.0/26"),
            },
            Key::Handle("net.c1".into()),
            Key::IndexChunk {
                pool: n("10.0.0.0/16"),
                chunk: 0,
            },
            Key::IndexChunk {
                pool: n("10.0.0.0/16"),
                chunk: 300,
            },
            Key::PoolIndex(n("10.0.0.0/16")),
            Key::Endpoint {
                node: "a".into(),
                id: "h/eth0".into(),
            },
            Key::Endpoint {
                node: "ab".into(),
                id: "h/eth0".into(),
            },
        ]
    }

    #[test]
    fn round_trip_and_order_match_the_core() {
        let ks = keys();
        for k in &ks {
            assert_eq!(decode(&encode(k)).as_ref(), Some(k));
        }
        for w in ks.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
            assert!(
                encode(&w[0]) < encode(&w[1]),
                "{} < {} as bytes",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn bounds_cover_their_ranges() {
        let ks = keys();
        for r in [
            Range::Pools,
            Range::Blocks,
            Range::BlocksIn(n("10.0.0.0/24")),
            Range::BlocksIn(n("10.0.0.64/26")),
            Range::AffinitiesOf("a".into()),
            Range::EndpointsOf("a".into()),
            Range::IndexChunksOf(n("10.0.0.0/16")),
        ] {
            let (s, e) = bounds(&r);
            for k in &ks {
                let b = encode(k);
                if r.contains(k) {
                    assert!(s <= b && b < e, "{k} in {r:?}");
                }
            }
        }
        let (s, e) = bounds(&Range::AffinitiesOf("a".into()));
        let ab = encode(&Key::Affinity {
            node: "a-b".into(),
            cidr: n("10.0.0.0/26"),
        });
        assert!(!(s <= ab && ab < e), "prefix of another node is excluded");
        let (s, e) = bounds(&Range::EndpointsOf("a".into()));
        let eb = encode(&Key::Endpoint {
            node: "ab".into(),
            id: "h/eth0".into(),
        });
        assert!(
            !(s <= eb && eb < e),
            "a node whose name extends it is excluded"
        );
    }

    #[test]
    fn garbage_keys_do_not_decode() {
        for b in [
            &b""[..],
            b"\x04\x05",
            b"\x04\x04\x0a\x00\x00\x01\x18",
            b"\x09",
            b"\x05abc",
        ] {
            assert!(decode(b).is_none(), "{b:?}");
        }
        assert_eq!(describe(b"\x0bzz"), "raw key \\x0bzz");
    }
}
