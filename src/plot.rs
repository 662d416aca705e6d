//! Plots of an evaluation report, for a person to look at rather than read: a reliability
//! diagram, the accuracy of the most certain pixels, and per-class IoU.
//!
//! Drawn by a small chart toolkit ([`line_chart`], [`bar_chart`]) over `image` and the 5x7 font of
//! [`crate::render`], magnified twice. Charts are [`WIDTH`] x [`HEIGHT`] on white.

use std::path::Path;

use anyhow::Result;
use image::{imageops, Rgb, RgbImage};

use crate::eval::Report;
use crate::render::{draw_text, save_png_atomic, text_width};

/// Chart size in pixels.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

/// Weight averaging and MC dropout keep these colours in every plot (matplotlib's first two).
pub const WA_COLOUR: [u8; 3] = [31, 119, 180];
pub const MC_COLOUR: [u8; 3] = [255, 127, 14];
const DIAGONAL_COLOUR: [u8; 3] = [150, 150, 150];
/// matplotlib's tab10, for series without a fixed colour.
const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// Font magnification: 10x14-pixel letters.
const S: u32 = 2;
const GLYPH_H: u32 = 7 * S;
const PAD: u32 = 12;
const TICK: u32 = 6;
const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [24, 24, 24];
const GRID: [u8; 3] = [228, 228, 228];
const AXIS: [u8; 3] = [96, 96, 96];

/// One line of a [`line_chart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(x, y)` in data units, joined in order. Values outside the chart's ranges are clamped to
    /// its edges; a point with a NaN coordinate is skipped and breaks the line.
    pub points: Vec<(f64, f64)>,
    pub colour: [u8; 3],
}

/// Line chart with axes, ticks with numeric labels, axis titles, a title, and a legend naming
/// each series. Series with at most 60 points get a marker on each point. Empty or reversed
/// ranges are widened, non-finite ones become `[0, 1]`.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_range: (f64, f64),
    y_range: (f64, f64),
) -> RgbImage {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb(WHITE));
    let legend: Vec<(&str, [u8; 3])> = series.iter().map(|s| (s.name.as_str(), s.colour)).collect();
    let top = header(&mut img, title, &legend, Mark::Line) + GLYPH_H / 2;
    let (xa, ya) = (Axis::new(x_range), Axis::new(y_range));
    let (x_ticks, y_ticks) = (
        xa.ticks(|v, d| format!("{v:.d$}")),
        ya.ticks(|v, d| format!("{v:.d$}")),
    );
    let last_half = x_ticks.last().map_or(0, |(_, l)| text_width(l, S) / 2);
    let x_title_h = if x_label.is_empty() { 0 } else { GLYPH_H + 8 };
    let area = Area::new(
        left_margin(&y_ticks, y_label),
        top,
        WIDTH - 1 - PAD - last_half,
        HEIGHT - 1 - PAD - x_title_h - GLYPH_H - 4 - TICK,
    );
    draw_y_axis(&mut img, &area, &ya, &y_ticks, y_label);
    for (v, label) in &x_ticks {
        let x = area.px(&xa, *v);
        line_v(&mut img, x, area.top, area.bottom, GRID);
        line_v(&mut img, x, area.bottom, area.bottom + TICK, AXIS);
        draw_centred(&mut img, x, area.bottom + TICK + 4, label, S, INK);
    }
    let cx = (area.left + area.right) / 2;
    draw_centred(&mut img, cx, HEIGHT - PAD - GLYPH_H, x_label, S, INK);
    area.frame(&mut img);
    for s in series {
        draw_series(&mut img, &area, &xa, &ya, s);
    }
    img
}

/// One group of a [`bar_chart`]: its legend name, its colour, and one value per label.
pub type BarGroup = (String, [u8; 3], Vec<Option<f64>>);

/// Vertical bar chart of labelled values in `[0, 1]`, shown as percentages. Each group is one
/// bar per label (`values[i]` belongs to `labels[i]`; a missing or `None` value shows "n/a"
/// instead of a bar), named in the legend. The value is printed above its bar (inside near the
/// top) where it fits. Labels that do not fit side by side are turned to read upwards.
pub fn bar_chart(title: &str, labels: &[String], groups: &[BarGroup]) -> RgbImage {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb(WHITE));
    let legend: Vec<(&str, [u8; 3])> = groups.iter().map(|(n, c, _)| (n.as_str(), *c)).collect();
    let top = header(&mut img, title, &legend, Mark::Box) + GLYPH_H / 2;
    let ya = Axis::new((0.0, 1.0));
    let y_ticks = ya.ticks(|v, _| format!("{:.0}%", 100.0 * v));
    let left = left_margin(&y_ticks, "");
    let right = WIDTH - 1 - PAD;
    let slot = (right - left) as f64 / labels.len().max(1) as f64;
    let names = CategoryLabels::fit(labels, slot);
    let area = Area::new(left, top, right, HEIGHT - 1 - PAD - names.height - 4 - TICK);
    draw_y_axis(&mut img, &area, &ya, &y_ticks, "");
    area.frame(&mut img);

    // Each label's bars fill this share of its slot.
    const FILL: f64 = 0.88;
    let pitch = slot * FILL / groups.len().max(1) as f64;
    // Value texts of neighbouring bars keep at least 5 pixels apart.
    let room = (pitch - 5.0).max(0.0) as u32;
    for i in 0..labels.len() {
        let x0 = area.left as f64 + i as f64 * slot;
        let centre = (x0 + slot / 2.0).round() as u32;
        line_v(&mut img, centre, area.bottom, area.bottom + TICK, AXIS);
        names.draw(&mut img, i, centre, area.bottom + TICK + 4);
        let value = |vals: &[Option<f64>]| vals.get(i).copied().flatten().filter(|v| !v.is_nan());
        if groups.iter().all(|g| value(&g.2).is_none()) {
            if let Some(s) = fit_scale("n/a", (slot - 6.0).max(0.0) as u32) {
                let y = area.bottom.saturating_sub(7 * s + 3);
                draw_centred(&mut img, centre, y, "n/a", s, AXIS);
            }
            continue;
        }
        for (j, (_, colour, values)) in groups.iter().enumerate() {
            let Some(v) = value(values) else {
                continue;
            };
            let start = x0 + slot * (1.0 - FILL) / 2.0 + j as f64 * pitch;
            let bx0 = start.round() as u32;
            let bx1 = ((start + pitch).round() as u32).saturating_sub(3).max(bx0);
            let y = area.py(&ya, v);
            fill_rect(&mut img, bx0, y, bx1, area.bottom - 1, *colour);
            bar_value(&mut img, &area, (bx0, bx1, y), v, *colour, room);
        }
    }
    img
}

/// Writes `reliability.png`, `accuracy_vs_kept.png` and `per_class_iou.png` into `out`.
pub fn write_eval_plots(out: &Path, r: &Report) -> Result<()> {
    let (wa, mc) = (&r.weight_averaging, &r.mc_dropout);
    let mc_name = format!("MC dropout (T={})", r.samples);

    let bins = |rel: &[(f64, f64, u64)]| -> Vec<(f64, f64)> {
        rel.iter()
            .filter(|b| b.2 > 0)
            .map(|&(c, a, _)| (c, a))
            .collect()
    };
    let reliability = line_chart(
        &format!(
            "Reliability (ECE: WA {:.1}%, MC {:.1}%)",
            100.0 * wa.ece,
            100.0 * mc.ece
        ),
        "mean confidence",
        "accuracy",
        &[
            Series {
                name: "perfect calibration".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
                colour: DIAGONAL_COLOUR,
            },
            Series {
                name: "weight averaging".into(),
                points: bins(&wa.reliability),
                colour: WA_COLOUR,
            },
            Series {
                name: mc_name.clone(),
                points: bins(&mc.reliability),
                colour: MC_COLOUR,
            },
        ],
        (0.0, 1.0),
        (0.0, 1.0),
    );
    save_png_atomic(&reliability, &out.join("reliability.png"))?;

    let kept: Vec<Series> = r
        .uncertainty
        .iter()
        .enumerate()
        .map(|(i, q)| Series {
            name: format!("{}, {}", q.measure, short_prediction(&q.prediction)),
            points: q.accuracy_at_kept.clone(),
            colour: PALETTE[i % PALETTE.len()],
        })
        .collect();
    let lowest = kept
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|a| a.is_finite())
        .fold(1.0f64, f64::min);
    let y_lo = (((lowest - 0.02) * 20.0).floor() / 20.0).clamp(0.0, 0.95);
    let accuracy = line_chart(
        "Accuracy of the most certain pixels",
        "fraction of pixels kept (most certain first)",
        "pixel accuracy",
        &kept,
        (0.0, 1.0),
        (y_lo, 1.0),
    );
    save_png_atomic(&accuracy, &out.join("accuracy_vs_kept.png"))?;

    let labels: Vec<String> = wa.per_class_iou.iter().map(|(n, _)| n.clone()).collect();
    let values = |s: &crate::eval::Scores| s.per_class_iou.iter().map(|(_, v)| *v).collect();
    let iou = bar_chart(
        &format!(
            "Per-class IoU (mIoU: WA {:.1}%, MC {:.1}%)",
            100.0 * wa.mean_iou,
            100.0 * mc.mean_iou
        ),
        &labels,
        &[
            ("weight averaging".into(), WA_COLOUR, values(wa)),
            (mc_name, MC_COLOUR, values(mc)),
        ],
    );
    save_png_atomic(&iou, &out.join("per_class_iou.png"))
}

/// "mc" -> "MC", "weight-averaging" -> "WA", for legends.
fn short_prediction(p: &str) -> &str {
    match p {
        "mc" => "MC",
        "weight-averaging" => "WA",
        other => other,
    }
}

/// A data range mapped onto an axis; always finite with `hi > lo`.
struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new((lo, hi): (f64, f64)) -> Axis {
        if !lo.is_finite() || !hi.is_finite() {
            return Axis { lo: 0.0, hi: 1.0 };
        }
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        if hi > lo {
            Axis { lo, hi }
        } else {
            let half = (lo.abs() * 0.05).max(0.5);
            Axis {
                lo: lo - half,
                hi: hi + half,
            }
        }
    }

    /// Position of `v` in `[0, 1]`, clamped (NaN -> 0).
    fn t(&self, v: f64) -> f64 {
        let t = ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0);
        if t.is_nan() {
            0.0
        } else {
            t
        }
    }

    /// Round tick values (steps of 1, 2 or 5 times a power of ten, about six ticks) with labels
    /// made by `label(value, decimals the step needs)`.
    fn ticks(&self, label: impl Fn(f64, usize) -> String) -> Vec<(f64, String)> {
        let raw = (self.hi - self.lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = mag
            * match raw / mag {
                n if n < 1.5 => 1.0,
                n if n < 3.0 => 2.0,
                n if n < 7.0 => 5.0,
                _ => 10.0,
            };
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let first = (self.lo / step - 1e-9).ceil() as i64;
        (first..)
            .map(|k| k as f64 * step)
            .take_while(|v| *v <= self.hi + step * 1e-9)
            .take(50)
            // -0.0 would print as "-0".
            .map(|v| (v, label(if v == 0.0 { 0.0 } else { v }, decimals)))
            .collect()
    }
}

/// The plot area: inclusive pixel bounds, `left < right` and `top < bottom`.
struct Area {
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
}

impl Area {
    /// Keeps at least a sliver of area when the margins leave none (a legend of many rows).
    fn new(left: u32, top: u32, right: u32, bottom: u32) -> Area {
        let top = top.min(bottom.saturating_sub(20));
        Area {
            left,
            top,
            right: right.max(left + 1),
            bottom: bottom.max(top + 1),
        }
    }

    fn px(&self, axis: &Axis, x: f64) -> u32 {
        self.left + (axis.t(x) * (self.right - self.left) as f64).round() as u32
    }

    fn py(&self, axis: &Axis, y: f64) -> u32 {
        self.bottom - (axis.t(y) * (self.bottom - self.top) as f64).round() as u32
    }

    fn frame(&self, img: &mut RgbImage) {
        line_v(img, self.left, self.top, self.bottom, AXIS);
        line_v(img, self.right, self.top, self.bottom, AXIS);
        line_h(img, self.left, self.right, self.top, AXIS);
        line_h(img, self.left, self.right, self.bottom, AXIS);
    }
}

/// How a legend entry shows its colour.
#[derive(Clone, Copy)]
enum Mark {
    Line,
    Box,
}

const SWATCH_W: u32 = 28;

/// Draws the centred title and, under it, the legend in centred rows; returns the first free row.
/// Legend rows stop at a third of the height.
fn header(img: &mut RgbImage, title: &str, legend: &[(&str, [u8; 3])], mark: Mark) -> u32 {
    draw_centred(img, WIDTH / 2, PAD, title, S, INK);
    let mut y = PAD + GLYPH_H + 12;
    let gap = 32;
    let item_w = |name: &str| SWATCH_W + 8 + text_width(name, S);
    let mut rest = legend;
    while !rest.is_empty() && y < HEIGHT / 3 {
        // At least one entry per row, however wide.
        let mut n = 1;
        let mut row_w = item_w(rest[0].0);
        while n < rest.len() && row_w + gap + item_w(rest[n].0) <= WIDTH - 2 * PAD {
            row_w += gap + item_w(rest[n].0);
            n += 1;
        }
        let mut x = (WIDTH.saturating_sub(row_w) / 2) as i64;
        for &(name, colour) in &rest[..n] {
            let mid = y + GLYPH_H / 2;
            match mark {
                Mark::Line => {
                    let x0 = x as u32;
                    fill_rect(img, x0, mid - 1, x0 + SWATCH_W - 1, mid + 1, colour);
                    disc(img, (x0 + SWATCH_W / 2) as i64, mid as i64, 4, colour, None);
                }
                Mark::Box => {
                    let x0 = x as u32 + (SWATCH_W - GLYPH_H) / 2;
                    fill_rect(img, x0, y, x0 + GLYPH_H - 1, y + GLYPH_H - 1, colour);
                }
            }
            draw_text(img, x + (SWATCH_W + 8) as i64, y as i64, name, S, INK);
            x += (item_w(name) + gap) as i64;
        }
        rest = &rest[n..];
        y += GLYPH_H + 8;
    }
    y + 4
}

/// Left margin wide enough for the y tick labels and, when there is one, the upright y title.
fn left_margin(ticks: &[(f64, String)], title: &str) -> u32 {
    let title_w = if title.is_empty() { 0 } else { GLYPH_H + 10 };
    let labels_w = ticks
        .iter()
        .map(|(_, l)| text_width(l, S))
        .max()
        .unwrap_or(0);
    PAD + title_w + labels_w + 4 + TICK
}

/// Horizontal grid lines, tick marks, right-aligned tick labels and the y title reading upwards.
fn draw_y_axis(img: &mut RgbImage, area: &Area, axis: &Axis, ticks: &[(f64, String)], title: &str) {
    for (v, label) in ticks {
        let y = area.py(axis, *v);
        line_h(img, area.left, area.right, y, GRID);
        line_h(img, area.left - TICK, area.left, y, AXIS);
        let x = area.left as i64 - (TICK + 4 + text_width(label, S)) as i64;
        draw_text(img, x, y as i64 - (GLYPH_H / 2) as i64, label, S, INK);
    }
    let h = text_width(title, S) as i64;
    let cy = (area.top + area.bottom) as i64 / 2;
    draw_text_up(img, PAD as i64, cy - h / 2, title, S, INK);
}

/// Category labels under a bar chart: side by side when they fit their slots, else reading
/// upwards (at the size that fits, every `stride`-th one when even that is too crowded, cut to a
/// third of the chart's height).
struct CategoryLabels {
    names: Vec<String>,
    upright: bool,
    scale: u32,
    stride: usize,
    /// Rows the labels take under the ticks.
    height: u32,
}

impl CategoryLabels {
    fn fit(labels: &[String], slot: f64) -> CategoryLabels {
        let widest = labels.iter().map(|l| text_width(l, S)).max().unwrap_or(0);
        if widest as f64 <= slot - 6.0 {
            return CategoryLabels {
                names: labels.to_vec(),
                upright: false,
                scale: S,
                stride: 1,
                height: GLYPH_H,
            };
        }
        let scale = if (7 * S + 4) as f64 <= slot { S } else { 1 };
        let stride = ((7 * scale + 4) as f64 / slot.max(1e-3)).ceil().max(1.0) as usize;
        let max_chars = ((HEIGHT / 3 / scale + 1) / 6) as usize;
        let names: Vec<String> = labels
            .iter()
            .map(|l| l.chars().take(max_chars).collect())
            .collect();
        let height = names
            .iter()
            .map(|l| text_width(l, scale))
            .max()
            .unwrap_or(0);
        CategoryLabels {
            names,
            upright: true,
            scale,
            stride,
            height,
        }
    }

    /// Label `i`, centred on column `x`, its top at row `y`.
    fn draw(&self, img: &mut RgbImage, i: usize, x: u32, y: u32) {
        let name = &self.names[i];
        if !self.upright {
            draw_centred(img, x, y, name, self.scale, INK);
        } else if i.is_multiple_of(self.stride) {
            let x = x as i64 - (7 * self.scale / 2) as i64;
            draw_text_up(img, x, y as i64, name, self.scale, INK);
        }
    }
}

/// Prints `v` as a whole percentage above the bar `(x0, x1, top)`, or just inside its top when
/// there is no room above, in the largest size that fits `room` pixels.
fn bar_value(
    img: &mut RgbImage,
    area: &Area,
    (x0, x1, top): (u32, u32, u32),
    v: f64,
    bar: [u8; 3],
    room: u32,
) {
    let text = format!("{:.0}", 100.0 * v.clamp(0.0, 1.0));
    let Some(s) = fit_scale(&text, room) else {
        return;
    };
    let h = 7 * s;
    let cx = (x0 + x1).div_ceil(2);
    if top >= area.top + h + 3 {
        draw_centred(img, cx, top - h - 3, &text, s, INK);
    } else if area.bottom >= top + h + 4 {
        let luma = 0.2126 * bar[0] as f64 + 0.7152 * bar[1] as f64 + 0.0722 * bar[2] as f64;
        let ink = if luma < 140.0 { WHITE } else { INK };
        draw_centred(img, cx, top + 3, &text, s, ink);
    }
}

/// The larger font scale at which `text` fits in `width` pixels, if any.
fn fit_scale(text: &str, width: u32) -> Option<u32> {
    [S, 1].into_iter().find(|&s| text_width(text, s) <= width)
}

/// Joins the points of `s` with a 3-pixel line clipped to the area, with markers when few.
fn draw_series(img: &mut RgbImage, area: &Area, xa: &Axis, ya: &Axis, s: &Series) {
    let at: Vec<Option<(i64, i64)>> = s
        .points
        .iter()
        .map(|&(x, y)| {
            (!x.is_nan() && !y.is_nan()).then(|| (area.px(xa, x) as i64, area.py(ya, y) as i64))
        })
        .collect();
    let clip = (
        area.left as i64,
        area.top as i64,
        area.right as i64,
        area.bottom as i64,
    );
    for pair in at.windows(2) {
        if let [Some(a), Some(b)] = *pair {
            thick_line(img, a, b, s.colour, clip);
        }
    }
    if s.points.len() <= 60 {
        let near = (clip.0 - 5, clip.1 - 5, clip.2 + 5, clip.3 + 5);
        for (x, y) in at.into_iter().flatten() {
            disc(img, x, y, 4, s.colour, Some(near));
        }
    }
}

/// Clipping rectangle `(left, top, right, bottom)`, inclusive.
type Clip = (i64, i64, i64, i64);

fn thick_line(
    img: &mut RgbImage,
    (x0, y0): (i64, i64),
    (x1, y1): (i64, i64),
    c: [u8; 3],
    clip: Clip,
) {
    let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for i in 0..=n {
        let x = x0 + ((x1 - x0) as f64 * i as f64 / n as f64).round() as i64;
        let y = y0 + ((y1 - y0) as f64 * i as f64 / n as f64).round() as i64;
        for (dx, dy) in [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)] {
            put_clipped(img, x + dx, y + dy, c, Some(clip));
        }
    }
}

fn disc(img: &mut RgbImage, x: i64, y: i64, r: i64, c: [u8; 3], clip: Option<Clip>) {
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r + r {
                put_clipped(img, x + dx, y + dy, c, clip);
            }
        }
    }
}

fn put_clipped(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3], clip: Option<Clip>) {
    let inside = clip.is_none_or(|(l, t, r, b)| x >= l && x <= r && y >= t && y <= b);
    if inside && x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// Fills the inclusive rectangle, clipped to the image.
fn fill_rect(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, c: [u8; 3]) {
    for y in y0..=y1.min(img.height().saturating_sub(1)) {
        for x in x0..=x1.min(img.width().saturating_sub(1)) {
            img.put_pixel(x, y, Rgb(c));
        }
    }
}

fn line_h(img: &mut RgbImage, x0: u32, x1: u32, y: u32, c: [u8; 3]) {
    fill_rect(img, x0, y, x1, y, c);
}

fn line_v(img: &mut RgbImage, x: u32, y0: u32, y1: u32, c: [u8; 3]) {
    fill_rect(img, x, y0, x, y1, c);
}

/// Draws `text` centred on column `cx`, its top at row `y`.
fn draw_centred(img: &mut RgbImage, cx: u32, y: u32, text: &str, s: u32, c: [u8; 3]) {
    let x = cx as i64 - (text_width(text, s) / 2) as i64;
    draw_text(img, x, y as i64, text, s, c);
}

/// Draws `text` reading upwards, the top-left corner of its `7s`-wide box at `(x, y)`.
fn draw_text_up(img: &mut RgbImage, x: i64, y: i64, text: &str, s: u32, c: [u8; 3]) {
    let w = text_width(text, s);
    if w == 0 {
        return;
    }
    let mut flat = RgbImage::from_pixel(w, 7 * s, Rgb(WHITE));
    draw_text(&mut flat, 0, 0, text, s, c);
    for (dx, dy, p) in imageops::rotate270(&flat).enumerate_pixels() {
        if p.0 != WHITE {
            put_clipped(img, x + dx as i64, y + dy as i64, p.0, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Scores, UncertaintyQuality};

    fn count(img: &RgbImage, c: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == c).count()
    }

    fn series(name: &str, points: Vec<(f64, f64)>, colour: [u8; 3]) -> Series {
        Series {
            name: name.into(),
            points,
            colour,
        }
    }

    const RED: [u8; 3] = [200, 10, 20];

    #[test]
    fn charts_are_800_by_500() {
        let line = line_chart("t", "x", "y", &[], (0.0, 1.0), (0.0, 1.0));
        assert_eq!(line.dimensions(), (WIDTH, HEIGHT));
        let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let bars = bar_chart("t", &labels, &[("g".into(), RED, vec![Some(0.5), None])]);
        assert_eq!(bars.dimensions(), (WIDTH, HEIGHT));
        assert!(count(&bars, INK) > 100, "title and labels are drawn");
    }

    #[test]
    fn line_chart_draws_its_series_in_its_colour() {
        let s = series("rising", vec![(0.0, 0.0), (0.5, 0.8), (1.0, 1.0)], RED);
        let img = line_chart("title", "x", "y", &[s], (0.0, 1.0), (0.0, 1.0));
        // A 3-pixel line across most of the chart, markers and the legend swatch.
        let n = count(&img, RED);
        assert!(n > 3 * 500, "{n} series pixels");
        assert!(count(&img, INK) > 300, "text is drawn");
        // The line rises: its leftmost pixel is lower than its rightmost (legend row aside).
        let below_legend: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, y, p)| *y > 80 && p.0 == RED)
            .map(|(x, y, _)| (x, y))
            .collect();
        let left = below_legend.iter().min_by_key(|p| p.0).unwrap();
        let right = below_legend.iter().max_by_key(|p| p.0).unwrap();
        assert!(left.1 > right.1 + 200, "{left:?} {right:?}");
    }

    #[test]
    fn values_outside_the_ranges_are_clamped_to_the_edges() {
        let wild = vec![
            (-5.0, 10.0),
            (f64::INFINITY, f64::NEG_INFINITY),
            (f64::NAN, 0.5),
            (0.5, f64::NAN),
            (1e300, 0.5),
        ];
        let img = line_chart(
            "t",
            "x",
            "y",
            &[series("w", wild, RED)],
            (0.0, 1.0),
            (0.0, 1.0),
        );
        let xs: Vec<u32> = img
            .enumerate_pixels()
            .filter(|(_, y, p)| *y > 80 && p.0 == RED)
            .map(|(x, _, _)| x)
            .collect();
        assert!(!xs.is_empty());
        // Clamped to the plot's right edge, not beyond the margin.
        let max = *xs.iter().max().unwrap();
        assert!(max > WIDTH * 4 / 5 && max < WIDTH - 5, "{max}");
    }

    #[test]
    fn empty_series_and_degenerate_ranges_do_not_panic() {
        let empty = series("nothing", vec![], RED);
        let one = series("one", vec![(2.0, 2.0)], [0, 200, 0]);
        for (xr, yr) in [
            ((0.0, 1.0), (0.0, 1.0)),
            ((1.0, 1.0), (0.0, 0.0)),
            ((f64::NAN, 1.0), (1.0, f64::INFINITY)),
            ((5.0, -5.0), (1e-9, 2e-9)),
        ] {
            let img = line_chart("", "", "", &[empty.clone(), one.clone()], xr, yr);
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        }
        let many: Vec<Series> = (0..40)
            .map(|i| series(&format!("series number {i}"), vec![(0.1, 0.2)], RED))
            .collect();
        line_chart("crowded", "x", "y", &many, (0.0, 1.0), (0.0, 1.0));
    }

    #[test]
    fn all_none_and_empty_bar_charts_do_not_panic() {
        let labels: Vec<String> = (0..11).map(|i| format!("class {i}")).collect();
        let img = bar_chart("none", &labels, &[("g".into(), RED, vec![None; 11])]);
        assert_eq!(count(&img, RED), 14 * 14, "only the legend swatch");
        bar_chart("no labels", &[], &[("g".into(), RED, vec![Some(0.3)])]);
        bar_chart("no groups", &labels, &[]);
        bar_chart(
            "short values",
            &labels,
            &[("g".into(), RED, vec![Some(2.0), Some(f64::NAN)])],
        );
        let many: Vec<String> = (0..500)
            .map(|i| format!("a very long class name {i}"))
            .collect();
        bar_chart("crowded", &many, &[("g".into(), RED, vec![Some(0.5); 500])]);
    }

    #[test]
    fn bar_height_is_proportional_to_value() {
        let labels: Vec<String> = ["full", "half"].map(String::from).to_vec();
        let img = bar_chart(
            "t",
            &labels,
            &[("g".into(), RED, vec![Some(1.0), Some(0.5)])],
        );
        let height = |x0: u32, x1: u32| {
            (x0..x1)
                .map(|x| {
                    (56..HEIGHT)
                        .filter(|&y| img.get_pixel(x, y).0 == RED)
                        .count()
                })
                .max()
                .unwrap()
        };
        // Two slots of ~360 px from x = 69: keep clear of their boundary.
        let (full, half) = (height(0, 380), height(420, WIDTH));
        assert!(full > 200, "{full}");
        assert!(
            (full as f64 / half as f64 - 2.0).abs() < 0.02,
            "{full} vs {half}"
        );
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = Axis::new((0.0, 1.0)).ticks(|v, d| format!("{v:.d$}"));
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t = Axis::new((0.63, 0.97)).ticks(|v, d| format!("{v:.d$}"));
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["0.65", "0.70", "0.75", "0.80", "0.85", "0.90", "0.95"]
        );
        let t = Axis::new((-3.0, 250.0)).ticks(|v, d| format!("{v:.d$}"));
        assert_eq!(t.first().unwrap().1, "0");
        assert_eq!(t.last().unwrap().1, "250");
    }

    fn scores(shift: f64) -> Scores {
        let names = &crate::config::CAMVID_CLASSES[..7];
        Scores {
            global_accuracy: 0.85 + shift,
            class_average_accuracy: 0.7 + shift,
            mean_iou: 0.5 + shift,
            per_class_iou: names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        n.to_string(),
                        (i != 2).then_some(0.1 + 0.13 * i as f64 + shift),
                    )
                })
                .collect(),
            ece: 0.04 - shift,
            reliability: (0..15)
                .map(|b| {
                    let c = (b as f64 + 0.5) / 15.0;
                    let n = if b < 4 { 0 } else { 100 * b as u64 };
                    (c, (c - 0.1 + shift).clamp(0.0, 1.0), n)
                })
                .collect(),
        }
    }

    fn report() -> Report {
        let uncertainty = [
            ("variance", "mc"),
            ("entropy", "mc"),
            ("mutual-info", "mc"),
            ("entropy", "weight-averaging"),
        ]
        .iter()
        .enumerate()
        .map(|(i, (m, p))| UncertaintyQuality {
            measure: m.to_string(),
            prediction: p.to_string(),
            accuracy_at_kept: [0.1, 0.5, 0.9, 1.0]
                .iter()
                .map(|&f| (f, 0.99 - 0.14 * f - 0.01 * i as f64))
                .collect(),
            pavpu_median: 0.7,
            median_threshold: 0.2,
        })
        .collect();
        Report {
            model: "run/model.safetensors".into(),
            data: "camvid".into(),
            split: "test".into(),
            images: 3,
            samples: 50,
            seconds: 1.5,
            weight_averaging: scores(0.0),
            mc_dropout: scores(0.03),
            uncertainty,
        }
    }

    #[test]
    fn write_eval_plots_writes_three_readable_pngs() {
        let dir = tempfile::tempdir().unwrap();
        write_eval_plots(dir.path(), &report()).unwrap();
        for name in [
            "reliability.png",
            "accuracy_vs_kept.png",
            "per_class_iou.png",
        ] {
            let img = image::open(dir.path().join(name)).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT), "{name}");
            assert!(count(&img, INK) > 500, "{name} has text");
        }
        let reliability = image::open(dir.path().join("reliability.png"))
            .unwrap()
            .to_rgb8();
        assert!(count(&reliability, WA_COLOUR) > 300 && count(&reliability, MC_COLOUR) > 300);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 3, "no temporary files left");
    }
}
