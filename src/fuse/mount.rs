//! Putting the FUSE session in place. As root cowfs calls mount(2) itself, as `mount.fuse3`
//! does, so the mount table shows the type `fuse.cowfs` and the store as the source (fuser
//! 0.18's own root path always says plain `fuse` and drops the subtype). Other users go
//! through fuser and `fusermount3`, which take the subtype and fsname from the options.

use fuser::{Config, Filesystem, MountOption, Session, SessionACL};
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The file system type mount(2) is given: the kernel's `fuse` with cowfs's subtype.
pub const FSTYPE: &str = "fuse.cowfs";

/// Mounts `fs` at `mountpoint` with `config`'s options and returns the session, ready to
/// run. The source shown in the mount table is `config`'s `FSName`.
pub fn session<FS: Filesystem>(
    fs: FS,
    mountpoint: &Path,
    config: &Config,
) -> io::Result<Session<FS>> {
    if crate::sys::geteuid() != 0 {
        return Session::new(fs, mountpoint, config);
    }
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let rootmode = std::fs::metadata(mountpoint)?.permissions().mode() & libc::S_IFMT;
    let (uid, gid) = crate::sys::getuid_gid();
    let data = kernel_options(config, dev.as_raw_fd(), rootmode, uid, gid);
    let source = config
        .mount_options
        .iter()
        .find_map(|o| match o {
            MountOption::FSName(n) => Some(n.as_str()),
            _ => None,
        })
        .unwrap_or("cowfs");
    match crate::sys::mount(
        OsStr::new(source),
        mountpoint,
        FSTYPE,
        kernel_flags(&config.mount_options),
        &data,
    ) {
        Ok(()) => {}
        // Root without CAP_SYS_ADMIN (a user namespace): fusermount3 may still do it.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Session::new(fs, mountpoint, config);
        }
        Err(e) => return Err(e),
    }
    Session::from_fd(fs, OwnedFd::from(dev), config.acl, config.clone()).inspect_err(|_| {
        // The kernel never got its INIT answer: take the dead mount away again.
        let _ = crate::sys::umount_lazy(mountpoint);
    })
}

/// The option string FUSE's mount(2) takes, as libfuse's `mount.fuse3` builds it.
fn kernel_options(config: &Config, fd: i32, rootmode: u32, uid: u32, gid: u32) -> String {
    let mut s = format!("fd={fd},rootmode={rootmode:o},user_id={uid},group_id={gid}");
    for o in &config.mount_options {
        match o {
            MountOption::DefaultPermissions => s.push_str(",default_permissions"),
            MountOption::CUSTOM(c) => {
                s.push(',');
                s.push_str(c);
            }
            _ => {}
        }
    }
    if config.acl != SessionACL::Owner {
        s.push_str(",allow_other");
    }
    s
}

/// The `MS_*` flags of `opts`; `nodev` and `nosuid` unless `dev` or `suid` is asked for, as
/// fuser and fusermount3 do.
fn kernel_flags(opts: &[MountOption]) -> libc::c_ulong {
    let mut f = 0;
    if !opts.contains(&MountOption::Dev) {
        f |= libc::MS_NODEV;
    }
    if !opts.contains(&MountOption::Suid) {
        f |= libc::MS_NOSUID;
    }
    for o in opts {
        f |= match o {
            MountOption::RO => libc::MS_RDONLY,
            MountOption::NoExec => libc::MS_NOEXEC,
            MountOption::NoAtime => libc::MS_NOATIME,
            MountOption::Sync => libc::MS_SYNCHRONOUS,
            MountOption::DirSync => libc::MS_DIRSYNC,
            _ => 0,
        };
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_as_mount_fuse3_writes_them() {
        let mut c = Config::default();
        c.mount_options = vec![
            MountOption::FSName("/srv/store".into()),
            MountOption::Subtype("cowfs".into()),
            MountOption::DefaultPermissions,
        ];
        c.acl = SessionACL::All;
        assert_eq!(
            kernel_options(&c, 7, 0o40000, 0, 0),
            "fd=7,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other"
        );
        c.acl = SessionACL::Owner;
        c.mount_options = vec![MountOption::CUSTOM("max_read=4096".into())];
        assert_eq!(
            kernel_options(&c, 3, 0o40000, 1000, 100),
            "fd=3,rootmode=40000,user_id=1000,group_id=100,max_read=4096"
        );
    }

    #[test]
    fn flags_default_to_nodev_nosuid() {
        let safe = libc::MS_NODEV | libc::MS_NOSUID;
        assert_eq!(kernel_flags(&[]), safe);
        assert_eq!(kernel_flags(&[MountOption::RO]), safe | libc::MS_RDONLY);
        assert_eq!(
            kernel_flags(&[MountOption::Suid, MountOption::NoAtime]),
            libc::MS_NODEV | libc::MS_NOATIME
        );
        assert_eq!(kernel_flags(&[MountOption::Dev, MountOption::Suid]), 0);
    }
}
