//! What segnet-video's temporal aggregation needs from a [`Predictor`] beyond `predict`: the
//! raw moments of one frame's samples at the network's resolution, drawn with masks that
//! differ from frame to frame (the same masks on every frame would add no information), and a
//! prediction at the frame's size from moments blended across frames.

use anyhow::Result;
use image::RgbImage;

use crate::infer::{to_cpu, Predictor};
use crate::mc::{self, McOptions, Moments, Prediction};
use crate::rng::mix_seed;

impl Predictor {
    /// `[h, w]` the network runs at for a frame of `width x height`.
    pub fn network_size(&self, width: u32, height: u32) -> [i64; 2] {
        self.config()
            .input_size
            .unwrap_or([height as i64, width as i64])
    }

    /// Options for `samples` passes over frame `index`: `--seed` mixed with the frame index,
    /// `--chunk` as given, adaptive stopping as configured when `adaptive` (else exactly
    /// `samples`), and with `--flip` the other half of the samples mirrored on odd frames (so
    /// that one pass a frame alternates between the two views).
    pub fn frame_options(&self, index: usize, samples: usize, adaptive: bool) -> McOptions {
        McOptions {
            samples,
            seed: self.opts.seed.map(|s| mix_seed(s, index as u64)),
            adaptive: self.opts.adaptive.filter(|_| adaptive),
            flip_phase: index % 2 == 1,
            ..self.opts
        }
    }

    /// The moments of `opts`' samples of `img`, at the network's size and on its device; with
    /// dropout off, of the one weight-averaging pass.
    pub fn moments(&self, img: &RgbImage, opts: &McOptions) -> Result<Moments> {
        let opts = if self.dropout {
            *opts
        } else {
            McOptions {
                samples: 1,
                adaptive: None,
                ..*opts
            }
        };
        mc::sample_moments(&self.net, &self.input(img), &opts)
    }

    /// The prediction the moments give, at `width x height`, on the CPU.
    pub fn finish(&self, moments: &Moments, width: u32, height: u32) -> Prediction {
        let pred = tch::no_grad(|| moments.prediction().resize(height as i64, width as i64));
        to_cpu(pred)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};
    use crate::infer::PredictorOptions;
    use crate::mc::Measure;
    use crate::model::Precision;
    use std::collections::BTreeMap;
    use tch::{nn, Device};

    /// A random SegNet-Basic at 1/8 width with input 32x48, saved in `dir` and loaded: 6
    /// samples in chunks of 2.
    pub(crate) fn predictor(
        dir: &std::path::Path,
        seed: Option<u64>,
        precision: Precision,
    ) -> Predictor {
        let cfg = ModelConfig {
            arch: Arch::Basic,
            width: 0.125,
            input_size: Some([32, 48]),
            ..Default::default()
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = crate::model::SegNet::new(&vs.root(), &cfg);
        let path = dir.join("m.safetensors");
        if !path.exists() {
            crate::model::checkpoint::save(&path, &cfg, &vs, &[], &BTreeMap::new()).unwrap();
        }
        Predictor::load(&PredictorOptions {
            model: Some(path),
            device: Device::Cpu,
            mc: McOptions {
                samples: 6,
                chunk: 2,
                seed,
                adaptive: None,
                flip: false,
                flip_phase: false,
            },
            dropout: true,
            temperature: None,
            precision,
            test_dropout: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn frame_moments_finish_into_the_frame_prediction() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let p = predictor(dir.path(), Some(9), Precision::Fp32);
        let img = RgbImage::from_fn(60, 40, |x, y| image::Rgb([x as u8 * 4, y as u8 * 6, 90]));
        assert_eq!(p.network_size(60, 40), [32, 48]);
        let opts = p.frame_options(3, 6, false);
        let m = p.moments(&img, &opts).unwrap();
        assert_eq!(m.mean.size(), vec![11, 32, 48]);
        let direct = mc::sample(&p.net, &p.input(&img), &opts)
            .unwrap()
            .resize(40, 60);
        let from_moments = p.finish(&m, 60, 40);
        assert_eq!(from_moments.samples, 6);
        for measure in Measure::ALL {
            let (a, b) = (from_moments.measure(measure), direct.measure(measure));
            assert!(a.allclose(&b, 1e-4, 1e-6, false), "{measure}");
        }
        let next = p.moments(&img, &p.frame_options(4, 6, false)).unwrap();
        assert!(!next.mean.equal(&m.mean), "frames draw other masks");
    }

    #[test]
    fn with_flip_one_pass_a_frame_is_mirrored_on_every_other_frame() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let mut p = predictor(dir.path(), Some(9), Precision::Fp32);
        p.opts.flip = true;
        let img = RgbImage::from_fn(48, 32, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 40]));
        let x = p.input(&img);
        for index in [2, 3] {
            let opts = p.frame_options(index, 1, false);
            assert_eq!(opts.flip_phase, index % 2 == 1);
            let got = p.moments(&img, &opts).unwrap();
            // The frame's one pass, on the image or on its mirror (then mirrored back).
            let view = |t: &tch::Tensor| {
                if index % 2 == 1 {
                    t.flip([-1])
                } else {
                    t.copy()
                }
            };
            let plain = McOptions {
                flip: false,
                ..opts
            };
            let pass = mc::sample(&p.net, &view(&x), &plain).unwrap();
            assert!(
                got.mean.allclose(&view(&pass.probs), 1e-6, 1e-7, false),
                "frame {index}"
            );
        }
    }
}
