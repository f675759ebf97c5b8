//! Pass 2: the namespace. Every directory entry must name a live inode; every inode must be
//! reachable (else it goes to /lost+found); link counts, entry counts and parent pointers
//! must match what the directories say.

use crate::error::Result;
use crate::ids::Ino;
use crate::ns::inode::{Inode, Time};
use crate::ns::{dir, itable};
use crate::store::Store;
use std::collections::{HashMap, HashSet};

/// Entries found: for each directory, its (name, target, kind) list.
type Listing = Vec<(Vec<u8>, Ino, u8)>;

fn list(s: &mut Store, d: &Inode) -> Result<Listing> {
    let mut out = Vec::new();
    dir::for_each(s, d, None, &mut |e| {
        out.push((e.name.clone(), e.ino, e.kind));
        false
    })?;
    Ok(out)
}

const LOST: &[u8] = b"lost+found";

/// What the walk of the directories found: links to each inode, subdirectories of each
/// directory, the directory listing each directory, and every inode reached.
#[derive(Default)]
struct Tally {
    links: HashMap<Ino, u32>,
    subdirs: HashMap<Ino, u32>,
    parent_of: HashMap<Ino, Ino>,
    seen: HashSet<Ino>,
}

/// Checks (and with `repair`, fixes) the namespace. `inodes` comes from pass 1.
pub fn names(
    s: &mut Store,
    inodes: &mut HashMap<Ino, Inode>,
    repair: bool,
    out: &mut Vec<String>,
) -> Result<()> {
    let mut t = Tally {
        seen: HashSet::from([Ino::ROOT, Ino::ORPHANS]),
        ..Default::default()
    };
    t.walk(s, inodes, vec![Ino::ROOT, Ino::ORPHANS], repair, out)?;
    // Of what the walk did not reach, only the top of each lost subtree is lost: what lies
    // below it is reached through it (and keeps its place there).
    let lost = unreached(inodes, &t.seen);
    let named = named_in(s, inodes, &lost);
    let mut heads: Vec<Ino> = lost.into_iter().filter(|i| !named.contains(i)).collect();
    loop {
        if heads.is_empty() {
            // Lost directories that list each other in a cycle have no top: the smallest
            // one stands for them.
            heads = unreached(inodes, &t.seen).into_iter().take(1).collect();
        }
        if heads.is_empty() {
            break;
        }
        for ino in &heads {
            out.push(format!("inode {} is not linked anywhere", ino.0));
        }
        if repair {
            relink(s, inodes, &heads, &mut t)?;
        }
        t.seen.extend(heads.iter().copied());
        let dirs = heads
            .iter()
            .filter(|i| inodes.get(i).is_some_and(|i| i.is_dir()))
            .copied()
            .collect();
        t.walk(s, inodes, dirs, repair, out)?;
        heads.clear();
    }
    fix_counts(s, inodes, &t.links, &t.subdirs, &t.parent_of, repair, out)
}

/// Inodes not reached, in order.
fn unreached(inodes: &HashMap<Ino, Inode>, seen: &HashSet<Ino>) -> Vec<Ino> {
    let mut v: Vec<Ino> = inodes
        .keys()
        .filter(|i| !seen.contains(i))
        .copied()
        .collect();
    v.sort();
    v
}

/// The inodes that entries of the directories among `lost` name.
fn named_in(s: &mut Store, inodes: &HashMap<Ino, Inode>, lost: &[Ino]) -> HashSet<Ino> {
    let mut named = HashSet::new();
    for ino in lost {
        if let Some(d) = inodes.get(ino).filter(|d| d.is_dir())
            && let Ok(l) = list(s, d)
        {
            named.extend(l.into_iter().map(|(_, t, _)| t).filter(|t| t != ino));
        }
    }
    named
}

impl Tally {
    /// Walks the directories in `queue` and everything below them that was not reached
    /// yet, a directory at a time (an explicit stack, never recursion: a tree may be as
    /// deep as anyone likes).
    fn walk(
        &mut self,
        s: &mut Store,
        inodes: &mut HashMap<Ino, Inode>,
        mut queue: Vec<Ino>,
        repair: bool,
        out: &mut Vec<String>,
    ) -> Result<()> {
        while let Some(d) = queue.pop() {
            let Some(di) = inodes.get(&d).cloned() else {
                out.push(format!("directory {} is missing", d.0));
                continue;
            };
            let entries = match list(s, &di) {
                Ok(l) => l,
                Err(e) => {
                    out.push(format!("directory {}: cannot list: {e}", d.0));
                    continue;
                }
            };
            let mut count = 0;
            for (name, t, kind) in entries {
                let Some(ti) = inodes.get(&t) else {
                    out.push(format!(
                        "directory {}: entry {:?} names missing inode {}",
                        d.0,
                        String::from_utf8_lossy(&name),
                        t.0
                    ));
                    if repair {
                        let mut dd = itable::get(s, d)?;
                        dir::remove(s, &mut dd, &name)?;
                        itable::put(s, d, &dd)?;
                        inodes.insert(d, dd);
                    }
                    continue;
                };
                count += 1;
                if d == Ino::ORPHANS {
                    self.seen.insert(t);
                    continue;
                }
                if kind as u32 != ti.file_type() >> 12 {
                    out.push(format!(
                        "directory {}: entry {:?} has the wrong type",
                        d.0,
                        String::from_utf8_lossy(&name)
                    ));
                }
                if ti.is_dir() {
                    *self.subdirs.entry(d).or_insert(0) += 1;
                    if self.parent_of.insert(t, d).is_some() || t == Ino::ROOT {
                        out.push(format!("directory {} is linked twice", t.0));
                        continue;
                    }
                }
                *self.links.entry(t).or_insert(0) += 1;
                if self.seen.insert(t) && ti.is_dir() {
                    queue.push(t);
                }
            }
            if di.entries != count && !repair {
                out.push(format!(
                    "directory {}: says {} entries, has {count}",
                    d.0, di.entries
                ));
            }
        }
        Ok(())
    }
}

/// Links the tops of lost subtrees into /lost+found as "#INO".
fn relink(
    s: &mut Store,
    inodes: &mut HashMap<Ino, Inode>,
    lost: &[Ino],
    t: &mut Tally,
) -> Result<()> {
    let mut root = itable::get(s, Ino::ROOT)?;
    let lf = match dir::lookup(s, &root, LOST)? {
        Some(e) => e.ino,
        None => {
            let now = Time::now();
            let d = Inode {
                mode: libc::S_IFDIR | 0o700,
                nlink: 2,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                parent: Ino::ROOT.0,
                ..Default::default()
            };
            let ino = itable::alloc_ino(s);
            itable::put(s, ino, &d)?;
            dir::insert(s, &mut root, LOST, ino, (libc::S_IFDIR >> 12) as u8)?;
            itable::put(s, Ino::ROOT, &root)?;
            *t.subdirs.entry(Ino::ROOT).or_insert(0) += 1;
            t.parent_of.insert(ino, Ino::ROOT);
            t.links.insert(ino, 1);
            t.seen.insert(ino);
            inodes.insert(ino, d);
            ino
        }
    };
    let mut d = itable::get(s, lf)?;
    for ino in lost {
        let Some(i) = inodes.get(ino) else { continue };
        dir::insert(
            s,
            &mut d,
            format!("#{}", ino.0).as_bytes(),
            *ino,
            (i.file_type() >> 12) as u8,
        )?;
        *t.links.entry(*ino).or_insert(0) += 1;
        if i.is_dir() {
            *t.subdirs.entry(lf).or_insert(0) += 1;
            t.parent_of.insert(*ino, lf);
        }
    }
    itable::put(s, lf, &d)?;
    inodes.insert(lf, d);
    Ok(())
}

fn fix_counts(
    s: &mut Store,
    inodes: &mut HashMap<Ino, Inode>,
    links: &HashMap<Ino, u32>,
    subdirs: &HashMap<Ino, u32>,
    parent_of: &HashMap<Ino, Ino>,
    repair: bool,
    out: &mut Vec<String>,
) -> Result<()> {
    let mut inos: Vec<Ino> = inodes.keys().copied().collect();
    inos.sort();
    for ino in inos {
        let mut i = if repair {
            itable::get(s, ino)?
        } else {
            inodes[&ino].clone()
        };
        let mut changed = false;
        let want = if i.is_dir() {
            2 + subdirs.get(&ino).copied().unwrap_or(0)
        } else {
            links.get(&ino).copied().unwrap_or(0)
        };
        // Unlinked while held (open, or known to the kernel): listed in the orphan
        // directory only, with no links, files and directories alike.
        let orphan = i.nlink == 0 && !links.contains_key(&ino) && !parent_of.contains_key(&ino);
        if i.nlink != want && !orphan && ino != Ino::ORPHANS {
            out.push(format!(
                "inode {}: nlink {} but {want} links",
                ino.0, i.nlink
            ));
            i.nlink = want;
            changed = true;
        }
        let special = ino == Ino::ROOT || ino == Ino::ORPHANS;
        if i.is_dir()
            && !special
            && let Some(p) = parent_of.get(&ino)
            && i.parent != p.0
        {
            out.push(format!(
                "directory {}: parent {} but listed in {}",
                ino.0, i.parent, p.0
            ));
            i.parent = p.0;
            changed = true;
        }
        if repair && i.is_dir() {
            let n = list(s, &i).map(|l| l.len() as u64).unwrap_or(i.entries);
            if n != i.entries {
                out.push(format!(
                    "directory {}: says {} entries, has {n}",
                    ino.0, i.entries
                ));
                i.entries = n;
                changed = true;
            }
        }
        if repair && changed {
            itable::put(s, ino, &i)?;
        }
    }
    Ok(())
}
