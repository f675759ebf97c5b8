//! An in-memory backend for tests.

use super::{Backend, check_range};
use crate::Result;
use std::borrow::Cow;

/// Bytes in a `Vec`; `sync` does nothing.
#[derive(Default)]
pub struct MemBackend {
    bytes: Vec<u8>,
}

impl MemBackend {
    /// An empty device.
    pub fn new() -> Self {
        Self::default()
    }

    /// A device holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemBackend { bytes }
    }
}

impl Backend for MemBackend {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.bytes.resize(len as usize, 0);
        Ok(())
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_range(off, buf.len(), self.len())?;
        let o = off as usize;
        buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
        Ok(())
    }

    fn view(&self, off: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        check_range(off, len, self.len())?;
        let o = off as usize;
        Ok(Cow::Borrowed(&self.bytes[o..o + len]))
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        check_range(off, buf.len(), self.len())?;
        let o = off as usize;
        self.bytes[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    /// Zero-fills: memory has no holes, but the bytes read as a punched range reads.
    fn can_punch(&self) -> bool {
        true
    }

    fn punch(&mut self, off: u64, len: u64) -> Result<()> {
        check_range(off, len as usize, self.len())?;
        let o = off as usize;
        self.bytes[o..o + len as usize].fill(0);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}
