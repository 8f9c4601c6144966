//! Fused attention (FlashAttention kernels) against the f64 reference.
//!
//! Each case builds two entry points over the same inputs: `fwd` returns
//! `(o, lse)`, `loss = Σ o ∘ w` is differentiated by autodiff (its VJP is
//! one `attention_grad` node) for `dq, dk, dv`. The fused kernels on the
//! CPU backend must be as accurate as FlashAttention's own criterion asks:
//! error against the f64 interpreter at most twice the error of the naive
//! f32 graph (matmul, softmax, select) on the same backend, plus 1e-6.
//! At tiny shapes the scheduled program also runs on the kernel IR's
//! evaluator.

use kiln_codegen::ptx::Arch;
use kiln_ir::autodiff::{grad, Wrt};
use kiln_ir::interp::{Precision, Tensor};
use kiln_ir::schedule::{schedule, AttnBackward, ScheduleOptions};
use kiln_ir::{AttnMask, AttnVariant, Attention, BinaryOp, CmpOp, DType, DimExpr, Function, Graph, Module, Op, ReduceOp, TensorType, Type, UnaryOp, ValueId};
use kiln_runtime::{Cache, Pool};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug)]
struct Case {
    b: usize,
    hkv: usize,
    group: usize,
    sq: usize,
    sk: usize,
    d: usize,
    /// Causal offset, when causal.
    causal: Option<i64>,
    mask: AttnMask,
    variant: AttnVariant,
    /// q, k, v arrive as `[B, S, H, D]` transposed to `[B, H, S, D]`.
    bshd: bool,
    /// Forced block sizes.
    blocks: (u64, u64),
    /// The backward schedule (forced where blocks are).
    backward: AttnBackward,
    seed: u64,
    /// Dropout on the probabilities (0 for none); its seed is the last input.
    dropout: f64,
    /// Rows and keys a bias mask hides with a large finite value.
    fill: Option<Fill>,
}

/// A bias mask that hides with a large finite value (−1e9, or `f32::MIN`
/// as Hugging Face models pad) instead of `-inf`: the first `pad` keys
/// (left padding: with a causal mask, the first queries see nothing) and
/// every third query row from row 1 entirely.
#[derive(Clone, Copy, Debug)]
struct Fill {
    bias: f64,
    pad: usize,
}

impl Case {
    fn hq(&self) -> usize {
        self.hkv * self.group
    }

    fn scale(&self) -> f64 {
        1.0 / (self.d as f64).sqrt()
    }
}

fn dims(v: &[usize]) -> Vec<DimExpr> {
    v.iter().map(|&x| DimExpr::constant(x as i64)).collect()
}

/// A graph under construction; each helper derives its result's type.
struct G {
    g: Graph,
}

impl G {
    fn ty(&self, v: ValueId) -> TensorType {
        self.g.tensor_type(v).clone()
    }

    fn shape(&self, v: ValueId) -> Vec<DimExpr> {
        self.ty(v).shape
    }

    fn input(&mut self, dtype: DType, shape: &[usize]) -> ValueId {
        let t = TensorType::new(dtype, dims(shape));
        let index = self.g.inputs.len() as u32;
        self.g.inputs.push(t.clone());
        self.g.push_tensor(Op::Input { index }, vec![], t)
    }

    fn op(&mut self, op: Op, args: Vec<ValueId>, dtype: DType, shape: Vec<DimExpr>) -> ValueId {
        self.g.push_tensor(op, args, TensorType::new(dtype, shape))
    }

    fn like(&mut self, op: Op, args: Vec<ValueId>) -> ValueId {
        let t = self.ty(args[args.len() - 1]);
        self.g.push_tensor(op, args, t)
    }

    fn bcast(&mut self, x: ValueId, shape: &[DimExpr]) -> ValueId {
        let d = self.ty(x).dtype;
        self.op(Op::Broadcast, vec![x], d, shape.to_vec())
    }

    fn reshape(&mut self, x: ValueId, shape: &[DimExpr]) -> ValueId {
        let d = self.ty(x).dtype;
        self.op(Op::Reshape, vec![x], d, shape.to_vec())
    }

    fn transpose(&mut self, x: ValueId, perm: &[u32]) -> ValueId {
        let s = self.shape(x);
        let d = self.ty(x).dtype;
        self.op(Op::Transpose { perm: perm.to_vec() }, vec![x], d, perm.iter().map(|&p| s[p as usize].clone()).collect())
    }

    fn constant(&mut self, v: f64, like: ValueId) -> ValueId {
        let d = self.ty(like).dtype;
        let c = self.op(Op::Const { value: v }, vec![], d, vec![]);
        let s = self.shape(like);
        self.bcast(c, &s)
    }

    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        self.like(Op::Binary(op), vec![a, b])
    }

    fn matmul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let mut s = sa[..sa.len() - 1].to_vec();
        s.push(sb[sb.len() - 1].clone());
        let d = self.ty(a).dtype;
        self.op(Op::MatMul, vec![a, b], d, s)
    }

    fn reduce(&mut self, op: ReduceOp, x: ValueId, axis: u32, keepdim: bool) -> ValueId {
        let mut s = self.shape(x);
        if keepdim {
            s[axis as usize] = DimExpr::constant(1);
        } else {
            s.remove(axis as usize);
        }
        let d = self.ty(x).dtype;
        self.op(Op::Reduce { op, axes: vec![axis], keepdim }, vec![x], d, s)
    }

    fn extract(&mut self, t: ValueId, index: u32) -> ValueId {
        let Type::Tuple(ts) = &self.g.node(t).ty else { panic!("not a tuple") };
        let ty = ts[index as usize].clone();
        self.g.push(Op::Extract { index }, vec![t], Type::Tensor(ty))
    }
}

/// The inputs `q, k, v[, mask]` as `[B, H, S, D]` values, the mask as a
/// broadcast view at the scores' shape.
fn operands(c: &Case, g: &mut G, dtype: DType) -> Vec<ValueId> {
    let (b, hq, hkv) = (c.b, c.hq(), c.hkv);
    let head = |g: &mut G, h: usize, s: usize| {
        if c.bshd {
            let x = g.input(dtype, &[b, s, h, c.d]);
            g.transpose(x, &[0, 2, 1, 3])
        } else {
            g.input(dtype, &[b, h, s, c.d])
        }
    };
    let mut v = vec![head(g, hq, c.sq), head(g, hkv, c.sk), head(g, hkv, c.sk)];
    let scores = dims(&[b, hq, c.sq, c.sk]);
    match c.mask {
        AttnMask::None => {}
        AttnMask::Bias => {
            // A relative-position bias shared by batch and heads.
            let m = g.input(dtype, &[c.sq, c.sk]);
            v.push(g.bcast(m, &scores));
        }
        AttnMask::Keep => {
            // Key padding per batch row.
            let m = g.input(DType::Bool, &[b, c.sk]);
            let m = g.reshape(m, &dims(&[b, 1, 1, c.sk]));
            v.push(g.bcast(m, &scores));
        }
    }
    if c.dropout != 0.0 {
        v.push(g.input(DType::I64, &[]));
    }
    v
}

fn attention(c: &Case) -> Attention {
    Attention {
        scale: c.scale(),
        causal: c.causal.map(DimExpr::constant),
        mask: c.mask,
        group: c.group as u32,
        dropout: c.dropout,
        variant: c.variant,
    }
}

/// `(o, lse)` from the fused node or from plain math.
fn forward(c: &Case, g: &mut G, args: &[ValueId], fused: bool) -> (ValueId, ValueId) {
    if fused {
        let a = attention(c);
        let tys = a.forward_types(&args.iter().map(|&x| g.g.tensor_type(x)).collect::<Vec<_>>()).expect("types");
        let t = g.g.push(Op::Attention(Box::new(a)), args.to_vec(), Type::Tuple(tys));
        return (g.extract(t, 0), g.extract(t, 1));
    }
    let (b, hq, hkv, grp) = (c.b, c.hq(), c.hkv, c.group);
    // GQA: each key/value head repeated for its group of query heads.
    let expand = |g: &mut G, x: ValueId| {
        if grp == 1 {
            return x;
        }
        let x = g.reshape(x, &dims(&[b, hkv, 1, c.sk, c.d]));
        let x = g.bcast(x, &dims(&[b, hkv, grp, c.sk, c.d]));
        g.reshape(x, &dims(&[b, hq, c.sk, c.d]))
    };
    let (q, k, v) = (args[0], expand(g, args[1]), expand(g, args[2]));
    let kt = g.transpose(k, &[0, 1, 3, 2]);
    let s = g.matmul(q, kt);
    let scale = g.constant(c.scale(), s);
    let mut s = g.bin(BinaryOp::Mul, s, scale);
    let ninf = g.constant(f64::NEG_INFINITY, s);
    match c.mask {
        AttnMask::None => {}
        AttnMask::Bias => s = g.bin(BinaryOp::Add, s, args[3]),
        AttnMask::Keep => s = g.like(Op::Select, vec![args[3], s, ninf]),
    }
    if let Some(off) = c.causal {
        let sd = dims(&[c.sq, c.sk]);
        let i = g.op(Op::Iota { axis: 0 }, vec![], DType::I64, sd.clone());
        let j = g.op(Op::Iota { axis: 1 }, vec![], DType::I64, sd.clone());
        let off = g.constant(off as f64, i);
        let lim = g.bin(BinaryOp::Add, i, off);
        let hidden = g.op(Op::Compare(CmpOp::Gt), vec![j, lim], DType::Bool, sd);
        let full = g.shape(s);
        let hidden = g.bcast(hidden, &full);
        s = g.like(Op::Select, vec![hidden, ninf, s]);
    }
    let mut p = g.like(Op::Softmax { axis: 3 }, vec![s]);
    if c.dropout != 0.0 {
        let seed = args[args.len() - 1];
        let (d, shape) = (g.ty(p).dtype, g.shape(p));
        p = g.op(Op::Dropout { p: c.dropout }, vec![p, seed], d, shape);
    }
    let o = g.matmul(p, v);
    let m = g.reduce(ReduceOp::Max, s, 3, true);
    let full = g.shape(s);
    let mb = g.bcast(m, &full);
    let e = g.bin(BinaryOp::Sub, s, mb);
    let e = g.like(Op::Unary(UnaryOp::Exp), vec![e]);
    let sum = g.reduce(ReduceOp::Sum, e, 3, false);
    let log = g.like(Op::Unary(UnaryOp::Log), vec![sum]);
    // lse = [m, log l] per row, the fused node's layout.
    let mut pair = g.shape(m);
    let log = g.reshape(log, &pair);
    *pair.last_mut().expect("rank") = DimExpr::constant(2);
    let lse = g.op(Op::Concat { axis: 3 }, vec![m, log], g.ty(m).dtype, pair);
    (o, lse)
}

fn function(name: &str, g: Graph, outputs: &[&str]) -> Function {
    let n = g.inputs.len();
    Function {
        name: name.into(),
        arg_names: (0..n).map(|i| format!("x{i}")).collect(),
        arg_bounds: vec![None; n],
        arg_ignore: vec![None; n],
        output_names: outputs.iter().map(|s| s.to_string()).collect(),
        dim_vars: vec![],
        constraints: vec![],
        graph: g,
    }
}

/// `fwd -> (o, lse)` and `loss_grad -> (loss, dq, dk, dv)`, fused or naive.
fn module(c: &Case, fused: bool, dtype: DType) -> Module {
    let mut g = G { g: Graph::default() };
    let args = operands(c, &mut g, dtype);
    let (o, lse) = forward(c, &mut g, &args, fused);
    g.g.outputs = vec![o, lse];
    let fwd = function("fwd", g.g, &["o", "lse"]);
    let mut g = G { g: Graph::default() };
    let args = operands(c, &mut g, dtype);
    let (o, _) = forward(c, &mut g, &args, fused);
    let shape: Vec<usize> = g.shape(o).iter().map(|d| d.eval(&|_| None).expect("constant") as usize).collect();
    let w = g.input(dtype, &shape);
    let ow = g.bin(BinaryOp::Mul, o, w);
    let flat = g.reshape(ow, &dims(&[shape.iter().product()]));
    let loss = g.reduce(ReduceOp::Sum, flat, 0, false);
    g.g.outputs = vec![loss];
    let lossf = function("loss", g.g, &["loss"]);
    let mut m = Module { params: vec![], functions: vec![fwd, lossf] };
    let gf = grad(&m, &m.functions[1], &Wrt::no_params().with_inputs([0, 1, 2])).expect("grad");
    m.functions.push(gf);
    m
}

/// Deterministic values in [-0.5, 0.5), per input (gradients then stay
/// near 1, where the criterion's 1e-6 slack is a few f32 ulps); key 0 of
/// every mask row is kept so no row is fully masked by `-inf`. A bias
/// mask (input 3) hides what `c.fill` says with its large value (plus
/// the random one, which rounding may absorb).
fn inputs(c: &Case, f: &Function) -> Vec<Tensor> {
    let mut state = c.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    f.graph
        .inputs
        .iter()
        .enumerate()
        .map(|(x, t)| {
            let shape: Vec<usize> = t.shape.iter().map(|d| d.eval(&|_| None).expect("constant") as usize).collect();
            let n: usize = shape.iter().product();
            let last = shape.last().copied().unwrap_or(1);
            let fill = c.fill.filter(|_| x == 3 && c.mask == AttnMask::Bias);
            let hidden = |i: usize| fill.is_some_and(|f| i % last < f.pad || (i / last) % 3 == 1);
            let data = (0..n)
                .map(|i| match t.dtype {
                    DType::Bool => (i % last == 0 || next() > -0.2) as u8 as f64,
                    DType::I64 => (c.seed % kiln_ir::rng::SEED_LIMIT) as f64,
                    d if hidden(i) => d.round(fill.expect("hidden").bias + next()),
                    d => d.round(next()),
                })
                .collect();
            Tensor::new(t.dtype, shape, data)
        })
        .collect()
}

/// Runs on the CPU backend; `forced` imposes a case's block sizes and
/// backward schedule (else the cost model and the rule choose).
fn cpu(m: &Module, f: &Function, inputs: &[Tensor], forced: Option<&Case>) -> Vec<Tensor> {
    let opts = match forced {
        Some(c) => options(c),
        None => ScheduleOptions::default(),
    };
    let cache = Cache::with_pool(Arc::new(Pool::global()), opts);
    kiln_runtime::run_cpu(m, f, &[], inputs, &BTreeMap::new(), &cache).expect("cpu").0
}

/// Scheduler options that force `c`'s block sizes and backward schedule.
fn options(c: &Case) -> ScheduleOptions {
    ScheduleOptions { attention_blocks: Some(c.blocks), attention_backward: Some(c.backward), ..Default::default() }
}

fn reference(m: &Module, f: &Function, inputs: &[Tensor]) -> Vec<Tensor> {
    kiln_runtime::run_reference(m, f, &[], inputs, &BTreeMap::new(), Precision::F64).expect("reference")
}

fn max_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape, want.shape);
    got.data.iter().zip(&want.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Fused vs naive, both on the CPU backend, against the f64 reference of
/// the naive graph; the reference's fused node agrees with that to f64
/// rounding.
fn check(c: &Case) {
    let fused = module(c, true, DType::F32);
    let naive = module(c, false, DType::F32);
    // The loss itself (a long sum) is not an attention output.
    for (fi, names) in [(0usize, &["o", "lse"][..]), (2, &["", "dq", "dk", "dv"][..])] {
        let (ff, nf) = (&fused.functions[fi], &naive.functions[fi]);
        let x = inputs(c, ff);
        let want = reference(&naive, nf, &x);
        // (A −1e9 bias leaves scores a 1e-7 f64 ulp apart: 1e-6.)
        for (k, (r, w)) in reference(&fused, ff, &x).iter().zip(&want).enumerate().skip(fi / 2) {
            let bad = r.data.iter().zip(&w.data).position(|(p, q)| !(p.is_nan() && q.is_nan()) && !((p - q).abs() <= 1e-6 * (1.0 + p.abs().max(q.abs()))));
            assert!(bad.is_none(), "{}: the reference's fused node gives {} at {bad:?}, the naive graph {} in {c:?}", names[k], r.data[bad.unwrap_or(0)], w.data[bad.unwrap_or(0)]);
        }
        let got = cpu(&fused, ff, &x, Some(c));
        let base = cpu(&naive, nf, &x, None);
        for (k, name) in names.iter().enumerate().filter(|(_, n)| !n.is_empty()) {
            let (e, en) = (max_err(&got[k], &want[k]), max_err(&base[k], &want[k]));
            assert!(e.is_finite() && e <= 2.0 * en + 1e-6, "{name}: fused error {e:e} vs naive {en:e} in {c:?}");
        }
    }
}

fn backward() -> impl Strategy<Value = AttnBackward> {
    prop_oneof![Just(AttnBackward::OnePass), Just(AttnBackward::Split)]
}

fn variant() -> impl Strategy<Value = AttnVariant> {
    prop_oneof![Just(AttnVariant::Fa1), Just(AttnVariant::Fa2)]
}

fn mask() -> impl Strategy<Value = AttnMask> {
    prop_oneof![Just(AttnMask::None), Just(AttnMask::Bias), Just(AttnMask::Keep)]
}

fn case() -> impl Strategy<Value = Case> {
    (1..=2usize, 1..=2usize, 1..=3usize, 1..=19usize, 1..=23usize, prop::sample::select(vec![16usize, 32, 64, 80, 96, 128]))
        .prop_flat_map(|(b, hkv, group, sq, sk, d)| {
            let causal = prop_oneof![Just(None), Just(Some(0)), Just(Some(sk as i64 - sq as i64).filter(|c| *c >= 0))];
            let dropout = prop_oneof![Just(0.0), Just(0.1), Just(0.5)];
            (Just((b, hkv, group, sq, sk, d)), causal, mask(), variant(), any::<bool>(), (1..=8u64, 1..=8u64), backward(), any::<u64>(), dropout)
        })
        .prop_map(|((b, hkv, group, sq, sk, d), causal, mask, variant, bshd, blocks, backward, seed, dropout)| Case { b, hkv, group, sq, sk, d, causal, mask, variant, bshd, blocks, backward, seed, dropout, fill: None })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn fused_attention_is_as_accurate_as_the_naive_graph(c in case()) {
        check(&c);
    }
}

/// Cases whose bias hides keys and whole rows with −1e9 or `f32::MIN`,
/// also as left padding under a causal mask.
fn filled_case() -> impl Strategy<Value = Case> {
    let bias = prop_oneof![Just(-1e9), Just(f64::from(f32::MIN))];
    (case(), bias, 0..=3usize).prop_map(|(c, bias, pad)| Case { mask: AttnMask::Bias, fill: Some(Fill { bias, pad }), ..c })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn large_finite_biases_are_as_accurate_as_the_naive_graph(c in filled_case()) {
        check(&c);
    }
}

/// One batch row of GQA attention whose bias hides every key with `bias`
/// (`f32::MIN`, or −1e9 with small scores: both round every f32 score to
/// the same value), so each row's softmax is uniform.
fn hidden_case(bias: f64, variant: AttnVariant, backward: AttnBackward) -> Case {
    let fill = Some(Fill { bias, pad: 5 });
    Case { b: 1, hkv: 2, group: 2, sq: 3, sk: 5, d: 16, causal: None, mask: AttnMask::Bias, variant, bshd: false, blocks: (2, 2), backward, seed: 9, dropout: 0.0, fill }
}

/// What a uniform softmax gives by hand, from the gradient's inputs
/// `q, k, v, bias, w` (`do = w`): `o` is the mean of `v`, and every key of
/// a key/value head gets `dv = Σ w / Sk` over the rows of its query heads.
fn uniform_oracle(c: &Case, x: &[Tensor]) -> (Vec<f64>, Vec<f64>) {
    let (v, w, d) = (&x[2].data, &x[4].data, c.d);
    let mut o = vec![0.0; c.hq() * c.sq * d];
    let mut dv = vec![0.0; c.hkv * c.sk * d];
    for h in 0..c.hq() {
        let kh = h / c.group;
        for i in 0..c.sq {
            for e in 0..d {
                o[(h * c.sq + i) * d + e] = (0..c.sk).map(|j| v[(kh * c.sk + j) * d + e]).sum::<f64>() / c.sk as f64;
                for j in 0..c.sk {
                    dv[(kh * c.sk + j) * d + e] += w[(h * c.sq + i) * d + e] / c.sk as f64;
                }
            }
        }
    }
    (o, dv)
}

/// Asserts `got` is within `tol` of the hand-computed `want`.
fn assert_near(what: &str, got: &Tensor, want: &[f64], tol: f64) {
    assert_eq!(got.data.len(), want.len(), "{what}");
    let (i, e) = got.data.iter().zip(want).map(|(a, b)| (a - b).abs()).enumerate().fold((0, 0.0), |m, (i, e)| if !(e <= m.1) { (i, e) } else { m });
    assert!(e <= tol, "{what}: error {e:e} > {tol:e}: {} vs {} at {i}", got.data[i], want[i]);
}

/// The reference's fused node on rows hidden by `f32::MIN`: the mean of
/// `v` and its gradient, as the naive softmax gives (it once returned `Σv`
/// and `Sk`-fold gradients: `m + log Sk` rounds to `m` next to 3.4e38, even
/// in f64).
#[test]
fn reference_rows_under_a_min_bias_are_the_mean_of_v() {
    let c = hidden_case(f64::from(f32::MIN), AttnVariant::Fa2, AttnBackward::OnePass);
    let m = module(&c, true, DType::F32);
    let x = inputs(&c, &m.functions[2]);
    let (o, dv) = uniform_oracle(&c, &x);
    assert_near("o", &reference(&m, &m.functions[0], &x[..4])[0], &o, 1e-12);
    assert_near("dv", &reference(&m, &m.functions[2], &x)[3], &dv, 1e-12);
}

/// The CPU kernels (FA1 and FA2 forward, one-pass and split backward) on
/// rows hidden by −1e9 and by `f32::MIN`: the mean of `v` and a uniform
/// softmax's `dv` (the backward once recomputed `P` from `lse` rounded to
/// the row max, `Sk` times too large).
#[test]
fn cpu_rows_under_large_biases_are_the_mean_of_v() {
    for bias in [-1e9, f64::from(f32::MIN)] {
        for (variant, backward) in [(AttnVariant::Fa1, AttnBackward::OnePass), (AttnVariant::Fa2, AttnBackward::Split), (AttnVariant::Fa2, AttnBackward::OnePass)] {
            let c = hidden_case(bias, variant, backward);
            let m = module(&c, true, DType::F32);
            let x = inputs(&c, &m.functions[2]);
            let (o, dv) = uniform_oracle(&c, &x);
            let what = format!("{bias:e} {variant:?} {backward:?}");
            assert_near(&format!("o, {what}"), &cpu(&m, &m.functions[0], &x[..4], Some(&c))[0], &o, 1e-6);
            assert_near(&format!("dv, {what}"), &cpu(&m, &m.functions[2], &x, Some(&c))[3], &dv, 1e-5);
        }
    }
}

/// The PTX backend's generic attention kernels (a bias mask keeps them off
/// the flash kernels) in the emulator, f32 under `f32::MIN` and bf16 under
/// −1e9 (`f32::MIN` overflows bf16 to `-inf`): the same uniform rows.
#[test]
fn ptx_rows_under_large_biases_are_the_mean_of_v() {
    for (dtype, bias, tol) in [(DType::F32, f64::from(f32::MIN), 1e-5), (DType::BF16, -1e9, 3e-2)] {
        let c = hidden_case(bias, AttnVariant::Fa2, AttnBackward::Split);
        let m = module(&c, true, dtype);
        let x = inputs(&c, &m.functions[2]);
        let (o, dv) = uniform_oracle(&c, &x);
        for arch in [Arch::Sm80, Arch::Sm90a] {
            let run = |fi: usize, x: &[Tensor]| kiln_tests::backends::PtxEmu(arch).run_traced(&m, &m.functions[fi], &[], x, &BTreeMap::new()).expect("ptx-emu").0;
            assert_near(&format!("o, {dtype} {arch:?}"), &run(0, &x[..4])[0], &o, tol);
            assert_near(&format!("dv, {dtype} {arch:?}"), &run(2, &x)[3], &dv, tol);
        }
    }
}

/// The default (cost-model) block sizes at a length that spans several
/// blocks and leaves a partial one.
#[test]
fn default_blocks_at_a_longer_sequence() {
    for (variant, backward) in [(AttnVariant::Fa1, AttnBackward::OnePass), (AttnVariant::Fa2, AttnBackward::Split)] {
        let c = Case { b: 1, hkv: 2, group: 2, sq: 300, sk: 300, d: 64, causal: Some(0), mask: AttnMask::None, variant, bshd: true, blocks: (0, 0), backward, seed: 7, dropout: 0.0, fill: None };
        let fused = module(&c, true, DType::F32);
        let naive = module(&c, false, DType::F32);
        for fi in [0, 2] {
            // The score matrix never reaches memory, forward or backward.
            let opts = ScheduleOptions { attention_backward: Some(backward), ..Default::default() };
            let p = schedule(&fused, &fused.functions[fi], &|_| None, &opts).expect("schedule");
            let scores = (c.b * c.hq() * c.sq * c.sk) as u64;
            assert!(p.buffers.iter().all(|b| b.len < scores), "a score-sized buffer: {:?}", p.buffers);
            assert!(p.kernels.iter().any(|k| k.name.contains("attention")));
            let x = inputs(&c, &fused.functions[fi]);
            let want = reference(&fused, &fused.functions[fi], &x);
            let got = kiln_runtime::run_cpu(&fused, &fused.functions[fi], &[], &x, &BTreeMap::new(), &Cache::with_pool(Arc::new(Pool::global()), opts)).expect("cpu").0;
            let base = cpu(&naive, &naive.functions[fi], &x, None);
            for k in (fi / 2)..got.len() {
                let (e, en) = (max_err(&got[k], &want[k]), max_err(&base[k], &want[k]));
                assert!(e <= 2.0 * en + 1e-6, "output {k} of function {fi}: {e:e} vs naive {en:e}");
            }
        }
    }
}

/// A key-padding mask read four keys at a time (one 32-bit load per lane
/// group, then a scalar tail): 13 keys in blocks of 8, both variants and
/// both backward schedules, against the f64 reference.
#[test]
fn key_padding_masks_are_read_four_keys_at_a_time() {
    for (variant, backward, seed) in [(AttnVariant::Fa1, AttnBackward::OnePass, 3), (AttnVariant::Fa2, AttnBackward::Split, 4)] {
        let c = Case { b: 2, hkv: 1, group: 2, sq: 5, sk: 13, d: 16, causal: None, mask: AttnMask::Keep, variant, bshd: false, blocks: (4, 8), backward, seed, dropout: 0.0, fill: None };
        // Absolute tolerance: the naive graph reads the mask the same way.
        let (fused, naive) = (module(&c, true, DType::F32), module(&c, false, DType::F32));
        for fi in [0, 2] {
            let x = inputs(&c, &fused.functions[fi]);
            let want = reference(&naive, &naive.functions[fi], &x);
            let got = cpu(&fused, &fused.functions[fi], &x, Some(&c));
            for k in (fi / 2)..got.len() {
                let e = max_err(&got[k], &want[k]);
                assert!(e <= 1e-5, "output {k} of function {fi}, {variant:?}: error {e:e}");
            }
        }
    }
}

/// FA2 rescales its accumulator only when a row's max moves: scores that
/// rise block by block (the max moves every block) and then fall (it
/// never does) against the f64 reference.
#[test]
fn fa2_rescales_the_accumulator_exactly_when_the_max_moves() {
    let c = Case { b: 1, hkv: 1, group: 1, sq: 3, sk: 12, d: 16, causal: None, mask: AttnMask::None, variant: AttnVariant::Fa2, bshd: false, blocks: (2, 2), backward: AttnBackward::Split, seed: 5, dropout: 0.0, fill: None };
    let (fused, naive) = (module(&c, true, DType::F32), module(&c, false, DType::F32));
    let f = &fused.functions[0];
    let mut x = inputs(&c, f);
    // q = 1/4 and key j constant c_j / 4: q·k = c_j, so scores rise, then fall.
    let rise_fall = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5];
    x[0].data.iter_mut().for_each(|q| *q = 0.25);
    x[1].data.iter_mut().enumerate().for_each(|(i, k)| *k = rise_fall[i / c.d] / 4.0);
    let want = reference(&naive, &naive.functions[0], &x);
    let got = cpu(&fused, f, &x, Some(&c));
    for k in 0..2 {
        let e = max_err(&got[k], &want[k]);
        assert!(e <= 1e-5, "output {k}: error {e:e}");
    }
}

/// Half-precision storage computes in f32: the fused kernels stay within
/// the storage rounding of the f64 result.
#[test]
fn half_precision_storage() {
    let cases = [
        (DType::BF16, AttnVariant::Fa2, AttnBackward::OnePass),
        (DType::F16, AttnVariant::Fa2, AttnBackward::Split),
        (DType::BF16, AttnVariant::Fa1, AttnBackward::Split),
        (DType::F16, AttnVariant::Fa1, AttnBackward::OnePass),
    ];
    for (dtype, variant, backward) in cases {
        let c = Case { b: 1, hkv: 1, group: 2, sq: 9, sk: 13, d: 32, causal: Some(4), mask: AttnMask::Keep, variant, bshd: false, blocks: (4, 8), backward, seed: 3, dropout: 0.0, fill: None };
        let m = module(&c, true, dtype);
        for fi in [0, 2] {
            let f = &m.functions[fi];
            let x = inputs(&c, f);
            let want = reference(&m, f, &x);
            let got = cpu(&m, f, &x, Some(&c));
            for (g, w) in got.iter().zip(&want) {
                let scale = w.data.iter().fold(1.0f64, |a, v| a.max(v.abs()));
                let tol = if dtype == DType::BF16 { 2e-2 } else { 4e-3 };
                assert!(max_err(g, w) <= tol * scale, "{dtype}: {} vs {}", max_err(g, w), tol * scale);
            }
        }
    }
}

/// The scheduled program itself (kernel IR evaluator, f64 arithmetic,
/// stores rounded to f32) matches the interpreter at tiny shapes.
#[test]
fn kernel_evaluator_matches_the_interpreter() {
    let mut n = 0;
    for (variant, backward) in [(AttnVariant::Fa1, AttnBackward::Split), (AttnVariant::Fa2, AttnBackward::OnePass), (AttnVariant::Fa2, AttnBackward::Split)] {
        // Offset -1 leaves query 0 without keys: o and lse are NaN there,
        // as in the reference (its gradients are NaN too, but the reference
        // spreads that NaN over keys the kernels rightly skip: forward only).
        let cases = [(AttnMask::None, Some(2), 0.0), (AttnMask::Bias, None, 0.0), (AttnMask::Keep, Some(0), 0.0), (AttnMask::None, Some(-1), 0.0), (AttnMask::Keep, Some(1), 0.3), (AttnMask::None, None, 0.5)];
        for (mask, causal, dropout) in cases {
            let c = Case { b: 1, hkv: 1, group: 2, sq: 5, sk: 7, d: 16, causal, mask, variant, bshd: true, blocks: (2, 3), backward, seed: 11 + n, dropout, fill: None };
            n += 1;
            let m = module(&c, true, DType::F32);
            let functions: &[usize] = if causal == Some(-1) { &[0] } else { &[0, 2] };
            for &fi in functions {
                let f = &m.functions[fi];
                let x = inputs(&c, f);
                let want = reference(&m, f, &x);
                let opts = ScheduleOptions { threads: 2, ..options(&c) };
                let p = schedule(&m, f, &|_| None, &opts).expect("schedule");
                let got = kiln_ir::kernel::eval::run(&p, &x, &[]).expect("eval");
                for (g, w) in got.iter().zip(&want) {
                    for (a, b) in g.iter().zip(&w.data) {
                        let same = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                        assert!(same, "{variant:?} {backward:?} {mask:?} {causal:?} dropout {dropout}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

/// File tests (`tests/filetests/kernels/fused_attention`): each `.kl`
/// writes causal attention as math over arguments `q, k, v`; the dump is
/// the kernel program of one fused FA2 node over those arguments.
#[test]
fn fused_kernel_programs() {
    kiln_tests::filetest::run(&kiln_tests::repo_root().join("tests/filetests/kernels/fused_attention"), |path| {
        let text = std::fs::read_to_string(path).expect("read input");
        let header = text.lines().next().and_then(|l| l.strip_prefix("# dims:")).expect("first line: `# dims: ...`");
        let env: BTreeMap<String, i64> = header.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), v.parse().expect("dim"))).collect();
        let c = kiln_lang::compile_file(path).unwrap_or_else(|e| panic!("{}", e.render()));
        let naive = &c.module.functions[0];
        let mut g = G { g: Graph::default() };
        let shapes: Vec<Vec<usize>> = naive.graph.inputs.iter().map(|t| t.shape.iter().map(|d| d.eval(&|n| env.get(n).copied()).expect("bound") as usize).collect()).collect();
        let args: Vec<ValueId> = shapes.iter().map(|s| g.input(DType::F32, s)).collect();
        let (b, h, t, d) = (shapes[0][0], shapes[0][1], shapes[0][2], shapes[0][3]);
        let case = Case { b, hkv: h, group: 1, sq: t, sk: t, d, causal: Some(0), mask: AttnMask::None, variant: AttnVariant::Fa2, bshd: false, blocks: (4, 4), backward: AttnBackward::OnePass, seed: 0, dropout: 0.0, fill: None };
        let (o, _) = forward(&case, &mut g, &args, true);
        g.g.outputs = vec![o];
        let fused = function("attn", g.g, &["o"]);
        let m = Module { params: vec![], functions: vec![fused] };
        // The fused node computes what the source says.
        let x = inputs(&case, &m.functions[0]);
        let want = kiln_runtime::run_reference(&c.module, naive, &[], &x, &env, Precision::F64).expect("reference");
        let got = reference(&m, &m.functions[0], &x);
        assert!(max_err(&got[0], &want[0]) < 1e-12, "the fused node differs from {}", path.display());
        let opts = ScheduleOptions { threads: 2, attention_blocks: Some(case.blocks), ..Default::default() };
        let p = schedule(&m, &m.functions[0], &|_| None, &opts).expect("schedule");
        kiln_ir::kernel::print::program(&p)
    });
}

/// The lse result and a bias mask have no gradient: clear errors.
#[test]
fn nondifferentiable_parts_are_errors() {
    let c = Case { b: 1, hkv: 1, group: 1, sq: 3, sk: 3, d: 16, causal: None, mask: AttnMask::Bias, variant: AttnVariant::Fa2, bshd: false, blocks: (2, 2), backward: AttnBackward::OnePass, seed: 1, dropout: 0.0, fill: None };
    let build = |use_lse: bool| {
        let mut g = G { g: Graph::default() };
        let args = operands(&c, &mut g, DType::F32);
        let (o, lse) = forward(&c, &mut g, &args, true);
        let x = if use_lse { lse } else { o };
        let n: usize = g.shape(x).iter().map(|d| d.eval(&|_| None).expect("constant") as usize).product();
        let flat = g.reshape(x, &dims(&[n]));
        let loss = g.reduce(ReduceOp::Sum, flat, 0, false);
        g.g.outputs = vec![loss];
        Module { params: vec![], functions: vec![function("loss", g.g, &["loss"])] }
    };
    let m = build(true);
    let e = grad(&m, &m.functions[0], &Wrt::no_params().with_inputs([0])).unwrap_err();
    assert!(e.to_string().contains("logsumexp result is not differentiable"), "{e}");
    let m = build(false);
    let e = grad(&m, &m.functions[0], &Wrt::no_params().with_inputs([3])).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    assert!(grad(&m, &m.functions[0], &Wrt::no_params().with_inputs([0, 1, 2])).is_ok());
}

/// Heads merged with the batch after a transpose (`[B, S, H, D]` →
/// `[B·H, S, D]`) are not a strided view of memory: the kernels read a
/// dense copy, with the same results.
#[test]
fn merged_head_axes_are_read_from_a_dense_copy() {
    let (b, s, h, d) = (2, 6, 3, 16);
    let c = Case { b: 1, hkv: 1, group: 1, sq: s, sk: s, d, causal: Some(0), mask: AttnMask::None, variant: AttnVariant::Fa2, bshd: false, blocks: (4, 4), backward: AttnBackward::OnePass, seed: 5, dropout: 0.0, fill: None };
    let mut g = G { g: Graph::default() };
    let args: Vec<ValueId> = (0..3)
        .map(|_| {
            let x = g.input(DType::F32, &[b, s, h, d]);
            let x = g.transpose(x, &[0, 2, 1, 3]);
            g.reshape(x, &dims(&[b * h, s, d]))
        })
        .collect();
    let a = attention(&c);
    let tys = a.forward_types(&args.iter().map(|&x| g.g.tensor_type(x)).collect::<Vec<_>>()).expect("types");
    let t = g.g.push(Op::Attention(Box::new(a)), args, Type::Tuple(tys));
    let o = g.extract(t, 0);
    g.g.outputs = vec![o];
    let m = Module { params: vec![], functions: vec![function("attn", g.g, &["o"])] };
    let f = &m.functions[0];
    let p = schedule(&m, f, &|_| None, &ScheduleOptions { attention_blocks: Some(c.blocks), ..Default::default() }).expect("schedule");
    assert!(p.buffers.iter().any(|b| b.name.ends_with(".dense")), "expected dense copies: {:?}", p.buffers);
    let x = inputs(&c, f);
    let (want, got) = (reference(&m, f, &x), cpu(&m, f, &x, Some(&c)));
    assert!(max_err(&got[0], &want[0]) < 1e-5, "{}", max_err(&got[0], &want[0]));
}

/// The scheduler records each attention node for backends that have
/// their own kernels: which kernels implement it and where its operands
/// live, read in place (`[B, S, H, D]` inputs as strided views).
#[test]
fn attention_nodes_are_recorded_as_intrinsics() {
    use kiln_ir::kernel::IntrinsicOp;
    for bshd in [false, true] {
        let c = Case { b: 2, hkv: 1, group: 3, sq: 5, sk: 7, d: 16, causal: Some(2), mask: AttnMask::None, variant: AttnVariant::Fa2, bshd, blocks: (2, 4), backward: AttnBackward::Split, seed: 1, dropout: 0.0, fill: None };
        let m = module(&c, true, DType::BF16);
        let opts = ScheduleOptions { attention_blocks: Some(c.blocks), ..Default::default() };
        let fwd = schedule(&m, &m.functions[0], &|_| None, &opts).expect("schedule");
        let [x] = &fwd.intrinsics[..] else { panic!("one intrinsic: {:?}", fwd.intrinsics) };
        let IntrinsicOp::Attention(call) = &x.op else { panic!("{:?}", x.op) };
        assert_eq!((call.causal, call.group, call.scale), (Some(2), 3, c.scale()));
        assert!(x.kernels.clone().all(|k| fwd.kernels[k as usize].name.contains("attention")), "{:?}", x.kernels);
        let q = x.args[0].as_ref().expect("q in memory");
        assert_eq!(q.shape, [2, 3, 5, 16]);
        // [B, S, H, D] memory read as [B, H, S, D]
        assert_eq!(q.strides, if bshd { [5 * 3 * 16, 16, 3 * 16, 1] } else { [3 * 5 * 16, 5 * 16, 16, 1] });
        assert_eq!(x.results.iter().map(|r| r.shape.clone()).collect::<Vec<_>>(), [vec![2, 3, 5, 16], vec![2, 3, 5, 2]]);
        let grad = schedule(&m, &m.functions[2], &|_| None, &opts).expect("schedule");
        let kinds: Vec<bool> = grad.intrinsics.iter().map(|x| matches!(x.op, IntrinsicOp::AttentionGrad(_))).collect();
        assert_eq!(kinds, [false, true]);
        let g = &grad.intrinsics[1];
        // o, lse and do are in memory too; the results are dq, dk, dv
        assert!(g.args.iter().all(Option::is_some), "{:?}", g.args);
        assert_eq!(g.results.iter().map(|r| r.shape.clone()).collect::<Vec<_>>(), [vec![2, 3, 5, 16], vec![2, 1, 7, 16], vec![2, 1, 7, 16]]);
    }
}

/// The PTX backend runs attention on the tensor-core FlashAttention
/// kernels (in the emulator) when they apply: bf16 and f16, causal or not,
/// GQA, awkward lengths, forward and gradients; and on the generic kernels
/// otherwise (f32, a mask, transposed operands, an unsupported head size,
/// dropout, rows hidden by a large finite bias).
/// Either way it matches the f64 reference within the differential
/// suite's tolerance for the dtype.
#[test]
fn ptx_backend_uses_flash_kernels_when_they_apply() {
    let case = |b, hkv, group, sq, sk, d, causal, mask, bshd| Case { b, hkv, group, sq, sk, d, causal, mask, variant: AttnVariant::Fa2, bshd, blocks: (16, 16), backward: AttnBackward::Split, seed: 5, dropout: 0.0, fill: None };
    let flash = [
        (DType::BF16, case(1, 1, 1, 17, 17, 64, Some(0), AttnMask::None, false)),
        (DType::F16, case(1, 1, 1, 17, 17, 64, Some(0), AttnMask::None, false)),
        (DType::BF16, case(2, 1, 2, 1, 127, 32, None, AttnMask::None, false)),
        (DType::F16, case(1, 2, 2, 127, 33, 32, None, AttnMask::None, false)),
        (DType::BF16, case(1, 1, 1, 33, 65, 32, Some(32), AttnMask::None, false)),
    ];
    let generic = [
        (DType::F32, case(1, 1, 1, 17, 17, 32, Some(0), AttnMask::None, false)),
        (DType::BF16, case(1, 1, 1, 9, 13, 32, None, AttnMask::Bias, false)),
        (DType::F16, case(1, 1, 2, 9, 13, 32, Some(4), AttnMask::None, true)),
        (DType::BF16, case(1, 1, 1, 9, 13, 16, Some(0), AttnMask::None, false)),
        (DType::BF16, Case { dropout: 0.1, ..case(1, 1, 1, 17, 17, 64, Some(0), AttnMask::None, false) }),
        // left padding by f32::MIN under a causal mask (f64 rounds those
        // scores alike: the reference's rows are uniform too)
        (DType::F32, Case { fill: Some(Fill { bias: f64::from(f32::MIN), pad: 3 }), ..case(1, 1, 2, 9, 13, 32, Some(0), AttnMask::Bias, false) }),
    ];
    for (dtype, c, want_flash) in flash.iter().map(|(d, c)| (*d, c, true)).chain(generic.iter().map(|(d, c)| (*d, c, false))) {
        let m = module(c, true, dtype);
        for fi in [0, 2] {
            let f = &m.functions[fi];
            let x = inputs(c, f);
            let want = reference(&m, f, &x);
            for arch in [Arch::Sm80, Arch::Sm90a] {
            let (got, launched) = kiln_tests::backends::PtxEmu(arch).run_traced(&m, f, &[], &x, &BTreeMap::new()).unwrap_or_else(|e| panic!("{dtype} {c:?} {arch:?}: {e}"));
            // sm_90a runs the FA3-style forward where it applies (d = 64, 128)
            let fwd = if arch == Arch::Sm90a && c.d == 64 { "flash3_fwd_sm_90a" } else { "flash_fwd_" };
            let flash_names: Vec<&str> = if fi == 0 { vec![fwd] } else { vec![fwd, "flash_bwd_prep_", "flash_bwd_dq_", "flash_bwd_dkv_"] };
            for name in flash_names {
                assert_eq!(launched.iter().any(|l| l.starts_with(name)), want_flash, "{name} in {launched:?} for {dtype} {c:?} {arch:?}");
            }
            assert_eq!(launched.iter().any(|l| l.contains("attention")), !want_flash, "generic attention kernels in {launched:?} for {dtype} {c:?} {arch:?}");
            let tol = match dtype {
                DType::F32 => 2e-5,
                DType::F16 => 4e-3,
                _ => 3e-2,
            };
            // the loss (output 0 of the gradient) is a long sum, not an attention output
            for (k, (g, w)) in got.iter().zip(&want).enumerate().skip(fi / 2) {
                let scale = w.data.iter().fold(1.0f64, |a, v| a.max(v.abs()));
                assert!(max_err(g, w) <= tol * scale, "{dtype} {c:?} {arch:?} function {fi} output {k}: error {} > {}", max_err(g, w), tol * scale);
            }
            }
        }
    }
}

/// The user's path: causal attention written as math in bf16, fused by the
/// optimizer, runs on the flash kernels in the PTX backend and matches
/// the f64 reference of the source as written; also with q, k and v
/// sliced from one packed tensor (views at offsets into one buffer).
#[test]
fn attention_written_as_math_runs_on_flash_kernels() {
    let body = "    let s: bf16[B, H, T, S] = q @ transpose(k) / sqrt(D)\n    return softmax(where(tril(T, S), s, -inf), over: S) @ v\n}\n";
    let head = "config { H = 2 \n D = 64 }\ndim S = T\n";
    let separate = format!("{head}pub fn attn(q: bf16[B, H, T, D], k: bf16[B, H, T, D], v: bf16[B, H, T, D]) -> bf16[B, H, T, D] {{\n{body}");
    let packed = format!("{head}pub fn attn(qkv: bf16[3, B, H, T, D]) -> bf16[B, H, T, D] {{\n    let q = qkv[0]\n    let k = qkv[1]\n    let v = qkv[2]\n{body}");
    for src in [separate, packed] {
        let c = kiln_lang::compile_source(std::path::Path::new("attn.kl"), src).unwrap_or_else(|e| panic!("{}", e.render()));
        check_flash_on_source(&c);
    }
}

/// Fuses `c`'s one function and checks the PTX backend's result (on the
/// flash kernels) against the f64 reference of the unfused source.
fn check_flash_on_source(c: &kiln_lang::Compiled) {
    let naive = &c.module.functions[0];
    let (fused, report) = kiln_ir::opt::optimize(&c.module, naive, &Default::default()).expect("optimize");
    assert_eq!(report.fused().count(), 1);
    let m = Module { params: c.module.params.clone(), functions: vec![fused] };
    for t in [1, 17, 70] {
        let dims: BTreeMap<String, i64> = [("B".to_string(), 2), ("T".to_string(), t)].into_iter().collect();
        let x: Vec<Tensor> = (0..naive.arg_names.len()).map(|i| kiln_runtime::random_input(naive, i, &|n| dims.get(n).copied(), 40 + i as u64).expect("input")).collect();
        let want = kiln_runtime::run_reference(&c.module, naive, &[], &x, &dims, Precision::F64).expect("reference");
        for arch in [Arch::Sm80, Arch::Sm90a] {
            let (got, launched) = kiln_tests::backends::PtxEmu(arch).run_traced(&m, &m.functions[0], &[], &x, &dims).expect("ptx-emu");
            let fwd = if arch == Arch::Sm90a { "flash3_fwd_sm_90a" } else { "flash_fwd_sm_80" };
            assert!(launched.iter().any(|l| l.starts_with(fwd)), "{launched:?}");
            let scale = want[0].data.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            assert!(max_err(&got[0], &want[0]) <= 3e-2 * scale, "T = {t} {arch:?}: error {} > {}", max_err(&got[0], &want[0]), 3e-2 * scale);
        }
    }
}
