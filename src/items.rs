//! A run's work list: the inputs named on the command line (folders expanded, sorted) or listed
//! in a manifest file (in its order), each with a name that is unique in the run.
//!
//! An item's name is its path relative to the inputs' common folder, without the extension
//! (`d1/frame.png` -> `d1/frame`); where two files differ only in extension (`a.png`, `a.jpg`)
//! both keep it (`a.png`, `a.jpg`). Distinct files have distinct relative paths, so names are
//! unique by construction; outputs are named from them, never from the shard, so every task of
//! a sharded run, given the same inputs, names every item the same way.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::image_io;

/// Where the records of a sharded run go, inside the output folder (see `ledger`).
pub const RUN_DIR: &str = "segnet-run";

/// One unit of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The input as given (or as resolved from the manifest file).
    pub path: PathBuf,
    /// Unique in the run, `/`-separated: outputs are named from it.
    pub name: String,
}

/// What a folder on the command line stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expand {
    /// Its images, each an item (`infer`).
    Images,
    /// Itself, one item (a folder of video frames).
    Folder,
}

/// The run's items, from `inputs` or from the manifest file `manifest` (one path a line), with
/// everything inside `out` left out: a run's outputs are never the next run's inputs.
pub fn collect(
    inputs: &[PathBuf],
    manifest: Option<&Path>,
    out: &Path,
    expand: Expand,
) -> Result<Vec<Item>> {
    let listed = match manifest {
        Some(m) => read_manifest(m, expand)?,
        None => from_arguments(inputs, expand)?,
    };
    let kept = leave_out_outputs(listed, out)?;
    let names = names(&kept.iter().map(|(_, abs)| abs.clone()).collect::<Vec<_>>());
    Ok(kept
        .into_iter()
        .zip(names)
        .map(|((path, _), name)| Item { path, name })
        .collect())
}

/// Command-line inputs: folders expanded (for `Images`), duplicates dropped, sorted by path, so
/// the same files in any order give the same list.
fn from_arguments(inputs: &[PathBuf], expand: Expand) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = vec![];
    for p in inputs {
        if !p.exists() {
            bail!("input {} does not exist", p.display());
        }
        if p.is_dir() && expand == Expand::Images {
            let files = image_io::images_in(p)?;
            ensure!(
                !files.is_empty(),
                "folder {} holds no PNG or JPEG images",
                p.display()
            );
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    let mut out: Vec<(PathBuf, PathBuf)> = out
        .into_iter()
        .map(|p| {
            let abs = absolute(&p);
            (p, abs)
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by(|a, b| a.1 == b.1);
    Ok(out)
}

/// A manifest file: one path a line, relative paths from the file's folder, blank lines and
/// `#` comments skipped. Its order is kept; a repeated path is an error.
fn read_manifest(file: &Path, expand: Expand) -> Result<Vec<(PathBuf, PathBuf)>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --manifest {}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new(""));
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut out = vec![];
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{} line {n}", file.display());
        let path = base.join(line);
        ensure!(path.exists(), "{}: {} does not exist", at(), path.display());
        ensure!(
            !(path.is_dir() && expand == Expand::Images),
            "{}: {} is a folder; list its images one a line",
            at(),
            path.display()
        );
        let abs = absolute(&path);
        if let Some(first) = seen.insert(abs.clone(), n) {
            bail!("{}: {} repeats line {first}", at(), path.display());
        }
        out.push((path, abs));
    }
    ensure!(
        !out.is_empty(),
        "--manifest {} lists no inputs",
        file.display()
    );
    Ok(out)
}

/// Drops the inputs inside the output folder, saying how many; an error when none is left.
fn leave_out_outputs(
    listed: Vec<(PathBuf, PathBuf)>,
    out: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let out_abs = absolute(out);
    let out_real = std::fs::canonicalize(out).ok();
    let inside = |p: &Path, abs: &Path| {
        abs.starts_with(&out_abs)
            || out_real
                .as_ref()
                .is_some_and(|o| std::fs::canonicalize(p).is_ok_and(|real| real.starts_with(o)))
    };
    let total = listed.len();
    let kept: Vec<_> = listed
        .into_iter()
        .filter(|(p, abs)| !inside(p, abs))
        .collect();
    let dropped = total - kept.len();
    ensure!(
        !kept.is_empty(),
        "every input lies inside the output folder {}, where outputs would become inputs; \
         choose another --out",
        out.display()
    );
    if dropped > 0 {
        eprintln!(
            "note: left out {dropped} of {total} inputs inside the output folder {} (outputs are \
             not inputs)",
            out.display()
        );
    }
    Ok(kept)
}

/// `p` made absolute and tidied by its text alone (`.` dropped, `..` applied; symbolic links
/// are kept as named, since they name the item).
fn absolute(p: &Path) -> PathBuf {
    let joined = std::env::current_dir().unwrap_or_default().join(p);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Names for distinct absolute paths (see the module's header), in the same order.
pub fn names(paths: &[PathBuf]) -> Vec<String> {
    let mut parents = paths.iter().map(|p| p.parent().unwrap_or(Path::new("/")));
    let first = parents.next().map(Path::to_path_buf).unwrap_or_default();
    let common = parents.fold(first, |common, p| common_prefix(&common, p));
    let relative: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.strip_prefix(&common).unwrap_or(p).to_path_buf())
        .collect();
    let mut full: Vec<bool> = paths.iter().map(|p| p.is_dir()).collect();
    loop {
        let named: Vec<String> = relative
            .iter()
            .zip(&full)
            .map(|(r, &f)| {
                if f {
                    text(r)
                } else {
                    text(&r.with_extension(""))
                }
            })
            .collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for n in &named {
            *counts.entry(n.as_str()).or_default() += 1;
        }
        let mut changed = false;
        for (n, f) in named.iter().zip(full.iter_mut()) {
            if counts[n.as_str()] > 1 && !*f {
                (*f, changed) = (true, true);
            }
        }
        if !changed {
            return named;
        }
    }
}

fn common_prefix(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

/// A relative path as a `/`-separated name; an empty one (the root folder itself) as `input`.
fn text(p: &Path) -> String {
    let parts: Vec<String> = p
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        "input".into()
    } else {
        parts.join("/")
    }
}

/// Refuses a run in which two items would write the same file, or an item would write into
/// the run's records: `files(name)` lists an item's output paths relative to the output folder.
/// Suffixes can meet where names cannot (`a` writes `a_variance_overlay.png`, and so does the
/// class overlay of an input named `a_variance`).
pub fn check_outputs(items: &[Item], files: impl Fn(&str) -> Vec<String>) -> Result<()> {
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        for f in files(&item.name) {
            ensure!(
                !Path::new(&f).starts_with(RUN_DIR),
                "input {} would write {f}, inside {RUN_DIR}/ where a sharded run keeps its \
                 records; rename it or its folder",
                item.path.display()
            );
            if let Some(j) = owner.insert(f.clone(), i) {
                bail!(
                    "inputs {} and {} would both write {f}; rename one, or run them into \
                     separate --out folders",
                    items[j].path.display(),
                    item.path.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(paths: &[&str]) -> Vec<String> {
        names(&paths.iter().map(PathBuf::from).collect::<Vec<_>>())
    }

    #[test]
    fn names_are_paths_below_the_common_folder_without_extension() {
        assert_eq!(
            names_of(&["/x/d1/frame.png", "/x/d2/frame.png", "/x/d3/frame-0.png"]),
            ["d1/frame", "d2/frame", "d3/frame-0"]
        );
        assert_eq!(names_of(&["/x/in/a.png", "/x/in/b.jpg"]), ["a", "b"]);
        assert_eq!(names_of(&["/x/scene.png"]), ["scene"]);
        assert_eq!(
            names_of(&["/x/a.png", "/x/a.jpg", "/x/a.png.png", "/x/sub/a.png"]),
            ["a.png", "a.jpg", "a.png.png", "sub/a"],
            "extensions kept only where stems meet"
        );
        // Folders are items too (the video tool's frame folders).
        assert_eq!(
            names_of(&["/v/drive.mp4", "/v/frames"]),
            ["drive", "frames"]
        );
    }

    #[test]
    fn colliding_outputs_and_the_records_folder_are_refused() {
        let item = |p: &str, n: &str| Item {
            path: p.into(),
            name: n.into(),
        };
        let files = |n: &str| {
            vec![
                format!("{n}_overlay.png"),
                format!("{n}_variance_overlay.png"),
            ]
        };
        let ok = [item("a.png", "a"), item("b.png", "b")];
        check_outputs(&ok, files).unwrap();
        let meet = [item("a.png", "a"), item("a_variance.png", "a_variance")];
        let err = check_outputs(&meet, files).unwrap_err().to_string();
        assert!(
            err.contains("a_variance_overlay.png") && err.contains("a.png"),
            "{err}"
        );
        let records = [item("segnet-run/x.png", "segnet-run/x")];
        let err = check_outputs(&records, files).unwrap_err().to_string();
        assert!(err.contains(RUN_DIR), "{err}");
    }

    #[test]
    fn manifest_keeps_its_order_resolves_from_its_folder_and_refuses_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("lists");
        std::fs::create_dir(&sub).unwrap();
        for f in ["b.png", "a.png"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let m = sub.join("m.txt");
        std::fs::write(&m, "# work\n../b.png\n\n../a.png\n").unwrap();
        let out = dir.path().join("out");
        let items = collect(&[], Some(&m), &out, Expand::Images).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        std::fs::write(&m, "../a.png\n../b.png\n../a.png\n").unwrap();
        let err = collect(&[], Some(&m), &out, Expand::Images).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
