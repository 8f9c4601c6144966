//! 16-byte vector loads and stores in elementwise loops and reductions.
//!
//! A `vector` loop spread over the CTA whose body is straight-line (lets
//! and stores), or a CTA-shared sum, max or min, whose accesses include
//! *contiguous* ones (a global
//! argument at index `v + rest`, `rest` free of the loop and of loads)
//! runs in groups of `w` consecutive iterations per thread, `w` = 16 bytes
//! over the smallest such element: each contiguous load is one
//! `ld.global.v4`/`.v2` per 16 bytes for the whole group, each contiguous
//! store one `st.global.v4`/`.v2`, and the body runs once per iteration of
//! the group on those values (a reduction folds each into the thread's
//! partial); other accesses stay scalar.
//!
//! Groups apply when every contiguous access's first element is 16-byte
//! aligned (checked at run time on `rest`'s address: uniform, one branch);
//! the iterations past the last whole group, or all of them when
//! misaligned, run in the scalar form.
//!
//! Loads move to the group's start and contiguous stores to its end, so a
//! loop qualifies only when no memory is loaded after a statement that
//! stores to it, and no memory is stored by two statements.

use super::emit::Emitter;
use super::regs::{Class, Reg};
use super::PtxError;
use kiln_ir::kernel::{Expr, Mem, Stmt, Var};
use kiln_ir::{BinaryOp, DType};

/// Whether `e` uses a variable for which `dep` holds.
fn mentions(e: &Expr, dep: &dyn Fn(Var) -> bool) -> bool {
    match e {
        Expr::Const(..) | Expr::Tile => false,
        Expr::Var(x) => dep(*x),
        Expr::Load(_, x) | Expr::Unary(_, x) | Expr::Cast(_, x) => mentions(x, dep),
        Expr::Binary(_, a, b) | Expr::Rem(a, b) | Expr::Cmp(_, a, b) | Expr::Rand(a, b) => mentions(a, dep) || mentions(b, dep),
        Expr::Select(c, a, b) => mentions(c, dep) || mentions(a, dep) || mentions(b, dep),
        Expr::Checked(c) => mentions(&c.index, dep) || mentions(&c.pos, dep),
    }
}

/// Every load in `e`, inner ones included.
fn loads<'e>(e: &'e Expr, out: &mut Vec<(Mem, &'e Expr)>) {
    match e {
        Expr::Const(..) | Expr::Tile | Expr::Var(_) => {}
        Expr::Load(m, i) => {
            out.push((*m, i));
            loads(i, out);
        }
        Expr::Unary(_, x) | Expr::Cast(_, x) => loads(x, out),
        Expr::Binary(_, a, b) | Expr::Rem(a, b) | Expr::Cmp(_, a, b) | Expr::Rand(a, b) => {
            loads(a, out);
            loads(b, out);
        }
        Expr::Select(c, a, b) => {
            loads(c, out);
            loads(a, out);
            loads(b, out);
        }
        Expr::Checked(c) => {
            loads(&c.index, out);
            loads(&c.pos, out);
        }
    }
}

/// `rest` when `e` is `v + rest` (in any order of additions) with `rest`
/// free of the variables `dep` marks (v among them) and of loads.
fn unit_offset(e: &Expr, v: Var, dep: &dyn Fn(Var) -> bool) -> Option<Expr> {
    let free = |x: &Expr| {
        let mut l = Vec::new();
        loads(x, &mut l);
        l.is_empty() && !mentions(x, dep)
    };
    match e {
        Expr::Var(x) if *x == v => Some(Expr::idx(0)),
        Expr::Binary(BinaryOp::Add, a, b) if free(b) => unit_offset(a, v, dep).map(|r| Expr::add(r, (**b).clone())),
        Expr::Binary(BinaryOp::Add, a, b) if free(a) => unit_offset(b, v, dep).map(|r| Expr::add((**a).clone(), r)),
        _ => None,
    }
}

/// A contiguous access: its memory, index as written, and `rest`.
struct Run {
    mem: Mem,
    index: Expr,
    rest: Expr,
}

/// How a qualifying loop runs: group width and its contiguous accesses.
struct Plan {
    w: u64,
    loads: Vec<Run>,
    stores: Vec<Run>,
}

/// The values a group's contiguous loads produced, for the iteration
/// (`lane`) of the group being rendered.
pub(crate) struct Group {
    lane: usize,
    values: Vec<(Mem, Expr, Vec<Reg>)>,
}

impl Group {
    /// The value of `mem[index]` in this iteration, when it was loaded for
    /// the group.
    pub fn get(&self, mem: Mem, index: &Expr) -> Option<Reg> {
        self.values.iter().find(|(m, i, _)| *m == mem && i == index).map(|(_, _, v)| v[self.lane])
    }
}

impl Emitter<'_> {
    /// Element bytes of a memory that vector accesses can move (not bool).
    fn vector_size(&self, m: Mem) -> Option<u64> {
        match (m, self.storage(m)) {
            (Mem::Arg(_), DType::Bool) | (Mem::Scratch(_), _) => None,
            (_, d) => Some(d.size_bytes() as u64),
        }
    }

    /// The grouped form of a loop over `v` running `body`, or of a
    /// reduction over `v` of `value` (with an empty body).
    fn vector_plan(&self, v: Var, extent: u64, body: &[Stmt], value: Option<&Expr>) -> Option<Plan> {
        let mut lets = Vec::new();
        for s in body {
            match s {
                Stmt::Let { var, .. } => lets.push(*var),
                Stmt::Store { .. } => {}
                _ => return None,
            }
        }
        let dep = |x: Var| x == v || lets.contains(&x);
        let (mut stored, mut all_loads, mut stores) = (Vec::new(), Vec::new(), Vec::new());
        for s in body {
            let mut here = Vec::new();
            match s {
                Stmt::Let { value, .. } => loads(value, &mut here),
                Stmt::Store { mem, index, value } => {
                    loads(index, &mut here);
                    loads(value, &mut here);
                    stores.push((*mem, index));
                }
                _ => return None,
            }
            if here.iter().any(|(m, _)| stored.contains(m)) {
                return None;
            }
            if let Stmt::Store { mem, .. } = s {
                if stored.contains(mem) {
                    return None;
                }
                stored.push(*mem);
            }
            all_loads.extend(here);
        }
        if let Some(x) = value {
            loads(x, &mut all_loads);
        }
        let runs = |accesses: Vec<(Mem, &Expr)>| -> Vec<Run> {
            let mut out: Vec<Run> = Vec::new();
            for (mem, index) in accesses {
                if self.vector_size(mem).is_none() || out.iter().any(|r| r.mem == mem && r.index == *index) {
                    continue;
                }
                if let Some(rest) = unit_offset(index, v, &dep) {
                    out.push(Run { mem, index: index.clone(), rest });
                }
            }
            out
        };
        let (loads, stores) = (runs(all_loads), runs(stores));
        let smallest = loads.iter().chain(&stores).filter_map(|r| self.vector_size(r.mem)).min()?;
        let w = 16 / smallest;
        (extent >= w).then_some(Plan { w, loads, stores })
    }

    /// A spread `vector` loop in the grouped form, when it qualifies;
    /// false (nothing emitted) when it does not.
    pub fn vector_loop(&mut self, v: Var, extent: u64, body: &[Stmt]) -> Result<bool, PtxError> {
        let Some(p) = self.vector_plan(v, extent, body, None) else {
            return Ok(false);
        };
        self.grouped(v, extent, &p, &mut |em, out| em.lane_statements(&p, body, out), &mut |em, start| {
            let vr = em.index_var(v);
            em.counted_by(vr, Some(start), super::BLOCK_THREADS as u64, extent, |em| em.block(body, true))
        })?;
        Ok(true)
    }

    /// A CTA-shared reduction over `v` of `value` in the grouped form,
    /// folding each iteration with `fold`, when it qualifies; false
    /// (nothing emitted) when it does not.
    pub fn vector_reduce(&mut self, v: Var, extent: u64, value: &Expr, fold: &dyn Fn(&mut Self, Reg)) -> Result<bool, PtxError> {
        let Some(p) = self.vector_plan(v, extent, &[], Some(value)) else {
            return Ok(false);
        };
        let one = |em: &mut Self| -> Result<(), PtxError> {
            let x = em.expr(value)?;
            fold(em, x);
            Ok(())
        };
        self.grouped(v, extent, &p, &mut |em, _| one(em), &mut |em, start| {
            let vr = em.index_var(v);
            em.counted_by(vr, Some(start), super::BLOCK_THREADS as u64, extent, one)
        })?;
        Ok(true)
    }

    /// One iteration of a grouped loop's body: contiguous stores add their
    /// value to `out` (per store run), other statements run as usual.
    fn lane_statements(&mut self, p: &Plan, body: &[Stmt], out: &mut [Vec<Reg>]) -> Result<(), PtxError> {
        for s in body {
            match s {
                Stmt::Let { var, value } => {
                    let d = self.dtype(value)?;
                    let r = self.expr(value)?;
                    self.define(*var, d, r);
                }
                Stmt::Store { mem, index, value } => {
                    let vd = self.dtype(value)?;
                    let x = self.expr(value)?;
                    match p.stores.iter().position(|r| r.mem == *mem && r.index == *index) {
                        Some(k) => {
                            let cd = kiln_ir::kernel::verify::compute_dtype(self.storage(*mem));
                            let c = self.cast(x, vd, cd);
                            out[k].push(c);
                        }
                        None => {
                            let i = self.expr(index)?;
                            self.store(*mem, i, x, vd, None);
                        }
                    }
                }
                _ => return Err(PtxError::Invalid("a grouped vector loop holds only lets and stores".into())),
            }
        }
        Ok(())
    }

    /// Runs the groups of `p` (uniform code): `lane` renders one iteration
    /// (the loop variable bound, the group's loads in place), `tail` the
    /// scalar loop over the remaining iterations from its start register
    /// (this thread's first).
    #[allow(clippy::type_complexity)]
    fn grouped(
        &mut self,
        v: Var,
        extent: u64,
        p: &Plan,
        lane: &mut dyn FnMut(&mut Self, &mut [Vec<Reg>]) -> Result<(), PtxError>,
        tail: &mut dyn FnMut(&mut Self, Reg) -> Result<(), PtxError>,
    ) -> Result<(), PtxError> {
        // Uniform: each run's `rest` and whether all start 16-byte aligned.
        let ok = self.reg(Class::Pred);
        self.ins(format!("setp.eq.u32 {ok}, {}, {};", self.lane, self.lane));
        let mut rests = Vec::new();
        for run in p.loads.iter().chain(&p.stores) {
            let r = self.expr(&run.rest)?;
            let (_, a) = self.address(run.mem, r);
            let (low, aligned) = (self.reg(Class::B64), self.reg(Class::Pred));
            self.ins(format!("and.b64 {low}, {a}, 15;"));
            self.ins(format!("setp.eq.u64 {aligned}, {low}, 0;"));
            self.ins(format!("and.pred {ok}, {ok}, {aligned};"));
            rests.push(r);
        }
        let (load_rests, store_rests) = rests.split_at(p.loads.len());
        let groups = extent / p.w;
        let start = self.reg(Class::B64);
        self.ins(format!("selp.b64 {start}, {}, 0, {ok};", groups * p.w));
        let skip = self.label();
        self.ins(format!("@!{ok} bra {skip};"));
        let g = self.reg(Class::B64);
        self.counted(g, true, groups, |em| {
            let base = em.reg(Class::B64);
            em.ins(format!("mul.lo.s64 {base}, {g}, {};", p.w));
            let mut values = Vec::new();
            for (run, rest) in p.loads.iter().zip(load_rests) {
                let a = em.group_address(run.mem, *rest, base);
                values.push((run.mem, run.index.clone(), em.load_vector(run.mem, a, p.w)));
            }
            let mut out: Vec<Vec<Reg>> = vec![Vec::new(); p.stores.len()];
            for i in 0..p.w as usize {
                em.group = Some(Group { lane: i, values: std::mem::take(&mut values) });
                let vi = em.reg(Class::B64);
                em.ins(format!("add.s64 {vi}, {base}, {i};"));
                em.define(v, DType::I64, vi);
                let done = lane(em, &mut out);
                values = em.group.take().map(|l| l.values).unwrap_or_default();
                done?;
            }
            for ((run, rest), vals) in p.stores.iter().zip(store_rests).zip(&out) {
                let a = em.group_address(run.mem, *rest, base);
                em.store_vector(run.mem, a, vals);
            }
            Ok(())
        })?;
        self.place(&skip);
        let s0 = self.reg(Class::B64);
        self.ins(format!("add.s64 {s0}, {start}, {};", self.tid));
        tail(self, s0)
    }

    /// The global address of element `rest + base` of `mem`.
    fn group_address(&mut self, mem: Mem, rest: Reg, base: Reg) -> Reg {
        let i = self.reg(Class::B64);
        self.ins(format!("add.s64 {i}, {rest}, {base};"));
        self.address(mem, i).1
    }

    /// `w` consecutive elements at `a` (16-byte aligned), in their compute
    /// dtype.
    fn load_vector(&mut self, mem: Mem, a: Reg, w: u64) -> Vec<Reg> {
        let d = self.storage(mem);
        let chunks = w * d.size_bytes() as u64 / 16;
        let mut out = Vec::new();
        for c in 0..chunks {
            let (class, n, ty) = Self::vector_parts(d);
            let regs: Vec<Reg> = (0..n).map(|_| self.reg(class)).collect();
            self.ins(format!("ld.global.v{n}.{ty} {{{}}}, [{a}+{}];", list(&regs), 16 * c));
            if matches!(d, DType::BF16 | DType::F16) {
                for r in regs {
                    let (lo, hi) = (self.reg(Class::B16), self.reg(Class::B16));
                    self.ins(format!("mov.b32 {{{lo}, {hi}}}, {r};"));
                    out.push(self.widen_half(lo, d));
                    out.push(self.widen_half(hi, d));
                }
            } else {
                out.extend(regs);
            }
        }
        out
    }

    /// Stores `vals` (compute dtype of `mem`'s storage) at `a` (16-byte
    /// aligned) as consecutive elements.
    fn store_vector(&mut self, mem: Mem, a: Reg, vals: &[Reg]) {
        let d = self.storage(mem);
        let (_, n, ty) = Self::vector_parts(d);
        let words: Vec<Reg> = if matches!(d, DType::BF16 | DType::F16) {
            vals.chunks(2)
                .map(|pair| {
                    let (lo, hi) = (self.half_bits(pair[0], d), self.half_bits(pair[1], d));
                    let r = self.reg(Class::B32);
                    self.ins(format!("mov.b32 {r}, {{{lo}, {hi}}};"));
                    r
                })
                .collect()
        } else {
            vals.to_vec()
        };
        for (c, chunk) in words.chunks(n).enumerate() {
            self.ins(format!("st.global.v{n}.{ty} [{a}+{}], {{{}}};", 16 * c, list(chunk)));
        }
    }

    /// The registers of a 16-byte vector access of storage dtype `d`:
    /// class, count and PTX type.
    fn vector_parts(d: DType) -> (Class, usize, &'static str) {
        match d {
            DType::I64 => (Class::B64, 2, "s64"),
            DType::BF16 | DType::F16 => (Class::B32, 4, "b32"),
            d => (Class::of(d), 4, super::expr::arith(d)),
        }
    }
}

/// `%r1, %r2, ...`.
fn list(regs: &[Reg]) -> String {
    regs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}
