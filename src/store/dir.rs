//! A store on the host: one directory holding the page file and the journal, locked while
//! open so two daemons never share it.

use super::Store;
use crate::error::{Error, Result};
use crate::page::{FileBackend, MmapBackend};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Name of the page file inside a store directory.
pub const PAGES_FILE: &str = "pages";
/// Name of the journal file inside a store directory.
pub const JOURNAL_FILE: &str = "journal";

/// An open store directory: the store plus the lock that keeps it ours.
pub struct StoreDir {
    /// The store itself.
    pub store: Store,
    /// The directory path.
    pub path: PathBuf,
    _lock: File,
}

impl StoreDir {
    /// Splits into the store, its path, and the lock (keep it until the store is closed).
    pub fn into_parts(self) -> (Store, PathBuf, File) {
        (self.store, self.path, self._lock)
    }
}

fn bad(path: &Path, what: &str) -> Error {
    Error::BadStore(format!("{}: {what}", path.display()))
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)?)
}

/// How long `lock` keeps trying: a lock can be held for a moment after its owner let go,
/// by a process that is exiting or by a child forked in between (fork shares the open file
/// description, and so the flock, until the child's exec closes it).
const LOCK_TRIES: u32 = 20;
const LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

fn lock(file: &File, path: &Path) -> Result<()> {
    let mut tries = 1;
    while !crate::sys::try_lock(file) {
        if tries < LOCK_TRIES {
            tries += 1;
            std::thread::sleep(LOCK_PAUSE);
            continue;
        }
        return Err(bad(
            path,
            "store is in use by another cowfs process (locked)",
        ));
    }
    Ok(())
}

/// Files a crash during `mkfs` may leave behind; a directory holding only these is blank.
const LEFTOVERS: [&str; 3] = [".pages.new", JOURNAL_FILE, "daemon.log"];

/// True when `path` is missing or an empty directory (but for what an interrupted `mkfs`
/// leaves): a place where a store may be made.
pub fn is_blank(path: &Path) -> Result<bool> {
    match std::fs::read_dir(path) {
        Ok(it) => {
            for e in it {
                let name = e?.file_name();
                if !LEFTOVERS.iter().any(|l| name.as_os_str() == *l) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(bad(path, "not a directory")),
        Err(e) => Err(e.into()),
    }
}

/// Opens the store in `path`; with `create`, makes a new one when `path` is blank.
pub fn open_dir(path: &Path, create: bool) -> Result<StoreDir> {
    let pages = path.join(PAGES_FILE);
    if !pages.exists() {
        if !create {
            return Err(bad(path, "not a cowfs store (no 'pages' file)"));
        }
        if !is_blank(path)? {
            return Err(bad(
                path,
                "not a cowfs store, and not empty: refusing to use it",
            ));
        }
        return make(path);
    }
    let f = open_rw(&pages, false)?;
    lock(&f, path)?;
    let journal = open_rw(&path.join(JOURNAL_FILE), true)?;
    let dev = MmapBackend::new(f.try_clone()?)?;
    let store =
        Store::open(Box::new(dev), Box::new(FileBackend::new(journal)?)).map_err(|e| match e {
            Error::BadStore(m) => bad(path, &m),
            other => other,
        })?;
    Ok(StoreDir {
        store,
        path: path.to_path_buf(),
        _lock: f,
    })
}

fn make(path: &Path) -> Result<StoreDir> {
    std::fs::create_dir_all(path)?;
    let tmp = path.join(".pages.new");
    let f = open_rw(&tmp, true)?;
    f.set_len(0)?;
    lock(&f, path)?;
    let journal = open_rw(&path.join(JOURNAL_FILE), true)?;
    journal.set_len(0)?;
    let dev = MmapBackend::new(f.try_clone()?)?;
    let mut store = Store::create(Box::new(dev), Box::new(FileBackend::new(journal)?))?;
    store.close()?;
    // The page file appears under its real name only once it holds a valid store.
    std::fs::rename(&tmp, path.join(PAGES_FILE))?;
    File::open(path)?.sync_all()?;
    log::info!("created store {}", path.display());
    Ok(StoreDir {
        store,
        path: path.to_path_buf(),
        _lock: f,
    })
}
