//! Checkpoints: bit-identical resume, divergence, refusal of foreign or
//! damaged checkpoints, and output folders checked before training.

mod train_common;
use kiln_runtime::train::{Checkpoint, OptimizerConfig, TrainConfig, TrainDtype, TrainError};
use train_common::*;

/// 20 steps straight against 10, a checkpoint, a new trainer, 10 more;
/// returns the final loss scale.
fn straight_vs_resumed(m: &kiln_ir::Module, c: TrainConfig) -> Option<f64> {
    let m = m.clone();
    let (a_dir, b_dir) = (tempdir(), tempdir());
    let mut a = trainer(&m, c.clone()).unwrap();
    a.set_output(a_dir.path()).unwrap();
    a.run(u64::MAX, &mut |_| {}).unwrap();
    assert_eq!(a.step_count(), 20);

    let mut b = trainer(&m, c).unwrap();
    b.set_output(b_dir.path()).unwrap();
    b.run(10, &mut |_| {}).unwrap();
    assert_eq!(b.step_count(), 10);
    drop(b);
    let mut b = resume(&m, b_dir.path()).unwrap();
    assert_eq!(b.step_count(), 10);
    b.set_output(b_dir.path()).unwrap();
    b.run(u64::MAX, &mut |_| {}).unwrap();
    assert_eq!(b.step_count(), 20);

    assert_eq!(bits(&a), bits(&b), "parameters differ after resuming");
    assert_eq!(a.loss_scale(), b.loss_scale());
    let losses = |t: &kiln_runtime::train::Trainer| t.history().iter().map(|r| r.train_loss.map(f64::to_bits)).collect::<Vec<_>>();
    assert_eq!(losses(&a), losses(&b), "training losses differ after resuming");
    // The checkpoints agree too, optimizer state included.
    let (ca, cb) = (Checkpoint::load(&m, a_dir.path()).unwrap(), Checkpoint::load(&m, b_dir.path()).unwrap());
    assert_eq!(ca.slots, cb.slots);
    assert_eq!(ca.params, cb.params);
    assert_eq!(ca.meta.optimizer_steps, cb.meta.optimizer_steps);
    assert_eq!(ca.meta.data, cb.meta.data);
    a.loss_scale()
}

#[test]
fn resume_is_bit_identical_adamw() {
    straight_vs_resumed(&tiny_gpt(), config(20));
}

/// Each step's dropout seed derives from the run's seed and the step
/// count, which the checkpoint restores: the same masks after resuming,
/// also per micro-batch and in bf16.
#[test]
fn resume_with_dropout_is_bit_identical() {
    straight_vs_resumed(&model("tiny_gpt_dropout.kl"), config(20));
    let mut c = config(20);
    c.dtype = TrainDtype::Bf16;
    c.accumulate = 2;
    c.batch = 4;
    straight_vs_resumed(&model("tiny_gpt_dropout.kl"), c);
}

#[test]
fn resume_is_bit_identical_sgd_f16_accumulated() {
    // Momentum state, the loss scaler (growing every 3 clean steps) and
    // gradient accumulation all cross the checkpoint.
    let mut c = config(20);
    c.optimizer = OptimizerConfig::sgd(0.9);
    c.schedule.base_lr = 0.3;
    c.dtype = TrainDtype::F16;
    c.loss_scale = 1024.0;
    c.loss_scale_growth = 3;
    c.accumulate = 2;
    c.batch = 4;
    let scale = straight_vs_resumed(&tiny_gpt(), c).unwrap();
    assert!(scale > 1024.0, "the loss scale never grew: {scale}");
}

#[test]
fn a_bf16_parameter_trains_and_resumes_bit_identically() {
    // Its f32 master weights travel in the optimizer file.
    let m = model("bigram_bf16.kl");
    let mut c = config(20);
    c.schedule.base_lr = 0.05;
    straight_vs_resumed(&m, c.clone());
    let init = kiln_runtime::init_params(&m, c.seed).unwrap();
    let mut t = trainer(&m, c).unwrap();
    t.run(u64::MAX, &mut |_| {}).unwrap();
    let now = t.params();
    assert_eq!(now[0].dtype, kiln_ir::DType::BF16);
    assert_ne!(now[0].data, init[0].data, "the bf16 embedding did not train");
    let h = t.history();
    assert!(h.last().unwrap().val_loss.unwrap() < h[0].val_loss.unwrap() - 0.5);
}

#[test]
fn a_checkpoint_holds_what_resuming_needs() {
    let m = tiny_gpt();
    let dir = tempdir();
    let mut c = config(6);
    c.checkpoint_every = 2;
    let mut t = trainer(&m, c).unwrap();
    t.set_output(dir.path()).unwrap();
    let mut seen = Vec::new();
    t.run(u64::MAX, &mut |e| {
        if let kiln_runtime::train::Event::Checkpoint { step, .. } = e {
            seen.push(*step)
        }
    })
    .unwrap();
    assert_eq!(seen, [2, 4, 6]);
    let names: std::collections::BTreeSet<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let want = ["checkpoint.json", "loss.csv", "optimizer-00000006.safetensors", "params-00000006.safetensors", "params.safetensors"];
    assert_eq!(names, want.iter().map(|s| s.to_string()).collect(), "older checkpoints' files are removed");
    let meta = Checkpoint::read_meta(dir.path()).unwrap();
    assert_eq!(meta.step, 6);
    assert_eq!(meta.optimizer_steps, 6);
    assert_eq!(meta.config.optimizer.kind.name(), "adamw");
    assert_eq!(meta.history.len(), 7);
    assert!(meta.data.get("epoch").is_some() && meta.data.get("seed").is_some(), "{}", meta.data);
    assert_eq!(meta.params[0].name, "wte");
    // `params.safetensors` is a plain weights file for `kiln run --weights`.
    let p = kiln_runtime::load_params(&m, &dir.path().join("params.safetensors")).unwrap();
    assert_eq!(p, t.params());
    let csv = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    assert!(csv.starts_with("step,train_loss,val_loss,lr,tokens_per_s\n0,,5."), "{csv}");
    assert_eq!(csv.lines().count(), 8);
}

#[test]
fn divergence_keeps_the_last_good_checkpoint() {
    let m = tiny_gpt();
    let dir = tempdir();
    let mut c = config(30);
    c.checkpoint_every = 1;
    c.clip = None;
    let mut t = trainer(&m, c).unwrap();
    t.set_output(dir.path()).unwrap();
    t.run(3, &mut |_| {}).unwrap();
    let good = std::fs::read(dir.path().join("checkpoint.json")).unwrap();
    let good_params = t.params();
    // An absurd learning rate: the next updates overflow f32.
    t.set_base_lr(1e38);
    let e = t.run(u64::MAX, &mut |_| {}).unwrap_err();
    let TrainError::Diverged { step, checkpoint: Some((kept, ref kept_dir)), .. } = e else {
        panic!("expected divergence, got {e}")
    };
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("training diverged at step {step}: ")), "{msg}");
    assert!(msg.contains("not finite") || msg.contains("NaN") || msg.contains("infinite"), "{msg}");
    assert!(msg.contains("last good checkpoint"), "{msg}");
    assert_eq!(kept_dir, &dir.path().display().to_string());
    assert!(kept < step);
    // Whatever was kept is complete, finite and resumable.
    let ck = Checkpoint::load(&m, dir.path()).unwrap();
    assert_eq!(ck.meta.step, kept);
    assert!(ck.params.iter().all(|p| p.data.iter().all(|x| x.is_finite())));
    if kept == 3 {
        assert_eq!(std::fs::read(dir.path().join("checkpoint.json")).unwrap(), good);
        assert_eq!(ck.params, good_params);
    }
    let r = resume(&m, dir.path()).unwrap();
    assert_eq!(r.step_count(), kept);
}

#[test]
fn divergence_from_the_start_is_reported() {
    let m = tiny_gpt();
    let mut c = config(5);
    c.optimizer = OptimizerConfig::sgd(0.0);
    c.schedule.base_lr = 1e38;
    c.schedule.min_lr = 0.0;
    c.clip = None;
    let mut t = trainer(&m, c).unwrap();
    let e = t.run(u64::MAX, &mut |_| {}).unwrap_err().to_string();
    assert!(e.starts_with("training diverged at step ") && e.ends_with("no checkpoint was written"), "{e}");
}

#[test]
fn a_checkpoint_of_another_model_is_refused() {
    let m = tiny_gpt();
    let dir = tempdir();
    let mut t = trainer(&m, config(2)).unwrap();
    t.set_output(dir.path()).unwrap();
    t.run(u64::MAX, &mut |_| {}).unwrap();

    // Another width: the first parameter already differs.
    let wide = model("tiny_gpt_wide.kl");
    let e = Checkpoint::load(&wide, dir.path()).unwrap_err().to_string();
    assert!(e.contains("different model") && e.contains("`wte`") && e.contains("[256, 32]") && e.contains("[256, 48]"), "{e}");
    let e = resume(&wide, dir.path()).unwrap_err().to_string();
    assert!(e.contains("`wte`"), "{e}");

    // A renamed parameter is named.
    let mut renamed = m.clone();
    renamed.params[1].name = "wpe2".into();
    let e = Checkpoint::load(&renamed, dir.path()).unwrap_err().to_string();
    assert!(e.contains("`wpe2`"), "{e}");
    // One parameter more or less.
    let mut fewer = m.clone();
    fewer.params.pop();
    let last = &m.params.last().unwrap().name;
    let e = Checkpoint::load(&fewer, dir.path()).unwrap_err().to_string();
    assert!(e.contains(&format!("the model has no parameter `{last}`")), "{e}");
}

#[test]
fn a_damaged_checkpoint_is_refused() {
    let m = tiny_gpt();
    let dir = tempdir();
    let e = Checkpoint::load(&m, dir.path()).unwrap_err().to_string();
    assert!(e.contains("no checkpoint.json"), "{e}");
    let mut t = trainer(&m, config(2)).unwrap();
    t.set_output(dir.path()).unwrap();
    t.run(u64::MAX, &mut |_| {}).unwrap();
    let p = dir.path().join("params-00000002.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let e = Checkpoint::load(&m, dir.path()).unwrap_err().to_string();
    assert!(e.contains("params-00000002.safetensors") && e.contains("does not match"), "{e}");
    std::fs::remove_file(&p).unwrap();
    let e = Checkpoint::load(&m, dir.path()).unwrap_err().to_string();
    assert!(e.contains("cannot read `params-00000002.safetensors`"), "{e}");
    std::fs::write(dir.path().join("checkpoint.json"), "{").unwrap();
    let e = Checkpoint::load(&m, dir.path()).unwrap_err().to_string();
    assert!(e.contains("checkpoint.json is not valid"), "{e}");
}

#[test]
fn an_unwritable_output_folder_fails_before_training() {
    let m = tiny_gpt();
    let dir = tempdir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut t = trainer(&m, config(2)).unwrap();
    let e = t.set_output(&file.join("out")).unwrap_err().to_string();
    assert!(e.contains("cannot use") && e.contains("as an output directory"), "{e}");
    let e = t.set_output(&file).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
    assert_eq!(t.step_count(), 0);
    assert!(t.history().is_empty());
}
