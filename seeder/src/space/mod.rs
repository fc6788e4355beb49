/*!
Space keys, codes, the content cipher, membership and capabilities — pure: no I/O, no clock;
randomness comes in as an argument.

One 32-byte [`SpaceSecret`] is the whole of a space's authority. Everything else is derived
from it with BLAKE3 `derive_key` under versioned context strings:
- the space **signing key**, whose public half is the space's [`Address`];
- the **content key**, for [`ContentCipher`] (members only);
- from the *address* (so seeders, which hold only the address, can compute them too): the
  [`DiscoveryKey`] said on the wire and in mDNS, and the key of [`Capability`] proofs.

Members share the secret as an [`InviteCode`]; seeders get only the address, as a
[`SeedCode`]. Both are text a person can read aloud: a prefix, Crockford base32 in groups of
five, and a checksum so a typo is reported as one instead of naming another space.

This module knows nothing of feeds' contents, files, storage or the network.
*/

mod code;
pub mod members;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::feed::FeedKey;

pub use code::{CodeError, InviteCode, SeedCode, Suspect};
pub use members::{KeyId, MemberError, MemberRole, Membership, Record, VerifiedRecord};

/// Context strings of the key derivations. Versioned: changing one makes every space new.
pub const CTX_SIGNING: &str = "seeder 2026-11 space signing key v1";
pub const CTX_CONTENT: &str = "seeder 2026-11 space content key v1";
pub const CTX_DISCOVERY: &str = "seeder 2026-11 space discovery key v1";
pub const CTX_CAPABILITY: &str = "seeder 2026-11 space capability key v1";

/// Domain of membership certificate signatures.
pub const CERT_DOMAIN: &[u8] = b"seeder membership v1\0";
/// Domain of the content cipher's associated data.
pub const ENTRY_AAD_DOMAIN: &[u8] = b"seeder entry v1\0";
/// Domain of the associated data of entries of governed spaces (which name their key).
pub const ENTRY_AAD_DOMAIN_V2: &[u8] = b"seeder entry v2\0";
/// Domain of capability MACs.
pub const CAPABILITY_DOMAIN: &[u8] = b"seeder capability v1\0";
/// Domain of device proofs: a device's signature binding it to one connection.
pub const DEVICE_PROOF_DOMAIN: &[u8] = b"seeder device proof v1\0";

/// Bytes a sealed entry adds to its plaintext: the 24-byte nonce and the 16-byte tag.
pub const SEAL_OVERHEAD: usize = 24 + 16;

/// Errors of this layer. Each one is a refusal; nothing is half-done.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpaceError {
    /// A code could not be read.
    #[error(transparent)]
    Code(#[from] CodeError),
    /// The bytes are not a valid ed25519 public key, so not a space address.
    #[error("{0} is not a valid space address")]
    BadAddress(String),
    /// A sealed entry failed to decrypt: wrong key, wrong position, or altered.
    #[error("entry {seq} of feed {feed} does not decrypt: altered, moved, or of another space")]
    Decrypt { feed: FeedKey, seq: u64 },
    /// Too short to be a sealed entry.
    #[error("sealed entry of {len} bytes is shorter than the {SEAL_OVERHEAD}-byte minimum")]
    TooShort { len: usize },
    /// This device holds no key of the space's newest epoch (it was removed, or has not yet
    /// learnt the key): it can't write.
    #[error("this device holds no current key of the space: it was removed, or must sync first")]
    NoCurrentKey,
    /// An entry is sealed with a key this device does not hold.
    #[error("entry {seq} of feed {feed} is sealed with a key this device does not hold")]
    NoKey { feed: FeedKey, seq: u64 },
    /// A membership certificate names another space.
    #[error("certificate for feed {feed} is for space {got}, not {expected}")]
    OtherSpace {
        feed: FeedKey,
        expected: Address,
        got: Address,
    },
    /// The membership log of a governed space does not admit the feed.
    #[error("feed {feed} is not a writing member of the space")]
    NotAMember { feed: FeedKey },
    /// A membership certificate's signature is bad.
    #[error("certificate for feed {feed} has a bad signature")]
    BadCertificate { feed: FeedKey },
    /// A device proof's signature is bad (another connection's, space's or side's).
    #[error("the proof of device {device} does not verify on this connection")]
    BadProof { device: FeedKey },
}

/// The secret of a space: whoever holds it can read and write the space.
#[derive(Clone, PartialEq, Eq)]
pub struct SpaceSecret([u8; 32]);

impl Drop for SpaceSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SpaceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpaceSecret(…)")
    }
}

impl SpaceSecret {
    /// A new random secret.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        SpaceSecret(b)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SpaceSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The space signing key (signs membership certificates).
    pub fn signing_key(&self) -> SigningKey {
        let seed = Zeroizing::new(blake3::derive_key(CTX_SIGNING, &self.0));
        SigningKey::from_bytes(&seed)
    }

    /// The space's public address.
    pub fn address(&self) -> Address {
        Address(self.signing_key().verifying_key().to_bytes())
    }

    /// The key entries are encrypted with.
    pub fn content_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(CTX_CONTENT, &self.0))
    }
}

/// A space's public address: the public half of its signing key. Knowing it lets a seeder
/// replicate the space; it does not let anyone read it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub [u8; 32]);

impl Address {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex characters, for logs and people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The address as an ed25519 key; fails if it is not a curve point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, SpaceError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| SpaceError::BadAddress(self.to_hex()))
    }

    /// What peers say on the wire instead of the address.
    pub fn discovery_key(&self) -> DiscoveryKey {
        DiscoveryKey(blake3::derive_key(CTX_DISCOVERY, &self.0))
    }

    fn capability_key(&self) -> [u8; 32] {
        blake3::derive_key(CTX_CAPABILITY, &self.0)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address({})", self.short())
    }
}

/// Derived from an address; reveals nothing about it. Used to ask a peer for a space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DiscoveryKey(pub [u8; 32]);

impl DiscoveryKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiscoveryKey({})", hex::encode(&self.0[..4]))
    }
}

/// Encrypts and decrypts entries of one space: XChaCha20-Poly1305 with the entry's place
/// (address, feed, sequence number) as associated data so a ciphertext can't be moved to
/// another position, feed or space.
///
/// Two layouts. A space from before roles has one content key derived from its secret and
/// entries `nonce ‖ ciphertext ‖ tag` ([`ENTRY_AAD_DOMAIN`]). A governed space has a key per
/// epoch and entries `key id ‖ nonce ‖ ciphertext ‖ tag`, the key id also in the associated
/// data ([`ENTRY_AAD_DOMAIN_V2`]): new entries use the newest key this device holds.
pub struct ContentCipher {
    address: Address,
    keys: Keys,
}

enum Keys {
    Space(chacha20poly1305::XChaCha20Poly1305),
    Epochs {
        keys: std::collections::BTreeMap<KeyId, chacha20poly1305::XChaCha20Poly1305>,
        current: Option<KeyId>,
    },
}

impl ContentCipher {
    /// The cipher of a space from before roles: one key from its secret.
    pub fn new(secret: &SpaceSecret) -> Self {
        use chacha20poly1305::KeyInit;
        let key = secret.content_key();
        ContentCipher {
            address: secret.address(),
            keys: Keys::Space(chacha20poly1305::XChaCha20Poly1305::new((&*key).into())),
        }
    }

    /// The cipher of a governed space: every epoch key this device holds, and the one new
    /// entries are sealed with (none: this device can't write, it holds no current key).
    pub fn epochs(
        address: Address,
        keys: &std::collections::BTreeMap<KeyId, members::ContentKey>,
        current: Option<KeyId>,
    ) -> Self {
        use chacha20poly1305::KeyInit;
        ContentCipher {
            address,
            keys: Keys::Epochs {
                keys: keys
                    .iter()
                    .map(|(id, k)| (*id, chacha20poly1305::XChaCha20Poly1305::new((&**k).into())))
                    .collect(),
                current: current.filter(|c| keys.contains_key(c)),
            },
        }
    }

    fn aad(&self, feed: &FeedKey, seq: u64, key: Option<&KeyId>) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + 32 + 32 + 8 + 8);
        aad.extend_from_slice(if key.is_some() {
            ENTRY_AAD_DOMAIN_V2
        } else {
            ENTRY_AAD_DOMAIN
        });
        aad.extend_from_slice(&self.address.0);
        aad.extend_from_slice(&feed.0);
        aad.extend_from_slice(&seq.to_le_bytes());
        if let Some(k) = key {
            aad.extend_from_slice(&k.0);
        }
        aad
    }

    /// Bytes a sealed entry adds to its plaintext.
    pub fn overhead(&self) -> usize {
        match self.keys {
            Keys::Space(_) => SEAL_OVERHEAD,
            Keys::Epochs { .. } => 8 + SEAL_OVERHEAD,
        }
    }

    /// `[key id ‖] nonce ‖ ciphertext ‖ tag`. The nonce must be random (24 bytes make
    /// collisions negligible without a counter).
    pub fn seal(
        &self,
        feed: &FeedKey,
        seq: u64,
        plaintext: &[u8],
        nonce: &[u8; 24],
    ) -> Result<Vec<u8>, SpaceError> {
        use chacha20poly1305::aead::AeadInPlace;
        let (aead, key) = match &self.keys {
            Keys::Space(aead) => (aead, None),
            Keys::Epochs { keys, current } => {
                let id = current.ok_or(SpaceError::NoCurrentKey)?;
                (keys.get(&id).ok_or(SpaceError::NoCurrentKey)?, Some(id))
            }
        };
        let mut out = Vec::with_capacity(plaintext.len() + self.overhead());
        if let Some(k) = &key {
            out.extend_from_slice(&k.0);
        }
        out.extend_from_slice(nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = aead
            .encrypt_in_place_detached(
                nonce.into(),
                &self.aad(feed, seq, key.as_ref()),
                &mut out[start..],
            )
            .expect("XChaCha20-Poly1305 encrypts any entry up to 256 GiB");
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// The plaintext of a sealed entry at `seq` of `feed`.
    pub fn open(&self, feed: &FeedKey, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, SpaceError> {
        use chacha20poly1305::aead::AeadInPlace;
        if sealed.len() < self.overhead() {
            return Err(SpaceError::TooShort { len: sealed.len() });
        }
        let (aead, key, rest) = match &self.keys {
            Keys::Space(aead) => (aead, None, sealed),
            Keys::Epochs { keys, .. } => {
                let (id, rest) = sealed.split_at(8);
                let id = KeyId(id.try_into().expect("split at 8"));
                let aead = keys
                    .get(&id)
                    .ok_or(SpaceError::NoKey { feed: *feed, seq })?;
                (aead, Some(id), rest)
            }
        };
        let (nonce, rest) = rest.split_at(24);
        let (body, tag) = rest.split_at(rest.len() - 16);
        let mut plain = body.to_vec();
        aead.decrypt_in_place_detached(
            nonce.into(),
            &self.aad(feed, seq, key.as_ref()),
            &mut plain,
            tag.into(),
        )
        .map_err(|_| SpaceError::Decrypt { feed: *feed, seq })?;
        Ok(plain)
    }
}

/// The space's signature admitting a device's feed: a seeder accepts a feed into a space only
/// with one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipCert {
    pub address: Address,
    pub feed: FeedKey,
    #[serde(with = "crate::feed::sig_bytes")]
    pub signature: [u8; 64],
}

/// A certificate whose signature checked out for the expected space. Only
/// [`MembershipCert::verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedMember(MembershipCert);

impl VerifiedMember {
    pub fn feed(&self) -> FeedKey {
        self.0.feed
    }
    pub fn address(&self) -> Address {
        self.0.address
    }
    pub fn cert(&self) -> &MembershipCert {
        &self.0
    }
}

impl MembershipCert {
    /// The exact bytes signed: `CERT_DOMAIN ‖ address ‖ feed key`.
    pub fn signing_bytes(address: &Address, feed: &FeedKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(CERT_DOMAIN.len() + 64);
        out.extend_from_slice(CERT_DOMAIN);
        out.extend_from_slice(&address.0);
        out.extend_from_slice(&feed.0);
        out
    }

    /// Admit `feed` to the space of `secret`.
    pub fn issue(secret: &SpaceSecret, feed: FeedKey) -> Self {
        let key = secret.signing_key();
        let address = Address(key.verifying_key().to_bytes());
        let signature = key.sign(&Self::signing_bytes(&address, &feed)).to_bytes();
        MembershipCert {
            address,
            feed,
            signature,
        }
    }

    /// A governed space's certificate: the device's own signature over the same bytes. It
    /// proves only that the offer comes from the feed's key holder; whether the feed belongs
    /// to the space is the membership log's to say ([`MembershipCert::verify_in`]).
    pub fn own(device: &SigningKey, address: Address) -> Self {
        let feed = FeedKey::from(device);
        let signature = device
            .sign(&Self::signing_bytes(&address, &feed))
            .to_bytes();
        MembershipCert {
            address,
            feed,
            signature,
        }
    }

    /// Whether this is a governed space's kind of certificate: signed by its feed's own key.
    /// Says nothing of membership; a peer without the space's records yet can tell with it a
    /// feed of a governed space from a forged certificate.
    pub fn is_own(&self) -> bool {
        VerifyingKey::from_bytes(&self.feed.0).is_ok_and(|key| {
            key.verify_strict(
                &Self::signing_bytes(&self.address, &self.feed),
                &ed25519_dalek::Signature::from_bytes(&self.signature),
            )
            .is_ok()
        })
    }

    /// Check that this admits its feed to the space at `expected`, whose membership (for a
    /// governed space) is `membership`: there the certificate is the device's own and the
    /// log must admit the feed; in a space from before roles the space key signed it.
    pub fn verify_in(
        self,
        expected: &Address,
        membership: Option<&Membership>,
    ) -> Result<VerifiedMember, SpaceError> {
        let Some(m) = membership.filter(|m| m.is_governed()) else {
            return self.verify(expected);
        };
        if &self.address != expected {
            return Err(SpaceError::OtherSpace {
                feed: self.feed,
                expected: *expected,
                got: self.address,
            });
        }
        if m.admits(&self.feed) == members::Admission::No {
            return Err(SpaceError::NotAMember { feed: self.feed });
        }
        let key = VerifyingKey::from_bytes(&self.feed.0)
            .map_err(|_| SpaceError::BadCertificate { feed: self.feed })?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&Self::signing_bytes(&self.address, &self.feed), &sig)
            .map_err(|_| SpaceError::BadCertificate { feed: self.feed })?;
        Ok(VerifiedMember(self))
    }

    /// Check that this admits its feed to the space at `expected`.
    pub fn verify(self, expected: &Address) -> Result<VerifiedMember, SpaceError> {
        if &self.address != expected {
            return Err(SpaceError::OtherSpace {
                feed: self.feed,
                expected: *expected,
                got: self.address,
            });
        }
        let key = self.address.verifying_key()?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&Self::signing_bytes(&self.address, &self.feed), &sig)
            .map_err(|_| SpaceError::BadCertificate { feed: self.feed })?;
        Ok(VerifiedMember(self))
    }
}

/// Which end of a connection made a capability, so one side's proof can't be reflected back
/// as the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Listener,
}

/// Proof that a peer knows a space's address, bound to one connection: a keyed BLAKE3 MAC
/// (key derived from the address) over the connection's TLS exporter secret. Useless on any
/// other connection.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability(pub [u8; 32]);

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capability(…)")
    }
}

impl Capability {
    fn mac(address: &Address, conn_secret: &[u8], role: Role) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&address.capability_key());
        h.update(CAPABILITY_DOMAIN);
        h.update(&[match role {
            Role::Dialer => 0,
            Role::Listener => 1,
        }]);
        h.update(conn_secret);
        h.finalize()
    }

    /// The capability for `address` on the connection whose exporter secret is `conn_secret`,
    /// made by the side playing `role`.
    pub fn new(address: &Address, conn_secret: &[u8], role: Role) -> Self {
        Capability(*Self::mac(address, conn_secret, role).as_bytes())
    }

    /// Constant-time check (blake3's `Hash` equality is constant-time).
    pub fn verify(&self, address: &Address, conn_secret: &[u8], role: Role) -> bool {
        Self::mac(address, conn_secret, role) == blake3::Hash::from(self.0)
    }
}

/// Proof that the peer on one connection is a device of a governed space: the device's
/// feed key signs the space's discovery key, the side it plays and the connection's TLS
/// exporter secret. Useless on any other connection or for any other space, and it can't be
/// reflected back as the other side's. Whether the device is still in the space is the
/// membership log's to say; a seeder holds no device key and never sends one.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProof {
    pub device: FeedKey,
    #[serde(with = "crate::feed::sig_bytes")]
    pub signature: [u8; 64],
}

impl std::fmt::Debug for DeviceProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceProof({})", self.device.short())
    }
}

impl DeviceProof {
    /// The exact bytes signed: `DEVICE_PROOF_DOMAIN ‖ discovery key ‖ role (0 dialer, 1
    /// listener) ‖ exporter secret`.
    pub fn signing_bytes(address: &Address, conn_secret: &[u8], role: Role) -> Vec<u8> {
        let mut b = Vec::with_capacity(DEVICE_PROOF_DOMAIN.len() + 33 + conn_secret.len());
        b.extend_from_slice(DEVICE_PROOF_DOMAIN);
        b.extend_from_slice(&address.discovery_key().0);
        b.push(match role {
            Role::Dialer => 0,
            Role::Listener => 1,
        });
        b.extend_from_slice(conn_secret);
        b
    }

    /// The proof that `key`'s device plays `role` on the connection with `conn_secret`.
    pub fn sign(key: &SigningKey, address: &Address, conn_secret: &[u8], role: Role) -> Self {
        let signature = key.sign(&Self::signing_bytes(address, conn_secret, role));
        DeviceProof {
            device: FeedKey(key.verifying_key().to_bytes()),
            signature: signature.to_bytes(),
        }
    }

    /// The device, if the signature is its own over this connection, space and role.
    pub fn verify(
        &self,
        address: &Address,
        conn_secret: &[u8],
        role: Role,
    ) -> Result<FeedKey, SpaceError> {
        let key = VerifyingKey::from_bytes(&self.device.0).map_err(|_| SpaceError::BadProof {
            device: self.device,
        })?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&Self::signing_bytes(address, conn_secret, role), &signature)
            .map_err(|_| SpaceError::BadProof {
                device: self.device,
            })?;
        Ok(self.device)
    }
}

#[cfg(test)]
mod tests;
