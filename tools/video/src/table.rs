//! The per-frame CSV: one row per processed frame, appended batch by batch to
//! `frames.partial.csv` and synced, so an interrupted run leaves complete rows (a torn last line
//! from a kill is dropped on resume). At the end the rows are sorted, de-duplicated and written
//! atomically to `frames.csv`. The last columns say how each frame was sampled: network passes,
//! the temporal warp's mean error, the mode (`per-frame` or `temporal`) and why the temporal
//! state restarted at the frame, if it did (`first`, `gap`, `cut`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use segnet_bayes::atomic::write_atomic;
use segnet_bayes::mc::Measure;

use crate::frame::Stats;

/// How a frame was sampled (the row's last columns).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sampling {
    /// Network passes run for this frame.
    pub(crate) samples: usize,
    /// Mean photometric error of the temporal warp from the previous frame, where one was tried.
    pub(crate) warp_error: Option<f64>,
    /// `per-frame` or `temporal`.
    pub(crate) mode: &'static str,
    /// Why the temporal state restarted here (`first`, `gap`, `cut`), if it did.
    pub(crate) reset: Option<&'static str>,
}

/// The columns after the numbers of [`Stats`].
const SAMPLING_COLUMNS: [&str; 4] = ["samples", "warp_error", "mode", "reset"];

/// The CSV's columns for a model's class names.
#[derive(Clone, Debug)]
pub(crate) struct Columns {
    header: String,
    count: usize,
}

impl Columns {
    pub(crate) fn new(class_names: &[String]) -> Columns {
        let mut cols = vec!["frame".to_string(), "time_s".to_string()];
        cols.extend(Measure::ALL.iter().map(|m| format!("mean_{}", m.name())));
        cols.extend(class_names.iter().map(|n| {
            let safe: String = n
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { '_' })
                .collect();
            format!("share_{safe}")
        }));
        cols.push("share_above_threshold".into());
        cols.extend(SAMPLING_COLUMNS.map(String::from));
        Columns {
            count: cols.len(),
            header: cols.join(","),
        }
    }

    /// A row, newline included.
    pub(crate) fn row(&self, index: usize, time: f64, s: &Stats, how: &Sampling) -> String {
        let mut fields = vec![index.to_string(), format!("{time:.4}")];
        fields.extend(s.means.iter().map(|m| format!("{m:.8}")));
        fields.extend(s.shares.iter().map(|v| format!("{v:.6}")));
        fields.push(format!("{:.6}", s.above));
        fields.push(how.samples.to_string());
        fields.push(how.warp_error.map_or(String::new(), |e| format!("{e:.5}")));
        fields.push(how.mode.to_string());
        fields.push(how.reset.unwrap_or_default().to_string());
        debug_assert_eq!(fields.len(), self.count);
        fields.join(",") + "\n"
    }

    /// The complete rows of a CSV written with these columns, by frame index. A missing file,
    /// another header, or a torn or malformed line yields no row for that line.
    pub(crate) fn load(&self, path: &Path) -> BTreeMap<usize, String> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return BTreeMap::new();
        };
        let mut lines = text.split_inclusive('\n');
        if lines.next().map(str::trim_end) != Some(self.header.as_str()) {
            return BTreeMap::new();
        }
        lines
            .filter_map(|line| Some((self.parse(line)?.index, line.to_string())))
            .collect()
    }

    /// A complete row: newline-terminated, every field a number up to the sampling columns,
    /// then a sample count and a mode.
    fn parse(&self, line: &str) -> Option<Row> {
        let body = line.strip_suffix('\n')?;
        let fields: Vec<&str> = body.split(',').collect();
        if fields.len() != self.count {
            return None;
        }
        let (numbers, sampling) = fields.split_at(self.count - SAMPLING_COLUMNS.len());
        let nums: Vec<f64> = numbers[1..]
            .iter()
            .map(|f| f.parse::<f64>().ok())
            .collect::<Option<_>>()?;
        sampling[0].parse::<usize>().ok()?;
        if !(sampling[1].is_empty() || sampling[1].parse::<f64>().is_ok()) || sampling[2].is_empty()
        {
            return None;
        }
        Some(Row {
            index: fields[0].parse().ok()?,
            time: nums[0],
            means: [nums[1], nums[2], nums[3]],
        })
    }
}

/// The parts of a row the plot needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub(crate) index: usize,
    pub(crate) time: f64,
    pub(crate) means: [f64; 3],
}

/// Appends rows to the partial CSV.
pub(crate) struct Writer {
    file: File,
    path: PathBuf,
}

impl Writer {
    /// Starts the partial CSV with the header and the rows kept from an earlier run (written
    /// atomically), then opens it for appending.
    pub(crate) fn start(
        path: &Path,
        cols: &Columns,
        kept: &BTreeMap<usize, String>,
    ) -> Result<Writer> {
        let mut text = format!("{}\n", cols.header);
        for row in kept.values() {
            text.push_str(row);
        }
        write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot append to {}", path.display()))?;
        Ok(Writer {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends rows and syncs them to disk: a row on disk means its frame is done.
    pub(crate) fn append(&mut self, rows: &str) -> Result<()> {
        self.file
            .write_all(rows.as_bytes())
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// Writes the final CSV from the partial one: rows sorted by frame, one per frame. Returns the
/// rows for the plot.
pub(crate) fn finalise(partial: &Path, out: &Path, cols: &Columns) -> Result<Vec<Row>> {
    let rows = cols.load(partial);
    let mut text = format!("{}\n", cols.header);
    for row in rows.values() {
        text.push_str(row);
    }
    write_atomic(out, text.as_bytes())?;
    std::fs::remove_file(partial)
        .with_context(|| format!("cannot remove {}", partial.display()))?;
    Ok(rows.values().filter_map(|r| cols.parse(r)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Columns {
        Columns::new(&["Sky".into(), "Sign Symbol,x".into()])
    }

    fn how() -> Sampling {
        Sampling {
            samples: 1,
            warp_error: Some(0.0125),
            mode: "temporal",
            reset: None,
        }
    }

    fn stats(v: f64) -> Stats {
        Stats {
            means: [v, 2.0 * v, 0.5 * v],
            shares: vec![0.25, 0.75],
            above: 0.125,
        }
    }

    #[test]
    fn header_names_every_column_without_stray_commas() {
        let c = cols();
        assert_eq!(
            c.header,
            "frame,time_s,mean_variance,mean_entropy,mean_mutual-info,share_Sky,\
             share_Sign_Symbol_x,share_above_threshold,samples,warp_error,mode,reset"
        );
        let row = c.row(7, 0.7, &stats(0.01), &how());
        assert!(row.ends_with(",0.125000,1,0.01250,temporal,\n"), "{row}");
        let parsed = c.parse(&row).unwrap();
        assert_eq!(parsed.index, 7);
        assert!((parsed.means[1] - 0.02).abs() < 1e-9);
        let reset = Sampling {
            samples: 12,
            warp_error: None,
            mode: "temporal",
            reset: Some("first"),
        };
        let row = c.row(8, 0.8, &stats(0.01), &reset);
        assert!(row.ends_with(",12,,temporal,first\n"), "{row}");
        assert_eq!(c.parse(&row).unwrap().index, 8);
        assert!(c.parse(&row.replace(",12,", ",x,")).is_none());
    }

    #[test]
    fn resume_keeps_complete_rows_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.partial.csv");
        let c = cols();
        let mut kept = BTreeMap::new();
        kept.insert(0, c.row(0, 0.0, &stats(0.1), &how()));
        let mut w = Writer::start(&path, &c, &kept).unwrap();
        w.append(&(c.row(1, 0.1, &stats(0.2), &how()) + &c.row(2, 0.2, &stats(0.3), &how())))
            .unwrap();
        // A kill in the middle of a write leaves half a line.
        let torn = c.row(3, 0.3, &stats(0.4), &how());
        w.append(&torn[..torn.len() / 2]).unwrap();
        let rows = c.load(&path);
        assert_eq!(rows.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        // Another run's duplicate of frame 1 collapses into one row.
        w.append(&format!("\n{}", c.row(1, 0.1, &stats(0.2), &how())))
            .unwrap();
        let out = dir.path().join("frames.csv");
        let final_rows = finalise(&path, &out, &c).unwrap();
        assert_eq!(final_rows.len(), 3);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(!path.exists());
    }

    #[test]
    fn csv_with_another_header_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "frame,other\n0,1\n").unwrap();
        assert!(cols().load(&path).is_empty());
        assert!(cols().load(&dir.path().join("missing.csv")).is_empty());
    }
}
