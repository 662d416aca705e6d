//! Drives the segnet-video binary over tiny videos and frame folders made here: a random
//! SegNet-Basic at 1/8 width on 48x64 input, two MC samples, so every run takes about a second.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};
use opencv::core::{Mat, Size, Vec3b};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture, VideoWriter};
use segnet_bayes::config::{Arch, ModelConfig};
use segnet_bayes::model::{checkpoint, SegNet};
use tch::{nn, Device};

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

fn write_video(path: &Path, codec: &str, frames: u32, fps: f64) {
    let c: Vec<char> = codec.chars().collect();
    let fourcc = VideoWriter::fourcc(c[0], c[1], c[2], c[3]).unwrap();
    let size = Size::new(W as i32, H as i32);
    let mut writer = VideoWriter::new_with_backend(
        path.to_str().unwrap(),
        videoio::CAP_FFMPEG,
        fourcc,
        fps,
        size,
        true,
    )
    .unwrap();
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

/// Frames, width, height and frame rate of a video, by decoding it.
fn probe(path: &Path) -> (usize, u32, u32, f64) {
    let mut cap = VideoCapture::from_file(path.to_str().unwrap(), videoio::CAP_FFMPEG).unwrap();
    assert!(cap.is_opened().unwrap(), "cannot open {}", path.display());
    let fps = cap.get(videoio::CAP_PROP_FPS).unwrap();
    let mut mat = Mat::default();
    let (mut n, mut size) = (0, (0, 0));
    while cap.read(&mut mat).unwrap() && !mat.empty() {
        n += 1;
        size = (mat.cols() as u32, mat.rows() as u32);
    }
    (n, size.0, size.1, fps)
}

fn segnet_video(model: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segnet-video"));
    cmd.args(["--model", model.to_str().unwrap()])
        .args([
            "--samples",
            "2",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--seed",
            "1",
        ])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_ok(o: &Output) {
    let (out, err) = text(o);
    assert!(o.status.success(), "failed: {:?}\n{out}\n{err}", o.status);
}

/// Fails with exactly one `error: ...` line mentioning `needle`, and no panic.
fn assert_error(o: &Output, needle: &str) -> String {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    errors[0].to_string()
}

/// CSV rows by frame index; panics on a duplicate.
fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|f| f.parse().unwrap()).collect())
        .collect();
    let mut seen: Vec<usize> = rows.iter().map(|r| r[0] as usize).collect();
    let n = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), n, "duplicate rows in {}", path.display());
    (header, rows)
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn video_becomes_an_overlay_video_a_csv_row_per_frame_and_a_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let input = tmp.path().join("drive.mp4");
    write_video(&input, "mp4v", 12, 10.0);
    let out = tmp.path().join("out");
    let o = segnet_video(
        &m,
        &[input.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    assert_ok(&o);
    let (stdout, _) = text(&o);
    assert!(
        stdout.contains("12 frames") && stdout.contains("network idle"),
        "{stdout}"
    );

    let (n, w, h, fps) = probe(&out.join("overlay.mp4"));
    let s = summary(&out);
    assert_eq!(n, 12);
    assert_eq!(
        (w as u64, h as u64),
        (
            s["video_width"].as_u64().unwrap(),
            s["video_height"].as_u64().unwrap()
        )
    );
    assert!(w > 3 * W && h >= H, "side by side: {w}x{h}");
    assert!((fps - 10.0).abs() < 0.01, "{fps}");
    assert_eq!(s["status"], "finished");
    assert!(!out.join("overlay.partial.mp4").exists());

    let (header, rows) = csv_rows(&out.join("frames.csv"));
    assert_eq!(
        &header[..5],
        [
            "frame",
            "time_s",
            "mean_variance",
            "mean_entropy",
            "mean_mutual-info"
        ]
    );
    assert_eq!(header.last().unwrap(), "share_above_threshold");
    assert_eq!(header.len(), 5 + 11 + 1);
    assert_eq!(rows.len(), 12);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0] as usize, i);
        assert!((r[1] - i as f64 / 10.0).abs() < 1e-3);
        assert!(r[2] > 0.0, "MC dropout gives some variance");
        let shares: f64 = r[5..16].iter().sum();
        assert!((shares - 1.0).abs() < 1e-4, "class shares sum to {shares}");
        assert!((0.0..=1.0).contains(&r[16]));
    }
    let plot = image::open(out.join("uncertainty.png")).unwrap();
    assert!(plot.width() > 300);
    // Without --frames the per-frame records are gone once the run finishes.
    assert!(!out.join(".segnet-video/records").exists());
    assert!(!out.join("frames").exists());

    // The same command again has nothing to do.
    let again = segnet_video(
        &m,
        &[input.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    assert_ok(&again);
    assert!(
        text(&again).0.contains("already done"),
        "{}",
        text(&again).0
    );
}

#[test]
fn stacked_lossless_video_shows_the_input_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let input = tmp.path().join("clip.avi");
    write_video(&input, "FFV1", 6, 5.0);
    let out = tmp.path().join("out");
    let o = segnet_video(
        &m,
        &[
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--layout",
            "stack",
            "--codec",
            "ffv1",
            "--every",
            "2",
            "--frames",
        ],
        &[],
    );
    assert_ok(&o);
    let video = out.join("overlay.avi");
    let (n, w, h, fps) = probe(&video);
    assert_eq!(n, 3, "frames 0, 2, 4");
    assert!(h >= 3 * H && w > W, "stacked: {w}x{h}");
    assert!(
        (fps - 2.5).abs() < 0.01,
        "every 2nd frame of 5 fps plays at 2.5: {fps}"
    );
    // Lossless both ways: the input panel of the first frame is the source frame.
    let mut cap = VideoCapture::from_file(video.to_str().unwrap(), videoio::CAP_FFMPEG).unwrap();
    let mut mat = Mat::default();
    assert!(cap.read(&mut mat).unwrap());
    let mut src = VideoCapture::from_file(input.to_str().unwrap(), videoio::CAP_FFMPEG).unwrap();
    let mut first = Mat::default();
    assert!(src.read(&mut first).unwrap());
    for (x, y) in [(0, 0), (30, 20), (63, 47)] {
        assert_eq!(
            mat.at_2d::<Vec3b>(y, x).unwrap(),
            first.at_2d::<Vec3b>(y, x).unwrap()
        );
    }
    let (_, rows) = csv_rows(&out.join("frames.csv"));
    assert_eq!(
        rows.iter().map(|r| r[0] as usize).collect::<Vec<_>>(),
        [0, 2, 4]
    );
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
    let o = segnet_video(
        &m,
        &[input.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    assert_ok(&o);
    let (_, err) = text(&o);
    assert!(
        err.contains("warning:") && err.contains("truncated"),
        "{err}"
    );
    let (n, _, _, _) = probe(&out.join("overlay.mp4"));
    let (_, rows) = csv_rows(&out.join("frames.csv"));
    assert!((1..12).contains(&n), "{n} frames kept");
    assert_eq!(rows.len(), n);
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
    let o = segnet_video(
        &m,
        &[cut.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    assert_error(&o, "cut.mp4");
    assert!(!out.join("overlay.mp4").exists());

    let empty = tmp.path().join("empty.avi");
    write_video(&empty, "MJPG", 0, 10.0);
    let o = segnet_video(
        &m,
        &[empty.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    let line = assert_error(&o, "empty.avi");
    assert!(
        line.contains("no frames") || line.contains("empty"),
        "{line}"
    );
}

#[test]
fn bad_inputs_and_outputs_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let out = tmp.path().join("out");
    let o = segnet_video(&m, &["no/such.mp4", "-o", out.to_str().unwrap()], &[]);
    assert_error(&o, "does not exist");

    let notes = tmp.path().join("notes.mp4");
    std::fs::write(&notes, "not a video at all").unwrap();
    let o = segnet_video(
        &m,
        &[notes.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    assert_error(&o, "notes.mp4");
    let txt = tmp.path().join("notes.txt");
    std::fs::write(&txt, "not a video at all").unwrap();
    let o = segnet_video(
        &m,
        &[txt.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    assert_error(&o, "not a video");

    let frames = tmp.path().join("frames");
    write_frames(&frames, 3);
    let blocked = notes.join("out");
    let o = segnet_video(
        &m,
        &[frames.to_str().unwrap(), "-o", blocked.to_str().unwrap()],
        &[],
    );
    assert_error(&o, "output folder");

    let o = segnet_video(&m, &[frames.to_str().unwrap(), "--every", "0"], &[]);
    assert_error(&o, "--every");
}

#[test]
fn frames_of_mixed_sizes_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let frames = tmp.path().join("frames");
    write_frames(&frames, 4);
    frame(9, 80, 60).save(frames.join("frame3.png")).unwrap();
    let out = tmp.path().join("out");
    let o = segnet_video(
        &m,
        &[frames.to_str().unwrap(), "-o", out.to_str().unwrap()],
        &[],
    );
    let line = assert_error(&o, "differ in size");
    assert!(
        line.contains("frame3.png") && line.contains("80x60"),
        "{line}"
    );
    assert!(!out.join("frames.csv").exists());
}

#[test]
fn killed_folder_run_resumes_without_duplicate_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let frames = tmp.path().join("frames");
    write_frames(&frames, 12);
    let out = tmp.path().join("out");
    let args = [
        frames.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--batch",
        "2",
    ];
    // Like SIGKILL after 5 frames: no clean-up at all.
    let o = segnet_video(&m, &args, &[("SEGNET_VIDEO_TEST_KILL", "5")]);
    assert!(!o.status.success());
    assert!(
        !out.join("overlay.mp4").exists(),
        "no final video from a killed run"
    );
    assert!(!out.join("frames.csv").exists());
    let partial = std::fs::read_to_string(out.join("frames.partial.csv")).unwrap();
    assert!(partial.lines().count() > 1, "{partial}");

    // Different settings must not be mixed into the same outputs.
    let mut other = args.to_vec();
    other.extend(["--every", "2"]);
    let o = segnet_video(&m, &other, &[]);
    let line = assert_error(&o, "--restart");
    assert!(line.contains("every"), "{line}");

    let o = segnet_video(&m, &args, &[]);
    assert_ok(&o);
    let (_, err) = text(&o);
    assert!(err.contains("resuming"), "{err}");
    let (_, rows) = csv_rows(&out.join("frames.csv"));
    assert_eq!(
        rows.iter().map(|r| r[0] as usize).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
    let s = summary(&out);
    assert_eq!(s["frames"], 12);
    assert!(s["computed"].as_u64().unwrap() < 12, "{s}");
    assert_eq!(probe(&out.join("overlay.mp4")).0, 12);
    assert!(!out.join("frames.partial.csv").exists());
    assert!(!out.join("overlay.partial.mp4").exists());
}

#[test]
fn ctrl_c_closes_the_video_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let input = tmp.path().join("drive.mp4");
    write_video(&input, "mp4v", 12, 10.0);
    let out = tmp.path().join("out");
    let args = [
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--batch",
        "2",
    ];
    let o = segnet_video(&m, &args, &[("SEGNET_VIDEO_TEST_STOP", "3")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("error: interrupted"), "{err}");
    // The partial video was closed properly: it plays, under a name that says partial.
    let (n, _, _, _) = probe(&out.join("overlay.partial.mp4"));
    assert!((3..12).contains(&n), "{n}");
    assert!(!out.join("overlay.mp4").exists());

    let o = segnet_video(&m, &args, &[]);
    assert_ok(&o);
    assert!(text(&o).1.contains("resuming"));
    assert_eq!(probe(&out.join("overlay.mp4")).0, 12);
    let (_, rows) = csv_rows(&out.join("frames.csv"));
    assert_eq!(rows.len(), 12);
}

#[test]
fn max_frames_run_then_full_run_reuses_the_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let frames = tmp.path().join("frames");
    write_frames(&frames, 12);
    let out = tmp.path().join("out");
    let args = [
        frames.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--frames",
    ];
    let mut first = args.to_vec();
    first.extend(["--max-frames", "4"]);
    assert_ok(&segnet_video(&m, &first, &[]));
    let (_, rows) = csv_rows(&out.join("frames.csv"));
    assert_eq!(rows.len(), 4);
    // Natural order: frame1, frame2, ..., not frame1, frame10, frame11, frame12.
    let classes = image::open(out.join("frames/frame4_classes.png")).unwrap();
    assert_eq!(classes.width(), W);

    let o = segnet_video(&m, &args, &[]);
    assert_ok(&o);
    assert!(text(&o).1.contains("resuming: 4 frames"), "{}", text(&o).1);
    let (_, rows) = csv_rows(&out.join("frames.csv"));
    assert_eq!(rows.len(), 12);
    assert_eq!(summary(&out)["computed"], 8);
    assert_eq!(std::fs::read_dir(out.join("frames")).unwrap().count(), 36);
    assert_eq!(probe(&out.join("overlay.mp4")).0, 12);

    // A shorter run afterwards keeps only its own frames.
    let o = segnet_video(&m, &first, &[]);
    assert_ok(&o);
    assert_eq!(
        summary(&out)["computed"],
        0,
        "all four redrawn from the records"
    );
    assert_eq!(csv_rows(&out.join("frames.csv")).1.len(), 4);
    assert_eq!(probe(&out.join("overlay.mp4")).0, 4);
}

#[test]
fn several_inputs_get_one_subfolder_each() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_frames(&a, 3);
    write_frames(&b, 2);
    let out = tmp.path().join("out");
    let o = segnet_video(
        &m,
        &[
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_ok(&o);
    assert_eq!(csv_rows(&out.join("a/frames.csv")).1.len(), 3);
    assert_eq!(csv_rows(&out.join("b/frames.csv")).1.len(), 2);
    assert_eq!(probe(&out.join("b/overlay.mp4")).0, 2);
}
