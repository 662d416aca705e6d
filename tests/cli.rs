//! End-to-end tests through the real binary: infer writes its files, every bad input ends in a
//! one-line error, train + eval learn a tiny synthetic road scene, a diverging run leaves its last
//! good checkpoint untouched, and a run killed with SIGKILL resumes to bit-identical weights.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
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
        Command::from_std(self.command(args))
    }

    fn command(&self, args: &str) -> std::process::Command {
        let mut c = std::process::Command::new(cargo_bin!("segnet-bayes"));
        c.current_dir(self.0.path())
            .env("SEGNET_THREADS", "1")
            .args(args.split_whitespace());
        // Run inside an array job, these would shard every test's run.
        for var in ENGINE_VARIABLES {
            c.env_remove(var);
        }
        c
    }

    /// Starts the binary as [`Scratch::segnet`] does, stdout discarded, and returns at once: for
    /// tests that kill it mid-run.
    fn spawn(&self, args: &str) -> std::process::Child {
        let mut c = self.command(args);
        c.stdout(std::process::Stdio::null()).spawn().unwrap()
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

/// The variables from which a run takes its shard when `--shard` is not given.
const ENGINE_VARIABLES: [&str; 10] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
    "JOB_COMPLETION_INDEX",
    "SEGNET_SHARD_COUNT",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "AWS_BATCH_JOB_ARRAY_SIZE",
    "BATCH_TASK_INDEX",
    "BATCH_TASK_COUNT",
];

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

    let mut child = d.spawn(&train_args("killed"));
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

/// Every file under `dir` but the run's records, by path relative to it.
fn files_below(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel == "segnet-run" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// `in/`: `n` small road scenes `s0.png`...
fn scenes(d: &Scratch, n: u32) {
    std::fs::create_dir_all(d.path("in")).unwrap();
    for i in 0..n {
        road_scene(64 + 2 * i, 48, i)
            .0
            .save(d.path(&format!("in/s{i}.png")))
            .unwrap();
    }
}

#[test]
fn inputs_sharing_a_name_get_distinct_outputs_and_colliding_outputs_are_refused() {
    let d = Scratch::new();
    let model = tiny_model(&d, "basic");
    for (i, f) in ["d1/frame.png", "d2/frame.png", "d3/frame-0.png"]
        .iter()
        .enumerate()
    {
        std::fs::create_dir_all(d.path(f).parent().unwrap()).unwrap();
        road_scene(40 + 8 * i as u32, 40, i as u32)
            .0
            .save(d.path(f))
            .unwrap();
    }
    let run = "infer d1/frame.png d2/frame.png d3/frame-0.png --samples 2 --out o";
    d.segnet(&format!("{run} --model {model}"))
        .assert()
        .success();
    for (name, width) in [("d1/frame", 40), ("d2/frame", 48), ("d3/frame-0", 56)] {
        let summary = json(&d.path(&format!("o/{name}.json")));
        assert_eq!(summary["input"], format!("{name}.png"));
        let classes = image::open(d.path(&format!("o/{name}_classes.png"))).unwrap();
        assert_eq!(classes.width(), width, "{name} holds another input's map");
    }
    // The same stem with two extensions keeps the extensions.
    std::fs::create_dir(d.path("ab")).unwrap();
    road_scene(40, 40, 1).0.save(d.path("ab/a.png")).unwrap();
    road_scene(40, 40, 2).0.save(d.path("ab/a.jpg")).unwrap();
    d.segnet(&format!("infer ab --model {model} --samples 2 --out o2"))
        .assert()
        .success();
    assert!(d.path("o2/a.png.json").is_file() && d.path("o2/a.jpg_overlay.png").is_file());
    // `a`'s variance overlay and `a_variance`'s class overlay would share a file name.
    road_scene(40, 40, 3)
        .0
        .save(d.path("ab/a_variance.png"))
        .unwrap();
    d.fails_naming(
        &format!("infer ab/a.png ab/a_variance.png --model {model} --out o3"),
        "a_variance_overlay.png",
    );
    assert!(!d.path("o3").exists(), "refused before any work");
}

#[test]
fn the_output_folder_is_never_read_as_input() {
    let d = Scratch::new();
    let model = tiny_model(&d, "basic");
    scenes(&d, 2);
    d.fails_naming(
        &format!("infer in --model {model} --out in"),
        "inside the output folder",
    );
    assert_eq!(std::fs::read_dir(d.path("in")).unwrap().count(), 2);
    // Outputs inside an input folder, named again by a glob on the next run, stay outputs.
    let args = format!("infer in --model {model} --samples 2 --seed 1 --out in/out");
    d.segnet(&args).assert().success();
    let first = files_below(&d.path("in"));
    let again = format!("{args} in/out/s0_overlay.png in/out/s1_colour.png");
    d.segnet(&again)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "left out 2 of 4 inputs inside the output folder",
        ))
        .stderr(predicate::str::contains("2 of 2 images already done"));
    assert_eq!(
        files_below(&d.path("in")),
        first,
        "a second run changed the folder"
    );
}

#[test]
fn one_shard_or_three_give_byte_identical_outputs_and_merged_tables() {
    let d = Scratch::new();
    let model = tiny_model(&d, "segnet");
    scenes(&d, 6);
    let args = format!("infer in --model {model} --samples 3 --seed 5");
    d.segnet(&format!("{args} --shard 0/1 --out one"))
        .assert()
        .success();
    for i in 0..3 {
        d.segnet(&format!("{args} --shard {i}/3 --out three"))
            .assert()
            .success()
            .stderr(predicate::str::contains(format!(
                "shard {i}/3 (from --shard): 2 of 6"
            )));
    }
    let one = files_below(&d.path("one"));
    assert_eq!(one.len(), 6 * 10, "{:?}", one.keys());
    assert!(
        one == files_below(&d.path("three")),
        "sharding changed an output"
    );
    for run in ["one", "three"] {
        d.segnet(&format!("merge {run}")).assert().success();
    }
    let merged =
        |run: &str| std::fs::read_to_string(d.path(&format!("{run}/segnet-run/merged.csv")));
    let table = merged("one").unwrap();
    assert_eq!(table, merged("three").unwrap());
    assert_eq!(table.lines().count(), 7, "{table}");
    assert!(table.starts_with("item,input,dropout,height,"), "{table}");
    // An image's samples depend on the seed and the image alone: the same image on its own
    // gives the same bytes, and another seed other numbers.
    d.segnet(&format!("{args} in/s4.png --out alone"))
        .assert()
        .success();
    let alone = files_below(&d.path("alone"));
    for (f, bytes) in &alone {
        assert!(one[f] == *bytes, "{f} differs when run alone");
    }
    d.segnet(&format!(
        "infer in/s4.png --model {model} --samples 3 --seed 6 --out other"
    ))
    .assert()
    .success();
    let mean = |run: &str| json(&d.path(&format!("{run}/s4.json")))["mean_variance"].clone();
    assert!(mean("alone").as_f64().unwrap() > 0.0);
    assert_ne!(mean("alone"), mean("other"), "the seed changes the samples");
}

#[test]
fn merge_names_failed_and_missing_items_until_their_shards_are_rerun() {
    let d = Scratch::new();
    let model = tiny_model(&d, "basic");
    scenes(&d, 5);
    // Sorted: a-bad.png, s0 ... s4; item k is shard k mod 3's.
    std::fs::write(d.path("in/a-bad.png"), b"\x89PNG broken").unwrap();
    let args = format!("infer in --model {model} --samples 2 --seed 1 --out out");
    d.fails_naming(&format!("{args} --shard 0/3"), "1 of 2 images failed");
    d.segnet(&format!("{args} --shard 1/3")).assert().success();
    let report = d.segnet("merge out").assert().code(1);
    let stdout = String::from_utf8_lossy(&report.get_output().stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("shard 0/3: 1 of 2 items done")
            && lines[0].contains("failed: a-bad ("),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("shard 1/3: 2 of 2 items done"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("never started") && lines[2].ends_with("missing: s1, s4"),
        "{stdout}"
    );
    let err = String::from_utf8_lossy(&report.get_output().stderr).into_owned();
    assert!(err.contains("1 failed and 2 missing of 6 items"), "{err}");

    road_scene(40, 40, 9)
        .0
        .save(d.path("in/a-bad.png"))
        .unwrap();
    d.segnet(&format!("{args} --shard 0/3"))
        .assert()
        .success()
        .stderr(predicate::str::contains("1 of 2 images already done"));
    d.segnet(&format!("{args} --shard 2/3")).assert().success();
    d.segnet("merge out").assert().success();
    let merged = json(&d.path("out/segnet-run/merged.json"));
    assert_eq!(
        (merged["done"].as_u64(), merged["complete"].as_bool()),
        (Some(6), Some(true))
    );
    d.fails_naming("merge in", "no sharded run");
}

#[test]
fn shards_from_flags_and_engine_variables_are_checked() {
    let d = Scratch::new();
    let model = tiny_model(&d, "basic");
    scenes(&d, 4);
    let args = format!("infer in --model {model} --samples 2 --out out");
    for (shard, what) in [
        ("3/3", "out of range"),
        ("0/0", "at least 1"),
        ("a/b", "not I/N"),
    ] {
        d.fails_naming(&format!("{args} --shard {shard}"), what);
    }
    d.segnet(&args)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "shard 1/2 (from SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=2): 2 of 4 items",
        ));
    let written: Vec<String> = ["s0", "s1", "s2", "s3"]
        .into_iter()
        .filter(|s| d.path(&format!("out/{s}.json")).exists())
        .map(String::from)
        .collect();
    assert_eq!(written, ["s1", "s3"]);
    d.segnet(&args)
        .env("JOB_COMPLETION_INDEX", "0")
        .env("SEGNET_SHARD_COUNT", "2")
        .env("BATCH_TASK_INDEX", "1")
        .env("BATCH_TASK_COUNT", "2")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("disagree"));
    d.segnet(&args)
        .env("JOB_COMPLETION_INDEX", "0")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("SEGNET_SHARD_COUNT is not"));
    // The run in out/ has two shards; a task that counts three is another run.
    d.fails_naming(&format!("{args} --shard 0/3"), "--shard I/2");
    d.fails_naming(&format!("{args} --shard 0/2 --seed 4"), "seed: null -> 4");
}

#[test]
fn the_kubernetes_job_counts_its_shards_as_it_counts_its_pods() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/cluster/indexed-job.yaml"),
    )
    .unwrap();
    let job: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let container = &spec["template"]["spec"]["containers"][0];
    let var = |name: &str| {
        container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str()?.parse::<u64>().ok())
    };
    assert_eq!(var("SEGNET_SHARD_COUNT"), spec["completions"].as_u64());
    assert_eq!(container["command"][0].as_str(), Some("segnet-bayes"));
}

#[test]
fn a_shard_killed_midway_reruns_to_the_same_files_skipping_what_it_finished() {
    let d = Scratch::new();
    let model = tiny_model(&d, "segnet");
    std::fs::create_dir(d.path("in")).unwrap();
    for i in 0..8 {
        road_scene(160, 120, i)
            .0
            .save(d.path(&format!("in/s{i:02}.png")))
            .unwrap();
    }
    let args = |out: &str| {
        format!("infer in --model {model} --samples 3 --seed 2 --shard 0/1 --out {out}")
    };
    d.segnet(&args("straight")).assert().success();

    let mut child = d.spawn(&args("killed"));
    let finished = || {
        (0..8)
            .filter(|i| d.path(&format!("killed/s{i:02}.json")).exists())
            .count()
    };
    let start = Instant::now();
    while finished() < 2 {
        assert!(child.try_wait().unwrap().is_none(), "ended before 2 images");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no 2 images in 2 min"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let at = finished();
    assert_eq!(status.signal(), Some(9), "not killed mid-run: {status}");
    assert!(at < 8, "all done before the kill");

    d.segnet(&args("killed"))
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "{at} of 8 images already done"
        )));
    let (straight, killed) = (
        files_below(&d.path("straight")),
        files_below(&d.path("killed")),
    );
    assert!(
        straight == killed,
        "killed after {at} images, the rerun differs"
    );
}
