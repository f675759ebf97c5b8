//! The superblock: page 0, written only through the journal.

use super::layout::{
    GROUP_PAGES, Kind, META_HEADER, PS, get32, get64, init_meta, put32, put64, verify,
};
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::page::PAGE_SIZE;

/// Format version this build writes (`mkfs`); it reads and writes every version from 1 up
/// to it, each in its own layout (version 2: bigger inode records holding small files'
/// bytes inline; see docs/FORMAT.md). A store keeps the version it was made with.
pub const FORMAT_VERSION: u32 = 2;
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
    /// Format version of the store (1..=`FORMAT_VERSION`): which layout its pages have.
    pub version: u32,
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
            version: FORMAT_VERSION,
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
        put32(b, OFF_VERSION, self.version);
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

    /// Decodes and checks a superblock page: kind, version, checksum, page size, then the
    /// ranges and consistency of every field the store uses (see docs/FORMAT.md, "What each
    /// decoder checks").
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < PAGE_SIZE || get32(b, 0) != Kind::Super as u32 {
            return Err(Error::BadStore("not a cowfs store (no superblock)".into()));
        }
        let version = get32(b, OFF_VERSION);
        if version > FORMAT_VERSION {
            return Err(Error::BadStore(format!(
                "store format version {version} is newer than this cowfs ({FORMAT_VERSION}); upgrade cowfs"
            )));
        }
        verify(PageNo(0), b)?;
        if version == 0 {
            return Err(Error::corrupt(0, "format version 0"));
        }
        if get32(b, OFF_PAGE_SIZE) != PAGE_SIZE as u32 {
            return Err(Error::BadStore("store uses another page size".into()));
        }
        let mut roots = [0; ROOT_SLOTS];
        for (i, r) in roots.iter_mut().enumerate() {
            *r = get64(b, OFF_ROOTS + i * 8);
        }
        let sb = Superblock {
            version,
            seq: get64(b, OFF_SEQ),
            groups: get64(b, OFF_GROUPS),
            free_pages: get64(b, OFF_FREE),
            cursor: get64(b, OFF_CURSOR),
            cow_copies: get64(b, OFF_COW),
            max_pages: get64(b, OFF_MAX_PAGES),
            roots,
        };
        sb.check().map_err(|why| Error::corrupt(0, why))?;
        Ok(sb)
    }

    /// Ranges and consistency of the fields: a group count that sizes a file the host can
    /// hold (so `groups * GROUP_PAGES * PAGE_SIZE` cannot wrap), free pages and the cursor
    /// inside the store, counters far from wrapping when a commit adds one.
    fn check(&self) -> std::result::Result<(), String> {
        if self.groups == 0 || self.groups > MAX_GROUPS {
            return Err(format!(
                "group count {} outside 1..={MAX_GROUPS}",
                self.groups
            ));
        }
        let total = self.groups * GROUP_PAGES;
        // Page 0 and one header per group are never free.
        let most_free = total - self.groups - 1;
        if self.free_pages > most_free {
            return Err(format!(
                "{} free pages in a store of {total} pages",
                self.free_pages
            ));
        }
        if self.cursor > total {
            return Err(format!(
                "allocation cursor {} past the store's {total} pages",
                self.cursor
            ));
        }
        if self.seq > COUNTER_MAX || self.cow_copies > COUNTER_MAX {
            return Err(format!(
                "counter out of range (seq {}, copies {})",
                self.seq, self.cow_copies
            ));
        }
        if self.max_pages > MAX_GROUPS * GROUP_PAGES {
            return Err(format!("size limit of {} pages", self.max_pages));
        }
        Ok(())
    }

    /// Pages in the store file this superblock describes.
    pub fn total_pages(&self) -> u64 {
        self.groups.saturating_mul(GROUP_PAGES)
    }
}

/// The most groups a store may have: its file length, `groups * GROUP_PAGES * PAGE_SIZE`
/// bytes, must fit a host file offset (`i64`), with room to spare for one more growth step.
pub const MAX_GROUPS: u64 = (i64::MAX as u64 / PS / GROUP_PAGES) / 2;

/// Counters (commit number, copy count) above this are corrupt: at one a nanosecond they
/// take centuries to reach, and below it `+ 1` can never wrap.
const COUNTER_MAX: u64 = 1 << 62;

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
        sb.groups = 1;
        sb.free_pages = 1018;
        sb.roots[3] = 77;
        let mut b = [0u8; PAGE_SIZE];
        sb.encode(&mut b);
        seal(PageNo(0), &mut b);
        assert_eq!(Superblock::decode(&b).expect("decode"), sb);
        // An older version reads as itself (its pages keep their layout).
        let old = Superblock {
            version: 1,
            ..sb.clone()
        };
        assert_eq!(Superblock::decode(&sealed(&old)).expect("v1").version, 1);
        put32(&mut b, OFF_VERSION, FORMAT_VERSION + 1);
        seal(PageNo(0), &mut b);
        let e = Superblock::decode(&b).expect_err("newer version");
        assert!(e.to_string().contains("newer"), "{e}");
    }

    fn sealed(sb: &Superblock) -> [u8; PAGE_SIZE] {
        let mut b = [0u8; PAGE_SIZE];
        sb.encode(&mut b);
        seal(PageNo(0), &mut b);
        b
    }

    #[test]
    fn bad_fields_are_corrupt_page_0() {
        let good = Superblock {
            groups: 3,
            free_pages: 100,
            cursor: 7,
            ..Superblock::new()
        };
        assert!(Superblock::decode(&sealed(&good)).is_ok());
        let bad = [
            Superblock {
                groups: 0,
                ..good.clone()
            },
            // Wraps `groups * 1020 * 4096` to a small length: the bug of issue 14.
            Superblock {
                groups: (u64::MAX / (GROUP_PAGES * PS)) + 2,
                ..good.clone()
            },
            Superblock {
                groups: MAX_GROUPS + 1,
                ..good.clone()
            },
            Superblock {
                free_pages: 3 * GROUP_PAGES - 3,
                ..good.clone()
            },
            Superblock {
                cursor: 3 * GROUP_PAGES + 1,
                ..good.clone()
            },
            Superblock {
                seq: u64::MAX,
                ..good.clone()
            },
            Superblock {
                cow_copies: u64::MAX,
                ..good.clone()
            },
        ];
        for sb in bad {
            match Superblock::decode(&sealed(&sb)) {
                Err(Error::Corrupt { page: 0, .. }) => {}
                other => panic!("{sb:?} gave {other:?}"),
            }
        }
        let mut b = sealed(&good);
        put32(&mut b, OFF_VERSION, 0);
        seal(PageNo(0), &mut b);
        assert!(matches!(
            Superblock::decode(&b),
            Err(Error::Corrupt { page: 0, .. })
        ));
        assert!(
            Superblock::decode(&b[..100]).is_err(),
            "a short buffer is refused"
        );
    }
}
