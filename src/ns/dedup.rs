//! KSM-style deduplication of file pages. A run hashes each file's data pages (a batch at
//! a time, under the filesystem lock, so writers interleave between batches), keeps the
//! first page seen for each hash as the candidate, and merges a later page into it only
//! after re-checking, under the same lock hold, that the candidate's file still maps that
//! very page at that index and that every byte is equal. A page changed since it was
//! hashed is thereby skipped, never merged wrongly. All-zero pages become holes (the zero
//! page). Merged pages are shared by count, so the next write to either file copies.

use super::fs::Fs;
use super::perm::{Cred, R};
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::page::PAGE_SIZE;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::time::{Duration, Instant};

/// Pages hashed per lock hold.
pub const BATCH: u64 = 256;

/// Candidates kept by all runs together (about 40 bytes each, 320 MiB at most): past
/// this, pages are still merged into known candidates but not remembered as new ones.
const MAX_CANDIDATES: usize = 8 << 20;

/// Runs kept at once, and per user: a user's new run beyond its share ends that user's
/// least recently used run; a new run beyond the total ends the least recently used run
/// idle for `IDLE` (one whose `cowfs dedup` was killed), or is refused (EBUSY).
const MAX_RUNS: usize = 16;
const MAX_RUNS_PER_UID: usize = 4;
const IDLE: Duration = Duration::from_secs(60);

/// Where a candidate page was seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    ino: Ino,
    idx: u64,
    page: PageNo,
}

/// Which run: the caller's uid and the id its `cowfs dedup` picked. Runs of different
/// users never meet: one cannot join, reset or end another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunKey {
    pub uid: u32,
    pub run: u64,
}

/// The state of one dedup run (kept between the requests of one `cowfs dedup`).
#[derive(Debug)]
struct DedupRun {
    index: HashMap<u64, Seen>,
    used: Instant,
}

/// Every run in progress.
#[derive(Debug, Default)]
pub struct DedupRuns {
    runs: HashMap<RunKey, DedupRun>,
    /// Candidates held by all runs.
    candidates: usize,
}

impl DedupRuns {
    fn end(&mut self, key: RunKey) {
        if let Some(r) = self.runs.remove(&key) {
            self.candidates -= r.index.len();
        }
    }

    /// The least recently used run among those `keep` selects.
    fn oldest(&self, keep: impl Fn(&RunKey, &DedupRun) -> bool) -> Option<RunKey> {
        self.runs
            .iter()
            .filter(|(k, r)| keep(k, r))
            .min_by_key(|(_, r)| r.used)
            .map(|(k, _)| *k)
    }

    /// Run `key`, started if new (making room as the limits say).
    fn get(&mut self, key: RunKey) -> Result<&mut DedupRun> {
        if !self.runs.contains_key(&key) {
            let mine = self.runs.keys().filter(|k| k.uid == key.uid).count();
            if mine >= MAX_RUNS_PER_UID
                && let Some(k) = self.oldest(|k, _| k.uid == key.uid)
            {
                log::info!("dedup: uid {} started a new run; its oldest ends", key.uid);
                self.end(k);
            }
            if self.runs.len() >= MAX_RUNS {
                let now = Instant::now();
                match self.oldest(|_, r| now.duration_since(r.used) >= IDLE) {
                    Some(k) => self.end(k),
                    None => return Err(Error::Busy),
                }
            }
        }
        let r = self.runs.entry(key).or_insert_with(|| DedupRun {
            index: HashMap::new(),
            used: Instant::now(),
        });
        r.used = Instant::now();
        Ok(r)
    }

    fn candidate(&self, key: RunKey, h: u64) -> Option<Seen> {
        self.runs.get(&key).and_then(|r| r.index.get(&h).copied())
    }

    fn remember(&mut self, key: RunKey, h: u64, s: Seen, replace: bool) {
        let full = self.candidates >= MAX_CANDIDATES;
        let Some(r) = self.runs.get_mut(&key) else {
            return;
        };
        match r.index.entry(h) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if replace {
                    e.insert(s);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                if !full {
                    e.insert(s);
                    self.candidates += 1;
                }
            }
        }
    }

    /// Runs in progress.
    fn len(&self) -> usize {
        self.runs.len()
    }
}

/// What a dedup step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Data pages looked at.
    pub scanned: u64,
    /// Pages merged into an identical page.
    pub merged: u64,
    /// All-zero pages turned into holes.
    pub zeroed: u64,
    /// Pages whose candidate changed or vanished since it was hashed.
    pub skipped: u64,
    /// Page index to continue from (u64::MAX: the file is done).
    pub next: u64,
}

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(b);
    h.finish()
}

impl Fs {
    /// Ends the caller's dedup run `key`: forgets its index (other runs go on).
    pub fn dedup_finish(&mut self, key: RunKey) {
        self.dedup.end(key);
    }

    /// Dedup runs in progress.
    pub fn dedup_runs(&self) -> usize {
        self.dedup.len()
    }

    fn page_bytes(&mut self, p: PageNo) -> Result<Vec<u8>> {
        let mut b = vec![0u8; PAGE_SIZE];
        self.store.read_data(p, 0, &mut b)?;
        Ok(b)
    }

    /// True when `s.ino` still maps `s.page` at `s.idx`, that page holds `bytes`, and the
    /// caller may still read the file.
    fn still_there(&mut self, cred: &Cred, s: Seen, bytes: &[u8]) -> Result<bool> {
        let Ok(i) = self.peek(s.ino) else {
            return Ok(false);
        };
        if !i.is_file() || !cred.may(&i, R) || i.map.get(&mut self.store, s.idx)? != s.page {
            return Ok(false);
        }
        Ok(self.page_bytes(s.page)? == bytes)
    }

    /// Dedups up to `BATCH` data pages of regular file `ino` from page index `from`, in
    /// the run of `cred.uid` keyed `run`. The caller must have `ino` open for writing (the
    /// adapter checks the handle) and may read it (checked here, as for every candidate
    /// it is compared with): pages are compared only within files the caller may read.
    pub fn dedup_step(&mut self, cred: &Cred, run: u64, ino: Ino, from: u64) -> Result<DedupStats> {
        let mut st = DedupStats::default();
        let inode = self.peek(ino)?;
        if !inode.is_file() {
            return Err(Error::Invalid("dedup works on regular files"));
        }
        if !cred.may(&inode, R) {
            return Err(Error::Access);
        }
        let key = RunKey { uid: cred.uid, run };
        self.dedup.get(key)?;
        let mut idx = from;
        while st.scanned < BATCH {
            let map = self.peek(ino)?.map;
            let Some(i) = map.next_data(&mut self.store, idx)? else {
                st.next = u64::MAX;
                return Ok(st);
            };
            let p = map.get(&mut self.store, i)?;
            let bytes = self.page_bytes(p)?;
            st.scanned += 1;
            idx = i + 1;
            if bytes.iter().all(|b| *b == 0) {
                self.replace_page(ino, i, PageNo::ZERO)?;
                st.zeroed += 1;
                continue;
            }
            let h = hash(&bytes);
            let cand = self.dedup.candidate(key, h);
            match cand {
                Some(c) if c.page == p => {}
                Some(c) if self.still_there(cred, c, &bytes)? => {
                    self.replace_page(ino, i, c.page)?;
                    st.merged += 1;
                }
                Some(_) => {
                    st.skipped += 1;
                    self.dedup.remember(
                        key,
                        h,
                        Seen {
                            ino,
                            idx: i,
                            page: p,
                        },
                        true,
                    );
                }
                None => self.dedup.remember(
                    key,
                    h,
                    Seen {
                        ino,
                        idx: i,
                        page: p,
                    },
                    false,
                ),
            }
        }
        st.next = idx;
        Ok(st)
    }

    /// Points page `idx` of `ino` at `page` (taking a reference on it; the zero page makes
    /// a hole), dropping the page it replaces.
    fn replace_page(&mut self, ino: Ino, idx: u64, page: PageNo) -> Result<()> {
        let mut i = self.get(ino)?;
        self.store.incref(page)?;
        i.map.set(&mut self.store, idx, page)?;
        self.put(ino, &i)
    }
}
