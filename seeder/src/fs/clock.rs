/*!
Vector clocks over the feeds of a space.

A [`VectorClock`] maps each feed to a *length*: how many entries of that feed its holder had
seen. An op written at sequence number `s` of feed `F` carries `clock[F] = s + 1` (it has seen
itself) and, for every other feed, how far its writer had seen that feed. Op `B` *causally
follows* op `A` iff `B.clock[A.feed] > A.seq` — B's writer had seen A.

Invariants of every value: entries are kept in key order (a `BTreeMap`, so encoding is
deterministic) and a feed with length 0 is simply absent, so equal knowledge means equal values
and equal bytes. Decoding enforces both (strictly increasing keys, no zero) and caps the number of
entries at [`MAX_CLOCK_FEEDS`].
*/

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::feed::FeedKey;

/// Most feeds one clock may name. A space is a small organisation's devices (tens); 4096 keeps
/// the largest clock (~170 KiB encoded) far inside a feed entry and bounds decoding work.
pub const MAX_CLOCK_FEEDS: usize = 4096;

/// How two clocks relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Every entry of the first is ≤ the second's, at least one is smaller.
    Before,
    /// The same knowledge.
    Equal,
    /// Every entry of the first is ≥ the second's, at least one is larger.
    After,
    /// Each has seen something the other has not.
    Concurrent,
}

/// Feed → number of entries seen. See the module comment for the invariants.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VectorClock(BTreeMap<FeedKey, u64>);

impl VectorClock {
    /// The clock that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries of `feed` this clock has seen (0 if it names no such feed).
    pub fn get(&self, feed: &FeedKey) -> u64 {
        self.0.get(feed).copied().unwrap_or(0)
    }

    /// Set the length seen of `feed`; 0 removes the entry.
    pub fn set(&mut self, feed: FeedKey, length: u64) {
        if length == 0 {
            self.0.remove(&feed);
        } else {
            self.0.insert(feed, length);
        }
    }

    /// Raise the length seen of `feed` to at least `length`.
    pub fn observe(&mut self, feed: FeedKey, length: u64) {
        if length > 0 {
            let e = self.0.entry(feed).or_insert(0);
            *e = (*e).max(length);
        }
    }

    /// Pointwise maximum: afterwards `self` has seen everything either had seen.
    pub fn merge(&mut self, other: &VectorClock) {
        for (feed, &length) in &other.0 {
            self.observe(*feed, length);
        }
    }

    /// Whether entry `seq` of `feed` is among what this clock has seen (`self[feed] > seq`).
    pub fn has_seen(&self, feed: &FeedKey, seq: u64) -> bool {
        self.get(feed) > seq
    }

    /// Total number of entries seen: the "amount of knowledge" that picks the winner among
    /// concurrent writes. Saturates instead of overflowing (only a corrupt clock gets there).
    pub fn sum(&self) -> u64 {
        self.0.values().fold(0u64, |acc, &v| acc.saturating_add(v))
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VectorClock) -> Causality {
        let (mut less, mut greater) = (false, false);
        // Merge-walk the two sorted maps: O(len(self) + len(other)).
        let mut a = self.0.iter().peekable();
        let mut b = other.0.iter().peekable();
        loop {
            let (x, y) = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((_, &x)), None) => {
                    a.next();
                    (x, 0)
                }
                (None, Some((_, &y))) => {
                    b.next();
                    (0, y)
                }
                (Some((ka, &x)), Some((kb, &y))) => match ka.cmp(kb) {
                    Ordering::Less => {
                        a.next();
                        (x, 0)
                    }
                    Ordering::Greater => {
                        b.next();
                        (0, y)
                    }
                    Ordering::Equal => {
                        a.next();
                        b.next();
                        (x, y)
                    }
                },
            };
            less |= x < y;
            greater |= x > y;
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// The non-zero entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&FeedKey, u64)> {
        self.0.iter().map(|(k, &v)| (k, v))
    }

    /// Number of feeds with a non-zero length.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The causal partial order: `a < b` iff `a` is [`Causality::Before`] `b`; concurrent clocks
/// are incomparable (`None`).
impl PartialOrd for VectorClock {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            Causality::Before => Some(Ordering::Less),
            Causality::Equal => Some(Ordering::Equal),
            Causality::After => Some(Ordering::Greater),
            Causality::Concurrent => None,
        }
    }
}

impl FromIterator<(FeedKey, u64)> for VectorClock {
    /// Several entries for one feed keep the largest.
    fn from_iter<I: IntoIterator<Item = (FeedKey, u64)>>(iter: I) -> Self {
        let mut clock = VectorClock::new();
        for (feed, length) in iter {
            clock.observe(feed, length);
        }
        clock
    }
}

impl fmt::Debug for VectorClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for VectorClock {
    /// `{a1b2c3d4:3, 0f0e0d0c:7}`, feeds by their short key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (feed, length)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}:{length}", feed.short())?;
        }
        f.write_str("}")
    }
}

/// Encoded as a sequence of `(feed key, length)` pairs in key order.
impl Serialize for VectorClock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for entry in &self.0 {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

/// Strict: keys strictly increasing, no zero length, at most [`MAX_CLOCK_FEEDS`] entries — so
/// every clock has exactly one encoding.
impl<'de> Deserialize<'de> for VectorClock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ClockVisitor;
        impl<'de> Visitor<'de> for ClockVisitor {
            type Value = VectorClock;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "at most {MAX_CLOCK_FEEDS} (feed, length) pairs, keys increasing, lengths > 0"
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VectorClock, A::Error> {
                use serde::de::Error;
                if seq.size_hint().is_some_and(|n| n > MAX_CLOCK_FEEDS) {
                    return Err(A::Error::custom("too many feeds in a vector clock"));
                }
                let mut map = BTreeMap::new();
                let mut last: Option<FeedKey> = None;
                while let Some((feed, length)) = seq.next_element::<(FeedKey, u64)>()? {
                    if map.len() == MAX_CLOCK_FEEDS {
                        return Err(A::Error::custom("too many feeds in a vector clock"));
                    }
                    if last.is_some_and(|l| l >= feed) {
                        return Err(A::Error::custom("vector clock keys out of order"));
                    }
                    if length == 0 {
                        return Err(A::Error::custom("zero length in a vector clock"));
                    }
                    last = Some(feed);
                    map.insert(feed, length);
                }
                Ok(VectorClock(map))
            }
        }
        d.deserialize_seq(ClockVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> FeedKey {
        FeedKey([b; 32])
    }

    fn clock(entries: &[(u8, u64)]) -> VectorClock {
        entries.iter().map(|&(k, v)| (key(k), v)).collect()
    }

    #[test]
    fn missing_feeds_read_as_zero_and_zero_entries_vanish() {
        let mut c = clock(&[(1, 3)]);
        assert_eq!(c.get(&key(2)), 0);
        c.set(key(1), 0);
        assert!(c.is_empty());
        assert_eq!(c, VectorClock::new());
        assert_eq!(clock(&[(1, 0), (2, 0)]), VectorClock::new());
    }

    #[test]
    fn merge_takes_the_pointwise_maximum() {
        let mut a = clock(&[(1, 3), (2, 1)]);
        a.merge(&clock(&[(2, 5), (3, 2)]));
        assert_eq!(a, clock(&[(1, 3), (2, 5), (3, 2)]));
        assert_eq!(a.sum(), 10);
    }

    #[test]
    fn compare_tells_all_four_relations() {
        let a = clock(&[(1, 2)]);
        let b = clock(&[(1, 2), (2, 1)]);
        let c = clock(&[(1, 1), (2, 3)]);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(b.compare(&b.clone()), Causality::Equal);
        assert_eq!(a.compare(&c), Causality::Concurrent);
        assert_eq!(VectorClock::new().compare(&a), Causality::Before);
        assert!(a < b);
        assert_eq!(a.partial_cmp(&c), None);
    }

    #[test]
    fn has_seen_counts_the_entry_itself() {
        let c = clock(&[(1, 3)]);
        assert!(c.has_seen(&key(1), 2));
        assert!(!c.has_seen(&key(1), 3));
        assert!(!c.has_seen(&key(2), 0));
    }

    #[test]
    fn sum_saturates() {
        assert_eq!(clock(&[(1, u64::MAX), (2, 5)]).sum(), u64::MAX);
    }

    #[test]
    fn display_uses_short_keys() {
        assert_eq!(
            clock(&[(0xab, 4), (1, 2)]).to_string(),
            "{01010101:2, abababab:4}"
        );
    }

    #[test]
    fn decoding_refuses_non_canonical_clocks() {
        let pairs = |p: &[(u8, u64)]| {
            let v: Vec<(FeedKey, u64)> = p.iter().map(|&(k, n)| (key(k), n)).collect();
            postcard::to_allocvec(&v).expect("encode")
        };
        let ok = pairs(&[(1, 1), (2, 9)]);
        assert_eq!(
            postcard::from_bytes::<VectorClock>(&ok).expect("decode"),
            clock(&[(1, 1), (2, 9)])
        );
        assert_eq!(
            ok,
            postcard::to_allocvec(&clock(&[(2, 9), (1, 1)])).expect("encode")
        );
        for bad in [
            pairs(&[(2, 1), (1, 1)]),
            pairs(&[(1, 1), (1, 2)]),
            pairs(&[(1, 0)]),
        ] {
            assert!(postcard::from_bytes::<VectorClock>(&bad).is_err());
        }
    }

    #[test]
    fn decoding_refuses_too_many_feeds() {
        let many: Vec<(FeedKey, u64)> = (0..=MAX_CLOCK_FEEDS as u32)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                (FeedKey(k), 1)
            })
            .collect();
        let bytes = postcard::to_allocvec(&many).expect("encode");
        assert_eq!(
            postcard::from_bytes::<VectorClock>(&bytes),
            Err(postcard::Error::SerdeDeCustom)
        );
        let at_limit = postcard::to_allocvec(&many[..MAX_CLOCK_FEEDS]).expect("encode");
        assert_eq!(
            postcard::from_bytes::<VectorClock>(&at_limit)
                .expect("decode")
                .len(),
            MAX_CLOCK_FEEDS
        );
    }

    fn arb_clock() -> impl Strategy<Value = VectorClock> {
        prop::collection::vec((0u8..4, 0u64..4), 0..4)
            .prop_map(|v| v.into_iter().map(|(k, n)| (key(k), n)).collect())
    }

    proptest! {
        #[test]
        fn compare_agrees_with_pointwise_order(a in arb_clock(), b in arb_clock()) {
            let le = (0u8..4).all(|k| a.get(&key(k)) <= b.get(&key(k)));
            let ge = (0u8..4).all(|k| a.get(&key(k)) >= b.get(&key(k)));
            let expected = match (le, ge) {
                (true, true) => Causality::Equal,
                (true, false) => Causality::Before,
                (false, true) => Causality::After,
                (false, false) => Causality::Concurrent,
            };
            prop_assert_eq!(a.compare(&b), expected);
            let mut m = a.clone();
            m.merge(&b);
            prop_assert!(a <= m && b <= m);
            let back: VectorClock =
                postcard::from_bytes(&postcard::to_allocvec(&m).expect("encode")).expect("decode");
            prop_assert_eq!(back, m);
        }
    }
}
