//! Links the binary against the libtorch that `make setup` provides, and records where it lives.
//!
//! torch-sys (a direct dependency for this reason) exports its lib folder as `DEP_TCH_LIBTORCH_LIB`.
//! The rpath lets the binary run without LD_LIBRARY_PATH; `--no-as-needed -ltorch` keeps libtorch.so
//! (and through it libtorch_cuda.so) linked even though no symbol of ours names it directly, without
//! which CUDA is silently unavailable on GPU hosts.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-env=LANDSCAPED_LIBTORCH_LIB={lib}");
    }
}
