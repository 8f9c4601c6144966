//! The front end refuses what it cannot do right (issue 11): sizes that
//! overflow, call chains deeper than the stack, bad encodings and files
//! with nothing to run end in one clear message, never in a crash or a
//! silently wrong size.

use crate::util::{kiln, kiln_in, s, write, TempDir};
use kiln_ir::DType;
use kiln_runtime::{self as rt, Tensor};

/// `h0` calls `h1` ... calls `h{n-1}`, each adding 1 to the result when
/// `add`; `forward` calls `h0`.
fn call_chain(n: usize, add: bool) -> String {
    let mut out = String::new();
    for i in 0..n {
        let inner = if i + 1 < n { format!("h{}(x)", i + 1) } else { "x".to_string() };
        let body = if add { format!("{inner} + 1.0") } else { inner };
        out.push_str(&format!("fn h{i}(x: f32[N]) -> f32[N] {{\n    return {body}\n}}\n"));
    }
    out + "pub fn forward(x: f32[N]) -> f32[N] {\n    return h0(x)\n}\n"
}

#[test]
fn a_chain_of_2500_calls_checks() {
    let dir = TempDir::new();
    let kl = write(&dir, "chain.kl", call_chain(2500, true));
    let r = kiln(&["check", s(&kl)]).ok();
    assert_eq!(r.stdout, "fn forward(x: f32[N]) -> f32[N]\n");
}

#[test]
fn a_chain_of_100000_calls_is_one_clear_error() {
    let dir = TempDir::new();
    let kl = write(&dir, "chain.kl", call_chain(100_000, false));
    let r = kiln(&["check", s(&kl)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("error[E0229]: function calls nested more than 10000 deep"), "{}", r.stderr);
    assert!(r.stderr.ends_with("error: could not compile: 1 error\n"), "{}", r.stderr);
}

/// Inlined, the chain is 2,000 additions in a row: the scheduler must not
/// fuse them into one expression deeper than the stack.
#[test]
fn a_chain_of_2000_calls_runs_on_the_cpu_backend() {
    let dir = TempDir::new();
    let kl = write(&dir, "chain.kl", call_chain(2000, true));
    let x = [0.5f32, -1.0, 2.0, 3.25];
    let input = dir.join("x.npy");
    rt::write_npy(&input, &Tensor::new(DType::F32, vec![4], x.iter().map(|&v| v as f64).collect())).expect("write x");
    let out = dir.join("out");
    let args = ["run", s(&kl), "--backend", "cpu", "--no-fuse", "--input", &format!("x={}", s(&input)), "--out", s(&out)];
    kiln(&args).ok();
    let y = rt::read_npy(&out.join("out.npy")).expect("read out");
    // Oracle: x + 2000, exact in f32 for these values.
    let want: Vec<f64> = x.iter().map(|&v| v as f64 + 2000.0).collect();
    assert_eq!(y.data, want);
}

#[test]
fn a_size_that_overflows_at_run_time_is_an_error() {
    let dir = TempDir::new();
    let kl = write(&dir, "big.kl", "pub fn forward(x: f32[T, T]) -> f32[T, T] {\n    return x\n}\n");
    let out = dir.join("out");
    let r = kiln(&["run", s(&kl), "--backend", "reference", "--dim", "T=4294967296", "--out", s(&out)]);
    r.one_line_error(&["f32[T, T]", "more than 2^63 elements", "T = 4294967296"]);
}

#[test]
fn a_failed_where_clause_states_every_value() {
    let dir = TempDir::new();
    let kl = write(&dir, "w.kl", "config {\n    block = 256\n}\n\npub fn forward(x: f32[T]) -> f32[T] where T <= block {\n    return x\n}\n");
    let out = dir.join("out");
    let r = kiln(&["run", s(&kl), "--backend", "reference", "--dim", "T=300", "--out", s(&out)]);
    r.one_line_error(&["constraint `T <= block` does not hold: T = 300, block = 256"]);
}

#[test]
fn a_file_that_is_not_utf8_gets_the_position_of_the_bad_byte() {
    let dir = TempDir::new();
    // Line 1 is 31 bytes and a newline; the bad byte follows `  return x `.
    write(&dir, "bad.kl", b"pub fn f(x: f32[N]) -> f32[N] {\n  return x \xff\n}\n");
    let r = kiln_in(dir.path(), &["check", "bad.kl"]);
    assert_eq!(r.code, 1);
    let first = r.stderr.lines().next().unwrap_or_default();
    assert_eq!(first, "bad.kl:2:12: error[E0008]: the file is not valid UTF-8: byte 0xff at offset 43");

    write(&dir, "lib.kl", b"# caf\xe9\n");
    write(&dir, "main.kl", "import \"lib.kl\"\n");
    let r = kiln_in(dir.path(), &["check", "main.kl"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("lib.kl:1:6: error[E0008]: the file is not valid UTF-8: byte 0xe9 at offset 5"), "{}", r.stderr);
}

#[test]
fn a_file_without_entry_points_says_so() {
    let dir = TempDir::new();
    write(&dir, "empty.kl", "");
    let r = kiln_in(dir.path(), &["check", "empty.kl"]).ok();
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr, "warning: `empty.kl` has no entry points (no `pub fn`); `kiln run` has nothing to call\n");
}
