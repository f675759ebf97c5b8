//! The `cowfs` command: parse, set up logging, call the library, report. Started as
//! `mount.fuse.cowfs` (mount(8)'s helper for `-t fuse.cowfs`), it takes mount(8)'s
//! arguments instead.

use clap::Parser;
use std::io::Write;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .first()
        .is_some_and(|a| cowfs::cli::mountopts::is_helper_name(a))
    {
        std::process::exit(cowfs::cli::mountopts::helper_main(&args[1..]));
    }
    let cli = cowfs::cli::Cli::parse();
    match cowfs::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cowfs: {e}");
            std::process::exit(1);
        }
    }
}
