//! The value of a node at an index, as a kernel expression: a load when the
//! node is stored, otherwise its definition inlined recursively.

use super::builder::KernelBuilder;
use super::index::{linearize, unravel, Ix};
use super::plan::GraphState;
use super::{Cx, ScheduleError};
use crate::kernel::{check, Access, Expr};
use crate::{BinaryOp, CmpOp, DType, Op, ValueId};

/// The compute dtype of a storage dtype (half floats compute in f32).
pub fn compute(d: DType) -> DType {
    crate::kernel::verify::compute_dtype(d)
}

impl GraphState<'_> {
    /// For an index map (broadcast, reshape, transpose, slice): the index
    /// into its argument that output index `idx` reads.
    pub fn view_index(&self, cx: &Cx, kb: &KernelBuilder, n: ValueId, idx: &[Ix]) -> Result<Vec<Ix>, ScheduleError> {
        let node = self.g.node(n);
        let out = &self.shapes[n.index()];
        let arg_shape = &self.shapes[node.args[0].index()];
        Ok(match &node.op {
            Op::Broadcast => {
                let lead = out.len() - arg_shape.len();
                arg_shape.iter().enumerate().map(|(j, &s)| if s == out[lead + j] { idx[lead + j].clone() } else { Ix::constant(0) }).collect()
            }
            Op::Reshape => unravel(&linearize(idx, out), arg_shape, &kb.ranges),
            Op::Transpose { perm } => {
                let mut a = vec![Ix::constant(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    a[p as usize] = idx[i].clone();
                }
                a
            }
            Op::Slice { axis, start, step, .. } => {
                let mut a = idx.to_vec();
                let s = cx.dim(start)? as i64;
                a[*axis as usize] = idx[*axis as usize].scale(*step as i64).add(&Ix::constant(s));
                a
            }
            op => unreachable!("view_index of {op:?}"),
        })
    }

    /// The value of node `n` at `idx`, in its compute dtype.
    pub fn value(&self, cx: &mut Cx, kb: &mut KernelBuilder, n: ValueId, idx: &[Ix]) -> Result<Expr, ScheduleError> {
        let i = n.index();
        let here = kb.stored.as_ref().filter(|(v, _)| *v == n).map(|(_, s)| s.clone());
        if let Some(src) = here.as_ref().or(self.storage[i].as_ref()) {
            let mem = kb.arg(src, Access::Read);
            return Ok(Expr::Load(mem, Box::new(linearize(idx, &self.shapes[i]).to_expr())));
        }
        if kb.row.as_ref().is_some_and(|r| r.node == n) {
            return self.row_value(cx, kb, n, idx);
        }
        let node = self.g.node(n);
        let dtype = node.ty.tensor().expect("tensor").dtype;
        kb.note(node.op.name());
        let arg = |k: usize| node.args[k];
        Ok(match &node.op {
            Op::Const { value } => Expr::Const(*value, dtype),
            Op::Iota { axis } => cast(idx[*axis as usize].to_expr(), DType::I64, dtype),
            Op::Unary(u) => Expr::Unary(*u, Box::new(self.value(cx, kb, arg(0), idx)?)),
            Op::Binary(b) => {
                let x = self.value(cx, kb, arg(0), idx)?;
                let y = self.value(cx, kb, arg(1), idx)?;
                Expr::Binary(*b, Box::new(x), Box::new(y))
            }
            Op::Compare(c) => {
                let x = self.value(cx, kb, arg(0), idx)?;
                let y = self.value(cx, kb, arg(1), idx)?;
                Expr::Cmp(*c, Box::new(x), Box::new(y))
            }
            Op::Select => {
                let c = self.value(cx, kb, arg(0), idx)?;
                let x = self.value(cx, kb, arg(1), idx)?;
                let y = self.value(cx, kb, arg(2), idx)?;
                Expr::Select(Box::new(c), Box::new(x), Box::new(y))
            }
            Op::Cast => {
                let from = self.g.tensor_type(arg(0)).dtype;
                cast(self.value(cx, kb, arg(0), idx)?, from, dtype)
            }
            Op::Reshape if self.storage[arg(0).index()].is_some() => {
                // Row-major memory: the flat index carries over unchanged.
                let src = self.storage[arg(0).index()].clone().expect("stored");
                let mem = kb.arg(&src, Access::Read);
                Expr::Load(mem, Box::new(linearize(idx, &self.shapes[i]).to_expr()))
            }
            op if super::plan::is_view(op) => {
                let a = self.view_index(cx, kb, n, idx)?;
                self.value(cx, kb, arg(0), &a)?
            }
            Op::Gather { axis } => {
                let axis = *axis as usize;
                let table = &self.shapes[arg(0).index()];
                let at = &idx[axis..axis + self.shapes[arg(1).index()].len()];
                let row = self.index_value(cx, kb, n, arg(1), at, table[axis])?;
                if table[axis] == 0 {
                    // Every index fails and there is no element to read:
                    // the check alone runs (both sides of a select are evaluated).
                    let zero = Expr::Const(0.0, compute(dtype));
                    let hit = Expr::Cmp(CmpOp::Eq, Box::new(row), Box::new(Expr::idx(0)));
                    return Ok(Expr::Select(Box::new(hit), Box::new(zero.clone()), Box::new(zero)));
                }
                let mut t: Vec<Ix> = idx[..axis].to_vec();
                t.push(Ix::Ex(row));
                t.extend_from_slice(&idx[axis + at.len()..]);
                self.value(cx, kb, arg(0), &t)?
            }
            Op::Dropout { p } => {
                let x = self.value(cx, kb, arg(0), idx)?;
                let seed = self.value(cx, kb, arg(1), &[])?;
                let counter = linearize(idx, &self.shapes[i]).to_expr();
                dropout(x, seed, counter, *p, compute(dtype))
            }
            Op::OneHot => {
                let r = idx.len() - 1;
                let k = self.index_value(cx, kb, n, arg(0), &idx[..r], self.shapes[i][r])?;
                let hit = Expr::Cmp(CmpOp::Eq, Box::new(k), Box::new(idx[r].to_expr()));
                cast(hit, DType::Bool, dtype)
            }
            op => return Err(ScheduleError::Unsupported(format!("inlining `{}` (it should have been stored)", op.name()))),
        })
    }

    /// Element `at` of index tensor `ix` (read by node `n`) as an i64 in
    /// `0..bound`, checked at run time: a value outside fails the program
    /// with the reference interpreter's message (see [`check`]).
    fn index_value(&self, cx: &mut Cx, kb: &mut KernelBuilder, n: ValueId, ix: ValueId, at: &[Ix], bound: u64) -> Result<Expr, ScheduleError> {
        let from = self.g.tensor_type(ix).dtype;
        let index = cast(self.value(cx, kb, ix, at)?, from, DType::I64);
        let node = format!("%{} = {}", n.index(), self.g.node(n).op.name());
        let site = cx.check_site(check::Site { node, bound });
        let status = kb.arg(&cx.status(), Access::ReadWrite);
        let pos = linearize(at, &self.shapes[ix.index()]).to_expr();
        Ok(Expr::Checked(Box::new(check::Checked { index, bound, site, pos, status })))
    }
}

/// A conversion, omitted when the compute dtypes agree.
pub fn cast(e: Expr, from: DType, to: DType) -> Expr {
    // Widening a half float to f32 is exact: the loaded value already is one.
    if from == to || (to == DType::F32 && compute(from) == DType::F32) {
        e
    } else {
        Expr::Cast(to, Box::new(e))
    }
}

/// `x` times `1 / (1 - p)` where `rng::keep(seed, counter, p)`, else
/// times 0 (NaN and ±∞ propagate), in `dtype` (an f32 draw against the
/// exact f32 threshold).
pub fn dropout(x: Expr, seed: Expr, counter: Expr, p: f64, dtype: DType) -> Expr {
    let draw = Expr::Rand(Box::new(seed), Box::new(counter));
    let keep = Expr::Cmp(CmpOp::Ge, Box::new(draw), Box::new(Expr::Const(crate::rng::threshold(p) as f64, DType::F32)));
    let factor = Expr::Select(Box::new(keep), Box::new(Expr::Const(1.0 / (1.0 - p), dtype)), Box::new(Expr::Const(0.0, dtype)));
    bin(BinaryOp::Mul, x, factor)
}

pub fn bin(op: BinaryOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, Box::new(a), Box::new(b))
}
