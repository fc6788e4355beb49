/*!
Relayed connections: when two nodes can't reach each other directly (both behind symmetric
NATs), a third node that both are connected to carries their QUIC packets inside one stream
of each of its connections. The two nodes still run their own QUIC connection end to end, with
the same TLS, node-id pinning and capabilities as a direct one: the relay copies bytes it can
neither read nor alter undetected (a changed packet fails the inner connection's AEAD).

Here: the stream header that asks for and announces a tunnel, the status a relay answers
with, the virtual UDP socket that carries one inner connection's packets over a stream pair
([`TunnelSocket`], framed as a 2-byte length and the packet), the relay's splice of two
streams, and its bandwidth budget ([`Rate`]).

Not here: who may relay for whom, and how tunnels are asked for (the driver), nor the inner
connection's endpoint (the parent module).
*/

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::NodeId;

/// The largest inner packet: a stream has no path MTU, and fewer, larger packets cost the
/// inner connection less per byte. Fits the 2-byte length of the framing.
pub const TUNNEL_MTU: u16 = 16 * 1024;

/// Packets from the inner connection waiting to be written to the stream, in bytes: past
/// this the inner connection is told to wait (as a full socket buffer would).
const SEND_BUFFER: usize = 1 << 20;

/// Packets read from the stream waiting for the inner connection; the reader waits when the
/// queue is full, and the stream's window holds the rest back.
const RECV_QUEUE: usize = 128;

/// How long a tunnel's opening (its header, a relay's answer) may take.
pub const OPEN_WAIT: Duration = Duration::from_secs(5);

/// Bytes a relay copies at a time, per direction of each tunnel.
const SPLICE_CHUNK: usize = 64 << 10;

/// The first bytes of a tunnel stream: a kind byte and a node id.
pub const HEADER_LEN: usize = 33;

/// What a tunnel stream is for, sent first on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// To a relay: carry this stream to `node`.
    To(NodeId),
    /// From a relay: this stream carries packets of `node`.
    From(NodeId),
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let (kind, node) = match self {
            Header::To(n) => (1u8, n),
            Header::From(n) => (2u8, n),
        };
        let mut out = [0u8; HEADER_LEN];
        out[0] = kind;
        out[1..].copy_from_slice(&node.0);
        out
    }

    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Option<Header> {
        let mut node = [0u8; 32];
        node.copy_from_slice(&bytes[1..]);
        match bytes[0] {
            1 => Some(Header::To(NodeId(node))),
            2 => Some(Header::From(NodeId(node))),
            _ => None,
        }
    }
}

/// A relay's one-byte answer to [`Header::To`], before any packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The other node was told; packets flow from here on.
    Open = 0,
    /// The relay doesn't carry traffic between these two nodes: it isn't connected to that
    /// node, they hold no space in common there, or relaying is off (one answer, so askers
    /// don't learn whom the relay is connected to).
    NotAllowed = 1,
    /// The relay lost its connection to that node while opening the tunnel.
    NotConnected = 2,
    /// The relay's budget of tunnels is used up, or the asker asked too often.
    Busy = 3,
    /// The other node didn't take the tunnel.
    Refused = 4,
}

impl Status {
    pub fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Open,
            1 => Status::NotAllowed,
            2 => Status::NotConnected,
            3 => Status::Busy,
            4 => Status::Refused,
            _ => return None,
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::NotAllowed => "does not relay between us and that node",
            Status::NotConnected => "lost its connection to that node",
            Status::Busy => "has no room for another relayed connection now",
            Status::Refused => "was refused by that node",
        }
    }
}

/// One direction pair of a stream, as a tunnel uses it.
pub struct Streams {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

/// The address a tunnel's inner connection gives `node`: an IPv6 unique-local address made
/// from its id, so each relayed peer has an address of its own (admission counts per
/// address) that no real packet can come from.
pub fn tunnel_addr(node: &NodeId) -> SocketAddr {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..].copy_from_slice(&node.0[..15]);
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), 1)
}

/// Whether `addr` is one [`tunnel_addr`] makes for `node`.
pub fn is_tunnel_addr_of(addr: &SocketAddr, node: &NodeId) -> bool {
    *addr == tunnel_addr(node)
}

/// Packets on their way to the stream.
struct Outbox {
    buf: Mutex<BytesMut>,
    /// Something was put in the buffer.
    filled: Notify,
    /// The buffer was drained.
    drained: Notify,
}

impl Outbox {
    fn has_room(&self) -> bool {
        self.buf.lock().expect("outbox lock").len() < SEND_BUFFER
    }
}

/// A UDP socket as quinn sees it, whose packets travel in one stream pair to one peer.
pub struct TunnelSocket {
    local: SocketAddr,
    remote: SocketAddr,
    out: Arc<Outbox>,
    inbox: Mutex<mpsc::Receiver<Bytes>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for TunnelSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelSocket")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish()
    }
}

impl Drop for TunnelSocket {
    fn drop(&mut self) {
        // The inner endpoint is gone: so is the tunnel.
        self.stop.cancel();
    }
}

impl TunnelSocket {
    /// A socket over `streams` between `local` and `remote` (both [`tunnel_addr`]s), and the
    /// token that ends the tunnel: cancelled when the stream ends, and to be cancelled when
    /// the inner connection is over (the packets still buffered are written first).
    pub fn new(
        streams: Streams,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> (Arc<TunnelSocket>, CancellationToken) {
        let stop = CancellationToken::new();
        let out = Arc::new(Outbox {
            buf: Mutex::new(BytesMut::new()),
            filled: Notify::new(),
            drained: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(RECV_QUEUE);
        tokio::spawn(write_packets(streams.send, out.clone(), stop.clone()));
        tokio::spawn(read_packets(streams.recv, tx, stop.clone()));
        let socket = Arc::new(TunnelSocket {
            local,
            remote,
            out,
            inbox: Mutex::new(rx),
            stop: stop.clone(),
        });
        (socket, stop)
    }
}

/// Write buffered packets to the stream until the tunnel stops; then what is still buffered
/// (a connection's closing packet) and the stream's end.
async fn write_packets(mut send: quinn::SendStream, out: Arc<Outbox>, stop: CancellationToken) {
    loop {
        let filled = out.filled.notified();
        tokio::pin!(filled);
        // Registered before looking, so a packet put in between isn't missed.
        filled.as_mut().enable();
        let chunk = out.buf.lock().expect("outbox lock").split().freeze();
        if chunk.is_empty() {
            tokio::select! {
                _ = &mut filled => continue,
                _ = stop.cancelled() => break,
            }
        }
        out.drained.notify_waiters();
        let written = tokio::select! {
            r = send.write_all(&chunk) => r.is_ok(),
            // A stream that stopped moving doesn't hold the tunnel's end up.
            _ = stop.cancelled() => false,
        };
        if !written {
            stop.cancel();
            return;
        }
    }
    let rest = out.buf.lock().expect("outbox lock").split().freeze();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !rest.is_empty() {
            let _ = send.write_all(&rest).await;
        }
        let _ = send.finish();
        let _ = send.stopped().await;
    })
    .await;
}

/// Read framed packets from the stream into the inbox until it ends or the tunnel stops.
async fn read_packets(
    recv: quinn::RecvStream,
    inbox: mpsc::Sender<Bytes>,
    stop: CancellationToken,
) {
    let mut recv = tokio::io::BufReader::with_capacity(SPLICE_CHUNK, recv);
    let read = async {
        loop {
            let len = recv.read_u16().await?;
            if len > TUNNEL_MTU {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "packet too large",
                ));
            }
            let mut packet = BytesMut::zeroed(usize::from(len));
            recv.read_exact(&mut packet).await?;
            if inbox.send(packet.freeze()).await.is_err() {
                return Ok::<(), io::Error>(());
            }
        }
    };
    tokio::select! {
        r = read => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tunnel stream ended");
            }
        }
        _ = stop.cancelled() => {}
    }
    stop.cancel();
}

impl quinn::AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(RoomPoller {
            out: self.out.clone(),
            waiting: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.stop.is_cancelled() {
            // Gone, as a packet into a dead path is: the inner connection learns it when the
            // tunnel's owner closes it.
            return Ok(());
        }
        let mut buf = self.out.buf.lock().expect("outbox lock");
        if buf.len() >= SEND_BUFFER {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for packet in transmit.contents.chunks(size) {
            // Never larger: the endpoint is configured with TUNNEL_MTU as its largest payload.
            let Ok(len) = u16::try_from(packet.len()) else {
                continue;
            };
            if len > TUNNEL_MTU {
                continue;
            }
            buf.put_u16(len);
            buf.put_slice(packet);
        }
        drop(buf);
        self.out.filled.notify_one();
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock().expect("inbox lock");
        let mut n = 0;
        let max = bufs.len().min(meta.len());
        while n < max {
            let packet = if n == 0 {
                match inbox.poll_recv(cx) {
                    Poll::Ready(Some(p)) => p,
                    // The stream ended: nothing more will come (the owner closes the
                    // connection).
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match inbox.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let len = packet.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&packet[..len]);
            meta[n] = RecvMeta {
                addr: self.remote,
                len,
                stride: len,
                ecn: None,
                dst_ip: Some(self.local.ip()),
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_transmit_segments(&self) -> usize {
        // A transmit of several packets is split here anyway: fewer calls per byte.
        16
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Tells quinn when the outbox has room again.
struct RoomPoller {
    out: Arc<Outbox>,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl std::fmt::Debug for RoomPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomPoller").finish()
    }
}

impl quinn::UdpPoller for RoomPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        loop {
            if self.waiting.is_none() {
                let out = self.out.clone();
                self.waiting = Some(Box::pin(async move { out.drained.notified().await }));
            }
            // Registered (by polling) before looking, so a drain in between isn't missed.
            let woke = self
                .waiting
                .as_mut()
                .map(|w| w.as_mut().poll(cx).is_ready())
                .unwrap_or(false);
            if woke {
                self.waiting = None;
            }
            if self.out.has_room() {
                self.waiting = None;
                return Poll::Ready(Ok(()));
            }
            if !woke {
                return Poll::Pending;
            }
        }
    }
}

/// A relay's bandwidth budget, shared by all the tunnels it carries: a token bucket of
/// `bytes_per_s`, holding at most a tenth of a second's worth (and one chunk).
pub struct Rate {
    bytes_per_s: u64,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl Rate {
    pub fn new(bytes_per_s: u64) -> Rate {
        Rate {
            bytes_per_s: bytes_per_s.max(1),
            state: Mutex::new((0.0, tokio::time::Instant::now())),
        }
    }

    fn burst(&self) -> f64 {
        (self.bytes_per_s as f64 / 10.0).max(SPLICE_CHUNK as f64)
    }

    /// Take `n` bytes' worth, waiting as long as the budget needs.
    pub async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().expect("rate lock");
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.bytes_per_s as f64;
            s.0 = (s.0 + refill).min(self.burst()) - n as f64;
            s.1 = now;
            if s.0 >= 0.0 {
                return;
            }
            // In debt: this taker waits until it is paid off; later takers wait longer.
            Duration::from_secs_f64(-s.0 / self.bytes_per_s as f64)
        };
        tokio::time::sleep(wait).await;
    }
}

/// A relayed connection that carries nothing either way for this long is ended: a live one
/// sends at least its keep-alives (every 10 s), so only a tunnel held open to take a place in
/// the relay's budget goes quiet.
pub const RELAY_IDLE: Duration = Duration::from_secs(30);

/// Copy packets both ways between two tunnel streams within `rate`, counting the bytes into
/// `bytes`, until either side ends (then the other is ended too) or nothing moves for
/// [`RELAY_IDLE`].
pub async fn splice(a: Streams, b: Streams, rate: Arc<Rate>, bytes: Arc<AtomicU64>) {
    async fn copy(
        mut from: quinn::RecvStream,
        mut to: quinn::SendStream,
        rate: &Rate,
        bytes: &AtomicU64,
    ) {
        loop {
            match from.read_chunk(SPLICE_CHUNK, true).await {
                Ok(Some(chunk)) => {
                    let data = chunk.bytes;
                    rate.take(data.len()).await;
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if to.write_chunk(data).await.is_err() {
                        let _ = from.stop(0u32.into());
                        return;
                    }
                }
                Ok(None) => {
                    let _ = to.finish();
                    return;
                }
                Err(_) => {
                    let _ = to.reset(0u32.into());
                    return;
                }
            }
        }
    }
    let Streams {
        send: a_send,
        recv: a_recv,
    } = a;
    let Streams {
        send: b_send,
        recv: b_recv,
    } = b;
    let idle = async {
        let mut seen = bytes.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(RELAY_IDLE).await;
            let now = bytes.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    };
    tokio::select! {
        _ = copy(a_recv, b_send, &rate, &bytes) => {}
        _ = copy(b_recv, a_send, &rate, &bytes) => {}
        _ = idle => tracing::debug!("a relayed connection went quiet: ended"),
    }
}

/// Read a tunnel stream's header, within [`OPEN_WAIT`].
pub async fn read_header(recv: &mut quinn::RecvStream) -> Result<Header, String> {
    let mut h = [0u8; HEADER_LEN];
    tokio::time::timeout(OPEN_WAIT, recv.read_exact(&mut h))
        .await
        .map_err(|_| "no tunnel header in time".to_string())?
        .map_err(|e| format!("tunnel header: {e}"))?;
    Header::decode(&h).ok_or_else(|| "not a tunnel header".to_string())
}

/// Write a tunnel stream's header.
pub async fn write_header(send: &mut quinn::SendStream, header: Header) -> Result<(), String> {
    tokio::time::timeout(OPEN_WAIT, send.write_all(&header.encode()))
        .await
        .map_err(|_| "the relay did not take the tunnel header in time".to_string())?
        .map_err(|e| format!("tunnel header: {e}"))
}

/// Read a relay's answer, within [`OPEN_WAIT`].
pub async fn read_status(recv: &mut quinn::RecvStream) -> Result<Status, String> {
    let mut b = [0u8; 1];
    tokio::time::timeout(OPEN_WAIT, recv.read_exact(&mut b))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| format!("the tunnel closed: {e}"))?;
    Status::from_byte(b[0]).ok_or_else(|| format!("unknown answer {}", b[0]))
}

/// Write a relay's answer.
pub async fn write_status(send: &mut quinn::SendStream, status: Status) -> Result<(), String> {
    tokio::time::timeout(OPEN_WAIT, send.write_all(&[status as u8]))
        .await
        .map_err(|_| "the peer did not take the answer in time".to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_unknown_kinds_are_refused() {
        let n = NodeId([7u8; 32]);
        for h in [Header::To(n), Header::From(n)] {
            assert_eq!(Header::decode(&h.encode()), Some(h));
        }
        let mut bad = Header::To(n).encode();
        bad[0] = 9;
        assert_eq!(Header::decode(&bad), None);
    }

    #[test]
    fn tunnel_addresses_differ_per_node_and_are_not_public() {
        let a = tunnel_addr(&NodeId([1u8; 32]));
        let b = tunnel_addr(&NodeId([2u8; 32]));
        assert_ne!(a, b);
        assert!(is_tunnel_addr_of(&a, &NodeId([1u8; 32])));
        assert!(!crate::daemon::activity::is_public(a.ip()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_makes_takers_wait_for_what_they_take_beyond_the_burst() {
        let rate = Rate::new(1 << 20);
        let start = tokio::time::Instant::now();
        for _ in 0..32 {
            rate.take(64 << 10).await;
        }
        // 2 MiB at 1 MiB/s, less the first tenth of a second's burst it could not have
        // saved up (it starts empty).
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        assert!(took <= Duration::from_millis(2100), "{took:?}");
    }
}
