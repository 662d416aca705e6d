//! Pixel-level augmentation of one example, on planar RGB in [0, 1]: rotation (image and label
//! together), photometric jitter (brightness, contrast, saturation, hue, gamma), blur and noise.
//! Every random draw comes from the example's own seeded generator, and only augmentations that
//! are switched on draw, so a config without them sees the same examples as before they existed.

use anyhow::{ensure, Result};
use tch::Tensor;

use crate::config::{AugmentConfig, ModelConfig};
use crate::image_io;
use crate::rng::SplitMix64;

/// An RGB image as three planes of `f32` in [0, 1] (values may leave the range between steps).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Planes {
    pub w: usize,
    pub h: usize,
    /// `[3][h][w]`, row-major.
    pub data: Vec<f32>,
}

impl Planes {
    pub(super) fn from_rgb(img: &image::RgbImage) -> Planes {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * w * h];
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * w * h + i] = px[c] as f32 / 255.0;
            }
        }
        Planes { w, h, data }
    }

    pub(super) fn filled(w: usize, h: usize, colour: [f32; 3]) -> Planes {
        let data = colour
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, w * h))
            .collect();
        Planes { w, h, data }
    }

    /// Copies `src` in with its top-left corner at `(x, y)`; it must fit.
    pub(super) fn paste(&mut self, src: &Planes, x: usize, y: usize) {
        for c in 0..3 {
            for r in 0..src.h {
                let from = (c * src.h + r) * src.w;
                let to = (c * self.h + y + r) * self.w + x;
                self.data[to..to + src.w].copy_from_slice(&src.data[from..from + src.w]);
            }
        }
    }

    pub(super) fn flip(&mut self) {
        self.data.chunks_mut(self.w).for_each(|row| row.reverse());
    }

    /// The network input: `(v - mean) / std` per channel.
    ///
    /// # Shapes
    /// returns `[3, h, w]` f32.
    pub(super) fn to_tensor(&self, mean: [f32; 3], std: [f32; 3]) -> Tensor {
        let hw = self.w * self.h;
        let data: Vec<f32> = self
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| (v - mean[i / hw]) / std[i / hw])
            .collect();
        Tensor::from_slice(&data).view([3, self.h as i64, self.w as i64])
    }

    /// The network input, as `model.input_norm` says (see `image_io::network_input`).
    pub(super) fn network_input(&self, model: &ModelConfig) -> Tensor {
        image_io::normalised(model, |mean, std| self.to_tensor(mean, std))
    }

    fn pixel(&self, i: usize) -> [f32; 3] {
        let hw = self.w * self.h;
        [self.data[i], self.data[hw + i], self.data[2 * hw + i]]
    }

    fn set_pixel(&mut self, i: usize, v: [f32; 3]) {
        let hw = self.w * self.h;
        (self.data[i], self.data[hw + i], self.data[2 * hw + i]) = (v[0], v[1], v[2]);
    }
}

/// Checks the `data.augment` ranges.
pub(crate) fn check_augment(a: &AugmentConfig) -> Result<()> {
    let ranges = [
        ("rotate", a.rotate, 90.0),
        ("brightness", a.brightness, 0.99),
        ("contrast", a.contrast, 0.99),
        ("saturation", a.saturation, 1.0),
        ("hue", a.hue, 0.5),
        ("gamma", a.gamma, 2.0),
        ("blur", a.blur, 10.0),
        ("noise", a.noise, 1.0),
    ];
    for (key, v, max) in ranges {
        ensure!(
            (0.0..=max).contains(&v),
            "`data.augment.{key}` must be in [0, {max}], got {v}"
        );
    }
    Ok(())
}

/// Uniform in `[-x, x]`.
fn symmetric(rng: &mut SplitMix64, x: f32) -> f32 {
    x * (2.0 * rng.next_f64() as f32 - 1.0)
}

/// Turns image and label by `degrees` about the centre (counter-clockwise on screen): the image
/// bilinearly, the label by nearest neighbour; what comes from outside is `fill` / `void`.
pub(super) fn rotate(
    p: &Planes,
    label: &[u8],
    degrees: f32,
    fill: [f32; 3],
    void: u8,
) -> (Planes, Vec<u8>) {
    let (w, h) = (p.w as f32, p.h as f32);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let mut out = Planes::filled(p.w, p.h, fill);
    let mut out_label = vec![void; label.len()];
    for y in 0..p.h {
        for x in 0..p.w {
            // The source point of this pixel's centre, by the inverse rotation (y points down).
            let (dx, dy) = (x as f32 + 0.5 - w / 2.0, y as f32 + 0.5 - h / 2.0);
            let sx = cos * dx - sin * dy + w / 2.0;
            let sy = sin * dx + cos * dy + h / 2.0;
            let i = y * p.w + x;
            if (0.0..w).contains(&sx) && (0.0..h).contains(&sy) {
                out_label[i] = label[sy as usize * p.w + sx as usize];
            }
            out.set_pixel(i, bilinear(p, sx - 0.5, sy - 0.5, fill));
        }
    }
    (out, out_label)
}

/// The image at `(u, v)` (pixel-centre coordinates), neighbours outside taken as `fill`.
fn bilinear(p: &Planes, u: f32, v: f32, fill: [f32; 3]) -> [f32; 3] {
    let (x0, y0) = (u.floor(), v.floor());
    let (fx, fy) = (u - x0, v - y0);
    let mut acc = [0f32; 3];
    for (ox, oy, wt) in [
        (0, 0, (1.0 - fx) * (1.0 - fy)),
        (1, 0, fx * (1.0 - fy)),
        (0, 1, (1.0 - fx) * fy),
        (1, 1, fx * fy),
    ] {
        let (x, y) = (x0 as i64 + ox, y0 as i64 + oy);
        let inside = (0..p.w as i64).contains(&x) && (0..p.h as i64).contains(&y);
        let px = if inside {
            p.pixel(y as usize * p.w + x as usize)
        } else {
            fill
        };
        for c in 0..3 {
            acc[c] += wt * px[c];
        }
    }
    acc
}

/// Luma (ITU-R BT.601 weights).
fn grey(px: [f32; 3]) -> f32 {
    0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]
}

/// The luminance-preserving hue rotation by `turns` of a full turn (the W3C filter-effects
/// `hueRotate` matrix).
fn hue_matrix(turns: f32) -> [[f32; 3]; 3] {
    let (s, c) = (turns * std::f32::consts::TAU).sin_cos();
    [
        [
            0.213 + c * 0.787 - s * 0.213,
            0.715 - c * 0.715 - s * 0.715,
            0.072 - c * 0.072 + s * 0.928,
        ],
        [
            0.213 - c * 0.213 + s * 0.143,
            0.715 + c * 0.285 + s * 0.140,
            0.072 - c * 0.072 - s * 0.283,
        ],
        [
            0.213 - c * 0.213 - s * 0.787,
            0.715 - c * 0.715 + s * 0.715,
            0.072 + c * 0.928 + s * 0.072,
        ],
    ]
}

/// Brightness, contrast, saturation, hue and gamma jitter, in that order, then a clamp to
/// [0, 1]. Draws one factor per switched-on setting.
pub(super) fn photometric(p: &mut Planes, a: &AugmentConfig, rng: &mut SplitMix64) {
    let mut factor = |x: f32| (x > 0.0).then(|| 1.0 + symmetric(rng, x));
    let brightness = factor(a.brightness);
    let contrast = factor(a.contrast);
    let saturation = factor(a.saturation);
    let hue = (a.hue > 0.0).then(|| hue_matrix(symmetric(rng, a.hue)));
    let gamma = (a.gamma > 0.0).then(|| symmetric(rng, a.gamma).exp());
    if let Some(f) = brightness {
        p.data.iter_mut().for_each(|v| *v *= f);
    }
    if let Some(f) = contrast {
        let n = p.w * p.h;
        let mean = (0..n).map(|i| grey(p.pixel(i))).sum::<f32>() / n as f32;
        p.data.iter_mut().for_each(|v| *v = mean + (*v - mean) * f);
    }
    for i in 0..p.w * p.h {
        let mut px = p.pixel(i);
        if let Some(f) = saturation {
            let g = grey(px);
            px = px.map(|v| g + (v - g) * f);
        }
        if let Some(m) = &hue {
            px = m.map(|row| row[0] * px[0] + row[1] * px[1] + row[2] * px[2]);
        }
        px = px.map(|v| v.clamp(0.0, 1.0));
        if let Some(g) = gamma {
            px = px.map(|v| v.powf(g));
        }
        p.set_pixel(i, px);
    }
}

/// Separable Gaussian blur with standard deviation `sigma` pixels, edges clamped.
pub(super) fn blur(p: &mut Planes, sigma: f32) {
    let r = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f32> = (-r..=r)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let (w, h) = (p.w as i64, p.h as i64);
    let mut tmp = vec![0f32; p.data.len()];
    // Rows, then columns; `at(c, x, y)` indexes plane c.
    let at =
        |c: i64, x: i64, y: i64| ((c * h + y.clamp(0, h - 1)) * w + x.clamp(0, w - 1)) as usize;
    for (c, y, x) in (0..3).flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |x| (c, y, x)))) {
        tmp[at(c, x, y)] = (-r..=r)
            .map(|d| kernel[(d + r) as usize] * p.data[at(c, x + d, y)])
            .sum();
    }
    for (c, y, x) in (0..3).flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |x| (c, y, x)))) {
        p.data[at(c, x, y)] = (-r..=r)
            .map(|d| kernel[(d + r) as usize] * tmp[at(c, x, y + d)])
            .sum();
    }
}

/// Adds Gaussian noise of standard deviation `std` to every value (Box-Muller over the
/// example's generator), then clamps to [0, 1].
pub(super) fn noise(p: &mut Planes, std: f32, rng: &mut SplitMix64) {
    for pair in p.data.chunks_mut(2) {
        let u1 = 1.0 - rng.next_f64(); // (0, 1]: ln is finite
        let u2 = rng.next_f64();
        let radius = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        for (v, z) in pair.iter_mut().zip([radius * c, radius * s]) {
            *v = (*v + std * z as f32).clamp(0.0, 1.0);
        }
    }
}

/// Blur and noise as `a` asks, each strength drawn per example.
pub(super) fn degrade(p: &mut Planes, a: &AugmentConfig, rng: &mut SplitMix64) {
    if a.blur > 0.0 {
        let sigma = a.blur * rng.next_f64() as f32;
        // Below a fifth of a pixel the kernel is a single tap: nothing to do.
        if sigma > 0.2 {
            blur(p, sigma);
        }
    }
    if a.noise > 0.0 {
        let std = a.noise * rng.next_f64() as f32;
        noise(p, std, rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16x8 image: a horizontal red-to-blue ramp.
    fn ramp() -> Planes {
        let mut p = Planes::filled(16, 8, [0.0; 3]);
        for i in 0..16 * 8 {
            let t = (i % 16) as f32 / 15.0;
            p.set_pixel(i, [1.0 - t, 0.2, t]);
        }
        p
    }

    fn close(a: [f32; 3], b: [f32; 3], tol: f32) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < tol)
    }

    #[test]
    fn hue_rotation_keeps_grey_and_a_full_turn_is_the_identity() {
        for turns in [0.0, 0.13, -0.4] {
            let m = hue_matrix(turns);
            let g = m.map(|row| row.iter().sum::<f32>() * 0.5);
            assert!(close(g, [0.5; 3], 1e-5), "{turns}: grey became {g:?}");
        }
        let id = hue_matrix(1.0);
        for (r, row) in id.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - f32::from(r == c)).abs() < 1e-5, "{id:?}");
            }
        }
        // Half a turn takes red towards cyan.
        let red = hue_matrix(0.5).map(|row| row[0]);
        assert!(red[0] < red[1] && red[0] < red[2], "{red:?}");
    }

    #[test]
    fn photometric_jitter_is_seeded_changes_the_image_and_stays_in_range() {
        let a = AugmentConfig {
            brightness: 0.3,
            contrast: 0.3,
            saturation: 0.5,
            hue: 0.1,
            gamma: 0.3,
            ..Default::default()
        };
        let run = |seed| {
            let mut p = ramp();
            photometric(&mut p, &a, &mut SplitMix64::new(seed));
            p
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        assert_ne!(run(3), ramp());
        assert!(run(3).data.iter().all(|v| (0.0..=1.0).contains(v)));
        // Switched off, nothing changes and nothing is drawn.
        let mut p = ramp();
        let mut rng = SplitMix64::new(5);
        photometric(&mut p, &AugmentConfig::default(), &mut rng);
        assert_eq!((p, rng.next_f64()), (ramp(), SplitMix64::new(5).next_f64()));
    }

    #[test]
    fn brightness_and_gamma_move_values_the_expected_way() {
        // Brightness alone scales every value by one factor.
        let mut p = Planes::filled(4, 4, [0.5, 0.25, 0.1]);
        let a = AugmentConfig {
            brightness: 0.5,
            ..Default::default()
        };
        photometric(&mut p, &a, &mut SplitMix64::new(1));
        let f = p.pixel(0)[0] / 0.5;
        assert!((f - 1.0).abs() > 1e-3 && (0.5..=1.5).contains(&f), "{f}");
        assert!(close(p.pixel(7), [0.5 * f, 0.25 * f, 0.1 * f], 1e-6));
        // Gamma keeps 0 and 1 fixed.
        let mut p = Planes::filled(2, 2, [0.0, 1.0, 0.5]);
        let a = AugmentConfig {
            gamma: 0.5,
            ..Default::default()
        };
        photometric(&mut p, &a, &mut SplitMix64::new(2));
        let px = p.pixel(0);
        assert!(
            px[0] == 0.0 && px[1] == 1.0 && (px[2] - 0.5).abs() > 1e-3,
            "{px:?}"
        );
    }

    #[test]
    fn a_quarter_turn_of_a_square_moves_label_and_image_together() {
        // 4x4, the label of pixel (x, y) is its column x; the image's red equals x / 3.
        let mut p = Planes::filled(4, 4, [0.0; 3]);
        let label: Vec<u8> = (0..16).map(|i| (i % 4) as u8).collect();
        for i in 0..16 {
            p.set_pixel(i, [(i % 4) as f32 / 3.0, 0.0, 0.0]);
        }
        let (out, out_label) = rotate(&p, &label, 90.0, [0.5; 3], 9);
        // A counter-clockwise quarter turn: rows of the output carry the old columns, the
        // top row the rightmost one.
        for y in 0..4 {
            for x in 0..4 {
                let want = 3 - y as u8;
                assert_eq!(out_label[y * 4 + x], want, "{out_label:?}");
                assert!((out.pixel(y * 4 + x)[0] - want as f32 / 3.0).abs() < 1e-5);
            }
        }
        // An eighth of a turn leaves the corners void, their colour mostly the fill (the
        // image has no green, the fill has).
        let (out, out_label) = rotate(&p, &label, 45.0, [0.5; 3], 9);
        assert_eq!(out_label[0], 9);
        assert!(out.pixel(0)[1] > 0.25, "{:?}", out.pixel(0));
        assert_ne!(out_label[5], 9);
    }

    #[test]
    fn blur_keeps_flat_regions_and_smooths_edges() {
        let mut flat = Planes::filled(8, 8, [0.3, 0.6, 0.9]);
        blur(&mut flat, 1.5);
        assert!(flat
            .data
            .iter()
            .zip(&Planes::filled(8, 8, [0.3, 0.6, 0.9]).data)
            .all(|(a, b)| (a - b).abs() < 1e-5));
        let mut edge = Planes::filled(8, 1, [0.0; 3]);
        for x in 4..8 {
            edge.set_pixel(x, [1.0; 3]);
        }
        blur(&mut edge, 1.0);
        let row: Vec<f32> = edge.data[..8].to_vec();
        assert!(
            row[3] > 0.1 && row[4] < 0.9 && row[0] < 0.01 && row[7] > 0.99,
            "{row:?}"
        );
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    }

    #[test]
    fn noise_has_the_asked_spread_and_is_seeded() {
        let mut p = Planes::filled(64, 64, [0.5; 3]);
        noise(&mut p, 0.05, &mut SplitMix64::new(9));
        let n = p.data.len() as f32;
        let mean = p.data.iter().sum::<f32>() / n;
        let sd = (p.data.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(
            (mean - 0.5).abs() < 0.005 && (sd - 0.05).abs() < 0.005,
            "{mean} {sd}"
        );
        let mut q = Planes::filled(64, 64, [0.5; 3]);
        noise(&mut q, 0.05, &mut SplitMix64::new(9));
        assert_eq!(p, q);
    }

    #[test]
    fn out_of_range_settings_name_their_key() {
        let a = AugmentConfig {
            hue: 0.7,
            ..Default::default()
        };
        let err = check_augment(&a).unwrap_err().to_string();
        assert!(err.contains("`data.augment.hue`"), "{err}");
        check_augment(&AugmentConfig::default()).unwrap();
    }
}
