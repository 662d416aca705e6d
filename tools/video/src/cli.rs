//! The command line. Doc comments are the help text; the sampling options are the ones
//! `segnet-bayes infer` takes (`SamplingArgs`), so both tools read the same flags.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::{Args, Parser, ValueEnum};
use segnet_bayes::cli::{SamplingArgs, WorkArgs};
use segnet_bayes::mc::Measure;

use crate::temporal::Flow;

#[derive(Parser, Debug)]
#[command(
    name = "segnet-video",
    version,
    about = "Segment videos or folders of frames with Bayesian SegNet: an overlay video with an \
             uncertainty heatmap, a per-frame CSV and a plot of uncertainty over time"
)]
pub(crate) struct Cli {
    /// Video files (mp4, avi, mkv, webm, ...) or folders of PNG/JPEG frames (sorted naturally:
    /// frame2 before frame10).
    #[arg(required_unless_present = "manifest")]
    pub(crate) inputs: Vec<PathBuf>,
    /// Each video or frame folder is one item of the run's work list.
    #[command(flatten)]
    pub(crate) work: WorkArgs,
    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,
    /// Output folder; one subfolder per input when several inputs are given.
    #[arg(long, short, default_value = "video-out")]
    pub(crate) out: PathBuf,
    /// Panels (input, class overlay, uncertainty heatmap) side by side or stacked.
    #[arg(long, value_enum, default_value_t = Layout::Side)]
    pub(crate) layout: Layout,
    /// Video codec; the container follows from it (.mp4, .avi or .mkv).
    #[arg(long, value_enum, default_value_t = Codec::Auto)]
    pub(crate) codec: Codec,
    /// Show the uncertainty heatmap blended over a grey copy of the input instead of plain, so
    /// the uncertain objects can be told apart.
    #[arg(long)]
    pub(crate) heat_overlay: bool,
    /// Also write per-frame PNGs into frames/: class indices, overlay and heatmap.
    #[arg(long)]
    pub(crate) frames: bool,
    /// Uncertainty measure shown in the heatmap and compared with --threshold.
    #[arg(long, value_enum, default_value_t = Measure::Variance)]
    pub(crate) measure: Measure,
    /// Pixels whose --measure exceeds this count as uncertain (CSV column
    /// share_above_threshold). Default: half the top of the measure's fixed colour scale.
    #[arg(long)]
    pub(crate) threshold: Option<f32>,
    /// Process every Nth frame; the output video plays at the source rate / N (real time).
    #[arg(long, default_value_t = 1)]
    pub(crate) every: usize,
    /// Process at most this many frames per input (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_frames: usize,
    /// Frames per batch handed between the decode, network, render and encode stages; Ctrl-C
    /// stops after the frames in hand. On a GPU, frames sampled on their own (--no-temporal)
    /// also go through the network this many at a time.
    #[arg(long, default_value_t = 8)]
    pub(crate) batch: usize,
    /// Frame rate of the output for frame folders (default 10), or to override a video's own.
    #[arg(long)]
    pub(crate) fps: Option<f64>,
    /// Opacity of the class colours in the overlay.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) alpha: f32,
    /// Weight averaging: one pass with dropout off instead of MC sampling.
    #[arg(long)]
    pub(crate) no_dropout: bool,
    /// Sample every frame on its own (--samples per frame, adaptive unless --no-adaptive)
    /// instead of aggregating a few passes per frame across frames.
    #[arg(long)]
    pub(crate) no_temporal: bool,
    #[command(flatten)]
    pub(crate) temporal: TemporalArgs,
    /// Also write each computed frame's raw maps into maps/<frame>.npz (NumPy): class indices
    /// (uint8), variance, entropy and mutual information (float16), at the input's size.
    #[arg(long)]
    pub(crate) maps: bool,
    /// Discard the progress of an earlier run in the output folder and start over.
    #[arg(long)]
    pub(crate) restart: bool,
}

/// Temporal aggregation (the default; see README): each frame gets --passes stochastic passes,
/// blended into the moments carried over from the previous frame along the optical flow.
#[derive(Args, Debug, Clone)]
pub(crate) struct TemporalArgs {
    /// Temporal aggregation: stochastic passes per frame (k). The first frame, and any frame
    /// after a scene cut or a gap, gets a full per-frame estimate instead.
    #[arg(long, default_value_t = 1)]
    pub(crate) passes: usize,
    /// Temporal aggregation: weight of a frame's new passes where the flow explains the frame
    /// (the running moments then average over about (2 - a) / a frames).
    #[arg(long, default_value_t = 0.3)]
    pub(crate) temporal_alpha: f64,
    /// Temporal aggregation: weight of a frame's new passes where the flow does not explain it.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) temporal_alpha_max: f64,
    /// Temporal aggregation: grey-level error of the warped previous frame (0-1, averaged over
    /// 5x5 pixels) up to which the flow counts as reliable...
    #[arg(long, default_value_t = 0.04)]
    pub(crate) warp_error_low: f64,
    /// ...and from which it counts as not reliable at all.
    #[arg(long, default_value_t = 0.15)]
    pub(crate) warp_error_high: f64,
    /// Temporal aggregation: mean warp error above which a frame starts a new scene.
    #[arg(long, default_value_t = 0.08)]
    pub(crate) scene_cut: f64,
    /// Temporal aggregation: OpenCV DIS optical flow preset (faster or more accurate).
    #[arg(long, value_enum, default_value_t = Flow::Fast)]
    pub(crate) flow: Flow,
}

impl TemporalArgs {
    pub(crate) fn options(&self) -> Result<crate::temporal::Options> {
        ensure!(self.passes >= 1, "--passes must be at least 1");
        let (a, b) = (self.temporal_alpha, self.temporal_alpha_max);
        ensure!(
            a > 0.0 && a <= 1.0,
            "--temporal-alpha must be in (0, 1], got {a}"
        );
        ensure!(
            (a..=1.0).contains(&b),
            "--temporal-alpha-max must be in [--temporal-alpha, 1], got {b}"
        );
        let (lo, hi) = (self.warp_error_low, self.warp_error_high);
        ensure!(
            lo >= 0.0 && hi > lo,
            "--warp-error-high ({hi}) must be above --warp-error-low ({lo}) >= 0"
        );
        ensure!(
            self.scene_cut > 0.0,
            "--scene-cut must be positive, got {}",
            self.scene_cut
        );
        Ok(crate::temporal::Options {
            passes: self.passes,
            alpha: a,
            alpha_max: b,
            error_low: lo,
            error_high: hi,
            cut: self.scene_cut,
            flow: self.flow,
        })
    }
}

/// Where the three panels go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Layout {
    /// Input | overlay | heatmap, left to right.
    Side,
    /// Input over overlay over heatmap.
    Stack,
}

/// Video codecs that OpenCV's FFmpeg back-end was measured to round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Codec {
    /// H.264 (avc1) in .mp4 where this OpenCV/FFmpeg can write it, else mp4v.
    Auto,
    /// H.264 in .mp4: plays everywhere, browsers included (needs an FFmpeg with an H.264
    /// encoder).
    Avc1,
    /// MPEG-4 Part 2 in .mp4: desktop players, not browsers.
    Mp4v,
    /// Motion JPEG in .avi: large, simple, robust.
    Mjpg,
    /// Xvid MPEG-4 in .avi.
    Xvid,
    /// H.264 (libx264) in .mkv.
    X264,
    /// Lossless FFV1 in .avi: exact pixels, large files.
    Ffv1,
}

impl Codec {
    /// The codecs to try, in turn, for this choice.
    pub(crate) fn candidates(self) -> Vec<Codec> {
        match self {
            Codec::Auto => vec![Codec::Avc1, Codec::Mp4v],
            c => vec![c],
        }
    }

    /// The FourCC OpenCV asks FFmpeg for (auto asks for H.264 first).
    pub(crate) fn fourcc(self) -> [char; 4] {
        match self {
            Codec::Auto | Codec::Avc1 => ['a', 'v', 'c', '1'],
            Codec::Mp4v => ['m', 'p', '4', 'v'],
            Codec::Mjpg => ['M', 'J', 'P', 'G'],
            Codec::Xvid => ['X', 'V', 'I', 'D'],
            Codec::X264 => ['X', '2', '6', '4'],
            Codec::Ffv1 => ['F', 'F', 'V', '1'],
        }
    }

    /// The container's file extension.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Codec::Auto | Codec::Avc1 | Codec::Mp4v => "mp4",
            Codec::Mjpg | Codec::Xvid | Codec::Ffv1 => "avi",
            Codec::X264 => "mkv",
        }
    }

    pub(crate) fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}
