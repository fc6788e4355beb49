//! Real QUIC over UDP on 127.0.0.1, bounded by timeouts.

use super::*;
use crate::wire::WireError;
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(20);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn pair() -> (Endpoint, Endpoint, Connection, Connection) {
    let a = Endpoint::bind(local(), Arc::new(NodeIdentity::generate())).unwrap();
    let b = Endpoint::bind(local(), Arc::new(NodeIdentity::generate())).unwrap();
    let addr = b.local_addr().unwrap();
    let expected = b.node_id();
    let (dialed, accepted) = tokio::join!(a.connect(addr, Some(expected)), b.accept());
    let accepted = accepted.unwrap().unwrap();
    accepted.open_up();
    (a, b, dialed.unwrap(), accepted)
}

#[tokio::test]
async fn both_ends_learn_each_others_node_ids_and_share_the_exporter_secret() {
    tokio::time::timeout(BOUND, async {
        let (a, b, ca, cb) = pair().await;
        assert_eq!(ca.peer, b.node_id());
        assert_eq!(cb.peer, a.node_id());
        let sa = ca.capability_secret().unwrap();
        assert_eq!(sa, cb.capability_secret().unwrap());
        // Another connection between the same nodes has another secret.
        let addr = b.local_addr().unwrap();
        let (c2, _) = tokio::join!(a.connect(addr, None), b.accept());
        assert_ne!(c2.unwrap().capability_secret().unwrap(), sa);
        assert_eq!(
            ca.conn.handshake_data().and_then(|h| h
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()
                .and_then(|h| h.protocol)),
            Some(crate::wire::ALPN.to_vec())
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_dialer_pinning_another_id_does_not_connect() {
    tokio::time::timeout(BOUND, async {
        let a = Endpoint::bind(local(), Arc::new(NodeIdentity::generate())).unwrap();
        let b = Endpoint::bind(local(), Arc::new(NodeIdentity::generate())).unwrap();
        let wrong = NodeIdentity::generate().node_id();
        let addr = b.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let r = b.accept().await;
            (r.map(|r| r.is_ok()), b)
        });
        let dialed = a.connect(addr, Some(wrong)).await;
        assert!(dialed.is_err(), "connected to an impostor");
        a.close("done");
        let _ = tokio::time::timeout(Duration::from_secs(2), accept).await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn messages_cross_a_stream_and_an_oversized_frame_is_refused_unread() {
    tokio::time::timeout(BOUND, async {
        let (_a, _b, ca, cb) = pair().await;
        let (mut send, _) = ca.conn.open_bi().await.unwrap();
        let hello = Message::Hello {
            version: crate::wire::PROTOCOL_VERSION,
            node_id: [1; 32],
            features: 0,
        };
        send_message(&mut send, &hello).await.unwrap();
        // Then a length prefix far over the limit, and no body at all.
        send.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        let (_, recv) = cb.conn.accept_bi().await.unwrap();
        let mut frames = Frames::new(recv, Budget::new(frames::node_budget(), true));
        assert_eq!(frames.message().await.unwrap(), Some(hello));
        let err = frames.message().await.unwrap_err();
        assert!(matches!(
            err,
            NetError::Wire(WireError::FrameTooLarge { .. })
        ));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn sixteen_mib_cross_one_stream_within_the_windows() {
    tokio::time::timeout(BOUND, async {
        let (_a, _b, ca, cb) = pair().await;
        let mut send = ca.conn.open_uni().await.unwrap();
        let writer = tokio::spawn(async move {
            let block = vec![7u8; 1 << 20];
            for _ in 0..16 {
                send.write_all(&block).await.unwrap();
            }
            send.finish().unwrap();
            send
        });
        let mut recv = cb.conn.accept_uni().await.unwrap();
        let data = recv.read_to_end(32 << 20).await.unwrap();
        assert_eq!(data.len(), 16 << 20);
        let _ = writer.await.unwrap();
    })
    .await
    .expect("bounded");
}

fn hello() -> Message {
    Message::Hello {
        version: crate::wire::PROTOCOL_VERSION,
        node_id: [1; 32],
        features: 0,
    }
}

fn large_data() -> Message {
    let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    Message::Data {
        space: 0,
        feed: crate::feed::FeedKey(key.verifying_key().to_bytes()),
        start: 0,
        entries: vec![vec![7u8; 64 << 10].into()],
        head: crate::feed::SignedHead::sign(&key, 1, [5; 32]).into_signed(),
        proof: None,
        prefix: None,
        checkpoint: None,
    }
}

#[tokio::test]
async fn a_frame_is_charged_until_its_message_is_dropped_and_small_ones_never_to_the_node() {
    tokio::time::timeout(BOUND, async {
        let (_a, _b, ca, cb) = pair().await;
        let (mut send, _) = ca.conn.open_bi().await.unwrap();
        send_message(&mut send, &hello()).await.unwrap();
        send_message(&mut send, &large_data()).await.unwrap();
        let (_, recv) = cb.conn.accept_bi().await.unwrap();
        let node = frames::node_budget();
        let budget = Budget::new(node.clone(), true);
        let mut frames = Frames::new(recv, budget.clone());
        // A small frame: its connection's budget only, so a node budget held by others never
        // stops a peer from saying hello or proving itself.
        let Next::Message(msg, small) = frames.next().await.unwrap() else {
            panic!("no message")
        };
        assert_eq!(*msg, hello());
        assert!(small.bytes() > 4);
        assert_eq!(
            budget.connection_room(),
            frames::CONNECTION_FRAME_BYTES - small.bytes()
        );
        assert_eq!(node.available_permits(), frames::NODE_FRAME_BYTES);
        // A large one: both.
        let Next::Message(msg, large) = frames.next().await.unwrap() else {
            panic!("no message")
        };
        assert_eq!(*msg, large_data());
        assert!(large.bytes() > 64 << 10);
        assert_eq!(
            budget.connection_room(),
            frames::CONNECTION_FRAME_BYTES - small.bytes() - large.bytes()
        );
        assert_eq!(
            node.available_permits(),
            frames::NODE_FRAME_BYTES - large.bytes()
        );
        drop((small, large));
        assert_eq!(budget.connection_room(), frames::CONNECTION_FRAME_BYTES);
        assert_eq!(node.available_permits(), frames::NODE_FRAME_BYTES);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_unproven_peer_may_send_only_small_frames() {
    tokio::time::timeout(BOUND, async {
        let (_a, _b, ca, cb) = pair().await;
        let (mut send, _) = ca.conn.open_bi().await.unwrap();
        let big = Message::Goodbye {
            reason: "x".repeat(400),
        };
        send_message(&mut send, &big).await.unwrap();
        // A header announcing 64 KiB, then nothing: refused on the header alone.
        send.write_all(&(64u32 << 10).to_le_bytes()).await.unwrap();
        let (_, recv) = cb.conn.accept_bi().await.unwrap();
        let budget = Budget::new(frames::node_budget(), false);
        let mut frames = Frames::new(recv, budget.clone());
        assert_eq!(frames.message().await.unwrap(), Some(big));
        let err = frames.message().await.unwrap_err();
        assert!(
            matches!(err, NetError::Wire(WireError::FrameTooLarge { max, .. }) if max == frames::UNPROVEN_FRAME_LEN),
            "{err}"
        );
        assert_eq!(budget.connection_room(), frames::CONNECTION_FRAME_BYTES);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_half_sent_frame_is_given_up_and_its_budget_returned() {
    tokio::time::timeout(BOUND, async {
        let (_a, _b, ca, cb) = pair().await;
        let (mut send, _) = ca.conn.open_bi().await.unwrap();
        // A 1 MiB frame of which a quarter is sent.
        send.write_all(&(1u32 << 20).to_le_bytes()).await.unwrap();
        send.write_all(&vec![0u8; 256 << 10]).await.unwrap();
        let (_, recv) = cb.conn.accept_bi().await.unwrap();
        let budget =
            Budget::new(frames::node_budget(), true).with_frame_wait(Duration::from_millis(300));
        let mut frames = Frames::new(recv, budget.clone());
        let started = std::time::Instant::now();
        let err = frames.next().await.unwrap_err();
        assert!(err.to_string().contains("did not arrive"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(budget.connection_room(), frames::CONNECTION_FRAME_BYTES);
        drop(send);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn gathering_takes_only_frames_already_on_their_way() {
    tokio::time::timeout(BOUND, async {
        let (_a, _b, ca, cb) = pair().await;
        let (mut send, _) = ca.conn.open_bi().await.unwrap();
        send_message(&mut send, &hello()).await.unwrap();
        let (_, recv) = cb.conn.accept_bi().await.unwrap();
        let mut frames = Frames::new(recv, Budget::new(frames::node_budget(), true));
        assert!(matches!(frames.next().await.unwrap(), Next::Message(..)));
        // Nothing more sent: not waited for.
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            frames.next_if_ready(soon).await.unwrap(),
            Next::NotYet
        ));
        // Half a header, then the rest: the half is kept.
        let frame = hello().encode().unwrap();
        send.write_all(&frame[..2]).await.unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            frames.next_if_ready(soon).await.unwrap(),
            Next::NotYet
        ));
        send.write_all(&frame[2..]).await.unwrap();
        send.finish().unwrap();
        assert_eq!(frames.message().await.unwrap(), Some(hello()));
        assert_eq!(frames.message().await.unwrap(), None);
    })
    .await
    .expect("bounded");
}

mod sender_meets_receiver {
    //! Whatever a feed holds, every data message the sender builds is one the receiver's
    //! decoder takes: the limits are one definition used by both.

    use crate::feed::{write_batch, FeedKey, Frontier, MAX_ENTRY_LEN};
    use crate::net::driver::data_message;
    use crate::store::{Store, StoreConfig};
    use crate::wire::{Decoder, Message, MAX_ENTRIES_PER_DATA, MAX_FRAME_LEN};
    use proptest::prelude::*;

    /// Entry sizes as feeds hold them: file operations of a few bytes, small files, chunks,
    /// and the largest entry allowed.
    fn entry_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            80 => 0usize..64,
            15 => 64usize..1024,
            4 => 1024usize..(64 << 10),
            1 => Just(MAX_ENTRY_LEN),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn every_message_the_sender_builds_decodes_at_the_receiver(
            lens in proptest::collection::vec(entry_len(), 1..3000),
            from_share in 0.0f64..1.0,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
            let feed = FeedKey(key.verifying_key().to_bytes());
            store.create_feed(feed).unwrap();
            let mut frontier = Frontier::new();
            for group in lens.chunks(256) {
                let entries = group
                    .iter()
                    .enumerate()
                    .map(|(i, len)| vec![i as u8; *len])
                    .collect();
                store.append(write_batch(&key, &mut frontier, entries).unwrap()).unwrap();
            }
            let target = store.serve_target(&feed).unwrap().unwrap();
            let length = target.length;
            prop_assert_eq!(length, lens.len() as u64);
            let from = ((length as f64) * from_share) as u64;
            let mut pos = from;
            let mut decoder = Decoder::new();
            while pos < length {
                let (msg, damaged) = data_message(&store, &target, 0, feed, from, pos, length).unwrap();
                prop_assert!(damaged.is_none());
                let (msg, n) = msg.unwrap();
                let frame = msg.encode().unwrap();
                prop_assert!(frame.len() - 4 <= MAX_FRAME_LEN, "frame of {} bytes", frame.len());
                prop_assert!(n as usize <= MAX_ENTRIES_PER_DATA);
                decoder.extend(&frame);
                let got = decoder.decode();
                prop_assert!(matches!(got, Ok(Some(Message::Data { .. }))), "{:?}", got.map(|m| m.is_some()));
                pos += n;
            }
            prop_assert_eq!(pos, length);
        }
    }
}

#[test]
fn proven_peers_share_the_node_receive_windows() {
    assert_eq!(window_share(1), CONNECTION_RECEIVE_WINDOW);
    assert_eq!(window_share(16), CONNECTION_RECEIVE_WINDOW);
    assert_eq!(window_share(64), MIN_RECEIVE_WINDOW);
    for n in 1..=admission::MAX_PEERS {
        let share = u64::from(window_share(n));
        assert!(
            share * n as u64 <= NODE_RECEIVE_WINDOWS,
            "{n} peers × {share} bytes"
        );
        assert!(
            share as usize > crate::wire::MAX_FRAME_LEN / 2,
            "a transfer still streams"
        );
    }
}

#[tokio::test]
async fn a_connection_runs_end_to_end_inside_a_tunnel_stream_and_carries_a_large_message() {
    tokio::time::timeout(BOUND, async {
        let (a, b, ca, cb) = pair().await;
        // The outer connection's stream pair is the tunnel; each side runs its own endpoint.
        let (send, recv) = ca.conn.open_bi().await.unwrap();
        let mut streams = tunnel::Streams { send, recv };
        streams.send.write_all(b"x").await.unwrap();
        let (send, mut recv) = cb.conn.accept_bi().await.unwrap();
        let mut x = [0u8; 1];
        recv.read_exact(&mut x).await.unwrap();
        let theirs = tunnel::Streams { send, recv };
        let via = NodeIdentity::generate().node_id();
        let accepting = {
            let b = b.clone();
            let origin = a.node_id();
            tokio::spawn(async move {
                let incoming = b.accept_tunnel(theirs, origin, via).await?;
                incoming.handshake().await
            })
        };
        let inner_a = a.connect_tunnel(streams, b.node_id(), via).await.unwrap();
        let inner_b = accepting.await.unwrap().unwrap();
        assert_eq!(inner_a.peer, b.node_id());
        assert_eq!(inner_b.peer, a.node_id());
        assert_eq!(inner_a.relayed_via, Some(via));
        assert_eq!(inner_b.relayed_via, Some(via));
        inner_b.open_up();
        let (mut s, _r) = inner_a.conn.open_bi().await.unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        s.write_all(&big).await.unwrap();
        s.finish().unwrap();
        let (_s2, mut r2) = inner_b.conn.accept_bi().await.unwrap();
        let got = r2.read_to_end(8 << 20).await.unwrap();
        assert!(got == big, "the bytes changed on the way");
        // Ending the outer stream ends the inner connection.
        ca.conn.close(0u32.into(), b"bye");
        tokio::time::timeout(Duration::from_secs(5), inner_b.conn.closed())
            .await
            .expect("the inner connection ends with its tunnel");
    })
    .await
    .expect("bounded");
}
