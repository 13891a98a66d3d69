//! Which devices libtorch can use here: reported by `landscaped info`, and used to check that a GPU
//! build really links CUDA (torch_cuda) before a `cuda:N` device is accepted.

/// What this binary's libtorch offers.
#[derive(Debug, serde::Serialize)]
pub struct RuntimeInfo {
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    pub cpu_threads: i32,
}

pub fn runtime_info() -> RuntimeInfo {
    RuntimeInfo {
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads(),
    }
}
