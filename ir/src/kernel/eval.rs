//! The kernel IR's reference semantics: a naive evaluator in f64.
//!
//! It runs a [`Program`] exactly as the docs of [`super`] define it, one
//! tile and one element at a time, rounding only where values are stored.
//! Tests use it to check the scheduler (schedule + evaluate == the graph
//! interpreter) independently of any backend, and backends against it.

use super::verify::compute_dtype;
use super::{BufKind, Expr, Gemm, Kernel, Mem, Program, RedOp, Step, Stmt, Var, View};
use crate::interp::scalar::{binary_float, binary_int, unary_float, unary_int};
use crate::interp::Tensor;
use crate::{BinaryOp, DType};
use std::collections::HashMap;

/// Runs `p` with the entry's inputs and the module's parameters; returns
/// the output buffers' elements, by output index.
pub fn run(p: &Program, inputs: &[Tensor], params: &[Tensor]) -> Result<Vec<Vec<f64>>, String> {
    let mut bufs: Vec<Vec<f64>> = Vec::with_capacity(p.buffers.len());
    for b in &p.buffers {
        let data = match b.kind {
            BufKind::Input(i) => inputs.get(i as usize).ok_or("missing input")?.data.clone(),
            BufKind::Param(i) => params.get(i as usize).ok_or("missing param")?.data.clone(),
            _ => vec![0.0; b.len as usize],
        };
        if data.len() as u64 != b.len {
            return Err(format!("buffer {} has {} elements, expected {}", b.name, data.len(), b.len));
        }
        bufs.push(data);
    }
    let mut counters = Vec::new();
    let mut status = [0u64; 2];
    steps(p, &p.steps, &mut bufs, &mut counters, &mut status)?;
    if let Some(f) = super::check::fault(p, &status) {
        return Err(f.to_string());
    }
    let mut outs: Vec<(u32, Vec<f64>)> = p
        .buffers
        .iter()
        .zip(bufs)
        .filter_map(|(b, d)| if let BufKind::Output(i) = b.kind { Some((i, d)) } else { None })
        .collect();
    outs.sort_by_key(|(i, _)| *i);
    Ok(outs.into_iter().map(|(_, d)| d).collect())
}

/// `status` holds the run's status words (see [`super::check`]).
fn steps(p: &Program, st: &[Step], bufs: &mut [Vec<f64>], counters: &mut Vec<u64>, status: &mut [u64; 2]) -> Result<(), String> {
    for s in st {
        match s {
            Step::Launch { kernel, args } => {
                let k = &p.kernels[kernel.0 as usize];
                let offsets: Vec<(usize, u64)> = args.iter().map(|v: &View| (v.buf.0 as usize, v.offset.eval(counters))).collect();
                let mut types = HashMap::new();
                collect_var_types(k, &k.body, &mut types);
                for tile in 0..k.grid {
                    let scratch = k.scratch.iter().map(|s| vec![0.0; s.len as usize]).collect();
                    let mut t = TileState { k, types: &types, offsets: &offsets, tile, vars: HashMap::new(), scratch, status: &mut *status };
                    t.block(&k.body, bufs)?;
                }
            }
            Step::Repeat { count, body, .. } => {
                for i in 0..*count {
                    counters.push(i);
                    steps(p, body, bufs, counters, status)?;
                    counters.pop();
                }
            }
            Step::Copy { dst, src, len } => {
                let (d, so) = (dst.offset.eval(counters) as usize, src.offset.eval(counters) as usize);
                let data: Vec<f64> = bufs[src.buf.0 as usize][so..so + *len as usize].to_vec();
                bufs[dst.buf.0 as usize][d..d + *len as usize].copy_from_slice(&data);
            }
        }
    }
    Ok(())
}

struct TileState<'a> {
    k: &'a Kernel,
    types: &'a HashMap<Var, DType>,
    offsets: &'a [(usize, u64)],
    tile: u64,
    vars: HashMap<Var, f64>,
    scratch: Vec<Vec<f64>>,
    status: &'a mut [u64; 2],
}

impl TileState<'_> {
    fn dtype_of(&self, m: Mem) -> DType {
        match m {
            Mem::Arg(i) => self.k.args[i as usize].dtype,
            Mem::Scratch(i) => self.k.scratch[i as usize].dtype,
        }
    }

    fn slot(&mut self, m: Mem, index: f64, bufs: &mut [Vec<f64>]) -> Result<*mut f64, String> {
        let i = index as i64;
        let (data, len): (&mut Vec<f64>, u64) = match m {
            Mem::Arg(a) => {
                let (b, off) = self.offsets[a as usize];
                let len = self.k.args[a as usize].len;
                if i < 0 || i as u64 >= len {
                    return Err(format!("kernel `{}`: index {i} outside argument a{a} of {len} elements", self.k.name));
                }
                let buf = &mut bufs[b];
                let at = off + i as u64;
                if at as usize >= buf.len() {
                    return Err(format!("kernel `{}`: a{a}[{i}] is past the end of its buffer", self.k.name));
                }
                return Ok(&mut buf[at as usize] as *mut f64);
            }
            Mem::Scratch(s) => (&mut self.scratch[s as usize], self.k.scratch[s as usize].len),
        };
        if i < 0 || i as u64 >= len {
            return Err(format!("kernel `{}`: scratch index {i} out of range", self.k.name));
        }
        Ok(&mut data[i as usize] as *mut f64)
    }

    fn load(&mut self, m: Mem, index: f64, bufs: &mut [Vec<f64>]) -> Result<f64, String> {
        // SAFETY: `slot` returns a pointer into a live, bounds-checked element.
        Ok(unsafe { *self.slot(m, index, bufs)? })
    }

    fn block(&mut self, body: &[Stmt], bufs: &mut [Vec<f64>]) -> Result<(), String> {
        for s in body {
            match s {
                Stmt::Loop { var, extent, body, .. } => {
                    for i in 0..*extent {
                        self.vars.insert(*var, i as f64);
                        self.block(body, bufs)?;
                    }
                }
                Stmt::Let { var, value } => {
                    let v = self.expr(value, bufs)?;
                    self.vars.insert(*var, v);
                }
                Stmt::Reduce { var, op, index, extent, value, .. } => {
                    let dt = self.dtype(value);
                    let mut acc = match op {
                        RedOp::Sum => 0.0,
                        RedOp::Max | RedOp::ArgMax => dt.extremes().0,
                        RedOp::Min => dt.extremes().1,
                    };
                    let mut arg = 0.0;
                    for i in 0..*extent {
                        self.vars.insert(*index, i as f64);
                        let x = self.expr(value, bufs)?;
                        match op {
                            RedOp::Sum if dt.is_int() => acc = binary_int(BinaryOp::Add, acc as i64, x as i64).map_err(|e| format!("{e:?}"))? as f64,
                            RedOp::Sum => acc += x,
                            RedOp::Max => acc = binary_float(BinaryOp::Max, acc, x),
                            RedOp::Min => acc = binary_float(BinaryOp::Min, acc, x),
                            RedOp::ArgMax => {
                                if !acc.is_nan() && (x > acc || x.is_nan()) {
                                    acc = x;
                                    arg = i as f64;
                                }
                            }
                        }
                    }
                    self.vars.insert(*var, if *op == RedOp::ArgMax { arg } else { acc });
                }
                Stmt::Store { mem, index, value } => {
                    let i = self.expr(index, bufs)?;
                    let v = self.expr(value, bufs)?;
                    let d = self.dtype_of(*mem);
                    let p = self.slot(*mem, i, bufs)?;
                    // SAFETY: as in `load`.
                    unsafe { *p = d.round(v) };
                }
                Stmt::Gemm(g) => self.gemm(g, bufs)?,
                Stmt::If { cond, body } => {
                    if self.expr(cond, bufs)? != 0.0 {
                        self.block(body, bufs)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn gemm(&mut self, g: &Gemm, bufs: &mut [Vec<f64>]) -> Result<(), String> {
        let (ao, bo, co) = (self.expr(&g.a.offset, bufs)?, self.expr(&g.b.offset, bufs)?, self.expr(&g.c.offset, bufs)?);
        let at = |o: f64, r: u64, c: u64, rs: u64, cs: u64| o + (r * rs + c * cs) as f64;
        let cd = self.dtype_of(g.c.mem);
        for i in 0..g.m {
            for j in 0..g.n {
                let ci = at(co, i, j, g.c.row_stride, g.c.col_stride);
                let mut acc = if g.accumulate { self.load(g.c.mem, ci, bufs)? } else { 0.0 };
                for l in 0..g.k {
                    let x = self.load(g.a.mem, at(ao, i, l, g.a.row_stride, g.a.col_stride), bufs)?;
                    let y = self.load(g.b.mem, at(bo, l, j, g.b.row_stride, g.b.col_stride), bufs)?;
                    acc += x * y;
                }
                let p = self.slot(g.c.mem, ci, bufs)?;
                // SAFETY: as in `load`.
                unsafe { *p = cd.round(acc) };
            }
        }
        Ok(())
    }

    /// An expression's compute dtype.
    fn dtype(&self, e: &Expr) -> DType {
        super::verify::expr_dtype(self.k, self.types, e).unwrap_or(DType::F32)
    }

    fn expr(&mut self, e: &Expr, bufs: &mut [Vec<f64>]) -> Result<f64, String> {
        Ok(match e {
            Expr::Const(v, _) => *v,
            Expr::Var(v) => *self.vars.get(v).ok_or_else(|| format!("v{} unbound", v.0))?,
            Expr::Tile => self.tile as f64,
            Expr::Load(m, i) => {
                let i = self.expr(i, bufs)?;
                self.load(*m, i, bufs)?
            }
            Expr::Unary(op, x) => {
                let int = self.dtype(x).is_int();
                let v = self.expr(x, bufs)?;
                if int {
                    unary_int(*op, v as i64) as f64
                } else {
                    unary_float(*op, v)
                }
            }
            Expr::Binary(op, a, b) => {
                let int = self.dtype(a).is_int();
                let (x, y) = (self.expr(a, bufs)?, self.expr(b, bufs)?);
                if int {
                    binary_int(*op, x as i64, y as i64).map_err(|e| format!("{e:?}"))? as f64
                } else {
                    binary_float(*op, x, y)
                }
            }
            Expr::Rem(a, b) => {
                let (x, y) = (self.expr(a, bufs)? as i64, self.expr(b, bufs)? as i64);
                if y == 0 {
                    return Err("remainder by zero".into());
                }
                (x % y) as f64
            }
            Expr::Cmp(op, a, b) => {
                let (x, y) = (self.expr(a, bufs)?, self.expr(b, bufs)?);
                op.holds(x, y) as u8 as f64
            }
            Expr::Select(c, a, b) => {
                if self.expr(c, bufs)? != 0.0 {
                    self.expr(a, bufs)?
                } else {
                    self.expr(b, bufs)?
                }
            }
            Expr::Cast(d, x) => {
                let v = self.expr(x, bufs)?;
                if compute_dtype(*d) == DType::F32 && *d != DType::F32 {
                    d.round(v)
                } else if d.is_float() {
                    v
                } else {
                    d.round(v)
                }
            }
            Expr::Rand(seed, counter) => {
                let (s, c) = (self.expr(seed, bufs)? as i64, self.expr(counter, bufs)? as i64);
                crate::rng::uniform(s as u64, c as u64) as f64
            }
            Expr::Checked(c) => {
                let i = self.expr(&c.index, bufs)? as i64;
                if i >= 0 && (i as u64) < c.bound {
                    return Ok(i as f64);
                }
                let code = super::check::code(c.site, self.expr(&c.pos, bufs)? as u64);
                if code > self.status[0] {
                    *self.status = [code, i as u64];
                }
                i.clamp(0, c.clamp_max() as i64) as f64
            }
        })
    }
}

fn collect_var_types(k: &Kernel, body: &[Stmt], types: &mut HashMap<Var, DType>) {
    for s in body {
        match s {
            Stmt::Loop { var, body, .. } => {
                types.insert(*var, DType::I64);
                collect_var_types(k, body, types);
            }
            Stmt::If { body, .. } => collect_var_types(k, body, types),
            Stmt::Let { var, value } => {
                let d = super::verify::expr_dtype(k, types, value).unwrap_or(DType::F32);
                types.insert(*var, d);
            }
            Stmt::Reduce { var, op, index, value, .. } => {
                types.insert(*index, DType::I64);
                let d = super::verify::expr_dtype(k, types, value).unwrap_or(DType::F32);
                types.insert(*var, if *op == RedOp::ArgMax { DType::I64 } else { d });
            }
            _ => {}
        }
    }
}
