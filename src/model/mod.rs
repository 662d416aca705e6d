//! The networks: building blocks, SegNet / SegNet-Basic with MC dropout, and checkpoints.

mod blocks;
pub mod checkpoint;
pub(crate) mod init;
mod segnet;

pub(crate) use segnet::{Mode, Prefix};
pub use segnet::{Precision, SegNet};
