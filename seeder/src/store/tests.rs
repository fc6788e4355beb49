use super::*;
use crate::feed::{verify_batch, write_batch, SignedHead};
use ed25519_dalek::SigningKey;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn entries(start: usize, n: usize) -> Vec<Vec<u8>> {
    (start..start + n)
        .map(|i| format!("entry {i} ").repeat(i % 7 + 1).into_bytes())
        .collect()
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreConfig::default()).expect("open store")
}

/// Writes `n` entries in batches of `per` as the feed's writer.
fn write(store: &Store, sk: &SigningKey, n: usize, per: usize) -> FeedKey {
    let feed = FeedKey::from(sk);
    let mut frontier = store.frontier(&feed).unwrap_or_default();
    let mut done = frontier.len() as usize;
    while done < n {
        let k = per.min(n - done);
        let batch = write_batch(sk, &mut frontier, entries(done, k)).expect("batch");
        store.append(batch).expect("append");
        done += k;
    }
    feed
}

#[test]
fn appended_entries_read_back_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sk = key(1);
    let feed = {
        let store = open(dir.path());
        write(&store, &sk, 50, 7)
    };
    let store = open(dir.path());
    let state = store.feed(&feed).unwrap().expect("feed exists");
    assert_eq!(state.length, 50);
    let head = state.head.expect("complete head");
    assert_eq!(head.length, 50);
    let expected = entries(0, 50);
    for (i, e) in expected.iter().enumerate() {
        assert_eq!(&store.read(&feed, i as u64).unwrap(), e);
    }
    assert_eq!(store.root_at(&feed, 50).unwrap(), head.root);
    assert_eq!(
        state.bytes,
        expected.iter().map(|e| e.len() as u64).sum::<u64>()
    );
}

#[test]
fn stored_proofs_verify_against_signed_heads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sk = key(2);
    let feed = write(&store, &sk, 37, 5);
    let root = store.root_at(&feed, 37).unwrap();
    for i in [0u64, 1, 17, 36] {
        let proof = store.inclusion_proof(&feed, i, 37).unwrap();
        let leaf = feed::leaf_hash(&store.read(&feed, i).unwrap());
        proof
            .verify(&leaf, &root)
            .expect("inclusion proof verifies");
    }
    for old in [1u64, 8, 20, 37] {
        let proof = store.consistency_proof(&feed, old, 37).unwrap();
        let old_root = store.root_at(&feed, old).unwrap();
        proof
            .verify(&old_root, &root)
            .expect("consistency verifies");
    }
}

#[test]
fn replica_follows_pending_head_then_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(&dir.path().join("w"));
    let replica = open(&dir.path().join("r"));
    let sk = key(3);
    let feed = write(&writer, &sk, 30, 30);
    let head = writer.feed(&feed).unwrap().unwrap().head.unwrap();

    // First 12 entries, proven against the head at 30 by a consistency proof.
    let first = writer.read_range(&feed, 0, 12).unwrap();
    let proof = writer.consistency_proof(&feed, 12, 30).unwrap();
    let batch = verify_batch(
        &replica.frontier(&feed).unwrap_or_default(),
        head.clone().verify().unwrap(),
        first,
        Some(&proof),
    )
    .unwrap();
    replica.append(batch).unwrap();
    let state = replica.feed(&feed).unwrap().unwrap();
    assert_eq!(state.length, 12);
    assert_eq!(state.head, None);
    assert_eq!(state.pending.as_ref(), Some(&head));

    let rest = writer.read_range(&feed, 12, 30).unwrap();
    let batch = verify_batch(
        &replica.frontier(&feed).unwrap(),
        head.clone().verify().unwrap(),
        rest,
        None,
    )
    .unwrap();
    replica.append(batch).unwrap();
    let state = replica.feed(&feed).unwrap().unwrap();
    assert_eq!(state.length, 30);
    assert_eq!(state.head.as_ref(), Some(&head));
    assert_eq!(state.pending, None);
}

#[test]
fn batch_verified_against_a_stale_frontier_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sk = key(4);
    let feed = FeedKey::from(&sk);
    let mut f1 = Frontier::new();
    let mut f2 = Frontier::new();
    let a = write_batch(&sk, &mut f1, entries(0, 3)).unwrap();
    let b = write_batch(&sk, &mut f2, entries(0, 3)).unwrap();
    store.append(a).unwrap();
    match store.append(b) {
        Err(StoreError::Stale {
            start: 0,
            length: 3,
            ..
        }) => {}
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(store.feed(&feed).unwrap().unwrap().length, 3);
}

#[test]
fn garbage_past_the_committed_end_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let sk = key(5);
    let feed = {
        let store = open(dir.path());
        write(&store, &sk, 10, 3)
    };
    let path = {
        let store = open(dir.path());
        store.data_path(&feed)
    };
    let committed = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"half-written garbage from a crash");
    fs::write(&path, &bytes).unwrap();

    let store = open(dir.path());
    assert_eq!(fs::metadata(&path).unwrap().len(), committed);
    assert!(store.damage().unwrap().is_empty());
    // Appending continues at the committed end.
    write(&store, &sk, 13, 3);
    for (i, e) in entries(0, 13).iter().enumerate() {
        assert_eq!(&store.read(&feed, i as u64).unwrap(), e);
    }
}

#[test]
fn truncated_data_file_is_reported_and_earlier_entries_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let sk = key(6);
    let feed = {
        let store = open(dir.path());
        write(&store, &sk, 10, 10)
    };
    let store = open(dir.path());
    let path = store.data_path(&feed);
    drop(store);
    let last_offset = {
        let store = open(dir.path());
        store.leaf(&feed, 9).unwrap().offset
    };
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(last_offset + 2).unwrap();
    drop(f);

    let store = open(dir.path());
    let damage = store.damage().unwrap();
    // The short file, and the one entry it cut, named so a peer can be asked for it.
    assert_eq!(damage.len(), 2, "{damage:?}");
    assert_eq!(damage[0].feed, feed);
    assert!(matches!(damage[0].kind, DamageKind::Truncated { .. }));
    assert!(damage[0].to_string().contains(&feed.short()));
    assert_eq!(damage[1].kind, DamageKind::BadEntry { index: 9 });
    for (i, e) in entries(0, 9).iter().enumerate() {
        assert_eq!(&store.read(&feed, i as u64).unwrap(), e);
    }
    match store.read(&feed, 9) {
        Err(StoreError::Integrity { index: 9, .. }) => {}
        other => panic!("expected an integrity error, got {other:?}"),
    }
}

#[test]
fn flipped_byte_reads_as_integrity_error_never_as_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sk = key(7);
    let store = open(dir.path());
    let feed = write(&store, &sk, 8, 4);
    let victim = store.leaf(&feed, 5).unwrap();
    let path = store.data_path(&feed);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(victim.offset + 3) as usize] ^= 0x10;
    fs::write(&path, &bytes).unwrap();

    match store.read(&feed, 5) {
        Err(StoreError::Integrity { index: 5, .. }) => {}
        other => panic!("expected an integrity error, got {other:?}"),
    }
    for i in (0..8).filter(|&i| i != 5) {
        assert_eq!(store.read(&feed, i).unwrap(), entries(i as usize, 1)[0]);
    }
    assert!(store.read_range(&feed, 0, 8).is_err());
    let damage = store.damage().unwrap();
    assert_eq!(
        damage,
        vec![Damage {
            feed,
            kind: DamageKind::BadEntry { index: 5 }
        }]
    );
    assert_eq!(store.scrub(&feed).unwrap(), damage);
}

#[test]
fn delete_frees_the_disk_and_leaves_no_head_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let keep = write(&store, &key(8), 5, 5);
    let gone = write(&store, &key(9), 20, 6);
    let path = store.data_path(&gone);
    assert!(path.exists());
    store.delete_feed(&gone).unwrap();
    assert!(!path.exists());
    assert_eq!(store.feed(&gone).unwrap(), None);
    assert_eq!(store.feeds().unwrap().len(), 1);
    assert_eq!(
        store
            .inner
            .feeds
            .scan_prefix(feed_prefix(PREFIX_BATCH, &gone))
            .count(),
        0
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.feed(&gone).unwrap(), None);
    assert_eq!(store.feed(&keep).unwrap().unwrap().length, 5);
    // The same feed can come back from scratch.
    write(&store, &key(9), 3, 3);
    assert_eq!(store.feed(&gone).unwrap().unwrap().length, 3);
}

#[test]
fn interrupted_delete_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let gone;
    let path;
    {
        let store = open(dir.path());
        gone = write(&store, &key(10), 9, 9);
        path = store.data_path(&gone);
        // The first step of a delete, then a "crash".
        let mut meta = store.meta(&gone).unwrap().unwrap();
        meta.deleting = true;
        store
            .inner
            .feeds
            .insert(meta_key(&gone), encode_meta(&meta))
            .unwrap();
        store.commit().unwrap();
    }
    let store = open(dir.path());
    assert!(!path.exists());
    assert!(store.feeds().unwrap().is_empty());
    assert_eq!(store.inner.feeds.len(), 0);
}

#[test]
fn forked_feed_is_frozen_and_evidence_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sk = key(11);
    let feed = write(&store, &sk, 4, 4);
    let older = store.feed(&feed).unwrap().unwrap().head.unwrap();
    // The same writer signs a different history of the same length.
    let mut other = Frontier::new();
    let forked = write_batch(&sk, &mut other, entries(100, 4)).unwrap();
    let newer = forked.head().signed().clone();
    let evidence = ForkEvidence {
        older: older.clone(),
        newer: newer.clone(),
        newer_prefix_root: newer.root,
        proof: ConsistencyProof {
            old_size: 4,
            new_size: 4,
            path: vec![],
        },
    };
    store.record_fork(evidence.clone()).unwrap();
    assert!(store.feed(&feed).unwrap().unwrap().frozen);
    assert_eq!(store.forks().unwrap(), vec![evidence]);
    let mut f = store.frontier(&feed).unwrap();
    let more = write_batch(&sk, &mut f, entries(4, 1)).unwrap();
    assert!(matches!(store.append(more), Err(StoreError::Frozen(_))));
}

#[test]
fn bogus_fork_evidence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sk = key(12);
    let feed = write(&store, &sk, 4, 4);
    let head = store.feed(&feed).unwrap().unwrap().head.unwrap();
    let mut forged = head.clone();
    forged.root[0] ^= 1;
    let evidence = ForkEvidence {
        older: head.clone(),
        newer: forged.clone(),
        newer_prefix_root: forged.root,
        proof: ConsistencyProof {
            old_size: 4,
            new_size: 4,
            path: vec![],
        },
    };
    assert!(store.record_fork(evidence).is_err());
    assert!(!store.feed(&feed).unwrap().unwrap().frozen);
}

#[test]
fn range_reads_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sk = key(13);
    let feed = FeedKey::from(&sk);
    let mut frontier = Frontier::new();
    let big: Vec<Vec<u8>> = (0..12).map(|i| vec![i as u8; 512 * 1024]).collect();
    store
        .append(write_batch(&sk, &mut frontier, big).unwrap())
        .unwrap();
    let got = store.read_range(&feed, 0, 12).unwrap();
    assert_eq!(got.len(), MAX_RANGE_BYTES / (512 * 1024));
    assert!(matches!(
        store.read_range(&feed, 0, 13),
        Err(StoreError::OutOfRange { .. })
    ));
}

#[test]
fn unknown_feed_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let feed = FeedKey::from(&key(14));
    let err = store.read(&feed, 0).unwrap_err();
    assert!(matches!(err, StoreError::UnknownFeed(_)));
    assert!(err.to_string().contains("not stored here"));
}

#[test]
fn batch_records_round_trip_and_reject_bad_bytes() {
    let r = BatchRecord {
        first: 7,
        offset: 1000,
        leaves: vec![([1; 32], 10), ([2; 32], 0), ([3; 32], 65536)],
        nodes: vec![(NodeId { level: 1, index: 4 }, [4; 32])],
    };
    let bytes = r.encode();
    assert_eq!(BatchRecord::decode(&bytes), Some(r.clone()));
    assert_eq!(r.leaf(9).offset, 1010);
    for n in 0..bytes.len() {
        assert_eq!(BatchRecord::decode(&bytes[..n]), None, "truncated at {n}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(BatchRecord::decode(&long), None);
    let mut huge = bytes.clone();
    huge[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(BatchRecord::decode(&huge), None);
}

#[test]
fn empty_feed_can_be_created_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let feed = FeedKey::from(&key(15));
    store.create_feed(feed).unwrap();
    let state = store.feed(&feed).unwrap().unwrap();
    assert_eq!((state.length, state.bytes, state.head), (0, 0, None));
    let _ = SignedHead::signing_bytes(&feed, 0, &[0; 32]);
}

#[test]
fn a_store_held_open_elsewhere_is_reported_busy() {
    let dir = tempfile::tempdir().unwrap();
    let held = open(dir.path());
    let started = std::time::Instant::now();
    match Store::open(dir.path(), &StoreConfig::default()) {
        Err(StoreError::Busy(path)) => assert!(path.ends_with("db")),
        Err(e) => panic!("expected Busy, got {e}"),
        Ok(_) => panic!("expected Busy, got a second store"),
    }
    assert!(
        started.elapsed() >= LOCK_WAIT,
        "it waited for the lock first"
    );
    drop(held);
}

#[test]
fn an_empty_registered_feed_reads_as_empty_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let feed = FeedKey::from(&key(9));
    store.create_feed(feed).unwrap();
    assert!(store.read_range(&feed, 0, 0).unwrap().is_empty());
    let mut reader = store.reader(&feed).unwrap();
    assert!(reader.is_empty());
    assert!(matches!(
        reader.read(0),
        Err(StoreError::OutOfRange { length: 0, .. })
    ));
    assert!(store.scrub(&feed).unwrap().is_empty());
    assert!(store.damage().unwrap().is_empty());
}

#[test]
fn commit_makes_table_writes_durable_and_reserved_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let t = store.table("registry.test").unwrap();
        t.insert(b"k", b"v").unwrap();
        store.commit().unwrap();
        assert!(store.table("feeds").is_err(), "the store's own table");
    }
    let store = open(dir.path());
    let t = store.table("registry.test").unwrap();
    assert_eq!(t.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert!(t.remove(b"k").unwrap());
    assert!(!t.remove(b"k").unwrap());
}

#[test]
fn a_cut_data_file_lists_the_lost_entries_and_heals_entry_by_entry() {
    let dir = tempfile::tempdir().unwrap();
    let sk = key(7);
    let feed = {
        let store = open(dir.path());
        write(&store, &sk, 40, 8)
    };
    let expected = entries(0, 40);
    // Lose the last quarter of the data file (a disk that dropped its tail).
    let data = find_data_file(dir.path());
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len * 3 / 4)
        .unwrap();
    let store = open(dir.path());
    let lost = store.damaged_entries(&feed).unwrap();
    assert!(!lost.is_empty() && *lost.last().unwrap() == 39, "{lost:?}");
    let first = lost[0];
    assert!(
        store.read(&feed, first - 1).is_ok(),
        "what is before still reads"
    );
    assert!(store.read(&feed, first).is_err());
    // Good copies from a peer, checked against the stored tree, heal it.
    assert!(!store
        .repair(&feed, first, b"not the entry", [1; 32], 5)
        .unwrap());
    for i in lost {
        assert!(store
            .repair(&feed, i, &expected[i as usize], [1; 32], 5)
            .unwrap());
    }
    assert!(store.damage().unwrap().is_empty(), "no stale record left");
    for (i, e) in expected.iter().enumerate() {
        assert_eq!(&store.read(&feed, i as u64).unwrap(), e);
    }
    assert_eq!(store.repairs().unwrap().len(), (40 - first) as usize);
    drop(store);
    assert!(
        open(dir.path()).damage().unwrap().is_empty(),
        "and after a reopen"
    );
}

fn find_data_file(dir: &Path) -> std::path::PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "data") {
                return p;
            }
        }
    }
    panic!("no data file under {}", dir.display());
}
