//! Pictures of predictions: class maps coloured with a palette, overlays on the input, uncertainty
//! heatmaps with a labelled colour bar (plain or blended over the grey input), a class legend, and
//! atomic PNG writing.
//!
//! Pure Rust over plain slices (row-major, `w * h` values), so everything here is testable without
//! libtorch. Text is DejaVu Sans (bundled), drawn anti-aliased by imageproc.

use std::ops::Deref;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{FontRef, PxScale};
use anyhow::{Context, Result};
use colorgrad::Gradient;
use image::codecs::png::PngEncoder;
use image::{imageops, EncodableLayout, GrayImage, ImageBuffer, PixelWithColorType, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut};
use imageproc::rect::Rect;

use crate::atomic::write_atomic;

use crate::mc::Measure;

/// How the uncertainty heatmap maps values to colours: `min` gets the colour map's first colour,
/// `max` its last; values outside are clamped. Always `max > min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub min: f32,
    pub max: f32,
}

impl Scale {
    /// `[min, max]`, widened by a tiny step when `max <= min` so the range is never empty.
    fn new(min: f32, max: f32) -> Scale {
        if max > min {
            Scale { min, max }
        } else {
            Scale {
                min,
                max: min + (min.abs() * 1e-6).max(1e-12),
            }
        }
    }

    /// Fixed absolute scale for a measure with K classes, so maps of different images compare:
    /// a quarter of the measure's theoretical range (see [`Measure::bound`]) for variance and
    /// mutual information, whose values sit far below their bounds in practice, and the whole
    /// range `[0, ln K]` for entropy. Values above the top take the top colour.
    pub fn fixed(measure: Measure, classes: usize) -> Scale {
        let bound = measure.bound(classes);
        let max = match measure {
            Measure::Variance | Measure::MutualInfo => bound / 4.0,
            Measure::Entropy => bound,
        };
        Scale::new(0.0, max)
    }

    /// Per-image scale: `[min, max]` of the finite values; `[0, 1]` when there are none.
    pub(crate) fn of_values(values: &[f32]) -> Scale {
        let (min, max) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if min > max {
            Scale { min: 0.0, max: 1.0 }
        } else {
            Scale::new(min, max)
        }
    }
}

/// Colour of NaN values in heatmaps: a neutral grey that the colour map never produces.
const NAN_COLOUR: [u8; 3] = [128, 128, 128];

/// The colour map sampled at 256 evenly spaced points (as matplotlib does), built once.
fn colour_map() -> &'static [[u8; 3]; 256] {
    static LUT: OnceLock<[[u8; 3]; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        let grad = colorgrad::preset::inferno();
        let mut lut = [[0u8; 3]; 256];
        for (i, c) in lut.iter_mut().enumerate() {
            let [r, g, b, _] = grad.at(i as f32 / 255.0).to_rgba8();
            *c = [r, g, b];
        }
        lut
    })
}

/// The colour for one value under a scale (inferno, clamped to the scale; NaN -> [`NAN_COLOUR`]).
/// Heatmaps, their colour bars and the video tool all go through here, so one value always gets
/// one colour.
pub fn colour_of(value: f32, scale: Scale) -> [u8; 3] {
    let t = ((value - scale.min) / (scale.max - scale.min)).clamp(0.0, 1.0);
    if t.is_nan() {
        return NAN_COLOUR;
    }
    colour_map()[(t * 255.0).round() as usize]
}

/// Class index map (u8 per pixel, row-major, `w * h`) -> grey image of the raw indices, the
/// label format tools read back.
///
/// # Panics
/// If `classes.len() != w * h`.
pub fn class_index_image(classes: &[u8], w: u32, h: u32) -> GrayImage {
    check_len(classes.len(), w, h);
    GrayImage::from_raw(w, h, classes.to_vec()).expect("length checked above")
}

/// Class map coloured with a palette; an index `>= palette.len()` is black.
///
/// # Panics
/// If `classes.len() != w * h`.
pub fn colour_classes(classes: &[u8], w: u32, h: u32, palette: &[[u8; 3]]) -> RgbImage {
    check_len(classes.len(), w, h);
    let raw = classes
        .iter()
        .flat_map(|&c| palette.get(c as usize).copied().unwrap_or([0, 0, 0]))
        .collect();
    RgbImage::from_raw(w, h, raw).expect("length checked above")
}

/// Blends `colours` over `input` with opacity `alpha` (clamped to [0, 1]): 0 gives the input,
/// 1 the colours.
///
/// # Panics
/// If the two images differ in size.
pub fn overlay(input: &RgbImage, colours: &RgbImage, alpha: f32) -> RgbImage {
    assert_eq!(
        input.dimensions(),
        colours.dimensions(),
        "overlay: input and colours differ in size"
    );
    let a = alpha.clamp(0.0, 1.0);
    let raw = input
        .as_raw()
        .iter()
        .zip(colours.as_raw())
        .map(|(&i, &c)| (i as f32 * (1.0 - a) + c as f32 * a).round() as u8)
        .collect();
    RgbImage::from_raw(input.width(), input.height(), raw).expect("same size as input")
}

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [24, 24, 24];
const FRAME: [u8; 3] = [96, 96, 96];
/// Opacity of the heatmap colours over the grey input in [`heat_over_grey`].
const HEAT_ALPHA: f32 = 0.6;

/// DejaVu Sans from the `dejavu` crate, parsed once: text looks the same on every machine.
fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(dejavu::sans::regular()).expect("the bundled DejaVu Sans parses")
    })
}

/// Width in pixels of `text` set `size` pixels tall (a line is `size` pixels tall).
pub(crate) fn text_width(text: &str, size: f32) -> u32 {
    imageproc::drawing::text_size(PxScale::from(size), font(), text).0
}

/// Anti-aliased `text`, `size` pixels tall, with the top-left corner of its line at `(x, y)`.
fn draw_text(img: &mut RgbImage, (x, y): (u32, u32), size: f32, text: &str) {
    let (x, y) = (x as i32, y as i32);
    draw_text_mut(img, Rgb(INK), x, y, PxScale::from(size), font(), text);
}

/// Text size that reads well beside an image `h` pixels tall: 20 px for CamVid's 360 rows, in
/// proportion elsewhere, never under 11 px.
fn font_size(h: u32) -> f32 {
    (h as f32 / 18.0).clamp(11.0, 40.0)
}

/// Heatmap of per-pixel values (`w * h`, row-major) in inferno under `scale`, with a panel on the
/// right: `label` on top, a vertical colour bar (max at the top) and tick labels for max, middle
/// and min (an image too short for the text gets a bare bar). The output is `h` tall and wider
/// than `w`; the heat part is exactly `colour_of(value, scale)` at x in `[0, w)`. Text grows
/// with the image height.
///
/// # Panics
/// If `values.len() != w * h`.
pub fn heatmap(values: &[f32], w: u32, h: u32, scale: Scale, label: &str) -> RgbImage {
    check_len(values.len(), w, h);
    let size = font_size(h);
    let line = size.ceil() as u32;
    let pad = line / 3;
    let mid = scale.min + 0.5 * (scale.max - scale.min);
    let ticks = [scale.max, mid, scale.min].map(format_tick);
    // The bar is `line` wide; its ticks reach `pad` to the right, a gap of `pad`, the labels.
    let (bar_x, labels_x) = (w + pad, w + 3 * pad + line);
    let labels_w = ticks.iter().map(|t| text_width(t, size)).max().unwrap_or(0);
    let panel_w = (labels_x - w + labels_w + pad).max(2 * pad + text_width(label, size));
    let mut img = RgbImage::from_fn(w + panel_w, h, |x, y| match x < w {
        true => Rgb(colour_of(values[(y * w + x) as usize], scale)),
        false => Rgb(WHITE),
    });
    // The tick labels are centred on the bar's ends and middle, under the name; they must not
    // touch.
    let (top, bottom) = (
        2 * pad + line + line / 2,
        h.saturating_sub(1 + pad + line / 2),
    );
    let labelled = bottom >= top + 2 * (line + pad);
    let (top, bottom) = if labelled {
        (top, bottom)
    } else {
        (0, h.saturating_sub(1))
    };
    for y in top..=bottom {
        let t = (bottom - y) as f32 / (bottom - top).max(1) as f32;
        let c = Rgb(colour_of(scale.min + t * (scale.max - scale.min), scale));
        let row = Rect::at(bar_x as i32, y as i32).of_size(line, 1);
        draw_filled_rect_mut(&mut img, row, c);
    }
    if labelled {
        draw_text(&mut img, (bar_x, pad), size, label);
        let outline =
            Rect::at(bar_x as i32 - 1, top as i32 - 1).of_size(line + 2, bottom - top + 3);
        draw_hollow_rect_mut(&mut img, outline, Rgb(FRAME));
        for (text, y) in ticks.iter().zip([top, (top + bottom) / 2, bottom]) {
            let tick = Rect::at((bar_x + line) as i32, y as i32).of_size(pad, 1 + line / 16);
            draw_filled_rect_mut(&mut img, tick, Rgb(INK));
            draw_text(&mut img, (labels_x, y - line / 2), size, text);
        }
    }
    img
}

/// `heatmap` (from [`heatmap`], its heat part the size of `input`) with the heat part blended
/// over a grey copy of `input`, so the uncertain objects can be told apart; the colour bar panel
/// is kept as it is.
///
/// # Panics
/// If `heatmap` is narrower or of another height than `input`.
pub fn heat_over_grey(input: &RgbImage, heatmap: &RgbImage) -> RgbImage {
    assert!(
        heatmap.height() == input.height() && heatmap.width() >= input.width(),
        "heat_over_grey: the heatmap does not fit the input"
    );
    let grey = imageops::grayscale(input);
    let mut out = heatmap.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        if let Some(g) = grey.get_pixel_checked(x, y) {
            let g = g.0[0] as f32 * (1.0 - HEAT_ALPHA);
            p.0 = p.0.map(|c| (g + c as f32 * HEAT_ALPHA).round() as u8);
        }
    }
    out
}

/// A class legend: one row per class name, a colour swatch (outlined, so black shows) and the
/// name, on white, in text `size` pixels tall. A name without a palette entry gets a black
/// swatch, as in [`colour_classes`].
pub fn legend(names: &[String], palette: &[[u8; 3]], size: f32) -> RgbImage {
    let line = size.ceil() as u32;
    let (pad, row_h, swatch) = (line / 3, line + line / 4, line * 3 / 4);
    let text_x = pad + swatch + pad;
    let names_w = names.iter().map(|n| text_width(n, size)).max().unwrap_or(0);
    let height = 2 * pad + names.len() as u32 * row_h;
    let mut img = RgbImage::from_pixel(text_x + names_w + pad, height, Rgb(WHITE));
    for (i, name) in names.iter().enumerate() {
        let y = pad + i as u32 * row_h;
        let colour = palette.get(i).copied().unwrap_or([0, 0, 0]);
        let swatch_at = Rect::at(pad as i32, (y + (row_h - swatch) / 2) as i32);
        draw_filled_rect_mut(&mut img, swatch_at.of_size(swatch, swatch), Rgb(colour));
        draw_hollow_rect_mut(&mut img, swatch_at.of_size(swatch, swatch), Rgb(FRAME));
        draw_text(&mut img, (text_x, y + (row_h - line) / 2), size, name);
    }
    img
}

/// Writes a PNG atomically (see [`crate::atomic::write_atomic`]): a crash never leaves a
/// half-written file under the final name. Takes any image buffer the PNG encoder accepts
/// (`RgbImage`, `GrayImage`, 16-bit, ...).
pub fn save_png_atomic<P, C>(img: &ImageBuffer<P, C>, path: &Path) -> Result<()>
where
    P: PixelWithColorType,
    [P::Subpixel]: EncodableLayout,
    C: Deref<Target = [P::Subpixel]>,
{
    let mut bytes = Vec::new();
    img.write_with_encoder(PngEncoder::new(&mut bytes))
        .with_context(|| format!("encoding PNG {}", path.display()))?;
    write_atomic(path, &bytes)
}

fn check_len(len: usize, w: u32, h: u32) {
    assert_eq!(
        len,
        w as usize * h as usize,
        "pixel count does not match {w}x{h}"
    );
}

/// A tick label with about three significant digits.
fn format_tick(v: f32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    if (-3..4).contains(&mag) {
        let decimals = (2 - mag).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{v:.1e}");
        s.replace(".0e", "e")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CAMVID_CLASSES, CAMVID_PALETTE};

    fn luma(c: [u8; 3]) -> f32 {
        0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32
    }

    #[test]
    fn palette_colours_a_known_map_and_blacks_out_unknown_indices() {
        let classes = [0u8, 3, 11, 200, 8, 1];
        let img = colour_classes(&classes, 3, 2, &CAMVID_PALETTE);
        assert_eq!(img.dimensions(), (3, 2));
        assert_eq!(img.get_pixel(0, 0).0, CAMVID_PALETTE[0]);
        assert_eq!(img.get_pixel(1, 0).0, [128, 64, 128]); // road
        assert_eq!(img.get_pixel(2, 0).0, [0, 0, 0]); // void
        assert_eq!(img.get_pixel(0, 1).0, [0, 0, 0]); // out of the palette
        assert_eq!(img.get_pixel(1, 1).0, CAMVID_PALETTE[8]);
        assert_eq!(img.get_pixel(2, 1).0, CAMVID_PALETTE[1]);
    }

    #[test]
    fn class_index_image_keeps_raw_indices_row_major() {
        let classes: Vec<u8> = (0..12).collect();
        let img = class_index_image(&classes, 4, 3);
        assert_eq!(img.dimensions(), (4, 3));
        assert_eq!(img.get_pixel(1, 2).0, [9]);
        assert_eq!(img.as_raw(), &classes);
    }

    #[test]
    #[should_panic(expected = "pixel count")]
    fn colour_classes_with_wrong_length_panics() {
        colour_classes(&[0; 5], 3, 2, &CAMVID_PALETTE);
    }

    #[test]
    fn overlay_with_alpha_zero_is_input_and_one_is_colours() {
        let input = RgbImage::from_fn(5, 4, |x, y| Rgb([x as u8 * 40, y as u8 * 50, 7]));
        let colours = RgbImage::from_fn(5, 4, |x, y| Rgb([200, x as u8 + y as u8, 255]));
        assert_eq!(overlay(&input, &colours, 0.0), input);
        assert_eq!(overlay(&input, &colours, 1.0), colours);
        assert_eq!(overlay(&input, &colours, 7.0), colours, "alpha is clamped");
        let half = overlay(&input, &colours, 0.5);
        assert_eq!(half.get_pixel(0, 0).0, [100, 0, 131]);
    }

    #[test]
    fn colour_of_brightens_monotonically_and_clamps_outside_the_scale() {
        let scale = Scale {
            min: -1.0,
            max: 3.0,
        };
        let mut prev = -1.0;
        for i in 0..=400 {
            let v = -1.0 + 4.0 * i as f32 / 400.0;
            let l = luma(colour_of(v, scale));
            assert!(l >= prev - 0.5, "luminance drops at {v}: {l} < {prev}");
            prev = l;
        }
        assert!(luma(colour_of(3.0, scale)) - luma(colour_of(-1.0, scale)) > 200.0);
        assert_eq!(colour_of(-5.0, scale), colour_of(-1.0, scale));
        assert_eq!(colour_of(f32::NEG_INFINITY, scale), colour_of(-1.0, scale));
        assert_eq!(colour_of(9.0, scale), colour_of(3.0, scale));
        assert_eq!(colour_of(f32::INFINITY, scale), colour_of(3.0, scale));
        assert_eq!(colour_of(f32::NAN, scale), NAN_COLOUR);
        // Inferno's ends.
        assert_eq!(colour_of(-1.0, scale), [0, 0, 4]);
        assert_eq!(colour_of(3.0, scale), [252, 255, 164]);
    }

    #[test]
    fn fixed_scale_for_eleven_classes() {
        let v = Scale::fixed(Measure::Variance, 11);
        assert_eq!(v.min, 0.0);
        assert!((v.max - 10.0 / 121.0 / 4.0).abs() < 1e-7, "{}", v.max);
        let e = Scale::fixed(Measure::Entropy, 11);
        assert!((e.max - 2.397_895_3).abs() < 1e-6, "{}", e.max);
        let mi = Scale::fixed(Measure::MutualInfo, 11);
        assert!((mi.max - 2.397_895_3 / 4.0).abs() < 1e-6, "{}", mi.max);
        // Degenerate class counts still give a usable range.
        assert!(Scale::fixed(Measure::Entropy, 1).max > 0.0);
    }

    #[test]
    fn variance_bound_is_reached_by_uniform_one_hot_samples() {
        // K samples, sample k one-hot on class k: per-class variance p(1-p) with p = 1/K.
        let k = 11usize;
        let mut total = 0.0f64;
        for c in 0..k {
            let xs: Vec<f64> = (0..k).map(|s| (s == c) as u8 as f64).collect();
            let mean = xs.iter().sum::<f64>() / k as f64;
            total += xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / k as f64;
        }
        let fixed = Measure::Variance.bound(k) as f64;
        assert!((total / k as f64 - fixed).abs() < 1e-7);
    }

    #[test]
    fn scale_of_values_ignores_non_finite_and_is_never_empty() {
        let s = Scale::of_values(&[0.5, f32::NAN, -2.0, f32::INFINITY, 4.0]);
        assert_eq!(
            s,
            Scale {
                min: -2.0,
                max: 4.0
            }
        );
        let flat = Scale::of_values(&[1.0; 9]);
        assert_eq!(flat.min, 1.0);
        assert!(flat.max > flat.min);
        let zero = Scale::of_values(&[0.0; 4]);
        assert!(zero.max > 0.0);
        assert_eq!(Scale::of_values(&[f32::NAN]), Scale { min: 0.0, max: 1.0 });
        assert_eq!(Scale::of_values(&[]), Scale { min: 0.0, max: 1.0 });
    }

    #[test]
    fn measure_names_match_clap_and_serde() {
        use clap::ValueEnum;
        for m in Measure::ALL {
            let clap_name = m.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(clap_name, m.name());
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
        assert_eq!(Measure::MutualInfo.name(), "mutual-info");
    }

    #[test]
    fn heatmap_is_wider_with_the_heat_part_coloured_by_value() {
        let (w, h) = (48u32, 40u32);
        let values: Vec<f32> = (0..w * h)
            .map(|i| {
                if i % 3 == 0 {
                    0.25
                } else {
                    (i % 7) as f32 / 7.0
                }
            })
            .collect();
        let scale = Scale::fixed(Measure::Entropy, 11);
        let img = heatmap(&values, w, h, scale, "entropy");
        assert_eq!(img.height(), h);
        assert!(
            img.width() > w + 20,
            "room for bar and labels: {}",
            img.width()
        );
        for (i, &v) in values.iter().enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            assert_eq!(img.get_pixel(x, y).0, colour_of(v, scale));
        }
        // Equal values, equal colours.
        let quarter = colour_of(0.25, scale);
        assert!((0..w * h)
            .step_by(3)
            .all(|i| img.get_pixel(i % w, i / w).0 == quarter));
    }

    /// Pixels dark enough to be text (anti-aliased glyph cores).
    fn dark(img: &RgbImage, x0: u32) -> usize {
        img.enumerate_pixels()
            .filter(|(x, _, p)| *x >= x0 && luma(p.0) < 90.0)
            .count()
    }

    #[test]
    fn heatmap_bar_runs_from_max_at_top_to_min_at_bottom_with_labels() {
        let (w, h) = (32u32, 120u32);
        let scale = Scale { min: 0.0, max: 2.0 };
        let img = heatmap(&vec![1.0; (w * h) as usize], w, h, scale, "variance");
        let (top_c, bottom_c) = (colour_of(2.0, scale), colour_of(0.0, scale));
        let bar_col = (w..img.width())
            .find(|&x| ![WHITE, FRAME].contains(&img.get_pixel(x, h / 2).0))
            .expect("a colour bar")
            + 2;
        let rows: Vec<[u8; 3]> = (0..h).map(|y| img.get_pixel(bar_col, y).0).collect();
        let top = rows
            .iter()
            .position(|&c| c == top_c)
            .expect("max at the top");
        let bottom = rows
            .iter()
            .rposition(|&c| c == bottom_c)
            .expect("min at the bottom");
        assert!(bottom > top + (h / 3) as usize, "{top}..{bottom}");
        // Darker all the way down.
        assert!(rows[top..=bottom]
            .windows(2)
            .all(|p| luma(p[1]) <= luma(p[0]) + 0.5));
        assert!(dark(&img, bar_col + 8) > 40, "tick labels are drawn");
    }

    #[test]
    fn heatmap_of_tiny_images_does_not_panic() {
        for (w, h) in [(1, 1), (3, 2), (8, 9), (5, 30)] {
            let img = heatmap(
                &vec![0.3; (w * h) as usize],
                w,
                h,
                Scale::of_values(&[0.3]),
                "mutual-info",
            );
            assert_eq!(img.height(), h);
            assert!(img.width() > w);
        }
    }

    #[test]
    fn tick_labels_have_about_three_significant_digits() {
        let cases = [
            (0.0, "0"),
            (2.3979, "2.4"),
            (1.19895, "1.2"),
            (0.082_644_63, "0.0826"),
            (0.5, "0.5"),
            (-1.25, "-1.25"),
            (1234.0, "1234"),
            (0.000_012_3, "1.2e-5"),
            (45678.0, "4.6e4"),
        ];
        for (v, want) in cases {
            assert_eq!(format_tick(v), want, "{v}");
        }
    }

    #[test]
    fn legend_has_a_swatch_and_text_per_class() {
        let names: Vec<String> = CAMVID_CLASSES.iter().map(|s| s.to_string()).collect();
        let img = legend(&names, &CAMVID_PALETTE, 16.0);
        assert!(img.width() > 80 && img.height() >= 16 * names.len() as u32);
        for c in &CAMVID_PALETTE[..11] {
            assert!(img.pixels().any(|p| p.0 == *c), "swatch {c:?} missing");
        }
        // Text right of the swatches; black Void's swatch is dark too, so start past it.
        let text = dark(&img, 20);
        assert!(
            text > 20 * names.len(),
            "names are drawn: {text} dark pixels"
        );
        let bigger = legend(&names, &CAMVID_PALETTE, 32.0);
        assert!(bigger.height() > img.height() && bigger.width() > img.width());
        let empty = legend(&[], &CAMVID_PALETTE, 16.0);
        assert!(empty.width() > 0 && empty.height() > 0);
    }

    #[test]
    fn heat_over_grey_shows_the_grey_input_where_calm_and_the_colours_where_uncertain() {
        let (w, h) = (40u32, 36u32);
        let input = RgbImage::from_fn(w, h, |x, y| Rgb([6 * x as u8, 200, 7 * y as u8]));
        let scale = Scale { min: 0.0, max: 1.0 };
        // Uncertain only in the top-left 10x10 square.
        let values: Vec<f32> = (0..w * h)
            .map(|i| ((i % w < 10) && (i / w < 10)) as u8 as f32)
            .collect();
        let heat = heatmap(&values, w, h, scale, "variance");
        let over = heat_over_grey(&input, &heat);
        assert_eq!(over.dimensions(), heat.dimensions());
        let grey = imageops::grayscale(&input);
        let calm = colour_of(0.0, scale);
        for (x, y, p) in over
            .enumerate_pixels()
            .filter(|(x, y, _)| *x < w && (*x >= 10 || *y >= 10))
        {
            let g = grey.get_pixel(x, y).0[0] as f32 * (1.0 - HEAT_ALPHA);
            let want = calm.map(|c| (g + c as f32 * HEAT_ALPHA).round() as u8);
            assert_eq!(p.0, want, "({x}, {y})");
        }
        // The calm part keeps the input's structure: left and right differ.
        assert_ne!(over.get_pixel(12, 20), over.get_pixel(38, 20));
        // Where uncertain, the heatmap's bright colour shows through.
        let hot = over.get_pixel(3, 3).0;
        let dimmed = grey.get_pixel(3, 3).0[0] as f32 * (1.0 - HEAT_ALPHA);
        assert!(luma(hot) > dimmed + 100.0, "{hot:?}");
        // The colour bar is untouched.
        for x in w..heat.width() {
            assert_eq!(over.get_pixel(x, h / 2), heat.get_pixel(x, h / 2));
        }
    }

    #[test]
    fn png_save_round_trips_rgb_and_grey() {
        let dir = tempfile::tempdir().unwrap();
        let (path, gpath) = (dir.path().join("pred.png"), dir.path().join("classes.png"));
        let img = colour_classes(&[0, 1, 2, 3, 4, 5, 11, 9], 4, 2, &CAMVID_PALETTE);
        save_png_atomic(&img, &path).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), img);
        let grey = class_index_image(&[0, 1, 2, 3, 4, 5, 11, 9], 4, 2);
        save_png_atomic(&grey, &gpath).unwrap();
        assert_eq!(image::open(&gpath).unwrap().to_luma8(), grey);
    }
}
