//! Choosing where the network runs.

use anyhow::{bail, Result};
use tch::Device;

/// `--device`: cpu, cuda (or cuda:N), auto (a GPU when libtorch sees one).
pub fn parse(name: &str) -> Result<Device> {
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

/// Threads for libtorch's CPU kernels: `SEGNET_THREADS` or every core.
pub fn init_threads() {
    if let Some(n) = std::env::var("SEGNET_THREADS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        tch::set_num_threads(n.max(1));
    }
}
