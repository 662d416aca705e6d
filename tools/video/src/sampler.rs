//! How the network stage turns a frame into a prediction: per-frame Monte Carlo sampling
//! (the library's predictor, adaptive T by default), or temporal aggregation across frames
//! (`temporal`), which needs the previous frame's state.

use anyhow::Result;
use image::RgbImage;
use segnet_bayes::infer::Predictor;
use segnet_bayes::mc::Prediction;

use crate::source::Frame;
use crate::table::Sampling;
use crate::temporal::{self, Aggregator, Before, Draw};

/// A prediction and how it was sampled.
pub(crate) struct Predicted {
    pub(crate) pred: Prediction,
    pub(crate) how: Sampling,
}

pub(crate) enum Sampler<'a> {
    /// Frames sampled on their own, `batch` at a time through the network.
    PerFrame {
        predictor: &'a Predictor,
        batch: usize,
    },
    Temporal(&'a Predictor, Box<Aggregator>),
}

impl<'a> Sampler<'a> {
    /// Temporal aggregation with `temporal`'s options, where there is something to aggregate:
    /// with dropout off or a dropout-free model every frame is one deterministic pass. Frames
    /// sampled on their own go through the network `batch` at a time on a GPU (a CPU gains
    /// nothing from it), one at a time on a CPU.
    pub(crate) fn new(
        predictor: &'a Predictor,
        temporal: Option<temporal::Options>,
        batch: usize,
    ) -> Result<Sampler<'a>> {
        let stochastic = predictor.dropout && predictor.config().dropout > 0.0;
        Ok(match temporal.filter(|_| stochastic) {
            Some(opts) => Sampler::Temporal(predictor, Box::new(Aggregator::new(opts)?)),
            None => Sampler::PerFrame {
                predictor,
                batch: if predictor.device().is_cuda() {
                    batch.max(1)
                } else {
                    1
                },
            },
        })
    }

    /// Frames to hand to [`Sampler::predict`] together.
    pub(crate) fn batch(&self) -> usize {
        match self {
            Sampler::PerFrame { batch, .. } => *batch,
            Sampler::Temporal(..) => 1,
        }
    }

    /// `per-frame` or `temporal`, as the CSV and summary name it.
    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Sampler::PerFrame { .. } => "per-frame",
            Sampler::Temporal(..) => "temporal",
        }
    }

    /// The predictions for consecutive `frames` of the selection, each at its size, on the
    /// CPU; `before` the first of them.
    pub(crate) fn predict(&mut self, frames: &[Frame], before: Before) -> Result<Vec<Predicted>> {
        let mode = self.mode();
        match self {
            Sampler::PerFrame { predictor, .. } => {
                let images: Vec<&RgbImage> = frames.iter().map(|f| &f.image).collect();
                let preds = match images.as_slice() {
                    [one] => vec![predictor.predict(one)?],
                    _ => predictor.predict_batch(&images)?,
                };
                Ok(preds
                    .into_iter()
                    .map(|pred| {
                        let how = Sampling {
                            samples: pred.samples(),
                            warp_error: None,
                            mode,
                            reset: None,
                        };
                        Predicted { pred, how }
                    })
                    .collect())
            }
            Sampler::Temporal(p, agg) => {
                let mut before = before;
                let mut out = Vec::with_capacity(frames.len());
                for frame in frames {
                    out.push(temporal_step(p, agg, frame, before, mode)?);
                    before = Before::Computed(frame.index);
                }
                Ok(out)
            }
        }
    }
}

/// One frame through the aggregator.
fn temporal_step(
    p: &Predictor,
    agg: &mut Aggregator,
    frame: &Frame,
    before: Before,
    mode: &'static str,
) -> Result<Predicted> {
    let (w, h) = frame.image.dimensions();
    let grey = temporal::grey(&frame.image, p.network_size(w, h))?;
    let mut draw = |d: Draw| {
        let opts = match d {
            Draw::Full => p.frame_options(frame.index, p.opts.samples, true),
            Draw::Passes(k) => p.frame_options(frame.index, k, false),
        };
        p.moments(&frame.image, &opts)
    };
    let step = agg.next(frame.index, before, grey, &mut draw)?;
    let how = Sampling {
        samples: step.passes,
        warp_error: step.warp_error,
        mode,
        reset: step.reset.map(temporal::Reset::name),
    };
    Ok(Predicted {
        pred: p.finish(&step.moments, w, h),
        how,
    })
}
