//! `seeder serve` and `seeder ctl` as real processes: the control socket, held spaces that
//! survive a restart, partners, the setup code, clean shutdown on SIGTERM.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn seeder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seeder"))
}

/// Start the daemon and return once it says it is ready (read from its log, no polling).
fn start(data: &Path) -> Child {
    start_with(data, &[])
}

fn start_with(data: &Path, extra: &[&str]) -> Child {
    start_env(data, extra, &[])
}

fn start_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let mut serve = seeder();
    serve
        .args([
            "serve",
            "--no-mdns",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .args(extra)
        .envs(env.iter().copied());
    start_command(serve)
}

/// Run `command` (a `seeder serve`, perhaps wrapped) and return once it is ready.
fn start_command(mut command: Command) -> Child {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("seeder ready") => break,
            Some(Ok(_)) => continue,
            other => panic!("daemon ended before it was ready: {other:?}"),
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn ctl(data: &Path, args: &[&str]) -> Output {
    seeder()
        .args(["ctl", "--data"])
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = ctl(data, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "daemon exit on SIGTERM: {exit:?}");
}

fn seed_code(home: &Path) -> String {
    let out = seeder()
        .arg("--home")
        .arg(home)
        .args(["space", "create", "office"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = seeder()
        .arg("--home")
        .arg(home)
        .args(["space", "seed-code", "office"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

#[test]
fn held_spaces_partners_and_setup_code_through_the_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let code = seed_code(&dir.path().join("member"));
    let daemon = start(&data);

    ok(
        &data,
        &["space", "add", &code, "--name", "office", "--quota", "2G"],
    );
    let list = ok(&data, &["space", "list"]);
    assert!(list.starts_with("office\t"), "{list}");
    assert!(list.contains("quota 2.0 GiB"), "{list}");
    // A typo in the seed code is caught and named.
    let mut typo: Vec<char> = code.chars().collect();
    let i = typo.len() - 2;
    typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
    let out = ctl(
        &data,
        &["space", "add", &typo.into_iter().collect::<String>()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("typo"));
    // The same space twice is refused.
    let out = ctl(&data, &["space", "add", &code]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));

    let id = "cd".repeat(32);
    ok(&data, &["peer", "add", &format!("192.0.2.7:7428#{id}")]);
    assert_eq!(
        ok(&data, &["peer", "list"]),
        format!("192.0.2.7:7428#{id}\n")
    );
    let out = ctl(&data, &["peer", "add", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));

    let setup = ok(&data, &["setup-code"]);
    assert_eq!(
        ok(&data, &["setup-code"]),
        setup,
        "one code until it is used"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("setup-code"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    assert_eq!(status["spaces"][0]["name"], "office");
    assert_eq!(status["forks"], 0);

    stop(daemon);
    assert!(
        !data.join("control.sock").exists(),
        "socket removed on exit"
    );
    let out = ctl(&data, &["space", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no seeder is running"));

    // Everything survives a restart.
    let daemon = start(&data);
    assert!(ok(&data, &["space", "list"]).starts_with("office\t"));
    assert_eq!(
        ok(&data, &["peer", "list"]),
        format!("192.0.2.7:7428#{id}\n")
    );
    ok(&data, &["space", "remove", "office", "--purge"]);
    assert_eq!(ok(&data, &["space", "list"]), "");
    let out = ctl(&data, &["space", "remove", "office"]);
    assert_eq!(out.status.code(), Some(1));
    stop(daemon);
}

#[test]
fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    // Bounded waits: a missing message fails the test instead of hanging it.
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut child = seeder()
        .args([
            "serve",
            "--no-mdns",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = sock
            .recv(&mut buf)
            .expect("a notification within the bound");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(recv().contains("READY=1"));
    let pings = (0..3)
        .map(|_| recv())
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    assert_eq!(pings, 3, "watchdog pings keep coming");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut stopping = false;
    for _ in 0..10 {
        if recv().contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_setup_code_from_the_sd_card_is_taken_only_while_unclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let daemon = start(&data);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    assert_eq!(status["claimed"], false);
    let admin = status["admin"].as_str().unwrap().to_string();

    // As `image/flash` writes it, typed any way: taken and normalised.
    let taken = ok(
        &data,
        &["setup-code", "--set", " 0A1B 2C3D-4E5F-6A7B-8C9D "],
    );
    assert_eq!(taken, "0a1b-2c3d-4e5f-6a7b-8c9d\n");
    assert_eq!(ok(&data, &["setup-code"]), taken);
    // Not a code: refused with the shape named, the old one kept.
    let out = ctl(&data, &["setup-code", "--set", "12345"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hex digits"));
    assert_eq!(ok(&data, &["setup-code"]), taken);

    // The page takes the code without dashes and in capitals too.
    let (code, _, body) = common::http(
        &admin,
        "POST",
        "/api/v1/claim",
        &[],
        r#"{"setup_code":"0A1B2C3D4E5F6A7B8C9D","password":"an admin password"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    assert_eq!(status["claimed"], true);

    // Once claimed, a card can't change the code: nobody can re-claim by editing the card.
    let before = std::fs::read_to_string(data.join("setup-code")).unwrap();
    let out = ctl(&data, &["setup-code", "--set", "1111-2222-3333-4444-5555"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("claimed already"));
    assert_eq!(
        std::fs::read_to_string(data.join("setup-code")).unwrap(),
        before
    );
    // Nor is a code shown that claims nothing: the way back is a password reset.
    let out = ctl(&data, &["setup-code"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reset-password"));
    stop(daemon);
}

#[test]
fn the_admin_page_writes_roots_ssh_keys_only_where_it_manages_ssh() {
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIwnWsr/fUQ15eEir+ie9Z+yETlvZOCTfS3q9GOHyrSm admin@laptop";
    use common::claim;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("ssh").join("authorized_keys");
    std::fs::create_dir_all(keys_file.parent().unwrap()).unwrap();

    // The appliance: keys written for the root-side helper, one per line; none turns it off.
    let data = dir.path().join("data");
    let daemon = start_with(&data, &["--ssh-keys-file", keys_file.to_str().unwrap()]);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    let admin = status["admin"].as_str().unwrap().to_string();
    let (cookie, csrf) = claim(&admin, ok(&data, &["setup-code"]).trim());
    let auth = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let body = format!(r#"{{"keys":["{KEY}"]}}"#);
    let (status, _, reply) = common::http(&admin, "PUT", "/api/v1/ssh", &auth, &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        std::fs::read_to_string(&keys_file).unwrap(),
        format!("{KEY}\n")
    );
    let (status, _, reply) = common::http(&admin, "GET", "/api/v1/ssh", &auth, "");
    assert_eq!(status, 200);
    assert!(reply.contains(r#""available":true"#) && reply.contains("admin@laptop"));
    // A private key pasted by mistake changes nothing.
    let (status, _, _) = common::http(
        &admin,
        "PUT",
        "/api/v1/ssh",
        &auth,
        r#"{"keys":["-----BEGIN OPENSSH PRIVATE KEY-----"]}"#,
    );
    assert_eq!(status, 422);
    assert_eq!(
        std::fs::read_to_string(&keys_file).unwrap(),
        format!("{KEY}\n")
    );
    let (status, _, _) = common::http(&admin, "PUT", "/api/v1/ssh", &auth, r#"{"keys":[]}"#);
    assert_eq!(status, 200);
    assert_eq!(std::fs::read_to_string(&keys_file).unwrap(), "");
    stop(daemon);

    // Elsewhere SSH is the machine's administrator's business: the page says so, writes nothing.
    let data = dir.path().join("data2");
    let daemon = start(&data);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    let admin = status["admin"].as_str().unwrap().to_string();
    let (cookie, csrf) = claim(&admin, ok(&data, &["setup-code"]).trim());
    let auth = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let (status, _, reply) = common::http(&admin, "GET", "/api/v1/ssh", &auth, "");
    assert!(
        status == 200 && reply.contains(r#""available":false"#),
        "{reply}"
    );
    let (status, _, _) = common::http(&admin, "PUT", "/api/v1/ssh", &auth, &body);
    assert_eq!(status, 409);
    stop(daemon);
}

#[test]
fn switches_from_the_environment_read_as_systemd_units_write_them() {
    // The Lime2's drop-in says SEEDER_CLAIM_BUTTON=1: 1/0, true/false, yes/no, on/off all work.
    let dir = tempfile::tempdir().unwrap();
    for (value, expect) in [
        ("1", true),
        ("yes", true),
        ("true", true),
        ("0", false),
        ("off", false),
    ] {
        let data = dir.path().join(format!("data-{value}"));
        let daemon = start_env(&data, &[], &[("SEEDER_CLAIM_BUTTON", value)]);
        let status: serde_json::Value =
            serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
        assert_eq!(
            status["button_presses"].is_u64(),
            expect,
            "SEEDER_CLAIM_BUTTON={value}"
        );
        stop(daemon);
    }
}

#[test]
fn idle_control_connections_do_not_lock_out_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let child = start(&data);
    let socket = data.join(seeder::daemon::ctl::SOCKET_NAME);
    // More idle clients than the daemon serves at once, each sending nothing at all, and one
    // sending half a request line and stopping.
    let mut idle: Vec<std::os::unix::net::UnixStream> = (0..200)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    let mut half = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    std::io::Write::write_all(&mut half, b"{\"Status").unwrap();
    idle.push(half);
    // The person's command still answers (the command gives up after a minute, so a daemon
    // held by idle clients fails this).
    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    assert!(status["spaces"].is_array(), "{status}");
    drop(idle);
    // Clients that ask and ask and never read the answers: each is closed once an answer
    // can't be written, and a person still gets in.
    let mut deaf = Vec::new();
    for _ in 0..140 {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_nonblocking(true).unwrap();
        for _ in 0..10_000 {
            if std::io::Write::write_all(&mut s, b"{\"op\":\"status\"}\n").is_err() {
                break;
            }
        }
        deaf.push(s);
    }
    let asked = std::time::Instant::now();
    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    assert!(status["spaces"].is_array(), "{status}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(20),
        "answered only after {:?}",
        asked.elapsed()
    );
    drop(deaf);
    stop(child);
}

#[test]
fn a_seeder_keeps_its_files_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Started the way a shell with a permissive umask would start it.
    let mut wrapped = Command::new("sh");
    wrapped
        .arg("-c")
        .arg("umask 000 && exec \"$0\" serve --no-mdns --listen 127.0.0.1:0 --admin 127.0.0.1:0 --data \"$1\"")
        .arg(env!("CARGO_BIN_EXE_seeder"))
        .arg(&data);
    let child = start_command(wrapped);
    // A space and a claimed admin page: the password's hash is written too.
    let home = dir.path().join("home");
    let code = seed_code(&home);
    ok(&data, &["space", "add", &code]);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&data, &["status", "--json"])).unwrap();
    let admin = status["admin"].as_str().unwrap().to_string();
    common::claim(&admin, ok(&data, &["setup-code"]).trim());
    let mut seen = 0;
    let mut stack = vec![data.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        seen += 1;
        if meta.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    assert!(seen > 5, "only {seen} files");
    stop(child);
}
