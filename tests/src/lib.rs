//! Shared test machinery for Kiln's suites.
//!
//! [`filetest`] runs a directory of file tests: each `NAME.kl` input has its
//! expected output beside it in `NAME.expected`; `BLESS=1` rewrites the
//! expectations; a mismatch fails with a unified diff.
#![warn(missing_docs)]

pub mod backends;
pub mod filetest;
pub mod ptx_emu;

use std::path::{Path, PathBuf};

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `.kl` files directly in `dir`, sorted.
pub fn kl_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "kl"))
        .collect();
    v.sort();
    v
}
