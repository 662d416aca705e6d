//! A background loader that decodes, augments and batches examples ahead of the trainer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use tch::Tensor;

use super::{transform, Example, Frames, Pair};
use crate::config::{DataConfig, ModelConfig};
use crate::rng::mix_seed;

/// A batch of examples.
///
/// # Shapes
/// `images`: `[B, 3, H, W]` f32; `labels`: `[B, H, W]` i64; `indices`: the `B` pair indices.
#[derive(Debug)]
pub(crate) struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

/// Decodes and augments batches on a background thread (examples in parallel with rayon) and
/// hands them over through a bounded channel, in `order`.
///
/// An error (a bad label, a missing file) is delivered as `Err` in its batch's place and ends
/// the stream. Dropping the loader stops the thread.
pub(crate) struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    waited: Duration,
    done: bool,
}

impl Loader {
    /// Starts the thread. `order` lists the pair indices of this epoch (shuffled and possibly
    /// shortened by the caller). With `augment_seed = Some(s)` pair `i` is augmented with seed
    /// `mix_seed(s, i)`, independent of threads and of its position; pass a different `s` per
    /// epoch (e.g. `mix_seed(seed, epoch)`). About `prefetch` images are prepared ahead.
    /// `drop_last` drops a final batch smaller than `batch_size`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        frames: Arc<Frames>,
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
            order.iter().all(|&i| i < frames.len()),
            "order holds an index beyond the {} pairs",
            frames.len()
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
            frames,
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
            done: false,
        }
    }

    /// The next batch; `None` at the end of the epoch or after an error was returned.
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Option<Result<Batch>> {
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
    pub(crate) fn wait_seconds(&self) -> f64 {
        self.waited.as_secs_f64()
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
    frames: Arc<Frames>,
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
        // `data.loader_threads` > 0: a pool of that size, else rayon's global one (all cores).
        let pool = (self.cfg.loader_threads > 0)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.cfg.loader_threads)
                    .thread_name(|i| format!("data-loader-{i}"))
                    .build()
                    .ok()
            })
            .flatten();
        let used = &self.order[..(self.batches * self.batch_size).min(self.order.len())];
        for group in used.chunks(self.ahead * self.batch_size) {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let prepare =
                || -> Vec<Result<Example>> { group.par_iter().map(|&i| self.example(i)).collect() };
            let examples = match &pool {
                Some(pool) => pool.install(prepare),
                None => prepare(),
            };
            let mut examples = examples.into_iter();
            for indices in group.chunks(self.batch_size) {
                let batch: Result<Vec<Example>> = examples.by_ref().take(indices.len()).collect();
                let batch = batch.and_then(|b| stack(b, indices, &self.frames.pairs));
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        }
    }
}

impl Job {
    /// Pair `i` decoded (or taken from the cache) and transformed.
    fn example(&self, i: usize) -> Result<Example> {
        let seed = self.augment_seed.map(|s| mix_seed(s, i as u64));
        let decoded = self.frames.get(i, &self.cfg, &self.model)?;
        let (image, label) = &*decoded;
        Ok(transform(
            image,
            label,
            &self.cfg.augment,
            &self.model,
            seed,
        ))
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
    use std::path::Path;

    use super::*;
    use crate::data::fixtures::{camvid_root, data, model, write_pair};
    use image::{GrayImage, Luma};

    /// `n` pairs `0.png`, `1.png`, ... of 32x32 in `dir/train`.
    fn square_pairs(dir: &Path, n: usize) -> Vec<Pair> {
        (0..n)
            .map(|i| write_pair(dir, "train", &format!("{i}"), 32, 32))
            .collect()
    }

    /// Batches of 2 over `pairs` in `order`, two classes, augmented.
    fn loader(dir: &Path, pairs: Vec<Pair>, order: Vec<usize>, drop_last: bool) -> Loader {
        let (cfg, m) = (data(dir), model(2, None));
        let frames = Arc::new(Frames::new(pairs, false));
        Loader::new(frames, order, 2, cfg, m, Some(7), 2, drop_last)
    }

    #[test]
    fn loader_yields_batches_in_order_and_drops_the_last_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = square_pairs(dir.path(), 5);
        for (drop_last, want) in [
            (false, vec![vec![4, 2], vec![0, 1], vec![3]]),
            (true, vec![vec![4, 2], vec![0, 1]]),
        ] {
            let order = vec![4, 2, 0, 1, 3];
            let mut loader = loader(dir.path(), pairs.clone(), order, drop_last);
            let mut got = Vec::new();
            while let Some(b) = loader.next() {
                let b = b.unwrap();
                assert_eq!(b.images.size(), vec![b.indices.len() as i64, 3, 32, 32]);
                assert_eq!(b.labels.size(), vec![b.indices.len() as i64, 32, 32]);
                got.push(b.indices);
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn loader_reports_a_bad_label_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = square_pairs(dir.path(), 4);
        GrayImage::from_pixel(32, 32, Luma([9]))
            .save(&pairs[2].label)
            .unwrap();
        let mut loader = loader(dir.path(), pairs, vec![0, 1, 2, 3], false);
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
        let mut loader = loader(dir.path(), pairs, vec![0, 1], false);
        let err = loader.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("model.input_size"), "{err}");
    }

    #[test]
    #[ignore = "needs CamVid (the SegNet tutorial's copy) in ../shared/data/camvid; run with --ignored"]
    fn real_camvid_frames_batch_with_valid_labels() {
        let root = camvid_root();
        let pairs = crate::data::discover(&root, "train", 2).unwrap();
        let m = ModelConfig {
            input_size: Some([64, 80]),
            ..Default::default()
        };
        let cfg = DataConfig {
            root,
            ..Default::default()
        };
        let frames = Arc::new(Frames::new(pairs, true));
        let mut loader = Loader::new(frames, vec![0, 1], 2, cfg, m, Some(1), 2, true);
        let b = loader.next().unwrap().unwrap();
        assert_eq!(b.images.size(), vec![2, 3, 64, 80]);
        let labels: Vec<i64> = Vec::try_from(b.labels.flatten(0, -1)).unwrap();
        assert!(labels.iter().all(|&v| (0..=11).contains(&v)));
        // Road scenes: more than one class in view.
        assert!(labels.iter().any(|&v| v != labels[0]));
        assert!(loader.next().is_none());
    }
}
