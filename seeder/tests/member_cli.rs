//! The member command line, end to end: real `seeder` processes on homes in temporary folders,
//! exchanging bundles. Checks the contract other parts rely on (codes alone on the last line,
//! exit codes) and the behaviours people rely on (convergence, conflicts kept, tampered
//! bundles refused, nothing readable in the data files).

// A panic is how a test fails: unwrapping is fine in this file's helpers too.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Device {
    home: PathBuf,
}

fn seeder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seeder"))
}

impl Device {
    fn new(root: &Path, name: &str) -> Device {
        Device {
            home: root.join(name),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        seeder()
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run seeder")
    }

    /// Run in the folder `cwd` (for relative local paths).
    fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        seeder()
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .expect("run seeder")
    }

    /// Run, expect success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "seeder {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Run, expect failure with `code`, return stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "seeder {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).expect("utf-8 output")
    }

    fn put_text(&self, space: &str, path: &str, text: &str, scratch: &Path) {
        let local = scratch.join(format!("put-{}", rand::random::<u64>()));
        std::fs::write(&local, text).expect("write local file");
        self.ok(&["put", space, local.to_str().expect("utf-8 path"), path]);
    }

    fn cat(&self, space: &str, path: &str) -> String {
        self.ok(&["get", space, path, "-"])
    }

    fn ls(&self, space: &str) -> String {
        self.ok(&["ls", space, "--recursive"])
    }

    fn export(&self, space: &str, file: &Path) {
        self.ok(&[
            "bundle",
            "export",
            space,
            file.to_str().expect("utf-8 path"),
        ]);
    }

    fn import(&self, file: &Path) {
        self.ok(&["bundle", "import", file.to_str().expect("utf-8 path")]);
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().expect("some output")
}

/// Three devices of one space, each joined from the first's invite.
fn three(root: &Path) -> (Device, Device, Device) {
    let a = Device::new(root, "a");
    let b = Device::new(root, "b");
    let c = Device::new(root, "c");
    let address = a.ok(&["space", "create", "office", "--open"]);
    assert_eq!(last_line(&address).len(), 64, "address is 64 hex chars");
    let invite = a.ok(&["space", "invite", "office"]);
    let invite = last_line(&invite);
    assert!(invite.starts_with("invite-"));
    for d in [&b, &c] {
        let joined = d.ok(&["space", "join", invite, "--name", "office"]);
        assert_eq!(last_line(&joined), last_line(&address));
    }
    (a, b, c)
}

/// Every device sends a bundle to every other.
fn exchange(devices: &[&Device], scratch: &Path) {
    let files: Vec<PathBuf> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let f = scratch.join(format!("bundle-{i}-{}", rand::random::<u64>()));
            d.export("office", &f);
            f
        })
        .collect();
    for (i, d) in devices.iter().enumerate() {
        for (j, f) in files.iter().enumerate() {
            if i != j {
                d.import(f);
            }
        }
    }
}

#[test]
fn files_round_trip_and_survive_moves_and_deletes() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let local = root.path().join("big.bin");
    std::fs::write(&local, &big).unwrap();
    a.ok(&["put", "office", local.to_str().unwrap(), "docs/big.bin"]);
    let out = root.path().join("out.bin");
    a.ok(&["get", "office", "docs/big.bin", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), big);

    a.put_text("office", "notes.txt", "hello", root.path());
    assert_eq!(a.ls("office"), "docs/big.bin\nnotes.txt\n");
    assert_eq!(a.ok(&["ls", "office"]), "docs/\nnotes.txt\n");
    a.ok(&["mv", "office", "notes.txt", "docs/notes.txt"]);
    assert_eq!(a.cat("office", "docs/notes.txt"), "hello");
    a.ok(&["rm", "office", "docs/big.bin"]);
    assert_eq!(a.ls("office"), "docs/notes.txt\n");
    let long = a.ok(&["ls", "office", "docs", "--long"]);
    assert!(
        long.contains("notes.txt") && long.contains("\t5\t"),
        "{long}"
    );
    let log = a.ok(&["log", "office"]);
    assert!(log.contains("docs/big.bin") && log.contains("rm"), "{log}");
}

#[test]
fn a_folder_is_put_recursively() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let dir = root.path().join("project");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), "A").unwrap();
    std::fs::write(dir.join("sub/b.txt"), "B").unwrap();
    a.ok(&["put", "office", dir.to_str().unwrap()]);
    assert_eq!(a.ls("office"), "project/a.txt\nproject/sub/b.txt\n");
    assert_eq!(a.cat("office", "project/sub/b.txt"), "B");
}

#[test]
fn names_with_control_characters_are_refused_before_anything_is_written() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let dir = root.path().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "A").unwrap();
    std::fs::write(dir.join("two\nlines.txt"), "B").unwrap();
    let err = a.fails(2, &["put", "office", dir.to_str().unwrap()]);
    assert!(err.contains("control character"), "{err}");
    assert!(
        err.contains("two\\nlines.txt"),
        "the name is shown escaped: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(a.ls("office"), "", "nothing of the folder was written");
    // A name typed with an escape sequence in it is refused too.
    let one = root.path().join("one.txt");
    std::fs::write(&one, "C").unwrap();
    let err = a.fails(
        2,
        &["put", "office", one.to_str().unwrap(), "x\u{1b}[2J.txt"],
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn concurrent_edits_converge_and_the_loser_stays_readable() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = three(root.path());
    a.put_text("office", "plan.txt", "v1", root.path());
    exchange(&[&a, &b, &c], root.path());
    // Offline, a and b both edit; c only watches.
    a.put_text("office", "plan.txt", "from a", root.path());
    b.put_text("office", "plan.txt", "from b", root.path());
    exchange(&[&a, &b, &c], root.path());
    let winner = a.cat("office", "plan.txt");
    assert!(winner == "from a" || winner == "from b");
    for d in [&b, &c] {
        assert_eq!(d.cat("office", "plan.txt"), winner);
        assert_eq!(d.ls("office"), a.ls("office"));
    }
    let conflicts = c.ok(&["conflicts", "office"]);
    assert_eq!(conflicts.lines().count(), 1, "{conflicts}");
    let id = conflicts
        .split_whitespace()
        .next()
        .expect("a version id first");
    let loser = c.ok(&["get", "office", "plan.txt", "-", "--version", id]);
    assert_eq!(
        loser,
        if winner == "from a" {
            "from b"
        } else {
            "from a"
        }
    );
    assert_eq!(a.ok(&["conflicts", "office"]), conflicts);
}

#[test]
fn an_edit_concurrent_with_a_delete_wins() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = three(root.path());
    a.put_text("office", "keep.txt", "v1", root.path());
    exchange(&[&a, &b, &c], root.path());
    a.ok(&["rm", "office", "keep.txt"]);
    b.put_text("office", "keep.txt", "v2", root.path());
    exchange(&[&a, &b, &c], root.path());
    for d in [&a, &b, &c] {
        assert_eq!(d.cat("office", "keep.txt"), "v2");
        let conflicts = d.ok(&["conflicts", "office", "keep.txt"]);
        assert!(conflicts.contains("keep.txt"), "{conflicts}");
    }
}

#[test]
fn rename_concurrent_with_an_edit_keeps_both() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = three(root.path());
    a.put_text("office", "draft.txt", "v1", root.path());
    exchange(&[&a, &b, &c], root.path());
    a.ok(&["mv", "office", "draft.txt", "final.txt"]);
    b.put_text("office", "draft.txt", "v2", root.path());
    exchange(&[&a, &b, &c], root.path());
    for d in [&a, &b, &c] {
        assert_eq!(d.cat("office", "draft.txt"), "v2");
        assert_eq!(d.cat("office", "final.txt"), "v1");
    }
}

#[test]
fn delete_then_recreate_has_no_conflict() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = three(root.path());
    a.put_text("office", "x.txt", "one", root.path());
    exchange(&[&a, &b, &c], root.path());
    b.ok(&["rm", "office", "x.txt"]);
    exchange(&[&a, &b, &c], root.path());
    c.put_text("office", "x.txt", "two", root.path());
    exchange(&[&a, &b, &c], root.path());
    for d in [&a, &b, &c] {
        assert_eq!(d.cat("office", "x.txt"), "two");
        assert_eq!(d.ok(&["conflicts", "office"]), "");
    }
}

#[test]
fn bundles_in_any_order_give_identical_views() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = three(root.path());
    a.put_text("office", "shared.txt", "a1", root.path());
    b.put_text("office", "shared.txt", "b1", root.path());
    c.put_text("office", "only-c.txt", "c1", root.path());
    b.ok(&["rm", "office", "shared.txt"]);
    let fa = root.path().join("a.bundle");
    let fb = root.path().join("b.bundle");
    let fc = root.path().join("c.bundle");
    a.export("office", &fa);
    b.export("office", &fb);
    c.export("office", &fc);
    // a hears b then c; c hears a then b (and b's bundle twice); b hears c then a.
    a.import(&fb);
    a.import(&fc);
    c.import(&fa);
    c.import(&fb);
    c.import(&fb);
    b.import(&fc);
    b.import(&fa);
    let view = a.ls("office");
    assert_eq!(b.ls("office"), view);
    assert_eq!(c.ls("office"), view);
    let conflicts = a.ok(&["conflicts", "office"]);
    assert_eq!(b.ok(&["conflicts", "office"]), conflicts);
    assert_eq!(c.ok(&["conflicts", "office"]), conflicts);
}

#[test]
fn tampered_bundles_and_other_spaces_are_refused_and_import_nothing() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    let b = Device::new(root.path(), "b");
    a.ok(&["space", "create", "office", "--open"]);
    let invite = a.ok(&["space", "invite", "office"]);
    b.ok(&["space", "join", last_line(&invite), "--name", "office"]);
    a.put_text("office", "a.txt", &"payload ".repeat(1000), root.path());
    let good = root.path().join("good.bundle");
    a.export("office", &good);
    let bytes = std::fs::read(&good).unwrap();
    // One byte changed anywhere: sample evenly, plus the first and last bytes.
    let mut spots: Vec<usize> = (0..bytes.len()).step_by(bytes.len() / 97 + 1).collect();
    spots.push(bytes.len() - 1);
    for spot in spots {
        let mut t = bytes.clone();
        t[spot] ^= 0x04;
        let bad = root.path().join("bad.bundle");
        std::fs::write(&bad, &t).unwrap();
        let out = b.run(&["bundle", "import", bad.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "byte {spot} changed and still imported"
        );
        assert!(
            matches!(out.status.code(), Some(3) | Some(2)),
            "byte {spot}"
        );
        assert_eq!(b.ls("office"), "", "byte {spot}: something was imported");
    }
    // A bundle of a space b hasn't joined.
    let other = Device::new(root.path(), "other");
    other.ok(&["space", "create", "elsewhere", "--open"]);
    other.put_text("elsewhere", "x", "x", root.path());
    let foreign = root.path().join("foreign.bundle");
    other.export("elsewhere", &foreign);
    let msg = b.fails(3, &["bundle", "import", foreign.to_str().unwrap()]);
    assert!(msg.contains("has not joined"), "{msg}");
    // The good one still imports.
    b.import(&good);
    assert_eq!(b.ls("office"), "a.txt\n");
}

#[test]
fn import_killed_midway_leaves_a_consistent_home() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    let b = Device::new(root.path(), "b");
    a.ok(&["space", "create", "office", "--open"]);
    let invite = a.ok(&["space", "invite", "office"]);
    b.ok(&["space", "join", last_line(&invite), "--name", "office"]);
    let big: Vec<u8> = (0..6_000_000u32).map(|i| (i * 7) as u8).collect();
    let local = root.path().join("big");
    std::fs::write(&local, &big).unwrap();
    for i in 0..4 {
        a.ok(&["put", "office", local.to_str().unwrap(), &format!("big{i}")]);
    }
    let bundle = root.path().join("big.bundle");
    a.export("office", &bundle);
    for attempt in 0..5u64 {
        let mut child = seeder()
            .arg("--home")
            .arg(&b.home)
            .args(["bundle", "import", bundle.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Not synchronisation: a varying delay lands the kill at different points of the
        // import (checking pass, merging pass, or after).
        std::thread::sleep(std::time::Duration::from_millis(30 + 40 * attempt));
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever was merged is consistent: listing works and every listed file reads whole.
        let listed = b.ls("office");
        for name in listed.lines() {
            let out = root.path().join("check");
            b.ok(&["get", "office", name, out.to_str().unwrap(), "--force"]);
            assert_eq!(std::fs::read(&out).unwrap(), big, "{name}");
        }
    }
    b.import(&bundle);
    assert_eq!(b.ls("office"), "big0\nbig1\nbig2\nbig3\n");
}

#[test]
fn nothing_readable_reaches_the_data_files() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let marker = "MARKER-7f3a9c-plaintext";
    a.put_text(
        "office",
        "secret-folder/secret-name.txt",
        marker,
        root.path(),
    );
    a.ok(&[
        "mv",
        "office",
        "secret-folder/secret-name.txt",
        "renamed-secret.txt",
    ]);
    let mut data = Vec::new();
    collect_files(&a.home.join("store/feeds"), &mut data);
    assert!(!data.is_empty(), "the data files exist");
    for file in data {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [marker, "secret-folder", "secret-name", "renamed-secret"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} found in {}",
                file.display()
            );
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            collect_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[test]
fn mistakes_get_messages_and_exit_codes_a_person_can_act_on() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    let msg = a.fails(1, &["ls", "nowhere"]);
    assert!(msg.contains("no space named \"nowhere\""), "{msg}");
    a.ok(&["space", "create", "office", "--open"]);
    let msg = a.fails(1, &["get", "office", "missing.txt", "-"]);
    assert!(msg.contains("missing.txt"), "{msg}");
    let invite = a.ok(&["space", "invite", "office"]);
    let invite = last_line(&invite).to_string();
    let mut typo: Vec<char> = invite.chars().collect();
    let i = typo.len() - 3;
    typo[i] = if typo[i] == 'x' { 'y' } else { 'x' };
    let typo: String = typo.into_iter().collect();
    let b = Device::new(root.path(), "b");
    let msg = b.fails(2, &["space", "join", &typo, "--name", "office"]);
    assert!(msg.contains("typo"), "{msg}");
    let seed = a.ok(&["space", "seed-code", "office"]);
    let msg = b.fails(2, &["space", "join", last_line(&seed), "--name", "office"]);
    assert!(msg.contains("seed code, not an invite code"), "{msg}");
    let msg = a.fails(2, &["space", "create", "office", "--open"]);
    assert!(msg.contains("already exists"), "{msg}");
    let msg = a.fails(2, &["put", "office", "/etc/hostname", "../escape"]);
    assert!(msg.contains("escape") || msg.contains(".."), "{msg}");
    let not_bundle = root.path().join("nope");
    std::fs::write(&not_bundle, "hello").unwrap();
    let msg = a.fails(3, &["bundle", "import", not_bundle.to_str().unwrap()]);
    assert!(msg.contains("not a seeder bundle"), "{msg}");
}

/// A folder of `project/a.txt` (1 byte), `project/sub/b.txt` and `project/sub/deeper/c.bin`.
fn project(root: &Path) -> PathBuf {
    let dir = root.join("project");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("a.txt"), "A").unwrap();
    std::fs::write(dir.join("sub/b.txt"), "BB").unwrap();
    std::fs::write(dir.join("sub/deeper/c.bin"), vec![3u8; 200_000]).unwrap();
    dir
}

#[test]
fn a_folder_put_prints_one_summary_line_with_bytes_and_no_line_per_file() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let dir = project(root.path());
    let out = a.run(&["put", "office", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not one per file: {stdout}");
    assert!(
        lines[0].starts_with("put 3 files, 195.3 KiB in ") && lines[0].contains(" s ("),
        "{stdout}"
    );
    assert!(
        !stdout.contains("a.txt") && !stderr.contains("a.txt"),
        "{stdout}{stderr}"
    );
    // Not a terminal: no progress bar drawn on stderr.
    assert!(!stderr.contains('\r') && !stderr.contains('['), "{stderr}");
}

#[test]
fn a_folder_is_got_whole_into_a_local_folder_with_clean_paths() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let dir = project(root.path());
    a.ok(&["put", "office", dir.to_str().unwrap(), "many"]);
    let out = a.run_in(root.path(), &["get", "office", "many", "./got"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    for f in ["a.txt", "sub/b.txt", "sub/deeper/c.bin"] {
        assert_eq!(
            std::fs::read(root.path().join("got").join(f)).unwrap(),
            std::fs::read(dir.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(stderr.lines().count(), 1, "one closing line: {stderr}");
    assert!(stderr.starts_with("got 3 files, 195.3 KiB in "), "{stderr}");
    let got = root.path().join("got");
    assert!(stderr.contains(got.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("/./"), "{stderr}");

    // A subfolder, to the default place: its name in the current folder.
    let out = a.run_in(root.path(), &["get", "office", "many/sub"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(root.path().join("sub/b.txt")).unwrap(), b"BB");

    // A single file's line names the local path as a person would write it.
    let out = a.run_in(root.path(), &["get", "office", "many/a.txt", "./one.txt"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let one = root.path().join("one.txt");
    assert!(stderr.contains(&format!("→ {}", one.display())), "{stderr}");
    assert!(!stderr.contains("/./"), "{stderr}");
    // A trailing slash names a folder: into it, and never a file of that name.
    let out = a.run_in(
        root.path(),
        &["get", "office", "many/a.txt", "./got/./", "--force"],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("→ {}", got.join("a.txt").display())),
        "{stderr}"
    );
    let msg = a.fails(
        2,
        &[
            "get",
            "office",
            "many/a.txt",
            &format!("{}/", root.path().join("nowhere").display()),
        ],
    );
    assert!(msg.contains("nowhere/a.txt"), "{msg}");
    assert!(!root.path().join("nowhere").exists());
}

#[test]
fn get_refuses_to_replace_an_existing_file_without_force_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let dir = project(root.path());
    a.ok(&["put", "office", dir.to_str().unwrap(), "many"]);

    let mine = root.path().join("mine.txt");
    std::fs::write(&mine, "my own words").unwrap();
    let msg = a.fails(2, &["get", "office", "many/a.txt", mine.to_str().unwrap()]);
    assert!(
        msg.contains(mine.to_str().unwrap()) && msg.contains("--force"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my own words");

    // A folder with one file in the way: nothing at all is written.
    let got = root.path().join("got");
    std::fs::create_dir_all(got.join("sub")).unwrap();
    std::fs::write(got.join("sub/b.txt"), "mine").unwrap();
    let msg = a.fails(2, &["get", "office", "many", got.to_str().unwrap()]);
    assert!(
        msg.contains("sub/b.txt") && msg.contains("--force"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(got.join("sub/b.txt")).unwrap(),
        "mine"
    );
    assert!(!got.join("a.txt").exists(), "nothing written");
    let names: Vec<_> = std::fs::read_dir(got.join("sub")).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left behind");

    // With --force both are replaced.
    a.ok(&[
        "get",
        "office",
        "many/a.txt",
        mine.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "A");
    a.ok(&["get", "office", "many", got.to_str().unwrap(), "--force"]);
    assert_eq!(
        std::fs::read_to_string(got.join("sub/b.txt")).unwrap(),
        "BB"
    );
    assert_eq!(std::fs::read_to_string(got.join("a.txt")).unwrap(), "A");
}

#[test]
fn a_failed_get_names_the_asked_for_path_and_no_temporary_file() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let dir = project(root.path());
    a.ok(&["put", "office", dir.to_str().unwrap(), "many"]);
    // A file where a folder should be: the write can't even start.
    let blocker = root.path().join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let target = blocker.join("out.txt");
    // A bad path: exit code 2.
    let msg = a.fails(
        2,
        &["get", "office", "many/a.txt", target.to_str().unwrap()],
    );
    assert!(msg.contains(target.to_str().unwrap()), "{msg}");
    // The test's own folder is a temporary one: look past it for a temporary file's name.
    let here = root.path().to_str().unwrap();
    let rest = msg.replace(here, "ROOT");
    assert!(
        !rest.contains(".tmp") && !rest.contains("seeder-partial") && !rest.contains("/./"),
        "{msg}"
    );
    // Same for a folder get below it.
    let out = a.run(&[
        "get",
        "office",
        "many",
        blocker.join("got").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let msg = String::from_utf8(out.stderr).unwrap();
    assert!(msg.contains(blocker.to_str().unwrap()), "{msg}");
    let rest = msg.replace(here, "ROOT");
    assert!(
        !rest.contains(".tmp") && !rest.contains("seeder-partial"),
        "{msg}"
    );
    // And a folder asked for on stdout is refused as bad input.
    let msg = a.fails(2, &["get", "office", "many", "-"]);
    assert!(msg.contains("is a folder"), "{msg}");
}

#[test]
fn a_folder_get_never_writes_through_a_link_or_past_a_file_in_the_destination() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let dir = project(root.path());
    a.ok(&["put", "office", dir.to_str().unwrap(), "many"]);
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let got = root.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    std::os::unix::fs::symlink(&outside, got.join("sub")).unwrap();
    for force in [false, true] {
        let mut args = vec!["get", "office", "many", got.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let msg = a.fails(2, &args);
        assert!(msg.contains("sub") && msg.contains("in the way"), "{msg}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{msg}");
        assert!(
            !got.join("a.txt").exists(),
            "checked before anything is written"
        );
    }
}

#[test]
fn get_never_replaces_a_device_or_a_pipe_and_an_interrupted_get_leaves_no_temporary_file() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let big = root.path().join("big.bin");
    // Large enough that a get is still writing when it is interrupted.
    std::fs::write(&big, vec![7u8; 48 << 20]).unwrap();
    a.ok(&["put", "office", big.to_str().unwrap(), "big.bin"]);
    let note = root.path().join("note.txt");
    std::fs::write(&note, b"a note").unwrap();
    a.ok(&["put", "office", note.to_str().unwrap(), "note.txt"]);

    let pipe = root.path().join("pipe");
    assert!(Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap()
        .success());
    let msg = a.fails(
        2,
        &[
            "get",
            "office",
            "note.txt",
            pipe.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(msg.contains("not a regular file"), "{msg}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&pipe)
        .unwrap()
        .file_type()
        .is_fifo());

    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut get = seeder()
        .arg("--home")
        .arg(&a.home)
        .args(["get", "office", "big.bin"])
        .arg(out.join("big.bin"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let temporary = || {
        std::fs::read_dir(&out)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut caught = false;
    while std::time::Instant::now() < deadline {
        if temporary() {
            caught = true;
            break;
        }
        if get.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-INT", &get.id().to_string()])
        .status()
        .unwrap();
    let ended = get.wait().unwrap();
    assert!(caught, "the get was never seen writing");
    if !out.join("big.bin").exists() {
        assert_eq!(ended.code(), Some(130), "{ended:?}");
    }
    assert!(!temporary(), "an interrupted get left its temporary file");
}

#[test]
fn the_whole_space_is_got_with_a_slash_and_a_trailing_slash_names_the_folder() {
    let root = tempfile::tempdir().unwrap();
    let a = Device::new(root.path(), "a");
    a.ok(&["space", "create", "office", "--open"]);
    let src = root.path().join("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    std::fs::write(src.join("docs/inner.txt"), b"inner").unwrap();
    a.ok(&[
        "put",
        "office",
        src.join("top.txt").to_str().unwrap(),
        "top.txt",
    ]);
    a.ok(&[
        "put",
        "office",
        src.join("docs/inner.txt").to_str().unwrap(),
        "docs/inner.txt",
    ]);
    let whole = root.path().join("whole");
    a.ok(&["get", "office", "/", whole.to_str().unwrap()]);
    assert_eq!(std::fs::read(whole.join("top.txt")).unwrap(), b"top");
    assert_eq!(
        std::fs::read(whole.join("docs/inner.txt")).unwrap(),
        b"inner"
    );
    let docs = root.path().join("d");
    a.ok(&["get", "office", "docs/", docs.to_str().unwrap()]);
    assert_eq!(std::fs::read(docs.join("inner.txt")).unwrap(), b"inner");
}
