//! The dataset: which pairs form a split (`split`), reading and checking labels (`label`),
//! class weights (`weights`), the example transforms and augmentation (`transform`, `augment`),
//! the frames kept decoded in memory (`frames`), the background loader that batches examples
//! ahead of the trainer (`loader`), and the sequences frames were filmed in, for
//! cross-sequence validation (`sequence`).

mod augment;
mod frames;
mod label;
mod loader;
mod sequence;
mod split;
mod transform;
mod weights;

pub(crate) use augment::check_augment;
pub(crate) use frames::Frames;
pub(crate) use label::{load_label, load_pair};
pub(crate) use loader::{Batch, Loader};
pub(crate) use sequence::{
    count_by_sequence, select, sequence_of, sequence_regex, CAMVID_SEQUENCE, UNMATCHED,
};
pub(crate) use split::{discover, Pair};
pub(crate) use transform::{transform, Example};
pub(crate) use weights::class_weights;

/// Small datasets written on the fly for the unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::Path;

    use image::{GrayImage, Luma, Rgb, RgbImage};

    use super::Pair;
    use crate::config::{DataConfig, ModelConfig};

    pub(crate) fn model(classes: i64, input_size: Option<[i64; 2]>) -> ModelConfig {
        ModelConfig {
            classes,
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
            palette: (0..=classes as u8).map(|c| [c * 10, 0, 0]).collect(),
            input_size,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..Default::default()
        }
    }

    pub(crate) fn data(root: &Path) -> DataConfig {
        DataConfig {
            root: root.to_path_buf(),
            ..Default::default()
        }
    }

    /// A 32x32 image whose left half is red and right half blue, with the matching index label
    /// (0 left, 1 right).
    pub(crate) fn write_pair(dir: &Path, split: &str, name: &str, w: u32, h: u32) -> Pair {
        let (idir, ldir) = (dir.join(split), dir.join(format!("{split}annot")));
        std::fs::create_dir_all(&idir).unwrap();
        std::fs::create_dir_all(&ldir).unwrap();
        let img = RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let label = GrayImage::from_fn(w, h, |x, _| Luma([u8::from(x >= w / 2)]));
        let pair = Pair {
            image: idir.join(format!("{name}.png")),
            label: ldir.join(format!("{name}.png")),
        };
        img.save(&pair.image).unwrap();
        label.save(&pair.label).unwrap();
        pair
    }

    /// The CamVid copy of the project's set-up; tests that need it are `#[ignore]`d and fail
    /// here, naming the folder, when run without it.
    pub(crate) fn camvid_root() -> std::path::PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/camvid");
        assert!(
            root.join("train.txt").is_file(),
            "no CamVid at {} (the SegNet tutorial's copy, with train.txt)",
            root.display()
        );
        root
    }
}
