//! The inode record: 256 bytes inside an inode-table page.

use crate::ids::PageNo;
use crate::object::MapRoot;
use crate::store::layout::{get32, get64, put32, put64};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes per inode record.
pub const INODE_SIZE: usize = 256;

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    /// The current time.
    pub fn now() -> Time {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                Time {
                    sec: -(d.as_secs() as i64),
                    nsec: 0,
                }
            }
        }
    }

    /// As a `SystemTime` (for the adapter).
    pub fn to_system(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH + std::time::Duration::new(self.sec as u64, self.nsec)
        } else {
            UNIX_EPOCH - std::time::Duration::new(self.sec.unsigned_abs(), 0)
                + std::time::Duration::new(0, self.nsec)
        }
    }

    /// From a `SystemTime`.
    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Time { sec, nsec }
            }
        }
    }
}

/// An inode as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inode {
    /// Type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    /// Content: file pages, directory blocks or a symlink's target.
    pub map: MapRoot,
    /// The extended-attribute blob.
    pub xattr: MapRoot,
    pub xattr_len: u64,
    /// Directories: log2 of the bucket count.
    pub dir_bits: u8,
    /// Directories: number of entries.
    pub entries: u64,
    /// Directories: the parent directory.
    pub parent: u64,
}

impl Inode {
    /// The `S_IFMT` part of the mode.
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }

    /// True for regular files.
    pub fn is_file(&self) -> bool {
        self.file_type() == libc::S_IFREG
    }

    /// True for symlinks.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == libc::S_IFLNK
    }

    /// Encodes into a 256-byte slot.
    pub fn encode(&self, b: &mut [u8]) {
        b[..INODE_SIZE].fill(0);
        put32(b, 0, self.mode);
        put32(b, 4, self.uid);
        put32(b, 8, self.gid);
        put32(b, 12, self.nlink);
        put32(b, 16, self.rdev);
        put64(b, 24, self.size);
        for (i, t) in [self.atime, self.mtime, self.ctime, self.crtime]
            .iter()
            .enumerate()
        {
            put64(b, 32 + i * 16, t.sec as u64);
            put32(b, 40 + i * 16, t.nsec);
        }
        put64(b, 96, self.map.node.0);
        b[104] = self.map.depth;
        put64(b, 112, self.xattr.node.0);
        b[120] = self.xattr.depth;
        put64(b, 128, self.xattr_len);
        b[136] = self.dir_bits;
        put64(b, 144, self.entries);
        put64(b, 152, self.parent);
    }

    /// Decodes a slot; `None` when the slot is free.
    pub fn decode(b: &[u8]) -> Option<Inode> {
        let mode = get32(b, 0);
        if mode == 0 {
            return None;
        }
        let t = |i: usize| Time {
            sec: get64(b, 32 + i * 16) as i64,
            nsec: get32(b, 40 + i * 16),
        };
        Some(Inode {
            mode,
            uid: get32(b, 4),
            gid: get32(b, 8),
            nlink: get32(b, 12),
            rdev: get32(b, 16),
            size: get64(b, 24),
            atime: t(0),
            mtime: t(1),
            ctime: t(2),
            crtime: t(3),
            map: MapRoot {
                node: PageNo(get64(b, 96)),
                depth: b[104],
            },
            xattr: MapRoot {
                node: PageNo(get64(b, 112)),
                depth: b[120],
            },
            xattr_len: get64(b, 128),
            dir_bits: b[136],
            entries: get64(b, 144),
            parent: get64(b, 152),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut i = Inode {
            mode: libc::S_IFREG | 0o644,
            uid: 5,
            nlink: 1,
            size: 1 << 40,
            ..Default::default()
        };
        i.mtime = Time { sec: -5, nsec: 7 };
        i.map = MapRoot {
            node: PageNo(99),
            depth: 3,
        };
        let mut b = [0u8; INODE_SIZE];
        i.encode(&mut b);
        assert_eq!(Inode::decode(&b), Some(i));
        assert_eq!(Inode::decode(&[0u8; INODE_SIZE]), None);
        let t = Time { sec: -3, nsec: 500 };
        assert_eq!(Time::from_system(t.to_system()), t);
    }
}
