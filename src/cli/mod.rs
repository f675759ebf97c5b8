//! The command line: `cowfs mkfs`, `cowfs mount`, `cowfs umount`, and the subcommands in
//! the files beside this one. It sits above every layer: nothing in the library imports it.

pub mod completions;
pub mod dedup;
pub mod mounting;
pub mod mountopts;
pub mod pages;
pub mod snap;
pub mod tools;

use crate::error::{Error, Result};
use crate::fuse::session::{MountOpts, serve};
use crate::store::open_dir;
use clap::{Parser, Subcommand};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// cowfs: a copy-on-write filesystem in userspace.
#[derive(Parser, Debug)]
#[command(name = "cowfs", version = env!("COWFS_VERSION"), about)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create an empty store in STORE (a missing or empty directory).
    Mkfs {
        /// Store directory.
        store: PathBuf,
        /// Largest size the store may grow to (e.g. 500M, 20G); writes past it get ENOSPC.
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        /// Make a store of an older format version (1: no inline data), for tests.
        #[arg(long, hide = true)]
        format_version: Option<u32>,
    },
    /// Mount the store STORE at MOUNTPOINT (creating the store if STORE is missing or empty).
    Mount {
        /// Store directory.
        store: PathBuf,
        /// Where to mount.
        mountpoint: PathBuf,
        /// Stay attached and serve in the foreground.
        #[arg(long)]
        foreground: bool,
        /// Daemon log file (default: STORE/daemon.log).
        #[arg(long)]
        log: Option<PathBuf>,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Seconds between background commits.
        #[arg(long, default_value_t = 5)]
        commit_interval: u64,
        /// Largest size the store may grow to (e.g. 500M, 20G; 0: no limit but the disk);
        /// kept in the store. Writes past it get ENOSPC; deleting still works.
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        /// Turn off the kernel's writeback cache: every write(2) goes to the daemon at once.
        #[arg(long)]
        no_writeback_cache: bool,
        /// Only the mounting user may use the mount. Mounted by root, the kernel then also
        /// skips its permission checks, which root passes anyway (execute bits excepted,
        /// still checked): metadata changes take one round trip fewer.
        #[arg(long)]
        private: bool,
        /// The mount's share of the kernel's dirty-page limit, in percent, set when mounted
        /// by root (the kernel gives a FUSE mount 1%; see docs/PERFORMANCE.md).
        #[arg(long, default_value_t = crate::fuse::bdi::DEFAULT_SHARE,
            value_parser = clap::value_parser!(u32).range(1..=100))]
        dirty_share: u32,
        /// When reads update a file's access time: noatime (never; the default: the kernel
        /// then opens and closes files without asking the daemon), relatime (on the first
        /// read after a change, or once a day), strictatime (every read). The last two
        /// cost a round trip per open.
        #[arg(long, value_parser = parse_atime, default_value = "noatime")]
        atime: crate::ns::Atime,
        /// Mount options as mount(8) takes them; relatime, strictatime and noatime are
        /// understood (the last one given wins over --atime).
        #[arg(short = 'o', value_delimiter = ',', value_parser = parse_atime)]
        options: Vec<crate::ns::Atime>,
        /// Create the mount point if it does not exist.
        #[arg(long)]
        mkdir: bool,
        /// Mount read-only: every change answers EROFS.
        #[arg(long)]
        read_only: bool,
    },
    /// Commit everything written on the mount and return once it is on disk (a bare
    /// `sync` does not reach a FUSE daemon).
    Sync {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (cowfs.1, cowfs-COMMAND.1) into DIR.
    #[command(hide = true)]
    Man {
        /// Output directory.
        dir: PathBuf,
    },
    /// Clone SRC to DST sharing every page (constant time, no space until written).
    ///
    /// Like `cp --reflink=always`, which cannot work on FUSE mounts. If DST is an existing
    /// directory, the clone goes inside it.
    Clone {
        /// Source file (or directory, with -r).
        src: PathBuf,
        /// Destination.
        dst: PathBuf,
        /// Clone a directory tree (modes, times, xattrs, symlinks and hard links kept;
        /// owners kept when run as root).
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Replace an existing destination file (or empty directory).
        #[arg(long)]
        force: bool,
        /// Clone LEN bytes from SRC_OFF into DST at DST_OFF (page-aligned, as FICLONERANGE;
        /// LEN 0: to the end of SRC). DST is created if missing.
        #[arg(long, num_args = 3, value_names = ["SRC_OFF", "DST_OFF", "LEN"])]
        range: Option<Vec<u64>>,
    },
    /// Show allocated, exclusive and shared bytes of files and trees (like btrfs fi du).
    #[command(disable_help_flag = true)]
    Du {
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Files or directories on a cowfs mount.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Human-readable sizes.
        #[arg(short = 'h', long = "human-readable")]
        human: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show store-wide figures: pages in use and shared, bytes saved, copy-on-write copies.
    Stats {
        /// The mount point (or any path on the mount).
        mountpoint: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a store offline: recompute every reference count, link count and checksum.
    ///
    /// Exit codes as e2fsck: 0 clean, 1 errors corrected, 4 errors left, 8 could not check.
    Fsck {
        /// Store directory (not mounted).
        store: PathBuf,
        /// Repair what can be repaired (leaked pages freed, counts corrected, unreadable
        /// pages cut out, unlinked inodes moved to /lost+found).
        #[arg(long)]
        repair: bool,
    },
    /// Create, list, delete and roll back to snapshots of a mounted filesystem.
    Snapshot {
        #[command(subcommand)]
        cmd: crate::cli::snap::SnapCmd,
    },
    /// Merge identical file pages into one shared page, and all-zero pages into holes
    /// (KSM-style; safe while the filesystem is in use). Default: the whole mount.
    Dedup {
        /// The mount point.
        mountpoint: PathBuf,
        /// Files or directories to dedup (default: everything on the mount).
        paths: Vec<PathBuf>,
    },
    /// The page layer: fork-style address spaces over the page store (demo, bench).
    Pages {
        #[command(subcommand)]
        cmd: crate::cli::pages::PagesCmd,
    },
    /// Unmount a cowfs mount and wait for its daemon to close the store.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
        /// Detach even if files are open (the daemon exits once they are closed).
        #[arg(long)]
        lazy: bool,
    },
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    if let Cmd::Fsck { store, repair } = &cli.cmd {
        return Ok(fsck(store, *repair));
    }
    run_cmd(cli).map(|()| 0)
}

fn run_cmd(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Mkfs {
            store,
            max_size,
            format_version,
        } => mkfs(&store, max_size, format_version),
        Cmd::Mount {
            store,
            mountpoint,
            foreground,
            log,
            threads,
            commit_interval,
            max_size,
            no_writeback_cache,
            private,
            dirty_share,
            atime,
            options,
            mkdir,
            read_only,
        } => {
            let atime = options.last().copied().unwrap_or(atime);
            let opts = MountOpts {
                threads,
                commit_secs: commit_interval,
                max_size,
                writeback: !no_writeback_cache,
                private,
                dirty_share,
                atime,
                read_only,
            };
            let mountpoint = mounting::mountpoint(&mountpoint, mkdir)?;
            if foreground {
                mount_foreground(&store, &mountpoint, &opts)
            } else {
                mount_background(&store, &mountpoint, log, &opts)
            }
        }
        Cmd::Umount { mountpoint, lazy } => umount(&mountpoint, lazy),
        Cmd::Clone {
            src,
            dst,
            recursive,
            force,
            range,
        } => {
            let range = range.map(|r| (r[0], r[1], r[2]));
            let args = tools::CloneArgs {
                range,
                recursive,
                force,
            };
            tools::clone(&src, &dst, args)
        }
        Cmd::Du {
            paths, human, json, ..
        } => du(&paths, human, json),
        Cmd::Stats { mountpoint, json } => stats(&mountpoint, json),
        Cmd::Snapshot { cmd } => crate::cli::snap::run(cmd),
        Cmd::Pages { cmd } => crate::cli::pages::run(cmd),
        Cmd::Dedup { mountpoint, paths } => crate::cli::dedup::run(&mountpoint, &paths),
        Cmd::Sync { mountpoint } => mounting::sync(&mountpoint),
        Cmd::Completions { shell } => completions::completions(shell),
        Cmd::Man { dir } => completions::man(&dir),
        Cmd::Fsck { .. } => Ok(()),
    }
}

/// Parses a size: a number of bytes with an optional K, M, G or T suffix (powers of 1024).
/// An atime rule as mount(8) names it.
fn parse_atime(s: &str) -> std::result::Result<crate::ns::Atime, String> {
    use crate::ns::Atime;
    match s {
        "relatime" => Ok(Atime::Relatime),
        "strictatime" => Ok(Atime::Strict),
        "noatime" => Ok(Atime::NoAtime),
        _ => Err(format!(
            "unknown option '{s}' (cowfs understands relatime, strictatime, noatime)"
        )),
    }
}

fn atime_name(a: crate::ns::Atime) -> &'static str {
    use crate::ns::Atime;
    match a {
        Atime::Relatime => "relatime",
        Atime::Strict => "strictatime",
        Atime::NoAtime => "noatime",
    }
}

pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size (try 500M or 20G)"))
}

fn mkfs(store: &Path, max_size: Option<u64>, version: Option<u32>) -> Result<()> {
    if store.join(crate::store::dir::PAGES_FILE).exists() {
        return Err(Error::BadStore(format!(
            "{}: already a cowfs store",
            store.display()
        )));
    }
    let mut d = open_dir(store, true)?;
    if let Some(v) = version {
        d.store.set_format_version(v)?;
    }
    if let Some(m) = max_size {
        d.store.set_max_size(m)?;
    }
    if version.is_some() || max_size.is_some() {
        d.store.close()?;
    }
    println!("cowfs: created store {}", store.display());
    Ok(())
}

fn mount_foreground(store: &Path, mnt: &Path, opts: &MountOpts) -> Result<()> {
    mounting::wait_for_store(store)?;
    let mut dir = open_dir(store, true)?;
    // The mount table shows the store by this name.
    dir.path = std::fs::canonicalize(&dir.path)?;
    let pidfile = pid_file(mnt);
    serve(dir, mnt, opts, || {
        if let Some(p) = &pidfile {
            let _ = std::fs::write(p, std::process::id().to_string());
        }
    })?;
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn mount_background(
    store: &Path,
    mnt: &Path,
    log: Option<PathBuf>,
    opts: &MountOpts,
) -> Result<()> {
    let mnt = mnt.to_path_buf();
    if is_mounted(&mnt) {
        return Err(Error::BadStore(format!(
            "{} is already a mount point",
            mnt.display()
        )));
    }
    // Create or check the store here, so errors come back as one clear line.
    mounting::wait_for_store(store)?;
    drop(open_dir(store, true)?);
    let store = std::fs::canonicalize(store)?;
    let log = log.unwrap_or_else(|| store.join("daemon.log"));
    let out = OpenOptions::new().create(true).append(true).open(&log)?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("mount")
        .arg("--foreground")
        .arg("--threads")
        .arg(opts.threads.to_string())
        .arg("--commit-interval")
        .arg(opts.commit_secs.to_string())
        .args(opts.max_size.map(|m| format!("--max-size={m}")))
        .args((!opts.writeback).then_some("--no-writeback-cache"))
        .args(opts.private.then_some("--private"))
        .args(opts.read_only.then_some("--read-only"))
        .arg(format!("--dirty-share={}", opts.dirty_share))
        .arg(format!("--atime={}", atime_name(opts.atime)))
        .arg(&store)
        .arg(&mnt)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .process_group(0)
        .spawn()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(status) = child.try_wait()? {
            return Err(Error::BadStore(format!(
                "daemon exited ({status}): {}",
                last_error_line(&log)
            )));
        }
        if is_mounted(&mnt) {
            println!(
                "cowfs: mounted {} at {} (daemon pid {}, log {})",
                store.display(),
                mnt.display(),
                child.id(),
                log.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    Err(Error::BadStore(format!(
        "mount did not appear within 30 s; see {}",
        log.display()
    )))
}

use std::os::unix::process::CommandExt;

fn last_error_line(log: &Path) -> String {
    let Ok(f) = File::open(log) else {
        return "no log".into();
    };
    BufReader::new(f)
        .lines()
        .map_while(std::result::Result::ok)
        .filter(|l| l.contains("cowfs:") || l.contains("ERROR"))
        .last()
        .unwrap_or_else(|| "see the log".into())
}

/// True when `mnt` is a FUSE mount point now.
pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy().replace(' ', "\\040");
    text.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
        f.get(4) == Some(&want.as_str()) && fstype.is_some_and(|t| t.starts_with("fuse"))
    })
}

fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("cowfs"),
        None if crate::sys::geteuid() == 0 => PathBuf::from("/run/cowfs"),
        None => std::env::temp_dir().join(format!("cowfs-{}", crate::sys::geteuid())),
    }
}

/// Where the daemon serving `mnt` records its pid.
fn pid_file(mnt: &Path) -> Option<PathBuf> {
    let dir = runtime_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let name: String = mnt
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Some(dir.join(format!("{name}.pid")))
}

fn umount(mnt: &Path, lazy: bool) -> Result<()> {
    let mnt = std::fs::canonicalize(mnt)?;
    if !is_mounted(&mnt) {
        return Err(Error::BadStore(format!(
            "{} is not a cowfs mount",
            mnt.display()
        )));
    }
    let pid = pid_file(&mnt)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse::<u32>().ok());
    if crate::sys::geteuid() == 0 {
        let r = if lazy {
            crate::sys::umount_lazy(&mnt)
        } else {
            crate::sys::umount(&mnt)
        };
        r.map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => Error::BadStore(format!(
                "{}: target is busy (files open); close them or use --lazy",
                mnt.display()
            )),
            _ => Error::Io(e),
        })?;
    } else {
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        let st = cmd.arg(&mnt).status()?;
        if !st.success() {
            return Err(Error::BadStore(format!(
                "fusermount3 -u {} failed",
                mnt.display()
            )));
        }
    }
    if let Some(pid) = pid {
        wait_exit(pid);
    }
    println!("cowfs: unmounted {}", mnt.display());
    Ok(())
}

fn wait_exit(pid: u32) {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let start = Instant::now();
    while proc.exists() && start.elapsed() < Duration::from_secs(60) {
        if std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z ")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn du(paths: &[PathBuf], human: bool, json: bool) -> Result<()> {
    let fmt = |n: u64| {
        if human {
            tools::human(n)
        } else {
            n.to_string()
        }
    };
    let mut rows = Vec::new();
    for p in paths {
        rows.push((p.clone(), tools::space(p)?));
    }
    if json {
        let items: Vec<String> = rows
            .iter()
            .map(|(p, s)| {
                format!(
                    "{{\"path\":{:?},\"files\":{},\"logical\":{},\"total\":{},\"exclusive\":{},\"shared\":{}}}",
                    p.display().to_string(),
                    s.files,
                    s.logical,
                    s.allocated,
                    s.exclusive,
                    s.shared
                )
            })
            .collect();
        println!("[{}]", items.join(","));
        return Ok(());
    }
    println!(
        "{:>12} {:>12} {:>12}  Filename",
        "Total", "Exclusive", "Set shared"
    );
    for (p, s) in &rows {
        println!(
            "{:>12} {:>12} {:>12}  {}",
            fmt(s.allocated),
            fmt(s.exclusive),
            fmt(s.shared),
            p.display()
        );
    }
    if rows.len() > 1 {
        let t = |f: fn(&crate::ns::Space) -> u64| rows.iter().map(|(_, s)| f(s)).sum::<u64>();
        println!(
            "{:>12} {:>12} {:>12}  total",
            fmt(t(|s| s.allocated)),
            fmt(t(|s| s.exclusive)),
            fmt(t(|s| s.shared))
        );
    }
    Ok(())
}

fn stats(mnt: &Path, json: bool) -> Result<()> {
    let s = tools::stats(mnt)?;
    let ps = crate::page::PAGE_SIZE as u64;
    if json {
        println!(
            "{{\"total_pages\":{},\"free_pages\":{},\"used_pages\":{},\"shared_pages\":{},\"logical_bytes\":{},\"physical_bytes\":{},\"saved_bytes\":{},\"cow_copies\":{}}}",
            s.total_pages,
            s.free_pages,
            s.used_pages,
            s.shared_pages,
            s.logical_bytes,
            s.physical_bytes,
            s.saved_bytes,
            s.cow_copies
        );
        return Ok(());
    }
    println!(
        "pages in store   {:>14}  ({})",
        s.total_pages,
        tools::human(s.total_pages * ps)
    );
    println!(
        "pages in use     {:>14}  ({})",
        s.used_pages,
        tools::human(s.used_pages * ps)
    );
    println!(
        "pages free       {:>14}  ({})",
        s.free_pages,
        tools::human(s.free_pages * ps)
    );
    println!(
        "pages shared     {:>14}  (more than one reference)",
        s.shared_pages
    );
    println!(
        "file data        {:>14}  bytes as the files show it ({})",
        s.logical_bytes,
        tools::human(s.logical_bytes)
    );
    println!(
        "stored data      {:>14}  bytes of distinct pages ({})",
        s.physical_bytes,
        tools::human(s.physical_bytes)
    );
    println!(
        "saved by sharing {:>14}  bytes ({})",
        s.saved_bytes,
        tools::human(s.saved_bytes)
    );
    println!("copy-on-write copies {:>10}", s.cow_copies);
    Ok(())
}

/// `cowfs fsck`: prints problems and a summary; returns e2fsck's exit code.
fn fsck(store: &Path, repair: bool) -> i32 {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    let mut progress = |phase: &str, done: u64, total: u64| {
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\rcowfs fsck: {phase} {done}/{total}   ");
            if done == total {
                let _ = writeln!(err);
            }
        } else if done == total && last != phase {
            let _ = writeln!(err, "cowfs fsck: {phase}: {total} checked");
            last = phase.to_string();
        }
    };
    let report = open_dir(store, false).and_then(|mut d| {
        let r = crate::check::fsck(&mut d.store, repair, &mut progress)?;
        if repair {
            d.store.close()?;
        }
        Ok(r)
    });
    let r = match report {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cowfs: fsck: {e}");
            return 8;
        }
    };
    let show = |title: &str, v: &[String]| {
        for p in v.iter().take(50) {
            println!("{title}: {p}");
        }
        if v.len() > 50 {
            println!("{title}: ... and {} more", v.len() - 50);
        }
    };
    show("repaired", &r.repaired);
    show("problem", &r.problems);
    let state = match r.exit_code() {
        0 => "clean".to_string(),
        1 => format!("{} problems repaired", r.repaired.len()),
        _ => format!("{} problems left", r.problems.len()),
    };
    println!(
        "cowfs fsck: {}: {} inodes, {} pages in use: {state}",
        store.display(),
        r.inodes,
        r.pages_used
    );
    r.exit_code()
}
