/*!
The member-side file layer's pure core: file records, paths, vector clocks and the merged view
of a space — no I/O, no clock, no randomness, no encryption.

A member device writes file operations into its own feed of the space, one [`Record`] per feed
entry: the chunks of a file, then the [`Record::Put`] naming them; [`Record::Delete`];
[`Record::Rename`]. Every file op carries the writer's [`VectorClock`]. Another layer encrypts
each encoded record with the space's content cipher and appends it to the feed; here records are
plain values and bytes. Reading back, the entries of all member feeds are decrypted, decoded and
applied, in any order, to a [`View`]: the merged file tree every member computes identically.

Merging, in short (details in `view`): per path, the *heads* are the ops on that path that no
other op on that path causally follows. One head decides alone. Among concurrent heads a put
always beats a delete (data is never lost to a concurrent delete), and among puts the one whose
clock shows the most knowledge (largest sum) wins, ties broken by the larger feed key. Losers
stay readable and are listed as conflicts until an op that has seen them is written.

Choices made here, and why:
- A rename is one op (delete of `from` plus put at `to`) whose put points at the existing
  chunks by [`ContentRef`]; any put may reference chunks in any feed its writer has seen, so
  renames, restores of old versions and conflict resolutions never copy content.
- Causality is exactly `B.clock[A.feed] > A.seq`, and the heads are defined on the *set* of
  ops, so the view is a function of the ops alone, even for ops with inconsistent clocks: the
  only per-op checks are local to the op (its own clock entry is `seq + 1`, its content lies
  within what its clock has seen), and a refused op is refused in every order.
- Writers take their clock from [`View::clock_for_write`], the merge of every clock they have
  applied. That makes clocks transitive even when a device holds some feeds only partly, which
  history ordering relies on (and which makes "largest sum" mean "most knowledge").
- Directories are implicit: a directory exists while a file exists below it.

The pure core is `path`, `clock`, `record` and `view`. `home` is the I/O side: a device's
spaces and feeds on disk, encryption, streaming file content in and out; `bundle` is the
offline exchange format. Not here: the CLI. Known limits this layer
leaves to the CLI: Unicode normalisation and case folding of names, and a name that is a file
for one member and a directory for another (both show up in listings).
*/

pub mod bundle;
mod clock;
pub mod home;
mod path;
mod record;
pub mod roster;
mod view;

#[cfg(test)]
mod tests;

pub use clock::{Causality, VectorClock, MAX_CLOCK_FEEDS};
pub use path::{Path, Shown, MAX_COMPONENT_LEN, MAX_PATH_LEN};
pub use record::{
    chunk_count, ContentRef, FileMeta, Mtime, Record, CHUNK_SIZE, FORMAT_VERSION,
    MAX_DEVICE_NAME_LEN, MODE_MASK,
};
pub use view::{Change, Conflict, FileState, ListEntry, Op, Version, VersionId, VersionSpec, View};

/// Errors of the file layer. `BadPath` and `BadVersionId` are the user's input; `Malformed`,
/// `UnknownFormat`, `TrailingBytes` and `BadOp` are a member's data (skip the entry, keep going);
/// `NoSuchVersion` and `AmbiguousVersion` answer a lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// A path breaks one of [`Path`]'s rules.
    #[error("bad path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    /// The bytes are not a valid record.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The record's format byte is not [`FORMAT_VERSION`] (written by a newer version?).
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    /// A valid record followed by more bytes.
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
    /// A well-formed record that cannot be the op at its place in its feed.
    #[error("op {op} refused: {reason}")]
    BadOp { op: VersionId, reason: String },
    /// Not of the form `<feed key hex prefix>:<seq>`.
    #[error("bad version id {0:?}: expected <feed key prefix>:<seq>, like a1b2c3d4:17")]
    BadVersionId(String),
    /// No op of the view matches.
    #[error("no version {0:?} in this space")]
    NoSuchVersion(String),
    /// Several feeds' keys start with the given prefix.
    #[error("version {0:?} is ambiguous: give more of the feed key")]
    AmbiguousVersion(String),
}
