//! Bit rot heals from peers, with real processes and real files: bytes flipped in random
//! entries of a seeder's data file are found by its scrub; meanwhile a new member still gets
//! everything before the damage; the writer's next sync hands the seeder good copies, which
//! it checks against its own verified tree and rewrites; its admin page and status say what
//! was repaired and from whom; the new member then gets the rest, every file identical. The
//! same on a member: bytes flipped in its home are found by `seeder check` and healed by its
//! next sync from the seeder.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{claim, free_udp_port, http, Member, Seeder};
use rand::{Rng, SeedableRng};

/// The data files under `dir` (a seeder's data folder or a home), largest first.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "data") {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    out
}

/// Flip one byte at `count` random places of `file` (far apart, so in different entries).
fn flip(file: &Path, count: usize, rng: &mut impl Rng) {
    let mut bytes = std::fs::read(file).unwrap();
    let len = bytes.len();
    for i in 0..count {
        let slot = len / count;
        let at = i * slot + rng.gen_range(0..slot);
        bytes[at] ^= 0x5a;
    }
    std::fs::write(file, bytes).unwrap();
}

fn same_files(m: &Member, files: &[(String, Vec<u8>)]) {
    for (path, content) in files {
        let out = m.run(&["get", "office", path, "-"]);
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == *content, "{path} reads back identical");
    }
}

#[test]
fn damaged_entries_are_found_served_around_and_healed_from_peers() {
    let seed: u64 = rand::thread_rng().gen();
    eprintln!("bit-rot seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let seeder = Seeder::start(&t.join("seeder"), free_udp_port());
    let peer = seeder.peer();
    let a = Member(t.join("a"));
    a.ok(&["space", "create", "office", "--open"]);
    let code = a.last(&["space", "seed-code", "office"]);
    seeder.ctl(&["space", "add", &code, "--name", "office"]);
    let mut files = Vec::new();
    for i in 0..6 {
        let content: Vec<u8> = (0..rng.gen_range(100_000..400_000))
            .map(|_| rng.gen())
            .collect();
        let local = t.join(format!("local-{i}"));
        std::fs::write(&local, &content).unwrap();
        let path = format!("docs/file-{i}.bin");
        a.ok(&["put", "office", local.to_str().unwrap(), &path]);
        files.push((path, content));
    }
    let (code, said) = a.sync_once("office", &peer, 60);
    assert_eq!(code, 0, "{said}");

    // Bit rot on the seeder's disk, found by its scrub.
    let feed_file = data_files(&t.join("seeder")).remove(0);
    flip(&feed_file, 3, &mut rng);
    let out = common::seeder()
        .args(["ctl", "--data"])
        .arg(t.join("seeder"))
        .arg("scrub")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "scrub exits 3 on damage");
    let scrub = String::from_utf8_lossy(&out.stdout).into_owned();
    let found = scrub.lines().filter(|l| l.starts_with("DAMAGED")).count();
    assert!(found >= 1, "the scrub finds the damage: {scrub}");

    // A new member still gets what comes before the damage, at once, and is told the rest
    // can't be served yet.
    let b = Member(t.join("b"));
    b.ok(&[
        "space",
        "join",
        &a.last(&["space", "invite", "office"]),
        "--name",
        "office",
    ]);
    let (code, said) = b.sync_once("office", &peer, 60);
    assert_eq!(
        code, 11,
        "sync exits 11 when a seeder could serve only part: {said}"
    );
    assert!(said.contains("damaged"), "{said}");

    // The writer syncs: its copies heal the seeder.
    let (code, said) = a.sync_once("office", &peer, 60);
    assert_eq!(code, 0, "{said}");
    let status = seeder.status();
    assert!(
        status["damaged"].as_array().unwrap().is_empty(),
        "no damage left: {status}"
    );
    let repaired = &status["repaired"][0];
    assert_eq!(
        repaired["entries"].as_u64(),
        Some(found as u64),
        "every damaged entry repaired: {status}"
    );
    assert!(seeder.ctl(&["status"]).contains("repaired"));
    // The admin page says so too.
    let admin = status["admin"].as_str().unwrap().to_string();
    let setup = seeder.ctl(&["setup-code"]).trim().to_string();
    let (cookie, _) = claim(&admin, &setup);
    let (code, _, page) = http(&admin, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(code, 200);
    assert!(
        page.contains("Repaired") && page.contains("good copies from"),
        "the dashboard shows the repair"
    );
    let again = seeder.ctl(&["scrub"]);
    assert!(
        again.contains("every held entry reads back"),
        "healed for good: {again}"
    );

    // The new member now gets the rest, every file identical.
    let (code, said) = b.sync_once("office", &peer, 60);
    assert_eq!(code, 0, "{said}");
    same_files(&b, &files);

    // Bit rot in a member's home: found by `seeder check`, healed from the seeder.
    let home_file = data_files(&a.0).remove(0);
    flip(&home_file, 2, &mut rng);
    let out = a.run(&["check", "office"]);
    assert_eq!(out.status.code(), Some(3), "check exits 3 on damage");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED"));
    let (code, said) = a.sync_once("office", &peer, 60);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("repaired"), "the member is told: {said}");
    let out = a.run(&["check", "office"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.ok(&["status", "office"]).contains("repaired"));
    same_files(&a, &files);
}
