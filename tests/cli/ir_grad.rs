//! `kiln ir --grad`: the kernels of a training step, and its refusals.

use crate::util::{kiln, repo};

fn mlp() -> String {
    repo("models/mlp.kl").to_string_lossy().into_owned()
}

/// The gradient program returns the loss and one gradient per parameter
/// (w1, b1, w2, b2): five outputs where the loss alone has one.
#[test]
fn grad_prints_the_training_steps_kernels() {
    let plain = kiln(&["ir", &mlp(), "--entry", "loss", "--stage", "kernels", "--dim", "N=5"]).ok();
    assert!(plain.stdout.contains("Output(0)") && !plain.stdout.contains("Output(1)"), "{}", plain.stdout);
    let grad = kiln(&["ir", &mlp(), "--entry", "loss", "--stage", "kernels", "--dim", "N=5", "--grad"]).ok();
    for o in 0..5 {
        assert!(grad.stdout.contains(&format!("Output({o})")), "no output {o}:\n{}", grad.stdout);
    }
    assert!(!grad.stdout.contains("Output(5)"), "{}", grad.stdout);
    let optimized = kiln(&["ir", &mlp(), "--entry", "loss", "--stage", "optimized", "--grad"]).ok();
    assert!(optimized.stdout.contains("# "), "no optimizer report:\n{}", optimized.stdout);
}

#[test]
fn grad_needs_a_later_stage_and_a_scalar_entry() {
    kiln(&["ir", &mlp(), "--entry", "loss", "--grad"]).one_line_error(&["--grad", "--stage"]);
    kiln(&["ir", &mlp(), "--entry", "forward", "--stage", "kernels", "--grad"]).one_line_error(&["forward"]);
}
