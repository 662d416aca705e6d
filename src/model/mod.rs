//! The networks: building blocks, SegNet / SegNet-Basic with MC dropout, and checkpoints.

pub mod blocks;
pub mod checkpoint;
pub mod segnet;

pub use segnet::{Mode, Prefix, SegNet};
