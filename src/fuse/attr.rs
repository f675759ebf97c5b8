//! Conversions between namespace values and fuser's types.

use crate::ids::Ino;
use crate::ns::{Inode, Time, TimeSet};
use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

/// The fuser file type of a mode.
pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The fuser file type of a directory-entry kind byte.
pub fn kind_type(kind: u8) -> FileType {
    file_type((kind as u32) << 12)
}

/// Attributes as the kernel wants them; `pages` is the count of data pages.
pub fn file_attr(ino: Ino, i: &Inode, pages: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino.0),
        size: i.size,
        // Inline bytes take no page: their own size in 512-byte units (never 0 for a
        // file with data, or `cp` takes it for sparse).
        blocks: if i.is_inline() {
            i.size.div_ceil(512)
        } else {
            pages * 8
        },
        atime: i.atime.to_system(),
        mtime: i.mtime.to_system(),
        ctime: i.ctime.to_system(),
        crtime: i.crtime.to_system(),
        kind: file_type(i.mode),
        perm: (i.mode & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// A setattr time.
pub fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(Time::from_system(s)),
    }
}
