//! Value layout of the sled and etcd stores.
//!
//! ```text
//! byte 0       layout: PLAIN (1) or COMPRESSED (2)
//! bytes 1..9   revision, u64 big-endian
//! bytes 9..    PLAIN: the record in postcard (serde, varint integers), the type given by the
//!              key kind: each record in its stored form (`crate::stored`), never the core's
//!              own types
//!              COMPRESSED: the length of those postcard bytes, u32 little-endian, then the
//!              bytes in LZ4's block format
//! ```
//!
//! A record whose postcard bytes reach [`COMPRESS_FROM`] is written compressed when that
//! saves at least an eighth: in practice a block with a few owners or more, whose owner
//! records repeat their attribute keys, network, interface and node (a full /26 of kubelet's
//! pods: about 20 KB plain, 4 KB compressed), so every write of it moves fewer bytes through
//! the store (etcd's request, log and database). Small records stay plain. Both layouts are
//! read; builds before the compressed layout read only the plain one.
//!
//! Decoding checks the layout, decompresses (refusing a stated length that LZ4 could not
//! produce from the bytes given, so damaged bytes never make it allocate), decodes, validates
//! the record with the core's rules and checks that the record's own key is the key it was
//! stored under; any failure is `StoreError::Corrupt` naming the record.

use super::keys;
use crate::stored;
use ipam_core::{Key, Record, RecordLayout, Revision, StoreError, Versioned};

/// Layout byte of a value whose record is stored as is (format 1 of the record encodings).
pub const PLAIN: u8 = 1;

/// Layout byte of a value whose record (format 1) is stored compressed.
pub const COMPRESSED: u8 = 2;

/// Records whose encoding has at least this many bytes are tried compressed.
pub const COMPRESS_FROM: usize = 512;

/// The most bytes a compressed record may state it expands to: far above any record (a block
/// of the largest size with long owner records stays under a few MiB).
const MAX_RECORD: usize = 64 << 20;

const HEADER: usize = 9;

/// Encodes a record with its revision, compressed when that pays (see the module docs).
pub fn encode(record: &Record, rev: Revision) -> Result<Vec<u8>, StoreError> {
    encode_in(record, rev, RecordLayout::Compressed)
}

/// Encodes a record with its revision in `layout`: plain, or compressed when that pays.
pub fn encode_in(
    record: &Record,
    rev: Revision,
    layout: RecordLayout,
) -> Result<Vec<u8>, StoreError> {
    let out = encode_plain(record, rev)?;
    if layout == RecordLayout::Plain || out.len() - HEADER < COMPRESS_FROM {
        return Ok(out);
    }
    Ok(compressed(&out).unwrap_or(out))
}

/// The layout a stored value is in, from its first byte (`None`: not a value of this codec).
pub fn layout_of(value: &[u8]) -> Option<RecordLayout> {
    match value.first() {
        Some(&PLAIN) => Some(RecordLayout::Plain),
        Some(&COMPRESSED) => Some(RecordLayout::Compressed),
        _ => None,
    }
}

/// The value stored under `key` as it is written in `layout`, or `None` when it is written
/// so already (a small record is plain in every layout). The value is decoded and validated
/// first: a corrupt one is an error and is never rewritten.
pub fn transcode(
    key: &[u8],
    value: &[u8],
    layout: RecordLayout,
) -> Result<Option<Vec<u8>>, StoreError> {
    let v = decode(key, value)?;
    let out = encode_in(&v.value, v.revision, layout)?;
    Ok((layout_of(&out) != layout_of(value)).then_some(out))
}

/// The compressed layout of the plain value `plain`, if it saves at least an eighth.
fn compressed(plain: &[u8]) -> Option<Vec<u8>> {
    let body = &plain[HEADER..];
    let len = u32::try_from(body.len()).ok()?;
    let start = HEADER + 4;
    let mut out = vec![0; start + lz4_flex::block::get_maximum_output_size(body.len())];
    out[0] = COMPRESSED;
    out[1..HEADER].copy_from_slice(&plain[1..HEADER]);
    out[HEADER..start].copy_from_slice(&len.to_le_bytes());
    let n = lz4_flex::block::compress_into(body, &mut out[start..]).ok()?;
    if start + n > HEADER + body.len() - body.len() / 8 {
        return None;
    }
    out.truncate(start + n);
    Some(out)
}

/// Encodes a record with its revision, never compressed.
pub fn encode_plain(record: &Record, rev: Revision) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.push(PLAIN);
    out.extend_from_slice(&rev.0.to_be_bytes());
    let body = match record {
        Record::Config(x) => postcard::to_extend(&stored::ConfigV1::from(x), out),
        Record::Pool(x) => postcard::to_extend(&stored::PoolV1Ref::from(&**x), out),
        Record::Node(x) => postcard::to_extend(&stored::NodeV1Ref::from(x), out),
        Record::Block(x) => postcard::to_extend(&stored::BlockV1Ref::from(x), out),
        Record::Affinity(x) => postcard::to_extend(&stored::AffinityV1Ref::from(x), out),
        Record::Handle(x) => postcard::to_extend(&stored::HandleV1Ref::from(x), out),
        Record::IndexChunk(x) => postcard::to_extend(&stored::IndexChunkV1Ref::from(x), out),
        Record::PoolIndex(x) => postcard::to_extend(&stored::PoolIndexV1Ref::from(x), out),
        Record::Endpoint(x) => postcard::to_extend(&stored::EndpointV1Ref::from(&**x), out),
        Record::Reservation(x) => postcard::to_extend(&stored::ReservationV1Ref::from(x), out),
    };
    body.map_err(|e| StoreError::Rejected(format!("cannot encode {}: {e}", record.key())))
}

/// The revision of a stored value, without decoding the record.
pub fn revision(value: &[u8]) -> Option<Revision> {
    let b: [u8; 8] = value.get(1..HEADER)?.try_into().ok()?;
    Some(Revision(u64::from_be_bytes(b)))
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: keys::describe(key),
        reason: reason.into(),
    }
}

/// Decodes and validates the value stored under `key`.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Versioned<Record>, StoreError> {
    let k = keys::decode(key).ok_or_else(|| corrupt(key, "key does not follow the layout"))?;
    let Some(&byte) = value.first() else {
        return Err(corrupt(key, "empty value"));
    };
    let Some(layout) = layout_of(value) else {
        return Err(corrupt(
            key,
            format!("record layout {byte}, this build reads {PLAIN} and {COMPRESSED}"),
        ));
    };
    let revision = revision(value).ok_or_else(|| corrupt(key, "value shorter than its header"))?;
    let unpacked;
    let body = if layout == RecordLayout::Compressed {
        unpacked = decompress(key, &value[HEADER..])?;
        &unpacked[..]
    } else {
        &value[HEADER..]
    };
    fn de<'a, T: serde::Deserialize<'a>>(key: &[u8], b: &'a [u8]) -> Result<T, StoreError> {
        match postcard::take_from_bytes::<T>(b) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(corrupt(key, format!("{} trailing bytes", rest.len()))),
            Err(e) => Err(corrupt(key, format!("cannot decode: {e}"))),
        }
    }
    // Decode the stored form, then convert it into the core's type (which validates it).
    fn stored<'a, V: serde::Deserialize<'a>, T: TryFrom<V, Error = String>>(
        key: &[u8],
        b: &'a [u8],
    ) -> Result<T, StoreError> {
        T::try_from(de::<V>(key, b)?).map_err(|e| corrupt(key, format!("invalid: {e}")))
    }
    let record = match &k {
        Key::Config => Record::Config(stored::<stored::ConfigV1, _>(key, body)?),
        Key::Pool(_) => Record::Pool(Box::new(stored::<stored::PoolV1, _>(key, body)?)),
        Key::Node(_) => {
            let node: Result<ipam_core::Node, String> = match de::<stored::NodeV1>(key, body) {
                Ok(n) => n.try_into(),
                // Written before nodes had addresses.
                Err(first) => de::<stored::NodeV0>(key, body)
                    .map_err(|_| first)?
                    .try_into(),
            };
            Record::Node(node.map_err(|e| corrupt(key, format!("invalid: {e}")))?)
        }
        Key::Block(_) => Record::Block(stored::<stored::BlockV1, _>(key, body)?),
        Key::Affinity { .. } => Record::Affinity(stored::<stored::AffinityV1, _>(key, body)?),
        Key::Handle(_) => Record::Handle(stored::<stored::HandleV1, _>(key, body)?),
        Key::IndexChunk { .. } => Record::IndexChunk(stored::<stored::IndexChunkV1, _>(key, body)?),
        Key::PoolIndex(_) => Record::PoolIndex(stored::<stored::PoolIndexV1, _>(key, body)?),
        Key::Reservation(_) => Record::Reservation(stored::<stored::ReservationV1, _>(key, body)?),
        Key::Endpoint { .. } => {
            Record::Endpoint(Box::new(stored::<stored::EndpointV1, _>(key, body)?))
        }
    };
    if record.key() != k {
        return Err(corrupt(
            key,
            format!("holds the record of {}", record.key()),
        ));
    }
    Ok(Versioned {
        value: record,
        revision,
    })
}

/// The postcard bytes of a compressed value's body (its stated length, then LZ4).
fn decompress(key: &[u8], packed: &[u8]) -> Result<Vec<u8>, StoreError> {
    let Some((len, data)) = packed.split_first_chunk::<4>() else {
        return Err(corrupt(key, "compressed value shorter than its length"));
    };
    let len = u32::from_le_bytes(*len) as usize;
    // An LZ4 sequence of n bytes expands to at most about 255 n: a larger stated length is
    // damage, refused before anything is allocated for it.
    if len > MAX_RECORD || len > data.len().saturating_mul(256).saturating_add(64) {
        return Err(corrupt(
            key,
            format!("compressed value of {} bytes states {len}", data.len()),
        ));
    }
    let mut out = vec![0; len];
    match lz4_flex::block::decompress_into(data, &mut out) {
        Ok(n) if n == len => Ok(out),
        Ok(n) => Err(corrupt(
            key,
            format!("compressed value expands to {n} bytes, states {len}"),
        )),
        Err(e) => Err(corrupt(key, format!("cannot decompress: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_records_without_addresses_still_decode() {
        // Bytes of a node record as stored before nodes had addresses: version 1, revision 7,
        // postcard of {name: "n1", labels: {"zone": "a"}}.
        let mut v = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 7];
        v.extend_from_slice(&[2, b'n', b'1', 1, 4, b'z', b'o', b'n', b'e', 1, b'a']);
        let key = keys::encode(&Key::Node("n1".into()));
        let got = decode(&key, &v).expect("decode succeeds");
        let Record::Node(n) = got.value else {
            panic!("not a node")
        };
        assert_eq!(n.name(), "n1");
        assert_eq!(n.labels().get("zone").map(String::as_str), Some("a"));
        assert!(n.addresses().is_empty());
        assert_eq!(got.revision, Revision(7));
        // And a node with an address round-trips.
        let mut with = n.clone();
        with.set_address("172.18.0.3".parse().expect("a valid literal"));
        let bytes = encode(&Record::Node(with.clone()), Revision(8)).expect("encode succeeds");
        assert_eq!(
            decode(&key, &bytes).expect("decode succeeds").value,
            Record::Node(with)
        );
    }
    use ipam_core::Block;
    use ipam_core::{AllocAttrs, HostReserved};
    use std::sync::Arc;

    fn attrs(h: &str) -> Arc<AllocAttrs> {
        Arc::new(AllocAttrs::new(h, [("", ""); 0]).expect("a valid holder"))
    }

    #[test]
    fn blocks_round_trip_including_extreme_sequence_numbers() {
        let mut b = Block::new(
            "10.0.0.0/26".parse().expect("a valid literal"),
            None,
            HostReserved::default(),
            1,
        )
        .expect("a valid fixture");
        b.seq = u64::MAX - 3;
        b.allocate(2, &attrs("a"));
        b.seq = 5;
        b.allocate(1, &attrs("b"));
        let rec = Record::Block(b);
        let key = keys::encode(&rec.key());
        let v = encode(&rec, Revision(42)).expect("encode succeeds");
        let back = decode(&key, &v).expect("decode succeeds");
        assert_eq!(back.value, rec);
        assert_eq!(back.revision, Revision(42));
    }

    #[test]
    fn a_used_block_encodes_compactly() {
        let mut b = Block::new(
            "10.0.0.0/26".parse().expect("a valid literal"),
            Some("node-1".into()),
            HostReserved::default(),
            1_700_000_000_000_000_000,
        )
        .expect("a valid fixture");
        for i in 0..64 {
            b.allocate(1, &attrs(&format!("k8s-pod-network.{i:064}")));
        }
        let v = encode_plain(&Record::Block(b), Revision(1)).expect("encode_plain succeeds");
        // 64 handles of 81 bytes dominate; the per-address bookkeeping stays small (before
        // any compression).
        assert!(v.len() < 64 * 83 + 400, "{} bytes", v.len());
    }

    use crate::conformance::crowded_block as full_block;

    #[test]
    fn large_records_are_stored_compressed_and_read_back() {
        let rec = full_block();
        let key = keys::encode(&rec.key());
        let plain = encode_plain(&rec, Revision(9)).expect("encode_plain succeeds");
        let packed = encode(&rec, Revision(9)).expect("encode succeeds");
        assert_eq!((plain[0], packed[0]), (PLAIN, COMPRESSED));
        assert!(
            packed.len() * 3 < plain.len(),
            "{} bytes compressed, {} plain",
            packed.len(),
            plain.len()
        );
        assert_eq!(revision(&packed), Some(Revision(9)));
        for v in [&plain, &packed] {
            let back = decode(&key, v).expect("decode succeeds");
            assert_eq!((back.value, back.revision), (rec.clone(), Revision(9)));
        }
    }

    #[test]
    fn records_are_transcoded_between_layouts_and_corrupt_ones_are_left() {
        let rec = full_block();
        let key = keys::encode(&rec.key());
        let plain = encode_in(&rec, Revision(4), RecordLayout::Plain).expect("encodes");
        let packed = encode_in(&rec, Revision(4), RecordLayout::Compressed).expect("encodes");
        assert_eq!(layout_of(&plain), Some(RecordLayout::Plain));
        assert_eq!(layout_of(&packed), Some(RecordLayout::Compressed));
        let t = |v: &[u8], l| transcode(&key, v, l).expect("a valid value");
        assert_eq!(
            t(&plain, RecordLayout::Compressed).as_deref(),
            Some(&packed[..])
        );
        assert_eq!(t(&packed, RecordLayout::Plain).as_deref(), Some(&plain[..]));
        assert_eq!(t(&plain, RecordLayout::Plain), None);
        assert_eq!(t(&packed, RecordLayout::Compressed), None);
        // A small record is plain in either layout.
        let h = Record::Handle(ipam_core::Handle::new("k8s-pod-network.abc"));
        let hk = keys::encode(&h.key());
        let small = encode_in(&h, Revision(1), RecordLayout::Compressed).expect("encodes");
        assert_eq!(
            transcode(&hk, &small, RecordLayout::Compressed).expect("valid"),
            None
        );
        // A value that does not decode is an error, never rewritten.
        let mut bad = packed.clone();
        bad.truncate(packed.len() - 5);
        assert!(matches!(
            transcode(&key, &bad, RecordLayout::Plain),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(layout_of(&[9, 0, 0]), None);
        assert_eq!(layout_of(&[]), None);
    }

    #[test]
    fn small_records_stay_plain() {
        let mut h = ipam_core::Handle::new("k8s-pod-network.abc");
        h.add("10.0.0.0/26".parse().expect("a valid literal"), 1);
        let v = encode(&Record::Handle(h), Revision(1)).expect("encode succeeds");
        assert_eq!(v[0], PLAIN);
        assert!(v.len() - HEADER < COMPRESS_FROM);
    }

    #[test]
    fn damaged_compressed_values_are_corrupt() {
        let rec = full_block();
        let key = keys::encode(&rec.key());
        let packed = encode(&rec, Revision(1)).expect("encode succeeds");
        let corrupt = |v: &[u8]| matches!(decode(&key, v), Err(StoreError::Corrupt { .. }));
        // Cut short: in the length, in the data.
        assert!(corrupt(&packed[..HEADER + 2]));
        assert!(corrupt(&packed[..packed.len() - 7]));
        // A stated length the data cannot produce (refused before allocating), and one that
        // it could but does not.
        let mut huge = packed.clone();
        huge[HEADER..HEADER + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(corrupt(&huge));
        let mut short = packed.clone();
        let len = u32::from_le_bytes(
            packed[HEADER..HEADER + 4]
                .try_into()
                .expect("a valid fixture"),
        );
        short[HEADER..HEADER + 4].copy_from_slice(&(len - 1).to_le_bytes());
        assert!(corrupt(&short));
        let mut long = packed.clone();
        long[HEADER..HEADER + 4].copy_from_slice(&(len + 1).to_le_bytes());
        assert!(corrupt(&long));
        // Plain bytes labelled compressed.
        let mut relabelled = encode_plain(&rec, Revision(1)).expect("encode_plain succeeds");
        relabelled[0] = COMPRESSED;
        assert!(corrupt(&relabelled));
    }

    #[test]
    fn wrong_version_and_truncation_are_corrupt() {
        let rec = Record::Handle(ipam_core::Handle::new("h"));
        let key = keys::encode(&rec.key());
        let mut v = encode(&rec, Revision(1)).expect("encode succeeds");
        v[0] = 9;
        assert!(matches!(decode(&key, &v), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            decode(&key, &[1, 0, 0]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
