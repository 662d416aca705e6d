//! End-to-end tests through the real binary: infer writes its files, every bad input ends in a
//! one-line error, train + eval run on a tiny synthetic dataset, and a training run killed with
//! SIGKILL resumes to the same result.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use image::{GrayImage, Luma, Rgb, RgbImage};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segnet-bayes"));
    c.env("SEGNET_THREADS", "1");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with a clear one-line message naming `needle`, and no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "not an error line: {err}");
    assert!(
        err.contains(needle),
        "error does not mention `{needle}`: {err}"
    );
}

/// A small random model saved by the binary itself.
fn tiny_model(dir: &Path, arch: &str) -> PathBuf {
    let path = dir.join(format!("{arch}.safetensors"));
    let o = run(&[
        "init-model",
        "--arch",
        arch,
        "--width",
        "0.125",
        "--input-size",
        "48x64",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

fn road_scene(w: u32, h: u32, seed: u32) -> (RgbImage, GrayImage) {
    // Sky (0) above, road (3) below, a car (8) box: enough structure to learn a little.
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

fn synthetic_dataset(root: &Path, n: u32) {
    for split in ["train", "val"] {
        std::fs::create_dir_all(root.join(split)).unwrap();
        std::fs::create_dir_all(root.join(format!("{split}annot"))).unwrap();
        for i in 0..n {
            let (img, lab) = road_scene(64, 48, i);
            img.save(root.join(split).join(format!("f{i:03}.png")))
                .unwrap();
            lab.save(
                root.join(format!("{split}annot"))
                    .join(format!("f{i:03}.png")),
            )
            .unwrap();
        }
    }
}

fn tiny_config(dir: &Path, data: &Path, epochs: usize, extra: &str) -> PathBuf {
    let cfg = format!(
        "model:\n  arch: basic\n  width: 0.125\n  input_size: [48, 64]\n\
         data:\n  root: {}\n  class_weights: none\n\
         train:\n  optimizer: adam\n  lr: 0.01\n  epochs: {epochs}\n  batch_size: 2\n  checkpoint_every: 1\n  prefetch: 2\n{extra}",
        data.display()
    );
    let path = dir.join("tiny.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn help_lists_the_subcommands() {
    let o = run(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in ["infer", "train", "eval", "bench", "init-model"] {
        assert!(out.contains(cmd), "{out}");
    }
}

#[test]
fn infer_writes_class_map_overlay_heatmaps_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "segnet");
    let (img, _) = road_scene(70, 45, 1);
    let input = dir.path().join("scene.png");
    img.save(&input).unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "infer",
        input.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--samples",
        "3",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "scene_classes.png",
        "scene_colour.png",
        "scene_overlay.png",
        "scene_variance.png",
        "scene_entropy.png",
        "scene_mutual-info.png",
        "scene.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    // Outputs have the input's size although the network ran at 48x64.
    let classes = image::open(out.join("scene_classes.png")).unwrap();
    assert_eq!((classes.width(), classes.height()), (70, 45));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scene.json")).unwrap()).unwrap();
    assert_eq!(summary["samples"], 3);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("scene.png") && stdout.contains("T=3"),
        "{stdout}"
    );
}

#[test]
fn infer_accepts_grey_rgba_16_bit_and_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "basic");
    let (rgb, _) = road_scene(40, 36, 2);
    let folder = dir.path().join("inputs");
    std::fs::create_dir(&folder).unwrap();
    image::DynamicImage::ImageRgb8(rgb.clone())
        .to_luma8()
        .save(folder.join("grey.png"))
        .unwrap();
    image::DynamicImage::ImageRgb8(rgb.clone())
        .to_rgba8()
        .save(folder.join("rgba.png"))
        .unwrap();
    image::DynamicImage::ImageRgb8(rgb.clone())
        .to_rgb16()
        .save(folder.join("deep.png"))
        .unwrap();
    rgb.save(folder.join("photo.jpg")).unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "infer",
        folder.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for stem in ["grey", "rgba", "deep", "photo"] {
        assert!(out.join(format!("{stem}_overlay.png")).is_file(), "{stem}");
    }
}

#[test]
fn bad_inputs_end_in_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = tiny_model(d, "basic");
    let m = model.to_str().unwrap();
    let (img, _) = road_scene(40, 40, 3);
    let good = d.join("good.png");
    img.save(&good).unwrap();
    let g = good.to_str().unwrap();
    let out = d.join("out");
    let o = out.to_str().unwrap();

    let infer = |extra: &[&str]| {
        let mut args = vec!["infer", "--out", o];
        args.extend_from_slice(extra);
        run(&args)
    };
    assert_clean_error(&infer(&["missing.png", "--model", m]), "missing.png");

    let truncated = d.join("truncated.png");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &infer(&[truncated.to_str().unwrap(), "--model", m]),
        "truncated.png",
    );

    let text = d.join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    assert_clean_error(&infer(&[text.to_str().unwrap(), "--model", m]), "notes.png");

    let small = d.join("small.png");
    RgbImage::new(20, 40).save(&small).unwrap();
    assert_clean_error(&infer(&[small.to_str().unwrap(), "--model", m]), "32x32");

    assert_clean_error(&infer(&[g, "--model", m, "--samples", "0"]), "--samples");
    assert_clean_error(&infer(&[g, "--model", m, "--device", "tpu"]), "--device");
    if !tch::Cuda::is_available() {
        assert_clean_error(&infer(&[g, "--model", m, "--device", "cuda"]), "CUDA");
    }

    // Weights of another architecture: a Basic network's tensors under a SegNet config.
    let forged = d.join("forged.safetensors");
    {
        use segnet_bayes::config::{Arch, ModelConfig};
        let basic = ModelConfig {
            arch: Arch::Basic,
            width: 0.125,
            ..Default::default()
        };
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _net = segnet_bayes::model::SegNet::new(&vs.root(), &basic);
        let segnet = ModelConfig {
            width: 0.125,
            ..Default::default()
        };
        segnet_bayes::model::checkpoint::save(&forged, &segnet, &vs, &[], &Default::default())
            .unwrap();
    }
    assert_clean_error(
        &infer(&[g, "--model", forged.to_str().unwrap()]),
        "does not fit a Segnet network",
    );
    assert_clean_error(&infer(&[g, "--model", g]), "good.png");

    // An output folder that cannot be written (a file stands where the folder should be).
    let blocker = d.join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let o2 = run(&[
        "infer",
        g,
        "--model",
        m,
        "--out",
        blocker.join("sub").to_str().unwrap(),
    ]);
    assert_clean_error(&o2, "output folder");
}

#[test]
fn a_failed_image_does_not_stop_or_spoil_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = tiny_model(d, "basic");
    let (img, _) = road_scene(40, 40, 4);
    let good = d.join("good.png");
    img.save(&good).unwrap();
    let bad = d.join("bad.png");
    std::fs::write(&bad, b"\x89PNG broken").unwrap();
    let out = d.join("out");
    let o = run(&[
        "infer",
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_clean_error(&o, "1 of 2 images failed");
    assert!(out.join("good_overlay.png").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn config_with_an_unknown_key_is_rejected_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, "model:\n  arch: segnet\n  widht: 0.5\n").unwrap();
    let o = run(&["train", "--config", cfg.to_str().unwrap()]);
    assert_clean_error(&o, "widht");
    std::fs::write(&cfg, "model:\n  dropout: 1.5\n").unwrap();
    let o = run(&["train", "--config", cfg.to_str().unwrap()]);
    assert_clean_error(&o, "model.dropout");
}

#[test]
fn train_then_eval_on_a_tiny_synthetic_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 4);
    let cfg = tiny_config(dir.path(), &data, 2, "");
    let run_dir = dir.path().join("run");
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "config.yaml",
        "last.safetensors",
        "model.safetensors",
        "log.jsonl",
    ] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    // A second start without --resume refuses to overwrite the run.
    let again = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert_clean_error(&again, "--resume");

    // Batch-norm statistics re-estimated with dropout on: a new, loadable model whose running
    // statistics differ from the trained one's.
    let recal = dir.path().join("recal.safetensors");
    let model = run_dir.join("model.safetensors");
    let o = run(&[
        "recalibrate",
        "--model",
        model.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--dropout",
        "--device",
        "cpu",
        "--out",
        recal.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = segnet_bayes::model::checkpoint::read(&model).unwrap();
    let after = segnet_bayes::model::checkpoint::read(&recal).unwrap();
    let key = "enc2.1.bn.running_var";
    assert!(
        !before.tensors[key].equal(&after.tensors[key]),
        "{key} unchanged"
    );
    assert!(before.tensors["enc2.1.conv.weight"].equal(&after.tensors["enc2.1.conv.weight"]));

    let eval_dir = dir.path().join("eval");
    let o = run(&[
        "eval",
        "--model",
        run_dir.join("model.safetensors").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "val",
        "--samples",
        "3",
        "--device",
        "cpu",
        "--out",
        eval_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eval_dir.join("report.json")).unwrap()).unwrap();
    let g = report["weight_averaging"]["global_accuracy"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&g));
    assert_eq!(report["images"], 4);
    for f in [
        "report.md",
        "reliability.png",
        "accuracy_vs_kept.png",
        "per_class_iou.png",
    ] {
        assert!(eval_dir.join(f).is_file(), "missing {f}");
    }
}

#[test]
fn a_diverging_run_stops_with_a_clear_message_and_keeps_a_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 4);
    let cfg = tiny_config(dir.path(), &data, 3, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "optimizer: adam\n  lr: 0.01",
        "optimizer: sgd\n  lr: 1.0e+30",
    );
    std::fs::write(&cfg, text).unwrap();
    let run_dir = dir.path().join("run");
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_error(&o, "training stopped");
    let last = run_dir.join("last.safetensors");
    if last.exists() {
        let ckpt = segnet_bayes::model::checkpoint::read(&last).unwrap();
        for (name, t) in &ckpt.tensors {
            assert!(
                t.isfinite().all().int64_value(&[]) == 1,
                "{name} is not finite in the kept checkpoint"
            );
        }
    }
}

/// Final training loss and validation mIoU of a run folder.
fn last_epoch(run_dir: &Path) -> (usize, f64, f64) {
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    (
        log.lines().count(),
        last["train_loss"].as_f64().unwrap(),
        last["val_miou"].as_f64().unwrap(),
    )
}

#[test]
fn training_killed_with_sigkill_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 6);
    let epochs = 4;
    let cfg = tiny_config(dir.path(), &data, epochs, "");
    let args = |out: &Path| {
        vec![
            "train".to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--device".into(),
            "cpu".into(),
        ]
    };
    let straight = dir.path().join("straight");
    let o = bin().args(args(&straight)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = dir.path().join("killed");
    let mut child = bin()
        .args(args(&killed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a checkpoint past the first epoch exists, mid-run.
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(killed.join("log.jsonl")).unwrap_or_default();
        if log.lines().count() >= 1 && killed.join("last.safetensors").is_file() {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let resumed = bin().args(args(&killed)).arg("--resume").output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));

    let (n1, loss1, miou1) = last_epoch(&straight);
    let (n2, loss2, miou2) = last_epoch(&killed);
    assert_eq!(n1, epochs);
    assert_eq!(n2, epochs, "one log line per epoch after resuming");
    assert!(
        (loss1 - loss2).abs() <= 0.02 * loss1.abs().max(1e-3),
        "loss {loss1} vs resumed {loss2}"
    );
    assert!(
        (miou1 - miou2).abs() <= 0.05,
        "mIoU {miou1} vs resumed {miou2}"
    );
}
