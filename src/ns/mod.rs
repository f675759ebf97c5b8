//! The POSIX namespace over the page store: inodes, directories, symlinks, xattrs, open
//! handles, and file data through copy-on-write maps. No fuser types here.

mod blob;
mod data;
pub mod dir;
mod fs;
pub mod inode;
pub mod itable;
mod names;
mod xattr;

pub use fs::{Ctx, Fs, SetAttr, StatFs, TimeSet};
pub use inode::{Inode, Time};

/// Largest file size, in bytes.
pub const MAX_FILE_SIZE: u64 = 1 << 56;
