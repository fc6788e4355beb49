/*!
Bundles: every feed of a space in one file, for offline exchange between devices and for
pre-loading a seeder from a USB disk. A bundle holds no key: entries stay encrypted, and each
feed comes with its membership certificate, its signed head and the consistency proofs that
let the importer check every batch before it is stored.

Format, version 1:
```text
magic    "SEEDER-BUNDLE\n" then version byte 1
frames   u32 LE length + postcard(Frame), each at most MAX_FRAME_LEN bytes:
         Header { address, feeds } · Members { records } (governed spaces only) · per feed:
         Feed { cert, head } then Entries { start, entries, proof }… · End
trailer  BLAKE3 of every byte before it (32 bytes)
```
A governed space's bundle carries its membership records right after the header, so the
importer judges each feed by the log (with the records it already holds); a feed the log
does not admit (a reader's, a stranger's) is checked and left out, a bad certificate refuses
the bundle, and a batch that reaches past a removed device's freeze point is not stored (all
of it: a batch is only stored whole).

Importing reads the file twice: first everything is checked (trailer, certificates, heads,
every batch against its head, feeds complete) with nothing written; only then are the feeds
merged, batch by batch, each batch durable on its own. So a tampered bundle imports nothing,
and an import killed part-way leaves a consistent home that a second import completes.
*/

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::feed::{verify_batch, ConsistencyProof, FeedKey, Frontier, SignedHead};
use crate::space::members::{Admission, Membership, Record, VerifiedRecord, MAX_RECORDS};
use crate::space::{Address, MembershipCert};
use crate::store::file::AtomicFile;
use crate::store::{Store, StoreError};

const MAGIC: &[u8] = b"SEEDER-BUNDLE\n\x01";

/// Largest frame: one read of at most `store::MAX_RANGE_BYTES` plus one maximal entry, a
/// proof and framing. Checked before allocating, so a hostile length can't exhaust memory.
pub const MAX_FRAME_LEN: usize =
    crate::store::MAX_RANGE_BYTES + crate::feed::MAX_ENTRY_LEN + 64 * 1024;

/// Most feeds a bundle may carry: far more than a small organisation's devices.
pub const MAX_BUNDLE_FEEDS: u32 = 10_000;

#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    Header {
        address: Address,
        feeds: u32,
    },
    Feed {
        cert: MembershipCert,
        head: SignedHead,
    },
    Entries {
        start: u64,
        entries: Vec<Vec<u8>>,
        proof: Option<ConsistencyProof>,
    },
    End,
    /// The membership records of a governed space (after the header, before any feed).
    Members {
        records: Vec<Record>,
    },
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a seeder bundle (or a newer bundle version than this seeder reads)")]
    NotABundle,
    #[error("the bundle is damaged or was altered: {0}")]
    Tampered(String),
    #[error("the bundle is for space {0}, which this device has not joined")]
    OtherSpace(Address),
    #[error("feed {feed} in the bundle disagrees with the copy here: its writer forked")]
    Fork { feed: FeedKey },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This device's home could not be read (not the bundle's fault).
    #[error("this device's home: {0}")]
    Home(String),
}

type Result<T, E = BundleError> = std::result::Result<T, E>;

fn tampered(what: impl Into<String>) -> BundleError {
    BundleError::Tampered(what.into())
}

/// What an import or export did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleSummary {
    pub feeds: usize,
    pub entries: u64,
    pub bytes: u64,
    /// Feeds the space's membership log does not admit: checked, not imported.
    pub left_out: usize,
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashingWriter<W> {
    fn frame(&mut self, frame: &Frame) -> std::io::Result<()> {
        let body = postcard::to_allocvec(frame).map_err(std::io::Error::other)?;
        let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
        self.write(&len.to_le_bytes())?;
        self.write(&body)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)
    }
}

/// Write every complete feed of `address` held in `store`, with the given certificates, to
/// `path` (through a temporary file renamed into place, so a crash leaves no half bundle).
pub fn export(
    store: &Store,
    address: &Address,
    certs: &[MembershipCert],
    records: &[Record],
    path: &Path,
) -> Result<BundleSummary> {
    let io = |what| {
        move |source| BundleError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut out = AtomicFile::create(path, 0o600).map_err(io("cannot create"))?;
    let summary = write_bundle(&mut out, store, certs, records, address, &io)?;
    out.commit().map_err(io("cannot write"))?;
    Ok(summary)
}

fn write_bundle<F: Fn(&'static str) -> G, G: FnOnce(std::io::Error) -> BundleError>(
    out: &mut AtomicFile,
    store: &Store,
    certs: &[MembershipCert],
    records: &[Record],
    address: &Address,
    io: &F,
) -> Result<BundleSummary> {
    let mut w = HashingWriter {
        inner: BufWriter::new(out.file()),
        hasher: blake3::Hasher::new(),
    };
    w.inner.write_all(MAGIC).map_err(io("cannot write"))?;
    w.hasher.update(MAGIC);
    let mut feeds = Vec::new();
    for cert in certs {
        if let Some(head) = store.feed(&cert.feed)?.and_then(|s| s.head) {
            feeds.push((cert.clone(), head));
        }
    }
    let mut summary = BundleSummary {
        feeds: feeds.len(),
        ..Default::default()
    };
    w.frame(&Frame::Header {
        address: *address,
        feeds: u32::try_from(feeds.len()).map_err(|_| tampered("too many feeds"))?,
    })
    .map_err(io("cannot write"))?;
    if !records.is_empty() {
        w.frame(&Frame::Members {
            records: records.to_vec(),
        })
        .map_err(io("cannot write"))?;
    }
    for (cert, head) in feeds {
        let feed = cert.feed;
        let length = head.length;
        w.frame(&Frame::Feed { cert, head })
            .map_err(io("cannot write"))?;
        let mut start = 0;
        while start < length {
            let entries = store.read_range(&feed, start, length)?;
            let end = start + entries.len() as u64;
            let proof = if end < length {
                Some(store.consistency_proof(&feed, end, length)?)
            } else {
                None
            };
            summary.entries += entries.len() as u64;
            summary.bytes += entries.iter().map(|e| e.len() as u64).sum::<u64>();
            w.frame(&Frame::Entries {
                start,
                entries,
                proof,
            })
            .map_err(io("cannot write"))?;
            start = end;
        }
    }
    w.frame(&Frame::End).map_err(io("cannot write"))?;
    let digest = *w.hasher.finalize().as_bytes();
    w.inner.write_all(&digest).map_err(io("cannot write"))?;
    w.inner
        .into_inner()
        .map_err(|e| io("cannot write")(e.into_error()))?;
    Ok(summary)
}

/// Reads frames, hashing everything for the trailer check.
struct FrameReader<R: Read> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> FrameReader<R> {
    fn open(path: &Path) -> Result<FrameReader<BufReader<File>>> {
        let file = File::open(path).map_err(|source| BundleError::Io {
            what: "cannot open",
            path: path.to_path_buf(),
            source,
        })?;
        let mut r = FrameReader {
            inner: BufReader::new(file),
            hasher: blake3::Hasher::new(),
        };
        let mut magic = [0u8; MAGIC.len()];
        r.inner
            .read_exact(&mut magic)
            .map_err(|_| BundleError::NotABundle)?;
        if magic != MAGIC {
            return Err(BundleError::NotABundle);
        }
        r.hasher.update(&magic);
        Ok(r)
    }

    fn next(&mut self) -> Result<Frame> {
        let mut len = [0u8; 4];
        self.inner
            .read_exact(&mut len)
            .map_err(|_| tampered("it ends early"))?;
        self.hasher.update(&len);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME_LEN {
            return Err(tampered(format!(
                "a frame of {len} bytes is over the limit"
            )));
        }
        let mut body = vec![0u8; len];
        self.inner
            .read_exact(&mut body)
            .map_err(|_| tampered("it ends early"))?;
        self.hasher.update(&body);
        let (frame, rest) =
            postcard::take_from_bytes(&body).map_err(|_| tampered("a frame does not decode"))?;
        if !rest.is_empty() {
            return Err(tampered("a frame has trailing bytes"));
        }
        Ok(frame)
    }

    /// After `End`: the trailer must match and nothing may follow.
    fn finish(mut self) -> Result<()> {
        let mut digest = [0u8; 32];
        self.inner
            .read_exact(&mut digest)
            .map_err(|_| tampered("its checksum is missing"))?;
        if digest != *self.hasher.finalize().as_bytes() {
            return Err(tampered("its checksum does not match"));
        }
        let mut extra = [0u8; 1];
        match self.inner.read(&mut extra) {
            Ok(0) => Ok(()),
            _ => Err(tampered("bytes follow its end")),
        }
    }
}

/// The space a bundle belongs to (read from its header, not yet verified).
pub fn peek_address(path: &Path) -> Result<Address> {
    let mut r = FrameReader::<BufReader<File>>::open(path)?;
    match r.next()? {
        Frame::Header { address, .. } => Ok(address),
        _ => Err(tampered("it has no header")),
    }
}

/// One pass over the bundle; `sink` gets every feed and each verified batch. With a sink that
/// stores nothing, this is the check pass.
fn walk(
    path: &Path,
    expect: &Address,
    known: &[VerifiedRecord],
    sink: &mut dyn FnMut(Item<'_>) -> Result<()>,
) -> Result<BundleSummary> {
    let mut r = FrameReader::<BufReader<File>>::open(path)?;
    let (address, feeds) = match r.next()? {
        Frame::Header { address, feeds } => (address, feeds),
        _ => return Err(tampered("it has no header")),
    };
    if &address != expect {
        return Err(BundleError::OtherSpace(address));
    }
    if feeds > MAX_BUNDLE_FEEDS {
        return Err(tampered(format!("it claims {feeds} feeds")));
    }
    let mut summary = BundleSummary::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut next = r.next()?;
    let mut all: Vec<VerifiedRecord> = known.to_vec();
    if let Frame::Members { records } = next {
        if records.len() > MAX_RECORDS {
            return Err(tampered("too many membership records"));
        }
        let mut verified = Vec::with_capacity(records.len());
        for rec in records {
            verified.push(
                rec.verify(&address)
                    .map_err(|e| tampered(format!("a membership record: {e}")))?,
            );
        }
        for v in &verified {
            if !all.iter().any(|a| a.id() == v.id()) {
                all.push(v.clone());
            }
        }
        sink(Item::Records(verified))?;
        next = r.next()?;
    }
    let membership = (!all.is_empty()).then(|| Membership::compute(&all));
    for i in 0..feeds {
        if i > 0 {
            next = r.next()?;
        }
        let (cert, head) = match next {
            Frame::Feed { cert, head } => (cert, head),
            _ => return Err(tampered("a feed section is missing")),
        };
        next = Frame::End;
        // A feed the membership log does not admit (a reader's, a stranger's) is checked
        // like any other and then left out; a bad certificate refuses the bundle.
        let admitted = match cert.clone().verify_in(&address, membership.as_ref()) {
            Ok(_) => true,
            Err(crate::space::SpaceError::NotAMember { .. }) => false,
            Err(e) => return Err(tampered(format!("a membership certificate: {e}"))),
        };
        let limit = match membership.as_ref().map(|m| m.admits(&cert.feed)) {
            Some(Admission::Upto(limit)) => limit,
            _ => None,
        };
        if head.feed != cert.feed || !seen.insert(cert.feed) {
            return Err(tampered("a feed's head and certificate do not match"));
        }
        let verified = head
            .clone()
            .verify()
            .map_err(|e| tampered(format!("a head: {e}")))?;
        if admitted {
            sink(Item::Feed(&cert, &head))?;
            summary.feeds += 1;
        } else {
            summary.left_out += 1;
        }
        let mut frontier = Frontier::new();
        while frontier.len() < verified.length() {
            let (start, entries, proof) = match r.next()? {
                Frame::Entries {
                    start,
                    entries,
                    proof,
                } => (start, entries, proof),
                _ => return Err(tampered("a feed's entries are incomplete")),
            };
            if start != frontier.len() || entries.is_empty() {
                return Err(tampered("a feed's entries are out of order"));
            }
            let count = entries.len() as u64;
            let bytes: u64 = entries.iter().map(|e| e.len() as u64).sum();
            let batch = verify_batch(&frontier, verified.clone(), entries, proof.as_ref())
                .map_err(|e| tampered(format!("feed {}: {e}", cert.feed)))?;
            for (id, hash) in batch.nodes() {
                if id.level == 0 {
                    frontier.push(*hash, |_, _| {});
                }
            }
            // Past a removed device's freeze point: checked, not stored.
            if admitted && limit.is_none_or(|l| batch.end() <= l) {
                sink(Item::Batch(&cert.feed, Box::new(batch), proof.as_ref()))?;
            }
            summary.entries += count;
            summary.bytes += bytes;
        }
    }
    if feeds > 0 {
        next = r.next()?;
    }
    match next {
        Frame::End => {}
        _ => return Err(tampered("it has more feeds than its header says")),
    }
    r.finish()?;
    Ok(summary)
}

enum Item<'a> {
    Records(Vec<VerifiedRecord>),
    Feed(&'a MembershipCert, &'a SignedHead),
    Batch(
        &'a FeedKey,
        Box<crate::feed::VerifiedBatch>,
        Option<&'a ConsistencyProof>,
    ),
}

/// What an import does with what it found, besides storing entries.
pub struct Registrar<'a> {
    /// The membership records already held here of the space.
    pub known: Vec<VerifiedRecord>,
    /// Called with the bundle's membership records before any feed.
    pub records: &'a mut dyn FnMut(Vec<VerifiedRecord>) -> Result<()>,
    /// Called for each feed's certificate before its entries are stored.
    pub feed: &'a mut dyn FnMut(&MembershipCert) -> Result<()>,
}

/// Check the whole bundle, then merge it into `store`. Entries the store already has are
/// skipped.
pub fn import(
    store: &Store,
    address: &Address,
    path: &Path,
    reg: Registrar<'_>,
) -> Result<BundleSummary> {
    let Registrar {
        known,
        records: add_records,
        feed: register,
    } = reg;
    // Pass 1: check everything, store nothing.
    let summary = walk(path, address, &known, &mut |_| Ok(()))?;
    // Pass 2: merge.
    let mut current: Option<SignedHead> = None;
    walk(path, address, &known, &mut |item| match item {
        Item::Records(records) => add_records(records),
        Item::Feed(cert, head) => {
            register(cert)?;
            current = Some(head.clone());
            Ok(())
        }
        Item::Batch(feed, batch, proof) => {
            let head = current
                .clone()
                .expect("a batch follows its feed section")
                .verify()
                .map_err(|e| tampered(e.to_string()))?;
            let state = store.feed(feed)?.ok_or(StoreError::UnknownFeed(*feed))?;
            if state.frozen || batch.end() <= state.length {
                return Ok(());
            }
            let skip = state.length.saturating_sub(batch.start()) as usize;
            // Shared byte strings: the entries are not copied again.
            let entries = batch.entries()[skip..].to_vec();
            let frontier = store.frontier(feed)?;
            let ours = verify_batch(&frontier, head, entries, proof)
                .map_err(|_| BundleError::Fork { feed: *feed })?;
            store.append(ours)?;
            Ok(())
        }
    })?;
    Ok(summary)
}
