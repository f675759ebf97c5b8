//! KSM-style deduplication of file pages. A run hashes each file's data pages (a batch at
//! a time, under the filesystem lock, so writers interleave between batches), keeps the
//! first page seen for each hash as the candidate, and merges a later page into it only
//! after re-checking, under the same lock hold, that the candidate's file still maps that
//! very page at that index and that every byte is equal. A page changed since it was
//! hashed is thereby skipped, never merged wrongly. All-zero pages become holes (the zero
//! page). Merged pages are shared by count, so the next write to either file copies.

use super::fs::Fs;
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::page::PAGE_SIZE;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

/// Pages hashed per lock hold.
pub const BATCH: u64 = 256;

/// Candidates kept per run (about 40 bytes each): past this, pages are still merged into
/// known candidates but not remembered as new ones.
const MAX_CANDIDATES: usize = 8 << 20;

/// Where a candidate page was seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    ino: Ino,
    idx: u64,
    page: PageNo,
}

/// The state of one dedup run (kept between the requests of one `cowfs dedup`).
#[derive(Debug, Default)]
pub struct DedupRun {
    pub id: u64,
    index: HashMap<u64, Seen>,
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
    /// Starts (or continues) dedup run `id`; a new id forgets the previous run's index.
    fn dedup_run(&mut self, id: u64) -> &mut DedupRun {
        if self.dedup.as_ref().is_none_or(|r| r.id != id) {
            self.dedup = Some(DedupRun {
                id,
                index: HashMap::new(),
            });
        }
        self.dedup.get_or_insert_with(DedupRun::default)
    }

    /// Ends a dedup run: forgets its index.
    pub fn dedup_finish(&mut self) {
        self.dedup = None;
    }

    fn page_bytes(&mut self, p: PageNo) -> Result<Vec<u8>> {
        let mut b = vec![0u8; PAGE_SIZE];
        self.store.read_data(p, 0, &mut b)?;
        Ok(b)
    }

    /// True when `s.ino` still maps `s.page` at `s.idx` and that page holds `bytes`.
    fn still_there(&mut self, s: Seen, bytes: &[u8]) -> Result<bool> {
        let Ok(i) = self.peek(s.ino) else {
            return Ok(false);
        };
        if !i.is_file() || i.map.get(&mut self.store, s.idx)? != s.page {
            return Ok(false);
        }
        Ok(self.page_bytes(s.page)? == bytes)
    }

    /// Dedups up to `BATCH` data pages of regular file `ino` from page index `from`, in
    /// run `run`.
    pub fn dedup_step(&mut self, run: u64, ino: Ino, from: u64) -> Result<DedupStats> {
        let mut st = DedupStats::default();
        let inode = self.peek(ino)?;
        if !inode.is_file() {
            return Err(Error::Invalid("dedup works on regular files"));
        }
        self.dedup_run(run);
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
            let cand = self.dedup.as_ref().and_then(|r| r.index.get(&h).copied());
            match cand {
                Some(c) if c.page == p => {}
                Some(c) if self.still_there(c, &bytes)? => {
                    self.replace_page(ino, i, c.page)?;
                    st.merged += 1;
                }
                Some(_) => {
                    st.skipped += 1;
                    self.remember_candidate(
                        h,
                        Seen {
                            ino,
                            idx: i,
                            page: p,
                        },
                        true,
                    );
                }
                None => self.remember_candidate(
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

    fn remember_candidate(&mut self, h: u64, s: Seen, replace: bool) {
        if let Some(r) = self.dedup.as_mut()
            && (replace || r.index.len() < MAX_CANDIDATES)
        {
            r.index.insert(h, s);
        }
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
