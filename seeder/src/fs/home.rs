/*!
A member device's home: its spaces, its own feed in each, and every feed it holds of the
others, on disk. This is the I/O side of the file layer; the rules of the merged view live in
the pure modules beside it.

Layout of a home folder (mode 0700: it holds space secrets):
- `store/`: a [`Store`] with every feed of every space this device holds. Extra sled trees:
  `spaces` (local name → secret, device key, certificate), `members` (address ‖ feed key →
  membership certificate), `opindex` (address ‖ feed ‖ seq for every entry that is a file
  operation rather than a content chunk) and `indexed` (address ‖ feed → how many entries of
  that feed have been classified). The index holds positions only, never plaintext.

Entries are encrypted with the space's content cipher before they reach the store, so nothing
in the data files is readable without the space secret. Content streams through in chunks:
memory use does not grow with file size.
*/

use std::cell::{Ref, RefCell};
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::feed::{write_batch, FeedKey, Frontier};
use crate::space::{
    members, Address, ContentCipher, DeviceProof, InviteCode, MembershipCert, SeedCode, SpaceSecret,
};
use crate::store::{FeedReader, Store, StoreConfig, StoreError, Table, TableBatch};

use super::{
    ContentRef, FileMeta as RecordMeta, FileState, FsError, Mtime, Op, Path, Record, View,
    CHUNK_SIZE,
};

/// Chunk entries per store append while putting a file: 64 × 64 KiB = 4 MiB in memory at
/// most, and one `fdatasync` per 4 MiB.
pub const PUT_BATCH_ENTRIES: usize = 64;

/// The member's sled cache: a laptop has memory to spare, but a home is opened by every
/// command, so keep it modest (8 MiB).
const HOME_CACHE_BYTES: u64 = 8 << 20;

/// Longest local space name, in bytes.
pub const MAX_SPACE_NAME: usize = 64;

const TREE_SPACES: &str = "spaces";
const TREE_MEMBERS: &str = "members";
const TREE_OPINDEX: &str = "opindex";
const TREE_INDEXED: &str = "indexed";
const TREE_ACKS: &str = "acks";
const TREE_OWN_BEHIND: &str = "own-behind";
const TREE_REACHED: &str = "reached";
const TREE_RECORDS: &str = "records";

/// Errors of a home.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Space(#[from] crate::space::SpaceError),
    #[error(transparent)]
    Feed(#[from] crate::feed::FeedError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another seeder command is using the home {0}")]
    Busy(PathBuf),
    #[error("no space named {0:?} on this device")]
    UnknownSpace(String),
    #[error("a space named {0:?} already exists on this device")]
    NameTaken(String),
    #[error("this device already holds that space, as {0:?}")]
    AlreadyJoined(String),
    #[error("space name {0:?} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error(transparent)]
    Members(crate::space::MemberError),
    #[error("{0:?} has roles: invite one device at a time with `seeder space invite {0} --role writer|reader|owner --as NAME`")]
    Governed(String),
    #[error("{0:?} is a space without roles: every member holds its secret, so it has no owners, invites per device or removal; make a new space to use them")]
    NotGoverned(String),
    #[error("this device holds no current key of the space: it was removed, or has not joined yet (run `seeder sync` with the invite's space)")]
    NoCurrentKey,
    #[error("only an owner of {space:?} can do that; this device is {}", .role.map_or("not a member (yet)".to_string(), |r| format!("a {r}")))]
    NotOwner {
        space: String,
        role: Option<crate::space::MemberRole>,
    },
    #[error("{who} was a reader of {space:?}: its feed stays frozen where it stopped writing, so it can't write again; invite the person's device anew instead")]
    StaysFrozen { space: String, who: String },
    #[error("this device can't remove itself from {0:?} or change its own role: another owner does that")]
    RemoveSelf(String),
    #[error("nobody in {space:?} is called {who:?}: `seeder space members {space}` lists the names and device keys")]
    NoSuchMember { space: String, who: String },
    #[error("this device was removed from {0:?} by an owner: it can no longer write there, and can't read what is written after its removal")]
    Removed(String),
    #[error("this device is a reader of {0:?}: it can read, not write")]
    ReadOnly(String),
    #[error("this device has not joined {0:?} yet: the invite is taken up at the next `seeder sync {0}` with a seeder or member that has it")]
    NotJoined(String),
    #[error("no file at {0}")]
    NotFound(String),
    #[error("{0} is a folder")]
    IsFolder(String),
    #[error("stored record {what} is corrupt")]
    Corrupt { what: String },
    #[error("content of {path} does not match its recorded hash")]
    ContentMismatch { path: String },
    #[error(
        "this device's own feed is longer on a seeder ({theirs} entries) than here ({ours}): \
         this home was restored from an older copy. Writing now would fork the feed; run \
         `seeder sync {space}` first to fetch the missing entries back"
    )]
    OwnFeedBehind {
        space: String,
        ours: u64,
        theirs: u64,
    },
}

type Result<T, E = HomeError> = std::result::Result<T, E>;

/// What a home keeps of a space from before roles: its secret and this device's key.
#[derive(Serialize, Deserialize)]
struct SpaceRecord {
    version: u8,
    secret: [u8; 32],
    device_key: [u8; 32],
}

/// What a home keeps of a governed space: its address, this device's key, the content key of
/// the first epoch (only on the device that created the space) and the invite secret this
/// device joins with (until it has joined; kept after, it opens nothing newer).
#[derive(Serialize, Deserialize)]
pub(super) struct GovernedRecord {
    pub version: u8,
    pub address: Address,
    pub device_key: [u8; 32],
    pub genesis_key: Option<[u8; 32]>,
    pub invite: Option<[u8; 32]>,
}

const GOVERNED_VERSION: u8 = 2;

/// The keys a home holds of one space.
pub(super) enum SpaceKeys {
    /// A space from before roles.
    Secret(SpaceSecret),
    Governed {
        address: Address,
        genesis_key: Option<Zeroizing<[u8; 32]>>,
        invite: Option<Zeroizing<[u8; 32]>>,
    },
}

impl SpaceKeys {
    pub fn address(&self) -> Address {
        match self {
            SpaceKeys::Secret(s) => s.address(),
            SpaceKeys::Governed { address, .. } => *address,
        }
    }
}

/// A space as listed.
#[derive(Clone, Debug)]
pub struct SpaceInfo {
    pub name: String,
    pub address: Address,
    pub own_feed: FeedKey,
    pub feeds: usize,
}

/// A member device's home folder.
pub struct Home {
    dir: PathBuf,
    store: Store,
    spaces: Table,
    members: Table,
    opindex: Table,
    indexed: Table,
    acks: Table,
    /// Per space: how long a peer says this device's own feed is, while that is longer than
    /// here (a home restored from a backup). Writes wait until it is fetched back.
    own_behind: Table,
    /// Per peer: how this device last reached it, and when.
    reached: Table,
    /// Membership records of governed spaces: address ‖ record id → record.
    pub(super) records: Table,
}

/// How this device last reached a peer (`LAN`, `direct`, `hole-punched`, `relayed via …`),
/// and when, in seconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reached {
    pub how: String,
    pub at: u64,
}

/// A peer's storage acknowledgement of one feed, as remembered by a member device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub peer: [u8; 32],
    pub feed: FeedKey,
    /// Entries the peer durably stores.
    pub length: u64,
    /// When it said so, in seconds since the epoch.
    pub at: u64,
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SPACE_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(HomeError::BadName(name.to_string()))
    }
}

fn member_key(address: &Address, feed: &FeedKey) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(address.as_bytes());
    k[32..].copy_from_slice(&feed.0);
    k
}

fn op_key(address: &Address, feed: &FeedKey, seq: u64) -> [u8; 72] {
    let mut k = [0u8; 72];
    k[..64].copy_from_slice(&member_key(address, feed));
    k[64..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Home {
    /// Open (or create) the home in `dir`.
    pub fn open(dir: impl AsRef<FsPath>) -> Result<Home> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| HomeError::Io {
            what: "cannot create home",
            path: dir.clone(),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut config = StoreConfig::default();
        config.cache_bytes(HOME_CACHE_BYTES);
        let store = match Store::open(dir.join("store"), &config) {
            Ok(s) => s,
            Err(StoreError::Busy(_)) => return Err(HomeError::Busy(dir)),
            Err(e) => return Err(e.into()),
        };
        Ok(Home {
            dir,
            spaces: store.table(TREE_SPACES)?,
            members: store.table(TREE_MEMBERS)?,
            opindex: store.table(TREE_OPINDEX)?,
            indexed: store.table(TREE_INDEXED)?,
            acks: store.table(TREE_ACKS)?,
            own_behind: store.table(TREE_OWN_BEHIND)?,
            reached: store.table(TREE_REACHED)?,
            records: store.table(TREE_RECORDS)?,
            store,
        })
    }

    /// The home folder.
    pub fn dir(&self) -> &FsPath {
        &self.dir
    }

    /// The feed store, for sync and bundles.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn record(&self, name: &str) -> Result<(SpaceKeys, SigningKey)> {
        let bytes = self
            .spaces
            .get(name.as_bytes())?
            .ok_or_else(|| HomeError::UnknownSpace(name.to_string()))?;
        let corrupt = || HomeError::Corrupt {
            what: format!("space {name:?}"),
        };
        if bytes.first() == Some(&GOVERNED_VERSION) {
            let rec: GovernedRecord = postcard::from_bytes(&bytes).map_err(|_| corrupt())?;
            let device = SigningKey::from_bytes(&rec.device_key);
            return Ok((
                SpaceKeys::Governed {
                    address: rec.address,
                    genesis_key: rec.genesis_key.map(Zeroizing::new),
                    invite: rec.invite.map(Zeroizing::new),
                },
                device,
            ));
        }
        let rec: SpaceRecord = postcard::from_bytes(&bytes).map_err(|_| corrupt())?;
        let secret = SpaceSecret::from_bytes(rec.secret);
        let device = SigningKey::from_bytes(&rec.device_key);
        Ok((SpaceKeys::Secret(secret), device))
    }

    fn check_new(&self, name: &str, address: &Address) -> Result<()> {
        validate_name(name)?;
        if self.spaces.contains_key(name.as_bytes())? {
            return Err(HomeError::NameTaken(name.to_string()));
        }
        for info in self.spaces()? {
            if &info.address == address {
                return Err(HomeError::AlreadyJoined(info.name));
            }
        }
        Ok(())
    }

    /// Join a space from before roles with its secret.
    fn add_space(&self, name: &str, secret: SpaceSecret, rng: &mut Rng) -> Result<Address> {
        let address = secret.address();
        self.check_new(name, &address)?;
        let device = SigningKey::generate(rng);
        let feed = FeedKey::from(&device);
        let cert = MembershipCert::issue(&secret, feed);
        let rec = SpaceRecord {
            version: 1,
            secret: *secret.as_bytes(),
            device_key: device.to_bytes(),
        };
        let rec = Zeroizing::new(postcard::to_allocvec(&rec).expect("space records encode"));
        self.members.insert(
            member_key(&address, &feed),
            postcard::to_allocvec(&cert).expect("certificates encode"),
        )?;
        self.store.create_feed(feed)?;
        self.spaces.insert(name.as_bytes(), rec.as_slice())?;
        self.store.commit()?;
        // The device's name, for `ls --long` and `log` on every member's device.
        self.space(name)?.set_device_name(&device_name())?;
        Ok(address)
    }

    /// Keep a governed space under `name`: this device's key and own feed, and `records`.
    pub(super) fn add_governed(
        &self,
        name: &str,
        rec: &GovernedRecord,
        records: Vec<crate::space::VerifiedRecord>,
    ) -> Result<()> {
        self.check_new(name, &rec.address)?;
        let device = SigningKey::from_bytes(&rec.device_key);
        let cert = MembershipCert::own(&device, rec.address);
        self.members.insert(
            member_key(&rec.address, &cert.feed),
            postcard::to_allocvec(&cert).expect("certificates encode"),
        )?;
        self.store.create_feed(cert.feed)?;
        self.put_records(&rec.address, &records)?;
        let bytes = Zeroizing::new(postcard::to_allocvec(rec).expect("space records encode"));
        self.spaces.insert(name.as_bytes(), bytes.as_slice())?;
        self.store.commit()?;
        Ok(())
    }

    /// Create a new governed space named `name`, with this device its first owner; returns
    /// its address. The space key signs the genesis of its membership log and is then
    /// forgotten.
    pub fn create_governed(&self, name: &str, rng: &mut Rng) -> Result<Address> {
        let secret = SpaceSecret::generate(rng);
        let address = secret.address();
        let device = SigningKey::generate(rng);
        let genesis = members::genesis(&secret, members::device_of(&device))
            .verify(&address)
            .map_err(HomeError::Members)?;
        let rec = GovernedRecord {
            version: GOVERNED_VERSION,
            address,
            device_key: device.to_bytes(),
            genesis_key: Some(*secret.content_key()),
            invite: None,
        };
        drop(secret);
        self.add_governed(name, &rec, vec![genesis])?;
        self.space(name)?.set_device_name(&device_name())?;
        Ok(address)
    }

    /// Create a space without roles: one secret that every member holds, and that is its
    /// invite code.
    pub fn create_space(&self, name: &str, rng: &mut Rng) -> Result<Address> {
        let secret = SpaceSecret::generate(rng);
        self.add_space(name, secret, rng)
    }

    /// The invite code of a space without roles (its secret: for members' own devices only).
    pub fn invite(&self, name: &str) -> Result<InviteCode> {
        match self.record(name)?.0 {
            SpaceKeys::Secret(secret) => Ok(InviteCode::new(&secret)),
            SpaceKeys::Governed { .. } => Err(HomeError::Governed(name.to_string())),
        }
    }

    /// Join the space of an invite code under the local name `name`. A device invite is
    /// taken up once this device has the invite's record from a peer (`seeder sync`).
    pub fn join(&self, code: &InviteCode, name: &str, rng: &mut Rng) -> Result<Address> {
        match code {
            InviteCode::Space(secret) => self.add_space(name, secret.clone(), rng),
            InviteCode::Device { address, secret } => {
                let device = SigningKey::generate(rng);
                let rec = GovernedRecord {
                    version: GOVERNED_VERSION,
                    address: *address,
                    device_key: device.to_bytes(),
                    genesis_key: None,
                    invite: Some(**secret),
                };
                self.add_governed(name, &rec, Vec::new())?;
                Ok(*address)
            }
        }
    }

    /// This device's signing key in the space `name` (it is in the home folder anyway), for
    /// tests that act as a device that ignores the rules.
    #[doc(hidden)]
    pub fn device_key(&self, name: &str) -> Result<SigningKey> {
        Ok(self.record(name)?.1)
    }

    /// This device's proof that it is a device of the governed space at `address`, playing
    /// `role` on the connection with `conn_secret` (see [`DeviceProof`]), and the same proof
    /// made with the key of the invite it joined with, if it holds one; `None` for a space
    /// from before roles or one not held here.
    pub fn prove_device(
        &self,
        address: &Address,
        conn_secret: &[u8],
        role: crate::space::Role,
    ) -> Result<Option<(DeviceProof, Option<DeviceProof>)>> {
        let Some(name) = self.name_of(address)? else {
            return Ok(None);
        };
        let (keys, device) = self.record(&name)?;
        Ok(match keys {
            SpaceKeys::Governed { invite, .. } => Some((
                DeviceProof::sign(&device, address, conn_secret, role),
                invite.map(|secret| {
                    let keys = members::InviteKeys::from_secret(&secret);
                    DeviceProof::sign(&keys.signing, address, conn_secret, role)
                }),
            )),
            SpaceKeys::Secret(_) => None,
        })
    }

    /// The seed code of a space (its address only: what a seeder is given).
    pub fn seed_code(&self, name: &str) -> Result<SeedCode> {
        let (keys, _) = self.record(name)?;
        Ok(SeedCode::new(keys.address()))
    }

    /// Every space of this home, by name.
    pub fn spaces(&self) -> Result<Vec<SpaceInfo>> {
        let mut out = Vec::new();
        for item in self.spaces.iter() {
            let (k, _) = item?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let (keys, device) = self.record(&name)?;
            let address = keys.address();
            let feeds = self.members.scan_prefix(address.as_bytes()).count();
            out.push(SpaceInfo {
                name,
                address,
                own_feed: FeedKey::from(&device),
                feeds,
            });
        }
        Ok(out)
    }

    /// The name under which this home holds the space at `address`.
    pub fn name_of(&self, address: &Address) -> Result<Option<String>> {
        Ok(self
            .spaces()?
            .into_iter()
            .find(|s| &s.address == address)
            .map(|s| s.name))
    }

    /// Open a space for file operations.
    pub fn space(&self, name: &str) -> Result<SpaceHandle<'_>> {
        let (keys, device) = self.record(name)?;
        let (address, cipher, access) = match keys {
            SpaceKeys::Secret(secret) => {
                (secret.address(), ContentCipher::new(&secret), Access::Open)
            }
            SpaceKeys::Governed { .. } => {
                let super::roster::Held {
                    address, m, keys, ..
                } = self.keys_of(name)?;
                // The current key; a device without it (removed) is refused writing anyway,
                // and seals with the newest key it holds only when told to ignore its role.
                let current = m
                    .epochs
                    .iter()
                    .rev()
                    .map(|e| e.key)
                    .find(|k| keys.contains_key(k));
                let cipher = ContentCipher::epochs(address, &keys, current);
                (address, cipher, Access::Governed(Box::new(m)))
            }
        };
        Ok(SpaceHandle {
            home: self,
            name: name.to_string(),
            address,
            cipher,
            own: FeedKey::from(&device),
            device,
            access,
            ignore_role: std::cell::Cell::new(false),
            view: RefCell::new(None),
        })
    }

    /// Membership certificates of every feed this home holds of `address`.
    pub fn members(&self, address: &Address) -> Result<Vec<MembershipCert>> {
        let mut out = Vec::new();
        for item in self.members.scan_prefix(address.as_bytes()) {
            let (k, v) = item?;
            let cert: MembershipCert =
                postcard::from_bytes(&v).map_err(|_| HomeError::Corrupt {
                    what: format!("certificate {}", hex::encode(&k)),
                })?;
            out.push(cert);
        }
        Ok(out)
    }

    /// Remember that `ack.peer` durably stores `ack.length` entries of `ack.feed` of
    /// `address` (never lowering what it said before). Durable when this returns: what a
    /// member is told is backed up, `seeder status` shows after any crash.
    pub fn record_ack(&self, address: &Address, ack: &Ack) -> Result<()> {
        let mut key = Vec::with_capacity(96);
        key.extend_from_slice(address.as_bytes());
        key.extend_from_slice(&ack.peer);
        key.extend_from_slice(&ack.feed.0);
        if let Some(old) = self.acks.get(&key)? {
            if let Ok(old) = postcard::from_bytes::<Ack>(&old) {
                if old.length > ack.length {
                    return Ok(());
                }
            }
        }
        self.acks
            .insert(key, postcard::to_allocvec(ack).expect("acks encode"))?;
        self.store.commit()?;
        Ok(())
    }

    /// `peer` no longer holds `address` (it said so, or refused it): what it acknowledged
    /// before is no backup any more. Durable when this returns.
    pub fn forget_acks(&self, address: &Address, peer: &[u8; 32]) -> Result<()> {
        let mut prefix = Vec::with_capacity(64);
        prefix.extend_from_slice(address.as_bytes());
        prefix.extend_from_slice(peer);
        let keys: Vec<_> = self
            .acks
            .scan_prefix(&prefix)
            .map(|item| item.map(|(k, _)| k))
            .collect::<std::result::Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        for k in keys {
            self.acks.remove(k)?;
        }
        self.store.commit()?;
        Ok(())
    }

    /// A peer holds `length` entries of this device's own feed of `address`, more than here:
    /// remember it (durably) so that no write forks the feed before they are fetched back.
    pub fn set_own_behind(&self, address: &Address, length: u64) -> Result<()> {
        let old = self.own_behind_len(address)?.unwrap_or(0);
        if length > old {
            self.own_behind
                .insert(address.as_bytes(), length.to_le_bytes())?;
            self.store.commit()?;
        }
        Ok(())
    }

    /// This device's own feed of `address` is now `length` long here: forget the mark once
    /// that reaches what a peer said it holds.
    pub fn own_caught_up(&self, address: &Address, length: u64) -> Result<()> {
        if self
            .own_behind_len(address)?
            .is_some_and(|theirs| length >= theirs)
        {
            self.own_behind.remove(address.as_bytes())?;
            self.store.commit()?;
        }
        Ok(())
    }

    fn own_behind_len(&self, address: &Address) -> Result<Option<u64>> {
        match self.own_behind.get(address.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(u64::from_le_bytes(v.as_slice().try_into().map_err(
                |_| HomeError::Corrupt {
                    what: "own-feed mark".into(),
                },
            )?))),
        }
    }

    /// Remember how this device reached `peer` just now to sync `address` (shown by
    /// `seeder status`).
    pub fn record_reached(
        &self,
        address: &Address,
        peer: &[u8; 32],
        reached: &Reached,
    ) -> Result<()> {
        let mut key = Vec::with_capacity(64);
        key.extend_from_slice(address.as_bytes());
        key.extend_from_slice(peer);
        self.reached
            .insert(key, postcard::to_allocvec(reached).expect("reached encode"))?;
        self.store.commit()?;
        Ok(())
    }

    /// The peers this device reached to sync `address`, and how it last did.
    pub fn reached(&self, address: &Address) -> Result<Vec<([u8; 32], Reached)>> {
        let mut out = Vec::new();
        for item in self.reached.scan_prefix(address.as_bytes()) {
            let (k, v) = item?;
            let (Ok(peer), Ok(r)) = (
                <[u8; 32]>::try_from(&k[k.len().saturating_sub(32)..]),
                postcard::from_bytes::<Reached>(&v),
            ) else {
                continue;
            };
            out.push((peer, r));
        }
        Ok(out)
    }

    /// Every acknowledgement remembered for `address`, by peer then feed.
    pub fn acks(&self, address: &Address) -> Result<Vec<Ack>> {
        let mut out = Vec::new();
        for item in self.acks.scan_prefix(address.as_bytes()) {
            let (k, v) = item?;
            out.push(postcard::from_bytes(&v).map_err(|_| HomeError::Corrupt {
                what: format!("acknowledgement {}", hex::encode(&k)),
            })?);
        }
        Ok(out)
    }

    /// The certificate of `feed` in the space at `address`, if it is a member here.
    pub fn member(&self, address: &Address, feed: &FeedKey) -> Result<Option<MembershipCert>> {
        match self.members.get(member_key(address, feed))? {
            None => Ok(None),
            Some(v) => Ok(Some(postcard::from_bytes(&v).map_err(|_| {
                HomeError::Corrupt {
                    what: format!("certificate of feed {feed}"),
                }
            })?)),
        }
    }

    /// Record a verified member feed of `address` (from a bundle or a peer): in a governed
    /// space, one its membership log admits.
    pub fn add_member(&self, address: &Address, cert: &MembershipCert) -> Result<()> {
        self.add_member_in(address, cert, self.membership(address)?.as_ref())
    }

    /// As [`Home::add_member`], judged by `membership` (the space's, computed by the caller
    /// once for many feeds).
    pub(super) fn add_member_in(
        &self,
        address: &Address,
        cert: &MembershipCert,
        membership: Option<&crate::space::Membership>,
    ) -> Result<()> {
        cert.clone().verify_in(address, membership)?;
        self.members.insert(
            member_key(address, &cert.feed),
            postcard::to_allocvec(cert).expect("certificates encode"),
        )?;
        self.store.create_feed(cert.feed)?;
        Ok(())
    }
}

impl Drop for Home {
    /// The op index and the other small records are written without their own flush; make
    /// them durable once, at the end of the command, so the next one needn't redo the work.
    fn drop(&mut self) {
        if let Err(e) = self.store.commit() {
            tracing::warn!(error = %e, "flushing the home's index");
        }
    }
}

/// The random number generator the home uses for keys and nonces.
pub type Rng = rand::rngs::OsRng;

/// One space of a home, opened for file operations.
pub struct SpaceHandle<'h> {
    home: &'h Home,
    name: String,
    address: Address,
    cipher: ContentCipher,
    own: FeedKey,
    device: SigningKey,
    access: Access,
    /// Write whatever this device's role (see [`SpaceHandle::ignoring_role`]).
    ignore_role: std::cell::Cell<bool>,
    /// The merged view, built on first use and kept current with this handle's own writes.
    /// Valid for the handle's life: the home's lock keeps other processes from writing.
    view: RefCell<Option<View>>,
}

/// Which feeds of a space count, and how far.
enum Access {
    /// A space from before roles: every member feed, whole.
    Open,
    /// A governed space: what its membership admits.
    Governed(Box<crate::space::Membership>),
}

/// Attributes of a file being put, from the local file system.
#[derive(Clone, Copy, Debug)]
pub struct FileMeta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub mtime: Mtime,
}

impl SpaceHandle<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn address(&self) -> &Address {
        &self.address
    }
    pub fn own_feed(&self) -> FeedKey {
        self.own
    }

    /// This device's role (`None` in a space from before roles: everyone writes).
    pub fn role(&self) -> Option<crate::space::MemberRole> {
        match &self.access {
            Access::Open => None,
            Access::Governed(m) => m.role(&self.own),
        }
    }

    /// Feeds whose entries count, each with how many of them do (`None`: all).
    fn feeds(&self) -> Result<Vec<(FeedKey, Option<u64>)>> {
        use crate::space::members::Admission;
        let mut out = Vec::new();
        for c in self.home.members(&self.address)? {
            match &self.access {
                Access::Open => out.push((c.feed, None)),
                Access::Governed(m) => {
                    if let Admission::Upto(limit) = m.admits(&c.feed) {
                        out.push((c.feed, limit));
                    }
                }
            }
        }
        Ok(out)
    }

    /// From now on, write as a device would that ignored its role (a reader, a removed
    /// device): entries signed with its own key and sealed with the newest key it holds.
    /// For tests that prove such entries are refused by seeders and ignored by members.
    #[doc(hidden)]
    pub fn ignoring_role(self) -> Self {
        self.ignore_role.set(true);
        self
    }

    /// Writing needs a role that writes and the current key.
    fn check_writer(&self) -> Result<()> {
        if self.ignore_role.get() {
            return Ok(());
        }
        if let Access::Governed(m) = &self.access {
            match m.role(&self.own) {
                Some(r) if r.writes() => {}
                Some(_) => return Err(HomeError::ReadOnly(self.name.clone())),
                None if m.members.contains_key(&self.own) => {
                    return Err(HomeError::Removed(self.name.clone()))
                }
                None => return Err(HomeError::NotJoined(self.name.clone())),
            }
        }
        Ok(())
    }

    fn seal(&self, seq: u64, record: &Record) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Ok(self.cipher.seal(&self.own, seq, &record.encode(), &nonce)?)
    }

    fn open_entry(&self, reader: &mut FeedReader<'_>, feed: &FeedKey, seq: u64) -> Result<Record> {
        let sealed = reader.read(seq)?;
        let plain = Zeroizing::new(self.cipher.open(feed, seq, &sealed)?);
        Ok(Record::decode(&plain)?)
    }

    /// Append sealed entries to this device's feed as one durable batch.
    fn append(&self, frontier: &mut Frontier, sealed: Vec<Vec<u8>>) -> Result<u64> {
        self.check_writer()?;
        if let Some(theirs) = self.home.own_behind_len(&self.address)? {
            if frontier.len() < theirs {
                return Err(HomeError::OwnFeedBehind {
                    space: self.name.clone(),
                    ours: frontier.len(),
                    theirs,
                });
            }
        }
        let batch = write_batch(&self.device, frontier, sealed)?;
        Ok(self.home.store.append(batch)?)
    }

    /// Where this device's next write goes; the start of every write, so refused at once
    /// for a device that may not write.
    fn own_frontier(&self) -> Result<Frontier> {
        self.check_writer()?;
        Ok(self.home.store.frontier(&self.own)?)
    }

    /// Mark `ops` of our own feed as file operations, if the index is caught up to `before`
    /// (else the next view classifies them by reading them).
    fn index_own(&self, before: u64, ops: &[u64], after: u64) -> Result<()> {
        let key = member_key(&self.address, &self.own);
        if self.indexed_len(&key)? == before {
            let mut batch = TableBatch::default();
            for seq in ops {
                batch.insert(&op_key(&self.address, &self.own, *seq)[..], &[][..]);
            }
            self.home.opindex.apply(batch)?;
            self.home.indexed.insert(key, &after.to_le_bytes()[..])?;
        }
        Ok(())
    }

    fn indexed_len(&self, key: &[u8]) -> Result<u64> {
        Ok(match self.home.indexed.get(key)? {
            Some(v) => {
                u64::from_le_bytes(v.as_slice().try_into().map_err(|_| HomeError::Corrupt {
                    what: "index position".into(),
                })?)
            }
            None => 0,
        })
    }

    /// Put a file's content from `reader` at `path`. `progress` is told the bytes done.
    pub fn put(
        &self,
        path: &Path,
        reader: &mut dyn Read,
        meta: FileMeta,
        progress: &mut dyn FnMut(u64),
    ) -> Result<FileState> {
        let mut frontier = self.own_frontier()?;
        let before = frontier.len();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut pending: Vec<Vec<u8>> = Vec::with_capacity(PUT_BATCH_ENTRIES);
        let mut chunks = 0u64;
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = read_full(reader, &mut buf).map_err(|source| HomeError::Io {
                what: "cannot read",
                path: PathBuf::from(path.as_str()),
                source,
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            let seq = before + chunks;
            pending.push(self.seal(seq, &Record::Chunk(buf[..n].to_vec()))?);
            chunks += 1;
            if pending.len() == PUT_BATCH_ENTRIES {
                self.append(&mut frontier, std::mem::take(&mut pending))?;
                progress(size);
            }
            if n < buf.len() {
                break;
            }
        }
        let op_seq = before + chunks;
        let record = Record::Put {
            path: path.clone(),
            meta: RecordMeta {
                size,
                mode: meta.mode & super::MODE_MASK,
                mtime: meta.mtime,
                hash: *hasher.finalize().as_bytes(),
                content: ContentRef {
                    feed: self.own,
                    first: before,
                    count: chunks,
                },
            },
            clock: self.view()?.clock_for_write(self.own, op_seq),
        };
        record.check()?;
        pending.push(self.seal(op_seq, &record)?);
        let after = self.append(&mut frontier, pending)?;
        progress(size);
        self.index_own(before, &[op_seq], after)?;
        self.applied(op_seq, record.clone())?;
        let Record::Put { path, meta, .. } = record else {
            unreachable!("built as a put above");
        };
        Ok(FileState {
            path,
            meta,
            version: super::VersionId {
                feed: self.own,
                seq: op_seq,
            },
        })
    }

    /// Apply one of our own ops, just written at `seq`, to the cached view.
    fn applied(&self, seq: u64, record: Record) -> Result<()> {
        let mut cell = self.view.borrow_mut();
        if let Some(view) = cell.as_mut() {
            view.apply(Op {
                feed: self.own,
                seq,
                record,
            })?;
        }
        Ok(())
    }

    fn write_op(&self, make: impl FnOnce(super::VectorClock) -> Record) -> Result<()> {
        let mut frontier = self.own_frontier()?;
        let before = frontier.len();
        let record = make(self.view()?.clock_for_write(self.own, before));
        record.check()?;
        let sealed = self.seal(before, &record)?;
        let after = self.append(&mut frontier, vec![sealed])?;
        self.index_own(before, &[before], after)?;
        self.applied(before, record)
    }

    /// Put many small files (each at most one chunk) in as few durable batches as possible:
    /// a folder of thousands of small files costs a few `fdatasync`s, not thousands.
    pub fn put_small(&self, files: Vec<(Path, Vec<u8>, FileMeta)>) -> Result<usize> {
        let mut frontier = self.own_frontier()?;
        let mut before = frontier.len();
        let mut pending = Vec::new();
        let mut pending_bytes = 0usize;
        let mut ops = Vec::new();
        let count = files.len();
        for (path, content, meta) in files {
            if content.len() > CHUNK_SIZE {
                return Err(HomeError::Corrupt {
                    what: format!("{path}: put_small takes files of at most one chunk"),
                });
            }
            let seq0 = before + pending.len() as u64;
            let chunks = u64::from(!content.is_empty());
            let op_seq = seq0 + chunks;
            let record = Record::Put {
                path,
                meta: RecordMeta {
                    size: content.len() as u64,
                    mode: meta.mode & super::MODE_MASK,
                    mtime: meta.mtime,
                    hash: *blake3::hash(&content).as_bytes(),
                    content: ContentRef {
                        feed: self.own,
                        first: seq0,
                        count: chunks,
                    },
                },
                clock: self.view()?.clock_for_write(self.own, op_seq),
            };
            record.check()?;
            pending_bytes += content.len();
            if chunks == 1 {
                pending.push(self.seal(seq0, &Record::Chunk(content))?);
            }
            pending.push(self.seal(op_seq, &record)?);
            // Later files' clocks must count this one.
            self.applied(op_seq, record)?;
            ops.push(op_seq);
            if pending.len() >= PUT_BATCH_ENTRIES * 8 || pending_bytes >= 4 << 20 {
                let after = self.append(&mut frontier, std::mem::take(&mut pending))?;
                self.index_own(before, &ops, after)?;
                ops.clear();
                before = after;
                pending_bytes = 0;
            }
        }
        if !pending.is_empty() {
            let after = self.append(&mut frontier, pending)?;
            self.index_own(before, &ops, after)?;
        }
        Ok(count)
    }

    /// Tell the other members what to call this device.
    pub fn set_device_name(&self, name: &str) -> Result<()> {
        let mut name = name.trim().to_string();
        while name.len() > super::MAX_DEVICE_NAME_LEN {
            name.pop();
        }
        if name.is_empty() {
            return Ok(());
        }
        self.write_op(|_| Record::Device { name })
    }

    /// Delete the file at `path`.
    pub fn remove(&self, path: &Path) -> Result<()> {
        if self.view()?.get(path).is_none() {
            return Err(HomeError::NotFound(path.shown().to_string()));
        }
        self.write_op(|clock| Record::Delete {
            path: path.clone(),
            clock,
        })
    }

    /// Move the file at `from` to `to` (its content is not copied).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let file = self
            .view()?
            .get(from)
            .cloned()
            .ok_or_else(|| HomeError::NotFound(from.shown().to_string()))?;
        if from == to {
            return Ok(());
        }
        self.write_op(|clock| Record::Rename {
            from: from.clone(),
            to: to.clone(),
            meta: file.meta,
            clock,
        })
    }

    /// The merged view of the space, built on first use (classifying entries not yet
    /// indexed) and kept current with this handle's writes.
    pub fn view(&self) -> Result<Ref<'_, View>> {
        if self.view.borrow().is_none() {
            let view = self.build_view()?;
            *self.view.borrow_mut() = Some(view);
        }
        Ok(Ref::map(self.view.borrow(), |v| {
            v.as_ref().expect("filled just above")
        }))
    }

    fn build_view(&self) -> Result<View> {
        let mut view = View::new();
        for (feed, limit) in self.feeds()? {
            let key = member_key(&self.address, &feed);
            let stored = self.home.store.feed(&feed)?.map_or(0, |s| s.length);
            // Entries past a freeze point (a removed device's later writes) don't count.
            let length = limit.map_or(stored, |l| stored.min(l));
            if length == 0 {
                continue;
            }
            let mut reader = self.home.store.reader(&feed)?;
            let mut indexed = self.indexed_len(&key)?;
            if indexed < length {
                let mut batch = TableBatch::default();
                let mut upto = length;
                for seq in indexed..length {
                    match self.open_entry(&mut reader, &feed, seq) {
                        Ok(Record::Chunk(_)) => {}
                        Ok(_) => batch.insert(&op_key(&self.address, &feed, seq)[..], &[][..]),
                        // Sealed with a key this device doesn't hold yet (its epoch record is
                        // on its way): classified no further, so it is read again next time.
                        Err(HomeError::Space(crate::space::SpaceError::NoKey { .. })) => {
                            upto = seq;
                            break;
                        }
                        Err(e) => {
                            // A feed with an entry we can't read still shows everything else.
                            tracing::warn!(%feed, seq, error = %e, "unreadable entry skipped");
                        }
                    }
                }
                indexed = upto;
                // Op positions first, then the mark that they're classified: a crash between
                // the two only means classifying the same entries again.
                self.home.opindex.apply(batch)?;
                self.home.indexed.insert(key, &indexed.to_le_bytes()[..])?;
            }
            for item in self.home.opindex.scan_prefix(key) {
                let (k, _) = item?;
                let seq = k
                    .get(64..72)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| HomeError::Corrupt {
                        what: format!("op index key {}", hex::encode(&k)),
                    })?;
                if seq >= length {
                    continue;
                }
                match self.open_entry(&mut reader, &feed, seq) {
                    Ok(record) => {
                        if let Err(e) = view.apply(Op { feed, seq, record }) {
                            // Refused for a reason in the op itself: every member refuses it.
                            tracing::warn!(%feed, seq, error = %e, "op refused");
                        }
                    }
                    Err(e) => tracing::warn!(%feed, seq, error = %e, "unreadable op skipped"),
                }
            }
        }
        Ok(view)
    }

    /// Stream the content of `file` into `out`, checking it against its recorded hash.
    pub fn read_content(&self, file: &FileState, out: &mut dyn Write) -> Result<u64> {
        let c = &file.meta.content;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mismatch = || HomeError::ContentMismatch {
            path: file.path.to_string(),
        };
        if c.count == 0 {
            return if file.meta.size == 0 && *blake3::hash(b"").as_bytes() == file.meta.hash {
                Ok(0)
            } else {
                Err(mismatch())
            };
        }
        let mut reader = self.home.store.reader(&c.feed)?;
        for seq in c.seqs() {
            let sealed = reader.read(seq)?;
            let plain = Zeroizing::new(self.cipher.open(&c.feed, seq, &sealed)?);
            match Record::decode(&plain)? {
                Record::Chunk(bytes) => {
                    hasher.update(&bytes);
                    size += bytes.len() as u64;
                    out.write_all(&bytes).map_err(|source| HomeError::Io {
                        what: "cannot write",
                        path: PathBuf::from(file.path.as_str()),
                        source,
                    })?;
                }
                _ => return Err(mismatch()),
            }
        }
        if size != file.meta.size || *hasher.finalize().as_bytes() != file.meta.hash {
            return Err(mismatch());
        }
        Ok(size)
    }
}

/// This machine's name: the kernel's host name, else "device".
fn device_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "device".to_string())
}

/// Read until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FileMeta {
        FileMeta {
            mode: 0o644,
            mtime: Mtime::default(),
        }
    }

    #[test]
    fn a_home_behind_its_own_feed_refuses_to_write_until_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let address = home.create_space("office", &mut Rng::default()).unwrap();
        let space = home.space("office").unwrap();
        let own = space.own_feed();
        let have = home.store().feed(&own).unwrap().map_or(0, |s| s.length);
        // A peer holds more of this device's own feed than the home does.
        home.set_own_behind(&address, have + 5).unwrap();
        let path = Path::new("notes.txt").unwrap();
        let refused = space.put(&path, &mut &b"new work"[..], meta(), &mut |_| {});
        assert!(
            matches!(refused, Err(HomeError::OwnFeedBehind { ours, theirs, .. }) if ours == have && theirs == have + 5),
            "{refused:?}"
        );
        assert_eq!(
            home.store().feed(&own).unwrap().map_or(0, |s| s.length),
            have,
            "nothing written"
        );
        // The mark survives the command, like the home.
        drop(space);
        drop(home);
        let home = Home::open(dir.path()).unwrap();
        let space = home.space("office").unwrap();
        assert!(space
            .put(&path, &mut &b"new work"[..], meta(), &mut |_| {})
            .is_err());
        // Fetched back: writing goes on.
        home.own_caught_up(&address, have + 5).unwrap();
        space
            .put(&path, &mut &b"new work"[..], meta(), &mut |_| {})
            .unwrap();
    }
}
