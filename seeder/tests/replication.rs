//! Replication with real processes on loopback: a seeder that holds only a seed code, two
//! members who are never online together, and a seeder killed with SIGKILL mid-transfer.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{claim, free_udp_port, http, random_file, seeder, Member, Seeder};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files_under(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_seeder_with_only_the_seed_code_carries_a_space_between_members() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let seed = Seeder::start(&dir.path().join("seeder"), port);
    let a = Member(dir.path().join("a"));
    let b = Member(dir.path().join("b"));

    // 1. A creates the space, puts 64 MiB and a marker, the seeder is given the seed code.
    a.ok(&["space", "create", "office", "--open"]);
    let big = dir.path().join("big.bin");
    random_file(&big, 64, 1);
    let marker = "MARKER-3f9a1c-never-in-the-clear";
    let note = dir.path().join("note.txt");
    std::fs::write(&note, marker).unwrap();
    a.ok(&["put", "office", big.to_str().unwrap()]);
    a.ok(&["put", "office", note.to_str().unwrap()]);
    let code = a.last(&["space", "seed-code", "office"]);
    seed.ctl(&["space", "add", &code, "--name", "office"]);
    let peer = seed.peer();
    let out = a.ok(&["sync", "office", "--peer", &peer, "--once"]);
    let line = out.lines().last().unwrap();
    assert!(line.starts_with("stored on "), "{out}");
    assert!(line.contains(": 1 feed, "), "{out}");

    // 2. B joins and syncs with the seeder only (A is gone).
    let invite = a.last(&["space", "invite", "office"]);
    b.ok(&["space", "join", &invite, "--name", "office"]);
    let out = b.run(&["sync", "office", "--peer", &peer, "--once"]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    // Per-feed progress, one line per finished feed when not on a terminal.
    assert!(progress.contains("received feed "), "{progress}");
    let got = dir.path().join("got.bin");
    b.ok(&["get", "office", "big.bin", got.to_str().unwrap()]);
    assert_eq!(
        blake3::hash(&std::fs::read(&got).unwrap()),
        blake3::hash(&std::fs::read(&big).unwrap())
    );
    assert_eq!(b.ok(&["get", "office", "note.txt", "-"]), marker);

    // 3. Nothing readable on the seeder: not the marker, the secret or the content key.
    let secret = {
        match invite.parse().unwrap() {
            seeder::space::InviteCode::Space(secret) => secret,
            other => panic!("a space from before roles has a secret invite, not {other:?}"),
        }
    };
    let needles: Vec<Vec<u8>> = vec![
        marker.as_bytes().to_vec(),
        secret.as_bytes().to_vec(),
        hex::encode(secret.as_bytes()).into_bytes(),
        secret.content_key().to_vec(),
        hex::encode(*secret.content_key()).into_bytes(),
        invite.as_bytes().to_vec(),
    ];
    let mut files = Vec::new();
    files_under(&seed.data, &mut files);
    assert!(files.len() > 3);
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for n in &needles {
            assert!(!contains(&bytes, n), "{} holds a secret", f.display());
        }
    }

    // B's own feed reached the seeder too, and A gets it without B online.
    let b_status = b.ok(&["status", "office"]);
    assert!(b_status.contains("stored"), "{b_status}");
    drop(seed);
}

#[test]
fn a_seeder_killed_mid_transfer_resumes_and_ends_complete() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let data = dir.path().join("seeder");
    let mut seed = Seeder::start(&data, port);
    let a = Member(dir.path().join("a"));
    a.ok(&["space", "create", "office", "--open"]);
    let big = dir.path().join("big.bin");
    random_file(&big, 64, 2);
    a.ok(&["put", "office", big.to_str().unwrap()]);
    let code = a.last(&["space", "seed-code", "office"]);
    seed.ctl(&["space", "add", &code]);
    let peer = seed.peer();

    // Sync in the background; kill the seeder once part of the data is stored.
    let mut sync = seeder()
        .arg("--home")
        .arg(&a.0)
        .args([
            "sync",
            "office",
            "--peer",
            &peer,
            "--once",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stored = 0;
    for _ in 0..600 {
        stored = seed.entries();
        if stored > 50 {
            break;
        }
        // Polling a condition with a bound, not waiting for time to pass.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(stored > 0, "some data arrived before the kill");
    seed.child.kill().unwrap(); // SIGKILL
    seed.child.wait().unwrap();
    let _ = sync.kill();
    let _ = sync.wait();

    let seed = Seeder::start(&data, port);
    let after_restart = seed.entries();
    assert!(after_restart >= 1, "acknowledged data survived the kill");
    a.ok(&["sync", "office", "--peer", &peer, "--once"]);
    assert!(
        seed.entries() > 1024,
        "everything arrived: {}",
        seed.entries()
    );

    let b = Member(dir.path().join("b"));
    let invite = a.last(&["space", "invite", "office"]);
    b.ok(&["space", "join", &invite, "--name", "office"]);
    let out = b.run(&["sync", "office", "--peer", &peer, "--once"]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    // Per-feed progress, one line per finished feed when not on a terminal.
    assert!(progress.contains("received feed "), "{progress}");
    let got = dir.path().join("got.bin");
    b.ok(&["get", "office", "big.bin", got.to_str().unwrap()]);
    assert_eq!(
        blake3::hash(&std::fs::read(&got).unwrap()),
        blake3::hash(&std::fs::read(&big).unwrap())
    );
}

/// `seeder sync --watch` in the background; returns once it is connected.
fn watch(member: &Member, peer: &str) -> Child {
    let mut child = seeder()
        .arg("--home")
        .arg(&member.0)
        .args(["sync", "office", "--watch", "--peer", peer])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("connected to ") => break,
            Some(Ok(_)) => {}
            other => panic!("sync --watch ended before it connected: {other:?}"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Poll `seeder ls` (through the watching process) until `path` shows up: a bounded loop.
fn wait_for_file(member: &Member, path: &str) -> std::time::Duration {
    let start = std::time::Instant::now();
    for _ in 0..400 {
        let listing = member.ok(&["ls", "office"]);
        if listing.lines().any(|l| l == path) {
            return start.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{path} did not arrive within the bound");
}

fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "sync --watch exit on SIGTERM: {status:?}");
}

#[test]
fn members_watching_through_a_seeder_see_each_others_writes_live() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let seed = Seeder::start(&dir.path().join("seeder"), port);
    let a = Member(dir.path().join("a"));
    let b = Member(dir.path().join("b"));
    a.ok(&["space", "create", "office", "--open"]);
    let invite = a.last(&["space", "invite", "office"]);
    b.ok(&["space", "join", &invite, "--name", "office"]);
    let code = a.last(&["space", "seed-code", "office"]);
    seed.ctl(&["space", "add", &code]);
    let peer = seed.peer();

    let wa = watch(&a, &peer);
    let wb = watch(&b, &peer);

    // A writes while its home is held by the watcher: the command runs inside it.
    let from_a = dir.path().join("from-a.txt");
    std::fs::write(&from_a, "written on A while syncing").unwrap();
    a.ok(&["put", "office", "from-a.txt"]);
    let took = wait_for_file(&b, "from-a.txt");
    eprintln!("A → seeder → B in {took:?}");
    assert_eq!(
        b.ok(&["get", "office", "from-a.txt", "-"]),
        "written on A while syncing"
    );

    // And the other way.
    let from_b = dir.path().join("from-b.txt");
    std::fs::write(&from_b, "written on B while syncing").unwrap();
    b.ok(&["put", "office", from_b.to_str().unwrap()]);
    let took = wait_for_file(&a, "from-b.txt");
    eprintln!("B → seeder → A in {took:?}");
    assert_eq!(
        a.ok(&["get", "office", "from-b.txt", "-"]),
        "written on B while syncing"
    );

    // Errors and exit codes come through the watcher as from a direct call.
    let missing = a.run(&["get", "office", "nope.txt", "-"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.txt"));

    let t = std::time::Instant::now();
    terminate(wa);
    terminate(wb);
    eprintln!("watchers stopped in {:?}", t.elapsed());
    // With the watchers gone the homes open directly again.
    assert!(a.ok(&["ls", "office"]).contains("from-b.txt"));
}

#[test]
fn a_member_finds_the_seeder_on_the_lan_and_the_seeder_reads_its_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let mdns_port = free_udp_port().to_string();
    let data = dir.path().join("seeder");
    let config = dir.path().join("seeder.toml");
    std::fs::write(
        &config,
        format!(
            "# the appliance's file looks like this\n\
             data = \"{}\"\n\
             listen = \"127.0.0.1:{port}\"\n\
             admin = \"127.0.0.1:0\"\n\
             keep_free_percent = 5\n\
             mdns = true\n",
            data.display()
        ),
    )
    .unwrap();
    let seed = Seeder::start_with(
        &[
            "--config",
            config.to_str().unwrap(),
            "--mdns-loopback",
            "--mdns-port",
            &mdns_port,
        ],
        &data,
        port,
    );
    let a = Member(dir.path().join("a"));
    a.ok(&["space", "create", "office", "--open"]);
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "found on the LAN").unwrap();
    a.ok(&["put", "office", note.to_str().unwrap()]);
    let code = a.last(&["space", "seed-code", "office"]);
    seed.ctl(&["space", "add", &code]);

    // No --peer: the seeder is found over mDNS (on loopback, on a port of the test's own).
    let out = a.run(&[
        "sync",
        "office",
        "--once",
        "--mdns-loopback",
        "--mdns-port",
        &mdns_port,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let node = seed.status()["node_id"].as_str().unwrap().to_string();
    assert!(stderr.contains(&format!("found seeder {node}")), "{stderr}");
    assert!(stderr.contains("entries stored on "), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("stored on {node}: 1 feed,")),
        "{stdout}"
    );
    drop(seed);

    // A mistyped key in the settings file is refused with the file's name, not ignored.
    std::fs::write(&config, "listne = \"127.0.0.1:1\"\n").unwrap();
    let out = common::seeder()
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("seeder.toml") && stderr.contains("listne"),
        "{stderr}"
    );
}

/// Poll `seeder`'s status until `done` holds; how long it took. Bounded by `limit`.
fn wait_status(
    seeder: &Seeder,
    limit: std::time::Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    loop {
        let status = seeder.status();
        if done(&status) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {status}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn space_entries(status: &serde_json::Value, name: &str) -> u64 {
    status["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name)
        .map(|s| s["entries"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_space_added_on_a_seeder_opens_at_once_with_its_connected_partner() {
    let dir = tempfile::tempdir().unwrap();
    // B backs up two spaces of a member; A is given B as its partner and stays connected.
    let b = Seeder::start(&dir.path().join("b"), free_udp_port());
    let member = Member(dir.path().join("m"));
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "kept on two seeders").unwrap();
    let mut codes = Vec::new();
    for name in ["by-socket", "by-page"] {
        member.ok(&["space", "create", name, "--open"]);
        member.ok(&["put", name, note.to_str().unwrap()]);
        let code = member.last(&["space", "seed-code", name]);
        b.ctl(&["space", "add", &code, "--name", name]);
        member.ok(&["sync", name, "--peer", &b.peer(), "--once"]);
        codes.push(code);
    }
    let held = space_entries(&b.status(), "by-socket");
    assert!(held > 0);
    let a = Seeder::start(&dir.path().join("a"), free_udp_port());
    a.ctl(&["peer", "add", &b.peer()]);
    let b_id = b.status()["node_id"].as_str().unwrap().to_string();
    let connected = |s: &serde_json::Value| {
        s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node_id"] == b_id.as_str())
    };
    // A new partner is dialed when it is added, not at the next round of dials.
    let dialed = wait_status(&a, std::time::Duration::from_secs(10), connected);
    println!("partner_dialed_after_add_s {:.2}", dialed.as_secs_f64());
    let since = a.status()["peers"][0]["since"].clone();

    // Through the control socket.
    a.ctl(&["space", "add", &codes[0], "--name", "by-socket"]);
    let took = wait_status(&a, std::time::Duration::from_secs(2), |s| {
        space_entries(s, "by-socket") == held
    });
    println!(
        "partner_space_replicating_after_ctl_add_s {:.2}",
        took.as_secs_f64()
    );

    // Through the admin page.
    let status = a.status();
    let admin = status["admin"].as_str().unwrap().to_string();
    let (cookie, csrf) = claim(&admin, a.ctl(&["setup-code"]).trim());
    let (code, _, body) = http(
        &admin,
        "POST",
        "/api/v1/spaces",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        &format!(r#"{{"seed_code":"{}","name":"by-page"}}"#, codes[1]),
    );
    assert!(code == 200 || code == 201, "{code}: {body}");
    let took = wait_status(&a, std::time::Duration::from_secs(2), |s| {
        space_entries(s, "by-page") == held
    });
    println!(
        "partner_space_replicating_after_page_add_s {:.2}",
        took.as_secs_f64()
    );

    // Both over the connection that was there before: no redial.
    let peers = a.status()["peers"].clone();
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    assert_eq!(peers[0]["since"], since, "{peers}");
    assert_eq!(peers[0]["spaces"].as_array().unwrap().len(), 2, "{peers}");
}
