//! Operations on one copy-on-write map. A map is a root page and a depth; depth `d` means
//! the root node is at level `d - 1` and the map covers `FANOUT^d` indices. A zero entry is
//! a hole (at any level: a whole subtree of holes). Every node and payload page carries one
//! reference per parent entry pointing at it, so sharing a subtree is one `incref`.

use super::node::{self, FANOUT, capacity, entries, set_entry, slot, span};
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::store::{Kind, Store};

/// Largest depth a map may grow to (510^5 pages: far past the largest file size).
pub const MAX_DEPTH: u8 = 5;

/// What a map's leaf entries point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// File data, written in place through the mmap.
    Data,
    /// Metadata pages of this kind, changed through commits.
    Meta(Kind),
}

/// The root of a map, as stored in an inode or the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapRoot {
    /// Root node, or the zero page for an empty map.
    pub node: PageNo,
    /// Levels of the tree (0 for an empty map).
    pub depth: u8,
}

/// Reads a node of a map at `level`, checked (`node::check`) before `f` sees it.
fn read_node<R>(s: &mut Store, p: PageNo, level: u8, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
    s.with_meta(p, Kind::MapNode, |b| {
        node::check(p, b, level).map(|()| f(b))
    })?
}

fn read_entry(s: &mut Store, p: PageNo, level: u8, slot: usize) -> Result<PageNo> {
    read_node(s, p, level, |b| PageNo(node::entry(b, slot)))
}

fn node_entries(s: &mut Store, p: PageNo, level: u8) -> Result<Vec<u64>> {
    read_node(s, p, level, entries)
}

fn node_population(s: &mut Store, p: PageNo, level: u8) -> Result<u64> {
    if p.is_zero() {
        return Ok(0);
    }
    read_node(s, p, level, node::population)
}

/// The non-zero entries of a node at `level`.
fn children(s: &mut Store, p: PageNo, level: u8) -> Result<Vec<PageNo>> {
    Ok(node_entries(s, p, level)?
        .into_iter()
        .filter(|&e| e != 0)
        .map(PageNo)
        .collect())
}

fn write_entry(s: &mut Store, p: PageNo, slot: usize, v: PageNo) -> Result<()> {
    set_entry(s.meta_mut(p, Kind::MapNode)?, slot, v.0);
    Ok(())
}

fn add_population(s: &mut Store, p: PageNo, delta: i64) -> Result<()> {
    let b = s.meta_mut(p, Kind::MapNode)?;
    let (lvl, pop) = (node::level(b), node::population(b));
    node::set_word(b, lvl, pop.saturating_add_signed(delta));
    Ok(())
}

fn new_node(s: &mut Store, level: u8) -> Result<PageNo> {
    let p = s.alloc_meta(Kind::MapNode)?;
    node::set_word(s.meta_mut(p, Kind::MapNode)?, level, 0);
    Ok(p)
}

/// Returns a node at `level` that this map alone references and may change in place:
/// `p` itself if its count is 1 and it was not shared at the last commit
/// (`Store::shared_at_last_commit`); otherwise a copy, which takes a reference on each
/// child; a new node if `p` is a hole.
fn exclusive(s: &mut Store, p: PageNo, level: u8) -> Result<PageNo> {
    if p.is_zero() {
        return new_node(s, level);
    }
    let alone = s.refcount(p)? == 1;
    if alone && !s.shared_at_last_commit(p) {
        return Ok(p);
    }
    let q = s.copy_meta(p, Kind::MapNode)?;
    let entries = node_entries(s, q, level)?;
    for e in &entries {
        s.incref(PageNo(*e))?;
    }
    if alone {
        // `p` was shared at the last commit and dies now: its references go, and a child
        // it held alone drops from 2 back to 1, which marks the child shared at the last
        // commit too. So the pages under it are copied, not changed in place, until the
        // next commit: a crash before it brings back the other holder, still reading the
        // old bytes through the committed `p`.
        for e in &entries {
            s.decref(PageNo(*e))?;
        }
    }
    s.decref(p)?;
    Ok(q)
}

/// Drops one reference on a node at `level`, freeing its subtree if that was the last.
fn drop_node(s: &mut Store, p: PageNo, level: u8) -> Result<()> {
    if p.is_zero() {
        return Ok(());
    }
    if s.refcount(p)? == 1 {
        for e in node_entries(s, p, level)?.into_iter().filter(|e| *e != 0) {
            if level == 0 {
                s.decref(PageNo(e))?;
            } else {
                drop_node(s, PageNo(e), level - 1)?;
            }
        }
    }
    s.decref(p)?;
    Ok(())
}

impl MapRoot {
    /// The empty map.
    pub const EMPTY: MapRoot = MapRoot {
        node: PageNo::ZERO,
        depth: 0,
    };

    /// Indices this map can hold without growing.
    pub fn capacity(&self) -> u64 {
        if self.depth == 0 {
            0
        } else {
            capacity(self.depth)
        }
    }

    /// The page at `idx` (the zero page for a hole).
    pub fn get(&self, s: &mut Store, idx: u64) -> Result<PageNo> {
        if idx >= self.capacity() {
            return Ok(PageNo::ZERO);
        }
        let mut p = self.node;
        let mut level = self.depth - 1;
        loop {
            if p.is_zero() {
                return Ok(p);
            }
            p = read_entry(s, p, level, slot(idx, level))?;
            if level == 0 {
                return Ok(p);
            }
            level -= 1;
        }
    }

    /// Non-zero payload pages in the map.
    pub fn population(&self, s: &mut Store) -> Result<u64> {
        match self.depth {
            0 => Ok(0),
            d => node_population(s, self.node, d - 1),
        }
    }

    /// A depth read from disk past `MAX_DEPTH`, or a root node with depth 0, is corrupt:
    /// checked before a map grows (reads meet it as a node of the wrong level).
    fn check_depth(&self) -> Result<()> {
        if self.depth > MAX_DEPTH || (self.depth == 0 && !self.node.is_zero()) {
            return Err(Error::corrupt(
                self.node.0,
                format!("map root of depth {}", self.depth),
            ));
        }
        Ok(())
    }

    fn grow_to(&mut self, s: &mut Store, idx: u64) -> Result<()> {
        self.check_depth()?;
        if idx >= capacity(MAX_DEPTH) {
            return Err(Error::TooBig);
        }
        while self.depth == 0 || idx >= capacity(self.depth) {
            if !self.node.is_zero() {
                let pop = node_population(s, self.node, self.depth - 1)?;
                let n = s.alloc_meta(Kind::MapNode)?;
                let b = s.meta_mut(n, Kind::MapNode)?;
                node::set_word(b, self.depth, pop);
                set_entry(b, 0, self.node.0);
                self.node = n;
            }
            self.depth += 1;
        }
        Ok(())
    }

    /// Replaces the entry at `idx` by `f(old)`. `f` receives the map's reference on `old`
    /// and returns a page whose reference the map then holds. Returns the new entry.
    pub fn modify(
        &mut self,
        s: &mut Store,
        idx: u64,
        f: impl FnOnce(&mut Store, PageNo) -> Result<PageNo>,
    ) -> Result<PageNo> {
        self.grow_to(s, idx)?;
        let mut p = exclusive(s, self.node, self.depth - 1)?;
        self.node = p;
        let mut path = Vec::with_capacity(self.depth as usize);
        for level in (1..self.depth).rev() {
            path.push(p);
            let sl = slot(idx, level);
            let child = read_entry(s, p, level, sl)?;
            let c = exclusive(s, child, level - 1)?;
            if c != child {
                write_entry(s, p, sl, c)?;
            }
            p = c;
        }
        path.push(p);
        let sl = slot(idx, 0);
        let old = read_entry(s, p, 0, sl)?;
        let new = f(s, old)?;
        if new != old {
            write_entry(s, p, sl, new)?;
        }
        let delta = i64::from(!new.is_zero()) - i64::from(!old.is_zero());
        if delta != 0 {
            for n in path {
                add_population(s, n, delta)?;
            }
        }
        Ok(new)
    }

    /// Points `idx` at `new` (whose reference the caller hands over), dropping the old entry.
    pub fn set(&mut self, s: &mut Store, idx: u64, new: PageNo) -> Result<()> {
        self.modify(s, idx, |s, old| {
            s.decref(old)?;
            Ok(new)
        })?;
        Ok(())
    }

    /// Writes `data` at byte `off` of data page `idx`: in place if the page is exclusive,
    /// into a copy if it is shared, into a new page over a hole.
    pub fn write_data(&mut self, s: &mut Store, idx: u64, off: usize, data: &[u8]) -> Result<()> {
        self.modify(s, idx, |s, old| s.write_cow(old, off, data))?;
        Ok(())
    }

    /// Readies entry `idx` for a whole-page overwrite: makes the path to it exclusive and
    /// returns its page when that may be written in place. `None`: the caller writes a
    /// fresh page and maps it with `set` afterwards.
    pub fn overwrite_in_place(&mut self, s: &mut Store, idx: u64) -> Result<Option<PageNo>> {
        let mut target = None;
        self.modify(s, idx, |s, old| {
            if s.overwrite_in_place(old)? {
                target = Some(old);
            }
            Ok(old)
        })?;
        Ok(target)
    }

    /// An exclusive metadata payload page at `idx`, made or copied as needed.
    pub fn meta_for_write(&mut self, s: &mut Store, idx: u64, kind: Kind) -> Result<PageNo> {
        self.modify(s, idx, |s, old| {
            if old.is_zero() {
                return s.alloc_meta(kind);
            }
            if s.refcount(old)? == 1 {
                return Ok(old);
            }
            let q = s.copy_meta(old, kind)?;
            s.decref(old)?;
            Ok(q)
        })
    }

    /// A second map sharing everything with this one: one reference on the root.
    pub fn share(&self, s: &mut Store) -> Result<MapRoot> {
        s.incref(self.node)?;
        Ok(*self)
    }

    /// The map's leaves (the nodes whose entries are data pages), read level by level from
    /// the root; `None` when there are more than `limit`.
    pub fn leaves(&self, s: &mut Store, limit: usize) -> Result<Option<Vec<PageNo>>> {
        if self.depth == 0 || self.node.is_zero() {
            return Ok(Some(Vec::new()));
        }
        let mut level = self.depth - 1;
        let mut nodes = vec![self.node];
        while level > 0 {
            let mut next = Vec::new();
            for &n in &nodes {
                next.extend(children(s, n, level)?);
                if next.len() > limit {
                    return Ok(None);
                }
            }
            nodes = next;
            level -= 1;
        }
        Ok(Some(nodes))
    }

    /// The data pages a leaf (a level-0 node) holds, holes left out.
    pub fn leaf_pages(s: &mut Store, leaf: PageNo) -> Result<Vec<PageNo>> {
        children(s, leaf, 0)
    }

    /// Drops the whole map.
    pub fn free(&mut self, s: &mut Store) -> Result<()> {
        if self.depth > 0 {
            drop_node(s, self.node, self.depth - 1)?;
        }
        *self = MapRoot::EMPTY;
        Ok(())
    }

    /// Turns every entry in `a..b` into a hole.
    pub fn clear_range(&mut self, s: &mut Store, a: u64, b: u64) -> Result<()> {
        let b = b.min(self.capacity());
        if a >= b {
            return Ok(());
        }
        if a == 0 && b == self.capacity() {
            return self.free(s);
        }
        self.node = clear_node(s, self.node, self.depth - 1, 0, a, b)?.0;
        Ok(())
    }

    /// Shares entries `src..src+n` of `from` (or of this map, if `None`) into
    /// `dst..dst+n` of this map. The ranges must not overlap when the map is the same.
    pub fn clone_range(
        &mut self,
        s: &mut Store,
        from: Option<&MapRoot>,
        src: u64,
        dst: u64,
        n: u64,
    ) -> Result<()> {
        if let Some(m) = from
            && src == dst
        {
            return self.graft(s, m, src, src.saturating_add(n));
        }
        for i in 0..n {
            let e = match from {
                Some(m) => m.get(s, src + i)?,
                None => self.get(s, src + i)?,
            };
            let cur = self.get(s, dst + i)?;
            if e == cur {
                continue;
            }
            s.incref(e)?;
            self.set(s, dst + i, e)?;
        }
        Ok(())
    }

    /// Makes indices `a..b` of this map share `from`'s entries at the same indices, sharing
    /// whole subtrees (one reference each) wherever the range covers them: cost grows with
    /// the tree's depth and the range's ragged edges, not with the pages shared.
    pub fn graft(&mut self, s: &mut Store, from: &MapRoot, a: u64, b: u64) -> Result<()> {
        let b = b.min(capacity(MAX_DEPTH));
        if a >= b {
            return Ok(());
        }
        if from.depth == 0 {
            return self.clear_range(s, a, b);
        }
        if a == 0 && b >= from.capacity() && self.depth == 0 {
            *self = from.share(s)?;
            return Ok(());
        }
        let top = b.max(from.capacity()) - 1;
        self.grow_to(s, top)?;
        let root = exclusive(s, self.node, self.depth - 1)?;
        self.node = root;
        let src = if self.depth == from.depth {
            Src::Node(from.node)
        } else {
            Src::Above(*from)
        };
        graft_node(s, root, src, self.depth - 1, 0, a, b)?;
        Ok(())
    }

    /// The first index at or after `from` that holds a page, if any.
    pub fn next_data(&self, s: &mut Store, from: u64) -> Result<Option<u64>> {
        if from >= self.capacity() || self.node.is_zero() {
            return Ok(None);
        }
        next_nonzero(s, self.node, self.depth - 1, 0, from)
    }

    /// The first index at or after `from` that is a hole (indices past the map are holes).
    pub fn next_hole(&self, s: &mut Store, from: u64) -> Result<u64> {
        if from >= self.capacity() || self.node.is_zero() {
            return Ok(from);
        }
        Ok(next_zero(s, self.node, self.depth - 1, 0, from)?.unwrap_or(self.capacity()))
    }

    /// Every page reachable from this map, with the level it sits at (payloads at -1),
    /// visiting each shared subtree once per reference. For fsck and tests.
    pub fn walk(&self, s: &mut Store, f: &mut dyn FnMut(PageNo, i32)) -> Result<()> {
        if self.depth > 0 && !self.node.is_zero() {
            walk_node(s, self.node, self.depth - 1, f)?;
        }
        Ok(())
    }
}

fn walk_node(s: &mut Store, p: PageNo, level: u8, f: &mut dyn FnMut(PageNo, i32)) -> Result<()> {
    f(p, level as i32);
    for e in node_entries(s, p, level)?.into_iter().filter(|e| *e != 0) {
        if level == 0 {
            f(PageNo(e), -1);
        } else {
            walk_node(s, PageNo(e), level - 1, f)?;
        }
    }
    Ok(())
}

/// The source side of a graft at some level: a real node (or a hole), or a level above the
/// source tree's root, where only slot 0 leads to it.
#[derive(Clone, Copy)]
enum Src {
    Node(PageNo),
    Above(MapRoot),
}

impl Src {
    fn child(self, s: &mut Store, level: u8, slot: usize) -> Result<Src> {
        match self {
            Src::Node(p) if p.is_zero() => Ok(Src::Node(p)),
            Src::Node(p) => Ok(Src::Node(read_entry(s, p, level, slot)?)),
            Src::Above(_) if slot != 0 => Ok(Src::Node(PageNo::ZERO)),
            Src::Above(m) if level == m.depth => Ok(Src::Node(m.node)),
            above => Ok(above),
        }
    }
}

/// Grafts `src` into exclusive node `q` at `level` covering indices from `base`, for the
/// part inside `a..b`. Returns the change in `q`'s population.
fn graft_node(
    s: &mut Store,
    q: PageNo,
    src: Src,
    level: u8,
    base: u64,
    a: u64,
    b: u64,
) -> Result<i64> {
    let sp = span(level);
    let mut delta = 0i64;
    for sl in slots_in(level, base, a, b) {
        let cs = base + sl as u64 * sp;
        let sc = src.child(s, level, sl)?;
        let old = read_entry(s, q, level, sl)?;
        let whole = a <= cs && cs + sp <= b;
        match sc {
            Src::Node(new) if whole || level == 0 => {
                if new == old {
                    continue;
                }
                s.incref(new)?;
                let (pn, po) = if level == 0 {
                    (i64::from(!new.is_zero()), i64::from(!old.is_zero()))
                } else {
                    (
                        node_population(s, new, level - 1)? as i64,
                        node_population(s, old, level - 1)? as i64,
                    )
                };
                if level == 0 {
                    s.decref(old)?;
                } else {
                    drop_node(s, old, level - 1)?;
                }
                write_entry(s, q, sl, new)?;
                delta += pn - po;
            }
            _ => {
                let c = exclusive(s, old, level - 1)?;
                if c != old {
                    write_entry(s, q, sl, c)?;
                }
                delta += graft_node(s, c, sc, level - 1, cs, a, b)?;
            }
        }
    }
    add_population(s, q, delta)?;
    Ok(delta)
}

/// The slots of a node at `level` starting at `base` that overlap `a..b`.
fn slots_in(level: u8, base: u64, a: u64, b: u64) -> std::ops::Range<usize> {
    let sp = span(level);
    let lo = (a.max(base) - base) / sp;
    let end = b.min(base.saturating_add(sp.saturating_mul(FANOUT)));
    let hi = (end - base).div_ceil(sp).min(FANOUT);
    lo as usize..hi as usize
}

/// Clears `a..b` under node `p`; returns the (possibly copied) node and the payload
/// entries removed.
fn clear_node(
    s: &mut Store,
    p: PageNo,
    level: u8,
    base: u64,
    a: u64,
    b: u64,
) -> Result<(PageNo, u64)> {
    if p.is_zero() {
        return Ok((p, 0));
    }
    let es = node_entries(s, p, level)?;
    let range = slots_in(level, base, a, b);
    if es[range.clone()].iter().all(|e| *e == 0) {
        return Ok((p, 0));
    }
    let q = exclusive(s, p, level)?;
    let sp = span(level);
    let mut removed = 0;
    for sl in range {
        let e = PageNo(es[sl]);
        if e.is_zero() {
            continue;
        }
        let cs = base + sl as u64 * sp;
        if a <= cs && cs + sp <= b {
            if level == 0 {
                removed += 1;
                s.decref(e)?;
            } else {
                removed += node_population(s, e, level - 1)?;
                drop_node(s, e, level - 1)?;
            }
            write_entry(s, q, sl, PageNo::ZERO)?;
        } else {
            let (ne, r) = clear_node(s, e, level - 1, cs, a, b)?;
            removed += r;
            if ne != e {
                write_entry(s, q, sl, ne)?;
            }
        }
    }
    add_population(s, q, -(removed as i64))?;
    Ok((q, removed))
}

fn next_nonzero(s: &mut Store, p: PageNo, level: u8, base: u64, from: u64) -> Result<Option<u64>> {
    let es = node_entries(s, p, level)?;
    let sp = span(level);
    let first = (from.saturating_sub(base) / sp) as usize;
    for (sl, e) in es.iter().enumerate().skip(first) {
        if *e == 0 {
            continue;
        }
        let cs = base + sl as u64 * sp;
        if level == 0 {
            return Ok(Some(cs));
        }
        if let Some(x) = next_nonzero(s, PageNo(*e), level - 1, cs, from.max(cs))? {
            return Ok(Some(x));
        }
    }
    Ok(None)
}

fn next_zero(s: &mut Store, p: PageNo, level: u8, base: u64, from: u64) -> Result<Option<u64>> {
    let es = node_entries(s, p, level)?;
    let sp = span(level);
    let first = (from.saturating_sub(base) / sp) as usize;
    for (sl, e) in es.iter().enumerate().skip(first) {
        let cs = base + sl as u64 * sp;
        if *e == 0 {
            return Ok(Some(cs.max(from)));
        }
        if level == 0 || node_population(s, PageNo(*e), level - 1)? == sp {
            continue;
        }
        if let Some(x) = next_zero(s, PageNo(*e), level - 1, cs, from.max(cs))? {
            return Ok(Some(x));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
