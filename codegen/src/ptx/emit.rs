//! The renderer's state for one kernel: the instruction text, registers,
//! variable bindings, and the per-thread values every part needs.

use super::regs::{Class, Reg, Regs};
use super::{Arch, PtxError, BLOCK_THREADS};
use kiln_ir::kernel::{Expr, Kernel, Var};
use kiln_ir::DType;
use std::collections::HashMap;
use std::fmt::Write;

/// One kernel being rendered.
pub(crate) struct Emitter<'k> {
    /// The kernel.
    pub k: &'k Kernel,
    /// The architecture rendered for.
    pub arch: Arch,
    pub regs: Regs,
    /// Instructions, one per line, already indented.
    pub out: String,
    /// Compute dtypes of the variables defined so far.
    pub types: HashMap<Var, DType>,
    /// The register holding each variable.
    pub vars: HashMap<Var, Reg>,
    /// Each argument's global address.
    pub bases: Vec<Reg>,
    /// The tile index (`%ctaid.x`), i64.
    pub tile: Reg,
    /// The thread index (`%tid.x`), i64.
    pub tid: Reg,
    /// Lane within the warp and warp within the CTA, u32.
    pub lane: Reg,
    pub warp: Reg,
    /// True on thread 0: the one that performs stores of code all threads run.
    pub first: Reg,
    /// Whether a block reduction needs the cross-warp `red` array.
    pub uses_red: bool,
    /// Bytes of the staged GEMMs' shared buffers (one array, reused).
    pub gemm_shared: u64,
    /// Inside a grouped vector loop (`vector.rs`): the group's loaded values.
    pub group: Option<super::vector::Group>,
    labels: u32,
    /// The last line written is a `bar.sync` (two in a row are one).
    last_bar: bool,
}

impl<'k> Emitter<'k> {
    /// The emitter with the prologue (thread and tile indices, argument
    /// addresses) already written.
    pub fn new(k: &'k Kernel, arch: Arch) -> Self {
        let mut regs = Regs::default();
        let mut r = |c| regs.new_reg(c);
        let (tile, tid, lane, warp, first) = (r(Class::B64), r(Class::B64), r(Class::B32), r(Class::B32), r(Class::Pred));
        let (t32, c32) = (r(Class::B32), r(Class::B32));
        let mut e = Emitter {
            k,
            arch,
            regs,
            out: String::new(),
            types: HashMap::new(),
            vars: HashMap::new(),
            bases: Vec::new(),
            tile,
            tid,
            lane,
            warp,
            first,
            uses_red: false,
            gemm_shared: 0,
            group: None,
            labels: 0,
            last_bar: false,
        };
        e.ins(format!("mov.u32 {c32}, %ctaid.x;"));
        e.ins(format!("cvt.u64.u32 {tile}, {c32};"));
        e.ins(format!("mov.u32 {t32}, %tid.x;"));
        e.ins(format!("cvt.u64.u32 {tid}, {t32};"));
        e.ins(format!("and.b32 {lane}, {t32}, 31;"));
        e.ins(format!("shr.u32 {warp}, {t32}, 5;"));
        e.ins(format!("setp.eq.u32 {first}, {t32}, 0;"));
        for i in 0..k.args.len() {
            let (p, g) = (e.reg(Class::B64), e.reg(Class::B64));
            e.ins(format!("ld.param.u64 {p}, [a{i}];"));
            e.ins(format!("cvta.to.global.u64 {g}, {p};"));
            e.bases.push(g);
        }
        e
    }

    /// A fresh register.
    pub fn reg(&mut self, c: Class) -> Reg {
        self.regs.new_reg(c)
    }

    /// Writes one instruction.
    pub fn ins(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.out, "    {}", s.as_ref());
        self.last_bar = false;
    }

    /// A fresh label name.
    pub fn label(&mut self) -> String {
        self.labels += 1;
        format!("$L{}", self.labels)
    }

    /// Places a label here.
    pub fn place(&mut self, l: &str) {
        let _ = writeln!(self.out, "{l}:");
        self.last_bar = false;
    }

    /// A CTA-wide barrier (all threads must reach it: only in uniform code).
    pub fn bar(&mut self) {
        if !self.last_bar {
            self.ins("bar.sync 0;");
            self.last_bar = true;
        }
    }

    /// The compute dtype of an expression in the current scope.
    pub fn dtype(&self, e: &Expr) -> Result<DType, PtxError> {
        kiln_ir::kernel::verify::expr_dtype(self.k, &self.types, e).map_err(|m| PtxError::Invalid(format!("kernel `{}`: {m}", self.k.name)))
    }

    /// Binds a variable to a register.
    pub fn define(&mut self, v: Var, d: DType, r: Reg) {
        self.types.insert(v, d);
        self.vars.insert(v, r);
    }

    /// `for v = start; v < extent; v += step { body }` with `v` an i64
    /// register; `start` is the thread index when `spread` (a loop whose
    /// iterations the CTA's threads share), else 0.
    pub fn counted(&mut self, v: Reg, spread: bool, extent: u64, body: impl FnOnce(&mut Self) -> Result<(), PtxError>) -> Result<(), PtxError> {
        if spread {
            let tid = self.tid;
            self.counted_by(v, Some(tid), BLOCK_THREADS as u64, extent, body)
        } else {
            self.counted_by(v, None, 1, extent, body)
        }
    }

    /// `for v = start (0 when None); v < extent; v += step { body }`.
    pub fn counted_by(&mut self, v: Reg, start: Option<Reg>, step: u64, extent: u64, body: impl FnOnce(&mut Self) -> Result<(), PtxError>) -> Result<(), PtxError> {
        let (head, end) = (self.label(), self.label());
        match start {
            Some(s) => self.ins(format!("mov.u64 {v}, {s};")),
            None => self.ins(format!("mov.u64 {v}, 0;")),
        }
        let p = self.reg(Class::Pred);
        self.place(&head);
        self.ins(format!("setp.ge.s64 {p}, {v}, {extent};"));
        self.ins(format!("@{p} bra {end};"));
        body(self)?;
        self.ins(format!("add.s64 {v}, {v}, {step};"));
        self.ins(format!("bra {head};"));
        self.place(&end);
        Ok(())
    }
}
