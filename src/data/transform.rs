//! One training or validation example: resize to the network's input size, and the seeded
//! augmentation applied to image and label alike: random scale and crop, small rotation,
//! horizontal flip, then (image only) photometric jitter, blur and noise (`augment`).

use image::RgbImage;
use tch::Tensor;

use super::augment::{self, Planes};
use super::label::Label;
use crate::config::{AugmentConfig, ModelConfig};
use crate::image_io;
use crate::rng::SplitMix64;

/// One example after transforms.
///
/// # Shapes
/// `image`: `[3, H, W]` f32, normalised with `model.mean`/`model.std`; `label`: `[H, W]` i64.
#[derive(Debug)]
pub(crate) struct Example {
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

/// Transforms one decoded pair into an example.
///
/// Without augmentation the image is resized (bilinear) to `model.input_size` when set and the
/// label with nearest neighbour. With `augment = Some(seed)`, in this order and each only when
/// `aug` switches it on: scale by `s ~ U(scale)` and crop a random `input_size` window (padded
/// with void label and the mean colour, i.e. a zero input, where the scaled pair is smaller);
/// rotate by up to `rotate` degrees (corners void and mean-coloured); flip horizontally with
/// probability 0.5; photometric jitter; blur; noise. The same seed gives the same example.
pub(crate) fn transform(
    img: &RgbImage,
    label: &Label,
    aug: &AugmentConfig,
    model: &ModelConfig,
    augment: Option<u64>,
) -> Example {
    let void = model.classes as u8;
    let (w, h, label) = (label.0, label.1, &label.2);
    let [th, tw] = model
        .input_size
        .map_or([h, w], |[th, tw]| [th as u32, tw as u32]);
    let mut rng = augment.map(SplitMix64::new);
    let scale = match (&mut rng, aug.scale) {
        (Some(rng), Some([a, b])) => Some(a as f64 + (b - a) as f64 * rng.next_f64()),
        _ => None,
    };
    let (mut image, mut label) = match scale {
        None => {
            let img = image_io::resize_rgb(img, [th as i64, tw as i64]);
            (Planes::from_rgb(&img), resize_nearest(label, w, h, tw, th))
        }
        Some(s) => {
            let rng = rng.as_mut().expect("scale implies a seed");
            scale_and_crop(img, label, (w, h), (tw, th), s, model, rng)
        }
    };
    if let Some(rng) = rng.as_mut().filter(|_| aug.rotate > 0.0) {
        let degrees = aug.rotate * (2.0 * rng.next_f64() as f32 - 1.0);
        (image, label) = augment::rotate(&image, &label, degrees, model.mean, void);
    }
    if aug.hflip && rng.as_mut().is_some_and(|r| r.next_f64() < 0.5) {
        image.flip();
        label.chunks_mut(tw as usize).for_each(|row| row.reverse());
    }
    if let Some(rng) = rng.as_mut() {
        augment::photometric(&mut image, aug, rng);
        augment::degrade(&mut image, aug, rng);
    }
    let label: Vec<i64> = label.into_iter().map(i64::from).collect();
    Example {
        image: image.network_input(model),
        label: Tensor::from_slice(&label).view([th as i64, tw as i64]),
    }
}

/// Scales the pair to `s` times the target size and crops a random target-sized window from
/// it, padding with the mean colour and void where the scaled pair is smaller.
fn scale_and_crop(
    img: &RgbImage,
    label: &[u8],
    (w, h): (u32, u32),
    (tw, th): (u32, u32),
    s: f64,
    model: &ModelConfig,
    rng: &mut SplitMix64,
) -> (Planes, Vec<u8>) {
    let (sw, sh) = (
        ((tw as f64 * s).round() as u32).max(1),
        ((th as f64 * s).round() as u32).max(1),
    );
    let img = image_io::resize_rgb(img, [sh as i64, sw as i64]);
    let label = resize_nearest(label, w, h, sw, sh);
    let (sx, sy) = (span(sw, tw, rng), span(sh, th, rng));
    let crop = image::imageops::crop_imm(&img, sx.src, sy.src, sx.len, sy.len).to_image();
    let mut canvas = Planes::filled(tw as usize, th as usize, model.mean);
    canvas.paste(&Planes::from_rgb(&crop), sx.dst as usize, sy.dst as usize);
    let mut out = vec![model.classes as u8; tw as usize * th as usize];
    for r in 0..sy.len as usize {
        let from = (sy.src as usize + r) * sw as usize + sx.src as usize;
        let to = (sy.dst as usize + r) * tw as usize + sx.dst as usize;
        out[to..to + sx.len as usize].copy_from_slice(&label[from..from + sx.len as usize]);
    }
    (canvas, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;
    use crate::data::fixtures::{data, model, write_pair};
    use crate::data::{load_pair, Pair};

    fn prepare(
        pair: &Pair,
        cfg: &DataConfig,
        model: &ModelConfig,
        augment: Option<u64>,
    ) -> anyhow::Result<Example> {
        let (img, label) = load_pair(pair, cfg, model)?;
        Ok(transform(&img, &label, &cfg.augment, model, augment))
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

    #[test]
    fn training_examples_follow_the_model_input_norm() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "a", 64, 48);
        let mut m = model(2, Some([32, 40]));
        m.input_norm = crate::config::InputNorm::PerImage;
        let ex = prepare(&p, &data(dir.path()), &m, Some(3)).unwrap();
        let means: Vec<f32> =
            Vec::try_from(ex.image.mean_dim(&[1i64, 2][..], false, tch::Kind::Float)).unwrap();
        assert!(means.iter().all(|v| v.abs() < 1e-4), "{means:?}");
        // What inference feeds the network for the same pixels.
        let (img, _) = load_pair(&p, &data(dir.path()), &m).unwrap();
        let resized = crate::image_io::resize_rgb(&img, [32, 40]);
        let plain = prepare(&p, &data(dir.path()), &m, None).unwrap();
        assert!(plain.image.allclose(
            &crate::image_io::network_input(&resized, &m),
            1e-5,
            1e-5,
            false
        ));
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
        cfg.augment = AugmentConfig {
            hflip: false,
            scale: Some([0.5, 0.5]),
            ..Default::default()
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
}
