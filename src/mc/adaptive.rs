//! Adaptive T: samples run `step` at a time until the running estimate has settled, up to
//! `--samples`.
//!
//! Settled means that over the last step both (a) the share of pixels whose class (argmax of
//! the mean softmax) changed and (b) the relative change of the image's mean softmax variance
//! fall under their tolerances. The variance compared is the unbiased one (divided by n - 1):
//! the population variance the maps show grows with n by (n - 1) / n, which would read as a
//! change (14% from 4 to 8 samples) where the samples agree. The first check compares 2 `step`
//! samples with `step`, so a run takes at least 2 `step` samples (or `--samples`, if fewer).
//! Samples keep their seeds, so a run that stopped after n samples is exactly the run with
//! T = n.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use super::Accumulator;
use crate::model::{Mode, Prefix, SegNet};

/// When an adaptive run stops.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settle {
    /// Samples between two checks.
    pub step: usize,
    /// Largest share of pixels whose class may change over the last step.
    pub class_tolerance: f64,
    /// Largest relative change of the mean variance over the last step.
    pub uncertainty_tolerance: f64,
}

impl Default for Settle {
    /// Tuned on CamVid val with the shipped model (README, "Adaptive T").
    fn default() -> Settle {
        Settle {
            step: 4,
            class_tolerance: 0.02,
            uncertainty_tolerance: 0.1,
        }
    }
}

impl Settle {
    pub(crate) fn validate(&self) -> Result<()> {
        ensure!(self.step >= 1, "--settle-step must be at least 1");
        for (v, flag) in [
            (self.class_tolerance, "--settle-classes"),
            (self.uncertainty_tolerance, "--settle-uncertainty"),
        ] {
            ensure!(
                v.is_finite() && v >= 0.0,
                "{flag} must be a number >= 0, got {v}"
            );
        }
        Ok(())
    }

    /// Whether the estimate moved less than the tolerances from `last` to `now`.
    pub(super) fn settled(&self, last: &Snapshot, now: &Snapshot) -> bool {
        let changed = now.classes.ne_tensor(&last.classes);
        let changed = changed
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        let scale = now.mean_variance.abs().max(f64::MIN_POSITIVE);
        let drift = (now.mean_variance - last.mean_variance).abs() / scale;
        changed <= self.class_tolerance && drift <= self.uncertainty_tolerance
    }
}

/// What the check compares between two points of a run.
pub(super) struct Snapshot {
    /// `[H, W]` argmax of the mean softmax.
    classes: Tensor,
    /// Mean over pixels of the class-averaged unbiased softmax variance.
    mean_variance: f64,
}

impl Snapshot {
    pub(super) fn of(acc: &Accumulator) -> Snapshot {
        let mean = acc.mean.as_ref().expect("a sample was added");
        let m2 = acc.m2.as_ref().expect("a sample was added");
        let dof = (acc.n - 1).max(1) as f64;
        Snapshot {
            classes: mean.argmax(0, false),
            mean_variance: m2.mean(Kind::Float).double_value(&[]) / dof,
        }
    }
}

/// Adds the samples with `seeds` to `acc`, `settle.step` at a time in network batches of at
/// most `chunk`, until the estimate has settled or the seeds run out.
///
/// # Shapes
/// `prefix` of one image (batch 1).
pub(super) fn run(
    net: &SegNet,
    prefix: &Prefix,
    seeds: &[u64],
    chunk: usize,
    settle: &Settle,
    acc: &mut Accumulator,
) {
    let mut last: Option<Snapshot> = None;
    for round in seeds.chunks(settle.step) {
        for c in round.chunks(chunk) {
            let logits = net.suffix(&prefix.for_samples(c), Mode::MC);
            acc.add(&logits.softmax(1, Kind::Float));
        }
        let now = Snapshot::of(acc);
        if last.as_ref().is_some_and(|l| settle.settled(l, &now)) {
            return;
        }
        last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn snapshot(classes: &[i64], mean_variance: f64) -> Snapshot {
        Snapshot {
            classes: Tensor::from_slice(classes).view([2, -1]),
            mean_variance,
        }
    }

    fn settle(class_tolerance: f64, uncertainty_tolerance: f64) -> Settle {
        Settle {
            step: 4,
            class_tolerance,
            uncertainty_tolerance,
        }
    }

    #[test]
    fn settled_needs_both_the_classes_and_the_variance_to_hold_still() {
        let a = snapshot(&[0, 1, 2, 3, 4, 5, 6, 7], 0.010);
        let one_changed = snapshot(&[0, 1, 2, 3, 4, 5, 6, 0], 0.0104);
        // One pixel in 8 changed, the variance moved 4%.
        assert!(settle(0.125, 0.05).settled(&a, &one_changed));
        assert!(!settle(0.1, 0.05).settled(&a, &one_changed), "classes");
        assert!(!settle(0.125, 0.03).settled(&a, &one_changed), "variance");
        let zero = snapshot(&[0; 8], 0.0);
        assert!(settle(0.0, 0.0).settled(&zero, &zero), "no variance at all");
    }

    #[test]
    fn the_check_uses_the_unbiased_variance() {
        // Two one-hot samples [1, 0] and [0, 1]: per class the population variance is 1/4,
        // the unbiased one 1/2.
        let one_hot = |c: f32| Tensor::from_slice(&[c, 1.0 - c]).view([1, 2, 1, 1]);
        let mut acc = Accumulator::new();
        acc.add(&one_hot(1.0));
        acc.add(&one_hot(0.0));
        assert!((Snapshot::of(&acc).mean_variance - 0.5).abs() < 1e-6);
    }
}
