/*!
Who gets a connection slot. Anyone who can send us packets can complete a QUIC handshake (any
self-made certificate will do), so connections are let in in two classes:

- **unproven**: from the first packet until the peer proves, with a capability, that it knows
  a space held here. These have a budget of their own ([`MAX_UNPROVEN`] in all,
  [`MAX_UNPROVEN_PER_NETWORK`] from one address or IPv6 /64) and [`PROVE_WITHIN`] to prove
  themselves; when the budget is full a newcomer pushes the oldest unproven connection out
  (of its own network first), so strangers who connect and wait only ever crowd each other.
  While unproven a connection gets small QUIC windows, no data streams and tiny frames (see
  the driver), so holding one costs little.
- **proven**: members and partners, at most [`MAX_PEERS`]. Strangers never take these slots,
  and a proven peer is never pushed out for a newcomer; when they are full, a newly proven
  connection is closed as busy.

Before any of that, an attempt must show its source address is real: the first Initial of an
attempt is answered with a stateless QUIC Retry, so a flood of Initials from addresses that
never answer costs no connection state at all; and validated attempts start their handshakes
at most at [`HANDSHAKES_PER_SECOND`] ([`HandshakeRate`]), the rest dropped for the client to
try again, so a flood can't spend the node's CPU and memory on handshakes.

Pure bookkeeping, no sockets: the caller passes ids, addresses and times and closes what it
is told to. Connections this node dials itself are not admitted here (we chose the peer).
*/

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

/// Proven peers connected at once. Far more than an office's devices and partners.
pub const MAX_PEERS: usize = 64;

/// Unproven connections (handshaking or yet to prove a capability) at once. Each costs QUIC
/// state and a small receive window (see `net::UNPROVEN_RECEIVE_WINDOW`), a few tens of KiB.
pub const MAX_UNPROVEN: usize = 256;

/// Unproven connections from one IPv4 address or one IPv6 /64 at once: a host that opens more
/// pushes out its own oldest ones, not everyone else's.
pub const MAX_UNPROVEN_PER_NETWORK: usize = 64;

/// Time from the first packet to a proven capability. A member or partner proves itself one
/// round trip after its handshake; ten seconds leaves room for a slow link and a busy board.
pub const PROVE_WITHIN: Duration = Duration::from_secs(10);

/// The application code a connection is closed with when its peer proved no space in
/// [`PROVE_WITHIN`]: a member syncing a space the seeder doesn't hold learns so from it.
pub const CLOSED_UNPROVEN: u32 = 4;

/// Handshakes started per second, steady: an office's devices reconnect a few times a minute;
/// each handshake costs a signature, key exchanges and some tens of KiB while it runs.
pub const HANDSHAKES_PER_SECOND: f64 = 100.0;

/// Handshakes that may start at once after a quiet spell: every device of an office
/// reconnecting together after the board restarts.
pub const HANDSHAKE_BURST: f64 = 200.0;

/// A token bucket of handshakes: [`HANDSHAKE_BURST`] at once, then [`HANDSHAKES_PER_SECOND`].
#[derive(Debug)]
pub struct HandshakeRate {
    tokens: f64,
    last: std::time::Instant,
}

impl HandshakeRate {
    pub fn new(now: std::time::Instant) -> HandshakeRate {
        HandshakeRate {
            tokens: HANDSHAKE_BURST,
            last: now,
        }
    }

    /// Whether a handshake may start at `now` (and count it if so).
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let idle = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + idle * HANDSHAKES_PER_SECOND).min(HANDSHAKE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connections by class.
#[derive(Debug, Default)]
pub struct Admission {
    /// Oldest first.
    unproven: VecDeque<(u64, Network)>,
    proven: usize,
    next_id: u64,
}

/// A connection let in as unproven.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    pub id: u64,
    /// Close this older unproven connection to make room.
    pub evict: Option<u64>,
}

/// An IPv4 address or an IPv6 /64: what one host can easily hold many of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network([u8; 8]);

impl From<IpAddr> for Network {
    fn from(ip: IpAddr) -> Network {
        let mut n = [0u8; 8];
        match ip.to_canonical() {
            IpAddr::V4(v4) => n[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => n.copy_from_slice(&v6.octets()[..8]),
        }
        Network(n)
    }
}

impl Admission {
    pub fn new() -> Admission {
        Admission::default()
    }

    /// Let a new connection from `ip` in as unproven, pushing out the oldest unproven
    /// connection of its network, or else the oldest of all, when the budget is full.
    pub fn admit(&mut self, ip: IpAddr) -> Admitted {
        let network = Network::from(ip);
        let same = self.unproven.iter().filter(|(_, n)| *n == network).count();
        let evict = if same >= MAX_UNPROVEN_PER_NETWORK {
            self.unproven
                .iter()
                .position(|(_, n)| *n == network)
                .and_then(|i| self.unproven.remove(i))
                .map(|(id, _)| id)
        } else if self.unproven.len() >= MAX_UNPROVEN {
            self.unproven.pop_front().map(|(id, _)| id)
        } else {
            None
        };
        self.next_id += 1;
        let id = self.next_id;
        self.unproven.push_back((id, network));
        Admitted { id, evict }
    }

    /// Connection `id` proved a capability: a proven slot if one is free (`false`: close it
    /// as busy). `false` too if it was pushed out meanwhile.
    pub fn prove(&mut self, id: u64) -> bool {
        let Some(i) = self.unproven.iter().position(|(u, _)| *u == id) else {
            return false;
        };
        if self.proven >= MAX_PEERS {
            return false;
        }
        self.unproven.remove(i);
        self.proven += 1;
        true
    }

    /// Connection `id` ended; `proven` as [`Admission::prove`] answered.
    pub fn leave(&mut self, id: u64, proven: bool) {
        if proven {
            self.proven = self.proven.saturating_sub(1);
        } else {
            self.unproven.retain(|(u, _)| *u != id);
        }
    }

    /// Unproven connections now.
    pub fn unproven(&self) -> usize {
        self.unproven.len()
    }

    /// Proven connections now.
    pub fn proven(&self) -> usize {
        self.proven
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn strangers_push_out_their_own_oldest_first() {
        let mut a = Admission::new();
        let first = a.admit(ip("192.0.2.1"));
        let other = a.admit(ip("198.51.100.7"));
        for _ in 1..MAX_UNPROVEN_PER_NETWORK {
            assert_eq!(a.admit(ip("192.0.2.1")).evict, None);
        }
        let next = a.admit(ip("192.0.2.1"));
        assert_eq!(next.evict, Some(first.id));
        assert_eq!(a.unproven(), MAX_UNPROVEN_PER_NETWORK + 1);
        // The other host's connection is still there and can prove itself.
        assert!(a.prove(other.id));
        // One that was pushed out can't.
        assert!(!a.prove(first.id));
    }

    #[test]
    fn an_ipv6_host_is_one_network_whatever_its_interface_id() {
        let mut a = Admission::new();
        let first = a.admit(ip("2001:db8:1:2::1"));
        for i in 1..MAX_UNPROVEN_PER_NETWORK {
            let addr = format!("2001:db8:1:2::{:x}", i + 1);
            assert_eq!(a.admit(ip(&addr)).evict, None);
        }
        assert_eq!(a.admit(ip("2001:db8:1:2:ffff::9")).evict, Some(first.id));
        assert_eq!(a.admit(ip("2001:db8:1:3::1")).evict, None);
    }

    #[test]
    fn a_full_budget_pushes_out_the_oldest_stranger_anywhere() {
        let mut a = Admission::new();
        let ids: Vec<u64> = (0..MAX_UNPROVEN)
            .map(|i| {
                a.admit(IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]))
                    .id
            })
            .collect();
        let newcomer = a.admit(ip("203.0.113.9"));
        assert_eq!(newcomer.evict, Some(ids[0]));
        assert_eq!(a.unproven(), MAX_UNPROVEN);
    }

    #[test]
    fn proven_peers_are_never_pushed_out_and_are_capped() {
        let mut a = Admission::new();
        for _ in 0..MAX_PEERS {
            let c = a.admit(ip("192.0.2.1"));
            assert!(a.prove(c.id));
        }
        for _ in 0..MAX_UNPROVEN * 2 {
            let c = a.admit(ip("198.51.100.7"));
            a.leave(c.id, false);
        }
        assert_eq!(a.proven(), MAX_PEERS);
        let late = a.admit(ip("192.0.2.2"));
        assert!(!a.prove(late.id), "no proven slot left");
        a.leave(late.id, false);
        a.leave(1, true);
        let later = a.admit(ip("192.0.2.2"));
        assert!(a.prove(later.id));
        assert_eq!(a.unproven(), 0);
    }

    #[test]
    fn handshakes_start_in_a_burst_and_then_at_the_steady_rate() {
        let t0 = std::time::Instant::now();
        let mut rate = HandshakeRate::new(t0);
        let burst = (0..1000).filter(|_| rate.take(t0)).count();
        assert_eq!(burst, HANDSHAKE_BURST as usize);
        let later = t0 + Duration::from_secs(2);
        let more = (0..1000).filter(|_| rate.take(later)).count();
        assert_eq!(more, 2 * HANDSHAKES_PER_SECOND as usize);
        // A long quiet spell refills the burst, not more.
        let much_later = later + Duration::from_secs(3600);
        let refilled = (0..1000).filter(|_| rate.take(much_later)).count();
        assert_eq!(refilled, HANDSHAKE_BURST as usize);
    }
}
