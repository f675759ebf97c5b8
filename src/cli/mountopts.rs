//! `mount -t fuse.cowfs` and fstab: the mount helper. mount(8) runs
//! `/sbin/mount.fuse.cowfs STORE MNT [-sfnv] [-N NS] [-o OPTIONS]`; that path is a link to
//! the `cowfs` binary, which sees its name and comes here. Each `-o` option is translated
//! into a `cowfs mount` argument, so the translation is checked without mounting anything.

use crate::cli::{Cli, parse_size, run};
use clap::Parser;
use std::ffi::OsString;

/// What mount(8) asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HelperCall {
    /// The store (mount(8)'s "spec").
    pub store: OsString,
    /// The mount point.
    pub mountpoint: OsString,
    /// `cowfs mount` arguments for the `-o` options, in order.
    pub args: Vec<String>,
    /// `-f`: check everything, mount nothing.
    pub fake: bool,
    /// `-v`: say what is run.
    pub verbose: bool,
}

/// mount(8)'s own options, and FUSE's that cowfs always sets: accepted, ignored.
const IGNORED: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "async",
    "allow_other",
    "default_permissions",
];

/// Options with a value that mount(8), systemd or FUSE use and cowfs does not.
const IGNORED_PREFIXES: &[&str] = &["x-", "comment=", "fsname=", "subtype="];

/// Translates one `-o` option into `cowfs mount` arguments; Err names an unknown or bad
/// option.
pub fn translate(opt: &str) -> Result<Vec<String>, String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k.replace('-', "_"), Some(v)),
        None => (opt.replace('-', "_"), None),
    };
    if IGNORED.contains(&opt) || IGNORED_PREFIXES.iter().any(|p| opt.starts_with(p)) {
        return Ok(Vec::new());
    }
    let flag = |name: &str| -> Result<Vec<String>, String> {
        match value {
            None => Ok(vec![name.to_string()]),
            Some(_) => Err(format!("mount option '{opt}' takes no value")),
        }
    };
    let with = |name: &str, check: fn(&str) -> bool| -> Result<Vec<String>, String> {
        match value {
            Some(v) if check(v) => Ok(vec![name.to_string(), v.to_string()]),
            Some(v) => Err(format!("mount option '{key}': bad value '{v}'")),
            None => Err(format!("mount option '{key}' needs a value ({key}=...)")),
        }
    };
    let number = |v: &str| v.parse::<u64>().is_ok();
    let any = |v: &str| !v.is_empty();
    match key.as_str() {
        "threads" => with("--threads", |v| v.parse::<usize>().is_ok_and(|n| n > 0)),
        "commit_interval" => with("--commit-interval", number),
        "max_size" => with("--max-size", |v| parse_size(v).is_ok()),
        "dirty_share" => with("--dirty-share", |v| {
            v.parse::<u32>().is_ok_and(|n| (1..=100).contains(&n))
        }),
        "log" => with("--log", any),
        "private" => flag("--private"),
        "no_writeback_cache" => flag("--no-writeback-cache"),
        "ro" => flag("--read-only"),
        "relatime" | "strictatime" | "noatime" => flag("--atime").map(|mut a| {
            a.push(key.clone());
            a
        }),
        // Dropping it would quietly allow what the user meant to forbid.
        "noexec" => Err(format!(
            "mount option '{opt}' is not supported: cowfs mounts allow execution"
        )),
        "branch" => Err(format!(
            "mount option '{opt}': branch= names a branch of a shared store, and this store \
             is a local one"
        )),
        _ => Err(format!("unknown mount option '{opt}'")),
    }
}

/// Parses mount(8)'s call of a helper.
pub fn parse_helper(args: &[OsString]) -> Result<HelperCall, String> {
    let mut call = HelperCall::default();
    let mut pos = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => {
                let v = it.next().ok_or("-o needs an option list")?;
                opts.push(v.to_string_lossy().into_owned());
            }
            "-N" => return Err("mount namespaces (-N) are not supported".into()),
            "-t" => {
                it.next();
            }
            s if s.starts_with("-o") => opts.push(s[2..].to_string()),
            s if s.starts_with('-') && s.len() > 1 && !s.starts_with("--") => {
                for c in s[1..].chars() {
                    match c {
                        'f' => call.fake = true,
                        'v' => call.verbose = true,
                        's' | 'n' => {}
                        _ => return Err(format!("unknown flag -{c}")),
                    }
                }
            }
            _ => pos.push(a.clone()),
        }
    }
    let [store, mountpoint] = <[OsString; 2]>::try_from(pos)
        .map_err(|_| "usage: mount.fuse.cowfs STORE MOUNTPOINT [-o OPTIONS]".to_string())?;
    call.store = store;
    call.mountpoint = mountpoint;
    let list = opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty());
    let mut private = false;
    let mut allow_other = false;
    for o in list {
        private |= o == "private";
        allow_other |= o == "allow_other";
        call.args.extend(translate(o)?);
    }
    if private && allow_other {
        return Err("mount options 'private' and 'allow_other' contradict each other".into());
    }
    Ok(call)
}

/// The `cowfs mount` command line for a helper call.
pub fn mount_argv(call: &HelperCall) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["cowfs".into(), "mount".into()];
    v.extend(call.args.iter().map(OsString::from));
    v.push(call.store.clone());
    v.push(call.mountpoint.clone());
    v
}

/// True when the binary was started under a mount helper's name.
pub fn is_helper_name(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("mount."))
}

/// Runs as mount(8)'s helper; returns mount(8)'s exit code (0 ok, 1 bad call, 32 failed).
pub fn helper_main(args: &[OsString]) -> i32 {
    let call = match parse_helper(args) {
        Ok(c) => c,
        Err(e) => {
            log_err(&format!("mount.fuse.cowfs: {e}"));
            return 1;
        }
    };
    let argv = mount_argv(&call);
    if call.verbose {
        let shown: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
        println!("mount.fuse.cowfs: {}", shown.join(" "));
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            log_err(&format!("mount.fuse.cowfs: {e}"));
            return 1;
        }
    };
    if call.fake {
        return 0;
    }
    match run(cli) {
        Ok(0) => 0,
        Ok(_) => 32,
        Err(e) => {
            log_err(&format!("mount.fuse.cowfs: {e}"));
            32
        }
    }
}

fn log_err(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn args_of(o: &str) -> Result<Vec<String>, String> {
        parse_helper(&os(&["/s", "/m", "-o", o])).map(|c| c.args)
    }

    #[test]
    fn every_mount_option_has_a_spelling() {
        let got = args_of(
            "threads=4,commit_interval=5,max_size=20G,private,ro,dirty_share=20,\
             no_writeback_cache,log=/var/log/cowfs.log",
        );
        let want = "--threads 4 --commit-interval 5 --max-size 20G --private --read-only \
                    --dirty-share 20 --no-writeback-cache --log /var/log/cowfs.log";
        assert_eq!(got, Ok(want.split(' ').map(String::from).collect()));
        assert_eq!(
            args_of("commit-interval=9"),
            Ok(vec!["--commit-interval".into(), "9".into()])
        );
    }

    #[test]
    fn atime_options_become_the_atime_flag() {
        for a in ["relatime", "strictatime", "noatime"] {
            assert_eq!(args_of(a), Ok(vec!["--atime".into(), a.into()]));
        }
    }

    #[test]
    fn mount8_options_are_accepted_and_ignored() {
        let o = "defaults,rw,noauto,nofail,_netdev,x-systemd.automount,\
                 x-systemd.requires=postgresql.service,suid,nodev,allow_other,comment=x";
        assert_eq!(args_of(o), Ok(Vec::new()));
    }

    #[test]
    fn unknown_or_bad_options_are_named() {
        let e = args_of("defaults,bogus").expect_err("should fail");
        assert!(e.contains("'bogus'"), "{e}");
        let e = args_of("threads=x").expect_err("should fail");
        assert!(e.contains("threads") && e.contains("'x'"), "{e}");
        assert!(args_of("threads=0").is_err());
        assert!(
            args_of("max_size=lots")
                .expect_err("should fail")
                .contains("max_size")
        );
        assert!(args_of("dirty_share=101").is_err());
        assert!(
            args_of("threads")
                .expect_err("should fail")
                .contains("needs a value")
        );
        assert!(
            args_of("private=yes")
                .expect_err("should fail")
                .contains("no value")
        );
        assert!(
            args_of("branch=main")
                .expect_err("should fail")
                .contains("branch=main")
        );
        assert!(args_of("private,allow_other").is_err());
        assert!(args_of("noexec").expect_err("refused").contains("'noexec'"));
        assert!(args_of("sync").expect_err("unknown").contains("'sync'"));
    }

    #[test]
    fn helper_call_as_mount8_makes_it() {
        let c = parse_helper(&os(&[
            "/srv/store",
            "/mnt/c",
            "-n",
            "-sv",
            "-o",
            "rw,threads=2",
            "-t",
            "fuse.cowfs",
        ]))
        .expect("should work");
        assert!(c.verbose && !c.fake);
        assert_eq!(
            mount_argv(&c),
            os(&["cowfs", "mount", "--threads", "2", "/srv/store", "/mnt/c"])
        );
        // The argv must parse as the real command line.
        assert!(Cli::try_parse_from(mount_argv(&c)).is_ok());
        let ro = parse_helper(&os(&["s", "m", "-oro,max_size=1G,commit_interval=3"]))
            .expect("should work");
        assert!(Cli::try_parse_from(mount_argv(&ro)).is_ok());
        assert!(parse_helper(&os(&["/srv/store"])).is_err());
        assert!(parse_helper(&os(&["a", "b", "-N", "x"])).is_err());
        assert!(parse_helper(&os(&["a", "b", "-q"])).is_err());
    }

    #[test]
    fn helper_names() {
        assert!(is_helper_name(
            OsString::from("/sbin/mount.fuse.cowfs").as_os_str()
        ));
        assert!(!is_helper_name(
            OsString::from("/usr/local/bin/cowfs").as_os_str()
        ));
    }
}
