/*!
The `seeder` command line: argument parsing and the people-facing edge. Commands turn their
arguments into validated values, call the layers below, and print what a person needs: results
on stdout (codes and addresses alone on the last line, so scripts can take them), progress and
errors on stderr. `anyhow` lives here and in `main`, nowhere below.

Exit codes: 0 success; 1 the space, path or version asked for does not exist; 2 bad input
(a mistyped or wrong kind of code, a bad name or path, a usage error); 3 refused data (a
tampered bundle, a bundle of another space); 4 busy (another command holds the home);
5 any other failure (disk, permissions).
*/

mod bench;
mod bench_admin;
mod bench_attack;
mod bench_members;
mod bench_sync;
mod board;
mod daemon;
mod disk;
mod forward;
mod member;
mod sync;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// What kind of failure an error is, for the exit code. Attached as `anyhow` context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    BadInput,
    Refused,
    Busy,
    Internal,
    /// A peer could not be reached, or not kept, before the deadline.
    Unreachable,
    /// A seeder's disk is full: it refused (some of) the data.
    DiskFull,
    /// A quota (the space's or an agreement's) on a seeder is reached.
    Quota,
    /// The peer does not hold the space (or could not be shown it is known here).
    NotHeld,
    /// A writer signed two histories: the feed is frozen.
    Fork,
    /// A peer could serve only part of the data (its copy is damaged and not yet repaired).
    Incomplete,
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::NotFound => 1,
            Failure::BadInput => 2,
            Failure::Refused => 3,
            Failure::Busy => 4,
            Failure::Internal => 5,
            Failure::Unreachable => 6,
            Failure::DiskFull => 7,
            Failure::Quota => 8,
            Failure::NotHeld => 9,
            Failure::Fork => 10,
            Failure::Incomplete => 11,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The context line itself stays silent: the error below it says what happened.
        f.write_str("")
    }
}

/// Exit code for an error returned by [`run`].
pub fn exit_code(err: &anyhow::Error) -> u8 {
    // `downcast_ref` sees context values through every layer of context.
    err.downcast_ref::<Failure>()
        .copied()
        .unwrap_or(Failure::Internal)
        .exit_code()
}

/// Keeps encrypted multi-writer file spaces online and backed up without being able to read
/// them.
#[derive(Debug, Parser)]
#[command(name = "seeder", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// This device's home folder [default: $SEEDER_HOME, else $XDG_DATA_HOME/seeder, else
    /// ~/.local/share/seeder].
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 done; 1 not found; 2 bad input; 3 refused data; \
4 home busy; 5 other failure; 6 peer unreachable; 7 a disk is full (a seeder's, or this device's \
for put); 8 a quota is \
reached; 9 the seeder does not hold the space; 10 a writer forked; 11 a seeder could serve only \
part (its copy is damaged, not yet repaired).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, join and share spaces.
    Space {
        #[command(subcommand)]
        cmd: member::SpaceCmd,
    },
    /// Store a file or a folder in a space.
    Put(member::PutArgs),
    /// Write a file of a space to a local file or stdout.
    Get(member::GetArgs),
    /// List files of a space.
    Ls(member::LsArgs),
    /// Delete a file.
    Rm {
        /// Space name.
        name: String,
        /// The file in the space.
        path: String,
    },
    /// Move or rename a file.
    Mv {
        /// Space name.
        name: String,
        /// The file's path in the space now.
        from: String,
        /// Its new path.
        to: String,
    },
    /// The history of a space, with vector clocks.
    Log {
        /// Space name.
        name: String,
    },
    /// Versions that lost a conflict, each with an id for `seeder get --version`.
    Conflicts {
        /// Space name.
        name: String,
        /// Only this file's [default: every file's].
        path: Option<String>,
    },
    /// Exchange a space's feeds with seeders over the network.
    Sync(sync::SyncArgs),
    /// Whether your data is backed up: what each seeder acknowledged storing of a space,
    /// per feed, and when.
    Status {
        /// Space name.
        name: String,
    },
    /// Read back and check every entry of a space held here; damaged ones are fetched again
    /// from a seeder at the next sync.
    Check {
        /// Space name.
        name: String,
    },
    /// Offline exchange: a space's feeds in one file.
    Bundle {
        #[command(subcommand)]
        cmd: member::BundleCmd,
    },
    /// Run the seeder daemon: hold spaces by seed code and replicate them over QUIC.
    Serve(daemon::ServeArgs),
    /// Control a running daemon through its socket.
    Ctl(daemon::CtlArgs),
    /// The data disk: list block devices, prepare one (as root).
    Disk(disk::DiskArgs),
    /// The appliance's status LED and power button (as root, beside the daemon).
    Board(board::BoardArgs),
    /// Measure performance; prints one `name value unit` line per figure.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn home_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os("SEEDER_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("seeder"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("no home folder: pass --home DIR or set SEEDER_HOME"))?;
    Ok(PathBuf::from(home).join(".local/share/seeder"))
}

fn open_home(flag: Option<PathBuf>) -> anyhow::Result<crate::fs::home::Home> {
    let dir = home_dir(flag)?;
    crate::fs::home::Home::open(&dir).map_err(|e| {
        let failure = match e {
            crate::fs::home::HomeError::Busy(_) => Failure::Busy,
            _ => Failure::Internal,
        };
        anyhow::Error::new(e).context(failure)
    })
}

/// Where a member command writes and how it finds relative paths: this process's own
/// stdout, stderr and folder, or those of a command forwarded to the process holding the home
/// (see [`forward`]).
pub struct Io<'a> {
    pub out: &'a mut dyn std::io::Write,
    pub err: &'a mut dyn std::io::Write,
    /// Progress bars only for a person at a terminal.
    pub terminal: bool,
    /// Relative local paths are taken from here.
    pub cwd: PathBuf,
}

impl Io<'_> {
    /// `path` as the person who typed it meant it.
    /// `./` and doubled slashes are dropped (`/tmp/out/./big.bin` prints as `/tmp/out/big.bin`);
    /// `..` is kept, since it means something else past a symbolic link.
    pub fn resolve(&self, path: &std::path::Path) -> PathBuf {
        self.cwd.join(path).components().collect()
    }
}

/// Run the command line; `main` prints the error chain and picks the exit code.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { which } => bench::run(which),
        Command::Serve(args) => daemon::serve(args),
        Command::Ctl(args) => daemon::ctl(args),
        Command::Disk(args) => disk::run(args),
        Command::Board(args) => board::run(args),
        Command::Sync(args) => sync::sync(open_home(cli.home)?, args),
        command => {
            let dir = home_dir(cli.home)?;
            // Nothing to read in a home that doesn't exist: say so rather than make one.
            if !dir.exists() {
                match &command {
                    Command::Space {
                        cmd: member::SpaceCmd::Create { .. } | member::SpaceCmd::Join { .. },
                    } => {}
                    Command::Space {
                        cmd: member::SpaceCmd::List,
                    } => {
                        eprintln!(
                            "no spaces yet: this device's home would be {} \
                             (seeder space create NAME or seeder space join CODE makes it)",
                            dir.display()
                        );
                        return Ok(());
                    }
                    other => {
                        let named = match other {
                            Command::Put(a) => Some(a.space()),
                            Command::Get(a) => Some(a.space()),
                            Command::Ls(a) => Some(a.space()),
                            Command::Rm { name, .. }
                            | Command::Mv { name, .. }
                            | Command::Log { name }
                            | Command::Conflicts { name, .. }
                            | Command::Status { name }
                            | Command::Check { name } => Some(name.as_str()),
                            _ => None,
                        };
                        let which =
                            named.map_or(String::new(), |n| format!("no space named {n:?}: "));
                        return Err(anyhow::anyhow!(
                            "{which}this device has no spaces yet (no home at {}): seeder space \
                             create NAME or seeder space join CODE makes one",
                            dir.display()
                        )
                        .context(Failure::NotFound));
                    }
                }
            }
            // A `seeder sync` holding the home runs the command for us.
            if let Some(stream) = forward::connect(&dir) {
                let code = forward::forward(stream)?;
                if code == 0 {
                    return Ok(());
                }
                std::process::exit(i32::from(code));
            }
            let home = match crate::fs::home::Home::open(&dir) {
                Ok(home) => home,
                Err(e) => {
                    let failure = match e {
                        crate::fs::home::HomeError::Busy(_) => Failure::Busy,
                        _ => Failure::Internal,
                    };
                    return Err(anyhow::Error::new(e).context(failure));
                }
            };
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let mut out = stdout.lock();
            let mut err = stderr.lock();
            use std::io::IsTerminal;
            let mut io = Io {
                terminal: std::io::stderr().is_terminal(),
                out: &mut out,
                err: &mut err,
                cwd: std::env::current_dir().context("the current folder")?,
            };
            if matches!(command, Command::Get(_)) {
                member::remove_partial_on_interrupt();
            }
            member_command(&home, command, &mut io)
        }
    }
}

/// Run one member command against an open home.
fn member_command(
    home: &crate::fs::home::Home,
    command: Command,
    io: &mut Io,
) -> anyhow::Result<()> {
    match command {
        Command::Space { cmd } => member::space(home, cmd, io),
        Command::Put(args) => member::put(home, args, io),
        Command::Get(args) => member::get(home, args, io),
        Command::Ls(args) => member::ls(home, args, io),
        Command::Rm { name, path } => member::rm(home, &name, &path),
        Command::Mv { name, from, to } => member::mv(home, &name, &from, &to),
        Command::Log { name } => member::log(home, &name, io),
        Command::Conflicts { name, path } => member::conflicts(home, &name, path.as_deref(), io),
        Command::Bundle { cmd } => member::bundle(home, cmd, io),
        Command::Status { name } => sync::status(home, &name, io),
        Command::Check { name } => sync::check(home, &name, io),
        Command::Sync(_)
        | Command::Serve(_)
        | Command::Ctl(_)
        | Command::Disk(_)
        | Command::Board(_)
        | Command::Bench { .. } => Err(anyhow::anyhow!(
            "only file and space commands can run in a syncing home"
        )
        .context(Failure::Busy)),
    }
}

/// Log to stderr (the journal, under systemd), filtered by `RUST_LOG` (default `info` for the
/// daemon, `warn` for commands). The daemon also keeps its recent lines at `info` and above
/// for the admin page ([`crate::daemon::logring`]).
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let daemon = matches!(std::env::args().nth(1).as_deref(), Some("serve" | "board"));
    // RUST_LOG's `level` and `target=level` directives (span and field filters, which would
    // bring a regex engine into the binary, are not taken).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(if daemon {
                tracing::Level::INFO
            } else {
                tracing::Level::WARN
            })
        });
    use std::io::IsTerminal;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for people; the journal and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let ring = daemon.then(|| {
        crate::daemon::logring::LogRing::global()
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(ring)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn undocumented(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" || sub.is_hide_set() {
                continue;
            }
            let path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() {
                missing.push(path.clone());
            }
            undocumented(sub, &path, missing);
        }
    }

    #[test]
    fn every_command_and_argument_a_person_types_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "seeder", &mut missing);
        assert!(missing.is_empty(), "no help text for: {missing:#?}");
    }
}
