//! The FUSE adapter: every kernel request becomes a call on the [`Model`], under one lock the
//! power-cut handle shares. Attributes and entries are never cached by the kernel (zero TTL)
//! and files are opened with direct I/O, so after a power cut no process can see a byte the
//! model no longer has.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    consts::FOPEN_DIRECT_IO, FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::model::{Attr, Errno, Kind, Model};

/// Nothing is cached in the kernel: a power cut changes the tree behind its back.
const TTL: Duration = Duration::ZERO;
const BLOCK_BYTES: u32 = 4096;

/// The model and which inodes are open (an unlinked inode lives on while open).
#[derive(Debug)]
pub struct State {
    pub model: Model,
    open: HashMap<u64, u32>,
}

impl State {
    pub fn new(model: Model) -> State {
        State {
            model,
            open: HashMap::new(),
        }
    }

    fn opened(&mut self, ino: u64) {
        *self.open.entry(ino).or_default() += 1;
    }

    fn closed(&mut self, ino: u64) {
        if let Some(count) = self.open.get_mut(&ino) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&ino);
                self.model.release(ino);
            }
        }
    }

    /// After a power cut no handle from before it means anything.
    pub fn forget_open(&mut self) {
        self.open.clear();
    }
}

pub type Shared = Arc<Mutex<State>>;

/// The filesystem the FUSE session serves.
pub struct LazyFs {
    state: Shared,
}

impl LazyFs {
    pub fn new(state: Shared) -> LazyFs {
        LazyFs { state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the model; the state is still the
        // best there is, so go on serving it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Answers a request that names an entry (lookup, mknod, mkdir) with its attributes.
fn reply_entry(found: Result<Attr, Errno>, reply: ReplyEntry) {
    match found {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), 0),
        Err(Errno(e)) => reply.error(e),
    }
}

/// The permission bits a created file or directory gets: the mode asked for less the umask.
fn created_mode(mode: u32, umask: u32) -> u32 {
    mode & !umask & 0o7777
}

fn file_attr(attr: &Attr) -> FileAttr {
    let now = SystemTime::now();
    let (kind, type_bits) = match attr.kind {
        Kind::File => (FileType::RegularFile, 0),
        Kind::Dir => (FileType::Directory, 0),
    };
    FileAttr {
        ino: attr.ino,
        size: attr.size,
        blocks: attr.allocated.div_ceil(512),
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm: ((attr.mode | type_bits) & 0o7777) as u16,
        nlink: attr.links.max(1),
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        rdev: 0,
        blksize: BLOCK_BYTES,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

fn non_negative(offset: i64) -> Result<u64, Errno> {
    u64::try_from(offset).map_err(|_| Errno(libc::EINVAL))
}

impl Filesystem for LazyFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let state = self.lock();
        let found = state
            .model
            .lookup(parent, name)
            .and_then(|ino| state.model.attr(ino));
        reply_entry(found, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.lock().model.attr(ino) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut state = self.lock();
        let result = (|| {
            if let Some(mode) = mode {
                state.model.set_mode(ino, mode & 0o7777)?;
            }
            if let Some(size) = size {
                state.model.set_size(ino, size)?;
            }
            state.model.attr(ino)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            // Devices, fifos and sockets have no place in a node's data dir.
            reply.error(libc::EPERM);
            return;
        }
        let mut state = self.lock();
        let found = state
            .model
            .create(parent, name, Kind::File, created_mode(mode, umask))
            .and_then(|ino| state.model.attr(ino));
        reply_entry(found, reply);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.lock();
        let found = state
            .model
            .create(parent, name, Kind::Dir, created_mode(mode, umask))
            .and_then(|ino| state.model.attr(ino));
        reply_entry(found, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.lock();
        let State { model, open } = &mut *state;
        match model.unlink(parent, name, &|ino| open.contains_key(&ino)) {
            Ok(()) => reply.ok(),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().model.rmdir(parent, name) {
            Ok(()) => reply.ok(),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            // RENAME_NOREPLACE / EXCHANGE / WHITEOUT are not modelled.
            reply.error(libc::EINVAL);
            return;
        }
        let mut state = self.lock();
        let State { model, open } = &mut *state;
        match model.rename(parent, name, newparent, newname, &|ino| {
            open.contains_key(&ino)
        }) {
            Ok(()) => reply.ok(),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut state = self.lock();
        match state.model.attr(ino) {
            Ok(_) => {
                state.opened(ino);
                reply.opened(0, FOPEN_DIRECT_IO);
            }
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let state = self.lock();
        match non_negative(offset).and_then(|offset| state.model.read(ino, offset, size as usize)) {
            Ok(bytes) => reply.data(&bytes),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut state = self.lock();
        match non_negative(offset).and_then(|offset| state.model.write(ino, offset, data)) {
            Ok(n) => reply.written(n as u32),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().closed(ino);
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().model.sync(ino) {
            Ok(()) => reply.ok(),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.lock().model.list(ino) {
            Ok(entries) => entries,
            Err(Errno(e)) => {
                reply.error(e);
                return;
            }
        };
        let dots = [
            (OsStr::new(".").to_owned(), ino, Kind::Dir),
            (OsStr::new("..").to_owned(), ino, Kind::Dir),
        ];
        let skip = usize::try_from(offset).unwrap_or(0);
        for (i, (name, child, kind)) in dots.into_iter().chain(entries).enumerate().skip(skip) {
            if reply.add(child, (i + 1) as i64, file_type(kind), &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().model.sync(ino) {
            Ok(()) => reply.ok(),
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // Space is memory: report plenty, so nothing refuses to write.
        let blocks = 1u64 << 30;
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            BLOCK_BYTES,
            255,
            BLOCK_BYTES,
        );
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.lock();
        let created = state
            .model
            .create(parent, name, Kind::File, created_mode(mode, umask))
            .and_then(|ino| state.model.attr(ino));
        match created {
            Ok(attr) => {
                state.opened(attr.ino);
                reply.created(&TTL, &file_attr(&attr), 0, 0, FOPEN_DIRECT_IO);
            }
            Err(Errno(e)) => reply.error(e),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut state = self.lock();
        let result = non_negative(offset).and_then(|offset| {
            let length = non_negative(length)?;
            state.model.fallocate(ino, offset, length, mode)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(Errno(e)) => reply.error(e),
        }
    }
}
