//! What `cowfs mount` checks before it mounts (the mount point, a store still held by an
//! exiting daemon), and `cowfs sync`.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a mount waits for a daemon that is unmounted but still closing the store.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// The mount point, canonical: it must be a directory; a missing one is created when
/// `mkdir`, else named in the error.
pub fn mountpoint(m: &Path, mkdir: bool) -> Result<PathBuf> {
    if mkdir && !m.exists() {
        std::fs::create_dir_all(m)
            .map_err(|e| Error::BadStore(format!("cannot create {}: {e}", m.display())))?;
    }
    let meta = match std::fs::metadata(m) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::BadStore(format!(
                "mount point {} does not exist (create it, or use --mkdir)",
                m.display()
            )));
        }
        Err(e) => return Err(Error::BadStore(format!("mount point {}: {e}", m.display()))),
    };
    if !meta.is_dir() {
        return Err(Error::BadStore(format!(
            "mount point {}: not a directory",
            m.display()
        )));
    }
    Ok(std::fs::canonicalize(m)?)
}

/// Where the store is mounted now, from the mount table's source column (cowfs mounts show
/// the store there).
fn mounted_at(store: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = store.to_string_lossy().replace(' ', "\\040");
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split(' ');
        let (fstype, source) = (r.next()?, r.next()?);
        let mnt = left.split(' ').nth(4)?;
        (fstype == crate::fuse::mount::FSTYPE && source == want).then(|| mnt.replace("\\040", " "))
    })
}

/// Waits until no other process holds the store's lock, for a daemon that was unmounted a
/// moment ago and is still writing its last commit. A store that is mounted, or held for
/// longer than `STORE_WAIT`, is an error at once or then.
pub fn wait_for_store(store: &Path) -> Result<()> {
    let pages = store.join(crate::store::dir::PAGES_FILE);
    let Ok(f) = File::options().read(true).write(true).open(&pages) else {
        return Ok(()); // no store yet, or not ours to open: open_dir says why
    };
    let canon = std::fs::canonicalize(store)?;
    let start = Instant::now();
    let mut said = false;
    while !crate::sys::try_lock(&f) {
        if let Some(m) = mounted_at(&canon) {
            return Err(Error::BadStore(format!(
                "{}: store is in use by another cowfs process (mounted at {m})",
                canon.display()
            )));
        }
        if start.elapsed() > STORE_WAIT {
            return Err(Error::BadStore(format!(
                "{}: store is in use by another cowfs process (locked)",
                canon.display()
            )));
        }
        if !said {
            log::info!("{}: waiting for the last daemon to let go", canon.display());
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(()) // dropping `f` lets the lock go
}

/// `cowfs sync MNT`: the kernel writes its dirty pages of the mount back to the daemon
/// (syncfs), then an fsync of the root directory makes the daemon commit (FSYNCDIR), which
/// returns once the commit is on disk.
pub fn sync(mnt: &Path) -> Result<()> {
    let canon = std::fs::canonicalize(mnt)?;
    if !super::is_mounted(&canon) {
        return Err(Error::BadStore(format!(
            "{} is not a cowfs mount point",
            canon.display()
        )));
    }
    let root = File::open(&canon)?;
    crate::sys::syncfs(&root)?;
    root.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_mountpoint_is_named_or_made() {
        let t = tempfile::tempdir().expect("should work");
        let m = t.path().join("a/b");
        let e = mountpoint(&m, false).expect_err("should fail").to_string();
        assert!(e.contains("does not exist") && e.contains("a/b"), "{e}");
        assert!(!m.exists());
        assert_eq!(
            mountpoint(&m, true).expect("should work"),
            m.canonicalize().expect("should work")
        );
        let f = t.path().join("f");
        std::fs::write(&f, b"x").expect("should work");
        assert!(
            mountpoint(&f, true)
                .expect_err("should fail")
                .to_string()
                .contains("not a directory")
        );
    }

    #[test]
    fn a_held_store_is_waited_for() {
        let t = tempfile::tempdir().expect("should work");
        drop(crate::store::open_dir(t.path(), true).expect("should work"));
        let held = crate::store::open_dir(t.path(), true).expect("should work");
        let start = Instant::now();
        let path = t.path().to_path_buf();
        let waiter = std::thread::spawn(move || wait_for_store(&path));
        std::thread::sleep(Duration::from_millis(400));
        drop(held);
        assert!(waiter.join().expect("should work").is_ok());
        assert!(start.elapsed() >= Duration::from_millis(400));
        // No store at all: nothing to wait for.
        assert!(wait_for_store(&t.path().join("none")).is_ok());
    }
}
