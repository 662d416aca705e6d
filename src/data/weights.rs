//! Class weights for the loss.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::{load_label, Pair};
use crate::config::{ClassWeights, DataConfig, ModelConfig, WeightMethod};

/// The loss weights `data.class_weights` asks for, one per class.
pub(crate) fn class_weights(
    cfg: &DataConfig,
    model: &ModelConfig,
    pairs: &[Pair],
) -> Result<Vec<f32>> {
    Ok(match &cfg.class_weights {
        ClassWeights::Given(w) => w.clone(),
        ClassWeights::Computed(WeightMethod::None) => vec![1.0; model.classes as usize],
        ClassWeights::Computed(WeightMethod::Median) => {
            median_frequency_weights(pairs, cfg, model)?
        }
        ClassWeights::Computed(WeightMethod::SqrtMedian) => {
            let w = median_frequency_weights(pairs, cfg, model)?;
            w.into_iter().map(f32::sqrt).collect()
        }
    })
}

/// Median-frequency balancing (Eigen & Fergus 2015), as used by SegNet.
///
/// `freq(c)` = pixels of `c` / non-void pixels of the images where `c` is present;
/// `weight(c) = median(freq) / freq(c)`, the median taken over the classes present. Classes never
/// present get weight 0; void is ignored. Labels are read in parallel.
fn median_frequency_weights(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{data, model};
    use image::{GrayImage, Luma};

    /// 4 classes, void = 4. A = [0 0 0 1], B = [1 1 2 void]: freq0 = 3/4, freq1 = 3/(4+3),
    /// freq2 = 1/3, class 3 absent; median = 3/7.
    const HAND: [f32; 4] = [4.0 / 7.0, 1.0, 9.0 / 7.0, 0.0];

    fn hand_pairs(dir: &std::path::Path) -> [Pair; 2] {
        let mk = |name: &str, v: [u8; 4]| {
            let path = dir.join(name);
            GrayImage::from_fn(2, 2, |x, y| Luma([v[(y * 2 + x) as usize]]))
                .save(&path)
                .unwrap();
            Pair {
                image: path.clone(),
                label: path,
            }
        };
        [mk("a.png", [0, 0, 0, 1]), mk("b.png", [1, 1, 2, 4])]
    }

    fn assert_close(got: &[f32], want: [f32; 4]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn median_frequency_weights_match_hand_computation() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = hand_pairs(dir.path());
        let w = median_frequency_weights(&pairs, &data(dir.path()), &model(4, None)).unwrap();
        assert_close(&w, HAND);
    }

    #[test]
    fn each_weight_method_gives_its_own_weights() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = hand_pairs(dir.path());
        let with = |m: WeightMethod| {
            let cfg = DataConfig {
                class_weights: ClassWeights::Computed(m),
                ..data(dir.path())
            };
            class_weights(&cfg, &model(4, None), &pairs).unwrap()
        };
        assert_close(&with(WeightMethod::Median), HAND);
        assert_close(&with(WeightMethod::SqrtMedian), HAND.map(f32::sqrt));
        assert_eq!(with(WeightMethod::None), [1.0; 4]);
    }
}
