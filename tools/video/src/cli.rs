//! The command line. Doc comments are the help text; the sampling options are the ones
//! `segnet-bayes infer` takes (`SamplingArgs`), so both tools read the same flags.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use segnet_bayes::cli::SamplingArgs;
use segnet_bayes::mc::Measure;

#[derive(Parser, Debug)]
#[command(
    name = "segnet-video",
    version,
    about = "Segment videos or folders of frames with Bayesian SegNet: an overlay video with an \
             uncertainty heatmap, a per-frame CSV and a plot of uncertainty over time"
)]
pub struct Cli {
    /// Video files (mp4, avi, mkv, webm, ...) or folders of PNG/JPEG frames (sorted naturally:
    /// frame2 before frame10).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Output folder; one subfolder per input when several inputs are given.
    #[arg(long, short, default_value = "video-out")]
    pub out: PathBuf,
    /// Panels (input, class overlay, uncertainty heatmap) side by side or stacked.
    #[arg(long, value_enum, default_value_t = Layout::Side)]
    pub layout: Layout,
    /// Video codec; the container follows from it (.mp4, .avi or .mkv).
    #[arg(long, value_enum, default_value_t = Codec::Mp4v)]
    pub codec: Codec,
    /// Also write per-frame PNGs into frames/: class indices, overlay and heatmap.
    #[arg(long)]
    pub frames: bool,
    /// Uncertainty measure shown in the heatmap and compared with --threshold.
    #[arg(long, value_enum, default_value_t = Measure::Variance)]
    pub measure: Measure,
    /// Pixels whose --measure exceeds this count as uncertain (CSV column
    /// share_above_threshold). Default: half the top of the measure's fixed colour scale.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Process every Nth frame; the output video plays at the source rate / N (real time).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// Process at most this many frames per input (0: all).
    #[arg(long, default_value_t = 0)]
    pub max_frames: usize,
    /// Frames per batch handed between the decode, network, render and encode stages; Ctrl-C
    /// stops after the frames in hand.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Frame rate of the output for frame folders (default 10), or to override a video's own.
    #[arg(long)]
    pub fps: Option<f64>,
    /// Opacity of the class colours in the overlay.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Weight averaging: one pass with dropout off instead of MC sampling.
    #[arg(long)]
    pub no_dropout: bool,
    /// Discard the progress of an earlier run in the output folder and start over.
    #[arg(long)]
    pub restart: bool,
}

/// Where the three panels go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// Input | overlay | heatmap, left to right.
    Side,
    /// Input over overlay over heatmap.
    Stack,
}

/// Video codecs that OpenCV's FFmpeg back-end was measured to round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Codec {
    /// MPEG-4 Part 2 in .mp4: plays nearly everywhere.
    Mp4v,
    /// H.264 in .mp4 (needs an FFmpeg with an H.264 encoder).
    Avc1,
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
    /// The FourCC OpenCV asks FFmpeg for.
    pub fn fourcc(self) -> [char; 4] {
        match self {
            Codec::Mp4v => ['m', 'p', '4', 'v'],
            Codec::Avc1 => ['a', 'v', 'c', '1'],
            Codec::Mjpg => ['M', 'J', 'P', 'G'],
            Codec::Xvid => ['X', 'V', 'I', 'D'],
            Codec::X264 => ['X', '2', '6', '4'],
            Codec::Ffv1 => ['F', 'F', 'V', '1'],
        }
    }

    /// The container's file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Mp4v | Codec::Avc1 => "mp4",
            Codec::Mjpg | Codec::Xvid | Codec::Ffv1 => "avi",
            Codec::X264 => "mkv",
        }
    }

    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}
