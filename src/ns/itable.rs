//! The inode table: a copy-on-write map of inode pages, `PER_PAGE` records each. Its root
//! and the next free inode number live in the superblock's root slots.

use super::inode::{INODE_SIZE, Inode};
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::object::MapRoot;
use crate::store::layout::{META_HEADER, get64, put64};
use crate::store::{Kind, Store};

/// Inode records per page.
pub const PER_PAGE: u64 = ((crate::page::PAGE_SIZE - META_HEADER) / INODE_SIZE) as u64;

const SLOT_NODE: usize = 0;
const SLOT_DEPTH: usize = 1;
const SLOT_NEXT: usize = 2;
const OFF_USED: usize = 8;

fn slot_off(ino: Ino) -> usize {
    META_HEADER + (ino.0 % PER_PAGE) as usize * INODE_SIZE
}

fn table(s: &Store) -> MapRoot {
    MapRoot {
        node: PageNo(s.root(SLOT_NODE)),
        depth: s.root(SLOT_DEPTH) as u8,
    }
}

fn save_table(s: &mut Store, m: MapRoot) {
    s.set_root(SLOT_NODE, m.node.0);
    s.set_root(SLOT_DEPTH, m.depth as u64);
}

/// Reads inode `ino`.
pub fn get(s: &mut Store, ino: Ino) -> Result<Inode> {
    let p = table(s).get(s, ino.0 / PER_PAGE)?;
    if p.is_zero() {
        return Err(Error::NotFound);
    }
    s.with_meta(p, Kind::Inodes, |b| Inode::decode(&b[slot_off(ino)..]))?
        .ok_or(Error::NotFound)
}

/// Writes inode `ino` (creating its record if needed).
pub fn put(s: &mut Store, ino: Ino, inode: &Inode) -> Result<()> {
    let mut t = table(s);
    let p = t.meta_for_write(s, ino.0 / PER_PAGE, Kind::Inodes)?;
    save_table(s, t);
    let b = s.meta_mut(p, Kind::Inodes)?;
    let off = slot_off(ino);
    if Inode::decode(&b[off..]).is_none() {
        let used = get64(b, OFF_USED) + 1;
        put64(b, OFF_USED, used);
    }
    inode.encode(&mut b[off..off + INODE_SIZE]);
    Ok(())
}

/// Frees the record of `ino`; frees its page when it was the last record there.
pub fn remove(s: &mut Store, ino: Ino) -> Result<()> {
    let mut t = table(s);
    let idx = ino.0 / PER_PAGE;
    let p = t.meta_for_write(s, idx, Kind::Inodes)?;
    let b = s.meta_mut(p, Kind::Inodes)?;
    let off = slot_off(ino);
    let used = get64(b, OFF_USED).saturating_sub(1);
    b[off..off + INODE_SIZE].fill(0);
    put64(b, OFF_USED, used);
    if used == 0 {
        t.clear_range(s, idx, idx + 1)?;
    }
    save_table(s, t);
    Ok(())
}

/// Hands out a fresh inode number (numbers are never reused).
pub fn alloc_ino(s: &mut Store) -> Ino {
    let next = s.root(SLOT_NEXT).max(Ino::FIRST_FREE.0);
    s.set_root(SLOT_NEXT, next + 1);
    Ino(next)
}

/// Inode numbers handed out so far.
pub fn inos_used(s: &Store) -> u64 {
    s.root(SLOT_NEXT)
}

/// The table's map, for fsck and statistics.
pub fn table_root(s: &Store) -> MapRoot {
    table(s)
}
