//! Finds the SeetaFace frontal face model that the `rustface` crate ships in its package (a
//! dependency of this crate, so cargo has unpacked it) and hands its path to the compiler:
//! `SEETA_FD_MODEL` (embedded with `include_bytes!`) and `RUSTFACE_DIR` (its test picture, for
//! the tests).

use std::path::PathBuf;

const PACKAGE: &str = "rustface-0.1.7";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    // Registry sources (`registry/src/<index>/rustface-…`), or a vendored copy beside us.
    let mut candidates: Vec<PathBuf> =
        std::fs::read_dir(home.join("registry/src")).into_iter().flatten().flatten().map(|e| e.path().join(PACKAGE)).collect();
    candidates.push(PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../vendor").join("rustface"));
    for dir in candidates {
        let model = dir.join("model/seeta_fd_frontal_v1.0.bin");
        if model.is_file() {
            println!("cargo:rustc-env=SEETA_FD_MODEL={}", model.display());
            println!("cargo:rustc-env=RUSTFACE_DIR={}", dir.display());
            return;
        }
    }
    panic!("the SeetaFace model of {PACKAGE} was not found under {}/registry/src", home.display());
}
