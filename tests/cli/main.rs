//! End-to-end tests of the `kiln` binary: `check`, `ir`, `run` and `demo`,
//! and the errors a user sees for bad files, flags, inputs and weights.
//!
//! Every run happens in a fresh temporary working directory with absolute
//! paths, and every run asserts that stderr never reports a panic. Runs of
//! `models/gpt.kl` use `--dim B=1 --dim T=4` unless the default dims are what
//! is being tested: the reference interpreter is slow in a debug build.

mod bad_indices;
mod flags;
mod front_end;
mod grad;
mod ir_grad;
mod profile;
mod ptx;
mod train_safety;
mod zero_size;
mod util;

use kiln_ir::DType;
use kiln_runtime::{self as rt, Tensor};
use std::path::Path;
use util::{kiln, repo, s, write, TempDir};

const SMALL: [&str; 4] = ["--dim", "B=1", "--dim", "T=4"];

fn gpt() -> String {
    s(&repo("models/gpt.kl")).to_string()
}

fn mlp() -> String {
    s(&repo("models/mlp.kl")).to_string()
}

/// `kiln run models/gpt.kl --backend reference --out OUT` followed by `extra`.
fn run_gpt(out: &Path, extra: &[&str]) -> util::Run {
    let mut args: Vec<String> = vec!["run".into(), gpt(), "--backend".into(), "reference".into(), "--out".into(), s(out).into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    kiln(&args)
}

/// The same, expected to fail with a one-line error containing `words`.
#[track_caller]
fn gpt_error(extra: &[&str], words: &[&str]) -> String {
    let dir = TempDir::new();
    let out = dir.join("out");
    let line = run_gpt(&out, extra).one_line_error(words);
    assert!(!out.join("logits.npy").exists(), "a failed run wrote an output");
    line
}

fn read(path: &Path) -> Tensor {
    rt::read_npy(path).unwrap_or_else(|e| panic!("{e}"))
}

fn tokens(shape: Vec<usize>, data: Vec<f64>) -> Tensor {
    Tensor::new(DType::I32, shape, data)
}

/// Writes an `.npy` into `dir` and returns its path as a string.
fn npy(dir: &TempDir, name: &str, t: &Tensor) -> String {
    let p = dir.join(name);
    rt::write_npy(&p, t).unwrap_or_else(|e| panic!("{e}"));
    s(&p).to_string()
}

/// Saves the parameters of the model in `kl`, initialized from `seed`, as a
/// safetensors file.
fn save_checkpoint(kl: &Path, seed: u64, path: &Path) {
    let c = kiln_lang::compile_file(kl).unwrap_or_else(|e| panic!("{}", e.render()));
    let params = rt::init_params(&c.module, seed).unwrap_or_else(|e| panic!("{e}"));
    rt::save_params(&c.module, &params, path).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------- check / ir

#[test]
fn check_gpt_prints_both_signatures() {
    let r = kiln(&["check", &gpt()]).ok();
    assert!(
        r.stdout.contains("fn forward(tokens: i32[B, T]) -> logits: f32[B, T, vocab] where T <= block"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("fn loss(tokens: i32[B, T], targets: i32[B, T]) -> loss: f32[] where T <= block"),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn check_mlp_prints_both_signatures() {
    let r = kiln(&["check", &mlp()]).ok();
    assert!(r.stdout.contains("fn forward(x: f32[N, d_in]) -> logits: f32[N, classes]"), "{}", r.stdout);
    assert!(r.stdout.contains("fn loss(x: f32[N, d_in], labels: i32[N]) -> loss: f32[]"), "{}", r.stdout);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn ir_of_gpt_forward_shows_the_ops() {
    let r = kiln(&["ir", &gpt(), "--entry", "forward"]).ok();
    for op in ["softmax", "scan", "matmul"] {
        assert!(r.stdout.contains(op), "no `{op}` in the IR:\n{}", r.stdout);
    }
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn ir_without_entry_prints_every_entry_point() {
    let all = kiln(&["ir", &gpt()]).ok().stdout;
    let forward = kiln(&["ir", &gpt(), "--entry", "forward"]).ok().stdout;
    assert!(all.len() > forward.len());
    assert!(all.contains("fn forward(") && all.contains("fn loss("), "an entry point is missing:\n{all}");
}

#[test]
fn ir_unknown_entry_lists_the_entries() {
    let r = kiln(&["ir", &gpt(), "--entry", "backward"]);
    r.one_line_error(&["backward", "forward", "loss"]);
}

#[test]
fn check_missing_file() {
    let dir = TempDir::new();
    let missing = dir.join("nope.kl");
    kiln(&["check", s(&missing)]).one_line_error(&["cannot read", "nope.kl"]);
    kiln(&["run", s(&missing)]).one_line_error(&["cannot read", "nope.kl"]);
}

#[test]
fn check_malformed_file_reports_a_located_diagnostic() {
    let dir = TempDir::new();
    let bad = write(&dir, "bad.kl", "fn f(x: f32[N]) -> y: f32[N] {\n    return x +* 2\n}\n");
    let r = kiln(&["check", s(&bad)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let header = format!("{}:2:15: error[E0002]: ", bad.display());
    assert!(r.stderr.starts_with(&header), "expected `{header}...`, got:\n{}", r.stderr);
    assert!(r.stderr.trim_end().ends_with("error: could not compile: 1 error"), "{}", r.stderr);
    // `run` reports the same diagnostic.
    let r2 = kiln(&["run", s(&bad), "--out", s(&dir.join("out"))]);
    assert_eq!(r2.code, 1);
    assert_eq!(r2.stderr, r.stderr);
    assert!(!dir.join("out").exists());
}

#[test]
fn check_garbage_file() {
    let dir = TempDir::new();
    let bad = write(&dir, "garbage.kl", "$ this is not a model\n");
    let r = kiln(&["check", s(&bad)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let header = format!("{}:1:1: error[E0001]: ", bad.display());
    assert!(r.stderr.starts_with(&header), "expected `{header}...`, got:\n{}", r.stderr);
}

#[test]
fn check_binary_file() {
    let dir = TempDir::new();
    write(&dir, "binary.kl", [0x93u8, 0xff, 0x00, 0xfe, 0x01]);
    let r = util::kiln_in(dir.path(), &["check", "binary.kl"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("binary.kl:1:1: error[E0008]: the file is not valid UTF-8: byte 0x93 at offset 0\n"), "{}", r.stderr);
}

// ------------------------------------------------------------------- run

#[test]
fn run_gpt_with_defaults_writes_logits() {
    let dir = TempDir::new();
    let out = dir.join("out");
    let r = run_gpt(&out, &[]).ok();
    let logits = read(&out.join("logits.npy"));
    assert_eq!(logits.dtype, DType::F32);
    assert_eq!(logits.shape, vec![2, 16, 512]);
    assert!(logits.data.iter().all(|x| x.is_finite()));
    assert!(r.stderr.contains("note: using default dims: B = 2, T = 16"), "{}", r.stderr);
    assert!(r.stderr.contains("--dim NAME=N"), "{}", r.stderr);
    assert!(r.stdout.contains("logits: f32[2, 16, 512]"), "{}", r.stdout);
}

#[test]
fn run_gpt_loss_is_near_ln_vocab() {
    let dir = TempDir::new();
    let out = dir.join("out");
    let r = run_gpt(&out, &["--entry", "loss"]).ok();
    assert!(r.stderr.contains("note: using default dims: B = 2, T = 16"), "{}", r.stderr);
    let loss = read(&out.join("loss.npy"));
    assert_eq!(loss.dtype, DType::F32);
    assert_eq!(loss.shape, Vec::<usize>::new());
    let expected = 512f64.ln();
    assert!((loss.data[0] - expected).abs() < 0.1, "loss {} is not near ln 512 = {expected}", loss.data[0]);
    assert!(!out.join("logits.npy").exists());
}

#[test]
fn run_creates_nested_output_dirs() {
    let dir = TempDir::new();
    let out = dir.join("a/b/c");
    run_gpt(&out, &SMALL).ok();
    assert_eq!(read(&out.join("logits.npy")).shape, vec![1, 4, 512]);
}

#[test]
fn run_mlp_in_both_precisions() {
    let dir = TempDir::new();
    for p in ["f32", "f64"] {
        let out = dir.join(p);
        let r = kiln(&["run", &mlp(), "--backend", "reference", "--out", s(&out), "--precision", p]).ok();
        assert!(r.stderr.contains("using default dims: N = 8"), "{}", r.stderr);
        assert_eq!(read(&out.join("logits.npy")).shape, vec![8, 10]);
    }
    let a = read(&dir.join("f32/logits.npy")).data;
    let b = read(&dir.join("f64/logits.npy")).data;
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
}

#[test]
fn same_seed_same_bits_other_seed_other_bits() {
    let dir = TempDir::new();
    let mut outs = Vec::new();
    for (name, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
        let out = dir.join(name);
        let mut args = SMALL.to_vec();
        args.extend(["--seed", seed]);
        run_gpt(&out, &args).ok();
        outs.push(std::fs::read(out.join("logits.npy")).expect("read logits"));
    }
    assert_eq!(outs[0], outs[1], "two runs with --seed 7 differ");
    assert_ne!(outs[0], outs[2], "--seed 7 and --seed 8 give the same output");
}

#[test]
fn input_file_fixes_the_shape() {
    let dir = TempDir::new();
    let tok = npy(&dir, "tokens.npy", &tokens(vec![1, 7], vec![0.0, 1.0, 2.0, 3.0, 511.0, 5.0, 6.0]));
    let out = dir.join("out");
    let r = run_gpt(&out, &["--input", &format!("tokens={tok}")]).ok();
    assert_eq!(read(&out.join("logits.npy")).shape, vec![1, 7, 512]);
    assert!(!r.stderr.contains("default dims"), "nothing was defaulted, yet:\n{}", r.stderr);
}

#[test]
fn input_file_and_dim_must_agree() {
    let dir = TempDir::new();
    let tok = npy(&dir, "tokens.npy", &tokens(vec![1, 7], vec![0.0; 7]));
    gpt_error(&["--input", &format!("tokens={tok}"), "--dim", "T=8"], &["dimension `T`", "8", "7", "tokens"]);
}

#[test]
fn loss_inputs_must_agree() {
    let dir = TempDir::new();
    let tok = npy(&dir, "tokens.npy", &tokens(vec![1, 4], vec![0.0; 4]));
    let tgt = npy(&dir, "targets.npy", &tokens(vec![1, 5], vec![0.0; 5]));
    gpt_error(
        &["--entry", "loss", "--input", &format!("tokens={tok}"), "--input", &format!("targets={tgt}")],
        &["dimension `T`", "tokens", "targets"],
    );
}

#[test]
fn dim_sets_the_sequence_length() {
    let dir = TempDir::new();
    let out = dir.join("out");
    let r = run_gpt(&out, &["--dim", "T=8"]).ok();
    assert_eq!(read(&out.join("logits.npy")).shape, vec![2, 8, 512]);
    assert!(r.stderr.contains("using default dims: B = 2"), "{}", r.stderr);
    assert!(!r.stderr.contains("T = 16"), "{}", r.stderr);
}

#[test]
fn weights_round_trip_matches_the_seed() {
    let dir = TempDir::new();
    let ckpt = dir.join("gpt.safetensors");
    save_checkpoint(&repo("models/gpt.kl"), 42, &ckpt);
    let mut seeded = SMALL.to_vec();
    seeded.extend(["--seed", "42"]);
    run_gpt(&dir.join("seeded"), &seeded).ok();
    // Inputs not given are drawn from --seed too, so keep it: only the
    // parameters change source.
    let mut loaded = seeded.clone();
    loaded.extend(["--weights", s(&ckpt)]);
    run_gpt(&dir.join("loaded"), &loaded).ok();
    let a = std::fs::read(dir.join("seeded/logits.npy")).expect("read");
    let b = std::fs::read(dir.join("loaded/logits.npy")).expect("read");
    assert_eq!(a, b, "weights saved from seed 42 give other logits than --seed 42");
    // And other weights give other logits.
    let other = dir.join("other.safetensors");
    save_checkpoint(&repo("models/gpt.kl"), 43, &other);
    let mut args = seeded.clone();
    args.extend(["--weights", s(&other)]);
    run_gpt(&dir.join("other"), &args).ok();
    assert_ne!(a, std::fs::read(dir.join("other/logits.npy")).expect("read"));
}

#[test]
fn demo_runs_and_reports_the_loss() {
    let r = kiln(&["demo"]).ok();
    assert!(r.stdout.contains("loss"), "{}", r.stdout);
    assert!(r.stdout.contains("ln 512"), "{}", r.stdout);
    assert!(r.stdout.contains("fn forward(tokens: i32[B, T])"), "{}", r.stdout);
}

// ------------------------------------------------------- bad run arguments

#[test]
fn run_unknown_entry() {
    gpt_error(&["--entry", "train"], &["no entry point `train`", "forward, loss"]);
}

#[test]
fn input_with_unknown_name() {
    let dir = TempDir::new();
    let tok = npy(&dir, "x.npy", &tokens(vec![1, 4], vec![0.0; 4]));
    gpt_error(&["--input", &format!("ids={tok}")], &["no input `ids`", "tokens"]);
}

#[test]
fn input_without_a_value() {
    gpt_error(&["--input", "tokens"], &["--input tokens", "NAME=VALUE"]);
    gpt_error(&["--input", "=x.npy"], &["NAME=VALUE"]);
}

#[test]
fn input_file_missing() {
    let dir = TempDir::new();
    let missing = dir.join("missing.npy");
    gpt_error(&["--input", &format!("tokens={}", s(&missing))], &["cannot read", "missing.npy", "No such file"]);
}

#[test]
fn input_file_not_npy() {
    let dir = TempDir::new();
    let p = write(&dir, "junk.npy", "this is not numpy");
    gpt_error(&["--input", &format!("tokens={}", s(&p))], &["junk.npy", "not a valid .npy file"]);
}

#[test]
fn input_with_wrong_dtype() {
    let dir = TempDir::new();
    let tok = npy(&dir, "f.npy", &Tensor::new(DType::F32, vec![1, 4], vec![0.0; 4]));
    gpt_error(&["--input", &format!("tokens={tok}")], &["input `tokens`", "expected i32[1, 4]", "got f32[1, 4]", "f.npy"]);
}

#[test]
fn input_with_wrong_rank() {
    let dir = TempDir::new();
    let tok = npy(&dir, "r1.npy", &tokens(vec![4], vec![0.0; 4]));
    gpt_error(&["--input", &format!("tokens={tok}")], &["input `tokens`", "i32[B, T]", "got i32[4]", "r1.npy"]);
    let tok = npy(&dir, "r3.npy", &tokens(vec![1, 2, 2], vec![0.0; 4]));
    gpt_error(&["--input", &format!("tokens={tok}")], &["input `tokens`", "got i32[1, 2, 2]"]);
}

#[test]
fn input_with_wrong_shape_for_the_dims() {
    let dir = TempDir::new();
    let tok = npy(&dir, "t.npy", &tokens(vec![1, 4], vec![0.0; 4]));
    gpt_error(&["--input", &format!("tokens={tok}"), "--dim", "B=2"], &["dimension `B`", "2", "1"]);
}

#[test]
fn input_with_empty_axis() {
    // An empty axis binds its dimension (T = 0): the logits are empty too.
    let dir = TempDir::new();
    let tok = npy(&dir, "t.npy", &tokens(vec![1, 0], vec![]));
    let out = dir.join("out");
    run_gpt(&out, &["--input", &format!("tokens={tok}")]).ok();
    assert_eq!(rt::read_npy(&out.join("logits.npy")).expect("logits").shape, [1, 0, 512]);
}

#[test]
fn token_ids_out_of_range() {
    let dir = TempDir::new();
    let tok = npy(&dir, "t.npy", &tokens(vec![1, 4], vec![1.0, 2.0, 600.0, 3.0]));
    gpt_error(&["--input", &format!("tokens={tok}")], &["input `tokens`", "element 2", "600", "0..512"]);
    let tok = npy(&dir, "n.npy", &tokens(vec![1, 4], vec![1.0, -1.0, 2.0, 3.0]));
    gpt_error(&["--input", &format!("tokens={tok}")], &["input `tokens`", "element 1", "-1", "0..512"]);
    let tgt = npy(&dir, "tgt.npy", &tokens(vec![1, 4], vec![0.0, 0.0, 0.0, 512.0]));
    gpt_error(&["--entry", "loss", "--input", &format!("targets={tgt}")], &["input `targets`", "512", "0..512"]);
}

#[test]
fn dim_negative() {
    gpt_error(&["--dim", "B=-3"], &["--dim B=-3", "cannot be negative"]);
}

#[test]
fn dim_not_an_integer() {
    gpt_error(&["--dim", "T=abc"], &["--dim T=abc", "`abc` is not an integer"]);
    gpt_error(&["--dim", "T"], &["--dim T", "NAME=VALUE"]);
}

#[test]
fn dim_unknown_name() {
    gpt_error(&["--dim", "X=3"], &["--dim X=3", "no dimension `X`", "B, T"]);
}

#[test]
fn dim_violates_the_where_constraint() {
    gpt_error(&["--dim", "B=1", "--dim", "T=300"], &["`forward`", "T <= block", "300"]);
}

#[test]
fn weights_missing_file() {
    let dir = TempDir::new();
    let w = dir.join("missing.safetensors");
    gpt_error(&["--weights", s(&w)], &["cannot read", "missing.safetensors", "No such file"]);
}

#[test]
fn weights_garbage_file() {
    let dir = TempDir::new();
    let w = write(&dir, "junk.safetensors", "definitely not a checkpoint, just some text");
    gpt_error(&["--weights", s(&w)], &["junk.safetensors", "not a valid safetensors file"]);
}

#[test]
fn weights_truncated_file() {
    let dir = TempDir::new();
    let full = dir.join("full.safetensors");
    save_checkpoint(&repo("models/mlp.kl"), 0, &full);
    let bytes = std::fs::read(&full).expect("read checkpoint");
    for (name, len) in [("half.safetensors", bytes.len() / 2), ("short.safetensors", 5)] {
        let w = write(&dir, name, &bytes[..len]);
        kiln(&["run", &mlp(), "--weights", s(&w), "--out", s(&dir.join("out"))])
            .one_line_error(&[name, "not a valid safetensors file"]);
    }
}

#[test]
fn weights_of_another_model() {
    let dir = TempDir::new();
    let w = dir.join("mlp.safetensors");
    save_checkpoint(&repo("models/mlp.kl"), 0, &w);
    gpt_error(&["--weights", s(&w)], &["mlp.safetensors", "missing parameter `wte`"]);
}

#[test]
fn weights_with_a_wrong_shape() {
    // The same model with a smaller vocabulary: every name matches, the
    // first parameter's shape does not.
    let dir = TempDir::new();
    let text = std::fs::read_to_string(repo("models/gpt.kl")).expect("read gpt.kl");
    assert!(text.contains("vocab   = 512"));
    let small = write(&dir, "gpt_small.kl", text.replace("vocab   = 512", "vocab   = 256"));
    let w = dir.join("small.safetensors");
    save_checkpoint(&small, 0, &w);
    gpt_error(&["--weights", s(&w)], &["small.safetensors", "parameter `wte`", "[256, 256]", "[512, 256]"]);
}

#[test]
fn out_is_an_existing_file() {
    let dir = TempDir::new();
    let f = write(&dir, "taken", "keep me");
    run_gpt(&f, &SMALL).one_line_error(&["taken", "not a directory"]);
    assert_eq!(std::fs::read_to_string(&f).expect("read"), "keep me");
}

// ---------------------------------------------------------------- flags

#[test]
fn bad_flag_exits_1() {
    let r = kiln(&["run", &gpt(), "--bogus"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: unexpected argument '--bogus'"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn bad_flag_values_exit_1() {
    for (flag, value, words) in [
        ("--backend", "gpu", "possible values: cpu, reference"),
        ("--precision", "f16", "possible values: f32, f64"),
        ("--seed", "abc", "invalid value 'abc' for '--seed <SEED>'"),
        ("--seed", "-1", "unexpected argument '-1'"),
    ] {
        let r = kiln(&["run", &gpt(), flag, value]);
        assert_eq!(r.code, 1, "{flag} {value}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
        assert!(r.stderr.contains(words), "{flag} {value}: {}", r.stderr);
    }
}

#[test]
fn missing_arguments_exit_1() {
    for args in [&[][..], &["run"][..], &["frobnicate"][..]] {
        let r = kiln(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains("Usage:"), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn help_and_version_exit_0() {
    let r = kiln(&["--help"]).ok();
    for cmd in ["check", "ir", "run", "demo"] {
        assert!(r.stdout.contains(cmd), "{}", r.stdout);
    }
    let r = kiln(&["run", "--help"]).ok();
    for flag in ["--entry", "--weights", "--seed", "--input", "--dim", "--out", "--backend", "--precision"] {
        assert!(r.stdout.contains(flag), "{}", r.stdout);
    }
    let r = kiln(&["--version"]).ok();
    assert!(r.stdout.starts_with("kiln "), "{}", r.stdout);
}

#[test]
fn model_without_entry_points() {
    let dir = TempDir::new();
    let kl = write(&dir, "nopub.kl", "config { n = 4 }\nfn helper(x: f32[n]) -> y: f32[n] {\n    return x\n}\n");
    let r = kiln(&["check", s(&kl)]).ok();
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    kiln(&["run", s(&kl), "--out", s(&dir.join("out"))]).one_line_error(&["no entry point `forward`", "none", "pub fn"]);
    kiln(&["ir", s(&kl), "--entry", "helper"]).one_line_error(&["no entry point `helper`", "none"]);
}

#[test]
fn private_functions_are_not_entry_points() {
    gpt_error(&["--entry", "attention"], &["no entry point `attention`", "forward, loss"]);
}

#[test]
fn huge_dim_is_an_error_not_an_abort() {
    let dir = TempDir::new();
    // x: f32[N, 64] with N = 1e13 would take 5 PB: more than any address space.
    kiln(&["run", &mlp(), "--dim", "N=10000000000000", "--out", s(&dir.join("out"))]).one_line_error(&["N"]);
}

#[test]
fn nan_inputs_run_and_the_summary_says_nan() {
    let dir = TempDir::new();
    let x = npy(&dir, "x.npy", &Tensor::new(DType::F32, vec![2, 64], vec![f64::NAN; 128]));
    let out = dir.join("out");
    let r = kiln(&["run", &mlp(), "--input", &format!("x={x}"), "--out", s(&out)]).ok();
    assert!(r.stdout.contains("logits: f32[2, 10]") && r.stdout.contains("NaN"), "{}", r.stdout);
    assert!(!r.stdout.contains("inf"), "{}", r.stdout);
    assert!(read(&out.join("logits.npy")).data.iter().all(|v| v.is_nan()));
}

#[test]
fn input_given_as_int64_is_refused_with_its_dtype() {
    // NumPy's default integer dtype is int64; `forward` wants i32 tokens.
    let dir = TempDir::new();
    let tok = npy(&dir, "i64.npy", &Tensor::new(DType::I64, vec![1, 4], vec![1.0, 2.0, 3.0, 4.0]));
    gpt_error(&["--input", &format!("tokens={tok}")], &["input `tokens`", "expected i32[1, 4]", "got i64[1, 4]"]);
}

// ------------------------------------------------------------ docs/errors.md

/// The error codes written as string literals in the front end's sources.
fn codes_in_sources() -> std::collections::BTreeSet<String> {
    let mut codes = std::collections::BTreeSet::new();
    let mut dirs = vec![repo("lang/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read lang/src") {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read source");
            let b = text.as_bytes();
            for i in 0..b.len().saturating_sub(6) {
                if &b[i..i + 3] == b"\"E0" && b[i + 3..i + 6].iter().all(u8::is_ascii_digit) && b[i + 6] == b'"' {
                    codes.insert(text[i + 1..i + 6].to_string());
                }
            }
        }
    }
    codes
}

/// Every code the front end can emit has a section in docs/errors.md, and
/// every example there triggers its code with the report shown under it.
#[test]
fn error_index_is_complete_and_its_examples_are_right() {
    let doc = std::fs::read_to_string(repo("docs/errors.md")).expect("read docs/errors.md");
    // code -> (example, first line of the report)
    let mut sections: std::collections::BTreeMap<String, (Option<String>, Option<String>)> = Default::default();
    let mut current: Option<String> = None;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("## ") {
            current = None;
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            current = h.split(':').next().filter(|c| c.starts_with("E0")).map(str::to_string);
            if let Some(c) = &current {
                assert!(sections.insert(c.clone(), (None, None)).is_none(), "{c} has two sections");
            }
            continue;
        }
        let Some(code) = &current else { continue };
        let lang = match line.strip_prefix("```") {
            Some(l) if l == "kl" || l == "text" => l.to_string(),
            _ => continue,
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let entry = sections.get_mut(code).expect("section");
        match lang.as_str() {
            "kl" if entry.0.is_none() => entry.0 = Some(body.join("\n") + "\n"),
            "text" if entry.1.is_none() => entry.1 = Some(body.join("\n")),
            _ => panic!("{code}: more than one example"),
        }
    }

    let documented: std::collections::BTreeSet<String> = sections.keys().cloned().collect();
    let emitted = codes_in_sources();
    let missing: Vec<&String> = emitted.difference(&documented).collect();
    assert!(missing.is_empty(), "codes emitted in lang/src but missing from docs/errors.md: {missing:?}");
    let stale: Vec<&String> = documented.difference(&emitted).collect();
    assert!(stale.is_empty(), "codes documented in docs/errors.md but emitted nowhere: {stale:?}");

    let without_example = ["E0008", "E0203", "E0229", "E0299", "E0900"];
    let mut checked = 0;
    for (code, (example, report)) in &sections {
        let (Some(example), Some(report)) = (example, report) else {
            assert!(without_example.contains(&code.as_str()), "{code} has no example and report in docs/errors.md");
            continue;
        };
        let dir = TempDir::new();
        write(&dir, "example.kl", example);
        let r = util::kiln_in(dir.path(), &["check", "example.kl"]);
        assert_eq!(r.code, 1, "the example of {code} compiles:\n{example}");
        let first = r.stderr.lines().next().unwrap_or_default();
        assert_eq!(first, report, "the example of {code} reports something else:\n{}", r.stderr);
        checked += 1;
    }
    assert_eq!(checked, sections.len() - without_example.len());
}

#[test]
fn parameter_with_an_unknown_dimension_is_a_check_error() {
    let dir = TempDir::new();
    let kl = write(&dir, "sym.kl", "param w: f32[T, 64] = zeros\n");
    let r = kiln(&["check", s(&kl)]);
    assert_eq!(r.code, 1, "`kiln check` accepts an unknown dimension in a parameter shape");
    assert!(r.stderr.contains("error[E0204]"), "{}", r.stderr);
}

#[test]
fn train_writes_checkpoint_csv_and_plot_and_resumes() {
    let dir = TempDir::new();
    let model = repo("tests/fixtures/tiny_gpt.kl");
    let out = dir.join("run");
    let r = kiln(&["train", s(&model), "--steps", "6", "--batch", "2", "--block", "16", "--out", s(&out), "--stop-at", "3"]).ok();
    assert!(r.stderr.contains("checkpoint") || r.stdout.contains("checkpoint"), "{}{}", r.stdout, r.stderr);
    for f in ["params.safetensors", "checkpoint.json", "loss.csv", "loss.png", "tokenizer.json"] {
        assert!(out.join(f).exists(), "{f} missing in {}", out.display());
    }
    let csv = std::fs::read_to_string(out.join("loss.csv")).expect("csv");
    assert!(csv.starts_with("step,train_loss,val_loss,lr,tokens_per_s"), "{csv}");
    // Resuming continues from step 3 to the end of the schedule.
    assert!(!csv.lines().any(|l| l.starts_with("6,")), "{csv}");
    let r = kiln(&["train", s(&model), "--resume", s(&out), "--profile"]).ok();
    // The profile covers the 3 resumed steps: each GEMM runs once a step.
    let gemm = r.stdout.lines().find(|l| l.contains("_matmul")).unwrap_or_else(|| panic!("{}", r.stdout));
    assert_eq!(gemm.split_whitespace().nth(2), Some("3"), "{gemm}");
    let csv = std::fs::read_to_string(out.join("loss.csv")).expect("csv");
    assert!(csv.lines().any(|l| l.starts_with("6,")), "resumed run did not reach step 6:\n{csv}");
}

#[test]
fn train_refuses_bad_inputs() {
    let dir = TempDir::new();
    let model = repo("tests/fixtures/tiny_gpt.kl");
    let empty = write(&dir, "empty.txt", "");
    kiln(&["train", s(&model), "--data", s(&empty), "--steps", "2", "--out", s(&dir.join("a"))]).one_line_error(&["empty"]);
    kiln(&["train", s(&model), "--data", s(&dir.join("nope.txt")), "--steps", "2", "--out", s(&dir.join("b"))]).one_line_error(&["nope.txt"]);
    let file = write(&dir, "file", "x");
    kiln(&["train", s(&model), "--steps", "2", "--out", s(&file)]).one_line_error(&["file"]);
}

#[test]
fn ir_optimized_shows_the_fused_attention_and_the_report() {
    let r = kiln(&["ir", &gpt(), "--entry", "forward", "--stage", "optimized"]).ok();
    assert!(r.stdout.contains("= attention[scale=0.125, causal=0, fa2] "), "{}", r.stdout);
    assert!(!r.stdout.contains("softmax"), "the naive attention is still there:\n{}", r.stdout);
    assert!(r.stdout.contains("# forward/scan%19: stopped: saturated"), "{}", r.stdout);
    assert!(r.stdout.contains("#   fused attention[scale=0.125, causal=0, fa2]"), "{}", r.stdout);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn ir_optimized_attention_flag_forces_the_variant() {
    let r = kiln(&["ir", &gpt(), "--entry", "loss", "--stage", "optimized", "--attention", "fa1"]).ok();
    assert!(r.stdout.contains("attention[scale=0.125, causal=0, fa1]"), "{}", r.stdout);
    assert!(!r.stdout.contains("fa2"), "{}", r.stdout);
    let r = kiln(&["ir", &gpt(), "--stage", "optimized", "--attention", "fa3"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: ") && r.stderr.contains("possible values: fa1, fa2"), "{}", r.stderr);
}

#[test]
fn no_fuse_leaves_the_graph_as_lowered() {
    let plain = kiln(&["ir", &gpt(), "--entry", "forward"]).ok().stdout;
    let off = kiln(&["ir", &gpt(), "--entry", "forward", "--stage", "optimized", "--no-fuse"]).ok().stdout;
    assert_eq!(off, format!("{plain}# optimizer off (--no-fuse)\n"));
}

#[test]
fn run_fused_and_unfused_agree_on_the_reference() {
    let dir = TempDir::new();
    for (name, extra) in [("fused", None), ("unfused", Some("--no-fuse"))] {
        let mut args = vec!["--entry", "loss", "--dim", "B=2", "--dim", "T=5"];
        args.extend(extra);
        run_gpt(&dir.join(name), &args).ok();
    }
    let a = read(&dir.join("fused/loss.npy")).data;
    let b = read(&dir.join("unfused/loss.npy")).data;
    assert_eq!(a.len(), 1);
    assert!((a[0] - b[0]).abs() < 1e-5 * a[0].abs(), "fused {} vs unfused {}", a[0], b[0]);
}

/// `kiln run` evaluates: dropout is the identity, so the dropout fixture
/// gives tiny_gpt.kl's logits bit for bit; `--train-mode` applies it, with
/// the seed given as the `dropout_seed` input (equal seeds, equal masks).
#[test]
fn run_applies_dropout_only_in_train_mode() {
    let dir = TempDir::new();
    let seed = npy(&dir, "seed.npy", &Tensor::new(DType::I64, vec![], vec![12345.0]));
    let other = npy(&dir, "other.npy", &Tensor::new(DType::I64, vec![], vec![777.0]));
    let run = |model: &str, name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["run".to_string(), s(&repo(&format!("tests/fixtures/{model}"))).to_string(), "--out".into(), s(&out).into()];
        args.extend(SMALL.iter().chain(extra).map(|a| a.to_string()));
        kiln(&args).ok();
        read(&out.join("logits.npy")).data
    };
    let plain = run("tiny_gpt.kl", "plain", &[]);
    assert_eq!(plain, run("tiny_gpt_dropout.kl", "eval", &[]));
    let seed_arg = format!("dropout_seed={seed}");
    let train = run("tiny_gpt_dropout.kl", "train", &["--train-mode", "--input", &seed_arg]);
    assert_ne!(train, plain);
    assert_eq!(train, run("tiny_gpt_dropout.kl", "again", &["--train-mode", "--input", &seed_arg]));
    let other_arg = format!("dropout_seed={other}");
    assert_ne!(train, run("tiny_gpt_dropout.kl", "other", &["--train-mode", "--input", &other_arg]));
}
