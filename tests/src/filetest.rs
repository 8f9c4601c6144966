//! File tests: inputs with their expected output beside them.

use similar::TextDiff;
use std::path::Path;

/// Runs `render` on every `*.kl` under `dir` and compares its output with
/// the `.expected` file beside it. With `BLESS=1` in the environment the
/// expectations are rewritten instead. Panics listing every mismatch, each
/// with a unified diff, after running them all.
pub fn run(dir: &Path, render: impl Fn(&Path) -> String) {
    let bless = std::env::var("BLESS").is_ok_and(|v| v == "1");
    let inputs = crate::kl_files(dir);
    assert!(!inputs.is_empty(), "no file tests in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let actual = render(input);
        let expected_path = input.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let diff = TextDiff::from_lines(&expected, &actual);
            let name = expected_path.display().to_string();
            failures.push(format!("{}", diff.unified_diff().header(&name, "actual")));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} file tests in {} differ (rerun with BLESS=1 to accept):\n\n{}",
            failures.len(),
            inputs.len(),
            dir.display(),
            failures.join("\n")
        );
    }
}
