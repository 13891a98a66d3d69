//! Links the worker against the libtorch that `make setup` provides, and records where it lives.
//!
//! torch-sys (a direct dependency for this reason) exports its lib folder as `DEP_TCH_LIBTORCH_LIB`.
//! The rpath is the folder's canonical path — the venv cache outside the checkout, not the checkout's
//! `.libtorch` link — so an installed worker keeps finding libtorch after the checkout moves or is
//! removed. `--no-as-needed -ltorch` keeps libtorch.so (and through it libtorch_cuda.so) linked even
//! though no symbol of ours names it directly, without which CUDA is silently unavailable on GPU hosts.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let lib = std::fs::canonicalize(&lib).map(|p| p.display().to_string()).unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
        // `make install LIBTORCH_COPY=1` puts torch's libraries here.
        println!("cargo:rustc-link-arg=-Wl,-rpath=$ORIGIN/../lib/landscaped");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-env=LANDSCAPED_LIBTORCH_LIB={lib}");
    }
    model_shim();
}

/// Compiles src/model/shim.cpp (TorchScript buffers, which tch's CModule does not expose)
/// against the libtorch headers torch-sys uses: `$LIBTORCH/include` and its `torch/csrc/api/include`.
fn model_shim() {
    println!("cargo:rerun-if-changed=src/model/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = match std::env::var("LIBTORCH") {
        Ok(r) => std::path::PathBuf::from(r),
        Err(_) => match std::env::var("DEP_TCH_LIBTORCH_LIB") {
            Ok(lib) => std::path::PathBuf::from(lib).join(".."),
            Err(_) => panic!("build.rs: neither LIBTORCH nor DEP_TCH_LIBTORCH_LIB is set; run `make setup`"),
        },
    };
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/model/shim.cpp")
        .compile("landscaped_model_shim");
}
