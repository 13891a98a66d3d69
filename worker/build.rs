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
}
