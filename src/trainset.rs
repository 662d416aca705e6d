//! What a training run trains and validates on: the frames `data` selects (held-out sequences
//! or the validation split), kept decoded in memory when `data.cache` asks, the loss's class
//! weights, and validation scored per sequence as well as pooled.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use tch::Device;

use crate::config::Config;
use crate::data::{self, Frames, Pair};
use crate::eval::{self, Validation};
use crate::metrics::Confusion;
use crate::model::SegNet;
use crate::resume::DataPrint;

/// The frames of a run and the loss's class weights.
pub(crate) struct TrainingData {
    pub train: Arc<Frames>,
    /// Validation frames, one group per sequence, in name order.
    pub val: Vec<(String, Arc<Frames>)>,
    pub weights: Vec<f32>,
    /// What trains and what validates, in one line.
    pub description: String,
    /// The fingerprint a resume checks its data against.
    pub print: DataPrint,
}

impl TrainingData {
    pub(crate) fn load(cfg: &Config) -> Result<TrainingData> {
        let d = &cfg.data;
        let selection = data::select(d)?;
        let weights = data::class_weights(d, &cfg.model, &selection.train)?;
        let re = data::sequence_regex(&d.sequence_pattern)?;
        let mut groups: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
        for p in &selection.val {
            let s = data::sequence_of(&re, &p.image).unwrap_or_else(|| data::UNMATCHED.into());
            groups.entry(s).or_default().push(p.clone());
        }
        let val = groups
            .into_iter()
            .map(|(s, pairs)| (s, Arc::new(Frames::new(pairs, d.cache))))
            .collect();
        Ok(TrainingData {
            train: Arc::new(Frames::new(selection.train.clone(), d.cache)),
            val,
            weights,
            description: selection.describe(),
            print: DataPrint::of(&d.root, &selection.train, &selection.val)?,
        })
    }

    pub(crate) fn val_len(&self) -> usize {
        self.val.iter().map(|(_, f)| f.len()).sum()
    }
}

/// The training frames of `cfg` (what batch-norm re-estimation runs over), uncached. Without
/// held-out sequences that is the training split alone, so no validation split is needed.
pub(crate) fn training_frames(cfg: &Config) -> Result<Arc<Frames>> {
    let d = &cfg.data;
    let pairs = if d.val_sequences.is_empty() {
        data::discover(&d.root, &d.train_split, d.limit)?
    } else {
        data::select(d)?.train
    };
    Ok(Arc::new(Frames::new(pairs, false)))
}

/// A validation pass: pooled over all validation frames, and weight-averaging mIoU per sequence.
pub(crate) struct SequenceValidation {
    pub pooled: Validation,
    pub per_sequence: BTreeMap<String, f64>,
}

/// Scores `net` on every validation sequence (see [`eval::validate`]) and pools the counts.
pub(crate) fn validate(
    net: &SegNet,
    data: &TrainingData,
    cfg: &Config,
    device: Device,
) -> Result<SequenceValidation> {
    let k = cfg.model.classes as usize;
    let mut pooled = Validation {
        wa: Confusion::new(k),
        mc: (cfg.train.val_samples > 0).then(|| Confusion::new(k)),
    };
    let mut per_sequence = BTreeMap::new();
    for (name, frames) in &data.val {
        let v = eval::validate(
            net,
            frames,
            &cfg.data,
            &cfg.model,
            device,
            cfg.train.val_samples,
            cfg.train.seed,
        )?;
        pooled.wa.merge(&v.wa);
        if let (Some(all), Some(mc)) = (pooled.mc.as_mut(), &v.mc) {
            all.merge(mc);
        }
        per_sequence.insert(name.clone(), v.wa.mean_iou());
    }
    Ok(SequenceValidation {
        pooled,
        per_sequence,
    })
}
