/*!
The network side of replication: node identities, TLS between nodes, the QUIC endpoint with
windows sized for a 1 GiB board, and framed messages over QUIC streams. It moves messages; what
they mean is the `sync` state machine's business.

Not here: the protocol logic (sync), storage (store), LAN discovery (to come).
*/

pub mod admission;
pub mod discovery;
pub mod driver;
pub mod frames;
pub mod identity;
pub mod reach;
pub mod tls;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::VarInt;

use crate::wire::{Message, WireError};
pub use identity::{NodeId, NodeIdentity};

/// Head start each address of a node gets before the next one is dialed too (RFC 8305
/// recommends 250 ms).
pub const DIAL_STAGGER: Duration = Duration::from_millis(250);

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node identity {path} has {len} bytes, not 32: restore it from a backup or remove it to make a new one")]
    BadIdentity {
        path: std::path::PathBuf,
        len: usize,
    },
    #[error("{0:?} is not a node id (64 hex characters)")]
    BadNodeId(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot use {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("the peer at {addr} is not {expected} (it is {found}): check the peer code")]
    WrongNode {
        addr: SocketAddr,
        expected: NodeId,
        found: NodeId,
    },
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream: {0}")]
    Stream(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the peer presented no usable identity")]
    NoPeerIdentity,
    #[error("mDNS: {0}")]
    Discovery(String),
}

/// Bytes a peer may send on one stream before we read them: what the driver gathers into
/// one append (4 MiB), so the sender keeps sending while the previous group is written.
pub const STREAM_RECEIVE_WINDOW: u32 = 4 << 20;
/// Bytes all streams of one proven connection may have in flight towards us, while few peers
/// are connected: two streams' worth, so a second feed moves while one group is on its way to
/// disk (quinn's default is sized for fast WANs and gigabytes of memory). With more proven
/// peers each gets a share of [`NODE_RECEIVE_WINDOWS`] instead, never less than
/// [`MIN_RECEIVE_WINDOW`].
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 << 20;
/// Bytes all proven connections together may have in flight towards us (unread, in quinn's
/// buffers): sixteen connections at the full [`CONNECTION_RECEIVE_WINDOW`]. With the frame
/// budget ([`frames::NODE_FRAME_BYTES`]) and the strangers' windows this bounds what peers can
/// make the node buffer at about 208 MiB whatever they do, under the board's 384 MiB service
/// limit.
pub const NODE_RECEIVE_WINDOWS: u64 = 128 << 20;
/// The smallest window a proven connection is given: one largest frame and then some, so a
/// transfer still streams when [`admission::MAX_PEERS`] peers share [`NODE_RECEIVE_WINDOWS`].
pub const MIN_RECEIVE_WINDOW: u32 = 2 << 20;

/// The receive window each of `proven` connections gets.
pub fn window_share(proven: usize) -> u32 {
    let share = NODE_RECEIVE_WINDOWS / proven.max(1) as u64;
    share.clamp(
        u64::from(MIN_RECEIVE_WINDOW),
        u64::from(CONNECTION_RECEIVE_WINDOW),
    ) as u32
}
/// The connection window of a connection we accepted, until its peer proves it knows a space
/// held here ([`Connection::open_up`]): enough for `Hello` and a few `OpenSpace`s. With
/// [`MAX_UNPROVEN`] strangers connected this bounds what they can make us buffer to 16 MiB.
///
/// [`MAX_UNPROVEN`]: admission::MAX_UNPROVEN
pub const UNPROVEN_RECEIVE_WINDOW: u32 = 64 << 10;
/// Bytes we keep unacknowledged towards one peer: the same 8 MiB.
pub const SEND_WINDOW: u64 = 8 << 20;
/// Bidirectional streams a peer may open: the one control stream. Another would only be
/// buffered, never read.
pub const MAX_BIDI_STREAMS: u32 = 1;
/// Tunnels (bidirectional streams beyond the control stream) a trusted peer may have open to
/// us at once: relayed connections through us, or to us through it.
pub const MAX_TUNNELS: u32 = 8;
/// Unidirectional streams a proven peer may have open: one per feed being transferred. An
/// unproven one may open none ([`Connection::open_up`]).
pub const MAX_UNI_STREAMS: u32 = 64;
/// Keep-alive: well under the idle timeout and under common NAT mapping lifetimes (30 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A connection silent this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Transport settings for every connection.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Every connection starts closed down; each side opens up once it trusts the other (a
    // dialer at once, a listener when the peer proves a capability).
    t.stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(UNPROVEN_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("60 s is a valid QUIC idle timeout"),
        ));
    t
}

/// The key of this node's QUIC stateless resets, derived from its identity so it is the same
/// after a restart: a node restarted (a crash, an update, a power cut) can then tell peers
/// still sending on a connection of its previous run that the connection is gone, and they
/// dial again at once instead of waiting out [`IDLE_TIMEOUT`]. A keyed BLAKE3 is the MAC.
struct ResetKey(blake3::Hash);

impl ResetKey {
    fn for_identity(identity: &NodeIdentity) -> ResetKey {
        let secret = identity.secret_bytes();
        ResetKey(blake3::Hash::from_bytes(blake3::derive_key(
            "seeder 2026-12 QUIC stateless reset key",
            secret.as_slice(),
        )))
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mac = blake3::keyed_hash(self.0.as_bytes(), data);
        let n = signature_out.len().min(32);
        signature_out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let Ok(sig) = <[u8; 32]>::try_from(signature) else {
            return Err(quinn::crypto::CryptoError);
        };
        // blake3::Hash compares in constant time.
        if blake3::keyed_hash(self.0.as_bytes(), data) == blake3::Hash::from_bytes(sig) {
            Ok(())
        } else {
            Err(quinn::crypto::CryptoError)
        }
    }
}

/// Connection ids: 8 random bytes, and every id counts as possibly this node's (no check that
/// would tie it to this run), so that a packet for a connection of the previous run gets a
/// stateless reset too. The cost, a reset sent for stray packets, is bounded by quinn's reset
/// rate limit and by never answering with more bytes than came in.
struct RestartProofCids;

impl quinn::ConnectionIdGenerator for RestartProofCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A QUIC endpoint that accepts and dials, as this node. Clones share the one socket.
#[derive(Clone)]
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    identity: Arc<NodeIdentity>,
    transport: Arc<quinn::TransportConfig>,
    /// The endpoint's own socket, for hole punching: a packet sent from it opens our NAT
    /// for the peer's QUIC packets to the same port.
    punch: Arc<std::net::UdpSocket>,
}

/// How long a dial waits for the handshake: QUIC resends its first packet after 1, 2, 4 and
/// 8 s, so a node that hasn't answered any of them isn't reachable at that address now (the
/// idle timeout, QUIC's own bound, would keep the other ways of reaching it waiting a minute).
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(15);

/// How long a relayed connection's handshake may take: two hops, each as slow as a direct
/// handshake.
pub const TUNNEL_HANDSHAKE: Duration = Duration::from_secs(15);

/// Transport settings of a connection inside a tunnel: as any other, with packets as large as
/// the tunnel takes (a stream has no path MTU to discover).
fn tunnel_transport() -> quinn::TransportConfig {
    let mut t = transport_config();
    // The congestion window starts at ten packets, as it would with ordinary ones (quinn's
    // default start of 14,720 bytes is less than one tunnel packet: nothing would be sent).
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(10 * u64::from(tunnel::TUNNEL_MTU));
    t.initial_mtu(tunnel::TUNNEL_MTU)
        .min_mtu(tunnel::TUNNEL_MTU)
        .mtu_discovery_config(None)
        .congestion_controller_factory(Arc::new(cubic));
    t
}

/// The endpoint of one tunnel's inner connection, on `socket`.
fn tunnel_endpoint(
    identity: &NodeIdentity,
    socket: Arc<tunnel::TunnelSocket>,
    server: bool,
) -> Result<quinn::Endpoint, NetError> {
    let mut config = quinn::EndpointConfig::new(Arc::new(ResetKey::for_identity(identity)));
    config
        .max_udp_payload_size(tunnel::TUNNEL_MTU)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let server = if server {
        let tls = tls::server_config(identity)?;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(Arc::new(tunnel_transport()));
        Some(server)
    } else {
        None
    };
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| NetError::Stream(format!("tunnel endpoint: {e}")))
}

/// Ends a tunnel with its connection, and the connection with its tunnel.
fn watch_tunnel(conn: quinn::Connection, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            _ = conn.closed() => {}
            _ = stop.cancelled() => conn.close(VarInt::from_u32(0), b"tunnel closed"),
        }
        stop.cancel();
    });
}

/// What a punch packet carries: one byte, which a QUIC endpoint drops as not a packet.
const PUNCH: [u8; 1] = [0];

impl Endpoint {
    /// Listen on `addr` (port 0: any free port).
    pub fn bind(addr: SocketAddr, identity: Arc<NodeIdentity>) -> Result<Endpoint, NetError> {
        let transport = Arc::new(transport_config());
        let tls = tls::server_config(&identity)?;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(transport.clone());
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| NetError::Bind { addr, source })?;
        let punch = Arc::new(
            socket
                .try_clone()
                .map_err(|source| NetError::Bind { addr, source })?,
        );
        let mut config = quinn::EndpointConfig::new(Arc::new(ResetKey::for_identity(&identity)));
        config.cid_generator(|| Box::new(RestartProofCids));
        let endpoint =
            quinn::Endpoint::new(config, Some(server), socket, Arc::new(quinn::TokioRuntime))
                .map_err(|source| NetError::Bind { addr, source })?;
        Ok(Endpoint {
            endpoint,
            identity,
            transport,
            punch,
        })
    }

    /// Dial `node` through a tunnel a relay opened (see `tunnel`): the same handshake, with
    /// `node` pinned, as a direct dial.
    pub async fn connect_tunnel(
        &self,
        streams: tunnel::Streams,
        node: NodeId,
        via: NodeId,
    ) -> Result<Connection, NetError> {
        let here = tunnel::tunnel_addr(&self.node_id());
        let there = tunnel::tunnel_addr(&node);
        let (socket, stop) = tunnel::TunnelSocket::new(streams, here, there);
        let endpoint = tunnel_endpoint(&self.identity, socket, false)?;
        let tls = tls::client_config(&self.identity, Some(node))?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(Arc::new(tunnel_transport()));
        let failed = |reason: String| NetError::Connect {
            addr: there,
            reason,
        };
        let connecting = endpoint
            .connect_with(client, there, tls::SERVER_NAME)
            .map_err(|e| failed(e.to_string()))?;
        let conn = tokio::select! {
            c = tokio::time::timeout(TUNNEL_HANDSHAKE, connecting) => match c {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => { stop.cancel(); return Err(failed(e.to_string())) }
                Err(_) => { stop.cancel(); return Err(failed("no handshake through the relay in time".into())) }
            },
            _ = stop.cancelled() => return Err(failed("the relay closed the tunnel".into())),
        };
        watch_tunnel(conn.clone(), stop);
        let mut conn = Connection::new(conn, crate::space::Role::Dialer)?;
        conn.relayed_via = Some(via);
        conn.open_up();
        Ok(conn)
    }

    /// The connection attempt a relay's tunnel from `origin` carries: its first handshake
    /// packet, waited for [`tunnel::OPEN_WAIT`]. Only that one attempt is taken.
    pub async fn accept_tunnel(
        &self,
        streams: tunnel::Streams,
        origin: NodeId,
        via: NodeId,
    ) -> Result<Incoming, NetError> {
        let here = tunnel::tunnel_addr(&self.node_id());
        let there = tunnel::tunnel_addr(&origin);
        let (socket, stop) = tunnel::TunnelSocket::new(streams, here, there);
        let endpoint = tunnel_endpoint(&self.identity, socket, true)?;
        let incoming = tokio::select! {
            i = tokio::time::timeout(tunnel::OPEN_WAIT, endpoint.accept()) => i.ok().flatten(),
            _ = stop.cancelled() => None,
        };
        let Some(incoming) = incoming else {
            stop.cancel();
            return Err(NetError::Connect {
                addr: there,
                reason: "no handshake came through the tunnel".into(),
            });
        };
        endpoint.set_server_config(None);
        Ok(Incoming {
            incoming,
            tunnel: Some((origin, via, stop)),
        })
    }

    /// Send one punch packet to `addr` from this endpoint's port (see [`PUNCH`]). A failure
    /// (no route, a full buffer) is not an error: punching is best effort.
    pub fn punch(&self, addr: SocketAddr) {
        if let Err(e) = self.punch.send_to(&PUNCH, addr) {
            tracing::debug!(%addr, error = %e, "punch not sent");
        }
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint
            .local_addr()
            .map_err(|e| NetError::Stream(e.to_string()))
    }

    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Dial `addr`, pinning `expected` when known.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<Connection, NetError> {
        let other = tls::OtherNode::default();
        let tls = tls::client_config_noting(&self.identity, expected, other.clone())?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(self.transport.clone());
        let connecting = self
            .endpoint
            .connect_with(client, addr, tls::SERVER_NAME)
            .map_err(|e| NetError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let conn = tokio::time::timeout(HANDSHAKE_WAIT, connecting)
            .await
            .map_err(|_| NetError::Connect {
                addr,
                reason: "no answer".into(),
            })?
            .map_err(|e| match (other.get(), expected) {
                (Some(found), Some(expected)) => NetError::WrongNode {
                    addr,
                    expected,
                    found: *found,
                },
                _ => NetError::Connect {
                    addr,
                    reason: e.to_string(),
                },
            })?;
        let conn = Connection::new(conn, crate::space::Role::Dialer)?;
        // We chose this peer: it may send at full speed from the start.
        conn.open_up();
        Ok(conn)
    }

    /// Connect to the node at any of `addrs`, tried in order with a head start of
    /// [`DIAL_STAGGER`] each (RFC 8305's "happy eyeballs"): a LAN address that answers wins at
    /// once, one that is unreachable from here costs a quarter second, not a handshake
    /// timeout. The first handshake to finish is kept, the others dropped.
    pub async fn connect_any(
        &self,
        addrs: &[SocketAddr],
        expected: Option<NodeId>,
    ) -> Result<(Connection, SocketAddr), NetError> {
        let Some(&first) = addrs.first() else {
            return Err(NetError::Connect {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: "no address to dial".into(),
            });
        };
        let mut attempts = tokio::task::JoinSet::new();
        let mut next = addrs.iter().copied();
        let mut last_error = None;
        let mut stagger = std::pin::pin!(tokio::time::sleep(std::time::Duration::ZERO));
        loop {
            tokio::select! {
                _ = &mut stagger, if next.len() > 0 => {
                    if let Some(addr) = next.next() {
                        let this = self.clone();
                        attempts.spawn(async move { (addr, this.connect(addr, expected).await) });
                    }
                    stagger.as_mut().reset(tokio::time::Instant::now() + DIAL_STAGGER);
                }
                done = attempts.join_next(), if !attempts.is_empty() => match done {
                    Some(Ok((addr, Ok(conn)))) => return Ok((conn, addr)),
                    Some(Ok((_, Err(e)))) => {
                        last_error = Some(e);
                        // Don't wait out the head start when this one has already failed.
                        stagger.as_mut().reset(tokio::time::Instant::now());
                    }
                    Some(Err(e)) => {
                        last_error = Some(NetError::Connect { addr: first, reason: e.to_string() })
                    }
                    None => {}
                },
                else => {
                    return Err(last_error.unwrap_or(NetError::Connect {
                        addr: first,
                        reason: "no attempt finished".into(),
                    }))
                }
            }
        }
    }

    /// The next incoming connection, `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Result<Connection, NetError>> {
        Some(self.accept_incoming().await?.handshake().await)
    }

    /// The next connection attempt, before its handshake: a server finishes handshakes on
    /// tasks of their own so that a slow or silent peer never holds up the others.
    pub async fn accept_incoming(&self) -> Option<Incoming> {
        self.endpoint.accept().await.map(|incoming| Incoming {
            incoming,
            tunnel: None,
        })
    }

    /// Close every connection, telling peers why.
    pub fn close(&self, reason: &str) {
        self.endpoint.close(VarInt::from_u32(0), reason.as_bytes());
    }

    /// Wait until peers were told goodbye (bounded by the idle timeout).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// A connection attempt whose handshake hasn't finished.
pub struct Incoming {
    incoming: quinn::Incoming,
    /// Through a tunnel: the node it is from (as the relay says; the handshake proves it),
    /// the relay, and what ends the tunnel.
    tunnel: Option<(NodeId, NodeId, tokio_util::sync::CancellationToken)>,
}

impl Incoming {
    /// Where the attempt comes from (not yet validated: it may be spoofed until the
    /// handshake completes).
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Whether the attempt came back with a Retry token: its source address is real.
    pub fn validated(&self) -> bool {
        // A tunnel's attempt comes from the node its relay names, not from an address.
        self.tunnel.is_some() || self.incoming.remote_address_validated()
    }

    /// Answer with a stateless Retry: nothing is kept, and only a client that receives it at
    /// its address and tries again with the token gets further.
    pub fn retry(self) {
        if self.incoming.may_retry() {
            if let Err(e) = self.incoming.retry() {
                e.into_incoming().ignore();
            }
        } else {
            self.incoming.ignore();
        }
    }

    /// Drop the attempt without a word (the client tries again later).
    pub fn ignore(self) {
        if let Some((_, _, stop)) = &self.tunnel {
            stop.cancel();
        }
        self.incoming.ignore();
    }

    /// Finish the handshake (bounded by the transport's idle timeout, through a tunnel by
    /// [`TUNNEL_HANDSHAKE`]).
    pub async fn handshake(self) -> Result<Connection, NetError> {
        let Some((origin, via, stop)) = self.tunnel else {
            let conn = self.incoming.await?;
            return Connection::new(conn, crate::space::Role::Listener);
        };
        let there = tunnel::tunnel_addr(&origin);
        let failed = |reason: String| NetError::Connect {
            addr: there,
            reason,
        };
        let conn = tokio::select! {
            c = tokio::time::timeout(TUNNEL_HANDSHAKE, self.incoming) => match c {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => { stop.cancel(); return Err(e.into()) }
                Err(_) => { stop.cancel(); return Err(failed("no handshake through the relay in time".into())) }
            },
            _ = stop.cancelled() => return Err(failed("the relay closed the tunnel".into())),
        };
        watch_tunnel(conn.clone(), stop.clone());
        let mut conn = Connection::new(conn, crate::space::Role::Listener)?;
        // The relay named the node; the handshake is what proves who it is.
        if conn.peer != origin {
            conn.conn
                .close(VarInt::from_u32(1), b"not the node the relay named");
            return Err(failed(format!(
                "the relay named {} but {} answered",
                origin.short(),
                conn.peer.short()
            )));
        }
        conn.relayed_via = Some(via);
        Ok(conn)
    }
}

/// Label of the TLS exporter secret that capabilities are bound to.
pub const CAPABILITY_EXPORTER_LABEL: &[u8] = b"seeder capability v1";

/// An established, mutually authenticated connection.
#[derive(Clone)]
pub struct Connection {
    pub conn: quinn::Connection,
    pub role: crate::space::Role,
    pub peer: NodeId,
    /// Reached through an introduction (hole punching), not at an address we were given.
    pub introduced: bool,
    /// Carried through a tunnel by this relay.
    pub relayed_via: Option<NodeId>,
}

impl Connection {
    fn new(conn: quinn::Connection, role: crate::space::Role) -> Result<Connection, NetError> {
        let certs = conn
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .ok_or(NetError::NoPeerIdentity)?;
        let first = certs.first().ok_or(NetError::NoPeerIdentity)?;
        let key = tls::ed25519_key_of(first).ok_or(NetError::NoPeerIdentity)?;
        Ok(Connection {
            conn,
            role,
            peer: NodeId(key),
            introduced: false,
            relayed_via: None,
        })
    }

    /// Give the peer full windows and data streams: it proved it knows a space held here, or
    /// we dialed it.
    pub fn open_up(&self) {
        self.open_up_with(CONNECTION_RECEIVE_WINDOW);
    }

    /// As [`Connection::open_up`], with a receive window of `window` bytes.
    pub fn open_up_with(&self, window: u32) {
        self.conn.set_receive_window(VarInt::from_u32(window));
        self.conn
            .set_max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS));
        // The control stream, and tunnels (see `tunnel`): a relay's, or ours through it.
        self.conn
            .set_max_concurrent_bi_streams(VarInt::from_u32(MAX_BIDI_STREAMS + MAX_TUNNELS));
    }

    /// The secret both ends derive from this connection's TLS session, for capabilities.
    pub fn capability_secret(&self) -> Result<Vec<u8>, NetError> {
        let mut out = vec![0u8; 32];
        self.conn
            .export_keying_material(&mut out, CAPABILITY_EXPORTER_LABEL, b"")
            .map_err(|_| NetError::Tls("cannot export keying material".into()))?;
        Ok(out)
    }
}

pub use frames::{Budget, Frames, Next};

/// Write one message as a frame.
pub async fn send_message(send: &mut quinn::SendStream, msg: &Message) -> Result<(), NetError> {
    // Handed to QUIC as chunks it queues without copying them again; a data message's
    // entries go as the bytes read from the store.
    let mut chunks = msg.encode_chunks()?;
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|e| NetError::Stream(e.to_string()))
}

#[cfg(test)]
mod tests;
