//! Data reads and writes: plan under the lock, copy bytes without it, finish under it
//! (`ns::io`), all inside the gate held shared.

use super::{COMMIT_BYTES, CowFuse, DataGuard};
use crate::error::Error;
use crate::ids::Ino;
use crate::ns::WriteOpts;
use fuser::Errno;

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

impl CowFuse {
    /// READ: up to `size` bytes of kernel inode `k` at `off`.
    pub(super) fn read_data(&self, k: Ino, off: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let guard = DataGuard::new(&self.gate);
        let (plan, io) = self.vcall("read", k, false, |fs, i| {
            Ok((fs.plan_read(i, off, size)?, fs.data_io()))
        })?;
        let out = match io {
            Some(io) => plan
                .execute(|o, b| io.read_at(o, b))
                .inspect_err(|e| log::error!("read: {e}"))
                .map_err(|e| errno(&e))?,
            None => self.call("read", |fs| fs.read_planned(&plan))?,
        };
        drop(guard);
        Ok(out)
    }

    /// WRITE: `data` into kernel inode `k` at `off`; the bytes written. `kill_suid`: the
    /// kernel's FUSE_WRITE_KILL_SUIDGID.
    pub(super) fn write_data(
        &self,
        k: Ino,
        off: u64,
        data: &[u8],
        kill_suid: bool,
    ) -> Result<usize, Errno> {
        let guard = DataGuard::new(&self.gate);
        let opts = WriteOpts {
            kill_suid,
            stamp_times: !self.writeback,
        };
        let (plan, io) = self.vcall("write", k, true, |fs, i| {
            Ok((fs.plan_write(i, off, data, opts)?, fs.data_io()))
        })?;
        let copied = match io {
            Some(io) => plan.runs().try_for_each(|(o, r)| io.write_at(o, &data[r])),
            None => self.call("write", |fs| Ok(fs.write_runs(&plan, data)))?,
        };
        if let Err(e) = &copied {
            log::error!("write: {e}");
        }
        if !plan.needs_finish() {
            // In place, inside the file, times kept by the kernel: nothing to record.
            drop(guard);
            return copied.map(|()| plan.len()).map_err(|e| errno(&e));
        }
        let (answer, commit) = self.vcall("write", k, true, |fs, _| {
            let a = fs.finish_write(plan, copied)?;
            Ok((a, fs.over_commit_limit(COMMIT_BYTES)))
        })?;
        drop(guard);
        if commit {
            // Outside the gate: the commit waits for the copies in flight.
            self.write_back();
            let _ = self.call("commit", |fs| fs.commit_if_over(COMMIT_BYTES));
        }
        answer.map_err(|e| errno(&e))
    }
}
