//! Commits whose slow half runs without the filesystem's locks, as jbd2 runs a committing
//! transaction beside the running one (docs/FORMAT.md, "Commit protocol").
//!
//! `Store::begin_commit` (under the locks) seals the dirty pages into a record and moves
//! them out of the dirty cache into the *committing* set; `CommitJob::run` (no lock) makes
//! the data durable, writes and syncs the journal record (the commit point) and writes the
//! pages home; `Store::settle` (under the locks) ends it. Meanwhile requests go on in a new
//! transaction. What keeps that safe:
//! - reads of a metadata page look in the dirty cache, then in the committing set, then on
//!   disk, so they see the newest state; a change copies the page into the dirty cache;
//! - the pages the commit frees stay pending in memory (unallocatable) until the record is
//!   durable: allocated and written over before that, a crash would bring back a state
//!   that still uses them;
//! - pages whose count fell to 1 before the commit stay "shrunk" (no in-place write) until
//!   it is durable, for the same reason;
//! - one commit at a time: `begin_commit` and `commit` settle the one in flight first.

use super::layout::{PS, RC_PENDING};
use super::{Store, journal::Journal};
use crate::error::{Error, Result};
use crate::ids::{PageMap, PageNo, PageSet};
use crate::page::{DataIo, PageBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// How a job ended: `None` while it runs.
#[derive(Default)]
struct Outcome {
    done: Mutex<Option<std::result::Result<(), String>>>,
    cv: Condvar,
}

impl Outcome {
    fn set(&self, r: std::result::Result<(), String>) {
        let mut d = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        if d.is_none() {
            *d = Some(r);
        }
        self.cv.notify_all();
    }

    fn wait(&self) -> std::result::Result<(), String> {
        let mut d = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = d.as_ref() {
                return r.clone();
            }
            d = self.cv.wait(d).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The commit in flight, as the store keeps it until `settle`.
pub(super) struct Committing {
    pub(super) pages: Arc<PageMap<Box<PageBuf>>>,
    /// Freed by this commit: pending in memory until the record is durable.
    freed: Vec<PageNo>,
    /// Fell to one reference before this commit: no in-place write until it is durable.
    pub(super) shrunk: PageSet,
    outcome: Arc<Outcome>,
}

/// The half of a commit that runs without the locks: see the module's text.
pub struct CommitJob {
    seq: u64,
    pages: Arc<PageMap<Box<PageBuf>>>,
    io: DataIo,
    journal: Arc<Mutex<Journal>>,
    outcome: Arc<Outcome>,
}

impl CommitJob {
    /// Data durable, record written and synced (the commit point), pages written home.
    /// Hold no lock of the filesystem's: requests run meanwhile. Then `Store::settle`.
    pub fn run(self) {
        let r = self.steps().map_err(|e| e.to_string());
        self.outcome.set(r);
    }

    fn steps(&self) -> Result<()> {
        self.io.sync()?;
        self.journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(self.seq, &self.pages)?;
        for (p, buf) in self.pages.iter() {
            self.io.write_at(p.0 * PS, &buf[..])?;
        }
        log::debug!("commit {} written", self.seq);
        Ok(())
    }
}

impl Drop for CommitJob {
    /// A job dropped without running (a panic between its two halves) must not leave
    /// `settle` waiting forever.
    fn drop(&mut self) {
        self.outcome.set(Err("the commit was abandoned".into()));
    }
}

impl Store {
    /// The first half of a commit: seals the record and hands the slow half to the caller
    /// (`None`: nothing to commit, or a backend without a lock-free handle, for which the
    /// whole commit was just made here).
    pub fn begin_commit(&mut self) -> Result<Option<CommitJob>> {
        self.settle()?;
        self.check_writable()?;
        if !self.has_changes() {
            return Ok(None);
        }
        let Some(io) = self.dev.data_io() else {
            self.commit()?;
            return Ok(None);
        };
        let in_op = self.undo.is_some();
        self.in_commit = true;
        let r = self.seal_record(io);
        self.in_commit = false;
        if r.is_err() {
            self.failed = true;
        }
        if in_op {
            self.begin_op();
        }
        r.map(Some)
    }

    fn seal_record(&mut self, io: DataIo) -> Result<CommitJob> {
        let freed = self.release_pending()?;
        self.sb.seq += 1;
        let mut page0 = Box::new([0u8; crate::page::PAGE_SIZE]);
        self.sb.encode(&mut page0[..]);
        self.dirty.insert(PageNo(0), page0);
        self.undo = None;
        for (p, buf) in self.dirty.iter_mut() {
            super::layout::seal(*p, &mut buf[..]);
        }
        let pages = Arc::new(std::mem::take(&mut self.dirty));
        let outcome = Arc::new(Outcome::default());
        self.committing = Some(Committing {
            pages: pages.clone(),
            freed: freed.clone(),
            shrunk: std::mem::take(&mut self.shrunk),
            outcome: outcome.clone(),
        });
        self.data_dirty = false;
        // Free in the record, pending in memory until it is durable.
        for p in &freed {
            self.set_refcount(*p, RC_PENDING)?;
        }
        Ok(CommitJob {
            seq: self.sb.seq,
            pages,
            io,
            journal: self.journal.clone(),
            outcome,
        })
    }

    /// Ends the commit in flight, if any, waiting for its slow half: its pages are home
    /// (their copies leave memory), what it freed becomes free. A failed one turns the
    /// store read-only; its pages stay in memory so that reads still show what the journal
    /// may hold (recovery decides at the next open).
    pub fn settle(&mut self) -> Result<()> {
        let Some(c) = self.committing.as_ref() else {
            return Ok(());
        };
        if let Err(e) = c.outcome.wait() {
            if !self.failed {
                log::error!("commit failed, refusing further changes: {e}");
            }
            self.failed = true;
            return Err(Error::Failed);
        }
        let Some(c) = self.committing.take() else {
            return Ok(());
        };
        for p in c.pages.keys() {
            self.verified.insert(*p);
        }
        let undo = self.undo.take();
        let r = c.freed.iter().try_for_each(|p| self.set_refcount(*p, 0));
        self.undo = undo;
        if let Err(e) = r {
            self.failed = true;
            return Err(e);
        }
        // Free on disk now (the record is durable): their bytes may go back to the host.
        self.queue_freed(c.freed);
        self.counters.commits += 1;
        log::debug!("commit {} settled", self.sb.seq);
        Ok(())
    }

    /// The committing set's copy of metadata page `p`, if the commit in flight holds it.
    pub(super) fn committing_page(&self, p: PageNo) -> Option<&PageBuf> {
        self.committing
            .as_ref()
            .and_then(|c| c.pages.get(&p))
            .map(|b| &**b)
    }

    /// True when the commit in flight saw `p` fall to one reference.
    pub(super) fn shrunk_in_flight(&self, p: PageNo) -> bool {
        self.committing
            .as_ref()
            .is_some_and(|c| c.shrunk.contains(&p))
    }
}
