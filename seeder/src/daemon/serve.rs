/*!
`seeder serve`: open the data folder, listen for peers over QUIC and replicate every held
space with them, dial partner seeders, answer the control socket, tell systemd we're ready,
and shut down cleanly on SIGTERM or Ctrl-C: peers are told goodbye, every acknowledged write
is already durable, the store is flushed last.
*/

use crate::net::admission::{Admission, PROVE_WITHIN};
use crate::net::driver::Admit;
use std::path::PathBuf;
use std::sync::Arc;

use super::backend::Daemon;
use super::registry::Registry;
use crate::store::{Store, StoreConfig};

/// Settings of a running daemon.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The data folder: the store, the registry, the node identity, the control socket.
    pub data: PathBuf,
    /// Where peers reach us over QUIC (UDP).
    pub listen: std::net::SocketAddr,
    /// sled's cache, in bytes (see [`StoreConfig::cache_bytes`]).
    pub cache_bytes: u64,
    /// Where the admin page listens (served by the web-admin crate).
    pub admin: std::net::SocketAddr,
    /// Stop taking new data below this share of free disk.
    pub keep_free_percent: u8,
    /// Announce on the LAN, if set.
    pub mdns: Option<crate::net::discovery::MdnsOptions>,
    /// Presses of the board's claim button, counted by the board support where there is one.
    pub button: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The data folder must be a mounted file system (the appliance's data disk): without
    /// it the daemon serves only the admin page, saying so, and waits.
    pub require_data_disk: bool,
    /// Ask the router to forward our UDP port (UPnP-IGD, NAT-PMP, PCP).
    pub port_mapping: bool,
    /// Connections between peers we hold a space with that we carry at once when they
    /// can't reach each other directly (0: relay for nobody).
    pub relay_tunnels: usize,
    /// Bytes per second all relayed connections together may use.
    pub relay_bytes_per_s: u64,
    /// Where the admin page writes the public keys allowed to log in as root over SSH, for
    /// the device's root-side helper to apply (the appliance image); `None`: the page doesn't
    /// manage SSH.
    pub ssh_keys_file: Option<std::path::PathBuf>,
    /// The command that reaches this daemon's control socket (`sudo seeder ctl`, `seeder ctl
    /// --data DIR`): hints shown to people name it.
    pub ctl_command: String,
}

/// The admin page's address as a person types it: this machine's `.local` name when it
/// listens on every address, no port when it is 80.
pub fn admin_url(addr: std::net::SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .map_or_else(|| "localhost".to_string(), |h| format!("{h}.local"))
    } else {
        match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    match addr.port() {
        80 => format!("http://{host}/"),
        port => format!("http://{host}:{port}/"),
    }
}

/// Longest a stop waits for the daemon's tasks (the admin page's open event streams, a
/// partner dial, the router releasing the port forward) before the store's final flush.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(800);
/// Longest a stop waits for the peers' goodbyes to go out.
const GOODBYE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// How often the daemon looks for a missing data disk.
pub const DISK_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Serve the admin page with "no data disk" until the data folder is a mount point (`true`)
/// or `shutdown` resolves (`false`). Nothing is written to the data folder meanwhile.
async fn wait_for_data_disk(
    config: &ServeConfig,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<bool, ServeError> {
    if super::admin::is_mount_point(&config.data) {
        return Ok(true);
    }
    let listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .map_err(|e| ServeError::Admin(config.admin, e))?;
    let admin = listener
        .local_addr()
        .map_err(|e| ServeError::Admin(config.admin, e))?;
    let site = web_admin::App::new(
        Arc::new(super::admin::NoDiskBackend {
            data: config.data.clone(),
            started: std::time::Instant::now(),
            logs: super::logring::LogRing::global().clone(),
        }),
        web_admin::AdminConfig {
            ctl: config.ctl_command.clone(),
            ..web_admin::AdminConfig::for_this_host(env!("CARGO_PKG_VERSION"))
        },
    );
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let page = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        if let Err(e) = web_admin::serve(listener, site, stopped).await {
            tracing::error!(error = %e, "the admin page stopped");
        }
    });
    tracing::error!(
        data = %config.data.display(),
        %admin,
        "no data disk: waiting for one to be mounted; nothing is stored meanwhile"
    );
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "not under systemd");
    }
    let mut tick = tokio::time::interval(DISK_POLL);
    let mounted = loop {
        tokio::select! {
            _ = shutdown.as_mut() => break false,
            _ = tick.tick() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                if super::admin::is_mount_point(&config.data) {
                    tracing::info!(data = %config.data.display(), "data disk mounted");
                    break true;
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), page).await;
    Ok(mounted)
}

/// The node identity's file in the data folder.
pub const IDENTITY_FILE: &str = "node.key";

/// How often the disk reserve is grown back if it was given up (see `store::reserve`).
pub const RESERVE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// How often partner seeders that aren't connected are dialed again.
pub const PARTNER_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Registry(#[from] super::registry::RegistryError),
    #[error(transparent)]
    Ctl(#[from] super::ctl::CtlError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("cannot listen for the admin page on {0}: {1}")]
    Admin(std::net::SocketAddr, #[source] std::io::Error),
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Run until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let shutdown = shutdown;
    tokio::pin!(shutdown);
    if config.require_data_disk && !wait_for_data_disk(&config, &mut shutdown).await? {
        return Ok(());
    }
    let mut sc = StoreConfig::default();
    sc.cache_bytes(config.cache_bytes);
    let store = Store::open(&config.data, &sc)?;
    // A data folder made by an older version, or by hand, may be open to others: it holds the
    // admin password's hash and the node key.
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o700);
        if let Err(e) = std::fs::set_permissions(&config.data, private) {
            tracing::warn!(data = %config.data.display(), error = %e, "cannot make the data folder private");
        }
    }
    let registry = Registry::open(&store)?;
    let identity = Arc::new(crate::net::NodeIdentity::load_or_create(
        &config.data.join(IDENTITY_FILE),
    )?);
    let node_id = identity.node_id();
    let endpoint = Arc::new(crate::net::Endpoint::bind(config.listen, identity)?);
    let listen = endpoint.local_addr()?;
    // A node listening on loopback only can't be forwarded to: nothing is asked.
    let mapper = crate::net::reach::PortMapper::start(
        listen.port(),
        config.port_mapping && !listen.ip().is_loopback(),
    );
    let admin_listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .map_err(|e| ServeError::Admin(config.admin, e))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| ServeError::Admin(config.admin, e))?;
    let activity = Arc::new(super::activity::Activity::default());
    let node = Arc::new(super::local::SeederLocal {
        store: store.clone(),
        registry: registry.clone(),
        limits: super::local::StoreLimits {
            keep_free_percent: config.keep_free_percent,
        },
        activity: activity.clone(),
        pending: Default::default(),
    });
    let driver = crate::net::driver::Driver::new(node.clone(), node_id);
    driver.relay_for_others(config.relay_tunnels, config.relay_bytes_per_s);
    let partners_changed = Arc::new(tokio::sync::Notify::new());
    let daemon = Arc::new(Daemon {
        store: store.clone(),
        registry: registry.clone(),
        started: std::time::Instant::now(),
        node_id,
        listen,
        admin: Some(admin_addr),
        board: super::backend::BoardState {
            presses: config.button.clone(),
            waiting: Arc::default(),
        },
        keep_free_percent: config.keep_free_percent,
        activity: activity.clone(),
        links: super::ops::Links {
            driver: Some(driver.clone()),
            partners_changed: partners_changed.clone(),
        },
        mapping: mapper.watch(),
        relay_budget: (config.relay_tunnels, config.relay_bytes_per_s),
    });
    // The setup code exists from the first start, so the console and the SD card can show it.
    if let Err(e) = daemon.setup_code() {
        tracing::warn!(error = %e, "cannot create the setup code");
    }
    let scrub_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrubber = tokio::spawn(super::scrub::run(
        store.clone(),
        registry.clone(),
        activity.clone(),
        scrub_stop.clone(),
    ));
    let backend = Arc::new(super::admin::AdminDaemon {
        daemon: daemon.clone(),
        local: node,
        activity,
        logs: super::logring::LogRing::global().clone(),
        keep_free_percent: config.keep_free_percent,
        button: config.button.clone(),
        waiting: daemon.board.waiting.clone(),
        ssh_keys_file: config.ssh_keys_file.clone(),
    });
    let site = web_admin::App::new(
        backend,
        web_admin::AdminConfig {
            ctl: config.ctl_command.clone(),
            ..web_admin::AdminConfig::for_this_host(env!("CARGO_PKG_VERSION"))
        },
    );
    let claimed = site.claimed();
    let listener = super::ctl::bind(&config.data)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctl = tokio::spawn(super::ctl::serve(listener, daemon.clone(), async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    let admin = tokio::spawn({
        let mut stop = stop_tx.subscribe();
        async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = web_admin::serve(admin_listener, site, stopped).await {
                tracing::error!(error = %e, "the admin page stopped");
            }
        }
    });
    let peers = tokio::spawn(accept_loop(
        endpoint.clone(),
        driver.clone(),
        stop_tx.subscribe(),
    ));
    let partners = tokio::spawn(dial_partners(
        endpoint.clone(),
        driver.clone(),
        registry,
        partners_changed,
        daemon.activity.clone(),
        stop_tx.subscribe(),
    ));
    let punches = tokio::spawn(punch_when_asked(
        endpoint.clone(),
        driver.clone(),
        stop_tx.subscribe(),
    ));
    let reserve = tokio::spawn({
        let store = store.clone();
        let mut stop = stop_tx.subscribe();
        async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::pin!(stopped);
            let mut tick = tokio::time::interval(RESERVE_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {
                        let s = store.clone();
                        let _ = tokio::task::spawn_blocking(move || s.keep_reserve()).await;
                    }
                }
            }
        }
    });
    // Finding us on the LAN is a convenience: a failure is logged, never fatal.
    let _advertisement = config.mdns.and_then(|opts| {
        crate::net::discovery::advertise(node_id, listen, opts)
            .map_err(|e| tracing::warn!(error = %e, "not announced on the LAN"))
            .ok()
    });
    tracing::info!(
        data = %config.data.display(),
        %listen,
        admin = %admin_addr,
        node = %node_id,
        "seeder ready"
    );
    // What a person starting it needs first: where the page is and how to claim it.
    tracing::info!("admin page on {}", admin_url(admin_addr));
    if !claimed {
        tracing::info!(
            "not claimed yet: `{} setup-code` shows the code that claims the admin page",
            config.ctl_command
        );
    }
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "not under systemd");
    }
    // Under systemd with WatchdogSec, prove liveness at half the interval: if the runtime
    // stalls, the pings stop and systemd restarts the service.
    let watchdog = sd_notify::watchdog_enabled().map(|interval| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tick.tick().await;
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "watchdog ping failed");
                }
            }
        })
    });
    shutdown.await;
    if let Some(w) = watchdog {
        w.abort();
    }
    scrub_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    scrubber.abort();
    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    // Everything acknowledged is on disk already: what is left is telling others goodbye,
    // within one deadline for all of it, so that a stop (a reboot, an update) is prompt even
    // with a partner dial or a router's answer pending.
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    endpoint.close("shutting down");
    let tasks = async {
        let _ = ctl.await;
        let _ = admin.await;
        let _ = peers.await;
        let _ = partners.await;
        let _ = punches.await;
        let _ = reserve.await;
    };
    let _ = tokio::time::timeout_at(deadline, async { tokio::join!(tasks, mapper.stop()) }).await;
    // Closing sent each peer its goodbye at once; waiting out the draining period that
    // follows would only hold up the exit.
    let _ = tokio::time::timeout(GOODBYE_WAIT, endpoint.wait_idle()).await;
    let _ = std::fs::remove_file(config.data.join(super::ctl::SOCKET_NAME));
    store.commit()?;
    Ok(())
}

/// Connections accepted and not yet ended, by admission id: how to push each out; and the
/// rate handshakes may start at.
struct Door {
    admission: Admission,
    push_out: std::collections::HashMap<u64, tokio::sync::oneshot::Sender<()>>,
    handshakes: crate::net::admission::HandshakeRate,
}

/// Accept peers until stopped, each on its own task, let in as [`Admission`] says: strangers
/// crowd only each other, and must prove a capability within [`PROVE_WITHIN`]. Connections
/// that relays carry to us (see `net::tunnel`) come in the same way.
async fn accept_loop(
    endpoint: Arc<crate::net::Endpoint>,
    driver: Arc<crate::net::driver::Driver>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let door = Arc::new(std::sync::Mutex::new(Door {
        admission: Admission::default(),
        push_out: Default::default(),
        handshakes: crate::net::admission::HandshakeRate::new(std::time::Instant::now()),
    }));
    let mut tunnels = driver.accept_tunnels();
    loop {
        let (incoming, tunnel) = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            c = endpoint.accept_incoming() => (c, None),
            Some(t) = async {
                match tunnels.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            } => (None, Some(t)),
        };
        if let Some(t) = tunnel {
            // The tunnel's first handshake packet is waited for on a task of its own.
            let (endpoint, driver, stop, door) =
                (endpoint.clone(), driver.clone(), stop.clone(), door.clone());
            tokio::spawn(async move {
                match endpoint.accept_tunnel(t.streams, t.origin, t.via).await {
                    Ok(incoming) => let_in(incoming, door, driver, stop),
                    Err(e) => tracing::debug!(error = %e, "relayed connection failed"),
                }
            });
            continue;
        }
        let Some(incoming) = incoming else { return };
        // See `net::admission`: a real source address first, then a handshake rate.
        if !incoming.validated() {
            incoming.retry();
            continue;
        }
        let_in(incoming, door.clone(), driver.clone(), stop.clone());
    }
}

/// Take `incoming` in, on a task of its own, if the handshake rate and [`Admission`] allow.
fn let_in(
    incoming: crate::net::Incoming,
    door: Arc<std::sync::Mutex<Door>>,
    driver: Arc<crate::net::driver::Driver>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if !door
        .lock()
        .expect("door lock")
        .handshakes
        .take(std::time::Instant::now())
    {
        incoming.ignore();
        return;
    }
    let deadline = tokio::time::Instant::now() + PROVE_WITHIN;
    let (pushed_out, id) = {
        let mut d = door.lock().expect("door lock");
        let admitted = d.admission.admit(incoming.remote_address().ip());
        if let Some(old) = admitted.evict {
            if let Some(tx) = d.push_out.remove(&old) {
                let _ = tx.send(());
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        d.push_out.insert(admitted.id, tx);
        (rx, admitted.id)
    };
    tokio::spawn(async move {
        let proven = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Fires once: pushed out by newer strangers, or out of time to prove itself.
        let unwelcome = async move {
            tokio::select! {
                _ = pushed_out => "pushed out by newer connections",
                _ = tokio::time::sleep_until(deadline) => "did not prove a capability in time",
            }
        };
        tokio::pin!(unwelcome);
        let handshake = tokio::select! {
            r = incoming.handshake() => Some(r),
            why = &mut unwelcome => {
                tracing::debug!(why, "incoming connection dropped during its handshake");
                None
            }
        };
        match handshake {
            Some(Ok(conn)) => {
                let prove = {
                    let (door, proven) = (door.clone(), proven.clone());
                    Box::new(move || {
                        let mut d = door.lock().expect("door lock");
                        let ok = d.admission.prove(id);
                        if ok {
                            d.push_out.remove(&id);
                            proven.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        ok
                    })
                };
                let quic = conn.conn.clone();
                let peer = conn.peer.short();
                let run = driver.run(conn, Admit::Unproven(prove), Vec::new(), None, stop);
                tokio::pin!(run);
                tokio::select! {
                    _ = &mut run => {}
                    why = &mut unwelcome => {
                        if !proven.load(std::sync::atomic::Ordering::Relaxed) {
                            tracing::debug!(%peer, why, "closing an unproven connection");
                            quic.close(
                            crate::net::admission::CLOSED_UNPROVEN.into(),
                            b"unproven",
                        );
                        }
                        let _ = run.await;
                    }
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "incoming connection failed"),
            None => {}
        }
        let mut d = door.lock().expect("door lock");
        d.push_out.remove(&id);
        d.admission
            .leave(id, proven.load(std::sync::atomic::Ordering::Relaxed));
    });
}

/// Every address of `hosts` (comma-separated `host:port`s, as a peer code gives them), in
/// order, without repeats; names that don't resolve are left out.
pub async fn resolve_all(hosts: &str) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        if let Ok(addrs) = tokio::net::lookup_host(host).await {
            for a in addrs {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// Punch packets sent for each punch request (a peer we hold a space with introduced us to
/// another node), [`PUNCH_GAP`] apart: the first opens our NAT for the other node's packets;
/// the others cover a lost one.
const PUNCH_PACKETS: usize = 3;
const PUNCH_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// Send punch packets wherever a peer we hold a space with says a node we are being
/// introduced to is (see `Message::Punch`; the driver lets each peer ask at most every
/// `RENDEZVOUS_EVERY`).
async fn punch_when_asked(
    endpoint: Arc<crate::net::Endpoint>,
    driver: Arc<crate::net::driver::Driver>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut punches = driver.punches();
    loop {
        let p = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            p = punches.recv() => p,
        };
        match p {
            Ok(p) => {
                tracing::debug!(node = %p.node.short(), addr = %p.addr, "punching");
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    for i in 0..PUNCH_PACKETS {
                        if i > 0 {
                            tokio::time::sleep(PUNCH_GAP).await;
                        }
                        endpoint.punch(p.addr);
                    }
                });
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keep partner seeders connected, opening every held space with them: dialed at their
/// addresses and, at the same time, through an introduction by a peer both of us reach.
async fn dial_partners(
    endpoint: Arc<crate::net::Endpoint>,
    driver: Arc<crate::net::driver::Driver>,
    registry: Registry,
    partners_changed: Arc<tokio::sync::Notify>,
    activity: Arc<super::activity::Activity>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let connected: Arc<std::sync::Mutex<std::collections::BTreeSet<[u8; 32]>>> = Arc::default();
    // Partners reached only through a relay that a direct path is being looked for.
    let upgrading: Arc<std::sync::Mutex<std::collections::BTreeSet<[u8; 32]>>> = Arc::default();
    // Partners whose last attempt failed: the log says so once, not at every round.
    let failing: Arc<std::sync::Mutex<std::collections::BTreeSet<[u8; 32]>>> = Arc::default();
    loop {
        let partners = registry.partners().unwrap_or_default();
        let spaces: Vec<_> = registry
            .spaces()
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.address)
            .collect();
        for p in partners {
            let id = crate::net::NodeId(p.node_id);
            // Reached only through a relay: a direct path is looked for at each round (the
            // NATs between may have changed), one attempt at a time.
            let upgrade = activity.relayed_only(&id)
                && upgrading
                    .lock()
                    .expect("partner set lock")
                    .insert(p.node_id);
            // Connected either way (it may have dialed us, or been introduced to us).
            if !upgrade
                && (connected
                    .lock()
                    .expect("partner set lock")
                    .contains(&p.node_id)
                    || activity.is_connected(&id))
            {
                continue;
            }
            let addrs = resolve_all(&p.address).await;
            let (endpoint, driver, stop, connected, spaces, upgrading, activity, registry) = (
                endpoint.clone(),
                driver.clone(),
                stop.clone(),
                connected.clone(),
                spaces.clone(),
                upgrading.clone(),
                activity.clone(),
                registry.clone(),
            );
            let failing = failing.clone();
            tokio::spawn(async move {
                // At its addresses, through an introduction, and last through a relay (not
                // when looking for a better path than a relay's).
                let reached = {
                    let direct = async {
                        if addrs.is_empty() {
                            return Err(format!("cannot resolve {}", p.address));
                        }
                        endpoint
                            .connect_any(&addrs, Some(id))
                            .await
                            .map_err(|e| e.to_string())
                    };
                    if upgrade {
                        let introduced =
                            crate::net::driver::dial_introduced(&endpoint, &driver, id);
                        let r = crate::net::driver::first_connected(direct, introduced).await;
                        upgrading
                            .lock()
                            .expect("partner set lock")
                            .remove(&p.node_id);
                        match r {
                            Ok(c) => Ok(c),
                            Err(e) => {
                                tracing::debug!(partner = %id.short(), error = %e, "still no direct path");
                                return;
                            }
                        }
                    } else {
                        crate::net::driver::reach(&endpoint, &driver, id, direct).await
                    }
                };
                // Forgotten while it was being dialed: nothing more to do or say about it.
                let still_partner = registry
                    .partners()
                    .map_or(true, |ps| ps.iter().any(|q| q.node_id == p.node_id));
                if !still_partner {
                    if let Ok((conn, _)) = reached {
                        conn.conn.close(0u32.into(), b"partner removed");
                    }
                    return;
                }
                match reached {
                    Ok((conn, at)) => {
                        if upgrade {
                            tracing::info!(partner = %id.short(), "a direct path replaces the relay");
                            activity.close_relayed(&id);
                        }
                        let how = if conn.relayed_via.is_some() {
                            "relayed"
                        } else if conn.introduced {
                            "introduced"
                        } else {
                            "direct"
                        };
                        failing.lock().expect("partner set lock").remove(&p.node_id);
                        tracing::info!(partner = %id.short(), %at, how, "partner connected");
                        // Where it was found is where it is dialed first next time (its
                        // addresses may have changed since it was added); a tunnel's is no
                        // address.
                        if conn.relayed_via.is_none() {
                            if let Err(e) = registry.partner_reached_at(&p.node_id, at) {
                                tracing::warn!(error = %e, "cannot remember where a partner is");
                            }
                        }
                        connected
                            .lock()
                            .expect("partner set lock")
                            .insert(p.node_id);
                        let _ = driver
                            .clone()
                            .run(conn, Admit::Open, spaces, None, stop)
                            .await;
                        connected
                            .lock()
                            .expect("partner set lock")
                            .remove(&p.node_id);
                    }
                    Err(e) => {
                        if failing.lock().expect("partner set lock").insert(p.node_id) {
                            tracing::warn!(
                                partner = %p.address,
                                error = %e,
                                "partner unreachable; tried again every round, logged when it connects"
                            );
                        } else {
                            tracing::debug!(partner = %p.address, error = %e, "partner still unreachable");
                        }
                    }
                }
            });
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(PARTNER_RETRY) => {}
            _ = partners_changed.notified() => {}
        }
    }
}
