//! The four stages of a run, each on its own thread, joined by bounded channels so that none
//! runs far ahead of the others:
//!
//! ```text
//! decode --frames--> network (this thread) --batches--> render (rayon) --batches--> encode
//! ```
//!
//! The network is meant to be the bottleneck: decoding, rendering (in parallel over a batch)
//! and encoding overlap with it. The network stage times how long it waits for frames and for
//! the stages after it, so a run reports how much of its time the network sat idle.
//! Frames done by an earlier run go through the same stages without the network: they are
//! redrawn from their records.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use image::RgbImage;
use indicatif::ProgressBar;
use opencv::core::{Mat, Vec3b};
use opencv::videoio::{VideoWriter, VideoWriterTrait};
use rayon::prelude::*;
use segnet_bayes::mc::Measure;
use segnet_bayes::render;
use tch::Kind;

use crate::frame::{self, Stats, Style};
use crate::sampler::{Predicted, Sampler};
use crate::source::{self, End, Frame, Selection, Source};
use crate::state::Paths;
use crate::stop;
use crate::table::{self, Columns};
use crate::temporal::Before;

/// What the stages share.
pub(crate) struct Job<'a> {
    pub(crate) source: &'a Source,
    pub(crate) selection: Selection,
    pub(crate) batch: usize,
    pub(crate) style: &'a Style,
    pub(crate) cols: &'a Columns,
    pub(crate) paths: &'a Paths,
    pub(crate) threshold: f32,
    pub(crate) classes: usize,
    /// Also write the overlay PNG of each frame (--frames).
    pub(crate) frame_pngs: bool,
    /// Also write the raw maps of each frame (--maps).
    pub(crate) maps: bool,
}

/// A frame on its way to the renderer.
enum Work {
    /// Predicted by this run.
    New(Frame, Predicted),
    /// Done by an earlier run: drawn from its record.
    Done(Frame),
}

/// A drawn frame on its way to the encoder.
struct Drawn {
    bgr: Vec<u8>,
    /// The CSV row of a frame computed by this run.
    row: Option<String>,
}

/// How a run went.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) end: End,
    /// Frames the decoder delivered: what the outputs must hold when the run finishes.
    pub(crate) decoded: usize,
    /// Frames in the video.
    pub(crate) written: usize,
    /// Frames this run computed.
    pub(crate) computed: usize,
    /// Network passes over the computed frames.
    pub(crate) samples: usize,
    /// Computed frames at which the temporal state started afresh.
    pub(crate) resets: usize,
    /// Time in the network, and waiting before and after it.
    busy: Duration,
    wait_frames: Duration,
    wait_encoder: Duration,
}

impl Report {
    /// Share of the network's time spent idle (waiting for frames or for the encoder).
    pub(crate) fn idle_share(&self) -> (f64, f64, f64) {
        let total = (self.busy + self.wait_frames + self.wait_encoder)
            .as_secs_f64()
            .max(1e-9);
        let (a, b) = (
            self.wait_frames.as_secs_f64() / total,
            self.wait_encoder.as_secs_f64() / total,
        );
        (a + b, a, b)
    }
}

#[derive(Default)]
struct Timing {
    /// Ctrl-C stopped the network with frames still to come.
    interrupted: bool,
    decoded: usize,
    computed: usize,
    samples: usize,
    resets: usize,
    busy: Duration,
    wait_frames: Duration,
    wait_encoder: Duration,
}

/// Runs the stages until the input ends, Ctrl-C, or a failure. The video is closed properly in
/// every case; the caller decides what the ending means.
pub(crate) fn run(
    ctx: &Job,
    sampler: &mut Sampler,
    done: &BTreeMap<usize, String>,
    writer: VideoWriter,
    csv: table::Writer,
    progress: &ProgressBar,
) -> Result<Report> {
    let depth = ctx.batch.max(1);
    let (frame_tx, frame_rx) = sync_channel::<Frame>(2 * depth);
    let (work_tx, work_rx) = sync_channel::<Vec<Work>>(1);
    let (drawn_tx, drawn_rx) = sync_channel::<Vec<Drawn>>(1);
    thread::scope(|s| {
        let decoder = thread::Builder::new()
            .name("decode".into())
            .spawn_scoped(s, || {
                source::decode(ctx.source, ctx.selection, ctx.batch, frame_tx)
            })
            .context("cannot start the decode thread")?;
        let renderer = thread::Builder::new()
            .name("render".into())
            .spawn_scoped(s, || render_stage(ctx, work_rx, drawn_tx))
            .context("cannot start the render thread")?;
        let encoder = thread::Builder::new()
            .name("encode".into())
            .spawn_scoped(s, || encode_stage(ctx, writer, csv, drawn_rx, progress))
            .context("cannot start the encode thread")?;
        let network = network_stage(sampler, frame_rx, work_tx, done, depth);
        let end = joined("decode", decoder.join());
        let rendered = joined("render", renderer.join());
        let written = joined("encode", encoder.join());
        // Report the first failure downstream-first: a failed encoder makes the network stop.
        let (written, end, timing) = (written?, end?, network?);
        rendered?;
        Ok(Report {
            end: if timing.interrupted {
                End::Stopped
            } else {
                end
            },
            decoded: timing.decoded,
            written,
            computed: timing.computed,
            samples: timing.samples,
            resets: timing.resets,
            busy: timing.busy,
            wait_frames: timing.wait_frames,
            wait_encoder: timing.wait_encoder,
        })
    })
}

fn joined<T>(name: &str, r: thread::Result<Result<T>>) -> Result<T> {
    r.map_err(|_| anyhow!("internal error: the {name} thread panicked"))?
}

/// The network: predicts frames as they arrive (`sampler.batch()` at a time) and hands them on
/// in batches.
fn network_stage(
    sampler: &mut Sampler,
    rx: Receiver<Frame>,
    tx: SyncSender<Vec<Work>>,
    done: &BTreeMap<usize, String>,
    batch: usize,
) -> Result<Timing> {
    let mut t = Timing::default();
    let mut works: Vec<Work> = Vec::with_capacity(batch);
    let mut pending: Vec<Frame> = vec![];
    // What came before the next frame (whether the temporal state carries over).
    let mut before = Before::Start;
    let send = |works: &mut Vec<Work>, t: &mut Timing| -> bool {
        let has_new = works.iter().any(|w| matches!(w, Work::New(..)));
        let start = Instant::now();
        let ok = tx.send(std::mem::take(works)).is_ok();
        if has_new {
            t.wait_encoder += start.elapsed();
        }
        ok
    };
    loop {
        // Ctrl-C: finish the frames in hand, take no more.
        if stop::requested() {
            t.interrupted = !matches!(rx.try_recv(), Err(TryRecvError::Disconnected));
            break;
        }
        let start = Instant::now();
        let Ok(frame) = rx.recv() else { break };
        t.decoded += 1;
        if done.contains_key(&frame.index) {
            predict(sampler, &mut pending, &mut before, &mut works, &mut t)?;
            before = Before::Done;
            works.push(Work::Done(frame));
        } else {
            t.wait_frames += start.elapsed();
            pending.push(frame);
            if pending.len() >= sampler.batch() {
                predict(sampler, &mut pending, &mut before, &mut works, &mut t)?;
            }
        }
        if works.len() >= batch && !send(&mut works, &mut t) {
            // The renderer failed; its error is reported from its thread.
            return Ok(t);
        }
    }
    predict(sampler, &mut pending, &mut before, &mut works, &mut t)?;
    if !works.is_empty() {
        send(&mut works, &mut t);
    }
    Ok(t)
}

/// Predicts the pending frames, in order, into `works`.
fn predict(
    sampler: &mut Sampler,
    pending: &mut Vec<Frame>,
    before: &mut Before,
    works: &mut Vec<Work>,
    t: &mut Timing,
) -> Result<()> {
    let Some(last) = pending.last().map(|f| f.index) else {
        return Ok(());
    };
    let start = Instant::now();
    let preds = sampler
        .predict(pending, *before)
        .with_context(|| format!("predicting frames {} to {last}", pending[0].index))?;
    t.busy += start.elapsed();
    for (frame, pred) in pending.drain(..).zip(preds) {
        t.computed += 1;
        t.samples += pred.how.samples;
        t.resets += usize::from(pred.how.reset.is_some());
        works.push(Work::New(frame, pred));
    }
    *before = Before::Computed(last);
    Ok(())
}

/// Draws each batch in parallel; writes the per-frame PNGs.
fn render_stage(ctx: &Job, rx: Receiver<Vec<Work>>, tx: SyncSender<Vec<Drawn>>) -> Result<()> {
    for works in rx {
        let drawn = works
            .into_par_iter()
            .map(|w| match w {
                Work::New(frame, pred) => draw_new(ctx, frame, pred),
                Work::Done(frame) => draw_done(ctx, frame),
            })
            .collect::<Result<Vec<_>>>()?;
        if tx.send(drawn).is_err() {
            break;
        }
    }
    Ok(())
}

fn draw_new(ctx: &Job, frame: Frame, predicted: Predicted) -> Result<Drawn> {
    let Predicted { pred, how } = predicted;
    let style = ctx.style;
    let classes = pred.class_bytes();
    let values = pred.measure_values(style.measure);
    let means = Measure::ALL.map(|m| pred.measure(m).mean(Kind::Float).double_value(&[]));
    let stats = Stats::new(means, &classes, ctx.classes, &values, ctx.threshold);
    let overlay = style.overlay(&frame.image, &classes);
    let heat = style.heat_panel(&values);

    let stem = ctx.source.stem(frame.index);
    let (classes_png, heat_png) = ctx.paths.record(&stem, style.measure);
    let g = &style.geometry;
    render::save_png_atomic(&render::class_index_image(&classes, g.w, g.h), &classes_png)?;
    render::save_png_atomic(&heat, &heat_png)?;
    if ctx.frame_pngs {
        let path = ctx.paths.records.join(format!("{stem}_overlay.png"));
        render::save_png_atomic(&overlay, &path)?;
    }
    if ctx.maps {
        crate::maps::write(&ctx.paths.maps.join(format!("{stem}.npz")), &pred)?;
    }
    let composite = style.compose(&frame.image, &overlay, &heat);
    Ok(Drawn {
        bgr: frame::to_bgr(&composite),
        row: Some(ctx.cols.row(frame.index, frame.time, &stats, &how)),
    })
}

fn draw_done(ctx: &Job, frame: Frame) -> Result<Drawn> {
    let style = ctx.style;
    let stem = ctx.source.stem(frame.index);
    let (classes_png, heat_png) = ctx.paths.record(&stem, style.measure);
    let classes = load(&classes_png)?.to_luma8().into_raw();
    let heat: RgbImage = load(&heat_png)?.to_rgb8();
    let overlay = style.overlay(&frame.image, &classes);
    let composite = style.compose(&frame.image, &overlay, &heat);
    Ok(Drawn {
        bgr: frame::to_bgr(&composite),
        row: None,
    })
}

fn load(path: &Path) -> Result<image::DynamicImage> {
    image::open(path).with_context(|| {
        format!(
            "cannot read the record {} of an earlier run (pass --restart to start over)",
            path.display()
        )
    })
}

/// Writes the frames into the video and their rows into the CSV, batch by batch; closes the
/// video whatever happens. Returns the number of frames written.
fn encode_stage(
    ctx: &Job,
    mut writer: VideoWriter,
    mut csv: table::Writer,
    rx: Receiver<Vec<Drawn>>,
    progress: &ProgressBar,
) -> Result<usize> {
    let g = &ctx.style.geometry;
    let mut written = 0;
    let encode = || -> Result<()> {
        for batch in rx {
            let mut rows = String::new();
            for d in &batch {
                let mat = Mat::new_rows_cols_with_bytes::<Vec3b>(
                    g.height as i32,
                    g.width as i32,
                    &d.bgr,
                )?;
                writer.write(&mat).context("encoding a frame")?;
                progress.inc(1);
                // Frames arrive a batch at a time: the average since the start is steadier
                // than the bar's own moving estimate.
                let rate = progress.position() as f64 / progress.elapsed().as_secs_f64().max(1e-3);
                progress.set_message(format!("{rate:.1} frames/s"));
                if let Some(row) = &d.row {
                    rows.push_str(row);
                }
            }
            // The rows go to disk after their frames' records: a row means a finished frame.
            csv.append(&rows)?;
            written += batch.len();
        }
        Ok(())
    };
    let result = encode();
    let closed = writer.release().context("closing the video");
    result.and(closed).map(|()| written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use segnet_bayes::config::{Arch, ModelConfig};
    use segnet_bayes::infer::{Predictor, PredictorOptions};
    use segnet_bayes::mc::McOptions;
    use segnet_bayes::model::{checkpoint, Precision, SegNet};

    /// A random SegNet-Basic at 1/8 width, input 32x48, two seeded samples per frame.
    fn predictor(dir: &Path) -> Predictor {
        let cfg = ModelConfig {
            arch: Arch::Basic,
            width: 0.125,
            input_size: Some([32, 48]),
            ..Default::default()
        };
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _net = SegNet::new(&vs.root(), &cfg);
        let path = dir.join("m.safetensors");
        checkpoint::save(&path, &cfg, &vs, &[], &BTreeMap::new()).unwrap();
        Predictor::load(&PredictorOptions {
            model: Some(path),
            device: tch::Device::Cpu,
            mc: McOptions {
                samples: 2,
                chunk: 3,
                seed: Some(1),
                adaptive: None,
                flip: false,
                flip_phase: false,
            },
            dropout: true,
            temperature: None,
            precision: Precision::Fp32,
            test_dropout: Default::default(),
        })
        .unwrap()
    }

    /// The works the network stage hands on for frames 0..8, of which `done` were done before.
    fn network_works(sampler: &mut Sampler, done: &[usize]) -> Vec<Work> {
        let (frame_tx, frame_rx) = sync_channel(16);
        for index in 0..8 {
            let image = RgbImage::from_fn(40, 30, |x, y| {
                image::Rgb([(x * 6) as u8, (y * 8) as u8, (index * 30) as u8])
            });
            let time = index as f64;
            frame_tx.send(Frame { index, time, image }).unwrap();
        }
        drop(frame_tx);
        let (work_tx, work_rx) = sync_channel(16);
        let done = done.iter().map(|&i| (i, String::new())).collect();
        network_stage(sampler, frame_rx, work_tx, &done, 2).unwrap();
        work_rx.into_iter().flatten().collect()
    }

    #[test]
    fn frames_batched_through_the_network_arrive_in_order_with_their_own_predictions() {
        let dir = tempfile::tempdir().unwrap();
        let p = predictor(dir.path());
        let mut one = Sampler::PerFrame {
            predictor: &p,
            batch: 1,
        };
        let mut three = Sampler::PerFrame {
            predictor: &p,
            batch: 3,
        };
        let (alone, batched) = (
            network_works(&mut one, &[3]),
            network_works(&mut three, &[3]),
        );
        let describe = |works: &[Work]| -> Vec<(usize, bool)> {
            works
                .iter()
                .map(|w| match w {
                    Work::New(f, _) => (f.index, true),
                    Work::Done(f) => (f.index, false),
                })
                .collect()
        };
        let want: Vec<(usize, bool)> = (0..8).map(|i| (i, i != 3)).collect();
        assert_eq!(describe(&alone), want);
        assert_eq!(describe(&batched), want);
        for (a, b) in alone.iter().zip(&batched) {
            if let (Work::New(_, a), Work::New(_, b)) = (a, b) {
                let (x, y) = (
                    a.pred.measure(Measure::Variance),
                    b.pred.measure(Measure::Variance),
                );
                assert!(x.allclose(&y, 1e-4, 1e-7, false));
                assert_eq!(a.how, b.how);
            }
        }
    }

    #[test]
    fn idle_share_splits_waits() {
        let r = Report {
            end: End::Finished,
            decoded: 0,
            written: 0,
            computed: 0,
            samples: 0,
            resets: 0,
            busy: Duration::from_secs(6),
            wait_frames: Duration::from_secs(3),
            wait_encoder: Duration::from_secs(1),
        };
        let (all, frames, enc) = r.idle_share();
        assert!(
            (all - 0.4).abs() < 1e-9 && (frames - 0.3).abs() < 1e-9 && (enc - 0.1).abs() < 1e-9
        );
    }
}
