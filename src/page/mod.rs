//! Bytes <-> pages: the storage backends.

mod anon;
mod crash;
mod fault;
mod file;
mod mem;
mod mmap;

pub use anon::AnonBackend;
pub use crash::{CrashBackend, CrashImage, SyncLog};
pub use fault::{FaultBackend, Faults};
pub use file::FileBackend;
pub use mem::MemBackend;
pub use mmap::MmapBackend;

use crate::Result;
use std::borrow::Cow;

/// Size of every page, in bytes.
pub const PAGE_SIZE: usize = 4096;

/// A page-sized byte buffer.
pub type PageBuf = [u8; PAGE_SIZE];

/// A flat, growable byte device. Offsets are bytes; all calls stay inside `len()`.
pub trait Backend: Send + Sync {
    /// Current length in bytes.
    fn len(&self) -> u64;
    /// True when the device holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Grow or shrink to `len` bytes; new bytes read as zero.
    fn set_len(&mut self, len: u64) -> Result<()>;
    /// Copy bytes at `off` into `buf`.
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()>;
    /// Borrow `len` bytes at `off` when the backend can (mmap), else copy them.
    fn view(&self, off: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        let mut v = vec![0u8; len];
        self.read(off, &mut v)?;
        Ok(Cow::Owned(v))
    }
    /// Copy `buf` to `off`.
    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()>;
    /// Fills the page at `to` with the page at `from` (zeros when `None`) with `data` laid
    /// over it at byte `off`: a copy-on-write copy. The pages do not overlap, and
    /// `off + data.len()` is at most a page.
    fn copy_page(&mut self, from: Option<u64>, to: u64, off: usize, data: &[u8]) -> Result<()> {
        let mut buf = [0u8; PAGE_SIZE];
        if let Some(from) = from {
            buf.copy_from_slice(&self.view(from, PAGE_SIZE)?);
        }
        buf[off..off + data.len()].copy_from_slice(data);
        // One whole-page write (pwrite on the mmap backend: the new page is not faulted in).
        self.write(to, &buf)
    }
    /// Make every write so far durable.
    fn sync(&mut self) -> Result<()>;
    /// Starts reading `len` bytes at `off` into memory in the background (a hint; backends
    /// that are memory already ignore it).
    fn will_need(&self, _off: u64, _len: usize) {}
    /// A handle for positioned I/O from many threads without `&mut self`, if the backend
    /// is a plain file.
    fn data_io(&self) -> Option<DataIo> {
        None
    }
    /// True when `punch` gives bytes back to the host (or, in tests, zeroes them): the
    /// store then keeps a list of freed runs to punch. False (the default): it keeps none.
    fn can_punch(&self) -> bool {
        false
    }
    /// Gives the bytes of `off..off+len` (whole pages, inside `len()`) back to the host:
    /// they read as zeros afterwards and take no space on the host's disk. The length does
    /// not change. The default does nothing: a backend that cannot says so in `can_punch`.
    fn punch(&mut self, _off: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    /// Gives `off..off+len` its blocks on the host again after a `punch`, so a full host
    /// disk is an error now rather than when the bytes are written (a write through a
    /// mapping into a hole of a full disk would be SIGBUS). The default does nothing.
    fn reserve(&mut self, _off: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    /// Asked by the store before each page allocation: an error fails the allocation (a
    /// test backend injects ENOSPC here; real devices always agree).
    fn check_alloc(&self) -> Result<()> {
        Ok(())
    }
}

/// Positioned reads and writes of the store file from any thread, no lock needed (a
/// duplicate of the backend's descriptor). What may be read or written, and when, is the
/// caller's business (see `ns::io`).
#[derive(Debug, Clone)]
pub struct DataIo(std::sync::Arc<std::fs::File>);

impl DataIo {
    /// Wraps an open store file.
    pub fn new(file: std::fs::File) -> Self {
        DataIo(std::sync::Arc::new(file))
    }

    /// Reads `buf.len()` bytes at `off`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, off)?;
        Ok(())
    }

    /// Writes `buf` at `off`.
    pub fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(buf, off)?;
        Ok(())
    }

    /// Writes every dirty page of the store file back to the disk and waits for it, but
    /// makes nothing durable: a commit's own fdatasync still does that. Run without the
    /// filesystem's locks before a commit, it leaves the commit little left to write.
    pub fn write_back(&self) -> Result<()> {
        crate::sys::write_back(&*self.0)?;
        Ok(())
    }
}

/// `Backend::punch` for a backend over `file` of `size` bytes.
pub(crate) fn punch_file(file: &std::fs::File, size: u64, off: u64, len: u64) -> Result<()> {
    check_range(off, len as usize, size)?;
    crate::sys::punch_hole(file, off, len)?;
    Ok(())
}

/// `Backend::reserve` for a backend over `file` of `size` bytes.
pub(crate) fn reserve_file(file: &std::fs::File, size: u64, off: u64, len: u64) -> Result<()> {
    check_range(off, len as usize, size)?;
    crate::sys::fallocate(file, off, len)?;
    Ok(())
}

/// Checks that `off..off+len` lies inside a device of `size` bytes.
pub(crate) fn check_range(off: u64, len: usize, size: u64) -> Result<()> {
    match off.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(crate::Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("access {off}+{len} past the end ({size})"),
        ))),
    }
}
