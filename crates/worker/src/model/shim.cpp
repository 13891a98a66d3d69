// The small C++ shim over libtorch that tch does not offer: a TorchScript module's buffers (batch-norm
// running statistics), by name, in module order. Compiled by build.rs with the cc crate against the same
// libtorch headers as torch-sys. Every entry point catches C++ exceptions and reports them as a status.
#include <torch/csrc/jit/api/module.h>

#include <cstring>
#include <string>

extern "C" {

typedef void (*lsd_tensor_cb)(void *data, const char *name, at::Tensor *tensor);

// Calls `f(data, name, tensor)` for every buffer of `module` (recursively, dotted names), handing over a
// new at::Tensor* (a shallow alias of the buffer: writing into it writes the module's buffer) that the
// caller owns. Returns 0 on success, 1 on error with a message in `err` (at most `err_len` bytes).
int lsd_named_buffers(void *module, void *data, lsd_tensor_cb f, char *err, size_t err_len) {
  try {
    auto *m = static_cast<torch::jit::Module *>(module);
    for (const auto &b : m->named_buffers(/*recurse=*/true)) {
      f(data, b.name.c_str(), new at::Tensor(b.value));
    }
    return 0;
  } catch (const std::exception &e) {
    if (err_len > 0) {
      std::strncpy(err, e.what(), err_len - 1);
      err[err_len - 1] = 0;
    }
    return 1;
  } catch (...) {
    if (err_len > 0) {
      std::strncpy(err, "unknown C++ exception", err_len - 1);
      err[err_len - 1] = 0;
    }
    return 1;
  }
}

// Whether `module` is in training mode (1), eval mode (0).
int lsd_is_training(void *module) {
  try {
    return static_cast<torch::jit::Module *>(module)->is_training() ? 1 : 0;
  } catch (...) {
    return -1;
  }
}
}
