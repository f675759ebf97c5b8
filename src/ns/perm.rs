//! Permission checks for requests the kernel cannot check for us (ioctls that name inodes
//! or paths in their payload): an inode number is not a capability.

use super::inode::Inode;

/// Read permission.
pub const R: u32 = 4;
/// Write permission.
pub const W: u32 = 2;
/// Search/execute permission.
pub const X: u32 = 1;

/// A caller's credentials, supplementary groups included.
#[derive(Debug, Clone, Default)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Cred {
    /// The superuser.
    pub fn root() -> Cred {
        Cred::default()
    }

    /// True when this caller may access `i` with every bit of `mask` (R, W, X), by the
    /// classic owner/group/other rules; root may do anything but execute a file no one may.
    pub fn may(&self, i: &Inode, mask: u32) -> bool {
        self.may_mode(i.mode, i.uid, i.gid, mask)
    }

    /// `may` for a file of `mode` (type bits included) owned by `uid` and `gid`.
    pub fn may_mode(&self, mode: u32, uid: u32, gid: u32, mask: u32) -> bool {
        if self.uid == 0 {
            let dir = mode & libc::S_IFMT == libc::S_IFDIR;
            return mask & X == 0 || dir || mode & 0o111 != 0;
        }
        let bits = if self.uid == uid {
            mode >> 6
        } else if self.gid == gid || self.groups.contains(&gid) {
            mode >> 3
        } else {
            mode
        };
        bits & mask == mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_group_other() {
        let f = Inode {
            mode: libc::S_IFREG | 0o640,
            uid: 10,
            gid: 20,
            ..Default::default()
        };
        let owner = Cred {
            uid: 10,
            gid: 99,
            groups: vec![],
        };
        let member = Cred {
            uid: 11,
            gid: 1,
            groups: vec![20],
        };
        let other = Cred {
            uid: 12,
            gid: 1,
            groups: vec![],
        };
        assert!(owner.may(&f, R | W));
        assert!(member.may(&f, R) && !member.may(&f, W));
        assert!(!other.may(&f, R));
        assert!(Cred::root().may(&f, R | W));
        assert!(
            !Cred::root().may(&f, X),
            "root cannot execute a file with no x bit"
        );
    }
}
