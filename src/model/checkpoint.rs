//! Weights on disk: `.safetensors` with the model config in the metadata header, so a file always
//! says which network it belongs to. Loading checks architecture, shapes and names exactly:
//! weights of another network are a one-line error, never a panic or a partial load.
//!
//! Training state (optimiser buffers) travels in the same file under keys starting with
//! `state.`; inference ignores those.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{nn, Device, Kind, Tensor};

use super::segnet::SegNet;
use crate::atomic::write_atomic;
use crate::config::ModelConfig;

/// Metadata key holding the model config as JSON.
const CONFIG_KEY: &str = "segnet_bayes.model";
/// Prefix of tensors that are not model weights.
pub(crate) const STATE_PREFIX: &str = "state.";

/// A checkpoint read from disk.
pub struct Checkpoint {
    pub config: ModelConfig,
    /// Other metadata (training progress, ...).
    pub(crate) meta: BTreeMap<String, String>,
    /// Every tensor in the file, on the CPU.
    pub tensors: HashMap<String, Tensor>,
}

fn to_bytes(t: &Tensor) -> Vec<u8> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .flatten(0, -1);
    let v: Vec<f32> = Vec::try_from(&flat).expect("float tensor");
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes weights (and optional training state) atomically, so an interrupted save never leaves
/// a half-written checkpoint.
pub fn save(
    path: &Path,
    config: &ModelConfig,
    vs: &nn::VarStore,
    state: &[(String, Tensor)],
    meta: &BTreeMap<String, String>,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.extend(
        state
            .iter()
            .map(|(k, t)| (format!("{STATE_PREFIX}{k}"), t.shallow_clone())),
    );
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .iter()
        .map(|(k, t)| {
            let shape = t.size().iter().map(|d| *d as usize).collect();
            (k.clone(), shape, to_bytes(t))
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).expect("consistent view");
            (k.clone(), view)
        })
        .collect::<Vec<_>>();
    let mut info: HashMap<String, String> = meta.clone().into_iter().collect();
    info.insert(CONFIG_KEY.into(), serde_json::to_string(config)?);
    let file = safetensors::serialize(views, &Some(info))
        .with_context(|| format!("cannot encode checkpoint {}", path.display()))?;
    write_atomic(path, &file)
}

/// Reads a checkpoint written by [`save`].
pub fn read(path: &Path) -> Result<Checkpoint> {
    let buf =
        std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| {
        anyhow::anyhow!(
            "model {} is not a readable .safetensors file ({e:?})",
            path.display()
        )
    })?;
    let (_, header) = SafeTensors::read_metadata(&buf)
        .map_err(|e| anyhow::anyhow!("model {}: bad header ({e:?})", path.display()))?;
    let mut meta: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let Some(json) = meta.remove(CONFIG_KEY) else {
        bail!(
            "model {} has no segnet-bayes model config in its metadata: it was not written by segnet-bayes",
            path.display()
        );
    };
    let config: ModelConfig = serde_json::from_str(&json)
        .with_context(|| format!("model {}: unreadable model config", path.display()))?;
    let mut tensors = HashMap::new();
    let mut views = st.tensors();
    // By name, so that "the first bad tensor" is the same one every time.
    views.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in views {
        if view.dtype() != Dtype::F32 {
            bail!(
                "model {}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let floats: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let bad = floats.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            bail!(
                "model {}: tensor {name} holds {bad} NaN or infinite values (a diverged training \
                 run?); these weights cannot predict: use an earlier checkpoint",
                path.display()
            );
        }
        // The header's sizes are checked against the data, but a dimension can still be
        // beyond libtorch's i64 when another is 0.
        let shape: Option<Vec<i64>> = view
            .shape()
            .iter()
            .map(|d| i64::try_from(*d).ok())
            .collect();
        let tensor = shape.and_then(|s| Tensor::from_slice(&floats).f_view(s.as_slice()).ok());
        let Some(tensor) = tensor else {
            bail!(
                "model {}: tensor {name} has an impossible shape {:?}",
                path.display(),
                view.shape()
            );
        };
        tensors.insert(name, tensor);
    }
    Ok(Checkpoint {
        config,
        meta,
        tensors,
    })
}

/// The fields in which two model configs differ, as `key: a vs b`.
pub(crate) fn config_differences(a: &ModelConfig, b: &ModelConfig) -> Vec<String> {
    let mut out = vec![];
    let mut diff = |k: &str, x: String, y: String| {
        if x != y {
            out.push(format!("model.{k}: {x} vs {y}"));
        }
    };
    diff("arch", format!("{:?}", a.arch), format!("{:?}", b.arch));
    diff("width", a.width.to_string(), b.width.to_string());
    diff("classes", a.classes.to_string(), b.classes.to_string());
    diff(
        "dropout_after",
        format!("{:?}", a.dropout_stages()),
        format!("{:?}", b.dropout_stages()),
    );
    out
}

/// Copies the checkpoint's weights into `vs`, requiring exactly the same names and shapes.
pub(crate) fn load_into(vs: &mut nn::VarStore, ckpt: &Checkpoint, path: &Path) -> Result<()> {
    let vars = vs.variables();
    let mut problems = vec![];
    for (name, var) in &vars {
        match ckpt.tensors.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.size() != var.size() => problems.push(format!(
                "{name} has shape {:?}, the network needs {:?}",
                t.size(),
                var.size()
            )),
            Some(_) => {}
        }
    }
    for name in ckpt.tensors.keys() {
        if !name.starts_with(STATE_PREFIX) && !vars.contains_key(name) {
            problems.push(format!("unexpected {name}"));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        let n = problems.len();
        problems.truncate(3);
        bail!(
            "model {} does not fit a {:?} network of width {} with {} classes: {}{}",
            path.display(),
            ckpt.config.arch,
            ckpt.config.width,
            ckpt.config.classes,
            problems.join("; "),
            if n > 3 {
                format!(" (and {} more)", n - 3)
            } else {
                String::new()
            }
        );
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            var.copy_(&ckpt.tensors[&name]);
        }
    });
    Ok(())
}

/// Reads a model file and builds its network on `device`.
pub fn load_model(path: &Path, device: Device) -> Result<(nn::VarStore, SegNet, Checkpoint)> {
    load_model_as(path, device, |_| Ok(()))
}

/// [`load_model`], with the stored config changed by `adjust` before the network is built:
/// for settings that leave the weights as they are (test-time dropout).
pub(crate) fn load_model_as(
    path: &Path,
    device: Device,
    adjust: impl FnOnce(&mut ModelConfig) -> Result<()>,
) -> Result<(nn::VarStore, SegNet, Checkpoint)> {
    let mut ckpt = read(path)?;
    ckpt.config
        .validate()
        .with_context(|| format!("model {}: stored config is invalid", path.display()))?;
    adjust(&mut ckpt.config)?;
    let mut vs = nn::VarStore::new(device);
    let net = SegNet::new(&vs.root(), &ckpt.config);
    load_into(&mut vs, &ckpt, path)?;
    Ok((vs, net, ckpt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;
    use crate::model::Mode;

    fn cfg(arch: Arch, width: f64) -> ModelConfig {
        ModelConfig {
            arch,
            width,
            ..Default::default()
        }
    }

    #[test]
    fn save_then_load_gives_the_same_outputs() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let c = cfg(Arch::Basic, 0.125);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = SegNet::new(&vs.root(), &c);
        save(&path, &c, &vs, &[], &BTreeMap::new()).unwrap();
        let (_vs2, net2, ck) = load_model(&path, Device::Cpu).unwrap();
        assert_eq!(ck.config, c);
        let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let a = net.forward(&x, Mode::DETERMINISTIC);
        let b = net2.forward(&x, Mode::DETERMINISTIC);
        assert!(a.allclose(&b, 1e-6, 1e-6, false));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn weights_of_another_width_are_rejected_by_name() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let small = cfg(Arch::Segnet, 0.125);
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = SegNet::new(&vs.root(), &small);
        save(&path, &small, &vs, &[], &BTreeMap::new()).unwrap();
        let ckpt = read(&path).unwrap();
        let mut other = nn::VarStore::new(Device::Cpu);
        let _ = SegNet::new(&other.root(), &cfg(Arch::Segnet, 0.25));
        let err = load_into(&mut other, &ckpt, &path).unwrap_err().to_string();
        assert!(
            err.contains("does not fit") && err.contains("shape"),
            "{err}"
        );
        let mut basic = nn::VarStore::new(Device::Cpu);
        let _ = SegNet::new(&basic.root(), &cfg(Arch::Basic, 0.125));
        let err = load_into(&mut basic, &ckpt, &path).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        let diffs = config_differences(&small, &cfg(Arch::Basic, 0.25));
        assert_eq!(diffs.len(), 3, "{diffs:?}");
    }

    #[test]
    fn a_foreign_file_is_a_clear_error() {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, b"not a model at all").unwrap();
        let err = read(&path).err().unwrap().to_string();
        assert!(err.contains("not a readable .safetensors"), "{err}");
    }
}
