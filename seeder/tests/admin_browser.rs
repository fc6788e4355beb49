//! The admin page of a real `seeder serve`, driven by headless Chromium (Debian's `chromium`
//! through playwright-core from npm, `seeder/tests/browser/`): claim with the setup code from
//! `seeder ctl setup-code`, set the password, open a page that doesn't exist, mistype a seed
//! code (kept in the form, its bad group marked), add the space by its seed code, watch its
//! byte count rise live while a member syncs 24 MiB into it, log out, fail to log in with a
//! wrong password.
//!
//! Needs `npm ci --prefix seeder/tests/browser` and Chromium. Without them the test prints
//! `SKIPPED` and passes, except under CI (`CI` set), where it fails: `.ci/run` installs both.
//! `SEEDER_SCREENSHOTS=DIR` keeps the screenshots.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{free_udp_port, random_file, Member, Seeder};

fn chromium() -> Option<String> {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return Some(c);
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(str::to_string)
}

#[test]
fn an_admin_claims_the_seeder_adds_a_space_and_watches_it_fill_in_a_real_browser() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ready = scripts.join("node_modules/playwright-core").exists();
    let Some(chromium) = chromium().filter(|_| ready) else {
        common::skip("chromium and `npm ci --prefix seeder/tests/browser`");
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let data = dir.path().join("seeder");
    let seed = Seeder::start(&data, port);
    let status = seed.status();
    let admin = status["admin"].as_str().unwrap().to_string();
    let setup_code = seed.ctl(&["setup-code"]).trim().to_string();

    let a = Member(dir.path().join("a"));
    a.ok(&["space", "create", "office"]);
    let big = dir.path().join("big.bin");
    random_file(&big, 24, 7);
    a.ok(&["put", "office", big.to_str().unwrap()]);
    let seed_code = a.last(&["space", "seed-code", "office"]);
    let peer = seed.peer();

    let shots = std::env::var("SEEDER_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node")
        .arg(scripts.join("admin.mjs"))
        .env("SEEDER_URL", format!("http://{admin}"))
        .env("SETUP_CODE", &setup_code)
        .env("SEED_CODE", &seed_code)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    let mut sync = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        eprintln!("browser: {line}");
        if line == "sync-now" {
            let a = Member(a.0.clone());
            let peer = peer.clone();
            sync = Some(std::thread::spawn(move || {
                a.ok(&[
                    "sync",
                    "office",
                    "--peer",
                    &peer,
                    "--once",
                    "--timeout",
                    "120",
                ])
            }));
        }
        said.push(line);
    }
    let exit = node.wait().unwrap();
    assert!(exit.success(), "the browser script failed: {said:?}");
    assert_eq!(said.last().map(String::as_str), Some("ok"));
    let out = sync.expect("the script asked for the sync").join().unwrap();
    assert!(
        out.lines().last().unwrap().starts_with("stored on "),
        "{out}"
    );
    assert!(said.iter().any(|l| l.starts_with("typo refused")));
    assert!(said.iter().any(|l| l == "unknown path: styled 404"));
    for shot in [
        "claim.png",
        "spaces.png",
        "dashboard.png",
        "login-refused.png",
        "not-found.png",
        "seed-code-typo.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
    // The claim took: the code is used up, and a claimed seeder shows none.
    let out = common::seeder()
        .args(["ctl", "--data"])
        .arg(&seed.data)
        .arg("setup-code")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let renewed = std::fs::read_to_string(seed.data.join("setup-code")).unwrap();
    assert_ne!(renewed.trim(), setup_code);
}
