//! A small node builder for the adjoint graph: each helper derives the
//! result type the verifier expects, so the VJP rules read like math.

use crate::{BinaryOp, CmpOp, DType, DimExpr, Graph, Op, ReduceOp, TensorType, Type, UnaryOp, ValueId};

/// Appends nodes to a graph; every method returns the new value.
pub(super) struct B<'g> {
    /// The graph being extended.
    pub g: &'g mut Graph,
}

impl<'g> B<'g> {
    /// A builder over `g`.
    pub fn new(g: &'g mut Graph) -> B<'g> {
        B { g }
    }

    /// The tensor type of a value.
    pub fn ty(&self, v: ValueId) -> TensorType {
        self.g.tensor_type(v).clone()
    }

    /// The shape of a value.
    pub fn shape(&self, v: ValueId) -> Vec<DimExpr> {
        self.g.tensor_type(v).shape.clone()
    }

    /// The dtype of a value.
    pub fn dtype(&self, v: ValueId) -> DType {
        self.g.tensor_type(v).dtype
    }

    fn push(&mut self, op: Op, args: Vec<ValueId>, ty: TensorType) -> ValueId {
        self.g.push_tensor(op, args, ty)
    }

    /// A scalar constant.
    pub fn scalar(&mut self, value: f64, dtype: DType) -> ValueId {
        self.push(Op::Const { value }, vec![], TensorType::scalar(dtype))
    }

    /// A tensor of type `ty` filled with `value`.
    pub fn full(&mut self, value: f64, ty: &TensorType) -> ValueId {
        let c = self.scalar(value, ty.dtype);
        self.broadcast(c, &ty.shape)
    }

    /// Zeros of type `ty`.
    pub fn zeros(&mut self, ty: &TensorType) -> ValueId {
        self.full(0.0, ty)
    }

    /// `value` in the type of `like`.
    pub fn full_like(&mut self, value: f64, like: ValueId) -> ValueId {
        let ty = self.ty(like);
        self.full(value, &ty)
    }

    /// An elementwise unary op.
    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> ValueId {
        let ty = self.ty(x);
        self.push(Op::Unary(op), vec![x], ty)
    }

    /// An elementwise binary op on two values of one type.
    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        let ty = self.ty(a);
        self.push(Op::Binary(op), vec![a, b], ty)
    }

    /// `a + b`.
    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Add, a, b)
    }

    /// `a - b`.
    pub fn sub(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Sub, a, b)
    }

    /// `a * b`.
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// `a / b`.
    pub fn div(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `-x`.
    pub fn dropout(&mut self, x: ValueId, seed: ValueId, p: f64) -> ValueId {
        let t = self.ty(x);
        self.push(Op::Dropout { p }, vec![x, seed], t)
    }

    pub fn neg(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Neg, x)
    }

    /// `c * x` for a constant `c`.
    pub fn scale(&mut self, x: ValueId, c: f64) -> ValueId {
        let k = self.full_like(c, x);
        self.mul(x, k)
    }

    /// `c + x` for a constant `c`.
    pub fn offset(&mut self, x: ValueId, c: f64) -> ValueId {
        let k = self.full_like(c, x);
        self.add(x, k)
    }

    /// `c - x` for a constant `c`.
    pub fn rsub(&mut self, c: f64, x: ValueId) -> ValueId {
        let k = self.full_like(c, x);
        self.sub(k, x)
    }

    /// An elementwise comparison (bool result).
    pub fn compare(&mut self, op: CmpOp, a: ValueId, b: ValueId) -> ValueId {
        let ty = self.ty(a).with_dtype(DType::Bool);
        self.push(Op::Compare(op), vec![a, b], ty)
    }

    /// Compares `x` with the constant `c`.
    pub fn compare_const(&mut self, op: CmpOp, x: ValueId, c: f64) -> ValueId {
        let k = self.full_like(c, x);
        self.compare(op, x, k)
    }

    /// `select(cond, a, b)`.
    pub fn select(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> ValueId {
        let ty = self.ty(a);
        self.push(Op::Select, vec![cond, a, b], ty)
    }

    /// Converts to `dtype` (no node when it already is).
    pub fn cast(&mut self, x: ValueId, dtype: DType) -> ValueId {
        if self.dtype(x) == dtype {
            return x;
        }
        let ty = self.ty(x).with_dtype(dtype);
        self.push(Op::Cast, vec![x], ty)
    }

    /// Numpy broadcast to `shape` (no node when the shape already matches).
    pub fn broadcast(&mut self, x: ValueId, shape: &[DimExpr]) -> ValueId {
        let ty = self.ty(x);
        if ty.shape == shape {
            return x;
        }
        self.push(Op::Broadcast, vec![x], TensorType::new(ty.dtype, shape.to_vec()))
    }

    /// Reshape to `shape` (no node when the shape already matches).
    pub fn reshape(&mut self, x: ValueId, shape: &[DimExpr]) -> ValueId {
        let ty = self.ty(x);
        if ty.shape == shape {
            return x;
        }
        self.push(Op::Reshape, vec![x], TensorType::new(ty.dtype, shape.to_vec()))
    }

    /// Permutes axes: output axis `i` is input axis `perm[i]`.
    pub fn transpose(&mut self, x: ValueId, perm: &[u32]) -> ValueId {
        if perm.iter().enumerate().all(|(i, &p)| i as u32 == p) {
            return x;
        }
        let ty = self.ty(x);
        let shape = perm.iter().map(|&p| ty.shape[p as usize].clone()).collect();
        self.push(Op::Transpose { perm: perm.to_vec() }, vec![x], TensorType::new(ty.dtype, shape))
    }

    /// Swaps the last two axes (rank >= 2).
    pub fn swap_last2(&mut self, x: ValueId) -> ValueId {
        let r = self.ty(x).rank() as u32;
        let mut perm: Vec<u32> = (0..r).collect();
        perm.swap(r as usize - 2, r as usize - 1);
        self.transpose(x, &perm)
    }

    /// A reduction over sorted `axes` (no node when `axes` is empty).
    pub fn reduce(&mut self, op: ReduceOp, x: ValueId, axes: &[u32], keepdim: bool) -> ValueId {
        if axes.is_empty() && op != ReduceOp::ArgMax {
            return x;
        }
        let ty = self.ty(x);
        let shape = reduced_shape(&ty.shape, axes, keepdim);
        let dtype = if op == ReduceOp::ArgMax { DType::I64 } else { ty.dtype };
        self.push(Op::Reduce { op, axes: axes.to_vec(), keepdim }, vec![x], TensorType::new(dtype, shape))
    }

    /// Sum over `axes`, keeping them with size 1.
    pub fn sum_keep(&mut self, x: ValueId, axes: &[u32]) -> ValueId {
        self.reduce(ReduceOp::Sum, x, axes, true)
    }

    /// Mean over the last axis, kept with size 1, broadcast back to `x`'s shape.
    pub fn mean_last_bcast(&mut self, x: ValueId) -> ValueId {
        let shape = self.shape(x);
        let last = shape.len() as u32 - 1;
        let s = self.reduce(ReduceOp::Mean, x, &[last], true);
        self.broadcast(s, &shape)
    }

    /// The reverse of a numpy broadcast: sums `x` down to `shape` (over the
    /// leading axes, and over axes where `shape` has a size-1 axis that `x`
    /// does not), then reshapes to it.
    pub fn sum_to(&mut self, x: ValueId, shape: &[DimExpr]) -> ValueId {
        let xs = self.shape(x);
        let lead = xs.len() - shape.len();
        let one = DimExpr::constant(1);
        let axes: Vec<u32> =
            (0..xs.len()).filter(|&i| i < lead || (shape[i - lead] == one && xs[i] != one)).map(|i| i as u32).collect();
        let s = self.reduce(ReduceOp::Sum, x, &axes, false);
        self.reshape(s, shape)
    }

    /// The element count of `dims` as a scalar of `dtype`: a constant when
    /// the dims are, else the sum of a tensor of ones over them (there is no
    /// op that reads a dimension as a value).
    pub fn count(&mut self, dims: &[DimExpr], dtype: DType) -> ValueId {
        let n = dims.iter().fold(DimExpr::constant(1), |acc, d| acc.mul(d));
        if let Some(c) = n.as_const() {
            return self.scalar(c as f64, dtype);
        }
        let ones = self.full(1.0, &TensorType::new(dtype, dims.to_vec()));
        let axes: Vec<u32> = (0..dims.len() as u32).collect();
        self.reduce(ReduceOp::Sum, ones, &axes, false)
    }

    /// Batched `a @ b`.
    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let (ta, tb) = (self.ty(a), self.ty(b));
        let mut shape = ta.shape[..ta.rank() - 1].to_vec();
        shape.push(tb.shape[tb.rank() - 1].clone());
        self.push(Op::MatMul, vec![a, b], TensorType::new(ta.dtype, shape))
    }

    /// Joins along `axis` (no node for a single piece).
    pub fn concat(&mut self, xs: &[ValueId], axis: u32) -> ValueId {
        if xs.len() == 1 {
            return xs[0];
        }
        let mut ty = self.ty(xs[0]);
        let ax = axis as usize;
        ty.shape[ax] = xs.iter().fold(DimExpr::constant(0), |acc, &x| acc.add(&self.g.tensor_type(x).shape[ax]));
        self.push(Op::Concat { axis }, xs.to_vec(), ty)
    }

    /// Elements `start..end` (unit step) along `axis`.
    pub fn slice(&mut self, x: ValueId, axis: u32, start: DimExpr, end: DimExpr) -> ValueId {
        let mut ty = self.ty(x);
        let ax = axis as usize;
        if start.as_const() == Some(0) && end == ty.shape[ax] {
            return x;
        }
        ty.shape[ax] = end.sub(&start);
        self.push(Op::Slice { axis, start, end, step: 1 }, vec![x], ty)
    }

    /// `table[..., idx, ...]` along `axis`.
    pub fn gather(&mut self, table: ValueId, idx: ValueId, axis: u32) -> ValueId {
        let t = self.ty(table);
        let ax = axis as usize;
        let mut shape = t.shape[..ax].to_vec();
        shape.extend(self.shape(idx));
        shape.extend(t.shape[ax + 1..].iter().cloned());
        self.push(Op::Gather { axis }, vec![table, idx], TensorType::new(t.dtype, shape))
    }

    /// One-hot encoding of integer `idx` with `n` classes in `dtype`.
    pub fn one_hot(&mut self, idx: ValueId, n: DimExpr, dtype: DType) -> ValueId {
        let mut shape = self.shape(idx);
        shape.push(n);
        self.push(Op::OneHot, vec![idx], TensorType::new(dtype, shape))
    }

    /// `0, 1, ...` along `axis` of `shape`.
    pub fn iota(&mut self, shape: &[DimExpr], axis: u32, dtype: DType) -> ValueId {
        self.push(Op::Iota { axis }, vec![], TensorType::new(dtype, shape.to_vec()))
    }

    /// Element `index` of a tuple value.
    pub fn extract(&mut self, tuple: ValueId, index: u32) -> ValueId {
        let Type::Tuple(ts) = &self.g.node(tuple).ty else { unreachable!("extract from a tensor") };
        let ty = ts[index as usize].clone();
        self.g.push(Op::Extract { index }, vec![tuple], Type::Tensor(ty))
    }

    /// The i64 indices `len-1, len-2, ..., 0`: gathering with them along
    /// axis 0 reverses a sequence (the IR has no reverse op).
    pub fn reverse_index(&mut self, len: &DimExpr) -> ValueId {
        let shape = vec![len.clone()];
        let iota = self.iota(&shape, 0, DType::I64);
        let last = match len.as_const() {
            Some(n) => self.scalar((n - 1) as f64, DType::I64),
            None => {
                let n = self.count(&shape, DType::I64);
                let one = self.scalar(1.0, DType::I64);
                self.sub(n, one)
            }
        };
        let last = self.broadcast(last, &shape);
        self.sub(last, iota)
    }

    /// Reverses `x` along its leading axis with the indices of [`B::reverse_index`].
    pub fn reverse(&mut self, x: ValueId, rev: ValueId) -> ValueId {
        self.gather(x, rev, 0)
    }
}

/// The shape of a reduction's result.
pub(super) fn reduced_shape(shape: &[DimExpr], axes: &[u32], keepdim: bool) -> Vec<DimExpr> {
    let mut out = Vec::new();
    for (i, d) in shape.iter().enumerate() {
        if !axes.contains(&(i as u32)) {
            out.push(d.clone());
        } else if keepdim {
            out.push(DimExpr::constant(1));
        }
    }
    out
}
