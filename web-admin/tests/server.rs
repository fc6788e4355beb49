//! The admin site on a real socket: how many connections a client can hold, for how long, and
//! what shutdown does with them. Each test shortens the [`Limits`] so it can watch them act, and
//! waits on events with a deadline, never on a sleep.
#![allow(clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use web_admin::memory::MemoryBackend;
use web_admin::{AdminBackend, AdminConfig, App, Limits};

/// Bounds every wait of these tests; reached only when the server misbehaves.
const PATIENCE: Duration = Duration::from_secs(20);

/// A request for a page that needs no login, answered and the connection closed.
const SMALL_REQUEST: &[u8] =
    b"GET /static/icon.svg HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    /// Start shutdown and wait for the server to return.
    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(PATIENCE, &mut self.task)
            .await
            .expect("the server returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The whole site within `limits`.
async fn site(limits: Limits) -> Running {
    let (listener, addr) = listen().await;
    let app = App::new(
        Arc::new(MemoryBackend::new("1234-5678-9abc-def0-1234")) as Arc<dyn AdminBackend>,
        AdminConfig {
            hosts: vec!["localhost".into()],
            version: "test".into(),
            ctl: "seeder ctl".into(),
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(web_admin::serve_with(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// Just `router` within `limits`.
async fn bare(router: Router, limits: Limits) -> Running {
    let (listener, addr) = listen().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(web_admin::server::run(
        listener,
        router,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// Send `request` on a new connection and read the reply to its end.
async fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// Read one response with a `Content-Length` from a connection that stays open.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap();
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed in the middle of a response");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server closes `s` before `deadline` (anything it still sends is skipped).
async fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the server still holds `s` open: a non-blocking peek that finds nothing to read.
fn still_open(s: TcpStream) -> (TcpStream, bool) {
    let s = s.into_std().unwrap();
    let open = matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    (TcpStream::from_std(s).unwrap(), open)
}

#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_timeout_while_a_new_client_is_answered() {
    let header_read = Duration::from_secs(3);
    let mut server = site(Limits {
        // Room for all of them, so that only the header timeout is at work here.
        max_connections: 1024,
        per_client: 1024,
        header_read,
        ..Limits::default()
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /static/icon.svg HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        slow.push(s);
    }
    let reply = timeout(PATIENCE, ask(server.addr, SMALL_REQUEST))
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let mut open = 0;
    let mut slow: Vec<TcpStream> = slow
        .into_iter()
        .map(|s| {
            let (s, is_open) = still_open(s);
            open += usize::from(is_open);
            s
        })
        .collect();
    assert_eq!(
        open, 300,
        "the slow ones were still open when it was answered"
    );
    let deadline = Instant::now() + header_read + PATIENCE;
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(closed_by_server(s, deadline).await, "connection {i}");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn a_kept_alive_connection_with_no_next_request_is_closed() {
    let mut server = site(Limits {
        header_read: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /static/icon.svg HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let reply = timeout(PATIENCE, read_response(&mut s)).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    assert!(closed_by_server(&mut s, Instant::now() + PATIENCE).await);
    server.shut_down().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_and_are_answered_once_the_others_are_gone() {
    let mut server = site(Limits {
        max_connections: 4,
        // Long enough that only the clients closing frees the slots.
        header_read: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..12 {
        holders.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let addr = server.addr;
    let mut waiting = tokio::spawn(async move { ask(addr, SMALL_REQUEST).await });
    assert!(
        timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "answered although every slot was taken"
    );
    drop(holders);
    let reply = timeout(PATIENCE, waiting).await.unwrap().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // And the slots are all back: as many clients as the cap are served together.
    let mut together = Vec::new();
    for _ in 0..4 {
        together.push(tokio::spawn(async move { ask(addr, SMALL_REQUEST).await }));
    }
    for t in together {
        let reply = timeout(PATIENCE, t).await.unwrap().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let mut server = site(Limits {
        max_connections: 64,
        per_client: 8,
        // Long enough that only the per-client cap is at work here.
        header_read: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The ones over the cap are closed at once; the first eight stay open.
    let deadline = Instant::now() + PATIENCE;
    let mut closed = 0;
    for s in held.iter_mut().skip(8) {
        closed += usize::from(closed_by_server(s, deadline).await);
    }
    assert_eq!(closed, 4);
    let mut open = 0;
    let held: Vec<TcpStream> = held
        .into_iter()
        .take(8)
        .map(|s| {
            let (s, is_open) = still_open(s);
            open += usize::from(is_open);
            s
        })
        .collect();
    assert_eq!(open, 8);
    // Another machine is answered meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = timeout(PATIENCE, socket.connect(server.addr))
        .await
        .unwrap()
        .unwrap();
    other.write_all(SMALL_REQUEST).await.unwrap();
    let mut reply = Vec::new();
    timeout(PATIENCE, other.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // And the first machine's slots come back as its connections close.
    drop(held);
    let reply = timeout(PATIENCE, async {
        loop {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            let mut reply = Vec::new();
            // Refused (closed at once) while its old connections are still being let go.
            if s.write_all(SMALL_REQUEST).await.is_ok()
                && s.read_to_end(&mut reply).await.is_ok()
                && !reply.is_empty()
            {
                return String::from_utf8_lossy(&reply).into_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    server.shut_down().await;
}

#[tokio::test]
async fn handlers_see_the_client_address() {
    let router = Router::new().route(
        "/",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let mut server = bare(router, Limits::default()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    timeout(PATIENCE, s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.ends_with(&format!("\r\n\r\n{me}")), "{reply}");
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_stops_accepting() {
    let mut server = site(Limits {
        header_read: Duration::from_secs(120),
        shutdown_grace: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /static/icon.svg HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    timeout(PATIENCE, read_response(&mut kept)).await.unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    server.shut_down().await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "shutdown waited for the grace"
    );
    let deadline = Instant::now() + PATIENCE;
    assert!(closed_by_server(&mut kept, deadline).await);
    assert!(closed_by_server(&mut silent, deadline).await);
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_cuts_a_request_still_running_after_the_grace() {
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(1);
    let router = Router::new().route(
        "/",
        get(move || {
            let started = started_tx.clone();
            async move {
                let _ = started.send(()).await;
                std::future::pending::<()>().await;
                "never"
            }
        }),
    );
    let mut server = bare(
        router,
        Limits {
            shutdown_grace: Duration::from_millis(200),
            ..Limits::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    timeout(PATIENCE, started_rx.recv()).await.unwrap().unwrap();
    server.shut_down().await;
    assert!(closed_by_server(&mut s, Instant::now() + PATIENCE).await);
}
