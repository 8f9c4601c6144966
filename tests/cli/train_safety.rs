//! `kiln train` never loses or mixes up a run: finished runs say so, an
//! output folder belongs to one run at a time, signals checkpoint,
//! resuming accepts unchanged flags and refuses another model, and a
//! failed fresh run leaves its folder as it was.

use crate::util::{kiln, kiln_in, repo, s, write, TempDir};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    repo("tests/fixtures/tiny_gpt.kl")
}

/// `kiln train tiny_gpt.kl --batch 2 --block 16 --out OUT` and `extra`.
fn train(out: &Path, extra: &[&str]) -> crate::util::Run {
    let (model, out) = (tiny(), s(out).to_string());
    let mut args = vec!["train", s(&model), "--batch", "2", "--block", "16", "--out", &out];
    args.extend(extra);
    kiln(&args)
}

/// `kiln train MODEL --resume DIR` and `extra`.
fn resume(model: &Path, dir: &Path, extra: &[&str]) -> crate::util::Run {
    let mut args = vec!["train", s(model), "--resume", s(dir)];
    args.extend(extra);
    kiln(&args)
}

/// The checkpoint's sidecar.
fn sidecar(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("checkpoint.json")).expect("checkpoint.json")).expect("json")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_finished_run_says_so_and_prints_no_nan() {
    let dir = TempDir::new();
    let out = dir.join("run");
    train(&out, &["--steps", "2"]).ok();
    let before = std::fs::read(out.join("checkpoint.json")).expect("sidecar");
    let meta = sidecar(&out);
    let val = meta["history"].as_array().and_then(|h| h.iter().rev().find_map(|r| r["val_loss"].as_f64())).expect("a val loss");
    for extra in [&[][..], &["--steps", "1"][..], &["--stop-at", "2"][..]] {
        let r = resume(&tiny(), &out, extra).ok();
        assert!(!r.stdout.contains("NaN") && !r.stderr.contains("NaN"), "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("nothing to train") && r.stdout.contains("step 2"), "{}", r.stdout);
        assert!(r.stdout.contains(&format!("val loss {val:.4}")), "{}", r.stdout);
    }
    assert!(resume(&tiny(), &out, &[]).stdout.contains("already complete"));
    assert_eq!(std::fs::read(out.join("checkpoint.json")).expect("sidecar"), before, "a finished run was rewritten");
}

#[test]
fn a_locked_output_folder_is_refused_at_once() {
    let dir = TempDir::new();
    let out = dir.join("run");
    std::fs::create_dir(&out).expect("mkdir");
    let lock = std::fs::File::create(out.join(".kiln.lock")).expect("lock file");
    lock.try_lock().expect("lock");
    train(&out, &["--steps", "1"]).one_line_error(&["another kiln process is writing to it", "run"]);
    drop(lock);
    train(&out, &["--steps", "1"]).ok();
}

#[test]
fn a_fresh_run_refuses_a_folder_with_a_checkpoint_unless_overwrite() {
    let dir = TempDir::new();
    let out = dir.join("run");
    train(&out, &["--steps", "1"]).ok();
    let before = std::fs::read(out.join("params.safetensors")).expect("params");
    train(&out, &["--steps", "1", "--seed", "5"]).one_line_error(&["holds the checkpoint of another run (step 1)", "--resume", "--overwrite"]);
    assert_eq!(std::fs::read(out.join("params.safetensors")).expect("params"), before);
    // Resuming into another folder that holds a checkpoint is refused too.
    let other = dir.join("other");
    train(&other, &["--steps", "1"]).ok();
    resume(&tiny(), &out, &["--steps", "2", "--out", s(&other)]).one_line_error(&["holds the checkpoint of another run"]);
    train(&out, &["--steps", "1", "--seed", "5", "--overwrite"]).ok();
    assert_ne!(std::fs::read(out.join("params.safetensors")).expect("params"), before);
    assert_eq!(sidecar(&out)["config"]["seed"], 5);
}

/// Starts a long run; once it reported the first step's validation loss,
/// checks that a second run into its folder is refused, sends `signal`,
/// and checks the exit code and the checkpoint it left.
fn stops_with_a_checkpoint(signal: &str, code: i32) {
    let dir = TempDir::new();
    let out = dir.join("run");
    let model = tiny();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", s(&model), "--steps", "100000", "--batch", "2", "--block", "16", "--eval-every", "1", "--out", s(&out)])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Generous: the machine may be loaded.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut log = String::new();
    let mut evals = 0;
    while evals < 2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                evals += line.contains("val loss") as usize;
                log += &line;
                log.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no progress from kiln train:\n{log}");
            }
        }
    }
    // Meanwhile a second run into the same folder fails at once.
    kiln(&["train", s(&model), "--steps", "1", "--out", s(&out), "--overwrite"])
        .one_line_error(&["another kiln process is writing to it"]);
    let sent = Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status().expect("kill");
    assert!(sent.success());
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln train did not stop after SIG{signal}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    log.extend(rx.iter().map(|l| l + "\n"));
    assert_eq!(status.code(), Some(code), "{log}");
    assert!(log.contains(&format!("stopped by SIG{signal} after step")) && log.contains("--resume"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let step = sidecar(&out)["step"].as_u64().expect("step");
    assert!(step >= 1, "{log}");
    // It resumes from there.
    let next = (step + 1).to_string();
    resume(&model, &out, &["--stop-at", &next]).ok();
    assert_eq!(sidecar(&out)["step"].as_u64(), Some(step + 1));
}

#[test]
fn sigterm_checkpoints_and_exits_143() {
    stops_with_a_checkpoint("TERM", 143);
}

#[test]
fn sigint_checkpoints_and_exits_130() {
    stops_with_a_checkpoint("INT", 130);
}

#[test]
fn stop_at_zero_writes_the_checkpoint_it_claims() {
    let dir = TempDir::new();
    let out = dir.join("run");
    let r = train(&out, &["--steps", "3", "--stop-at", "0"]).ok();
    assert!(r.stdout.contains("checkpoint (step 0)"), "{}", r.stdout);
    assert!(!r.stdout.contains("NaN"), "{}", r.stdout);
    assert_eq!(sidecar(&out)["step"], 0);
    assert_eq!(
        std::fs::read(out.join("params.safetensors")).expect("params"),
        std::fs::read(out.join("params-00000000.safetensors")).expect("step 0 params")
    );
    resume(&tiny(), &out, &["--stop-at", "1"]).ok();
    assert_eq!(sidecar(&out)["step"], 1);
}

#[test]
fn resuming_accepts_unchanged_flags_and_refuses_changes() {
    let dir = TempDir::new();
    let out = dir.join("run");
    train(&out, &["--steps", "3", "--stop-at", "1"]).ok();
    let same = ["--seed", "0", "--dtype", "f32", "--batch", "2", "--block", "16", "--lr", "0.001", "--clip", "1", "--stop-at", "2"];
    resume(&tiny(), &out, &same).ok();
    assert_eq!(sidecar(&out)["step"], 2);
    resume(&tiny(), &out, &["--seed", "1"]).one_line_error(&["--seed 1 differs", "trained with 0"]);
    resume(&tiny(), &out, &["--dtype", "bf16"]).one_line_error(&["--dtype bf16 differs", "f32"]);
    resume(&tiny(), &out, &["--clip", "0"]).one_line_error(&["--clip 0 (off) differs", "1"]);
}

#[test]
fn negative_numbers_are_range_errors() {
    for flag in ["--lr", "--steps", "--batch", "--seed", "--clip", "--stop-at"] {
        let r = kiln(&["train", s(&tiny()), flag, "-1"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let first = r.stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("error: invalid value '-1' for '{flag}")), "{}", r.stderr);
        assert!(first.contains("-1 is out of range"), "{}", r.stderr);
        assert!(!r.stderr.contains("tip"), "{}", r.stderr);
    }
}

#[test]
fn resume_from_a_file_says_it_is_a_file() {
    let dir = TempDir::new();
    let f = write(&dir, "not-a-dir", "x");
    resume(&tiny(), &f, &[]).one_line_error(&["is a file, not a checkpoint directory"]);
    resume(&tiny(), &dir.join("nope"), &[]).one_line_error(&["no such directory"]);
}

#[test]
fn resuming_with_another_computation_is_refused() {
    let dir = TempDir::new();
    let out = dir.join("run");
    train(&out, &["--steps", "2", "--stop-at", "1"]).ok();
    let text = std::fs::read_to_string(tiny()).expect("model").replace("gelu(", "relu(");
    let relu = write(&dir, "relu.kl", text);
    resume(&relu, &out, &[]).one_line_error(&["the model's computation changed since the checkpoint", "relu", "gelu"]);
}

#[test]
fn a_failed_fresh_run_leaves_the_folder_as_it_was() {
    let dir = TempDir::new();
    let missing = dir.join("new");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for out in [&missing, &empty] {
        // A block longer than the model's: refused after the tokenizer is trained.
        let r = kiln_in(dir.path(), &["train", s(&tiny()), "--block", "1000", "--steps", "1", "--out", s(out)]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let last = r.stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: ") && last.contains("does not fit the model"), "{}", r.stderr);
    }
    assert!(!missing.exists(), "{:?}", names(&missing));
    assert!(names(&empty).is_empty(), "{:?}", names(&empty));
}
