/*!
What the sync state machine may ask of this node ([`crate::sync::Local`]): for a seeder
([`SeederLocal`]) from the store and the registry; for a member device ([`HomeLocal`]) from
its home, for the one space it syncs. The spaces held, their feeds with certificates and
complete heads, the membership records of governed spaces and the membership they make (kept
in memory, computed again only when records are added), and whether a space may take more
data.

Room ([`Local::room`]), asked before every `Want` and again before every batch is stored (so
one transfer can't overrun a limit): a space's quota, every agreement covering it, and the
data disk's free share, which must stay above [`StoreLimits::keep_free_percent`] after the
batch. A refusal goes to the peer with its reason. Serving never stops. Answers are synchronous sled reads (in memory for a warm cache); the driver calls
these from its blocking pool.
*/

use crate::feed::FeedKey;
use crate::net::driver::{Node, Reservation};
use crate::net::NodeId;
use crate::space::{Address, DiscoveryKey, MembershipCert};
use crate::store::Store;
use crate::sync::Local;
use crate::wire::{FeedOffer, Refusal};

use super::registry::Registry;

/// Limits that apply to all spaces.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// Stop taking new data when less than this share of the data disk is free. Default 5:
    /// room for the index, logs and the file system's own needs.
    pub keep_free_percent: u8,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            keep_free_percent: 5,
        }
    }
}

/// What this node offers of a member feed: its complete head, and how far it holds more of
/// a longer head it can serve as that head's prefix.
pub fn offer(store: &Store, cert: MembershipCert) -> FeedOffer {
    let state = store.feed(&cert.feed).ok().flatten();
    let head = state.as_ref().and_then(|s| s.head.clone());
    let prefix = match store.serve_target(&cert.feed) {
        Ok(Some(t)) if t.prefix.is_some() => Some(t.length),
        _ => None,
    };
    let damaged_from = store
        .damaged_entries(&cert.feed)
        .ok()
        .and_then(|d| d.first().copied());
    FeedOffer {
        cert,
        head,
        prefix,
        damaged_from,
    }
}

/// The damaged entries of `feed` in `store` (none if they can't be read: logged).
pub fn damaged_in(store: &Store, feed: &FeedKey) -> Vec<u64> {
    store.damaged_entries(feed).unwrap_or_else(|e| {
        tracing::warn!(%feed, error = %e, "cannot read damage records");
        Vec::new()
    })
}

/// Whether `head` contradicts the tree stored in `store` (a fork), for [`Local::contradicts`].
pub fn contradiction_in(
    store: &Store,
    head: &crate::feed::VerifiedHead,
) -> Option<crate::feed::ForkEvidence> {
    store.contradiction(head).unwrap_or_else(|e| {
        tracing::warn!(feed = %head.feed(), error = %e, "cannot compare a head with the stored tree");
        None
    })
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_room(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    let frsize = st.f_frsize;
    Ok((st.f_bavail * frsize, st.f_blocks * frsize))
}

/// The seeder's answers.
pub struct SeederLocal {
    pub store: Store,
    pub registry: Registry,
    pub limits: StoreLimits,
    /// Connections and arrivals, for the admin page.
    pub activity: std::sync::Arc<super::activity::Activity>,
    /// Bytes of transfers admitted but not yet stored, so concurrent transfers can't each
    /// pass the room check and together overrun a quota or the disk's reserve.
    pub pending: Pending,
}

/// Bytes admitted and not yet stored: per space, and in all.
#[derive(Clone, Default)]
pub struct Pending(std::sync::Arc<std::sync::Mutex<PendingBytes>>);

#[derive(Default)]
struct PendingBytes {
    by_space: std::collections::HashMap<Address, u64>,
    total: u64,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingBytes> {
        self.0
            .lock()
            .expect("pending bytes poisoned: a thread panicked while holding them")
    }
}

/// Whether `bytes` more fit on the disk holding `path` with `keep_percent` % left free.
pub fn disk_refusal(path: &std::path::Path, bytes: u64, keep_percent: u8) -> Option<Refusal> {
    match disk_room(path) {
        Ok((free, total)) if total > 0 => {
            let after = u128::from(free.saturating_sub(bytes));
            let keep = u128::from(total) * u128::from(keep_percent) / 100;
            (free < bytes || after <= keep).then_some(Refusal::DiskFull {
                free,
                total,
                keep_percent,
            })
        }
        // Unknown: don't stop on a failed statvfs, the append itself reports a full disk.
        _ => None,
    }
}

impl Local for SeederLocal {
    fn space_for(&self, discovery: &DiscoveryKey) -> Option<Address> {
        let spaces = match self.registry.spaces() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading held spaces");
                return None;
            }
        };
        spaces
            .into_iter()
            .map(|s| s.address)
            .find(|a| a.discovery_key() == *discovery)
    }

    fn offers(&self, space: &Address) -> Vec<FeedOffer> {
        let certs = match self.registry.members(space) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(%space, error = %e, "reading members");
                return Vec::new();
            }
        };
        certs
            .into_iter()
            .map(|cert| offer(&self.store, cert))
            .collect()
    }

    fn stored(&self, feed: &FeedKey) -> (u64, bool) {
        match self.store.feed(feed) {
            Ok(Some(s)) => (s.length, s.frozen),
            _ => (0, false),
        }
    }

    fn feed_count(&self, space: &Address) -> usize {
        self.registry.members(space).map_or(0, |m| m.len())
    }

    fn damaged(&self, feed: &FeedKey) -> Vec<u64> {
        damaged_in(&self.store, feed)
    }

    fn contradicts(&self, head: &crate::feed::VerifiedHead) -> Option<crate::feed::ForkEvidence> {
        contradiction_in(&self.store, head)
    }

    fn records(&self, space: &Address) -> Vec<crate::space::Record> {
        self.registry.records(space).unwrap_or_else(|e| {
            tracing::error!(%space, error = %e, "reading membership records");
            Vec::new()
        })
    }

    fn membership(&self, space: &Address) -> Option<std::sync::Arc<crate::space::Membership>> {
        self.registry.membership(space).unwrap_or_else(|e| {
            tracing::error!(%space, error = %e, "reading membership records");
            None
        })
    }

    fn room(&self, space: &Address, bytes: u64) -> Result<(), Refusal> {
        let pending = self.pending.lock();
        self.room_with(space, bytes, &pending)
    }

    /// A seeder holds no device of any space.
    fn prove_device(
        &self,
        _space: &Address,
        _conn_secret: &[u8],
        _role: crate::space::Role,
    ) -> Option<(crate::space::DeviceProof, Option<crate::space::DeviceProof>)> {
        None
    }

    /// A governed space is served to its devices, which prove themselves, and to the partner
    /// seeders the admin added; not to anyone else who knows the seed code (a removed device
    /// does).
    fn serves_unproven(&self, _space: &Address, peer: &[u8; 32], _dialed: bool) -> bool {
        self.registry.is_partner(peer).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading partners");
            false
        })
    }
}

/// A member device stops taking others' data when its disk would fall below this share free.
pub const MEMBER_KEEP_FREE_PERCENT: u8 = 1;

/// A member device's answers, for one of its spaces.
pub struct HomeLocal {
    pub home: std::sync::Arc<crate::fs::home::Home>,
    pub space: Address,
    /// Told about transfers as they happen (progress bars), if set.
    pub observer: Option<std::sync::Arc<dyn SyncObserver>>,
    /// What the peers said and did, for `sync --once` to report.
    pub peers: PeerReports,
    /// The space's membership as last read from the home, and the records it was made of
    /// (sessions ask for it at every offer and batch; records change rarely).
    log: std::sync::Mutex<Option<MemberLog>>,
    /// Node ids of the peers this device was told to sync with: served a governed space
    /// whichever side dials (an introduced seeder may dial back).
    chosen: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

/// What [`HomeLocal`] keeps of its space's membership log.
struct MemberLog {
    ids: std::collections::HashSet<crate::space::members::RecordId>,
    membership: Option<std::sync::Arc<crate::space::Membership>>,
}

impl MemberLog {
    fn of(records: &[crate::space::VerifiedRecord]) -> MemberLog {
        MemberLog {
            ids: records.iter().map(|r| r.id()).collect(),
            membership: (!records.is_empty())
                .then(|| std::sync::Arc::new(crate::space::Membership::compute(records))),
        }
    }
}

/// What each peer of a member's sync said: whether it opened the space, what it refused.
#[derive(Default)]
pub struct PeerReports {
    inner: std::sync::Mutex<Reports>,
}

#[derive(Default)]
struct Reports {
    /// Connection ids to peers.
    connections: std::collections::HashMap<u64, NodeId>,
    /// Peers that opened the space (hold it and proved it).
    opened: std::collections::HashSet<NodeId>,
    /// Refusals by peer: feed and why (the latest for each feed).
    refused: std::collections::HashMap<NodeId, Vec<(FeedKey, Refusal)>>,
    /// Peers that do not serve the space to this device, and why.
    denied: std::collections::HashMap<NodeId, crate::wire::Denial>,
    /// Feeds whose writer forked, by the peer whose head showed it.
    forked: std::collections::HashMap<NodeId, Vec<FeedKey>>,
    /// Feeds this device refused to take from a peer (its own disk full), and why.
    refusing: std::collections::HashMap<NodeId, Vec<(FeedKey, Refusal)>>,
    /// Feeds a peer could serve only up to an entry (its copy damaged there).
    unavailable: std::collections::HashMap<NodeId, Vec<(FeedKey, u64)>>,
}

impl PeerReports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.inner
            .lock()
            .expect("peer reports poisoned: a thread panicked while holding them")
    }

    /// Whether `peer` opened the space on some connection.
    pub fn opened(&self, peer: &NodeId) -> bool {
        self.lock().opened.contains(peer)
    }

    /// What `peer` refused to take, by feed.
    pub fn refused(&self, peer: &NodeId) -> Vec<(FeedKey, Refusal)> {
        self.lock().refused.get(peer).cloned().unwrap_or_default()
    }

    /// Whether `peer` does not serve the space to this device, and why.
    pub fn denied(&self, peer: &NodeId) -> Option<crate::wire::Denial> {
        self.lock().denied.get(peer).copied()
    }

    /// Feeds whose heads from `peer` showed a fork.
    pub fn forked(&self, peer: &NodeId) -> Vec<FeedKey> {
        self.lock().forked.get(peer).cloned().unwrap_or_default()
    }

    /// What this device refused to take from `peer`, and why.
    pub fn refusing(&self, peer: &NodeId) -> Vec<(FeedKey, Refusal)> {
        self.lock().refusing.get(peer).cloned().unwrap_or_default()
    }

    /// Feeds `peer` could serve only up to an entry, and from which entry not.
    pub fn unavailable(&self, peer: &NodeId) -> Vec<(FeedKey, u64)> {
        self.lock()
            .unavailable
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }
}

/// What a person watching a member's sync wants to see, per feed.
pub trait SyncObserver: Send + Sync {
    /// A peer offers `offered` entries of `feed`; `have` are here.
    fn fetching(&self, feed: FeedKey, have: u64, offered: u64);
    /// `feed` now holds `length` entries here.
    fn received(&self, feed: FeedKey, length: u64);
    /// `peer` acknowledged storing `length` entries of `feed`.
    fn stored(&self, peer: NodeId, feed: FeedKey, length: u64);
    /// A peer holds `theirs` entries of this device's own feed, `ours` are here: this home is
    /// older than what it wrote (restored from a backup); they are being fetched back.
    fn own_feed_behind(&self, _ours: u64, _theirs: u64) {}
    /// `count` damaged entries of `feed` here were rewritten with good copies from `peer`.
    fn repaired(&self, _peer: NodeId, _feed: FeedKey, _count: u64) {}
}

impl HomeLocal {
    /// A member device's answers for its space at `space`.
    pub fn new(
        home: std::sync::Arc<crate::fs::home::Home>,
        space: Address,
        observer: Option<std::sync::Arc<dyn SyncObserver>>,
    ) -> HomeLocal {
        HomeLocal {
            home,
            space,
            observer,
            peers: PeerReports::default(),
            log: std::sync::Mutex::new(None),
            chosen: Default::default(),
        }
    }

    /// This device was told to sync with the node `id`.
    pub fn choose(&self, id: [u8; 32]) {
        self.chosen
            .lock()
            .expect("chosen peers poisoned: a thread panicked while holding them")
            .insert(id);
    }

    fn lock_log(&self) -> std::sync::MutexGuard<'_, Option<MemberLog>> {
        self.log
            .lock()
            .expect("membership cache poisoned: a thread panicked while holding it")
    }

    /// The space's records as the home holds them now (each verified again).
    fn read_records(&self) -> Vec<crate::space::VerifiedRecord> {
        self.home.records(&self.space).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading membership records");
            Vec::new()
        })
    }

    /// Records the home holds that this sync has not seen yet (a command run meanwhile made
    /// them, `seeder space invite` say): the membership is read again and they are returned,
    /// for every peer to get.
    pub fn records_made(&self) -> Vec<crate::space::Record> {
        let records = self.read_records();
        let mut log = self.lock_log();
        // Not read yet: no space opened yet either, and each sends them all when it does.
        let new: Vec<crate::space::Record> = match log.as_ref() {
            None => Vec::new(),
            Some(l) => records
                .iter()
                .filter(|r| !l.ids.contains(&r.id()))
                .map(|r| r.record().clone())
                .collect(),
        };
        if !new.is_empty() || log.is_none() {
            *log = Some(MemberLog::of(&records));
        }
        new
    }
}

impl Local for HomeLocal {
    fn space_for(&self, discovery: &DiscoveryKey) -> Option<Address> {
        (self.space.discovery_key() == *discovery).then_some(self.space)
    }

    fn offers(&self, space: &Address) -> Vec<FeedOffer> {
        if *space != self.space {
            return Vec::new();
        }
        let certs = match self.home.members(space) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reading members");
                return Vec::new();
            }
        };
        let store = self.home.store();
        certs.into_iter().map(|cert| offer(store, cert)).collect()
    }

    fn stored(&self, feed: &FeedKey) -> (u64, bool) {
        match self.home.store().feed(feed) {
            Ok(Some(s)) => (s.length, s.frozen),
            _ => (0, false),
        }
    }

    fn feed_count(&self, space: &Address) -> usize {
        self.home.members(space).map_or(0, |m| m.len())
    }

    fn damaged(&self, feed: &FeedKey) -> Vec<u64> {
        damaged_in(self.home.store(), feed)
    }

    fn contradicts(&self, head: &crate::feed::VerifiedHead) -> Option<crate::feed::ForkEvidence> {
        contradiction_in(self.home.store(), head)
    }

    fn records(&self, space: &Address) -> Vec<crate::space::Record> {
        if *space != self.space {
            return Vec::new();
        }
        self.read_records()
            .into_iter()
            .map(crate::space::VerifiedRecord::into_record)
            .collect()
    }

    fn membership(&self, space: &Address) -> Option<std::sync::Arc<crate::space::Membership>> {
        if *space != self.space {
            return None;
        }
        if let Some(log) = self.lock_log().as_ref() {
            return log.membership.clone();
        }
        let log = MemberLog::of(&self.read_records());
        let m = log.membership.clone();
        *self.lock_log() = Some(log);
        m
    }

    fn prove_device(
        &self,
        space: &Address,
        conn_secret: &[u8],
        role: crate::space::Role,
    ) -> Option<(crate::space::DeviceProof, Option<crate::space::DeviceProof>)> {
        if *space != self.space {
            return None;
        }
        self.home
            .prove_device(space, conn_secret, role)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading this device's key");
                None
            })
    }

    /// A member serves its space to the peers it was told to sync with (the seeders it
    /// dials, which prove no device, and those named by node id however they connect); any
    /// other peer (one that dials it at `sync --listen`) must prove a device of the space. A
    /// peer that proves a removed device is denied either way.
    fn serves_unproven(&self, _space: &Address, peer: &[u8; 32], dialed: bool) -> bool {
        dialed
            || self
                .chosen
                .lock()
                .expect("chosen peers poisoned: a thread panicked while holding them")
                .contains(peer)
    }

    fn room(&self, space: &Address, bytes: u64) -> Result<(), Refusal> {
        // A member takes all of its own space while its disk has room; it never fills the
        // laptop's disk to the last byte.
        if *space != self.space {
            return Err(Refusal::Failed("not this device's space".into()));
        }
        match disk_refusal(self.home.store().dir(), bytes, MEMBER_KEEP_FREE_PERCENT) {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }
}

impl SeederLocal {
    /// The room check with `pending`'s bytes counted as stored already.
    fn room_with(
        &self,
        space: &Address,
        bytes: u64,
        pending: &PendingBytes,
    ) -> Result<(), Refusal> {
        let held = match self.registry.space(space) {
            Ok(Some(held)) => held,
            Ok(None) => return Err(Refusal::NotHeld),
            Err(e) => return Err(Refusal::Failed(format!("reading the registry: {e}"))),
        };
        let failed = |e: super::registry::RegistryError| Refusal::Failed(e.to_string());
        let in_flight = pending.by_space.get(space).copied().unwrap_or(0);
        let bytes = bytes.saturating_add(in_flight);
        if let Some(limit) = held.quota {
            let bytes_held = self.registry.bytes_held(space).map_err(failed)?;
            if bytes_held.saturating_add(bytes) > limit {
                return Err(Refusal::Quota {
                    held: bytes_held,
                    limit,
                });
            }
        }
        self.registry
            .agreement_room(&held.name, bytes)
            .map_err(failed)??;
        let disk_bytes = pending
            .total
            .saturating_sub(in_flight)
            .saturating_add(bytes);
        match disk_refusal(self.store.dir(), disk_bytes, self.limits.keep_free_percent) {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }

    /// Admit `bytes` more of `space`, counted as pending until the returned reservation is
    /// dropped (after they are stored, or not).
    pub fn reserve_room(&self, space: &Address, bytes: u64) -> Result<Reservation, Refusal> {
        let mut pending = self.pending.lock();
        self.room_with(space, bytes, &pending)?;
        *pending.by_space.entry(*space).or_default() += bytes;
        pending.total += bytes;
        let (shared, space) = (self.pending.clone(), *space);
        Ok(Reservation::new(move || {
            let mut p = shared.lock();
            p.total = p.total.saturating_sub(bytes);
            if let Some(n) = p.by_space.get_mut(&space) {
                *n = n.saturating_sub(bytes);
                if *n == 0 {
                    p.by_space.remove(&space);
                }
            }
        }))
    }
}

impl Node for SeederLocal {
    fn store(&self) -> &Store {
        &self.store
    }

    fn reserve(&self, space: &Address, bytes: u64) -> Result<Reservation, Refusal> {
        self.reserve_room(space, bytes)
    }

    fn add_feed(&self, space: &Address, cert: &MembershipCert) -> Result<(), String> {
        if cert.address != *space {
            return Err(format!("certificate is for space {}", cert.address));
        }
        match self.registry.space(space) {
            Ok(Some(_)) => self.registry.add_member(cert).map_err(|e| e.to_string()),
            Ok(None) => Err(format!("space {space} is not held here")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn member(&self, space: &Address, feed: &FeedKey) -> Option<MembershipCert> {
        self.registry.member(space, feed).ok().flatten()
    }

    fn add_records(
        &self,
        space: &Address,
        records: Vec<crate::space::VerifiedRecord>,
    ) -> Result<Vec<crate::space::VerifiedRecord>, String> {
        self.registry
            .add_records(space, records)
            .map_err(|e| e.to_string())
    }

    fn appended(&self, space: &Address, _feed: FeedKey, _length: u64) {
        self.activity.appended(space);
    }

    fn connected(&self, id: u64, conn: &crate::net::Connection) {
        self.activity.connected(id, conn);
    }

    fn observed(&self, _peer: crate::net::NodeId, dialed: bool, addr: std::net::SocketAddr) {
        // Only a partner the admin named is believed: a member could otherwise put any
        // address into our peer code.
        if dialed {
            self.activity.observed(addr);
        }
    }

    fn space_opened(&self, id: u64, space: &Address) {
        self.activity.space_opened(id, space);
    }

    fn space_denied(&self, id: u64, space: &Address) {
        self.activity.space_closed(id, space);
    }

    fn denied(&self, peer: NodeId, space: &Address, reason: crate::wire::Denial) {
        tracing::warn!(
            peer = %peer.short(),
            %space,
            %reason,
            "the peer does not serve the space to this seeder: on it, add this seeder as a partner"
        );
        self.activity.denied(&peer, space);
    }

    fn disconnected(&self, id: u64) {
        self.activity.disconnected(id);
    }

    fn relay_started(
        &self,
        id: u64,
        from: crate::net::NodeId,
        to: crate::net::NodeId,
        bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        self.activity.relay_started(id, from, to, bytes);
    }

    fn relay_ended(&self, id: u64) {
        self.activity.relay_ended(id);
    }
}

impl Node for HomeLocal {
    fn store(&self) -> &Store {
        self.home.store()
    }

    fn add_feed(&self, space: &Address, cert: &MembershipCert) -> Result<(), String> {
        if *space != self.space {
            return Err(format!("space {space} is not the one being synced"));
        }
        self.home.add_member(space, cert).map_err(|e| e.to_string())
    }

    fn member(&self, space: &Address, feed: &FeedKey) -> Option<MembershipCert> {
        self.home.member(space, feed).ok().flatten()
    }

    fn add_records(
        &self,
        space: &Address,
        records: Vec<crate::space::VerifiedRecord>,
    ) -> Result<Vec<crate::space::VerifiedRecord>, String> {
        if *space != self.space {
            return Err(format!("space {space} is not the one being synced"));
        }
        // New here, and this device's Join when the invite it holds has just come.
        let new = self
            .home
            .add_records(space, records)
            .map_err(|e| e.to_string())?;
        if !new.is_empty() {
            *self.lock_log() = Some(MemberLog::of(&self.read_records()));
        }
        Ok(new)
    }

    fn connected(&self, id: u64, conn: &crate::net::Connection) {
        self.peers.lock().connections.insert(id, conn.peer);
    }

    fn space_opened(&self, id: u64, space: &Address) {
        if *space == self.space {
            let mut r = self.peers.lock();
            if let Some(peer) = r.connections.get(&id).copied() {
                r.opened.insert(peer);
            }
        }
    }

    fn disconnected(&self, id: u64) {
        self.peers.lock().connections.remove(&id);
    }

    fn repaired(&self, peer: NodeId, _space: &Address, feed: FeedKey, count: u64) {
        if let Some(o) = &self.observer {
            o.repaired(peer, feed, count);
        }
    }

    fn forked(&self, peer: NodeId, space: &Address, feed: FeedKey) {
        if *space == self.space {
            let mut r = self.peers.lock();
            let list = r.forked.entry(peer).or_default();
            if !list.contains(&feed) {
                list.push(feed);
            }
        }
    }

    fn refusing(&self, peer: NodeId, space: &Address, feed: FeedKey, reason: &Refusal) {
        if *space == self.space {
            let mut r = self.peers.lock();
            let list = r.refusing.entry(peer).or_default();
            list.retain(|(f, _)| *f != feed);
            list.push((feed, reason.clone()));
        }
    }

    fn unavailable(&self, peer: NodeId, space: &Address, feed: FeedKey, from: u64) {
        if *space == self.space {
            let mut r = self.peers.lock();
            let list = r.unavailable.entry(peer).or_default();
            list.retain(|(f, _)| *f != feed);
            list.push((feed, from));
        }
    }

    fn denied(&self, peer: NodeId, space: &Address, reason: crate::wire::Denial) {
        if *space == self.space {
            self.peers.lock().denied.insert(peer, reason);
        }
    }

    fn refused(&self, peer: NodeId, space: &Address, feed: FeedKey, reason: &Refusal) {
        if *space != self.space {
            return;
        }
        let mut r = self.peers.lock();
        let list = r.refused.entry(peer).or_default();
        list.retain(|(f, _)| *f != feed);
        list.push((feed, reason.clone()));
    }

    fn acked(&self, peer: NodeId, space: &Address, feed: FeedKey, length: u64) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ack = crate::fs::home::Ack {
            peer: peer.0,
            feed,
            length,
            at,
        };
        if let Err(e) = self.home.record_ack(space, &ack) {
            tracing::warn!(error = %e, "cannot record an acknowledgement");
        }
        if let Some(o) = &self.observer {
            o.stored(peer, feed, length);
        }
    }

    fn appended(&self, space: &Address, feed: FeedKey, length: u64) {
        if self.own_feed() == Some(feed) {
            if let Err(e) = self.home.own_caught_up(space, length) {
                tracing::warn!(error = %e, "cannot record the own feed caught up");
            }
        }
        if let Some(o) = &self.observer {
            o.received(feed, length);
        }
    }

    fn fetching(&self, space: &Address, feed: FeedKey, have: u64, offered: u64) {
        if self.own_feed() == Some(feed) && offered > have {
            // This device's own entries, back from a peer: this home is older than what it
            // wrote. No write may go out before they are back (it would fork the feed).
            if let Err(e) = self.home.set_own_behind(space, offered) {
                tracing::warn!(error = %e, "cannot record the own feed behind");
            }
            if let Some(o) = &self.observer {
                o.own_feed_behind(have, offered);
            }
        }
        if let Some(o) = &self.observer {
            o.fetching(feed, have, offered);
        }
    }
}

impl HomeLocal {
    /// This device's own feed in the space synced.
    fn own_feed(&self) -> Option<FeedKey> {
        self.home
            .spaces()
            .ok()?
            .into_iter()
            .find(|s| s.address == self.space)
            .map(|s| s.own_feed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{MembershipCert, SeedCode, SpaceSecret};
    use crate::store::StoreConfig;

    #[test]
    fn quota_stops_fetching_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let registry = Registry::open(&store).unwrap();
        let secret = SpaceSecret::from_bytes([1; 32]);
        let address = secret.address();
        registry
            .add_space(&SeedCode::new(address), Some("office"), Some(1500), 0)
            .unwrap();
        let local = SeederLocal {
            store: store.clone(),
            registry: registry.clone(),
            limits: StoreLimits::default(),
            activity: Default::default(),
            pending: Pending::default(),
        };
        assert_eq!(local.room(&address, 1000), Ok(()));
        assert_eq!(
            local.room(&address, 1501),
            Err(Refusal::Quota {
                held: 0,
                limit: 1500
            }),
            "one batch can't overrun the quota"
        );
        assert_eq!(local.space_for(&address.discovery_key()), Some(address));
        let other = SpaceSecret::from_bytes([2; 32]).address();
        assert_eq!(local.space_for(&other.discovery_key()), None);
        assert!(
            local.room(&other, 1).is_err(),
            "a space not held takes nothing"
        );
        let sk = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let feed = FeedKey::from(&sk);
        registry
            .add_member(&MembershipCert::issue(&secret, feed))
            .unwrap();
        let mut f = crate::feed::Frontier::new();
        store
            .append(crate::feed::write_batch(&sk, &mut f, vec![vec![1; 1000]]).unwrap())
            .unwrap();
        assert_eq!(
            local.room(&address, 500),
            Ok(()),
            "1000 + 500 of 1500 bytes"
        );
        assert!(
            local.room(&address, 501).is_err(),
            "1000 + 501 of 1500 bytes"
        );
        store
            .append(crate::feed::write_batch(&sk, &mut f, vec![vec![1; 1000]]).unwrap())
            .unwrap();
        assert_eq!(
            local.room(&address, 1),
            Err(Refusal::Quota {
                held: 2000,
                limit: 1500
            }),
            "2000 of 1500 bytes"
        );
        let offers = local.offers(&address);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].head.as_ref().map(|h| h.length), Some(2));
        assert_eq!(local.stored(&feed), (2, false));
    }

    #[test]
    fn transfers_admitted_at_once_are_counted_together_against_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let registry = Registry::open(&store).unwrap();
        let address = SpaceSecret::from_bytes([3; 32]).address();
        registry
            .add_space(&SeedCode::new(address), Some("office"), Some(5000), 0)
            .unwrap();
        let local = SeederLocal {
            store,
            registry,
            limits: StoreLimits::default(),
            activity: Default::default(),
            pending: Pending::default(),
        };
        let first = local.reserve_room(&address, 3000).unwrap();
        assert!(
            matches!(
                local.reserve_room(&address, 3000),
                Err(Refusal::Quota { .. })
            ),
            "a second transfer can't take the same room"
        );
        assert!(local.room(&address, 2001).is_err(), "pending bytes count");
        let second = local.reserve_room(&address, 2000).unwrap();
        drop(first);
        drop(second);
        assert_eq!(
            local.room(&address, 5000),
            Ok(()),
            "given back when dropped"
        );
    }

    #[test]
    fn a_home_answers_for_its_one_space_only() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::fs::home::Home::open(dir.path()).unwrap();
        let mut rng = crate::fs::home::Rng::default();
        let address = home.create_space("office", &mut rng).unwrap();
        let home = std::sync::Arc::new(home);
        let local = HomeLocal::new(home.clone(), address, None);
        assert_eq!(local.space_for(&address.discovery_key()), Some(address));
        let other = SpaceSecret::from_bytes([2; 32]).address();
        assert_eq!(local.space_for(&other.discovery_key()), None);
        let offers = local.offers(&address);
        assert_eq!(offers.len(), 1, "its own feed");
        assert_eq!(
            offers[0].head.as_ref().map(|h| h.length),
            Some(1),
            "the device-name entry"
        );
        assert!(local.room(&address, 1).is_ok() && local.room(&other, 1).is_err());
        let ack = crate::fs::home::Ack {
            peer: [7; 32],
            feed: offers[0].cert.feed,
            length: 1,
            at: 100,
        };
        home.record_ack(&address, &ack).unwrap();
        home.record_ack(
            &address,
            &crate::fs::home::Ack {
                length: 0,
                ..ack.clone()
            },
        )
        .unwrap();
        assert_eq!(
            home.acks(&address).unwrap(),
            vec![ack],
            "acks never go down"
        );
    }

    #[test]
    fn a_home_keeps_no_membership_log_for_a_space_from_before_roles() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::fs::home::Home::open(dir.path()).unwrap();
        let mut rng = crate::fs::home::Rng::default();
        let address = home.create_space("office", &mut rng).unwrap();
        // Any member holds the secret, so any member could sign a genesis.
        let crate::space::InviteCode::Space(secret) = home.invite("office").unwrap() else {
            panic!("a space from before roles has a space invite");
        };
        let forged = crate::space::members::genesis(
            &secret,
            crate::space::members::device_of(&ed25519_dalek::SigningKey::from_bytes(&[7; 32])),
        )
        .verify(&address)
        .unwrap();
        let local = HomeLocal::new(std::sync::Arc::new(home), address, None);
        assert!(local.add_records(&address, vec![forged]).is_err());
        assert!(local.records(&address).is_empty());
        assert_eq!(local.membership(&address), None);
        assert_eq!(local.offers(&address).len(), 1, "its feeds still count");
    }

    #[test]
    fn disk_room_reads_the_file_system() {
        let (free, total) = disk_room(std::path::Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
    }
}
