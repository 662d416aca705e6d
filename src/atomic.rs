//! Files that are whole or absent: written to a temporary file in the same folder, synced, then
//! renamed over the final name (`tempfile`'s `persist`). A crash or kill never leaves a
//! half-written output; a failed write removes its temporary file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use tempfile::NamedTempFile;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        synced_temp_file(path, bytes)?.persist(path)?;
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `bytes` to `path` atomically unless something is there already; returns whether it
/// wrote. Of several processes racing to create one file, exactly one wins.
pub(crate) fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<bool> {
    let write = || -> std::io::Result<bool> {
        match synced_temp_file(path, bytes)?.persist_noclobber(path) {
            Ok(_) => Ok(true),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e.error),
        }
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// `bytes` in a temporary file beside `path`, on disk.
fn synced_temp_file(path: &Path, bytes: &[u8]) -> std::io::Result<NamedTempFile> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Writes `value` as pretty JSON atomically.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

/// Temporary files are named `.<final name>.tmp` and six random characters, so that leftovers
/// can be told apart from the user's files and traced to their output.
const TEMP_MARK: &str = ".tmp";
const TEMP_RANDOM: usize = 6;

/// Whether `name` is a temporary file of ours, for the output named `target` when given.
fn is_leftover(name: &str, target: Option<&str>) -> bool {
    let Some((head, random)) = name.rsplit_once(TEMP_MARK) else {
        return false;
    };
    let random_ok =
        random.len() == TEMP_RANDOM && random.chars().all(|c| c.is_ascii_alphanumeric());
    match target {
        Some(t) => random_ok && head == format!(".{t}"),
        // An empty head: tempfile's default `.tmpXXXXXX`, which earlier versions wrote.
        None => random_ok && (head.is_empty() || head.starts_with('.')),
    }
}

/// Removes the temporary files that writes killed mid-way (SIGKILL, a lost machine) left in
/// `dir`. Only for a folder no other process is writing into.
pub(crate) fn remove_leftovers(dir: &Path) {
    remove_matching(dir, None);
}

/// Removes the leftovers of earlier, killed writes of `path` alone (other outputs in its folder
/// may be in the middle of their own writes).
pub(crate) fn remove_leftovers_of(path: &Path) {
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        remove_matching(folder_of(path), Some(name));
    }
}

fn remove_matching(dir: &Path, target: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let ours = is_leftover(&e.file_name().to_string_lossy(), target);
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary file in `path`'s folder (a rename cannot cross file systems).
fn temp_file_beside(path: &Path) -> std::io::Result<NamedTempFile> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let prefix = format!(".{}{TEMP_MARK}", name.as_deref().unwrap_or("output"));
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).rand_bytes(TEMP_RANDOM);
    // tempfile makes owner-only files; outputs get the mode `File::create` gives (umask).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(folder_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        write_json_atomic(&p, &[1, 2]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p)
                .unwrap()
                .replace([' ', '\n'], ""),
            "[1,2]"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"old").unwrap();
        // Renaming a file over a folder fails after the temporary file is written.
        let blocked = dir.path().join("folder");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"").unwrap();
        let err = write_atomic(&blocked, b"new").unwrap_err();
        assert!(format!("{err:#}").contains("folder"), "{err:#}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn outputs_are_readable_by_others_as_with_file_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ours, plain) = (dir.path().join("a"), dir.path().join("b"));
        write_atomic(&ours, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&ours), mode(&plain));
    }

    #[test]
    fn leftovers_of_killed_writes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let killed = temp_file_beside(&dir.path().join("a")).unwrap();
        let (_, left) = killed.keep().unwrap();
        std::fs::write(dir.path().join("kept.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join(".config.tmpl"), b"x").unwrap();
        remove_leftovers(dir.path());
        assert!(!left.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn leftovers_of_one_output_are_removed_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let keep = |p: &Path| temp_file_beside(p).unwrap().keep().unwrap().1;
        let a = keep(&dir.path().join("a.safetensors"));
        let b = keep(&dir.path().join("b.safetensors"));
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".a.safetensors.tmp"));
        remove_leftovers_of(&dir.path().join("a.safetensors"));
        assert!(!a.exists());
        assert!(b.exists());
    }

    #[test]
    fn a_new_file_is_written_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        assert!(write_new_atomic(&p, b"first").unwrap());
        assert!(!write_new_atomic(&p, b"second").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_unwritable_place_names_the_file() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.txt"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("x.txt"));
    }
}
