//! Indices read from data (gather, one_hot, cross-entropy targets) that
//! fall outside their range fail on every backend with the reference
//! interpreter's message, instead of reading a clamped element; indices at
//! the ends of the range (0 and n - 1) still read the right elements.

use kiln_ir::interp::{self, Precision, Tensor};
use kiln_ir::DType;
use kiln_lang::compile_source;
use kiln_runtime as rt;
use kiln_tests::backends;
use std::collections::BTreeMap;
use std::path::Path;

const SRC: &str = "
config { V = 11 }
param e: f32[V, 4] = normal(std: 1.0)
pub fn gather(ids: i32[N]) -> f32[N, 4] { return e[ids] }
pub fn gather_t(ids: i32[N]) -> f32[4, N] { return transpose(e[ids]) }
pub fn far(ids: i32[N]) -> f32[N, 4] { return e[ids + 100000000] }
pub fn neg(ids: i32[N]) -> f32[N, 4] { return e[ids * 0 - 5] }
pub fn hot(ids: i64[N]) -> f32[N, V] { return one_hot(ids, V, dtype: f32) }
pub fn ce(x: f32[N, V], ids: i32[N]) -> f32[] { return cross_entropy(x, ids + 50, over: V) }
pub fn none(t: f32[S, 4], ids: i32[N]) -> f32[N, 4] { return t[ids] }
";

/// Runs entry `name` with `ids` (and a fixed f32 tensor first where it
/// takes one; `S` is 0) on the reference and every backend: the same
/// values, or the same error.
fn check(name: &str, ids: &[i64]) {
    let c = compile_source(Path::new("ids.kl"), SRC.to_string()).unwrap_or_else(|e| panic!("{}", e.render()));
    let f = c.module.functions.iter().find(|f| f.name == name).expect("entry");
    let n = ids.len();
    let dims = BTreeMap::from([("N".to_string(), n as i64), ("S".to_string(), 0)]);
    let env = |k: &str| dims.get(k).copied().or((k == "V").then_some(11));
    let dt = f.graph.inputs.last().expect("ids").dtype;
    let mut inputs = vec![Tensor { dtype: dt, shape: vec![n], data: ids.iter().map(|&i| i as f64).collect() }];
    if let [x, _] = &f.graph.inputs[..] {
        let shape: Vec<usize> = x.shape.iter().map(|d| d.eval(&env).expect("bound") as usize).collect();
        let data = (0..shape.iter().product::<usize>()).map(|i| (i % 7) as f64 * 0.25).collect();
        inputs.insert(0, Tensor { dtype: DType::F32, shape, data });
    }
    let params = rt::init_params(&c.module, 3).expect("params");
    let want = interp::run(&c.module, &f.graph, &env, &params, &inputs, Precision::F64);
    for b in backends::all() {
        let got = b.run(&c.module, f, &params, &inputs, &dims);
        match (&want, got) {
            (Ok(w), Ok(g)) => assert_eq!(&g, w, "{name} {ids:?} on {}", b.name()),
            (Err(w), Err(g)) => assert!(g.ends_with(&w.to_string()), "{name} {ids:?} on {}: `{g}`, reference: `{w}`", b.name()),
            (w, g) => panic!("{name} {ids:?} on {}: {g:?}, reference: {w:?}", b.name()),
        }
    }
}

#[test]
fn indices_at_both_ends_of_the_range_read_their_elements() {
    check("gather", &[0, 10, 3, 10, 0]);
    check("gather_t", &[10, 0, 5, 9, 1, 10, 0]);
    check("hot", &[0, 10, 4]);
    check("none", &[]);
}

#[test]
fn an_index_past_the_end_fails_with_the_reference_message() {
    check("gather", &[0, 11, 3]);
    check("gather_t", &[1, 2, 3, 4, 5, 6, 7, 12]);
    check("hot", &[2, 11]);
    check("none", &[0]);
}

#[test]
fn negative_indices_fail_as_in_the_reference() {
    check("gather", &[3, -1]);
    check("gather_t", &[-11, 0, 1, 2, 3]);
    check("hot", &[-1, 0]);
}

#[test]
fn computed_indices_out_of_range_fail() {
    check("far", &[0, 1, 2]);
    check("neg", &[4, 5]);
    check("ce", &[1, 2, 3]);
}

#[test]
fn the_first_bad_index_is_reported() {
    check("gather", &[1, 2, 40, 30, -7]);
    check("gather_t", &[0, 0, 0, 0, 0, -3, 0, 0, 99, 0]);
}
