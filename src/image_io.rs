//! Reading images from disk into RGB, and turning them into normalised network input.
//!
//! Grey, grey+alpha, RGB, RGBA and 16-bit PNGs and JPEGs all come out as 8-bit RGB; anything
//! else (a truncated file, a text file, an image below 32x32) is an error naming the file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{ImageReader, RgbImage};
use tch::{Kind, Tensor};

use crate::config::{InputNorm, ModelConfig};

/// Smallest side the networks accept (five 2x2 pools must leave at least one pixel).
pub const MIN_SIDE: u32 = 32;

/// Decodes an image file to 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let reader = ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if reader.format().is_none() {
        bail!("{} is not an image (expected PNG or JPEG)", path.display());
    }
    let img = reader.decode().map_err(|e| {
        anyhow::anyhow!(
            "cannot decode image {}: {e} (corrupt or truncated?)",
            path.display()
        )
    })?;
    let rgb = img.to_rgb8();
    if rgb.width() < MIN_SIDE || rgb.height() < MIN_SIDE {
        bail!(
            "image {} is {}x{}; the network needs at least {MIN_SIDE}x{MIN_SIDE}",
            path.display(),
            rgb.width(),
            rgb.height()
        );
    }
    Ok(rgb)
}

/// Image files directly inside `dir` (PNG and JPEG), sorted by name.
pub(crate) fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_name(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether a path has an image extension we read.
pub fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        .unwrap_or(false)
}

/// RGB image to a normalised float tensor.
///
/// # Shapes
/// returns `[3, H, W]`, `(x / 255 - mean) / std` per channel.
pub(crate) fn to_tensor(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let hw = (w * h) as usize;
    let mut planes = vec![0f32; 3 * hw];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            planes[c * hw + i] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Tensor::from_slice(&planes)
        .view([3, h, w])
        .to_kind(Kind::Float)
}

/// The network input for an image already at the network's size, as `model.input_norm` says.
///
/// # Shapes
/// returns `[3, H, W]`.
pub(crate) fn network_input(img: &RgbImage, model: &ModelConfig) -> Tensor {
    normalised(model, |mean, std| to_tensor(img, mean, std))
}

/// The one place `model.input_norm` is applied, for inference ([`network_input`]) and training
/// (`data::augment::Planes`): `to_tensor(mean, std)` gives `[3, H, W]` as `(v - mean) / std`.
pub(crate) fn normalised(
    model: &ModelConfig,
    to_tensor: impl Fn([f32; 3], [f32; 3]) -> Tensor,
) -> Tensor {
    match model.input_norm {
        InputNorm::Fixed => to_tensor(model.mean, model.std),
        InputNorm::PerImage => standardise(&to_tensor([0.0; 3], [1.0; 3])),
    }
}

/// Each channel of `[3, H, W]` minus its mean over the image, divided by its standard
/// deviation (at least 0.01, so that a flat image stays finite).
fn standardise(t: &Tensor) -> Tensor {
    let dims: &[i64] = &[1, 2];
    let mean = t.mean_dim(dims, true, Kind::Float);
    let std = t.std_dim(dims, false, true).clamp_min(0.01);
    (t - mean) / std
}

/// Resizes to `[height, width]` with bilinear filtering (a no-op when already that size).
pub(crate) fn resize_rgb(img: &RgbImage, size: [i64; 2]) -> RgbImage {
    let (h, w) = (size[0] as u32, size[1] as u32);
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_is_channel_major_and_normalised() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(1, 0, image::Rgb([255, 0, 51]));
        let t = to_tensor(&img, [0.0; 3], [1.0, 1.0, 0.5]);
        assert_eq!(t.size(), vec![3, 1, 2]);
        let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.4]);
    }

    #[test]
    fn per_image_input_ignores_a_global_change_of_brightness_and_contrast() {
        let model = ModelConfig {
            input_norm: InputNorm::PerImage,
            ..ModelConfig::default()
        };
        let img = RgbImage::from_fn(16, 12, |x, y| {
            image::Rgb([(x * 15) as u8, (y * 20) as u8, ((x + y) * 9) as u8])
        });
        // Darker and flatter, with a cast: v / 2 + (10, 20, 30), exact in 8 bits for even v.
        let even = RgbImage::from_fn(16, 12, |x, y| {
            let p = img.get_pixel(x, y);
            image::Rgb([p[0] & !1, p[1] & !1, p[2] & !1])
        });
        let dusk = RgbImage::from_fn(16, 12, |x, y| {
            let p = even.get_pixel(x, y);
            image::Rgb([p[0] / 2 + 10, p[1] / 2 + 20, p[2] / 2 + 30])
        });
        let (a, b) = (network_input(&even, &model), network_input(&dusk, &model));
        assert!(a.allclose(&b, 1e-5, 1e-5, false));
        let per_channel = |t: &Tensor| {
            Vec::<f32>::try_from(t.mean_dim(&[1i64, 2][..], false, Kind::Float)).unwrap()
        };
        assert!(per_channel(&a).iter().all(|m| m.abs() < 1e-5));
        // The fixed normalisation tells them apart.
        let fixed = ModelConfig::default();
        assert!(!network_input(&even, &fixed).allclose(
            &network_input(&dusk, &fixed),
            1e-2,
            1e-2,
            false
        ));
        // A flat image stays finite.
        let flat = network_input(&RgbImage::new(32, 32), &model);
        assert_eq!(flat.abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn text_file_is_not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.png");
        std::fs::write(&p, "hello").unwrap();
        let err = load_rgb(&p).unwrap_err().to_string();
        assert!(err.contains("notes.png"), "{err}");
    }
}
