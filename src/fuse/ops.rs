//! `impl Filesystem`: one short method per request.

use super::attr::{kind_type, time_set};
use super::views::{Entry, attr_of, entry_of, reserved};
use super::{CowFuse, TTL};
use crate::ids::{Fh, Ino};
use crate::ns::{Ctx, SetAttr, Time};
use fuser::{
    CopyFileRangeFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

fn ino(i: INodeNo) -> Ino {
    Ino(i.0)
}

fn ctx(req: &Request, umask: u32) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

/// EEXIST for a name only `.snapshots` may have.
fn check_name(parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
    if reserved(ino(parent), name.as_bytes()) {
        return Err(Errno::from_i32(crate::Error::Exists.errno()));
    }
    Ok(())
}

fn entry(reply: ReplyEntry, r: Result<Entry, Errno>) {
    match r {
        Ok((a, g)) => reply.entry(&TTL, &a, Generation(g)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Errno>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => {
            reply.error(Errno::from_i32(crate::Error::Range.errno()))
        }
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

impl fuser::Filesystem for CowFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let mut flags = vec![
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ];
        if self.writeback {
            flags.push(InitFlags::FUSE_WRITEBACK_CACHE);
        }
        // We clear set-user-ID bits and capabilities on write, truncate and chown
        // ourselves; in exchange the kernel stops asking for security.capability before
        // every write (SB_NOSEC), a round trip each.
        flags.push(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // A listing hands out every entry with its attributes (counted as lookups), so a
        // `find`, `du` or `ls -l` does not ask again for each name.
        flags.push(InitFlags::FUSE_DO_READDIRPLUS);
        flags.push(InitFlags::FUSE_READDIRPLUS_AUTO);
        for flag in flags {
            if config.add_capabilities(flag).is_err() {
                log::info!("kernel lacks {flag:?}");
            }
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn destroy(&mut self) {
        let r = self.call("destroy", |fs| fs.close());
        log::info!(
            "filesystem closed: {}",
            if r.is_ok() { "clean" } else { "with errors" }
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, self.lookup_any(ino(parent), name.as_bytes()));
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        let _ = self.call("forget", |fs| fs.forget(ino(i), nlookup));
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_any(ino(i)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(Time::from_system),
        };
        let r = self.vcall("setattr", ino(i), true, |fs, i| {
            let inode = fs.setattr(ctx(req, 0), i, &a)?;
            attr_of(fs, i, &inode)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        match self.vread("readlink", ino(i), |fs, i| fs.readlink(i)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = check_name(parent, name).and_then(|()| {
            self.vcall("mknod", ino(parent), true, |fs, p| {
                let (n, i) = fs.mknod(ctx(req, umask), p, name.as_bytes(), mode, rdev)?;
                entry_of(fs, n, &i)
            })
        });
        entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = check_name(parent, name).and_then(|()| {
            self.vcall("mkdir", ino(parent), true, |fs, p| {
                let mode = libc::S_IFDIR | (mode & 0o7777);
                let (n, i) = fs.mknod(ctx(req, umask), p, name.as_bytes(), mode, 0)?;
                entry_of(fs, n, &i)
            })
        });
        entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.vcall("unlink", ino(parent), true, |fs, p| {
                fs.unlink(p, name.as_bytes())
            }),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.vcall("rmdir", ino(parent), true, |fs, p| {
                fs.rmdir(p, name.as_bytes())
            }),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = check_name(parent, name).and_then(|()| {
            self.vcall("symlink", ino(parent), true, |fs, p| {
                let t = target.as_os_str().as_bytes();
                let (n, i) = fs.symlink(ctx(req, 0), p, name.as_bytes(), t)?;
                entry_of(fs, n, &i)
            })
        });
        entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = check_name(newparent, newname)
            .and_then(|()| check_name(parent, name))
            .and_then(|()| {
                self.vcall2("rename", ino(parent), ino(newparent), true, |fs, p, np| {
                    fs.rename(p, name.as_bytes(), np, newname.as_bytes(), flags.bits())
                })
            });
        empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = check_name(newparent, newname).and_then(|()| {
            self.vcall2("link", ino(i), ino(newparent), true, |fs, i, np| {
                let inode = fs.link(i, np, newname.as_bytes())?;
                entry_of(fs, i, &inode)
            })
        });
        entry(reply, r);
    }

    fn open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            // The kernel remembers it for the mount: no OPEN, FLUSH-less RELEASE-less
            // opens with the page cache kept. An open file holds its inode in the kernel,
            // so the lookup count (not a handle) keeps an unlinked file's data alive.
            reply.error(Errno::ENOSYS);
            return;
        }
        let r = self.vcall("open", ino(i), false, |fs, i| {
            let fh = fs.open(i, flags.0)?;
            let for_write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            let for_read = flags.0 & libc::O_ACCMODE != libc::O_WRONLY;
            if let Err(e) = fs.prefetch(i, for_write) {
                log::debug!("prefetch: {e}");
            }
            if flags.0 & libc::O_TRUNC != 0 && fs.getattr(i)?.is_file() {
                let a = SetAttr {
                    size: Some(0),
                    ..Default::default()
                };
                fs.setattr(Ctx::ROOT, i, &a)?;
            }
            Ok((fh, for_read && fs.atime_wanted(i)?))
        });
        match r {
            Ok((fh, atime_due)) => {
                // Reads from the kept page cache never reach us: the open stands for
                // them. Its own operation, after the open has succeeded: an atime that
                // cannot be written (ENOSPC while unsharing from a snapshot) never fails
                // the open, as Linux never fails a read for it.
                if atime_due {
                    match self.vcall("open: atime", ino(i), false, |fs, i| fs.atime_on_open(i)) {
                        Ok(true) => self.forget_attrs(ino(i)),
                        Ok(false) => {}
                        Err(e) => log::debug!("open: atime not updated: {e:?}"),
                    }
                }
                reply.opened(FileHandle(fh.0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_data(ino(i), offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        wflags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = wflags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.write_data(ino(i), offset, data, kill) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do on close: the kernel writes dirty pages back before it sends FLUSH
        // anyway. ENOSYS makes it stop sending them for the rest of the mount.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if fh.0 == 0 {
            // A file created with no handle (see `create`).
            reply.ok();
            return;
        }
        empty(reply, self.release_handle(Fh(fh.0)));
    }

    fn fsync(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.write_back();
        let r = self.call("fsync", |fs| fs.sync());
        if r.is_ok() {
            // With the writeback cache the kernel keeps stale st_blocks after writes.
            self.forget_attrs(ino(i));
        }
        empty(reply, r);
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            // As for `open`; the kernel then also caches each directory's listing
            // (FOPEN_CACHE_DIR) until a change through it, or an invalidation from us.
            reply.error(Errno::ENOSYS);
            return;
        }
        if ino(i) == Ino::SNAPDIR {
            reply.opened(FileHandle(0), FopenFlags::empty());
            return;
        }
        match self.vcall("opendir", ino(i), false, |fs, i| fs.open(i, libc::O_RDONLY)) {
            Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino(i) == Ino::SNAPDIR {
            match self.snapdir_entries(offset) {
                Ok(es) => {
                    for (n, next, name) in es {
                        let dir = kind_type((libc::S_IFDIR >> 12) as u8);
                        if reply.add(INodeNo(n.0), next, dir, OsStr::from_bytes(&name)) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(e),
            }
            return;
        }
        let r = self.vread("readdir", ino(i), |fs, d| {
            let v = fs.view();
            fs.readdir(d, offset, &mut |n, next, kind, name| {
                let n = n.in_view(v);
                reply.add(INodeNo(n.0), next, kind_type(kind), OsStr::from_bytes(name))
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.readdir_plus(ino(i), offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if fh.0 == 0 {
            reply.ok();
            return;
        }
        empty(reply, self.release_handle(Fh(fh.0)));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.write_back();
        empty(reply, self.call("fsyncdir", |fs| fs.sync()));
    }

    fn statfs(&self, _req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        match self.read_call("statfs", |fs| fs.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, 4096, 255, 4096,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.vcall("setxattr", ino(i), true, |fs, i| {
                fs.setxattr(i, name.as_bytes(), value, flags)
            }),
        );
    }

    fn getxattr(&self, _req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if ino(i) == Ino::SNAPDIR {
            reply.error(Errno::from_i32(crate::Error::NoAttr.errno()));
            return;
        }
        let r = self.vread("getxattr", ino(i), |fs, i| fs.getxattr(i, name.as_bytes()));
        xattr_reply(reply, size, r);
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        if ino(i) == Ino::SNAPDIR {
            xattr_reply(reply, size, Ok(Vec::new()));
            return;
        }
        let r = self.vread("listxattr", ino(i), |fs, i| fs.listxattr(i));
        xattr_reply(reply, size, r);
    }

    fn removexattr(&self, _req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.vcall("removexattr", ino(i), true, |fs, i| {
                fs.removexattr(i, name.as_bytes())
            }),
        );
    }

    /// Asked only when the kernel does not check permissions itself (a private mount of
    /// root's): by access(2) and chdir.
    fn access(&self, req: &Request, i: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let r = self.getattr_any(ino(i)).and_then(|a| {
            let dir = if a.kind == fuser::FileType::Directory {
                libc::S_IFDIR
            } else {
                0
            };
            let want = (mask.bits() & 7) as u32;
            if super::ioctl::cred(req).may_mode(u32::from(a.perm) | dir, a.uid, a.gid, want) {
                Ok(())
            } else {
                Err(Errno::from_i32(crate::Error::Access.errno()))
            }
        });
        empty(reply, r);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = check_name(parent, name).and_then(|()| {
            self.vcall("create", ino(parent), true, |fs, p| {
                let mode = libc::S_IFREG | (mode & 0o7777);
                let (n, i) = fs.mknod(ctx(req, umask), p, name.as_bytes(), mode, 0)?;
                let fh = if self.no_open {
                    Fh(0)
                } else {
                    fs.open(n, flags)?
                };
                Ok((entry_of(fs, n, &i)?, fh))
            })
        });
        match r {
            Ok(((a, g), fh)) => reply.created(
                &TTL,
                &a,
                Generation(g),
                FileHandle(fh.0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        match self.ioctl_cmd(req, ino(i), Fh(fh.0), cmd, in_data) {
            Ok(out) => reply.ioctl(0, &out),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.vcall("fallocate", ino(i), true, |fs, i| {
                fs.fallocate(i, offset, length, mode)
            }),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel sends LSEEK without writing dirty pages back: for a file that may be
        // open for writing (any file, without handles), have it write them back first,
        // then the map is exact; when that cannot be done, answer conservatively (see
        // `Fs::seek`). The write-back waits for WRITEs that the workers serve, so it runs
        // on a thread of its own and this worker goes back to serving.
        let k = ino(i);
        let holes = matches!(whence, libc::SEEK_DATA | libc::SEEK_HOLE);
        let writer = holes
            && (self.no_open || self.vread("lseek", k, |fs, i| Ok(fs.has_writer(i))) == Ok(true));
        let me = self.clone();
        let answer = move || {
            let maybe_dirty = writer && !me.kernel_write_back(k);
            let r = me.vread("lseek", k, |fs, i| {
                let off = u64::try_from(offset).map_err(|_| crate::Error::NoSuchOffset)?;
                fs.seek(i, off, whence, maybe_dirty)
            });
            match r {
                Ok(o) => reply.offset(o as i64),
                Err(e) => reply.error(e),
            }
        };
        if !writer {
            answer();
        } else if let Err(e) = std::thread::Builder::new()
            .name("cowfs-lseek".into())
            .spawn(answer)
        {
            // The reply went with the closure: the kernel gets EIO for it.
            log::warn!("lseek: no thread for the write-back: {e}");
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let len = len.min(u32::MAX as u64 & !4095);
        let r = self.vcall2(
            "copy_file_range",
            ino(ino_out),
            ino(ino_in),
            true,
            |fs, o, i| fs.copy_range(i, offset_in, o, offset_out, len),
        );
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }
}
