//! Starting a training run from another model's weights (`train.init`, fine-tuning): the
//! lenient sibling of [`checkpoint::load_into`]. Every tensor whose name and shape match is
//! copied; the rest keep their fresh initialisation, which re-initialises the classifier when
//! the class count differs. A network of another architecture or width is refused.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use tch::nn;

use super::checkpoint::{self, STATE_PREFIX};
use crate::config::{InputNorm, ModelConfig};

/// What [`load_matching`] copied and what it left.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct InitReport {
    pub loaded: usize,
    pub total: usize,
    /// Tensors whose shape differs: name, the file's shape, the network's.
    pub reinitialised: Vec<(String, Vec<i64>, Vec<i64>)>,
    /// The network's tensors the file lacks.
    pub missing: Vec<String>,
    /// The file's weights the network has no place for.
    pub unused: Vec<String>,
    /// Other differences worth knowing (input normalisation, dropout).
    pub notes: Vec<String>,
}

impl InitReport {
    /// Lines for the start of a run.
    pub(crate) fn lines(&self, path: &Path) -> Vec<String> {
        let mut out = vec![format!(
            "init from {}: loaded {} of {} tensors",
            path.display(),
            self.loaded,
            self.total
        )];
        for (name, there, here) in &self.reinitialised {
            out.push(format!(
                "  re-initialised {name}: {there:?} in the file, {here:?} in this network"
            ));
        }
        let list = |v: &[String]| v.join(", ");
        if !self.missing.is_empty() {
            out.push(format!(
                "  not in the file (fresh): {}",
                list(&self.missing)
            ));
        }
        if !self.unused.is_empty() {
            out.push(format!("  not used from the file: {}", list(&self.unused)));
        }
        out.extend(self.notes.iter().map(|n| format!("  note: {n}")));
        out
    }
}

/// Copies into `vs` (built for `target`) every tensor of the model at `path` whose name and
/// shape match.
pub(crate) fn load_matching(
    vs: &mut nn::VarStore,
    target: &ModelConfig,
    path: &Path,
) -> Result<InitReport> {
    let ckpt = checkpoint::read(path).context("`train.init`")?;
    let from = &ckpt.config;
    ensure!(
        from.arch == target.arch && from.width == target.width,
        "`train.init`: {} is a {:?} network of width {}, the config's is {:?} of width {} (`model.arch`, `model.width`); only the classes may differ",
        path.display(),
        from.arch,
        from.width,
        target.arch,
        target.width
    );
    let vars = vs.variables();
    let mut report = InitReport {
        total: vars.len(),
        ..Default::default()
    };
    tch::no_grad(|| {
        for (name, var) in &vars {
            let mut var = var.shallow_clone();
            match ckpt.tensors.get(name) {
                Some(t) if t.size() == var.size() => {
                    var.copy_(t);
                    report.loaded += 1;
                }
                Some(t) => report
                    .reinitialised
                    .push((name.clone(), t.size(), var.size())),
                None => report.missing.push(name.clone()),
            }
        }
    });
    report.unused = ckpt
        .tensors
        .keys()
        .filter(|k| !k.starts_with(STATE_PREFIX) && !vars.contains_key(*k))
        .cloned()
        .collect();
    report.reinitialised.sort();
    report.missing.sort();
    report.unused.sort();
    if from.input_norm != target.input_norm {
        report.notes.push(format!(
            "the file was trained with `model.input_norm` {:?}, this config uses {:?}",
            from.input_norm, target.input_norm
        ));
    } else if target.input_norm == InputNorm::Fixed
        && (from.mean, from.std) != (target.mean, target.std)
    {
        report.notes.push(format!(
            "the file was trained with `model.mean` {:?} and `model.std` {:?}, this config normalises with {:?} and {:?}",
            from.mean, from.std, target.mean, target.std
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::config::Arch;
    use crate::model::{Mode, SegNet};

    fn cfg(arch: Arch, width: f64, classes: i64) -> ModelConfig {
        ModelConfig {
            arch,
            width,
            classes,
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
            palette: vec![[0, 0, 0]; classes as usize + 1],
            ..Default::default()
        }
    }

    /// A random network of `c`, saved to `dir/name`.
    fn saved(dir: &Path, name: &str, c: &ModelConfig) -> (nn::VarStore, std::path::PathBuf) {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = SegNet::new(&vs.root(), c);
        let path = dir.join(name);
        checkpoint::save(&path, c, &vs, &[], &BTreeMap::new()).unwrap();
        (vs, path)
    }

    #[test]
    fn another_class_count_loads_everything_but_the_classifier() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (from_vs, path) = saved(dir.path(), "m.safetensors", &cfg(Arch::Basic, 0.125, 11));
        let five = cfg(Arch::Basic, 0.125, 5);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = SegNet::new(&vs.root(), &five);
        let fresh = vs.variables()["classifier.weight"].copy();
        let report = load_matching(&mut vs, &five, &path).unwrap();
        let names: Vec<&str> = report.reinitialised.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["classifier.bias", "classifier.weight"]);
        assert_eq!(report.loaded, report.total - 2);
        assert!(
            report.missing.is_empty() && report.unused.is_empty(),
            "{report:?}"
        );
        let (mine, theirs) = (vs.variables(), from_vs.variables());
        for name in ["enc1.1.conv.weight", "dec2.1.conv.weight"] {
            assert!(mine[name].equal(&theirs[name]), "{name} not loaded");
        }
        assert!(
            mine["classifier.weight"].equal(&fresh),
            "classifier kept its fresh weights"
        );
        let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward(&x, Mode::DETERMINISTIC).size(), [1, 5, 32, 32]);
        let lines = report.lines(&path).join("\n");
        assert!(
            lines.contains("loaded") && lines.contains("re-initialised classifier.weight"),
            "{lines}"
        );
    }

    #[test]
    fn another_architecture_or_width_is_refused_in_one_line() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = saved(dir.path(), "m.safetensors", &cfg(Arch::Basic, 0.125, 11));
        for target in [cfg(Arch::Segnet, 0.125, 11), cfg(Arch::Basic, 0.25, 11)] {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let _ = SegNet::new(&vs.root(), &target);
            let before = vs.variables()["classifier.weight"].copy();
            let err = load_matching(&mut vs, &target, &path)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`train.init`") && err.contains("model.arch") && !err.contains('\n'),
                "{err}"
            );
            assert!(
                vs.variables()["classifier.weight"].equal(&before),
                "nothing loaded"
            );
        }
        let mut vs = nn::VarStore::new(Device::Cpu);
        let err = load_matching(
            &mut vs,
            &cfg(Arch::Basic, 0.125, 11),
            &dir.path().join("none"),
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("`train.init`"));
    }
}
