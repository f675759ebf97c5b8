//! The mount's share of the kernel's dirty-page limit.
//!
//! The kernel lets the pages of a FUSE mount make up at most 1% of its dirty limit (its
//! backing device's `max_ratio`, with `strict_limit`), against the whole limit for a
//! native filesystem. Past that, every writer waits for the daemon page by page: a burst of
//! small writes runs at the speed of one FUSE round trip each instead of filling the page
//! cache and being written back in a batch. As root, the daemon raises its own device's
//! share (`--dirty-share`, see docs/PERFORMANCE.md); the strict limit stays.

use crate::error::{Error, Result};
use std::path::Path;

/// The default share, in percent of the kernel's dirty limit.
pub const DEFAULT_SHARE: u32 = 10;

/// Sets the `max_ratio` of the backing device of the FUSE mount at `mountpoint`. The mount
/// is found in /proc/self/mountinfo, never through the mount itself, which cannot answer
/// before the session runs.
pub fn set_dirty_share(mountpoint: &Path, percent: u32) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dev = device_of(&info, mountpoint).ok_or_else(|| {
        Error::Io(std::io::Error::other(format!(
            "{} is not in /proc/self/mountinfo",
            mountpoint.display()
        )))
    })?;
    std::fs::write(
        format!("/sys/class/bdi/{dev}/max_ratio"),
        percent.to_string(),
    )?;
    log::info!("backing device {dev}: max_ratio {percent}% of the dirty limit");
    Ok(())
}

/// The `major:minor` of the last FUSE mount at `mountpoint` in a mountinfo text.
fn device_of(info: &str, mountpoint: &Path) -> Option<String> {
    let want = mountpoint.to_str()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|&x| x == "-")?;
        let fstype = f.get(sep + 1)?;
        let at = unescape(f.get(4)?);
        (at == want && fstype.starts_with("fuse")).then(|| f.get(2).map(|d| d.to_string()))?
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a blank, and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
25 1 8:1 / / rw,relatime - ext4 /dev/vda rw
42 27 0:39 / /var/tmp/a\\040b rw,nosuid - fuse cowfs rw,user_id=0,group_id=0
43 27 0:40 / /var/tmp/c rw,nosuid - fuse.passthrough_ll passthrough_ll rw
44 27 0:41 / /var/tmp/c rw,nosuid - fuse cowfs rw
45 27 0:42 / /var/tmp/d rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_last_fuse_mount_at_the_path() {
        assert_eq!(
            device_of(INFO, Path::new("/var/tmp/a b")).as_deref(),
            Some("0:39")
        );
        assert_eq!(
            device_of(INFO, Path::new("/var/tmp/c")).as_deref(),
            Some("0:41")
        );
        assert_eq!(device_of(INFO, Path::new("/var/tmp/d")), None, "not FUSE");
        assert_eq!(device_of(INFO, Path::new("/var/tmp/e")), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("tail\\04"), "tail\\04");
    }
}
