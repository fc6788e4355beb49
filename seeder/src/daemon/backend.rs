/*!
The daemon's answers to the control socket: held spaces, partner seeders, status, the
one-time setup code. Thin: each request is parsed into validated values and handed to the
registry or the store; errors become messages that name the thing and the next step.
*/

use std::path::PathBuf;
use std::str::FromStr;

use serde_json::json;

use super::ctl::{CtlBackend, CtlRequest, CtlResponse};
use super::ops::{Links, OpsError};
use super::registry::{Partner, Registry, RegistryError};
use crate::space::SeedCode;
use crate::store::Store;

/// File in the data folder holding the one-time code that claims the admin page.
pub const SETUP_CODE_FILE: &str = "setup-code";

/// Random bytes in a setup code: 80 bits, shown as five groups of four hex digits. Guessing is
/// also throttled by the login limiter.
const SETUP_CODE_BYTES: usize = 10;

/// Groups of four hex digits: easy to read off a console or a card and type.
fn format_setup_code(hex: &str) -> String {
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Read a setup code as a person may type it: any case, dashes and spaces anywhere.
pub fn parse_setup_code(text: &str) -> Result<String, String> {
    let digits: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() != SETUP_CODE_BYTES * 2 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "a setup code is {} hex digits (like 1a2b-3c4d-5e6f-7a8b-9c0d)",
            SETUP_CODE_BYTES * 2
        ));
    }
    Ok(format_setup_code(&digits))
}

/// The daemon's state the control socket works on.
pub struct Daemon {
    pub store: Store,
    pub registry: Registry,
    pub started: std::time::Instant,
    pub node_id: crate::net::NodeId,
    pub listen: std::net::SocketAddr,
    /// Where the admin page answers.
    pub admin: Option<std::net::SocketAddr>,
    /// The board's claim button and LED, as the admin page and `seeder board` share them.
    pub board: BoardState,
    /// The share of the disk kept free (for the "needs the admin" state).
    pub keep_free_percent: u8,
    /// Connections, arrivals and scrub results, shared with the admin page.
    pub activity: std::sync::Arc<super::activity::Activity>,
    /// Who hears about registry changes: live connections, the partner dialer.
    pub links: Links,
    /// What the router did with our port mapping request.
    pub mapping: tokio::sync::watch::Receiver<crate::net::reach::Mapping>,
    /// Connections relayed for others at once (0: none), and their bandwidth together.
    pub relay_budget: (usize, u64),
}

impl Daemon {
    /// The relay budget in words, for the Peers page and `ctl status`.
    pub fn relay_budget_words(&self) -> String {
        match self.relay_budget {
            (0, _) => "off: this seeder relays for nobody (relay_connections = 0)".into(),
            (n, bytes) => format!(
                "up to {n} connections at once, {} MiB/s together, for peers holding a space here",
                bytes >> 20
            ),
        }
    }
}

impl Daemon {
    /// The peer code to give others: this node and every address it may be dialed at, LAN
    /// ones first (a member in the office connects at once), then the router's forward.
    pub fn peer_code(&self) -> crate::net::reach::PeerCode {
        use crate::net::reach::{lan_addrs, Mapping, MAX_CODE_ADDRS};
        let mut addrs = lan_addrs(self.listen);
        addrs.truncate(MAX_CODE_ADDRS - 1);
        if let Mapping::Mapped { external, .. } = &*self.mapping.borrow() {
            let external = std::net::SocketAddr::V4(*external);
            if !addrs.contains(&external) {
                addrs.push(external);
            }
        }
        // Where partners see us: dialable as it is behind a full-cone NAT, and the address
        // others punch towards behind other kinds.
        for seen in self.activity.observed_addrs() {
            if !addrs.contains(&seen) && addrs.len() < MAX_CODE_ADDRS {
                addrs.push(seen);
            }
        }
        crate::net::reach::PeerCode {
            node: self.node_id,
            addrs,
        }
    }
}

/// Repairs on record, by the peer whose copies they came from: `(peer, entries, last time)`.
pub fn repairs_by_peer(
    store: &Store,
) -> Result<Vec<([u8; 32], u64, u64)>, crate::store::StoreError> {
    let mut by: std::collections::BTreeMap<[u8; 32], (u64, u64)> = Default::default();
    for r in store.repairs()? {
        let e = by.entry(r.peer).or_default();
        e.0 += 1;
        e.1 = e.1.max(r.at);
    }
    Ok(by.into_iter().map(|(p, (n, at))| (p, n, at)).collect())
}

/// Shared between the admin page (which waits for a press) and the control socket (which
/// `seeder board` tells about presses and asks what the LED should show).
#[derive(Clone, Default)]
pub struct BoardState {
    /// Presses of the claim button; `None` on machines without one.
    pub presses: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The admin page waits for a press.
    pub waiting: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn ok(value: serde_json::Value) -> CtlResponse {
    CtlResponse::Ok { value }
}

fn err(message: impl Into<String>) -> CtlResponse {
    CtlResponse::Error {
        message: message.into(),
        not_found: false,
    }
}

fn ops_err(e: OpsError) -> CtlResponse {
    CtlResponse::Error {
        not_found: matches!(e, OpsError::NotFound(_)),
        message: e.to_string(),
    }
}

fn registry_err(e: RegistryError) -> CtlResponse {
    let not_found = matches!(e, RegistryError::UnknownSpace(_));
    CtlResponse::Error {
        message: e.to_string(),
        not_found,
    }
}

/// The longest host name DNS can carry (RFC 1035: 255 octets on the wire, 253 as text).
const MAX_HOST_NAME: usize = 253;

/// The longest label between dots in a host name (RFC 1035).
const MAX_HOST_LABEL: usize = 63;

/// Whether `host` is an IPv4 address, a bracketed IPv6 address, or a DNS host name of
/// letters, digits and hyphens within DNS's lengths (four numbers that are no IPv4 address
/// are a typo, not a name to look up).
pub(crate) fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !name.is_empty()
        && name.len() <= MAX_HOST_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_HOST_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parse a peer code (`seeder:NODEID@ADDR,…`: its addresses are kept comma-separated and
/// dialed together; none, for a bare node id: then it is reached by introductions only) or `HOST:PORT#NODEID` (node id: 64 hex characters). The host is an IP
/// address (`[…]` for IPv6) or a DNS name; anything else is refused without being echoed in
/// full.
pub fn parse_partner(s: &str) -> Result<Partner, String> {
    if crate::net::reach::PeerCode::looks_like(s) {
        let code: crate::net::reach::PeerCode = s.parse().map_err(|e| format!("{e}"))?;
        // A bare node id is reached only through introductions by peers both of us reach.
        return Ok(Partner {
            address: code
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            node_id: code.node.0,
        });
    }
    parse_host_partner(s)
}

fn parse_host_partner(s: &str) -> Result<Partner, String> {
    /// How much of a refused input an error message repeats: enough to recognise it.
    const SHOWN: usize = 80;
    let shown = |t: &str| -> String {
        let mut out: String = t.chars().take(SHOWN).collect();
        if t.chars().count() > SHOWN {
            out.push('…');
        }
        format!("{out:?}")
    };
    let (addr, id) = s
        .rsplit_once('#')
        .ok_or_else(|| format!("{}: expected HOST:PORT#NODEID", shown(s)))?;
    let (host, port) = addr
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && !p.is_empty())
        .ok_or_else(|| format!("{}: expected HOST:PORT", shown(addr)))?;
    if !valid_host(host) {
        return Err(format!(
            "{}: not a host name or IP address (a name is at most {MAX_HOST_NAME} characters of \
             letters, digits, '-' and '.'; IPv6 goes in brackets)",
            shown(host)
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{} is not a port number", shown(port))),
    }
    let bytes = hex::decode(id).map_err(|_| format!("node id {} is not hex", shown(id)))?;
    let node_id: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("node id {} should be 64 hex characters", shown(id)))?;
    Ok(Partner {
        address: addr.to_string(),
        node_id,
    })
}

impl Daemon {
    fn spaces_json(&self) -> Result<serde_json::Value, RegistryError> {
        let mut out = Vec::new();
        for s in self.registry.spaces()? {
            let totals = self.registry.totals(&s.address).unwrap_or_default();
            let mut space = json!({
                "name": s.name,
                "address": s.address.to_hex(),
                "seed_code": SeedCode::new(s.address).to_string(),
                "quota": s.quota,
                "feeds": totals.feeds,
                "entries": totals.entries,
                "bytes": totals.bytes,
            });
            // A governed space's counts (the seeder can't read who the devices are).
            if let Some(m) = self
                .registry
                .membership(&s.address)?
                .filter(|m| m.is_governed())
            {
                space["devices"] = json!(m.active().count());
                space["epoch"] = json!(m.epoch());
            }
            out.push(space);
        }
        Ok(json!(out))
    }

    fn setup_code_path(&self) -> PathBuf {
        self.store.dir().join(SETUP_CODE_FILE)
    }

    /// The one-time setup code, created on first use (mode 0600: only root and the service
    /// user read it).
    pub fn setup_code(&self) -> std::io::Result<String> {
        let path = self.setup_code_path();
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        use rand::RngCore;
        let mut raw = [0u8; SETUP_CODE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let code = format_setup_code(&hex::encode(raw));
        self.write_setup_code(&code)?;
        Ok(code)
    }

    fn write_setup_code(&self, code: &str) -> std::io::Result<()> {
        crate::store::file::write_atomic(&self.setup_code_path(), 0o600, code.as_bytes())
    }

    /// Whether an admin password is set.
    pub fn claimed(&self) -> Result<bool, String> {
        let blob = self
            .registry
            .site_settings()
            .map_err(|e| format!("reading the admin settings: {e}"))?;
        let settings = web_admin::SiteSettings::decode(blob.as_deref())
            .map_err(|e| format!("the admin settings: {e}"))?;
        Ok(settings.claimed())
    }

    /// Take a setup code chosen elsewhere (written to the SD card by `image/flash`). Only an
    /// unclaimed device takes one: once claimed, the code is of no use and must not change.
    pub fn set_setup_code(&self, code: &str) -> Result<String, String> {
        let code = parse_setup_code(code)?;
        if self.claimed()? {
            return Err("this seeder is claimed already; its setup code is not changed".into());
        }
        self.write_setup_code(&code)
            .map_err(|e| format!("cannot write the setup code: {e}"))?;
        tracing::info!("setup code taken from the SD card");
        Ok(code)
    }

    /// Replace the setup code with a fresh one (after a claim, or a password reset).
    pub fn renew_setup_code(&self) -> std::io::Result<String> {
        match std::fs::remove_file(self.setup_code_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.setup_code()
    }

    /// Forget the admin password and API tokens, end every admin session and make a new
    /// setup code: the device is unclaimed again. Returns the new code.
    pub fn reset_password(&self) -> Result<String, String> {
        let blob = self
            .registry
            .site_settings()
            .map_err(|e| format!("reading the admin settings: {e}"))?;
        let blob = web_admin::unclaim_blob(blob.as_deref())
            .map_err(|e| format!("the admin settings: {e}"))?;
        self.registry
            .set_site_settings(&blob)
            .map_err(|e| format!("writing the admin settings: {e}"))?;
        tracing::warn!("admin password reset from the control socket");
        self.renew_setup_code()
            .map_err(|e| format!("cannot write a new setup code: {e}"))
    }
}

impl CtlBackend for Daemon {
    fn handle(&self, request: CtlRequest) -> CtlResponse {
        match request {
            CtlRequest::Status => {
                let spaces = match self.spaces_json() {
                    Ok(s) => s,
                    Err(e) => return registry_err(e),
                };
                let damage = self
                    .store
                    .damage()
                    .map(|d| d.iter().map(|x| x.to_string()).collect::<Vec<_>>());
                let forks = self.store.forks().map(|f| f.len());
                let repaired = repairs_by_peer(&self.store).map(|r| {
                    r.into_iter()
                        .map(|(peer, entries, at)| {
                            json!({"peer": hex::encode(peer), "entries": entries, "last_at": at})
                        })
                        .collect::<Vec<_>>()
                });
                let (free, total) = super::local::disk_room(self.store.dir()).unwrap_or((0, 0));
                let disk_full = total > 0
                    && free.saturating_mul(100) / total <= u64::from(self.keep_free_percent);
                use std::sync::atomic::Ordering;
                let waiting = self.board.waiting.load(Ordering::SeqCst);
                let presses = self
                    .board
                    .presses
                    .as_ref()
                    .map(|p| p.load(Ordering::SeqCst));
                match (damage, forks, repaired) {
                    (Ok(damage), Ok(forks), Ok(repaired)) => ok(json!({
                        "needs_admin": disk_full || forks > 0 || !damage.is_empty(),
                        "claimed": self.claimed().ok(),
                        "waiting_for_button": waiting,
                        "button_presses": presses,
                        "version": env!("CARGO_PKG_VERSION"),
                        "node_id": self.node_id.to_hex(),
                        "listen": self.listen.to_string(),
                        "peer_code": self.peer_code().to_string(),
                        "observed": self.activity.observed_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "port_mapping": match &*self.mapping.borrow() {
                            crate::net::reach::Mapping::Mapped { external, since } => json!({
                                "state": "mapped", "external": external.to_string(), "since": since,
                            }),
                            crate::net::reach::Mapping::Unavailable { since } => json!({
                                "state": "unavailable", "since": since,
                                "what": self.mapping.borrow().describe(),
                            }),
                            crate::net::reach::Mapping::Off => json!({"state": "off"}),
                            crate::net::reach::Mapping::Trying => json!({"state": "trying"}),
                        },
                        "admin": self.admin.map(|a| a.to_string()),
                        "uptime_secs": self.started.elapsed().as_secs(),
                        "data": self.store.dir().display().to_string(),
                        "disk_free_bytes": free,
                        "disk_total_bytes": total,
                        "spaces": spaces,
                        "damaged": damage,
                        "repaired": repaired,
                        "forks": forks,
                        "peers": self.activity.peers().into_iter().map(|p| json!({
                            "node_id": p.node_id.to_hex(),
                            "reached": p.reached(matches!(
                                *self.mapping.borrow(),
                                crate::net::reach::Mapping::Mapped { .. }
                            )),
                            "address": p.address.to_string(),
                            "since": p.since,
                            "partner": p.dialed,
                            "spaces": p.spaces.iter().map(|a| a.to_hex()).collect::<Vec<_>>(),
                            "denied": p.denied.iter().map(|a| a.to_hex()).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "relay_budget": {
                            "connections": self.relay_budget.0,
                            "bytes_per_s": self.relay_budget.1,
                        },
                        "relaying": self.activity.relays().into_iter().map(|r| json!({
                            "from": r.from.to_hex(),
                            "to": r.to.to_hex(),
                            "since": r.since,
                            "bytes": r.bytes,
                        })).collect::<Vec<_>>(),
                    })),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        err(format!("reading the store: {e}"))
                    }
                }
            }
            CtlRequest::SpaceAdd { code, name, quota } => {
                let code = match SeedCode::from_str(&code) {
                    Ok(c) => c,
                    Err(e) => return err(e.to_string()),
                };
                match self.add_space(&code, name.as_deref(), quota) {
                    Ok(held) => ok(json!({"name": held.name, "address": held.address.to_hex()})),
                    Err(e) => ops_err(e),
                }
            }
            CtlRequest::SpaceRemove { name, purge } => match self.remove_space(&name, purge) {
                Ok(purged) => ok(json!({"name": name, "purged_feeds": purged})),
                Err(e) => ops_err(e),
            },
            CtlRequest::Scrub => {
                let never = std::sync::atomic::AtomicBool::new(false);
                let findings =
                    super::scrub::pass(&self.store, &self.registry, &self.activity, false, &never);
                match self.store.damage() {
                    Ok(d) => ok(json!({
                        "findings": findings,
                        "damaged": d.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                    })),
                    Err(e) => err(format!("reading the store: {e}")),
                }
            }
            CtlRequest::SpaceList => match self.spaces_json() {
                Ok(s) => ok(s),
                Err(e) => registry_err(e),
            },
            CtlRequest::PeerAdd { peer } => match parse_partner(&peer) {
                Ok(p) => match self.add_partner(&p) {
                    Ok(()) => ok(json!({"address": p.address, "node_id": hex::encode(p.node_id)})),
                    Err(e) => ops_err(e),
                },
                Err(m) => err(m),
            },
            CtlRequest::PeerRemove { node } => {
                match self
                    .find_partner(&node)
                    .and_then(|id| self.remove_partner(&id).map(|()| id))
                {
                    Ok(id) => ok(json!({"node_id": hex::encode(id)})),
                    Err(e) => ops_err(e),
                }
            }
            CtlRequest::PeerList => match self.registry.partners() {
                Ok(ps) => ok(json!(ps
                    .iter()
                    .map(|p| json!({"address": p.address, "node_id": hex::encode(p.node_id)}))
                    .collect::<Vec<_>>())),
                Err(e) => registry_err(e),
            },
            CtlRequest::SetupCode => match self.claimed() {
                // It would claim nothing: the way back to a claim is a password reset.
                Ok(true) => err(
                    "this seeder is claimed already: sign in with its admin password, or \
                     forget it with `seeder ctl reset-password`, which prints a new setup code",
                ),
                Ok(false) => match self.setup_code() {
                    Ok(code) => ok(json!(code)),
                    Err(e) => err(format!("cannot read or write the setup code: {e}")),
                },
                Err(e) => err(e),
            },
            CtlRequest::SetSetupCode { code } => match self.set_setup_code(&code) {
                Ok(code) => ok(json!(code)),
                Err(e) => err(e),
            },
            CtlRequest::ButtonPressed => match &self.board.presses {
                Some(p) => {
                    let n = p.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    ok(json!(n))
                }
                None => err("this seeder has no claim button (serve --claim-button)"),
            },
            CtlRequest::ResetPassword => match self.reset_password() {
                Ok(code) => ok(json!(code)),
                Err(e) => err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_given_by_peer_code_is_dialed_at_all_its_addresses() {
        let id = "ab".repeat(32);
        let p = parse_partner(&format!("seeder:{id}@10.0.1.10:7428,203.0.113.1:40000")).unwrap();
        assert_eq!(p.address, "10.0.1.10:7428,203.0.113.1:40000");
        assert_eq!(p.node_id, [0xab; 32]);
        let bare = parse_partner(&id).unwrap();
        assert_eq!(bare.address, "", "reached by introductions only");
        assert_eq!(parse_partner(&format!("seeder:{id}")).unwrap(), bare);
        let e = parse_partner(&format!("seeder:{id}@host.example:7428")).expect_err("a name");
        assert!(e.contains("not an IP address"), "{e}");
    }

    #[test]
    fn partners_are_parsed_strictly() {
        let id = "ab".repeat(32);
        let p = parse_partner(&format!("seeder.example.org:7428#{id}")).unwrap();
        assert_eq!(p.address, "seeder.example.org:7428");
        assert_eq!(p.node_id, [0xab; 32]);
        assert!(parse_partner(&format!("[::1]:7428#{id}")).is_ok());
        for bad in [
            "host:7428".to_string(),
            format!("host#{id}"),
            format!("host:port#{id}"),
            "host:7428#abcd".to_string(),
            format!("host:99999#{id}"),
            format!("host:0#{id}"),
            format!("{}:7428#{id}", "a".repeat(3000)),
            format!("{}.example:7428#{id}", "a".repeat(64)),
            format!("bad\nhost:7428#{id}"),
            format!("-host:7428#{id}"),
            format!("[not-v6]:7428#{id}"),
            format!(":7428#{id}"),
        ] {
            let e = parse_partner(&bad).expect_err(&bad);
            assert!(e.len() < 400, "the error repeats a bounded part: {e}");
            assert!(
                !e.contains('\n'),
                "the error prints no raw control characters: {e}"
            );
        }
        assert!(parse_partner(&format!("192.0.2.7:7428#{id}")).is_ok());
        assert!(parse_partner(&format!("seeder.local.:7428#{id}")).is_ok());
    }
}
