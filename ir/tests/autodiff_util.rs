//! Shared helpers of the autodiff tests: graph construction shorthands, a
//! seeded value generator and the finite-difference gradient check.
//!
//! The other `autodiff_*.rs` suites include this file as a module; compiled
//! on its own it is an empty test target.
#![allow(dead_code)]

use kiln_ir::autodiff::{grad, ParamSet, Wrt};
use kiln_ir::interp::{self, Precision, Tensor};
use kiln_ir::{
    verify, BinaryOp, DType, DimExpr, Function, Graph, Init, Module, Op, Param, ReduceOp, TensorType, Type, UnaryOp,
    ValueId,
};

/// A constant dim.
pub fn d(n: i64) -> DimExpr {
    DimExpr::constant(n)
}

/// A dim variable.
pub fn var(name: &str) -> DimExpr {
    DimExpr::var(name)
}

/// An f32 type of constant shape.
pub fn f32t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape.iter().map(|&n| d(n)).collect())
}

/// A type of constant shape.
pub fn tyc(dtype: DType, shape: &[i64]) -> TensorType {
    TensorType::new(dtype, shape.iter().map(|&n| d(n)).collect())
}

/// `usize` shape to `i64`.
pub fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&n| n as i64).collect()
}

/// SplitMix64: a tiny seeded generator, so proptest only has to pick seeds.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }

    /// `|x|` uniform in `[lo, hi)`, random sign: keeps away from kinks at 0.
    pub fn away(&mut self, lo: f64, hi: f64) -> f64 {
        let m = self.uniform(lo, hi);
        if self.next_u64() & 1 == 0 {
            m
        } else {
            -m
        }
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A tensor with elements drawn by `gen`.
    pub fn tensor(&mut self, dtype: DType, shape: &[usize], mut gen: impl FnMut(&mut Gen) -> f64) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| gen(self)).collect();
        Tensor::new(dtype, shape.to_vec(), data)
    }

    /// An f32 tensor uniform in `[lo, hi)`.
    pub fn f32s(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        self.tensor(DType::F32, shape, |r| r.uniform(lo, hi))
    }

    /// Distinct values (at least 0.25 apart) in random order: reductions
    /// that pick a maximum stay away from ties.
    pub fn distinct(&mut self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let mut v: Vec<f64> = (0..n).map(|i| i as f64 * 0.3 - n as f64 * 0.15 + self.uniform(0.0, 0.05)).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
        Tensor::new(DType::F32, shape.to_vec(), v)
    }

    /// Integer indices below `bound`.
    pub fn ints(&mut self, dtype: DType, shape: &[usize], bound: usize) -> Tensor {
        self.tensor(dtype, shape, |r| r.below(bound) as f64)
    }
}

/// A graph builder for tests: inputs are added as they are needed, with
/// the value passed for each.
pub struct Gb {
    pub g: Graph,
    pub names: Vec<String>,
    pub bounds: Vec<Option<DimExpr>>,
    pub values: Vec<Tensor>,
}

impl Default for Gb {
    fn default() -> Self {
        Self::new()
    }
}

impl Gb {
    pub fn new() -> Gb {
        Gb { g: Graph::default(), names: Vec::new(), bounds: Vec::new(), values: Vec::new() }
    }

    /// Adds an argument of type `ty` with the value `t` used in checks.
    pub fn input(&mut self, name: &str, ty: TensorType, t: Tensor) -> ValueId {
        let index = self.g.inputs.len() as u32;
        self.g.inputs.push(ty.clone());
        self.names.push(name.to_string());
        self.bounds.push(None);
        self.values.push(t);
        self.g.push_tensor(Op::Input { index }, vec![], ty)
    }

    /// An integer argument with an index bound.
    pub fn index_input(&mut self, name: &str, ty: TensorType, bound: DimExpr, t: Tensor) -> ValueId {
        let v = self.input(name, ty, t);
        *self.bounds.last_mut().unwrap() = Some(bound);
        v
    }

    pub fn ty(&self, v: ValueId) -> TensorType {
        self.g.tensor_type(v).clone()
    }

    pub fn shape(&self, v: ValueId) -> Vec<DimExpr> {
        self.ty(v).shape
    }

    pub fn push(&mut self, op: Op, args: Vec<ValueId>, ty: TensorType) -> ValueId {
        self.g.push_tensor(op, args, ty)
    }

    pub fn param(&mut self, m: &Module, index: u32) -> ValueId {
        let ty = m.params[index as usize].ty.clone();
        self.push(Op::Param { index }, vec![], ty)
    }

    pub fn konst(&mut self, value: f64, dtype: DType) -> ValueId {
        self.push(Op::Const { value }, vec![], TensorType::scalar(dtype))
    }

    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> ValueId {
        let t = self.ty(x);
        self.push(Op::Unary(op), vec![x], t)
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        let t = self.ty(a);
        self.push(Op::Binary(op), vec![a, b], t)
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn broadcast(&mut self, x: ValueId, shape: &[DimExpr]) -> ValueId {
        let t = TensorType::new(self.ty(x).dtype, shape.to_vec());
        self.push(Op::Broadcast, vec![x], t)
    }

    /// `x + b` with `b` broadcast to `x`'s shape.
    pub fn add_bcast(&mut self, x: ValueId, b: ValueId) -> ValueId {
        let s = self.shape(x);
        let bb = self.broadcast(b, &s);
        self.add(x, bb)
    }

    pub fn reshape(&mut self, x: ValueId, shape: &[DimExpr]) -> ValueId {
        let t = TensorType::new(self.ty(x).dtype, shape.to_vec());
        self.push(Op::Reshape, vec![x], t)
    }

    pub fn transpose(&mut self, x: ValueId, perm: &[u32]) -> ValueId {
        let s = self.shape(x);
        let t = TensorType::new(self.ty(x).dtype, perm.iter().map(|&p| s[p as usize].clone()).collect());
        self.push(Op::Transpose { perm: perm.to_vec() }, vec![x], t)
    }

    pub fn reduce(&mut self, op: ReduceOp, x: ValueId, axes: &[u32], keepdim: bool) -> ValueId {
        let t = self.ty(x);
        let mut shape = Vec::new();
        for (i, dm) in t.shape.iter().enumerate() {
            if !axes.contains(&(i as u32)) {
                shape.push(dm.clone());
            } else if keepdim {
                shape.push(d(1));
            }
        }
        let dtype = if op == ReduceOp::ArgMax { DType::I64 } else { t.dtype };
        self.push(Op::Reduce { op, axes: axes.to_vec(), keepdim }, vec![x], TensorType::new(dtype, shape))
    }

    /// Sum over all axes.
    pub fn sum_all(&mut self, x: ValueId) -> ValueId {
        let r = self.ty(x).rank() as u32;
        self.reduce(ReduceOp::Sum, x, &(0..r).collect::<Vec<_>>(), false)
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let (ta, tb) = (self.ty(a), self.ty(b));
        let mut shape = ta.shape[..ta.rank() - 1].to_vec();
        shape.push(tb.shape[tb.rank() - 1].clone());
        self.push(Op::MatMul, vec![a, b], TensorType::new(ta.dtype, shape))
    }

    pub fn slice(&mut self, x: ValueId, axis: u32, start: DimExpr, end: DimExpr, step: u32, out: DimExpr) -> ValueId {
        let mut t = self.ty(x);
        t.shape[axis as usize] = out;
        self.push(Op::Slice { axis, start, end, step }, vec![x], t)
    }

    /// `Σ (y ⊙ w)` for a fresh random argument `w` (not differentiated):
    /// a random projection of `y`, so every element of `y` matters.
    pub fn project(&mut self, y: ValueId, rng: &mut Gen, concrete: &[usize]) -> ValueId {
        let t = self.ty(y);
        let w = rng.tensor(t.dtype, concrete, |r| r.uniform(-1.0, 1.0));
        let wv = self.input("w", t, w);
        let p = self.mul(y, wv);
        self.sum_all(p)
    }

    /// The function `name` returning `loss`.
    pub fn finish(self, name: &str, loss: ValueId) -> (Function, Vec<Tensor>) {
        let mut g = self.g;
        g.outputs = vec![loss];
        let dim_vars = Vec::new();
        let f = Function {
            name: name.to_string(),
            arg_names: self.names,
            arg_ignore: vec![None; self.bounds.len()],
            arg_bounds: self.bounds,
            output_names: vec!["loss".into()],
            dim_vars,
            constraints: Vec::new(),
            graph: g,
        };
        (f, self.values)
    }
}

/// A module with parameters of these names and types (normal init).
pub fn module(params: &[(&str, TensorType)]) -> Module {
    Module {
        params: params
            .iter()
            .map(|(n, t)| Param {
                name: n.to_string(),
                ty: t.clone(),
                init: Init::Normal { mean: 0.0, std: 1.0 },
                stack: None,
            })
            .collect(),
        functions: Vec::new(),
    }
}

/// Everything a gradient check needs.
pub struct Problem {
    pub m: Module,
    pub f: Function,
    pub dims: Vec<(String, i64)>,
    pub params: Vec<Tensor>,
    pub inputs: Vec<Tensor>,
}

impl Problem {
    pub fn new(m: Module, f: Function, params: Vec<Tensor>, inputs: Vec<Tensor>) -> Problem {
        Problem { m, f, dims: Vec::new(), params, inputs }
    }

    pub fn with_dims(mut self, dims: &[(&str, i64)]) -> Problem {
        self.dims = dims.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        self
    }

    fn run(&self, g: &Graph, params: &[Tensor], inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let env = |n: &str| self.dims.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        interp::run(&self.m, g, &env, params, inputs, Precision::F64).map_err(|e| e.to_string())
    }

    fn loss(&self, params: &[Tensor], inputs: &[Tensor]) -> Result<f64, String> {
        Ok(self.run(&self.f.graph, params, inputs)?[0].data[0])
    }
}

/// Finite-difference step.
pub const H: f64 = 1e-6;
/// Relative tolerance of the check.
pub const REL: f64 = 1e-5;

/// Is `ad` (autodiff) close to `fd` (central difference)? Relative error
/// at most [`REL`], plus an absolute floor for the difference quotient's
/// rounding error, which scales with the loss's magnitude (about
/// `eps * |loss| / h`).
pub fn close(ad: f64, fd: f64, loss: f64) -> bool {
    ad.is_finite() && (ad - fd).abs() <= REL * ad.abs().max(fd.abs()) + 1e-8 * (1.0 + loss.abs())
}

/// Builds the gradient of `p.f`, verifies it, runs it, and compares every
/// gradient element with a central finite difference in f64. Returns the
/// gradient function's outputs.
pub fn check(p: &Problem, wrt: &Wrt) -> Result<Vec<Tensor>, String> {
    let gf = grad(&p.m, &p.f, wrt).map_err(|e| format!("grad failed: {e}"))?;
    verify::function(&p.m, &gf).map_err(|e| format!("gradient does not verify: {e}"))?;
    let outs = p
        .run(&gf.graph, &p.params, &p.inputs)
        .map_err(|e| format!("gradient graph failed: {e}\n{}", kiln_ir::print::function(&p.m, &gf)))?;
    let loss = p.loss(&p.params, &p.inputs)?;
    if (outs[0].data[0] - loss).abs() > 1e-12 * (1.0 + loss.abs()) {
        return Err(format!("loss {} differs from the forward's {loss}", outs[0].data[0]));
    }
    let params: Vec<u32> = match &wrt.params {
        ParamSet::All => (0..p.m.params.len() as u32).collect(),
        ParamSet::Only(v) => v.clone(),
    };
    let mut k = 1;
    for &pi in &params {
        let got = &outs[k];
        k += 1;
        let want = &p.params[pi as usize];
        if got.shape != want.shape || got.dtype != want.dtype {
            return Err(format!(
                "grad of param {pi} is {}{:?}, param is {}{:?}",
                got.dtype, got.shape, want.dtype, want.shape
            ));
        }
        for e in 0..want.data.len() {
            let fd = fd(p, At::Param(pi as usize, e))?;
            if !close(got.data[e], fd, loss) {
                return Err(format!(
                    "param `{}` element {e}: autodiff {:e}, finite difference {:e} (loss {loss})",
                    p.m.params[pi as usize].name, got.data[e], fd
                ));
            }
        }
    }
    for &ii in &wrt.inputs {
        let got = &outs[k];
        k += 1;
        let want = &p.inputs[ii as usize];
        if got.shape != want.shape {
            return Err(format!("grad of input {ii} has shape {:?}, input {:?}", got.shape, want.shape));
        }
        for e in 0..want.data.len() {
            let fd = fd(p, At::Input(ii as usize, e))?;
            if !close(got.data[e], fd, loss) {
                return Err(format!(
                    "input `{}` element {e}: autodiff {:e}, finite difference {:e} (loss {loss})",
                    p.f.arg_names[ii as usize], got.data[e], fd
                ));
            }
        }
    }
    Ok(outs)
}

/// One element of a parameter or an input: (tensor index, element).
#[derive(Clone, Copy)]
enum At {
    Param(usize, usize),
    Input(usize, usize),
}

fn slot<'a>(ps: &'a mut [Tensor], is: &'a mut [Tensor], at: At) -> &'a mut f64 {
    match at {
        At::Param(t, e) => &mut ps[t].data[e],
        At::Input(t, e) => &mut is[t].data[e],
    }
}

/// The central difference of the loss in the element `at`.
fn fd(p: &Problem, at: At) -> Result<f64, String> {
    let (mut ps, mut is) = (p.params.clone(), p.inputs.clone());
    let x0 = *slot(&mut ps, &mut is, at);
    *slot(&mut ps, &mut is, at) = x0 + H;
    let up = p.loss(&ps, &is)?;
    *slot(&mut ps, &mut is, at) = x0 - H;
    let down = p.loss(&ps, &is)?;
    Ok((up - down) / (2.0 * H))
}

/// Checks the gradient with respect to inputs `wrt_inputs` (no params).
pub fn check_inputs(p: &Problem, wrt_inputs: &[u32]) -> Result<Vec<Tensor>, String> {
    check(p, &Wrt::no_params().with_inputs(wrt_inputs.iter().copied()))
}

/// Shorthand: a `Type::Tuple`.
pub fn tuple(ts: Vec<TensorType>) -> Type {
    Type::Tuple(ts)
}
