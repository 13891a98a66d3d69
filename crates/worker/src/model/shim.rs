//! FFI to src/model/shim.cpp: the buffers of a TorchScript module (batch-norm running statistics), which
//! tch's `CModule` does not expose. build.rs compiles the shim with the cc crate against libtorch.

use std::ffi::{CStr, c_char, c_int, c_void};
use tch::{CModule, Tensor};

unsafe extern "C" {
    fn lsd_named_buffers(
        module: *mut c_void,
        data: *mut c_void,
        f: extern "C" fn(*mut c_void, *const c_char, *mut c_void),
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn lsd_is_training(module: *mut c_void) -> c_int;
}

// tch's CModule is a struct with exactly one field, the `torch::jit::Module*` that libtch's atm_load
// returned; tch keeps it private. We read that pointer, and check here that the struct is still exactly
// one pointer wide, so a tch upgrade that changes it fails to compile instead of misbehaving.
const _: () = assert!(std::mem::size_of::<CModule>() == std::mem::size_of::<*mut c_void>());

fn module_ptr(m: &CModule) -> *mut c_void {
    // SAFETY: see the assertion above: CModule's only field is the module pointer.
    unsafe { *(m as *const CModule as *const *mut c_void) }
}

extern "C" fn push_buffer(data: *mut c_void, name: *const c_char, t: *mut c_void) {
    // SAFETY: `data` is the Vec passed by `named_buffers` below; `name` a NUL-terminated string alive for
    // the call; `t` a heap at::Tensor* whose ownership passes to us (tch frees it on drop).
    unsafe {
        let out = &mut *(data as *mut Vec<(String, Tensor)>);
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        out.push((name, Tensor::from_ptr(t as *mut torch_sys::C_tensor)));
    }
}

/// Every buffer of the module, recursively, with dotted names (`bn1.running_mean`), in module order.
/// The tensors alias the module's own buffers: copying into them changes what the module computes with.
pub fn named_buffers(m: &CModule) -> Result<Vec<(String, Tensor)>, String> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let mut err = vec![0 as c_char; 512];
    // SAFETY: the module pointer is valid while `m` lives; the callback matches the C signature.
    let rc = unsafe {
        lsd_named_buffers(
            module_ptr(m),
            &mut out as *mut Vec<(String, Tensor)> as *mut c_void,
            push_buffer,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        // SAFETY: the shim NUL-terminates the message within the buffer.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
        return Err(msg);
    }
    Ok(out)
}

/// Whether the module is in training mode (`None` if libtorch could not say).
pub fn is_training(m: &CModule) -> Option<bool> {
    // SAFETY: the module pointer is valid while `m` lives.
    match unsafe { lsd_is_training(module_ptr(m)) } {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}
