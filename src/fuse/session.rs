//! Running a mount: fuser session set-up, signal handling, background commits, shutdown.

use super::CowFuse;
use crate::error::Result;
use crate::ns::Fs;
use crate::store::StoreDir;
use fuser::{Config, MountOption, SessionACL};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread;
use std::time::Duration;

/// How a mount runs.
#[derive(Debug, Clone)]
pub struct MountOpts {
    /// FUSE worker threads.
    pub threads: usize,
    /// Seconds between background commits (bounds what a crash loses without fsync).
    pub commit_secs: u64,
    /// A new limit on the store's size, in bytes (0: none).
    pub max_size: Option<u64>,
    /// Use the kernel's writeback cache.
    pub writeback: bool,
    /// Only the mounting user may use the mount (no `allow_other`).
    pub private: bool,
    /// The mount's share of the kernel's dirty-page limit, in percent (set as root).
    pub dirty_share: u32,
    /// When reads update atime.
    pub atime: crate::ns::Atime,
    /// Mount read-only (`MS_RDONLY`: the kernel answers EROFS to every change).
    pub read_only: bool,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            threads: 4,
            commit_secs: 5,
            max_size: None,
            writeback: true,
            private: false,
            dirty_share: super::bdi::DEFAULT_SHARE,
            atime: crate::ns::Atime::NoAtime,
            read_only: false,
        }
    }
}

/// The session's options; the store's path is the source the mount table shows.
fn config(opts: &MountOpts, store: &Path) -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName(source_name(store)),
        MountOption::Subtype("cowfs".into()),
    ];
    if opts.read_only {
        c.mount_options.push(MountOption::RO);
    }
    let root = crate::sys::geteuid() == 0;
    if kernel_checks(root, opts.private) {
        c.mount_options.push(MountOption::DefaultPermissions);
    }
    if root && !opts.private {
        c.acl = SessionACL::All;
    }
    c.n_threads = Some(opts.threads.max(1));
    c.clone_fd = true;
    c
}

/// The store's path as the mount's source, or `cowfs` when it cannot be one (fusermount3
/// splits its options at commas).
fn source_name(store: &Path) -> String {
    match store.to_str() {
        Some(s) if !s.contains([',', '\\']) => s.to_string(),
        _ => "cowfs".into(),
    }
}

/// Whether the kernel checks permission bits (`default_permissions`). Always, but on a
/// private mount of root's: only root can reach it, and root passes every check but the
/// execute bit of a file, which the kernel checks either way (and `access` answers). Left
/// out, it spares a GETATTR of the directory after each change to it (see
/// docs/PERFORMANCE.md).
fn kernel_checks(root: bool, private: bool) -> bool {
    !(root && private)
}

/// The filesystem with the gate data copies hold (see `CowFuse`): background work takes
/// the gate exclusive, then the lock.
#[derive(Clone)]
struct Locked {
    fs: Arc<Mutex<Fs>>,
    gate: Arc<RwLock<()>>,
}

impl Locked {
    fn with<T>(&self, f: impl FnOnce(&mut Fs) -> T) -> T {
        let _g = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut super::lock(&self.fs))
    }

    /// `f` under the lock alone: for a look that must not hold up data requests.
    fn peek<T>(&self, f: impl FnOnce(&Fs) -> T) -> T {
        f(&super::lock(&self.fs))
    }

    /// `f` under the lock alone, able to change the store: only for steps that are safe
    /// while data copies run (`punch_freed`).
    fn lock_only<T>(&self, f: impl FnOnce(&mut Fs) -> T) -> T {
        f(&mut super::lock(&self.fs))
    }

    /// Writes the dirty pages back before a commit (see `CowFuse::write_back`).
    fn write_back(&self) {
        super::write_back(&self.fs);
    }
}

/// The text of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f` under the gate and the lock, catching a panic: it is logged, the operation
/// it interrupted is undone, and the answer is `None`.
fn guarded<T>(fs: &Locked, what: &str, f: impl FnOnce(&mut Fs) -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(|| fs.with(f))) {
        Ok(v) => Some(v),
        Err(p) => {
            log::error!("{what}: internal error (panic caught): {}", panic_text(&*p));
            fs.with(|g| g.end_op(false));
            None
        }
    }
}

/// One background commit. A failure (an error, or a panic, caught and logged) turns the
/// store read-only (writes answer EROFS) with one log line, rather than running on
/// without commits: a commit cannot be retried safely once one failed half way (after a
/// failed fdatasync the kernel may have dropped the dirty pages it could not write).
fn background_commit(fs: &Locked, reported: &mut bool) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| fs.write_back())) {
        log::error!(
            "write-back before a commit: internal error (panic caught): {}",
            panic_text(&*p)
        );
    }
    match guarded(fs, "background commit", |g| g.sync()) {
        Some(Ok(())) => return,
        Some(Err(e)) => log::error!("background commit failed: {e}"),
        None => {}
    }
    fs.with(|g| g.store().set_failed());
    if !*reported {
        *reported = true;
        log::error!(
            "background commits are failing: the store is read-only (writes answer EROFS) \
             until it is remounted"
        );
    }
}

fn spawn_committer(fs: Locked, secs: u64, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let step = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        let mut reported = false;
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(step);
            waited += step;
            if waited.as_secs() >= secs.max(1) {
                waited = Duration::ZERO;
                background_commit(&fs, &mut reported);
            }
            punch_freed(&fs, &stop);
        }
    })
}

/// Pages punched per hold of the lock: 32 MiB, a few milliseconds of fallocate at most.
const PUNCH_BUDGET: u64 = 8192;

/// Gives the pages the last commits freed back to the host, one batch per hold of the lock
/// alone: not the gate, so data copies go on meanwhile. That is safe because only pages
/// with count 0 are punched, and no copy can be in flight to one (see docs/ARCHITECTURE.md,
/// "Giving space back to the host"). Runs every tick of the committer, so the space is back
/// within 100 ms of any commit (fsync, reclaimer, a request's) that freed it.
fn punch_freed(fs: &Locked, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let r = catch_unwind(AssertUnwindSafe(|| {
            fs.lock_only(|g| g.store().punch_freed(PUNCH_BUDGET))
        }));
        match r {
            // Let the requests waiting for the lock have it between two batches.
            Ok(Ok(true)) => thread::sleep(Duration::from_millis(1)),
            Ok(Ok(false)) => return,
            Ok(Err(e)) => {
                log::warn!("giving freed space back to the host: {e}");
                return;
            }
            Err(p) => {
                log::error!(
                    "giving freed space back to the host: internal error (panic caught): {}",
                    panic_text(&*p)
                );
                return;
            }
        }
    }
}

/// References the reclaimer drops per step under the lock: a few milliseconds of work, so
/// foreground requests never wait long behind it.
const RECLAIM_BUDGET: u64 = 4096;

/// One bounded reclaim step: (more to do, failed).
fn reclaim_once(g: &mut Fs) -> (bool, bool) {
    g.begin_op();
    let before = g.reclaim_pending();
    let r = g.reclaim_step(RECLAIM_BUDGET);
    g.end_op(r.is_ok());
    let r = r.and_then(|more| {
        if g.reclaim_pending() < before {
            g.sync()?;
        } else {
            g.commit_if_over(super::COMMIT_BYTES)?;
        }
        Ok(more)
    });
    match r {
        Ok(more) => (more, false),
        Err(e) => {
            log::error!("freeing a deleted snapshot failed: {e}");
            (false, true)
        }
    }
}

/// Frees deleted snapshots (and trees left by rollbacks) in the background, one bounded
/// step per lock hold; commits when a table is done so its space shows at once. It looks
/// for work under the lock alone, so an idle reclaimer never takes the gate.
fn spawn_reclaimer(fs: Locked, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let idle = fs.peek(|g| g.reclaim_pending() == 0);
            let (busy, failed) = if idle {
                (false, false)
            } else {
                guarded(&fs, "freeing a deleted snapshot", |g| {
                    if g.reclaim_pending() == 0 {
                        (false, false)
                    } else {
                        reclaim_once(g)
                    }
                })
                .unwrap_or((false, true))
            };
            let pauses = match (busy, failed) {
                (_, true) => 50,
                (true, _) => 0,
                _ => 1,
            };
            if pauses == 0 {
                thread::sleep(Duration::from_millis(1));
            }
            for _ in 0..pauses {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Mounts the store at `mountpoint` and serves until unmounted or signalled. `ready` runs
/// once the mount is in place.
pub fn serve(
    dir: StoreDir,
    mountpoint: &Path,
    opts: &MountOpts,
    ready: impl FnOnce(),
) -> Result<()> {
    // Block the termination signals before any thread starts, so they all inherit the mask
    // and one thread can wait for them.
    let sigs = crate::sys::block_term_signals()?;
    let (mut store, path, _lock) = dir.into_parts();
    if let Some(m) = opts.max_size {
        store.set_max_size(m)?;
    }
    // Resolved before the mount: afterwards a stat of it waits for the session to run.
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let mut fs = Fs::new(store, Some(path.clone()))?;
    fs.set_atime_mode(opts.atime);
    let fs = Arc::new(Mutex::new(fs));
    let gate = Arc::new(RwLock::new(()));
    let notifier = Arc::new(OnceLock::new());
    let session = super::mount::session(
        CowFuse::new(fs.clone(), gate.clone(), notifier.clone(), opts.writeback)
            .read_only(opts.read_only)
            .no_open(opts.atime == crate::ns::Atime::NoAtime),
        mountpoint,
        &config(opts, &path),
    )?;
    let _ = notifier.set(session.notifier());
    if crate::sys::geteuid() == 0
        && let Err(e) = super::bdi::set_dirty_share(&canon, opts.dirty_share)
    {
        log::warn!("could not set the mount's dirty-page share: {e}");
    }
    log::info!("mounted at {}", mountpoint.display());
    ready();
    let mnt = mountpoint.to_path_buf();
    thread::spawn(move || {
        if let Ok(sig) = crate::sys::wait_signal(&sigs) {
            log::info!("signal {sig}: unmounting {}", mnt.display());
            if let Err(e) = crate::sys::umount_lazy(&mnt) {
                log::error!("unmount of {} failed: {e}", mnt.display());
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let locked = Locked {
        fs: fs.clone(),
        gate,
    };
    let committer = spawn_committer(locked.clone(), opts.commit_secs, stop.clone());
    let reclaimer = spawn_reclaimer(locked, stop.clone());
    let run = session.run();
    stop.store(true, Ordering::Relaxed);
    let _ = committer.join();
    let _ = reclaimer.join();
    let closed = super::lock(&fs).close();
    run?;
    closed?;
    log::info!("unmounted {}; store closed", mountpoint.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Ino;
    use crate::ns::Ctx;
    use crate::page::{Backend, MemBackend};
    use crate::store::Store;
    use std::sync::atomic::AtomicU8;

    /// A store file whose sync works (0), fails with EIO (1) or panics (2).
    struct Flaky {
        inner: MemBackend,
        mode: Arc<AtomicU8>,
    }

    impl Backend for Flaky {
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn set_len(&mut self, len: u64) -> Result<()> {
            self.inner.set_len(len)
        }
        fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
            self.inner.read(off, buf)
        }
        fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
            self.inner.write(off, buf)
        }
        fn sync(&mut self) -> Result<()> {
            match self.mode.load(Ordering::SeqCst) {
                0 => self.inner.sync(),
                1 => Err(std::io::Error::from_raw_os_error(libc::EIO).into()),
                _ => panic!("injected panic in sync"),
            }
        }
    }

    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            let mut l = LOG.lock().unwrap_or_else(PoisonError::into_inner);
            l.push(r.args().to_string());
        }
        fn flush(&self) {}
    }

    fn logged(what: &str) -> bool {
        let l = LOG.lock().unwrap_or_else(PoisonError::into_inner);
        l.iter().any(|m| m.contains(what))
    }

    /// A mount's background state over a flaky store, with one file holding data.
    fn setup() -> (Locked, Arc<AtomicU8>, Ino) {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Error);
        let mode = Arc::new(AtomicU8::new(0));
        let dev = Flaky {
            inner: MemBackend::new(),
            mode: mode.clone(),
        };
        let store = Store::create(Box::new(dev), Box::new(MemBackend::new())).expect("store");
        let mut fs = Fs::new(store, None).expect("fs");
        let (ino, _) = fs
            .mknod(Ctx::ROOT, Ino::ROOT, b"f", libc::S_IFREG | 0o644, 0)
            .expect("mknod");
        assert_eq!(fs.write(ino, 0, &[7u8; 8192]).expect("write"), 8192);
        let locked = Locked {
            fs: Arc::new(Mutex::new(fs)),
            gate: Arc::new(RwLock::new(())),
        };
        (locked, mode, ino)
    }

    fn errno_of_write(l: &Locked, ino: Ino) -> i32 {
        l.with(|g| {
            g.write(ino, 0, b"again")
                .map(|_| 0)
                .unwrap_or_else(|e| e.errno())
        })
    }

    #[test]
    fn failing_commits_make_the_store_read_only() {
        let (l, mode, ino) = setup();
        let mut reported = false;
        background_commit(&l, &mut reported);
        assert!(!reported, "a working commit");
        assert_eq!(errno_of_write(&l, ino), 0, "writable while commits work");
        mode.store(1, Ordering::SeqCst);
        background_commit(&l, &mut reported);
        assert!(reported);
        assert_eq!(errno_of_write(&l, ino), libc::EROFS);
        let mk = l.with(|g| {
            g.mknod(Ctx::ROOT, Ino::ROOT, b"g", libc::S_IFREG | 0o644, 0)
                .map(|_| 0)
                .unwrap_or_else(|e| e.errno())
        });
        assert_eq!(mk, libc::EROFS, "create on a read-only store");
        assert!(logged("the store is read-only (writes answer EROFS)"));
        // Reads still work.
        let data = l.with(|g| g.read(ino, 0, 5)).expect("read");
        assert_eq!(data, b"again");
    }

    #[test]
    fn a_panic_in_a_commit_is_caught_and_the_store_turns_read_only() {
        let (l, mode, ino) = setup();
        mode.store(2, Ordering::SeqCst);
        let mut reported = false;
        background_commit(&l, &mut reported);
        assert!(reported, "the panic was caught and reported");
        assert!(logged(
            "internal error (panic caught): injected panic in sync"
        ));
        assert_eq!(errno_of_write(&l, ino), libc::EROFS);
        // The committer goes on (and fails again) without dying or logging twice.
        mode.store(0, Ordering::SeqCst);
        background_commit(&l, &mut reported);
        assert_eq!(errno_of_write(&l, ino), libc::EROFS, "stays read-only");
    }

    #[test]
    fn a_panic_in_the_reclaimer_is_caught_and_its_step_undone() {
        let (l, _mode, ino) = setup();
        let before = l.with(|g| g.getattr(ino)).expect("attr");
        let r: Option<()> = guarded(&l, "test step", |g| {
            g.begin_op();
            g.write(ino, 1 << 20, b"x").expect("write");
            panic!("injected panic in a step");
        });
        assert!(r.is_none());
        assert!(logged(
            "test step: internal error (panic caught): injected panic in a step"
        ));
        let after = l.with(|g| g.getattr(ino)).expect("attr");
        assert_eq!(after.size, before.size, "the interrupted step was undone");
        assert_eq!(errno_of_write(&l, ino), 0, "still writable");
    }
}
