//! `segnet-bayes merge OUT`: one JSON and one CSV for a whole sharded run, of `infer` or of
//! `segnet-video`, from the run's records (see `ledger`). It names every item that is missing
//! or failed, shard by shard, and fails when the run is incomplete.
//!
//! An item is done when its record (the done marker the manifest names) is there and does not
//! say `"status": "interrupted"`. The CSV has a row per item, the record's fields flattened
//! (`class_share.sky`; lists and the run's settings left out), or, where items have tables (a
//! video's `frames.csv`), every row of every table with the item's name in front.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::atomic::{write_atomic, write_json_atomic};
use crate::cli::MergeArgs;
use crate::ledger::{self, Entry, ItemStatus, Manifest, ShardSummary, TaskStatus};

/// An item that is not done.
#[derive(Clone, Debug, Serialize)]
pub struct Undone {
    pub item: String,
    pub input: String,
    pub shard: usize,
    /// The error its task recorded; none when the item is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `merge` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub shards: usize,
    pub settings: Value,
    pub items: usize,
    pub done: usize,
    pub complete: bool,
    pub failed: Vec<Undone>,
    pub missing: Vec<Undone>,
    pub results: Vec<Value>,
    #[serde(skip)]
    pub json: PathBuf,
    #[serde(skip)]
    pub csv: PathBuf,
}

pub(crate) fn run(args: &MergeArgs) -> Result<()> {
    let r = merge(&args.out)?;
    if !r.complete {
        bail!(
            "the run is incomplete: {} failed and {} missing of {} items (listed above); {} and {} \
             hold the {} done; rerun the shards named above (finished items are skipped), then \
             merge again",
            r.failed.len(),
            r.missing.len(),
            r.items,
            r.json.display(),
            r.csv.display(),
            r.done
        );
    }
    Ok(())
}

/// Merges the run in `out`: prints a line per shard, writes `merged.json` and `merged.csv`
/// beside the run's records, and returns what it found.
pub fn merge(out: &Path) -> Result<Report> {
    let path = ledger::manifest_path(out);
    ensure!(
        path.is_file(),
        "{} holds no sharded run (no {}): run infer or segnet-video there with --shard I/N, or as \
         an array job, first",
        out.display(),
        path.display()
    );
    let manifest = ledger::read_manifest(&path)?;
    ensure!(
        manifest.shards >= 1,
        "{} is damaged: 0 shards",
        path.display()
    );
    let summaries: Vec<Option<ShardSummary>> = (0..manifest.shards)
        .map(|s| read_summary(&ledger::summary_path(out, s, manifest.shards)))
        .collect();
    let mut report = Report {
        tool: manifest.tool.clone(),
        shards: manifest.shards,
        settings: manifest.settings.clone(),
        items: manifest.items.len(),
        done: 0,
        complete: false,
        failed: vec![],
        missing: vec![],
        results: vec![],
        json: ledger::run_dir(out).join("merged.json"),
        csv: ledger::run_dir(out).join("merged.csv"),
    };
    let mut done = vec![];
    for (k, entry) in manifest.items.iter().enumerate() {
        let shard = k % manifest.shards;
        if let Some(record) = done_record(out, entry) {
            report.results.push(serde_json::json!({
                "item": entry.item, "input": entry.input, "record": record
            }));
            done.push((entry, record));
            continue;
        }
        let undone = Undone {
            item: entry.item.clone(),
            input: entry.input.clone(),
            shard,
            error: summaries[shard]
                .as_ref()
                .and_then(|s| failure(s, &entry.item)),
        };
        match undone.error {
            Some(_) => report.failed.push(undone),
            None => report.missing.push(undone),
        }
    }
    report.done = done.len();
    report.complete = report.done == report.items;
    print_shards(&manifest, &summaries, &report);
    write_atomic(&report.csv, table(out, &manifest, &done)?.as_bytes())?;
    write_json_atomic(&report.json, &report)?;
    println!(
        "merged {} of {} items -> {}, {}",
        report.done,
        report.items,
        report.json.display(),
        report.csv.display()
    );
    Ok(report)
}

fn read_summary(path: &Path) -> Option<ShardSummary> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The item's record, when it says the item is done.
fn done_record(out: &Path, entry: &Entry) -> Option<Value> {
    let record: Value =
        serde_json::from_slice(&std::fs::read(out.join(&entry.record)).ok()?).ok()?;
    let status = record.get("status").and_then(Value::as_str);
    (record.is_object() && status != Some("interrupted")).then_some(record)
}

fn failure(summary: &ShardSummary, item: &str) -> Option<String> {
    summary
        .items
        .iter()
        .rfind(|o| o.item == item && o.status == ItemStatus::Failed)
        .map(|o| o.error.clone().unwrap_or_default())
}

/// A line per shard: how many of its items are done, and each one that is not, by name.
fn print_shards(manifest: &Manifest, summaries: &[Option<ShardSummary>], r: &Report) {
    let n = manifest.shards;
    for (s, summary) in summaries.iter().enumerate() {
        let total = (0..manifest.items.len()).filter(|k| k % n == s).count();
        let failed: Vec<String> = r
            .failed
            .iter()
            .filter(|u| u.shard == s)
            .map(|u| format!("{} ({})", u.item, u.error.as_deref().unwrap_or("")))
            .collect();
        let missing: Vec<&str> = r
            .missing
            .iter()
            .filter(|u| u.shard == s)
            .map(|u| u.item.as_str())
            .collect();
        let done = total - failed.len() - missing.len();
        let task = match summary {
            None => "no summary: the task never started".to_string(),
            Some(t) if t.status == TaskStatus::Running => {
                format!("task on {} pid {} still running, or killed", t.host, t.pid)
            }
            Some(t) => format!("task on {} finished in {:.1} s", t.host, t.seconds),
        };
        let mut line = format!("shard {s}/{n}: {done} of {total} items done; {task}");
        if !failed.is_empty() {
            line.push_str(&format!("; failed: {}", failed.join(", ")));
        }
        if !missing.is_empty() {
            line.push_str(&format!("; missing: {}", missing.join(", ")));
        }
        println!("{line}");
    }
}

/// The merged CSV: every table's rows with the item in front when items have tables, else a
/// row per item of its record's fields.
fn table(out: &Path, manifest: &Manifest, done: &[(&Entry, Value)]) -> Result<String> {
    if manifest.items.iter().any(|e| e.table.is_some()) {
        return joined_tables(out, done);
    }
    let rows: Vec<Vec<(String, String)>> = done
        .iter()
        .map(|(e, record)| {
            let mut fields = vec![
                ("item".to_string(), e.item.clone()),
                ("input".to_string(), e.input.clone()),
            ];
            // The settings are the run's (once, in merged.json); plain numbers before groups.
            if let Value::Object(m) = record {
                let fields_of = m
                    .iter()
                    .filter(|(k, _)| !["input", "settings"].contains(&k.as_str()));
                let (groups, plain): (Vec<_>, Vec<_>) = fields_of.partition(|(_, v)| v.is_object());
                for (k, v) in plain.into_iter().chain(groups) {
                    flatten(k, v, &mut fields);
                }
            }
            fields
        })
        .collect();
    let mut columns: Vec<String> = vec![];
    for (k, _) in rows.iter().flatten() {
        if !columns.contains(k) {
            columns.push(k.clone());
        }
    }
    let mut text = line(columns.iter().map(String::as_str));
    for row in &rows {
        let by_key: HashMap<&str, &str> =
            row.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        text.push_str(&line(
            columns
                .iter()
                .map(|c| by_key.get(c.as_str()).copied().unwrap_or("")),
        ));
    }
    Ok(text)
}

fn joined_tables(out: &Path, done: &[(&Entry, Value)]) -> Result<String> {
    let mut header: Option<(String, &str)> = None;
    let mut text = String::new();
    for (e, _) in done {
        let Some(t) = &e.table else { continue };
        let path = out.join(t);
        let body = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} of item {}", path.display(), e.item))?;
        let mut lines = body.lines();
        let head = lines.next().unwrap_or_default().to_string();
        match &header {
            None => {
                text.push_str(&format!("item,{head}\n"));
                header = Some((head, &e.item));
            }
            Some((h, first)) if *h != head => bail!(
                "{} has other columns than the table of item {first}; were they made with \
                 different models?",
                path.display()
            ),
            Some(_) => {}
        }
        for row in lines {
            text.push_str(&format!("{},{row}\n", field(&e.item)));
        }
    }
    Ok(text)
}

/// Scalars under dotted keys (`class_share.sky`); lists (the files written) are left out.
fn flatten(key: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{key}.{k}"), x, out);
            }
        }
        Value::Array(_) => {}
        Value::String(s) => out.push((key.into(), s.clone())),
        Value::Null => out.push((key.into(), String::new())),
        other => out.push((key.into(), other.to_string())),
    }
}

fn line<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    let mut l = fields.map(field).collect::<Vec<_>>().join(",");
    l.push('\n');
    l
}

/// A CSV field, quoted where it must be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_flatten_to_one_row_each_under_shared_columns() {
        let mut fields = vec![];
        let record = serde_json::json!({
            "mean_variance": 0.25,
            "class_share": { "sky": 0.5, "road": 0.5 },
            "files": ["a.png"],
            "seed": null,
            "note": "a, \"b\""
        });
        for (k, v) in record.as_object().unwrap() {
            flatten(k, v, &mut fields);
        }
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.contains(&"class_share.sky") && !keys.contains(&"files"),
            "{keys:?}"
        );
        let note = fields.iter().find(|(k, _)| k == "note").unwrap();
        assert_eq!(field(&note.1), "\"a, \"\"b\"\"\"");
    }
}
