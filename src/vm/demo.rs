//! `cowfs pages demo`: the story of fork() told on the page store, step by step, with
//! the counters after each step.

use super::space::{AddressSpace, Counters, PageLayer};
use crate::error::Result;
use crate::ids::PageNo;
use crate::page::PAGE_SIZE;
use std::collections::HashMap;

const PS: u64 = PAGE_SIZE as u64;

/// One step of the demo: what happened, and the counters after it.
#[derive(Debug, Clone)]
pub struct DemoStep {
    pub title: String,
    /// What the step shows, in the kernel's terms.
    pub story: Vec<String>,
    pub counters: Counters,
    /// Data pages mapped by more than one live address space.
    pub shared_pages: u64,
    /// Data pages mapped by the live spaces (each counted once).
    pub resident_pages: u64,
}

/// Data pages of each space, with how many spaces map each.
fn sharing(spaces: &[&AddressSpace]) -> Result<(u64, u64)> {
    let mut seen: HashMap<PageNo, u32> = HashMap::new();
    for sp in spaces {
        let mut mine = std::collections::HashSet::new();
        for (p, level) in sp.mapped()? {
            if level < 0 {
                mine.insert(p);
            }
        }
        for p in mine {
            *seen.entry(p).or_insert(0) += 1;
        }
    }
    let shared = seen.values().filter(|n| **n > 1).count() as u64;
    Ok((shared, seen.len() as u64))
}

struct Run {
    layer: PageLayer,
    steps: Vec<DemoStep>,
}

impl Run {
    fn step(&mut self, title: &str, story: Vec<String>, spaces: &[&AddressSpace]) -> Result<()> {
        let (shared, resident) = sharing(spaces)?;
        self.steps.push(DemoStep {
            title: title.to_string(),
            story,
            counters: self.layer.counters(),
            shared_pages: shared,
            resident_pages: resident,
        });
        Ok(())
    }
}

fn page_of(tag: u8, n: u64) -> Vec<u8> {
    let mut b = vec![tag; PAGE_SIZE];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b
}

/// Runs the demo with `n` pages in process A, on `layer` (an empty store).
pub fn demo(layer: &PageLayer, n: u64) -> Result<Vec<DemoStep>> {
    let n = n.max(2);
    let mut run = Run {
        layer: layer.clone(),
        steps: Vec::new(),
    };
    let mut a = layer.space();
    for i in 0..n {
        a.write(i * PS, &page_of(b'A', i))?;
    }
    run.step(
        "A maps and touches pages",
        vec![format!(
            "process A writes {n} pages: each write over the zero page allocates a page"
        )],
        &[&a],
    )?;

    let b = a.fork()?;
    let root = a.root().node;
    run.step(
        "fork: B shares everything with A",
        vec![
            format!(
                "fork() adds one reference to A's top-level page table (page {}: refcount {}); no page or table is copied, whatever A maps",
                root.0,
                layer.refcount(root)?
            ),
            "Linux copies A's page tables here, which costs time in proportion to A's memory".into(),
        ],
        &[&a, &b],
    )?;

    let mut buf = vec![0u8; PAGE_SIZE];
    let mut same = true;
    for i in 0..n {
        a.read(i * PS, &mut buf)?;
        let mut c = vec![0u8; PAGE_SIZE];
        b.read(i * PS, &mut c)?;
        same &= buf == c && buf == page_of(b'A', i);
    }
    run.step(
        "both read every page",
        vec![format!(
            "A and B read all {n} pages and see the same bytes ({}): reads copy nothing",
            if same { "checked" } else { "MISMATCH" }
        )],
        &[&a, &b],
    )?;

    let z = n / 2;
    let before = a.page_at(z * PS)?;
    a.write(z * PS, &page_of(b'Z', z))?;
    let after = a.page_at(z * PS)?;
    b.read(z * PS, &mut buf)?;
    run.step(
        "A writes page Z: one copy-on-write fault",
        vec![
            format!(
                "A writes page {z}: the page (store page {}) is shared, so A gets a copy (store page {}) and the table path above it is copied too; every other page stays shared",
                before.0, after.0
            ),
            format!(
                "B still reads its own page {z}: {}",
                if buf == page_of(b'A', z) { "unchanged" } else { "CHANGED (bug)" }
            ),
            format!(
                "refcounts now: A's copy {}, B's original {}, a neighbour page {}",
                layer.refcount(after)?,
                layer.refcount(before)?,
                layer.refcount(a.page_at(((z + 1) % n) * PS)?)?
            ),
        ],
        &[&a, &b],
    )?;

    a.write(z * PS, &page_of(b'z', z))?;
    run.step(
        "A writes page Z again: in place",
        vec!["A alone holds its copy now, so the second write goes in place: no fault".into()],
        &[&a, &b],
    )?;

    let mut c = layer.space();
    let span = 64u64 << 30;
    let probes = 1024u64;
    let mut zeros = true;
    let mut one = [0u8; 1];
    for k in 0..probes {
        c.read(k * (span / probes), &mut one)?;
        zeros &= one[0] == 0;
    }
    run.step(
        "a 64 GiB sparse allocation reads as the zero page",
        vec![
            format!(
                "process C maps 64 GiB and reads {probes} pages across it: all zero ({}), all answered by the one zero page, nothing allocated",
                if zeros { "checked" } else { "NOT ZERO (bug)" }
            ),
        ],
        &[&a, &b, &c],
    )?;
    c.write(span - PS, b"only this page costs anything")?;
    run.step(
        "C writes one page at the far end",
        vec!["only the written page and the table pages above it are allocated".into()],
        &[&a, &b, &c],
    )?;
    drop(c);

    b.release()?;
    layer.commit()?;
    run.step(
        "B exits: its references go",
        vec![
            "B's table drops its references: pages only B held (its original page Z and its table pages) are freed; pages A still maps stay".into(),
        ],
        &[&a],
    )?;
    a.write(((z + 1) % n) * PS, &page_of(b'N', 0))?;
    run.step(
        "A writes a page it used to share",
        vec!["B is gone, so the page is A's alone again: written in place, no fault".into()],
        &[&a],
    )?;
    drop(a);
    layer.commit()?;
    run.step(
        "A exits",
        vec!["every page the demo allocated is free again".into()],
        &[],
    )?;
    Ok(run.steps)
}
