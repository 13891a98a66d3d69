//! Which devices libtorch can use here: reported by `landscaped info`, and used to check that a GPU
//! build really links CUDA (torch_cuda) before a `cuda:N` device is accepted.

/// What this binary's libtorch offers.
#[derive(Debug, serde::Serialize)]
pub struct RuntimeInfo {
    /// libtorch_cuda.so is loaded in this process: the build can use a GPU where one exists (a CPU-only
    /// libtorch, or a link that dropped torch_cuda, says false).
    pub torch_cuda_linked: bool,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    pub cpu_threads: i32,
}

pub fn runtime_info() -> RuntimeInfo {
    RuntimeInfo {
        torch_cuda_linked: torch_cuda_linked(),
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads(),
    }
}

/// Whether libtorch_cuda is mapped into this process (read from /proc/self/maps; false where unreadable).
pub fn torch_cuda_linked() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtorch_cuda.so"))
}
