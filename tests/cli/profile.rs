//! `kiln run --profile` and `--repeat`: the table's speeds agree with the
//! work and traffic of the kernels, counted by hand, and the time it
//! reports.

use crate::util::{kiln, s, write, TempDir};

/// `c = a @ b` for a 256×128 by 128×192 product: both sides split evenly
/// into tiles, so the scheduler makes one kernel (no remainder kernel).
const MATMUL: &str = "pub fn forward(a: f32[M, K], b: f32[K, N]) -> c: f32[M, N] {\n    return a @ b\n}\n";
const DIMS: [&str; 6] = ["--dim", "M=256", "--dim", "K=128", "--dim", "N=192"];

/// The numbers of the table row ending in `name`: ms, share, launches,
/// GFLOP/s, %fp, GB/s, %bw.
fn row(table: &str, name: &str) -> Vec<f64> {
    let line = table.lines().find(|l| l.ends_with(name)).unwrap_or_else(|| panic!("no row `{name}` in:\n{table}"));
    line.split_whitespace().take(7).map(|w| w.trim_end_matches('%').parse().unwrap_or_else(|_| panic!("`{w}` in `{line}`"))).collect()
}

/// Whether `shown`, printed with one decimal, is `want` (the time it is
/// computed from is printed to 0.01 ms, so allow 1% besides the rounding).
fn agrees(shown: f64, want: f64) -> bool {
    (shown - want).abs() <= 0.05 + 0.01 * want
}

#[test]
fn profile_speeds_are_the_hand_counted_work_over_the_reported_time() {
    let dir = TempDir::new();
    let kl = write(&dir, "mm.kl", MATMUL);
    let out_dir = dir.join("out");
    let mut args = vec!["run", s(&kl), "--out", s(&out_dir), "--profile", "--repeat", "3"];
    args.extend(DIMS);
    let r = kiln(&args).ok();
    let out = &r.stdout;
    assert!(out.contains("steady state: ") && out.contains("(mean of runs 2..3)"), "{out}");
    for stage in ["front end", "optimizer", "schedule", "codegen", "weights", "first run"] {
        assert!(out.contains(stage), "no `{stage}` in:\n{out}");
    }
    let report = &out[out.find("profile of").unwrap_or_else(|| panic!("{out}"))..];
    assert!(report.lines().all(|l| l.len() <= 100), "a line is wider than 100 columns:\n{out}");
    let total = row(out, "total in kernels");
    let (ms, launches, gflops, gbs) = (total[0], total[2], total[3], total[5]);
    assert_eq!(launches, 1.0, "one launch of the one kernel per run:\n{out}");
    // 2·m·n·k flops per run, whichever kernel does which rows.
    let flops = 2.0 * 256.0 * 192.0 * 128.0;
    assert!(agrees(gflops, flops / (ms * 1e-3) / 1e9), "{gflops} GFLOP/s vs {flops} flops in {ms} ms:\n{out}");
    // Compulsory traffic: a, b and c once, 4 bytes each.
    let bytes = 4.0 * (256.0 * 128.0 + 128.0 * 192.0 + 256.0 * 192.0);
    assert!(agrees(gbs, bytes / (ms * 1e-3) / 1e9), "{gbs} GB/s vs {bytes} bytes in {ms} ms:\n{out}");
    // Against the ceilings in the header: GFLOP/s / ceiling = %fp.
    let header = out.lines().find(|l| l.starts_with("ceilings: ")).unwrap_or_else(|| panic!("{out}"));
    let ceiling: f64 = header["ceilings: ".len()..].split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("{header}"));
    assert!((total[4] - 100.0 * gflops / ceiling).abs() <= 1.0, "{}% of {ceiling}:\n{out}", total[4]);
}

#[test]
fn repeat_zero_is_refused_before_any_work() {
    let dir = TempDir::new();
    let kl = write(&dir, "mm.kl", MATMUL);
    let out = dir.join("out");
    kiln(&["run", s(&kl), "--out", s(&out), "--repeat", "0"]).one_line_error(&["--repeat 0", "at least once"]);
    assert!(!out.exists(), "a refused run created its output folder");
}

#[test]
fn profile_is_refused_off_the_cpu_backend() {
    let dir = TempDir::new();
    let kl = write(&dir, "mm.kl", MATMUL);
    kiln(&["run", s(&kl), "--out", s(&dir.join("out")), "--profile", "--backend", "reference"]).one_line_error(&["--profile", "--backend cpu"]);
}
