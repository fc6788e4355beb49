//! A governed space replicated for real — QUIC on 127.0.0.1, a seeder's registry and store,
//! member homes — in one process: the owner's records reach the seeder before its feeds; a
//! device invited while the owner is away takes the invite up in one `--once`-like run and
//! its feed is accepted; the owner, never online with it, gets its Join and its files through
//! the seeder; and once removed, the device's later entries are refused and never stored.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use seeder::daemon::local::{HomeLocal, Pending, SeederLocal, StoreLimits};
use seeder::daemon::registry::Registry;
use seeder::feed::FeedKey;
use seeder::fs::home::{FileMeta, Home, Rng};
use seeder::fs::{Mtime, Path};
use seeder::net::driver::{Admit, Driver};
use seeder::net::identity::NodeIdentity;
use seeder::net::{Endpoint, NodeId};
use seeder::space::{Address, MemberRole, SeedCode};
use seeder::store::{Store, StoreConfig};
use seeder::wire::Refusal;

/// Longest a sync run may take before the test calls it stuck.
const BOUND: Duration = Duration::from_secs(30);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct SeederNode {
    local: Arc<SeederLocal>,
    addr: SocketAddr,
    id: NodeId,
    _endpoint: Arc<Endpoint>,
    /// Its connections run until this is dropped.
    _running: tokio::sync::watch::Sender<bool>,
}

/// A seeder holding `address`, answering on loopback.
fn seeder(dir: &std::path::Path, address: Address) -> SeederNode {
    let store = Store::open(dir, &StoreConfig::default()).unwrap();
    let registry = Registry::open(&store).unwrap();
    registry
        .add_space(&SeedCode::new(address), Some("office"), None, 0)
        .unwrap();
    let local = Arc::new(SeederLocal {
        store,
        registry,
        limits: StoreLimits::default(),
        activity: Default::default(),
        pending: Pending::default(),
    });
    let identity = Arc::new(NodeIdentity::generate());
    let endpoint = Arc::new(Endpoint::bind(loopback(), identity.clone()).unwrap());
    let driver = Driver::new(local.clone(), identity.node_id());
    let (running, stop) = tokio::sync::watch::channel(false);
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(Ok(conn)) = accepting.accept().await {
            tokio::spawn(
                driver
                    .clone()
                    .run(conn, Admit::Open, Vec::new(), None, stop.clone()),
            );
        }
    });
    SeederNode {
        addr: endpoint.local_addr().unwrap(),
        id: identity.node_id(),
        local,
        _endpoint: endpoint,
        _running: running,
    }
}

/// Sync `home`'s space with the seeder until both hold each other's data, as `seeder sync
/// NAME --once` does; what the member's node saw of it.
async fn sync_once(home: &Arc<Home>, address: Address, seeder: &SeederNode) -> Arc<HomeLocal> {
    let node = Arc::new(HomeLocal::new(home.clone(), address, None));
    let identity = Arc::new(NodeIdentity::generate());
    let endpoint = Endpoint::bind(loopback(), identity.clone()).unwrap();
    let driver = Driver::new(node.clone(), identity.node_id());
    let conn = endpoint
        .connect(seeder.addr, Some(seeder.id))
        .await
        .unwrap();
    let (caught_up, mut rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(driver.run(conn, Admit::Open, vec![address], Some(caught_up), stop));
    let synced = tokio::time::timeout(BOUND, rx.wait_for(|c| *c))
        .await
        .expect("in sync within the bound")
        .is_ok();
    if !synced {
        panic!("the connection ended first: {:?}", run.await);
    }
    stop_tx.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
    endpoint.close("done");
    node
}

fn put(home: &Home, path: &str, content: &[u8]) {
    let space = home.space("office").unwrap();
    space
        .put(
            &Path::new(path).unwrap(),
            &mut &content[..],
            FileMeta {
                mode: 0o644,
                mtime: Mtime::default(),
            },
            &mut |_| {},
        )
        .unwrap();
}

fn length(store: &Store, feed: &FeedKey) -> u64 {
    store.feed(feed).unwrap().map_or(0, |f| f.length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_governed_space_syncs_through_a_seeder_that_enforces_its_membership() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::default();
    let owner = Arc::new(Home::open(dir.path().join("owner")).unwrap());
    let address = owner.create_governed("office", &mut rng).unwrap();
    put(&owner, "plan.txt", b"the owner's plan");
    let seeder = seeder(&dir.path().join("seeder"), address);

    // The owner's log reaches the seeder before its feed, which is taken.
    sync_once(&owner, address, &seeder).await;
    let registry = &seeder.local.registry;
    let own_feed = owner.space("office").unwrap().own_feed();
    assert_eq!(
        length(&seeder.local.store, &own_feed),
        length(owner.store(), &own_feed)
    );
    let m = registry.membership(&address).unwrap().expect("governed");
    assert_eq!((m.active().count(), m.epoch()), (1, 0));

    // A device is invited while nobody else is online; it joins with the code alone.
    let code = owner
        .invite_device("office", MemberRole::Writer, "Dana", &mut rng)
        .unwrap();
    sync_once(&owner, address, &seeder).await;
    let device = Arc::new(Home::open(dir.path().join("device")).unwrap());
    device.join(&code, "office", &mut rng).unwrap();
    let dana = device.space("office").unwrap().own_feed();
    assert!(
        device.membership(&address).unwrap().is_none(),
        "no records yet"
    );

    // One run takes the invite up, and the seeder accepts the device's feed before it ends.
    sync_once(&device, address, &seeder).await;
    assert_eq!(
        device.roster("office").unwrap().role,
        Some(MemberRole::Writer),
        "joined"
    );
    assert!(
        registry.member(&address, &dana).unwrap().is_some(),
        "the seeder took the device's feed in the same run"
    );
    assert_eq!(
        registry
            .membership(&address)
            .unwrap()
            .unwrap()
            .active()
            .count(),
        2
    );
    assert!(
        device
            .space("office")
            .unwrap()
            .view()
            .unwrap()
            .get(&Path::new("plan.txt").unwrap())
            .is_some(),
        "the owner's file, through the seeder"
    );

    // The device writes; the owner, never online with it, gets its Join and its file.
    put(&device, "notes.txt", b"Dana's notes");
    sync_once(&device, address, &seeder).await;
    assert_eq!(
        length(&seeder.local.store, &dana),
        length(device.store(), &dana)
    );
    sync_once(&owner, address, &seeder).await;
    assert!(owner
        .space("office")
        .unwrap()
        .view()
        .unwrap()
        .get(&Path::new("notes.txt").unwrap())
        .is_some());

    // Removed, the device's feed freezes where the owner saw it; what it writes before it
    // learns so is refused by the seeder and never stored.
    let frozen = length(owner.store(), &dana);
    owner.remove_member("office", "Dana", &mut rng).unwrap();
    sync_once(&owner, address, &seeder).await;
    put(&device, "late.txt", b"written after the removal");
    assert!(length(device.store(), &dana) > frozen);
    let node = sync_once(&device, address, &seeder).await;
    assert_eq!(
        length(&seeder.local.store, &dana),
        frozen,
        "nothing past the freeze"
    );
    // Said when the seeder's refusal comes before the device is done; the device's own log
    // says it in any case.
    let refused = node.peers.refused(&seeder.id);
    assert!(
        refused.is_empty() || refused == vec![(dana, Refusal::Removed)],
        "{refused:?}"
    );
    let me = device.roster("office").unwrap();
    assert!(
        me.devices
            .iter()
            .any(|d| d.you && d.removed && d.frozen_at == Some(frozen)),
        "the device learnt it was removed: {me:?}"
    );
    assert_eq!(registry.membership(&address).unwrap().unwrap().epoch(), 1);
}
