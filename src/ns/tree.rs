//! A whole inode table seen as one tree of pages: table nodes, inode pages, then each
//! record's maps down to their payload pages. Used to free a dropped table a bounded step
//! at a time (snapshot delete, the old live tree after a rollback) and to measure what a
//! snapshot holds alone.

use super::inode::Inode;
use super::itable::{Layout, records};
use crate::error::Result;
use crate::ids::PageNo;
use crate::object::{MapRoot, node};
use crate::store::{Kind, Store};
use std::collections::HashMap;

/// A page that has children, and how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A map node at `level`; `inodes` when its payloads are inode pages.
    Node {
        page: PageNo,
        level: u8,
        inodes: bool,
    },
    /// An inode page: its children are its records' map roots.
    Inodes(PageNo),
}

/// A child of an item: a page, with what it is (`None`: a payload without children).
#[derive(Debug, Clone, Copy)]
pub struct Child {
    /// Where the entry sits: a node slot, or record `k`'s content (2k) or xattr (2k+1).
    pub slot: usize,
    pub page: PageNo,
    pub item: Option<Item>,
}

impl Item {
    /// The page of the item.
    pub fn page(self) -> PageNo {
        match self {
            Item::Node { page, .. } | Item::Inodes(page) => page,
        }
    }

    /// The root item of a map (`None` when it is empty).
    pub fn of_map(m: &MapRoot, inodes: bool) -> Option<Item> {
        if m.depth == 0 || m.node.is_zero() {
            return None;
        }
        Some(Item::Node {
            page: m.node,
            level: m.depth - 1,
            inodes,
        })
    }

    /// The non-empty children of the item.
    pub fn children(self, s: &mut Store) -> Result<Vec<Child>> {
        match self {
            Item::Node {
                page,
                level,
                inodes,
            } => {
                let es = s.with_meta(page, Kind::MapNode, node::entries)?;
                Ok(es
                    .into_iter()
                    .enumerate()
                    .filter(|(_, e)| *e != 0)
                    .map(|(slot, e)| {
                        let page = PageNo(e);
                        let item = if level > 0 {
                            Some(Item::Node {
                                page,
                                level: level - 1,
                                inodes,
                            })
                        } else if inodes {
                            Some(Item::Inodes(page))
                        } else {
                            None
                        };
                        Child { slot, page, item }
                    })
                    .collect())
            }
            Item::Inodes(page) => {
                let l = Layout::of(s);
                let recs = s.with_meta(page, Kind::Inodes, |b| records(l, b))?;
                let mut out = Vec::new();
                for (k, i) in recs {
                    for (n, m) in [(2 * k, i.map), (2 * k + 1, i.xattr)] {
                        if let Some(item) = Item::of_map(&m, false) {
                            out.push(Child {
                                slot: n,
                                page: m.node,
                                item: Some(item),
                            });
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Empties the entry of a child (the caller dropped the reference it held). The item
    /// must be exclusive: it is changed in place.
    fn clear(self, s: &mut Store, slot: usize) -> Result<()> {
        match self {
            Item::Node { page, .. } => {
                node::set_entry(s.meta_mut(page, Kind::MapNode)?, slot, 0);
            }
            Item::Inodes(page) => {
                let l = Layout::of(s);
                let b = s.meta_mut(page, Kind::Inodes)?;
                let off = l.off(slot / 2);
                if let Some(mut i) = Inode::decode(&b[off..off + l.rec]) {
                    if slot.is_multiple_of(2) {
                        i.map = MapRoot::EMPTY;
                    } else {
                        i.xattr = MapRoot::EMPTY;
                    }
                    i.encode(&mut b[off..off + l.rec]);
                }
            }
        }
        Ok(())
    }
}

/// Frees an exclusive item and everything only it holds, dropping at most about `budget`
/// references. Returns true when the item itself was freed (the caller then clears the
/// entry that pointed at it); false when the budget ran out first. Every step leaves a
/// consistent tree (each cleared entry matches a dropped reference), so the work can stop
/// at any commit and resume after a crash.
pub fn destroy(s: &mut Store, item: Item, budget: &mut u64) -> Result<bool> {
    for c in item.children(s)? {
        if *budget == 0 {
            return Ok(false);
        }
        let freed = match c.item {
            Some(sub) if s.refcount(c.page)? == 1 => destroy(s, sub, budget)?,
            _ => {
                s.decref(c.page)?;
                *budget -= 1;
                true
            }
        };
        if !freed {
            return Ok(false);
        }
        item.clear(s, c.slot)?;
    }
    s.decref(item.page())?;
    *budget = budget.saturating_sub(1);
    Ok(true)
}

/// Pages reachable from `root` that no other root reaches: a page is counted once all of
/// its references come from pages already counted (exact, and it only visits what is
/// exclusive plus one level below).
pub fn exclusive_pages(s: &mut Store, root: Item) -> Result<u64> {
    let mut seen: HashMap<PageNo, u32> = HashMap::new();
    let mut stack = Vec::new();
    let mut count = 0;
    if s.refcount(root.page())? != 1 {
        return Ok(0);
    }
    stack.push(root);
    count += 1;
    while let Some(it) = stack.pop() {
        for c in it.children(s)? {
            let rc = s.refcount(c.page)?;
            let n = seen.entry(c.page).or_insert(0);
            *n += 1;
            if *n == rc {
                seen.remove(&c.page);
                count += 1;
                if let Some(sub) = c.item {
                    stack.push(sub);
                }
            }
        }
    }
    Ok(count)
}
