//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off in every normal build).
//! Each writes the fuzzer's bytes to a file and reads it as the commands do, so the targets run
//! the real readers, from the file system call to the last check.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::{Config, LabelFormat};

/// A file named `name` in this process's scratch folder (left behind on exit, as libFuzzer
/// exits without running destructors; a few small files).
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("segnet-bayes-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

/// A YAML config as `train --config` reads it.
pub fn config(bytes: &[u8]) -> Result<()> {
    let path = scratch("config.yaml")?;
    std::fs::write(&path, bytes)?;
    Config::load(&path).map(drop)
}

/// A label PNG as training reads it. The first byte picks the format (lowest bit: colour) and
/// the number of classes (the other bits, plus one); the rest is the file.
pub fn label(bytes: &[u8]) -> Result<()> {
    let Some((&head, png)) = bytes.split_first() else {
        return Ok(());
    };
    let format = if head & 1 == 1 {
        LabelFormat::Colour
    } else {
        LabelFormat::Index
    };
    let classes = i64::from(head >> 1) + 1;
    let palette: Vec<[u8; 3]> = (0..=classes as u8).map(|c| [c, c, c]).collect();
    let path = scratch("label.png")?;
    std::fs::write(&path, png)?;
    crate::data::load_label(&path, format, classes, &palette).map(drop)
}

/// A `.safetensors` model as every command reads it: the header, the model config in its
/// metadata (checked), the training progress (`train --resume`) and the tensors.
pub fn checkpoint(bytes: &[u8]) -> Result<()> {
    let path = scratch("model.safetensors")?;
    std::fs::write(&path, bytes)?;
    let ckpt = crate::model::checkpoint::read(&path)?;
    ckpt.config.validate()?;
    crate::train::progress_of(&ckpt, &path).map(drop)
}
