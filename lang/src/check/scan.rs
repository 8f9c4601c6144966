//! `scan`: a loop over a time axis or over the layers of a stack, with
//! shape-invariant carries and stacked per-step outputs.

use super::frame::Frame;
use super::scope::{LayerSrc, LayerVal, Scope, TVal, Val};
use super::ty::{Axis, Ty};
use super::{Checker, Fail, R};
use crate::ast::{self, Span};
use crate::Diagnostic;
use kiln_ir::{DType, Graph, Op, Type};
use std::collections::HashMap;
use std::rc::Rc;

/// What one `name in seq` iterates.
enum Seq {
    /// A tensor, scanned axis moved first.
    Tensor(TVal),
    /// A layer stack: its parameters' full names and stacked tensors.
    Layers(String, String, Vec<(String, TVal)>),
}

impl Checker<'_> {
    pub fn scan(&mut self, scope: &mut Scope, s: &ast::Scan, span: Span) -> R<Val> {
        let prog = self.prog;
        // 1. Sequences, in the enclosing graph.
        let mut seqs: Vec<(ast::Ident, Seq)> = Vec::new();
        let mut length: Option<(Axis, Span)> = None;
        for (name, e, over) in &s.seqs {
            let v = self.expr(e, scope)?;
            let (seq, len_axis) = match v {
                Val::Layer(LayerVal { layer, src: LayerSrc::Path(path), stacked: Some(n) }) => {
                    if over.is_some() {
                        return Err(Diagnostic::new("E0223", "a layer stack is scanned over its layers; drop `over`", e.span).into());
                    }
                    let prefix = format!("{path}.");
                    let mut params = Vec::new();
                    for (i, p) in prog.params.iter().enumerate() {
                        if p.name.starts_with(&prefix) {
                            let ty = prog.param_tys[i].clone();
                            params.push((p.name.clone(), self.emit(Op::Param { index: i as u32 }, &[], ty)));
                        }
                    }
                    (Seq::Layers(layer, path, params), Axis::new(kiln_ir::DimExpr::constant(n), None, Some(e.span)))
                }
                Val::Layer(l) => {
                    return Err(Diagnostic::new("E0223", format!("`{}` is a single layer, not a stack", l.layer), e.span)
                        .help("scan iterates tensors along an axis, or stacks declared as `param blocks: Block[n]`")
                        .into())
                }
                v => {
                    let t = self.tensor(&v, e.span, None)?;
                    if t.ty.rank() == 0 {
                        return Err(Diagnostic::new("E0305", "cannot scan a scalar", e.span).into());
                    }
                    let axis = match over {
                        None => 0,
                        Some(d) => {
                            let as_expr = match d {
                                ast::DimExpr::Name(id) => ast::Expr { kind: ast::ExprKind::Name(id.name.clone()), span: id.span },
                                ast::DimExpr::Int(i, sp) => ast::Expr { kind: ast::ExprKind::Int(*i), span: *sp },
                                other => return Err(Diagnostic::new("E0307", "`over` takes an axis name or position", other.span()).into()),
                            };
                            self.axis_of(scope, &t.ty, &as_expr, "scan")?
                        }
                    };
                    let mut perm: Vec<usize> = (0..t.ty.rank()).collect();
                    perm.remove(axis);
                    perm.insert(0, axis);
                    let t = self.transpose(&t, &perm);
                    let len = t.ty.axes[0].clone();
                    (Seq::Tensor(t), len)
                }
            };
            match &length {
                None => length = Some((len_axis, e.span)),
                Some((first, _)) => self.require_eq(scope, &len_axis.size, &first.size, e.span, "every scanned sequence has one length")?,
            }
            seqs.push((name.clone(), seq));
        }
        let Some((len_axis, _)) = length else {
            return Err(Diagnostic::new("E0223", "`scan` needs at least one `name in sequence`", span).into());
        };
        // 2. Initial carries.
        let mut inits = Vec::new();
        for (name, e) in &s.carries {
            let v = self.expr(e, scope)?;
            inits.push((name.clone(), self.tensor(&v, e.span, Some(DType::F32))?));
        }
        // 3. The body graph: inputs are carries, then one slice per sequence.
        self.frames.push(Frame::default());
        let r = self.scan_body(scope, s, &seqs, &inits);
        let frame = self.frames.pop().expect("scan frame");
        let (body_out, emit_tys) = r?;
        let mut body = frame.graph;
        body.outputs = body_out;
        // 4. The scan node and its results.
        let depth = self.depth();
        let mut args: Vec<TVal> = inits.iter().map(|(_, t)| t.clone()).collect();
        for (_, seq) in &seqs {
            match seq {
                Seq::Tensor(t) => args.push(t.clone()),
                Seq::Layers(_, _, ps) => args.extend(ps.iter().map(|(_, t)| t.clone())),
            }
        }
        if frame.step.is_some() {
            // The step index a dropout in the body asked for.
            args.push(self.emit(Op::Iota { axis: 0 }, &[], Ty::new(DType::I64, vec![len_axis.clone()])));
        }
        let mut ids: Vec<kiln_ir::ValueId> = args.iter().map(|a| self.capture(a)).collect();
        ids.extend(frame.captures.iter().map(|(outer, _)| *outer));
        let n_seq = (args.len() - inits.len()) as u32;
        let mut result_tys: Vec<Ty> = inits.iter().map(|(_, t)| t.ty.clone()).collect();
        for t in emit_tys {
            let mut axes = vec![len_axis.clone()];
            axes.extend(t.axes);
            result_tys.push(Ty::new(t.dtype, axes));
        }
        if result_tys.is_empty() {
            return Err(Diagnostic::new("E0313", "this `scan` has no carries and emits nothing", span).into());
        }
        let op = Op::Scan { body: Box::new(body), n_carry: inits.len() as u32, n_seq };
        let tuple = Type::Tuple(result_tys.iter().map(Ty::ir).collect());
        let node = self.frames[depth].graph.push(op, ids, tuple);
        let mut vals: Vec<Val> = result_tys
            .into_iter()
            .enumerate()
            .map(|(i, ty)| {
                let id = self.frames[depth].graph.push_tensor(Op::Extract { index: i as u32 }, vec![node], ty.ir());
                Val::Tensor(TVal { id, depth, ty })
            })
            .collect();
        Ok(if vals.len() == 1 { vals.pop().expect("one") } else { Val::Tuple(vals) })
    }

    /// Elaborates the body in the frame just pushed; returns the body's
    /// outputs (new carries, then emits) and the emitted types.
    fn scan_body(
        &mut self,
        outer: &Scope,
        s: &ast::Scan,
        seqs: &[(ast::Ident, Seq)],
        inits: &[(ast::Ident, TVal)],
    ) -> R<(Vec<kiln_ir::ValueId>, Vec<Ty>)> {
        super::program::unique(inits.iter().map(|(n, _)| n).chain(seqs.iter().map(|(n, _)| n)))?;
        super::program::unique(s.next.iter().map(|(n, _)| n))?;
        let depth = self.depth();
        let mut scope = Scope { dims: outer.dims.clone(), vars: outer.vars.clone(), facts: outer.facts.clone() };
        let input = |cx: &mut Self, ty: Ty| -> TVal {
            let g: &mut Graph = &mut cx.frames[depth].graph;
            let index = g.inputs.len() as u32;
            g.inputs.push(ty.ir());
            let id = g.push_tensor(Op::Input { index }, vec![], ty.ir());
            TVal { id, depth, ty }
        };
        let mut carries = Vec::new();
        for (name, t) in inits {
            let v = input(self, t.ty.clone());
            self.bind_name(&mut scope, name, Val::Tensor(v.clone()))?;
            carries.push((name, v));
        }
        for (name, seq) in seqs {
            let val = match seq {
                Seq::Tensor(t) => Val::Tensor(input(self, Ty::new(t.ty.dtype, t.ty.axes[1..].to_vec()))),
                Seq::Layers(layer, path, ps) => {
                    let mut map = HashMap::new();
                    for (pname, t) in ps {
                        let slice = input(self, Ty::new(t.ty.dtype, t.ty.axes[1..].to_vec()));
                        map.insert(pname.clone(), slice);
                    }
                    Val::Layer(LayerVal { layer: layer.clone(), src: LayerSrc::Bound(Rc::new(map), path.clone()), stacked: None })
                }
            };
            self.bind_name(&mut scope, name, val)?;
        }
        self.frames[depth].seq_end = self.frames[depth].graph.inputs.len() as u32;
        for stmt in &s.body {
            match stmt {
                ast::Stmt::Let { names, ty, value, .. } => self.let_stmt(&mut scope, names, ty.as_ref(), value),
                ast::Stmt::Return(_, sp) => {
                    return Err(Diagnostic::new("E0211", "`return` is not allowed in a scan body", *sp).help("use `next` and `emit`").into())
                }
            }
        }
        let mut outs = Vec::new();
        for (name, init) in &carries {
            let Some((_, e)) = s.next.iter().find(|(n, _)| n.name == name.name) else {
                return Err(Diagnostic::new("E0313", format!("carry `{}` has no `next` value", name.name), name.span)
                    .help(format!("end the body with `next {} = ...`", name.name))
                    .into());
            };
            let v = self.expr(e, &mut scope)?;
            let t = self.tensor(&v, e.span, Some(init.ty.dtype))?;
            let t = self.ascribe(&scope, &t, &init.ty, e.span, &format!("the next value of carry `{}`", name.name)).map_err(|f| match f {
                Fail::Diag(d) => Fail::Diag(Box::new(d.help("a carry keeps its type on every step"))),
                f => f,
            })?;
            outs.push(self.capture(&t));
        }
        if let Some((n, _)) = s.next.iter().find(|(n, _)| !carries.iter().any(|(c, _)| c.name == n.name)) {
            return Err(Diagnostic::new("E0313", format!("`next {}` names no carry", n.name), n.span).into());
        }
        let mut tys = Vec::new();
        for e in &s.emit {
            let v = self.expr(e, &mut scope)?;
            let t = self.tensor(&v, e.span, None)?;
            outs.push(self.capture(&t));
            tys.push(t.ty);
        }
        Ok((outs, tys))
    }
}
