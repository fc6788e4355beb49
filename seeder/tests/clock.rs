//! A Lime2 has no RTC battery: until timesyncd has the time, its clock says 1970. The seeder
//! must store and serve through that (nothing it verifies depends on the wall clock), and keep
//! everything once the clock jumps forward. The daemon runs under libfaketime (LD_PRELOAD,
//! wall clock only; the monotonic clock stays real, as on the board), the members on the real
//! clock.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use common::{free_udp_port, random_file, Member, Seeder};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn start_in_1970(data: &std::path::Path, port: u16) -> Seeder {
    let listen = format!("127.0.0.1:{port}");
    Seeder::start_with_env(
        &[
            "--no-mdns",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--admin",
            "127.0.0.1:0",
        ],
        data,
        port,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "@1970-01-01 00:00:42"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_DONT_RESET", "1"),
        ],
    )
}

#[test]
fn a_seeder_whose_clock_says_1970_stores_and_serves_until_the_time_is_synced() {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        common::skip(&format!("{LIBFAKETIME} (apt-get install faketime)"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let data = dir.path().join("seeder");
    let mut seed = start_in_1970(&data, port);
    let uptime: serde_json::Value = serde_json::from_str(&seed.ctl(&["status", "--json"])).unwrap();
    assert!(uptime["version"].is_string());

    let a = Member(dir.path().join("a"));
    let b = Member(dir.path().join("b"));
    a.ok(&["space", "create", "office", "--open"]);
    let big = dir.path().join("big.bin");
    random_file(&big, 4, 7);
    a.ok(&["put", "office", big.to_str().unwrap()]);
    let code = a.last(&["space", "seed-code", "office"]);
    seed.ctl(&["space", "add", &code, "--name", "office"]);
    let peer = seed.peer();
    let out = a.ok(&["sync", "office", "--peer", &peer, "--once"]);
    assert!(
        out.lines().last().unwrap().starts_with("stored on "),
        "{out}"
    );

    // A second member gets it from the seeder alone, the seeder still in 1970.
    let invite = a.last(&["space", "invite", "office"]);
    b.ok(&["space", "join", &invite, "--name", "office"]);
    b.ok(&["sync", "office", "--peer", &peer, "--once"]);
    let got = dir.path().join("got.bin");
    b.ok(&["get", "office", "big.bin", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&big).unwrap());

    // The time is synced: the clock jumps 56 years. Everything is still held and served.
    seed.child.kill().unwrap();
    seed.child.wait().unwrap();
    let seed = Seeder::start(&data, port);
    assert!(seed.ctl(&["space", "list"]).starts_with("office\t"));
    let c = Member(dir.path().join("c"));
    c.ok(&["space", "join", &invite, "--name", "office"]);
    c.ok(&["sync", "office", "--peer", &peer, "--once"]);
    let got = dir.path().join("got-c.bin");
    c.ok(&["get", "office", "big.bin", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&big).unwrap());
}
