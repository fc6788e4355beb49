/*!
Durable feeds on disk: a sled index plus one append-only data file per feed.

Layout of a data directory:
- `db/`: sled. Tree `feeds` holds, under one-byte key prefixes, each feed's metadata (`F`)
  and one record per appended batch (`B`, keyed by the batch's first entry): where its
  entries are in the data file, their leaf hashes, and the perfect tree nodes the batch
  completed. One index write per batch rather than per entry keeps sled's work and memory
  small. Trees `damage` and `forks` hold what went wrong, for the admin page.
- `feeds/<xx>/<feed-hex>.data`: the entries' bytes, back to back, where `xx` is the first byte
  of the feed key (so no folder grows past a few thousand files).

Commit order of an append, the invariant everything else rests on: write the bytes at the
committed end of the data file → `fdatasync` → one atomic sled batch (leaves, nodes, metadata
with the new length and head) → flush sled → the index barrier (`fdatasync` of sled's log and
`fsync` of its new files and folders, see [`barrier`]: sled's flush alone is not durable) →
only then return. So sled never points at bytes that are not durable, and whatever a crash
leaves past the committed end is garbage that [`Store::open`] truncates away. A `kill -9` or a
power cut at any instant loses nothing that was acknowledged and corrupts nothing.

Other layers keep their records in [`Table`]s of the same index (the registry's spaces, a
home's acknowledgements); their writes become durable at the next [`Store::commit`]. sled
itself stays inside this module.

Reads are verified: an entry's bytes are hashed and compared with the stored leaf hash, so a
damaged disk gives [`StoreError::Integrity`], never wrong bytes; the damage is recorded and
shown by [`Store::damage`].

The store accepts appends only as a [`VerifiedBatch`], a proof type only `feed` can make, so
nothing unverified reaches the disk. It knows nothing of spaces, peers, encryption or the
network; it does blocking I/O, so async callers use `spawn_blocking`.
*/

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

mod barrier;
pub mod file;
mod reserve;

pub use reserve::RESERVE_BYTES;

use crate::feed::{
    self, ConsistencyProof, FeedKey, ForkEvidence, Frontier, Hash, InclusionProof, NodeId,
    PrefixHead, SignedHead, VerifiedBatch, MAX_ENTRY_LEN,
};

/// Default sled page cache: 32 MiB. The Lime2 has 1 GiB for everything (kernel, daemon, page
/// cache for the data files); sled's default of 1 GiB would take it all.
pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

/// At most this many bytes are read into memory by one [`Store::read_range`] call, whatever the
/// caller asks for: a range read serves one network batch, and a batch must stay small on a
/// 1 GiB board (plus one entry, so a single maximal entry is always readable).
pub const MAX_RANGE_BYTES: usize = 4 << 20;

const TREE_FEEDS: &str = "feeds";
const TREE_DAMAGE: &str = "damage";
const TREE_FORKS: &str = "forks";
const TREE_REPAIRS: &str = "repairs";

/// Damaged entries of one feed a peer is asked for at once, and listed at most.
pub const MAX_DAMAGED_LISTED: usize = 1024;

const PREFIX_META: u8 = b'F';
const PREFIX_BATCH: u8 = b'B';

/// Version of the batch record's encoding.
const BATCH_VERSION: u8 = 1;

/// Version of the metadata record; bumped on any change of [`FeedMeta`]'s encoding. Version 1
/// (without `pending_proof`) is still read.
const META_VERSION: u8 = 2;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The sled index failed.
    #[error("index database: {0}")]
    Db(#[from] sled::Error),
    /// Another process holds the store (its database lock) and didn't let go in time.
    #[error("{0} is in use by another seeder process")]
    Busy(PathBuf),
    /// Stored bytes do not match their hash, or are missing: the disk lost or changed them.
    #[error("feed {feed} entry {index} is damaged: {reason}")]
    Integrity {
        feed: FeedKey,
        index: u64,
        reason: &'static str,
    },
    /// An index record could not be decoded.
    #[error("index record {what} is corrupt")]
    Corrupt { what: String },
    /// No such feed.
    #[error("feed {0} is not stored here")]
    UnknownFeed(FeedKey),
    /// An entry past the stored length was asked for.
    #[error("feed {feed} has {length} entries; entry {index} is not stored")]
    OutOfRange {
        feed: FeedKey,
        index: u64,
        length: u64,
    },
    /// The batch was verified against another state of the feed than the stored one (a
    /// concurrent append got there first): verify again against the current frontier.
    #[error("batch for feed {feed} starts at {start} but {length} entries are stored")]
    Stale {
        feed: FeedKey,
        start: u64,
        length: u64,
    },
    /// The feed's writer forked; nothing more is accepted for it.
    #[error("feed {0} is frozen: its writer signed two conflicting histories")]
    Frozen(FeedKey),
    /// Fork evidence that does not verify.
    #[error("fork evidence does not verify: {0}")]
    BadEvidence(#[from] feed::FeedError),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Settings of a store. Defaults suit a 1 GiB board.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl StoreConfig {
    /// sled's page cache in bytes: memory the index may use for hot pages. Larger makes
    /// proofs and opening many feeds faster. Default: [`DEFAULT_CACHE_BYTES`] (32 MiB).
    pub fn cache_bytes(&mut self, bytes: u64) -> &mut Self {
        self.cache_bytes = bytes;
        self
    }
}

/// What is stored of one feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    pub key: FeedKey,
    /// Entries stored, all verified: a contiguous prefix of the feed.
    pub length: u64,
    /// Bytes of entry data stored.
    pub bytes: u64,
    /// The newest signed head whose whole tree is stored (`head.length <= length`); what this
    /// node can serve to others with proofs.
    pub head: Option<SignedHead>,
    /// A newer verified head that the stored entries are a proven prefix of, while the rest is
    /// still being fetched.
    pub pending: Option<SignedHead>,
    /// The writer forked; appends are refused.
    pub frozen: bool,
}

impl FeedState {
    /// What a space's totals count of this feed.
    pub fn size(&self) -> FeedSize {
        FeedSize {
            entries: self.length,
            bytes: self.bytes,
            complete: self.length >= self.known_length() && !self.frozen,
        }
    }

    /// The length of the newest head known, complete or not.
    pub fn known_length(&self) -> u64 {
        let complete = self.head.as_ref().map_or(0, |h| h.length);
        let pending = self.pending.as_ref().map_or(0, |h| h.length);
        complete.max(pending).max(self.length)
    }
}

/// What totals over many feeds (a space's, on the admin page) count of one feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedSize {
    /// Entries stored.
    pub entries: u64,
    /// Bytes of entry data stored.
    pub bytes: u64,
    /// Every entry of the newest head known is stored, and the writer did not fork.
    pub complete: bool,
}

impl FeedSize {
    /// A feed not stored (not yet, or no more): nothing held, nothing missing.
    pub const ABSENT: FeedSize = FeedSize {
        entries: 0,
        bytes: 0,
        complete: true,
    };
}

/// Told of every change to a feed's stored size, so a layer above can keep totals over many
/// feeds current without reading them all again (see [`Store::watch`]).
pub trait FeedWatcher: Send + Sync {
    /// `feed` now has `size` (`None`: it was deleted). Called with the feed's lock held, after
    /// the change is durable, so one feed's calls arrive in the order of its changes. Must be
    /// quick and must not call back into the store's writes.
    fn feed_changed(&self, feed: &FeedKey, size: Option<FeedSize>);
}

/// Stored form of a feed's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FeedMeta {
    version: u8,
    length: u64,
    /// Committed end of the data file: the sum of all stored entries' lengths.
    data_end: u64,
    /// Head whose length == some prefix we fully hold.
    head: Option<SignedHead>,
    pending: Option<SignedHead>,
    frozen: bool,
    /// Set while a delete is under way: the feed is gone for readers, and [`Store::open`]
    /// finishes the clean-up if a crash interrupted it.
    deleting: bool,
    /// With `pending`: the consistency proof from `length` to the pending head, when known, so
    /// the stored prefix can be served on while the rest is still to come.
    pending_proof: Option<ConsistencyProof>,
}

/// Version 1 of [`FeedMeta`], read when found and written back as the current version.
#[derive(Deserialize)]
struct FeedMetaV1 {
    version: u8,
    length: u64,
    data_end: u64,
    head: Option<SignedHead>,
    pending: Option<SignedHead>,
    frozen: bool,
    deleting: bool,
}

impl FeedMeta {
    fn new() -> Self {
        FeedMeta {
            version: META_VERSION,
            length: 0,
            data_end: 0,
            head: None,
            pending: None,
            frozen: false,
            deleting: false,
            pending_proof: None,
        }
    }

    fn state(&self, key: FeedKey) -> FeedState {
        FeedState {
            key,
            length: self.length,
            bytes: self.data_end,
            head: self.head.clone(),
            pending: self.pending.clone(),
            frozen: self.frozen,
        }
    }
}

/// One entry's place and hash, read from its batch record.
#[derive(Clone, Copy, Debug)]
struct Leaf {
    hash: Hash,
    offset: u64,
    len: u32,
}

/// The index record of one appended batch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BatchRecord {
    first: u64,
    /// Data-file offset of the first entry; the others follow back to back.
    offset: u64,
    leaves: Vec<(Hash, u32)>,
    /// Perfect nodes above the leaves that this batch completed.
    nodes: Vec<(NodeId, Hash)>,
}

impl BatchRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + 8 + 8 + 4 + self.leaves.len() * 36 + 4 + self.nodes.len() * 41);
        out.push(BATCH_VERSION);
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&(self.leaves.len() as u32).to_le_bytes());
        for (hash, len) in &self.leaves {
            out.extend_from_slice(hash);
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        for (id, hash) in &self.nodes {
            out.push(id.level);
            out.extend_from_slice(&id.index.to_le_bytes());
            out.extend_from_slice(hash);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<BatchRecord> {
        let mut r = Reader(bytes);
        if r.take(1)?[0] != BATCH_VERSION {
            return None;
        }
        let first = r.u64()?;
        let offset = r.u64()?;
        let n = r.u32()? as usize;
        // Each leaf takes 36 bytes: a count the bytes can't hold is corrupt, and checking it
        // first keeps a bad count from allocating.
        if n > r.0.len() / 36 {
            return None;
        }
        let mut leaves = Vec::with_capacity(n);
        for _ in 0..n {
            let hash: Hash = r.take(32)?.try_into().ok()?;
            leaves.push((hash, r.u32()?));
        }
        let m = r.u32()? as usize;
        if m > r.0.len() / 41 {
            return None;
        }
        let mut nodes = Vec::with_capacity(m);
        for _ in 0..m {
            let level = r.take(1)?[0];
            let index = r.u64()?;
            let hash: Hash = r.take(32)?.try_into().ok()?;
            nodes.push((NodeId { level, index }, hash));
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(BatchRecord {
            first,
            offset,
            leaves,
            nodes,
        })
    }

    fn contains(&self, index: u64) -> bool {
        index >= self.first && index - self.first < self.leaves.len() as u64
    }

    fn leaf(&self, index: u64) -> Leaf {
        let i = (index - self.first) as usize;
        let before: u64 = self.leaves[..i].iter().map(|(_, l)| u64::from(*l)).sum();
        let (hash, len) = self.leaves[i];
        Leaf {
            hash,
            offset: self.offset + before,
            len,
        }
    }
}

/// A cursor over an index record's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// What kind of damage was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DamageKind {
    /// The data file is shorter than its committed end, or missing.
    Truncated { file_len: u64, committed: u64 },
    /// An entry's bytes do not hash to its stored leaf hash.
    BadEntry { index: u64 },
}

/// A damaged feed, as shown to the admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    pub feed: FeedKey,
    pub kind: DamageKind,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            DamageKind::Truncated {
                file_len,
                committed,
            } => write!(
                f,
                "feed {}: data file holds {file_len} of {committed} committed bytes",
                self.feed
            ),
            DamageKind::BadEntry { index } => {
                write!(
                    f,
                    "feed {}: entry {index} does not match its hash",
                    self.feed
                )
            }
        }
    }
}

/// A damaged entry rewritten with a good copy from a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub feed: FeedKey,
    pub index: u64,
    /// The node id of the peer the good copy came from.
    pub peer: [u8; 32],
    /// When, in seconds since the epoch (0 if the clock was unset).
    pub at: u64,
}

/// What this node can serve of a feed: entries up to `length`, each batch provable against
/// `head` (its newest complete head) or, when it holds more verified against a longer head
/// than is complete here, against `prefix`, that longer head's prefix of `length` entries.
#[derive(Clone, Debug)]
pub struct ServeTarget {
    pub length: u64,
    pub head: SignedHead,
    pub prefix: Option<PrefixHead>,
}

/// A durable feed store. Cheap to clone; all clones share one index and one set of locks.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    /// sled's files, synced after every flush an acknowledgement depends on.
    index_files: barrier::IndexFiles,
    /// Room kept on the disk for the index to open in (see [`reserve`]).
    reserve: reserve::Reserve,
    feeds: sled::Tree,
    damage: sled::Tree,
    forks: sled::Tree,
    repairs: sled::Tree,
    /// One lock per feed, so appends and deletes of one feed are serialized while different
    /// feeds proceed in parallel. Grows with the number of feeds touched since open (a few
    /// dozen bytes each).
    locks: Mutex<HashMap<FeedKey, Arc<Mutex<()>>>>,
    /// Who is told of size changes ([`Store::watch`]). Dropped watchers are pruned at each
    /// `watch`, so this holds one entry per live watcher: in the daemon, one (its registry).
    watchers: Mutex<Vec<std::sync::Weak<dyn FeedWatcher>>>,
}

fn meta_key(feed: &FeedKey) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = PREFIX_META;
    k[1..].copy_from_slice(&feed.0);
    k
}

fn batch_key(feed: &FeedKey, first: u64) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = PREFIX_BATCH;
    k[1..33].copy_from_slice(&feed.0);
    k[33..].copy_from_slice(&first.to_be_bytes());
    k
}

fn feed_prefix(prefix: u8, feed: &FeedKey) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = prefix;
    k[1..].copy_from_slice(&feed.0);
    k
}

/// How long [`Store::open`] waits for the database's lock. sled releases it only when its
/// last I/O thread lets go, a moment after the previous holder (this process or another)
/// closed it; a holder still at work past this is really busy.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == io::ErrorKind::WouldBlock
                || io.raw_os_error() == Some(11)
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

/// Open sled, waiting up to [`LOCK_WAIT`] (with growing pauses) for its lock.
fn open_db(path: &Path, config: &StoreConfig) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_bytes)
            // Every append flushes before it acknowledges, and the other writers flush when
            // they need durability, so sled's timer thread isn't needed.
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            Err(e) if is_lock_error(&e) => return Err(StoreError::Busy(path.to_path_buf())),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Make a directory's entries durable.
fn sync_dir(path: &Path) -> Result<()> {
    file::sync_dir(path).map_err(io_err("sync directory", path))
}

impl Store {
    /// Open (or create) the store in `dir`, finishing any interrupted delete and truncating
    /// every data file to its committed end. Damage found on the way (a data file shorter
    /// than its committed end) is recorded, not fatal.
    pub fn open(dir: impl AsRef<Path>, config: &StoreConfig) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        let feeds_dir = dir.join("feeds");
        fs::create_dir_all(&feeds_dir).map_err(io_err("create", &feeds_dir))?;
        let reserve = reserve::Reserve::new(&dir);
        reserve
            .release_if_full()
            .map_err(io_err("release the reserve in", &dir))?;
        let db_path = dir.join("db");
        let fresh = !db_path.exists();
        let db = open_db(&db_path, config)?;
        if fresh {
            // The database folder's own name, and the store folder's if it is new too.
            sync_dir(&dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let store = Store {
            inner: Arc::new(Inner {
                feeds: db.open_tree(TREE_FEEDS)?,
                damage: db.open_tree(TREE_DAMAGE)?,
                forks: db.open_tree(TREE_FORKS)?,
                repairs: db.open_tree(TREE_REPAIRS)?,
                index_files: barrier::IndexFiles::new(&db_path),
                reserve,
                db,
                dir,
                locks: Mutex::new(HashMap::new()),
                watchers: Mutex::new(Vec::new()),
            }),
        };
        store.recover()?;
        store.commit()?;
        store.keep_reserve();
        Ok(store)
    }

    /// Make the disk reserve again if it was released and there is room (see [`reserve`]);
    /// cheap when there is nothing to do. A failure is logged: it only matters at the next
    /// open on a full disk.
    pub fn keep_reserve(&self) {
        if let Err(e) = self.inner.reserve.restore() {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "cannot make the disk reserve");
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The table `name` of the index, for another layer's records (created empty if new).
    /// The store's own tables' names are refused.
    pub fn table(&self, name: &str) -> Result<Table> {
        if [TREE_FEEDS, TREE_DAMAGE, TREE_FORKS, TREE_REPAIRS].contains(&name)
            || name.starts_with("__sled")
        {
            return Err(StoreError::Corrupt {
                what: format!("table name {name:?} (reserved by the store)"),
            });
        }
        Ok(Table {
            tree: self.inner.db.open_tree(name)?,
        })
    }

    /// The durability barrier: everything written to the index so far (this store's records
    /// and every [`Table`]'s) is on stable storage when this returns. Appends and the store's
    /// own updates call it themselves; other layers call it before they tell anyone their
    /// write happened.
    pub fn commit(&self) -> Result<()> {
        self.inner.db.flush()?;
        self.inner
            .index_files
            .sync()
            .map_err(io_err("sync", &self.inner.dir.join("db")))
    }

    /// Tell `watcher` of every later change to any feed's [`FeedSize`] (appends, forks,
    /// deletes), until it is dropped. The store holds it weakly.
    pub fn watch(&self, watcher: &Arc<dyn FeedWatcher>) {
        let mut w = self
            .inner
            .watchers
            .lock()
            .expect("watcher list poisoned: a thread panicked while holding it");
        w.retain(|x| x.strong_count() > 0);
        w.push(Arc::downgrade(watcher));
    }

    /// Tell the watchers `feed`'s new size; called with the feed's lock held.
    fn changed(&self, feed: &FeedKey, meta: Option<&FeedMeta>) {
        let watchers: Vec<Arc<dyn FeedWatcher>> = self
            .inner
            .watchers
            .lock()
            .expect("watcher list poisoned: a thread panicked while holding it")
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let size = meta.map(|m| m.state(*feed).size());
        for w in watchers {
            w.feed_changed(feed, size);
        }
    }

    fn data_path(&self, feed: &FeedKey) -> PathBuf {
        let hex = feed.to_hex();
        self.inner
            .dir
            .join("feeds")
            .join(&hex[..2])
            .join(format!("{hex}.data"))
    }

    fn lock(&self, feed: &FeedKey) -> Arc<Mutex<()>> {
        let mut locks = self
            .inner
            .locks
            .lock()
            .expect("feed lock table poisoned: a thread panicked while holding it");
        locks.entry(*feed).or_default().clone()
    }

    fn recover(&self) -> Result<()> {
        let mut metas = Vec::new();
        for item in self.inner.feeds.scan_prefix([PREFIX_META]) {
            let (k, v) = item?;
            let feed = key_feed(&k)?;
            metas.push((feed, decode_meta(&feed, &v)?));
        }
        for (feed, meta) in metas {
            if meta.deleting {
                tracing::info!(%feed, "finishing an interrupted delete");
                self.finish_delete(&feed)?;
                continue;
            }
            let path = self.data_path(&feed);
            let file_len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(io_err("inspect", &path)(e)),
            };
            if file_len > meta.data_end {
                tracing::info!(
                    %feed,
                    garbage = file_len - meta.data_end,
                    "truncating uncommitted bytes"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open", &path))?;
                f.set_len(meta.data_end)
                    .map_err(io_err("truncate", &path))?;
                f.sync_all().map_err(io_err("sync", &path))?;
            } else if file_len < meta.data_end {
                tracing::error!(%feed, file_len, committed = meta.data_end, "data file is short");
                self.record_lost_tail(&feed, file_len, meta.data_end)?;
            } else {
                // A short file repaired meanwhile: its record is history.
                self.clear_truncated(&feed)?;
            }
        }
        Ok(())
    }

    /// The data file of `feed` ends at `file_len`, before its committed end: record that, and
    /// each entry it cut (the first [`MAX_DAMAGED_LISTED`]; reads find the rest), so peers are
    /// asked for them like for any damaged entry.
    fn record_lost_tail(&self, feed: &FeedKey, file_len: u64, committed: u64) -> Result<()> {
        let mut damage_key = feed.0.to_vec();
        damage_key.push(0);
        let record = |d: &Damage| {
            postcard::to_allocvec(d).map_err(|_| StoreError::Corrupt {
                what: "damage record (encoding)".into(),
            })
        };
        self.inner.damage.insert(
            damage_key,
            record(&Damage {
                feed: *feed,
                kind: DamageKind::Truncated {
                    file_len,
                    committed,
                },
            })?,
        )?;
        let mut listed = 0;
        'records: for item in self
            .inner
            .feeds
            .scan_prefix(feed_prefix(PREFIX_BATCH, feed))
        {
            let (_, v) = item?;
            let Some(batch) = BatchRecord::decode(&v) else {
                continue;
            };
            let mut offset = batch.offset;
            for (i, (_, len)) in batch.leaves.iter().enumerate() {
                let end = offset + u64::from(*len);
                offset = end;
                if end <= file_len {
                    continue;
                }
                let index = batch.first + i as u64;
                let mut key = feed.0.to_vec();
                key.push(1);
                key.extend_from_slice(&index.to_be_bytes());
                self.inner.damage.insert(
                    key,
                    record(&Damage {
                        feed: *feed,
                        kind: DamageKind::BadEntry { index },
                    })?,
                )?;
                listed += 1;
                if listed >= MAX_DAMAGED_LISTED {
                    break 'records;
                }
            }
        }
        self.commit()
    }

    /// Forget a feed's "data file is short" record once the file holds its committed end.
    fn clear_truncated(&self, feed: &FeedKey) -> Result<()> {
        let mut key = feed.0.to_vec();
        key.push(0);
        if self.inner.damage.remove(key)?.is_some() {
            self.commit()?;
        }
        Ok(())
    }

    fn meta(&self, feed: &FeedKey) -> Result<Option<FeedMeta>> {
        match self.inner.feeds.get(meta_key(feed))? {
            None => Ok(None),
            Some(v) => {
                let meta = decode_meta(feed, &v)?;
                Ok(if meta.deleting { None } else { Some(meta) })
            }
        }
    }

    fn meta_required(&self, feed: &FeedKey) -> Result<FeedMeta> {
        self.meta(feed)?.ok_or(StoreError::UnknownFeed(*feed))
    }

    /// Register a feed with no entries (a member's new feed, or one a peer announced). Does
    /// nothing if it exists.
    pub fn create_feed(&self, feed: FeedKey) -> Result<FeedState> {
        let lock = self.lock(&feed);
        let _guard = lock.lock().expect("feed lock poisoned");
        if let Some(meta) = self.meta(&feed)? {
            return Ok(meta.state(feed));
        }
        let meta = FeedMeta::new();
        self.inner
            .feeds
            .insert(meta_key(&feed), encode_meta(&meta))?;
        self.commit()?;
        self.changed(&feed, Some(&meta));
        Ok(meta.state(feed))
    }

    /// What is stored of `feed`, or `None`.
    pub fn feed(&self, feed: &FeedKey) -> Result<Option<FeedState>> {
        Ok(self.meta(feed)?.map(|m| m.state(*feed)))
    }

    /// Bytes of entry data of `feed` before entry `index` (all of them when `index` is at or
    /// past the stored length): entries are stored back to back from the data file's start.
    pub fn bytes_before(&self, feed: &FeedKey, index: u64) -> Result<u64> {
        let Some(meta) = self.meta(feed)? else {
            return Ok(0);
        };
        if index >= meta.length {
            return Ok(meta.data_end);
        }
        Ok(self.leaf(feed, index)?.offset.min(meta.data_end))
    }

    /// Every stored feed, in key order.
    pub fn feeds(&self) -> Result<Vec<FeedState>> {
        let mut out = Vec::new();
        for item in self.inner.feeds.scan_prefix([PREFIX_META]) {
            let (k, v) = item?;
            let feed = key_feed(&k)?;
            let meta = decode_meta(&feed, &v)?;
            if !meta.deleting {
                out.push(meta.state(feed));
            }
        }
        Ok(out)
    }

    /// The record of the batch holding entry `index`.
    fn batch_of(&self, feed: &FeedKey, index: u64) -> Result<BatchRecord> {
        let corrupt = |what: &str| StoreError::Corrupt {
            what: format!("feed {feed} batch record for entry {index} ({what})"),
        };
        let found = self
            .inner
            .feeds
            .range(batch_key(feed, 0)..=batch_key(feed, index))
            .next_back()
            .transpose()?;
        let (_, v) = found.ok_or_else(|| corrupt("missing"))?;
        let record = BatchRecord::decode(&v).ok_or_else(|| corrupt("undecodable"))?;
        if !record.contains(index) {
            return Err(corrupt("missing"));
        }
        Ok(record)
    }

    /// The perfect tree node `id` of `feed`, as stored.
    pub fn node(&self, feed: &FeedKey, id: NodeId) -> Result<Hash> {
        if id.level == 0 {
            return Ok(self.leaf(feed, id.index)?.hash);
        }
        // A node is completed, and so recorded, by the batch holding its last leaf.
        let last = id
            .index
            .checked_add(1)
            .and_then(|n| n.checked_shl(u32::from(id.level)))
            .map(|n| n - 1)
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("feed {feed} node {}/{} (out of range)", id.level, id.index),
            })?;
        self.batch_of(feed, last)?
            .nodes
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, h)| *h)
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("feed {feed} node {}/{} (missing)", id.level, id.index),
            })
    }

    fn leaf(&self, feed: &FeedKey, index: u64) -> Result<Leaf> {
        Ok(self.batch_of(feed, index)?.leaf(index))
    }

    /// The tree's right edge at the stored length: what a batch is verified on top of.
    pub fn frontier(&self, feed: &FeedKey) -> Result<Frontier> {
        let meta = self.meta_required(feed)?;
        Frontier::load(meta.length, |id| self.node(feed, id))
    }

    /// The root of the first `size` stored entries.
    pub fn root_at(&self, feed: &FeedKey, size: u64) -> Result<Hash> {
        self.check_range(feed, size)?;
        feed::root_at(size, |id| self.node(feed, id))
    }

    /// Proof that entry `index` is in the tree of `size` entries.
    pub fn inclusion_proof(&self, feed: &FeedKey, index: u64, size: u64) -> Result<InclusionProof> {
        self.check_range(feed, size)?;
        if index >= size {
            return Err(StoreError::OutOfRange {
                feed: *feed,
                index,
                length: size,
            });
        }
        InclusionProof::build(index, size, |id| self.node(feed, id))
    }

    /// Proof that the tree of `old_size` entries is a prefix of that of `new_size`.
    pub fn consistency_proof(
        &self,
        feed: &FeedKey,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof> {
        self.check_range(feed, new_size)?;
        if old_size > new_size {
            return Err(StoreError::OutOfRange {
                feed: *feed,
                index: old_size,
                length: new_size,
            });
        }
        ConsistencyProof::build(old_size, new_size, |id| self.node(feed, id))
    }

    fn check_range(&self, feed: &FeedKey, size: u64) -> Result<FeedMeta> {
        let meta = self.meta_required(feed)?;
        if size > meta.length {
            return Err(StoreError::OutOfRange {
                feed: *feed,
                index: size,
                length: meta.length,
            });
        }
        Ok(meta)
    }

    /// Append a verified batch; returns the new stored length once it is durable.
    ///
    /// The batch must start at the stored length and have been verified on top of the stored
    /// frontier ([`StoreError::Stale`] otherwise). Its head becomes the stored head if the
    /// batch reaches it, else the pending head.
    pub fn append(&self, batch: VerifiedBatch) -> Result<u64> {
        let feed = batch.feed();
        let lock = self.lock(&feed);
        let _guard = lock.lock().expect("feed lock poisoned");
        let mut meta = self.meta(&feed)?.unwrap_or_else(FeedMeta::new);
        if meta.frozen {
            return Err(StoreError::Frozen(feed));
        }
        if batch.start() != meta.length {
            return Err(StoreError::Stale {
                feed,
                start: batch.start(),
                length: meta.length,
            });
        }
        let frontier = Frontier::load(meta.length, |id| self.node(&feed, id))?;
        if frontier.root() != *batch.base_root() {
            return Err(StoreError::Stale {
                feed,
                start: batch.start(),
                length: meta.length,
            });
        }
        let head = batch.head().signed();

        // 1. bytes at the committed end, durable.
        let path = self.data_path(&feed);
        let mut offset = meta.data_end;
        let mut record = BatchRecord {
            first: batch.start(),
            offset,
            leaves: Vec::with_capacity(batch.entries().len()),
            nodes: Vec::with_capacity(batch.entries().len()),
        };
        let mut leaf_hashes = batch.nodes().iter().filter(|(id, _)| id.level == 0);
        if !batch.entries().is_empty() {
            let file = self.open_for_append(&path)?;
            let written = (|| {
                for entry in batch.entries() {
                    debug_assert!(entry.len() <= MAX_ENTRY_LEN);
                    file.write_all_at(entry, offset)
                        .map_err(io_err("write", &path))?;
                    let (_, hash) = leaf_hashes
                        .next()
                        .expect("a verified batch has one leaf node per entry");
                    record.leaves.push((
                        *hash,
                        u32::try_from(entry.len())
                            .expect("entries are at most MAX_ENTRY_LEN bytes"),
                    ));
                    offset += entry.len() as u64;
                }
                file.sync_data().map_err(io_err("sync", &path))
            })();
            if let Err(e) = written {
                // A full disk mid-batch: give back what was written past the committed end now,
                // not at the next open.
                if let Err(t) = file.set_len(meta.data_end) {
                    tracing::warn!(%feed, error = %t, "cannot trim a failed append");
                }
                return Err(e);
            }
        }
        record
            .nodes
            .extend(batch.nodes().iter().filter(|(id, _)| id.level > 0).copied());

        // 2. one atomic index batch, flushed.
        let mut b = sled::Batch::default();
        if !record.leaves.is_empty() {
            b.insert(&batch_key(&feed, record.first)[..], record.encode());
        }
        meta.length = batch.end();
        meta.data_end = offset;
        // The batch's head is the authority: the batch proves the whole stored prefix is a
        // prefix of it. It can't be older than the stored complete head (its length is at least
        // the new length). A longer pending head it replaces is only a hint: peers announce it
        // again.
        if batch.completes_head() {
            meta.head = Some(head.clone());
            meta.pending = None;
            meta.pending_proof = None;
        } else {
            meta.pending = Some(head.clone());
            meta.pending_proof = batch.tail_proof().cloned();
        }
        b.insert(&meta_key(&feed)[..], encode_meta(&meta));
        self.inner.feeds.apply_batch(b)?;
        self.commit()?;
        self.changed(&feed, Some(&meta));
        Ok(meta.length)
    }

    fn open_for_append(&self, path: &Path) -> Result<File> {
        match OpenOptions::new().write(true).open(path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = path.parent().expect("data paths have a parent folder");
                let fresh_dir = !parent.exists();
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(io_err("create", path))?;
                // The new file's name must be durable before any index entry points into it.
                sync_dir(parent)?;
                if fresh_dir {
                    if let Some(grand) = parent.parent() {
                        sync_dir(grand)?;
                    }
                }
                Ok(f)
            }
            Err(e) => Err(io_err("open", path)(e)),
        }
    }

    /// Entry `index` of `feed`, checked against its stored hash.
    pub fn read(&self, feed: &FeedKey, index: u64) -> Result<Vec<u8>> {
        let meta = self.meta_required(feed)?;
        if index >= meta.length {
            return Err(StoreError::OutOfRange {
                feed: *feed,
                index,
                length: meta.length,
            });
        }
        let path = self.data_path(feed);
        let file = self.open_for_read(feed, &path)?;
        self.read_leaf(feed, &file, index)
    }

    fn open_for_read(&self, feed: &FeedKey, path: &Path) -> Result<File> {
        match File::open(path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Only asked for feeds with entries: their bytes are gone.
                let committed = self.meta(feed)?.map_or(0, |m| m.data_end);
                tracing::error!(%feed, "data file is missing");
                if let Err(e) = self.record_lost_tail(feed, 0, committed) {
                    tracing::error!(%feed, error = %e, "could not record damage");
                }
                Err(StoreError::Integrity {
                    feed: *feed,
                    index: 0,
                    reason: "data file is missing",
                })
            }
            Err(e) => Err(io_err("open", path)(e)),
        }
    }

    fn read_leaf(&self, feed: &FeedKey, file: &File, index: u64) -> Result<Vec<u8>> {
        let leaf = self.leaf(feed, index)?;
        self.read_at(feed, file, index, leaf)
    }

    fn read_at(&self, feed: &FeedKey, file: &File, index: u64, leaf: Leaf) -> Result<Vec<u8>> {
        let len = leaf.len as usize;
        let mut buf = Vec::with_capacity(len);
        // Read into the spare capacity: the bytes are not zeroed first only to be overwritten
        // (on a transfer's path that is a pass over every byte sent).
        while buf.len() < len {
            let at = leaf.offset + buf.len() as u64;
            match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => {
                    return Err(self.damaged(*feed, index, "data file ends before the entry"));
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io_err("read", &self.data_path(feed))(e.into())),
            }
        }
        // The capacity may be larger than asked: anything read past the entry is not its.
        buf.truncate(len);
        if feed::leaf_hash(&buf) != leaf.hash {
            return Err(self.damaged(*feed, index, "bytes do not match the stored hash"));
        }
        Ok(buf)
    }

    fn damaged(&self, feed: FeedKey, index: u64, reason: &'static str) -> StoreError {
        tracing::error!(%feed, index, reason, "damaged entry");
        if let Err(e) = self.record_damage(Damage {
            feed,
            kind: DamageKind::BadEntry { index },
        }) {
            tracing::error!(%feed, error = %e, "could not record damage");
        }
        StoreError::Integrity {
            feed,
            index,
            reason,
        }
    }

    /// Entries `[start, end)` of `feed`, checked, stopping early once [`MAX_RANGE_BYTES`] are
    /// read (always at least one entry). Returns fewer entries than asked at the bound.
    pub fn read_range(&self, feed: &FeedKey, start: u64, end: u64) -> Result<Vec<Vec<u8>>> {
        self.read_range_bounded(feed, start, end, MAX_RANGE_BYTES)
    }

    /// Like [`Store::read_range`] with a smaller byte bound (at least one entry is read).
    pub fn read_range_bounded(
        &self,
        feed: &FeedKey,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let max_bytes = max_bytes.min(MAX_RANGE_BYTES);
        let meta = self.meta_required(feed)?;
        if end > meta.length || start > end {
            return Err(StoreError::OutOfRange {
                feed: *feed,
                index: end,
                length: meta.length,
            });
        }
        if start == end {
            // Nothing to read: a feed registered but still empty has no data file yet.
            return Ok(Vec::new());
        }
        let path = self.data_path(feed);
        let file = self.open_for_read(feed, &path)?;
        let mut reader = FeedReader {
            store: self,
            feed: *feed,
            file: Some(file),
            length: meta.length,
            record: None,
        };
        // Stop once `max_bytes` are read: the result is under `max_bytes` plus one entry.
        let mut out = Vec::new();
        let mut total = 0usize;
        for index in start..end {
            if total >= max_bytes {
                break;
            }
            let entry = reader.read(index)?;
            total += entry.len();
            out.push(entry);
        }
        Ok(out)
    }

    /// A reader that keeps the data file open, for reading many entries in a row.
    pub fn reader(&self, feed: &FeedKey) -> Result<FeedReader<'_>> {
        let meta = self.meta_required(feed)?;
        // An empty feed has no data file yet; there is nothing to read anyway.
        let file = if meta.length == 0 {
            None
        } else {
            Some(self.open_for_read(feed, &self.data_path(feed))?)
        };
        Ok(FeedReader {
            store: self,
            feed: *feed,
            file,
            length: meta.length,
            record: None,
        })
    }

    /// Whether `theirs`, a validly signed head no longer than our complete head, contradicts
    /// the tree stored here: the writer signed two histories. `None` when it agrees, or when it
    /// is longer than what is stored complete here (only its data can tell then).
    pub fn contradiction(&self, theirs: &feed::VerifiedHead) -> Result<Option<ForkEvidence>> {
        let feed = theirs.feed();
        let Some(ours) = self.meta(&feed)?.and_then(|m| m.head) else {
            return Ok(None);
        };
        if theirs.length() > ours.length {
            return Ok(None);
        }
        let root = self.root_at(&feed, theirs.length())?;
        if &root == theirs.root() {
            return Ok(None);
        }
        Ok(Some(ForkEvidence {
            older: theirs.signed().clone(),
            newer: ours.clone(),
            newer_prefix_root: root,
            proof: self.consistency_proof(&feed, theirs.length(), ours.length)?,
        }))
    }

    /// Whether `feed` is frozen by a recorded fork.
    pub fn fork_of(&self, feed: &FeedKey) -> Result<Option<ForkEvidence>> {
        match self.inner.forks.get(feed.0)? {
            None => Ok(None),
            Some(v) => Ok(Some(postcard::from_bytes(&v).map_err(|_| {
                StoreError::Corrupt {
                    what: "fork evidence".into(),
                }
            })?)),
        }
    }

    /// Keep proof that `feed`'s writer forked, and freeze the feed.
    pub fn record_fork(&self, evidence: ForkEvidence) -> Result<()> {
        evidence.verify()?;
        let feed = evidence.older.feed;
        let lock = self.lock(&feed);
        let _guard = lock.lock().expect("feed lock poisoned");
        let bytes = postcard::to_allocvec(&evidence).map_err(|_| StoreError::Corrupt {
            what: "fork evidence (encoding)".into(),
        })?;
        self.inner.forks.insert(&feed.0[..], bytes)?;
        let frozen = match self.meta(&feed)? {
            Some(mut meta) => {
                meta.frozen = true;
                self.inner
                    .feeds
                    .insert(meta_key(&feed), encode_meta(&meta))?;
                Some(meta)
            }
            None => None,
        };
        self.commit()?;
        if let Some(meta) = &frozen {
            self.changed(&feed, Some(meta));
        }
        tracing::warn!(%feed, "writer forked; feed frozen");
        Ok(())
    }

    /// Every fork on record.
    pub fn forks(&self) -> Result<Vec<ForkEvidence>> {
        decode_all(&self.inner.forks, "fork evidence")
    }

    fn record_damage(&self, damage: Damage) -> Result<()> {
        let mut key = damage.feed.0.to_vec();
        match damage.kind {
            DamageKind::Truncated { .. } => key.push(0),
            DamageKind::BadEntry { index } => {
                key.push(1);
                key.extend_from_slice(&index.to_be_bytes());
            }
        }
        let bytes = postcard::to_allocvec(&damage).map_err(|_| StoreError::Corrupt {
            what: "damage record (encoding)".into(),
        })?;
        self.inner.damage.insert(key, bytes)?;
        self.commit()?;
        Ok(())
    }

    /// Every damaged feed and entry found so far, for the admin page.
    pub fn damage(&self) -> Result<Vec<Damage>> {
        decode_all(&self.inner.damage, "damage record")
    }

    /// Damaged entries of `feed` on record, in order (at most [`MAX_DAMAGED_LISTED`]).
    pub fn damaged_entries(&self, feed: &FeedKey) -> Result<Vec<u64>> {
        let mut prefix = feed.0.to_vec();
        prefix.push(1);
        let mut out = Vec::new();
        for item in self
            .inner
            .damage
            .scan_prefix(prefix)
            .take(MAX_DAMAGED_LISTED)
        {
            let (k, _) = item?;
            let index = k
                .get(33..41)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("damage record {}", hex::encode(&k)),
                })?;
            out.push(index);
        }
        Ok(out)
    }

    /// What can be served of `feed` (see [`ServeTarget`]), or `None` if nothing can.
    pub fn serve_target(&self, feed: &FeedKey) -> Result<Option<ServeTarget>> {
        let Some(meta) = self.meta(feed)? else {
            return Ok(None);
        };
        let complete = meta.head.as_ref().map_or(0, |h| h.length);
        if let (Some(pending), Some(proof)) = (&meta.pending, &meta.pending_proof) {
            if meta.length > complete
                && proof.old_size == meta.length
                && proof.new_size == pending.length
            {
                let root = self.root_at(feed, meta.length)?;
                return Ok(Some(ServeTarget {
                    length: meta.length,
                    head: pending.clone(),
                    prefix: Some(PrefixHead {
                        head: pending.clone(),
                        length: meta.length,
                        root,
                        proof: proof.clone(),
                    }),
                }));
            }
        }
        Ok(meta.head.map(|head| ServeTarget {
            length: head.length,
            head,
            prefix: None,
        }))
    }

    /// Rewrite damaged entry `index` of `feed` with `bytes`, a copy from `peer`, if they hash
    /// to the entry's stored leaf (the tree was verified when the entry first came: the copy
    /// needs no signature). Returns whether it was repaired; durable when this returns.
    pub fn repair(
        &self,
        feed: &FeedKey,
        index: u64,
        bytes: &[u8],
        peer: [u8; 32],
        at: u64,
    ) -> Result<bool> {
        let lock = self.lock(feed);
        let _guard = lock.lock().expect("feed lock poisoned");
        let meta = self.meta_required(feed)?;
        if index >= meta.length {
            return Ok(false);
        }
        let leaf = self.leaf(feed, index)?;
        if feed::leaf_hash(bytes) != leaf.hash || bytes.len() != leaf.len as usize {
            return Ok(false);
        }
        let path = self.data_path(feed);
        let file = self.open_for_append(&path)?;
        file.write_all_at(bytes, leaf.offset)
            .map_err(io_err("write", &path))?;
        file.sync_data().map_err(io_err("sync", &path))?;
        let mut key = feed.0.to_vec();
        key.push(1);
        key.extend_from_slice(&index.to_be_bytes());
        self.inner.damage.remove(key)?;
        let mut rest = feed.0.to_vec();
        rest.push(1);
        let file_len = file.metadata().map_err(io_err("inspect", &path))?.len();
        if file_len >= meta.data_end && self.inner.damage.scan_prefix(rest).next().is_none() {
            let mut truncated = feed.0.to_vec();
            truncated.push(0);
            self.inner.damage.remove(truncated)?;
        }
        let mut rkey = feed.0.to_vec();
        rkey.extend_from_slice(&index.to_be_bytes());
        let record = Repair {
            feed: *feed,
            index,
            peer,
            at,
        };
        let encoded = postcard::to_allocvec(&record).map_err(|_| StoreError::Corrupt {
            what: "repair record (encoding)".into(),
        })?;
        self.inner.repairs.insert(rkey, encoded)?;
        self.commit()?;
        tracing::info!(%feed, index, peer = %hex::encode(&peer[..4]), "damaged entry repaired");
        Ok(true)
    }

    /// Every repair on record, in feed and entry order.
    pub fn repairs(&self) -> Result<Vec<Repair>> {
        decode_all(&self.inner.repairs, "repair record")
    }

    /// Entries `[start, end)` of `feed` that read back good, stopping at `max_bytes` or
    /// `max_entries` (at least one entry), or before the first damaged entry, whose index is
    /// returned with them.
    pub fn read_range_good(
        &self,
        feed: &FeedKey,
        start: u64,
        end: u64,
        max_bytes: usize,
        max_entries: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<u64>)> {
        let max_bytes = max_bytes.min(MAX_RANGE_BYTES);
        let mut reader = self.reader(feed)?;
        if end > reader.len() || start > end {
            return Err(StoreError::OutOfRange {
                feed: *feed,
                index: end,
                length: reader.len(),
            });
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        for index in start..end {
            if total >= max_bytes || out.len() >= max_entries.max(1) {
                break;
            }
            match reader.read(index) {
                Ok(entry) => {
                    total += entry.len();
                    out.push(entry);
                }
                Err(StoreError::Integrity { .. }) => return Ok((out, Some(index))),
                Err(e) => return Err(e),
            }
        }
        Ok((out, None))
    }

    /// Read and check every entry of `feed`; returns the damage found (also recorded).
    pub fn scrub(&self, feed: &FeedKey) -> Result<Vec<Damage>> {
        let mut found = Vec::new();
        let mut reader = self.reader(feed)?;
        for index in 0..reader.len() {
            match reader.read(index) {
                Ok(_) => {}
                Err(StoreError::Integrity { .. }) => found.push(Damage {
                    feed: *feed,
                    kind: DamageKind::BadEntry { index },
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// Delete `feed`: its data file is removed (the disk space really freed) and its index
    /// entries with it. Atomic for readers: the feed disappears in one step; a crash part-way
    /// is finished by the next [`Store::open`].
    pub fn delete_feed(&self, feed: &FeedKey) -> Result<()> {
        let lock = self.lock(feed);
        let _guard = lock.lock().expect("feed lock poisoned");
        let Some(mut meta) = self.meta(feed)? else {
            return Ok(());
        };
        meta.deleting = true;
        self.inner
            .feeds
            .insert(meta_key(feed), encode_meta(&meta))?;
        self.commit()?;
        // Gone for readers from here on (see `meta`), so gone for the totals too.
        self.changed(feed, None);
        self.finish_delete(feed)?;
        self.keep_reserve();
        Ok(())
    }

    fn finish_delete(&self, feed: &FeedKey) -> Result<()> {
        let path = self.data_path(feed);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    sync_dir(parent)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        // Bounded batches: a feed may have millions of records.
        loop {
            let mut b = sled::Batch::default();
            let mut n = 0;
            for item in self
                .inner
                .feeds
                .scan_prefix(feed_prefix(PREFIX_BATCH, feed))
                .take(4096)
            {
                let (k, _) = item?;
                b.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.inner.feeds.apply_batch(b)?;
        }
        let mut b = sled::Batch::default();
        b.remove(&meta_key(feed)[..]);
        self.inner.feeds.apply_batch(b)?;
        let mut damage_keys = Vec::new();
        for item in self.inner.damage.scan_prefix(feed.0) {
            damage_keys.push(item?.0);
        }
        for k in damage_keys {
            self.inner.damage.remove(k)?;
        }
        self.commit()?;
        Ok(())
    }
}

/// Reads entries of one feed with one open file.
pub struct FeedReader<'a> {
    store: &'a Store,
    feed: FeedKey,
    /// `None` for a feed with no entries.
    file: Option<File>,
    length: u64,
    /// The last batch record read: entries are mostly read in order.
    record: Option<BatchRecord>,
}

impl FeedReader<'_> {
    /// Stored length when the reader was made.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether the feed had no entries.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Entry `index`, checked against its hash.
    pub fn read(&mut self, index: u64) -> Result<Vec<u8>> {
        let file = match &self.file {
            Some(f) if index < self.length => f,
            _ => {
                return Err(StoreError::OutOfRange {
                    feed: self.feed,
                    index,
                    length: self.length,
                })
            }
        };
        let record = match self.record.take() {
            Some(r) if r.contains(index) => r,
            _ => self.store.batch_of(&self.feed, index)?,
        };
        let leaf = record.leaf(index);
        self.record = Some(record);
        self.store.read_at(&self.feed, file, index, leaf)
    }
}

/// A named table of the index beside the feeds' own: byte keys in order, byte values. Writes
/// are atomic one by one (or per [`TableBatch`]) and durable at the next [`Store::commit`].
#[derive(Clone)]
pub struct Table {
    tree: sled::Tree,
}

/// Writes applied to one [`Table`] atomically.
#[derive(Default)]
pub struct TableBatch {
    batch: sled::Batch,
}

impl TableBatch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.batch.insert(key.as_ref(), value.as_ref());
    }
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.batch.remove(key.as_ref());
    }
}

/// One record of a [`Table`], as read.
pub type TableItem = Result<(Vec<u8>, Vec<u8>)>;

impl Table {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key.as_ref())?.map(|v| v.to_vec()))
    }
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.tree.contains_key(key.as_ref())?)
    }
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.tree.insert(key.as_ref(), value.as_ref())?;
        Ok(())
    }
    /// Replace an existing record with what `change` makes of it, atomically (a record
    /// removed meanwhile stays removed; `change` may run more than once). Whether it changed.
    pub fn update_existing(
        &self,
        key: impl AsRef<[u8]>,
        mut change: impl FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<bool> {
        let mut changed = false;
        self.tree.update_and_fetch(key.as_ref(), |old| {
            let old = old?;
            match change(old) {
                Some(new) => {
                    changed = true;
                    Some(new)
                }
                None => {
                    changed = false;
                    Some(old.to_vec())
                }
            }
        })?;
        Ok(changed)
    }
    /// Remove a record; whether there was one.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.tree.remove(key.as_ref())?.is_some())
    }
    /// The record with the greatest key.
    pub fn last(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.tree.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
    pub fn apply(&self, batch: TableBatch) -> Result<()> {
        self.tree.apply_batch(batch.batch)?;
        Ok(())
    }
    /// Every record whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> impl Iterator<Item = TableItem> {
        self.tree.scan_prefix(prefix.as_ref()).map(table_item)
    }
    /// Every record, in key order.
    pub fn iter(&self) -> impl Iterator<Item = TableItem> {
        self.tree.iter().map(table_item)
    }
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

fn table_item(item: sled::Result<(sled::IVec, sled::IVec)>) -> TableItem {
    let (k, v) = item?;
    Ok((k.to_vec(), v.to_vec()))
}

/// Every record of a tree of postcard values, in key order.
fn decode_all<T: for<'de> Deserialize<'de>>(tree: &sled::Tree, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (_, v) = item?;
        out.push(postcard::from_bytes(&v).map_err(|_| StoreError::Corrupt {
            what: what.to_string(),
        })?);
    }
    Ok(out)
}

fn key_feed(k: &[u8]) -> Result<FeedKey> {
    k.get(1..33)
        .and_then(|b| b.try_into().ok())
        .map(FeedKey)
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("key {}", hex::encode(k)),
        })
}

fn encode_meta(meta: &FeedMeta) -> Vec<u8> {
    postcard::to_allocvec(meta).expect("feed metadata always encodes")
}

fn decode_meta(feed: &FeedKey, bytes: &[u8]) -> Result<FeedMeta> {
    let corrupt = || StoreError::Corrupt {
        what: format!("feed {feed} metadata"),
    };
    if bytes.first() == Some(&1) {
        let (old, rest): (FeedMetaV1, _) =
            postcard::take_from_bytes(bytes).map_err(|_| corrupt())?;
        if !rest.is_empty() || old.version != 1 {
            return Err(corrupt());
        }
        return Ok(FeedMeta {
            version: META_VERSION,
            length: old.length,
            data_end: old.data_end,
            head: old.head,
            pending: old.pending,
            frozen: old.frozen,
            deleting: old.deleting,
            pending_proof: None,
        });
    }
    let (meta, rest): (FeedMeta, _) = postcard::take_from_bytes(bytes).map_err(|_| corrupt())?;
    if !rest.is_empty() || meta.version != META_VERSION {
        return Err(corrupt());
    }
    Ok(meta)
}

#[cfg(test)]
mod tests;
