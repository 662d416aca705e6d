//! segnet-bayes: Bayesian SegNet (Kendall, Badrinarayanan, Cipolla 2015) on libtorch.
//!
//! Follow an image through the crate: `cli` parses the command, `infer` reads the image
//! (`image_io`), runs the Monte Carlo sampler (`mc`) over the network (`model`), and hands the
//! class probabilities and uncertainty maps to `render`, which writes the PNGs.
//! Training (`train`) reads `data`, evaluation (`eval`) scores with `metrics`.
//! A run split over machines: `items` fixes the work list and its names, `shard` picks this
//! task's share, `ledger` keeps the run's records, `merge` joins them.

pub mod atomic;
mod batch;
mod bench;
pub mod cli;
pub mod config;
mod data;
mod device;
mod eval;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod image_io;
pub mod infer;
pub mod items;
pub mod ledger;
pub mod mc;
pub mod merge;
mod metrics;
pub mod model;
mod optim;
mod overrides;
pub mod plot;
mod precision;
pub mod progress;
pub mod render;
mod resume;
mod rng;
pub mod shard;
mod stream;
mod swa;
mod train;
mod trainset;
mod upsample;

/// Called first thing by each binary, while it is the only thread: MKL may otherwise run fewer
/// threads than asked when the machine is busy (`MKL_DYNAMIC`), which changes how sums are split
/// and so the last bits of a result. With it off, the same input, seed and `--threads` give the
/// same bytes whatever else the machine does (chunk sizes, shards and reruns rely on that).
/// A value the user set wins.
pub fn fix_math_library_threads() {
    if std::env::var_os("MKL_DYNAMIC").is_none() {
        std::env::set_var("MKL_DYNAMIC", "FALSE");
    }
}

/// libtorch has one global random generator: tests that seed it take this lock, so tests
/// running in parallel threads do not draw from each other's sequence.
#[cfg(test)]
pub(crate) static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
