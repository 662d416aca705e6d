//! What an output folder holds, and how a run picks up an earlier one.
//!
//! While a run works, its outputs carry partial names (`overlay.partial.mp4`,
//! `frames.partial.csv`); only a finished run renames them, so a file under a final name is
//! always whole. Progress is the partial CSV (rows appended and synced per batch) together
//! with a record per frame (class indices and heatmap PNGs, each written atomically, in
//! `frames/` with --frames, else in `.segnet-video/records/`): a frame is done when both exist.
//! A resumed run replays done frames from their records (no network) into a fresh video and
//! computes the rest. `.segnet-video/settings.json` holds what the results depend on; a run
//! with other settings refuses to mix its frames in (until --restart).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use segnet_bayes::atomic::write_atomic;
use segnet_bayes::mc::{Measure, Settle};
use serde::{Deserialize, Serialize};

use crate::cli::Codec;
use crate::frame::Geometry;
use crate::source::Source;
use crate::table::Columns;
use crate::temporal;

/// The files of one input's output folder.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
    pub(crate) video: PathBuf,
    pub(crate) video_partial: PathBuf,
    pub(crate) csv: PathBuf,
    pub(crate) csv_partial: PathBuf,
    pub(crate) plot: PathBuf,
    pub(crate) summary: PathBuf,
    state: PathBuf,
    settings: PathBuf,
    /// Where the per-frame records go: `frames/` with --frames, else inside the state folder.
    pub(crate) records: PathBuf,
    /// The raw maps of --maps.
    pub(crate) maps: PathBuf,
    frames: PathBuf,
}

impl Paths {
    pub(crate) fn new(dir: &Path, codec: Codec, frames: bool) -> Paths {
        let ext = codec.extension();
        let state = dir.join(".segnet-video");
        Paths {
            dir: dir.to_path_buf(),
            video: dir.join(format!("overlay.{ext}")),
            video_partial: dir.join(format!("overlay.partial.{ext}")),
            csv: dir.join("frames.csv"),
            csv_partial: dir.join("frames.partial.csv"),
            plot: dir.join("uncertainty.png"),
            summary: dir.join("summary.json"),
            settings: state.join("settings.json"),
            records: if frames {
                dir.join("frames")
            } else {
                state.join("records")
            },
            frames: dir.join("frames"),
            maps: dir.join("maps"),
            state,
        }
    }

    /// The record files of a frame: class indices and the heatmap.
    pub(crate) fn record(&self, stem: &str, m: Measure) -> (PathBuf, PathBuf) {
        (
            self.records.join(format!("{stem}_classes.png")),
            self.records.join(format!("{stem}_{}.png", m.name())),
        )
    }

    /// Removes everything this tool writes in the folder (and nothing else).
    fn clear(&self) -> Result<()> {
        for dir in [&self.state, &self.frames, &self.maps] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        self.remove_finals()?;
        remove(&self.csv_partial)?;
        self.remove_videos(true)
    }

    /// Removes the outputs of a finished run, which a new run replaces.
    fn remove_finals(&self) -> Result<()> {
        for f in [&self.csv, &self.plot, &self.summary] {
            remove(f)?;
        }
        self.remove_videos(false)
    }

    /// `overlay.<ext>` of any codec, and `overlay.partial.<ext>` when `partial`.
    fn remove_videos(&self, partial: bool) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?;
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("overlay.") else {
                continue;
            };
            let is_partial = rest.starts_with("partial.");
            if !is_partial || partial {
                remove(&e.path())?;
            }
        }
        Ok(())
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// What the per-frame results depend on. A resumed run must match the run it continues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) input: String,
    /// Bytes of a video file, frames of a folder: a replaced input is not resumed.
    pub(crate) input_size: u64,
    pub(crate) model: String,
    pub(crate) model_bytes: u64,
    pub(crate) samples: usize,
    pub(crate) seed: Option<u64>,
    pub(crate) dropout: bool,
    /// `--dropout-rate` / `--dropout-after`, where set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) test_dropout: Option<segnet_bayes::infer::TestDropout>,
    /// `per-frame` or `temporal`.
    pub(crate) mode: String,
    /// Adaptive stopping (per-frame samples and the temporal state's full estimates).
    pub(crate) adaptive: Option<Settle>,
    /// `--flip`: every other pass sees the frame mirrored.
    #[serde(default)]
    pub(crate) flip: bool,
    pub(crate) temporal: Option<temporal::Options>,
    pub(crate) measure: Measure,
    pub(crate) threshold: f32,
    pub(crate) every: usize,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

impl Settings {
    /// `key: old -> new` for each setting that differs.
    fn differences(&self, new: &Settings) -> Vec<String> {
        let (a, b) = (serde_json::json!(self), serde_json::json!(new));
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec![];
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k}: {v} -> {}",
                    b.get(k).unwrap_or(&serde_json::Value::Null)
                )
            })
            .collect()
    }
}

/// Size of the input for [`Settings::input_size`].
pub(crate) fn input_size(source: &Source) -> u64 {
    match &source.kind {
        crate::source::SourceKind::Video => std::fs::metadata(&source.path)
            .map(|m| m.len())
            .unwrap_or(0),
        crate::source::SourceKind::Folder(files, _) => files.len() as u64,
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Status {
    /// Every selected frame is in the outputs.
    Finished,
    /// The video is damaged part-way; the frames before the damage are in the outputs.
    Truncated,
    /// Stopped (Ctrl-C or a failure); the partial outputs resume on the next run.
    Interrupted,
    /// The run ended, but its video or CSV lacks frames it decoded (replaced or cut under it);
    /// the next run redoes them.
    Incomplete,
}

/// `summary.json`: what a run did, and how to tell whether a new run has anything to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) status: Status,
    /// Why decoding stopped early, for truncated and interrupted runs.
    pub(crate) stopped: Option<String>,
    pub(crate) input: String,
    /// Frames in the outputs.
    pub(crate) frames: usize,
    /// Frames computed by this run (the rest came from an earlier run).
    pub(crate) computed: usize,
    /// How the frames were sampled: `per-frame` or `temporal`.
    pub(crate) mode: String,
    /// Network passes per computed frame, on average.
    pub(crate) samples_per_frame: f64,
    /// Computed frames at which the temporal state started afresh (first frame, gaps, cuts).
    pub(crate) resets: usize,
    pub(crate) max_frames: usize,
    /// Codec, layout and look options: a change redoes the video, not the frames.
    pub(crate) look: String,
    pub(crate) settings: Settings,
    /// The codec the video was written with (`auto` picks one).
    pub(crate) codec: String,
    pub(crate) video: Option<PathBuf>,
    pub(crate) csv: Option<PathBuf>,
    pub(crate) plot: Option<PathBuf>,
    pub(crate) video_width: u32,
    pub(crate) video_height: u32,
    pub(crate) fps: f64,
    pub(crate) seconds: f64,
    pub(crate) frames_per_second: f64,
    /// Share of the network's time spent waiting for frames or for the encoder.
    pub(crate) network_idle: f64,
}

/// What to do with an input.
pub(crate) enum Start {
    /// A finished run with the same settings is already there.
    Skip(Box<Summary>),
    /// Run, with the CSV rows of frames done earlier (by frame index).
    Run(BTreeMap<usize, String>),
}

/// Readies the output folder: starts afresh, resumes, or finds the work already done.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    paths: &Paths,
    settings: &Settings,
    look: &str,
    max_frames: usize,
    restart: bool,
    cols: &Columns,
    source: &Source,
    geometry: &Geometry,
) -> Result<Start> {
    if restart {
        paths.clear()?;
    }
    let earlier: Option<Settings> = std::fs::read(&paths.settings)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match earlier {
        Some(e) if &e != settings => bail!(
            "{} holds a run with other settings ({}); pass --restart to discard it, or choose another --out",
            paths.dir.display(),
            e.differences(settings).join(", ")
        ),
        Some(_) => {
            if let Some(s) = finished_summary(paths, settings, look, max_frames) {
                return Ok(Start::Skip(Box::new(s)));
            }
        }
        None => {
            paths.clear()?;
            std::fs::create_dir_all(&paths.state)
                .with_context(|| format!("cannot create {}", paths.state.display()))?;
            write_atomic(&paths.settings, &serde_json::to_vec_pretty(settings)?)?;
        }
    }
    let rows = if paths.csv_partial.exists() {
        cols.load(&paths.csv_partial)
    } else {
        cols.load(&paths.csv)
    };
    let done = rows
        .into_iter()
        .filter(|(i, _)| *i < source.frames.unwrap_or(usize::MAX))
        .filter(|(i, _)| record_complete(paths, &source.stem(*i), settings.measure, geometry))
        .collect();
    paths.remove_finals()?;
    std::fs::create_dir_all(&paths.records)
        .with_context(|| format!("cannot create {}", paths.records.display()))?;
    Ok(Start::Run(done))
}

fn finished_summary(
    paths: &Paths,
    settings: &Settings,
    look: &str,
    max_frames: usize,
) -> Option<Summary> {
    let s: Summary = serde_json::from_slice(&std::fs::read(&paths.summary).ok()?).ok()?;
    let same = matches!(s.status, Status::Finished | Status::Truncated)
        && &s.settings == settings
        && s.look == look
        && s.max_frames == max_frames
        && paths.video.exists()
        && paths.csv.exists();
    same.then_some(s)
}

/// Both record files exist with the sizes this run draws.
fn record_complete(paths: &Paths, stem: &str, m: Measure, g: &Geometry) -> bool {
    let (classes, heat) = paths.record(stem, m);
    image::image_dimensions(&classes).ok() == Some((g.w, g.h))
        && image::image_dimensions(&heat).ok() == Some((g.heat_w, g.h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            input: "in.mp4".into(),
            input_size: 100,
            model: "m.safetensors".into(),
            model_bytes: 5,
            samples: 2,
            seed: None,
            dropout: true,
            test_dropout: None,
            mode: "temporal".into(),
            adaptive: Some(Settle::default()),
            flip: false,
            temporal: None,
            measure: Measure::Variance,
            threshold: 0.04,
            every: 1,
            width: 64,
            height: 48,
        }
    }

    #[test]
    fn differences_name_the_changed_settings() {
        let a = settings();
        let mut b = settings();
        b.samples = 4;
        b.measure = Measure::Entropy;
        let d = a.differences(&b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.contains(&"samples: 2 -> 4".to_string()), "{d:?}");
        assert!(d.iter().any(|s| s.starts_with("measure:")), "{d:?}");
        assert!(a.differences(&a).is_empty());
    }

    #[test]
    fn clearing_removes_only_our_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(dir.path(), Codec::Mp4v, false);
        for f in [
            "overlay.mp4",
            "overlay.partial.avi",
            "frames.csv",
            "notes.txt",
            "overlay-notes.txt",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        std::fs::create_dir_all(&p.records).unwrap();
        p.clear().unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "overlay-notes.txt"]);
    }
}
