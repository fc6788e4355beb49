/*!
`seeder bench sync`: replication figures with a real `seeder serve` process on loopback.

- `sync_mb_s`: a member (in this process) sends 256 MiB of 64 KiB entries to the seeder,
  from connecting until the seeder acknowledged storing all of it durably.
- `quinn_mb_s`: the same bytes over one plain QUIC stream with the same transport settings.
- `disk_mb_s`: the same bytes written with one fdatasync per 4 MiB, as the seeder's appends
  do.
- `sync_vs_baseline`: `sync_mb_s` over the slower of `quinn_mb_s` and `disk_mb_s`, each
  measured alone with the machine to itself.
- `pipeline_mb_s`: the least work any verified, durable transfer of these bytes needs, with no
  protocol of ours: the sender reads them from a file, one plain QUIC stream carries them, the
  receiver hashes every 64 KiB with BLAKE3 and writes them with one fdatasync per 4 MiB (while
  the next 4 MiB arrive). On a machine where both ends and the disk share the same cores this,
  not `quinn_mb_s`, is the ceiling; `sync_vs_pipeline` is what the protocol and store cost.
- `seeder_peak_rss_mib`: the seeder process's peak resident memory after the transfer.
- `relay_ms_p50`/`relay_ms_p90`: one small entry written by member A until member B (both
  connected to the seeder) has stored it.
- `restart_1000_feeds_s`: start of `seeder serve` until it is ready, with 1,000 feeds of
  100 entries held.

Not a test: it prints figures and never asserts a target.
*/

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use ed25519_dalek::SigningKey;
use tokio::sync::watch;

use crate::daemon::registry::Registry;
use crate::feed::{write_batch, FeedKey, Frontier, SignedHead};
use crate::net::driver::{Admit, Driver, Node};
use crate::net::{Endpoint, NodeId, NodeIdentity};
use crate::space::{Address, DiscoveryKey, MembershipCert, SeedCode, SpaceSecret};
use crate::store::{Store, StoreConfig};
use crate::sync::Local;
use crate::wire::{FeedOffer, MAX_DATA_BYTES};

use super::bench::{mb_s, raw_baseline, Entries};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Folder to work in (on the disk to measure). Default: the system's temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// MiB sent member → seeder.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Entry size in KiB.
    #[arg(long, default_value_t = 64)]
    entry_kib: usize,
    /// Relay round trips measured.
    #[arg(long, default_value_t = 100)]
    relays: usize,
    /// Feeds (of 100 entries each) held for the restart figure.
    #[arg(long, default_value_t = 1000)]
    feeds: usize,
}

/// A member device reduced to what replication needs: one store, one space, its members.
pub(super) struct BareMember {
    pub(super) store: Store,
    space: Address,
    members: Mutex<Vec<MembershipCert>>,
    /// Entries stored of each feed, for waiting on arrivals.
    lengths: watch::Sender<Vec<(FeedKey, u64)>>,
}

impl BareMember {
    pub(super) fn new(dir: &Path, space: Address) -> Result<Arc<BareMember>> {
        Ok(Arc::new(BareMember {
            store: Store::open(dir, &StoreConfig::default())?,
            space,
            members: Mutex::new(Vec::new()),
            lengths: watch::channel(Vec::new()).0,
        }))
    }

    fn certs(&self) -> Vec<MembershipCert> {
        self.members.lock().expect("members lock").clone()
    }
}

impl Local for BareMember {
    fn space_for(&self, discovery: &DiscoveryKey) -> Option<Address> {
        (self.space.discovery_key() == *discovery).then_some(self.space)
    }

    fn offers(&self, space: &Address) -> Vec<FeedOffer> {
        if *space != self.space {
            return Vec::new();
        }
        self.certs()
            .into_iter()
            .map(|cert| crate::daemon::local::offer(&self.store, cert))
            .collect()
    }

    fn stored(&self, feed: &FeedKey) -> (u64, bool) {
        match self.store.feed(feed) {
            Ok(Some(s)) => (s.length, s.frozen),
            _ => (0, false),
        }
    }

    fn feed_count(&self, _space: &Address) -> usize {
        self.members.lock().expect("members lock").len()
    }

    fn damaged(&self, feed: &FeedKey) -> Vec<u64> {
        crate::daemon::local::damaged_in(&self.store, feed)
    }

    fn contradicts(&self, head: &crate::feed::VerifiedHead) -> Option<crate::feed::ForkEvidence> {
        crate::daemon::local::contradiction_in(&self.store, head)
    }

    fn records(&self, _space: &Address) -> Vec<crate::space::Record> {
        // The bench syncs spaces from before roles.
        Vec::new()
    }

    fn membership(&self, _space: &Address) -> Option<std::sync::Arc<crate::space::Membership>> {
        None
    }

    fn prove_device(
        &self,
        _space: &Address,
        _conn_secret: &[u8],
        _role: crate::space::Role,
    ) -> Option<(crate::space::DeviceProof, Option<crate::space::DeviceProof>)> {
        None
    }

    fn serves_unproven(&self, _space: &Address, _peer: &[u8; 32], _dialed: bool) -> bool {
        true
    }

    fn room(&self, space: &Address, _bytes: u64) -> Result<(), crate::wire::Refusal> {
        if *space == self.space {
            Ok(())
        } else {
            Err(crate::wire::Refusal::Failed("not this space".into()))
        }
    }
}

impl Node for BareMember {
    fn store(&self) -> &Store {
        &self.store
    }

    fn add_feed(&self, space: &Address, cert: &MembershipCert) -> Result<(), String> {
        if *space != self.space {
            return Err("another space".into());
        }
        self.store
            .create_feed(cert.feed)
            .map_err(|e| e.to_string())?;
        let mut m = self.members.lock().expect("members lock");
        if !m.iter().any(|c| c.feed == cert.feed) {
            m.push(cert.clone());
        }
        Ok(())
    }

    fn add_records(
        &self,
        _space: &Address,
        _records: Vec<crate::space::VerifiedRecord>,
    ) -> Result<Vec<crate::space::VerifiedRecord>, String> {
        Err("the bench keeps no membership records".into())
    }

    fn member(&self, space: &Address, feed: &FeedKey) -> Option<MembershipCert> {
        (*space == self.space)
            .then(|| self.certs().into_iter().find(|c| c.feed == *feed))
            .flatten()
    }

    fn appended(&self, _space: &Address, feed: FeedKey, length: u64) {
        self.lengths
            .send_modify(|v| match v.iter_mut().find(|(f, _)| *f == feed) {
                Some(entry) => entry.1 = length,
                None => v.push((feed, length)),
            });
    }
}

/// A feed this process writes.
pub(super) struct OwnFeed {
    key: SigningKey,
    frontier: Frontier,
    cert: MembershipCert,
}

impl OwnFeed {
    pub(super) fn new(secret: &SpaceSecret, member: &BareMember) -> Result<OwnFeed> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let cert = MembershipCert::issue(secret, FeedKey::from(&key));
        member
            .add_feed(&member.space, &cert)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(OwnFeed {
            key,
            frontier: Frontier::new(),
            cert,
        })
    }

    pub(super) fn append(&mut self, store: &Store, entries: Vec<Vec<u8>>) -> Result<SignedHead> {
        let batch = write_batch(&self.key, &mut self.frontier, entries)?;
        let head = batch.head().signed().clone();
        store.append(batch)?;
        Ok(head)
    }
}

/// A `seeder serve` child process; killed on drop.
pub(super) struct SeederProcess {
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
    pub(super) node: NodeId,
    /// Where its admin page answers (from its ready line).
    pub(super) admin: Option<SocketAddr>,
}

impl Drop for SeederProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Start `seeder serve` on `data` and return once it says it is ready, with the time taken.
pub(super) fn start_seeder(data: &Path) -> Result<(SeederProcess, Duration)> {
    let node = NodeIdentity::load_or_create(&data.join("node.key"))?.node_id();
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let t = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--no-mdns", "--admin", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--listen", &addr.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting seeder serve")?;
    let stderr = child.stderr.take().context("seeder's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let admin = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("seeder ready") => {
                break l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("admin="))
                    .and_then(|a| a.parse().ok());
            }
            Some(Ok(_)) => {}
            _ => {
                let _ = child.kill();
                anyhow::bail!("seeder serve ended before it was ready");
            }
        }
    };
    let took = t.elapsed();
    std::thread::spawn(move || for _ in lines {});
    Ok((
        SeederProcess {
            child,
            addr,
            node,
            admin,
        },
        took,
    ))
}

/// Peak resident memory of process `pid`, in MiB.
pub(super) fn peak_rss_of(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

/// Hold `secret`'s space in the seeder data folder `data` (before the daemon starts).
pub(super) fn hold_space(data: &Path, address: Address) -> Result<Store> {
    let store = Store::open(data, &StoreConfig::default())?;
    let registry = Registry::open(&store)?;
    registry.add_space(&SeedCode::new(address), Some("bench"), None, 0)?;
    Ok(store)
}

pub fn run(args: SyncArgs) -> Result<()> {
    let tmp = super::bench::work_dir(args.dir.as_deref(), "seeder-bench-sync")?;
    let runtime = super::bench::runtime()?;
    let entry_len = args.entry_kib * 1024;
    let count = args.mib * 1024 * 1024 / entry_len as u64;
    let bytes = count * entry_len as u64;
    let entries = Entries::new(entry_len);

    // Member → seeder, durably acknowledged.
    let secret = SpaceSecret::generate(&mut rand::rngs::OsRng);
    let address = secret.address();
    drop(hold_space(&tmp.path().join("seeder"), address)?);
    let member = BareMember::new(&tmp.path().join("member"), address)?;
    let mut own = OwnFeed::new(&secret, &member)?;
    fill(&mut own, &member.store, &entries, count, entry_len)?;
    let (seeder, _) = start_seeder(&tmp.path().join("seeder"))?;
    let sync_secs = runtime.block_on(upload(&member, &seeder, address, UPLOAD_LIMIT))?;
    let seeder_rss = peak_rss_of(seeder.child.id())?;

    // Relay: A and B both connected to the seeder; A writes one entry, B stores it.
    let relays = runtime.block_on(relay(
        tmp.path(),
        &secret,
        &seeder,
        &member,
        &mut own,
        args.relays,
    ))?;
    drop(seeder);

    let quinn_secs = runtime.block_on(quinn_baseline(bytes, entry_len))?;
    // The seeder appends up to COALESCE_BYTES per fdatasync: the baseline does the same.
    let disk_batch = (crate::net::driver::COALESCE_BYTES / entry_len).max(1);
    let disk_secs = raw_baseline(tmp.path(), &entries, count, disk_batch)?;
    let pipeline_secs = runtime.block_on(pipeline_baseline(tmp.path(), &entries, count))?;
    let restart = restart(&tmp.path().join("restart"), args.feeds)?;

    let pct = |p: f64| {
        let i = ((relays.len() as f64 - 1.0) * p).round() as usize;
        relays.get(i).copied().unwrap_or(f64::NAN)
    };
    let sync = mb_s(bytes, sync_secs);
    let quinn = mb_s(bytes, quinn_secs);
    let disk = mb_s(bytes, disk_secs);
    println!("sync_mb_s {sync:.1} MB/s");
    println!("quinn_mb_s {quinn:.1} MB/s");
    println!("disk_mb_s {disk:.1} MB/s");
    let pipeline = mb_s(bytes, pipeline_secs);
    println!("sync_vs_baseline {:.2} ratio", sync / quinn.min(disk));
    println!("pipeline_mb_s {pipeline:.1} MB/s");
    println!("sync_vs_pipeline {:.2} ratio", sync / pipeline);
    println!("seeder_peak_rss_mib {seeder_rss:.1} MiB");
    println!("relay_ms_p50 {:.2} ms", pct(0.5));
    println!("relay_ms_p90 {:.2} ms", pct(0.9));
    println!("restart_1000_feeds_s {restart:.3} s");
    println!("sync_mib {} MiB", args.mib);
    println!("restart_feeds {} count", args.feeds);
    Ok(())
}

/// Longest the bench waits for an upload to be acknowledged before it fails.
pub(super) const UPLOAD_LIMIT: Duration = Duration::from_secs(600);

/// Append `count` entries of `entry_len` bytes to `own`, in batches of four data messages.
pub(super) fn fill(
    own: &mut OwnFeed,
    store: &Store,
    entries: &Entries,
    count: u64,
    entry_len: usize,
) -> Result<()> {
    let per_batch = (4 * MAX_DATA_BYTES / entry_len).max(1) as u64;
    let mut i = 0;
    while i < count {
        let n = per_batch.min(count - i);
        own.append(store, (i..i + n).map(|j| entries.get(j)).collect())?;
        i += n;
    }
    Ok(())
}

/// `member` dials `seeder` and opens `space`: seconds until the seeder acknowledged storing
/// everything the member holds; an error if it didn't within `limit`.
pub(super) async fn upload(
    member: &Arc<BareMember>,
    seeder: &SeederProcess,
    space: Address,
    limit: Duration,
) -> Result<f64> {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse()?, Arc::new(NodeIdentity::generate()))?;
    let driver = Driver::new(member.clone(), endpoint.node_id());
    let t = Instant::now();
    let conn = endpoint.connect(seeder.addr, Some(seeder.node)).await?;
    let (done_tx, mut done) = watch::channel(false);
    let (_stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(driver.run(conn, Admit::Open, vec![space], Some(done_tx), stop));
    let finished = tokio::time::timeout(limit, done.wait_for(|d| *d)).await;
    let secs = t.elapsed().as_secs_f64();
    task.abort();
    endpoint.close("done");
    match finished {
        Ok(Ok(_)) => Ok(secs),
        Ok(Err(_)) => anyhow::bail!("the member's upload ended without being stored"),
        Err(_) => anyhow::bail!("the member's upload was not stored within {limit:?}"),
    }
}

/// Relay latencies in ms, sorted.
async fn relay(
    dir: &Path,
    secret: &SpaceSecret,
    seeder: &SeederProcess,
    a: &Arc<BareMember>,
    own: &mut OwnFeed,
    rounds: usize,
) -> Result<Vec<f64>> {
    let address = secret.address();
    let b = BareMember::new(&dir.join("member-b"), address)?;
    let _b_own = OwnFeed::new(secret, &b)?;
    let (_stop_tx, stop) = watch::channel(false);
    let mut endpoints = Vec::new();
    let mut drivers = Vec::new();
    for node in [a.clone(), b.clone()] {
        let endpoint = Endpoint::bind("127.0.0.1:0".parse()?, Arc::new(NodeIdentity::generate()))?;
        let driver = Driver::new(node, endpoint.node_id());
        let conn = endpoint.connect(seeder.addr, Some(seeder.node)).await?;
        let (tx, mut caught_up) = watch::channel(false);
        tokio::spawn(
            driver
                .clone()
                .run(conn, Admit::Open, vec![address], Some(tx), stop.clone()),
        );
        caught_up.wait_for(|d| *d).await?;
        endpoints.push(endpoint);
        drivers.push(driver);
    }
    let feed = own.cert.feed;
    let mut arrived = b.lengths.subscribe();
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        let head = own.append(&a.store, vec![format!("relay {i}").into_bytes()])?;
        let want = head.length;
        drivers[0].announce(address, own.cert.clone(), head);
        tokio::time::timeout(
            Duration::from_secs(10),
            arrived.wait_for(|v| v.iter().any(|(f, l)| *f == feed && *l >= want)),
        )
        .await
        .context("an entry was not relayed within 10 s")??;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for e in &endpoints {
        e.close("done");
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// The same bytes over one QUIC stream between two endpoints with this crate's settings.
async fn quinn_baseline(bytes: u64, chunk: usize) -> Result<f64> {
    let server = Endpoint::bind("127.0.0.1:0".parse()?, Arc::new(NodeIdentity::generate()))?;
    let client = Endpoint::bind("127.0.0.1:0".parse()?, Arc::new(NodeIdentity::generate()))?;
    let addr = server.local_addr()?;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")??;
        // The windows and streams of a proven peer, as the seeder's data transfers have.
        conn.open_up();
        let mut recv = conn.conn.accept_uni().await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while let Some(n) = recv.read(&mut buf).await? {
            got += n as u64;
        }
        anyhow::Ok(got)
    });
    let block = vec![0x5au8; chunk];
    let t = Instant::now();
    let conn = client.connect(addr, None).await?;
    let mut send = conn.conn.open_uni().await?;
    let mut sent = 0u64;
    while sent < bytes {
        send.write_all(&block).await?;
        sent += block.len() as u64;
    }
    send.finish()?;
    let got = receiver.await??;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == sent, "received {got} of {sent} bytes");
    Ok(secs)
}

/// The same bytes read from a file, over one QUIC stream, hashed and written durably by the
/// receiver: see `pipeline_mb_s` at the top.
async fn pipeline_baseline(dir: &Path, entries: &Entries, count: u64) -> Result<f64> {
    use std::io::{Read, Write};
    let source = dir.join("pipeline.source");
    let target = dir.join("pipeline.target");
    {
        let mut f = std::fs::File::create(&source)?;
        for i in 0..count {
            f.write_all(&entries.get(i))?;
        }
        f.sync_data()?;
    }
    let server = Endpoint::bind("127.0.0.1:0".parse()?, Arc::new(NodeIdentity::generate()))?;
    let client = Endpoint::bind("127.0.0.1:0".parse()?, Arc::new(NodeIdentity::generate()))?;
    let addr = server.local_addr()?;
    let out = std::fs::File::create(&target)?;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")??;
        conn.open_up();
        let mut recv = conn.conn.accept_uni().await?;
        // One 4 MiB group written while the next is read, as the seeder's ingest does: the
        // stream's packets gathered into one buffer (one copy), hashed per entry, one write.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            let mut out = out;
            for group in rx {
                for piece in group.chunks(64 * 1024) {
                    std::hint::black_box(blake3::hash(piece));
                }
                out.write_all(&group)?;
                out.sync_data()?;
            }
            Ok(())
        });
        let group_len = crate::net::driver::COALESCE_BYTES;
        let mut group = Vec::with_capacity(group_len);
        let mut got = 0u64;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            got += chunk.bytes.len() as u64;
            group.extend_from_slice(&chunk.bytes);
            if group.len() >= group_len {
                let full = std::mem::replace(&mut group, Vec::with_capacity(group_len));
                tx.send(full).context("the writer stopped")?;
            }
        }
        if !group.is_empty() {
            tx.send(group).context("the writer stopped")?;
        }
        drop(tx);
        tokio::task::spawn_blocking(move || writer.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        anyhow::Ok(got)
    });
    let mut input = std::fs::File::open(&source)?;
    let t = Instant::now();
    let conn = client.connect(addr, None).await?;
    let mut send = conn.conn.open_uni().await?;
    let mut sent = 0u64;
    loop {
        // Each block read into a buffer of its own that QUIC then owns: one copy, from the
        // page cache.
        let mut block = Vec::with_capacity(64 * 1024);
        let n = (&mut input).take(64 * 1024).read_to_end(&mut block)?;
        if n == 0 {
            break;
        }
        send.write_chunk(bytes::Bytes::from(block)).await?;
        sent += n as u64;
    }
    send.finish()?;
    let got = receiver.await??;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == sent, "received {got} of {sent} bytes");
    std::fs::remove_file(&source)?;
    std::fs::remove_file(&target)?;
    Ok(secs)
}

/// Seconds from starting `seeder serve` to ready with `feeds` feeds of 100 entries held.
fn restart(data: &Path, feeds: usize) -> Result<f64> {
    populate(data, feeds)?;
    // Once to warm the page cache like a running board's, then the measured start.
    drop(start_seeder(data)?);
    let (seeder, took) = start_seeder(data)?;
    drop(seeder);
    Ok(took.as_secs_f64())
}

/// A seeder data folder holding one space with `feeds` feeds of 100 small entries.
pub(super) fn populate(data: &Path, feeds: usize) -> Result<()> {
    let secret = SpaceSecret::generate(&mut rand::rngs::OsRng);
    {
        let store = hold_space(data, secret.address())?;
        let registry = Registry::open(&store)?;
        for f in 0..feeds {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let cert = MembershipCert::issue(&secret, FeedKey::from(&key));
            registry.add_member(&cert)?;
            store.create_feed(cert.feed)?;
            let mut frontier = Frontier::new();
            let entries = (0..100)
                .map(|i| format!("feed {f} entry {i}").into_bytes())
                .collect();
            store.append(write_batch(&key, &mut frontier, entries)?)?;
        }
        store.commit()?;
    }
    Ok(())
}
