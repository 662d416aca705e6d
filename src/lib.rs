//! segnet-bayes: Bayesian SegNet (Kendall, Badrinarayanan, Cipolla 2015) on libtorch.
//!
//! Follow an image through the crate: `cli` parses the command, `infer` reads the image
//! (`image_io`), runs the Monte Carlo sampler (`mc`) over the network (`model`), and hands the
//! class probabilities and uncertainty maps to `render`, which writes the PNGs.
//! Training (`train`) reads `data`, evaluation (`eval`) scores with `metrics`.

pub mod atomic;
mod batch;
mod bench;
pub mod cli;
pub mod config;
mod data;
mod device;
mod eval;
pub mod image_io;
pub mod infer;
pub mod mc;
mod metrics;
pub mod model;
mod optim;
pub mod plot;
pub mod progress;
pub mod render;
mod rng;
mod stream;
mod train;

/// libtorch has one global random generator: tests that seed it take this lock, so tests
/// running in parallel threads do not draw from each other's sequence.
#[cfg(test)]
pub(crate) static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
