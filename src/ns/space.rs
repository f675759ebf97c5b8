//! Space accounting, as `btrfs filesystem du` reports it: per file or tree, bytes
//! allocated, exclusive (reachable only through this file: every node on the path and the
//! page itself have one reference) and shared (counted once per call, however many files
//! of the set share them). Store-wide statistics on top.

use super::fs::Fs;
use super::{Inode, dir};
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::object::node;
use crate::page::PAGE_SIZE;
use crate::store::layout::{self, GROUP_PAGES, META_HEADER, RC_MAX};
use crate::store::{Kind, Store};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const PS: u64 = PAGE_SIZE as u64;

/// Space used by a file or a tree, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Regular files counted.
    pub files: u64,
    /// Sum of file sizes.
    pub logical: u64,
    /// Sum of the files' data pages (a page shared by two files counts twice).
    pub allocated: u64,
    /// Data pages only these files reach.
    pub exclusive: u64,
    /// Data pages these files share with others or among themselves, each counted once.
    pub shared: u64,
}

/// Store-wide figures for `cowfs stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub total_pages: u64,
    pub free_pages: u64,
    pub used_pages: u64,
    /// Pages with more than one reference (data or map nodes).
    pub shared_pages: u64,
    /// Bytes of data the files show (sum of their data pages).
    pub logical_bytes: u64,
    /// Bytes of distinct data pages behind them.
    pub physical_bytes: u64,
    /// logical - physical: what sharing saves.
    pub saved_bytes: u64,
    /// Copy-on-write page copies since the store was made.
    pub cow_copies: u64,
}

/// One bit per store page (grows with the store: a walk in steps may outlive its size).
struct Seen(Vec<u64>);

impl Seen {
    fn new(pages: u64) -> Seen {
        Seen(vec![0; pages.div_ceil(64) as usize])
    }

    /// Marks `p`; true if it was not marked before.
    fn insert(&mut self, p: PageNo) -> bool {
        let (w, b) = ((p.0 / 64) as usize, p.0 % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        match self.0.get_mut(w) {
            Some(word) if *word & (1 << b) == 0 => {
                *word |= 1 << b;
                true
            }
            _ => false,
        }
    }
}

fn walk(
    s: &mut Store,
    p: PageNo,
    level: u8,
    excl: bool,
    sp: &mut Space,
    seen: &mut Seen,
) -> Result<()> {
    let ex = excl && s.refcount(p)? == 1;
    let es = s.with_meta(p, Kind::MapNode, node::entries)?;
    for e in es.into_iter().filter(|e| *e != 0).map(PageNo) {
        if level > 0 {
            walk(s, e, level - 1, ex, sp, seen)?;
        } else if ex && s.refcount(e)? == 1 {
            sp.exclusive += PS;
        } else if seen.insert(e) {
            sp.shared += PS;
        }
    }
    Ok(())
}

impl Fs {
    fn file_space(&mut self, i: &Inode, sp: &mut Space, seen: &mut Seen) -> Result<()> {
        sp.files += 1;
        sp.logical += i.size;
        sp.allocated += i.map.population(&mut self.store)? * PS;
        if let Some(d) = &i.inline {
            // Inline bytes live in the file's own record: always exclusive (a clone or a
            // snapshot copies them with the record).
            sp.allocated += d.len() as u64;
            sp.exclusive += d.len() as u64;
        }
        if i.map.depth > 0 && !i.map.node.is_zero() {
            walk(&mut self.store, i.map.node, i.map.depth - 1, true, sp, seen)?;
        }
        Ok(())
    }

    /// Starts adding up the tree at local inode `ino` (see `space_step`).
    pub fn space_walk(&mut self, ino: Ino) -> SpaceWalk {
        SpaceWalk {
            todo: vec![ino],
            started: false,
            inos: HashSet::new(),
            seen: Seen::new(self.store.total_pages()),
            sp: Space::default(),
        }
    }

    /// Goes on adding up `w` for about `budget`, a directory or file at a time from an
    /// explicit stack (never recursion: a user may nest directories as deep as they
    /// like); true when the walk is done (`SpaceWalk::space`). Each inode counts once: a
    /// file with several links, and a directory that a damaged store lists twice (which
    /// must not make the walk go round forever). The adapter runs each step as its own
    /// operation, so that nothing waits long behind a big tree: what changes between two
    /// steps is counted as it is when the walk reaches it, as `du` does on a live tree;
    /// an inode removed meanwhile is skipped.
    pub fn space_step(&mut self, w: &mut SpaceWalk, budget: Duration) -> Result<bool> {
        let start = Instant::now();
        while let Some(ino) = w.todo.pop() {
            let i = match self.peek(ino) {
                Ok(i) => i,
                // Removed since its directory was read (the walk's top must exist).
                Err(Error::NotFound) if w.started => continue,
                Err(e) => return Err(e),
            };
            w.started = true;
            if (i.nlink > 1 || i.is_dir()) && !w.inos.insert(ino) {
                continue;
            }
            if i.is_file() {
                self.file_space(&i, &mut w.sp, &mut w.seen)?;
            } else if i.is_dir() {
                dir::for_each(&mut self.store, &i, None, &mut |e| {
                    w.todo.push(e.ino);
                    false
                })?;
            }
            if start.elapsed() >= budget {
                return Ok(w.todo.is_empty());
            }
        }
        Ok(true)
    }

    /// Space of the file or directory tree at `ino`, in one go.
    pub fn space(&mut self, ino: Ino) -> Result<Space> {
        let mut w = self.space_walk(ino);
        while !self.space_step(&mut w, Duration::MAX)? {}
        Ok(w.sp)
    }

    /// Starts the store-wide statistics (see `stats_step`).
    pub fn stats_walk(&mut self) -> StatsWalk {
        StatsWalk {
            space: self.space_walk(Ino::ROOT),
            group: 0,
            shared: 0,
        }
    }

    /// Goes on with `w` for about `budget`: every file reachable from the root, then
    /// every group header. True when done (`StatsWalk::stats`). Seconds on a large store
    /// in all, so the adapter runs it in steps.
    pub fn stats_step(&mut self, w: &mut StatsWalk, budget: Duration) -> Result<bool> {
        let start = Instant::now();
        if !w.space.todo.is_empty() && !self.space_step(&mut w.space, budget)? {
            return Ok(false);
        }
        let groups = self.store.total_pages() / GROUP_PAGES;
        while w.group < groups {
            w.shared += self
                .store
                .with_meta(layout::group_header(w.group), Kind::Group, |b| {
                    (0..GROUP_PAGES as usize)
                        .filter(|k| (2..=RC_MAX).contains(&layout::get32(b, META_HEADER + k * 4)))
                        .count() as u64
                })?;
            w.group += 1;
            if start.elapsed() >= budget {
                return Ok(w.group >= groups);
            }
        }
        Ok(true)
    }

    /// The figures of a finished `StatsWalk`, with the allocator's counts as they are now.
    pub fn stats_of(&self, w: &StatsWalk) -> StoreStats {
        let sp = w.space.sp;
        let sb = self.store.superblock();
        let total = self.store.total_pages();
        let physical = sp.exclusive + sp.shared;
        StoreStats {
            total_pages: total,
            free_pages: sb.free_pages,
            used_pages: total - sb.free_pages - sb.groups - 1,
            shared_pages: w.shared,
            logical_bytes: sp.allocated,
            physical_bytes: physical,
            saved_bytes: sp.allocated.saturating_sub(physical),
            cow_copies: sb.cow_copies,
        }
    }

    /// Store-wide statistics, in one go.
    pub fn store_stats(&mut self) -> Result<StoreStats> {
        let mut w = self.stats_walk();
        while !self.stats_step(&mut w, Duration::MAX)? {}
        Ok(self.stats_of(&w))
    }
}

/// A `Fs::space` walk between two steps.
pub struct SpaceWalk {
    todo: Vec<Ino>,
    started: bool,
    inos: HashSet<Ino>,
    seen: Seen,
    sp: Space,
}

impl SpaceWalk {
    /// What the walk has added up.
    pub fn space(&self) -> Space {
        self.sp
    }
}

/// A `Fs::store_stats` walk between two steps.
pub struct StatsWalk {
    space: SpaceWalk,
    group: u64,
    shared: u64,
}
