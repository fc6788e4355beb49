/*!
How the admin site meets the network: the accept loop over hyper's HTTP/1.1 server, and a
bound on everything one client can hold there: a connection slot, the time to send a request's
head, the time to send its body, the time a response may wait for the client to read it.
Anyone on the office LAN reaches this code, so nothing here waits on a client without a limit.

HTTP/1.1 only: browsers speak HTTP/2 only over TLS, and this page is plain HTTP on the LAN, so
HTTP/2 would be surface that no visitor uses.

Not for: what a request means (the router in `lib.rs` and the pages and API behind it).
*/

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tower::ServiceExt;

/// Default of [`Limits::max_connections`]. A browser opens at most six connections to one site
/// plus one event stream, so this serves some thirty admin tabs at once. Each connection costs
/// a task, a socket and at most [`MAX_BUF`] of buffer: about 256 × 40 KiB = 10 MiB at worst on
/// the 1 GiB board, and 256 descriptors, well inside the daemon's 1024.
pub const MAX_CONNECTIONS: usize = 256;
/// Default of [`Limits::per_client`]. A browser holds at most six connections to a site plus
/// an event stream per tab; 32 covers a few tabs and a script, and keeps one machine on the
/// LAN from taking every one of [`MAX_CONNECTIONS`] with connections that each ask something
/// now and then (which no timeout ends).
pub const PER_CLIENT: usize = 32;
/// Default of [`Limits::header_read`]. A browser sends its request line and headers in one
/// packet right after it connects (milliseconds on a LAN); 5 s leaves room for a phone whose
/// Wi-Fi radio was asleep, and makes a client that holds a slot without asking anything give
/// it back every 5 s. Apache closes idle kept-alive connections after the same 5 s.
pub const HEADER_READ: Duration = Duration::from_secs(5);
/// Default of [`Limits::write_stall`]. The kernel reads a socket for a browser even when its
/// tab is in the background, so a response that can't be written for 30 s has a client that is
/// gone or hostile; TCP itself would take about 15 minutes of retransmissions to say so.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// Default of [`Limits::shutdown_grace`]. A request is answered in well under a second (the
/// slowest, a password hash, takes about half a second on the board); what is still open after
/// this is an event stream, which never ends by itself and is cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A request's whole body must arrive within this long of its head. Bodies are at most
/// [`crate::MAX_BODY`] (16 KiB), which the slowest office Wi-Fi carries in well under a second;
/// the rest is room for a waking radio. Without it a client could send a byte a second and hold
/// its connection and a handler for hours.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// Largest read buffer of one connection, so also the largest request head (larger ones get
/// 431). A browser's request to this site is under 2 KiB (two short cookies, a user agent);
/// hyper's default of about 400 KiB would let 256 connections hold 100 MiB.
pub const MAX_BUF: usize = 32 * 1024;
/// First wait after an accept error other than a failed handshake (out of file descriptors,
/// say): connections that close meanwhile give descriptors back, so a short wait often does.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The wait doubles up to this, so a lasting failure costs a log line a second, not a busy loop.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// "All connection slots taken" is logged at most this often: during a flood the slots fill
/// and empty every few seconds, and one line a minute says as much as a line each time.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Bounds on the connections of the admin site. [`Limits::default`] is what the daemon uses;
/// tests shorten the times so they can watch the limits act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once. When all are taken the server stops accepting: new
    /// connections wait in the kernel's listen queue, costing this process nothing, and are
    /// taken in order as others close (which [`Limits::header_read`] makes happen within
    /// seconds for any connection that isn't asking for something). Refusing them at once
    /// instead would turn every burst into errors on the admin's screen. Each slot costs up to
    /// about 40 KiB. Default [`MAX_CONNECTIONS`] (256).
    pub max_connections: usize,
    /// Most connections open at once from one address. A connection over this is closed at
    /// once (its client holds others, so it is not left waiting for nothing). Default
    /// [`PER_CLIENT`] (32).
    pub per_client: usize,
    /// Time a client has to send a request's line and headers, counted from when the server
    /// starts waiting for them: from the accept, and on a kept-alive connection from the end of
    /// the previous response. So it is also how long a kept-alive connection may sit idle
    /// between requests: browsers then simply connect again. Default [`HEADER_READ`] (5 s).
    pub header_read: Duration,
    /// A write of a response that makes no progress for this long (the client reads nothing)
    /// ends the connection. Default [`WRITE_STALL`] (30 s).
    pub write_stall: Duration,
    /// After shutdown starts, how long requests in flight may take to finish before their
    /// connections are cut. Default [`SHUTDOWN_GRACE`] (5 s).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS,
            per_client: PER_CLIENT,
            header_read: HEADER_READ,
            write_stall: WRITE_STALL,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Serve `router` on `listener` within `limits` until `shutdown` resolves; then stop accepting,
/// let requests in flight finish for [`Limits::shutdown_grace`], and cut what is left.
///
/// Accept errors never end the loop: a failed handshake is skipped, anything else (out of
/// descriptors) is retried with a backoff. The `Result` is there for callers that matched on
/// `axum::serve`'s.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    // A semaphore of no permits would never accept anything; one connection at least.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropping `stop` tells every connection to finish its request and close.
    let (stop, stopped) = watch::channel(());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(MAX_BUF);
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut warned_full: Option<Instant> = None;
    let clients = Arc::new(std::sync::Mutex::new(HashMap::new()));
    loop {
        // Finished connections are collected here, so the set holds at most one entry per
        // connection accepted since the last accept.
        while let Some(done) = tasks.try_join_next() {
            collected(done);
        }
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                    warned_full = Some(Instant::now());
                    tracing::warn!(
                        max = limits.max_connections,
                        "the admin page has all the connections it takes open; new ones wait"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => {
                        slot.expect("the connection semaphore is never closed")
                    }
                }
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(e) if failed_handshake(&e) => continue,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        retry_ms = backoff.as_millis() as u64,
                        "the admin page cannot accept connections"
                    );
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let Some(held) = Held::take(&clients, peer.ip(), limits.per_client) else {
            tracing::debug!(%peer, "closed: that client holds all the connections it may");
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let io = TokioIo::new(WriteStall::new(stream, limits.write_stall));
        let conn = http.serve_connection(io, service);
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let _held = held;
            let mut conn = std::pin::pin!(conn);
            let mut stopping = false;
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break result,
                    _ = stopped.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            // Timeouts, resets and malformed requests are the client's business.
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
    drop(listener);
    drop(stop);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while let Some(done) = tasks.join_next().await {
            collected(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = tasks.len(),
            "admin connections still open at shutdown are cut"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// Open connections by client address, at most [`Limits::max_connections`] entries.
type Clients = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// One open connection of a client, counted in [`Clients`] until dropped.
struct Held {
    clients: Clients,
    ip: IpAddr,
}

impl Held {
    /// Count a new connection of `ip`, unless it already has `max` open.
    fn take(clients: &Clients, ip: IpAddr, max: usize) -> Option<Held> {
        let mut open = clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Held {
            clients: clients.clone(),
            ip,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Errors of one incoming connection, not of the listener: skip to the next.
fn failed_handshake(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn collected(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "an admin connection's task panicked");
        }
    }
}

/// A stream whose writes fail once one has made no progress for `limit`, so a client that
/// stops reading can't keep its connection, and its slot, for ever. Reads are bounded
/// elsewhere: hyper's header timer between requests, [`BODY_DEADLINE`] during a body.
pub struct WriteStall<S> {
    inner: S,
    limit: Duration,
    /// Armed by the first write that can't proceed, disarmed by the next that does.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStall<S> {
    pub fn new(inner: S, limit: Duration) -> WriteStall<S> {
        WriteStall {
            inner,
            limit,
            stalled: None,
        }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of its response for {} s",
                    limit.as_secs_f32()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Middleware: the request's body must arrive whole within [`BODY_DEADLINE`] of its head.
/// A late body fails like a broken one: the extractor reading it answers 400 with the reason.
pub async fn body_deadline(request: Request, next: Next) -> Response {
    next.run(request.map(|body| Body::new(DeadlineBody::new(body, BODY_DEADLINE))))
        .await
}

/// Why a request's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client took too long to send it.
    #[error("the request's body did not arrive within {} s", .0.as_secs())]
    Late(Duration),
    /// The client or the connection failed while sending it.
    #[error(transparent)]
    Read(axum::Error),
}

/// A body that fails once its deadline passes before its end.
pub struct DeadlineBody {
    inner: Body,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    pub fn new(inner: Body, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Late(self.limit)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_reads_fails_after_the_stall_limit() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut ours = WriteStall::new(ours, Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let err = ours.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_keeps_reading_never_stalls() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut ours = WriteStall::new(ours, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            while got < 4096 {
                // Slower in total than the limit, but never stalled for as long.
                tokio::time::sleep(Duration::from_secs(1)).await;
                got += tokio::io::AsyncReadExt::read(&mut theirs, &mut buf)
                    .await
                    .unwrap();
            }
        });
        ours.write_all(&[0u8; 4096]).await.unwrap();
        reader.await.unwrap();
    }
}
