//! Reading labels: 8-bit class indices (void = `classes`) or RGB colours of `model.palette`.
//! Every pixel is checked when read, so a bad label fails with the file and pixel to look at
//! instead of as a CUDA assert in the loss.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use super::Pair;
use crate::config::{DataConfig, LabelFormat, ModelConfig};
use crate::image_io;

/// A decoded label: width, height and one class index per pixel, row-major.
pub(super) type Label = (u32, u32, Vec<u8>);

/// The most pixels a label may have (8192 x 8192), checked from the file's header before
/// decoding: a few hundred kilobytes of PNG can claim a gigabyte of pixels.
const MAX_LABEL_PIXELS: u64 = 1 << 26;

/// Reads a label PNG into class indices and checks every pixel.
///
/// `Index`: 8-bit grey (16-bit grey is accepted when every value is below 256); values must be
/// `<= classes` (`classes` is void). `Colour`: RGB(A) mapped through `palette` (`classes + 1`
/// colours, the last is void). An out-of-range value or unknown colour is an error naming the
/// file, the value and the pixel `(x, y)`.
pub(crate) fn load_label(
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
            let out_of_range = |i: usize, value: u16| {
                let (x, y) = at(i);
                anyhow!(
                    "label {} has value {value} at pixel ({x}, {y}); valid values are 0..={classes} ({classes} is void; check `model.classes`)",
                    path.display(),
                )
            };
            let values: Vec<u8> = match img {
                DynamicImage::ImageLuma8(g) => g.into_raw(),
                DynamicImage::ImageLuma16(g) => {
                    let raw = g.into_raw();
                    if let Some(i) = raw.iter().position(|&v| i64::from(v) > classes) {
                        return Err(out_of_range(i, raw[i]));
                    }
                    raw.into_iter().map(|v| v as u8).collect()
                }
                other => bail!(
                    "label {} is {:?}; index labels must be 8-bit grey PNGs (for RGB labels set `data.label_format: colour`)",
                    path.display(),
                    other.color()
                ),
            };
            if let Some(i) = values.iter().position(|&v| i64::from(v) > classes) {
                return Err(out_of_range(i, values[i].into()));
            }
            values
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
    let bad = |e: image::ImageError| anyhow!("cannot decode label {}: {e}", path.display());
    let decoder = ImageReader::open(path)
        .with_context(|| format!("cannot open label {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read label {}", path.display()))?
        .into_decoder()
        .map_err(bad)?;
    let (w, h) = decoder.dimensions();
    ensure!(
        u64::from(w) * u64::from(h) <= MAX_LABEL_PIXELS,
        "label {} claims {w}x{h} pixels, more than a label may have ({MAX_LABEL_PIXELS}): resize the dataset",
        path.display()
    );
    DynamicImage::from_decoder(decoder).map_err(bad)
}

/// Loads an image and its label and checks that their sizes agree.
pub(crate) fn load_pair(
    pair: &Pair,
    cfg: &DataConfig,
    model: &ModelConfig,
) -> Result<(RgbImage, Label)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{data, model, write_pair};
    use image::{GrayImage, ImageBuffer, Luma, Rgb};

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
}
