//! [`AllocAttrs`]: who holds an address (a handle id and the owner's attributes), kept as one
//! string and the ends of its pieces.
//!
//! A block keeps one per distinct holder, a store decodes one per holder of every block it
//! reads, and every assignment builds one. As a `String` and a `BTreeMap<String, String>` each
//! cost two allocations per attribute, one for the handle id and a tree node; a kubelet's ADD
//! carries about seven attributes. Kept whole, a holder costs one allocation for its text (the
//! ends of up to [`INLINE_ENDS`] pieces sit inline) however many attributes it has.
//!
//! Guarantees, kept by the constructors (which the decoder goes through) and relied on by equality,
//! hashing and the encoding: keys are distinct and in ascending byte order, as a `BTreeMap`
//! holds them (of two pairs with one key, the later one stays); handle id, keys and values
//! together take at most [`MAX_HOLDER_BYTES`].
//!
//! Its serde form (the core's own; the stores keep stored forms of their own) is the two-field
//! struct it replaced: `handle_id` (a string) and `attrs` (a map of strings in key order).

use serde::de;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::fmt;

/// The most bytes a holder's handle id, keys and values may take together: far above what a
/// runtime sends (a kubelet's ADD makes about 300), there so that no request can make a
/// block's record grow without bound.
pub const MAX_HOLDER_BYTES: usize = 1 << 20;

/// Piece ends kept inline: the handle id and seven attributes.
pub const INLINE_ENDS: usize = 15;

/// A holder larger than [`MAX_HOLDER_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the handle id and owner attributes take {0} bytes; at most {MAX_HOLDER_BYTES} are allowed"
)]
pub struct HolderTooLarge(pub usize);

/// Who holds an address: the handle it is counted under and the owner's attributes (pod,
/// namespace, node, ...). Addresses allocated in one request share one `Arc`, and a block
/// stores each distinct value once. See the module docs for the guarantees.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AllocAttrs {
    /// The handle id, then each key and its value, back to back, in key order.
    text: Box<str>,
    /// Where each piece of `text` ends: the handle id's, then a key's and its value's in turn.
    ends: SmallVec<[u32; INLINE_ENDS]>,
}

impl AllocAttrs {
    /// A holder of `handle_id` with `attrs`, in any order (a later pair replaces an earlier
    /// one of the same key).
    pub fn new<K: AsRef<str>, V: AsRef<str>>(
        handle_id: &str,
        attrs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, HolderTooLarge> {
        let mut pairs: SmallVec<[(K, V); 8]> = attrs.into_iter().collect();
        if !pairs.windows(2).all(|w| w[0].0.as_ref() < w[1].0.as_ref()) {
            // Stable, so of one key's pairs the last given is the last here.
            pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
            // `dedup_by` drops the later of two; swapped first, the later one's value stays.
            pairs.dedup_by(|later, kept| {
                let same = later.0.as_ref() == kept.0.as_ref();
                if same {
                    std::mem::swap(later, kept);
                }
                same
            });
        }
        Self::from_ordered(
            handle_id,
            pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        )
    }

    /// [`AllocAttrs::new`] of pairs already in ascending order of distinct keys (the caller's
    /// promise: an engine's request is a map), with no copy of them on the way. Walks them
    /// twice: once for the size, once to write.
    pub(crate) fn from_ordered<'a>(
        handle_id: &str,
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<Self, HolderTooLarge> {
        let size = pairs
            .clone()
            .fold(handle_id.len(), |n, (k, v)| n + k.len() + v.len());
        let mut built = Builder::with_capacity(size)?;
        built.push(handle_id);
        for (k, v) in pairs {
            built.push(k);
            built.push(v);
        }
        Ok(built.finish())
    }

    /// The handle the address is counted under.
    pub fn handle_id(&self) -> &str {
        self.piece(0)
    }

    /// The value of attribute `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.piece(1 + 2 * mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.piece(2 + 2 * mid)),
            }
        }
        None
    }

    /// The attributes, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.len()).map(|i| (self.piece(1 + 2 * i), self.piece(2 + 2 * i)))
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.ends.len().saturating_sub(1) / 2
    }

    /// Whether there are no attributes (a handle id alone).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The attributes as a map of their own.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Piece `i` (see `ends`); empty if there is no such piece, which the constructors rule out.
    fn piece(&self, i: usize) -> &str {
        let end = |i: usize| self.ends.get(i).map_or(0, |&e| e as usize);
        let start = if i == 0 { 0 } else { end(i - 1) };
        self.text.get(start..end(i)).unwrap_or("")
    }
}

/// Text and piece ends being written, within [`MAX_HOLDER_BYTES`].
struct Builder {
    text: String,
    ends: SmallVec<[u32; INLINE_ENDS]>,
}

impl Builder {
    fn with_capacity(bytes: usize) -> Result<Self, HolderTooLarge> {
        if bytes > MAX_HOLDER_BYTES {
            return Err(HolderTooLarge(bytes));
        }
        Ok(Builder {
            text: String::with_capacity(bytes),
            ends: SmallVec::new(),
        })
    }

    /// Writes one whole piece (within the capacity checked at the start).
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        let len = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        self.ends.push(len);
    }

    fn finish(self) -> AllocAttrs {
        AllocAttrs {
            text: self.text.into_boxed_str(),
            ends: self.ends,
        }
    }
}

impl fmt::Debug for AllocAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Attrs<'a>(&'a AllocAttrs);
        impl fmt::Debug for Attrs<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        f.debug_struct("AllocAttrs")
            .field("handle_id", &self.handle_id())
            .field("attrs", &Attrs(self))
            .finish()
    }
}

/// The attributes, serialised as a map in key order.
struct AttrsMap<'a>(&'a AllocAttrs);

impl Serialize for AttrsMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

impl Serialize for AllocAttrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AllocAttrs", 2)?;
        st.serialize_field("handle_id", self.handle_id())?;
        st.serialize_field("attrs", &AttrsMap(self))?;
        st.end()
    }
}

/// The serde form as it reads: decoded as the struct it replaced, then built (ordered, bounded)
/// by [`AllocAttrs::new`]. Not a hot path: the stores decode their own stored form.
#[derive(Deserialize)]
struct AsStruct {
    handle_id: String,
    attrs: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for AllocAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let AsStruct { handle_id, attrs } = AsStruct::deserialize(d)?;
        AllocAttrs::new(&handle_id, attrs).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the holder replaced: a handle id and a map.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AsMap {
        handle_id: String,
        attrs: BTreeMap<String, String>,
    }

    fn holder(h: &str, pairs: &[(String, String)]) -> AllocAttrs {
        AllocAttrs::new(h, pairs.iter().map(|(k, v)| (k, v))).expect("within the bound")
    }

    proptest! {
        /// Built from any pairs, a holder reads as the map those pairs make (later pairs
        /// replacing earlier ones), and encodes to the same bytes and JSON as that map's
        /// struct, and decodes back from them.
        #[test]
        fn reads_and_encodes_as_the_map(
            h in "\\PC{0,12}",
            pairs in proptest::collection::vec(("[a-d]{0,2}", "\\PC{0,6}"), 0..12),
        ) {
            let a = holder(&h, &pairs);
            let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
            let as_map = AsMap { handle_id: h.clone(), attrs: map.clone() };
            prop_assert_eq!(a.handle_id(), h.as_str());
            prop_assert_eq!(a.to_map(), map.clone());
            prop_assert_eq!(a.len(), map.len());
            for (k, v) in &map {
                prop_assert_eq!(a.get(k), Some(v.as_str()));
            }
            prop_assert_eq!(a.get("zz-absent"), None);
            let bytes = postcard::to_allocvec(&a).expect("encodes");
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&as_map).expect("encodes"));
            prop_assert_eq!(postcard::from_bytes::<AllocAttrs>(&bytes).expect("decodes"), a.clone());
            let json = serde_json::to_string(&a).expect("encodes");
            prop_assert_eq!(&json, &serde_json::to_string(&as_map).expect("encodes"));
            prop_assert_eq!(serde_json::from_str::<AllocAttrs>(&json).expect("decodes"), a);
        }

        /// Equal maps make equal holders whatever order their pairs came in.
        #[test]
        fn order_of_pairs_does_not_matter(
            pairs in proptest::collection::vec(("[a-c]{1}", "[x-z]{1}"), 0..8),
        ) {
            let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
            let sorted: Vec<(String, String)> = map.into_iter().collect();
            let mut reversed = sorted.clone();
            reversed.reverse();
            prop_assert_eq!(holder("h", &sorted), holder("h", &reversed));
        }
    }

    #[test]
    fn keys_out_of_order_in_a_stored_form_are_put_in_order() {
        // A JSON writer that does not sort, with the fields in the other order.
        let json = r#"{"attrs": {"pod": "p", "node": "n1", "ns": "d"}, "handle_id": "h"}"#;
        let a: AllocAttrs = serde_json::from_str(json).expect("decodes");
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("node", "n1"), ("ns", "d"), ("pod", "p")]
        );
        assert_eq!(
            a,
            holder(
                "h",
                &[
                    ("pod".into(), "p".into()),
                    ("node".into(), "n1".into()),
                    ("ns".into(), "d".into())
                ]
            )
        );
        assert!(serde_json::from_str::<AllocAttrs>(r#"{"attrs": {}}"#).is_err());
    }

    #[test]
    fn a_holder_over_the_bound_is_refused_built_or_decoded() {
        let big = "x".repeat(MAX_HOLDER_BYTES);
        assert_eq!(
            AllocAttrs::new("h", [("k", big.as_str())]),
            Err(HolderTooLarge(MAX_HOLDER_BYTES + 2))
        );
        assert!(AllocAttrs::new("", [("", big.as_str())]).is_ok());
        let as_map = AsMap {
            handle_id: "h".into(),
            attrs: [("k".to_string(), big)].into_iter().collect(),
        };
        let bytes = postcard::to_allocvec(&as_map).expect("encodes");
        assert!(postcard::from_bytes::<AllocAttrs>(&bytes).is_err());
    }
}
