//! The one error enum, and the only place an errno is chosen.

use std::fmt;

/// Every failure cowfs can report.
#[derive(Debug)]
pub enum Error {
    /// The host file system failed.
    Io(std::io::Error),
    /// No such file, directory or attribute target.
    NotFound,
    /// The name already exists.
    Exists,
    /// A path component is not a directory.
    NotDir,
    /// The operation needs a non-directory.
    IsDir,
    /// The directory is not empty.
    NotEmpty,
    /// A name is longer than 255 bytes.
    NameTooLong,
    /// The store or its configured limit is full.
    NoSpace,
    /// An argument is invalid; the text says which.
    Invalid(&'static str),
    /// Operation not permitted (EPERM).
    NotPermitted,
    /// Permission denied (EACCES).
    Access,
    /// The extended attribute does not exist.
    NoAttr,
    /// A caller's buffer is too small.
    Range,
    /// The file would grow past the largest supported size.
    TooBig,
    /// Too many hard links.
    TooManyLinks,
    /// Not supported by cowfs.
    Unsupported,
    /// The operation would cross file systems.
    CrossDevice,
    /// A stored page failed its checks.
    Corrupt { page: u64, what: String },
    /// The directory is not a cowfs store, or cannot be used as one.
    BadStore(String),
    /// A file handle that does not exist.
    BadHandle,
    /// lseek past the end, or no data/hole there (ENXIO).
    NoSuchOffset,
    /// A commit failed half way; the store refuses changes until it is reopened.
    Failed,
    /// An ioctl cowfs does not know (ENOTTY).
    UnknownIoctl,
    /// A bug: an internal error such as a caught panic (EIO).
    Internal,
    /// A write into a read-only snapshot, or into a store whose commits failed (EROFS).
    ReadOnly,
    /// Too many of something in progress at once (EBUSY): dedup runs.
    Busy,
    /// An inode of a snapshot that no longer exists (ESTALE).
    Stale,
    /// No snapshot has this name.
    NoSnapshot(String),
    /// A snapshot with this name exists already.
    SnapshotExists(String),
}

/// Result with the crate's error.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno reported to the kernel: the single table of the project.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::NoSpace => libc::ENOSPC,
            Error::Invalid(_) => libc::EINVAL,
            Error::NotPermitted => libc::EPERM,
            Error::Access => libc::EACCES,
            Error::NoAttr => libc::ENODATA,
            Error::Range => libc::ERANGE,
            Error::TooBig => libc::EFBIG,
            Error::TooManyLinks => libc::EMLINK,
            Error::Unsupported => libc::EOPNOTSUPP,
            Error::CrossDevice => libc::EXDEV,
            Error::Corrupt { .. } => libc::EIO,
            Error::BadStore(_) => libc::EINVAL,
            Error::BadHandle => libc::EBADF,
            Error::NoSuchOffset => libc::ENXIO,
            Error::Failed | Error::Internal => libc::EIO,
            Error::UnknownIoctl => libc::ENOTTY,
            Error::ReadOnly => libc::EROFS,
            Error::Busy => libc::EBUSY,
            Error::Stale => libc::ESTALE,
            Error::NoSnapshot(_) => libc::ENOENT,
            Error::SnapshotExists(_) => libc::EEXIST,
        }
    }

    /// Shorthand for a corruption report on one page.
    pub fn corrupt(page: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            page,
            what: what.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Invalid(why) => write!(f, "invalid argument: {why}"),
            Error::Corrupt { page, what } => write!(f, "corrupt page {page}: {what}"),
            Error::BadStore(why) => write!(f, "{why}"),
            Error::Failed => write!(f, "a commit failed: the store is read-only until remounted"),
            Error::Internal => write!(f, "internal error"),
            Error::NoSnapshot(n) => write!(f, "no snapshot named '{n}'"),
            Error::SnapshotExists(n) => write!(f, "snapshot '{n}' already exists"),
            other => {
                let e = std::io::Error::from_raw_os_error(other.errno());
                write!(f, "{e}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        assert_eq!(Error::NotFound.errno(), libc::ENOENT);
        assert_eq!(Error::corrupt(3, "x").errno(), libc::EIO);
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Error::from(io).errno(), libc::ENOSPC);
        assert!(Error::corrupt(7, "bad crc").to_string().contains("page 7"));
    }
}
