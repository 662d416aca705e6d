//! Temporal aggregation of Monte Carlo dropout samples across the frames of a video: the
//! region-based temporal aggregation of Huang et al., "Efficient Uncertainty Estimation for
//! Semantic Segmentation in Videos" (ECCV 2018).
//!
//! Each frame gets k stochastic passes instead of T. The running per-pixel moments (mean
//! softmax, mean of its square, mean per-sample entropy) are warped into the current frame
//! along dense optical flow (OpenCV's DIS, on grey frames at the network's resolution) and
//! blended with the new samples, `m <- (1 - a) warp(m) + a p_t`, per pixel. `a` is small where
//! the warp is reliable and large where it is not; reliability is the photometric error between
//! the warped previous frame and the current one, averaged over a 5x5 region. With k >= 2 the
//! variance map is the running average of each frame's own sample variance instead: what
//! changes from frame to frame (the network's mean prediction does) then no longer counts as
//! variance. The state starts afresh, with a full per-frame MC estimate, at the first frame,
//! after a gap in the frames (see [`Reset::Gap`]) and at a scene cut (a large mean warp error).

use anyhow::{Context, Result};
use opencv::core::{Mat, Ptr, Size, Vec3b};
use opencv::imgproc;
use opencv::prelude::*;
use opencv::video::DISOpticalFlow;
use segnet_bayes::mc::Moments;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// OpenCV's DIS optical flow presets: faster or more accurate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Flow {
    Ultrafast,
    Fast,
    Medium,
}

impl Flow {
    fn preset(self) -> i32 {
        match self {
            Flow::Ultrafast => opencv::video::DISOpticalFlow_PRESET_ULTRAFAST,
            Flow::Fast => opencv::video::DISOpticalFlow_PRESET_FAST,
            Flow::Medium => opencv::video::DISOpticalFlow_PRESET_MEDIUM,
        }
    }
}

/// How frames are blended; the CLI's defaults were tuned on a dashcam video (README).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Options {
    /// Stochastic passes per frame (k).
    pub(crate) passes: usize,
    /// Weight of a frame's new passes where the warp is reliable.
    pub(crate) alpha: f64,
    /// Weight of a frame's new passes where the warp is not reliable at all.
    pub(crate) alpha_max: f64,
    /// Regional photometric error (grey levels in [0, 1]) up to which the warp counts as
    /// reliable; `a` rises linearly from `alpha` to `alpha_max` between the two.
    pub(crate) error_low: f64,
    pub(crate) error_high: f64,
    /// Mean photometric error of the warp over the frame above which the frame starts a new
    /// scene.
    pub(crate) cut: f64,
    pub(crate) flow: Flow,
}

/// Why the state started afresh at a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reset {
    /// The first frame of the selection.
    First,
    /// The frame before it in the selection was done by an earlier run, which left no state
    /// behind: nothing to warp from.
    Gap,
    /// The previous frame does not warp into this one: another scene.
    Cut,
}

impl Reset {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reset::First => "first",
            Reset::Gap => "gap",
            Reset::Cut => "cut",
        }
    }
}

/// What came before a frame in the selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Before {
    /// Nothing: the frame starts the selection.
    Start,
    /// The frame with this index, computed by this run.
    Computed(usize),
    /// A frame done by an earlier run.
    Done,
}

/// What the aggregator asks the network for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Draw {
    /// A full per-frame estimate (`--samples`, adaptive as configured): the state restarts.
    Full,
    /// This many passes to blend in.
    Passes(usize),
}

/// One frame's result.
pub(crate) struct Step {
    /// The blended moments, at the network's resolution.
    pub(crate) moments: Moments,
    /// Network passes run for this frame.
    pub(crate) passes: usize,
    pub(crate) reset: Option<Reset>,
    /// Mean photometric error of the warp from the last frame, where one was tried.
    pub(crate) warp_error: Option<f64>,
}

/// The running state: the moments of the last frame and its grey image.
struct State {
    index: usize,
    /// `[1, 3K + 1, h, w]` (see [`stack`]).
    moments: Tensor,
    classes: i64,
    /// `[h, w]` 8-bit grey.
    grey: Mat,
}

/// Carries the moments from frame to frame.
pub(crate) struct Aggregator {
    opts: Options,
    flow: Ptr<DISOpticalFlow>,
    state: Option<State>,
}

impl Aggregator {
    pub(crate) fn new(opts: Options) -> Result<Aggregator> {
        let flow = DISOpticalFlow::create(opts.flow.preset())
            .context("cannot create OpenCV's DIS optical flow")?;
        Ok(Aggregator {
            opts,
            flow,
            state: None,
        })
    }

    /// The moments of frame `index` (grey at the network's resolution), which follows `before`
    /// in the selection. `draw` runs the network.
    pub(crate) fn next(
        &mut self,
        index: usize,
        before: Before,
        grey: Mat,
        draw: &mut dyn FnMut(Draw) -> Result<Moments>,
    ) -> Result<Step> {
        let (reset, warp_error) = match (&self.state, before) {
            (_, Before::Start) => (Reset::First, None),
            (Some(s), Before::Computed(i)) if i == s.index => {
                match warp_from(&mut self.flow, self.opts.cut, s, &grey)? {
                    Warp::Cut(e) => (Reset::Cut, Some(e)),
                    Warp::Ok {
                        grid,
                        error,
                        mean_error,
                    } => {
                        let m = draw(Draw::Passes(self.opts.passes))?;
                        let mut step = self.blend(index, grey, &grid, &error, m);
                        step.warp_error = Some(mean_error);
                        return Ok(step);
                    }
                }
            }
            _ => (Reset::Gap, None),
        };
        let m = draw(Draw::Full)?;
        let passes = m.samples;
        self.state = Some(State {
            index,
            moments: stack(&m),
            classes: m.mean.size()[0],
            grey,
        });
        Ok(Step {
            moments: m,
            passes,
            reset: Some(reset),
            warp_error,
        })
    }

    fn blend(
        &mut self,
        index: usize,
        grey: Mat,
        grid: &Tensor,
        error: &Tensor,
        m: Moments,
    ) -> Step {
        let s = self.state.as_mut().expect("a state to blend into");
        let o = &self.opts;
        let ramp = ((error - o.error_low) / (o.error_high - o.error_low).max(1e-9)).clamp(0.0, 1.0);
        let a = ramp * (o.alpha_max - o.alpha) + o.alpha;
        let blended = tch::no_grad(|| {
            let warped = warp(&s.moments, grid);
            &warped + (stack(&m) - &warped) * &a
        });
        s.moments = blended;
        s.grey = grey;
        s.index = index;
        Step {
            moments: unstack(&s.moments, s.classes, m.samples, m.samples >= 2),
            passes: m.samples,
            reset: None,
            warp_error: None,
        }
    }
}

/// Where each pixel of `grey` comes from in the state's frame, and how well that explains
/// it.
fn warp_from(flow: &mut Ptr<DISOpticalFlow>, cut: f64, s: &State, grey: &Mat) -> Result<Warp> {
    let device = s.moments.device();
    let flow = flow_to(flow, grey, &s.grey)?;
    let (h, w) = (grey.rows() as i64, grey.cols() as i64);
    let (grid, inside) = sampling_grid(&flow, h, w);
    let previous = grey_tensor(&s.grey)?;
    let current = grey_tensor(grey)?;
    let diff = (warp(&previous, &grid) - &current).abs();
    let inside_share = inside
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    let mean_error = (&diff * &inside).sum(Kind::Float).double_value(&[])
        / (inside_share * (h * w) as f64).max(1.0);
    // A frame mostly made of what the last one did not show is a new scene, too.
    if mean_error > cut || inside_share < 0.25 {
        return Ok(Warp::Cut(mean_error));
    }
    let regional = diff.avg_pool2d([5, 5], [1, 1], [2, 2], false, false, None::<i64>);
    // Pixels that come from outside the last frame have no history.
    let error = regional.where_self(&inside, &regional.ones_like());
    Ok(Warp::Ok {
        grid: grid.to_device(device),
        error: error.to_device(device),
        mean_error,
    })
}

/// Dense flow from `current` to `previous`: `current(x) ~ previous(x + flow(x))`, the
/// direction a pull warp needs. `[h, w, 2]` (dx, dy) in pixels.
fn flow_to(dis: &mut Ptr<DISOpticalFlow>, current: &Mat, previous: &Mat) -> Result<Tensor> {
    let mut flow = Mat::default();
    dis.calc(current, previous, &mut flow)
        .context("optical flow")?;
    let bytes = flow.data_bytes()?;
    let (h, w) = (current.rows() as i64, current.cols() as i64);
    Ok(Tensor::f_from_data_size(bytes, &[h, w, 2], Kind::Float)?)
}

enum Warp {
    /// The frame starts a new scene; the warp's mean error.
    Cut(f64),
    Ok {
        /// `[1, h, w, 2]` for `grid_sampler`.
        grid: Tensor,
        /// `[1, 1, h, w]` regional photometric error in [0, 1].
        error: Tensor,
        /// Mean photometric error over the pixels that come from inside the last frame.
        mean_error: f64,
    },
}

/// The grid that pulls each pixel from `x + flow(x)` (normalised to [-1, 1], corners
/// aligned), and `[1, 1, h, w]` whether that point lies inside the frame.
fn sampling_grid(flow: &Tensor, h: i64, w: i64) -> (Tensor, Tensor) {
    let opts = (Kind::Float, Device::Cpu);
    let xs = Tensor::arange(w, opts).view([1, w]) + flow.select(2, 0);
    let ys = Tensor::arange(h, opts).view([h, 1]) + flow.select(2, 1);
    let inside = xs.ge(0.0) * xs.le((w - 1) as f64) * ys.ge(0.0) * ys.le((h - 1) as f64);
    let nx = &xs * (2.0 / (w - 1).max(1) as f64) - 1.0;
    let ny = &ys * (2.0 / (h - 1).max(1) as f64) - 1.0;
    let grid = Tensor::stack(&[nx, ny], 2).unsqueeze(0);
    (grid, inside.view([1, 1, h, w]))
}

/// Bilinear pull warp of `[1, C, h, w]` along a [`sampling_grid`]; points outside the frame
/// take the nearest border value.
fn warp(t: &Tensor, grid: &Tensor) -> Tensor {
    const BILINEAR: i64 = 0;
    const BORDER: i64 = 1;
    Tensor::grid_sampler(t, grid, BILINEAR, BORDER, true)
}

/// `[1, 1, h, w]` grey levels in [0, 1].
fn grey_tensor(grey: &Mat) -> Result<Tensor> {
    let (h, w) = (grey.rows() as i64, grey.cols() as i64);
    let t = Tensor::f_from_data_size(grey.data_bytes()?, &[1, 1, h, w], Kind::Uint8)?;
    Ok(t.to_kind(Kind::Float) / 255.0)
}

/// The frame in grey at the network's `[h, w]`, as the flow wants it.
pub(crate) fn grey(image: &image::RgbImage, size: [i64; 2]) -> Result<Mat> {
    let (w, h) = image.dimensions();
    let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, image.as_raw())?;
    let mut grey = Mat::default();
    imgproc::cvt_color(&rgb, &mut grey, imgproc::COLOR_RGB2GRAY, 0)?;
    let mut small = Mat::default();
    let to = Size::new(size[1] as i32, size[0] as i32);
    imgproc::resize(&grey, &mut small, to, 0.0, 0.0, imgproc::INTER_AREA)?;
    Ok(small)
}

/// `[1, 2K + 1, h, w]`: mean, square, entropy.
/// `[1, 3K + 1, h, w]`: mean, square, entropy, and the variance within the moments' own
/// samples (unbiased: times n / (n - 1), where there are n > 1 of them).
fn stack(m: &Moments) -> Tensor {
    let n = m.samples as f64;
    let within = (&m.square - m.mean.square()).clamp_min(0.0) * (n / (n - 1.0).max(1.0));
    let parts = [&m.mean, &m.square, &m.entropy.unsqueeze(0), &within];
    Tensor::cat(&parts, 0).unsqueeze(0)
}

/// The moments a state holds for `k` classes. `within`: the variance is the running average of
/// each frame's own variance (k >= 2 passes a frame), which the frames' changing means do not
/// inflate; else the running square's.
fn unstack(t: &Tensor, k: i64, samples: usize, within: bool) -> Moments {
    let t = t.squeeze_dim(0);
    let mean = t.narrow(0, 0, k);
    let square = if within {
        mean.square() + t.narrow(0, 2 * k + 1, k)
    } else {
        t.narrow(0, k, k)
    };
    Moments {
        mean,
        square,
        entropy: t.get(2 * k),
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};
    use std::sync::Mutex;

    /// libtorch's generator is global: tests that draw from it take turns.
    static RNG: Mutex<()> = Mutex::new(());

    const W: u32 = 64;
    const H: u32 = 48;

    fn options() -> Options {
        Options {
            passes: 1,
            alpha: 0.1,
            alpha_max: 0.5,
            error_low: 0.04,
            error_high: 0.15,
            cut: 0.08,
            flow: Flow::Fast,
        }
    }

    /// Grey level in [0, 1] of a smooth texture the flow can follow.
    fn texture_at(x: f64, y: f64) -> f64 {
        0.5 + 0.25 * (x / 5.0).sin() * (y / 7.0).cos() + 0.15 * ((x + 2.0 * y) / 11.0).sin()
    }

    /// The texture moved right by `dx` and down by `dy` pixels.
    fn frame(dx: f64, dy: f64) -> Mat {
        let img = RgbImage::from_fn(W, H, |x, y| {
            let g = (255.0 * texture_at(x as f64 - dx, y as f64 - dy)).round() as u8;
            Rgb([g, g, g])
        });
        grey(&img, [H as i64, W as i64]).unwrap()
    }

    /// Moments of `n` one-hot samples per pixel drawn from the class probabilities `q`.
    fn draws(q: &Tensor, n: usize) -> Moments {
        let k = q.size()[0];
        let below = q.cumsum(0, Kind::Float);
        let mut counts = q.zeros_like();
        for _ in 0..n {
            let u = Tensor::rand([1, H as i64, W as i64], (Kind::Float, Device::Cpu));
            let class = u.gt_tensor(&below).sum_dim_intlist(0, false, Kind::Int64);
            counts += class.clamp_max(k - 1).one_hot(k).permute([2, 0, 1]);
        }
        let mean = counts / n as f64;
        Moments {
            square: mean.copy(),
            mean,
            entropy: Tensor::zeros([H as i64, W as i64], (Kind::Float, Device::Cpu)),
            samples: n,
        }
    }

    /// What the aggregator asked for, frame by frame.
    fn run_frames(
        agg: &mut Aggregator,
        frames: impl IntoIterator<Item = Mat>,
        draw: &mut dyn FnMut(Draw) -> Moments,
    ) -> Vec<Step> {
        frames
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let before = i.checked_sub(1).map_or(Before::Start, Before::Computed);
                agg.next(i, before, f, &mut |d| Ok(draw(d))).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_static_scene_converges_to_the_per_frame_statistics() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(1);
        let q = (Tensor::randn([4, H as i64, W as i64], (Kind::Float, Device::Cpu)) * 1.5)
            .softmax(0, Kind::Float);
        let true_variance = (&q * (q.neg() + 1.0)).mean(Kind::Float).double_value(&[]);
        let mut agg = Aggregator::new(options()).unwrap();
        let mut asked = vec![];
        let steps = run_frames(&mut agg, (0..150).map(|_| frame(0.0, 0.0)), &mut |d| {
            asked.push(d);
            draws(&q, if d == Draw::Full { 40 } else { 1 })
        });
        assert_eq!(asked[0], Draw::Full);
        assert!(asked[1..].iter().all(|d| *d == Draw::Passes(1)), "no reset");
        let last = steps.last().unwrap();
        assert_eq!((last.passes, last.reset), (1, None));
        let pred = last.moments.prediction();
        let variance = pred.measure(segnet_bayes::mc::Measure::Variance);
        let ratio = variance.mean(Kind::Float).double_value(&[]) / true_variance;
        // The running mean is an exponential average of about (2 - a) / a = 19 passes.
        let error = (&last.moments.mean - &q)
            .abs()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((0.85..1.05).contains(&ratio), "variance ratio {ratio}");
        assert!(
            error < 0.09,
            "mean absolute error of the mean softmax {error}"
        );
        // One frame's pass alone is far off: the aggregate holds many frames' samples.
        let one = draws(&q, 1);
        let single = (&one.mean - &q).abs().mean(Kind::Float).double_value(&[]);
        assert!(single > 2.0 * error, "{single} vs {error}");
    }

    #[test]
    fn with_two_passes_a_changing_mean_does_not_count_as_variance() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(2);
        let shape = [3, H as i64, W as i64];
        // The network's mean moves from frame to frame; the samples' own variance does not.
        let q = |t: usize| {
            let c = [0.8, 0.1, 0.1];
            let (a, b) = if t.is_multiple_of(2) { (0, 1) } else { (1, 0) };
            let mut v = [0.0; 3];
            (v[a], v[b], v[2]) = (c[0], c[1], c[2]);
            Tensor::from_slice(&v)
                .view([3, 1, 1])
                .expand(shape, false)
                .to_kind(Kind::Float)
        };
        let true_variance = [0.8f64, 0.1, 0.1]
            .iter()
            .map(|p| p * (1.0 - p))
            .sum::<f64>()
            / 3.0;
        let variance_after = |passes: usize| {
            let mut agg = Aggregator::new(Options {
                passes,
                ..options()
            })
            .unwrap();
            let mut t = 0;
            let steps = run_frames(&mut agg, (0..60).map(|_| frame(0.0, 0.0)), &mut |d| {
                t += 1;
                draws(&q(t), if d == Draw::Full { 40 } else { passes })
            });
            let pred = steps.last().unwrap().moments.prediction();
            let v = pred.measure(segnet_bayes::mc::Measure::Variance);
            v.mean(Kind::Float).double_value(&[]) / true_variance
        };
        let (one, two) = (variance_after(1), variance_after(2));
        assert!(
            (0.85..1.15).contains(&two),
            "within-frame variance ratio {two}"
        );
        assert!(
            one > 1.5,
            "one pass a frame counts the change as variance: {one}"
        );
    }

    #[test]
    fn a_shifted_scene_is_warped_along_the_flow() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let opts = Options {
            alpha: 1e-4,
            alpha_max: 1e-4,
            ..options()
        };
        let mut agg = Aggregator::new(opts).unwrap();
        // The state holds the texture itself in class 0: after the warp it must show the
        // texture where the new frame has it.
        let pattern = |dx: f64, dy: f64| {
            Tensor::from_slice(
                &(0..H * W)
                    .map(|i| texture_at((i % W) as f64 - dx, (i / W) as f64 - dy) as f32)
                    .collect::<Vec<_>>(),
            )
            .view([1, H as i64, W as i64])
        };
        let moments_of = |p: Tensor| Moments {
            square: p.square(),
            entropy: p.get(0).zeros_like(),
            mean: p,
            samples: 1,
        };
        let (dx, dy) = (3.0, 2.0);
        let steps = run_frames(
            &mut agg,
            [frame(0.0, 0.0), frame(dx, dy)],
            &mut |d| match d {
                Draw::Full => moments_of(pattern(0.0, 0.0)),
                Draw::Passes(_) => moments_of(pattern(0.0, 0.0).zeros_like()),
            },
        );
        assert_eq!(steps[1].reset, None);
        let inner = |t: &Tensor| {
            t.get(0)
                .narrow(0, 8, H as i64 - 16)
                .narrow(1, 8, W as i64 - 16)
        };
        let got = inner(&steps[1].moments.mean);
        let want = inner(&pattern(dx, dy));
        let unwarped = inner(&pattern(0.0, 0.0));
        let error = (&got - &want).abs().mean(Kind::Float).double_value(&[]);
        let moved = (&unwarped - &want)
            .abs()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(error < 0.01, "warp error {error}");
        assert!(
            moved > 10.0 * error,
            "the shift matters: {moved} vs {error}"
        );
    }

    #[test]
    fn a_cut_and_a_gap_restart_the_state() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let q = Tensor::full(
            [3, H as i64, W as i64],
            1.0 / 3.0,
            (Kind::Float, Device::Cpu),
        );
        let mut agg = Aggregator::new(options()).unwrap();
        let mut asked = vec![];
        let mut draw = |d: Draw| -> Result<Moments> {
            asked.push(d);
            Ok(draws(&q, 2))
        };
        let other = {
            let img = RgbImage::from_fn(W, H, |x, y| {
                let g = (255.0 * (1.0 - texture_at(y as f64 * 1.7, x as f64 * 0.6))) as u8;
                Rgb([g, g / 2, 255 - g])
            });
            grey(&img, [H as i64, W as i64]).unwrap()
        };
        let resets: Vec<Option<Reset>> = [
            (0, Before::Start, frame(0.0, 0.0)),
            (1, Before::Computed(0), frame(1.0, 0.0)),
            (2, Before::Computed(1), other),
            (3, Before::Computed(2), frame(0.0, 0.0)),
            (5, Before::Done, frame(1.0, 0.0)),
            (6, Before::Computed(5), frame(2.0, 0.0)),
            (7, Before::Computed(2), frame(2.0, 0.0)),
        ]
        .into_iter()
        .map(|(i, before, f)| agg.next(i, before, f, &mut draw).unwrap().reset)
        .collect();
        assert_eq!(
            resets,
            [
                Some(Reset::First),
                None,
                Some(Reset::Cut),
                Some(Reset::Cut),
                Some(Reset::Gap),
                None,
                Some(Reset::Gap)
            ]
        );
        assert_eq!(asked[1], Draw::Passes(1));
        assert_eq!(asked[2], Draw::Full);
    }
}
