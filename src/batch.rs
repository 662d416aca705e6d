//! GPU throughput: several frames through the network together (`mc::sample_batch`), and
//! half-precision convolutions (`--precision`; the statistics stay in fp32).

use anyhow::{ensure, Result};
use image::RgbImage;
use tch::{Device, Tensor};

use crate::infer::{to_cpu, Predictor};
use crate::mc::{self, Prediction};
use crate::model::Precision;

/// Half precision where it can run: fp16 convolutions need CUDA.
pub(crate) fn check_precision(precision: Precision, device: Device) -> Result<()> {
    ensure!(
        precision != Precision::Fp16 || device.is_cuda(),
        "--precision fp16 needs a CUDA device (use bf16 on a CPU)"
    );
    Ok(())
}

impl Predictor {
    /// The predictions of several images of one size, each at its own size on the CPU: what
    /// [`Predictor::predict`] gives each, from batched network calls.
    pub fn predict_batch(&self, images: &[&RgbImage]) -> Result<Vec<Prediction>> {
        let inputs: Vec<Tensor> = images.iter().map(|img| self.input(img)).collect();
        let preds = if self.dropout {
            mc::sample_batch(&self.net, &Tensor::stack(&inputs, 0), &self.opts)?
        } else {
            inputs
                .iter()
                .map(|x| mc::weight_average(&self.net, x, self.opts.flip))
                .collect()
        };
        Ok(preds
            .into_iter()
            .zip(images)
            .map(|(p, img)| {
                let (h, w) = (img.height() as i64, img.width() as i64);
                to_cpu(tch::no_grad(|| p.resize(h, w)))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mc::{Measure, Settle};
    use crate::stream::tests::predictor;

    fn images() -> Vec<RgbImage> {
        (0..3u32)
            .map(|i| {
                RgbImage::from_fn(50, 34, move |x, y| {
                    let v = |c: u32| (c % 256) as u8;
                    image::Rgb([v(x * 5), v(y * 7 + 40 * i), v(200 - 60 * i)])
                })
            })
            .collect()
    }

    #[test]
    fn a_batch_gives_each_frame_what_it_gets_alone() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let mut p = predictor(dir.path(), Some(4), Precision::Fp32);
        let imgs = images();
        let refs: Vec<&RgbImage> = imgs.iter().collect();
        for adaptive in [
            None,
            Some(Settle {
                step: 2,
                class_tolerance: 0.3,
                uncertainty_tolerance: 0.3,
            }),
        ] {
            // 5 rows a call: calls mix the frames' samples.
            p.opts.chunk = 5;
            p.opts.adaptive = adaptive;
            let batch = p.predict_batch(&refs).unwrap();
            p.opts.chunk = 2;
            for (img, b) in imgs.iter().zip(&batch) {
                let alone = p.predict(img).unwrap();
                assert_eq!(alone.samples(), b.samples(), "{adaptive:?}");
                for m in Measure::ALL {
                    let (x, y) = (alone.measure(m), b.measure(m));
                    // Batch composition changes the convolutions' rounding, no more.
                    let diff = (x - y).abs().max().double_value(&[]);
                    assert!(diff < 1e-5, "{m} {adaptive:?}: {diff}");
                }
            }
            assert!(!batch[0]
                .measure(Measure::Variance)
                .equal(&batch[1].measure(Measure::Variance)));
        }
    }

    #[test]
    fn bf16_runs_on_the_cpu_close_to_fp32() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let full = predictor(dir.path(), Some(4), Precision::Fp32);
        let half = predictor(dir.path(), Some(4), Precision::Bf16);
        let img = &images()[1];
        let (a, b) = (full.predict(img).unwrap(), half.predict(img).unwrap());
        assert_eq!(
            b.measure(Measure::Entropy).kind(),
            tch::Kind::Float,
            "statistics in fp32"
        );
        let diff = (&a.probs - &b.probs).abs();
        let (mean, max) = (
            diff.mean(tch::Kind::Float).double_value(&[]),
            diff.max().double_value(&[]),
        );
        assert!(
            mean < 0.01 && max < 0.1,
            "bf16 against fp32: mean {mean}, max {max}"
        );
        assert!(mean > 0.0, "the network did run in bf16");
    }

    #[test]
    fn fp16_on_a_cpu_is_refused() {
        let e = check_precision(Precision::Fp16, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--precision fp16"), "{e}");
        assert!(check_precision(Precision::Bf16, Device::Cpu).is_ok());
    }
}
