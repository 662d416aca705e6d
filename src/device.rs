//! Choosing where the network runs.

use anyhow::{bail, ensure, Context, Result};
use tch::Device;

/// `--device`: cpu, cuda (or cuda:N), auto (a GPU when libtorch sees one).
pub(crate) fn parse(name: &str) -> Result<Device> {
    let cuda_count = || tch::Cuda::device_count() as usize;
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        _ => {
            let index = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => match rest.strip_prefix(':').and_then(|i| i.parse().ok()) {
                    Some(i) => i,
                    None => bail!("unknown --device `{name}`: use cpu, cuda, cuda:N or auto"),
                },
                None => bail!("unknown --device `{name}`: use cpu, cuda, cuda:N or auto"),
            };
            if cuda_count() == 0 {
                bail!("--device {name}: no CUDA device is available here (libtorch sees none); use --device cpu or auto");
            }
            if index >= cuda_count() {
                bail!("--device {name}: only {} CUDA device(s) here", cuda_count());
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// Most libtorch threads per core. More than one per core only adds contention, and each
/// costs two threads: `at::set_num_threads(N)` sizes libtorch's OpenMP team (N - 1 workers)
/// and caffe2's pthreadpool for XNNPACK/NNPACK kernels (N - 1 more, idle here), and rayon
/// adds one per core for decoding and drawing. A few per core still lets a user oversubscribe
/// on purpose; far beyond that is a typo that would exhaust the machine's threads.
const THREADS_PER_CORE: usize = 4;

/// Threads for libtorch's CPU kernels: `--threads`, else `SEGNET_THREADS`, else every core.
pub(crate) fn set_threads(threads: Option<i32>) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = match threads {
        Some(n) => Some(checked(i64::from(n), "--threads", cores)?),
        None => from_env(cores)?,
    };
    if let Some(n) = n {
        tch::set_num_threads(n);
    }
    Ok(())
}

/// `SEGNET_THREADS`, checked like `--threads`; set but empty counts as unset.
fn from_env(cores: usize) -> Result<Option<i32>> {
    let value = match std::env::var("SEGNET_THREADS") {
        Ok(v) if v.trim().is_empty() => return Ok(None),
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => v.to_string_lossy().into_owned(),
    };
    let n = value.trim().parse::<i64>().with_context(|| {
        format!(
            "SEGNET_THREADS=`{value}` is not a number of threads: set 1 to {} or unset it",
            cores * THREADS_PER_CORE
        )
    })?;
    checked(n, "SEGNET_THREADS", cores).map(Some)
}

/// `n` when it is between 1 and [`THREADS_PER_CORE`] per core; `what` names the setting.
fn checked(n: i64, what: &str, cores: usize) -> Result<i32> {
    let max = cores * THREADS_PER_CORE;
    ensure!(n >= 1, "{what} must be at least 1, got {n}");
    ensure!(
        n <= max as i64,
        "{what} {n} is more than {THREADS_PER_CORE} threads per core ({cores} cores here): use at most {max}"
    );
    Ok(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_outside_one_to_four_per_core_are_refused_by_name() {
        assert_eq!(checked(8, "--threads", 2).unwrap(), 8);
        assert_eq!(checked(1, "--threads", 2).unwrap(), 1);
        for (n, needle) in [(0, "at least 1"), (-3, "at least 1"), (9, "at most 8")] {
            let err = checked(n, "SEGNET_THREADS", 2).unwrap_err().to_string();
            assert!(
                err.contains("SEGNET_THREADS") && err.contains(needle),
                "{err}"
            );
        }
    }
}
