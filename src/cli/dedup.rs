//! `cowfs dedup MOUNTPOINT [PATH...]`: walks the files, asks the daemon to dedup each a
//! batch at a time, draws progress, and prints what was merged.

use crate::cli::tools;
use crate::error::{Error, Result};
use crate::fuse::dedup_abi::{self, DEDUP_SIZE, IOC_DEDUP, OP_FINISH, OP_STEP};
use crate::ns::DedupStats;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const PS: u64 = crate::page::PAGE_SIZE as u64;

/// Sends one dedup request on `f`; `p` names it in a message (built only on a failure).
fn ioctl(f: &File, p: &dyn Fn() -> PathBuf, op: u32, run: u64, from: u64) -> Result<DedupStats> {
    let mut b = dedup_abi::encode_req(op, run, from);
    debug_assert_eq!(b.len(), DEDUP_SIZE);
    crate::sys::ioctl(f, IOC_DEDUP, &mut b).map_err(|e| tools::io_err("cannot dedup", &p(), e))?;
    dedup_abi::decode_ans(&b)
}

/// The walk's place in a tree: the directories entered below the target, each with the
/// names still to visit. The working directory is the last one entered, so every name is
/// opened relative to it: no path grows with the depth and no descriptor is held per level.
struct Level {
    name: OsString,
    dev: u64,
    ino: u64,
    rest: std::vec::IntoIter<OsString>,
}

/// Puts the working directory back where it was when dropped.
struct Home(File);

impl Drop for Home {
    fn drop(&mut self) {
        if let Err(e) = crate::sys::fchdir(&self.0) {
            log::warn!("cannot return to the starting directory: {e}");
        }
    }
}

/// `target/a/b/.../name` for messages, with the middle left out of a deep path.
fn shown(target: &Path, levels: &[Level], name: Option<&OsStr>) -> PathBuf {
    const HEAD: usize = 4;
    const TAIL: usize = 8;
    let names: Vec<&OsStr> = levels
        .iter()
        .map(|l| l.name.as_os_str())
        .chain(name)
        .collect();
    let mut p = target.to_path_buf();
    if names.len() <= HEAD + TAIL + 1 {
        p.extend(names);
    } else {
        p.extend(&names[..HEAD]);
        p.push(format!("...({} levels)...", names.len() - HEAD - TAIL));
        p.extend(&names[names.len() - TAIL..]);
    }
    p
}

/// The names in the working directory, but `.snapshots`.
fn names_here() -> std::io::Result<std::vec::IntoIter<OsString>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(".")? {
        let n = e?.file_name();
        if n != ".snapshots" {
            out.push(n);
        }
    }
    Ok(out.into_iter())
}

/// Opens directory `name` (relative to the working directory) only to stand in it: no read
/// permission needed, and never through a symlink.
fn open_dir(name: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(name)
}

/// Makes `name` (relative to the working directory) the working directory if it is still
/// the directory `m` describes (a symlink put in its place is not followed).
fn enter(name: &Path, m: &Metadata) -> std::io::Result<()> {
    let d = open_dir(name)?;
    same(&d, m.dev(), m.ino())?;
    crate::sys::fchdir(&d)
}

/// Fails unless `f` is inode `ino` of device `dev` (the tree changed during the walk).
fn same(f: &File, dev: u64, ino: u64) -> std::io::Result<()> {
    let n = f.metadata()?;
    if (n.dev(), n.ino()) != (dev, ino) {
        return Err(std::io::Error::other("moved during the walk"));
    }
    Ok(())
}

/// A regular file found by the walk: a name to open relative to the working directory
/// (valid during the call only), its metadata, and its path for messages.
type Visit<'a> = dyn FnMut(&Path, &Metadata, &dyn Fn() -> PathBuf) -> Result<()> + 'a;

/// Calls `visit` on every regular file under `target` on device `dev`: symlinks are not
/// followed, `.snapshots` and other file systems are skipped. Iterative, fts-style: it
/// changes into each directory and back up with `..` (checked to be the directory it came
/// from), so neither the depth of the tree nor the length of its paths is limited. `tell`:
/// warn about what is skipped (once is enough for two walks).
fn walk(target: &Path, dev: u64, tell: bool, visit: &mut Visit<'_>) -> Result<()> {
    let m =
        std::fs::symlink_metadata(target).map_err(|e| tools::io_err("cannot read", target, e))?;
    if m.dev() != dev {
        return Ok(());
    }
    if m.is_file() {
        return visit(target, &m, &|| target.to_path_buf());
    }
    if !m.is_dir() {
        return Ok(());
    }
    let home =
        open_dir(Path::new(".")).map_err(|e| tools::io_err("cannot open", Path::new("."), e))?;
    let _home = Home(home);
    enter(target, &m).map_err(|e| tools::io_err("cannot enter", target, e))?;
    let rest = names_here().map_err(|e| tools::io_err("cannot list", target, e))?;
    let mut levels = vec![Level {
        name: OsString::new(),
        dev: m.dev(),
        ino: m.ino(),
        rest,
    }];
    // The directories on the way down: one met again below itself (a bind mount of the
    // file system inside itself) is a cycle, skipped as fts does.
    let mut above = HashSet::from([(m.dev(), m.ino())]);
    while let Some(top) = levels.last_mut() {
        let Some(name) = top.rest.next() else {
            if let Some(done) = levels.pop() {
                above.remove(&(done.dev, done.ino));
            }
            if let Some(up) = levels.last() {
                let back = || -> std::io::Result<()> {
                    let d = open_dir(Path::new(".."))?;
                    same(&d, up.dev, up.ino)?;
                    crate::sys::fchdir(&d)
                };
                back().map_err(|e| {
                    tools::io_err("cannot return to", &shown(target, &levels[1..], None), e)
                })?;
            }
            continue;
        };
        let here = |levels: &[Level]| shown(target, &levels[1..], Some(&name));
        let m = match std::fs::symlink_metadata(&name) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(tools::io_err("cannot read", &here(&levels), e)),
        };
        if m.dev() != dev {
            continue;
        }
        if m.is_file() {
            visit(Path::new(&name), &m, &|| here(&levels))?;
        } else if m.is_dir() {
            if !above.insert((m.dev(), m.ino())) {
                if tell {
                    log::warn!("skipping {}: a cycle", here(&levels).display());
                }
                continue;
            }
            enter(Path::new(&name), &m)
                .map_err(|e| tools::io_err("cannot enter", &here(&levels), e))?;
            let rest = names_here().map_err(|e| tools::io_err("cannot list", &here(&levels), e))?;
            levels.push(Level {
                name,
                dev: m.dev(),
                ino: m.ino(),
                rest,
            });
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
    ioctl(&root, &|| mnt.to_path_buf(), OP_FINISH, 0, 0)?;
    let targets = if paths.is_empty() {
        vec![mnt.to_path_buf()]
    } else {
        paths.to_vec()
    };
    let (mut files, mut total) = (0u64, 0u64);
    for p in &targets {
        let m = std::fs::metadata(p).map_err(|e| tools::io_err("cannot read", p, e))?;
        if m.dev() != dev {
            return Err(Error::BadStore(format!(
                "{}: not on the mount {}",
                p.display(),
                mnt.display()
            )));
        }
        walk(p, dev, false, &mut |_, m, _| {
            files += 1;
            total += m.len();
            Ok(())
        })?;
    }
    let run = u64::from(std::process::id()) << 32 | (crate::ns::Time::now().nsec as u64);
    let mut prog = Progress {
        tty: std::io::stderr().is_terminal(),
        total,
        done: 0,
        shown: 0,
    };
    let mut sum = DedupStats::default();
    for p in &targets {
        walk(p, dev, true, &mut |name, _, shown| {
            // The daemon merges pages only in files opened for writing (EBADF otherwise).
            let f = match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(name)
            {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("skipping {}: {e}", shown().display());
                    return Ok(());
                }
            };
            let mut from = 0;
            while from != u64::MAX {
                let s = ioctl(&f, shown, OP_STEP, run, from)?;
                sum.scanned += s.scanned;
                sum.merged += s.merged;
                sum.zeroed += s.zeroed;
                sum.skipped += s.skipped;
                prog.advance(s.scanned * PS);
                from = s.next;
            }
            Ok(())
        })?;
    }
    ioctl(&root, &|| mnt.to_path_buf(), OP_FINISH, run, 0)?;
    prog.end();
    println!(
        "cowfs dedup: {} files, {} pages scanned: {} merged into identical pages, {} zero pages made holes, {} skipped (changed meanwhile); {} saved",
        files,
        sum.scanned,
        sum.merged,
        sum.zeroed,
        sum.skipped,
        tools::human((sum.merged + sum.zeroed) * PS)
    );
    Ok(())
}
