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
use crate::space::{InviteCode, MemberRole};

use super::daemon::count;
use super::{Failure, Io};

#[derive(Debug, Subcommand)]
pub enum SpaceCmd {
    /// Create a new space, with this device its owner; prints its address.
    Create {
        /// What to call the space on this device (letters, digits, `-`, `_`, `.`).
        name: String,
        /// A space without roles: its invite code is its secret, every device that has it
        /// reads and writes for good, and nobody can be removed.
        #[arg(long)]
        open: bool,
    },
    /// List the spaces on this device: name and address.
    List,
    /// Invite one device into a space (owners only): prints a code that works once.
    Invite {
        /// Space name.
        name: String,
        /// What the device may do: reader, writer or owner.
        #[arg(long, default_value = "writer")]
        role: MemberRole,
        /// Who the device is for (a person's name): shown to members, never to seeders, and
        /// what `seeder space remove-member` takes to remove all of that person's devices.
        #[arg(long = "as", value_name = "PERSON")]
        label: Option<String>,
    },
    /// List the devices of a space, their roles, and pending invites.
    Members {
        /// Space name.
        name: String,
    },
    /// Remove a person's devices (or one device) from a space (owners only). Their files stay;
    /// what they write afterwards is refused, and new files use a key they never get.
    RemoveMember {
        /// Space name.
        name: String,
        /// A person's name given with `invite --as`, or 8+ hex digits of a device key.
        who: String,
    },
    /// Change the role of a person's devices (owners only).
    SetRole {
        /// Space name.
        name: String,
        /// A person's name given with `invite --as`, or 8+ hex digits of a device key.
        who: String,
        /// reader, writer or owner.
        role: MemberRole,
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
    /// Where to write (default: the file's or folder's name in the current folder; `-` for
    /// stdout). A folder's files go below it, recreated as in the space.
    local: Option<PathBuf>,
    /// A version id from `seeder conflicts` or `seeder log`.
    #[arg(long)]
    version: Option<String>,
    /// Replace local files that exist already (without it, `get` changes nothing and says
    /// which file is in the way).
    #[arg(long)]
    force: bool,
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

impl PutArgs {
    /// The space the command names.
    pub fn space(&self) -> &str {
        &self.name
    }
}

impl GetArgs {
    /// The space the command names.
    pub fn space(&self) -> &str {
        &self.name
    }
}

impl LsArgs {
    /// The space the command names.
    pub fn space(&self) -> &str {
        &self.name
    }
}

fn home_err(e: HomeError) -> anyhow::Error {
    let failure = match &e {
        HomeError::UnknownSpace(_) | HomeError::NotFound(_) => Failure::NotFound,
        HomeError::NotOwner { .. }
        | HomeError::ReadOnly(_)
        | HomeError::Removed(_)
        | HomeError::NoCurrentKey
        | HomeError::NotJoined(_) => Failure::Refused,
        HomeError::NoSuchMember { .. } => Failure::NotFound,
        HomeError::BadName(_)
        | HomeError::NameTaken(_)
        | HomeError::NotGoverned(_)
        | HomeError::Governed(_)
        | HomeError::RemoveSelf(_)
        | HomeError::StaysFrozen { .. }
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
        SpaceCmd::Create { name, open } => {
            let address = if open {
                home.create_space(&name, &mut rng)
            } else {
                home.create_governed(&name, &mut rng)
            }
            .map_err(home_err)?;
            if open {
                writeln!(
                    io.err,
                    "created space {name:?} without roles; give seeders its seed code: seeder \
                     space seed-code {name}"
                )?;
            } else {
                writeln!(
                    io.err,
                    "created space {name:?}; you are its owner. Invite a device: seeder space \
                     invite {name} --as PERSON [--role writer|reader|owner]; give seeders its \
                     seed code: seeder space seed-code {name}"
                )?;
            }
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
        SpaceCmd::Invite { name, role, label } => {
            let address = home.seed_code(&name).map_err(home_err)?.address();
            let governed = home.membership(&address).map_err(home_err)?.is_some();
            if !governed {
                if label.is_some() || role != MemberRole::Writer {
                    return Err(home_err(HomeError::NotGoverned(name)));
                }
                let code = home.invite(&name).map_err(home_err)?;
                writeln!(
                    io.err,
                    "this code gives full access to {name:?}: share it only with your own members"
                )?;
                writeln!(io.out, "{code}")?;
                return Ok(());
            }
            let label = match label {
                Some(l) => {
                    let l = l.trim().to_string();
                    if l.is_empty()
                        || l.len() > crate::space::members::MAX_LABEL
                        || l.chars().any(char::is_control)
                    {
                        return Err(anyhow::anyhow!(
                            "--as takes a name of 1 to {} bytes without control characters",
                            crate::space::members::MAX_LABEL
                        )
                        .context(Failure::BadInput));
                    }
                    l
                }
                None => {
                    let r = home.roster(&name).map_err(home_err)?;
                    format!("device {}", r.devices.len() + r.invites.len() + 1)
                }
            };
            let code = home
                .invite_device(&name, role, &label, &mut rng)
                .map_err(home_err)?;
            writeln!(
                io.err,
                "this code lets one device join {name:?} as a {role} ({label}); it works once. \
                 Run `seeder sync {name}` so a seeder has the invite before the device joins"
            )?;
            writeln!(io.out, "{code}")?;
        }
        SpaceCmd::Members { name } => {
            let r = home.roster(&name).map_err(home_err)?;
            for d in &r.devices {
                let mut state = Vec::new();
                if d.you {
                    state.push("this device".to_string());
                }
                if d.removed {
                    state.push(match d.frozen_at {
                        Some(n) if n > 0 => {
                            format!("removed, its first {} kept", count(n, "entry"))
                        }
                        _ => "removed".to_string(),
                    });
                } else if let Some(n) = d.frozen_at {
                    state.push(format!("writes frozen after {}", count(n, "entry")));
                }
                writeln!(
                    io.out,
                    "{}\t{}\t{}\t{}",
                    d.role,
                    shown(d.label.as_deref().unwrap_or(if d.first {
                        "(created the space)"
                    } else {
                        "?"
                    })),
                    hex::encode(&d.feed.0[..8]),
                    state.join(", ")
                )?;
            }
            for (role, label) in &r.invites {
                writeln!(
                    io.out,
                    "{role}\t{}\t(invited)\tnot joined yet",
                    shown(label.as_deref().unwrap_or("?"))
                )?;
            }
            writeln!(
                io.err,
                "epoch {}: {}",
                r.epoch,
                match r.role {
                    Some(role) => format!("this device is a {role}"),
                    None => "this device is not a member (yet)".to_string(),
                }
            )?;
            for c in &r.conflicts {
                writeln!(io.err, "ignored {c}")?;
            }
            if r.waiting > 0 {
                writeln!(
                    io.err,
                    "{} waiting for records not yet here",
                    count(r.waiting as u64, "record")
                )?;
            }
        }
        SpaceCmd::RemoveMember { name, who } => {
            let removed = home
                .remove_member(&name, &who, &mut rng)
                .map_err(home_err)?;
            for (feed, label, kept) in &removed.devices {
                writeln!(
                    io.out,
                    "removed {} ({}); what it wrote before stays: {}",
                    shown(label.as_deref().unwrap_or("device")),
                    hex::encode(&feed.0[..8]),
                    count(*kept, "entry")
                )?;
            }
            if removed.invites > 0 {
                writeln!(
                    io.out,
                    "revoked {}",
                    count(removed.invites as u64, "pending invite")
                )?;
            }
            writeln!(
                io.err,
                "epoch {}: files written from now on are readable only by the remaining devices. \
                 Run `seeder sync {name}` so seeders and members learn it",
                removed.epoch
            )?;
        }
        SpaceCmd::SetRole { name, who, role } => {
            let changed = home.set_role(&name, &who, role).map_err(home_err)?;
            for (feed, label) in &changed {
                writeln!(
                    io.out,
                    "{} ({}) is now a {role}",
                    shown(label.as_deref().unwrap_or("device")),
                    hex::encode(&feed.0[..8])
                )?;
            }
            writeln!(
                io.err,
                "run `seeder sync {name}` so seeders and members learn it"
            )?;
        }
        SpaceCmd::Join { code, name } => {
            let code: InviteCode = code
                .parse()
                .map_err(|e| anyhow::Error::new(e).context(Failure::BadInput))?;
            let address = home.join(&code, &name, &mut rng).map_err(home_err)?;
            if matches!(code, InviteCode::Device { .. }) {
                writeln!(
                    io.err,
                    "added {name:?}; this device joins it at its first sync with a seeder or \
                     member that has the invite: seeder sync {name}"
                )?;
            } else {
                writeln!(
                    io.err,
                    "joined as {name:?}; get its files with: seeder sync {name} (or a bundle)"
                )?;
            }
            writeln!(io.out, "{}", address.to_hex())?;
        }
        SpaceCmd::SeedCode { name } => {
            let code = home.seed_code(&name).map_err(home_err)?;
            writeln!(io.out, "{code}")?;
        }
    }
    Ok(())
}

/// A name another device chose, safe to print: control characters (a terminal escape, a
/// line break that would split a row) are shown as `?`.
fn shown(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn file_meta(md: &std::fs::Metadata) -> FileMeta {
    use std::os::unix::fs::MetadataExt;
    FileMeta {
        mode: md.mode() & 0o7777,
        // Out-of-range nanoseconds can't come from stat; fall back to whole seconds.
        mtime: Mtime::new(md.mtime(), md.mtime_nsec() as u32).unwrap_or_default(),
    }
}

/// How much a folder's `put` or `get` moved, and how fast, for its one closing line:
/// `1,204 files, 412.0 MiB in 6.2 s (66.5 MiB/s)`.
fn summary(files: u64, bytes: u64, elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs_f64();
    // Under a millisecond the rate is noise; say so rather than print a huge number.
    let rate = if secs < 0.001 {
        "instantly".to_string()
    } else {
        format!(
            "{}/s",
            web_admin::format::bytes((bytes as f64 / secs) as u64)
        )
    };
    format!(
        "{} file{}, {} in {secs:.1} s ({rate})",
        thousands(files),
        if files == 1 { "" } else { "s" },
        web_admin::format::bytes(bytes)
    )
}

/// `1204` as `1,204`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
    // A folder gets one bar over all its bytes and one closing line; a single file keeps its
    // own line (`path<TAB>N bytes`), which scripts read.
    let folder = md.is_dir();
    let started = std::time::Instant::now();
    let bar = progress_bar(needed, "put", io.terminal);
    let (mut done_files, mut done_bytes) = (0u64, 0u64);
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
            if !folder {
                writeln!(io.out, "{}\t{} bytes", path.shown(), content.len())?;
            }
            small.push((path, content, file_meta(&md)));
            if small_bytes >= SMALL_GROUP_BYTES || small.len() >= SMALL_GROUP_FILES {
                let group = std::mem::take(&mut small);
                let n = group.len() as u64;
                space.put_small(group).map_err(home_err)?;
                done_files += n;
                done_bytes += small_bytes as u64;
                bar.set_position(done_bytes);
                small_bytes = 0;
            }
            continue;
        }
        let mut f = std::fs::File::open(&local)
            .with_context(|| format!("cannot open {}", local.display()))?;
        let before = done_bytes;
        let state = space
            .put(&path, &mut f, file_meta(&md), &mut |n| {
                bar.set_position(before + n)
            })
            .map_err(home_err)?;
        done_files += 1;
        done_bytes += state.meta.size;
        bar.set_position(done_bytes);
        if !folder {
            writeln!(io.out, "{}\t{} bytes", state.path.shown(), state.meta.size)?;
        }
    }
    if !small.is_empty() {
        done_files += small.len() as u64;
        done_bytes += small_bytes as u64;
        space.put_small(small).map_err(home_err)?;
    }
    bar.finish_and_clear();
    if folder {
        writeln!(
            io.out,
            "put {}",
            summary(done_files, done_bytes, started.elapsed())
        )?;
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
    // `docs/` is `docs` (as a shell completes it); `/` is the whole space, as for `ls`.
    let asked = args.path.trim_end_matches('/');
    if asked.is_empty() && !args.path.is_empty() && args.version.is_none() {
        let view = space.view().map_err(home_err)?;
        return get_folder(&space, &view, None, &args, io);
    }
    let path = parse_path(if asked.is_empty() { &args.path } else { asked })?;
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
        None => match view.get(&path) {
            Some(file) => file.clone(),
            None if view.is_dir(&path) => return get_folder(&space, &view, Some(&path), &args, io),
            None => return Err(home_err(HomeError::NotFound(path.shown().to_string()))),
        },
    };
    match args.local.as_deref() {
        Some(p) if p == FsPath::new("-") => {
            space.read_content(&file, io.out).map_err(home_err)?;
            io.out.flush()?;
        }
        other => {
            let target = match other {
                // `out/` means a folder even before it exists (then the write says it is
                // missing, rather than creating a file named `out`).
                Some(p)
                    if io.resolve(p).is_dir()
                        || std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())
                            .ends_with(b"/") =>
                {
                    io.resolve(p).join(path.file_name())
                }
                Some(p) => io.resolve(p),
                None => io.resolve(FsPath::new(path.file_name())),
            };
            refuse_overwrite(std::slice::from_ref(&target), args.force)?;
            let bar = progress_bar(file.meta.size, "get", io.terminal);
            write_local(&space, &file, &target, &mut |n| bar.inc(n))?;
            bar.finish_and_clear();
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

/// `get` of a folder: every file below `dir` in the space, recreated below the local folder
/// (default: the folder's name in the current folder), with one closing line.
fn get_folder(
    space: &crate::fs::home::SpaceHandle<'_>,
    view: &View,
    dir: Option<&Path>,
    args: &GetArgs,
    io: &mut Io,
) -> Result<()> {
    let local_dir = match args.local.as_deref() {
        Some(p) if p == FsPath::new("-") => {
            return Err(anyhow::anyhow!(
                "{} is a folder: give a local folder to write its files to, not -",
                dir.map_or_else(|| "/".to_string(), |d| d.shown().to_string())
            )
            .context(Failure::BadInput))
        }
        Some(p) => io.resolve(p),
        // The whole space goes to a folder named after it.
        None => io.resolve(FsPath::new(
            dir.map_or(args.name.as_str(), |d| d.file_name()),
        )),
    };
    let depth = dir.map_or(0, |d| d.components().count());
    let mut files = Vec::new();
    for entry in view.list_recursive(dir) {
        if let ListEntry::File { file, .. } = entry {
            // Stored paths hold no `.`, `..`, empty component or NUL (checked when decoded), so
            // each component is one plain name and the file lands below `local_dir`.
            let mut target = local_dir.clone();
            for c in file.path.components().skip(depth) {
                target.push(c);
            }
            files.push((file, target));
        }
    }
    let targets: Vec<PathBuf> = files.iter().map(|(_, t)| t.clone()).collect();
    refuse_overwrite(&targets, args.force)?;
    for t in &targets {
        if let Some(parent) = t.parent() {
            folders(&local_dir, parent, false)?;
        }
    }
    let total: u64 = files.iter().map(|(f, _)| f.meta.size).sum();
    let started = std::time::Instant::now();
    let bar = progress_bar(total, "get", io.terminal);
    for (file, target) in &files {
        if let Some(parent) = target.parent() {
            folders(&local_dir, parent, true)?;
        }
        write_local(space, file, target, &mut |n| bar.inc(n))?;
    }
    bar.finish_and_clear();
    writeln!(
        io.err,
        "got {} → {}",
        summary(files.len() as u64, total, started.elapsed()),
        local_dir.display()
    )?;
    Ok(())
}

/// Refuse, before anything is written, when a target exists and `force` is off; a folder in
/// the way is refused even with `force` (a file can't replace it).
fn refuse_overwrite(targets: &[PathBuf], force: bool) -> Result<()> {
    let existing: Vec<(&PathBuf, std::fs::Metadata)> = targets
        .iter()
        .filter_map(|t| std::fs::symlink_metadata(t).ok().map(|md| (t, md)))
        .collect();
    if let Some((t, _)) = existing.iter().find(|(_, md)| md.is_dir()) {
        return Err(anyhow::anyhow!(
            "{} is a folder: give another place to write the file to",
            t.display()
        )
        .context(Failure::BadInput));
    }
    // A device, a pipe or a socket is never replaced by a file, --force or not (`get x
    // /dev/null --force` as root must not delete /dev/null).
    if let Some((t, _)) = existing
        .iter()
        .find(|(_, md)| !md.is_file() && !md.file_type().is_symlink())
    {
        return Err(anyhow::anyhow!(
            "{} is not a regular file (a device, a pipe or a socket): give another place to \
             write the file to, or - for stdout",
            t.display()
        )
        .context(Failure::BadInput));
    }
    match existing.first() {
        Some((first, _)) if !force => {
            let others = match existing.len() - 1 {
                0 => String::new(),
                n => format!(" (and {} more)", thousands(n as u64)),
            };
            Err(anyhow::anyhow!(
                "{} exists already{others}: nothing was written; give --force to replace it",
                first.display()
            )
            .context(Failure::BadInput))
        }
        _ => Ok(()),
    }
}

/// A local path that can't be used as asked (a folder that isn't one, or isn't ours) is bad
/// input; anything else is a failure.
fn local_failure(e: &std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::NotFound
        | std::io::ErrorKind::NotADirectory
        | std::io::ErrorKind::PermissionDenied => Failure::BadInput,
        _ => Failure::Internal,
    }
}

/// Check (`create` off) or create the folders from `root` down to `dir`, refusing to go
/// through anything but a folder below `root`: a link planted in the destination must not send
/// a space's files elsewhere, and a file in the way is reported before anything is written.
fn folders(root: &FsPath, dir: &FsPath, create: bool) -> Result<()> {
    let Ok(below) = dir.strip_prefix(root) else {
        return Ok(());
    };
    if create {
        std::fs::create_dir_all(root).map_err(|e| {
            let failure = local_failure(&e);
            anyhow::Error::new(plain_io(e))
                .context(format!("cannot create {}", root.display()))
                .context(failure)
        })?;
    }
    let mut at = root.to_path_buf();
    for c in below.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(anyhow::anyhow!(
                    "{} is in the way: it is not a folder (a file or a link); move it away and \
                     try again",
                    at.display()
                )
                .context(Failure::BadInput))
            }
            // Checking only: nothing exists below a missing folder.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|e| {
                    let failure = local_failure(&e);
                    anyhow::Error::new(plain_io(e))
                        .context(format!("cannot create {}", at.display()))
                        .context(failure)
                })?;
            }
            Err(e) => {
                let failure = local_failure(&e);
                return Err(anyhow::Error::new(plain_io(e))
                    .context(format!("cannot read {}", at.display()))
                    .context(failure));
            }
        }
    }
    Ok(())
}

/// Write `file` to `target` atomically; errors name `target`, never the temporary file beside
/// it.
fn write_local(
    space: &crate::fs::home::SpaceHandle<'_>,
    file: &FileState,
    target: &FsPath,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mode = if file.meta.mode == 0 {
        0o644
    } else {
        file.meta.mode & 0o777
    };
    // Written beside the target and renamed over it once complete and synced: an interrupted
    // get leaves the old file (or none), never half of the new one.
    let mut out = crate::store::file::AtomicFile::create(target, mode).map_err(|e| {
        let failure = local_failure(&e);
        anyhow::Error::new(plain_io(e))
            .context(format!("cannot write {}", target.display()))
            .context(failure)
    })?;
    let _partial = Partial::new(out.temp_path().to_path_buf());
    let mut counted = Counted {
        inner: out.file(),
        progress,
    };
    space
        .read_content(file, &mut counted)
        .map_err(|e| match e {
            HomeError::Io { source, .. } => anyhow::Error::new(plain_io(source))
                .context(format!("cannot write {}", target.display())),
            e => home_err(e),
        })?;
    out.commit()
        .map_err(plain_io)
        .with_context(|| format!("cannot write {}", target.display()))
}

/// Temporary files `get` is writing now. Dropped, a temporary file removes itself; a process
/// ended by a signal drops nothing, so an interrupted `get` removes them here (see
/// [`remove_partial_on_interrupt`]) rather than leave hidden files as large as what it fetched.
static PARTIAL: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// One entry of [`PARTIAL`], for as long as its file is being written.
struct Partial(PathBuf);

impl Partial {
    fn new(path: PathBuf) -> Partial {
        if let Ok(mut p) = PARTIAL.lock() {
            p.push(path.clone());
        }
        Partial(path)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Ok(mut p) = PARTIAL.lock() {
            p.retain(|q| *q != self.0);
        }
    }
}

/// From now on, Ctrl-C or SIGTERM removes the temporary files of a `get` under way and ends
/// the process (exit 130). For a command run in its own process only: a command forwarded to
/// a syncing process must not end that one.
pub fn remove_partial_on_interrupt() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // The handlers are in place when this returns, before anything is written: a signal
    // that comes while the watching thread is still starting is not missed.
    let signals = {
        let _in = runtime.enter();
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    let (Ok(mut interrupt), Ok(mut terminate)) = signals else {
        tracing::error!("cannot listen for Ctrl-C and SIGTERM");
        return;
    };
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        if let Ok(p) = PARTIAL.lock() {
            for f in p.iter() {
                let _ = std::fs::remove_file(f);
            }
        }
        std::process::exit(130);
    });
}

/// A writer that reports each write's length (for a progress bar).
struct Counted<'a, W: std::io::Write> {
    inner: W,
    progress: &'a mut dyn FnMut(u64),
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The OS error alone: the temporary-file layer adds the temporary file's own path to its
/// errors, which means nothing to the person who asked for another path.
fn plain_io(e: std::io::Error) -> std::io::Error {
    if let Some(code) = e.raw_os_error() {
        return std::io::Error::from_raw_os_error(code);
    }
    let mut source = e.get_ref().and_then(|inner| inner.source());
    while let Some(s) = source {
        if let Some(code) = s
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return std::io::Error::from_raw_os_error(code);
        }
        source = s.source();
    }
    // tempfile keeps the OS error only in its message: `… (os error 20) at path "…/.tmpX"`.
    let text = e.to_string();
    match text.find(" at path ") {
        Some(cut) => std::io::Error::new(e.kind(), text[..cut].to_string()),
        None => std::io::Error::from(e.kind()),
    }
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
        BundleError::Io { .. } | BundleError::Store(_) | BundleError::Home(_) => Failure::Internal,
        _ => Failure::Refused,
    };
    anyhow::Error::new(e).context(failure)
}

pub fn bundle(home: &Home, cmd: BundleCmd, io: &mut Io) -> Result<()> {
    match cmd {
        BundleCmd::Export { name, file } => {
            let file = io.resolve(&file);
            let space = home.space(&name).map_err(home_err)?;
            let s = home
                .export_bundle(space.address(), &file)
                .map_err(bundle_err)?;
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
            let s = home.import_bundle(&address, &file).map_err(bundle_err)?;
            writeln!(
                io.err,
                "imported into {name:?}: {} feeds, {} entries checked",
                s.feeds, s.entries
            )?;
            if s.left_out > 0 {
                writeln!(
                    io.err,
                    "left out {}: not writing members of the space",
                    count(s.left_out as u64, "feed")
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates_read_like_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(12_345_678), "12,345,678");
        let line = summary(1204, 412 << 20, std::time::Duration::from_millis(6200));
        assert_eq!(line, "1,204 files, 412.0 MiB in 6.2 s (66.5 MiB/s)");
        assert_eq!(
            summary(1, 5, std::time::Duration::ZERO),
            "1 file, 5 B in 0.0 s (instantly)"
        );
    }
}
