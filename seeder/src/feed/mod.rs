/*!
Signed append-only feeds — pure: no I/O, no clock, no randomness of its own.

A feed is a log of opaque entries written by one ed25519 key. Integrity is a Merkle tree in the
shape of RFC 9162 (Certificate Transparency v2) with BLAKE3: `leaf = H(0x00 ‖ entry)`,
`node = H(0x01 ‖ left ‖ right)`, the empty tree's root is `H("")`. The writer signs a
[`SignedHead`] over (domain tag, feed key, length, root).

This module owns the hashing, the proofs and their verification. It is the only place that can
create the proof types [`VerifiedHead`] and [`VerifiedBatch`]; the store accepts appends only as
a `VerifiedBatch`, so nothing unverified can reach the disk. It knows nothing of spaces,
encryption, peers or storage: tree nodes come in through closures (`FnMut(NodeId) -> Result<Hash,
E>`), so the store can serve them from disk and tests from a `Vec`.

Tree node naming: a *perfect subtree* of `2^level` leaves starting at leaf `index << level` is
[`NodeId`] `{ level, index }`. Every proof hash is either such a node or is computed from at most
`log2(n)` of them, so a store that keeps every perfect node can produce any proof.
*/

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A BLAKE3 digest.
pub type Hash = [u8; 32];

/// The largest entry a feed may hold. Entries are 64 KiB in the file layer; 1 MiB leaves room for
/// other uses while keeping one entry's buffer small on a 1 GiB board.
pub const MAX_ENTRY_LEN: usize = 1 << 20;

/// Domain tag of the head signature. Versioned: a later head format gets a new tag, so a v1
/// signature can never be read as a v2 one.
pub const HEAD_DOMAIN: &[u8] = b"seeder feed head v1\0";

/// Errors from verifying feed data. Every variant is someone else's fault (a peer, a disk):
/// the data is dropped, nothing is stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedError {
    /// The head's signature does not verify under its feed key.
    #[error("head of feed {feed} at length {length} has a bad signature")]
    BadSignature { feed: FeedKey, length: u64 },
    /// The bytes are not a valid ed25519 public key.
    #[error("{0} is not a valid feed key")]
    BadKey(FeedKey),
    /// Entries hashed to a root other than the signed one.
    #[error("entries of feed {feed} do not match its signed root at length {length}")]
    RootMismatch { feed: FeedKey, length: u64 },
    /// A proof does not verify.
    #[error("{kind} proof does not verify: {reason}")]
    BadProof {
        kind: &'static str,
        reason: &'static str,
    },
    /// An entry is larger than [`MAX_ENTRY_LEN`].
    #[error("entry of {len} bytes exceeds the {MAX_ENTRY_LEN}-byte limit")]
    EntryTooLarge { len: usize },
    /// Sizes or positions that cannot go together (batch past the head, proof for other sizes).
    #[error("inconsistent sizes: {0}")]
    Sizes(&'static str),
    /// Two heads of different feeds were compared.
    #[error("heads belong to different feeds ({0} and {1})")]
    DifferentFeeds(FeedKey, FeedKey),
    /// Evidence offered as a fork does not show one.
    #[error("not a fork: {0}")]
    NotAFork(&'static str),
}

/// The public key of a feed: an ed25519 verifying key, as 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FeedKey(pub [u8; 32]);

impl FeedKey {
    /// The ed25519 key, or [`FeedError::BadKey`] if the bytes are not a curve point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, FeedError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| FeedError::BadKey(*self))
    }

    /// Lowercase hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex characters, for logs and people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl From<&SigningKey> for FeedKey {
    fn from(key: &SigningKey) -> Self {
        FeedKey(key.verifying_key().to_bytes())
    }
}

impl std::fmt::Display for FeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

impl std::fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeedKey({})", self.short())
    }
}

/// `H(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    todo!()
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    todo!()
}

/// Root of the empty tree, `H("")` as in RFC 9162.
pub fn empty_root() -> Hash {
    todo!()
}

/// A perfect subtree: leaves `[index << level, (index + 1) << level)`. Level 0 is a leaf hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// The right edge of a tree: one perfect-subtree hash per set bit of its length, at most 64.
/// Appending a leaf costs O(log n) hashing; the root costs O(log n) more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    len: u64,
    /// Peaks from the highest level down, one per set bit of `len`.
    peaks: Vec<Hash>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rebuild the frontier of a tree of `len` leaves by reading its peaks (popcount(len) nodes).
    pub fn load<E>(len: u64, nodes: impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Self, E> {
        todo!()
    }

    /// The peaks as nodes, highest level first.
    pub fn peaks(&self) -> Vec<(NodeId, Hash)> {
        todo!()
    }

    /// Append one leaf hash. `new_node` is called for every perfect node this completes,
    /// level 0 (the leaf itself) first, so a store can persist exactly the new nodes.
    pub fn push(&mut self, leaf: Hash, new_node: impl FnMut(NodeId, Hash)) {
        todo!()
    }

    /// The RFC 9162 root of the whole tree.
    pub fn root(&self) -> Hash {
        todo!()
    }
}

/// RFC 9162 root of the first `size` leaves, from stored perfect nodes (O(log n) reads).
pub fn root_at<E>(size: u64, nodes: impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Hash, E> {
    todo!()
}

/// Proof that leaf `index` is in the tree of `size` leaves (RFC 9162 §2.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Build from stored perfect nodes of a tree with at least `size` leaves.
    pub fn build<E>(
        index: u64,
        size: u64,
        nodes: impl FnMut(NodeId) -> Result<Hash, E>,
    ) -> Result<Self, E> {
        todo!()
    }

    /// Check that `leaf` (a [`leaf_hash`]) is at `self.index` in the tree with root `root`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> Result<(), FeedError> {
        todo!()
    }
}

/// Proof that the tree of `old_size` leaves is a prefix of the tree of `new_size` (RFC 9162
/// §2.1.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Build from stored perfect nodes of a tree with at least `new_size` leaves.
    pub fn build<E>(
        old_size: u64,
        new_size: u64,
        nodes: impl FnMut(NodeId) -> Result<Hash, E>,
    ) -> Result<Self, E> {
        todo!()
    }

    /// Check that `old_root` (of `old_size` leaves) is a prefix of `new_root`.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), FeedError> {
        todo!()
    }
}

/// A head as the writer signed it: plain data, not yet trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    pub feed: FeedKey,
    pub length: u64,
    pub root: Hash,
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

impl SignedHead {
    /// The exact bytes signed: `HEAD_DOMAIN ‖ feed key ‖ length (u64 LE) ‖ root`.
    pub fn signing_bytes(feed: &FeedKey, length: u64, root: &Hash) -> Vec<u8> {
        todo!()
    }

    /// Sign a head as the feed's writer.
    pub fn sign(key: &SigningKey, length: u64, root: Hash) -> VerifiedHead {
        todo!()
    }

    /// Check the signature; the only way to get a [`VerifiedHead`] for someone else's feed.
    pub fn verify(self) -> Result<VerifiedHead, FeedError> {
        todo!()
    }
}

/// A head whose signature has been checked. Only this module can make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHead(SignedHead);

impl VerifiedHead {
    pub fn feed(&self) -> FeedKey {
        self.0.feed
    }
    pub fn length(&self) -> u64 {
        self.0.length
    }
    pub fn root(&self) -> &Hash {
        &self.0.root
    }
    /// The signed head, for sending or storing.
    pub fn signed(&self) -> &SignedHead {
        &self.0
    }
    pub fn into_signed(self) -> SignedHead {
        self.0
    }
}

/// Entries `[start, start + entries.len())` of a feed, checked against a verified head. Only
/// [`verify_batch`] and [`write_batch`] make one; the store's append takes nothing else.
#[derive(Debug)]
pub struct VerifiedBatch {
    feed: FeedKey,
    /// Root of the first `start` leaves the batch was checked on top of; the store compares it
    /// with its own before appending, so a batch checked against a stale frontier is refused.
    base_root: Hash,
    start: u64,
    entries: Vec<Vec<u8>>,
    /// Every perfect node the batch completes, level 0 included, in creation order.
    nodes: Vec<(NodeId, Hash)>,
    /// The head the batch was verified against; its length is >= the batch's end.
    head: VerifiedHead,
}

impl VerifiedBatch {
    pub fn feed(&self) -> FeedKey {
        self.feed
    }
    pub fn base_root(&self) -> &Hash {
        &self.base_root
    }
    pub fn start(&self) -> u64 {
        self.start
    }
    /// One past the last entry.
    pub fn end(&self) -> u64 {
        self.start + self.entries.len() as u64
    }
    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }
    pub fn nodes(&self) -> &[(NodeId, Hash)] {
        &self.nodes
    }
    pub fn head(&self) -> &VerifiedHead {
        &self.head
    }
    /// Whether the batch reaches the head's length (the feed is then complete up to the head).
    pub fn completes_head(&self) -> bool {
        self.end() == self.head.length()
    }
}

/// Check `entries`, appended to the tree `frontier` describes, against `head`.
///
/// If the batch ends at `head.length()` the new root must equal the head's; if it ends earlier,
/// `proof` must be the consistency proof from the batch's end to the head's length. Either way
/// the whole stored prefix is then proven to be a prefix of the signed tree. Entries larger than
/// [`MAX_ENTRY_LEN`] are refused.
pub fn verify_batch(
    frontier: &Frontier,
    head: VerifiedHead,
    entries: Vec<Vec<u8>>,
    proof: Option<&ConsistencyProof>,
) -> Result<VerifiedBatch, FeedError> {
    todo!()
}

/// The writer's own append: hash `entries` onto `frontier` (which it advances), sign the new
/// head, and return the batch ready for the store.
pub fn write_batch(
    key: &SigningKey,
    frontier: &mut Frontier,
    entries: Vec<Vec<u8>>,
) -> Result<VerifiedBatch, FeedError> {
    todo!()
}

/// Proof that a writer signed two histories that cannot both be true: `older` and `newer` are
/// validly signed heads of one feed, and `newer_prefix_root` — the root of `newer`'s tree cut at
/// `older.length`, proven by `proof` — differs from `older.root`. Kept as evidence, shown on the
/// admin page; the feed is frozen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    pub older: SignedHead,
    pub newer: SignedHead,
    pub newer_prefix_root: Hash,
    /// Consistency proof from `older.length` to `newer.length` in `newer`'s tree (empty when the
    /// lengths are equal).
    pub proof: ConsistencyProof,
}

impl ForkEvidence {
    /// Check that this really shows a fork: both signatures, one feed, a valid proof, and
    /// different roots at the same length.
    pub fn verify(&self) -> Result<(), FeedError> {
        todo!()
    }
}

/// What a new head means relative to one we already trust.
#[derive(Debug)]
pub enum Extension {
    /// `new` extends `trusted` (or equals it).
    Extends(VerifiedHead),
    /// The writer forked: keep the evidence, freeze the feed.
    Fork(Box<ForkEvidence>),
}

/// Decide whether `new` (with the sender's root of its tree cut at `trusted.length()` and the
/// consistency proof between the two) extends `trusted`. A proof that does not verify is the
/// sender's fault ([`FeedError::BadProof`]), not evidence of a fork. `new` shorter than
/// `trusted` is a [`FeedError::Sizes`] error: compare the other way round.
pub fn check_extension(
    trusted: &VerifiedHead,
    new: VerifiedHead,
    new_prefix_root: Hash,
    proof: &ConsistencyProof,
) -> Result<Extension, FeedError> {
    todo!()
}

mod sig_bytes {
    //! serde for `[u8; 64]` (serde's derive stops at 32).
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: &[u8] = Deserialize::deserialize(d)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

// Silence unused-import warnings until the bodies land.
#[allow(dead_code)]
fn _uses(k: &SigningKey, v: &VerifyingKey, m: &[u8]) {
    let s = k.sign(m);
    let _ = v.verify(m, &s);
}
