//! FlashAttention kernels for `attention` and `attention_grad` nodes.
//!
//! The score matrix never reaches memory: each tile computes `S = Q·Kᵀ`
//! for one block of `Bq` queries and `Bk` keys into scratch (a [`Gemm`]),
//! scales and masks it there (the mask is read at its index through the
//! recipe of its node, so a broadcast padding mask costs a load per score
//! and no `[Sq, Sk]` buffer), and feeds the probabilities to a second
//! [`Gemm`].
//!
//! - **FA2 forward**: one tile per (batch, query head, Q block) streams the
//!   K/V blocks with an online softmax: running max `m` and sum `l` per row
//!   and an unnormalized output accumulator, all in scratch; each K/V block
//!   rescales the accumulator by `exp(m_old - m_new)` before `O += P·V`.
//!   Normalization is deferred to the end (`o = O / l`,
//!   `lse = [m, log l]`). Blocks entirely above the causal diagonal are
//!   skipped by a [`Stmt::If`].
//! - **FA1 forward**: the paper's algorithm — one tile per (batch, query
//!   head), the outer loop over K/V blocks, the inner over Q blocks, with
//!   `O`, `l` and `m` kept in memory (temporaries) between iterations, and
//!   `O` normalized after every step:
//!   `O ← diag(l_new)⁻¹ (diag(l_old)·e^{m_old − m_new}·O + e^{m̃ − m_new}·P̃·V)`
//!   (`P` is computed as `e^{S − m_new}` directly, which is the last term's
//!   `e^{m̃ − m_new}·P̃`). Rows with `l_new = 0` (every key so far masked)
//!   keep `O = 0` instead of dividing by zero.
//! - **Backward** (both variants): `Δ = rowsum(dO ∘ O)` first, then one of
//!   two schedules ([`AttnBackward`], chosen by the number of heads):
//!   *one pass* — a tile per (batch, key/value head) loops over K blocks
//!   outside and the group's query heads and Q blocks inside (FA1's
//!   backward order), so `P` and `dS` are computed once per block pair for
//!   `dK`, `dV` (in scratch) and `dQ` (f32 rows the tile's heads own);
//!   or *split* — a kernel with a tile per (batch, key/value head, K block)
//!   for `dK`, `dV` and one with a tile per (batch, query head, Q block)
//!   for `dQ`, each recomputing `P` and `dS`, for when heads are too few
//!   to keep the threads busy. Either way `P = exp((S − m) − log l)` is
//!   recomputed block by block (never stored) from `lse = [m, log l]`,
//!   causally invisible blocks are skipped, and tiles write disjoint
//!   outputs, so no atomics are needed. (Never `exp(S − (m + log l))`:
//!   next to `|m| ~ 1e38`, a row masked by a large finite bias, that sum
//!   rounds to `m` and `P` comes out `l` times too large.)
//!
//! Every kernel turns scores into probabilities in one function,
//! `probability`, per (Q block, K block) pair.
//!
//! With dropout, each probability is multiplied by its keep factor
//! (`z / (1 − p)`, drawn by [`Expr::Rand`] from the seed and the score
//! element's flat index, exactly as the naive dropout draws it) where it
//! meets `V`: after the row sum in the forward (`l` stays undropped), and
//! in the backward `dV` reads the dropped `P` while
//! `dS = P ∘ (z/(1−p) ∘ dP − Δ)`.
//!
//! Rows whose keys are all masked keep `m = −∞`; the update subtracts 0
//! instead of `m` there, so a fully masked block adds nothing rather than
//! NaN, and a row with no visible key at all ends as `0/0`, as in the
//! reference.
//!
//! # Block sizes
//!
//! Unless [`ScheduleOptions::attention_blocks`](super::ScheduleOptions)
//! forces them, `Bq = Bk = B` is the largest of 128, 64, 32, 16 whose
//! working set — the Q, K and V blocks as the GEMM packs them (f32), the
//! `Bq × Bk` score block and the `Bq × Dv` accumulator — fits in half of
//! the per-core L2 (the other half holds the GEMM's packed panels and the
//! streamed operands; one score row, `4·Bk` bytes, is what the softmax
//! loops touch, always far below L1), and whose per-tile scratch fits
//! [`SCRATCH_BUDGET`]. Then, where tiles own Q blocks (the FA2 forward and
//! the split backward), `Bq` halves (down to 16) until there are at least
//! two tiles per thread. With causal masking `B` is also at most a
//! quarter of the longer sequence: the blocks that straddle the diagonal
//! compute about half of their scores in vain, a fraction `B / 2S` of the
//! work (at most 1/8 then; at `S = 256`, 64 measured faster than 128).
//! Blocks never exceed the sequence lengths.

use super::builder::{KernelBuilder, Src};
use super::emit::{destination, launch, linear_aff, operand, pointwise, regions};
use super::index::{linearize, Ix};
use super::plan::GraphState;
use super::recipe::{bin, dropout};
use super::{Cx, ScheduleError, ScheduleOptions};
use crate::kernel::{Access, AttentionCall, BufKind, Expr, Gemm, Intrinsic, IntrinsicOp, Mem, Operand, RedOp, Stmt, TensorView};
use crate::{AttnMask, AttnVariant, Attention, BinaryOp, CmpOp, DType, Op, Type, UnaryOp, ValueId};
use std::collections::HashMap;

/// Per-tile scratch the block sizes may use, in bytes (a CPU tile's stack
/// frame; a GPU block's shared memory is of this order too).
pub const SCRATCH_BUDGET: u64 = 192 << 10;

/// The results of an attention node: `(o, lse)` or `(dq, dk, dv)`.
/// `outputs` names the entry's results: an element that is one is written
/// straight into its output buffer.
pub(crate) fn emit(cx: &mut Cx, gs: &GraphState, n: ValueId, outputs: Option<&[String]>) -> Result<Vec<Src>, ScheduleError> {
    let node = gs.g.node(n);
    let (Op::Attention(a) | Op::AttentionGrad(a)) = &node.op else { unreachable!("not attention") };
    let Type::Tuple(tys) = &node.ty else { unreachable!("attention yields a tuple") };
    let mut results = Vec::new();
    for (e, t) in tys.iter().enumerate() {
        let extract = (0..gs.g.nodes.len()).map(|i| ValueId(i as u32)).find(|&x| {
            let xn = gs.g.node(x);
            gs.materialize[x.index()] && xn.args.first() == Some(&n) && matches!(xn.op, Op::Extract { index } if index as usize == e)
        });
        results.push(match extract {
            Some(x) => destination(cx, gs, x, outputs)?,
            None => {
                let len = cx.numel(&t.shape)?;
                cx.buffer(t.dtype, len, BufKind::Temp, format!("%{}.{e}", n.0))
            }
        });
    }
    let backward = matches!(node.op, Op::AttentionGrad(_));
    let mut at = Attn::new(cx, gs, n, a, backward)?;
    // Dense copies of streamed operands first, so that the node's own
    // kernels are consecutive (the `kernel::intrinsic` invariant).
    let streamed: &[usize] = if backward { &[0, 1, 2, a.forward_arity() + 2] } else { &[0, 1, 2] };
    for &k in streamed {
        let mut kb = KernelBuilder::default();
        let shape = gs.shapes[node.args[k].index()].clone();
        let pre: Vec<Ix> = shape[..shape.len() - 2].iter().map(|&e| Ix::var(kb.var(e))).collect();
        at.operand(cx, gs, &mut kb, k, &pre, &Ix::constant(0))?;
    }
    let first = cx.prog.kernels.len() as u32;
    match (at.plan, a.variant) {
        (None, AttnVariant::Fa2) => at.fa2(cx, gs, &results[0], &results[1])?,
        (None, AttnVariant::Fa1) => at.fa1(cx, gs, &results[0], &results[1])?,
        (Some(plan), _) => at.backward(cx, gs, &results, plan)?,
    }
    let shapes: Vec<Vec<u64>> = if backward { (0..3).map(|k| gs.shapes[node.args[k].index()].clone()).collect() } else { vec![at.o_shape.clone(), at.lse_pairs()] };
    if node.args.iter().map(|x| &gs.shapes[x.index()]).chain(&shapes).any(|s| s.contains(&0)) {
        // A zero-size tensor: nothing for a backend's own kernels to do.
        return Ok(results);
    }
    let args = node.args.iter().map(|&x| super::intrinsic::arg_view(cx, gs, at.dense.get(&x), x)).collect::<Result<_, _>>()?;
    let call = AttentionCall { scale: a.scale, causal: at.causal, group: a.group, mask: a.mask, dropout: a.dropout };
    cx.prog.intrinsics.push(Intrinsic {
        op: if backward { IntrinsicOp::AttentionGrad(call) } else { IntrinsicOp::Attention(call) },
        kernels: first..cx.prog.kernels.len() as u32,
        args,
        results: results.iter().zip(shapes).map(|(r, s)| TensorView::dense(r.buf, r.offset.clone(), s)).collect(),
    });
    Ok(results)
}

/// One attention node's sizes and arguments.
struct Attn<'a> {
    a: &'a Attention,
    args: Vec<ValueId>,
    /// Batch axes (before the head axis, or before `Sq` without GQA).
    lead: Vec<u64>,
    hkv: u64,
    group: u64,
    sq: u64,
    sk: u64,
    d: u64,
    dv: u64,
    bq: u64,
    bk: u64,
    /// The backward schedule (`None` for a forward node).
    plan: Option<AttnBackward>,
    /// The causal offset's value.
    causal: Option<i64>,
    /// Shapes of `o` and of the query rows (`lse` has a pair per row, `Δ`
    /// a number).
    o_shape: Vec<u64>,
    lse_shape: Vec<u64>,
    /// Operands that are not strided views, stored densely once.
    dense: HashMap<ValueId, Src>,
}

/// The index prefixes (batch and head coordinates) of one query head and
/// of its key/value head.
struct Heads {
    q: Vec<Ix>,
    kv: Vec<Ix>,
}

/// A kernel being built whose tiles each own one Q block: the statements
/// so far define the tile's heads `h` and first row `q0`.
struct QTile {
    kb: KernelBuilder,
    body: Vec<Stmt>,
    grid: u64,
    h: Heads,
    q0: Ix,
}

/// One Q block against one K/V block of a head pair, with the scratch
/// that holds their `Bq × Bk` scores.
struct Pair<'h> {
    h: &'h Heads,
    q0: Ix,
    qsz: u64,
    k0: Ix,
    ksz: u64,
    s: Mem,
}

/// Where the online softmax keeps row `i` of the current Q block:
/// `m[base + i]`, `l[base + i]` and `o[(base + i)·Dv + e]`.
struct Running {
    m: Mem,
    l: Mem,
    o: Mem,
    base: Ix,
}

fn f(v: f64) -> Expr {
    Expr::Const(v, DType::F32)
}

fn ld(m: Mem, i: Expr) -> Expr {
    Expr::Load(m, Box::new(i))
}

fn un(op: UnaryOp, x: Expr) -> Expr {
    Expr::Unary(op, Box::new(x))
}

/// A dense row-major matrix in memory `mem`, starting at `offset`.
fn dense(mem: Mem, offset: Expr, row_stride: u64) -> Operand {
    Operand { mem, offset, row_stride, col_stride: 1 }
}

/// The same matrix transposed.
fn transposed(op: Operand) -> Operand {
    Operand { row_stride: op.col_stride, col_stride: op.row_stride, ..op }
}

fn let_(kb: &mut KernelBuilder, body: &mut Vec<Stmt>, value: Expr) -> Expr {
    let v = kb.var(1);
    body.push(Stmt::Let { var: v, value });
    Expr::Var(v)
}

impl<'a> Attn<'a> {
    fn new(cx: &Cx, gs: &GraphState, n: ValueId, a: &'a Attention, backward: bool) -> Result<Self, ScheduleError> {
        let node = gs.g.node(n);
        let args = node.args.clone();
        let (qs, ks, vs) = (&gs.shapes[args[0].index()], &gs.shapes[args[1].index()], &gs.shapes[args[2].index()]);
        let r = qs.len();
        let gqa = a.group != 1;
        let lead = qs[..r - 2 - gqa as usize].to_vec();
        let hkv = if gqa { ks[r - 3] } else { 1 };
        let causal = match &a.causal {
            Some(c) => Some(c.eval(cx.dims)?),
            None => None,
        };
        let (sq, sk, d, dv) = (qs[r - 2], ks[r - 2], qs[r - 1], vs[r - 1]);
        let mut o_shape = qs[..r - 1].to_vec();
        o_shape.push(dv);
        let lse_shape = qs[..r - 1].to_vec();
        let q_tiles: u64 = lse_shape[..r - 2].iter().product();
        let plan = backward.then(|| backward_plan(cx.opts, q_tiles / a.group as u64));
        // Tiles own Q blocks in the FA2 forward and the split backward.
        let per_q_block = match plan {
            Some(p) => p == AttnBackward::Split,
            None => a.variant == AttnVariant::Fa2,
        };
        let (bq, bk) = block_sizes(cx.opts, (sq, sk, d, dv), per_q_block.then_some(q_tiles), backward, causal.is_some());
        Ok(Attn { a, args, lead, hkv, group: a.group as u64, sq, sk, d, dv, bq, bk, plan, causal, o_shape, lse_shape, dense: HashMap::new() })
    }

    fn gqa(&self) -> bool {
        self.group != 1
    }

    /// The shape of the `lse` result: `[m, log l]` per query row.
    fn lse_pairs(&self) -> Vec<u64> {
        self.lse_shape.iter().copied().chain([2]).collect()
    }

    /// Tile dimensions over query heads: batch axes, then (with GQA) the
    /// key/value head and the head within its group.
    fn q_head_dims(&self) -> Vec<u64> {
        let mut d = self.lead.clone();
        if self.gqa() {
            d.extend([self.hkv, self.group]);
        }
        d
    }

    /// Tile dimensions over key/value heads.
    fn kv_head_dims(&self) -> Vec<u64> {
        let mut d = self.lead.clone();
        if self.gqa() {
            d.push(self.hkv);
        }
        d
    }

    /// The prefixes of query head `g` of key/value head coordinates `kv`
    /// (batch coordinates, then the key/value head with GQA).
    fn heads(&self, kv: &[Ix], g: Option<&Ix>) -> Heads {
        let mut q = kv.to_vec();
        if let (true, Some(hk), Some(g)) = (self.gqa(), kv.last(), g) {
            *q.last_mut().expect("head axis") = hk.scale(self.group as i64).add(g);
        }
        Heads { q, kv: kv.to_vec() }
    }

    /// A kernel `name` with a tile per (batch, query head, Q block) over
    /// `count` blocks of `Bq` rows from row `first`.
    fn q_tile(&self, name: &str, first: u64, count: u64) -> QTile {
        let mut kb = KernelBuilder::default();
        kb.note(name.into());
        let mut body = Vec::new();
        let mut dims = self.q_head_dims();
        dims.push(count);
        let coords = kb.tile_coords(&dims, &mut body);
        let (hc, qb) = coords.split_at(coords.len() - 1);
        let h = self.q_heads(hc);
        let q0 = qb[0].scale(self.bq as i64).add(&Ix::constant(first as i64));
        QTile { kb, body, grid: dims.iter().product(), h, q0 }
    }

    /// A kernel `name` with a tile per (batch, query head): the builder,
    /// the statements that define the tile's coordinates, the grid and
    /// the tile's heads.
    fn head_tile(&self, name: &str) -> (KernelBuilder, Vec<Stmt>, u64, Heads) {
        let mut kb = KernelBuilder::default();
        kb.note(name.into());
        let mut body = Vec::new();
        let dims = self.q_head_dims();
        let coords = kb.tile_coords(&dims, &mut body);
        let h = self.q_heads(&coords);
        (kb, body, dims.iter().product(), h)
    }

    /// Heads of a tile over [`Attn::q_head_dims`].
    fn q_heads(&self, coords: &[Ix]) -> Heads {
        if self.gqa() {
            let (kv, g) = coords.split_at(coords.len() - 1);
            self.heads(kv, Some(&g[0]))
        } else {
            self.heads(coords, None)
        }
    }

    /// Whether any key of the block at `k0` is visible to a query of the
    /// block `q0..q0 + qsz` (`None`: always, without causal masking).
    fn visible(&self, q0: &Ix, qsz: u64, k0: &Ix) -> Option<Expr> {
        let c = self.causal?;
        let last = q0.add(&Ix::constant(qsz as i64 - 1 + c));
        Some(Expr::Cmp(CmpOp::Le, Box::new(k0.to_expr()), Box::new(last.to_expr())))
    }

    /// Rows `r0..` of argument `k` at head prefix `pre` as a GEMM operand
    /// (rows: sequence positions, columns: features), read in place when it
    /// is a strided view of memory, else stored densely first.
    fn operand(&mut self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, k: usize, pre: &[Ix], r0: &Ix) -> Result<Operand, ScheduleError> {
        let node = self.args[k];
        let shape = gs.shapes[node.index()].clone();
        let r = shape.len();
        let (rv, cv) = (kb.var(shape[r - 2]), kb.var(shape[r - 1]));
        let idx: Vec<Ix> = pre.iter().cloned().chain([Ix::var(rv), Ix::var(cv)]).collect();
        let found = match self.dense.get(&node) {
            Some(s) => Some((s.clone(), linear_aff(&idx, &shape))),
            None => operand(cx, gs, kb, node, &idx)?,
        };
        let (src, aff) = match found {
            Some((s, a)) if a.coeff(rv) >= 0 && a.coeff(cv) >= 0 => (s, a),
            _ => {
                let t = gs.g.tensor_type(node);
                let tmp = cx.buffer(t.dtype, shape.iter().product(), BufKind::Temp, format!("%{}.dense", node.0));
                pointwise(cx, gs, node, &tmp)?;
                self.dense.insert(node, tmp.clone());
                (tmp, linear_aff(&idx, &shape))
            }
        };
        let offset = Ix::Aff(aff.without(rv).without(cv)).add(&r0.scale(aff.coeff(rv)));
        Ok(Operand { mem: kb.arg(&src, Access::Read), offset: offset.to_expr(), row_stride: aff.coeff(rv) as u64, col_stride: aff.coeff(cv) as u64 })
    }

    /// The scaled, masked score of query `row` and key `col` from `q · k`.
    fn score(&self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, qpre: &[Ix], (row, col): (&Ix, &Ix), dot: Expr) -> Result<Expr, ScheduleError> {
        let mut s = bin(BinaryOp::Mul, dot, f(self.a.scale));
        let neg_inf = f(f64::NEG_INFINITY);
        if self.a.mask != AttnMask::None {
            let idx: Vec<Ix> = qpre.iter().cloned().chain([row.clone(), col.clone()]).collect();
            let m = gs.value(cx, kb, self.args[3], &idx)?;
            s = match self.a.mask {
                AttnMask::Bias => bin(BinaryOp::Add, s, m),
                _ => Expr::Select(Box::new(m), Box::new(s), Box::new(neg_inf.clone())),
            };
        }
        if let Some(c) = self.causal {
            let limit = row.add(&Ix::constant(c));
            let hidden = Expr::Cmp(CmpOp::Gt, Box::new(col.to_expr()), Box::new(limit.to_expr()));
            s = Expr::Select(Box::new(hidden), Box::new(neg_inf), Box::new(s));
        }
        Ok(s)
    }

    /// `x` times the dropout keep factor of score `(row, col)` of query
    /// head `qpre` (`x` itself without dropout).
    fn dropped(&self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, qpre: &[Ix], (row, col): (&Ix, &Ix), x: Expr) -> Result<Expr, ScheduleError> {
        let Some(seed) = self.a.seed_arg() else { return Ok(x) };
        let seed = gs.value(cx, kb, self.args[seed], &[])?;
        let rows: Vec<Ix> = qpre.iter().cloned().chain([row.clone()]).collect();
        let counter = linearize(&rows, &self.lse_shape).scale(self.sk as i64).add(col);
        Ok(dropout(x, seed, counter.to_expr(), self.a.dropout, DType::F32))
    }

    /// `S = Q·Kᵀ` for one block pair into scratch `s` (row stride `Bk`).
    fn scores_gemm(&mut self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, p: &Pair) -> Result<Stmt, ScheduleError> {
        let a = self.operand(cx, gs, kb, 0, &p.h.q, &p.q0)?;
        let b = transposed(self.operand(cx, gs, kb, 1, &p.h.kv, &p.k0)?);
        Ok(Stmt::Gemm(Gemm { m: p.qsz, n: p.ksz, k: self.d, a, b, c: dense(p.s, Expr::idx(0), self.bk), accumulate: false }))
    }

    /// One online-softmax step: K/V block `k0..k0 + ksz` into the running
    /// state of Q block `q0..q0 + qsz`, with scores in scratch `s`. With
    /// `normalized` (FA1) the accumulator stays normalized after every
    /// step, as the paper writes it: `O ← (l_old·α·O + P·V) / l_new`;
    /// otherwise (FA2) it only rescales, `O ← α·O + P·V`, and
    /// [`Attn::finish_rows`] divides by `l` once.
    fn forward_block(&mut self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, p: &Pair, run: &Running, normalized: bool) -> Result<Vec<Stmt>, ScheduleError> {
        let mut body = vec![self.scores_gemm(cx, gs, kb, p)?];
        let (h, q0, qsz, k0, ksz, s) = (p.h, &p.q0, p.qsz, &p.k0, p.ksz, p.s);
        let i = kb.var(qsz);
        let row = q0.add(&Ix::var(i));
        let at = |j: crate::kernel::Var| Ix::var(i).scale(self.bk as i64).add(&Ix::var(j)).to_expr();
        let mut rb = Vec::new();
        let j = kb.var(ksz);
        let sc = self.score(cx, gs, kb, &h.q, (&row, &k0.add(&Ix::var(j))), ld(s, at(j)))?;
        rb.push(Stmt::Loop { var: j, extent: ksz, vector: true, body: vec![Stmt::Store { mem: s, index: at(j), value: sc }] });
        let (mx, j) = (kb.var(1), kb.var(ksz));
        rb.push(Stmt::Reduce { var: mx, op: RedOp::Max, index: j, extent: ksz, vector: true, value: ld(s, at(j)) });
        let ri = run.base.add(&Ix::var(i)).to_expr();
        let m_old = let_(kb, &mut rb, ld(run.m, ri.clone()));
        let m_new = let_(kb, &mut rb, bin(BinaryOp::Max, m_old.clone(), Expr::Var(mx)));
        // Subtracting 0 while every score so far is -inf keeps exp() at 0.
        let all_masked = Expr::Cmp(CmpOp::Eq, Box::new(m_new.clone()), Box::new(f(f64::NEG_INFINITY)));
        let m_safe = let_(kb, &mut rb, Expr::Select(Box::new(all_masked), Box::new(f(0.0)), Box::new(m_new.clone())));
        let alpha = let_(kb, &mut rb, un(UnaryOp::Exp, bin(BinaryOp::Sub, m_old.clone(), m_safe.clone())));
        let j = kb.var(ksz);
        rb.push(Stmt::Loop { var: j, extent: ksz, vector: true, body: vec![Stmt::Store { mem: s, index: at(j), value: probability(ld(s, at(j)), m_safe) }] });
        let (sum, j) = (kb.var(1), kb.var(ksz));
        rb.push(Stmt::Reduce { var: sum, op: RedOp::Sum, index: j, extent: ksz, vector: true, value: ld(s, at(j)) });
        if self.a.dropout != 0.0 {
            // l sums the undropped probabilities; O accumulates dropped ones.
            let j = kb.var(ksz);
            let p = self.dropped(cx, gs, kb, &h.q, (&row, &k0.add(&Ix::var(j))), ld(s, at(j)))?;
            rb.push(Stmt::Loop { var: j, extent: ksz, vector: true, body: vec![Stmt::Store { mem: s, index: at(j), value: p }] });
        }
        let l_old = let_(kb, &mut rb, ld(run.l, ri.clone()));
        let l_new = let_(kb, &mut rb, bin(BinaryOp::Add, bin(BinaryOp::Mul, l_old.clone(), alpha.clone()), Expr::Var(sum)));
        rb.push(Stmt::Store { mem: run.l, index: ri.clone(), value: l_new.clone() });
        rb.push(Stmt::Store { mem: run.m, index: ri, value: m_new.clone() });
        let rescale = if normalized {
            // l_new is 0 while every key so far is masked: O and P stay 0.
            let empty = Expr::Cmp(CmpOp::Eq, Box::new(l_new.clone()), Box::new(f(0.0)));
            let inv = let_(kb, &mut rb, Expr::Select(Box::new(empty), Box::new(f(0.0)), Box::new(bin(BinaryOp::Div, f(1.0), l_new))));
            let j = kb.var(ksz);
            rb.push(Stmt::Loop { var: j, extent: ksz, vector: true, body: vec![Stmt::Store { mem: s, index: at(j), value: bin(BinaryOp::Mul, ld(s, at(j)), inv.clone()) }] });
            let_(kb, &mut rb, bin(BinaryOp::Mul, bin(BinaryOp::Mul, l_old, alpha), inv))
        } else {
            alpha
        };
        let e = kb.var(self.dv);
        let oi = run.base.add(&Ix::var(i)).scale(self.dv as i64).add(&Ix::var(e)).to_expr();
        let scaled = bin(BinaryOp::Mul, ld(run.o, oi.clone()), rescale);
        let rescale = Stmt::Loop { var: e, extent: self.dv, vector: true, body: vec![Stmt::Store { mem: run.o, index: oi, value: scaled }] };
        rb.push(match normalized {
            true => rescale,
            // α = e^0 = 1 unless the max moved (or is NaN): once the max
            // has settled, later blocks skip the pass over the accumulator.
            false => Stmt::If { cond: Expr::Cmp(CmpOp::Ne, Box::new(m_old), Box::new(m_new)), body: vec![rescale] },
        });
        body.push(Stmt::Loop { var: i, extent: qsz, vector: false, body: rb });
        let v = self.operand(cx, gs, kb, 2, &h.kv, k0)?;
        let o = dense(run.o, run.base.scale(self.dv as i64).to_expr(), self.dv);
        body.push(Stmt::Gemm(Gemm { m: qsz, n: self.dv, k: ksz, a: dense(s, Expr::idx(0), self.bk), b: v, c: o, accumulate: true }));
        Ok(body)
    }

    /// Running state of `rows` rows set to `m = -inf`, `l = 0`, `O = 0`.
    fn init_running(&self, kb: &mut KernelBuilder, run: &Running, rows: u64) -> Vec<Stmt> {
        let i = kb.var(rows);
        let ri = run.base.add(&Ix::var(i)).to_expr();
        let e = kb.var(rows * self.dv);
        let oi = run.base.scale(self.dv as i64).add(&Ix::var(e)).to_expr();
        vec![
            Stmt::Loop {
                var: i,
                extent: rows,
                vector: true,
                body: vec![Stmt::Store { mem: run.m, index: ri.clone(), value: f(f64::NEG_INFINITY) }, Stmt::Store { mem: run.l, index: ri, value: f(0.0) }],
            },
            Stmt::Loop { var: e, extent: rows * self.dv, vector: true, body: vec![Stmt::Store { mem: run.o, index: oi, value: f(0.0) }] },
        ]
    }

    /// `o = O / l` (`o = O` when the accumulator is already `normalized`)
    /// and `lse = [m, log l]` for rows `q0..q0 + qsz`.
    fn finish_rows(&self, kb: &mut KernelBuilder, h: &Heads, (q0, qsz): (&Ix, u64), run: &Running, (o, lse): (&Src, &Src), normalized: bool) -> Vec<Stmt> {
        let (om, lm) = (kb.arg(o, Access::Write), kb.arg(lse, Access::Write));
        let i = kb.var(qsz);
        let row = q0.add(&Ix::var(i));
        let ri = run.base.add(&Ix::var(i)).to_expr();
        let mut rb = Vec::new();
        let l = let_(kb, &mut rb, ld(run.l, ri.clone()));
        // l is 0 exactly when every key is masked: NaN, as the naive softmax.
        let empty = Expr::Cmp(CmpOp::Eq, Box::new(l.clone()), Box::new(f(0.0)));
        let factor = match normalized {
            true => Expr::Select(Box::new(empty.clone()), Box::new(f(f64::NAN)), Box::new(f(1.0))),
            false => bin(BinaryOp::Div, f(1.0), l.clone()),
        };
        let factor = let_(kb, &mut rb, factor);
        let e = kb.var(self.dv);
        let oi = run.base.add(&Ix::var(i)).scale(self.dv as i64).add(&Ix::var(e)).to_expr();
        let out: Vec<Ix> = h.q.iter().cloned().chain([row.clone(), Ix::var(e)]).collect();
        let value = bin(BinaryOp::Mul, ld(run.o, oi), factor);
        rb.push(Stmt::Loop { var: e, extent: self.dv, vector: true, body: vec![Stmt::Store { mem: om, index: linearize(&out, &self.o_shape).to_expr(), value }] });
        let pairs = self.lse_pairs();
        let at = |k: i64| linearize(&h.q.iter().cloned().chain([row.clone(), Ix::constant(k)]).collect::<Vec<_>>(), &pairs).to_expr();
        rb.push(Stmt::Store { mem: lm, index: at(0), value: ld(run.m, ri) });
        let log_l = Expr::Select(Box::new(empty), Box::new(f(f64::NAN)), Box::new(un(UnaryOp::Log, l)));
        rb.push(Stmt::Store { mem: lm, index: at(1), value: log_l });
        vec![Stmt::Loop { var: i, extent: qsz, vector: false, body: rb }]
    }

    /// FlashAttention-2: a tile per Q block, streaming K/V.
    fn fa2(&mut self, cx: &mut Cx, gs: &GraphState, o: &Src, lse: &Src) -> Result<(), ScheduleError> {
        for (first, qsz, count) in regions(self.sq, self.bq) {
            let QTile { mut kb, mut body, grid, h, q0 } = self.q_tile("attention_fa2", first, count);
            let s = kb.scratch(DType::F32, self.bq * self.bk);
            let run = Running { m: kb.scratch(DType::F32, qsz), l: kb.scratch(DType::F32, qsz), o: kb.scratch(DType::F32, qsz * self.dv), base: Ix::constant(0) };
            body.extend(self.init_running(&mut kb, &run, qsz));
            let (sk, bk) = (self.sk, self.bk);
            for (v, k0, ksz) in block_starts(&mut kb, sk, bk) {
                let cond = self.visible(&q0, qsz, &k0);
                let inner = self.forward_block(cx, gs, &mut kb, &Pair { h: &h, q0: q0.clone(), qsz, k0, ksz, s }, &run, false)?;
                body.extend(wrap(v, sk / bk, cond, inner));
            }
            body.extend(self.finish_rows(&mut kb, &h, (&q0, qsz), &run, (o, lse), false));
            launch(cx, kb, grid, body);
        }
        Ok(())
    }

    /// FlashAttention-1: a tile per head; K/V blocks outside, Q blocks
    /// inside, the running state in memory.
    fn fa1(&mut self, cx: &mut Cx, gs: &GraphState, o: &Src, lse: &Src) -> Result<(), ScheduleError> {
        let rows: u64 = self.lse_shape.iter().product();
        let m = cx.buffer(DType::F32, rows, BufKind::Temp, "attention.m".into());
        let l = cx.buffer(DType::F32, rows, BufKind::Temp, "attention.l".into());
        let acc = cx.buffer(DType::F32, rows * self.dv, BufKind::Temp, "attention.o".into());
        let (mut kb, mut body, grid, h) = self.head_tile("attention_fa1");
        let (hq, lse_shape) = (h.q.clone(), self.lse_shape.clone());
        let base_of = move |q0: &Ix| {
            let idx: Vec<Ix> = hq.iter().cloned().chain([q0.clone()]).collect();
            linearize(&idx, &lse_shape)
        };
        let (mm, lm, am) = (kb.arg(&m, Access::ReadWrite), kb.arg(&l, Access::ReadWrite), kb.arg(&acc, Access::ReadWrite));
        let whole = Running { m: mm, l: lm, o: am, base: base_of(&Ix::constant(0)) };
        body.extend(self.init_running(&mut kb, &whole, self.sq));
        let s = kb.scratch(DType::F32, self.bq * self.bk);
        let (sq, bq, sk, bk) = (self.sq, self.bq, self.sk, self.bk);
        for (kv, k0, ksz) in block_starts(&mut kb, sk, bk) {
            let mut outer = Vec::new();
            for (qv, q0, qsz) in block_starts(&mut kb, sq, bq) {
                let run = Running { m: mm, l: lm, o: am, base: base_of(&q0) };
                let cond = self.visible(&q0, qsz, &k0);
                let inner = self.forward_block(cx, gs, &mut kb, &Pair { h: &h, q0, qsz, k0: k0.clone(), ksz, s }, &run, true)?;
                outer.extend(wrap(qv, sq / bq, cond, inner));
            }
            body.extend(wrap(kv, sk / bk, None, outer));
        }
        body.extend(self.finish_rows(&mut kb, &h, (&Ix::constant(0), sq), &whole, (o, lse), true));
        launch(cx, kb, grid, body);
        Ok(())
    }

    /// `Δ`, then the gradients in one pass or in two kernels (see
    /// [`AttnBackward`]).
    fn backward(&mut self, cx: &mut Cx, gs: &GraphState, out: &[Src], plan: AttnBackward) -> Result<(), ScheduleError> {
        let delta = self.delta(cx, gs)?;
        match plan {
            AttnBackward::OnePass => self.one_pass(cx, gs, out, &delta),
            AttnBackward::Split => self.split(cx, gs, out, &delta),
        }
    }

    /// `Δ = rowsum(dO ∘ O)`: a kernel with a tile per query head.
    fn delta(&mut self, cx: &mut Cx, gs: &GraphState) -> Result<Src, ScheduleError> {
        let nf = self.a.forward_arity();
        let rows: u64 = self.lse_shape.iter().product();
        let delta = cx.buffer(DType::F32, rows, BufKind::Temp, "attention.delta".into());
        let (mut kb, mut body, grid, h) = self.head_tile("attention_delta");
        let (i, e, sum) = (kb.var(self.sq), kb.var(self.dv), kb.var(1));
        let idx: Vec<Ix> = h.q.iter().cloned().chain([Ix::var(i), Ix::var(e)]).collect();
        let x = gs.value(cx, &mut kb, self.args[nf + 2], &idx)?;
        let y = gs.value(cx, &mut kb, self.args[nf], &idx)?;
        let dm = kb.arg(&delta, Access::Write);
        let li: Vec<Ix> = h.q.iter().cloned().chain([Ix::var(i)]).collect();
        let rb = vec![
            Stmt::Reduce { var: sum, op: RedOp::Sum, index: e, extent: self.dv, vector: true, value: bin(BinaryOp::Mul, x, y) },
            Stmt::Store { mem: dm, index: linearize(&li, &self.lse_shape).to_expr(), value: Expr::Var(sum) },
        ];
        body.push(Stmt::Loop { var: i, extent: self.sq, vector: false, body: rb });
        launch(cx, kb, grid, body);
        Ok(delta)
    }

    /// One kernel, a tile per (batch, key/value head): K blocks outside,
    /// the group's query heads and their Q blocks inside (FA1's order).
    /// Each block pair recomputes `P` and `dS` once and feeds all three
    /// gradients: `dK`, `dV` of the K block accumulate in scratch, `dQ` in
    /// f32 rows of a temporary that only this tile's heads touch.
    fn one_pass(&mut self, cx: &mut Cx, gs: &GraphState, out: &[Src], delta: &Src) -> Result<(), ScheduleError> {
        let (sq, bq, sk, bk, d) = (self.sq, self.bq, self.sk, self.bk, self.d);
        let mut kb = KernelBuilder::default();
        kb.note("attention_bwd".into());
        let mut body = Vec::new();
        let dims = self.kv_head_dims();
        let kvc = kb.tile_coords(&dims, &mut body);
        let q_shape = self.arg_shape(0);
        let acc = cx.buffer(DType::F32, q_shape.iter().product(), BufKind::Temp, "attention.dq".into());
        let dq = kb.arg(&acc, Access::ReadWrite);
        // The group's query heads are consecutive: their dQ rows are one range.
        let first = self.heads(&kvc, Some(&Ix::constant(0)));
        let row0 = |h: &Heads, r: &Ix| linearize(&h.q.iter().cloned().chain([r.clone(), Ix::constant(0)]).collect::<Vec<_>>(), &q_shape);
        let rows0 = row0(&first, &Ix::constant(0));
        let n = self.group * sq * d;
        let z = kb.var(n);
        body.push(Stmt::Loop { var: z, extent: n, vector: true, body: vec![Stmt::Store { mem: dq, index: rows0.add(&Ix::var(z)).to_expr(), value: f(0.0) }] });
        let (s, dp) = (kb.scratch(DType::F32, bq * bk), kb.scratch(DType::F32, bq * bk));
        let (dk, dv) = (kb.scratch(DType::F32, bk * d), kb.scratch(DType::F32, bk * self.dv));
        let dq_rows = |h: &Heads, q0: &Ix| dense(dq, row0(h, q0).to_expr(), d);
        for (kv, k0, ksz) in block_starts(&mut kb, sk, bk) {
            let outer = self.kv_block(cx, gs, &mut kb, &kvc, (&k0, ksz), (s, dp, dk, dv), (delta, out), Some(&dq_rows))?;
            body.extend(wrap(kv, sk / bk, None, outer));
        }
        let g = self.gqa().then(|| kb.var(self.group));
        let h = self.heads(&kvc, g.map(Ix::var).as_ref());
        let rows = self.write_rows(&mut kb, &out[0], &h.q, (&Ix::constant(0), sq), (dq, row0(&h, &Ix::constant(0))), 0);
        body.extend(group_loop(g, self.group, rows));
        launch(cx, kb, dims.iter().product(), body);
        Ok(())
    }

    /// Two kernels: a tile per (batch, key/value head, K block) accumulates
    /// `dK`, `dV` over the group's query heads and Q blocks, then a tile per
    /// (batch, query head, Q block) accumulates `dQ` over the K blocks.
    fn split(&mut self, cx: &mut Cx, gs: &GraphState, out: &[Src], delta: &Src) -> Result<(), ScheduleError> {
        let (sq, bq, sk, bk) = (self.sq, self.bq, self.sk, self.bk);
        for (first, ksz, count) in regions(sk, bk) {
            let mut kb = KernelBuilder::default();
            kb.note("attention_dkv".into());
            let mut body = Vec::new();
            let mut dims = self.kv_head_dims();
            dims.push(count);
            let coords = kb.tile_coords(&dims, &mut body);
            let (kvc, kbc) = coords.split_at(coords.len() - 1);
            let k0 = kbc[0].scale(bk as i64).add(&Ix::constant(first as i64));
            let (s, dp) = (kb.scratch(DType::F32, bq * bk), kb.scratch(DType::F32, bq * bk));
            let (dk, dv) = (kb.scratch(DType::F32, ksz * self.d), kb.scratch(DType::F32, ksz * self.dv));
            body.extend(self.kv_block(cx, gs, &mut kb, kvc, (&k0, ksz), (s, dp, dk, dv), (delta, out), None)?);
            launch(cx, kb, dims.iter().product(), body);
        }
        for (first, qsz, count) in regions(sq, bq) {
            let QTile { mut kb, mut body, grid, h, q0 } = self.q_tile("attention_dq", first, count);
            let (s, dp) = (kb.scratch(DType::F32, bq * bk), kb.scratch(DType::F32, bq * bk));
            let dq = kb.scratch(DType::F32, qsz * self.d);
            body.extend(zero(&mut kb, dq, qsz * self.d));
            for (kv, k0, ksz) in block_starts(&mut kb, sk, bk) {
                let cond = self.visible(&q0, qsz, &k0);
                let p = Pair { h: &h, q0: q0.clone(), qsz, k0: k0.clone(), ksz, s };
                let mut inner = self.grad_block(cx, gs, &mut kb, &p, dp, delta)?;
                inner.push(self.q_grad(cx, gs, &mut kb, &p, dp, dense(dq, Expr::idx(0), self.d))?);
                body.extend(wrap(kv, sk / bk, cond, inner));
            }
            body.extend(self.write_rows(&mut kb, &out[0], &h.q, (&q0, qsz), (dq, Ix::constant(0)), 0));
            launch(cx, kb, grid, body);
        }
        Ok(())
    }

    /// One K block of the key/value heads `kvc`: `dK`, `dV` zeroed in
    /// scratch, accumulated over the group's query heads and their visible
    /// Q blocks, and written out; with `dq`, also `dQ += dS·K` into the
    /// rows `dq(heads, q0)` of each Q block. Scratch: scores, `dS`, `dK`,
    /// `dV`.
    #[allow(clippy::too_many_arguments)]
    fn kv_block(
        &mut self,
        cx: &mut Cx,
        gs: &GraphState,
        kb: &mut KernelBuilder,
        kvc: &[Ix],
        (k0, ksz): (&Ix, u64),
        (s, dp, dk, dv): (Mem, Mem, Mem, Mem),
        (delta, out): (&Src, &[Src]),
        dq: Option<&dyn Fn(&Heads, &Ix) -> Operand>,
    ) -> Result<Vec<Stmt>, ScheduleError> {
        let (sq, bq) = (self.sq, self.bq);
        let mut body = zero(kb, dk, ksz * self.d);
        body.extend(zero(kb, dv, ksz * self.dv));
        let g = self.gqa().then(|| kb.var(self.group));
        let h = self.heads(kvc, g.map(Ix::var).as_ref());
        let mut per_head = Vec::new();
        for (qv, q0, qsz) in block_starts(kb, sq, bq) {
            let cond = self.visible(&q0, qsz, k0);
            let p = Pair { h: &h, q0: q0.clone(), qsz, k0: k0.clone(), ksz, s };
            let mut inner = self.grad_block(cx, gs, kb, &p, dp, delta)?;
            inner.extend(self.kv_grads(cx, gs, kb, &p, dp, (dk, dv))?);
            if let Some(dq) = dq {
                inner.push(self.q_grad(cx, gs, kb, &p, dp, dq(&h, &q0))?);
            }
            per_head.extend(wrap(qv, sq / bq, cond, inner));
        }
        body.extend(group_loop(g, self.group, per_head));
        body.extend(self.write_rows(kb, &out[1], &h.kv, (k0, ksz), (dk, Ix::constant(0)), 1));
        body.extend(self.write_rows(kb, &out[2], &h.kv, (k0, ksz), (dv, Ix::constant(0)), 2));
        Ok(body)
    }

    /// `dV += Pᵀ·dO` and `dK += dSᵀ·Q` for one block pair (`P` in its
    /// scratch, `dS` in `dp`), into scratch rows of the K block.
    fn kv_grads(&mut self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, p: &Pair, dp: Mem, (dk, dv): (Mem, Mem)) -> Result<[Stmt; 2], ScheduleError> {
        let dout = self.operand(cx, gs, kb, self.a.forward_arity() + 2, &p.h.q, &p.q0)?;
        let pt = transposed(dense(p.s, Expr::idx(0), self.bk));
        let q = self.operand(cx, gs, kb, 0, &p.h.q, &p.q0)?;
        let dst = transposed(dense(dp, Expr::idx(0), self.bk));
        Ok([
            Stmt::Gemm(Gemm { m: p.ksz, n: self.dv, k: p.qsz, a: pt, b: dout, c: dense(dv, Expr::idx(0), self.dv), accumulate: true }),
            Stmt::Gemm(Gemm { m: p.ksz, n: self.d, k: p.qsz, a: dst, b: q, c: dense(dk, Expr::idx(0), self.d), accumulate: true }),
        ])
    }

    /// `dQ += dS·K` for one block pair into the Q block's rows `dq`.
    fn q_grad(&mut self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, p: &Pair, dp: Mem, dq: Operand) -> Result<Stmt, ScheduleError> {
        let k = self.operand(cx, gs, kb, 1, &p.h.kv, &p.k0)?;
        Ok(Stmt::Gemm(Gemm { m: p.qsz, n: self.d, k: p.ksz, a: dense(dp, Expr::idx(0), self.bk), b: k, c: dq, accumulate: true }))
    }

    /// For one block pair: `P = exp((S − m) − log l)` (dropped, with dropout) into
    /// scratch `s` and `dS = P ∘ (dO·Vᵀ − Δ) · scale` (with `dO·Vᵀ`
    /// dropped) into scratch `dp`.
    fn grad_block(&mut self, cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, p: &Pair, dp: Mem, delta: &Src) -> Result<Vec<Stmt>, ScheduleError> {
        let nf = self.a.forward_arity();
        let mut body = vec![self.scores_gemm(cx, gs, kb, p)?];
        let (h, q0, qsz, k0, ksz, s) = (p.h, &p.q0, p.qsz, &p.k0, p.ksz, p.s);
        let dout = self.operand(cx, gs, kb, nf + 2, &h.q, q0)?;
        let vt = transposed(self.operand(cx, gs, kb, 2, &h.kv, k0)?);
        body.push(Stmt::Gemm(Gemm { m: qsz, n: ksz, k: self.dv, a: dout, b: vt, c: dense(dp, Expr::idx(0), self.bk), accumulate: false }));
        let i = kb.var(qsz);
        let row = q0.add(&Ix::var(i));
        let li: Vec<Ix> = h.q.iter().cloned().chain([row.clone()]).collect();
        let mut rb = Vec::new();
        let mut stat = |k: i64| -> Result<Expr, ScheduleError> {
            let idx: Vec<Ix> = li.iter().cloned().chain([Ix::constant(k)]).collect();
            let x = gs.value(cx, kb, self.args[nf + 1], &idx)?;
            Ok(let_(kb, &mut rb, x))
        };
        let (m, log_l) = (stat(0)?, stat(1)?);
        let dm = kb.arg(delta, Access::Read);
        let dl = let_(kb, &mut rb, ld(dm, linearize(&li, &self.lse_shape).to_expr()));
        let j = kb.var(ksz);
        let at = Ix::var(i).scale(self.bk as i64).add(&Ix::var(j)).to_expr();
        let sc = self.score(cx, gs, kb, &h.q, (&row, &k0.add(&Ix::var(j))), ld(s, at.clone()))?;
        let prob = kb.var(1);
        // With dropout, dV reads the dropped P and dS the dropped dP.
        let col = k0.add(&Ix::var(j));
        let kept = self.dropped(cx, gs, kb, &h.q, (&row, &col), Expr::Var(prob))?;
        let dpd = self.dropped(cx, gs, kb, &h.q, (&row, &col), ld(dp, at.clone()))?;
        let ds = bin(BinaryOp::Mul, bin(BinaryOp::Mul, Expr::Var(prob), bin(BinaryOp::Sub, dpd, dl)), f(self.a.scale));
        let jb = vec![
            Stmt::Let { var: prob, value: probability(bin(BinaryOp::Sub, sc, m), log_l) },
            Stmt::Store { mem: s, index: at.clone(), value: kept },
            Stmt::Store { mem: dp, index: at, value: ds },
        ];
        rb.push(Stmt::Loop { var: j, extent: ksz, vector: true, body: jb });
        body.push(Stmt::Loop { var: i, extent: qsz, vector: false, body: rb });
        Ok(body)
    }

    /// Stores rows `r0..r0 + rows` of a gradient accumulated densely from
    /// element `at` of `acc` into result `dst` (shaped like argument `k`).
    fn write_rows(&self, kb: &mut KernelBuilder, dst: &Src, pre: &[Ix], (r0, rows): (&Ix, u64), (acc, at): (Mem, Ix), k: usize) -> Vec<Stmt> {
        let cols = if k == 2 { self.dv } else { self.d };
        let mem = kb.arg(dst, Access::Write);
        let (i, e) = (kb.var(rows), kb.var(cols));
        let idx: Vec<Ix> = pre.iter().cloned().chain([r0.add(&Ix::var(i)), Ix::var(e)]).collect();
        let full = self.arg_shape(k);
        let value = ld(acc, at.add(&Ix::var(i).scale(cols as i64)).add(&Ix::var(e)).to_expr());
        let inner = Stmt::Loop { var: e, extent: cols, vector: true, body: vec![Stmt::Store { mem, index: linearize(&idx, &full).to_expr(), value }] };
        vec![Stmt::Loop { var: i, extent: rows, vector: false, body: vec![inner] }]
    }

    /// The shape of `q` (0), `k` (1) or `v` (2).
    fn arg_shape(&self, k: usize) -> Vec<u64> {
        let mut s = self.lead.clone();
        if self.gqa() {
            s.push(if k == 0 { self.hkv * self.group } else { self.hkv });
        }
        s.push(if k == 0 { self.sq } else { self.sk });
        s.push(if k == 2 { self.dv } else { self.d });
        s
    }
}

/// The probability of a score given its row's offset (the running max
/// in the forward pass; in the backward, `log l` from the score less the
/// max): the one place every kernel turns scores into `P`.
fn probability(score: Expr, offset: Expr) -> Expr {
    un(UnaryOp::Exp, bin(BinaryOp::Sub, score, offset))
}

/// `body` once per query head of a group (loop `g`), or as is without GQA.
fn group_loop(g: Option<crate::kernel::Var>, group: u64, body: Vec<Stmt>) -> Vec<Stmt> {
    match g {
        Some(g) => vec![Stmt::Loop { var: g, extent: group, vector: false, body }],
        None => body,
    }
}

/// `(loop variable, first index, size)` of the blocks of `len`: the full
/// blocks as one loop (variable `Some`), then the remainder.
fn block_starts(kb: &mut KernelBuilder, len: u64, b: u64) -> Vec<(Option<crate::kernel::Var>, Ix, u64)> {
    let full = len / b;
    let mut v = Vec::new();
    if full > 0 {
        let var = kb.var(full);
        v.push((Some(var), Ix::var(var).scale(b as i64), b));
    }
    if !len.is_multiple_of(b) {
        v.push((None, Ix::constant((full * b) as i64), len % b));
    }
    v
}

/// `body` under an optional guard, inside the loop `var` (of `count`
/// trips) when there is one.
fn wrap(var: Option<crate::kernel::Var>, count: u64, cond: Option<Expr>, body: Vec<Stmt>) -> Vec<Stmt> {
    let guarded = match cond {
        Some(cond) => vec![Stmt::If { cond, body }],
        None => body,
    };
    match var {
        Some(var) => vec![Stmt::Loop { var, extent: count, vector: false, body: guarded }],
        None => guarded,
    }
}

/// Zeroes `len` elements of scratch `m`.
fn zero(kb: &mut KernelBuilder, m: Mem, len: u64) -> Vec<Stmt> {
    let i = kb.var(len);
    vec![Stmt::Loop { var: i, extent: len, vector: true, body: vec![Stmt::Store { mem: m, index: Expr::Var(i), value: f(0.0) }] }]
}

/// How an `attention_grad` node is scheduled. Unless
/// [`ScheduleOptions::attention_backward`] forces one, the rule is
/// [`OnePass`](AttnBackward::OnePass) when there are at least two
/// (batch, key/value head) pairs per thread, so that its tiles alone keep
/// every thread busy, and [`Split`](AttnBackward::Split) otherwise (few
/// heads, typically long sequences, where only block-level tiles are
/// parallel enough).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnBackward {
    /// One kernel, a tile per (batch, key/value head), K blocks outside
    /// and Q blocks inside: `P` and `dS` are computed once per block pair
    /// for all three gradients (5 block GEMMs per pair).
    OnePass,
    /// A `dK, dV` kernel with a tile per K block and a `dQ` kernel with a
    /// tile per Q block: each recomputes `P` and `dS` (7 block GEMMs per
    /// pair), in exchange for `Sk/Bk` and `Sq/Bq` times more tiles.
    Split,
}

/// The backward schedule for `kv_tiles` (batch, key/value head) pairs.
fn backward_plan(opts: &ScheduleOptions, kv_tiles: u64) -> AttnBackward {
    opts.attention_backward.unwrap_or(if kv_tiles >= 2 * opts.threads as u64 { AttnBackward::OnePass } else { AttnBackward::Split })
}

/// `(Bq, Bk)` from the cost model in the module docs (or the override).
/// `q_tiles` is the number of tiles per Q block when a kernel's tiles
/// each own one (`None` when its tiles own whole heads).
fn block_sizes(opts: &ScheduleOptions, (sq, sk, d, dv): (u64, u64, u64, u64), q_tiles: Option<u64>, backward: bool, causal: bool) -> (u64, u64) {
    if let Some((bq, bk)) = opts.attention_blocks {
        return (bq.clamp(1, sq.max(1)), bk.clamp(1, sk.max(1)));
    }
    let working_set = |bq: u64, bk: u64| 4 * (bq * d + bk * d + bk * dv + bq * bk + bq * dv);
    let scratch = |bq: u64, bk: u64| {
        if backward {
            4 * (2 * bq * bk + bk * (d + dv) + bq * d)
        } else {
            4 * (bq * bk + bq * (dv + 2))
        }
    };
    let mut b = 128;
    while b > 16 && (working_set(b, b) > opts.cache.l2 / 2 || scratch(b, b) > SCRATCH_BUDGET || (causal && 4 * b > sq.max(sk))) {
        b /= 2;
    }
    let bk = b.min(sk.max(1));
    let mut bq = b.min(sq.max(1));
    if let Some(q_tiles) = q_tiles {
        let want = 2 * opts.threads as u64;
        while bq > 16 && q_tiles * sq.div_ceil(bq) < want {
            bq /= 2;
        }
    }
    (bq, bk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CacheSizes;

    fn opts(l2_kib: u64, threads: usize) -> ScheduleOptions {
        ScheduleOptions { threads, cache: CacheSizes { l1: 48 << 10, l2: l2_kib << 10 }, ..Default::default() }
    }

    #[test]
    fn blocks_follow_the_cache_and_the_threads() {
        let dims = (4096, 4096, 64, 64);
        // 1 MiB L2: a 128 x 128 forward working set (192 KiB) fits half of it;
        // the backward's scratch (224 KiB) does not fit the budget, 64 does.
        assert_eq!(block_sizes(&opts(1024, 2), dims, Some(8), false, false), (128, 128));
        assert_eq!(block_sizes(&opts(1024, 2), dims, Some(8), true, false), (64, 64));
        // 256 KiB L2: 128 KiB for the working set, which 64 x 64 (80 KiB) fits.
        assert_eq!(block_sizes(&opts(256, 2), dims, Some(8), false, false), (64, 64));
        // D = 128 doubles the operand blocks: 128 x 128 needs 320 KiB.
        assert_eq!(block_sizes(&opts(512, 2), (4096, 4096, 128, 128), Some(8), false, false), (64, 64));
        // One head and a short sequence: Q blocks shrink until 16 threads
        // have two tiles each (256 / 16 = 16 tiles of 16 rows).
        assert_eq!(block_sizes(&opts(1024, 16), (256, 256, 64, 64), Some(1), false, false), (16, 128));
        // Causal at 256: blocks of 64, a quarter of the sequence.
        assert_eq!(block_sizes(&opts(1024, 2), (256, 256, 64, 64), Some(8), false, true), (64, 64));
        assert_eq!(block_sizes(&opts(1024, 2), (512, 512, 64, 64), Some(8), false, true), (128, 128));
        // Tiles that own whole heads need no smaller Q blocks.
        assert_eq!(block_sizes(&opts(1024, 16), (256, 256, 64, 64), None, false, false), (128, 128));
        // Never longer than the sequences.
        assert_eq!(block_sizes(&opts(1024, 2), (5, 3, 64, 64), Some(8), false, false), (5, 3));
        // An override wins (clamped to the sequences).
        let forced = ScheduleOptions { attention_blocks: Some((4, 100)), ..opts(1024, 2) };
        assert_eq!(block_sizes(&forced, (10, 9, 64, 64), Some(8), true, false), (4, 9));
    }

    #[test]
    fn one_pass_backward_needs_two_heads_per_thread() {
        assert_eq!(backward_plan(&opts(1024, 2), 4), AttnBackward::OnePass);
        assert_eq!(backward_plan(&opts(1024, 2), 3), AttnBackward::Split);
        assert_eq!(backward_plan(&opts(1024, 16), 8), AttnBackward::Split);
        let forced = ScheduleOptions { attention_backward: Some(AttnBackward::Split), ..opts(1024, 2) };
        assert_eq!(backward_plan(&forced, 64), AttnBackward::Split);
    }
}
