//! The only module that touches tch/libtorch: loading the user's TorchScript model, binding parameters
//! and buffers from a checkpoint, loss and accuracy on the evaluation set, Hessian-vector products.

pub mod device;
