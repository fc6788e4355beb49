/*!
An [`AdminBackend`] held in memory: for the site's route tests and its render benchmark.
The real one is the daemon's (`seeder/src/daemon/admin.rs`), and the browser test runs
against that. Seed codes here are accepted when they start with `seed-` and are long enough;
the daemon checks the real checksum. To stand in for a failed checksum, a dash-separated group
with a `u` in it (a letter no real seed code has) is reported as the suspect group of a typo.
*/

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::backend::*;

#[derive(Default)]
struct Inner {
    spaces: Vec<SpaceInfo>,
    partners: Vec<PartnerInfo>,
    agreements: Vec<Agreement>,
    next_agreement: u64,
    site: Option<Vec<u8>>,
    setup_code: String,
    logs: Vec<LogLine>,
    prepared: Vec<String>,
    ssh_keys: Vec<String>,
    /// What `save_samples` kept, at most [`crate::SAMPLES_KEPT`].
    samples: Vec<Sample>,
}

/// See the module comment.
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    presses: AtomicU64,
    has_button: bool,
    waiting: AtomicBool,
}

impl MemoryBackend {
    pub fn new(setup_code: &str) -> MemoryBackend {
        MemoryBackend {
            inner: Mutex::new(Inner {
                setup_code: setup_code.to_string(),
                next_agreement: 1,
                logs: vec![
                    LogLine {
                        at_ms: 1,
                        level: Level::Info,
                        target: "seeder".into(),
                        message: "seeder ready".into(),
                    },
                    LogLine {
                        at_ms: 2,
                        level: Level::Warn,
                        target: "seeder::net".into(),
                        message: "partner unreachable".into(),
                    },
                ],
                ..Inner::default()
            }),
            presses: AtomicU64::new(0),
            has_button: true,
            waiting: AtomicBool::new(false),
        }
    }

    /// A backend holding `spaces` spaces of `feeds_each` feeds (for the render benchmark).
    pub fn with_spaces(setup_code: &str, spaces: u64, feeds_each: u64) -> MemoryBackend {
        let b = MemoryBackend::new(setup_code);
        {
            let mut i = b.inner.lock().expect("lock");
            for n in 0..spaces {
                i.spaces.push(SpaceInfo {
                    name: format!("space-{n}"),
                    address: format!("{n:064x}"),
                    seed_code: format!("seed-{n:05}"),
                    quota_bytes: None,
                    feeds: feeds_each,
                    entries: feeds_each * 100,
                    bytes: feeds_each * 100 * 65_536,
                    complete: true,
                    last_sync: Some(1),
                    last_verified: Some(1),
                    peers: 1,
                    full: false,
                    membership: None,
                });
            }
        }
        b
    }

    /// Simulate a press of the board's button.
    pub fn press_button(&self) {
        self.presses.fetch_add(1, Ordering::SeqCst);
    }

    pub fn is_waiting_for_button(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Simulate data arriving for a space.
    pub fn grow(&self, name: &str, bytes: u64) {
        let mut i = self.inner.lock().expect("lock");
        if let Some(s) = i.spaces.iter_mut().find(|s| s.name == name) {
            s.bytes += bytes;
            s.entries += 1;
        }
    }

    /// Simulate a governed space's membership log reaching the seeder.
    pub fn set_membership(&self, name: &str, membership: Option<crate::backend::SpaceMembership>) {
        let mut i = self.inner.lock().expect("lock");
        if let Some(s) = i.spaces.iter_mut().find(|s| s.name == name) {
            s.membership = membership;
        }
    }

    pub fn setup_code(&self) -> String {
        self.inner.lock().expect("lock").setup_code.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory backend lock")
    }
}

impl AdminBackend for MemoryBackend {
    fn overview(&self) -> Result<Overview, BackendError> {
        let i = self.lock();
        Ok(Overview {
            version: "test".into(),
            node_id: "ab".repeat(32),
            uptime_secs: 3600,
            load: Some([0.1, 0.2, 0.3]),
            temperature_c: Some(41.5),
            memory: Some(Memory {
                total_bytes: 1 << 30,
                available_bytes: 700 << 20,
            }),
            disk: Some(DiskUse {
                path: "/var/lib/seeder".into(),
                total_bytes: 500 << 30,
                free_bytes: 400 << 30,
            }),
            spaces: i.spaces.len() as u64,
            feeds: i.spaces.iter().map(|s| s.feeds).sum(),
            bytes_held: i.spaces.iter().map(|s| s.bytes).sum(),
            peers_connected: 1,
            bytes_received: i.spaces.iter().map(|s| s.bytes).sum(),
            bytes_sent: 0,
            warnings: Vec::new(),
        })
    }

    fn spaces(&self) -> Result<Vec<SpaceInfo>, BackendError> {
        Ok(self.lock().spaces.clone())
    }

    fn add_space(&self, r: &AddSpace) -> Result<SpaceInfo, BackendError> {
        let code = r.seed_code.trim();
        if let Some(span) = fake_typo(&r.seed_code) {
            return Err(BackendError::BadCode {
                message: "a seed code has a typo, most likely in the marked group: check it \
                          character by character"
                    .into(),
                suspect: Some(span),
            });
        }
        if !code.starts_with("seed-") || code.len() < 10 {
            return Err(BackendError::Invalid(format!(
                "{code:?} is not a seed code (they start with seed-)"
            )));
        }
        let mut i = self.lock();
        let name = r.name.clone().unwrap_or_else(|| code[5..10].to_string());
        if i.spaces.iter().any(|s| s.name == name) {
            return Err(BackendError::Conflict(format!(
                "a space named {name:?} is already held"
            )));
        }
        let s = SpaceInfo {
            name,
            address: format!("{:064x}", i.spaces.len()),
            seed_code: code.to_string(),
            quota_bytes: r.quota_bytes,
            feeds: 0,
            entries: 0,
            bytes: 0,
            complete: true,
            last_sync: None,
            last_verified: None,
            peers: 0,
            full: false,
            membership: None,
        };
        i.spaces.push(s.clone());
        Ok(s)
    }

    fn remove_space(&self, name: &str, _purge: bool) -> Result<(), BackendError> {
        let mut i = self.lock();
        let before = i.spaces.len();
        i.spaces.retain(|s| s.name != name);
        if i.spaces.len() == before {
            return Err(BackendError::NotFound(format!("no space named {name:?}")));
        }
        Ok(())
    }

    fn peers(&self) -> Result<Peers, BackendError> {
        Ok(Peers {
            node_id: "ab".repeat(32),
            addresses: vec!["192.0.2.10:7428".into()],
            peer_code: format!("seeder:{}@192.0.2.10:7428", "ab".repeat(32)),
            port_mapping: "off".into(),
            connected: vec![ConnectedPeer {
                node_id: "cd".repeat(32),
                address: "192.0.2.11:50000".into(),
                since: 1,
                bytes_in: 1000,
                bytes_out: 2000,
                partner: false,
                reached: "LAN".into(),
            }],
            partners: self.lock().partners.clone(),
            relay_budget: "up to 8 connections at once, 4 MiB/s together".into(),
            relaying: vec![Relayed {
                from: "ef".repeat(32),
                to: "cd".repeat(32),
                since: 1,
                bytes: 4096,
            }],
        })
    }

    fn add_partner(&self, spec: &str) -> Result<PartnerInfo, BackendError> {
        let (addr, id) = spec
            .rsplit_once('#')
            .ok_or_else(|| BackendError::Invalid(format!("{spec:?}: expected HOST:PORT#NODEID")))?;
        if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(BackendError::Invalid(format!(
                "node id {id:?} should be 64 hex characters"
            )));
        }
        let p = PartnerInfo {
            address: addr.to_string(),
            node_id: id.to_ascii_lowercase(),
            connected: false,
            last_seen: None,
        };
        let mut i = self.lock();
        i.partners.retain(|q| q.node_id != p.node_id);
        i.partners.push(p.clone());
        Ok(p)
    }

    fn remove_partner(&self, node_id: &str) -> Result<(), BackendError> {
        let mut i = self.lock();
        let before = i.partners.len();
        i.partners.retain(|p| p.node_id != node_id);
        if before == i.partners.len() {
            return Err(BackendError::NotFound(format!("no partner {node_id}")));
        }
        Ok(())
    }

    fn agreements(&self) -> Result<Vec<Agreement>, BackendError> {
        let i = self.lock();
        Ok(i.agreements
            .iter()
            .map(|a| {
                let mut a = a.clone();
                a.used_bytes = i
                    .spaces
                    .iter()
                    .filter(|s| a.spaces.contains(&s.name))
                    .map(|s| s.bytes)
                    .sum();
                a
            })
            .collect())
    }

    fn save_agreement(&self, a: &Agreement) -> Result<Agreement, BackendError> {
        let mut i = self.lock();
        for s in &a.spaces {
            if !i.spaces.iter().any(|x| &x.name == s) {
                return Err(BackendError::Invalid(format!("no space named {s:?}")));
            }
        }
        let mut a = a.clone();
        if a.id == 0 {
            a.id = i.next_agreement;
            i.next_agreement += 1;
        } else if !i.agreements.iter().any(|x| x.id == a.id) {
            return Err(BackendError::NotFound(format!("no agreement {}", a.id)));
        }
        i.agreements.retain(|x| x.id != a.id);
        i.agreements.push(a.clone());
        i.agreements.sort_by_key(|x| x.id);
        Ok(a)
    }

    fn remove_agreement(&self, id: u64) -> Result<(), BackendError> {
        let mut i = self.lock();
        let before = i.agreements.len();
        i.agreements.retain(|a| a.id != id);
        if before == i.agreements.len() {
            return Err(BackendError::NotFound(format!("no agreement {id}")));
        }
        Ok(())
    }

    fn disks(&self) -> Result<DiskReport, BackendError> {
        Ok(DiskReport {
            data_dir: "/var/lib/seeder".into(),
            data_disk: "no data disk: data is on the system disk".into(),
            disks: vec![Disk {
                device: "/dev/sda".into(),
                model: "TestDisk 500".into(),
                serial: "TD123".into(),
                size_bytes: 500 << 30,
                filesystem: None,
                label: None,
                mountpoint: None,
                removable: false,
                smart: Some("PASSED".into()),
            }],
        })
    }

    fn ssh(&self) -> Result<SshAccess, BackendError> {
        Ok(SshAccess {
            available: true,
            keys: self.lock().ssh_keys.clone(),
        })
    }

    fn set_ssh_keys(&self, keys: &[String]) -> Result<(), BackendError> {
        self.lock().ssh_keys = keys.to_vec();
        Ok(())
    }

    fn prepare_disk(&self, device: &str, confirm: &str) -> Result<(), BackendError> {
        if device != "/dev/sda" {
            return Err(BackendError::NotFound(format!("no disk {device}")));
        }
        if confirm != "TD123" {
            return Err(BackendError::Invalid(
                "type the disk's serial number to confirm".into(),
            ));
        }
        self.lock().prepared.push(device.to_string());
        Ok(())
    }

    fn logs(&self, min: Level, limit: usize) -> Vec<LogLine> {
        let i = self.lock();
        let v: Vec<_> = i.logs.iter().filter(|l| l.level >= min).cloned().collect();
        v[v.len().saturating_sub(limit)..].to_vec()
    }

    fn setup_code_matches(&self, code: &str) -> Result<bool, BackendError> {
        Ok(crate::auth::same_secret(
            code.trim(),
            &self.lock().setup_code,
        ))
    }

    fn renew_setup_code(&self) -> Result<(), BackendError> {
        self.lock().setup_code = crate::auth::random_hex(8);
        Ok(())
    }

    fn button_presses(&self) -> Option<u64> {
        self.has_button.then(|| self.presses.load(Ordering::SeqCst))
    }

    fn waiting_for_button(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    fn load_site(&self) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().site.clone())
    }

    fn save_site(&self, blob: &[u8]) -> Result<(), BackendError> {
        self.lock().site = Some(blob.to_vec());
        Ok(())
    }

    fn load_samples(&self) -> Result<Vec<Sample>, BackendError> {
        Ok(self.lock().samples.clone())
    }

    fn save_samples(&self, samples: &[Sample]) -> Result<(), BackendError> {
        let from = samples.len().saturating_sub(crate::SAMPLES_KEPT);
        self.lock().samples = samples[from..].to_vec();
        Ok(())
    }
}

/// The bytes of the first dash-separated group of `code` with a `u` in it (see the module
/// comment).
fn fake_typo(code: &str) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for group in code.split('-') {
        if start > 0 && group.contains('u') {
            return Some(start..start + group.len());
        }
        start += group.len() + 1;
    }
    None
}
