/*!
Finding seeders on the LAN: a seeder advertises itself over mDNS as `_seeder._udp` with its
node id in a TXT record; `seeder sync` without `--peer` browses for a few seconds and dials
what it finds, pinning each seeder to the node id it advertised.

Not a trust decision: whoever answers on the LAN is only dialed, and a seeder learns nothing
from a member it can't prove the space to (see the capability in [`crate::space`]). Not the
appliance's `seeder.local` host name either: avahi announces that on the board.
*/

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

use super::{NetError, NodeId};

/// The DNS-SD service type of a seeder's QUIC endpoint.
pub const SERVICE_TYPE: &str = "_seeder._udp.local.";

/// The TXT key holding the advertised node id (hex).
const NODE_KEY: &str = "node";

/// Where mDNS runs.
#[derive(Clone, Copy, Debug)]
pub struct MdnsOptions {
    /// UDP port of mDNS itself: 5353 on a real network; tests use another to stay apart from
    /// the machine's own responder.
    pub port: u16,
    /// Only the loopback interface (tests, and machines that must not announce themselves).
    pub loopback_only: bool,
}

impl Default for MdnsOptions {
    fn default() -> Self {
        MdnsOptions {
            port: 5353,
            loopback_only: false,
        }
    }
}

fn daemon(opts: MdnsOptions) -> Result<ServiceDaemon, NetError> {
    let d =
        ServiceDaemon::new_with_port(opts.port).map_err(|e| NetError::Discovery(e.to_string()))?;
    if opts.loopback_only {
        d.disable_interface(IfKind::All)
            .and_then(|()| d.enable_interface(IfKind::LoopbackV4))
            .map_err(|e| NetError::Discovery(e.to_string()))?;
    }
    Ok(d)
}

/// An advertisement that lasts until dropped.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// Announce this seeder's endpoint `listen` as `node`.
pub fn advertise(
    node: NodeId,
    listen: SocketAddr,
    opts: MdnsOptions,
) -> Result<Advertisement, NetError> {
    let daemon = daemon(opts)?;
    let short = node.short();
    let instance = format!("seeder-{short}");
    let host = format!("seeder-{short}.local.");
    let node_hex = node.to_hex();
    let props = [(NODE_KEY, node_hex.as_str())];
    let ip = listen.ip();
    let info = if ip.is_unspecified() {
        ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            "",
            listen.port(),
            &props[..],
        )
        .map(ServiceInfo::enable_addr_auto)
    } else {
        ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            ip,
            listen.port(),
            &props[..],
        )
    }
    .map_err(|e| NetError::Discovery(e.to_string()))?;
    let fullname = info.get_fullname().to_string();
    daemon
        .register(info)
        .map_err(|e| NetError::Discovery(e.to_string()))?;
    tracing::info!(service = %fullname, "advertised on the LAN (mDNS)");
    Ok(Advertisement { daemon, fullname })
}

/// A seeder found on the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub addr: SocketAddr,
    pub node: NodeId,
}

/// Browse for seeders for at most `wait`; once one is found, only `settle` longer for more
/// to answer. Blocking: call it off the async runtime.
pub fn discover(
    wait: Duration,
    settle: Duration,
    opts: MdnsOptions,
) -> Result<Vec<Found>, NetError> {
    let daemon = daemon(opts)?;
    let rx = daemon
        .browse(SERVICE_TYPE)
        .map_err(|e| NetError::Discovery(e.to_string()))?;
    let start = Instant::now();
    let mut deadline = start + wait;
    let mut found: BTreeMap<[u8; 32], Found> = BTreeMap::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = rx.recv_timeout(left) else {
            break;
        };
        let ServiceEvent::ServiceResolved(info) = event else {
            continue;
        };
        let Some(node) = info
            .get_property_val_str(NODE_KEY)
            .and_then(|v| v.parse::<NodeId>().ok())
        else {
            tracing::debug!(service = %info.get_fullname(), "no usable node id");
            continue;
        };
        // Prefer an IPv4 address: link-local IPv6 needs a scope the dialer may not have.
        let mut addrs: Vec<IpAddr> = info
            .get_addresses()
            .iter()
            .map(|a| a.to_ip_addr())
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        if let Some(ip) = addrs.first() {
            found.entry(node.0).or_insert(Found {
                addr: SocketAddr::new(*ip, info.get_port()),
                node,
            });
            deadline = deadline.min(Instant::now() + settle);
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}
