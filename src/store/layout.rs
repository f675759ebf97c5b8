//! On-disk constants and little helpers for reading and writing fixed-width fields.
//! Every field is little-endian; see docs/FORMAT.md.

use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::page::PAGE_SIZE;

/// Page size as u64, for offset arithmetic.
pub const PS: u64 = PAGE_SIZE as u64;
/// Pages covered by one allocation group (its header page included).
pub const GROUP_PAGES: u64 = 1020;
/// Bytes of the common header at the start of every metadata page.
pub const META_HEADER: usize = 16;
/// Refcount value: a page freed in the open transaction, reusable after the commit.
pub const RC_PENDING: u32 = u32::MAX - 1;
/// Refcount value: a page the store itself owns (superblock, group headers).
pub const RC_RESERVED: u32 = u32::MAX;
/// The largest ordinary reference count.
pub const RC_MAX: u32 = u32::MAX - 2;

/// Kinds of metadata page, stored in the first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    Super = 0x5250_5553,
    Group = 0x4850_5247,
    MapNode = 0x4e50_414d,
    Inodes = 0x444f_4e49,
    DirBlock = 0x4252_4944,
    Blob = 0x424f_4c42,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        [
            Kind::Super,
            Kind::Group,
            Kind::MapNode,
            Kind::Inodes,
            Kind::DirBlock,
            Kind::Blob,
        ]
        .into_iter()
        .find(|k| *k as u32 == v)
    }
}

/// The group a page belongs to.
pub fn group_of(p: PageNo) -> u64 {
    p.0 / GROUP_PAGES
}

/// The header page of group `g` (holds the group's reference counts).
pub fn group_header(g: u64) -> PageNo {
    PageNo(g * GROUP_PAGES + 1)
}

/// Byte offset of page `p`'s count inside its group header.
pub fn rc_offset(p: PageNo) -> usize {
    META_HEADER + (p.0 % GROUP_PAGES) as usize * 4
}

/// Reads a little-endian u32.
pub fn get32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

/// Reads a little-endian u64.
pub fn get64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Writes a little-endian u32.
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian u64.
pub fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Checksum of a metadata page: crc32 of everything after the crc field, seeded with the
/// page number so a page written to the wrong place is caught too.
pub fn page_crc(p: PageNo, b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&p.0.to_le_bytes());
    h.update(&b[0..4]);
    h.update(&b[8..PAGE_SIZE]);
    h.finalize()
}

/// Stamps the checksum into a metadata page before it is written.
pub fn seal(p: PageNo, b: &mut [u8]) {
    let c = page_crc(p, b);
    put32(b, 4, c);
}

/// Checks a metadata page read from disk: a known kind and a matching checksum.
pub fn verify(p: PageNo, b: &[u8]) -> Result<Kind> {
    let kind = Kind::from_u32(get32(b, 0))
        .ok_or_else(|| Error::corrupt(p.0, format!("unknown page kind {:#x}", get32(b, 0))))?;
    if get32(b, 4) != page_crc(p, b) {
        return Err(Error::corrupt(p.0, "checksum mismatch"));
    }
    Ok(kind)
}

/// Writes the kind of a fresh metadata page.
pub fn init_meta(b: &mut [u8], kind: Kind) {
    b.fill(0);
    put32(b, 0, kind as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_verify() {
        let mut b = [0u8; PAGE_SIZE];
        init_meta(&mut b, Kind::MapNode);
        b[100] = 7;
        seal(PageNo(9), &mut b);
        assert_eq!(verify(PageNo(9), &b).expect("valid"), Kind::MapNode);
        assert!(
            verify(PageNo(10), &b).is_err(),
            "misdirected page must fail"
        );
        b[200] ^= 1;
        assert!(verify(PageNo(9), &b).is_err(), "flipped bit must fail");
    }

    #[test]
    fn group_math() {
        assert_eq!(group_header(0), PageNo(1));
        assert_eq!(group_of(PageNo(1019)), 0);
        assert_eq!(group_of(PageNo(1020)), 1);
        assert_eq!(rc_offset(PageNo(1021)), META_HEADER + 4);
    }
}
