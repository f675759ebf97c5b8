//! Copy-on-write maps: a file's content (or a directory's blocks, or the inode table) is a
//! radix tree of pages. Sharing a map costs one reference on its root; writing under a
//! shared node copies only the path of nodes it touches.

mod map;
pub mod node;

pub use map::{MAX_DEPTH, MapRoot, Payload};
pub use node::FANOUT;
