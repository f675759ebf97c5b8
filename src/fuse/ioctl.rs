//! The cowfs ioctls: clone, space, stats. Decode, call the namespace under the lock, tell
//! the kernel what changed behind its back (after the lock is released), reply.

use super::CowFuse;
use super::abi::{self, CloneReq, F_FORCE, F_RANGE, F_RECURSIVE};
use super::dedup_abi;
use super::snapshot_abi::{IOC_SNAP, SnapAns, SnapOp, SnapReq};
use crate::error::Error;
use crate::ids::{Fh, Ino, SnapId};
use crate::ns::perm::Cred;
use crate::ns::{Begun, CloneOpts, Invalidate, StepBudget, TreeClone};
use fuser::{Errno, INodeNo, Request};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

/// One step of a tree clone: about 2 ms of work, so a request arriving meanwhile waits no
/// longer than that (see "Life of a clone" in docs/ARCHITECTURE.md).
const CLONE_STEP: StepBudget = StepBudget {
    entries: 10_000,
    time: Some(Duration::from_millis(2)),
};

/// Uncommitted metadata at which a tree clone commits between steps: a commit writes it
/// all to the journal under the lock, so a small one keeps other requests' wait short
/// (at 100,000 files the slowest `touch` took 31 ms with 4 MiB, up to 106 ms with 8).
const CLONE_COMMIT_BYTES: usize = 4 << 20;

/// How often a tree clone looks whether its caller was killed.
const CALLER_CHECK: Duration = Duration::from_millis(20);

/// True when process `pid` is gone or dying. A process killed (or sent a fatal signal
/// such as Ctrl-C's) while it waits for a request the daemon holds cannot go before the
/// reply comes: it waits with SIGKILL pending in every thread (fuser answers no
/// FUSE_INTERRUPT), which `/proc/PID/status` shows.
fn caller_gone(pid: u32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let kill = 1u64 << (libc::SIGKILL - 1);
    s.lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .any(|m| u64::from_str_radix(m.trim(), 16).is_ok_and(|m| m & kill != 0))
}

/// The caller's credentials, with supplementary groups read from /proc.
pub(super) fn cred(req: &Request) -> Cred {
    let groups = std::fs::read_to_string(format!("/proc/{}/status", req.pid()))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Groups:")).map(|l| {
                l[7..]
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default();
    Cred {
        uid: req.uid(),
        gid: req.gid(),
        groups,
    }
}

/// How long one step of a long walk (du, stats) holds the filesystem.
const STEP: std::time::Duration = std::time::Duration::from_millis(5);

/// A pause between two steps of a long walk: the locks are not fair, and a walk that
/// took them again at once would starve the requests waiting for them.
fn between_steps() {
    std::thread::sleep(std::time::Duration::from_micros(200));
}

/// Whether ioctl `cmd` with `data` would change the filesystem (refused on a read-only
/// mount, where the kernel lets ioctls through).
fn changes_tree(cmd: u32, data: &[u8]) -> bool {
    match cmd {
        abi::IOC_CLONE | dedup_abi::IOC_DEDUP => true,
        IOC_SNAP => SnapReq::decode(data)
            .map(|r| matches!(r.op, SnapOp::Create | SnapOp::Delete | SnapOp::Rollback))
            .unwrap_or(false),
        _ => false,
    }
}

impl CowFuse {
    pub(super) fn ioctl_cmd(
        &self,
        req: &Request,
        ino: Ino,
        fh: Fh,
        cmd: u32,
        data: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        if self.read_only && changes_tree(cmd, data) {
            return Err(Errno::from_i32(Error::ReadOnly.errno()));
        }
        match cmd {
            abi::IOC_CLONE => {
                let r = CloneReq::decode(data).map_err(|e| Errno::from_i32(e.errno()))?;
                let inv = self.clone(req, ino, fh, &r)?;
                self.invalidate(&inv);
                if r.flags & F_RANGE == 0 {
                    // A new name in `ino`, which the kernel may hold a listing of.
                    self.forget_listing(ino);
                }
                Ok(Vec::new())
            }
            abi::IOC_SPACE => self.space(ino).map(|s| abi::encode_space(&s)),
            dedup_abi::IOC_DEDUP => {
                let (op, run, from) =
                    dedup_abi::decode_req(data).map_err(|e| Errno::from_i32(e.errno()))?;
                self.dedup(req, ino, fh, op, run, from)
                    .map(|s| dedup_abi::encode_ans(&s))
            }
            IOC_SNAP => {
                let r = SnapReq::decode(data).map_err(|e| Errno::from_i32(e.errno()))?;
                self.snapshot(req, &r).map(|a| a.encode())
            }
            abi::IOC_STATS => self.stats().map(|s| abi::encode_stats(&s)),
            _ => {
                log::debug!("ioctl {cmd:#x} not supported");
                Err(Errno::from_i32(Error::UnknownIoctl.errno()))
            }
        }
    }

    fn clone(&self, req: &Request, ino: Ino, fh: Fh, r: &CloneReq) -> Result<Invalidate, Errno> {
        if ino.split().0 != SnapId::LIVE || ino == Ino::SNAPDIR {
            return Err(Errno::from_i32(Error::CrossDevice.errno()));
        }
        let cred = cred(req);
        let src = Ino(r.src_ino);
        if r.flags & F_RANGE != 0 {
            return self.call("clone range", |fs| {
                self.check_dest(fs, &cred, fh, ino, false)?;
                fs.clone_range_at(&cred, &r.src_path, src, ino, r.src_off, r.dst_off, r.len)
            });
        }
        let opts = CloneOpts {
            force: r.flags & F_FORCE != 0,
            recursive: r.flags & F_RECURSIVE != 0,
            umask: r.umask & 0o777,
        };
        let begun = self.call("clone", |fs| {
            fs.clone_start(&cred, &r.src_path, src, ino, &r.name, opts)
        })?;
        let (mut t, inv) = match begun {
            Begun::Done(inv) => return Ok(inv),
            Begun::Tree(t, inv) => (t, inv),
        };
        // The copy's top directory is in place (like `cp -a`'s, it shows while it fills
        // and stays if the clone fails): the kernel must see it, whatever comes next.
        self.invalidate(&inv);
        self.forget_listing(ino);
        let r = self.clone_steps(req.pid(), &mut t);
        for (i, is_dir) in t.touched() {
            if is_dir {
                self.forget_listing(i);
            } else {
                self.forget_attrs(i);
            }
        }
        r.map(|()| Invalidate::default())
    }

    /// Runs tree clone `t` to its end, one bounded step per operation, so that other
    /// requests (and commits) get the lock between steps. It stops when a step fails or
    /// when the caller was killed (Ctrl-C), leaving the partial copy in place.
    fn clone_steps(&self, pid: u32, t: &mut TreeClone) -> Result<(), Errno> {
        let mut checked = Instant::now();
        loop {
            let step = self.call("clone step", |fs| {
                let more = fs.clone_step(t, CLONE_STEP)?;
                Ok((more, fs.over_commit_limit(CLONE_COMMIT_BYTES)))
            });
            match step {
                Ok((more, big)) => {
                    if big {
                        // Small commits, their bulk written back without the lock: a
                        // commit's journal write holds every request up while it runs.
                        self.write_back();
                        self.call("clone: commit", |fs| fs.sync())?;
                    }
                    if !more {
                        return Ok(());
                    }
                }
                Err(e) => {
                    log::info!(
                        "clone -r: failed after {} entries ({e:?}); the partial copy stays",
                        t.copied()
                    );
                    return Err(e);
                }
            }
            if pid != 0 && checked.elapsed() >= CALLER_CHECK {
                checked = Instant::now();
                if caller_gone(pid) {
                    log::info!(
                        "clone -r: the caller (pid {pid}) was killed; stopped after {} \
                         entries, the partial copy stays",
                        t.copied()
                    );
                    return Err(Errno::from_i32(libc::EINTR));
                }
            }
            // Let a request that waits for the lock take it before the next step.
            std::thread::yield_now();
        }
    }

    /// The dedup ioctl: one batch of a file the caller opened for writing (in the live
    /// tree; a read-only handle gets EBADF, as FIDEDUPERANGE's destination does), or the
    /// end of the caller's run (commit; the freed pages show as free space at once). Runs
    /// are keyed by the caller's uid and the run id, so users never share one.
    fn dedup(
        &self,
        req: &Request,
        ino: Ino,
        fh: Fh,
        op: u32,
        run: u64,
        from: u64,
    ) -> Result<crate::ns::DedupStats, Errno> {
        match op {
            dedup_abi::OP_STEP => {
                let cred = cred(req);
                self.call("dedup", |fs| {
                    if ino.split().0 != SnapId::LIVE {
                        return Err(Error::ReadOnly);
                    }
                    self.check_dest(fs, &cred, fh, ino, true)?;
                    fs.dedup_step(&cred, run, ino, from)
                })
            }
            dedup_abi::OP_FINISH => self.call("dedup finish", |fs| {
                fs.dedup_finish(crate::ns::RunKey {
                    uid: req.uid(),
                    run,
                });
                fs.sync()?;
                Ok(crate::ns::DedupStats::default())
            }),
            _ => Err(Errno::from_i32(Error::Invalid("unknown dedup op").errno())),
        }
    }

    /// `cowfs du` of kernel inode `ino`: the walk runs in steps of `STEP`, each its own
    /// operation, so requests go on between them (a `touch` never waits behind a big tree).
    fn space(&self, ino: Ino) -> Result<crate::ns::Space, Errno> {
        let mut walk = None;
        loop {
            let done = self.vcall("space", ino, false, |fs, i| {
                let w = walk.get_or_insert_with(|| fs.space_walk(i));
                fs.space_step(w, STEP)
            })?;
            if done {
                return Ok(walk.map(|w| w.space()).unwrap_or_default());
            }
            between_steps();
        }
    }

    /// `cowfs stats`, in steps as `space`.
    fn stats(&self) -> Result<crate::ns::StoreStats, Errno> {
        let mut walk = None;
        loop {
            let r = self.call("stats", |fs| {
                let w = walk.get_or_insert_with(|| fs.stats_walk());
                Ok(fs.stats_step(w, STEP)?.then(|| fs.stats_of(w)))
            })?;
            if let Some(s) = r {
                return Ok(s);
            }
            between_steps();
        }
    }

    /// The destination check of a range clone (`owner_may` false) or a dedup step (true).
    /// With handles, the handle must be open for writing (else EBADF), as for
    /// FICLONERANGE and FIDEDUPERANGE. A mount without handles (`no_open`) gets none from
    /// the kernel: then the caller must be allowed to write the file, or for dedup own
    /// it, which is Linux's own rule for FIDEDUPERANGE on a read-only descriptor.
    fn check_dest(
        &self,
        fs: &mut crate::ns::Fs,
        cred: &Cred,
        fh: Fh,
        ino: Ino,
        owner_may: bool,
    ) -> crate::Result<()> {
        if !self.no_open || fh.0 != 0 {
            return fs.check_writable_handle(fh, ino);
        }
        let i = fs.getattr(ino)?;
        if cred.may(&i, crate::ns::perm::W) || (owner_may && cred.uid == i.uid) {
            Ok(())
        } else {
            Err(Error::BadHandle)
        }
    }

    /// The snapshot ioctl: create, delete, rollback (root or the root directory's owner),
    /// get one, status.
    fn snapshot(&self, req: &Request, r: &SnapReq) -> Result<SnapAns, Errno> {
        let cred = cred(req);
        let may = |fs: &mut crate::ns::Fs| -> crate::Result<()> {
            let owner = fs.getattr(Ino::ROOT)?.uid;
            if cred.uid == 0 || cred.uid == owner {
                Ok(())
            } else {
                Err(Error::NotPermitted)
            }
        };
        let status = |fs: &mut crate::ns::Fs| SnapAns {
            count: fs.snapshot_names().len() as u64,
            pending: fs.reclaim_pending() as u64,
            ..Default::default()
        };
        match r.op {
            SnapOp::Create | SnapOp::Delete => {
                let a = self.call("snapshot create/delete", |fs| {
                    may(fs)?;
                    let id = if r.op == SnapOp::Create {
                        fs.snapshot_create(&r.name, r.writable)?
                    } else {
                        fs.snapshot_delete(&r.name)?
                    };
                    Ok(SnapAns {
                        id: id.0,
                        ..status(fs)
                    })
                })?;
                // The kernel may hold the name in .snapshots (or its absence), and the
                // listing: drop them.
                self.invalidate(&Invalidate {
                    entries: vec![(Ino::SNAPDIR, r.name.clone())],
                    ..Invalidate::default()
                });
                self.forget_listing(Ino::SNAPDIR);
                Ok(a)
            }
            SnapOp::Rollback => {
                let inv = self.call("snapshot rollback", |fs| {
                    may(fs)?;
                    fs.snapshot_rollback(&r.name)
                })?;
                self.invalidate(&inv);
                // The root is never counted among the inodes the kernel knows.
                self.forget_listing(Ino::ROOT);
                Ok(SnapAns::default())
            }
            SnapOp::Get => self.call("snapshot get", |fs| {
                let info = fs.snapshot_info(r.index)?;
                Ok(SnapAns {
                    writable: info.writable,
                    id: info.id.0,
                    sec: info.created.sec,
                    nsec: info.created.nsec,
                    exclusive_bytes: info.exclusive_bytes,
                    name: info.name,
                    ..status(fs)
                })
            }),
            SnapOp::Status => self.call("snapshot status", |fs| Ok(status(fs))),
        }
    }

    /// Drops the kernel's cached attributes of `i` (not its pages).
    pub(super) fn forget_attrs(&self, i: Ino) {
        if let Some(n) = self.notifier.get()
            && let Err(e) = n.inval_inode(INodeNo(i.0), -1, 0)
        {
            log::debug!("inval_inode (attributes): {e}");
        }
    }

    /// Drops the kernel's cached listing (and attributes) of directory `d`: with
    /// `no_open` the kernel caches listings (FOPEN_CACHE_DIR) until a change it makes
    /// itself, or this.
    fn forget_listing(&self, d: Ino) {
        if let Some(n) = self.notifier.get()
            && let Err(e) = n.inval_inode(INodeNo(d.0), 0, 0)
        {
            log::debug!("inval_inode (listing): {e}");
        }
    }

    /// Drops the kernel's cached entries and pages that a clone replaced.
    fn invalidate(&self, inv: &Invalidate) {
        let Some(n) = self.notifier.get() else {
            return;
        };
        for (parent, name) in &inv.entries {
            if let Err(e) = n.inval_entry(INodeNo(parent.0), OsStr::from_bytes(name)) {
                log::debug!("inval_entry: {e}");
            }
        }
        for (i, off, len) in &inv.ranges {
            let len = i64::try_from(*len).unwrap_or(-1);
            if let Err(e) = n.inval_inode(INodeNo(i.0), *off as i64, len) {
                log::debug!("inval_inode: {e}");
            }
        }
        for (i, off, bytes) in &inv.grown {
            if let Err(e) = n.store(INodeNo(i.0), *off, bytes) {
                log::debug!("notify store: {e}");
            }
        }
    }
}
