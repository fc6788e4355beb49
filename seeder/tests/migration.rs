//! What release 0.1 left on disk keeps working with today's code, as real processes: its
//! seeder data folder opens with its space, feeds, quota, admin account, token and agreement;
//! its member homes list, log and read every file byte for byte without a network, with the
//! same codes; a member writes through the old seeder to the other old home; and a new device
//! joins with the old invite code and reads everything.
//!
//! The fixture, `tests/fixtures/release-0.1-spaces.tar.gz`, was made by
//! `tests/fixtures/make-release-0.1.sh` with the 0.1.0 binary; the README beside it lists what
//! it holds. Its keys are random, so the constants below are the values that run printed.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_udp_port, http, stored_entries, tool, Member, Seeder};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/release-0.1-spaces.tar.gz"
);
const SPACE: &str = "office";
const ADDRESS: &str = "83dbb98201958cf0e0e04799d6e54f96bd799cc7d44c68b7a0dca51033041cff";
const INVITE: &str =
    "invite-05wqq-jw7rb-h15sx-en2fh-n6rat-h7a45-1vtbv-q6gxt-xnwme-36qkz-35jq0-ycck0";
const SEED: &str = "seed-061xq-ec206-arsw7-0w13s-knq59-ybbty-cwrza-4rt5q-m3eaa-41k0g-efy12-5190g";
const NODE_ID: &str = "ba00bf2407b6402bca6946379c89107c435da9b32896adaa353c9c8745228640";
const ALICE_FEED: &str = "18edc06b4734e4b5a2c751af619309e9701d48184a431f560a71765af5825238";
const BOB_FEED: &str = "42404520083e74c59486eb21cc20d7e381c283a5c51b1f769283123e2fddc80e";
/// Entries and bytes of each feed, as the seeder and both homes hold them.
const ALICE_LEN: (u64, u64) = (28, 1_050_724);
const BOB_LEN: (u64, u64) = (12, 71_297);
const PASSWORD: &str = "release 0.1 admin password";
const TOKEN: &str = "sdr_129e11f06ae88b59061c5bd1a760d8bf51fee26d4bea8bb3";

/// A file of the space: path, bytes, mode, writer's feed prefix, BLAKE3 of the content.
struct Expected {
    path: &'static str,
    size: u64,
    mode: &'static str,
    by: &'static str,
    blake3: &'static str,
}

/// Every file the space shows, in `ls` order: `draft.txt` renamed to `final.txt`, `old.txt`
/// removed, `notes.txt` alice's (bob's is the conflict [`CONFLICT`]).
const FILES: &[Expected] = &[
    Expected {
        path: "café menu.txt",
        size: 31,
        mode: "0644",
        by: "18edc06b",
        blake3: "0b4e9875f75a6ffe86bad89f4a14f1b0b152cf906758c06e8a5181b0c06ee0b4",
    },
    Expected {
        path: "docs/report.txt",
        size: 1_048_577,
        mode: "0644",
        by: "18edc06b",
        blake3: "da82ffd343901d13114d5c5ef13ee9e3ec2dafe8cb1b0adc04de3a08f14a9e3e",
    },
    Expected {
        path: "empty.txt",
        size: 0,
        mode: "0644",
        by: "42404520",
        blake3: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    },
    Expected {
        path: "final.txt",
        size: 50,
        mode: "0644",
        by: "18edc06b",
        blake3: "1499730330f7a904985cdcd4cca032037b4e708fbcfae8d8a635c012d72339b8",
    },
    Expected {
        path: "hello.txt",
        size: 17,
        mode: "0644",
        by: "18edc06b",
        blake3: "6667692419a688694160ae6211a20c46ed39a40873f06eff847d740378068f14",
    },
    Expected {
        path: "notes.txt",
        size: 47,
        mode: "0644",
        by: "18edc06b",
        blake3: "038f99122b35af1a7e0e285b87b482f10cdc889fc011803580a5111640e3b39f",
    },
    Expected {
        path: "photos/cat.bin",
        size: 70_000,
        mode: "0644",
        by: "42404520",
        blake3: "45cbb80cb813b16776801021718c9ec96af504f637c7c3f8a8df6fccdff26451",
    },
    Expected {
        path: "tools/run.sh",
        size: 22,
        mode: "0755",
        by: "42404520",
        blake3: "91039137c4839c9dea9d71dc7f607727d3490e82448a08a11f5b0ccba3a34943",
    },
];

/// Bob's `notes.txt`, which lost to alice's: its version id and BLAKE3.
const CONFLICT: (&str, &str) = (
    "42404520:10",
    "af3869a9f3e63d314e2feb859560e3c53ab4148cdc51e32f609e54109fe466ee",
);

/// Every file operation of the space, as `seeder log` prints it (each device's clock
/// included): the records and clocks 0.1 wrote decode to the same history.
const LOG: &str = "\
42404520:1\tvm(42404520)\tput empty.txt (0 bytes)\t{42404520:2}
18edc06b:2\tvm(18edc06b)\tput hello.txt (17 bytes)\t{18edc06b:3}
42404520:4\tvm(42404520)\tput photos/cat.bin (70000 bytes)\t{42404520:5}
42404520:6\tvm(42404520)\tput old.txt (35 bytes)\t{42404520:7}
42404520:8\tvm(42404520)\tput tools/run.sh (22 bytes)\t{42404520:9}
42404520:10\tvm(42404520)\tput notes.txt (47 bytes)\t{42404520:11}
18edc06b:20\tvm(18edc06b)\tput docs/report.txt (1048577 bytes)\t{18edc06b:21}
18edc06b:22\tvm(18edc06b)\tput draft.txt (50 bytes)\t{18edc06b:23}
18edc06b:24\tvm(18edc06b)\tput café menu.txt (31 bytes)\t{18edc06b:25}
18edc06b:26\tvm(18edc06b)\tput notes.txt (47 bytes)\t{18edc06b:27}
18edc06b:27\tvm(18edc06b)\tmv draft.txt final.txt\t{18edc06b:28, 42404520:11}
42404520:11\tvm(42404520)\trm old.txt\t{18edc06b:27, 42404520:12}
";

/// The fixture unpacked into a fresh temporary folder: (the folder, its `release-0.1/`).
fn unpack() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    tool(
        "tar",
        &["-xzf", FIXTURE, "-C", dir.path().to_str().unwrap()],
    );
    let root = dir.path().join("release-0.1");
    assert!(root.join("seeder/node.key").is_file(), "fixture unpacked");
    (dir, root)
}

/// The old seeder's data folder, served by today's `seeder serve` on a free loopback port.
fn serve(root: &Path) -> (Seeder, String) {
    let seed = Seeder::start(&root.join("seeder"), free_udp_port());
    // Pinned to the old node id: the member refuses any other identity.
    let peer = format!("127.0.0.1:{}#{NODE_ID}", seed.port);
    (seed, peer)
}

/// `seeder ls NAME --recursive --long` as 0.1 wrote the space, line for line.
fn expected_listing() -> String {
    FILES
        .iter()
        .map(|f| {
            let note = if f.path == "notes.txt" {
                "\t(conflict: see seeder conflicts)"
            } else {
                ""
            };
            format!(
                "{}\t{}\t2026-01-02 03:04:05\tvm({})\t{}{note}\n",
                f.mode, f.size, f.by, f.path
            )
        })
        .collect()
}

/// `seeder get NAME PATH -`: the content's BLAKE3, failing with the command's error.
fn content_hash(member: &Member, path: &str, version: Option<&str>) -> String {
    let mut args = vec!["get", SPACE, path, "-"];
    if let Some(v) = version {
        args.extend(["--version", v]);
    }
    let out = member.run(&args);
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        member.0.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    blake3::hash(&out.stdout).to_hex().to_string()
}

/// Every file of the space and the losing version come back from `member` byte for byte.
fn reads_every_file(member: &Member) {
    assert_eq!(
        member.ok(&["ls", SPACE, "--recursive", "--long"]),
        expected_listing(),
        "{}",
        member.0.display()
    );
    for f in FILES {
        assert_eq!(
            content_hash(member, f.path, None),
            f.blake3,
            "{} in {}",
            f.path,
            member.0.display()
        );
    }
    let conflicts = member.ok(&["conflicts", SPACE]);
    assert_eq!(
        conflicts,
        format!(
            "{}\tnotes.txt\t47 bytes\tby vm(42404520)\t(kept: 18edc06b:26 by vm(18edc06b))\n",
            CONFLICT.0
        )
    );
    assert_eq!(
        content_hash(member, "notes.txt", Some(CONFLICT.0)),
        CONFLICT.1
    );
    // Removed and renamed-away paths stay gone.
    for gone in ["old.txt", "draft.txt"] {
        let out = member.run(&["get", SPACE, gone, "-"]);
        assert_eq!(out.status.code(), Some(1), "{gone}: {out:?}");
    }
}

fn space_json(status: &serde_json::Value) -> serde_json::Value {
    let spaces = status["spaces"].as_array().unwrap();
    assert_eq!(spaces.len(), 1, "{status}");
    spaces[0].clone()
}

/// SIGTERM, and wait for a clean exit.
fn stop(mut seed: Seeder) {
    let pid = seed.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let ended = seed.child.wait().unwrap();
    assert!(ended.success(), "seeder exit on SIGTERM: {ended:?}");
}

#[test]
fn a_release_0_1_seeder_store_serves_its_space_feeds_and_admin_settings() {
    let (_dir, root) = unpack();
    let (seed, _) = serve(&root);

    let status = seed.status();
    assert_eq!(status["node_id"], NODE_ID, "the node identity is kept");
    assert_eq!(status["claimed"], true, "{status}");
    assert_eq!(status["forks"], 0, "{status}");
    assert_eq!(status["damaged"], serde_json::json!([]), "{status}");
    let space = space_json(&status);
    assert_eq!(space["name"], SPACE);
    assert_eq!(space["address"], ADDRESS);
    assert_eq!(space["seed_code"], SEED);
    assert_eq!(space["quota"], 64 << 20);
    assert_eq!(space["feeds"], 2);
    assert_eq!(space["entries"], ALICE_LEN.0 + BOB_LEN.0);
    assert_eq!(space["bytes"], ALICE_LEN.1 + BOB_LEN.1);
    let listed = seed.ctl(&["space", "list"]);
    assert!(
        listed.starts_with(&format!("{SPACE}\t{ADDRESS}\t2 feeds\t40 entries\t")),
        "{listed}"
    );
    // Every stored entry reads back and matches the tree 0.1 stored.
    let scrubbed = seed.ctl(&["scrub"]);
    assert!(
        scrubbed.contains("every held entry reads back as it was stored"),
        "{scrubbed}"
    );

    // The admin page: 0.1's password, device name, agreement and API token.
    let admin = status["admin"].as_str().unwrap().to_string();
    let (code, _, body) = http(
        &admin,
        "POST",
        "/api/v1/session",
        &[],
        &format!(r#"{{"password":"{PASSWORD}"}}"#),
    );
    assert_eq!(code, 200, "the old password logs in: {body}");
    let bearer = format!("Bearer {TOKEN}");
    let get = |path: &str| {
        let (code, _, body) = http(&admin, "GET", path, &[("Authorization", &bearer)], "");
        assert_eq!(code, 200, "{path} with the old token: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    assert_eq!(get("/api/v1/settings")["device_name"], "release-0.1 seeder");
    let spaces = get("/api/v1/spaces");
    assert_eq!(spaces[0]["name"], SPACE, "{spaces}");
    assert_eq!(spaces[0]["seed_code"], SEED, "{spaces}");
    assert_eq!(spaces[0]["quota_bytes"], 64 << 20, "{spaces}");
    assert_eq!(spaces[0]["entries"], 40, "{spaces}");
    assert_eq!(spaces[0]["complete"], true, "{spaces}");
    let agreements = get("/api/v1/agreements");
    let a = &agreements[0];
    assert_eq!(a["organisation"], "Partner Co-op", "{agreements}");
    assert_eq!(a["contact"], "it@partner.example");
    assert_eq!(a["spaces"], serde_json::json!([SPACE]));
    assert_eq!(a["quota_bytes"], 128 << 20);
    assert_eq!(a["start"], "2026-01-01");
    assert_eq!(a["review"], "2027-01-01");
    assert_eq!(a["notes"], "made by release 0.1");
    stop(seed);

    // Each feed whole, at the length and size 0.1 stored, under the signed head it verified.
    let store =
        seeder::store::Store::open(root.join("seeder"), &seeder::store::StoreConfig::default())
            .unwrap();
    let mut feeds: Vec<(String, u64, u64, Option<u64>, bool)> = store
        .feeds()
        .unwrap()
        .into_iter()
        .map(|f| {
            (
                hex::encode(f.key.0),
                f.length,
                f.bytes,
                f.head.map(|h| h.length),
                f.frozen,
            )
        })
        .collect();
    feeds.sort();
    assert_eq!(
        feeds,
        [
            (
                ALICE_FEED.into(),
                ALICE_LEN.0,
                ALICE_LEN.1,
                Some(ALICE_LEN.0),
                false
            ),
            (
                BOB_FEED.into(),
                BOB_LEN.0,
                BOB_LEN.1,
                Some(BOB_LEN.0),
                false
            ),
        ]
    );
}

#[test]
fn release_0_1_homes_list_log_and_read_every_file_without_a_network() {
    let (_dir, root) = unpack();
    for name in ["alice", "bob"] {
        let home = Member(root.join(name));
        assert_eq!(
            home.ok(&["space", "list"]),
            format!("{SPACE}\t{ADDRESS}\t2 feeds\n"),
            "{name}"
        );
        // Today's code derives the same codes from the secret 0.1 stored.
        assert_eq!(home.last(&["space", "invite", SPACE]), INVITE, "{name}");
        assert_eq!(home.last(&["space", "seed-code", SPACE]), SEED, "{name}");
        assert_eq!(home.ok(&["log", SPACE]), LOG, "{name}");
        reads_every_file(&home);
        // The seeder's acknowledgements 0.1 recorded still count.
        let status = home.ok(&["status", SPACE]);
        assert!(
            status.lines().next().unwrap().ends_with("is on 1 seeder"),
            "{status}"
        );
        assert!(status.contains(&format!("seeder {NODE_ID}")), "{status}");
    }
    let alice = Member(root.join("alice")).ok(&["status", SPACE]);
    assert!(
        alice.contains("feed 18edc06b (this device's): 28 of 28 entries acknowledged"),
        "{alice}"
    );
    let bob = Member(root.join("bob")).ok(&["status", SPACE]);
    assert!(
        bob.contains("feed 42404520 (this device's): 12 of 12 entries acknowledged"),
        "{bob}"
    );
}

#[test]
fn writes_flow_through_a_release_0_1_seeder_and_its_invite_still_admits_a_new_device() {
    let (dir, root) = unpack();
    let (seed, peer) = serve(&root);
    let alice = Member(root.join("alice"));
    let bob = Member(root.join("bob"));

    // Alice writes 200,000 bytes (4 content entries and the operation) and syncs.
    let mut content = vec![0u8; 200_000];
    blake3::Hasher::new()
        .update(b"written after the upgrade")
        .finalize_xof()
        .fill(&mut content);
    let local = root.join("after-upgrade.bin");
    std::fs::write(&local, &content).unwrap();
    alice.ok(&["put", SPACE, "after-upgrade.bin", "after/upgrade.bin"]);
    let synced = alice.ok(&["sync", SPACE, "--peer", &peer, "--once", "--timeout", "60"]);
    assert_eq!(stored_entries(&synced), ALICE_LEN.0 + 5, "{synced}");
    assert!(
        synced.contains(&format!("stored on {NODE_ID}: 1 feed, 33 entries")),
        "{synced}"
    );
    let status = alice.ok(&["status", SPACE]);
    assert!(status.starts_with("all your data (33 entries"), "{status}");
    assert_eq!(space_json(&seed.status())["entries"], 45);

    // Bob, another 0.1 home, fetches it through the old seeder.
    let (code, said) = bob.sync_once(SPACE, &peer, 60);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("received feed 18edc06b: 33 entries"),
        "{said}"
    );
    let got = bob.run(&["get", SPACE, "after/upgrade.bin", "-"]);
    assert!(got.status.success(), "{got:?}");
    assert!(
        got.stdout == content,
        "bob reads alice's new file byte for byte"
    );
    // And what 0.1 wrote is still there, unchanged.
    for f in FILES {
        assert_eq!(content_hash(&bob, f.path, None), f.blake3, "{}", f.path);
    }

    // A new device joins with 0.1's invite code and gets everything from the old seeder.
    let carol = Member(dir.path().join("carol"));
    carol.ok(&["space", "join", INVITE, "--name", SPACE]);
    assert_eq!(carol.last(&["space", "seed-code", SPACE]), SEED);
    let (code, said) = carol.sync_once(SPACE, &peer, 60);
    assert_eq!(code, 0, "{said}");
    for received in [
        "received feed 18edc06b: 33 entries",
        "received feed 42404520: 12 entries",
    ] {
        assert!(said.contains(received), "{said}");
    }
    let listing = carol.ok(&["ls", SPACE, "--recursive"]);
    let mut expected: Vec<&str> = FILES.iter().map(|f| f.path).collect();
    expected.push("after/upgrade.bin");
    expected.sort_unstable();
    assert_eq!(listing.lines().collect::<Vec<_>>(), expected);
    for f in FILES {
        assert_eq!(content_hash(&carol, f.path, None), f.blake3, "{}", f.path);
    }
    assert_eq!(
        content_hash(&carol, "notes.txt", Some(CONFLICT.0)),
        CONFLICT.1
    );
    let got = carol.run(&["get", SPACE, "after/upgrade.bin", "-"]);
    assert!(got.stdout == content);
    // The seeder took the new device's feed too.
    let space = space_json(&seed.status());
    assert_eq!(space["feeds"], 3, "{space}");
    stop(seed);
}
