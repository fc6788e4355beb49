/*!
Small files written atomically and durably: the node key, the setup code, the SSH keys file,
bundles, a file a member gets. Whoever reads the file (after a crash or a power cut too) sees
the old contents or the new, never a mix, never an empty file: the new contents go to a
temporary file in the same folder, which is synced, renamed over the old name, and then the
folder is synced so that the new name is on stable storage as well.

Not here: the feeds' data files and the index, which the store keeps durable its own way.
*/

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file being written that replaces `path` only when [`AtomicFile::commit`] succeeds; dropped
/// uncommitted, it leaves nothing behind.
pub struct AtomicFile {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Start replacing `path`; the new file has permission bits `mode` from the start (a
    /// secret is never readable by others, not even while it is being written).
    pub fn create(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        let dir = parent(path);
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(dir)?;
        // Created with at most `mode` (the umask may take more away); set exactly `mode`.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(mode))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
        })
    }

    /// Where the new contents are written until the commit.
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The temporary file, to write the new contents to.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Sync the new contents, put them in place of the old, and sync the folder.
    pub fn commit(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        sync_dir(parent(&self.path))
    }
}

/// Replace `path` with `contents` atomically and durably (see the module comment).
pub fn write_atomic(path: &Path, mode: u32, contents: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path, mode)?;
    f.file().write_all(contents)?;
    f.commit()
}

/// Make a folder's entries (new names, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_contents_with_the_given_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, 0o600, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the file itself is left");
    }

    #[test]
    fn an_uncommitted_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, b"kept").unwrap();
        {
            let mut f = AtomicFile::create(&path, 0o644).unwrap();
            f.file().write_all(b"half of it").unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
