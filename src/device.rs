//! Choosing where the network runs.

use anyhow::{bail, ensure, Result};
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

/// Threads for libtorch's CPU kernels: `--threads`, else `SEGNET_THREADS`, else every core.
pub(crate) fn set_threads(threads: Option<i32>) -> Result<()> {
    let n = match threads {
        Some(n) => {
            ensure!(n >= 1, "--threads must be at least 1, got {n}");
            Some(n)
        }
        None => std::env::var("SEGNET_THREADS")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .map(|n| n.max(1)),
    };
    if let Some(n) = n {
        tch::set_num_threads(n);
    }
    Ok(())
}
