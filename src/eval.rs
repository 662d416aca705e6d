//! `segnet-bayes eval`: accuracy (global, class average, mIoU, per-class IoU) for weight
//! averaging and for MC sampling in one run, and how well each uncertainty measure predicts
//! error (accuracy of the most certain pixels, calibration, PAvPU). Streams the split: memory
//! does not grow with the number of images.
//!
//! Also [`validate`], the quick check `train` runs after each epoch (at the network's input
//! size, labels resized with nearest neighbour).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::atomic::{write_atomic, write_json_atomic};
use crate::cli::EvalArgs;
use crate::config::{DataConfig, ModelConfig};
use crate::data::{self, Frames, Loader};
use crate::infer::{Predictor, PredictorOptions, TestDropout};
use crate::mc::{self, McOptions, Measure, Prediction};
use crate::metrics::{Confusion, UncertaintyStats};
use crate::model::{Mode, SegNet};
use crate::plot;
use crate::progress;

/// Confusion matrices of a validation pass.
pub(crate) struct Validation {
    pub wa: Confusion,
    pub mc: Option<Confusion>,
}

/// Scores `net` on `frames` at the network's input size: weight averaging in batches of 4, and
/// MC dropout with `samples` passes (masks from `seed`) when `samples > 0`.
pub(crate) fn validate(
    net: &SegNet,
    frames: &Arc<Frames>,
    data_cfg: &DataConfig,
    model: &ModelConfig,
    device: Device,
    samples: usize,
    seed: u64,
) -> Result<Validation> {
    let k = model.classes as usize;
    let mut wa = Confusion::new(k);
    let mut mc_conf = (samples > 0).then(|| Confusion::new(k));
    let order: Vec<usize> = (0..frames.len()).collect();
    let mut loader = Loader::new(
        frames.clone(),
        order,
        4,
        data_cfg.clone(),
        model.clone(),
        None,
        8,
        false,
    );
    let bytes = |t: &Tensor| {
        Vec::<u8>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Uint8).flatten(0, -1))
            .expect("class map")
    };
    while let Some(batch) = loader.next() {
        let batch = batch?;
        let images = batch.images.to_device(device);
        let gt = bytes(&batch.labels);
        let pred = tch::no_grad(|| net.forward(&images, Mode::DETERMINISTIC).argmax(1, false));
        wa.add(&gt, &bytes(&pred));
        if let Some(conf) = mc_conf.as_mut() {
            let opts = McOptions {
                samples,
                chunk: samples.min(8),
                seed: Some(seed),
                adaptive: None,
                flip: false,
                flip_phase: false,
            };
            for i in 0..images.size()[0] {
                let p = mc::sample(net, &images.get(i), &opts)?;
                let gt_i = bytes(&batch.labels.get(i));
                conf.add(&gt_i, &bytes(&p.class_map()));
            }
        }
    }
    Ok(Validation { wa, mc: mc_conf })
}

/// Scores of one way of predicting (weight averaging or MC).
#[derive(Serialize)]
pub struct Scores {
    pub global_accuracy: f64,
    pub class_average_accuracy: f64,
    pub mean_iou: f64,
    pub per_class_iou: Vec<(String, Option<f64>)>,
    pub ece: f64,
    pub reliability: Vec<(f64, f64, u64)>,
}

/// How well one uncertainty measure predicts error.
#[derive(Serialize)]
pub struct UncertaintyQuality {
    pub measure: String,
    pub prediction: String,
    /// (fraction of most certain pixels kept, their accuracy), for fractions 0.05, 0.10, .., 1
    pub accuracy_at_kept: Vec<(f64, f64)>,
    /// PAvPU with the threshold at the median uncertainty.
    pub pavpu_median: f64,
    pub median_threshold: f32,
}

/// Accuracy of one sequence's frames.
#[derive(Serialize)]
pub struct SequenceScores {
    pub sequence: String,
    pub images: usize,
    /// Weight averaging, then MC dropout.
    pub global_accuracy: [f64; 2],
    pub class_average_accuracy: [f64; 2],
    pub mean_iou: [f64; 2],
}

/// Confusion matrices per sequence, for weight averaging and MC dropout.
struct BySequence {
    re: regex::Regex,
    classes: usize,
    tallies: BTreeMap<String, (usize, Confusion, Confusion)>,
}

impl BySequence {
    fn new(pattern: &str, classes: usize) -> Result<BySequence> {
        Ok(BySequence {
            re: data::sequence_regex(pattern).context("--sequence-pattern")?,
            classes,
            tallies: BTreeMap::new(),
        })
    }

    fn sequence(&self, image: &Path) -> String {
        data::sequence_of(&self.re, image).unwrap_or_else(|| data::UNMATCHED.into())
    }

    fn add(&mut self, image: &Path, gt: &[u8], wa: &Prediction, mc: &Prediction) {
        let k = self.classes;
        let entry = self
            .tallies
            .entry(self.sequence(image))
            .or_insert_with(|| (0, Confusion::new(k), Confusion::new(k)));
        entry.0 += 1;
        entry.1.add(gt, &wa.class_bytes());
        entry.2.add(gt, &mc.class_bytes());
    }

    fn scores(&self) -> Vec<SequenceScores> {
        self.tallies
            .iter()
            .map(|(s, (n, wa, mc))| SequenceScores {
                sequence: s.clone(),
                images: *n,
                global_accuracy: [wa.global_accuracy(), mc.global_accuracy()],
                class_average_accuracy: [wa.class_average_accuracy(), mc.class_average_accuracy()],
                mean_iou: [wa.mean_iou(), mc.mean_iou()],
            })
            .collect()
    }
}

/// How many MC samples the images took (adaptive stopping ends each image on its own).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct SamplesUsed {
    pub mean: f64,
    pub min: usize,
    pub max: usize,
}

impl SamplesUsed {
    fn of(counts: &[usize]) -> SamplesUsed {
        let total: usize = counts.iter().sum();
        SamplesUsed {
            mean: total as f64 / counts.len().max(1) as f64,
            min: counts.iter().copied().min().unwrap_or(0),
            max: counts.iter().copied().max().unwrap_or(0),
        }
    }
}

#[derive(Serialize)]
pub struct Report {
    pub model: String,
    pub data: String,
    pub split: String,
    pub images: usize,
    /// `--samples`: T, or the most per image with adaptive stopping.
    pub samples: usize,
    pub adaptive: bool,
    /// `--dropout-rate` / `--dropout-after`: sampling's dropout where it differs from the
    /// model's own (absent: as trained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_dropout: Option<TestDropout>,
    /// `--temperature`: the logits were divided by it before every softmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `--flip`: every other MC sample, and a second weight-averaging pass, saw the image
    /// mirrored.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
    pub samples_used: SamplesUsed,
    pub seconds: f64,
    pub weight_averaging: Scores,
    pub mc_dropout: Scores,
    pub uncertainty: Vec<UncertaintyQuality>,
    /// The same accuracy per sequence (`--sequence-pattern`).
    pub per_sequence: Vec<SequenceScores>,
}

impl Report {
    /// "MC dropout (T=40)", or with adaptive stopping the mean samples taken.
    pub(crate) fn mc_name(&self) -> String {
        if self.adaptive {
            format!("MC dropout (adaptive, T={:.1})", self.samples_used.mean)
        } else {
            format!("MC dropout (T={})", self.samples)
        }
    }
}

/// Everything accumulated over a split, for one prediction mode.
struct Tally {
    confusion: Confusion,
    /// One per measure (weight averaging only has entropy).
    stats: Vec<(Measure, UncertaintyStats)>,
}

impl Tally {
    fn new(classes: usize, measures: &[Measure]) -> Tally {
        Tally {
            confusion: Confusion::new(classes),
            stats: measures
                .iter()
                .map(|m| (*m, UncertaintyStats::new(m.bound(classes))))
                .collect(),
        }
    }

    fn add(&mut self, pred: &Prediction, gt: &[u8], void: u8) {
        let classes = pred.class_bytes();
        self.confusion.add(gt, &classes);
        let confidence = pred.confidence_values();
        for (m, s) in &mut self.stats {
            s.add(&pred.measure_values(*m), &confidence, gt, &classes, void);
        }
    }

    fn scores(&self, names: &[String]) -> Scores {
        let c = &self.confusion;
        let cal = &self.stats[0].1;
        Scores {
            global_accuracy: c.global_accuracy(),
            class_average_accuracy: c.class_average_accuracy(),
            mean_iou: c.mean_iou(),
            per_class_iou: names.iter().cloned().zip(c.iou()).collect(),
            ece: cal.ece(),
            reliability: cal.reliability(),
        }
    }

    fn quality(&self, prediction: &str) -> Vec<UncertaintyQuality> {
        self.stats
            .iter()
            .map(|(m, s)| {
                let median = s.quantile(0.5);
                UncertaintyQuality {
                    measure: m.name().to_string(),
                    prediction: prediction.to_string(),
                    accuracy_at_kept: (1..=20)
                        .map(|i| i as f64 / 20.0)
                        .map(|f| (f, s.accuracy_at_kept(f)))
                        .collect(),
                    pavpu_median: s.pavpu(median),
                    median_threshold: median,
                }
            })
            .collect()
    }
}

pub(crate) fn run(args: &EvalArgs) -> Result<()> {
    let device = args.sampling.device.init()?;
    let predictor = Predictor::load(&PredictorOptions {
        temperature: args.temperature,
        ..args.sampling.options(device, true)?
    })?;
    let model = predictor.config().clone();
    let data_cfg = DataConfig {
        root: args.data.clone(),
        ..Default::default()
    };
    let mut by_sequence = BySequence::new(&args.sequence_pattern, model.classes as usize)?;
    let pairs = eval_pairs(args, &by_sequence)?;
    crate::infer::prepare_out_dir(&args.out)?;
    let k = model.classes as usize;
    let void = model.void() as u8;
    let all = [Measure::Variance, Measure::Entropy, Measure::MutualInfo];
    let mut wa = Tally::new(k, &[Measure::Entropy]);
    let mut mcs = Tally::new(k, &all);
    let mut used = Vec::with_capacity(pairs.len());
    let bar = progress::bar(Some(pairs.len() as u64), "eval");
    let start = Instant::now();
    let ahead = rayon::current_num_threads().max(2);
    for chunk in pairs.chunks(ahead) {
        let loaded: Vec<_> = chunk
            .par_iter()
            .map(|p| data::load_pair(p, &data_cfg, &model))
            .collect();
        for (item, pair) in loaded.into_iter().zip(chunk) {
            let (img, (_, _, gt)) = item?;
            let x = predictor.input(&img);
            let (h, w) = (img.height() as i64, img.width() as i64);
            let p_wa = tch::no_grad(|| {
                mc::weight_average(&predictor.net, &x, predictor.opts.flip).resize(h, w)
            });
            wa.add(&p_wa, &gt, void);
            let p_mc = mc::sample(&predictor.net, &x, &predictor.opts)?;
            used.push(p_mc.samples);
            let p_mc = tch::no_grad(|| p_mc.resize(h, w));
            mcs.add(&p_mc, &gt, void);
            by_sequence.add(&pair.image, &gt, &p_wa, &p_mc);
            bar.inc(1);
            let rate = bar.position() as f64 / start.elapsed().as_secs_f64();
            bar.set_message(format!("{rate:.2} img/s"));
        }
    }
    bar.finish_and_clear();
    // As `train` refuses such data: every score would be a zero that means nothing.
    ensure!(
        wa.confusion.total() > 0,
        "the {} labels of split `{}` in {} have no labelled pixels (all void, value {void}): \
         nothing to score; check --data, --split and the model's classes",
        pairs.len(),
        args.split.join("+"),
        args.data.display()
    );
    let mut uncertainty = mcs.quality("mc");
    uncertainty.extend(wa.quality("weight-averaging"));
    let report = Report {
        model: predictor.path.display().to_string(),
        data: args.data.display().to_string(),
        split: args.split.join("+"),
        images: pairs.len(),
        samples: predictor.opts.samples,
        adaptive: predictor.opts.adaptive.is_some(),
        test_dropout: predictor.test_dropout.clone(),
        temperature: args.temperature,
        flip: predictor.opts.flip,
        samples_used: SamplesUsed::of(&used),
        seconds: start.elapsed().as_secs_f64(),
        weight_averaging: wa.scores(&model.class_names),
        mc_dropout: mcs.scores(&model.class_names),
        uncertainty,
        per_sequence: by_sequence.scores(),
    };
    write_report(&args.out, &report)?;
    print!("{}", markdown(&report));
    Ok(())
}

/// Fractions of most certain pixels shown in the Markdown table (the plot shows all 20).
const TABLE_FRACTIONS: [f64; 4] = [0.1, 0.5, 0.9, 1.0];

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The report as a Markdown document.
fn markdown(r: &Report) -> String {
    let u = &r.samples_used;
    let sampling = if r.adaptive {
        format!(
            "adaptive T up to {}: mean {:.1} samples (min {}, max {})",
            r.samples, u.mean, u.min, u.max
        )
    } else {
        format!("T = {}", r.samples)
    };
    let sampling = match &r.test_dropout {
        None => sampling,
        Some(d) => format!(
            "{sampling}, dropout at sampling time{}{}",
            d.rate.map_or(String::new(), |p| format!(" p = {p}")),
            d.after.as_ref().map_or(String::new(), |a| {
                let stages = if a.is_empty() {
                    "none".into()
                } else {
                    a.join(", ")
                };
                format!(" after {stages}")
            })
        ),
    };
    let sampling = match r.temperature {
        Some(t) => format!("{sampling}, logits divided by a temperature of {t}"),
        None => sampling,
    };
    let sampling = if r.flip {
        format!("{sampling}, every other sample mirrored (weight averaging: the mean of the image's pass and its mirror's)")
    } else {
        sampling
    };
    let mut s = format!(
        "# Evaluation: {} on {} ({}, {} images)\n\nMC dropout with {sampling}; {:.0} s.\n\n",
        r.model, r.data, r.split, r.images, r.seconds
    );
    s += "| prediction | global acc | class avg acc | mIoU | ECE |\n|---|---|---|---|---|\n";
    for (name, sc) in [
        ("weight averaging", &r.weight_averaging),
        (&*r.mc_name(), &r.mc_dropout),
    ] {
        s += &format!(
            "| {name} | {} | {} | {} | {} |\n",
            pct(sc.global_accuracy),
            pct(sc.class_average_accuracy),
            pct(sc.mean_iou),
            pct(sc.ece)
        );
    }
    s += &sequence_table(r);
    s += "\n| class | IoU (WA) | IoU (MC) |\n|---|---|---|\n";
    for ((name, a), (_, b)) in r
        .weight_averaging
        .per_class_iou
        .iter()
        .zip(&r.mc_dropout.per_class_iou)
    {
        let f = |v: &Option<f64>| v.map_or("-".into(), pct);
        s += &format!("| {name} | {} | {} |\n", f(a), f(b));
    }
    s += "\nPixel accuracy of the most certain pixels, and PAvPU at the median uncertainty:\n\n";
    s += "| measure | prediction | 10% | 50% | 90% | 100% | PAvPU |\n|---|---|---|---|---|---|---|\n";
    for q in &r.uncertainty {
        let acc: Vec<String> = TABLE_FRACTIONS
            .iter()
            .map(|f| {
                let at = q
                    .accuracy_at_kept
                    .iter()
                    .find(|(k, _)| (k - f).abs() < 1e-9);
                at.map_or("-".into(), |(_, a)| pct(*a))
            })
            .collect();
        s += &format!(
            "| {} | {} | {} | {} |\n",
            q.measure,
            q.prediction,
            acc.join(" | "),
            pct(q.pavpu_median)
        );
    }
    s
}

/// The frames to score: the `--split`s, restricted to `--sequences` when given, at most
/// `--limit`.
fn eval_pairs(args: &EvalArgs, by_sequence: &BySequence) -> Result<Vec<data::Pair>> {
    let mut pairs = vec![];
    for split in &args.split {
        pairs.extend(data::discover(&args.data, split, 0)?);
    }
    if !args.sequences.is_empty() {
        let counts = data::count_by_sequence(&by_sequence.re, &pairs);
        for s in &args.sequences {
            ensure!(
                counts.contains_key(s),
                "--sequences: `{s}` has no frames in {} (sequences there: {})",
                args.split.join("+"),
                counts.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        pairs.retain(|p| args.sequences.contains(&by_sequence.sequence(&p.image)));
    }
    if args.limit > 0 {
        pairs.truncate(args.limit);
    }
    Ok(pairs)
}

/// Per-sequence accuracy, when the frames come from more than one sequence.
fn sequence_table(r: &Report) -> String {
    if r.per_sequence.len() < 2 {
        return String::new();
    }
    let mut s = "\nPer sequence (weight averaging / MC dropout):\n\n".to_string();
    s += "| sequence | images | global acc | class avg acc | mIoU |\n|---|---|---|---|---|\n";
    let both = |v: [f64; 2]| format!("{} / {}", pct(v[0]), pct(v[1]));
    for q in &r.per_sequence {
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            q.sequence,
            q.images,
            both(q.global_accuracy),
            both(q.class_average_accuracy),
            both(q.mean_iou)
        );
    }
    s
}

fn write_report(out: &Path, r: &Report) -> Result<()> {
    write_json_atomic(&out.join("report.json"), r)?;
    write_atomic(&out.join("report.md"), markdown(r).as_bytes())?;
    plot::write_eval_plots(out, r)?;
    ensure!(out.join("report.json").is_file(), "report not written");
    Ok(())
}
