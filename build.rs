//! Link-time set-up shared by every binary of the workspace (tools/video uses this file too):
//! an rpath to the libtorch that tools/setup.sh installed, so the binaries run without
//! LD_LIBRARY_PATH, and `torch` linked with --no-as-needed, so that libtorch_cuda is loaded and
//! CUDA is usable where a GPU exists (as-needed linking drops it: no symbol of it is referenced).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
