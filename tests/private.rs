//! Mount options on a real mount. `--private`: only the mounting user gets in; mounted by
//! root, the kernel also leaves out its permission checks (root passes them anyway), so the
//! execute bit of a file is still enforced by the kernel and access(2) is answered by the
//! daemon. A default mount of root's is open to every user, with the kernel checking
//! permissions. `--dirty-share`: the mount's share of the kernel's dirty-page limit.

mod common;

use common::{Mount, errno_of, is_root};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The mount's options as /proc/mounts lists them.
fn options(mnt: &Path) -> Vec<String> {
    let mounts = fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == mnt.to_str())
        .unwrap_or_else(|| panic!("{} not in /proc/mounts", mnt.display()));
    let opts = line.split(' ').nth(3).expect("options field");
    opts.split(',').map(str::to_string).collect()
}

/// access(2): 0 or the errno.
fn access(p: &Path, mode: i32) -> i32 {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: `c` is a valid C string for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }
}

/// Runs `cmd args` as user and group 65534; its exit status and stderr.
fn as_nobody(cmd: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", cmd])
        .args(args)
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn private_mount_of_root_keeps_others_out_and_execute_bits_in() {
    if !is_root() {
        return;
    }
    let m = Mount::with_opts(&["--private"]);
    let opts = options(&m.mnt);
    assert!(!opts.iter().any(|o| o == "allow_other"), "{opts:?}");
    assert!(!opts.iter().any(|o| o == "default_permissions"), "{opts:?}");

    let script = m.path("s.sh");
    fs::write(&script, b"#!/bin/sh\necho ran\n").expect("write");
    chmod(&script, 0o644);
    assert_eq!(access(&script, libc::X_OK), libc::EACCES);
    assert_eq!(access(&script, libc::R_OK | libc::W_OK), 0);
    assert_eq!(access(&script, libc::F_OK), 0);
    assert_eq!(access(&m.path("missing"), libc::F_OK), libc::ENOENT);
    assert_eq!(errno_of(Command::new(&script).output()), libc::EACCES);
    chmod(&script, 0o744);
    assert_eq!(access(&script, libc::X_OK), 0);
    let out = Command::new(&script).output().expect("exec after chmod");
    assert_eq!(out.stdout, b"ran\n");

    // Root passes the permission bits, as on any filesystem.
    chmod(&script, 0o444);
    assert_eq!(access(&script, libc::W_OK), 0);
    fs::write(&script, b"#!/bin/sh\n").expect("root writes a 0444 file");
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    fs::write(d.join("f"), b"x").expect("write");
    chmod(&d, 0o000);
    assert_eq!(access(&d, libc::X_OK), 0, "root searches any directory");
    assert_eq!(
        fs::read(d.join("f")).expect("read through a 0000 dir"),
        b"x"
    );

    // Nobody else gets in at all.
    fs::write(m.path("pub"), b"public").expect("write");
    chmod(&m.path("pub"), 0o644);
    let (ok, err) = as_nobody("cat", &[&m.path("pub")]);
    assert!(!ok && err.contains("Permission denied"), "{err}");
}

#[test]
fn default_mount_of_root_is_shared_and_checked_by_the_kernel() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let opts = options(&m.mnt);
    assert!(opts.iter().any(|o| o == "allow_other"), "{opts:?}");
    assert!(opts.iter().any(|o| o == "default_permissions"), "{opts:?}");
    let public = m.path("pub");
    fs::write(&public, b"public").expect("write");
    chmod(&public, 0o644);
    let (ok, err) = as_nobody("cat", &[&public]);
    assert!(ok, "{err}");
    chmod(&public, 0o600);
    let (ok, err) = as_nobody("cat", &[&public]);
    assert!(!ok && err.contains("Permission denied"), "{err}");
}

/// The `max_ratio` of the mount's backing device.
fn max_ratio(mnt: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(mnt).expect("stat mount").dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/max_ratio",
        libc::major(dev),
        libc::minor(dev)
    );
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn a_root_mount_takes_its_share_of_the_dirty_limit() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    assert_eq!(max_ratio(&m.mnt), 10, "the default share");
    let m = Mount::with_opts(&["--dirty-share", "1"]);
    assert_eq!(
        max_ratio(&m.mnt),
        1,
        "the kernel's own FUSE default, asked for"
    );
    for bad in ["0", "101", "ten"] {
        let out = common::cowfs(&[
            "mount",
            "--dirty-share",
            bad,
            "/nonexistent",
            "/nonexistent",
        ]);
        assert_eq!(out.status.code(), Some(2), "--dirty-share {bad}");
    }
}
