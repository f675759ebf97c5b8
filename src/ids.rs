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

/// An open file or directory handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

/// A commit sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seq(pub u64);
