//! Sessions driven in memory: nodes hold real signed feeds with proofs, a bounded driver moves
//! messages and carries out actions. No sockets, no store, no sleeps.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::SigningKey;

use super::*;
use crate::feed::{leaf_hash, verify_batch, write_batch, ConsistencyProof, Frontier, Hash, NodeId};
use crate::space::members::{self, Change, InviteKeys, KeyId, MemberRole, SEALED_KEY_LEN};
use crate::space::SpaceSecret;

/// Steps before a test declares a livelock.
const MAX_STEPS: usize = 200;
/// Entries per `Data` message in these tests (small, to exercise partial batches).
const BATCH: usize = 3;

#[derive(Clone, Default)]
struct MemFeed {
    cert: Option<MembershipCert>,
    entries: Vec<bytes::Bytes>,
    frontier: Frontier,
    nodes: HashMap<NodeId, Hash>,
    head: Option<SignedHead>,
}

#[derive(Default)]
struct Node {
    spaces: BTreeMap<Address, BTreeMap<FeedKey, MemFeed>>,
    full: bool,
    /// Membership records of governed spaces.
    records: BTreeMap<Address, Vec<VerifiedRecord>>,
    /// A device invite (its secret) this node takes up with the device key once the log has
    /// the invite, as a member's home does.
    invite: Option<([u8; 32], SigningKey)>,
    /// This node's device in its governed spaces, proven to peers (as a member's home does).
    device: Option<SigningKey>,
    /// Set on a seeder: a governed space is served to a peer that proves no device only if
    /// the peer is one of these partners.
    partners: Option<std::collections::BTreeSet<[u8; 32]>>,
}

impl Local for Node {
    fn space_for(&self, discovery: &DiscoveryKey) -> Option<Address> {
        self.spaces
            .keys()
            .find(|a| a.discovery_key() == *discovery)
            .copied()
    }
    fn offers(&self, space: &Address) -> Vec<FeedOffer> {
        self.spaces.get(space).map_or_else(Vec::new, |feeds| {
            feeds
                .values()
                .filter_map(|f| {
                    Some(FeedOffer {
                        cert: f.cert.clone()?,
                        head: f.head.clone(),
                        prefix: None,
                        damaged_from: None,
                    })
                })
                .collect()
        })
    }
    fn stored(&self, feed: &FeedKey) -> (u64, bool) {
        for feeds in self.spaces.values() {
            if let Some(f) = feeds.get(feed) {
                return (f.entries.len() as u64, false);
            }
        }
        (0, false)
    }
    fn feed_count(&self, space: &Address) -> usize {
        self.spaces.get(space).map_or(0, |f| f.len())
    }
    fn contradicts(&self, head: &crate::feed::VerifiedHead) -> Option<crate::feed::ForkEvidence> {
        for feeds in self.spaces.values() {
            if let Some(f) = feeds.get(&head.feed()) {
                let ours = f.head.clone()?;
                if head.length() > ours.length || head.length() != ours.length {
                    return None;
                }
                return (head.root() != &ours.root).then(|| crate::feed::ForkEvidence {
                    older: head.signed().clone(),
                    newer: ours.clone(),
                    newer_prefix_root: ours.root,
                    proof: crate::feed::ConsistencyProof {
                        old_size: ours.length,
                        new_size: ours.length,
                        path: Vec::new(),
                    },
                });
            }
        }
        None
    }
    fn damaged(&self, _feed: &FeedKey) -> Vec<u64> {
        Vec::new()
    }
    fn records(&self, space: &Address) -> Vec<Record> {
        self.records.get(space).map_or_else(Vec::new, |rs| {
            rs.iter().map(|r| r.record().clone()).collect()
        })
    }
    fn membership(&self, space: &Address) -> Option<Arc<Membership>> {
        self.records
            .get(space)
            .filter(|rs| !rs.is_empty())
            .map(|rs| Arc::new(Membership::compute(rs)))
    }
    fn prove_device(
        &self,
        space: &Address,
        conn_secret: &[u8],
        role: Role,
    ) -> Option<(DeviceProof, Option<DeviceProof>)> {
        let key = self
            .device
            .as_ref()
            .or(self.invite.as_ref().map(|(_, k)| k))?;
        let invite = self.invite.as_ref().map(|(secret, _)| {
            let keys = InviteKeys::from_secret(secret);
            DeviceProof::sign(&keys.signing, space, conn_secret, role)
        });
        Some((DeviceProof::sign(key, space, conn_secret, role), invite))
    }
    fn serves_unproven(&self, _space: &Address, peer: &[u8; 32], _dialed: bool) -> bool {
        self.partners.as_ref().is_none_or(|p| p.contains(peer))
    }
    fn room(&self, _: &Address, _bytes: u64) -> Result<(), crate::wire::Refusal> {
        if self.full {
            Err(crate::wire::Refusal::Quota {
                held: 10,
                limit: 10,
            })
        } else {
            Ok(())
        }
    }
}

impl Node {
    fn hold(&mut self, space: Address) {
        self.spaces.entry(space).or_default();
    }

    fn feed(&mut self, space: &Address, feed: FeedKey) -> &mut MemFeed {
        self.spaces
            .get_mut(space)
            .expect("space held")
            .entry(feed)
            .or_default()
    }

    /// Write entries as the feed's owner.
    fn write(
        &mut self,
        secret: &SpaceSecret,
        key: &SigningKey,
        entries: Vec<Vec<u8>>,
    ) -> SignedHead {
        let cert = MembershipCert::issue(secret, FeedKey::from(key));
        self.write_with(cert, key, entries)
    }

    /// Write entries to a feed of a governed space (its certificate the device's own).
    fn write_own(
        &mut self,
        address: Address,
        key: &SigningKey,
        entries: Vec<Vec<u8>>,
    ) -> SignedHead {
        self.write_with(MembershipCert::own(key, address), key, entries)
    }

    fn write_with(
        &mut self,
        cert: MembershipCert,
        key: &SigningKey,
        entries: Vec<Vec<u8>>,
    ) -> SignedHead {
        let address = cert.address;
        let feed = FeedKey::from(key);
        self.hold(address);
        let f = self.feed(&address, feed);
        f.cert = Some(cert);
        let batch = write_batch(key, &mut f.frontier, entries).unwrap();
        for (id, h) in batch.nodes() {
            f.nodes.insert(*id, *h);
        }
        f.entries.extend(batch.entries().iter().cloned());
        let head = batch.head().signed().clone();
        f.head = Some(head.clone());
        head
    }

    /// Keep membership records, as a node's driver does: returns those new here and, like a
    /// member's home, this node's Join once the log has the invite it holds.
    fn add_records(
        &mut self,
        space: &Address,
        records: Vec<VerifiedRecord>,
    ) -> Vec<VerifiedRecord> {
        let held = self.records.entry(*space).or_default();
        let mut new = Vec::new();
        for r in records {
            if !held.iter().any(|h| h.id() == r.id()) {
                held.push(r.clone());
                new.push(r);
            }
        }
        if let Some((secret, device)) = &self.invite {
            let m = Membership::compute(held);
            let public = InviteKeys::from_secret(secret).public();
            let own = FeedKey::from(device);
            if m.invites.get(&public).is_some_and(|i| i.used_by.is_none())
                && !m.members.contains_key(&own)
            {
                let join = join(*space, secret, device, m.heads.clone());
                held.push(join.clone());
                new.push(join);
            }
        }
        new
    }

    /// `Data` messages answering a want, as a serving driver would send them.
    fn serve(
        &self,
        id: u32,
        space: &Address,
        feed: &FeedKey,
        from: u64,
        to: Option<u64>,
    ) -> Vec<Message> {
        let f = &self.spaces[space][feed];
        let Some(head) = f.head.clone() else {
            return vec![];
        };
        let stop = to.map_or(head.length, |t| t.min(head.length));
        let mut out = Vec::new();
        let mut start = from as usize;
        while (start as u64) < stop {
            let end = (start + BATCH).min(stop as usize);
            let proof = ((end as u64) < head.length).then(|| {
                ConsistencyProof::build(end as u64, head.length, |id| {
                    f.nodes.get(&id).copied().ok_or(())
                })
                .unwrap()
            });
            out.push(Message::Data {
                space: id,
                feed: *feed,
                start: start as u64,
                entries: f.entries[start..end].to_vec(),
                head: head.clone(),
                proof,
                prefix: None,
                checkpoint: None,
            });
            start = end;
        }
        out
    }

    /// Verify and store a `Data` message as a receiving driver would. Returns the new length
    /// and head if it was taken.
    fn receive(
        &mut self,
        space: &Address,
        msg: Message,
    ) -> Result<(FeedKey, u64, Option<SignedHead>), String> {
        let Message::Data {
            feed,
            start,
            entries,
            head,
            proof,
            ..
        } = msg
        else {
            return Err("not data".into());
        };
        let f = self.feed(space, feed);
        if start != f.frontier.len() {
            return Err(format!("gap: at {} got {start}", f.frontier.len()));
        }
        let head = head.verify().map_err(|e| e.to_string())?;
        let batch =
            verify_batch(&f.frontier, head, entries, proof.as_ref()).map_err(|e| e.to_string())?;
        for (id, h) in batch.nodes() {
            f.nodes.insert(*id, *h);
            if id.level == 0 {
                f.frontier.push(*h, |_, _| {});
            }
        }
        f.entries.extend(batch.entries().iter().cloned());
        let complete = batch
            .completes_head()
            .then(|| batch.head().signed().clone());
        if let Some(h) = &complete {
            f.head = Some(h.clone());
        }
        Ok((feed, f.entries.len() as u64, complete))
    }
}

/// A connection between node `a` (dialer) and node `b` (listener).
struct Link {
    a: usize,
    b: usize,
    sa: Session,
    sb: Session,
    closed: Vec<(usize, SyncError)>,
    events: Vec<(usize, Event)>,
    /// Forks each side asked its driver to record.
    forks: Vec<(usize, crate::feed::ForkEvidence)>,
    /// Every control message, with the node that sent it, in order.
    said: Vec<(usize, Message)>,
}

struct Mesh {
    nodes: Vec<Node>,
    links: Vec<Link>,
}

impl Mesh {
    fn new(n: usize) -> Mesh {
        Mesh {
            nodes: (0..n).map(|_| Node::default()).collect(),
            links: Vec::new(),
        }
    }

    fn connect(&mut self, a: usize, b: usize) -> usize {
        let secret: Vec<u8> = (0..32)
            .map(|i| (i as u8) ^ (self.links.len() as u8 * 7))
            .collect();
        self.links.push(Link {
            a,
            b,
            sa: Session::new(Role::Dialer, [a as u8; 32], secret.clone()),
            sb: Session::new(Role::Listener, [b as u8; 32], secret),
            closed: Vec::new(),
            events: Vec::new(),
            forks: Vec::new(),
            said: Vec::new(),
        });
        self.links.len() - 1
    }

    /// Run until nothing moves; panics after `MAX_STEPS` rounds (a livelock).
    fn drive_bounded(&mut self) {
        for _ in 0..MAX_STEPS {
            if !self.step() {
                return;
            }
        }
        panic!("no quiescence after {MAX_STEPS} steps");
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        for li in 0..self.links.len() {
            for side in [0, 1] {
                moved |= self.run_actions(li, side);
            }
            for side in [0, 1] {
                loop {
                    let to_node = {
                        let l = &self.links[li];
                        if side == 0 {
                            l.b
                        } else {
                            l.a
                        }
                    };
                    let t = {
                        let l = &mut self.links[li];
                        let s = if side == 0 { &mut l.sa } else { &mut l.sb };
                        s.poll_transmit()
                    };
                    let Some(Transmit(msg)) = t else { break };
                    moved = true;
                    let from = {
                        let l = &self.links[li];
                        if side == 0 {
                            l.a
                        } else {
                            l.b
                        }
                    };
                    self.links[li].said.push((from, msg.clone()));
                    {
                        let (nodes, links) = (&self.nodes, &mut self.links);
                        let l = &mut links[li];
                        let s = if side == 0 { &mut l.sb } else { &mut l.sa };
                        s.handle_message(msg, &nodes[to_node]);
                    }
                    // Actions before transmits, as the session's contract says.
                    self.run_actions(li, 1 - side);
                }
            }
        }
        moved
    }

    fn run_actions(&mut self, li: usize, side: usize) -> bool {
        let mut moved = false;
        loop {
            let (me, other) = {
                let l = &self.links[li];
                if side == 0 {
                    (l.a, l.b)
                } else {
                    (l.b, l.a)
                }
            };
            let action = {
                let l = &mut self.links[li];
                let s = if side == 0 { &mut l.sa } else { &mut l.sb };
                while let Some(e) = s.poll_event() {
                    l.events.push((me, e));
                }
                let s = if side == 0 { &mut l.sa } else { &mut l.sb };
                s.poll_action()
            };
            let Some(action) = action else { break };
            moved = true;
            match action {
                Action::AddFeed { space, cert } => {
                    let feed = cert.feed;
                    self.nodes[me].feed(&space, feed).cert = Some(cert);
                }
                Action::AddRecords { space, records } => {
                    let new: Vec<Record> = self.nodes[me]
                        .add_records(&space, records)
                        .into_iter()
                        .map(VerifiedRecord::into_record)
                        .collect();
                    {
                        let (nodes, l) = (&self.nodes, &mut self.links[li]);
                        let s = if side == 0 { &mut l.sa } else { &mut l.sb };
                        s.handle_records_added(&space, &new, &nodes[me]);
                    }
                    if !new.is_empty() {
                        self.announce_records(me, &space, &new, Some(li));
                    }
                }
                Action::Serve {
                    id,
                    space,
                    feed,
                    from,
                    to,
                } => {
                    // The data stream: served by `me`, received by `other`.
                    let msgs = self.nodes[me].serve(id, &space, &feed, from, to);
                    for msg in msgs {
                        let recv_addr = {
                            let l = &mut self.links[li];
                            let s = if side == 0 { &mut l.sb } else { &mut l.sa };
                            s.space_of(id)
                        };
                        let Some(addr) = recv_addr else { break };
                        match self.nodes[other].receive(&addr, msg) {
                            Ok((feed, length, complete)) => {
                                let l = &mut self.links[li];
                                let s = if side == 0 { &mut l.sb } else { &mut l.sa };
                                s.handle_appended(id, feed, length);
                                if let Some(head) = complete {
                                    self.announce(other, &addr, &feed, &head, Some(li));
                                }
                            }
                            Err(e) => panic!("honest data refused: {e}"),
                        }
                    }
                    let nodes = &self.nodes;
                    let l = &mut self.links[li];
                    let s = if side == 0 { &mut l.sb } else { &mut l.sa };
                    s.handle_transfer_ended(id, feed, &nodes[other]);
                }
                Action::RecordFork { evidence, .. } => {
                    evidence
                        .verify()
                        .expect("the session records only real forks");
                    self.links[li].forks.push((me, *evidence));
                }
                // Rendezvous needs addresses; the NAT tests cover it with real sockets.
                Action::Introduce { .. } | Action::Punch { .. } | Action::Observed { .. } => {}
                Action::Close(e) => {
                    self.links[li].closed.push((me, e));
                }
            }
        }
        moved
    }

    /// Node `n` has a new complete head: every session of `n` (except on `skip`) hears it.
    fn announce(
        &mut self,
        n: usize,
        space: &Address,
        feed: &FeedKey,
        head: &SignedHead,
        skip: Option<usize>,
    ) {
        let cert = self.nodes[n].spaces[space][feed]
            .cert
            .clone()
            .expect("feeds have certs");
        for (li, l) in self.links.iter_mut().enumerate() {
            if Some(li) == skip {
                continue;
            }
            if l.a == n {
                l.sa.handle_local_head(space, &cert, head);
            }
            if l.b == n {
                l.sb.handle_local_head(space, &cert, head);
            }
        }
    }

    /// Node `n` has new membership records: every session of `n` (except on `skip`, where
    /// they came from) hears them.
    fn announce_records(
        &mut self,
        n: usize,
        space: &Address,
        records: &[Record],
        skip: Option<usize>,
    ) {
        let (nodes, links) = (&self.nodes, &mut self.links);
        for (li, l) in links.iter_mut().enumerate() {
            if Some(li) == skip {
                continue;
            }
            if l.a == n {
                l.sa.handle_local_records(space, records, &nodes[n]);
            }
            if l.b == n {
                l.sb.handle_local_records(space, records, &nodes[n]);
            }
        }
    }

    fn feed_len(&self, n: usize, space: &Address, feed: &FeedKey) -> usize {
        self.nodes[n]
            .spaces
            .get(space)
            .and_then(|f| f.get(feed))
            .map_or(0, |f| f.entries.len())
    }
}

fn entries(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag} {i}").into_bytes()).collect()
}

fn setup() -> (SpaceSecret, Address, SigningKey, SigningKey) {
    let secret = SpaceSecret::from_bytes([3; 32]);
    let address = secret.address();
    (
        secret,
        address,
        SigningKey::from_bytes(&[10; 32]),
        SigningKey::from_bytes(&[11; 32]),
    )
}

#[test]
fn member_to_seeder_replicates_everything_and_gets_acks() {
    let (secret, address, ka, _) = setup();
    let mut m = Mesh::new(2);
    m.nodes[0].hold(address);
    m.nodes[0].write(&secret, &ka, entries("a", 10));
    m.nodes[1].hold(address); // the seeder: the address only
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let fa = FeedKey::from(&ka);
    assert_eq!(m.feed_len(1, &address, &fa), 10);
    assert_eq!(m.nodes[1].spaces[&address][&fa].entries, entries("a", 10));
    let link = &m.links[l];
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    assert!(link.events.iter().any(|(n, e)| *n == 0
        && *e
            == Event::Acked {
                space: address,
                feed: fa,
                length: 10
            }));
    assert!(link.sa.is_caught_up(&m.nodes[0]));
    assert!(link.sb.is_caught_up(&m.nodes[1]));
}

#[test]
fn seeder_relays_between_members_never_online_together() {
    let (secret, address, ka, kb) = setup();
    let (fa, fb) = (FeedKey::from(&ka), FeedKey::from(&kb));
    let mut m = Mesh::new(3); // 0: member A, 1: seeder, 2: member B
    for n in 0..3 {
        m.nodes[n].hold(address);
    }
    m.nodes[0].write(&secret, &ka, entries("a", 7));
    m.nodes[2].write(&secret, &kb, entries("b", 5));
    let l1 = m.connect(0, 1);
    m.links[l1].sa.open(address).unwrap();
    m.drive_bounded();
    m.links.clear(); // A goes away
    let l2 = m.connect(2, 1);
    m.links[l2].sa.open(address).unwrap();
    m.drive_bounded();
    assert_eq!(
        m.feed_len(2, &address, &fa),
        7,
        "B got A's feed from the seeder"
    );
    m.links.clear();
    let l3 = m.connect(0, 1);
    m.links[l3].sa.open(address).unwrap();
    m.drive_bounded();
    assert_eq!(
        m.feed_len(0, &address, &fb),
        5,
        "A got B's feed from the seeder"
    );
    assert_eq!(m.nodes[0].spaces[&address][&fb].entries, entries("b", 5));
}

#[test]
fn new_heads_are_pushed_live_through_the_seeder() {
    let (secret, address, ka, kb) = setup();
    let fa = FeedKey::from(&ka);
    let mut m = Mesh::new(3);
    for n in 0..3 {
        m.nodes[n].hold(address);
    }
    m.nodes[0].write(&secret, &ka, entries("a", 2));
    m.nodes[2].write(&secret, &kb, entries("b", 2));
    let l1 = m.connect(0, 1);
    let l2 = m.connect(2, 1);
    m.links[l1].sa.open(address).unwrap();
    m.links[l2].sa.open(address).unwrap();
    m.drive_bounded();
    assert_eq!(m.feed_len(2, &address, &fa), 2);
    // A writes while everyone is connected.
    let mut more = entries("a", 2);
    more.extend(entries("a-live", 4));
    let head = m.nodes[0].write(&secret, &ka, entries("a-live", 4));
    assert_eq!(head.length, 6);
    m.announce(0, &address, &fa, &head, None);
    m.drive_bounded();
    assert_eq!(m.feed_len(1, &address, &fa), 6);
    assert_eq!(
        m.feed_len(2, &address, &fa),
        6,
        "B received A's live write via the seeder"
    );
    assert_eq!(m.nodes[2].spaces[&address][&fa].entries, more);
}

#[test]
fn a_transfer_cut_short_resumes_from_what_is_stored() {
    let (secret, address, ka, _) = setup();
    let fa = FeedKey::from(&ka);
    let mut m = Mesh::new(2);
    m.nodes[0].hold(address);
    m.nodes[1].hold(address);
    m.nodes[0].write(&secret, &ka, entries("a", 10));
    // The seeder already has the first 4 entries (a transfer that died half way).
    let partial: Vec<Message> = m.nodes[0]
        .serve(0, &address, &fa, 0, None)
        .into_iter()
        .take(1)
        .collect();
    m.nodes[1].feed(&address, fa).cert = Some(MembershipCert::issue(&secret, fa));
    for msg in partial {
        m.nodes[1].receive(&address, msg).unwrap();
    }
    assert_eq!(m.feed_len(1, &address, &fa), BATCH);
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    assert_eq!(m.nodes[1].spaces[&address][&fa].entries, entries("a", 10));
}

#[test]
fn a_peer_without_the_address_learns_nothing_and_is_cut_off() {
    let (secret, address, ka, _) = setup();
    let mut m = Mesh::new(2);
    m.nodes[1].hold(address);
    m.nodes[1].write(&secret, &ka, entries("a", 3));
    let l = m.connect(0, 1);
    let link = &mut m.links[l];
    // Hello each way first.
    let hello = link.sa.poll_transmit().unwrap().0;
    link.sb.handle_message(hello, &m.nodes[1]);
    let _ = link.sb.poll_transmit();
    // It knows the discovery key (say, from mDNS) but not the address.
    let wrong = SpaceSecret::from_bytes([9; 32]).address();
    for i in 0..MAX_FAILED_OPENS {
        link.sb.handle_message(
            Message::OpenSpace {
                space: 2 * i,
                discovery: address.discovery_key(),
                capability: Capability::new(&wrong, b"guess", Role::Dialer),
            },
            &m.nodes[1],
        );
        assert_eq!(link.sb.poll_transmit(), None, "not even a refusal");
        assert_eq!(link.sb.poll_action(), None);
    }
    link.sb.handle_message(
        Message::OpenSpace {
            space: 100,
            discovery: address.discovery_key(),
            capability: Capability::new(&wrong, b"guess", Role::Dialer),
        },
        &m.nodes[1],
    );
    assert_eq!(link.sb.poll_transmit(), None);
    assert!(matches!(
        link.sb.poll_action(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
}

#[test]
fn a_capability_from_another_connection_is_useless() {
    let (_, address, _, _) = setup();
    let mut node = Node::default();
    node.hold(address);
    let mut s = Session::new(Role::Listener, [1; 32], b"this connection".to_vec());
    let _ = s.poll_transmit();
    s.handle_message(
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [2; 32],
            features: 0,
        },
        &node,
    );
    // Valid for the address, but made on another connection (or replayed from one).
    s.handle_message(
        Message::OpenSpace {
            space: 0,
            discovery: address.discovery_key(),
            capability: Capability::new(&address, b"another connection", Role::Dialer),
        },
        &node,
    );
    assert_eq!(s.poll_transmit(), None);
    // And a capability reflected back in the listener's own role doesn't pass either.
    s.handle_message(
        Message::OpenSpace {
            space: 2,
            discovery: address.discovery_key(),
            capability: Capability::new(&address, b"this connection", Role::Listener),
        },
        &node,
    );
    assert_eq!(s.poll_transmit(), None);
    assert_eq!(s.open_spaces().count(), 0);
}

fn opened_pair(node_b: &Node, address: Address) -> (Session, Session) {
    let node_a = {
        let mut n = Node::default();
        n.hold(address);
        n
    };
    let mut a = Session::new(Role::Dialer, [1; 32], b"s".to_vec());
    let mut b = Session::new(Role::Listener, [2; 32], b"s".to_vec());
    a.open(address).unwrap();
    for _ in 0..4 {
        while let Some(Transmit(m)) = a.poll_transmit() {
            b.handle_message(m, node_b);
        }
        while let Some(Transmit(m)) = b.poll_transmit() {
            a.handle_message(m, &node_a);
        }
    }
    assert_eq!(b.open_spaces().count(), 1);
    while b.poll_action().is_some() {}
    while b.poll_event().is_some() {}
    (a, b)
}

#[test]
fn offers_with_bad_certificates_or_signatures_close_the_session() {
    let (secret, address, ka, _) = setup();
    let mut node = Node::default();
    node.hold(address);
    // A certificate from another space.
    let (_, mut b) = opened_pair(&node, address);
    let other = SpaceSecret::from_bytes([4; 32]);
    b.handle_message(
        Message::FeedList {
            space: 0,
            feeds: vec![FeedOffer {
                cert: MembershipCert::issue(&other, FeedKey::from(&ka)),
                head: None,
                prefix: None,
                damaged_from: None,
            }],
        },
        &node,
    );
    assert!(matches!(
        b.poll_action(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
    // A head with a bad signature.
    let (_, mut b) = opened_pair(&node, address);
    let mut scratch = Node::default();
    scratch.hold(address);
    let mut head = scratch.write(&secret, &ka, entries("a", 2));
    head.signature[0] ^= 1;
    b.handle_message(
        Message::FeedList {
            space: 0,
            feeds: vec![FeedOffer {
                cert: MembershipCert::issue(&secret, FeedKey::from(&ka)),
                head: Some(head),
                prefix: None,
                damaged_from: None,
            }],
        },
        &node,
    );
    assert!(b
        .poll_action()
        .is_some_and(|a| matches!(a, Action::AddFeed { .. })));
    assert!(matches!(
        b.poll_action(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
}

#[test]
fn protocol_order_and_version_are_enforced() {
    let node = Node::default();
    let mut s = Session::new(Role::Listener, [1; 32], b"s".to_vec());
    s.handle_message(Message::Goodbye { reason: "x".into() }, &node);
    assert!(matches!(
        s.poll_action(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
    let mut s = Session::new(Role::Listener, [1; 32], b"s".to_vec());
    s.handle_message(
        Message::Hello {
            version: PROTOCOL_VERSION + 1,
            node_id: [0; 32],
            features: 0,
        },
        &node,
    );
    assert_eq!(
        s.poll_action(),
        Some(Action::Close(SyncError::Version(PROTOCOL_VERSION + 1)))
    );
    let mut s = Session::new(Role::Listener, [1; 32], b"s".to_vec());
    s.handle_message(
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [0; 32],
            features: 0,
        },
        &node,
    );
    assert_eq!(s.space_of(4), None);
    assert!(matches!(
        s.poll_action(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
}

#[test]
fn a_full_space_stops_fetching_but_keeps_serving() {
    let (secret, address, ka, kb) = setup();
    let (fa, fb) = (FeedKey::from(&ka), FeedKey::from(&kb));
    let mut m = Mesh::new(2);
    m.nodes[0].hold(address);
    m.nodes[1].hold(address);
    m.nodes[0].write(&secret, &ka, entries("a", 4));
    m.nodes[1].write(&secret, &kb, entries("b", 4));
    m.nodes[1].full = true;
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    assert_eq!(
        m.feed_len(1, &address, &fa),
        0,
        "nothing fetched while full"
    );
    assert_eq!(m.feed_len(0, &address, &fb), 4, "still served");
    let quota = crate::wire::Refusal::Quota {
        held: 10,
        limit: 10,
    };
    assert!(m.links[l].events.iter().any(|(n, e)| *n == 1
        && *e
            == Event::Refusing {
                space: address,
                feed: fa,
                reason: quota.clone(),
            }));
    // The writer's side is told why, once, and is not left waiting.
    let told: Vec<_> = m.links[l]
        .events
        .iter()
        .filter(|(n, e)| *n == 0 && matches!(e, Event::Refused { .. }))
        .collect();
    assert_eq!(told.len(), 1, "one refusal: {told:?}");
    assert_eq!(
        m.links[l].sa.refusals(),
        vec![(address, fa, quota)],
        "the refusal is kept for the person syncing"
    );
    assert!(m.links[l].sa.is_caught_up(&m.nodes[0]));
    assert!(m.links[l].closed.is_empty());
}

#[test]
fn leaf_hashes_of_served_data_match_the_writer() {
    // Guard for the harness itself: what is served is what was written.
    let (secret, address, ka, _) = setup();
    let mut n = Node::default();
    n.hold(address);
    n.write(&secret, &ka, entries("a", 5));
    let msgs = n.serve(0, &address, &FeedKey::from(&ka), 0, None);
    let served: Vec<Hash> = msgs
        .iter()
        .flat_map(|m| match m {
            Message::Data { entries, .. } => {
                entries.iter().map(|e| leaf_hash(e)).collect::<Vec<_>>()
            }
            _ => vec![],
        })
        .collect();
    assert_eq!(
        served,
        entries("a", 5)
            .iter()
            .map(|e| leaf_hash(e))
            .collect::<Vec<_>>()
    );
}

#[test]
fn two_histories_of_equal_length_are_a_fork_both_sides_record_and_refuse() {
    // A writer restored from a backup wrote other entries up to the same length.
    let (secret, address, ka, _) = setup();
    let fa = FeedKey::from(&ka);
    let mut m = Mesh::new(2);
    m.nodes[0].hold(address);
    m.nodes[1].hold(address);
    m.nodes[0].write(&secret, &ka, entries("old", 5));
    m.nodes[1].write(&secret, &ka, entries("new", 5));
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let sides: Vec<usize> = m.links[l].forks.iter().map(|(n, _)| *n).collect();
    assert!(
        sides.contains(&0) && sides.contains(&1),
        "each side records the fork: {sides:?}"
    );
    for n in [0, 1] {
        assert!(m.links[l].events.iter().any(|(who, e)| *who == n
            && *e
                == Event::Forked {
                    space: address,
                    feed: fa
                }));
        assert!(
            m.links[l].events.iter().any(|(who, e)| *who == n
                && matches!(
                    e,
                    Event::Refused {
                        reason: crate::wire::Refusal::Frozen,
                        ..
                    }
                )),
            "each side is told the other refuses it"
        );
    }
    assert_eq!(m.feed_len(0, &address, &fa), 5, "nothing overwritten");
    assert!(
        m.links[l].closed.is_empty(),
        "a fork is no misbehaviour of the peer"
    );
}

#[test]
fn only_a_peer_holding_a_space_with_us_gets_introductions_and_punches() {
    let (_, address, _, _) = setup();
    let mut holder = Node::default();
    holder.hold(address);
    let addr: std::net::SocketAddr = "203.0.113.1:7428".parse().unwrap();

    // A stranger that said hello but opened nothing: its asks are dropped, and nothing of
    // ours goes to it.
    let mut s = Session::new(Role::Listener, [2; 32], b"s".to_vec());
    s.handle_message(
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [9; 32],
            features: 0,
        },
        &holder,
    );
    while s.poll_transmit().is_some() {}
    s.handle_message(Message::Introduce { node: [7; 32] }, &holder);
    s.handle_message(
        Message::Punch {
            node: [7; 32],
            addr,
            dial: true,
        },
        &holder,
    );
    assert!(s.poll_action().is_none());
    s.introduce([7; 32]);
    s.punch([7; 32], addr, false);
    assert_eq!(s.poll_transmit(), None);

    // A peer with an open space: both become actions, and ours are sent.
    let (mut a, mut b) = opened_pair(&holder, address);
    b.handle_message(Message::Introduce { node: [7; 32] }, &holder);
    assert_eq!(b.poll_action(), Some(Action::Introduce { node: [7; 32] }));
    b.handle_message(
        Message::Punch {
            node: [7; 32],
            addr,
            dial: true,
        },
        &holder,
    );
    assert_eq!(
        b.poll_action(),
        Some(Action::Punch {
            node: [7; 32],
            addr,
            dial: true
        })
    );
    while a.poll_transmit().is_some() {}
    a.introduce([7; 32]);
    assert_eq!(
        a.poll_transmit(),
        Some(Transmit(Message::Introduce { node: [7; 32] }))
    );
    // Never asked to introduce a peer to itself.
    a.introduce([2; 32]);
    assert_eq!(a.poll_transmit(), None);
}

// ---- governed spaces: membership records ----

/// A governed space: its address, its first owner's device key and its log so far.
struct Gov {
    secret: SpaceSecret,
    address: Address,
    owner: SigningKey,
    log: Vec<VerifiedRecord>,
}

impl Gov {
    fn new() -> Gov {
        let secret = SpaceSecret::from_bytes([5; 32]);
        let owner = SigningKey::from_bytes(&[20; 32]);
        let address = secret.address();
        let genesis = members::genesis(&secret, members::device_of(&owner))
            .verify(&address)
            .unwrap();
        Gov {
            secret,
            address,
            owner,
            log: vec![genesis],
        }
    }

    fn heads(&self) -> Vec<RecordId> {
        Membership::compute(&self.log).heads
    }

    /// The owner signs `change` after everything in the log.
    fn sign(&mut self, change: Change) -> VerifiedRecord {
        let r = Record::sign(&self.owner, self.address, self.heads(), change)
            .verify(&self.address)
            .unwrap();
        self.log.push(r.clone());
        r
    }

    fn invite(&mut self, secret: &[u8; 32], role: MemberRole) -> VerifiedRecord {
        let ik = InviteKeys::from_secret(secret);
        self.sign(Change::Invite {
            invite: ik.public(),
            invite_box: ik.box_public(),
            role,
            key: KeyId([0; 8]),
            sealed: vec![0; SEALED_KEY_LEN],
            label: Vec::new(),
        })
    }

    /// `device` joins with the invite of `secret`.
    fn join(&mut self, secret: &[u8; 32], device: &SigningKey) -> VerifiedRecord {
        let r = join(self.address, secret, device, self.heads());
        self.log.push(r.clone());
        r
    }

    /// A writer invited and joined: its device key.
    fn writer(&mut self, n: u8) -> SigningKey {
        let device = SigningKey::from_bytes(&[n; 32]);
        self.invite(&[n; 32], MemberRole::Writer);
        self.join(&[n; 32], &device);
        device
    }
}

/// The Join of `device` through the invite of `secret`.
fn join(
    address: Address,
    secret: &[u8; 32],
    device: &SigningKey,
    parents: Vec<RecordId>,
) -> VerifiedRecord {
    use ed25519_dalek::Signer;
    let keys = InviteKeys::from_secret(secret);
    let dev = members::device_of(device);
    let device_signature = device
        .sign(&members::join_bytes(&address, &keys.public(), &dev))
        .to_bytes();
    Record::sign(
        &keys.signing,
        address,
        parents,
        Change::Join {
            invite: keys.public(),
            device: dev,
            device_signature,
        },
    )
    .verify(&address)
    .unwrap()
}

/// Where in a link's transcript `from` first said something matching `what`.
fn first_said(link: &Link, from: usize, what: impl Fn(&Message) -> bool) -> Option<usize> {
    link.said
        .iter()
        .position(|(who, msg)| *who == from && what(msg))
}

/// The records `from` sent on a link (acknowledgements left out).
fn records_said(link: &Link, from: usize) -> Vec<Record> {
    link.said
        .iter()
        .filter(|(who, _)| *who == from)
        .flat_map(|(_, msg)| match msg {
            Message::Members { records, .. } => records.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn is_list(m: &Message) -> bool {
    matches!(m, Message::FeedList { .. })
}

fn is_records(m: &Message) -> bool {
    matches!(m, Message::Members { records, .. } if !records.is_empty())
}

#[test]
fn membership_records_go_before_the_feed_list_and_a_seeder_takes_the_members_feeds() {
    let mut gov = Gov::new();
    let writer = gov.writer(21);
    let (address, owner) = (gov.address, FeedKey::from(&gov.owner));
    let mut m = Mesh::new(2);
    m.nodes[0].records.insert(address, gov.log.clone());
    m.nodes[0].write_own(address, &gov.owner, entries("o", 2));
    m.nodes[0].write_own(address, &writer, entries("w", 4));
    m.nodes[1].hold(address); // a seeder given the seed code: no records yet
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let link = &m.links[l];
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    let records = first_said(link, 0, is_records).expect("the member sent its records");
    let list = first_said(link, 0, is_list).expect("and its feed list");
    assert!(records < list, "records first: {:?}", link.said);
    assert_eq!(m.nodes[1].records[&address].len(), gov.log.len());
    assert_eq!(m.feed_len(1, &address, &owner), 2);
    assert_eq!(m.feed_len(1, &address, &FeedKey::from(&writer)), 4);
    assert!(
        records_said(link, 1).is_empty(),
        "nothing echoed back to the member that sent them"
    );
    assert!(link.sa.is_caught_up(&m.nodes[0]));
    assert!(link.sb.is_caught_up(&m.nodes[1]));
}

#[test]
fn feeds_the_membership_does_not_admit_are_not_taken_and_the_session_stays_up() {
    let mut gov = Gov::new();
    let address = gov.address;
    // A reader (invited and joined as one) and a stranger (never in the log).
    let reader = SigningKey::from_bytes(&[22; 32]);
    gov.invite(&[22; 32], MemberRole::Reader);
    gov.join(&[22; 32], &reader);
    let stranger = SigningKey::from_bytes(&[30; 32]);
    let mut m = Mesh::new(2);
    m.nodes[0].records.insert(address, gov.log.clone());
    m.nodes[0].write_own(address, &gov.owner, entries("o", 2));
    m.nodes[0].write_own(address, &reader, entries("r", 2));
    m.nodes[0].write_own(address, &stranger, entries("x", 3));
    m.nodes[1].records.insert(address, gov.log.clone());
    m.nodes[1].hold(address);
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let link = &m.links[l];
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    assert_eq!(m.feed_len(1, &address, &FeedKey::from(&gov.owner)), 2);
    for (who, key) in [("reader", &reader), ("stranger", &stranger)] {
        let feed = FeedKey::from(key);
        assert!(
            !m.nodes[1].spaces[&address].contains_key(&feed),
            "the {who}'s feed is not taken"
        );
    }
    assert!(link.sa.is_caught_up(&m.nodes[0]));
    assert!(link.sb.is_caught_up(&m.nodes[1]));

    // A certificate signed with the space key has no place in a governed space: forged.
    let mut node = Node::default();
    node.hold(address);
    node.records.insert(address, gov.log.clone());
    let (_, mut b) = opened_pair(&node, address);
    b.handle_message(
        Message::FeedList {
            space: 0,
            feeds: vec![FeedOffer {
                cert: MembershipCert::issue(&gov.secret, FeedKey::from(&gov.owner)),
                head: None,
                prefix: None,
                damaged_from: None,
            }],
        },
        &node,
    );
    assert!(matches!(
        std::iter::from_fn(|| b.poll_action()).last(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
}

#[test]
fn a_removed_writers_entries_past_the_freeze_point_are_refused_and_never_served() {
    let mut gov = Gov::new();
    let writer = gov.writer(21);
    let address = gov.address;
    let fw = FeedKey::from(&writer);
    let mut m = Mesh::new(2);
    // The seeder knows the writer; the member also knows it was removed after 3 entries
    // (and holds 6: it got the last 3 before the removal reached it).
    m.nodes[1].records.insert(address, gov.log.clone());
    m.nodes[1].hold(address);
    gov.sign(Change::Remove {
        member: fw.0,
        at: 3,
    });
    m.nodes[0].records.insert(address, gov.log.clone());
    m.nodes[0].write_own(address, &writer, entries("w", 6));
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let link = &m.links[l];
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    assert_eq!(
        m.nodes[1].records[&address].len(),
        gov.log.len(),
        "the removal reached the seeder first"
    );
    assert_eq!(
        m.feed_len(1, &address, &fw),
        3,
        "up to the freeze point only"
    );
    assert_eq!(m.nodes[1].spaces[&address][&fw].entries, entries("w", 3));
    assert!(link.events.iter().any(|(n, e)| *n == 1
        && *e
            == Event::Refusing {
                space: address,
                feed: fw,
                reason: Refusal::Removed
            }));
    assert!(link.events.iter().any(|(n, e)| *n == 0
        && *e
            == Event::Refused {
                space: address,
                feed: fw,
                reason: Refusal::Removed
            }));
    assert!(link.sa.is_caught_up(&m.nodes[0]));
    assert!(link.sb.is_caught_up(&m.nodes[1]));

    // Asked for more anyway, the seeder serves nothing past the point.
    let (_, mut b) = opened_pair(&m.nodes[1], address);
    b.handle_message(
        Message::Want {
            space: 0,
            feed: fw,
            from: 3,
        },
        &m.nodes[1],
    );
    assert!(b.poll_action().is_none(), "nothing served");
    assert!(std::iter::from_fn(|| b.poll_transmit())
        .any(|t| matches!(t.0, Message::Unavailable { from: 3, .. })));
    b.handle_message(
        Message::Want {
            space: 0,
            feed: fw,
            from: 1,
        },
        &m.nodes[1],
    );
    assert!(matches!(
        b.poll_action(),
        Some(Action::Serve {
            from: 1,
            to: Some(3),
            ..
        })
    ));
}

#[test]
fn a_seeder_relays_records_between_members_never_online_together_and_no_feed_is_lost() {
    let mut gov = Gov::new();
    let address = gov.address;
    let device = SigningKey::from_bytes(&[23; 32]);
    let fd = FeedKey::from(&device);
    let fo = FeedKey::from(&gov.owner);
    gov.invite(&[23; 32], MemberRole::Writer);
    let mut m = Mesh::new(3); // 0: owner, 1: seeder, 2: the invited device
    m.nodes[0].records.insert(address, gov.log.clone());
    m.nodes[0].write_own(address, &gov.owner, entries("o", 2));
    m.nodes[1].hold(address);
    // The device has only its invite code: no records, a feed of its own.
    m.nodes[2].invite = Some(([23; 32], device.clone()));
    m.nodes[2].write_own(address, &device, entries("d", 3));

    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    m.links.clear(); // the owner goes away

    let l = m.connect(2, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let link = &m.links[l];
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    // The device listed its feed before it could join: the seeder kept the offer and took
    // the feed once the Join came.
    let list = first_said(link, 2, is_list).unwrap();
    let join_sent = first_said(link, 2, is_records).unwrap();
    assert!(list < join_sent, "{:?}", link.said);
    assert_eq!(
        records_said(link, 2).len(),
        1,
        "only its Join: the rest the seeder has"
    );
    assert_eq!(m.feed_len(1, &address, &fd), 3);
    assert_eq!(
        m.feed_len(2, &address, &fo),
        2,
        "the owner's feed, through the seeder"
    );
    assert!(link.sa.is_caught_up(&m.nodes[2]));
    assert!(link.sb.is_caught_up(&m.nodes[1]));
    m.links.clear();

    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let link = &m.links[l];
    // Each side sends what it holds once when the space opens (neither knows yet what the
    // other holds), and nothing twice.
    let sent = records_said(link, 1);
    let ids: std::collections::BTreeSet<RecordId> = sent.iter().map(Record::id).collect();
    assert_eq!(ids.len(), sent.len(), "no record sent twice");
    assert_eq!(m.nodes[0].records[&address].len(), gov.log.len() + 1);
    assert_eq!(m.nodes[0].spaces[&address][&fd].entries, entries("d", 3));
}

#[test]
fn records_made_on_one_member_reach_another_live_and_go_back_to_nobody() {
    let mut gov = Gov::new();
    let address = gov.address;
    let mut m = Mesh::new(3); // 0: owner, 1: seeder, 2: another member
    let member = gov.writer(24);
    for n in 0..3 {
        m.nodes[n].records.insert(address, gov.log.clone());
        m.nodes[n].hold(address);
    }
    m.nodes[2].write_own(address, &member, entries("m", 1));
    let l1 = m.connect(0, 1);
    let l2 = m.connect(2, 1);
    m.links[l1].sa.open(address).unwrap();
    m.links[l2].sa.open(address).unwrap();
    m.drive_bounded();
    let before = (m.links[l1].said.len(), m.links[l2].said.len());
    // The owner invites someone while everyone is connected.
    let invite = gov.invite(&[25; 32], MemberRole::Reader);
    m.nodes[0]
        .records
        .get_mut(&address)
        .unwrap()
        .push(invite.clone());
    m.announce_records(0, &address, &[invite.record().clone()], None);
    m.drive_bounded();
    assert!(
        m.nodes[2].records[&address].contains(&invite),
        "relayed live"
    );
    let after = |link: &Link, from: usize, since: usize| -> Vec<Record> {
        link.said[since..]
            .iter()
            .filter(|(who, _)| *who == from)
            .flat_map(|(_, m)| match m {
                Message::Members { records, .. } => records.clone(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(
        after(&m.links[l1], 0, before.0),
        vec![invite.record().clone()]
    );
    assert!(
        after(&m.links[l1], 1, before.0).is_empty(),
        "not echoed to the owner"
    );
    assert_eq!(
        after(&m.links[l2], 1, before.1),
        vec![invite.record().clone()]
    );
    assert!(
        after(&m.links[l2], 2, before.1).is_empty(),
        "nor back from the member"
    );
    for l in [l1, l2] {
        assert!(m.links[l].closed.is_empty());
    }
}

#[test]
fn bad_membership_records_close_the_session() {
    let gov = Gov::new();
    let mut node = Node::default();
    node.hold(gov.address);
    // A bad signature.
    let (_, mut b) = opened_pair(&node, gov.address);
    let mut bad = gov.log[0].record().clone();
    bad.signature[0] ^= 1;
    b.handle_message(
        Message::Members {
            space: 0,
            records: vec![bad],
        },
        &node,
    );
    assert!(matches!(
        b.poll_action(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
    // A record of another space.
    let (_, mut b) = opened_pair(&node, gov.address);
    let other = SpaceSecret::from_bytes([6; 32]);
    b.handle_message(
        Message::Members {
            space: 0,
            records: vec![members::genesis(&other, members::device_of(&gov.owner))],
        },
        &node,
    );
    assert!(matches!(
        b.poll_action(),
        Some(Action::Close(SyncError::PeerMisbehaved(_)))
    ));
    // A good one is kept, and acknowledged.
    let (_, mut b) = opened_pair(&node, gov.address);
    b.handle_message(
        Message::Members {
            space: 0,
            records: vec![gov.log[0].record().clone()],
        },
        &node,
    );
    assert_eq!(
        b.poll_action(),
        Some(Action::AddRecords {
            space: gov.address,
            records: vec![gov.log[0].clone()]
        })
    );
    assert_eq!(
        b.poll_transmit(),
        None,
        "acknowledged once kept, not before"
    );
    node.records.insert(gov.address, vec![gov.log[0].clone()]);
    b.handle_records_added(&gov.address, &[gov.log[0].record().clone()], &node);
    assert_eq!(
        b.poll_transmit(),
        Some(Transmit(Message::Members {
            space: 0,
            records: Vec::new()
        })),
        "not sent back to the peer it came from"
    );
}

#[test]
fn a_joining_device_is_not_caught_up_before_its_join_is_taken_by_the_peer() {
    let mut gov = Gov::new();
    let address = gov.address;
    gov.invite(&[26; 32], MemberRole::Writer);
    let device = SigningKey::from_bytes(&[26; 32]);
    let fd = FeedKey::from(&device);
    let mut seeder = Node::default();
    seeder.hold(address);
    seeder.records.insert(address, gov.log.clone());
    // The device holds its invite and an empty feed of its own, nothing else.
    let mut member = Node::default();
    member.hold(address);
    member.feed(&address, fd).cert = Some(MembershipCert::own(&device, address));
    member.invite = Some(([26; 32], device));
    let mut a = Session::new(Role::Dialer, [1; 32], b"s".to_vec());
    let mut b = Session::new(Role::Listener, [2; 32], b"s".to_vec());
    a.open(address).unwrap();
    let mut acked = false;
    for _ in 0..MAX_STEPS {
        let mut moved = false;
        while let Some(Transmit(msg)) = a.poll_transmit() {
            moved = true;
            b.handle_message(msg, &seeder);
        }
        while let Some(action) = b.poll_action() {
            match action {
                Action::AddRecords { space, records } => {
                    let new: Vec<Record> = seeder
                        .add_records(&space, records)
                        .into_iter()
                        .map(VerifiedRecord::into_record)
                        .collect();
                    b.handle_records_added(&space, &new, &seeder);
                }
                Action::AddFeed { space, cert } => {
                    let feed = cert.feed;
                    seeder.feed(&space, feed).cert = Some(cert);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // One message at a time to the device, which must not call itself done too early.
        if let Some(Transmit(msg)) = b.poll_transmit() {
            moved = true;
            acked |= matches!(&msg, Message::Members { records, .. } if records.is_empty());
            a.handle_message(msg, &member);
            while let Some(action) = a.poll_action() {
                if let Action::AddRecords { space, records } = action {
                    let new: Vec<Record> = member
                        .add_records(&space, records)
                        .into_iter()
                        .map(VerifiedRecord::into_record)
                        .collect();
                    a.handle_records_added(&space, &new, &member);
                }
            }
            if a.is_caught_up(&member) {
                assert!(acked, "caught up before the peer took the Join");
                break;
            }
        }
        if !moved {
            break;
        }
    }
    assert!(a.is_caught_up(&member));
    assert!(
        seeder.spaces[&address][&fd].cert.is_some(),
        "the seeder took the device's feed before the device was done"
    );

    // A peer from before roles (no feature bits) gets no records, and isn't waited for.
    let mut old = Session::new(Role::Listener, [3; 32], b"s".to_vec());
    let _ = old.poll_transmit();
    old.handle_message(
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [4; 32],
            features: 0,
        },
        &seeder,
    );
    old.handle_message(
        Message::OpenSpace {
            space: 0,
            discovery: address.discovery_key(),
            capability: Capability::new(&address, b"s", Role::Dialer),
        },
        &seeder,
    );
    let said: Vec<Message> = std::iter::from_fn(|| old.poll_transmit().map(|t| t.0)).collect();
    assert!(matches!(said[0], Message::OpenSpace { .. }));
    assert!(
        !said.iter().any(|m| matches!(m, Message::Members { .. })),
        "{said:?}"
    );
}

#[test]
fn offers_not_admitted_are_kept_within_their_bound_and_never_close_the_session() {
    let gov = Gov::new();
    let mut node = Node::default();
    node.hold(gov.address);
    node.records.insert(gov.address, gov.log.clone());
    let (_, mut b) = opened_pair(&node, gov.address);
    let strangers: Vec<SigningKey> = (0..MAX_WITHHELD_OFFERS + 6)
        .map(|i| SigningKey::from_bytes(&[(i as u8).wrapping_add(100); 32]))
        .collect();
    let mut scratch = Node::default();
    let feeds: Vec<FeedOffer> = strangers
        .iter()
        .map(|k| FeedOffer {
            cert: MembershipCert::own(k, gov.address),
            head: Some(scratch.write_own(gov.address, k, entries("x", 1))),
            prefix: None,
            damaged_from: None,
        })
        .collect();
    b.handle_message(
        Message::FeedList {
            space: 0,
            feeds: feeds.clone(),
        },
        &node,
    );
    // Heads of kept offers and of dropped ones alike.
    for k in [&strangers[0], strangers.last().unwrap()] {
        let head = scratch.write_own(gov.address, k, entries("y", 1));
        b.handle_message(Message::Head { space: 0, head }, &node);
    }
    assert_eq!(b.poll_action(), None, "nothing taken, nothing closed");
    assert!(!std::iter::from_fn(|| b.poll_transmit()).any(|t| matches!(t.0, Message::Want { .. })));
    let kept = b
        .open
        .values()
        .map(|s| s.withheld_offers.len())
        .sum::<usize>();
    assert_eq!(kept, MAX_WITHHELD_OFFERS);
}

/// What `from` said on a link of the space, besides opening it, acknowledging records and
/// denying it.
fn said_of_space(link: &Link, from: usize) -> Vec<Message> {
    link.said
        .iter()
        .filter(|(who, m)| {
            *who == from
                && !matches!(
                    m,
                    Message::Hello { .. } | Message::OpenSpace { .. } | Message::Denied { .. }
                )
                && !matches!(m, Message::Members { records, .. } if records.is_empty())
        })
        .map(|(_, m)| m.clone())
        .collect()
}

fn denied(link: &Link, by: usize, reason: Denial) -> bool {
    link.said.iter().any(|(who, m)| {
        *who == by && matches!(m, Message::Denied { reason: r, .. } if *r == reason)
    })
}

/// A seeder (node 1, partners only) holding `gov`'s log and the owner's feed.
fn gated_seeder(m: &mut Mesh, gov: &Gov) {
    let address = gov.address;
    m.nodes[1].records.insert(address, gov.log.clone());
    m.nodes[1].write_own(address, &gov.owner, entries("o", 3));
    m.nodes[1].partners = Some(Default::default());
}

#[test]
fn a_seeder_serves_a_governed_space_to_its_devices_and_denies_a_removed_one() {
    let mut gov = Gov::new();
    let writer = gov.writer(21);
    let removed = gov.writer(22);
    let (address, fr) = (gov.address, FeedKey::from(&removed));
    gov.sign(Change::Remove {
        member: fr.0,
        at: 1,
    });
    let mut m = Mesh::new(3);
    gated_seeder(&mut m, &gov);
    // A writer still in the space: served both ways.
    m.nodes[0].records.insert(address, gov.log.clone());
    m.nodes[0].write_own(address, &writer, entries("w", 2));
    m.nodes[0].device = Some(writer.clone());
    // The removed device, holding the log from before its removal and writing on.
    let before: Vec<VerifiedRecord> = gov.log[..gov.log.len() - 1].to_vec();
    m.nodes[2].records.insert(address, before);
    m.nodes[2].write_own(address, &removed, entries("r", 4));
    m.nodes[2].device = Some(removed.clone());
    let ok = m.connect(0, 1);
    let gone = m.connect(2, 1);
    m.links[ok].sa.open(address).unwrap();
    m.links[gone].sa.open(address).unwrap();
    m.drive_bounded();

    let link = &m.links[ok];
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    assert_eq!(m.feed_len(0, &address, &FeedKey::from(&gov.owner)), 3);
    assert_eq!(m.feed_len(1, &address, &FeedKey::from(&writer)), 2);
    assert!(link.sa.is_caught_up(&m.nodes[0]) && link.sb.is_caught_up(&m.nodes[1]));

    let link = &m.links[gone];
    assert!(
        link.closed.is_empty(),
        "denied, not closed: {:?}",
        link.closed
    );
    assert!(denied(link, 1, Denial::Removed), "{:?}", link.said);
    assert_eq!(
        said_of_space(link, 1),
        vec![Message::Members {
            space: 0,
            records: vec![gov.log.last().unwrap().record().clone()]
        }],
        "the seeder said nothing of the space to the removed device but its removal"
    );
    assert!(
        Membership::compute(&m.nodes[2].records[&address]).members[&fr].removed,
        "the removed device learned that it was"
    );
    assert_eq!(m.feed_len(2, &address, &FeedKey::from(&gov.owner)), 0);
    assert_eq!(
        m.feed_len(1, &address, &fr),
        0,
        "nothing taken from it either"
    );
    assert_eq!(link.sa.denials(), vec![(address, Denial::Removed)]);
    assert!(link.events.iter().any(|(n, e)| *n == 2
        && *e
            == Event::Denied {
                space: address,
                reason: Denial::Removed
            }));
    assert!(
        link.sa.is_caught_up(&m.nodes[2]) && link.sb.is_caught_up(&m.nodes[1]),
        "a denied space is settled on both sides"
    );
    // Asked for data anyway, the seeder serves nothing.
    let mut sb = std::mem::replace(
        &mut m.links[gone].sb,
        Session::new(Role::Listener, [9; 32], Vec::new()),
    );
    sb.handle_message(
        Message::Want {
            space: 0,
            feed: FeedKey::from(&gov.owner),
            from: 0,
        },
        &m.nodes[1],
    );
    assert!(sb.poll_action().is_none());
    assert!(sb.poll_transmit().is_none());
}

#[test]
fn a_seeder_denies_a_peer_that_proves_no_device_unless_it_is_a_partner() {
    let gov = Gov::new();
    let address = gov.address;
    for partner in [false, true] {
        let mut m = Mesh::new(2);
        gated_seeder(&mut m, &gov);
        if partner {
            m.nodes[1].partners = Some([[0u8; 32]].into_iter().collect());
        }
        // Node 0 knows the seed code only (a removed device that keeps quiet, or a stranger
        // seeder).
        m.nodes[0].hold(address);
        let l = m.connect(0, 1);
        m.links[l].sa.open(address).unwrap();
        m.drive_bounded();
        let link = &m.links[l];
        assert!(link.closed.is_empty(), "{:?}", link.closed);
        if partner {
            assert_eq!(m.feed_len(0, &address, &FeedKey::from(&gov.owner)), 3);
            assert!(!denied(link, 1, Denial::NotAMember));
        } else {
            assert!(denied(link, 1, Denial::NotAMember), "{:?}", link.said);
            assert_eq!(said_of_space(link, 1), Vec::<Message>::new());
            assert_eq!(m.feed_len(0, &address, &FeedKey::from(&gov.owner)), 0);
        }
        assert!(link.sa.is_caught_up(&m.nodes[0]) && link.sb.is_caught_up(&m.nodes[1]));
    }
}

#[test]
fn a_device_joining_through_the_seeder_is_served_once_its_join_is_taken() {
    let mut gov = Gov::new();
    let address = gov.address;
    gov.invite(&[26; 32], MemberRole::Writer);
    let device = SigningKey::from_bytes(&[26; 32]);
    let fd = FeedKey::from(&device);
    let mut m = Mesh::new(2);
    gated_seeder(&mut m, &gov);
    // The device has its invite and an empty feed of its own, no records.
    m.nodes[0].hold(address);
    m.nodes[0].feed(&address, fd).cert = Some(MembershipCert::own(&device, address));
    m.nodes[0].invite = Some(([26; 32], device));
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    let link = &m.links[l];
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    assert!(!denied(link, 1, Denial::NotAMember), "{:?}", link.said);
    assert_eq!(m.feed_len(0, &address, &FeedKey::from(&gov.owner)), 3);
    assert!(link.sa.is_caught_up(&m.nodes[0]) && link.sb.is_caught_up(&m.nodes[1]));
}

#[test]
fn a_device_removed_while_connected_is_denied_at_once() {
    let mut gov = Gov::new();
    let writer = gov.writer(21);
    let (address, fw) = (gov.address, FeedKey::from(&writer));
    let mut m = Mesh::new(3);
    gated_seeder(&mut m, &gov);
    m.nodes[0].records.insert(address, gov.log.clone());
    m.nodes[0].device = Some(writer.clone());
    m.nodes[0].write_own(address, &writer, entries("w", 2));
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    assert!(!denied(&m.links[l], 1, Denial::Removed));
    // The owner (node 2) removes the writer and syncs with the seeder.
    gov.sign(Change::Remove {
        member: fw.0,
        at: 2,
    });
    m.nodes[2].records.insert(address, gov.log.clone());
    m.nodes[2].device = Some(gov.owner.clone());
    m.nodes[2].write_own(address, &gov.owner, entries("o", 5));
    let o = m.connect(2, 1);
    m.links[o].sa.open(address).unwrap();
    m.drive_bounded();
    let link = &m.links[l];
    assert!(denied(link, 1, Denial::Removed), "{:?}", link.said);
    assert!(link.closed.is_empty(), "{:?}", link.closed);
    assert!(Membership::compute(&m.nodes[0].records[&address]).members[&fw].removed);
    assert_eq!(m.feed_len(1, &address, &FeedKey::from(&gov.owner)), 5);
    assert_eq!(
        m.feed_len(0, &address, &FeedKey::from(&gov.owner)),
        3,
        "nothing the owner wrote after the removal reached the removed device"
    );
}

#[test]
fn a_device_proof_is_bound_to_its_connection_space_and_side() {
    let gov = Gov::new();
    let address = gov.address;
    let mut seeder = Node::default();
    seeder.records.insert(address, gov.log.clone());
    seeder.hold(address);
    seeder.partners = Some(Default::default());
    let other = SpaceSecret::from_bytes([9; 32]).address();
    let cases = [
        (
            "another connection",
            DeviceProof::sign(&gov.owner, &address, b"other", Role::Dialer),
        ),
        (
            "another space",
            DeviceProof::sign(&gov.owner, &other, b"s", Role::Dialer),
        ),
        (
            "the other side",
            DeviceProof::sign(&gov.owner, &address, b"s", Role::Listener),
        ),
    ];
    // The seeder's side of a connection whose dialer opened the space and said nothing more.
    let pending = || {
        let mut b = Session::new(Role::Listener, [2; 32], b"s".to_vec());
        for m in [
            Message::Hello {
                version: PROTOCOL_VERSION,
                node_id: [1; 32],
                features: FEATURE_MEMBERS,
            },
            Message::OpenSpace {
                space: 0,
                discovery: address.discovery_key(),
                capability: Capability::new(&address, b"s", Role::Dialer),
            },
        ] {
            b.handle_message(m, &seeder);
        }
        let said: Vec<Message> = std::iter::from_fn(|| b.poll_transmit().map(|t| t.0)).collect();
        assert!(
            matches!(said.last(), Some(Message::OpenSpace { .. })),
            "{said:?}"
        );
        while b.poll_action().is_some() {}
        b
    };
    for (what, proof) in cases {
        let mut b = pending();
        b.handle_message(
            Message::Device {
                space: 0,
                proof,
                invite: None,
            },
            &seeder,
        );
        assert!(
            matches!(
                std::iter::from_fn(|| b.poll_action()).last(),
                Some(Action::Close(SyncError::PeerMisbehaved(_)))
            ),
            "a proof for {what} closes the session"
        );
    }
    // The right one, twice: the second closes.
    let mut b = pending();
    let proof = DeviceProof::sign(&gov.owner, &address, b"s", Role::Dialer);
    b.handle_message(
        Message::Device {
            space: 0,
            proof,
            invite: None,
        },
        &seeder,
    );
    assert!(!std::iter::from_fn(|| b.poll_action()).any(|a| matches!(a, Action::Close(_))));
    b.handle_message(
        Message::Device {
            space: 0,
            proof,
            invite: None,
        },
        &seeder,
    );
    assert!(std::iter::from_fn(|| b.poll_action()).any(|a| matches!(a, Action::Close(_))));
}

#[test]
fn a_peer_from_before_roles_is_told_nothing_of_a_governed_space() {
    let gov = Gov::new();
    let address = gov.address;
    let mut m = Mesh::new(2);
    gated_seeder(&mut m, &gov);
    let seeder = &m.nodes[1];
    let mut b = Session::new(Role::Listener, [2; 32], b"s".to_vec());
    for msg in [
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [1; 32],
            features: 0,
        },
        Message::OpenSpace {
            space: 0,
            discovery: address.discovery_key(),
            capability: Capability::new(&address, b"s", Role::Dialer),
        },
        Message::FeedList {
            space: 0,
            feeds: Vec::new(),
        },
    ] {
        b.handle_message(msg, seeder);
    }
    let said: Vec<Message> = std::iter::from_fn(|| b.poll_transmit().map(|t| t.0)).collect();
    assert!(
        matches!(
            &said[..],
            [Message::Hello { .. }, Message::OpenSpace { .. }]
        ),
        "{said:?}"
    );
    assert!(!std::iter::from_fn(|| b.poll_action()).any(|a| matches!(a, Action::Close(_))));
    assert_eq!(b.open_spaces().count(), 0);
}

#[test]
fn a_hello_naming_another_node_than_the_tls_certificate_ends_the_session() {
    let node = Node::default();
    let mut s = Session::new(Role::Listener, [2; 32], b"s".to_vec()).authenticated([7; 32]);
    s.handle_message(
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [8; 32],
            features: FEATURE_MEMBERS,
        },
        &node,
    );
    assert!(std::iter::from_fn(|| s.poll_action()).any(|a| matches!(a, Action::Close(_))));
    assert_eq!(s.peer(), None);
    let mut s = Session::new(Role::Listener, [2; 32], b"s".to_vec()).authenticated([7; 32]);
    s.handle_message(
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [7; 32],
            features: FEATURE_MEMBERS,
        },
        &node,
    );
    assert_eq!(s.peer(), Some([7; 32]));
}

#[test]
fn a_removal_stored_but_not_yet_announced_is_judged_before_anything_is_served() {
    let mut gov = Gov::new();
    let writer = gov.writer(21);
    let (address, fw) = (gov.address, FeedKey::from(&writer));
    let mut m = Mesh::new(2);
    gated_seeder(&mut m, &gov);
    m.nodes[0].hold(address);
    m.nodes[0].records.insert(address, gov.log.clone());
    m.nodes[0].device = Some(writer.clone());
    let l = m.connect(0, 1);
    m.links[l].sa.open(address).unwrap();
    m.drive_bounded();
    assert_eq!(m.feed_len(0, &address, &FeedKey::from(&gov.owner)), 3);
    // The removal reaches the seeder's log; this session hasn't heard of it yet.
    let removal = gov.sign(Change::Remove {
        member: fw.0,
        at: 0,
    });
    m.nodes[1].records.get_mut(&address).unwrap().push(removal);
    let (nodes, link) = (&m.nodes, &mut m.links[l]);
    link.sb.handle_message(
        Message::Want {
            space: 0,
            feed: FeedKey::from(&gov.owner),
            from: 0,
        },
        &nodes[1],
    );
    assert!(
        !std::iter::from_fn(|| link.sb.poll_action()).any(|a| matches!(a, Action::Serve { .. }))
    );
    assert!(
        std::iter::from_fn(|| link.sb.poll_transmit()).any(|t| matches!(
            t.0,
            Message::Denied {
                reason: Denial::Removed,
                ..
            }
        ))
    );
}
