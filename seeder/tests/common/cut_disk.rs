//! A disk whose power can be cut: a FUSE file (`disk`) that behaves like a drive with a
//! volatile write cache, for a loop device and a real ext4 on top of it.
//!
//! Every write lands in the cache; only a flush (the loop device turns the file system's
//! cache flushes and FUA writes into `fsync` of this file) makes the cached blocks durable.
//! [`CutDisk::cut`] is the power cut: it writes the durable blocks to an image file, plus a
//! random half of the cached ones (a real drive may have written any of them, in any order),
//! while the workload goes on. What a program acknowledged after its `fsync` returned must be in
//! every image cut after the acknowledgement; what was only cached may be anywhere.
//!
//! Blocks are 4 KiB, in memory (the disk is a few hundred MiB at most, mostly never written).

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use rand::{Rng, SeedableRng};

const BLOCK: usize = 4096;
const DISK_INO: INodeNo = INodeNo(2);
const NAME: &str = "disk";

type Block = Box<[u8; BLOCK]>;

#[derive(Default)]
struct State {
    /// What survives a power cut.
    durable: HashMap<u64, Block>,
    /// Written since the last flush: lost, or not, when the power goes.
    cache: HashMap<u64, Block>,
    flushes: u64,
    writes: u64,
}

impl State {
    fn block(&self, i: u64) -> Option<&Block> {
        self.cache.get(&i).or_else(|| self.durable.get(&i))
    }
}

/// The disk, shared by the FUSE server and the test.
#[derive(Clone)]
pub struct CutDisk {
    state: Arc<Mutex<State>>,
    size: u64,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
}

/// A mounted [`CutDisk`]: `dir/disk` is the file; dropping it unmounts.
pub struct Mounted {
    pub disk: CutDisk,
    pub file: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

impl CutDisk {
    /// A blank disk of `size` bytes (a multiple of 4 KiB) mounted as `dir/disk`; `seed` makes
    /// the choice of surviving cached blocks replayable.
    pub fn mount(dir: &Path, size: u64, seed: u64) -> Mounted {
        assert_eq!(size % BLOCK as u64, 0);
        let disk = CutDisk {
            state: Arc::default(),
            size,
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
        };
        std::fs::create_dir_all(dir).unwrap();
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("seeder-cut-disk".into()),
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(Fs { disk: disk.clone() }, dir, &config).unwrap();
        Mounted {
            disk,
            file: dir.join(NAME),
            session: Some(session),
        }
    }

    /// Cut the power now: write what the disk would hold afterwards to `image` (sparse).
    /// Returns the number of cached blocks that were lost.
    pub fn cut(&self, image: &Path) -> usize {
        let state = self.state.lock().unwrap();
        let mut rng = self.rng.lock().unwrap();
        let out = std::fs::File::create(image).unwrap();
        out.set_len(self.size).unwrap();
        use std::os::unix::fs::FileExt;
        for (i, b) in &state.durable {
            if !state.cache.contains_key(i) {
                out.write_all_at(&b[..], i * BLOCK as u64).unwrap();
            }
        }
        let mut lost = 0;
        for (i, b) in &state.cache {
            if rng.gen_bool(0.5) {
                out.write_all_at(&b[..], i * BLOCK as u64).unwrap();
            } else {
                lost += 1;
                if let Some(old) = state.durable.get(i) {
                    out.write_all_at(&old[..], i * BLOCK as u64).unwrap();
                }
            }
        }
        (&out).flush().unwrap();
        lost
    }

    /// Flushes and writes the disk has seen.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        (s.flushes, s.writes)
    }
}

struct Fs {
    disk: CutDisk,
}

const TTL: Duration = Duration::from_secs(1);

impl Fs {
    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, size, perm, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0, 0o755, 2),
            DISK_INO => (FileType::RegularFile, self.disk.size, 0o600, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size / 512,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: BLOCK as u32,
        })
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large writes: the loop device sends whole requests, not 4 KiB pieces.
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == NAME {
            reply.entry(&TTL, &self.attr(DISK_INO).unwrap(), fuser::Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == DISK_INO {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::EISDIR);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        let end = (offset + u64::from(size)).min(self.disk.size);
        let state = self.disk.state.lock().unwrap();
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let i = pos / BLOCK as u64;
            let within = (pos % BLOCK as u64) as usize;
            let n = (BLOCK - within).min((end - pos) as usize);
            match state.block(i) {
                Some(b) => out.extend_from_slice(&b[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
            pos += n as u64;
        }
        reply.data(&out);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        if offset + data.len() as u64 > self.disk.size {
            return reply.error(Errno::ENOSPC);
        }
        let mut state = self.disk.state.lock().unwrap();
        state.writes += 1;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let i = pos / BLOCK as u64;
            let within = (pos % BLOCK as u64) as usize;
            let n = (BLOCK - within).min(rest.len());
            let mut block: Block = match state.block(i) {
                Some(b) => b.clone(),
                None => Box::new([0; BLOCK]),
            };
            block[within..within + n].copy_from_slice(&rest[..n]);
            state.cache.insert(i, block);
            pos += n as u64;
            rest = &rest[n..];
        }
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2), not a cache flush.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.disk.state.lock().unwrap();
        let cached: Vec<_> = state.cache.drain().collect();
        state.durable.extend(cached);
        state.flushes += 1;
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DISK_INO, FileType::RegularFile, NAME),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
