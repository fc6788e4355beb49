/*!
Scheduled scrubs: every held feed is read back and each entry checked against its stored hash,
one feed at a time, once a day, so bit rot on the data disk is found while partners still
hold good copies. Damage is recorded by the store and shown on the admin page; a space whose
every feed passed gets a "last verified" time there.

Gentle on a small board: it runs on the blocking pool, one feed at a time, and rests as long
after each feed as the feed took (at most half the disk's attention). Replication is never
paused for it.

Not for: repairing damage (that needs fetching the entry again from a peer).
*/

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::activity::Activity;
use super::registry::Registry;
use crate::store::Store;

/// Time between the starts of two full passes.
pub const SCRUB_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// Wait after the daemon starts before the first pass (let a restart settle first).
pub const FIRST_SCRUB_AFTER: Duration = Duration::from_secs(60);

/// Read back every entry of `feed`; the damage found (the store records it too). `None` when
/// `stop` was set before the end.
fn scrub_feed(
    store: &Store,
    feed: &crate::feed::FeedKey,
    stop: &AtomicBool,
) -> Result<Option<Vec<crate::store::Damage>>, crate::store::StoreError> {
    let mut found = Vec::new();
    let mut reader = store.reader(feed)?;
    for index in 0..reader.len() {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match reader.read(index) {
            Ok(_) => {}
            Err(crate::store::StoreError::Integrity { .. }) => found.push(crate::store::Damage {
                feed: *feed,
                kind: crate::store::DamageKind::BadEntry { index },
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(found))
}

/// Scrub every held space's feeds once; returns the number of findings: damaged entries, and
/// feeds that could not be read at all (a missing data file, an unreadable index record).
/// Each is logged and, where the store can tell which entry or file, recorded as damage for
/// the admin page. Ends early when `stop` is set (the daemon is shutting down).
pub fn pass(
    store: &Store,
    registry: &Registry,
    activity: &Activity,
    rest: bool,
    stop: &AtomicBool,
) -> usize {
    let mut damaged = 0;
    for space in registry.spaces().unwrap_or_default() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let members = match registry.members(&space.address) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(space = %space.name, error = %e, "cannot list feeds to scrub");
                continue;
            }
        };
        let mut clean = true;
        for m in members {
            let started = std::time::Instant::now();
            match scrub_feed(store, &m.feed, stop) {
                Ok(None) => clean = false,
                Ok(Some(found)) if found.is_empty() => {}
                Ok(Some(found)) => {
                    clean = false;
                    damaged += found.len();
                    for d in &found {
                        tracing::error!(space = %space.name, damage = %d, "scrub found damage");
                    }
                }
                Err(e) => {
                    // Not a clean pass, and a finding like any damaged entry.
                    clean = false;
                    damaged += 1;
                    tracing::error!(space = %space.name, feed = %m.feed, error = %e, "scrub could not read a feed");
                }
            }
            if rest {
                // Rest as long as the feed took, in steps, so a shutdown isn't held up.
                let until = std::time::Instant::now() + started.elapsed();
                while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(
                        Duration::from_millis(100).min(until - std::time::Instant::now()),
                    );
                }
            }
        }
        if clean {
            activity.verified(&space.address);
        }
    }
    damaged
}

/// Run passes until `stop` is set (then the task ends within a moment, even mid-feed).
pub async fn run(store: Store, registry: Registry, activity: Arc<Activity>, stop: Arc<AtomicBool>) {
    tokio::time::sleep(FIRST_SCRUB_AFTER).await;
    while !stop.load(Ordering::Relaxed) {
        let started = tokio::time::Instant::now();
        let (s, r, a, st) = (
            store.clone(),
            registry.clone(),
            activity.clone(),
            stop.clone(),
        );
        match tokio::task::spawn_blocking(move || pass(&s, &r, &a, true, &st)).await {
            Ok(0) => tracing::info!(took = ?started.elapsed(), "scrub finished: no damage"),
            Ok(n) => tracing::error!(
                findings = n,
                "scrub finished: damage found (see the admin page)"
            ),
            Err(e) => tracing::error!(error = %e, "scrub stopped"),
        }
        tokio::time::sleep_until(started + SCRUB_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{write_batch, FeedKey, Frontier};
    use crate::space::{MembershipCert, SeedCode, SpaceSecret};
    use crate::store::StoreConfig;
    use ed25519_dalek::SigningKey;

    #[test]
    fn a_clean_space_is_marked_verified_and_a_flipped_byte_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let registry = Registry::open(&store).unwrap();
        let secret = SpaceSecret::from_bytes([7; 32]);
        registry
            .add_space(&SeedCode::new(secret.address()), Some("office"), None, 0)
            .unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let cert = MembershipCert::issue(&secret, FeedKey::from(&key));
        registry.add_member(&cert).unwrap();
        store.create_feed(cert.feed).unwrap();
        let mut frontier = Frontier::new();
        let entries = (0..10).map(|i| vec![i as u8; 1000]).collect();
        store
            .append(write_batch(&key, &mut frontier, entries).unwrap())
            .unwrap();
        let activity = Activity::default();
        let go = AtomicBool::new(false);
        assert_eq!(pass(&store, &registry, &activity, false, &go), 0);
        assert!(activity.last_verified(&secret.address()).is_some());

        // Flip a byte in the middle of the feed's data file.
        let file = walk(dir.path())
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "data"))
            .unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let activity = Activity::default();
        assert_eq!(pass(&store, &registry, &activity, false, &go), 1);
        assert!(activity.last_verified(&secret.address()).is_none());
        assert_eq!(store.damage().unwrap().len(), 1);
        // A data file gone altogether is a finding too, recorded for the page.
        std::fs::remove_file(&file).unwrap();
        let activity = Activity::default();
        assert_eq!(pass(&store, &registry, &activity, false, &go), 1);
        assert!(activity.last_verified(&secret.address()).is_none());
        assert!(store.damage().unwrap().iter().any(|d| matches!(
            d.kind,
            crate::store::DamageKind::Truncated { file_len: 0, .. }
        )));
        let stopped = AtomicBool::new(true);
        let activity = Activity::default();
        pass(&store, &registry, &activity, false, &stopped);
        assert!(
            activity.last_verified(&secret.address()).is_none(),
            "stopped: not verified"
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
