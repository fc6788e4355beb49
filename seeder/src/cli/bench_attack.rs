/*!
`seeder bench attack`: a real `seeder serve` on loopback, attacked the ways a stranger on the
network (or a member gone bad) can, while a member uploads to it. Each case prints how long the
member's upload took, so the cost of each attack reads against the quiet baseline. Each case's
member is new and uploads to a space of its own, so each time is its own upload and nothing
else (in one shared space a new member would first fetch every earlier member's feed):

- `member_sync_s`: a member uploads `--mib` MiB and waits for the seeder's durable
  acknowledgement, nobody else connected.
- `member_sync_s_under_200_strangers`: the same with `--strangers` QUIC connections open from
  as many loopback addresses, each with a random identity, that never prove they know a space.
  `strangers_connected` of them got through the handshake; `strangers_closed_s` is how long
  after the upload until the seeder had closed every one.
- `member_sync_s_under_half_sent_frames`: the same while `--half-frame-connections` strangers
  each start the largest frame they may send (and try four data streams with maximum frame
  headers) and then go silent. `half_frame_connections_closed` of them the seeder closed,
  within `half_frames_closed_s`.
- `member_sync_s_under_stalled_streams`: the same while one peer that did prove it knows the
  space holds `--stalled-streams` data streams with half-sent maximum frames.
- `wrong_logins_429`, `wrong_setup_codes_429`: of 100 concurrent wrong attempts each from one
  address, how many were answered 429 before any password hash ran; `…_closed`, how many were
  closed unanswered, over the page's connections for one address (also before any hash);
  `right_password_after_backoff` is 1 when the right one then works. `admin_login_flood_s` is
  the whole login case.
- `seeder_peak_rss_mib`: the seeder's peak resident memory over all of it, and
  `seeder_peak_rss_mib_after_…` after each case (the peak only grows).

Not a test in itself: `tests/hostile_network.rs` runs it and holds it to its promises (every
upload completes, every stranger is closed, memory stays within its bound).
*/

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use super::bench::{mb_s, Entries};
use super::bench_admin::http;
use super::bench_sync::{
    fill, hold_space, peak_rss_of, start_seeder, upload, BareMember, OwnFeed, SeederProcess,
};
use crate::net::{send_message, Connection, Endpoint, NodeIdentity};
use crate::space::{Address, Capability, Role, SpaceSecret};
use crate::wire::{Message, MAX_FRAME_LEN, PROTOCOL_VERSION};

#[derive(Debug, Args)]
pub struct AttackArgs {
    /// Folder to work in. Default: the system's temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// MiB the member uploads in each case.
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Idle strangers in the first case.
    #[arg(long, default_value_t = 200)]
    strangers: u32,
    /// Strangers sending half frames in the second case.
    #[arg(long, default_value_t = 60)]
    half_frame_connections: u32,
    /// Stalled data streams of the proven peer in the third case.
    #[arg(long, default_value_t = 10)]
    stalled_streams: u32,
    /// Concurrent wrong attempts in the login case.
    #[arg(long, default_value_t = 100)]
    logins: u32,
}

/// Longest any one upload may take before the bench fails: the quiet one takes about a second.
const UPLOAD_LIMIT: Duration = Duration::from_secs(180);

/// Longest the seeder may take to close strangers: its own deadline for proving
/// ([`PROVE_WITHIN`](crate::net::admission::PROVE_WITHIN)) and a margin for a loaded machine.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);

/// Longest a QUIC handshake from one attacker may take before it counts as refused.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Uploads made: quiet, then under each of the three network attacks.
const CASES: usize = 4;

/// Entry size of the uploads: the size files are cut into.
const ENTRY_LEN: usize = 64 * 1024;

pub fn run(args: AttackArgs) -> Result<()> {
    let tmp = super::bench::work_dir(args.dir.as_deref(), "seeder-bench-attack")?;
    let runtime = super::bench::runtime()?;
    // A space of its own for each case, so that each member uploads its 64 MiB and fetches
    // nothing the earlier cases' members left on the seeder.
    let secrets: Vec<SpaceSecret> = (0..CASES)
        .map(|_| SpaceSecret::generate(&mut rand::rngs::OsRng))
        .collect();
    {
        let store = hold_space(&tmp.path().join("seeder"), secrets[0].address())?;
        let registry = crate::daemon::registry::Registry::open(&store)?;
        for (i, s) in secrets.iter().enumerate().skip(1) {
            let name = format!("bench-{i}");
            registry.add_space(
                &crate::space::SeedCode::new(s.address()),
                Some(&name),
                None,
                0,
            )?;
        }
    }
    let (seeder, _) = start_seeder(&tmp.path().join("seeder"))?;
    let entries = Entries::new(ENTRY_LEN);
    let mut uploads = 0;
    let mut upload = |label: &str| -> Result<f64> {
        let secret = &secrets[uploads];
        uploads += 1;
        let dir = tmp.path().join(format!("member-{uploads}"));
        let secs = runtime.block_on(upload_new_feed(&dir, secret, &seeder, args.mib, &entries))?;
        println!("{label} {secs:.2} s");
        println!(
            "seeder_peak_rss_mib_after_{} {:.1} MiB",
            match label
                .trim_start_matches("member_sync_s")
                .trim_start_matches('_')
            {
                "" => "quiet",
                case => case,
            },
            peak_rss_of(seeder.child.id())?
        );
        Ok(secs)
    };

    let quiet = upload("member_sync_s")?;
    println!("member_sync_mb_s {:.1} MB/s", mb_s(args.mib << 20, quiet));

    // 1. Idle strangers, each from its own address so the per-network cap doesn't decide.
    let started = Instant::now();
    let strangers = runtime.block_on(connect_strangers(&seeder, args.strangers, 1))?;
    println!("strangers_connected {} count", strangers.len());
    upload("member_sync_s_under_200_strangers")?;
    runtime.block_on(all_closed(&strangers))?;
    let closed = started.elapsed().as_secs_f64();
    println!("strangers_closed_s {closed:.2} s");
    drop(strangers);

    // 2. Strangers that start the largest frames they may and go silent.
    let half = runtime.block_on(connect_strangers(&seeder, args.half_frame_connections, 2))?;
    let started = Instant::now();
    runtime.block_on(async {
        for c in &half {
            half_frames(c).await;
        }
    });
    upload("member_sync_s_under_half_sent_frames")?;
    runtime.block_on(all_closed(&half))?;
    let closed = started.elapsed().as_secs_f64();
    println!("half_frame_connections_closed {} count", half.len());
    println!("half_frames_closed_s {closed:.2} s");
    drop(half);

    // 3. A peer that proved it knows the space, holding stalled data streams.
    let stalled = runtime.block_on(stall(&seeder, secrets[3].address(), args.stalled_streams))?;
    upload("member_sync_s_under_stalled_streams")?;
    drop(stalled);

    // 4. Wrong setup codes and wrong passwords, all at once.
    let t = Instant::now();
    let admin = seeder
        .admin
        .context("the seeder did not say where its admin page is")?;
    let code = std::fs::read_to_string(
        tmp.path()
            .join("seeder")
            .join(crate::daemon::backend::SETUP_CODE_FILE),
    )
    .context("reading the setup code")?;
    let wrong_codes = flood(admin, args.logins, "/api/v1/claim", |i| {
        format!(r#"{{"setup_code":"0000-0000-0000-0000-{i:04x}","password":"a wrong password"}}"#)
    });
    println!("wrong_setup_codes_429 {} count", wrong_codes.too_many);
    println!("wrong_setup_codes_closed {} count", wrong_codes.closed);
    let password = "the right admin password";
    let claim = format!(
        r#"{{"setup_code":"{}","password":"{password}"}}"#,
        code.trim()
    );
    retry_after_backoff(admin, "/api/v1/claim", &claim)?;
    let wrong_logins = flood(admin, args.logins, "/api/v1/session", |i| {
        format!(r#"{{"password":"wrong password {i}"}}"#)
    });
    println!("wrong_logins_429 {} count", wrong_logins.too_many);
    println!("wrong_logins_closed {} count", wrong_logins.closed);
    let right = retry_after_backoff(
        admin,
        "/api/v1/session",
        &format!(r#"{{"password":"{password}"}}"#),
    )
    .is_ok();
    println!("right_password_after_backoff {} count", u8::from(right));
    println!("admin_login_flood_s {:.2} s", t.elapsed().as_secs_f64());

    println!(
        "seeder_peak_rss_mib {:.1} MiB",
        peak_rss_of(seeder.child.id())?
    );
    println!("upload_mib {} MiB", args.mib);
    Ok(())
}

/// A member uploads `mib` MiB as a new feed: seconds from dialing until the seeder
/// acknowledged all of it as stored.
async fn upload_new_feed(
    dir: &std::path::Path,
    secret: &SpaceSecret,
    seeder: &SeederProcess,
    mib: u64,
    entries: &Entries,
) -> Result<f64> {
    let member = BareMember::new(dir, secret.address())?;
    let mut own = OwnFeed::new(secret, &member)?;
    fill(
        &mut own,
        &member.store,
        entries,
        (mib << 20) / ENTRY_LEN as u64,
        ENTRY_LEN,
    )?;
    upload(&member, seeder, secret.address(), UPLOAD_LIMIT).await
}

/// A stranger: its endpoint (its own address and identity) and its connection.
struct Stranger {
    _endpoint: Endpoint,
    conn: Connection,
}

/// `n` strangers, each from its own address 127.`group`.x.y with a fresh identity; those
/// whose handshake completes.
async fn connect_strangers(seeder: &SeederProcess, n: u32, group: u8) -> Result<Vec<Stranger>> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let ip = Ipv4Addr::new(127, group, (i / 250) as u8, (i % 250) as u8 + 1);
        let addr = seeder.addr;
        tasks.spawn(async move {
            let endpoint = Endpoint::bind(
                SocketAddr::new(IpAddr::V4(ip), 0),
                Arc::new(NodeIdentity::generate()),
            )
            .ok()?;
            let conn = tokio::time::timeout(HANDSHAKE_LIMIT, endpoint.connect(addr, None))
                .await
                .ok()?
                .ok()?;
            Some(Stranger {
                _endpoint: endpoint,
                conn,
            })
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(s)) = r {
            out.push(s);
        }
    }
    Ok(out)
}

/// Wait until the seeder closed every one of `strangers`; an error past [`CLOSE_LIMIT`].
async fn all_closed(strangers: &[Stranger]) -> Result<()> {
    let every = async {
        for s in strangers {
            s.conn.conn.closed().await;
        }
    };
    tokio::time::timeout(CLOSE_LIMIT, every)
        .await
        .map_err(|_| anyhow::anyhow!("strangers still connected after {CLOSE_LIMIT:?}"))
}

/// Say hello, then start the largest control frame a stranger may send and stop half-way;
/// ask for four data streams and start maximum frames on any that are granted.
async fn half_frames(s: &Stranger) {
    let Ok((mut send, _recv)) = s.conn.conn.open_bi().await else {
        return;
    };
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        node_id: [0; 32],
        features: 0,
    };
    let _ = send_message(&mut send, &hello).await;
    let frame = crate::net::frames::UNPROVEN_FRAME_LEN as u32;
    let _ = send.write_all(&frame.to_le_bytes()).await;
    let _ = send.write_all(&vec![0u8; frame as usize / 2]).await;
    std::mem::forget(send);
    for _ in 0..4 {
        // A stranger is granted no data streams: this waits for credit that never comes.
        let Ok(Ok(mut uni)) =
            tokio::time::timeout(Duration::from_millis(50), s.conn.conn.open_uni()).await
        else {
            break;
        };
        let _ = uni.write_all(&(MAX_FRAME_LEN as u32).to_le_bytes()).await;
        let _ = uni.write_all(&vec![0u8; MAX_FRAME_LEN / 2]).await;
        std::mem::forget(uni);
    }
}

/// A peer that proves it knows `space`, then opens `streams` data streams, starts a maximum
/// frame on each and goes silent. Kept open until dropped.
async fn stall(seeder: &SeederProcess, space: Address, streams: u32) -> Result<Stranger> {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse()?, Arc::new(NodeIdentity::generate()))?;
    let conn = endpoint.connect(seeder.addr, Some(seeder.node)).await?;
    let (mut send, _recv) = conn.conn.open_bi().await?;
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        node_id: endpoint.node_id().0,
        features: 0,
    };
    send_message(&mut send, &hello).await?;
    let capability = Capability::new(&space, &conn.capability_secret()?, Role::Dialer);
    send_message(
        &mut send,
        &Message::OpenSpace {
            space: 0,
            discovery: space.discovery_key(),
            capability,
        },
    )
    .await?;
    std::mem::forget(send);
    for _ in 0..streams {
        let mut uni = tokio::time::timeout(HANDSHAKE_LIMIT, conn.conn.open_uni())
            .await
            .context("no data stream granted to a proven peer")??;
        // Each stream sends on its own: what the seeder's windows hold back waits there, and
        // all of it ends when the seeder gives the stalled frames up and closes.
        tokio::spawn(async move {
            let _ = uni.write_all(&(MAX_FRAME_LEN as u32).to_le_bytes()).await;
            let _ = uni.write_all(&vec![0u8; MAX_FRAME_LEN / 2]).await;
            std::mem::forget(uni);
        });
    }
    Ok(Stranger {
        _endpoint: endpoint,
        conn,
    })
}

/// How a flood of requests was answered.
struct Flood {
    /// Answered 429 (too many attempts, or a password hash already running).
    too_many: u32,
    /// Closed before any answer: over the page's connections for one address.
    closed: u32,
}

/// `n` concurrent POSTs of `body(i)` to `path`, from one address.
fn flood(admin: SocketAddr, n: u32, path: &str, body: impl Fn(u32) -> String) -> Flood {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let body = body(i);
            let path = path.to_string();
            std::thread::spawn(move || http(admin, "POST", &path, &[], &body).map(|r| r.0))
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().filter_map(|t| t.join().ok()).collect();
    Flood {
        too_many: answers.iter().filter(|r| matches!(r, Ok(429))).count() as u32,
        closed: answers.iter().filter(|r| r.is_err()).count() as u32,
    }
}

/// POST `body` to `path`, waiting out the back-off it is told (`Retry-After`), a few times.
fn retry_after_backoff(admin: SocketAddr, path: &str, body: &str) -> Result<()> {
    for _ in 0..5 {
        let (status, head, reply) = http(admin, "POST", path, &[], body)?;
        match status {
            200 | 201 => return Ok(()),
            429 => {
                let wait = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("retry-after:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                // Told how long to wait: this is the back-off itself, not a guess.
                std::thread::sleep(Duration::from_secs(wait.min(30)));
            }
            _ => anyhow::bail!("{path}: {status} {}", String::from_utf8_lossy(&reply)),
        }
    }
    anyhow::bail!("{path}: still turned away after five waits")
}
