//! The CPU engine on hand-built kernel programs, and end to end through
//! the scheduler.

mod common;

use kiln_ir::kernel::{
    Access, Arg, BufId, BufKind, Buffer, Expr, HostOffset, HostVar, Kernel, KernelId, Mem, Program, Step, Stmt, Var, View,
};
use kiln_ir::{BinaryOp, DType, Init, Module, Op, UnaryOp};
use kiln_runtime::cpu::{Cache, CpuExecutable, Pool};
use kiln_runtime::{run_cpu, run_reference, Precision, RuntimeError, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

// ---- builders -------------------------------------------------------------

/// A program under construction.
#[derive(Default)]
struct P(Program);

impl P {
    fn buf(&mut self, dtype: DType, len: u64, kind: BufKind) -> BufId {
        let id = BufId(self.0.buffers.len() as u32);
        self.0.buffers.push(Buffer { dtype, len, kind, name: format!("b{}", id.0) });
        id
    }

    fn kernel(&mut self, k: Kernel) -> KernelId {
        self.0.kernels.push(k);
        KernelId(self.0.kernels.len() as u32 - 1)
    }

    fn launch(&mut self, kernel: KernelId, args: Vec<View>) {
        self.0.steps.push(Step::Launch { kernel, args });
    }

    fn exe(self, shapes: Vec<Vec<usize>>) -> CpuExecutable {
        CpuExecutable::new(self.0, shapes).expect("the program compiles")
    }
}

/// A view at a constant offset.
fn at(buf: BufId, offset: u64) -> View {
    View { buf, offset: HostOffset { constant: offset, terms: vec![] } }
}

/// A view at `coeff * i0` (the outermost loop counter).
fn at_step(buf: BufId, coeff: u64) -> View {
    View { buf, offset: HostOffset { constant: 0, terms: vec![(HostVar(0), coeff)] } }
}

/// `out[i] = f(in_0[i], in_1[i], ...)` for `i < n`, in `tiles` tiles of
/// `n / tiles` elements; the last argument is the output.
fn map(name: &str, n: u64, tiles: u64, ins: &[DType], out: DType, f: impl Fn(Vec<Expr>) -> Expr) -> Kernel {
    assert_eq!(n % tiles, 0);
    let chunk = n / tiles;
    let i = Var(0);
    let idx = || Expr::add(Expr::mul(Expr::Tile, Expr::idx(chunk)), Expr::var(i));
    let loads = (0..ins.len()).map(|a| Expr::Load(Mem::Arg(a as u32), Box::new(idx()))).collect();
    let store = Stmt::Store { mem: Mem::Arg(ins.len() as u32), index: idx(), value: f(loads) };
    let mut args: Vec<Arg> = ins.iter().map(|&dtype| Arg { dtype, len: n, access: Access::Read }).collect();
    args.push(Arg { dtype: out, len: n, access: Access::Write });
    Kernel {
        name: name.into(),
        args,
        scratch: vec![],
        grid: tiles,
        body: vec![Stmt::Loop { var: i, extent: chunk, vector: true, body: vec![store] }],
    }
}

fn bin(op: BinaryOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, Box::new(a), Box::new(b))
}

fn f32c(x: f64) -> Expr {
    Expr::Const(x, DType::F32)
}

fn tensor(dtype: DType, shape: &[usize], data: Vec<f64>) -> Tensor {
    Tensor::new(dtype, shape.to_vec(), data)
}

fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i % 97) as f64 * 0.25 - 7.0).collect()
}

// ---- programs -------------------------------------------------------------

#[test]
fn two_kernels_chain_through_a_temp() {
    let n = 64;
    let mut p = P::default();
    let x = p.buf(DType::F32, n, BufKind::Input(0));
    let t = p.buf(DType::F32, n, BufKind::Temp);
    let y = p.buf(DType::F32, n, BufKind::Output(0));
    let double = p.kernel(map("double", n, 4, &[DType::F32], DType::F32, |v| bin(BinaryOp::Mul, v[0].clone(), f32c(2.0))));
    let inc = p.kernel(map("inc", n, 8, &[DType::F32], DType::F32, |v| bin(BinaryOp::Add, v[0].clone(), f32c(1.0))));
    p.launch(double, vec![at(x, 0), at(t, 0)]);
    p.launch(inc, vec![at(t, 0), at(y, 0)]);
    let exe = p.exe(vec![vec![8, 8]]);
    let xs = ramp(n as usize);
    let (out, stats) = exe.run_with_stats(&[], &[tensor(DType::F32, &[8, 8], xs.clone())]).unwrap();
    assert_eq!(out, vec![tensor(DType::F32, &[8, 8], xs.iter().map(|x| 2.0 * x + 1.0).collect())]);
    assert_eq!(stats.launches, 2);
    assert_eq!(stats.peak_bytes, 256);
    // A second run reuses the arena and gives the same result.
    assert_eq!(exe.run(&[], &[tensor(DType::F32, &[8, 8], xs)]).unwrap(), out);
}

/// Storage is kept between runs (see `exec.rs`): a reused output still
/// starts zeroed, and a reused input holds the new run's values. The kernel
/// adds into its output, so a stale output would show as a doubled result.
#[test]
fn reused_run_buffers_start_as_fresh_ones() {
    let n = 64;
    let mut p = P::default();
    let x = p.buf(DType::F32, n, BufKind::Input(0));
    let y = p.buf(DType::F32, n, BufKind::Output(0));
    let mut k = map("accumulate", n, 4, &[DType::F32], DType::F32, |v| v[0].clone());
    if let Stmt::Loop { body, .. } = &mut k.body[0] {
        if let Stmt::Store { value, index, .. } = &mut body[0] {
            *value = bin(BinaryOp::Add, value.clone(), Expr::Load(Mem::Arg(1), Box::new(index.clone())));
        }
    }
    k.args[1].access = Access::ReadWrite;
    let acc = p.kernel(k);
    p.launch(acc, vec![at(x, 0), at(y, 0)]);
    let exe = p.exe(vec![vec![n as usize]]);
    for scale in [1.0, -3.0, 0.5] {
        let xs: Vec<f64> = ramp(n as usize).iter().map(|v| v * scale).collect();
        let out = exe.run(&[], &[tensor(DType::F32, &[n as usize], xs.clone())]).unwrap();
        assert_eq!(out, vec![tensor(DType::F32, &[n as usize], xs)], "run with scale {scale}");
    }
}

/// A running sum over the rows of `xs: [T, N]` starting from `init: [N]`:
/// output 0 holds every step's carry, output 1 the last one.
fn running_sum(t: u64, n: u64) -> CpuExecutable {
    let mut p = P::default();
    let init = p.buf(DType::F32, n, BufKind::Input(0));
    let xs = p.buf(DType::F32, t * n, BufKind::Input(1));
    let carry = p.buf(DType::F32, n, BufKind::Temp);
    let all = p.buf(DType::F32, t * n, BufKind::Output(0));
    let last = p.buf(DType::F32, n, BufKind::Output(1));
    let add = p.kernel(map("add", n, 2, &[DType::F32, DType::F32], DType::F32, |v| bin(BinaryOp::Add, v[0].clone(), v[1].clone())));
    p.0.steps.push(Step::Copy { dst: at(carry, 0), src: at(init, 0), len: n });
    p.0.steps.push(Step::Repeat {
        var: HostVar(0),
        count: t,
        body: vec![
            Step::Launch { kernel: add, args: vec![at(carry, 0), at_step(xs, n), at_step(all, n)] },
            Step::Copy { dst: at(carry, 0), src: at_step(all, n), len: n },
        ],
    });
    p.0.steps.push(Step::Copy { dst: at(last, 0), src: at(carry, 0), len: n });
    p.exe(vec![vec![t as usize, n as usize], vec![n as usize]])
}

#[test]
fn a_repeat_offsets_views_by_its_counter() {
    let (t, n) = (5usize, 6usize);
    let exe = running_sum(t as u64, n as u64);
    let init: Vec<f64> = (0..n).map(|j| j as f64).collect();
    let xs = ramp(t * n);
    let mut want = Vec::new();
    let mut acc = init.clone();
    for row in xs.chunks(n) {
        acc.iter_mut().zip(row).for_each(|(a, x)| *a += x);
        want.extend_from_slice(&acc);
    }
    let (out, stats) = exe.run_with_stats(&[], &[tensor(DType::F32, &[n], init), tensor(DType::F32, &[t, n], xs)]).unwrap();
    assert_eq!(out[0], tensor(DType::F32, &[t, n], want));
    assert_eq!(out[1], tensor(DType::F32, &[n], acc));
    assert_eq!(stats.launches, t as u64);
}

#[test]
fn bf16_i32_and_bool_buffers_round_trip() {
    let n = 16;
    let mut p = P::default();
    let h = p.buf(DType::BF16, n, BufKind::Input(0));
    let i = p.buf(DType::I32, n, BufKind::Input(1));
    let b = p.buf(DType::Bool, n, BufKind::Input(2));
    let h2 = p.buf(DType::BF16, n, BufKind::Output(0));
    let i2 = p.buf(DType::I32, n, BufKind::Output(1));
    let b2 = p.buf(DType::Bool, n, BufKind::Output(2));
    let sel = p.buf(DType::I64, n, BufKind::Output(3));
    let k_h = p.kernel(map("half", n, 2, &[DType::BF16], DType::BF16, |v| bin(BinaryOp::Mul, v[0].clone(), f32c(-2.0))));
    let k_i = p.kernel(map("int", n, 4, &[DType::I32], DType::I32, |v| bin(BinaryOp::Add, v[0].clone(), Expr::Const(3.0, DType::I32))));
    let k_b = p.kernel(map("not", n, 1, &[DType::Bool], DType::Bool, |v| Expr::Unary(UnaryOp::Not, Box::new(v[0].clone()))));
    // sel = b ? i : -1, widened to i64.
    let k_s = p.kernel(map("select", n, 2, &[DType::Bool, DType::I32], DType::I64, |v| {
        let i = Expr::Cast(DType::I64, Box::new(v[1].clone()));
        Expr::Select(Box::new(v[0].clone()), Box::new(i), Box::new(Expr::Const(-1.0, DType::I64)))
    }));
    p.launch(k_h, vec![at(h, 0), at(h2, 0)]);
    p.launch(k_i, vec![at(i, 0), at(i2, 0)]);
    p.launch(k_b, vec![at(b, 0), at(b2, 0)]);
    p.launch(k_s, vec![at(b, 0), at(i, 0), at(sel, 0)]);
    let s = |_: ()| vec![n as usize];
    let exe = p.exe(vec![s(()), s(()), s(()), s(())]);

    let hs: Vec<f64> = (0..n).map(|k| k as f64 * 1.5 - 4.0).collect(); // exact in bf16
    let is: Vec<f64> = (0..n).map(|k| k as f64 * 1000.0 - 7000.0).collect();
    let bs: Vec<f64> = (0..n).map(|k| (k % 3 == 0) as u8 as f64).collect();
    let out = exe
        .run(&[], &[tensor(DType::BF16, &[16], hs.clone()), tensor(DType::I32, &[16], is.clone()), tensor(DType::Bool, &[16], bs.clone())])
        .unwrap();
    assert_eq!(out[0], tensor(DType::BF16, &[16], hs.iter().map(|x| -2.0 * x).collect()));
    assert_eq!(out[1], tensor(DType::I32, &[16], is.iter().map(|x| x + 3.0).collect()));
    assert_eq!(out[2], tensor(DType::Bool, &[16], bs.iter().map(|x| 1.0 - x).collect()));
    let want: Vec<f64> = bs.iter().zip(&is).map(|(b, i)| if *b != 0.0 { *i } else { -1.0 }).collect();
    assert_eq!(out[3], tensor(DType::I64, &[16], want));
}

#[test]
fn a_large_grid_runs_in_parallel_like_in_serial() {
    let (tiles, chunk) = (1000u64, 8u64);
    let n = tiles * chunk;
    let build = |pool: Arc<Pool>| {
        let mut p = P::default();
        let x = p.buf(DType::F32, n, BufKind::Input(0));
        let y = p.buf(DType::F32, n, BufKind::Output(0));
        // y = x * x - tile-dependent work, so misplaced tiles would show.
        let k = p.kernel(map("square", n, tiles, &[DType::F32], DType::F32, |v| {
            let sq = bin(BinaryOp::Mul, v[0].clone(), v[0].clone());
            bin(BinaryOp::Sub, sq, Expr::Cast(DType::F32, Box::new(Expr::Tile)))
        }));
        p.launch(k, vec![at(x, 0), at(y, 0)]);
        p.exe(vec![vec![n as usize]]).with_pool(pool)
    };
    let xs = ramp(n as usize);
    let input = [tensor(DType::F32, &[n as usize], xs.clone())];
    let serial = build(Arc::new(Pool::with_threads(1).unwrap())).run(&[], &input).unwrap();
    let want: Vec<f64> = xs.iter().enumerate().map(|(i, x)| ((x * x) as f32 - (i as u64 / chunk) as f32) as f64).collect();
    assert_eq!(serial[0].data, want);
    for pool in [Pool::with_threads(4).unwrap(), Pool::global()] {
        let parallel = build(Arc::new(pool)).run(&[], &input).unwrap();
        assert_eq!(parallel, serial);
    }
}

#[test]
fn a_chain_of_temps_shares_memory() {
    let n = 256;
    let mut p = P::default();
    let x = p.buf(DType::F32, n, BufKind::Input(0));
    let temps: Vec<BufId> = (0..5).map(|_| p.buf(DType::F32, n, BufKind::Temp)).collect();
    let y = p.buf(DType::F32, n, BufKind::Output(0));
    let inc = p.kernel(map("inc", n, 4, &[DType::F32], DType::F32, |v| bin(BinaryOp::Add, v[0].clone(), f32c(1.0))));
    let mut chain = vec![x];
    chain.extend(&temps);
    chain.push(y);
    for w in chain.windows(2) {
        p.launch(inc, vec![at(w[0], 0), at(w[1], 0)]);
    }
    let exe = p.exe(vec![vec![n as usize]]);
    let plan = exe.plan();
    assert_eq!(plan.naive_bytes, 5 * 1024);
    assert_eq!(plan.peak_bytes, 2 * 1024);
    let xs = ramp(n as usize);
    let (out, stats) = exe.run_with_stats(&[], &[tensor(DType::F32, &[n as usize], xs.clone())]).unwrap();
    assert_eq!(out[0].data, xs.iter().map(|x| x + 6.0).collect::<Vec<_>>());
    assert!(stats.peak_bytes < stats.naive_bytes);
    assert_eq!(stats.launches, 6);
}

#[test]
fn parameters_are_read_and_can_be_prepared_once() {
    let n = 8;
    let mut p = P::default();
    let x = p.buf(DType::F32, n, BufKind::Input(0));
    let w = p.buf(DType::F32, n, BufKind::Param(1));
    let y = p.buf(DType::F32, n, BufKind::Output(0));
    let k = p.kernel(map("scale", n, 1, &[DType::F32, DType::F32], DType::F32, |v| bin(BinaryOp::Mul, v[0].clone(), v[1].clone())));
    p.launch(k, vec![at(x, 0), at(w, 0), at(y, 0)]);
    let exe = p.exe(vec![vec![n as usize]]);
    // Parameter 0 is not used by this program: any value will do.
    let params = [Tensor::scalar(DType::I64, 0.0), tensor(DType::F32, &[8], vec![2.0; 8])];
    let prepared = exe.prepare_params(&params).unwrap();
    for k in 0..3 {
        let xs: Vec<f64> = (0..8).map(|i| (i + k) as f64).collect();
        let (out, _) = exe.run_prepared(&prepared, &[tensor(DType::F32, &[8], xs.clone())]).unwrap();
        assert_eq!(out[0].data, xs.iter().map(|x| 2.0 * x).collect::<Vec<_>>());
    }
    let err = exe.run(&params[..1], &[tensor(DType::F32, &[8], vec![0.0; 8])]).unwrap_err();
    assert!(matches!(err, RuntimeError::BadParam { .. }), "{err}");
    let err = exe.run(&[params[0].clone(), tensor(DType::F16, &[8], vec![0.0; 8])], &[tensor(DType::F32, &[8], vec![0.0; 8])]);
    assert_eq!(err.unwrap_err().to_string(), "parameter `b1`: expected f32 with 8 elements, got f16[8]");
}

// ---- malformed programs and bad values --------------------------------------

fn copy_program(dst_len: u64, src_len: u64, view_offset: u64, len: u64) -> Program {
    let mut p = P::default();
    let x = p.buf(DType::F32, src_len, BufKind::Input(0));
    let y = p.buf(DType::F32, dst_len, BufKind::Output(0));
    p.0.steps.push(Step::Copy { dst: at(y, view_offset), src: at(x, 0), len });
    p.0
}

fn internal(r: Result<CpuExecutable, RuntimeError>) -> String {
    match r {
        Err(e @ RuntimeError::Internal { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("internal compiler error in "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            msg
        }
        Err(e) => panic!("not an internal error: {e}"),
        Ok(_) => panic!("a malformed program was accepted"),
    }
}

#[test]
fn a_view_out_of_bounds_is_an_error() {
    // A kernel argument of 8 elements at offset 1 of an 8-element buffer.
    let mut p = P::default();
    let x = p.buf(DType::F32, 8, BufKind::Input(0));
    let y = p.buf(DType::F32, 8, BufKind::Output(0));
    let k = p.kernel(map("copy", 8, 1, &[DType::F32], DType::F32, |v| v[0].clone()));
    p.launch(k, vec![at(x, 1), at(y, 0)]);
    let msg = internal(CpuExecutable::new(p.0, vec![vec![8]]));
    assert!(msg.contains("kernel `copy`") && msg.contains("past the end of `b0`"), "{msg}");

    // Copies: too long, or offset past the end.
    internal(CpuExecutable::new(copy_program(4, 8, 0, 8), vec![vec![4]]));
    internal(CpuExecutable::new(copy_program(8, 8, 1, 8), vec![vec![8]]));
    assert!(CpuExecutable::new(copy_program(8, 8, 0, 8), vec![vec![8]]).is_ok());
    // An offset whose arithmetic overflows.
    internal(CpuExecutable::new(copy_program(8, 8, u64::MAX, 2), vec![vec![8]]));
}

#[test]
fn a_loop_view_out_of_bounds_on_its_last_step_is_an_error() {
    let mut p = P::default();
    let x = p.buf(DType::F32, 12, BufKind::Input(0));
    let y = p.buf(DType::F32, 12, BufKind::Output(0));
    let body = vec![Step::Copy { dst: at_step(y, 4), src: at_step(x, 4), len: 4 }];
    p.0.steps.push(Step::Repeat { var: HostVar(0), count: 4, body });
    let msg = internal(CpuExecutable::new(p.0.clone(), vec![vec![12]]));
    assert!(msg.contains("a copy step"), "{msg}");
    // Three steps fit.
    let Step::Repeat { count, .. } = &mut p.0.steps[0] else { unreachable!() };
    *count = 3;
    let exe = CpuExecutable::new(p.0, vec![vec![12]]).unwrap();
    let xs = ramp(12);
    assert_eq!(exe.run(&[], &[tensor(DType::F32, &[12], xs.clone())]).unwrap()[0].data, xs);
}

#[test]
fn other_malformed_programs_are_errors() {
    // Writing an input.
    let mut p = P::default();
    let x = p.buf(DType::F32, 4, BufKind::Input(0));
    let y = p.buf(DType::F32, 4, BufKind::Output(0));
    p.0.steps.push(Step::Copy { dst: at(x, 0), src: at(y, 0), len: 4 });
    assert!(internal(CpuExecutable::new(p.0, vec![vec![4]])).contains("read-only"));
    // A dtype mismatch (caught by the kernel verifier).
    let mut p = P::default();
    let x = p.buf(DType::I32, 4, BufKind::Input(0));
    let y = p.buf(DType::F32, 4, BufKind::Output(0));
    let k = p.kernel(map("copy", 4, 1, &[DType::F32], DType::F32, |v| v[0].clone()));
    p.launch(k, vec![at(x, 0), at(y, 0)]);
    internal(CpuExecutable::new(p.0, vec![vec![4]]));
    // Output shapes that disagree with the buffers.
    internal(CpuExecutable::new(copy_program(8, 8, 0, 8), vec![vec![3]]));
    internal(CpuExecutable::new(copy_program(8, 8, 0, 8), vec![]));
}

#[test]
fn bad_inputs_are_errors() {
    let exe = CpuExecutable::new(copy_program(8, 8, 0, 8), vec![vec![2, 4]]).unwrap();
    let ok = tensor(DType::F32, &[8], ramp(8));
    assert_eq!(exe.run(&[], std::slice::from_ref(&ok)).unwrap()[0].shape, [2, 4]);
    let err = exe.run(&[], &[tensor(DType::I32, &[8], vec![0.0; 8])]).unwrap_err();
    assert_eq!(err.to_string(), "input `b0`: expected f32 with 8 elements, got i32[8]");
    assert!(matches!(exe.run(&[], &[tensor(DType::F32, &[7], vec![0.0; 7])]), Err(RuntimeError::BadInput { .. })));
    assert!(matches!(exe.run(&[], &[]), Err(RuntimeError::BadInput { .. })));
    assert!(matches!(exe.run(&[], &[ok.clone(), ok.clone()]), Err(RuntimeError::BadInput { .. })));
    let broken = Tensor { dtype: DType::F32, shape: vec![8], data: vec![0.0; 3] };
    assert!(matches!(exe.run(&[], &[broken]), Err(RuntimeError::BadInput { .. })));
}

// ---- end to end -------------------------------------------------------------

/// `forward(x: f32[B, 3]) -> (x + b) * (x + b)` with `b: f32[3]`.
fn model() -> Module {
    use common::{function, param, sym};
    let mut f = function("forward", &[("x", sym(DType::F32, &["B", "3"]), None)], &["B"]);
    f.output_names = vec!["y".into()];
    let g = &mut f.graph;
    let t = |d| sym(d, &["B", "3"]);
    let x = g.push_tensor(Op::Input { index: 0 }, vec![], t(DType::F32));
    let b = g.push_tensor(Op::Param { index: 0 }, vec![], sym(DType::F32, &["3"]));
    let bb = g.push_tensor(Op::Broadcast, vec![b], t(DType::F32));
    let s = g.push_tensor(Op::Binary(BinaryOp::Add), vec![x, bb], t(DType::F32));
    let y = g.push_tensor(Op::Binary(BinaryOp::Mul), vec![s, s], t(DType::F32));
    g.outputs = vec![y];
    Module { params: vec![param("b", DType::F32, &[3], Init::Constant(0.5))], functions: vec![f] }
}

#[test]
fn run_cpu_matches_the_reference_and_caches() {
    let m = model();
    let f = &m.functions[0];
    let params = kiln_runtime::init_params(&m, 0).unwrap();
    let cache = Cache::with_pool(Arc::new(Pool::with_threads(2).unwrap()), Default::default());
    for (b, cached) in [(2usize, false), (5, false), (2, true)] {
        let x = tensor(DType::F32, &[b, 3], ramp(b * 3));
        let dims = BTreeMap::from([("B".to_string(), b as i64)]);
        let want = run_reference(&m, f, &params, std::slice::from_ref(&x), &dims, Precision::F32).unwrap();
        let (got, stats) = run_cpu(&m, f, &params, &[x], &dims, &cache).unwrap();
        assert_eq!(got[0].shape, want[0].shape);
        assert!(got[0].max_abs_diff(&want[0]) < 1e-5, "{} vs {}", got[0], want[0]);
        assert!(stats.launches >= 1);
        assert_eq!(stats.cached, cached);
    }
    assert_eq!(cache.len(), 2);
}

#[test]
fn scheduler_errors_are_internal_errors() {
    let m = model();
    let cache = Cache::new();
    let x = tensor(DType::F32, &[2, 3], ramp(6));
    let params = kiln_runtime::init_params(&m, 0).unwrap();
    let err = run_cpu(&m, &m.functions[0], &params, &[x], &BTreeMap::new(), &cache).unwrap_err();
    assert!(matches!(err, RuntimeError::Internal { .. }), "{err}");
    assert!(err.to_string().contains("the scheduler for `forward`"), "{err}");
    assert!(cache.is_empty());
}
