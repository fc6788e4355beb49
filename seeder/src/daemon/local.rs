/*!
What the sync state machine may ask of this node ([`crate::sync::Local`]): for a seeder
([`SeederLocal`]) from the store and the registry; for a member device ([`HomeLocal`]) from
its home, for the one space it syncs. The spaces held, their feeds with certificates and
complete heads, and whether a space may take more data.

Quotas: a space with a quota stops fetching once the bytes held reach it; every space stops
when the data disk's free room falls to [`StoreLimits::keep_free_percent`]. Serving never
stops. Answers are synchronous sled reads (in memory for a warm cache); the driver calls
these from its blocking pool.
*/

use crate::feed::FeedKey;
use crate::net::driver::Node;
use crate::net::NodeId;
use crate::space::{Address, DiscoveryKey, MembershipCert};
use crate::store::Store;
use crate::sync::Local;
use crate::wire::FeedOffer;

use super::registry::Registry;

/// Limits that apply to all spaces.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// Stop taking new data when less than this share of the data disk is free. Default 5:
    /// room for the index, logs and the file system's own needs.
    pub keep_free_percent: u8,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            keep_free_percent: 5,
        }
    }
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_room(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    let frsize = st.f_frsize;
    Ok((st.f_bavail * frsize, st.f_blocks * frsize))
}

/// The seeder's answers.
pub struct SeederLocal {
    pub store: Store,
    pub registry: Registry,
    pub limits: StoreLimits,
    /// Connections and arrivals, for the admin page.
    pub activity: std::sync::Arc<super::activity::Activity>,
}

impl SeederLocal {
    fn disk_ok(&self) -> bool {
        match disk_room(self.store.dir()) {
            Ok((free, total)) if total > 0 => {
                free.saturating_mul(100) / total > u64::from(self.limits.keep_free_percent)
            }
            // Unknown: don't stop on a failed statvfs, the append itself reports a full disk.
            _ => true,
        }
    }
}

impl Local for SeederLocal {
    fn space_for(&self, discovery: &DiscoveryKey) -> Option<Address> {
        let spaces = match self.registry.spaces() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading held spaces");
                return None;
            }
        };
        spaces
            .into_iter()
            .map(|s| s.address)
            .find(|a| a.discovery_key() == *discovery)
    }

    fn offers(&self, space: &Address) -> Vec<FeedOffer> {
        let certs = match self.registry.members(space) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(%space, error = %e, "reading members");
                return Vec::new();
            }
        };
        certs
            .into_iter()
            .map(|cert| {
                let head = self
                    .store
                    .feed(&cert.feed)
                    .ok()
                    .flatten()
                    .and_then(|s| s.head);
                FeedOffer { cert, head }
            })
            .collect()
    }

    fn stored(&self, feed: &FeedKey) -> (u64, bool) {
        match self.store.feed(feed) {
            Ok(Some(s)) => (s.length, s.frozen),
            _ => (0, false),
        }
    }

    fn feed_count(&self, space: &Address) -> usize {
        self.registry.members(space).map_or(0, |m| m.len())
    }

    fn accepts(&self, space: &Address) -> bool {
        let quota_ok = match self.registry.space(space) {
            Ok(Some(held)) => {
                let own = match held.quota {
                    Some(q) => self.registry.bytes_held(space).map_or(true, |b| b < q),
                    None => true,
                };
                own && self.registry.agreements_allow(&held.name).unwrap_or(true)
            }
            _ => false,
        };
        quota_ok && self.disk_ok()
    }
}

/// A member device's answers, for one of its spaces.
pub struct HomeLocal {
    pub home: std::sync::Arc<crate::fs::home::Home>,
    pub space: Address,
    /// Told about transfers as they happen (progress bars), if set.
    pub observer: Option<std::sync::Arc<dyn SyncObserver>>,
}

/// What a person watching a member's sync wants to see, per feed.
pub trait SyncObserver: Send + Sync {
    /// A peer offers `offered` entries of `feed`; `have` are here.
    fn fetching(&self, feed: FeedKey, have: u64, offered: u64);
    /// `feed` now holds `length` entries here.
    fn received(&self, feed: FeedKey, length: u64);
    /// `peer` acknowledged storing `length` entries of `feed`.
    fn stored(&self, peer: NodeId, feed: FeedKey, length: u64);
}

impl Local for HomeLocal {
    fn space_for(&self, discovery: &DiscoveryKey) -> Option<Address> {
        (self.space.discovery_key() == *discovery).then_some(self.space)
    }

    fn offers(&self, space: &Address) -> Vec<FeedOffer> {
        if *space != self.space {
            return Vec::new();
        }
        let certs = match self.home.members(space) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reading members");
                return Vec::new();
            }
        };
        let store = self.home.store();
        certs
            .into_iter()
            .map(|cert| {
                let head = store.feed(&cert.feed).ok().flatten().and_then(|s| s.head);
                FeedOffer { cert, head }
            })
            .collect()
    }

    fn stored(&self, feed: &FeedKey) -> (u64, bool) {
        match self.home.store().feed(feed) {
            Ok(Some(s)) => (s.length, s.frozen),
            _ => (0, false),
        }
    }

    fn feed_count(&self, space: &Address) -> usize {
        self.home.members(space).map_or(0, |m| m.len())
    }

    fn accepts(&self, space: &Address) -> bool {
        // A member takes all of its own space; a full disk shows up as a failed append.
        *space == self.space
    }
}

impl Node for SeederLocal {
    fn store(&self) -> &Store {
        &self.store
    }

    fn add_feed(&self, space: &Address, cert: &MembershipCert) -> Result<(), String> {
        if cert.address != *space {
            return Err(format!("certificate is for space {}", cert.address));
        }
        match self.registry.space(space) {
            Ok(Some(_)) => self.registry.add_member(cert).map_err(|e| e.to_string()),
            Ok(None) => Err(format!("space {space} is not held here")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn member(&self, space: &Address, feed: &FeedKey) -> Option<MembershipCert> {
        self.registry.member(space, feed).ok().flatten()
    }

    fn appended(&self, space: &Address, _feed: FeedKey, _length: u64) {
        self.activity.appended(space);
    }

    fn connected(&self, id: u64, conn: &crate::net::Connection) {
        self.activity.connected(id, conn);
    }

    fn space_opened(&self, id: u64, space: &Address) {
        self.activity.space_opened(id, space);
    }

    fn disconnected(&self, id: u64) {
        self.activity.disconnected(id);
    }
}

impl Node for HomeLocal {
    fn store(&self) -> &Store {
        self.home.store()
    }

    fn add_feed(&self, space: &Address, cert: &MembershipCert) -> Result<(), String> {
        if *space != self.space {
            return Err(format!("space {space} is not the one being synced"));
        }
        self.home.add_member(space, cert).map_err(|e| e.to_string())
    }

    fn member(&self, space: &Address, feed: &FeedKey) -> Option<MembershipCert> {
        self.home.member(space, feed).ok().flatten()
    }

    fn acked(&self, peer: NodeId, space: &Address, feed: FeedKey, length: u64) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ack = crate::fs::home::Ack {
            peer: peer.0,
            feed,
            length,
            at,
        };
        if let Err(e) = self.home.record_ack(space, &ack) {
            tracing::warn!(error = %e, "cannot record an acknowledgement");
        }
        if let Some(o) = &self.observer {
            o.stored(peer, feed, length);
        }
    }

    fn appended(&self, _space: &Address, feed: FeedKey, length: u64) {
        if let Some(o) = &self.observer {
            o.received(feed, length);
        }
    }

    fn fetching(&self, _space: &Address, feed: FeedKey, have: u64, offered: u64) {
        if let Some(o) = &self.observer {
            o.fetching(feed, have, offered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{MembershipCert, SeedCode, SpaceSecret};
    use crate::store::StoreConfig;

    #[test]
    fn quota_stops_fetching_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let registry = Registry::open(&store).unwrap();
        let secret = SpaceSecret::from_bytes([1; 32]);
        let address = secret.address();
        registry
            .add_space(&SeedCode::new(address), Some("office"), Some(1500), 0)
            .unwrap();
        let local = SeederLocal {
            store: store.clone(),
            registry: registry.clone(),
            limits: StoreLimits::default(),
            activity: Default::default(),
        };
        assert!(local.accepts(&address));
        assert_eq!(local.space_for(&address.discovery_key()), Some(address));
        let other = SpaceSecret::from_bytes([2; 32]).address();
        assert_eq!(local.space_for(&other.discovery_key()), None);
        assert!(!local.accepts(&other), "a space not held takes nothing");
        let sk = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let feed = FeedKey::from(&sk);
        registry
            .add_member(&MembershipCert::issue(&secret, feed))
            .unwrap();
        let mut f = crate::feed::Frontier::new();
        store
            .append(crate::feed::write_batch(&sk, &mut f, vec![vec![1; 1000]]).unwrap())
            .unwrap();
        assert!(local.accepts(&address), "1000 of 1500 bytes");
        store
            .append(crate::feed::write_batch(&sk, &mut f, vec![vec![1; 1000]]).unwrap())
            .unwrap();
        assert!(!local.accepts(&address), "2000 of 1500 bytes");
        let offers = local.offers(&address);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].head.as_ref().map(|h| h.length), Some(2));
        assert_eq!(local.stored(&feed), (2, false));
    }

    #[test]
    fn a_home_answers_for_its_one_space_only() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::fs::home::Home::open(dir.path()).unwrap();
        let mut rng = crate::fs::home::Rng::default();
        let address = home.create_space("office", &mut rng).unwrap();
        let home = std::sync::Arc::new(home);
        let local = HomeLocal {
            home: home.clone(),
            space: address,
            observer: None,
        };
        assert_eq!(local.space_for(&address.discovery_key()), Some(address));
        let other = SpaceSecret::from_bytes([2; 32]).address();
        assert_eq!(local.space_for(&other.discovery_key()), None);
        let offers = local.offers(&address);
        assert_eq!(offers.len(), 1, "its own feed");
        assert_eq!(
            offers[0].head.as_ref().map(|h| h.length),
            Some(1),
            "the device-name entry"
        );
        assert!(local.accepts(&address) && !local.accepts(&other));
        let ack = crate::fs::home::Ack {
            peer: [7; 32],
            feed: offers[0].cert.feed,
            length: 1,
            at: 100,
        };
        home.record_ack(&address, &ack).unwrap();
        home.record_ack(
            &address,
            &crate::fs::home::Ack {
                length: 0,
                ..ack.clone()
            },
        )
        .unwrap();
        assert_eq!(
            home.acks(&address).unwrap(),
            vec![ack],
            "acks never go down"
        );
    }

    #[test]
    fn disk_room_reads_the_file_system() {
        let (free, total) = disk_room(std::path::Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
    }
}
