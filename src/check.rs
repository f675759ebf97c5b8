//! Consistency checks over a whole store: recompute every page's reference count from the
//! roots and compare; check link counts and free-space counters. Used by the tests now and
//! by `cowfs fsck` later.

use crate::error::Result;
use crate::ids::{Ino, PageNo};
use crate::ns::dir;
use crate::ns::inode::{INODE_SIZE, Inode};
use crate::ns::itable;
use crate::object::{MapRoot, node};
use crate::store::layout::{self, GROUP_PAGES, META_HEADER, RC_RESERVED};
use crate::store::{Kind, Store};
use std::collections::HashMap;

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per problem.
    pub problems: Vec<String>,
    /// Inodes seen.
    pub inodes: u64,
    /// Pages in use.
    pub pages_used: u64,
}

struct Walker<'a> {
    s: &'a mut Store,
    refs: HashMap<PageNo, u32>,
}

impl Walker<'_> {
    /// Counts one reference to the map root and walks the tree below it once.
    fn map(&mut self, m: &MapRoot) -> Result<()> {
        if m.depth == 0 || m.node.is_zero() {
            return Ok(());
        }
        self.node(m.node, m.depth - 1)
    }

    fn node(&mut self, p: PageNo, level: u8) -> Result<()> {
        let n = self.refs.entry(p).or_insert(0);
        *n += 1;
        if *n > 1 {
            return Ok(());
        }
        let es = self.s.with_meta(p, Kind::MapNode, node::entries)?;
        for e in es.into_iter().filter(|e| *e != 0) {
            if level == 0 {
                *self.refs.entry(PageNo(e)).or_insert(0) += 1;
            } else {
                self.node(PageNo(e), level - 1)?;
            }
        }
        Ok(())
    }
}

fn all_inodes(s: &mut Store) -> Result<Vec<(Ino, Inode)>> {
    let t = itable::table_root(s);
    let mut out = Vec::new();
    let mut idx = 0;
    while let Some(i) = t.next_data(s, idx)? {
        let p = t.get(s, i)?;
        let recs = s.with_meta(p, Kind::Inodes, |b| {
            (0..itable::PER_PAGE as usize)
                .filter_map(|k| Inode::decode(&b[META_HEADER + k * INODE_SIZE..]).map(|n| (k, n)))
                .collect::<Vec<_>>()
        })?;
        out.extend(
            recs.into_iter()
                .map(|(k, n)| (Ino(i * itable::PER_PAGE + k as u64), n)),
        );
        idx = i + 1;
    }
    Ok(out)
}

/// Checks reference counts, free counts and link counts of the whole store.
pub fn check(s: &mut Store) -> Result<Report> {
    let mut rep = Report::default();
    let inodes = all_inodes(s)?;
    rep.inodes = inodes.len() as u64;
    let mut w = Walker {
        s,
        refs: HashMap::new(),
    };
    let t = itable::table_root(w.s);
    w.map(&t)?;
    let mut links: HashMap<Ino, u32> = HashMap::new();
    let mut subdirs: HashMap<Ino, u32> = HashMap::new();
    for (ino, i) in &inodes {
        w.map(&i.map)?;
        w.map(&i.xattr)?;
        if i.is_dir() {
            dir::for_each(w.s, i, None, &mut |e| {
                *links.entry(e.ino).or_insert(0) += 1;
                if e.kind as u32 == libc::S_IFDIR >> 12 {
                    *subdirs.entry(*ino).or_insert(0) += 1;
                }
                false
            })?;
        }
    }
    let refs = std::mem::take(&mut w.refs);
    let s = w.s;
    check_counts(s, &refs, &mut rep)?;
    for (ino, i) in &inodes {
        let want = if i.is_dir() {
            2 + subdirs.get(ino).copied().unwrap_or(0)
        } else {
            links.get(ino).copied().unwrap_or(0)
        };
        let orphan = *ino == Ino::ORPHANS || (!i.is_dir() && i.nlink == 0);
        if i.nlink != want && !orphan {
            rep.problems.push(format!(
                "inode {}: nlink {} but {} links found",
                ino.0, i.nlink, want
            ));
        }
    }
    Ok(rep)
}

fn check_counts(s: &mut Store, refs: &HashMap<PageNo, u32>, rep: &mut Report) -> Result<()> {
    let total = s.total_pages();
    let mut free = 0u64;
    for g in 0..total / GROUP_PAGES {
        let mut group_free = 0u32;
        for k in 0..GROUP_PAGES {
            let p = PageNo(g * GROUP_PAGES + k);
            if p.is_zero() {
                continue; // the superblock; as a page number, the zero page (never counted)
            }
            let rc = s.refcount(p)?;
            let reserved = p == layout::group_header(g);
            let want = if reserved {
                RC_RESERVED
            } else {
                refs.get(&p).copied().unwrap_or(0)
            };
            if rc != want {
                rep.problems
                    .push(format!("page {}: refcount {rc} but {want} references", p.0));
            }
            if rc == 0 {
                group_free += 1;
            } else if !reserved {
                rep.pages_used += 1;
            }
        }
        let h = layout::group_header(g);
        let stored = s.with_meta(h, Kind::Group, |b| layout::get32(b, 8))?;
        if stored != group_free {
            rep.problems.push(format!(
                "group {g}: free count {stored} but {group_free} free"
            ));
        }
        free += group_free as u64;
    }
    if s.superblock().free_pages != free {
        rep.problems.push(format!(
            "superblock: free pages {} but {free} free",
            s.superblock().free_pages
        ));
    }
    Ok(())
}
