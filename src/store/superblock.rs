//! The superblock: page 0, written only through the journal.

use super::layout::{Kind, META_HEADER, get32, get64, init_meta, put32, put64, verify};
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::page::PAGE_SIZE;

/// Format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Slots the upper layers may use to find their structures.
pub const ROOT_SLOTS: usize = 32;

const OFF_VERSION: usize = META_HEADER;
const OFF_PAGE_SIZE: usize = 20;
const OFF_SEQ: usize = 24;
const OFF_GROUPS: usize = 32;
const OFF_FREE: usize = 40;
const OFF_CURSOR: usize = 48;
const OFF_COW: usize = 56;
const OFF_MAX_PAGES: usize = 64;
const OFF_ROOTS: usize = 128;

/// The store's global state, one copy per commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Commit sequence number of the last commit.
    pub seq: u64,
    /// Allocation groups in the store file.
    pub groups: u64,
    /// Pages with a reference count of 0.
    pub free_pages: u64,
    /// Where the allocator looks next.
    pub cursor: u64,
    /// Copy-on-write page copies made so far.
    pub cow_copies: u64,
    /// Upper limit on the store's size in pages (0: none).
    pub max_pages: u64,
    /// Roots of the upper layers' structures.
    pub roots: [u64; ROOT_SLOTS],
}

impl Superblock {
    /// A superblock for a store of one empty group.
    pub fn new() -> Self {
        Superblock {
            seq: 0,
            groups: 0,
            free_pages: 0,
            cursor: 0,
            cow_copies: 0,
            max_pages: 0,
            roots: [0; ROOT_SLOTS],
        }
    }

    /// Encodes into a page (checksum not yet stamped).
    pub fn encode(&self, b: &mut [u8]) {
        init_meta(b, Kind::Super);
        put32(b, OFF_VERSION, FORMAT_VERSION);
        put32(b, OFF_PAGE_SIZE, PAGE_SIZE as u32);
        put64(b, OFF_SEQ, self.seq);
        put64(b, OFF_GROUPS, self.groups);
        put64(b, OFF_FREE, self.free_pages);
        put64(b, OFF_CURSOR, self.cursor);
        put64(b, OFF_COW, self.cow_copies);
        put64(b, OFF_MAX_PAGES, self.max_pages);
        for (i, r) in self.roots.iter().enumerate() {
            put64(b, OFF_ROOTS + i * 8, *r);
        }
    }

    /// Decodes and checks a superblock page.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if get32(b, 0) != Kind::Super as u32 {
            return Err(Error::BadStore("not a cowfs store (no superblock)".into()));
        }
        let version = get32(b, OFF_VERSION);
        if version > FORMAT_VERSION {
            return Err(Error::BadStore(format!(
                "store format version {version} is newer than this cowfs ({FORMAT_VERSION}); upgrade cowfs"
            )));
        }
        verify(PageNo(0), b)?;
        if get32(b, OFF_PAGE_SIZE) != PAGE_SIZE as u32 {
            return Err(Error::BadStore("store uses another page size".into()));
        }
        let mut roots = [0; ROOT_SLOTS];
        for (i, r) in roots.iter_mut().enumerate() {
            *r = get64(b, OFF_ROOTS + i * 8);
        }
        Ok(Superblock {
            seq: get64(b, OFF_SEQ),
            groups: get64(b, OFF_GROUPS),
            free_pages: get64(b, OFF_FREE),
            cursor: get64(b, OFF_CURSOR),
            cow_copies: get64(b, OFF_COW),
            max_pages: get64(b, OFF_MAX_PAGES),
            roots,
        })
    }
}

impl Default for Superblock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::seal;

    #[test]
    fn roundtrip_and_version_check() {
        let mut sb = Superblock::new();
        sb.seq = 5;
        sb.roots[3] = 77;
        let mut b = [0u8; PAGE_SIZE];
        sb.encode(&mut b);
        seal(PageNo(0), &mut b);
        assert_eq!(Superblock::decode(&b).expect("decode"), sb);
        put32(&mut b, OFF_VERSION, FORMAT_VERSION + 1);
        seal(PageNo(0), &mut b);
        let e = Superblock::decode(&b).expect_err("newer version");
        assert!(e.to_string().contains("newer"), "{e}");
    }
}
