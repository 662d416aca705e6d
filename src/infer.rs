//! `segnet-bayes infer`: images in, class maps, overlays and uncertainty heatmaps out.
//!
//! For each image: decode (in parallel, rayon) -> resize to the model's input size -> MC sampler
//! (`mc::sample`) -> resize the prediction back to the image's size -> `render` -> PNGs and a
//! JSON summary, each written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::atomic::write_json_atomic;
use crate::cli::{InferArgs, InitModelArgs, ScaleMode};
use crate::config::ModelConfig;
use crate::image_io;
use crate::items::{self, Expand, Item};
use crate::ledger::{Entry, Ledger};
use crate::mc::{self, McOptions, Measure, Prediction, Settle};
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
    /// Logits divided by this before the softmax (temperature scaling); `None`: as trained.
    pub temperature: Option<f64>,
    /// What the convolutions run in.
    pub precision: Precision,
    /// Dropout at sampling time, where it differs from training's.
    pub test_dropout: TestDropout,
}

/// MC dropout at sampling time with another rate or at other positions than the model was
/// trained with (the weights stay as they are): for studying what sampling does, e.g. why it
/// does or does not beat weight averaging. `None` fields keep the model's own setting.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TestDropout {
    pub rate: Option<f64>,
    pub after: Option<Vec<String>>,
}

impl TestDropout {
    /// The model's config as sampling should see it; refuses what no network could run.
    pub(crate) fn apply(&self, config: &mut ModelConfig) -> Result<()> {
        if let Some(p) = self.rate {
            ensure!(
                (0.0..1.0).contains(&p),
                "--dropout-rate must be in [0, 1), got {p}"
            );
            config.dropout = p;
        }
        if let Some(after) = &self.after {
            for s in after {
                if let Err(e) = config.arch.check_stage(s) {
                    bail!("--dropout-after: {e}");
                }
            }
            config.dropout_after = Some(after.clone());
        }
        Ok(())
    }

    /// Whether anything differs from the model's own dropout.
    pub fn is_set(&self) -> bool {
        self.rate.is_some() || self.after.is_some()
    }
}

/// A loaded network, ready to predict.
pub struct Predictor {
    pub(crate) net: SegNet,
    /// The weights file it was loaded from.
    pub path: PathBuf,
    device: Device,
    pub opts: McOptions,
    pub dropout: bool,
    /// Sampling's dropout where it differs from the model's own (`None`: as trained).
    pub test_dropout: Option<TestDropout>,
    /// Whether [`Predictor::bounded_size`] has said that it scales images down.
    scaled_note: AtomicBool,
}

/// Most pixels the network sees of an image when the model has no input size. Its memory
/// grows with the pixels (a 0.25-width SegNet took 13.8 GB at 6000x4000 at full size).
pub const MAX_NATIVE_PIXELS: u64 = 1 << 20;

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
        let (_, mut net, _) = checkpoint::load_model_as(&path, options.device, |config| {
            options.test_dropout.apply(config)
        })?;
        net.fold_batchnorm();
        if let Some(t) = options.temperature {
            ensure!(
                t > 0.0 && t.is_finite(),
                "--temperature must be a number above 0, got {t}"
            );
            net.scale_logits(1.0 / t);
        }
        net.set_precision(options.precision);
        Ok(Predictor {
            net,
            path,
            device: options.device,
            opts: options.mc,
            dropout: options.dropout,
            test_dropout: options
                .test_dropout
                .is_set()
                .then(|| options.test_dropout.clone()),
            scaled_note: AtomicBool::new(false),
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
        let img = match cfg.input_size.or_else(|| self.bounded_size(img)) {
            Some(size) => {
                resized = image_io::resize_rgb(img, size);
                &resized
            }
            None => img,
        };
        image_io::network_input(img, cfg).to_device(self.device)
    }

    /// For a model without an input size, which runs at each image's own size: a smaller size
    /// of the same shape when the image has more than [`MAX_NATIVE_PIXELS`], said once.
    fn bounded_size(&self, img: &RgbImage) -> Option<[i64; 2]> {
        let (w, h) = (img.width() as f64, img.height() as f64);
        let scale = (MAX_NATIVE_PIXELS as f64 / (w * h)).sqrt();
        if scale >= 1.0 {
            return None;
        }
        let min = image_io::MIN_SIDE as f64;
        let size = [(h * scale).max(min) as i64, (w * scale).max(min) as i64];
        if !self.scaled_note.swap(true, Ordering::Relaxed) {
            eprintln!(
                "note: model {} has no input size; the network sees images above {:.1} Mpx \
                 scaled down ({w}x{h} at {}x{}); outputs keep the image's size. Give the model \
                 an input size (`init-model --input-size`, `model.input_size`) to choose it",
                self.path.display(),
                MAX_NATIVE_PIXELS as f64 / 1e6,
                size[1],
                size[0]
            );
        }
        Some(size)
    }

    /// The prediction for one image, at the image's own size, on the CPU.
    pub fn predict(&self, img: &RgbImage) -> Result<Prediction> {
        let x = self.input(img);
        let pred = if self.dropout {
            mc::sample(&self.net, &x, &self.opts)?
        } else {
            mc::weight_average(&self.net, &x, self.opts.flip)
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
        size: p.size,
    }
}

/// Makes the output folder and checks that it can be written, before any work.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    // One probe per process: the tasks of a sharded run share the folder.
    let probe = dir.join(format!(".segnet-bayes-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Per-image summary written as `<name>.json`, after the image's other files: the item's done
/// marker. Timing is not in it (it goes to stdout and a sharded run's shard summary), so the same
/// image with the same settings gives the same bytes in any run.
#[derive(Serialize)]
struct Summary {
    input: String,
    /// Size of the input file: a replaced input is not taken for done.
    input_bytes: u64,
    model: String,
    width: u32,
    height: u32,
    /// Samples taken: T, or where adaptive stopping found the estimate settled.
    samples: usize,
    adaptive: bool,
    dropout: bool,
    mean_variance: f64,
    mean_entropy: f64,
    mean_mutual_info: f64,
    class_share: BTreeMap<String, f64>,
    /// Relative to the output folder.
    files: Vec<String>,
    settings: Settings,
}

/// What an image's outputs depend on besides the image: an earlier result is reused only when
/// these match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    model: String,
    model_bytes: u64,
    samples: usize,
    seed: Option<u64>,
    dropout: bool,
    uncertainty: Vec<Measure>,
    scale: String,
    alpha: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test_dropout: Option<TestDropout>,
    /// Adaptive stopping's tolerances (`None`: exactly `samples`).
    #[serde(default)]
    adaptive: Option<Settle>,
    #[serde(default)]
    flip: bool,
    /// What the convolutions ran in (libtorch's kind: `Float`, `BFloat16`, `Half`).
    #[serde(default)]
    precision: String,
}

impl Settings {
    fn new(predictor: &Predictor, args: &InferArgs) -> Settings {
        Settings {
            model: predictor.path.display().to_string(),
            model_bytes: std::fs::metadata(&predictor.path).map_or(0, |m| m.len()),
            samples: predictor.opts.samples,
            seed: predictor.opts.seed,
            dropout: predictor.dropout,
            uncertainty: args.uncertainty.clone(),
            scale: format!("{:?}", args.scale),
            alpha: args.alpha,
            test_dropout: predictor.test_dropout.clone(),
            adaptive: predictor.opts.adaptive.filter(|_| predictor.dropout),
            flip: predictor.opts.flip,
            precision: format!("{:?}", predictor.net.compute_kind()),
        }
    }
}

/// The files an item writes, relative to the output folder, in the order written; the JSON
/// summary last.
fn output_files(name: &str, measures: &[Measure]) -> Vec<String> {
    let mut files = vec![format!("{name}_colour.png"), format!("{name}_overlay.png")];
    for m in measures {
        files.push(format!("{name}_{}.png", m.name()));
        files.push(format!("{name}_{}_overlay.png", m.name()));
    }
    files.push(format!("{name}_classes.png"));
    files.push(format!("{name}.json"));
    files
}

/// Whether an earlier run left this item whole, from the same input with the same settings.
fn already_done(out: &Path, item: &Item, settings: &Settings) -> bool {
    #[derive(Deserialize)]
    struct Earlier {
        input_bytes: u64,
        files: Vec<String>,
        settings: Settings,
    }
    let read = || -> Option<Earlier> {
        serde_json::from_slice(&std::fs::read(out.join(format!("{}.json", item.name))).ok()?).ok()
    };
    read().is_some_and(|e| {
        Some(e.input_bytes) == std::fs::metadata(&item.path).ok().map(|m| m.len())
            && &e.settings == settings
            && e.files.iter().all(|f| out.join(f).is_file())
    })
}

/// Renders a prediction into `out`, returning the files written.
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    out: &Path,
    stem: &str,
    img: &RgbImage,
    pred: &Prediction,
    classes: &[u8],
    cfg: &ModelConfig,
    measures: &[Measure],
    scale: ScaleMode,
    alpha: f32,
) -> Result<Vec<String>> {
    let (w, h) = img.dimensions();
    let mut files = vec![];
    let mut save_rgb = |name: String, image: &RgbImage| -> Result<()> {
        render::save_png_atomic(image, &out.join(&name))?;
        files.push(name);
        Ok(())
    };
    let colours = render::colour_classes(classes, w, h, &cfg.palette);
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
    render::save_png_atomic(&render::class_index_image(classes, w, h), &out.join(&name))?;
    files.push(name);
    Ok(files)
}

fn class_share(classes: &[u8], cfg: &ModelConfig) -> BTreeMap<String, f64> {
    let mut counts = vec![0u64; cfg.classes as usize];
    for &c in classes {
        counts[c as usize] += 1;
    }
    let total = classes.len().max(1) as f64;
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
    let shard = args.work.shard()?;
    let items = args.work.items(&args.inputs, &args.out, Expand::Images)?;
    items::check_outputs(&items, |name| output_files(name, &args.uncertainty))?;
    let device = args.sampling.device.init()?;
    let predictor = Predictor::load(&args.sampling.options(device, !args.no_dropout)?)?;
    prepare_out_dir(&args.out)?;
    let settings = Settings::new(&predictor, args);
    let entries = items
        .iter()
        .map(|it| Entry::new(it, format!("{}.json", it.name), None))
        .collect();
    let record = serde_json::to_value(&settings)?;
    let mut ledger = Ledger::open(&args.out, shard, "infer", record, entries)?;
    let todo = pending(&items, &mut ledger, &args.out, &settings);
    let cfg = predictor.config().clone();
    let mut failures = 0;
    // Decode a few images ahead in parallel; the network itself uses every core per image.
    let ahead = rayon::current_num_threads().max(2);
    for batch in todo.chunks(ahead) {
        let decoded: Vec<Result<RgbImage>> = batch
            .par_iter()
            .map(|it| image_io::load_rgb(&it.path))
            .collect();
        for (item, img) in batch.iter().zip(decoded) {
            let start = Instant::now();
            let (file, stem) = (&item.path, &item.name);
            let result =
                img.and_then(|img| infer_one(&predictor, &cfg, args, &img, file, stem, &settings));
            ledger.record(stem, &result, start.elapsed().as_secs_f64());
            if let Err(e) = result {
                failures += 1;
                eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            }
        }
    }
    ledger.finish()?;
    if failures > 0 {
        bail!("{failures} of {} images failed (see above)", todo.len());
    }
    Ok(())
}

/// This task's items, less those an earlier run finished with the same settings (logged as
/// skipped): a rerun, or an engine's retry of a killed task, picks up where it stopped.
fn pending<'a>(
    items: &'a [Item],
    ledger: &mut Ledger,
    out: &Path,
    settings: &Settings,
) -> Vec<&'a Item> {
    let mine: Vec<&Item> = (0..items.len())
        .filter(|&k| ledger.owns(k))
        .map(|k| &items[k])
        .collect();
    let mut todo = vec![];
    for item in &mine {
        if already_done(out, item, settings) {
            ledger.skipped(&item.name);
        } else {
            todo.push(*item);
        }
    }
    let skipped = mine.len() - todo.len();
    if skipped > 0 {
        eprintln!(
            "{skipped} of {} images already done in {} with these settings: skipped",
            mine.len(),
            out.display()
        );
    }
    todo
}

fn infer_one(
    predictor: &Predictor,
    cfg: &ModelConfig,
    args: &InferArgs,
    img: &RgbImage,
    file: &Path,
    stem: &str,
    settings: &Settings,
) -> Result<()> {
    if let Some(dir) = args.out.join(stem).parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let start = Instant::now();
    let pred = predictor.predict(img)?;
    let seconds = start.elapsed().as_secs_f64();
    let classes = pred.class_bytes();
    let files = write_outputs(
        &args.out,
        stem,
        img,
        &pred,
        &classes,
        cfg,
        &args.uncertainty,
        args.scale,
        args.alpha,
    )?;
    debug_assert_eq!(files, output_files(stem, &args.uncertainty)[..files.len()]);
    let summary = Summary {
        input: file.display().to_string(),
        input_bytes: std::fs::metadata(file).map_or(0, |m| m.len()),
        model: predictor.path.display().to_string(),
        width: img.width(),
        height: img.height(),
        samples: pred.samples,
        adaptive: predictor.dropout && predictor.opts.adaptive.is_some(),
        dropout: predictor.dropout,
        mean_variance: pred.mean(Measure::Variance),
        mean_entropy: pred.mean(Measure::Entropy),
        mean_mutual_info: pred.mean(Measure::MutualInfo),
        class_share: class_share(&classes, cfg),
        files,
        settings: settings.clone(),
    };
    write_json_atomic(&args.out.join(format!("{stem}.json")), &summary)?;
    let first = args.uncertainty[0];
    println!(
        "{}: {:.2} s, T={}, mean {} {:.5} -> {}",
        file.display(),
        seconds,
        pred.samples,
        first.name(),
        pred.mean(first),
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
