//! The extraction cost: bytes moved plus flops, weighted per backend.
//!
//! Every value an op reads or writes is charged as if it went through
//! memory, so a fused attention (reads q, k, v, writes o) beats the naive
//! form, which writes and reads the `Sq x Sk` score matrix several times.
//! Views (transpose, reshape, broadcast, extract) move nothing. Symbolic
//! sizes are costed at [`Backend::dim`]. Every op costs at least 1, so the
//! cheapest choice is never a cycle; pseudo-ops cost infinity.

use super::analysis::{attr_count, infer, tensor, EG};
use super::lang::{ENode, PSEUDO};
use crate::{DimExpr, TensorType, Type};
use egg::{CostFunction, Id};

/// A backend's cost weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backend {
    /// Cost of one byte moved to or from memory.
    pub per_byte: f64,
    /// Cost of one floating-point operation.
    pub per_flop: f64,
    /// The size assumed for a symbolic dimension.
    pub dim: i64,
}

impl Backend {
    /// The CPU backend: about 10 flops per byte of DRAM bandwidth.
    pub const CPU: Backend = Backend { per_byte: 1.0, per_flop: 0.1, dim: 256 };
    /// The PTX backend: tensor cores make flops cheaper still, relative to HBM.
    pub const PTX: Backend = Backend { per_byte: 1.0, per_flop: 0.01, dim: 256 };
}

/// The cost function egg's extractor calls.
pub struct Cost<'a> {
    /// The e-graph (for types).
    pub eg: &'a EG,
    /// The weights.
    pub backend: Backend,
}

impl Cost<'_> {
    fn size(&self, d: &DimExpr) -> f64 {
        d.eval(&|_| Some(self.backend.dim)).unwrap_or(self.backend.dim) as f64
    }

    fn numel(&self, t: &TensorType) -> f64 {
        t.shape.iter().map(|d| self.size(d)).product()
    }

    fn bytes(&self, t: &TensorType) -> f64 {
        self.numel(t) * t.dtype.size_bytes() as f64
    }

    /// The node's own cost, without its children.
    fn own(&self, name: &str, ch: &[Id]) -> Option<f64> {
        let ty = infer(self.eg, name, ch)?;
        let args: Vec<&TensorType> = ch[attr_count(name)..].iter().filter_map(|&c| tensor(self.eg, c)).collect();
        let out_bytes = match &ty {
            Type::Tensor(t) => self.bytes(t),
            Type::Tuple(ts) => ts.iter().map(|t| self.bytes(t)).sum(),
        };
        let moved = out_bytes + args.iter().map(|t| self.bytes(t)).sum::<f64>();
        let out = ty.tensor();
        let flops = match name {
            "input" | "param" | "const" | "iota" | "transpose" | "reshape" | "broadcast" | "extract" => {
                return Some(1.0);
            }
            "matmul" => {
                let (a, o) = (args.first()?, out?);
                2.0 * self.numel(o) * self.size(a.shape.last()?)
            }
            "attention" | "attention_grad" => {
                let (q, k, v) = (args.first()?, args.get(1)?, args.get(2)?);
                let r = q.rank();
                let pairs = self.numel(q) / self.size(&q.shape[r - 1]) * self.size(&k.shape[r - 2]);
                let per_pair = 2.0 * (self.size(&q.shape[r - 1]) + self.size(&v.shape[r - 1])) + 5.0;
                pairs * per_pair * if name == "attention_grad" { 2.5 } else { 1.0 }
            }
            "scan" => {
                // The body's cost is the same whatever is chosen outside it.
                return Some(1.0 + moved * self.backend.per_byte);
            }
            _ => out.map_or(0.0, |o| 5.0 * self.numel(o)),
        };
        Some(1.0 + moved * self.backend.per_byte + flops * self.backend.per_flop)
    }
}

impl CostFunction<ENode> for Cost<'_> {
    type Cost = f64;

    fn cost<C: FnMut(Id) -> f64>(&mut self, n: &ENode, mut costs: C) -> f64 {
        match n {
            ENode::Leaf(_) => 0.0,
            ENode::Op(name, _) if PSEUDO.contains(name) => f64::INFINITY,
            ENode::Op(name, ch) => match self.own(name, ch) {
                Some(c) => ch.iter().fold(c, |acc, &i| acc + costs(i)),
                None => f64::INFINITY,
            },
        }
    }
}
