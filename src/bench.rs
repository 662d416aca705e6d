//! `segnet-bayes bench`: times MC dropout inference three ways on a random image.
//!
//! - `loop`: T full passes, one sample each (what public PyTorch code does);
//! - `batch`: the T samples as one batch through the full network;
//! - `prefix`: the sampler that `infer` uses: batch norm folded into the convs, the
//!   deterministic prefix computed once, the suffix in chunks of `--chunk` samples.
//!
//! All three accumulate the same streamed statistics. Reports the median time per image, the
//! GFLOP/s of the convolutions actually run, and the peak resident memory of each mode (the
//! process's high-water mark is reset between modes through /proc/self/clear_refs).
//!
//! Compare with `../shared/bench/peer_segnet.py` (or `tools/bench_peer.sh`) at the same
//! architecture, size, T and thread count.

use std::time::Instant;

use anyhow::{ensure, Result};
use tch::{nn, Kind, Tensor};

use crate::cli::{BenchArgs, BenchMode};
use crate::config::ModelConfig;
use crate::mc::{self, Accumulator, McOptions};
use crate::model::{Mode, SegNet};

/// Peak resident set size of this process in bytes (VmHWM), if readable.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak-RSS mark to the current RSS (Linux); false when not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `mode` over the images `x` (`[B, 3, H, W]`; loop and batch take the first).
fn run_mode(net: &SegNet, x: &Tensor, mode: BenchMode, samples: usize, chunk: usize) {
    let (xs, x) = (x, &x.get(0));
    tch::no_grad(|| match mode {
        BenchMode::Loop => {
            let mut acc = Accumulator::new();
            for _ in 0..samples {
                let logits = net.forward(&x.unsqueeze(0), Mode::MC);
                acc.add(&logits.softmax(1, Kind::Float));
            }
            let _ = acc.finish();
        }
        BenchMode::Batch => {
            let xs = x.unsqueeze(0).expand([samples as i64, -1, -1, -1], false);
            let mut acc = Accumulator::new();
            acc.add(&net.forward(&xs, Mode::MC).softmax(1, Kind::Float));
            let _ = acc.finish();
        }
        BenchMode::Prefix => {
            let opts = McOptions {
                samples,
                chunk,
                seed: None,
                adaptive: None,
                flip: false,
                flip_phase: false,
            };
            let _ = mc::sample_batch(net, xs, &opts).expect("valid options");
        }
    });
    if let tch::Device::Cuda(i) = x.device() {
        tch::Cuda::synchronize(i as i64);
    }
}

pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    ensure!(args.samples >= 1, "--samples must be at least 1");
    ensure!(args.chunk >= 1, "--chunk must be at least 1");
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(args.images >= 1, "--images must be at least 1");
    ensure!(
        args.height >= 32 && args.width >= 32,
        "--height and --width must be at least 32"
    );
    let device = args.device.init()?;
    crate::batch::check_precision(args.precision, device)?;
    let cfg = ModelConfig {
        arch: args.arch,
        width: args.net_width,
        ..Default::default()
    };
    cfg.validate()?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let mut plain = SegNet::new(&vs.root(), &cfg);
    let (total, prefix) = plain.flops(&vs, args.height, args.width);
    let images = args.images as i64;
    let x = Tensor::randn([images, 3, args.height, args.width], (Kind::Float, device));
    println!(
        "segnet-bayes {:?} width {} {}x{} T={} chunk={} images={} precision={:?} device={:?} threads={}: {:.1} GFLOP per pass, prefix {:.0}%",
        args.arch,
        args.net_width,
        args.height,
        args.width,
        args.samples,
        args.chunk,
        args.images,
        args.precision,
        device,
        tch::get_num_threads(),
        total / 1e9,
        100.0 * prefix / total
    );
    for &mode in &args.modes {
        if mode == BenchMode::Prefix {
            plain.fold_batchnorm();
            plain.set_precision(args.precision);
        }
        let net = &plain;
        run_mode(net, &x, mode, 2.min(args.samples), args.chunk); // warm-up
        reset_peak_rss();
        let mut times = vec![];
        for _ in 0..args.runs {
            let start = Instant::now();
            run_mode(net, &x, mode, args.samples, args.chunk);
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        // Per image: the prefix mode runs the whole batch of images, the others one.
        let per = if mode == BenchMode::Prefix {
            args.images as f64
        } else {
            1.0
        };
        let median = times[times.len() / 2] / per;
        let t = args.samples as f64;
        let work = match mode {
            BenchMode::Prefix if net.is_stochastic() => prefix + t * (total - prefix),
            _ => t * total,
        };
        let peak = peak_rss()
            .map(|b| format!("{:.2} GB", b as f64 / 1e9))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "  {:<6} median {:>8.0} ms per image (min {:.0}), {:>6.1} ms per sample, {:.1} GFLOP/s run, {:.1} GFLOP/s equivalent, peak RSS {}",
            format!("{mode:?}").to_lowercase(),
            median * 1e3,
            times[0] * 1e3 / per,
            median * 1e3 / t,
            work / median / 1e9,
            t * total / median / 1e9,
            peak
        );
    }
    Ok(())
}
