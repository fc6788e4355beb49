//! Power cuts, simulated at the block device: a real `seeder serve` and a real member home live
//! on one ext4 file system on a loop device whose backing file is a [`CutDisk`] — a drive with
//! a volatile write cache that only flushes make durable. A member puts files and syncs them to
//! the seeder, again and again; the power is "cut" right after each acknowledgement (the put's
//! exit, the seeder's "stored on") and at random moments in between: the disk as it would be
//! after the cut (every flushed block, a random half of the cached ones) is kept as an image.
//! Then each image goes through what the appliance does at boot — `e2fsck -p`, mount, open the
//! store and the home — and every acknowledged entry and file must be there, verified.
//!
//! Prints `power_cuts N` and `acked_entries_lost N`. Needs root, loop devices, /dev/fuse and
//! fusermount3: without them it says so and passes, except under CI.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/cut_disk.rs"]
mod cut_disk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_udp_port, tool, Member, Seeder};
use cut_disk::CutDisk;
use rand::{Rng, SeedableRng};

/// Disk size: room for the file system, the seeder's data and the home, never full here.
const DISK_BYTES: u64 = 256 << 20;
/// put + sync rounds; each gives two cuts at acknowledgements.
const ROUNDS: usize = 16;
/// Random cuts come this often (uniform in between), while the rounds run.
const RANDOM_CUT_MS: std::ops::Range<u64> = 150..600;

fn usable() -> Result<(), String> {
    if !common::is_root() {
        return Err("needs root (loop devices, mounts)".into());
    }
    for tool in ["losetup", "mkfs.ext4", "e2fsck", "fusermount3"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Err(format!("needs {tool}"));
        }
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("needs /dev/fuse".into());
    }
    Ok(())
}

/// What had been acknowledged when a cut was taken.
#[derive(Clone, Default)]
struct Acked {
    /// Files the member's `put` reported done: path and BLAKE3 of the content.
    files: Vec<(String, [u8; 32])>,
    /// Entries of the member's feed the seeder said it stores.
    entries: u64,
}

struct Cut {
    image: PathBuf,
    acked: Acked,
    why: &'static str,
}

/// Mounts undone in reverse order on drop, also when the test fails.
struct Mounts(Vec<PathBuf>, Option<String>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        if let Some(lo) = &self.1 {
            let _ = Command::new("losetup").args(["-d", lo]).status();
        }
    }
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    let mut out = vec![0u8; len];
    h.finalize_xof().fill(&mut out);
    out
}

#[test]
fn nothing_acknowledged_is_lost_when_the_power_is_cut() {
    if let Err(why) = usable() {
        common::skip(why.trim_start_matches("needs "));
        return;
    }
    let seed: u64 = std::env::var("SEEDER_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("power-cut seed {seed} (SEEDER_POWER_CUT_SEED={seed} replays the choices)");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cuts_dir = t.join("cuts");
    std::fs::create_dir_all(&cuts_dir).unwrap();

    let mounted = CutDisk::mount(&t.join("fuse"), DISK_BYTES, seed);
    let disk = mounted.disk.clone();
    let loop_dev = tool(
        "losetup",
        &["--find", "--show", mounted.file.to_str().unwrap()],
    )
    .trim()
    .to_string();
    let mut mounts = Mounts(Vec::new(), Some(loop_dev.clone()));
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
            &loop_dev,
        ],
    );
    let mnt = t.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    tool("mount", &[&loop_dev, mnt.to_str().unwrap()]);
    mounts.0.push(mnt.clone());

    let port = free_udp_port();
    let seeder = Seeder::start(&mnt.join("seeder"), port);
    let member = Member(mnt.join("home"));
    member.ok(&["space", "create", "office"]);
    let code = member.last(&["space", "seed-code", "office"]);
    seeder.ctl(&["space", "add", &code, "--name", "office"]);
    let peer = seeder.peer();

    let acked = Arc::new(Mutex::new(Acked::default()));
    let cuts = Arc::new(Mutex::new(Vec::<Cut>::new()));
    let take_cut = {
        let disk = disk.clone();
        let acked = acked.clone();
        let cuts = cuts.clone();
        let dir = cuts_dir.clone();
        move |why: &'static str| {
            // What was acknowledged before the cut: read first, then cut.
            let before = acked.lock().unwrap().clone();
            let mut cuts = cuts.lock().unwrap();
            let image = dir.join(format!("cut-{}.img", cuts.len()));
            disk.cut(&image);
            cuts.push(Cut {
                image,
                acked: before,
                why,
            });
        }
    };

    // Random cuts while the member works.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cutter = {
        let stop = stop.clone();
        let take_cut = take_cut.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.gen_range(RANDOM_CUT_MS)));
                take_cut("at a random moment");
            }
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let len = rng.gen_range(1..=300 * 1024);
        let bytes = content(seed ^ round as u64, len);
        let local = t.join(format!("local-{round}"));
        std::fs::write(&local, &bytes).unwrap();
        let path = format!("docs/file-{round}.bin");
        member.ok(&["put", "office", local.to_str().unwrap(), &path]);
        acked
            .lock()
            .unwrap()
            .files
            .push((path, *blake3::hash(&bytes).as_bytes()));
        take_cut("after a put returned");

        let out = member.ok(&[
            "sync",
            "office",
            "--peer",
            &peer,
            "--once",
            "--timeout",
            "60",
        ]);
        acked.lock().unwrap().entries = common::stored_entries(&out);
        take_cut("after the seeder acknowledged");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    cutter.join().unwrap();
    let workload_s = started.elapsed().as_secs_f64();
    drop(seeder);
    drop(mounts);
    drop(mounted);
    let (flushes, writes) = disk.counts();
    eprintln!("workload {workload_s:.1} s, {writes} writes, {flushes} flushes");

    // Every cut, recovered as the appliance would at boot.
    let cuts = std::mem::take(&mut *cuts.lock().unwrap());
    let mut lost = 0u64;
    let check_mnt = t.join("check");
    std::fs::create_dir_all(&check_mnt).unwrap();
    for (n, cut) in cuts.iter().enumerate() {
        lost += check_cut(n, cut, &check_mnt);
        std::fs::remove_file(&cut.image).unwrap();
    }
    println!("power_cuts {} count", cuts.len());
    println!("acked_entries_lost {lost} count");
    assert!(cuts.len() >= 30, "only {} cuts", cuts.len());
    assert_eq!(lost, 0, "acknowledged data was lost in a power cut");
}

/// Recover one cut and count what it lost of what was acknowledged before it.
fn check_cut(n: usize, cut: &Cut, mnt: &Path) -> u64 {
    let image = cut.image.to_str().unwrap();
    let fsck = Command::new("e2fsck").args(["-p", image]).output().unwrap();
    // 0: clean, 1: errors fixed, 2: fixed, reboot wanted. 4 and up: a human is needed.
    let code = fsck.status.code().unwrap_or(-1);
    assert!(
        (0..=2).contains(&code),
        "cut {n} ({}): e2fsck -p needs a human (exit {code}): {}{}",
        cut.why,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    tool("mount", &["-o", "loop", image, mnt.to_str().unwrap()]);
    let _unmount = Mounts(vec![mnt.to_path_buf()], None);
    let mut lost = 0;

    // The seeder's store: every acknowledged entry of the member's feed, verified.
    let home = seeder::fs::home::Home::open(mnt.join("home"))
        .unwrap_or_else(|e| panic!("cut {n} ({}): the home does not open: {e}", cut.why));
    let feed = home
        .spaces()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "office")
        .unwrap_or_else(|| panic!("cut {n} ({}): the space is gone from the home", cut.why))
        .own_feed;
    {
        let store =
            seeder::store::Store::open(mnt.join("seeder"), &seeder::store::StoreConfig::default())
                .unwrap_or_else(|e| {
                    panic!(
                        "cut {n} ({}): the seeder's store does not open: {e}",
                        cut.why
                    )
                });
        let registry = seeder::daemon::registry::Registry::open(&store).unwrap();
        let office = registry.space_named("office").unwrap();
        let held = store.feed(&feed).unwrap().map_or(0, |s| s.length);
        if held < cut.acked.entries {
            eprintln!(
                "cut {n} ({}): the seeder acknowledged {} entries, holds {held}",
                cut.why, cut.acked.entries
            );
            lost += cut.acked.entries - held;
        }
        if held > 0 {
            assert!(
                registry.member(&office.address, &feed).unwrap().is_some(),
                "cut {n} ({}): entries held without the feed's certificate",
                cut.why
            );
            let state = store.feed(&feed).unwrap().unwrap();
            let head = state
                .head
                .clone()
                .expect("held entries have a head")
                .verify()
                .unwrap();
            assert_eq!(
                head.length(),
                held,
                "cut {n}: nothing past the committed head"
            );
            let mut reader = store.reader(&feed).unwrap();
            for i in 0..held {
                reader
                    .read(i)
                    .unwrap_or_else(|e| panic!("cut {n} ({}): entry {i}: {e}", cut.why));
            }
            assert_eq!(store.root_at(&feed, held).unwrap(), *head.root());
        }
    }

    // The member's files, read back through the merged view.
    let space = home.space("office").unwrap();
    let view = space.view().unwrap();
    for (path, hash) in &cut.acked.files {
        let p = seeder::fs::Path::new(path).unwrap();
        let Some(file) = view.get(&p).cloned() else {
            eprintln!("cut {n} ({}): the member's {path} is gone", cut.why);
            lost += 1;
            continue;
        };
        let mut bytes = Vec::new();
        space.read_content(&file, &mut bytes).unwrap();
        if blake3::hash(&bytes).as_bytes() != hash {
            eprintln!("cut {n} ({}): the member's {path} differs", cut.why);
            lost += 1;
        }
    }
    lost
}
