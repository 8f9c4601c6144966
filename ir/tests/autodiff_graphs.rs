//! Gradient checks of whole graphs, built by hand the way the front end
//! lowers models: an MLP with cross-entropy, a two-layer causal attention
//! block, an embedding with a tied output head, scan RNNs (one and two
//! carries), layer stacks over stacked parameters, scans with captures,
//! integer carries and no carries, and a scan nested in a scan. Every
//! gradient element is compared with a central finite difference in f64.

#[path = "autodiff_util.rs"]
mod util;

use kiln_ir::autodiff::Wrt;
use kiln_ir::interp::Tensor;
use kiln_ir::{BinaryOp, CmpOp, DType, DimExpr, Graph, Module, Op, ReduceOp, TensorType, Type, UnaryOp, ValueId};
use proptest::prelude::*;
use util::*;

fn ft(shape: Vec<DimExpr>) -> TensorType {
    TensorType::new(DType::F32, shape)
}

/// A scan body taking `inputs`; `f` returns its outputs.
fn body(inputs: &[TensorType], f: impl FnOnce(&mut Gb, &[ValueId]) -> Vec<ValueId>) -> Graph {
    let mut b = Gb::new();
    let xs: Vec<ValueId> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| b.input(&format!("in{i}"), t.clone(), Tensor::scalar(DType::F32, 0.0)))
        .collect();
    let outs = f(&mut b, &xs);
    b.g.outputs = outs;
    b.g
}

/// A scan node and an `extract` of each of its results.
fn scan(b: &mut Gb, body: Graph, nc: usize, ns: usize, args: &[ValueId]) -> Vec<ValueId> {
    let len = b.shape(args[nc])[0].clone();
    let mut ts = Vec::new();
    for (j, &o) in body.outputs.iter().enumerate() {
        let t = body.tensor_type(o).clone();
        if j < nc {
            ts.push(t);
        } else {
            let mut s = vec![len.clone()];
            s.extend(t.shape);
            ts.push(TensorType::new(t.dtype, s));
        }
    }
    let op = Op::Scan { body: Box::new(body), n_carry: nc as u32, n_seq: ns as u32 };
    let s = b.g.push(op, args.to_vec(), Type::Tuple(ts.clone()));
    (0..ts.len() as u32)
        .map(|i| b.g.push(Op::Extract { index: i }, vec![s], Type::Tensor(ts[i as usize].clone())))
        .collect()
}

/// `x @ w + bias` on the last axis of `x` (any rank), flattening the
/// leading axes the way the front end does.
fn dense(b: &mut Gb, x: ValueId, w: ValueId, bias: Option<ValueId>) -> ValueId {
    let s = b.shape(x);
    let (k, n) = (s[s.len() - 1].clone(), b.shape(w)[1].clone());
    let lead: Vec<DimExpr> = s[..s.len() - 1].to_vec();
    let rows = lead.iter().fold(d(1), |a, x| a.mul(x));
    let flat = if s.len() == 2 { x } else { b.reshape(x, &[rows.clone(), k]) };
    let y = b.matmul(flat, w);
    let mut out = lead.clone();
    out.push(n);
    let y = if s.len() == 2 { y } else { b.reshape(y, &out) };
    match bias {
        Some(c) => b.add_bcast(y, c),
        None => y,
    }
}

/// The front end's `cross_entropy(logits, labels)` over the last axis:
/// `-mean(Σ log_softmax(logits) ⊙ one_hot(labels))`.
fn cross_entropy(b: &mut Gb, logits: ValueId, labels: ValueId) -> ValueId {
    let t = b.ty(logits);
    let r = t.rank() as u32;
    let ls = b.push(Op::LogSoftmax { axis: r - 1 }, vec![logits], t.clone());
    let oh = b.push(Op::OneHot, vec![labels], t.clone());
    let p = b.mul(ls, oh);
    let s = b.reduce(ReduceOp::Sum, p, &[r - 1], false);
    let m = b.reduce(ReduceOp::Mean, s, &(0..r - 1).collect::<Vec<_>>(), false);
    b.unary(UnaryOp::Neg, m)
}

/// Parameter values drawn uniformly in `[-a, a]`.
fn param_values(m: &Module, rng: &mut Gen, a: f64) -> Vec<Tensor> {
    m.params
        .iter()
        .map(|p| {
            let shape: Vec<usize> = p.ty.shape.iter().map(|d| d.as_const().unwrap() as usize).collect();
            rng.f32s(&shape, -a, a)
        })
        .collect()
}

/// The MLP of `models/mlp.kl`, with cross-entropy.
fn mlp(n: usize, din: usize, h: usize, c: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let (ni, di, hi, ci) = (n as i64, din as i64, h as i64, c as i64);
    let m = module(&[("w1", f32t(&[di, hi])), ("b1", f32t(&[hi])), ("w2", f32t(&[hi, ci])), ("b2", f32t(&[ci]))]);
    let params = param_values(&m, &mut rng, 1.0);
    let mut b = Gb::new();
    let x = b.input("x", f32t(&[ni, di]), rng.f32s(&[n, din], -1.0, 1.0));
    let y = b.index_input("y", tyc(DType::I32, &[ni]), d(ci), rng.ints(DType::I32, &[n], c));
    let (w1, b1, w2, b2) = (b.param(&m, 0), b.param(&m, 1), b.param(&m, 2), b.param(&m, 3));
    let z = dense(&mut b, x, w1, Some(b1));
    let a = b.unary(UnaryOp::Gelu, z);
    let logits = dense(&mut b, a, w2, Some(b2));
    let l = cross_entropy(&mut b, logits, y);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs)
}

/// One pre-norm causal self-attention layer on `x: [B, T, D]` with
/// `heads` heads; `p` holds the param indices (ln gain, ln bias, w_qkv, w_o).
fn attention(b: &mut Gb, m: &Module, x: ValueId, p: [u32; 4], heads: i64) -> ValueId {
    let w = p.map(|i| b.param(m, i));
    attention_with(b, x, w, heads)
}

/// [`attention`] with its weights given as values (e.g. a layer's slices).
fn attention_with(b: &mut Gb, x: ValueId, w: [ValueId; 4], heads: i64) -> ValueId {
    let s = b.shape(x);
    let (bd, td, dd) = (s[0].clone(), s[1].clone(), s[2].clone());
    let dm = dd.as_const().unwrap();
    let hd = dm / heads;
    let [g, be, wqkv, wo] = w;
    let xt = b.ty(x);
    let h = b.push(Op::LayerNorm { eps: 1e-5 }, vec![x, g, be], xt.clone());
    let qkv = dense(b, h, wqkv, None);
    let split = |b: &mut Gb, i: i64| {
        let part = b.slice(qkv, 2, d(i * dm), d((i + 1) * dm), 1, d(dm));
        let r = b.reshape(part, &[bd.clone(), td.clone(), d(heads), d(hd)]);
        b.transpose(r, &[0, 2, 1, 3])
    };
    let (q, k, v) = (split(b, 0), split(b, 1), split(b, 2));
    let kt = b.transpose(k, &[0, 1, 3, 2]);
    let sc = b.matmul(q, kt);
    let sshape = b.shape(sc);
    let root = b.konst((hd as f64).sqrt(), DType::F32);
    let root = b.broadcast(root, &sshape);
    let sc = b.binary(BinaryOp::Div, sc, root);
    let tt = TensorType::new(DType::I64, vec![td.clone(), td.clone()]);
    let row = b.push(Op::Iota { axis: 0 }, vec![], tt.clone());
    let col = b.push(Op::Iota { axis: 1 }, vec![], tt.clone());
    let keep = b.push(Op::Compare(CmpOp::Le), vec![col, row], tt.with_dtype(DType::Bool));
    let ninf = b.konst(f64::NEG_INFINITY, DType::F32);
    let keep = b.broadcast(keep, &sshape);
    let ninf = b.broadcast(ninf, &sshape);
    let masked = b.push(Op::Select, vec![keep, sc, ninf], ft(sshape.clone()));
    let att = b.push(Op::Softmax { axis: 3 }, vec![masked], ft(sshape));
    let o = b.matmul(att, v);
    let o = b.transpose(o, &[0, 2, 1, 3]);
    let o = b.reshape(o, &[bd, td, dd]);
    let o = dense(b, o, wo, None);
    b.add(x, o)
}

/// Two causal attention layers on `x: f32[B, T, 4]` (symbolic `B`, `T`).
fn attention_block(bv: usize, tv: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let dm = 4;
    let mut specs = Vec::new();
    for l in 0..2 {
        specs.push((format!("l{l}.ln.g"), f32t(&[dm])));
        specs.push((format!("l{l}.ln.b"), f32t(&[dm])));
        specs.push((format!("l{l}.w_qkv"), f32t(&[dm, 3 * dm])));
        specs.push((format!("l{l}.w_o"), f32t(&[dm, dm])));
    }
    let specs: Vec<(&str, TensorType)> = specs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let m = module(&specs);
    let mut params = param_values(&m, &mut rng, 0.7);
    for l in 0..2 {
        params[4 * l] = rng.f32s(&[dm as usize], 0.5, 1.5);
    }
    let mut b = Gb::new();
    let shape = vec![var("B"), var("T"), d(dm)];
    let x = b.input("x", ft(shape), rng.f32s(&[bv, tv, dm as usize], -1.0, 1.0));
    let h = attention(&mut b, &m, x, [0, 1, 2, 3], 2);
    let h = attention(&mut b, &m, h, [4, 5, 6, 7], 2);
    let l = b.project(h, &mut rng, &[bv, tv, dm as usize]);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs).with_dims(&[("B", bv as i64), ("T", tv as i64)])
}

/// The Elman RNN of `tests/filetests/ir/rnn.kl` (params read inside the
/// body), over symbolic `B` and `T`; the loss projects both the emitted
/// states and the last state.
fn rnn(bv: usize, tv: usize, din: usize, dh: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let (di, hi) = (din as i64, dh as i64);
    let m = module(&[("w_x", f32t(&[di, hi])), ("w_h", f32t(&[hi, hi])), ("b", f32t(&[hi]))]);
    let params = param_values(&m, &mut rng, 0.8);
    let mut b = Gb::new();
    let (bd, td) = (var("B"), var("T"));
    let xs = b.input("xs", ft(vec![bd.clone(), td.clone(), d(di)]), rng.f32s(&[bv, tv, din], -1.0, 1.0));
    let xt = b.transpose(xs, &[1, 0, 2]);
    let zero = b.konst(0.0, DType::F32);
    let h0 = b.broadcast(zero, &[bd.clone(), d(hi)]);
    let mm = m.clone();
    let cell = body(&[ft(vec![bd.clone(), d(hi)]), ft(vec![bd.clone(), d(di)])], |g, a| {
        let (wx, wh, bias) = (g.param(&mm, 0), g.param(&mm, 1), g.param(&mm, 2));
        let p = g.matmul(a[1], wx);
        let q = g.matmul(a[0], wh);
        let s = g.add(p, q);
        let s = g.add_bcast(s, bias);
        let h = g.unary(UnaryOp::Tanh, s);
        vec![h, h]
    });
    let r = scan(&mut b, cell, 1, 1, &[h0, xt]);
    let l1 = b.project(r[1], &mut rng, &[tv, bv, dh]);
    let l2 = b.project(r[0], &mut rng, &[bv, dh]);
    let l = b.add(l1, l2);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs).with_dims(&[("B", bv as i64), ("T", tv as i64)])
}

/// The LSTM of `models/lstm.kl`: embedding, a two-carry scan whose gates
/// are slices of one matmul, a dense head and cross-entropy.
fn lstm(bv: usize, tv: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let (v, e, h) = (5i64, 3i64, 2i64);
    let m = module(&[
        ("emb", f32t(&[v, e])),
        ("cell.w_x", f32t(&[e, 4 * h])),
        ("cell.w_h", f32t(&[h, 4 * h])),
        ("cell.b", f32t(&[4 * h])),
        ("w_out", f32t(&[h, v])),
        ("b_out", f32t(&[v])),
    ]);
    let params = param_values(&m, &mut rng, 0.8);
    let mut b = Gb::new();
    let (bd, td) = (d(bv as i64), d(tv as i64));
    let tokens = b.index_input(
        "tokens",
        tyc(DType::I32, &[bv as i64, tv as i64]),
        d(v),
        rng.ints(DType::I32, &[bv, tv], v as usize),
    );
    let targets = b.index_input(
        "targets",
        tyc(DType::I32, &[bv as i64, tv as i64]),
        d(v),
        rng.ints(DType::I32, &[bv, tv], v as usize),
    );
    let emb = b.param(&m, 0);
    let x = b.push(Op::Gather { axis: 0 }, vec![emb, tokens], ft(vec![bd.clone(), td.clone(), d(e)]));
    let xt = b.transpose(x, &[1, 0, 2]);
    let zero = b.konst(0.0, DType::F32);
    let h0 = b.broadcast(zero, &[bd.clone(), d(h)]);
    let zero = b.konst(0.0, DType::F32);
    let c0 = b.broadcast(zero, &[bd.clone(), d(h)]);
    let mm = m.clone();
    let hb = ft(vec![bd.clone(), d(h)]);
    let cell = body(&[hb.clone(), hb.clone(), ft(vec![bd.clone(), d(e)])], |g, a| {
        let (wx, wh, bias) = (g.param(&mm, 1), g.param(&mm, 2), g.param(&mm, 3));
        let p = g.matmul(a[2], wx);
        let q = g.matmul(a[0], wh);
        let s = g.add(p, q);
        let s = g.add_bcast(s, bias);
        let gate = |g: &mut Gb, i: i64| g.slice(s, 1, d(i * h), d((i + 1) * h), 1, d(h));
        let (ig, fg, cg, og) = (gate(g, 0), gate(g, 1), gate(g, 2), gate(g, 3));
        let fs = g.unary(UnaryOp::Sigmoid, fg);
        let keep = g.mul(fs, a[1]);
        let is = g.unary(UnaryOp::Sigmoid, ig);
        let ct = g.unary(UnaryOp::Tanh, cg);
        let add = g.mul(is, ct);
        let c = g.add(keep, add);
        let os = g.unary(UnaryOp::Sigmoid, og);
        let tc = g.unary(UnaryOp::Tanh, c);
        let hn = g.mul(os, tc);
        vec![hn, c, hn]
    });
    let r = scan(&mut b, cell, 2, 1, &[h0, c0, xt]);
    let hs = b.transpose(r[2], &[1, 0, 2]);
    let (wo, bo) = (b.param(&m, 4), b.param(&m, 5));
    let logits = dense(&mut b, hs, wo, Some(bo));
    let l = cross_entropy(&mut b, logits, targets);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs)
}

/// A layer stack: stacked parameters `[L, ...]` are the scan's sequences,
/// the activation its carry; each layer is `x + tanh(rmsnorm(x, g) @ W + b)`.
/// A shared (unstacked) parameter `s` is also read inside the body, so its
/// gradient accumulates over the layers.
fn layer_stack(layers: usize, n: usize, dm: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let (l, ni, di) = (layers as i64, n as i64, dm as i64);
    let mut m = module(&[
        ("blocks.w", f32t(&[l, di, di])),
        ("blocks.b", f32t(&[l, di])),
        ("blocks.g", f32t(&[l, di])),
        ("s", f32t(&[di])),
    ]);
    for p in &mut m.params[..3] {
        p.stack = Some("blocks".into());
    }
    let mut params = param_values(&m, &mut rng, 0.8);
    params[2] = rng.f32s(&[layers, dm], 0.5, 1.5);
    let mut b = Gb::new();
    let x = b.input("x", f32t(&[ni, di]), rng.f32s(&[n, dm], -1.0, 1.0));
    let (w, bias, g) = (b.param(&m, 0), b.param(&m, 1), b.param(&m, 2));
    let mm = m.clone();
    let layer = body(&[f32t(&[ni, di]), f32t(&[di, di]), f32t(&[di]), f32t(&[di])], |gb, a| {
        let xt = gb.ty(a[0]);
        let h = gb.push(Op::RmsNorm { eps: 1e-5 }, vec![a[0], a[3]], xt);
        let z = dense(gb, h, a[1], Some(a[2]));
        let s = gb.param(&mm, 3);
        let z = gb.add_bcast(z, s);
        let y = gb.unary(UnaryOp::Tanh, z);
        vec![gb.add(a[0], y)]
    });
    let r = scan(&mut b, layer, 1, 3, &[x, w, bias, g]);
    let l = b.project(r[0], &mut rng, &[n, dm]);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs)
}

/// A GPT in miniature, as `models/gpt.kl` lowers: token and position
/// embeddings, a layer stack (scan over stacked params) of causal
/// attention blocks, a final layernorm, an output head tied to the token
/// embedding, cross-entropy.
fn mini_gpt(bv: usize, tv: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let (v, dm, nl, block) = (5i64, 4i64, 2i64, 4i64);
    let mut m = module(&[
        ("wte", f32t(&[v, dm])),
        ("wpe", f32t(&[block, dm])),
        ("blocks.ln.g", f32t(&[nl, dm])),
        ("blocks.ln.b", f32t(&[nl, dm])),
        ("blocks.w_qkv", f32t(&[nl, dm, 3 * dm])),
        ("blocks.w_o", f32t(&[nl, dm, dm])),
        ("ln_f.g", f32t(&[dm])),
        ("ln_f.b", f32t(&[dm])),
    ]);
    for p in &mut m.params[2..6] {
        p.stack = Some("blocks".into());
    }
    let mut params = param_values(&m, &mut rng, 0.7);
    params[2] = rng.f32s(&[nl as usize, dm as usize], 0.5, 1.5);
    params[6] = rng.f32s(&[dm as usize], 0.5, 1.5);
    let (bd, td) = (var("B"), var("T"));
    let mut b = Gb::new();
    let tokens = b.index_input(
        "tokens",
        TensorType::new(DType::I32, vec![bd.clone(), td.clone()]),
        d(v),
        rng.ints(DType::I32, &[bv, tv], v as usize),
    );
    let targets = b.index_input(
        "targets",
        TensorType::new(DType::I32, vec![bd.clone(), td.clone()]),
        d(v),
        rng.ints(DType::I32, &[bv, tv], v as usize),
    );
    let wte = b.param(&m, 0);
    let x = b.push(Op::Gather { axis: 0 }, vec![wte, tokens], ft(vec![bd.clone(), td.clone(), d(dm)]));
    let wpe = b.param(&m, 1);
    let pos = b.slice(wpe, 0, d(0), td.clone(), 1, td.clone());
    let x = b.add_bcast(x, pos);
    let stacked: Vec<ValueId> = (2..6).map(|i| b.param(&m, i)).collect();
    // The body reads its layer's slices as inputs 1..=4.
    let xty = ft(vec![bd.clone(), td.clone(), d(dm)]);
    let ins = vec![xty, f32t(&[dm]), f32t(&[dm]), f32t(&[dm, 3 * dm]), f32t(&[dm, dm])];
    let layer = body(&ins, |g, a| vec![attention_with(g, a[0], [a[1], a[2], a[3], a[4]], 2)]);
    let mut args = vec![x];
    args.extend(stacked);
    let r = scan(&mut b, layer, 1, 4, &args);
    let (gf, bf) = (b.param(&m, 6), b.param(&m, 7));
    let xt = b.ty(r[0]);
    let h = b.push(Op::LayerNorm { eps: 1e-5 }, vec![r[0], gf, bf], xt);
    let wte2 = b.param(&m, 0);
    let head = b.transpose(wte2, &[1, 0]);
    let logits = dense(&mut b, h, head, None);
    let l = cross_entropy(&mut b, logits, targets);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs).with_dims(&[("B", bv as i64), ("T", tv as i64)])
}

/// A scan with every kind of argument: an integer step counter carry, a
/// float carry that starts inactive, a second float carry that starts from
/// an argument, an active captured argument and a captured parameter, an
/// emit of the incoming carry (before the update) and of a value that
/// depends on the sequence only.
fn scan_kinds(tv: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let dm = 3i64;
    let m = module(&[("p", f32t(&[dm, dm])), ("q", f32t(&[dm]))]);
    let params = param_values(&m, &mut rng, 0.8);
    let mut b = Gb::new();
    let t = var("T");
    let xs = b.input("xs", ft(vec![t.clone(), d(dm)]), rng.f32s(&[tv, dm as usize], -1.0, 1.0));
    let u = b.input("u", f32t(&[dm, dm]), rng.f32s(&[dm as usize, dm as usize], -0.8, 0.8));
    let c1 = b.input("c1", f32t(&[1, dm]), rng.f32s(&[1, dm as usize], -1.0, 1.0));
    let zero = b.konst(0.0, DType::I64);
    let zf = b.konst(0.0, DType::F32);
    let h0 = b.broadcast(zf, &[d(1), d(dm)]);
    let pp = b.param(&m, 0);
    let mm = m.clone();
    let row = f32t(&[1, dm]);
    let cell = body(
        &[TensorType::scalar(DType::I64), row.clone(), row.clone(), f32t(&[dm]), f32t(&[dm, dm]), f32t(&[dm, dm])],
        |g, a| {
            let (k, h, c, x, uu, p) = (a[0], a[1], a[2], a[3], a[4], a[5]);
            let one = g.konst(1.0, DType::I64);
            let k1 = g.add(k, one);
            let kf = g.push(Op::Cast, vec![k1], TensorType::scalar(DType::F32));
            let kb = g.broadcast(kf, &[d(1), d(dm)]);
            let xr = g.reshape(x, &[d(1), d(dm)]);
            let hu = g.matmul(h, uu);
            let cp = g.matmul(c, p);
            let s = g.add(hu, cp);
            let s = g.add(s, xr);
            let hn = g.unary(UnaryOp::Tanh, s);
            let q = g.param(&mm, 1);
            let qb = g.broadcast(q, &[d(1), d(dm)]);
            let cx = g.mul(c, qb);
            let cs = g.unary(UnaryOp::Sin, cx);
            let scaled = g.mul(kb, xr);
            let cn = g.add(cs, scaled);
            let only_x = g.unary(UnaryOp::Exp, x);
            vec![k1, hn, cn, h, only_x]
        },
    );
    let r = scan(&mut b, cell, 3, 1, &[zero, h0, c1, xs, u, pp]);
    let l1 = b.project(r[1], &mut rng, &[1, dm as usize]);
    let l2 = b.project(r[2], &mut rng, &[1, dm as usize]);
    let l3 = b.project(r[3], &mut rng, &[tv, 1, dm as usize]);
    let l4 = b.project(r[4], &mut rng, &[tv, dm as usize]);
    let l = b.add(l1, l2);
    let l = b.add(l, l3);
    let l = b.add(l, l4);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs).with_dims(&[("T", tv as i64)])
}

/// A scan without carries (a map over the sequence), with a parameter
/// read inside the body and a second sequence that is an integer.
fn map_scan(tv: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let m = module(&[("w", f32t(&[2, 3]))]);
    let params = param_values(&m, &mut rng, 1.0);
    let mut b = Gb::new();
    let ti = tv as i64;
    let xs = b.input("xs", f32t(&[ti, 1, 2]), rng.f32s(&[tv, 1, 2], -1.0, 1.0));
    let ks = b.input("ks", tyc(DType::I32, &[ti]), rng.ints(DType::I32, &[tv], 4));
    let mm = m.clone();
    let f = body(&[f32t(&[1, 2]), TensorType::scalar(DType::I32)], |g, a| {
        let w = g.param(&mm, 0);
        let y = g.matmul(a[0], w);
        let kf = g.push(Op::Cast, vec![a[1]], TensorType::scalar(DType::F32));
        let kb = g.broadcast(kf, &[d(1), d(3)]);
        let y = g.mul(y, kb);
        vec![g.unary(UnaryOp::Sigmoid, y)]
    });
    let r = scan(&mut b, f, 0, 2, &[xs, ks]);
    let l = b.project(r[0], &mut rng, &[tv, 1, 3]);
    let (f, inputs) = b.finish("loss", l);
    Problem::new(m, f, params, inputs)
}

/// A scan nested in a scan: an outer layer stack whose body runs an inner
/// RNN over time with the layer's weight, reading the sequence as a capture.
fn nested(tv: usize, seed: u64) -> Problem {
    let mut rng = Gen::new(seed);
    let (l, dm, ti) = (2i64, 2i64, tv as i64);
    let mut m = module(&[("blocks.w", f32t(&[l, dm, dm])), ("u", f32t(&[dm, dm]))]);
    m.params[0].stack = Some("blocks".into());
    let params = param_values(&m, &mut rng, 0.9);
    let mut b = Gb::new();
    let xs = b.input("xs", f32t(&[ti, 1, dm]), rng.f32s(&[tv, 1, dm as usize], -1.0, 1.0));
    let h0 = b.input("h0", f32t(&[1, dm]), rng.f32s(&[1, dm as usize], -1.0, 1.0));
    let w = b.param(&m, 0);
    let mm = m.clone();
    let row = f32t(&[1, dm]);
    let outer = body(&[row.clone(), f32t(&[dm, dm]), f32t(&[ti, 1, dm])], |g, a| {
        let (h, wl, seq) = (a[0], a[1], a[2]);
        let inner = body(&[row.clone(), row.clone(), f32t(&[dm, dm])], |gi, ai| {
            let p = gi.matmul(ai[0], ai[2]);
            let u = gi.param(&mm, 1);
            let q = gi.matmul(ai[1], u);
            let s = gi.add(p, q);
            let hn = gi.unary(UnaryOp::Tanh, s);
            vec![hn, hn]
        });
        let r = scan(g, inner, 1, 1, &[h, seq, wl]);
        let last = r[0];
        let total = g.reduce(ReduceOp::Sum, r[1], &[0], false);
        let half = g.konst(0.5, DType::F32);
        let half = g.broadcast(half, &[d(1), d(dm)]);
        let t = g.mul(total, half);
        vec![g.add(last, t)]
    });
    let r = scan(&mut b, outer, 1, 1, &[h0, w, xs]);
    let lo = b.project(r[0], &mut rng, &[1, dm as usize]);
    let (f, inputs) = b.finish("loss", lo);
    Problem::new(m, f, params, inputs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn mlp_cross_entropy(n in 1usize..=4, din in 1usize..=3, h in 1usize..=4, c in 1usize..=4, seed in any::<u64>()) {
        let p = mlp(n, din, h, c, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0])).map(|_| ()), Ok(()));
    }

    #[test]
    fn causal_attention_two_layers(bv in 1usize..=2, tv in 1usize..=3, seed in any::<u64>()) {
        let p = attention_block(bv, tv, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0])).map(|_| ()), Ok(()));
    }

    #[test]
    fn rnn_scan(bv in 1usize..=2, tv in 1usize..=4, din in 1usize..=3, dh in 1usize..=3, seed in any::<u64>()) {
        let p = rnn(bv, tv, din, dh, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0])).map(|_| ()), Ok(()));
    }

    #[test]
    fn lstm_two_carries(bv in 1usize..=2, tv in 1usize..=3, seed in any::<u64>()) {
        let p = lstm(bv, tv, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params()).map(|_| ()), Ok(()));
    }

    #[test]
    fn layer_stack_over_stacked_params(layers in 1usize..=3, n in 1usize..=2, dm in 1usize..=3, seed in any::<u64>()) {
        let p = layer_stack(layers, n, dm, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0])).map(|_| ()), Ok(()));
    }

    #[test]
    fn scan_with_captures_and_integer_carry(tv in 1usize..=3, seed in any::<u64>()) {
        let p = scan_kinds(tv, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0, 1, 2])).map(|_| ()), Ok(()));
    }

    #[test]
    fn scan_without_carries(tv in 1usize..=3, seed in any::<u64>()) {
        let p = map_scan(tv, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0])).map(|_| ()), Ok(()));
    }

    #[test]
    fn nested_scans(tv in 1usize..=3, seed in any::<u64>()) {
        let p = nested(tv, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0, 1])).map(|_| ()), Ok(()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn gpt_in_miniature(bv in 1usize..=2, tv in 1usize..=3, seed in any::<u64>()) {
        let p = mini_gpt(bv, tv, seed);
        prop_assert_eq!(check(&p, &Wrt::all_params()).map(|_| ()), Ok(()));
    }
}

/// Embedding lookup with repeated tokens, and the table also used as the
/// tied output head: both uses' gradients add up.
#[test]
fn embedding_gather_with_tied_head() {
    for seed in 0..4 {
        let mut rng = Gen::new(seed);
        let (v, dm, n) = (6i64, 3i64, 5usize);
        let m = module(&[("wte", f32t(&[v, dm]))]);
        let params = param_values(&m, &mut rng, 1.0);
        let mut b = Gb::new();
        let ids = b.index_input(
            "ids",
            tyc(DType::I64, &[n as i64]),
            d(v),
            Tensor::new(DType::I64, vec![n], vec![1.0, 4.0, 1.0, 0.0, 1.0]),
        );
        let y = b.index_input("y", tyc(DType::I64, &[n as i64]), d(v), rng.ints(DType::I64, &[n], v as usize));
        let wte = b.param(&m, 0);
        let x = b.push(Op::Gather { axis: 0 }, vec![wte, ids], f32t(&[n as i64, dm]));
        let x = b.unary(UnaryOp::Tanh, x);
        let head = b.transpose(wte, &[1, 0]);
        let logits = b.matmul(x, head);
        let l = cross_entropy(&mut b, logits, y);
        let (f, inputs) = b.finish("loss", l);
        let p = Problem::new(m, f, params, inputs);
        check(&p, &Wrt::all_params()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// The gradient of a scan of symbolic length also runs at length 1.
#[test]
fn rnn_of_length_one() {
    check(&rnn(2, 1, 2, 3, 7), &Wrt::all_params().with_inputs([0])).unwrap();
}
