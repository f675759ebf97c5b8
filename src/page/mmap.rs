//! The mmap backend: the store file mapped shared (the mapping itself is made in `sys`).

use super::{Backend, check_range};
use crate::Result;
use memmap2::MmapMut;
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};

/// A file mapped read-write and shared; the mapping is redone when the file grows.
pub struct MmapBackend {
    file: File,
    map: Option<MmapMut>,
    len: u64,
    touched: Mutex<std::collections::HashSet<u64>>,
    io: super::DataIo,
}

/// The mapping is trimmed in regions of this many bytes (2 MiB: a large folio, or a
/// fault-around window, never spans two).
const REGION_SHIFT: u32 = 21;
/// Distinct pages touched between two trims: at most 32 MiB of the mapping is touched
/// (and, with fault-around off, resident) at a time. Counting pages rather than 2 MiB
/// regions lets a metadata working set spread thinly over a large store (a map leaf and
/// a group header every few MiB) stay mapped instead of being unmapped and faulted back,
/// with a TLB shootdown each time, every few dozen requests.
const TRIM_PAGES: usize = 8192;

impl MmapBackend {
    /// Maps `file` whole.
    pub fn new(file: File) -> Result<Self> {
        let len = file.metadata()?.len();
        let io = super::DataIo::new(file.try_clone()?);
        let mut b = MmapBackend {
            io,
            file,
            map: None,
            len,
            touched: Mutex::new(std::collections::HashSet::with_capacity(TRIM_PAGES)),
        };
        b.remap()?;
        Ok(b)
    }

    fn remap(&mut self) -> Result<()> {
        self.map = None;
        if self.len == 0 {
            return Ok(());
        }
        let map = crate::sys::map_file(&self.file, self.len)?;
        // No fault-around or read-ahead: pages are read one at a time, at random.
        if let Err(e) = map.advise(memmap2::Advice::Random) {
            log::debug!("madvise(RANDOM): {e}");
        }
        self.map = Some(map);
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Notes the pages an access touches; once `TRIM_PAGES` distinct ones were touched,
    /// unmaps the 2 MiB regions holding them, so the daemon's RSS does not grow with the
    /// data it reads or writes.
    fn touch(&self, off: u64, n: usize) {
        let Some(map) = &self.map else {
            return;
        };
        let mut t = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        let ps = crate::page::PAGE_SIZE as u64;
        let last = (off + n.max(1) as u64 - 1) / ps;
        for p in off / ps..=last {
            t.insert(p);
        }
        if t.len() < TRIM_PAGES {
            return;
        }
        let shift = REGION_SHIFT - crate::page::PAGE_SIZE.trailing_zeros();
        let mut regions: Vec<u64> = t.drain().map(|p| p >> shift).collect();
        regions.sort_unstable();
        regions.dedup();
        for r in regions {
            let start = (r << REGION_SHIFT) as usize;
            let len = (1usize << REGION_SHIFT).min(map.len().saturating_sub(start));
            if len > 0
                && let Err(e) = crate::sys::drop_resident(map, start, len)
            {
                log::warn!("madvise(DONTNEED) on the store mapping failed: {e}");
            }
        }
    }
}

impl Backend for MmapBackend {
    fn len(&self) -> u64 {
        self.len
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.map = None;
        if len > self.len {
            // Reserve the blocks now: a write through the mapping into a hole of a full disk
            // would raise SIGBUS; this way a full disk is an error here instead.
            if let Err(e) = crate::sys::fallocate(&self.file, self.len, len - self.len) {
                self.remap()?;
                return Err(e.into());
            }
        }
        self.file.set_len(len)?;
        self.len = len;
        self.remap()
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_range(off, buf.len(), self.len)?;
        if buf.len() >= crate::page::PAGE_SIZE {
            // Whole pages through pread: no page faults, nothing mapped to trim later.
            self.file.read_exact_at(buf, off)?;
            return Ok(());
        }
        self.touch(off, buf.len());
        let o = off as usize;
        buf.copy_from_slice(&self.bytes()[o..o + buf.len()]);
        Ok(())
    }

    fn view(&self, off: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        check_range(off, len, self.len)?;
        self.touch(off, len);
        let o = off as usize;
        Ok(Cow::Borrowed(&self.bytes()[o..o + len]))
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        check_range(off, buf.len(), self.len)?;
        if buf.len() >= crate::page::PAGE_SIZE && off.is_multiple_of(crate::page::PAGE_SIZE as u64)
        {
            // Whole pages go through pwrite: the same page cache as the mapping (so readers
            // through the mapping see them at once), but a page that is not cached yet is
            // not first faulted in and zero-filled just to be overwritten.
            self.file.write_all_at(buf, off)?;
            return Ok(());
        }
        self.touch(off, buf.len());
        let o = off as usize;
        if let Some(map) = self.map.as_mut() {
            map[o..o + buf.len()].copy_from_slice(buf);
        }
        Ok(())
    }

    fn will_need(&self, off: u64, len: usize) {
        if let Some(map) = &self.map
            && off.saturating_add(len as u64) <= map.len() as u64
            && let Err(e) = map.advise_range(memmap2::Advice::WillNeed, off as usize, len)
        {
            log::debug!("madvise(WILLNEED): {e}");
        }
    }

    fn can_punch(&self) -> bool {
        true
    }

    fn punch(&mut self, off: u64, len: u64) -> Result<()> {
        // Legal under the shared mapping: the kernel unmaps the range and it faults back
        // in as zeros. Pages of it in `touched` are merely trimmed again later.
        super::punch_file(&self.file, self.len, off, len)
    }

    fn reserve(&mut self, off: u64, len: u64) -> Result<()> {
        super::reserve_file(&self.file, self.len, off, len)
    }

    fn data_io(&self) -> Option<super::DataIo> {
        Some(self.io.clone())
    }

    fn sync(&mut self) -> Result<()> {
        // Dirty shared-mapping pages live in the page cache: fdatasync writes them back.
        self.file.sync_data()?;
        Ok(())
    }
}
