//! A crash backend for tests: keeps what a completed `sync` made durable, apart from what
//! was merely written. A simulated crash keeps only the durable image.

use super::{Backend, check_range};
use crate::Result;
use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

/// The durable image shared with the test, which reads it after a "crash".
#[derive(Clone, Default)]
pub struct CrashImage(Arc<Mutex<Vec<u8>>>);

impl CrashImage {
    /// A copy of what survived the last sync.
    pub fn durable(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Every durable image made by a set of crash backends, in sync order: (device id, image).
/// Cutting the history after entry `k` gives the disks as a crash right then leaves them.
pub type SyncLog = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

/// Live bytes plus a durable image updated only by `sync`.
pub struct CrashBackend {
    live: Vec<u8>,
    durable: CrashImage,
    syncs: Arc<Mutex<u64>>,
    log: Option<(SyncLog, usize)>,
}

impl CrashBackend {
    /// Starts from `bytes`, all of them durable.
    pub fn new(bytes: Vec<u8>) -> Self {
        let durable = CrashImage(Arc::new(Mutex::new(bytes.clone())));
        CrashBackend {
            live: bytes,
            durable,
            syncs: Arc::default(),
            log: None,
        }
    }

    /// Also records every durable image in `log`, tagged with device `id`.
    pub fn logged(bytes: Vec<u8>, log: SyncLog, id: usize) -> Self {
        let mut b = CrashBackend::new(bytes);
        b.log = Some((log, id));
        b
    }

    /// The image device `id` had after the first `k` entries of `log` (empty if none).
    pub fn image_at(log: &SyncLog, k: usize, id: usize) -> Vec<u8> {
        let l = log.lock().unwrap_or_else(PoisonError::into_inner);
        l[..k.min(l.len())]
            .iter()
            .rev()
            .find(|(d, _)| *d == id)
            .map(|(_, img)| img.clone())
            .unwrap_or_default()
    }

    /// The handle on the durable image.
    pub fn image(&self) -> CrashImage {
        self.durable.clone()
    }

    /// A counter of completed syncs, shared with the test.
    pub fn sync_counter(&self) -> Arc<Mutex<u64>> {
        self.syncs.clone()
    }
}

impl Backend for CrashBackend {
    fn len(&self) -> u64 {
        self.live.len() as u64
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.live.resize(len as usize, 0);
        Ok(())
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        check_range(off, buf.len(), self.len())?;
        let o = off as usize;
        buf.copy_from_slice(&self.live[o..o + buf.len()]);
        Ok(())
    }

    fn view(&self, off: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        check_range(off, len, self.len())?;
        let o = off as usize;
        Ok(Cow::Borrowed(&self.live[o..o + len]))
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        check_range(off, buf.len(), self.len())?;
        let o = off as usize;
        self.live[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    /// Zero-fills the live bytes; the durable image keeps the old ones until a sync, as a
    /// host file system may lose a punch that no sync made durable.
    fn can_punch(&self) -> bool {
        true
    }

    fn punch(&mut self, off: u64, len: u64) -> Result<()> {
        check_range(off, len as usize, self.len())?;
        let o = off as usize;
        self.live[o..o + len as usize].fill(0);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        *self
            .durable
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.live.clone();
        *self.syncs.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        if let Some((log, id)) = &self.log {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((*id, self.live.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes() {
        let mut b = CrashBackend::new(vec![0; 8]);
        let img = b.image();
        b.write(0, &[1, 2]).expect("write");
        b.sync().expect("sync");
        b.write(2, &[3]).expect("write");
        assert_eq!(img.durable(), vec![1, 2, 0, 0, 0, 0, 0, 0]);
        let mut buf = [0u8; 3];
        b.read(0, &mut buf).expect("read");
        assert_eq!(buf, [1, 2, 3]);
        assert!(b.write(7, &[1, 2]).is_err());
    }
}
