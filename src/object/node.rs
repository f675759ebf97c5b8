//! Layout of one map node: the metadata header, then `FANOUT` little-endian u64 entries.
//! Header bytes 8..16 hold `level << 56 | population`, population being the number of
//! non-zero payload entries under the node.

use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::store::layout::{META_HEADER, get64, put64};

/// Entries per node.
pub const FANOUT: u64 = 510;

const OFF_WORD: usize = 8;

/// Entry `slot` of a node.
pub fn entry(b: &[u8], slot: usize) -> u64 {
    get64(b, META_HEADER + slot * 8)
}

/// Sets entry `slot` of a node.
pub fn set_entry(b: &mut [u8], slot: usize, v: u64) {
    put64(b, META_HEADER + slot * 8, v);
}

/// All entries of a node.
pub fn entries(b: &[u8]) -> Vec<u64> {
    (0..FANOUT as usize).map(|i| entry(b, i)).collect()
}

/// The node's level (0: entries are payload pages).
pub fn level(b: &[u8]) -> u8 {
    (get64(b, OFF_WORD) >> 56) as u8
}

/// Non-zero payload entries under the node.
pub fn population(b: &[u8]) -> u64 {
    get64(b, OFF_WORD) & ((1 << 56) - 1)
}

/// Writes level and population.
pub fn set_word(b: &mut [u8], level: u8, population: u64) {
    put64(b, OFF_WORD, ((level as u64) << 56) | population);
}

/// Indices covered by one entry of a node at `level`.
pub fn span(level: u8) -> u64 {
    FANOUT.saturating_pow(level as u32)
}

/// Indices covered by a tree of `depth` levels.
pub fn capacity(depth: u8) -> u64 {
    FANOUT.saturating_pow(depth as u32)
}

/// The slot of index `idx` in a node at `level`.
pub fn slot(idx: u64, level: u8) -> usize {
    ((idx / span(level)) % FANOUT) as usize
}

/// Checks a node read for a map at `level` (after its checksum): the level it records is
/// that one (which also bounds it by the map's depth, at most `MAX_DEPTH`), and its
/// population is at most the indices it covers, `FANOUT^(level + 1)`. So a node cannot be
/// its own descendant, and no walk goes deeper than the map's depth.
pub fn check(p: PageNo, b: &[u8], want_level: u8) -> Result<()> {
    let lvl = level(b);
    if lvl != want_level {
        return Err(Error::corrupt(
            p.0,
            format!("map node of level {lvl} where level {want_level} belongs"),
        ));
    }
    let pop = population(b);
    if pop > capacity(lvl.saturating_add(1)) {
        return Err(Error::corrupt(
            p.0,
            format!("map node of level {lvl} with population {pop}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_level_and_population() {
        let mut b = vec![0u8; crate::page::PAGE_SIZE];
        set_word(&mut b, 1, FANOUT * FANOUT);
        assert!(check(PageNo(5), &b, 1).is_ok());
        assert!(matches!(
            check(PageNo(5), &b, 0),
            Err(Error::Corrupt { page: 5, .. })
        ));
        set_word(&mut b, 1, FANOUT * FANOUT + 1);
        assert!(matches!(
            check(PageNo(5), &b, 1),
            Err(Error::Corrupt { page: 5, .. })
        ));
        set_word(&mut b, 200, 0);
        assert!(check(PageNo(5), &b, 4).is_err());
    }
}
