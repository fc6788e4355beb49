/*!
Member-side commands: spaces, files and bundles in a device's home. Each command opens the
home, does one thing and prints the result; codes and addresses go alone on the last line of
stdout so scripts can take them.
*/

use std::path::{Path as FsPath, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::fs::bundle::{self, BundleError};
use crate::fs::home::{FileMeta, Home, HomeError, Rng};
use crate::fs::{Change, FileState, ListEntry, Mtime, Path, View, CHUNK_SIZE};
use crate::space::InviteCode;

use super::{Failure, Io};

#[derive(Debug, Subcommand)]
pub enum SpaceCmd {
    /// Create a new space; prints its address.
    Create {
        /// What to call the space on this device (letters, digits, `-`, `_`, `.`).
        name: String,
    },
    /// List the spaces on this device: name and address.
    List,
    /// Print the invite code of a space: its secret, for your members' devices only.
    Invite {
        /// Space name.
        name: String,
    },
    /// Join a space with an invite code.
    Join {
        /// The invite code (invite-…) a member's `seeder space invite NAME` printed.
        code: String,
        /// Local name for the space on this device.
        #[arg(long)]
        name: String,
    },
    /// Print the seed code of a space: its address only, for seeders (they can't read it).
    SeedCode {
        /// Space name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Write every feed of a space (still encrypted) to one file.
    Export {
        /// Space name.
        name: String,
        /// The bundle file to write.
        file: PathBuf,
    },
    /// Check a bundle completely, then merge it into the space it belongs to.
    Import {
        /// The bundle file (from `seeder bundle export`).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Space name.
    name: String,
    /// Local file or folder to store.
    local: PathBuf,
    /// Where in the space (default: the local file's name; a folder's contents go under it).
    path: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Space name.
    name: String,
    /// The file (or folder) in the space.
    path: String,
    /// Where to write (default: the file's name in the current folder; `-` for stdout).
    local: Option<PathBuf>,
    /// A version id from `seeder conflicts` or `seeder log`.
    #[arg(long)]
    version: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Space name.
    name: String,
    /// A folder or file in the space [default: its top].
    path: Option<String>,
    /// Mode, size, modification time and the device that wrote each file.
    #[arg(long, short)]
    long: bool,
    /// Every file below, not only the folder's own entries.
    #[arg(long, short)]
    recursive: bool,
}

fn home_err(e: HomeError) -> anyhow::Error {
    let failure = match &e {
        HomeError::UnknownSpace(_) | HomeError::NotFound(_) => Failure::NotFound,
        HomeError::BadName(_)
        | HomeError::NameTaken(_)
        | HomeError::AlreadyJoined(_)
        | HomeError::IsFolder(_)
        | HomeError::Fs(_) => Failure::BadInput,
        HomeError::Busy(_) => Failure::Busy,
        // Writing now would make the device sign a second history of its feed.
        HomeError::OwnFeedBehind { .. } => Failure::Fork,
        HomeError::Store(crate::store::StoreError::Frozen(_)) => Failure::Fork,
        // Damaged on this disk: refused data, and `seeder sync` fetches a good copy.
        HomeError::Store(crate::store::StoreError::Integrity { .. })
        | HomeError::ContentMismatch { .. } => Failure::Refused,
        _ => Failure::Internal,
    };
    anyhow::Error::new(e).context(failure)
}

fn parse_path(s: &str) -> Result<Path> {
    Path::new(s).map_err(|e| anyhow::Error::new(e).context(Failure::BadInput))
}

pub fn space(home: &Home, cmd: SpaceCmd, io: &mut Io) -> Result<()> {
    let mut rng = Rng::default();
    match cmd {
        SpaceCmd::Create { name } => {
            let address = home.create_space(&name, &mut rng).map_err(home_err)?;
            writeln!(
                io.err,
                "created space {name:?}; give seeders its seed code: seeder space seed-code {name}"
            )?;
            writeln!(io.out, "{}", address.to_hex())?;
        }
        SpaceCmd::List => {
            let spaces = home.spaces().map_err(home_err)?;
            if spaces.is_empty() {
                writeln!(
                    io.err,
                    "no spaces yet in {} (seeder space create NAME or seeder space join CODE)",
                    home.dir().display()
                )?;
            }
            for s in spaces {
                writeln!(
                    io.out,
                    "{}\t{}\t{} feed{}",
                    s.name,
                    s.address.to_hex(),
                    s.feeds,
                    if s.feeds == 1 { "" } else { "s" }
                )?;
            }
        }
        SpaceCmd::Invite { name } => {
            let code = home.invite(&name).map_err(home_err)?;
            writeln!(
                io.err,
                "this code gives full access to {name:?}: share it only with your own members"
            )?;
            writeln!(io.out, "{code}")?;
        }
        SpaceCmd::Join { code, name } => {
            let code: InviteCode = code
                .parse()
                .map_err(|e| anyhow::Error::new(e).context(Failure::BadInput))?;
            let address = home.join(&code, &name, &mut rng).map_err(home_err)?;
            writeln!(
                io.err,
                "joined as {name:?}; get its files with: seeder sync {name} (or a bundle)"
            )?;
            writeln!(io.out, "{}", address.to_hex())?;
        }
        SpaceCmd::SeedCode { name } => {
            let code = home.seed_code(&name).map_err(home_err)?;
            writeln!(io.out, "{code}")?;
        }
    }
    Ok(())
}

fn file_meta(md: &std::fs::Metadata) -> FileMeta {
    use std::os::unix::fs::MetadataExt;
    FileMeta {
        mode: md.mode() & 0o7777,
        // Out-of-range nanoseconds can't come from stat; fall back to whole seconds.
        mtime: Mtime::new(md.mtime(), md.mtime_nsec() as u32).unwrap_or_default(),
    }
}

fn progress_bar(len: u64, label: &str, terminal: bool) -> indicatif::ProgressBar {
    if terminal {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("progress template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    }
}

pub fn put(home: &Home, mut args: PutArgs, io: &mut Io) -> Result<()> {
    args.local = io.resolve(&args.local);
    let space = home.space(&args.name).map_err(home_err)?;
    let md = std::fs::metadata(&args.local)
        .with_context(|| format!("cannot read {}", args.local.display()))
        .context(Failure::NotFound)?;
    let base = match &args.path {
        Some(p) => p.trim_end_matches('/').to_string(),
        None => args
            .local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("give a path in the space for this file")
            .context(Failure::BadInput)?,
    };
    let mut files = Vec::new();
    if md.is_dir() {
        collect(&args.local, &base, &mut files)?;
    } else {
        files.push((args.local.clone(), base));
    }
    // Every name is checked before anything is written: a folder holding one file whose name
    // can't be a path (a newline in it, say) is refused whole, with that name.
    let files = files
        .into_iter()
        .map(|(local, path)| Ok((local, parse_path(&path)?)))
        .collect::<Result<Vec<(PathBuf, Path)>>>()?;
    // Entries once written stay in the feed (it is append-only and signed): a put that runs out
    // of disk half-way leaves its chunks behind for good. So the room is checked first.
    let needed: u64 = files
        .iter()
        .map(|(local, _)| std::fs::metadata(local).map_or(0, |m| m.len()))
        .sum();
    if let Some(crate::wire::Refusal::DiskFull { free, .. }) = crate::daemon::local::disk_refusal(
        home.dir(),
        needed.saturating_add(needed / 32),
        crate::daemon::local::MEMBER_KEEP_FREE_PERCENT,
    ) {
        return Err(anyhow::anyhow!(
            "this device's disk has {} free: not enough for {} (and {} % kept free); nothing was \
             written",
            web_admin::format::bytes(free),
            web_admin::format::bytes(needed),
            crate::daemon::local::MEMBER_KEEP_FREE_PERCENT
        )
        .context(Failure::DiskFull));
    }
    // Small files go in groups of up to 4 MiB, each group one durable batch; larger files
    // stream through in chunks.
    let mut small: Vec<(Path, Vec<u8>, FileMeta)> = Vec::new();
    let mut small_bytes = 0usize;
    for (local, path) in files {
        let md = std::fs::metadata(&local)
            .with_context(|| format!("cannot read {}", local.display()))?;
        if md.len() <= CHUNK_SIZE as u64 {
            let content = std::fs::read(&local)
                .with_context(|| format!("cannot read {}", local.display()))?;
            small_bytes += content.len();
            writeln!(io.out, "{}\t{} bytes", path.shown(), content.len())?;
            small.push((path, content, file_meta(&md)));
            if small_bytes >= SMALL_GROUP_BYTES || small.len() >= SMALL_GROUP_FILES {
                space
                    .put_small(std::mem::take(&mut small))
                    .map_err(home_err)?;
                small_bytes = 0;
            }
            continue;
        }
        let mut f = std::fs::File::open(&local)
            .with_context(|| format!("cannot open {}", local.display()))?;
        let bar = progress_bar(md.len(), path.as_str(), io.terminal);
        let state = space
            .put(&path, &mut f, file_meta(&md), &mut |n| bar.set_position(n))
            .map_err(home_err)?;
        bar.finish_and_clear();
        writeln!(io.out, "{}\t{} bytes", state.path.shown(), state.meta.size)?;
    }
    if !small.is_empty() {
        space.put_small(small).map_err(home_err)?;
    }
    Ok(())
}

/// Small files are read into memory in groups of at most this many bytes…
const SMALL_GROUP_BYTES: usize = 4 << 20;
/// …or this many files, whichever comes first.
const SMALL_GROUP_FILES: usize = 1024;

/// Every file under `dir`, recursively, with its path in the space under `base`.
fn collect(dir: &FsPath, base: &str, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if base.is_empty() {
            name
        } else {
            format!("{base}/{name}")
        };
        let ty = e.file_type()?;
        if ty.is_dir() {
            collect(&e.path(), &path, out)?;
        } else if ty.is_file() {
            out.push((e.path(), path));
        }
    }
    Ok(())
}

pub fn get(home: &Home, args: GetArgs, io: &mut Io) -> Result<()> {
    let space = home.space(&args.name).map_err(home_err)?;
    let path = parse_path(&args.path)?;
    let view = space.view().map_err(home_err)?;
    let file: FileState = match &args.version {
        Some(spec) => {
            let id = view.resolve(spec).map_err(|e| {
                let failure = match e {
                    crate::fs::FsError::NoSuchVersion(_) => Failure::NotFound,
                    _ => Failure::BadInput,
                };
                anyhow::Error::new(e).context(failure)
            })?;
            view.version(&id)
                .and_then(|v| v.file_at(&path))
                .cloned()
                .ok_or_else(|| HomeError::NotFound(format!("{} in version {spec}", path.shown())))
                .map_err(home_err)?
        }
        None => view
            .get(&path)
            .cloned()
            .ok_or_else(|| HomeError::NotFound(path.shown().to_string()))
            .map_err(home_err)?,
    };
    match args.local.as_deref() {
        Some(p) if p == FsPath::new("-") => {
            space.read_content(&file, io.out).map_err(home_err)?;
            io.out.flush()?;
        }
        other => {
            let target = match other {
                Some(p) if io.resolve(p).is_dir() => io.resolve(p).join(path.file_name()),
                Some(p) => io.resolve(p),
                None => io.resolve(FsPath::new(path.file_name())),
            };
            let mode = if file.meta.mode == 0 {
                0o644
            } else {
                file.meta.mode & 0o777
            };
            // Written beside the target and renamed over it once complete and synced: an
            // interrupted get leaves the old file (or none), never half of the new one.
            let mut out = crate::store::file::AtomicFile::create(&target, mode)
                .with_context(|| format!("cannot create a file beside {}", target.display()))?;
            space.read_content(&file, out.file()).map_err(home_err)?;
            out.commit()
                .with_context(|| format!("cannot write {}", target.display()))?;
            writeln!(
                io.err,
                "{} → {} ({} bytes)",
                file.path.shown(),
                target.display(),
                file.meta.size
            )?;
        }
    }
    Ok(())
}

pub fn ls(home: &Home, args: LsArgs, io: &mut Io) -> Result<()> {
    let space = home.space(&args.name).map_err(home_err)?;
    let view = space.view().map_err(home_err)?;
    let prefix = match &args.path {
        Some(p) if !p.is_empty() && p != "/" => Some(parse_path(p)?),
        _ => None,
    };
    if let Some(p) = &prefix {
        if let Some(file) = view.get(p) {
            print_file(&view, file, args.long, file.path.as_str(), io)?;
            return Ok(());
        }
    }
    let entries = if args.recursive {
        view.list_recursive(prefix.as_ref())
    } else {
        view.list(prefix.as_ref())
    };
    if entries.is_empty() && prefix.is_some() {
        return Err(home_err(HomeError::NotFound(args.path.unwrap_or_default())));
    }
    for entry in entries {
        match entry {
            ListEntry::Dir(path) => writeln!(io.out, "{}/", path.shown())?,
            ListEntry::File { file, conflicted } => {
                // Plain listings stay bare names for scripts; the long one flags conflicts.
                let mark = if conflicted && args.long {
                    "\t(conflict: see seeder conflicts)"
                } else {
                    ""
                };
                print_file(
                    &view,
                    file,
                    args.long,
                    &format!("{}{mark}", file.path.shown()),
                    io,
                )?;
            }
        }
    }
    Ok(())
}

/// A device as people see it: its name and its feed's short id (names can repeat).
fn device(view: &View, feed: &crate::feed::FeedKey) -> String {
    match view.device_name(feed) {
        Some(name) => format!("{}({})", crate::fs::Path::escape(name), feed.short()),
        None => feed.short(),
    }
}

fn print_file(view: &View, file: &FileState, long: bool, name: &str, io: &mut Io) -> Result<()> {
    if long {
        writeln!(
            io.out,
            "{:04o}\t{}\t{}\t{}\t{}",
            file.meta.mode,
            file.meta.size,
            format_time(file.meta.mtime.secs),
            device(view, &file.writer()),
            name
        )?;
    } else {
        writeln!(io.out, "{name}")?;
    }
    Ok(())
}

/// UTC `YYYY-MM-DD HH:MM:SS` without a time-zone database.
pub fn format_time(secs: i64) -> String {
    web_admin::format::datetime(secs)
}

pub fn rm(home: &Home, name: &str, path: &str) -> Result<()> {
    let space = home.space(name).map_err(home_err)?;
    space.remove(&parse_path(path)?).map_err(home_err)
}

pub fn mv(home: &Home, name: &str, from: &str, to: &str) -> Result<()> {
    let space = home.space(name).map_err(home_err)?;
    space
        .rename(&parse_path(from)?, &parse_path(to)?)
        .map_err(home_err)
}

pub fn log(home: &Home, name: &str, io: &mut Io) -> Result<()> {
    let space = home.space(name).map_err(home_err)?;
    let view = space.view().map_err(home_err)?;
    for v in view.history(None) {
        let what = match &v.change {
            Change::Put(f) => format!("put {} ({} bytes)", f.path.shown(), f.meta.size),
            Change::Delete(p) => format!("rm {}", p.shown()),
            Change::Rename { from, file } => format!("mv {} {}", from.shown(), file.path.shown()),
        };
        writeln!(
            io.out,
            "{}\t{}\t{}\t{}",
            v.id,
            device(&view, &v.id.feed),
            what,
            v.clock
        )?;
    }
    Ok(())
}

pub fn conflicts(home: &Home, name: &str, path: Option<&str>, io: &mut Io) -> Result<()> {
    let space = home.space(name).map_err(home_err)?;
    let view = space.view().map_err(home_err)?;
    let path = path.map(parse_path).transpose()?;
    for c in view.conflicts(path.as_ref()) {
        for loser in &c.losers {
            let what = match loser.file_at(c.path) {
                Some(f) => format!("{} bytes", f.meta.size),
                None => "deleted".to_string(),
            };
            writeln!(
                io.out,
                "{}\t{}\t{}\tby {}\t(kept: {} by {})",
                loser.id,
                c.path.shown(),
                what,
                device(&view, &loser.id.feed),
                c.winner.id,
                device(&view, &c.winner.id.feed)
            )?;
        }
    }
    Ok(())
}

fn bundle_err(e: BundleError) -> anyhow::Error {
    let failure = match &e {
        BundleError::Io { .. } | BundleError::Store(_) => Failure::Internal,
        _ => Failure::Refused,
    };
    anyhow::Error::new(e).context(failure)
}

pub fn bundle(home: &Home, cmd: BundleCmd, io: &mut Io) -> Result<()> {
    match cmd {
        BundleCmd::Export { name, file } => {
            let file = io.resolve(&file);
            let space = home.space(&name).map_err(home_err)?;
            let certs = home.members(space.address()).map_err(home_err)?;
            let s =
                bundle::export(home.store(), space.address(), &certs, &file).map_err(bundle_err)?;
            writeln!(
                io.err,
                "wrote {}: {} feeds, {} entries, {} bytes",
                file.display(),
                s.feeds,
                s.entries,
                s.bytes
            )?;
        }
        BundleCmd::Import { file } => {
            let file = io.resolve(&file);
            let address = bundle::peek_address(&file).map_err(bundle_err)?;
            let Some(name) = home.name_of(&address).map_err(home_err)? else {
                return Err(bundle_err(BundleError::OtherSpace(address)));
            };
            let s = bundle::import(home.store(), &address, &file, &mut |cert| {
                home.add_member(&address, cert)
                    .map_err(|e| BundleError::Tampered(e.to_string()))
            })
            .map_err(bundle_err)?;
            writeln!(
                io.err,
                "imported into {name:?}: {} feeds, {} entries checked",
                s.feeds, s.entries
            )?;
        }
    }
    Ok(())
}
