/*!
The records of the file layer: what one feed entry of a member's feed holds, before encryption.

Every entry of a member feed is exactly one [`Record`], encoded by [`Record::encode`] as
`FORMAT_VERSION ‖ postcard(record)` and then sealed by the content cipher (another layer). The
format byte comes first so a later format can be told apart before anything else is parsed;
[`Record::decode`] refuses unknown formats, trailing bytes and every value that breaks a record
invariant, and never panics on arbitrary input.

Writing a file is its chunks first, then the `Put` naming them: a put whose chunks were
interrupted has no `Put` yet and is invisible. Chunking is fixed-size: every chunk but the last
holds exactly [`CHUNK_SIZE`] bytes, so `content.count == ceil(size / CHUNK_SIZE)` and a reader
can seek without reading the chunks before.

Not here: encryption, feed storage, clocks' meaning (see `clock`) and merging (see `view`).
*/

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{FsError, Path, VectorClock};
use crate::feed::FeedKey;

/// Bytes of file content per chunk record: small enough to hold a chunk in memory on a 1 GiB
/// board and to resend cheaply, large enough that per-entry overhead (Merkle node, nonce, tag,
/// index row ≈ 100 bytes) stays below 0.2 %.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The first byte of every encoded record. Bump it for any incompatible change.
pub const FORMAT_VERSION: u8 = 1;

/// Longest device name in bytes: a label for people (`"Ana's laptop"`), not a document.
pub const MAX_DEVICE_NAME_LEN: usize = 64;

/// Permission bits a record may carry (`rwx` for user, group, other, plus setuid, setgid and
/// sticky). File-type bits have no meaning here: every record is a regular file.
pub const MODE_MASK: u32 = 0o7777;

/// Number of chunks a file of `size` bytes is cut into.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

/// A modification time: seconds and nanoseconds since the Unix epoch, as `stat` gives them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Mtime {
    /// Seconds since 1970-01-01T00:00:00Z; negative before.
    pub secs: i64,
    /// Nanoseconds within the second, `< 1_000_000_000`.
    pub nanos: u32,
}

impl Mtime {
    /// An mtime, refusing `nanos >= 1e9`.
    pub fn new(secs: i64, nanos: u32) -> Result<Self, FsError> {
        let m = Mtime { secs, nanos };
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), FsError> {
        if self.nanos >= 1_000_000_000 {
            return Err(FsError::Malformed(format!(
                "mtime nanoseconds {} not below one second",
                self.nanos
            )));
        }
        Ok(())
    }
}

/// Where a file's content lives: entries `first .. first + count` of `feed`, each a
/// [`Record::Chunk`].
///
/// A fresh put points into its writer's own feed, just before the `Put`; a rename, a restored old
/// version or a resolved conflict points to the existing chunks wherever they are, so content is
/// never copied. The writer must have seen the chunks (its clock covers them): the view refuses
/// an op whose content lies beyond its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentRef {
    pub feed: FeedKey,
    pub first: u64,
    pub count: u64,
}

impl ContentRef {
    /// One past the last chunk entry, `None` if it overflows (a corrupt record).
    pub fn end(&self) -> Option<u64> {
        self.first.checked_add(self.count)
    }

    /// The sequence numbers of the chunk entries, in content order.
    pub fn seqs(&self) -> std::ops::Range<u64> {
        self.first..self.first.saturating_add(self.count)
    }
}

/// What a put or rename says about the file's content and attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileMeta {
    /// Length in bytes.
    pub size: u64,
    /// Permission bits, within [`MODE_MASK`].
    pub mode: u32,
    pub mtime: Mtime,
    /// BLAKE3 of the whole content; the reader checks it after joining the chunks.
    pub hash: [u8; 32],
    /// The chunks; `count == chunk_count(size)`.
    pub content: ContentRef,
}

impl FileMeta {
    fn check(&self) -> Result<(), FsError> {
        if self.mode & !MODE_MASK != 0 {
            return Err(FsError::Malformed(format!(
                "mode {:o} has bits outside {MODE_MASK:o}",
                self.mode
            )));
        }
        self.mtime.check()?;
        let expected = chunk_count(self.size);
        if self.content.count != expected {
            return Err(FsError::Malformed(format!(
                "{} bytes need {expected} chunks, the record names {}",
                self.size, self.content.count
            )));
        }
        if self.content.end().is_none() {
            return Err(FsError::Malformed(format!(
                "chunk range {} + {} overflows",
                self.content.first, self.content.count
            )));
        }
        Ok(())
    }
}

/// One entry of a member feed.
///
/// The variant order is part of the format (postcard encodes the variant index): only ever add
/// variants at the end, and bump [`FORMAT_VERSION`] for anything else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Up to [`CHUNK_SIZE`] bytes of file content (never empty).
    Chunk(#[serde(with = "chunk_bytes")] Vec<u8>),
    /// `path` now holds the file `meta` describes; written after its chunks.
    Put {
        path: Path,
        meta: FileMeta,
        clock: VectorClock,
    },
    /// `path` no longer exists.
    Delete { path: Path, clock: VectorClock },
    /// In one op: `from` no longer exists and `to` holds the file `meta` describes (normally
    /// `from`'s content, by reference). `from != to`.
    Rename {
        from: Path,
        to: Path,
        meta: FileMeta,
        clock: VectorClock,
    },
    /// The writing device's name for people (`seeder log`); the latest one in a feed counts.
    Device { name: String },
}

impl Record {
    /// `FORMAT_VERSION ‖ postcard(self)`. Encoding a record that fails [`Record::check`] gives
    /// bytes [`Record::decode`] refuses.
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![FORMAT_VERSION];
        postcard::to_extend(self, out).expect("postcard encoding into a Vec cannot fail")
    }

    /// Strict inverse of [`Record::encode`]: known format, no trailing bytes, every invariant
    /// checked.
    pub fn decode(bytes: &[u8]) -> Result<Record, FsError> {
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| FsError::Malformed("empty record".into()))?;
        if version != FORMAT_VERSION {
            return Err(FsError::UnknownFormat(version));
        }
        let (record, rest) = postcard::take_from_bytes::<Record>(body)
            .map_err(|e| FsError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(FsError::TrailingBytes(rest.len()));
        }
        record.check()?;
        // postcard accepts over-long varints (`80 00` for 0); refuse them so that each record
        // has exactly one encoding. A chunk's only varints are its tag and length, so comparing
        // lengths is enough there and spares copying 64 KiB; other records are small.
        let canonical = match &record {
            Record::Chunk(data) => bytes.len() == 2 + varint_len(data.len() as u64) + data.len(),
            _ => record.encode() == bytes,
        };
        if !canonical {
            return Err(FsError::Malformed("non-canonical encoding".into()));
        }
        Ok(record)
    }

    /// Check the invariants that span fields (paths and clocks check their own on
    /// construction): chunk size, mode, mtime, chunk count, `from != to`, device name.
    pub fn check(&self) -> Result<(), FsError> {
        match self {
            Record::Chunk(data) => {
                if data.is_empty() || data.len() > CHUNK_SIZE {
                    return Err(FsError::Malformed(format!(
                        "chunk of {} bytes, expected 1 to {CHUNK_SIZE}",
                        data.len()
                    )));
                }
            }
            Record::Put { meta, .. } => meta.check()?,
            Record::Delete { .. } => {}
            Record::Rename { from, to, meta, .. } => {
                if from == to {
                    return Err(FsError::Malformed(format!(
                        "rename of {from:?} onto itself"
                    )));
                }
                meta.check()?;
            }
            Record::Device { name } => {
                if name.is_empty()
                    || name.len() > MAX_DEVICE_NAME_LEN
                    || name.chars().any(char::is_control)
                {
                    return Err(FsError::Malformed(format!(
                        "device name {name:?} is empty, over {MAX_DEVICE_NAME_LEN} bytes or has \
                         control characters"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The clock of a file op; `None` for chunks and device names.
    pub fn clock(&self) -> Option<&VectorClock> {
        match self {
            Record::Put { clock, .. }
            | Record::Delete { clock, .. }
            | Record::Rename { clock, .. } => Some(clock),
            Record::Chunk(_) | Record::Device { .. } => None,
        }
    }
}

/// Bytes of `n` as a postcard (LEB128) varint.
fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

impl fmt::Debug for Record {
    /// Chunks show their length, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Chunk(data) => write!(f, "Chunk({} bytes)", data.len()),
            Record::Put { path, meta, clock } => f
                .debug_struct("Put")
                .field("path", path)
                .field("meta", meta)
                .field("clock", clock)
                .finish(),
            Record::Delete { path, clock } => f
                .debug_struct("Delete")
                .field("path", path)
                .field("clock", clock)
                .finish(),
            Record::Rename {
                from,
                to,
                meta,
                clock,
            } => f
                .debug_struct("Rename")
                .field("from", from)
                .field("to", to)
                .field("meta", meta)
                .field("clock", clock)
                .finish(),
            Record::Device { name } => f.debug_struct("Device").field("name", name).finish(),
        }
    }
}

mod chunk_bytes {
    //! A chunk as one length-prefixed byte string (the same bytes postcard gives a `Vec<u8>`),
    //! with the length checked before anything is copied.
    use super::*;
    use serde::de::{Error, Visitor};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {CHUNK_SIZE} bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                if v.len() > CHUNK_SIZE {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> FeedKey {
        FeedKey([b; 32])
    }

    fn path(s: &str) -> Path {
        Path::new(s).expect("valid path")
    }

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            size,
            mode: 0o644,
            mtime: Mtime {
                secs: 1_700_000_000,
                nanos: 5,
            },
            hash: *blake3::hash(b"hello").as_bytes(),
            content: ContentRef {
                feed: key(1),
                first: 0,
                count: chunk_count(size),
            },
        }
    }

    fn clock() -> VectorClock {
        [(key(1), 2), (key(2), 7)].into_iter().collect()
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::Chunk(b"hello".to_vec()),
            Record::Chunk(vec![7; CHUNK_SIZE]),
            Record::Put {
                path: path("docs/a.txt"),
                meta: meta(5),
                clock: clock(),
            },
            Record::Put {
                path: path("empty"),
                meta: meta(0),
                clock: clock(),
            },
            Record::Delete {
                path: path("docs/a.txt"),
                clock: clock(),
            },
            Record::Rename {
                from: path("a"),
                to: path("b/a"),
                meta: meta(CHUNK_SIZE as u64 * 2 + 1),
                clock: clock(),
            },
            Record::Device {
                name: "Ana's laptop".into(),
            },
        ]
    }

    #[test]
    fn every_kind_of_record_round_trips() {
        for r in samples() {
            let bytes = r.encode();
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(Record::decode(&bytes).expect("decodes"), r);
        }
    }

    #[test]
    fn put_encoding_is_pinned() {
        let r = Record::Put {
            path: path("docs/a.txt"),
            meta: meta(5),
            clock: clock(),
        };
        // format 1, variant 1 (Put), path "docs/a.txt", size 5, mode 0o644, mtime (zigzag
        // secs, nanos), BLAKE3("hello"), content (feed 01.., first 0, count 1), clock (2 pairs).
        assert_eq!(
            hex::encode(r.encode()),
            concat!(
                "0101",
                "0a",
                "646f63732f612e747874",
                "05",
                "a403",
                "80c49fd50c",
                "05",
                "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
                "0101010101010101010101010101010101010101010101010101010101010101",
                "00",
                "01",
                "02",
                "0101010101010101010101010101010101010101010101010101010101010101",
                "02",
                "0202020202020202020202020202020202020202020202020202020202020202",
                "07",
            )
        );
    }

    #[test]
    fn delete_encoding_is_pinned() {
        let r = Record::Delete {
            path: path("a"),
            clock: [(key(9), 1)].into_iter().collect(),
        };
        assert_eq!(
            hex::encode(r.encode()),
            concat!(
                "0102",
                "0161",
                "01",
                "0909090909090909090909090909090909090909090909090909090909090909",
                "01",
            )
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for r in samples() {
            let mut bytes = r.encode();
            bytes.push(0);
            assert_eq!(Record::decode(&bytes), Err(FsError::TrailingBytes(1)));
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for r in samples()
            .into_iter()
            .filter(|r| !matches!(r, Record::Chunk(d) if d.len() > 5))
        {
            let bytes = r.encode();
            for cut in 0..bytes.len() {
                assert!(Record::decode(&bytes[..cut]).is_err(), "{r:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn unknown_format_is_refused() {
        let mut bytes = samples()[0].encode();
        bytes[0] = FORMAT_VERSION + 1;
        assert_eq!(
            Record::decode(&bytes),
            Err(FsError::UnknownFormat(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn unknown_variant_is_refused() {
        assert!(matches!(
            Record::decode(&[FORMAT_VERSION, 5]),
            Err(FsError::Malformed(_))
        ));
    }

    #[test]
    fn invalid_field_values_are_refused() {
        let mut bad_count = meta(5);
        bad_count.content.count = 2;
        let mut bad_mode = meta(5);
        bad_mode.mode = 0o100644;
        let mut bad_nanos = meta(5);
        bad_nanos.mtime.nanos = 1_000_000_000;
        let mut overflow = meta(CHUNK_SIZE as u64 * 2);
        overflow.content.first = u64::MAX;
        let bad = [
            Record::Chunk(Vec::new()),
            Record::Chunk(vec![0; CHUNK_SIZE + 1]),
            Record::Put {
                path: path("a"),
                meta: bad_count,
                clock: clock(),
            },
            Record::Put {
                path: path("a"),
                meta: bad_mode,
                clock: clock(),
            },
            Record::Put {
                path: path("a"),
                meta: bad_nanos,
                clock: clock(),
            },
            Record::Put {
                path: path("a"),
                meta: overflow,
                clock: clock(),
            },
            Record::Rename {
                from: path("a"),
                to: path("a"),
                meta: meta(5),
                clock: clock(),
            },
            Record::Device {
                name: String::new(),
            },
            Record::Device {
                name: "x".repeat(MAX_DEVICE_NAME_LEN + 1),
            },
            Record::Device {
                name: "a\nb".into(),
            },
        ];
        for r in bad {
            assert!(r.check().is_err(), "{r:?}");
            assert!(
                matches!(Record::decode(&r.encode()), Err(FsError::Malformed(_))),
                "{r:?}"
            );
        }
    }

    #[test]
    fn invalid_path_inside_a_record_is_refused() {
        let good = Record::Delete {
            path: path("ab"),
            clock: VectorClock::new(),
        }
        .encode();
        // Same length, so only the content of the path string changes: "ab" -> "..".
        let mut bad = good.clone();
        let at = good
            .windows(2)
            .position(|w| w == b"ab")
            .expect("path bytes present");
        bad[at..at + 2].copy_from_slice(b"..");
        assert!(Record::decode(&good).is_ok());
        assert!(matches!(Record::decode(&bad), Err(FsError::Malformed(_))));
    }

    #[test]
    fn over_long_varints_are_refused() {
        // Delete's variant tag 2 spelled as `82 00`, and a chunk's length 1 as `81 00`.
        let good = Record::Delete {
            path: path("a"),
            clock: VectorClock::new(),
        }
        .encode();
        let mut bad = vec![FORMAT_VERSION, 0x82, 0x00];
        bad.extend_from_slice(&good[2..]);
        assert!(Record::decode(&good).is_ok());
        assert_eq!(
            Record::decode(&bad),
            Err(FsError::Malformed("non-canonical encoding".into()))
        );
        assert!(Record::decode(&[FORMAT_VERSION, 0, 1, 9]).is_ok());
        assert!(Record::decode(&[FORMAT_VERSION, 0, 0x81, 0, 9]).is_err());
    }

    #[test]
    fn varint_len_matches_postcard() {
        for n in [0, 1, 127, 128, 16383, 16384, u64::MAX] {
            assert_eq!(
                varint_len(n),
                postcard::to_allocvec(&n).expect("encode").len(),
                "{n}"
            );
        }
    }

    #[test]
    fn chunk_count_rounds_up() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64 + 1), 2);
        assert_eq!(chunk_count(u64::MAX), u64::MAX / CHUNK_SIZE as u64 + 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Record::decode(&bytes);
            let mut with_version = vec![FORMAT_VERSION];
            with_version.extend_from_slice(&bytes);
            if let Ok(r) = Record::decode(&with_version) {
                // Whatever decodes re-encodes to the same bytes: one encoding per record.
                prop_assert_eq!(r.encode(), with_version);
            }
        }

        #[test]
        fn flipped_bytes_never_panic(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            for r in samples().into_iter().skip(2) {
                let mut bytes = r.encode();
                let i = index.index(bytes.len());
                bytes[i] ^= flip;
                if let Ok(decoded) = Record::decode(&bytes) {
                    prop_assert_eq!(decoded.encode(), bytes);
                }
            }
        }
    }
}
