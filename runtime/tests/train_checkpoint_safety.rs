//! Checkpoints never mix up a run: another computation or a hand-edited
//! sidecar is refused, the weights file and the sidecar always describe
//! one step, leftovers of killed writes are cleaned up, and a run
//! checkpoints early and when asked to stop.

mod train_common;
use kiln_ir::Module;
use kiln_runtime::train::checkpoint::LATEST_PARAMS;
use kiln_runtime::train::{Checkpoint, Event, TrainConfig, Trainer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use train_common::*;

/// A fixture with `from` replaced by `to` (which must occur).
fn edited(name: &str, from: &str, to: &str) -> Module {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in {name}");
    kiln_lang::compile_source(&path, text.replace(from, to)).map_err(|e| e.render()).unwrap().module
}

/// A trainer of `m` that writes to a fresh folder.
fn writing(m: &Module, c: TrainConfig) -> (tempfile::TempDir, Trainer) {
    let dir = tempdir();
    let mut t = trainer(m, c).unwrap();
    t.set_output(dir.path()).unwrap();
    (dir, t)
}

/// The folder of a finished run of `m`.
fn trained(m: &Module, c: TrainConfig) -> tempfile::TempDir {
    let (dir, mut t) = writing(m, c);
    t.run(u64::MAX, &mut |_| {}).unwrap();
    dir
}

/// The steps of the checkpoints a run writes.
fn checkpoints_of(t: &mut Trainer, until: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    t.run(until, &mut |e| {
        if let Event::Checkpoint { step, .. } = e {
            seen.push(*step)
        }
    })
    .unwrap();
    seen
}

#[test]
fn another_computation_with_the_same_parameters_is_refused() {
    let m = tiny_gpt();
    let dir = trained(&m, config(1));
    for (name, from, to, now) in [
        ("tiny_gpt.kl", "gelu(", "relu(", "relu"),
        ("tiny_gpt.kl", "eps     = 1e-5", "eps     = 1e-3", "layernorm"),
    ] {
        let other = edited(name, from, to);
        let e = Checkpoint::load(&other, dir.path()).unwrap_err().to_string();
        assert!(e.contains("the model's computation changed since the checkpoint (graph fingerprint"), "{e}");
        assert!(e.contains(now), "{e}");
    }
    // The same model loads.
    Checkpoint::load(&m, dir.path()).unwrap();

    let d = model("tiny_gpt_dropout.kl");
    let dir = trained(&d, config(1));
    let other = edited("tiny_gpt_dropout.kl", "p_drop  = 0.1", "p_drop  = 0.2");
    let e = resume(&other, dir.path()).unwrap_err().to_string();
    assert!(e.contains("computation changed") && e.contains("dropout"), "{e}");
}

#[test]
fn a_hand_edited_sidecar_is_refused() {
    let m = tiny_gpt();
    let dir = trained(&m, config(2));
    let path = dir.path().join("checkpoint.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let edits: [(&str, fn(&mut serde_json::Value)); 5] = [
        ("step", |v| v["step"] = 1.into()),
        ("learning rate", |v| v["config"]["schedule"]["base_lr"] = 0.5.into()),
        ("dtype", |v| v["config"]["dtype"] = "bf16".into()),
        ("batch", |v| v["config"]["batch"] = 4.into()),
        ("schedule", |v| v["config"]["schedule"]["kind"] = "linear".into()),
    ];
    for (what, edit) in edits {
        let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
        let before = v.clone();
        edit(&mut v);
        assert_ne!(v, before, "the edit of the {what} changed nothing");
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        let e = Checkpoint::read_meta(dir.path()).unwrap_err().to_string();
        assert!(e.contains("checkpoint.json was edited or damaged"), "{what}: {e}");
    }
    // Whitespace does not matter; the values do.
    let v: serde_json::Value = serde_json::from_str(&original).unwrap();
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(Checkpoint::read_meta(dir.path()).unwrap().step, 2);
}

#[test]
fn an_older_format_is_named_not_misparsed() {
    let dir = trained(&tiny_gpt(), config(1));
    let path = dir.path().join("checkpoint.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["format"] = 1.into();
    for field in ["graph", "graph_fingerprint", "checksum"] {
        v.as_object_mut().unwrap().remove(field);
    }
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Checkpoint::read_meta(dir.path()).unwrap_err().to_string();
    assert!(e.contains("format 1 is not supported (this Kiln reads format 2)"), "{e}");
}

#[test]
fn the_sidecar_names_the_tensors_of_the_params_file() {
    let m = tiny_gpt();
    let dir = trained(&m, config(1));
    let meta = Checkpoint::read_meta(dir.path()).unwrap();
    let bytes = std::fs::read(dir.path().join(&meta.params_file.name)).unwrap();
    let stored = kiln_runtime::train::checkpoint::param_entries(&m).unwrap();
    assert_eq!(meta.params, stored);
    let mut in_file: Vec<String> = kiln_runtime::safetensors::decode_tensors(&bytes, "p").unwrap().into_keys().collect();
    let mut in_sidecar: Vec<String> = meta.params.iter().map(|p| p.name.clone()).collect();
    in_file.sort();
    in_sidecar.sort();
    assert_eq!(in_sidecar, in_file);
    assert!(in_sidecar.contains(&"blocks.0.attn.w_qkv".to_string()), "{in_sidecar:?}");
}

#[test]
fn the_weights_file_is_written_before_the_sidecar() {
    // A `params.safetensors` that cannot be written fails the first
    // checkpoint before its sidecar exists.
    let (dir, mut t) = writing(&tiny_gpt(), config(1));
    std::fs::create_dir(dir.path().join(LATEST_PARAMS)).unwrap();
    let e = t.run(u64::MAX, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("params.safetensors"), "{e}");
    assert!(!dir.path().join("checkpoint.json").exists(), "a sidecar names weights params.safetensors lacks");
}

#[test]
fn a_kill_between_writes_is_repaired_on_the_next_start() {
    let m = tiny_gpt();
    let dir = trained(&m, config(2));
    let d = dir.path();
    let good = std::fs::read(d.join("params-00000002.safetensors")).unwrap();
    // As left by a kill after the next checkpoint's tensor files and
    // `params.safetensors`, before its sidecar, and by torn writes.
    let ahead = [good.clone(), vec![1]].concat();
    for (f, bytes) in [
        ("params-00000003.safetensors", &ahead),
        ("optimizer-00000003.safetensors", &ahead),
        (LATEST_PARAMS, &ahead),
        (".checkpoint.json.4242.0.tmp", &ahead),
        (".loss.csv.4242.1.tmp", &ahead),
    ] {
        std::fs::write(d.join(f), bytes).unwrap();
    }
    let mut t = resume(&m, d).unwrap();
    t.set_output(d).unwrap();
    assert_eq!(std::fs::read(d.join(LATEST_PARAMS)).unwrap(), good);
    let mut names: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let want = ["checkpoint.json", "loss.csv", "optimizer-00000002.safetensors", "params-00000002.safetensors", "params.safetensors"];
    assert_eq!(names, want);
}

#[test]
fn the_first_checkpoint_comes_after_a_time_budget() {
    let mut c = config(3);
    c.checkpoint_every = 1000;
    let (_dir, mut t) = writing(&tiny_gpt(), c);
    t.set_first_checkpoint_after(Duration::ZERO);
    // The first step is overdue; then only the end.
    assert_eq!(checkpoints_of(&mut t, u64::MAX), [1, 3]);
}

#[test]
fn a_stop_request_checkpoints_after_the_current_step() {
    let m = tiny_gpt();
    let (dir, mut t) = writing(&m, config(10));
    let stop = Arc::new(AtomicBool::new(false));
    t.stop_when(stop.clone());
    let mut seen = Vec::new();
    t.run(u64::MAX, &mut |e| match e {
        Event::Step(r) if r.step == 2 => stop.store(true, Ordering::SeqCst),
        Event::Checkpoint { step, .. } => seen.push(*step),
        _ => {}
    })
    .unwrap();
    assert_eq!(t.step_count(), 2);
    assert_eq!(seen, [2]);
    assert_eq!(Checkpoint::read_meta(dir.path()).unwrap().step, 2);
    assert_eq!(Checkpoint::load(&m, dir.path()).unwrap().params, t.params());
}

#[test]
fn stopping_before_any_step_still_checkpoints() {
    let m = tiny_gpt();
    let (dir, mut t) = writing(&m, config(5));
    assert_eq!(checkpoints_of(&mut t, 0), [0]);
    let r = resume(&m, dir.path()).unwrap();
    assert_eq!(r.step_count(), 0);
    assert_eq!(r.params(), kiln_runtime::init_params(&m, 0).unwrap());
}
