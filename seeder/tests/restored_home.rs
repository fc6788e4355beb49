//! A member home restored from an older copy, against real seeders: caught up, it fetches its
//! own newer entries back and writes on from there; written on before syncing, its feed has
//! two histories — of the same length as a seeder's or longer — and both are detected: the
//! seeder keeps the evidence and freezes the feed, the member's `sync` exits 10 saying what
//! happened and what to do.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_udp_port, Member, Seeder};

fn copy_home(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Entries of the device's own feed of "office" in `home`.
fn own_length(home: &Path) -> u64 {
    let h = seeder::fs::home::Home::open(home).unwrap();
    let feed = h.space("office").unwrap().own_feed();
    h.store().feed(&feed).unwrap().map_or(0, |s| s.length)
}

fn put(m: &Member, dir: &Path, name: &str, content: &[u8]) {
    let local = dir.join(name);
    std::fs::write(&local, content).unwrap();
    m.ok(&["put", "office", local.to_str().unwrap(), name]);
}

/// Write small files until the own feed is exactly `target` entries long.
fn write_up_to(m: &Member, dir: &Path, target: u64, tag: &str) {
    let mut i = 0;
    loop {
        let have = own_length(&m.0);
        assert!(have <= target, "overshot: {have} > {target}");
        if have == target {
            return;
        }
        // An empty file is one entry (its operation); a small one two (content, operation).
        let content: &[u8] = if target - have >= 2 { b"x" } else { b"" };
        put(m, dir, &format!("{tag}-{i}.txt"), content);
        i += 1;
    }
}

#[test]
fn a_restored_home_catches_up_or_its_fork_is_caught_at_equal_and_greater_length() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let s1 = Seeder::start(&t.join("s1"), free_udp_port());
    let s2 = Seeder::start(&t.join("s2"), free_udp_port());
    let (p1, p2) = (s1.peer(), s2.peer());
    let a = Member(t.join("a"));
    a.ok(&["space", "create", "office", "--open"]);
    let code = a.last(&["space", "seed-code", "office"]);
    s1.ctl(&["space", "add", &code, "--name", "office"]);
    s2.ctl(&["space", "add", &code, "--name", "office"]);
    let files = t.join("files");
    std::fs::create_dir_all(&files).unwrap();
    put(&a, &files, "first.txt", b"before the backup");
    a.ok(&["sync", "office", "--peer", &p1, "--peer", &p2, "--once"]);
    let backup: PathBuf = t.join("backup");
    copy_home(&a.0, &backup);
    put(&a, &files, "second.txt", b"after the backup");
    put(&a, &files, "third.txt", b"after the backup, too");
    a.ok(&["sync", "office", "--peer", &p1, "--peer", &p2, "--once"]);
    let held = own_length(&a.0);

    // Restored, then synced before writing: its own entries come back, writing goes on.
    let caught = Member(t.join("caught"));
    copy_home(&backup, &caught.0);
    let (code, said) = caught.sync_once("office", &p1, 60);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("restored from an older copy"),
        "the member is told why its own entries come back: {said}"
    );
    assert_eq!(own_length(&caught.0), held, "its own entries are back");
    let listed = caught.ok(&["ls", "office"]);
    assert!(listed.contains("second.txt") && listed.contains("third.txt"));
    put(&caught, &files, "fourth.txt", b"written after catching up");
    let (code, said) = caught.sync_once("office", &p1, 60);
    assert_eq!(
        code, 0,
        "writing on from the fetched length is no fork: {said}"
    );

    // Restored, then written to exactly the length a seeder holds: a fork of equal length.
    let s1_len = own_length(&caught.0);
    let equal = Member(t.join("equal"));
    copy_home(&backup, &equal.0);
    write_up_to(&equal, &files, s1_len, "equal");
    let (code, said) = equal.sync_once("office", &p1, 60);
    assert_eq!(code, 10, "sync exits 10 on a fork: {said}");
    assert!(
        said.contains("two histories") && said.contains("join the space again as a new device"),
        "the member is told what happened and what to do: {said}"
    );
    assert_eq!(s1.status()["forks"], 1, "the seeder keeps the evidence");

    // Restored, then written past what the other seeder holds: a longer fork.
    let longer = Member(t.join("longer"));
    copy_home(&backup, &longer.0);
    write_up_to(&longer, &files, held + 3, "longer");
    let (code, said) = longer.sync_once("office", &p2, 60);
    assert_eq!(code, 10, "{said}");
    assert_eq!(s2.status()["forks"], 1);
    // The first history is what the seeder keeps serving.
    let fresh = Member(t.join("fresh"));
    fresh.ok(&[
        "space",
        "join",
        &a.last(&["space", "invite", "office"]),
        "--name",
        "office",
    ]);
    let (code, said) = fresh.sync_once("office", &p2, 60);
    assert_eq!(code, 0, "{said}");
    let out = fresh.run(&["get", "office", "third.txt", "-"]);
    assert_eq!(out.stdout, b"after the backup, too");
}
