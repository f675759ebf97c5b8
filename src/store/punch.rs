//! Giving freed space back to the host. Pages freed inside the store leave the `pages` file
//! as long as it was, so the host's disk would only fill; instead the runs of pages a
//! durable commit freed are punched out of the file (`Backend::punch`:
//! `FALLOC_FL_PUNCH_HOLE`), a bounded batch at a time, after the commit that freed them.
//! See docs/ARCHITECTURE.md, "Giving space back to the host", for why this is safe.
//!
//! What is queued costs what was freed, never a scan of the store: each commit appends the
//! runs its pending frees formed (coalesced, one group each). A run is punched once and not
//! again until its pages are allocated and freed again. Before a run is punched its counts
//! are read again under the lock, and only pages still free (count 0) are punched.

use super::Store;
use super::layout::{self, GROUP_PAGES, Kind, META_HEADER, PS, get32};
use crate::error::{Error, Result};
use crate::ids::PageNo;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Runs queued at most: 16 MiB of queue. Past it, the groups of further runs are queued
/// instead (scanned whole when their turn comes), so memory stays bounded by the groups.
const MAX_RUNS: usize = 1 << 20;

/// Time one `punch_freed` call may take, past its first run: punching single pages out of
/// a long extent costs up to half a millisecond each on ext4 (the extent is split), so a
/// batch is bounded by time as well as by pages.
const PUNCH_TIME: Duration = Duration::from_millis(5);

/// One bit per page of a group (1020 pages fit 1024 bits).
type GroupBits = [u64; 16];

/// What is left to punch.
#[derive(Debug, Default)]
pub(super) struct PunchQueue {
    /// (first page, pages) freed by durable commits and not punched yet; each run lies in
    /// one group.
    runs: VecDeque<(u64, u64)>,
    /// Groups to scan whole: those whose runs did not fit in `runs`, and those a journal
    /// record replayed at open changed (the last commit before a crash may have freed
    /// pages it never punched).
    groups: BTreeSet<u64>,
    /// True while the backend punches; a backend that cannot, or a punch that failed,
    /// turns it off for as long as the store is open (nothing is queued then).
    on: bool,
    /// Pages punched so far (pages found in use again when their turn came are not).
    punched: u64,
    /// Pages punched while the store is open and not allocated since, per group: the
    /// allocator reserves their blocks again (`Backend::reserve`) before handing one out.
    holes: HashMap<u64, GroupBits>,
}

impl PunchQueue {
    pub(super) fn new(on: bool) -> Self {
        PunchQueue {
            on,
            ..Default::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.groups.is_empty()
    }

    fn clear(&mut self) {
        self.runs.clear();
        self.groups.clear();
    }

    fn mark_holes(&mut self, first: u64, n: u64) {
        let bits = self.holes.entry(first / GROUP_PAGES).or_default();
        for k in first % GROUP_PAGES..first % GROUP_PAGES + n {
            bits[(k / 64) as usize] |= 1 << (k % 64);
        }
    }

    /// True when `p` was punched (and not handed out since); forgets it.
    fn take_hole(&mut self, p: u64) -> bool {
        let g = p / GROUP_PAGES;
        let Some(bits) = self.holes.get_mut(&g) else {
            return false;
        };
        let k = p % GROUP_PAGES;
        let (w, b) = ((k / 64) as usize, 1u64 << (k % 64));
        let was = bits[w] & b != 0;
        bits[w] &= !b;
        if bits.iter().all(|w| *w == 0) {
            self.holes.remove(&g);
        }
        was
    }

    /// The next item to punch, widest first for a group: (first page, pages).
    fn pop(&mut self) -> Option<(u64, u64)> {
        if let Some(r) = self.runs.pop_front() {
            return Some(r);
        }
        self.groups
            .pop_first()
            .map(|g| (g * GROUP_PAGES, GROUP_PAGES))
    }

    fn push(&mut self, first: u64, n: u64) {
        if let Some(last) = self.runs.back_mut()
            && last.0 + last.1 == first
            && last.0 / GROUP_PAGES == first / GROUP_PAGES
        {
            last.1 += n;
        } else if self.runs.len() < MAX_RUNS {
            self.runs.push_back((first, n));
        } else {
            self.groups.insert(first / GROUP_PAGES);
        }
    }
}

/// Sorts `pages` and cuts them into runs of consecutive pages, none crossing a group.
fn runs_of(mut pages: Vec<PageNo>) -> Vec<(u64, u64)> {
    pages.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in pages {
        match out.last_mut() {
            Some((first, n)) if *first + *n == p.0 && *first / GROUP_PAGES == p.0 / GROUP_PAGES => {
                *n += 1
            }
            _ => out.push((p.0, 1)),
        }
    }
    out
}

impl Store {
    /// Queues the pages a commit just freed; called once the commit is durable.
    pub(super) fn queue_freed(&mut self, pages: Vec<PageNo>) {
        if !self.punch.on || pages.is_empty() {
            return;
        }
        for (first, n) in runs_of(pages) {
            self.punch.push(first, n);
        }
    }

    /// Queues whole groups to scan for free pages (those a replayed journal record changed).
    pub(super) fn queue_groups(&mut self, groups: impl IntoIterator<Item = u64>) {
        if self.punch.on {
            self.punch.groups.extend(groups);
        }
    }

    /// Before page `p` is handed out as a metadata page: if it was punched while the store
    /// is open, its blocks are reserved on the host again, so a full host disk fails this
    /// allocation (ENOSPC, undone with its operation) rather than the commit's write of
    /// the page to its home, which would leave the store read-only. Pages punched before
    /// the store was opened are not known here; see docs/ARCHITECTURE.md.
    pub(super) fn unpunch(&mut self, p: PageNo) -> Result<()> {
        if self.punch.take_hole(p.0)
            && let Err(e) = self.dev.reserve(p.0 * PS, PS)
        {
            self.punch.mark_holes(p.0, 1);
            return Err(match e.errno() {
                libc::ENOSPC => Error::NoSpace,
                _ => e,
            });
        }
        Ok(())
    }

    /// True when freed pages wait to be punched.
    pub fn punch_pending(&self) -> bool {
        self.punch.on && !self.punch.is_empty()
    }

    /// Pages given back to the host since the store was opened.
    pub fn punched_pages(&self) -> u64 {
        self.punch.punched
    }

    /// Punches queued runs, about `budget` pages of them (at least one run), skipping every
    /// page that is no longer free; true when more are left. Safe under the store's owner
    /// lock alone (see docs/ARCHITECTURE.md): only a page whose count is 0 now is punched,
    /// and a page gets a nonzero count only from the allocator, which needs that lock. A
    /// failed punch is logged and turns punching off until the store is reopened: the store
    /// itself is unaffected, only the host keeps the space.
    pub fn punch_freed(&mut self, budget: u64) -> Result<bool> {
        if self.failed || self.in_commit {
            // Memory may be ahead of the disk: a page free here may be in use there.
            self.punch.clear();
            return Ok(false);
        }
        let mut seen = 0;
        let start = Instant::now();
        let punched_before = self.punch.punched;
        while seen < budget.max(1) && (seen == 0 || start.elapsed() < PUNCH_TIME) {
            let Some((first, n)) = self.punch.pop() else {
                break;
            };
            seen += n;
            let free = match self.free_runs_in(first, n) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("not giving pages {first}.. back to the host: {e}");
                    continue;
                }
            };
            for (p, k) in free {
                if start.elapsed() >= PUNCH_TIME && self.punch.punched > punched_before {
                    // Out of time inside a run (single pages cost the most): the rest of
                    // it waits for the next call.
                    self.punch.runs.push_front((p, first + n - p));
                    break;
                }
                if let Err(e) = self.dev.punch(p * PS, k * PS) {
                    log::warn!(
                        "giving freed pages back to the host failed; the store keeps its \
                         file size on the host until it is reopened: {e}"
                    );
                    self.punch.on = false;
                    self.punch.clear();
                    return Ok(false);
                }
                self.punch.punched += k;
                self.punch.mark_holes(p, k);
            }
        }
        Ok(self.punch_pending())
    }

    /// The runs of free pages (count 0 now) among `first..first+n`, which lie in one group.
    fn free_runs_in(&mut self, first: u64, n: u64) -> Result<Vec<(u64, u64)>> {
        let g = first / GROUP_PAGES;
        if g >= self.sb.groups {
            return Ok(Vec::new());
        }
        let lo = first % GROUP_PAGES;
        let hi = (lo + n).min(GROUP_PAGES);
        self.with_meta(layout::group_header(g), Kind::Group, |b| {
            let mut out: Vec<(u64, u64)> = Vec::new();
            for k in lo..hi {
                if get32(b, META_HEADER + k as usize * 4) != 0 {
                    continue;
                }
                let p = g * GROUP_PAGES + k;
                match out.last_mut() {
                    Some((s, m)) if *s + *m == p => *m += 1,
                    _ => out.push((p, 1)),
                }
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{CrashBackend, FileBackend, MemBackend, PAGE_SIZE};

    /// `n` data pages, page `i` filled with byte `i % 250 + 1`, committed.
    fn filled(s: &mut Store, n: usize) -> Vec<PageNo> {
        let pages: Vec<PageNo> = (0..n)
            .map(|i| {
                let p = s.alloc_data().expect("alloc");
                s.write_data(p, 0, &[(i % 250) as u8 + 1; PAGE_SIZE])
                    .expect("write");
                p
            })
            .collect();
        s.commit().expect("commit");
        pages
    }

    fn byte0(s: &Store, p: PageNo) -> u8 {
        let mut b = [0u8; 1];
        s.read_data(p, 0, &mut b).expect("read");
        b[0]
    }

    #[test]
    fn only_pages_free_after_a_commit_are_punched() {
        let mut s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new()))
            .expect("create");
        let pages = filled(&mut s, 40);
        assert!(!s.punch_pending(), "nothing freed yet");
        for p in &pages[..30] {
            assert!(s.decref(*p).expect("decref"));
        }
        // Freed in memory only: the last commit still references them.
        assert!(!s.punch_pending());
        assert!(!s.punch_freed(u64::MAX).expect("punch"));
        assert_eq!(byte0(&s, pages[0]), 1, "a pending page keeps its bytes");
        s.commit().expect("commit");
        assert!(s.punch_pending());
        // Reused before its turn: the allocator hands out page 5 again, which is written.
        s.sb.cursor = pages[5].0;
        let again = s.alloc_data().expect("alloc");
        assert_eq!(again, pages[5]);
        s.write_data(again, 0, &[0xee; PAGE_SIZE]).expect("write");
        assert!(
            !s.punch_freed(u64::MAX).expect("punch"),
            "all done in one call"
        );
        assert_eq!(s.punched_pages(), 29);
        for (i, p) in pages.iter().enumerate() {
            let want = match i {
                5 => 0xee,
                0..30 => 0,
                _ => i as u8 + 1,
            };
            assert_eq!(byte0(&s, *p), want, "page {i}");
        }
    }

    #[test]
    fn a_failed_store_punches_nothing() {
        let mut s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new()))
            .expect("create");
        let pages = filled(&mut s, 4);
        s.decref(pages[0]).expect("decref");
        s.commit().expect("commit");
        s.set_failed();
        assert!(!s.punch_freed(u64::MAX).expect("punch"));
        assert_eq!(byte0(&s, pages[0]), 1);
        assert!(!s.punch_pending());
    }

    #[test]
    fn a_crash_before_the_punch_is_punched_after_replay() {
        let dev = CrashBackend::new(Vec::new());
        let jnl = CrashBackend::new(Vec::new());
        let (dimg, jimg) = (dev.image(), jnl.image());
        let mut s = Store::create(Box::new(dev), Box::new(jnl)).expect("create");
        let pages = filled(&mut s, 20);
        for p in &pages[..10] {
            s.decref(*p).expect("decref");
        }
        s.commit().expect("commit");
        // Crash right after the commit, before anything was punched.
        let mut s2 = Store::open(
            Box::new(CrashBackend::new(dimg.durable())),
            Box::new(CrashBackend::new(jimg.durable())),
        )
        .expect("reopen");
        assert!(
            s2.punch_pending(),
            "the replayed record's groups are queued"
        );
        while s2.punch_freed(64).expect("punch") {}
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(s2.refcount(*p).expect("rc"), u32::from(i >= 10));
            assert_eq!(byte0(&s2, *p), if i < 10 { 0 } else { i as u8 + 1 });
        }
        assert!(s2.punched_pages() >= 10);
        // A clean close leaves no record, so the next open queues nothing.
        s2.close().expect("close");
    }

    #[test]
    fn close_punches_what_the_last_commit_freed() {
        let dev = CrashBackend::new(Vec::new());
        let dimg = dev.image();
        let mut s = Store::create(Box::new(dev), Box::new(MemBackend::new())).expect("create");
        let pages = filled(&mut s, 8);
        s.decref(pages[3]).expect("decref");
        s.close().expect("close");
        let s2 = Store::open(
            Box::new(MemBackend::from_bytes(dimg.durable())),
            Box::new(MemBackend::new()),
        )
        .expect("reopen");
        assert_eq!(byte0(&s2, pages[3]), 0);
        assert_eq!(byte0(&s2, pages[4]), 5);
        assert!(!s2.punch_pending());
    }

    #[test]
    fn only_metadata_allocations_take_a_hole_mark() {
        let mut s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new()))
            .expect("create");
        let pages = filled(&mut s, 4);
        for p in &pages {
            s.decref(*p).expect("decref");
        }
        s.commit().expect("commit");
        while s.punch_freed(8192).expect("punch") {}
        s.sb.cursor = pages[0].0;
        assert_eq!(s.alloc_data().expect("data"), pages[0]);
        assert_eq!(s.alloc_meta(Kind::Blob).expect("meta"), pages[1]);
        assert!(s.punch.take_hole(pages[0].0), "a data page keeps its mark");
        assert!(
            !s.punch.take_hole(pages[1].0),
            "a metadata page took its mark"
        );
        assert!(s.punch.take_hole(pages[2].0));
    }

    fn blocks(f: &std::fs::File) -> u64 {
        use std::os::unix::fs::MetadataExt;
        f.metadata().expect("stat").blocks()
    }

    #[test]
    fn a_real_file_gives_blocks_back_and_a_reused_metadata_page_gets_them_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join(name))
                .expect("open")
        };
        let f = open("pages");
        let probe = f.try_clone().expect("dup");
        let dev = FileBackend::new(f).expect("dev");
        let jnl = FileBackend::new(open("journal")).expect("journal");
        let mut s = Store::create(Box::new(dev), Box::new(jnl)).expect("create");
        let pages = filled(&mut s, 512);
        s.commit().expect("commit");
        probe.sync_all().expect("sync");
        let before = blocks(&probe);
        for p in &pages {
            s.decref(*p).expect("decref");
        }
        s.commit().expect("commit");
        while s.punch_freed(8192).expect("punch") {}
        let after = blocks(&probe);
        assert!(
            before - after >= 512 * 8,
            "2 MiB punched: {before} -> {after} blocks"
        );
        assert_eq!(s.punched_pages(), 512);
        // A metadata page on a punched page has its blocks again before the commit that
        // writes it home.
        s.sb.cursor = pages[0].0;
        let m = s.alloc_meta(Kind::Blob).expect("meta");
        assert_eq!(m, pages[0]);
        assert_eq!(blocks(&probe), after + 8);
        assert!(!s.punch.take_hole(m.0), "no longer counted as a hole");
        s.close().expect("close");
    }

    #[test]
    fn runs_are_sorted_coalesced_and_cut_at_groups() {
        let g = GROUP_PAGES;
        let pages = [5, 3, 4, 9, g - 1, g, g + 2, 2 * g + 7]
            .into_iter()
            .map(PageNo)
            .collect();
        assert_eq!(
            runs_of(pages),
            vec![
                (3, 3),
                (9, 1),
                (g - 1, 1),
                (g, 1),
                (g + 2, 1),
                (2 * g + 7, 1)
            ]
        );
    }

    #[test]
    fn a_full_queue_falls_back_to_groups() {
        let mut q = PunchQueue::new(true);
        for i in 0..MAX_RUNS as u64 {
            q.push(3 * i, 1);
        }
        q.push(3 * MAX_RUNS as u64 + 10 * GROUP_PAGES, 1);
        assert_eq!(q.runs.len(), MAX_RUNS);
        assert_eq!(
            q.groups.iter().copied().collect::<Vec<_>>(),
            vec![(3 * MAX_RUNS as u64) / GROUP_PAGES + 10]
        );
        q.push(3 * MAX_RUNS as u64 - 2, 1);
        assert_eq!(q.runs.len(), MAX_RUNS, "an adjacent run still merges");
    }
}
