//! Crash safety of the store with real processes: a child process appends random-sized entries
//! and prints each acknowledged length; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that every acknowledged entry is there byte for byte and
//! verifies, and that nothing past the committed head is visible. The child is this same test
//! binary, re-run with `SEEDER_CRASH_CHILD` set so that only `crash_child` does anything.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use seeder::feed::{self, write_batch, FeedKey};
use seeder::store::{Store, StoreConfig, StoreError};

const CHILD_ENV: &str = "SEEDER_CRASH_CHILD";
/// Upper bound on a child's work if nobody kills it, so a broken parent can't leave it running.
const CHILD_MAX_BATCHES: usize = 5_000;
/// Entry sizes are drawn from 0..=this; small enough that 100 iterations stay fast.
const MAX_ENTRY: usize = 24 * 1024;

fn writer_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// Entry `i`'s bytes: a pure function of `i`, so the parent can check them.
fn entry(i: u64) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(b"crash test entry");
    h.update(&i.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut len = [0u8; 8];
    xof.fill(&mut len);
    let len = (u64::from_le_bytes(len) % (MAX_ENTRY as u64 + 1)) as usize;
    let mut out = vec![0u8; len];
    xof.fill(&mut out);
    out
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only does something when run by the parent below.
    };
    let seed: u64 = std::env::var("SEEDER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let store = Store::open(&dir, &StoreConfig::default()).expect("child opens store");
    let sk = writer_key();
    let feed = FeedKey::from(&sk);
    let mut frontier = store.frontier(&feed).unwrap_or_default();
    for _ in 0..CHILD_MAX_BATCHES {
        let start = frontier.len();
        let n = rng.gen_range(1..=6u64);
        let entries = (start..start + n).map(entry).collect();
        let batch = write_batch(&sk, &mut frontier, entries).expect("batch");
        let length = store.append(batch).expect("append");
        println!("acked {length}");
    }
}

fn check(dir: &Path, acked: u64) -> u64 {
    let store = Store::open(dir, &StoreConfig::default()).expect("reopen after kill");
    let feed = FeedKey::from(&writer_key());
    let Some(state) = store.feed(&feed).expect("state") else {
        assert_eq!(acked, 0, "acknowledged entries vanished with their feed");
        return 0;
    };
    assert!(
        state.length >= acked,
        "acknowledged {acked} entries, only {} survived",
        state.length
    );
    let head = state.head.clone().expect("a written feed has a head");
    assert_eq!(head.length, state.length, "nothing past the committed head");
    let verified = head.clone().verify().expect("stored head verifies");
    let mut reader = store.reader(&feed).expect("reader");
    let mut bytes = 0u64;
    let mut tree = feed::Frontier::new();
    for i in 0..state.length {
        let got = reader.read(i).expect("entry reads and verifies");
        assert_eq!(got, entry(i), "entry {i} differs");
        bytes += got.len() as u64;
        tree.push(feed::leaf_hash(&got), |_, _| {});
    }
    assert_eq!(
        tree.root(),
        *verified.root(),
        "entries match the signed root"
    );
    assert_eq!(state.bytes, bytes);
    assert!(matches!(
        store.read(&feed, state.length),
        Err(StoreError::OutOfRange { .. })
    ));
    let hex = feed.to_hex();
    let file = dir
        .join("feeds")
        .join(&hex[..2])
        .join(format!("{hex}.data"));
    assert_eq!(
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
        bytes,
        "no uncommitted bytes left in the data file"
    );
    assert!(store.damage().expect("damage").is_empty());
    state.length
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let iterations: usize = std::env::var("SEEDER_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("SEEDER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set SEEDER_CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut stored = 0;
    for iteration in 0..iterations {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("SEEDER_CRASH_SEED", rng.gen::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let wait_for = rng.gen_range(0..12);
        let mut acked = 0u64;
        let mut seen = 0;
        while seen < wait_for {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(n) = line.strip_prefix("acked ") {
                        acked = n.parse().expect("child prints numbers");
                        seen += 1;
                    }
                }
                _ => break,
            }
        }
        // Not synchronisation: a random extra delay moves the kill to a random point inside
        // the child's next append (write, fdatasync, index batch, flush).
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..4000)));
        child.kill().expect("SIGKILL the child");
        // Acknowledgements printed before the kill may still be in the pipe.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse().expect("child prints numbers");
            }
        }
        child.wait().expect("reap child");
        stored = check(dir.path(), acked.max(stored));
        if iteration % 20 == 0 {
            eprintln!("iteration {iteration}: {stored} entries stored");
        }
    }
    assert!(stored > 0, "the children never got anything stored");
}
