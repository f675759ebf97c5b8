//! `cowfs dedup MOUNTPOINT [PATH...]`: walks the files, asks the daemon to dedup each a
//! batch at a time, draws progress, and prints what was merged.

use crate::error::{Error, Result};
use crate::fuse::dedup_abi::{self, DEDUP_SIZE, IOC_DEDUP, OP_FINISH, OP_STEP};
use crate::ns::DedupStats;
use crate::tools;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const PS: u64 = crate::page::PAGE_SIZE as u64;

fn ioctl(f: &File, p: &Path, op: u32, run: u64, from: u64) -> Result<DedupStats> {
    let mut b = dedup_abi::encode_req(op, run, from);
    debug_assert_eq!(b.len(), DEDUP_SIZE);
    crate::sys::ioctl(f, IOC_DEDUP, &mut b).map_err(|e| tools::io_err("cannot dedup", p, e))?;
    dedup_abi::decode_ans(&b)
}

/// Regular files under `p` on device `dev` (not following symlinks, skipping `.snapshots`).
fn files(p: &Path, dev: u64, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let m = std::fs::symlink_metadata(p).map_err(|e| tools::io_err("cannot read", p, e))?;
    if m.dev() != dev {
        return Ok(());
    }
    if m.is_file() {
        out.push((p.to_path_buf(), m.len()));
    } else if m.is_dir() {
        let rd = std::fs::read_dir(p).map_err(|e| tools::io_err("cannot list", p, e))?;
        for e in rd {
            let e = e.map_err(|e| tools::io_err("cannot list", p, e))?;
            if e.file_name() == ".snapshots" {
                continue;
            }
            files(&e.path(), dev, out)?;
        }
    }
    Ok(())
}

struct Progress {
    tty: bool,
    total: u64,
    done: u64,
    shown: u64,
}

impl Progress {
    fn advance(&mut self, bytes: u64) {
        self.done = (self.done + bytes).min(self.total);
        let mut err = std::io::stderr();
        if self.tty {
            let pct = self.done * 100 / self.total.max(1);
            let bar = "#".repeat((pct / 4) as usize);
            let _ = write!(
                err,
                "\rcowfs dedup: [{bar:<25}] {pct:>3}%  {}   ",
                tools::human(self.done)
            );
        } else if self.done >= self.shown + (1 << 30) {
            self.shown = self.done;
            let _ = writeln!(
                err,
                "cowfs dedup: {} of {} scanned",
                tools::human(self.done),
                tools::human(self.total)
            );
        }
    }

    fn end(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Runs `cowfs dedup`.
pub fn run(mnt: &Path, paths: &[PathBuf]) -> Result<()> {
    let root = File::open(mnt).map_err(|e| tools::io_err("cannot open", mnt, e))?;
    let dev = root.metadata()?.dev();
    // Fails at once (ENOTTY: "not on a cowfs mount") unless MOUNTPOINT is cowfs.
    ioctl(&root, mnt, OP_FINISH, 0, 0)?;
    let mut all = Vec::new();
    let targets = if paths.is_empty() {
        vec![mnt.to_path_buf()]
    } else {
        paths.to_vec()
    };
    for p in &targets {
        let m = std::fs::metadata(p).map_err(|e| tools::io_err("cannot read", p, e))?;
        if m.dev() != dev {
            return Err(Error::BadStore(format!(
                "{}: not on the mount {}",
                p.display(),
                mnt.display()
            )));
        }
        files(p, dev, &mut all)?;
    }
    let run = u64::from(std::process::id()) << 32 | (crate::ns::Time::now().nsec as u64);
    let mut prog = Progress {
        tty: std::io::stderr().is_terminal(),
        total: all.iter().map(|(_, n)| n).sum(),
        done: 0,
        shown: 0,
    };
    let mut sum = DedupStats::default();
    for (p, _) in &all {
        // The daemon merges pages only in files opened for writing (EBADF otherwise).
        let f = match std::fs::OpenOptions::new().read(true).write(true).open(p) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("skipping {}: {e}", p.display());
                continue;
            }
        };
        let mut from = 0;
        while from != u64::MAX {
            let s = ioctl(&f, p, OP_STEP, run, from)?;
            sum.scanned += s.scanned;
            sum.merged += s.merged;
            sum.zeroed += s.zeroed;
            sum.skipped += s.skipped;
            prog.advance(s.scanned * PS);
            from = s.next;
        }
    }
    ioctl(&root, mnt, OP_FINISH, run, 0)?;
    prog.end();
    println!(
        "cowfs dedup: {} files, {} pages scanned: {} merged into identical pages, {} zero pages made holes, {} skipped (changed meanwhile); {} saved",
        all.len(),
        sum.scanned,
        sum.merged,
        sum.zeroed,
        sum.skipped,
        tools::human((sum.merged + sum.zeroed) * PS)
    );
    Ok(())
}
