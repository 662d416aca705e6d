//! Where frames come from: a video file (OpenCV's FFmpeg back-end) or a folder of PNG/JPEG
//! frames sorted naturally. `probe` checks an input before any work (openable, at least one
//! frame, one frame size); `decode` runs on its own thread and streams the selected frames.

use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;

use anyhow::{bail, ensure, Context, Result};
use image::RgbImage;
use opencv::core::{Mat, MatTraitConst, MatTraitConstManual, CV_8UC3};
use opencv::videoio::{self, VideoCapture, VideoCaptureTrait, VideoCaptureTraitConst};
use rayon::prelude::*;
use segnet_bayes::image_io;
use segnet_bayes::items;

use crate::stop;

/// Extensions tried as videos; anything else that is a file is tried too, but named in errors.
const VIDEO_EXTENSIONS: [&str; 9] = [
    "mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg", "wmv",
];

/// Frame rate given to frame folders when --fps is not set.
const FOLDER_FPS: f64 = 10.0;

/// What an input is.
#[derive(Debug, Clone)]
pub(crate) enum SourceKind {
    Video,
    /// The frame files in natural order, and their output stems.
    Folder(Vec<PathBuf>, Vec<String>),
}

/// A probed input.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) kind: SourceKind,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: f64,
    /// Frames in the input: counted for folders, announced by the header for videos (None when
    /// the container does not say).
    pub(crate) frames: Option<usize>,
}

/// One decoded frame.
pub(crate) struct Frame {
    /// Position in the input (0-based, counting skipped frames).
    pub(crate) index: usize,
    /// Seconds from the start of the input.
    pub(crate) time: f64,
    pub(crate) image: RgbImage,
}

/// How decoding ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum End {
    /// The input (or --max-frames) was exhausted.
    Finished,
    /// Ctrl-C, or the consumer stopped listening.
    Stopped,
    /// A frame could not be decoded; the frames before it were delivered.
    Damaged { at: usize, reason: String },
}

/// Which frames to process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selection {
    pub(crate) every: usize,
    /// 0: no limit.
    pub(crate) max_frames: usize,
}

impl Selection {
    fn takes(&self, index: usize) -> bool {
        index.is_multiple_of(self.every)
    }

    /// Whether the frame at `index` is processed (selected and within --max-frames).
    pub(crate) fn includes(&self, index: usize) -> bool {
        self.takes(index) && (self.max_frames == 0 || index / self.every < self.max_frames)
    }

    /// How many frames of an input with `total` frames are processed.
    pub(crate) fn count(&self, total: usize) -> usize {
        let n = total.div_ceil(self.every);
        if self.max_frames > 0 {
            n.min(self.max_frames)
        } else {
            n
        }
    }

    fn full(&self, processed: usize) -> bool {
        self.max_frames > 0 && processed >= self.max_frames
    }
}

impl Source {
    pub(crate) fn is_video(&self) -> bool {
        matches!(self.kind, SourceKind::Video)
    }

    /// Output file stem of the frame at `index`: the file's own stem in a folder, a numbered
    /// name in a video.
    pub(crate) fn stem(&self, index: usize) -> String {
        match &self.kind {
            SourceKind::Video => format!("frame_{index:06}"),
            SourceKind::Folder(_, stems) => stems[index].clone(),
        }
    }
}

/// Opens an input and checks that it holds frames of one size, at least 32x32.
pub(crate) fn probe(path: &Path, fps: Option<f64>) -> Result<Source> {
    if let Some(f) = fps {
        ensure!(f.is_finite() && f > 0.0, "--fps must be positive, got {f}");
    }
    if !path.exists() {
        bail!("input {} does not exist", path.display());
    }
    let source = if path.is_dir() {
        probe_folder(path, fps)?
    } else {
        probe_video(path, fps)?
    };
    let min = image_io::MIN_SIDE;
    ensure!(
        source.width >= min && source.height >= min,
        "{} has {}x{} frames; the network needs at least {min}x{min}",
        path.display(),
        source.width,
        source.height
    );
    Ok(source)
}

fn open_video(path: &Path) -> Result<VideoCapture> {
    let name = path
        .to_str()
        .with_context(|| format!("video path {} is not UTF-8", path.display()))?;
    // FFmpeg only: OpenCV's image-sequence back-end would read `%d` patterns and single images.
    let cap = VideoCapture::from_file(name, videoio::CAP_FFMPEG)
        .with_context(|| format!("cannot open video {}", path.display()))?;
    Ok(cap)
}

fn probe_video(path: &Path, fps: Option<f64>) -> Result<Source> {
    if image_io::is_image_name(path) {
        bail!(
            "{} is a single image; pass the folder that holds the frames (or use `segnet-bayes infer` for images)",
            path.display()
        );
    }
    let mut cap = open_video(path)?;
    if !cap.is_opened()? {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
            bail!(
                "cannot open video {}: not a video, or damaged, truncated or empty (FFmpeg finds no playable stream)",
                path.display()
            );
        }
        bail!(
            "{} is not a video OpenCV/FFmpeg can read (expected mp4, avi, mkv, webm, ...)",
            path.display()
        );
    }
    let mut mat = Mat::default();
    let first = cap.read(&mut mat).unwrap_or(false) && !mat.empty();
    if !first {
        bail!(
            "video {} holds no frames (empty, or damaged before the first frame)",
            path.display()
        );
    }
    let announced = cap.get(videoio::CAP_PROP_FRAME_COUNT).unwrap_or(-1.0);
    let own_fps = cap.get(videoio::CAP_PROP_FPS).unwrap_or(0.0);
    let fps = match fps {
        Some(f) => f,
        None if own_fps.is_finite() && own_fps > 0.0 && own_fps < 1000.0 => own_fps,
        None => {
            eprintln!(
                "warning: {} does not say its frame rate; using 25 (set --fps)",
                path.display()
            );
            25.0
        }
    };
    Ok(Source {
        path: path.to_path_buf(),
        kind: SourceKind::Video,
        width: mat.cols() as u32,
        height: mat.rows() as u32,
        fps,
        frames: (announced.is_finite() && announced >= 1.0).then_some(announced as usize),
    })
}

fn probe_folder(path: &Path, fps: Option<f64>) -> Result<Source> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list folder {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && image_io::is_image_name(p))
        .collect();
    // Natural order (frame2 before frame10); plain order breaks natord's ties, such as names
    // that differ only in spaces, so the order never depends on the listing's.
    files.sort_by(|a, b| {
        natord::compare(&a.to_string_lossy(), &b.to_string_lossy()).then_with(|| a.cmp(b))
    });
    if files.is_empty() {
        bail!("folder {} holds no PNG or JPEG frames", path.display());
    }
    let sizes: Vec<Result<(u32, u32)>> = files
        .par_iter()
        .map(|f| {
            image::image_dimensions(f)
                .with_context(|| format!("cannot read frame {} (not an image?)", f.display()))
        })
        .collect();
    let (width, height) = match &sizes[0] {
        Ok(s) => *s,
        Err(e) => bail!("{e:#}"),
    };
    for (f, size) in files.iter().zip(sizes) {
        let (w, h) = size?;
        if (w, h) != (width, height) {
            bail!(
                "frames in {} differ in size: {} is {w}x{h} but {} is {width}x{height}; \
                 a video needs one frame size (resize the frames or split the folder)",
                path.display(),
                f.display(),
                files[0].display()
            );
        }
    }
    let stems = items::names(&files);
    Ok(Source {
        path: path.to_path_buf(),
        frames: Some(files.len()),
        kind: SourceKind::Folder(files, stems),
        width,
        height,
        fps: fps.unwrap_or(FOLDER_FPS),
    })
}

/// Streams the selected frames of `source` into `tx`, in order, until the input ends, Ctrl-C,
/// or the receiver hangs up. Runs on the decode thread.
pub(crate) fn decode(
    source: &Source,
    sel: Selection,
    batch: usize,
    tx: SyncSender<Frame>,
) -> Result<End> {
    match &source.kind {
        SourceKind::Video => decode_video(source, sel, tx),
        SourceKind::Folder(files, _) => decode_folder(source, files, sel, batch, tx),
    }
}

fn decode_video(source: &Source, sel: Selection, tx: SyncSender<Frame>) -> Result<End> {
    let mut cap = open_video(&source.path)?;
    ensure!(
        cap.is_opened()?,
        "cannot reopen video {}",
        source.path.display()
    );
    let mut mat = Mat::default();
    let (mut index, mut sent) = (0usize, 0usize);
    loop {
        if stop::requested() {
            return Ok(End::Stopped);
        }
        if sel.full(sent) {
            return Ok(End::Finished);
        }
        if !sel.takes(index) {
            // grab() skips the colour conversion of frames we do not use.
            if !cap.grab().unwrap_or(false) {
                return Ok(video_end(source, index));
            }
            index += 1;
            continue;
        }
        if !cap.read(&mut mat).unwrap_or(false) || mat.empty() {
            return Ok(video_end(source, index));
        }
        if let Some(end) = deliver(&tx, source, index, bgr_to_rgb(&mat, source)) {
            return Ok(end);
        }
        sent += 1;
        index += 1;
    }
}

/// The end of a video: finished, or damaged when the header announced clearly more frames.
fn video_end(source: &Source, index: usize) -> End {
    match source.frames {
        // Containers estimate the count from the duration; allow for rounding.
        Some(n) if index + 1 < n => End::Damaged {
            at: index,
            reason: format!("it announces {n} frames but decoding stops at frame {index}"),
        },
        _ => End::Finished,
    }
}

/// An OpenCV BGR frame to RGB, checking its size against the first frame's.
fn bgr_to_rgb(mat: &Mat, source: &Source) -> Result<RgbImage> {
    ensure!(
        mat.typ() == CV_8UC3,
        "frame is not 8-bit colour (OpenCV type {})",
        mat.typ()
    );
    let (w, h) = (mat.cols() as u32, mat.rows() as u32);
    ensure!(
        (w, h) == (source.width, source.height),
        "frame size changes from {}x{} to {w}x{h}",
        source.width,
        source.height
    );
    let owned;
    let mat = if mat.is_continuous() {
        mat
    } else {
        owned = mat.try_clone()?;
        &owned
    };
    let bgr = mat.data_bytes()?;
    let rgb = bgr
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    Ok(RgbImage::from_raw(w, h, rgb).expect("w * h * 3 bytes"))
}

/// Hands frame `index` to the pipeline. Returns how decoding ends when it must stop here: the
/// frame could not be decoded (damage), or the receiver is gone.
fn deliver(
    tx: &SyncSender<Frame>,
    source: &Source,
    index: usize,
    image: Result<RgbImage>,
) -> Option<End> {
    let image = match image {
        Ok(img) => img,
        Err(e) => {
            return Some(End::Damaged {
                at: index,
                reason: format!("{e:#}"),
            })
        }
    };
    let frame = Frame {
        index,
        time: index as f64 / source.fps,
        image,
    };
    tx.send(frame).is_err().then_some(End::Stopped)
}

fn decode_folder(
    source: &Source,
    files: &[PathBuf],
    sel: Selection,
    batch: usize,
    tx: SyncSender<Frame>,
) -> Result<End> {
    let mut wanted: Vec<usize> = (0..files.len()).filter(|&i| sel.takes(i)).collect();
    if sel.max_frames > 0 {
        wanted.truncate(sel.max_frames);
    }
    // Decode a batch in parallel, deliver it in order.
    for chunk in wanted.chunks(batch.max(1)) {
        if stop::requested() {
            return Ok(End::Stopped);
        }
        let decoded: Vec<Result<RgbImage>> = chunk
            .par_iter()
            .map(|&i| image_io::load_rgb(&files[i]))
            .collect();
        for (&index, image) in chunk.iter().zip(decoded) {
            let image = image.and_then(|img| {
                let dims = img.dimensions();
                ensure!(
                    dims == (source.width, source.height),
                    "{} is {}x{}, not {}x{} like the other frames",
                    files[index].display(),
                    dims.0,
                    dims.1,
                    source.width,
                    source.height
                );
                Ok(img)
            });
            if let Some(end) = deliver(&tx, source, index, image) {
                return Ok(end);
            }
        }
    }
    Ok(End::Finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_sharing_a_stem_get_distinct_names() {
        let files: Vec<PathBuf> = ["x/a.png", "x/a.jpg", "x/b.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(items::names(&files), ["a.png", "a.jpg", "b"]);
    }

    #[test]
    fn selection_counts_every_nth_frame_up_to_the_limit() {
        let sel = Selection {
            every: 3,
            max_frames: 0,
        };
        assert_eq!(sel.count(10), 4); // 0, 3, 6, 9
        assert!(sel.takes(9) && !sel.takes(10));
        assert!(sel.includes(9));
        let capped = Selection {
            every: 1,
            max_frames: 5,
        };
        assert_eq!(capped.count(12), 5);
        assert_eq!(capped.count(3), 3);
        assert!(capped.includes(4) && !capped.includes(5));
        let both = Selection {
            every: 2,
            max_frames: 3,
        };
        let taken: Vec<usize> = (0..20).filter(|&i| both.includes(i)).collect();
        assert_eq!(taken, [0, 2, 4]);
    }
}
