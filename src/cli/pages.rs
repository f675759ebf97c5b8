//! `cowfs pages demo` and `cowfs pages bench`: the page layer on a scratch store.

use super::parse_size;
use crate::error::{Error, Result};
use crate::page::AnonBackend;
use crate::store::{Store, open_dir};
use crate::vm::{self, PageLayer};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Instant;

const PS: u64 = crate::page::PAGE_SIZE as u64;

/// The page-layer subcommands.
#[derive(Subcommand, Debug)]
pub enum PagesCmd {
    /// Tell the story of fork() on the page store: share, copy on write, zero page, exit.
    Demo {
        /// Pages process A maps.
        #[arg(long, default_value_t = 1024)]
        pages: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Put the page store on disk in this empty directory (default: in memory).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Time fork of a populated address space and the copy-on-write fault per page.
    Bench {
        /// Memory to populate (e.g. 1G, 8G).
        #[arg(long, value_parser = parse_size, default_value = "1G")]
        size: u64,
        /// Forks timed (the median is reported).
        #[arg(long, default_value_t = 9)]
        forks: u32,
        /// Pages written in the fork to time faults (0: every page).
        #[arg(long, default_value_t = 0)]
        fault_pages: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Put the page store on disk in this empty directory (default: in memory).
        #[arg(long)]
        store: Option<PathBuf>,
    },
}

/// The page layer the subcommands run on: a fresh page store in anonymous memory (like a
/// process's memory, the default), or on disk in an empty directory (`--store DIR`: the
/// page file the mounted file system uses, fsync'd on commit). With a directory, the
/// store's lock comes back too: hold it while the layer is in use.
fn layer(store: Option<PathBuf>) -> Result<(PageLayer, Option<std::fs::File>)> {
    let Some(path) = store else {
        let s = Store::create(Box::new(AnonBackend::new()?), Box::new(AnonBackend::new()?))?;
        return Ok((PageLayer::new(s), None));
    };
    if !crate::store::dir::is_blank(&path)? {
        return Err(Error::BadStore(format!(
            "{}: the page layer needs an empty scratch directory",
            path.display()
        )));
    }
    let (store, _, lock) = open_dir(&path, true)?.into_parts();
    Ok((PageLayer::new(store), Some(lock)))
}

/// Runs one `pages` subcommand.
pub fn run(cmd: PagesCmd) -> Result<()> {
    match cmd {
        PagesCmd::Demo { pages, json, store } => {
            if store.is_none() {
                fits_in_memory(pages.saturating_mul(PS), 1)?;
            }
            let (layer, _lock) = layer(store)?;
            let steps = vm::demo(&layer, pages)?;
            print_demo(&steps, json);
            Ok(())
        }
        PagesCmd::Bench {
            size,
            forks,
            fault_pages,
            json,
            store,
        } => {
            if store.is_none() {
                fits_in_memory(size, fault_pages)?;
            }
            let (layer, _lock) = layer(store)?;
            bench(&layer, size, forks.max(1), fault_pages, json)
        }
    }
}

fn print_demo(steps: &[vm::DemoStep], json: bool) {
    if json {
        let items: Vec<String> = steps
            .iter()
            .map(|s| {
                let c = &s.counters;
                format!(
                    "{{\"step\":{:?},\"allocated\":{},\"freed\":{},\"shared\":{},\"resident\":{},\"cow_faults\":{},\"table_copies\":{},\"zero_page_reads\":{},\"in_place_writes\":{},\"forks\":{}}}",
                    s.title,
                    c.allocated,
                    c.freed,
                    s.shared_pages,
                    s.resident_pages,
                    c.cow_faults,
                    c.table_copies,
                    c.zero_page_reads,
                    c.in_place_writes,
                    c.forks
                )
            })
            .collect();
        println!("[{}]", items.join(",\n "));
        return;
    }
    for (k, s) in steps.iter().enumerate() {
        println!("{}. {}", k + 1, s.title);
        for line in &s.story {
            println!("   {line}");
        }
        let c = &s.counters;
        println!(
            "   | allocated {:>6} | freed {:>6} | resident {:>6} | shared {:>6} | CoW faults {:>4} | table copies {:>3} | zero-page reads {:>5} | in-place writes {:>6} |",
            c.allocated,
            c.freed,
            s.resident_pages,
            s.shared_pages,
            c.cow_faults,
            c.table_copies,
            c.zero_page_reads,
            c.in_place_writes
        );
        println!();
    }
}

/// Refuses a bench whose pages would not fit in memory (the kernel would kill us instead of
/// failing the allocation): SIZE, plus the pages the fork copies, plus an eighth for maps.
fn fits_in_memory(size: u64, fault_pages: u64) -> Result<()> {
    let copies = if fault_pages == 0 {
        size
    } else {
        (fault_pages * PS).min(size)
    };
    let need = size.saturating_add(copies).saturating_add(size / 8);
    let Some(avail) = mem_available() else {
        return Ok(());
    };
    if need > avail {
        return Err(Error::BadStore(format!(
            "{} of pages in memory needs about {}, and {} is available; \
             ask for fewer pages, or put them on disk with --store DIR",
            crate::cli::tools::human(size),
            crate::cli::tools::human(need),
            crate::cli::tools::human(avail)
        )));
    }
    Ok(())
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(layer: &PageLayer, size: u64, forks: u32, fault_pages: u64, json: bool) -> Result<()> {
    let pages = (size / PS).max(1);
    let mut a = layer.space();
    let t = Instant::now();
    let mut page = vec![0u8; PS as usize];
    for i in 0..pages {
        page[..8].copy_from_slice(&i.to_le_bytes());
        a.write(i * PS, &page)?;
    }
    layer.commit()?;
    let populate = t.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..forks {
        let t = Instant::now();
        let b = a.fork()?;
        times.push(t.elapsed().as_secs_f64());
        b.release()?;
    }
    let fork_s = median(times);
    let n = if fault_pages == 0 {
        pages
    } else {
        fault_pages.min(pages)
    };
    let mut b = a.fork()?;
    let before = layer.counters().cow_faults;
    let t = Instant::now();
    for i in 0..n {
        b.write(i * PS, &[1u8])?;
    }
    let fault_s = t.elapsed().as_secs_f64();
    let faults = layer.counters().cow_faults - before;
    drop(b);
    drop(a);
    let per_fault_us = fault_s * 1e6 / n as f64;
    if json {
        println!(
            "{{\"bytes\":{size},\"pages\":{pages},\"populate_s\":{populate:.3},\"fork_us\":{:.3},\"fault_pages\":{n},\"cow_faults\":{faults},\"fault_us_per_page\":{per_fault_us:.3}}}",
            fork_s * 1e6
        );
    } else {
        println!(
            "populated {pages} pages ({}) in {populate:.2} s",
            crate::cli::tools::human(size)
        );
        println!("fork: {:.2} us (median of {forks})", fork_s * 1e6);
        println!("copy-on-write faults: {faults} in {fault_s:.3} s: {per_fault_us:.2} us per page");
    }
    Ok(())
}
