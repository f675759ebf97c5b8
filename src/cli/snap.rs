//! `cowfs snapshot create|list|delete|rollback`: each is one ioctl on the mount.

use crate::cli::tools;
use crate::error::{Error, Result};
use crate::fuse::snapshot_abi::{IOC_SNAP, SnapAns, SnapOp, SnapReq};
use clap::Subcommand;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The snapshot subcommands.
#[derive(Subcommand, Debug)]
pub enum SnapCmd {
    /// Snapshot the whole mounted filesystem (O(1); pending writes are flushed first).
    /// It shows under MOUNTPOINT/.snapshots/NAME.
    Create {
        mountpoint: PathBuf,
        name: OsString,
        /// A branch that can be changed under .snapshots/NAME (default: read-only).
        #[arg(long)]
        writable: bool,
    },
    /// List snapshots: name, creation time, type, bytes only that snapshot holds.
    List {
        mountpoint: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a snapshot: its name goes now, its space comes back in the background.
    Delete {
        mountpoint: PathBuf,
        name: OsString,
        /// Return only when the space has come back.
        #[arg(long)]
        wait: bool,
    },
    /// Make the live tree the snapshot's content (the snapshot stays).
    Rollback { mountpoint: PathBuf, name: OsString },
}

fn send(mnt: &Path, req: &SnapReq) -> Result<SnapAns> {
    let f = File::open(mnt).map_err(|e| tools::io_err("cannot open", mnt, e))?;
    let mut buf = req.encode()?;
    let name = String::from_utf8_lossy(&req.name).into_owned();
    if let Err(e) = crate::sys::ioctl(&f, IOC_SNAP, &mut buf) {
        return Err(match (req.op, e.raw_os_error()) {
            (SnapOp::Create, Some(libc::EEXIST)) => Error::SnapshotExists(name),
            (SnapOp::Delete | SnapOp::Rollback, Some(libc::ENOENT)) => Error::NoSnapshot(name),
            (_, Some(libc::EPERM)) => Error::BadStore(format!(
                "snapshot {name}: only root or the owner of the mount's root may do this"
            )),
            _ => tools::io_err("snapshot", mnt, e),
        });
    }
    SnapAns::decode(&buf)
}

fn req(op: SnapOp, name: &OsString) -> SnapReq {
    SnapReq {
        op,
        writable: false,
        index: 0,
        name: name.as_bytes().to_vec(),
    }
}

/// Runs one snapshot subcommand.
pub fn run(cmd: SnapCmd) -> Result<()> {
    match cmd {
        SnapCmd::Create {
            mountpoint,
            name,
            writable,
        } => {
            // Dirty pages (shared mmaps included) reach the daemon before the snapshot.
            let f = File::open(&mountpoint)
                .map_err(|e| tools::io_err("cannot open", &mountpoint, e))?;
            crate::sys::syncfs(&f).map_err(|e| tools::io_err("cannot flush", &mountpoint, e))?;
            send(
                &mountpoint,
                &SnapReq {
                    writable,
                    ..req(SnapOp::Create, &name)
                },
            )?;
            Ok(())
        }
        SnapCmd::List { mountpoint, json } => list(&mountpoint, json),
        SnapCmd::Delete {
            mountpoint,
            name,
            wait,
        } => {
            send(&mountpoint, &req(SnapOp::Delete, &name))?;
            while wait && send(&mountpoint, &req(SnapOp::Status, &OsString::new()))?.pending > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
        SnapCmd::Rollback { mountpoint, name } => {
            let f = File::open(&mountpoint)
                .map_err(|e| tools::io_err("cannot open", &mountpoint, e))?;
            crate::sys::syncfs(&f).map_err(|e| tools::io_err("cannot flush", &mountpoint, e))?;
            send(&mountpoint, &req(SnapOp::Rollback, &name))?;
            Ok(())
        }
    }
}

fn list(mnt: &Path, json: bool) -> Result<()> {
    let n = send(mnt, &req(SnapOp::Status, &OsString::new()))?.count;
    let mut all = Vec::new();
    for i in 0..n {
        match send(
            mnt,
            &SnapReq {
                index: i,
                ..req(SnapOp::Get, &OsString::new())
            },
        ) {
            Ok(a) => all.push(a),
            Err(_) => break, // deleted meanwhile
        }
    }
    if json {
        let items: Vec<String> = all
            .iter()
            .map(|a| {
                format!(
                    "{{\"name\":{},\"created\":{},\"writable\":{},\"exclusive_bytes\":{}}}",
                    json_str(&a.name),
                    a.sec,
                    a.writable,
                    a.exclusive_bytes
                )
            })
            .collect();
        println!("[{}]", items.join(","));
        return Ok(());
    }
    println!(
        "{:<24} {:<20} {:<4} {:>10}",
        "NAME", "CREATED", "TYPE", "EXCLUSIVE"
    );
    for a in &all {
        println!(
            "{:<24} {:<20} {:<4} {:>10}",
            String::from_utf8_lossy(&a.name),
            utc(a.sec),
            if a.writable { "rw" } else { "ro" },
            tools::human(a.exclusive_bytes)
        );
    }
    Ok(())
}

/// A JSON string literal.
fn json_str(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for c in String::from_utf8_lossy(b).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(sec: i64) -> String {
    let days = sec.div_euclid(86_400);
    let rem = sec.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_json() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40");
        assert_eq!(json_str(b"a\"b"), "\"a\\\"b\"");
    }
}
