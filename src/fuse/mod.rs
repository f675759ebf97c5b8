//! The fuser adapter: converts each request, calls the namespace under its lock, replies.
//! Errors become errnos through `Error::errno`, the project's one table.

pub mod abi;
mod attr;
pub mod dedup_abi;
mod ioctl;
mod ops;
pub mod session;
pub mod snapshot_abi;
mod views;

use crate::error::{Error, Result};
use crate::ns::Fs;
use fuser::Errno;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// How long the kernel may cache attributes and entries.
pub const TTL: Duration = Duration::from_secs(1);

/// Uncommitted metadata that forces a commit, in bytes.
pub const COMMIT_BYTES: usize = 64 << 20;

/// The filesystem as fuser sees it.
pub struct CowFuse {
    fs: Arc<Mutex<Fs>>,
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

fn lock(fs: &Mutex<Fs>) -> MutexGuard<'_, Fs> {
    fs.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CowFuse {
    /// Wraps a shared filesystem.
    pub fn new(fs: Arc<Mutex<Fs>>, notifier: Arc<OnceLock<fuser::Notifier>>) -> Self {
        CowFuse { fs, notifier }
    }

    /// Runs `f` on the filesystem under its lock. A panic becomes EIO and a log line, so
    /// one bad request cannot take the mount down.
    fn call<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Fs) -> Result<T>,
    ) -> std::result::Result<T, Errno> {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut fs = lock(&self.fs);
            fs.begin_op();
            let r = f(&mut fs);
            fs.end_op(r.is_ok());
            if r.is_ok()
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
