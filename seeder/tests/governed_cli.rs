//! Roles and removal in a governed space, with real processes syncing over QUIC on loopback
//! through one seeder that holds only the seed code: an owner, two writers and a reader; a
//! reader that writes anyway; a laptop removed while it follows the seeder live, which the
//! seeder then serves nothing, and which tries to let a new device in; two owners who remove
//! each other offline; a second seeder served only once it is made a partner. One seeder
//! serves every case.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{free_udp_port, Member, Seeder};
use seeder::fs::home::{FileMeta, Home, Rng};
use seeder::fs::Mtime;
use seeder::space::members::{self, InviteKeys};
use seeder::space::{ContentCipher, InviteCode, MemberRole, Membership};

const SPACE: &str = "office";

fn meta() -> FileMeta {
    FileMeta {
        mode: 0o644,
        mtime: Mtime::default(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// `sync --once` that must succeed.
fn sync(m: &Member, peer: &str) -> String {
    let (code, err) = m.sync_once(SPACE, peer, 60);
    assert_eq!(code, 0, "{err}");
    err
}

/// The member's `seeder space members` lines, sorted, without the device key column and
/// without "this device" (which differs per member).
fn roster(m: &Member) -> Vec<String> {
    let mut lines: Vec<String> = m
        .ok(&["space", "members", SPACE])
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let state = cols[3]
                .split(", ")
                .filter(|s| *s != "this device")
                .collect::<Vec<_>>()
                .join(", ");
            format!("{} {} {}", cols[0], cols[1], state)
        })
        .collect();
    lines.sort();
    lines
}

/// The seeder's view of the space: (devices, epoch) from `ctl status --json`.
fn seeder_membership(seed: &Seeder) -> (u64, u64) {
    let status: serde_json::Value = serde_json::from_str(&seed.ctl(&["status", "--json"])).unwrap();
    let space = &status["spaces"][0];
    (
        space["devices"]
            .as_u64()
            .unwrap_or_else(|| panic!("{status}")),
        space["epoch"].as_u64().unwrap(),
    )
}

/// Whether the seeder stores anything of `feed`.
fn seeder_holds(seed: &Seeder, feed: &seeder::feed::FeedKey) -> bool {
    let hex = hex::encode(feed.0);
    seed.data
        .join("feeds")
        .join(&hex[..2])
        .join(format!("{hex}.data"))
        .metadata()
        .is_ok_and(|m| m.len() > 0)
}

fn own_feed(m: &Member) -> seeder::feed::FeedKey {
    Home::open(&m.0).unwrap().space(SPACE).unwrap().own_feed()
}

/// Put a file as a device that ignores its role would (a modified build).
fn put_ignoring_role(m: &Member, path: &str, text: &str) {
    let home = Home::open(&m.0).unwrap();
    let space = home.space(SPACE).unwrap().ignoring_role();
    space
        .put(
            &seeder::fs::Path::new(path).unwrap(),
            &mut text.as_bytes(),
            meta(),
            &mut |_| {},
        )
        .unwrap();
}

/// Append an entry of `bytes` to the device's own feed, signed with its key, as any program
/// holding the home could.
fn append_raw(m: &Member, bytes: &[u8]) {
    let home = Home::open(&m.0).unwrap();
    let key = home.device_key(SPACE).unwrap();
    let mut frontier = home.store().frontier(&own_feed_of(&key)).unwrap();
    let batch = seeder::feed::write_batch(&key, &mut frontier, vec![bytes.to_vec()]).unwrap();
    home.store().append(batch).unwrap();
}

#[test]
fn roles_and_removal_hold_through_a_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let seed = Seeder::start(&d.join("seeder"), free_udp_port());
    let peer = seed.peer();
    let owner = Member(d.join("owner"));
    let wendy = Member(d.join("wendy"));
    let walt = Member(d.join("walt"));
    let rita = Member(d.join("rita"));

    // 1. The owner makes the space and invites two writers and a reader, one device each.
    owner.ok(&["space", "create", SPACE]);
    let code = owner.last(&["space", "seed-code", SPACE]);
    seed.ctl(&["space", "add", &code, "--name", SPACE]);
    let invite_wendy = owner.last(&["space", "invite", SPACE, "--as", "wendy"]);
    let invite_walt = owner.last(&["space", "invite", SPACE, "--as", "walt"]);
    let invite_rita = owner.last(&["space", "invite", SPACE, "--role", "reader", "--as", "rita"]);
    owner.ok(&["put", SPACE, &write(d, "plan.txt", "the plan")]);
    sync(&owner, &peer);
    for (m, code) in [
        (&wendy, &invite_wendy),
        (&walt, &invite_walt),
        (&rita, &invite_rita),
    ] {
        m.ok(&["space", "join", code, "--name", SPACE]);
        sync(m, &peer);
    }
    // An invite works once: a second device with wendy's code is never admitted.
    let copy = Member(d.join("copy"));
    copy.ok(&["space", "join", &invite_wendy, "--name", SPACE]);
    copy.sync_once(SPACE, &peer, 20);
    let refused = copy.run(&["put", SPACE, &write(d, "copy.txt", "x")]);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");

    wendy.ok(&["put", SPACE, &write(d, "notes.txt", "wendy's notes")]);
    sync(&wendy, &peer);
    sync(&owner, &peer);
    assert_eq!(
        roster(&owner),
        vec![
            "owner (created the space) ",
            "reader rita ",
            "writer walt ",
            "writer wendy ",
        ]
    );
    assert_eq!(seeder_membership(&seed), (4, 0));

    // 2. The reader reads; its writes are refused by its own command, and when made anyway,
    // by the seeder and by every member.
    sync(&rita, &peer);
    assert_eq!(rita.ok(&["get", SPACE, "notes.txt", "-"]), "wendy's notes");
    assert_eq!(rita.ok(&["get", SPACE, "plan.txt", "-"]), "the plan");
    let refused = rita.run(&["put", SPACE, &write(d, "mine.txt", "a reader's file")]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("reader"));
    put_ignoring_role(&rita, "mine.txt", "a reader's file");
    rita.sync_once(SPACE, &peer, 20);
    assert!(
        !seeder_holds(&seed, &own_feed(&rita)),
        "the seeder took a reader's entries"
    );
    sync(&owner, &peer);
    let missing = owner.run(&["get", SPACE, "mine.txt", "-"]);
    assert_eq!(missing.status.code(), Some(1));

    // 3. Wendy's laptop is lost while it follows the seeder live: the owner removes it and
    // writes on. The seeder denies it the moment the removal arrives, and its sync ends.
    let wendy_feed = own_feed(&wendy);
    let address = Home::open(&owner.0)
        .unwrap()
        .seed_code(SPACE)
        .unwrap()
        .address()
        .to_hex();
    let mut live = common::seeder()
        .arg("--home")
        .arg(&wendy.0)
        .args(["sync", SPACE, "--watch", "--peer", &peer])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    poll("wendy's live sync served by the seeder", || {
        if let Some(code) = live.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(live.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("wendy's live sync ended early ({code}): {err}");
        }
        serving(&seed, &address) == 1
    });
    let out = owner.ok(&["space", "remove-member", SPACE, "wendy"]);
    assert!(out.contains("removed wendy"), "{out}");
    owner.ok(&["put", SPACE, &write(d, "after.txt", "the new plan")]);
    sync(&owner, &peer);
    assert_eq!(seeder_membership(&seed), (3, 1));
    poll("wendy's live sync ends", || {
        live.try_wait().unwrap().is_some()
    });
    let ended = live.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(3), "{said}");
    assert!(said.contains("no longer serves"), "{said}");
    assert_eq!(serving(&seed, &address), 0);

    // It learned of its removal, so it refuses to write; a modified build writes anyway and
    // syncs: the seeder serves it nothing any more, takes nothing from it, and says why.
    let refused = wendy.run(&["put", SPACE, &write(d, "later.txt", "after my removal")]);
    assert_eq!(refused.status.code(), Some(3));
    put_ignoring_role(&wendy, "later.txt", "after my removal");
    let before = seed.entries();
    let (code, err) = wendy.sync_once(SPACE, &peer, 20);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no longer serves"), "{err}");
    assert_eq!(
        seed.entries(),
        before,
        "the seeder took a removed device's new entries"
    );
    // It learned that it was removed, and nothing written since: not the file, not the new
    // key's record.
    let unreadable = wendy.run(&["get", SPACE, "after.txt", "-"]);
    assert_eq!(unreadable.status.code(), Some(1), "{unreadable:?}");
    {
        let home = Home::open(&wendy.0).unwrap();
        let address = home.seed_code(SPACE).unwrap().address();
        let m = Membership::compute(&home.records(&address).unwrap());
        assert!(m.members[&wendy_feed].removed);
        assert_eq!(
            m.epochs.len(),
            1,
            "it got the records made after its removal"
        );
    }
    // Had it got them anyway (from a copy of a member's disk, say), it could not read what
    // was written after its removal, even with its old invite code.
    {
        let home = Home::open(&wendy.0).unwrap();
        let address = home.seed_code(SPACE).unwrap().address();
        let records = Home::open(&owner.0).unwrap().records(&address).unwrap();
        let m = Membership::compute(&records);
        assert!(m.members[&wendy_feed].removed);
        let InviteCode::Device { secret, .. } = invite_wendy.parse::<InviteCode>().unwrap() else {
            panic!("a governed space's invite is a device invite");
        };
        let ik = InviteKeys::from_secret(&secret);
        let holder = ik.public();
        let device = home.device_key(SPACE).unwrap();
        let own = own_feed_of(&device);
        let dbox = members::device_box(&device);
        let keys = m.unlock(
            &records,
            &address,
            &[(&holder, &ik.boxing), (&own.0, &dbox)],
            BTreeMap::new(),
        );
        assert!(!keys.contains_key(&m.current_key().unwrap()));
        drop(home);
        let owner_home = Home::open(&owner.0).unwrap();
        let feed = owner_home.space(SPACE).unwrap().own_feed();
        let length = owner_home.store().feed(&feed).unwrap().unwrap().length;
        let sealed = owner_home
            .store()
            .reader(&feed)
            .unwrap()
            .read(length - 1)
            .unwrap();
        let cipher = ContentCipher::epochs(address, &keys, None);
        assert!(cipher.open(&feed, length - 1, &sealed).is_err());
    }

    // The others: the remaining writer reads and writes; nobody sees the removed laptop's
    // later files; what it wrote before stays.
    sync(&walt, &peer);
    assert_eq!(walt.ok(&["get", SPACE, "after.txt", "-"]), "the new plan");
    assert_eq!(walt.ok(&["get", SPACE, "notes.txt", "-"]), "wendy's notes");
    walt.ok(&["put", SPACE, &write(d, "walt.txt", "walt writes on")]);
    sync(&walt, &peer);
    for m in [&owner, &rita] {
        sync(m, &peer);
        assert_eq!(m.ok(&["get", SPACE, "walt.txt", "-"]), "walt writes on");
        assert_eq!(m.ok(&["get", SPACE, "after.txt", "-"]), "the new plan");
        assert_eq!(
            m.run(&["get", SPACE, "later.txt", "-"]).status.code(),
            Some(1)
        );
    }

    // 4. The removed laptop signs an invite for a new device anyway (from the log as it knew
    // it): the seeder serves neither of them, and the invite, carried to an owner by a
    // bundle, is ignored there.
    let mallory = Member(d.join("mallory"));
    {
        let home = Home::open(&wendy.0).unwrap();
        let address = home.seed_code(SPACE).unwrap().address();
        let records = home.records(&address).unwrap();
        let m = Membership::compute(&records);
        let device = home.device_key(SPACE).unwrap();
        let secret = [7u8; 32];
        let ik = InviteKeys::from_secret(&secret);
        let mut rng = Rng::default();
        let invite = members::Record::sign(
            &device,
            address,
            m.heads.clone(),
            members::Change::Invite {
                invite: ik.public(),
                invite_box: ik.box_public(),
                role: MemberRole::Owner,
                key: m.epochs[0].key,
                sealed: members::box_key(&mut rng, &ik.box_public(), &[0; 32]).0,
                label: Vec::new(),
            },
        )
        .verify(&address)
        .unwrap();
        home.add_records(&address, vec![invite]).unwrap();
        drop(home);
        let code = InviteCode::device(address, secret).to_string();
        mallory.ok(&["space", "join", &code, "--name", SPACE]);
    }
    let (code, err) = mallory.sync_once(SPACE, &peer, 20);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("does not serve"), "{err}");
    // It holds no key of the space, so it appends raw signed entries.
    append_raw(&mallory, b"let me in");
    mallory.sync_once(SPACE, &peer, 20);
    assert!(!seeder_holds(&seed, &own_feed(&mallory)));
    let bundle = d.join("wendy.bundle");
    wendy.ok(&["bundle", "export", SPACE, bundle.to_str().unwrap()]);
    let imported = owner.run(&["bundle", "import", bundle.to_str().unwrap()]);
    assert!(
        imported.status.code() == Some(0) || imported.status.code() == Some(3),
        "{imported:?}"
    );
    sync(&owner, &peer);
    assert_eq!(
        owner.run(&["get", SPACE, "mallory.txt", "-"]).status.code(),
        Some(1)
    );
    let shown = owner.run(&["space", "members", SPACE]);
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains("ignored"),
        "the ignored record is not shown: {shown:?}"
    );
    assert_eq!(seeder_membership(&seed).0, 3);

    // 5. Two owners remove each other while offline: after syncing, every member and the
    // seeder agree on who stays.
    owner.ok(&["space", "set-role", SPACE, "walt", "owner"]);
    sync(&owner, &peer);
    sync(&walt, &peer);
    let owner_key = hex::encode(own_feed(&owner).0);
    owner.ok(&["space", "remove-member", SPACE, "walt"]);
    walt.ok(&["space", "remove-member", SPACE, &owner_key]);
    // Whichever loses learns at its sync that it was removed (and that sync says so).
    for m in [&owner, &walt, &owner, &walt, &rita] {
        let (code, err) = m.sync_once(SPACE, &peer, 60);
        assert!(code == 0 || err.contains("was removed"), "{code}: {err}");
    }
    let views = [roster(&owner), roster(&walt), roster(&rita)];
    assert_eq!(views[0], views[1]);
    assert_eq!(views[1], views[2]);
    let owners_left = views[0]
        .iter()
        .filter(|l| l.starts_with("owner ") && !l.contains("removed"))
        .count();
    assert_eq!(owners_left, 1, "{:?}", views[0]);
    assert_eq!(seeder_membership(&seed).0, 2);

    // 6. A second seeder given the seed code dials this one as its partner. It proves no
    // device (a removed laptop that hides which one it is looks the same), and this seeder
    // serves a governed space only to its devices and its own partners: it gets nothing, and
    // its status says so. Made a partner here too, it gets everything.
    let seed2 = Seeder::start(&d.join("seeder2"), free_udp_port());
    let seed_code = owner.last(&["space", "seed-code", SPACE]);
    seed2.ctl(&["space", "add", &seed_code, "--name", SPACE]);
    seed2.ctl(&["peer", "add", &peer]);
    let denied = |s: &Seeder| {
        let status: serde_json::Value =
            serde_json::from_str(&s.ctl(&["status", "--json"])).unwrap();
        status["peers"].as_array().unwrap().iter().any(|p| {
            p["denied"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str() == Some(address.as_str()))
        })
    };
    poll("the partner's denial", || denied(&seed2));
    assert_eq!(seed2.entries(), 0);
    seed.ctl(&["peer", "add", &seed2.peer()]);
    let all = seed.entries();
    poll("everything at the second seeder", || seed2.entries() == all);
    poll("the denial forgotten", || !denied(&seed2));
}

/// How many peers connected to `seed` are served the space at `address` (hex).
fn serving(seed: &Seeder, address: &str) -> usize {
    let status: serde_json::Value = serde_json::from_str(&seed.ctl(&["status", "--json"])).unwrap();
    status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["spaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str() == Some(address))
        })
        .count()
}

/// Poll `done` until it holds: a bounded loop (30 s).
fn poll(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what}: not within the bound");
}

fn own_feed_of(key: &ed25519_dalek::SigningKey) -> seeder::feed::FeedKey {
    seeder::feed::FeedKey::from(key)
}
