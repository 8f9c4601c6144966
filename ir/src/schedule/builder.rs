//! Building one kernel: its arguments (deduplicated views), variables
//! with their ranges, and its statements.

use super::index::{unravel, Ix, Ranges};
use crate::kernel::{Access, Arg, BufId, Expr, HostOffset, Kernel, Mem, Scratch, Stmt, Var, View};
use crate::DType;

/// Where a materialized value lives: a window of a program buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Src {
    pub buf: BufId,
    pub offset: HostOffset,
    pub len: u64,
    pub dtype: DType,
}

/// The row op a kernel computes in registers, for the values its fused
/// consumers read (see `emit::row`).
#[derive(Clone, Debug)]
pub struct RowCtx {
    pub node: crate::ValueId,
    /// The normalized axis.
    pub axis: usize,
    /// The row's statistics, per op kind (see `emit::row`).
    pub stats: Vec<Var>,
}

#[derive(Default)]
pub struct KernelBuilder {
    pub args: Vec<(Src, Access)>,
    pub ranges: Ranges,
    next_var: u32,
    pub ops: Vec<String>,
    pub row: Option<RowCtx>,
    /// A value this kernel has already stored (a matmul before its
    /// epilogue): reads of it load from there.
    pub stored: Option<(crate::ValueId, Src)>,
    /// Per-tile scratch arrays.
    pub scratch: Vec<Scratch>,
}

impl KernelBuilder {
    /// A fresh variable ranging over `0..range`.
    pub fn var(&mut self, range: u64) -> Var {
        let v = Var(self.next_var);
        self.next_var += 1;
        self.ranges.insert(v, range);
        v
    }

    /// The memory for a source, added as an argument on first use.
    pub fn arg(&mut self, src: &Src, access: Access) -> Mem {
        if let Some(i) = self.args.iter().position(|(s, _)| s.buf == src.buf && s.offset == src.offset && s.len == src.len) {
            let a = &mut self.args[i].1;
            if *a != access {
                *a = Access::ReadWrite;
            }
            return Mem::Arg(i as u32);
        }
        self.args.push((src.clone(), access));
        Mem::Arg(self.args.len() as u32 - 1)
    }

    /// A new per-tile scratch array of `len` elements.
    pub fn scratch(&mut self, dtype: DType, len: u64) -> Mem {
        self.scratch.push(Scratch { dtype, len });
        Mem::Scratch(self.scratch.len() as u32 - 1)
    }

    /// Records an op name for the kernel's name.
    pub fn note(&mut self, op: String) {
        if !self.ops.contains(&op) {
            self.ops.push(op);
        }
    }

    /// Let-bound coordinates of the tile index over `dims` (row-major),
    /// each with its range, and the statements that define them.
    pub fn tile_coords(&mut self, dims: &[u64], body: &mut Vec<Stmt>) -> Vec<Ix> {
        if dims.is_empty() {
            return vec![];
        }
        let t = self.var(dims.iter().product());
        body.push(Stmt::Let { var: t, value: Expr::Tile });
        let ranges = self.ranges.clone();
        unravel(&Ix::var(t), dims, &ranges)
            .into_iter()
            .zip(dims)
            .map(|(ix, &n)| match ix {
                Ix::Aff(_) => ix,
                Ix::Ex(e) => {
                    let v = self.var(n);
                    body.push(Stmt::Let { var: v, value: e });
                    Ix::var(v)
                }
            })
            .collect()
    }

    /// The finished kernel and the views to launch it with.
    pub fn finish(self, index: usize, grid: u64, body: Vec<Stmt>) -> (Kernel, Vec<View>) {
        let name = format!("k{index}_{}", self.ops.iter().take(4).cloned().collect::<Vec<_>>().join("_"));
        let args = self.args.iter().map(|(s, a)| Arg { dtype: s.dtype, len: s.len, access: *a }).collect();
        let views = self.args.iter().map(|(s, _)| View { buf: s.buf, offset: s.offset.clone() }).collect();
        (Kernel { name, args, scratch: self.scratch, grid, body }, views)
    }
}
