//! Value layout of the sled store.
//!
//! ```text
//! byte 0       record format version (FORMAT_VERSION)
//! bytes 1..9   revision, u64 big-endian
//! bytes 9..    the record in postcard (serde, varint integers), the type given by the key kind:
//!              each record in its stored form (`crate::stored`), never the core's own types
//! ```
//!
//! Decoding checks the version, decodes, validates the record with the core's rules and checks
//! that the record's own key is the key it was stored under; any failure is
//! `StoreError::Corrupt` naming the record.

use super::keys;
use crate::stored;
use ipam_core::{Key, Record, Revision, StoreError, Versioned};

/// Version of the value layout and of the record encodings.
pub const FORMAT_VERSION: u8 = 1;

const HEADER: usize = 9;

/// Encodes a record with its revision.
pub fn encode(record: &Record, rev: Revision) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_VERSION);
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
    let Some(&version) = value.first() else {
        return Err(corrupt(key, "empty value"));
    };
    if version != FORMAT_VERSION {
        return Err(corrupt(
            key,
            format!("record format {version}, this build reads {FORMAT_VERSION}"),
        ));
    }
    let revision = revision(value).ok_or_else(|| corrupt(key, "value shorter than its header"))?;
    let body = &value[HEADER..];
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
        let got = decode(&key, &v).unwrap();
        let Record::Node(n) = got.value else {
            panic!("not a node")
        };
        assert_eq!(n.name(), "n1");
        assert_eq!(n.labels().get("zone").map(String::as_str), Some("a"));
        assert!(n.addresses().is_empty());
        assert_eq!(got.revision, Revision(7));
        // And a node with an address round-trips.
        let mut with = n.clone();
        with.set_address("172.18.0.3".parse().unwrap());
        let bytes = encode(&Record::Node(with.clone()), Revision(8)).unwrap();
        assert_eq!(decode(&key, &bytes).unwrap().value, Record::Node(with));
    }
    use ipam_core::Block;
    use ipam_core::{AllocAttrs, HostReserved};
    use std::sync::Arc;

    fn attrs(h: &str) -> Arc<AllocAttrs> {
        Arc::new(AllocAttrs {
            handle_id: h.into(),
            attrs: Default::default(),
        })
    }

    #[test]
    fn blocks_round_trip_including_extreme_sequence_numbers() {
        let mut b = Block::new(
            "10.0.0.0/26".parse().unwrap(),
            None,
            HostReserved::default(),
            1,
        )
        .unwrap();
        b.seq = u64::MAX - 3;
        b.allocate(2, &attrs("a"));
        b.seq = 5;
        b.allocate(1, &attrs("b"));
        let rec = Record::Block(b);
        let key = keys::encode(&rec.key());
        let v = encode(&rec, Revision(42)).unwrap();
        let back = decode(&key, &v).unwrap();
        assert_eq!(back.value, rec);
        assert_eq!(back.revision, Revision(42));
    }

    #[test]
    fn a_used_block_encodes_compactly() {
        let mut b = Block::new(
            "10.0.0.0/26".parse().unwrap(),
            Some("node-1".into()),
            HostReserved::default(),
            1_700_000_000_000_000_000,
        )
        .unwrap();
        for i in 0..64 {
            b.allocate(1, &attrs(&format!("k8s-pod-network.{i:064}")));
        }
        let v = encode(&Record::Block(b), Revision(1)).unwrap();
        // 64 handles of 81 bytes dominate; the per-address bookkeeping stays small.
        assert!(v.len() < 64 * 83 + 400, "{} bytes", v.len());
    }

    #[test]
    fn wrong_version_and_truncation_are_corrupt() {
        let rec = Record::Handle(ipam_core::Handle::new("h"));
        let key = keys::encode(&rec.key());
        let mut v = encode(&rec, Revision(1)).unwrap();
        v[0] = 9;
        assert!(matches!(decode(&key, &v), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            decode(&key, &[1, 0, 0]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
