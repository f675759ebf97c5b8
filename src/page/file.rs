//! The pread/pwrite backend: the reference implementation, and the journal's device.

use super::{Backend, check_range};
use crate::Result;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// A plain file accessed with positioned reads and writes.
pub struct FileBackend {
    file: File,
    len: u64,
}

impl FileBackend {
    /// Wraps an open read-write file.
    pub fn new(file: File) -> Result<Self> {
        let len = file.metadata()?.len();
        Ok(FileBackend { file, len })
    }
}

impl Backend for FileBackend {
    fn len(&self) -> u64 {
        self.len
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_range(off, buf.len(), self.len)?;
        self.file.read_exact_at(buf, off)?;
        Ok(())
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        check_range(off, buf.len(), self.len)?;
        self.file.write_all_at(buf, off)?;
        Ok(())
    }

    fn can_punch(&self) -> bool {
        true
    }

    fn punch(&mut self, off: u64, len: u64) -> Result<()> {
        super::punch_file(&self.file, self.len, off, len)
    }

    fn reserve(&mut self, off: u64, len: u64) -> Result<()> {
        super::reserve_file(&self.file, self.len, off, len)
    }

    fn sync(&mut self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }
}
