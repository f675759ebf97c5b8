//! Pass 1: walk every map from the roots, counting references, checking node levels,
//! populations and checksums, and collecting every inode. Unreadable pages are reported
//! and pruned (treated as holes), never followed.

use crate::ids::{Ino, PageNo, SnapId};
use crate::ns::inode::Inode;
use crate::ns::itable;
use crate::object::MAX_DEPTH;
use crate::object::{MapRoot, node};
use crate::store::{Kind, Store};
use std::collections::{HashMap, HashSet};

/// Which map a root belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Table,
    Content(Ino),
    Xattr(Ino),
    /// The snapshot list's blob.
    SnapList,
    /// A snapshot's (or a dropped) table, or a map found in it.
    Snap(SnapId),
}

/// What pass 1 found.
#[derive(Default)]
pub struct Walk {
    /// References to each page from the roots and from map nodes.
    pub refs: HashMap<PageNo, u32>,
    pub problems: Vec<String>,
    /// Node entries pointing at unreadable pages: (node, slot), to clear.
    pub bad_entries: Vec<(PageNo, usize)>,
    /// Map roots that are unreadable, to empty.
    pub bad_roots: Vec<Owner>,
    /// Nodes whose population field is wrong: (node, right value).
    pub bad_pop: Vec<(PageNo, u64)>,
    /// Every inode read from the table.
    pub inodes: HashMap<Ino, Inode>,
    bad: HashSet<PageNo>,
    pop: HashMap<PageNo, u64>,
    /// False while walking a table being freed: its emptied entries leave populations
    /// stale, which nothing reads.
    check_pop: bool,
}

impl Walk {
    fn count(&mut self, p: PageNo) -> u32 {
        let n = self.refs.entry(p).or_insert(0);
        *n += 1;
        *n
    }

    fn uncount(&mut self, p: PageNo) {
        if let Some(n) = self.refs.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&p);
            }
        }
    }

    /// Walks one map; returns its population.
    fn map(&mut self, s: &mut Store, owner: Owner, m: &MapRoot, payload: Option<Kind>) -> u64 {
        if m.depth == 0 || m.node.is_zero() {
            return 0;
        }
        if m.depth > MAX_DEPTH {
            self.problems
                .push(format!("{owner:?}: map depth {} is impossible", m.depth));
            self.bad_roots.push(owner);
            return 0;
        }
        match self.node(s, owner, m.node, m.depth - 1, 0, payload) {
            Some(pop) => pop,
            None => {
                self.bad_roots.push(owner);
                0
            }
        }
    }

    fn node(
        &mut self,
        s: &mut Store,
        owner: Owner,
        p: PageNo,
        level: u8,
        base: u64,
        payload: Option<Kind>,
    ) -> Option<u64> {
        if self.bad.contains(&p) {
            return None;
        }
        if self.count(p) > 1 {
            return self.pop.get(&p).copied();
        }
        let read = s.with_meta(p, Kind::MapNode, |b| {
            (node::level(b), node::population(b), node::entries(b))
        });
        let (lvl, stored_pop, es) = match read {
            Ok(v) if v.0 == level => v,
            Ok(v) => {
                self.problems.push(format!(
                    "{owner:?}: node {} at level {level} says level {}",
                    p.0, v.0
                ));
                return self.prune(p);
            }
            Err(e) => {
                self.problems.push(format!("{owner:?}: {e}"));
                return self.prune(p);
            }
        };
        let _ = lvl;
        let span = node::span(level);
        let mut pop = 0;
        for (slot, e) in es.into_iter().enumerate().filter(|(_, e)| *e != 0) {
            let e = PageNo(e);
            let idx = base + slot as u64 * span;
            if level > 0 {
                match self.node(s, owner, e, level - 1, idx, payload) {
                    Some(c) => pop += c,
                    None => self.bad_entries.push((p, slot)),
                }
            } else if self.payload(s, owner, e, idx, payload) {
                pop += 1;
            } else {
                self.bad_entries.push((p, slot));
            }
        }
        if pop != stored_pop && self.check_pop {
            self.problems.push(format!(
                "{owner:?}: node {} counts {stored_pop} pages, has {pop}",
                p.0
            ));
            self.bad_pop.push((p, pop));
        }
        self.pop.insert(p, pop);
        Some(pop)
    }

    fn prune(&mut self, p: PageNo) -> Option<u64> {
        self.uncount(p);
        self.bad.insert(p);
        None
    }

    /// Counts a payload page; checks metadata payloads (and reads inode pages). False when
    /// the page is unreadable.
    fn payload(
        &mut self,
        s: &mut Store,
        owner: Owner,
        p: PageNo,
        idx: u64,
        kind: Option<Kind>,
    ) -> bool {
        if self.bad.contains(&p) {
            return false;
        }
        if p.0 >= s.total_pages() {
            self.problems.push(format!(
                "{owner:?}: page {} is past the end of the store",
                p.0
            ));
            self.bad.insert(p);
            return false;
        }
        let first = self.count(p) == 1;
        let Some(kind) = kind else {
            return true;
        };
        if !first {
            return true;
        }
        let layout = itable::Layout::of(s);
        let read = s.with_meta(p, kind, |b| {
            if kind != Kind::Inodes {
                return Vec::new();
            }
            itable::records(layout, b)
        });
        match read {
            Ok(found) => {
                for (k, i) in found {
                    if let Err(why) = i.check_inline(layout.cap) {
                        self.problems
                            .push(format!("inode page {}, record {k}: {why}", p.0));
                    }
                    self.inodes.insert(Ino(idx * layout.per_page + k as u64), i);
                }
                true
            }
            Err(e) => {
                self.problems.push(format!("{owner:?}: {e}"));
                self.uncount(p);
                self.bad.insert(p);
                false
            }
        }
    }
}

/// Pass 1 over the whole store: the live table, then every snapshot's table (inode pages
/// it shares with one already walked are counted, not read again).
pub fn walk(s: &mut Store, progress: &mut dyn FnMut(&str, u64, u64)) -> Walk {
    let mut w = Walk {
        check_pop: true,
        ..Default::default()
    };
    let t = itable::table_root(s);
    w.map(s, Owner::Table, &t, Some(Kind::Inodes));
    w.maps(s, |i| (Owner::Content(i), Owner::Xattr(i)), progress);
    let list = crate::ns::snap_list_root(s);
    w.map(s, Owner::SnapList, &list, Some(Kind::Blob));
    let snaps = match crate::ns::snap_load(s) {
        Ok(v) => v,
        Err(e) => {
            w.problems.push(format!("snapshot list: {e}"));
            Vec::new()
        }
    };
    let live = std::mem::take(&mut w.inodes);
    for r in snaps {
        let o = Owner::Snap(r.id);
        w.check_pop = !r.dropping;
        w.map(s, o, &r.table.map, Some(Kind::Inodes));
        w.maps(s, |_| (o, o), progress);
        w.inodes.clear();
    }
    w.check_pop = true;
    w.inodes = live;
    w
}

impl Walk {
    /// Walks the maps of every inode collected so far.
    fn maps(
        &mut self,
        s: &mut Store,
        owners: impl Fn(Ino) -> (Owner, Owner),
        progress: &mut dyn FnMut(&str, u64, u64),
    ) {
        let w = self;
        let mut inos: Vec<Ino> = w.inodes.keys().copied().collect();
        inos.sort();
        let total = inos.len() as u64;
        for (n, ino) in inos.into_iter().enumerate() {
            if n % 1024 == 0 {
                progress("maps", n as u64, total);
            }
            let Some(i) = w.inodes.get(&ino).cloned() else {
                continue;
            };
            let kind = match i.file_type() {
                libc::S_IFDIR => Some(Kind::DirBlock),
                libc::S_IFLNK => Some(Kind::Blob),
                _ => None,
            };
            let (content, xattr) = owners(ino);
            w.map(s, content, &i.map, kind);
            w.map(s, xattr, &i.xattr, Some(Kind::Blob));
        }
        progress("maps", total, total);
    }
}
