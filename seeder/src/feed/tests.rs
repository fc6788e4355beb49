use super::*;
use proptest::prelude::*;

/// RFC 9162 MTH, written plainly from the definition: the reference the fast code must match.
fn reference_root(leaves: &[Vec<u8>]) -> Hash {
    match leaves.len() {
        0 => *blake3::hash(b"").as_bytes(),
        1 => leaf_hash(&leaves[0]),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

/// A tree kept in memory: every perfect node in a map, like the store keeps them.
struct MemTree {
    frontier: Frontier,
    nodes: std::collections::HashMap<NodeId, Hash>,
}

impl MemTree {
    fn new(entries: &[Vec<u8>]) -> Self {
        let mut t = MemTree {
            frontier: Frontier::new(),
            nodes: Default::default(),
        };
        for e in entries {
            t.frontier.push(leaf_hash(e), |id, h| {
                t.nodes.insert(id, h);
            });
        }
        t
    }

    fn get(&self) -> impl FnMut(NodeId) -> Result<Hash, NodeId> + '_ {
        |id| self.nodes.get(&id).copied().ok_or(id)
    }
}

fn entries(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

#[test]
fn frontier_and_root_at_match_the_reference_for_small_trees() {
    let all = entries(300);
    let tree = MemTree::new(&all);
    let mut f = Frontier::new();
    for n in 0..=300usize {
        let expected = reference_root(&all[..n]);
        assert_eq!(f.root(), expected, "frontier root at {n}");
        assert_eq!(
            root_at(n as u64, tree.get()).unwrap(),
            expected,
            "root_at {n}"
        );
        let loaded = Frontier::load(n as u64, tree.get()).unwrap();
        assert_eq!(loaded, f, "loaded frontier at {n}");
        if n < 300 {
            f.push(leaf_hash(&all[n]), |_, _| {});
        }
    }
}

#[test]
fn push_reports_each_perfect_node_once() {
    let mut f = Frontier::new();
    let mut seen = Vec::new();
    for e in entries(16) {
        f.push(leaf_hash(&e), |id, _| seen.push(id));
    }
    // 16 leaves + 8 + 4 + 2 + 1 perfect nodes, leaves first within each push.
    assert_eq!(seen.len(), 31);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 31);
    assert_eq!(seen[0], NodeId { level: 0, index: 0 });
    assert_eq!(seen[2], NodeId { level: 1, index: 0 });
    assert_eq!(*seen.last().unwrap(), NodeId { level: 4, index: 0 });
}

#[test]
fn every_proof_in_small_trees_verifies() {
    let all = entries(70);
    let tree = MemTree::new(&all);
    for size in 1..=70u64 {
        let root = root_at(size, tree.get()).unwrap();
        for index in 0..size {
            let p = InclusionProof::build(index, size, tree.get()).unwrap();
            p.verify(&leaf_hash(&all[index as usize]), &root)
                .unwrap_or_else(|e| panic!("inclusion {index}/{size}: {e}"));
        }
        for old in 0..=size {
            let p = ConsistencyProof::build(old, size, tree.get()).unwrap();
            let old_root = root_at(old, tree.get()).unwrap();
            p.verify(&old_root, &root)
                .unwrap_or_else(|e| panic!("consistency {old}->{size}: {e}"));
        }
    }
}

#[test]
fn proofs_for_other_positions_or_roots_are_rejected() {
    let all = entries(13);
    let tree = MemTree::new(&all);
    let root = root_at(13, tree.get()).unwrap();
    let p = InclusionProof::build(5, 13, tree.get()).unwrap();
    assert!(p.verify(&leaf_hash(&all[6]), &root).is_err());
    let mut moved = p.clone();
    moved.index = 6;
    assert!(moved.verify(&leaf_hash(&all[5]), &root).is_err());
    let mut outside = p.clone();
    outside.index = 13;
    assert!(outside.verify(&leaf_hash(&all[5]), &root).is_err());
    let mut short = p.clone();
    short.path.pop();
    assert!(short.verify(&leaf_hash(&all[5]), &root).is_err());
    let mut long = p.clone();
    long.path.push([0; 32]);
    assert!(long.verify(&leaf_hash(&all[5]), &root).is_err());

    let c = ConsistencyProof::build(6, 13, tree.get()).unwrap();
    let r6 = root_at(6, tree.get()).unwrap();
    let r7 = root_at(7, tree.get()).unwrap();
    assert!(c.verify(&r6, &root).is_ok());
    assert!(c.verify(&r7, &root).is_err());
    let mut resized = c.clone();
    resized.new_size = 30;
    assert!(resized.verify(&r6, &root).is_err());
    // A proof from the empty tree must be empty and name the empty root.
    let empty = ConsistencyProof::build(0, 13, tree.get()).unwrap();
    assert!(empty.path.is_empty());
    assert!(empty.verify(&empty_root(), &root).is_ok());
    assert!(empty.verify(&r6, &root).is_err());
}

#[test]
fn heads_verify_and_any_changed_field_is_rejected() {
    let sk = key(7);
    let head = SignedHead::sign(&sk, 5, [9; 32]).into_signed();
    assert!(head.clone().verify().is_ok());
    let mut h = head.clone();
    h.length = 6;
    assert!(matches!(h.verify(), Err(FeedError::BadSignature { .. })));
    let mut h = head.clone();
    h.root[31] ^= 1;
    assert!(h.clone().verify().is_err());
    let mut h = head.clone();
    h.feed = FeedKey::from(&key(8));
    assert!(h.verify().is_err());
    for bit in 0..512 {
        let mut h = head.clone();
        h.signature[bit / 8] ^= 1 << (bit % 8);
        assert!(h.verify().is_err(), "signature bit {bit}");
    }
}

#[test]
fn oversized_entries_are_refused() {
    let sk = key(1);
    let mut f = Frontier::new();
    let err = write_batch(&sk, &mut f, vec![vec![0; MAX_ENTRY_LEN + 1]]).unwrap_err();
    assert_eq!(
        err,
        FeedError::EntryTooLarge {
            len: MAX_ENTRY_LEN + 1
        }
    );
    assert_eq!(f.len(), 0, "a refused batch leaves the frontier alone");
    let head = SignedHead::sign(&sk, 1, [0; 32]);
    assert!(verify_batch(
        &Frontier::new(),
        head,
        vec![vec![0; MAX_ENTRY_LEN + 1]],
        None
    )
    .is_err());
}

#[test]
fn batch_past_its_head_or_without_a_needed_proof_is_refused() {
    let sk = key(2);
    let all = entries(10);
    let mut f = Frontier::new();
    let batch = write_batch(&sk, &mut f, all.clone()).unwrap();
    let head = batch.head().clone();
    assert!(matches!(
        verify_batch(&Frontier::new(), head.clone(), entries(11), None),
        Err(FeedError::Sizes(_))
    ));
    assert!(matches!(
        verify_batch(&Frontier::new(), head.clone(), all[..4].to_vec(), None),
        Err(FeedError::BadProof { .. })
    ));
    let mut wrong = all.clone();
    wrong[3].push(b'!');
    assert!(matches!(
        verify_batch(&Frontier::new(), head, wrong, None),
        Err(FeedError::RootMismatch { length: 10, .. })
    ));
}

#[test]
fn fork_is_detected_with_evidence_and_bogus_proofs_are_not_forks() {
    let sk = key(3);
    let honest = entries(20);
    let mut forked = honest[..12].to_vec();
    forked.extend((12..25).map(|i| format!("other {i}").into_bytes()));
    let a = MemTree::new(&honest);
    let b = MemTree::new(&forked);
    // Trusted: honest head at 15. New: forked head at 25.
    let trusted = SignedHead::sign(&sk, 15, root_at(15, a.get()).unwrap());
    let new = SignedHead::sign(&sk, 25, b.frontier.root());
    let prefix = root_at(15, b.get()).unwrap();
    let proof = ConsistencyProof::build(15, 25, b.get()).unwrap();
    match check_extension(&trusted, new.clone(), prefix, &proof).unwrap() {
        Extension::Fork(ev) => ev.verify().expect("evidence verifies on its own"),
        Extension::Extends(_) => panic!("a fork was taken for an extension"),
    }
    // The honest continuation extends.
    let honest_new = SignedHead::sign(&sk, 20, a.frontier.root());
    let p = ConsistencyProof::build(15, 20, a.get()).unwrap();
    let r15 = root_at(15, a.get()).unwrap();
    assert!(matches!(
        check_extension(&trusted, honest_new, r15, &p),
        Ok(Extension::Extends(_))
    ));
    // A proof that doesn't verify is the sender's fault, not evidence.
    let mut bogus = proof.clone();
    bogus.path[0][0] ^= 1;
    assert!(matches!(
        check_extension(&trusted, new.clone(), prefix, &bogus),
        Err(FeedError::BadProof { .. })
    ));
    // Equal lengths, different roots: a fork without a proof.
    let same_len = SignedHead::sign(&sk, 15, root_at(15, b.get()).unwrap());
    let empty = ConsistencyProof {
        old_size: 15,
        new_size: 15,
        path: vec![],
    };
    assert!(matches!(
        check_extension(&trusted, same_len, [0; 32], &empty),
        Ok(Extension::Fork(_))
    ));
    // Evidence where the "newer" head really extends the older is not a fork.
    let not_fork = ForkEvidence {
        older: trusted.signed().clone(),
        newer: SignedHead::sign(&sk, 20, a.frontier.root()).into_signed(),
        newer_prefix_root: r15,
        proof: p,
    };
    assert!(matches!(not_fork.verify(), Err(FeedError::NotAFork(_))));
}

#[test]
fn known_answers_pin_the_formats() {
    assert_eq!(
        hex::encode(leaf_hash(b"")),
        "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"
    );
    assert_eq!(
        hex::encode(node_hash(&[1; 32], &[2; 32])),
        "7dfb6d5986153fae21ad072c102d9b029a7c247f7e4019dc0ad217145a4a3485"
    );
    let five: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; i as usize + 1]).collect();
    assert_eq!(
        hex::encode(reference_root(&five)),
        "32b67c313a168da713350c08c356c97d3b9eaae0dbc921f3ff50e9298058a153"
    );
    let sk = key(7);
    let head = SignedHead::sign(&sk, 5, reference_root(&five)).into_signed();
    assert_eq!(
        hex::encode(SignedHead::signing_bytes(&head.feed, 5, &head.root)),
        "7365656465722066656564206865616420763100ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c050000000000000032b67c313a168da713350c08c356c97d3b9eaae0dbc921f3ff50e9298058a153"
    );
    assert_eq!(
        hex::encode(postcard::to_allocvec(&head).unwrap()),
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c0532b67c313a168da713350c08c356c97d3b9eaae0dbc921f3ff50e9298058a15340b583974e68272ce972a73af2a9c947b52316873a6a7943b7725976b582f083b994f5c55c3dbb062717e576a0eedecffe739007f1ef0b6e477070cd4d86de4c0f"
    );
    let tree = MemTree::new(&five);
    let proof = InclusionProof::build(2, 5, tree.get()).unwrap();
    assert_eq!(
        hex::encode(postcard::to_allocvec(&proof).unwrap()),
        "020503792c57186d560c65e4c2b279ffc42b6711932192f3eafc973c4815213c197e82e6f28beb36c0313abf6a323773b0345e7bcac67ac8a1a6adfda5a5f911b2b2f304455843b509cdbfd70d85c48f85e5ad4de16ce07344e6dc2986631166e52a4e"
    );
    let back: SignedHead = postcard::from_bytes(&postcard::to_allocvec(&head).unwrap()).unwrap();
    assert_eq!(back, head);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn roots_and_proofs_hold_for_random_sizes(size in 1u64..3000, pick in any::<u64>(), old_pick in any::<u64>()) {
        let all = entries(size as usize);
        let tree = MemTree::new(&all);
        let root = tree.frontier.root();
        prop_assert_eq!(root, reference_root(&all));
        let index = pick % size;
        let p = InclusionProof::build(index, size, tree.get()).unwrap();
        prop_assert!(p.verify(&leaf_hash(&all[index as usize]), &root).is_ok());
        let old = old_pick % (size + 1);
        let c = ConsistencyProof::build(old, size, tree.get()).unwrap();
        let old_root = root_at(old, tree.get()).unwrap();
        prop_assert!(c.verify(&old_root, &root).is_ok());
    }

    #[test]
    fn any_flipped_bit_in_entry_or_proof_is_rejected(size in 2u64..400, pick in any::<u64>(), bit in any::<usize>()) {
        let all = entries(size as usize);
        let tree = MemTree::new(&all);
        let root = tree.frontier.root();
        let index = pick % size;
        let p = InclusionProof::build(index, size, tree.get()).unwrap();
        let mut entry = all[index as usize].clone();
        let b = bit % (entry.len() * 8);
        entry[b / 8] ^= 1 << (b % 8);
        prop_assert!(p.verify(&leaf_hash(&entry), &root).is_err());
        if !p.path.is_empty() {
            let mut q = p.clone();
            let b = bit % (q.path.len() * 256);
            q.path[b / 256][(b % 256) / 8] ^= 1 << (b % 8);
            prop_assert!(q.verify(&leaf_hash(&all[index as usize]), &root).is_err());
        }
        let old = 1 + pick % (size - 1);
        let c = ConsistencyProof::build(old, size, tree.get()).unwrap();
        let old_root = root_at(old, tree.get()).unwrap();
        if !c.path.is_empty() {
            let mut q = c.clone();
            let b = bit % (q.path.len() * 256);
            q.path[b / 256][(b % 256) / 8] ^= 1 << (b % 8);
            prop_assert!(q.verify(&old_root, &root).is_err());
        }
        let mut bad_root = root;
        bad_root[(bit / 8) % 32] ^= 1 << (bit % 8);
        prop_assert!(c.verify(&old_root, &bad_root).is_err());
    }

    #[test]
    fn batches_split_anywhere_verify_and_tampered_ones_do_not(size in 1usize..200, cuts in proptest::collection::vec(any::<u16>(), 0..6), bit in any::<usize>()) {
        let sk = key(9);
        let all = entries(size);
        let writer = MemTree::new(&all);
        let head = SignedHead::sign(&sk, size as u64, writer.frontier.root());
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c as usize % (size + 1)).collect();
        cuts.push(size);
        cuts.sort_unstable();
        let mut replica = Frontier::new();
        for cut in cuts {
            let start = replica.len() as usize;
            if cut < start { continue; }
            let slice = all[start..cut].to_vec();
            let proof = (cut < size).then(|| ConsistencyProof::build(cut as u64, size as u64, writer.get()).unwrap());
            if !slice.is_empty() {
                let mut bad = slice.clone();
                let i = bit % bad.len();
                if bad[i].is_empty() { bad[i].push(0); } else { let b = bit % (bad[i].len() * 8); bad[i][b / 8] ^= 1 << (b % 8); }
                prop_assert!(verify_batch(&replica, head.clone(), bad, proof.as_ref()).is_err());
            }
            let batch = verify_batch(&replica, head.clone(), slice, proof.as_ref()).unwrap();
            prop_assert_eq!(batch.start(), start as u64);
            for (id, h) in batch.nodes() {
                if id.level == 0 { replica.push(*h, |_, _| {}); }
            }
        }
        prop_assert_eq!(replica.root(), writer.frontier.root());
    }
}

#[test]
fn a_verified_prefix_is_served_on_and_carries_its_proof_to_the_head() {
    // The writer's feed has 20 entries; a seeder holds only the first 12 (an upload cut).
    let sk = key(3);
    let all = entries(20);
    let full = MemTree::new(&all);
    let head = SignedHead::sign(&sk, 20, full.frontier.root()).into_signed();
    let held = MemTree::new(&all[..12]);
    let prefix = PrefixHead {
        head: head.clone(),
        length: 12,
        root: held.frontier.root(),
        proof: ConsistencyProof::build(12, 20, full.get()).unwrap(),
    };
    // A second member gets [0, 8) with the seeder's own proof from 8 to 12, then [8, 12).
    let to_12 = ConsistencyProof::build(8, 12, held.get()).unwrap();
    let first = verify_batch_to_prefix(
        &Frontier::new(),
        prefix.clone().verify().unwrap(),
        all[..8].to_vec(),
        Some(&to_12),
    )
    .unwrap();
    assert!(!first.completes_head());
    assert!(
        first.tail_proof().is_none(),
        "8 is not where the proof to 20 starts"
    );
    let mut f = Frontier::new();
    for e in &all[..8] {
        f.push(leaf_hash(e), |_, _| {});
    }
    let second = verify_batch_to_prefix(
        &f,
        prefix.clone().verify().unwrap(),
        all[8..12].to_vec(),
        None,
    )
    .unwrap();
    assert_eq!(second.end(), 12);
    assert_eq!(
        second.tail_proof(),
        Some(&prefix.proof),
        "12 carries on to 20"
    );
    assert_eq!(second.head().signed(), &head);

    // What can't be trusted is refused.
    let mut wrong_root = prefix.clone();
    wrong_root.root[0] ^= 1;
    assert!(wrong_root.verify().is_err());
    let mut tampered = all[8..12].to_vec();
    tampered[1][0] ^= 1;
    assert!(verify_batch_to_prefix(&f, prefix.clone().verify().unwrap(), tampered, None).is_err());
    assert!(
        verify_batch_to_prefix(
            &Frontier::new(),
            prefix.verify().unwrap(),
            all[..8].to_vec(),
            None
        )
        .is_err(),
        "a batch ending before the prefix needs its proof"
    );
}
