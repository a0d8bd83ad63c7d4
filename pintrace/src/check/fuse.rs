//! A tiny passthrough FUSE file system for `check`: one flat directory whose
//! files live in a backing directory, every file opened with
//! `FOPEN_DIRECT_IO`, so that a workload's reads and writes go through FUSE's
//! Direct I/O path (`fuse_direct_io`, which takes the user pages: FOLL_GET
//! before the conversion, FOLL_PIN after) rather than the page cache.
//!
//! The server runs on a thread of the `check` process; its own copies to and
//! from /dev/fuse belong to that process, never to the scenario's workload.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Attributes are never cached: the files change size under the workload.
const TTL: Duration = Duration::ZERO;

#[derive(Default)]
struct State {
    /// inode → file name in the backing directory (the root is inode 1).
    names: HashMap<u64, String>,
    by_name: HashMap<String, u64>,
    next_ino: u64,
    open: HashMap<u64, File>,
    next_fh: u64,
}

pub struct Passthrough {
    backing: PathBuf,
    state: Mutex<State>,
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr_of(ino: u64, md: &std::fs::Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: md.size(),
        blocks: md.blocks(),
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: if md.is_dir() {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Passthrough {
    pub fn new(backing: &Path) -> Passthrough {
        Passthrough {
            backing: backing.to_path_buf(),
            state: Mutex::new(State {
                next_ino: 2,
                next_fh: 1,
                ..State::default()
            }),
        }
    }

    fn path_of(&self, st: &State, ino: u64) -> Option<PathBuf> {
        if ino == 1 {
            return Some(self.backing.clone());
        }
        st.names.get(&ino).map(|n| self.backing.join(n))
    }

    fn ino_for(st: &mut State, name: &str) -> u64 {
        if let Some(&i) = st.by_name.get(name) {
            return i;
        }
        let i = st.next_ino;
        st.next_ino += 1;
        st.names.insert(i, name.to_owned());
        st.by_name.insert(name.to_owned(), i);
        i
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_file(&self, fh_state: &mut State, file: File) -> FileHandle {
        let fh = fh_state.next_fh;
        fh_state.next_fh += 1;
        fh_state.open.insert(fh, file);
        FileHandle(fh)
    }
}

/// Read/write access as asked by the open flags.
fn options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => o.write(true),
        libc::O_RDWR => o.read(true).write(true),
        _ => o.read(true),
    };
    o
}

impl Filesystem for Passthrough {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().filter(|_| u64::from(parent) == 1) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::metadata(self.backing.join(name)) {
            Ok(md) => {
                let ino = Self::ino_for(&mut self.lock(), name);
                reply.entry(&TTL, &attr_of(ino, &md), Generation(0));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let path = self.path_of(&self.lock(), ino.into());
        match path.map(std::fs::metadata) {
            Some(Ok(md)) => reply.attr(&TTL, &attr_of(ino.into(), &md)),
            Some(Err(e)) => reply.error(errno(&e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(path) = self.path_of(&self.lock(), ino.into()) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(size) = size {
            let r = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(size));
            if let Err(e) = r {
                return reply.error(errno(&e));
            }
        }
        match std::fs::metadata(&path) {
            Ok(md) => reply.attr(&TTL, &attr_of(ino.into(), &md)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name.to_str().filter(|_| u64::from(parent) == 1) else {
            return reply.error(Errno::EACCES);
        };
        let path = self.backing.join(name);
        let mut o = options(flags);
        o.write(true).create(true).mode(mode & 0o7777);
        if flags & libc::O_EXCL != 0 {
            o.create_new(true);
        }
        let file = match o.open(&path) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let md = match file.metadata() {
            Ok(m) => m,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut st = self.lock();
        let ino = Self::ino_for(&mut st, name);
        let fh = self.open_file(&mut st, file);
        reply.created(
            &TTL,
            &attr_of(ino, &md),
            Generation(0),
            fh,
            FopenFlags::FOPEN_DIRECT_IO,
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let Some(path) = self.path_of(&st, ino.into()) else {
            return reply.error(Errno::ENOENT);
        };
        match options(flags.0).open(path) {
            Ok(f) => {
                let fh = self.open_file(&mut st, f);
                reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.lock();
        let Some(f) = st.open.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..done]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let st = self.lock();
        let Some(f) = st.open.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match f.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let st = self.lock();
        match st.open.get(&fh.0).map(File::sync_data) {
            Some(Err(e)) => reply.error(errno(&e)),
            _ => reply.ok(),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().open.remove(&fh.0);
        reply.ok();
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().filter(|_| u64::from(parent) == 1) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_file(self.backing.join(name)) {
            Ok(()) => {
                let mut st = self.lock();
                if let Some(ino) = st.by_name.remove(name) {
                    st.names.remove(&ino);
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let c =
            std::ffi::CString::new(self.backing.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: `c` is a valid C string and `s` a valid out-pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return reply.error(errno(&io::Error::last_os_error()));
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            255,
            s.f_frsize as u32,
        );
    }
}

/// A mounted passthrough file system; unmounted when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    pub mountpoint: PathBuf,
}

impl Mounted {
    /// Mounts `backing` at `mountpoint` (root only: the mount(2) call is
    /// made directly, no fusermount).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("pintrace-check".into()),
            fuser::MountOption::RW,
        ];
        let session = fuser::spawn_mount(Passthrough::new(backing), mountpoint, &config)?;
        Ok(Mounted {
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                log::warn!("unmounting {}: {e}", self.mountpoint.display());
            }
        }
    }
}
