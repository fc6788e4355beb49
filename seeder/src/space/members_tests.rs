//! Membership of governed spaces: who counts, whose records count, who can read which key.
//!
//! A [`Space`] builds a log the way devices would: every record is signed by the key the
//! protocol says, verified, and names the current heads unless a test gives it older parents
//! (a device that was offline, or one that pretends to have been).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};

use super::*;
use crate::feed::FeedKey;
use crate::space::{CodeError, ContentCipher, InviteCode, SeedCode, SpaceError, SpaceSecret};

fn device(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn feed(key: &SigningKey) -> FeedKey {
    FeedKey::from(key)
}

fn space_secret() -> SpaceSecret {
    SpaceSecret::from_bytes([7; 32])
}

/// A governed space's log, built record by record, and every content key made in it (the
/// truth a device's [`Membership::unlock`] is checked against).
struct Space {
    address: Address,
    genesis: RecordId,
    records: Vec<VerifiedRecord>,
    keys: BTreeMap<KeyId, [u8; 32]>,
    rng: StdRng,
}

impl Space {
    /// A space whose first owner is `owner`.
    fn new(owner: &SigningKey) -> Space {
        let secret = space_secret();
        let address = secret.address();
        let record = genesis(&secret, device_of(owner))
            .verify(&address)
            .expect("a genesis verifies");
        let id = record.id();
        Space {
            address,
            genesis: id,
            records: vec![record],
            keys: [(id.key_id(), *secret.content_key())].into(),
            rng: StdRng::seed_from_u64(7),
        }
    }

    fn membership(&self) -> Membership {
        Membership::compute(&self.records)
    }

    fn heads(&self) -> Vec<RecordId> {
        self.membership().heads
    }

    fn add(&mut self, record: Record) -> RecordId {
        let record = record.verify(&self.address).expect("a well-made record");
        let id = record.id();
        self.records.push(record);
        id
    }

    /// `change` signed by `by`, after the current heads.
    fn sign(&mut self, by: &SigningKey, change: Change) -> RecordId {
        let parents = self.heads();
        self.sign_after(by, parents, change)
    }

    /// `change` signed by `by`, after `parents`.
    fn sign_after(&mut self, by: &SigningKey, parents: Vec<RecordId>, change: Change) -> RecordId {
        self.add(Record::sign(by, self.address, parents, change))
    }

    /// The current content key.
    fn current(&self) -> (KeyId, [u8; 32]) {
        let id = self.membership().current_key().expect("a governed space");
        (id, self.keys[&id])
    }

    /// An invite of `role` for the holder of `secret`, with the current key boxed to it.
    fn invite_change(
        &mut self,
        role: MemberRole,
        secret: [u8; 32],
        label: &str,
    ) -> (Change, InviteKeys) {
        let keys = InviteKeys::from_secret(&secret);
        let (id, key) = self.current();
        let invite = keys.public();
        let change = Change::Invite {
            invite,
            invite_box: keys.box_public(),
            role,
            key: id,
            sealed: box_key(&mut self.rng, &keys.box_public(), &key).0,
            label: seal_label(&mut self.rng, &self.address, &invite, &key, label),
        };
        (change, keys)
    }

    fn invite(&mut self, by: &SigningKey, role: MemberRole, secret: [u8; 32]) -> InviteKeys {
        let (change, keys) = self.invite_change(role, secret, "someone");
        self.sign(by, change);
        keys
    }

    fn join_change(&self, invite: &InviteKeys, device: &SigningKey) -> Change {
        let joining = device_of(device);
        let invite = invite.public();
        Change::Join {
            invite,
            device: joining,
            device_signature: device
                .sign(&join_bytes(&self.address, &invite, &joining))
                .to_bytes(),
        }
    }

    /// `device` takes up `invite`, after `parents`.
    fn join_after(
        &mut self,
        invite: &InviteKeys,
        device: &SigningKey,
        parents: Vec<RecordId>,
    ) -> RecordId {
        let change = self.join_change(invite, device);
        self.add(Record::sign(&invite.signing, self.address, parents, change))
    }

    fn join(&mut self, invite: &InviteKeys, device: &SigningKey) -> RecordId {
        let parents = self.heads();
        self.join_after(invite, device, parents)
    }

    /// Invite and join device `n` with `role`.
    fn admit(&mut self, by: &SigningKey, role: MemberRole, n: u8) -> SigningKey {
        let invite = self.invite(by, role, [n ^ 0x80; 32]);
        let joining = device(n);
        self.join(&invite, &joining);
        joining
    }

    fn remove(&mut self, by: &SigningKey, member: [u8; 32], at: u64) -> RecordId {
        self.sign(by, Change::Remove { member, at })
    }

    /// A new key boxed to `to` (holder, box key), every key made so far wrapped under it.
    fn epoch_change(&mut self, to: &[([u8; 32], [u8; 32])]) -> (Change, [u8; 32]) {
        let mut new = [0u8; 32];
        self.rng.fill_bytes(&mut new);
        let boxes = to
            .iter()
            .map(|(holder, public)| (*holder, Box::new(box_key(&mut self.rng, public, &new))))
            .collect();
        let earlier = self
            .keys
            .iter()
            .map(|(id, old)| {
                let wrapped = wrap_key(&mut self.rng, &self.address, &new, id, old);
                (*id, Box::new(wrapped))
            })
            .collect();
        (Change::Epoch { boxes, earlier }, new)
    }

    fn epoch_after(
        &mut self,
        by: &SigningKey,
        parents: Vec<RecordId>,
        to: &[([u8; 32], [u8; 32])],
    ) -> KeyId {
        let (change, new) = self.epoch_change(to);
        let id = self.sign_after(by, parents, change).key_id();
        self.keys.insert(id, new);
        id
    }

    /// A new key for everyone entitled to one.
    fn rotate(&mut self, by: &SigningKey) -> KeyId {
        let to = self.membership().recipients();
        let parents = self.heads();
        self.epoch_after(by, parents, &to)
    }

    /// The keys the holders of `boxes` open, checked against the keys really made.
    fn unlock(
        &self,
        boxes: &[(&[u8; 32], &crypto_box::SecretKey)],
        known: BTreeMap<KeyId, ContentKey>,
    ) -> BTreeSet<KeyId> {
        let keys = self
            .membership()
            .unlock(&self.records, &self.address, boxes, known);
        for (id, key) in &keys {
            assert_eq!(**key, self.keys[id], "key {id:?} opens as what was made");
        }
        keys.into_keys().collect()
    }

    /// The keys a device opens with its own box key.
    fn unlock_device(&self, d: &SigningKey) -> BTreeSet<KeyId> {
        self.unlock(&[(&feed(d).0, &device_box(d))], BTreeMap::new())
    }

    /// The keys an invite's secret opens.
    fn unlock_invite(&self, invite: &InviteKeys) -> BTreeSet<KeyId> {
        self.unlock(&[(&invite.public(), &invite.boxing)], BTreeMap::new())
    }

    /// The genesis key, as the first owner keeps it.
    fn genesis_key(&self) -> BTreeMap<KeyId, ContentKey> {
        let id = self.genesis.key_id();
        [(id, Zeroizing::new(self.keys[&id]))].into()
    }
}

/// Why `id` did not count, if it is listed as a conflict.
fn conflict(m: &Membership, id: RecordId) -> Option<&str> {
    m.conflicts
        .iter()
        .find(|(c, _)| *c == id)
        .map(|(_, why)| why.as_str())
}

/// The membership of `records`, checked to be the same for many orders of them; a record is
/// listed as a conflict at most once.
fn order_free(records: &[VerifiedRecord]) -> Membership {
    let expected = Membership::compute(records);
    let mut shuffled = records.to_vec();
    shuffled.reverse();
    assert_eq!(Membership::compute(&shuffled), expected, "reversed");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for round in 0..24 {
        shuffled.shuffle(&mut rng);
        assert_eq!(Membership::compute(&shuffled), expected, "shuffle {round}");
    }
    let ids: BTreeSet<RecordId> = expected.conflicts.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids.len(),
        expected.conflicts.len(),
        "{:?}",
        expected.conflicts
    );
    expected
}

fn keys(ids: &[KeyId]) -> BTreeSet<KeyId> {
    ids.iter().copied().collect()
}

// Genesis.

#[test]
fn genesis_makes_the_first_owner_and_the_first_key() {
    let a = device(1);
    let s = Space::new(&a);
    let m = s.membership();
    assert!(m.is_governed());
    assert_eq!(m.role(&feed(&a)), Some(MemberRole::Owner));
    assert_eq!(m.admits(&feed(&a)), Admission::Upto(None));
    let member = &m.members[&feed(&a)];
    assert_eq!(member.device, device_of(&a));
    assert_eq!((member.since, member.invite), (s.genesis, None));
    assert_eq!(m.epoch(), 0);
    assert_eq!(m.current_key(), Some(s.genesis.key_id()));
    assert_eq!(m.epochs[0].holders, [feed(&a).0].into());
    assert_eq!(m.heads, vec![s.genesis]);
    assert_eq!((m.records, m.waiting), (1, 0));
    assert!(m.conflicts.is_empty() && !m.needs_rotation());
    // The genesis key is the space secret's content key, which the first owner keeps.
    assert_eq!(s.keys[&s.genesis.key_id()], *space_secret().content_key());
}

#[test]
fn nothing_is_governed_without_a_genesis() {
    let m = Membership::compute(&[]);
    assert!(!m.is_governed());
    assert_eq!((m.epoch(), m.current_key()), (0, None));
    assert_eq!(m.admits(&feed(&device(1))), Admission::No);
    assert!(!m.needs_rotation());
}

#[test]
fn a_genesis_signed_by_another_key_fails_verify() {
    let secret = space_secret();
    let address = secret.address();
    let owner = device_of(&device(1));
    let other = SpaceSecret::from_bytes([8; 32]).signing_key();
    let forged = Record::sign(&other, address, vec![], Change::Genesis { owner });
    assert!(matches!(
        forged.clone().verify(&address),
        Err(MemberError::Malformed { .. })
    ));
    // Claiming the space key as signer doesn't help: the signature is another key's.
    let mut claimed = forged;
    claimed.signer = address.0;
    let id = claimed.id();
    assert_eq!(claimed.verify(&address), Err(MemberError::BadSignature(id)));
    // Nor does a device key, even an owner's.
    let by_owner = Record::sign(&device(1), address, vec![], Change::Genesis { owner });
    assert!(by_owner.verify(&address).is_err());
    // A genesis has no parents.
    let real = genesis(&secret, owner);
    let id = real.clone().verify(&address).expect("verifies").id();
    let late = Record::sign(
        &secret.signing_key(),
        address,
        vec![id],
        Change::Genesis { owner },
    );
    assert!(matches!(
        late.verify(&address),
        Err(MemberError::Malformed { .. })
    ));
    // A genesis of one space is not one of another.
    let elsewhere = SpaceSecret::from_bytes([8; 32]).address();
    assert_eq!(
        real.verify(&elsewhere),
        Err(MemberError::OtherSpace {
            expected: elsewhere,
            got: address
        })
    );
}

#[test]
fn only_one_genesis_counts() {
    let secret = space_secret();
    let address = secret.address();
    let first = genesis(&secret, device_of(&device(1)))
        .verify(&address)
        .expect("verifies");
    let second = genesis(&secret, device_of(&device(2)))
        .verify(&address)
        .expect("verifies");
    let m = order_free(&[first.clone(), second.clone()]);
    // Both are roots; the one first in order (the smaller id) begins the space.
    let (kept, lost) = if first.id() < second.id() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(m.epochs.len(), 1);
    assert_eq!(m.current_key(), Some(kept.id().key_id()));
    assert_eq!(m.members.len(), 1);
    let Change::Genesis { owner } = &kept.record().body.change else {
        panic!("a genesis");
    };
    assert_eq!(m.role(&owner.feed), Some(MemberRole::Owner));
    assert_eq!(conflict(&m, lost.id()), Some("a second genesis"));
}

#[test]
fn records_before_the_genesis_count_for_nothing() {
    let a = device(1);
    let mut s = Space::new(&a);
    // Alone, an owner's invite is no space.
    let (change, _) = s.invite_change(MemberRole::Writer, [3; 32], "");
    let alone = Record::sign(&a, s.address, vec![], change)
        .verify(&s.address)
        .expect("verifies");
    let m = Membership::compute(std::slice::from_ref(&alone));
    assert!(!m.is_governed() && m.invites.is_empty());
    assert_eq!(conflict(&m, alone.id()), Some("before the space's genesis"));
    // Beside the genesis, a parentless record that sorts before it doesn't count either.
    let genesis_id = s.genesis;
    let early = (0..64u8)
        .map(|n| {
            let (change, _) = s.invite_change(MemberRole::Writer, [n; 32], "");
            Record::sign(&a, s.address, vec![], change)
                .verify(&s.address)
                .expect("verifies")
        })
        .find(|r| r.id() < genesis_id)
        .expect("one of 64 ids is below the genesis");
    let id = early.id();
    s.records.push(early);
    let m = order_free(&s.records);
    assert!(m.invites.is_empty());
    assert_eq!(conflict(&m, id), Some("before the space's genesis"));
}

// Invites and joins.

#[test]
fn invite_and_join_admit_a_device_with_the_invites_role() {
    let a = device(1);
    let mut s = Space::new(&a);
    for (n, role) in [
        (2, MemberRole::Reader),
        (3, MemberRole::Writer),
        (4, MemberRole::Owner),
    ] {
        let invite = s.invite(&a, role, [n; 32]);
        let m = s.membership();
        assert_eq!(m.pending().count(), 1);
        assert_eq!(m.invites[&invite.public()].by, feed(&a).0);
        let joining = device(n);
        let join = s.join(&invite, &joining);
        let m = s.membership();
        assert_eq!(m.role(&feed(&joining)), Some(role));
        let member = &m.members[&feed(&joining)];
        assert_eq!(member.since, join);
        assert_eq!(member.invite, Some(invite.public()));
        assert_eq!(member.device, device_of(&joining));
        assert_eq!(m.invites[&invite.public()].used_by, Some(feed(&joining)));
        assert_eq!(m.pending().count(), 0);
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
    }
    // The new owner can invite in turn.
    let d = s.admit(&device(4), MemberRole::Writer, 5);
    assert_eq!(s.membership().role(&feed(&d)), Some(MemberRole::Writer));
}

#[test]
fn an_invite_joined_twice_admits_the_device_an_owner_confirmed_or_none() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = s.invite(&a, MemberRole::Writer, [9; 32]);
    let after = s.heads();
    let (b, c) = (device(2), device(3));
    let jb = s.join_after(&invite, &b, after.clone());
    let jc = s.join_after(&invite, &c, after);
    // Nobody confirmed either: the invite admits neither.
    let m = order_free(&s.records);
    assert_eq!(m.role(&feed(&b)), None);
    assert_eq!(m.role(&feed(&c)), None);
    assert!(conflict(&m, jb).is_some_and(|c| c.starts_with("a second join")));
    assert!(conflict(&m, jc).is_some_and(|c| c.starts_with("a second join")));
    // An owner that saw only `b`'s join confirms it with its next change, whatever the ids.
    let mut s2 = Space::new(&a);
    let invite = s2.invite(&a, MemberRole::Writer, [9; 32]);
    let before = s2.heads();
    s2.join(&invite, &b);
    let w = s2.admit(&a, MemberRole::Writer, 4);
    let late = s2.join_after(&invite, &c, before);
    let m = order_free(&s2.records);
    assert_eq!(m.role(&feed(&b)), Some(MemberRole::Writer));
    assert_eq!(m.role(&feed(&c)), None);
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Writer));
    assert!(conflict(&m, late).is_some());
}

#[test]
fn a_used_invite_code_cannot_push_out_the_device_that_used_it() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = s.invite(&a, MemberRole::Owner, [9; 32]);
    let invited = s.heads();
    let b = device(2);
    s.join(&invite, &b);
    // The owner removes `b`; the removal names its join.
    s.sign(
        &a,
        Change::Remove {
            member: feed(&b).0,
            at: 3,
        },
    );
    // Whoever kept the code joins again with another device, naming only the invite as
    // parent so its join sorts before `b`'s.
    let thief = device(3);
    let again = s.join_after(&invite, &thief, invited);
    let m = order_free(&s.records);
    assert!(m.members[&feed(&b)].removed, "the removal still counts");
    assert_eq!(m.role(&feed(&thief)), None);
    assert_eq!(m.role(&feed(&a)), Some(MemberRole::Owner));
    assert!(conflict(&m, again).is_some_and(|c| c.starts_with("a second join")));
}

#[test]
fn a_device_already_in_the_space_cannot_join_again() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Reader, 2);
    let invite = s.invite(&a, MemberRole::Owner, [5; 32]);
    let again = s.join(&invite, &b);
    let m = s.membership();
    assert_eq!(m.role(&feed(&b)), Some(MemberRole::Reader));
    assert_eq!(
        conflict(&m, again),
        Some("a join by a device already known")
    );
    assert_eq!(m.pending().count(), 1, "the invite stays unused");
}

#[test]
fn a_join_with_a_bad_device_signature_fails_verify() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = s.invite(&a, MemberRole::Writer, [9; 32]);
    let b = device(2);
    let heads = s.heads();
    let sign = |change: Change| Record::sign(&invite.signing, s.address, heads.clone(), change);
    let good = s.join_change(&invite, &b);
    assert!(sign(good.clone()).verify(&s.address).is_ok());
    // Every bit of the device's signature matters.
    for bit in [0, 100, 511] {
        let mut change = good.clone();
        let Change::Join {
            device_signature, ..
        } = &mut change
        else {
            unreachable!()
        };
        device_signature[bit / 8] ^= 1 << (bit % 8);
        let record = sign(change);
        let id = record.id();
        assert_eq!(
            record.verify(&s.address),
            Err(MemberError::BadSignature(id))
        );
    }
    // Someone else's device can't be enrolled: the signature must be the device's own.
    let mut stolen = good.clone();
    let Change::Join { device: d, .. } = &mut stolen else {
        unreachable!()
    };
    *d = device_of(&device(3));
    assert!(matches!(
        sign(stolen).verify(&s.address),
        Err(MemberError::BadSignature(_))
    ));
    // Nor can a box key be swapped in (the device signs it too).
    let mut swapped = good.clone();
    let Change::Join { device: d, .. } = &mut swapped else {
        unreachable!()
    };
    d.box_key = device_of(&device(3)).box_key;
    assert!(sign(swapped).verify(&s.address).is_err());
    // A device signature made for another space doesn't carry over.
    let elsewhere = SpaceSecret::from_bytes([8; 32]).address();
    let mut moved = good.clone();
    let Change::Join {
        device_signature, ..
    } = &mut moved
    else {
        unreachable!()
    };
    *device_signature = b
        .sign(&join_bytes(&elsewhere, &invite.public(), &device_of(&b)))
        .to_bytes();
    assert!(sign(moved).verify(&s.address).is_err());
    // A join is signed by its invite's key, not the device's or an owner's.
    for signer in [&b, &a] {
        let record = Record::sign(signer, s.address, heads.clone(), good.clone());
        assert!(matches!(
            record.verify(&s.address),
            Err(MemberError::Malformed { .. })
        ));
    }
}

#[test]
fn a_join_for_a_revoked_invite_does_not_count() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = s.invite(&a, MemberRole::Writer, [9; 32]);
    s.remove(&a, invite.public(), 0);
    let m = s.membership();
    assert!(m.invites[&invite.public()].revoked);
    assert_eq!(m.pending().count(), 0);
    assert!(m.recipients().iter().all(|(h, _)| *h != invite.public()));
    let b = device(2);
    let join = s.join(&invite, &b);
    let m = order_free(&s.records);
    assert_eq!(m.role(&feed(&b)), None);
    assert_eq!(m.admits(&feed(&b)), Admission::No);
    assert_eq!(
        conflict(&m, join),
        Some("a join for a used or revoked invite")
    );
}

#[test]
fn a_join_for_an_unknown_invite_does_not_count() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = InviteKeys::from_secret(&[9; 32]);
    let join = s.join(&invite, &device(2));
    let m = s.membership();
    assert_eq!(m.role(&feed(&device(2))), None);
    assert_eq!(conflict(&m, join), Some("a join for an unknown invite"));
}

#[test]
fn removing_an_owner_revokes_the_invites_it_made_that_nobody_used() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    let used = s.invite(&b, MemberRole::Writer, [3; 32]);
    let c = device(3);
    s.join(&used, &c);
    let unused = s.invite(&b, MemberRole::Writer, [4; 32]);
    let by_a = s.invite(&a, MemberRole::Writer, [5; 32]);
    s.remove(&a, feed(&b).0, 0);
    let late = s.join(&unused, &device(4));
    let m = order_free(&s.records);
    assert!(m.invites[&unused.public()].revoked);
    assert!(!m.invites[&used.public()].revoked);
    assert!(!m.invites[&by_a.public()].revoked);
    assert_eq!(m.role(&feed(&c)), Some(MemberRole::Writer), "used: stays");
    assert_eq!(m.role(&feed(&device(4))), None);
    assert!(conflict(&m, late).is_some());
    assert_eq!(
        m.pending().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![by_a.public()]
    );
}

// Admission of feeds.

#[test]
fn writers_and_owners_are_admitted_without_limit_and_readers_not_at_all() {
    let a = device(1);
    let mut s = Space::new(&a);
    let o = s.admit(&a, MemberRole::Owner, 2);
    let w = s.admit(&a, MemberRole::Writer, 3);
    let r = s.admit(&a, MemberRole::Reader, 4);
    let m = s.membership();
    assert_eq!(m.admits(&feed(&a)), Admission::Upto(None));
    assert_eq!(m.admits(&feed(&o)), Admission::Upto(None));
    assert_eq!(m.admits(&feed(&w)), Admission::Upto(None));
    assert_eq!(m.admits(&feed(&r)), Admission::No);
    assert_eq!(m.admits(&feed(&device(5))), Admission::No, "a stranger");
    assert_eq!(m.active().count(), 4);
}

#[test]
fn a_removed_writer_is_admitted_up_to_where_it_was_frozen() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    let o = s.admit(&a, MemberRole::Owner, 3);
    s.remove(&a, feed(&w).0, 12);
    s.remove(&a, feed(&o).0, 4);
    let m = s.membership();
    assert_eq!(m.admits(&feed(&w)), Admission::Upto(Some(12)));
    assert_eq!(m.admits(&feed(&o)), Admission::Upto(Some(4)));
    assert_eq!(m.role(&feed(&w)), None);
    assert!(m.members[&feed(&w)].removed);
    assert_eq!(m.active().count(), 1);
    assert!(m.recipients().iter().all(|(h, _)| *h == feed(&a).0));
}

#[test]
fn a_device_removed_at_zero_is_not_admitted() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    let r = s.admit(&a, MemberRole::Reader, 3);
    s.remove(&a, feed(&w).0, 0);
    // A reader wrote nothing that counts, whatever `at` says.
    s.remove(&a, feed(&r).0, 9);
    let m = s.membership();
    assert_eq!(m.admits(&feed(&w)), Admission::No);
    assert_eq!(m.admits(&feed(&r)), Admission::No);
    assert_eq!(m.members[&feed(&r)].frozen_at, Some(0));
}

#[test]
fn a_writer_made_reader_is_frozen_where_the_owner_saw_it() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    let o = s.admit(&a, MemberRole::Owner, 3);
    let z = s.admit(&a, MemberRole::Writer, 4);
    for (d, at) in [(&w, 5), (&o, 8), (&z, 0)] {
        s.sign(
            &a,
            Change::SetRole {
                device: feed(d),
                role: MemberRole::Reader,
                at,
            },
        );
    }
    let m = s.membership();
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Reader));
    assert_eq!(m.admits(&feed(&w)), Admission::Upto(Some(5)));
    assert_eq!(m.admits(&feed(&o)), Admission::Upto(Some(8)));
    assert_eq!(m.admits(&feed(&z)), Admission::No);
    // A second demotion never thaws a freeze: the lower point stays.
    s.sign(
        &a,
        Change::SetRole {
            device: feed(&o),
            role: MemberRole::Writer,
            at: 0,
        },
    );
    let m = s.membership();
    assert_eq!(m.members[&feed(&o)].frozen_at, Some(8));
    // An owner made writer is not frozen.
    let o2 = s.admit(&a, MemberRole::Owner, 6);
    s.sign(
        &a,
        Change::SetRole {
            device: feed(&o2),
            role: MemberRole::Writer,
            at: 3,
        },
    );
    let m = s.membership();
    assert_eq!(m.role(&feed(&o2)), Some(MemberRole::Writer));
    assert_eq!(m.admits(&feed(&o2)), Admission::Upto(None));
}

#[test]
fn a_writer_made_reader_then_removed_keeps_what_it_wrote_before() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    s.sign(
        &a,
        Change::SetRole {
            device: feed(&w),
            role: MemberRole::Reader,
            at: 5,
        },
    );
    s.remove(&a, feed(&w).0, 9);
    let m = s.membership();
    assert!(m.members[&feed(&w)].removed);
    // Its first five entries were a writer's; removing the reader it became takes nothing
    // away, and adds nothing either.
    assert_eq!(m.admits(&feed(&w)), Admission::Upto(Some(5)));
}

#[test]
fn a_role_change_for_a_device_not_in_the_space_does_not_count() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    s.remove(&a, feed(&w).0, 3);
    let promote = s.sign(
        &a,
        Change::SetRole {
            device: feed(&w),
            role: MemberRole::Owner,
            at: 0,
        },
    );
    let stranger = s.sign(
        &a,
        Change::SetRole {
            device: feed(&device(9)),
            role: MemberRole::Owner,
            at: 0,
        },
    );
    let again = s.remove(&a, feed(&w).0, 7);
    let nobody = s.remove(&a, [42; 32], 0);
    let m = s.membership();
    assert_eq!(m.role(&feed(&w)), None);
    assert_eq!(m.admits(&feed(&w)), Admission::Upto(Some(3)));
    for id in [promote, stranger] {
        assert_eq!(
            conflict(&m, id),
            Some("a role change for a device not in the space")
        );
    }
    assert_eq!(
        conflict(&m, again),
        Some("a removal of a device already removed")
    );
    assert_eq!(
        conflict(&m, nobody),
        Some("a removal of a device or invite not in the space")
    );
}

// Authority.

#[test]
fn records_signed_by_non_owners_do_not_count() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    let r = s.admit(&a, MemberRole::Reader, 3);
    let o = s.admit(&a, MemberRole::Owner, 4);
    s.remove(&a, feed(&o).0, 0);
    let before = s.membership();
    let (invite, _) = s.invite_change(MemberRole::Owner, [7; 32], "");
    let by_writer = s.sign(&w, invite);
    let by_reader = s.sign(
        &r,
        Change::Remove {
            member: feed(&a).0,
            at: 0,
        },
    );
    let promote = s.sign(
        &r,
        Change::SetRole {
            device: feed(&r),
            role: MemberRole::Owner,
            at: 0,
        },
    );
    let to = before.recipients();
    let (epoch, _) = s.epoch_change(&to);
    let epoch = s.sign(&w, epoch);
    // The removed owner, after its removal (it saw it: the removal is a parent).
    let by_removed = s.sign(
        &o,
        Change::Remove {
            member: feed(&w).0,
            at: 0,
        },
    );
    // A stranger.
    let by_stranger = s.sign(
        &device(9),
        Change::SetRole {
            device: feed(&w),
            role: MemberRole::Reader,
            at: 0,
        },
    );
    let m = order_free(&s.records);
    for id in [by_writer, by_reader, promote, epoch, by_stranger] {
        assert_eq!(
            conflict(&m, id),
            Some("signed by a device that is not an owner")
        );
    }
    assert!(conflict(&m, by_removed).is_some());
    assert_eq!(m.members, before.members);
    assert_eq!(m.invites, before.invites);
    assert_eq!(m.epochs, before.epochs);
}

#[test]
fn a_removed_owner_cannot_add_records_its_removal_had_not_seen() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    // What b had seen when it was last in touch.
    let b_saw = s.heads();
    let w = s.admit(&a, MemberRole::Writer, 3);
    s.admit(&a, MemberRole::Writer, 4);
    let removal = s.remove(&a, feed(&b).0, 0);
    // b, removed, signs records with its old parents: they sort before its removal (lower
    // depth), as if they were made while it was still an owner.
    let (change, invite) = s.invite_change(MemberRole::Owner, [0x55; 32], "mine");
    let invited = s.sign_after(&b, b_saw.clone(), change);
    let x = device(9);
    let joined = s.join_after(&invite, &x, vec![invited]);
    let to = [
        (feed(&b).0, device_of(&b).box_key),
        (feed(&x).0, device_of(&x).box_key),
    ];
    let epoch = s.epoch_after(&b, b_saw, &to);
    let w_joined = s.membership().members[&feed(&w)].since;
    let demoted = s.sign_after(
        &b,
        vec![w_joined],
        Change::SetRole {
            device: feed(&w),
            role: MemberRole::Reader,
            at: 0,
        },
    );
    let epoch_id = epoch_record(&s, epoch);
    for id in [invited, joined, epoch_id, demoted] {
        assert!(
            depth(&s, id) < depth(&s, removal),
            "sorts before the removal"
        );
    }
    // Without the removal, every one of them would count: the test is not vacuous.
    let without: Vec<_> = s
        .records
        .iter()
        .filter(|r| r.id() != removal)
        .cloned()
        .collect();
    let m = Membership::compute(&without);
    assert_eq!(m.role(&feed(&x)), Some(MemberRole::Owner));
    assert_eq!(m.current_key(), Some(epoch));
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Reader));
    let m = order_free(&s.records);
    assert_eq!(m.role(&feed(&b)), None);
    assert_eq!(m.role(&feed(&x)), None);
    assert_eq!(m.admits(&feed(&x)), Admission::No);
    assert!(!m.invites.contains_key(&invite.public()));
    assert!(m.epochs.iter().all(|e| e.key != epoch));
    assert_eq!(m.current_key(), Some(s.genesis.key_id()));
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Writer));
    assert_eq!(m.admits(&feed(&w)), Admission::Upto(None));
    for id in [invited, epoch_id, demoted] {
        assert_eq!(
            conflict(&m, id),
            Some("signed by a removed device (or an owner made writer or reader) without having seen that change")
        );
    }
    assert_eq!(conflict(&m, joined), Some("a join for an unknown invite"));
    assert_eq!(m.role(&feed(&a)), Some(MemberRole::Owner));
    assert!(conflict(&m, removal).is_none());
}

/// A record's depth in the log: one more than its deepest parent, 0 for a root. Records
/// are applied by depth, then id.
fn depth(s: &Space, id: RecordId) -> u64 {
    let record = s
        .records
        .iter()
        .find(|r| r.id() == id)
        .expect("a record of the space");
    record
        .record()
        .body
        .parents
        .iter()
        .map(|p| depth(s, *p) + 1)
        .max()
        .unwrap_or(0)
}

/// The record that started the key `id`.
fn epoch_record(s: &Space, id: KeyId) -> RecordId {
    s.records
        .iter()
        .map(|r| r.id())
        .find(|r| r.key_id() == id)
        .expect("an epoch record")
}

#[test]
fn an_owner_removed_while_its_invitee_removes_the_remover_stays_removed() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    let b_saw = s.heads();
    let w = s.admit(&a, MemberRole::Writer, 3);
    let removal = s.remove(&a, feed(&b).0, 0);
    // b brings in a device x as owner with records its removal had not seen, and x, deeper
    // in the log (after the removal in order, though it had not seen it either), removes a.
    let (change, invite) = s.invite_change(MemberRole::Owner, [0x55; 32], "");
    let invited = s.sign_after(&b, b_saw, change);
    let x = device(9);
    let joined = s.join_after(&invite, &x, vec![invited]);
    let (change, _) = s.invite_change(MemberRole::Reader, [0x66; 32], "");
    let by_x = s.sign_after(&x, vec![joined], change);
    let counter = s.sign_after(
        &x,
        vec![by_x],
        Change::Remove {
            member: feed(&a).0,
            at: 0,
        },
    );
    assert!(depth(&s, invited) < depth(&s, removal));
    assert!(depth(&s, counter) > depth(&s, removal));
    let m = order_free(&s.records);
    // b's invite of x didn't count, so neither did anything x signed: a stays, b is out.
    assert_eq!(m.role(&feed(&a)), Some(MemberRole::Owner));
    assert_eq!(m.role(&feed(&b)), None);
    assert_eq!(m.role(&feed(&x)), None);
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Writer));
    assert!(conflict(&m, removal).is_none(), "{:?}", m.conflicts);
    assert_eq!(
        conflict(&m, invited),
        Some("signed by a removed device (or an owner made writer or reader) without having seen that change")
    );
    assert_eq!(conflict(&m, joined), Some("a join for an unknown invite"));
    assert_eq!(
        conflict(&m, by_x),
        Some("signed by a device that is not an owner")
    );
    // x holds its authority from b, whom a removes: x's removal of a is the junior side.
    assert_eq!(
        conflict(&m, counter),
        Some("the junior of two owners removing or demoting each other at once")
    );
}

#[test]
fn owners_removing_each_other_concurrently_leave_exactly_one() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    let w = s.admit(&a, MemberRole::Writer, 3);
    let both_saw = s.heads();
    // Offline, each removes the other, and goes on as if it had won.
    let by_a = s.sign_after(
        &a,
        both_saw.clone(),
        Change::Remove {
            member: feed(&b).0,
            at: 6,
        },
    );
    let by_b = s.sign_after(
        &b,
        both_saw,
        Change::Remove {
            member: feed(&a).0,
            at: 7,
        },
    );
    let after_a = s.sign_after(
        &a,
        vec![by_a],
        Change::SetRole {
            device: feed(&w),
            role: MemberRole::Owner,
            at: 0,
        },
    );
    let after_b = s.sign_after(
        &b,
        vec![by_b],
        Change::SetRole {
            device: feed(&w),
            role: MemberRole::Reader,
            at: 2,
        },
    );
    let m = order_free(&s.records);
    // Seniority decides, not the order: `a` made the space, so it stays.
    assert_eq!(m.role(&feed(&a)), Some(MemberRole::Owner));
    assert_eq!(m.role(&feed(&b)), None);
    assert_eq!(m.admits(&feed(&b)), Admission::Upto(Some(6)));
    assert_eq!(
        conflict(&m, by_b),
        Some("the junior of two owners removing or demoting each other at once")
    );
    assert_eq!(
        conflict(&m, after_b),
        Some("signed by a removed device (or an owner made writer or reader) without having seen that change")
    );
    assert_eq!(m.conflicts.len(), 2, "{:?}", m.conflicts);
    // The senior's later record counts, the junior's doesn't.
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Owner));
    let _ = after_a;
}

#[test]
fn a_removed_owner_cannot_back_date_a_counter_removal() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    let old = s.heads();
    let w = s.admit(&a, MemberRole::Writer, 3);
    let removal = s.sign_after(
        &a,
        s.heads(),
        Change::Remove {
            member: feed(&b).0,
            at: 4,
        },
    );
    // `b`, removed, names the parents it had when it became an owner, so its records sort
    // before the removal: removing `a`, then demoting it.
    for change in [
        Change::Remove {
            member: feed(&a).0,
            at: 0,
        },
        Change::SetRole {
            device: feed(&a),
            role: MemberRole::Reader,
            at: 0,
        },
    ] {
        let _ = s.sign_after(&b, old.clone(), change);
    }
    let m = order_free(&s.records);
    assert_eq!(m.role(&feed(&a)), Some(MemberRole::Owner));
    assert_eq!(m.role(&feed(&b)), None);
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Writer));
    assert!(conflict(&m, removal).is_none());
}

#[test]
fn concurrent_removals_of_two_writers_both_count_and_ask_for_rotation() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    let w1 = s.admit(&a, MemberRole::Writer, 3);
    let w2 = s.admit(&a, MemberRole::Writer, 4);
    let both_saw = s.heads();
    let everyone = s.membership().recipients();
    let without = |gone: &SigningKey| -> Vec<_> {
        everyone
            .iter()
            .filter(|(h, _)| *h != feed(gone).0)
            .copied()
            .collect()
    };
    // Each owner removes one writer and boxes a new key to everyone else it knows of,
    // including the writer the other owner is removing.
    let r1 = s.sign_after(
        &a,
        both_saw.clone(),
        Change::Remove {
            member: feed(&w1).0,
            at: 3,
        },
    );
    let k1 = s.epoch_after(&a, vec![r1], &without(&w1));
    let r2 = s.sign_after(
        &b,
        both_saw,
        Change::Remove {
            member: feed(&w2).0,
            at: 4,
        },
    );
    let k2 = s.epoch_after(&b, vec![r2], &without(&w2));
    let m = order_free(&s.records);
    assert_eq!(m.admits(&feed(&w1)), Admission::Upto(Some(3)));
    assert_eq!(m.admits(&feed(&w2)), Admission::Upto(Some(4)));
    assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
    // Both keys are kept; the current one is boxed to a removed writer.
    assert_eq!(m.epochs.len(), 3);
    let current = m.current_key().expect("governed");
    assert!(current == k1 || current == k2);
    assert!(m.needs_rotation());
    let holder = if current == k1 { &w2 } else { &w1 };
    assert!(s.unlock_device(holder).contains(&current));
    // Another epoch, after both, to the devices still in: no removed device holds it.
    let k3 = s.rotate(&a);
    let m = s.membership();
    assert_eq!(m.current_key(), Some(k3));
    assert!(!m.needs_rotation());
    assert!(!s.unlock_device(&w1).contains(&k3));
    assert!(!s.unlock_device(&w2).contains(&k3));
    // Those still in read everything.
    assert_eq!(s.unlock_device(&b), keys(&[s.genesis.key_id(), k1, k2, k3]));
}

#[test]
fn the_current_key_boxed_to_the_invite_of_a_removed_device_asks_for_rotation() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = s.invite(&a, MemberRole::Writer, [9; 32]);
    // An epoch while the invite is pending boxes the key to it.
    let k1 = s.rotate(&a);
    assert!(s.membership().epochs[1].holders.contains(&invite.public()));
    let d = device(2);
    s.join(&invite, &d);
    assert!(!s.membership().needs_rotation());
    s.remove(&a, feed(&d).0, 0);
    // The removed device still holds the invite secret, which opens the current key.
    assert!(s.unlock_invite(&invite).contains(&k1));
    assert!(s.membership().needs_rotation());
    let k2 = s.rotate(&a);
    assert!(!s.membership().needs_rotation());
    assert!(!s.unlock_invite(&invite).contains(&k2));
}

#[test]
fn a_revoked_invite_holding_the_current_key_asks_for_rotation() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = s.invite(&a, MemberRole::Reader, [9; 32]);
    s.rotate(&a);
    assert!(!s.membership().needs_rotation());
    s.remove(&a, invite.public(), 0);
    assert!(s.membership().needs_rotation());
}

// Content keys.

#[test]
fn an_epoch_gives_remaining_devices_the_new_key_and_every_earlier_one() {
    let a = device(1);
    let mut s = Space::new(&a);
    let k0 = s.genesis.key_id();
    let w = s.admit(&a, MemberRole::Writer, 2);
    let r = s.admit(&a, MemberRole::Reader, 3);
    let k1 = s.rotate(&a);
    let late = s.admit(&a, MemberRole::Writer, 4);
    s.remove(&a, feed(&r).0, 0);
    let k2 = s.rotate(&a);
    let m = s.membership();
    assert_eq!(m.epoch(), 2);
    assert_eq!(m.current_key(), Some(k2));
    assert!(!m.needs_rotation());
    let all = keys(&[k0, k1, k2]);
    // The first owner learns the genesis key from the space secret, and the rest from boxes;
    // even without the genesis key, the newest one opens it.
    assert_eq!(
        s.unlock(&[(&feed(&a).0, &device_box(&a))], s.genesis_key()),
        all
    );
    assert_eq!(s.unlock_device(&a), all);
    assert_eq!(s.unlock_device(&w), all);
    // A device that joined after k1 reads what was written before it came.
    assert_eq!(s.unlock_device(&late), all);
    // The removed reader keeps what it had, and never gets the key that removed it.
    assert_eq!(s.unlock_device(&r), keys(&[k0, k1]));
    let r_invite = InviteKeys::from_secret(&[3 ^ 0x80; 32]);
    assert_eq!(s.unlock_invite(&r_invite), keys(&[k0]));
    let both = s.unlock(
        &[
            (&feed(&r).0, &device_box(&r)),
            (&r_invite.public(), &r_invite.boxing),
        ],
        BTreeMap::new(),
    );
    assert_eq!(both, keys(&[k0, k1]));
    // Another's box secret opens nothing addressed to a device.
    assert!(s
        .unlock(&[(&feed(&w).0, &device_box(&r))], BTreeMap::new())
        .is_empty());
}

#[test]
fn an_invite_gives_the_key_current_at_invite_time_and_nothing_newer() {
    let a = device(1);
    let mut s = Space::new(&a);
    let k0 = s.genesis.key_id();
    let k1 = s.rotate(&a);
    let invite = s.invite(&a, MemberRole::Writer, [9; 32]);
    assert_eq!(s.membership().invites[&invite.public()].key, k1);
    let d = device(2);
    s.join(&invite, &d);
    let k2 = s.rotate(&a);
    // The invite secret opens k1 (boxed to it) and k0 (wrapped in k1's epoch), not k2, whose
    // epoch wraps k1 but is boxed only to devices.
    assert_eq!(s.unlock_invite(&invite), keys(&[k0, k1]));
    assert_eq!(s.unlock_device(&d), keys(&[k0, k1, k2]));
    // A pending invite is a recipient of a new epoch like a device.
    let pending = s.invite(&a, MemberRole::Reader, [10; 32]);
    let k3 = s.rotate(&a);
    assert_eq!(s.unlock_invite(&pending), keys(&[k0, k1, k2, k3]));
}

#[test]
fn wrapped_keys_open_only_in_their_own_space_under_their_own_id() {
    let a = device(1);
    let mut s = Space::new(&a);
    let k0 = s.genesis.key_id();
    let new = [4u8; 32];
    let old = s.keys[&k0];
    let elsewhere = SpaceSecret::from_bytes([8; 32]).address();
    let other_id = KeyId([9; 8]);
    let to = [(feed(&a).0, device_of(&a).box_key)];
    let boxes = vec![(to[0].0, Box::new(box_key(&mut s.rng, &to[0].1, &new)))];
    // Two wraps that should not open: one made for another space, one under another id.
    let earlier = vec![
        (
            k0,
            Box::new(wrap_key(&mut s.rng, &elsewhere, &new, &k0, &old)),
        ),
        (
            k0,
            Box::new(wrap_key(&mut s.rng, &s.address, &new, &other_id, &old)),
        ),
    ];
    let id = s.sign(&a, Change::Epoch { boxes, earlier });
    s.keys.insert(id.key_id(), new);
    assert_eq!(s.unlock_device(&a), keys(&[id.key_id()]));
}

#[test]
fn labels_open_only_with_the_key_they_were_sealed_with() {
    let a = device(1);
    let mut s = Space::new(&a);
    let (change, invite) = s.invite_change(MemberRole::Writer, [9; 32], "Ana's laptop");
    s.sign(&a, change);
    let d = device(2);
    s.join(&invite, &d);
    let m = s.membership();
    // Until an epoch is boxed to it, the device reads with the key its invite brought.
    assert!(s.unlock_device(&d).is_empty());
    let keys = s.unlock(
        &[
            (&feed(&d).0, &device_box(&d)),
            (&invite.public(), &invite.boxing),
        ],
        BTreeMap::new(),
    );
    let held: BTreeMap<KeyId, ContentKey> = keys
        .iter()
        .map(|id| (*id, Zeroizing::new(s.keys[id])))
        .collect();
    assert_eq!(
        m.invite_label(&s.address, &invite.public(), &held),
        Some("Ana's laptop".into())
    );
    let member = &m.members[&feed(&d)];
    assert_eq!(
        m.label(&s.address, member, &held),
        Some("Ana's laptop".into())
    );
    // The first owner has no invite, so no label.
    assert_eq!(m.label(&s.address, &m.members[&feed(&a)], &held), None);
    // No key, or a wrong key under the right id, opens nothing.
    assert_eq!(
        m.invite_label(&s.address, &invite.public(), &BTreeMap::new()),
        None
    );
    let wrong: BTreeMap<KeyId, ContentKey> = keys
        .iter()
        .map(|id| (*id, Zeroizing::new([0xee; 32])))
        .collect();
    assert_eq!(m.invite_label(&s.address, &invite.public(), &wrong), None);
    // The label is bound to its invite and space.
    let key = s.keys[&s.genesis.key_id()];
    let sealed = seal_label(&mut s.rng, &s.address, &[1; 32], &key, "moved");
    let (change, other) = s.invite_change(MemberRole::Writer, [10; 32], "");
    let Change::Invite {
        invite: i,
        invite_box,
        role,
        key: k,
        sealed: sk,
        ..
    } = change
    else {
        unreachable!()
    };
    s.sign(
        &a,
        Change::Invite {
            invite: i,
            invite_box,
            role,
            key: k,
            sealed: sk,
            label: sealed,
        },
    );
    let m = s.membership();
    assert_eq!(m.invite_label(&s.address, &other.public(), &held), None);
    assert!(!m.invites[&invite.public()]
        .label
        .windows(3)
        .any(|w| w == b"Ana"));
}

#[test]
fn long_labels_are_cut_to_the_longest_a_record_takes() {
    let a = device(1);
    let mut s = Space::new(&a);
    let long = "x".repeat(3 * MAX_LABEL);
    let (change, invite) = s.invite_change(MemberRole::Writer, [9; 32], &long);
    s.sign(&a, change);
    let held: BTreeMap<KeyId, ContentKey> = [(
        s.genesis.key_id(),
        Zeroizing::new(s.keys[&s.genesis.key_id()]),
    )]
    .into();
    let label = s
        .membership()
        .invite_label(&s.address, &invite.public(), &held)
        .expect("opens");
    assert_eq!(label, "x".repeat(MAX_LABEL));
    // Cut between characters: 42 three-byte euro signs are the most that fit.
    let (change, invite) = s.invite_change(MemberRole::Writer, [10; 32], &"€".repeat(50));
    s.sign(&a, change);
    let label = s
        .membership()
        .invite_label(&s.address, &invite.public(), &held)
        .expect("opens");
    assert_eq!(label, "€".repeat(42));
}

// The content cipher of governed spaces.

fn epoch_keys(ids: &[u8]) -> BTreeMap<KeyId, ContentKey> {
    ids.iter()
        .map(|&n| (KeyId([n; 8]), Zeroizing::new([n; 32])))
        .collect()
}

#[test]
fn the_epoch_cipher_seals_with_the_current_key_and_names_it() {
    let address = space_secret().address();
    let (k1, k2) = (KeyId([1; 8]), KeyId([2; 8]));
    let c = ContentCipher::epochs(address, &epoch_keys(&[1, 2]), Some(k2));
    let f = feed(&device(1));
    let nonce = [5u8; 24];
    let sealed = c.seal(&f, 3, b"hello", &nonce).expect("holds k2");
    assert_eq!(c.overhead(), 8 + crate::space::SEAL_OVERHEAD);
    assert_eq!(sealed.len(), 5 + c.overhead());
    assert_eq!(&sealed[..8], &k2.0);
    assert_eq!(&sealed[8..32], &nonce);
    assert_eq!(c.open(&f, 3, &sealed).expect("opens"), b"hello");
    // Entries sealed under an earlier key it holds still open.
    let old = ContentCipher::epochs(address, &epoch_keys(&[1]), Some(k1));
    let earlier = old.seal(&f, 1, b"before", &nonce).expect("holds k1");
    assert_eq!(&earlier[..8], &k1.0);
    assert_eq!(c.open(&f, 1, &earlier).expect("opens"), b"before");
    // The same key and nonce under another key id is another ciphertext.
    assert_ne!(
        earlier[8..],
        c.seal(&f, 1, b"before", &nonce).expect("seals")[8..]
    );
    assert_eq!(
        hex::encode(&sealed),
        "0202020202020202050505050505050505050505050505050505050505050505\
         d2e16af2b4e640544f38335cca3d609c4da55cd5db"
    );
}

#[test]
fn the_epoch_cipher_refuses_keys_it_lacks_and_to_seal_without_a_current_key() {
    let address = space_secret().address();
    let (k1, k2) = (KeyId([1; 8]), KeyId([2; 8]));
    let f = feed(&device(1));
    let writer = ContentCipher::epochs(address, &epoch_keys(&[1, 2]), Some(k2));
    let sealed = writer.seal(&f, 3, b"hello", &[5; 24]).expect("holds k2");
    // A device removed before k2 holds only k1.
    let removed = ContentCipher::epochs(address, &epoch_keys(&[1]), Some(k2));
    assert_eq!(
        removed.open(&f, 3, &sealed),
        Err(SpaceError::NoKey { feed: f, seq: 3 })
    );
    assert_eq!(
        removed.seal(&f, 4, b"late", &[5; 24]),
        Err(SpaceError::NoCurrentKey)
    );
    // No current key at all, or none held.
    let none = ContentCipher::epochs(address, &epoch_keys(&[1, 2]), None);
    assert_eq!(
        none.seal(&f, 4, b"x", &[5; 24]),
        Err(SpaceError::NoCurrentKey)
    );
    assert_eq!(none.open(&f, 3, &sealed).expect("reads"), b"hello");
    let empty = ContentCipher::epochs(address, &BTreeMap::new(), Some(k1));
    assert_eq!(
        empty.seal(&f, 4, b"x", &[5; 24]),
        Err(SpaceError::NoCurrentKey)
    );
    assert!(matches!(
        empty.open(&f, 3, &sealed),
        Err(SpaceError::NoKey { .. })
    ));
    assert_eq!(
        writer.open(&f, 3, &sealed[..47]),
        Err(SpaceError::TooShort { len: 47 })
    );
    assert!(writer.open(&f, 3, &sealed[..48]).is_err());
}

#[test]
fn an_epoch_ciphertext_moved_or_relabelled_does_not_open() {
    let address = space_secret().address();
    let (k1, k2) = (KeyId([1; 8]), KeyId([2; 8]));
    let (f, g) = (feed(&device(1)), feed(&device(2)));
    let c = ContentCipher::epochs(address, &epoch_keys(&[1, 2]), Some(k2));
    let sealed = c.seal(&f, 3, b"hello", &[5; 24]).expect("seals");
    assert_eq!(
        c.open(&f, 4, &sealed),
        Err(SpaceError::Decrypt { feed: f, seq: 4 })
    );
    assert_eq!(
        c.open(&g, 3, &sealed),
        Err(SpaceError::Decrypt { feed: g, seq: 3 })
    );
    let elsewhere = SpaceSecret::from_bytes([8; 32]).address();
    let other = ContentCipher::epochs(elsewhere, &epoch_keys(&[1, 2]), Some(k2));
    assert!(matches!(
        other.open(&f, 3, &sealed),
        Err(SpaceError::Decrypt { .. })
    ));
    // The key id is authenticated: naming another held key fails rather than mis-reading.
    let mut relabelled = sealed.clone();
    relabelled[..8].copy_from_slice(&k1.0);
    assert!(matches!(
        c.open(&f, 3, &relabelled),
        Err(SpaceError::Decrypt { .. })
    ));
    for bit in 64..sealed.len() * 8 {
        let mut t = sealed.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(c.open(&f, 3, &t).is_err(), "bit {bit}");
    }
    // Nor does a governed entry open as a legacy one, or the reverse.
    let legacy = ContentCipher::new(&space_secret());
    assert!(legacy.open(&f, 3, &sealed).is_err());
    let old = legacy.seal(&f, 3, b"hello", &[5; 24]).expect("seals");
    assert!(c.open(&f, 3, &old).is_err());
}

#[test]
fn the_legacy_cipher_layout_is_unchanged() {
    let secret = SpaceSecret::from_bytes([1; 32]);
    let c = ContentCipher::new(&secret);
    let f = FeedKey::from(&SigningKey::from_bytes(&[2; 32]));
    assert_eq!(c.overhead(), crate::space::SEAL_OVERHEAD);
    let sealed = c.seal(&f, 7, b"hello", &[3; 24]).expect("seals");
    assert_eq!(
        hex::encode(&sealed),
        "030303030303030303030303030303030303030303030303f7b90ccd1c6946ef5676f51d15403b00cec3704a0f"
    );
    assert_eq!(c.open(&f, 7, &sealed).expect("opens"), b"hello");
}

// Codes.

/// A code written out by hand from the format in `code.rs`'s module doc, to make codes the
/// encoder would refuse to (other versions).
fn handmade_code(prefix: &str, kind: u8, version: u8, key: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut input = vec![kind, version];
    input.extend_from_slice(key);
    let check = blake3::derive_key("seeder 2026-11 code checksum v1", &input);
    let mut payload = vec![version];
    payload.extend_from_slice(key);
    payload.extend_from_slice(&check[..4]);
    let mut bits = String::new();
    for b in payload {
        bits.push_str(&format!("{b:08b}"));
    }
    while !bits.len().is_multiple_of(5) {
        bits.push('0');
    }
    let chars: Vec<char> = bits
        .as_bytes()
        .chunks(5)
        .map(|c| {
            let v = u8::from_str_radix(std::str::from_utf8(c).expect("ascii"), 2).expect("bits");
            ALPHABET[v as usize] as char
        })
        .collect();
    let groups: Vec<String> = chars.chunks(5).map(|g| g.iter().collect()).collect();
    format!("{prefix}-{}", groups.join("-"))
}

fn device_invite() -> InviteCode {
    InviteCode::device(space_secret().address(), [9; 32])
}

/// The characters of a code's body, without prefix or dashes.
fn body(code: &str) -> Vec<char> {
    let (_, rest) = code.split_once('-').expect("a prefix");
    rest.chars().filter(|c| *c != '-').collect()
}

#[test]
fn device_invites_round_trip_as_111_characters_in_groups_of_five() {
    let code = device_invite();
    let text = code.to_string();
    assert!(text.starts_with("invite-"), "{text}");
    let groups: Vec<&str> = text["invite-".len()..].split('-').collect();
    assert_eq!(groups.len(), 23);
    assert!(groups[..22].iter().all(|g| g.len() == 5), "{text}");
    assert_eq!(groups[22].len(), 1);
    assert_eq!(body(&text).len(), 111);
    assert_eq!(
        text,
        handmade_code("invite", b'i', 2, &{
            let mut key = space_secret().address().0.to_vec();
            key.extend_from_slice(&[9; 32]);
            key
        })
    );
    let back = InviteCode::from_str(&text).expect("reads");
    assert_eq!(back, code);
    assert_eq!(back.address(), space_secret().address());
    let InviteCode::Device { secret, .. } = &back else {
        panic!("a device invite");
    };
    assert_eq!(**secret, [9; 32]);
    // Forgiving as seed codes are: case, spaces, no dashes.
    assert_eq!(
        InviteCode::from_str(&text.to_uppercase()).expect("reads"),
        code
    );
    assert_eq!(
        InviteCode::from_str(&format!(" {} ", text.replace('-', " "))).expect("reads"),
        code
    );
    let bare: String = body(&text).into_iter().collect();
    assert_eq!(
        InviteCode::from_str(&format!("invite-{bare}")).expect("reads"),
        code
    );
    // Space invites keep their 60 characters and their meaning.
    let space = InviteCode::new(&space_secret());
    assert_eq!(body(&space.to_string()).len(), 60);
    assert_eq!(
        InviteCode::from_str(&space.to_string()).expect("reads"),
        space
    );
    assert_eq!(format!("{code:?}"), "InviteCode(…)");
}

#[test]
fn every_single_character_change_in_a_device_invite_is_a_typo() {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let text = device_invite().to_string();
    let chars: Vec<char> = text.chars().collect();
    let mut tried = 0;
    for (i, &c) in chars.iter().enumerate().skip("invite-".len()) {
        if c == '-' {
            continue;
        }
        let at = ALPHABET
            .iter()
            .position(|&a| a as char == c)
            .expect("alphabet");
        // Three substitutes per place keep this fast; each flips different bits.
        for step in [1, 16, 31] {
            let mut t = chars.clone();
            t[i] = ALPHABET[(at + step) % 32] as char;
            let t: String = t.into_iter().collect();
            match InviteCode::from_str(&t) {
                Err(CodeError::Typo { kind, .. }) => assert_eq!(kind, "an invite code"),
                other => panic!("{t}: expected a typo, got {other:?}"),
            }
            tried += 1;
        }
    }
    assert_eq!(tried, 111 * 3);
    // A change in one group is pointed at.
    let mut t = chars.clone();
    let at = "invite-".len() + 6 * 9 + 2;
    t[at] = if t[at] == 'x' { 'y' } else { 'x' };
    let t: String = t.into_iter().collect();
    let err = InviteCode::from_str(&t).expect_err("a typo");
    assert!(
        matches!(&err, CodeError::Typo { suspect: Some(s), .. } if s.group == 10),
        "{err:?}"
    );
    assert!(err.to_string().contains("group 10"), "{err}");
}

#[test]
fn a_seed_code_body_cannot_pass_as_an_invite() {
    let seed = SeedCode::new(space_secret().address()).to_string();
    let as_invite = format!("invite{}", &seed["seed".len()..]);
    assert!(matches!(
        InviteCode::from_str(&as_invite),
        Err(CodeError::Typo { .. })
    ));
    // And a device invite's body is no seed code: it is too long to be one.
    let invite = device_invite().to_string();
    let as_seed = format!("seed{}", &invite["invite".len()..]);
    assert_eq!(
        SeedCode::from_str(&as_seed),
        Err(CodeError::WrongLength {
            kind: "a seed code",
            got: 111,
            expected: 60
        })
    );
    assert!(matches!(
        SeedCode::from_str(&invite),
        Err(CodeError::WrongKind { .. })
    ));
}

#[test]
fn wrong_lengths_name_the_nearest_expected_length() {
    let invite: String = body(&device_invite().to_string()).into_iter().collect();
    let seed: String = body(&SeedCode::new(space_secret().address()).to_string())
        .into_iter()
        .collect();
    let long = format!("{invite}{invite}");
    for (n, expected) in [(1, 60), (59, 60), (61, 60), (85, 60), (86, 111), (110, 111)] {
        assert_eq!(
            InviteCode::from_str(&format!("invite-{}", &long[..n])),
            Err(CodeError::WrongLength {
                kind: "an invite code",
                got: n,
                expected
            }),
            "{n} characters"
        );
    }
    for n in [112, 200] {
        assert_eq!(
            InviteCode::from_str(&format!("invite-{}", &long[..n])),
            Err(CodeError::WrongLength {
                kind: "an invite code",
                got: n,
                expected: 111
            })
        );
    }
    for n in [59, 61, 100, 111] {
        let text = format!("seed-{}", &format!("{seed}{seed}")[..n]);
        assert_eq!(
            SeedCode::from_str(&text),
            Err(CodeError::WrongLength {
                kind: "a seed code",
                got: n,
                expected: 60
            })
        );
    }
    let err = InviteCode::from_str(&format!("invite-{}", &invite[..100])).expect_err("short");
    assert_eq!(
        err.to_string(),
        "an invite code is incomplete or too long: 100 characters instead of 111"
    );
}

#[test]
fn invite_codes_of_unknown_versions_ask_for_a_newer_seeder() {
    let key64 = [3u8; 64];
    let key32 = [3u8; 32];
    for (key, version) in [(&key64[..], 1), (&key64[..], 3), (&key32[..], 2)] {
        let text = handmade_code("invite", b'i', version, key);
        assert_eq!(
            InviteCode::from_str(&text),
            Err(CodeError::UnknownVersion {
                kind: "an invite code",
                version
            }),
            "version {version}, {} bytes",
            key.len()
        );
    }
    // The hand-made encoder agrees with the real one where both apply.
    let secret = SpaceSecret::from_bytes(key32);
    assert_eq!(
        handmade_code("invite", b'i', 1, &key32),
        InviteCode::new(&secret).to_string()
    );
}

// Order, waiting and heads.

#[test]
fn any_order_of_the_records_gives_the_same_membership() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    let w = s.admit(&b, MemberRole::Writer, 3);
    let r = s.admit(&a, MemberRole::Reader, 4);
    s.rotate(&a);
    let split = s.heads();
    // Concurrent work by both owners.
    let invite_a = {
        let (change, keys) = s.invite_change(MemberRole::Writer, [20; 32], "by a");
        s.sign_after(&a, split.clone(), change);
        keys
    };
    s.sign_after(
        &b,
        split.clone(),
        Change::SetRole {
            device: feed(&r),
            role: MemberRole::Writer,
            at: 0,
        },
    );
    s.sign_after(
        &b,
        split,
        Change::Remove {
            member: feed(&w).0,
            at: 5,
        },
    );
    s.join(&invite_a, &device(20));
    s.rotate(&b);
    let m = order_free(&s.records);
    assert_eq!(m.heads.len(), 1);
    assert_eq!(m.role(&feed(&r)), Some(MemberRole::Writer));
    assert_eq!(m.role(&feed(&device(20))), Some(MemberRole::Writer));
    assert_eq!(m.admits(&feed(&w)), Admission::Upto(Some(5)));
    assert_eq!(m.epoch(), 2);
    assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
}

#[test]
fn records_whose_parents_are_missing_wait_and_count_once_they_arrive() {
    let a = device(1);
    let mut s = Space::new(&a);
    let invite = s.invite(&a, MemberRole::Writer, [9; 32]);
    let w = device(2);
    s.join(&invite, &w);
    let k1 = s.rotate(&a);
    let invite_id = s.records[1].id();
    let without: Vec<_> = s
        .records
        .iter()
        .filter(|r| r.id() != invite_id)
        .cloned()
        .collect();
    let m = order_free(&without);
    assert_eq!((m.records, m.waiting), (3, 2));
    assert_eq!(m.role(&feed(&w)), None);
    assert_eq!(m.current_key(), Some(s.genesis.key_id()));
    assert_eq!(m.heads, vec![s.genesis]);
    assert!(m.conflicts.is_empty(), "waiting is not a conflict");
    // The invite arrives last.
    let mut all = without;
    all.push(s.records[1].clone());
    let m = Membership::compute(&all);
    assert_eq!((m.records, m.waiting), (4, 0));
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Writer));
    assert_eq!(m.current_key(), Some(k1));
    // A parent nobody has makes its child wait for good, and no head.
    let lost = s.sign_after(
        &a,
        vec![RecordId([0xab; 32])],
        Change::Remove {
            member: feed(&w).0,
            at: 0,
        },
    );
    let m = s.membership();
    assert_eq!((m.records, m.waiting), (5, 1));
    assert!(!m.heads.contains(&lost));
    assert_eq!(m.role(&feed(&w)), Some(MemberRole::Writer));
}

#[test]
fn the_same_record_given_twice_counts_once() {
    let a = device(1);
    let mut s = Space::new(&a);
    s.admit(&a, MemberRole::Writer, 2);
    let mut twice = s.records.clone();
    twice.extend(s.records.iter().cloned());
    let m = Membership::compute(&twice);
    assert_eq!((m.records, m.waiting), (3, 0));
    assert_eq!(m, s.membership());
}

#[test]
fn heads_are_the_records_no_one_names() {
    let a = device(1);
    let mut s = Space::new(&a);
    let b = s.admit(&a, MemberRole::Owner, 2);
    let split = s.heads();
    assert_eq!(split.len(), 1);
    let (c1, _) = s.invite_change(MemberRole::Reader, [30; 32], "");
    let x = s.sign_after(&a, split.clone(), c1);
    let (c2, _) = s.invite_change(MemberRole::Reader, [31; 32], "");
    let y = s.sign_after(&b, split, c2);
    let heads: BTreeSet<RecordId> = s.heads().into_iter().collect();
    assert_eq!(heads, [x, y].into());
    // The next record names both, and is then the only head.
    let z = s.rotate(&a);
    let m = s.membership();
    let z = epoch_record(&s, z);
    assert_eq!(m.heads, vec![z]);
    let body = &s.records.last().expect("a record").record().body;
    let parents: BTreeSet<RecordId> = body.parents.iter().copied().collect();
    assert_eq!(parents, [x, y].into());
    // A record that didn't count is still a head: the next one must name it.
    let ignored = s.sign(
        &device(9),
        Change::Remove {
            member: feed(&a).0,
            at: 0,
        },
    );
    assert_eq!(s.membership().heads, vec![ignored]);
}

#[test]
fn a_chain_as_long_as_the_bound_is_applied_in_its_order() {
    // A chain of MAX_RECORDS records, each a removal of nobody: the deepest possible log, with
    // ids in no relation to depths. Computing it once held every record's ancestors (half a
    // gigabyte) and swept the log once per level; now it takes a few milliseconds.
    let a = device(1);
    let mut s = Space::new(&a);
    let mut parents = s.heads();
    let mut ids = Vec::new();
    for n in 1..MAX_RECORDS as u32 {
        let mut member = [0u8; 32];
        member[..4].copy_from_slice(&n.to_le_bytes());
        let id = s.sign_after(&a, parents, Change::Remove { member, at: 0 });
        ids.push(id);
        parents = vec![id];
    }
    let mut shuffled = s.records.clone();
    shuffled.shuffle(&mut StdRng::seed_from_u64(3));
    let m = Membership::compute(&shuffled);
    assert_eq!((m.records, m.waiting), (MAX_RECORDS, 0));
    assert_eq!(m.heads, vec![*ids.last().expect("records")]);
    let in_order: Vec<RecordId> = m.conflicts.iter().map(|(id, _)| *id).collect();
    assert_eq!(in_order, ids, "applied in the chain's order");
}

// Record checks.

#[test]
fn verify_refuses_records_out_of_bounds() {
    let a = device(1);
    let mut s = Space::new(&a);
    let address = s.address;
    let malformed = |r: Record| {
        assert!(
            matches!(r.verify(&address), Err(MemberError::Malformed { .. })),
            "malformed"
        )
    };
    let remove = Change::Remove {
        member: [1; 32],
        at: 0,
    };
    let many: Vec<RecordId> = (0..=MAX_PARENTS as u8).map(|n| RecordId([n; 32])).collect();
    malformed(Record::sign(&a, address, many.clone(), remove.clone()));
    assert!(
        Record::sign(&a, address, many[..MAX_PARENTS].to_vec(), remove.clone())
            .verify(&address)
            .is_ok()
    );
    // Epochs: no boxes, a box or a wrap of the wrong size.
    let (change, _) = s.epoch_change(&[(feed(&a).0, device_of(&a).box_key)]);
    let Change::Epoch { boxes, earlier } = change else {
        unreachable!()
    };
    let epoch = |boxes: &Vec<_>, earlier: &Vec<_>| {
        Record::sign(
            &a,
            address,
            vec![],
            Change::Epoch {
                boxes: boxes.clone(),
                earlier: earlier.clone(),
            },
        )
    };
    assert!(epoch(&boxes, &earlier).verify(&address).is_ok());
    malformed(epoch(&vec![], &earlier));
    let mut short = boxes.clone();
    short[0].1 .0.pop();
    malformed(epoch(&short, &earlier));
    let mut long = earlier.clone();
    long[0].1 .0.push(0);
    malformed(epoch(&boxes, &long));
    // Invites: a sealed key of the wrong size, a label too long to be a sealed label.
    let (change, _) = s.invite_change(MemberRole::Writer, [9; 32], &"x".repeat(MAX_LABEL));
    assert!(Record::sign(&a, address, vec![], change.clone())
        .verify(&address)
        .is_ok());
    let Change::Invite { sealed, label, .. } = &change else {
        unreachable!()
    };
    assert_eq!(
        (sealed.len(), label.len()),
        (SEALED_KEY_LEN, MAX_LABEL + 40)
    );
    let mut c = change.clone();
    if let Change::Invite { label, .. } = &mut c {
        label.push(0);
    }
    malformed(Record::sign(&a, address, vec![], c));
    let mut c = change;
    if let Change::Invite { sealed, .. } = &mut c {
        sealed.pop();
    }
    malformed(Record::sign(&a, address, vec![], c));
}

#[test]
fn a_record_altered_after_signing_fails_verify() {
    let a = device(1);
    let s = Space::new(&a);
    let record = Record::sign(
        &a,
        s.address,
        vec![s.genesis],
        Change::Remove {
            member: [1; 32],
            at: 3,
        },
    );
    let mut altered = record.clone();
    altered.body.change = Change::Remove {
        member: [1; 32],
        at: 4,
    };
    let id = altered.id();
    assert_eq!(
        altered.verify(&s.address),
        Err(MemberError::BadSignature(id))
    );
    let mut reparented = record.clone();
    reparented.body.parents.clear();
    assert!(reparented.verify(&s.address).is_err());
    let mut resigned = record.clone();
    resigned.signer = feed(&device(2)).0;
    assert!(resigned.verify(&s.address).is_err());
    let mut not_a_point = record.clone();
    not_a_point.signer = [0xff; 32];
    assert!(not_a_point.verify(&s.address).is_err());
    // A record survives the wire with its id.
    let bytes = postcard::to_allocvec(&record).expect("encodes");
    let back: Record = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back.id(), record.id());
    assert_eq!(back.verify(&s.address).expect("verifies").id(), record.id());
}

#[test]
fn roles_read_back_from_their_names() {
    for role in [MemberRole::Reader, MemberRole::Writer, MemberRole::Owner] {
        assert_eq!(MemberRole::from_str(&role.to_string()), Ok(role));
    }
    assert!(!MemberRole::Reader.writes());
    assert!(MemberRole::Writer.writes() && MemberRole::Owner.writes());
    let err = MemberRole::from_str("admin").expect_err("not a role");
    assert!(err.contains("reader, writer or owner"), "{err}");
}

#[test]
fn a_strangers_records_are_not_kept_and_records_waiting_for_parents_are_bounded() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    let held = s.records.clone();
    let stranger = device(99);
    let address = s.address;
    let heads = s.heads();
    let sign = |by: &SigningKey, parents: Vec<RecordId>, n: u64| {
        Record::sign(
            by,
            address,
            parents,
            Change::Remove {
                member: feed(&device(50)).0,
                at: n,
            },
        )
        .verify(&address)
        .unwrap()
    };
    // Placed records: the stranger's are dropped, a member's (even one with no authority) kept.
    let junk: Vec<_> = (0..10).map(|n| sign(&stranger, heads.clone(), n)).collect();
    let by_writer = sign(&w, heads.clone(), 0);
    let kept = worth_keeping(&address, &held, [junk, vec![by_writer.clone()]].concat());
    assert_eq!(kept, vec![by_writer]);
    // Records naming parents not here wait: an owner's, at most MAX_WAITING of them; a
    // stranger's not at all; a writer's within the bound of its key (so that its parent
    // coming later can't bring more in).
    let missing = vec![RecordId([9; 32])];
    let waiting = |by: &SigningKey| -> Vec<_> {
        (0..MAX_WAITING as u64 + 10)
            .map(|n| sign(by, missing.clone(), n))
            .collect()
    };
    assert_eq!(
        worth_keeping(&address, &held, waiting(&a)).len(),
        MAX_WAITING
    );
    assert!(worth_keeping(&address, &held, waiting(&stranger)).is_empty());
    assert_eq!(
        worth_keeping(&address, &held, waiting(&w)).len(),
        MAX_RECORDS_PER_OUTSIDER
    );
    // Already held: nothing new.
    assert!(worth_keeping(&address, &held, held.clone()).is_empty());
}

#[test]
fn a_second_join_with_an_owner_invite_cannot_confirm_itself_or_remove_the_owners() {
    let a = device(1);
    let (b, thief) = (device(2), device(3));
    for confirmed in [true, false] {
        let mut s = Space::new(&a);
        let invite = s.invite(&a, MemberRole::Owner, [9; 32]);
        let invited = s.heads();
        s.join(&invite, &b);
        if confirmed {
            // The owner's next change has `b`'s join among its ancestors.
            s.admit(&a, MemberRole::Writer, 4);
        }
        // The code's other holder joins with only the invite as parent, then, as the owner
        // it would be, confirms itself and removes the space's first owner.
        let again = s.join_after(&invite, &thief, invited);
        s.sign_after(
            &thief,
            vec![again],
            Change::SetRole {
                device: feed(&thief),
                role: MemberRole::Owner,
                at: 0,
            },
        );
        s.sign_after(
            &thief,
            vec![again],
            Change::Remove {
                member: feed(&a).0,
                at: 0,
            },
        );
        let m = order_free(&s.records);
        assert_eq!(
            m.role(&feed(&a)),
            Some(MemberRole::Owner),
            "confirmed: {confirmed}"
        );
        assert_eq!(m.role(&feed(&thief)), None, "confirmed: {confirmed}");
        let expected = confirmed.then_some(MemberRole::Owner);
        assert_eq!(m.role(&feed(&b)), expected, "confirmed: {confirmed}");
    }
}

#[test]
fn a_removed_owner_cannot_confirm_a_second_join_for_a_code_it_kept() {
    let o = device(1);
    let mut s = Space::new(&o);
    let p = s.admit(&o, MemberRole::Owner, 2);
    let invite = s.invite(&o, MemberRole::Owner, [9; 32]);
    let invited = s.heads();
    let d = device(3);
    s.join(&invite, &d);
    // The owner removes `p`: the removal names `d`'s join, so it confirms it.
    s.sign(
        &o,
        Change::Remove {
            member: feed(&p).0,
            at: 0,
        },
    );
    // `p` kept `d`'s code: another device joins with it, and `p` "confirms" that join with a
    // record that sorts before its own removal.
    let thief = device(4);
    let again = s.join_after(&invite, &thief, invited);
    s.sign_after(
        &p,
        vec![again],
        Change::SetRole {
            device: feed(&thief),
            role: MemberRole::Owner,
            at: 0,
        },
    );
    s.sign_after(
        &thief,
        vec![again],
        Change::Remove {
            member: feed(&o).0,
            at: 0,
        },
    );
    let m = order_free(&s.records);
    assert_eq!(m.role(&feed(&o)), Some(MemberRole::Owner));
    assert_eq!(m.role(&feed(&d)), Some(MemberRole::Owner));
    assert_eq!(m.role(&feed(&thief)), None);
    assert!(m.members[&feed(&p)].removed);
}

#[test]
fn an_owner_made_writer_cannot_back_date_an_invite_to_take_the_space() {
    let o = device(1);
    let mut s = Space::new(&o);
    let p = s.admit(&o, MemberRole::Owner, 2);
    let before = s.heads();
    s.sign(
        &o,
        Change::SetRole {
            device: feed(&p),
            role: MemberRole::Writer,
            at: 0,
        },
    );
    // `p`, no longer an owner, signs an owner invite with the parents it had before, and the
    // device it lets in removes the space's creator.
    let (change, keys) = s.invite_change(MemberRole::Owner, [9; 32], "mine");
    let invite = s.sign_after(&p, before, change);
    let n = device(3);
    let join = s.join_after(&keys, &n, vec![invite]);
    s.sign_after(
        &n,
        vec![join],
        Change::Remove {
            member: feed(&o).0,
            at: 0,
        },
    );
    let m = order_free(&s.records);
    assert_eq!(m.role(&feed(&o)), Some(MemberRole::Owner));
    assert_eq!(m.role(&feed(&p)), Some(MemberRole::Writer));
    assert_eq!(m.role(&feed(&n)), None);
    assert!(conflict(&m, invite).is_some());
}

#[test]
fn a_device_let_in_by_a_demoted_owner_cannot_remove_the_remover_by_sorting_first() {
    for removed in [false, true] {
        let o = device(1);
        let mut s = Space::new(&o);
        let p = s.admit(&o, MemberRole::Owner, 2);
        let before = s.heads();
        // The creator admits a writer (two records), then takes `p`'s place: that change is as
        // deep as the removal the attacker makes below.
        s.admit(&o, MemberRole::Writer, 5);
        let loss = s.sign(
            &o,
            if removed {
                Change::Remove {
                    member: feed(&p).0,
                    at: 0,
                }
            } else {
                Change::SetRole {
                    device: feed(&p),
                    role: MemberRole::Writer,
                    at: 0,
                }
            },
        );
        let (change, keys) = s.invite_change(MemberRole::Owner, [9; 32], "mine");
        let invite = s.sign_after(&p, before, change);
        let n = device(3);
        let join = s.join_after(&keys, &n, vec![invite]);
        // Ground so that the removal of the creator sorts before the creator's change.
        let mut at = 0;
        let counter = loop {
            let r = Record::sign(
                &n,
                s.address,
                vec![join],
                Change::Remove {
                    member: feed(&o).0,
                    at,
                },
            )
            .verify(&s.address)
            .unwrap();
            if r.id() < loss {
                break s.add(r.into_record());
            }
            at += 1;
        };
        let m = order_free(&s.records);
        assert_eq!(
            m.role(&feed(&o)),
            Some(MemberRole::Owner),
            "removed: {removed}"
        );
        assert_eq!(m.role(&feed(&n)), None, "removed: {removed}");
        assert_ne!(
            m.role(&feed(&p)),
            Some(MemberRole::Owner),
            "removed: {removed}"
        );
        assert!(conflict(&m, counter).is_some());
    }
}

#[test]
fn a_used_invite_or_a_removed_device_cannot_fill_the_log() {
    let a = device(1);
    let mut s = Space::new(&a);
    let w = s.admit(&a, MemberRole::Writer, 2);
    let ik = InviteKeys::from_secret(&[2 ^ 0x80; 32]);
    s.remove(&a, feed(&w).0, 0);
    let held = s.records.clone();
    let address = s.address;
    let heads = s.heads();
    let sign = |by: &SigningKey, parents: Vec<RecordId>, n: u64| {
        Record::sign(
            by,
            address,
            parents,
            Change::Remove {
                member: feed(&a).0,
                at: n,
            },
        )
        .verify(&address)
        .unwrap()
    };
    // Placed or with no parents at all, back-dated or not: a few are kept from each key.
    for (who, key) in [("the used invite", &ik.signing), ("the removed device", &w)] {
        let flood: Vec<_> = (0..100)
            .map(|n| {
                sign(
                    key,
                    if n % 2 == 0 {
                        Vec::new()
                    } else {
                        heads.clone()
                    },
                    n,
                )
            })
            .collect();
        let kept = worth_keeping(&address, &held, flood);
        let had = held
            .iter()
            .filter(|r| r.record().signer == key.verifying_key().to_bytes())
            .count();
        assert_eq!(kept.len() + had, MAX_RECORDS_PER_OUTSIDER, "{who}");
        let mut more = held.clone();
        more.extend(kept);
        let again: Vec<_> = (100..120).map(|n| sign(key, Vec::new(), n)).collect();
        assert!(worth_keeping(&address, &more, again).is_empty(), "{who}");
    }
    // Copies of a device's Join with other parents (the invite key signs the parents, the
    // device only what it joins as) fall under the same bound.
    let mut s2 = Space::new(&a);
    let ik2 = s2.invite(&a, MemberRole::Reader, [0x91; 32]);
    let r = device(4);
    s2.join(&ik2, &r);
    let held2 = s2.records.clone();
    let mut parent = s2.heads();
    let copies: Vec<_> = (0..100)
        .map(|_| {
            let c = Record::sign(
                &ik2.signing,
                s2.address,
                parent.clone(),
                s2.join_change(&ik2, &r),
            )
            .verify(&s2.address)
            .unwrap();
            parent = vec![c.id()];
            c
        })
        .collect();
    let kept = worth_keeping(&s2.address, &held2, copies);
    assert_eq!(kept.len() + 1, MAX_RECORDS_PER_OUTSIDER, "Join copies");
    let mut all = held2.clone();
    all.extend(kept);
    assert_eq!(
        Membership::compute(&all).role(&feed(&r)),
        Some(MemberRole::Reader)
    );
    // An owner's records are all kept, and so is what they had seen, whoever signed it.
    let by_owner: Vec<_> = (0..100)
        .map(|n| {
            Record::sign(
                &a,
                address,
                heads.clone(),
                Change::SetRole {
                    device: feed(&device(60)),
                    role: MemberRole::Reader,
                    at: n,
                },
            )
            .verify(&address)
            .unwrap()
        })
        .collect();
    assert_eq!(worth_keeping(&address, &held, by_owner).len(), 100);
    // A whole log arriving at once (a new seeder) is kept whole: the removed device's Join is
    // what the owner's removal had seen.
    assert_eq!(worth_keeping(&address, &[], held.clone()).len(), held.len());
}

#[test]
fn a_revocation_concurrent_with_the_join_keeps_the_device_out_in_either_order() {
    let mut orders = BTreeSet::new();
    for at in 0..16 {
        let a = device(1);
        let mut s = Space::new(&a);
        let ik = s.invite(&a, MemberRole::Writer, [0x90; 32]);
        let joining = device(3);
        let heads = s.heads();
        // Neither saw the other: the device joins while the owner revokes the invite.
        let join = Record::sign(
            &ik.signing,
            s.address,
            heads.clone(),
            s.join_change(&ik, &joining),
        )
        .verify(&s.address)
        .unwrap();
        let revoke = Record::sign(
            &a,
            s.address,
            heads,
            Change::Remove {
                member: ik.public(),
                at,
            },
        )
        .verify(&s.address)
        .unwrap();
        orders.insert(join.id() < revoke.id());
        let mut all = s.records.clone();
        all.extend([join, revoke]);
        let m = Membership::compute(&all);
        assert_eq!(m.role(&feed(&joining)), None, "at {at}");
        assert!(m.invites[&ik.public()].revoked);
    }
    assert_eq!(orders.len(), 2, "both orders were tried");
}
