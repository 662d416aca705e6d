//! `segnet-bayes infer`: images in, class maps, overlays and uncertainty heatmaps out.
//!
//! For each image: decode (in parallel, rayon) -> resize to the model's input size -> MC sampler
//! (`mc::sample`) -> resize the prediction back to the image's size -> `render` -> PNGs and a
//! JSON summary, each written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::atomic::write_json_atomic;
use crate::cli::{InferArgs, InitModelArgs, ScaleMode};
use crate::config::ModelConfig;
use crate::image_io;
use crate::mc::{self, McOptions, Measure, Prediction};
use crate::model::{checkpoint, Precision, SegNet};
use crate::render::{self, Scale};

/// The trained model shipped with the project, used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "assets/segnet-camvid.safetensors";

/// Where the default model is: beside the executable's project (source checkout), or in an
/// `assets/` folder next to the executable.
fn default_model_path() -> Option<PathBuf> {
    let mut candidates = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(DEFAULT_MODEL));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// What [`Predictor::load`] loads and how the predictor predicts.
#[derive(Clone, Debug)]
pub struct PredictorOptions {
    /// Weights file (.safetensors written by segnet-bayes); `None`: the shipped model.
    pub model: Option<PathBuf>,
    pub device: Device,
    pub mc: McOptions,
    /// MC dropout sampling; false: weight averaging (one pass, dropout off).
    pub dropout: bool,
    /// What the convolutions run in.
    pub precision: Precision,
}

/// A loaded network, ready to predict.
pub struct Predictor {
    pub(crate) net: SegNet,
    /// The weights file it was loaded from.
    pub path: PathBuf,
    device: Device,
    pub opts: McOptions,
    pub dropout: bool,
}

impl Predictor {
    /// Loads the model on the options' device, with batch norm folded for speed.
    pub fn load(options: &PredictorOptions) -> Result<Predictor> {
        options.mc.validate()?;
        let path = match &options.model {
            Some(p) => p.clone(),
            None => default_model_path().with_context(|| {
                format!(
                    "no --model given and the shipped model {DEFAULT_MODEL} is missing; \
                     pass --model FILE (e.g. one made by `segnet-bayes init-model` or `train`)"
                )
            })?,
        };
        crate::batch::check_precision(options.precision, options.device)?;
        let (_, mut net, _) = checkpoint::load_model(&path, options.device)?;
        net.fold_batchnorm();
        net.set_precision(options.precision);
        Ok(Predictor {
            net,
            path,
            device: options.device,
            opts: options.mc,
            dropout: options.dropout,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        self.net.config()
    }

    /// Where the network runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Network input for an image: resized to the model's input size, normalised, on device.
    ///
    /// # Shapes
    /// returns `[3, h, w]`
    pub(crate) fn input(&self, img: &RgbImage) -> Tensor {
        let cfg = self.config();
        let resized;
        let img = match cfg.input_size {
            Some(size) => {
                resized = image_io::resize_rgb(img, size);
                &resized
            }
            None => img,
        };
        image_io::to_tensor(img, cfg.mean, cfg.std).to_device(self.device)
    }

    /// The prediction for one image, at the image's own size, on the CPU.
    pub fn predict(&self, img: &RgbImage) -> Result<Prediction> {
        let x = self.input(img);
        let pred = if self.dropout {
            mc::sample(&self.net, &x, &self.opts)?
        } else {
            mc::weight_average(&self.net, &x)
        };
        let pred = tch::no_grad(|| pred.resize(img.height() as i64, img.width() as i64));
        Ok(to_cpu(pred))
    }
}

pub(crate) fn to_cpu(p: Prediction) -> Prediction {
    Prediction {
        probs: p.probs.to_device(Device::Cpu),
        variance: p.variance.to_device(Device::Cpu),
        entropy: p.entropy.to_device(Device::Cpu),
        mutual_info: p.mutual_info.to_device(Device::Cpu),
        samples: p.samples,
    }
}

/// The images named on the command line: files as given, folders expanded (sorted).
fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in inputs {
        if p.is_dir() {
            let files = image_io::images_in(p)?;
            if files.is_empty() {
                bail!("folder {} holds no PNG or JPEG images", p.display());
            }
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    Ok(out)
}

/// Makes the output folder and checks that it can be written, before any work.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let probe = dir.join(".segnet-bayes-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Per-image summary written as `<stem>.json`.
#[derive(Serialize)]
struct Summary {
    input: String,
    model: String,
    width: u32,
    height: u32,
    /// Samples taken: T, or where adaptive stopping found the estimate settled.
    samples: usize,
    adaptive: bool,
    dropout: bool,
    seconds: f64,
    mean_variance: f64,
    mean_entropy: f64,
    mean_mutual_info: f64,
    class_share: BTreeMap<String, f64>,
    files: Vec<String>,
}

/// Output file stems for inputs: each file's stem, with its index added where two inputs share
/// one (`a.png` and `a.jpg`, or the same name in two folders).
pub fn output_stems(files: &[PathBuf]) -> Vec<String> {
    let base: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into())
        })
        .collect();
    let mut counts = std::collections::HashMap::new();
    for s in &base {
        *counts.entry(s.as_str()).or_insert(0usize) += 1;
    }
    base.iter()
        .enumerate()
        .map(|(i, s)| {
            if counts[s.as_str()] > 1 {
                format!("{s}-{i}")
            } else {
                s.clone()
            }
        })
        .collect()
}

/// Renders a prediction into `out`, returning the files written.
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    out: &Path,
    stem: &str,
    img: &RgbImage,
    pred: &Prediction,
    cfg: &ModelConfig,
    measures: &[Measure],
    scale: ScaleMode,
    alpha: f32,
) -> Result<Vec<String>> {
    let (w, h) = img.dimensions();
    let classes = pred.class_bytes();
    let mut files = vec![];
    let mut save_rgb = |name: String, image: &RgbImage| -> Result<()> {
        render::save_png_atomic(image, &out.join(&name))?;
        files.push(name);
        Ok(())
    };
    let colours = render::colour_classes(&classes, w, h, &cfg.palette);
    save_rgb(format!("{stem}_colour.png"), &colours)?;
    save_rgb(
        format!("{stem}_overlay.png"),
        &render::overlay(img, &colours, alpha),
    )?;
    for m in measures {
        let values = pred.measure_values(*m);
        let sc = match scale {
            ScaleMode::Fixed => Scale::fixed(*m, cfg.classes as usize),
            ScaleMode::PerImage => Scale::of_values(&values),
        };
        let heat = render::heatmap(&values, w, h, sc, m.name());
        let over = render::heat_over_grey(img, &heat);
        save_rgb(format!("{stem}_{}.png", m.name()), &heat)?;
        save_rgb(format!("{stem}_{}_overlay.png", m.name()), &over)?;
    }
    let name = format!("{stem}_classes.png");
    render::save_png_atomic(&render::class_index_image(&classes, w, h), &out.join(&name))?;
    files.push(name);
    Ok(files)
}

fn class_share(pred: &Prediction, cfg: &ModelConfig) -> BTreeMap<String, f64> {
    let counts = pred
        .class_map()
        .flatten(0, -1)
        .bincount::<Tensor>(None, cfg.classes);
    let total = counts.sum(Kind::Float).double_value(&[]).max(1.0);
    let counts = Vec::<i64>::try_from(counts).unwrap_or_default();
    cfg.class_names
        .iter()
        .zip(counts)
        .map(|(n, c)| (n.clone(), c as f64 / total))
        .collect()
}

pub(crate) fn run(args: &InferArgs) -> Result<()> {
    ensure!(
        (0.0..=1.0).contains(&args.alpha),
        "--alpha must be in [0, 1], got {}",
        args.alpha
    );
    ensure!(
        !args.uncertainty.is_empty(),
        "--uncertainty needs at least one measure"
    );
    let files = expand_inputs(&args.inputs)?;
    let device = args.sampling.device.init()?;
    let predictor = Predictor::load(&args.sampling.options(device, !args.no_dropout))?;
    prepare_out_dir(&args.out)?;
    let stems = output_stems(&files);
    let cfg = predictor.config().clone();
    let mut failures = 0;
    // Decode a few images ahead in parallel; the network itself uses every core per image.
    let ahead = rayon::current_num_threads().max(2);
    for (batch_files, batch_stems) in files.chunks(ahead).zip(stems.chunks(ahead)) {
        let decoded: Vec<Result<RgbImage>> = batch_files
            .par_iter()
            .map(|f| image_io::load_rgb(f))
            .collect();
        for ((file, stem), img) in batch_files.iter().zip(batch_stems).zip(decoded) {
            let result = img.and_then(|img| infer_one(&predictor, &cfg, args, &img, file, stem));
            if let Err(e) = result {
                failures += 1;
                eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images failed (see above)", files.len());
    }
    Ok(())
}

fn infer_one(
    predictor: &Predictor,
    cfg: &ModelConfig,
    args: &InferArgs,
    img: &RgbImage,
    file: &Path,
    stem: &str,
) -> Result<()> {
    let start = Instant::now();
    let pred = predictor.predict(img)?;
    let seconds = start.elapsed().as_secs_f64();
    let files = write_outputs(
        &args.out,
        stem,
        img,
        &pred,
        cfg,
        &args.uncertainty,
        args.scale,
        args.alpha,
    )?;
    let mean = |t: &Tensor| t.mean(Kind::Float).double_value(&[]);
    let summary = Summary {
        input: file.display().to_string(),
        model: predictor.path.display().to_string(),
        width: img.width(),
        height: img.height(),
        samples: pred.samples,
        adaptive: predictor.dropout && predictor.opts.adaptive.is_some(),
        dropout: predictor.dropout,
        seconds,
        mean_variance: mean(&pred.variance),
        mean_entropy: mean(&pred.entropy),
        mean_mutual_info: mean(&pred.mutual_info),
        class_share: class_share(&pred, cfg),
        files,
    };
    write_json_atomic(&args.out.join(format!("{stem}.json")), &summary)?;
    let first = args.uncertainty[0];
    println!(
        "{}: {:.2} s, T={}, mean {} {:.5} -> {}",
        file.display(),
        seconds,
        pred.samples,
        first.name(),
        mean(pred.measure(first)),
        args.out.join(format!("{stem}_overlay.png")).display()
    );
    Ok(())
}

/// Parses `HxW`.
fn parse_size(s: &str) -> Result<[i64; 2]> {
    let parse = || -> Option<[i64; 2]> {
        let (h, w) = s.split_once(['x', 'X'])?;
        Some([h.trim().parse().ok()?, w.trim().parse().ok()?])
    };
    parse().with_context(|| format!("--input-size `{s}` is not HxW, e.g. 180x240"))
}

/// `segnet-bayes init-model`: a randomly initialised network, saved like a trained one.
pub(crate) fn init_model(args: &InitModelArgs) -> Result<()> {
    let cfg = ModelConfig {
        arch: args.arch,
        width: args.width,
        input_size: args.input_size.as_deref().map(parse_size).transpose()?,
        ..Default::default()
    };
    cfg.validate()?;
    tch::manual_seed(args.seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = SegNet::new(&vs.root(), &cfg);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let mut meta = BTreeMap::new();
    meta.insert(
        "segnet_bayes.note".into(),
        "randomly initialised, untrained".into(),
    );
    checkpoint::save(&args.out, &cfg, &vs, &[], &meta)?;
    println!(
        "wrote untrained {:?} model (width {}) to {}",
        cfg.arch,
        cfg.width,
        args.out.display()
    );
    Ok(())
}
