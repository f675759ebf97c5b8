//! The mmap backend: the store file mapped shared (the mapping itself is made in `sys`).

use super::{Backend, check_range};
use crate::Result;
use memmap2::MmapMut;
use std::borrow::Cow;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

/// A file mapped read-write and shared; the mapping is redone when the file grows.
pub struct MmapBackend {
    file: File,
    map: Option<MmapMut>,
    len: u64,
    touched: AtomicU64,
}

/// Bytes accessed through the mapping between two trims of the resident set.
const TRIM_BYTES: u64 = 64 << 20;

impl MmapBackend {
    /// Maps `file` whole.
    pub fn new(file: File) -> Result<Self> {
        let len = file.metadata()?.len();
        let mut b = MmapBackend {
            file,
            map: None,
            len,
            touched: AtomicU64::new(0),
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
        self.map = Some(map);
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Counts bytes accessed; past `TRIM_BYTES`, unmaps every resident page so the
    /// daemon's RSS does not grow with the data it has touched.
    fn touch(&self, n: usize) {
        if self.touched.fetch_add(n as u64, Ordering::Relaxed) + n as u64 >= TRIM_BYTES {
            self.touched.store(0, Ordering::Relaxed);
            if let Some(map) = &self.map
                && let Err(e) = crate::sys::drop_resident(map)
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
        self.touch(buf.len());
        let o = off as usize;
        buf.copy_from_slice(&self.bytes()[o..o + buf.len()]);
        Ok(())
    }

    fn view(&self, off: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        check_range(off, len, self.len)?;
        self.touch(len);
        let o = off as usize;
        Ok(Cow::Borrowed(&self.bytes()[o..o + len]))
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        check_range(off, buf.len(), self.len)?;
        self.touch(buf.len());
        let o = off as usize;
        if let Some(map) = self.map.as_mut() {
            map[o..o + buf.len()].copy_from_slice(buf);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        // Dirty shared-mapping pages live in the page cache: fdatasync writes them back.
        self.file.sync_data()?;
        Ok(())
    }
}
