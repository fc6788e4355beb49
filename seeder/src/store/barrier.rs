/*!
The durability barrier for the index: what makes sled's writes survive a power cut.

sled 0.34's `flush` writes its log and then calls `sync_file_range`, which waits for the log's
pages to be written but persists neither the file's size and extents nor the drive's write
cache; and it writes blobs (large nodes, one file each) with no sync at all. So after `flush`
a power cut can still lose what was flushed. [`IndexFiles::sync`] is the barrier that runs
after every flush an acknowledgement depends on: `fdatasync` of the log, `fsync` of every file
that appeared in the database folder or in its `blobs/` folder since the last barrier, and of
those folders themselves when what they hold changed (a new file's name is metadata of its
folder).

Not here: the data files' own syncs (the store does them before the index is written), or any
decision about when a barrier is needed.
*/

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// sled's log file inside its folder (sled 0.34's layout).
const LOG_FILE: &str = "db";
/// sled's folder of blob files.
const BLOBS: &str = "blobs";

/// sled's files, and what the last barrier made durable of its folders.
pub(super) struct IndexFiles {
    dir: PathBuf,
    /// Names made durable by the last barrier, per folder; guarded so that concurrent barriers
    /// don't both decide a folder is unchanged while the other is still syncing it.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    top: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

impl IndexFiles {
    /// The files of the sled database in `dir` (opened already). Nothing is durable yet as far
    /// as this knows: the first [`IndexFiles::sync`] syncs every file there.
    pub(super) fn new(dir: &Path) -> IndexFiles {
        IndexFiles {
            dir: dir.to_path_buf(),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Make everything sled has flushed durable. Call after `Db::flush`.
    pub(super) fn sync(&self) -> io::Result<()> {
        let mut seen = self
            .seen
            .lock()
            .expect("index barrier state poisoned: a thread panicked while syncing");
        // The log first: it is where every flushed record is.
        File::open(self.dir.join(LOG_FILE))?.sync_data()?;
        let Seen { top, blobs } = &mut *seen;
        sync_folder(&self.dir, top)?;
        let blob_dir = self.dir.join(BLOBS);
        if blob_dir.is_dir() {
            sync_folder(&blob_dir, blobs)?;
        }
        Ok(())
    }
}

/// Sync every file of `dir` not in `seen`, then `dir` itself if its names changed; `seen`
/// becomes what `dir` holds. A file that disappears meanwhile (sled removes superseded blobs
/// and snapshots) needs nothing.
fn sync_folder(dir: &Path, seen: &mut BTreeSet<OsString>) -> io::Result<()> {
    let mut now = BTreeSet::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        if !seen.contains(&name) && item.file_type()?.is_file() {
            match File::open(item.path()) {
                Ok(f) => f.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        now.insert(name);
    }
    if now != *seen {
        File::open(dir)?.sync_all()?;
        *seen = now;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_takes_in_new_files_and_forgets_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), b"log").unwrap();
        let files = IndexFiles::new(dir.path());
        files.sync().unwrap();
        assert!(files
            .seen
            .lock()
            .unwrap()
            .top
            .contains(&OsString::from("db")));

        std::fs::create_dir(dir.path().join(BLOBS)).unwrap();
        std::fs::write(dir.path().join(BLOBS).join("17"), b"blob").unwrap();
        files.sync().unwrap();
        let seen = files.seen.lock().unwrap();
        assert!(seen.top.contains(&OsString::from(BLOBS)));
        assert!(seen.blobs.contains(&OsString::from("17")));
        drop(seen);

        std::fs::remove_file(dir.path().join(BLOBS).join("17")).unwrap();
        files.sync().unwrap();
        assert!(files.seen.lock().unwrap().blobs.is_empty());
    }

    #[test]
    fn a_missing_log_is_an_error_not_a_silent_success() {
        let dir = tempfile::tempdir().unwrap();
        let files = IndexFiles::new(dir.path());
        assert!(files.sync().is_err());
    }
}
