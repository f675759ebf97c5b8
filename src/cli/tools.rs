//! The client side of the cowfs ioctls: `cowfs clone`, `cowfs du`, `cowfs stats`.

use crate::error::{Error, Result};
use crate::fuse::abi::{self, CloneReq, F_FORCE, F_RANGE, F_RECURSIVE};
use crate::ns::{Space, StoreStats};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A one-line error about path `p`.
pub fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    let msg = match e.raw_os_error() {
        Some(libc::ENOTTY) => format!("{what} {}: not on a cowfs mount", p.display()),
        _ => format!("{what} {}: {e}", p.display()),
    };
    Error::BadStore(msg)
}

/// The root of the mount holding `p`: the highest ancestor on the same device.
fn mount_root(p: &Path) -> Result<PathBuf> {
    let dev = std::fs::metadata(p)?.dev();
    let mut root = p.to_path_buf();
    while let Some(up) = root.parent() {
        if std::fs::metadata(up)?.dev() != dev {
            break;
        }
        root = up.to_path_buf();
    }
    Ok(root)
}

/// How `cowfs clone` was asked to clone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneArgs {
    pub range: Option<(u64, u64, u64)>,
    pub recursive: bool,
    pub force: bool,
}

/// `cowfs clone SRC DST`.
pub fn clone(src: &Path, dst: &Path, a: CloneArgs) -> Result<()> {
    let src = std::fs::canonicalize(src).map_err(|e| io_err("cannot read", src, e))?;
    let meta = std::fs::metadata(&src)?;
    if meta.is_dir() && !a.recursive {
        return Err(Error::BadStore(format!(
            "{} is a directory (use -r)",
            src.display()
        )));
    }
    let root = mount_root(&src)?;
    let rel = src
        .strip_prefix(&root)
        .map_err(|_| Error::Invalid("source outside its mount"))?;
    let mut req = CloneReq {
        umask: crate::sys::umask(),
        src_ino: meta.ino(),
        src_path: rel.as_os_str().as_bytes().to_vec(),
        ..Default::default()
    };
    if a.force {
        req.flags |= F_FORCE;
    }
    flush(&src, &root, meta.is_dir())?;
    if let Some((so, doff, len)) = a.range {
        req.flags |= F_RANGE;
        (req.src_off, req.dst_off, req.len) = (so, doff, len);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(dst)
            .map_err(|e| io_err("cannot open", dst, e))?;
        check_same_dev(&meta, &f.metadata()?, dst)?;
        // Bytes the kernel still caches for the destination reach the daemon first, so
        // they cannot land over the clone later.
        f.sync_all().map_err(|e| io_err("cannot sync", dst, e))?;
        return send(&f, &mut req, dst);
    }
    let dst = match std::fs::metadata(dst) {
        Ok(m) if m.is_dir() && !a.force => dst.join(src.file_name().unwrap_or_default()),
        _ => dst.to_path_buf(),
    };
    let name = dst
        .file_name()
        .ok_or(Error::Invalid("destination has no name"))?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    req.name = name.as_bytes().to_vec();
    if a.recursive {
        req.flags |= F_RECURSIVE;
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&parent)
        .map_err(|e| io_err("cannot open", &parent, e))?;
    check_same_dev(&meta, &dir.metadata()?, &dst)?;
    let before = std::fs::symlink_metadata(&dst).map(|m| m.ino()).ok();
    let r = send(&dir, &mut req, &dst);
    // A tree is copied in steps, in place (as `cp -a` copies): a failure part way leaves
    // the part made so far.
    let after = std::fs::symlink_metadata(&dst).map(|m| m.ino()).ok();
    match r {
        Err(e) if a.recursive && after.is_some() && after != before => Err(Error::BadStore(
            format!("{e}; the partial copy {} is left in place", dst.display()),
        )),
        r => r,
    }
}

fn check_same_dev(src: &std::fs::Metadata, dst: &std::fs::Metadata, p: &Path) -> Result<()> {
    if src.dev() != dst.dev() {
        return Err(io_err(
            "cannot clone to",
            p,
            std::io::Error::from_raw_os_error(libc::EXDEV),
        ));
    }
    Ok(())
}

/// Writes back dirty pages (shared mmaps included) so the clone sees every byte written.
fn flush(src: &Path, root: &Path, tree: bool) -> Result<()> {
    if tree {
        let f = File::open(root)?;
        return crate::sys::syncfs(&f).map_err(|e| io_err("cannot sync", root, e));
    }
    let f = File::open(src).map_err(|e| io_err("cannot read", src, e))?;
    f.sync_all().map_err(|e| io_err("cannot sync", src, e))
}

fn send(f: &File, req: &mut CloneReq, dst: &Path) -> Result<()> {
    let mut buf = req.encode()?;
    crate::sys::ioctl(f, abi::IOC_CLONE, &mut buf)
        .map_err(|e| io_err("cannot clone to", dst, e))?;
    Ok(())
}

/// Space of one path (a file, or a directory tree).
pub fn space(p: &Path) -> Result<Space> {
    let f = File::open(p).map_err(|e| io_err("cannot open", p, e))?;
    let mut buf = vec![0u8; abi::SPACE_SIZE];
    crate::sys::ioctl(&f, abi::IOC_SPACE, &mut buf).map_err(|e| io_err("cannot measure", p, e))?;
    Ok(abi::decode_space(&buf))
}

/// Store-wide statistics of the mount holding `p`.
pub fn stats(p: &Path) -> Result<StoreStats> {
    let f = File::open(p).map_err(|e| io_err("cannot open", p, e))?;
    let mut buf = vec![0u8; abi::STATS_SIZE];
    crate::sys::ioctl(&f, abi::IOC_STATS, &mut buf)
        .map_err(|e| io_err("cannot read stats of", p, e))?;
    Ok(abi::decode_stats(&buf))
}

/// Bytes for people: 1.5G, 300M, 12K, 512B.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}
