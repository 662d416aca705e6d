//! The networks: building blocks, SegNet / SegNet-Basic with MC dropout, and checkpoints.

mod blocks;
pub mod checkpoint;
mod segnet;

pub use segnet::SegNet;
pub(crate) use segnet::{Mode, Prefix};
