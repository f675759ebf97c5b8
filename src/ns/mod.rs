//! POSIX namespace.
