//! Frames grouped by the sequence (drive, camera run) they were filmed in, and the choice of the
//! frames that train and validate.
//!
//! Neighbouring frames of one sequence are near-copies, so validating on frames of a sequence
//! the model trained on measures memory more than generalisation. With `data.val_sequences`
//! the frames of `data.train_split` and `data.val_split` are pooled and whole sequences are held
//! out for validation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use regex::Regex;

use super::{discover, Pair};
use crate::config::DataConfig;

/// CamVid's sequence: the file name's prefix before the first `_` (`0016E5` of
/// `0016E5_07959.png`).
pub(crate) const CAMVID_SEQUENCE: &str = "^([^_]+)_";

/// Compiles `data.sequence_pattern`, which must have exactly one capture group.
pub(crate) fn sequence_regex(pattern: &str) -> Result<Regex> {
    let re = Regex::new(pattern)
        .with_context(|| format!("`data.sequence_pattern` `{pattern}` is not a valid regex"))?;
    ensure!(
        re.captures_len() == 2,
        "`data.sequence_pattern` `{pattern}` must have exactly one capture group (the sequence name), it has {}",
        re.captures_len() - 1
    );
    Ok(re)
}

/// The sequence of a frame: the capture group of `re` over the image's file stem, `None` when
/// the stem does not match.
pub(crate) fn sequence_of(re: &Regex, image: &Path) -> Option<String> {
    let stem = image.file_stem()?.to_str()?;
    re.captures(stem)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
}

/// Frame counts per sequence, in name order; frames that do not match are counted under
/// [`UNMATCHED`].
pub(crate) fn count_by_sequence(re: &Regex, pairs: &[Pair]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in pairs {
        let s = sequence_of(re, &p.image).unwrap_or_else(|| UNMATCHED.to_string());
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

/// The group of frames whose names do not match `data.sequence_pattern`.
pub(crate) const UNMATCHED: &str = "(no sequence)";

/// The frames that train and those that validate.
#[derive(Debug)]
pub(crate) struct Selection {
    pub train: Vec<Pair>,
    pub val: Vec<Pair>,
    /// The held-out sequences (empty when validating on `data.val_split`).
    pub held_out: Vec<String>,
    /// Frames per sequence, of each side.
    pub train_sequences: BTreeMap<String, usize>,
    pub val_sequences: BTreeMap<String, usize>,
}

impl Selection {
    /// Sequences that both train and validate: validation there scores in-sequence accuracy.
    pub(crate) fn shared_sequences(&self) -> Vec<&str> {
        self.val_sequences
            .keys()
            .filter(|s| self.train_sequences.contains_key(*s))
            .map(String::as_str)
            .collect()
    }

    /// One line saying what validates, for the start of a run.
    pub(crate) fn describe(&self) -> String {
        let list = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(s, n)| format!("{s} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let shared = self.shared_sequences();
        if self.val_sequences.is_empty() {
            return format!(
                "training on {}; no validation (`data.val_split` is empty): the model is the last epoch's weights",
                list(&self.train_sequences)
            );
        }
        let kind = if !self.held_out.is_empty() {
            "held-out sequences (cross-sequence score)".to_string()
        } else if shared.is_empty() {
            "sequences unseen in training (cross-sequence score)".to_string()
        } else {
            format!(
                "sequences that also train: {} (in-sequence score; set `data.val_sequences` for a cross-sequence one)",
                shared.join(", ")
            )
        };
        format!(
            "training on {}; validating on {} [{kind}]",
            list(&self.train_sequences),
            list(&self.val_sequences)
        )
    }
}

/// The training and validation frames `cfg` asks for.
///
/// Without `data.val_sequences`: the splits `data.train_split` and `data.val_split`. With it:
/// both pooled, the frames of the named sequences validate and the rest train. Either way a
/// frame (by file stem) on both sides is an error, and `data.limit` then keeps the first
/// frames of each side.
pub(crate) fn select(cfg: &DataConfig) -> Result<Selection> {
    let re = sequence_regex(&cfg.sequence_pattern)?;
    let train = discover(&cfg.root, &cfg.train_split, 0)?;
    // `data.val_split: ""`: no validation split (train on everything, keep the last weights).
    let val = if cfg.val_split.is_empty() {
        vec![]
    } else {
        discover(&cfg.root, &cfg.val_split, 0)?
    };
    let (mut train, mut val) = if cfg.val_sequences.is_empty() {
        check_disjoint(&train, &val, cfg)?;
        (train, val)
    } else {
        check_disjoint(&train, &val, cfg)?;
        let mut pooled = train;
        pooled.extend(val);
        pooled.sort_by(|a, b| a.image.file_name().cmp(&b.image.file_name()));
        hold_out(&re, pooled, &cfg.val_sequences, cfg)?
    };
    if cfg.limit > 0 {
        train.truncate(cfg.limit);
        val.truncate(cfg.limit);
    }
    Ok(Selection {
        train_sequences: count_by_sequence(&re, &train),
        val_sequences: count_by_sequence(&re, &val),
        train,
        val,
        held_out: cfg.val_sequences.clone(),
    })
}

/// Fails when a frame (by file stem) is in both splits.
fn check_disjoint(train: &[Pair], val: &[Pair], cfg: &DataConfig) -> Result<()> {
    let stems: HashMap<_, _> = train
        .iter()
        .filter_map(|p| Some((p.image.file_stem()?, &p.image)))
        .collect();
    let shared: Vec<_> = val
        .iter()
        .filter_map(|p| stems.get(p.image.file_stem()?).map(|t| (t, &p.image)))
        .collect();
    if let Some((t, v)) = shared.first() {
        bail!(
            "`data.val_split` ({}) shares {} frames with `data.train_split` ({}), e.g. {} and {}: validation would score frames the model trained on",
            cfg.val_split,
            shared.len(),
            cfg.train_split,
            t.display(),
            v.display()
        );
    }
    Ok(())
}

/// Splits `pooled` into (train, val): the frames of the `names` sequences validate.
fn hold_out(
    re: &Regex,
    pooled: Vec<Pair>,
    names: &[String],
    cfg: &DataConfig,
) -> Result<(Vec<Pair>, Vec<Pair>)> {
    let mut tagged = Vec::with_capacity(pooled.len());
    for p in pooled {
        let Some(s) = sequence_of(re, &p.image) else {
            bail!(
                "frame {} has no sequence: its name does not match `data.sequence_pattern` `{}`",
                p.image.display(),
                cfg.sequence_pattern
            );
        };
        tagged.push((s, p));
    }
    let known: BTreeMap<String, usize> = tagged.iter().fold(BTreeMap::new(), |mut m, (s, _)| {
        *m.entry(s.clone()).or_insert(0) += 1;
        m
    });
    let listed = || known.keys().cloned().collect::<Vec<_>>().join(", ");
    for name in names {
        ensure!(
            known.contains_key(name),
            "`data.val_sequences` (or --hold-out) names `{name}`, which has no frames in `{}` + `{}` of {} (sequences there: {})",
            cfg.train_split,
            cfg.val_split,
            cfg.root.display(),
            listed()
        );
    }
    let (val, train): (Vec<_>, Vec<_>) = tagged.into_iter().partition(|(s, _)| names.contains(s));
    ensure!(
        !train.is_empty(),
        "`data.val_sequences` (or --hold-out) holds out every sequence ({}): no frames are left to train on",
        listed()
    );
    let pairs = |v: Vec<(String, Pair)>| v.into_iter().map(|(_, p)| p).collect();
    Ok((pairs(train), pairs(val)))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::data::fixtures::{data, write_pair};

    fn pair(name: &str) -> Pair {
        Pair {
            image: PathBuf::from(format!("/d/train/{name}.png")),
            label: PathBuf::from(format!("/d/trainannot/{name}.png")),
        }
    }

    fn names(pairs: &[Pair]) -> Vec<String> {
        pairs
            .iter()
            .map(|p| p.image.file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn camvid_frames_group_by_their_prefix() {
        let re = sequence_regex(CAMVID_SEQUENCE).unwrap();
        let of = |s: &str| sequence_of(&re, Path::new(s));
        assert_eq!(of("/x/0016E5_07959.png").as_deref(), Some("0016E5"));
        assert_eq!(of("Seq05VD_f00090.png").as_deref(), Some("Seq05VD"));
        assert_eq!(of("/x/frame.png"), None);
        let pairs: Vec<Pair> = ["0001TP_1", "0006R0_2", "0001TP_3", "odd"]
            .map(pair)
            .to_vec();
        let counts = count_by_sequence(&re, &pairs);
        let want = [("(no sequence)", 1), ("0001TP", 2), ("0006R0", 1)];
        assert_eq!(
            counts
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn a_pattern_without_one_capture_group_names_the_key() {
        for bad in ["^[^_]+_", "^(a)(b)", "(unclosed"] {
            let err = format!("{:#}", sequence_regex(bad).unwrap_err());
            assert!(err.contains("`data.sequence_pattern`"), "{bad}: {err}");
        }
        let city = sequence_regex(r"^([a-z]+)_\d+").unwrap();
        let got = sequence_of(&city, Path::new("aachen_000001_leftImg8bit.png"));
        assert_eq!(got.as_deref(), Some("aachen"));
    }

    #[test]
    fn holding_out_a_sequence_moves_all_its_frames_to_validation() {
        let re = sequence_regex(CAMVID_SEQUENCE).unwrap();
        let pooled: Vec<Pair> = ["A_1", "B_1", "A_2", "C_1", "B_2"].map(pair).to_vec();
        let cfg = data(Path::new("/d"));
        let (train, val) = hold_out(&re, pooled.clone(), &["B".into()], &cfg).unwrap();
        assert_eq!(names(&train), ["A_1", "A_2", "C_1"]);
        assert_eq!(names(&val), ["B_1", "B_2"]);
        let (train, val) = hold_out(&re, pooled, &["A".into(), "C".into()], &cfg).unwrap();
        assert_eq!(
            (names(&train), names(&val).len()),
            (vec!["B_1".into(), "B_2".into()], 3)
        );
    }

    #[test]
    fn unknown_or_every_sequence_held_out_is_an_error_naming_the_key() {
        let re = sequence_regex(CAMVID_SEQUENCE).unwrap();
        let pooled: Vec<Pair> = ["A_1", "B_1"].map(pair).to_vec();
        let cfg = data(Path::new("/d"));
        let err = hold_out(&re, pooled.clone(), &["Seq05VD".into()], &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`data.val_sequences`") && err.contains("Seq05VD") && err.contains("A, B"),
            "{err}"
        );
        let err = hold_out(&re, pooled.clone(), &["A".into(), "B".into()], &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no frames are left to train on"), "{err}");
        let mut odd = pooled;
        odd.push(pair("frame"));
        let err = hold_out(&re, odd, &["A".into()], &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("frame.png") && err.contains("`data.sequence_pattern`"),
            "{err}"
        );
    }

    /// `A_0`, `A_1` in train, `B_0` in val, and optionally a copy of `A_1` in val.
    fn two_sequences(dir: &Path, overlap: bool) -> DataConfig {
        write_pair(dir, "train", "A_0", 32, 32);
        write_pair(dir, "train", "A_1", 32, 32);
        write_pair(dir, "val", "B_0", 32, 32);
        if overlap {
            write_pair(dir, "val", "A_1", 32, 32);
        }
        data(dir)
    }

    #[test]
    fn select_pools_the_splits_for_held_out_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = two_sequences(dir.path(), false);
        let s = select(&cfg).unwrap();
        assert_eq!(
            (names(&s.train), names(&s.val)),
            (vec!["A_0".into(), "A_1".into()], vec!["B_0".into()])
        );
        assert!(s.shared_sequences().is_empty() && s.held_out.is_empty());
        cfg.val_sequences = vec!["A".into()];
        let s = select(&cfg).unwrap();
        assert_eq!(
            (names(&s.train), names(&s.val)),
            (vec!["B_0".into()], vec!["A_0".into(), "A_1".into()])
        );
        assert!(s.describe().contains("held-out"), "{}", s.describe());
        cfg.limit = 1;
        assert_eq!(select(&cfg).unwrap().val.len(), 1);
    }

    #[test]
    fn a_frame_in_both_splits_is_an_error_naming_the_split_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = two_sequences(dir.path(), true);
        for held_out in [vec![], vec!["B".to_string()]] {
            cfg.val_sequences = held_out;
            let err = select(&cfg).unwrap_err().to_string();
            assert!(
                err.contains("`data.val_split`")
                    && err.contains("A_1.png")
                    && err.contains("shares 1 frames"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_validation_sequence_that_also_trains_is_called_in_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = two_sequences(dir.path(), false);
        write_pair(dir.path(), "val", "A_7", 32, 32);
        let s = select(&cfg).unwrap();
        assert_eq!(s.shared_sequences(), ["A"]);
        assert!(s.describe().contains("in-sequence"), "{}", s.describe());
    }
}
