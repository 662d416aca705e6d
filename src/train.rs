//! `segnet-bayes train`: weighted cross-entropy (void ignored) with SGD or Adam, per-epoch
//! validation, best weights by validation mIoU, and resumable checkpoints.
//!
//! Reproducibility: the epoch's shuffle, each image's augmentation and each step's dropout masks
//! are seeded from (config seed, epoch / step), and validation's MC masks from the config seed,
//! so a run killed at any point and resumed from its last checkpoint replays exactly what the
//! uninterrupted run would have done: the same weights and the same log, timings apart.
//!
//! Run folder: `config.yaml` (resolved), `last.safetensors` (weights + optimiser state + progress,
//! written atomically), `best.safetensors` (weights of the best validation mIoU), `model.safetensors`
//! (the final model: best weights, batch norm re-estimated if asked), `swa.safetensors` (with
//! `train.swa_from`: the mean of the tail's epochs, see [`crate::swa`]), `log.jsonl` (one line per
//! epoch), `resumes.jsonl` (one line per resume, with the config keys it changed). Nothing is
//! written there before the config, the data and the checkpoint to resume have passed their
//! checks.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Reduction, Tensor};

use crate::atomic::{self, write_atomic};
use crate::cli::{RecalibrateArgs, TrainArgs};
use crate::config::{Config, FinalWeights, LrScaling, Schedule, TrainConfig};
use crate::data::{Batch, Frames, Loader};
use crate::model::checkpoint::{self, STATE_PREFIX};
use crate::model::init;
use crate::model::{Mode, SegNet};
use crate::optim::Optim;
use crate::precision;
use crate::progress;
use crate::resume::{self, DataPrint};
use crate::rng::{mix_seed, SplitMix64};
use crate::swa::{self, WeightAverage};
use crate::trainset::{self, TrainingData};

/// Progress stored in a checkpoint's metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Completed epochs.
    pub epoch: usize,
    /// Batches done in the current epoch.
    pub step_in_epoch: usize,
    pub global_step: usize,
    /// Best validation mIoU so far (weight averaging), -1 before any validation.
    pub best_miou: f64,
    /// Seconds of training so far, over all sessions of the run.
    pub elapsed: f64,
    #[serde(flatten)]
    pub sums: EpochSums,
    /// The data the run trains on; `None` in checkpoints from before it was kept.
    #[serde(default)]
    pub data: Option<DataPrint>,
}

/// Running sums of the current epoch, kept in the checkpoint (flat beside the progress) so
/// that an epoch resumed part-way logs what the uninterrupted epoch would have.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct EpochSums {
    /// Summed loss of the epoch's steps.
    pub epoch_loss_sum: f64,
    /// Seconds spent on the epoch's steps, and of them waiting for data, over all sessions:
    /// the time between a kill and the resume, and steps redone after it, do not count.
    pub epoch_seconds: f64,
    pub epoch_wait: f64,
    /// The steps those seconds cover: all of the epoch's, except those before the resume of a
    /// checkpoint from a version that did not time them.
    pub epoch_timed_steps: usize,
}

impl EpochSums {
    /// Images per second of the epoch's timed steps (batches are whole).
    fn images_per_s(&self, batch_size: usize) -> f64 {
        (self.epoch_timed_steps * batch_size) as f64 / self.epoch_seconds.max(1e-9)
    }

    /// The share of the epoch's time spent waiting for data.
    fn wait_share(&self) -> f64 {
        self.epoch_wait / self.epoch_seconds.max(1e-9)
    }
}

const PROGRESS_KEY: &str = "segnet_bayes.progress";

/// One line of `log.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct EpochLog {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_images_per_s: f64,
    /// Share of the epoch's wall time the training step waited for data.
    pub data_wait_share: f64,
    pub val_global_accuracy: Option<f64>,
    pub val_class_accuracy: Option<f64>,
    pub val_miou: Option<f64>,
    pub val_mc_miou: Option<f64>,
    /// Weight-averaging mIoU of each validation sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_sequence_miou: Option<BTreeMap<String, f64>>,
    pub elapsed_s: f64,
}

/// Learning rate at `step` of `total` (linear warm-up, then the schedule). With a time budget
/// (`train.max_minutes`), `elapsed_min` minutes count too: the schedule follows whichever of
/// steps and time is further along, so a time-limited run still decays to the end. With
/// `train.swa_lr`, the rate is held there from `train.swa_from` on.
fn learning_rate(cfg: &Config, step: usize, total: usize, elapsed_min: f64) -> f64 {
    let t = &cfg.train;
    let warm = if t.warmup_steps > 0 && step < t.warmup_steps {
        (step + 1) as f64 / t.warmup_steps as f64
    } else {
        1.0
    };
    let progress = schedule_progress(cfg, step, total, elapsed_min);
    if let (Some(from), Some(swa_lr)) = (t.swa_from, t.swa_lr) {
        if progress >= from {
            return swa_lr * lr_scale(t) * warm;
        }
    }
    let factor = match t.schedule {
        Schedule::Constant => 1.0,
        Schedule::Cosine => 0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::Poly => (1.0 - progress).powf(0.9),
    };
    base_lr(t) * warm * factor
}

/// How far along the schedule is, 0 to 1: steps done of `total`, or with a time budget
/// (`train.max_minutes`) minutes done of it, whichever is further.
fn schedule_progress(cfg: &Config, step: usize, total: usize, elapsed_min: f64) -> f64 {
    let t = &cfg.train;
    let progress = (step as f64 / total.max(1) as f64).min(1.0);
    if t.max_minutes > 0.0 {
        progress.max((elapsed_min / t.max_minutes).min(1.0))
    } else {
        progress
    }
}

/// `train.lr`, scaled to the batch size as `train.lr_scaling` asks.
fn base_lr(t: &TrainConfig) -> f64 {
    t.lr * lr_scale(t)
}

/// What `train.lr_scaling` multiplies the configured rates by at this batch size.
fn lr_scale(t: &TrainConfig) -> f64 {
    let ratio = t.batch_size as f64 / t.lr_base_batch as f64;
    match t.lr_scaling {
        LrScaling::None => 1.0,
        LrScaling::Linear => ratio,
        LrScaling::Sqrt => ratio.sqrt(),
    }
}

/// The epoch's visiting order: a seeded Fisher-Yates shuffle.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(mix_seed(seed, epoch as u64));
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

fn save_checkpoint(
    path: &Path,
    cfg: &Config,
    vs: &nn::VarStore,
    opt: Option<&Optim>,
    progress: &Progress,
) -> Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert(PROGRESS_KEY.to_string(), serde_json::to_string(progress)?);
    let state = opt.map(Optim::state).unwrap_or_default();
    checkpoint::save(path, &cfg.model, vs, &state, &meta)
}

/// Keeps only the log lines of completed epochs (a resumed run rewrites the rest).
fn trim_log(path: &Path, completed: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<EpochLog>(l)
                .map(|e| e.epoch <= completed)
                .unwrap_or(false)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

fn append_log(path: &Path, entry: &EpochLog) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(entry)?)?;
    Ok(())
}

/// The run folder and, when resuming, what it resumes.
struct Run {
    out: PathBuf,
    resumed: Option<Resumed>,
}

/// A checked checkpoint to resume, and the config keys the resume changes.
struct Resumed {
    ckpt: checkpoint::Checkpoint,
    progress: Progress,
    changes: Vec<resume::Change>,
}

/// Checks the run folder without writing to it: a new run refuses to overwrite one; a resumed
/// run needs its checkpoint, and a config and data that replay it.
fn open_run(args: &TrainArgs, cfg: &Config, data: &TrainingData, per_epoch: usize) -> Result<Run> {
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(stem)
    });
    let last = out.join("last.safetensors");
    if !args.resume {
        ensure!(
            !last.exists(),
            "run folder {} already holds a training run; pass --resume to continue it or --out NEW_FOLDER",
            out.display()
        );
        return Ok(Run { out, resumed: None });
    }
    ensure!(
        last.is_file(),
        "--resume: {} has no checkpoint (last.safetensors); start without --resume",
        out.display()
    );
    let ckpt = checkpoint::read(&last)?;
    let diffs = checkpoint::config_differences(&ckpt.config, &cfg.model);
    ensure!(
        diffs.is_empty(),
        "--resume: the config's model differs from the run's checkpoint ({}); use the run's config.yaml",
        diffs.join(", ")
    );
    let changes = resume::changes(&resume::saved_config(&out)?, cfg);
    resume::refuse_unsafe(&out, &changes)?;
    let progress = progress_of(&ckpt, &last)?;
    if let Some(trained_on) = &progress.data {
        data.print.check(trained_on, &cfg.data.root)?;
    }
    ensure!(
        progress.step_in_epoch <= per_epoch,
        "--resume: {} stopped at step {} of an epoch, which has {per_epoch} steps with this config's data",
        last.display(),
        progress.step_in_epoch
    );
    Ok(Run {
        out,
        resumed: Some(Resumed {
            ckpt,
            progress,
            changes,
        }),
    })
}

/// The training progress in a checkpoint's metadata.
pub(crate) fn progress_of(ckpt: &checkpoint::Checkpoint, path: &Path) -> Result<Progress> {
    let json = ckpt
        .meta
        .get(PROGRESS_KEY)
        .with_context(|| format!("{} has no training progress", path.display()))?;
    serde_json::from_str(json)
        .with_context(|| format!("{}: unreadable training progress", path.display()))
}

impl Run {
    /// Writes the run's config and history once every check has passed. A resume is recorded
    /// before `config.yaml` takes its changes, so a kill in between repeats the record rather
    /// than losing it.
    fn begin(&self, cfg: &Config) -> Result<()> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create run folder {}", self.out.display()))?;
        atomic::remove_leftovers(&self.out);
        let log = self.out.join("log.jsonl");
        let Some(r) = &self.resumed else {
            write_atomic(&self.out.join("config.yaml"), cfg.to_yaml().as_bytes())?;
            let _ = std::fs::remove_file(log);
            let _ = std::fs::remove_file(self.out.join(swa::FILE));
            return Ok(());
        };
        let p = &r.progress;
        resume::record(
            &self.out,
            &resume::Record {
                unix_time: resume::unix_time(),
                epoch: p.epoch,
                step_in_epoch: p.step_in_epoch,
                global_step: p.global_step,
                changes: &r.changes,
            },
        )?;
        write_atomic(&self.out.join("config.yaml"), cfg.to_yaml().as_bytes())?;
        trim_log(&log, p.epoch)?;
        println!("resuming {} {}", self.out.display(), r.describe());
        Ok(())
    }
}

impl Resumed {
    /// Where the run resumes, and what changes.
    fn describe(&self) -> String {
        let p = &self.progress;
        let changed: Vec<String> = self
            .changes
            .iter()
            .map(|c| format!("{} {} -> {}", c.key, c.from, c.to))
            .collect();
        let changed = if changed.is_empty() {
            String::new()
        } else {
            format!("; changed: {}", changed.join(", "))
        };
        format!(
            "at epoch {} step {} (global step {}){changed}",
            p.epoch + 1,
            p.step_in_epoch,
            p.global_step
        )
    }
}

pub(crate) fn run(args: &TrainArgs) -> Result<()> {
    let cfg = resolved_config(args)?;
    let device = args.device.init()?;
    let data = TrainingData::load(&cfg)?;
    let per_epoch = steps_per_epoch(&cfg, &data)?;
    let run = open_run(args, &cfg, &data, per_epoch)?;
    let out = run.out.clone();

    // Seeded before the network is built: its initial weights come from this seed.
    tch::manual_seed(cfg.train.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let net = SegNet::new(&vs.root(), &cfg.model);
    if let (None, Some(path)) = (&run.resumed, &cfg.train.init) {
        let report = init::load_matching(&mut vs, &cfg.model, path)?;
        report.lines(path).iter().for_each(|l| println!("{l}"));
    }
    let mut opt = Optim::new(&vs, &cfg.train);
    let mut progress = match &run.resumed {
        Some(r) => restore(r, &out, &mut vs, &mut opt)?,
        None => Progress {
            best_miou: -1.0,
            ..Default::default()
        },
    };
    progress.data = Some(data.print.clone());
    let average = match cfg.train.swa_from {
        Some(_) => Some(WeightAverage::open(
            &cfg,
            &out,
            device,
            run.resumed.is_some(),
        )?),
        None => None,
    };
    run.begin(&cfg)?;
    print_plan(&cfg, &data, device);

    let weights = Tensor::from_slice(&data.weights).to_device(device);
    let mut trainer = Trainer {
        cfg: &cfg,
        out: &out,
        vs: &vs,
        net: &net,
        opt: &mut opt,
        average,
        weights: &weights,
        data: &data,
        autocast: precision::setup(cfg.train.precision, device)?,
        device,
        per_epoch,
        elapsed_before: progress.elapsed,
        progress,
        session_start: Instant::now(),
    };
    let finished = trainer.train()?;
    let progress = trainer.progress.clone();
    let averaged = trainer.average.as_ref().map_or(0, |a| a.held().epochs);
    write_final_model(&cfg, &out, device, &data.train, &progress)?;
    let best = if cfg.train.final_weights == FinalWeights::Swa {
        if averaged > 0 {
            format!("the mean of the last {averaged} epochs' weights, as train.final_weights says")
        } else {
            "no epoch reached train.swa_from, last weights".to_string()
        }
    } else if data.val_len() == 0 {
        "no validation, last weights".to_string()
    } else if progress.best_miou < 0.0 {
        "stopped before the first validation, last weights".to_string()
    } else if cfg.train.final_weights == FinalWeights::Last {
        format!(
            "last weights, as train.final_weights says (best {} mIoU {:.4})",
            val_name(&cfg),
            progress.best_miou
        )
    } else {
        format!("best {} mIoU {:.4}", val_name(&cfg), progress.best_miou)
    };
    println!(
        "{} after {} epochs ({:.1} min); {best}; model: {}",
        if finished {
            "finished"
        } else {
            "stopped at the time limit"
        },
        progress.epoch,
        progress.elapsed / 60.0,
        out.join("model.safetensors").display()
    );
    Ok(())
}

/// Batches in an epoch (a last, smaller batch is dropped).
fn steps_per_epoch(cfg: &Config, data: &TrainingData) -> Result<usize> {
    let per_epoch = data.train.len() / cfg.train.batch_size;
    ensure!(
        per_epoch >= 1,
        "the training split has {} images, fewer than `train.batch_size` = {}",
        data.train.len(),
        cfg.train.batch_size
    );
    Ok(per_epoch)
}

/// The config file with the command line's overrides.
fn resolved_config(args: &TrainArgs) -> Result<Config> {
    let mut cfg = Config::load_with_data(&args.config, args.data.as_deref())?;
    if let Some(m) = args.max_minutes {
        ensure!(m > 0.0, "--max-minutes must be positive");
        cfg.train.max_minutes = m;
    }
    if !args.hold_out.is_empty() {
        cfg.data.val_sequences = args.hold_out.clone();
    }
    if let Some(init) = &args.init {
        cfg.train.init = Some(init.clone());
    }
    crate::overrides::apply(cfg, &args.sets)
}

/// What validation scores, for messages: held-out sequences or the validation split.
fn val_name(cfg: &Config) -> String {
    if cfg.data.val_sequences.is_empty() {
        format!("`{}`", cfg.data.val_split)
    } else {
        format!("held-out {}", cfg.data.val_sequences.join("+"))
    }
}

/// Restores weights and optimiser state from the checkpoint being resumed.
fn restore(r: &Resumed, out: &Path, vs: &mut nn::VarStore, opt: &mut Optim) -> Result<Progress> {
    checkpoint::load_into(vs, &r.ckpt, &out.join("last.safetensors"))?;
    let state = r
        .ckpt
        .tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(STATE_PREFIX)
                .map(|k| (k.to_string(), t.to_device(vs.device())))
        })
        .collect();
    opt.load_state(&state, r.progress.global_step as i64)?;
    Ok(r.progress.clone())
}

fn print_plan(cfg: &Config, data: &TrainingData, device: Device) {
    let weights: Vec<f32> = data
        .weights
        .iter()
        .map(|w| (w * 1000.0).round() / 1000.0)
        .collect();
    println!(
        "training {:?} width {} on {} images ({} val), {} epochs, batch {}, {:?} lr {}, device {:?}, class weights {:?}",
        cfg.model.arch,
        cfg.model.width,
        data.train.len(),
        data.val_len(),
        cfg.train.epochs,
        cfg.train.batch_size,
        cfg.train.optimizer,
        base_lr(&cfg.train),
        device,
        weights
    );
    println!("{}", data.description);
}

/// `model.safetensors`: the best validated weights (or the last ones if never validated, or
/// if `train.final_weights` says so), with batch norm re-estimated when the config asks.
fn write_final_model(
    cfg: &Config,
    out: &Path,
    device: Device,
    train_frames: &Arc<Frames>,
    progress: &Progress,
) -> Result<()> {
    let (best, mean) = (out.join("best.safetensors"), out.join(swa::FILE));
    let source = match cfg.train.final_weights {
        FinalWeights::Best if best.is_file() => best,
        FinalWeights::Swa if mean.is_file() => mean,
        _ => out.join("last.safetensors"),
    };
    let mut vs = nn::VarStore::new(device);
    let net = SegNet::new(&vs.root(), &cfg.model);
    checkpoint::load_into(&mut vs, &checkpoint::read(&source)?, &source)?;
    let t = &cfg.train;
    if t.bn_recalibrate {
        println!(
            "re-estimating batch-norm statistics over the training set (dropout {})",
            on_off(t.bn_recalibrate_dropout)
        );
        recalibrate_batchnorm(cfg, &vs, &net, train_frames, t.bn_recalibrate_dropout)?;
    }
    save_checkpoint(&out.join("model.safetensors"), cfg, &vs, None, progress)
}

/// ` [0006R0 0.4210, ...]` for a log line, when several sequences validate.
fn per_sequence(scores: &Option<BTreeMap<String, f64>>) -> String {
    let Some(scores) = scores else {
        return String::new();
    };
    let parts: Vec<String> = scores.iter().map(|(s, m)| format!("{s} {m:.4}")).collect();
    format!(" [{}]", parts.join(", "))
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

struct Trainer<'a> {
    cfg: &'a Config,
    out: &'a Path,
    vs: &'a nn::VarStore,
    net: &'a SegNet,
    opt: &'a mut Optim,
    /// The running mean of the tail's epochs (`train.swa_from`).
    average: Option<WeightAverage>,
    weights: &'a Tensor,
    data: &'a TrainingData,
    /// Forward passes under bf16 autocast (`train.precision`, CUDA only).
    autocast: bool,
    device: Device,
    per_epoch: usize,
    progress: Progress,
    /// Training seconds of the run's earlier sessions.
    elapsed_before: f64,
    session_start: Instant,
}

impl Trainer<'_> {
    /// Runs the remaining epochs; false when stopped by `train.max_minutes`.
    fn train(&mut self) -> Result<bool> {
        while self.progress.epoch < self.cfg.train.epochs {
            if !self.run_epoch()? {
                return Ok(false);
            }
            let p = &mut self.progress;
            let loss = p.sums.epoch_loss_sum / p.step_in_epoch.max(1) as f64;
            let rate = p.sums.images_per_s(self.cfg.train.batch_size);
            let wait_share = p.sums.wait_share();
            p.epoch += 1;
            p.step_in_epoch = 0;
            p.sums = EpochSums::default();
            let lr = self.learning_rate(self.progress.global_step - 1);
            self.end_epoch(lr, loss, rate, wait_share)?;
        }
        Ok(true)
    }

    /// The rest of the current epoch's batches, in its seeded order and augmentation.
    fn epoch_loader(&self) -> Loader {
        let t = &self.cfg.train;
        let epoch = self.progress.epoch;
        let order = epoch_order(self.data.train.len(), t.seed, epoch);
        Loader::new(
            self.data.train.clone(),
            order[self.progress.step_in_epoch * t.batch_size..].to_vec(),
            t.batch_size,
            self.cfg.data.clone(),
            self.cfg.model.clone(),
            Some(mix_seed(t.seed, epoch as u64)),
            t.prefetch,
            true,
        )
    }

    /// Trains on the rest of the epoch's batches, checkpointing every `train.checkpoint_every`
    /// steps; false when the time limit stopped the run (after a checkpoint).
    fn run_epoch(&mut self) -> Result<bool> {
        let t = &self.cfg.train;
        // This session's time on the epoch adds to its earlier sessions'.
        let start = Instant::now();
        let (seconds_before, wait_before) = (
            self.progress.sums.epoch_seconds,
            self.progress.sums.epoch_wait,
        );
        let mut loader = self.epoch_loader();
        let bar = progress::bar(
            Some(self.per_epoch as u64),
            format!("epoch {}/{}", self.progress.epoch + 1, t.epochs),
        );
        bar.set_position(self.progress.step_in_epoch as u64);
        while let Some(batch) = loader.next() {
            let batch = batch?;
            // The epoch's image count and rate are counted in whole batches.
            debug_assert_eq!(batch.indices.len(), t.batch_size);
            let lr = self.learning_rate(self.progress.global_step);
            let loss = self.step(&batch, lr)?;
            let p = &mut self.progress;
            p.step_in_epoch += 1;
            p.global_step += 1;
            p.sums.epoch_loss_sum += loss;
            p.sums.epoch_seconds = seconds_before + start.elapsed().as_secs_f64();
            p.sums.epoch_wait = wait_before + loader.wait_seconds();
            p.sums.epoch_timed_steps += 1;
            bar.set_message(format!(
                "loss {:.3} {:.2} img/s",
                p.sums.epoch_loss_sum / p.step_in_epoch as f64,
                p.sums.images_per_s(t.batch_size)
            ));
            bar.inc(1);
            if p.global_step.is_multiple_of(t.checkpoint_every) {
                self.save_last()?;
            }
            if t.max_minutes > 0.0 && self.elapsed() > t.max_minutes * 60.0 {
                bar.abandon();
                self.save_last()?;
                return Ok(false);
            }
        }
        bar.finish_and_clear();
        Ok(true)
    }

    /// How far along the schedule the run is (see [`schedule_progress`]).
    fn schedule_progress(&self) -> f64 {
        let total = self.per_epoch * self.cfg.train.epochs;
        schedule_progress(
            self.cfg,
            self.progress.global_step,
            total,
            self.elapsed() / 60.0,
        )
    }

    /// The learning rate of step `step` (see [`learning_rate`]).
    fn learning_rate(&self, step: usize) -> f64 {
        let total = self.per_epoch * self.cfg.train.epochs;
        learning_rate(self.cfg, step, total, self.elapsed() / 60.0)
    }

    /// One optimisation step; returns the batch's loss.
    fn step(&mut self, batch: &Batch, lr: f64) -> Result<f64> {
        // Dropout masks seeded by the step, so a resumed run draws the same ones.
        let seed = mix_seed(
            self.cfg.train.seed ^ 0x5eed,
            self.progress.global_step as u64,
        );
        tch::manual_seed(seed as i64);
        let images = batch.images.to_device(self.device);
        let labels = batch.labels.to_device(self.device);
        // The loss in fp32 whatever the forward pass ran in.
        let logits = precision::autocast(self.autocast, || {
            self.net.forward(&images, Mode::TRAIN).to_kind(Kind::Float)
        });
        let loss = segmentation_loss(
            &logits,
            &labels,
            self.weights,
            self.cfg.model.void(),
            self.cfg.train.label_smoothing,
        );
        self.opt.zero_grad();
        loss.backward();
        let value = loss.double_value(&[]);
        ensure!(
            value.is_finite(),
            "loss became {value} at epoch {} step {}: training stopped; the last good checkpoint {} is intact (lower `train.lr`?)",
            self.progress.epoch + 1,
            self.progress.step_in_epoch,
            self.out.join("last.safetensors").display()
        );
        self.opt.step(lr);
        Ok(value)
    }

    /// Writes the resumable checkpoint, unless the weights have gone non-finite: then training
    /// stops and the previous checkpoint stays as it was.
    fn save_last(&mut self) -> Result<()> {
        self.progress.elapsed = self.elapsed();
        let last = self.out.join("last.safetensors");
        let finite = tch::no_grad(|| {
            self.vs
                .trainable_variables()
                .iter()
                .all(|t| t.isfinite().all().int64_value(&[]) == 1)
        });
        ensure!(
            finite,
            "weights became NaN or infinite by step {}: training stopped; the last good checkpoint {} is intact (lower `train.lr`?)",
            self.progress.global_step,
            last.display()
        );
        save_checkpoint(&last, self.cfg, self.vs, Some(self.opt), &self.progress)
    }

    /// Training seconds of the whole run so far.
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.session_start.elapsed().as_secs_f64()
    }

    /// Validates when due (saving the best weights), logs the epoch and checkpoints.
    fn end_epoch(&mut self, lr: f64, loss: f64, rate: f64, wait: f64) -> Result<()> {
        let t = &self.cfg.train;
        let epoch = self.progress.epoch;
        let mut entry = EpochLog {
            epoch,
            step: self.progress.global_step,
            lr,
            train_loss: loss,
            train_images_per_s: rate,
            data_wait_share: wait,
            val_global_accuracy: None,
            val_class_accuracy: None,
            val_miou: None,
            val_mc_miou: None,
            val_sequence_miou: None,
            elapsed_s: 0.0,
        };
        let due = epoch.is_multiple_of(t.val_every) || epoch == t.epochs;
        if due && self.data.val_len() > 0 {
            self.validate(&mut entry)?;
        }
        // The weight average before the checkpoint, like the log line: a run killed in between
        // redoes the epoch, which the average then skips.
        let averaged = self.average_epoch(epoch)?;
        // The log line before the checkpoint: a run killed in between redoes the epoch and
        // trims the line, rather than resuming after an epoch the log lacks.
        entry.elapsed_s = self.elapsed();
        append_log(&self.out.join("log.jsonl"), &entry)?;
        self.save_last()?;
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        let val = if self.data.val_len() == 0 {
            "no validation".to_string()
        } else {
            format!(
                "{} global {} class {} mIoU {}{}{}",
                val_name(self.cfg),
                fmt(entry.val_global_accuracy),
                fmt(entry.val_class_accuracy),
                fmt(entry.val_miou),
                entry
                    .val_mc_miou
                    .map_or(String::new(), |m| format!(" (MC-{} {m:.4})", t.val_samples)),
                per_sequence(&entry.val_sequence_miou),
            )
        };
        println!(
            "epoch {epoch}/{} loss {loss:.4} lr {lr:.2e} {rate:.2} img/s data-wait {:.1}% | {val}{averaged} | {:.1} min",
            t.epochs,
            100.0 * wait,
            entry.elapsed_s / 60.0
        );
        Ok(())
    }

    /// Adds the weights to the running mean once the schedule has reached `train.swa_from`;
    /// returns what to add to the epoch's line.
    fn average_epoch(&mut self, epoch: usize) -> Result<String> {
        let progress = self.schedule_progress();
        let (Some(from), Some(average)) = (self.cfg.train.swa_from, self.average.as_mut()) else {
            return Ok(String::new());
        };
        if progress < from {
            return Ok(String::new());
        }
        average.add(self.cfg, self.vs, epoch)?;
        Ok(format!(" | swa {} epochs", average.held().epochs))
    }

    /// Scores the validation frames (held-out sequences or the validation split) into `entry`;
    /// a new best mIoU over all of them saves `best.safetensors`.
    fn validate(&mut self, entry: &mut EpochLog) -> Result<()> {
        let scored = trainset::validate(self.net, self.data, self.cfg, self.device)?;
        if scored.per_sequence.len() > 1 {
            entry.val_sequence_miou = Some(scored.per_sequence);
        }
        let v = scored.pooled;
        let miou = v.wa.mean_iou();
        entry.val_global_accuracy = Some(v.wa.global_accuracy());
        entry.val_class_accuracy = Some(v.wa.class_average_accuracy());
        entry.val_miou = Some(miou);
        entry.val_mc_miou = v.mc.as_ref().map(|c| c.mean_iou());
        if miou > self.progress.best_miou {
            self.progress.best_miou = miou;
            self.progress.elapsed = self.elapsed();
            let best = self.out.join("best.safetensors");
            save_checkpoint(&best, self.cfg, self.vs, None, &self.progress)?;
        }
        Ok(())
    }
}

/// Re-estimates batch-norm running statistics as exact averages over the training set, with
/// dropout off (as the original authors did before testing) or on.
///
/// tch's batch norm updates its running statistics as an exponential average with momentum
/// 0.1; from the value before and after each batch we recover the batch's own statistics and
/// keep their cumulative mean instead.
fn recalibrate_batchnorm(
    cfg: &Config,
    vs: &nn::VarStore,
    net: &SegNet,
    frames: &Arc<Frames>,
    dropout: bool,
) -> Result<()> {
    let momentum = 0.1;
    let stats: Vec<Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| k.ends_with("running_mean") || k.ends_with("running_var"))
        .map(|(_, t)| t)
        .collect();
    let mut avg: Vec<Tensor> = stats.iter().map(|t| t.zeros_like()).collect();
    let order: Vec<usize> = (0..frames.len()).collect();
    let mut loader = Loader::new(
        frames.clone(),
        order,
        cfg.train.batch_size,
        cfg.data.clone(),
        cfg.model.clone(),
        None,
        cfg.train.prefetch,
        false,
    );
    let mut k = 0.0;
    // Seeded: the dropout masks (when on) and so the statistics are reproducible.
    tch::manual_seed(cfg.train.seed as i64);
    tch::no_grad(|| -> Result<()> {
        while let Some(batch) = loader.next() {
            let batch = batch?;
            let before: Vec<Tensor> = stats.iter().map(|t| t.copy()).collect();
            let images = batch.images.to_device(vs.device());
            let _ = net.forward(
                &images,
                Mode {
                    dropout,
                    bn_train: true,
                },
            );
            k += 1.0;
            for ((s, b), a) in stats.iter().zip(&before).zip(avg.iter_mut()) {
                let batch_stat = (s - b * (1.0 - momentum)) / momentum;
                let _ = a.g_add_(&((batch_stat - &*a) / k));
            }
        }
        Ok(())
    })?;
    tch::no_grad(|| {
        for (mut s, a) in stats.into_iter().zip(avg) {
            s.copy_(&a.to_kind(Kind::Float));
        }
    });
    Ok(())
}

/// `segnet-bayes recalibrate`: re-estimates a trained model's batch-norm statistics over the
/// training split of a config, and writes the result as a new model.
pub(crate) fn recalibrate(args: &RecalibrateArgs) -> Result<()> {
    let mut cfg = Config::load_with_data(&args.config, args.data.as_deref())?;
    cfg.train.bn_recalibrate = true;
    cfg.train.bn_recalibrate_dropout = args.dropout;
    let device = args.device.init()?;
    let (vs, net, ckpt) = checkpoint::load_model(&args.model, device)?;
    let diffs = checkpoint::config_differences(&ckpt.config, &cfg.model);
    ensure!(
        diffs.is_empty(),
        "--config describes another model than {} ({})",
        args.model.display(),
        diffs.join(", ")
    );
    cfg.model = ckpt.config.clone();
    let pairs = trainset::training_frames(&cfg)?;
    recalibrate_batchnorm(&cfg, &vs, &net, &pairs, args.dropout)?;
    // A recalibration killed while writing left its temporary file: gone with this write.
    atomic::remove_leftovers_of(&args.out);
    checkpoint::save(&args.out, &cfg.model, &vs, &[], &ckpt.meta)?;
    println!(
        "re-estimated batch norm over {} images (dropout {}) -> {}",
        pairs.len(),
        on_off(args.dropout),
        args.out.display()
    );
    Ok(())
}

/// The training loss: cross-entropy weighted per class, void pixels ignored, with label smoothing
/// `smoothing` (e): each pixel's target is 1 - e on its class plus e spread evenly over all
/// classes, and the pixel weighs its class's weight as without smoothing.
///
/// Not libtorch's own `label_smoothing`, which with class weights weighs each class's share of
/// the spread by that class's weight: with CamVid's median-frequency weights (0.16-6.2) a road
/// pixel's target would then put more mass on pole, sign, pedestrian and bicyclist together
/// than on road.
fn segmentation_loss(
    logits: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
    void: i64,
    smoothing: f64,
) -> Tensor {
    let ce =
        logits.cross_entropy_loss::<&Tensor>(labels, Some(weights), Reduction::Mean, void, 0.0);
    if smoothing == 0.0 {
        return ce;
    }
    let valid = labels.ne(void);
    let class = labels.where_scalarother(&valid, 0);
    let pixel_weight = weights
        .index_select(0, &class.flatten(0, -1))
        .view_as(labels)
        * valid.to_kind(Kind::Float);
    // Cross-entropy against the uniform distribution: minus the mean log-probability.
    let spread = -logits
        .log_softmax(1, Kind::Float)
        .mean_dim(1, false, Kind::Float);
    let spread = (spread * &pixel_weight).sum(Kind::Float) / pixel_weight.sum(Kind::Float);
    ce * (1.0 - smoothing) + spread * smoothing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 1, 0));
        assert_ne!(a, epoch_order(50, 1, 1));
    }

    #[test]
    fn progress_of_older_checkpoints_reads_with_untimed_steps() {
        // Written before the epoch's time and the data's fingerprint were kept.
        let old = r#"{"epoch":3,"step_in_epoch":2,"global_step":11,"best_miou":0.5,"elapsed":1.0,"epoch_loss_sum":2.5}"#;
        let p: Progress = serde_json::from_str(old).unwrap();
        assert_eq!((p.step_in_epoch, p.sums.epoch_loss_sum), (2, 2.5));
        assert_eq!((p.sums.epoch_timed_steps, p.data.as_ref()), (0, None));
        let back: Progress = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn schedules_start_at_lr_and_decay() {
        let mut cfg = Config::default();
        cfg.train.lr = 0.1;
        cfg.train.schedule = Schedule::Poly;
        assert!((learning_rate(&cfg, 0, 100, 0.0) - 0.1).abs() < 1e-12);
        assert!(learning_rate(&cfg, 99, 100, 0.0) < 0.01);
        cfg.train.schedule = Schedule::Cosine;
        assert!((learning_rate(&cfg, 100, 100, 0.0) - 0.001).abs() < 1e-9);
        cfg.train.max_minutes = 10.0;
        assert!(
            (learning_rate(&cfg, 0, 100, 10.0) - 0.001).abs() < 1e-9,
            "time budget spent"
        );
        cfg.train.max_minutes = 0.0;
        cfg.train.warmup_steps = 10;
        assert!((learning_rate(&cfg, 0, 100, 0.0) - 0.01).abs() < 1e-3);
    }

    #[test]
    fn label_smoothing_spreads_evenly_and_keeps_each_pixels_class_weight() {
        // One image, 3 classes, 1x3 pixels labelled 0, 1 and void (3); class weights 2, 1, 1.
        let logits = [[0.5f32, -1.0, 2.0], [1.5, 0.0, -0.5], [3.0, 3.0, -3.0]];
        let t = Tensor::from_slice(&logits.concat())
            .view([3, 3])
            .transpose(0, 1)
            .view([1, 3, 1, 3]);
        let labels = Tensor::from_slice(&[0i64, 1, 3]).view([1, 1, 3]);
        let weights = Tensor::from_slice(&[2.0f32, 1.0, 1.0]);
        let log_p = |x: &[f32; 3], c: usize| {
            let z: f64 = x.iter().map(|&v| f64::from(v).exp()).sum();
            f64::from(x[c]) - z.ln()
        };
        let e = 0.1;
        let pixel = |x: &[f32; 3], y: usize| {
            let uniform = -(0..3).map(|c| log_p(x, c)).sum::<f64>() / 3.0;
            (1.0 - e) * -log_p(x, y) + e * uniform
        };
        let expected = (2.0 * pixel(&logits[0], 0) + pixel(&logits[1], 1)) / 3.0;
        let got = segmentation_loss(&t, &labels, &weights, 3, e).double_value(&[]);
        assert!((got - expected).abs() < 1e-5, "{got} against {expected}");
        let plain = segmentation_loss(&t, &labels, &weights, 3, 0.0).double_value(&[]);
        let expected = (2.0 * -log_p(&logits[0], 0) - log_p(&logits[1], 1)) / 3.0;
        assert!(
            (plain - expected).abs() < 1e-5,
            "{plain} against {expected}"
        );
    }

    #[test]
    fn swa_lr_holds_the_rate_from_swa_from_on() {
        let mut cfg = Config::default();
        cfg.train.lr = 0.1;
        cfg.train.schedule = Schedule::Poly;
        cfg.train.swa_from = Some(0.5);
        let poly = learning_rate(&cfg, 60, 100, 0.0);
        assert!(
            (poly - 0.1 * 0.4f64.powf(0.9)).abs() < 1e-12,
            "no swa_lr: {poly}"
        );
        cfg.train.swa_lr = Some(0.02);
        let before = learning_rate(&cfg, 49, 100, 0.0);
        assert!(
            (before - 0.1 * 0.51f64.powf(0.9)).abs() < 1e-12,
            "before: {before}"
        );
        for step in [50, 60, 99, 100] {
            assert!((learning_rate(&cfg, step, 100, 0.0) - 0.02).abs() < 1e-12);
        }
        // Scaled with the batch as `lr` is.
        cfg.train.lr_scaling = LrScaling::Linear;
        cfg.train.batch_size = 2 * cfg.train.lr_base_batch;
        assert!((learning_rate(&cfg, 60, 100, 0.0) - 0.04).abs() < 1e-12);
    }
}
