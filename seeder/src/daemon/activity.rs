/*!
What the daemon is doing right now, for the admin page: connected peers (with their QUIC
byte counters), which spaces each opened, when each space last took data, and when partner
seeders were last seen. Filled in by the replication driver's hooks, read by the admin
backend. In memory only: it describes this run of the daemon.

Not for: anything that must survive a restart (that is the registry's).
*/

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::net::{Connection, NodeId};
use crate::space::{Address, Role};

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Live {
    peer: NodeId,
    conn: quinn::Connection,
    since: u64,
    dialed: bool,
    introduced: bool,
    relayed_via: Option<NodeId>,
    spaces: BTreeSet<Address>,
    denied: BTreeSet<Address>,
}

/// A connected peer as the admin page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNow {
    pub node_id: NodeId,
    pub address: std::net::SocketAddr,
    pub since: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// We dialed it (a seeder dials only its partners).
    pub dialed: bool,
    /// The connection was hole-punched after an introduction by a third node.
    pub introduced: bool,
    /// The connection is carried by this relay.
    pub relayed_via: Option<NodeId>,
    pub spaces: BTreeSet<Address>,
    /// Spaces the peer holds but does not serve to this seeder (a governed space whose
    /// seeder has not added this one as a partner).
    pub denied: BTreeSet<Address>,
}

/// A relayed connection: from, to, since (Unix seconds), and its byte counter.
type Relaying = (NodeId, NodeId, u64, std::sync::Arc<AtomicU64>);

/// A connection between two other nodes that this node carries, as the admin page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayNow {
    pub from: NodeId,
    pub to: NodeId,
    pub since: u64,
    /// Bytes carried so far, both ways.
    pub bytes: u64,
}

/// Whether `ip` is reachable from the internet at large (not private, loopback, link-local,
/// multicast, unspecified or broadcast).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        std::net::IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

impl PeerNow {
    /// How the connection reached us, in words: `relayed via NODE`, `hole-punched`, `LAN`,
    /// `port-mapped` (it came from outside while the router forwards our port) or `direct`.
    pub fn reached(&self, port_mapped: bool) -> String {
        if let Some(via) = self.relayed_via {
            return format!("relayed via {}", via.short());
        }
        self.reached_directly(port_mapped).to_string()
    }

    fn reached_directly(&self, port_mapped: bool) -> &'static str {
        let local = !is_public(self.address.ip());
        if self.introduced {
            "hole-punched"
        } else if local {
            "LAN"
        } else if !self.dialed && port_mapped {
            "port-mapped"
        } else {
            "direct"
        }
    }
}

/// See the module comment. Bounded by the daemon's peer limit: one entry per live
/// connection, one per held space, one per peer node ever seen in this run.
#[derive(Default)]
pub struct Activity {
    live: Mutex<HashMap<u64, Live>>,
    last_seen: Mutex<HashMap<NodeId, u64>>,
    last_append: Mutex<HashMap<Address, u64>>,
    last_verified: Mutex<HashMap<Address, u64>>,
    /// Our public addresses as partners we dialed see them, newest last (see
    /// [`MAX_OBSERVED`]).
    observed: Mutex<Vec<std::net::SocketAddr>>,
    /// Connections of others this node relays, by id, with their byte counters.
    relays: Mutex<HashMap<u64, Relaying>>,
    /// Bytes of connections that have ended.
    ended_in: AtomicU64,
    ended_out: AtomicU64,
}

/// Public addresses of ours kept from partners' reports: a NAT gives a node one or two.
pub const MAX_OBSERVED: usize = 2;

impl Activity {
    /// A partner we dialed sees us at `addr`: kept if it is a public address.
    pub fn observed(&self, addr: std::net::SocketAddr) {
        if !is_public(addr.ip()) {
            return;
        }
        let mut o = self.observed.lock().expect("activity lock");
        o.retain(|a| *a != addr);
        o.push(addr);
        let excess = o.len().saturating_sub(MAX_OBSERVED);
        o.drain(..excess);
    }

    /// Our public addresses as partners see them.
    pub fn observed_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.observed.lock().expect("activity lock").clone()
    }

    pub fn connected(&self, id: u64, conn: &Connection) {
        let now = now_unix();
        self.last_seen
            .lock()
            .expect("activity lock")
            .insert(conn.peer, now);
        self.live.lock().expect("activity lock").insert(
            id,
            Live {
                peer: conn.peer,
                conn: conn.conn.clone(),
                since: now,
                dialed: conn.role == Role::Dialer,
                introduced: conn.introduced,
                relayed_via: conn.relayed_via,
                spaces: BTreeSet::new(),
                denied: BTreeSet::new(),
            },
        );
    }

    pub fn space_opened(&self, id: u64, space: &Address) {
        let mut live = self.live.lock().expect("activity lock");
        if let Some(l) = live.get_mut(&id) {
            l.spaces.insert(*space);
        }
        // Served now (this seeder was made its partner): no longer denied by that peer.
        if let Some(peer) = live.get(&id).map(|l| l.peer) {
            for l in live.values_mut().filter(|l| l.peer == peer) {
                l.denied.remove(space);
            }
        }
    }

    /// The peer of connection `id` is no longer served `space`.
    pub fn space_closed(&self, id: u64, space: &Address) {
        if let Some(l) = self.live.lock().expect("activity lock").get_mut(&id) {
            l.spaces.remove(space);
        }
    }

    /// `peer` does not serve `space` to this seeder.
    pub fn denied(&self, peer: &NodeId, space: &Address) {
        for l in self.live.lock().expect("activity lock").values_mut() {
            if l.peer == *peer {
                l.denied.insert(*space);
            }
        }
    }

    pub fn disconnected(&self, id: u64) {
        let gone = self.live.lock().expect("activity lock").remove(&id);
        if let Some(l) = gone {
            let stats = l.conn.stats();
            self.ended_in
                .fetch_add(stats.udp_rx.bytes, Ordering::Relaxed);
            self.ended_out
                .fetch_add(stats.udp_tx.bytes, Ordering::Relaxed);
            self.last_seen
                .lock()
                .expect("activity lock")
                .insert(l.peer, now_unix());
        }
    }

    pub fn appended(&self, space: &Address) {
        self.last_append
            .lock()
            .expect("activity lock")
            .insert(*space, now_unix());
    }

    /// Every feed of `space` was just read back and found intact.
    pub fn verified(&self, space: &Address) {
        self.last_verified
            .lock()
            .expect("activity lock")
            .insert(*space, now_unix());
    }

    pub fn last_verified(&self, space: &Address) -> Option<u64> {
        self.last_verified
            .lock()
            .expect("activity lock")
            .get(space)
            .copied()
    }

    /// Peers connected now.
    pub fn peers(&self) -> Vec<PeerNow> {
        let live = self.live.lock().expect("activity lock");
        let mut v: Vec<PeerNow> = live
            .values()
            .map(|l| {
                let stats = l.conn.stats();
                PeerNow {
                    node_id: l.peer,
                    address: l.conn.remote_address(),
                    since: l.since,
                    bytes_in: stats.udp_rx.bytes,
                    bytes_out: stats.udp_tx.bytes,
                    dialed: l.dialed,
                    introduced: l.introduced,
                    relayed_via: l.relayed_via,
                    spaces: l.spaces.clone(),
                    denied: l.denied.clone(),
                }
            })
            .collect();
        v.sort_by_key(|p| p.since);
        v
    }

    /// Bytes received and sent over QUIC since the daemon started (UDP payloads).
    pub fn totals(&self) -> (u64, u64) {
        let (mut rx, mut tx) = (
            self.ended_in.load(Ordering::Relaxed),
            self.ended_out.load(Ordering::Relaxed),
        );
        for l in self.live.lock().expect("activity lock").values() {
            let s = l.conn.stats();
            rx += s.udp_rx.bytes;
            tx += s.udp_tx.bytes;
        }
        (rx, tx)
    }

    pub fn last_seen(&self, node: &NodeId) -> Option<u64> {
        self.last_seen
            .lock()
            .expect("activity lock")
            .get(node)
            .copied()
    }

    pub fn last_append(&self, space: &Address) -> Option<u64> {
        self.last_append
            .lock()
            .expect("activity lock")
            .get(space)
            .copied()
    }

    /// A relayed connection from `from` to `to` started here (bounded by the relay budget).
    pub fn relay_started(
        &self,
        id: u64,
        from: NodeId,
        to: NodeId,
        bytes: std::sync::Arc<AtomicU64>,
    ) {
        self.relays
            .lock()
            .expect("activity lock")
            .insert(id, (from, to, now_unix(), bytes));
    }

    pub fn relay_ended(&self, id: u64) {
        self.relays.lock().expect("activity lock").remove(&id);
    }

    /// The connections of others this node relays now, oldest first.
    pub fn relays(&self) -> Vec<RelayNow> {
        let mut v: Vec<RelayNow> = self
            .relays
            .lock()
            .expect("activity lock")
            .values()
            .map(|(from, to, since, bytes)| RelayNow {
                from: *from,
                to: *to,
                since: *since,
                bytes: bytes.load(Ordering::Relaxed),
            })
            .collect();
        v.sort_by_key(|r| r.since);
        v
    }

    /// Whether `node` is connected, and only through relays.
    pub fn relayed_only(&self, node: &NodeId) -> bool {
        let live = self.live.lock().expect("activity lock");
        let mut to_it = live.values().filter(|l| l.peer == *node).peekable();
        to_it.peek().is_some() && to_it.all(|l| l.relayed_via.is_some())
    }

    /// Close the relayed connections to `node`: a direct one took their place.
    pub fn close_relayed(&self, node: &NodeId) {
        for l in self.live.lock().expect("activity lock").values() {
            if l.peer == *node && l.relayed_via.is_some() {
                l.conn.close(0u32.into(), b"moved to a direct path");
            }
        }
    }

    /// Close every connection to `node` (a partner forgotten), saying `why`.
    pub fn close_all(&self, node: &NodeId, why: &str) {
        for l in self.live.lock().expect("activity lock").values() {
            if l.peer == *node {
                l.conn.close(0u32.into(), why.as_bytes());
            }
        }
    }

    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.live
            .lock()
            .expect("activity lock")
            .values()
            .any(|l| l.peer == *node)
    }
}
