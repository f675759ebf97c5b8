//! Extended attributes: every attribute of an inode in one blob of
//! `[name length u8][value length u32][name][value]` records.

use super::blob;
use super::fs::Fs;
use super::inode::Time;
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};

/// setxattr flags.
pub const XATTR_CREATE: i32 = 1;
pub const XATTR_REPLACE: i32 = 2;
const MAX_BLOB: usize = 1 << 20;
const NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// Splits an xattr blob into its records, checked: every record whole (the blob is
/// exactly a run of records), every name 1..=255 bytes in a supported namespace, no name
/// twice. `p` (the blob's root page) names the corruption.
pub fn parse(p: PageNo, b: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = |at: usize, why: &str| Error::corrupt(p.0, format!("xattr blob at byte {at}: {why}"));
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut off = 0;
    while off < b.len() {
        let head = b
            .get(off..off + 5)
            .ok_or_else(|| bad(off, "record cut short"))?;
        let nl = head[0] as usize;
        let vl = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let start = off + 5;
        let name = b
            .get(start..start + nl)
            .ok_or_else(|| bad(off, "name runs past the blob"))?;
        let value = start
            .checked_add(nl)
            .and_then(|v| Some(v..v.checked_add(vl)?))
            .and_then(|r| b.get(r))
            .ok_or_else(|| bad(off, "value runs past the blob"))?;
        check_name(name).map_err(|_| bad(off, "name outside the supported namespaces"))?;
        if !seen.insert(name) {
            return Err(bad(off, "name given twice"));
        }
        out.push((name.to_vec(), value.to_vec()));
        off = start + nl + vl;
    }
    Ok(out)
}

fn encode(all: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in all {
        b.push(n.len() as u8);
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        b.extend_from_slice(n);
        b.extend_from_slice(v);
    }
    b
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > 255 {
        return Err(Error::Range);
    }
    if !NAMESPACES
        .iter()
        .any(|ns| name.starts_with(ns) && name.len() > ns.len())
    {
        return Err(Error::Unsupported);
    }
    Ok(())
}

impl Fs {
    fn load_xattrs(&mut self, ino: Ino) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let i = self.peek(ino)?;
        parse(
            i.xattr.node,
            &blob::read(&mut self.store, &i.xattr, i.xattr_len)?,
        )
    }

    fn save_xattrs(&mut self, ino: Ino, all: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let b = encode(all);
        if b.len() > MAX_BLOB {
            return Err(Error::NoSpace);
        }
        let mut i = self.get(ino)?;
        blob::write(&mut self.store, &mut i.xattr, &b)?;
        i.xattr_len = b.len() as u64;
        i.ctime = Time::now();
        self.put(ino, &i)
    }

    /// Drops `security.capability`, as the kernel does on a write, truncate or chown (with
    /// FUSE_HANDLE_KILLPRIV_V2 it leaves that to us). Cheap for a file without attributes.
    pub(super) fn kill_capability(&mut self, ino: Ino) -> Result<()> {
        if self.peek(ino)?.xattr_len == 0 {
            return Ok(());
        }
        let mut all = self.load_xattrs(ino)?;
        let n = all.len();
        all.retain(|(k, _)| k.as_slice() != b"security.capability");
        if all.len() != n {
            self.save_xattrs(ino, &all)?;
        }
        Ok(())
    }

    /// Sets attribute `name` (flags: XATTR_CREATE, XATTR_REPLACE).
    pub fn setxattr(&mut self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        check_name(name)?;
        let i = self.get(ino)?;
        if name.starts_with(b"user.") && !i.is_file() && !i.is_dir() {
            return Err(Error::NotPermitted);
        }
        let mut all = self.load_xattrs(ino)?;
        let pos = all.iter().position(|(n, _)| n == name);
        match (pos, flags & (XATTR_CREATE | XATTR_REPLACE)) {
            (Some(_), XATTR_CREATE) => return Err(Error::Exists),
            (None, XATTR_REPLACE) => return Err(Error::NoAttr),
            (Some(p), _) => all[p].1 = value.to_vec(),
            (None, _) => all.push((name.to_vec(), value.to_vec())),
        }
        self.save_xattrs(ino, &all)
    }

    /// The value of attribute `name`.
    pub fn getxattr(&mut self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        check_name(name).map_err(|e| match e {
            Error::Unsupported => Error::NoAttr,
            e => e,
        })?;
        let all = self.load_xattrs(ino)?;
        all.into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(Error::NoAttr)
    }

    /// Every attribute name, each followed by a NUL byte.
    pub fn listxattr(&mut self, ino: Ino) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (n, _) in self.load_xattrs(ino)? {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    /// Removes attribute `name`.
    pub fn removexattr(&mut self, ino: Ino, name: &[u8]) -> Result<()> {
        check_name(name).map_err(|e| match e {
            Error::Unsupported => Error::NoAttr,
            e => e,
        })?;
        let mut all = self.load_xattrs(ino)?;
        let before = all.len();
        all.retain(|(n, _)| n != name);
        if all.len() == before {
            return Err(Error::NoAttr);
        }
        self.save_xattrs(ino, &all)
    }
}
