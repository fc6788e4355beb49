/*!
How other nodes reach this one from beyond its LAN: peer codes (a node id with the addresses it
may be dialed at, one copyable string), this node's LAN addresses, and the UDP port mapping it
asks the office router for (UPnP-IGD, NAT-PMP or PCP, whichever the router answers).

Not here: dialing a list of addresses (`Endpoint::connect_any`), and what a peer learns of
its public address from others, hole punching and relays.
*/

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::watch;

use super::NodeId;

/// What a peer code starts with, so it is told apart from `HOST:PORT#NODEID` and seed codes.
pub const CODE_PREFIX: &str = "seeder:";

/// Addresses one code may carry: LAN, port-mapped and observed public addresses of a node
/// with a few interfaces fit; more is a made-up code, and each address costs a dial attempt.
pub const MAX_CODE_ADDRS: usize = 8;

/// Longest code read: the prefix, a node id and [`MAX_CODE_ADDRS`] bracketed IPv6 addresses
/// with ports fit in 600 characters; a longer input is refused before it is parsed.
pub const MAX_CODE_LEN: usize = 600;

/// A node id and the addresses it may be dialed at: `seeder:NODEID@ADDR,ADDR…` (addresses
/// optional). It is not secret: the node id is checked by TLS on every connection, so a wrong
/// or stale address can only fail to connect, never reach someone else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCode {
    pub node: NodeId,
    pub addrs: Vec<SocketAddr>,
}

/// Why a peer code was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error("a peer code is at most {MAX_CODE_LEN} characters")]
    TooLong,
    #[error("a peer code looks like seeder:NODEID@ADDRESS:PORT,… (NODEID: 64 hex characters)")]
    Shape,
    #[error("{0:?} in the peer code is not a node id (64 hex characters)")]
    NodeId(String),
    #[error("{0:?} in the peer code is not an IP address with a port")]
    Address(String),
    #[error("a peer code carries at most {MAX_CODE_ADDRS} addresses")]
    TooManyAddresses,
}

impl PeerCode {
    /// Whether `s` is meant as a peer code (so errors about it can say so).
    pub fn looks_like(s: &str) -> bool {
        let s = s.trim();
        s.get(..CODE_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(CODE_PREFIX))
            || (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// How much of a refused part an error repeats: enough to recognise it.
const SHOWN: usize = 80;

fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(SHOWN).collect();
    if s.chars().count() > SHOWN {
        out.push('…');
    }
    out
}

/// Whether a peer could be dialed at `addr`: one host (not any, broadcast or multicast), a
/// port, and no IPv6 zone (which names an interface of the code's maker, not ours).
fn dialable(addr: &SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let one_host = match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    let zoned = matches!(addr, SocketAddr::V6(v6) if v6.scope_id() != 0);
    addr.port() != 0 && one_host && !zoned
}

impl FromStr for PeerCode {
    type Err = CodeError;

    fn from_str(s: &str) -> Result<PeerCode, CodeError> {
        if s.len() > MAX_CODE_LEN {
            return Err(CodeError::TooLong);
        }
        let s = s.trim();
        let body = match s.get(..CODE_PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(CODE_PREFIX) => &s[CODE_PREFIX.len()..],
            _ if s.len() == 64 => s,
            _ => return Err(CodeError::Shape),
        };
        let (id, addrs) = match body.split_once('@') {
            Some((id, addrs)) => (id, Some(addrs)),
            None => (body, None),
        };
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CodeError::NodeId(shown(id)));
        }
        let node = NodeId::from_str(id).map_err(|_| CodeError::NodeId(shown(id)))?;
        let mut out = Vec::new();
        for a in addrs.into_iter().flat_map(|a| a.split(',')) {
            let a = a.trim();
            if a.is_empty() {
                continue;
            }
            let addr = SocketAddr::from_str(a).map_err(|_| CodeError::Address(shown(a)))?;
            if !dialable(&addr) {
                return Err(CodeError::Address(shown(a)));
            }
            if !out.contains(&addr) {
                out.push(addr);
            }
            if out.len() > MAX_CODE_ADDRS {
                return Err(CodeError::TooManyAddresses);
            }
        }
        Ok(PeerCode { node, addrs: out })
    }
}

impl std::fmt::Display for PeerCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{CODE_PREFIX}{}", self.node.to_hex())?;
        for (i, a) in self.addrs.iter().take(MAX_CODE_ADDRS).enumerate() {
            f.write_str(if i == 0 { "@" } else { "," })?;
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// The addresses of this machine's interfaces peers on its networks can dial, with `listen`'s
/// port: every non-loopback IPv4 address (IPv6 too when listening on IPv6), or `listen` itself
/// when it names one address.
pub fn lan_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            // Link-local IPv6 needs a scope a code can't carry.
            IpAddr::V6(v6) => listen.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .map(|ip| SocketAddr::new(ip, listen.port()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the router did with the port mapping request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Turned off in the settings.
    Off,
    /// Asked, no answer yet.
    Trying,
    /// The router forwards `external` to our port, since `since` (Unix seconds).
    Mapped { external: SocketAddrV4, since: u64 },
    /// No router answered UPnP-IGD, NAT-PMP or PCP (or none gave a mapping); asked again
    /// every [`RETRY_EVERY`].
    Unavailable { since: u64 },
}

impl Mapping {
    /// A short description for status lines and the admin page.
    pub fn describe(&self) -> String {
        match self {
            Mapping::Off => "off".into(),
            Mapping::Trying => "asking the router".into(),
            Mapping::Mapped { external, .. } => format!("router forwards {external}"),
            Mapping::Unavailable { .. } => {
                "no router answered UPnP, NAT-PMP or PCP: not reachable from outside the LAN \
                 unless the router forwards the UDP port"
                    .into()
            }
        }
    }
}

/// How long one probe of the router's protocols may take before the mapping is called
/// unavailable (the probes themselves give up after about a second each).
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// How often a missing mapping is asked for again: routers reboot, and UPnP gets switched on.
pub const RETRY_EVERY: Duration = Duration::from_secs(60);

/// How long shutting down waits for the router to confirm the mapping is removed.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The port mapping of a running node: asks the router, renews before the lease ends (the
/// `portmapper` crate does, at half the lifetime), asks again while there is none, and removes
/// it at [`PortMapper::stop`].
pub struct PortMapper {
    client: Option<portmapper::Client>,
    state: watch::Receiver<Mapping>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PortMapper {
    /// Start mapping UDP `port` (inside a tokio runtime); with `enabled` false, nothing is
    /// asked and the state stays [`Mapping::Off`].
    pub fn start(port: u16, enabled: bool) -> PortMapper {
        let Some(port) = NonZeroU16::new(port).filter(|_| enabled) else {
            return PortMapper {
                client: None,
                state: watch::channel(Mapping::Off).1,
                task: None,
            };
        };
        let client = portmapper::Client::new(portmapper::Config::default());
        let (tx, rx) = watch::channel(Mapping::Trying);
        let mut external = client.watch_external_address();
        client.update_local_port(port);
        let task = tokio::spawn({
            let client = client.clone();
            async move {
                let mut retry = tokio::time::interval(RETRY_EVERY);
                retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                retry.tick().await;
                let probe = tokio::time::timeout(PROBE_WAIT, client.probe()).await;
                let answered = matches!(&probe, Ok(Ok(Ok(p))) if p.upnp || p.pcp || p.nat_pmp);
                if !answered && external.borrow().is_none() {
                    tracing::info!("no UPnP, NAT-PMP or PCP router answered: no port mapping");
                    tx.send_replace(Mapping::Unavailable { since: now_secs() });
                }
                loop {
                    let current = *external.borrow_and_update();
                    let next = match current {
                        Some(addr) => Mapping::Mapped {
                            external: addr,
                            since: match &*tx.borrow() {
                                Mapping::Mapped { external, since } if *external == addr => *since,
                                _ => now_secs(),
                            },
                        },
                        None => match &*tx.borrow() {
                            Mapping::Trying => Mapping::Trying,
                            Mapping::Unavailable { since } => {
                                Mapping::Unavailable { since: *since }
                            }
                            _ => Mapping::Unavailable { since: now_secs() },
                        },
                    };
                    tx.send_if_modified(|m| {
                        if *m != next {
                            if let Mapping::Mapped { external, .. } = &next {
                                tracing::info!(%external, "the router forwards our UDP port");
                            }
                            *m = next;
                            true
                        } else {
                            false
                        }
                    });
                    tokio::select! {
                        changed = external.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                        _ = retry.tick() => {
                            if external.borrow().is_none() {
                                client.procure_mapping();
                            }
                        }
                    }
                }
            }
        });
        PortMapper {
            client: Some(client),
            state: rx,
            task: Some(task),
        }
    }

    /// What the router did, as it changes.
    pub fn watch(&self) -> watch::Receiver<Mapping> {
        self.state.clone()
    }

    /// What the router did, now.
    pub fn state(&self) -> Mapping {
        self.state.borrow().clone()
    }

    /// The public address the router forwards to us, if it does.
    pub fn external(&self) -> Option<SocketAddr> {
        match &*self.state.borrow() {
            Mapping::Mapped { external, .. } => Some(SocketAddr::V4(*external)),
            _ => None,
        }
    }

    /// Remove the mapping from the router (waiting at most [`RELEASE_WAIT`]) and stop.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(client) = self.client.take() {
            // The crate's service handles one request at a time: once the answer to a probe
            // sent after the deactivation arrives, the release request has gone to the router.
            client.deactivate();
            let _ = tokio::time::timeout(RELEASE_WAIT, client.probe()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeId {
        NodeId([0xab; 32])
    }

    #[test]
    fn a_code_reads_back_as_written() {
        let code = PeerCode {
            node: id(),
            addrs: vec![
                "203.0.113.1:7000".parse().expect("addr"),
                "[2001:db8::1]:7000".parse().expect("addr"),
            ],
        };
        let text = code.to_string();
        assert!(text.starts_with("seeder:abab"));
        assert_eq!(text.parse::<PeerCode>(), Ok(code));
    }

    #[test]
    fn a_bare_node_id_is_a_code_without_addresses() {
        let code: PeerCode = "ab".repeat(32).parse().expect("bare id");
        assert_eq!(code.node, id());
        assert!(code.addrs.is_empty());
        assert!(PeerCode::looks_like(&"ab".repeat(32)));
        assert!(!PeerCode::looks_like("10.0.0.1:7000#abab"));
    }

    #[test]
    fn bad_codes_are_refused_with_what_is_wrong() {
        let node = "ab".repeat(32);
        assert_eq!(
            format!("seeder:{node}@seeder.local:7000").parse::<PeerCode>(),
            Err(CodeError::Address("seeder.local:7000".into()))
        );
        for bad in [
            "0.0.0.0:7000",
            "255.255.255.255:5",
            "224.0.0.1:5",
            "[ff02::1]:5",
            "[fe80::1%2]:5",
            "[::ffff:0.0.0.0]:5",
            "10.0.0.1:0",
        ] {
            assert_eq!(
                format!("seeder:{node}@{bad}").parse::<PeerCode>(),
                Err(CodeError::Address(bad.into())),
                "{bad}"
            );
        }
        // A node id with a line break in it is not one (nothing trims it away).
        assert!(format!("seeder:{node}\n@10.0.0.1:5")
            .parse::<PeerCode>()
            .is_err());
        // Errors repeat a bounded part of what was given.
        let long = format!("seeder:{node}@{}", "\u{1}".repeat(500));
        let e = long.parse::<PeerCode>().expect_err("junk").to_string();
        assert!(e.matches("\\u{1}").count() <= SHOWN, "{e}");
        assert_eq!(
            "seeder:xyz@1.2.3.4:5".parse::<PeerCode>(),
            Err(CodeError::NodeId("xyz".into()))
        );
        assert_eq!("1.2.3.4:5".parse::<PeerCode>(), Err(CodeError::Shape));
        let many: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}:7000")).collect();
        assert_eq!(
            format!("seeder:{node}@{}", many.join(",")).parse::<PeerCode>(),
            Err(CodeError::TooManyAddresses)
        );
        assert_eq!(
            format!("seeder:{node}@{}", "1".repeat(MAX_CODE_LEN)).parse::<PeerCode>(),
            Err(CodeError::TooLong)
        );
    }

    #[test]
    fn repeated_addresses_count_once() {
        let node = "ab".repeat(32);
        let code: PeerCode = format!("SEEDER:{node}@10.0.0.1:7000,10.0.0.1:7000,")
            .parse()
            .expect("code");
        assert_eq!(code.addrs.len(), 1);
    }

    #[test]
    fn lan_addresses_of_a_specific_listen_address_are_that_address() {
        let listen: SocketAddr = "10.0.0.5:7000".parse().expect("addr");
        assert_eq!(lan_addrs(listen), vec![listen]);
        let any: SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        assert!(lan_addrs(any)
            .iter()
            .all(|a| a.port() == 7000 && !a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_mapper_turned_off_asks_nothing() {
        let m = PortMapper::start(7000, false);
        assert_eq!(m.state(), Mapping::Off);
        assert_eq!(m.external(), None);
        m.stop().await;
    }
}
