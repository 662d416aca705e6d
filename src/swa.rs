//! Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and
//! Better Generalization", 2018): the running mean of the weights at the ends of the epochs in
//! the schedule's tail (`train.swa_from` on), kept in the run folder as `swa.safetensors`.
//!
//! The mean is written at every averaged epoch's end, before the resumable checkpoint, and
//! records the last epoch it holds: a run killed in between redoes that epoch bit for bit and
//! does not add it twice, so a resumed run's mean is the uninterrupted run's. Batch-norm
//! statistics are averaged like the weights; they only fit the mean weights once re-estimated
//! (`train.bn_recalibrate`, or `segnet-bayes recalibrate`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use crate::config::Config;
use crate::model::checkpoint;
use crate::model::SegNet;

/// The mean's file in the run folder.
pub(crate) const FILE: &str = "swa.safetensors";
const KEY: &str = "segnet_bayes.swa";

/// What the mean holds, in its file's metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Held {
    /// Epochs averaged.
    pub epochs: usize,
    /// The last of them (1-based; 0 before any).
    pub last_epoch: usize,
}

/// The running mean of a run's weights.
pub(crate) struct WeightAverage {
    vs: nn::VarStore,
    held: Held,
    path: PathBuf,
}

impl WeightAverage {
    /// The mean kept in the run folder `out` when resuming (empty if no epoch was averaged
    /// yet); a new run starts empty (its `Run::begin` clears a stale file). Reads only.
    pub(crate) fn open(cfg: &Config, out: &Path, device: Device, resumed: bool) -> Result<Self> {
        let path = out.join(FILE);
        let mut vs = nn::VarStore::new(device);
        let _net = SegNet::new(&vs.root(), &cfg.model);
        let mut held = Held::default();
        if resumed && path.is_file() {
            let ckpt = checkpoint::read(&path)?;
            checkpoint::load_into(&mut vs, &ckpt, &path)?;
            let json = ckpt.meta.get(KEY).with_context(|| {
                format!("{} does not say which epochs it averages", path.display())
            })?;
            held = serde_json::from_str(json)
                .with_context(|| format!("{}: unreadable averaging record", path.display()))?;
        }
        Ok(WeightAverage { vs, held, path })
    }

    /// Adds the weights of `weights` at the end of `epoch` (1-based) and writes the mean; an
    /// epoch the mean already holds (redone after a kill) is not added again.
    pub(crate) fn add(&mut self, cfg: &Config, weights: &nn::VarStore, epoch: usize) -> Result<()> {
        if epoch <= self.held.last_epoch {
            return Ok(());
        }
        let n = self.held.epochs as f64;
        let current = weights.variables();
        tch::no_grad(|| {
            for (name, mut mean) in self.vs.variables() {
                let w = &current[&name];
                if n == 0.0 {
                    mean.copy_(w);
                } else {
                    let updated = &mean + (w - &mean) / (n + 1.0);
                    mean.copy_(&updated);
                }
            }
        });
        self.held = Held {
            epochs: self.held.epochs + 1,
            last_epoch: epoch,
        };
        let meta = BTreeMap::from([(KEY.to_string(), serde_json::to_string(&self.held)?)]);
        checkpoint::save(&self.path, &cfg.model, &self.vs, &[], &meta)
    }

    /// What the mean holds so far.
    pub(crate) fn held(&self) -> Held {
        self.held
    }
}
