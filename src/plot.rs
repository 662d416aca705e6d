//! Plots of an evaluation report, for a person to look at rather than read: a reliability
//! diagram, the accuracy of the most certain pixels, and per-class IoU.
//!
//! Drawn by plotters into an RGB buffer (its own PNG encoder would pull an older `image`), text
//! in the bundled DejaVu Sans. Charts are [`WIDTH`] x [`HEIGHT`] on white.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::Result;
use image::RgbImage;
use plotters::chart::MeshStyle;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::eval::Report;
use crate::render::{save_png_atomic, text_width};

/// Chart size in pixels.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

/// Weight averaging and MC dropout keep these colours in every plot (matplotlib's first two).
const WA_COLOUR: [u8; 3] = [31, 119, 180];
const MC_COLOUR: [u8; 3] = [255, 127, 14];
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

/// Text sizes in pixels: titles, and tick labels, axis titles and legends.
const TITLE: u32 = 24;
const TEXT: u32 = 18;
const GRID: RGBColor = RGBColor(228, 228, 228);
const AXIS: RGBColor = RGBColor(96, 96, 96);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Chart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(x, y)` in data units, joined in order. Values outside the chart's ranges are clamped to
    /// its edges; a point with a NaN coordinate is skipped and breaks the line.
    pub points: Vec<(f64, f64)>,
    pub colour: [u8; 3],
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, colour: [u8; 3]) -> Series {
        let name = name.into();
        Series {
            name,
            points,
            colour,
        }
    }
}

/// A line chart: axes with ticks, axis titles, a title, and (where `legend` says) a legend
/// naming each series. Series with at most 60 points get a marker on each point. Empty or
/// reversed ranges are widened, non-finite ones become `[0, 1]`.
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// The corner of the plot that holds the legend; `None` for no legend.
    pub legend: Option<SeriesLabelPosition>,
}

/// `charts` stacked top to bottom, each [`WIDTH`] x [`HEIGHT`].
pub fn line_charts(charts: &[LineChart]) -> Result<RgbImage> {
    draw(charts.len(), |areas| {
        for (area, chart) in areas.iter().zip(charts) {
            line_chart(area, chart)?;
        }
        Ok(())
    })
}

/// One group of a [`bar_chart`]: its legend name, its colour, and one value per label.
type BarGroup = (String, [u8; 3], Vec<Option<f64>>);

/// Writes `reliability.png`, `accuracy_vs_kept.png` and `per_class_iou.png` into `out`.
pub(crate) fn write_eval_plots(out: &Path, r: &Report) -> Result<()> {
    let (wa, mc) = (&r.weight_averaging, &r.mc_dropout);
    let mc_name = r.mc_name();

    let bins = |rel: &[(f64, f64, u64)]| -> Vec<(f64, f64)> {
        rel.iter()
            .filter(|b| b.2 > 0)
            .map(|&(c, a, _)| (c, a))
            .collect()
    };
    let reliability = LineChart {
        title: format!(
            "Reliability (ECE: WA {:.1}%, MC {:.1}%)",
            100.0 * wa.ece,
            100.0 * mc.ece
        ),
        x_label: "mean confidence".into(),
        y_label: "accuracy".into(),
        series: vec![
            Series::new(
                "perfect calibration",
                vec![(0.0, 0.0), (1.0, 1.0)],
                DIAGONAL_COLOUR,
            ),
            Series::new("weight averaging", bins(&wa.reliability), WA_COLOUR),
            Series::new(mc_name.clone(), bins(&mc.reliability), MC_COLOUR),
        ],
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        legend: Some(SeriesLabelPosition::LowerRight),
    };
    save_png_atomic(&line_charts(&[reliability])?, &out.join("reliability.png"))?;

    let kept: Vec<Series> = r
        .uncertainty
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let name = format!("{}, {}", q.measure, short_prediction(&q.prediction));
            Series::new(name, q.accuracy_at_kept.clone(), PALETTE[i % PALETTE.len()])
        })
        .collect();
    let lowest = kept
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|a| a.is_finite())
        .fold(1.0f64, f64::min);
    let y_lo = (((lowest - 0.02) * 20.0).floor() / 20.0).clamp(0.0, 0.95);
    let accuracy = LineChart {
        title: "Accuracy of the most certain pixels".into(),
        x_label: "fraction of pixels kept (most certain first)".into(),
        y_label: "pixel accuracy".into(),
        series: kept,
        x_range: (0.0, 1.0),
        y_range: (y_lo, 1.0),
        legend: Some(SeriesLabelPosition::LowerLeft),
    };
    save_png_atomic(
        &line_charts(&[accuracy])?,
        &out.join("accuracy_vs_kept.png"),
    )?;

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
    )?;
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

/// Plotters has no font of its own without the system's: give it the bundled DejaVu Sans.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let font = dejavu::sans::regular();
        let ok = plotters::style::register_font("sans-serif", FontStyle::Normal, font).is_ok();
        assert!(ok, "the bundled DejaVu Sans parses");
    });
}

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(&RGBColor(24, 24, 24))
}

fn rgb([r, g, b]: [u8; 3]) -> RGBColor {
    RGBColor(r, g, b)
}

/// Runs `f` on `n` areas stacked top to bottom, [`WIDTH`] x [`HEIGHT`] each, on white.
fn draw(n: usize, f: impl FnOnce(Vec<Area>) -> Result<()>) -> Result<RgbImage> {
    register_font();
    let (w, h) = (WIDTH, HEIGHT * n.max(1) as u32);
    let mut buf = vec![255u8; 3 * w as usize * h as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        f(root.split_evenly((n.max(1), 1)))?;
        root.present()?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("the buffer holds w * h RGB pixels"))
}

/// A range plotters can draw: finite, `start < end`.
fn axis((lo, hi): (f64, f64)) -> Range<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let half = if hi > lo {
        0.0
    } else {
        (lo.abs() * 0.05).max(0.5)
    };
    lo - half..hi + half
}

/// The axes and grid both kinds of chart share.
fn mesh<'a, 'b>(
    chart: &'b mut Chart<'a>,
) -> MeshStyle<'a, 'b, RangedCoordf64, RangedCoordf64, BitMapBackend<'a>> {
    let mut mesh = chart.configure_mesh();
    mesh.label_style(font(TEXT))
        // Plotters sets ab_glyph text about a fifth of its size too high: centre the labels on
        // their ticks.
        .y_label_offset(TEXT as i32 / 5)
        .axis_style(AXIS)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT);
    mesh
}

fn line_chart(area: &Area, c: &LineChart) -> Result<()> {
    let (xs, ys) = (axis(c.x_range), axis(c.y_range));
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, font(TITLE))
        .margin(16)
        .x_label_area_size(2 * TEXT + 12)
        // Room for tick labels such as "0.0008" and the axis title.
        .y_label_area_size(text_width("0.0000", TEXT as f32) + 2 * TEXT)
        .build_cartesian_2d(xs.clone(), ys.clone())?;
    mesh(&mut chart)
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .axis_desc_style(font(TEXT))
        .draw()?;
    let clamp = |&(x, y): &(f64, f64)| (x.clamp(xs.start, xs.end), y.clamp(ys.start, ys.end));
    let nan = |&(x, y): &(f64, f64)| x.is_nan() || y.is_nan();
    for s in &c.series {
        let colour = rgb(s.colour);
        let line = colour.stroke_width(3);
        let runs = s
            .points
            .split(nan)
            .map(|run| run.iter().map(clamp).collect::<Vec<_>>());
        chart
            .draw_series(runs.map(|run| PathElement::new(run, line)))?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], line));
        if s.points.len() <= 60 {
            let dots = s.points.iter().filter(|p| !nan(p)).map(clamp);
            chart.draw_series(dots.map(|p| Circle::new(p, 4, colour.filled())))?;
        }
    }
    match &c.legend {
        Some(corner) => legend(&mut chart, corner.clone()),
        None => Ok(()),
    }
}

/// The legend naming the series, in `corner` of the plot.
fn legend(chart: &mut Chart, corner: SeriesLabelPosition) -> Result<()> {
    chart
        .configure_series_labels()
        .position(corner)
        .label_font(font(TEXT))
        .background_style(WHITE.mix(0.9))
        .border_style(AXIS)
        .draw()?;
    Ok(())
}

/// Vertical bar chart of labelled values in `[0, 1]`, shown as percentages. Each group is one
/// bar per label (`values[i]` belongs to `labels[i]`; a missing or `None` value shows "n/a"
/// instead of a bar), named in the legend. The value is printed above its bar where it fits.
/// The labels read upwards, every few when crowded.
fn bar_chart(title: &str, labels: &[String], groups: &[BarGroup]) -> Result<RgbImage> {
    let n = labels.len().max(1);
    let stride = ((TEXT + 4) as f64 * n as f64 / (WIDTH - 120) as f64).ceil() as usize;
    let widest = labels.iter().map(|l| text_width(l, TEXT as f32)).max();
    draw(1, |areas| {
        let mut chart = ChartBuilder::on(&areas[0])
            .caption(title, font(TITLE))
            .margin(16)
            .x_label_area_size(widest.unwrap_or(0).min(HEIGHT / 3) + 12)
            .y_label_area_size(3 * TEXT + 8)
            // Headroom above 100 % for the values and the legend; ticks stop at 100 %.
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..1.19)?;
        mesh(&mut chart)
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(7)
            .y_label_formatter(&|y| format!("{:.0}%", 100.0 * y))
            .draw()?;
        let upwards = font(TEXT)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Right, VPos::Center));
        let names = labels.iter().enumerate().step_by(stride.max(1));
        chart.draw_series(names.map(|(i, l)| {
            EmptyElement::at((i as f64, 0.0)) + Text::new(l.clone(), (0, 8), upwards.clone())
        }))?;
        draw_bars(&mut chart, labels.len(), groups)?;
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// The bars of [`bar_chart`] for `n` labels, each with its value above it where that fits, and
/// "n/a" where a label has no value at all.
fn draw_bars(chart: &mut Chart, n: usize, groups: &[BarGroup]) -> Result<()> {
    // Each label's bars fill this share of its slot.
    const FILL: f64 = 0.88;
    let pitch = FILL / groups.len().max(1) as f64;
    let value =
        |vals: &[Option<f64>], i: usize| vals.get(i).copied().flatten().filter(|v| !v.is_nan());
    let bar_px = chart.plotting_area().dim_in_pixel().0 as f64 * pitch / n.max(1) as f64;
    let values_fit = text_width("100", 14.0) as f64 + 3.0 <= bar_px;
    let above = font(14).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, (name, colour, values)) in groups.iter().enumerate() {
        let colour = rgb(*colour);
        let bars: Vec<(f64, f64)> = (0..n)
            .filter_map(|i| Some((i as f64 - FILL / 2.0 + j as f64 * pitch, value(values, i)?)))
            .map(|(x, v)| (x, v.clamp(0.0, 1.0)))
            .collect();
        let rect = |&(x, v): &(f64, f64)| {
            Rectangle::new([(x, 0.0), (x + 0.9 * pitch, v)], colour.filled())
        };
        chart
            .draw_series(bars.iter().map(rect))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 7), (x + 14, y + 7)], colour.filled()));
        let text = |&(x, v): &(f64, f64)| {
            EmptyElement::at((x + 0.45 * pitch, v))
                + Text::new(format!("{:.0}", 100.0 * v), (0, -3), above.clone())
        };
        chart.draw_series(bars.iter().filter(|_| values_fit).map(text))?;
    }
    let missing = (0..n).filter(|&i| groups.iter().all(|g| value(&g.2, i).is_none()));
    let grey = font(TEXT)
        .color(&AXIS)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(missing.map(|i| Text::new("n/a", (i as f64, 0.02), grey.clone())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{SamplesUsed, Scores, UncertaintyQuality};

    fn count(img: &RgbImage, c: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == c).count()
    }

    /// Pixels dark enough to be text.
    fn dark(img: &RgbImage) -> usize {
        img.pixels().filter(|p| p.0.iter().all(|&c| c < 90)).count()
    }

    fn chart(series: Vec<Series>, x_range: (f64, f64), y_range: (f64, f64)) -> RgbImage {
        line_charts(&[LineChart {
            title: "title".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series,
            x_range,
            y_range,
            legend: None,
        }])
        .unwrap()
    }

    /// `(x, y)` of the pixels of colour `c`.
    fn pixels_of(img: &RgbImage, c: [u8; 3]) -> Vec<(u32, u32)> {
        img.enumerate_pixels()
            .filter(|(_, _, p)| p.0 == c)
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    const RED: [u8; 3] = [200, 10, 20];

    #[test]
    fn charts_are_800_by_500_and_stack() {
        let line = chart(vec![], (0.0, 1.0), (0.0, 1.0));
        assert_eq!(line.dimensions(), (WIDTH, HEIGHT));
        assert!(dark(&line) > 100, "title and tick labels are drawn");
        let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let bars = bar_chart("t", &labels, &[("g".into(), RED, vec![Some(0.5), None])]).unwrap();
        assert_eq!(bars.dimensions(), (WIDTH, HEIGHT));
        assert!(dark(&bars) > 100, "title and labels are drawn");
        let panel = |colour| LineChart {
            title: "t".into(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![Series::new("s", vec![(0.0, 0.0), (1.0, 1.0)], colour)],
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            legend: Some(SeriesLabelPosition::LowerRight),
        };
        let two = line_charts(&[panel(RED), panel([0, 200, 0])]).unwrap();
        assert_eq!(two.dimensions(), (WIDTH, 2 * HEIGHT));
        assert!(pixels_of(&two, RED).iter().all(|p| p.1 < HEIGHT));
        assert!(pixels_of(&two, [0, 200, 0]).iter().all(|p| p.1 >= HEIGHT));
    }

    #[test]
    fn line_chart_draws_its_series_in_its_colour() {
        let s = Series::new("rising", vec![(0.0, 0.0), (0.5, 0.8), (1.0, 1.0)], RED);
        let img = chart(vec![s], (0.0, 1.0), (0.0, 1.0));
        // A 3-pixel line across most of the chart, and markers.
        let line = pixels_of(&img, RED);
        assert!(line.len() > 3 * 500, "{} series pixels", line.len());
        // The line rises: its leftmost pixel is lower than its rightmost.
        let left = line.iter().min_by_key(|p| p.0).unwrap();
        let right = line.iter().max_by_key(|p| p.0).unwrap();
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
        let img = chart(vec![Series::new("w", wild, RED)], (0.0, 1.0), (0.0, 1.0));
        let xs: Vec<u32> = pixels_of(&img, RED).iter().map(|p| p.0).collect();
        assert!(!xs.is_empty());
        // Clamped to the plot's right edge, not beyond the margin.
        let max = *xs.iter().max().unwrap();
        assert!(max > WIDTH * 4 / 5 && max < WIDTH - 5, "{max}");
    }

    #[test]
    fn empty_series_and_degenerate_ranges_do_not_panic() {
        let empty = Series::new("nothing", vec![], RED);
        let one = Series::new("one", vec![(2.0, 2.0)], [0, 200, 0]);
        for (xr, yr) in [
            ((0.0, 1.0), (0.0, 1.0)),
            ((1.0, 1.0), (0.0, 0.0)),
            ((f64::NAN, 1.0), (1.0, f64::INFINITY)),
            ((5.0, -5.0), (1e-9, 2e-9)),
        ] {
            let img = chart(vec![empty.clone(), one.clone()], xr, yr);
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        }
        let many: Vec<Series> = (0..40)
            .map(|i| Series::new(format!("series number {i}"), vec![(0.1, 0.2)], RED))
            .collect();
        chart(many, (0.0, 1.0), (0.0, 1.0));
        assert!(line_charts(&[]).is_ok());
    }

    #[test]
    fn all_none_and_empty_bar_charts_do_not_panic() {
        let labels: Vec<String> = (0..11).map(|i| format!("class {i}")).collect();
        let img = bar_chart("none", &labels, &[("g".into(), RED, vec![None; 11])]).unwrap();
        assert!(count(&img, RED) <= 15 * 15, "only the legend swatch");
        bar_chart("no labels", &[], &[("g".into(), RED, vec![Some(0.3)])]).unwrap();
        bar_chart("no groups", &labels, &[]).unwrap();
        bar_chart(
            "short values",
            &labels,
            &[("g".into(), RED, vec![Some(2.0), Some(f64::NAN)])],
        )
        .unwrap();
        let many: Vec<String> = (0..500)
            .map(|i| format!("a very long class name {i}"))
            .collect();
        bar_chart("crowded", &many, &[("g".into(), RED, vec![Some(0.5); 500])]).unwrap();
    }

    #[test]
    fn bar_height_is_proportional_to_value() {
        let labels: Vec<String> = ["full", "half"].map(String::from).to_vec();
        let img = bar_chart(
            "t",
            &labels,
            &[("g".into(), RED, vec![Some(1.0), Some(0.5)])],
        )
        .unwrap();
        // The longest unbroken run of bar colour in a column (the legend swatch is short).
        let height = |xs: std::ops::Range<u32>| {
            xs.map(|x| {
                (0..HEIGHT)
                    .map(|y| img.get_pixel(x, y).0 == RED)
                    .fold((0, 0), |(run, best), red| {
                        let run = if red { run + 1 } else { 0 };
                        (run, best.max(run))
                    })
                    .1
            })
            .max()
            .unwrap()
        };
        let (full, half) = (height(0..WIDTH / 2), height(WIDTH / 2..WIDTH));
        assert!(full > 200, "{full}");
        assert!(
            (full as f64 / half as f64 - 2.0).abs() < 0.02,
            "{full} vs {half}"
        );
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
            adaptive: false,
            test_dropout: None,
            temperature: None,
            flip: false,
            samples_used: SamplesUsed {
                mean: 50.0,
                min: 50,
                max: 50,
            },
            seconds: 1.5,
            weight_averaging: scores(0.0),
            mc_dropout: scores(0.03),
            uncertainty,
            per_sequence: vec![],
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
            assert!(dark(&img) > 500, "{name} has text");
        }
        let reliability = image::open(dir.path().join("reliability.png"))
            .unwrap()
            .to_rgb8();
        assert!(count(&reliability, WA_COLOUR) > 300 && count(&reliability, MC_COLOUR) > 300);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 3, "no temporary files left");
    }
}
