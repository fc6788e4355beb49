//! Beyond the office LAN, in a small internet made of network namespaces (`tests/nat/net`):
//! office A's router runs Debian's miniupnpd (UPnP-IGD, NAT-PMP, PCP), seeder A asks it to
//! forward its QUIC port, and its peer code carries both its LAN address and that forward. A
//! member laptop syncs in the office over the LAN, is carried home (its namespace re-plugged
//! behind another NAT router) and syncs again with nothing but the same peer code: through
//! the forward. The forward is removed when the seeder stops, and never asked for with port
//! mapping turned off.
//!
//! Needs root (namespaces, nftables) and miniupnpd; skipped visibly without them, failed
//! under CI.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{is_root, random_file, Seeder};

const NET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nat/net");

/// The namespaces of one test, torn down on drop.
struct Net {
    prefix: String,
    dir: PathBuf,
}

impl Net {
    fn up(dir: &Path) -> Net {
        // One prefix per topology: tests of this file run at the same time.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("sn{}x{n}-", std::process::id());
        let net = Net {
            prefix,
            dir: dir.join("net"),
        };
        std::fs::create_dir_all(&net.dir).unwrap();
        net.run(&["up", &net.prefix.clone(), net.dir.to_str().unwrap()]);
        net
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(NET).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "net {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `cmd` run inside `host`'s namespace.
    fn cmd(&self, host: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}{host}", self.prefix)])
            .arg(program);
        c
    }

    fn seeder(&self, host: &str) -> Command {
        let mut c = self.cmd(host, Path::new(env!("CARGO_BIN_EXE_seeder")));
        c.env("RUST_LOG", "info");
        c
    }

    /// The UDP forwards miniupnpd holds in office A's router now.
    fn forwards(&self) -> usize {
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{}ra", self.prefix)])
            .args([
                "nft",
                "list",
                "chain",
                "inet",
                "router",
                "prerouting_miniupnpd",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("dnat"))
            .count()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new(NET)
            .args([
                "down",
                &self.prefix,
                self.dir.to_str().unwrap_or("/nonexistent"),
            ])
            .output();
    }
}

/// `seeder serve` inside `host`'s namespace, listening on 7428 on every address.
fn start_seeder(net: &Net, host: &str, data: &Path, extra: &[&str]) -> Seeder {
    let mut cmd = net.seeder(host);
    cmd.args(["serve", "--no-mdns", "--admin", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--listen", "0.0.0.0:7428"])
        .args(extra);
    Seeder::spawn(cmd, data, 7428)
}

/// Stop `seeder` as systemd does (SIGTERM) and wait for the process to end.
fn stop(mut seeder: Seeder) {
    let _ = Command::new("kill")
        .args(["-TERM", &seeder.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if seeder.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the seeder did not stop within 20 s of SIGTERM");
}

/// A member command inside `host`'s namespace: its stdout, failing the test if it fails.
fn member(net: &Net, host: &str, home: &Path, args: &[&str]) -> String {
    let out = net
        .seeder(host)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `sync --once` with `code` inside `host`: the address it connected at, how long connecting
/// took (from the start of the command), and everything it said.
fn sync_with_code(
    net: &Net,
    host: &str,
    home: &Path,
    space: &str,
    code: &str,
) -> (String, Duration, String) {
    let started = Instant::now();
    let mut child = net
        .seeder(host)
        .arg("--home")
        .arg(home)
        .args(["sync", space, "--once", "--timeout", "60", "--peer", code])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let mut said = String::new();
    let mut connected = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if connected.is_none() {
            if let Some(at) = line.strip_prefix("connected to ") {
                let addr = at.rsplit(" at ").next().unwrap().to_string();
                connected = Some((addr, started.elapsed()));
            }
        }
        said.push_str(&line);
        said.push('\n');
    }
    let status = child.wait().unwrap();
    let printed = out.join().unwrap();
    assert!(status.success(), "sync failed: {said}{printed}");
    assert!(printed.contains("stored on "), "{said}{printed}");
    let (addr, took) = connected.unwrap_or_else(|| panic!("never connected: {said}"));
    (addr, took, said)
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Print a figure (`name value unit`) and keep it in `target/tmp/nat-TEST.txt` for CI's log,
/// which shows no output of passing tests.
fn figure(test: &str, line: &str) {
    use std::io::Write;
    println!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nat-{test}.txt"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Start a test's figures file afresh.
fn figures_start(test: &str) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nat-{test}.txt"));
    let _ = std::fs::remove_file(path);
}

fn have(program: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).exists())
}

#[test]
fn a_member_away_from_the_office_syncs_through_the_routers_port_mapping_with_one_peer_code() {
    if !(is_root() && have("miniupnpd") && have("nft") && have("conntrack")) {
        common::skip("root, nftables, conntrack and miniupnpd");
        return;
    }
    figures_start("port-mapped");
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::up(tmp.path());
    net.run(&["upnp", &net.prefix, "ra", net.dir.to_str().unwrap(), "on"]);

    // Seeder A in office A asks the router for a forward and puts it in its peer code.
    let seeder_a = start_seeder(&net, "a", &tmp.path().join("seeder-a"), &[]);
    let (external, code) = wait_for("a port mapping", Duration::from_secs(30), || {
        let s = seeder_a.status();
        (s["port_mapping"]["state"] == "mapped").then(|| {
            (
                s["port_mapping"]["external"].as_str().unwrap().to_string(),
                s["peer_code"].as_str().unwrap().to_string(),
            )
        })
    });
    assert!(
        external.starts_with("203.0.113.1:"),
        "the router's public side: {external}"
    );
    assert!(code.contains("10.0.1.10:7428"), "LAN address in {code}");
    assert!(code.contains(&external), "forward in {code}");
    assert_eq!(net.forwards(), 1, "one forward in the router");
    let printed = seeder_a.ctl(&["status"]);
    assert!(
        printed.contains(&format!("port mapping: the router forwards {external}")),
        "{printed}"
    );

    // The member, in the office: it reaches seeder A over the LAN.
    let home = tmp.path().join("laptop");
    member(&net, "m", &home, &["space", "create", "office", "--open"]);
    let seed_code = member(&net, "m", &home, &["space", "seed-code", "office"]);
    seeder_a.ctl(&["space", "add", seed_code.trim(), "--name", "office"]);
    let first = tmp.path().join("first.bin");
    random_file(&first, 2, 7);
    member(
        &net,
        "m",
        &home,
        &["put", "office", first.to_str().unwrap()],
    );
    let (addr, lan_took, _) = sync_with_code(&net, "m", &home, "office", &code);
    assert_eq!(addr, "10.0.1.10:7428", "in the office, over the LAN");

    // Carried home behind another NAT router while `sync --watch` runs: it notices, dials
    // the same code's addresses again and goes on through the forward, with no command.
    let mut watch = net
        .seeder("m")
        .arg("--home")
        .arg(&home)
        .args(["sync", "office", "--watch", "--peer", &code])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watch_err = watch.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(watch_err).lines().map_while(Result::ok) {
            let _ = lines_tx.send(l);
        }
    });
    let connected_at = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.starts_with("connected to ") && l.ends_with(want) => return,
                Ok(l) => said.push(l),
                Err(_) => panic!("sync --watch never connected {want}: {said:?}"),
            }
        }
    };
    connected_at("at 10.0.1.10:7428");
    let before = entries_of(&seeder_a, "office");
    let moved = Instant::now();
    net.run(&["move", &net.prefix, "m", "rh", "10.0.3.20"]);
    connected_at(&format!("at {external}"));
    let roamed = moved.elapsed();
    let laptop = wait_for("the laptop at the seeder", Duration::from_secs(10), || {
        seeder_a.status()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"].as_str().unwrap().starts_with("203.0.113.3:"))
            .cloned()
    });
    assert_eq!(laptop["reached"], "port-mapped", "{laptop}");
    let second = tmp.path().join("second.bin");
    random_file(&second, 2, 8);
    // Typed while the watch runs: it goes out through the running sync.
    member(
        &net,
        "m",
        &home,
        &["put", "office", second.to_str().unwrap()],
    );
    wait_for(
        "the file put at home reaching the seeder",
        Duration::from_secs(30),
        || (entries_of(&seeder_a, "office") > before).then_some(()),
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // And a one-off sync from home with the same code.
    let third = tmp.path().join("third.bin");
    random_file(&third, 1, 9);
    member(
        &net,
        "m",
        &home,
        &["put", "office", third.to_str().unwrap()],
    );
    let (addr, direct_took, _) = sync_with_code(&net, "m", &home, "office", &code);
    assert_eq!(addr, external, "from home, through the router's forward");
    let status = member(&net, "m", &home, &["status", "office"]);
    assert!(status.contains(": last reached direct, "), "{status}");
    let status = seeder_a.status();
    assert!(
        status["spaces"][0]["entries"].as_u64().unwrap() > 0,
        "{status}"
    );
    let t = "port-mapped";
    figure(
        t,
        &format!("connect_ms_lan {:.0} ms", lan_took.as_secs_f64() * 1e3),
    );
    // Moved LANs until connected again.
    figure(
        t,
        &format!("roam_reconnect_ms {:.0} ms", roamed.as_secs_f64() * 1e3),
    );
    // Port-mapped, after the LAN address's head start.
    figure(
        t,
        &format!(
            "connect_ms_direct {:.0} ms",
            direct_took.as_secs_f64() * 1e3
        ),
    );
    // How each connection of the test matrix went (direct_share in CI's log).
    for case in ["member_lan", "member_roamed", "member_port_mapped"] {
        figure(t, &format!("nat_path {case} direct"));
    }

    // A stopping seeder takes its forward back.
    stop(seeder_a);
    // The router takes the release as a notification and acts on it on its own time.
    wait_for(
        "the forward removed at shutdown",
        Duration::from_secs(5),
        || (net.forwards() == 0).then_some(()),
    );

    // Turned off with one setting: nothing asked.
    let quiet = start_seeder(
        &net,
        "a",
        &tmp.path().join("seeder-a"),
        &["--no-port-mapping"],
    );
    assert_eq!(quiet.status()["port_mapping"]["state"], "off");
    assert!(!quiet.status()["peer_code"]
        .as_str()
        .unwrap()
        .contains("203.0.113.1"));
    assert_eq!(net.forwards(), 0, "no forward asked for");
}

#[test]
fn the_namespace_internet_behaves_as_its_nat_kinds_say() {
    if !(is_root() && ["miniupnpd", "nft", "conntrack", "upnpc", "natpmpc"].map(have) == [true; 5])
    {
        common::skip("root, nftables, conntrack, miniupnpd, upnpc and natpmpc");
        return;
    }
    // Mapping and filtering of each NAT kind, miniupnpd's forwards, hole punching between two
    // port-restricted NATs, and a host moving LANs: what the tests above rely on.
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nat/selftest"))
        .arg(format!("snt{}-", std::process::id()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(" passed, 0 failed"), "{said}");
}

/// Entries held of the space named `name`, from a seeder's status.
fn entries_of(seeder: &Seeder, name: &str) -> u64 {
    seeder.status()["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["entries"].as_u64())
        .unwrap_or(0)
}

/// The address `seeder` sees the peer `node` at, if it is connected.
fn peer_address(seeder: &Seeder, node: &str) -> Option<String> {
    seeder.status()["peers"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == node)
        .map(|p| p["address"].as_str().unwrap().to_string())
}

fn counted(net: &Net, host: &str) -> u64 {
    net.run(&["counters", &net.prefix, host])
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

/// The partner with a public address and the two offices' seeders, and a member laptop in
/// office A holding "office" (on both offices' seeders) and "partners" (on all three, so the
/// public partner holds a space with both offices: it introduces and relays between them).
struct Offices {
    public: Seeder,
    seeder_a: Seeder,
    seeder_b: Seeder,
    home: PathBuf,
}

fn offices(net: &Net, dir: &Path, public_flags: &[&str]) -> Offices {
    let off = ["--no-port-mapping"];
    let public = start_seeder(net, "pub", &dir.join("pub"), public_flags);
    let seeder_a = start_seeder(net, "a", &dir.join("seeder-a"), &off);
    let seeder_b = start_seeder(net, "b", &dir.join("seeder-b"), &off);
    let home = dir.join("laptop");
    member(net, "m", &home, &["space", "create", "office", "--open"]);
    member(net, "m", &home, &["space", "create", "partners", "--open"]);
    let seed = |space: &str| {
        member(net, "m", &home, &["space", "seed-code", space])
            .trim()
            .to_string()
    };
    let (office, partners) = (seed("office"), seed("partners"));
    public.ctl(&["space", "add", &partners, "--name", "partners"]);
    for s in [&seeder_a, &seeder_b] {
        s.ctl(&["space", "add", &office, "--name", "office"]);
        s.ctl(&["space", "add", &partners, "--name", "partners"]);
    }
    Offices {
        public,
        seeder_a,
        seeder_b,
        home,
    }
}

fn code(s: &Seeder) -> String {
    s.status()["peer_code"].as_str().unwrap().to_string()
}

fn node(s: &Seeder) -> String {
    s.status()["node_id"].as_str().unwrap().to_string()
}

/// How `s` says it reached the peer `id`, if connected.
fn reached(s: &Seeder, id: &str) -> Option<String> {
    s.status()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == id)
        .map(|p| p["reached"].as_str().unwrap().to_string())
}

/// `sync NAME --once` of a laptop's `home` inside host `m`, with these peers.
fn sync_with_peers(
    net: &Net,
    home: &Path,
    space: &str,
    timeout: u32,
    peers: &[&str],
) -> std::process::Output {
    let mut cmd = net.seeder("m");
    cmd.arg("--home")
        .arg(home)
        .args(["sync", space, "--once", "--timeout", &timeout.to_string()]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn seeders_and_a_member_behind_port_restricted_nats_connect_directly_after_an_introduction() {
    if !(is_root() && have("nft") && have("conntrack")) {
        common::skip("root, nftables and conntrack");
        return;
    }
    figures_start("punched");
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::up(tmp.path());
    // No UPnP anywhere: office A and office B sit behind port-restricted NATs; the partner
    // with a public address (pub) is the one both reach.
    let Offices {
        public,
        seeder_a,
        seeder_b,
        home,
    } = offices(&net, tmp.path(), &["--no-port-mapping"]);
    let data = tmp.path().join("office.bin");
    random_file(&data, 4, 9);
    member(&net, "m", &home, &["put", "office", data.to_str().unwrap()]);
    sync_with_code(&net, "m", &home, "office", &code(&seeder_a));
    let held = entries_of(&seeder_a, "office");
    assert!(held > 0);

    // Both offices keep the public partner connected.
    seeder_a.ctl(&["peer", "add", &code(&public)]);
    seeder_b.ctl(&["peer", "add", &code(&public)]);
    let (a_id, b_id) = (node(&seeder_a), node(&seeder_b));
    wait_for(
        "both offices at the public partner",
        Duration::from_secs(60),
        || {
            (peer_address(&public, &a_id).is_some() && peer_address(&public, &b_id).is_some())
                .then_some(())
        },
    );
    // The public partner told each office where it sees it: their codes now carry it.
    let a_code = wait_for("A's observed address", Duration::from_secs(10), || {
        let c = code(&seeder_a);
        c.contains("203.0.113.1:").then_some(c)
    });
    assert!(a_code.contains("10.0.1.10:7428"), "{a_code}");
    let public_before = counted(&net, "pub");

    // Office A is given office B's code as B printed it before any partner told it where it
    // is seen: its only address is on B's LAN, out of reach. (B's code now carries its
    // public side too, where a direct dial would wait for B's punch just the same.)
    assert!(
        code(&seeder_b).contains("203.0.113.2:"),
        "{}",
        code(&seeder_b)
    );
    let b_code = format!("seeder:{b_id}@10.0.2.10:7428");
    let t = Instant::now();
    seeder_a.ctl(&["peer", "add", &b_code]);
    let seen_at = wait_for("A connected to B", Duration::from_secs(60), || {
        peer_address(&seeder_b, &a_id)
    });
    let punched = t.elapsed();
    assert!(
        seen_at.starts_with("203.0.113.1:"),
        "B sees A through A's NAT, directly: {seen_at}"
    );
    assert_eq!(reached(&seeder_b, &a_id).as_deref(), Some("hole-punched"));
    assert_eq!(reached(&seeder_a, &b_id).as_deref(), Some("hole-punched"));
    // Where B was found is kept with B's addresses, first.
    let partners = seeder_a.ctl(&["peer", "list"]);
    assert!(partners.contains("203.0.113.2:"), "{partners}");
    assert!(seeder_a
        .ctl(&["status"])
        .contains("(partner) at 203.0.113.2:"));
    wait_for("the office space at B", Duration::from_secs(60), || {
        (entries_of(&seeder_b, "office") == held).then_some(())
    });
    let through_public = counted(&net, "pub") - public_before;
    assert!(
        through_public < 256 << 10,
        "the public partner carried {through_public} bytes of a 4 MiB replication"
    );
    let t = "punched";
    figure(
        t,
        &format!("connect_ms_punched {:.0} ms", punched.as_secs_f64() * 1e3),
    );
    figure(
        t,
        &format!("public_partner_bytes_during_replication {through_public} bytes"),
    );
    figure(t, "nat_path seeders_port_restricted direct");

    // The laptop, at home behind a third NAT, syncs the space it shares with all three with
    // the public partner's code and seeder B's LAN-only code: it reaches B through the
    // public partner's introduction.
    net.run(&["move", &net.prefix, "m", "rh", "10.0.3.20"]);
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, "from home").unwrap();
    member(
        &net,
        "m",
        &home,
        &["put", "partners", note.to_str().unwrap()],
    );
    let out = sync_with_peers(&net, &home, "partners", 60, &[&code(&public), &b_code]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("connected to {b_id} at 203.0.113.2:")),
        "B reached at its NAT's public side: {said}"
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("stored on {}", &b_id[..8])) || printed.contains(&b_id),
        "{printed}"
    );
    // The member's own status says how it last reached each seeder.
    let status = member(&net, "m", &home, &["status", "partners"]);
    assert!(
        status.contains(&format!("seeder {b_id}: last reached hole-punched")),
        "{status}"
    );
    figure(t, "nat_path member_home_introduced direct");
}

#[test]
fn seeders_behind_symmetric_nats_replicate_through_a_relay_that_strangers_cannot_use() {
    if !(is_root() && have("nft") && have("conntrack")) {
        common::skip("root, nftables and conntrack");
        return;
    }
    let t = "relayed";
    figures_start(t);
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::up(tmp.path());
    // Both offices behind symmetric NATs (a new external port for every destination): no
    // hole punching gets through. The public partner relays, within a budget set high
    // enough here to measure what relaying itself costs.
    net.run(&["nat", &net.prefix, "ra", "symmetric"]);
    net.run(&["nat", &net.prefix, "rb", "symmetric"]);
    let Offices {
        public,
        seeder_a,
        seeder_b,
        home,
    } = offices(
        &net,
        tmp.path(),
        &["--no-port-mapping", "--relay-mib-s", "1000"],
    );
    let (a_id, b_id, pub_id) = (node(&seeder_a), node(&seeder_b), node(&public));

    // Large enough that the 100 ms between status polls is small beside the transfer.
    const MIB: u64 = 64;
    let (office_file, partners_file) = (tmp.path().join("big.bin"), tmp.path().join("p.bin"));
    random_file(&office_file, MIB as usize, 21);
    random_file(&partners_file, MIB as usize, 22);
    member(
        &net,
        "m",
        &home,
        &["put", "office", office_file.to_str().unwrap()],
    );
    member(
        &net,
        "m",
        &home,
        &["put", "partners", partners_file.to_str().unwrap()],
    );
    sync_with_code(&net, "m", &home, "office", &code(&seeder_a));
    sync_with_code(&net, "m", &home, "partners", &code(&seeder_a));
    let (office_held, partners_held) = (
        entries_of(&seeder_a, "office"),
        entries_of(&seeder_a, "partners"),
    );

    // Direct, for comparison: A sends "partners" to the public partner it dials (timed from
    // the connection, as the relayed transfer is).
    seeder_a.ctl(&["peer", "add", &code(&public)]);
    wait_for("A at the public seeder", Duration::from_secs(30), || {
        peer_address(&public, &a_id)
    });
    let t0 = Instant::now();
    wait_for(
        "partners at the public seeder",
        Duration::from_secs(120),
        || (entries_of(&public, "partners") == partners_held).then_some(()),
    );
    let direct_took = t0.elapsed();
    seeder_b.ctl(&["peer", "add", &code(&public)]);
    wait_for("partners at B", Duration::from_secs(120), || {
        (entries_of(&seeder_b, "partners") == partners_held).then_some(())
    });

    // A is given B's code with its LAN address only: no direct path, no punched one (each
    // NAT gives every destination another port), so after the other ways' head start the
    // public partner carries the connection.
    let b_code = format!("seeder:{b_id}@10.0.2.10:7428");
    let before = counted(&net, "pub");
    let t1 = Instant::now();
    seeder_a.ctl(&["peer", "add", &b_code]);
    wait_for("A connected to B", Duration::from_secs(60), || {
        peer_address(&seeder_b, &a_id)
    });
    let connected = t1.elapsed();
    let via = format!("relayed via {}", &pub_id[..8]);
    assert_eq!(reached(&seeder_b, &a_id).as_deref(), Some(via.as_str()));
    assert_eq!(reached(&seeder_a, &b_id).as_deref(), Some(via.as_str()));
    assert!(seeder_b.ctl(&["status"]).contains(&via));
    wait_for("the office space at B", Duration::from_secs(120), || {
        (entries_of(&seeder_b, "office") == office_held).then_some(())
    });
    let relay_took = t1.elapsed() - connected;
    // The public partner shows what it carries, and carried it: the whole space passed
    // through it (it holds nothing of "office" itself).
    let relays = public.status()["relaying"].as_array().unwrap().clone();
    assert_eq!(relays.len(), 1, "{relays:?}");
    assert!(
        (relays[0]["from"] == a_id && relays[0]["to"] == b_id)
            || (relays[0]["from"] == b_id && relays[0]["to"] == a_id),
        "{relays:?}"
    );
    assert!(
        relays[0]["bytes"].as_u64().unwrap() > MIB << 20,
        "{relays:?}"
    );
    assert!(counted(&net, "pub") - before > MIB << 20);
    let said = public.ctl(&["status"]);
    assert!(
        said.contains("relaying: up to 8 connections") && said.contains("relaying "),
        "{said}"
    );
    assert_eq!(entries_of(&public, "office"), 0);

    // Files identical: a second member at office B gets the file from seeder B.
    let home_b = tmp.path().join("laptop-b");
    let invite = member(&net, "m", &home, &["space", "invite", "office"]);
    member(
        &net,
        "b",
        &home_b,
        &["space", "join", invite.trim(), "--name", "office"],
    );
    sync_with_code(&net, "b", &home_b, "office", &code(&seeder_b));
    let status = member(&net, "b", &home_b, &["status", "office"]);
    assert!(
        status.contains(&format!("seeder {b_id}: last reached LAN")),
        "{status}"
    );
    let got = tmp.path().join("got.bin");
    member(
        &net,
        "b",
        &home_b,
        &["get", "office", "big.bin", got.to_str().unwrap()],
    );
    assert!(
        std::fs::read(&got).unwrap() == std::fs::read(&office_file).unwrap(),
        "the file relayed to B differs"
    );

    // A stranger to both offices, holding only a space of its own on the public seeder,
    // can't make it relay: the public seeder says so, and carries nothing for it.
    let stranger = tmp.path().join("stranger");
    member(
        &net,
        "m",
        &stranger,
        &["space", "create", "elsewhere", "--open"],
    );
    let elsewhere = member(&net, "m", &stranger, &["space", "seed-code", "elsewhere"]);
    public.ctl(&["space", "add", elsewhere.trim(), "--name", "elsewhere"]);
    member(
        &net,
        "m",
        &stranger,
        &["put", "elsewhere", partners_file.to_str().unwrap()],
    );
    let out = sync_with_peers(&net, &stranger, "elsewhere", 25, &[&code(&public), &b_code]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "relay {} does not relay between us and that node",
            &pub_id[..8]
        )),
        "{said}"
    );
    assert!(!said.contains(&format!("connected to {b_id}")), "{said}");
    assert_eq!(public.status()["relaying"].as_array().unwrap().len(), 1);

    // The offices' routers are replaced by kinder ones (port-restricted): at its next round
    // the partner dialer finds a hole-punched path and the relay is let go.
    net.run(&["nat", &net.prefix, "ra", "port-restricted"]);
    net.run(&["nat", &net.prefix, "rb", "port-restricted"]);
    let changed = Instant::now();
    wait_for(
        "a direct path in place of the relay",
        Duration::from_secs(120),
        || (reached(&seeder_a, &b_id).as_deref() == Some("hole-punched")).then_some(()),
    );
    wait_for("the relay let go", Duration::from_secs(30), || {
        public.status()["relaying"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
    let moved_off = changed.elapsed();
    assert!(!seeder_b.ctl(&["status"]).contains("relayed via"));
    figure(
        t,
        &format!("relay_to_direct_s {:.0} s", moved_off.as_secs_f64()),
    );
    figure(t, "nat_path seeders_after_router_change direct");
    figure(
        t,
        &format!("connect_ms_relayed {:.0} ms", connected.as_secs_f64() * 1e3),
    );
    let mb = (MIB << 20) as f64 / 1e6;
    let relay_mb_s = mb / relay_took.as_secs_f64();
    let direct_mb_s = mb / direct_took.as_secs_f64();
    figure(t, &format!("relay_mb_s {relay_mb_s:.1} MB/s"));
    figure(t, &format!("direct_mb_s {direct_mb_s:.1} MB/s"));
    figure(
        t,
        &format!("relay_share {:.2} ratio", relay_mb_s / direct_mb_s),
    );
    figure(t, "nat_path seeders_symmetric relayed");
}
