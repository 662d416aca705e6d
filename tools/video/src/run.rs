//! A whole invocation: check every input and output folder before loading the model, then run
//! the pipeline on each input and turn its ending into outputs and messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use indicatif::ProgressBar;
use opencv::core::Size;
use opencv::videoio::{self, VideoCapture, VideoCaptureTrait, VideoCaptureTraitConst};
use opencv::videoio::{VideoWriter, VideoWriterTraitConst};
use segnet_bayes::atomic::write_atomic;
use segnet_bayes::infer::{self, Predictor};
use segnet_bayes::items::{self, Expand, Item};
use segnet_bayes::ledger::{Entry, Ledger};
use segnet_bayes::{progress, render};

use crate::cli::{Cli, Codec};
use crate::frame::Style;
use crate::lock;
use crate::pipeline::{self, Report};
use crate::sampler::Sampler;
use crate::source::{self, End, Selection, Source};
use crate::state::{self, Paths, Settings, Start, Status, Summary};
use crate::stop;
use crate::table::{self, Columns};

/// Ctrl-C ended the run; the outputs are partial and resume on the next run.
#[derive(Debug)]
pub(crate) struct Interrupted(String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

pub(crate) fn run(cli: &Cli) -> Result<()> {
    validate(cli)?;
    let shard = cli.work.shard()?;
    let items = cli.work.items(&cli.inputs, &cli.out, Expand::Folder)?;
    let rel = output_dirs(&items)?;
    let owns = |k: usize| shard.as_ref().is_none_or(|a| a.shard.owns(k));
    let mine: Vec<(&Item, PathBuf)> = (0..items.len())
        .filter(|&k| owns(k))
        .map(|k| (&items[k], cli.out.join(&rel[k])))
        .collect();
    let sources = probe(cli, &mine)?;
    // One run per output folder (never the shared parent, which shards write into together);
    // held until every input is done, freed by the OS if the process dies.
    let _locks = mine
        .iter()
        .map(|(_, d)| lock::acquire(d))
        .collect::<Result<Vec<_>>>()?;
    let device = cli.sampling.device.init()?;
    let predictor = Predictor::load(&cli.sampling.options(device, !cli.no_dropout)?)?;
    let entries = items
        .iter()
        .zip(&rel)
        .map(|(it, d)| {
            let at = |f: &str| Path::new(d).join(f).display().to_string();
            Entry::new(it, at("summary.json"), Some(at("frames.csv")))
        })
        .collect();
    let settings = run_settings(&predictor, cli);
    let mut ledger = Ledger::open(&cli.out, shard, "segnet-video", settings, entries)?;
    stop::install();
    let mut failed = 0;
    for (source, (item, dir)) in sources.iter().zip(&mine) {
        if stop::requested() {
            break;
        }
        let start = Instant::now();
        let result = process(&predictor, cli, source, dir);
        ledger.record(&item.name, &result, start.elapsed().as_secs_f64());
        match result {
            Ok(()) => {}
            Err(e) if e.is::<Interrupted>() => return Err(e),
            Err(e) if sources.len() == 1 => {
                ledger.finish()?;
                return Err(e);
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "error: {}: {}",
                    source.path.display(),
                    format!("{e:#}").replace('\n', " ")
                );
            }
        }
    }
    ledger.finish()?;
    if failed > 0 {
        bail!("{failed} of {} inputs failed (see above)", sources.len());
    }
    Ok(())
}

/// What every item's results depend on, for a sharded run's manifest: tasks that disagree
/// about any of it are not one run.
fn run_settings(predictor: &Predictor, cli: &Cli) -> serde_json::Value {
    serde_json::json!({
        "model": predictor.path,
        "samples": predictor.opts.samples,
        "seed": predictor.opts.seed,
        "dropout": predictor.dropout,
        "adaptive": predictor.opts.adaptive.filter(|_| predictor.dropout),
        "flip": predictor.opts.flip,
        "temporal": (!cli.no_temporal).then(|| cli.temporal.options().ok()).flatten(),
        "measure": cli.measure,
        "threshold": cli.threshold,
        "every": cli.every,
        "max_frames": cli.max_frames,
        "codec": cli.codec.name(),
        "layout": format!("{:?}", cli.layout),
        "alpha": cli.alpha,
        "heat_overlay": cli.heat_overlay,
        "frames": cli.frames,
    })
}

fn validate(cli: &Cli) -> Result<()> {
    ensure!(cli.every >= 1, "--every must be at least 1");
    ensure!(cli.batch >= 1, "--batch must be at least 1");
    ensure!(
        (0.0..=1.0).contains(&cli.alpha),
        "--alpha must be in [0, 1], got {}",
        cli.alpha
    );
    if let Some(t) = cli.threshold {
        ensure!(t.is_finite(), "--threshold must be a number, got {t}");
    }
    cli.temporal.options()?;
    Ok(())
}

/// The output folder of each item, relative to `--out`: `--out` itself when the run has one
/// item, else a subfolder named after the item (see `segnet_bayes::items`).
fn output_dirs(items: &[Item]) -> Result<Vec<String>> {
    if items.len() == 1 {
        return Ok(vec![String::new()]);
    }
    items::check_outputs(items, |name| vec![format!("{name}/summary.json")])?;
    Ok(items.iter().map(|it| it.name.clone()).collect())
}

/// Opens this task's inputs and readies their output folders, before the model loads.
fn probe(cli: &Cli, mine: &[(&Item, PathBuf)]) -> Result<Vec<Source>> {
    let sources = mine
        .iter()
        .map(|(item, _)| source::probe(&item.path, cli.fps))
        .collect::<Result<Vec<_>>>()?;
    for (source, (_, d)) in sources.iter().zip(mine) {
        if overwrites(source, d) {
            bail!(
                "--out {} would overwrite the input {}; choose another output folder",
                d.display(),
                source.path.display()
            );
        }
        infer::prepare_out_dir(d)?;
    }
    Ok(sources)
}

/// Whether writing into `dir` could replace or remove the input: a frame folder that is the
/// output folder (our PNGs would become frames) or one of its subfolders, or a video named like
/// our own.
fn overwrites(source: &Source, dir: &Path) -> bool {
    let input = absolute(&source.path);
    if source.is_video() {
        let ours = source
            .path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("overlay."));
        let parent = source.path.parent().map(absolute);
        ours && parent.as_deref() == Some(absolute(dir).as_str())
    } else {
        [
            dir.to_path_buf(),
            dir.join("frames"),
            dir.join(".segnet-video"),
        ]
        .iter()
        .any(|d| absolute(d) == input)
    }
}

/// One input through the pipeline.
fn process(predictor: &Predictor, cli: &Cli, source: &Source, dir: &Path) -> Result<()> {
    let cfg = predictor.config();
    let k = cfg.classes as usize;
    let style = Style::new(
        cfg,
        source.width,
        source.height,
        cli.layout,
        cli.alpha,
        cli.measure,
        cli.heat_overlay,
    );
    let threshold = cli.threshold.unwrap_or(style.scale.max / 2.0);
    let temporal = (!cli.no_temporal)
        .then(|| cli.temporal.options())
        .transpose()?;
    let mut sampler = Sampler::new(predictor, temporal, cli.batch)?;
    let settings = settings(predictor, &sampler, cli, source, threshold);
    let look = format!(
        "codec {}, layout {:?}, alpha {}, heat overlay {}, frames {}",
        cli.codec.name(),
        cli.layout,
        cli.alpha,
        cli.heat_overlay,
        cli.frames
    );
    let paths = Paths::new(dir, cli.codec, cli.frames);
    let cols = Columns::new(&cfg.class_names[..k.min(cfg.class_names.len())]);
    let g = &style.geometry;
    let done = match state::prepare(
        &paths,
        &settings,
        &look,
        cli.max_frames,
        cli.restart,
        &cols,
        source,
        g,
    )? {
        Start::Skip(s) => {
            println!(
                "{}: already done ({} frames in {}); pass --restart to redo it",
                source.path.display(),
                s.frames,
                paths.dir.display()
            );
            return Ok(());
        }
        Start::Run(done) => done,
    };
    if cli.maps {
        std::fs::create_dir_all(&paths.maps)
            .with_context(|| format!("cannot create {}", paths.maps.display()))?;
    }
    let selection = Selection {
        every: cli.every,
        max_frames: cli.max_frames,
    };
    // An earlier run may have gone further than this one's --max-frames.
    let done: BTreeMap<usize, String> = done
        .into_iter()
        .filter(|(i, _)| selection.includes(*i))
        .collect();
    if !done.is_empty() {
        eprintln!(
            "{}: resuming: {} frames done by an earlier run are redrawn from their records",
            source.path.display(),
            done.len()
        );
    }
    let fps = source.fps / cli.every as f64;
    let (writer, codec) = open_writer(&paths.video_partial, cli.codec, fps, g.width, g.height)?;
    let csv = table::Writer::start(&paths.csv_partial, &cols, &done)?;
    let progress = progress_bar(source, selection);
    let job = pipeline::Job {
        source,
        selection,
        batch: cli.batch,
        style: &style,
        cols: &cols,
        paths: &paths,
        threshold,
        classes: k,
        frame_pngs: cli.frames,
        maps: cli.maps,
    };
    let start = Instant::now();
    let result = pipeline::run(&job, &mut sampler, &done, writer, csv, &progress);
    progress.finish_and_clear();
    let report = result?;
    let seconds = start.elapsed().as_secs_f64();
    let summary = Summary {
        status: Status::Finished,
        stopped: None,
        input: source.path.display().to_string(),
        frames: report.written,
        computed: report.computed,
        mode: sampler.mode().into(),
        samples_per_frame: report.samples as f64 / report.computed.max(1) as f64,
        resets: report.resets,
        max_frames: cli.max_frames,
        look,
        settings,
        codec: codec.name(),
        video: None,
        csv: None,
        plot: None,
        video_width: g.width,
        video_height: g.height,
        fps,
        seconds,
        frames_per_second: report.computed as f64 / seconds.max(1e-9),
        network_idle: report.idle_share().0,
    };
    conclude(&job, &report, summary)
}

/// What the results of an input depend on.
fn settings(
    predictor: &Predictor,
    sampler: &Sampler,
    cli: &Cli,
    source: &Source,
    threshold: f32,
) -> Settings {
    let temporal = match sampler {
        Sampler::Temporal(..) => cli.temporal.options().ok(),
        Sampler::PerFrame { .. } => None,
    };
    Settings {
        input: absolute(&source.path),
        input_size: state::input_size(source),
        model: absolute(&predictor.path),
        model_bytes: std::fs::metadata(&predictor.path)
            .map(|m| m.len())
            .unwrap_or(0),
        samples: if predictor.dropout {
            predictor.opts.samples
        } else {
            1
        },
        seed: predictor.opts.seed,
        dropout: predictor.dropout,
        test_dropout: predictor.test_dropout.clone(),
        mode: sampler.mode().into(),
        adaptive: predictor.opts.adaptive.filter(|_| predictor.dropout),
        flip: predictor.opts.flip,
        temporal,
        measure: cli.measure,
        threshold,
        every: cli.every,
        width: source.width,
        height: source.height,
    }
}

/// Turns the way a run ended into final outputs (finished, truncated video) or a message
/// (interrupted, damaged frame folder).
fn conclude(job: &pipeline::Job, report: &Report, mut summary: Summary) -> Result<()> {
    let (source, paths) = (job.source, job.paths);
    match &report.end {
        End::Finished => {}
        End::Stopped => {
            summary.status = Status::Interrupted;
            summary.stopped = Some("interrupted".into());
            write_summary(paths, &summary)?;
            let what = if stop::requested() {
                "interrupted"
            } else {
                "stopped early"
            };
            return Err(Interrupted(format!(
                "{what}: {} of {} frames done; the partial video {} is playable; run the same \
                 command again to resume",
                report.written,
                expected(source, job.selection).map_or("?".into(), |n| n.to_string()),
                paths.video_partial.display()
            ))
            .into());
        }
        End::Damaged { at, reason } if !source.is_video() || report.written == 0 => {
            summary.status = Status::Interrupted;
            summary.stopped = Some(reason.clone());
            write_summary(paths, &summary)?;
            if !source.is_video() {
                bail!(
                    "frame {at}: {reason}; the {} frames before it are kept: fix or remove that \
                     frame and run the same command again to resume",
                    report.written
                );
            }
            bail!(
                "no frame of video {} could be decoded: {reason}",
                source.path.display()
            );
        }
        End::Damaged { at, reason } => {
            eprintln!(
                "warning: {} is truncated or damaged: {reason}; kept the {} frames before frame {at}",
                source.path.display(),
                report.written
            );
            summary.status = Status::Truncated;
            summary.stopped = Some(format!("frame {at}: {reason}"));
        }
    }
    if let Some(missing) = missing_frames(paths, job.cols, report.decoded)? {
        summary.status = Status::Incomplete;
        summary.stopped = Some(missing.clone());
        write_summary(paths, &summary)?;
        bail!(
            "{} is not finished: {missing} (replaced or cut by another process?); run the same \
             command again to redo the missing frames",
            paths.dir.display()
        );
    }
    finalise(paths, job.cols, &mut summary, job.frame_pngs)?;
    report_line(source, paths, &summary, report);
    Ok(())
}

fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The number of frames a run will process, when known.
fn expected(source: &Source, sel: Selection) -> Option<usize> {
    source.frames.map(|n| sel.count(n))
}

/// Opens the video with the first of the codec's candidates this OpenCV/FFmpeg can write.
fn open_writer(
    path: &Path,
    codec: Codec,
    fps: f64,
    w: u32,
    h: u32,
) -> Result<(VideoWriter, Codec)> {
    let name = path
        .to_str()
        .with_context(|| format!("output path {} is not UTF-8", path.display()))?;
    let size = Size::new(w as i32, h as i32);
    for c in codec.candidates() {
        let [a, b, x, d] = c.fourcc();
        let fourcc = VideoWriter::fourcc(a, b, x, d)?;
        let writer =
            VideoWriter::new_with_backend(name, videoio::CAP_FFMPEG, fourcc, fps, size, true)
                .with_context(|| format!("cannot create video {}", path.display()))?;
        if writer.is_opened()? {
            if codec == Codec::Auto && c != Codec::Avc1 {
                eprintln!(
                    "warning: this OpenCV/FFmpeg cannot write H.264 (avc1); writing {} as {}, \
                     which browsers do not play",
                    path.display(),
                    c.name()
                );
            }
            return Ok((writer, c));
        }
    }
    bail!(
        "cannot write {} with --codec {}: OpenCV's FFmpeg lacks that encoder here, or the folder \
         is not writable; try --codec mjpg",
        path.display(),
        codec.name()
    )
}

/// The run's bar, named after the input; the encoder puts the frame rate in its message.
fn progress_bar(source: &Source, sel: Selection) -> ProgressBar {
    let name = source
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    progress::bar(expected(source, sel).map(|n| n as u64), name)
}

fn write_summary(paths: &Paths, summary: &Summary) -> Result<()> {
    write_atomic(&paths.summary, &serde_json::to_vec_pretty(summary)?)
}

/// What the partial video and CSV lack of the frames decoded, if anything. Checked before they
/// take their final names: a file replaced or cut under the run (by another process, a full
/// disk) must not pass as a finished run.
fn missing_frames(paths: &Paths, cols: &Columns, decoded: usize) -> Result<Option<String>> {
    let name = |p: &Path| p.file_name().unwrap_or_default().display().to_string();
    let rows = cols.load(&paths.csv_partial).len();
    let frames = video_frames(&paths.video_partial)?;
    let mut missing = vec![];
    if rows != decoded {
        missing.push(format!("{} has {rows} rows", name(&paths.csv_partial)));
    }
    if frames != decoded {
        missing.push(format!(
            "{} has {frames} frames",
            name(&paths.video_partial)
        ));
    }
    Ok((!missing.is_empty())
        .then(|| format!("{} for the {decoded} frames decoded", missing.join(" and "))))
}

/// Frames in a video file, counted by decoding it (a container's own count can be an estimate).
fn video_frames(path: &Path) -> Result<usize> {
    let name = path
        .to_str()
        .with_context(|| format!("video path {} is not UTF-8", path.display()))?;
    let mut cap = VideoCapture::from_file(name, videoio::CAP_FFMPEG)
        .with_context(|| format!("cannot reopen {}", path.display()))?;
    let mut n = 0;
    while cap.is_opened()? && cap.grab().unwrap_or(false) {
        n += 1;
    }
    Ok(n)
}

/// Gives the outputs their final names: video, sorted CSV, plot, summary.
fn finalise(paths: &Paths, cols: &Columns, summary: &mut Summary, keep_frames: bool) -> Result<()> {
    std::fs::rename(&paths.video_partial, &paths.video)
        .with_context(|| format!("cannot rename {}", paths.video_partial.display()))?;
    let rows = table::finalise(&paths.csv_partial, &paths.csv, cols)?;
    render::save_png_atomic(&crate::plot::uncertainty_over_time(&rows)?, &paths.plot)?;
    if !keep_frames && paths.records.exists() {
        std::fs::remove_dir_all(&paths.records)
            .with_context(|| format!("cannot remove {}", paths.records.display()))?;
    }
    summary.video = Some(paths.video.clone());
    summary.csv = Some(paths.csv.clone());
    summary.plot = Some(paths.plot.clone());
    write_summary(paths, summary)
}

fn report_line(source: &Source, paths: &Paths, s: &Summary, report: &Report) {
    let (idle, frames, encoder) = report.idle_share();
    let reused = s.frames - s.computed.min(s.frames);
    let reused = if reused > 0 {
        format!(" ({reused} from an earlier run)")
    } else {
        String::new()
    };
    println!(
        "{}: {} frames{reused} in {:.1} s, {:.2} frames/s; network idle {:.0}% (waiting for frames \
         {:.0}%, for the encoder {:.0}%) -> {} (codec {})",
        source.path.display(),
        s.frames,
        s.seconds,
        s.frames_per_second,
        100.0 * idle,
        100.0 * frames,
        100.0 * encoder,
        paths.video.display(),
        s.codec
    );
}
