//! File data: read, write, truncate, fallocate, lseek and page-sharing copies.

use super::MAX_FILE_SIZE;
use super::fs::Fs;
use super::inode::{Inode, Time};
use crate::error::{Error, Result};
use crate::ids::Ino;
use crate::page::PAGE_SIZE;

const PS: u64 = PAGE_SIZE as u64;

/// fallocate(2) mode bits.
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

/// Splits `off..off+len` into (page index, offset in page, length) pieces.
pub(super) fn pieces(off: u64, len: u64) -> impl Iterator<Item = (u64, usize, usize)> {
    let end = off + len;
    let mut pos = off;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let in_page = (pos % PS) as usize;
        let n = (PS - pos % PS).min(end - pos) as usize;
        let item = (pos / PS, in_page, n);
        pos += n as u64;
        Some(item)
    })
}

/// When reading a file updates its access time (the mount's `--atime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Atime {
    /// On the first read after a change, or when a day old (Linux's default).
    #[default]
    Relatime,
    /// On every read.
    Strict,
    /// Never.
    NoAtime,
}

/// Nanoseconds by which a time the kernel stamps may lag one of ours taken before it:
/// under the writeback cache the kernel sets mtime and ctime from its coarse clock (one
/// tick, up to 10 ms at HZ=100, behind the real time we read), so a write just after a
/// create can carry an mtime before the create's atime.
const COARSE_NS: i128 = 20_000_000;

fn ns(t: Time) -> i128 {
    i128::from(t.sec) * 1_000_000_000 + i128::from(t.nsec)
}

/// Linux's relatime: atime not after mtime or ctime (allowing for the kernel's coarse
/// clock), or a day old.
pub(super) fn relatime_due(i: &Inode, now: Time) -> bool {
    let a = ns(i.atime);
    a <= ns(i.mtime) + COARSE_NS
        || a <= ns(i.ctime) + COARSE_NS
        || now.sec - i.atime.sec >= 24 * 3600
}

/// True when a read now must update `i`'s atime under `mode`.
pub(super) fn atime_due(mode: Atime, i: &Inode, now: Time) -> bool {
    match mode {
        Atime::Relatime => relatime_due(i, now),
        Atime::Strict => true,
        Atime::NoAtime => false,
    }
}

pub(super) fn check_regular(i: Inode) -> Result<Inode> {
    if i.is_dir() {
        return Err(Error::IsDir);
    }
    if !i.is_file() {
        return Err(Error::Invalid("not a regular file"));
    }
    Ok(i)
}

impl Fs {
    pub(super) fn regular(&mut self, ino: Ino) -> Result<Inode> {
        let i = self.get(ino)?;
        check_regular(i)
    }

    /// Zeroes `off..off+len` inside one page, the copy-on-write way (holes stay holes).
    fn zero_in_page(&mut self, i: &mut Inode, idx: u64, in_page: usize, n: usize) -> Result<()> {
        if i.map.get(&mut self.store, idx)?.is_zero() {
            return Ok(());
        }
        i.map
            .write_data(&mut self.store, idx, in_page, &vec![0u8; n])
    }

    /// Turns `off..off+len` into zeros: whole pages become holes, edges are zeroed.
    fn punch(&mut self, i: &mut Inode, off: u64, len: u64) -> Result<()> {
        let end = off.saturating_add(len);
        let first_full = off.div_ceil(PS);
        let last_full = end / PS;
        if first_full < last_full {
            i.map.clear_range(&mut self.store, first_full, last_full)?;
        }
        for (idx, in_page, n) in pieces(off, len) {
            if n < PAGE_SIZE {
                self.zero_in_page(i, idx, in_page, n)?;
            }
        }
        Ok(())
    }

    /// Bytes of file data an inode record of this store holds inline (0 in a format-1
    /// store, which never inlines).
    pub(super) fn inline_cap(&self) -> u64 {
        super::itable::Layout::of(&self.store).cap as u64
    }

    /// True when file `i` may keep `size` bytes inline: the store inlines, and the file is
    /// inline already or has no pages (an empty or all-hole file without a map).
    pub(super) fn fits_inline(&self, i: &Inode, size: u64) -> bool {
        (i.is_inline() || i.map.depth == 0) && size <= self.inline_cap()
    }

    /// Gives the file `size` bytes kept inline (`size` at most the capacity: see
    /// `fits_inline`): cut or zero-extended; 0 bytes are no inline data at all.
    pub(super) fn resize_inline(i: &mut Inode, size: u64) {
        let mut d = i.inline.take().unwrap_or_default();
        // A file without a map had only holes: zeros, as `resize` fills.
        d.resize(size as usize, 0);
        i.inline = (size > 0).then_some(d);
        i.size = size;
    }

    /// Moves an inline file's bytes to a data page (index 0 of its map), so that the page
    /// machinery (growth past the capacity, fallocate, clones of ranges) takes over. A
    /// file whose bytes are all zero gets a hole.
    pub(super) fn uninline(&mut self, i: &mut Inode) -> Result<()> {
        if let Some(d) = i.inline.take()
            && d.iter().any(|&b| b != 0)
        {
            i.map.write_data(&mut self.store, 0, 0, &d)?;
        }
        Ok(())
    }

    /// Sets the size: shrinking drops pages past the end and zeroes the tail of the last.
    /// An inline file stays inline while the size fits; past the capacity its bytes move
    /// to a page first. A shrunk file with pages keeps them (it does not move back
    /// inline); a size of 0 frees everything.
    pub(super) fn truncate(&mut self, i: &mut Inode, size: u64) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return Err(Error::TooBig);
        }
        if i.is_inline() {
            if self.fits_inline(i, size) {
                Self::resize_inline(i, size);
                return Ok(());
            }
            self.uninline(i)?;
        }
        if size < i.size {
            let keep = size.div_ceil(PS);
            i.map.clear_range(&mut self.store, keep, u64::MAX)?;
            if !size.is_multiple_of(PS) {
                let n = (PS - size % PS) as usize;
                self.zero_in_page(i, size / PS, (size % PS) as usize, n)?;
            }
        }
        i.size = size;
        Ok(())
    }

    /// True when opening `ino` for reading must update its atime (changes nothing).
    pub fn atime_wanted(&mut self, ino: Ino) -> Result<bool> {
        if self.check_view_writable().is_err() {
            return Ok(false);
        }
        let i = self.peek(ino)?;
        Ok(i.is_file() && atime_due(self.atime_mode(), &i, Time::now()))
    }

    /// An open for reading counts as a read for atime: with the kernel's page cache kept
    /// across opens, reads served from it never reach us (the kernel leaves atime to FUSE
    /// daemons: their inodes are S_NOATIME). Updates atime of regular file `ino` under the
    /// mount's rule; true when it changed (the caller drops the kernel's cached copy).
    pub fn atime_on_open(&mut self, ino: Ino) -> Result<bool> {
        if !self.atime_wanted(ino)? {
            return Ok(false);
        }
        let now = Time::now();
        let mut i = self.get(ino)?;
        i.atime = now;
        self.put(ino, &i)?;
        Ok(true)
    }

    /// fallocate(2): allocate, punch a hole, or zero a range.
    pub fn fallocate(&mut self, ino: Ino, off: u64, len: u64, mode: i32) -> Result<()> {
        let mut i = self.regular(ino)?;
        let end = off.checked_add(len).ok_or(Error::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(Error::TooBig);
        }
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        let inside = len.min(i.size.saturating_sub(off));
        let zeroing = match mode & !FALLOC_FL_KEEP_SIZE {
            0 => false,
            FALLOC_FL_PUNCH_HOLE if keep => true,
            FALLOC_FL_ZERO_RANGE => true,
            _ => return Err(Error::Unsupported),
        };
        let new_size = if !keep && end > i.size { end } else { i.size };
        if i.is_inline() && zeroing && self.fits_inline(&i, new_size) {
            if let Some(d) = i.inline.as_mut() {
                let a = (off as usize).min(d.len());
                let b = ((off + inside) as usize).min(d.len());
                d[a..b].fill(0);
            }
            Self::resize_inline(&mut i, new_size);
        } else {
            // Allocating is what pages are for; a range past the capacity needs them too.
            self.uninline(&mut i)?;
            if zeroing {
                self.punch(&mut i, off, inside)?;
            } else {
                self.allocate(&mut i, off, len)?;
            }
        }
        let now = Time::now();
        if mode != 0 || (!keep && end > i.size) {
            i.mtime = now;
        }
        if !keep && end > i.size {
            i.size = end;
        }
        i.ctime = now;
        self.put(ino, &i)
    }

    /// Gives every hole page in the range a zero-filled page of its own. The pages are
    /// mapped first and zeroed after in runs of pages that follow each other in the store
    /// (one write per run, not per page); nothing can read them in between, as this runs
    /// under the lock and the gate, and a failure undoes the mapping.
    fn allocate(&mut self, i: &mut Inode, off: u64, len: u64) -> Result<()> {
        let last = (off + len).div_ceil(PS);
        let mut idx = off / PS;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        while idx < last {
            idx = match i.map.next_hole(&mut self.store, idx)? {
                h if h >= last => break,
                h => h,
            };
            let q = self.store.alloc_data()?;
            let at = self.store.data_offset(q, 0, PAGE_SIZE)?;
            i.map.set(&mut self.store, idx, q)?;
            match runs.last_mut() {
                Some((start, n)) if *start + *n == at => *n += PS,
                _ => runs.push((at, PS)),
            }
            idx += 1;
        }
        static ZEROS: [u8; 1 << 20] = [0u8; 1 << 20];
        for (start, n) in runs {
            let mut done = 0;
            while done < n {
                let k = (n - done).min(ZEROS.len() as u64);
                self.store.write_at(start + done, &ZEROS[..k as usize])?;
                done += k;
            }
        }
        Ok(())
    }

    /// lseek(2) with SEEK_DATA or SEEK_HOLE, straight from the map, unless the kernel may
    /// hold dirty pages of the file that we have not seen (`maybe_dirty`: a writer holds
    /// it, see `has_writer`, or the mount keeps no handles, and the kernel was not just
    /// made to write them back): then conservatively, everything up to the end is data,
    /// as the kernel may keep dirty pages in what the map calls holes.
    pub fn seek(&mut self, ino: Ino, off: u64, whence: i32, maybe_dirty: bool) -> Result<u64> {
        let i = self.peek(ino)?;
        if off >= i.size {
            return Err(Error::NoSuchOffset);
        }
        let cautious = maybe_dirty && i.is_file();
        match whence {
            // An inline file is data from start to end.
            libc::SEEK_DATA if i.is_inline() => Ok(off),
            libc::SEEK_HOLE if i.is_inline() => Ok(i.size),
            libc::SEEK_DATA if cautious => Ok(off),
            libc::SEEK_HOLE if cautious => Ok(i.size),
            libc::SEEK_DATA => {
                let idx = i.map.next_data(&mut self.store, off / PS)?;
                match idx.map(|d| (d * PS).max(off)) {
                    Some(pos) if pos < i.size => Ok(pos),
                    _ => Err(Error::NoSuchOffset),
                }
            }
            libc::SEEK_HOLE => {
                let h = i.map.next_hole(&mut self.store, off / PS)?;
                Ok((h.saturating_mul(PS)).max(off).min(i.size))
            }
            libc::SEEK_SET => Ok(off),
            _ => Err(Error::Invalid("bad whence")),
        }
    }

    /// copy_file_range: shares whole pages when both offsets are page-aligned, copies bytes
    /// otherwise. Returns the bytes copied.
    pub fn copy_range(
        &mut self,
        src: Ino,
        off_in: u64,
        dst: Ino,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let si = self.regular(src)?;
        let mut di = self.regular(dst)?;
        if off_in >= si.size {
            return Ok(0);
        }
        let len = len.min(si.size - off_in);
        let end_out = off_out.checked_add(len).ok_or(Error::TooBig)?;
        if end_out > MAX_FILE_SIZE {
            return Err(Error::TooBig);
        }
        if src == dst && off_in < end_out && off_out < off_in + len {
            return Err(Error::Invalid("overlapping ranges in one file"));
        }
        let mut shared = 0;
        // An inline source has no pages to share: its bytes are copied below.
        if off_in.is_multiple_of(PS) && off_out.is_multiple_of(PS) && !si.is_inline() {
            let mut pages = len / PS;
            // The source's last partial page can be shared when it also ends the target.
            if !len.is_multiple_of(PS) && off_in + len == si.size && end_out >= di.size {
                pages += 1;
            }
            if pages > 0 {
                self.uninline(&mut di)?;
            }
            let from = if src == dst { None } else { Some(&si.map) };
            di.map
                .clone_range(&mut self.store, from, off_in / PS, off_out / PS, pages)?;
            shared = (pages * PS).min(len);
        }
        let now = Time::now();
        if shared > 0 {
            di.size = di.size.max(off_out + shared);
        }
        di.mtime = now;
        di.ctime = now;
        self.put(dst, &di)?;
        let mut done = shared;
        while done < len {
            let n = (len - done).min(1 << 20) as u32;
            let buf = self.read(src, off_in + done, n)?;
            if buf.is_empty() {
                break;
            }
            done += self.write(dst, off_out + done, &buf)? as u64;
        }
        Ok(done)
    }
}
