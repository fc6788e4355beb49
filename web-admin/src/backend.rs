/*!
What the admin site needs from the daemon, as one trait and plain data. The daemon implements
it over its store, registry and peer table; the site only calls it. Nothing here knows about
QUIC, sled or the board: a value is either a fact to show or a request to carry out, and a
refusal comes back as a [`BackendError`] whose message is written for the person at the page.

Not for: sessions, passwords, CSRF. Those are the site's own (see `auth`), kept in an opaque
settings blob the backend stores for it.
*/

use serde::{Deserialize, Serialize};

/// Why the backend refused or failed, by whose move it is: the admin's (`NotFound`,
/// `Invalid`, `BadCode`, `Conflict`), the device's (`Unavailable`), or nobody's at the page
/// (`Io`, `Internal`: the log says more). Messages are shown to the admin as they are.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError {
    /// The request names something that doesn't exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed (a confirmation that doesn't match, a bad name).
    #[error("{0}")]
    Invalid(String),
    /// A code a person typed (a seed code, a peer code) doesn't read.
    #[error("{message}")]
    BadCode {
        message: String,
        /// Bytes of the code as it was sent that most likely hold the typo (a group of five
        /// characters), when that can be told.
        suspect: Option<std::ops::Range<usize>>,
    },
    /// The request clashes with what is there (a space already held, a name already taken).
    #[error("{0}")]
    Conflict(String),
    /// The device can't do this here or now (no such hardware, no data disk).
    #[error("{0}")]
    Unavailable(String),
    /// Reading or writing one of the device's files failed.
    #[error("{path}: {error}")]
    Io { path: String, error: String },
    /// Something broke inside the daemon; the log says more.
    #[error("{0}")]
    Internal(String),
}

/// Severity of a warning or log line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Something the admin should look at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Warning {
    pub level: Level,
    pub message: String,
}

/// Memory of the machine, from the kernel.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Use of the file system that holds the data folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskUse {
    pub path: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// The dashboard's facts, in one call so a page shows one consistent moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Overview {
    pub version: String,
    pub node_id: String,
    pub uptime_secs: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: Option<[f64; 3]>,
    pub temperature_c: Option<f64>,
    pub memory: Option<Memory>,
    pub disk: Option<DiskUse>,
    pub spaces: u64,
    pub feeds: u64,
    pub bytes_held: u64,
    pub peers_connected: u64,
    /// Totals since start, for rates.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub warnings: Vec<Warning>,
}

/// One held space.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpaceInfo {
    pub name: String,
    /// The space's public address (hex).
    pub address: String,
    pub seed_code: String,
    pub quota_bytes: Option<u64>,
    pub feeds: u64,
    pub entries: u64,
    pub bytes: u64,
    /// Every feed's newest known head is stored whole.
    pub complete: bool,
    /// When data of this space last arrived (Unix seconds).
    pub last_sync: Option<u64>,
    /// When every feed of the space was last read back and checked (Unix seconds).
    pub last_verified: Option<u64>,
    /// Connected peers that opened this space.
    pub peers: u64,
    /// New data is refused: the space's quota, an agreement's or the disk's limit is reached.
    pub full: bool,
    /// A governed space's membership as the seeder counts it; none for a space from before
    /// roles (or one whose membership log hasn't reached the seeder yet).
    #[serde(default)]
    pub membership: Option<SpaceMembership>,
}

/// Who is in a governed space, in counts only: the seeder verifies the membership log but
/// can't read who anyone is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpaceMembership {
    /// Devices in the space now (removed ones not counted).
    pub devices: u64,
    /// Content-key changes since the space began (every removal makes one).
    pub epoch: u64,
}

impl SpaceMembership {
    /// As the admin page shows it: `4 devices · epoch 2`.
    pub fn summary(&self) -> String {
        let devices = match self.devices {
            1 => "1 device".to_string(),
            n => format!("{n} devices"),
        };
        format!("{devices} · epoch {}", self.epoch)
    }
}

/// A request to hold a space.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddSpace {
    pub seed_code: String,
    pub name: Option<String>,
    pub quota_bytes: Option<u64>,
}

/// A peer connected now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectedPeer {
    pub node_id: String,
    pub address: String,
    /// Unix seconds.
    pub since: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Dialed by us as a configured partner seeder.
    pub partner: bool,
    /// How the connection reached us: `LAN`, `direct`, `port-mapped` or `hole-punched`.
    #[serde(default)]
    pub reached: String,
}

/// A partner seeder this device keeps connected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartnerInfo {
    pub address: String,
    pub node_id: String,
    pub connected: bool,
    /// Unix seconds.
    pub last_seen: Option<u64>,
}

/// Everything the peers page shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Peers {
    /// This device's node id, to give partners.
    pub node_id: String,
    /// Addresses this device is reached at (`HOST:PORT`).
    pub addresses: Vec<String>,
    /// The one string to give others: node id and every address it may be dialed at.
    #[serde(default)]
    pub peer_code: String,
    /// What the router did with the port mapping request, in words.
    #[serde(default)]
    pub port_mapping: String,
    pub connected: Vec<ConnectedPeer>,
    pub partners: Vec<PartnerInfo>,
    /// What this device may relay for others, in words.
    #[serde(default)]
    pub relay_budget: String,
    /// Connections between two other nodes this device carries now.
    #[serde(default)]
    pub relaying: Vec<Relayed>,
}

/// A connection between two other nodes that this device relays (it can't read it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Relayed {
    pub from: String,
    pub to: String,
    /// Unix seconds.
    pub since: u64,
    /// Bytes carried both ways so far.
    pub bytes: u64,
}

/// An organisation this seeder backs up, and on what terms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Agreement {
    /// Given by the backend when saved; `0` asks for a new one.
    #[serde(default)]
    pub id: u64,
    pub organisation: String,
    #[serde(default)]
    pub contact: String,
    /// Names of held spaces covered.
    #[serde(default)]
    pub spaces: Vec<String>,
    /// Bytes all its spaces may hold together.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub start: String,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub review: String,
    #[serde(default)]
    pub notes: String,
    /// Bytes its spaces hold now (filled in by the backend; ignored when saving).
    #[serde(default)]
    pub used_bytes: u64,
}

/// A block device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disk {
    /// `/dev/sda`.
    pub device: String,
    pub model: String,
    pub serial: String,
    pub size_bytes: u64,
    pub filesystem: Option<String>,
    pub label: Option<String>,
    pub mountpoint: Option<String>,
    pub removable: bool,
    /// SMART overall health ("PASSED", "FAILED"), where `smartctl` exists.
    pub smart: Option<String>,
}

/// Disks and the state of the data disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskReport {
    pub data_dir: String,
    /// One line about the data disk: mounted, missing, on the system disk.
    pub data_disk: String,
    pub disks: Vec<Disk>,
}

/// A recent line of the daemon's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub level: Level,
    pub target: String,
    pub message: String,
}

/// SSH access to the device: off unless the admin gives a public key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshAccess {
    /// Whether this page manages the device's SSH (the appliance image); elsewhere SSH is the
    /// machine's own administrator's business.
    pub available: bool,
    /// Public keys allowed to log in as root; none means SSH is off.
    pub keys: Vec<String>,
}

/// The daemon as the admin site sees it. Calls are quick (an index lookup, a `/proc` read);
/// the site calls them from its handlers directly.
pub trait AdminBackend: Send + Sync + 'static {
    fn overview(&self) -> Result<Overview, BackendError>;

    fn spaces(&self) -> Result<Vec<SpaceInfo>, BackendError>;
    /// Hold a space; a seed code with a typo is `BadCode`, naming the suspect group when it can.
    fn add_space(&self, request: &AddSpace) -> Result<SpaceInfo, BackendError>;
    /// Stop holding a space; `purge` deletes its data and frees the disk.
    fn remove_space(&self, name: &str, purge: bool) -> Result<(), BackendError>;

    fn peers(&self) -> Result<Peers, BackendError>;
    /// Add a partner seeder given by its peer code or as `HOST:PORT#NODEID`.
    fn add_partner(&self, spec: &str) -> Result<PartnerInfo, BackendError>;
    /// Forget a partner seeder by node id (hex).
    fn remove_partner(&self, node_id: &str) -> Result<(), BackendError>;

    fn agreements(&self) -> Result<Vec<Agreement>, BackendError>;
    /// Create (`id == 0`) or replace an agreement; the backend enforces its quota.
    fn save_agreement(&self, agreement: &Agreement) -> Result<Agreement, BackendError>;
    fn remove_agreement(&self, id: u64) -> Result<(), BackendError>;

    fn disks(&self) -> Result<DiskReport, BackendError>;
    /// Partition and format `device` as the data disk. `confirm` must be its serial (or model
    /// when it has none).
    fn prepare_disk(&self, device: &str, confirm: &str) -> Result<(), BackendError>;

    /// The newest `limit` log lines at `min` or above, oldest first.
    fn logs(&self, min: Level, limit: usize) -> Vec<LogLine>;

    /// Whether `code` is the device's current one-time setup code.
    fn setup_code_matches(&self, code: &str) -> Result<bool, BackendError>;
    /// Replace the setup code after a claim, so a code once used (or seen) claims nothing.
    fn renew_setup_code(&self) -> Result<(), BackendError>;
    /// Presses of the board's claim button since start, or `None` on boards without one.
    fn button_presses(&self) -> Option<u64>;
    /// The page is (or stops) waiting for a button press; the board shows it on its LED.
    fn waiting_for_button(&self, waiting: bool);

    fn ssh(&self) -> Result<SshAccess, BackendError>;
    /// Let exactly these public keys (already checked by [`crate::ssh::parse_keys`]) log in
    /// as root over SSH, or turn SSH off with none. `Unavailable` where the page doesn't
    /// manage SSH.
    fn set_ssh_keys(&self, keys: &[String]) -> Result<(), BackendError>;

    /// The site's own settings, stored by the backend as an opaque blob (atomically).
    fn load_site(&self) -> Result<Option<Vec<u8>>, BackendError>;
    fn save_site(&self, blob: &[u8]) -> Result<(), BackendError>;

    /// The dashboard graph's samples kept by [`AdminBackend::save_samples`], oldest first
    /// (none on a first start).
    fn load_samples(&self) -> Result<Vec<Sample>, BackendError>;
    /// Keep the graph's newest samples (at most [`crate::SAMPLES_KEPT`]) across restarts,
    /// replacing those kept before.
    fn save_samples(&self, samples: &[Sample]) -> Result<(), BackendError>;
}

/// One sample of the transfer counters (the dashboard graph's history).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    /// Totals since the daemon started (a restart starts them again from 0).
    pub bytes_received: u64,
    pub bytes_sent: u64,
}
