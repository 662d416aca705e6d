//! `--maps`: each computed frame's raw maps as NumPy arrays (`maps/<frame>.npz`), for analysis
//! outside this tool (tools/bench_video.sh compares modes with them): `classes` (uint8) and one
//! float16 array per uncertainty measure (`variance`, `entropy`, `mutual-info`), all `[H, W]`
//! at the input's size.

use std::path::Path;

use anyhow::{Context, Result};
use segnet_bayes::mc::{Measure, Prediction};
use tch::{Kind, Tensor};

/// Writes the maps under a temporary name, then renames them: a file under the final name is
/// whole.
pub(crate) fn write(path: &Path, pred: &Prediction) -> Result<()> {
    let size = pred.measure(Measure::Variance).size();
    let mut arrays = vec![(
        "classes",
        Tensor::from_slice(&pred.class_bytes()).view(size.as_slice()),
    )];
    arrays
        .extend(Measure::ALL.map(|m| (m.name(), pred.measure(m).to_kind(Kind::Half).contiguous())));
    let partial = path.with_extension("partial.npz");
    Tensor::write_npz(&arrays, &partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot rename {}", partial.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_read_back_with_their_names_kinds_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let probs = Tensor::from_slice(&[0.9f32, 0.2, 0.1, 0.8]).view([2, 1, 2]);
        let pred = segnet_bayes::mc::Moments {
            square: probs.square(),
            entropy: Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu)),
            mean: probs,
            samples: 1,
        }
        .prediction();
        let path = dir.path().join("f.npz");
        write(&path, &pred).unwrap();
        let read: std::collections::HashMap<String, Tensor> =
            Tensor::read_npz(&path).unwrap().into_iter().collect();
        assert_eq!(read["classes"].kind(), Kind::Uint8);
        assert_eq!(
            Vec::<u8>::try_from(read["classes"].flatten(0, -1)).unwrap(),
            [0, 1]
        );
        let entropy = &read["entropy"];
        assert_eq!((entropy.kind(), entropy.size()), (Kind::Half, vec![1, 2]));
        assert!(entropy.to_kind(Kind::Float).allclose(
            &pred.measure(Measure::Entropy),
            1e-3,
            1e-3,
            false
        ));
        assert!(read.contains_key("mutual-info") && read.contains_key("variance"));
        assert!(!dir.path().join("f.partial.npz").exists());
    }
}
