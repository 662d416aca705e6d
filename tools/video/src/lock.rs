//! One run per output folder. Two runs writing one folder would replace each other's partial
//! CSV and records, and one of them would then call a run with missing frames finished.
//!
//! The lock is the operating system's (`flock`) on an open file, `.segnet-video.lock` in the
//! output folder: it goes when the process goes, SIGKILL included, so a dead run never leaves
//! the folder locked. The file stays; `--restart` and a new run never remove it. The holder
//! writes its PID and host into it, for the message a second run prints. Each input's own
//! folder is locked, never the parent of several: runs (or shards of one run) that write
//! different inputs under one `--out` do not wait for each other.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The lock file's name inside an output folder.
pub(crate) const LOCK_FILE: &str = ".segnet-video.lock";

/// Holds an output folder until dropped (or the process ends).
#[derive(Debug)]
pub(crate) struct FolderLock {
    _file: File,
}

/// Locks the output folder `dir` (which must exist) for this process, or fails in one line
/// naming the run that holds it.
pub(crate) fn acquire(dir: &Path) -> Result<FolderLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "output folder {} is in use by another segnet-video run ({}); wait for it to \
             finish or choose another --out",
            dir.display(),
            holder(&mut file)
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    let me = format!("PID {} on host {}\n", std::process::id(), hostname());
    file.set_len(0)
        .and_then(|()| file.write_all(me.as_bytes()))
        .and_then(|()| file.sync_data())
        .with_context(|| format!("cannot write the lock file {}", path.display()))?;
    Ok(FolderLock { _file: file })
}

/// Who holds the lock, as its holder wrote it. The holder writes just after locking, so an
/// empty file gets a few more looks.
fn holder(file: &mut File) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
        let text = text.trim();
        if read.is_ok() && !text.is_empty() {
            return text.to_string();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    "PID unknown".into()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        let err = acquire(dir.path()).unwrap_err().to_string();
        let me = format!("PID {} on host {}", std::process::id(), hostname());
        assert!(err.contains("in use") && err.contains(&me), "{err}");
        drop(held);
        let again = acquire(dir.path());
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn folders_side_by_side_lock_independently() {
        let parent = tempfile::tempdir().unwrap();
        let (a, b) = (parent.path().join("a"), parent.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let _a = acquire(&a).unwrap();
        assert!(acquire(&b).is_ok());
    }
}
