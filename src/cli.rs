//! The command line: one subcommand per job. Doc comments are the help text.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tch::Device;

use crate::config::Arch;
use crate::infer::PredictorOptions;
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
        }
    }
}

/// Options shared by everything that predicts.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Model weights (.safetensors written by segnet-bayes). Default: the model shipped in assets/.
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Monte Carlo dropout samples per image (T): the most, while adaptive stopping is on (the
    /// default), exactly this many with --no-adaptive.
    #[arg(long, default_value_t = 40)]
    pub(crate) samples: usize,
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
    /// What the convolutions run in: half precision (bf16, fp16) is for a GPU's tensor cores;
    /// the statistics stay in fp32. bf16 also runs on a CPU, slowly.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub(crate) precision: Precision,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl SamplingArgs {
    /// What these flags ask the predictor to do on `device` (the device picks `--chunk`'s
    /// default).
    pub fn options(&self, device: Device, dropout: bool) -> PredictorOptions {
        PredictorOptions {
            model: self.model.clone(),
            device,
            mc: McOptions {
                samples: self.samples,
                chunk: self.chunk.unwrap_or(if device.is_cuda() { 40 } else { 2 }),
                seed: self.seed,
                adaptive: (!self.no_adaptive).then_some(Settle {
                    step: self.settle_step,
                    class_tolerance: self.settle_classes,
                    uncertainty_tolerance: self.settle_uncertainty,
                }),
            },
            dropout,
            precision: self.precision,
        }
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
    #[arg(required = true)]
    pub(crate) inputs: Vec<PathBuf>,
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
    /// Split to evaluate.
    #[arg(long, default_value = "val")]
    pub(crate) split: String,
    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,
    /// Output folder for the JSON report, Markdown table and plots.
    #[arg(long, short, default_value = "eval")]
    pub(crate) out: PathBuf,
    /// Evaluate at most this many images (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) limit: usize,
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
