//! A fault-injecting backend for tests: wraps another backend and fails the Nth page
//! allocation with ENOSPC (the store asks its page device before each one, see
//! `Backend::check_alloc`) or the Nth write or sync with EIO. Several backends (the page
//! file and the journal) may share one `Faults`, so "the Nth write" counts across both.

use super::Backend;
use crate::Result;
use crate::error::Error;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The failure plan and the counts, shared between the backends and the test.
#[derive(Debug, Default)]
struct FaultPlan {
    allocs: AtomicU64,
    ios: AtomicU64,
    /// Fail the allocation with this number (1-based; 0: none).
    alloc_at: AtomicU64,
    /// Fail the write or sync with this number (1-based; 0: none).
    io_at: AtomicU64,
    fired: AtomicBool,
}

/// A handle on a `FaultPlan`.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<FaultPlan>);

impl Faults {
    /// A plan that fails nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, fails the `n`th allocation (1: the next one) with ENOSPC, once.
    pub fn fail_alloc(&self, n: u64) {
        self.disarm();
        self.0.alloc_at.store(n, Ordering::SeqCst);
    }

    /// From now on, fails the `n`th write or sync (1: the next one) with EIO, once.
    pub fn fail_io(&self, n: u64) {
        self.disarm();
        self.0.io_at.store(n, Ordering::SeqCst);
    }

    /// Fails nothing more and restarts the counts.
    pub fn disarm(&self) {
        let p = &self.0;
        p.alloc_at.store(0, Ordering::SeqCst);
        p.io_at.store(0, Ordering::SeqCst);
        p.allocs.store(0, Ordering::SeqCst);
        p.ios.store(0, Ordering::SeqCst);
        p.fired.store(false, Ordering::SeqCst);
    }

    /// True once the planned failure happened.
    pub fn fired(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    fn step(&self, count: &AtomicU64, at: &AtomicU64, err: impl FnOnce() -> Error) -> Result<()> {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == at.load(Ordering::SeqCst) {
            self.0.fired.store(true, Ordering::SeqCst);
            return Err(err());
        }
        Ok(())
    }

    fn alloc(&self) -> Result<()> {
        self.step(&self.0.allocs, &self.0.alloc_at, || Error::NoSpace)
    }

    fn io(&self) -> Result<()> {
        self.step(&self.0.ios, &self.0.io_at, || {
            Error::Io(std::io::Error::from_raw_os_error(libc::EIO))
        })
    }
}

/// A backend that passes everything to `inner` but fails what `faults` plans.
pub struct FaultBackend {
    inner: Box<dyn Backend>,
    faults: Faults,
}

impl FaultBackend {
    /// Wraps `inner`; `faults` decides what fails.
    pub fn new(inner: Box<dyn Backend>, faults: Faults) -> Self {
        FaultBackend { inner, faults }
    }
}

impl Backend for FaultBackend {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.inner.set_len(len)
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read(off, buf)
    }

    fn view(&self, off: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        self.inner.view(off, len)
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        self.faults.io()?;
        self.inner.write(off, buf)
    }

    fn copy_page(&mut self, from: Option<u64>, to: u64, off: usize, data: &[u8]) -> Result<()> {
        self.faults.io()?;
        self.inner.copy_page(from, to, off, data)
    }

    fn sync(&mut self) -> Result<()> {
        self.faults.io()?;
        self.inner.sync()
    }

    fn can_punch(&self) -> bool {
        self.inner.can_punch()
    }

    fn punch(&mut self, off: u64, len: u64) -> Result<()> {
        self.inner.punch(off, len)
    }

    fn reserve(&mut self, off: u64, len: u64) -> Result<()> {
        self.inner.reserve(off, len)
    }

    fn check_alloc(&self) -> Result<()> {
        self.faults.alloc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::MemBackend;

    #[test]
    fn fails_the_planned_call_once() {
        let f = Faults::new();
        let mut b = FaultBackend::new(Box::new(MemBackend::from_bytes(vec![0; 8])), f.clone());
        f.fail_io(2);
        b.write(0, &[1]).expect("first write");
        assert!(!f.fired());
        assert_eq!(b.sync().map_err(|e| e.errno()), Err(libc::EIO));
        assert!(f.fired());
        b.write(1, &[2]).expect("third write");
        f.fail_alloc(1);
        assert_eq!(b.check_alloc().map_err(|e| e.errno()), Err(libc::ENOSPC));
        b.check_alloc().expect("second allocation");
        let mut buf = [0u8; 2];
        b.read(0, &mut buf).expect("read");
        assert_eq!(buf, [1, 2]);
    }
}
