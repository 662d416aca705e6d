//! What `train --resume` may change. A resumed run replays what the uninterrupted run would have
//! done only if it computes the same things, so the new config is compared, key by key, with the
//! run's `config.yaml`, and the data with a fingerprint kept in the checkpoint. Each resume is
//! recorded in the run's `resumes.jsonl` with what it changed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::data::Pair;

/// The keys a resume may change, because none of them changes what a step computes:
/// - `train.epochs` and `train.max_minutes` (also `--max-minutes`): the budget, to extend a
///   run or give it a new time limit. With a decaying schedule the remaining steps' learning
///   rate follows the new budget (the resume record says so);
/// - `train.checkpoint_every`: how often the state is saved;
/// - `train.prefetch`: how far ahead images are decoded;
/// - `train.final_weights`: which weights become the final model, once training ends;
/// - `data.root` (also `--data`): where the data lives, as when a run moves to another
///   machine; the data itself must be the run's, which the checkpoint's fingerprint checks.
///
/// Every other key, including keys added later, must keep its value.
pub(crate) const SAFE_TO_CHANGE: [&str; 8] = [
    "train.epochs",
    "train.max_minutes",
    "train.checkpoint_every",
    "train.prefetch",
    "train.final_weights",
    "data.root",
    "data.cache",
    "data.loader_threads",
];

/// One config key whose value a resume changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Change {
    pub key: String,
    pub from: Value,
    pub to: Value,
}

/// The run's resolved config as written when it started (`config.yaml`), read as it stands:
/// keys missing from an older file take their defaults, as they did then.
pub(crate) fn saved_config(run: &Path) -> Result<Config> {
    let path = run.join("config.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "--resume: cannot read {}, the run's config (start a new run with --out NEW_FOLDER)",
            path.display()
        )
    })?;
    serde_yaml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--resume: {} is not a readable config ({e})",
            path.display()
        )
    })
}

/// Every key whose value differs between the two configs, as dotted names (`train.lr`).
/// Lists are compared whole.
pub(crate) fn changes(saved: &Config, new: &Config) -> Vec<Change> {
    let to_value = |c: &Config| serde_json::to_value(c).expect("a config serialises");
    let mut out = vec![];
    diff("", &to_value(saved), &to_value(new), &mut out);
    out
}

fn diff(prefix: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    if let (Value::Object(x), Value::Object(y)) = (a, b) {
        let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            diff(
                &key,
                x.get(k).unwrap_or(&Value::Null),
                y.get(k).unwrap_or(&Value::Null),
                out,
            );
        }
    } else if a != b {
        out.push(Change {
            key: prefix.to_string(),
            from: a.clone(),
            to: b.clone(),
        });
    }
}

/// Refuses changes outside [`SAFE_TO_CHANGE`], listing each with its old and new value.
pub(crate) fn refuse_unsafe(run: &Path, changes: &[Change]) -> Result<()> {
    let unsafe_changes: Vec<String> = changes
        .iter()
        .filter(|c| !SAFE_TO_CHANGE.contains(&c.key.as_str()))
        .map(|c| format!("`{}` ({} -> {})", c.key, c.from, c.to))
        .collect();
    ensure!(
        unsafe_changes.is_empty(),
        "--resume: the config changes {} from {}/config.yaml, which breaks the exact replay of the run (only {} may change on resume): use the run's config.yaml, or start a new run with --out NEW_FOLDER",
        unsafe_changes.join(", "),
        run.display(),
        SAFE_TO_CHANGE.map(|k| format!("`{k}`")).join(", ")
    );
    Ok(())
}

/// What the run trains and validates on: how many pairs, and a hash of their paths (relative
/// to the data folder) and file sizes. A moved dataset keeps its fingerprint; a changed split,
/// an added, removed or rewritten file does not (a rewrite of the same size goes unseen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct DataPrint {
    pub train: usize,
    pub val: usize,
    pub hash: String,
}

impl DataPrint {
    pub(crate) fn of(root: &Path, train: &[Pair], val: &[Pair]) -> Result<DataPrint> {
        let mut hash = Fnv::default();
        for (split, pairs) in [("train", train), ("val", val)] {
            hash.add(split.as_bytes());
            for p in pairs {
                for file in [&p.image, &p.label] {
                    let size = std::fs::metadata(file)
                        .with_context(|| format!("cannot read {}", file.display()))?
                        .len();
                    let name: PathBuf = file.strip_prefix(root).unwrap_or(file).into();
                    hash.add(name.as_os_str().as_encoded_bytes());
                    hash.add(&size.to_le_bytes());
                }
            }
        }
        Ok(DataPrint {
            train: train.len(),
            val: val.len(),
            hash: format!("{:016x}", hash.0),
        })
    }

    /// Refuses data other than the run's.
    pub(crate) fn check(&self, run: &DataPrint, root: &Path) -> Result<()> {
        if self == run {
            return Ok(());
        }
        let what = if (self.train, self.val) == (run.train, run.val) {
            "the same number of pairs, but other files or file sizes".to_string()
        } else {
            format!(
                "{} train and {} val pairs where the run had {} and {}",
                self.train, self.val, run.train, run.val
            )
        };
        bail!(
            "--resume: the data in {} is not the run's ({what}): point `data.root` or --data at the run's data",
            root.display()
        )
    }
}

/// FNV-1a, 64 bits: stable across Rust versions, unlike `DefaultHasher`.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain([&0xff]) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One line of `resumes.jsonl`.
#[derive(Debug, Serialize)]
pub(crate) struct Record<'a> {
    /// Seconds since 1970 (UTC).
    pub unix_time: u64,
    /// Where the run resumed: completed epochs, steps into the next, global step.
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub global_step: usize,
    pub changes: &'a [Change],
}

/// Appends the record of one resume to the run's `resumes.jsonl`.
pub(crate) fn record(run: &Path, record: &Record) -> Result<()> {
    let path = run.join("resumes.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(record)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Now, in seconds since 1970.
pub(crate) fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_every_differing_key_with_both_values() {
        let a = Config::default();
        let mut b = a.clone();
        b.train.lr = 0.02;
        b.data.limit = 4;
        b.model.input_size = Some([48, 64]);
        let keys: Vec<String> = changes(&a, &b).into_iter().map(|c| c.key).collect();
        assert_eq!(keys, ["data.limit", "model.input_size", "train.lr"]);
        assert!(changes(&a, &a.clone()).is_empty());
    }

    #[test]
    fn only_the_budget_and_the_data_folder_may_change() {
        let a = Config::default();
        let mut b = a.clone();
        b.train.epochs = 200;
        b.train.max_minutes = 5.0;
        b.data.root = "elsewhere".into();
        let run = Path::new("runs/x");
        refuse_unsafe(run, &changes(&a, &b)).unwrap();
        b.train.batch_size = 8;
        let err = refuse_unsafe(run, &changes(&a, &b))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`train.batch_size` (4 -> 8)"), "{err}");
        assert!(!err.contains("`train.epochs` 100"), "{err}");
    }

    #[test]
    fn a_moved_dataset_keeps_its_fingerprint_and_an_edited_one_does_not() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let pairs = |root: &Path, n: usize| -> Vec<Pair> {
            (0..n)
                .map(|i| {
                    let (image, label) = (
                        root.join(format!("{i}.png")),
                        root.join(format!("{i}l.png")),
                    );
                    std::fs::write(&image, b"img").unwrap();
                    std::fs::write(&label, b"lab").unwrap();
                    Pair { image, label }
                })
                .collect()
        };
        let (a, b) = (pairs(one.path(), 3), pairs(two.path(), 3));
        let print = DataPrint::of(one.path(), &a, &a[..1]).unwrap();
        let moved = DataPrint::of(two.path(), &b, &b[..1]).unwrap();
        moved.check(&print, two.path()).unwrap();
        std::fs::write(&b[2].label, b"other").unwrap();
        let edited = DataPrint::of(two.path(), &b, &b[..1]).unwrap();
        let err = edited.check(&print, two.path()).unwrap_err().to_string();
        assert!(err.contains("other files or file sizes"), "{err}");
        let fewer = DataPrint::of(two.path(), &b[..2], &b[..1]).unwrap();
        let err = fewer.check(&print, two.path()).unwrap_err().to_string();
        assert!(
            err.contains("2 train and 1 val pairs where the run had 3 and 1"),
            "{err}"
        );
    }
}
