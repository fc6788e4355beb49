/*!
The daemon's durable state beside the feeds: which spaces it holds (by address, with a local
name and a quota), which feeds belong to each (their membership certificates), the membership
records of governed spaces (and the [`Membership`] they make, kept in memory while they don't
change), and which partner seeders it dials. Kept in sled trees of the store's database, so it
survives restarts and is made durable by the same barrier ([`Store::commit`]) before any change
is reported.

Not here: feed data (the store), secrets (a seeder has none), anything about connections.
*/

use serde::{Deserialize, Serialize};

use super::totals::{SpaceTotals, Totals};
use crate::feed::FeedKey;
use crate::space::members::{RecordId, MAX_RECORDS};
use crate::space::{Address, Membership, MembershipCert, Record, SeedCode, VerifiedRecord};
use crate::store::{FeedSize, FeedWatcher, Store, StoreError, Table};

const TREE_SPACES: &str = "registry.spaces";
const TREE_MEMBERS: &str = "registry.members";
/// Membership records: address ‖ record id → record.
const TREE_RECORDS: &str = "registry.records";
const TREE_PEERS: &str = "registry.peers";
const TREE_AGREEMENTS: &str = "registry.agreements";
const TREE_ADMIN: &str = "registry.admin";
/// Key of the admin site's settings blob in [`TREE_ADMIN`].
const KEY_SITE: &[u8] = b"site";
const KEY_SAMPLES: &[u8] = b"graph-samples";
/// Bytes of one kept sample of the dashboard graph: time, bytes in, bytes out (u64 LE each).
const SAMPLE_BYTES: usize = 24;

/// Version of the records below; bumped on any change of their encoding.
const RECORD_VERSION: u8 = 1;

/// Longest local name of a held space, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("registry record {0} is corrupt")]
    Corrupt(String),
    #[error("this seeder already holds that space, as {0:?}")]
    AlreadyHeld(String),
    #[error("a space named {0:?} is already held")]
    NameTaken(String),
    #[error("no space named {0:?} is held here")]
    UnknownSpace(String),
    #[error("space name {0:?} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error(transparent)]
    Certificate(#[from] crate::space::SpaceError),
    #[error("no agreement {0}")]
    UnknownAgreement(u64),
    #[error("space {0} is not held here")]
    NotHeld(Address),
    #[error("space {0} is a space from before roles (its feeds are admitted by the space key): it takes no membership records")]
    NotGoverned(Address),
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A space this seeder holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSpace {
    pub address: Address,
    pub name: String,
    /// Bytes of entry data this space may hold here; `None`: only the global limit applies.
    pub quota: Option<u64>,
    /// When it was added, in seconds since the epoch (0 if the clock was unset).
    pub added: u64,
}

/// A partner seeder to dial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    /// `host:port`, as given; or several, comma-separated (from a peer code), dialed
    /// together.
    pub address: String,
    pub node_id: [u8; 32],
}

/// An organisation this seeder backs up, and on what terms. Its quota covers all its spaces
/// together and is enforced like a space's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgreementRecord {
    pub id: u64,
    pub organisation: String,
    pub contact: String,
    /// Local names of held spaces.
    pub spaces: Vec<String>,
    pub quota: Option<u64>,
    /// `YYYY-MM-DD` or empty.
    pub start: String,
    pub review: String,
    pub notes: String,
}

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    version: u8,
    value: T,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(&Versioned {
        version: RECORD_VERSION,
        value,
    })
    .expect("registry records always encode")
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    let (v, rest): (Versioned<T>, _) =
        postcard::take_from_bytes(bytes).map_err(|_| RegistryError::Corrupt(what.to_string()))?;
    if !rest.is_empty() || v.version != RECORD_VERSION {
        return Err(RegistryError::Corrupt(what.to_string()));
    }
    Ok(v.value)
}

fn record_key(space: &Address, id: &RecordId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&space.0);
    k[32..].copy_from_slice(&id.0);
    k
}

fn member_key(space: &Address, feed: &FeedKey) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&space.0);
    k[32..].copy_from_slice(&feed.0);
    k
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The daemon's registry. Cheap to clone; open one per store and clone it, since the totals it
/// keeps current see only the member changes made through it (and every feed change).
#[derive(Clone)]
pub struct Registry {
    store: Store,
    /// Each held space's sums (see [`super::totals`]).
    totals: std::sync::Arc<Totals>,
    spaces: Table,
    members: Table,
    records: Table,
    peers: Table,
    agreements: Table,
    admin: Table,
    /// Each held space's membership log as verified, read from [`TREE_RECORDS`] on first use
    /// and kept current by [`Registry::add_records`]: at most [`MAX_RECORDS`] records a space
    /// (a few hundred bytes each in an office's log).
    logs: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Address, Log>>>,
}

/// A space's membership records and what they make.
#[derive(Default)]
struct Log {
    records: Vec<VerifiedRecord>,
    ids: std::collections::HashSet<RecordId>,
    /// `None` while the space has no records (a space from before roles).
    membership: Option<std::sync::Arc<Membership>>,
}

impl Log {
    fn of(records: Vec<VerifiedRecord>) -> Log {
        let mut log = Log::default();
        log.extend(records);
        log
    }

    fn extend(&mut self, records: Vec<VerifiedRecord>) {
        for r in records {
            if self.ids.insert(r.id()) {
                self.records.push(r);
            }
        }
        self.membership = (!self.records.is_empty())
            .then(|| std::sync::Arc::new(Membership::compute(&self.records)));
    }
}

impl Registry {
    pub fn open(store: &Store) -> Result<Registry> {
        let registry = Registry {
            spaces: store.table(TREE_SPACES)?,
            members: store.table(TREE_MEMBERS)?,
            records: store.table(TREE_RECORDS)?,
            peers: store.table(TREE_PEERS)?,
            agreements: store.table(TREE_AGREEMENTS)?,
            admin: store.table(TREE_ADMIN)?,
            store: store.clone(),
            totals: Default::default(),
            logs: Default::default(),
        };
        // Watching first: a change during the rebuild is then applied after it, never lost.
        let watcher: std::sync::Arc<dyn FeedWatcher> = registry.totals.clone();
        store.watch(&watcher);
        registry.rebuild_totals()?;
        // Read (and verified) now rather than by the first connection that asks.
        for s in registry.spaces()? {
            registry.membership(&s.address)?;
        }
        Ok(registry)
    }

    /// Sum every held space's member feeds again, from the index.
    fn rebuild_totals(&self) -> Result<()> {
        let mut spaces = Vec::new();
        for s in self.spaces()? {
            let feeds = self.members(&s.address)?.into_iter().map(|c| c.feed);
            spaces.push((s.address, feeds.collect()));
        }
        self.totals.rebuild(spaces, |feed| self.feed_size(feed))
    }

    fn feed_size(&self, feed: &FeedKey) -> Result<FeedSize> {
        Ok(self
            .store
            .feed(feed)?
            .map_or(FeedSize::ABSENT, |f| f.size()))
    }

    /// What `space` holds, summed over its member feeds; `None` if it isn't held. Kept
    /// current as feeds change, so this costs one map lookup whatever the number of feeds.
    pub fn totals(&self, space: &Address) -> Option<SpaceTotals> {
        self.totals.space(space)
    }

    /// Hold the space of `code`. The name defaults to the address's short form.
    pub fn add_space(
        &self,
        code: &SeedCode,
        name: Option<&str>,
        quota: Option<u64>,
        now_secs: u64,
    ) -> Result<HeldSpace> {
        let address = code.address();
        let name = name.map_or_else(|| address.short(), str::to_string);
        if !valid_name(&name) {
            return Err(RegistryError::BadName(name));
        }
        for held in self.spaces()? {
            if held.address == address {
                return Err(RegistryError::AlreadyHeld(held.name));
            }
            if held.name == name {
                return Err(RegistryError::NameTaken(name));
            }
        }
        let held = HeldSpace {
            address,
            name,
            quota,
            added: now_secs,
        };
        self.spaces.insert(address.0, encode(&held))?;
        self.store.commit()?;
        // Members kept from an earlier time this space was held count again.
        self.rebuild_totals()?;
        Ok(held)
    }

    /// Every held space, by address.
    pub fn spaces(&self) -> Result<Vec<HeldSpace>> {
        let mut out = Vec::new();
        for item in self.spaces.iter() {
            let (k, v) = item?;
            out.push(decode(&format!("space {}", hex::encode(&k)), &v)?);
        }
        Ok(out)
    }

    /// The held space named `name`.
    pub fn space_named(&self, name: &str) -> Result<HeldSpace> {
        self.spaces()?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| RegistryError::UnknownSpace(name.to_string()))
    }

    /// The held space at `address`, if any.
    pub fn space(&self, address: &Address) -> Result<Option<HeldSpace>> {
        self.spaces
            .get(address.0)?
            .map(|v| decode(&format!("space {address}"), &v))
            .transpose()
    }

    /// Change a held space's quota.
    pub fn set_quota(&self, name: &str, quota: Option<u64>) -> Result<HeldSpace> {
        let mut held = self.space_named(name)?;
        held.quota = quota;
        self.spaces.insert(held.address.0, encode(&held))?;
        self.store.commit()?;
        Ok(held)
    }

    /// Stop holding a space. With `purge`, its feeds and membership records are deleted from
    /// the disk too (space really freed); without, they stay (and are taken up again if the
    /// space is re-added: the records are what says how far each kept feed counts). Returns
    /// the feeds purged.
    pub fn remove_space(&self, name: &str, purge: bool) -> Result<usize> {
        let held = self.space_named(name)?;
        self.spaces.remove(held.address.0)?;
        self.store.commit()?;
        self.totals.remove_space(&held.address);
        self.lock_logs().remove(&held.address);
        let mut purged = 0;
        if purge {
            for cert in self.members(&held.address)? {
                self.store.delete_feed(&cert.feed)?;
                self.members.remove(member_key(&held.address, &cert.feed))?;
                purged += 1;
            }
            let keys: Vec<Vec<u8>> = self
                .records
                .scan_prefix(held.address.0)
                .map(|item| item.map(|(k, _)| k))
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                self.records.remove(k)?;
            }
            self.store.commit()?;
        }
        Ok(purged)
    }

    fn lock_logs(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Address, Log>> {
        self.logs
            .lock()
            .expect("membership logs poisoned: a thread panicked while holding them")
    }

    /// The membership records of `space` read from disk, each verified again (only
    /// [`Record::verify`] makes the proof [`Membership::compute`] takes).
    fn read_records(&self, space: &Address) -> Result<Vec<VerifiedRecord>> {
        let mut out = Vec::new();
        for item in self.records.scan_prefix(space.0) {
            let (k, v) = item?;
            let what = format!("membership record {}", hex::encode(&k));
            let record: Record = decode(&what, &v)?;
            out.push(
                record
                    .verify(space)
                    .map_err(|_| RegistryError::Corrupt(what))?,
            );
        }
        Ok(out)
    }

    /// The membership of the held space at `space`, if it has records (a governed space);
    /// `None` for a space from before roles, or one not held. Computed once and kept until
    /// records change.
    pub fn membership(&self, space: &Address) -> Result<Option<std::sync::Arc<Membership>>> {
        if let Some(log) = self.lock_logs().get(space) {
            return Ok(log.membership.clone());
        }
        if self.space(space)?.is_none() {
            return Ok(None);
        }
        let log = Log::of(self.read_records(space)?);
        let m = log.membership.clone();
        // Another thread may have read it meanwhile, or added records: keep the fuller one.
        let mut logs = self.lock_logs();
        let kept = logs.entry(*space).or_default();
        if kept.records.len() < log.records.len() {
            *kept = log;
            return Ok(m);
        }
        Ok(kept.membership.clone())
    }

    /// The membership records of `space` held here.
    pub fn records(&self, space: &Address) -> Result<Vec<Record>> {
        self.membership(space)?;
        Ok(self.lock_logs().get(space).map_or_else(Vec::new, |log| {
            log.records.iter().map(|r| r.record().clone()).collect()
        }))
    }

    /// Keep membership records of the held space `space`, durably before this returns, and
    /// compute its membership again. Returns those new here; beyond [`MAX_RECORDS`] a space
    /// takes no more (logged).
    pub fn add_records(
        &self,
        space: &Address,
        records: Vec<VerifiedRecord>,
    ) -> Result<Vec<VerifiedRecord>> {
        if self.space(space)?.is_none() {
            return Err(RegistryError::NotHeld(*space));
        }
        let log = self.membership(space)?;
        // Every member of a space from before roles holds its secret and could sign a genesis
        // that would shut the others out: a space whose feeds came in with the space key's
        // certificates never takes a membership log.
        if log.is_none() && self.members(space)?.iter().any(|c| !c.is_own()) {
            return Err(RegistryError::NotGoverned(*space));
        }
        // Which are new, decided under the lock; written without it (a write waits for the
        // disk, and sessions ask for the membership meanwhile).
        let new: Vec<VerifiedRecord> = {
            let logs = self.lock_logs();
            let held_records: &[VerifiedRecord] = logs.get(space).map_or(&[], |l| &l.records);
            let held = held_records.len();
            // Only records of the space's own devices (and a few waiting for their parents):
            // a stranger who knows the address can't fill the log.
            let records = crate::space::members::worth_keeping(space, held_records, records);
            let mut new = Vec::new();
            for r in records {
                if held + new.len() >= MAX_RECORDS {
                    tracing::warn!(%space, "the space holds {MAX_RECORDS} membership records: no more are taken");
                    break;
                }
                new.push(r);
            }
            new
        };
        if new.is_empty() {
            return Ok(new);
        }
        let mut batch = crate::store::TableBatch::default();
        for r in &new {
            batch.insert(record_key(space, &r.id()), encode(r.record()));
        }
        self.records.apply(batch)?;
        // Durable before the peer is told they are taken.
        self.store.commit()?;
        self.lock_logs()
            .entry(*space)
            .or_default()
            .extend(new.clone());
        Ok(new)
    }

    /// Take a member feed into a held space: its certificate must verify for the space (in a
    /// governed space: the device's own signature, and the membership log must admit it).
    pub fn add_member(&self, cert: &MembershipCert) -> Result<()> {
        let membership = self.membership(&cert.address)?;
        let member = cert
            .clone()
            .verify_in(&cert.address, membership.as_deref())?;
        self.members.insert(
            member_key(&member.address(), &member.feed()),
            encode(member.cert()),
        )?;
        self.store.create_feed(member.feed())?;
        // Durable before the feed's first entry is acknowledged: a held feed without its
        // certificate would not be served after a power cut.
        self.store.commit()?;
        self.totals
            .add_member(member.address(), member.feed(), |f| self.feed_size(f))?;
        Ok(())
    }

    /// The certificate of `feed` in `space`, if it is a member.
    pub fn member(&self, space: &Address, feed: &FeedKey) -> Result<Option<MembershipCert>> {
        self.members
            .get(member_key(space, feed))?
            .map(|v| decode(&format!("member {feed}"), &v))
            .transpose()
    }

    /// The member certificates of `space`.
    pub fn members(&self, space: &Address) -> Result<Vec<MembershipCert>> {
        let mut out = Vec::new();
        for item in self.members.scan_prefix(space.0) {
            let (k, v) = item?;
            out.push(decode(&format!("member {}", hex::encode(&k)), &v)?);
        }
        Ok(out)
    }

    /// Bytes of entry data held of `space`.
    pub fn bytes_held(&self, space: &Address) -> Result<u64> {
        Ok(self.totals(space).map_or(0, |t| t.bytes))
    }

    /// Dial this partner seeder.
    pub fn add_partner(&self, partner: &Partner) -> Result<()> {
        self.peers.insert(partner.node_id, encode(partner))?;
        self.store.commit()?;
        Ok(())
    }

    /// A partner was just reached at `addr`: it goes first among its addresses (at most
    /// [`MAX_CODE_ADDRS`](crate::net::reach::MAX_CODE_ADDRS), the oldest dropped), so the
    /// next dial tries where it was last found. A partner removed meanwhile stays removed.
    pub fn partner_reached_at(
        &self,
        node_id: &[u8; 32],
        addr: std::net::SocketAddr,
    ) -> Result<bool> {
        let changed = self.peers.update_existing(node_id, |old| {
            let mut p: Partner = decode("partner", old).ok()?;
            let here = addr.to_string();
            let mut addrs: Vec<&str> = p
                .address
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect();
            if addrs.first() == Some(&here.as_str()) {
                return None;
            }
            addrs.retain(|a| *a != here);
            addrs.insert(0, &here);
            addrs.truncate(crate::net::reach::MAX_CODE_ADDRS);
            p.address = addrs.join(",");
            Some(encode(&p))
        })?;
        if changed {
            self.store.commit()?;
        }
        Ok(changed)
    }

    /// Whether `node_id` is a partner seeder the admin added.
    pub fn is_partner(&self, node_id: &[u8; 32]) -> Result<bool> {
        Ok(self.peers.contains_key(node_id)?)
    }

    pub fn remove_partner(&self, node_id: &[u8; 32]) -> Result<bool> {
        let had = self.peers.remove(node_id)?;
        self.store.commit()?;
        Ok(had)
    }

    pub fn partners(&self) -> Result<Vec<Partner>> {
        let mut out = Vec::new();
        for item in self.peers.iter() {
            let (k, v) = item?;
            out.push(decode(&format!("partner {}", hex::encode(&k)), &v)?);
        }
        Ok(out)
    }

    pub fn agreements(&self) -> Result<Vec<AgreementRecord>> {
        let mut out = Vec::new();
        for item in self.agreements.iter() {
            let (k, v) = item?;
            out.push(decode(&format!("agreement {}", hex::encode(&k)), &v)?);
        }
        Ok(out)
    }

    /// Store an agreement; `id == 0` makes a new one. Every named space must be held.
    pub fn save_agreement(&self, mut a: AgreementRecord) -> Result<AgreementRecord> {
        for name in &a.spaces {
            self.space_named(name)?;
        }
        if a.id == 0 {
            let last = self
                .agreements
                .last()?
                .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_slice()).ok())
                .map_or(0, u64::from_be_bytes);
            a.id = last + 1;
        } else if !self.agreements.contains_key(a.id.to_be_bytes())? {
            return Err(RegistryError::UnknownAgreement(a.id));
        }
        self.agreements.insert(a.id.to_be_bytes(), encode(&a))?;
        self.store.commit()?;
        Ok(a)
    }

    pub fn remove_agreement(&self, id: u64) -> Result<()> {
        if !self.agreements.remove(id.to_be_bytes())? {
            return Err(RegistryError::UnknownAgreement(id));
        }
        self.store.commit()?;
        Ok(())
    }

    /// Bytes the spaces of an agreement hold together.
    pub fn agreement_use(&self, a: &AgreementRecord) -> Result<u64> {
        let mut total = 0;
        for name in &a.spaces {
            if let Ok(s) = self.space_named(name) {
                total += self.bytes_held(&s.address)?;
            }
        }
        Ok(total)
    }

    /// Whether every agreement covering the space named `name` has room for `bytes` more;
    /// if not, the first that hasn't.
    pub fn agreement_room(
        &self,
        name: &str,
        bytes: u64,
    ) -> Result<Result<(), crate::wire::Refusal>> {
        for a in self.agreements()? {
            if let Some(limit) = a.quota {
                if a.spaces.iter().any(|s| s == name)
                    && self.agreement_use(&a)?.saturating_add(bytes) > limit
                {
                    return Ok(Err(crate::wire::Refusal::AgreementQuota {
                        organisation: a.organisation.chars().take(128).collect(),
                        limit,
                    }));
                }
            }
        }
        Ok(Ok(()))
    }

    /// The admin site's settings (an opaque blob).
    pub fn site_settings(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.admin.get(KEY_SITE)?)
    }

    pub fn set_site_settings(&self, blob: &[u8]) -> Result<()> {
        self.admin.insert(KEY_SITE, blob)?;
        self.store.commit()?;
        Ok(())
    }

    /// The dashboard graph's kept samples, oldest first: at most [`web_admin::SAMPLES_KEPT`]
    /// (a longer record, which this build never writes, is cut to its newest).
    pub fn graph_samples(&self) -> Result<Vec<web_admin::Sample>> {
        let Some(blob) = self.admin.get(KEY_SAMPLES)? else {
            return Ok(Vec::new());
        };
        if blob.len() % SAMPLE_BYTES != 0 {
            return Err(RegistryError::Corrupt("graph-samples".into()));
        }
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8-byte slice"));
        let all: Vec<web_admin::Sample> = blob
            .chunks_exact(SAMPLE_BYTES)
            .map(|c| web_admin::Sample {
                at: word(&c[..8]),
                bytes_received: word(&c[8..16]),
                bytes_sent: word(&c[16..]),
            })
            .collect();
        let from = all.len().saturating_sub(web_admin::SAMPLES_KEPT);
        Ok(all[from..].to_vec())
    }

    /// Keep the newest [`web_admin::SAMPLES_KEPT`] of `samples` in place of those kept before:
    /// under 3 KiB, written every couple of minutes by the admin site (see
    /// [`web_admin::SAVE_EVERY_SAMPLES`]), so the record never grows and the disk sees little.
    pub fn set_graph_samples(&self, samples: &[web_admin::Sample]) -> Result<()> {
        let from = samples.len().saturating_sub(web_admin::SAMPLES_KEPT);
        let mut blob = Vec::with_capacity((samples.len() - from) * SAMPLE_BYTES);
        for s in &samples[from..] {
            blob.extend_from_slice(&s.at.to_le_bytes());
            blob.extend_from_slice(&s.bytes_received.to_le_bytes());
            blob.extend_from_slice(&s.bytes_sent.to_le_bytes());
        }
        self.admin.insert(KEY_SAMPLES, &blob)?;
        // Durable like every registry change: the graph then survives a power cut too.
        self.store.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SpaceSecret;
    use crate::store::StoreConfig;

    fn code(n: u8) -> SeedCode {
        SeedCode::new(SpaceSecret::from_bytes([n; 32]).address())
    }

    #[test]
    fn the_graph_samples_persist_across_reopen_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let sample = |i: u64| web_admin::Sample {
            at: 1_000 + i * 30,
            bytes_received: i * 100,
            bytes_sent: i,
        };
        {
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            let r = Registry::open(&store).unwrap();
            assert!(
                r.graph_samples().unwrap().is_empty(),
                "none on a first start"
            );
            let many: Vec<_> = (0..web_admin::SAMPLES_KEPT as u64 + 50)
                .map(sample)
                .collect();
            r.set_graph_samples(&many).unwrap();
        }
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        let kept = r.graph_samples().unwrap();
        assert_eq!(
            kept.len(),
            web_admin::SAMPLES_KEPT,
            "only the newest are kept"
        );
        assert_eq!(kept[0], sample(50));
        assert_eq!(
            *kept.last().unwrap(),
            sample(web_admin::SAMPLES_KEPT as u64 + 49)
        );
        r.set_graph_samples(&[sample(1)]).unwrap();
        assert_eq!(
            r.graph_samples().unwrap(),
            vec![sample(1)],
            "replaced, not added to"
        );
    }

    #[test]
    fn a_partner_is_dialed_first_where_it_was_last_reached_and_a_removed_one_stays_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        r.add_partner(&Partner {
            address: "10.0.0.1:7428,192.0.2.1:7428".into(),
            node_id: [7; 32],
        })
        .unwrap();
        let at = |a: &str| r.partner_reached_at(&[7; 32], a.parse().unwrap()).unwrap();
        let now = || r.partners().unwrap()[0].address.clone();
        assert!(at("192.0.2.1:7428"));
        assert_eq!(now(), "192.0.2.1:7428,10.0.0.1:7428");
        assert!(!at("192.0.2.1:7428"), "already first: nothing written");
        for i in 0..10 {
            at(&format!("198.51.100.{i}:7428"));
        }
        let kept = now();
        assert_eq!(kept.split(',').count(), crate::net::reach::MAX_CODE_ADDRS);
        assert!(
            kept.starts_with("198.51.100.9:7428,198.51.100.8:7428"),
            "{kept}"
        );
        r.remove_partner(&[7; 32]).unwrap();
        assert!(!at("192.0.2.9:7428"));
        assert!(r.partners().unwrap().is_empty());
    }

    #[test]
    fn held_spaces_and_partners_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            let r = Registry::open(&store).unwrap();
            r.add_space(&code(1), Some("office"), Some(1 << 30), 5)
                .unwrap();
            r.add_space(&code(2), None, None, 6).unwrap();
            r.add_partner(&Partner {
                address: "192.0.2.1:7428".into(),
                node_id: [7; 32],
            })
            .unwrap();
        }
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        let spaces = r.spaces().unwrap();
        assert_eq!(spaces.len(), 2);
        let office = r.space_named("office").unwrap();
        assert_eq!(office.quota, Some(1 << 30));
        assert_eq!(office.address, code(1).address());
        assert_eq!(r.partners().unwrap().len(), 1);
    }

    #[test]
    fn a_space_is_held_once_under_one_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        r.add_space(&code(1), Some("office"), None, 0).unwrap();
        assert!(matches!(
            r.add_space(&code(1), Some("other"), None, 0),
            Err(RegistryError::AlreadyHeld(n)) if n == "office"
        ));
        assert!(matches!(
            r.add_space(&code(2), Some("office"), None, 0),
            Err(RegistryError::NameTaken(_))
        ));
        assert!(matches!(
            r.add_space(&code(2), Some("../x"), None, 0),
            Err(RegistryError::BadName(_))
        ));
    }

    #[test]
    fn purge_frees_the_feeds_and_plain_remove_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        let secret = SpaceSecret::from_bytes([1; 32]);
        r.add_space(&code(1), Some("office"), None, 0).unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let feed = FeedKey::from(&sk);
        r.add_member(&MembershipCert::issue(&secret, feed)).unwrap();
        let mut f = crate::feed::Frontier::new();
        store
            .append(crate::feed::write_batch(&sk, &mut f, vec![vec![1; 1000]]).unwrap())
            .unwrap();
        assert_eq!(r.bytes_held(&secret.address()).unwrap(), 1000);
        r.remove_space("office", false).unwrap();
        assert!(store.feed(&feed).unwrap().is_some(), "kept without purge");
        r.add_space(&code(1), Some("office"), None, 0).unwrap();
        assert_eq!(r.remove_space("office", true).unwrap(), 1);
        assert!(store.feed(&feed).unwrap().is_none(), "purged");
        assert!(r.members(&secret.address()).unwrap().is_empty());
    }

    /// The totals the slow way: every member feed of `space` read from the store.
    fn walked(r: &Registry, store: &Store, space: &Address) -> SpaceTotals {
        let mut t = SpaceTotals::default();
        for cert in r.members(space).unwrap() {
            t.feeds += 1;
            if let Some(f) = store.feed(&cert.feed).unwrap() {
                t.entries += f.length;
                t.bytes += f.bytes;
                t.incomplete += u64::from(!f.size().complete);
            }
        }
        t
    }

    #[test]
    fn space_totals_stay_exact_across_appends_restart_and_space_removal() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            SpaceSecret::from_bytes([1; 32]),
            SpaceSecret::from_bytes([2; 32]),
        );
        // Feeds 10..13 in space a, 20..22 in space b.
        let keys: Vec<(SpaceSecret, ed25519_dalek::SigningKey)> = (10..13u8)
            .map(|n| {
                (
                    SpaceSecret::from_bytes([1; 32]),
                    ed25519_dalek::SigningKey::from_bytes(&[n; 32]),
                )
            })
            .chain((20..22u8).map(|n| {
                (
                    SpaceSecret::from_bytes([2; 32]),
                    ed25519_dalek::SigningKey::from_bytes(&[n; 32]),
                )
            }))
            .collect();
        let append = |store: &Store, sk: &ed25519_dalek::SigningKey, sizes: &[usize]| {
            let feed = FeedKey::from(sk);
            let mut f = crate::feed::Frontier::load(
                store.feed(&feed).unwrap().map_or(0, |s| s.length),
                |id| store.node(&feed, id),
            )
            .unwrap();
            let entries: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![7; n]).collect();
            store
                .append(crate::feed::write_batch(sk, &mut f, entries).unwrap())
                .unwrap();
        };
        let before_restart = {
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            let r = Registry::open(&store).unwrap();
            r.add_space(&code(1), Some("a"), None, 0).unwrap();
            r.add_space(&code(2), Some("b"), None, 0).unwrap();
            assert_eq!(r.totals(&a.address()), Some(SpaceTotals::default()));
            for (secret, sk) in &keys {
                r.add_member(&MembershipCert::issue(secret, FeedKey::from(sk)))
                    .unwrap();
            }
            // Taken in twice: counted once.
            r.add_member(&MembershipCert::issue(&a, FeedKey::from(&keys[0].1)))
                .unwrap();
            // Appends from several threads at once, as several peers' transfers do.
            std::thread::scope(|scope| {
                for (i, (_, sk)) in keys.iter().enumerate() {
                    let store = &store;
                    scope.spawn(move || {
                        for round in 0..5 {
                            append(store, sk, &[100 * (i + 1), round + 1]);
                        }
                    });
                }
            });
            let ta = r.totals(&a.address()).unwrap();
            assert_eq!(
                ta,
                SpaceTotals {
                    feeds: 3,
                    entries: 30,
                    bytes: 5 * (100 + 200 + 300) + 3 * 15,
                    incomplete: 0
                }
            );
            assert_eq!(ta, walked(&r, &store, &a.address()));
            assert_eq!(
                r.totals(&b.address()).unwrap(),
                walked(&r, &store, &b.address())
            );
            assert_eq!(r.bytes_held(&a.address()).unwrap(), ta.bytes);
            (ta, r.totals(&b.address()).unwrap())
        };

        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        assert_eq!(
            r.totals(&a.address()),
            Some(before_restart.0),
            "rebuilt at open"
        );
        assert_eq!(r.totals(&b.address()), Some(before_restart.1));
        append(&store, &keys[0].1, &[1000]);
        let mut ta = before_restart.0;
        ta.entries += 1;
        ta.bytes += 1000;
        assert_eq!(r.totals(&a.address()), Some(ta));

        // Removed, b counts no more; its feeds change a's totals in nothing.
        r.remove_space("b", false).unwrap();
        assert_eq!(r.totals(&b.address()), None);
        append(&store, &keys[3].1, &[50]);
        assert_eq!(r.totals(&a.address()), Some(ta));
        // Added back, with what its kept feeds took meanwhile.
        r.add_space(&code(2), Some("b"), None, 0).unwrap();
        let tb = r.totals(&b.address()).unwrap();
        assert_eq!(tb.entries, before_restart.1.entries + 1);
        assert_eq!(tb, walked(&r, &store, &b.address()));

        // Purged, a's feeds are deleted; b is untouched.
        r.remove_space("a", true).unwrap();
        assert_eq!(r.totals(&a.address()), None);
        assert_eq!(r.totals(&b.address()), Some(tb));
        drop(r);
        let r = Registry::open(&store).unwrap();
        assert_eq!(r.totals(&a.address()), None);
        assert_eq!(r.totals(&b.address()), Some(tb));
    }

    /// A governed space's log: genesis (owner device `[10; 32]`), a writer `[11; 32]` invited
    /// and joined.
    fn governed_log() -> (Address, Vec<VerifiedRecord>) {
        use crate::space::members::{self, Change, InviteKeys, KeyId, MemberRole};
        use ed25519_dalek::Signer;
        let secret = SpaceSecret::from_bytes([5; 32]);
        let address = secret.address();
        let owner = ed25519_dalek::SigningKey::from_bytes(&[10; 32]);
        let genesis = members::genesis(&secret, members::device_of(&owner))
            .verify(&address)
            .unwrap();
        let ik = InviteKeys::from_secret(&[1; 32]);
        let invite = Record::sign(
            &owner,
            address,
            vec![genesis.id()],
            Change::Invite {
                invite: ik.public(),
                invite_box: ik.box_public(),
                role: MemberRole::Writer,
                key: KeyId([0; 8]),
                sealed: vec![0; members::SEALED_KEY_LEN],
                label: Vec::new(),
            },
        )
        .verify(&address)
        .unwrap();
        let device = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
        let dev = members::device_of(&device);
        let join = Record::sign(
            &ik.signing,
            address,
            vec![invite.id()],
            Change::Join {
                invite: ik.public(),
                device: dev,
                device_signature: device
                    .sign(&members::join_bytes(&address, &ik.public(), &dev))
                    .to_bytes(),
            },
        )
        .verify(&address)
        .unwrap();
        (address, vec![genesis, invite, join])
    }

    #[test]
    fn membership_records_are_kept_once_survive_a_restart_and_go_with_a_purge() {
        let dir = tempfile::tempdir().unwrap();
        let (address, log) = governed_log();
        let code = SeedCode::new(address);
        {
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            let r = Registry::open(&store).unwrap();
            assert!(
                r.add_records(&address, log.clone()).is_err(),
                "not held: not kept"
            );
            r.add_space(&code, Some("office"), None, 0).unwrap();
            assert_eq!(r.membership(&address).unwrap(), None, "no records yet");
            let new = r.add_records(&address, log[..2].to_vec()).unwrap();
            assert_eq!(new.len(), 2);
            let m = r.membership(&address).unwrap().unwrap();
            assert_eq!((m.active().count(), m.epoch()), (1, 0));
            let new = r.add_records(&address, log.clone()).unwrap();
            assert_eq!(new, vec![log[2].clone()], "only the one new here");
            assert_eq!(r.membership(&address).unwrap().unwrap().active().count(), 2);
        }
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        assert_eq!(
            r.records(&address).unwrap().len(),
            3,
            "kept across a restart"
        );
        let m = r.membership(&address).unwrap().unwrap();
        assert_eq!(m.active().count(), 2);
        // Removed and held again: the records come back with the feeds they admit.
        r.remove_space("office", false).unwrap();
        assert_eq!(r.membership(&address).unwrap(), None, "not held");
        r.add_space(&code, Some("office"), None, 0).unwrap();
        assert_eq!(r.records(&address).unwrap().len(), 3);
        // Purged: gone from the disk.
        r.remove_space("office", true).unwrap();
        r.add_space(&code, Some("office"), None, 0).unwrap();
        assert!(r.records(&address).unwrap().is_empty());
        assert_eq!(r.membership(&address).unwrap(), None);
    }

    #[test]
    fn a_governed_spaces_feed_is_taken_only_with_its_own_signature_once_the_log_admits_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        let (address, log) = governed_log();
        r.add_space(&SeedCode::new(address), None, None, 0).unwrap();
        let device = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
        let cert = MembershipCert::own(&device, address);
        r.add_records(&address, log[..2].to_vec()).unwrap();
        assert!(r.add_member(&cert).is_err(), "invited, not yet joined");
        r.add_records(&address, log.clone()).unwrap();
        r.add_member(&cert).unwrap();
        assert_eq!(r.member(&address, &cert.feed).unwrap(), Some(cert));
    }

    #[test]
    fn a_space_from_before_roles_takes_no_membership_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        // Its secret is every member's: any of them could sign a genesis for it.
        let secret = SpaceSecret::from_bytes([5; 32]);
        let (address, log) = governed_log();
        assert_eq!(secret.address(), address);
        r.add_space(&SeedCode::new(address), None, None, 0).unwrap();
        r.add_member(&MembershipCert::issue(&secret, FeedKey([9; 32])))
            .unwrap();
        assert!(matches!(
            r.add_records(&address, log),
            Err(RegistryError::NotGoverned(_))
        ));
        assert_eq!(r.membership(&address).unwrap(), None);
    }

    #[test]
    fn a_certificate_of_another_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let r = Registry::open(&store).unwrap();
        let secret = SpaceSecret::from_bytes([1; 32]);
        let mut cert = MembershipCert::issue(&secret, FeedKey([9; 32]));
        cert.address = SpaceSecret::from_bytes([2; 32]).address();
        assert!(r.add_member(&cert).is_err());
    }
}
