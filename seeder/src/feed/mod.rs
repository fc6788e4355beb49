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

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
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
    let mut h = blake3::Hasher::new();
    h.update(&[0x00]);
    h.update(entry);
    *h.finalize().as_bytes()
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x01]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// Batches with at least this many bytes hash their leaves on several threads: below it the
/// cost of starting a thread (tens of microseconds) outweighs the gain.
pub const PARALLEL_HASH_BYTES: usize = 1 << 20;

/// Most threads used to hash one batch. The Lime2 has two cores; beyond four the gain on
/// larger machines is small next to the disk.
const MAX_HASH_THREADS: usize = 4;

/// [`leaf_hash`] of every entry, in order. Large batches are split over a few threads so a
/// writer or verifier isn't held to one core's hashing speed while the disk waits.
pub fn leaf_hashes<E: AsRef<[u8]> + Sync>(entries: &[E]) -> Vec<Hash> {
    let bytes: usize = entries.iter().map(|e| e.as_ref().len()).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_HASH_THREADS)
        .min(entries.len());
    if bytes < PARALLEL_HASH_BYTES || threads < 2 {
        return entries.iter().map(|e| leaf_hash(e.as_ref())).collect();
    }
    let per = entries.len().div_ceil(threads);
    let mut out = vec![[0u8; 32]; entries.len()];
    std::thread::scope(|scope| {
        for (chunk, hashes) in entries.chunks(per).zip(out.chunks_mut(per)) {
            scope.spawn(move || {
                for (e, h) in chunk.iter().zip(hashes.iter_mut()) {
                    *h = leaf_hash(e.as_ref());
                }
            });
        }
    });
    out
}

/// Root of the empty tree, `H("")` as in RFC 9162.
pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// The largest power of two strictly below `n` (`n >= 2`): RFC 9162's split point `k`.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH of leaves `[start, start + len)`, where `start` is a multiple of the largest power of
/// two not above `len` (true of every range RFC 9162's recursion visits): the left part is
/// always a stored perfect node, the right part recurses, so at most `2·log2(len)` reads.
fn subtree<E>(
    start: u64,
    len: u64,
    nodes: &mut impl FnMut(NodeId) -> Result<Hash, E>,
) -> Result<Hash, E> {
    debug_assert!(len >= 1);
    if len.is_power_of_two() && start.is_multiple_of(len) {
        let level = len.trailing_zeros() as u8;
        return nodes(NodeId {
            level,
            index: start >> level,
        });
    }
    let k = split(len);
    let left = subtree(start, k, nodes)?;
    let right = subtree(start + k, len - k, nodes)?;
    Ok(node_hash(&left, &right))
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
    pub fn load<E>(len: u64, mut nodes: impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Self, E> {
        let mut peaks = Vec::with_capacity(len.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if len & (1 << level) != 0 {
                peaks.push(nodes(NodeId {
                    level,
                    index: start >> level,
                })?);
                start += 1 << level;
            }
        }
        Ok(Frontier { len, peaks })
    }

    /// The peaks as nodes, highest level first.
    pub fn peaks(&self) -> Vec<(NodeId, Hash)> {
        let mut out = Vec::with_capacity(self.peaks.len());
        let mut start = 0u64;
        let mut hashes = self.peaks.iter();
        for level in (0..64u8).rev() {
            if self.len & (1 << level) != 0 {
                let hash = hashes.next().expect("one peak per set bit of len");
                out.push((
                    NodeId {
                        level,
                        index: start >> level,
                    },
                    *hash,
                ));
                start += 1 << level;
            }
        }
        out
    }

    /// Append one leaf hash. `new_node` is called for every perfect node this completes,
    /// level 0 (the leaf itself) first, so a store can persist exactly the new nodes.
    pub fn push(&mut self, leaf: Hash, mut new_node: impl FnMut(NodeId, Hash)) {
        let index = self.len;
        new_node(NodeId { level: 0, index }, leaf);
        let mut hash = leaf;
        let mut level = 0u8;
        // Each set low bit of the old length is a peak of that level waiting for a right
        // sibling: merge until a clear bit.
        while (index >> level) & 1 == 1 {
            let left = self.peaks.pop().expect("a peak for every set bit of len");
            hash = node_hash(&left, &hash);
            level += 1;
            new_node(
                NodeId {
                    level,
                    index: index >> level,
                },
                hash,
            );
        }
        self.peaks.push(hash);
        self.len += 1;
    }

    /// The RFC 9162 root of the whole tree.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, peak| node_hash(peak, &acc))
    }
}

/// RFC 9162 root of the first `size` leaves, from stored perfect nodes (O(log n) reads).
pub fn root_at<E>(size: u64, mut nodes: impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Hash, E> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(0, size, &mut nodes)
}

/// Check a proof's hashes in the RFC 9162 walk shared by inclusion (§2.1.3.2) and consistency
/// (§2.1.4.2) verification. Returns `(fr, sr)`.
fn walk(
    mut fn_: u64,
    mut sn: u64,
    mut fr: Option<Hash>,
    mut sr: Hash,
    path: &[Hash],
    kind: &'static str,
) -> Result<(Option<Hash>, Hash), FeedError> {
    for c in path {
        if sn == 0 {
            return Err(FeedError::BadProof {
                kind,
                reason: "path is too long",
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = fr.map(|f| node_hash(c, &f));
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(FeedError::BadProof {
            kind,
            reason: "path is too short",
        });
    }
    Ok((fr, sr))
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
    ///
    /// `index < size` is the caller's to ensure; outside it the proof is simply invalid.
    pub fn build<E>(
        index: u64,
        size: u64,
        mut nodes: impl FnMut(NodeId) -> Result<Hash, E>,
    ) -> Result<Self, E> {
        let mut path = Vec::new();
        // RFC 9162 PATH(m, D[n]), iteratively: collect siblings root-down, then reverse.
        let (mut m, mut start, mut n) = (index, 0u64, size);
        while n > 1 {
            let k = split(n);
            if m < k {
                path.push(subtree(start + k, n - k, &mut nodes)?);
                n = k;
            } else {
                path.push(subtree(start, k, &mut nodes)?);
                m -= k;
                start += k;
                n -= k;
            }
        }
        path.reverse();
        Ok(InclusionProof { index, size, path })
    }

    /// Check that `leaf` (a [`leaf_hash`]) is at `self.index` in the tree with root `root`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> Result<(), FeedError> {
        const KIND: &str = "inclusion";
        if self.index >= self.size {
            return Err(FeedError::BadProof {
                kind: KIND,
                reason: "index is outside the tree",
            });
        }
        let (_, r) = walk(self.index, self.size - 1, None, *leaf, &self.path, KIND)?;
        if &r != root {
            return Err(FeedError::BadProof {
                kind: KIND,
                reason: "root does not match",
            });
        }
        Ok(())
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
    ///
    /// For `old_size == 0` or `old_size == new_size` the path is empty. `old_size <= new_size`
    /// is the caller's to ensure.
    pub fn build<E>(
        old_size: u64,
        new_size: u64,
        mut nodes: impl FnMut(NodeId) -> Result<Hash, E>,
    ) -> Result<Self, E> {
        let mut path = Vec::new();
        if old_size > 0 && old_size < new_size {
            // RFC 9162 SUBPROOF(m, D[n], b), iteratively, root-down then reversed.
            let (mut m, mut start, mut n, mut b) = (old_size, 0u64, new_size, true);
            while m != n {
                let k = split(n);
                if m <= k {
                    path.push(subtree(start + k, n - k, &mut nodes)?);
                    n = k;
                } else {
                    path.push(subtree(start, k, &mut nodes)?);
                    m -= k;
                    start += k;
                    n -= k;
                    b = false;
                }
            }
            if !b {
                path.push(subtree(start, m, &mut nodes)?);
            }
            path.reverse();
        }
        Ok(ConsistencyProof {
            old_size,
            new_size,
            path,
        })
    }

    /// Check that `old_root` (of `old_size` leaves) is a prefix of `new_root`.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), FeedError> {
        const KIND: &str = "consistency";
        let bad = |reason| Err(FeedError::BadProof { kind: KIND, reason });
        if self.old_size > self.new_size {
            return bad("old size is larger than new size");
        }
        if self.old_size == 0 || self.old_size == self.new_size {
            if !self.path.is_empty() {
                return bad("path is too long");
            }
            if self.old_size == 0 && old_root != &empty_root() {
                return bad("old root is not the empty tree's");
            }
            if self.old_size == self.new_size && old_root != new_root {
                return bad("roots of equal sizes differ");
            }
            return Ok(());
        }
        let mut path = self.path.as_slice();
        let first = if self.old_size.is_power_of_two() {
            *old_root
        } else {
            let Some((first, rest)) = path.split_first() else {
                return bad("path is too short");
            };
            path = rest;
            *first
        };
        let mut fn_ = self.old_size - 1;
        let mut sn = self.new_size - 1;
        while fn_ & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
        }
        let (fr, sr) = walk(fn_, sn, Some(first), first, path, KIND)?;
        if fr.as_ref() != Some(old_root) {
            return bad("old root does not match");
        }
        if &sr != new_root {
            return bad("new root does not match");
        }
        Ok(())
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
        let mut out = Vec::with_capacity(HEAD_DOMAIN.len() + 32 + 8 + 32);
        out.extend_from_slice(HEAD_DOMAIN);
        out.extend_from_slice(&feed.0);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(root);
        out
    }

    /// Sign a head as the feed's writer.
    pub fn sign(key: &SigningKey, length: u64, root: Hash) -> VerifiedHead {
        let feed = FeedKey::from(key);
        let signature = key
            .sign(&Self::signing_bytes(&feed, length, &root))
            .to_bytes();
        VerifiedHead(SignedHead {
            feed,
            length,
            root,
            signature,
        })
    }

    /// Check the signature; the only way to get a [`VerifiedHead`] for someone else's feed.
    pub fn verify(self) -> Result<VerifiedHead, FeedError> {
        let key = self.feed.verifying_key()?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(
            &Self::signing_bytes(&self.feed, self.length, &self.root),
            &signature,
        )
        .map_err(|_| FeedError::BadSignature {
            feed: self.feed,
            length: self.length,
        })?;
        Ok(VerifiedHead(self))
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

/// The first `length` entries of a feed as a longer signed head vouches for them: the root of
/// that prefix and the consistency proof from it to the signed root. What a node holding only
/// part of a feed (an upload cut short) serves it against; as trustworthy as the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixHead {
    pub head: SignedHead,
    pub length: u64,
    pub root: Hash,
    /// Consistency proof from `length` to `head.length`.
    pub proof: ConsistencyProof,
}

impl PrefixHead {
    /// Check the signature and the proof; the only way to get a [`VerifiedPrefix`].
    pub fn verify(self) -> Result<VerifiedPrefix, FeedError> {
        let head = self.head.verify()?;
        if self.length > head.length() {
            return Err(FeedError::Sizes("a prefix longer than its head"));
        }
        if self.proof.old_size != self.length || self.proof.new_size != head.length() {
            return Err(FeedError::Sizes("proof is for other sizes than the prefix"));
        }
        if self.length == head.length() {
            if &self.root != head.root() {
                return Err(FeedError::RootMismatch {
                    feed: head.feed(),
                    length: self.length,
                });
            }
        } else {
            self.proof.verify(&self.root, head.root())?;
        }
        Ok(VerifiedPrefix {
            head,
            length: self.length,
            root: self.root,
            proof: self.proof,
        })
    }
}

/// A [`PrefixHead`] whose signature and proof have been checked. Only this module makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPrefix {
    head: VerifiedHead,
    length: u64,
    root: Hash,
    proof: ConsistencyProof,
}

impl VerifiedPrefix {
    pub fn head(&self) -> &VerifiedHead {
        &self.head
    }
    pub fn length(&self) -> u64 {
        self.length
    }
    pub fn root(&self) -> &Hash {
        &self.root
    }
}

/// Entries `[start, start + entries.len())` of a feed, checked against a verified head. Only
/// [`verify_batch`], [`verify_batch_to_prefix`] and [`write_batch`] make one; the store's
/// append takes nothing else.
#[derive(Debug)]
pub struct VerifiedBatch {
    feed: FeedKey,
    /// Root of the first `start` leaves the batch was checked on top of; the store compares it
    /// with its own before appending, so a batch checked against a stale frontier is refused.
    base_root: Hash,
    start: u64,
    /// Entries as shared byte strings: a received batch's are slices of the frame they came in,
    /// never copied on their way to the disk.
    entries: Vec<Bytes>,
    /// Every perfect node the batch completes, level 0 included, in creation order.
    nodes: Vec<(NodeId, Hash)>,
    /// The head the batch was verified against; its length is >= the batch's end.
    head: VerifiedHead,
    /// When the batch ends before the head: the consistency proof from its end to the head,
    /// if known, so that the stored prefix can be served on before the rest arrives.
    tail_proof: Option<ConsistencyProof>,
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
    pub fn entries(&self) -> &[Bytes] {
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
    /// The proof from the batch's end to its head, when it ends before the head and the proof
    /// is known.
    pub fn tail_proof(&self) -> Option<&ConsistencyProof> {
        self.tail_proof.as_ref()
    }
}

/// `entries` hashed onto a copy of `frontier`: what a batch's checks compare with.
struct Grown {
    start: u64,
    end: u64,
    base_root: Hash,
    nodes: Vec<(NodeId, Hash)>,
    root: Hash,
}

/// Hash `entries` onto `frontier`, refusing oversized entries and a batch ending past `limit`.
fn grow<E: AsRef<[u8]> + Sync>(
    frontier: &Frontier,
    entries: &[E],
    limit: u64,
    past_limit: &'static str,
) -> Result<Grown, FeedError> {
    if let Some(e) = entries.iter().find(|e| e.as_ref().len() > MAX_ENTRY_LEN) {
        return Err(FeedError::EntryTooLarge {
            len: e.as_ref().len(),
        });
    }
    let start = frontier.len();
    let end = start + entries.len() as u64;
    if end > limit {
        return Err(FeedError::Sizes(past_limit));
    }
    let mut tree = frontier.clone();
    let mut nodes = Vec::with_capacity(entries.len() * 2);
    for leaf in leaf_hashes(entries) {
        tree.push(leaf, |id, h| nodes.push((id, h)));
    }
    Ok(Grown {
        start,
        end,
        base_root: frontier.root(),
        nodes,
        root: tree.root(),
    })
}

/// Check `entries`, appended to the tree `frontier` describes, against `head`.
///
/// If the batch ends at `head.length()` the new root must equal the head's; if it ends earlier,
/// `proof` must be the consistency proof from the batch's end to the head's length. Either way
/// the whole stored prefix is then proven to be a prefix of the signed tree. Entries larger than
/// [`MAX_ENTRY_LEN`] are refused.
pub fn verify_batch<E: Into<Bytes> + AsRef<[u8]> + Sync>(
    frontier: &Frontier,
    head: VerifiedHead,
    entries: Vec<E>,
    proof: Option<&ConsistencyProof>,
) -> Result<VerifiedBatch, FeedError> {
    let Grown {
        start,
        end,
        base_root,
        nodes,
        root,
    } = grow(
        frontier,
        &entries,
        head.length(),
        "batch ends past its head",
    )?;
    if end == head.length() {
        if &root != head.root() {
            return Err(FeedError::RootMismatch {
                feed: head.feed(),
                length: end,
            });
        }
    } else {
        let Some(proof) = proof else {
            return Err(FeedError::BadProof {
                kind: "consistency",
                reason: "a batch that ends before its head needs a proof",
            });
        };
        if proof.old_size != end || proof.new_size != head.length() {
            return Err(FeedError::Sizes("proof is for other sizes than the batch"));
        }
        proof.verify(&root, head.root())?;
    }
    Ok(VerifiedBatch {
        feed: head.feed(),
        base_root,
        start,
        entries: into_bytes(entries),
        nodes,
        tail_proof: (end < head.length()).then(|| proof.cloned()).flatten(),
        head,
    })
}

/// Check `entries`, appended to the tree `frontier` describes, against the prefix a longer
/// signed head vouches for: ending at the prefix's length the new root must be the prefix's,
/// ending earlier `proof` must be the consistency proof from the batch's end to the prefix.
pub fn verify_batch_to_prefix<E: Into<Bytes> + AsRef<[u8]> + Sync>(
    frontier: &Frontier,
    prefix: VerifiedPrefix,
    entries: Vec<E>,
    proof: Option<&ConsistencyProof>,
) -> Result<VerifiedBatch, FeedError> {
    let Grown {
        start,
        end,
        base_root,
        nodes,
        root,
    } = grow(
        frontier,
        &entries,
        prefix.length,
        "batch ends past its prefix",
    )?;
    let feed = prefix.head.feed();
    if end == prefix.length {
        if root != prefix.root {
            return Err(FeedError::RootMismatch { feed, length: end });
        }
    } else {
        let Some(proof) = proof else {
            return Err(FeedError::BadProof {
                kind: "consistency",
                reason: "a batch that ends before its prefix needs a proof",
            });
        };
        if proof.old_size != end || proof.new_size != prefix.length {
            return Err(FeedError::Sizes("proof is for other sizes than the batch"));
        }
        proof.verify(&root, &prefix.root)?;
    }
    // Reaching the prefix, the prefix's own proof carries on to the head.
    let tail_proof =
        (end == prefix.length && end < prefix.head.length()).then(|| prefix.proof.clone());
    Ok(VerifiedBatch {
        feed,
        base_root,
        start,
        entries: into_bytes(entries),
        nodes,
        tail_proof,
        head: prefix.head,
    })
}

/// The writer's own append: hash `entries` onto `frontier` (which it advances), sign the new
/// head, and return the batch ready for the store.
pub fn write_batch<E: Into<Bytes> + AsRef<[u8]> + Sync>(
    key: &SigningKey,
    frontier: &mut Frontier,
    entries: Vec<E>,
) -> Result<VerifiedBatch, FeedError> {
    if let Some(e) = entries.iter().find(|e| e.as_ref().len() > MAX_ENTRY_LEN) {
        return Err(FeedError::EntryTooLarge {
            len: e.as_ref().len(),
        });
    }
    let base_root = frontier.root();
    let start = frontier.len();
    let mut nodes = Vec::with_capacity(entries.len() * 2);
    for leaf in leaf_hashes(&entries) {
        frontier.push(leaf, |id, h| nodes.push((id, h)));
    }
    let head = SignedHead::sign(key, frontier.len(), frontier.root());
    Ok(VerifiedBatch {
        feed: head.feed(),
        base_root,
        start,
        entries: into_bytes(entries),
        nodes,
        tail_proof: None,
        head,
    })
}

/// Entries as shared byte strings (moved, not copied, when they already are).
fn into_bytes<E: Into<Bytes>>(entries: Vec<E>) -> Vec<Bytes> {
    entries.into_iter().map(Into::into).collect()
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
        if self.older.feed != self.newer.feed {
            return Err(FeedError::DifferentFeeds(self.older.feed, self.newer.feed));
        }
        let older = self.older.clone().verify()?;
        let newer = self.newer.clone().verify()?;
        if older.length() > newer.length() {
            return Err(FeedError::Sizes("the older head is longer than the newer"));
        }
        if older.length() == newer.length() {
            if older.root() == newer.root() {
                return Err(FeedError::NotAFork("the heads are the same"));
            }
            return Ok(());
        }
        if self.proof.old_size != older.length() || self.proof.new_size != newer.length() {
            return Err(FeedError::Sizes("proof is for other sizes than the heads"));
        }
        self.proof.verify(&self.newer_prefix_root, newer.root())?;
        if &self.newer_prefix_root == older.root() {
            return Err(FeedError::NotAFork("the newer head extends the older"));
        }
        Ok(())
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
    if trusted.feed() != new.feed() {
        return Err(FeedError::DifferentFeeds(trusted.feed(), new.feed()));
    }
    if new.length() < trusted.length() {
        return Err(FeedError::Sizes(
            "the new head is shorter than the trusted one",
        ));
    }
    let fork = |prefix_root: Hash, proof: ConsistencyProof, new: VerifiedHead| {
        Extension::Fork(Box::new(ForkEvidence {
            older: trusted.signed().clone(),
            newer: new.into_signed(),
            newer_prefix_root: prefix_root,
            proof,
        }))
    };
    if new.length() == trusted.length() {
        if new.root() == trusted.root() {
            return Ok(Extension::Extends(new));
        }
        let root = *new.root();
        let empty = ConsistencyProof {
            old_size: new.length(),
            new_size: new.length(),
            path: Vec::new(),
        };
        return Ok(fork(root, empty, new));
    }
    if proof.old_size != trusted.length() || proof.new_size != new.length() {
        return Err(FeedError::Sizes("proof is for other sizes than the heads"));
    }
    proof.verify(&new_prefix_root, new.root())?;
    if &new_prefix_root == trusted.root() {
        Ok(Extension::Extends(new))
    } else {
        Ok(fork(new_prefix_root, proof.clone(), new))
    }
}

pub(crate) mod sig_bytes {
    //! serde for `[u8; 64]` signatures (serde's derive stops at 32).
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = [u8; 64];

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("64 bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<[u8; 64], E> {
            v.try_into()
                .map_err(|_| E::invalid_length(v.len(), &"64 bytes"))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
            let mut out = [0u8; 64];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(i, &"64 bytes"))?;
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests;
