//! Newtypes for every id.

/// A page number in the store file. `PageNo::ZERO` is the shared zero page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PageNo(pub u64);

impl PageNo {
    /// The zero page: every hole points here; never stored, counted or freed.
    pub const ZERO: PageNo = PageNo(0);

    /// True for the zero page sentinel.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// An inode number, as the kernel sees it (1 is the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory.
    pub const ROOT: Ino = Ino(1);
    /// The hidden directory holding unlinked-but-open inodes.
    pub const ORPHANS: Ino = Ino(2);
    /// The first inode number handed to users.
    pub const FIRST_FREE: Ino = Ino(3);
}

/// Bits of a kernel inode number below the view (snapshot) number.
pub const VIEW_SHIFT: u32 = 40;

/// A snapshot's id; `SnapId::LIVE` (0) is the live tree. Kernel inode numbers carry it in
/// their top bits so that the files of every snapshot have distinct numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SnapId(pub u64);

impl SnapId {
    /// The live tree.
    pub const LIVE: SnapId = SnapId(0);
    /// Largest id that fits in a kernel inode number.
    pub const MAX: SnapId = SnapId((1 << (63 - VIEW_SHIFT)) - 1);
}

impl Ino {
    /// The virtual `.snapshots` directory under the root.
    pub const SNAPDIR: Ino = Ino((1 << VIEW_SHIFT) - 2);

    /// The kernel's number for inode `self` of snapshot `v`.
    pub fn in_view(self, v: SnapId) -> Ino {
        Ino(v.0 << VIEW_SHIFT | self.0)
    }

    /// Splits a kernel inode number into snapshot and inode.
    pub fn split(self) -> (SnapId, Ino) {
        (
            SnapId(self.0 >> VIEW_SHIFT),
            Ino(self.0 & ((1 << VIEW_SHIFT) - 1)),
        )
    }
}

/// An open file or directory handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

/// A commit sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seq(pub u64);

/// A fast hasher for page numbers (the store's page maps are hit on every operation; the
/// keys are not chosen by users, so SipHash's flooding defence buys nothing there).
#[derive(Default, Clone, Copy)]
pub struct PageHasher(u64);

impl std::hash::Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

/// `BuildHasher` for maps keyed by page number.
pub type PageHash = std::hash::BuildHasherDefault<PageHasher>;
/// A map keyed by page number.
pub type PageMap<V> = std::collections::HashMap<PageNo, V, PageHash>;
/// A set of page numbers.
pub type PageSet = std::collections::HashSet<PageNo, PageHash>;
