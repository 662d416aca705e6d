//! The command line: one subcommand per job. Doc comments are the help text.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tch::Device;

use crate::config::Arch;
use crate::infer::{PredictorOptions, TestDropout};
use crate::items::{self, Expand, Item};
use crate::mc::{McOptions, Measure, Settle};
use crate::model::Precision;

#[derive(Parser, Debug)]
#[command(
    name = "segnet-bayes",
    version,
    about = "Bayesian SegNet: per-pixel classes and model uncertainty (MC dropout) on libtorch"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Segment images: class map, colour overlay and uncertainty heatmaps per image.
    Infer(InferArgs),
    /// Train from a YAML config (see configs/).
    Train(TrainArgs),
    /// Accuracy and uncertainty quality on a labelled split.
    Eval(EvalArgs),
    /// Time MC inference: plain loop, one batch, and the shared-prefix sampler.
    Bench(BenchArgs),
    /// Write a randomly initialised model (for trying the pipeline before training).
    InitModel(InitModelArgs),
    /// Re-estimate a trained model's batch-norm statistics over a config's training split.
    Recalibrate(RecalibrateArgs),
    /// Join the shards of a sharded infer or segnet-video run into one JSON and one CSV.
    Merge(MergeArgs),
}

impl Command {
    pub fn run(&self) -> Result<()> {
        match self {
            Command::Infer(args) => crate::infer::run(args),
            Command::Train(args) => crate::train::run(args),
            Command::Eval(args) => crate::eval::run(args),
            Command::Bench(args) => crate::bench::run(args),
            Command::InitModel(args) => crate::infer::init_model(args),
            Command::Recalibrate(args) => crate::train::recalibrate(args),
            Command::Merge(args) => crate::merge::run(args),
        }
    }
}

/// Options shared by everything that predicts.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Model weights (.safetensors written by segnet-bayes). Default: the model shipped in assets/.
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Monte Carlo dropout samples per image (T; default 40): the most, while adaptive stopping
    /// is on (the default), exactly this many with --no-adaptive.
    #[arg(long)]
    pub(crate) samples: Option<usize>,
    /// Run exactly --samples samples instead of stopping once the estimate has settled.
    #[arg(long)]
    pub(crate) no_adaptive: bool,
    /// Adaptive stopping: samples between two checks of whether the estimate has settled (a
    /// run takes at least twice this many).
    #[arg(long, default_value_t = Settle::default().step)]
    pub(crate) settle_step: usize,
    /// Adaptive stopping: settled when at most this share of pixels changed class over the
    /// last --settle-step samples...
    #[arg(long, default_value_t = Settle::default().class_tolerance)]
    pub(crate) settle_classes: f64,
    /// ...and the mean softmax variance changed by at most this fraction of itself.
    #[arg(long, default_value_t = Settle::default().uncertainty_tolerance)]
    pub(crate) settle_uncertainty: f64,
    /// Samples run through the network together (default: 2 on a CPU, where bigger batches
    /// only cost memory; 40 on a GPU, where one big batch is fastest).
    #[arg(long)]
    pub(crate) chunk: Option<usize>,
    /// Seed for the dropout masks: identical inputs give identical outputs.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Test-time mirroring: every other sample sees the image mirrored left-right (its
    /// probabilities mirrored back), for the cost of a second deterministic prefix; without
    /// dropout, the mean of two passes. Off by default (README, "Test-time mirroring").
    #[arg(long)]
    pub(crate) flip: bool,
    /// What the convolutions run in (default: bf16 on CUDA, fp32 on a CPU). Half precision
    /// (bf16, fp16) is for a GPU's tensor cores; the statistics stay in fp32. On CamVid val it
    /// scored as fp32 does (README, Speed); bf16 also runs on a CPU, slowly.
    #[arg(long, value_enum)]
    pub(crate) precision: Option<Precision>,
    /// Sample with this dropout rate instead of the one the model was trained with (a study
    /// setting: the weights were fitted to the trained rate).
    #[arg(long)]
    pub(crate) dropout_rate: Option<f64>,
    /// Sample with dropout after these stages only (e.g. `dec5,dec4,dec3`; `none`: no
    /// dropout) instead of the trained positions (a study setting).
    #[arg(long, value_delimiter = ',')]
    pub(crate) dropout_after: Option<Vec<String>>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl SamplingArgs {
    /// `--flip`: test-time mirroring.
    pub fn flip(&self) -> bool {
        self.flip
    }

    /// What these flags ask the predictor to do on `device` (the device picks `--chunk`'s
    /// default). Without dropout (`--no-dropout`) there is one pass, so asking for more
    /// samples is a contradiction.
    pub fn options(&self, device: Device, dropout: bool) -> Result<PredictorOptions> {
        if let Some(n) = self.samples.filter(|&n| !dropout && n > 1) {
            bail!(
                "--no-dropout runs one pass without dropout (weight averaging), but --samples {n} \
                 asks for {n} MC dropout passes: drop one of the two"
            );
        }
        if self.flip && dropout && self.samples == Some(1) {
            bail!(
                "--flip mirrors every other sample, but --samples 1 takes one, never mirrored: \
                 use --samples 2 or more (or --no-dropout --flip: two passes without dropout)"
            );
        }
        Ok(PredictorOptions {
            model: self.model.clone(),
            device,
            mc: McOptions {
                samples: self.samples.unwrap_or(40),
                chunk: self.chunk.unwrap_or(if device.is_cuda() { 40 } else { 2 }),
                seed: self.seed,
                adaptive: (!self.no_adaptive).then_some(Settle {
                    step: self.settle_step,
                    class_tolerance: self.settle_classes,
                    uncertainty_tolerance: self.settle_uncertainty,
                }),
                flip: self.flip,
                flip_phase: false,
            },
            dropout,
            temperature: None,
            precision: self.precision.unwrap_or(if device.is_cuda() {
                Precision::Bf16
            } else {
                Precision::Fp32
            }),
            test_dropout: TestDropout {
                rate: self.dropout_rate,
                after: self.dropout_after.as_ref().map(|stages| {
                    stages
                        .iter()
                        .filter(|s| s.as_str() != "none")
                        .cloned()
                        .collect()
                }),
            },
        })
    }
}

/// Where the network runs: taken by every subcommand that runs one.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// cpu, cuda, cuda:N or auto (a GPU when one is available).
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// CPU threads for libtorch (default: `SEGNET_THREADS`, else all cores).
    #[arg(long)]
    pub(crate) threads: Option<i32>,
}

impl DeviceArgs {
    /// Sets libtorch's CPU thread count, which is process-wide, then resolves `--device`. A
    /// command's entry point calls this once, before any work.
    pub fn init(&self) -> Result<Device> {
        crate::device::set_threads(self.threads)?;
        crate::device::parse(&self.device)
    }
}

/// What a run works on and which share of it this process does (infer and segnet-video).
#[derive(Args, Debug, Clone)]
pub struct WorkArgs {
    /// A file listing the inputs, one path a line (relative to the file's folder), in place of
    /// INPUTS; its order is kept.
    #[arg(long, value_name = "FILE", conflicts_with = "inputs")]
    manifest: Option<PathBuf>,
    /// Do share I of N (0-based): item k of the sorted inputs or the manifest goes to shard
    /// k mod N. Default: the batch engine's task index and count (SLURM, Kubernetes Indexed
    /// Job with SEGNET_SHARD_COUNT, AWS Batch, Google Batch), else every item.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
}

impl WorkArgs {
    /// The run's items (see `items`), from the manifest or from `inputs`.
    pub fn items(&self, inputs: &[PathBuf], out: &Path, expand: Expand) -> Result<Vec<Item>> {
        items::collect(inputs, self.manifest.as_deref(), out, expand)
    }

    /// This process's shard: `--shard`, else the engine's variables, else none.
    pub fn shard(&self) -> Result<Option<crate::shard::Assignment>> {
        crate::shard::resolve(self.shard.as_deref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScaleMode {
    /// A fixed range per measure (see README): the same colour means the same value in every image.
    Fixed,
    /// Stretch each image's own range.
    PerImage,
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Images (PNG or JPEG) or folders of images.
    #[arg(required_unless_present = "manifest")]
    pub(crate) inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) work: WorkArgs,
    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,
    /// Output folder.
    #[arg(long, short, default_value = "out")]
    pub(crate) out: PathBuf,
    /// Uncertainty heatmaps to write; the first is reported on stdout.
    #[arg(long, value_delimiter = ',', default_values_t = [Measure::Variance, Measure::Entropy, Measure::MutualInfo])]
    pub(crate) uncertainty: Vec<Measure>,
    /// Heatmap colour scale.
    #[arg(long, value_enum, default_value_t = ScaleMode::Fixed)]
    pub(crate) scale: ScaleMode,
    /// Weight averaging: one pass with dropout off instead of MC sampling.
    #[arg(long)]
    pub(crate) no_dropout: bool,
    /// Opacity of the class colours in the overlay.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) alpha: f32,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The output folder of a sharded run (holding segnet-run/manifest.json).
    pub(crate) out: PathBuf,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// YAML config (see configs/camvid.yaml).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// Run folder for checkpoints, logs and the resolved config (default: runs/<config name>).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Dataset folder, overriding `data.root` (recorded in the run's config.yaml).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Stop after this many minutes, overriding `train.max_minutes`; the learning-rate
    /// schedule then follows the time budget.
    #[arg(long)]
    pub(crate) max_minutes: Option<f64>,
    /// Validate on these sequences, held out of the pooled train and val splits, overriding
    /// `data.val_sequences` (a leave-one-sequence-out fold: `--hold-out 0006R0`).
    #[arg(long, value_delimiter = ',')]
    pub(crate) hold_out: Vec<String>,
    /// Start from this model's weights, overriding `train.init` (fine-tuning).
    #[arg(long)]
    pub(crate) init: Option<PathBuf>,
    /// Change one config key, e.g. `--set data.augment.hue=0.05` (repeatable; the value is
    /// YAML). Applied after the other flags; the run's config.yaml records the result.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) sets: Vec<String>,
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct RecalibrateArgs {
    /// The trained model.
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// The YAML config it was trained with (its data section names the training split).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// Dataset folder, overriding `data.root`.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Keep dropout on while estimating (the statistics MC sampling sees).
    #[arg(long)]
    pub(crate) dropout: bool,
    /// Where to write the new model.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Dataset folder (CamVid layout).
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Split(s) to evaluate, e.g. `val` or `train,val` (pooled).
    #[arg(long, default_value = "val", value_delimiter = ',')]
    pub(crate) split: Vec<String>,
    /// Score only the frames of these sequences (e.g. a training run's held-out `0006R0`).
    #[arg(long, value_delimiter = ',')]
    pub(crate) sequences: Vec<String>,
    /// Regex over file stems whose capture group names a frame's sequence (for the
    /// per-sequence table and --sequences); default: CamVid's prefix before the first `_`.
    #[arg(long, default_value = crate::data::CAMVID_SEQUENCE)]
    pub(crate) sequence_pattern: String,
    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,
    /// Output folder for the JSON report, Markdown table and plots.
    #[arg(long, short, default_value = "eval")]
    pub(crate) out: PathBuf,
    /// Evaluate at most this many images (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) limit: usize,
    /// Divide the network's logits by this before every softmax, weight averaging's and each
    /// MC sample's (temperature scaling; above 1 softens the probabilities). A calibration
    /// study setting: the class map is unchanged for weight averaging.
    #[arg(long)]
    pub(crate) temperature: Option<f64>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Arch::Segnet)]
    pub(crate) arch: Arch,
    /// Channel multiplier.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) net_width: f64,
    #[arg(long, default_value_t = 360)]
    pub(crate) height: i64,
    #[arg(long, default_value_t = 480)]
    pub(crate) width: i64,
    #[arg(long, default_value_t = 40)]
    pub(crate) samples: usize,
    /// Samples per batch for the prefix mode.
    #[arg(long, default_value_t = 4)]
    pub(crate) chunk: usize,
    /// Modes to time: loop (T full passes), batch (one batch of T), prefix (the sampler).
    #[arg(long, value_delimiter = ',', default_value = "loop,batch,prefix")]
    pub(crate) modes: Vec<BenchMode>,
    /// Timed runs per mode (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Images per batch for the prefix mode (as segnet-video batches frames on a GPU); times
    /// are per image, and --chunk counts (image, sample) rows per network call.
    #[arg(long, default_value_t = 1)]
    pub(crate) images: usize,
    /// What the prefix mode's convolutions run in.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub(crate) precision: Precision,
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchMode {
    Loop,
    Batch,
    Prefix,
}

#[derive(Args, Debug)]
pub struct InitModelArgs {
    #[arg(long, value_enum, default_value_t = Arch::Segnet)]
    pub(crate) arch: Arch,
    /// Channel multiplier.
    #[arg(long, default_value_t = 0.25)]
    pub(crate) width: f64,
    /// Network input size HxW (images are resized to it), e.g. 180x240; default: native size.
    #[arg(long)]
    pub(crate) input_size: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[arg(long, short)]
    pub(crate) out: PathBuf,
}
