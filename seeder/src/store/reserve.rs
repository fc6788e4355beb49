/*!
A few MiB kept allocated on the data disk so that a full disk never bricks the store.

Opening the index writes (sled recovers into fresh segments), so at 0 bytes free it would
fail, and with it the daemon and its admin page. The store keeps [`RESERVE_BYTES`] allocated
in the file `reserve`; when the disk is that close to full at open, the file is removed first,
and the space it held is what the index opens in. It is made again once the disk has room
([`Reserve::restore`], called when the store frees space and by the daemon now and then).

New data never eats the reserve: the daemon stops taking data while a share of the disk is
still free (see `daemon::local`), so only something outside the store fills the disk.

Not here: deciding whether there is room for data (the daemon's), the store's own files.
*/

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

/// Bytes kept in reserve: room for sled to open and recover (a few of its 512 KiB segments
/// and a snapshot) and for the registry's small writes.
pub const RESERVE_BYTES: u64 = 4 << 20;

/// The reserve file of a data folder.
pub(super) struct Reserve {
    path: PathBuf,
}

impl Reserve {
    pub(super) fn new(dir: &Path) -> Reserve {
        Reserve {
            path: dir.join("reserve"),
        }
    }

    /// Before opening the index: if the disk has less than the reserve free, give the
    /// reserve's space back. Returns whether it did.
    pub(super) fn release_if_full(&self) -> io::Result<bool> {
        if !self.path.exists() || free_bytes(self.dir())? >= RESERVE_BYTES {
            return Ok(false);
        }
        std::fs::remove_file(&self.path)?;
        super::file::sync_dir(self.dir())?;
        tracing::warn!(
            dir = %self.dir().display(),
            "the data disk is full: released the {} MiB reserve so the store can open",
            RESERVE_BYTES >> 20
        );
        Ok(true)
    }

    /// Make the reserve if it is missing and the disk has room for it and as much again.
    pub(super) fn restore(&self) -> io::Result<()> {
        if self.path.exists() || free_bytes(self.dir())? < 2 * RESERVE_BYTES {
            return Ok(());
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)?;
        let allocated =
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES);
        if let Err(e) = allocated {
            // A file system without fallocate: write the bytes (they must really be taken).
            if e != rustix::io::Errno::OPNOTSUPP {
                let _ = std::fs::remove_file(&self.path);
                return Err(e.into());
            }
            use std::io::Write;
            let zeros = vec![0u8; 1 << 20];
            let mut w = &f;
            for _ in 0..(RESERVE_BYTES >> 20) {
                w.write_all(&zeros)?;
            }
        }
        f.sync_all()?;
        super::file::sync_dir(self.dir())
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_made_where_there_is_room_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reserve::new(dir.path());
        r.restore().unwrap();
        let len = std::fs::metadata(dir.path().join("reserve")).unwrap().len();
        assert_eq!(len, RESERVE_BYTES);
        assert!(!r.release_if_full().unwrap(), "a disk with room keeps it");
        assert!(dir.path().join("reserve").exists());
    }
}
