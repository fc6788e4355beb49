/*!
A few MiB kept allocated on the data disk so that a full disk never bricks the store.

Opening the index writes (sled recovers into fresh segments), so at 0 bytes free it would
fail, and with it the daemon and its admin page. The store keeps up to [`RESERVE_BYTES`]
allocated in the file `reserve`; when less than that is free at open, as much of the file is
given back as makes it so, and that is the room the index opens in. It grows back as room
comes ([`Reserve::restore`]: at open, after the store frees space, and by the daemon now and
then), never taking the last [`TOP_UP_MARGIN`] of free room.

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

/// Free room never taken back into the reserve: what the daemon's own small writes (the
/// registry, logs of the index) may use meanwhile.
const TOP_UP_MARGIN: u64 = 1 << 20;

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

    /// Before opening the index: if less than [`RESERVE_BYTES`] is free, give back as much of
    /// the reserve as makes it so. Returns the bytes given back.
    pub(super) fn release_if_full(&self) -> io::Result<u64> {
        let held = self.len()?;
        let free = free_bytes(self.dir())?;
        if held == 0 || free >= RESERVE_BYTES {
            return Ok(0);
        }
        let give = (RESERVE_BYTES - free).min(held);
        let f = OpenOptions::new().write(true).open(&self.path)?;
        f.set_len(held - give)?;
        f.sync_all()?;
        tracing::warn!(
            dir = %self.dir().display(),
            released = give,
            "the data disk is full: released part of the reserve so the store can open"
        );
        Ok(give)
    }

    /// Grow the reserve back towards [`RESERVE_BYTES`] with what is free beyond
    /// [`TOP_UP_MARGIN`]: after a release, as soon as room comes back (at open, after a
    /// delete, and now and then), so that the next open on a full disk has it again.
    pub(super) fn restore(&self) -> io::Result<()> {
        let held = self.len()?;
        if held >= RESERVE_BYTES {
            return Ok(());
        }
        let room = free_bytes(self.dir())?.saturating_sub(TOP_UP_MARGIN);
        let add = (RESERVE_BYTES - held).min(room);
        if add == 0 {
            return Ok(());
        }
        let fresh = held == 0 && !self.path.exists();
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        let allocated = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), held, add);
        if let Err(e) = allocated {
            // A file system without fallocate: write the bytes (they must really be taken).
            if e != rustix::io::Errno::OPNOTSUPP {
                return Err(e.into());
            }
            use std::os::unix::fs::FileExt;
            let zeros = vec![0u8; 64 << 10];
            let mut at = held;
            while at < held + add {
                let n = ((held + add - at) as usize).min(zeros.len());
                f.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
        }
        f.sync_all()?;
        if fresh {
            super::file::sync_dir(self.dir())?;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
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
        assert_eq!(r.release_if_full().unwrap(), 0, "a disk with room keeps it");
        assert!(dir.path().join("reserve").exists());
    }
}
