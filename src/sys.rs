//! Every `unsafe` block of the crate lives here, each with its SAFETY note, behind safe
//! functions.
#![allow(unsafe_code)]

use memmap2::{MmapMut, MmapOptions};
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Maps the first `len` bytes of `file` shared and writable.
pub fn map_file(file: &File, len: u64) -> io::Result<MmapMut> {
    // SAFETY: the callers hold an exclusive flock on the store file for as long as the
    // store is open, so no other cowfs process resizes or writes it under the mapping; the
    // mapping covers no more than the file's length (the file is never shrunk while mapped:
    // the mapping is dropped first), so no access faults past EOF.
    unsafe { MmapOptions::new().len(len as usize).map_mut(file) }
}

/// Reserves blocks for `off..off+len` of `file`, so writes there cannot hit a full disk.
pub fn fallocate(file: &File, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor we own; no memory is passed.
    check(unsafe { libc::fallocate(file.as_raw_fd(), 0, off as libc::off_t, len as libc::off_t) })
}

/// Gives the blocks of `off..off+len` of `file` back to the file system
/// (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`): the range reads as zeros afterwards, also
/// through a shared mapping of it, and the file keeps its length.
pub fn punch_hole(file: &File, off: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: plain system call on a descriptor we own; no memory is passed. The kernel
    // removes the range from every mapping of the file, so no reference into a mapping
    // dangles: the pages fault back in as zeros.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            off as libc::off_t,
            len as libc::off_t,
        )
    })
}

/// Takes an exclusive, non-blocking flock on `file`; false if another process holds it.
pub fn try_lock(file: &File) -> bool {
    // SAFETY: plain system call on a descriptor we own; no memory is passed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Lazily unmounts `path` (MNT_DETACH).
pub fn umount_lazy(path: &std::path::Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })
}

/// The wall clock at the kernel's coarse resolution (`CLOCK_REALTIME_COARSE`, one tick):
/// the clock the kernel stamps file times with (`current_time`), as seconds and
/// nanoseconds since the epoch. `None` if the call fails (it does not on Linux).
pub fn coarse_now() -> Option<(i64, u32)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    (r == 0).then_some((ts.tv_sec, ts.tv_nsec as u32))
}

/// Effective uid of this process.
pub fn geteuid() -> u32 {
    // SAFETY: cannot fail, no arguments.
    unsafe { libc::geteuid() }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and threads it starts later) and
/// returns a set to wait on with `wait_signal`.
pub fn block_term_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: `set` is a local, initialized by sigemptyset before use; pthread_sigmask only
    // reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Waits for one of the signals in `set`; returns its number.
pub fn wait_signal(set: &libc::sigset_t) -> io::Result<i32> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is a valid initialized sigset, `sig` a valid out pointer.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn statvfs_avail(path: &std::path::Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `st` is a local out-parameter fully written by a successful statvfs; `c` is a
    // valid NUL-terminated string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        check(libc::statvfs(c.as_ptr(), &mut st))?;
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// Unmounts `path` (fails with EBUSY while files are open).
pub fn umount(path: &std::path::Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(c.as_ptr(), 0) })
}

/// Drops the pages of `off..off+len` of a mapping from this process's page tables. Over a
/// shared file mapping they stay in the page cache (dirty ones still to be written back),
/// so the daemon's RSS stays small; over anonymous memory (`page::AnonBackend`, only for
/// bytes past the device's end) they are freed and read as zeros if touched again.
pub fn drop_resident(map: &MmapMut, off: usize, len: usize) -> io::Result<()> {
    // SAFETY: over a MAP_SHARED file mapping, MADV_DONTNEED only unmaps the pages; later
    // accesses fault them back in from the page cache with the same contents (dirty data is
    // carried over to the page cache when the PTEs are zapped), so no reference into the
    // mapping observes a change. Over private anonymous memory the range is past the end of
    // the device, which no caller reads (every access is checked against the length), and
    // `&MmapMut` cannot be held across the `&mut self` call that shrinks it. memmap2 checks
    // the range against the mapping.
    unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, off, len) }
}

/// Issues ioctl `cmd` on `fd` with `buf` as its argument (in and out).
pub fn ioctl(fd: &impl AsRawFd, cmd: u32, buf: &mut [u8]) -> io::Result<i32> {
    // SAFETY: `buf` is a valid, writable buffer; every cowfs command number encodes a size
    // no larger than the buffers its callers pass (fuse::abi), so the kernel reads and
    // writes inside it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::c_ulong, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// syncfs(2): writes back every dirty page of the file system holding `fd`.
pub fn syncfs(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor we own.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })
}

/// fchdir(2): makes the directory open as `dir` the process's working directory.
pub fn fchdir(dir: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor we own; no memory is passed.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) })
}

/// sync_file_range(2) over the whole file: starts writeback of every dirty page and waits
/// for it, without flushing the device cache or the file's metadata (fdatasync does that).
pub fn write_back(fd: &impl AsRawFd) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain system call on a descriptor we own; offset 0 and length 0 mean the
    // whole file.
    check(unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags) })
}

/// The process's umask (read by setting and restoring it).
pub fn umask() -> u32 {
    // SAFETY: umask cannot fail; the old value is restored at once.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

/// Real uid and gid of this process.
pub fn getuid_gid() -> (u32, u32) {
    // SAFETY: neither call can fail or takes arguments.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// mount(2): mounts `source` on `target` as file system type `fstype` with `flags`
/// (`MS_*`) and the file system's own option string `data`.
pub fn mount(
    source: &std::ffi::OsStr,
    target: &std::path::Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let cstr = |b: &[u8]| {
        std::ffi::CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let src = cstr(source.as_encoded_bytes())?;
    let tgt = cstr(target.as_os_str().as_encoded_bytes())?;
    let ty = cstr(fstype.as_bytes())?;
    let data = cstr(data.as_bytes())?;
    // SAFETY: the four pointers are valid NUL-terminated strings that outlive the call; the
    // kernel only reads them (FUSE's option string is text).
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
}
