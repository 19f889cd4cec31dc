//! Value layout of the sled store.
//!
//! ```text
//! byte 0       record format version (FORMAT_VERSION)
//! bytes 1..9   revision, u64 big-endian
//! bytes 9..    the record in postcard (serde, varint integers), the type given by the key kind
//! ```
//!
//! Decoding checks the version, decodes, validates the record with the core's rules and checks
//! that the record's own key is the key it was stored under; any failure is
//! `StoreError::Corrupt` naming the record.

use super::keys;
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
        Record::Config(x) => postcard::to_extend(x, out),
        Record::Pool(x) => postcard::to_extend(x, out),
        Record::Node(x) => postcard::to_extend(x, out),
        Record::Block(x) => postcard::to_extend(x, out),
        Record::Affinity(x) => postcard::to_extend(x, out),
        Record::Handle(x) => postcard::to_extend(x, out),
        Record::IndexChunk(x) => postcard::to_extend(x, out),
        Record::PoolIndex(x) => postcard::to_extend(x, out),
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
    let invalid = |e: String| corrupt(key, format!("invalid: {e}"));
    let record = match &k {
        Key::Config => {
            let c: ipam_core::IpamConfig = de(key, body)?;
            c.validate().map_err(|e| invalid(e.to_string()))?;
            Record::Config(c)
        }
        Key::Pool(_) => {
            let p: ipam_core::Pool = de(key, body)?;
            p.validate().map_err(|e| invalid(e.to_string()))?;
            Record::Pool(p)
        }
        Key::Node(_) => {
            let n: ipam_core::Node = de(key, body)?;
            ipam_core::model::node::validate_node_name(&n.name).map_err(invalid)?;
            Record::Node(n)
        }
        Key::Block(_) => {
            let b: ipam_core::Block = de(key, body)?;
            b.validate().map_err(|e| invalid(e.to_string()))?;
            Record::Block(b)
        }
        Key::Affinity { .. } => Record::Affinity(de(key, body)?),
        Key::Handle(_) => {
            let h: ipam_core::Handle = de(key, body)?;
            h.validate().map_err(invalid)?;
            Record::Handle(h)
        }
        Key::IndexChunk { .. } => Record::IndexChunk(de(key, body)?),
        Key::PoolIndex(_) => Record::PoolIndex(de(key, body)?),
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
