//! Bilinear upsampling of class probabilities in row tiles, so that a prediction can be read at
//! an image's full size without the `[K, H, W]` map ever existing: 11 classes at 6000x4000 are
//! 1 GB of floats, and the outputs only need the argmax (and, for eval, the maximum) per pixel.
//!
//! Indices and weights are libtorch's `upsample_bilinear2d` (align_corners = false), computed
//! in the same float arithmetic and applied width first, then height, as its kernel does; the
//! results agree with it to float rounding (its kernel may fuse a multiply and an add).

use std::ops::Range;

use tch::{Device, Kind, Tensor};

/// Bytes of one `[K, rows, W]` tile of probabilities: a few rows of a huge image, the whole of
/// an ordinary one.
const TILE_BYTES: i64 = 16 << 20;

/// Where the samples of one axis of the output come from.
struct Axis {
    /// `[n]` int64: the lower and upper source index of each output sample.
    lo: Tensor,
    hi: Tensor,
    /// `[n]` float: their weights.
    w_lo: Tensor,
    w_hi: Tensor,
}

impl Axis {
    /// Output samples `range` of an axis resized from `input` to `output` samples.
    fn new(input: i64, output: i64, range: Range<i64>) -> Axis {
        let scale = input as f32 / output as f32;
        let n = range.end - range.start;
        let (mut lo, mut hi) = (
            Vec::with_capacity(n as usize),
            Vec::with_capacity(n as usize),
        );
        let (mut w_lo, mut w_hi) = (
            Vec::with_capacity(n as usize),
            Vec::with_capacity(n as usize),
        );
        for o in range {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i = (src as i64).min(input - 1);
            let l = (src - i as f32).clamp(0.0, 1.0);
            lo.push(i);
            hi.push(if i < input - 1 { i + 1 } else { i });
            w_lo.push(1.0 - l);
            w_hi.push(l);
        }
        Axis {
            lo: Tensor::from_slice(&lo),
            hi: Tensor::from_slice(&hi),
            w_lo: Tensor::from_slice(&w_lo),
            w_hi: Tensor::from_slice(&w_hi),
        }
    }

    /// Interpolates `t` along `dim` at this axis's samples, into `out`; `tmp` is scratch of
    /// the same shape. `shape` views the weights so they broadcast along `dim`.
    fn apply_into(&self, t: &Tensor, dim: i64, shape: &[i64], out: &mut Tensor, tmp: &mut Tensor) {
        let on = |x: &Tensor| x.to_device(t.device());
        let _ = t.index_select_out(out, dim, &on(&self.lo));
        let _ = out.g_mul_(&on(&self.w_lo).view(shape));
        let _ = t.index_select_out(tmp, dim, &on(&self.hi));
        let _ = tmp.g_mul_(&on(&self.w_hi).view(shape));
        let _ = out.g_add_(tmp);
    }
}

/// Reduces the renormalised, bilinearly upsampled probabilities over the classes, a few rows
/// at a time: `reduce` maps a `[K, rows, W]` tile to `[rows, W]`.
///
/// # Shapes
/// `probs: [K, h, w]`; returns `[h_out, w_out]` on the CPU.
pub(crate) fn reduce_classes(
    probs: &Tensor,
    [h_out, w_out]: [i64; 2],
    reduce: impl Fn(&Tensor) -> Tensor,
) -> Tensor {
    let [k, h, w] = probs.size()[..] else {
        panic!("probabilities must be [K, h, w], got {:?}", probs.size())
    };
    let opts = (Kind::Float, probs.device());
    // [K, h, W]: the width done once for every tile.
    let mut wide = Tensor::empty([k, h, w_out], opts);
    let mut tmp = Tensor::empty([k, h, w_out], opts);
    let columns = Axis::new(w, w_out, 0..w_out);
    columns.apply_into(
        &probs.to_kind(Kind::Float),
        2,
        &[1, 1, -1],
        &mut wide,
        &mut tmp,
    );
    drop(tmp);
    // The tiles reuse their buffers: a tile's worth of fresh allocations each time made the
    // heap grow by hundreds of MB over a big image.
    let rows = (TILE_BYTES / (4 * k * w_out)).clamp(1, h_out);
    let buffers = |n: i64| {
        let tile = || Tensor::empty([k, n, w_out], opts);
        (tile(), tile())
    };
    let (mut p, mut tmp) = buffers(rows);
    let mut out: Option<Tensor> = None;
    for y in (0..h_out).step_by(rows as usize) {
        let n = rows.min(h_out - y);
        if n < rows {
            (p, tmp) = buffers(n);
        }
        Axis::new(h, h_out, y..y + n).apply_into(&wide, 1, &[1, -1, 1], &mut p, &mut tmp);
        let _ = p.clamp_min_(0.0);
        let mut sum = p.sum_dim_intlist(0, true, Kind::Float);
        let _ = sum.clamp_min_(1e-12);
        let _ = p.g_div_(&sum);
        let r = reduce(&p);
        let out = out.get_or_insert_with(|| Tensor::empty([h_out, w_out], (r.kind(), Device::Cpu)));
        out.narrow(0, y, n).copy_(&r);
    }
    out.expect("at least one row")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Today's way: the whole `[K, H, W]` map upsampled by libtorch, then renormalised.
    fn whole(probs: &Tensor, h: i64, w: i64) -> Tensor {
        let up = probs
            .unsqueeze(0)
            .upsample_bilinear2d([h, w], false, None, None)
            .squeeze_dim(0)
            .clamp_min(0.0);
        &up / up.sum_dim_intlist(0, true, Kind::Float).clamp_min(1e-12)
    }

    #[test]
    fn tiles_give_libtorch_s_upsampling() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(5);
        let probs = Tensor::rand([11, 24, 32], (Kind::Float, Device::Cpu)).softmax(0, Kind::Float);
        // Up by non-integer factors, unchanged, and down; many one-row tiles at the widest.
        for (h, w) in [(45, 70), (24, 32), (17, 29), (360, 480), (3, 60_000)] {
            let reference = whole(&probs, h, w);
            let max = reduce_classes(&probs, [h, w], |p| p.max_dim(0, false).0);
            let classes = reduce_classes(&probs, [h, w], |p| p.argmax(0, false));
            assert_eq!(max.size(), [h, w]);
            let diff = (&max - reference.max_dim(0, false).0).abs().max();
            assert!(
                diff.double_value(&[]) < 1e-6,
                "{h}x{w}: confidence off by {diff}"
            );
            let same = classes.eq_tensor(&reference.argmax(0, false));
            let share = same
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            assert_eq!(share, 1.0, "{h}x{w}: class maps differ");
        }
    }
}
