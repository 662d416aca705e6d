//! SegNet and SegNet-Basic with Monte Carlo dropout (Bayesian SegNet).
//!
//! Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture
//! for Image Segmentation" (2015), and Kendall, Badrinarayanan, Cipolla, "Bayesian SegNet: Model
//! Uncertainty in Deep Convolutional Encoder-Decoder Architectures for Scene Understanding"
//! (2015).
//!
//! The network runs as a list of steps: encoders `enc1..encN`, then decoders `decN..dec1`, then
//! the classifier. Dropout may follow any encoder or decoder. Everything before the first
//! dropout is deterministic, so [`SegNet::prefix`] computes it once per image (features and
//! pooling switches) and [`SegNet::suffix`] runs the stochastic rest for a batch of samples.

use tch::nn::{self, Module};
use tch::Tensor;

use super::blocks::{Decoder, Encoder, Switches};
use crate::config::{Arch, ModelConfig};
use crate::rng::mix_seed;

/// The two independent switches of a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mode {
    /// Element-wise dropout at the configured positions (on for training and MC sampling).
    pub(crate) dropout: bool,
    /// Batch norm from batch statistics, updating the running ones (training only).
    pub(crate) bn_train: bool,
}

impl Mode {
    pub(crate) const TRAIN: Mode = Mode {
        dropout: true,
        bn_train: true,
    };
    /// Monte Carlo dropout: dropout on, batch norm on its running statistics.
    pub(crate) const MC: Mode = Mode {
        dropout: true,
        bn_train: false,
    };
    /// Weight averaging: one deterministic pass.
    pub(crate) const DETERMINISTIC: Mode = Mode {
        dropout: false,
        bn_train: false,
    };
}

/// The floating-point type the convolutions run in. Half precision is for GPUs' tensor cores;
/// the sampler's statistics stay in fp32 whatever the network runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    #[default]
    Fp32,
    /// bfloat16: fp32's range, 8 bits of mantissa (CUDA; also runs, slowly, on a CPU).
    Bf16,
    /// IEEE half (CUDA).
    Fp16,
}

impl Precision {
    pub(crate) fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
            Precision::Fp16 => tch::Kind::Half,
        }
    }
}

/// What the deterministic prefix hands to the stochastic suffix.
#[derive(Debug)]
pub(crate) struct Prefix {
    /// `[N, C, h, w]` output of the last step of the prefix (before its dropout).
    features: Tensor,
    /// Switches of the encoders run so far, `switches[i]` from `enc{i+1}`.
    pub(crate) switches: Vec<Switches>,
    /// First step the suffix runs.
    next_step: usize,
    /// One seed per sample of the batch when each sample's dropout masks must depend on its
    /// own seed alone (MC sampling: then how samples are batched does not change them);
    /// `None`: one draw for the whole batch from libtorch's generator (training).
    sample_seeds: Option<Vec<u64>>,
}

impl Prefix {
    /// The same prefix (of one image, batch 1) for the samples with these seeds: sample `i`'s
    /// dropout masks are drawn from `seeds[i]` and the dropout step only.
    pub(crate) fn for_samples(&self, seeds: &[u64]) -> Prefix {
        let n = seeds.len() as i64;
        let mut shape = self.features.size();
        shape[0] = n;
        Prefix {
            features: self.features.expand(&shape, false),
            switches: self.switches.iter().map(|s| s.expand(n)).collect(),
            next_step: self.next_step,
            sample_seeds: Some(seeds.to_vec()),
        }
    }

    /// Image `i` of a batch's prefix, as a batch of 1 (a view, no copy).
    pub(crate) fn image(&self, i: i64) -> Prefix {
        Prefix {
            features: self.features.narrow(0, i, 1),
            switches: self.switches.iter().map(|s| s.narrow(i)).collect(),
            next_step: self.next_step,
            sample_seeds: self.sample_seeds.clone(),
        }
    }

    /// The samples of several prefixes as one batch, in order (copies unless there is one).
    pub(crate) fn cat(mut parts: Vec<Prefix>) -> Prefix {
        if parts.len() == 1 {
            return parts.pop().expect("one part");
        }
        let features: Vec<&Tensor> = parts.iter().map(|p| &p.features).collect();
        let switches = (0..parts[0].switches.len())
            .map(|level| Switches::cat(parts.iter().map(|p| &p.switches[level])))
            .collect();
        let seeds = parts
            .iter()
            .map(|p| p.sample_seeds.clone())
            .collect::<Option<Vec<Vec<u64>>>>();
        Prefix {
            features: Tensor::cat(&features, 0),
            switches,
            next_step: parts[0].next_step,
            sample_seeds: seeds.map(|s| s.concat()),
        }
    }
}

#[derive(Debug)]
pub struct SegNet {
    config: ModelConfig,
    encoders: Vec<Encoder>,
    /// `decoders[i]` mirrors `encoders[i]` and runs in reverse order.
    decoders: Vec<Decoder>,
    classifier: nn::Conv2D,
    /// Dropout after step s (encoders first, then decoders from the deepest).
    dropout_after: Vec<bool>,
    /// What the convolutions run in (see [`SegNet::set_precision`]).
    compute: tch::Kind,
}

/// Channels of one SegNet stage: `(in, out)` per conv.
type StageChannels = Vec<(i64, i64)>;

fn segnet_channels(width: f64) -> (Vec<StageChannels>, Vec<StageChannels>, i64) {
    let w = |c: i64| ((c as f64 * width) as i64).max(8);
    let enc_out: [&[i64]; 5] = [
        &[64, 64],
        &[128, 128],
        &[256, 256, 256],
        &[512, 512, 512],
        &[512, 512, 512],
    ];
    // Decoders listed from dec1 to dec5 (mirrors of enc1..enc5); each ends with the channel
    // count of the stage above it.
    let dec_out: [&[i64]; 5] = [
        &[64],
        &[128, 64],
        &[256, 256, 128],
        &[512, 512, 256],
        &[512, 512, 512],
    ];
    let mut cin = 3;
    let mut encoders = vec![];
    for stage in enc_out {
        let mut convs = vec![];
        for &c in stage {
            convs.push((cin, w(c)));
            cin = w(c);
        }
        encoders.push(convs);
    }
    let mut decoders = vec![vec![]; 5];
    for i in (0..5).rev() {
        let mut convs = vec![];
        for &c in dec_out[i] {
            convs.push((cin, w(c)));
            cin = w(c);
        }
        decoders[i] = convs;
    }
    (encoders, decoders, cin)
}

impl SegNet {
    /// Builds the network under `p`; the path names are the checkpoint keys
    /// (`enc1.1.conv.weight`, `dec5.3.bn.running_mean`, `classifier.weight`).
    pub fn new(p: &nn::Path, config: &ModelConfig) -> SegNet {
        let n = config.arch.stages();
        let (encoders, decoders, classifier) = match config.arch {
            Arch::Segnet => {
                let (enc, dec, cout) = segnet_channels(config.width);
                let encoders = enc
                    .iter()
                    .enumerate()
                    .map(|(i, ch)| Encoder::new(p / format!("enc{}", i + 1), ch, 3))
                    .collect();
                let decoders = dec
                    .iter()
                    .enumerate()
                    .map(|(i, ch)| Decoder::new(p / format!("dec{}", i + 1), ch, 3, true))
                    .collect();
                let cfg = nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                };
                let classifier = nn::conv2d(p / "classifier", cout, config.classes, 3, cfg);
                (encoders, decoders, classifier)
            }
            Arch::Basic => {
                let c = ((64.0 * config.width) as i64).max(8);
                let encoders = (0..n)
                    .map(|i| {
                        let cin = if i == 0 { 3 } else { c };
                        Encoder::new(p / format!("enc{}", i + 1), &[(cin, c)], 7)
                    })
                    .collect();
                let decoders = (0..n)
                    .map(|i| Decoder::new(p / format!("dec{}", i + 1), &[(c, c)], 7, false))
                    .collect();
                let classifier =
                    nn::conv2d(p / "classifier", c, config.classes, 1, Default::default());
                (encoders, decoders, classifier)
            }
        };
        let stages = config.dropout_stages();
        let dropout_after = (0..2 * n)
            .map(|s| stages.contains(&Self::step_name(n, s)))
            .collect();
        SegNet {
            config: config.clone(),
            encoders,
            decoders,
            classifier,
            dropout_after,
            compute: tch::Kind::Float,
        }
    }

    /// `enc{s+1}` for encoder steps, `dec{..}` from the deepest for decoder steps.
    fn step_name(n: usize, step: usize) -> String {
        if step < n {
            format!("enc{}", step + 1)
        } else {
            format!("dec{}", 2 * n - step)
        }
    }

    pub(crate) fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn steps(&self) -> usize {
        2 * self.encoders.len()
    }

    /// Index of the first step the suffix runs: one past the first step followed by dropout
    /// (all steps when there is no dropout or it is off).
    fn split(&self) -> usize {
        self.dropout_after
            .iter()
            .position(|d| *d && self.config.dropout > 0.0)
            .map_or(self.steps(), |s| s + 1)
    }

    /// Whether two passes with dropout on can differ at all.
    pub(crate) fn is_stochastic(&self) -> bool {
        self.config.dropout > 0.0 && self.dropout_after.iter().any(|d| *d)
    }

    fn run_step(&self, step: usize, xs: Tensor, switches: &mut Vec<Switches>, bn: bool) -> Tensor {
        let n = self.encoders.len();
        if step < n {
            let (ys, sw) = self.encoders[step].forward(&xs, bn);
            switches.push(sw);
            ys
        } else {
            let i = 2 * n - 1 - step;
            self.decoders[i].forward(&xs, &switches[i], bn)
        }
    }

    /// The deterministic part: every step up to the first dropout.
    ///
    /// # Shapes
    /// `xs: [N, 3, H, W]` normalised images, H and W at least 32.
    pub(crate) fn prefix(&self, xs: &Tensor, bn_train: bool) -> Prefix {
        let mut switches = vec![];
        let split = self.split();
        let mut features = super::blocks::channels_last(&xs.to_kind(self.compute));
        for step in 0..split {
            features = self.run_step(step, features, &mut switches, bn_train);
        }
        Prefix {
            features,
            switches,
            next_step: split,
            sample_seeds: None,
        }
    }

    /// The rest: dropout after the prefix's last step, the remaining steps, the classifier.
    ///
    /// # Shapes
    /// returns logits `[N, classes, H, W]`, N the batch of `prefix.features`.
    pub(crate) fn suffix(&self, prefix: &Prefix, mode: Mode) -> Tensor {
        let dropout_on = mode.dropout && self.config.dropout > 0.0;
        let seeds = prefix.sample_seeds.as_deref();
        let mut switches: Vec<Switches> = prefix
            .switches
            .iter()
            .map(|s| Switches {
                indices: s.indices.shallow_clone(),
                size: s.size,
            })
            .collect();
        let mut xs = prefix.features.shallow_clone();
        let first = prefix.next_step;
        if first > 0 && self.dropout_after[first - 1] && dropout_on {
            xs = self.dropout(&xs, first - 1, seeds);
        }
        for step in first..self.steps() {
            xs = self.run_step(step, xs, &mut switches, mode.bn_train);
            if self.dropout_after[step] && dropout_on {
                xs = self.dropout(&xs, step, seeds);
            }
        }
        self.classifier.forward(&xs)
    }

    /// Element-wise dropout after `step`: what `Tensor::dropout` does (keep with probability
    /// 1 - p, scale by 1 / (1 - p)), with each sample's mask drawn after seeding libtorch's
    /// generator from (its seed, `step`) when seeds are given.
    ///
    /// # Shapes
    /// `xs: [N, C, h, w]`, `seeds`: N of them.
    fn dropout(&self, xs: &Tensor, step: usize, seeds: Option<&[u64]>) -> Tensor {
        let p = self.config.dropout;
        let Some(seeds) = seeds else {
            return xs.dropout(p, true);
        };
        let s = xs.size();
        // Drawn as [N, h, w, C] and viewed as [N, C, h, w]: the channels-last layout of the
        // features, in which each sample's mask is one contiguous block to fill.
        let mut mask = Tensor::empty([s[0], s[2], s[3], s[1]], (xs.kind(), xs.device()));
        for (i, seed) in seeds.iter().enumerate() {
            tch::manual_seed(mix_seed(*seed, step as u64) as i64);
            let _ = mask.get(i as i64).bernoulli_float_(1.0 - p);
        }
        let _ = mask.g_div_scalar_(1.0 - p);
        xs * mask.permute([0, 3, 1, 2])
    }

    /// One full pass.
    ///
    /// # Shapes
    /// `[N, 3, H, W]` -> logits `[N, classes, H, W]`
    pub(crate) fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        self.suffix(&self.prefix(xs, mode.bn_train), mode)
    }

    /// Folds batch norm into the convs for faster inference (see `ConvBn::fold`).
    pub(crate) fn fold_batchnorm(&mut self) {
        self.encoders.iter_mut().for_each(Encoder::fold);
        self.decoders.iter_mut().for_each(Decoder::fold);
    }

    /// Multiplies the logits by `factor` (temperature scaling by 1 / `factor`), folded into the
    /// classifier's weights and bias: no cost per pass.
    pub(crate) fn scale_logits(&mut self, factor: f64) {
        tch::no_grad(|| {
            self.classifier.ws = &self.classifier.ws * factor;
            self.classifier.bs = self.classifier.bs.as_ref().map(|b| b * factor);
        });
    }

    /// Runs inference in `precision`: the folded weights and the classifier are cast once,
    /// here, each input as it enters, and the logits come out in it. Call after
    /// [`SegNet::fold_batchnorm`]; a network in half precision is for inference only.
    pub(crate) fn set_precision(&mut self, precision: Precision) {
        let kind = precision.kind();
        self.encoders.iter_mut().for_each(|e| e.cast(kind));
        self.decoders.iter_mut().for_each(|d| d.cast(kind));
        tch::no_grad(|| {
            self.classifier.ws = self.classifier.ws.to_kind(kind);
            self.classifier.bs = self.classifier.bs.as_ref().map(|b| b.to_kind(kind));
        });
        self.compute = kind;
    }

    /// What the convolutions run in.
    pub(crate) fn compute_kind(&self) -> tch::Kind {
        self.compute
    }

    /// Multiply-adds x2 of one full pass at `[h, w]` (convolutions only), for GFLOP/s figures.
    pub(crate) fn flops(&self, vs: &nn::VarStore, h: i64, w: i64) -> (f64, f64) {
        let split = self.split();
        let n = self.encoders.len();
        let mut total = 0.0;
        let mut prefix = 0.0;
        for (name, t) in vs.variables() {
            if !name.ends_with("conv.weight") && name != "classifier.weight" {
                continue;
            }
            let s = t.size();
            let per_pixel = 2.0 * (s[0] * s[1] * s[2] * s[3]) as f64;
            let stage = name.split('.').next().unwrap_or("");
            let (level, step) = if let Some(i) = stage.strip_prefix("enc") {
                let i: usize = i.parse().unwrap_or(1);
                (i - 1, i - 1)
            } else if let Some(i) = stage.strip_prefix("dec") {
                let i: usize = i.parse().unwrap_or(1);
                (i - 1, 2 * n - i)
            } else {
                (0, 2 * n)
            };
            let pixels = ((h >> level) * (w >> level)) as f64;
            total += per_pixel * pixels;
            if step < split {
                prefix += per_pixel * pixels;
            }
        }
        (total, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn tiny(arch: Arch, dropout: f64) -> (nn::VarStore, SegNet) {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig {
            arch,
            width: 0.125,
            dropout,
            ..Default::default()
        };
        let net = SegNet::new(&vs.root(), &cfg);
        (vs, net)
    }

    #[test]
    fn output_has_input_size_for_odd_sizes() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(0);
        for arch in [Arch::Segnet, Arch::Basic] {
            let (_vs, net) = tiny(arch, 0.5);
            for (h, w) in [(32, 32), (45, 61), (33, 47), (90, 120)] {
                let x = Tensor::randn([2, 3, h, w], (Kind::Float, Device::Cpu));
                let y = net.forward(&x, Mode::MC);
                assert_eq!(y.size(), vec![2, 11, h, w], "{arch:?} {h}x{w}");
            }
        }
    }

    #[test]
    fn prefix_then_suffix_equals_full_forward() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (_vs, net) = tiny(Arch::Segnet, 0.5);
        let x = Tensor::randn([1, 3, 45, 60], (Kind::Float, Device::Cpu));
        tch::manual_seed(7);
        let full = net.forward(&x, Mode::MC);
        tch::manual_seed(7);
        let pre = net.prefix(&x, false);
        assert_eq!(pre.next_step, 3, "first dropout follows enc3");
        let split = net.suffix(&pre, Mode::MC);
        assert!(full.allclose(&split, 1e-5, 1e-6, false));
    }

    #[test]
    fn seeded_dropout_keeps_one_minus_p_and_each_sample_follows_its_own_seed() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (_vs, net) = tiny(Arch::Segnet, 0.5);
        let ones = super::super::blocks::channels_last(&Tensor::ones(
            [2, 8, 16, 16],
            (Kind::Float, Device::Cpu),
        ));
        let both = net.dropout(&ones, 3, Some(&[5, 6]));
        let v: Vec<f32> = Vec::try_from(both.flatten(0, -1)).unwrap();
        assert!(
            v.iter().all(|&x| x == 0.0 || x == 2.0),
            "kept values scale by 1/(1-p)"
        );
        let kept = v.iter().filter(|&&x| x == 2.0).count() as f64 / v.len() as f64;
        assert!((kept - 0.5).abs() < 0.05, "kept share {kept}");
        let alone = net.dropout(&ones.narrow(0, 1, 1), 3, Some(&[6]));
        assert!(both.narrow(0, 1, 1).equal(&alone));
        assert!(!both.get(0).equal(&both.get(1)));
        assert!(
            !net.dropout(&ones, 4, Some(&[5, 6])).equal(&both),
            "masks differ per step"
        );
    }

    #[test]
    fn dropout_off_is_deterministic_and_on_is_not() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (_vs, net) = tiny(Arch::Basic, 0.5);
        let x = Tensor::randn([1, 3, 40, 40], (Kind::Float, Device::Cpu));
        let a = net.forward(&x, Mode::DETERMINISTIC);
        let b = net.forward(&x, Mode::DETERMINISTIC);
        assert!(a.equal(&b));
        let c = net.forward(&x, Mode::MC);
        let d = net.forward(&x, Mode::MC);
        assert!(!c.allclose(&d, 1e-6, 1e-6, false));
    }

    #[test]
    fn folded_batchnorm_matches_unfolded() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (vs, mut net) = tiny(Arch::Segnet, 0.5);
        // Non-trivial running statistics.
        for (name, mut t) in vs.variables() {
            tch::no_grad(|| {
                if name.ends_with("running_var") {
                    let _ = t.uniform_(0.5, 2.0);
                } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
                    let _ = t.uniform_(-0.5, 0.5);
                }
            });
        }
        let x = Tensor::randn([1, 3, 36, 52], (Kind::Float, Device::Cpu));
        let a = net.forward(&x, Mode::DETERMINISTIC);
        net.fold_batchnorm();
        let b = net.forward(&x, Mode::DETERMINISTIC);
        assert!(a.allclose(&b, 1e-4, 1e-4, false));
    }

    #[test]
    fn central_dropout_prefix_is_about_a_third_of_segnet() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let vs = nn::VarStore::new(Device::Cpu);
        let net = SegNet::new(&vs.root(), &ModelConfig::default());
        let (total, prefix) = net.flops(&vs, 360, 480);
        let share = prefix / total;
        assert!((0.25..0.5).contains(&share), "prefix share {share}");
        assert!(
            total > 1e11,
            "full SegNet is hundreds of GFLOP, got {total}"
        );
    }
}
