//! `uncertainty.png`: mean uncertainty over time, one panel per measure (each with its own
//! y axis) stacked vertically. x is the frame's time in seconds, y the frame's mean of the
//! measure. The panels are [`segnet_bayes::plot::LineChart`]s.

use anyhow::Result;
use image::RgbImage;
use segnet_bayes::mc::Measure;
use segnet_bayes::plot::{self, LineChart, Series};

use crate::table::Row;

/// One line colour per measure, in [`Measure::ALL`] order.
const LINES: [[u8; 3]; 3] = [[31, 119, 180], [214, 39, 40], [44, 160, 44]];

/// The plot of `rows` (any order): [`plot::WIDTH`] wide, one [`plot::HEIGHT`]-tall panel per
/// measure.
pub fn uncertainty_over_time(rows: &[Row]) -> Result<RgbImage> {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| r.index);
    let t_max = upper(rows.iter().map(|r| r.time));
    let panels: Vec<LineChart> = Measure::ALL
        .iter()
        .enumerate()
        .map(|(i, m)| LineChart {
            title: format!("mean {m} per frame"),
            x_label: "time (s)".into(),
            y_label: format!("mean {m}"),
            series: vec![Series::new(
                m.name(),
                rows.iter().map(|r| (r.time, r.means[i])).collect(),
                LINES[i],
            )],
            x_range: (0.0, t_max),
            y_range: (0.0, upper(rows.iter().map(|r| r.means[i])) * 1.05),
            legend: None,
        })
        .collect();
    plot::line_charts(&panels)
}

/// The top of an axis from 0 covering `values`: their largest finite value, or 1 when there is
/// no positive one (no frames, a single frame at time 0, a flat zero series).
fn upper(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        (0..30)
            .rev()
            .map(|i| Row {
                index: i,
                time: i as f64 / 10.0,
                means: [0.01 * (i % 5) as f64, 1.0 + 0.1 * i as f64, 0.0],
            })
            .collect()
    }

    /// Pixels of colour `c` in panel `i`, as `(x, y)` within the panel.
    fn panel_pixels(img: &RgbImage, i: usize, c: [u8; 3]) -> Vec<(u32, u32)> {
        let y0 = i as u32 * plot::HEIGHT;
        img.enumerate_pixels()
            .filter(|(_, y, p)| (y0..y0 + plot::HEIGHT).contains(y) && p.0 == c)
            .map(|(x, y, _)| (x, y - y0))
            .collect()
    }

    #[test]
    fn upper_covers_the_values_and_never_collapses() {
        assert_eq!(upper([0.2, 3.5, 1.0].into_iter()), 3.5);
        assert_eq!(upper([0.2, f64::NAN, f64::INFINITY].into_iter()), 0.2);
        assert_eq!(upper([0.0, 0.0].into_iter()), 1.0);
        assert_eq!(upper(std::iter::empty()), 1.0);
    }

    #[test]
    fn plot_draws_one_coloured_line_per_measure() {
        let img = uncertainty_over_time(&rows()).unwrap();
        assert_eq!(img.dimensions(), (plot::WIDTH, 3 * plot::HEIGHT));
        for (i, c) in LINES.iter().enumerate() {
            let n = panel_pixels(&img, i, *c).len();
            assert!(n > 1000, "panel {i}: {n} line pixels");
            for (j, other) in LINES.iter().enumerate() {
                if j != i {
                    assert!(
                        panel_pixels(&img, i, *other).is_empty(),
                        "panel {i} has {j}"
                    );
                }
            }
        }
        // Entropy rises with time (rows given newest first): below the legend, the line's
        // leftmost pixel is lower than its rightmost.
        let line: Vec<(u32, u32)> = panel_pixels(&img, 1, LINES[1])
            .into_iter()
            .filter(|p| p.1 > 80)
            .collect();
        let left = line.iter().min_by_key(|p| p.0).unwrap();
        let right = line.iter().max_by_key(|p| p.0).unwrap();
        assert!(left.1 > right.1 + 200, "{left:?} {right:?}");
    }

    #[test]
    fn one_frame_or_none_still_plots() {
        for rows in [&rows()[29..], &[]] {
            let img = uncertainty_over_time(rows).unwrap();
            assert_eq!(img.dimensions(), (plot::WIDTH, 3 * plot::HEIGHT));
        }
    }
}
