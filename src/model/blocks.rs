//! The building blocks: conv + batch norm (+ ReLU), and encoder/decoder stages that pool and
//! unpool with recorded indices.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// The same values with channels-last strides (NHWC in memory, NCHW in shape): libtorch's CPU
/// convolutions (oneDNN) run about 20% faster so, and their outputs keep the layout.
pub(crate) fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Conv (k x k, same padding) + batch norm + optional ReLU.
///
/// Batch norm is driven by its own `bn_train` flag, never by "is the model training": MC
/// dropout needs dropout on while batch norm uses its running statistics.
#[derive(Debug)]
pub(crate) struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    relu: bool,
    padding: i64,
    /// Conv weight and bias with batch norm folded in, for inference (see [`ConvBn::fold`]).
    folded: Option<(Tensor, Tensor)>,
}

impl ConvBn {
    pub(crate) fn new(p: nn::Path, cin: i64, cout: i64, k: i64, relu: bool) -> ConvBn {
        let cfg = nn::ConvConfig {
            padding: k / 2,
            ..Default::default()
        };
        ConvBn {
            conv: nn::conv2d(&p / "conv", cin, cout, k, cfg),
            bn: nn::batch_norm2d(&p / "bn", cout, Default::default()),
            relu,
            padding: k / 2,
            folded: None,
        }
    }

    /// # Shapes
    /// `[N, cin, H, W]` -> `[N, cout, H, W]`
    pub(crate) fn forward(&self, xs: &Tensor, bn_train: bool) -> Tensor {
        let mut ys = match (&self.folded, bn_train) {
            (Some((w, b)), false) => xs.conv2d(w, Some(b), 1, self.padding, 1, 1),
            _ => self.bn.forward_t(&xs.apply(&self.conv), bn_train),
        };
        if self.relu {
            ys.relu_()
        } else {
            ys
        }
    }

    /// Folds the batch-norm running statistics into the conv weights, so that inference
    /// (`bn_train = false`) runs one conv instead of conv + normalisation. Call again after the
    /// weights change; training (`bn_train = true`) ignores the folded copy.
    pub(crate) fn fold(&mut self) {
        let _guard = tch::no_grad_guard();
        let eps = 1e-5;
        let gamma = self.bn.ws.as_ref().expect("affine batch norm");
        let beta = self.bn.bs.as_ref().expect("affine batch norm");
        let scale = gamma / (&self.bn.running_var + eps).sqrt(); // [cout]
        let w = &self.conv.ws * scale.view([-1, 1, 1, 1]);
        let bias = match &self.conv.bs {
            Some(b) => b.shallow_clone(),
            None => Tensor::zeros_like(&self.bn.running_mean),
        };
        let b = (bias - &self.bn.running_mean) * &scale + beta;
        self.folded = Some((channels_last(&w.detach()), b.detach()));
    }

    /// The folded weights in `kind` (inference in half precision). Panics when not folded.
    pub(crate) fn cast(&mut self, kind: Kind) {
        let (w, b) = self.folded.as_ref().expect("fold before casting");
        self.folded = Some((w.to_kind(kind), b.to_kind(kind)));
    }
}

/// Where a pool happened: the argmax indices and the size before pooling, so the decoder
/// can unpool to exactly that size (360 -> 180 -> 90 -> 45 -> 22 must come back to 45).
#[derive(Debug)]
pub(crate) struct Switches {
    /// `[N, C, H/2, W/2]` int64
    pub(crate) indices: Tensor,
    /// `[H, W]` before pooling
    pub(crate) size: [i64; 2],
}

impl Switches {
    /// The same switches for `n` samples of one image (`indices` has batch 1).
    pub(crate) fn expand(&self, n: i64) -> Switches {
        let mut shape = self.indices.size();
        shape[0] = n;
        Switches {
            // Unpooling reads expanded (stride-0) indices fine: no copy per sample.
            indices: self.indices.expand(&shape, false),
            size: self.size,
        }
    }

    /// The switches of image `i` of a batch, as a batch of 1.
    pub(crate) fn narrow(&self, i: i64) -> Switches {
        Switches {
            indices: self.indices.narrow(0, i, 1),
            size: self.size,
        }
    }

    /// Several batches' switches as one (the same pooled size).
    pub(crate) fn cat<'a>(parts: impl Iterator<Item = &'a Switches>) -> Switches {
        let parts: Vec<&Switches> = parts.collect();
        let indices: Vec<&Tensor> = parts.iter().map(|s| &s.indices).collect();
        Switches {
            indices: Tensor::cat(&indices, 0),
            size: parts[0].size,
        }
    }
}

/// An encoder stage: convs, then a 2x2 max pool that keeps its indices.
#[derive(Debug)]
pub(crate) struct Encoder {
    convs: Vec<ConvBn>,
}

impl Encoder {
    pub(crate) fn new(p: nn::Path, channels: &[(i64, i64)], k: i64) -> Encoder {
        let convs = channels
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| ConvBn::new(&p / format!("{}", i + 1), cin, cout, k, true))
            .collect();
        Encoder { convs }
    }

    /// # Shapes
    /// `[N, C, H, W]` -> `[N, C', floor(H/2), floor(W/2)]` and the switches.
    pub(crate) fn forward(&self, xs: &Tensor, bn_train: bool) -> (Tensor, Switches) {
        let ys = self
            .convs
            .iter()
            .fold(xs.shallow_clone(), |x, c| c.forward(&x, bn_train));
        let size = [ys.size()[2], ys.size()[3]];
        let (pooled, indices) = ys.max_pool2d_with_indices([2, 2], [2, 2], [0, 0], [1, 1], false);
        (pooled, Switches { indices, size })
    }

    pub(crate) fn fold(&mut self) {
        self.convs.iter_mut().for_each(ConvBn::fold);
    }

    pub(crate) fn cast(&mut self, kind: Kind) {
        self.convs.iter_mut().for_each(|c| c.cast(kind));
    }
}

/// A decoder stage: unpool with the mirrored encoder's switches, then convs.
#[derive(Debug)]
pub(crate) struct Decoder {
    convs: Vec<ConvBn>,
}

impl Decoder {
    /// `relu[i]` says whether conv i is followed by ReLU (SegNet-Basic's decoder has none).
    pub(crate) fn new(p: nn::Path, channels: &[(i64, i64)], k: i64, relu: bool) -> Decoder {
        let convs = channels
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| ConvBn::new(&p / format!("{}", i + 1), cin, cout, k, relu))
            .collect();
        Decoder { convs }
    }

    /// # Shapes
    /// `[N, C, h, w]` -> `[N, C', H, W]` with `[H, W] = switches.size`.
    pub(crate) fn forward(&self, xs: &Tensor, switches: &Switches, bn_train: bool) -> Tensor {
        let up = xs.max_unpool2d(&switches.indices, switches.size);
        self.convs.iter().fold(up, |x, c| c.forward(&x, bn_train))
    }

    pub(crate) fn fold(&mut self) {
        self.convs.iter_mut().for_each(ConvBn::fold);
    }
    pub(crate) fn cast(&mut self, kind: Kind) {
        self.convs.iter_mut().for_each(|c| c.cast(kind));
    }
}
