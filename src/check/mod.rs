//! fsck: recompute every page's reference count from the roots and compare; check map
//! shapes, populations, checksums, link counts and directory structure; optionally repair.
//! Repair order: prune unreadable pages (their entries become holes), fix populations,
//! rewrite every reference count from the walk, then fix the namespace with the ordinary
//! operations (now safe: the counts are right) and commit. A second check then says what
//! is left.

mod names;
mod walk;

use crate::error::Result;
use crate::ids::PageNo;
use crate::ns::itable;
use crate::object::node;
use crate::store::layout::{self, GROUP_PAGES, RC_RESERVED};
use crate::store::{Kind, Store};
use std::collections::HashMap;
use walk::Owner;

/// What fsck found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems still there.
    pub problems: Vec<String>,
    /// Problems found and repaired.
    pub repaired: Vec<String>,
    /// Inodes seen.
    pub inodes: u64,
    /// Pages in use.
    pub pages_used: u64,
}

impl Report {
    /// e2fsck's exit codes: 0 clean, 1 errors corrected, 4 errors left.
    pub fn exit_code(&self) -> i32 {
        if !self.problems.is_empty() {
            4
        } else if !self.repaired.is_empty() {
            1
        } else {
            0
        }
    }
}

/// Checks the whole store without changing it.
pub fn check(s: &mut Store) -> Result<Report> {
    fsck(s, false, &mut |_, _, _| {})
}

/// Checks the store; with `repair`, fixes what it can and commits. `progress` hears
/// (phase, done, total) now and then.
pub fn fsck(
    s: &mut Store,
    repair: bool,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Report> {
    let mut w = walk::walk(s, progress);
    let mut problems = std::mem::take(&mut w.problems);
    let mut inodes = w.inodes.clone();
    names::names(s, &mut inodes, false, &mut problems)?;
    let pages_used = counts(s, &w.refs, &mut problems, progress)?;
    let mut rep = Report {
        inodes: w.inodes.len() as u64,
        pages_used,
        ..Default::default()
    };
    if !repair || problems.is_empty() {
        rep.problems = problems;
        return Ok(rep);
    }
    prune(s, &w)?;
    s.rebuild_counts(&w.refs)?;
    let mut inodes = w.inodes.clone();
    for owner in &w.bad_roots {
        if let Owner::Content(i) | Owner::Xattr(i) = owner {
            inodes.insert(*i, crate::ns::itable::get(s, *i)?);
        }
    }
    let mut more = Vec::new();
    names::names(s, &mut inodes, true, &mut more)?;
    s.commit()?;
    let after = check(s)?;
    rep.repaired = problems;
    rep.problems = after.problems;
    rep.pages_used = after.pages_used;
    Ok(rep)
}

/// Empties unreadable roots, clears entries pointing at unreadable pages, fixes populations.
fn prune(s: &mut Store, w: &walk::Walk) -> Result<()> {
    for owner in &w.bad_roots {
        match *owner {
            Owner::Table => log::error!("the inode table's root is unreadable: cannot repair"),
            Owner::SnapList | Owner::Snap(_) => {
                log::error!("{owner:?}: unreadable root of a snapshot structure: cannot repair")
            }
            Owner::Content(ino) | Owner::Xattr(ino) => {
                let mut i = itable::get(s, ino)?;
                if *owner == Owner::Content(ino) {
                    i.map = crate::object::MapRoot::EMPTY;
                    i.entries = 0;
                } else {
                    i.xattr = crate::object::MapRoot::EMPTY;
                    i.xattr_len = 0;
                }
                itable::put(s, ino, &i)?;
            }
        }
    }
    for (n, slot) in &w.bad_entries {
        node::set_entry(s.meta_mut(*n, Kind::MapNode)?, *slot, 0);
    }
    for (n, pop) in &w.bad_pop {
        let b = s.meta_mut(*n, Kind::MapNode)?;
        let lvl = node::level(b);
        node::set_word(b, lvl, *pop);
    }
    Ok(())
}

/// Compares every stored count with the walk; returns the pages in use.
fn counts(
    s: &mut Store,
    refs: &HashMap<PageNo, u32>,
    out: &mut Vec<String>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<u64> {
    let groups = s.total_pages() / GROUP_PAGES;
    let mut free = 0u64;
    let mut used = 0u64;
    for g in 0..groups {
        if g % 256 == 0 {
            progress("counts", g, groups);
        }
        let h = layout::group_header(g);
        let Ok(stored) = s.with_meta(h, Kind::Group, |b| {
            let rcs: Vec<u32> = (0..GROUP_PAGES as usize)
                .map(|k| layout::get32(b, 16 + k * 4))
                .collect();
            (layout::get32(b, 8), rcs)
        }) else {
            out.push(format!("group {g}: header page {} is unreadable", h.0));
            continue;
        };
        let mut group_free = 0u32;
        for (k, rc) in stored.1.iter().enumerate() {
            let p = PageNo(g * GROUP_PAGES + k as u64);
            let reserved = p.is_zero() || p == h;
            let want = if reserved {
                RC_RESERVED
            } else {
                refs.get(&p).copied().unwrap_or(0)
            };
            if *rc != want {
                out.push(format!("page {}: count {rc} but {want} references", p.0));
            }
            if *rc == 0 {
                group_free += 1;
            } else if !reserved {
                used += 1;
            }
        }
        if stored.0 != group_free {
            out.push(format!(
                "group {g}: free count {} but {group_free} free",
                stored.0
            ));
        }
        free += group_free as u64;
    }
    progress("counts", groups, groups);
    if s.superblock().free_pages != free {
        out.push(format!(
            "superblock: free pages {} but {free} free",
            s.superblock().free_pages
        ));
    }
    Ok(used)
}
