/*!
Member-side replication commands: `seeder sync` exchanges a space's feeds with seeders (or
other members) over QUIC; `seeder status` shows what each seeder has acknowledged storing.
*/

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Args;

use crate::daemon::local::{HomeLocal, SyncObserver};
use crate::feed::FeedKey;
use crate::fs::home::Home;
use crate::net::driver::{Admit, Driver};
use crate::net::{Endpoint, NodeId, NodeIdentity};
use crate::wire::Refusal;

use super::Failure;

/// The member device's node identity, in its home.
const IDENTITY_FILE: &str = "node.key";

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Space name.
    name: String,
    /// A seeder or member to sync with: its peer code (seeder:NODEID@ADDRESS:PORT,…, from
    /// the seeder's Peers page or `seeder ctl status`), or HOST:PORT, optionally #NODEID to
    /// pin its identity.
    #[arg(long = "peer", value_name = "CODE|HOST:PORT[#NODEID]")]
    peers: Vec<String>,
    /// Return once both sides hold each other's data and every peer acknowledged storage.
    #[arg(long, conflicts_with = "watch")]
    once: bool,
    /// Keep syncing live until interrupted.
    #[arg(long)]
    watch: bool,
    /// Also accept connections from other members on this address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// With --once: give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// mDNS port for finding seeders (tests use another than 5353).
    #[arg(long, hide = true, default_value_t = 5353)]
    mdns_port: u16,
    /// Look for seeders on the loopback interface only (tests).
    #[arg(long, hide = true)]
    mdns_loopback: bool,
}

/// How long to look for seeders on the LAN, and how much longer once one answered.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);
const DISCOVERY_SETTLE: Duration = Duration::from_millis(500);

/// A peer code, or `HOST:PORT[#NODEID]`: the `host:port`s to dial (comma-separated) and the
/// node id to expect there.
fn parse_peer(s: &str) -> Result<(String, Option<NodeId>)> {
    if crate::net::reach::PeerCode::looks_like(s) {
        let code: crate::net::reach::PeerCode = s
            .parse()
            .map_err(|e| anyhow::Error::new(e).context(Failure::BadInput))?;
        if code.addrs.is_empty() {
            return Err(anyhow::anyhow!(
                "the peer code names no address: copy the whole code from the seeder's Peers \
                 page (seeder:NODEID@ADDRESS:PORT,…)"
            )
            .context(Failure::BadInput));
        }
        let hosts: Vec<String> = code.addrs.iter().map(|a| a.to_string()).collect();
        return Ok((hosts.join(","), Some(code.node)));
    }
    let (hosts, id) = match s.rsplit_once('#') {
        Some((addr, id)) => (
            addr,
            Some(
                id.parse()
                    .map_err(|e| anyhow::Error::new(e).context(Failure::BadInput))?,
            ),
        ),
        None => (s, None),
    };
    for host in hosts.split(',') {
        if !is_host_port(host) {
            let shown: String = s.chars().take(80).collect();
            let shown = if shown.len() < s.len() {
                format!("{shown:?}…")
            } else {
                format!("{shown:?}")
            };
            return Err(anyhow::anyhow!(
                "{shown} is not a peer: give the seeder's peer code (seeder:NODEID@ADDRESS:PORT, \
                 on its Peers page or from `seeder ctl status`) or HOST:PORT[#NODEID]"
            )
            .context(Failure::BadInput));
        }
    }
    Ok((hosts.to_string(), id))
}

/// `host:port`, `1.2.3.4:port` or `[v6]:port`, with a port that is a number above 0: the
/// shape `ctl peer add` takes.
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        crate::daemon::backend::valid_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

pub fn sync(home: Home, args: SyncArgs) -> Result<()> {
    let mut args = args;
    if args.peers.is_empty() {
        eprintln!("looking for seeders on the LAN (mDNS)…");
        let found = crate::net::discovery::discover(
            DISCOVERY_WAIT,
            DISCOVERY_SETTLE,
            crate::net::discovery::MdnsOptions {
                port: args.mdns_port,
                loopback_only: args.mdns_loopback,
            },
        )
        .context("looking for seeders on the LAN")?;
        if found.is_empty() {
            return Err(anyhow::anyhow!(
                "no seeder answered on the LAN: give one with --peer HOST:PORT#NODEID \
                 (on the seeder, seeder ctl status shows both)"
            )
            .context(Failure::NotFound));
        }
        for f in found {
            eprintln!("found seeder {} at {}", f.node, f.addr);
            args.peers.push(format!("{}#{}", f.addr, f.node));
        }
    }
    let address = *home
        .space(&args.name)
        .map_err(|e| anyhow::Error::new(e).context(Failure::NotFound))?
        .address();
    let parsed: Vec<(String, Option<NodeId>)> = args
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<_>>()?;
    let identity = Arc::new(
        NodeIdentity::load_or_create(&home.dir().join(IDENTITY_FILE))
            .context("the device's node identity")?,
    );
    let home = Arc::new(home);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let once = args.once || !args.watch;
    runtime.block_on(async move {
        let listen = args
            .listen
            .unwrap_or_else(|| "0.0.0.0:0".parse().expect("a valid address"));
        let endpoint = Arc::new(Endpoint::bind(listen, identity.clone())?);
        let progress = Arc::new(Progress::new(
            std::io::stderr().is_terminal(),
            home.store().clone(),
        ));
        let node = Arc::new(HomeLocal::new(
            home.clone(),
            address,
            Some(progress.clone()),
        ));
        for id in parsed.iter().filter_map(|(_, id)| *id) {
            node.choose(id.0);
        }
        let driver = Driver::new(node.clone(), identity.node_id());
        // File commands typed meanwhile run here, and what they write goes out at once.
        let _commands = {
            let driver = driver.clone();
            let node = node.clone();
            super::forward::serve(home.clone(), move || {
                // Who is in the space before the feeds it admits.
                driver.announce_records(address, node.records_made());
                for offer in crate::sync::Local::offers(&*node, &address) {
                    if let Some(head) = offer.head {
                        driver.announce(address, offer.cert, head);
                    }
                }
            })?
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let deadline =
            once.then(|| tokio::time::Instant::now() + Duration::from_secs(args.timeout));
        let ctx = Arc::new(PeerCtx {
            endpoint: endpoint.clone(),
            driver: driver.clone(),
            node: node.clone(),
            address,
            deadline,
            stop: stop_rx.clone(),
        });
        let mut peers = Vec::new();
        for (peer, (host, id)) in args.peers.iter().zip(parsed) {
            peers.push((peer.clone(), tokio::spawn(ctx.clone().follow(host, id))));
        }
        if let Some(l) = args.listen {
            let endpoint = endpoint.clone();
            let driver = driver.clone();
            let stop = stop_rx.clone();
            eprintln!("listening on {l} as {}", identity.node_id());
            tokio::spawn(async move {
                while let Some(Ok(conn)) = endpoint.accept().await {
                    // A peer that dials this member proves it knows the space before it may send data.
                    let admit = Admit::Unproven(Box::new(|| true));
                    tokio::spawn(driver.clone().run(
                        conn,
                        admit,
                        vec![address],
                        None,
                        stop.clone(),
                    ));
                }
            });
        }
        if !once {
            // A peer is followed until the signal, or until it denies this device the space
            // (nothing more will come from it): when every peer has, that is reported.
            let denied = async {
                let mut outcomes = Vec::new();
                for (name, task) in peers.drain(..) {
                    let outcome = task.await.unwrap_or_else(|e| {
                        Outcome::Unreachable(format!("the sync task failed: {e}"))
                    });
                    outcomes.push((name, outcome));
                }
                outcomes
            };
            tokio::select! {
                _ = crate::daemon::serve::shutdown_signal() => {
                    let _ = stop_tx.send(true);
                    // Say goodbye, so that peers show this device gone at once rather than
                    // after the idle timeout; a peer that is gone must not hold up the exit.
                    endpoint.close("done");
                    let _ = tokio::time::timeout(GOODBYE_WAIT, endpoint.wait_idle()).await;
                    return Ok(());
                }
                outcomes = denied => {
                    endpoint.close("done");
                    let _ = tokio::time::timeout(GOODBYE_WAIT, endpoint.wait_idle()).await;
                    progress.finish();
                    return report(&home, &args.name, &address, &outcomes);
                }
            }
        }
        // Interrupted: every peer task ends ("stopped") and the goodbyes below go out.
        let stop_tx = Arc::new(stop_tx);
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _on_signal = {
            let (stop_tx, interrupted) = (stop_tx.clone(), interrupted.clone());
            // Ends with the sync.
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                crate::daemon::serve::shutdown_signal().await;
                interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = stop_tx.send(true);
            }))
        };
        let mut outcomes = Vec::new();
        for (name, task) in peers {
            let outcome = task
                .await
                .unwrap_or_else(|e| Outcome::Unreachable(format!("the sync task failed: {e}")));
            outcomes.push((name, outcome));
        }
        let _ = stop_tx.send(true);
        endpoint.close("done");
        // Goodbyes to peers that are there take a round trip; one that is gone must not hold
        // the command past its --timeout.
        let all_synced = outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Synced(_)));
        let linger = if all_synced {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(200)
        };
        let _ = tokio::time::timeout(linger, endpoint.wait_idle()).await;
        progress.finish();
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(anyhow::anyhow!("interrupted").context(Failure::Unreachable));
        }
        report(&home, &args.name, &address, &outcomes)
    })
}

/// How long `sync --watch` waits, when interrupted, for its goodbyes to reach its peers: a
/// round trip on any network it works over; a peer that is gone doesn't hold up the exit.
const GOODBYE_WAIT: Duration = Duration::from_millis(500);

/// How long a connected peer may take to open the space before `sync --once` concludes it
/// doesn't hold it: a seeder that holds the space answers at once; one that doesn't says
/// nothing at all (by design: a stranger must not learn what it holds). Shorter than the
/// seeder's own wait for a proof ([`PROVE_WITHIN`]), after which it closes the connection.
///
/// [`PROVE_WITHIN`]: crate::net::admission::PROVE_WITHIN
const OPEN_WAIT: Duration = Duration::from_secs(8);

/// Longest pause between reconnection attempts (they start at [`FIRST_RETRY`] and double).
const MAX_RETRY: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// What a peer that was never tried is reported as.
const NO_ATTEMPT: &str = "no attempt made";

/// What every peer task of one sync shares.
/// How a connection reached its peer, in words (the seeder's status says the same of its
/// peers): `relayed via NODE`, `hole-punched`, `LAN` or `direct`.
fn reached_label(conn: &crate::net::Connection) -> String {
    if let Some(via) = conn.relayed_via {
        format!("relayed via {}", via.short())
    } else if conn.introduced {
        "hole-punched".into()
    } else if crate::daemon::activity::is_public(conn.conn.remote_address().ip()) {
        "direct".into()
    } else {
        "LAN".into()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct PeerCtx {
    endpoint: Arc<Endpoint>,
    driver: Arc<Driver>,
    node: Arc<HomeLocal>,
    address: crate::space::Address,
    /// `--once`: when to give up. `--watch`: none.
    deadline: Option<tokio::time::Instant>,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// How `sync --once` ended with one peer.
#[derive(Debug)]
enum Outcome {
    /// Both sides hold each other's data; the peer acknowledged storing ours.
    Synced(NodeId),
    /// Done, but the peer refuses some of our data, for these reasons.
    Refused(NodeId, Vec<(FeedKey, Refusal)>),
    /// Done, but the peer's heads showed these feeds' writers forked.
    Forked(NodeId, Vec<FeedKey>),
    /// Done, but this device refused to take some of the peer's data (its own disk is full).
    Refusing(NodeId, Vec<(FeedKey, Refusal)>),
    /// Done, but the peer could serve these feeds only up to an entry (damaged there).
    Incomplete(NodeId, Vec<(FeedKey, u64)>),
    /// Connected, but the peer never opened the space: it doesn't hold it.
    NotHeld(NodeId),
    /// The peer holds the space but does not serve it to this device, and why.
    Denied(NodeId, crate::wire::Denial),
    /// Never connected (or lost the connection) before the deadline; the last error.
    Unreachable(String),
    /// Another node answered at the peer's address than the node id given: the peer code is
    /// wrong (or stale), and dialing again would only meet the same node.
    WrongNode(String),
    /// Connected, but not in sync before the deadline.
    TimedOut(NodeId),
}

impl PeerCtx {
    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// Connect to `host` and sync, reconnecting with growing pauses whenever the connection
    /// drops, until in sync (`--once`), the deadline, or the stop signal.
    async fn follow(self: Arc<Self>, host: String, id: Option<NodeId>) -> Outcome {
        let mut retry = FIRST_RETRY;
        let mut last_error = String::from(NO_ATTEMPT);
        let mut last_peer = None;
        loop {
            if *self.stop.borrow() {
                return Outcome::Unreachable("stopped".into());
            }
            let remaining = self.remaining();
            if remaining == Some(Duration::ZERO) {
                return match last_peer {
                    Some(p) => Outcome::TimedOut(p),
                    None => Outcome::Unreachable(last_error),
                };
            }
            // At its addresses and, for a peer named by node id, at the same time through an
            // introduction by another peer of this sync that both of us reach, and last through
            // such a peer as a relay.
            let wrong_node = std::sync::OnceLock::new();
            let wrong_found = tokio::sync::Notify::new();
            let attempt = async {
                let direct = async {
                    let addrs = crate::daemon::serve::resolve_all(&host).await;
                    if addrs.is_empty() {
                        return Err(format!("cannot find {host}: no such host"));
                    }
                    self.endpoint
                        .connect_any(&addrs, id)
                        .await
                        .map_err(|e| match e {
                            e @ crate::net::NetError::WrongNode { .. } => {
                                let _ = wrong_node.set(e.to_string());
                                wrong_found.notify_one();
                                e.to_string()
                            }
                            e => format!("cannot reach {host}: {e}"),
                        })
                };
                let Some(node) = id else {
                    return direct.await;
                };
                // Another node at its address: the code is wrong, whatever an introduction
                // or a relay would find.
                tokio::select! {
                    r = crate::net::driver::reach(&self.endpoint, &self.driver, node, direct) => r,
                    () = wrong_found.notified() => Err(String::new()),
                }
            };
            // An interruption ends a dial under way at once, too.
            let attempt = async {
                let mut stop = self.stop.clone();
                tokio::select! {
                    r = attempt => r,
                    _ = stop.wait_for(|s| *s) => Err("stopped".to_string()),
                }
            };
            let connected = match remaining {
                // Cut short by the deadline: what an earlier attempt learned says more.
                Some(r) => tokio::time::timeout(r, attempt).await.unwrap_or_else(|_| {
                    Err(if last_error == NO_ATTEMPT {
                        format!("cannot reach {host}: no answer in time")
                    } else {
                        last_error.clone()
                    })
                }),
                None => attempt.await,
            };
            let (conn, addr) = match connected {
                Ok(c) => c,
                Err(_) if wrong_node.get().is_some() => {
                    return Outcome::WrongNode(wrong_node.get().cloned().unwrap_or_default());
                }
                Err(e) => {
                    // Said once per new reason, so a long wait is not a silent one.
                    if e != last_error && e != "stopped" {
                        eprintln!("{e}; trying again");
                    }
                    last_error = e;
                    self.pause(&mut retry).await;
                    continue;
                }
            };
            let peer = conn.peer;
            let quic = conn.conn.clone();
            last_peer = Some(peer);
            eprintln!("connected to {peer} at {addr}");
            let how = reached_label(&conn);
            if how.starts_with("relayed") {
                eprintln!("{how}");
            }
            let reached = crate::fs::home::Reached {
                how,
                at: unix_now(),
            };
            if let Err(e) = self
                .node
                .home
                .record_reached(&self.address, &peer.0, &reached)
            {
                tracing::debug!(error = %e, "how the peer was reached is not remembered");
            }
            retry = FIRST_RETRY;
            let (tx, mut rx) = tokio::sync::watch::channel(false);
            let mut run = tokio::spawn(self.driver.clone().run(
                conn,
                Admit::Open,
                vec![self.address],
                Some(tx),
                self.stop.clone(),
            ));
            // Within half the --timeout, so a short one still tells "doesn't hold it" apart.
            let open_wait = match self.deadline {
                Some(d) => {
                    OPEN_WAIT.min(d.saturating_duration_since(tokio::time::Instant::now()) / 2)
                }
                None => OPEN_WAIT,
            };
            let open_by = tokio::time::Instant::now() + open_wait;
            let mut stop = self.stop.clone();
            let moved = network_changed(quic.clone(), local_ips());
            tokio::pin!(moved);
            let outcome = loop {
                let open_check = async {
                    if self.deadline.is_some() && !self.node.peers.opened(&peer) {
                        tokio::time::sleep_until(open_by).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                let give_up = async {
                    match self.deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    changed = rx.changed() => {
                        let settled = changed.is_ok() && *rx.borrow();
                        // Denied: nothing more will come from this peer, even in a sync that
                        // follows it for good.
                        if let Some(reason) = self.node.peers.denied(&peer).filter(|_| settled) {
                            break Some(Outcome::Denied(peer, reason));
                        }
                        if settled && self.deadline.is_some() {
                            let reports = &self.node.peers;
                            let (refused, forked) = (reports.refused(&peer), reports.forked(&peer));
                            let (refusing, unavailable) =
                                (reports.refusing(&peer), reports.unavailable(&peer));
                            break Some(if !refused.is_empty() {
                                Outcome::Refused(peer, refused)
                            } else if !forked.is_empty() {
                                Outcome::Forked(peer, forked)
                            } else if !refusing.is_empty() {
                                Outcome::Refusing(peer, refusing)
                            } else if !unavailable.is_empty() {
                                Outcome::Incomplete(peer, unavailable)
                            } else {
                                Outcome::Synced(peer)
                            });
                        }
                    }
                    ended = &mut run => {
                        let why = match ended {
                            Ok(Ok(())) => "the connection closed".to_string(),
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                        };
                        if *self.stop.borrow() {
                            break Some(Outcome::Unreachable("stopped".into()));
                        }
                        // Closed by the seeder because the space never opened: it doesn't
                        // hold it (dialing again would only end the same way).
                        let unproven = matches!(
                            quic.close_reason(),
                            Some(quinn::ConnectionError::ApplicationClosed(c))
                                if c.error_code == quinn::VarInt::from_u32(crate::net::admission::CLOSED_UNPROVEN)
                        );
                        if unproven && self.deadline.is_some() && !self.node.peers.opened(&peer) {
                            break Some(Outcome::NotHeld(peer));
                        }
                        eprintln!("lost the connection to {peer}: {why}; reconnecting");
                        last_error = why;
                        break None;
                    }
                    _ = open_check => {
                        if !self.node.peers.opened(&peer) {
                            break Some(Outcome::NotHeld(peer));
                        }
                    }
                    _ = give_up => break Some(Outcome::TimedOut(peer)),
                    _ = stop.changed() => {}
                    // The laptop went elsewhere: the address it reached the peer at may be
                    // gone. Dial again at every address now rather than wait out the idle
                    // timeout.
                    _ = &mut moved => {
                        eprintln!("this device's network changed: reconnecting to {peer}");
                        quic.close(0u32.into(), b"moved");
                        // Closing ends the driver at once; the bound only guards a stuck task.
                        if tokio::time::timeout(Duration::from_secs(2), &mut run).await.is_err() {
                            run.abort();
                        }
                        last_error = "the network changed".into();
                        break None;
                    }
                }
            };
            match outcome {
                // In sync (or settled): the connection stays up until every peer is done.
                Some(o) => return o,
                None => self.pause(&mut retry).await,
            }
        }
    }

    /// Wait before the next attempt (never past the deadline), doubling the next pause.
    async fn pause(&self, retry: &mut Duration) {
        let wait = match self.remaining() {
            Some(r) => (*retry).min(r),
            None => *retry,
        };
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        *retry = (*retry * 2).min(MAX_RETRY);
    }
}

/// How often a connected device looks at its own addresses, to notice it moved (a laptop
/// carried from the office LAN home): cheap, and well under the idle timeout it saves.
const ROAM_POLL: Duration = Duration::from_secs(2);

/// This device's addresses other than loopback, sorted.
fn local_ips() -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip().to_canonical())
        .filter(|ip| !ip.is_loopback())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Resolves once the address `conn` is sent from is no longer one of this device's (or, where
/// the system doesn't say which it is, once the device's addresses differ from `from`): a
/// VPN or a container network coming and going elsewhere doesn't cut a working connection.
async fn network_changed(conn: quinn::Connection, from: Vec<std::net::IpAddr>) {
    let mut tick = tokio::time::interval(ROAM_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = local_ips();
        let gone = match conn.local_ip() {
            Some(ip) if !ip.is_unspecified() => !now.contains(&ip.to_canonical()),
            _ => now != from,
        };
        if gone {
            return;
        }
    }
}

/// Print what each peer stored (or why not) and turn the worst outcome into the exit code.
fn report(
    home: &Home,
    name: &str,
    address: &crate::space::Address,
    outcomes: &[(String, Outcome)],
) -> Result<()> {
    let synced: Vec<NodeId> = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Synced(p)
            | Outcome::Refused(p, _)
            | Outcome::Forked(p, _)
            | Outcome::Refusing(p, _)
            | Outcome::Incomplete(p, _) => Some(*p),
            _ => None,
        })
        .collect();
    print_stored(home, address, synced.into_iter())?;
    let own = home.space(name)?.own_feed();
    let own_fork = |peer: &NodeId| {
        format!(
            "this device's feed has two histories: what seeder {peer} holds of it and what \
             this home wrote since it was restored from an older copy. The seeder keeps its \
             history and takes nothing more of this feed; what this home wrote since is only \
             here. Copy those files out (seeder get {name} …), join the space again as a new \
             device (seeder space join INVITE --name {name}-new) and put them back"
        )
    };
    let mut failure: Option<(Failure, String)> = None;
    for (given, outcome) in outcomes {
        let (kind, message) = match outcome {
            Outcome::Synced(_) => continue,
            Outcome::Forked(peer, feeds) => (
                Failure::Fork,
                if feeds.contains(&own) {
                    own_fork(peer)
                } else {
                    format!(
                        "the writer of feed {} signed two histories (seen against seeder {peer}): \
                         the feed is frozen here and there; its other files are unaffected",
                        feeds[0].short()
                    )
                },
            ),
            Outcome::Refused(peer, refused)
                if refused
                    .iter()
                    .any(|(f, r)| *f == own && *r == Refusal::Frozen) =>
            {
                (Failure::Fork, own_fork(peer))
            }
            Outcome::Refused(peer, refused)
                if refused
                    .iter()
                    .any(|(f, r)| *f == own && *r == Refusal::Removed) =>
            {
                (
                    Failure::Refused,
                    format!(
                        "seeder {peer} does not take what this device wrote to {name:?} lately: \
                         the space's membership log says it was removed or may only read. \
                         Members ignore those entries too; an owner of the space can invite it \
                         again"
                    ),
                )
            }
            Outcome::Refused(peer, refused) => {
                if refused.iter().any(|(_, r)| *r == Refusal::NotHeld) {
                    home.forget_acks(address, &peer.0)?;
                }
                let (feed, reason) = &refused[0];
                let kind = match reason {
                    Refusal::DiskFull { .. } => Failure::DiskFull,
                    Refusal::Quota { .. } | Refusal::AgreementQuota { .. } => Failure::Quota,
                    Refusal::Frozen => Failure::Fork,
                    Refusal::NotHeld => Failure::NotHeld,
                    Refusal::Failed(_) => Failure::Internal,
                    Refusal::Removed => Failure::Refused,
                };
                let what = match reason {
                    Refusal::Quota { limit, .. } => format!(
                        "quota of {name:?} reached ({})",
                        web_admin::format::bytes(*limit)
                    ),
                    other => other.to_string(),
                };
                let next = match reason {
                    Refusal::DiskFull { .. }
                    | Refusal::Quota { .. }
                    | Refusal::AgreementQuota { .. } => {
                        "the rest of your data is not backed up there until its admin makes room"
                    }
                    Refusal::Frozen => {
                        "see seeder status for the fork; nothing more of that feed is taken"
                    }
                    Refusal::NotHeld => "its admin holds it again with seeder ctl space add",
                    Refusal::Failed(_) => "its admin page says more",
                    Refusal::Removed => {
                        "members ignore those entries too; nothing else of the space is affected"
                    }
                };
                (
                    kind,
                    format!("seeder {peer}: {what} (feed {}): {next}", feed.short()),
                )
            }
            Outcome::Refusing(peer, refusing) => {
                let (feed, reason) = &refusing[0];
                (
                    if reason.is_room() {
                        Failure::DiskFull
                    } else {
                        Failure::Internal
                    },
                    format!(
                        "this device did not take everything from {peer} (feed {}): {reason}: \
                         make room here and sync again",
                        feed.short()
                    ),
                )
            }
            Outcome::Incomplete(peer, feeds) => {
                let (feed, from) = feeds[0];
                (
                    Failure::Incomplete,
                    format!(
                        "seeder {peer} could serve feed {} only up to entry {from}: its copy is \
                         damaged there and not yet repaired. What comes after is not here yet; \
                         sync again later (it heals from another member) or with another peer",
                        feed.short()
                    ),
                )
            }
            Outcome::Denied(peer, crate::wire::Denial::Removed) => (
                Failure::Refused,
                format!(
                    "seeder {peer} no longer serves {name:?} to this device: it was removed from \
                     the space. Nothing it wrote since counts, and nothing new reaches it; an \
                     owner of the space can invite it again"
                ),
            ),
            Outcome::Denied(peer, crate::wire::Denial::NotAMember) => (
                Failure::Refused,
                format!(
                    "seeder {peer} does not serve {name:?} to this device: it serves the space \
                     only to devices its membership log lists (and to partner seeders). If \
                     this device joined just now, the owner who invited it must sync with \
                     that seeder first, so that it learns of the invite"
                ),
            ),
            Outcome::NotHeld(peer) => {
                // What it acknowledged before is gone with the space (removed, perhaps
                // purged): `status` must not count it as a backup any more.
                home.forget_acks(address, &peer.0)?;
                (
                    Failure::NotHeld,
                    format!(
                        "seeder {peer} does not hold {name:?}: on it, \
                         seeder ctl space add $(seeder space seed-code {name})"
                    ),
                )
            }
            Outcome::Unreachable(e) if e.contains(given.as_str()) => {
                (Failure::Unreachable, e.clone())
            }
            Outcome::Unreachable(e) => (Failure::Unreachable, format!("{given}: {e}")),
            Outcome::WrongNode(e) => (Failure::BadInput, e.clone()),
            Outcome::TimedOut(peer) => (
                Failure::Unreachable,
                format!(
                    "not in sync with {peer} before the timeout: try again, or a longer --timeout"
                ),
            ),
        };
        // The first failure is the command's error (printed once, by `main`); others here.
        if failure.is_none() {
            failure = Some((kind, message));
        } else {
            eprintln!("seeder: {message}");
        }
    }
    // Removed from a governed space, nothing a device writes counts any more (and seeders
    // serve it nothing): whether or not a seeder said so before the sync ended.
    if failure.is_none() {
        if let Ok(roster) = home.roster(name) {
            if let Some(me) = roster.devices.iter().find(|d| d.you && d.removed) {
                let kept = me
                    .frozen_at
                    .map_or(String::new(), |n| format!(" (its first {n} entries stay)"));
                failure = Some((
                    Failure::Refused,
                    format!(
                        "this device was removed from {name:?}: seeders don't take what it \
                         writes and members ignore it{kept}; an owner of the space can invite \
                         it again"
                    ),
                ));
            }
        }
    }
    match failure {
        None => Ok(()),
        Some((kind, message)) => Err(anyhow::anyhow!(message).context(kind)),
    }
}

fn print_stored(
    home: &Home,
    address: &crate::space::Address,
    peers: impl Iterator<Item = NodeId>,
) -> Result<()> {
    let acks = home.acks(address)?;
    for peer in peers {
        let mine: Vec<_> = acks.iter().filter(|a| a.peer == peer.0).collect();
        let entries: u64 = mine.iter().map(|a| a.length).sum();
        println!(
            "stored on {peer}: {}, {}",
            super::daemon::count(mine.len() as u64, "feed"),
            super::daemon::count(entries, "entry")
        );
    }
    Ok(())
}

pub fn status(home: &Home, name: &str, io: &mut super::Io) -> Result<()> {
    let space = home
        .space(name)
        .map_err(|e| anyhow::Error::new(e).context(Failure::NotFound))?;
    let address = *space.address();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let feeds = home.members(&address)?;
    let acks = home.acks(&address)?;
    let ours: std::collections::HashSet<FeedKey> = feeds.iter().map(|c| c.feed).collect();
    let mut repaired: std::collections::BTreeMap<[u8; 32], u64> = Default::default();
    for r in home.store().repairs()? {
        if ours.contains(&r.feed) {
            *repaired.entry(r.peer).or_default() += 1;
        }
    }
    for (peer, n) in repaired {
        writeln!(
            io.out,
            "repaired {n} damaged entries here with good copies from {}",
            NodeId(peer)
        )?;
    }
    for d in home.store().damage()? {
        if ours.contains(&d.feed) {
            writeln!(
                io.out,
                "DAMAGED here: {d} (seeder sync {name} fetches a good copy)"
            )?;
        }
    }
    writeln!(io.out, "{}", verdict(home, &space, &acks)?)?;
    // Every seeder that acknowledged something, and every one reached for this space.
    let reached = home.reached(&address)?;
    let mut peers: Vec<[u8; 32]> = acks.iter().map(|a| a.peer).collect();
    peers.extend(reached.iter().map(|(p, _)| *p));
    peers.sort_unstable();
    peers.dedup();
    for peer in peers {
        match reached.iter().find(|(p, _)| *p == peer).map(|(_, r)| r) {
            Some(r) => writeln!(
                io.out,
                "seeder {}: last reached {}, {} ago",
                NodeId(peer),
                r.how,
                ago(now.saturating_sub(r.at))
            )?,
            None => writeln!(io.out, "seeder {}:", NodeId(peer))?,
        }
        for cert in &feeds {
            let have = home.store().feed(&cert.feed)?.map_or(0, |s| s.length);
            let whose = if cert.feed == space.own_feed() {
                " (this device's)"
            } else {
                ""
            };
            match acks.iter().find(|a| a.peer == peer && a.feed == cert.feed) {
                Some(a) => writeln!(
                    io.out,
                    "  feed {}{whose}: {} of {have} entries acknowledged stored, {} ago",
                    cert.feed,
                    a.length.min(have),
                    ago(now.saturating_sub(a.at))
                )?,
                None => writeln!(
                    io.out,
                    "  feed {}{whose}: nothing acknowledged ({} here)",
                    cert.feed,
                    super::daemon::count(have, "entry"),
                )?,
            }
        }
    }
    Ok(())
}

/// `seeder status`'s first line: whether what this device wrote to the space is on seeders
/// (by their acknowledgements, nothing else), and how much is not.
fn verdict(
    home: &Home,
    space: &crate::fs::home::SpaceHandle<'_>,
    acks: &[crate::fs::home::Ack],
) -> Result<String> {
    let own = space.own_feed();
    let state = home.store().feed(&own)?;
    let (length, bytes) = state.map_or((0, 0), |s| (s.length, s.bytes));
    if length == 0 {
        return Ok("this device has written nothing to the space yet".into());
    }
    let own_acks: Vec<u64> = acks
        .iter()
        .filter(|a| a.feed == own)
        .map(|a| a.length)
        .collect();
    let complete = own_acks.iter().filter(|&&l| l >= length).count();
    if complete > 0 {
        return Ok(format!(
            "all your data ({}, {}) is on {}",
            super::daemon::count(length, "entry"),
            super::daemon::human(bytes),
            super::daemon::count(complete as u64, "seeder")
        ));
    }
    let best = own_acks.iter().copied().max().unwrap_or(0);
    let missing = bytes.saturating_sub(home.store().bytes_before(&own, best)?);
    let name = space.name();
    Ok(format!(
        "{} of your data ({} of {}) not yet backed up: seeder sync {name} sends it to a seeder",
        super::daemon::human(missing),
        super::daemon::count(length - best.min(length), "entry"),
        length
    ))
}

/// `seeder check NAME`: every entry of every feed of the space held here, read and checked.
pub fn check(home: &Home, name: &str, io: &mut super::Io) -> Result<()> {
    let space = home
        .space(name)
        .map_err(|e| anyhow::Error::new(e).context(Failure::NotFound))?;
    let address = *space.address();
    let mut damaged = 0;
    let mut entries = 0;
    for cert in home.members(&address)? {
        entries += home.store().feed(&cert.feed)?.map_or(0, |s| s.length);
        let found = home.store().scrub(&cert.feed)?;
        for d in &found {
            writeln!(io.out, "DAMAGED: {d}")?;
        }
        damaged += found.len();
    }
    if damaged == 0 {
        writeln!(
            io.out,
            "all {entries} entries of {name:?} read back as they were stored"
        )?;
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{damaged} of {entries} entries of {name:?} are damaged on this disk: \
             seeder sync {name} fetches good copies from a seeder"
        )
        .context(Failure::Refused))
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// Per-feed progress of a sync: a bar per feed on a terminal (entries received, or entries a
/// seeder acknowledged storing), one line per finished feed otherwise.
struct Progress {
    terminal: bool,
    multi: indicatif::MultiProgress,
    store: crate::store::Store,
    /// Bars by direction and feed ('↓' received here, '↑' stored on a peer).
    bars: Mutex<HashMap<BarKey, indicatif::ProgressBar>>,
}

/// Direction, feed, and the peer for acknowledgements (zeros for data received here).
type BarKey = (char, FeedKey, [u8; 32]);

impl Progress {
    fn new(terminal: bool, store: crate::store::Store) -> Progress {
        let multi = indicatif::MultiProgress::new();
        if !terminal {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        Progress {
            terminal,
            multi,
            store,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, key: BarKey, len: u64, label: String) -> indicatif::ProgressBar {
        let mut bars = self.bars.lock().expect("progress lock");
        bars.entry(key)
            .or_insert_with(|| {
                let bar = self.multi.add(indicatif::ProgressBar::new(len));
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} entries")
                        .expect("progress template is valid")
                        .progress_chars("=> "),
                );
                bar.set_message(label);
                bar
            })
            .clone()
    }

    fn update(&self, bar: &indicatif::ProgressBar, pos: u64, done_line: impl FnOnce() -> String) {
        if pos > bar.length().unwrap_or(0) {
            bar.set_length(pos);
        }
        let was_done = bar.is_finished();
        bar.set_position(pos);
        if pos >= bar.length().unwrap_or(0) && !was_done {
            bar.finish();
            if !self.terminal {
                eprintln!("{}", done_line());
            }
        }
    }

    fn finish(&self) {
        for bar in self.bars.lock().expect("progress lock").values() {
            bar.finish();
        }
    }
}

impl SyncObserver for Progress {
    fn fetching(&self, feed: FeedKey, have: u64, offered: u64) {
        let bar = self.bar(
            ('↓', feed, [0; 32]),
            offered,
            format!("↓ feed {}", feed.short()),
        );
        bar.set_length(offered.max(bar.length().unwrap_or(0)));
        bar.set_position(have);
    }

    fn received(&self, feed: FeedKey, length: u64) {
        let key = ('↓', feed, [0; 32]);
        let bar = self.bar(key, length, format!("↓ feed {}", feed.short()));
        self.update(&bar, length, || {
            format!("received feed {}: {length} entries", feed.short())
        });
    }

    fn repaired(&self, peer: NodeId, feed: FeedKey, count: u64) {
        let line = format!(
            "repaired {count} damaged entries of feed {} with good copies from {}",
            feed.short(),
            peer.short()
        );
        let _ = self.multi.println(&line);
        if !self.terminal {
            eprintln!("{line}");
        }
    }

    fn own_feed_behind(&self, ours: u64, theirs: u64) {
        let _ = self.multi.println(format!(
            "this device's own feed is longer on a peer ({theirs} entries) than here ({ours}): \
             this home was restored from an older copy; fetching them back (writes wait until then)"
        ));
        if !self.terminal {
            eprintln!(
                "this device's own feed is longer on a peer ({theirs} entries) than here \
                 ({ours}): this home was restored from an older copy; fetching them back \
                 (writes wait until then)"
            );
        }
    }

    fn stored(&self, peer: NodeId, feed: FeedKey, length: u64) {
        let ours = self
            .store
            .feed(&feed)
            .ok()
            .flatten()
            .map_or(length, |s| s.length);
        let bar = self.bar(
            ('↑', feed, peer.0),
            ours,
            format!("↑ feed {} on {}", feed.short(), peer.short()),
        );
        self.update(&bar, length, || {
            format!(
                "feed {}: {length} entries stored on {}",
                feed.short(),
                peer.short()
            )
        });
    }
}
