//! What a new admin and a new member meet first, as real processes: `seeder ctl` finds the
//! daemon the way it was started and the hints it logs are commands that work; partners are
//! removed by command; lists that are empty say so; mistyped peers are bad input with a
//! message that says what is wrong; `status` says in one line whether your data is backed up;
//! a stopped `sync --watch` is gone from the seeder at once; a stop is prompt.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_udp_port, random_file, seeder, Member, Seeder};

/// `seeder serve ARGS…` with its log lines sent to the returned channel.
fn serve_logging(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = seeder()
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The first log line containing `what`, within 30 s.
fn wait_for_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("no log line with {what:?}: {e}"),
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn ctl_finds_the_daemon_through_its_settings_file_and_the_logged_hint_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = dir.path().join("seeder.toml");
    let port = free_udp_port();
    std::fs::write(
        &settings,
        format!(
            "data = {:?}\nlisten = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:0\"\nmdns = false\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let (child, lines) = serve_logging(&["--config", settings.to_str().unwrap()]);
    let page = wait_for_line(&lines, "admin page on http://127.0.0.1:");
    assert!(page.contains("http://127.0.0.1:"), "{page}");
    let hint = wait_for_line(&lines, "setup-code` shows the code");
    // The command as logged, run as it says (without sudo: the test is the daemon's user).
    let command = hint.split('`').nth(1).unwrap().to_string();
    let words: Vec<&str> = command
        .split_whitespace()
        .skip_while(|w| *w == "sudo")
        .collect();
    assert!(words[0].ends_with("seeder"), "{command}");
    assert_eq!(
        &words[1..],
        ["ctl", "--config", settings.to_str().unwrap(), "setup-code"]
    );
    let out = seeder().args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{command}: {out:?}");
    let code = String::from_utf8(out.stdout).unwrap();
    assert!(!code.trim().is_empty());

    // The settings file named in the environment, from any folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = seeder()
        .args(["ctl", "status"])
        .env("SEEDER_CONFIG", &settings)
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(data.to_str().unwrap()));

    // Without it, the default folder: the message says where it looked and what to give.
    let out = seeder()
        .args(["ctl", "status"])
        .env_remove("SEEDER_CONFIG")
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !Path::new("/etc/seeder/seeder.toml").exists() {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("./seeder-data (the default)"), "{err}");
        assert!(
            err.contains("--data DIR") && err.contains("--config FILE"),
            "{err}"
        );
    }
    stop(child);
}

#[test]
fn a_partner_is_removed_by_the_start_of_its_node_id_and_empty_lists_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let seed = Seeder::start(&dir.path().join("seeder"), free_udp_port());
    // Empty lists say so to the person (on stderr: a script reads an empty list).
    let ctl = |args: &[&str]| {
        let out = seeder()
            .args(["ctl", "--data"])
            .arg(&seed.data)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (listed, said) = ctl(&["peer", "list"]);
    assert!(
        listed.is_empty() && said.contains("no partner seeders"),
        "{said}"
    );
    let (listed, said) = ctl(&["space", "list"]);
    assert!(
        listed.is_empty() && said.contains("no spaces held yet"),
        "{said}"
    );
    // A partner that never answers (a socket nobody reads).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let node = "ab".repeat(32);
    let partner = format!("{}#{node}", silent.local_addr().unwrap());
    seed.ctl(&["peer", "add", &partner]);
    assert!(seed.ctl(&["peer", "list"]).contains(&node));

    let out = seeder()
        .args(["ctl", "--data"])
        .arg(&seed.data)
        .args(["peer", "remove", "abab"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "too short a prefix is bad input"
    );
    let out = seeder()
        .args(["ctl", "--data"])
        .arg(&seed.data)
        .args(["peer", "remove", "cdcdcdcd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "no such partner");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no partner seeder cdcdcdcd"));

    let removed = seed.ctl(&["peer", "remove", "abababab"]);
    assert!(removed.contains(&node), "{removed}");
    let (listed, said) = ctl(&["peer", "list"]);
    assert!(
        listed.is_empty() && said.contains("no partner seeders"),
        "{said}"
    );
}

#[test]
fn a_mistyped_peer_is_bad_input_and_a_wrong_node_id_names_the_node_that_answered() {
    let dir = tempfile::tempdir().unwrap();
    let seed = Seeder::start(&dir.path().join("seeder"), free_udp_port());
    let member = Member(dir.path().join("member"));
    member.ok(&["space", "create", "office"]);

    let out = member.run(&["sync", "office", "--peer", "notanaddress", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"notanaddress\" is not a peer"), "{err}");
    assert_eq!(err.matches("is not a peer").count(), 1, "said once: {err}");
    for bad in [
        "ünïcødé:7428",
        "256.1.1.1:7428",
        "host:",
        ":7428",
        "h:0",
        "h:99999",
    ] {
        let out = member.run(&["sync", "office", "--peer", bad, "--once"]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
    let huge = "x".repeat(100_000);
    let out = member.run(&["sync", "office", "--peer", &huge, "--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.len() < 1000, "a huge value is not echoed whole");

    // Interrupted while a dial waits for an answer: it ends at once.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sync = seeder()
        .arg("--home")
        .arg(&member.0)
        .args(["sync", "office", "--once", "--peer"])
        .arg(silent.local_addr().unwrap().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    silent.recv_from(&mut [0u8; 2048]).unwrap();
    let asked = Instant::now();
    Command::new("kill")
        .args(["-INT", &sync.id().to_string()])
        .status()
        .unwrap();
    sync.wait().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );

    // The right address with another node's id: said at once, not retried until the timeout.
    let real = seed.status()["node_id"].as_str().unwrap().to_string();
    let wrong = "cd".repeat(32);
    let started = Instant::now();
    let out = member.run(&[
        "sync",
        "office",
        "--peer",
        &format!("127.0.0.1:{}#{wrong}", seed.port),
        "--once",
        "--timeout",
        "60",
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the peer at 127.0.0.1:{} is not {wrong} (it is {real}): check the peer code",
            seed.port
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!("wrong_node_reported_s {:.1} s", took.as_secs_f64());
}

#[test]
fn a_port_in_use_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = seeder()
        .args(["serve", "--no-mdns", "--admin", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("Address already in use").count(),
        1,
        "the OS error once: {err}"
    );
}

#[test]
fn status_says_in_one_line_whether_your_data_is_backed_up_and_a_stopped_watch_leaves_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let seed = Seeder::start(&dir.path().join("seeder"), free_udp_port());
    let member = Member(dir.path().join("member"));
    member.ok(&["space", "create", "office"]);
    let status = member.ok(&["status", "office"]);
    assert!(status.contains("not yet backed up"), "{status}");

    let file = dir.path().join("report.bin");
    random_file(&file, 2, 1);
    member.ok(&["put", "office", file.to_str().unwrap(), "report.bin"]);
    let status = member.ok(&["status", "office"]);
    assert!(
        status.lines().next().unwrap().contains("not yet backed up"),
        "{status}"
    );
    assert!(status.contains(" MiB of your data"), "{status}");

    let code = member.last(&["space", "seed-code", "office"]);
    seed.ctl(&["space", "add", &code, "--name", "office"]);
    let synced = member.ok(&["sync", "office", "--peer", &seed.peer(), "--once"]);
    assert!(synced.contains("stored on"), "{synced}");
    assert!(!synced.contains("1 feeds"), "{synced}");
    let status = member.ok(&["status", "office"]);
    let verdict = status.lines().next().unwrap();
    assert!(verdict.starts_with("all your data ("), "{status}");
    assert!(verdict.ends_with("is on 1 seeder"), "{status}");
    assert!(status.contains("(this device's)"), "{status}");
    assert!(status.contains("acknowledged"), "{status}");

    // Live with --watch, then Ctrl-C: the seeder shows the member gone at once, not after
    // the idle timeout.
    let mut watch = seeder()
        .arg("--home")
        .arg(&member.0)
        .args(["sync", "office", "--watch", "--peer", &seed.peer()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let connected = |s: &serde_json::Value| !s["peers"].as_array().unwrap().is_empty();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !connected(&seed.status()) {
        assert!(Instant::now() < deadline, "the member never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    let ended = watch.wait().unwrap();
    assert!(ended.success(), "{ended:?}");
    let interrupted = Instant::now();
    // The idle timeout would take over 30 s; a goodbye, a round trip.
    while connected(&seed.status()) {
        assert!(
            interrupted.elapsed() < Duration::from_secs(10),
            "the seeder still shows the member connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "watch_gone_after_ms {} ms",
        interrupted.elapsed().as_millis()
    );
    // What was acknowledged stays acknowledged.
    let status = member.ok(&["status", "office"]);
    assert!(status.starts_with("all your data ("), "{status}");

    // Until the seeder drops the space (and its data): the next sync learns it, and status
    // no longer counts that seeder.
    seed.ctl(&["space", "remove", "office", "--purge"]);
    let out = member.run(&["sync", "office", "--peer", &seed.peer(), "--once"]);
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    let status = member.ok(&["status", "office"]);
    assert!(
        status.lines().next().unwrap().contains("not yet backed up"),
        "{status}"
    );
}

#[test]
fn a_seeder_stops_promptly_while_a_partner_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("seeder");
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let (child, lines) = serve_logging(&[
        "--no-mdns",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--admin",
        "127.0.0.1:0",
    ]);
    wait_for_line(&lines, "seeder ready");
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = seeder()
        .args(["ctl", "--data"])
        .arg(&data)
        .args([
            "peer",
            "add",
            &format!("{}#{}", silent.local_addr().unwrap(), "ab".repeat(32)),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The dial is under way once the partner's first packet arrives.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 2048];
    silent.recv_from(&mut buf).unwrap();
    let asked = Instant::now();
    let mut child = child;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let ended = child.wait().unwrap();
    let took = asked.elapsed();
    assert!(ended.success(), "{ended:?}");
    // It waited 5 s and more for the dial; it has no reason to wait past a second or two.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    eprintln!("stop_with_partner_dialing_ms {} ms", took.as_millis());
}

#[test]
fn listing_spaces_without_a_home_says_where_it_would_be_and_makes_none() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("nowhere-yet");
    let member = Member(home.clone());
    let out = member.run(&["space", "list"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no spaces yet"), "{said}");
    assert!(said.contains(home.to_str().unwrap()), "{said}");
    assert!(!home.exists(), "listing made a home");
    for read in [
        &["status", "office"][..],
        &["ls", "office"],
        &["log", "office"],
    ] {
        let out = member.run(read);
        assert_eq!(out.status.code(), Some(1), "{read:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no spaces yet"));
    }
    assert!(!home.exists(), "a read made a home");
    member.ok(&["space", "create", "office"]);
    assert!(member.ok(&["space", "list"]).starts_with("office\t"));
}

#[test]
fn a_data_folder_the_daemon_cannot_use_is_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f1.txt");
    std::fs::write(&file, b"not a folder").unwrap();
    let long = dir.path().join("d".repeat(120));
    for (data, said) in [
        (&file, "is a file, not a folder"),
        (&long, "path is too long"),
    ] {
        let out = seeder()
            .args([
                "serve",
                "--no-mdns",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(said),
            "{out:?}"
        );
    }
    assert!(!long.exists());
}

/// Skips only when asked to (by the test below, in a child process).
#[test]
fn a_probe_that_skips_when_asked() {
    if std::env::var_os("SEEDER_SKIP_PROBE").is_some() {
        common::skip("a tool this machine lacks");
    }
}

#[test]
fn a_skipped_test_says_so_on_the_terminal_even_when_it_passes() {
    // libtest hides what a passing test prints; the skip must show anyway.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_probe_that_skips_when_asked",
            "--test-threads",
            "1",
        ])
        .env("SEEDER_SKIP_PROBE", "1")
        .env_remove("CI")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("SKIPPED") && said.contains("needs a tool this machine lacks"),
        "{said}"
    );
    // Under CI the same skip fails the test.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_probe_that_skips_when_asked"])
        .env("SEEDER_SKIP_PROBE", "1")
        .env("CI", "true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}
