//! Running NVIDIA's `ptxas` on generated PTX: the offline check that a
//! kernel is valid for its target, with its register and spill report.
//! `ptxas` needs no GPU; `scripts/test.sh` installs it from PyPI and names
//! it in `KILN_PTXAS`.

use super::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ptxas` named by `KILN_PTXAS`, which must exist.
pub fn from_env() -> Result<PathBuf, String> {
    let path = std::env::var_os("KILN_PTXAS").ok_or("KILN_PTXAS is not set: run scripts/test.sh (it installs ptxas)")?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!("KILN_PTXAS names {}, which does not exist: run scripts/test.sh (it installs ptxas)", path.display()));
    }
    Ok(path)
}

/// Assembles `ptx` (written to `dir/NAME.ptx`) for `arch` with `ptxas -v`;
/// returns the register and spill lines of its report, or ptxas's whole
/// log when it rejects the code.
pub fn assemble(ptxas: &Path, ptx: &str, name: &str, arch: Arch, dir: &Path) -> Result<String, String> {
    let file = dir.join(format!("{name}.ptx"));
    std::fs::write(&file, ptx).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let out = Command::new(ptxas)
        .arg(format!("-arch={}", arch.name()))
        .arg("-v")
        .arg(&file)
        .arg("-o")
        .arg(file.with_extension("cubin"))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ptxas.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("ptxas -arch={} rejected {name}:\n{log}", arch.name()));
    }
    let usage: Vec<&str> =
        log.lines().filter(|l| l.contains("Used") || l.contains("spill")).map(|l| l.trim_start_matches("ptxas info    : ")).collect();
    Ok(usage.join("; "))
}
