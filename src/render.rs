//! Pictures of predictions: class maps coloured with a palette, overlays on the input, uncertainty
//! heatmaps with a labelled colour bar, a class legend, and atomic PNG writing.
//!
//! Pure Rust over plain slices (row-major, `w * h` values), so everything here is testable without
//! libtorch. Text is drawn with a small built-in 5x7 bitmap font (letters, digits, a little
//! punctuation); unknown characters show as a hollow box.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use colorgrad::Gradient;
use image::codecs::png::PngEncoder;
use image::{EncodableLayout, GrayImage, ImageBuffer, PixelWithColorType, Rgb, RgbImage};

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
    pub fn new(min: f32, max: f32) -> Scale {
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
    pub fn of_values(values: &[f32]) -> Scale {
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
pub const NAN_COLOUR: [u8; 3] = [128, 128, 128];

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

/// Heatmap of per-pixel values (`w * h`, row-major) in inferno under `scale`, with a panel on the
/// right: `label` on top (when the height allows), a vertical colour bar (max at the top) and
/// tick labels for max, middle and min. The output is `h` tall and wider than `w`; the heat part
/// is exactly `colour_of(value, scale)` at x in `[0, w)`. Text grows with the image height.
///
/// # Panics
/// If `values.len() != w * h`.
pub fn heatmap(values: &[f32], w: u32, h: u32, scale: Scale, label: &str) -> RgbImage {
    check_len(values.len(), w, h);
    let s = font_scale(h);
    let mid = scale.min + 0.5 * (scale.max - scale.min);
    let ticks = [
        format_tick(scale.max),
        format_tick(mid),
        format_tick(scale.min),
    ];
    let pad = 3 * s;
    let bar_w = 8 * s + 4;
    let tick_len = 3 * s;
    let labels_w = ticks.iter().map(|t| text_width(t, s)).max().unwrap_or(0);
    let panel_w =
        (pad + bar_w + tick_len + s + labels_w + pad).max(pad + text_width(label, s) + pad);

    let mut img = RgbImage::from_pixel(w + panel_w, h, Rgb(WHITE));
    for (i, &v) in values.iter().enumerate() {
        let (x, y) = ((i % w as usize) as u32, (i / w as usize) as u32);
        img.put_pixel(x, y, Rgb(colour_of(v, scale)));
    }

    let bar_x = w + pad;
    let layout = BarLayout::fit(h, s, pad, !label.is_empty());
    if let Some(name_y) = layout.name_y {
        draw_text(&mut img, (w + pad) as i64, name_y as i64, label, s, INK);
    }
    let (y0, y1) = (layout.top, layout.bottom);
    for y in y0..=y1 {
        let t = if y1 > y0 {
            (y1 - y) as f32 / (y1 - y0) as f32
        } else {
            1.0
        };
        let c = Rgb(colour_of(scale.min + t * (scale.max - scale.min), scale));
        for x in bar_x..bar_x + bar_w {
            img.put_pixel(x, y, c);
        }
    }
    if layout.ticks {
        draw_frame(&mut img, bar_x, y0, bar_w, y1 - y0 + 1, FRAME);
        let glyph_h = 7 * s;
        for (text, y) in ticks.iter().zip([y0, (y0 + y1) / 2, y1]) {
            for dy in 0..s {
                for x in bar_x + bar_w..bar_x + bar_w + tick_len {
                    put(&mut img, x as i64, (y + dy) as i64 - (s / 2) as i64, INK);
                }
            }
            let tx = bar_x + bar_w + tick_len + s;
            let ty = y as i64 - (glyph_h / 2) as i64;
            draw_text(&mut img, tx as i64, ty, text, s, INK);
        }
    }
    img
}

/// Where the colour bar and the name go in a heatmap panel of height `h`.
struct BarLayout {
    name_y: Option<u32>,
    /// Rows of the bar's top (max) and bottom (min), inclusive.
    top: u32,
    bottom: u32,
    ticks: bool,
}

impl BarLayout {
    /// The fullest layout that fits: name + labelled bar, else labelled bar, else a bare bar over
    /// the whole height.
    fn fit(h: u32, s: u32, pad: u32, want_name: bool) -> BarLayout {
        let glyph_h = 7 * s;
        // The three tick labels are centred on the bar's ends and middle; they must not touch.
        let min_bar = 2 * (glyph_h + 2 * s);
        let labelled = |above: u32| {
            let top = above + pad + glyph_h / 2;
            let bottom = h.checked_sub(1 + pad + glyph_h / 2)?;
            (bottom >= top + min_bar).then_some((top, bottom))
        };
        if want_name {
            if let Some((top, bottom)) = labelled(pad + glyph_h) {
                return BarLayout {
                    name_y: Some(pad),
                    top,
                    bottom,
                    ticks: true,
                };
            }
        }
        if let Some((top, bottom)) = labelled(0) {
            return BarLayout {
                name_y: None,
                top,
                bottom,
                ticks: true,
            };
        }
        BarLayout {
            name_y: None,
            top: 0,
            bottom: h.saturating_sub(1),
            ticks: false,
        }
    }
}

/// A legend: one row per class name, a colour swatch (outlined, so black shows) and the name, on
/// white. A name without a palette entry gets a black swatch, as in [`colour_classes`].
pub fn legend(names: &[String], palette: &[[u8; 3]]) -> RgbImage {
    legend_scaled(names, palette, 2)
}

/// [`legend`] with the font magnified `scale` times (1 = 5x7-pixel letters).
pub fn legend_scaled(names: &[String], palette: &[[u8; 3]], scale: u32) -> RgbImage {
    let s = scale.max(1);
    let pad = 4 * s;
    let row_h = 11 * s;
    let swatch = 9 * s;
    let text_x = pad + swatch + 3 * s;
    let names_w = names.iter().map(|n| text_width(n, s)).max().unwrap_or(0);
    let width = text_x + names_w + pad;
    let height = 2 * pad + names.len() as u32 * row_h;
    let mut img = RgbImage::from_pixel(width, height, Rgb(WHITE));
    for (i, name) in names.iter().enumerate() {
        let y = pad + i as u32 * row_h + s;
        let colour = palette.get(i).copied().unwrap_or([0, 0, 0]);
        for yy in y..y + swatch {
            for xx in pad..pad + swatch {
                img.put_pixel(xx, yy, Rgb(colour));
            }
        }
        draw_frame(&mut img, pad, y, swatch, swatch, FRAME);
        draw_text(&mut img, text_x as i64, (y + s) as i64, name, s, INK);
    }
    img
}

/// Writes a PNG atomically: encodes to `<path>.tmp` in the same folder, flushes it to disk, then
/// renames it over `path`, so a crash never leaves a half-written file under the final name.
/// Takes any image buffer the PNG encoder accepts (`RgbImage`, `GrayImage`, 16-bit, ...).
pub fn save_png_atomic<P, C>(img: &ImageBuffer<P, C>, path: &Path) -> Result<()>
where
    P: PixelWithColorType,
    [P::Subpixel]: EncodableLayout,
    C: Deref<Target = [P::Subpixel]>,
{
    let tmp = tmp_path(path);
    let written = write_png(img, &tmp).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing PNG {}", path.display()))
}

fn write_png<P, C>(img: &ImageBuffer<P, C>, tmp: &Path) -> Result<()>
where
    P: PixelWithColorType,
    [P::Subpixel]: EncodableLayout,
    C: Deref<Target = [P::Subpixel]>,
{
    let file = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::new(&file);
    img.write_with_encoder(PngEncoder::new(&mut out))
        .with_context(|| format!("encoding {}", tmp.display()))?;
    out.flush()
        .and_then(|()| file.sync_all())
        .with_context(|| format!("flushing {}", tmp.display()))
}

/// `dir/name.png` -> `dir/name.png.tmp`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn check_len(len: usize, w: u32, h: u32) {
    assert_eq!(
        len,
        w as usize * h as usize,
        "pixel count does not match {w}x{h}"
    );
}

/// Font magnification for an image `h` pixels tall: 1 below 360 rows (CamVid's height gets 2),
/// then one more per 180 rows, at most 4.
fn font_scale(h: u32) -> u32 {
    (h / 180).clamp(1, 4)
}

/// A tick label with about three significant digits, only digits, '.', '-' and 'e'.
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

pub(crate) fn text_width(text: &str, s: u32) -> u32 {
    let n = text.chars().count() as u32;
    (6 * n).saturating_sub(1) * s
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// A one-pixel outline just outside the `w x h` rectangle at `(x, y)`.
fn draw_frame(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: [u8; 3]) {
    let (x0, y0, x1, y1) = (x as i64 - 1, y as i64 - 1, (x + w) as i64, (y + h) as i64);
    for xx in x0..=x1 {
        put(img, xx, y0, c);
        put(img, xx, y1, c);
    }
    for yy in y0..=y1 {
        put(img, x0, yy, c);
        put(img, x1, yy, c);
    }
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel an `s x s` block; pixels
/// outside the image are skipped.
pub(crate) fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, s: u32, c: [u8; 3]) {
    let s = s as i64;
    for (i, ch) in text.chars().enumerate() {
        let gx = x + i as i64 * 6 * s;
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    for dy in 0..s {
                        for dx in 0..s {
                            put(img, gx + col * s + dx, y + row as i64 * s + dy, c);
                        }
                    }
                }
            }
        }
    }
}

/// Shown for characters the font lacks.
const BOX: [u8; 7] = [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F];

/// 5x7 glyphs in the HD44780 style: seven rows, bit 4 is the leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c {
        ' ' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '\'' => [0x0C, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00],
        '!' => [0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04],
        '?' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
        _ => BOX,
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

    #[test]
    fn heatmap_bar_runs_from_max_at_top_to_min_at_bottom_with_labels() {
        let (w, h) = (32u32, 120u32);
        let scale = Scale { min: 0.0, max: 2.0 };
        let img = heatmap(&vec![1.0; (w * h) as usize], w, h, scale, "variance");
        let panel: Vec<(u32, u32)> = (w..img.width())
            .flat_map(|x| (0..h).map(move |y| (x, y)))
            .collect();
        let has = |c: [u8; 3]| panel.iter().any(|&(x, y)| img.get_pixel(x, y).0 == c);
        assert!(has(colour_of(2.0, scale)) && has(colour_of(0.0, scale)));
        assert!(has(INK), "tick labels and name are drawn");
        // Top of the bar is brighter than its bottom, in the same column.
        let bar_col = w + 3 + 5;
        let rows: Vec<u32> = (0..h)
            .filter(|&y| {
                let c = img.get_pixel(bar_col, y).0;
                c != WHITE && c != FRAME
            })
            .collect();
        let (top, bottom) = (rows[0], *rows.last().unwrap());
        assert!(bottom - top > h / 3);
        assert_eq!(img.get_pixel(bar_col, top).0, colour_of(2.0, scale));
        assert_eq!(img.get_pixel(bar_col, bottom).0, colour_of(0.0, scale));
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
    fn tick_labels_use_only_bar_font_characters() {
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
            let got = format_tick(v);
            assert_eq!(got, want, "{v}");
            assert!(got.chars().all(|c| c.is_ascii_digit() || ".-e".contains(c)));
        }
    }

    #[test]
    fn font_covers_class_names_measures_and_numbers() {
        let text = CAMVID_CLASSES.concat() + "variance entropy mutual-info 0123456789.-e";
        for c in text.chars().chain('a'..='z').chain('A'..='Z') {
            assert_ne!(glyph(c), BOX, "{c:?} has no glyph");
            assert!(
                c == ' ' || glyph(c).iter().any(|&r| r != 0),
                "{c:?} is blank"
            );
            assert!(glyph(c).iter().all(|&r| r < 0x20), "{c:?} is wider than 5");
        }
        assert_eq!(glyph('\u{3b1}'), BOX);
    }

    #[test]
    fn legend_has_a_swatch_and_text_per_class() {
        let names: Vec<String> = CAMVID_CLASSES.iter().map(|s| s.to_string()).collect();
        let img = legend(&names, &CAMVID_PALETTE);
        assert!(img.width() > 50 && img.height() >= 11 * names.len() as u32);
        for c in &CAMVID_PALETTE[..11] {
            assert!(img.pixels().any(|p| p.0 == *c), "swatch {c:?} missing");
        }
        let ink = img.pixels().filter(|p| p.0 == INK).count();
        assert!(ink > 100 * names.len(), "names are drawn: {ink} ink pixels");
        let empty = legend(&[], &CAMVID_PALETTE);
        assert!(empty.width() > 0 && empty.height() > 0);
    }

    #[test]
    fn atomic_save_round_trips_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pred.png");
        let img = colour_classes(&[0, 1, 2, 3, 4, 5, 11, 9], 4, 2, &CAMVID_PALETTE);
        save_png_atomic(&img, &path).unwrap();
        // Overwriting an existing file works too.
        save_png_atomic(&img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, img);
        let grey = class_index_image(&[0, 1, 2, 3, 4, 5, 11, 9], 4, 2);
        let gpath = dir.path().join("classes.png");
        save_png_atomic(&grey, &gpath).unwrap();
        assert_eq!(image::open(&gpath).unwrap().to_luma8(), grey);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn atomic_save_into_a_missing_folder_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("x.png");
        let err = save_png_atomic(&RgbImage::new(2, 2), &path).unwrap_err();
        assert!(format!("{err:#}").contains("no-such-dir/x.png"), "{err:#}");
    }
}
