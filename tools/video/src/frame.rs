//! One output video frame: the input, the class overlay and the uncertainty heatmap (with its
//! colour bar; plain, or blended over the grey input) side by side or stacked, and the class
//! legend beside them. The heatmap uses the measure's fixed scale (`Scale::fixed`), so a colour
//! means the same value in every frame.

use std::borrow::Cow;

use image::{GenericImage, Rgb, RgbImage};
use segnet_bayes::config::ModelConfig;
use segnet_bayes::mc::Measure;
use segnet_bayes::render::{self, Scale};

use crate::cli::Layout;

/// Where everything goes in a frame of the output video. Fixed for a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input frame size.
    pub w: u32,
    pub h: u32,
    /// Width of the heatmap panel (heat part plus colour bar).
    pub heat_w: u32,
    /// Output video frame size (even, as most encoders want).
    pub width: u32,
    pub height: u32,
    input_at: (u32, u32),
    overlay_at: (u32, u32),
    heat_at: (u32, u32),
    legend_at: (u32, u32),
}

/// Everything needed to draw the frames of one run.
pub struct Style {
    alpha: f32,
    pub measure: Measure,
    /// The heatmap's colour scale: the measure's fixed scale, the same for every frame.
    pub scale: Scale,
    palette: Vec<[u8; 3]>,
    /// Blend the heatmap over a grey copy of the input (`--heat-overlay`).
    heat_overlay: bool,
    legend: RgbImage,
    pub geometry: Geometry,
}

impl Style {
    pub fn new(
        cfg: &ModelConfig,
        w: u32,
        h: u32,
        layout: Layout,
        alpha: f32,
        m: Measure,
        heat_overlay: bool,
    ) -> Style {
        let scale = Scale::fixed(m, cfg.classes as usize);
        // The heatmap panel's width depends only on the height, the scale and the label.
        let heat_w = render::heatmap(&vec![0.0; (w * h) as usize], w, h, scale, m.name()).width();
        let panels_h = match layout {
            Layout::Side => h,
            Layout::Stack => 3 * h,
        };
        let legend = legend_fitting(cfg, panels_h);
        let (lw, lh) = legend.dimensions();
        let (input_at, overlay_at, heat_at, panels_w) = match layout {
            Layout::Side => ((0, 0), (w, 0), (2 * w, 0), 2 * w + heat_w),
            Layout::Stack => ((0, 0), (0, h), (0, 2 * h), w.max(heat_w)),
        };
        let even = |n: u32| n + n % 2;
        let geometry = Geometry {
            w,
            h,
            heat_w,
            width: even(panels_w + lw),
            height: even(panels_h.max(lh)),
            input_at,
            overlay_at,
            heat_at,
            legend_at: (panels_w, 0),
        };
        Style {
            alpha,
            measure: m,
            scale,
            palette: cfg.palette.clone(),
            heat_overlay,
            legend,
            geometry,
        }
    }

    /// The heatmap panel of a frame: the values coloured on the fixed scale, and the colour bar.
    pub fn heat_panel(&self, values: &[f32]) -> RgbImage {
        let g = &self.geometry;
        render::heatmap(values, g.w, g.h, self.scale, self.measure.name())
    }

    /// The class overlay of a frame.
    pub fn overlay(&self, input: &RgbImage, classes: &[u8]) -> RgbImage {
        let colours = render::colour_classes(classes, input.width(), input.height(), &self.palette);
        render::overlay(input, &colours, self.alpha)
    }

    /// The output video frame; `heat` is the plain heatmap panel.
    pub fn compose(&self, input: &RgbImage, overlay: &RgbImage, heat: &RgbImage) -> RgbImage {
        let g = &self.geometry;
        let heat = match self.heat_overlay {
            true => Cow::Owned(render::heat_over_grey(input, heat)),
            false => Cow::Borrowed(heat),
        };
        let mut out = RgbImage::from_pixel(g.width, g.height, Rgb([255, 255, 255]));
        for (img, (x, y)) in [
            (input, g.input_at),
            (overlay, g.overlay_at),
            (&*heat, g.heat_at),
            (&self.legend, g.legend_at),
        ] {
            out.copy_from(img, x, y)
                .expect("panels fit the geometry by construction");
        }
        out
    }
}

/// The legend in the largest text (32 pixels down to 10) that is no taller than the panels.
fn legend_fitting(cfg: &ModelConfig, height: u32) -> RgbImage {
    let k = cfg.classes as usize;
    let palette = &cfg.palette[..k.min(cfg.palette.len())];
    let names = &cfg.class_names[..k.min(cfg.class_names.len())];
    (10..=32)
        .rev()
        .step_by(2)
        .map(|size| render::legend(names, palette, size as f32))
        .find(|l| l.height() <= height)
        .unwrap_or_else(|| render::legend(names, palette, 10.0))
}

/// An RGB image as the BGR bytes OpenCV writes.
pub fn to_bgr(img: &RgbImage) -> Vec<u8> {
    img.as_raw()
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}

/// The numbers of one frame (one CSV row).
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Mean of each measure, in `Measure::ALL` order.
    pub means: [f64; 3],
    /// Share of pixels per class.
    pub shares: Vec<f64>,
    /// Share of pixels whose measure exceeds the threshold.
    pub above: f64,
}

impl Stats {
    /// `classes` and `values` (the thresholded measure) are row-major maps of one frame.
    pub fn new(means: [f64; 3], classes: &[u8], k: usize, values: &[f32], threshold: f32) -> Stats {
        let mut counts = vec![0usize; k];
        for &c in classes {
            if let Some(n) = counts.get_mut(c as usize) {
                *n += 1;
            }
        }
        let total = classes.len().max(1) as f64;
        let above = values.iter().filter(|&&v| v > threshold).count();
        Stats {
            means,
            shares: counts.iter().map(|&n| n as f64 / total).collect(),
            above: above as f64 / values.len().max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(layout: Layout) -> Style {
        let cfg = ModelConfig::default();
        Style::new(&cfg, 64, 48, layout, 0.5, Measure::Variance, false)
    }

    fn draw(style: &Style, values: &[f32]) -> RgbImage {
        let g = &style.geometry;
        let input = RgbImage::from_pixel(g.w, g.h, Rgb([10, 20, 30]));
        let classes = vec![3u8; (g.w * g.h) as usize];
        let overlay = style.overlay(&input, &classes);
        style.compose(&input, &overlay, &style.heat_panel(values))
    }

    #[test]
    fn equal_values_get_equal_colours_in_different_frames() {
        let s = style(Layout::Side);
        let n = (s.geometry.w * s.geometry.h) as usize;
        let max = s.scale.max;
        // Frame a is calm, frame b is mostly very uncertain; pixel 0 holds the same value.
        let mut a = vec![0.01 * max; n];
        let mut b = vec![0.95 * max; n];
        a[0] = 0.3 * max;
        b[0] = 0.3 * max;
        b[1] = 0.01 * max;
        let (fa, fb) = (draw(&s, &a), draw(&s, &b));
        let (hx, hy) = s.geometry.heat_at;
        assert_eq!(fa.get_pixel(hx, hy), fb.get_pixel(hx, hy));
        assert_eq!(
            fa.get_pixel(hx, hy).0,
            render::colour_of(0.3 * max, s.scale)
        );
        assert_eq!(fa.get_pixel(hx + 1, hy), fb.get_pixel(hx + 1, hy));
        // A per-frame stretched scale would not do that; the fixed one separates the frames.
        assert_ne!(fa.get_pixel(hx + 2, hy), fb.get_pixel(hx + 2, hy));
        // The colour bars are identical too.
        let bar = |f: &RgbImage| {
            let g = &s.geometry;
            image::imageops::crop_imm(f, hx + g.w, hy, g.heat_w - g.w, g.h).to_image()
        };
        assert_eq!(bar(&fa), bar(&fb));
    }

    #[test]
    fn side_and_stack_layouts_place_the_panels_and_keep_even_sizes() {
        for layout in [Layout::Side, Layout::Stack] {
            let s = style(layout);
            let g = &s.geometry;
            let f = draw(&s, &vec![0.0; (g.w * g.h) as usize]);
            assert_eq!(f.dimensions(), (g.width, g.height));
            assert!(g.width.is_multiple_of(2) && g.height.is_multiple_of(2));
            assert_eq!(
                f.get_pixel(g.input_at.0 + 5, g.input_at.1 + 5).0,
                [10, 20, 30]
            );
            // Half the input [10, 20, 30], half the road colour [128, 64, 128].
            let want = [69u8, 42, 79];
            assert_eq!(f.get_pixel(g.overlay_at.0 + 5, g.overlay_at.1 + 5).0, want);
            assert_eq!(
                f.get_pixel(g.heat_at.0, g.heat_at.1).0,
                render::colour_of(0.0, s.scale)
            );
            // The legend shows every class colour.
            for c in &ModelConfig::default().palette[..11] {
                assert!(f.pixels().any(|p| p.0 == *c), "{layout:?}: no swatch {c:?}");
            }
        }
        let (side, stack) = (style(Layout::Side), style(Layout::Stack));
        assert!(side.geometry.width > 3 * 64);
        assert!(stack.geometry.height >= 3 * 48);
    }

    #[test]
    fn heat_overlay_blends_the_heatmap_panel_over_the_grey_input() {
        let plain = style(Layout::Side);
        let blended = Style {
            heat_overlay: true,
            ..style(Layout::Side)
        };
        let g = &plain.geometry;
        let mut values = vec![0.0; (g.w * g.h) as usize];
        values[0] = plain.scale.max;
        let (fp, fb) = (draw(&plain, &values), draw(&blended, &values));
        let (hx, hy) = g.heat_at;
        // Calm pixels: the plain heatmap's near-black over the input's grey (18 here), grey
        // dimmed; the uncertain pixel shows the heatmap's bright top colour.
        let calm = fb.get_pixel(hx + 5, hy + 5).0;
        assert_ne!(calm, fp.get_pixel(hx + 5, hy + 5).0);
        assert!(
            calm[0] > 0 && calm[0] == calm[1] && calm[0] < 18,
            "{calm:?}"
        );
        let hot = fb.get_pixel(hx, hy).0;
        assert!(hot.iter().all(|&c| c > 100), "{hot:?}");
        // The colour bar, the input and the class overlay are the same in both.
        let crop = |f: &RgbImage, x, w| image::imageops::crop_imm(f, x, hy, w, g.h).to_image();
        assert_eq!(
            crop(&fp, hx + g.w, g.heat_w - g.w),
            crop(&fb, hx + g.w, g.heat_w - g.w)
        );
        assert_eq!(crop(&fp, 0, 2 * g.w), crop(&fb, 0, 2 * g.w));
    }

    #[test]
    fn stats_count_class_shares_and_pixels_above_the_threshold() {
        let classes = [0u8, 0, 1, 3, 3, 3, 3, 11];
        let values = [0.0f32, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
        let s = Stats::new([1.0, 2.0, 3.0], &classes, 4, &values, 0.45);
        assert_eq!(s.shares, vec![0.25, 0.125, 0.0, 0.5]);
        assert_eq!(s.above, 0.375);
        assert_eq!(s.means, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn bgr_swaps_red_and_blue() {
        let img = RgbImage::from_pixel(2, 1, Rgb([1, 2, 3]));
        assert_eq!(to_bgr(&img), vec![3, 2, 1, 3, 2, 1]);
    }
}
