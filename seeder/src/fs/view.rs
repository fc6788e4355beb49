/*!
The merged view of a space: every member feed's file ops, combined into one file tree.

Ops are applied one at a time with [`View::apply`], in any order; the result depends only on the
set of ops applied. Chunks are ignored (the view holds metadata only; content is fetched through
a file's [`ContentRef`]).

# Rules
- Op `B` *follows* op `A` iff `B.clock[A.feed] > A.seq`.
- A put or a rename's put side *puts* a path; a delete or a rename's delete side (at `from`)
  *deletes* it.
- The **heads** of a path are the ops on it that no other op on it follows.
- One head: it decides (put → the file exists, delete → it does not).
- Several heads: if any puts, the winner is the putting head with the largest
  `(clock.sum(), feed key, seq)`; the other heads, puts and deletes alike, are the path's
  **conflict** losers and stay readable by their [`VersionId`]. If all heads delete, the path
  is absent and there is no conflict.
- A conflict ends when an op that follows all its heads is applied: any put, delete or rename
  of the path written after seeing them (the CLI's `conflicts --keep` is such a put).

# Cost
Per path the view keeps its heads and `reach`, the pointwise maximum of the clocks of all ops
on the path. An arriving op `X` is dominated iff `reach[X.feed] > X.seq` (some op already
applied follows it), and it removes the heads it follows. This is exactly the set definition
above, whatever the arrival order and whatever the clocks, at O(heads + clock size) per op
rather than a scan of the path's history. Existing files sit in a `BTreeMap` by path, so a
directory listing is a range scan that jumps over subdirectories.

Invariants: `files` holds exactly the paths whose heads include a putting op, each mapped to
its winner; `conflicted` holds exactly the paths among those with more than one head.
*/

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::str::FromStr;

use super::{ContentRef, FileMeta, FsError, Path, Record, VectorClock};
use crate::feed::FeedKey;

/// One op: entry `seq` of feed `feed`. Printed `a1b2c3d4:17` (short feed key, seq); see
/// [`VersionSpec`] and [`View::resolve`] for reading it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId {
    pub feed: FeedKey,
    pub seq: u64,
}

impl VersionId {
    /// With the whole feed key, unambiguous in any space: `<64 hex>:<seq>`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.feed.to_hex(), self.seq)
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.feed.short(), self.seq)
    }
}

/// A version id as a person types it: a hex prefix of the feed key (1 to 64 digits, any case),
/// `:`, the sequence number. [`View::resolve`] turns it into a [`VersionId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionSpec {
    /// Lowercase hex digits.
    prefix: String,
    seq: u64,
}

impl VersionSpec {
    /// Whether `id` is one this spec can mean.
    pub fn matches(&self, id: &VersionId) -> bool {
        id.seq == self.seq && id.feed.to_hex().starts_with(&self.prefix)
    }
}

impl FromStr for VersionSpec {
    type Err = FsError;
    fn from_str(s: &str) -> Result<Self, FsError> {
        let bad = || FsError::BadVersionId(s.to_owned());
        let (prefix, seq) = s.split_once(':').ok_or_else(bad)?;
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(VersionSpec {
            prefix: prefix.to_ascii_lowercase(),
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.prefix, self.seq)
    }
}

/// A decoded entry and its place: what [`View::apply`] takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub feed: FeedKey,
    pub seq: u64,
    pub record: Record,
}

/// A file as one op left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    pub path: Path,
    pub meta: FileMeta,
    /// The op that wrote this state; its feed is the writing device.
    pub version: VersionId,
}

impl FileState {
    /// The feed (device) that wrote this state.
    pub fn writer(&self) -> FeedKey {
        self.version.feed
    }
}

/// What an op did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `file.path` now holds `file`.
    Put(FileState),
    /// The path no longer exists.
    Delete(Path),
    /// `from` no longer exists, `file.path` holds `file`.
    Rename { from: Path, file: FileState },
}

/// One applied file op: its id, its writer's clock and what it did. Losers of conflicts and
/// every past state stay available as `Version`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub id: VersionId,
    pub clock: VectorClock,
    pub change: Change,
}

impl Version {
    /// Whether this op's writer had seen `other` (`self.clock[other.feed] > other.seq`).
    pub fn follows(&self, other: &Version) -> bool {
        self.clock.has_seen(&other.id.feed, other.id.seq)
    }

    /// The file this op wrote, if it wrote one.
    pub fn file(&self) -> Option<&FileState> {
        match &self.change {
            Change::Put(f) | Change::Rename { file: f, .. } => Some(f),
            Change::Delete(_) => None,
        }
    }

    /// The file this op wrote at `path`; `None` if it deleted `path` or did not touch it.
    pub fn file_at(&self, path: &Path) -> Option<&FileState> {
        self.file().filter(|f| &f.path == path)
    }

    /// The paths this op touches: one, or two for a rename (`from` first).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        let (a, b) = match &self.change {
            Change::Put(f) => (&f.path, None),
            Change::Delete(p) => (p, None),
            Change::Rename { from, file } => (from, Some(&file.path)),
        };
        std::iter::once(a).chain(b)
    }

    /// Order among concurrent heads: the largest wins.
    fn rank(&self) -> (u64, FeedKey, u64) {
        (self.clock.sum(), self.id.feed, self.id.seq)
    }
}

/// One line of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListEntry<'a> {
    /// A directory: some file exists below it.
    Dir(Path),
    /// A file, and whether it has unresolved conflicts.
    File {
        file: &'a FileState,
        conflicted: bool,
    },
}

impl ListEntry<'_> {
    /// Full path of the entry.
    pub fn path(&self) -> &Path {
        match self {
            ListEntry::Dir(p) => p,
            ListEntry::File { file, .. } => &file.path,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, ListEntry::Dir(_))
    }
}

/// A path whose heads are concurrent: the current winner and the losers, best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict<'a> {
    pub path: &'a Path,
    /// The version the path shows; it puts `path`.
    pub winner: &'a Version,
    /// Concurrent versions that lost: puts (readable via [`Version::file_at`]), deletes and
    /// renames (a rename away from `path` loses as a delete).
    pub losers: Vec<&'a Version>,
}

#[derive(Default)]
struct PathState {
    /// Pointwise maximum of the clocks of every op on this path.
    reach: VectorClock,
    /// Indexes into `View::versions` of the ops on this path no other op on it follows.
    heads: Vec<usize>,
    /// Every op on this path, in arrival order.
    ops: Vec<usize>,
}

/// The merged file tree of a space. See the module comment for the rules.
#[derive(Default)]
pub struct View {
    /// Every applied file op, in arrival order.
    versions: Vec<Version>,
    index: HashMap<VersionId, usize>,
    paths: HashMap<Path, PathState>,
    /// Existing files → index of the winning version.
    files: BTreeMap<Path, usize>,
    /// Existing files with more than one head.
    conflicted: BTreeSet<Path>,
    /// Merge of every applied op's clock.
    frontier: VectorClock,
    /// Latest device name of each feed, with its seq.
    devices: BTreeMap<FeedKey, (u64, String)>,
}

impl View {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply one op. Returns whether the view learnt something: `false` for chunks and for an
    /// op already applied. An op is refused ([`FsError::BadOp`], or the record's own error)
    /// when its record is invalid, its clock does not count itself (`clock[feed] != seq + 1`),
    /// or its content is not entries its writer had seen (before the op in its own feed,
    /// within its clock in another). Refusal depends on the op alone, so every member refuses
    /// the same ops.
    ///
    /// Ops are identified by `(feed, seq)`; the feed layer guarantees one entry per place, so a
    /// second, different op at the same place is not looked at.
    pub fn apply(&mut self, op: Op) -> Result<bool, FsError> {
        let Op { feed, seq, record } = op;
        let id = VersionId { feed, seq };
        record.check()?;
        let (clock, change) = match record {
            Record::Chunk(_) => return Ok(false),
            Record::Device { name } => {
                if self.devices.get(&feed).is_some_and(|(s, _)| *s >= seq) {
                    return Ok(false);
                }
                self.devices.insert(feed, (seq, name));
                return Ok(true);
            }
            Record::Put { path, meta, clock } => (
                clock,
                Change::Put(FileState {
                    path,
                    meta,
                    version: id,
                }),
            ),
            Record::Delete { path, clock } => (clock, Change::Delete(path)),
            Record::Rename {
                from,
                to,
                meta,
                clock,
            } => (
                clock,
                Change::Rename {
                    from,
                    file: FileState {
                        path: to,
                        meta,
                        version: id,
                    },
                },
            ),
        };
        if self.index.contains_key(&id) {
            return Ok(false);
        }
        check_op(id, &clock, change_content(&change))?;

        let idx = self.versions.len();
        self.frontier.merge(&clock);
        self.versions.push(Version { id, clock, change });
        self.index.insert(id, idx);
        let (first, second) = {
            let mut paths = self.versions[idx].paths().cloned();
            (paths.next().expect("an op touches a path"), paths.next())
        };
        self.place(idx, &first);
        if let Some(second) = second {
            self.place(idx, &second);
        }
        Ok(true)
    }

    /// Record version `idx` on `path`: update the heads, then the winner if they changed.
    fn place(&mut self, idx: usize, path: &Path) {
        let versions = &self.versions;
        let v = &versions[idx];
        if !self.paths.contains_key(path) {
            self.paths.insert(path.clone(), PathState::default());
        }
        let state = self.paths.get_mut(path).expect("inserted above");
        state.ops.push(idx);
        let dominated = state.reach.has_seen(&v.id.feed, v.id.seq);
        let before = state.heads.len();
        state.heads.retain(|&h| !v.follows(&versions[h]));
        let changed = !dominated || state.heads.len() != before;
        if !dominated {
            state.heads.push(idx);
        }
        state.reach.merge(&v.clock);
        if !changed {
            return;
        }

        let winner = state
            .heads
            .iter()
            .copied()
            .filter(|&h| versions[h].file_at(path).is_some())
            .max_by_key(|&h| versions[h].rank());
        let conflicted = winner.is_some() && state.heads.len() > 1;
        match winner {
            Some(w) => match self.files.get_mut(path) {
                Some(slot) => *slot = w,
                None => {
                    self.files.insert(path.clone(), w);
                }
            },
            None => {
                self.files.remove(path);
            }
        }
        if conflicted {
            if !self.conflicted.contains(path) {
                self.conflicted.insert(path.clone());
            }
        } else {
            self.conflicted.remove(path);
        }
    }

    /// The file at `path`, if it exists.
    pub fn get(&self, path: &Path) -> Option<&FileState> {
        self.files.get(path).map(|&i| {
            self.versions[i]
                .file_at(path)
                .expect("a path's winner puts that path")
        })
    }

    /// Whether `path` exists as a directory (some file exists below it).
    pub fn is_dir(&self, path: &Path) -> bool {
        let start = format!("{path}/");
        self.files
            .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
            .next()
            .is_some_and(|(p, _)| p.as_str().starts_with(&start))
    }

    /// The direct children of directory `dir` (`None`: the top level), sorted by path,
    /// a directory before a file of the same name. Empty if `dir` is not a directory.
    pub fn list(&self, dir: Option<&Path>) -> Vec<ListEntry<'_>> {
        let start = dir.map(|d| format!("{d}/")).unwrap_or_default();
        let mut out = Vec::new();
        let mut from = start.clone();
        'seek: loop {
            let range = self
                .files
                .range::<str, _>((Bound::Included(from.as_str()), Bound::Unbounded));
            for (path, &idx) in range {
                let Some(rest) = path.as_str().strip_prefix(start.as_str()) else {
                    break 'seek;
                };
                if let Some(slash) = rest.find('/') {
                    let sub = &path.as_str()[..start.len() + slash];
                    out.push(ListEntry::Dir(
                        Path::new(sub).expect("a directory of a valid path is a valid path"),
                    ));
                    // Every path below `sub/` sorts before `sub0` ('0' follows '/'): jump there.
                    from = format!("{sub}0");
                    continue 'seek;
                }
                out.push(self.file_entry(path, idx));
            }
            break;
        }
        out.sort_by(|a, b| {
            a.path()
                .cmp(b.path())
                .then_with(|| b.is_dir().cmp(&a.is_dir()))
        });
        out
    }

    /// Every file below directory `dir` (`None`: every file), sorted by path.
    pub fn list_recursive(&self, dir: Option<&Path>) -> Vec<ListEntry<'_>> {
        let start = dir.map(|d| format!("{d}/")).unwrap_or_default();
        self.files
            .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
            .take_while(|(p, _)| p.as_str().starts_with(&start))
            .map(|(p, &idx)| self.file_entry(p, idx))
            .collect()
    }

    fn file_entry(&self, path: &Path, idx: usize) -> ListEntry<'_> {
        ListEntry::File {
            file: self.versions[idx]
                .file_at(path)
                .expect("a path's winner puts that path"),
            conflicted: self.conflicted.contains(path),
        }
    }

    /// Unresolved conflicts at `path` or below it (`None`: all), sorted by path.
    pub fn conflicts(&self, path: Option<&Path>) -> Vec<Conflict<'_>> {
        self.conflicted
            .iter()
            .filter(|p| path.is_none_or(|at| p.is_at_or_below(at)))
            .map(|p| {
                let winner = &self.versions[self.files[p]];
                let mut losers: Vec<&Version> = self.paths[p]
                    .heads
                    .iter()
                    .map(|&h| &self.versions[h])
                    .filter(|v| v.id != winner.id)
                    .collect();
                losers.sort_by_key(|v| std::cmp::Reverse(v.rank()));
                Conflict {
                    path: p,
                    winner,
                    losers,
                }
            })
            .collect()
    }

    /// The heads of `path`, best first (see the module comment); empty for an unknown path.
    pub fn heads(&self, path: &Path) -> Vec<&Version> {
        let mut heads: Vec<&Version> = self
            .paths
            .get(path)
            .map(|s| s.heads.iter().map(|&h| &self.versions[h]).collect())
            .unwrap_or_default();
        heads.sort_by_key(|v| std::cmp::Reverse(v.rank()));
        heads
    }

    /// Any applied file op by id: current files, conflict losers, past states.
    pub fn version(&self, id: &VersionId) -> Option<&Version> {
        self.index.get(id).map(|&i| &self.versions[i])
    }

    /// The one applied op `spec` (`a1b2c3d4:17`) names.
    pub fn resolve(&self, spec: &str) -> Result<VersionId, FsError> {
        let parsed: VersionSpec = spec.parse()?;
        let mut found = self
            .frontier
            .iter()
            .map(|(feed, _)| VersionId {
                feed: *feed,
                seq: parsed.seq,
            })
            .filter(|id| parsed.matches(id) && self.index.contains_key(id));
        match (found.next(), found.next()) {
            (Some(id), None) => Ok(id),
            (None, _) => Err(FsError::NoSuchVersion(spec.to_owned())),
            (Some(_), Some(_)) => Err(FsError::AmbiguousVersion(spec.to_owned())),
        }
    }

    /// Applied file ops in a causal order — an op after every op it follows (for clocks taken
    /// from [`View::clock_for_write`]) — ordered by `(clock sum, feed, seq)`, the same for every
    /// member. `Some(path)`: only the ops that touched `path`.
    pub fn history(&self, path: Option<&Path>) -> Vec<&Version> {
        let mut out: Vec<&Version> = match path {
            None => self.versions.iter().collect(),
            Some(p) => self
                .paths
                .get(p)
                .map(|s| s.ops.iter().map(|&i| &self.versions[i]).collect())
                .unwrap_or_default(),
        };
        out.sort_by_key(|v| v.rank());
        out
    }

    /// Merge of the clocks of every applied op: everything the ops in this view had seen.
    pub fn frontier(&self) -> &VectorClock {
        &self.frontier
    }

    /// The clock for a new op at `seq` (the next entry) of the writer's own `feed`: everything
    /// this view has seen, plus the op itself. Apply every entry you hold first, so the new op
    /// follows everything you have read.
    pub fn clock_for_write(&self, feed: FeedKey, seq: u64) -> VectorClock {
        let mut clock = self.frontier.clone();
        clock.set(feed, seq.saturating_add(1));
        clock
    }

    /// The latest name a feed's device gave itself.
    pub fn device_name(&self, feed: &FeedKey) -> Option<&str> {
        self.devices.get(feed).map(|(_, name)| name.as_str())
    }

    /// Number of applied file ops.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether no file op has been applied.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("ops", &self.versions.len())
            .field("files", &self.files.len())
            .field("conflicts", &self.conflicted.len())
            .field("frontier", &self.frontier)
            .finish()
    }
}

fn change_content(change: &Change) -> Option<&ContentRef> {
    match change {
        Change::Put(f) | Change::Rename { file: f, .. } => Some(&f.meta.content),
        Change::Delete(_) => None,
    }
}

/// The checks that depend on the op and its place only.
fn check_op(
    id: VersionId,
    clock: &VectorClock,
    content: Option<&ContentRef>,
) -> Result<(), FsError> {
    let refuse = |reason: String| FsError::BadOp { op: id, reason };
    let own = clock.get(&id.feed);
    if id.seq.checked_add(1) != Some(own) {
        return Err(refuse(format!(
            "its clock counts {own} entries of its own feed, expected {}",
            id.seq.saturating_add(1)
        )));
    }
    if let Some(c) = content.filter(|c| c.count > 0) {
        let end = c
            .end()
            .expect("record check refuses overflowing chunk ranges");
        let seen = if c.feed == id.feed {
            id.seq
        } else {
            clock.get(&c.feed)
        };
        if end > seen {
            return Err(refuse(format!(
                "content {}:{}..{end} lies beyond what its writer had seen",
                c.feed.short(),
                c.first
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> FeedKey {
        FeedKey([b; 32])
    }

    #[test]
    fn version_ids_print_short_and_parse_back() {
        let id = VersionId {
            feed: key(0xa1),
            seq: 17,
        };
        assert_eq!(id.to_string(), "a1a1a1a1:17");
        assert_eq!(id.full(), format!("{}:17", "a1".repeat(32)));
        for s in [id.to_string(), id.full(), "A1A1:17".to_owned()] {
            let spec: VersionSpec = s.parse().expect("parses");
            assert!(spec.matches(&id), "{s}");
        }
        let other = VersionId {
            feed: key(0xa1),
            seq: 18,
        };
        assert!(!"a1a1:17"
            .parse::<VersionSpec>()
            .expect("parses")
            .matches(&other));
    }

    #[test]
    fn malformed_version_ids_are_refused() {
        for s in [
            "",
            "a1",
            ":17",
            "a1:",
            "a1:-1",
            "a1:+1",
            "g1:17",
            "a1:1x",
            &"a".repeat(65),
        ] {
            assert_eq!(
                s.parse::<VersionSpec>(),
                Err(FsError::BadVersionId(s.to_owned())),
                "{s}"
            );
        }
        assert!("a1:99999999999999999999999".parse::<VersionSpec>().is_err());
    }
}
