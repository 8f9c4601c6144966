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

/// The model at `path` with some config entries replaced, as `(name,
/// value)`: a model's structure at a size a debug build runs quickly. A
/// name the config does not define is a bug in the test and panics.
pub fn compile_with_config(path: &Path, config: &[(&str, &str)]) -> kiln_lang::Compiled {
    let mut src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (name, value) in config {
        let entry = format!("\n    {name} ");
        let start = src.find(&entry).unwrap_or_else(|| panic!("{}: the config has no `{name}`", path.display())) + 1;
        let eq = start + src[start..].find('=').expect("`=` after a config name");
        let end = eq + src[eq..].find(['\n', '#']).expect("a config line ends");
        src.replace_range(eq + 1..end, &format!(" {value} "));
    }
    kiln_lang::compile_source(path, src).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// Models whose default config is too large for the suites that run every
/// model on every backend, and the config they use there instead.
const SMALL_CONFIGS: &[(&str, &[(&str, &str)])] =
    &[("bert.kl", &[("vocab", "50"), ("n_layer", "2"), ("hidden", "32"), ("n_head", "2"), ("ffn", "64"), ("max_pos", "40")])];

/// A model of models/ as the test suites compile it: its own config, or
/// for a model listed in `SMALL_CONFIGS`, the smaller one there.
pub fn compile_model(path: &Path) -> kiln_lang::Compiled {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    match SMALL_CONFIGS.iter().find(|(model, _)| *model == name) {
        Some((_, config)) => compile_with_config(path, config),
        None => kiln_lang::compile_file(path).unwrap_or_else(|e| panic!("{}", e.render())),
    }
}
