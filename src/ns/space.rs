//! Space accounting, as `btrfs filesystem du` reports it: per file or tree, bytes
//! allocated, exclusive (reachable only through this file: every node on the path and the
//! page itself have one reference) and shared (counted once per call, however many files
//! of the set share them). Store-wide statistics on top.

use super::fs::Fs;
use super::{Inode, dir};
use crate::error::Result;
use crate::ids::{Ino, PageNo};
use crate::object::node;
use crate::page::PAGE_SIZE;
use crate::store::layout::{self, GROUP_PAGES, META_HEADER, RC_MAX};
use crate::store::{Kind, Store};
use std::collections::HashSet;

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

/// One bit per store page.
struct Seen(Vec<u64>);

impl Seen {
    fn new(pages: u64) -> Seen {
        Seen(vec![0; pages.div_ceil(64) as usize])
    }

    /// Marks `p`; true if it was not marked before.
    fn insert(&mut self, p: PageNo) -> bool {
        let (w, b) = ((p.0 / 64) as usize, p.0 % 64);
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

    /// Adds up the tree at `ino`, a directory at a time from an explicit stack (never
    /// recursion: a user may nest directories as deep as they like). Each inode counts
    /// once: a file with several links, and a directory that a damaged store lists twice
    /// (which must not make the walk go round forever).
    fn tree_space(&mut self, ino: Ino, sp: &mut Space, seen: &mut Seen) -> Result<()> {
        let mut inos: HashSet<Ino> = HashSet::new();
        let mut todo = vec![ino];
        while let Some(ino) = todo.pop() {
            let i = self.peek(ino)?;
            if (i.nlink > 1 || i.is_dir()) && !inos.insert(ino) {
                continue;
            }
            if i.is_file() {
                self.file_space(&i, sp, seen)?;
            } else if i.is_dir() {
                dir::for_each(&mut self.store, &i, None, &mut |e| {
                    todo.push(e.ino);
                    false
                })?;
            }
        }
        Ok(())
    }

    /// Space of the file or directory tree at `ino`.
    pub fn space(&mut self, ino: Ino) -> Result<Space> {
        let mut sp = Space::default();
        let mut seen = Seen::new(self.store.total_pages());
        self.tree_space(ino, &mut sp, &mut seen)?;
        Ok(sp)
    }

    /// Store-wide statistics. Walks every file reachable from the root and every group
    /// header: seconds on a large store, done on request only.
    pub fn store_stats(&mut self) -> Result<StoreStats> {
        let sp = self.space(Ino::ROOT)?;
        let sb = self.store.superblock().clone();
        let total = self.store.total_pages();
        let mut shared = 0;
        for g in 0..total / GROUP_PAGES {
            shared += self
                .store
                .with_meta(layout::group_header(g), Kind::Group, |b| {
                    (0..GROUP_PAGES as usize)
                        .filter(|k| (2..=RC_MAX).contains(&layout::get32(b, META_HEADER + k * 4)))
                        .count() as u64
                })?;
        }
        let physical = sp.exclusive + sp.shared;
        Ok(StoreStats {
            total_pages: total,
            free_pages: sb.free_pages,
            used_pages: total - sb.free_pages - sb.groups - 1,
            shared_pages: shared,
            logical_bytes: sp.allocated,
            physical_bytes: physical,
            saved_bytes: sp.allocated.saturating_sub(physical),
            cow_copies: sb.cow_copies,
        })
    }
}
