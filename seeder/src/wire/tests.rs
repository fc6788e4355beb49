use super::*;
use crate::feed::SignedHead;
use crate::space::{Role, SpaceSecret};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

fn head() -> SignedHead {
    SignedHead::sign(&SigningKey::from_bytes(&[4; 32]), 3, [5; 32]).into_signed()
}

fn every_message() -> Vec<Message> {
    let secret = SpaceSecret::from_bytes([1; 32]);
    let address = secret.address();
    let feed = FeedKey::from(&SigningKey::from_bytes(&[4; 32]));
    let proof = ConsistencyProof {
        old_size: 2,
        new_size: 3,
        path: vec![[6; 32], [7; 32]],
    };
    vec![
        Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: [9; 32],
            features: 0,
        },
        Message::OpenSpace {
            space: 1,
            discovery: address.discovery_key(),
            capability: Capability::new(&address, b"secret", Role::Dialer),
        },
        Message::FeedList {
            space: 1,
            feeds: vec![FeedOffer {
                cert: MembershipCert::issue(&secret, feed),
                head: Some(head()),
                prefix: None,
                damaged_from: None,
            }],
        },
        Message::Head {
            space: 1,
            head: head(),
        },
        Message::Want {
            space: 1,
            feed,
            from: 2,
        },
        Message::Data {
            space: 1,
            feed,
            start: 2,
            entries: vec![Bytes::from_static(b"x"), Bytes::from(vec![0; 1000])],
            head: head(),
            proof: Some(proof.clone()),
            prefix: Some(([8; 32], proof)),
            checkpoint: None,
        },
        Message::Stored {
            space: 1,
            feed,
            length: 3,
        },
        Message::Goodbye {
            reason: "shutting down".into(),
        },
        Message::Error {
            code: 7,
            message: "no".into(),
        },
        Message::Refused {
            space: 1,
            feed,
            reason: Refusal::DiskFull {
                free: 1 << 20,
                total: 64 << 20,
                keep_percent: 5,
            },
        },
        Message::Refused {
            space: 1,
            feed,
            reason: Refusal::AgreementQuota {
                organisation: "Partner e.V.".into(),
                limit: 5 << 20,
            },
        },
        Message::Refused {
            space: 1,
            feed,
            reason: Refusal::Removed,
        },
        Message::Members {
            space: 1,
            records: vec![genesis()],
        },
        Message::Members {
            space: 1,
            records: Vec::new(),
        },
    ]
}

/// A governed space's first record.
fn genesis() -> crate::space::Record {
    let secret = SpaceSecret::from_bytes([1; 32]);
    crate::space::members::genesis(
        &secret,
        crate::space::members::device_of(&SigningKey::from_bytes(&[4; 32])),
    )
}

#[test]
fn a_members_message_over_its_record_limit_is_refused_on_both_sides() {
    let too_many = Message::Members {
        space: 0,
        records: vec![genesis(); MAX_RECORDS_PER_MESSAGE + 1],
    };
    assert!(matches!(
        too_many.encode(),
        Err(WireError::LimitExceeded { .. })
    ));
    let body = postcard::to_allocvec(&too_many).unwrap();
    assert!(matches!(
        Message::decode_body(&body),
        Err(WireError::LimitExceeded { .. })
    ));
    let bad_space = Message::Members {
        space: MAX_SPACES_PER_CONNECTION,
        records: vec![genesis()],
    };
    assert!(bad_space.encode().is_err());
}

#[test]
fn records_go_in_messages_within_the_count_and_byte_limits_in_order() {
    use crate::space::members::{Change, SealedKey, MAX_BOXES};
    let owner = SigningKey::from_bytes(&[4; 32]);
    let address = SpaceSecret::from_bytes([1; 32]).address();
    // An epoch of the largest space: hundreds of KiB on its own.
    let epoch = crate::space::Record::sign(
        &owner,
        address,
        Vec::new(),
        Change::Epoch {
            boxes: (0..MAX_BOXES)
                .map(|i| ([i as u8; 32], Box::new(SealedKey(vec![0; 80]))))
                .collect(),
            earlier: Vec::new(),
        },
    );
    let mut records = vec![genesis(); 2 * MAX_RECORDS_PER_MESSAGE + 3];
    // Six of them fill more than one message's bytes.
    for i in 0..6 {
        records.insert(5 + i, epoch.clone());
    }
    let msgs = members_messages(3, records.clone());
    let mut back = Vec::new();
    for m in &msgs {
        let frame = m.encode().unwrap();
        assert!(
            frame.len() <= MAX_RECORD_BYTES_PER_MESSAGE + 4 + 16,
            "{}",
            frame.len()
        );
        let Message::Members { space: 3, records } = Message::decode_body(&frame[4..]).unwrap()
        else {
            panic!("not a members message");
        };
        assert!(!records.is_empty() && records.len() <= MAX_RECORDS_PER_MESSAGE);
        back.extend(records);
    }
    assert_eq!(back, records, "every record, once, in order");
    assert!(
        members_messages(3, Vec::new()).is_empty(),
        "no records, no message"
    );
}

#[test]
fn refusals_read_as_people_expect() {
    let full = Refusal::DiskFull {
        free: 429_496_730,
        total: 1 << 40,
        keep_percent: 5,
    };
    assert_eq!(full.to_string(), "disk full (409.6 MiB free, keeps 5 %)");
    assert_eq!(
        Refusal::Quota {
            held: 5 << 20,
            limit: 5 << 20
        }
        .to_string(),
        "quota reached (5.0 MiB)"
    );
    assert!(full.is_room());
    assert!(!Refusal::Frozen.is_room());
    assert!(!Refusal::Removed.is_room());
    assert!(Refusal::Removed
        .to_string()
        .contains("removed from the space"));
}

#[test]
fn an_oversized_refusal_text_is_refused() {
    let msg = Message::Refused {
        space: 1,
        feed: FeedKey([1; 32]),
        reason: Refusal::Failed("x".repeat(MAX_TEXT_LEN + 1)),
    };
    assert!(matches!(msg.encode(), Err(WireError::LimitExceeded { .. })));
}

#[test]
fn every_message_round_trips() {
    for m in every_message() {
        let frame = m.encode().unwrap();
        let mut d = Decoder::new();
        d.extend(&frame);
        assert_eq!(d.decode().unwrap(), Some(m));
        assert_eq!(d.decode().unwrap(), None);
        d.finish().unwrap();
    }
}

#[test]
fn a_stream_split_at_every_point_decodes_the_same() {
    let msgs: Vec<Message> = every_message().into_iter().take(6).collect();
    let stream: Vec<u8> = msgs.iter().flat_map(|m| m.encode().unwrap()).collect();
    for cut in 0..=stream.len() {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        d.extend(&stream[..cut]);
        while let Some(m) = d.decode().unwrap() {
            got.push(m);
        }
        d.extend(&stream[cut..]);
        while let Some(m) = d.decode().unwrap() {
            got.push(m);
        }
        assert_eq!(got, msgs, "split at {cut}");
        d.finish().unwrap();
    }
}

#[test]
fn oversized_length_is_refused_before_the_body_arrives() {
    let mut d = Decoder::new();
    d.extend(&((MAX_FRAME_LEN as u32) + 1).to_le_bytes());
    assert!(matches!(d.decode(), Err(WireError::FrameTooLarge { .. })));
    let mut d = Decoder::new();
    d.extend(&u32::MAX.to_le_bytes());
    assert!(matches!(d.needed(), Err(WireError::FrameTooLarge { .. })));
}

#[test]
fn trailing_bytes_in_a_frame_are_refused() {
    let mut frame = Message::Goodbye { reason: "x".into() }.encode().unwrap();
    frame.push(0);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    let mut d = Decoder::new();
    d.extend(&frame);
    assert_eq!(d.decode(), Err(WireError::TrailingBytes { n: 1 }));
}

#[test]
fn truncated_stream_is_an_error_only_at_the_end() {
    let frame = Message::Stored {
        space: 0,
        feed: FeedKey([1; 32]),
        length: 9,
    }
    .encode()
    .unwrap();
    let mut d = Decoder::new();
    d.extend(&frame[..frame.len() - 1]);
    assert_eq!(d.decode(), Ok(None));
    assert_eq!(
        d.finish(),
        Err(WireError::UnexpectedEof {
            buffered: frame.len() - 1
        })
    );
}

#[test]
fn limits_are_checked_on_both_sides() {
    let too_many = Message::FeedList {
        space: 0,
        feeds: vec![
            FeedOffer {
                cert: MembershipCert::issue(&SpaceSecret::from_bytes([1; 32]), FeedKey([2; 32])),
                head: None,
                prefix: None,
                damaged_from: None,
            };
            MAX_FEEDS_PER_LIST + 1
        ],
    };
    assert!(matches!(
        too_many.encode(),
        Err(WireError::LimitExceeded { .. })
    ));
    // Bypass the encoder's check: the decoder refuses it too.
    let body = postcard::to_allocvec(&too_many).unwrap();
    assert!(matches!(
        Message::decode_body(&body),
        Err(WireError::LimitExceeded { .. })
    ));
    let bad_space = Message::Want {
        space: MAX_SPACES_PER_CONNECTION,
        feed: FeedKey([0; 32]),
        from: 0,
    };
    assert!(bad_space.encode().is_err());
    let long = Message::Goodbye {
        reason: "x".repeat(MAX_TEXT_LEN + 1),
    };
    assert!(long.encode().is_err());
}

#[test]
fn known_answers_pin_the_encoding() {
    let hello = Message::Hello {
        version: 1,
        node_id: [9; 32],
        features: 3,
    };
    assert_eq!(
        hex::encode(hello.encode().unwrap()),
        "230000000001090909090909090909090909090909090909090909090909090909090909090903"
    );
    let stored = Message::Stored {
        space: 2,
        feed: FeedKey([1; 32]),
        length: 300,
    };
    assert_eq!(
        hex::encode(stored.encode().unwrap()),
        "2400000006020101010101010101010101010101010101010101010101010101010101010101ac02"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut d = Decoder::new();
        d.extend(&bytes);
        for _ in 0..10 {
            match d.decode() {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
        let _ = Message::decode_body(&bytes);
    }
}

#[test]
fn decoded_entries_are_slices_of_their_frame_not_copies() {
    let key = SigningKey::from_bytes(&[4; 32]);
    let head = SignedHead::sign(&key, 2, [0; 32]).signed().clone();
    let msg = Message::Data {
        space: 0,
        feed: head.feed,
        start: 0,
        entries: vec![Bytes::from(vec![1; 1000]), Bytes::from(vec![2; 1000])],
        head,
        proof: None,
        prefix: None,
        checkpoint: None,
    };
    let frame = msg.encode().unwrap();
    let mut decoder = Decoder::new();
    decoder.extend(&frame);
    let Some(Message::Data { entries, .. }) = decoder.decode().unwrap() else {
        panic!("not data");
    };
    assert_eq!(entries, vec![vec![1u8; 1000], vec![2u8; 1000]]);
    // Postcard puts a 2-byte length before each: the second begins right after the first's
    // bytes and its length, in the same buffer.
    let gap = entries[1].as_ptr() as usize - (entries[0].as_ptr() as usize + 1000);
    assert_eq!(gap, 2);
    // Decoded from anything else, entries are copies and just as right.
    let Message::Data { entries, .. } = Message::decode_body(&frame[4..]).unwrap() else {
        panic!("not data");
    };
    assert_eq!(entries[1], vec![2u8; 1000]);
}

#[test]
fn every_message_sent_in_chunks_is_the_same_bytes_as_one_frame() {
    for msg in every_message() {
        let chunks = msg.encode_chunks().unwrap();
        assert_eq!(chunks.concat(), msg.encode().unwrap(), "{msg:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn data_sent_in_chunks_is_the_same_bytes_as_one_frame(
        sizes in proptest::collection::vec(
            prop_oneof![0usize..200, 4000usize..5000, 60_000usize..66_000], 0..20),
        start in any::<u64>(),
        space in 0u32..MAX_SPACES_PER_CONNECTION,
        with_proof in any::<bool>(),
    ) {
        let entries: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| Bytes::from(vec![i as u8; *n]))
            .collect();
        let proof = with_proof.then(|| ConsistencyProof {
            old_size: 2,
            new_size: 3,
            path: vec![[6; 32]; 3],
        });
        let msg = Message::Data {
            space,
            feed: head().feed,
            start,
            entries,
            head: head(),
            proof,
            prefix: None,
            checkpoint: None,
        };
        let chunks = msg.encode_chunks().unwrap();
        let frame = msg.encode().unwrap();
        prop_assert_eq!(chunks.concat(), frame.clone());
        // And it decodes back to the message.
        let mut d = Decoder::new();
        for c in &chunks {
            d.extend(c);
        }
        prop_assert_eq!(d.decode().unwrap(), Some(msg));
    }
}
