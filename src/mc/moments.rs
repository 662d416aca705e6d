//! The raw moments behind a prediction: mean softmax, mean of its square and mean per-sample
//! entropy. Unlike the finished statistics they can be blended across frames (temporal
//! aggregation in segnet-video), and every measure follows from them.

use tch::{Kind, Tensor};

use super::{entropy, Accumulator, Prediction};

/// Per-pixel moments of softmax samples, at the network's resolution and on its device.
#[derive(Debug)]
pub struct Moments {
    /// `[K, H, W]` mean softmax.
    pub mean: Tensor,
    /// `[K, H, W]` mean of the squared softmax.
    pub square: Tensor,
    /// `[H, W]` mean entropy of the individual samples (nats).
    pub entropy: Tensor,
    /// Samples behind them (network passes, for temporal aggregation those of this frame).
    pub samples: usize,
}

impl Moments {
    /// Class-averaged variance, predictive entropy and mutual information, as
    /// [`Accumulator::finish`] computes them from the same samples (up to rounding: the
    /// variance comes from `E[p^2] - E[p]^2` here).
    pub fn prediction(&self) -> Prediction {
        let variance =
            (&self.square - self.mean.square())
                .clamp_min(0.0)
                .mean_dim(0, false, Kind::Float);
        let predictive = entropy(&self.mean, 0);
        let mutual_info = (&predictive - &self.entropy).clamp_min(0.0);
        let size = [self.mean.size()[1], self.mean.size()[2]];
        Prediction {
            probs: self.mean.shallow_clone(),
            variance,
            entropy: predictive,
            mutual_info,
            samples: self.samples,
            size,
        }
    }
}

impl Accumulator {
    /// The moments of everything added. Panics when nothing was added.
    pub(crate) fn moments(&self) -> Moments {
        let n = self.n as f64;
        let mean = self.mean.as_ref().expect("at least one sample");
        let m2 = self.m2.as_ref().expect("m2");
        Moments {
            mean: mean.copy(),
            square: m2 / n + mean.square(),
            entropy: self.entropy_sum.as_ref().expect("entropy") / n,
            samples: self.n as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn moments_give_the_statistics_of_the_samples() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(4);
        let probs = Tensor::rand([7, 5, 6, 8], (Kind::Float, Device::Cpu)).softmax(1, Kind::Float);
        let mut acc = Accumulator::new();
        acc.add(&probs);
        let m = acc.moments();
        assert!(m.square.allclose(
            &probs.square().mean_dim(0, false, Kind::Float),
            1e-5,
            1e-7,
            false
        ));
        let (from_moments, direct) = (m.prediction(), acc.finish());
        assert_eq!(from_moments.samples, 7);
        assert!(from_moments.probs.equal(&direct.probs));
        for measure in super::super::Measure::ALL {
            let (a, b) = (from_moments.measure(measure), direct.measure(measure));
            assert!(a.allclose(&b, 1e-4, 1e-6, false), "{measure}");
        }
    }
}
