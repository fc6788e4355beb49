//! A real `seeder serve` against peers built from the library that break the protocol: a
//! wrong capability, tampered entries, bad proofs, bad signatures, a writer's fork, frames over
//! the limit, floods of bogus space requests, and peers that stop reading. Each is refused or
//! disconnected, nothing bad is stored, memory stays bounded and honest members keep syncing.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use seeder::feed::{write_batch, ConsistencyProof, FeedKey, Frontier, SignedHead};
use seeder::net::frames::node_budget;
use seeder::net::{send_message, Budget, Connection, Endpoint, Frames, NodeIdentity};
use seeder::space::{Address, Capability, MembershipCert, Role, SeedCode, SpaceSecret};
use seeder::store::{Store, StoreConfig};
use seeder::wire::{FeedOffer, Message, MAX_FRAME_LEN, PROTOCOL_VERSION};

use common::{free_udp_port, random_file, Member, Seeder};

/// How long any single expected reply may take before the test fails (a bound, never a
/// pause: every wait below ends as soon as the awaited message or close arrives).
const REPLY_BOUND: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A member feed written by the test, in a store of its own.
struct Writer {
    key: SigningKey,
    store: Store,
    frontier: Frontier,
    cert: MembershipCert,
    _dir: tempfile::TempDir,
}

impl Writer {
    fn new(secret: &SpaceSecret, key: SigningKey) -> Writer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let feed = FeedKey(key.verifying_key().to_bytes());
        store.create_feed(feed).unwrap();
        Writer {
            cert: MembershipCert::issue(secret, feed),
            key,
            store,
            frontier: Frontier::new(),
            _dir: dir,
        }
    }

    fn feed(&self) -> FeedKey {
        self.cert.feed
    }

    fn append(&mut self, entries: Vec<Vec<u8>>) {
        let batch = write_batch(&self.key, &mut self.frontier, entries).unwrap();
        self.store.append(batch).unwrap();
    }

    fn head(&self) -> SignedHead {
        self.store
            .feed(&self.feed())
            .unwrap()
            .unwrap()
            .head
            .unwrap()
    }

    fn entries(&self, start: u64, end: u64) -> Vec<Vec<u8>> {
        self.store.read_range(&self.feed(), start, end).unwrap()
    }

    fn offer(&self) -> FeedOffer {
        FeedOffer {
            cert: self.cert.clone(),
            head: Some(self.head()),
            prefix: None,
            damaged_from: None,
        }
    }
}

fn entries(tag: &str, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!("{tag} entry {i}").into_bytes())
        .collect()
}

/// One connection to the seeder, driven by hand.
struct Peer {
    conn: Connection,
    send: quinn::SendStream,
    recv: Frames,
    /// Everything the seeder said on the control stream.
    heard: Vec<Message>,
}

impl Peer {
    /// Connect and say hello.
    async fn connect(endpoint: &Endpoint, addr: SocketAddr) -> Peer {
        let conn = endpoint.connect(addr, None).await.unwrap();
        let (mut send, recv) = conn.conn.open_bi().await.unwrap();
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: endpoint.node_id().0,
            features: 0,
        };
        send_message(&mut send, &hello).await.unwrap();
        Peer {
            conn,
            send,
            recv: Frames::new(recv, Budget::new(node_budget(), true)),
            heard: Vec::new(),
        }
    }

    fn secret(&self) -> Vec<u8> {
        self.conn.capability_secret().unwrap()
    }

    async fn say(&mut self, msg: Message) {
        send_message(&mut self.send, &msg).await.unwrap();
    }

    /// The next control message, or `None` once the seeder closed the connection.
    async fn next(&mut self) -> Option<Message> {
        match tokio::time::timeout(REPLY_BOUND, self.recv.message()).await {
            Ok(Ok(Some(m))) => {
                self.heard.push(m.clone());
                Some(m)
            }
            Ok(_) => None,
            Err(_) => panic!("no reply from the seeder within {REPLY_BOUND:?}"),
        }
    }

    /// Read until `want` matches; panics if the seeder closes first.
    async fn wait_for(&mut self, want: impl Fn(&Message) -> bool) -> Message {
        loop {
            match self.next().await {
                Some(m) if want(&m) => return m,
                Some(_) => {}
                None => panic!("the seeder closed the connection; it said {:?}", self.heard),
            }
        }
    }

    /// Read until the seeder closes the connection.
    async fn expect_closed(&mut self) {
        while self.next().await.is_some() {}
    }

    /// Open `address` as a member who knows it, and wait for the seeder's answer.
    async fn open(&mut self, address: &Address) {
        self.open_as(0, address).await;
    }

    /// As [`Peer::open`], under the dialer's space id `id` (even).
    async fn open_as(&mut self, id: u32, address: &Address) {
        let capability = Capability::new(address, &self.secret(), Role::Dialer);
        self.say(Message::OpenSpace {
            space: id,
            discovery: address.discovery_key(),
            capability,
        })
        .await;
        self.wait_for(|m| matches!(m, Message::OpenSpace { space, .. } if *space == id))
            .await;
    }

    /// Offer a feed and wait for the seeder to ask for it.
    async fn offer(&mut self, offer: FeedOffer) -> u64 {
        let feed = offer.cert.feed;
        self.say(Message::FeedList {
            space: 0,
            feeds: vec![offer],
        })
        .await;
        self.wait_want(feed).await
    }

    async fn wait_want(&mut self, feed: FeedKey) -> u64 {
        match self
            .wait_for(|m| matches!(m, Message::Want { feed: f, .. } if *f == feed))
            .await
        {
            Message::Want { from, .. } => from,
            _ => unreachable!(),
        }
    }

    /// Send one data message on a stream of its own.
    async fn data(&mut self, msg: Message) -> quinn::SendStream {
        let mut uni = self.conn.conn.open_uni().await.unwrap();
        send_message(&mut uni, &msg).await.unwrap();
        let _ = uni.finish();
        uni
    }
}

fn data(
    feed: FeedKey,
    start: u64,
    entries: Vec<Vec<u8>>,
    head: SignedHead,
    proof: Option<ConsistencyProof>,
) -> Message {
    Message::Data {
        space: 0,
        feed,
        start,
        entries: entries.into_iter().map(Into::into).collect(),
        head,
        proof,
        prefix: None,
        checkpoint: None,
    }
}

/// Entries the seeder holds of `feed`, from its status.
fn held(seeder: &Seeder) -> u64 {
    seeder.status()["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entries"].as_u64().unwrap())
        .sum()
}

struct Setup {
    dir: tempfile::TempDir,
    seeder: Seeder,
    secret: SpaceSecret,
    address: Address,
    addr: SocketAddr,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let seeder = Seeder::start(&dir.path().join("seeder"), port);
    let secret = SpaceSecret::from_bytes(rand::random());
    let address = secret.address();
    seeder.ctl(&["space", "add", &SeedCode::new(address).to_string()]);
    Setup {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        dir,
        seeder,
        secret,
        address,
    }
}

fn endpoint() -> Endpoint {
    Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(NodeIdentity::generate()),
    )
    .unwrap()
}

fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random())
}

#[test]
fn tampered_entries_bad_proofs_and_bad_signatures_disconnect_and_store_nothing() {
    let s = setup();
    let rt = runtime();
    rt.block_on(async {
        let ep = endpoint();

        // An entry changed after signing.
        let mut w = Writer::new(&s.secret, new_key());
        w.append(entries("w", 0..20));
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        assert_eq!(p.offer(w.offer()).await, 0);
        let mut tampered = w.entries(0, 20);
        tampered[3][0] ^= 1;
        p.data(data(w.feed(), 0, tampered, w.head(), None)).await;
        p.expect_closed().await;

        // A batch with a consistency proof that doesn't verify.
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        assert_eq!(p.offer(w.offer()).await, 0);
        let bogus = ConsistencyProof {
            old_size: 10,
            new_size: 20,
            path: vec![[7u8; 32]; 4],
        };
        p.data(data(w.feed(), 0, w.entries(0, 10), w.head(), Some(bogus)))
            .await;
        p.expect_closed().await;

        // A head whose signature doesn't verify.
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        assert_eq!(p.offer(w.offer()).await, 0);
        let mut forged = w.head();
        forged.signature[10] ^= 0x40;
        p.data(data(w.feed(), 0, w.entries(0, 20), forged, None))
            .await;
        p.expect_closed().await;

        // A head signed by another key than the feed's.
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        let mut other = Writer::new(&s.secret, new_key());
        other.append(entries("other", 0..20));
        let mut wrong = other.head();
        wrong.feed = w.feed();
        p.say(Message::Head {
            space: 0,
            head: wrong,
        })
        .await;
        p.expect_closed().await;
    });
    assert_eq!(held(&s.seeder), 0, "nothing of the bad data is stored");

    // The same seeder still takes the honest version of that data.
    rt.block_on(async {
        let ep = endpoint();
        let mut w = Writer::new(&s.secret, new_key());
        w.append(entries("honest", 0..20));
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        assert_eq!(p.offer(w.offer()).await, 0);
        p.data(data(w.feed(), 0, w.entries(0, 20), w.head(), None))
            .await;
        p.wait_for(|m| matches!(m, Message::Stored { length: 20, .. }))
            .await;
    });
    assert_eq!(held(&s.seeder), 20);
    assert_eq!(s.seeder.status()["forks"], 0);
}

#[test]
fn a_writers_fork_is_recorded_and_the_feed_frozen() {
    let s = setup();
    let rt = runtime();
    let key = new_key();
    // Two histories under one key: the same first 5 entries, then different ones.
    let mut a = Writer::new(&s.secret, key.clone());
    a.append(entries("a", 0..10));
    let mut b = Writer::new(&s.secret, key);
    b.append(entries("a", 0..5));
    b.append(entries("b", 5..15));
    rt.block_on(async {
        let ep = endpoint();
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        assert_eq!(p.offer(a.offer()).await, 0);
        p.data(data(a.feed(), 0, a.entries(0, 10), a.head(), None))
            .await;
        p.wait_for(|m| matches!(m, Message::Stored { length: 10, .. }))
            .await;

        // Another peer passes on the other history, proving its tree at 10 extends to 15.
        let mut q = Peer::connect(&ep, s.addr).await;
        q.open(&s.address).await;
        assert_eq!(q.offer(b.offer()).await, 10);
        let feed = b.feed();
        let sent = q.data(Message::Data {
            space: 0,
            feed,
            start: 10,
            entries: b.entries(10, 15).into_iter().map(Into::into).collect(),
            head: b.head(),
            proof: None,
            prefix: Some((
                b.store.root_at(&feed, 10).unwrap(),
                b.store.consistency_proof(&feed, 10, 15).unwrap(),
            )),
            checkpoint: None,
        });
        // The seeder stops the stream once it has recorded the fork; the peer isn't
        // disconnected, it only passed on what the writer signed.
        let stopped = tokio::time::timeout(REPLY_BOUND, sent.await.stopped()).await;
        assert!(stopped.is_ok(), "the seeder stopped the forked transfer");
        assert!(
            q.conn.conn.close_reason().is_none(),
            "the peer stays connected"
        );
    });
    // Recorded asynchronously: poll the status with a bound (30 s: the record is synced to
    // disk, which a machine busy with other tests' disks can take seconds for).
    let mut forks = 0;
    for _ in 0..1200 {
        forks = s.seeder.status()["forks"].as_u64().unwrap();
        if forks > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(forks, 1, "the fork is on record");
    assert_eq!(
        held(&s.seeder),
        10,
        "nothing of the second history is stored"
    );

    // A frozen feed takes nothing more, even its first history's continuation.
    a.append(entries("a", 10..12));
    rt.block_on(async {
        let ep = endpoint();
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        p.say(Message::FeedList {
            space: 0,
            feeds: vec![a.offer()],
        })
        .await;
        // The seeder answers with its own list (the feed at 10) and asks for nothing.
        p.say(Message::Goodbye {
            reason: "done".into(),
        })
        .await;
        while let Some(m) = p.next().await {
            assert!(
                !matches!(m, Message::Want { .. }),
                "a frozen feed is not fetched"
            );
        }
    });
    assert_eq!(held(&s.seeder), 10);
}

#[test]
fn oversized_frames_and_unproven_space_requests_are_cut_off_and_learn_nothing() {
    let s = setup();
    let rt = runtime();
    rt.block_on(async {
        let ep = endpoint();

        // A frame longer than the limit, on the control stream and on a data stream.
        let mut p = Peer::connect(&ep, s.addr).await;
        p.send
            .write_all(&(MAX_FRAME_LEN as u32 + 1).to_le_bytes())
            .await
            .unwrap();
        p.expect_closed().await;
        let mut p = Peer::connect(&ep, s.addr).await;
        p.open(&s.address).await;
        let mut uni = p.conn.conn.open_uni().await.unwrap();
        uni.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        p.expect_closed().await;

        // A wrong capability for a held space and a right one for a space not held: the
        // seeder answers both the same way (hello, then nothing) and cuts both off alike.
        let other = SpaceSecret::from_bytes(rand::random()).address();
        let mut replies = Vec::new();
        for (address, honest) in [(s.address, false), (other, true)] {
            let mut p = Peer::connect(&ep, s.addr).await;
            let capability = if honest {
                Capability::new(&address, &p.secret(), Role::Dialer)
            } else {
                Capability::new(&address, &[0u8; 32], Role::Dialer)
            };
            for i in 0..20u32 {
                let open = Message::OpenSpace {
                    space: 2 * i,
                    discovery: address.discovery_key(),
                    capability,
                };
                if send_message(&mut p.send, &open).await.is_err() {
                    break;
                }
            }
            p.expect_closed().await;
            // At most its hello arrives before the close (a close can overtake it).
            assert!(
                p.heard.iter().all(|m| matches!(m, Message::Hello { .. })),
                "{:?}",
                p.heard
            );
            replies.push(format!("{:?}", p.conn.conn.close_reason()));
        }
        assert_eq!(replies[0], replies[1], "the same close either way");
    });
    assert_eq!(held(&s.seeder), 0);
}

#[test]
fn floods_and_stalled_readers_leave_memory_bounded_and_members_syncing() {
    let s = setup();
    let a = Member(s.dir.path().join("a"));
    let b = Member(s.dir.path().join("b"));
    a.ok(&["space", "create", "office", "--open"]);
    let big = s.dir.path().join("big.bin");
    random_file(&big, 64, 9);
    a.ok(&["put", "office", big.to_str().unwrap()]);
    let code = a.last(&["space", "seed-code", "office"]);
    s.seeder.ctl(&["space", "add", &code, "--name", "office"]);
    let peer = s.seeder.peer();
    a.ok(&["sync", "office", "--peer", &peer, "--once"]);
    let address: Address = code.parse::<SeedCode>().unwrap().address();

    let rt = runtime();
    let _guard = rt.enter();
    let ep = endpoint();
    // Four peers that ask for the 64 MiB feed and never read it.
    let stalled: Vec<Peer> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..4 {
            let mut p = Peer::connect(&ep, s.addr).await;
            p.open(&address).await;
            let list = p.wait_for(|m| matches!(m, Message::FeedList { .. })).await;
            let Message::FeedList { feeds, .. } = list else {
                unreachable!()
            };
            for f in feeds {
                p.say(Message::FeedList {
                    space: 0,
                    feeds: vec![FeedOffer {
                        cert: f.cert.clone(),
                        head: None,
                        prefix: None,
                        damaged_from: None,
                    }],
                })
                .await;
                p.say(Message::Want {
                    space: 0,
                    feed: f.cert.feed,
                    from: 0,
                })
                .await;
            }
            v.push(p);
        }
        v
    });

    // 10,000 requests for spaces the peers can't prove, over as many connections as the
    // seeder allows before cutting each off.
    let flood = rt.spawn({
        let ep = endpoint();
        let addr = s.addr;
        async move {
            let mut sent = 0u32;
            let mut connections = 0u32;
            while sent < 10_000 {
                let mut p = Peer::connect(&ep, addr).await;
                connections += 1;
                for i in 0.. {
                    let open = Message::OpenSpace {
                        space: 2 * i,
                        discovery: address.discovery_key(),
                        capability: Capability::new(&address, &[1u8; 32], Role::Dialer),
                    };
                    // Up to 65 per connection; the seeder stops listening after a few.
                    if i > 64 || send_message(&mut p.send, &open).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                p.expect_closed().await;
                assert!(p.heard.len() <= 1, "only hello: {:?}", p.heard);
            }
            (sent, connections)
        }
    });

    // Meanwhile B joins and gets everything through the same seeder.
    let invite = a.last(&["space", "invite", "office"]);
    b.ok(&["space", "join", &invite, "--name", "office"]);
    b.ok(&[
        "sync",
        "office",
        "--peer",
        &peer,
        "--once",
        "--timeout",
        "120",
    ]);
    let (sent, connections) = rt.block_on(flood).unwrap();
    eprintln!("{sent} bogus requests over {connections} connections meanwhile");
    let got = s.dir.path().join("got.bin");
    b.ok(&["get", "office", "big.bin", got.to_str().unwrap()]);
    assert_eq!(
        blake3::hash(&std::fs::read(&got).unwrap()),
        blake3::hash(&std::fs::read(&big).unwrap())
    );
    let peak = s.seeder.peak_rss_mib();
    eprintln!("seeder peak RSS {peak} MiB");
    assert!(peak < 128, "seeder peak RSS {peak} MiB");
    drop(stalled);
}

#[test]
fn introductions_go_only_between_peers_sharing_a_space_and_punches_only_from_partners() {
    let s = setup();
    let other = SpaceSecret::from_bytes(rand::random()).address();
    s.seeder
        .ctl(&["space", "add", &SeedCode::new(other).to_string()]);
    let rt = runtime();
    rt.block_on(async {
        let (ex, ea, eb) = (endpoint(), endpoint(), endpoint());
        let x_id = ex.node_id().0;
        // X holds `other`; A holds only the first space.
        let mut x = Peer::connect(&ex, s.addr).await;
        x.open(&other).await;
        let mut a = Peer::connect(&ea, s.addr).await;
        a.open(&s.address).await;

        // A, sharing nothing with X, asks to meet X, and asks for punches at a socket of ours.
        let victim = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.say(Message::Introduce { node: x_id }).await;
        a.say(Message::Punch {
            node: x_id,
            addr: victim.local_addr().unwrap(),
            dial: false,
        })
        .await;
        // Handled in order: once the seeder answers what A said next, it has dealt with both.
        a.open_as(2, &other).await;
        assert!(
            !a.heard.iter().any(|m| matches!(m, Message::Punch { .. })),
            "A learned where X is: {:?}",
            a.heard
        );

        // B shares `other` with X: both are told where the seeder sees the other.
        let mut b = Peer::connect(&eb, s.addr).await;
        b.open(&other).await;
        b.say(Message::Introduce { node: x_id }).await;
        let told_b = b.wait_for(|m| matches!(m, Message::Punch { .. })).await;
        assert_eq!(
            told_b,
            Message::Punch {
                node: x_id,
                addr: ex.local_addr().unwrap(),
                dial: true
            }
        );
        let told_x = x.wait_for(|m| matches!(m, Message::Punch { .. })).await;
        assert_eq!(
            told_x,
            Message::Punch {
                node: eb.node_id().0,
                addr: eb.local_addr().unwrap(),
                dial: false
            }
        );
        // Nothing about A reached X (it would have come first), and A's punch request, taken
        // from a peer the seeder didn't dial, sent nothing.
        assert_eq!(
            x.heard
                .iter()
                .filter(|m| matches!(m, Message::Punch { .. }))
                .count(),
            1,
            "{:?}",
            x.heard
        );
        let mut buf = [0u8; 16];
        assert!(
            victim.try_recv_from(&mut buf).is_err(),
            "a member aimed the seeder's punches"
        );

        // The seeder looks for a partner it can't reach: it asks its partners, never the
        // members connected to it, so they don't learn whom it looks for. Two rounds of asking
        // (one a second) are read.
        s.seeder.ctl(&["peer", "add", &"cd".repeat(32)]);
        let until = tokio::time::Instant::now() + Duration::from_millis(2500);
        while let Ok(Ok(Some(m))) = tokio::time::timeout_at(until, a.recv.message()).await {
            assert!(
                !matches!(m, Message::Introduce { .. }),
                "a member heard whom the seeder looks for"
            );
        }
    });
}

/// Ask the seeder, over `peer`'s connection, to carry a tunnel to `to`; its status byte, or
/// `None` if no stream could be opened or nothing came back within `within`.
async fn ask_relay(peer: &Peer, to: [u8; 32], within: Duration) -> Option<u8> {
    use seeder::net::tunnel::Header;
    use seeder::net::NodeId;
    tokio::time::timeout(within, async {
        let (mut send, mut recv) = peer.conn.conn.open_bi().await.ok()?;
        send.write_all(&Header::To(NodeId(to)).encode())
            .await
            .ok()?;
        let mut status = [0u8; 1];
        recv.read_exact(&mut status).await.ok()?;
        // Kept open a while so a relayed tunnel stays listed.
        std::mem::forget((send, recv));
        Some(status[0])
    })
    .await
    .ok()
    .flatten()
}

/// Take the next tunnel a relay brings to `target` and say yes to it: its header and streams.
fn answer_tunnel(
    target: &Peer,
) -> tokio::task::JoinHandle<(
    Option<seeder::net::tunnel::Header>,
    quinn::SendStream,
    quinn::RecvStream,
)> {
    use seeder::net::tunnel::{Header, Status, HEADER_LEN};
    let conn = target.conn.conn.clone();
    tokio::spawn(async move {
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut h = [0u8; HEADER_LEN];
        recv.read_exact(&mut h).await.unwrap();
        send.write_all(&[Status::Open as u8]).await.unwrap();
        (Header::decode(&h), send, recv)
    })
}

#[test]
fn a_relayed_connection_that_carries_nothing_gives_its_place_back() {
    use seeder::net::tunnel::RELAY_IDLE;
    let s = setup();
    let rt = runtime();
    rt.block_on(async {
        let (ex, eb) = (endpoint(), endpoint());
        let mut x = Peer::connect(&ex, s.addr).await;
        x.open(&s.address).await;
        let mut b = Peer::connect(&eb, s.addr).await;
        b.open(&s.address).await;
        // Two members of a held space open a tunnel and leave it silent, as if to hold a
        // place in the relay's budget.
        let asked = answer_tunnel(&x);
        let opened = tokio::time::Instant::now();
        assert_eq!(
            ask_relay(&b, ex.node_id().0, REPLY_BOUND).await,
            Some(seeder::net::tunnel::Status::Open as u8)
        );
        let _held = asked.await.unwrap();
        assert_eq!(s.seeder.status()["relaying"].as_array().unwrap().len(), 1);
        let deadline = opened + RELAY_IDLE * 2 + REPLY_BOUND;
        while !s.seeder.status()["relaying"].as_array().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a silent tunnel is kept"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            opened.elapsed() >= RELAY_IDLE,
            "ended before it was idle for long"
        );
    });
}

#[test]
fn tunnels_are_carried_only_between_peers_sharing_a_space_and_never_for_strangers() {
    use seeder::net::tunnel::{Header, Status};
    let s = setup();
    let other = SpaceSecret::from_bytes(rand::random()).address();
    s.seeder.ctl(&[
        "space",
        "add",
        &SeedCode::new(other).to_string(),
        "--name",
        "other",
    ]);
    let rt = runtime();
    rt.block_on(async {
        let (ex, ea, eb, ey, ec) = (endpoint(), endpoint(), endpoint(), endpoint(), endpoint());
        let x_id = ex.node_id().0;
        // X and B hold `other`; A holds only the first space; Y proves nothing.
        let mut x = Peer::connect(&ex, s.addr).await;
        x.open(&other).await;
        let mut a = Peer::connect(&ea, s.addr).await;
        a.open(&s.address).await;
        let mut b = Peer::connect(&eb, s.addr).await;
        b.open(&other).await;
        let y = Peer::connect(&ey, s.addr).await;

        // The stranger can't even open a stream for a tunnel: no answer, nothing relayed.
        assert_eq!(ask_relay(&y, x_id, Duration::from_secs(2)).await, None);
        // A shares no space with X: refused, and that is all it learns.
        assert_eq!(
            ask_relay(&a, x_id, REPLY_BOUND).await,
            Some(Status::NotAllowed as u8)
        );
        // Nor may A ask for a node that isn't there, or for itself, any differently.
        tokio::time::sleep(seeder::net::driver::RENDEZVOUS_EVERY).await;
        assert_eq!(
            ask_relay(&a, [9u8; 32], REPLY_BOUND).await,
            Some(Status::NotAllowed as u8)
        );
        assert!(s.seeder.status()["relaying"].as_array().unwrap().is_empty());

        // B shares `other` with X: X is asked, says yes, and B's bytes reach X unchanged.
        let asked = answer_tunnel(&x);
        let (mut send, mut recv) = b.conn.conn.open_bi().await.unwrap();
        send.write_all(&Header::To(seeder::net::NodeId(x_id)).encode())
            .await
            .unwrap();
        let mut status = [0u8; 1];
        recv.read_exact(&mut status).await.unwrap();
        assert_eq!(status[0], Status::Open as u8);
        send.write_all(b"hello").await.unwrap();
        let (header, _xs, mut xr) = tokio::time::timeout(REPLY_BOUND, asked)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(header, Some(Header::From(eb.node_id())));
        let mut got = [0u8; 5];
        xr.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        let relaying = s.seeder.status()["relaying"].as_array().unwrap().clone();
        assert_eq!(relaying.len(), 1, "{relaying:?}");
        assert_eq!(relaying[0]["from"], eb.node_id().to_hex());
        assert_eq!(relaying[0]["to"], ex.node_id().to_hex());
        // Asking again at once is too often.
        assert_eq!(
            ask_relay(&b, x_id, REPLY_BOUND).await,
            Some(Status::Busy as u8)
        );

        // A stream that isn't a tunnel is dropped; the connection and the seeder go on.
        let (mut junk, _r) = a.conn.conn.open_bi().await.unwrap();
        junk.write_all(&[7u8; 33]).await.unwrap();
        a.open_as(2, &other).await;

        // Either end going ends the relayed connection: it leaves the seeder's list (and its
        // place in the budget), even while bytes are stuck on their way to the other end.
        let stuck = vec![0u8; 6 << 20];
        let _ = tokio::time::timeout(Duration::from_secs(1), send.write_all(&stuck)).await;
        b.conn.conn.close(0u32.into(), b"bye");
        let deadline = tokio::time::Instant::now() + REPLY_BOUND;
        while !s.seeder.status()["relaying"].as_array().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relayed connection is still listed after its asker left"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A space removed here no longer makes two peers ones the seeder relays between.
        let c = {
            let mut c = Peer::connect(&ec, s.addr).await;
            c.open(&other).await;
            c
        };
        s.seeder.ctl(&["space", "remove", "other"]);
        assert_eq!(
            ask_relay(&c, x_id, REPLY_BOUND).await,
            Some(Status::NotAllowed as u8)
        );
        drop(recv);
    });
}
