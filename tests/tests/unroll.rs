//! Unrolling layer stacks: the same values as the scan, forward and
//! gradient, and loops over symbolic lengths left alone.

use kiln_ir::autodiff::{grad, Wrt};
use kiln_ir::interp::{self, Precision, Tensor};
use kiln_ir::{unroll_scans, Function, Graph, Op};
use kiln_lang::compile_file;
use kiln_runtime as rt;
use kiln_tests::repo_root;

fn scans(g: &Graph) -> usize {
    g.nodes.iter().map(|n| if let Op::Scan { body, .. } = &n.op { 1 + scans(body) } else { 0 }).sum()
}

fn run(m: &kiln_ir::Module, f: &Function, params: &[Tensor], inputs: &[Tensor], dims: &rt::BoundDims) -> Vec<Tensor> {
    let env = |n: &str| dims.get(n);
    interp::run(m, &f.graph, &env, params, inputs, Precision::F64).expect("run")
}

#[test]
fn unrolled_gpt_matches_the_scan_forward_and_backward() {
    let c = compile_file(&repo_root().join("tests/fixtures/tiny_gpt.kl")).unwrap_or_else(|e| panic!("{}", e.render()));
    let params = rt::init_params(&c.module, 3).expect("init");
    let f = c.module.function("loss").expect("loss");
    let u = unroll_scans(f, 64);
    kiln_ir::verify::function(&c.module, &u).expect("verified");
    assert!(scans(&f.graph) > 0 && scans(&u.graph) == 0, "the layer stack is unrolled");
    let dims = rt::bind_dims(f, &vec![None; f.arg_names.len()], &[("B".into(), 2), ("T".into(), 5)]).expect("dims");
    let env = |n: &str| dims.get(n);
    let inputs: Vec<Tensor> = (0..2).map(|i| rt::random_input(f, i, &env, 5 + i as u64).expect("input")).collect();
    // The same ops on the same values: equal to the last bit.
    assert_eq!(run(&c.module, f, &params, &inputs, &dims), run(&c.module, &u, &params, &inputs, &dims));
    let gf = grad(&c.module, f, &Wrt::all_params()).expect("grad");
    let gu = grad(&c.module, &u, &Wrt::all_params()).expect("grad of unrolled");
    assert_eq!(scans(&gu.graph), 0, "no rematerializing backward scan");
    let (a, b) = (run(&c.module, &gf, &params, &inputs, &dims), run(&c.module, &gu, &params, &inputs, &dims));
    for (x, y) in a.iter().zip(&b) {
        let scale = x.data.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        assert!(x.max_abs_diff(y) <= 1e-12 * scale, "gradients differ by {}", x.max_abs_diff(y));
    }
}

#[test]
fn loops_over_symbolic_lengths_stay_loops() {
    let c = compile_file(&repo_root().join("models/lstm.kl")).unwrap_or_else(|e| panic!("{}", e.render()));
    for f in &c.module.functions {
        let u = unroll_scans(f, 64);
        assert_eq!(scans(&u.graph), scans(&f.graph), "`{}`", f.name);
        assert_eq!(u, *f, "`{}` is unchanged", f.name);
    }
}
