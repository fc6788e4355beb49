/*!
`seeder bench …`: benchmarks that print figures, one `name value unit` line each, so scripts
and README tables can take them. They measure; they never assert a target.
*/

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use rand::RngCore;

use crate::feed::{write_batch, FeedKey, Frontier};
use crate::store::{Store, StoreConfig};

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Durable append, read+verify and a raw write+fdatasync baseline on the same disk.
    Store(StoreArgs),
    /// Member file layer: put and get of one large file, and the merged view of many paths
    /// written by several devices.
    Fs(FsArgs),
    /// Replication with a real `seeder serve` on loopback: member → seeder durable
    /// throughput against plain-QUIC and disk baselines, seeder memory, relay latency between
    /// two members, and restart time with many feeds held.
    Sync(super::bench_sync::SyncArgs),
    /// The admin page of a real `seeder serve` holding 1,000 feeds: render time of the
    /// dashboard and the spaces page over loopback HTTP, and the page weight.
    Admin(super::bench_admin::AdminArgs),
    /// A real `seeder serve` attacked while a member uploads: idle strangers, half-sent
    /// frames, stalled streams of a proven peer, floods of wrong logins; the member's upload
    /// time under each and the seeder's peak memory.
    Attack(super::bench_attack::AttackArgs),
    /// A governed space's membership log at its bound: checking every record, computing the
    /// membership, and the keys one device opens.
    Members(super::bench_members::MembersArgs),
}

#[derive(Debug, Args)]
pub struct FsArgs {
    /// Folder to work in (on the disk to measure). Default: the system's temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the file put and got, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Paths in the merged-view measurement.
    #[arg(long, default_value_t = 10_000)]
    paths: usize,
    /// Devices writing those paths, each its own home and feed.
    #[arg(long, default_value_t = 5)]
    devices: usize,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Folder to write in (on the disk to measure); a temporary folder inside it is removed
    /// afterwards. Default: the system's temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// MiB to write.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Entry size in KiB.
    #[arg(long, default_value_t = 64)]
    entry_kib: usize,
    /// Entries per durable batch (one fdatasync each, in both the store and the baseline).
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

/// A temporary folder for a benchmark inside `dir` (the disk to measure; default the system's
/// temporary folder), removed when dropped.
pub(super) fn work_dir(dir: Option<&std::path::Path>, prefix: &str) -> Result<tempfile::TempDir> {
    let base = dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a folder in {}", base.display()))
}

/// The runtime the network benchmarks drive their side on: two workers, as the board has.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn run(which: Bench) -> Result<()> {
    match which {
        Bench::Store(args) => store(args),
        Bench::Fs(args) => fs(args),
        Bench::Sync(args) => super::bench_sync::run(args),
        Bench::Admin(args) => super::bench_admin::run(args),
        Bench::Attack(args) => super::bench_attack::run(args),
        Bench::Members(args) => super::bench_members::run(args),
    }
}

/// Distinct entry contents without holding the whole data set in memory: a pool of random
/// blocks, each entry stamped with its index.
pub(super) struct Entries {
    pool: Vec<Vec<u8>>,
}

impl Entries {
    pub(super) fn new(entry_len: usize) -> Self {
        let mut rng = rand::thread_rng();
        let pool = (0..64)
            .map(|_| {
                let mut b = vec![0u8; entry_len];
                rng.fill_bytes(&mut b);
                b
            })
            .collect();
        Entries { pool }
    }

    pub(super) fn get(&self, i: u64) -> Vec<u8> {
        let mut e = self.pool[(i % self.pool.len() as u64) as usize].clone();
        let stamp = i.to_le_bytes();
        let n = stamp.len().min(e.len());
        e[..n].copy_from_slice(&stamp[..n]);
        e
    }
}

pub(super) fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

/// Batches of entries made on a second thread, at most two ahead (8 MiB in flight with the
/// defaults), the way a writer reads and encrypts the next batch while the previous is synced.
fn produce<T: Send>(
    count: u64,
    batch: usize,
    make: impl Fn(Vec<Vec<u8>>) -> Result<T> + Send,
    entries: &Entries,
    mut consume: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<T>>(2);
        scope.spawn(move || {
            let mut i = 0;
            while i < count {
                let n = (batch as u64).min(count - i);
                let b = (i..i + n).map(|j| entries.get(j)).collect();
                if tx.send(make(b)).is_err() {
                    return;
                }
                i += n;
            }
        });
        for item in rx {
            consume(item?)?;
        }
        Ok(())
    })
}

/// The raw baseline: the same bytes in the same batches, write + fdatasync to a plain file.
pub(super) fn raw_baseline(dir: &Path, entries: &Entries, count: u64, batch: usize) -> Result<f64> {
    let raw_path = dir.join("raw.data");
    let mut raw = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&raw_path)
        .with_context(|| format!("cannot create {}", raw_path.display()))?;
    let t = Instant::now();
    produce(count, batch, Ok, entries, |b| {
        for e in &b {
            raw.write_all(e)?;
        }
        raw.sync_data()?;
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    drop(raw);
    std::fs::remove_file(&raw_path)?;
    Ok(secs)
}

/// Durable appends through the store: hash and sign on the producer thread, then write,
/// fdatasync, index and flush. Returns the seconds taken, the store and the feed written.
fn store_append(
    dir: &Path,
    entries: &Entries,
    count: u64,
    batch: usize,
) -> Result<(f64, Store, FeedKey)> {
    let store = Store::open(dir, &StoreConfig::default())?;
    let sk = SigningKey::generate(&mut rand::rngs::OsRng);
    let feed = FeedKey::from(&sk);
    let frontier = std::sync::Mutex::new(Frontier::new());
    let t = Instant::now();
    produce(
        count,
        batch,
        |b| {
            let mut f = frontier.lock().expect("only the producer locks it");
            Ok(write_batch(&sk, &mut f, b)?)
        },
        entries,
        |b| {
            store.append(b)?;
            Ok(())
        },
    )?;
    Ok((t.elapsed().as_secs_f64(), store, feed))
}

fn store(args: StoreArgs) -> Result<()> {
    let tmp = work_dir(args.dir.as_deref(), "seeder-bench-")?;
    let entry_len = args.entry_kib * 1024;
    anyhow::ensure!(
        entry_len > 0 && entry_len <= crate::feed::MAX_ENTRY_LEN,
        "--entry-kib must be between 1 and {}",
        crate::feed::MAX_ENTRY_LEN / 1024
    );
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let count = (args.mib << 20) / entry_len as u64;
    let total = count * entry_len as u64;
    let entries = Entries::new(entry_len);

    // This disk's speed drifts between runs (allocation, the host's caches): run each side
    // twice, alternating, and keep each side's best.
    let raw1 = raw_baseline(tmp.path(), &entries, count, args.batch)?;
    let first = tmp.path().join("first");
    let (app1, store1, _) = store_append(&first, &entries, count, args.batch)?;
    drop(store1);
    std::fs::remove_dir_all(&first)?;
    let raw2 = raw_baseline(tmp.path(), &entries, count, args.batch)?;
    let (app2, store, feed) =
        store_append(&tmp.path().join("second"), &entries, count, args.batch)?;
    let raw_secs = raw1.min(raw2);
    let append_secs = app1.min(app2);

    // Read everything back, each entry checked against its stored hash, and the whole feed
    // against its signed root.
    let t = Instant::now();
    let mut reader = store.reader(&feed)?;
    let mut check = Frontier::new();
    let mut read = 0u64;
    for index in 0..reader.len() {
        let e = reader.read(index)?;
        read += e.len() as u64;
        check.push(crate::feed::leaf_hash(&e), |_, _| {});
    }
    let head = store
        .feed(&feed)?
        .and_then(|s| s.head)
        .context("the benchmark feed has no head")?
        .verify()?;
    anyhow::ensure!(check.root() == *head.root(), "read-back root differs");
    let verify_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(read == total, "read {read} of {total} bytes");

    let append = mb_s(total, append_secs);
    let raw = mb_s(total, raw_secs);
    println!("append_mb_s {append:.1} MB/s");
    println!("raw_mb_s {raw:.1} MB/s");
    println!("append_vs_raw {:.2} ratio", append / raw);
    println!("verify_mb_s {:.1} MB/s", mb_s(total, verify_secs));
    println!("peak_rss_mib {:.1} MiB", peak_rss_mib()?);
    println!("entries {count} count");
    println!("batch_entries {} count", args.batch);
    Ok(())
}

fn fs(args: FsArgs) -> Result<()> {
    use crate::fs::home::{FileMeta, Home, Rng};
    use crate::fs::{Mtime, Path as SpacePath};

    let tmp = work_dir(args.dir.as_deref(), "seeder-bench-")?;
    anyhow::ensure!(args.devices > 0, "--devices must be at least 1");
    let meta = FileMeta {
        mode: 0o644,
        mtime: Mtime::default(),
    };

    // One large file: put (read, chunk, encrypt, hash, durable appends) and get (read,
    // verify, decrypt, write), streaming both ways.
    let local = tmp.path().join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&local)?);
        let mut rng = rand::thread_rng();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..args.mib {
            rng.fill_bytes(&mut buf);
            f.write_all(&buf)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let total = args.mib << 20;
    let mut rng = Rng::default();
    let home = Home::open(tmp.path().join("home"))?;
    home.create_space("bench", &mut rng)?;
    let space = home.space("bench")?;
    let path = SpacePath::new("big.bin")?;
    let t = Instant::now();
    let mut file = std::fs::File::open(&local)?;
    let state = space.put(&path, &mut file, meta, &mut |_| {})?;
    let put_secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&local)?;
    let out_path = tmp.path().join("got.bin");
    let t = Instant::now();
    let mut out = std::fs::File::create(&out_path)?;
    let got = space.read_content(&state, &mut out)?;
    out.sync_all()?;
    let get_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == total, "got {got} of {total} bytes");
    std::fs::remove_file(&out_path)?;
    let rss = peak_rss_mib()?;
    drop(space);
    drop(home);

    // The merged view: `devices` homes each write their share of `paths` small files, all
    // feeds are gathered in one home by bundles, and the view is built from a fresh open.
    let invite = {
        let first = Home::open(tmp.path().join("dev0"))?;
        first.create_space("bench", &mut rng)?;
        first.invite("bench")?
    };
    let per = args.paths.div_ceil(args.devices);
    let mut bundles = Vec::new();
    for d in 0..args.devices {
        let home = Home::open(tmp.path().join(format!("dev{d}")))?;
        if d > 0 {
            home.join(&invite, "bench", &mut rng)?;
        }
        let space = home.space("bench")?;
        let files = (d * per..((d + 1) * per).min(args.paths))
            .map(|i| {
                let p = SpacePath::new(&format!("dir{:03}/file{i:06}.txt", i % 100))?;
                Ok((p, format!("file {i} from device {d}").into_bytes(), meta))
            })
            .collect::<Result<Vec<_>>>()?;
        space.put_small(files)?;
        if d > 0 {
            let b = tmp.path().join(format!("dev{d}.bundle"));
            let address = *space.address();
            home.export_bundle(&address, &b)?;
            bundles.push(b);
        }
    }
    {
        let home = Home::open(tmp.path().join("dev0"))?;
        let address = *home.space("bench")?.address();
        for b in &bundles {
            home.import_bundle(&address, b)?;
        }
        // First view after the import also classifies the new entries.
        let t = Instant::now();
        let n = home.space("bench")?.view()?.list_recursive(None).len();
        let cold = t.elapsed().as_secs_f64();
        anyhow::ensure!(n == args.paths, "view has {n} of {} paths", args.paths);
        println!("view_cold_ms {:.1} ms", cold * 1e3);
    }
    let t = Instant::now();
    let home = Home::open(tmp.path().join("dev0"))?;
    let space = home.space("bench")?;
    let n = space.view()?.list_recursive(None).len();
    let view_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == args.paths, "view has {n} of {} paths", args.paths);

    println!("put_mb_s {:.1} MB/s", mb_s(total, put_secs));
    println!("get_mb_s {:.1} MB/s", mb_s(total, get_secs));
    println!("peak_rss_mib {rss:.1} MiB");
    println!("view_10k_ms {:.1} ms", view_secs * 1e3);
    println!("view_paths {n} count");
    println!("view_devices {} count", args.devices);
    println!("file_mib {} MiB", args.mib);
    Ok(())
}

/// Peak resident memory of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib / 1024.0)
}
