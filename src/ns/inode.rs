//! The inode record: 256 bytes inside an inode-table page.

use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::object::{MAX_DEPTH, MapRoot};
use crate::store::layout::{get32, get64, put32, put64};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes per inode record.
pub const INODE_SIZE: usize = 256;

/// The largest nanosecond field.
const NSEC_MAX: u32 = 999_999_999;
/// The longest symlink target, in bytes.
pub const SYMLINK_MAX: u64 = 4095;
/// The largest file (64 PiB): 2^56 bytes.
pub const FILE_MAX: u64 = 1 << 56;
/// The largest xattr blob of an inode (1 MiB).
pub const XATTR_MAX: u64 = 1 << 20;
/// The largest `dir_bits` (a directory's table stops doubling there).
pub const DIR_BITS_MAX: u8 = 32;

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    /// The current time.
    pub fn now() -> Time {
        // The kernel's clock: with the writeback cache it stamps mtime and ctime itself
        // with it, and a write in the same tick as the create then changes no time, so
        // the kernel has no times to send back with a SETATTR at close.
        if let Some((sec, nsec)) = crate::sys::coarse_now() {
            return Time { sec, nsec };
        }
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

    /// As a `SystemTime` (for the adapter). Total: a time the host cannot show (only a
    /// corrupt record holds one) comes out as the epoch instead of a panic.
    pub fn to_system(self) -> SystemTime {
        let nsec = std::time::Duration::new(0, self.nsec.min(NSEC_MAX));
        let t = if self.sec >= 0 {
            UNIX_EPOCH.checked_add(std::time::Duration::from_secs(self.sec as u64))
        } else {
            UNIX_EPOCH.checked_sub(std::time::Duration::from_secs(self.sec.unsigned_abs()))
        };
        t.and_then(|t| t.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
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

    /// Checks a record decoded from inode page `p`: a known file type and no mode bits
    /// above the permission bits, nanoseconds below 10^9, map depths at most `MAX_DEPTH`
    /// (a root page only with a depth), a symlink target of 1..=4095 bytes, a size at most
    /// 64 PiB, an xattr blob at most 1 MiB and `dir_bits` at most 32. Every later use of
    /// these values (shifts, allocations, walks) relies on it.
    pub fn check(&self, p: PageNo) -> Result<()> {
        self.check_fields()
            .map_err(|why| Error::corrupt(p.0, format!("inode record: {why}")))
    }

    fn check_fields(&self) -> std::result::Result<(), String> {
        const TYPES: [u32; 7] = [
            libc::S_IFREG,
            libc::S_IFDIR,
            libc::S_IFLNK,
            libc::S_IFCHR,
            libc::S_IFBLK,
            libc::S_IFIFO,
            libc::S_IFSOCK,
        ];
        if !TYPES.contains(&self.file_type()) || self.mode & !(libc::S_IFMT | 0o7777) != 0 {
            return Err(format!("mode {:#o}", self.mode));
        }
        for t in [self.atime, self.mtime, self.ctime, self.crtime] {
            if t.nsec > NSEC_MAX {
                return Err(format!("{} nanoseconds", t.nsec));
            }
        }
        for (what, m) in [("content", self.map), ("xattr", self.xattr)] {
            if m.depth > MAX_DEPTH || (m.depth == 0 && !m.node.is_zero()) {
                return Err(format!(
                    "{what} map of depth {} at page {}",
                    m.depth, m.node.0
                ));
            }
        }
        let size_ok = if self.is_symlink() {
            (1..=SYMLINK_MAX).contains(&self.size)
        } else {
            self.size <= FILE_MAX
        };
        if !size_ok {
            return Err(format!("size {}", self.size));
        }
        if self.xattr_len > XATTR_MAX {
            return Err(format!("xattr length {}", self.xattr_len));
        }
        if self.dir_bits > DIR_BITS_MAX {
            return Err(format!("dir_bits {}", self.dir_bits));
        }
        Ok(())
    }

    /// Decodes the record at `off` of inode page `p` and checks it (`check`); `None` when
    /// the slot is free.
    pub fn decode_checked(p: PageNo, b: &[u8], off: usize) -> Result<Option<Inode>> {
        let rec = b
            .get(off..off + INODE_SIZE)
            .ok_or_else(|| Error::corrupt(p.0, "inode record past the page"))?;
        match Inode::decode(rec) {
            Some(i) => i.check(p).map(|()| Some(i)),
            None => Ok(None),
        }
    }

    /// Decodes a slot, unchecked (fsck and the reclaimer look at records as they are);
    /// `None` when the slot is free. Readers that act on a record use `decode_checked`.
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

    #[test]
    fn check_rejects_out_of_range_fields() {
        let good = Inode {
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            dir_bits: 3,
            ..Default::default()
        };
        assert!(good.check(PageNo(4)).is_ok());
        let lnk = Inode {
            mode: libc::S_IFLNK | 0o777,
            size: 10,
            ..Default::default()
        };
        assert!(lnk.check(PageNo(4)).is_ok());
        let deep = MapRoot {
            node: PageNo(9),
            depth: MAX_DEPTH + 1,
        };
        let bad = [
            Inode {
                mode: 0o170755,
                ..good.clone()
            },
            Inode {
                mode: libc::S_IFREG | 0o10000,
                ..good.clone()
            },
            Inode {
                dir_bits: 33,
                ..good.clone()
            },
            Inode {
                map: deep,
                ..good.clone()
            },
            Inode {
                xattr: MapRoot {
                    node: PageNo(9),
                    depth: 0,
                },
                ..good.clone()
            },
            Inode {
                xattr_len: XATTR_MAX + 1,
                ..good.clone()
            },
            Inode {
                size: FILE_MAX + 1,
                ..good.clone()
            },
            Inode {
                size: 0,
                ..lnk.clone()
            },
            Inode {
                size: 4096,
                ..lnk.clone()
            },
            Inode {
                mtime: Time {
                    sec: 0,
                    nsec: 1_000_000_000,
                },
                ..good.clone()
            },
        ];
        for i in bad {
            assert!(
                matches!(i.check(PageNo(4)), Err(Error::Corrupt { page: 4, .. })),
                "{i:?}"
            );
        }
        // A time the host cannot show does not panic.
        let _ = Time {
            sec: i64::MAX,
            nsec: u32::MAX,
        }
        .to_system();
        let _ = Time {
            sec: i64::MIN,
            nsec: 5,
        }
        .to_system();
    }
}
