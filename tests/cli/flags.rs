//! Output streams, closed pipes, conflicting flags, memory limits and
//! `kiln ptx` into a used folder: the CLI says what is wrong instead of
//! guessing, crashing or leaving stale files.

use crate::util::{kiln, repo, s, TempDir};
use std::process::{Command, Stdio};

fn mlp() -> String {
    s(&repo("models/mlp.kl")).to_string()
}

fn gpt() -> String {
    s(&repo("models/gpt.kl")).to_string()
}

/// Runs `kiln args` with stdout (and, with `close_stderr`, stderr) piped to
/// a reader that is gone before kiln writes anything.
#[cfg(unix)]
fn into_closed_pipe(args: &[&str], close_stderr: bool) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run kiln");
    drop(child.stdout.take());
    let mut stderr = String::new();
    if close_stderr {
        drop(child.stderr.take());
    } else if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    (child.wait().expect("wait for kiln"), stderr)
}

/// `kiln ir ... | head -1`: the closed pipe ends kiln quietly, as it does
/// any Unix tool (SIGPIPE), not with a panic (exit 101) or, when stderr is
/// closed too, an abort.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let args = ["ir", &gpt(), "--stage", "optimized"];
    let (status, stderr) = into_closed_pipe(&args, false);
    assert!(status.success() || status.signal() == Some(libc::SIGPIPE), "status {status:?}, stderr:\n{stderr}");
    assert!(stderr.is_empty(), "stderr:\n{stderr}");
    let (status, _) = into_closed_pipe(&args, true);
    assert!(status.success() || status.signal() == Some(libc::SIGPIPE), "status {status:?}");
}

/// Results go to stdout, so `kiln bench > f` keeps them.
#[test]
fn bench_writes_its_table_to_stdout() {
    let r = kiln(&["bench", "--quick", "--only", "matmul"]).ok();
    assert!(r.stderr.is_empty(), "stderr:\n{}", r.stderr);
    assert!(r.stdout.starts_with("FMA ceiling: "), "stdout:\n{}", r.stdout);
    for n in [256, 512] {
        assert!(r.stdout.contains(&format!("matmul {n:>5}: ")), "stdout:\n{}", r.stdout);
    }
    assert!(!r.stdout.contains("attention"), "--only matmul ran more:\n{}", r.stdout);
}

/// Flags that contradict each other are refused, not silently ignored.
#[test]
fn conflicting_flags_are_refused() {
    let dir = TempDir::new();
    let out = dir.join("out");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", &mlp(), "--dim", "N=3", "--out", s(&out)].into_iter().map(String::from).collect::<Vec<_>>();
        args.extend(extra.iter().map(|a| a.to_string()));
        kiln(&args)
    };
    let r = run(&["--no-fuse", "--attention", "fa1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("'--attention <ATTENTION>' cannot be used with '--no-fuse'") || r.stderr.contains("cannot be used with"), "{}", r.stderr);
    run(&["--precision", "f64"]).one_line_error(&["--precision", "--backend reference"]);
    run(&["--precision", "f32", "--backend", "cpu"]).one_line_error(&["--precision", "--backend reference"]);
    run(&["--dim", "N=4"]).one_line_error(&["dim `N` given twice", "N=3", "N=4"]);

    let x = dir.join("x.npy");
    let t = kiln_runtime::Tensor { dtype: kiln_ir::DType::F32, shape: vec![3, 64], data: vec![0.5; 192] };
    kiln_runtime::write_npy(&x, &t).expect("write x.npy");
    let given = format!("x={}", s(&x));
    run(&["--input", &given, "--input", &given]).one_line_error(&["input `x` given twice"]);
    assert!(!out.join("logits.npy").exists(), "a refused run wrote an output");

    // the same flags where they apply
    let r = run(&["--precision", "f64", "--backend", "reference", "--input", &given]).ok();
    assert!(r.stdout.contains("logits: f32[3, 10]"), "{}", r.stdout);
}

/// With no `--entry`, `--stage kernels` shows every entry point, as the
/// other stages do, and says which dims it chose.
#[test]
fn ir_kernels_covers_every_entry_and_names_its_dims() {
    let r = kiln(&["ir", &mlp(), "--stage", "kernels"]).ok();
    for entry in ["forward", "loss"] {
        assert!(r.stdout.contains(&format!("# {entry}: ")), "no kernels for `{entry}`:\n{}", r.stdout);
        assert!(r.stderr.contains(&format!("note: {entry}: ")) && r.stderr.contains("N = "), "stderr:\n{}", r.stderr);
    }
    let r = kiln(&["ir", &mlp(), "--stage", "kernels", "--entry", "loss", "--dim", "N=5"]).ok();
    assert!(r.stdout.starts_with("# loss: ") && !r.stdout.contains("# forward: "), "{}", r.stdout);
    assert!(r.stderr.is_empty(), "every dim was given, yet: {}", r.stderr);
}

/// The .ptx files in an output folder, sorted.
fn ptx_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read out dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".ptx"))
        .collect();
    v.sort();
    v
}

/// `kiln ptx --out` into a folder an earlier run used removes the kernels
/// that run wrote and the new manifest does not list; files it did not
/// write stay.
#[test]
fn ptx_into_a_used_folder_leaves_no_stale_kernels() {
    let dir = TempDir::new();
    let out = dir.join("ptx");
    kiln(&["ptx", &gpt(), "--out", s(&out), "--dim", "B=1", "--dim", "T=4"]).ok();
    let first = ptx_files(&out);
    std::fs::write(out.join("mine.ptx"), "// not kiln's").expect("write a user file");
    kiln(&["ptx", &mlp(), "--out", s(&out), "--dim", "N=3"]).ok();
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).expect("manifest")).expect("json");
    let mut listed: Vec<String> = manifest["kernels"].as_array().expect("kernels").iter().map(|k| k["file"].as_str().expect("file").to_string()).collect();
    listed.push("mine.ptx".into());
    listed.sort();
    assert_eq!(ptx_files(&out), listed, "the folder holds more than the new manifest (first run wrote {first:?})");
    assert!(first.len() > listed.len(), "gpt should have more kernels than mlp: {first:?}");
}

/// A run larger than the memory the process may use is refused before
/// anything large is allocated, with the numbers; no abort, no backtrace.
#[cfg(target_os = "linux")]
#[test]
fn a_run_larger_than_memory_is_refused_with_the_numbers() {
    let dir = TempDir::new();
    let out = dir.join("out");
    // An address-space limit of 4 GiB: each run below needs far more.
    let limited = |args: &str| {
        let kiln = env!("CARGO_BIN_EXE_kiln");
        let o = Command::new("sh").arg("-c").arg(format!("ulimit -v 4194304 && exec '{kiln}' {args}")).current_dir(dir.path()).output().expect("run sh");
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    for backend in ["cpu", "reference"] {
        let (code, stdout, stderr) = limited(&format!("run '{}' --dim N=100000000 --backend {backend} --out '{}'", mlp(), s(&out)));
        assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
        let line = stderr.lines().last().unwrap_or("");
        assert!(line.starts_with("error: `forward` needs ") && line.contains("inputs 47.7 GiB") && line.contains("is available"), "{stderr}");
        assert!(!stderr.contains("memory allocation") && !stderr.contains("panicked"), "{stderr}");
        assert!(!out.join("logits.npy").exists());
    }
    let (code, _, stderr) = limited(&format!("train '{}' --batch 1000000000 --steps 1 --out '{}'", gpt(), s(&dir.join("train"))));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("error: a batch of 1000000000 sequences") && stderr.contains("is available"), "{stderr}");
    assert!(!stderr.contains("memory allocation") && !stderr.contains("panicked"), "{stderr}");
}
