//! The inode table: a copy-on-write map of inode pages, `PER_PAGE` records each. The live
//! table's root and next free inode number live in the superblock's root slots; each
//! snapshot keeps its own `Table` (see `snap.rs`).
//!
//! An inode page holds one reference on each map root in its records. So when a page is
//! shared (a snapshot shares the table) and one side must change it, the copy takes a
//! reference on every root it contains (`unshare_page`), exactly as a copied map node takes
//! one on each child; freeing the last reference of a page releases its records' maps.

use super::inode::{INODE_SIZE, Inode};
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::object::MapRoot;
use crate::store::layout::{META_HEADER, get32, get64, put64};
use crate::store::{Kind, Store};

/// Inode records per page.
pub const PER_PAGE: u64 = ((crate::page::PAGE_SIZE - META_HEADER) / INODE_SIZE) as u64;

const SLOT_NODE: usize = 0;
const SLOT_DEPTH: usize = 1;
const SLOT_NEXT: usize = 2;
const OFF_USED: usize = 8;

/// One inode table: its map and the next inode number it hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Table {
    pub map: MapRoot,
    pub next: u64,
}

impl Table {
    /// The live table, from the superblock.
    pub fn live(s: &Store) -> Table {
        Table {
            map: MapRoot {
                node: PageNo(s.root(SLOT_NODE)),
                // Out of range reads as 255, which every map operation refuses as
                // corrupt (rather than wrapping to a small depth that looks valid).
                depth: u8::try_from(s.root(SLOT_DEPTH)).unwrap_or(u8::MAX),
            },
            next: s.root(SLOT_NEXT),
        }
    }

    /// Makes this the live table (durable at the next commit).
    pub fn save_live(&self, s: &mut Store) {
        s.set_root(SLOT_NODE, self.map.node.0);
        s.set_root(SLOT_DEPTH, self.map.depth as u64);
        s.set_root(SLOT_NEXT, self.next);
    }
}

fn slot_off(ino: Ino) -> usize {
    META_HEADER + (ino.0 % PER_PAGE) as usize * INODE_SIZE
}

/// The records of an inode page, with their slot numbers.
pub fn records(b: &[u8]) -> Vec<(usize, Inode)> {
    (0..PER_PAGE as usize)
        .filter_map(|k| Inode::decode(&b[META_HEADER + k * INODE_SIZE..]).map(|i| (k, i)))
        .collect()
}

/// The records of inode page `p`, each checked (`Inode::check`), and its count of records
/// in use checked against them.
pub fn checked_records(p: PageNo, b: &[u8]) -> Result<Vec<(usize, Inode)>> {
    let mut out = Vec::new();
    for k in 0..PER_PAGE as usize {
        if let Some(i) = Inode::decode_checked(p, b, META_HEADER + k * INODE_SIZE)? {
            out.push((k, i));
        }
    }
    check_used(p, b, out.len())?;
    Ok(out)
}

/// Checks the page's count of records in use: at most `PER_PAGE`, and `n` when the
/// caller counted the records.
fn check_used(p: PageNo, b: &[u8], n: usize) -> Result<()> {
    let used = get64(b, OFF_USED);
    if used != n as u64 {
        return Err(Error::corrupt(
            p.0,
            format!("inode page says {used} records in use, holds {n}"),
        ));
    }
    Ok(())
}

fn count_used(b: &[u8]) -> usize {
    (0..PER_PAGE as usize)
        .filter(|k| get32(b, META_HEADER + k * INODE_SIZE) != 0)
        .count()
}

/// Reads inode `ino` of table `t` without changing anything.
pub fn get_in(s: &mut Store, t: &Table, ino: Ino) -> Result<Inode> {
    let p = t.map.get(s, ino.0 / PER_PAGE)?;
    if p.is_zero() {
        return Err(Error::NotFound);
    }
    s.with_meta(p, Kind::Inodes, |b| {
        Inode::decode_checked(p, b, slot_off(ino))
    })??
    .ok_or(Error::NotFound)
}

/// An inode page this table alone references: a shared one is copied, and the copy takes
/// a reference on every map root in its records.
fn unshare_page(s: &mut Store, old: PageNo) -> Result<PageNo> {
    if old.is_zero() {
        return s.alloc_meta(Kind::Inodes);
    }
    if s.refcount(old)? == 1 {
        return Ok(old);
    }
    let q = s.copy_meta(old, Kind::Inodes)?;
    let recs = s.with_meta(q, Kind::Inodes, |b| checked_records(q, b))??;
    for (_, i) in recs {
        s.incref(i.map.node)?;
        s.incref(i.xattr.node)?;
    }
    s.decref(old)?;
    Ok(q)
}

/// Makes the page holding `ino` exclusive to `t` (path and page), so that the maps in its
/// records carry counts that tell the truth about sharing. Cheap when nothing is shared.
pub fn unshare(s: &mut Store, t: &mut Table, ino: Ino) -> Result<()> {
    let idx = ino.0 / PER_PAGE;
    if t.map.get(s, idx)?.is_zero() {
        return Ok(());
    }
    t.map.modify(s, idx, unshare_page)?;
    Ok(())
}

/// Writes inode `ino` into `t` (creating its record if needed).
pub fn put_in(s: &mut Store, t: &mut Table, ino: Ino, inode: &Inode) -> Result<()> {
    let p = t.map.modify(s, ino.0 / PER_PAGE, unshare_page)?;
    let b = s.meta_mut(p, Kind::Inodes)?;
    let off = slot_off(ino);
    if Inode::decode(&b[off..]).is_none() {
        check_used(p, b, count_used(b))?;
        let used = get64(b, OFF_USED) + 1;
        put64(b, OFF_USED, used);
    }
    inode.encode(&mut b[off..off + INODE_SIZE]);
    Ok(())
}

/// Frees the record of `ino` in `t` (the caller released its maps); frees its page when
/// it was the last record there.
pub fn remove_in(s: &mut Store, t: &mut Table, ino: Ino) -> Result<()> {
    let idx = ino.0 / PER_PAGE;
    let p = t.map.modify(s, idx, unshare_page)?;
    let b = s.meta_mut(p, Kind::Inodes)?;
    let off = slot_off(ino);
    check_used(p, b, count_used(b))?;
    let used = get64(b, OFF_USED).saturating_sub(1);
    b[off..off + INODE_SIZE].fill(0);
    put64(b, OFF_USED, used);
    if used == 0 {
        t.map.clear_range(s, idx, idx + 1)?;
    }
    Ok(())
}

/// Hands out a fresh inode number of `t` (numbers are never reused).
pub fn alloc_in(t: &mut Table) -> Ino {
    let next = t.next.max(Ino::FIRST_FREE.0);
    // Saturating: a corrupt count must not wrap to numbers already handed out.
    t.next = next.saturating_add(1);
    Ino(next)
}

/// Reads inode `ino` of the live table.
pub fn get(s: &mut Store, ino: Ino) -> Result<Inode> {
    get_in(s, &Table::live(s), ino)
}

/// Writes inode `ino` of the live table.
pub fn put(s: &mut Store, ino: Ino, inode: &Inode) -> Result<()> {
    let mut t = Table::live(s);
    put_in(s, &mut t, ino, inode)?;
    t.save_live(s);
    Ok(())
}

/// Frees the record of `ino` in the live table.
pub fn remove(s: &mut Store, ino: Ino) -> Result<()> {
    let mut t = Table::live(s);
    remove_in(s, &mut t, ino)?;
    t.save_live(s);
    Ok(())
}

/// Hands out a fresh inode number of the live table.
pub fn alloc_ino(s: &mut Store) -> Ino {
    let mut t = Table::live(s);
    let i = alloc_in(&mut t);
    t.save_live(s);
    i
}

/// Inode numbers handed out so far in the live table.
pub fn inos_used(s: &Store) -> u64 {
    s.root(SLOT_NEXT)
}

/// The live table's map, for fsck and statistics.
pub fn table_root(s: &Store) -> MapRoot {
    Table::live(s).map
}
