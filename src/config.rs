//! Configuration: the model (stored with every checkpoint), the data and training. One YAML file
//! holds the three sections (`configs/*.yaml`); unknown keys are errors. How to predict (samples,
//! chunk, seed, device) is not configured here: those are the flags of the commands that predict.
//!
//! `Default` holds Bayesian SegNet's values (Kendall et al. 2015): dropout p = 0.5 at the central
//! positions, SGD with momentum 0.9 and weight decay 5e-4, CamVid's 11 classes.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// VGG16 layout: 13 conv 3x3 + BN + ReLU, five pools, mirrored decoder.
    Segnet,
    /// SegNet-Basic: 4 encoders and 4 decoders of 64 channels, 7x7 kernels.
    Basic,
}

impl Arch {
    /// Number of encoder (and decoder) stages.
    pub(crate) fn stages(self) -> usize {
        match self {
            Arch::Segnet => 5,
            Arch::Basic => 4,
        }
    }

    /// Whether `name` is one of this architecture's stages (`enc1`.., `dec1`..), or why not.
    pub(crate) fn check_stage(self, name: &str) -> Result<()> {
        let n = self.stages();
        let ok = ["enc", "dec"].iter().any(|p| {
            name.strip_prefix(p)
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| (1..=n).contains(&i))
        });
        ensure!(
            ok,
            "`{name}` is not a stage of {self:?}: use enc1..enc{n} or dec{n}..dec1"
        );
        Ok(())
    }

    /// Bayesian SegNet's dropout placement: the central encoders and decoders.
    fn central_dropout(self) -> Vec<String> {
        let names: &[&str] = match self {
            Arch::Segnet => &["enc3", "enc4", "enc5", "dec5", "dec4", "dec3"],
            Arch::Basic => &["enc3", "enc4", "dec4", "dec3"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}

/// How an image becomes the network's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputNorm {
    /// `(v - model.mean) / model.std` per channel, the same for every image.
    #[default]
    Fixed,
    /// Each channel standardised by its own mean and standard deviation over the image (at the
    /// network's input size): a global change of brightness, contrast or colour cast, as at
    /// dusk, reaches the network as nearly the same input. `model.mean` and `model.std` are
    /// then unused.
    PerImage,
}

/// The network. Saved in every checkpoint's metadata, so weights always travel with the
/// architecture they belong to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Channel multiplier: 1.0 is the paper's width (64..512 for SegNet, 64 for Basic).
    pub width: f64,
    /// Number of real classes; label value `classes` is void (ignored).
    pub classes: i64,
    /// Element-wise dropout probability.
    pub dropout: f64,
    /// Stages followed by dropout: `enc1`..`enc5`, `dec5`..`dec1` (decoder `decN` mirrors
    /// encoder `encN`). Empty list: no dropout. Default: the central placement.
    pub dropout_after: Option<Vec<String>>,
    /// Network input size `[height, width]`; images are resized to it and the outputs resized
    /// back. `null`: run at each image's own size.
    pub input_size: Option<[i64; 2]>,
    /// Per-channel normalisation applied to RGB in [0, 1] (with `input_norm: fixed`).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub input_norm: InputNorm,
    /// Class names, `classes` of them (void excluded).
    pub class_names: Vec<String>,
    /// RGB colour per class, `classes + 1` of them (the last is void).
    pub palette: Vec<[u8; 3]>,
}

pub(crate) const CAMVID_CLASSES: [&str; 11] = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
];

/// The original `Scripts/camvid11.png` look-up table; index 11 (void) is black.
pub(crate) const CAMVID_PALETTE: [[u8; 3]; 12] = [
    [128, 128, 128],
    [128, 0, 0],
    [192, 192, 128],
    [128, 64, 128],
    [60, 40, 222],
    [128, 128, 0],
    [192, 128, 128],
    [64, 64, 128],
    [64, 0, 128],
    [64, 64, 0],
    [0, 128, 192],
    [0, 0, 0],
];

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: Arch::Segnet,
            width: 1.0,
            classes: 11,
            dropout: 0.5,
            dropout_after: None,
            input_size: None,
            mean: [0.39, 0.41, 0.43],
            std: [0.30, 0.31, 0.30],
            input_norm: InputNorm::Fixed,
            class_names: CAMVID_CLASSES.iter().map(|s| s.to_string()).collect(),
            palette: CAMVID_PALETTE.to_vec(),
        }
    }
}

impl ModelConfig {
    /// Stage names followed by dropout, resolved from the default when not given.
    pub(crate) fn dropout_stages(&self) -> Vec<String> {
        self.dropout_after
            .clone()
            .unwrap_or_else(|| self.arch.central_dropout())
    }

    pub(crate) fn validate(&self) -> Result<()> {
        ensure!(
            self.width > 0.0 && self.width <= 4.0,
            "`model.width` must be in (0, 4], got {}",
            self.width
        );
        ensure!(
            (1..=255).contains(&self.classes),
            "`model.classes` must be between 1 and 255, got {}",
            self.classes
        );
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "`model.dropout` must be in [0, 1), got {}",
            self.dropout
        );
        for s in self.dropout_stages() {
            if let Err(e) = self.arch.check_stage(&s) {
                bail!("`model.dropout_after` entry {e}");
            }
        }
        if let Some([h, w]) = self.input_size {
            ensure!(
                h >= 32 && w >= 32,
                "`model.input_size` must be at least [32, 32], got [{h}, {w}]"
            );
        }
        ensure!(
            self.std.iter().all(|s| *s > 0.0),
            "`model.std` must be positive"
        );
        ensure!(
            self.class_names.len() == self.classes as usize,
            "`model.class_names` has {} names but `model.classes` is {}",
            self.class_names.len(),
            self.classes
        );
        ensure!(
            self.palette.len() == self.classes as usize + 1,
            "`model.palette` needs {} colours (one per class, then void), got {}",
            self.classes + 1,
            self.palette.len()
        );
        Ok(())
    }

    /// Index of the void label.
    pub(crate) fn void(&self) -> i64 {
        self.classes
    }
}

/// How labels are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LabelFormat {
    /// 8-bit PNG of class indices, void = classes.
    Index,
    /// RGB PNG coloured with `model.palette`.
    Colour,
}

/// Class weights for the loss: `median`, `sqrt-median`, `none`, or a list with one weight per
/// class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "`median`, `sqrt-median`, `none` or a list of one weight per class"
)]
pub(crate) enum ClassWeights {
    /// Given explicitly, one per class.
    Given(Vec<f32>),
    Computed(WeightMethod),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum WeightMethod {
    /// Median-frequency balancing computed from the training labels.
    Median,
    /// The square root of median-frequency balancing: rare classes still weigh more, by less.
    SqrtMedian,
    /// No weighting.
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AugmentConfig {
    pub(crate) hflip: bool,
    /// Random scale range `[min, max]` applied before cropping to `model.input_size`; `null`: none.
    pub(crate) scale: Option<[f32; 2]>,
    /// Largest rotation in degrees: each example turns by U(-rotate, rotate) about its centre,
    /// corners filled with void (0: none).
    pub(crate) rotate: f32,
    /// Photometric jitter: brightness, contrast and saturation are each multiplied by
    /// 1 + U(-x, x) (0: none).
    pub(crate) brightness: f32,
    pub(crate) contrast: f32,
    pub(crate) saturation: f32,
    /// Hue turned by U(-hue, hue) of a full turn (at most 0.5).
    pub(crate) hue: f32,
    /// Gamma: values v in [0, 1] become v^g with ln g ~ U(-gamma, gamma).
    pub(crate) gamma: f32,
    /// Gaussian blur with sigma ~ U(0, blur) pixels of the network input (0: none).
    pub(crate) blur: f32,
    /// Gaussian noise with standard deviation ~ U(0, noise) on the [0, 1] intensity scale.
    pub(crate) noise: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            hflip: true,
            scale: None,
            rotate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            gamma: 0.0,
            blur: 0.0,
            noise: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DataConfig {
    /// Dataset folder; relative paths are taken from the config file's folder. Required: a
    /// config names its data (or the command gets `--data`).
    pub(crate) root: PathBuf,
    pub(crate) train_split: String,
    pub(crate) val_split: String,
    pub(crate) label_format: LabelFormat,
    pub(crate) class_weights: ClassWeights,
    pub(crate) augment: AugmentConfig,
    /// Use at most this many images per split (0: all). For quick experiments and tests.
    pub(crate) limit: usize,
    /// A regex over an image's file stem whose one capture group names the sequence the frame
    /// was filmed in. Default: CamVid's prefix (`0016E5` of `0016E5_07959`).
    pub(crate) sequence_pattern: String,
    /// Cross-sequence validation: when not empty, the frames of `train_split` and `val_split`
    /// are pooled; the frames of these sequences validate and all others train.
    pub(crate) val_sequences: Vec<String>,
    /// Keep every frame decoded in memory after its first use (about 0.7 MB per 480x360
    /// frame), so later epochs skip the image decoding.
    pub(crate) cache: bool,
    /// Threads decoding and augmenting images (0: one per core).
    pub(crate) loader_threads: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: PathBuf::new(),
            train_split: "train".into(),
            val_split: "val".into(),
            label_format: LabelFormat::Index,
            class_weights: ClassWeights::Computed(WeightMethod::Median),
            augment: AugmentConfig::default(),
            limit: 0,
            sequence_pattern: crate::data::CAMVID_SEQUENCE.into(),
            val_sequences: vec![],
            cache: false,
            loader_threads: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Optimizer {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Schedule {
    Constant,
    /// Cosine decay to 1% of the initial rate over all epochs.
    Cosine,
    /// Polynomial decay (power 0.9) to zero.
    Poly,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TrainConfig {
    pub(crate) optimizer: Optimizer,
    pub(crate) lr: f64,
    pub(crate) momentum: f64,
    pub(crate) weight_decay: f64,
    pub(crate) schedule: Schedule,
    /// Linear warm-up over this many steps.
    pub(crate) warmup_steps: usize,
    pub(crate) epochs: usize,
    pub(crate) batch_size: usize,
    pub(crate) seed: u64,
    /// Write a resumable checkpoint every this many steps (and at every epoch end).
    pub(crate) checkpoint_every: usize,
    /// Validate every this many epochs.
    pub(crate) val_every: usize,
    /// MC samples for validation (0: weight averaging only).
    pub(crate) val_samples: usize,
    /// Which weights become `model.safetensors`: the best validated epoch's, or the last
    /// epoch's (validation then only reports: a held-out score that also chose the epoch
    /// flatters the run, and a model trained on every frame has only its last weights).
    pub(crate) final_weights: FinalWeights,
    /// Stochastic weight averaging (Izmailov et al., 2018): from this share of the schedule on
    /// (0.5: its second half), the weights at each epoch's end are averaged into
    /// `swa.safetensors`; `final_weights: swa` makes that mean the final model. Unset: off.
    pub(crate) swa_from: Option<f64>,
    /// With `train.swa_from`: from that share of the schedule on, the learning rate is held at
    /// this value (scaled by `lr_scaling` as `lr` is) instead of following the schedule, as SWA
    /// is published (the averaged epochs then explore around one basin instead of descending
    /// into it). Unset: the schedule goes on.
    pub(crate) swa_lr: Option<f64>,
    /// Label smoothing of the cross-entropy loss (Szegedy et al., 2016): each pixel's target is
    /// 1 - e on its class plus e spread evenly over all classes, the pixel weighing its class's
    /// weight as without smoothing. 0: off.
    pub(crate) label_smoothing: f64,
    /// Re-estimate batch-norm statistics over the training set after training.
    pub(crate) bn_recalibrate: bool,
    /// Keep dropout on while re-estimating them (the statistics MC sampling sees) instead of
    /// off (the original authors' choice, which suits weight averaging).
    pub(crate) bn_recalibrate_dropout: bool,
    /// Stop after this many minutes of training (0: no limit); the run ends cleanly.
    pub(crate) max_minutes: f64,
    /// Images decoded ahead of the training step.
    pub(crate) prefetch: usize,
    /// Start from this model's weights: every tensor whose name and shape match is loaded, the
    /// classifier re-initialised when the class count differs. Relative paths are taken from
    /// the config file's folder, else from the working directory.
    pub(crate) init: Option<PathBuf>,
    /// Arithmetic of the forward and backward pass: `fp32`, or `bf16` autocast on CUDA (the
    /// weights and the optimiser stay fp32).
    pub(crate) precision: Precision,
    /// How `lr` follows `batch_size`: `none`, or `linear` / `sqrt` in `batch_size /
    /// lr_base_batch`, so a bigger batch keeps the step size `lr` was tuned for.
    pub(crate) lr_scaling: LrScaling,
    /// The batch size `lr` was tuned at (for `lr_scaling`).
    pub(crate) lr_base_batch: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FinalWeights {
    /// The epoch with the best validation mIoU (the last one when nothing was validated).
    Best,
    Last,
    /// The mean of the epochs from `train.swa_from` on (the last weights if training stopped
    /// before any of them).
    Swa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Precision {
    Fp32,
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LrScaling {
    None,
    Linear,
    Sqrt,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: Optimizer::Sgd,
            lr: 0.001,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            epochs: 100,
            batch_size: 4,
            seed: 0,
            checkpoint_every: 200,
            val_every: 1,
            val_samples: 0,
            final_weights: FinalWeights::Best,
            swa_from: None,
            swa_lr: None,
            label_smoothing: 0.0,
            bn_recalibrate: false,
            bn_recalibrate_dropout: false,
            max_minutes: 0.0,
            prefetch: 16,
            init: None,
            precision: Precision::Fp32,
            lr_scaling: LrScaling::None,
            lr_base_batch: 8,
        }
    }
}

/// A whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: ModelConfig,
    pub(crate) data: DataConfig,
    pub(crate) train: TrainConfig,
}

impl Config {
    /// Reads and validates a YAML file; `data.root` is resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut cfg: Config = serde_yaml::from_str(&text).map_err(|e| {
            // Configs from before the section was removed say `infer:`.
            let hint = if e.to_string().starts_with("unknown field `infer`") {
                "delete the `infer` section: infer, eval and segnet-video take --samples, \
                 --chunk and --seed as flags"
            } else {
                "see configs/camvid.yaml for the accepted keys"
            };
            anyhow::anyhow!("config {}: {e} ({hint})", path.display())
        })?;
        if !cfg.data.root.as_os_str().is_empty() {
            let base = path.parent().unwrap_or(Path::new(""));
            cfg.data.root = absolute(&base.join(&cfg.data.root))?;
        }
        if let Some(init) = cfg.train.init.as_mut() {
            let beside = path.parent().unwrap_or(Path::new(".")).join(&*init);
            if init.is_relative() && beside.exists() {
                *init = beside;
            }
        }
        cfg.validate()
            .with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    /// [`Config::load`] with `--data` (relative to the working directory, as flags are)
    /// overriding `data.root`; refuses a config that names no data when `--data` is not given.
    /// Roots are absolute, so the resolved config saved in a run folder loads from anywhere.
    pub(crate) fn load_with_data(path: &Path, data: Option<&Path>) -> Result<Config> {
        let mut cfg = Config::load(path)?;
        if let Some(root) = data {
            cfg.data.root = absolute(root)?;
        }
        ensure!(
            !cfg.data.root.as_os_str().is_empty(),
            "config {} names no data: set `data.root` (relative to the config's folder) or pass --data",
            path.display()
        );
        Ok(cfg)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let t = &self.train;
        ensure!(t.lr > 0.0, "`train.lr` must be positive, got {}", t.lr);
        ensure!(t.batch_size >= 1, "`train.batch_size` must be at least 1");
        ensure!(t.epochs >= 1, "`train.epochs` must be at least 1");
        ensure!(
            (0.0..1.0).contains(&t.momentum),
            "`train.momentum` must be in [0, 1), got {}",
            t.momentum
        );
        ensure!(
            t.weight_decay >= 0.0,
            "`train.weight_decay` must be >= 0, got {}",
            t.weight_decay
        );
        ensure!(t.val_every >= 1, "`train.val_every` must be at least 1");
        ensure!(
            t.checkpoint_every >= 1,
            "`train.checkpoint_every` must be at least 1"
        );
        ensure!(t.prefetch >= 1, "`train.prefetch` must be at least 1");
        ensure!(
            (0.0..1.0).contains(&t.label_smoothing),
            "`train.label_smoothing` must be in [0, 1) (the share of the target spread over all classes), got {}",
            t.label_smoothing
        );
        if let Some(f) = t.swa_from {
            ensure!(
                (0.0..1.0).contains(&f),
                "`train.swa_from` must be in [0, 1) (the share of the schedule after which epochs are averaged), got {f}"
            );
        }
        if let Some(r) = t.swa_lr {
            ensure!(
                r > 0.0 && r.is_finite(),
                "`train.swa_lr` must be a learning rate above 0, got {r}"
            );
            ensure!(
                t.swa_from.is_some(),
                "`train.swa_lr` needs `train.swa_from` (the share of the schedule after which the rate is held and epochs are averaged, e.g. 0.5)"
            );
        }
        ensure!(
            t.final_weights != FinalWeights::Swa || t.swa_from.is_some(),
            "`train.final_weights: swa` needs `train.swa_from` (the share of the schedule after which epochs are averaged, e.g. 0.5)"
        );
        ensure!(
            t.lr_base_batch >= 1,
            "`train.lr_base_batch` must be at least 1"
        );
        crate::data::sequence_regex(&self.data.sequence_pattern)?;
        crate::data::check_augment(&self.data.augment)?;
        if let ClassWeights::Given(w) = &self.data.class_weights {
            ensure!(
                w.len() == self.model.classes as usize,
                "`data.class_weights` has {} values but `model.classes` is {}",
                w.len(),
                self.model.classes
            );
            if w.iter().any(|v| !v.is_finite() || *v < 0.0) {
                bail!("`data.class_weights` must be finite and >= 0");
            }
        }
        if let Some([lo, hi]) = self.data.augment.scale {
            ensure!(
                lo > 0.0 && lo <= hi,
                "`data.augment.scale` must be [min, max] with 0 < min <= max, got [{lo}, {hi}]"
            );
            ensure!(
                self.model.input_size.is_some(),
                "`data.augment.scale` needs `model.input_size` (the crop size)"
            );
        }
        Ok(())
    }

    pub(crate) fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serialises")
    }
}

/// `path` from the working directory, without resolving links (it need not exist yet).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn every_shipped_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen} configs in {}", dir.display());
        // The recipe README "Lighting on unseen drives" chose on held-out 0006R0 at 180x240.
        let lean = Config::load(&dir.join("camvid-lean.yaml")).unwrap();
        assert_eq!(lean.model.input_norm, InputNorm::Fixed);
        assert_eq!(lean.data.augment.brightness, 0.0);
        // README "Class weights on unseen drives", held out on 0006R0 at 120x160.
        assert_eq!(
            lean.data.class_weights,
            ClassWeights::Computed(WeightMethod::SqrtMedian)
        );
    }

    #[test]
    fn input_norm_takes_its_two_names_only() {
        let cfg: Config = serde_yaml::from_str("model:\n  input_norm: per-image\n").unwrap();
        assert_eq!(cfg.model.input_norm, InputNorm::PerImage);
        let err = serde_yaml::from_str::<Config>("model:\n  input_norm: image\n").unwrap_err();
        assert!(err.to_string().contains("per-image"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = serde_yaml::from_str::<Config>("model:\n  widht: 0.5\n").unwrap_err();
        assert!(err.to_string().contains("widht"), "{err}");
    }

    #[test]
    fn an_infer_section_says_to_delete_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.yaml");
        std::fs::write(&path, "train:\n  epochs: 2\ninfer:\n  samples: 40\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("old.yaml") && err.contains("delete the `infer` section"),
            "{err}"
        );
    }

    #[test]
    fn bad_dropout_stage_names_the_key() {
        let mut m = ModelConfig {
            arch: Arch::Basic,
            ..Default::default()
        };
        m.dropout_after = Some(vec!["enc5".into()]);
        let err = m.validate().unwrap_err().to_string();
        assert!(err.contains("model.dropout_after"), "{err}");
    }

    #[test]
    fn class_weights_accept_a_name_or_a_list() {
        let c: DataConfig = serde_yaml::from_str("class_weights: none").unwrap();
        assert_eq!(c.class_weights, ClassWeights::Computed(WeightMethod::None));
        let c: DataConfig = serde_yaml::from_str("class_weights: sqrt-median").unwrap();
        assert_eq!(
            c.class_weights,
            ClassWeights::Computed(WeightMethod::SqrtMedian)
        );
        let c: DataConfig = serde_yaml::from_str("class_weights: [1, 2.5]").unwrap();
        assert_eq!(c.class_weights, ClassWeights::Given(vec![1.0, 2.5]));
        let err = serde_yaml::from_str::<DataConfig>("class_weights: medain").unwrap_err();
        assert!(err.to_string().contains("median"), "{err}");
    }

    #[test]
    fn yaml_round_trip() {
        let c = Config::default();
        let back: Config = serde_yaml::from_str(&c.to_yaml()).unwrap();
        assert_eq!(c, back);
    }
}
