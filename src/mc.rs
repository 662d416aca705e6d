//! The Monte Carlo dropout sampler, used by every command that predicts.
//!
//! T stochastic passes with dropout on and batch norm on its running statistics (Bayesian
//! SegNet). The deterministic prefix (everything before the first dropout, pooling switches
//! included) runs once per image; the samples run through the suffix in chunks, and the
//! statistics are accumulated as samples arrive (Welford's mean/variance update, in fp32), so
//! memory does not grow with T: there is never a stack of T probability maps. Each sample's
//! dropout masks depend only on the seed and the sample's index, so the chunk size does not
//! change the samples, and the first n of T samples are the samples of a run with T = n.
//! With adaptive stopping (`adaptive`, the CLI's default) a run ends once its estimate has
//! settled, so it is the run with T = n for the n it took.
//!
//! Outputs per pixel: mean softmax, its argmax, the softmax variance across samples averaged over
//! classes (Bayesian SegNet's uncertainty map; population variance, divided by T), predictive
//! entropy H[mean p], and mutual information H[mean p] - mean H[p] (Gal 2016).
//!
//! With `flip` (test-time augmentation) every other sample runs on the image mirrored
//! left-right; the samples then also differ in the view they see.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use crate::model::{Mode, SegNet};
use crate::rng::mix_seed;
use crate::upsample;

mod adaptive;
mod batch;
mod moments;
pub use adaptive::Settle;
pub(crate) use batch::sample_batch;
pub use moments::Moments;

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct McOptions {
    /// T, the number of stochastic passes (the most, with adaptive stopping).
    pub samples: usize,
    /// Samples run through the network together.
    pub chunk: usize,
    /// Seed of the dropout masks, the same for every image: identical inputs give identical
    /// outputs. `None`: a fresh random seed per image.
    pub seed: Option<u64>,
    /// Stop once the estimate has settled (adaptive T); `None`: exactly `samples` passes.
    pub adaptive: Option<Settle>,
    /// Test-time mirroring: the odd-numbered samples see the image mirrored left-right, and
    /// their probabilities are mirrored back (without dropout: the mean of the image's pass and
    /// the mirrored one's). The deterministic prefix then runs twice per image.
    pub flip: bool,
    /// With `flip`, mirror the even-numbered samples instead (segnet-video alternates it from
    /// frame to frame, so that one pass a frame is mirrored on every other frame).
    pub flip_phase: bool,
}

impl McOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        ensure!(
            self.samples >= 1,
            "--samples must be at least 1 (use 1 with --no-dropout for weight averaging)"
        );
        ensure!(self.chunk >= 1, "--chunk must be at least 1");
        self.adaptive.as_ref().map_or(Ok(()), Settle::validate)
    }
}

/// An uncertainty measure computed from the Monte Carlo samples.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// Variance of the softmax samples, averaged over classes (Bayesian SegNet's measure).
    Variance,
    /// Entropy of the mean softmax (total predictive uncertainty).
    Entropy,
    /// Mutual information between prediction and weights (the model's own uncertainty).
    MutualInfo,
}

impl Measure {
    /// The largest value the measure can take with K classes: variance `(1 - 1/K)/K` (the
    /// class-averaged variance of samples on the simplex, reached when each sample is a one-hot
    /// on a uniformly drawn class), entropy and mutual information `ln K`.
    pub(crate) fn bound(self, classes: usize) -> f32 {
        let k = classes.max(2) as f32;
        match self {
            Measure::Variance => (1.0 - 1.0 / k) / k,
            Measure::Entropy | Measure::MutualInfo => k.ln(),
        }
    }

    /// Every measure, in CLI order.
    pub const ALL: [Measure; 3] = [Measure::Variance, Measure::Entropy, Measure::MutualInfo];

    /// The CLI and file name: "variance", "entropy", "mutual-info".
    pub fn name(self) -> &'static str {
        match self {
            Measure::Variance => "variance",
            Measure::Entropy => "entropy",
            Measure::MutualInfo => "mutual-info",
        }
    }
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The sampler's result for one image: statistics at the network's size, read at [`size`]
/// (the network's, or the image's after [`Prediction::resize`]). Maps are upsampled when read,
/// and only the ones read; the class map in row tiles, so the `[K, H, W]` probabilities are
/// never built at the image's size.
///
/// [`size`]: Prediction::size
#[derive(Debug)]
pub struct Prediction {
    /// `[K, h, w]` mean class probabilities.
    pub(crate) probs: Tensor,
    /// `[h, w]` softmax variance across samples, averaged over classes.
    pub(crate) variance: Tensor,
    /// `[h, w]` predictive entropy of the mean probabilities (nats).
    pub(crate) entropy: Tensor,
    /// `[h, w]` mutual information between prediction and weights (nats).
    pub(crate) mutual_info: Tensor,
    /// Number of passes behind these statistics.
    pub(crate) samples: usize,
    /// `[H, W]` the size the maps are read at.
    pub(crate) size: [i64; 2],
}

impl Prediction {
    /// Network passes behind these statistics.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// `[H, W]` uint8 argmax class.
    pub(crate) fn class_map(&self) -> Tensor {
        self.over_classes(|p| p.argmax(0, false).to_kind(Kind::Uint8))
    }

    /// `[H, W]` class indices, row-major.
    pub fn class_bytes(&self) -> Vec<u8> {
        let map = self.class_map().contiguous();
        Vec::<u8>::try_from(map.flatten(0, -1)).expect("class map")
    }

    /// `[H, W]` highest mean probability, row-major.
    pub(crate) fn confidence_values(&self) -> Vec<f32> {
        row_major(&self.over_classes(|p| p.max_dim(0, false).0))
    }

    /// `[H, W]` values of one uncertainty measure, row-major.
    pub fn measure_values(&self, m: Measure) -> Vec<f32> {
        row_major(&self.measure(m))
    }

    /// Mean of one uncertainty measure over the map at [`Prediction::size`].
    pub fn mean(&self, m: Measure) -> f64 {
        self.measure(m).mean(Kind::Float).double_value(&[])
    }

    /// `[H, W]` map of one uncertainty measure, resized bilinearly.
    pub fn measure(&self, m: Measure) -> Tensor {
        let map = match m {
            Measure::Variance => &self.variance,
            Measure::Entropy => &self.entropy,
            Measure::MutualInfo => &self.mutual_info,
        };
        if !self.resized() {
            return map.shallow_clone();
        }
        let mut up = map
            .view([1, 1, map.size()[0], map.size()[1]])
            .upsample_bilinear2d(self.size, false, None, None)
            .view(self.size);
        // In place: at a big image's size this map is the largest tensor there is.
        let _ = up.clamp_min_(0.0);
        up
    }

    /// The same prediction read at another size: probabilities and uncertainty maps are
    /// resized bilinearly (smooth boundaries, not nearest-neighbour blocks), and the
    /// probabilities renormalised, when read.
    pub(crate) fn resize(&self, h: i64, w: i64) -> Prediction {
        Prediction {
            probs: self.probs.shallow_clone(),
            variance: self.variance.shallow_clone(),
            entropy: self.entropy.shallow_clone(),
            mutual_info: self.mutual_info.shallow_clone(),
            samples: self.samples,
            size: [h, w],
        }
    }

    fn resized(&self) -> bool {
        self.probs.size()[1..] != self.size
    }

    /// `reduce` applied over the classes of the probabilities at [`Prediction::size`]:
    /// `[K, rows, W]` to `[rows, W]`, a few rows at a time when resized.
    fn over_classes(&self, reduce: impl Fn(&Tensor) -> Tensor) -> Tensor {
        if self.resized() {
            upsample::reduce_classes(&self.probs, self.size, reduce)
        } else {
            reduce(&self.probs)
        }
    }
}

fn row_major(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().flatten(0, -1)).expect("float map")
}

/// Streaming mean and variance of softmax samples, and the mean per-sample entropy.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    n: i64,
    /// `[K, H, W]`
    mean: Option<Tensor>,
    /// `[K, H, W]` sum of squared deviations from the mean.
    m2: Option<Tensor>,
    /// `[H, W]` summed entropy of the individual samples.
    entropy_sum: Option<Tensor>,
}

/// `-sum_k p log p` over dim `dim`, safe at p = 0.
fn entropy(p: &Tensor, dim: i64) -> Tensor {
    let mut plogp = p.clamp_min(1e-12);
    let _ = plogp.log_().g_mul_(p);
    -plogp.sum_dim_intlist(dim, false, Kind::Float)
}

impl Accumulator {
    pub(crate) fn new() -> Accumulator {
        Accumulator::default()
    }

    /// Adds a chunk of sample probabilities, one sample at a time (Welford's update), so that
    /// the result does not depend on how the samples were chunked.
    ///
    /// # Shapes
    /// `probs: [B, K, H, W]`, softmax over K.
    pub(crate) fn add(&mut self, probs: &Tensor) {
        let probs = probs.to_kind(Kind::Float);
        for i in 0..probs.size()[0] {
            self.add_one(probs.get(i));
        }
    }

    /// # Shapes
    /// `p: [K, H, W]`
    fn add_one(&mut self, p: Tensor) {
        self.n += 1;
        let sample_entropy = entropy(&p, 0);
        match (&mut self.mean, &mut self.m2, &mut self.entropy_sum) {
            (Some(mean), Some(m2), Some(ent)) => {
                // In place where possible: these maps are large and there are T updates.
                let delta = &p - &*mean;
                let _ = mean.lerp_(&p, 1.0 / self.n as f64);
                let _ = m2.addcmul_(&delta, &(&p - &*mean));
                let _ = ent.g_add_(&sample_entropy);
            }
            _ => {
                self.m2 = Some(p.zeros_like());
                self.mean = Some(p.copy());
                self.entropy_sum = Some(sample_entropy);
            }
        }
    }

    /// The statistics of everything added. Panics when nothing was added.
    pub(crate) fn finish(self) -> Prediction {
        let n = self.n as f64;
        let mean = self.mean.expect("at least one sample");
        let variance = (self.m2.expect("m2") / n).mean_dim(0, false, Kind::Float);
        let predictive = entropy(&mean, 0);
        let expected = self.entropy_sum.expect("entropy") / n;
        let mutual_info = (&predictive - expected).clamp_min(0.0);
        let size = [mean.size()[1], mean.size()[2]];
        Prediction {
            probs: mean,
            variance,
            entropy: predictive,
            mutual_info,
            samples: self.n as usize,
            size,
        }
    }
}

/// T Monte Carlo dropout samples of one image (or fewer, once settled, with adaptive stopping).
///
/// # Shapes
/// `image: [3, H, W]` normalised, on the network's device; the prediction has the same H, W.
pub(crate) fn sample(net: &SegNet, image: &Tensor, opts: &McOptions) -> Result<Prediction> {
    Ok(accumulate(net, image, opts)?.finish())
}

/// The moments of the samples [`sample`] takes, for blending with other frames'.
///
/// # Shapes
/// `image: [3, H, W]` normalised, on the network's device; the moments have the same H, W.
pub(crate) fn sample_moments(net: &SegNet, image: &Tensor, opts: &McOptions) -> Result<Moments> {
    Ok(accumulate(net, image, opts)?.moments())
}

fn accumulate(net: &SegNet, image: &Tensor, opts: &McOptions) -> Result<Accumulator> {
    opts.validate()?;
    if !net.is_stochastic() {
        // Nothing random to sample: T identical passes are one pass (two with mirroring).
        return Ok(weight_average_pass(net, image, opts.flip));
    }
    if opts.flip {
        // Two prefixes (the image's and its mirror's): the batch sampler handles both.
        let mut accs = batch::accumulate(net, &image.unsqueeze(0), opts)?;
        return Ok(accs.pop().expect("one image"));
    }
    // Sample i's dropout masks come from (base, i) alone: chunking cannot change them, and
    // the first n samples of a longer run are the same n samples.
    let base = opts.seed.unwrap_or_else(fresh_seed);
    let seeds: Vec<u64> = (0..opts.samples as u64)
        .map(|i| mix_seed(base, i))
        .collect();
    let acc = tch::no_grad(|| {
        let prefix = net.prefix(&image.unsqueeze(0), false);
        let mut acc = Accumulator::new();
        if let Some(settle) = &opts.adaptive {
            adaptive::run(net, &prefix, &seeds, opts.chunk, settle, &mut acc);
            return acc;
        }
        for chunk in seeds.chunks(opts.chunk) {
            let logits = net.suffix(&prefix.for_samples(chunk), Mode::MC);
            acc.add(&logits.softmax(1, Kind::Float));
        }
        acc
    });
    Ok(acc)
}

/// A seed drawn from libtorch's generator, which libtorch seeds randomly at start-up.
fn fresh_seed() -> u64 {
    let draw = Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu));
    draw.int64_value(&[0]) as u64
}

/// Weight averaging: one pass with dropout off (the standard, non-Bayesian prediction); with
/// `flip`, the mean of that pass and the mirrored image's (its variance is theirs).
pub(crate) fn weight_average(net: &SegNet, image: &Tensor, flip: bool) -> Prediction {
    weight_average_pass(net, image, flip).finish()
}

fn weight_average_pass(net: &SegNet, image: &Tensor, flip: bool) -> Accumulator {
    tch::no_grad(|| {
        let mut acc = Accumulator::new();
        let logits = net.forward(&image.unsqueeze(0), Mode::DETERMINISTIC);
        acc.add(&logits.softmax(1, Kind::Float));
        if flip {
            let logits = net.forward(&mirror(&image.unsqueeze(0)), Mode::DETERMINISTIC);
            acc.add(&mirror(&logits.softmax(1, Kind::Float)));
        }
        acc
    })
}

/// `[.., W]` mirrored left-right.
fn mirror(t: &Tensor) -> Tensor {
    t.flip([-1])
}

/// Whether sample `i` sees the mirrored image.
fn mirrored(opts: &McOptions, i: usize) -> bool {
    opts.flip && (i % 2 == 1) != opts.flip_phase
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};
    use std::sync::MutexGuard;

    use tch::{nn, Device};

    /// A tiny SegNet and a random `[3, h, w]` image, drawn under the RNG lock, which the test
    /// keeps for as long as it holds the guard.
    fn setup(
        dropout: f64,
        h: i64,
        w: i64,
    ) -> (MutexGuard<'static, ()>, nn::VarStore, SegNet, Tensor) {
        let rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig {
            arch: Arch::Segnet,
            width: 0.125,
            dropout,
            ..Default::default()
        };
        let n = SegNet::new(&vs.root(), &cfg);
        let x = Tensor::randn([3, h, w], (Kind::Float, Device::Cpu));
        (rng, vs, n, x)
    }

    fn opts(samples: usize, chunk: usize, seed: Option<u64>) -> McOptions {
        McOptions {
            samples,
            chunk,
            seed,
            adaptive: None,
            flip: false,
            flip_phase: false,
        }
    }

    #[test]
    fn streamed_statistics_equal_a_naive_stack() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(3);
        let probs = Tensor::rand([10, 4, 5, 6], (Kind::Float, Device::Cpu)).softmax(1, Kind::Float);
        let mut acc = Accumulator::new();
        for (start, len) in [(0, 3), (3, 3), (6, 1), (7, 3)] {
            acc.add(&probs.narrow(0, start, len));
        }
        let p = acc.finish();
        let mean = probs.mean_dim(0, false, Kind::Float);
        let var = probs
            .var_dim(0, false, false)
            .mean_dim(0, false, Kind::Float);
        let h_mean = entropy(&mean, 0);
        let mi = &h_mean - entropy(&probs, 1).mean_dim(0, false, Kind::Float);
        assert!(p.probs.allclose(&mean, 1e-6, 1e-6, false));
        assert!(p.variance.allclose(&var, 1e-5, 1e-7, false));
        assert!(p.entropy.allclose(&h_mean, 1e-5, 1e-6, false));
        assert!(p
            .mutual_info
            .allclose(&mi.clamp_min(0.0), 1e-4, 1e-6, false));
        assert_eq!(p.samples, 10);
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let (_rng, _vs, n, x) = setup(0.5, 45, 61);
        let run = |chunk, seed| sample(&n, &x, &opts(6, chunk, Some(seed))).unwrap();
        let whole = run(6, 11);
        assert!(whole.variance.max().double_value(&[]) > 0.0);
        for chunk in [4, 2, 1] {
            let chunked = run(chunk, 11);
            for m in Measure::ALL {
                assert!(
                    chunked.measure(m).equal(&whole.measure(m)),
                    "chunk {chunk} changed {m}"
                );
            }
            assert!(chunked.probs.equal(&whole.probs), "chunk {chunk}");
        }
        assert!(!run(2, 12).probs.equal(&whole.probs), "the seed matters");
    }

    #[test]
    fn the_first_samples_of_a_longer_run_are_the_same_samples() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let seeds: Vec<u64> = (0..5).map(|i| mix_seed(3, i)).collect();
        let prefix = tch::no_grad(|| n.prefix(&x.unsqueeze(0), false));
        let five = tch::no_grad(|| n.suffix(&prefix.for_samples(&seeds), Mode::MC));
        let three = tch::no_grad(|| n.suffix(&prefix.for_samples(&seeds[..3]), Mode::MC));
        assert!(five.narrow(0, 0, 3).equal(&three));
        assert!(!five.get(3).equal(&five.get(4)), "samples differ");
    }

    #[test]
    fn without_a_seed_two_runs_differ() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 32);
        let a = sample(&n, &x, &opts(2, 2, None)).unwrap();
        let b = sample(&n, &x, &opts(2, 2, None)).unwrap();
        assert!(!a.probs.equal(&b.probs));
    }

    #[test]
    fn p_zero_has_zero_variance_and_equals_weight_averaging() {
        let (_rng, _vs, n, x) = setup(0.0, 40, 48);
        let mc = sample(&n, &x, &opts(5, 2, None)).unwrap();
        let wa = weight_average(&n, &x, false);
        assert_eq!(mc.variance.abs().max().double_value(&[]), 0.0);
        assert_eq!(mc.mutual_info.abs().max().double_value(&[]), 0.0);
        assert!(mc.probs.allclose(&wa.probs, 1e-6, 1e-7, false));
    }

    #[test]
    fn resize_reads_what_upsampling_the_whole_maps_gives() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let p = sample(&n, &x, &opts(3, 3, Some(1))).unwrap();
        let r = p.resize(64, 81);
        // The way it was done before: every map upsampled at once, at the image's size.
        let up = |t: &Tensor| {
            t.unsqueeze(0)
                .upsample_bilinear2d([64, 81], false, None, None)
                .squeeze_dim(0)
                .clamp_min(0.0)
        };
        let maps = up(&Tensor::stack(
            &[&p.variance, &p.entropy, &p.mutual_info],
            0,
        ));
        for (i, m) in Measure::ALL.into_iter().enumerate() {
            assert!(r.measure(m).equal(&maps.get(i as i64)), "{m}");
        }
        let probs = up(&p.probs);
        let probs = &probs / probs.sum_dim_intlist(0, true, Kind::Float);
        // The same classes, but where two classes tie to float rounding (as an untrained
        // network's often do).
        let differ = r
            .class_map()
            .to_kind(Kind::Int64)
            .ne_tensor(&probs.argmax(0, false));
        let top2 = probs.topk(2, 0, true, true).0;
        let margin = top2.get(0) - top2.get(1);
        let tie = (margin * differ.to_kind(Kind::Float))
            .max()
            .double_value(&[]);
        assert!(tie < 1e-6, "class maps differ where the margin is {tie}");
        let confidence = Tensor::from_slice(&r.confidence_values()).view([64, 81]);
        assert!(confidence.allclose(&probs.max_dim(0, false).0, 1e-6, 1e-6, false));
        assert_eq!(
            p.class_map().size(),
            [32, 40],
            "unresized reads the network's size"
        );
    }

    fn adaptive(samples: usize, chunk: usize, classes: f64, uncertainty: f64) -> McOptions {
        McOptions {
            adaptive: Some(Settle {
                step: 2,
                class_tolerance: classes,
                uncertainty_tolerance: uncertainty,
            }),
            ..opts(samples, chunk, Some(5))
        }
    }

    #[test]
    fn an_adaptive_run_that_stopped_after_n_samples_is_the_fixed_run_of_n() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let early = sample(&n, &x, &adaptive(40, 2, 0.5, 0.5)).unwrap();
        assert!(early.samples < 40, "stopped early: {}", early.samples);
        assert!(early.samples >= 4, "at least two steps: {}", early.samples);
        let fixed = sample(&n, &x, &opts(early.samples, 3, Some(5))).unwrap();
        assert_eq!(fixed.samples, early.samples);
        assert!(early.probs.equal(&fixed.probs));
        for m in Measure::ALL {
            assert!(early.measure(m).equal(&fixed.measure(m)), "{m}");
        }
    }

    #[test]
    fn adaptive_stopping_with_zero_tolerance_runs_every_sample() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let all = sample(&n, &x, &adaptive(9, 4, 0.0, 0.0)).unwrap();
        assert_eq!(all.samples, 9);
        let fixed = sample(&n, &x, &opts(9, 2, Some(5))).unwrap();
        assert!(all.probs.equal(&fixed.probs));
    }

    #[test]
    fn settle_options_are_checked() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 32);
        let mut o = adaptive(4, 2, 0.01, 0.05);
        o.adaptive.as_mut().unwrap().step = 0;
        let e = sample(&n, &x, &o).unwrap_err().to_string();
        assert!(e.contains("--settle-step"), "{e}");
        let e = sample(&n, &x, &adaptive(4, 2, f64::NAN, 0.05))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--settle-classes"), "{e}");
    }

    fn flipped(samples: usize, chunk: usize) -> McOptions {
        McOptions {
            flip: true,
            ..opts(samples, chunk, Some(7))
        }
    }

    #[test]
    fn with_flip_the_odd_samples_see_the_mirror_and_are_mirrored_back() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let p = sample(&n, &x, &flipped(2, 2)).unwrap();
        let seeds = [mix_seed(7, 0), mix_seed(7, 1)];
        let pass = |image: &Tensor, seed: &[u64]| {
            tch::no_grad(|| {
                let prefix = n.prefix(&image.unsqueeze(0), false);
                n.suffix(&prefix.for_samples(seed), Mode::MC)
                    .softmax(1, Kind::Float)
            })
        };
        let first = pass(&x, &seeds[..1]);
        let second = mirror(&pass(&mirror(&x), &seeds[1..]));
        let mean = (first + &second).squeeze_dim(0) / 2.0;
        assert!(p.probs.allclose(&mean, 1e-6, 1e-7, false));
        let unflipped = sample(&n, &x, &opts(2, 2, Some(7))).unwrap();
        assert!(
            !p.probs.equal(&unflipped.probs),
            "the mirror changed the mean"
        );
        // The first sample is the same either way.
        let one = sample(&n, &x, &flipped(1, 1)).unwrap();
        let one_plain = sample(&n, &x, &opts(1, 1, Some(7))).unwrap();
        assert!(one.probs.equal(&one_plain.probs));
    }

    #[test]
    fn the_flip_phase_mirrors_the_even_samples_instead() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let opts = McOptions {
            flip_phase: true,
            ..flipped(1, 1)
        };
        let p = sample(&n, &x, &opts).unwrap();
        let mirrored_pass = tch::no_grad(|| {
            let prefix = n.prefix(&mirror(&x).unsqueeze(0), false);
            let logits = n.suffix(&prefix.for_samples(&[mix_seed(7, 0)]), Mode::MC);
            mirror(&logits.softmax(1, Kind::Float)).squeeze_dim(0)
        });
        assert!(p.probs.allclose(&mirrored_pass, 1e-6, 1e-7, false));
        let plain = sample(&n, &x, &flipped(1, 1)).unwrap();
        assert!(
            !p.probs.equal(&plain.probs),
            "sample 0 mirrored only with the phase"
        );
    }

    #[test]
    fn with_flip_chunking_and_batching_do_not_change_the_result() {
        let (_rng, _vs, n, x) = setup(0.5, 45, 61);
        let whole = sample(&n, &x, &flipped(5, 5)).unwrap();
        for chunk in [1, 2, 3] {
            let chunked = sample(&n, &x, &flipped(5, chunk)).unwrap();
            assert!(
                chunked.probs.allclose(&whole.probs, 1e-6, 1e-7, false),
                "chunk {chunk}"
            );
            for m in Measure::ALL {
                let (a, b) = (chunked.measure(m), whole.measure(m));
                assert!(a.allclose(&b, 1e-5, 1e-7, false), "chunk {chunk}: {m}");
            }
        }
        let other = Tensor::randn([3, 45, 61], (Kind::Float, tch::Device::Cpu));
        let both = sample_batch(&n, &Tensor::stack(&[&other, &x], 0), &flipped(5, 4)).unwrap();
        assert!(both[1].probs.allclose(&whole.probs, 1e-6, 1e-7, false));
        let alone = sample(&n, &other, &flipped(5, 2)).unwrap();
        assert!(both[0].probs.allclose(&alone.probs, 1e-6, 1e-7, false));
    }

    #[test]
    fn flipped_weight_averaging_is_symmetric_under_mirroring() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let a = weight_average(&n, &x, true);
        let b = weight_average(&n, &mirror(&x), true);
        assert!(mirror(&a.probs).allclose(&b.probs, 1e-6, 1e-7, false));
        assert_eq!(a.samples, 2);
        let pass = |image: &Tensor| {
            let logits = tch::no_grad(|| n.forward(&image.unsqueeze(0), Mode::DETERMINISTIC));
            logits.softmax(1, Kind::Float).squeeze_dim(0)
        };
        let mean = (pass(&x) + mirror(&pass(&mirror(&x)))) / 2.0;
        assert!(a.probs.allclose(&mean, 1e-6, 1e-7, false));
    }

    #[test]
    fn an_adaptive_run_with_flip_that_stopped_after_n_is_the_fixed_run_of_n() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 40);
        let mut o = adaptive(40, 3, 0.5, 0.5);
        o.flip = true;
        let early = sample(&n, &x, &o).unwrap();
        assert!(early.samples < 40, "stopped early: {}", early.samples);
        let fixed = sample(
            &n,
            &x,
            &McOptions {
                flip: true,
                ..opts(early.samples, 2, Some(5))
            },
        )
        .unwrap();
        assert!(early.probs.allclose(&fixed.probs, 1e-6, 1e-7, false));
    }

    #[test]
    fn zero_samples_is_an_error() {
        let (_rng, _vs, n, x) = setup(0.5, 32, 32);
        assert!(sample(&n, &x, &opts(0, 1, None))
            .unwrap_err()
            .to_string()
            .contains("--samples"));
    }
}
