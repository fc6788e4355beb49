//! Governed spaces between real homes on disk, exchanging bundles (no network): roles,
//! removal with a new key epoch, and what a removed or read-only device can and can't do.
//! The same rules through a real seeder, with the real binary, are in `governed_cli.rs`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use seeder::fs::home::{FileMeta, Home, HomeError, Rng};
use seeder::fs::{Mtime, Path};
use seeder::space::members::{self, InviteKeys};
use seeder::space::{ContentCipher, InviteCode, MemberRole, Membership};

fn meta() -> FileMeta {
    FileMeta {
        mode: 0o644,
        mtime: Mtime::default(),
    }
}

struct Office {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    n: std::cell::Cell<u32>,
}

impl Office {
    fn new() -> Office {
        let dir = tempfile::tempdir().unwrap();
        Office {
            dir: dir.path().to_path_buf(),
            _dir: dir,
            n: Default::default(),
        }
    }
    fn home(&self, name: &str) -> Home {
        Home::open(self.dir.join(name)).unwrap()
    }
    /// `from`'s whole space, as a bundle, imported by `to`.
    fn send(&self, from: &str, to: &str) {
        let n = self.n.get() + 1;
        self.n.set(n);
        let file = self.dir.join(format!("{n}.bundle"));
        let (a, b) = (self.home(from), self.home(to));
        let address = a.seed_code("office").unwrap().address();
        a.export_bundle(&address, &file).unwrap();
        drop(a);
        b.import_bundle(&address, &file).unwrap();
    }
    fn put(&self, who: &str, path: &str, text: &str) -> Result<(), HomeError> {
        let home = self.home(who);
        let space = home.space("office")?;
        space.put(
            &Path::new(path).unwrap(),
            &mut text.as_bytes(),
            meta(),
            &mut |_| {},
        )?;
        Ok(())
    }
    /// The file at `path` as `who` sees it, if it shows and reads.
    fn read(&self, who: &str, path: &str) -> Option<String> {
        let home = self.home(who);
        let space = home.space("office").unwrap();
        let view = space.view().unwrap();
        let file = view.get(&Path::new(path).unwrap())?.clone();
        drop(view);
        let mut out = Vec::new();
        space.read_content(&file, &mut out).ok()?;
        Some(String::from_utf8(out).unwrap())
    }
    fn roster(&self, who: &str) -> Vec<(String, MemberRole, bool)> {
        let mut r: Vec<_> = self
            .home(who)
            .roster("office")
            .unwrap()
            .devices
            .into_iter()
            .map(|d| (d.label.unwrap_or_default(), d.role, d.removed))
            .collect();
        r.sort();
        r
    }
}

/// An owner, a writer "wendy" and a reader "rita", joined through bundles.
fn office() -> (Office, InviteCode) {
    let o = Office::new();
    let mut rng = Rng::default();
    o.home("owner").create_governed("office", &mut rng).unwrap();
    let wendy = o
        .home("owner")
        .invite_device("office", MemberRole::Writer, "wendy", &mut rng)
        .unwrap();
    let rita = o
        .home("owner")
        .invite_device("office", MemberRole::Reader, "rita", &mut rng)
        .unwrap();
    o.home("wendy").join(&wendy, "office", &mut rng).unwrap();
    o.home("rita").join(&rita, "office", &mut rng).unwrap();
    // Not joined until the invite's record arrives.
    assert!(matches!(
        o.put("wendy", "early.txt", "too soon"),
        Err(HomeError::NotJoined(_))
    ));
    o.send("owner", "wendy");
    o.send("owner", "rita");
    o.send("wendy", "owner");
    o.send("rita", "owner");
    (o, wendy)
}

#[test]
fn a_reader_reads_what_writers_write_and_its_own_entries_count_nowhere() {
    let (o, _) = office();
    assert_eq!(
        o.roster("owner"),
        vec![
            (String::new(), MemberRole::Owner, false),
            ("rita".into(), MemberRole::Reader, false),
            ("wendy".into(), MemberRole::Writer, false),
        ]
    );
    o.put("owner", "plan.txt", "from the owner").unwrap();
    o.put("wendy", "notes.txt", "from wendy").unwrap();
    o.send("owner", "rita");
    o.send("wendy", "rita");
    assert_eq!(
        o.read("rita", "plan.txt").as_deref(),
        Some("from the owner")
    );
    assert_eq!(o.read("rita", "notes.txt").as_deref(), Some("from wendy"));

    // The reader's own command refuses to write.
    assert!(matches!(
        o.put("rita", "mine.txt", "a reader's file"),
        Err(HomeError::ReadOnly(_))
    ));
    // A modified reader writes anyway: its feed is left out by every member.
    {
        let home = o.home("rita");
        let space = home.space("office").unwrap().ignoring_role();
        space
            .put(
                &Path::new("mine.txt").unwrap(),
                &mut &b"a reader's file"[..],
                meta(),
                &mut |_| {},
            )
            .unwrap();
    }
    assert_eq!(o.read("rita", "mine.txt"), None);
    o.send("rita", "owner");
    o.send("rita", "wendy");
    assert_eq!(o.read("owner", "mine.txt"), None);
    assert_eq!(o.read("wendy", "mine.txt"), None);
}

#[test]
fn a_removed_laptop_is_frozen_and_cannot_read_what_is_written_after_even_with_its_invite() {
    let (o, wendy_invite) = office();
    o.put("wendy", "before.txt", "written before removal")
        .unwrap();
    o.send("wendy", "owner");
    let removed = o
        .home("owner")
        .remove_member("office", "Wendy", &mut Rng::default())
        .unwrap();
    assert_eq!(removed.devices.len(), 1);
    assert_eq!(removed.epoch, 1);
    o.put("owner", "after.txt", "the new plan").unwrap();
    // The remaining reader gets the new key and reads on; the removed writer's old file stays.
    o.send("owner", "rita");
    assert_eq!(o.read("rita", "after.txt").as_deref(), Some("the new plan"));
    assert_eq!(
        o.read("rita", "before.txt").as_deref(),
        Some("written before removal")
    );

    // The removed laptop learns everything the owner has, and reads none of it that's new.
    o.send("owner", "wendy");
    assert!(o
        .home("wendy")
        .space("office")
        .unwrap()
        .view()
        .unwrap()
        .get(&Path::new("after.txt").unwrap())
        .is_none());
    let refused = o.put("wendy", "later.txt", "after my removal");
    assert!(matches!(refused, Err(HomeError::Removed(_))), "{refused:?}");
    // Not even with the old invite code and every record it ever saw.
    {
        let home = o.home("wendy");
        let address = home.seed_code("office").unwrap().address();
        let records = home.records(&address).unwrap();
        let m = Membership::compute(&records);
        let InviteCode::Device { secret, .. } = &wendy_invite else {
            panic!("a governed space's invite is a device invite");
        };
        let invite = InviteKeys::from_secret(secret);
        let holder = invite.public();
        let current = m.current_key().unwrap();
        let keys = m.unlock(
            &records,
            &address,
            &[(&holder, &invite.boxing)],
            BTreeMap::new(),
        );
        assert!(
            !keys.contains_key(&current),
            "the invite opens the new epoch's key"
        );
        assert!(
            !keys.is_empty(),
            "the invite still opens the key it was given"
        );
        // The owner's new entries don't open with any key the invite gives.
        let owner = o.home("owner");
        let own = owner.space("office").unwrap().own_feed();
        let length = owner.store().feed(&own).unwrap().unwrap().length;
        let cipher = ContentCipher::epochs(address, &keys, None);
        let mut reader = owner.store().reader(&own).unwrap();
        let sealed = reader.read(length - 1).unwrap();
        assert!(cipher.open(&own, length - 1, &sealed).is_err());
    }
    // A modified laptop writes anyway, sealed with the old key: nobody takes it.
    {
        let home = o.home("wendy");
        let space = home.space("office").unwrap().ignoring_role();
        space
            .put(
                &Path::new("later.txt").unwrap(),
                &mut &b"after my removal"[..],
                meta(),
                &mut |_| {},
            )
            .unwrap();
    }
    o.send("wendy", "owner");
    o.send("wendy", "rita");
    assert_eq!(o.read("owner", "later.txt"), None);
    assert_eq!(o.read("rita", "later.txt"), None);
    assert_eq!(
        o.read("owner", "before.txt").as_deref(),
        Some("written before removal")
    );
}

#[test]
fn a_removed_device_cannot_let_a_new_device_in() {
    let (o, _) = office();
    let mut rng = Rng::default();
    // Promote wendy to owner, then remove her: her later invite must count nowhere.
    o.home("owner")
        .set_role("office", "wendy", MemberRole::Owner)
        .unwrap();
    o.send("owner", "wendy");
    o.home("owner")
        .remove_member("office", "wendy", &mut rng)
        .unwrap();
    o.send("owner", "wendy");
    // Wendy's home refuses to invite ...
    assert!(matches!(
        o.home("wendy")
            .invite_device("office", MemberRole::Writer, "mallory", &mut rng),
        Err(HomeError::NotOwner { .. })
    ));
    // ... and a record she signs anyway, after the removal or crafted to look older, is
    // ignored by everyone, so the device it invites is never admitted.
    let home = o.home("wendy");
    let address = home.seed_code("office").unwrap().address();
    let records = home.records(&address).unwrap();
    let genesis = records
        .iter()
        .find(|r| matches!(r.record().body.change, members::Change::Genesis { .. }))
        .unwrap()
        .id();
    let device = home.device_key("office").unwrap();
    drop(home);
    let secret = [7u8; 32];
    let ik = InviteKeys::from_secret(&secret);
    let invite = members::Record::sign(
        &device,
        address,
        vec![genesis],
        members::Change::Invite {
            invite: ik.public(),
            invite_box: ik.box_public(),
            role: MemberRole::Owner,
            key: records[0].id().key_id(),
            sealed: members::box_key(&mut rng, &ik.box_public(), &[0; 32]).0,
            label: Vec::new(),
        },
    )
    .verify(&address)
    .unwrap();
    o.home("wendy").add_records(&address, vec![invite]).unwrap();
    let mallory = InviteCode::device(address, secret);
    o.home("mallory")
        .join(&mallory, "office", &mut rng)
        .unwrap();
    o.send("wendy", "mallory");
    o.send("mallory", "owner");
    o.send("mallory", "rita");
    let mallory_feed = o.home("mallory").space("office").unwrap().own_feed();
    for who in ["owner", "rita", "mallory"] {
        let home = o.home(who);
        let m = home.membership(&address).unwrap().unwrap();
        assert_eq!(m.role(&mallory_feed), None, "{who} admits the device");
        assert!(
            m.conflicts.iter().any(|(_, why)| why.contains("removed")),
            "{who} shows no conflict: {:?}",
            m.conflicts
        );
    }
}

#[test]
fn two_owners_who_remove_each_other_offline_agree_after_exchanging() {
    let (o, _) = office();
    let mut rng = Rng::default();
    o.home("owner")
        .set_role("office", "wendy", MemberRole::Owner)
        .unwrap();
    o.send("owner", "wendy");
    o.send("owner", "rita");
    // Offline, each removes the other.
    let owner_feed = o.home("owner").space("office").unwrap().own_feed();
    o.home("owner")
        .remove_member("office", "wendy", &mut rng)
        .unwrap();
    o.home("wendy")
        .remove_member("office", &hex::encode(owner_feed.0), &mut rng)
        .unwrap();
    o.send("owner", "wendy");
    o.send("wendy", "owner");
    o.send("owner", "rita");
    o.send("wendy", "rita");
    let all: Vec<_> = ["owner", "wendy", "rita"]
        .iter()
        .map(|w| o.roster(w))
        .collect();
    assert_eq!(all[0], all[1]);
    assert_eq!(all[1], all[2]);
    let removed = all[0].iter().filter(|d| d.2).count();
    assert_eq!(
        removed, 1,
        "exactly one of the two owners stays: {:?}",
        all[0]
    );
    let conflicts = o.home("rita").roster("office").unwrap().conflicts;
    assert!(!conflicts.is_empty(), "the ignored removal is shown");
}
