//! `uncertainty.png`: mean uncertainty over time, one panel per measure (each with its own
//! y axis), drawn with the `image` crate. Text uses the library's bitmap font through
//! `render::legend_scaled`, whose swatches double as the line's colour key.

use image::{Rgb, RgbImage};
use segnet_bayes::render::{self, Measure};

use crate::table::Row;

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [24, 24, 24];
const GRID: [u8; 3] = [225, 225, 225];
const LINES: [[u8; 3]; 3] = [[31, 119, 180], [214, 39, 40], [44, 160, 44]];

const WIDTH: u32 = 900;
const PANEL_H: u32 = 220;
/// Margins around each panel's plot area: left (tick labels), right, top (title), bottom.
const LEFT: u32 = 80;
const RIGHT: u32 = 20;
const TOP: u32 = 34;
const BOTTOM: u32 = 40;
const FONT: u32 = 2;

/// The plot of `rows` (any order).
pub fn uncertainty_over_time(rows: &[Row]) -> RgbImage {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| r.index);
    let mut img = RgbImage::from_pixel(WIDTH, PANEL_H * 3, Rgb(WHITE));
    let t_max = rows.last().map(|r| r.time).unwrap_or(0.0).max(1e-3);
    for (i, m) in Measure::ALL.iter().enumerate() {
        let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.time, r.means[i])).collect();
        draw_panel(&mut img, i as u32 * PANEL_H, &points, t_max, *m, LINES[i]);
    }
    img
}

fn draw_panel(
    img: &mut RgbImage,
    y0: u32,
    points: &[(f64, f64)],
    t_max: f64,
    m: Measure,
    colour: [u8; 3],
) {
    let (x_lo, x_hi) = (LEFT, WIDTH - RIGHT);
    let (y_lo, y_hi) = (y0 + TOP, y0 + PANEL_H - BOTTOM);
    let v_max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let v_ticks = ticks(v_max);
    let v_top = *v_ticks.last().expect("at least two ticks");
    let t_ticks = ticks(t_max);
    let t_top = *t_ticks.last().expect("at least two ticks");
    let px = |t: f64| x_lo as f64 + (t / t_top) * (x_hi - x_lo) as f64;
    let py = |v: f64| y_hi as f64 - (v / v_top) * (y_hi - y_lo) as f64;

    for &v in &v_ticks {
        let y = py(v).round() as i64;
        hline(img, x_lo, x_hi, y, GRID);
        let label = text(&format_number(v));
        paste(img, &label, LEFT as i64 - 6 - label.width() as i64, y - 7);
    }
    for &t in &t_ticks {
        let x = px(t).round() as i64;
        vline(img, x, y_hi as i64, y_hi as i64 + 5, INK);
        let label = text(&format_number(t));
        paste(img, &label, x - label.width() as i64 / 2, y_hi as i64 + 9);
    }
    hline(img, x_lo, x_hi, y_hi as i64, INK);
    vline(img, x_lo as i64, y_lo as i64, y_hi as i64, INK);

    let title = render::legend_scaled(&[format!("mean {m} per frame")], &[colour], FONT);
    paste(img, &title, LEFT as i64 - 8, y0 as i64 + 4);
    let axis = text("time (s)");
    let centre = (x_lo + x_hi) as i64 / 2;
    paste(
        img,
        &axis,
        centre - axis.width() as i64 / 2,
        (y0 + PANEL_H) as i64 - 16,
    );

    let pts: Vec<(i64, i64)> = points
        .iter()
        .map(|&(t, v)| (px(t).round() as i64, py(v).round() as i64))
        .collect();
    for w in pts.windows(2) {
        line(img, w[0], w[1], colour);
    }
    for &p in &pts {
        dot(img, p, colour);
    }
}

/// Round tick values from 0 covering `max`: steps of 1, 2 or 5 times a power of ten, 3 to 6
/// ticks.
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|f| f * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A tick label in the bitmap font's characters (digits, '.', '-', 'e').
pub fn format_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    if (-3..5).contains(&mag) {
        let decimals = (2 - mag).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.1e}").replace(".0e", "e")
    }
}

/// `s` in the library's font: a one-entry legend with its swatch cut off.
fn text(s: &str) -> RgbImage {
    let f = FONT;
    let legend = render::legend_scaled(&[s.to_string()], &[WHITE], f);
    // legend_scaled's layout: padding 4f, swatch 9f, gap 3f, then 7f-tall text at y = 6f.
    let (x, y) = (16 * f, 6 * f);
    let w = legend.width().saturating_sub(x + 4 * f).max(1);
    image::imageops::crop_imm(&legend, x, y, w, 7 * f).to_image()
}

/// Copies the non-white pixels of `src` with its top-left at `(x, y)`, clipped.
fn paste(img: &mut RgbImage, src: &RgbImage, x: i64, y: i64) {
    for (sx, sy, p) in src.enumerate_pixels() {
        if p.0 != WHITE {
            put(img, x + sx as i64, y + sy as i64, p.0);
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn hline(img: &mut RgbImage, x0: u32, x1: u32, y: i64, c: [u8; 3]) {
    for x in x0..=x1 {
        put(img, x as i64, y, c);
    }
}

fn vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, c: [u8; 3]) {
    for y in y0..=y1 {
        put(img, x, y, c);
    }
}

/// A two-pixel-thick line (Bresenham).
fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            put(img, x + ox, y + oy, c);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn dot(img: &mut RgbImage, (x, y): (i64, i64), c: [u8; 3]) {
    for oy in -1..=2 {
        for ox in -1..=2 {
            put(img, x + ox, y + oy, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(1.0), vec![0.0, 0.5, 1.0]);
        assert_eq!(ticks(7.3), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        for max in [0.0123, 0.0826, 2.3979, 12.0, 0.7, 1e-5, 399.0] {
            let t = ticks(max);
            assert_eq!(t[0], 0.0);
            assert!(*t.last().unwrap() >= max * (1.0 - 1e-9), "{max}: {t:?}");
            assert!((3..=6).contains(&t.len()), "{max}: {t:?}");
            let step = t[1];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (m - mantissa).abs() < 1e-6),
                "{max}: step {step}"
            );
        }
        assert_eq!(
            ticks(0.0),
            ticks(1.0),
            "a flat zero series still gets an axis"
        );
        assert_eq!(ticks(f64::NAN), ticks(1.0));
    }

    #[test]
    fn numbers_use_the_font_characters() {
        assert_eq!(format_number(0.015000000000000001), "0.015");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(12.0), "12");
        assert_eq!(format_number(0.00002), "2e-5");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn text_is_ink_without_the_swatch() {
        let t = text("time (s)");
        assert_eq!(t.height(), 7 * FONT);
        assert_eq!(t.width(), (6 * 8 - 1) * FONT);
        assert!(t.pixels().any(|p| p.0 == INK));
        assert!(t.pixels().all(|p| p.0 == INK || p.0 == WHITE));
    }

    #[test]
    fn plot_draws_one_coloured_line_per_measure() {
        let rows: Vec<Row> = (0..30)
            .map(|i| Row {
                index: i,
                time: i as f64 / 10.0,
                means: [0.01 * (i % 5) as f64, 1.0 + 0.1 * i as f64, 0.0],
            })
            .collect();
        let img = uncertainty_over_time(&rows);
        assert_eq!(img.dimensions(), (WIDTH, 3 * PANEL_H));
        for (i, c) in LINES.iter().enumerate() {
            let band = (i as u32 * PANEL_H + TOP)..((i as u32 + 1) * PANEL_H - BOTTOM + 3);
            let n = img
                .enumerate_pixels()
                .filter(|(x, y, p)| *x > LEFT && band.contains(y) && p.0 == *c)
                .count();
            assert!(n > 500, "panel {i}: {n} line pixels");
        }
        // One frame or none still plots.
        uncertainty_over_time(&rows[..1]);
        uncertainty_over_time(&[]);
    }
}
