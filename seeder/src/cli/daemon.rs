/*!
Daemon-side commands: `seeder serve` runs the daemon; `seeder ctl` talks to a running one
through its control socket (file permissions are the authentication).
*/

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};

use crate::daemon::ctl::{self, CtlError, CtlRequest, CtlResponse};
use crate::daemon::serve::{self, ServeConfig};

use super::Failure;

/// The data folder when none is given: beside the current folder, as for a laptop.
pub const DEFAULT_DATA: &str = "./seeder-data";

/// The settings file of the appliance and of the Debian package's service, where `seeder
/// ctl` looks for the daemon's data folder when it is given none.
pub const SETTINGS_FILE: &str = "/etc/seeder/seeder.toml";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Settings file (TOML); flags given here override it [default: $SEEDER_CONFIG]. The
    /// appliance's is /etc/seeder/seeder.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder: the feeds, the index, the node identity, the control socket
    /// [default: ./seeder-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Where peers reach this seeder over QUIC (UDP) [default: 0.0.0.0:7428].
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Where the admin page listens (HTTP) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,
    /// Don't announce this seeder on the LAN over mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Don't ask the router to forward the QUIC port (UPnP-IGD, NAT-PMP, PCP). It is never
    /// asked when listening on a loopback address.
    #[arg(long)]
    no_port_mapping: bool,
    /// Connections this seeder carries at once for peers it holds a space with that can't
    /// reach each other directly (both behind strict NATs); 0 turns relaying off [default: 8].
    #[arg(long, value_name = "N")]
    relay_connections: Option<u16>,
    /// Bandwidth all relayed connections together may use, in MiB/s [default: 4].
    #[arg(long, value_name = "MIB")]
    relay_mib_s: Option<u32>,
    /// The board has a claim button (`seeder board` reports its presses): the admin page
    /// offers claiming by a press.
    #[arg(long, env = "SEEDER_CLAIM_BUTTON", value_parser = BoolishValueParser::new())]
    claim_button: bool,
    /// The data folder must be a mounted disk (the appliance's): without one, serve only the
    /// admin page saying so, store nothing, and wait for it.
    #[arg(long, env = "SEEDER_REQUIRE_DATA_DISK", value_parser = BoolishValueParser::new())]
    require_data_disk: bool,
    /// Let the admin page manage SSH: it writes the public keys allowed to log in as root to
    /// this file, which a root-side helper applies (the appliance image sets this).
    #[arg(long, env = "SEEDER_SSH_KEYS_FILE", value_name = "FILE")]
    ssh_keys_file: Option<PathBuf>,
    /// mDNS port (tests use another than 5353 to stay apart from the machine's responder).
    #[arg(long, hide = true, default_value_t = 5353)]
    mdns_port: u16,
    /// mDNS on the loopback interface only (tests).
    #[arg(long, hide = true)]
    mdns_loopback: bool,
}

/// Relayed connections at once by default: a few offices' worth, each bounded by the
/// bandwidth below.
const DEFAULT_RELAY_CONNECTIONS: u16 = 8;
/// Relay bandwidth by default: a share of a small office's uplink, not all of it.
const DEFAULT_RELAY_MIB_S: u32 = 4;

/// The settings file: every key optional, unknown keys refused (a typo should not be
/// silently ignored on an appliance).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
    /// Stop taking new data when less than this share of the data disk is free.
    keep_free_percent: Option<u8>,
    /// sled's page cache, in MiB.
    cache_mib: Option<u64>,
    /// Announce on the LAN over mDNS.
    mdns: Option<bool>,
    /// Ask the router to forward the QUIC port.
    port_mapping: Option<bool>,
    /// Connections relayed at once for peers that can't reach each other (0: none).
    relay_connections: Option<u16>,
    /// Bandwidth of all relayed connections together, MiB/s.
    relay_mib_s: Option<u32>,
    /// The data folder must be a mounted disk (see `--require-data-disk`).
    require_data_disk: Option<bool>,
    /// Where the admin page writes root's SSH keys (see `--ssh-keys-file`).
    ssh_keys_file: Option<PathBuf>,
}

fn read_config(path: &std::path::Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .context(Failure::NotFound)?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid settings file", path.display()))
        .context(Failure::BadInput)
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Data folder of the running daemon [default: the `data` of the settings file, else
    /// ./seeder-data].
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// Settings file the daemon runs with [default: $SEEDER_CONFIG, else
    /// /etc/seeder/seeder.toml if there is one].
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Debug, Subcommand)]
enum CtlCmd {
    /// Health and what is held.
    Status {
        /// The whole status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Spaces this seeder holds.
    Space {
        #[command(subcommand)]
        cmd: SpaceCmd,
    },
    /// Partner seeders this seeder dials.
    Peer {
        #[command(subcommand)]
        cmd: PeerCmd,
    },
    /// The one-time code that claims the admin page.
    SetupCode {
        /// Use this code instead (only while the admin page is unclaimed), e.g. the one
        /// `image/flash` wrote to the SD card.
        #[arg(long, value_name = "CODE")]
        set: Option<String>,
    },
    /// Forget the admin password (and API tokens) so the device can be claimed again with a
    /// new setup code, which is printed.
    ResetPassword,
    /// Read back and check every held entry now (the daily scrub at once). Damaged entries are
    /// then fetched again, verified, from the next peer that holds them.
    Scrub,
}

#[derive(Debug, Subcommand)]
enum SpaceCmd {
    /// Hold a space, given its seed code.
    Add {
        /// The space's seed code (seed-…), from a member's `seeder space seed-code NAME`.
        seed_code: String,
        /// What to call it here [default: the name in the seed code, else its address].
        #[arg(long)]
        name: Option<String>,
        /// Most bytes this space may hold here, e.g. 500M, 20G (K, M, G, T: powers of 1024).
        #[arg(long, value_parser = parse_size)]
        quota: Option<u64>,
    },
    /// Stop holding a space.
    Remove {
        /// The space's name here (`seeder ctl space list`).
        name: String,
        /// Also delete its data from the disk.
        #[arg(long)]
        purge: bool,
    },
    /// Spaces held: name, address, feeds, entries, bytes, quota.
    List,
}

#[derive(Debug, Subcommand)]
enum PeerCmd {
    /// Dial a partner seeder: its peer code (seeder:NODEID@ADDRESS:PORT,…, shown by its
    /// `ctl status` and Peers page) or HOST:PORT#NODEID.
    Add {
        /// The partner's peer code, or HOST:PORT#NODEID.
        peer: String,
    },
    /// Stop dialing a partner seeder and close its connections.
    Remove {
        /// The partner's node id (or a unique start of it, as `peer list` shows).
        node: String,
    },
    /// Partner seeders dialed: address and node id.
    List,
}

/// `500M`, `20G`, `1.5T`, `1024` (bytes). K, M, G, T are powers of 1024; a trailing `B` or
/// `iB` is allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    web_admin::format::parse_size(s)?.ok_or_else(|| "give a size, like 20G".to_string())
}

/// Longest path a Unix socket can have (`sun_path` holds 108 bytes with the closing NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Refuse, before anything is created, a data folder the daemon can't use: something else
/// already at that path, or a path too long for the control socket inside it.
fn check_data_folder(data: &std::path::Path) -> Result<()> {
    if let Ok(md) = std::fs::metadata(data) {
        if !md.is_dir() {
            return Err(anyhow::anyhow!(
                "the data folder {} is a file, not a folder: give a folder with --data",
                data.display()
            )
            .context(Failure::BadInput));
        }
    }
    let socket = std::path::absolute(data)
        .unwrap_or_else(|_| data.to_path_buf())
        .join(ctl::SOCKET_NAME);
    let len = socket.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        return Err(anyhow::anyhow!(
            "the data folder's path is too long ({len} characters with its control socket, \
             at most {SOCKET_PATH_MAX}): give a shorter one with --data"
        )
        .context(Failure::BadInput));
    }
    Ok(())
}

/// `--config`, else `$SEEDER_CONFIG` when set and not empty.
fn settings_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        std::env::var_os("SEEDER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let mut args = args;
    args.config = settings_path(args.config.take());
    // Everything the daemon creates is its own: the store, the admin password's hash, the
    // node key. Files 0600 and folders 0700 whatever umask it was started with; the few
    // files meant for others (the ssh keys for root's helper) set their mode explicitly.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    // Where `ctl` finds this daemon by the settings file alone, or else by its folder.
    // (A relative folder in the file is taken from the folder serve runs in: not one `ctl`
    // finds from elsewhere.)
    let by_file = args.data.is_none() && file.data.as_ref().is_some_and(|d| d.is_absolute());
    let data = args
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    let ctl_command = ctl_command(args.config.as_deref().filter(|_| by_file), &data);
    let keep_free_percent = file.keep_free_percent.unwrap_or(5);
    if keep_free_percent > 90 {
        return Err(anyhow::anyhow!(
            "keep_free_percent {keep_free_percent} leaves no room for data"
        )
        .context(Failure::BadInput));
    }
    let config = ServeConfig {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "0.0.0.0:7428".parse().expect("a valid address")),
        admin: args
            .admin
            .or(file.admin)
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("a valid address")),
        cache_bytes: file
            .cache_mib
            .map_or(crate::store::DEFAULT_CACHE_BYTES, |m| m << 20),
        keep_free_percent,
        mdns: (!args.no_mdns && file.mdns.unwrap_or(true)).then_some(
            crate::net::discovery::MdnsOptions {
                port: args.mdns_port,
                loopback_only: args.mdns_loopback,
            },
        ),
        port_mapping: !args.no_port_mapping && file.port_mapping.unwrap_or(true),
        relay_tunnels: usize::from(
            args.relay_connections
                .or(file.relay_connections)
                .unwrap_or(DEFAULT_RELAY_CONNECTIONS),
        ),
        relay_bytes_per_s: u64::from(
            args.relay_mib_s
                .or(file.relay_mib_s)
                .unwrap_or(DEFAULT_RELAY_MIB_S)
                .max(1),
        ) << 20,
        data,
        require_data_disk: args.require_data_disk || file.require_data_disk.unwrap_or(false),
        ssh_keys_file: args.ssh_keys_file.or(file.ssh_keys_file),
        button: args
            .claim_button
            .then(|| std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0))),
        ctl_command,
    };
    check_data_folder(&config.data)?;
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("cannot create the data folder {}", config.data.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Two cores on the board; more workers only add memory.
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve::run(config, serve::shutdown_signal()))?;
    Ok(())
}

/// The running daemon's data folder as an admin expects `seeder ctl` to find it: `--data`,
/// else the `data` of the settings file (`--config`, else /etc/seeder/seeder.toml when it
/// exists), else ./seeder-data. Also says where it came from, for messages.
fn locate(data: Option<PathBuf>, config: Option<PathBuf>) -> Result<(PathBuf, String)> {
    if let Some(data) = data {
        return Ok((data, "given with --data".into()));
    }
    let (path, given) = match config {
        Some(path) => (path, true),
        None => (PathBuf::from(SETTINGS_FILE), false),
    };
    if given || path.exists() {
        let file = read_config(&path)?;
        if let Some(data) = file.data {
            return Ok((data, format!("the data folder in {}", path.display())));
        }
        if given {
            return Ok((
                PathBuf::from(DEFAULT_DATA),
                format!("{} names no data folder", path.display()),
            ));
        }
    }
    Ok((PathBuf::from(DEFAULT_DATA), "the default".into()))
}

/// The command that reaches a daemon started with these settings, for the hints it shows
/// people (setup code, password reset): the shortest one that works on this machine.
/// `config`: the settings file that alone names the data folder, if one does.
fn ctl_command(config: Option<&std::path::Path>, data: &std::path::Path) -> String {
    let program = program_name();
    // The socket is the daemon user's, mode 0600: root or that user reach it. A service
    // user (system uid) is no one's login, so the hint goes through root.
    let uid = rustix::process::geteuid();
    let sudo = if uid.is_root() || uid.as_raw() < 1000 {
        "sudo "
    } else {
        ""
    };
    match config {
        Some(path) if path == std::path::Path::new(SETTINGS_FILE) => {
            format!("{sudo}{program} ctl")
        }
        Some(path) => format!(
            "{sudo}{program} ctl --config {}",
            shell_word(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
        ),
        None => format!(
            "{sudo}{program} ctl --data {}",
            shell_word(&std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf()))
        ),
    }
}

/// `seeder` when that name on the PATH is this program, else this program's own path (run
/// from a build folder).
fn program_name() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "seeder".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .filter_map(|dir| std::fs::canonicalize(dir.join("seeder")).ok())
            .next()
            .is_some_and(|found| found == me)
    });
    if on_path {
        "seeder".into()
    } else {
        shell_word(&me)
    }
}

/// A path as one shell word: quoted when it holds anything but plain characters.
fn shell_word(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn call(data: &std::path::Path, from: &str, req: CtlRequest) -> Result<serde_json::Value> {
    match ctl::request(data, &req) {
        Ok(CtlResponse::Ok { value }) => Ok(value),
        Ok(CtlResponse::Error { message, not_found }) => {
            Err(anyhow::anyhow!(message).context(if not_found {
                Failure::NotFound
            } else {
                Failure::BadInput
            }))
        }
        Err(CtlError::NotRunning(_)) => Err(anyhow::anyhow!(
            "no seeder is running with data folder {} ({from}): give the running seeder's \
             folder with --data DIR, or its settings file with --config FILE",
            data.display()
        )
        .context(Failure::NotFound)),
        Err(CtlError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(anyhow::anyhow!(
                "only root or the seeder's own user may use its control socket in {}: \
                 run the command with sudo",
                data.display()
            )
            .context(Failure::Refused))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn ctl(args: CtlArgs) -> Result<()> {
    let (data, from) = locate(args.data, settings_path(args.config))?;
    let call = |data: &std::path::Path, req| call(data, &from, req);
    match args.cmd {
        CtlCmd::Status { json } => {
            let v = call(&data, CtlRequest::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "seeder {} up {}s, data {}",
                    v["version"].as_str().unwrap_or("?"),
                    v["uptime_secs"],
                    v["data"].as_str().unwrap_or("?")
                );
                if let Some(admin) = v["admin"].as_str() {
                    println!("admin page on http://{admin}/");
                }
                println!(
                    "node {} listening on {}",
                    v["node_id"].as_str().unwrap_or("?"),
                    v["listen"].as_str().unwrap_or("?")
                );
                if let Some(code) = v["peer_code"].as_str() {
                    println!("peer code: {code}");
                }
                match v["port_mapping"]["state"].as_str() {
                    Some("mapped") => println!(
                        "port mapping: the router forwards {}",
                        v["port_mapping"]["external"].as_str().unwrap_or("?")
                    ),
                    Some("unavailable") => println!(
                        "port mapping: {}",
                        v["port_mapping"]["what"].as_str().unwrap_or("unavailable")
                    ),
                    Some(state) => println!("port mapping: {state}"),
                    None => {}
                }
                for p in v["peers"].as_array().into_iter().flatten() {
                    let id = p["node_id"].as_str().unwrap_or("?");
                    println!(
                        "peer {}{} at {} ({}), connected since {}",
                        id.get(..8).unwrap_or(id),
                        if p["partner"] == true {
                            " (partner)"
                        } else {
                            ""
                        },
                        p["address"].as_str().unwrap_or("?"),
                        p["reached"].as_str().unwrap_or("?"),
                        p["since"]
                    );
                }
                match v["relay_budget"]["connections"].as_u64() {
                    Some(0) => println!("relaying: off"),
                    Some(n) => println!(
                        "relaying: up to {n} connections, {}/s",
                        human(v["relay_budget"]["bytes_per_s"].as_u64().unwrap_or(0))
                    ),
                    None => {}
                }
                for r in v["relaying"].as_array().into_iter().flatten() {
                    let short = |k: &str| r[k].as_str().and_then(|s| s.get(..8)).unwrap_or("?");
                    println!(
                        "relaying {} -> {} since {}: {} carried",
                        short("from"),
                        short("to"),
                        r["since"],
                        human(r["bytes"].as_u64().unwrap_or(0))
                    );
                }
                let free = v["disk_free_bytes"].as_u64().unwrap_or(0);
                let total = v["disk_total_bytes"].as_u64().unwrap_or(0);
                println!("disk: {} free of {}", human(free), human(total));
                print_spaces(&v["spaces"]);
                for d in v["damaged"].as_array().into_iter().flatten() {
                    println!("DAMAGED: {}", d.as_str().unwrap_or("?"));
                }
                for r in v["repaired"].as_array().into_iter().flatten() {
                    println!(
                        "repaired {} entries from {}",
                        r["entries"],
                        r["peer"].as_str().unwrap_or("?")
                    );
                }
                if v["forks"].as_u64().unwrap_or(0) > 0 {
                    println!("FORKED FEEDS: {} (frozen; see the admin page)", v["forks"]);
                }
            }
        }
        CtlCmd::Space { cmd } => match cmd {
            SpaceCmd::List => {
                let spaces = call(&data, CtlRequest::SpaceList)?;
                if spaces.as_array().is_none_or(Vec::is_empty) {
                    // To stderr: a script reading the list gets an empty one.
                    eprintln!("no spaces held yet (add one with `seeder ctl space add SEED-CODE`)");
                }
                print_spaces(&spaces);
            }
            SpaceCmd::Add {
                seed_code,
                name,
                quota,
            } => {
                let v = call(
                    &data,
                    CtlRequest::SpaceAdd {
                        code: seed_code,
                        name,
                        quota,
                    },
                )?;
                println!("holding {}", v["name"].as_str().unwrap_or("?"));
            }
            SpaceCmd::Remove { name, purge } => {
                let v = call(&data, CtlRequest::SpaceRemove { name, purge })?;
                println!(
                    "removed {}; {} deleted from the disk",
                    v["name"].as_str().unwrap_or("?"),
                    count(v["purged_feeds"].as_u64().unwrap_or(0), "feed")
                );
            }
        },
        CtlCmd::Peer { cmd } => match cmd {
            PeerCmd::Add { peer } => {
                let v = call(&data, CtlRequest::PeerAdd { peer })?;
                println!(
                    "dialing {} ({})",
                    v["address"].as_str().unwrap_or("?"),
                    v["node_id"].as_str().unwrap_or("?")
                );
            }
            PeerCmd::Remove { node } => {
                let v = call(&data, CtlRequest::PeerRemove { node })?;
                println!(
                    "no longer dialing {}; its connections are closed",
                    v["node_id"].as_str().unwrap_or("?")
                );
            }
            PeerCmd::List => {
                let partners = call(&data, CtlRequest::PeerList)?;
                let partners = partners.as_array().map_or(&[][..], Vec::as_slice);
                if partners.is_empty() {
                    eprintln!("no partner seeders (add one with `seeder ctl peer add PEER-CODE`)");
                }
                for p in partners {
                    println!(
                        "{}#{}",
                        p["address"].as_str().unwrap_or("?"),
                        p["node_id"].as_str().unwrap_or("?")
                    );
                }
            }
        },
        CtlCmd::SetupCode { set } => {
            let request = match set {
                Some(code) => CtlRequest::SetSetupCode { code },
                None => CtlRequest::SetupCode,
            };
            let v = call(&data, request)?;
            println!("{}", v.as_str().unwrap_or("?"));
        }
        CtlCmd::Scrub => {
            let v = call(&data, CtlRequest::Scrub)?;
            let damaged: Vec<&str> = v["damaged"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect();
            if damaged.is_empty() {
                println!("every held entry reads back as it was stored");
            }
            for d in &damaged {
                println!("DAMAGED: {d} (fetched again from the next peer that holds it)");
            }
            if !damaged.is_empty() {
                return Err(anyhow::anyhow!(
                    "{} damaged on this disk; they are fetched again from the next peer that \
                     holds them (seeder ctl status shows the repairs)",
                    damaged.len()
                )
                .context(super::Failure::Refused));
            }
        }
        CtlCmd::ResetPassword => {
            let v = call(&data, CtlRequest::ResetPassword)?;
            eprintln!(
                "The admin password is reset. Claim the admin page again with this setup code:"
            );
            println!("{}", v.as_str().unwrap_or("?"));
        }
    }
    Ok(())
}

fn print_spaces(v: &serde_json::Value) {
    for s in v.as_array().into_iter().flatten() {
        let quota = s["quota"]
            .as_u64()
            .map_or("no quota".to_string(), |q| format!("quota {}", human(q)));
        let membership = match (s["devices"].as_u64(), s["epoch"].as_u64()) {
            (Some(d), Some(e)) => format!("\t{} · epoch {e}", count(d, "device")),
            _ => String::new(),
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}{membership}",
            s["name"].as_str().unwrap_or("?"),
            s["address"].as_str().unwrap_or("?"),
            count(s["feeds"].as_u64().unwrap_or(0), "feed"),
            count(s["entries"].as_u64().unwrap_or(0), "entry"),
            human(s["bytes"].as_u64().unwrap_or(0)),
            quota
        );
    }
}

/// `1 feed`, `2 feeds`, `1 entry`, `3 entries`.
pub fn count(n: u64, one: &str) -> String {
    match (n, one.strip_suffix('y')) {
        (1, _) => format!("1 {one}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {one}s"),
    }
}

/// Bytes for people: 1.5 GiB.
pub fn human(bytes: u64) -> String {
    web_admin::format::bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
        assert_eq!(human(1536 << 20), "1.5 GiB");
    }
}
