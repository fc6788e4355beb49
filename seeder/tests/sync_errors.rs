//! What a member's `sync --once` says and does when things go wrong, with real processes: a
//! dead address gives up within `--timeout` (connecting included) with exit 6; a seeder that
//! doesn't hold the space is named as such with exit 9, long before the timeout; a seeder
//! restarted in the middle of a transfer is dialed again and the sync completes; and the
//! acknowledgements `sync` printed are what `seeder status` shows right after.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{free_udp_port, Member, Seeder};

#[test]
fn a_dead_address_fails_within_the_timeout_with_exit_6() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Member(tmp.path().join("m"));
    m.ok(&["space", "create", "office"]);
    let dead = format!("127.0.0.1:{}", free_udp_port());
    let started = Instant::now();
    let out = m.run(&[
        "sync",
        "office",
        "--peer",
        &dead,
        "--once",
        "--timeout",
        "3",
    ]);
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{said}");
    assert!(said.contains(&dead), "the address is named: {said}");
    assert!(took < Duration::from_secs(15), "gave up after {took:?}");
}

#[test]
fn a_seeder_without_the_space_is_named_as_such_with_exit_9() {
    let tmp = tempfile::tempdir().unwrap();
    let seeder = Seeder::start(&tmp.path().join("seeder"), free_udp_port());
    let m = Member(tmp.path().join("m"));
    m.ok(&["space", "create", "office"]);
    let started = Instant::now();
    let out = m.run(&[
        "sync",
        "office",
        "--peer",
        &seeder.peer(),
        "--once",
        "--timeout",
        "120",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{said}");
    assert!(said.contains("does not hold \"office\""), "{said}");
    assert!(
        said.contains("seeder ctl space add"),
        "and what to do: {said}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not the whole timeout"
    );
}

#[test]
fn a_seeder_restarted_mid_transfer_is_dialed_again_and_status_shows_what_sync_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let port = free_udp_port();
    let data = t.join("seeder");
    let mut seeder = Seeder::start(&data, port);
    let peer = seeder.peer();
    let m = Member(t.join("m"));
    m.ok(&["space", "create", "office"]);
    let code = m.last(&["space", "seed-code", "office"]);
    seeder.ctl(&["space", "add", &code, "--name", "office"]);
    let big = t.join("big");
    common::random_file(&big, 96, 7);
    m.ok(&["put", "office", big.to_str().unwrap(), "big.bin"]);

    let sync = common::seeder()
        .arg("--home")
        .arg(&m.0)
        .args([
            "sync",
            "office",
            "--peer",
            &peer,
            "--once",
            "--timeout",
            "120",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Restart the seeder once part of the transfer is stored (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = seeder.entries();
        if held > 2 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing arrived at the seeder");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(seeder);
    seeder = Seeder::start(&data, port);
    let out = sync.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the sync redialed and finished: {said}"
    );
    assert!(said.contains("reconnecting"), "{said}");
    let entries = common::stored_entries(&printed);
    assert_eq!(
        seeder.entries(),
        entries,
        "the seeder holds what it acknowledged"
    );

    // Right after: status shows the same acknowledgement.
    let status = m.ok(&["status", "office"]);
    assert!(
        status.contains(&format!(
            "{entries} of {entries} entries acknowledged stored"
        )),
        "status shows what sync printed ({entries} entries): {status}"
    );
}
