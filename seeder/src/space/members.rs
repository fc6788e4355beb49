/*!
The membership log of a governed space — pure: records in, a [`Membership`] out.

A governed space (every space created since roles exist) has owners, writers and readers.
Who is what is decided by a grow-only set of signed [`Record`]s that every peer replicates,
seeders included: they verify signatures and compute the same [`Membership`] without being
able to read anything else of the space. Records are hash-linked: each names the records its
signer had seen (`parents`), so the set is a DAG that says what happened before what.

- **Genesis**, signed by the space key itself, names the first owner device. The space key is
  thrown away right after (its secret is never kept by anyone), so nothing else can ever be
  signed with it; from then on authority comes only from owner devices.
- **Invite**, by an owner: a one-device invite key with a role. The joining device proves it
  holds the invite secret, which came to it in the invite code, by signing its **Join**.
  Each invite admits one device.
- **SetRole** and **Remove**, by an owner. A feed whose device is removed or made a reader is
  frozen at the length the owner had seen (`at`): what it wrote before stays, anything later
  is refused by seeders and ignored by members.
- **Epoch**, by an owner: a new content key, boxed (libsodium sealed box: X25519 +
  XSalsa20-Poly1305, `crypto_box`) to each remaining device's and pending invite's box key,
  with every earlier key wrapped under it so holders of the newest key read all history.
  Removing a device starts an epoch that is boxed to everyone but it.

Order and conflicts: records are applied in a topological order of the DAG (depth, then
record id), so every peer with the same set computes the same result. A record counts only
if its signer has the authority at that point. Records by a device that is removed count
only if the removal had seen them (they are its ancestors): this is applied to a fixed
point, so a removed owner can't slip in records that sort before its own removal. Two owners
who remove or demote each other concurrently are settled by seniority (who became an owner
first in order), not by the order of the two changes, whose parents the signers choose: a
removed owner can't back-date a counter-removal. The price, as in every system without a
central order: a stolen device of the *senior* owner can still counter-remove the owner who
removed it; keep the founding device safe, or hand seniority on by making a new space.
Concurrent epochs are all kept (an entry names its key); the newest in order is current, and
when it leaves out a key another holds (or was boxed to a removed device) the membership asks
for another rotation ([`Membership::needs_rotation`]), which the most senior owner device
makes ([`Membership::senior_owner`]).
Whatever was ignored is listed in [`Membership::conflicts`], for people to see.

This module knows nothing of feeds' contents, storage or the network.
*/

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Address, SpaceSecret};
use crate::feed::FeedKey;

/// Domain of record signatures: signed bytes are `RECORD_DOMAIN ‖ postcard(body)`.
pub const RECORD_DOMAIN: &[u8] = b"seeder membership record v1\0";
/// Domain of a joining device's own signature:
/// `JOIN_DOMAIN ‖ address ‖ invite key ‖ feed key ‖ box key`.
pub const JOIN_DOMAIN: &[u8] = b"seeder membership join v1\0";
/// Domain of the associated data of wrapped earlier keys and of labels.
pub const WRAP_DOMAIN: &[u8] = b"seeder key wrap v1\0";
pub const LABEL_DOMAIN: &[u8] = b"seeder member label v1\0";
/// Derivations from a device's feed signing key and from an invite secret.
pub const CTX_DEVICE_BOX: &str = "seeder 2026-12 device box key v1";
pub const CTX_INVITE_SIGNING: &str = "seeder 2026-12 invite signing key v1";
pub const CTX_INVITE_BOX: &str = "seeder 2026-12 invite box key v1";

/// Records one space may hold. Membership changes are rare (tens a year in an office); the
/// bound keeps a hostile owner from making every seeder hold and sort an unbounded set.
pub const MAX_RECORDS: usize = 4096;
/// Records held whose parents have not all arrived. In real use a record waits only while
/// the one before it is on its way; the bound keeps a stranger's records with made-up parents
/// from filling the log.
pub const MAX_WAITING: usize = 64;
/// Records kept from one key that is neither the space's nor a current owner's, beyond those
/// an owner's record had seen: an invite key signs one Join, and a device made reader or
/// removed while offline a few records that never count. The bound keeps whoever held an
/// invite code or a removed device from filling the log.
pub const MAX_RECORDS_PER_OUTSIDER: usize = 8;
/// Parents one record may name: the heads its signer saw. Concurrent heads are few.
pub const MAX_PARENTS: usize = 32;
/// Boxes one epoch may carry: every device and pending invite of the space.
pub const MAX_BOXES: usize = 1024;
/// Longest label (a person's or device's name) before sealing, in bytes.
pub const MAX_LABEL: usize = 128;
/// Bytes of a sealed box of a 32-byte key: ephemeral public key, tag, key.
pub const SEALED_KEY_LEN: usize = 32 + 16 + 32;
/// Bytes of a wrapped key or sealed label beyond its plaintext: nonce and tag.
const WRAP_OVERHEAD: usize = 24 + 16;

/// Errors of the membership layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberError {
    #[error("membership record is for space {got}, not {expected}")]
    OtherSpace { expected: Address, got: Address },
    #[error("membership record {0} has a bad signature")]
    BadSignature(RecordId),
    #[error("membership record {id} is malformed: {why}")]
    Malformed { id: RecordId, why: &'static str },
    #[error("the space holds {MAX_RECORDS} membership records, the most it may")]
    TooMany,
    #[error("this device has no key of the space's newest epoch")]
    NoKey,
}

/// What a device may do in a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberRole {
    /// Reads everything; writes nothing anyone accepts.
    Reader,
    /// Reads and writes files.
    Writer,
    /// Writes, and manages membership.
    Owner,
}

impl MemberRole {
    pub fn name(self) -> &'static str {
        match self {
            MemberRole::Reader => "reader",
            MemberRole::Writer => "writer",
            MemberRole::Owner => "owner",
        }
    }
    pub fn writes(self) -> bool {
        self != MemberRole::Reader
    }
}

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MemberRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reader" => Ok(MemberRole::Reader),
            "writer" => Ok(MemberRole::Writer),
            "owner" => Ok(MemberRole::Owner),
            _ => Err(format!("{s:?} is not a role: use reader, writer or owner")),
        }
    }
}

/// A record's id: BLAKE3 of its postcard encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId(pub [u8; 32]);

impl RecordId {
    /// The id of the content key a Genesis or Epoch record starts.
    pub fn key_id(&self) -> KeyId {
        let mut k = [0u8; 8];
        k.copy_from_slice(&self.0[..8]);
        KeyId(k)
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..4]))
    }
}

impl std::fmt::Debug for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// Names a content key: the first 8 bytes of the id of the Genesis or Epoch record that
/// started it. Every sealed entry of a governed space starts with one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", hex::encode(self.0))
    }
}

/// A device as the log knows it: its feed key (which also signs for it) and the X25519
/// public key content keys are boxed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub feed: FeedKey,
    pub box_key: [u8; 32],
}

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The space begins: `owner` is its first owner. Signed by the space key.
    Genesis { owner: Device },
    /// An owner invites one device. `invite` is the public half of the invite's signing key,
    /// `invite_box` of its box key; `sealed` boxes the content key `key` to `invite_box`;
    /// `label` (sealed with that key) names who the invite is for.
    Invite {
        invite: [u8; 32],
        invite_box: [u8; 32],
        role: MemberRole,
        key: KeyId,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
        #[serde(with = "serde_bytes")]
        label: Vec<u8>,
    },
    /// A device takes up an invite. Signed by the invite key; `device_signature` is the
    /// device's own, over [`JOIN_DOMAIN`] ‖ address ‖ invite ‖ feed ‖ box key.
    Join {
        invite: [u8; 32],
        device: Device,
        #[serde(with = "crate::feed::sig_bytes")]
        device_signature: [u8; 64],
    },
    /// An owner changes a device's role; a writer or owner made reader is frozen at `at`.
    SetRole {
        device: FeedKey,
        role: MemberRole,
        at: u64,
    },
    /// An owner removes a device (its feed frozen at `at` entries) or revokes a pending
    /// invite (`member` is then the invite key).
    Remove { member: [u8; 32], at: u64 },
    /// An owner starts a new content key: boxed to each `(box key owner, sealed box)`, the
    /// owner being a device's feed key or an invite key; `earlier` wraps older keys under
    /// the new one.
    Epoch {
        boxes: Vec<([u8; 32], Box<SealedKey>)>,
        earlier: Vec<(KeyId, Box<SealedKey>)>,
    },
}

/// Sealed bytes of a 32-byte key (a sealed box, or a nonce-prefixed XChaCha20-Poly1305
/// wrap), as a length-prefixed byte string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What a record says, and where it sits in the DAG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub address: Address,
    pub parents: Vec<RecordId>,
    pub change: Change,
}

/// A signed membership record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub body: Body,
    /// The ed25519 key that signed: the space key (Genesis), an owner's feed key, or an
    /// invite key (Join).
    pub signer: [u8; 32],
    #[serde(with = "crate::feed::sig_bytes")]
    pub signature: [u8; 64],
}

/// A record whose signatures and shape checked out for its space. Only [`Record::verify`]
/// makes one; the membership is computed from these alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRecord {
    record: Record,
    id: RecordId,
}

impl VerifiedRecord {
    pub fn id(&self) -> RecordId {
        self.id
    }
    pub fn record(&self) -> &Record {
        &self.record
    }
    pub fn into_record(self) -> Record {
        self.record
    }
}

impl Record {
    /// The exact bytes signed.
    pub fn signing_bytes(body: &Body) -> Vec<u8> {
        let mut out = RECORD_DOMAIN.to_vec();
        out.extend_from_slice(&postcard::to_allocvec(body).expect("records encode"));
        out
    }

    /// Sign `change` with `key`, after `parents`.
    pub fn sign(
        key: &SigningKey,
        address: Address,
        parents: Vec<RecordId>,
        change: Change,
    ) -> Record {
        let body = Body {
            address,
            parents,
            change,
        };
        let signature = key.sign(&Self::signing_bytes(&body)).to_bytes();
        Record {
            body,
            signer: key.verifying_key().to_bytes(),
            signature,
        }
    }

    /// The record's id.
    pub fn id(&self) -> RecordId {
        RecordId(*blake3::hash(&postcard::to_allocvec(self).expect("records encode")).as_bytes())
    }

    /// Check signatures and bounds for the space at `expected`. Authority (is the signer an
    /// owner?) depends on the other records and is decided by [`Membership::compute`].
    pub fn verify(self, expected: &Address) -> Result<VerifiedRecord, MemberError> {
        let id = self.id();
        let bad = |why| MemberError::Malformed { id, why };
        if &self.body.address != expected {
            return Err(MemberError::OtherSpace {
                expected: *expected,
                got: self.body.address,
            });
        }
        if self.body.parents.len() > MAX_PARENTS {
            return Err(bad("too many parents"));
        }
        match &self.body.change {
            Change::Genesis { .. } => {
                if self.signer != expected.0 || !self.body.parents.is_empty() {
                    return Err(bad(
                        "a genesis is signed by the space key and has no parents",
                    ));
                }
            }
            Change::Invite { sealed, label, .. } => {
                if sealed.len() != SEALED_KEY_LEN || label.len() > MAX_LABEL + WRAP_OVERHEAD {
                    return Err(bad("invite key or label of the wrong size"));
                }
            }
            Change::Join {
                invite,
                device,
                device_signature,
            } => {
                if &self.signer != invite {
                    return Err(bad("a join is signed by its invite key"));
                }
                let key = verifying(&device.feed.0).ok_or(bad("device key is no curve point"))?;
                let sig = ed25519_dalek::Signature::from_bytes(device_signature);
                key.verify_strict(&join_bytes(expected, invite, device), &sig)
                    .map_err(|_| MemberError::BadSignature(id))?;
            }
            Change::Epoch { boxes, earlier } => {
                if boxes.is_empty() || boxes.len() > MAX_BOXES || earlier.len() > MAX_RECORDS {
                    return Err(bad("an epoch's boxes are empty or too many"));
                }
                if boxes.iter().any(|(_, b)| b.0.len() != SEALED_KEY_LEN)
                    || earlier.iter().any(|(_, w)| w.0.len() != 32 + WRAP_OVERHEAD)
                {
                    return Err(bad("a boxed or wrapped key of the wrong size"));
                }
            }
            Change::SetRole { .. } | Change::Remove { .. } => {}
        }
        let key = verifying(&self.signer).ok_or(bad("signer is no curve point"))?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&Self::signing_bytes(&self.body), &sig)
            .map_err(|_| MemberError::BadSignature(id))?;
        Ok(VerifiedRecord { record: self, id })
    }
}

fn verifying(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes).ok()
}

/// The bytes a joining device signs with its own key.
pub fn join_bytes(address: &Address, invite: &[u8; 32], device: &Device) -> Vec<u8> {
    let mut out = JOIN_DOMAIN.to_vec();
    out.extend_from_slice(&address.0);
    out.extend_from_slice(invite);
    out.extend_from_slice(&device.feed.0);
    out.extend_from_slice(&device.box_key);
    out
}

/// A content key: 32 secret bytes.
pub type ContentKey = Zeroizing<[u8; 32]>;

/// The X25519 box key of a device, derived from its feed signing key.
pub fn device_box(device: &SigningKey) -> crypto_box::SecretKey {
    crypto_box::SecretKey::from_bytes(blake3::derive_key(CTX_DEVICE_BOX, device.as_bytes()))
}

/// A device as the log records it.
pub fn device_of(key: &SigningKey) -> Device {
    Device {
        feed: FeedKey::from(key),
        box_key: device_box(key).public_key().to_bytes(),
    }
}

/// The two keys an invite secret stands for.
pub struct InviteKeys {
    pub signing: SigningKey,
    pub boxing: crypto_box::SecretKey,
}

impl InviteKeys {
    pub fn from_secret(secret: &[u8; 32]) -> InviteKeys {
        let seed = Zeroizing::new(blake3::derive_key(CTX_INVITE_SIGNING, secret));
        InviteKeys {
            signing: SigningKey::from_bytes(&seed),
            boxing: crypto_box::SecretKey::from_bytes(blake3::derive_key(CTX_INVITE_BOX, secret)),
        }
    }
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }
    pub fn box_public(&self) -> [u8; 32] {
        self.boxing.public_key().to_bytes()
    }
}

/// Box a content key to an X25519 public key (a libsodium sealed box).
pub fn box_key(rng: &mut (impl RngCore + CryptoRng), to: &[u8; 32], key: &[u8; 32]) -> SealedKey {
    let public = crypto_box::PublicKey::from_bytes(*to);
    SealedKey(
        public
            .seal(rng, key)
            .expect("sealing 32 bytes to a public key cannot fail"),
    )
}

fn unbox_key(secret: &crypto_box::SecretKey, sealed: &SealedKey) -> Option<ContentKey> {
    let plain = Zeroizing::new(secret.unseal(&sealed.0).ok()?);
    let key: [u8; 32] = plain.as_slice().try_into().ok()?;
    Some(Zeroizing::new(key))
}

fn wrap_aad(address: &Address, id: &KeyId) -> Vec<u8> {
    let mut aad = WRAP_DOMAIN.to_vec();
    aad.extend_from_slice(&address.0);
    aad.extend_from_slice(&id.0);
    aad
}

/// Wrap the older key `id` under `new`: nonce ‖ XChaCha20-Poly1305 ciphertext ‖ tag, AAD
/// [`WRAP_DOMAIN`] ‖ address ‖ key id.
pub fn wrap_key(
    rng: &mut (impl RngCore + CryptoRng),
    address: &Address,
    new: &[u8; 32],
    id: &KeyId,
    old: &[u8; 32],
) -> SealedKey {
    SealedKey(seal_with(rng, new, &wrap_aad(address, id), old))
}

fn seal_with(
    rng: &mut (impl RngCore + CryptoRng),
    key: &[u8; 32],
    aad: &[u8],
    msg: &[u8],
) -> Vec<u8> {
    let aead = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let mut out = nonce.to_vec();
    out.extend(
        aead.encrypt((&nonce).into(), Payload { msg, aad })
            .expect("XChaCha20-Poly1305 encrypts short messages"),
    );
    out
}

fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < WRAP_OVERHEAD {
        return None;
    }
    let aead = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    let (nonce, ct) = sealed.split_at(24);
    aead.decrypt(nonce.into(), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

fn label_aad(address: &Address, invite: &[u8; 32]) -> Vec<u8> {
    let mut aad = LABEL_DOMAIN.to_vec();
    aad.extend_from_slice(&address.0);
    aad.extend_from_slice(invite);
    aad
}

/// Seal an invite's label with the content key it names, so seeders can't read it.
pub fn seal_label(
    rng: &mut (impl RngCore + CryptoRng),
    address: &Address,
    invite: &[u8; 32],
    key: &[u8; 32],
    label: &str,
) -> Vec<u8> {
    // Cut between characters, so what is read back is still text.
    let mut end = label.len().min(MAX_LABEL);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    seal_with(
        rng,
        key,
        &label_aad(address, invite),
        &label.as_bytes()[..end],
    )
}

/// The Genesis record of a new space whose first owner is `owner`. The caller throws
/// `secret` away afterwards: the space's content key of epoch 0 is
/// [`SpaceSecret::content_key`], kept by the owner device on its own.
pub fn genesis(secret: &SpaceSecret, owner: Device) -> Record {
    Record::sign(
        &secret.signing_key(),
        secret.address(),
        Vec::new(),
        Change::Genesis { owner },
    )
}

/// Where a device stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub device: Device,
    pub role: MemberRole,
    /// Removed from the space.
    pub removed: bool,
    /// Entries of its feed that count; later ones are refused and ignored.
    pub frozen_at: Option<u64>,
    /// The invite it joined with (none for the first owner).
    pub invite: Option<[u8; 32]>,
    /// The record that admitted it.
    pub since: RecordId,
}

/// A pending or used invite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub role: MemberRole,
    pub invite_box: [u8; 32],
    pub by: [u8; 32],
    pub key: KeyId,
    pub sealed: SealedKey,
    pub label: Vec<u8>,
    pub used_by: Option<FeedKey>,
    pub revoked: bool,
}

/// A content key epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    pub key: KeyId,
    pub record: RecordId,
    /// Who holds a box of it: devices' feed keys and invite keys.
    pub holders: BTreeSet<[u8; 32]>,
    /// Earlier keys it wraps (opens).
    pub wraps: BTreeSet<KeyId>,
}

/// Whether a feed is taken into the space, and how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not a writing member: its entries are refused.
    No,
    /// Entries up to `limit` (all of them when `None`) count.
    Upto(Option<u64>),
}

/// The membership of a governed space, computed from its verified records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeMap<FeedKey, Member>,
    pub invites: BTreeMap<[u8; 32], Invite>,
    /// Epochs in order; the first is the genesis key, the last is current.
    pub epochs: Vec<Epoch>,
    /// Records that did not count, and why, in order.
    pub conflicts: Vec<(RecordId, String)>,
    /// Records whose parents are not all here yet (they wait).
    pub waiting: usize,
    /// Records held and counted toward [`MAX_RECORDS`].
    pub records: usize,
    /// The records no other record names as a parent: the parents of the next one.
    pub heads: Vec<RecordId>,
    /// Where in the order each device first became an owner (its seniority).
    pub owner_since: BTreeMap<FeedKey, usize>,
}

impl Membership {
    /// Compute the membership from every verified record held of a space.
    pub fn compute(records: &[VerifiedRecord]) -> Membership {
        let by_id: BTreeMap<RecordId, &VerifiedRecord> =
            records.iter().map(|r| (r.id, r)).collect();
        // Depth of each record whose ancestry is complete; the rest wait. A record gets its
        // depth once all its parents have theirs (each parent counted as often as named).
        let mut depth: BTreeMap<RecordId, u64> = BTreeMap::new();
        let mut order: Vec<RecordId> = by_id.keys().copied().collect();
        let mut children: BTreeMap<RecordId, Vec<RecordId>> = BTreeMap::new();
        let mut unplaced: BTreeMap<RecordId, usize> = BTreeMap::new();
        let mut ready: Vec<RecordId> = Vec::new();
        for (id, r) in &by_id {
            let parents = &r.record.body.parents;
            for p in parents {
                children.entry(*p).or_default().push(*id);
            }
            unplaced.insert(*id, parents.len());
            if parents.is_empty() {
                ready.push(*id);
            }
        }
        while let Some(id) = ready.pop() {
            let parents = &by_id[&id].record.body.parents;
            let d = parents.iter().map(|p| depth[p] + 1).max().unwrap_or(0);
            depth.insert(id, d);
            for child in children.get(&id).into_iter().flatten() {
                let n = unplaced.get_mut(child).expect("every record is counted");
                *n -= 1;
                if *n == 0 {
                    ready.push(*child);
                }
            }
        }
        order.retain(|id| depth.contains_key(id));
        order.sort_by_key(|id| (depth[id], *id));
        let mut excluded = senior_wins(&order, &by_id);
        let juniors = excluded.clone();
        let second_joins = second_joins(&order, &by_id, &excluded);
        excluded.extend(second_joins.iter().copied());
        // Removals whose exclusions are in `excluded`: each is worked out once.
        let mut done: BTreeSet<RecordId> = BTreeSet::new();
        // Each round can only exclude more, so this ends within `order.len()` rounds. A round
        // takes the exclusions of one removal, the first (as below) that has any: they may take
        // away the authority behind a later removal, which must then exclude nothing.
        // Losses are taken most senior signer first, then in order: the order of two records
        // at one depth is only their ids, which a signer can grind, but seniority comes from
        // records others signed. So a device let in by an owner that is losing its place can't
        // make its own removal of that owner's remover be worked out first.
        let position: BTreeMap<RecordId, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut state;
        loop {
            state = apply(&order, &by_id, &excluded);
            let before = excluded.len();
            let mut losses = state.removals.clone();
            losses.sort_by_key(|(r, _)| {
                let signer = FeedKey(by_id[r].record.signer);
                let since = state.owner_since.get(&signer).copied();
                (since.unwrap_or(usize::MAX), position[r])
            });
            for (removal, member) in &losses {
                if !done.insert(*removal) {
                    continue;
                }
                // What the device signed concurrently with losing its place (neither seen by
                // the change nor made after seeing it) is out; what it signed after seeing it
                // is judged by the role it has then.
                let seen = ancestors(*removal, &by_id);
                let after = descendants(*removal, &order, &by_id);
                excluded.extend(order.iter().filter(|id| {
                    by_id[id].record.signer == *member && !seen.contains(id) && !after.contains(id)
                }));
                if excluded.len() > before {
                    break;
                }
            }
            if excluded.len() == before {
                break;
            }
        }
        let mut m = state.membership;
        m.owner_since = state.owner_since;
        for id in &order {
            if second_joins.contains(id) {
                m.conflicts.push((
                    *id,
                    "a second join with one invite (an owner confirmed another, or none: then \
                     the invite admits nobody, and an owner invites the device again)"
                        .into(),
                ));
            } else if juniors.contains(id) {
                m.conflicts.push((
                    *id,
                    "the junior of two owners removing or demoting each other at once".into(),
                ));
            } else if excluded.contains(id) {
                m.conflicts.push((
                    *id,
                    "signed by a removed device (or an owner made writer or reader) without \
                     having seen that change"
                        .into(),
                ));
            }
        }
        // Counted by id: the same record given twice is held once.
        m.waiting = by_id.len() - order.len();
        m.records = by_id.len();
        let named: BTreeSet<RecordId> = order
            .iter()
            .flat_map(|id| by_id[id].record.body.parents.iter().copied())
            .collect();
        m.heads = order
            .iter()
            .filter(|id| !named.contains(id))
            .copied()
            .collect();
        m.heads.truncate(MAX_PARENTS);
        m
    }

    /// Whether the space has begun (a valid Genesis).
    pub fn is_governed(&self) -> bool {
        !self.epochs.is_empty()
    }

    /// A device still in the space, with its role.
    pub fn role(&self, feed: &FeedKey) -> Option<MemberRole> {
        self.members
            .get(feed)
            .filter(|m| !m.removed)
            .map(|m| m.role)
    }

    /// Whether `feed`'s entries are taken, and how far.
    pub fn admits(&self, feed: &FeedKey) -> Admission {
        match self.members.get(feed) {
            None => Admission::No,
            Some(m) if !m.removed && m.role.writes() => Admission::Upto(m.frozen_at),
            Some(m) => match m.frozen_at {
                Some(at) if at > 0 => Admission::Upto(Some(at)),
                _ => Admission::No,
            },
        }
    }

    /// Devices still in the space.
    pub fn active(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| !m.removed)
    }

    /// Invites neither used nor revoked.
    pub fn pending(&self) -> impl Iterator<Item = (&[u8; 32], &Invite)> {
        self.invites
            .iter()
            .filter(|(_, i)| i.used_by.is_none() && !i.revoked)
    }

    /// The number of key changes since the space began (0 at first).
    pub fn epoch(&self) -> usize {
        self.epochs.len().saturating_sub(1)
    }

    /// The current content key's id.
    pub fn current_key(&self) -> Option<KeyId> {
        self.epochs.last().map(|e| e.key)
    }

    /// Whether the current key is held by someone no longer entitled to it (two owners
    /// removed devices at once, each boxing the new key to the other's removed device; or
    /// it was boxed to an invite that is revoked, or whose device is removed): an owner
    /// should start another epoch.
    pub fn needs_rotation(&self) -> bool {
        let Some(current) = self.epochs.last() else {
            return false;
        };
        // A concurrent epoch's key the current one doesn't open: devices invited from now on
        // could not read what was sealed with it.
        if self.epochs[..self.epochs.len() - 1]
            .iter()
            .any(|e| !current.wraps.contains(&e.key))
        {
            return true;
        }
        current.holders.iter().any(|h| {
            let removed = |feed: &FeedKey| self.members.get(feed).is_some_and(|m| m.removed);
            let device = removed(&FeedKey(*h));
            // An invite's secret stays with the device that joined with it.
            let invite = self
                .invites
                .get(h)
                .is_some_and(|i| i.revoked || i.used_by.as_ref().is_some_and(removed));
            device || invite
        })
    }

    /// The owner device still in the space that became an owner first: the one that makes a
    /// rotation the membership asks for, so that two owners never race to.
    pub fn senior_owner(&self) -> Option<FeedKey> {
        self.active()
            .filter(|d| d.role == MemberRole::Owner)
            .min_by_key(|d| {
                let since = self.owner_since.get(&d.device.feed).copied();
                (since.unwrap_or(usize::MAX), d.device.feed)
            })
            .map(|d| d.device.feed)
    }

    /// Everyone a new epoch's key is boxed to: devices still in the space and pending
    /// invites, as (holder, X25519 public key).
    pub fn recipients(&self) -> Vec<([u8; 32], [u8; 32])> {
        let mut out: Vec<_> = self
            .active()
            .map(|m| (m.device.feed.0, m.device.box_key))
            .collect();
        out.extend(self.pending().map(|(k, i)| (*k, i.invite_box)));
        out
    }

    /// Every content key the holder of `boxes` (its device box key, an invite's box key)
    /// can open, given `known` keys (the genesis key, for the first owner), by key id.
    pub fn unlock(
        &self,
        records: &[VerifiedRecord],
        address: &Address,
        boxes: &[(&[u8; 32], &crypto_box::SecretKey)],
        mut known: BTreeMap<KeyId, ContentKey>,
    ) -> BTreeMap<KeyId, ContentKey> {
        let by_id: BTreeMap<RecordId, &VerifiedRecord> =
            records.iter().map(|r| (r.id, r)).collect();
        for (holder, secret) in boxes {
            for epoch in &self.epochs {
                if let Some(Change::Epoch { boxes: b, .. }) =
                    by_id.get(&epoch.record).map(|r| &r.record.body.change)
                {
                    if let Some((_, sealed)) = b.iter().find(|(h, _)| h == *holder) {
                        if let Some(key) = unbox_key(secret, sealed) {
                            known.insert(epoch.key, key);
                        }
                    }
                }
            }
            if let Some(invite) = self.invites.get(*holder) {
                if let Some(key) = unbox_key(secret, &invite.sealed) {
                    known.insert(invite.key, key);
                }
            }
        }
        // Newer keys open older ones; walk the epochs newest first until nothing changes.
        loop {
            let before = known.len();
            for epoch in self.epochs.iter().rev() {
                let Some(new) = known.get(&epoch.key).cloned() else {
                    continue;
                };
                if let Some(Change::Epoch { earlier, .. }) =
                    by_id.get(&epoch.record).map(|r| &r.record.body.change)
                {
                    for (id, wrapped) in earlier {
                        if known.contains_key(id) {
                            continue;
                        }
                        if let Some(old) = open_with(&new, &wrap_aad(address, id), &wrapped.0)
                            .and_then(|p| <[u8; 32]>::try_from(p.as_slice()).ok())
                        {
                            known.insert(*id, Zeroizing::new(old));
                        }
                    }
                }
            }
            if known.len() == before {
                break;
            }
        }
        known
    }

    /// The label of `member`'s invite, if `keys` open it.
    pub fn label(
        &self,
        address: &Address,
        member: &Member,
        keys: &BTreeMap<KeyId, ContentKey>,
    ) -> Option<String> {
        let invite = member.invite?;
        self.invite_label(address, &invite, keys)
    }

    /// The label of an invite, if `keys` open it.
    pub fn invite_label(
        &self,
        address: &Address,
        invite: &[u8; 32],
        keys: &BTreeMap<KeyId, ContentKey>,
    ) -> Option<String> {
        let i = self.invites.get(invite)?;
        let key = keys.get(&i.key)?;
        let plain = open_with(key, &label_aad(address, invite), &i.label)?;
        Some(String::from_utf8_lossy(&plain).into_owned())
    }
}

/// Of `new` records, those worth keeping beside `held` (and passing on): records signed by
/// the space key or by an owner still in the space; the records those had seen (whoever
/// signed them); the Join that let in each device in the space; and, from any other key the log
/// knows (an invite, a writer, a device removed or demoted since), at most
/// [`MAX_RECORDS_PER_OUTSIDER`] in all. Records waiting for parents not yet here are kept up
/// to [`MAX_WAITING`] in all, and only from keys the log knows, counted against the same
/// bound unless an owner signed them (once their parents come they are not judged again). Anyone who knows a space's address can sign records with keys
/// of its own, and whoever ever held an invite code or was removed can sign with that key:
/// either would fill the log up to [`MAX_RECORDS`] if what it signs were kept, and then
/// nothing more, not even an owner's removal, would be. What is not kept never counted: a
/// record counts only if an owner signed it or an owner's record had seen it, or it is the
/// Join of a device in the space.
pub fn worth_keeping(
    address: &Address,
    held: &[VerifiedRecord],
    new: Vec<VerifiedRecord>,
) -> Vec<VerifiedRecord> {
    let mut all: Vec<VerifiedRecord> = held.to_vec();
    let mut fresh = Vec::new();
    let held_ids: BTreeSet<RecordId> = held.iter().map(|r| r.id).collect();
    let mut seen = BTreeSet::new();
    for r in new {
        if !held_ids.contains(&r.id) && seen.insert(r.id) {
            all.push(r.clone());
            fresh.push(r);
        }
    }
    let m = Membership::compute(&all);
    let placed = placed(&all);
    let mut waiting = held.iter().filter(|r| !placed.contains(&r.id)).count();
    let anchor = |r: &VerifiedRecord| {
        r.record.signer == address.0 || m.role(&FeedKey(r.record.signer)) == Some(MemberRole::Owner)
    };
    // Everything the space key's and the owners' records had seen.
    let by_id: BTreeMap<RecordId, &VerifiedRecord> = all.iter().map(|r| (r.id, r)).collect();
    let seen_by_owners = reach(
        all.iter()
            .filter(|r| anchor(r))
            .flat_map(|r| r.record.body.parents.iter().copied())
            .collect(),
        |id| by_id.get(id).map(|r| r.record.body.parents.as_slice()),
    );
    // The one Join that let each device in: copies of it with other parents (anyone with the
    // invite code can sign those) don't count, and fall under the bound below.
    let joined = |r: &VerifiedRecord| {
        matches!(&r.record.body.change, Change::Join { device, .. }
            if m.members.get(&device.feed).is_some_and(|d| !d.removed && d.since == r.id))
    };
    let mut by_signer: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    for r in held {
        *by_signer.entry(r.record.signer).or_default() += 1;
    }
    fresh
        .into_iter()
        .filter(|r| {
            let signer = r.record.signer;
            let known = signer == address.0
                || m.members.contains_key(&FeedKey(signer))
                || m.invites.contains_key(&signer);
            if !known {
                return false;
            }
            let is_placed = placed.contains(&r.id);
            if is_placed && (anchor(r) || seen_by_owners.contains(&r.id) || joined(r)) {
                return true;
            }
            // A record waiting for its parents is judged now, by its signer alone: once they
            // come it is held without being judged again.
            let outsider = !anchor(r);
            if outsider && by_signer.get(&signer).copied().unwrap_or(0) >= MAX_RECORDS_PER_OUTSIDER
            {
                return false;
            }
            if !is_placed {
                if waiting >= MAX_WAITING {
                    return false;
                }
                waiting += 1;
            }
            if outsider {
                *by_signer.entry(signer).or_default() += 1;
            }
            true
        })
        .collect()
}

/// The records whose whole ancestry is here.
fn placed(records: &[VerifiedRecord]) -> BTreeSet<RecordId> {
    let by_id: BTreeMap<RecordId, &VerifiedRecord> = records.iter().map(|r| (r.id, r)).collect();
    let mut children: BTreeMap<RecordId, Vec<RecordId>> = BTreeMap::new();
    let mut missing: BTreeMap<RecordId, usize> = BTreeMap::new();
    let mut ready = Vec::new();
    for (id, r) in &by_id {
        let parents: BTreeSet<&RecordId> = r.record.body.parents.iter().collect();
        for p in &parents {
            children.entry(**p).or_default().push(*id);
        }
        missing.insert(*id, parents.len());
        if parents.is_empty() {
            ready.push(*id);
        }
    }
    let mut out = BTreeSet::new();
    while let Some(id) = ready.pop() {
        out.insert(id);
        for c in children.get(&id).into_iter().flatten() {
            if let Some(n) = missing.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    ready.push(*c);
                }
            }
        }
    }
    out
}

/// The records in `order` that have `of` among their ancestors.
fn descendants(
    of: RecordId,
    order: &[RecordId],
    by_id: &BTreeMap<RecordId, &VerifiedRecord>,
) -> BTreeSet<RecordId> {
    let mut out = BTreeSet::new();
    let mut reached: BTreeSet<RecordId> = [of].into();
    // The order is topological: parents come first.
    for id in order {
        if by_id[id]
            .record
            .body
            .parents
            .iter()
            .any(|p| reached.contains(p))
        {
            reached.insert(*id);
            out.insert(*id);
        }
    }
    out
}

/// The ancestors of one record (itself excluded). Worked out for removals only, as they
/// are needed: the ancestors of every record of a log at [`MAX_RECORDS`] would be eight
/// million ids, half a gigabyte.
fn ancestors(of: RecordId, by_id: &BTreeMap<RecordId, &VerifiedRecord>) -> BTreeSet<RecordId> {
    reach(by_id[&of].record.body.parents.clone(), |id| {
        by_id.get(id).map(|r| r.record.body.parents.as_slice())
    })
}

/// Every record reachable from `start` through parents (`start` included; ids of records not
/// here too, they are not followed further). Each record is expanded once.
fn reach<'a>(
    start: Vec<RecordId>,
    parents: impl Fn(&RecordId) -> Option<&'a [RecordId]>,
) -> BTreeSet<RecordId> {
    let mut out = BTreeSet::new();
    let mut next = start;
    while let Some(id) = next.pop() {
        if out.insert(id) {
            if let Some(p) = parents(&id) {
                next.extend(p.iter().copied());
            }
        }
    }
    out
}

/// Two owners who remove or demote each other concurrently (neither change had seen the
/// other), or an owner and a device that holds its authority from the owner the first one is
/// removing or demoting: the change by the senior one, the owner first in order, counts; the
/// junior's is excluded. Parents a signer chooses can't decide this (a removed owner could name old ones
/// to sort its counter-removal first); seniority is fixed by records others signed.
fn senior_wins(
    order: &[RecordId],
    by_id: &BTreeMap<RecordId, &VerifiedRecord>,
) -> BTreeSet<RecordId> {
    let mut out = BTreeSet::new();
    let hostile: Vec<(RecordId, [u8; 32], [u8; 32])> = order
        .iter()
        .filter_map(|id| {
            let r = &by_id[id].record;
            match &r.body.change {
                Change::Remove { member, .. } => Some((*id, r.signer, *member)),
                Change::SetRole { device, role, .. } if *role != MemberRole::Owner => {
                    Some((*id, r.signer, device.0))
                }
                _ => None,
            }
        })
        .collect();
    if hostile.len() < 2 {
        return out;
    }
    let first = apply(order, by_id, &BTreeSet::new());
    let rank = first.owner_since;
    let rank_of = |k: &[u8; 32]| rank.get(&FeedKey(*k)).copied().unwrap_or(usize::MAX);
    // A device acts with its own authority and that of the owners it holds it from: the owner
    // that made it one, and so on up to the first owner.
    let acts_for = |device: &[u8; 32], target: &[u8; 32]| {
        let mut at = FeedKey(*device);
        let mut seen = BTreeSet::new();
        loop {
            if at.0 == *target {
                return true;
            }
            if !seen.insert(at) {
                return false;
            }
            match first.granted_by.get(&at) {
                Some(by) => at = *by,
                None => return false,
            }
        }
    };
    for (i, (a, sa, ta)) in hostile.iter().enumerate() {
        for (b, sb, tb) in &hostile[i + 1..] {
            // Aimed at each other: each at the other's signer, or at an owner the other holds
            // its authority from (a device let in by an owner that is losing its place,
            // removing the owner who takes it).
            if sa == sb || !acts_for(sb, ta) || !acts_for(sa, tb) {
                continue;
            }
            if ancestors(*a, by_id).contains(b) || ancestors(*b, by_id).contains(a) {
                continue;
            }
            let junior = if (rank_of(sa), *a) < (rank_of(sb), *b) {
                *b
            } else {
                *a
            };
            out.insert(junior);
        }
    }
    out
}

/// An invite admits one device, but its secret is in a code that others may have seen, and a
/// Join's signer chooses its parents: the first Join in order can't decide. When an invite has
/// several Joins, one made after seeing another (its ancestors hold it) loses; if several
/// remain, none made after another, the one an owner confirmed first counts: the first record in order, signed
/// by an owner still in the space, whose ancestors hold that Join and no other of them. If no
/// owner confirmed one alone, none counts. So a used code, kept or leaked, can't push out the
/// device that used it once an owner has seen that device (any change an owner makes after
/// the Join reached it confirms it, a removal of the device included); before that, a second
/// Join only shuts both out.
fn second_joins(
    order: &[RecordId],
    by_id: &BTreeMap<RecordId, &VerifiedRecord>,
    excluded: &BTreeSet<RecordId>,
) -> BTreeSet<RecordId> {
    let mut by_invite: BTreeMap<[u8; 32], Vec<RecordId>> = BTreeMap::new();
    for id in order {
        if let Change::Join { invite, .. } = &by_id[id].record.body.change {
            by_invite.entry(*invite).or_default().push(*id);
        }
    }
    by_invite.retain(|_, joins| joins.len() > 1);
    let mut out = BTreeSet::new();
    if by_invite.is_empty() {
        return out;
    }
    // Who may confirm is decided without any of these Joins and without anything the devices
    // they would admit signed: such a device can't confirm itself, or remove the owners who
    // would confirm another. Everything else counts, owners' removals made after one of the
    // Joins included, so a removed owner can't confirm a Join for a code it kept.
    let contested: BTreeSet<RecordId> = by_invite.values().flatten().copied().collect();
    let joined: BTreeSet<[u8; 32]> = contested
        .iter()
        .filter_map(|id| match &by_id[id].record.body.change {
            Change::Join { device, .. } => Some(device.feed.0),
            _ => None,
        })
        .collect();
    let skip: BTreeSet<RecordId> = order
        .iter()
        .filter(|id| {
            excluded.contains(id)
                || contested.contains(id)
                || joined.contains(&by_id[id].record.signer)
        })
        .copied()
        .collect();
    let state = apply(order, by_id, &skip).membership;
    let confirmer = |r: &Record| {
        state
            .members
            .get(&FeedKey(r.signer))
            .is_some_and(|d| !d.removed && d.role == MemberRole::Owner)
    };
    let confirmers: Vec<(RecordId, BTreeSet<RecordId>)> = order
        .iter()
        .filter(|id| !excluded.contains(id) && confirmer(&by_id[id].record))
        .map(|id| (*id, ancestors(*id, by_id)))
        .collect();
    for joins in by_invite.values() {
        // A join made after seeing another for the same invite knew it was used: it loses.
        let first: Vec<RecordId> = joins
            .iter()
            .filter(|j| {
                let seen = ancestors(**j, by_id);
                !joins.iter().any(|other| seen.contains(other))
            })
            .copied()
            .collect();
        let winner = if first.len() == 1 {
            first.first().copied()
        } else {
            confirmers.iter().find_map(|(_, seen)| {
                let mut held = first.iter().filter(|j| seen.contains(j));
                match (held.next(), held.next()) {
                    (Some(j), None) => Some(*j),
                    _ => None,
                }
            })
        };
        out.extend(joins.iter().filter(|j| Some(**j) != winner));
    }
    out
}

struct Applied {
    membership: Membership,
    /// (record, signer key) for every removal, and every change that took an owner's role
    /// away, that counted.
    removals: Vec<(RecordId, [u8; 32])>,
    /// Where in the order each device first became an owner: its seniority.
    owner_since: BTreeMap<FeedKey, usize>,
    /// Which owner made each device an owner (the first time).
    granted_by: BTreeMap<FeedKey, FeedKey>,
}

fn apply(
    order: &[RecordId],
    by_id: &BTreeMap<RecordId, &VerifiedRecord>,
    excluded: &BTreeSet<RecordId>,
) -> Applied {
    let mut applied = Applied {
        membership: Membership::default(),
        removals: Vec::new(),
        owner_since: BTreeMap::new(),
        granted_by: BTreeMap::new(),
    };
    for (pos, id) in order.iter().enumerate() {
        if excluded.contains(id) {
            continue;
        }
        let rec = &by_id[id].record;
        if let Err(why) = apply_one(&mut applied, *id, rec) {
            applied.membership.conflicts.push((*id, why.to_string()));
            continue;
        }
        let subject = match &rec.body.change {
            Change::Genesis { owner } => Some(owner.feed),
            Change::Join { device, .. } => Some(device.feed),
            Change::SetRole { device, .. } => Some(*device),
            _ => None,
        };
        if let Some(f) = subject {
            if applied.membership.role(&f) == Some(MemberRole::Owner)
                && !applied.owner_since.contains_key(&f)
            {
                applied.owner_since.insert(f, pos);
                // Whose authority made it an owner: the invite's maker for a Join, the signer
                // of a role change; none for the first owner.
                let by = match &rec.body.change {
                    Change::Join { invite, .. } => {
                        applied.membership.invites.get(invite).map(|i| i.by)
                    }
                    Change::SetRole { .. } => Some(rec.signer),
                    _ => None,
                };
                if let Some(by) = by {
                    applied.granted_by.insert(f, FeedKey(by));
                }
            }
        }
    }
    applied
}

/// Apply one record in order; `Err` says why it does not count.
fn apply_one(applied: &mut Applied, id: RecordId, rec: &Record) -> Result<(), &'static str> {
    let m = &mut applied.membership;
    let owner_signed = m
        .members
        .get(&FeedKey(rec.signer))
        .is_some_and(|d| !d.removed && d.role == MemberRole::Owner);
    match &rec.body.change {
        Change::Genesis { owner } => {
            if !m.epochs.is_empty() {
                return Err("a second genesis");
            }
            m.members.insert(
                owner.feed,
                Member {
                    device: *owner,
                    role: MemberRole::Owner,
                    removed: false,
                    frozen_at: None,
                    invite: None,
                    since: id,
                },
            );
            m.epochs.push(Epoch {
                key: id.key_id(),
                record: id,
                holders: [owner.feed.0].into(),
                wraps: BTreeSet::new(),
            });
        }
        _ if m.epochs.is_empty() => return Err("before the space's genesis"),
        Change::Join { invite, device, .. } => {
            let inv = m
                .invites
                .get_mut(invite)
                .ok_or("a join for an unknown invite")?;
            if inv.revoked || inv.used_by.is_some() {
                return Err("a join for a used or revoked invite");
            }
            if m.members.contains_key(&device.feed) {
                return Err("a join by a device already known");
            }
            inv.used_by = Some(device.feed);
            let role = inv.role;
            m.members.insert(
                device.feed,
                Member {
                    device: *device,
                    role,
                    removed: false,
                    frozen_at: None,
                    invite: Some(*invite),
                    since: id,
                },
            );
        }
        _ if !owner_signed => return Err("signed by a device that is not an owner"),
        Change::Invite {
            invite,
            invite_box,
            role,
            key,
            sealed,
            label,
        } => {
            if m.invites.contains_key(invite) {
                return Err("an invite key used twice");
            }
            m.invites.insert(
                *invite,
                Invite {
                    role: *role,
                    invite_box: *invite_box,
                    by: rec.signer,
                    key: *key,
                    sealed: SealedKey(sealed.clone()),
                    label: label.clone(),
                    used_by: None,
                    revoked: false,
                },
            );
        }
        Change::SetRole { device, role, at } => {
            let d = m
                .members
                .get_mut(device)
                .filter(|d| !d.removed)
                .ok_or("a role change for a device not in the space")?;
            if d.role.writes() && !role.writes() {
                d.frozen_at = Some(d.frozen_at.map_or(*at, |f| f.min(*at)));
            }
            // An owner that loses the role is treated like a removed one for what it signed
            // concurrently: it can't back-date an invite to let a device in as owner.
            if d.role == MemberRole::Owner && *role != MemberRole::Owner {
                applied.removals.push((id, device.0));
            }
            d.role = *role;
        }
        Change::Remove { member, at } => {
            if let Some(d) = m.members.get_mut(&FeedKey(*member)) {
                if d.removed {
                    return Err("a removal of a device already removed");
                }
                d.removed = true;
                // A reader's feed stays where it was frozen when it was made reader, or at 0
                // if it never wrote as a member.
                let at = if d.role.writes() {
                    *at
                } else {
                    d.frozen_at.unwrap_or(0)
                };
                d.frozen_at = Some(d.frozen_at.map_or(at, |f| f.min(at)));
                applied.removals.push((id, *member));
                // Invites the removed device made and nobody used go with it.
                for inv in m.invites.values_mut() {
                    if inv.by == *member && inv.used_by.is_none() {
                        inv.revoked = true;
                    }
                }
            } else if let Some(inv) = m.invites.get_mut(member) {
                inv.revoked = true;
                // Revoked by an owner that had not seen it used (an owner who had would have
                // removed the device): the device that joined with it goes too, so whichever
                // comes first in the order, revocation and Join end the same way.
                if let Some(joined) = inv.used_by {
                    if let Some(d) = m.members.get_mut(&joined).filter(|d| !d.removed) {
                        d.removed = true;
                        d.frozen_at = Some(d.frozen_at.map_or(*at, |f| f.min(*at)));
                        applied.removals.push((id, joined.0));
                    }
                }
            } else {
                return Err("a removal of a device or invite not in the space");
            }
        }
        Change::Epoch { boxes, earlier } => {
            m.epochs.push(Epoch {
                key: id.key_id(),
                record: id,
                holders: boxes.iter().map(|(h, _)| *h).collect(),
                wraps: earlier.iter().map(|(k, _)| *k).collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;

/// The records that show `device` was removed: every Remove naming it and all those records
/// had seen (their ancestors), in the order given. A node that stops serving a removed
/// device sends it these first, so that it learns where it stands, and nothing newer.
pub fn removal_of(records: &[Record], device: &FeedKey) -> Vec<Record> {
    let ids: Vec<RecordId> = records.iter().map(Record::id).collect();
    let by_id: BTreeMap<RecordId, &Record> = ids.iter().copied().zip(records).collect();
    let removals = records
        .iter()
        .zip(&ids)
        .filter(
            |(r, _)| matches!(r.body.change, Change::Remove { member, .. } if member == device.0),
        )
        .map(|(_, id)| *id)
        .collect();
    let keep = reach(removals, |id| {
        by_id.get(id).map(|r| r.body.parents.as_slice())
    });
    records
        .iter()
        .zip(&ids)
        .filter(|(_, id)| keep.contains(id))
        .map(|(r, _)| r.clone())
        .collect()
}
