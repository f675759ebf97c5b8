//! The fuser adapter: converts each request, calls the namespace under its lock, replies.
//! Errors become errnos through `Error::errno`, the project's one table.

pub mod abi;
mod attr;
pub(crate) mod bdi;
mod data;
pub mod dedup_abi;
mod ioctl;
mod listing;
pub mod mount;
mod ops;
pub mod session;
pub mod snapshot_abi;
mod views;

use crate::error::{Error, Result};
use crate::ids::Ino;
use crate::ns::Fs;
use fuser::Errno;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;

/// How long the kernel may cache attributes and entries: an hour, because nothing changes
/// them behind the kernel's back without an explicit invalidation (a clone, a snapshot
/// created or deleted, a rollback, an atime set on open, an fsync's new `st_blocks`).
pub const TTL: Duration = Duration::from_secs(3600);

/// Uncommitted metadata that forces a commit, in bytes.
pub const COMMIT_BYTES: usize = 64 << 20;

/// The filesystem as fuser sees it.
#[derive(Clone)]
pub struct CowFuse {
    fs: Arc<Mutex<Fs>>,
    /// Data reads and writes hold it shared while their bytes move without the `fs` lock;
    /// every other request (and the background commits) holds it exclusive, so nothing
    /// shares, reuses or commits pages under a copy in flight (see `ns::io`). Taken
    /// before `fs`, never after.
    gate: Arc<RwLock<()>>,
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// Ask the kernel for its writeback cache (buffered writes, flushed in 1 MiB batches).
    writeback: bool,
    /// Mounted read-only: the kernel refuses every change but the ioctls, refused here.
    read_only: bool,
    /// Answer OPEN and OPENDIR with ENOSYS, so the kernel opens files and directories
    /// without a round trip (and caches directory listings); CREATE makes no handle.
    /// Only with `noatime`: the other atime modes need the open (see `ops::open`).
    no_open: bool,
}

thread_local! {
    /// Set while this thread holds the gate shared for a data request.
    static IN_DATA: Cell<bool> = const { Cell::new(false) };
}

/// The gate held shared by a data request; the steps it runs skip the gate.
struct DataGuard<'a> {
    _g: std::sync::RwLockReadGuard<'a, ()>,
}

impl<'a> DataGuard<'a> {
    fn new(gate: &'a RwLock<()>) -> Self {
        let g = gate.read().unwrap_or_else(PoisonError::into_inner);
        IN_DATA.set(true);
        DataGuard { _g: g }
    }
}

impl Drop for DataGuard<'_> {
    fn drop(&mut self) {
        IN_DATA.set(false);
    }
}

fn lock(fs: &Mutex<Fs>) -> MutexGuard<'_, Fs> {
    fs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// See `CowFuse::write_back`. A failure is only logged: the commit's fdatasync meets it
/// again and reports it.
fn write_back(fs: &Mutex<Fs>) {
    let io = lock(fs).write_back_handle();
    if let Some(io) = io
        && let Err(e) = io.write_back()
    {
        log::warn!("write-back before a commit: {e}");
    }
}

impl CowFuse {
    /// RELEASE and RELEASEDIR: the handle is closed in one operation and the inode freed
    /// (when that was what held it) in a second, so a failed free never brings back a
    /// handle the kernel has let go of. A failed free is logged; the orphan is freed at
    /// the next mount.
    fn release_handle(&self, fh: crate::ids::Fh) -> std::result::Result<(), Errno> {
        if let Some(k) = self.call("release", |fs| fs.close_handle(fh))?
            && let Err(e) = self.call("release: free", |fs| fs.free_unused(k))
        {
            log::warn!(
                "release: inode {} stays an orphan until the next mount: {e:?}",
                k.0
            );
        }
        Ok(())
    }

    /// Wraps a shared filesystem.
    pub fn new(
        fs: Arc<Mutex<Fs>>,
        gate: Arc<RwLock<()>>,
        notifier: Arc<OnceLock<fuser::Notifier>>,
        writeback: bool,
    ) -> Self {
        CowFuse {
            fs,
            gate,
            notifier,
            writeback,
            read_only: false,
            no_open: false,
        }
    }

    /// Has the kernel write back every dirty page of kernel inode `k`, and waits for it:
    /// invalidating the file's cached pages makes the kernel launder the dirty ones (a
    /// WRITE each, served by the workers) before it answers; clean pages are dropped too
    /// (re-read on demand). Call it holding neither the gate nor the lock, and not on a
    /// worker (`ops::lseek` runs it on a thread of its own): with every worker waiting
    /// here, none would be left to take the WRITEs. False when the kernel refused.
    fn kernel_write_back(&self, k: Ino) -> bool {
        let Some(n) = self.notifier.get() else {
            return false;
        };
        match n.inval_inode(fuser::INodeNo(k.0), 0, 0) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("inval_inode before lseek: {e}");
                false
            }
        }
    }

    /// The same, serving files and directories without OPEN, OPENDIR and RELEASE.
    pub fn no_open(mut self, no_open: bool) -> Self {
        self.no_open = no_open;
        self
    }

    /// The same, mounted read-only: the ioctls that change the tree answer EROFS.
    pub fn read_only(mut self, ro: bool) -> Self {
        self.read_only = ro;
        self
    }

    /// Before a commit: writes the store's dirty pages back with neither the gate nor the
    /// lock held, so that the commit, which holds the gate exclusive, has only what was
    /// written meanwhile left to flush and data requests are not held up behind the disk.
    fn write_back(&self) {
        write_back(&self.fs);
    }

    /// Runs `f` on the filesystem under its lock, and the gate exclusive unless this
    /// thread holds it shared already (a data request's steps). A panic becomes EIO and a
    /// log line, so one bad request cannot take the mount down.
    fn call<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Fs) -> Result<T>,
    ) -> std::result::Result<T, Errno> {
        self.run(what, false, f)
    }

    /// `call` for a request that changes nothing on disk (LOOKUP, GETATTR, READDIR,
    /// READLINK, GETXATTR, STATFS, ...): it holds the gate shared, as a data request does,
    /// so it waits neither for the copies in flight nor makes them wait; it still waits
    /// for a commit, a clone or any other change, which hold the gate exclusive.
    fn read_call<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Fs) -> Result<T>,
    ) -> std::result::Result<T, Errno> {
        self.run(what, true, f)
    }

    fn run<T>(
        &self,
        what: &str,
        shared: bool,
        f: impl FnOnce(&mut Fs) -> Result<T>,
    ) -> std::result::Result<T, Errno> {
        let gate = || self.gate.write().unwrap_or_else(PoisonError::into_inner);
        let gate_shared = || self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let (_excl, _shared) = match (IN_DATA.get(), shared) {
            (true, _) => (None, None),
            (false, false) => (Some(gate()), None),
            (false, true) => (None, Some(gate_shared())),
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut fs = lock(&self.fs);
            fs.begin_op();
            let r = f(&mut fs);
            fs.end_op(r.is_ok());
            // A data request's steps never commit: other copies may be in flight.
            if r.is_ok()
                && !IN_DATA.get()
                && !shared
                && let Err(e) = fs.commit_if_over(COMMIT_BYTES)
            {
                log::error!("commit failed: {e}");
            }
            r
        }));
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                match &e {
                    Error::Io(_) | Error::Corrupt { .. } => log::error!("{what}: {e}"),
                    _ => log::debug!("{what}: {e}"),
                }
                Err(Errno::from_i32(e.errno()))
            }
            Err(_) => {
                log::error!("{what}: internal error (panic caught); answering EIO");
                let mut fs = lock(&self.fs);
                fs.end_op(false);
                Err(Errno::from_i32(Error::Internal.errno()))
            }
        }
    }
}
