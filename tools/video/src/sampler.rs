//! How the network stage turns a frame into a prediction: per-frame Monte Carlo sampling
//! (the library's predictor, adaptive T by default), or temporal aggregation across frames
//! (`temporal`), which needs the previous frame's state.

use anyhow::Result;
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
    PerFrame(&'a Predictor),
    Temporal(&'a Predictor, Box<Aggregator>),
}

impl<'a> Sampler<'a> {
    /// Temporal aggregation with `temporal`'s options, where there is something to aggregate:
    /// with dropout off or a dropout-free model every frame is one deterministic pass.
    pub(crate) fn new(
        predictor: &'a Predictor,
        temporal: Option<temporal::Options>,
    ) -> Result<Sampler<'a>> {
        let stochastic = predictor.dropout && predictor.config().dropout > 0.0;
        Ok(match temporal.filter(|_| stochastic) {
            Some(opts) => Sampler::Temporal(predictor, Box::new(Aggregator::new(opts)?)),
            None => Sampler::PerFrame(predictor),
        })
    }

    /// `per-frame` or `temporal`, as the CSV and summary name it.
    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Sampler::PerFrame(_) => "per-frame",
            Sampler::Temporal(..) => "temporal",
        }
    }

    /// The prediction for `frame`, at its size, on the CPU; `before` it in the selection.
    pub(crate) fn predict(&mut self, frame: &Frame, before: Before) -> Result<Predicted> {
        let mode = self.mode();
        let (w, h) = frame.image.dimensions();
        match self {
            Sampler::PerFrame(p) => {
                let pred = p.predict(&frame.image)?;
                let how = Sampling {
                    samples: pred.samples(),
                    warp_error: None,
                    mode,
                    reset: None,
                };
                Ok(Predicted { pred, how })
            }
            Sampler::Temporal(p, agg) => {
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
        }
    }
}
