//! The POSIX namespace over the page store: inodes, directories, symlinks, xattrs, open
//! handles, and file data through copy-on-write maps. No fuser types here.

mod blob;
mod clone;
mod data;
mod dedup;
pub mod dir;
mod fs;
pub mod inode;
mod io;
pub mod itable;
mod names;
pub mod perm;
mod snap;
mod space;
mod tree;
mod xattr;

pub use clone::{Begun, CloneOpts, Invalidate, StepBudget, TreeClone};
pub use data::Atime;
pub use dedup::{DedupStats, RunKey};
pub use fs::{Ctx, Fs, SetAttr, StatFs, TimeSet};
pub use inode::{Inode, Time};
pub use io::{ReadPlan, WriteOpts, WritePlan};
pub use snap::{
    NAME_MAX as SNAP_NAME_MAX, SnapInfo, SnapRec, list_root as snap_list_root, load as snap_load,
};
pub use space::{Space, SpaceWalk, StatsWalk, StoreStats};
/// Decoders of private modules, for `crate::fuzzing`.
pub(crate) use {
    blob::check_page as blob_check_page, snap::decode as snap_decode, xattr::parse as xattr_parse,
};

/// Largest file size, in bytes.
pub const MAX_FILE_SIZE: u64 = 1 << 56;
