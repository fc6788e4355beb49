//! Folders of many small files replicate completely, member → seeder → second member: 10,000
//! files of 1 to 700 bytes, and 50,000 tiny files that make 100,000 entries in one feed. Small
//! entries fill a data message's entry count long before its bytes, so these are the spaces
//! that find a sender breaking the receiver's limits.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{free_udp_port, Member, Seeder};
use rand::{Rng, SeedableRng};

/// Write `count` files of `sizes` bytes under `dir`; their names and contents.
fn folder(
    dir: &Path,
    count: usize,
    sizes: std::ops::RangeInclusive<usize>,
    seed: u64,
) -> Vec<(String, Vec<u8>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|i| {
            let name = format!("n{i:06}.txt");
            let len = rng.gen_range(sizes.clone());
            let content: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            std::fs::write(dir.join(&name), &content).unwrap();
            (name, content)
        })
        .collect()
}

#[test]
fn folders_of_many_small_files_reach_a_second_member_through_a_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let seeder = Seeder::start(&dir.path().join("seeder"), free_udp_port());
    let peer = seeder.peer();
    let a = Member(dir.path().join("a"));
    let b = Member(dir.path().join("b"));
    let cases = [
        ("notes", 10_000, 1..=700, 20_000),
        ("log", 50_000, 1..=16, 100_000),
    ];
    for (space, count, sizes, entries) in cases {
        let files = folder(&dir.path().join(space), count, sizes, count as u64);
        a.ok(&["space", "create", space, "--open"]);
        a.ok(&["put", space, dir.path().join(space).to_str().unwrap()]);
        let code = a.last(&["space", "seed-code", space]);
        seeder.ctl(&["space", "add", &code, "--name", space]);
        let (rc, said) = a.sync_once(space, &peer, 300);
        assert_eq!(rc, 0, "{said}");
        let out = a.ok(&["status", space]);
        assert!(out.contains("stored"), "{out}");
        let held: u64 = seeder.status()["spaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == space)
            .map(|s| s["entries"].as_u64().unwrap())
            .sum();
        // The files' entries and the space's own (the device's name).
        assert!(
            held > entries && held < entries + 8,
            "{space}: {held} entries on the seeder"
        );
        assert!(
            said.contains(&format!("{held} entries stored on")),
            "{said}"
        );

        let invite = a.last(&["space", "invite", space]);
        b.ok(&["space", "join", &invite, "--name", space]);
        let (rc, said) = b.sync_once(space, &peer, 300);
        assert_eq!(rc, 0, "{said}");
        // Every file listed with its size, and a sample read back byte for byte.
        let listed = b.ok(&["ls", space, "--recursive", "--long"]);
        let sizes: std::collections::BTreeMap<String, u64> = listed
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.last().unwrap().to_string(), f[1].parse().unwrap())
            })
            .collect();
        assert_eq!(sizes.len(), count, "{space}: every file listed");
        for (name, content) in &files {
            let path = format!("{space}/{name}");
            assert_eq!(sizes.get(&path), Some(&(content.len() as u64)), "{path}");
        }
        for (name, content) in files.iter().step_by(count / 20) {
            let got = b.run(&["get", space, &format!("{space}/{name}"), "-"]);
            assert!(got.status.success());
            assert_eq!(&got.stdout, content, "{space}/{name}");
        }
    }
}
