//! End-to-end tests through the real binary: infer writes its files, every bad input ends in a
//! one-line error, train + eval learn a tiny synthetic road scene, a diverging run leaves its last
//! good checkpoint untouched, and a run killed with SIGKILL resumes to bit-identical weights.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use assert_cmd::Command;
use image::{GrayImage, Luma, Rgb, RgbImage};
use predicates::prelude::*;
use serde_json::Value;
use tch::Tensor;

/// A temporary folder that the binary runs in, so arguments name files by their short names.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// The binary in this folder with space-separated `args`, on one libtorch thread: runs
    /// replay exactly, and tests running in parallel share the cores.
    fn segnet(&self, args: &str) -> Command {
        let mut c = cargo_bin_cmd!("segnet-bayes");
        c.current_dir(self.0.path())
            .env("SEGNET_THREADS", "1")
            .args(args.split_whitespace());
        c
    }

    /// Runs `args`, expecting the failure a user should see: exit code 1 (a panic exits 101),
    /// one `error: ` line per failure, one of them naming `what` (the file, flag or key to fix),
    /// and an `error: ` line last.
    fn fails_naming(&self, args: &str, what: &str) {
        let what = what.to_owned();
        let error_names_it = predicate::function(move |err: &str| {
            let mut errors = err.lines().filter(|l| l.starts_with("error: "));
            errors.any(|l| l.contains(&what))
                && err.lines().last().is_some_and(|l| l.starts_with("error: "))
        });
        let no_panic = predicate::str::contains("panicked").not();
        self.segnet(args)
            .assert()
            .code(1)
            .stderr(no_panic.and(error_names_it));
    }
}

/// Sky (class 0) above, road (3) below and a car (8): colours a tiny network separates.
fn road_scene(w: u32, h: u32, seed: u32) -> (RgbImage, GrayImage) {
    let mut img = RgbImage::new(w, h);
    let mut lab = GrayImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let noise = ((x * 7 + y * 13 + seed * 31) % 17) as u8;
            let (c, class) = if y < h / 2 {
                ([120 + noise, 130, 150], 0)
            } else if x > w / 3 && x < w / 2 && y < 3 * h / 4 {
                ([60, 20 + noise, 110], 8)
            } else {
                ([110, 60 + noise, 110], 3)
            };
            img.put_pixel(x, y, Rgb(c));
            lab.put_pixel(x, y, Luma([class]));
        }
    }
    // A void corner, ignored by loss and metrics.
    lab.put_pixel(0, 0, Luma([11]));
    (img, lab)
}

/// `data/`: a CamVid-layout dataset of `n` road scenes per split, val unlike train.
fn synthetic_dataset(d: &Scratch, n: u32) {
    for (split, first) in [("train", 0), ("val", 100)] {
        let annot = format!("{split}annot");
        std::fs::create_dir_all(d.path("data").join(split)).unwrap();
        std::fs::create_dir_all(d.path("data").join(&annot)).unwrap();
        for i in first..first + n {
            let (img, lab) = road_scene(64, 48, i);
            let name = format!("f{i:03}.png");
            img.save(d.path("data").join(split).join(&name)).unwrap();
            lab.save(d.path("data").join(&annot).join(&name)).unwrap();
        }
    }
}

/// `ARCH.safetensors`: a tiny random model saved by the binary itself.
fn tiny_model(d: &Scratch, arch: &str) -> String {
    let name = format!("{arch}.safetensors");
    d.segnet(&format!(
        "init-model --arch {arch} --width 0.125 --input-size 48x64 --out {name}"
    ))
    .assert()
    .success();
    name
}

/// The shipped config's optimiser and schedule, at a rate for tiny networks.
const ADAMW_POLY: &str =
    "  optimizer: adamw\n  lr: 0.01\n  weight_decay: 0.0001\n  schedule: poly\n  warmup_steps: 2\n";

/// `tiny.yaml`: a tiny network on `data/`, batches of 2, with the `train:` lines given.
fn tiny_config(d: &Scratch, train: &str) {
    let cfg = format!(
        "model:\n  arch: basic\n  width: 0.125\n  input_size: [48, 64]\n\
         data:\n  root: data\n  class_weights: none\n\
         train:\n  batch_size: 2\n  prefetch: 2\n{train}"
    );
    std::fs::write(d.path("tiny.yaml"), cfg).unwrap();
}

fn train_args(out: &str) -> String {
    format!("train --config tiny.yaml --out {out} --device cpu")
}

/// Every tensor of a .safetensors file, by name.
fn tensors(path: &Path) -> HashMap<String, Tensor> {
    let named = Tensor::read_safetensors(path).unwrap();
    named.into_iter().collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn log_lines(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The JSON header of a .safetensors file; `None` while the file is not there.
fn safetensors_header(path: &Path) -> Option<(Value, Vec<u8>)> {
    let bytes = std::fs::read(path).ok()?;
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    Some((header, bytes[8 + n..].to_vec()))
}

#[test]
fn help_lists_the_subcommands() {
    let help = Scratch::new().segnet("--help").assert().success();
    let help = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    for cmd in "infer train eval bench init-model recalibrate".split(' ') {
        assert!(help.contains(cmd), "{cmd} missing from --help: {help}");
    }
}

#[test]
fn infer_writes_class_map_overlay_heatmaps_and_summary() {
    let d = Scratch::new();
    let model = tiny_model(&d, "segnet");
    road_scene(70, 45, 1).0.save(d.path("scene.png")).unwrap();
    let stdout = predicate::str::contains("scene.png").and(predicate::str::contains("T=3"));
    d.segnet(&format!(
        "infer scene.png --model {model} --samples 3 --seed 1 --out out"
    ))
    .assert()
    .success()
    .stdout(stdout);
    let written = "classes colour overlay variance entropy mutual-info \
                   variance_overlay entropy_overlay mutual-info_overlay";
    for f in written.split(' ') {
        assert!(d.path(&format!("out/scene_{f}.png")).is_file(), "no {f}");
    }
    // Outputs have the input's size although the network ran at 48x64.
    let classes = image::open(d.path("out/scene_classes.png")).unwrap();
    assert_eq!((classes.width(), classes.height()), (70, 45));
    assert_eq!(json(&d.path("out/scene.json"))["samples"], 3);
}

#[test]
fn adaptive_infer_that_stopped_after_n_samples_writes_what_a_fixed_run_of_n_writes() {
    let d = Scratch::new();
    let model = tiny_model(&d, "segnet");
    road_scene(64, 48, 3).0.save(d.path("scene.png")).unwrap();
    let run = |flags: &str, out: &str| {
        d.segnet(&format!(
            "infer scene.png --model {model} --seed 7 --out {out} {flags}"
        ))
        .assert()
        .success();
        json(&d.path(&format!("{out}/scene.json")))
    };
    let adaptive = run(
        "--samples 40 --settle-step 2 --settle-classes 0.5 --settle-uncertainty 0.5",
        "a",
    );
    let n = adaptive["samples"].as_u64().unwrap();
    assert!((4..40).contains(&n), "stopped after {n}");
    assert_eq!(adaptive["adaptive"], true);
    let fixed = run(&format!("--samples {n} --no-adaptive"), "f");
    assert_eq!(fixed["samples"], n);
    assert_eq!(fixed["adaptive"], false);
    for f in ["classes", "variance", "entropy", "mutual-info"] {
        let read = |dir: &str| std::fs::read(d.path(&format!("{dir}/scene_{f}.png"))).unwrap();
        assert!(read("a") == read("f"), "{f} differs");
    }
    // Without adaptive stopping, exactly --samples, even where the estimate settles early.
    let all = run(
        "--samples 9 --no-adaptive --settle-classes 1 --settle-uncertainty 1",
        "n",
    );
    assert_eq!(all["samples"], 9);
}

#[test]
fn infer_accepts_grey_rgba_16_bit_and_jpeg() {
    let d = Scratch::new();
    let model = tiny_model(&d, "basic");
    let rgb = image::DynamicImage::ImageRgb8(road_scene(40, 36, 2).0);
    std::fs::create_dir(d.path("in")).unwrap();
    rgb.to_luma8().save(d.path("in/grey.png")).unwrap();
    rgb.to_rgba8().save(d.path("in/rgba.png")).unwrap();
    rgb.to_rgb16().save(d.path("in/deep.png")).unwrap();
    rgb.to_rgb8().save(d.path("in/photo.jpg")).unwrap();
    d.segnet(&format!("infer in --model {model} --samples 2 --out out"))
        .assert()
        .success();
    for stem in ["grey", "rgba", "deep", "photo"] {
        let overlay = format!("out/{stem}_overlay.png");
        assert!(d.path(&overlay).is_file(), "no {overlay}");
    }
}

/// Copies a checkpoint with its header's model config claiming `arch`, the tensors unchanged.
fn relabel_arch(from: &Path, to: &Path, arch: &str) {
    let (mut header, data) = safetensors_header(from).unwrap();
    let meta = &mut header["__metadata__"]["segnet_bayes.model"];
    let mut model: Value = serde_json::from_str(meta.as_str().unwrap()).unwrap();
    model["arch"] = arch.into();
    *meta = model.to_string().into();
    // Tensor offsets count from the header's end; spaces keep the data 8-byte aligned.
    let mut header = serde_json::to_vec(&header).unwrap();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(data);
    std::fs::write(to, out).unwrap();
}

#[test]
fn bad_inputs_end_in_one_line_errors() {
    let d = Scratch::new();
    let model = tiny_model(&d, "basic");
    road_scene(40, 40, 3).0.save(d.path("good.png")).unwrap();
    let png = std::fs::read(d.path("good.png")).unwrap();
    std::fs::write(d.path("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(d.path("notes.png"), "not an image").unwrap();
    RgbImage::new(20, 40).save(d.path("small.png")).unwrap();
    // A Basic network's tensors under a header that says SegNet.
    relabel_arch(&d.path(&model), &d.path("forged.safetensors"), "segnet");
    // A file stands where the output folder's parent should be.
    std::fs::write(d.path("blocker"), "").unwrap();

    let mut cases = vec![
        ("missing.png", "missing.png"),
        ("truncated.png", "truncated.png"),
        ("notes.png", "notes.png"),
        ("small.png", "32x32"),
        ("good.png --samples 0", "--samples"),
        ("good.png --settle-step 0", "--settle-step"),
        ("good.png --settle-uncertainty nan", "--settle-uncertainty"),
        ("good.png --device tpu", "--device"),
        ("good.png --out blocker/sub", "output folder"),
    ];
    if !tch::Cuda::is_available() {
        cases.push(("good.png --device cuda", "CUDA"));
    }
    for (args, what) in cases {
        d.fails_naming(&format!("infer {args} --model {model}"), what);
    }
    let forged = "does not fit a Segnet network";
    d.fails_naming("infer good.png --model forged.safetensors", forged);
    d.fails_naming("infer good.png --model good.png", "good.png");
}

#[test]
fn a_failed_image_does_not_stop_or_spoil_the_others() {
    let d = Scratch::new();
    let model = tiny_model(&d, "basic");
    road_scene(40, 40, 4).0.save(d.path("good.png")).unwrap();
    std::fs::write(d.path("bad.png"), b"\x89PNG broken").unwrap();
    let args = format!("infer bad.png good.png --model {model} --samples 2 --out out");
    d.fails_naming(&args, "1 of 2 images failed");
    assert!(d.path("out/good_overlay.png").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(d.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn config_with_an_unknown_key_or_bad_value_is_rejected_naming_it() {
    let d = Scratch::new();
    for (yaml, key) in [
        ("model:\n  arch: segnet\n  widht: 0.5\n", "widht"),
        ("model:\n  dropout: 1.5\n", "model.dropout"),
    ] {
        std::fs::write(d.path("bad.yaml"), yaml).unwrap();
        d.fails_naming("train --config bad.yaml", key);
    }
}

/// Pixel accuracy of the class maps in `maps` against the labels of `data/valannot`.
fn accuracy_of_class_maps(d: &Scratch, maps: &str) -> f64 {
    let (mut right, mut counted) = (0usize, 0usize);
    for entry in std::fs::read_dir(d.path("data/valannot")).unwrap() {
        let label = entry.unwrap().path();
        let stem = label.file_stem().unwrap().to_str().unwrap();
        let pred = d.path(maps).join(format!("{stem}_classes.png"));
        let label = image::open(&label).unwrap().to_luma8();
        let pred = image::open(pred).unwrap().to_luma8();
        for (g, p) in label.as_raw().iter().zip(pred.as_raw()) {
            if *g < 11 {
                counted += 1;
                right += usize::from(g == p);
            }
        }
    }
    right as f64 / counted as f64
}

#[test]
fn train_then_eval_on_a_tiny_synthetic_dataset() {
    let d = Scratch::new();
    synthetic_dataset(&d, 4);
    tiny_config(&d, &format!("{ADAMW_POLY}  epochs: 12\n"));
    d.segnet(&train_args("run")).assert().success();
    for f in ["config.yaml", "last.safetensors", "model.safetensors"] {
        assert!(d.path("run").join(f).is_file(), "missing {f}");
    }
    let log = log_lines(&d.path("run"));
    assert_eq!(log.len(), 12);
    let loss = |epoch: &Value| epoch["train_loss"].as_f64().unwrap();
    assert!(loss(&log[11]) < 0.5 * loss(&log[0]), "loss: {log:?}");
    // A second start without --resume refuses to overwrite the run.
    d.fails_naming(&train_args("run"), "--resume");

    // Batch-norm statistics re-estimated with dropout on: a new, loadable model whose running
    // statistics differ from the trained one's, with the same weights.
    let model = "run/model.safetensors";
    let recalibrate = "--config tiny.yaml --dropout --device cpu --out recal.safetensors";
    d.segnet(&format!("recalibrate --model {model} {recalibrate}"))
        .assert()
        .success();
    let before = tensors(&d.path(model));
    let after = tensors(&d.path("recal.safetensors"));
    let stats = "enc2.1.bn.running_var";
    assert!(!before[stats].equal(&after[stats]), "{stats} unchanged");
    assert!(before["enc2.1.conv.weight"].equal(&after["enc2.1.conv.weight"]));

    let eval = format!("--model {model} --data data --split val --device cpu --out eval");
    d.segnet(&format!("eval {eval} --samples 3"))
        .assert()
        .success();
    let report = json(&d.path("eval/report.json"));
    assert_eq!(report["images"], 4);
    // Adaptive stopping by default, and the report says how many samples the images took
    // (all 3: the first check comes after two steps of 4).
    assert_eq!(report["adaptive"], true);
    let used = &report["samples_used"];
    assert_eq!((used["min"].as_u64(), used["max"].as_u64()), (Some(3), Some(3)));
    for f in "report.md reliability.png accuracy_vs_kept.png per_class_iou.png".split(' ') {
        assert!(d.path("eval").join(f).is_file(), "missing {f}");
    }
    // eval's weight-averaging accuracy is the one recomputed from the class maps infer writes
    // with dropout off, and it is learned: the biggest class covers half of the pixels, and
    // this run measured 0.96.
    d.segnet(&format!(
        "infer data/val --model {model} --no-dropout --out maps"
    ))
    .assert()
    .success();
    let recomputed = accuracy_of_class_maps(&d, "maps");
    let reported = report["weight_averaging"]["global_accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        (reported - recomputed).abs() < 1e-9,
        "eval {reported}, maps {recomputed}"
    );
    assert!(reported > 0.85, "global accuracy {reported} after training");
}

#[test]
fn a_diverging_run_stops_naming_the_learning_rate_and_keeps_its_last_checkpoint() {
    let d = Scratch::new();
    synthetic_dataset(&d, 4);
    tiny_config(&d, &format!("{ADAMW_POLY}  epochs: 1\n"));
    d.segnet(&train_args("run")).assert().success();
    let kept = std::fs::read(d.path("run/last.safetensors")).unwrap();
    // An f32 overflows at this rate on the first step. Checkpointing every step, the weights'
    // check catches it; checkpointing rarely, the next step's loss does.
    for every in [1, 100] {
        let train = format!("  optimizer: adamw\n  lr: 1.0e+40\n  checkpoint_every: {every}\n");
        tiny_config(&d, &format!("{train}  epochs: 3\n"));
        d.fails_naming(&format!("{} --resume", train_args("run")), "train.lr");
        let last = std::fs::read(d.path("run/last.safetensors")).unwrap();
        assert!(
            last == kept,
            "checkpoint_every {every}: last checkpoint changed"
        );
        assert_eq!(log_lines(&d.path("run")).len(), 1);
    }
}

/// Training progress in a checkpoint's header (`global_step`, `epoch`, `step_in_epoch`).
fn checkpoint_progress(path: &Path) -> Option<Value> {
    let (header, _) = safetensors_header(path)?;
    serde_json::from_str(header["__metadata__"]["segnet_bayes.progress"].as_str()?).ok()
}

#[test]
fn training_killed_with_sigkill_resumes_to_bit_identical_weights() {
    let d = Scratch::new();
    synthetic_dataset(&d, 6);
    // 6 images in batches of 2: 3 steps an epoch, 30 in all, a checkpoint after each.
    tiny_config(
        &d,
        &format!("{ADAMW_POLY}  epochs: 10\n  checkpoint_every: 1\n"),
    );
    d.segnet(&train_args("straight")).assert().success();

    let mut child = std::process::Command::new(cargo_bin!("segnet-bayes"))
        .current_dir(d.path(""))
        .env("SEGNET_THREADS", "1")
        .args(train_args("killed").split(' '))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill mid-epoch, once step 7 (epoch 3's first) is checkpointed.
    let last = d.path("killed/last.safetensors");
    let step = |p: &Value| p["global_step"].as_u64().unwrap();
    let start = Instant::now();
    while checkpoint_progress(&last).is_none_or(|p| step(&p) < 7) {
        assert!(child.try_wait().unwrap().is_none(), "ended before step 7");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no step 7 in 2 min"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "not killed mid-run: {status}");
    let at = checkpoint_progress(&last).unwrap();
    assert!((7..30).contains(&step(&at)), "killed at {at}");

    d.segnet(&format!("{} --resume", train_args("killed")))
        .assert()
        .success();
    for f in ["last.safetensors", "model.safetensors"] {
        let straight = tensors(&d.path("straight").join(f));
        let resumed = tensors(&d.path("killed").join(f));
        assert_eq!(straight.len(), resumed.len());
        for (name, t) in &straight {
            assert!(
                t.equal(&resumed[name]),
                "{f}: {name} differs, killed at {at}"
            );
        }
    }
    // The log replays too: the epoch the kill cut keeps its running loss in the checkpoint.
    let straight = log_lines(&d.path("straight"));
    let resumed = log_lines(&d.path("killed"));
    assert_eq!(resumed.len(), 10, "one log line per epoch after resuming");
    for (x, y) in straight.iter().zip(&resumed) {
        for key in "step lr train_loss val_global_accuracy val_miou val_mc_miou".split(' ') {
            assert_eq!(
                x[key], y[key],
                "epoch {}: {key}, killed at {at}",
                x["epoch"]
            );
        }
    }
}
