//! The work and memory traffic of one kernel launch, for profiles that
//! compare a kernel's speed with the machine's ceilings.
//!
//! Conventions (a profile's GFLOP/s and GB/s mean these):
//!
//! - **Flops.** A [`Gemm`](super::Gemm) tile counts `2·m·n·k`. Every other
//!   float operation counts 1 each time it executes: arithmetic (`+ - * /`,
//!   max, min, pow, neg, abs) and each transcendental or activation alike
//!   (`exp` counts 1, as does `gelu`); a float `sum`, `max` or `min`
//!   reduction adds 1 per term. Comparisons, selects, casts, loads, random
//!   numbers and integer (index) arithmetic count 0. Work under an `if`
//!   counts as if it ran: an upper bound where tiles skip blocks (causal
//!   attention skips about half of its key blocks).
//! - **Bytes.** Compulsory traffic, not cache misses: each argument is read
//!   and/or written at most once per launch, as its [`Access`] says, over
//!   the elements the kernel touches: the argument's length, or the number
//!   of loads (stores) the launch executes on it when that is smaller (a
//!   gather reads only the rows it indexes; a GEMM tile touches `m·k` of
//!   `a`, `k·n` of `b` and `m·n` of `c`). A read-write argument counts both
//!   ways. Scratch arrays stay on chip and count 0.

use super::verify::expr_dtype;
use super::{Access, Expr, Kernel, Mem, RedOp, Stmt, Var};
use crate::{DType, UnaryOp};
use std::collections::HashMap;

/// What one launch of a kernel computes and moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point operations, over all tiles.
    pub flops: u64,
    /// Bytes read and written in memory, over all tiles.
    pub bytes: u64,
}

/// The cost of one launch of a verified kernel (see the module docs).
pub fn kernel(k: &Kernel) -> Cost {
    let mut w = Walk { k, vars: HashMap::new(), flops: 0, loads: vec![0; k.args.len()], stores: vec![0; k.args.len()] };
    w.block(&k.body, k.grid);
    let mut bytes = 0u64;
    for (i, a) in k.args.iter().enumerate() {
        let touched = |n: u64| n.min(a.len).saturating_mul(a.dtype.size_bytes() as u64);
        let (read, write) = match a.access {
            Access::Read => (true, false),
            Access::Write => (false, true),
            Access::ReadWrite => (true, true),
        };
        if read {
            bytes = bytes.saturating_add(touched(w.loads[i]));
        }
        if write {
            bytes = bytes.saturating_add(touched(w.stores[i]));
        }
    }
    Cost { flops: w.flops, bytes }
}

/// A walk over a kernel's body that counts executions.
struct Walk<'k> {
    k: &'k Kernel,
    /// Dtypes of the variables defined so far (names are unique).
    vars: HashMap<Var, DType>,
    flops: u64,
    /// Elements loaded from and stored to each argument.
    loads: Vec<u64>,
    stores: Vec<u64>,
}

impl Walk<'_> {
    /// Counts `body`, which runs `times` times.
    fn block(&mut self, body: &[Stmt], times: u64) {
        for s in body {
            match s {
                Stmt::Loop { var, extent, body, .. } => {
                    self.vars.insert(*var, DType::I64);
                    self.block(body, times.saturating_mul(*extent));
                }
                Stmt::Let { var, value } => {
                    self.expr(value, times);
                    let d = self.dtype(value);
                    self.vars.insert(*var, d);
                }
                Stmt::Reduce { var, op, index, extent, value, .. } => {
                    self.vars.insert(*index, DType::I64);
                    let terms = times.saturating_mul(*extent);
                    self.expr(value, terms);
                    let d = self.dtype(value);
                    if d.is_float() && *op != RedOp::ArgMax {
                        self.add_flops(terms);
                    }
                    self.vars.insert(*var, if *op == RedOp::ArgMax { DType::I64 } else { d });
                }
                Stmt::Store { mem, index, value } => {
                    self.expr(index, times);
                    self.expr(value, times);
                    count(&mut self.stores, *mem, times);
                }
                Stmt::Gemm(g) => {
                    self.add_flops(times.saturating_mul(2).saturating_mul(g.m).saturating_mul(g.n).saturating_mul(g.k));
                    for op in [&g.a, &g.b, &g.c] {
                        self.expr(&op.offset, times);
                    }
                    count(&mut self.loads, g.a.mem, times.saturating_mul(g.m * g.k));
                    count(&mut self.loads, g.b.mem, times.saturating_mul(g.k * g.n));
                    count(&mut self.stores, g.c.mem, times.saturating_mul(g.m * g.n));
                    if g.accumulate {
                        count(&mut self.loads, g.c.mem, times.saturating_mul(g.m * g.n));
                    }
                }
                Stmt::If { cond, body } => {
                    self.expr(cond, times);
                    self.block(body, times);
                }
            }
        }
    }

    /// Counts an expression evaluated `times` times.
    fn expr(&mut self, e: &Expr, times: u64) {
        match e {
            Expr::Const(..) | Expr::Var(_) | Expr::Tile => {}
            Expr::Load(m, i) => {
                count(&mut self.loads, *m, times);
                self.expr(i, times);
            }
            Expr::Unary(op, x) => {
                if *op != UnaryOp::Not && self.dtype(x).is_float() {
                    self.add_flops(times);
                }
                self.expr(x, times);
            }
            Expr::Binary(_, a, b) => {
                if self.dtype(a).is_float() {
                    self.add_flops(times);
                }
                self.expr(a, times);
                self.expr(b, times);
            }
            Expr::Rem(a, b) | Expr::Cmp(_, a, b) | Expr::Rand(a, b) => {
                self.expr(a, times);
                self.expr(b, times);
            }
            Expr::Select(c, a, b) => {
                self.expr(c, times);
                self.expr(a, times);
                self.expr(b, times);
            }
            Expr::Cast(_, x) => self.expr(x, times),
            Expr::Checked(c) => {
                self.expr(&c.index, times);
                self.expr(&c.pos, times);
            }
        }
    }

    /// An expression's dtype; a malformed one (the verifier refuses it)
    /// counts as integer work.
    fn dtype(&self, e: &Expr) -> DType {
        expr_dtype(self.k, &self.vars, e).unwrap_or(DType::I64)
    }

    fn add_flops(&mut self, n: u64) {
        self.flops = self.flops.saturating_add(n);
    }
}

/// Adds `n` accesses to argument memory (scratch is not counted).
fn count(per_arg: &mut [u64], m: Mem, n: u64) {
    if let Mem::Arg(i) = m {
        if let Some(c) = per_arg.get_mut(i as usize) {
            *c = c.saturating_add(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Arg, Gemm, Operand};
    use crate::BinaryOp;

    fn arg(dtype: DType, len: u64, access: Access) -> Arg {
        Arg { dtype, len, access }
    }

    fn tile_times(n: u64) -> Expr {
        Expr::mul(Expr::Tile, Expr::idx(n))
    }

    /// `c[64×96] = a[64×32] @ b[32×96]` in two tiles of 32 rows.
    #[test]
    fn a_matmul_counts_2mnk_and_each_operand_once() {
        let (m, n, k) = (64u64, 96u64, 32u64);
        let rows = 32;
        let op = |mem: u32, offset: Expr, row_stride: u64| Operand { mem: Mem::Arg(mem), offset, row_stride, col_stride: 1 };
        let kern = Kernel {
            name: "mm".into(),
            args: vec![arg(DType::F32, m * k, Access::Read), arg(DType::F32, k * n, Access::Read), arg(DType::F32, m * n, Access::Write)],
            scratch: vec![],
            grid: m / rows,
            body: vec![Stmt::Gemm(Gemm {
                m: rows,
                n,
                k,
                a: op(0, tile_times(rows * k), k),
                b: op(1, Expr::idx(0), n),
                c: op(2, tile_times(rows * n), n),
                accumulate: false,
            })],
        };
        crate::kernel::verify::kernel(&kern).expect("valid");
        // 2·64·96·32 flops; a, b and c each move once although both tiles read all of b.
        assert_eq!(kernel(&kern), Cost { flops: 393_216, bytes: (2048 + 3072 + 6144) * 4 });
    }

    /// `y[i] = exp(x[i]) * 2 + x[i]` over 1000 bf16 elements, in 4 tiles:
    /// 3 flops per element; the index arithmetic is free.
    #[test]
    fn an_elementwise_kernel_counts_per_element() {
        let (n, per) = (1000u64, 250u64);
        let i = Expr::add(tile_times(per), Expr::var(Var(0)));
        let x = Expr::Load(Mem::Arg(0), Box::new(i.clone()));
        let e = Expr::Binary(BinaryOp::Mul, Box::new(Expr::Unary(UnaryOp::Exp, Box::new(x.clone()))), Box::new(Expr::Const(2.0, DType::F32)));
        let kern = Kernel {
            name: "ew".into(),
            args: vec![arg(DType::BF16, n, Access::Read), arg(DType::BF16, n, Access::Write)],
            scratch: vec![],
            grid: n / per,
            body: vec![Stmt::Loop {
                var: Var(0),
                extent: per,
                vector: true,
                body: vec![Stmt::Store { mem: Mem::Arg(1), index: i, value: Expr::Binary(BinaryOp::Add, Box::new(e), Box::new(x)) }],
            }],
        };
        crate::kernel::verify::kernel(&kern).expect("valid");
        assert_eq!(kernel(&kern), Cost { flops: 3000, bytes: 2 * 1000 * 2 });
    }

    /// Row sums of an 8×100 f32 matrix (one tile per row, the sum kept in
    /// place): 100 terms per row, and an in-place argument counts both ways.
    #[test]
    fn a_reduction_counts_its_terms_and_read_write_counts_twice() {
        let load = Expr::Load(Mem::Arg(0), Box::new(Expr::add(tile_times(100), Expr::var(Var(0)))));
        let kern = Kernel {
            name: "rowsum".into(),
            args: vec![arg(DType::F32, 800, Access::ReadWrite)],
            scratch: vec![],
            grid: 8,
            body: vec![
                Stmt::Reduce { var: Var(1), op: RedOp::Sum, index: Var(0), extent: 100, vector: true, value: load },
                Stmt::Store { mem: Mem::Arg(0), index: tile_times(100), value: Expr::var(Var(1)) },
            ],
        };
        crate::kernel::verify::kernel(&kern).expect("valid");
        // Reads all 800 elements, writes 8 of them.
        assert_eq!(kernel(&kern), Cost { flops: 800, bytes: (800 + 8) * 4 });
    }

    /// A gather of 3 rows of 4 from a 1000-row table reads 12 elements,
    /// not the table: the loads bound the traffic.
    #[test]
    fn a_gather_moves_the_rows_it_reads() {
        let row = Expr::Load(Mem::Arg(0), Box::new(Expr::Tile));
        let at = Expr::add(Expr::mul(row, Expr::idx(4)), Expr::var(Var(0)));
        let out = Expr::add(tile_times(4), Expr::var(Var(0)));
        let kern = Kernel {
            name: "gather".into(),
            args: vec![arg(DType::I64, 3, Access::Read), arg(DType::F32, 4000, Access::Read), arg(DType::F32, 12, Access::Write)],
            scratch: vec![],
            grid: 3,
            body: vec![Stmt::Loop {
                var: Var(0),
                extent: 4,
                vector: false,
                body: vec![Stmt::Store { mem: Mem::Arg(2), index: out, value: Expr::Load(Mem::Arg(1), Box::new(at)) }],
            }],
        };
        crate::kernel::verify::kernel(&kern).expect("valid");
        // The index is loaded once per element (12 loads) but only 3 exist.
        assert_eq!(kernel(&kern), Cost { flops: 0, bytes: 3 * 8 + 12 * 4 + 12 * 4 });
    }
}
