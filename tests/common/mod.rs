//! Shared by the integration tests that mount: the `cowfs` binary, and `Mount`, a mounted
//! store that is unmounted (and its daemon stopped) when dropped, even on a failed assert.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_cowfs");

pub fn cowfs(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run cowfs")
}

pub fn is_root() -> bool {
    // Mounting without fusermount3 needs root; the CI runs as root.
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A mounted store that is unmounted (and its daemon stopped) on drop.
pub struct Mount {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub mnt: PathBuf,
    /// Extra `cowfs mount` options.
    pub opts: Vec<String>,
}

impl Mount {
    pub fn new() -> Mount {
        Mount::with_opts(&[])
    }

    /// A fresh store mounted with extra `cowfs mount` options.
    pub fn with_opts(opts: &[&str]) -> Mount {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = tmp.path().join("store");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).expect("mkdir");
        let opts = opts.iter().map(|o| o.to_string()).collect();
        let m = Mount {
            tmp,
            store,
            mnt,
            opts,
        };
        m.mount();
        m
    }

    /// Mounts an existing store kept in `tmp`.
    pub fn at(tmp: tempfile::TempDir, store: PathBuf) -> Mount {
        let mnt = tmp.path().join("mnt");
        fs::create_dir_all(&mnt).expect("mkdir");
        let m = Mount {
            tmp,
            store,
            mnt,
            opts: Vec::new(),
        };
        m.mount();
        m
    }

    pub fn mount(&self) {
        let mut args = vec!["mount"];
        args.extend(self.opts.iter().map(String::as_str));
        args.extend([self.s(&self.store), self.s(&self.mnt)]);
        let out = cowfs(&args);
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn umount(&self) {
        let out = cowfs(&["umount", self.s(&self.mnt)]);
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn s<'a>(&self, p: &'a Path) -> &'a str {
        p.to_str().expect("utf-8 path")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// Unmounts, then asserts that `cowfs fsck` finds the store clean (exit 0).
    pub fn umount_and_fsck_clean(&self) {
        self.umount();
        self.fsck_clean();
    }

    /// Asserts that `cowfs fsck` finds the (unmounted) store clean (exit 0).
    pub fn fsck_clean(&self) {
        let out = cowfs(&["fsck", self.s(&self.store)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "fsck: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the daemon with SIGKILL, waits for it to go, and detaches the dead mount, so
    /// that `mount` can mount the store again.
    pub fn kill9(&self) {
        let pid = self.daemon_pid().expect("daemon pid");
        assert!(
            Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status()
                .expect("kill")
                .success()
        );
        for _ in 0..500 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(format!("mount --foreground .* {}$", self.mnt.display()))
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let pid = self.daemon_pid();
        let ok = cowfs(&["umount", "--lazy", self.s(&self.mnt)])
            .status
            .success();
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        }
        if let Some(pid) = pid {
            for _ in 0..500 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

pub fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

pub fn statvfs_used(p: &Path) -> u64 {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (st.f_blocks - st.f_bfree) * st.f_frsize
}
