//! `train --set KEY=VALUE`: one config key changed from the command line, so that a series of
//! runs (an ablation, a sweep) shares one config file and each run's folder still records the
//! config it really ran (its `config.yaml`).

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;

use crate::config::Config;

/// `cfg` with each `key=value` applied in order (`data.augment.hue=0.05`, `model.dropout=0.3`,
/// `data.val_sequences=[0001TP]`); values are YAML. Unknown keys and bad values are errors
/// naming the `--set` argument.
pub(crate) fn apply(cfg: Config, sets: &[String]) -> Result<Config> {
    if sets.is_empty() {
        return Ok(cfg);
    }
    let mut tree = serde_yaml::to_value(&cfg).expect("config serialises");
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .with_context(|| format!("--set {set}: expected KEY=VALUE, e.g. model.dropout=0.3"))?;
        let value: Value = serde_yaml::from_str(value)
            .map_err(|e| anyhow!("--set {set}: the value is not YAML ({e})"))?;
        *slot(&mut tree, key).with_context(|| format!("--set {set}"))? = value;
    }
    let cfg: Config =
        serde_yaml::from_value(tree).map_err(|e| anyhow!("--set {}: {e}", sets.join(" ")))?;
    cfg.validate().context("--set")?;
    Ok(cfg)
}

/// The value at a dotted key of the config tree.
fn slot<'a>(tree: &'a mut Value, key: &str) -> Result<&'a mut Value> {
    let mut at = tree;
    for part in key.split('.') {
        let Some(next) = at.as_mapping_mut().and_then(|m| m.get_mut(part)) else {
            bail!("`{key}` is not a config key (see configs/camvid.yaml)");
        };
        at = next;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Precision;

    fn sets(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn set_changes_nested_keys_of_any_type() {
        let cfg = apply(
            Config::default(),
            &sets(&[
                "data.augment.hue=0.05",
                "model.dropout=0.3",
                "data.val_sequences=[0001TP, 0006R0]",
                "train.precision=bf16",
                "model.input_size=[120, 160]",
            ]),
        )
        .unwrap();
        assert_eq!(cfg.data.augment.hue, 0.05);
        assert_eq!(cfg.model.dropout, 0.3);
        assert_eq!(cfg.data.val_sequences, ["0001TP", "0006R0"]);
        assert_eq!(cfg.train.precision, Precision::Bf16);
        assert_eq!(cfg.model.input_size, Some([120, 160]));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_argument() {
        for (bad, what) in [
            (
                "data.augment.hu=0.05",
                "`data.augment.hu` is not a config key",
            ),
            ("model.dropout", "expected KEY=VALUE"),
            ("model.dropout=1.5", "`model.dropout`"),
            ("train.precision=fp8", "fp8"),
        ] {
            let err = format!("{:#}", apply(Config::default(), &sets(&[bad])).unwrap_err());
            assert!(err.contains(what) && err.contains("--set"), "{bad}: {err}");
        }
    }
}
