//! The records of a sharded run, in `OUT/segnet-run/`, which `merge` reads:
//!
//! - `manifest.json`: the tool, the shard count, the settings and the whole work list (each
//!   item's name, input, done marker and table). The first task to start writes it; every other
//!   task checks that it runs the same work, so shards of two different runs never mix.
//! - `shard-IIII-of-NNNN.json` (I 0-based): one per task, written when it starts (`running`)
//!   and again when it ends (`finished`, with each item done, skipped as done earlier, or failed
//!   with its error). Only that task writes it.
//!
//! An item's own done marker is its record file (infer: `NAME.json`; segnet-video:
//! `NAME/summary.json`), written last and atomically; it, not the shard summary, says whether
//! the item is done, so a task killed between the two loses nothing. A run without a shard
//! (no `--shard`, no engine variables) writes no records.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::{write_json_atomic, write_new_atomic};
use crate::items::{Item, RUN_DIR};
use crate::shard::Assignment;

/// `manifest.json`: what the run is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `infer` or `segnet-video`.
    pub tool: String,
    pub shards: usize,
    /// What the results depend on (model, samples, seed, ...), the same for every item.
    pub settings: Value,
    pub items: Vec<Entry>,
}

/// One item of the work list; item k belongs to shard k mod `shards`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub item: String,
    /// The input, as the task that wrote the manifest named it.
    pub input: String,
    /// The item's done marker (a JSON file), relative to the output folder.
    pub record: String,
    /// A CSV of the item's rows (a video's frames), relative to the output folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl Entry {
    pub fn new(item: &Item, record: String, table: Option<String>) -> Entry {
        Entry {
            item: item.name.clone(),
            input: item.path.display().to_string(),
            record,
            table,
        }
    }
}

/// `shard-IIII-of-NNNN.json`: what one task did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardSummary {
    pub tool: String,
    pub shard: usize,
    pub shards: usize,
    /// `--shard`, or the engine variables that gave the shard.
    pub from: String,
    pub host: String,
    pub pid: u32,
    pub status: TaskStatus,
    pub seconds: f64,
    pub items: Vec<Outcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    /// Started and not (yet) ended: still running, or killed.
    Running,
    Finished,
}

/// What a task did with one item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub item: String,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time spent on it (timing lives here, not in the item's record, so that records compare
    /// byte for byte between runs).
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemStatus {
    Done,
    /// Done by an earlier run with the same settings.
    Skipped,
    Failed,
}

/// The folder of the run's records.
pub(crate) fn run_dir(out: &Path) -> PathBuf {
    out.join(RUN_DIR)
}

pub(crate) fn manifest_path(out: &Path) -> PathBuf {
    run_dir(out).join("manifest.json")
}

pub(crate) fn summary_path(out: &Path, shard: usize, shards: usize) -> PathBuf {
    run_dir(out).join(format!("shard-{shard:04}-of-{shards:04}.json"))
}

/// A task's log of its items; kept on disk only when the run is sharded.
pub struct Ledger {
    out: PathBuf,
    tool: String,
    assignment: Option<Assignment>,
    start: Instant,
    outcomes: Vec<Outcome>,
}

impl Ledger {
    /// Starts the task's records: writes or checks `manifest.json` and marks the shard running;
    /// says on stderr which shard this is, where that came from and how many items it holds.
    pub fn open(
        out: &Path,
        assignment: Option<Assignment>,
        tool: &str,
        settings: Value,
        entries: Vec<Entry>,
    ) -> Result<Ledger> {
        let ledger = Ledger {
            out: out.to_path_buf(),
            tool: tool.into(),
            assignment,
            start: Instant::now(),
            outcomes: vec![],
        };
        let Some(a) = &ledger.assignment else {
            return Ok(ledger);
        };
        let total = entries.len();
        let manifest = Manifest {
            tool: tool.into(),
            shards: a.shard.count,
            settings,
            items: entries,
        };
        claim(out, &manifest)?;
        ledger.write(TaskStatus::Running)?;
        let mine = (0..total).filter(|&k| a.shard.owns(k)).count();
        eprintln!(
            "shard {} (from {}): {mine} of {total} items",
            a.shard, a.from
        );
        Ok(ledger)
    }

    /// Whether item `k` of the work list is this task's (every item when unsharded).
    pub fn owns(&self, k: usize) -> bool {
        self.assignment.as_ref().is_none_or(|a| a.shard.owns(k))
    }

    pub fn record(&mut self, item: &str, result: &Result<()>, seconds: f64) {
        let (status, error) = match result {
            Ok(()) => (ItemStatus::Done, None),
            Err(e) => (
                ItemStatus::Failed,
                Some(format!("{e:#}").replace('\n', " ")),
            ),
        };
        self.outcomes.push(Outcome {
            item: item.into(),
            status,
            error,
            seconds,
        });
    }

    pub fn skipped(&mut self, item: &str) {
        self.outcomes.push(Outcome {
            item: item.into(),
            status: ItemStatus::Skipped,
            error: None,
            seconds: 0.0,
        });
    }

    /// Writes the shard's final summary.
    pub fn finish(self) -> Result<()> {
        if self.assignment.is_some() {
            self.write(TaskStatus::Finished)?;
        }
        Ok(())
    }

    fn write(&self, status: TaskStatus) -> Result<()> {
        let Some(a) = &self.assignment else {
            return Ok(());
        };
        let summary = ShardSummary {
            tool: self.tool.clone(),
            shard: a.shard.index,
            shards: a.shard.count,
            from: a.from.clone(),
            host: host(),
            pid: std::process::id(),
            status,
            seconds: self.start.elapsed().as_secs_f64(),
            items: self.outcomes.clone(),
        };
        let path = summary_path(&self.out, a.shard.index, a.shard.count);
        write_json_atomic(&path, &summary)
    }
}

/// Writes the manifest unless a task of this run did already; refuses another run's.
fn claim(out: &Path, manifest: &Manifest) -> Result<()> {
    let dir = run_dir(out);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = manifest_path(out);
    if write_new_atomic(&path, &serde_json::to_vec_pretty(manifest)?)? {
        return Ok(());
    }
    let earlier = read_manifest(&path)?;
    if let Some(why) = difference(&earlier, manifest) {
        bail!(
            "{} holds another run ({why}); finish that run, or choose another --out",
            path.display()
        );
    }
    Ok(())
}

pub(crate) fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
}

/// How `new` differs from `old`, or None. Inputs may be spelled differently on other machines
/// (another mount point): items are compared by name.
fn difference(old: &Manifest, new: &Manifest) -> Option<String> {
    if old.tool != new.tool {
        return Some(format!("made by {}, not {}", old.tool, new.tool));
    }
    if old.shards != new.shards {
        return Some(format!(
            "split into {} shards, not {}: pass --shard I/{}",
            old.shards, new.shards, old.shards
        ));
    }
    if old.settings != new.settings {
        return Some(format!(
            "other settings: {}",
            changed_keys(&old.settings, &new.settings).join(", ")
        ));
    }
    let names = |m: &Manifest| m.items.iter().map(|e| e.item.clone()).collect::<Vec<_>>();
    let (a, b) = (names(old), names(new));
    if a != b {
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        let at = match first {
            Some(k) => format!("item {k} is {} there, {} here", a[k], b[k]),
            None => format!("{} items there, {} here", a.len(), b.len()),
        };
        return Some(format!("another work list: {at}"));
    }
    None
}

/// `key: old -> new` for each top-level key whose value differs.
fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(none)".to_string(), Value::to_string);
            format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Shard;

    fn manifest(shards: usize, samples: u32, items: &[&str]) -> Manifest {
        Manifest {
            tool: "infer".into(),
            shards,
            settings: serde_json::json!({ "samples": samples, "seed": 1 }),
            items: items
                .iter()
                .map(|n| Entry {
                    item: n.to_string(),
                    input: format!("/data/{n}.png"),
                    record: format!("{n}.json"),
                    table: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_first_task_writes_the_manifest_and_the_others_must_match_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(3, 8, &["a", "b"]);
        claim(dir.path(), &m).unwrap();
        let mut moved = m.clone();
        moved.items[0].input = "/mnt/other/a.png".into();
        claim(dir.path(), &moved).unwrap();
        for (other, why) in [
            (manifest(2, 8, &["a", "b"]), "--shard I/3"),
            (manifest(3, 4, &["a", "b"]), "samples: 8 -> 4"),
            (manifest(3, 8, &["a", "c"]), "item 1 is b there, c here"),
            (manifest(3, 8, &["a"]), "2 items there, 1 here"),
        ] {
            let err = claim(dir.path(), &other).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert_eq!(read_manifest(&manifest_path(dir.path())).unwrap(), m);
    }

    #[test]
    fn a_sharded_task_marks_itself_running_then_finished_with_its_items() {
        let dir = tempfile::tempdir().unwrap();
        let a = Assignment {
            shard: Shard { index: 1, count: 3 },
            from: "--shard".into(),
        };
        let m = manifest(3, 8, &["a", "b", "c", "d"]);
        let mut ledger =
            Ledger::open(dir.path(), Some(a), "infer", m.settings.clone(), m.items).unwrap();
        let path = summary_path(dir.path(), 1, 3);
        let read =
            || -> ShardSummary { serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap() };
        assert_eq!(read().status, TaskStatus::Running);
        assert!((0..4).filter(|&k| ledger.owns(k)).eq([1]));
        ledger.record("b", &Err(anyhow::anyhow!("cannot decode b.png")), 0.5);
        ledger.finish().unwrap();
        let s = read();
        assert_eq!((s.status, s.items.len()), (TaskStatus::Finished, 1));
        assert_eq!(s.items[0].error.as_deref(), Some("cannot decode b.png"));
    }

    #[test]
    fn an_unsharded_run_keeps_no_records() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), None, "infer", Value::Null, vec![]).unwrap();
        assert!(ledger.owns(7));
        ledger.finish().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
