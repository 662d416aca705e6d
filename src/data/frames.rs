//! The frames a loader draws from, optionally kept decoded in memory (`data.cache`), so that
//! epochs after the first skip PNG/JPEG decoding and label checks.

use std::sync::{Arc, OnceLock};

use anyhow::Result;
use image::RgbImage;

use super::label::Label;
use super::{load_pair, Pair};
use crate::config::{DataConfig, ModelConfig};

/// A decoded image and its label.
pub(crate) type Decoded = Arc<(RgbImage, Label)>;

/// Image/label pairs, each decoded once and kept when caching.
pub(crate) struct Frames {
    pub pairs: Vec<Pair>,
    /// One slot per pair, filled on first use; `None` when not caching.
    cache: Option<Vec<OnceLock<Decoded>>>,
}

impl Frames {
    pub(crate) fn new(pairs: Vec<Pair>, cache: bool) -> Frames {
        let cache = cache.then(|| (0..pairs.len()).map(|_| OnceLock::new()).collect());
        Frames { pairs, cache }
    }

    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Pair `i` decoded (and checked): from memory when cached there, else from disk. A
    /// failed read is not cached, so it fails again, naming the file, if retried.
    pub(crate) fn get(&self, i: usize, cfg: &DataConfig, model: &ModelConfig) -> Result<Decoded> {
        let load = || load_pair(&self.pairs[i], cfg, model).map(Arc::new);
        let Some(slots) = &self.cache else {
            return load();
        };
        if let Some(d) = slots[i].get() {
            return Ok(d.clone());
        }
        let d = load()?;
        Ok(slots[i].get_or_init(|| d).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{data, model, write_pair};

    #[test]
    fn cached_frames_are_decoded_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "a", 32, 32);
        let (cfg, m) = (data(dir.path()), model(2, None));
        let cached = Frames::new(vec![p.clone()], true);
        let first = cached.get(0, &cfg, &m).unwrap();
        // With the files gone, only the cache can answer.
        std::fs::remove_file(&p.image).unwrap();
        let again = cached.get(0, &cfg, &m).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let err = Frames::new(vec![p], false).get(0, &cfg, &m).unwrap_err();
        assert!(err.to_string().contains("a.png"), "{err}");
    }
}
