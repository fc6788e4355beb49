/*!
The admin page's backend: [`web_admin::AdminBackend`] over the daemon's store, registry and
activity, plus what the machine reports (`/proc`, `/sys`, `lsblk`, `smartctl`). Each call is
a few index reads or a small file read; errors become messages for the person at the page.

Not for: HTTP, sessions or passwords (the web-admin crate's), nor preparing disks (that is the
board support's, and this build refuses it with a clear message).
*/

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use web_admin::{
    AddSpace, AdminBackend, Agreement, BackendError, ConnectedPeer, Disk, DiskReport, DiskUse,
    Level, LogLine, Memory, Overview, PartnerInfo, Peers, SpaceInfo, Warning,
};

use super::activity::Activity;
use super::backend::{parse_partner, Daemon};
use super::local::{disk_room, SeederLocal};
use super::logring::LogRing;
use super::ops::OpsError;
use super::registry::{AgreementRecord, RegistryError};
use crate::space::SeedCode;
use crate::sync::Local;

/// Partners not seen for this long are reported as unreachable.
pub const PARTNER_SILENCE_SECS: u64 = 120;

/// Repairs of damaged data are shown on the dashboard for this long.
pub const REPAIR_NEWS_SECS: u64 = 7 * 24 * 60 * 60;

/// See the module comment.
pub struct AdminDaemon {
    pub daemon: Arc<Daemon>,
    pub local: Arc<SeederLocal>,
    pub activity: Arc<Activity>,
    pub logs: LogRing,
    pub keep_free_percent: u8,
    /// Presses of the board's claim button, where the board has one.
    pub button: Option<Arc<AtomicU64>>,
    /// The admin page waits for a press (the board shows it on its LED).
    pub waiting: Arc<AtomicBool>,
    /// Where root's SSH keys go for the root-side helper (`serve --ssh-keys-file`).
    pub ssh_keys_file: Option<std::path::PathBuf>,
}

/// The keys in the file the admin page keeps for the root-side helper (none: SSH off).
fn read_ssh_keys(file: &std::path::Path) -> Result<Vec<String>, BackendError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error(file, e)),
    }
}

/// Replace the file atomically: the helper is started by a path unit when it changes, and
/// must never see half a key.
fn write_ssh_keys(file: &std::path::Path, keys: &[String]) -> Result<(), BackendError> {
    let fail = |e: std::io::Error| io_error(file, e);
    let mut text = String::new();
    for k in keys {
        text.push_str(k);
        text.push('\n');
    }
    // Public keys: readable by the root helper that installs them, as before.
    crate::store::file::write_atomic(file, 0o644, text.as_bytes()).map_err(fail)
}

fn registry_error(e: RegistryError) -> BackendError {
    match e {
        RegistryError::UnknownSpace(_) | RegistryError::UnknownAgreement(_) => {
            BackendError::NotFound(e.to_string())
        }
        RegistryError::AlreadyHeld(_) | RegistryError::NameTaken(_) => {
            BackendError::Conflict(e.to_string())
        }
        RegistryError::BadName(_) => BackendError::Invalid(e.to_string()),
        other => BackendError::Internal(other.to_string()),
    }
}

fn ops_error(e: OpsError) -> BackendError {
    match e {
        OpsError::Invalid(m) => BackendError::Invalid(m),
        OpsError::NotFound(m) => BackendError::NotFound(m),
        OpsError::Registry(e) => BackendError::Internal(e.to_string()),
    }
}

fn io_error(file: &std::path::Path, e: std::io::Error) -> BackendError {
    BackendError::Io {
        path: file.display().to_string(),
        error: e.to_string(),
    }
}

/// A seed code that doesn't read, as the page shows it: a sentence, and where the typo most
/// likely is in the text as it was sent.
fn bad_seed_code(e: crate::space::CodeError, sent: &str) -> BackendError {
    let m = e.to_string();
    let mut c = m.chars();
    let first = c.next().map(|f| f.to_uppercase().collect::<String>());
    let suspect = match &e {
        crate::space::CodeError::Typo {
            suspect: Some(s), ..
        } => Some(s.span.clone()),
        _ => None,
    };
    // The code was read trimmed; its spans are into that, the page marks the text sent.
    let lead = sent.len() - sent.trim_start().len();
    BackendError::BadCode {
        message: format!("{}{}.", first.unwrap_or_default(), c.as_str()),
        suspect: suspect.map(|r| r.start + lead..r.end + lead),
    }
}

fn internal(e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(e.to_string())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The first thermal zone's temperature (the SoC's, on the Lime2).
pub fn temperature() -> Option<f64> {
    let dir = std::fs::read_dir("/sys/class/thermal").ok()?;
    let mut zones: Vec<_> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("thermal_zone"))
        })
        .collect();
    zones.sort();
    zones.iter().find_map(|z| {
        let milli: f64 = std::fs::read_to_string(z.join("temp"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(milli / 1000.0)
    })
}

/// Total and available memory from `/proc/meminfo`.
pub fn memory() -> Option<Memory> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(Memory {
        total_bytes: field("MemTotal:")?,
        available_bytes: field("MemAvailable:")?,
    })
}

/// The address other machines on the LAN most likely reach us at (the source address of a
/// route to a public address; no packet is sent).
fn lan_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn host_name() -> Option<String> {
    let n = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let n = n.trim();
    (!n.is_empty()).then(|| n.to_string())
}

/// SMART overall health of `device`, where `smartctl` exists.
fn smart_health(device: &str) -> Option<String> {
    let smartctl = super::disk::which("smartctl")?;
    let out = std::process::Command::new(smartctl)
        .args(["--health", "--json", device])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    match v["smart_status"]["passed"].as_bool()? {
        true => Some("PASSED".into()),
        false => Some("FAILED".into()),
    }
}

/// The disks as the admin page shows them, with SMART health where it can be read.
fn disks_for_page() -> Result<Vec<Disk>, BackendError> {
    Ok(super::disk::list(false)
        .map_err(|e| internal(e.to_string()))?
        .into_iter()
        .map(|d| Disk {
            smart: smart_health(&d.device),
            device: d.device,
            model: d.model,
            serial: d.serial,
            size_bytes: d.size_bytes,
            filesystem: d.filesystem,
            label: d.label,
            mountpoint: d.mountpoints.first().cloned(),
            removable: d.removable,
        })
        .collect())
}

/// The daemon runs as an unprivileged user and can't partition disks: the page says what root
/// runs instead.
fn needs_root(device: &str, confirm: &str) -> Result<(), BackendError> {
    let serial = if confirm.is_empty() {
        "SERIAL"
    } else {
        confirm
    };
    Err(BackendError::Unavailable(format!(
        "preparing a disk needs root: on the device run \
         sudo seeder disk prepare {device} --confirm {serial}"
    )))
}

/// The ring's newest lines at `min` or above, as the admin page shows them.
fn ring_lines(ring: &LogRing, min: Level, limit: usize) -> Vec<LogLine> {
    let level = match min {
        Level::Error => tracing::Level::ERROR,
        Level::Warn => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    };
    ring.recent(level, limit)
        .into_iter()
        .map(|l| LogLine {
            at_ms: l.at_ms,
            level: match l.level {
                tracing::Level::ERROR => Level::Error,
                tracing::Level::WARN => Level::Warn,
                tracing::Level::INFO => Level::Info,
                tracing::Level::DEBUG => Level::Debug,
                tracing::Level::TRACE => Level::Trace,
            },
            target: l.target,
            message: l.message,
        })
        .collect()
}

impl AdminDaemon {
    fn held(&self) -> Result<Vec<SpaceInfo>, BackendError> {
        let registry = &self.daemon.registry;
        let peers = self.activity.peers();
        let mut out = Vec::new();
        for s in registry.spaces().map_err(registry_error)? {
            // Kept current as feeds change: no walk over every feed per request.
            let totals = registry.totals(&s.address).unwrap_or_default();
            out.push(SpaceInfo {
                seed_code: SeedCode::new(s.address).to_string(),
                address: s.address.to_hex(),
                quota_bytes: s.quota,
                feeds: totals.feeds,
                entries: totals.entries,
                bytes: totals.bytes,
                complete: totals.complete(),
                last_sync: self.activity.last_append(&s.address),
                // Every entry is verified when it arrives, and all of them again by the daily
                // scrub (`scrub`); this is the last clean pass of this run.
                last_verified: self.activity.last_verified(&s.address),
                peers: peers
                    .iter()
                    .filter(|p| p.spaces.contains(&s.address))
                    .count() as u64,
                full: self.local.room(&s.address, 1).is_err(),
                // Counts only: the labels in the log are sealed to members.
                membership: registry
                    .membership(&s.address)
                    .map_err(registry_error)?
                    .filter(|m| m.is_governed())
                    .map(|m| web_admin::SpaceMembership {
                        devices: m.active().count() as u64,
                        epoch: m.epoch() as u64,
                    }),
                name: s.name,
            });
        }
        Ok(out)
    }

    fn warnings(&self, spaces: &[SpaceInfo], disk: Option<&DiskUse>) -> Vec<Warning> {
        let mut w = Vec::new();
        let error = |m: String| Warning {
            level: Level::Error,
            message: m,
        };
        let warn = |m: String| Warning {
            level: Level::Warn,
            message: m,
        };
        if let Some(d) = disk {
            if d.total_bytes > 0
                && d.free_bytes.saturating_mul(100) / d.total_bytes
                    <= u64::from(self.keep_free_percent)
            {
                w.push(error(format!(
                    "The data disk is full ({} free): no space takes new data until room is made.",
                    web_admin::format::bytes(d.free_bytes)
                )));
            }
        }
        if let crate::net::reach::Mapping::Unavailable { .. } = *self.daemon.mapping.borrow() {
            w.push(warn(format!(
                "Not reachable from outside the LAN: the router answered neither UPnP, NAT-PMP \
                 nor PCP. Partner seeders still reach this one through a partner seeder both \
                 reach, but members away from the office don't: switch on UPnP or NAT-PMP in \
                 the router, or forward UDP port {} to this seeder.",
                self.daemon.listen.port()
            )));
        }
        for s in spaces.iter().filter(|s| s.full) {
            w.push(warn(format!(
                "Space {} is at its quota: new data is refused.",
                s.name
            )));
        }
        match self.daemon.store.forks() {
            Ok(f) if !f.is_empty() => w.push(error(format!(
                "{} feed(s) forked: a member's device signed two different histories. The feeds are frozen and the evidence kept.",
                f.len()
            ))),
            Ok(_) => {}
            Err(e) => w.push(error(format!("Cannot read fork records: {e}"))),
        }
        match self.daemon.store.damage() {
            Ok(d) => {
                for x in d.iter().take(5) {
                    w.push(error(format!("Damaged data: {x}")));
                }
            }
            Err(e) => w.push(error(format!("Cannot read damage records: {e}"))),
        }
        let now = now_unix();
        // Healed damage is news for a week: which peer's copies repaired how much.
        match super::backend::repairs_by_peer(&self.daemon.store) {
            Ok(r) => {
                for (peer, entries, at) in r {
                    if at == 0 || now.saturating_sub(at) < REPAIR_NEWS_SECS {
                        w.push(Warning {
                            level: Level::Info,
                            message: format!(
                                "Repaired {entries} damaged {} with good copies from {}.",
                                if entries == 1 { "entry" } else { "entries" },
                                crate::net::NodeId(peer).short()
                            ),
                        });
                    }
                }
            }
            Err(e) => w.push(error(format!("Cannot read repair records: {e}"))),
        }
        for p in self.daemon.registry.partners().unwrap_or_default() {
            let id = crate::net::NodeId(p.node_id);
            if self.activity.is_connected(&id) {
                continue;
            }
            let silent = match self.activity.last_seen(&id) {
                Some(t) => now.saturating_sub(t) > PARTNER_SILENCE_SECS,
                None => self.daemon.started.elapsed().as_secs() > PARTNER_SILENCE_SECS,
            };
            if silent {
                w.push(warn(format!(
                    "Partner seeder {} is unreachable.",
                    p.address
                )));
            }
        }
        let today = web_admin::format::today();
        for a in self.daemon.registry.agreements().unwrap_or_default() {
            if !a.review.is_empty() && a.review < today {
                w.push(warn(format!(
                    "The agreement with {} was due for review on {}.",
                    a.organisation, a.review
                )));
            }
        }
        w
    }

    fn agreement_out(&self, a: AgreementRecord) -> Agreement {
        let used = self.daemon.registry.agreement_use(&a).unwrap_or(0);
        Agreement {
            id: a.id,
            organisation: a.organisation,
            contact: a.contact,
            spaces: a.spaces,
            quota_bytes: a.quota,
            start: a.start,
            review: a.review,
            notes: a.notes,
            used_bytes: used,
        }
    }
}

impl AdminBackend for AdminDaemon {
    fn overview(&self) -> Result<Overview, BackendError> {
        let spaces = self.held()?;
        let disk = disk_room(self.daemon.store.dir())
            .ok()
            .map(|(free, total)| DiskUse {
                path: self.daemon.store.dir().display().to_string(),
                total_bytes: total,
                free_bytes: free,
            });
        let (rx, tx) = self.activity.totals();
        let warnings = self.warnings(&spaces, disk.as_ref());
        Ok(Overview {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: self.daemon.node_id.to_hex(),
            uptime_secs: self.daemon.started.elapsed().as_secs(),
            load: load_average(),
            temperature_c: temperature(),
            memory: memory(),
            disk,
            spaces: spaces.len() as u64,
            feeds: spaces.iter().map(|s| s.feeds).sum(),
            bytes_held: spaces.iter().map(|s| s.bytes).sum(),
            peers_connected: self.activity.peers().len() as u64,
            bytes_received: rx,
            bytes_sent: tx,
            warnings,
        })
    }

    fn spaces(&self) -> Result<Vec<SpaceInfo>, BackendError> {
        self.held()
    }

    fn add_space(&self, r: &AddSpace) -> Result<SpaceInfo, BackendError> {
        let code =
            SeedCode::from_str(r.seed_code.trim()).map_err(|e| bad_seed_code(e, &r.seed_code))?;
        let held = self
            .daemon
            .add_space(&code, r.name.as_deref(), r.quota_bytes)
            .map_err(ops_error)?;
        self.held()?
            .into_iter()
            .find(|s| s.name == held.name)
            .ok_or_else(|| internal("the added space is missing"))
    }

    fn remove_space(&self, name: &str, purge: bool) -> Result<(), BackendError> {
        self.daemon
            .remove_space(name, purge)
            .map(drop)
            .map_err(ops_error)
    }

    fn peers(&self) -> Result<Peers, BackendError> {
        let port = self.daemon.listen.port();
        let mut addresses = Vec::new();
        if !self.daemon.listen.ip().is_unspecified() {
            addresses.push(self.daemon.listen.to_string());
        } else {
            if let Some(ip) = lan_ip() {
                addresses.push(std::net::SocketAddr::new(ip, port).to_string());
            }
            if let Some(h) = host_name() {
                addresses.push(format!("{h}.local:{port}"));
            }
        }
        let mapped = matches!(
            *self.daemon.mapping.borrow(),
            crate::net::reach::Mapping::Mapped { .. }
        );
        let connected = self
            .activity
            .peers()
            .into_iter()
            .map(|p| ConnectedPeer {
                node_id: p.node_id.to_hex(),
                address: p.address.to_string(),
                since: p.since,
                bytes_in: p.bytes_in,
                bytes_out: p.bytes_out,
                partner: p.dialed,
                reached: p.reached(mapped).to_string(),
            })
            .collect();
        let partners = self
            .daemon
            .registry
            .partners()
            .map_err(registry_error)?
            .into_iter()
            .map(|p| {
                let id = crate::net::NodeId(p.node_id);
                PartnerInfo {
                    address: p.address,
                    node_id: id.to_hex(),
                    connected: self.activity.is_connected(&id),
                    last_seen: self.activity.last_seen(&id),
                }
            })
            .collect();
        Ok(Peers {
            node_id: self.daemon.node_id.to_hex(),
            addresses,
            peer_code: self.daemon.peer_code().to_string(),
            port_mapping: self.daemon.mapping.borrow().describe(),
            connected,
            partners,
            relay_budget: self.daemon.relay_budget_words(),
            relaying: self
                .activity
                .relays()
                .into_iter()
                .map(|r| web_admin::backend::Relayed {
                    from: r.from.to_hex(),
                    to: r.to.to_hex(),
                    since: r.since,
                    bytes: r.bytes,
                })
                .collect(),
        })
    }

    fn add_partner(&self, spec: &str) -> Result<PartnerInfo, BackendError> {
        let p = parse_partner(spec).map_err(|message| BackendError::BadCode {
            message,
            suspect: None,
        })?;
        self.daemon.add_partner(&p).map_err(ops_error)?;
        Ok(PartnerInfo {
            address: p.address,
            node_id: hex::encode(p.node_id),
            connected: false,
            last_seen: None,
        })
    }

    fn remove_partner(&self, node_id: &str) -> Result<(), BackendError> {
        let id: [u8; 32] = hex::decode(node_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| BackendError::NotFound(format!("no partner {node_id:?}")))?;
        self.daemon.remove_partner(&id).map_err(ops_error)
    }

    fn agreements(&self) -> Result<Vec<Agreement>, BackendError> {
        Ok(self
            .daemon
            .registry
            .agreements()
            .map_err(registry_error)?
            .into_iter()
            .map(|a| self.agreement_out(a))
            .collect())
    }

    fn save_agreement(&self, a: &Agreement) -> Result<Agreement, BackendError> {
        let record = AgreementRecord {
            id: a.id,
            organisation: a.organisation.clone(),
            contact: a.contact.clone(),
            spaces: a
                .spaces
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            quota: a.quota_bytes,
            start: a.start.clone(),
            review: a.review.clone(),
            notes: a.notes.clone(),
        };
        let saved = self
            .daemon
            .registry
            .save_agreement(record)
            .map_err(|e| match e {
                RegistryError::UnknownSpace(n) => {
                    BackendError::Invalid(format!("no space named {n:?} is held here"))
                }
                other => registry_error(other),
            })?;
        Ok(self.agreement_out(saved))
    }

    fn remove_agreement(&self, id: u64) -> Result<(), BackendError> {
        self.daemon
            .registry
            .remove_agreement(id)
            .map_err(registry_error)
    }

    fn disks(&self) -> Result<DiskReport, BackendError> {
        let disks = disks_for_page()?;
        use std::os::unix::fs::MetadataExt;
        let dir = self.daemon.store.dir();
        let data_dev = std::fs::metadata(dir).map(|m| m.dev()).ok();
        let root_dev = std::fs::metadata("/").map(|m| m.dev()).ok();
        let data_disk = match (data_dev, root_dev) {
            (Some(a), Some(b)) if a == b => {
                "on the system disk (no separate data disk is mounted)".to_string()
            }
            (Some(_), Some(_)) => "on its own file system".to_string(),
            _ => "unknown".to_string(),
        };
        Ok(DiskReport {
            data_dir: dir.display().to_string(),
            data_disk,
            disks,
        })
    }

    fn prepare_disk(&self, device: &str, confirm: &str) -> Result<(), BackendError> {
        needs_root(device, confirm)
    }

    fn ssh(&self) -> Result<web_admin::SshAccess, BackendError> {
        Ok(match &self.ssh_keys_file {
            Some(f) => web_admin::SshAccess {
                available: true,
                keys: read_ssh_keys(f)?,
            },
            None => web_admin::SshAccess::default(),
        })
    }

    fn set_ssh_keys(&self, keys: &[String]) -> Result<(), BackendError> {
        match &self.ssh_keys_file {
            Some(f) => write_ssh_keys(f, keys),
            None => Err(BackendError::Unavailable(
                "SSH on this machine is set up by its own administrator".into(),
            )),
        }
    }

    fn logs(&self, min: Level, limit: usize) -> Vec<LogLine> {
        ring_lines(&self.logs, min, limit)
    }

    fn setup_code_matches(&self, code: &str) -> Result<bool, BackendError> {
        let ours = self.daemon.setup_code().map_err(internal)?;
        // Typed as a person likes: any case, with or without the dashes.
        let Ok(given) = super::backend::parse_setup_code(code) else {
            return Ok(false);
        };
        Ok(web_admin::auth::same_secret(&given, &ours))
    }

    fn renew_setup_code(&self) -> Result<(), BackendError> {
        self.daemon.renew_setup_code().map_err(internal)?;
        Ok(())
    }

    fn button_presses(&self) -> Option<u64> {
        self.button.as_ref().map(|b| b.load(Ordering::SeqCst))
    }

    fn waiting_for_button(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    fn load_site(&self) -> Result<Option<Vec<u8>>, BackendError> {
        self.daemon.registry.site_settings().map_err(registry_error)
    }

    fn save_site(&self, blob: &[u8]) -> Result<(), BackendError> {
        self.daemon
            .registry
            .set_site_settings(blob)
            .map_err(registry_error)
    }

    fn load_samples(&self) -> Result<Vec<web_admin::Sample>, BackendError> {
        self.daemon.registry.graph_samples().map_err(registry_error)
    }

    fn save_samples(&self, samples: &[web_admin::Sample]) -> Result<(), BackendError> {
        self.daemon
            .registry
            .set_graph_samples(samples)
            .map_err(registry_error)
    }
}

/// The admin page's backend while the data disk is missing: it says so, lists the disks, and
/// refuses everything that would need the store (nothing is written to the SD card).
pub struct NoDiskBackend {
    pub data: std::path::PathBuf,
    pub started: std::time::Instant,
    pub logs: LogRing,
}

impl NoDiskBackend {
    fn refuse<T>(&self) -> Result<T, BackendError> {
        Err(BackendError::Unavailable(format!(
            "there is no data disk at {}: prepare one first",
            self.data.display()
        )))
    }
}

impl AdminBackend for NoDiskBackend {
    fn overview(&self) -> Result<Overview, BackendError> {
        Ok(Overview {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: String::new(),
            uptime_secs: self.started.elapsed().as_secs(),
            load: load_average(),
            temperature_c: temperature(),
            memory: memory(),
            disk: None,
            spaces: 0,
            feeds: 0,
            bytes_held: 0,
            peers_connected: 0,
            bytes_received: 0,
            bytes_sent: 0,
            warnings: vec![Warning {
                level: Level::Error,
                message: format!(
                    "No data disk: nothing is mounted at {}. Check the SATA disk and its power, \
                     or prepare one with `sudo seeder disk prepare DEVICE --confirm SERIAL`. \
                     Nothing is stored on the SD card meanwhile.",
                    self.data.display()
                ),
            }],
        })
    }
    fn spaces(&self) -> Result<Vec<SpaceInfo>, BackendError> {
        Ok(Vec::new())
    }
    fn add_space(&self, _: &AddSpace) -> Result<SpaceInfo, BackendError> {
        self.refuse()
    }
    fn remove_space(&self, _: &str, _: bool) -> Result<(), BackendError> {
        self.refuse()
    }
    fn peers(&self) -> Result<Peers, BackendError> {
        self.refuse()
    }
    fn add_partner(&self, _: &str) -> Result<PartnerInfo, BackendError> {
        self.refuse()
    }
    fn remove_partner(&self, _: &str) -> Result<(), BackendError> {
        self.refuse()
    }
    fn agreements(&self) -> Result<Vec<Agreement>, BackendError> {
        Ok(Vec::new())
    }
    fn save_agreement(&self, _: &Agreement) -> Result<Agreement, BackendError> {
        self.refuse()
    }
    fn remove_agreement(&self, _: u64) -> Result<(), BackendError> {
        self.refuse()
    }
    fn disks(&self) -> Result<DiskReport, BackendError> {
        let disks = disks_for_page()?;
        Ok(DiskReport {
            data_dir: self.data.display().to_string(),
            data_disk: "missing".into(),
            disks,
        })
    }
    fn prepare_disk(&self, device: &str, confirm: &str) -> Result<(), BackendError> {
        needs_root(device, confirm)
    }
    fn ssh(&self) -> Result<web_admin::SshAccess, BackendError> {
        Ok(web_admin::SshAccess::default())
    }
    fn set_ssh_keys(&self, _: &[String]) -> Result<(), BackendError> {
        self.refuse()
    }
    fn logs(&self, min: Level, limit: usize) -> Vec<LogLine> {
        ring_lines(&self.logs, min, limit)
    }
    fn setup_code_matches(&self, _: &str) -> Result<bool, BackendError> {
        self.refuse()
    }
    fn renew_setup_code(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn button_presses(&self) -> Option<u64> {
        None
    }
    fn waiting_for_button(&self, _: bool) {}
    fn load_site(&self) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(None)
    }
    fn save_site(&self, _: &[u8]) -> Result<(), BackendError> {
        self.refuse()
    }
    fn load_samples(&self) -> Result<Vec<web_admin::Sample>, BackendError> {
        Ok(Vec::new())
    }
    /// Nothing is written to the SD card: the graph starts afresh once the disk is back.
    fn save_samples(&self, _: &[web_admin::Sample]) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub fn is_mount_point(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    match std::fs::metadata(parent) {
        Ok(p) => p.dev() != me.dev() || p.ino() == me.ino(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_reports_load_and_memory() {
        assert!(load_average().is_some());
        let m = memory().unwrap();
        assert!(m.total_bytes >= m.available_bytes && m.total_bytes > 0);
    }
}
