//! The inode record inside an inode-table page: 256 bytes in a format-1 store, 576 in a
//! format-2 store, whose records carry a small file's bytes inline after the fixed fields.

use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::object::{MAX_DEPTH, MapRoot};
use crate::store::layout::{get32, get64, put32, put64};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes per inode record in a format-1 store.
pub const INODE_SIZE: usize = 256;
/// Bytes per inode record in a format-2 store: the fixed fields, then inline data.
pub const INODE_SIZE_V2: usize = 576;
/// Bytes of fixed fields at the start of a record; inline data follows them.
pub const INODE_FIXED: usize = 160;
/// Offset of the flags byte.
const OFF_FLAGS: usize = 105;
/// Flag: the file's bytes are in the record (`Inode::inline`), its map is empty.
const FLAG_INLINE: u8 = 1;

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
    /// Regular files and symlinks of a format-2 store: the file's bytes or the target
    /// (exactly `size` of them, 1 up to the record's inline capacity), kept in the record
    /// instead of pages; the map is then empty. `None` for every other inode.
    pub inline: Option<Vec<u8>>,
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

    /// True when the file's bytes are in its record.
    pub fn is_inline(&self) -> bool {
        self.inline.is_some()
    }

    /// Encodes into a record slot (the whole of `b`: 256 or 576 bytes). The caller has
    /// checked that inline bytes fit (`itable::put_in`); any that do not are cut off.
    pub fn encode(&self, b: &mut [u8]) {
        b.fill(0);
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
        if let Some(d) = &self.inline {
            b[OFF_FLAGS] = FLAG_INLINE;
            let room = b.len().saturating_sub(INODE_FIXED);
            let n = d.len().min(room);
            b[INODE_FIXED..INODE_FIXED + n].copy_from_slice(&d[..n]);
        }
    }

    /// Checks a record decoded from inode page `p`: a known file type and no mode bits
    /// above the permission bits, nanoseconds below 10^9, map depths at most `MAX_DEPTH`
    /// (a root page only with a depth), a symlink target of 1..=4095 bytes, a size at most
    /// 64 PiB, an xattr blob at most 1 MiB and `dir_bits` at most 32; inline data only in
    /// a regular file with an empty map, 1..=`cap` bytes (`cap` is the store's inline
    /// capacity: 0 in a format-1 store). Every later use of these values (shifts,
    /// allocations, walks) relies on it.
    pub fn check(&self, p: PageNo, cap: usize) -> Result<()> {
        self.check_fields(cap)
            .map_err(|why| Error::corrupt(p.0, format!("inode record: {why}")))
    }

    /// The inline part of `check`: inline data only in a regular file or a symlink without
    /// a map, of 1..=`cap` bytes, exactly its size (fsck asks this of records it reads
    /// unchecked).
    pub fn check_inline(&self, cap: usize) -> std::result::Result<(), String> {
        let Some(d) = &self.inline else {
            return Ok(());
        };
        if !(self.is_file() || self.is_symlink()) || self.map.depth != 0 {
            return Err(
                "inline data in an inode that is not a file or symlink without pages".into(),
            );
        }
        if self.size == 0 || self.size > cap as u64 || d.len() as u64 != self.size {
            return Err(format!(
                "inline size {} (capacity {cap}, {} bytes)",
                self.size,
                d.len()
            ));
        }
        Ok(())
    }

    fn check_fields(&self, cap: usize) -> std::result::Result<(), String> {
        self.check_inline(cap)?;
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

    /// Decodes the record of `len` bytes at `off` of inode page `p` and checks it
    /// (`check`, with inline capacity `cap`), and that the bytes after the inline data and
    /// the flags byte's unused bits are zero; `None` when the slot is free.
    pub fn decode_checked(
        p: PageNo,
        b: &[u8],
        off: usize,
        len: usize,
        cap: usize,
    ) -> Result<Option<Inode>> {
        let rec = b
            .get(off..off + len)
            .ok_or_else(|| Error::corrupt(p.0, "inode record past the page"))?;
        let Some(i) = Inode::decode(rec) else {
            return Ok(None);
        };
        i.check(p, cap)?;
        let used = INODE_FIXED + i.inline.as_ref().map_or(0, Vec::len);
        if rec[OFF_FLAGS] & !FLAG_INLINE != 0 || rec[used.min(len)..].iter().any(|&x| x != 0) {
            return Err(Error::corrupt(
                p.0,
                "inode record: unknown flags or bytes after its data",
            ));
        }
        Ok(Some(i))
    }

    /// Decodes a record slot (the whole of `b`), unchecked (fsck and the reclaimer look at
    /// records as they are); `None` when the slot is free. Inline data is cut to what the
    /// slot holds. Readers that act on a record use `decode_checked`.
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
            inline: (b[OFF_FLAGS] & FLAG_INLINE != 0).then(|| {
                let room = b.len().saturating_sub(INODE_FIXED) as u64;
                let n = get64(b, 24).min(room) as usize;
                b[INODE_FIXED..INODE_FIXED + n].to_vec()
            }),
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
    fn inline_bytes_roundtrip_and_are_checked() {
        let cap = INODE_SIZE_V2 - INODE_FIXED;
        let i = Inode {
            mode: libc::S_IFREG | 0o644,
            nlink: 1,
            size: 3,
            inline: Some(b"abc".to_vec()),
            ..Default::default()
        };
        let mut b = vec![0u8; INODE_SIZE_V2];
        i.encode(&mut b);
        assert_eq!(Inode::decode(&b), Some(i.clone()));
        let ok = Inode::decode_checked(PageNo(4), &b, 0, INODE_SIZE_V2, cap);
        assert_eq!(ok.expect("checked"), Some(i.clone()));
        // A format-1 store holds nothing inline.
        assert!(Inode::decode_checked(PageNo(4), &b[..INODE_SIZE], 0, INODE_SIZE, 0).is_err());
        let corrupt = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut c = b.clone();
            f(&mut c);
            Inode::decode_checked(PageNo(4), &c, 0, INODE_SIZE_V2, cap).is_err()
        };
        assert!(
            corrupt(&|c| put64(c, 24, cap as u64 + 1)),
            "past the capacity"
        );
        assert!(corrupt(&|c| put64(c, 24, 0)), "inline and empty");
        assert!(corrupt(&|c| c[INODE_FIXED + 3] = 1), "a byte past the size");
        assert!(corrupt(&|c| c[OFF_FLAGS] |= 2), "an unknown flag");
        assert!(corrupt(&|c| c[104] = 1), "inline and a map");
        assert!(
            corrupt(&|c| put32(c, 0, libc::S_IFDIR | 0o755)),
            "a directory"
        );
    }

    #[test]
    fn check_rejects_out_of_range_fields() {
        let good = Inode {
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            dir_bits: 3,
            ..Default::default()
        };
        assert!(good.check(PageNo(4), 0).is_ok());
        let lnk = Inode {
            mode: libc::S_IFLNK | 0o777,
            size: 10,
            ..Default::default()
        };
        assert!(lnk.check(PageNo(4), 0).is_ok());
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
                matches!(i.check(PageNo(4), 0), Err(Error::Corrupt { page: 4, .. })),
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
