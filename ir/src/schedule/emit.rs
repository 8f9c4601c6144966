//! Kernels for the stored nodes of a graph, in graph order.

use super::builder::{KernelBuilder, RowCtx, Src};
use super::index::{linearize, Affine, Ix};
use super::plan::{row_axis, GraphState};
use super::recipe::{bin, compute};
use super::{view, Cx, ScheduleError};
use crate::kernel::{Access, BufKind, Expr, Gemm, HostVar, KernelId, Operand, RedOp, Step, Stmt, Var};
use crate::{BinaryOp, Op, ReduceOp, UnaryOp, ValueId};

/// Emits every stored node of the graph; outputs of the entry graph get
/// output buffers.
pub(crate) fn graph(cx: &mut Cx, gs: &mut GraphState, outputs: Option<&[String]>) -> Result<(), ScheduleError> {
    let g = gs.g;
    for i in 0..g.nodes.len() {
        if !gs.materialize[i] {
            continue;
        }
        let n = ValueId(i as u32);
        let node = g.node(n);
        let src = match &node.op {
            Op::Input { index } => gs.inputs[*index as usize].clone(),
            Op::Param { index } => cx.param(*index)?,
            Op::Extract { index } => gs.tuples[&node.args[0].index()][*index as usize].clone(),
            Op::Scan { .. } => {
                let results = super_scan(cx, gs, n)?;
                gs.tuples.insert(i, results);
                continue;
            }
            Op::Attention(_) | Op::AttentionGrad(_) => {
                let results = super::attention::emit(cx, gs, n, outputs)?;
                gs.tuples.insert(i, results);
                continue;
            }
            _ if matches!(node.op, Op::Reshape) && reshape_output(cx, gs, n, outputs).is_some() => {
                gs.storage[node.args[0].index()].clone().expect("stored")
            }
            _ => {
                let dst = destination(cx, gs, n, outputs)?;
                match &node.op {
                    Op::Reduce { .. } => reduce(cx, gs, n, &dst)?,
                    Op::MatMul => matmul(cx, gs, n, n, &dst)?,
                    Op::Concat { axis } => concat(cx, gs, n, *axis as usize, &dst)?,
                    Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::LayerNorm { .. } | Op::RmsNorm { .. } => row(cx, gs, n, n, &dst)?,
                    _ => match (gs.row_of[i], gs.mm_of[i]) {
                        (Some(r), _) => row(cx, gs, r, n, &dst)?,
                        (None, Some(mm)) => matmul(cx, gs, mm, n, &dst)?,
                        (None, None) => pointwise(cx, gs, n, &dst)?,
                    },
                }
                dst
            }
        };
        gs.storage[i] = Some(src);
    }
    Ok(())
}

/// An entry result that only reshapes a temporary of this graph: the
/// temporary becomes the output buffer (row-major data needs no copy).
fn reshape_output(cx: &mut Cx, gs: &GraphState, n: ValueId, outputs: Option<&[String]>) -> Option<Src> {
    let names = outputs.filter(|_| cx.depth == 0)?;
    let k = gs.g.outputs.iter().position(|o| *o == n)?;
    let src = gs.storage[gs.g.node(n).args[0].index()].clone()?;
    let b = &mut cx.prog.buffers[src.buf.0 as usize];
    if b.kind != BufKind::Temp || src.offset != Default::default() || src.len != b.len {
        return None;
    }
    b.kind = BufKind::Output(k as u32);
    b.name = names[k].clone();
    Some(src)
}

/// A new buffer for node `n`: an output buffer when `n` is an entry result.
pub(crate) fn destination(cx: &mut Cx, gs: &GraphState, n: ValueId, outputs: Option<&[String]>) -> Result<Src, ScheduleError> {
    let t = gs.g.tensor_type(n);
    let len = gs.shapes[n.index()].iter().product();
    let out = outputs.and_then(|names| gs.g.outputs.iter().position(|o| *o == n).map(|k| (k, names[k].clone())));
    Ok(match out {
        Some((k, name)) if cx.depth == 0 => cx.buffer(t.dtype, len, BufKind::Output(k as u32), name),
        _ => cx.buffer(t.dtype, len, BufKind::Temp, format!("%{}", n.0)),
    })
}

pub(crate) fn launch(cx: &mut Cx, kb: KernelBuilder, grid: u64, body: Vec<Stmt>) {
    let index = cx.prog.kernels.len();
    let (k, views) = kb.finish(index, grid, body);
    cx.prog.kernels.push(k);
    cx.prog.steps.push(Step::Launch { kernel: KernelId(index as u32), args: views });
}

/// The loop over the last axis, with the outer axes as tiles.
pub(crate) fn pointwise(cx: &mut Cx, gs: &GraphState, n: ValueId, dst: &Src) -> Result<(), ScheduleError> {
    let shape = gs.shapes[n.index()].clone();
    let mut kb = KernelBuilder::default();
    let mut body = Vec::new();
    let out = kb.arg(dst, Access::Write);
    let Some((&last, outer)) = shape.split_last() else {
        let v = gs.value(cx, &mut kb, n, &[])?;
        body.push(Stmt::Store { mem: out, index: Expr::idx(0), value: v });
        launch(cx, kb, 1, body);
        return Ok(());
    };
    let mut idx = kb.tile_coords(outer, &mut body);
    let v = kb.var(last);
    idx.push(Ix::var(v));
    let value = gs.value(cx, &mut kb, n, &idx)?;
    let index = linearize(&idx, &shape).to_expr();
    body.push(Stmt::Loop { var: v, extent: last, vector: true, body: vec![Stmt::Store { mem: out, index, value }] });
    launch(cx, kb, outer.iter().product(), body);
    Ok(())
}

/// One tile per row of row op `r`: its statistics by reductions, then a
/// loop storing `root` (r itself, or the elementwise chain that consumes it).
fn row(cx: &mut Cx, gs: &GraphState, r: ValueId, root: ValueId, dst: &Src) -> Result<(), ScheduleError> {
    let shape = gs.shapes[r.index()].clone();
    let axis = row_axis(&gs.g.node(r).op, shape.len());
    let len = shape[axis];
    let outer: Vec<u64> = shape.iter().enumerate().filter(|(i, _)| *i != axis).map(|(_, s)| *s).collect();
    let mut kb = KernelBuilder::default();
    let mut body = Vec::new();
    let out = kb.arg(dst, Access::Write);
    let coords = kb.tile_coords(&outer, &mut body);
    row_stats(cx, gs, &mut kb, &mut body, r, &coords)?;
    let j = kb.var(len);
    let mut idx = coords;
    idx.insert(axis, Ix::var(j));
    let value = gs.value(cx, &mut kb, root, &idx)?;
    let index = linearize(&idx, &shape).to_expr();
    body.push(Stmt::Loop { var: j, extent: len, vector: true, body: vec![Stmt::Store { mem: out, index, value }] });
    launch(cx, kb, outer.iter().product(), body);
    Ok(())
}

/// Appends the reductions that compute row op `r`'s statistics for the row
/// at `coords` (every axis but the row's), and makes them the kernel's row
/// context, so values of `r` in this row become expressions of them.
fn row_stats(cx: &mut Cx, gs: &GraphState, kb: &mut KernelBuilder, body: &mut Vec<Stmt>, r: ValueId, coords: &[Ix]) -> Result<(), ScheduleError> {
    let node = gs.g.node(r);
    let shape = &gs.shapes[r.index()];
    let axis = row_axis(&node.op, shape.len());
    let len = shape[axis];
    let ft = compute(node.ty.tensor().expect("tensor").dtype);
    kb.note(node.op.name());
    let at = |j: Ix| -> Vec<Ix> {
        let mut v = coords.to_vec();
        v.insert(axis, j);
        v
    };
    let x = node.args[0];
    let c = |v: f64| Expr::Const(v, ft);
    let mut reduce = |kb: &mut KernelBuilder, body: &mut Vec<Stmt>, op: RedOp, f: &dyn Fn(Expr) -> Expr| -> Result<Var, ScheduleError> {
        let j = kb.var(len);
        let xv = gs.value(cx, kb, x, &at(Ix::var(j)))?;
        let var = kb.var(1);
        body.push(Stmt::Reduce { var, op, index: j, extent: len, vector: true, value: f(xv) });
        Ok(var)
    };
    let let_ = |kb: &mut KernelBuilder, body: &mut Vec<Stmt>, e: Expr| -> Var {
        let v = kb.var(1);
        body.push(Stmt::Let { var: v, value: e });
        v
    };
    let var = Expr::Var;
    let stats = match &node.op {
        Op::Softmax { .. } | Op::LogSoftmax { .. } => {
            let mx = reduce(kb, body, RedOp::Max, &|e| e)?;
            let sm = reduce(kb, body, RedOp::Sum, &|e| Expr::Unary(UnaryOp::Exp, Box::new(bin(BinaryOp::Sub, e, var(mx)))))?;
            let k = if matches!(node.op, Op::Softmax { .. }) {
                bin(BinaryOp::Div, c(1.0), var(sm))
            } else {
                bin(BinaryOp::Add, var(mx), Expr::Unary(UnaryOp::Log, Box::new(var(sm))))
            };
            vec![mx, let_(kb, body, k)]
        }
        Op::LayerNorm { eps } => {
            let s1 = reduce(kb, body, RedOp::Sum, &|e| e)?;
            let mean = let_(kb, body, bin(BinaryOp::Div, var(s1), c(len as f64)));
            let s2 = reduce(kb, body, RedOp::Sum, &|e| {
                let d = bin(BinaryOp::Sub, e, var(mean));
                bin(BinaryOp::Mul, d.clone(), d)
            })?;
            let var_ = bin(BinaryOp::Add, bin(BinaryOp::Div, var(s2), c(len as f64)), c(*eps));
            vec![mean, let_(kb, body, Expr::Unary(UnaryOp::Rsqrt, Box::new(var_)))]
        }
        Op::RmsNorm { eps } => {
            let s = reduce(kb, body, RedOp::Sum, &|e| bin(BinaryOp::Mul, e.clone(), e))?;
            let ms = bin(BinaryOp::Add, bin(BinaryOp::Div, var(s), c(len as f64)), c(*eps));
            vec![let_(kb, body, Expr::Unary(UnaryOp::Rsqrt, Box::new(ms)))]
        }
        op => unreachable!("row op {op:?}"),
    };
    kb.row = Some(RowCtx { node: r, axis, stats });
    Ok(())
}

impl GraphState<'_> {
    /// Element `idx` of the row op the kernel is computing, from its statistics.
    pub fn row_value(&self, cx: &mut Cx, kb: &mut KernelBuilder, r: ValueId, idx: &[Ix]) -> Result<Expr, ScheduleError> {
        let node = self.g.node(r);
        let ctx = kb.row.clone().expect("row context");
        let x = self.value(cx, kb, node.args[0], idx)?;
        let s = |k: usize| Expr::Var(ctx.stats[k]);
        let j = &idx[ctx.axis..=ctx.axis];
        Ok(match &node.op {
            Op::Softmax { .. } => bin(BinaryOp::Mul, Expr::Unary(UnaryOp::Exp, Box::new(bin(BinaryOp::Sub, x, s(0)))), s(1)),
            Op::LogSoftmax { .. } => bin(BinaryOp::Sub, x, s(1)),
            Op::LayerNorm { .. } => {
                let g = self.value(cx, kb, node.args[1], j)?;
                let b = self.value(cx, kb, node.args[2], j)?;
                bin(BinaryOp::Add, bin(BinaryOp::Mul, bin(BinaryOp::Mul, bin(BinaryOp::Sub, x, s(0)), s(1)), g), b)
            }
            Op::RmsNorm { .. } => {
                let g = self.value(cx, kb, node.args[1], j)?;
                bin(BinaryOp::Mul, bin(BinaryOp::Mul, x, s(0)), g)
            }
            op => unreachable!("row op {op:?}"),
        })
    }
}

/// One tile per output element; the reduced axes are one flat index.
fn reduce(cx: &mut Cx, gs: &GraphState, n: ValueId, dst: &Src) -> Result<(), ScheduleError> {
    let node = gs.g.node(n);
    let Op::Reduce { op, axes, .. } = &node.op else { unreachable!() };
    let x = node.args[0];
    let xs = gs.shapes[x.index()].clone();
    let reduced: Vec<usize> = axes.iter().map(|a| *a as usize).collect();
    let kept: Vec<u64> = xs.iter().enumerate().filter(|(i, _)| !reduced.contains(i)).map(|(_, s)| *s).collect();
    let rdims: Vec<u64> = reduced.iter().map(|&a| xs[a]).collect();
    let count: u64 = rdims.iter().product();
    let f32_sum = matches!(op, ReduceOp::Sum | ReduceOp::Mean) && dst.dtype == crate::DType::F32;
    if f32_sum && gs.row_of[n.index()].is_none() && !reduced.contains(&(xs.len() - 1)) {
        if let Some(w) = column_width(xs[xs.len() - 1], kept.iter().product(), cx.opts.threads) {
            return reduce_columns(cx, gs, n, dst, w);
        }
    }
    let mut kb = KernelBuilder::default();
    kb.note(node.op.name());
    let mut body = Vec::new();
    let out = kb.arg(dst, Access::Write);
    let coords = kb.tile_coords(&kept, &mut body);
    // A row op fused into this reduction (planned only for a reduction
    // over the row's axis): its statistics come first.
    if let Some(row) = gs.row_of[n.index()] {
        row_stats(cx, gs, &mut kb, &mut body, row, &coords)?;
    }
    let r = kb.var(count);
    let ranges = kb.ranges.clone();
    let rc = super::index::unravel(&Ix::var(r), &rdims, &ranges);
    let (mut ki, mut ri) = (coords.iter(), rc.iter());
    let idx: Vec<Ix> = (0..xs.len()).map(|i| if reduced.contains(&i) { ri.next() } else { ki.next() }.expect("axis").clone()).collect();
    let value = gs.value(cx, &mut kb, x, &idx)?;
    let red = match op {
        ReduceOp::Sum | ReduceOp::Mean => RedOp::Sum,
        ReduceOp::Max => RedOp::Max,
        ReduceOp::Min => RedOp::Min,
        ReduceOp::ArgMax => RedOp::ArgMax,
    };
    let acc = kb.var(1);
    body.push(Stmt::Reduce { var: acc, op: red, index: r, extent: count, vector: red != RedOp::ArgMax, value });
    let dt = compute(node.ty.tensor().expect("tensor").dtype);
    let result = match op {
        ReduceOp::Mean => bin(BinaryOp::Div, Expr::Var(acc), Expr::Const(count as f64, dt)),
        _ => Expr::Var(acc),
    };
    let index = if kept.is_empty() { Expr::idx(0) } else { Expr::Tile };
    body.push(Stmt::Store { mem: out, index, value: result });
    launch(cx, kb, kept.iter().product(), body);
    Ok(())
}

/// Outputs per tile of a column reduction: a divisor of the last axis's
/// `last` elements (of `kept` outputs in all) that still gives every
/// thread a few tiles, or `None` when no width is worth it.
fn column_width(last: u64, kept: u64, threads: usize) -> Option<u64> {
    let fits = |w: &u64| last % w == 0;
    let widths = [64, 32, 16, 8];
    widths.iter().copied().filter(fits).find(|w| kept / w >= 4 * threads as u64).or_else(|| widths.iter().copied().filter(fits).last())
}

/// A sum (or mean) that keeps the last, contiguous axis: each tile owns `w`
/// adjacent outputs and adds whole rows of them, so the inner loop reads
/// contiguous vectors instead of striding down one column per tile. The
/// f32 output accumulates in place.
fn reduce_columns(cx: &mut Cx, gs: &GraphState, n: ValueId, dst: &Src, w: u64) -> Result<(), ScheduleError> {
    let node = gs.g.node(n);
    let Op::Reduce { op, axes, .. } = &node.op else { unreachable!() };
    let x = node.args[0];
    let xs = gs.shapes[x.index()].clone();
    let (last, lead) = xs.split_last().expect("a kept last axis");
    let reduced: Vec<usize> = axes.iter().map(|a| *a as usize).collect();
    let mut tiles: Vec<u64> = lead.iter().enumerate().filter(|(i, _)| !reduced.contains(i)).map(|(_, s)| *s).collect();
    tiles.push(last / w);
    let mut kb = KernelBuilder::default();
    kb.note(node.op.name());
    let mut body = Vec::new();
    let out = kb.arg(dst, Access::ReadWrite);
    let coords = kb.tile_coords(&tiles, &mut body);
    let (chunk, outer) = coords.split_last().expect("the chunk axis");
    let out_shape = gs.shapes[n.index()].clone();
    // A vector loop over the tile's `w` columns: `f` gets the column's
    // index along the last axis and its flat output index.
    let columns = |kb: &mut KernelBuilder, f: &mut dyn FnMut(&mut KernelBuilder, Ix, Expr) -> Result<Expr, ScheduleError>| {
        let c = kb.var(w);
        let col = chunk.scale(w as i64).add(&Ix::var(c));
        let mut o = outer.to_vec();
        o.push(col.clone());
        let index = linearize(&o, &out_shape).to_expr();
        let value = f(kb, col, index.clone())?;
        Ok::<_, ScheduleError>(Stmt::Loop { var: c, extent: w, vector: true, body: vec![Stmt::Store { mem: out, index, value }] })
    };
    let f32c = |v: f64| Expr::Const(v, crate::DType::F32);
    body.push(columns(&mut kb, &mut |_, _, _| Ok(f32c(0.0)))?);
    // One loop per reduced axis, outermost first: no index division.
    let rvars: Vec<Var> = reduced.iter().map(|&a| kb.var(xs[a])).collect();
    let mut add_row = |kb: &mut KernelBuilder, col: Ix, index: Expr| {
        let (mut oi, mut ri) = (outer.iter(), rvars.iter());
        let mut idx: Vec<Ix> = (0..lead.len())
            .map(|i| if reduced.contains(&i) { Ix::var(*ri.next().expect("axis")) } else { oi.next().expect("axis").clone() })
            .collect();
        idx.push(col);
        let value = gs.value(cx, kb, x, &idx)?;
        Ok(bin(BinaryOp::Add, Expr::Load(out, Box::new(index)), value))
    };
    let mut nest = vec![columns(&mut kb, &mut add_row)?];
    for (&v, &a) in rvars.iter().zip(&reduced).rev() {
        nest = vec![Stmt::Loop { var: v, extent: xs[a], vector: false, body: nest }];
    }
    body.extend(nest);
    if *op == ReduceOp::Mean {
        let count: u64 = reduced.iter().map(|&a| xs[a]).product();
        body.push(columns(&mut kb, &mut |_, _, index| Ok(bin(BinaryOp::Div, Expr::Load(out, Box::new(index)), f32c(count as f64))))?);
    }
    launch(cx, kb, tiles.iter().product(), body);
    Ok(())
}

/// Copies each input into its slice of the output.
fn concat(cx: &mut Cx, gs: &GraphState, n: ValueId, axis: usize, dst: &Src) -> Result<(), ScheduleError> {
    let out_shape = gs.shapes[n.index()].clone();
    let mut offset = 0u64;
    for &a in &gs.g.node(n).args {
        let shape = gs.shapes[a.index()].clone();
        let mut kb = KernelBuilder::default();
        kb.note("concat".into());
        let mut body = Vec::new();
        let out = kb.arg(dst, Access::Write);
        let Some((&last, outer)) = shape.split_last() else { unreachable!("concat of scalars") };
        let mut idx = kb.tile_coords(outer, &mut body);
        let v = kb.var(last);
        idx.push(Ix::var(v));
        let value = gs.value(cx, &mut kb, a, &idx)?;
        let mut oidx = idx.clone();
        oidx[axis] = oidx[axis].add(&Ix::constant(offset as i64));
        let index = linearize(&oidx, &out_shape).to_expr();
        body.push(Stmt::Loop { var: v, extent: last, vector: true, body: vec![Stmt::Store { mem: out, index, value }] });
        launch(cx, kb, outer.iter().product(), body);
        offset += shape[axis];
    }
    Ok(())
}

/// A matmul operand read in place: its memory and the affine index of
/// element (batch..., row, col).
pub(crate) fn operand(cx: &mut Cx, gs: &GraphState, kb: &KernelBuilder, n: ValueId, idx: &[Ix]) -> Result<Option<(Src, Affine)>, ScheduleError> {
    operand_flat(cx, gs, kb, n, &linearize(idx, &gs.shapes[n.index()]))
}

/// Like [`operand`], with the index flattened over `n`'s shape: a reshape
/// keeps the flat index, so merged and split axes stay strided.
fn operand_flat(cx: &mut Cx, gs: &GraphState, kb: &KernelBuilder, n: ValueId, flat: &Ix) -> Result<Option<(Src, Affine)>, ScheduleError> {
    if let Some(src) = &gs.storage[n.index()] {
        return Ok(match flat {
            Ix::Aff(a) => Some((src.clone(), a.clone())),
            Ix::Ex(_) => None,
        });
    }
    let node = gs.g.node(n);
    match &node.op {
        Op::Reshape => operand_flat(cx, gs, kb, node.args[0], flat),
        op if super::plan::is_view(op) => {
            let idx = super::index::unravel(flat, &gs.shapes[n.index()], &kb.ranges);
            let a = gs.view_index(cx, kb, n, &idx)?;
            operand(cx, gs, kb, node.args[0], &a)
        }
        _ => Ok(None),
    }
}

/// Tiles of rows (and, when rows are few, of columns), each a [`Gemm`];
/// when `root` is an elementwise chain consuming the product, each tile
/// then applies it in place (bias, activation, residual).
fn matmul(cx: &mut Cx, gs: &GraphState, n: ValueId, root: ValueId, dst: &Src) -> Result<(), ScheduleError> {
    let node = gs.g.node(n);
    let (a, b) = (node.args[0], node.args[1]);
    let cs = gs.shapes[n.index()].clone();
    let r = cs.len();
    let (m, nn) = (cs[r - 2], cs[r - 1]);
    let k = gs.shapes[a.index()][r - 1];
    let batch: Vec<u64> = cs[..r - 2].to_vec();
    let nb: u64 = batch.iter().product();
    let (mt, nt) = super::gemm_tiles::matmul_tiles(nb, m, nn, k, cx.opts.threads);
    let mut a_src = None;
    let mut b_src = None;
    for (m0, msz, mcount) in regions(m, mt) {
        for (n0, nsz, ncount) in regions(nn, nt) {
            let mut kb = KernelBuilder::default();
            kb.note("matmul".into());
            let mut body = Vec::new();
            let mut dims = batch.clone();
            dims.push(mcount);
            dims.push(ncount);
            let coords = kb.tile_coords(&dims, &mut body);
            let (bc, ti, tj) = (&coords[..batch.len()], &coords[batch.len()], &coords[batch.len() + 1]);
            let row0 = ti.scale(msz as i64).add(&Ix::constant(m0 as i64));
            let col0 = tj.scale(nsz as i64).add(&Ix::constant(n0 as i64));
            let at = |x: Ix, y: Ix| -> Vec<Ix> { bc.iter().cloned().chain([x, y]).collect() };
            // Virtual row/col variables, ranging exactly over the operand,
            // give its strides.
            let side = |cx: &mut Cx, kb: &mut KernelBuilder, node: ValueId, cache: &mut Option<Src>, r0: &Ix, c0: &Ix| -> Result<Operand, ScheduleError> {
                let shape = &gs.shapes[node.index()];
                let (rv, cv) = (kb.var(shape[r - 2]), kb.var(shape[r - 1]));
                let found = match cache {
                    Some(s) => Some((s.clone(), linear_aff(&at(Ix::var(rv), Ix::var(cv)), shape))),
                    None => operand(cx, gs, kb, node, &at(Ix::var(rv), Ix::var(cv)))?,
                };
                let (src, aff) = match found {
                    Some((s, a)) if a.coeff(rv) >= 0 && a.coeff(cv) >= 0 => (s, a),
                    _ => {
                        // Not a strided view of memory: store it densely first.
                        let t = gs.g.tensor_type(node);
                        let len = shape.iter().product();
                        let tmp = cx.buffer(t.dtype, len, BufKind::Temp, format!("%{}.dense", node.0));
                        pointwise(cx, gs, node, &tmp)?;
                        *cache = Some(tmp.clone());
                        (tmp, linear_aff(&at(Ix::var(rv), Ix::var(cv)), shape))
                    }
                };
                let base = aff.without(rv).without(cv);
                let offset = Ix::Aff(base).add(&r0.scale(aff.coeff(rv))).add(&c0.scale(aff.coeff(cv)));
                Ok(Operand { mem: kb.arg(&src, Access::Read), offset: offset.to_expr(), row_stride: aff.coeff(rv) as u64, col_stride: aff.coeff(cv) as u64 })
            };
            let opa = side(cx, &mut kb, a, &mut a_src, &row0, &Ix::constant(0))?;
            let opb = side(cx, &mut kb, b, &mut b_src, &Ix::constant(0), &col0)?;
            let c_off = linearize(&at(row0.clone(), col0.clone()), &cs);
            let c = Operand { mem: kb.arg(dst, Access::Write), offset: c_off.to_expr(), row_stride: nn, col_stride: 1 };
            body.push(Stmt::Gemm(Gemm { m: msz, n: nsz, k, a: opa, b: opb, c, accumulate: false }));
            if root != n {
                // Each element of the tile is read and rewritten by the same
                // iteration, so the epilogue can work in place.
                kb.stored = Some((n, dst.clone()));
                let (i, j) = (kb.var(msz), kb.var(nsz));
                let idx = at(row0.add(&Ix::var(i)), col0.add(&Ix::var(j)));
                let flat = linearize(&idx, &cs);
                let rshape = &gs.shapes[root.index()];
                let ridx = if *rshape == cs { idx } else { super::index::unravel(&flat, rshape, &kb.ranges) };
                let value = gs.value(cx, &mut kb, root, &ridx)?;
                let out = kb.arg(dst, Access::ReadWrite);
                let index = flat.to_expr();
                let inner = Stmt::Loop { var: j, extent: nsz, vector: true, body: vec![Stmt::Store { mem: out, index, value }] };
                body.push(Stmt::Loop { var: i, extent: msz, vector: false, body: vec![inner] });
            }
            launch(cx, kb, dims.iter().product(), body);
        }
    }
    Ok(())
}

/// `(first index, tile size, tile count)` of the full tiles of `size`,
/// then of the remainder tile.
pub(crate) fn regions(size: u64, tile: u64) -> Vec<(u64, u64, u64)> {
    let full = size / tile;
    let mut v = Vec::new();
    if full > 0 {
        v.push((0, tile, full));
    }
    if !size.is_multiple_of(tile) {
        v.push((full * tile, size % tile, 1));
    }
    v
}

pub(crate) fn linear_aff(idx: &[Ix], shape: &[u64]) -> Affine {
    match linearize(idx, shape) {
        Ix::Aff(a) => a,
        Ix::Ex(_) => unreachable!("a dense row-major index is affine"),
    }
}

/// A `scan`: carries in their own buffers, a host loop over the body's
/// kernels, per-step outputs copied into their stacked buffers.
fn super_scan(cx: &mut Cx, gs: &GraphState, n: ValueId) -> Result<Vec<Src>, ScheduleError> {
    let node = gs.g.node(n);
    let Op::Scan { body, n_carry, n_seq } = &node.op else { unreachable!() };
    let (nc, ns) = (*n_carry as usize, *n_seq as usize);
    let arg_src = |k: usize| gs.storage[node.args[k].index()].clone().expect("scan arguments are stored");
    let len = gs.shapes[node.args[nc].index()][0];
    let var = HostVar(cx.depth);
    // Carries: initialized by copies before the loop.
    let mut carries = Vec::new();
    for c in 0..nc {
        let init = arg_src(c);
        let buf = cx.buffer(init.dtype, init.len, BufKind::Temp, format!("%{}.carry{c}", n.0));
        cx.prog.steps.push(Step::Copy { dst: view(&buf), src: view(&init), len: init.len });
        carries.push(buf);
    }
    let mut inputs = carries.clone();
    for s in 0..ns {
        let seq = arg_src(nc + s);
        let slice = seq.len / len.max(1);
        let mut offset = seq.offset.clone();
        offset.terms.push((var, slice));
        inputs.push(Src { buf: seq.buf, offset, len: slice, dtype: seq.dtype });
    }
    for k in nc + ns..node.args.len() {
        inputs.push(arg_src(k));
    }
    let tuple = node.ty.clone();
    let crate::Type::Tuple(result_tys) = tuple else { unreachable!("scan yields a tuple") };
    let mut stacked = Vec::new();
    for (e, t) in result_tys[nc..].iter().enumerate() {
        let l = cx.numel(&t.shape)?;
        stacked.push(cx.buffer(t.dtype, l, BufKind::Temp, format!("%{}.emit{e}", n.0)));
    }
    // The body, into its own step list.
    let outer_steps = std::mem::take(&mut cx.prog.steps);
    cx.depth += 1;
    let outs = cx.graph(body, inputs, None);
    cx.depth -= 1;
    let mut steps = std::mem::replace(&mut cx.prog.steps, outer_steps);
    let outs = outs?;
    for (e, dst) in stacked.iter().enumerate() {
        let src = &outs[nc + e];
        let mut offset = dst.offset.clone();
        offset.terms.push((var, src.len));
        steps.push(Step::Copy { dst: crate::kernel::View { buf: dst.buf, offset }, src: view(src), len: src.len });
    }
    // New carries go through temporaries when they alias a carry buffer
    // (`next a = b, b = a`), so no copy reads an already updated carry.
    let mut finals = Vec::new();
    for (c, carry) in carries.iter().enumerate() {
        let src = outs[c].clone();
        if carries.iter().any(|x| x.buf == src.buf) && src.buf != carry.buf {
            let tmp = cx.buffer(src.dtype, src.len, BufKind::Temp, format!("%{}.next{c}", n.0));
            steps.push(Step::Copy { dst: view(&tmp), src: view(&src), len: src.len });
            finals.push(tmp);
        } else {
            finals.push(src);
        }
    }
    for (c, carry) in carries.iter().enumerate() {
        if finals[c].buf != carry.buf || finals[c].offset != carry.offset {
            steps.push(Step::Copy { dst: view(carry), src: view(&finals[c]), len: carry.len });
        }
    }
    cx.prog.steps.push(Step::Repeat { var, count: len, body: steps });
    Ok(carries.into_iter().chain(stacked).collect())
}
