//! Training arithmetic on CUDA: bf16 autocast (`train.precision: bf16`) with the weights and
//! the optimiser kept in fp32, and cuDNN's autotuner, which pays off for training's fixed input
//! size.
//!
//! tch switches autocast on and off but leaves its dtype at libtorch's default for CUDA, fp16,
//! whose narrow range needs loss scaling. bf16 has fp32's range and needs none, so the dtype is
//! set through libtorch's own `at::autocast::set_autocast_dtype`, declared here by its C++
//! symbol (the functions are plain and their enums are `int8_t`, so the C calling convention
//! matches on the x86-64 and AArch64 ABIs).

use anyhow::{ensure, Result};
use tch::Device;

use crate::config::Precision;

/// `c10::DeviceType::CUDA`.
const CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
const BFLOAT16: i8 = 15;

extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device: i8) -> i8;
}

fn set_cuda_autocast_bf16() {
    // SAFETY: both functions only write and read libtorch's per-device autocast dtype table.
    unsafe { at_set_autocast_dtype(CUDA, BFLOAT16) }
}

fn cuda_autocast_dtype() -> i8 {
    // SAFETY: as above.
    unsafe { at_get_autocast_dtype(CUDA) }
}

/// Whether training steps run under bf16 autocast: only on CUDA (a note says so otherwise).
/// Also switches on cuDNN's autotuner on CUDA.
pub(crate) fn setup(precision: Precision, device: Device) -> Result<bool> {
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(match (precision, device.is_cuda()) {
        (Precision::Fp32, _) => false,
        (Precision::Bf16, true) => {
            set_cuda_autocast_bf16();
            ensure!(
                cuda_autocast_dtype() == BFLOAT16,
                "`train.precision: bf16`: this libtorch did not take bf16 as its autocast type; use fp32"
            );
            true
        }
        (Precision::Bf16, false) => {
            println!(
                "note: `train.precision: bf16` applies on CUDA only; this run computes in fp32"
            );
            false
        }
    })
}

/// Runs `f` (a forward pass) under bf16 autocast when `on`.
pub(crate) fn autocast<T>(on: bool, f: impl FnOnce() -> T) -> T {
    if on {
        tch::autocast(true, f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The declared symbols link and behave: the dtype read back is the one set.
    #[test]
    fn autocast_dtype_for_cuda_can_be_set_to_bf16() {
        set_cuda_autocast_bf16();
        assert_eq!(cuda_autocast_dtype(), BFLOAT16);
        assert!(
            !setup(Precision::Bf16, Device::Cpu).unwrap(),
            "no autocast on a CPU"
        );
    }
}
