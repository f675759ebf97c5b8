//! The memory backend: pages in anonymous memory, as a process's memory is. The page layer's
//! address spaces live here by default (`cowfs pages`); nothing in it survives the process,
//! and `sync` has nothing to do.

use super::{Backend, check_range};
use crate::{Error, Result};
use memmap2::{Advice, MmapMut, MmapOptions};
use std::borrow::Cow;

/// Address space reserved up front (MAP_NORESERVE: it costs no memory until used), so the
/// device grows in place and never remaps: 1 TiB.
const RESERVE: u64 = 1 << 40;

/// Bytes populated at a time, ahead of the highest write (2 MiB).
const CHUNK: u64 = 2 << 20;

/// Anonymous memory, reserved once and populated as writes reach it.
pub struct AnonBackend {
    map: MmapMut,
    len: u64,
    /// Bytes `0..populated` are backed by memory already.
    populated: u64,
}

impl AnonBackend {
    /// An empty device.
    pub fn new() -> Result<Self> {
        let map = MmapOptions::new()
            .len(RESERVE as usize)
            .no_reserve_swap()
            .map_anon()?;
        // 4 KiB pages, as a process's memory has by default and as bench/fork_linux.c
        // asks for: no huge-page compaction stalls, and one page of memory per store page.
        if let Err(e) = map.advise(Advice::NoHugePage) {
            log::debug!("madvise(NOHUGEPAGE): {e}");
        }
        Ok(AnonBackend {
            map,
            len: 0,
            populated: 0,
        })
    }

    /// Backs everything below `end` with memory, a chunk ahead, in one call (what
    /// MAP_POPULATE does at mmap time): page allocations are batched instead of taking a
    /// fault per page at first use. Out of memory is ENOSPC. A kernel without
    /// MADV_POPULATE_WRITE (before 5.14) faults pages in at first use instead.
    fn populate_to(&mut self, end: u64) -> Result<()> {
        if end <= self.populated {
            return Ok(());
        }
        let to = (end.next_multiple_of(CHUNK) + CHUNK).min(self.len);
        let (from, n) = (self.populated as usize, (to - self.populated) as usize);
        match self.map.advise_range(Advice::PopulateWrite, from, n) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => return Err(Error::NoSpace),
            Err(e) => log::debug!("madvise(POPULATE_WRITE): {e}"),
        }
        self.populated = to;
        Ok(())
    }
}

impl Backend for AnonBackend {
    fn len(&self) -> u64 {
        self.len
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        if len > RESERVE {
            return Err(Error::NoSpace);
        }
        if len < self.len {
            // The tail reads as zeros if the device grows again.
            let (old, new) = (self.len as usize, len as usize);
            crate::sys::drop_resident(&self.map, new, old - new)?;
            self.populated = self.populated.min(len);
        }
        self.len = len;
        Ok(())
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_range(off, buf.len(), self.len)?;
        let o = off as usize;
        buf.copy_from_slice(&self.map[o..o + buf.len()]);
        Ok(())
    }

    fn view(&self, off: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        check_range(off, len, self.len)?;
        let o = off as usize;
        Ok(Cow::Borrowed(&self.map[o..o + len]))
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        check_range(off, buf.len(), self.len)?;
        self.populate_to(off + buf.len() as u64)?;
        let o = off as usize;
        self.map[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn copy_page(&mut self, from: Option<u64>, to: u64, off: usize, data: &[u8]) -> Result<()> {
        const PS: usize = crate::page::PAGE_SIZE;
        check_range(to, PS, self.len)?;
        self.populate_to(to + PS as u64)?;
        let t = to as usize;
        match from {
            Some(f) => {
                check_range(f, PS, self.len)?;
                // Straight from page to page: no bounce buffer.
                self.map.copy_within(f as usize..f as usize + PS, t);
            }
            None => self.map[t..t + PS].fill(0),
        }
        self.map[t + off..t + off + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_shrinks_and_new_bytes_read_as_zero() {
        let mut b = AnonBackend::new().expect("anon");
        b.set_len(3 << 20).expect("grow");
        b.write(4096, b"abc").expect("write");
        let mut got = [0u8; 3];
        b.read(4096, &mut got).expect("read");
        assert_eq!(&got, b"abc");
        b.set_len(4096).expect("shrink");
        assert!(
            b.read(4096, &mut got).is_err(),
            "past the end after shrinking"
        );
        b.set_len(8192).expect("grow again");
        b.read(4096, &mut got).expect("read");
        assert_eq!(got, [0u8; 3], "bytes regrown after a shrink read as zero");
        assert!(b.set_len(RESERVE + 1).is_err());
    }
}
