//! Drives the segnet-video binary over tiny videos and frame folders made here: a random
//! SegNet-Basic at 1/8 width on 48x64 input, two MC samples, so every run takes about a second.
//! Interruptions are real signals (SIGINT, SIGKILL) sent to the running binary once it has
//! written some rows.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use image::{Rgb, RgbImage};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use opencv::core::{Mat, Size, Vec3b};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture, VideoWriter};
use predicates::prelude::*;
use predicates::str::contains;
use segnet_bayes::config::{Arch, ModelConfig};
use segnet_bayes::model::{checkpoint, SegNet};
use tch::{nn, Device, Tensor};

const W: u32 = 64;
const H: u32 = 48;

/// A random SegNet-Basic, as `segnet-bayes init-model --arch basic --width 0.125
/// --input-size 48x64` writes it.
fn model(dir: &Path) -> PathBuf {
    let cfg = ModelConfig {
        arch: Arch::Basic,
        width: 0.125,
        input_size: Some([48, 64]),
        ..Default::default()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = SegNet::new(&vs.root(), &cfg);
    let path = dir.join("model.safetensors");
    checkpoint::save(&path, &cfg, &vs, &[], &BTreeMap::new()).unwrap();
    path
}

/// Frame `i`: a gradient with a bright square moving across.
fn frame(i: u32, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let inside = x.abs_diff(4 * i % w) < 8 && y.abs_diff(h / 2) < 8;
        if inside {
            Rgb([250, 240, 30])
        } else {
            Rgb([(x * 4) as u8, (y * 5) as u8, (i * 20) as u8])
        }
    })
}

fn video_writer(path: &Path, codec: &str, fps: f64) -> VideoWriter {
    let c: Vec<char> = codec.chars().collect();
    let fourcc = VideoWriter::fourcc(c[0], c[1], c[2], c[3]).unwrap();
    let size = Size::new(W as i32, H as i32);
    VideoWriter::new_with_backend(
        path.to_str().unwrap(),
        videoio::CAP_FFMPEG,
        fourcc,
        fps,
        size,
        true,
    )
    .unwrap()
}

/// Whether this OpenCV/FFmpeg can write H.264, as `--codec auto` wants.
fn writes_h264(dir: &Path) -> bool {
    video_writer(&dir.join("probe.mp4"), "avc1", 10.0)
        .is_opened()
        .unwrap()
}

fn write_video(path: &Path, codec: &str, frames: u32, fps: f64) {
    let mut writer = video_writer(path, codec, fps);
    assert!(writer.is_opened().unwrap(), "cannot write {codec} here");
    for i in 0..frames {
        let bgr: Vec<u8> = frame(i, W, H)
            .as_raw()
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        let mat = Mat::new_rows_cols_with_bytes::<Vec3b>(H as i32, W as i32, &bgr).unwrap();
        writer.write(&mat).unwrap();
    }
    writer.release().unwrap();
}

fn write_frames(dir: &Path, frames: u32) {
    std::fs::create_dir_all(dir).unwrap();
    // 1-based and unpadded, so only a natural sort gets the order right.
    for i in 0..frames {
        frame(i, W, H)
            .save(dir.join(format!("frame{}.png", i + 1)))
            .unwrap();
    }
}

/// What decoding a video finds.
struct Probe {
    frames: usize,
    width: u32,
    height: u32,
    fps: f64,
    /// The stream's codec tag: `avc1` for H.264 in .mp4.
    fourcc: String,
}

fn probe(path: &Path) -> Probe {
    let mut cap = VideoCapture::from_file(path.to_str().unwrap(), videoio::CAP_FFMPEG).unwrap();
    assert!(cap.is_opened().unwrap(), "cannot open {}", path.display());
    let tag = cap.get(videoio::CAP_PROP_FOURCC).unwrap() as u32;
    let mut p = Probe {
        frames: 0,
        width: 0,
        height: 0,
        fps: cap.get(videoio::CAP_PROP_FPS).unwrap(),
        fourcc: tag.to_le_bytes().iter().map(|&b| b as char).collect(),
    };
    let mut mat = Mat::default();
    while cap.read(&mut mat).unwrap() && !mat.empty() {
        p.frames += 1;
        (p.width, p.height) = (mat.cols() as u32, mat.rows() as u32);
    }
    p
}

/// segnet-video on `input` into `out` with the tiny model, two seeded samples on one CPU thread.
fn segnet_video(model: &Path, input: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segnet-video"));
    cmd.arg(input).arg("-o").arg(out).arg("--model").arg(model);
    cmd.args("--samples 2 --device cpu --threads 1 --seed 1".split(' '));
    cmd
}

/// Runs `cmd`, which must succeed; returns its stderr.
fn succeeds(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&cmd.assert().success().get_output().stderr).into_owned()
}

/// Fails with exactly one `error: ...` line mentioning `needle`, and no panic; returns the line.
fn fails_with(cmd: &mut Command, needle: &str) -> String {
    let assert = cmd
        .assert()
        .code(1)
        .stderr(contains(needle).and(contains("panicked").not()));
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(needle), "{err}");
    errors[0].to_string()
}

/// The CSV's columns that hold words, not numbers.
const WORD_COLUMNS: [&str; 2] = ["mode", "reset"];

/// CSV rows by frame index, the numeric columns only (an empty field reads as NaN); panics on a
/// duplicate.
fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let number = |f: &str| {
        if f.is_empty() {
            f64::NAN
        } else {
            f.parse().unwrap()
        }
    };
    let rows: Vec<Vec<f64>> = lines
        .map(|l| {
            l.split(',')
                .zip(&header)
                .filter(|(_, h)| !WORD_COLUMNS.contains(&h.as_str()))
                .map(|(f, _)| number(f))
                .collect()
        })
        .collect();
    let mut seen: Vec<usize> = rows.iter().map(|r| r[0] as usize).collect();
    let n = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), n, "duplicate rows in {}", path.display());
    (header, rows)
}

/// One column of the CSV as written, by name.
fn csv_column(path: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| l.split(',').nth(at).unwrap().to_string())
        .collect()
}

fn frame_indices(path: &Path) -> Vec<usize> {
    csv_rows(path).1.iter().map(|r| r[0] as usize).collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

/// A temporary folder with the tiny model and a folder of `n` frames.
struct FolderRun {
    tmp: tempfile::TempDir,
    model: PathBuf,
    frames: PathBuf,
}

impl FolderRun {
    fn new(n: usize) -> FolderRun {
        let tmp = tempfile::tempdir().unwrap();
        let model = model(tmp.path());
        let frames = tmp.path().join("frames");
        write_frames(&frames, n as u32);
        FolderRun { tmp, model, frames }
    }

    /// The run of the frames into `out`, in batches of 2 so that rows come early.
    fn cmd(&self, out: &Path) -> Command {
        let mut cmd = segnet_video(&self.model, &self.frames, out);
        cmd.args(["--batch", "2"]);
        cmd
    }
}

/// Starts `cmd` and returns once `rows` rows of `out`'s partial CSV are on disk, the child still
/// running: a signal sent now lands mid-run.
fn start_until_rows(cmd: &mut Command, out: &Path, rows: usize) -> Child {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let csv = out.join("frames.partial.csv");
    let start = Instant::now();
    loop {
        let status = child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "the run ended ({status:?}) before {rows} rows were written"
        );
        let text = std::fs::read_to_string(&csv).unwrap_or_default();
        if text.lines().count() > rows {
            return child;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {rows} rows after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn video_becomes_an_overlay_video_a_csv_row_per_frame_and_a_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let input = tmp.path().join("drive.mp4");
    write_video(&input, "mp4v", 12, 10.0);
    let out = tmp.path().join("out");
    // H.264 where this OpenCV/FFmpeg can write it, else mp4v; the run says which.
    let codec = if writes_h264(tmp.path()) {
        "avc1"
    } else {
        "mp4v"
    };
    segnet_video(&m, &input, &out).assert().success().stdout(
        contains("12 frames")
            .and(contains("network idle"))
            .and(contains(format!("overlay.mp4 (codec {codec})"))),
    );

    let video = probe(&out.join("overlay.mp4"));
    let s = summary(&out);
    assert_eq!(s["codec"], codec);
    assert_eq!(video.fourcc, codec);
    assert_eq!(video.frames, 12);
    assert_eq!(s["video_width"], video.width);
    assert_eq!(s["video_height"], video.height);
    assert!(video.width > 3 * W && video.height >= H, "side by side");
    assert!((video.fps - 10.0).abs() < 0.01, "{}", video.fps);
    assert_eq!(s["status"], "finished");
    assert!(!out.join("overlay.partial.mp4").exists());

    let (header, rows) = csv_rows(&out.join("frames.csv"));
    assert_eq!(
        header[..5].join(","),
        "frame,time_s,mean_variance,mean_entropy,mean_mutual-info"
    );
    assert_eq!(
        header[16..].join(","),
        "share_above_threshold,samples,warp_error,mode,reset"
    );
    assert_eq!(header.len(), 5 + 11 + 1 + 4);
    assert_eq!(rows.len(), 12);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0] as usize, i);
        assert!((r[1] - i as f64 / 10.0).abs() < 1e-3);
        assert!(r[2] > 0.0, "MC dropout gives some variance");
        let shares: f64 = r[5..16].iter().sum();
        assert!((shares - 1.0).abs() < 1e-4, "class shares sum to {shares}");
        // Temporal aggregation by default: a full estimate (--samples 2) at the first frame,
        // one pass blended in along the flow at every other frame.
        let (samples, warp_error) = (r[17], r[18]);
        if i == 0 {
            assert!(samples == 2.0 && warp_error.is_nan(), "{r:?}");
        } else {
            assert!(samples == 1.0 && (0.0..0.08).contains(&warp_error), "{r:?}");
        }
    }
    let csv = out.join("frames.csv");
    assert!(csv_column(&csv, "mode").iter().all(|m| m == "temporal"));
    let resets = csv_column(&csv, "reset");
    assert_eq!(resets[0], "first");
    assert!(resets[1..].iter().all(String::is_empty), "{resets:?}");
    assert_eq!(s["mode"], "temporal");
    assert_eq!(s["resets"], 1);
    assert!((s["samples_per_frame"].as_f64().unwrap() - 13.0 / 12.0).abs() < 1e-9);
    let plot = image::open(out.join("uncertainty.png")).unwrap();
    assert!(plot.width() > 300);
    // Without --frames the per-frame records are gone once the run finishes.
    assert!(!out.join(".segnet-video/records").exists());
    assert!(!out.join("frames").exists());

    // The same command again has nothing to do.
    segnet_video(&m, &input, &out)
        .assert()
        .success()
        .stdout(contains("already done"));
}

#[test]
fn stacked_lossless_video_shows_the_input_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let input = tmp.path().join("clip.avi");
    write_video(&input, "FFV1", 6, 5.0);
    let out = tmp.path().join("out");
    segnet_video(&m, &input, &out)
        .args([
            "--layout", "stack", "--codec", "ffv1", "--every", "2", "--frames",
        ])
        .assert()
        .success()
        .stdout(contains("(codec ffv1)"));
    let video = out.join("overlay.avi");
    let p = probe(&video);
    assert_eq!(p.frames, 3, "frames 0, 2, 4");
    assert!(
        p.height >= 3 * H && p.width > W,
        "stacked: {}x{}",
        p.width,
        p.height
    );
    assert!(
        (p.fps - 2.5).abs() < 0.01,
        "every 2nd frame of 5 fps plays at 2.5: {}",
        p.fps
    );
    // Lossless both ways: the input panel of the first frame is the source frame.
    let first = |path: &Path| {
        let mut cap = VideoCapture::from_file(path.to_str().unwrap(), videoio::CAP_FFMPEG).unwrap();
        let mut mat = Mat::default();
        assert!(cap.read(&mut mat).unwrap());
        mat
    };
    let (panel, source) = (first(&video), first(&input));
    for (x, y) in [(0, 0), (30, 20), (63, 47)] {
        assert_eq!(
            panel.at_2d::<Vec3b>(y, x).unwrap(),
            source.at_2d::<Vec3b>(y, x).unwrap()
        );
    }
    assert_eq!(frame_indices(&out.join("frames.csv")), [0, 2, 4]);
    for stem in ["frame_000000", "frame_000002", "frame_000004"] {
        for kind in ["classes", "overlay", "variance"] {
            let f = out.join("frames").join(format!("{stem}_{kind}.png"));
            assert!(f.is_file(), "{} missing", f.display());
        }
    }
}

#[test]
fn truncated_video_keeps_the_frames_before_the_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let input = tmp.path().join("cut.avi");
    write_video(&input, "MJPG", 12, 10.0);
    let bytes = std::fs::read(&input).unwrap();
    std::fs::write(&input, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    segnet_video(&m, &input, &out)
        .assert()
        .success()
        .stderr(contains("warning:").and(contains("truncated")));
    let n = probe(&out.join("overlay.mp4")).frames;
    assert!((1..12).contains(&n), "{n} frames kept");
    assert_eq!(
        frame_indices(&out.join("frames.csv")),
        (0..n).collect::<Vec<_>>()
    );
    assert_eq!(summary(&out)["status"], "truncated");
}

#[test]
fn truncated_mp4_and_empty_video_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    // An mp4 keeps its index at the end: half a file cannot be opened at all.
    let cut = tmp.path().join("cut.mp4");
    write_video(&cut, "mp4v", 12, 10.0);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    fails_with(&mut segnet_video(&m, &cut, &out), "cut.mp4");
    assert!(!out.join("overlay.mp4").exists());

    let empty = tmp.path().join("empty.avi");
    write_video(&empty, "MJPG", 0, 10.0);
    let line = fails_with(&mut segnet_video(&m, &empty, &out), "empty.avi");
    assert!(line.contains("no frames"), "{line}");
}

#[test]
fn bad_inputs_and_outputs_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let out = tmp.path().join("out");
    let missing = Path::new("no/such.mp4");
    fails_with(&mut segnet_video(&m, missing, &out), "does not exist");

    let notes = tmp.path().join("notes.mp4");
    std::fs::write(&notes, "not a video at all").unwrap();
    fails_with(&mut segnet_video(&m, &notes, &out), "notes.mp4");
    let txt = tmp.path().join("notes.txt");
    std::fs::write(&txt, "not a video at all").unwrap();
    fails_with(&mut segnet_video(&m, &txt, &out), "not a video");

    let frames = tmp.path().join("frames");
    write_frames(&frames, 3);
    fails_with(
        &mut segnet_video(&m, &frames, &notes.join("out")),
        "output folder",
    );
    fails_with(
        segnet_video(&m, &frames, &out).args(["--every", "0"]),
        "--every",
    );
    // One pass without dropout cannot be two MC samples.
    fails_with(
        segnet_video(&m, &frames, &out).arg("--no-dropout"),
        "--no-dropout",
    );
}

#[test]
fn frames_of_mixed_sizes_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let frames = tmp.path().join("frames");
    write_frames(&frames, 4);
    frame(9, 80, 60).save(frames.join("frame3.png")).unwrap();
    let out = tmp.path().join("out");
    let line = fails_with(&mut segnet_video(&m, &frames, &out), "differ in size");
    assert!(
        line.contains("frame3.png") && line.contains("80x60"),
        "{line}"
    );
    assert!(!out.join("frames.csv").exists());
}

#[test]
fn killed_folder_run_resumes_to_the_same_csv_as_an_uninterrupted_run() {
    const FRAMES: usize = 24;
    let f = FolderRun::new(FRAMES);
    let out = f.tmp.path().join("out");
    // Per-frame sampling: a resumed temporal run restarts its state (tested below).
    let run = || {
        let mut cmd = f.cmd(&out);
        cmd.arg("--no-temporal");
        cmd
    };
    let mut child = start_until_rows(&mut run(), &out, 4);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
    assert!(
        !out.join("overlay.mp4").exists(),
        "no final video from a killed run"
    );
    assert!(!out.join("frames.csv").exists());
    let kept = frame_indices(&out.join("frames.partial.csv"));
    assert!((4..FRAMES).contains(&kept.len()), "{} rows", kept.len());

    // Different settings must not be mixed into the same outputs.
    let line = fails_with(run().args(["--every", "2"]), "--restart");
    assert!(line.contains("every"), "{line}");

    let err = succeeds(&mut run());
    assert!(err.contains("resuming"), "{err}");
    let s = summary(&out);
    assert_eq!(s["frames"], FRAMES);
    assert_eq!(
        s["computed"],
        FRAMES - kept.len(),
        "kept rows are not recomputed"
    );
    assert_eq!(probe(&out.join("overlay.mp4")).frames, FRAMES);
    assert!(!out.join("frames.partial.csv").exists());
    assert!(!out.join("overlay.partial.mp4").exists());

    // Seeded sampling per frame: the resumed CSV is the one a run without the kill writes.
    let whole = f.tmp.path().join("whole");
    segnet_video(&f.model, &f.frames, &whole)
        .arg("--no-temporal")
        .assert()
        .success();
    let csv = |dir: &Path| std::fs::read(dir.join("frames.csv")).unwrap();
    assert_eq!(
        frame_indices(&out.join("frames.csv")),
        (0..FRAMES).collect::<Vec<_>>()
    );
    assert!(
        csv(&out) == csv(&whole),
        "resumed and uninterrupted CSVs differ"
    );
}

#[test]
fn ctrl_c_closes_the_video_and_the_run_resumes() {
    const FRAMES: usize = 24;
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let input = tmp.path().join("drive.mp4");
    write_video(&input, "mp4v", FRAMES as u32, 10.0);
    let out = tmp.path().join("out");
    let run = || {
        let mut cmd = segnet_video(&m, &input, &out);
        cmd.args(["--batch", "2", "--no-temporal"]);
        cmd
    };
    let child = start_until_rows(&mut run(), &out, 4);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // 130 comes only from the Ctrl-C path: a run that had finished would exit 0.
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("error: interrupted"), "{err}");
    // The partial video was closed properly: it plays, under a name that says partial.
    let n = probe(&out.join("overlay.partial.mp4")).frames;
    assert!((4..FRAMES).contains(&n), "{n}");
    assert_eq!(
        frame_indices(&out.join("frames.partial.csv")),
        (0..n).collect::<Vec<_>>()
    );
    assert!(!out.join("overlay.mp4").exists());
    assert_eq!(summary(&out)["status"], "interrupted");

    assert!(succeeds(&mut run()).contains("resuming"));
    assert_eq!(probe(&out.join("overlay.mp4")).frames, FRAMES);
    assert_eq!(summary(&out)["computed"], FRAMES - n);
    let whole = tmp.path().join("whole");
    segnet_video(&m, &input, &whole)
        .arg("--no-temporal")
        .assert()
        .success();
    let csv = |dir: &Path| std::fs::read(dir.join("frames.csv")).unwrap();
    assert!(
        csv(&out) == csv(&whole),
        "resumed and uninterrupted CSVs differ"
    );
}

#[test]
fn max_frames_run_then_full_run_reuses_the_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let frames = tmp.path().join("frames");
    write_frames(&frames, 12);
    let out = tmp.path().join("out");
    let run = || {
        let mut cmd = segnet_video(&m, &frames, &out);
        cmd.arg("--frames");
        cmd
    };
    run().args(["--max-frames", "4"]).assert().success();
    assert_eq!(frame_indices(&out.join("frames.csv")), [0, 1, 2, 3]);
    // Natural order: frame1, frame2, ..., not frame1, frame10, frame11, frame12.
    let classes = image::open(out.join("frames/frame4_classes.png")).unwrap();
    assert_eq!(classes.width(), W);

    run()
        .assert()
        .success()
        .stderr(contains("resuming: 4 frames"));
    assert_eq!(csv_rows(&out.join("frames.csv")).1.len(), 12);
    assert_eq!(summary(&out)["computed"], 8);
    assert_eq!(std::fs::read_dir(out.join("frames")).unwrap().count(), 36);
    assert_eq!(probe(&out.join("overlay.mp4")).frames, 12);

    // A shorter run afterwards keeps only its own frames.
    run().args(["--max-frames", "4"]).assert().success();
    assert_eq!(
        summary(&out)["computed"],
        0,
        "all four redrawn from the records"
    );
    assert_eq!(csv_rows(&out.join("frames.csv")).1.len(), 4);
    assert_eq!(probe(&out.join("overlay.mp4")).frames, 4);
}

#[test]
fn a_resumed_temporal_run_restarts_its_state_after_the_frames_done_earlier() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let frames = tmp.path().join("frames");
    write_frames(&frames, 8);
    let out = tmp.path().join("out");
    let run = || {
        let mut cmd = segnet_video(&m, &frames, &out);
        cmd.args(["--every", "2", "--maps", "--frames"]);
        cmd
    };
    run().args(["--max-frames", "2"]).assert().success();
    run()
        .assert()
        .success()
        .stderr(contains("resuming: 2 frames"));
    let csv = out.join("frames.csv");
    assert_eq!(frame_indices(&csv), [0, 2, 4, 6]);
    // With --every 2 the state carries from frame to selected frame; frame 4 follows frames
    // done by the first run, which left no state behind.
    assert_eq!(csv_column(&csv, "reset"), ["first", "", "gap", ""]);
    assert_eq!(csv_column(&csv, "samples"), ["2", "1", "2", "1"]);
    assert_eq!(summary(&out)["resets"], 1, "this run's own resets");
    // --maps: the raw maps of every frame, whichever run computed it.
    for stem in ["frame1", "frame3", "frame5", "frame7"] {
        let maps = Tensor::read_npz(out.join("maps").join(format!("{stem}.npz"))).unwrap();
        let names: Vec<&str> = maps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["classes", "variance", "entropy", "mutual-info"]);
        assert_eq!(maps[1].1.size(), [H as i64, W as i64]);
    }
}

#[test]
fn several_inputs_get_one_subfolder_each() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_frames(&a, 3);
    write_frames(&b, 2);
    let out = tmp.path().join("out");
    // A threshold below every value puts every pixel above it.
    segnet_video(&m, &a, &out)
        .arg(&b)
        .arg("--threshold=-1")
        .assert()
        .success();
    let (_, rows) = csv_rows(&out.join("a/frames.csv"));
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r[16] == 1.0), "{rows:?}");
    assert_eq!(csv_rows(&out.join("b/frames.csv")).1.len(), 2);
    assert_eq!(probe(&out.join("b/overlay.mp4")).frames, 2);
}

/// Starts a run on `FRAMES` frames that stops itself (SIGSTOP) once it has written 2 rows, so
/// the test can act while the run holds its output folder mid-way.
fn start_paused(cmd: &mut Command, out: &Path) -> (Child, Pid) {
    let child = start_until_rows(cmd, out, 2);
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    (child, pid)
}

#[test]
fn a_second_run_on_a_busy_output_folder_is_refused_naming_the_first() {
    const FRAMES: usize = 40;
    let f = FolderRun::new(FRAMES);
    let out = f.tmp.path().join("out");
    let run = || f.cmd(&out);
    let (first, pid) = start_paused(&mut run(), &out);
    let line = fails_with(&mut run(), "in use by another segnet-video run");
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(
        line.contains(&format!("PID {} on host", first.id())),
        "{line}"
    );
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The first run's outputs are whole: every frame in the CSV and the video.
    let s = summary(&out);
    assert_eq!(
        (s["status"].as_str(), s["frames"].as_u64()),
        (Some("finished"), Some(FRAMES as u64))
    );
    assert_eq!(
        frame_indices(&out.join("frames.csv")),
        (0..FRAMES).collect::<Vec<_>>()
    );
    assert_eq!(probe(&out.join("overlay.mp4")).frames, FRAMES);
    // The lock went with the first run.
    run().assert().success().stdout(contains("already done"));
}

#[test]
fn outputs_replaced_under_a_run_are_an_error_not_a_finished_run() {
    const FRAMES: usize = 40;
    let f = FolderRun::new(FRAMES);
    let tmp = f.tmp.path();
    for (case, lost) in [
        ("csv", "frames.partial.csv has 0 rows"),
        ("video", "overlay.partial.mp4 has 3 frames"),
    ] {
        let out = tmp.join(case);
        let run = || {
            let mut cmd = f.cmd(&out);
            cmd.args(["--codec", "mp4v"]);
            cmd
        };
        let (child, pid) = start_paused(&mut run(), &out);
        // What an unlocked second run did: replace a partial output by name, while this run
        // goes on writing the file it has open.
        let (replacement, partial) = if case == "csv" {
            let csv = out.join("frames.partial.csv");
            let header = std::fs::read_to_string(&csv).unwrap();
            let header = header.lines().next().unwrap().to_string();
            std::fs::write(tmp.join("replacement.csv"), header + "\n").unwrap();
            (tmp.join("replacement.csv"), csv)
        } else {
            write_video(&tmp.join("replacement.mp4"), "mp4v", 3, 10.0);
            (tmp.join("replacement.mp4"), out.join("overlay.partial.mp4"))
        };
        std::fs::rename(replacement, &partial).unwrap();
        kill(pid, Signal::SIGCONT).unwrap();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{case}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert!(
            errors.len() == 1 && errors[0].contains(lost),
            "{case}: {err}"
        );
        assert_ne!(summary(&out)["status"], "finished", "{case}");
        assert!(!out.join("overlay.mp4").exists(), "{case}: no final video");

        // The same command again redoes what was lost.
        run().assert().success();
        assert_eq!(summary(&out)["status"], "finished", "{case}");
        assert_eq!(
            frame_indices(&out.join("frames.csv")),
            (0..FRAMES).collect::<Vec<_>>()
        );
        assert_eq!(probe(&out.join("overlay.mp4")).frames, FRAMES, "{case}");
    }
}

#[test]
fn shards_merge_into_the_tables_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let inputs = tmp.path().join("inputs");
    write_frames(&inputs.join("a"), 3);
    write_frames(&inputs.join("b"), 2);
    write_frames(&inputs.join("c/b"), 2);
    write_video(&inputs.join("drive.mp4"), "mp4v", 4, 10.0);
    // Items in order a, b, c/b, drive: shard 0 takes a and drive.
    let run = |out: &str, shard: &str| {
        let mut cmd = segnet_video(&m, &inputs.join("drive.mp4"), &tmp.path().join(out));
        for f in ["c/b", "b", "a"] {
            cmd.arg(inputs.join(f));
        }
        cmd.args(["--shard", shard]);
        succeeds(&mut cmd)
    };
    run("one", "0/1");
    let log = run("three", "0/3");
    assert!(
        log.contains("shard 0/3 (from --shard): 2 of 4 items"),
        "{log}"
    );
    run("three", "1/3");
    let (one, three) = (tmp.path().join("one"), tmp.path().join("three"));
    let partial = segnet_bayes::merge::merge(&three).unwrap();
    let missing: Vec<&str> = partial.missing.iter().map(|u| u.item.as_str()).collect();
    assert_eq!((partial.complete, missing), (false, vec!["c/b"]));
    run("three", "2/3");
    let merged = segnet_bayes::merge::merge(&three).unwrap();
    assert!(merged.complete && segnet_bayes::merge::merge(&one).unwrap().complete);
    for item in ["a", "b", "c/b", "drive"] {
        let csv = |dir: &Path| std::fs::read(dir.join(item).join("frames.csv")).unwrap();
        assert_eq!(csv(&one), csv(&three), "{item}");
    }
    let table = |dir: &Path| std::fs::read_to_string(dir.join("segnet-run/merged.csv")).unwrap();
    assert_eq!(table(&one), table(&three));
    let items: Vec<String> = table(&three)
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let expected = [("a", 3), ("b", 2), ("c/b", 2), ("drive", 4)]
        .iter()
        .flat_map(|(n, k)| std::iter::repeat_n(n.to_string(), *k))
        .collect::<Vec<_>>();
    assert_eq!(items, expected);
}
