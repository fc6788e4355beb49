/*!
Replication messages and their framing — pure: bytes in, messages out, and back.

A frame is a `u32` little-endian length, then that many bytes of one postcard-encoded
[`Message`]. The length is checked against [`MAX_FRAME_LEN`] before anything is allocated, a
message must use its frame exactly (no trailing bytes), and every decoded message is checked
against the count limits below, so a peer can't make us allocate or loop more than a bounded
amount per frame.

Decoding follows mini-redis: [`Decoder::decode`] returns `Ok(None)` when a whole frame isn't
buffered yet ("need more bytes" is not an error), and [`Decoder::finish`] tells a clean end of
stream from one in the middle of a frame.

This module knows nothing of sockets, QUIC streams, stores or the sync state machine: it only
says what may be said and how it is spelled.
*/

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::feed::{ConsistencyProof, FeedKey, Hash, PrefixHead, SignedHead};
use crate::space::{Capability, DeviceProof, DiscoveryKey, MembershipCert, Record};

/// Protocol version said in [`Message::Hello`] and in the ALPN (`seeder/1`).
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN protocol id for QUIC.
pub const ALPN: &[u8] = b"seeder/1";

/// A bit of [`Message::Hello`]'s `features`: the sender speaks [`Message::Members`], and when
/// a space opens it sends its records (if any), then at least one `FeedList` (empty if it
/// holds no feed), so the peer knows when it has heard who is in the space and what the
/// sender holds. Peers from before (which set no bits) get neither.
pub const FEATURE_MEMBERS: u64 = 1;

/// Largest frame body. A data message carries at most [`MAX_DATA_BYTES`] of entries plus one
/// maximal entry, a head, a proof and framing; 64 KiB of slack covers the rest. Far below
/// what `u32` allows, so a hostile length prefix is refused before allocation.
pub const MAX_FRAME_LEN: usize = MAX_DATA_BYTES + crate::feed::MAX_ENTRY_LEN + 64 * 1024;

/// Entry bytes a sender puts in one data message before starting another: 1 MiB keeps a
/// receiver's buffer per stream small on a 1 GiB board while amortising per-batch fsyncs.
pub const MAX_DATA_BYTES: usize = 1 << 20;

/// Entries in one data message: 64 KiB entries fill [`MAX_DATA_BYTES`] with 16; tiny entries
/// (file operations) are capped so one message's bookkeeping stays small.
pub const MAX_ENTRIES_PER_DATA: usize = 1024;

/// Feeds in one feed list. A small organisation's space has tens of devices; 1024 leaves
/// room for growth while bounding one message's verification work (one signature each).
pub const MAX_FEEDS_PER_LIST: usize = 1024;

/// Spaces one connection may open. A seeder of many partner organisations holds dozens.
pub const MAX_SPACES_PER_CONNECTION: u32 = 256;

/// Longest free text (goodbye reasons, error messages), in bytes.
pub const MAX_TEXT_LEN: usize = 512;

/// Hashes in one consistency proof: at most two per level of a 2^64-leaf tree.
pub const MAX_PROOF_HASHES: usize = 128;

/// Membership records in one [`Message::Members`]. Each costs the receiver one or two
/// signature checks (a Join carries the device's own signature too): 256 bound one message's
/// work to a few tens of milliseconds on the Lime2, and a whole log of
/// [`MAX_RECORDS`](crate::space::members::MAX_RECORDS) goes in 16 messages.
pub const MAX_RECORDS_PER_MESSAGE: usize = 256;

/// Encoded record bytes a sender puts in one [`Message::Members`] before starting another.
/// Most records are a few hundred bytes; an epoch of a large space can be a few hundred KiB,
/// and goes alone when it doesn't fit. Half of [`MAX_DATA_BYTES`] keeps every such frame
/// far below [`MAX_FRAME_LEN`].
pub const MAX_RECORD_BYTES_PER_MESSAGE: usize = MAX_DATA_BYTES / 2;

/// Errors of framing and decoding. All are the sender's fault: the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{n} trailing bytes after the message in a frame")]
    TrailingBytes { n: usize },
    #[error("{what}: {got} exceeds the limit of {max}")]
    LimitExceeded {
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("stream ended in the middle of a frame ({buffered} bytes buffered)")]
    UnexpectedEof { buffered: usize },
}

/// One feed a peer holds of a space, with the certificate that admits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedOffer {
    pub cert: MembershipCert,
    /// The newest head whose whole tree the sender holds; `None` for a feed with no entries.
    pub head: Option<SignedHead>,
    /// More entries than `head` covers that the sender holds verified against a longer head
    /// (the rest of an upload still to come), and can serve as a prefix of it.
    pub prefix: Option<u64>,
    /// The first entry the sender holds damaged (bit rot, not yet repaired): it really holds
    /// only what comes before, until it says `Stored` again.
    pub damaged_from: Option<u64>,
}

/// Why a node does not take (more of) a feed a peer offers: sent in [`Message::Refused`] so
/// the person on the other side learns the reason instead of waiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The disk keeps `keep_percent` % of `total` bytes free and has only `free` left.
    DiskFull {
        free: u64,
        total: u64,
        keep_percent: u8,
    },
    /// The space holds `held` bytes here and may hold at most `limit`.
    Quota { held: u64, limit: u64 },
    /// An agreement covering the space (the organisation named) reached its `limit` bytes.
    AgreementQuota { organisation: String, limit: u64 },
    /// The feed's writer signed two histories; nothing more of it is taken.
    Frozen,
    /// The space is not (or no longer) held there.
    NotHeld,
    /// Storing failed here (a disk error, say); the text says what.
    Failed(String),
    /// The feed's device was removed from the space or may no longer write (its membership
    /// log says so): entries after the point it was frozen at are not taken.
    Removed,
}

impl Refusal {
    /// Whether the refusal is about room (disk or quota), which freeing space can lift.
    pub fn is_room(&self) -> bool {
        matches!(
            self,
            Refusal::DiskFull { .. } | Refusal::Quota { .. } | Refusal::AgreementQuota { .. }
        )
    }
}

/// Bytes as people read them: `5.0 MiB`, `0.4 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::DiskFull {
                free, keep_percent, ..
            } => write!(
                f,
                "disk full ({} free, keeps {keep_percent} %)",
                human(*free)
            ),
            Refusal::Quota { limit, .. } => write!(f, "quota reached ({})", human(*limit)),
            Refusal::AgreementQuota {
                organisation,
                limit,
            } => write!(
                f,
                "the agreement with {organisation:?} reached its quota ({})",
                human(*limit)
            ),
            Refusal::Frozen => f.write_str("the feed is frozen: its writer signed two histories"),
            Refusal::NotHeld => f.write_str("this space is not held there (any more)"),
            Refusal::Failed(why) => write!(f, "storing failed: {why}"),
            Refusal::Removed => f.write_str(
                "the device that writes this feed was removed from the space or may only read: \
                 what it wrote after that is not taken",
            ),
        }
    }
}

/// Everything peers say to each other. `space` fields are connection-local ids chosen by the
/// side that opened the space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message each way on the control stream.
    Hello {
        version: u16,
        node_id: [u8; 32],
        features: u64,
    },
    /// Ask to replicate the space whose discovery key this is, proving knowledge of its
    /// address. A peer that can't verify the capability answers nothing at all.
    OpenSpace {
        space: u32,
        discovery: DiscoveryKey,
        capability: Capability,
    },
    /// The feeds the sender holds of a space (or, later, new ones).
    FeedList { space: u32, feeds: Vec<FeedOffer> },
    /// A newer head of one feed, pushed live.
    Head { space: u32, head: SignedHead },
    /// Please send entries of `feed` from `from` on.
    Want {
        space: u32,
        feed: FeedKey,
        from: u64,
    },
    /// Entries `[start, start + entries.len())` of `feed`, verifiable against `head` (with
    /// `proof` from their end to `head.length` when they end before it).
    Data {
        space: u32,
        feed: FeedKey,
        start: u64,
        #[serde(with = "entry_bytes")]
        entries: Vec<Bytes>,
        head: SignedHead,
        proof: Option<ConsistencyProof>,
        /// The sender's root at `start`, with a consistency proof to `head`, when the
        /// receiver's stored prefix must be checked for a fork first.
        prefix: Option<(Hash, ConsistencyProof)>,
        /// When the sender holds only a prefix of `head`: that prefix, proven against `head`;
        /// `proof` then leads to the prefix's length instead of the head's.
        checkpoint: Option<Box<PrefixHead>>,
    },
    /// The sender now durably stores `length` entries of `feed`: a storage acknowledgement.
    Stored {
        space: u32,
        feed: FeedKey,
        length: u64,
    },
    /// Closing politely.
    Goodbye { reason: String },
    /// A refusal the sender wants the peer to know about.
    Error { code: u16, message: String },
    /// The sender does not take (more of) `feed` of this space, and why. It keeps serving
    /// what it holds; the peer stops sending that feed.
    Refused {
        space: u32,
        feed: FeedKey,
        reason: Refusal,
    },
    /// Please send entries `[from, to)` of `feed` again: they are damaged here (bit rot). The
    /// sender checks them against its own verified tree and rewrites them.
    Fetch {
        space: u32,
        feed: FeedKey,
        from: u64,
        to: u64,
    },
    /// The sender can't serve `feed` from `from` on (its copy is damaged there and not yet
    /// repaired); ask another peer, or again later.
    Unavailable {
        space: u32,
        feed: FeedKey,
        from: u64,
    },
    /// Please introduce me to `node`, if it is connected to you: both of us are behind NATs
    /// and you reach us both. Asked only of a peer that holds a space with the asker.
    Introduce { node: [u8; 32] },
    /// `node` is seen at `addr` from here: send it a packet there now so that its packets get
    /// through your NAT (`dial`: and dial it, you asked for this).
    Punch {
        node: [u8; 32],
        addr: std::net::SocketAddr,
        dial: bool,
    },
    /// The receiver is seen at `addr` from here (its NAT's public side, if it is behind one).
    Observed { addr: std::net::SocketAddr },
    /// Membership records of a governed space the sender holds (sent when the space opens,
    /// before its feed list, and whenever new ones appear), at most
    /// [`MAX_RECORDS_PER_MESSAGE`]. An empty list acknowledges the peer's earlier `Members`
    /// messages of the space: their records are taken (or were known) and the feeds they
    /// admit judged again. After the older variants, so they keep their encoding.
    Members { space: u32, records: Vec<Record> },
    /// The sender is this device of the governed space (sent first when the space opens, by
    /// a side that has a device in it; seeders have none), and, while it joins, holds this
    /// invite (`invite`: the same proof made with the invite's key). The peer checks them
    /// against the membership log: a removed device is not served.
    Device {
        space: u32,
        proof: DeviceProof,
        invite: Option<DeviceProof>,
    },
    /// The sender does not serve this space to the receiver, and why: it says nothing more of
    /// the space on this connection and ignores what the receiver says of it.
    Denied { space: u32, reason: Denial },
}

/// Why a node does not serve a governed space to a peer ([`Message::Denied`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Denial {
    /// The device the peer proved to be was removed from the space.
    Removed,
    /// The peer proved no device of the space, and this node serves the space only to its
    /// devices (and, on a seeder, to the partner seeders its admin added).
    NotAMember,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::Removed => f.write_str("this device was removed from the space"),
            Denial::NotAMember => f.write_str(
                "it serves the space only to the space's devices and to its partner seeders",
            ),
        }
    }
}

impl Message {
    /// The space a message on the control stream is about, for those only a peer the space
    /// is served to may send (not the ones that open it, prove a device, carry records or
    /// deny it).
    pub fn gated_space(&self) -> Option<u32> {
        match self {
            Message::FeedList { space, .. }
            | Message::Head { space, .. }
            | Message::Want { space, .. }
            | Message::Stored { space, .. }
            | Message::Refused { space, .. }
            | Message::Fetch { space, .. }
            | Message::Unavailable { space, .. } => Some(*space),
            _ => None,
        }
    }

    /// Check the count limits that postcard can't know of.
    pub fn check_limits(&self) -> Result<(), WireError> {
        fn limit(what: &'static str, got: usize, max: usize) -> Result<(), WireError> {
            if got > max {
                Err(WireError::LimitExceeded { what, got, max })
            } else {
                Ok(())
            }
        }
        fn proof(p: &ConsistencyProof) -> Result<(), WireError> {
            limit("proof hashes", p.path.len(), MAX_PROOF_HASHES)
        }
        match self {
            Message::OpenSpace { space, .. }
            | Message::FeedList { space, .. }
            | Message::Head { space, .. }
            | Message::Want { space, .. }
            | Message::Data { space, .. }
            | Message::Stored { space, .. }
            | Message::Refused { space, .. }
            | Message::Fetch { space, .. }
            | Message::Unavailable { space, .. }
            | Message::Members { space, .. }
            | Message::Device { space, .. }
            | Message::Denied { space, .. }
                if *space >= MAX_SPACES_PER_CONNECTION =>
            {
                limit(
                    "space id",
                    *space as usize,
                    MAX_SPACES_PER_CONNECTION as usize - 1,
                )?
            }
            _ => {}
        }
        match self {
            Message::FeedList { feeds, .. } => {
                limit("feeds in a list", feeds.len(), MAX_FEEDS_PER_LIST)
            }
            Message::Data {
                entries,
                proof: p,
                prefix,
                checkpoint,
                ..
            } => {
                limit(
                    "entries in a data message",
                    entries.len(),
                    MAX_ENTRIES_PER_DATA,
                )?;
                for e in entries {
                    limit("entry bytes", e.len(), crate::feed::MAX_ENTRY_LEN)?;
                }
                if let Some(p) = p {
                    proof(p)?;
                }
                if let Some((_, p)) = prefix {
                    proof(p)?;
                }
                if let Some(c) = checkpoint {
                    proof(&c.proof)?;
                }
                Ok(())
            }
            Message::Fetch { from, to, .. } => {
                if to < from {
                    return Err(WireError::Malformed(format!("fetch of [{from}, {to})")));
                }
                limit(
                    "entries in a fetch",
                    (to - from).min(usize::MAX as u64) as usize,
                    MAX_ENTRIES_PER_DATA,
                )
            }
            Message::Members { records, .. } => limit(
                "records in a members message",
                records.len(),
                MAX_RECORDS_PER_MESSAGE,
            ),
            Message::Goodbye { reason } => limit("reason bytes", reason.len(), MAX_TEXT_LEN),
            Message::Error { message, .. } => limit("message bytes", message.len(), MAX_TEXT_LEN),
            Message::Refused { reason, .. } => match reason {
                Refusal::AgreementQuota { organisation, .. } => {
                    limit("organisation bytes", organisation.len(), MAX_TEXT_LEN)
                }
                Refusal::Failed(why) => limit("reason bytes", why.len(), MAX_TEXT_LEN),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// One whole frame: length prefix and body.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.check_limits()?;
        // Room for the entries at once (a data frame is mostly them), so the buffer is not
        // grown and copied over and over on its way to a megabyte.
        let entries = match self {
            Message::Data { entries, .. } => entries.iter().map(|e| e.len() + 5).sum(),
            _ => 0,
        };
        let mut out = Vec::with_capacity(4 + entries + 4096);
        out.extend_from_slice(&[0u8; 4]);
        let mut out =
            postcard::to_extend(self, out).map_err(|e| WireError::Malformed(e.to_string()))?;
        let len = out.len() - 4;
        if len > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        out[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(out)
    }

    /// One whole frame as chunks to send one after another, the same bytes as
    /// [`Message::encode`]: a data message's larger entries go as the shared bytes they are,
    /// not copied into the frame; everything else is encoded into the chunks between them.
    pub fn encode_chunks(&self) -> Result<Vec<Bytes>, WireError> {
        let Message::Data {
            space,
            feed,
            start,
            entries,
            head,
            proof,
            prefix,
            checkpoint,
        } = self
        else {
            return Ok(vec![Bytes::from(self.encode()?)]);
        };
        self.check_limits()?;
        let malformed = |e: postcard::Error| WireError::Malformed(e.to_string());
        // postcard writes a variant as its index, then its fields in order; a tuple as its
        // parts in order; a sequence and a byte string as their length, then their items.
        // The first chunk is the frame's 4-byte header, known once the rest is.
        let mut chunks = vec![Bytes::new()];
        let mut buf = postcard::to_extend(
            &(DATA_VARIANT, space, feed, start, entries.len()),
            Vec::with_capacity(128),
        )
        .map_err(malformed)?;
        for e in entries {
            buf = postcard::to_extend(&e.len(), buf).map_err(malformed)?;
            if e.len() < SHARED_ENTRY {
                buf.extend_from_slice(e);
            } else {
                chunks.push(Bytes::from(std::mem::take(&mut buf)));
                chunks.push(e.clone());
            }
        }
        buf = postcard::to_extend(&(head, proof, prefix, checkpoint), buf).map_err(malformed)?;
        chunks.push(Bytes::from(buf));
        let len: usize = chunks.iter().map(Bytes::len).sum();
        if len > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        chunks[0] = Bytes::copy_from_slice(&(len as u32).to_le_bytes());
        Ok(chunks)
    }

    /// Decode one frame body (no length prefix): strict, limits checked.
    pub fn decode_body(body: &[u8]) -> Result<Message, WireError> {
        if body.len() > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len: body.len(),
                max: MAX_FRAME_LEN,
            });
        }
        // postcard reads a sequence's length before its elements and may reserve that many;
        // every element takes at least one byte, so the reservation is bounded by the
        // frame's own length, itself bounded above.
        let (msg, rest): (Message, _) =
            postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes { n: rest.len() });
        }
        msg.check_limits()?;
        Ok(msg)
    }
}

/// `records` of open space `space` as [`Message::Members`] messages, in order, each within
/// [`MAX_RECORDS_PER_MESSAGE`] and [`MAX_RECORD_BYTES_PER_MESSAGE`] (a record larger than
/// that goes alone). None for no records: an empty `Members` is an acknowledgement.
pub fn members_messages(space: u32, records: Vec<Record>) -> Vec<Message> {
    let mut out = Vec::new();
    let mut chunk: Vec<Record> = Vec::new();
    let mut bytes = 0usize;
    for r in records {
        let size = postcard::experimental::serialized_size(&r).unwrap_or(usize::MAX);
        if !chunk.is_empty()
            && (chunk.len() == MAX_RECORDS_PER_MESSAGE
                || bytes.saturating_add(size) > MAX_RECORD_BYTES_PER_MESSAGE)
        {
            out.push(Message::Members {
                space,
                records: std::mem::take(&mut chunk),
            });
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        chunk.push(r);
    }
    if !chunk.is_empty() {
        out.push(Message::Members {
            space,
            records: chunk,
        });
    }
    out
}

/// The index postcard writes for [`Message::Data`]: its place in the enum.
const DATA_VARIANT: u32 = 5;

/// Entries at least this long are sent as their own chunk by [`Message::encode_chunks`];
/// shorter ones cost less to copy than to queue apart.
const SHARED_ENTRY: usize = 4 << 10;

/// Buffer capacity a [`Decoder`] keeps between frames; larger buffers are freed.
const IDLE_BUFFER: usize = 64 << 10;

/// Turns a byte stream into messages. Feed bytes with [`Decoder::extend`], take messages with
/// [`Decoder::decode`]. Holds at most one frame plus what arrived after it.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the next frame needs before [`Decoder::decode`] can return it
    /// (0 if it is complete). Lets a driver read exactly a frame. Errors on an oversized
    /// length prefix as soon as its 4 bytes are in.
    pub fn needed(&self) -> Result<usize, WireError> {
        if self.buf.len() < 4 {
            return Ok(4 - self.buf.len());
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        Ok((4 + len).saturating_sub(self.buf.len()))
    }

    /// The body length of the next frame once its header is in (`None` before), checked
    /// against [`MAX_FRAME_LEN`].
    pub fn frame_len(&self) -> Result<Option<usize>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        self.needed()?;
        Ok(Some(
            u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize,
        ))
    }

    /// Make room for the rest of the next frame at once (its header must be in and checked),
    /// so the buffer grows once to the frame's size instead of doubling past it.
    pub fn reserve_frame(&mut self) {
        if let Ok(need) = self.needed() {
            self.buf.reserve(need);
        }
    }

    /// The next message, `Ok(None)` if a whole frame isn't buffered yet.
    pub fn decode(&mut self) -> Result<Option<Message>, WireError> {
        if self.needed()? > 0 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        // The frame leaves the buffer as shared bytes: a data message's entries are slices of
        // it, not copies.
        let body = self.buf.split_to(4 + len).freeze().slice(4..);
        let msg = FRAME.with(|frame| {
            *frame.borrow_mut() = Some(body.clone());
            let msg = Message::decode_body(&body);
            *frame.borrow_mut() = None;
            msg
        });
        // A stream between frames holds no memory: a large frame's buffer is given back.
        if self.buf.is_empty() && self.buf.capacity() > IDLE_BUFFER {
            self.buf = BytesMut::new();
        }
        msg.map(Some)
    }

    /// At end of stream: fine if nothing is buffered, an error mid-frame.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::UnexpectedEof {
                buffered: self.buf.len(),
            })
        }
    }
}

thread_local! {
    /// The frame [`Decoder::decode`] is decoding on this thread: entries borrowed from it are
    /// taken as slices of it rather than copied.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// A data message's entries as byte strings: each one length and its bytes whole, instead of
/// a sequence of single bytes serialised one by one (the same bytes on the wire). Decoded from
/// a frame (see [`FRAME`]), an entry is a slice of the frame; from anything else, a copy.
/// Reading stops at [`MAX_ENTRIES_PER_DATA`] entries: a frame of a million empty entries would
/// otherwise cost tens of MiB before the limits are checked.
mod entry_bytes {
    use bytes::Bytes;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{FRAME, MAX_ENTRIES_PER_DATA};

    pub fn serialize<S: Serializer>(entries: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(entries.iter().map(|e| serde_bytes::Bytes::new(e)))
    }

    /// One entry as the decoder has it: borrowed from the input, or made for us.
    struct Entry(Bytes);

    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    write!(f, "a byte string")
                }
                fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Entry, E> {
                    Ok(Entry(slice_of_frame(v)))
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Entry, E> {
                    Ok(Entry(Bytes::copy_from_slice(v)))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Entry, E> {
                    Ok(Entry(Bytes::from(v)))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    /// `v` as a slice of the frame being decoded when it lies within it, else a copy.
    fn slice_of_frame(v: &[u8]) -> Bytes {
        FRAME.with(|frame| match &*frame.borrow() {
            Some(f) => {
                let (base, at) = (f.as_ptr() as usize, v.as_ptr() as usize);
                if at >= base && at + v.len() <= base + f.len() {
                    f.slice(at - base..at - base + v.len())
                } else {
                    Bytes::copy_from_slice(v)
                }
            }
            None => Bytes::copy_from_slice(v),
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Vec<Bytes>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "at most {MAX_ENTRIES_PER_DATA} byte strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hint = seq.size_hint().unwrap_or(0).min(MAX_ENTRIES_PER_DATA);
                let mut out = Vec::with_capacity(hint);
                while let Some(Entry(e)) = seq.next_element::<Entry>()? {
                    if out.len() == MAX_ENTRIES_PER_DATA {
                        return Err(A::Error::custom(format!(
                            "more than {MAX_ENTRIES_PER_DATA} entries in a data message"
                        )));
                    }
                    out.push(e);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Entries)
    }
}

#[cfg(test)]
mod tests;
