//! `einsum(q: b h t d, k: b h s d -> b h t s)`, lowered to transposes,
//! reshapes, sums and batched matmuls, so later passes see one canonical
//! contraction node. Index ranges come only from the operands' shapes.

use super::scope::{Scope, TVal};
use super::ty::{Axis, Ty};
use super::{Checker, R};
use crate::ast;
use crate::Diagnostic;
use kiln_ir::{DimExpr, Op, ReduceOp};
use std::collections::HashMap;

/// A tensor whose axes are labelled by einsum letters.
struct Labelled {
    t: TVal,
    letters: Vec<String>,
}

impl Checker<'_> {
    pub fn einsum(&mut self, scope: &mut Scope, operands: &[(ast::Expr, Vec<ast::Ident>)], output: &[ast::Ident]) -> R<TVal> {
        let mut sizes: HashMap<String, Axis> = HashMap::new();
        let mut ops = Vec::new();
        for (e, letters) in operands {
            let v = self.expr(e, scope)?;
            let t = self.tensor(&v, e.span, None)?;
            if letters.len() != t.ty.rank() {
                return Err(Diagnostic::new("E0317", format!("{} index letters for a tensor of rank {}", letters.len(), t.ty.rank()), e.span)
                    .label(t.ty.describe())
                    .into());
            }
            for (i, l) in letters.iter().enumerate() {
                if letters[..i].iter().any(|p| p.name == l.name) {
                    return Err(Diagnostic::new("E0317", format!("index `{}` repeats within one operand (diagonals are not supported)", l.name), l.span).into());
                }
                let axis = &t.ty.axes[i];
                match sizes.get(&l.name) {
                    Some(prev) => self.require_eq(scope, &axis.size, &prev.size, l.span, &format!("every use of index `{}` has one size", l.name))?,
                    None => {
                        sizes.insert(l.name.clone(), axis.clone());
                    }
                }
            }
            ops.push(Labelled { t, letters: letters.iter().map(|l| l.name.clone()).collect() });
        }
        if let Some(first) = ops.first() {
            let dtype = first.t.ty.dtype;
            if let Some((o, (e, _))) = ops.iter().zip(operands).find(|(o, _)| o.t.ty.dtype != dtype) {
                return Err(Diagnostic::new("E0300", format!("einsum operands differ in dtype: {dtype} and {}", o.t.ty.dtype), e.span).into());
            }
        }
        let out: Vec<String> = output.iter().map(|l| l.name.clone()).collect();
        for (i, l) in output.iter().enumerate() {
            if out[..i].contains(&l.name) {
                return Err(Diagnostic::new("E0317", format!("output index `{}` appears twice", l.name), l.span).into());
            }
            if !sizes.contains_key(&l.name) {
                return Err(Diagnostic::new("E0317", format!("output index `{}` appears in no operand", l.name), l.span)
                    .help("einsum ranges come from the operands' shapes")
                    .into());
            }
        }
        let mut acc: Option<Labelled> = None;
        let n = ops.len();
        for k in 0..n {
            // Letters still needed after this operand: the output's and later operands'.
            let needed: Vec<String> = out.iter().cloned().chain(ops[k + 1..].iter().flat_map(|o| o.letters.clone())).collect();
            let placeholder = Labelled { t: ops[k].t.clone(), letters: vec![] };
            let cur = std::mem::replace(&mut ops[k], placeholder);
            let mut keep = needed.clone();
            if let Some(a) = &acc {
                keep.extend(a.letters.iter().cloned());
            }
            let cur = self.sum_out(cur, &keep);
            acc = Some(match acc.take() {
                None => cur,
                Some(a) => {
                    let a = self.sum_out(a, &needed.iter().cloned().chain(cur.letters.iter().cloned()).collect::<Vec<_>>());
                    self.contract(a, cur, &needed)
                }
            });
        }
        let acc = acc.expect("einsum has operands");
        let acc = self.sum_out(acc, &out);
        let perm: Vec<usize> = out.iter().map(|l| acc.letters.iter().position(|x| x == l).expect("output letter present")).collect();
        Ok(self.transpose(&acc.t, &perm))
    }

    /// Sums over the letters not in `keep`.
    fn sum_out(&mut self, x: Labelled, keep: &[String]) -> Labelled {
        let gone: Vec<usize> = (0..x.letters.len()).filter(|&i| !keep.contains(&x.letters[i])).collect();
        if gone.is_empty() {
            return x;
        }
        let axes = x.t.ty.axes.iter().enumerate().filter(|(i, _)| !gone.contains(i)).map(|(_, a)| a.clone()).collect();
        let letters = x.letters.iter().enumerate().filter(|(i, _)| !gone.contains(i)).map(|(_, l)| l.clone()).collect();
        let op = Op::Reduce { op: ReduceOp::Sum, axes: gone.iter().map(|&i| i as u32).collect(), keepdim: false };
        let t = self.emit(op, &[&x.t], Ty::new(x.t.ty.dtype, axes));
        Labelled { t, letters }
    }

    /// One pairwise contraction as a batched matmul:
    /// `[batch, a_free, k] @ [batch, k, b_free]`.
    fn contract(&mut self, a: Labelled, b: Labelled, keep: &[String]) -> Labelled {
        let in_b = |l: &String| b.letters.contains(l);
        let batch: Vec<String> = a.letters.iter().filter(|l| in_b(l) && keep.contains(l)).cloned().collect();
        let con: Vec<String> = a.letters.iter().filter(|l| in_b(l) && !keep.contains(l)).cloned().collect();
        let afree: Vec<String> = a.letters.iter().filter(|l| !in_b(l)).cloned().collect();
        let bfree: Vec<String> = b.letters.iter().filter(|l| !a.letters.contains(l)).cloned().collect();
        let arrange = |cx: &mut Self, x: &Labelled, groups: [&[String]; 3]| -> TVal {
            let order: Vec<usize> = groups.iter().flat_map(|g| g.iter()).map(|l| x.letters.iter().position(|y| y == l).expect("letter")).collect();
            let t = cx.transpose(&x.t, &order);
            let nb = groups[0].len();
            let mut axes: Vec<Axis> = t.ty.axes[..nb].to_vec();
            let mut at = nb;
            for g in &groups[1..] {
                let part = &t.ty.axes[at..at + g.len()];
                axes.push(match part {
                    [one] => one.clone(),
                    _ => Axis::unnamed(part.iter().fold(DimExpr::constant(1), |p, x| p.mul(&x.size))),
                });
                at += g.len();
            }
            cx.reshape(&t, axes)
        };
        let x = arrange(self, &a, [&batch, &afree, &con]);
        let y = arrange(self, &b, [&batch, &con, &bfree]);
        let mut axes: Vec<Axis> = x.ty.axes[..batch.len()].to_vec();
        axes.push(x.ty.axes[batch.len()].clone());
        axes.push(y.ty.axes[batch.len() + 1].clone());
        let m = self.emit(Op::MatMul, &[&x, &y], Ty::new(x.ty.dtype, axes));
        // Split the merged free groups back into their letters.
        let letters: Vec<String> = batch.iter().chain(&afree).chain(&bfree).cloned().collect();
        let axis_of = |l: &String| -> Axis {
            let (src, i) = match a.letters.iter().position(|x| x == l) {
                Some(i) => (&a, i),
                None => (&b, b.letters.iter().position(|x| x == l).expect("letter")),
            };
            src.t.ty.axes[i].clone()
        };
        let axes = letters.iter().map(axis_of).collect();
        let t = self.reshape(&m, axes);
        Labelled { t, letters }
    }
}
