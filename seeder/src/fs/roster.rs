/*!
A home's side of a governed space's membership: keeping the log's records, taking up a device
invite, inviting, removing, listing who is in the space, and the keys this device holds.

The rules (who may do what, what counts) are `space::members`'; this module stores records
and turns the member commands into new signed records. It knows nothing of the network: the
sync layer hands it records from peers and sends on what it returns.
*/

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::home::{Home, HomeError, Rng, SpaceKeys};
use crate::feed::FeedKey;
use crate::space::members::{
    self, Admission, Change, ContentKey, InviteKeys, KeyId, MemberRole, Membership, Record,
    VerifiedRecord,
};
use crate::space::{Address, InviteCode};

type Result<T, E = HomeError> = std::result::Result<T, E>;

/// The key of a stored record: address ‖ record id.
fn record_key(address: &Address, id: &members::RecordId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(address.as_bytes());
    k[32..].copy_from_slice(&id.0);
    k
}

/// What this device holds of a governed space.
pub(super) struct Held {
    pub address: Address,
    pub device: SigningKey,
    pub m: Membership,
    pub keys: BTreeMap<KeyId, ContentKey>,
}

/// One device of a space as its members see it.
#[derive(Clone, Debug)]
pub struct RosterRow {
    pub feed: FeedKey,
    pub role: MemberRole,
    /// Who the owner invited (the label of the invite), when this device can read it.
    pub label: Option<String>,
    pub removed: bool,
    pub frozen_at: Option<u64>,
    /// This device.
    pub you: bool,
    /// The device that created the space (it was invited by no one, so has no label).
    pub first: bool,
}

/// A governed space's membership as shown to a member.
#[derive(Clone, Debug)]
pub struct Roster {
    pub devices: Vec<RosterRow>,
    /// Pending invites: role and label.
    pub invites: Vec<(MemberRole, Option<String>)>,
    pub epoch: usize,
    /// Records that did not count, and why.
    pub conflicts: Vec<String>,
    /// Records waiting for records they follow.
    pub waiting: usize,
    /// This device's own role (none: not yet joined, or removed).
    pub role: Option<MemberRole>,
}

/// What `remove_member` did.
#[derive(Clone, Debug)]
pub struct Removed {
    /// Devices removed, with their labels and the entries of theirs that stay.
    pub devices: Vec<(FeedKey, Option<String>, u64)>,
    /// Pending invites revoked.
    pub invites: usize,
    /// The new epoch number.
    pub epoch: usize,
}

impl Home {
    /// Every record held of `address`, verified again (the set is small).
    pub fn records(&self, address: &Address) -> Result<Vec<VerifiedRecord>> {
        let mut out = Vec::new();
        for item in self.records.scan_prefix(address.as_bytes()) {
            let (k, v) = item?;
            let corrupt = || HomeError::Corrupt {
                what: format!("membership record {}", hex::encode(&k)),
            };
            let record: Record = postcard::from_bytes(&v).map_err(|_| corrupt())?;
            out.push(record.verify(address).map_err(|_| corrupt())?);
        }
        Ok(out)
    }

    pub(super) fn put_records(&self, address: &Address, records: &[VerifiedRecord]) -> Result<()> {
        for r in records {
            self.records.insert(
                record_key(address, &r.id()),
                postcard::to_allocvec(r.record()).expect("records encode"),
            )?;
        }
        Ok(())
    }

    /// The membership of a governed space held here; `None` for a space from before roles.
    pub fn membership(&self, address: &Address) -> Result<Option<Membership>> {
        let records = self.records(address)?;
        if records.is_empty() {
            return Ok(None);
        }
        Ok(Some(Membership::compute(&records)))
    }

    /// Take records of `address` from a peer. Returns the records new here, and any this
    /// device made in answer (its Join, once the invite it holds is in the log): the caller
    /// passes them on to its peers. Durable when this returns.
    pub fn add_records(
        &self,
        address: &Address,
        records: Vec<VerifiedRecord>,
    ) -> Result<Vec<VerifiedRecord>> {
        let Some(name) = self.name_of(address)? else {
            return Ok(Vec::new());
        };
        if let (SpaceKeys::Secret(_), _) = self.record(&name)? {
            // Every member of a space from before roles holds its secret and could sign a
            // genesis: such a space never takes a membership log.
            return Err(HomeError::NotGoverned(name));
        }
        let mut held: Vec<VerifiedRecord> = self.records(address)?;
        let mut new = Vec::new();
        for r in members::worth_keeping(address, &held, records) {
            if held.len() >= members::MAX_RECORDS {
                return Err(HomeError::Members(members::MemberError::TooMany));
            }
            held.push(r.clone());
            new.push(r);
        }
        if new.is_empty() {
            return Ok(new);
        }
        self.put_records(address, &new)?;
        if let Some(join) = self.take_up_invite(&name, &held)? {
            self.put_records(address, std::slice::from_ref(&join))?;
            new.push(join);
        }
        self.store().commit()?;
        if let Some(epoch) = self.rotate_if_asked(&name)? {
            new.push(epoch);
        }
        Ok(new)
    }

    /// This device's Join, when it holds an invite the log now has and has not joined yet.
    fn take_up_invite(
        &self,
        name: &str,
        held: &[VerifiedRecord],
    ) -> Result<Option<VerifiedRecord>> {
        let (
            SpaceKeys::Governed {
                address,
                invite: Some(secret),
                ..
            },
            device,
        ) = self.record(name)?
        else {
            return Ok(None);
        };
        let m = Membership::compute(held);
        let own = FeedKey::from(&device);
        let keys = InviteKeys::from_secret(&secret);
        let public = keys.public();
        match m.invites.get(&public) {
            Some(i) if i.used_by.is_none() && !i.revoked && !m.members.contains_key(&own) => {}
            _ => return Ok(None),
        }
        let dev = members::device_of(&device);
        let device_signature =
            ed25519_dalek::Signer::sign(&device, &members::join_bytes(&address, &public, &dev))
                .to_bytes();
        let join = Record::sign(
            &keys.signing,
            address,
            m.heads.clone(),
            Change::Join {
                invite: public,
                device: dev,
                device_signature,
            },
        )
        .verify(&address)
        .map_err(HomeError::Members)?;
        Ok(Some(join))
    }

    /// The membership of the governed space `name` and every content key this device holds.
    pub(super) fn keys_of(&self, name: &str) -> Result<Held> {
        let (keys, device) = self.record(name)?;
        let SpaceKeys::Governed {
            address,
            genesis_key,
            invite,
        } = keys
        else {
            return Err(HomeError::NotGoverned(name.to_string()));
        };
        let records = self.records(&address)?;
        let m = Membership::compute(&records);
        let mut known = BTreeMap::new();
        if let (Some(k), Some(first)) = (genesis_key, m.epochs.first()) {
            known.insert(first.key, k);
        }
        let own = FeedKey::from(&device);
        let device_box = members::device_box(&device);
        let invite_keys = invite.map(|s| InviteKeys::from_secret(&s));
        let mut boxes = vec![(&own.0, &device_box)];
        let invite_public = invite_keys.as_ref().map(|k| k.public());
        if let (Some(k), Some(p)) = (&invite_keys, &invite_public) {
            // The invite's box opens only what was boxed to the invite, and only while this
            // device is in the space through it.
            if m.members
                .get(&own)
                .is_some_and(|d| d.invite.as_ref() == Some(p))
            {
                boxes.push((p, &k.boxing));
            }
        }
        let keys = m.unlock(&records, &address, &boxes, known);
        Ok(Held {
            address,
            device,
            m,
            keys,
        })
    }

    /// A one-device invite into the space `name` with `role`, for `label` (a person's or a
    /// device's name, readable by members only). Only an owner invites. Returns the code; the
    /// invite reaches the new device through a seeder or any member (`seeder sync`).
    pub fn invite_device(
        &self,
        name: &str,
        role: MemberRole,
        label: &str,
        rng: &mut Rng,
    ) -> Result<InviteCode> {
        let Held {
            address,
            device,
            m,
            keys,
        } = self.keys_of(name)?;
        self.require_owner(name, &device, &m)?;
        let current = m.current_key().ok_or(HomeError::NoCurrentKey)?;
        let key = keys.get(&current).ok_or(HomeError::NoCurrentKey)?;
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(rng, &mut secret[..]);
        let ik = InviteKeys::from_secret(&secret);
        let invite = ik.public();
        let record = Record::sign(
            &device,
            address,
            m.heads.clone(),
            Change::Invite {
                invite,
                invite_box: ik.box_public(),
                role,
                key: current,
                sealed: members::box_key(rng, &ik.box_public(), key).0,
                label: members::seal_label(rng, &address, &invite, key, label),
            },
        );
        self.add_own_record(&address, record)?;
        Ok(InviteCode::device(address, *secret))
    }

    fn require_owner(&self, name: &str, device: &SigningKey, m: &Membership) -> Result<()> {
        match m.role(&FeedKey::from(device)) {
            Some(MemberRole::Owner) => Ok(()),
            role => Err(HomeError::NotOwner {
                space: name.to_string(),
                role,
            }),
        }
    }

    /// Sign `changes` one after the other, the first after `heads`, and keep them.
    fn add_chain(
        &self,
        address: &Address,
        device: &SigningKey,
        mut heads: Vec<members::RecordId>,
        changes: Vec<Change>,
    ) -> Result<()> {
        for change in changes {
            let r = self.add_own_record(address, Record::sign(device, *address, heads, change))?;
            heads = vec![r.id()];
        }
        Ok(())
    }

    fn add_own_record(&self, address: &Address, record: Record) -> Result<VerifiedRecord> {
        let r = record.verify(address).map_err(HomeError::Members)?;
        self.put_records(address, std::slice::from_ref(&r))?;
        self.store().commit()?;
        Ok(r)
    }

    /// Remove from the space `name` every device (and pending invite) that `who` names: a
    /// label given at invite time (a person: all their devices), or at least 8 hex digits of a
    /// device's feed key. Their feeds are frozen at what this device holds of them; a new
    /// epoch's key is boxed to everyone else. Only an owner removes, and not itself.
    pub fn remove_member(&self, name: &str, who: &str, rng: &mut Rng) -> Result<Removed> {
        let Held {
            address,
            device,
            m,
            keys,
        } = self.keys_of(name)?;
        self.require_owner(name, &device, &m)?;
        let own = FeedKey::from(&device);
        let targets = matching(&address, &m, &keys, who);
        let who_l = who.trim().to_lowercase();
        let invites: Vec<[u8; 32]> = m
            .pending()
            .filter(|(k, _)| {
                m.invite_label(&address, k, &keys)
                    .is_some_and(|l| l.to_lowercase() == who_l)
            })
            .map(|(k, _)| *k)
            .collect();
        if targets.iter().any(|(f, _)| *f == own) {
            return Err(HomeError::RemoveSelf(name.to_string()));
        }
        if targets.is_empty() && invites.is_empty() {
            return Err(HomeError::NoSuchMember {
                space: name.to_string(),
                who: who.to_string(),
            });
        }
        let mut removed = Vec::new();
        let mut changes = Vec::new();
        for (feed, label) in &targets {
            let at = self.store().feed(feed)?.map_or(0, |s| s.length);
            changes.push(Change::Remove { member: feed.0, at });
            removed.push((*feed, label.clone(), at));
        }
        changes.extend(invites.iter().map(|invite| Change::Remove {
            member: *invite,
            at: 0,
        }));
        self.add_chain(&address, &device, m.heads.clone(), changes)?;
        let (epoch, _) = self.rotate(name, rng)?;
        Ok(Removed {
            devices: removed,
            invites: invites.len(),
            epoch,
        })
    }

    /// Give the devices `who` names the role `role`. A writer made reader is frozen at what
    /// this device holds of its feed. Only an owner does this, and not to itself.
    pub fn set_role(
        &self,
        name: &str,
        who: &str,
        role: MemberRole,
    ) -> Result<Vec<(FeedKey, Option<String>)>> {
        let Held {
            address,
            device,
            m,
            keys,
        } = self.keys_of(name)?;
        self.require_owner(name, &device, &m)?;
        let targets = matching(&address, &m, &keys, who);
        if targets.iter().any(|(f, _)| *f == FeedKey::from(&device)) {
            return Err(HomeError::RemoveSelf(name.to_string()));
        }
        if targets.is_empty() {
            return Err(HomeError::NoSuchMember {
                space: name.to_string(),
                who: who.to_string(),
            });
        }
        if role.writes() {
            if let Some(frozen) = targets
                .iter()
                .find(|(f, _)| m.members.get(f).is_some_and(|d| d.frozen_at.is_some()))
            {
                return Err(HomeError::StaysFrozen {
                    space: name.to_string(),
                    who: frozen
                        .1
                        .clone()
                        .unwrap_or_else(|| hex::encode(&frozen.0 .0[..8])),
                });
            }
        }
        let mut changes = Vec::new();
        for (feed, _) in &targets {
            let at = self.store().feed(feed)?.map_or(0, |s| s.length);
            changes.push(Change::SetRole {
                device: *feed,
                role,
                at,
            });
        }
        self.add_chain(&address, &device, m.heads.clone(), changes)?;
        Ok(targets)
    }

    /// Start a new epoch of the space `name`: a fresh content key boxed to every device still
    /// in it and every pending invite, with every earlier key this device holds wrapped under
    /// it. Returns the new epoch number and its record.
    pub fn rotate(&self, name: &str, rng: &mut Rng) -> Result<(usize, VerifiedRecord)> {
        let Held {
            address,
            device,
            m,
            keys,
        } = self.keys_of(name)?;
        self.require_owner(name, &device, &m)?;
        let mut new = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(rng, &mut new[..]);
        let boxes = m
            .recipients()
            .into_iter()
            .map(|(holder, public)| (holder, Box::new(members::box_key(rng, &public, &new))))
            .collect();
        let earlier = keys
            .iter()
            .map(|(id, k)| (*id, Box::new(members::wrap_key(rng, &address, &new, id, k))))
            .collect();
        let record = self.add_own_record(
            &address,
            Record::sign(
                &device,
                address,
                m.heads.clone(),
                Change::Epoch { boxes, earlier },
            ),
        )?;
        Ok((m.epoch() + 1, record))
    }

    /// The membership asks for a new epoch (two owners removed devices at once, each boxing
    /// its new key to the other's removed device, or leaving out the other's key) and this
    /// device is the one to make it: the most senior owner, holding every key so far.
    fn rotate_if_asked(&self, name: &str) -> Result<Option<VerifiedRecord>> {
        let Ok(Held {
            device, m, keys, ..
        }) = self.keys_of(name)
        else {
            return Ok(None);
        };
        let own = FeedKey::from(&device);
        if !m.needs_rotation()
            || m.senior_owner() != Some(own)
            || !m.epochs.iter().all(|e| keys.contains_key(&e.key))
        {
            return Ok(None);
        }
        Ok(Some(self.rotate(name, &mut Rng::default())?.1))
    }

    /// Who is in the space `name`, as this device knows it.
    pub fn roster(&self, name: &str) -> Result<Roster> {
        let Held {
            address,
            device,
            m,
            keys,
        } = self.keys_of(name)?;
        let own = FeedKey::from(&device);
        let devices = m
            .members
            .values()
            .map(|d| RosterRow {
                feed: d.device.feed,
                role: d.role,
                label: m.label(&address, d, &keys),
                removed: d.removed,
                frozen_at: d.frozen_at,
                you: d.device.feed == own,
                first: d.invite.is_none(),
            })
            .collect();
        let invites = m
            .pending()
            .map(|(k, i)| (i.role, m.invite_label(&address, k, &keys)))
            .collect();
        Ok(Roster {
            devices,
            invites,
            epoch: m.epoch(),
            conflicts: m
                .conflicts
                .iter()
                .map(|(id, why)| format!("record {id}: {why}"))
                .collect(),
            waiting: m.waiting,
            role: m.role(&own),
        })
    }

    /// Write every feed of the space at `address`, its certificates and its membership
    /// records, to a bundle at `path`.
    pub fn export_bundle(
        &self,
        address: &Address,
        path: &std::path::Path,
    ) -> std::result::Result<super::bundle::BundleSummary, super::bundle::BundleError> {
        use super::bundle::BundleError;
        let home = |e: HomeError| BundleError::Home(e.to_string());
        let certs = self.members(address).map_err(home)?;
        let records: Vec<Record> = self
            .records(address)
            .map_err(home)?
            .into_iter()
            .map(VerifiedRecord::into_record)
            .collect();
        super::bundle::export(self.store(), address, &certs, &records, path)
    }

    /// Check a bundle of the space at `address` whole, then merge its records and feeds here.
    pub fn import_bundle(
        &self,
        address: &Address,
        path: &std::path::Path,
    ) -> std::result::Result<super::bundle::BundleSummary, super::bundle::BundleError> {
        use super::bundle::{BundleError, Registrar};
        let refused = |e: HomeError| BundleError::Tampered(e.to_string());
        let known = self
            .records(address)
            .map_err(|e| BundleError::Home(e.to_string()))?;
        // The membership feeds are judged by, computed once after the records come in rather
        // than once per feed (each time checking every record's signatures).
        let membership: std::cell::RefCell<Option<Option<Membership>>> = Default::default();
        super::bundle::import(
            self.store(),
            address,
            path,
            Registrar {
                known,
                records: &mut |records| {
                    membership.replace(None);
                    self.add_records(address, records)
                        .map(drop)
                        .map_err(refused)
                },
                feed: &mut |cert| {
                    let mut m = membership.borrow_mut();
                    if m.is_none() {
                        *m = Some(self.membership(address).map_err(refused)?);
                    }
                    let m = m.as_ref().and_then(Option::as_ref);
                    self.add_member_in(address, cert, m).map_err(refused)
                },
            },
        )
    }

    /// Whether `feed`'s entries count in the space at `address`, and how far: every feed of a
    /// space from before roles counts whole.
    pub fn admission(&self, address: &Address, feed: &FeedKey) -> Result<Admission> {
        Ok(match self.membership(address)? {
            Some(m) if m.is_governed() => m.admits(feed),
            _ => Admission::Upto(None),
        })
    }
}

/// The devices still in the space that `who` names: the label of their invite (any case), or
/// 8 to 64 hex digits starting a feed key.
fn matching(
    address: &Address,
    m: &Membership,
    keys: &BTreeMap<KeyId, ContentKey>,
    who: &str,
) -> Vec<(FeedKey, Option<String>)> {
    let who_l = who.trim().to_lowercase();
    let hex_prefix =
        (8..=64).contains(&who_l.len()) && who_l.chars().all(|c| c.is_ascii_hexdigit());
    let mut out = Vec::new();
    for d in m.active() {
        let label = m.label(address, d, keys);
        let by_label = label.as_deref().is_some_and(|l| l.to_lowercase() == who_l);
        let by_key = hex_prefix && hex::encode(d.device.feed.0).starts_with(&who_l);
        if by_label || by_key {
            out.push((d.device.feed, label));
        }
    }
    out
}
