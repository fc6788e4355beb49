//! A seeder that holds only part of an upload serves that part at once: a member's 20 MiB
//! reaches a seeder whose quota for the space is 8 MiB, so the seeder holds a verified prefix
//! of the member's feed (checked against the member's signed head, the rest still to come). A
//! second member gets exactly that prefix from the seeder, and every file wholly inside it
//! reads back identical. Once the quota is lifted the rest follows to both.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{free_udp_port, Member, Seeder};

/// Entries of `feed` (hex) in the home at `dir`.
fn feed_length(dir: &Path, feed: &seeder::feed::FeedKey) -> u64 {
    let home = seeder::fs::home::Home::open(dir).unwrap();
    home.store().feed(feed).unwrap().map_or(0, |s| s.length)
}

#[test]
fn a_verified_prefix_of_an_unfinished_upload_is_served_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let seeder = Seeder::start(&t.join("seeder"), free_udp_port());
    let peer = seeder.peer();
    let a = Member(t.join("a"));
    a.ok(&["space", "create", "office", "--open"]);
    let seed_code = a.last(&["space", "seed-code", "office"]);
    seeder.ctl(&[
        "space", "add", &seed_code, "--name", "office", "--quota", "8M",
    ]);
    let mut files = Vec::new();
    for i in 0..10 {
        let local = t.join(format!("local-{i}"));
        common::random_file(&local, 2, 40 + i as u8);
        let path = format!("f{i}.bin");
        a.ok(&["put", "office", local.to_str().unwrap(), &path]);
        files.push((path, std::fs::read(&local).unwrap()));
    }
    let (code, said) = a.sync_once("office", &peer, 60);
    assert_eq!(code, 8, "the quota stops the upload part-way: {said}");
    let a_feed = {
        let home = seeder::fs::home::Home::open(&a.0).unwrap();
        home.space("office").unwrap().own_feed()
    };
    let store_len = |dir: &Path| {
        let store =
            seeder::store::Store::open(dir, &seeder::store::StoreConfig::default()).unwrap();
        let state = store.feed(&a_feed).unwrap().unwrap();
        (state.length, state.head.map_or(0, |h| h.length))
    };
    // Read the seeder's store while it runs: sled allows one process, so stop it first.
    drop(seeder);
    let (held, complete) = store_len(&t.join("seeder"));
    assert!(
        held > complete && held < feed_length(&a.0, &a_feed),
        "the seeder holds a prefix beyond any complete head: {held} entries, complete {complete}"
    );
    let seeder = Seeder::start(&t.join("seeder"), free_udp_port());
    let peer = seeder.peer();

    // A second member gets that prefix, at once, and the files inside it.
    let b = Member(t.join("b"));
    b.ok(&[
        "space",
        "join",
        &a.last(&["space", "invite", "office"]),
        "--name",
        "office",
    ]);
    let (code, said) = b.sync_once("office", &peer, 60);
    assert!(code == 0 || code == 8, "{said}");
    assert_eq!(
        feed_length(&b.0, &a_feed),
        held,
        "the whole verified prefix"
    );
    let listed = b.ok(&["ls", "office"]);
    let whole: Vec<_> = files
        .iter()
        .filter(|(p, _)| listed.contains(p.as_str()))
        .collect();
    assert!(
        whole.len() >= 2,
        "files inside the prefix are there: {listed}"
    );
    for (path, content) in &whole {
        assert!(
            b.run(&["get", "office", path, "-"]).stdout == *content,
            "{path}"
        );
    }

    // The quota lifted, the rest follows, to the seeder and on to the second member.
    seeder.ctl(&["space", "remove", "office"]);
    seeder.ctl(&["space", "add", &seed_code, "--name", "office"]);
    let (code, said) = a.sync_once("office", &peer, 60);
    assert_eq!(code, 0, "{said}");
    let (code, said) = b.sync_once("office", &peer, 60);
    assert_eq!(code, 0, "{said}");
    for (path, content) in &files {
        assert!(
            b.run(&["get", "office", path, "-"]).stdout == *content,
            "{path}"
        );
    }
}
