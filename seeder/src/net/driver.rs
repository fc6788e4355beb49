/*!
The connection driver: runs one [`Session`] over one QUIC connection, carrying out what it asks
against this node's store, and relays new heads and membership records between all of this
node's connections (in one queue, so each connection hears them in the order they came).

Per connection:
- one bidirectional control stream (the dialer opens it), read by a task that forwards
  messages to the main loop, written by the main loop;
- one unidirectional stream per feed transfer each way: [`Action::Serve`] opens one and sends
  `Data` batches of at most [`MAX_DATA_BYTES`]; each incoming one is read by a task that feeds
  its frames to a [`Transfer`] (the pure state machine that admits, gathers and judges them)
  and carries out the stores it asks for: verify every batch against its signed head and
  append it, on the blocking pool, while the next group is read;
- the main loop polls the session (actions first, as its contract says), writes its control
  messages, and turns events into acknowledgements and relays.

Bounds: every frame read is charged to the connection's and the node's byte budgets before
its body is buffered, and must arrive within a deadline once begun (see `frames`); groups
being verified and stored at once across all connections ([`MAX_BATCHES_IN_FLIGHT`], taken
only once a group is wholly read, so a stalled stream holds no one else up); QUIC's windows
per stream and connection (see the module above); a timeout on every control write so a peer
that stops reading is dropped instead of stalling us. A failed verification is the peer's
fault: the connection is closed and nothing of that batch is stored.

A connection we accepted starts unproven ([`Admit::Unproven`]): small windows, no data
streams, tiny frames, until the peer proves a capability for a space held here.
*/

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch, Semaphore};

use super::frames::{Budget, Charge, Frames, Next};
use super::{send_message, Connection, NetError, NodeId};
use crate::feed::{verify_batch, FeedKey, SignedHead};
use crate::space::{Address, MembershipCert, Record, VerifiedRecord};
use crate::store::Store;
use crate::sync::transfer::{
    DataMsg, Ingest, Limits, Read, StoreOutcome, Stored, Transfer, TransferEvent,
};
use crate::sync::{Action, Event, Local, Session, SyncError, Transmit};
use crate::wire::{Message, Refusal, MAX_DATA_BYTES, MAX_ENTRIES_PER_DATA};

/// Received groups being verified and stored at once, over all connections: the blocking
/// pool's share for ingest (each is at most [`COALESCE_BYTES`] plus one message, already
/// charged to the frame budgets).
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;

/// How long gathering a group waits for the transfer's next frame to begin: frames already
/// on their way arrive in well under this on any link fast enough to be worth gathering for;
/// otherwise what is in hand is stored at once.
const GATHER_WAIT: Duration = Duration::from_millis(20);

/// Entries of one transfer gathered into one append: fdatasync per 4 MiB runs the disk near
/// its sequential speed (one per 1 MiB message costs half of it), and 4 MiB is what a
/// stream's receive window lets the sender have in flight anyway.
pub const COALESCE_BYTES: usize = 4 << 20;

/// Messages from a connection's tasks to its main loop waiting to be handled; the tasks wait
/// when it's full.
const EVENT_QUEUE: usize = 64;

/// New heads waiting to be relayed to each connection; a connection that falls further
/// behind re-announces every feed instead.
const RELAY_QUEUE: usize = 1024;

/// Spaces to open with connected peers waiting to be taken up by their connections (a space
/// was just added here); one that falls further behind gets them at its next connection.
const OPEN_QUEUE: usize = 256;

/// How a connection is let in.
pub enum Admit {
    /// We dialed the peer, or trust it otherwise: full windows at once.
    Open,
    /// A connection we accepted: small windows, no data streams and frames of at most
    /// [`UNPROVEN_FRAME_LEN`](super::frames::UNPROVEN_FRAME_LEN) until the peer proves it
    /// knows a space held here. Then `prove` is asked for a proven peer's slot; `false`
    /// closes the connection as busy.
    Unproven(Box<dyn FnOnce() -> bool + Send>),
}

/// A control write that takes longer than this means the peer stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Introductions and punches waiting for connections to pass them on: a few per partner
/// being dialed; a lagging connection misses some, and the asker asks again.
const RENDEZVOUS_QUEUE: usize = 64;

/// How often one peer may ask for an introduction or make us punch: each costs a few packets
/// to an address the peer chose, so a peer can't turn us into a packet cannon.
pub const RENDEZVOUS_EVERY: Duration = Duration::from_millis(500);

/// Most peers whose last rendezvous time is kept (older ones are forgotten first); beyond
/// this a flood of identities can't grow the table.
const RENDEZVOUS_PEERS: usize = 1024;

/// How long a partner we can't reach directly is waited for through an introduction, asked
/// again every [`INTRODUCE_EVERY`] (the peers that could introduce us may still be connecting).
pub const PUNCH_WAIT: Duration = Duration::from_secs(10);
const INTRODUCE_EVERY: Duration = Duration::from_secs(1);

/// Handshakes started towards an introduced address (see `dial_introduced`).
const PUNCHED_DIALS: usize = 4;

/// Reach `node` through an introduction: ask the peers we dialed that hold a space with us,
/// then dial the address one of them sees it at (our ask made it tell `node` to punch
/// towards us).
pub async fn dial_introduced(
    endpoint: &super::Endpoint,
    driver: &Driver,
    node: NodeId,
) -> Result<(Connection, std::net::SocketAddr), String> {
    let mut punches = driver.punches();
    let found = tokio::time::timeout(PUNCH_WAIT, async {
        let mut ask = tokio::time::interval(INTRODUCE_EVERY);
        loop {
            tokio::select! {
                _ = ask.tick() => driver.introduce(node),
                p = punches.recv() => match p {
                    Ok(p) if p.node == node && p.dial => return Ok(p.addr),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err("shutting down".to_string())
                    }
                },
            }
        }
    })
    .await
    .map_err(|_| "no connected peer introduced us to it".to_string())??;
    // Our first handshake packet may reach the other NAT before the other side's punch has
    // opened it, and QUIC resends only after about a second: fresh attempts a head start
    // apart get through as soon as the hole is open.
    let (mut conn, at) = endpoint
        .connect_any(&[found; PUNCHED_DIALS], Some(node))
        .await
        .map_err(|e| e.to_string())?;
    conn.introduced = true;
    Ok((conn, at))
}

/// Whichever of two ways to reach a node connects first (its addresses, an introduction); if
/// one fails, the other; if both do, both reasons. The loser is dropped.
pub async fn first_connected<A, B>(
    direct: A,
    introduced: B,
) -> Result<(Connection, std::net::SocketAddr), String>
where
    A: std::future::Future<Output = Result<(Connection, std::net::SocketAddr), String>>,
    B: std::future::Future<Output = Result<(Connection, std::net::SocketAddr), String>>,
{
    tokio::pin!(direct, introduced);
    tokio::select! {
        r = &mut direct => match r {
            Ok(c) => Ok(c),
            Err(d) => (&mut introduced).await.map_err(|i| format!("{d}; {i}")),
        },
        r = &mut introduced => match r {
            Ok(c) => Ok(c),
            Err(i) => (&mut direct).await.map_err(|d| format!("{d}; {i}")),
        },
    }
}

/// A peer with open spaces, as introductions and relaying need it.
struct Proven {
    conn_id: u64,
    spaces: std::collections::BTreeSet<Address>,
    conn: quinn::Connection,
    /// We dialed it (a partner the admin named, or the seeder a member syncs with).
    dialed: bool,
    /// The connection itself goes through a relay: its address is no address, and it carries
    /// no tunnels of its own.
    relayed: bool,
}

impl Proven {
    fn of(conn_id: u64, conn: &Connection) -> Proven {
        Proven {
            conn_id,
            spaces: Default::default(),
            conn: conn.conn.clone(),
            dialed: conn.role == crate::space::Role::Dialer,
            relayed: conn.relayed_via.is_some(),
        }
    }
}

/// How long, once nothing else has connected, a node is waited for before a relay is asked to
/// carry the connection: a direct or hole-punched path, when there is one, is found well
/// within this (connect_ms_punched ≤ 340 ms in the NAT tests), and it is the better path.
pub const RELAY_AFTER: Duration = Duration::from_secs(3);

/// Reach `node`: at its addresses (`direct`), through an introduction, and, if neither has
/// connected after [`RELAY_AFTER`], through a relay; whichever connects first wins.
pub async fn reach<D>(
    endpoint: &super::Endpoint,
    driver: &Driver,
    node: NodeId,
    direct: D,
) -> Result<(Connection, std::net::SocketAddr), String>
where
    D: std::future::Future<Output = Result<(Connection, std::net::SocketAddr), String>>,
{
    let unrelayed = first_connected(direct, dial_introduced(endpoint, driver, node));
    let relayed = async {
        tokio::time::sleep(RELAY_AFTER).await;
        dial_relayed(endpoint, driver, node).await
    };
    first_connected(unrelayed, relayed).await
}

/// Reach `node` through a tunnel carried by a peer we dialed that both of us hold a space with.
pub async fn dial_relayed(
    endpoint: &super::Endpoint,
    driver: &Driver,
    node: NodeId,
) -> Result<(Connection, std::net::SocketAddr), String> {
    let (streams, via) = driver.open_tunnel(node).await?;
    let conn = endpoint
        .connect_tunnel(streams, node, via)
        .await
        .map_err(|e| format!("through relay {}: {e}", via.short()))?;
    Ok((conn, super::tunnel::tunnel_addr(&node)))
}

/// A tunnel a relay brought us: packets of `origin`'s connection, carried by `via`.
pub struct IncomingTunnel {
    pub streams: super::tunnel::Streams,
    pub origin: NodeId,
    pub via: NodeId,
}

/// Incoming tunnels waiting to be taken by the node's accept loop; beyond this the relay is
/// told we refuse (the asker tries again).
const TUNNELS_WAITING: usize = 8;

/// What this node carries for others (see `tunnel`): how many tunnels at once, and how fast
/// all of them together.
struct Relaying {
    tunnels: Arc<Semaphore>,
    rate: Arc<super::tunnel::Rate>,
    /// Tunnels each asker has open now: at most [`Relaying::per_asker`], so one node (or a few
    /// colluding ones) can't take the whole budget.
    askers: Arc<std::sync::Mutex<std::collections::HashMap<NodeId, usize>>>,
    per_asker: usize,
}

/// An asker's place among the tunnels it has open; given back when dropped.
struct AskerShare(
    Arc<std::sync::Mutex<std::collections::HashMap<NodeId, usize>>>,
    NodeId,
);

impl Relaying {
    fn take(&self, asker: NodeId) -> Option<AskerShare> {
        let mut a = self.askers.lock().expect("askers lock");
        let n = a.entry(asker).or_default();
        if *n >= self.per_asker {
            return None;
        }
        *n += 1;
        Some(AskerShare(self.askers.clone(), asker))
    }
}

impl Drop for AskerShare {
    fn drop(&mut self) {
        let mut a = self.0.lock().expect("askers lock");
        if let Some(n) = a.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                a.remove(&self.1);
            }
        }
    }
}

/// What connections pass on for hole punching (see `Message::Introduce` / `Punch`).
#[derive(Clone, Debug)]
enum Rendezvous {
    /// Ask every peer we hold a space with to introduce us to `node`.
    Introduce { node: NodeId },
    /// Tell peer `to` that `node` is at `addr`.
    Punch {
        to: NodeId,
        node: NodeId,
        addr: std::net::SocketAddr,
        dial: bool,
    },
}

/// A peer we hold a space with told us `node` is at `addr`: punch there (and dial, `dial`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Punched {
    pub node: NodeId,
    pub addr: std::net::SocketAddr,
    pub dial: bool,
}

/// Whether `peer` may make us do rendezvous or relay work now: at most once per
/// [`RENDEZVOUS_EVERY`], in a table of at most [`RENDEZVOUS_PEERS`].
fn allowed_now(
    table: &std::sync::Mutex<std::collections::HashMap<NodeId, tokio::time::Instant>>,
    peer: NodeId,
) -> bool {
    let now = tokio::time::Instant::now();
    let mut at = table.lock().expect("rendezvous lock");
    if at
        .get(&peer)
        .is_some_and(|t| now.duration_since(*t) < RENDEZVOUS_EVERY)
    {
        return false;
    }
    if at.len() >= RENDEZVOUS_PEERS {
        at.retain(|_, t| now.duration_since(*t) < RENDEZVOUS_EVERY);
    }
    // A table full of peers that all asked just now: nobody new is let through.
    if at.len() >= RENDEZVOUS_PEERS {
        return false;
    }
    at.insert(peer, now);
    true
}

/// Room admitted for a transfer's bytes until they are stored (or not): dropping it gives the
/// room back. See [`Node::reserve`].
#[must_use = "the room is given back when this is dropped"]
pub struct Reservation(Option<Box<dyn FnOnce() + Send>>);

impl Reservation {
    /// A reservation that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Reservation {
        Reservation(Some(Box::new(release)))
    }

    /// Nothing to give back.
    pub fn none() -> Reservation {
        Reservation(None)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

/// What the driver needs of this node beyond [`Local`].
pub trait Node: Local + Send + Sync + 'static {
    fn store(&self) -> &Store;
    /// Admit `bytes` more of `space` before they are read into an append: like
    /// [`Local::room`], but the bytes count as taken until the reservation is dropped, so
    /// transfers running at once can't together overrun a quota or the disk's reserve.
    fn reserve(&self, space: &Address, bytes: u64) -> Result<Reservation, Refusal> {
        self.room(space, bytes).map(|()| Reservation::none())
    }
    /// Record a member feed of `space` whose certificate the session verified.
    fn add_feed(&self, space: &Address, cert: &MembershipCert) -> Result<(), String>;
    /// Keep membership records of `space` a peer sent, durably. Returns those new here, and
    /// any this node made in answer (a joining device's Join): they go on to every peer.
    fn add_records(
        &self,
        space: &Address,
        records: Vec<VerifiedRecord>,
    ) -> Result<Vec<VerifiedRecord>, String>;
    /// The certificate of `feed` in `space`, if it is a member here.
    fn member(&self, space: &Address, feed: &FeedKey) -> Option<MembershipCert>;
    /// The peer acknowledged storing `length` entries of `feed`.
    fn acked(&self, _peer: NodeId, _space: &Address, _feed: FeedKey, _length: u64) {}
    /// The peer refuses (more of) `feed`, for `reason`.
    fn refused(&self, _peer: NodeId, _space: &Address, _feed: FeedKey, _reason: &Refusal) {}
    /// The peer does not serve `space` to this node, for `reason`.
    fn denied(&self, _peer: NodeId, _space: &Address, _reason: crate::wire::Denial) {}
    /// The peer's head of `feed` contradicts ours: the writer forked (recorded already).
    fn forked(&self, _peer: NodeId, _space: &Address, _feed: FeedKey) {}
    /// `count` damaged entries of `feed` were rewritten with the peer's good copies.
    fn repaired(&self, _peer: NodeId, _space: &Address, _feed: FeedKey, _count: u64) {}
    /// This node does not take (more of) the peer's `feed`, for `reason`.
    fn refusing(&self, _peer: NodeId, _space: &Address, _feed: FeedKey, _reason: &Refusal) {}
    /// The peer can't serve `feed` from `from` on (its copy is damaged there).
    fn unavailable(&self, _peer: NodeId, _space: &Address, _feed: FeedKey, _from: u64) {}
    /// Data received from a peer was stored: `feed` now holds `length` entries here.
    fn appended(&self, _space: &Address, _feed: FeedKey, _length: u64) {}
    /// A peer offers `offered` entries of `feed`, of which `have` are here: fetching starts.
    fn fetching(&self, _space: &Address, _feed: FeedKey, _have: u64, _offered: u64) {}
    /// Connection `id` (unique for this node's lifetime) started.
    fn connected(&self, _id: u64, _conn: &Connection) {}
    /// `peer`, which holds a space with us, sees us at `addr`; `dialed`: we dialed it (a
    /// partner), so the claim is worth more than a stranger's.
    fn observed(&self, _peer: NodeId, _dialed: bool, _addr: std::net::SocketAddr) {}
    /// The peer of connection `id` proved it knows `space`, and is served it.
    fn space_opened(&self, _id: u64, _space: &Address) {}
    /// The peer of connection `id` is no longer served `space` (see [`Event::Denying`]).
    fn space_denied(&self, _id: u64, _space: &Address) {}
    /// Connection `id` ended.
    fn disconnected(&self, _id: u64) {}
    /// Relayed connection `id` from `from` to `to` started; `bytes` counts what it carries.
    fn relay_started(&self, _id: u64, _from: NodeId, _to: NodeId, _bytes: Arc<AtomicU64>) {}
    /// Relayed connection `id` ended.
    fn relay_ended(&self, _id: u64) {}
}

/// Tells the node a connection ended, however `run` returns.
struct Ended<'a>(&'a dyn Node, u64);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.disconnected(self.1);
    }
}

/// A head or membership records to pass on to every other connection.
#[derive(Clone, Debug)]
struct Relay {
    space: Address,
    what: Relayed,
    /// The connection it came from (not told again).
    origin: u64,
}

#[derive(Clone, Debug)]
enum Relayed {
    /// A feed grew here (boxed: a head and a certificate are large beside an `Arc`).
    Head(Box<(MembershipCert, SignedHead)>),
    /// Records new here, shared by every connection's copy of the message.
    Records(Arc<Vec<Record>>),
}

/// Shared by all connections of a node.
pub struct Driver {
    node: Arc<dyn Node>,
    relay: broadcast::Sender<Relay>,
    opens: broadcast::Sender<(NodeId, Address)>,
    batches: Arc<Semaphore>,
    /// The node-wide budget of received frames (see `frames`).
    frame_budget: Arc<Semaphore>,
    /// Proven connections, and the receive window each gets (see [`super::window_share`]).
    windows: Arc<Windows>,
    next_id: AtomicU64,
    node_id: NodeId,
    rendezvous: broadcast::Sender<Rendezvous>,
    punched: broadcast::Sender<Punched>,
    /// Connections with at least one open space, by peer: the address each peer is seen at
    /// and the spaces open with it.
    proven: std::sync::Mutex<std::collections::HashMap<NodeId, Proven>>,
    /// When each peer last asked for an introduction or a punch.
    rendezvous_at: std::sync::Mutex<std::collections::HashMap<NodeId, tokio::time::Instant>>,
    /// Nodes we were told to punch towards, and when (so their connection is known to be
    /// hole-punched when it comes).
    punched_at: std::sync::Mutex<std::collections::HashMap<NodeId, tokio::time::Instant>>,
    /// When each peer last asked us to carry a tunnel.
    tunnel_at: std::sync::Mutex<std::collections::HashMap<NodeId, tokio::time::Instant>>,
    /// Set when this node relays for others (seeders); members don't.
    relaying: std::sync::OnceLock<Relaying>,
    /// Where tunnels to us go; none when nothing here accepts connections (members).
    tunnels_in: std::sync::OnceLock<mpsc::Sender<IncomingTunnel>>,
}

/// How long after a punch request an incoming connection from that node counts as punched.
const PUNCHED_WITHIN: Duration = Duration::from_secs(30);

/// Asks the node whether an accepted connection that just proved itself may stay.
type Prove = Box<dyn FnOnce() -> bool + Send>;

/// The proven connections sharing [`super::NODE_RECEIVE_WINDOWS`].
struct Windows {
    proven: std::sync::atomic::AtomicUsize,
    size: watch::Sender<u32>,
}

/// A proven connection's place among those sharing the windows; gives it back when dropped.
struct WindowShare(Arc<Windows>);

impl Windows {
    fn join(self: &Arc<Self>) -> WindowShare {
        let n = self.proven.fetch_add(1, Ordering::SeqCst) + 1;
        self.size.send_replace(super::window_share(n));
        WindowShare(self.clone())
    }
}

impl Drop for WindowShare {
    fn drop(&mut self) {
        let n = self
            .0
            .proven
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        self.0.size.send_replace(super::window_share(n));
    }
}

enum Ev {
    /// A control message, boxed (messages are large and most events are small), with the
    /// budget it holds until handled.
    Control(Result<Option<(Box<Message>, Charge)>, NetError>),
    Appended {
        id: u32,
        feed: FeedKey,
        length: u64,
        head: Option<SignedHead>,
    },
    TransferEnded {
        id: u32,
        feed: FeedKey,
    },
    /// Damaged entries of `feed` were rewritten with the peer's copies.
    Repaired {
        id: u32,
        feed: FeedKey,
        count: u64,
    },
    /// Nothing of `feed` could be served from `from` as the peer asked.
    Unservable {
        id: u32,
        feed: FeedKey,
        from: u64,
    },
    /// Received data of `feed` was not stored, for `reason` (not the peer's fault).
    Refusing {
        id: u32,
        feed: FeedKey,
        reason: Refusal,
    },
    Close(String),
}

/// A data message with its entry count (`None`: nothing sendable at its start), and the index
/// of a damaged entry that ended it early.
pub(crate) type DataBatch = (Option<(Message, u64)>, Option<u64>);

/// The next data message of a transfer of `feed` from `from` to `end`, starting at `pos`:
/// as many entries as fit [`MAX_DATA_BYTES`] (plus the one that crosses it) and at most
/// [`MAX_ENTRIES_PER_DATA`] — the limits the receiver's decoder enforces, so every message
/// built here is one it takes — with the proofs the receiver needs. Returns the message and
/// its entry count (`None` if the entry at `pos` is damaged here), and the index of a damaged
/// entry that ended the batch early.
pub(crate) fn data_message(
    store: &crate::store::Store,
    target: &crate::store::ServeTarget,
    id: u32,
    feed: FeedKey,
    from: u64,
    pos: u64,
    end: u64,
) -> Result<DataBatch, crate::store::StoreError> {
    let (entries, damaged) =
        store.read_range_good(&feed, pos, end, MAX_DATA_BYTES, MAX_ENTRIES_PER_DATA)?;
    if entries.is_empty() {
        return Ok((None, damaged));
    }
    let after = pos + entries.len() as u64;
    let proof = if after < target.length {
        Some(store.consistency_proof(&feed, after, target.length)?)
    } else {
        None
    };
    // The first batch also proves our tree at `from` extends to the head, so the receiver
    // can tell a writer's fork from a bad batch.
    let prefix = if pos == from && pos > 0 && target.prefix.is_none() {
        Some((
            store.root_at(&feed, pos)?,
            store.consistency_proof(&feed, pos, target.length)?,
        ))
    } else {
        None
    };
    let n = entries.len() as u64;
    let msg = Message::Data {
        space: id,
        feed,
        start: pos,
        entries: entries.into_iter().map(bytes::Bytes::from).collect(),
        head: target.head.clone(),
        proof,
        prefix,
        checkpoint: target.prefix.clone().map(Box::new),
    };
    Ok((Some((msg, n)), damaged))
}

impl Driver {
    pub fn new(node: Arc<dyn Node>, node_id: NodeId) -> Arc<Driver> {
        let (relay, _) = broadcast::channel(RELAY_QUEUE);
        let (opens, _) = broadcast::channel(OPEN_QUEUE);
        Arc::new(Driver {
            node,
            relay,
            opens,
            batches: Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT)),
            frame_budget: super::frames::node_budget(),
            windows: Arc::new(Windows {
                proven: Default::default(),
                size: watch::Sender::new(super::CONNECTION_RECEIVE_WINDOW),
            }),
            next_id: AtomicU64::new(1),
            node_id,
            rendezvous: broadcast::channel(RENDEZVOUS_QUEUE).0,
            punched: broadcast::channel(RENDEZVOUS_QUEUE).0,
            proven: Default::default(),
            rendezvous_at: Default::default(),
            punched_at: Default::default(),
            tunnel_at: Default::default(),
            relaying: Default::default(),
            tunnels_in: Default::default(),
        })
    }

    /// Carry connections between peers we hold a space with: at most `tunnels` at once, all
    /// together within `bytes_per_s` (see `tunnel`). Set once; unset, nobody is relayed.
    pub fn relay_for_others(&self, tunnels: usize, bytes_per_s: u64) {
        if tunnels == 0 {
            return;
        }
        let _ = self.relaying.set(Relaying {
            tunnels: Arc::new(Semaphore::new(tunnels)),
            rate: Arc::new(super::tunnel::Rate::new(bytes_per_s)),
            askers: Default::default(),
            // A quarter of the budget each (at least one): a seeder with a few partners
            // behind strict NATs gets what it needs, and four askers are needed to fill it.
            per_asker: tunnels.div_ceil(4).max(1),
        });
    }

    /// Take the tunnels relays bring us (once; later calls get `None`). Without this, they are
    /// refused.
    pub fn accept_tunnels(&self) -> Option<mpsc::Receiver<IncomingTunnel>> {
        let (tx, rx) = mpsc::channel(TUNNELS_WAITING);
        self.tunnels_in.set(tx).ok().map(|()| rx)
    }

    /// Ask the peers we dialed that hold a space with us to carry a tunnel to `node`, all at
    /// once; the first that opens one wins.
    pub async fn open_tunnel(
        &self,
        node: NodeId,
    ) -> Result<(super::tunnel::Streams, NodeId), String> {
        use super::tunnel::{read_status, write_header, Header, Status, Streams};
        let relays: Vec<(NodeId, quinn::Connection)> = self
            .proven
            .lock()
            .expect("proven lock")
            .iter()
            .filter(|(id, p)| **id != node && p.dialed && !p.relayed)
            .map(|(id, p)| (*id, p.conn.clone()))
            .collect();
        if relays.is_empty() {
            return Err("no relay: no peer we dialed holds a space with us".into());
        }
        let mut asks = tokio::task::JoinSet::new();
        for (via, conn) in relays {
            asks.spawn(async move {
                let opened = async {
                    let (send, recv) =
                        tokio::time::timeout(super::tunnel::OPEN_WAIT, conn.open_bi())
                            .await
                            .map_err(|_| "no room for a tunnel in time".to_string())?
                            .map_err(|e| e.to_string())?;
                    let mut streams = Streams { send, recv };
                    write_header(&mut streams.send, Header::To(node)).await?;
                    match read_status(&mut streams.recv).await? {
                        Status::Open => Ok(streams),
                        other => Err(other.describe().to_string()),
                    }
                };
                (via, opened.await)
            });
        }
        let mut why = Vec::new();
        while let Some(done) = asks.join_next().await {
            match done {
                Ok((via, Ok(streams))) => return Ok((streams, via)),
                Ok((via, Err(e))) => why.push(format!("relay {} {e}", via.short())),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(why.join("; "))
    }

    /// A tunnel stream a peer opened to us: carry it on as a relay ([`Header::To`]), or take
    /// it as a connection to us ([`Header::From`]).
    ///
    /// [`Header::To`]: super::tunnel::Header::To
    /// [`Header::From`]: super::tunnel::Header::From
    async fn tunnel_stream(
        self: Arc<Self>,
        mut streams: super::tunnel::Streams,
        peer: NodeId,
        open: watch::Receiver<Vec<(u32, Address)>>,
        (relayed, dialed): (bool, bool),
    ) {
        use super::tunnel::{read_header, Header};
        // Only from a peer with a space open here, and one hop: no tunnel inside a tunnel.
        if relayed || open.borrow().is_empty() {
            let _ = streams.recv.stop(1u32.into());
            let _ = streams.send.reset(1u32.into());
            return;
        }
        match read_header(&mut streams.recv).await {
            Ok(Header::To(node)) => self.relay(streams, peer, node).await,
            // Taken only from a relay we dialed (a partner, or the seeder a member syncs
            // with): anyone else could present itself as relayed from any node.
            Ok(Header::From(origin)) if dialed => self.take_tunnel(streams, peer, origin).await,
            Ok(Header::From(_)) => {
                let _ = streams.recv.stop(1u32.into());
                let _ = streams.send.reset(1u32.into());
            }
            Err(e) => tracing::debug!(peer = %peer.short(), error = %e, "tunnel stream dropped"),
        }
    }

    /// Carry `from`'s tunnel to `to`, if both hold a space with us, within the budget.
    async fn relay(self: Arc<Self>, mut asker: super::tunnel::Streams, from: NodeId, to: NodeId) {
        use super::tunnel::{read_status, write_header, write_status, Header, Status, Streams};
        type Opened = (Streams, (tokio::sync::OwnedSemaphorePermit, AskerShare));
        let opened: Result<Opened, Status> = async {
            let relaying = self.relaying.get().ok_or(Status::NotAllowed)?;
            if to == from || to == self.node_id {
                return Err(Status::NotAllowed);
            }
            if !allowed_now(&self.tunnel_at, from) {
                return Err(Status::Busy);
            }
            // Only between two peers that hold a space in common here, both reached without a
            // relay: the relay vouches for nothing else. One answer for "not connected to it"
            // and "no space in common", so nobody learns whom we are connected to.
            let target = {
                let proven = self.proven.lock().expect("proven lock");
                match (proven.get(&from), proven.get(&to)) {
                    // Still held here: a space removed since it was opened doesn't count.
                    (Some(a), Some(t))
                        if !a.relayed
                            && !t.relayed
                            && a.spaces.intersection(&t.spaces).any(|space| {
                                self.node.space_for(&space.discovery_key()).is_some()
                            }) =>
                    {
                        t.conn.clone()
                    }
                    _ => return Err(Status::NotAllowed),
                }
            };
            let share = relaying.take(from).ok_or(Status::Busy)?;
            let permit = relaying
                .tunnels
                .clone()
                .try_acquire_owned()
                .map_err(|_| Status::Busy)?;
            let permit = (permit, share);
            let (send, recv) = tokio::time::timeout(super::tunnel::OPEN_WAIT, target.open_bi())
                .await
                .map_err(|_| Status::Busy)?
                .map_err(|_| Status::NotConnected)?;
            let mut theirs = Streams { send, recv };
            write_header(&mut theirs.send, Header::From(from))
                .await
                .map_err(|_| Status::NotConnected)?;
            match read_status(&mut theirs.recv).await {
                Ok(Status::Open) => Ok((theirs, permit)),
                _ => Err(Status::Refused),
            }
        }
        .await;
        let (theirs, permit) = match opened {
            Ok(o) => o,
            Err(status) => {
                tracing::debug!(from = %from.short(), to = %to.short(), why = status.describe(), "not relaying");
                let _ = write_status(&mut asker.send, status).await;
                let _ = asker.send.finish();
                return;
            }
        };
        if write_status(&mut asker.send, Status::Open).await.is_err() {
            return;
        }
        let Some(relaying) = self.relaying.get() else {
            return;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = Arc::new(AtomicU64::new(0));
        tracing::info!(from = %from.short(), to = %to.short(), "relaying a connection");
        self.node.relay_started(id, from, to, bytes.clone());
        // Ended however this task ends: the splice finishing, or either connection's end
        // aborting the task.
        let _ended = Reservation::new({
            let node = self.node.clone();
            move || {
                node.relay_ended(id);
                drop(permit);
            }
        });
        super::tunnel::splice(asker, theirs, relaying.rate.clone(), bytes).await;
    }

    /// A relay brings us `origin`'s tunnel: hand it to the accept loop, if there is one.
    async fn take_tunnel(
        self: Arc<Self>,
        mut streams: super::tunnel::Streams,
        via: NodeId,
        origin: NodeId,
    ) {
        use super::tunnel::{write_status, Status};
        let Some(tx) = self.tunnels_in.get() else {
            let _ = write_status(&mut streams.send, Status::Refused).await;
            return;
        };
        let Ok(permit) = tx.clone().try_reserve_owned() else {
            let _ = write_status(&mut streams.send, Status::Refused).await;
            return;
        };
        if write_status(&mut streams.send, Status::Open).await.is_ok() {
            permit.send(IncomingTunnel {
                streams,
                origin,
                via,
            });
        }
    }

    /// Ask every peer we hold a space with to introduce us to `node` (we can't reach it
    /// directly); answers come as [`Punched`] with `dial` set.
    pub fn introduce(&self, node: NodeId) {
        let _ = self.rendezvous.send(Rendezvous::Introduce { node });
    }

    /// Punch requests from peers we hold a space with.
    pub fn punches(&self) -> broadcast::Receiver<Punched> {
        self.punched.subscribe()
    }

    /// Whether `peer` may make us do rendezvous work now (see [`RENDEZVOUS_EVERY`]).
    fn rendezvous_allowed(&self, peer: NodeId) -> bool {
        allowed_now(&self.rendezvous_at, peer)
    }

    /// Tell every connection that `feed` of `space` grew here (a local write).
    pub fn announce(&self, space: Address, cert: MembershipCert, head: SignedHead) {
        let _ = self.relay.send(Relay {
            space,
            what: Relayed::Head(Box::new((cert, head))),
            origin: 0,
        });
    }

    /// Tell every connection about membership records of `space` this device made (each
    /// peer gets those it isn't known to hold).
    pub fn announce_records(&self, space: Address, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let _ = self.relay.send(Relay {
            space,
            what: Relayed::Records(Arc::new(records)),
            origin: 0,
        });
    }

    /// Ask every connection to `peer` to open `space` with it (a space just added here).
    pub fn open_with(&self, peer: NodeId, space: Address) {
        let _ = self.opens.send((peer, space));
    }

    /// Run `conn` until it closes or `shutdown` turns true. `open` lists the spaces to ask
    /// the peer for; `caught_up`, if given, is kept up to date for `sync --once`.
    pub async fn run(
        self: Arc<Self>,
        conn: Connection,
        admit: Admit,
        open: Vec<Address>,
        caught_up: Option<watch::Sender<bool>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), NetError> {
        let mut shutdown = shutdown;
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut conn = conn;
        if conn.role == crate::space::Role::Listener {
            let now = tokio::time::Instant::now();
            conn.introduced |= self
                .punched_at
                .lock()
                .expect("punched lock")
                .get(&conn.peer)
                .is_some_and(|t| now.duration_since(*t) < PUNCHED_WITHIN);
        }
        self.node.connected(conn_id, &conn);
        let _ended = Ended(self.node.as_ref(), conn_id);
        let peer = conn.peer;
        let secret = conn.capability_secret()?;
        let mut window = self.windows.size.subscribe();
        let mut share = None;
        let mut gate = match admit {
            Admit::Open => {
                share = Some(self.windows.join());
                conn.open_up_with(*window.borrow_and_update());
                None
            }
            Admit::Unproven(prove) => Some(prove),
        };
        let budget = Budget::new(self.frame_budget.clone(), gate.is_none());
        // The session has one owner, this loop; data stream readers see only which spaces are
        // open, published after every input (before anything is said that could bring data).
        let mut session =
            Session::new(conn.role, self.node_id.0, secret).authenticated(conn.peer.0);
        let (spaces, spaces_rx) = watch::channel(Vec::<(u32, Address)>::new());
        let (mut ctl_send, ctl_recv) = match conn.role {
            crate::space::Role::Dialer => conn.conn.open_bi().await,
            crate::space::Role::Listener => conn.conn.accept_bi().await,
        }
        .map_err(NetError::Connection)?;
        let (tx, mut rx) = mpsc::channel::<Ev>(EVENT_QUEUE);
        let mut relay = self.relay.subscribe();
        let mut opens = self.opens.subscribe();
        let mut rendezvous = self.rendezvous.subscribe();
        let tasks = task_set::Tasks::default();

        // Control stream reader.
        {
            let tx = tx.clone();
            let mut frames = Frames::new(ctl_recv, budget.clone());
            tasks.spawn(async move {
                loop {
                    let r = match frames.next().await {
                        Ok(Next::Message(m, charge)) => Ok(Some((m, charge))),
                        Ok(Next::End) => Ok(None),
                        Ok(Next::NotYet) => continue,
                        Err(e) => Err(e),
                    };
                    let end = !matches!(r, Ok(Some(_)));
                    if tx.send(Ev::Control(r)).await.is_err() || end {
                        return;
                    }
                }
            });
        }
        // Tunnels (none until the connection is open: see `Admit` and `tunnel`).
        {
            let c = conn.conn.clone();
            let this = self.clone();
            let open = spaces_rx.clone();
            let inner = tasks.clone();
            let how = (
                conn.relayed_via.is_some(),
                conn.role == crate::space::Role::Dialer,
            );
            tasks.spawn(async move {
                while let Ok((send, recv)) = c.accept_bi().await {
                    let streams = super::tunnel::Streams { send, recv };
                    inner.spawn(this.clone().tunnel_stream(streams, peer, open.clone(), how));
                }
            });
        }
        // Incoming data streams (none until the connection is open: see `Admit`).
        {
            let tx = tx.clone();
            let c = conn.conn.clone();
            let this = self.clone();
            let spaces = spaces_rx.clone();
            let inner = tasks.clone();
            let budget = budget.clone();
            tasks.spawn(async move {
                while let Ok(recv) = c.accept_uni().await {
                    let frames = Frames::new(recv, budget.clone());
                    inner.spawn(
                        this.clone()
                            .receive(frames, spaces.clone(), tx.clone(), peer),
                    );
                }
            });
        }
        for space in open {
            if session.open(space).is_none() {
                tracing::warn!(%space, "too many spaces on one connection");
            }
        }

        // A plain future, so no borrow of the watch channel lives across the loop's awaits.
        let stopped = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let result: Result<(), NetError> = loop {
            if let Err(e) = self
                .pump(
                    &conn,
                    conn_id,
                    &mut session,
                    &spaces,
                    &mut ctl_send,
                    &tasks,
                    caught_up.as_ref(),
                    &tx,
                    (&mut gate, &budget, &mut share),
                )
                .await
            {
                break Err(e);
            }
            tokio::select! {
                // More or fewer proven peers: this connection's share of the windows.
                Ok(()) = window.changed(), if share.is_some() => {
                    let size = *window.borrow_and_update();
                    conn.conn.set_receive_window(quinn::VarInt::from_u32(size));
                }
                _ = &mut stopped => {
                    let bye = Message::Goodbye { reason: "shutting down".into() };
                    let _ = tokio::time::timeout(Duration::from_secs(2), send_message(&mut ctl_send, &bye)).await;
                    let _ = ctl_send.finish();
                    break Ok(());
                }
                ev = rx.recv() => {
                    let Some(ev) = ev else { break Ok(()) };
                    let s = &mut session;
                    match ev {
                        // The message's budget is given back once it is handled.
                        Ev::Control(Ok(Some((msg, _charge)))) => s.handle_message(*msg, &*self.node),
                        Ev::Control(Ok(None)) => break Ok(()),
                        Ev::Control(Err(e)) => break Err(e),
                        Ev::Appended { id, feed, length, head } => {
                            s.handle_appended(id, feed, length);
                            let space = s.open_spaces().find(|(i, _)| *i == id).map(|(_, a)| *a);
                            if let Some(space) = space {
                                self.node.appended(&space, feed, length);
                            }
                            if let Some(head) = head {
                                if let Some(space) = space {
                                    if let Some(cert) = self.node.member(&space, &feed) {
                                        let what = Relayed::Head(Box::new((cert, head)));
                                        let _ = self.relay.send(Relay { space, what, origin: conn_id });
                                    }
                                }
                            }
                        }
                        Ev::TransferEnded { id, feed } => s.handle_transfer_ended(id, feed, &*self.node),
                        Ev::Refusing { id, feed, reason } => s.handle_refusing(id, feed, reason),
                        Ev::Repaired { id, feed, count } => s.handle_repaired(id, feed, count),
                        Ev::Unservable { id, feed, from } => s.handle_unservable(id, feed, from),
                        Ev::Close(reason) => break Err(NetError::Stream(reason)),
                    }
                }
                r = relay.recv() => {
                    let s = &mut session;
                    match r {
                        Ok(r) if r.origin != conn_id => match &r.what {
                            Relayed::Head(h) => s.handle_local_head(&r.space, &h.0, &h.1),
                            Relayed::Records(records) => s.handle_local_records(&r.space, records, &*self.node),
                        },
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(lagged = n, "relay queue overflowed; re-announcing every feed and record");
                            let spaces: Vec<Address> = s.open_spaces().map(|(_, a)| *a).collect();
                            for space in spaces {
                                // The peer gets only the records it isn't known to hold.
                                s.handle_local_records(&space, &self.node.records(&space), &*self.node);
                                for offer in self.node.offers(&space) {
                                    if let Some(head) = &offer.head {
                                        s.handle_local_head(&space, &offer.cert, head);
                                    }
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => break Ok(()),
                    }
                }
                r = rendezvous.recv() => {
                    match r {
                        // Asked only of peers we dialed (partners the admin named): a member
                        // connected to us doesn't learn whom we look for.
                        Ok(Rendezvous::Introduce { node }) if conn.role == crate::space::Role::Dialer => {
                            session.introduce(node.0)
                        }
                        Ok(Rendezvous::Punch { to, node, addr, dial }) if to == peer => {
                            session.punch(node.0, addr, dial)
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break Ok(()),
                    }
                }
                o = opens.recv() => {
                    match o {
                        Ok((to, space)) if to == peer => {
                            if session.open(space).is_none() {
                                tracing::warn!(%space, "too many spaces on one connection");
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(lagged = n, "spaces to open were missed; they open at the next connection");
                        }
                        Err(broadcast::error::RecvError::Closed) => break Ok(()),
                    }
                }
            }
        };
        match &result {
            Ok(()) => conn.conn.close(0u32.into(), b"goodbye"),
            Err(e) => {
                // A peer that said goodbye, or a close from here, is how connections end:
                // not worth a line in the log. Anything else is.
                match conn.conn.close_reason() {
                    Some(quinn::ConnectionError::ApplicationClosed(c))
                        if c.error_code == quinn::VarInt::from_u32(0) =>
                    {
                        tracing::debug!(peer = %peer.short(), "the peer closed the connection");
                    }
                    Some(quinn::ConnectionError::LocallyClosed) => {
                        tracing::debug!(peer = %peer.short(), "connection closed");
                    }
                    Some(quinn::ConnectionError::TimedOut) => {
                        tracing::info!(peer = %peer.short(), "the peer went silent: connection ended");
                    }
                    _ => tracing::info!(peer = %peer.short(), error = %e, "connection ended"),
                }
                conn.conn.close(1u32.into(), b"error");
            }
        }
        {
            let mut proven = self.proven.lock().expect("proven lock");
            if proven.get(&peer).is_some_and(|p| p.conn_id == conn_id) {
                proven.remove(&peer);
            }
        }
        tasks.abort_all();
        if let Some(c) = &caught_up {
            let _ = c.send(false);
        }
        result
    }

    /// Carry out the session's actions, then send its messages, then look at its events.
    // The connection's parts come separately so that their borrows stay disjoint.
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        self: &Arc<Self>,
        conn: &Connection,
        conn_id: u64,
        s: &mut Session,
        spaces: &watch::Sender<Vec<(u32, Address)>>,
        ctl_send: &mut quinn::SendStream,
        tasks: &task_set::Tasks,
        caught_up: Option<&watch::Sender<bool>>,
        ev_tx: &mpsc::Sender<Ev>,
        (gate, budget, share): (&mut Option<Prove>, &Budget, &mut Option<WindowShare>),
    ) -> Result<(), NetError> {
        loop {
            let (actions, transmits, events) = {
                let open: Vec<(u32, Address)> = s.open_spaces().map(|(i, a)| (i, *a)).collect();
                spaces.send_if_modified(|v| {
                    let changed = *v != open;
                    *v = open;
                    changed
                });
                // The peer proved it knows a space held here: open the connection up before
                // anything is said back, so whatever it sends next is let in.
                if gate.is_some() && s.open_spaces().next().is_some() {
                    if let Some(prove) = gate.take() {
                        if !prove() {
                            tracing::warn!(peer = %conn.peer.short(), "too many peers connected: closing");
                            conn.conn.close(3u32.into(), b"busy");
                            return Err(NetError::Stream("too many peers connected".into()));
                        }
                        budget.prove();
                        *share = Some(self.windows.join());
                        conn.open_up_with(*self.windows.size.borrow());
                    }
                }
                let mut a = Vec::new();
                while let Some(x) = s.poll_action() {
                    a.push(x);
                }
                let mut t = Vec::new();
                while let Some(Transmit(m)) = s.poll_transmit() {
                    t.push(m);
                }
                let mut e = Vec::new();
                while let Some(x) = s.poll_event() {
                    e.push(x);
                }
                (a, t, e)
            };
            if actions.is_empty() && transmits.is_empty() && events.is_empty() {
                break;
            }
            for action in actions {
                match action {
                    Action::AddFeed { space, cert } => {
                        let node = self.node.clone();
                        let r = tokio::task::spawn_blocking(move || node.add_feed(&space, &cert))
                            .await
                            .map_err(|e| NetError::Stream(e.to_string()))?;
                        if let Err(e) = r {
                            tracing::warn!(%space, error = %e, "cannot add a member feed");
                        }
                    }
                    Action::AddRecords { space, records } => {
                        let node = self.node.clone();
                        let r =
                            tokio::task::spawn_blocking(move || node.add_records(&space, records))
                                .await
                                .map_err(|e| NetError::Stream(e.to_string()))?;
                        let new: Vec<Record> = match r {
                            Ok(new) => new.into_iter().map(VerifiedRecord::into_record).collect(),
                            Err(e) => {
                                tracing::warn!(%space, error = %e, "cannot keep membership records");
                                Vec::new()
                            }
                        };
                        // This peer gets what was made here in answer (a Join) and its
                        // acknowledgement; every other one, everything new.
                        s.handle_records_added(&space, &new, &*self.node);
                        if !new.is_empty() {
                            tracing::info!(%space, peer = %conn.peer.short(), records = new.len(), "membership records taken");
                            let _ = self.relay.send(Relay {
                                space,
                                what: Relayed::Records(Arc::new(new)),
                                origin: conn_id,
                            });
                        }
                    }
                    Action::Serve {
                        id,
                        space,
                        feed,
                        from,
                        to,
                    } => {
                        tasks.spawn(self.clone().serve(
                            conn.conn.clone(),
                            id,
                            space,
                            feed,
                            from,
                            to,
                            ev_tx.clone(),
                        ));
                    }
                    Action::RecordFork { space, evidence } => {
                        let store = self.node.store().clone();
                        let feed = evidence.older.feed;
                        let r = tokio::task::spawn_blocking(move || store.record_fork(*evidence))
                            .await
                            .map_err(|e| NetError::Stream(e.to_string()))?;
                        match r {
                            Ok(()) => {
                                tracing::warn!(%space, %feed, peer = %conn.peer.short(), "the feed's writer forked: evidence kept, feed frozen")
                            }
                            Err(e) => {
                                tracing::error!(%space, %feed, error = %e, "cannot record a fork")
                            }
                        }
                    }
                    Action::Introduce { node } => {
                        let node = NodeId(node);
                        if node == conn.peer || !self.rendezvous_allowed(conn.peer) {
                            continue;
                        }
                        // Only two peers that hold a space in common here learn where the other
                        // is: the introducer vouches for nothing else.
                        let there = {
                            let proven = self.proven.lock().expect("proven lock");
                            match (proven.get(&conn.peer), proven.get(&node)) {
                                (Some(asker), Some(target))
                                    if !asker.relayed
                                        && !target.relayed
                                        && !asker.spaces.is_disjoint(&target.spaces) =>
                                {
                                    // Where it is now: a NAT may have moved it.
                                    Some(target.conn.remote_address())
                                }
                                _ => None,
                            }
                        };
                        if let Some(there) = there {
                            let here = conn.conn.remote_address();
                            tracing::debug!(from = %conn.peer.short(), to = %node.short(), "introducing");
                            let _ = self.rendezvous.send(Rendezvous::Punch {
                                to: node,
                                node: conn.peer,
                                addr: here,
                                dial: false,
                            });
                            s.punch(node.0, there, true);
                        }
                    }
                    Action::Observed { addr } => {
                        // Believed only from peers we dialed (see `Node::observed`).
                        self.node.observed(
                            conn.peer,
                            conn.role == crate::space::Role::Dialer,
                            addr,
                        );
                    }
                    Action::Punch { node, addr, dial } => {
                        // Taken only from peers we dialed (partners the admin named): anyone
                        // else could aim our packets and our dials at an address of its choice.
                        if conn.role == crate::space::Role::Dialer
                            && self.rendezvous_allowed(conn.peer)
                        {
                            let now = tokio::time::Instant::now();
                            let mut at = self.punched_at.lock().expect("punched lock");
                            at.retain(|_, t| now.duration_since(*t) < PUNCHED_WITHIN);
                            // Bounded like the rendezvous table: one entry per allowed ask.
                            if at.len() < RENDEZVOUS_PEERS {
                                at.insert(NodeId(node), now);
                            }
                            drop(at);
                            let _ = self.punched.send(Punched {
                                node: NodeId(node),
                                addr,
                                dial,
                            });
                        }
                    }
                    Action::Close(e) => {
                        let code = match e {
                            SyncError::Goodbye(_) => return Err(NetError::Stream(e.to_string())),
                            _ => 2u32,
                        };
                        tracing::warn!(peer = %conn.peer.short(), error = %e, "closing");
                        conn.conn.close(code.into(), b"protocol error");
                        return Err(NetError::Stream(e.to_string()));
                    }
                }
            }
            for msg in transmits {
                tokio::time::timeout(WRITE_TIMEOUT, send_message(ctl_send, &msg))
                    .await
                    .map_err(|_| NetError::Stream("the peer stopped reading".into()))??;
            }
            for event in events {
                match event {
                    Event::Acked {
                        space,
                        feed,
                        length,
                    } => self.node.acked(conn.peer, &space, feed, length),
                    Event::SpaceOpened { space, .. } => {
                        tracing::info!(peer = %conn.peer.short(), %space, "space open");
                        let first = {
                            let mut proven = self.proven.lock().expect("proven lock");
                            let entry = proven
                                .entry(conn.peer)
                                .or_insert_with(|| Proven::of(conn_id, conn));
                            // A direct connection stays the one introductions and relays
                            // use while a relayed one to the same peer comes and goes.
                            let keep = entry.conn_id != conn_id
                                && !entry.relayed
                                && conn.relayed_via.is_some();
                            let first = entry.conn_id != conn_id || entry.spaces.is_empty();
                            if entry.conn_id != conn_id && !keep {
                                *entry = Proven::of(conn_id, conn);
                            }
                            entry.spaces.insert(space);
                            first
                        };
                        // A relayed peer's address is the tunnel's, not where it sees us.
                        if first && conn.relayed_via.is_none() {
                            s.observed(conn.conn.remote_address());
                        }
                        self.node.space_opened(conn_id, &space);
                    }
                    Event::Behind {
                        space,
                        feed,
                        have,
                        offered,
                    } => {
                        tracing::debug!(%space, %feed, have, offered, "fetching");
                        self.node.fetching(&space, feed, have, offered);
                    }
                    Event::Refusing {
                        space,
                        feed,
                        reason,
                    } => {
                        if reason.is_room() {
                            tracing::warn!(%space, %feed, %reason, "not taking new data");
                        } else {
                            tracing::info!(%space, %feed, %reason, "not taking new data");
                        }
                        self.node.refusing(conn.peer, &space, feed, &reason);
                    }
                    Event::Forked { space, feed } => {
                        self.node.forked(conn.peer, &space, feed);
                    }
                    Event::Denying { space, reason } => {
                        tracing::info!(peer = %conn.peer.short(), %space, %reason, "space not served to the peer");
                        // No introductions or relays for it on the strength of this space.
                        if let Some(entry) =
                            self.proven.lock().expect("proven lock").get_mut(&conn.peer)
                        {
                            if entry.conn_id == conn_id {
                                entry.spaces.remove(&space);
                            }
                        }
                        self.node.space_denied(conn_id, &space);
                    }
                    Event::Denied { space, reason } => {
                        tracing::debug!(peer = %conn.peer.short(), %space, %reason, "the peer does not serve the space to this node");
                        self.node.denied(conn.peer, &space, reason);
                    }
                    Event::Repaired { space, feed, count } => {
                        tracing::info!(peer = %conn.peer.short(), %space, %feed, count, "damaged entries repaired from the peer's copies");
                        self.node.repaired(conn.peer, &space, feed, count);
                    }
                    Event::Unavailable { space, feed, from } => {
                        tracing::info!(peer = %conn.peer.short(), %space, %feed, from, "the peer can't serve the feed from there (damaged on its side)");
                        self.node.unavailable(conn.peer, &space, feed, from);
                    }
                    Event::Refused {
                        space,
                        feed,
                        reason,
                    } => {
                        tracing::info!(peer = %conn.peer.short(), %space, %feed, %reason, "the peer refuses our data");
                        self.node.refused(conn.peer, &space, feed, &reason);
                    }
                }
            }
        }
        if let Some(c) = caught_up {
            let done = s.is_caught_up(&*self.node);
            let _ = c.send(done);
        }
        Ok(())
    }

    /// Send entries of `feed` from `from` (up to `to`, or as far as can be proven) on a stream
    /// of its own: against the newest complete head, or against the prefix of a longer head
    /// when that is what is held. Stops before an entry damaged here; when nothing at all can
    /// be sent from `from`, the peer is told (`Unavailable`) instead of being left waiting.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        self: Arc<Self>,
        conn: quinn::Connection,
        id: u32,
        space: Address,
        feed: FeedKey,
        from: u64,
        to: Option<u64>,
        tx: mpsc::Sender<Ev>,
    ) {
        let unservable = || async {
            let _ = tx.send(Ev::Unservable { id, feed, from }).await;
        };
        let result: Result<(), NetError> = async {
            let store = self.node.store().clone();
            let target = tokio::task::spawn_blocking({
                let store = store.clone();
                move || store.serve_target(&feed)
            })
            .await
            .map_err(|e| NetError::Stream(e.to_string()))?
            .map_err(|e| NetError::Stream(e.to_string()))?;
            let Some(target) = target else {
                unservable().await;
                return Ok(());
            };
            let end = to.map_or(target.length, |t| t.min(target.length));
            if end <= from {
                unservable().await;
                return Ok(());
            }
            let mut send: Option<quinn::SendStream> = None;
            let read = |pos: u64| {
                let (store, target) = (store.clone(), target.clone());
                tokio::task::spawn_blocking(move || {
                    data_message(&store, &target, id, feed, from, pos, end)
                })
            };
            let mut pos = from;
            let mut next = Some(read(pos));
            while let Some(reading) = next.take() {
                let (msg, damaged) = reading
                    .await
                    .map_err(|e| NetError::Stream(e.to_string()))?
                    .map_err(|e| NetError::Stream(e.to_string()))?;
                let Some((msg, n)) = msg else {
                    // Damaged right here: nothing more to send.
                    if send.is_none() {
                        unservable().await;
                    }
                    break;
                };
                // The next message is read (and checked) while this one is sent: at most one
                // message ahead, so a transfer holds two in memory at most.
                if damaged.is_none() && pos + n < end {
                    next = Some(read(pos + n));
                }
                if send.is_none() {
                    send = Some(conn.open_uni().await.map_err(NetError::Connection)?);
                }
                let stream = send.as_mut().expect("opened just above");
                tokio::time::timeout(WRITE_TIMEOUT, send_message(stream, &msg))
                    .await
                    .map_err(|_| NetError::Stream("the peer stopped reading".into()))??;
                pos += n;
                if let Some(index) = damaged {
                    tracing::warn!(%space, %feed, index, "serving stopped before a damaged entry");
                    break;
                }
            }
            if let Some(mut s) = send {
                let _ = s.finish();
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(%space, %feed, error = %e, "serving stopped");
        }
    }

    /// Read, verify and store the batches of one incoming data stream: frames in, stores
    /// out, as its [`Transfer`] decides (admission, room, coalescing, outcomes). One group is
    /// stored while the next is read; a group takes one of the [`MAX_BATCHES_IN_FLIGHT`]
    /// turns only once it is wholly read.
    async fn receive(
        self: Arc<Self>,
        mut frames: Frames,
        spaces: watch::Receiver<Vec<(u32, Address)>>,
        tx: mpsc::Sender<Ev>,
        peer: NodeId,
    ) {
        let ingest = ConnIngest {
            spaces: &spaces,
            node: &*self.node,
        };
        let mut transfer: Transfer<Charge, Reservation> = Transfer::new(TRANSFER_LIMITS);
        let mut storing: Option<tokio::task::JoinHandle<StoreResult>> = None;
        loop {
            if storing.is_none() {
                if let Some(op) = transfer.poll_store() {
                    let (batches, store) = (self.batches.clone(), self.node.store().clone());
                    storing = Some(tokio::spawn(async move {
                        let Ok(_permit) = batches.acquire_owned().await else {
                            return Err(StoreOutcome::Local("shutting down".into()));
                        };
                        tokio::task::spawn_blocking(move || store_batch(&store, op.group, peer.0))
                            .await
                            .unwrap_or_else(|e| {
                                tracing::error!(error = %e, "storing task failed");
                                Err(StoreOutcome::Local("storing failed".into()))
                            })
                    }));
                }
            }
            while let Some(event) = transfer.poll_event() {
                let ev = match event {
                    TransferEvent::Appended {
                        id,
                        feed,
                        length,
                        head,
                    } => Ev::Appended {
                        id,
                        feed,
                        length,
                        head,
                    },
                    TransferEvent::Repaired { id, feed, count } => Ev::Repaired { id, feed, count },
                    TransferEvent::Refusing { id, feed, reason } => {
                        frames.stop(0);
                        Ev::Refusing { id, feed, reason }
                    }
                    TransferEvent::Close(reason) => Ev::Close(reason),
                    TransferEvent::Ended { id, feed } => Ev::TransferEnded { id, feed },
                };
                if tx.send(ev).await.is_err() {
                    transfer.handle_store_failed();
                    break;
                }
            }
            if transfer.is_finished() {
                break;
            }
            let read = transfer.wants_frame();
            if read.is_none() && storing.is_none() {
                // Nothing to read and nothing being stored: cannot happen while unfinished.
                tracing::error!("a data stream stalled with nothing to do");
                break;
            }
            let gather_by = match read {
                Some(Read::Gather(by)) => Some(tokio::time::Instant::from_std(by)),
                _ => None,
            };
            tokio::select! {
                done = async {
                    match storing.as_mut() {
                        Some(h) => h.await,
                        None => std::future::pending().await,
                    }
                }, if storing.is_some() => {
                    storing = None;
                    match done {
                        Ok(outcome) => transfer.handle_stored(outcome),
                        Err(e) => {
                            tracing::error!(error = %e, "storing task failed");
                            transfer.handle_store_failed();
                        }
                    }
                }
                next = async {
                    match gather_by {
                        Some(by) => frames.next_if_ready(by).await,
                        None => frames.next().await,
                    }
                }, if read.is_some() => match next {
                    Ok(Next::Message(msg, charge)) => match DataMsg::from_message(*msg) {
                        Some(data) => transfer.handle_data(data, charge, &ingest, tokio::time::Instant::now().into_std()),
                        None => {
                            let _ = tx.send(Ev::Close("not data on a data stream".into())).await;
                            break;
                        }
                    },
                    Ok(Next::End) => transfer.handle_end(),
                    Ok(Next::NotYet) => match gather_by {
                        Some(by) if tokio::time::Instant::now() >= by => {
                            transfer.handle_timeout(tokio::time::Instant::now().into_std());
                        }
                        _ => transfer.handle_not_ready(),
                    },
                    Err(e) => {
                        let _ = tx.send(Ev::Close(format!("data stream: {e}"))).await;
                        break;
                    }
                },
            }
        }
        // A store under way finishes before what it holds is given back with the transfer.
        if let Some(s) = storing {
            let _ = s.await;
        }
    }
}

/// What a store step gives back.
type StoreResult = Result<Stored, StoreOutcome>;

/// The sizes and waits of every incoming transfer.
const TRANSFER_LIMITS: Limits = Limits {
    coalesce_bytes: COALESCE_BYTES,
    gather_wait: GATHER_WAIT,
};

/// What a transfer asks of its connection and this node.
struct ConnIngest<'a> {
    /// The spaces open on the connection, by id.
    spaces: &'a watch::Receiver<Vec<(u32, Address)>>,
    node: &'a dyn Node,
}

impl Ingest for ConnIngest<'_> {
    type Room = Reservation;
    fn space_of(&self, id: u32) -> Option<Address> {
        let open = self.spaces.borrow();
        open.iter().find(|(i, _)| *i == id).map(|(_, a)| *a)
    }
    fn is_member(&self, space: &Address, feed: &FeedKey) -> bool {
        self.node.member(space, feed).is_some()
    }
    fn admission(&self, space: &Address, feed: &FeedKey) -> crate::space::members::Admission {
        crate::sync::admission(self.node.membership(space).as_deref(), feed)
    }
    fn stored(&self, feed: &FeedKey) -> u64 {
        self.node.stored(feed).0
    }
    fn reserve(&self, space: &Address, bytes: u64) -> Result<Reservation, Refusal> {
        self.node.reserve(space, bytes)
    }
}

/// Verify a received group on top of what is stored and append it. Entries already stored are
/// not appended again, but where they are damaged here and the copy hashes to the stored leaf,
/// they repair it. A gap is the sender's fault. A signed head that contradicts the stored tree
/// is a fork by the writer: recorded as evidence, the feed frozen. A group sent against a
/// prefix of its head (`checkpoint`) is verified against that prefix.
fn store_batch(store: &Store, group: DataMsg, peer: [u8; 32]) -> Result<Stored, StoreOutcome> {
    let DataMsg {
        feed,
        start,
        mut entries,
        head,
        proof,
        prefix,
        checkpoint,
        ..
    } = group;
    let local = |e: crate::store::StoreError| StoreOutcome::Local(e.to_string());
    let head = head
        .verify()
        .map_err(|e| StoreOutcome::PeerFault(e.to_string()))?;
    let checkpoint = match checkpoint {
        Some(c) if c.head != *head.signed() => {
            return Err(StoreOutcome::PeerFault(
                "a prefix of another head than the data's".into(),
            ))
        }
        Some(c) => Some(
            (*c).verify()
                .map_err(|e| StoreOutcome::PeerFault(format!("prefix: {e}")))?,
        ),
        None => None,
    };
    let state = store.feed(&feed).map_err(local)?;
    if let Some(ours) = state.as_ref().and_then(|s| s.head.clone()) {
        if let Some(evidence) = fork_evidence(store, &ours, &head, start, prefix.as_ref())? {
            store.record_fork(evidence).map_err(local)?;
            return Err(StoreOutcome::Forked);
        }
    }
    let frontier = store.frontier(&feed).map_err(local)?;
    let have = frontier.len();
    if start > have {
        return Err(StoreOutcome::PeerFault(format!(
            "batch starts at {start}, {have} entries are stored"
        )));
    }
    let skip = (have - start) as usize;
    let mut repaired = 0;
    if skip > 0 {
        let damaged = store.damaged_entries(&feed).map_err(local)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for index in damaged {
            let Some(copy) = index
                .checked_sub(start)
                .and_then(|i| entries.get(i as usize))
            else {
                continue;
            };
            if index >= have {
                break;
            }
            if store.repair(&feed, index, copy, peer, now).map_err(local)? {
                repaired += 1;
            }
        }
    }
    if skip >= entries.len() {
        return Ok(Stored {
            length: have,
            complete: None,
            repaired,
            grew: false,
        });
    }
    // Moves the entries, not their bytes.
    let rest = entries.split_off(skip);
    let batch = match checkpoint {
        Some(prefix) => {
            crate::feed::verify_batch_to_prefix(&frontier, prefix, rest, proof.as_ref())
        }
        None => verify_batch(&frontier, head, rest, proof.as_ref()),
    }
    .map_err(|e| StoreOutcome::PeerFault(e.to_string()))?;
    let complete = batch
        .completes_head()
        .then(|| batch.head().signed().clone());
    let length = store.append(batch).map_err(local)?;
    Ok(Stored {
        length,
        complete,
        repaired,
        grew: true,
    })
}

/// Does `theirs` contradict our complete head `ours`? When it is no longer than ours we
/// compare with our own tree; when it is longer, the sender's prefix root at `start` (our
/// head's length) and its consistency proof decide. A proof that doesn't verify is the
/// sender's fault; anything we can't decide here is left to batch verification.
fn fork_evidence(
    store: &Store,
    ours: &SignedHead,
    theirs: &crate::feed::VerifiedHead,
    start: u64,
    prefix: Option<&(crate::feed::Hash, crate::feed::ConsistencyProof)>,
) -> Result<Option<crate::feed::ForkEvidence>, StoreOutcome> {
    let local = |e: crate::store::StoreError| StoreOutcome::Local(e.to_string());
    if theirs.length() <= ours.length {
        return store.contradiction(theirs).map_err(local);
    }
    let Some((prefix_root, proof)) = prefix else {
        return Ok(None);
    };
    if start != ours.length {
        return Ok(None);
    }
    let trusted = ours
        .clone()
        .verify()
        .map_err(|e| StoreOutcome::Local(format!("our stored head: {e}")))?;
    match crate::feed::check_extension(&trusted, theirs.clone(), *prefix_root, proof) {
        Ok(crate::feed::Extension::Extends(_)) => Ok(None),
        Ok(crate::feed::Extension::Fork(evidence)) => Ok(Some(*evidence)),
        Err(e) => Err(StoreOutcome::PeerFault(e.to_string())),
    }
}

/// A small task set: spawn, and abort everything at the end of a connection.
mod task_set {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Tasks(Arc<Mutex<Vec<tokio::task::AbortHandle>>>);

    impl Tasks {
        pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
            let h = tokio::spawn(fut);
            let mut v = self.0.lock().expect("task list lock");
            v.retain(|h| !h.is_finished());
            v.push(h.abort_handle());
        }

        pub fn abort_all(&self) {
            for h in self.0.lock().expect("task list lock").drain(..) {
                h.abort();
            }
        }
    }
}
