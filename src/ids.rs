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
