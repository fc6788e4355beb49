/*!
The replication protocol of one connection, as a state machine — pure: messages and local
facts in, messages and actions out. No sockets, no store, no clock, no randomness; the `net`
driver feeds it and carries out what it asks, the tests drive two of them in memory.

Method groups, in the manner of quinn-proto's `Connection`:
- getters: [`Session::is_caught_up`], [`Session::peer`], [`Session::open_spaces`];
- input: [`Session::handle_message`] (control-stream messages), [`Session::handle_appended`]
  (the driver stored verified data), [`Session::handle_refusing`] (the driver would not store
  received data: no room, or a frozen feed), [`Session::handle_local_head`] (a feed grew here,
  from this peer, another peer or the local writer), [`Session::handle_records_added`] (the
  driver kept records this peer sent), [`Session::handle_local_records`] (membership records
  new here from another peer or made here),
  [`Session::handle_transfer_ended`] (a data stream closed);
- commands: [`Session::open`] (ask for a space);
- output: [`Session::poll_transmit`] (messages for the control stream), [`Session::poll_action`]
  (work for the driver: register a feed, serve a transfer, close), [`Session::poll_event`]
  (what happened, for people and for `sync --once`).

Poll all three until empty after every input, actions first: an `AddFeed` must be carried
out before the `Want` queued after it reaches the peer, or the data would arrive for a feed
the store doesn't know yet.

The protocol:
1. Both sides send `Hello`. A different protocol version closes the connection.
2. To replicate a space, a side sends `OpenSpace` with the space's discovery key and a
   capability: a MAC over this connection's TLS exporter secret keyed from the address, made
   in its own role. The other side answers with its own `OpenSpace` (its role's capability)
   and its `FeedList` only if it holds the space and the capability verifies. Otherwise it says
   nothing at all, so a peer that doesn't know the address can't even learn whether the space
   is held; after [`MAX_FAILED_OPENS`] such attempts the connection is closed. Dialers number
   their spaces with even ids, listeners with odd ones, so ids never collide.
3. A governed space is served only to whom this node serves it ([`Local::serves_unproven`]):
   a side with a device in the space proves it first
   (`Device`: its feed key's signature over the exporter secret, and its invite's while it
   joins); a node that would not serve an unproven peer says nothing of the space until the
   peer's proof and records have come, then serves it or says `Denied` and nothing more. A
   device the log says was removed is denied everywhere, after being sent the records of its
   removal; a peer that proves no device is denied by a seeder unless it is a partner. A
   served peer is judged again whenever records arrive.
   A governed space's membership records go first (`Members`, in bounded chunks), so that the
   peer knows who is in the space before it judges a feed. Each side verifies every record
   ([`Action::AddRecords`] keeps them) and, once they are kept and the feeds they admit judged
   again, acknowledges them with an empty `Members` (`sync --once` waits for that: a joining
   device's Join has then reached the peer); records new here later go to the peer the same
   way ([`Session::handle_local_records`]), never the ones it is known to hold. Only peers
   that say [`FEATURE_MEMBERS`] in their hello get records; they always send a feed list
   after their records, even an empty one, so the peer knows it has heard both.
   Then each side lists the feeds it holds (membership certificate and newest complete head).
   A feed is taken into a space from before roles only with a certificate the space key
   signed; into a governed space only with the device's own signature and only as far as the
   membership log admits it: a feed the log does not admit is not taken (the offer is kept,
   bounded, and judged again when records arrive, so their order never loses a feed), and
   entries past a removed device's freeze point are refused (`Refused` with
   [`Refusal::Removed`]) and never served. For every offered head longer than what is stored
   here, a `Want` asks for the rest.
4. `Want` is answered by the driver on a stream of its own per feed ([`Action::Serve`]):
   `Data` batches, each verifiable against a signed head. The driver verifies and stores them
   (the store takes only `VerifiedBatch`es), then reports [`Session::handle_appended`], which
   acknowledges with `Stored`. A member shows those acks as "backed up on seeder X".
5. Live: whenever a feed grows here, [`Session::handle_local_head`] tells the peer (`Head`, or
   a one-feed `FeedList` if the peer may not know the feed); the peer wants the rest. A seeder
   relays this way between members who are never online together.
6. A side that won't take (more of) a feed — its disk or the space's quota is full, the feed is
   frozen — says so once with `Refused` and the reason, instead of leaving the peer waiting;
   it keeps serving what it holds and asks again when the feed next grows and there is room.
7. Damage heals: a side whose copy of some entries is damaged (bit rot found by a read or the
   scrub) asks a peer that holds them with `Fetch`, checks the copies against its own verified
   tree and rewrites them, then says `Stored` so the peer knows it is done. A side that can't
   serve from where it was asked (its own copy is damaged there) says `Unavailable`. A prefix
   held verified against a longer head (an upload cut short) is offered and served as such.

Misbehaviour ends the session with [`Action::Close`]: bad certificates, signatures or
membership records, messages for spaces never opened, an unexpected message before `Hello`.
*/

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::feed::{FeedKey, ForkEvidence, SignedHead, VerifiedHead};
use crate::space::members::{Admission, RecordId, MAX_RECORDS};
use crate::space::{
    Address, Capability, DeviceProof, DiscoveryKey, Membership, MembershipCert, Record, Role,
    SpaceError, VerifiedRecord,
};
use crate::wire::{
    members_messages, Denial, FeedOffer, Message, Refusal, FEATURE_MEMBERS, MAX_FEEDS_PER_LIST,
    MAX_SPACES_PER_CONNECTION, PROTOCOL_VERSION,
};

#[cfg(test)]
mod tests;
pub mod transfer;

/// Failed `OpenSpace` attempts tolerated on one connection before it is closed: enough for a
/// peer with a few stale spaces, far too few to probe for spaces by discovery key.
pub const MAX_FAILED_OPENS: u32 = 8;

/// Feeds one space may hold. A small organisation has tens of devices; the bound keeps a
/// hostile member-key holder from making a seeder track unbounded feeds.
pub const MAX_FEEDS_PER_SPACE: usize = 4096;

/// Offers of feeds the membership log here does not admit (yet), kept per open space to be
/// judged again when records arrive: a device whose Join is on its way, readers' feeds. An
/// office space has a few; 64 of about 300 bytes each keep a hostile peer to 20 KiB per
/// space it opens. Offers beyond are dropped (the peer offers them again next connection).
pub const MAX_WITHHELD_OFFERS: usize = 64;

/// How far the entries of `feed` count in a space whose membership here is `m`: all of them in
/// a space from before roles (no records, or no genesis yet).
pub fn admission(m: Option<&Membership>, feed: &FeedKey) -> Admission {
    match m {
        Some(m) if m.is_governed() => m.admits(feed),
        _ => Admission::Upto(None),
    }
}

/// How many of `length` entries of a feed with `admission` count.
fn admitted_len(admission: Admission, length: u64) -> u64 {
    match admission {
        Admission::No => 0,
        Admission::Upto(None) => length,
        Admission::Upto(Some(limit)) => length.min(limit),
    }
}

/// What the session needs to know of this node, answered synchronously by the driver from
/// the store (cheap, in-memory lookups).
pub trait Local {
    /// The address of a space held here with this discovery key.
    fn space_for(&self, discovery: &DiscoveryKey) -> Option<Address>;
    /// Every feed held here of `space`, with its certificate and newest complete head.
    fn offers(&self, space: &Address) -> Vec<FeedOffer>;
    /// Entries of `feed` stored here (0 if unknown), and whether it is frozen by a fork.
    fn stored(&self, feed: &FeedKey) -> (u64, bool);
    /// Feeds held here of `space`.
    fn feed_count(&self, space: &Address) -> usize;
    /// Whether `space` may take `bytes` more of entry data here (quota, agreements, disk
    /// room), and if not, why.
    fn room(&self, space: &Address, bytes: u64) -> Result<(), Refusal>;
    /// Whether a peer's validly signed `head`, no longer than what is stored complete here,
    /// contradicts the stored tree (the writer signed two histories); the evidence if so.
    fn contradicts(&self, head: &VerifiedHead) -> Option<ForkEvidence>;
    /// Entries of `feed` found damaged here and not yet repaired, in order.
    fn damaged(&self, feed: &FeedKey) -> Vec<u64>;
    /// The membership records held here of `space` (none for a space from before roles).
    fn records(&self, space: &Address) -> Vec<Record>;
    /// The membership those records make, if `space` has any (cheap: kept up to date by the
    /// node as records are added).
    fn membership(&self, space: &Address) -> Option<Arc<Membership>>;
    /// This node's proof that it is a device of governed `space`, playing `role` on the
    /// connection with `conn_secret`, and the same proof made with the key of the invite it
    /// joined with, while it holds one (a device whose Join the peer may not know yet is
    /// served on it); `None` when it has no device there (a seeder, or a space from before
    /// roles).
    fn prove_device(
        &self,
        space: &Address,
        conn_secret: &[u8],
        role: Role,
    ) -> Option<(DeviceProof, Option<DeviceProof>)>;
    /// Whether this node serves governed `space` to `peer` (its node id as TLS proved it) when
    /// the peer proves no device of it; `dialed`: this node dialed the peer. A member device
    /// serves the seeder it was told to sync with (it dialed it: a seeder has no device to
    /// prove) and no other; a seeder only the partner seeders its admin added.
    fn serves_unproven(&self, space: &Address, peer: &[u8; 32], dialed: bool) -> bool;
}

/// Whether an open space is served to the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// A governed space this node serves only to devices that prove they are in it: nothing
    /// is said of it until the peer has said who it is (its `Device` proof, then its records,
    /// which may hold its Join).
    Pending,
    /// Replicating.
    Served,
    /// One side denied the other ([`Message::Denied`]): nothing more is said of the space on
    /// this connection, and what the peer says of it is ignored.
    Denied,
}

/// Why the session ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The peer broke the protocol; the reason names what it did.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(String),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, this node {PROTOCOL_VERSION}")]
    Version(u16),
    /// The peer said goodbye.
    #[error("peer closed: {0}")]
    Goodbye(String),
}

/// Work for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Record a new member feed of `space` (its certificate has been verified).
    AddFeed {
        space: Address,
        cert: MembershipCert,
    },
    /// Keep membership records of `space` the peer sent (their signatures verified; whether
    /// they count is the membership's to say), then tell this session what came of it
    /// ([`Session::handle_records_added`], always: the peer waits for it) and every other
    /// session with the space open about the records new here
    /// ([`Session::handle_local_records`]).
    AddRecords {
        space: Address,
        records: Vec<VerifiedRecord>,
    },
    /// Send entries of `feed` from `from` on (up to `to`, if given, else as far as can be
    /// proven), on a stream of its own, as `Data` messages for connection space id `id`.
    Serve {
        id: u32,
        space: Address,
        feed: FeedKey,
        from: u64,
        to: Option<u64>,
    },
    /// Keep the evidence that a feed's writer forked and freeze the feed.
    RecordFork {
        space: Address,
        evidence: Box<ForkEvidence>,
    },
    /// The peer asks to be introduced to `node` (it holds a space with us).
    Introduce { node: [u8; 32] },
    /// A peer that holds a space with us says `node` is at `addr`: punch (and dial).
    Punch {
        node: [u8; 32],
        addr: std::net::SocketAddr,
        dial: bool,
    },
    /// A peer that holds a space with us says it sees us at `addr`.
    Observed { addr: std::net::SocketAddr },
    /// Close the connection.
    Close(SyncError),
}

/// What happened, for logs, people and `sync --once`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Both sides proved knowledge of the space, and this node serves it to the peer.
    SpaceOpened { id: u32, space: Address },
    /// The peer durably stores `length` entries of `feed`.
    Acked {
        space: Address,
        feed: FeedKey,
        length: u64,
    },
    /// The peer offered a head longer than what is stored here.
    Behind {
        space: Address,
        feed: FeedKey,
        have: u64,
        offered: u64,
    },
    /// This node does not take the peer's newer data of `feed`, and told the peer why.
    Refusing {
        space: Address,
        feed: FeedKey,
        reason: Refusal,
    },
    /// The peer does not take our newer data of `feed`, and why.
    Refused {
        space: Address,
        feed: FeedKey,
        reason: Refusal,
    },
    /// The peer's head of `feed` contradicts ours: its writer forked.
    Forked { space: Address, feed: FeedKey },
    /// This node does not serve `space` to the peer, and told it why.
    Denying { space: Address, reason: Denial },
    /// The peer does not serve `space` to this node, and why.
    Denied { space: Address, reason: Denial },
    /// `count` damaged entries of `feed` were rewritten with good copies from the peer.
    Repaired {
        space: Address,
        feed: FeedKey,
        count: u64,
    },
    /// The peer can't serve `feed` from `from` on (damaged on its side).
    Unavailable {
        space: Address,
        feed: FeedKey,
        from: u64,
    },
}

/// A message for the control stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit(pub Message);

#[derive(Debug)]
struct OpenSpace {
    address: Address,
    /// The peer's newest complete length of each feed, from its lists, heads and acks.
    remote: BTreeMap<FeedKey, u64>,
    /// Feeds with a `Want` outstanding, and where it started.
    wanted: BTreeMap<FeedKey, u64>,
    /// Feeds we told the peer we refuse (each is said once, until we want it again).
    refusing: BTreeMap<FeedKey, Refusal>,
    /// Feeds the peer said it refuses, and why.
    refused: BTreeMap<FeedKey, Refusal>,
    /// Feeds with damaged entries we asked the peer to send again (until that transfer ends).
    repairing: std::collections::BTreeSet<FeedKey>,
    /// Feeds the peer asked us to send again, until it says `Stored` for them.
    resending: std::collections::BTreeSet<FeedKey>,
    /// Damaged entries already asked for on this connection: a peer whose copies don't match
    /// either is not asked again and again.
    fetched: std::collections::BTreeSet<(FeedKey, u64)>,
    /// Membership records the peer holds (it sent them, or we did): not sent to it again.
    /// At most [`MAX_RECORDS`], what a space may hold; past that, some may be sent twice.
    peer_records: BTreeSet<RecordId>,
    /// Records the peer sent of this space on this connection: an honest peer sends each at
    /// most about once, so more than twice [`MAX_RECORDS`] is a flood.
    records_received: usize,
    /// `Members` messages sent and not yet acknowledged.
    records_unacked: u32,
    /// `Members` messages received whose records the driver has not yet reported taken
    /// ([`Session::handle_records_added`]): each is acknowledged then.
    records_owed: u32,
    /// The peer's first feed list has come (a peer with [`FEATURE_MEMBERS`] always sends
    /// one, after its records): until then it may still say who is in the space.
    listed: bool,
    /// The peer's offers the membership here does not admit (yet), judged again when records
    /// arrive; at most [`MAX_WITHHELD_OFFERS`].
    withheld_offers: BTreeMap<FeedKey, FeedOffer>,
    /// Feeds held here left out of our lists because the membership here does not admit them;
    /// offered once records do.
    withheld_ours: BTreeSet<FeedKey>,
    standing: Standing,
    /// The device of the space the peer proved to be, if it did.
    device: Option<FeedKey>,
    /// The invite (its public key) the peer proved to hold, if it did.
    invite: Option<[u8; 32]>,
}

/// One connection's replication state.
#[derive(Debug)]
pub struct Session {
    role: Role,
    /// The TLS exporter secret of this connection, for capabilities.
    conn_secret: Vec<u8>,
    node_id: [u8; 32],
    peer: Option<[u8; 32]>,
    /// The peer's node id as the connection's TLS handshake proved it: its hello must name
    /// the same, and it is what partners are recognised by (a hello is only words).
    authenticated: Option<[u8; 32]>,
    hello_received: bool,
    /// The peer speaks `Members` ([`FEATURE_MEMBERS`] in its hello).
    peer_members: bool,
    /// Spaces we asked for and the peer hasn't answered yet, by id.
    asked: BTreeMap<u32, Address>,
    open: BTreeMap<u32, OpenSpace>,
    next_id: u32,
    failed_opens: u32,
    /// Spaces the peer denied us, and why (at most one per open space id).
    denied_by_peer: Vec<(Address, Denial)>,
    closed: bool,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Session {
    /// A new session; it sends `Hello` first.
    pub fn new(role: Role, node_id: [u8; 32], conn_secret: Vec<u8>) -> Session {
        let mut s = Session {
            role,
            conn_secret,
            node_id,
            peer: None,
            authenticated: None,
            hello_received: false,
            peer_members: false,
            asked: BTreeMap::new(),
            open: BTreeMap::new(),
            next_id: match role {
                Role::Dialer => 0,
                Role::Listener => 1,
            },
            failed_opens: 0,
            denied_by_peer: Vec::new(),
            closed: false,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.send(Message::Hello {
            version: PROTOCOL_VERSION,
            node_id,
            features: FEATURE_MEMBERS,
        });
        s
    }

    /// The peer's node id is `peer`, as the TLS handshake proved: a hello naming another node
    /// ends the session.
    pub fn authenticated(mut self, peer: [u8; 32]) -> Session {
        self.authenticated = Some(peer);
        self
    }

    // ---- getters ----

    /// This node's id, as said in `Hello`.
    pub fn node_id(&self) -> [u8; 32] {
        self.node_id
    }

    /// The peer's node id, once it said hello.
    pub fn peer(&self) -> Option<[u8; 32]> {
        self.peer
    }

    /// Open spaces by connection id.
    /// Ask the peer to introduce us to `node`: only a peer we hold a space with is asked.
    pub fn introduce(&mut self, node: [u8; 32]) {
        if self.serving() && self.peer != Some(node) {
            self.send(Message::Introduce { node });
        }
    }

    /// Tell the peer that `node` is at `addr` (see [`Message::Punch`]); only a peer we hold a
    /// space with is told.
    pub fn punch(&mut self, node: [u8; 32], addr: std::net::SocketAddr, dial: bool) {
        if self.serving() {
            self.send(Message::Punch { node, addr, dial });
        }
    }

    /// Tell the peer where we see it from (once it holds a space with us).
    pub fn observed(&mut self, addr: std::net::SocketAddr) {
        if self.serving() {
            self.send(Message::Observed { addr });
        }
    }

    /// Spaces open on this connection and not denied, by connection id.
    pub fn open_spaces(&self) -> impl Iterator<Item = (u32, &Address)> {
        self.open
            .iter()
            .filter(|(_, s)| s.standing != Standing::Denied)
            .map(|(id, s)| (*id, &s.address))
    }

    /// Whether some space is replicating with the peer: only then does it get introductions
    /// and punches, and hear where it is seen from.
    fn serving(&self) -> bool {
        self.open.values().any(|s| s.standing == Standing::Served)
    }

    /// Spaces the peer does not serve to this node, and why.
    pub fn denials(&self) -> Vec<(Address, Denial)> {
        self.denied_by_peer.clone()
    }

    /// Whether nothing more will happen until something changes: every space asked for is
    /// open, nothing is being fetched, everything the peer offered is stored here (or refused
    /// here), and the peer holds (has acknowledged or offered) everything stored here of
    /// those spaces, or refused it. [`Session::refusals`] tells the two endings apart.
    ///
    /// Membership counts too: the peer's records and first feed list must have come, records
    /// sent must be acknowledged, and only what the membership here admits of a feed is
    /// waited for (a device's Join must reach the peer before its feed can).
    pub fn is_caught_up(&self, local: &dyn Local) -> bool {
        if !self.asked.is_empty() || self.closed {
            return false;
        }
        self.open.values().all(|s| {
            if s.standing == Standing::Denied {
                return true;
            }
            if s.standing == Standing::Pending {
                return false;
            }
            let m = local.membership(&s.address);
            let counts =
                |feed: &FeedKey, len: u64| admitted_len(admission(m.as_deref(), feed), len);
            s.wanted.is_empty()
                && s.repairing.is_empty()
                && s.resending.is_empty()
                && s.records_unacked == 0
                && s.records_owed == 0
                && (s.listed || !self.peer_members)
                && s.remote.iter().all(|(feed, len)| {
                    let (stored, frozen) = local.stored(feed);
                    stored >= counts(feed, *len) || frozen || s.refusing.contains_key(feed)
                })
                && local.offers(&s.address).iter().all(|o| {
                    let ours = counts(&o.cert.feed, o.head.as_ref().map_or(0, |h| h.length));
                    s.remote.get(&o.cert.feed).copied().unwrap_or(0) >= ours
                        || s.refused.contains_key(&o.cert.feed)
                })
        })
    }

    /// What the peer refused to take, by space and feed.
    pub fn refusals(&self) -> Vec<(Address, FeedKey, Refusal)> {
        self.open
            .values()
            .flat_map(|s| s.refused.iter().map(|(f, r)| (s.address, *f, r.clone())))
            .collect()
    }

    // ---- output ----

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- commands ----

    /// Ask the peer for `space`. Returns the connection id used, or `None` if this
    /// connection already has as many spaces as it may. A space denied on this connection is
    /// asked for again under a new id (this node now serves the peer: it was made a partner).
    pub fn open(&mut self, space: Address) -> Option<u32> {
        let live = |s: &&OpenSpace| s.standing != Standing::Denied;
        if self
            .asked
            .values()
            .chain(self.open.values().filter(live).map(|s| &s.address))
            .any(|a| *a == space)
        {
            return self
                .open
                .iter()
                .find(|(_, s)| s.address == space && s.standing != Standing::Denied)
                .map(|(id, _)| *id)
                .or_else(|| {
                    self.asked
                        .iter()
                        .find(|(_, a)| **a == space)
                        .map(|(id, _)| *id)
                });
        }
        if self.next_id >= MAX_SPACES_PER_CONNECTION {
            return None;
        }
        let id = self.next_id;
        self.next_id += 2;
        self.asked.insert(id, space);
        let capability = Capability::new(&space, &self.conn_secret, self.role);
        self.send(Message::OpenSpace {
            space: id,
            discovery: space.discovery_key(),
            capability,
        });
        Some(id)
    }

    // ---- input ----

    /// A message from the peer's control stream (or a data stream's header fields, which the
    /// driver checks with [`Session::space_of`] instead).
    pub fn handle_message(&mut self, msg: Message, local: &dyn Local) {
        if self.closed {
            return;
        }
        if let Err(e) = self.dispatch(msg, local) {
            self.close(e);
        }
    }

    /// The address of open space `id`, for checking a data stream's messages; `None` closes
    /// the session (data for a space never opened), or only refuses the stream (a space
    /// denied on this connection).
    pub fn space_of(&mut self, id: u32) -> Option<Address> {
        match self.open.get(&id) {
            Some(s) if s.standing == Standing::Denied => None,
            Some(s) => Some(s.address),
            None => {
                self.close(SyncError::PeerMisbehaved(format!(
                    "data for space {id}, which is not open"
                )));
                None
            }
        }
    }

    /// The driver stored data of `feed` received on this connection, up to `length`.
    pub fn handle_appended(&mut self, id: u32, feed: FeedKey, length: u64) {
        let Some(space) = self
            .open
            .get_mut(&id)
            .filter(|s| s.standing == Standing::Served)
        else {
            return;
        };
        self.transmits.push_back(Transmit(Message::Stored {
            space: id,
            feed,
            length,
        }));
        if let Some(from) = space.wanted.get(&feed).copied() {
            let remote = space.remote.get(&feed).copied().unwrap_or(0);
            if length >= remote {
                space.wanted.remove(&feed);
            } else if length < from {
                // Can't happen with an honest driver; don't loop on it.
                space.wanted.remove(&feed);
            }
        }
    }

    /// The driver would not store data of `feed` received on this connection: tell the peer
    /// why (once) and stop wanting it.
    pub fn handle_refusing(&mut self, id: u32, feed: FeedKey, reason: Refusal) {
        let Some(space) = self
            .open
            .get_mut(&id)
            .filter(|s| s.standing == Standing::Served)
        else {
            return;
        };
        space.wanted.remove(&feed);
        let address = space.address;
        self.refuse(id, address, feed, reason);
    }

    /// A data stream for `feed` ended (finished, reset, or refused by verification). If more
    /// is still offered, ask again from what is stored now; a repair transfer is answered with
    /// `Stored`, so the peer knows it may go.
    pub fn handle_transfer_ended(&mut self, id: u32, feed: FeedKey, local: &dyn Local) {
        let Some(space) = self
            .open
            .get_mut(&id)
            .filter(|s| s.standing == Standing::Served)
        else {
            return;
        };
        space.wanted.remove(&feed);
        let repaired = space.repairing.remove(&feed);
        let address = space.address;
        self.want_if_behind(id, address, feed, local);
        if repaired {
            // The next damaged run, if the peer holds it; only when none is left, `Stored`.
            self.fetch_damaged(id, feed, local);
            let more = self
                .open
                .get(&id)
                .is_some_and(|s| s.repairing.contains(&feed));
            if !more {
                self.transmits.push_back(Transmit(Message::Stored {
                    space: id,
                    feed,
                    length: local.stored(&feed).0,
                }));
            }
        }
    }

    /// The driver rewrote `count` damaged entries of `feed` with copies from this peer.
    pub fn handle_repaired(&mut self, id: u32, feed: FeedKey, count: u64) {
        if let Some(space) = self
            .open
            .get(&id)
            .filter(|s| s.standing == Standing::Served)
        {
            self.events.push_back(Event::Repaired {
                space: space.address,
                feed,
                count,
            });
        }
    }

    /// The driver can't serve `feed` from `from` as the peer asked (damaged here): say so.
    pub fn handle_unservable(&mut self, id: u32, feed: FeedKey, from: u64) {
        if self.standing(id) == Some(Standing::Served) {
            self.transmits.push_back(Transmit(Message::Unavailable {
                space: id,
                feed,
                from,
            }));
        }
    }

    /// The connection's ids of `space`, where it is open and not denied.
    fn open_ids(&self, space: &Address) -> Vec<u32> {
        self.open
            .iter()
            .filter(|(_, s)| s.address == *space && s.standing != Standing::Denied)
            .map(|(id, _)| *id)
            .collect()
    }

    /// `feed` of `space` now has `head` complete here. Tell the peer if it may not have it.
    pub fn handle_local_head(&mut self, space: &Address, cert: &MembershipCert, head: &SignedHead) {
        if self.closed {
            return;
        }
        let ids = self.open_ids(space);
        for id in ids {
            let s = self.open.get(&id).expect("id from the open map");
            if s.standing != Standing::Served {
                continue;
            }
            match s.remote.get(&cert.feed) {
                Some(len) if *len >= head.length => {}
                Some(_) => self.send(Message::Head {
                    space: id,
                    head: head.clone(),
                }),
                None => self.send(Message::FeedList {
                    space: id,
                    feeds: vec![FeedOffer {
                        cert: cert.clone(),
                        head: Some(head.clone()),
                        prefix: None,
                        damaged_from: None,
                    }],
                }),
            }
        }
    }

    /// Membership records of `space` are new here (from this peer, another one, or made on
    /// this device): judge again whether the peer is served (its device may have joined or
    /// been removed), send it the records it isn't known to hold, offer our feeds the new
    /// membership admits, and judge again the peer's offers it did not.
    pub fn handle_local_records(&mut self, space: &Address, records: &[Record], local: &dyn Local) {
        if self.closed {
            return;
        }
        let ids = self.open_ids(space);
        for id in ids {
            let before = self.standing(id);
            // A served peer is judged for good: its device may be removed now. A pending one
            // may still prove itself (its Join may be among the records to come).
            self.judge(id, before == Some(Standing::Served), local);
            if before != Some(Standing::Served) || self.standing(id) != Some(Standing::Served) {
                // Still pending, denied now, or served just now (which sent everything).
                continue;
            }
            self.send_records(id, records.to_vec());
            if let Err(e) = self.rejudge(id, local) {
                return self.close(e);
            }
        }
    }

    /// The driver carried out this session's [`Action::AddRecords`] for `space`: `new` are the
    /// records new here, with any made in answer (a Join). The peer gets what it lacks of them
    /// and, once the feeds they admit are judged again, its acknowledgement. Said also when
    /// keeping them failed (logged by the driver), so the peer is not left waiting.
    pub fn handle_records_added(&mut self, space: &Address, new: &[Record], local: &dyn Local) {
        if self.closed {
            return;
        }
        self.handle_local_records(space, new, local);
        let ids = self.open_ids(space);
        for id in ids {
            let s = self.open.get_mut(&id).expect("id from the open map");
            if s.standing == Standing::Denied {
                s.records_owed = 0;
                continue;
            }
            // After whatever judging again asked for (actions are carried out first).
            for _ in 0..std::mem::take(&mut s.records_owed) {
                self.transmits.push_back(Transmit(Message::Members {
                    space: id,
                    records: Vec::new(),
                }));
            }
        }
    }

    /// Send the peer `records` of open space `id` it isn't known to hold, if it is served.
    fn send_records(&mut self, id: u32, records: Vec<Record>) {
        if self.standing(id) == Some(Standing::Served) {
            self.push_records(id, records);
        }
    }

    /// Send the peer `records` of open space `id` it isn't known to hold.
    fn push_records(&mut self, id: u32, records: Vec<Record>) {
        if !self.peer_members {
            // A peer from before roles can't read them (and can't hold a governed space).
            return;
        }
        let Some(s) = self.open.get_mut(&id) else {
            return;
        };
        let mut fresh = Vec::new();
        for r in records {
            let rid = r.id();
            if s.peer_records.contains(&rid) {
                continue;
            }
            if s.peer_records.len() < MAX_RECORDS {
                s.peer_records.insert(rid);
            }
            fresh.push(r);
        }
        for msg in members_messages(id, fresh) {
            s.records_unacked += 1;
            self.transmits.push_back(Transmit(msg));
        }
    }

    /// The membership here changed: offer our feeds it now admits, and judge again the
    /// peer's offers it did not admit before.
    fn rejudge(&mut self, id: u32, local: &dyn Local) -> Result<(), SyncError> {
        let Some(s) = self
            .open
            .get_mut(&id)
            .filter(|s| s.standing == Standing::Served)
        else {
            return Ok(());
        };
        let address = s.address;
        let offers: Vec<FeedOffer> = std::mem::take(&mut s.withheld_offers)
            .into_values()
            .collect();
        if !s.withheld_ours.is_empty() {
            let m = local.membership(&address);
            let ours: Vec<FeedOffer> = local
                .offers(&address)
                .into_iter()
                .filter(|o| {
                    s.withheld_ours.contains(&o.cert.feed)
                        && admission(m.as_deref(), &o.cert.feed) != Admission::No
                })
                .collect();
            for o in &ours {
                s.withheld_ours.remove(&o.cert.feed);
            }
            for chunk in ours.chunks(MAX_FEEDS_PER_LIST) {
                self.send(Message::FeedList {
                    space: id,
                    feeds: chunk.to_vec(),
                });
            }
        }
        for offer in offers {
            self.on_offer(id, address, offer, local)?;
        }
        Ok(())
    }

    fn send(&mut self, msg: Message) {
        self.transmits.push_back(Transmit(msg));
    }

    fn close(&mut self, e: SyncError) {
        if !self.closed {
            self.closed = true;
            self.actions.push_back(Action::Close(e));
        }
    }

    fn dispatch(&mut self, msg: Message, local: &dyn Local) -> Result<(), SyncError> {
        let misbehaved = |s: &str| Err(SyncError::PeerMisbehaved(s.to_string()));
        if !self.hello_received {
            let Message::Hello {
                version,
                node_id,
                features,
            } = msg
            else {
                return misbehaved("the first message was not hello");
            };
            if version != PROTOCOL_VERSION {
                return Err(SyncError::Version(version));
            }
            if self.authenticated.is_some_and(|id| id != node_id) {
                return misbehaved("its hello names another node than its TLS certificate");
            }
            self.hello_received = true;
            self.peer = Some(node_id);
            self.peer_members = features & FEATURE_MEMBERS != 0;
            return Ok(());
        }
        // What the peer says of a space it is not served: it must first say who it is.
        if let Some(id) = msg.gated_space() {
            self.opened(id)?;
            let asks_for_data = matches!(msg, Message::Want { .. } | Message::Fetch { .. });
            if self.standing(id) == Some(Standing::Pending) || asks_for_data {
                // Its proof and records, if any, came first: judged now for good. And before
                // anything is served, judged against the log as it is now (a removal may be
                // stored here and not yet announced to this session).
                self.judge(id, true, local);
            }
            if self.standing(id) != Some(Standing::Served) {
                return Ok(());
            }
        }
        match msg {
            Message::Hello { .. } => misbehaved("hello twice"),
            Message::OpenSpace {
                space: id,
                discovery,
                capability,
            } => self.on_open(id, discovery, capability, local),
            Message::FeedList { space: id, feeds } => {
                let address = self.opened(id)?;
                if feeds.len() > MAX_FEEDS_PER_LIST {
                    return misbehaved("feed list over the limit");
                }
                self.open.get_mut(&id).expect("opened above").listed = true;
                for offer in feeds {
                    self.on_offer(id, address, offer, local)?;
                }
                Ok(())
            }
            Message::Head { space: id, head } => {
                let address = self.opened(id)?;
                let s = self.open.get_mut(&id).expect("opened above");
                if !s.remote.contains_key(&head.feed) {
                    // A feed not taken (yet): its offer is judged again, with this head.
                    if let Some(offer) = s.withheld_offers.get_mut(&head.feed) {
                        if offer.head.as_ref().is_none_or(|h| h.length < head.length) {
                            offer.head = Some(head);
                        }
                        return Ok(());
                    }
                    // One whose offer was not kept (there were too many): nothing to do.
                    let m = local.membership(&address);
                    if admission(m.as_deref(), &head.feed) == Admission::No {
                        return Ok(());
                    }
                    return misbehaved("head of a feed never listed");
                }
                self.on_head(id, address, head, local)
            }
            Message::Want {
                space: id,
                feed,
                from,
            } => {
                let address = self.opened(id)?;
                // Only what the membership here admits is served.
                let limit = match admission(local.membership(&address).as_deref(), &feed) {
                    Admission::No => Some(0),
                    Admission::Upto(limit) => limit,
                };
                let (stored, _) = local.stored(&feed);
                if from < limit.map_or(stored, |l| stored.min(l)) {
                    self.actions.push_back(Action::Serve {
                        id,
                        space: address,
                        feed,
                        from,
                        to: limit,
                    });
                } else {
                    self.send(Message::Unavailable {
                        space: id,
                        feed,
                        from,
                    });
                }
                Ok(())
            }
            Message::Fetch {
                space: id,
                feed,
                from,
                to,
            } => {
                let address = self.opened(id)?;
                let (stored, _) = local.stored(&feed);
                let admitted = admitted_len(
                    admission(local.membership(&address).as_deref(), &feed),
                    stored,
                );
                if from < admitted {
                    let s = self.open.get_mut(&id).expect("opened above");
                    s.resending.insert(feed);
                    self.actions.push_back(Action::Serve {
                        id,
                        space: address,
                        feed,
                        from,
                        to: Some(to.min(admitted)),
                    });
                } else {
                    self.send(Message::Unavailable {
                        space: id,
                        feed,
                        from,
                    });
                }
                Ok(())
            }
            Message::Unavailable {
                space: id,
                feed,
                from,
            } => {
                let address = self.opened(id)?;
                let s = self.open.get_mut(&id).expect("opened above");
                s.wanted.remove(&feed);
                s.repairing.remove(&feed);
                // Don't ask this peer for more of it until it says it has more.
                let remote = s.remote.entry(feed).or_insert(0);
                *remote = (*remote).min(from);
                self.events.push_back(Event::Unavailable {
                    space: address,
                    feed,
                    from,
                });
                Ok(())
            }
            Message::Data { .. } => misbehaved("data on the control stream"),
            Message::Stored {
                space: id,
                feed,
                length,
            } => {
                let address = self.opened(id)?;
                let s = self.open.get_mut(&id).expect("opened above");
                s.resending.remove(&feed);
                let remote = s.remote.entry(feed).or_insert(0);
                *remote = (*remote).max(length);
                self.events.push_back(Event::Acked {
                    space: address,
                    feed,
                    length,
                });
                Ok(())
            }
            // Introductions are for peers that proved they hold a space with us; anyone else
            // is told nothing and moves nothing.
            Message::Introduce { node } => {
                if self.serving() {
                    self.actions.push_back(Action::Introduce { node });
                }
                Ok(())
            }
            Message::Punch { node, addr, dial } => {
                if self.serving() {
                    self.actions.push_back(Action::Punch { node, addr, dial });
                }
                Ok(())
            }
            Message::Observed { addr } => {
                if self.serving() {
                    self.actions.push_back(Action::Observed { addr });
                }
                Ok(())
            }
            Message::Device {
                space: id,
                proof,
                invite,
            } => {
                let address = self.opened(id)?;
                let peer_role = self.peer_role();
                let s = self.open.get_mut(&id).expect("opened above");
                if s.standing == Standing::Denied {
                    return Ok(());
                }
                if s.device.is_some() {
                    return misbehaved("two device proofs for one space");
                }
                // Two signature checks per space the peer proved it knows, at most
                // MAX_SPACES_PER_CONNECTION on a connection.
                let device = proof
                    .verify(&address, &self.conn_secret, peer_role)
                    .map_err(|e| SyncError::PeerMisbehaved(e.to_string()))?;
                let invite = invite
                    .map(|p| p.verify(&address, &self.conn_secret, peer_role))
                    .transpose()
                    .map_err(|e| SyncError::PeerMisbehaved(e.to_string()))?;
                s.device = Some(device);
                s.invite = invite.map(|k| k.0);
                let served = s.standing == Standing::Served;
                self.judge(id, served, local);
                Ok(())
            }
            Message::Denied { space: id, reason } => {
                let address = self.opened(id)?;
                if self.standing(id) == Some(Standing::Denied) {
                    return Ok(());
                }
                self.stop(id);
                self.denied_by_peer.push((address, reason));
                self.events.push_back(Event::Denied {
                    space: address,
                    reason,
                });
                Ok(())
            }
            Message::Members { space: id, records } => {
                let address = self.opened(id)?;
                let s = self.open.get_mut(&id).expect("opened above");
                if s.standing == Standing::Denied {
                    return Ok(());
                }
                if records.is_empty() {
                    s.records_unacked = s.records_unacked.saturating_sub(1);
                    return Ok(());
                }
                s.records_received = s.records_received.saturating_add(records.len());
                if s.records_received > 2 * MAX_RECORDS {
                    return misbehaved("more membership records than a space may hold");
                }
                let mut verified = Vec::with_capacity(records.len());
                for r in records {
                    let r = r.verify(&address).map_err(|e| {
                        SyncError::PeerMisbehaved(format!("membership record: {e}"))
                    })?;
                    if s.peer_records.len() < MAX_RECORDS {
                        s.peer_records.insert(r.id());
                    }
                    verified.push(r);
                }
                // Acknowledged once the driver says they are kept
                // (`handle_records_added`).
                s.records_owed += 1;
                self.actions.push_back(Action::AddRecords {
                    space: address,
                    records: verified,
                });
                Ok(())
            }
            Message::Goodbye { reason } => Err(SyncError::Goodbye(reason)),
            Message::Error { code, message } => {
                tracing::warn!(code, %message, "peer reported an error");
                Ok(())
            }
            Message::Refused {
                space: id,
                feed,
                reason,
            } => {
                let address = self.opened(id)?;
                let s = self.open.get_mut(&id).expect("opened above");
                s.refused.insert(feed, reason.clone());
                self.events.push_back(Event::Refused {
                    space: address,
                    feed,
                    reason,
                });
                Ok(())
            }
        }
    }

    /// Tell the peer we refuse `feed` (unless we already did for the same reason).
    fn refuse(&mut self, id: u32, address: Address, feed: FeedKey, reason: Refusal) {
        let Some(s) = self.open.get_mut(&id) else {
            return;
        };
        if s.refusing.get(&feed) == Some(&reason) {
            return;
        }
        s.refusing.insert(feed, reason.clone());
        self.events.push_back(Event::Refusing {
            space: address,
            feed,
            reason: reason.clone(),
        });
        self.transmits.push_back(Transmit(Message::Refused {
            space: id,
            feed,
            reason,
        }));
    }

    fn opened(&self, id: u32) -> Result<Address, SyncError> {
        self.open
            .get(&id)
            .map(|s| s.address)
            .ok_or_else(|| SyncError::PeerMisbehaved(format!("message for space {id}, not open")))
    }

    fn peer_role(&self) -> Role {
        match self.role {
            Role::Dialer => Role::Listener,
            Role::Listener => Role::Dialer,
        }
    }

    fn standing(&self, id: u32) -> Option<Standing> {
        self.open.get(&id).map(|s| s.standing)
    }

    /// Decide whether the peer is served open space `id`, from the device it proved and the
    /// membership here. A device still in the space is served, a removed one denied, and so
    /// is one that holds an invite still to be taken up (it needs the records to join). A peer
    /// that proved no device the log knows is served if this node serves such peers (a member
    /// device, or a seeder's partner), otherwise denied, once `settle` says it has said all
    /// it will (before that it may still be a device whose Join is on its way). A space
    /// from before roles, or one whose records haven't come yet, is served to anyone who
    /// knows its address.
    fn judge(&mut self, id: u32, settle: bool, local: &dyn Local) {
        let Some(s) = self.open.get(&id) else {
            return;
        };
        if s.standing == Standing::Denied {
            return;
        }
        let address = s.address;
        let m = local.membership(&address);
        let verdict = match m.as_deref().filter(|m| m.is_governed()) {
            None => Some(None),
            Some(m) => match s.device.and_then(|d| m.members.get(&d)) {
                // Once it has said what records it holds: it is sent only those it lacks.
                Some(member) if member.removed => {
                    (settle || s.standing == Standing::Served).then_some(Some(Denial::Removed))
                }
                Some(_) => Some(None),
                // Joining: the invite is pending, or used by this very device.
                None if s.invite.and_then(|i| m.invites.get(&i)).is_some_and(|i| {
                    !i.revoked && i.used_by.is_none_or(|d| Some(d) == s.device)
                }) =>
                {
                    Some(None)
                }
                None if settle || s.standing == Standing::Served => {
                    let peer = self.peer.unwrap_or_default();
                    if local.serves_unproven(&address, &peer, self.role == Role::Dialer) {
                        Some(None)
                    } else {
                        Some(Some(Denial::NotAMember))
                    }
                }
                None => None,
            },
        };
        match verdict {
            Some(None) if s.standing == Standing::Pending => self.serve(id, local),
            None | Some(None) => {}
            Some(Some(reason)) => {
                // A removed device learns that it was, from the records that say so and
                // what they had seen; nothing newer.
                let device = s.device;
                if let (Denial::Removed, Some(device)) = (reason, device) {
                    let records =
                        crate::space::members::removal_of(&local.records(&address), &device);
                    self.push_records(id, records);
                }
                self.stop(id);
                self.events.push_back(Event::Denying {
                    space: address,
                    reason,
                });
                // A peer from before roles can't read it: it is simply told nothing more.
                if self.peer_members {
                    self.send(Message::Denied { space: id, reason });
                }
            }
        }
    }

    /// Nothing more happens of open space `id` on this connection.
    fn stop(&mut self, id: u32) {
        if let Some(s) = self.open.get_mut(&id) {
            s.standing = Standing::Denied;
            s.wanted.clear();
            s.repairing.clear();
            s.resending.clear();
            s.withheld_offers.clear();
            s.records_owed = 0;
            s.records_unacked = 0;
        }
    }

    fn on_open(
        &mut self,
        id: u32,
        discovery: DiscoveryKey,
        capability: Capability,
        local: &dyn Local,
    ) -> Result<(), SyncError> {
        let peer_role = match self.role {
            Role::Dialer => Role::Listener,
            Role::Listener => Role::Dialer,
        };
        if let Some(address) = self.asked.get(&id).copied() {
            // The answer to our own request: the peer must prove the same knowledge.
            if address.discovery_key() != discovery
                || !capability.verify(&address, &self.conn_secret, peer_role)
            {
                return Err(SyncError::PeerMisbehaved(
                    "answered a space request without proving knowledge of it".into(),
                ));
            }
            self.asked.remove(&id);
            self.start_space(id, address, local);
            return Ok(());
        }
        // A request. Ids of the peer's requests have the peer's parity.
        let theirs = match peer_role {
            Role::Dialer => id.is_multiple_of(2),
            Role::Listener => id % 2 == 1,
        };
        if !theirs || id >= MAX_SPACES_PER_CONNECTION || self.open.contains_key(&id) {
            return Err(SyncError::PeerMisbehaved(format!("bad space id {id}")));
        }
        let verified = local
            .space_for(&discovery)
            .filter(|a| capability.verify(a, &self.conn_secret, peer_role));
        let Some(address) = verified else {
            // Say nothing: not "unknown", not "wrong capability".
            self.failed_opens += 1;
            if self.failed_opens > MAX_FAILED_OPENS {
                return Err(SyncError::PeerMisbehaved(
                    "too many requests for spaces it could not prove".into(),
                ));
            }
            return Ok(());
        };
        self.send(Message::OpenSpace {
            space: id,
            discovery,
            capability: Capability::new(&address, &self.conn_secret, self.role),
        });
        self.start_space(id, address, local);
        Ok(())
    }

    fn start_space(&mut self, id: u32, address: Address, local: &dyn Local) {
        let governed = local.membership(&address).is_some_and(|m| m.is_governed());
        self.open.insert(
            id,
            OpenSpace {
                address,
                remote: BTreeMap::new(),
                wanted: BTreeMap::new(),
                refusing: BTreeMap::new(),
                refused: BTreeMap::new(),
                repairing: Default::default(),
                resending: Default::default(),
                fetched: Default::default(),
                peer_records: Default::default(),
                records_received: 0,
                records_unacked: 0,
                records_owed: 0,
                listed: false,
                withheld_offers: Default::default(),
                withheld_ours: Default::default(),
                standing: Standing::Pending,
                device: None,
                invite: None,
            },
        );
        // Who this node is first, if it is a device of the space: the peer may serve the
        // space only to its devices.
        if self.peer_members {
            if let Some((proof, invite)) =
                local.prove_device(&address, &self.conn_secret, self.role)
            {
                self.send(Message::Device {
                    space: id,
                    proof,
                    invite,
                });
            }
        }
        let peer = self.peer.unwrap_or_default();
        if !governed || local.serves_unproven(&address, &peer, self.role == Role::Dialer) {
            self.serve(id, local);
        }
    }

    /// Start replicating open space `id` with the peer.
    fn serve(&mut self, id: u32, local: &dyn Local) {
        let Some(s) = self.open.get_mut(&id) else {
            return;
        };
        s.standing = Standing::Served;
        let address = s.address;
        self.events
            .push_back(Event::SpaceOpened { id, space: address });
        // Who is in the space first: the peer judges our feeds by it.
        self.send_records(id, local.records(&address));
        let m = local.membership(&address);
        let (offers, withheld): (Vec<FeedOffer>, Vec<FeedOffer>) = local
            .offers(&address)
            .into_iter()
            .partition(|o| admission(m.as_deref(), &o.cert.feed) != Admission::No);
        if let Some(s) = self.open.get_mut(&id) {
            s.withheld_ours = withheld.into_iter().map(|o| o.cert.feed).collect();
        }
        for chunk in offers.chunks(MAX_FEEDS_PER_LIST) {
            self.send(Message::FeedList {
                space: id,
                feeds: chunk.to_vec(),
            });
        }
        if offers.is_empty() && self.peer_members {
            // Said anyway: the peer then knows it has heard everything we hold.
            self.send(Message::FeedList {
                space: id,
                feeds: Vec::new(),
            });
        }
    }

    fn on_offer(
        &mut self,
        id: u32,
        address: Address,
        offer: FeedOffer,
        local: &dyn Local,
    ) -> Result<(), SyncError> {
        let feed = offer.cert.feed;
        let m = local.membership(&address);
        let governed = m.as_deref().filter(|m| m.is_governed());
        match offer.cert.clone().verify_in(&address, governed) {
            Ok(_) => {}
            // Not in the log (yet), or a reader's: not taken, judged again when records come.
            Err(SpaceError::NotAMember { .. }) => {
                self.withhold(id, offer);
                return Ok(());
            }
            // A governed space's certificate, and no records of it here yet.
            Err(SpaceError::BadCertificate { .. }) if governed.is_none() && offer.cert.is_own() => {
                self.withhold(id, offer);
                return Ok(());
            }
            Err(e) => return Err(SyncError::PeerMisbehaved(format!("feed offer: {e}"))),
        }
        let (stored, _) = local.stored(&feed);
        let known = stored > 0 || local.offers(&address).iter().any(|o| o.cert.feed == feed);
        if !known {
            if local.feed_count(&address) >= MAX_FEEDS_PER_SPACE {
                tracing::warn!(%address, %feed, "space has too many feeds; offer ignored");
                return Ok(());
            }
            self.actions.push_back(Action::AddFeed {
                space: address,
                cert: offer.cert.clone(),
            });
        }
        let s = self.open.get_mut(&id).expect("checked open");
        s.remote.entry(feed).or_insert(0);
        if let Some(head) = offer.head {
            self.on_head(id, address, head, local)?;
        }
        // A prefix of a longer head, verified there: worth fetching as far as it goes (its
        // data is verified against that head when it comes).
        if let Some(prefix) = offer.prefix {
            let s = self.open.get_mut(&id).expect("checked open");
            let remote = s.remote.entry(feed).or_insert(0);
            if prefix > *remote {
                *remote = prefix;
                self.want_if_behind(id, address, feed, local);
            }
        }
        // Damaged there: the peer really holds what comes before, until it says otherwise; if
        // we lack what comes after, whoever syncs should know it can't come from this peer now.
        if let Some(d) = offer.damaged_from {
            let s = self.open.get_mut(&id).expect("checked open");
            let remote = s.remote.entry(feed).or_insert(0);
            let offered = *remote;
            *remote = (*remote).min(d);
            if local.stored(&feed).0 < offered {
                self.events.push_back(Event::Unavailable {
                    space: address,
                    feed,
                    from: d,
                });
            }
        }
        Ok(())
    }

    /// Keep an offer the membership here does not admit (yet), to judge it again when records
    /// arrive.
    fn withhold(&mut self, id: u32, offer: FeedOffer) {
        let Some(s) = self.open.get_mut(&id) else {
            return;
        };
        let feed = offer.cert.feed;
        if s.withheld_offers.len() >= MAX_WITHHELD_OFFERS && !s.withheld_offers.contains_key(&feed)
        {
            tracing::debug!(space = %s.address, %feed, "too many offers not admitted; dropped");
            return;
        }
        s.withheld_offers.insert(feed, offer);
    }

    fn on_head(
        &mut self,
        id: u32,
        address: Address,
        head: SignedHead,
        local: &dyn Local,
    ) -> Result<(), SyncError> {
        let feed = head.feed;
        let length = head.length;
        let verified = head
            .verify()
            .map_err(|e| SyncError::PeerMisbehaved(format!("head: {e}")))?;
        // Equal lengths or a prefix of ours: the roots must agree, or the writer forked. (A
        // longer head is checked against our prefix when its data arrives.)
        if let Some(evidence) = local.contradicts(&verified) {
            self.actions.push_back(Action::RecordFork {
                space: address,
                evidence: Box::new(evidence),
            });
            self.events.push_back(Event::Forked {
                space: address,
                feed,
            });
            let s = self.open.get_mut(&id).expect("checked open");
            s.remote.entry(feed).or_insert(0);
            self.refuse(id, address, feed, Refusal::Frozen);
            return Ok(());
        }
        let s = self.open.get_mut(&id).expect("checked open");
        let remote = s.remote.entry(feed).or_insert(0);
        *remote = (*remote).max(length);
        self.want_if_behind(id, address, feed, local);
        self.fetch_damaged(id, feed, local);
        Ok(())
    }

    /// Ask the peer for good copies of our damaged entries of `feed` that it holds.
    fn fetch_damaged(&mut self, id: u32, feed: FeedKey, local: &dyn Local) {
        let Some(s) = self.open.get_mut(&id) else {
            return;
        };
        let remote = s.remote.get(&feed).copied().unwrap_or(0);
        if s.repairing.contains(&feed) {
            return;
        }
        let damaged: Vec<u64> = local
            .damaged(&feed)
            .into_iter()
            .filter(|i| *i < remote && !s.fetched.contains(&(feed, *i)))
            .collect();
        if damaged.is_empty() {
            return;
        }
        s.repairing.insert(feed);
        // The first contiguous run, at most a data message's entries: one request.
        let from = damaged[0];
        let mut to = from + 1;
        for i in damaged.into_iter().skip(1) {
            if i != to || to - from >= crate::wire::MAX_ENTRIES_PER_DATA as u64 {
                break;
            }
            to = i + 1;
        }
        for i in from..to {
            s.fetched.insert((feed, i));
        }
        let runs = [(from, to)];
        // One transfer per feed at a time: the next run is asked for when this one ends.
        if let Some((from, to)) = runs.first().copied() {
            self.transmits.push_back(Transmit(Message::Fetch {
                space: id,
                feed,
                from,
                to,
            }));
        }
    }

    fn want_if_behind(&mut self, id: u32, address: Address, feed: FeedKey, local: &dyn Local) {
        let Some(s) = self.open.get_mut(&id) else {
            return;
        };
        let remote = s.remote.get(&feed).copied().unwrap_or(0);
        let (stored, frozen) = local.stored(&feed);
        if remote <= stored || s.wanted.contains_key(&feed) {
            return;
        }
        if frozen {
            return self.refuse(id, address, feed, Refusal::Frozen);
        }
        match admission(local.membership(&address).as_deref(), &feed) {
            // No longer admitted (a writer made reader before it wrote): simply not wanted.
            Admission::No => return,
            Admission::Upto(Some(limit)) if stored >= limit => {
                return self.refuse(id, address, feed, Refusal::Removed);
            }
            Admission::Upto(_) => {}
        }
        if let Err(reason) = local.room(&address, 1) {
            return self.refuse(id, address, feed, reason);
        }
        s.refusing.remove(&feed);
        s.wanted.insert(feed, stored);
        self.events.push_back(Event::Behind {
            space: address,
            feed,
            have: stored,
            offered: remote,
        });
        self.transmits.push_back(Transmit(Message::Want {
            space: id,
            feed,
            from: stored,
        }));
    }
}
