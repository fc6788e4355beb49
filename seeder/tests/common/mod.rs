//! Helpers shared by the tests that run `seeder` processes: a seeder daemon, a member home.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn seeder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seeder"))
}

pub struct Seeder {
    pub child: Child,
    pub data: PathBuf,
    pub port: u16,
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Seeder {
    pub fn start(data: &Path, port: u16) -> Seeder {
        let listen = format!("127.0.0.1:{port}");
        let data_arg = data.to_str().unwrap();
        Seeder::start_with(
            &[
                "--no-mdns",
                "--data",
                data_arg,
                "--listen",
                &listen,
                "--admin",
                "127.0.0.1:0",
            ],
            data,
            port,
        )
    }

    /// `seeder serve ARGS…`, which must use `data` and listen on `port`.
    pub fn start_with(args: &[&str], data: &Path, port: u16) -> Seeder {
        Seeder::start_with_env(args, data, port, &[])
    }

    /// As [`Seeder::start_with`], with extra environment variables for the daemon.
    pub fn start_with_env(args: &[&str], data: &Path, port: u16, env: &[(&str, &str)]) -> Seeder {
        let mut cmd = seeder();
        cmd.arg("serve").args(args).envs(env.iter().copied());
        Seeder::spawn(cmd, data, port)
    }

    /// Start `cmd` (a `seeder serve` that uses `data` and listens on `port`, perhaps wrapped
    /// in another program) and return once it says it is ready.
    pub fn spawn(mut cmd: Command, data: &Path, port: u16) -> Seeder {
        // SEEDER_TEST_LOG=LEVEL shows the seeder's log on the test's stderr.
        let echo = std::env::var("SEEDER_TEST_LOG").ok();
        let name = data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut child = cmd
            .env("RUST_LOG", echo.as_deref().unwrap_or("info"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("seeder ready") => break,
                Some(Ok(l)) if echo.is_some() => eprintln!("[{name}] {l}"),
                Some(Ok(_)) => {}
                other => panic!("seeder ended before it was ready: {other:?}"),
            }
        }
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if echo.is_some() {
                    eprintln!("[{name}] {l}");
                }
            }
        });
        Seeder {
            child,
            data: data.to_path_buf(),
            port,
        }
    }

    pub fn ctl(&self, args: &[&str]) -> String {
        let out = seeder()
            .args(["ctl", "--data"])
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn peer(&self) -> String {
        let status: serde_json::Value =
            serde_json::from_str(&self.ctl(&["status", "--json"])).unwrap();
        format!(
            "127.0.0.1:{}#{}",
            self.port,
            status["node_id"].as_str().unwrap()
        )
    }

    pub fn entries(&self) -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&self.ctl(&["status", "--json"])).unwrap();
        status["spaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["entries"].as_u64().unwrap())
            .sum()
    }
}

pub struct Member(pub PathBuf);

impl Member {
    pub fn run(&self, args: &[&str]) -> Output {
        seeder()
            .arg("--home")
            .arg(&self.0)
            .args(args)
            // Relative paths in commands are taken from the folder holding the homes.
            .current_dir(self.0.parent().unwrap())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn last(&self, args: &[&str]) -> String {
        self.ok(args).lines().last().unwrap().to_string()
    }
}

pub fn random_file(path: &Path, mib: usize, seed: u8) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mib {
        let mut h = blake3::Hasher::new();
        h.update(&[seed, i as u8, (i >> 8) as u8]);
        h.finalize_xof().fill(&mut block);
        f.write_all(&block).unwrap();
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Seeder {
    /// `seeder ctl status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ctl(&["status", "--json"])).unwrap()
    }

    /// The daemon's peak resident memory so far, from the kernel.
    pub fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib / 1024
    }
}

/// One HTTP/1.1 request over a fresh connection; returns (status, head, body).
#[allow(dead_code)]
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The session cookie (`name=value`) a response sets.
pub fn session_cookie(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string()
}

/// Claim the admin page at `admin` with `code` through the API; returns (cookie, csrf).
pub fn claim(admin: &str, code: &str) -> (String, String) {
    let (status, head, body) = http(
        admin,
        "POST",
        "/api/v1/claim",
        &[],
        &format!(r#"{{"setup_code":"{code}","password":"an admin password"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let csrf = serde_json::from_str::<serde_json::Value>(&body).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    (session_cookie(&head), csrf)
}

impl Member {
    /// `seeder sync NAME --peer PEER --once --timeout SECS`: its exit code and what it said on
    /// stderr.
    pub fn sync_once(&self, name: &str, peer: &str, timeout_secs: u32) -> (i32, String) {
        let timeout = timeout_secs.to_string();
        let out = self.run(&[
            "sync",
            name,
            "--peer",
            peer,
            "--once",
            "--timeout",
            &timeout,
        ]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The entry count of the first `stored on …: F feeds, N entries` line `sync` printed.
pub fn stored_entries(printed: &str) -> u64 {
    let line = printed
        .lines()
        .find(|l| l.starts_with("stored on "))
        .unwrap_or_else(|| panic!("no storage acknowledgement in {printed:?}"));
    line.rsplit(", ")
        .next()
        .and_then(|s| {
            s.strip_suffix(" entries")
                .or_else(|| s.strip_suffix(" entry"))
        })
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"))
}

/// Run a system tool; its stdout. Fails the test, with the tool's stderr, if it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether this test runs as root (loop devices, mounts).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A test that can't run here for want of `what` says so where a person sees it (written
/// straight to the terminal: libtest hides what a passing test prints) and passes; under CI
/// (`CI` set), where `.ci/run` provides everything, it fails instead.
pub fn skip(what: &str) {
    use std::io::Write as _;
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs {what}, which CI must provide"
    );
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {what}");
}
