//! A fixed-length bitmap over `u64` words: the allocation state of a block's ordinals.
//!
//! Guarantee: bits at positions `>= len()` are always zero, so `count_ones` never counts
//! padding and searches never return an out-of-range ordinal.
//!
//! Up to 128 bits (a /25 or smaller block) live inline, so copying a block, which every
//! assignment and release does once, allocates nothing for its two bitmaps.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use smallvec::SmallVec;

/// The words of a bitmap: two inline, more on the heap.
type Words = SmallVec<[u64; 2]>;

/// A fixed-length set of bits. Decoding checks the shape (word count, clear padding).
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawBitmap")]
pub struct Bitmap {
    len: u32,
    words: Words,
}

impl Clone for Bitmap {
    /// The words copied as one slice (a derived clone goes word by word); inline words
    /// (a /25 or smaller block) as two plain words.
    fn clone(&self) -> Self {
        let words = match self.words[..] {
            [a] => Words::from_buf_and_len([a, 0], 1),
            [a, b] => Words::from_buf([a, b]),
            ref more => Words::from_slice(more),
        };
        Bitmap {
            len: self.len,
            words,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.len = source.len;
        if self.words.len() == source.words.len() {
            self.words.copy_from_slice(&source.words);
        } else {
            *self = source.clone();
        }
    }
}

impl Serialize for Bitmap {
    /// The same shape as the unchecked form it is read back through.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Bitmap", 2)?;
        st.serialize_field("len", &self.len)?;
        st.serialize_field("words", self.words.as_slice())?;
        st.end()
    }
}

/// The unchecked stored form of a [`Bitmap`].
#[derive(Deserialize)]
struct RawBitmap {
    len: u32,
    words: Vec<u64>,
}

impl TryFrom<RawBitmap> for Bitmap {
    type Error = String;
    fn try_from(r: RawBitmap) -> Result<Self, String> {
        let len = r.len;
        Bitmap::from_words(len, r.words)
            .ok_or_else(|| format!("bitmap of {len} bits has the wrong word count or set padding"))
    }
}

impl Bitmap {
    /// An all-zero bitmap of `len` bits.
    pub fn new(len: u32) -> Self {
        Bitmap {
            len,
            words: smallvec::smallvec![0; len.div_ceil(64) as usize],
        }
    }

    /// Rebuilds a bitmap from stored words; `None` if the word count does not fit `len` or
    /// padding bits are set.
    pub fn from_words(len: u32, words: Vec<u64>) -> Option<Self> {
        let b = Bitmap {
            len,
            words: if words.len() <= 2 {
                Words::from_slice(&words)
            } else {
                Words::from_vec(words)
            },
        };
        (b.words.len() == len.div_ceil(64) as usize && b.padding_is_clear()).then_some(b)
    }

    fn padding_is_clear(&self) -> bool {
        let tail = self.len % 64;
        tail == 0 || self.words.last().is_none_or(|w| w >> tail == 0)
    }

    /// Number of bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the bitmap has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw words (for encoders).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Value of bit `i`; false when out of range.
    #[inline]
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    /// Sets bit `i`. Panics if out of range (callers hold validated ordinals).
    #[inline]
    pub fn set(&mut self, i: u32) {
        assert!(i < self.len, "bit {i} out of range {}", self.len);
        self.words[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Clears bit `i`. Panics if out of range.
    #[inline]
    pub fn clear(&mut self, i: u32) {
        assert!(i < self.len, "bit {i} out of range {}", self.len);
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// True when every bit is set.
    pub fn is_full(&self) -> bool {
        self.count_ones() == self.len
    }

    /// The first clear bit at or after `start`, wrapping around to 0; `None` when full.
    pub fn first_zero_from(&self, start: u32) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let start = if start >= self.len { 0 } else { start };
        self.first_zero_in(start, self.len)
            .or_else(|| self.first_zero_in(0, start))
    }

    /// The first clear bit in `[from, to)`.
    fn first_zero_in(&self, from: u32, to: u32) -> Option<u32> {
        if from >= to {
            return None;
        }
        let mut wi = from / 64;
        // Treat bits below `from` in the first word as set so they are skipped.
        let mut word = self.words[wi as usize] | ((1u64 << (from % 64)) - 1);
        loop {
            if word != u64::MAX {
                let bit = wi * 64 + (!word).trailing_zeros();
                return (bit < to).then_some(bit);
            }
            wi += 1;
            if wi * 64 >= to {
                return None;
            }
            word = self.words[wi as usize];
        }
    }

    /// Iterator over the set bits in ascending order.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().zip(0u32..).flat_map(|(&w, wi)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_wraps_and_skips_set_bits() {
        let mut b = Bitmap::new(70);
        for i in 0..70 {
            if i != 3 && i != 68 {
                b.set(i);
            }
        }
        assert_eq!(b.first_zero_from(0), Some(3));
        assert_eq!(b.first_zero_from(4), Some(68));
        assert_eq!(b.first_zero_from(69), Some(3));
        assert_eq!(b.first_zero_from(500), Some(3));
        b.set(3);
        b.set(68);
        assert!(b.is_full());
        assert_eq!(b.first_zero_from(10), None);
    }

    #[test]
    fn partial_last_word_never_yields_padding() {
        let mut b = Bitmap::new(65);
        for i in 0..65 {
            b.set(i);
        }
        assert_eq!(b.first_zero_from(0), None);
        assert_eq!(b.count_ones(), 65);
        b.clear(64);
        assert_eq!(b.first_zero_from(0), Some(64));
        assert_eq!(b.ones().count(), 64);
    }

    #[test]
    fn from_words_rejects_bad_shapes() {
        assert!(Bitmap::from_words(64, vec![u64::MAX]).is_some());
        assert!(Bitmap::from_words(65, vec![0]).is_none());
        assert!(Bitmap::from_words(4, vec![0b10000]).is_none());
        assert!(Bitmap::from_words(4, vec![0b1000]).is_some());
    }

    #[test]
    fn ones_lists_set_bits() {
        let mut b = Bitmap::new(130);
        for i in [0, 63, 64, 129] {
            b.set(i);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert!(!b.get(130));
    }
}
